//! A TCP/HTTP/SSE fault proxy: put it between a client and its dependency, add faults at run time,
//! read what the client did from the event log.
//!
//! ```no_run
//! # async fn demo() -> Result<(), citadel_itest_faults::proxy::ProxyError> {
//! use std::time::Duration;
//! use citadel_itest_faults::proxy::{Direction, Fault, FaultSpec, Mode, Proxy, ProxyConfig};
//!
//! let proxy = Proxy::start(ProxyConfig::new("127.0.0.1:8080").mode(Mode::Http)).await?;
//! let id = proxy.add(FaultSpec::new(Fault::Latency {
//!     delay: Duration::from_millis(200),
//!     jitter: Duration::ZERO,
//!     direction: Direction::Downstream,
//! }))?;
//! // ... point the client at proxy.url() ...
//! proxy.remove(id);
//! let attempts = proxy.events().len();
//! # let _ = attempts;
//! proxy.stop().await;
//! # Ok(()) }
//! ```
//!
//! TCP faults are chosen per client connection when it is accepted (a fault added later applies
//! to later connections); HTTP faults per request. With no fault active the proxy copies bytes
//! (TCP mode) or forwards requests over one upstream connection per client connection (HTTP mode).

mod event;
mod fault;
mod http;
mod tcp;

pub mod control;

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use event::{EVENT_LOG_CAPACITY, Event, EventKind};
pub use fault::{Direction, Fault, FaultId, FaultSpec, MAX_FAULT_BODY, MAX_FAULT_DELAY, MAX_SLICE};

use event::EventLog;

/// The most faults one proxy holds at once; [`ProxyHandle::add`] refuses more.
pub const MAX_FAULTS: usize = 1024;

/// The default bound on connecting to the upstream.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Parses a humantime duration (`"200ms"`, `"5s"`), as the config and the REST API do.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("not a duration like 5s or 200ms: {e}"))
}

/// What the proxy speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Mode {
    /// Copies bytes; TCP faults only. The default.
    #[default]
    Tcp,
    /// Speaks HTTP/1.1 on both sides, enabling the HTTP and SSE faults as well.
    Http,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Tcp => "tcp",
            Mode::Http => "http",
        })
    }
}

/// Where the proxy listens and what it forwards to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// The listen address; must be loopback. Port 0 picks a free port (the default
    /// `127.0.0.1:0`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The upstream `host:port`, e.g. `"127.0.0.1:8080"` (resolved on every connect).
    pub upstream: String,
    /// TCP or HTTP; default TCP.
    #[serde(default)]
    pub mode: Mode,
    /// Bound on each upstream connect (resolution included); default 5 s.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn default_connect_timeout() -> Duration {
    DEFAULT_CONNECT_TIMEOUT
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            upstream: String::new(),
            mode: Mode::Tcp,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

impl ProxyConfig {
    /// A TCP proxy on a free loopback port forwarding to `upstream`.
    pub fn new(upstream: impl Into<String>) -> Self {
        Self {
            upstream: upstream.into(),
            ..Self::default()
        }
    }

    /// Sets the mode.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the listen address (loopback only).
    pub fn listen(mut self, listen: SocketAddr) -> Self {
        self.listen = listen;
        self
    }

    /// Sets the bound on each upstream connect.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Checks the listen address (loopback), the upstream (`host:port`) and the timeout.
    pub fn validate(&self) -> Result<(), ProxyError> {
        if !self.listen.ip().is_loopback() {
            return Err(ProxyError::NotLoopback { addr: self.listen });
        }
        let bad = |reason: &str| ProxyError::InvalidUpstream {
            upstream: self.upstream.clone(),
            reason: reason.to_owned(),
        };
        let (host, port) = self
            .upstream
            .rsplit_once(':')
            .ok_or_else(|| bad("expected host:port"))?;
        if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
            return Err(bad("expected host:port"));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(bad("port is not in 1..=65535")),
        }
        if self.connect_timeout.is_zero() || self.connect_timeout > MAX_FAULT_DELAY {
            return Err(ProxyError::InvalidConfig {
                reason: "connect_timeout must be in (0, 1h]".to_owned(),
            });
        }
        Ok(())
    }
}

