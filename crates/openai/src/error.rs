//! OpenAI error bodies as a typed error, and what can go wrong with one request.

use std::fmt;
use std::time::Duration;

use citadel_itest_core::http::{BodyError, ShapeError, excerpt};
use serde::Deserialize;

/// An error the server reported in OpenAI's format,
/// `{"error":{"message","type","param","code"}}`: either as the body of a non-2xx answer (with
/// its HTTP status) or in-band, as a `data:` event of a stream (no status).
///
/// Every text field is bounded ([`excerpt`]: one line, at most 200 characters, secrets
/// redacted), so a hostile server cannot flood a report.
///
/// ```
/// use citadel_itest_openai::ApiError;
/// let body = br#"{"error":{"message":"The model `x` does not exist.","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#;
/// let e = ApiError::from_body(Some(404), body).unwrap();
/// assert_eq!(e.code.as_deref(), Some("model_not_found"));
/// assert_eq!(
///     e.to_string(),
///     "HTTP 404 invalid_request_error (code model_not_found): The model `x` does not exist."
/// );
/// assert!(ApiError::from_body(Some(502), b"<html>bad gateway</html>").is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApiError {
    /// The HTTP status of the answer; `None` for an in-band stream error.
    pub status: Option<u16>,
    /// `error.message`.
    pub message: String,
    /// `error.type` (`invalid_request_error`, `server_error`, ...), when given.
    pub kind: Option<String>,
    /// `error.param`, when given.
    pub param: Option<String>,
    /// `error.code` (a string, or a number written as text), when given.
    pub code: Option<String>,
}

#[derive(Deserialize)]
struct Envelope {
    error: Body,
}

#[derive(Deserialize)]
struct Body {
    message: Option<serde_json::Value>,
    #[serde(rename = "type")]
    kind: Option<serde_json::Value>,
    param: Option<serde_json::Value>,
    code: Option<serde_json::Value>,
}

fn text(v: Option<serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(excerpt(s.as_bytes())),
        other => Some(excerpt(other.to_string().as_bytes())),
    }
}

impl ApiError {
    /// Parse an OpenAI error body. `None` when `body` is not JSON with an `error` object (an
    /// HTML error page, a bare string, ...). An `error` that is a plain string (as some
    /// OpenAI-compatible servers send) becomes the message.
    pub fn from_body(status: Option<u16>, body: &[u8]) -> Option<ApiError> {
        let value: serde_json::Value = serde_json::from_slice(body).ok()?;
        Self::from_value(status, value)
    }

    /// Like [`ApiError::from_body`], from already-parsed JSON.
    pub fn from_value(status: Option<u16>, value: serde_json::Value) -> Option<ApiError> {
        let serde_json::Value::Object(mut map) = value else {
            return None;
        };
        match map.remove("error")? {
            serde_json::Value::String(message) => Some(ApiError {
                status,
                message: excerpt(message.as_bytes()),
                kind: None,
                param: None,
                code: None,
            }),
            inner @ serde_json::Value::Object(_) => {
                let Envelope { error } =
                    serde_json::from_value(serde_json::json!({ "error": inner })).ok()?;
                Some(ApiError {
                    status,
                    message: text(error.message).unwrap_or_else(|| "(no message)".to_string()),
                    kind: text(error.kind),
                    param: text(error.param),
                    code: text(error.code),
                })
            }
            _ => None,
        }
    }
}

impl ApiError {
    /// The error without its status: `server_error (code x): message`, or just the message
    /// when there is neither type nor code.
    pub fn detail(&self) -> String {
        let mut out = String::new();
        if let Some(kind) = &self.kind {
            out.push_str(kind);
        }
        let extra = match (&self.code, &self.param) {
            (Some(code), Some(param)) => format!("(code {code}, param {param})"),
            (Some(code), None) => format!("(code {code})"),
            (None, Some(param)) => format!("(param {param})"),
            (None, None) => String::new(),
        };
        if !extra.is_empty() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&extra);
        }
        if out.is_empty() {
            return self.message.clone();
        }
        format!("{out}: {}", self.message)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let detail = self.detail();
        let sep = if self.kind.is_some() || self.code.is_some() || self.param.is_some() {
            " "
        } else {
            ": "
        };
        match self.status {
            Some(s) => write!(f, "HTTP {s}{sep}{detail}"),
            None => write!(f, "in-band error{sep}{detail}"),
        }
    }
}

impl std::error::Error for ApiError {}

