//! A Qdrant-compatible vector server, in process: Qdrant's gRPC services (the server traits that
//! the `qdrant-client` crate generates) and its REST API on a second port, over one in-memory
//! store with exact brute-force search. It answers as the real Qdrant 1.18.3 does, down to the
//! error texts and status codes recorded from one (see `docs/testkit.md` for what is
//! covered and where it differs).
//!
//! ```no_run
//! use citadel_itest_testkit::{QdrantServer, TestkitError};
//!
//! # async fn example() -> Result<(), TestkitError> {
//! let qdrant = QdrantServer::builder().api_key("s3cret").start().await?;
//! println!("REST {} gRPC {}", qdrant.http_url(), qdrant.grpc_url());
//! // ... point `qdrant_client::Qdrant::from_url(&qdrant.grpc_url())` or reqwest at it ...
//! qdrant.stop().await?;
//! # Ok(()) }
//! ```
//!
//! The server runs on its own thread with its own tokio runtime, so it keeps answering while the
//! caller blocks (the official client's `build()` does a blocking health check) and works from a
//! current-thread `#[tokio::test]`. It listens on 127.0.0.1 only. Dropping the handle stops it;
//! [`QdrantServer::stop`] stops it and waits until both ports are closed.

mod auth;
mod filter;
mod grpc;
mod metrics;
mod rest;
mod store;

use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use crate::error::{ErrorKind, TestkitError};
use crate::process::LOCALHOST;

/// The version the fixture reports by default: the Qdrant release its answers were checked
/// against.
pub const QDRANT_VERSION: &str = "1.18.3";

/// Qdrant's `title` in `GET /` and the gRPC health check.
const TITLE: &str = "qdrant - vector search engine";

/// Qdrant's default `service.max_request_size_mb` (32 MiB).
const DEFAULT_MAX_REQUEST_SIZE: usize = 32 * 1024 * 1024;

/// How long a stop waits for open connections to finish before closing them.
const GRACE: Duration = Duration::from_secs(3);

/// How long [`QdrantServer::stop`] waits for the server thread.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

const SERVICE: &str = "qdrant fixture";

/// What both protocols share.
pub(crate) struct Shared {
    store: store::Store,
    metrics: metrics::Metrics,
    version: String,
    api_key: Option<auth::ApiKey>,
    max_request_size: usize,
}

/// Options of a [`QdrantServer`]; every flag of the `citadel-itest-fixtures qdrant` command
/// has a method here.
#[derive(Clone)]
#[must_use]
pub struct QdrantServerBuilder {
    http_port: u16,
    grpc_port: u16,
    api_key: Option<String>,
    version: String,
    max_request_size: usize,
}

impl Default for QdrantServerBuilder {
    fn default() -> Self {
        Self {
            http_port: 0,
            grpc_port: 0,
            api_key: None,
            version: QDRANT_VERSION.to_owned(),
            max_request_size: DEFAULT_MAX_REQUEST_SIZE,
        }
    }
}

impl QdrantServerBuilder {
    /// The REST port on 127.0.0.1 (`--http-port`); 0, the default, picks a free one.
    pub fn http_port(mut self, port: u16) -> Self {
        self.http_port = port;
        self
    }

    /// The gRPC port on 127.0.0.1 (`--grpc-port`); 0, the default, picks a free one.
    pub fn grpc_port(mut self, port: u16) -> Self {
        self.grpc_port = port;
        self
    }

    /// Requires this key (`--api-key`) on every request except the health endpoints, as
    /// Qdrant's `service.api_key` does: in an `api-key` header or metadata entry, or as
    /// `authorization: Bearer KEY`. Without it, every request is served.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The version reported in `GET /`, the gRPC health check and `app_info` (`--version`);
    /// [`QDRANT_VERSION`] by default. The official clients compare it with their own.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// The largest request accepted (`--max-request-size`), in bytes: a REST body, or a gRPC
    /// message to the collections and points services; 32 MiB, Qdrant's default, unless set.
    /// Larger REST bodies get Qdrant's 400 answer, larger gRPC messages `RESOURCE_EXHAUSTED`.
    pub fn max_request_size(mut self, bytes: usize) -> Self {
        self.max_request_size = bytes;
        self
    }

    /// Binds both ports and starts serving; returns once both accept connections.
    ///
    /// # Errors
    ///
    /// A port cannot be bound (in use, no permission), or the server thread or its runtime
    /// cannot be started.
    pub async fn start(self) -> Result<QdrantServer, TestkitError> {
        let fail = |kind| TestkitError::new("start", SERVICE, kind);
        let http = bind(self.http_port).map_err(fail)?;
        let grpc = bind(self.grpc_port).map_err(fail)?;
        let local = |l: &StdTcpListener| {
            l.local_addr()
                .map_err(|e| fail(ErrorKind::io("read the bound address", e)))
        };
        let (http_addr, grpc_addr) = (local(&http)?, local(&grpc)?);

        let shared = Arc::new(Shared {
            store: store::Store::default(),
            metrics: metrics::Metrics::default(),
            version: self.version,
            api_key: self.api_key.clone().map(auth::ApiKey::new),
            max_request_size: self.max_request_size,
        });
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("qdrant-fixture".into())
            .spawn(move || serve(http, grpc, shared, ready_tx, stop_rx, done_tx))
            .map_err(|e| fail(ErrorKind::io("spawn the server thread", e)))?;
        match ready_rx.await {
            Ok(Ok(())) => Ok(QdrantServer {
                http_addr,
                grpc_addr,
                api_key: self.api_key,
                stop: Some(stop_tx),
                done: Some(done_rx),
            }),
            Ok(Err(kind)) => Err(fail(kind)),
            Err(_) => Err(fail(ErrorKind::io(
                "start the server thread",
                std::io::Error::other("the thread ended before the server was ready"),
            ))),
        }
    }
}

