//! A fake OpenAI-compatible upstream that speaks the real OpenAI wire format.
//!
//! The BluesMinds integration tests run it in-process (this library) and the
//! benchmarks run it as a binary (`fake-upstream --listen ADDR`), as the
//! zero-cost baseline the gateway is compared against.
//!
//! Endpoints (all JSON unless streaming):
//!
//! | route | behaviour |
//! | --- | --- |
//! | `GET /health` | `{"status":"ok"}`, or 503 after [`FakeUpstream::set_health_ok`]`(false)` |
//! | `GET /v1/models` | a fixed two-model list |
//! | `POST /v1/chat/completions` | chat completion, streaming (SSE) or not |
//! | `POST /v1/completions` | legacy text completion, streaming or not |
//! | `POST /v1/embeddings` | deterministic vectors, `float` or `base64` |
//! | `POST /v1/responses` | OpenAI's Responses API, JSON or its event stream (see `responses.rs` for its rules) |
//! | `POST /openai/deployments/{d}/chat/completions`, `.../completions`, `.../embeddings` | with [`Provider::Azure`] only: Azure OpenAI's paths (the same answers) |
//! | `POST /_control/mode`, `/_control/health`, `/_control/chunk_delay`, `GET /_control/stats` | run-time knobs for out-of-process users |
//! | anything else | 404 in OpenAI's error envelope |
//!
//! Replies are deterministic: the configured reply is split into
//! [`FakeConfig::chunks`] pieces (one "token" each), and prompt tokens are
//! counted as words (see [`wire`] for the exact rules), so tests can assert
//! exact usage numbers:
//!
//! * chat: `prompt_tokens = words in all message contents + 3 * messages`;
//! * legacy completions: `prompt_tokens = words in the prompt(s)` (token
//!   arrays count one per token);
//! * embeddings: `prompt_tokens = words in the input(s)`;
//! * `completion_tokens = content chunks sent = min(chunks, max_tokens)`;
//!   when `max_tokens` truncates, `finish_reason` is `"length"` as with
//!   OpenAI;
//! * chat and Responses answer with a function call instead of text when
//!   `tools` are given and the last user message names one (or
//!   `tool_choice` picks one); see [`tools`]. A call counts 2 completion
//!   tokens.
//!
//! [`Mode`] injects failures into every `/v1/*` endpoint (never `/health`
//! or `/_control/*`).
//!
//! We run our own accept loop on hyper rather than `axum::serve`, because two
//! behaviours need control over connections that `axum::serve` does not give:
//! [`FakeUpstream::shutdown`] must drop in-flight connections immediately
//! (a killed backend), and [`Mode::DieMidStream`] must drop one connection
//! without a response.
//!
//! [`FakeUpstream::start_tls`] serves HTTPS instead ([`FakeTls`]): a real
//! rustls server with the certificate a test made, HTTP/2 when ALPN picks it,
//! and optionally a required client certificate, as a provider or a private
//! vLLM behind mutual TLS does. Every request records the connection it came
//! on and its HTTP version, so tests can see reuse and HTTP/2.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

mod chat_tools;
mod handlers;
mod responses;
mod state;
pub mod surface;
pub mod tools;
pub mod wire;

pub use handlers::embedding_vector;
pub use state::{split_reply, CHUNK_DELAY_HEADER};
pub use wire::PER_MESSAGE_OVERHEAD;

use state::Shared;

/// Length of the vectors `/v1/embeddings` returns unless the request sets
/// `dimensions`.
pub const EMBEDDING_DIMENSIONS: usize = 8;

