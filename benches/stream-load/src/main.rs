//! `stream-load`: N concurrent streaming chat completions against one address,
//! for `benches/run.sh`.
//!
//! Each stream is its own HTTP/1.1 connection (`Connection: close`), started on
//! a ramp over `--ramp-ms`. For each stream it measures the time from starting
//! to connect until the first SSE event (`data:`) arrives, then reads until
//! `[DONE]` or EOF. While streams are open it samples `VmRSS` and `RssAnon` of the `--pids`
//! every 50 ms and reports the RSS at the moment the most streams were live
//! (connected, first event received, not finished). Prints one JSON object.
//!
//! Plain sockets instead of an HTTP client: the point is exact timing of the
//! first byte with no client-side pooling or buffering in between.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser, Debug)]
#[command(name = "stream-load")]
struct Args {
    /// host:port to connect to.
    #[arg(long)]
    addr: String,
    #[arg(long, default_value = "/v1/chat/completions")]
    path: String,
    #[arg(long, default_value = "gpt-4o-mini")]
    model: String,
    /// Extra request header, `Name: value` (repeatable), e.g. the API key.
    #[arg(long = "header")]
    headers: Vec<String>,
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    /// Stream starts are spread evenly over this many milliseconds.
    #[arg(long, default_value_t = 1000)]
    ramp_ms: u64,
    /// Whole run bound: streams still open then are counted as failed.
    #[arg(long, default_value_t = 60)]
    timeout_s: u64,
    /// Comma-separated pids whose VmRSS is summed (the proxy and its children).
    #[arg(long, default_value = "")]
    pids: String,
}

/// Counters shared by the streams and the RSS sampler.
#[derive(Default)]
struct Live {
    /// Streams that received their first event and have not finished.
    live: AtomicUsize,
}

#[derive(Debug)]
enum Outcome {
    Done { ttfb: Duration },
    Failed(String),
}

/// (VmRSS, RssAnon) in KiB, summed over the pids. RssAnon leaves out the
/// pages of the executable and of other files, which the kernel shares and
/// can drop at will: a bigger binary shows there, not memory per stream.
fn rss_kib(pids: &[u32]) -> Option<(u64, u64)> {
    let (mut total, mut anon) = (0, 0);
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(name))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        };
        total += field("VmRSS:")?;
        anon += field("RssAnon:")?;
    }
    Some((total, anon))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn one_stream(addr: String, request: Arc<Vec<u8>>, live: Arc<Live>) -> Outcome {
    let start = Instant::now();
    let mut sock = match TcpStream::connect(&addr).await {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(format!("connect: {}", e.kind())),
    };
    let _ = sock.set_nodelay(true);
    if let Err(e) = sock.write_all(&request).await {
        return Outcome::Failed(format!("write: {}", e.kind()));
    }
    // Bytes kept for matching; trimmed so a long stream does not grow it.
    let mut window: Vec<u8> = Vec::with_capacity(8192);
    let mut buf = vec![0u8; 16384];
    let mut ttfb = None;
    let mut status_checked = false;
    let outcome = loop {
        let n = match sock.read(&mut buf).await {
            Ok(0) => break Outcome::Failed("eof before [DONE]".into()),
            Ok(n) => n,
            Err(e) => break Outcome::Failed(format!("read: {}", e.kind())),
        };
        window.extend_from_slice(&buf[..n]);
        if !status_checked && window.len() >= 12 {
            status_checked = true;
            if !window.starts_with(b"HTTP/1.1 200") && !window.starts_with(b"HTTP/1.0 200") {
                let line = window.split(|&b| b == b'\r').next().unwrap_or_default();
                break Outcome::Failed(String::from_utf8_lossy(line).into_owned());
            }
        }
        if ttfb.is_none() && find(&window, b"data:").is_some() {
            ttfb = Some(start.elapsed());
            live.live.fetch_add(1, Ordering::SeqCst);
        }
        if find(&window, b"[DONE]").is_some() {
            break match ttfb {
                Some(t) => Outcome::Done { ttfb: t },
                None => Outcome::Failed("no event".into()),
            };
        }
        if window.len() > 4096 {
            window.drain(..window.len() - 64);
        }
    };
    if ttfb.is_some() {
        live.live.fetch_sub(1, Ordering::SeqCst);
    }
    outcome
}

