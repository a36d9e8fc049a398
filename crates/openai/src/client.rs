//! [`Client`]: a reqwest client, a base URL and an optional API key, with one bounded call per
//! OpenAI endpoint.

use std::time::Duration;

use citadel_itest_core::config::{SecretString, redact_text};
use citadel_itest_core::http::{BodyLimit, DEFAULT_MAX_BODY, excerpt, parse_json, read_body};
use citadel_itest_core::{error_chain, io_error_words_in_chain};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::error::{ApiError, RequestError};
use crate::stream::{StreamLimits, StreamReport, read_stream};
use crate::types::{
    ChatCompletion, ChatRequest, Completion, CompletionRequest, Embeddings, EmbeddingsRequest,
    Headers, ModelList,
};

/// How long one non-streaming call may take unless told otherwise: 30 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of one OpenAI-compatible server (or gateway).
///
/// The base URL is everything before the endpoint name, `/v1` included, as in OpenAI's own
/// SDKs: `http://127.0.0.1:58080/v1` gives `http://127.0.0.1:58080/v1/chat/completions`. A
/// path-routed gateway works the same way (`http://gw/model-a/v1`).
///
/// Every call is bounded: the whole exchange (head and body) must finish within
/// [`Client::timeout`], and a body is read through
/// [`read_body`](citadel_itest_core::http::read_body) with at most [`Client::max_body`] bytes.
/// Streams have their own bounds ([`StreamLimits`]).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<SecretString>,
    timeout: Duration,
    max_body: usize,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &redact_text(&self.base))
            .field("key", &self.key.as_ref().map(|_| "[redacted]"))
            .field("timeout", &self.timeout)
            .field("max_body", &self.max_body)
            .finish()
    }
}

/// A 2xx answer: status, headers, the parsed body and how long it took.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Reply<T> {
    /// The status (2xx).
    pub status: StatusCode,
    /// The response headers (`x-backend-id`, `x-request-id`, ...).
    pub headers: HeaderMap,
    /// The parsed body.
    pub body: T,
    /// From sending the request to the end of the body.
    pub elapsed: Duration,
}

impl<T> Reply<T> {
    /// A response header as text (`None` when absent or not visible ASCII).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_text(&self.headers, name)
    }
}

/// Any answer, any status, with its body read within bounds but not parsed: for requests a
/// tester builds itself (malformed JSON, oversized bodies, unknown routes).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RawReply {
    /// The status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body, at most [`Client::max_body`] bytes.
    pub body: Vec<u8>,
    /// From sending the request to the end of the body.
    pub elapsed: Duration,
}

impl RawReply {
    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_text(&self.headers, name)
    }

    /// The `content-type`, or `no content-type`.
    pub fn content_type(&self) -> String {
        content_type(&self.headers)
    }

    /// The body as an OpenAI error, if it is one.
    pub fn api_error(&self) -> Option<ApiError> {
        ApiError::from_body(Some(self.status.as_u16()), &self.body)
    }

    /// The start of the body, one line, for messages.
    pub fn excerpt(&self) -> String {
        excerpt(&self.body)
    }
}

pub(crate) fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub(crate) fn content_type(headers: &HeaderMap) -> String {
    match headers.get(reqwest::header::CONTENT_TYPE) {
        None => "no content-type".to_string(),
        Some(v) => excerpt(v.as_bytes()),
    }
}