/// Static configuration of one fake upstream.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// Sleep before each content chunk (streaming), or `chunks * chunk_delay`
    /// before a non-stream response. Changeable later with
    /// [`FakeUpstream::set_chunk_delay`], and per request with the
    /// `x-fake-chunk-delay-ms` header.
    pub chunk_delay: Duration,
    /// Number of content chunks (= completion tokens) per completion.
    pub chunks: usize,
    /// The completion text, split into `chunks` pieces (see [`split_reply`]).
    pub reply: String,
    /// When set, `/v1/*` requires `Authorization: Bearer <key>` and answers
    /// 401 in OpenAI's error format otherwise.
    pub api_key: Option<String>,
    /// Headers added to every `/v1/*` response, as a proxy in front of the
    /// provider adds its own: LiteLLM 1.x sends `x-litellm-response-cost`,
    /// `x-litellm-key-spend`, `x-litellm-model-api-base`, `llm_provider-*`...
    pub response_headers: Vec<(String, String)>,
    /// Chat usage: this many of the prompt tokens reported as read from the
    /// prompt cache (`prompt_tokens_details.cached_tokens`, at most the prompt).
    pub cached_tokens: usize,
    /// Chat usage: reasoning tokens, added to `completion_tokens` and reported
    /// in `completion_tokens_details.reasoning_tokens`, as o-series models do.
    pub reasoning_tokens: usize,
    /// The `model` chat answers name instead of the requested one (OpenAI
    /// answers an alias with its dated snapshot, `gpt-4o-mini-2024-07-18`).
    pub served_model: Option<String>,
    /// Answer an empty 400 to a request whose `x-request-id` is not a UUID, as
    /// llama-cpp-python's server does (starlette-context's `RequestIdPlugin`
    /// validates the header with Python's `uuid.UUID`).
    pub strict_request_id: bool,
    /// Whose API this fake is as strict as (paths and auth headers); with a
    /// provider other than OpenAI, `api_key` is the key in that provider's
    /// header.
    pub provider: Provider,
}

/// The request shape and authentication a provider insists on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Provider {
    /// OpenAI: `/v1/*`, and `Authorization: Bearer` when `api_key` is set.
    #[default]
    OpenAi,
    /// Azure OpenAI (REST reference:
    /// <https://learn.microsoft.com/en-us/azure/ai-services/openai/reference>):
    /// `POST /openai/deployments/{deployment-id}/chat/completions?api-version=...`
    /// (and `/completions`, `/embeddings`) with the key in `api-key`. Without
    /// the key: 401 "Access denied due to invalid subscription key..."; a path
    /// it does not serve, or no `api-version`: 404 "Resource not found"; an
    /// `api-version` it does not know: 400; an unknown deployment: 404
    /// `DeploymentNotFound`. The body's `model` is ignored: a deployment
    /// answers with the model it was created for.
    Azure {
        api_version: String,
        /// (deployment name, the model it answers as).
        deployments: Vec<(String, String)>,
    },
    /// Anthropic's authentication (<https://docs.anthropic.com/en/api/getting-started>,
    /// errors: <https://docs.anthropic.com/en/api/errors>): the key in
    /// `x-api-key` (else 401 `authentication_error`) and an
    /// `anthropic-version` header (else 400 `invalid_request_error`), errors
    /// as `{"type":"error","error":{"type","message"}}`. Only the headers: the
    /// endpoints stay OpenAI's.
    Anthropic { version: String },
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            chunk_delay: Duration::ZERO,
            chunks: 5,
            reply: "Hello from the fake upstream".to_owned(),
            api_key: None,
            response_headers: Vec::new(),
            cached_tokens: 0,
            reasoning_tokens: 0,
            served_model: None,
            strict_request_id: false,
            provider: Provider::OpenAi,
        }
    }
}

/// Failure injection for the `/v1/*` endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Behave like OpenAI.
    #[default]
    Normal,
    /// Answer every request with this status and an OpenAI error body
    /// `{"error":{"message":..,"type":"server_error","param":null,"code":null}}`.
    Fail(u16),
    /// Answer 429 as a provider whose rate limit is reached: OpenAI's body
    /// (`type` `requests`, `code` `rate_limit_exceeded`) with `retry-after`
    /// and `retry-after-ms` (as Azure OpenAI sends them) and
    /// `x-ratelimit-remaining-requests: 0`.
    RateLimited { retry_after_secs: u32 },
    /// Accept the request and never respond (until shutdown or the client
    /// gives up).
    Hang,
    /// Streaming: send the role chunk and `after_chunks` content chunks, then
    /// drop the connection without the terminating chunk (the client sees an
    /// incomplete chunked body, no `[DONE]`). Anything else: drop the
    /// connection without any response.
    DieMidStream { after_chunks: usize },
    /// Never include `usage` (neither in JSON nor in SSE, not even the
    /// `"usage":null` markers), even when the request asks for it.
    NoUsage,
}

/// HTTPS for [`FakeUpstream::start_tls`].
#[derive(Debug, Clone)]
pub struct FakeTls {
    /// The server's certificate chain, leaf first, PEM.
    pub cert_chain_pem: String,
    /// Its private key, PEM.
    pub key_pem: String,
    /// Refuse clients without a certificate issued by this CA (PEM).
    pub client_ca_pem: Option<String>,
    /// Offer `h2` besides `http/1.1` by ALPN (else HTTP/1.1 only, like a
    /// server without HTTP/2).
    pub http2: bool,
}