/// Why the proxy could not start or take a fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The listen address is not loopback.
    #[error("listen on {addr}: only loopback addresses are allowed")]
    NotLoopback {
        /// The refused address.
        addr: SocketAddr,
    },
    /// The upstream is not `host:port`.
    #[error("use upstream {upstream:?}: {reason}")]
    InvalidUpstream {
        /// The given upstream.
        upstream: String,
        /// What is wrong.
        reason: String,
    },
    /// Another config value is out of range.
    #[error("configure proxy: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
    /// Binding the listen address failed.
    #[error("listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The fault is invalid or does not fit the proxy's mode.
    #[error("add fault: {reason}")]
    InvalidFault {
        /// What is wrong (names the field).
        reason: String,
    },
    /// No tokio runtime is running.
    #[error("start proxy: no tokio runtime is running")]
    NoRuntime,
}

/// An added fault with its own connection/request counter.
#[derive(Debug)]
pub(crate) struct ActiveFault {
    pub(crate) id: FaultId,
    pub(crate) spec: FaultSpec,
    seen: AtomicU64,
}

impl ActiveFault {
    /// Counts one connection/request and says whether it is hit.
    pub(crate) fn draw(&self) -> bool {
        let n = self.seen.fetch_add(1, Ordering::Relaxed);
        self.spec.hits(n)
    }
}

/// State shared by the proxy's tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: ProxyConfig,
    pub(crate) addr: SocketAddr,
    pub(crate) started: Instant,
    pub(crate) log: EventLog,
    faults: Mutex<Vec<Arc<ActiveFault>>>,
    next_fault: AtomicU64,
    next_conn: AtomicU64,
    pub(crate) cancel: CancellationToken,
    pub(crate) tasks: TaskTracker,
}

impl Shared {
    pub(crate) fn record(&self, conn: u64, kind: EventKind) {
        self.log.record(conn, kind);
    }

    /// The faults (TCP or HTTP ones) hit by the next connection/request, each counted once.
    pub(crate) fn draw(&self, http: bool) -> Vec<Arc<ActiveFault>> {
        let faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        faults
            .iter()
            .filter(|f| f.spec.fault.is_http() == http)
            .filter(|f| f.draw())
            .cloned()
            .collect()
    }

    /// Whether any fault of the kind is active (cheap fast-path check).
    #[allow(dead_code)]
    pub(crate) fn any(&self, http: bool) -> bool {
        let faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        faults.iter().any(|f| f.spec.fault.is_http() == http)
    }

    /// Connects to the upstream within the connect timeout.
    pub(crate) async fn connect_upstream(&self, conn: u64) -> Option<TcpStream> {
        let timeout = self.config.connect_timeout;
        let result = tokio::select! {
            r = tokio::time::timeout(timeout, TcpStream::connect(self.config.upstream.as_str())) => r,
            () = self.cancel.cancelled() => return None,
        };
        let error = match result {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                self.record(conn, EventKind::UpstreamConnected);
                return Some(stream);
            }
            Ok(Err(e)) => format!("connect to {}: {e}", self.config.upstream),
            Err(_) => format!(
                "connect to {}: no connection within {}",
                self.config.upstream,
                humantime::format_duration(timeout)
            ),
        };
        self.record(conn, EventKind::UpstreamFailed { error });
        None
    }
}

/// Starts proxies; see [`Proxy::start`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Proxy;

