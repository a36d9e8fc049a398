//! One connection (hyper's client connection API over a `TcpStream`, HTTP/1.1 keep-alive or
//! HTTP/2 prior knowledge) and one request/response exchange on it.

use std::future::Future;
use std::time::Instant;

use bytes::Bytes;
use citadel_itest_openai::StreamLimits;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
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

/// An open connection's request handle. Its connection future runs as its own task on the
/// thread's `LocalSet` and ends when the connection closes.
pub(crate) enum Conn {
    H1(http1::SendRequest<ReqBody>),
    H2(http2::SendRequest<ReqBody>),
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
                tokio::task::spawn_local(conn);
                Ok(Conn::H1(sender))
            }
        }
    }

    /// Wait until the connection can take a request; `false` when it has closed.
    pub(crate) async fn ready(&mut self) -> bool {
        match self {
            Conn::H1(s) => {
                if s.is_ready() {
                    return true;
                }
                s.ready().await.is_ok()
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
        matches!(self, Conn::H1(_))
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
    let result = match conn {
        Conn::H1(s) => s.send_request(req).await,
        Conn::H2(s) => s.send_request(req).await,
    };
    let response = match result {
        Ok(r) => r,
        Err(e) => {
            out.error = Some(if e.is_timeout() {
                ErrorClass::Timeout
            } else {
                ErrorClass::Protocol
            });
            out.broken = conn.lost_with_request();
            return;
        }
    };
    let status = response.status().as_u16();
    out.status = Some(status);
    let class = ErrorClass::of_status(status);
    let mut body = response.into_body();
    if let (Some(limits), None) = (stream, class) {
        let (sample, bytes) = crate::stream::read_sse(&mut body, sent, limits).await;
        out.bytes = bytes;
        if sample.end != "done" {
            out.error = Some(ErrorClass::Stream);
            // The rest of the answer may still be on its way.
            out.broken = conn.lost_with_request() && !body.is_end_stream();
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
                out.broken = conn.lost_with_request();
                return;
            }
            None => return,
        }
    }
}
