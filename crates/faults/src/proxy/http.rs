//! HTTP mode: a hyper HTTP/1.1 server per client connection forwarding over one upstream hyper
//! client connection, with the HTTP and SSE faults drawn per request. TCP faults drawn for the
//! connection act on the client's bytes (the server then runs behind an in-memory pipe).

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::tcp::{self, Plan};
use super::{ActiveFault, EventKind, Fault, Shared};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
type ProxyBody = BoxBody<Bytes, BoxError>;

/// How long the server waits for a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The in-memory pipe between TCP faults and the HTTP server.
const DUPLEX_BUF: usize = 64 * 1024;
/// An SSE event longer than this passes through unparsed.
const MAX_SSE_EVENT: usize = 1024 * 1024;
/// A request body drained before an injected status, at most.
const MAX_DRAIN: usize = 1024 * 1024;
const DRAIN_WAIT: Duration = Duration::from_secs(1);

/// Serves one HTTP-mode connection.
pub(crate) async fn serve(shared: Arc<Shared>, conn: u64, client: TcpStream) {
    let plan = Plan::draw(&shared, conn);
    let (up, down) = if plan.reset {
        tcp::reset(&shared, client).await
    } else if plan.blackhole {
        (tcp::blackhole(&shared, client).await, 0)
    } else if plan.is_plain() {
        let read = Arc::new(AtomicU64::new(0));
        let written = Arc::new(AtomicU64::new(0));
        let io = Counting {
            inner: client,
            read: Arc::clone(&read),
            written: Arc::clone(&written),
        };
        serve_http(&shared, conn, io).await;
        (
            read.load(Ordering::Relaxed),
            written.load(Ordering::Relaxed),
        )
    } else {
        let (outer, inner) = tokio::io::duplex(DUPLEX_BUF);
        let ((), bytes) = tokio::join!(
            serve_http(&shared, conn, inner),
            tcp::pipe(&shared, client, outer, &plan)
        );
        bytes
    };
    shared.record(
        conn,
        EventKind::Closed {
            up_bytes: up,
            down_bytes: down,
        },
    );
}

