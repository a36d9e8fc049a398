//! The HTTP surface: the router, the identity-and-metrics middleware and every handler.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt as _;
use serde_json::Value;
use tokio::time::Instant;

use super::faults::{Faults, FaultsJson};
use super::generate::{self, Rng};
use super::metrics::Metrics;
use super::stream::{self, Answer, Choice, End, Kind};
use super::wire::{
    self, ApiError, Embedding, EmbeddingList, EmbeddingUsage, EmbeddingValue, EncodingFormat,
    Generation, Head, ModelList, ModelObject, json_body, json_response,
};
use super::{BACKEND_ID_HEADER, FAULT_HEADER, REQUEST_ID_HEADER};

/// How long a client may take to send a request body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// After a body went over the limit, how much more is read (and thrown away) so the client gets
/// the 413 instead of a broken pipe.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;
/// How long that draining may take.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// The `created` time of every model in `/v1/models` (fixed, so listings are reproducible).
const MODEL_CREATED: u64 = 1_700_000_000;

/// Settings and state every request sees.
pub(crate) struct Shared {
    pub(crate) backend_id: String,
    pub(crate) backend_id_header: HeaderValue,
    pub(crate) models: Vec<String>,
    pub(crate) api_key: Option<String>,
    pub(crate) seed: u64,
    pub(crate) ttft: Duration,
    pub(crate) itl: Duration,
    pub(crate) jitter: Duration,
    pub(crate) completion_tokens: usize,
    pub(crate) embedding_dimension: usize,
    pub(crate) body_limit: usize,
    pub(crate) fingerprint: String,
    pub(crate) faults: Mutex<Faults>,
    pub(crate) fault_draws: AtomicU64,
    pub(crate) timing_draws: AtomicU64,
    pub(crate) request_counter: AtomicU64,
    pub(crate) nonce: u64,
    pub(crate) metrics: Metrics,
    #[cfg(feature = "models-db")]
    pub(crate) request_log: Option<super::db::RequestLog>,
}

/// A request the server finished serving, for the request log.
#[derive(Debug, Clone)]
pub(crate) struct Completed {
    pub(crate) request_id: String,
    pub(crate) model: String,
    pub(crate) prompt_tokens: u64,
    pub(crate) completion_tokens: u64,
    pub(crate) duration: Duration,
}

