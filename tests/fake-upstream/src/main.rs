//! `fake-upstream`: the fake OpenAI upstream as a standalone server, for
//! benchmarks and out-of-process tests.
//!
//! ```text
//! fake-upstream --listen 127.0.0.1:9000 [--chunk-delay-ms N] [--chunks N] [--api-key K]
//! ```
//!
//! Prints `listening on ADDR` once the port is bound, then serves until
//! SIGINT/SIGTERM. Modes are switched at run time over HTTP:
//! `POST /_control/mode {"mode":"fail","status":503}`,
//! `POST /_control/health {"ok":false}`, `POST /_control/chunk_delay {"ms":20}`,
//! `GET /_control/stats`.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use fake_upstream::{FakeConfig, FakeUpstream};

#[derive(Parser, Debug)]
#[command(name = "fake-upstream", about = "A fake OpenAI-compatible upstream")]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Delay before each streamed content chunk, in milliseconds.
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,
    /// Content chunks (= completion tokens) per completion.
    #[arg(long, default_value_t = 5)]
    chunks: usize,
    /// Require `Authorization: Bearer <KEY>` on /v1/*.
    #[arg(long)]
    api_key: Option<String>,
    /// The completion text.
    #[arg(long)]
    reply: Option<String>,
    /// Keep every request in memory (off by default so long benchmarks do
    /// not grow; the request count in /_control/stats is always kept).
    #[arg(long)]
    record: bool,
    /// Tokio worker threads (default: one per core). Benchmarks on a small
    /// machine may want to leave cores to the gateway.
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    rt.build()?.block_on(run(args))
}

async fn run(args: Args) -> std::io::Result<()> {
    let defaults = FakeConfig::default();
    let cfg = FakeConfig {
        chunk_delay: Duration::from_millis(args.chunk_delay_ms),
        chunks: args.chunks,
        reply: args.reply.unwrap_or(defaults.reply.clone()),
        api_key: args.api_key,
        ..defaults
    };
    let upstream = FakeUpstream::start_on(args.listen, cfg).await?;
    upstream.set_recording(args.record);

    // Scripts wait for this line, so flush it explicitly (stdout is
    // block-buffered when piped).
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}", upstream.addr())?;
    out.flush()?;
    drop(out);

    wait_for_signal().await;
    upstream.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
