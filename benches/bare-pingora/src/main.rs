//! `bare-pingora`: the smallest useful Pingora proxy, the floor the gateway is
//! measured against. Every request goes to one upstream as it came: no auth, no
//! body reading, no routing, no logging.
//!
//! ```text
//! bare-pingora --listen 127.0.0.1:8090 --upstream 127.0.0.1:9000 [--threads 1] [--l4-read-buffer BYTES] [--read-timeout-secs N] [--header-with-body]
//! ```
//!
//! SIGINT stops at once, SIGTERM after a one-second grace period.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use clap::Parser;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::proxy::{http_proxy_service, ProxyHttp, Session};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::upstreams::peer::HttpPeer;
use pingora::Result;

#[derive(Parser, Debug)]
#[command(name = "bare-pingora", about = "A bare Pingora proxy to one upstream")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: String,
    /// The one upstream (plain HTTP), e.g. 127.0.0.1:9000.
    #[arg(long)]
    upstream: SocketAddr,
    /// Proxy worker threads (the gateway's `server.threads`); 0 = one per usable core.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Read buffer per downstream connection, in bytes (Pingora's default: 64 KiB,
    /// allocated zeroed, so it is resident for every open connection).
    #[arg(long)]
    l4_read_buffer: Option<usize>,
    /// A timeout on each read from the upstream, as the gateway sets one
    /// (`proxy.read_timeout_secs`); none by default, as Pingora's own.
    #[arg(long)]
    read_timeout_secs: Option<u64>,
    /// Send a request's header with its body in one write, as the gateway
    /// does (`PeerOptions::send_request_header_with_body`, vendor/README.md);
    /// off by default, as in published Pingora.
    #[arg(long)]
    header_with_body: bool,
}

struct Bare {
    upstream: SocketAddr,
    read_timeout: Option<Duration>,
    header_with_body: bool,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream, false, String::new());
        peer.options.read_timeout = self.read_timeout;
        peer.options.send_request_header_with_body = self.header_with_body;
        Ok(Box::new(peer))
    }
}

fn main() {
    let args = Args::parse();
    let threads = match args.threads {
        // Respects taskset: available_parallelism reads the affinity mask.
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(
        &server.configuration,
        Bare {
            upstream: args.upstream,
            read_timeout: args.read_timeout_secs.map(Duration::from_secs),
            header_with_body: args.header_with_body,
        },
    );
    match args.l4_read_buffer {
        Some(read) => proxy.add_listener(
            ListenerConfig::tcp(args.listen.as_str())
                .l4_buffer(L4BufferSettings::default().read(read)),
        ),
        None => proxy.add_tcp(&args.listen),
    }
    server.add_service(proxy);
    println!(
        "bare-pingora listening on {} -> {} ({threads} threads)",
        args.listen, args.upstream
    );
    server.run(RunArgs::default());
}
