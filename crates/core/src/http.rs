//! Bounded reading of HTTP answers and positive evidence about what they hold (cargo feature
//! `http`).
//!
//! Every tester reads HTTP bodies through [`read_body`]: chunk by chunk, never more than a
//! byte cap ([`DEFAULT_MAX_BODY`] unless told otherwise) and never past a deadline. What it
//! reports names the bound that was hit: `body over 4 MiB`, `body not finished within 2s`, or
//! the transport error. [`excerpt`] quotes a body in a message without copying more than its
//! first few KiB, and [`parse_json`] turns an answer into the shape a healthy server sends,
//! naming the field that is wrong when it is not.
//!
//! ```
//! use citadel_itest_core::http::{ShapeError, parse_json, excerpt};
//!
//! #[derive(Debug, serde::Deserialize)]
//! struct Listing { result: Collections }
//! #[derive(Debug, serde::Deserialize)]
//! struct Collections { collections: Vec<Collection> }
//! #[derive(Debug, serde::Deserialize)]
//! struct Collection { name: String }
//!
//! let ok: Listing = parse_json(br#"{"result":{"collections":[{"name":"a"}]}}"#).unwrap();
//! assert_eq!(ok.result.collections[0].name, "a");
//!
//! let err = parse_json::<Listing>(br#"{"result":{"collections":[{"nam":3}]}}"#).unwrap_err();
//! assert_eq!(err.path(), Some("result.collections[0].name"));
//! assert_eq!(err.to_string(), "`result.collections[0].name` is missing");
//!
//! let err = parse_json::<Listing>(b"<html>login</html>").unwrap_err();
//! assert!(err.to_string().starts_with("not JSON"));
//! assert_eq!(excerpt(b"<html>\n  login\n</html>"), "<html> login </html>");
//! ```

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::time::{Instant, timeout_at};

use crate::config::redact_text;
use crate::{error_chain, io_error_words_in_chain};

/// The most bytes of one body [`read_body`] keeps unless told otherwise: 4 MiB.
pub const DEFAULT_MAX_BODY: usize = 4 * 1024 * 1024;

/// The most characters of an [`excerpt`], `…` included.
pub const EXCERPT_CHARS: usize = 200;

/// How many bytes at the start of a body [`excerpt`] looks at.
pub const EXCERPT_SCAN: usize = 4 * 1024;

/// The bounds of one body read: a byte cap and a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimit {
    max_bytes: usize,
    deadline: Instant,
    allowed: Duration,
}

impl BodyLimit {
    /// At most [`DEFAULT_MAX_BODY`] bytes, finished by `deadline`. Messages say the body was
    /// not finished within the time from now to `deadline` (see [`BodyLimit::allowed`]).
    pub fn until(deadline: Instant) -> Self {
        BodyLimit {
            max_bytes: DEFAULT_MAX_BODY,
            deadline,
            allowed: deadline.saturating_duration_since(Instant::now()),
        }
    }

    /// At most [`DEFAULT_MAX_BODY`] bytes, finished within `allowed` from now.
    pub fn within(allowed: Duration) -> Self {
        BodyLimit {
            max_bytes: DEFAULT_MAX_BODY,
            deadline: Instant::now() + allowed,
            allowed,
        }
    }

    /// Keep at most `max_bytes` bytes; a longer body is an error.
    pub fn max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// The time the message names when the deadline passes (`body not finished within 2s`),
    /// e.g. the configured `request_timeout` the deadline was made from.
    pub fn allowed(mut self, allowed: Duration) -> Self {
        self.allowed = allowed;
        self
    }

    /// The byte cap.
    pub fn max(&self) -> usize {
        self.max_bytes
    }

    /// When the read gives up.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// A body could not be read within its bounds; the message says which bound was hit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The body is longer than the cap (by its `Content-Length` or by what arrived).
    #[error("body over {}", fmt_size(*limit))]
    TooLarge {
        /// The cap in bytes.
        limit: usize,
    },
    /// The deadline passed (or the client's own timeout fired) before the body ended.
    #[error("body not finished within {} ({} received)", fmt_duration(*within), fmt_size(*received))]
    Unfinished {
        /// The time the body was given.
        within: Duration,
        /// Bytes received until then.
        received: usize,
    },
    /// The connection failed while the body was being read.
    #[error("body broken off after {}: {message}", fmt_size(*received))]
    Transport {
        /// What went wrong, in short words, secrets redacted.
        message: String,
        /// Bytes received until then.
        received: usize,
    },
}