impl FakeTls {
    fn server_config(&self) -> std::io::Result<rustls::ServerConfig> {
        let bad = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        let chain = CertificateDer::pem_slice_iter(self.cert_chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("cert_chain_pem: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| bad(format!("key_pem: {e}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(e.to_string()))?;
        let builder = match &self.client_ca_pem {
            Some(pem) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                    let c = c.map_err(|e| bad(format!("client_ca_pem: {e}")))?;
                    roots
                        .add(c)
                        .map_err(|e| bad(format!("client_ca_pem: {e}")))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| bad(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut cfg = builder
            .with_single_cert(chain, key)
            .map_err(|e| bad(e.to_string()))?;
        cfg.alpn_protocols = if self.http2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        Ok(cfg)
    }
}

/// One request to `/v1/*`, as received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path only, without the query string.
    pub path: String,
    /// The query string, `""` when there is none.
    pub query: String,
    /// Header names are lowercase; repeated headers appear once per value.
    pub headers: Vec<(String, String)>,
    pub body: bytes::Bytes,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// Which accepted connection it came on (numbered from 1 in accept
    /// order), to tell reused connections from new ones.
    pub connection: usize,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
    }
}

/// Per-connection "drop me" signal, inserted into each request's extensions
/// by the connection task; `DieMidStream` uses it to close the connection
/// without a response.
#[derive(Clone)]
pub(crate) struct ConnKill(pub(crate) Arc<Notify>);

/// The number of the connection a request came on (see
/// [`RecordedRequest::connection`]), inserted beside [`ConnKill`].
#[derive(Clone, Copy)]
pub(crate) struct ConnId(pub(crate) usize);

/// Handle to a running fake upstream. Cheap to clone; all clones control the
/// same server.
///
/// Dropping the handles does **not** stop the server (it lives as long as
/// its Tokio runtime, which for `#[tokio::test]` is the test); call
/// [`shutdown`](Self::shutdown) to stop it deliberately.
#[derive(Clone)]
pub struct FakeUpstream {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    https: bool,
    shared: Arc<Shared>,
    /// Tells the accept loop to stop (a stored permit, so it cannot be lost).
    stop: Arc<Notify>,
    /// The accept loop; `None` once shut down. An async mutex so concurrent
    /// `shutdown()` calls all wait for the loop to be gone.
    server: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

impl FakeUpstream {
    /// Starts a fake upstream on an ephemeral port of 127.0.0.1.
    pub async fn start(cfg: FakeConfig) -> std::io::Result<FakeUpstream> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), cfg).await
    }

    /// Starts a fake upstream on `addr` — e.g. the address of one that was
    /// [`shutdown`](Self::shutdown), to "restart" a killed backend.
    pub async fn start_on(addr: SocketAddr, cfg: FakeConfig) -> std::io::Result<FakeUpstream> {
        Self::launch(addr, cfg, None).await
    }

    /// Starts an HTTPS fake upstream on an ephemeral port of 127.0.0.1.
    pub async fn start_tls(cfg: FakeConfig, tls: FakeTls) -> std::io::Result<FakeUpstream> {
        let acceptor = TlsAcceptor::from(Arc::new(tls.server_config()?));
        Self::launch(SocketAddr::from(([127, 0, 0, 1], 0)), cfg, Some(acceptor)).await
    }

    async fn launch(
        addr: SocketAddr,
        cfg: FakeConfig,
        tls: Option<TlsAcceptor>,
    ) -> std::io::Result<FakeUpstream> {
        let listener = bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(&cfg));
        let stop = Arc::new(Notify::new());
        let router = handlers::router(shared.clone());
        let https = tls.is_some();
        let server = tokio::spawn(accept_loop(
            listener,
            router,
            stop.clone(),
            tls,
            shared.clone(),
        ));
        Ok(FakeUpstream {
            inner: Arc::new(Inner {
                addr,
                https,
                shared,
                stop,
                server: tokio::sync::Mutex::new(Some(server)),
            }),
        })
    }

    /// The bound address (with the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:41234`
    /// (`https://` when started with [`start_tls`](Self::start_tls)).
    pub fn url(&self) -> String {
        let scheme = if self.inner.https { "https" } else { "http" };
        format!("{scheme}://{}", self.inner.addr)
    }

    /// TCP connections accepted so far, health probes and failed TLS
    /// handshakes included.
    pub fn connections_accepted(&self) -> usize {
        self.inner.shared.connections_accepted()
    }

    pub fn mode(&self) -> Mode {
        self.inner.shared.mode()
    }

    /// Switches the failure mode; applies to requests arriving afterwards.
    pub fn set_mode(&self, m: Mode) {
        self.inner.shared.set_mode(m);
    }

    /// `/health` answers 503 while `false`.
    pub fn set_health_ok(&self, ok: bool) {
        self.inner.shared.set_health_ok(ok);
    }

    /// Changes the default chunk delay for requests arriving afterwards.
    pub fn set_chunk_delay(&self, d: Duration) {
        self.inner.shared.set_chunk_delay(d);
    }

    /// Holds every stream (those open and those to come) before its next
    /// content chunk until `false`: a test can act while a stream is
    /// provably still open.
    pub fn hold_streams(&self, held: bool) {
        self.inner.shared.set_held(held);
    }

    /// Whether `/v1/*` requests are stored for [`requests`](Self::requests)
    /// (on by default). The binary turns it off so a long benchmark does not
    /// grow memory; [`request_count`](Self::request_count) keeps counting.
    pub fn set_recording(&self, on: bool) {
        self.inner.shared.set_recording(on);
    }

    /// Every `/v1/*` request received (recorded before auth and failure
    /// injection, so failed and rejected attempts are included).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.shared.requests()
    }

    /// Number of `/v1/*` requests received (counted even when recording is
    /// off).
    pub fn request_count(&self) -> usize {
        self.inner.shared.request_count()
    }

    /// Streaming answers sent to their last event; one whose reader hung up
    /// before its end is not counted.
    pub fn completed_streams(&self) -> usize {
        self.inner
            .shared
            .completed_streams
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Forgets recorded requests and resets the count.
    pub fn clear_requests(&self) {
        self.inner.shared.clear_requests();
    }

    /// Stops listening and drops every open connection, in-flight responses
    /// included (a killed backend). When this returns the port is closed and
    /// every connection socket has been dropped. Idempotent.
    pub async fn shutdown(&self) {
        let mut server = self.inner.server.lock().await;
        if let Some(task) = server.take() {
            self.inner.stop.notify_one();
            // The loop only ends by itself after closing everything; an
            // error here means it panicked or the runtime is shutting down,
            // and either way the sockets are gone.
            let _ = task.await;
        }
    }
}

