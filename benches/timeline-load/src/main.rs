//! `timeline-load`: open-loop HTTP/1.1 load at a constant arrival rate, for the
//! latency timeline of `benches/run.sh --timeline` (see benches/README.md).
//!
//! Requests are due at `start + i / rate` whatever the answers do (open loop):
//! a stall of the target does not slow the arrivals, so it shows as latency of
//! everything due during it, not as fewer requests. A due request goes to a free
//! keep-alive connection of a fixed set; when none is free it waits, and the
//! wait counts in its latency (no coordinated omission).
//!
//! Latency counts from when the dispatcher handed the request over, not from
//! its exact due time: Tokio's timer ticks in milliseconds, so the dispatcher
//! hands out the requests due since its last tick together, and charging that
//! tick to the target would add up to a millisecond to every figure. The
//! dispatcher's own lateness is written down per request (`lag_us`), so a
//! stalled load generator is visible rather than blamed on the target.
//!
//! Writes one CSV line per request (`--out`), with the monotonic-clock time the
//! run started so the timeline can be lined up with `perf`/`strace` traces,
//! and prints a JSON summary. `benches/timeline.py` turns the CSV into the
//! per-interval table.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex};

#[derive(Parser, Debug)]
#[command(name = "timeline-load")]
struct Args {
    /// host:port to connect to.
    #[arg(long)]
    addr: String,
    #[arg(long, default_value = "/v1/chat/completions")]
    path: String,
    /// Extra request header, `Name: value` (repeatable), e.g. the API key.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// The POST body (a small chat request by default, as in run.sh).
    #[arg(long)]
    body: Option<String>,
    /// Requests per second.
    #[arg(long)]
    rate: f64,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    /// Seconds at the same rate before measuring (connections, caches).
    #[arg(long, default_value_t = 1.0)]
    warmup_s: f64,
    /// Keep-alive connections (the most requests in flight at once).
    #[arg(long, default_value_t = 64)]
    conns: usize,
    /// Per-request bound; a request taking longer counts as failed.
    #[arg(long, default_value_t = 30)]
    timeout_s: u64,
    /// CSV output, one line per measured request.
    #[arg(long)]
    out: std::path::PathBuf,
}

const DEFAULT_BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello in ten words."}],"max_tokens":64}"#;

struct Job {
    due: Instant,
    handed: Instant,
}

struct Sample {
    handed: Instant,
    due: Instant,
    sent: Instant,
    done: Instant,
    status: u16,
}

/// CLOCK_MONOTONIC in nanoseconds: what `Instant` reads on Linux, and what
/// `perf record -k CLOCK_MONOTONIC` and `perf trace` stamp events with.
fn monotonic_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// What is known about a response once its head is in.
enum Framing {
    Length(usize),
    Chunked,
}

