//! A small HTTP/1.1 server on 127.0.0.1 that answers whatever a test tells it to: wrong
//! bodies (an HTML login page where a health text belongs, a malformed listing), bodies that
//! never end, 50 MB bodies, bodies that stop half-way. It records every request it saw, so a
//! test can assert what a client sent (credentials, headers). Verdicts are tried against it.
//!
//! ```
//! use citadel_itest_testkit::lying::{LyingServer, Reply};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let server = LyingServer::try_start(|req| match req.path() {
//!     "/-/ready" => Reply::html("<html>login</html>"),
//!     _ => Reply::text(404, "not found"),
//! })
//! .await
//! .unwrap();
//! assert!(server.url().starts_with("http://127.0.0.1:"));
//! assert!(server.requests().is_empty());
//! # }
//! ```

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::{ErrorKind, TestkitError};

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The request target: path and query.
    pub target: String,
    /// Header names lowercased, values as sent.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The value of header `name` (lowercase), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
}

/// What the server answers.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Reply {
    /// A whole answer: status, content type and body.
    Full(u16, &'static str, Vec<u8>),
    /// HTTP 200, chunked, a body that never ends (64 KiB chunks as fast as they are read).
    Endless,
    /// HTTP 200 with a body of this many bytes, chunked (no `Content-Length`).
    Chunked(usize),
    /// HTTP 200 with `Content-Length` and a body of this many bytes.
    Sized(usize),
    /// HTTP 200 announcing 1 MiB, sending 16 bytes, then nothing while the connection stays open.
    Stalled,
}

impl Reply {
    /// HTTP `status` with a `text/plain` body.
    pub fn text(status: u16, body: &str) -> Reply {
        Reply::Full(
            status,
            "text/plain; charset=utf-8",
            body.as_bytes().to_vec(),
        )
    }

    /// HTTP `status` with an `application/json` body.
    pub fn json(status: u16, body: &str) -> Reply {
        Reply::Full(status, "application/json", body.as_bytes().to_vec())
    }

    /// HTTP 200 with an HTML page (a login or maintenance page in front of the service).
    pub fn html(body: &str) -> Reply {
        Reply::Full(200, "text/html; charset=utf-8", body.as_bytes().to_vec())
    }
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync + 'static;

/// The server; stops (with every connection) when dropped.
pub struct LyingServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Request>>>,
    task: JoinHandle<()>,
}

impl LyingServer {
    /// Start on a free loopback port; `handler` decides every answer. For tests: panics with
    /// the reason when no loopback port can be bound (see [`LyingServer::try_start`]).
    pub async fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Self {
        match Self::try_start(handler).await {
            Ok(server) => server,
            Err(e) => panic!("{e}"),
        }
    }

    /// Start on a free loopback port; `handler` decides every answer.
    pub async fn try_start(
        handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> Result<Self, TestkitError> {
        let io = |what: &'static str| {
            move |e| TestkitError::new("start", "lying server", ErrorKind::io(what, e))
        };
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(io("bind 127.0.0.1:0"))?;
        let addr = listener.local_addr().map_err(io("read local address"))?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let task = {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut conns = JoinSet::new();
                while let Ok((stream, _)) = listener.accept().await {
                    conns.spawn(serve(stream, handler.clone(), seen.clone()));
                }
            })
        };
        Ok(LyingServer { addr, seen, task })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every request seen so far.
    pub fn requests(&self) -> Vec<Request> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for LyingServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, handler: Arc<Handler>, seen: Arc<Mutex<Vec<Request>>>) {
    let mut buf = Vec::new();
    loop {
        let Some((request, rest)) = read_request(&mut stream, std::mem::take(&mut buf)).await
        else {
            return;
        };
        buf = rest;
        seen.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(request.clone());
        let reply = handler(&request);
        if answer(&mut stream, reply).await.is_err() {
            return;
        }
    }
}

/// Read one request head and its `Content-Length` body; returns the bytes after it.
async fn read_request(stream: &mut TcpStream, mut buf: Vec<u8>) -> Option<(Request, Vec<u8>)> {
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut rest = buf.split_off(head_end);
    while rest.len() < len {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        rest.extend_from_slice(&chunk[..n]);
    }
    let after = rest.split_off(len);
    Some((
        Request {
            method,
            target,
            headers,
        },
        after,
    ))
}

const CHUNK: usize = 64 * 1024;

async fn answer(stream: &mut TcpStream, reply: Reply) -> std::io::Result<()> {
    match reply {
        Reply::Full(status, content_type, body) => {
            let head = format!(
                "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
                reason(status),
                body.len()
            );
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(&body).await
        }
        Reply::Endless => {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n")
                .await?;
            let frame = chunk_frame(CHUNK);
            loop {
                stream.write_all(&frame).await?;
            }
        }
        Reply::Chunked(total) => {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n")
                .await?;
            let frame = chunk_frame(CHUNK);
            let mut left = total;
            while left >= CHUNK {
                stream.write_all(&frame).await?;
                left -= CHUNK;
            }
            if left > 0 {
                stream.write_all(&chunk_frame(left)).await?;
            }
            stream.write_all(b"0\r\n\r\n").await
        }
        Reply::Sized(total) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {total}\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).await?;
            let block = vec![b'x'; CHUNK];
            let mut left = total;
            while left > 0 {
                let n = left.min(CHUNK);
                stream.write_all(&block[..n]).await?;
                left -= n;
            }
            Ok(())
        }
        Reply::Stalled => {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 1048576\r\n\r\n0123456789abcdef")
                .await?;
            std::future::pending::<()>().await;
            Ok(())
        }
    }
}

fn chunk_frame(len: usize) -> Vec<u8> {
    let mut frame = format!("{len:x}\r\n").into_bytes();
    frame.extend(std::iter::repeat_n(b'x', len));
    frame.extend_from_slice(b"\r\n");
    frame
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}