/// Binds with `SO_REUSEADDR`, so a restarted fake can take over the port of
/// a shut-down one even while its old connections sit in TIME_WAIT.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    // A deep backlog: benchmarks open many connections at once.
    socket.listen(1024)
}

/// Accepts connections until told to stop, then closes the listener and
/// aborts every connection task, waiting until all of them are gone.
async fn accept_loop(
    listener: TcpListener,
    router: Router,
    stop: Arc<Notify>,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = stop.notified() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let id = ConnId(shared.count_connection());
                    // SSE chunks must leave immediately, not wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    let router = router.clone();
                    match &tls {
                        None => {
                            conns.spawn(serve_connection(stream, router, id, false));
                        }
                        Some(acceptor) => {
                            let acceptor = acceptor.clone();
                            conns.spawn(async move {
                                // A client that refuses our certificate (or
                                // we its) just goes away, as with a real server.
                                let Ok(tls) = acceptor.accept(stream).await else {
                                    return;
                                };
                                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                                serve_connection(tls, router, id, h2).await;
                            });
                        }
                    }
                }
                // Per-connection failures (reset before accept) and fd
                // exhaustion: back off briefly instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
            // Reap finished connection tasks so the set does not grow.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

/// Serves one connection (HTTP/1.1 keep-alive, or HTTP/2 when `h2`) until
/// the client closes it, the task is aborted, or a handler asks for the
/// connection to be killed.
async fn serve_connection<S>(stream: S, router: Router, id: ConnId, h2: bool)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let kill = Arc::new(Notify::new());
    let conn_kill = ConnKill(kill.clone());
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(conn_kill.clone());
        req.extensions_mut().insert(id);
        tower_service::Service::call(&mut router.clone(), req)
    });
    // No header-read timeout (hyper's needs a timer we do not install):
    // idle keep-alive connections stay open, so pooled gateway connections
    // are never closed under it unexpectedly.
    let io = TokioIo::new(stream);
    if h2 {
        let conn = http2::Builder::new(TokioExecutor::new()).serve_connection(io, service);
        tokio::select! {
            _ = conn => {}
            () = kill.notified() => {}
        }
    } else {
        let conn = http1::Builder::new().serve_connection(io, service);
        tokio::select! {
            _ = conn => {}
            () = kill.notified() => {}
        }
    }
}
