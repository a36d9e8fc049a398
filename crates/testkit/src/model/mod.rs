//! An OpenAI-compatible model server for tests (feature `models`): real HTTP on 127.0.0.1, the
//! real wire format, deterministic answers, known timing, and faults on demand.
//!
//! ```
//! use std::time::Duration;
//! use citadel_itest_testkit::model::ModelServer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = ModelServer::builder()
//!     .backend_id("model-1")
//!     .models(["chat-small", "embed-small"])
//!     .ttft(Duration::from_millis(20))
//!     .itl(Duration::from_millis(5))
//!     .api_key("sk-test")
//!     .start()
//!     .await?;
//!
//! let answer: serde_json::Value = reqwest::Client::new()
//!     .post(format!("{}/chat/completions", server.base_url()))
//!     .bearer_auth("sk-test")
//!     .json(&serde_json::json!({
//!         "model": "chat-small",
//!         "messages": [{"role": "user", "content": "Say something"}],
//!         "max_tokens": 4
//!     }))
//!     .send()
//!     .await?
//!     .json()
//!     .await?;
//! assert_eq!(answer["object"], "chat.completion");
//! assert_eq!(answer["usage"]["completion_tokens"], 4);
//! assert_eq!(answer["choices"][0]["finish_reason"], "length");
//! # Ok(()) }
//! ```
//!
//! # Endpoints
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/chat/completions` | chat, JSON or SSE stream (`stream`, `stream_options.include_usage`) |
//! | `POST /v1/completions` | legacy completions, JSON or SSE stream |
//! | `POST /v1/embeddings` | L2-normalised vectors, `float` or `base64`, optional `dimensions` |
//! | `GET /v1/models`, `GET /v1/models/{model}` | the configured models |
//! | `GET /health` | `{"status":"ok","backend_id":"..."}` (503 `unavailable` while that fault is set server-wide) |
//! | `GET /metrics` | Prometheus text format (see below) |
//! | `GET`, `POST`, `DELETE /fixture/faults` | read, replace, clear the server-wide [`Faults`] |
//!
//! The API key (when set) is required as `Authorization: Bearer KEY` on `/v1/*` only. Every
//! response carries `x-backend-id` and `x-request-id` (the client's, or a generated one).
//!
//! # Determinism
//!
//! An answer depends only on the seed, the model, the request's content (messages or prompt,
//! the request's own `seed`, the choice index) and the token count: the same request gets the
//! same words from every backend with the same seed. Every answer has
//! [`ModelServerBuilder::completion_tokens`] tokens (16 by default); a smaller `max_tokens` cuts
//! it (finish reason `length`, else `stop`). One token is one word; the text of a choice is its
//! tokens joined, so `completion_tokens` equals its whitespace-separated word count, and
//! `prompt_tokens` is the word count of the messages' text (or the prompt, or the number of
//! token ids). Embeddings depend only on the seed and the text (not the model), so backends
//! behind a gateway agree, and texts sharing words have similar vectors.
//!
//! # Timing
//!
//! The first token is due `ttft` after the request body was read, every next one `itl` later,
//! each delay moved by a seeded offset in `[-jitter, +jitter]`; deadlines are absolute, so the
//! error does not accumulate (tokio's timer adds at most ~1 ms per deadline). A stream sends
//! its first chunks at the first deadline; a JSON answer is sent at the last one
//! (`ttft + itl * (n - 1)`); embeddings after `ttft`. The jitter draws come from the seed and a
//! per-server counter.
//!
//! # Metrics
//!
//! `fixture_requests_total{route,status}`, `fixture_request_duration_seconds{route}`
//! (histogram), `fixture_requests_in_flight`, `fixture_generated_tokens_total{model}`,
//! `fixture_prompt_tokens_total{model}`, `fixture_faults_injected_total{fault}`,
//! `fixture_request_log_dropped_total`, `fixture_backend_info{backend_id}`,
//! `process_resident_memory_bytes`, `process_cpu_seconds_total` (of the whole process: the test
//! binary when in-process). Requests to `/metrics` and `/fixture/*` are not counted; every other
//! request is counted once, under its route template (`unmatched` for unknown paths), by the time
//! its client has the whole response.

mod faults;
mod generate;
mod metrics;
mod routes;
mod stream;
mod timer;
mod wire;

#[cfg(feature = "models-db")]
mod db;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::http::HeaderValue;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::error::{ErrorKind, TestkitError};
use crate::process::{self, LOCALHOST};

pub use faults::{Faults, ParseFaultsError};

/// The response header naming the backend that answered.
pub const BACKEND_ID_HEADER: &str = "x-backend-id";
/// The request id header: echoed when the client sends one, generated otherwise.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The request header that injects [`Faults`] into one request (syntax: [`Faults`]'s `FromStr`).
pub const FAULT_HEADER: &str = "x-fixture-fault";
/// The table the request log writes to (`ModelServerBuilder::database_url`, feature `models-db`).
pub const REQUEST_LOG_TABLE: &str = "fixture_request_log";

const SERVICE: &str = "model server";
/// How long an idle connection may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Options for a [`ModelServer`]; [`ModelServerBuilder::start`] binds and serves.
#[derive(Clone)]
pub struct ModelServerBuilder {
    port: u16,
    backend_id: Option<String>,
    models: Vec<String>,
    ttft: Duration,
    itl: Duration,
    jitter: Duration,
    seed: u64,
    embedding_dimension: usize,
    completion_tokens: usize,
    api_key: Option<String>,
    faults: Faults,
    body_limit: usize,
    shutdown_grace: Duration,
    #[cfg(feature = "models-db")]
    database_url: Option<String>,
}

impl Default for ModelServerBuilder {
    fn default() -> Self {
        Self {
            port: 0,
            backend_id: None,
            models: vec!["fixture-chat".to_owned(), "fixture-embed".to_owned()],
            ttft: Duration::ZERO,
            itl: Duration::ZERO,
            jitter: Duration::ZERO,
            seed: 0,
            embedding_dimension: 384,
            completion_tokens: 16,
            api_key: None,
            faults: Faults::none(),
            body_limit: 1024 * 1024,
            shutdown_grace: Duration::from_secs(5),
            #[cfg(feature = "models-db")]
            database_url: None,
        }
    }
}

impl fmt::Debug for ModelServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ModelServerBuilder");
        d.field("port", &self.port)
            .field("backend_id", &self.backend_id)
            .field("models", &self.models)
            .field("ttft", &self.ttft)
            .field("itl", &self.itl)
            .field("jitter", &self.jitter)
            .field("seed", &self.seed)
            .field("embedding_dimension", &self.embedding_dimension)
            .field("completion_tokens", &self.completion_tokens)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("faults", &self.faults)
            .field("body_limit", &self.body_limit)
            .field("shutdown_grace", &self.shutdown_grace);
        #[cfg(feature = "models-db")]
        d.field(
            "database_url",
            &self.database_url.as_ref().map(|_| "<redacted>"),
        );
        d.finish()
    }
}

impl ModelServerBuilder {
    /// The port on 127.0.0.1 (`--port`); default 0, a free port.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// The `x-backend-id` (`--backend-id`); default `model-<port>`. Visible ASCII only.
    pub fn backend_id(mut self, id: impl Into<String>) -> Self {
        self.backend_id = Some(id.into());
        self
    }

    /// The models served (`--models a,b`), replacing the default `fixture-chat` and
    /// `fixture-embed`. Every model answers on every endpoint.
    pub fn models<I, S>(mut self, models: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.models = models.into_iter().map(Into::into).collect();
        self
    }

    /// Time to first token (`--ttft`); default 0.
    pub fn ttft(mut self, ttft: Duration) -> Self {
        self.ttft = ttft;
        self
    }

    /// Inter-token delay (`--itl`); default 0.
    pub fn itl(mut self, itl: Duration) -> Self {
        self.itl = itl;
        self
    }

    /// Bound of the seeded offset added to each delay (ttft and every itl); default 0.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// The seed of every generated answer, embedding, jitter and error-rate draw; default 0.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The embedding dimension; default 384. A request's `dimensions` may ask for fewer.
    pub fn embedding_dimension(mut self, dimension: usize) -> Self {
        self.embedding_dimension = dimension;
        self
    }

    /// How many tokens an answer has when `max_tokens` does not cut it; default 16.
    pub fn completion_tokens(mut self, tokens: usize) -> Self {
        self.completion_tokens = tokens;
        self
    }

    /// Requires `Authorization: Bearer <key>` on `/v1/*`; default none (no auth).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The faults in force from the start; default none.
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// The largest request body accepted; larger ones get 413. Default 1 MiB.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// How long [`ModelServer::stop`] lets open requests finish; default 5 s.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Logs every completed request to `fixture_request_log` in this PostgreSQL database
    /// (`--database-url`), creating the table if needed. [`ModelServerBuilder::start`] fails
    /// if it cannot connect.
    #[cfg(feature = "models-db")]
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.database_url = Some(url.into());
        self
    }

    fn validate(&self) -> Result<(), ErrorKind> {
        if self.models.is_empty() {
            return Err(ErrorKind::invalid("models", "give at least one model"));
        }
        for model in &self.models {
            let ok = !model.is_empty()
                && model.len() <= 256
                && model
                    .chars()
                    .all(|c| c.is_ascii_graphic() && !matches!(c, ',' | '"' | '\\' | '='));
            if !ok {
                return Err(ErrorKind::invalid(
                    format!("model name `{model}`"),
                    "use 1-256 visible ASCII characters other than , \" \\ =",
                ));
            }
        }
        if let Some(id) = &self.backend_id {
            if id.is_empty() || id.len() > 256 || !id.chars().all(|c| c.is_ascii_graphic()) {
                return Err(ErrorKind::invalid(
                    format!("backend id `{id}`"),
                    "use 1-256 visible ASCII characters",
                ));
            }
        }
        if let Some(key) = &self.api_key {
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_graphic()) {
                return Err(ErrorKind::invalid(
                    "api key",
                    "must be non-empty visible ASCII",
                ));
            }
        }
        if !(1..=65_536).contains(&self.embedding_dimension) {
            return Err(ErrorKind::invalid(
                "embedding dimension",
                "must be 1 to 65536",
            ));
        }
        if !(1..=100_000).contains(&self.completion_tokens) {
            return Err(ErrorKind::invalid(
                "completion tokens",
                "must be 1 to 100000",
            ));
        }
        if self.body_limit < 1024 {
            return Err(ErrorKind::invalid(
                "body limit",
                "must be at least 1024 bytes",
            ));
        }
        self.faults
            .validate()
            .map_err(|why| ErrorKind::invalid("faults", why))
    }

    /// Binds 127.0.0.1 and serves on the current tokio runtime until the [`ModelServer`] is
    /// stopped or dropped.
    pub async fn start(self) -> Result<ModelServer, TestkitError> {
        self.start_inner()
            .await
            .map_err(|kind| TestkitError::new("start", SERVICE, kind))
    }

    async fn start_inner(self) -> Result<ModelServer, ErrorKind> {
        self.validate()?;
        let bind = SocketAddr::from((LOCALHOST, self.port));
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|e| ErrorKind::io(format!("bind {bind}"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| ErrorKind::io("read local address", e))?;
        let backend_id = self
            .backend_id
            .unwrap_or_else(|| format!("model-{}", addr.port()));
        let backend_id_header = HeaderValue::from_str(&backend_id)
            .map_err(|_| ErrorKind::invalid("backend id", "not a valid header value"))?;
        let nonce_hex = process::random_hex(8)?;
        let nonce = u64::from_str_radix(&nonce_hex, 16).unwrap_or_default();
        #[cfg(feature = "models-db")]
        let request_log = match &self.database_url {
            Some(url) => Some(db::RequestLog::connect(url, &backend_id).await?),
            None => None,
        };
        let fingerprint = format!(
            "fp_{:010x}",
            generate::hash_parts(self.seed, &[b"fingerprint"]) & 0xff_ffff_ffff
        );
        let shared = Arc::new(routes::Shared {
            backend_id,
            backend_id_header,
            models: self.models,
            api_key: self.api_key,
            seed: self.seed,
            ttft: self.ttft,
            itl: self.itl,
            jitter: self.jitter,
            completion_tokens: self.completion_tokens,
            embedding_dimension: self.embedding_dimension,
            body_limit: self.body_limit,
            fingerprint,
            faults: Mutex::new(self.faults),
            fault_draws: AtomicU64::new(0),
            timing_draws: AtomicU64::new(0),
            request_counter: AtomicU64::new(0),
            nonce,
            metrics: metrics::Metrics::default(),
            #[cfg(feature = "models-db")]
            request_log,
        });
        let router = routes::router(shared.clone());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let grace = self.shutdown_grace;
        let task = tokio::spawn(serve(listener, router, shutdown_rx, grace));
        tracing::info!(
            addr = %addr,
            backend_id = %shared.backend_id,
            models = ?shared.models,
            "model server listening"
        );
        Ok(ModelServer {
            addr,
            shared,
            shutdown,
            task: Some(task),
        })
    }
}

/// Accepts connections until shutdown, then lets open requests finish for `grace` and drops
/// what is left. Dropping (aborting) this future closes every connection at once.
async fn serve(
    listener: TcpListener,
    router: axum::Router,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => {
                    // Small SSE chunks must leave at once, not wait for Nagle's algorithm.
                    let _ = tcp.set_nodelay(true);
                    let service = TowerToHyperService::new(router.clone());
                    let http = http.clone();
                    let mut stop = shutdown.clone();
                    connections.spawn(async move {
                        let connection = http.serve_connection(TokioIo::new(tcp), service);
                        tokio::pin!(connection);
                        tokio::select! {
                            result = connection.as_mut() => {
                                if let Err(e) = result {
                                    tracing::debug!(error = %e, "connection ended with an error");
                                }
                            }
                            _ = stop.changed() => {
                                connection.as_mut().graceful_shutdown();
                                let _ = connection.await;
                            }
                        }
                    });
                }
                Err(e) => {
                    // E.g. too many open files: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, drain).await.is_err() {
        tracing::warn!(
            open = connections.len(),
            "requests still open after the shutdown grace period; closing them"
        );
    }
}

/// A running model server. [`ModelServer::stop`] shuts it down gracefully; dropping it closes
/// the listener and every connection at once.
pub struct ModelServer {
    addr: SocketAddr,
    shared: Arc<routes::Shared>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for ModelServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelServer")
            .field("addr", &self.addr)
            .field("backend_id", &self.shared.backend_id)
            .field("models", &self.shared.models)
            .field(
                "api_key",
                &self.shared.api_key.as_ref().map(|_| "<redacted>"),
            )
            .field("running", &self.task.is_some())
            .finish()
    }
}

impl ModelServer {
    /// Options for a server; see [`ModelServerBuilder`].
    pub fn builder() -> ModelServerBuilder {
        ModelServerBuilder::default()
    }

    /// Starts a server with the default options on a free port.
    pub async fn start() -> Result<Self, TestkitError> {
        Self::builder().start().await
    }

    /// The listening address, `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:port/v1`, what OpenAI clients call the base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The `x-backend-id` this server sends.
    pub fn backend_id(&self) -> &str {
        &self.shared.backend_id
    }

    /// The models served.
    pub fn models(&self) -> &[String] {
        &self.shared.models
    }

    /// The API key clients must send, if one is required.
    pub fn api_key(&self) -> Option<&str> {
        self.shared.api_key.as_deref()
    }

    /// The embedding dimension.
    pub fn embedding_dimension(&self) -> usize {
        self.shared.embedding_dimension
    }

    /// The server-wide faults now in force.
    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }

    /// Replaces the server-wide faults (as `POST /fixture/faults` does).
    pub fn set_faults(&self, faults: Faults) -> Result<(), TestkitError> {
        faults.validate().map_err(|why| {
            TestkitError::new("set faults on", SERVICE, ErrorKind::invalid("faults", why))
        })?;
        self.shared.set_faults(faults);
        Ok(())
    }

    /// Removes every server-wide fault (as `DELETE /fixture/faults` does).
    pub fn clear_faults(&self) {
        self.shared.set_faults(Faults::none());
    }

    /// Waits until every request-log row queued so far is written (or has failed and been
    /// logged). Without a database URL it returns at once.
    #[cfg(feature = "models-db")]
    pub async fn flush_request_log(&self) -> Result<(), TestkitError> {
        let Some(log) = &self.shared.request_log else {
            return Ok(());
        };
        match tokio::time::timeout(Duration::from_secs(30), log.flush()).await {
            Ok(result) => result.map_err(|kind| TestkitError::new("flush", SERVICE, kind)),
            Err(_) => Err(TestkitError::new(
                "flush",
                SERVICE,
                ErrorKind::io(
                    "flush request log",
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "not done within 30s"),
                ),
            )),
        }
    }

    /// Stops accepting, closes idle connections, lets open requests finish within the shutdown
    /// grace period (then closes them), and flushes the request log. Calling it twice is fine.
    pub async fn stop(&mut self) -> Result<(), TestkitError> {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            task.await.map_err(|e| {
                TestkitError::new(
                    "stop",
                    SERVICE,
                    ErrorKind::io("join the server task", std::io::Error::other(e.to_string())),
                )
            })?;
        }
        #[cfg(feature = "models-db")]
        self.flush_request_log().await?;
        tracing::info!(backend_id = %self.shared.backend_id, "model server stopped");
        Ok(())
    }

    /// Serves until `signal` completes (e.g. SIGTERM), then [stops](ModelServer::stop)
    /// gracefully. For a binary that runs the server in the foreground.
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> Result<(), TestkitError> {
        if let Some(task) = self.task.as_mut() {
            tokio::select! {
                () = signal => {}
                result = task => {
                    self.task = None;
                    let why = match result {
                        Ok(()) => "the server task ended unexpectedly".to_owned(),
                        Err(e) => format!("the server task failed: {e}"),
                    };
                    return Err(TestkitError::new(
                        "serve",
                        SERVICE,
                        ErrorKind::io("run", std::io::Error::other(why)),
                    ));
                }
            }
        }
        self.stop().await
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