/// One request failed before it gave a usable answer. Messages are lowercase fragments that
/// read after "failed to" (`GET /v1/models: HTTP 401 ...`) and never hold the API key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The URL or a header could not be formed.
    #[error("bad request setup: {0}")]
    Setup(String),
    /// No answer: connection refused, reset, TLS failure, or no response head within the
    /// client's timeout.
    #[error("{what}: {message}")]
    Transport {
        /// `POST /v1/chat/completions`.
        what: String,
        /// What went wrong, in short words, secrets redacted.
        message: String,
    },
    /// No response head within the time allowed.
    #[error("{what}: no answer within {}", humantime_ms(*within))]
    Timeout {
        /// `POST /v1/chat/completions`.
        what: String,
        /// The time allowed.
        within: Duration,
    },
    /// The body could not be read within its bounds.
    #[error("{what}: HTTP {status}: {error}")]
    Body {
        /// `POST /v1/chat/completions`.
        what: String,
        /// The status of the answer.
        status: u16,
        /// Which bound was hit.
        #[source]
        error: BodyError,
    },
    /// A non-2xx answer with an OpenAI error body.
    #[error("{what}: {error}")]
    Api {
        /// `POST /v1/chat/completions`.
        what: String,
        /// The parsed error, with the status.
        error: Box<ApiError>,
    },
    /// A non-2xx answer whose body is not an OpenAI error (an HTML page, empty, ...).
    #[error("{what}: HTTP {status} without an OpenAI error body ({content_type}): {excerpt}")]
    Status {
        /// `POST /v1/chat/completions`.
        what: String,
        /// The status.
        status: u16,
        /// The `content-type` header, or `no content-type`.
        content_type: String,
        /// The start of the body, one line.
        excerpt: String,
    },
    /// A 2xx answer that is not the shape an OpenAI server sends.
    #[error("{what}: HTTP {status} answer is not {expected}: {error}; body: {excerpt}")]
    Shape {
        /// `POST /v1/chat/completions`.
        what: String,
        /// The status.
        status: u16,
        /// The expected object, e.g. `a chat completion`.
        expected: &'static str,
        /// The field that is missing or wrong.
        error: ShapeError,
        /// The start of the body, one line.
        excerpt: String,
    },
    /// A stream was asked for but the 2xx answer is not `text/event-stream`.
    #[error("{what}: HTTP {status} answer is not an event stream ({content_type}): {excerpt}")]
    NotEventStream {
        /// `POST /v1/chat/completions`.
        what: String,
        /// The status.
        status: u16,
        /// The `content-type` header, or `no content-type`.
        content_type: String,
        /// The start of the body, one line.
        excerpt: String,
    },
}

impl RequestError {
    /// The OpenAI error the server answered with, if that is what this is.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            RequestError::Api { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The HTTP status of the answer, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            RequestError::Api { error, .. } => error.status,
            RequestError::Body { status, .. }
            | RequestError::Status { status, .. }
            | RequestError::Shape { status, .. }
            | RequestError::NotEventStream { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// `1s 500ms`, to the millisecond.
pub(crate) fn humantime_ms(d: Duration) -> String {
    let ms = d.as_millis().min(u128::from(u64::MAX)) as u64;
    if ms == 0 && !d.is_zero() {
        return format!("{}us", d.as_micros());
    }
    let ms = Duration::from_millis(ms);
    let mut out = String::new();
    let secs = ms.as_secs();
    let (h, m, s, milli) = (secs / 3600, (secs / 60) % 60, secs % 60, ms.subsec_millis());
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s"), (u64::from(milli), "ms")] {
        if n > 0 {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&format!("{n}{unit}"));
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(humantime_ms(Duration::from_millis(1500)), "1s 500ms");
        assert_eq!(humantime_ms(Duration::from_secs(2)), "2s");
        assert_eq!(humantime_ms(Duration::ZERO), "0s");
        assert_eq!(humantime_ms(Duration::from_micros(5)), "5us");
        assert_eq!(humantime_ms(Duration::from_secs(3661)), "1h 1m 1s");
    }

    #[test]
    fn error_bodies_parse_leniently() {
        let e = ApiError::from_body(Some(500), br#"{"error":"boom"}"#).unwrap();
        assert_eq!(e.to_string(), "HTTP 500: boom");
        let e = ApiError::from_body(None, br#"{"error":{"message":"x","code":400}}"#).unwrap();
        assert_eq!(e.code.as_deref(), Some("400"));
        assert_eq!(e.to_string(), "in-band error (code 400): x");
        assert!(ApiError::from_body(None, br#"{"error":3}"#).is_none());
        assert!(ApiError::from_body(None, br#"[1]"#).is_none());
        assert!(ApiError::from_body(None, b"").is_none());
        let e = ApiError::from_body(Some(400), br#"{"error":{}}"#).unwrap();
        assert_eq!(e.message, "(no message)");
    }
}
