//! One connection (hyper's client connection API over a `TcpStream`, HTTP/1.1 keep-alive or
//! HTTP/2 prior knowledge) and one request/response exchange on it.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Instant;

use bytes::Bytes;
use citadel_itest_openai::StreamLimits;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::plan::Plan;
use crate::config::Protocol;
use crate::sample::{ErrorClass, StreamSample};

/// The request body type: a whole body in one refcounted buffer (empty for none).
pub(crate) type ReqBody = Full<Bytes>;

/// Runs hyper's HTTP/2 background futures on the current thread's `LocalSet`.
#[derive(Clone, Copy, Debug)]
struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

/// hyper's HTTP/1.1 connection future (the dispatcher that writes requests and reads
/// answers on the socket).
type H1Driver = Pin<Box<http1::Connection<TokioIo<TcpStream>, ReqBody>>>;

/// An open connection.
///
/// HTTP/1.1: the connection future is polled inline by the task that uses the connection
/// (see [`drive`]), not spawned: one task per connection, no wake-ups between a request task
/// and a connection task.
/// HTTP/2: the connection runs as its own task on the thread's `LocalSet` (hyper spawns its
/// stream tasks there too).
pub(crate) enum Conn {
    H1 {
        sender: http1::SendRequest<ReqBody>,
        /// `None` once the connection has ended.
        driver: Option<H1Driver>,
    },
    H2(http2::SendRequest<ReqBody>),
}

/// Poll `fut` to completion while also polling the HTTP/1.1 connection `driver` (dropped
/// when it ends), so the request and its connection make progress in one task.
async fn drive<F: Future>(driver: &mut Option<H1Driver>, fut: F) -> F::Output {
    let mut fut = pin!(fut);
    poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(v);
        }
        if let Some(d) = driver.as_mut() {
            if d.as_mut().poll(cx).is_ready() {
                *driver = None;
            }
        }
        // The connection may just have delivered what `fut` waits for.
        fut.as_mut().poll(cx)
    })
    .await
}

impl Conn {
    /// Open a connection to the plan's target (TCP, `TCP_NODELAY`, then the HTTP/1.1 or
    /// HTTP/2 handshake). Any failure is [`ErrorClass::Connect`]. The caller bounds it.
    pub(crate) async fn connect(plan: &Plan) -> Result<Conn, ErrorClass> {
        let tcp = TcpStream::connect(plan.addr)
            .await
            .map_err(|_| ErrorClass::Connect)?;
        let _ = tcp.set_nodelay(true);
        let io = TokioIo::new(tcp);
        match plan.protocol {
            Protocol::Http2 => {
                let (sender, conn) = http2::Builder::new(LocalExec)
                    .handshake(io)
                    .await
                    .map_err(|_| ErrorClass::Connect)?;
                tokio::task::spawn_local(conn);
                Ok(Conn::H2(sender))
            }
            _ => {
                let (sender, conn) = http1::Builder::new()
                    .handshake(io)
                    .await
                    .map_err(|_| ErrorClass::Connect)?;
                Ok(Conn::H1 {
                    sender,
                    driver: Some(Box::pin(conn)),
                })
            }
        }
    }

    /// Whether the connection can take a request now (`Some(true)`), has closed
    /// (`Some(false)`), or has to be waited for (`None`, then use [`Conn::ready`]).
    pub(crate) async fn ready_now(&mut self) -> Option<bool> {
        match self {
            Conn::H1 { sender, driver } => {
                // One poll of the idle connection notices a close by the peer (hyper reads
                // for EOF while idle), so a connection closed between requests is reopened
                // instead of failing the next request.
                if let Some(d) = driver.as_mut() {
                    let ended = poll_fn(|cx| Poll::Ready(d.as_mut().poll(cx).is_ready())).await;
                    if ended {
                        *driver = None;
                    }
                }
                if driver.is_none() {
                    Some(false)
                } else if sender.is_ready() {
                    Some(true)
                } else {
                    None
                }
            }
            Conn::H2(s) => {
                if s.is_closed() {
                    Some(false)
                } else if s.is_ready() {
                    Some(true)
                } else {
                    None
                }
            }
        }
    }

    /// Wait until the connection can take a request; `false` when it has closed.
    pub(crate) async fn ready(&mut self) -> bool {
        match self {
            Conn::H1 { sender, driver } => {
                if driver.is_none() {
                    return false;
                }
                if sender.is_ready() {
                    return true;
                }
                drive(driver, sender.ready()).await.is_ok() && driver.is_some()
            }
            Conn::H2(s) => {
                if s.is_closed() {
                    return false;
                }
                s.ready().await.is_ok()
            }
        }
    }

    /// Whether a request cut off mid-way (timeout) leaves the connection unusable: always
    /// for HTTP/1.1 (the answer would still arrive on it), never for HTTP/2 (the stream is
    /// reset, the connection goes on).
    pub(crate) fn lost_with_request(&self) -> bool {
        matches!(self, Conn::H1 { .. })
    }
}

/// What one exchange produced; filled in as it goes, so a timeout still knows the status and
/// the bytes received so far.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) status: Option<u16>,
    pub(crate) error: Option<ErrorClass>,
    pub(crate) bytes: u64,
    pub(crate) stream: Option<StreamSample>,
    /// The connection cannot carry another request.
    pub(crate) broken: bool,
}

/// Send `req` on `conn` and read the answer to its end: the body is counted and discarded,
/// or read as an SSE stream when `stream` is given and the status is 2xx.
pub(crate) async fn exchange(
    conn: &mut Conn,
    req: Request<ReqBody>,
    stream: Option<&StreamLimits>,
    sent: Instant,
    out: &mut Outcome,
) {
    match conn {
        Conn::H1 { sender, driver } => {
            let response = sender.send_request(req);
            drive(driver, answer(response, stream, sent, out)).await;
            if driver.is_none() {
                out.broken = true;
            }
        }
        Conn::H2(s) => {
            let response = s.send_request(req);
            answer(response, stream, sent, out).await;
            out.broken = s.is_closed();
        }
    }
}

/// Wait for the answer's head and read its body to the end.
async fn answer(
    response: impl Future<Output = Result<http::Response<Incoming>, hyper::Error>>,
    stream: Option<&StreamLimits>,
    sent: Instant,
    out: &mut Outcome,
) {
    let response = match response.await {
        Ok(r) => r,
        Err(e) => {
            out.error = Some(if e.is_timeout() {
                ErrorClass::Timeout
            } else {
                ErrorClass::Protocol
            });
            out.broken = true;
            return;
        }
    };
    let status = response.status().as_u16();
    out.status = Some(status);
    let class = ErrorClass::of_status(status);
    let mut body = response.into_body();
    if let (Some(limits), None) = (stream, class) {
        // Boxed: the reader's state is large, and keeping it out of this future keeps every
        // request's futures small (they are moved on each request).
        let (sample, bytes) = Box::pin(crate::stream::read_sse(&mut body, sent, limits)).await;
        out.bytes = bytes;
        if sample.end != "done" {
            out.error = Some(ErrorClass::Stream);
            // The rest of the answer may still be on its way: the connection cannot carry
            // another request unless the body ended.
            out.broken = !body.is_end_stream();
        }
        out.stream = Some(sample);
        return;
    }
    out.error = class;
    loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    out.bytes += data.len() as u64;
                }
            }
            Some(Err(_)) => {
                out.error = Some(ErrorClass::Body);
                out.broken = true;
                return;
            }
            None => return,
        }
    }
}