impl Proxy {
    /// Binds the listen address and starts accepting. Needs a tokio runtime.
    pub async fn start(config: ProxyConfig) -> Result<ProxyHandle, ProxyError> {
        config.validate()?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ProxyError::NoRuntime);
        }
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ProxyError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| ProxyError::Bind {
            addr: config.listen,
            source,
        })?;
        let started = Instant::now();
        let shared = Arc::new(Shared {
            config,
            addr,
            started,
            log: EventLog::new(started, EVENT_LOG_CAPACITY),
            faults: Mutex::new(Vec::new()),
            next_fault: AtomicU64::new(1),
            next_conn: AtomicU64::new(1),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        shared
            .tasks
            .spawn(accept_loop(Arc::clone(&shared), listener));
        Ok(ProxyHandle {
            inner: Arc::new(HandleInner { shared }),
        })
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shared.cancel.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and the like: back off a little instead of spinning.
                tracing::warn!(error = %e, "proxy accept failed");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                    () = shared.cancel.cancelled() => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        shared.record(conn, EventKind::Accepted);
        let task_shared = Arc::clone(&shared);
        match shared.config.mode {
            Mode::Tcp => shared.tasks.spawn(tcp::serve(task_shared, conn, stream)),
            Mode::Http => shared.tasks.spawn(http::serve(task_shared, conn, stream)),
        };
    }
}

#[derive(Debug)]
struct HandleInner {
    shared: Arc<Shared>,
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
        self.shared.tasks.close();
    }
}

/// A running proxy. Clones share it; it stops when the last clone is dropped or on
/// [`ProxyHandle::stop`].
#[derive(Debug, Clone)]
pub struct ProxyHandle {
    inner: Arc<HandleInner>,
}

impl ProxyHandle {
    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// The address the proxy listens on.
    pub fn addr(&self) -> SocketAddr {
        self.shared().addr
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The proxy's mode.
    pub fn mode(&self) -> Mode {
        self.shared().config.mode
    }

    /// The upstream it forwards to.
    pub fn upstream(&self) -> &str {
        &self.shared().config.upstream
    }

    /// Adds a fault; it applies to connections accepted (TCP faults) or requests received (HTTP
    /// faults) from now on. Refused when invalid, an HTTP fault on a TCP proxy, or over
    /// [`MAX_FAULTS`].
    pub fn add(&self, spec: FaultSpec) -> Result<FaultId, ProxyError> {
        spec.validate_for(self.mode())
            .map_err(|reason| ProxyError::InvalidFault { reason })?;
        let shared = self.shared();
        let id = FaultId(shared.next_fault.fetch_add(1, Ordering::Relaxed));
        tracing::debug!(%id, fault = %spec.fault.describe(), "fault added");
        let mut faults = shared.faults.lock().unwrap_or_else(|e| e.into_inner());
        if faults.len() >= MAX_FAULTS {
            return Err(ProxyError::InvalidFault {
                reason: format!("the proxy already holds {MAX_FAULTS} faults; remove some first"),
            });
        }
        faults.push(Arc::new(ActiveFault {
            id,
            spec,
            seen: AtomicU64::new(0),
        }));
        Ok(id)
    }

    /// Removes a fault; false when no fault has that id. Connections it already affects keep it.
    pub fn remove(&self, id: FaultId) -> bool {
        let mut faults = self
            .shared()
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let before = faults.len();
        faults.retain(|f| f.id != id);
        faults.len() != before
    }

    /// Removes every fault.
    pub fn clear(&self) {
        self.shared()
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The active faults, in the order added.
    pub fn faults(&self) -> Vec<(FaultId, FaultSpec)> {
        let faults = self
            .shared()
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        faults.iter().map(|f| (f.id, f.spec.clone())).collect()
    }

    /// Every event still in the log (the last [`EVENT_LOG_CAPACITY`]).
    pub fn events(&self) -> Vec<Event> {
        self.shared().log.since(Duration::ZERO)
    }

    /// The events at or after `t` since start.
    pub fn events_since(&self, t: Duration) -> Vec<Event> {
        self.shared().log.since(t)
    }

    /// When the proxy started; [`Event::at`] counts from here.
    pub fn started(&self) -> Instant {
        self.shared().started
    }

    /// Time since the proxy started: "now" on the scale of [`Event::at`].
    pub fn now(&self) -> Duration {
        self.shared().started.elapsed()
    }

    /// Stops accepting, ends every connection, and waits (up to 5 s) for its tasks to end.
    pub async fn stop(&self) {
        let shared = self.shared();
        shared.cancel.cancel();
        shared.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), shared.tasks.wait()).await;
    }

    /// Whether the proxy was stopped.
    pub fn is_stopped(&self) -> bool {
        self.shared().cancel.is_cancelled()
    }
}