impl Shared {
    pub(crate) fn faults(&self) -> Faults {
        self.faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_faults(&self, faults: Faults) {
        *self.faults.lock().unwrap_or_else(PoisonError::into_inner) = faults;
    }

    fn new_request_id(&self) -> String {
        let n = self.request_counter.fetch_add(1, Ordering::Relaxed);
        format!("req_{:016x}{n:016x}", self.nonce)
    }

    fn has_model(&self, model: &str) -> Result<(), ApiError> {
        if self.models.iter().any(|m| m == model) {
            Ok(())
        } else {
            Err(ApiError::model_not_found(model))
        }
    }

    /// Authentication, then the fault header, then the status faults 503 and 429.
    fn gate(&self, headers: &HeaderMap) -> Result<Faults, ApiError> {
        if let Some(key) = &self.api_key {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            match given {
                None | Some("") => return Err(ApiError::missing_api_key()),
                Some(given) if !constant_time_eq(given.as_bytes(), key.as_bytes()) => {
                    return Err(ApiError::wrong_api_key());
                }
                Some(_) => {}
            }
        }
        let mut faults = self.faults();
        if let Some(value) = headers.get(FAULT_HEADER) {
            let parsed = value
                .to_str()
                .map_err(|_| "not ASCII".to_owned())
                .and_then(|s| s.parse::<Faults>().map_err(|e| e.to_string()))
                .map_err(|why| {
                    ApiError::invalid_value(
                        FAULT_HEADER,
                        "invalid_value",
                        format!("Invalid {FAULT_HEADER} header: {why}"),
                    )
                })?;
            faults = faults.overlaid_with(&parsed);
        }
        if faults.unavailable {
            self.metrics.fault_injected("unavailable");
            return Err(ApiError::unavailable());
        }
        if let Some(retry_after) = faults.rate_limit {
            self.metrics.fault_injected("rate_limit");
            return Err(ApiError::rate_limited(Faults::retry_after_secs(
                retry_after,
            )));
        }
        Ok(faults)
    }

    /// The seeded error-rate draw (500), then the stall. Returns when the answer's timeline
    /// starts: at `arrival`, or after the stall.
    async fn error_then_stall(
        &self,
        faults: &Faults,
        arrival: Instant,
    ) -> Result<Instant, ApiError> {
        let fail = if faults.error_rate >= 1.0 {
            true
        } else if faults.error_rate > 0.0 {
            let draw = self.fault_draws.fetch_add(1, Ordering::Relaxed);
            let mut rng = Rng::new(generate::hash_parts(
                self.seed,
                &[b"error", &draw.to_le_bytes()],
            ));
            rng.next_f64() < faults.error_rate
        } else {
            false
        };
        if fail {
            self.metrics.fault_injected("error");
            return Err(ApiError::server_error());
        }
        if let Some(stall) = faults.stall {
            self.metrics.fault_injected("stall");
            super::timer::sleep(stall).await;
            return Ok(Instant::now());
        }
        Ok(arrival)
    }

    fn timing_rng(&self) -> Rng {
        let draw = self.timing_draws.fetch_add(1, Ordering::Relaxed);
        Rng::new(generate::hash_parts(
            self.seed,
            &[b"timing", &draw.to_le_bytes()],
        ))
    }

    /// Logs a finished request (tracing, debug level) and writes it to the request log (when
    /// there is one).
    fn completed(&self, completed: Completed) {
        tracing::debug!(
            request_id = %completed.request_id,
            model = %completed.model,
            prompt_tokens = completed.prompt_tokens,
            completion_tokens = completed.completion_tokens,
            duration_ms = completed.duration.as_secs_f64() * 1000.0,
            "request completed"
        );
        #[cfg(feature = "models-db")]
        if let Some(log) = &self.request_log {
            log.record(self, completed);
        }
    }
}

/// Compares without an early exit, so timing does not reveal how much of a key matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0);
    }
    diff == 0
}

/// Counts one request in the metrics exactly once: when its handler answered (non-streaming),
/// right before its last stream event, or when it is dropped (client gone).
pub(crate) struct Tracker {
    shared: Arc<Shared>,
    route: String,
    started: Instant,
    finished: AtomicBool,
    /// The status to record if dropped unfinished: 499 (client closed the request) until a
    /// streaming response's status is known.
    drop_status: AtomicU16,
}

impl Tracker {
    fn start(shared: Arc<Shared>, route: String) -> Arc<Self> {
        shared.metrics.request_started();
        Arc::new(Self {
            shared,
            route,
            started: Instant::now(),
            finished: AtomicBool::new(false),
            drop_status: AtomicU16::new(499),
        })
    }

    fn finish(&self, status: u16) {
        if !self.finished.swap(true, Ordering::SeqCst) {
            self.shared
                .metrics
                .request_finished(&self.route, status, self.started.elapsed());
        }
    }

    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.finish(self.drop_status.load(Ordering::SeqCst));
    }
}

/// What the middleware hands to handlers.
#[derive(Clone)]
pub(crate) struct Context {
    request_id: String,
    /// When the request arrived: the answer's timeline starts here.
    arrival: Instant,
    tracker: Option<Arc<Tracker>>,
}

impl Context {
    fn elapsed(&self) -> Duration {
        self.tracker
            .as_ref()
            .map_or(Duration::ZERO, |t| t.elapsed())
    }
}

/// Marks a streaming response: the stream, not the middleware, finishes its tracker.
#[derive(Clone, Copy)]
struct Streaming;

/// The router with every route, the fallbacks and the middleware.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{model}", get(get_model))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route(
            "/fixture/faults",
            get(get_faults).post(set_faults).delete(clear_faults),
        )
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            identify_and_count,
        ))
        .with_state(shared)
}