impl Client {
    /// A client of the server at `base_url` (see [`Client`]) with a reqwest client of its
    /// own: [`DEFAULT_TIMEOUT`] per call, connect timeout 10 s, no proxy (tests talk to
    /// loopback; use [`Client::with_http`] to bring a configured one).
    pub fn new(base_url: &str) -> Result<Client, RequestError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .no_proxy()
            .build()
            .map_err(|e| {
                RequestError::Setup(format!("build the HTTP client: {}", error_chain(&e)))
            })?;
        Self::with_http(http, base_url)
    }

    /// A client of the server at `base_url` over `http`. The URL must be `http` or `https`;
    /// a trailing `/` is dropped.
    pub fn with_http(http: reqwest::Client, base_url: &str) -> Result<Client, RequestError> {
        let url = reqwest::Url::parse(base_url).map_err(|e| {
            RequestError::Setup(format!(
                "base URL `{}`: {e}",
                excerpt(redact_text(base_url).as_bytes())
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(RequestError::Setup(format!(
                "base URL `{}` must be http or https",
                excerpt(redact_text(base_url).as_bytes())
            )));
        }
        Ok(Client {
            http,
            base: base_url.trim_end_matches('/').to_string(),
            key: None,
            timeout: DEFAULT_TIMEOUT,
            max_body: DEFAULT_MAX_BODY,
        })
    }

    /// Send `Authorization: Bearer KEY` with every request.
    pub fn api_key(mut self, key: SecretString) -> Self {
        self.key = Some(key);
        self
    }

    /// How long one non-streaming call may take, head and body ([`DEFAULT_TIMEOUT`] unless
    /// told otherwise).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The most bytes of one non-streaming body
    /// ([`DEFAULT_MAX_BODY`](citadel_itest_core::http::DEFAULT_MAX_BODY) unless told
    /// otherwise).
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// The base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The URL of `path` (`models`, `chat/completions`) under the base URL.
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }

    /// A request to `path` under the base URL with the API key set and the call's timeout;
    /// for anything the typed calls do not cover. Read its answer with [`Client::send_raw`].
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .request(method, self.url(path))
            .timeout(self.timeout);
        if let Some(key) = &self.key {
            req = req.bearer_auth(key.expose());
        }
        req
    }

    /// Send `req` and read its answer within the client's bounds, whatever the status.
    /// `what` names the call in messages (`POST /v1/chat/completions`).
    pub async fn send_raw(
        &self,
        what: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<RawReply, RequestError> {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let response = send(what, req, self.timeout).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let limit = BodyLimit::until(deadline)
            .allowed(self.timeout)
            .max_bytes(self.max_body);
        let body = read_body(response, &limit)
            .await
            .map_err(|error| RequestError::Body {
                what: what.to_string(),
                status: status.as_u16(),
                error,
            })?;
        Ok(RawReply {
            status,
            headers,
            body,
            elapsed: started.elapsed(),
        })
    }

    /// `GET /v1/models`.
    pub async fn models(&self) -> Result<Reply<ModelList>, RequestError> {
        let what = self.what("GET", "models");
        let raw = self
            .send_raw(&what, self.request(Method::GET, "models"))
            .await?;
        typed(&what, raw, "a model list")
    }

    /// `POST /v1/chat/completions`, non-streaming (`stream` is sent as false).
    pub async fn chat(&self, req: &ChatRequest) -> Result<Reply<ChatCompletion>, RequestError> {
        let mut req = req.clone();
        req.stream = false;
        req.stream_options = None;
        let raw = self.post("chat/completions", &req, &req.headers).await?;
        typed(
            &self.what("POST", "chat/completions"),
            raw,
            "a chat completion",
        )
    }

    /// `POST /v1/completions`, non-streaming.
    pub async fn completion(
        &self,
        req: &CompletionRequest,
    ) -> Result<Reply<Completion>, RequestError> {
        let mut req = req.clone();
        req.stream = false;
        req.stream_options = None;
        let raw = self.post("completions", &req, &req.headers).await?;
        typed(&self.what("POST", "completions"), raw, "a text completion")
    }

    /// `POST /v1/embeddings`.
    pub async fn embeddings(
        &self,
        req: &EmbeddingsRequest,
    ) -> Result<Reply<Embeddings>, RequestError> {
        let raw = self.post("embeddings", req, &req.headers).await?;
        typed(&self.what("POST", "embeddings"), raw, "an embeddings list")
    }

    /// `POST /v1/chat/completions` with `stream: true`, read by [`read_stream`] within
    /// `limits`. A non-2xx answer is an error ([`RequestError::Api`] when it carries an OpenAI
    /// error); a 2xx answer always gives a [`StreamReport`] whose
    /// [`end`](StreamReport::end) says how the stream ended. A server that sends no response
    /// head within [`StreamLimits::stall`] gives a report that ended
    /// [`Stalled`](crate::StreamEnd::Stalled) after 0 events.
    pub async fn chat_stream(
        &self,
        req: &ChatRequest,
        limits: &StreamLimits,
    ) -> Result<StreamReport, RequestError> {
        let mut req = req.clone();
        req.stream = true;
        self.stream("chat/completions", &req, &req.headers, limits)
            .await
    }

    /// `POST /v1/completions` with `stream: true`; as [`Client::chat_stream`].
    pub async fn completion_stream(
        &self,
        req: &CompletionRequest,
        limits: &StreamLimits,
    ) -> Result<StreamReport, RequestError> {
        let mut req = req.clone();
        req.stream = true;
        self.stream("completions", &req, &req.headers, limits).await
    }

    fn what(&self, method: &str, path: &str) -> String {
        let url = self.url(path);
        let path = reqwest::Url::parse(&url)
            .map(|u| u.path().to_string())
            .unwrap_or(url);
        format!("{method} {path}")
    }

    fn post_request<B: Serialize>(
        &self,
        path: &str,
        body: &B,
        headers: &Headers,
    ) -> Result<reqwest::RequestBuilder, RequestError> {
        let body = serde_json::to_vec(body)
            .map_err(|e| RequestError::Setup(format!("serialize the request body: {e}")))?;
        let mut req = self
            .request(Method::POST, path)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                RequestError::Setup(format!(
                    "header name `{}` is not a valid HTTP header name",
                    excerpt(name.as_bytes())
                ))
            })?;
            let value = HeaderValue::from_str(value).map_err(|_| {
                RequestError::Setup(format!(
                    "header `{name}` has a value that is not valid in HTTP (control characters \
                     or non-ASCII)"
                ))
            })?;
            req = req.header(name, value);
        }
        Ok(req)
    }

    async fn post<B: Serialize>(
        &self,
        path: &str,
        body: &B,
        headers: &Headers,
    ) -> Result<RawReply, RequestError> {
        let req = self.post_request(path, body, headers)?;
        self.send_raw(&self.what("POST", path), req).await
    }

    async fn stream<B: Serialize>(
        &self,
        path: &str,
        body: &B,
        headers: &Headers,
        limits: &StreamLimits,
    ) -> Result<StreamReport, RequestError> {
        let what = self.what("POST", path);
        let req = self
            .post_request(path, body, headers)?
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .timeout(limits.max_duration);
        let started = Instant::now();
        let head = tokio::time::timeout(limits.stall, send(&what, req, limits.max_duration)).await;
        let response = match head {
            Err(_) => return Ok(StreamReport::stalled_before_head(started, limits)),
            Ok(r) => r?,
        };
        let status = response.status();
        if !status.is_success() {
            let headers = response.headers().clone();
            let limit = BodyLimit::within(self.timeout).max_bytes(self.max_body);
            let body = read_body(response, &limit)
                .await
                .map_err(|error| RequestError::Body {
                    what: what.clone(),
                    status: status.as_u16(),
                    error,
                })?;
            return Err(status_error(
                &what,
                RawReply {
                    status,
                    headers,
                    body,
                    elapsed: started.elapsed(),
                },
            ));
        }
        let ct = content_type(response.headers());
        if !ct.to_ascii_lowercase().starts_with("text/event-stream") {
            let limit = BodyLimit::within(self.timeout).max_bytes(64 * 1024);
            let body = read_body(response, &limit).await.unwrap_or_default();
            return Err(RequestError::NotEventStream {
                what,
                status: status.as_u16(),
                content_type: ct,
                excerpt: excerpt(&body),
            });
        }
        Ok(read_stream(response, started, limits).await)
    }
}