async fn serve_http<S>(shared: &Arc<Shared>, conn: u64, io: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let upstream: Arc<tokio::sync::Mutex<Option<SendRequest<ProxyBody>>>> =
        Arc::new(tokio::sync::Mutex::new(None));
    let svc_shared = Arc::clone(shared);
    let service = hyper::service::service_fn(move |req| {
        let shared = Arc::clone(&svc_shared);
        let upstream = Arc::clone(&upstream);
        async move { Ok::<_, Infallible>(handle(shared, conn, upstream, req).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::select! {
        r = connection => {
            if let Err(e) = r {
                tracing::debug!(conn, error = %e, "proxy http connection ended");
            }
        }
        () = shared.cancel.cancelled() => {}
    }
}

async fn handle(
    shared: Arc<Shared>,
    conn: u64,
    upstream: Arc<tokio::sync::Mutex<Option<SendRequest<ProxyBody>>>>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    // The path without the query: a query may carry a key, and the log is output.
    let path = req.uri().path().to_owned();
    shared.record(
        conn,
        EventKind::Request {
            method: req.method().to_string(),
            path,
        },
    );
    let faults = shared.draw(true);
    for f in &faults {
        shared.record(
            conn,
            EventKind::Fault {
                id: f.id,
                what: f.spec.fault.describe(),
            },
        );
    }
    let response = answer(&shared, conn, &upstream, &faults, req).await;
    shared.record(
        conn,
        EventKind::Response {
            status: response.status().as_u16(),
        },
    );
    response
}

async fn answer(
    shared: &Arc<Shared>,
    conn: u64,
    upstream: &tokio::sync::Mutex<Option<SendRequest<ProxyBody>>>,
    faults: &[Arc<ActiveFault>],
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let delay = faults
        .iter()
        .filter_map(|f| match f.spec.fault {
            Fault::HttpDelay { before_first_byte } => Some(before_first_byte),
            _ => None,
        })
        .fold(Duration::ZERO, Duration::saturating_add);
    if !delay.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shared.cancel.cancelled() => {}
        }
    }
    if let Some((status, retry_after, body)) = faults.iter().find_map(|f| match &f.spec.fault {
        Fault::HttpStatus {
            status,
            retry_after,
            body,
        } => Some((*status, *retry_after, body.clone())),
        _ => None,
    }) {
        drain(req.into_body()).await;
        return injected_status(status, retry_after, body);
    }
    let sse = SsePlan::from_faults(faults);

    let mut guard = upstream.lock().await;
    if let Some(s) = guard.as_mut() {
        let ready = tokio::time::timeout(shared.config.connect_timeout, s.ready()).await;
        if !matches!(ready, Ok(Ok(()))) {
            *guard = None;
        }
    }
    if guard.is_none() {
        *guard = connect(shared, conn).await;
    }
    let Some(sender) = guard.as_mut() else {
        return error_response(
            StatusCode::BAD_GATEWAY,
            &format!("proxy could not connect to {}", shared.config.upstream),
            "server_error",
            "upstream_unavailable",
        );
    };

    let (parts, body) = req.into_parts();
    let mut up_req = Request::builder()
        .method(parts.method)
        .uri(
            parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned(),
        )
        .version(http::Version::HTTP_11)
        .body(body.map_err(BoxError::from).boxed())
        .unwrap_or_else(|_| Request::new(empty()));
    *up_req.headers_mut() = forwardable(parts.headers);
    let sent = tokio::select! {
        r = sender.send_request(up_req) => r,
        () = shared.cancel.cancelled() => {
            return error_response(StatusCode::SERVICE_UNAVAILABLE, "proxy stopping", "server_error", "proxy_stopping");
        }
    };
    let response = match sent {
        Ok(r) => r,
        Err(e) => {
            *guard = None;
            return error_response(
                StatusCode::BAD_GATEWAY,
                &format!("proxy upstream request failed: {e}"),
                "server_error",
                "upstream_failed",
            );
        }
    };
    drop(guard);
    let (mut parts, body) = response.into_parts();
    parts.headers = forwardable(parts.headers);
    let is_sse = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
    let body = if is_sse && sse.is_active() {
        parts.headers.remove(header::CONTENT_LENGTH);
        sse_body(shared, body, sse)
    } else {
        body.map_err(BoxError::from).boxed()
    };
    Response::from_parts(parts, body)
}

async fn connect(shared: &Arc<Shared>, conn: u64) -> Option<SendRequest<ProxyBody>> {
    let stream = shared.connect_upstream(conn).await?;
    let handshake = tokio::time::timeout(
        shared.config.connect_timeout,
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await;
    let (sender, connection) = match handshake {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => {
            shared.record(
                conn,
                EventKind::UpstreamFailed {
                    error: format!("http handshake with {}: {e}", shared.config.upstream),
                },
            );
            return None;
        }
        Err(_) => {
            shared.record(
                conn,
                EventKind::UpstreamFailed {
                    error: format!("http handshake with {}: timed out", shared.config.upstream),
                },
            );
            return None;
        }
    };
    let cancel = shared.cancel.clone();
    shared.tasks.spawn(async move {
        tokio::select! {
            _ = connection => {}
            () = cancel.cancelled() => {}
        }
    });
    Some(sender)
}

/// Headers minus hop-by-hop ones (and those named in `Connection`).
fn forwardable(mut headers: HeaderMap) -> HeaderMap {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    headers
}

/// Reads and discards a request body, bounded in size and time.
async fn drain(mut body: Incoming) {
    let _ = tokio::time::timeout(DRAIN_WAIT, async {
        let mut total = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                total = total.saturating_add(data.len());
                if total > MAX_DRAIN {
                    break;
                }
            }
        }
    })
    .await;
}

fn empty() -> ProxyBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

fn openai_error(message: &str, kind: &str, code: &str) -> String {
    serde_json::json!({
        "error": { "message": message, "type": kind, "param": null, "code": code }
    })
    .to_string()
}

fn error_response(
    status: StatusCode,
    message: &str,
    kind: &str,
    code: &str,
) -> Response<ProxyBody> {
    let mut response = Response::new(full(openai_error(message, kind, code)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn injected_status(
    status: u16,
    retry_after: Option<Duration>,
    body: Option<String>,
) -> Response<ProxyBody> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = match body {
        Some(body) => {
            let mut r = Response::new(full(body));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            *r.status_mut() = status;
            r
        }
        None => {
            let (kind, code) = match status.as_u16() {
                429 => ("requests", "rate_limit_exceeded"),
                s if s >= 500 => ("server_error", "injected_fault"),
                _ => ("invalid_request_error", "injected_fault"),
            };
            let message = format!(
                "injected fault: {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            );
            error_response(status, message.trim_end(), kind, code)
        }
    };
    if let Some(after) = retry_after {
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    response
}

/// The SSE faults of one request.
#[derive(Debug, Default, Clone, Copy)]
struct SsePlan {
    cut_after: Option<u32>,
    error_after: Option<u32>,
    slow: Option<Duration>,
}

impl SsePlan {
    fn from_faults(faults: &[Arc<ActiveFault>]) -> Self {
        let mut plan = SsePlan::default();
        for f in faults {
            match f.spec.fault {
                Fault::SseCut { after_events } => {
                    plan.cut_after =
                        Some(plan.cut_after.map_or(after_events, |a| a.min(after_events)));
                }
                Fault::SseError { after_events } => {
                    plan.error_after = Some(
                        plan.error_after
                            .map_or(after_events, |a| a.min(after_events)),
                    );
                }
                Fault::SseSlow { delay } => {
                    plan.slow = Some(plan.slow.unwrap_or_default().saturating_add(delay));
                }
                _ => {}
            }
        }
        plan
    }

    fn is_active(&self) -> bool {
        self.cut_after.is_some() || self.error_after.is_some() || self.slow.is_some()
    }
}

/// A body fed by a channel (the SSE fault task).
struct ChannelBody {
    rx: mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx.poll_recv(cx)
    }
}

/// End of the first SSE event in `buf` (after its blank line).
fn event_end(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn sse_body(shared: &Arc<Shared>, mut upstream: Incoming, plan: SsePlan) -> ProxyBody {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(8);
    let cancel = shared.cancel.clone();
    shared.tasks.spawn(async move {
        let mut buf = BytesMut::new();
        let mut events: u32 = 0;
        loop {
            let frame = tokio::select! {
                f = upstream.frame() => f,
                () = cancel.cancelled() => return,
                () = tx.closed() => return,
            };
            let frame = match frame {
                None => {
                    if !buf.is_empty() {
                        let _ = tx.send(Ok(Frame::data(buf.split().freeze()))).await;
                    }
                    return;
                }
                Some(Err(e)) => {
                    let _ = tx.send(Err(Box::new(e) as BoxError)).await;
                    return;
                }
                Some(Ok(frame)) => frame,
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    // Trailers pass through.
                    if tx.send(Ok(frame)).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            buf.extend_from_slice(&data);
            while let Some(end) = event_end(&buf) {
                if plan.cut_after.is_some_and(|k| events >= k) {
                    let _ = tx
                        .send(Err(BoxError::from(format!(
                            "sse stream cut by fault after {events} events"
                        ))))
                        .await;
                    return;
                }
                if plan.error_after.is_some_and(|k| events >= k) {
                    let message = format!("injected fault: stream error after {events} events");
                    let event = format!(
                        "data: {}\n\n",
                        openai_error(&message, "server_error", "injected_fault")
                    );
                    let _ = tx.send(Ok(Frame::data(Bytes::from(event)))).await;
                    return;
                }
                if let Some(delay) = plan.slow {
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = cancel.cancelled() => return,
                        () = tx.closed() => return,
                    }
                }
                let event = buf.split_to(end).freeze();
                if tx.send(Ok(Frame::data(event))).await.is_err() {
                    return;
                }
                events = events.saturating_add(1);
            }
            if buf.len() > MAX_SSE_EVENT
                && tx
                    .send(Ok(Frame::data(buf.split().freeze())))
                    .await
                    .is_err()
            {
                return;
            }
        }
    });
    ChannelBody { rx }.boxed()
}

/// Counts the bytes through a stream.
struct Counting<T> {
    inner: T,
    read: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counting<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counting<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &poll {
            self.written.fetch_add(*n as u64, Ordering::Relaxed);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &poll {
            self.written.fetch_add(*n as u64, Ordering::Relaxed);
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_event_boundaries() {
        assert_eq!(event_end(b"data: a\n\ndata: b"), Some(9));
        assert_eq!(event_end(b"data: a\r\n\r\n"), Some(11));
        assert_eq!(event_end(b"data: a\n"), None);
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-foo"),
        );
        h.insert("x-foo", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let h = forwardable(h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn injected_status_has_retry_after_and_openai_body() {
        let r = injected_status(503, Some(Duration::from_millis(1500)), None);
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        let r = injected_status(429, None, Some("slow down".into()));
        assert_eq!(r.status(), 429);
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
    }
}