/// Sets `x-backend-id` and `x-request-id` on every response and counts the request.
async fn identify_and_count(
    State(shared): State<Arc<Shared>>,
    mut request: Request,
    next: Next,
) -> Response {
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 512)
        .map(str::to_owned)
        .unwrap_or_else(|| shared.new_request_id());
    let path = request.uri().path();
    let counted = path != "/metrics" && path != "/fixture" && !path.starts_with("/fixture/");
    let tracker = counted.then(|| {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
        Tracker::start(shared.clone(), route)
    });
    request.extensions_mut().insert(Context {
        request_id: request_id.clone(),
        arrival: Instant::now(),
        tracker: tracker.clone(),
    });
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(BACKEND_ID_HEADER, shared.backend_id_header.clone());
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert(REQUEST_ID_HEADER, value);
    }
    if let Some(tracker) = tracker {
        let status = response.status().as_u16();
        if response.extensions().get::<Streaming>().is_some() {
            tracker.drop_status.store(status, Ordering::SeqCst);
        } else {
            tracker.finish(status);
        }
    }
    response
}

fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

fn context(request: &axum::http::Extensions) -> Context {
    request.get::<Context>().cloned().unwrap_or(Context {
        request_id: String::new(),
        arrival: Instant::now(),
        tracker: None,
    })
}

/// Reads the body up to the limit. Over it, reads (and discards) up to [`DRAIN_LIMIT`] more so
/// the client can finish sending and read the 413.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let mut stream = body.into_data_stream();
    let mut buf: Vec<u8> = Vec::new();
    let read = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::invalid_request(format!("Could not read the request body: {e}"))
            })?;
            if buf.len() + chunk.len() > limit {
                return Err(ApiError::too_large(limit));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(())
    };
    match tokio::time::timeout(BODY_READ_TIMEOUT, read).await {
        Ok(Ok(())) => Ok(Bytes::from(buf)),
        Ok(Err(e)) => {
            if e.status == StatusCode::PAYLOAD_TOO_LARGE {
                let drain = async {
                    let mut drained = 0usize;
                    while let Some(Ok(chunk)) = stream.next().await {
                        drained += chunk.len();
                        if drained > DRAIN_LIMIT {
                            break;
                        }
                    }
                };
                let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
            }
            Err(e)
        }
        Err(_) => Err(ApiError::body_timeout()),
    }
}

fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|_| ApiError::bad_json())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The completion id: its kind's prefix and 24 hex digits from the request id.
fn completion_id(prefix: &str, shared: &Shared, request_id: &str) -> String {
    let h = generate::hash_parts(shared.nonce, &[request_id.as_bytes()]);
    let l = generate::hash_parts(h, &[b"id"]);
    format!("{prefix}{h:016x}{:08x}", l as u32)
}

async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    generation(shared, headers, request, Kind::Chat).await
}

async fn completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    generation(shared, headers, request, Kind::Text).await
}

async fn generation(
    shared: Arc<Shared>,
    headers: HeaderMap,
    request: Request,
    kind: Kind,
) -> Response {
    let (parts, body) = request.into_parts();
    let ctx = context(&parts.extensions);
    respond(
        async {
            let bytes = read_body(body, shared.body_limit).await?;
            let faults = shared.gate(&headers)?;
            let value = parse_json(&bytes)?;
            let request = match kind {
                Kind::Chat => wire::parse_chat(&value)?,
                Kind::Text => wire::parse_completion(&value)?,
            };
            shared.has_model(&request.model)?;
            let start = shared.error_then_stall(&faults, ctx.arrival).await?;
            Ok(generate_answer(&shared, &ctx, kind, request, &faults, start).await)
        }
        .await,
    )
}