struct Conn {
    addr: String,
    sock: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Conn {
    async fn connect(&mut self) -> std::io::Result<&mut TcpStream> {
        if self.sock.is_none() {
            let s = TcpStream::connect(&self.addr).await?;
            s.set_nodelay(true)?;
            self.sock = Some(s);
            self.buf.clear();
        }
        Ok(self.sock.as_mut().expect("connected"))
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        let sock = self.sock.as_mut().expect("connected");
        let old = self.buf.len();
        self.buf.resize(old + 16384, 0);
        let n = sock.read(&mut self.buf[old..]).await?;
        self.buf.truncate(old + n);
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    /// One request and its whole response; returns the status.
    async fn exchange(&mut self, request: &[u8]) -> std::io::Result<u16> {
        self.connect().await?.write_all(request).await?;
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end])
            .map_err(|_| std::io::Error::other("response head is not UTF-8"))?;
        let status: u16 = head
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("no status line"))?;
        let mut framing = Framing::Length(0);
        let mut close = false;
        for line in head.split("\r\n").skip(1) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                framing = Framing::Length(
                    value
                        .parse()
                        .map_err(|_| std::io::Error::other("bad content-length"))?,
                );
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                && value.eq_ignore_ascii_case("chunked")
            {
                framing = Framing::Chunked;
            } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close")
            {
                close = true;
            }
        }
        let end = match framing {
            Framing::Length(n) => {
                while self.buf.len() < head_end + n {
                    self.fill().await?;
                }
                head_end + n
            }
            Framing::Chunked => {
                let mut at = head_end;
                loop {
                    let Some(eol) = find(&self.buf[at..], b"\r\n") else {
                        self.fill().await?;
                        continue;
                    };
                    let size_text = std::str::from_utf8(&self.buf[at..at + eol])
                        .map_err(|_| std::io::Error::other("bad chunk size"))?;
                    let size = usize::from_str_radix(size_text.split(';').next().unwrap_or(""), 16)
                        .map_err(|_| std::io::Error::other("bad chunk size"))?;
                    // Size line, data, CRLF; the last chunk is followed by an
                    // (assumed empty) trailer and CRLF.
                    let next = at + eol + 2 + size + 2;
                    while self.buf.len() < next {
                        self.fill().await?;
                    }
                    at = next;
                    if size == 0 {
                        break at;
                    }
                }
            }
        };
        self.buf.drain(..end);
        if close {
            self.sock = None;
        }
        Ok(status)
    }
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let body = args.body.as_deref().unwrap_or(DEFAULT_BODY);
    let mut req = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        args.path,
        args.addr,
        body.len()
    );
    for h in &args.headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    let request: Arc<[u8]> = req.into_bytes().into();

    let (tx, rx) = mpsc::unbounded_channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    let timeout = Duration::from_secs(args.timeout_s);
    let mut workers = Vec::with_capacity(args.conns);
    for _ in 0..args.conns {
        let mut conn = Conn {
            addr: args.addr.clone(),
            sock: None,
            buf: Vec::with_capacity(32 * 1024),
        };
        // Connected before the first request is due: connection set-up is
        // not what the timeline is about.
        conn.connect().await?;
        let (rx, request) = (rx.clone(), request.clone());
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                let job = { rx.lock().await.recv().await };
                let Some(job) = job else { break };
                let sent = Instant::now();
                let status = match tokio::time::timeout(timeout, conn.exchange(&request)).await {
                    Ok(Ok(s)) => s,
                    _ => {
                        conn.sock = None;
                        0
                    }
                };
                samples.push(Sample {
                    handed: job.handed,
                    due: job.due,
                    sent,
                    done: Instant::now(),
                    status,
                });
            }
            samples
        }));
    }

    let period = Duration::from_secs_f64(1.0 / args.rate);
    let total = ((args.warmup_s + args.duration_s) * args.rate) as u64;
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup_s);
    let (mono_at_start, wall_at_start) = (
        monotonic_ns(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    let mono_at_measure = mono_at_start + (measure_from - start).as_nanos();
    let wall_at_measure = wall_at_start + (measure_from - start);
    let mut next = 0u64;
    while next < total {
        let now = Instant::now();
        loop {
            let due = start + period * next as u32;
            if due > now || next >= total {
                break;
            }
            let _ = tx.send(Job { due, handed: now });
            next += 1;
        }
        if next < total {
            tokio::time::sleep_until((start + period * next as u32).into()).await;
        }
    }
    drop(tx);
    let mut samples = Vec::with_capacity(total as usize);
    for w in workers {
        samples.extend(w.await.map_err(std::io::Error::other)?);
    }
    samples.retain(|s| s.due >= measure_from);
    samples.sort_by_key(|s| s.due);

    let mut out = std::io::BufWriter::new(std::fs::File::create(&args.out)?);
    writeln!(out, "# monotonic_ns_at_t0={mono_at_measure}")?;
    writeln!(out, "# unix_us_at_t0={}", wall_at_measure.as_micros())?;
    writeln!(out, "# rate={} conns={}", args.rate, args.conns)?;
    writeln!(out, "t_us,latency_us,wait_us,lag_us,status")?;
    let us = |d: Duration| d.as_micros() as u64;
    let mut latencies = Vec::with_capacity(samples.len());
    let mut failed = 0;
    let mut max_lag = 0;
    for s in &samples {
        let latency = us(s.done - s.handed);
        let lag = us(s.handed - s.due);
        max_lag = max_lag.max(lag);
        if (200..300).contains(&s.status) {
            latencies.push(latency);
        } else {
            failed += 1;
        }
        writeln!(
            out,
            "{},{},{},{},{}",
            us(s.due - measure_from),
            latency,
            us(s.sent - s.handed),
            lag,
            s.status
        )?;
    }
    out.flush()?;
    latencies.sort_unstable();
    println!(
        "{{\"rate\":{},\"duration_s\":{},\"requests\":{},\"ok\":{},\"failed\":{},\"latency_us\":{{\"p50\":{},\"p90\":{},\"p99\":{},\"p999\":{},\"max\":{}}},\"max_dispatch_lag_us\":{}}}",
        args.rate,
        args.duration_s,
        samples.len(),
        latencies.len(),
        failed,
        pct(&latencies, 0.5),
        pct(&latencies, 0.9),
        pct(&latencies, 0.99),
        pct(&latencies, 0.999),
        latencies.last().copied().unwrap_or(0),
        max_lag
    );
    Ok(())
}