impl BodyError {
    /// Whether the deadline ended the read.
    pub fn is_unfinished(&self) -> bool {
        matches!(self, BodyError::Unfinished { .. })
    }

    /// Whether the cap ended the read.
    pub fn is_too_large(&self) -> bool {
        matches!(self, BodyError::TooLarge { .. })
    }
}

/// Read `response`'s body chunk by chunk within `limit`: at most `limit.max()` bytes, finished
/// by `limit.deadline()`. Never holds more than the cap plus one chunk.
///
/// A `Content-Length` over the cap fails at once, without reading. A timeout of the HTTP
/// client itself counts as [`BodyError::Unfinished`].
pub async fn read_body(
    mut response: reqwest::Response,
    limit: &BodyLimit,
) -> Result<Vec<u8>, BodyError> {
    if let Some(len) = response.content_length() {
        if len > limit.max_bytes as u64 {
            return Err(BodyError::TooLarge {
                limit: limit.max_bytes,
            });
        }
    }
    let capacity = response
        .content_length()
        .map_or(0, |l| l as usize)
        .min(limit.max_bytes);
    let mut bytes = Vec::with_capacity(capacity);
    loop {
        let unfinished = |received| BodyError::Unfinished {
            within: limit.allowed,
            received,
        };
        let chunk = match timeout_at(limit.deadline, response.chunk()).await {
            Err(_) => return Err(unfinished(bytes.len())),
            Ok(Err(e)) if e.is_timeout() => return Err(unfinished(bytes.len())),
            Ok(Err(e)) => {
                return Err(BodyError::Transport {
                    message: transport_words(e),
                    received: bytes.len(),
                });
            }
            Ok(Ok(None)) => return Ok(bytes),
            Ok(Ok(Some(chunk))) => chunk,
        };
        if chunk.len() > limit.max_bytes - bytes.len() {
            return Err(BodyError::TooLarge {
                limit: limit.max_bytes,
            });
        }
        bytes.extend_from_slice(&chunk);
    }
}

fn transport_words(e: reqwest::Error) -> String {
    if let Some(words) = io_error_words_in_chain(&e) {
        return words.to_string();
    }
    error_chain(&e.without_url())
}

/// A piece of a body fit for a message: one line (control characters and runs of white space
/// become one space), at most [`EXCERPT_CHARS`] characters ending in `…` when cut, secrets
/// redacted; `(empty body)` for a blank one. Looks at the first [`EXCERPT_SCAN`] bytes only,
/// however long the body is.
pub fn excerpt(body: &[u8]) -> String {
    let window = &body[..body.len().min(EXCERPT_SCAN)];
    let text = String::from_utf8_lossy(window);
    let mut line = String::with_capacity(text.len());
    let mut space = false;
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() {
            space = true;
        } else {
            if space && !line.is_empty() {
                line.push(' ');
            }
            space = false;
            line.push(c);
        }
    }
    if line.is_empty() {
        return if body.len() > window.len() {
            "(blank start of a longer body)".to_string()
        } else {
            "(empty body)".to_string()
        };
    }
    // Redact the whole window before cutting, so a secret across the cut is still found.
    let redacted = redact_text(&line);
    let cut = redacted.chars().count() > EXCERPT_CHARS || body.len() > window.len();
    if !cut {
        return redacted;
    }
    let mut out: String = redacted.chars().take(EXCERPT_CHARS - 1).collect();
    out.push('…');
    out
}

/// An answer is not the shape a healthy server sends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShapeError {
    /// The body is not JSON at all.
    #[error("not JSON ({message})")]
    NotJson {
        /// serde_json's words, with the line and column.
        message: String,
    },
    /// A required field is missing.
    #[error("`{path}` is missing")]
    Missing {
        /// Where, as `a.b[0].c`.
        path: String,
    },
    /// A field holds the wrong type or value.
    #[error("`{path}`: {message}")]
    Wrong {
        /// Where, as `a.b[0].c` (`.` for the whole answer).
        path: String,
        /// What is wrong, at most [`EXCERPT_CHARS`] characters, secrets redacted.
        message: String,
    },
}

