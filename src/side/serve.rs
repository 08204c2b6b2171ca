//! How the side app (and the optional metrics listener) serve connections:
//! hyper driven directly instead of `axum::serve`, for what that one lacks.
//!
//! - At most `max_connections` connections at once. Past that the listener
//!   stops accepting, so new connections wait in the kernel's listen queue
//!   (and, once it is full, their SYNs go unanswered and are retried by the
//!   client) until a connection closes; none is accepted only to be dropped.
//! - The TLS handshake and every request's headers must arrive within
//!   `header_timeout` (hyper's header read timeout for HTTP/1.1, which also
//!   ends idle keep-alive connections); an HTTP/2 connection with no request
//!   in progress for that long is shut down (GOAWAY).
//! - With TLS, HTTP/2 or HTTP/1.1 as ALPN picked; plain HTTP is HTTP/1.1.
//!
//! The whole-request deadline is a layer of the router (`side::router`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// How one listener serves its connections.
#[derive(Clone)]
pub struct Listen {
    /// Names the listener in logs (`side app`, `metrics`).
    pub name: &'static str,
    pub header_timeout: Duration,
    pub max_connections: usize,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Accepts connections on `listener` forever.
pub async fn serve(listener: TcpListener, app: Router, listen: Listen) {
    let listen = Arc::new(listen);
    let slots = Arc::new(Semaphore::new(listen.max_connections));
    loop {
        // A slot first: at the cap, connections stay in the listen queue.
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(listener = listen.name, error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (app, listen) = (app.clone(), listen.clone());
        tokio::spawn(async move {
            let _slot = slot;
            connection(tcp, peer, app, &listen).await;
        });
    }
}

async fn connection(tcp: TcpStream, peer: SocketAddr, app: Router, listen: &Listen) {
    let _ = tcp.set_nodelay(true);
    let Some(acceptor) = &listen.tls else {
        return http1(TokioIo::new(tcp), peer, app, listen).await;
    };
    let tls = match tokio::time::timeout(listen.header_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            // Plain HTTP to the TLS port, scanners, clients that distrust us.
            tracing::debug!(listener = listen.name, %peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(listener = listen.name, %peer, "TLS handshake timed out");
            return;
        }
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(tls);
    if h2 {
        http2(io, peer, app, listen).await
    } else {
        http1(io, peer, app, listen).await
    }
}

/// Requests in progress on one connection, and when the last one ended.
struct Activity {
    in_flight: AtomicUsize,
    last: Mutex<Instant>,
}

struct Busy(Arc<Activity>);

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            in_flight: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        })
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        self.last.lock().map_or(Duration::ZERO, |t| t.elapsed())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Ok(mut t) = self.0.last.lock() {
            *t = Instant::now();
        }
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The router as a hyper service, with the peer's address for `ConnectInfo`.
fn service(
    app: Router,
    peer: SocketAddr,
    activity: Arc<Activity>,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = axum::response::Response,
    Error = Infallible,
    Future = impl std::future::Future<Output = Result<axum::response::Response, Infallible>>
                 + Send
                 + 'static,
> + Clone {
    hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let busy = activity.begin();
        let app = app.clone();
        async move {
            let resp = app.oneshot(req).await;
            drop(busy);
            resp
        }
    })
}

async fn http1<I>(io: I, peer: SocketAddr, app: Router, listen: &Listen)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(listen.header_timeout)
        .serve_connection(io, service(app, peer, Activity::new()));
    if let Err(e) = conn.await {
        tracing::debug!(listener = listen.name, %peer, error = %e, "HTTP/1 connection ended");
    }
}

async fn http2<I>(io: I, peer: SocketAddr, app: Router, listen: &Listen)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(64)
        .max_header_list_size(64 * 1024)
        // Notices a peer that vanished mid-request.
        .keep_alive_interval(listen.header_timeout)
        .keep_alive_timeout(listen.header_timeout)
        .serve_connection(io, service(app, peer, activity.clone()));
    tokio::pin!(conn);
    let mut tick =
        tokio::time::interval((listen.header_timeout / 4).max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(listener = listen.name, %peer, error = %e, "HTTP/2 connection ended");
                }
                return;
            }
            _ = tick.tick() => {
                if activity.idle_for() >= listen.header_timeout {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(listen.header_timeout, conn.as_mut()).await;
                    return;
                }
            }
        }
    }
}
