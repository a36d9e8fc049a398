//! A webhook receiver for Alertmanager notifications: a small HTTP/1.1 server on a loopback
//! address that records every `POST` Alertmanager's `webhook_configs` send, for the alert
//! drill ([`crate::drill`]).
//!
//! It answers `200` to a notification on its path and records it with its arrival time; it
//! answers `404` to another path, `405` to another method, `400` to a body that is not an
//! Alertmanager notification and `413` to a body over [`WEBHOOK_MAX_BODY`], and records what
//! it refused ([`WebhookReceiver::rejected`]) so a drill can say why nothing usable arrived.
//! Request heads are bounded ([`MAX_HEAD`]) and idle connections closed after [`IDLE`].
//!
//! ```
//! use std::time::Duration;
//! use citadel_itest_monitoring::webhook::WebhookReceiver;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let hook = WebhookReceiver::bind("127.0.0.1:0", "/alerts").await.unwrap();
//! let body = r#"{"status":"firing","alerts":[{"status":"firing","labels":{"alertname":"X"}}]}"#;
//! let answer = reqwest::Client::new()
//!     .post(format!("http://{}/alerts", hook.addr()))
//!     .body(body)
//!     .send()
//!     .await
//!     .unwrap();
//! assert_eq!(answer.status(), 200);
//! let seen = hook.notifications();
//! assert_eq!(seen[0].status, "firing");
//! assert_eq!(seen[0].alerts[0].labels["alertname"], "X");
//! # }
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use citadel_itest_core::http::{excerpt, fmt_size, parse_json};
use citadel_itest_core::io_error_text;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, timeout};

/// The largest notification body the receiver reads: 1 MiB.
pub const WEBHOOK_MAX_BODY: usize = 1024 * 1024;
/// The largest request head (request line and headers): 16 KiB.
pub const MAX_HEAD: usize = 16 * 1024;
/// How long a connection may stay silent before the receiver closes it.
pub const IDLE: Duration = Duration::from_secs(30);
/// The most refusals remembered.
const MAX_REJECTED: usize = 100;
/// The most notifications remembered.
const MAX_NOTIFICATIONS: usize = 10_000;

/// The receiver could not listen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// `listen` is not an address such as `127.0.0.1:59095`.
    #[error("listen for the webhook on `{listen}`: not an address such as 127.0.0.1:59095")]
    Address {
        /// As configured.
        listen: String,
    },
    /// Only loopback addresses are allowed.
    #[error("listen for the webhook on {addr}: not a loopback address")]
    NotLoopback {
        /// The address.
        addr: SocketAddr,
    },
    /// Binding failed (the address is in use, ...).
    #[error("listen for the webhook on {addr}: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why: `address in use`, ...
        reason: String,
    },
}

/// One notification Alertmanager delivered.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Notification {
    /// When its body had arrived.
    pub at: Instant,
    /// The group's status: `firing` or `resolved`.
    pub status: String,
    /// The receiver name Alertmanager sent, if any.
    pub receiver: Option<String>,
    /// The alerts it carries.
    pub alerts: Vec<NotifiedAlert>,
}

/// One alert of a [`Notification`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NotifiedAlert {
    /// `firing` or `resolved` (the group's status when the alert has none).
    pub status: String,
    /// Its labels, `alertname` among them.
    pub labels: BTreeMap<String, String>,
}

impl Notification {
    /// The alerts named `alertname` whose status is `status`.
    pub fn alerts_named<'a>(
        &'a self,
        alertname: &'a str,
        status: &'a str,
    ) -> impl Iterator<Item = &'a NotifiedAlert> + 'a {
        self.alerts.iter().filter(move |a| {
            a.status == status && a.labels.get("alertname").map(String::as_str) == Some(alertname)
        })
    }
}

#[derive(Default)]
struct State {
    notifications: Mutex<Vec<Notification>>,
    rejected: Mutex<Vec<String>>,
    changed: Notify,
}

impl State {
    fn push(&self, n: Notification) {
        let mut all = self.notifications.lock().unwrap_or_else(|p| p.into_inner());
        if all.len() < MAX_NOTIFICATIONS {
            all.push(n);
        }
        drop(all);
        self.changed.notify_waiters();
    }