impl ShapeError {
    /// The path of the wrong field, if the body was JSON.
    pub fn path(&self) -> Option<&str> {
        match self {
            ShapeError::NotJson { .. } => None,
            ShapeError::Missing { path } | ShapeError::Wrong { path, .. } => Some(path),
        }
    }
}

/// Parse `body` into `T`, the shape a healthy answer has. On failure, name the field that is
/// missing or wrong (`result.collections[0].name`). Unknown fields are ignored unless `T`
/// denies them. The body is expected to be bounded already (see [`read_body`]).
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ShapeError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(v) => v,
        Err(e) => return Err(shape_error(e)),
    };
    if let Err(e) = de.end() {
        return Err(ShapeError::NotJson {
            message: bounded(&e.to_string()),
        });
    }
    Ok(value)
}

fn shape_error(e: serde_path_to_error::Error<serde_json::Error>) -> ShapeError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    if !inner.is_data() {
        return ShapeError::NotJson {
            message: bounded(&inner.to_string()),
        };
    }
    let text = inner.to_string();
    // serde_json appends " at line L column C": the path says where.
    let text = match text.rfind(" at line ") {
        Some(at) => &text[..at],
        None => &text[..],
    };
    if let Some(field) = text
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        let path = if path == "." {
            field.to_string()
        } else {
            format!("{path}.{field}")
        };
        return ShapeError::Missing {
            path: bounded(&path),
        };
    }
    ShapeError::Wrong {
        path: bounded(&path),
        message: bounded(text),
    }
}

/// At most [`EXCERPT_CHARS`] characters on one line, secrets redacted.
fn bounded(text: &str) -> String {
    excerpt(text.as_bytes())
}

