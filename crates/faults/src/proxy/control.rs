//! The proxy's REST control API, on loopback.
//!
//! | request | answer |
//! |---|---|
//! | `GET /faults` | `200 [{"id": 1, "fault": {...}, "toxicity": 1.0, "seed": 0}]` |
//! | `POST /faults` with a [`FaultSpec`] as JSON | `201 {"id": 1}`; `400 {"error": ...}` when invalid |
//! | `DELETE /faults/{id}` | `200 {"removed": 1}`; `404` when no such fault |
//! | `DELETE /faults` | `200 {"removed": N}` |
//! | `GET /events?since_ms=N` | `200 [Event, ...]` at or after N ms since the proxy started |
//! | `GET /health` | `200 {"status": "ok", "proxy": "127.0.0.1:P", "upstream", "mode", "now", "now_ms", "faults"}` (`now`: the proxy's clock, the scale of [`super::Event::at`]) |
//!
//! Request bodies are limited to 64 KiB; errors are JSON `{"error": "..."}`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{FaultId, FaultSpec, ProxyError, ProxyHandle};

/// The largest request body the control API reads.
pub const MAX_CONTROL_BODY: usize = 64 * 1024;
const BODY_WAIT: Duration = Duration::from_secs(10);

/// Serves the control API for `proxy` on `listen` (loopback only; port 0 picks a free one).
pub async fn serve(proxy: ProxyHandle, listen: SocketAddr) -> Result<ControlServer, ProxyError> {
    if !listen.ip().is_loopback() {
        return Err(ProxyError::NotLoopback { addr: listen });
    }
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| ProxyError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ProxyError::Bind {
        addr: listen,
        source,
    })?;
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    tasks.spawn(accept_loop(listener, proxy, cancel.clone(), tasks.clone()));
    Ok(ControlServer {
        inner: Arc::new(ControlInner {
            addr,
            cancel,
            tasks,
        }),
    })
}

#[derive(Debug)]
struct ControlInner {
    addr: SocketAddr,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl Drop for ControlInner {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.tasks.close();
    }
}

/// A running control API; stops on drop of the last clone or [`ControlServer::stop`]. It keeps
/// its proxy running while it runs.
#[derive(Debug, Clone)]
pub struct ControlServer {
    inner: Arc<ControlInner>,
}

impl ControlServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// Stops serving and waits (up to 5 s) for its tasks.
    pub async fn stop(&self) {
        self.inner.cancel.cancel();
        self.inner.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.inner.tasks.wait()).await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    proxy: ProxyHandle,
    cancel: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = cancel.cancelled() => break,
        };
        let Ok((stream, _)) = accepted else {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                () = cancel.cancelled() => break,
            }
        };
        let proxy = proxy.clone();
        let cancel = cancel.clone();
        tasks.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(route(&proxy, req).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30));
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                () = cancel.cancelled() => {}
            }
        });
    }
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value)
        .unwrap_or_else(|e| format!("{{\"error\":\"serialize answer: {e}\"}}").into_bytes());
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": message.into() }))
}

#[derive(Serialize)]
struct Listed {
    id: FaultId,
    #[serde(flatten)]
    spec: FaultSpec,
}

async fn route(proxy: &ProxyHandle, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let method = req.method().clone();
    match (method.clone(), path.as_str()) {
        (Method::GET, "/health" | "") => json(
            StatusCode::OK,
            &serde_json::json!({
                "status": "ok",
                "proxy": proxy.addr().to_string(),
                "upstream": proxy.upstream(),
                "mode": proxy.mode(),
                "now": humantime::format_duration(proxy.now()).to_string(),
                "now_ms": u64::try_from(proxy.now().as_millis()).unwrap_or(u64::MAX),
                "faults": proxy.faults().len(),
            }),
        ),
        (Method::GET, "/faults") => {
            let list: Vec<Listed> = proxy
                .faults()
                .into_iter()
                .map(|(id, spec)| Listed { id, spec })
                .collect();
            json(StatusCode::OK, &list)
        }
        (Method::POST, "/faults") => {
            let body = match read_body(req.into_body()).await {
                Ok(b) => b,
                Err(message) => return error(StatusCode::BAD_REQUEST, message),
            };
            let spec: FaultSpec = match serde_json::from_slice(&body) {
                Ok(s) => s,
                Err(e) => {
                    return error(StatusCode::BAD_REQUEST, format!("fault spec: {e}"));
                }
            };
            match proxy.add(spec) {
                Ok(id) => json(StatusCode::CREATED, &serde_json::json!({ "id": id })),
                Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
            }
        }
        (Method::DELETE, "/faults") => {
            let n = proxy.faults().len();
            proxy.clear();
            json(StatusCode::OK, &serde_json::json!({ "removed": n }))
        }
        (Method::DELETE, p) if p.starts_with("/faults/") => {
            let raw = &p["/faults/".len()..];
            match raw.parse::<u64>() {
                Ok(id) if proxy.remove(FaultId(id)) => {
                    json(StatusCode::OK, &serde_json::json!({ "removed": id }))
                }
                Ok(id) => error(StatusCode::NOT_FOUND, format!("no fault with id {id}")),
                Err(_) => error(
                    StatusCode::BAD_REQUEST,
                    format!("fault id {raw:?} is not a number"),
                ),
            }
        }
        (Method::GET, "/events") => {
            let mut since = Duration::ZERO;
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                match key {
                    "since_ms" => match value.parse::<u64>() {
                        Ok(ms) => since = Duration::from_millis(ms),
                        Err(_) => {
                            return error(
                                StatusCode::BAD_REQUEST,
                                format!("since_ms {value:?} is not a whole number of milliseconds"),
                            );
                        }
                    },
                    other => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            format!("unknown query parameter {other:?} (known: since_ms)"),
                        );
                    }
                }
            }
            json(StatusCode::OK, &proxy.events_since(since))
        }
        (_, "/faults" | "/events" | "/health") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} not allowed on {path}"),
        ),
        (_, p) if p.starts_with("/faults/") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} not allowed on {path}"),
        ),
        _ => error(StatusCode::NOT_FOUND, format!("no such endpoint {path}")),
    }
}

async fn read_body(body: Incoming) -> Result<Bytes, String> {
    let limited = Limited::new(body, MAX_CONTROL_BODY);
    match tokio::time::timeout(BODY_WAIT, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) => {
            if e.is::<http_body_util::LengthLimitError>() {
                Err(format!("request body over {MAX_CONTROL_BODY} bytes"))
            } else {
                Err(format!("read request body: {e}"))
            }
        }
        Err(_) => Err(format!(
            "request body not finished within {}",
            humantime::format_duration(BODY_WAIT)
        )),
    }
}