/// Send, mapping a failure to `Timeout` or `Transport`.
async fn send(
    what: &str,
    req: reqwest::RequestBuilder,
    within: Duration,
) -> Result<reqwest::Response, RequestError> {
    req.send().await.map_err(|e| {
        if e.is_timeout() {
            RequestError::Timeout {
                what: what.to_string(),
                within,
            }
        } else {
            RequestError::Transport {
                what: what.to_string(),
                message: transport_words(e),
            }
        }
    })
}

pub(crate) fn transport_words(e: reqwest::Error) -> String {
    if let Some(words) = io_error_words_in_chain(&e) {
        return words.to_string();
    }
    redact_text(&error_chain(&e.without_url()))
}

/// A non-2xx answer as an error.
fn status_error(what: &str, raw: RawReply) -> RequestError {
    match raw.api_error() {
        Some(error) => RequestError::Api {
            what: what.to_string(),
            error: Box::new(error),
        },
        None => RequestError::Status {
            what: what.to_string(),
            status: raw.status.as_u16(),
            content_type: raw.content_type(),
            excerpt: raw.excerpt(),
        },
    }
}

/// A 2xx answer parsed as `T`, any other as an error.
fn typed<T: DeserializeOwned>(
    what: &str,
    raw: RawReply,
    expected: &'static str,
) -> Result<Reply<T>, RequestError> {
    if !raw.status.is_success() {
        return Err(status_error(what, raw));
    }
    match parse_json::<T>(&raw.body) {
        Ok(body) => Ok(Reply {
            status: raw.status,
            headers: raw.headers,
            body,
            elapsed: raw.elapsed,
        }),
        Err(error) => Err(RequestError::Shape {
            what: what.to_string(),
            status: raw.status.as_u16(),
            expected,
            error,
            excerpt: raw.excerpt(),
        }),
    }
}