fn pct(sorted: &[Duration], p: f64) -> u128 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_micros()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let pids: Vec<u32> = args
        .pids
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    let body = format!(
        r#"{{"model":"{}","stream":true,"messages":[{{"role":"system","content":"You are a helpful assistant."}},{{"role":"user","content":"Say hello in ten words."}}]}}"#,
        args.model
    );
    let mut req = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\nConnection: close\r\nContent-Length: {}\r\n",
        args.path,
        args.addr,
        body.len()
    );
    for h in &args.headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.push_str(&body);
    let request = Arc::new(req.into_bytes());

    let rss_before = rss_kib(&pids);
    let live = Arc::new(Live::default());
    let stop = Arc::new(tokio::sync::Notify::new());
    let sampler = {
        let live = live.clone();
        let stop = stop.clone();
        let pids = pids.clone();
        tokio::spawn(async move {
            // (most live streams seen, RSS then), and the peak RSS.
            let (mut best_live, mut rss_at_best, mut peak) = (0usize, (0u64, 0u64), 0u64);
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stop.notified() => break,
                }
                let n = live.live.load(Ordering::SeqCst);
                if let Some(rss) = rss_kib(&pids) {
                    peak = peak.max(rss.0);
                    if n > best_live || (n == best_live && rss.0 > rss_at_best.0) {
                        (best_live, rss_at_best) = (n, rss);
                    }
                }
            }
            (best_live, rss_at_best, peak)
        })
    };

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let step = Duration::from_micros(args.ramp_ms * 1000 / args.streams.max(1) as u64);
    for i in 0..args.streams {
        let at = started + step * i as u32;
        let (addr, request, live) = (args.addr.clone(), request.clone(), live.clone());
        tasks.spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            one_stream(addr, request, live).await
        });
    }

    let mut ttfbs = Vec::with_capacity(args.streams);
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = tokio::time::sleep(Duration::from_secs(args.timeout_s));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            next = tasks.join_next() => match next {
                Some(Ok(Outcome::Done { ttfb })) => ttfbs.push(ttfb),
                Some(Ok(Outcome::Failed(e))) => *errors.entry(e).or_default() += 1,
                Some(Err(e)) => *errors.entry(format!("task: {e}")).or_default() += 1,
                None => break,
            },
            () = &mut deadline => {
                let left = tasks.len();
                tasks.abort_all();
                *errors.entry("timeout".into()).or_default() += left;
                break;
            }
        }
    }
    let elapsed = started.elapsed();
    stop.notify_one();
    let (max_live, rss_at_max_live, rss_peak) = sampler.await.unwrap_or((0, (0, 0), 0));
    let rss_before = rss_before.unwrap_or((0, 0));

    ttfbs.sort();
    let errors_json: Vec<String> = errors
        .iter()
        .map(|(k, v)| format!("{:?}:{v}", k.replace('"', "'")))
        .collect();
    println!(
        "{{\"streams\":{},\"ok\":{},\"failed\":{},\"duration_ms\":{},\"ttfb_us\":{{\"p50\":{},\"p90\":{},\"p99\":{},\"max\":{}}},\"max_live\":{},\"rss_kib_before\":{},\"rss_kib_at_max_live\":{},\"rss_kib_peak\":{},\"rss_anon_kib_before\":{},\"rss_anon_kib_at_max_live\":{},\"errors\":{{{}}}}}",
        args.streams,
        ttfbs.len(),
        args.streams - ttfbs.len(),
        elapsed.as_millis(),
        pct(&ttfbs, 0.50),
        pct(&ttfbs, 0.90),
        pct(&ttfbs, 0.99),
        ttfbs.last().map_or(0, |d| d.as_micros()),
        max_live,
        rss_before.0,
        rss_at_max_live.0,
        rss_peak,
        rss_before.1,
        rss_at_max_live.1,
        errors_json.join(",")
    );
}