    fn reject(&self, what: String) {
        let mut all = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
        if all.len() < MAX_REJECTED {
            all.push(what);
        }
        drop(all);
        self.changed.notify_waiters();
    }
}

/// A listening webhook receiver; stops (with every connection) when dropped.
pub struct WebhookReceiver {
    addr: SocketAddr,
    path: String,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for WebhookReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookReceiver")
            .field("addr", &self.addr)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl WebhookReceiver {
    /// Listen on `listen` (a loopback `host:port`; port 0 picks a free one) for notifications
    /// posted to `path`.
    pub async fn bind(listen: &str, path: &str) -> Result<Self, WebhookError> {
        let addr: SocketAddr = listen.parse().map_err(|_| WebhookError::Address {
            listen: listen.to_string(),
        })?;
        if !addr.ip().is_loopback() {
            return Err(WebhookError::NotLoopback { addr });
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| WebhookError::Bind {
                addr,
                reason: bind_words(&e),
            })?;
        let addr = listener.local_addr().map_err(|e| WebhookError::Bind {
            addr,
            reason: io_error_text(&e),
        })?;
        let state = Arc::new(State::default());
        let path = path.to_string();
        let task = {
            let state = state.clone();
            let path = path.clone();
            tokio::spawn(async move {
                let mut conns = JoinSet::new();
                loop {
                    tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok((stream, _)) => {
                                conns.spawn(serve(stream, state.clone(), path.clone()));
                            }
                            // Out of file descriptors and the like: wait, then go on.
                            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                        },
                        Some(_) = conns.join_next(), if !conns.is_empty() => {}
                    }
                }
            })
        };
        Ok(WebhookReceiver {
            addr,
            path,
            state,
            task,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The path notifications are expected on.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Every notification received so far, in arrival order.
    pub fn notifications(&self) -> Vec<Notification> {
        self.state
            .notifications
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// What it refused so far: `POST /other: not the webhook path /alerts`, ...
    pub fn rejected(&self) -> Vec<String> {
        self.state
            .rejected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The first notification (received so far or until `until`) that `wanted` accepts.
    pub async fn wait_for(
        &self,
        until: Instant,
        wanted: impl Fn(&Notification) -> bool,
    ) -> Option<Notification> {
        loop {
            let changed = self.state.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(n) = self.notifications().into_iter().find(|n| wanted(n)) {
                return Some(n);
            }
            if Instant::now() >= until {
                return None;
            }
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(until) => {}
            }
        }
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        // Dropping the task's state closes the listener and every connection.
        self.task.abort();
    }
}

fn bind_words(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => "address in use".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        std::io::ErrorKind::AddrNotAvailable => "address not available".to_string(),
        _ => io_error_text(e),
    }
}

/// An Alertmanager webhook body (version 4): the fields the drill reads.
#[derive(Deserialize)]
struct Wire {
    status: String,
    #[serde(default)]
    receiver: Option<String>,
    alerts: Vec<WireAlert>,
}

#[derive(Deserialize)]
struct WireAlert {
    #[serde(default)]
    status: Option<String>,
    labels: BTreeMap<String, String>,
}

/// Why a connection ends.
enum End {
    /// The peer closed, went idle, or the connection broke.
    Closed,
    /// Answer this status, then close.
    Refuse(u16, &'static str),
}

/// Serve one connection: requests one after another (keep-alive) until it closes.
async fn serve(mut stream: TcpStream, state: Arc<State>, path: String) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        match one_request(&mut stream, &mut buf, &state, &path).await {
            Ok(true) => continue,
            Ok(false) | Err(End::Closed) => return,
            Err(End::Refuse(status, reason)) => {
                let _ = respond(&mut stream, status, reason, true).await;
                return;
            }
        }
    }
}

/// Read more bytes into `buf`; `Err(Closed)` on EOF, error or idleness.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), End> {
    let mut chunk = [0u8; 8192];
    match timeout(IDLE, stream.read(&mut chunk)).await {
        Ok(Ok(0)) | Ok(Err(_)) | Err(_) => Err(End::Closed),
        Ok(Ok(n)) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
    }
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// Handle one request; `Ok(true)` to keep the connection.
async fn one_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    state: &State,
    path: &str,
) -> Result<bool, End> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n", 0) {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            state.reject(format!("a request head over {}", fmt_size(MAX_HEAD)));
            return Err(End::Refuse(431, "Request Header Fields Too Large"));
        }
        read_more(stream, buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let version = parts.next().unwrap_or_default().to_string();
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut close = version != "HTTP/1.1";
    let mut expect_continue = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => match value.parse::<usize>() {
                Ok(n) => length = Some(n),
                Err(_) => {
                    state.reject(format!(
                        "{method} {}: content-length `{}`",
                        excerpt(target.as_bytes()),
                        excerpt(value.as_bytes())
                    ));
                    return Err(End::Refuse(400, "Bad Request"));
                }
            },
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "connection" => {
                let v = value.to_ascii_lowercase();
                if v.contains("close") {
                    close = true;
                } else if v.contains("keep-alive") {
                    close = false;
                }
            }
            "expect" => expect_continue = value.eq_ignore_ascii_case("100-continue"),
            _ => {}
        }
    }
    let shown = format!("{method} {}", excerpt(target.as_bytes()));
    if length.is_some_and(|n| n > WEBHOOK_MAX_BODY) {
        state.reject(format!(
            "{shown}: a body over {}",
            fmt_size(WEBHOOK_MAX_BODY)
        ));
        return Err(End::Refuse(413, "Payload Too Large"));
    }
    if expect_continue {
        stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .map_err(|_| End::Closed)?;
    }
    // The body: chunked or by length, never more than the cap.
    let (body, consumed) = if chunked {
        read_chunked(stream, buf, head_end, &shown, state).await?
    } else {
        let n = length.unwrap_or(0);
        while buf.len() < head_end + n {
            read_more(stream, buf).await?;
        }
        (buf[head_end..head_end + n].to_vec(), head_end + n)
    };
    buf.drain(..consumed);
    let at = Instant::now();

    let request_path = target.split('?').next().unwrap_or_default();
    let (status, reason) = if method != "POST" {
        state.reject(format!("{shown}: not a POST"));
        (405, "Method Not Allowed")
    } else if request_path != path {
        state.reject(format!("{shown}: not the webhook path {path}"));
        (404, "Not Found")
    } else {
        match parse_json::<Wire>(&body) {
            Ok(wire) => {
                let group = wire.status;
                state.push(Notification {
                    at,
                    alerts: wire
                        .alerts
                        .into_iter()
                        .map(|a| NotifiedAlert {
                            status: a.status.unwrap_or_else(|| group.clone()),
                            labels: a.labels,
                        })
                        .collect(),
                    status: group,
                    receiver: wire.receiver,
                });
                (200, "OK")
            }
            Err(e) => {
                state.reject(format!(
                    "{shown}: not an Alertmanager notification: {e}: {}",
                    excerpt(&body)
                ));
                (400, "Bad Request")
            }
        }
    };
    respond(stream, status, reason, close)
        .await
        .map_err(|_| End::Closed)?;
    Ok(!close)
}