/// Generates the answer and sends it, paced, as JSON or as a stream.
async fn generate_answer(
    shared: &Arc<Shared>,
    ctx: &Context,
    kind: Kind,
    request: Generation,
    faults: &Faults,
    start: Instant,
) -> Response {
    let natural = shared.completion_tokens;
    let length = request.max_tokens.map_or(natural, |max| {
        natural.min(usize::try_from(max).unwrap_or(usize::MAX))
    });
    let finish_reason = if length < natural { "length" } else { "stop" };
    let request_seed = request.seed.unwrap_or(0).to_le_bytes();
    let mut choices = Vec::new();
    for (canonical, _) in &request.prompts {
        for index in 0..request.n {
            let key = generate::hash_parts(
                shared.seed,
                &[
                    match kind {
                        Kind::Chat => b"chat",
                        Kind::Text => b"text",
                    },
                    request.model.as_bytes(),
                    canonical,
                    &request_seed,
                    &index.to_le_bytes(),
                ],
            );
            choices.push(Choice {
                tokens: generate::tokens(key, length),
                finish_reason,
            });
        }
    }
    let object = match (kind, request.stream) {
        (Kind::Chat, false) => "chat.completion",
        (Kind::Chat, true) => "chat.completion.chunk",
        (Kind::Text, _) => "text_completion",
    };
    let prefix = match kind {
        Kind::Chat => "chatcmpl-",
        Kind::Text => "cmpl-",
    };
    let answer = Answer {
        kind,
        head: Head {
            id: completion_id(prefix, shared, &ctx.request_id),
            object,
            created: unix_now(),
            model: request.model.clone(),
        },
        fingerprint: shared.fingerprint.clone(),
        choices,
        prompt_tokens: request.prompt_tokens(),
        include_usage: request.include_usage,
    };
    let itl = match faults.slow_itl {
        Some(slow) => {
            shared.metrics.fault_injected("slow");
            slow
        }
        None => shared.itl,
    };
    let deadlines = stream::schedule(
        start,
        answer.steps(),
        shared.ttft,
        itl,
        shared.jitter,
        &mut shared.timing_rng(),
    );
    let model = request.model.clone();
    let prompt_tokens = answer.prompt_tokens;
    let completion_tokens = answer.completion_tokens();

    if !request.stream {
        if let Some(last) = deadlines.last() {
            super::timer::sleep_until(*last).await;
        }
        shared
            .metrics
            .add_generated_tokens(&model, completion_tokens);
        shared.metrics.add_prompt_tokens(&model, prompt_tokens);
        shared.completed(Completed {
            request_id: ctx.request_id.clone(),
            model,
            prompt_tokens,
            completion_tokens,
            duration: ctx.elapsed(),
        });
        return answer.into_json_response();
    }

    let mut events = answer.events(&deadlines);
    if let Some(fault) = stream::insert_malformed(
        &mut events,
        deadlines.first().copied().unwrap_or(start),
        faults.malformed_after,
    ) {
        shared.metrics.fault_injected(fault);
    }
    if let Some(fault) = stream::apply_faults(
        &mut events,
        deadlines.first().copied().unwrap_or(start),
        faults.cut_after,
        faults.sse_error_after,
    ) {
        shared.metrics.fault_injected(fault);
    }
    let tokens_shared = shared.clone();
    let tokens_model = model.clone();
    let on_tokens = move |n: u64| tokens_shared.metrics.add_generated_tokens(&tokens_model, n);
    let end_shared = shared.clone();
    let end_ctx = ctx.clone();
    let on_end = move |end: End| {
        if end == End::Done {
            end_shared.metrics.add_prompt_tokens(&model, prompt_tokens);
            end_shared.completed(Completed {
                request_id: end_ctx.request_id.clone(),
                model,
                prompt_tokens,
                completion_tokens,
                duration: end_ctx.elapsed(),
            });
        }
        if let Some(tracker) = &end_ctx.tracker {
            tracker.finish(200);
        }
    };
    let mut response = stream::sse_response(events, on_tokens, on_end);
    response.extensions_mut().insert(Streaming);
    response
}