/// A running Qdrant-compatible server (REST and gRPC on 127.0.0.1); stopped when dropped.
pub struct QdrantServer {
    http_addr: SocketAddr,
    grpc_addr: SocketAddr,
    api_key: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<oneshot::Receiver<()>>,
}

impl QdrantServer {
    /// Options: ports, API key, reported version, body limit.
    pub fn builder() -> QdrantServerBuilder {
        QdrantServerBuilder::default()
    }

    /// Starts a server with the defaults: free ports, no API key.
    ///
    /// # Errors
    ///
    /// As [`QdrantServerBuilder::start`].
    pub async fn start() -> Result<Self, TestkitError> {
        Self::builder().start().await
    }

    /// The REST base URL, e.g. `http://127.0.0.1:6333`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// The gRPC URL for `qdrant_client::Qdrant::from_url`, e.g. `http://127.0.0.1:6334`.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// The REST port.
    pub fn http_port(&self) -> u16 {
        self.http_addr.port()
    }

    /// The gRPC port.
    pub fn grpc_port(&self) -> u16 {
        self.grpc_addr.port()
    }

    /// The REST listen address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The gRPC listen address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The API key clients must send, when one was configured.
    pub fn api_key(&self) -> Option<&str> {
        self.api_key.as_deref()
    }

    /// Stops serving: open connections get a few seconds to finish, then both ports close.
    /// Returns once they have.
    ///
    /// # Errors
    ///
    /// The server thread did not finish within ten seconds.
    pub async fn stop(mut self) -> Result<(), TestkitError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(done) = self.done.take() else {
            return Ok(());
        };
        match tokio::time::timeout(STOP_TIMEOUT, done).await {
            // Err(RecvError) means the thread is gone, which is also stopped.
            Ok(_) => Ok(()),
            Err(_) => Err(TestkitError::new(
                "stop",
                SERVICE,
                ErrorKind::io(
                    "wait for the server thread",
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("still running after {STOP_TIMEOUT:?}"),
                    ),
                ),
            )),
        }
    }
}

impl Drop for QdrantServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Shows the key as `<redacted>`.
impl std::fmt::Debug for QdrantServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QdrantServerBuilder")
            .field("http_port", &self.http_port)
            .field("grpc_port", &self.grpc_port)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("version", &self.version)
            .field("max_request_size", &self.max_request_size)
            .finish()
    }
}

/// Shows the key as `<redacted>`.
impl std::fmt::Debug for QdrantServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QdrantServer")
            .field("http_addr", &self.http_addr)
            .field("grpc_addr", &self.grpc_addr)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

fn bind(port: u16) -> Result<StdTcpListener, ErrorKind> {
    let addr = SocketAddr::from((LOCALHOST, port));
    let listener =
        StdTcpListener::bind(addr).map_err(|e| ErrorKind::io(format!("bind {addr}"), e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| ErrorKind::io(format!("configure {addr}"), e))?;
    Ok(listener)
}

/// The server thread: a small runtime serving both ports until told to stop (or until the
/// handle is dropped).
fn serve(
    http: StdTcpListener,
    grpc: StdTcpListener,
    shared: Arc<Shared>,
    ready: oneshot::Sender<Result<(), ErrorKind>>,
    stop: oneshot::Receiver<()>,
    done: oneshot::Sender<()>,
) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("qdrant-fixture-worker")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(ErrorKind::io("build the server runtime", e)));
            return;
        }
    };
    runtime.block_on(async move {
        let listeners = tokio::net::TcpListener::from_std(http)
            .and_then(|h| Ok((h, tokio::net::TcpListener::from_std(grpc)?)));
        let (http, grpc) = match listeners {
            Ok(pair) => pair,
            Err(e) => {
                let _ = ready.send(Err(ErrorKind::io("register the listeners", e)));
                return;
            }
        };
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shutdown = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };

        let rest = axum::serve(http, rest::router(shared.clone()))
            .with_graceful_shutdown(shutdown(shutdown_rx.clone()));
        let service = grpc::Service::new(shared.clone());
        let max_message = shared.max_request_size;
        let grpc = tonic::transport::Server::builder()
            .layer(grpc::GateLayer::new(shared))
            .add_service(qdrant_client::qdrant::qdrant_server::QdrantServer::new(
                service.clone(),
            ))
            .add_service(grpc::Health)
            .add_service(
                qdrant_client::qdrant::collections_server::CollectionsServer::new(service.clone())
                    .max_decoding_message_size(max_message),
            )
            .add_service(
                qdrant_client::qdrant::points_server::PointsServer::new(service)
                    .max_decoding_message_size(max_message),
            )
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(grpc),
                shutdown(shutdown_rx),
            );
        let rest = tokio::spawn(async move { rest.await });
        let grpc = tokio::spawn(grpc);
        let _ = ready.send(Ok(()));

        // A send or a dropped handle both end the wait.
        let _ = stop.await;
        let _ = shutdown_tx.send(true);
        let _ = tokio::time::timeout(GRACE, async {
            let _ = rest.await;
            let _ = grpc.await;
        })
        .await;
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    let _ = done.send(());
}