/// Decode a chunked body starting at `from`; returns the body and the bytes consumed.
async fn read_chunked(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    from: usize,
    shown: &str,
    state: &State,
) -> Result<(Vec<u8>, usize), End> {
    let mut body = Vec::new();
    let mut at = from;
    loop {
        let line_end = loop {
            if let Some(i) = find(buf, b"\r\n", at) {
                break i;
            }
            if buf.len() - at > 1024 {
                state.reject(format!("{shown}: a malformed chunk size line"));
                return Err(End::Refuse(400, "Bad Request"));
            }
            read_more(stream, buf).await?;
        };
        let line = String::from_utf8_lossy(&buf[at..line_end]).into_owned();
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            state.reject(format!("{shown}: a malformed chunk size line"));
            return Err(End::Refuse(400, "Bad Request"));
        };
        at = line_end + 2;
        if size == 0 {
            // Trailers until an empty line.
            loop {
                let end = loop {
                    if let Some(i) = find(buf, b"\r\n", at) {
                        break i;
                    }
                    if buf.len() - at > MAX_HEAD {
                        return Err(End::Refuse(400, "Bad Request"));
                    }
                    read_more(stream, buf).await?;
                };
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Ok((body, at));
                }
            }
        }
        if size > WEBHOOK_MAX_BODY - body.len() {
            state.reject(format!(
                "{shown}: a body over {}",
                fmt_size(WEBHOOK_MAX_BODY)
            ));
            return Err(End::Refuse(413, "Payload Too Large"));
        }
        while buf.len() < at + size + 2 {
            read_more(stream, buf).await?;
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size + 2;
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    reason: &str,
    close: bool,
) -> std::io::Result<()> {
    let connection = if close { "close" } else { "keep-alive" };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\nconnection: {connection}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn raw(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        let _ = timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    const BODY: &str = r#"{"receiver":"webhook","status":"resolved","alerts":[{"status":"resolved","labels":{"alertname":"A"}},{"labels":{"alertname":"B"}}]}"#;

    #[tokio::test]
    async fn records_notifications_by_length_and_chunked_on_one_connection() {
        let hook = WebhookReceiver::bind("127.0.0.1:0", "/hook").await.unwrap();
        let chunked = format!(
            "POST /hook HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n",
            10,
            &BODY[..10],
            BODY.len() - 10,
            &BODY[10..]
        );
        let by_length = format!(
            "POST /hook?x=1 HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BODY}",
            BODY.len()
        );
        let answer = raw(hook.addr(), format!("{chunked}{by_length}").as_bytes()).await;
        assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");
        let seen = hook.notifications();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].status, "resolved");
        assert_eq!(seen[0].receiver.as_deref(), Some("webhook"));
        assert_eq!(seen[0].alerts_named("A", "resolved").count(), 1);
        // An alert without its own status takes the group's.
        assert_eq!(seen[1].alerts_named("B", "resolved").count(), 1);
        assert!(hook.rejected().is_empty());
    }

    #[tokio::test]
    async fn refuses_and_records_what_is_not_a_notification() {
        let hook = WebhookReceiver::bind("127.0.0.1:0", "/").await.unwrap();
        let answer = raw(
            hook.addr(),
            b"POST /other HTTP/1.1\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        let answer = raw(
            hook.addr(),
            b"POST / HTTP/1.1\r\ncontent-length: 6\r\nconnection: close\r\n\r\n<html>",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        let answer = raw(
            hook.addr(),
            b"POST / HTTP/1.1\r\ncontent-length: 99999999\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        let answer = raw(
            hook.addr(),
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffff\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        let answer = raw(hook.addr(), &[b'a'; MAX_HEAD + 10]).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
        let rejected = hook.rejected();
        assert_eq!(rejected[0], "POST /other: not the webhook path /");
        assert!(
            rejected[1].starts_with("POST /: not an Alertmanager notification: not JSON"),
            "{}",
            rejected[1]
        );
        assert_eq!(rejected[2], "POST /: a body over 1 MiB");
        assert!(hook.notifications().is_empty());
    }

    #[tokio::test]
    async fn an_address_in_use_is_named() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let err = WebhookReceiver::bind(&addr.to_string(), "/")
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("listen for the webhook on {addr}: address in use")
        );
        let err = WebhookReceiver::bind("localhost:1", "/").await.unwrap_err();
        assert!(err.to_string().contains("not an address"), "{err}");
    }

    #[tokio::test]
    async fn wait_for_wakes_on_arrival_and_gives_up_at_the_bound() {
        let hook = WebhookReceiver::bind("127.0.0.1:0", "/").await.unwrap();
        let started = Instant::now();
        let none = hook
            .wait_for(started + Duration::from_millis(200), |_| true)
            .await;
        assert!(none.is_none());
        assert!(started.elapsed() >= Duration::from_millis(200));
        let addr = hook.addr();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let req = format!(
                "POST / HTTP/1.1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BODY}",
                BODY.len()
            );
            raw(addr, req.as_bytes()).await;
        });
        let started = Instant::now();
        let got = hook
            .wait_for(started + Duration::from_secs(5), |n| n.status == "resolved")
            .await;
        assert!(got.is_some());
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