async fn embeddings(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let ctx = context(&parts.extensions);
    respond(
        async {
            let bytes = read_body(body, shared.body_limit).await?;
            let faults = shared.gate(&headers)?;
            let value = parse_json(&bytes)?;
            let request = wire::parse_embeddings(&value, shared.embedding_dimension)?;
            shared.has_model(&request.model)?;
            let start = shared.error_then_stall(&faults, ctx.arrival).await?;
            let deadline = stream::schedule(
                start,
                1,
                shared.ttft,
                Duration::ZERO,
                shared.jitter,
                &mut shared.timing_rng(),
            );
            let dimension = request.dimensions.unwrap_or(shared.embedding_dimension);
            let mut data = Vec::with_capacity(request.inputs.len());
            let mut prompt_tokens = 0;
            for (index, input) in request.inputs.iter().enumerate() {
                prompt_tokens += input.tokens;
                let full =
                    generate::embedding(shared.seed, &input.canonical, shared.embedding_dimension);
                let vector = if dimension == full.len() {
                    full
                } else {
                    let cut: Vec<f64> = full[..dimension].iter().map(|v| f64::from(*v)).collect();
                    generate::normalise(&cut)
                };
                let embedding = match request.encoding {
                    EncodingFormat::Float => EmbeddingValue::Float(vector),
                    EncodingFormat::Base64 => {
                        let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                        EmbeddingValue::Base64(generate::base64(&bytes))
                    }
                };
                data.push(Embedding {
                    object: "embedding",
                    index: index as u64,
                    embedding,
                });
            }
            if let Some(at) = deadline.first() {
                super::timer::sleep_until(*at).await;
            }
            shared
                .metrics
                .add_prompt_tokens(&request.model, prompt_tokens);
            shared.completed(Completed {
                request_id: ctx.request_id.clone(),
                model: request.model.clone(),
                prompt_tokens,
                completion_tokens: 0,
                duration: ctx.elapsed(),
            });
            Ok(json_response(&EmbeddingList {
                object: "list",
                data,
                model: &request.model,
                usage: EmbeddingUsage {
                    prompt_tokens,
                    total_tokens: prompt_tokens,
                },
            }))
        }
        .await,
    )
}

fn model_object(id: &str) -> ModelObject<'_> {
    ModelObject {
        id,
        object: "model",
        created: MODEL_CREATED,
        owned_by: "citadel-itest",
    }
}

async fn list_models(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    respond(
        async {
            let faults = shared.gate(&headers)?;
            shared.error_then_stall(&faults, Instant::now()).await?;
            Ok(json_response(&ModelList {
                object: "list",
                data: shared.models.iter().map(|m| model_object(m)).collect(),
            }))
        }
        .await,
    )
}

async fn get_model(
    State(shared): State<Arc<Shared>>,
    Path(model): Path<String>,
    headers: HeaderMap,
) -> Response {
    respond(
        async {
            let faults = shared.gate(&headers)?;
            shared.has_model(&model)?;
            shared.error_then_stall(&faults, Instant::now()).await?;
            Ok(json_response(&model_object(&model)))
        }
        .await,
    )
}

async fn health(State(shared): State<Arc<Shared>>) -> Response {
    let unavailable = shared.faults().unavailable;
    let body = serde_json::json!({
        "status": if unavailable { "unavailable" } else { "ok" },
        "backend_id": shared.backend_id,
    });
    let status = if unavailable {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, json_body(body.to_string())).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let text = shared.metrics.render(&shared.backend_id, &shared.models);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

fn faults_response(faults: &Faults) -> Response {
    json_response(&FaultsJson::from(faults))
}

async fn get_faults(State(shared): State<Arc<Shared>>) -> Response {
    faults_response(&shared.faults())
}

async fn set_faults(State(shared): State<Arc<Shared>>, body: Body) -> Response {
    respond(
        async {
            let bytes = read_body(body, shared.body_limit).await?;
            let json: FaultsJson = serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::invalid_request(format!("Invalid faults: {e}")))?;
            let faults = Faults::try_from(json)
                .map_err(|e| ApiError::invalid_request(format!("Invalid faults: {e}")))?;
            tracing::info!(backend_id = %shared.backend_id, faults = %faults, "faults set");
            shared.set_faults(faults.clone());
            Ok(faults_response(&faults))
        }
        .await,
    )
}

async fn clear_faults(State(shared): State<Arc<Shared>>) -> Response {
    shared.set_faults(Faults::none());
    tracing::info!(backend_id = %shared.backend_id, "faults cleared");
    faults_response(&Faults::none())
}

async fn unknown_route(method: Method, uri: Uri) -> Response {
    ApiError::invalid_url(method.as_str(), uri.path()).into_response()
}

async fn wrong_method(method: Method, uri: Uri) -> Response {
    ApiError::method_not_allowed(method.as_str(), uri.path()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_exactly() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