/// `4 MiB`, `512 KiB`, `1000 bytes`.
pub fn fmt_size(bytes: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    if bytes >= MIB && bytes % MIB == 0 {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes % KIB == 0 {
        format!("{} KiB", bytes / KIB)
    } else if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else {
        format!("{bytes} bytes")
    }
}

/// A duration for a message, to the millisecond: `2s`, `1s 500ms`.
fn fmt_duration(d: Duration) -> String {
    let ms = Duration::from_millis(d.as_millis().min(u128::from(u64::MAX)) as u64);
    humantime::format_duration(ms).to_string()
}

impl fmt::Display for BodyLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "at most {} within {}",
            fmt_size(self.max_bytes),
            fmt_duration(self.allowed)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Serve one connection: read the request head, then write `head` and call `body` with the
    /// stream.
    async fn serve<F, Fut>(head: &'static str, body: F) -> String
    where
        F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                seen.extend_from_slice(&buf[..n]);
            }
            if s.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            body(s).await;
        });
        format!("http://{addr}/")
    }

    async fn get(url: &str) -> reqwest::Response {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(url)
            .send()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_small_body_is_read_whole() {
        let url = serve(
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
            |_s| async {},
        )
        .await;
        let body = read_body(get(&url).await, &BodyLimit::within(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(body, b"hello");
    }

    #[tokio::test]
    async fn an_endless_body_hits_the_cap() {
        let url = serve(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            |mut s| async move {
                let chunk = format!("{:x}\r\n{}\r\n", 8192, "x".repeat(8192));
                while s.write_all(chunk.as_bytes()).await.is_ok() {}
            },
        )
        .await;
        let started = Instant::now();
        let err = read_body(
            get(&url).await,
            &BodyLimit::within(Duration::from_secs(10)).max_bytes(64 * 1024),
        )
        .await
        .unwrap_err();
        assert!(err.is_too_large(), "{err}");
        assert_eq!(err.to_string(), "body over 64 KiB");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_declared_length_over_the_cap_fails_without_reading() {
        let url = serve(
            "HTTP/1.1 200 OK\r\ncontent-length: 52428800\r\n\r\n",
            |mut s| async move {
                let _ = s.write_all(b"x").await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            },
        )
        .await;
        let err = read_body(get(&url).await, &BodyLimit::within(Duration::from_secs(10)))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "body over 4 MiB");
    }

    #[tokio::test]
    async fn a_body_that_never_ends_hits_the_deadline() {
        let url = serve(
            "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nsome",
            |s| async move {
                tokio::time::sleep(Duration::from_secs(30)).await;
                drop(s);
            },
        )
        .await;
        let started = Instant::now();
        let err = read_body(
            get(&url).await,
            &BodyLimit::within(Duration::from_millis(300)),
        )
        .await
        .unwrap_err();
        let elapsed = started.elapsed();
        assert!(err.is_unfinished(), "{err}");
        assert_eq!(
            err.to_string(),
            "body not finished within 300ms (4 bytes received)"
        );
        assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    }

    #[tokio::test]
    async fn a_body_broken_off_names_the_transport_error() {
        let url = serve(
            "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nsome",
            |s| async move { drop(s) },
        )
        .await;
        let err = read_body(get(&url).await, &BodyLimit::within(Duration::from_secs(5)))
            .await
            .unwrap_err();
        assert!(
            matches!(err, BodyError::Transport { received: 4, .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with("body broken off after 4 bytes: ")
        );
        assert!(!err.to_string().contains("no answer"));
    }

    #[test]
    fn excerpts_are_short_single_lines_of_the_start() {
        let long = "x".repeat(10 * 1024 * 1024);
        let e = excerpt(long.as_bytes());
        assert_eq!(e.chars().count(), EXCERPT_CHARS);
        assert!(e.ends_with('…'));
        assert_eq!(excerpt(b"a\r\n\tb  c\n"), "a b c");
        assert_eq!(excerpt(b""), "(empty body)");
        assert_eq!(excerpt(b" \n "), "(empty body)");
        assert_eq!(excerpt(&[0xff, b'a']), "\u{fffd}a");
        let ws = " ".repeat(EXCERPT_SCAN + 10);
        assert_eq!(excerpt(ws.as_bytes()), "(blank start of a longer body)");
    }

    #[test]
    fn excerpts_redact_secrets_across_the_cut() {
        crate::config::register_secret("excerpt-secret-98765");
        let mut body = "y".repeat(EXCERPT_CHARS - 5);
        body.push_str("excerpt-secret-98765 and more");
        let e = excerpt(body.as_bytes());
        assert!(!e.contains("excerpt-se"), "{e}");
        assert!(e.chars().count() <= EXCERPT_CHARS);
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Answer {
        status: StatusOk,
        result: Vec<Item>,
    }

    #[derive(Debug, Deserialize)]
    enum StatusOk {
        #[serde(rename = "ok")]
        Ok,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Item {
        name: String,
    }

    #[test]
    fn shape_errors_name_the_field() {
        assert!(parse_json::<Answer>(br#"{"status":"ok","result":[{"name":"a"}]}"#).is_ok());
        let e = parse_json::<Answer>(br#"{"status":"ok","result":[{"nam":3}]}"#).unwrap_err();
        assert_eq!(e.to_string(), "`result[0].name` is missing");
        let e = parse_json::<Answer>(br#"{"status":"ok"}"#).unwrap_err();
        assert_eq!(e.to_string(), "`result` is missing");
        let e = parse_json::<Answer>(br#"{"status":"error","result":[]}"#).unwrap_err();
        assert_eq!(e.path(), Some("status"));
        assert!(e.to_string().contains("unknown variant `error`"), "{e}");
        let e = parse_json::<Answer>(br#"{"status":"ok","result":[{"name":3}]}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`result[0].name`: invalid type: integer `3`, expected a string"
        );
        let e = parse_json::<Answer>(b"<html>").unwrap_err();
        assert!(matches!(e, ShapeError::NotJson { .. }), "{e}");
        let e = parse_json::<Answer>(br#"{"status":"ok","result":[]} trailing"#).unwrap_err();
        assert!(matches!(e, ShapeError::NotJson { .. }), "{e}");
    }

    #[test]
    fn shape_errors_are_bounded_and_redacted() {
        crate::config::register_secret("shape-secret-24680");
        let big = format!(
            r#"{{"status":"ok","result":[{{"name":["shape-secret-24680{}"]}}]}}"#,
            "z".repeat(100_000)
        );
        let e = parse_json::<Answer>(big.as_bytes()).unwrap_err();
        let text = e.to_string();
        assert!(text.chars().count() < 2 * EXCERPT_CHARS, "{text}");
        assert!(!text.contains("shape-secret"), "{text}");
    }

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(fmt_size(4 * 1024 * 1024), "4 MiB");
        assert_eq!(fmt_size(64 * 1024), "64 KiB");
        assert_eq!(fmt_size(1000), "1000 bytes");
        assert_eq!(fmt_size(1536 * 1024 + 1), "1.5 MiB");
    }
}
