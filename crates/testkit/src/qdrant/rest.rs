//! The REST side: Qdrant's JSON routes over the shared store, with Qdrant's envelopes
//! (`{"result", "status": "ok", "time"}`, errors `{"status": {"error"}, "time"}`), status codes,
//! API-key check and response counters.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequest, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::Shared;
use super::auth::rest_path_is_open;
use super::filter::{Condition, FieldCheck, Filter, Match, Range};
use super::store::{
    CollectionSummary, Distance, NewPoint, Payload, Point, PointId, Search, Selector, StoreError,
    VectorParams, WithPayload,
};

/// The `vary` header Qdrant's CORS middleware adds to its answers.
const VARY: &str = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

/// How many points a query or scroll returns when the request says nothing.
const DEFAULT_LIMIT: usize = 10;

/// Every route, behind the API-key gate and the response counters, with paths normalised
/// first (trailing slashes trimmed, repeated slashes merged) as Qdrant's `NormalizePath` does.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    // A layer on a router runs after its routing; an outer router that routes nothing hands the
    // rewritten request to the inner one.
    Router::new()
        .fallback_service(routes(shared))
        .layer(middleware::from_fn(normalise_path))
}

/// Trims trailing slashes and merges repeated ones (`/collections/` is `/collections`), and
/// drops the `allow` header axum adds when a route is asked with the wrong method (outside any
/// route layer), which Qdrant does not send.
async fn normalise_path(mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let mut clean = String::with_capacity(path.len());
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        clean.push('/');
        clean.push_str(segment);
    }
    if clean.is_empty() {
        clean.push('/');
    }
    if clean != path {
        let rebuilt = match request.uri().query() {
            Some(query) => format!("{clean}?{query}"),
            None => clean,
        };
        if let Ok(uri) = rebuilt.parse::<Uri>() {
            let mut parts = request.uri().clone().into_parts();
            parts.path_and_query = uri.path_and_query().cloned();
            if let Ok(uri) = Uri::from_parts(parts) {
                *request.uri_mut() = uri;
            }
        }
    }
    let mut response = next.run(request).await;
    response.headers_mut().remove(header::ALLOW);
    response
}

fn routes(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/healthz", get(healthz))
        .route("/livez", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/collections", get(list_collections))
        .route(
            "/collections/{collection_name}",
            get(get_collection)
                .put(create_collection)
                .delete(delete_collection),
        )
        .route(
            "/collections/{collection_name}/exists",
            get(collection_exists),
        )
        .route(
            "/collections/{collection_name}/points",
            put(upsert_points).post(get_points),
        )
        .route("/collections/{collection_name}/points/{id}", get(get_point))
        .route(
            "/collections/{collection_name}/points/count",
            post(count_points),
        )
        .route(
            "/collections/{collection_name}/points/search",
            post(search_points),
        )
        .route(
            "/collections/{collection_name}/points/query",
            post(query_points),
        )
        .route(
            "/collections/{collection_name}/points/scroll",
            post(scroll_points),
        )
        .route(
            "/collections/{collection_name}/points/delete",
            post(delete_points),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .layer(middleware::from_fn_with_state(shared.clone(), gate))
        .with_state(shared)
}

/// The API-key check (Qdrant answers a refused request with a bare 401 text body) and the
/// per-endpoint response counters.
async fn gate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let method = request.method().as_str().to_owned();
    // Labelled with the route pattern, as Qdrant does; requests matching no route share one label.
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unknown".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let mut response = match shared
        .api_key
        .as_ref()
        .filter(|_| !rest_path_is_open(request.uri().path()))
        .map(|key| {
            let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
            key.check(header("api-key"), header("authorization"))
        }) {
        Some(Err(e)) => {
            let mut response = Response::new(axum::body::Body::from(e.message()));
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            response
        }
        _ => next.run(request).await,
    };
    let headers = response.headers_mut();
    headers.insert(header::VARY, HeaderValue::from_static(VARY));
    shared.metrics.record_rest(
        &method,
        &endpoint,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Qdrant answers unknown routes (and known routes with another method) with an empty 404.
async fn not_found() -> StatusCode {
    StatusCode::NOT_FOUND
}

#[derive(Serialize)]
struct Answer<T> {
    result: T,
    status: &'static str,
    time: f64,
}

fn ok<T: Serialize>(started: Instant, result: T) -> Response {
    Json(Answer {
        result,
        status: "ok",
        time: started.elapsed().as_secs_f64(),
    })
    .into_response()
}

#[derive(Serialize)]
struct ErrorBody {
    status: ErrorStatus,
    time: f64,
}

#[derive(Serialize)]
struct ErrorStatus {
    error: String,
}

/// An error answer: its status code and Qdrant's message.
#[derive(Debug)]
pub(crate) struct RestError {
    code: StatusCode,
    message: String,
    time: f64,
    /// Answered before the request body was read: the connection is closed after the answer
    /// (`connection: close`), so a client never sends its next request on a connection the
    /// server is about to drop.
    close: bool,
}

impl RestError {
    /// A store error, with the code Qdrant's REST API gives it.
    fn store(error: StoreError, started: Instant) -> Self {
        let code = match &error {
            StoreError::NotFound(_) | StoreError::PointNotFound(_) => StatusCode::NOT_FOUND,
            StoreError::AlreadyExists(_) => StatusCode::CONFLICT,
            StoreError::Dimension { .. } | StoreError::VectorName(_) | StoreError::BadInput(_) => {
                StatusCode::BAD_REQUEST
            }
            StoreError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            StoreError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
        };
        Self {
            code,
            message: error.message(),
            time: started.elapsed().as_secs_f64(),
            close: false,
        }
    }

    /// A body that does not parse into the request type (Qdrant: 400, `time` 0).
    fn format(detail: impl std::fmt::Display) -> Self {
        Self {
            code: StatusCode::BAD_REQUEST,
            message: format!("Format error in JSON body: {detail}"),
            time: 0.0,
            close: false,
        }
    }

    /// A body that cannot be read: too large, or the connection failed (actix's own text).
    fn payload(detail: impl std::fmt::Display) -> Self {
        Self {
            code: StatusCode::BAD_REQUEST,
            message: detail.to_string(),
            time: 0.0,
            close: false,
        }
    }

    /// A parsed body that fails validation (Qdrant: 422).
    fn validation(detail: impl std::fmt::Display) -> Self {
        Self {
            code: StatusCode::UNPROCESSABLE_ENTITY,
            message: format!("Validation error in JSON body: [{detail}]"),
            time: 0.0,
            close: false,
        }
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            status: ErrorStatus {
                error: self.message,
            },
            time: self.time,
        };
        let mut response = (self.code, Json(body)).into_response();
        if self.close {
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

/// A JSON body read the way Qdrant's actix extractor reads it: whatever the content type (Qdrant
/// does not check it), at most `max_request_size` bytes, then serde.
struct Body<T>(T);

impl<T: DeserializeOwned> FromRequest<Arc<Shared>> for Body<T> {
    type Rejection = RestError;

    async fn from_request(request: Request, shared: &Arc<Shared>) -> Result<Self, RestError> {
        let limit = shared.max_request_size;
        if let Some(length) = content_length(request.headers()) {
            if length > limit {
                let mut too_large = RestError::payload(format!(
                    "JSON payload ({length} bytes) is larger than allowed (limit: {limit} bytes)."
                ));
                too_large.close = true;
                return Err(too_large);
            }
        }
        let bytes = axum::body::to_bytes(request.into_body(), limit)
            .await
            .map_err(|e| {
                if is_length_limit(&e) {
                    let mut too_large = RestError::payload(format!(
                        "JSON payload has exceeded limit ({limit} bytes)."
                    ));
                    too_large.close = true;
                    too_large
                } else {
                    RestError::payload(format!("Error that occur during reading payload: {e}"))
                }
            })?;
        serde_json::from_slice(&bytes)
            .map(Body)
            .map_err(RestError::format)
    }
}

fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = source {
        if e.to_string().contains("length limit exceeded") {
            return true;
        }
        source = e.source();
    }
    false
}

#[derive(Deserialize)]
struct WaitParams {
    wait: Option<bool>,
}

/// `?wait=true|false` of update requests.
fn wait_param(uri: &Uri) -> Result<bool, RestError> {
    Query::<WaitParams>::try_from_uri(uri)
        .map(|q| q.0.wait == Some(true))
        .map_err(|e| RestError {
            code: StatusCode::BAD_REQUEST,
            message: format!("Deserialize error in query parameters: {}", e.body_text()),
            time: 0.0,
            close: false,
        })
}

// ---- service routes ----

#[derive(Serialize)]
struct VersionInfo<'a> {
    title: &'static str,
    version: &'a str,
}

async fn root(State(shared): State<Arc<Shared>>) -> Response {
    Json(VersionInfo {
        title: super::TITLE,
        version: &shared.version,
    })
    .into_response()
}

async fn healthz() -> &'static str {
    "healthz check passed"
}

async fn readyz() -> &'static str {
    "all shards are ready"
}

async fn metrics(State(shared): State<Arc<Shared>>) -> String {
    shared.metrics.render(&shared.version, &shared.store)
}

// ---- collections ----

#[derive(Serialize)]
struct CollectionDescription {
    name: String,
}

#[derive(Serialize)]
struct CollectionsResponse {
    collections: Vec<CollectionDescription>,
}

async fn list_collections(State(shared): State<Arc<Shared>>) -> Response {
    let started = Instant::now();
    let collections = shared
        .store
        .names()
        .into_iter()
        .map(|name| CollectionDescription { name })
        .collect();
    ok(started, CollectionsResponse { collections })
}

/// `GET /collections/{name}` of a real Qdrant 1.18.3 for a single-vector collection, with the
/// fixture's size, distance and point count filled in.
const COLLECTION_INFO: &str = concat!(
    r#"{"status":"green","optimizer_status":"ok","indexed_vectors_count":0,"#,
    r#""points_count":@POINTS@,"segments_count":2,"config":{"params":{"vectors":"#,
    r#"{"size":@SIZE@,"distance":"@DISTANCE@"},"shard_number":1,"replication_factor":1,"#,
    r#""write_consistency_factor":1,"on_disk_payload":true},"hnsw_config":{"m":16,"#,
    r#""ef_construct":100,"full_scan_threshold":10000,"max_indexing_threads":0,"#,
    r#""on_disk":false},"optimizer_config":{"deleted_threshold":0.2,"#,
    r#""vacuum_min_vector_number":1000,"default_segment_number":0,"max_segment_size":null,"#,
    r#""memmap_threshold":null,"indexing_threshold":10000,"flush_interval_sec":5,"#,
    r#""max_optimization_threads":null,"prevent_unoptimized":null},"wal_config":"#,
    r#"{"wal_capacity_mb":32,"wal_segments_ahead":0,"wal_retain_closed":1},"#,
    r#""quantization_config":null},"payload_schema":{},"update_queue":{"length":0}}"#
);

fn collection_info_json(summary: CollectionSummary) -> String {
    COLLECTION_INFO
        .replace("@POINTS@", &summary.points_count.to_string())
        .replace("@SIZE@", &summary.params.size.to_string())
        .replace("@DISTANCE@", summary.params.distance.name())
}

async fn get_collection(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<Response, RestError> {
    let started = Instant::now();
    let summary = shared
        .store
        .summary(&name)
        .map_err(|e| RestError::store(e, started))?;
    let info = collection_info_json(summary);
    let time =
        serde_json::to_string(&started.elapsed().as_secs_f64()).unwrap_or_else(|_| "0.0".into());
    let body = format!(r#"{{"result":{info},"status":"ok","time":{time}}}"#);
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

#[derive(Deserialize)]
enum DistanceName {
    Cosine,
    Euclid,
    Dot,
    Manhattan,
}

#[derive(Deserialize)]
struct VectorParamsBody {
    size: std::num::NonZeroU64,
    distance: DistanceName,
    multivector_config: Option<Value>,
}

/// Named like Qdrant's type, so serde's "did not match any variant" message names the same.
#[derive(Deserialize)]
#[serde(untagged)]
enum VectorsConfig {
    Single(VectorParamsBody),
    Multi(std::collections::BTreeMap<String, VectorParamsBody>),
}

#[derive(Deserialize)]
struct CreateCollection {
    vectors: Option<VectorsConfig>,
    sparse_vectors: Option<serde_json::Map<String, Value>>,
}

fn unsupported(what: &str) -> StoreError {
    StoreError::Unsupported(what.to_owned())
}

async fn create_collection(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Body(body): Body<CreateCollection>,
) -> Result<Response, RestError> {
    let started = Instant::now();
    let fail = |e| RestError::store(e, started);
    if body.sparse_vectors.is_some_and(|s| !s.is_empty()) {
        return Err(fail(unsupported("sparse vectors")));
    }
    let params = match body.vectors {
        Some(VectorsConfig::Single(params)) => {
            if params.multivector_config.is_some_and(|m| !m.is_null()) {
                return Err(fail(unsupported("multi-vectors")));
            }
            VectorParams {
                size: usize::try_from(params.size.get()).unwrap_or(usize::MAX),
                distance: match params.distance {
                    DistanceName::Cosine => Distance::Cosine,
                    DistanceName::Euclid => Distance::Euclid,
                    DistanceName::Dot => Distance::Dot,
                    DistanceName::Manhattan => Distance::Manhattan,
                },
            }
        }
        Some(VectorsConfig::Multi(named)) => {
            let names: Vec<&str> = named.keys().map(String::as_str).collect();
            return Err(fail(unsupported(&format!(
                "named vectors ({})",
                names.join(", ")
            ))));
        }
        None => return Err(fail(unsupported("collections without a dense vector"))),
    };
    shared.store.create(&name, params).map_err(fail)?;
    Ok(ok(started, true))
}

async fn delete_collection(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Response {
    let started = Instant::now();
    ok(started, shared.store.delete(&name))
}

#[derive(Serialize)]
struct CollectionExistence {
    exists: bool,
}

async fn collection_exists(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Response {
    let started = Instant::now();
    let exists = shared.store.exists(&name);
    ok(started, CollectionExistence { exists })
}

// ---- points: request shapes ----

/// A point id as Qdrant's REST API takes it: an unsigned integer or a UUID string.
struct ExtendedPointId(PointId);

impl<'de> Deserialize<'de> for ExtendedPointId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u64),
            Text(String),
        }
        let invalid = |shown: String| {
            serde::de::Error::custom(format!(
                "value {shown} is not a valid point ID, valid values are either an unsigned integer or a UUID"
            ))
        };
        match Raw::deserialize(deserializer) {
            Ok(Raw::Num(n)) => Ok(Self(PointId::Num(n))),
            Ok(Raw::Text(text)) => PointId::uuid(&text).map(Self).ok_or_else(|| invalid(text)),
            Err(_) => Err(serde::de::Error::custom(
                "invalid point ID, valid values are either an unsigned integer or a UUID",
            )),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum WithPayloadInterface {
    Bool(bool),
    Fields(Vec<String>),
    Include { include: Vec<String> },
    Exclude { exclude: Vec<String> },
}

fn with_payload(given: Option<WithPayloadInterface>, default: WithPayload) -> WithPayload {
    match given {
        None => default,
        Some(WithPayloadInterface::Bool(true)) => WithPayload::All,
        Some(WithPayloadInterface::Bool(false)) => WithPayload::Nothing,
        Some(
            WithPayloadInterface::Fields(keys) | WithPayloadInterface::Include { include: keys },
        ) => WithPayload::Include(keys),
        Some(WithPayloadInterface::Exclude { exclude }) => WithPayload::Exclude(exclude),
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum WithVector {
    Bool(bool),
    Names(Vec<String>),
}

/// Whether the unnamed vector is returned.
fn with_vector(given: Option<WithVector>) -> bool {
    match given {
        None | Some(WithVector::Bool(false)) => false,
        Some(WithVector::Bool(true)) => true,
        Some(WithVector::Names(names)) => names.iter().any(|n| n.is_empty()),
    }
}

#[derive(Deserialize)]
struct PointStruct {
    id: ExtendedPointId,
    vector: Value,
    payload: Option<Payload>,
}

#[derive(Deserialize)]
struct Batch {
    ids: Vec<ExtendedPointId>,
    vectors: Value,
    payloads: Option<Vec<Option<Payload>>>,
}

/// Named like Qdrant's type (see [`VectorsConfig`]).
#[derive(Deserialize)]
#[serde(untagged)]
enum PointInsertOperations {
    PointsBatch { batch: Batch },
    PointsList { points: Vec<PointStruct> },
}

/// The unnamed dense vector of an upserted point: `[..]`, or `{"": [..]}`.
fn dense_vector(vector: Value) -> Result<Vec<f32>, StoreError> {
    match vector {
        Value::Array(items) => {
            if items.iter().all(Value::is_number) {
                Ok(items
                    .iter()
                    .filter_map(Value::as_f64)
                    .map(|x| x as f32)
                    .collect())
            } else if items.iter().all(Value::is_array) {
                Err(unsupported("multi-dense vectors"))
            } else {
                Err(StoreError::BadInput(
                    "vector must be an array of numbers".into(),
                ))
            }
        }
        Value::Object(mut named) => {
            if let Some(name) = named.keys().find(|n| !n.is_empty()) {
                return Err(StoreError::VectorName(name.clone()));
            }
            match named.remove("") {
                Some(vector) => dense_vector(vector),
                None => Err(StoreError::BadInput("no vector given for the point".into())),
            }
        }
        _ => Err(StoreError::BadInput(
            "vector must be an array of numbers".into(),
        )),
    }
}

fn new_points(body: PointInsertOperations) -> Result<Vec<NewPoint>, StoreError> {
    match body {
        PointInsertOperations::PointsList { points } => points
            .into_iter()
            .map(|p| {
                Ok(NewPoint {
                    id: p.id.0,
                    vector: dense_vector(p.vector)?,
                    payload: p.payload.unwrap_or_default(),
                })
            })
            .collect(),
        PointInsertOperations::PointsBatch { batch } => {
            let vectors: Vec<Vec<f32>> = match batch.vectors {
                Value::Array(list) => list
                    .into_iter()
                    .map(dense_vector)
                    .collect::<Result<_, _>>()?,
                Value::Object(named) => match named.keys().find(|n| !n.is_empty()) {
                    Some(name) => return Err(StoreError::VectorName(name.clone())),
                    None => return Err(unsupported("batches of named vectors")),
                },
                _ => {
                    return Err(StoreError::BadInput(
                        "vectors must be a list of vectors".into(),
                    ));
                }
            };
            let ids = batch.ids;
            if vectors.len() != ids.len() {
                return Err(StoreError::BadInput(format!(
                    "number of vectors ({}) does not match the number of ids ({})",
                    vectors.len(),
                    ids.len()
                )));
            }
            let mut payloads = batch.payloads.unwrap_or_default().into_iter();
            Ok(ids
                .into_iter()
                .zip(vectors)
                .map(|(id, vector)| NewPoint {
                    id: id.0,
                    vector,
                    payload: payloads.next().flatten().unwrap_or_default(),
                })
                .collect())
        }
    }
}

// ---- points: answer shapes ----

#[derive(Serialize)]
#[serde(untagged)]
enum IdOut {
    Num(u64),
    Uuid(String),
}

impl From<PointId> for IdOut {
    fn from(id: PointId) -> Self {
        match id {
            PointId::Num(n) => Self::Num(n),
            PointId::Uuid(u) => Self::Uuid(u),
        }
    }
}

#[derive(Serialize)]
struct ScoredPoint {
    id: IdOut,
    version: u64,
    score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<Payload>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vector: Option<Vec<f32>>,
}

#[derive(Serialize)]
struct Record {
    id: IdOut,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<Payload>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vector: Option<Vec<f32>>,
}

fn record(point: Point, with_payload: &WithPayload, with_vector: bool) -> Record {
    Record {
        payload: with_payload.apply(&point.payload),
        vector: with_vector.then_some(point.vector),
        id: point.id.into(),
    }
}

#[derive(Serialize)]
struct UpdateResult {
    operation_id: u64,
    status: &'static str,
}

fn update_result(started: Instant, operation_id: u64, wait: bool) -> Response {
    let status = if wait { "completed" } else { "acknowledged" };
    ok(
        started,
        UpdateResult {
            operation_id,
            status,
        },
    )
}

// ---- points: routes ----

async fn upsert_points(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    uri: Uri,
    Body(body): Body<PointInsertOperations>,
) -> Result<Response, RestError> {
    let started = Instant::now();
    let wait = wait_param(&uri)?;
    let fail = |e| RestError::store(e, started);
    let points = new_points(body).map_err(fail)?;
    let operation = shared.store.upsert(&name, points).map_err(fail)?;
    Ok(update_result(started, operation, wait))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PointsSelector {
    Ids { points: Vec<ExtendedPointId> },
    Filter { filter: Value },
}

async fn delete_points(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    uri: Uri,
    Body(body): Body<PointsSelector>,
) -> Result<Response, RestError> {
    let started = Instant::now();
    let wait = wait_param(&uri)?;
    let selector = match body {
        PointsSelector::Ids { points } => {
            Selector::Ids(points.into_iter().map(|id| id.0).collect())
        }
        PointsSelector::Filter { filter } => Selector::Filter(parse_filter(filter)?),
    };
    let operation = shared
        .store
        .delete_points(&name, &selector)
        .map_err(|e| RestError::store(e, started))?;
    Ok(update_result(started, operation, wait))
}

#[derive(Deserialize)]
struct PointRequest {
    ids: Vec<ExtendedPointId>,
    with_payload: Option<WithPayloadInterface>,
    #[serde(alias = "with_vectors")]
    with_vector: Option<WithVector>,
}

async fn get_points(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Body(body): Body<PointRequest>,
) -> Result<Response, RestError> {
    let started = Instant::now();
    let ids: Vec<PointId> = body.ids.into_iter().map(|id| id.0).collect();
    let payload = with_payload(body.with_payload, WithPayload::All);
    let vector = with_vector(body.with_vector);
    let points = shared
        .store
        .get(&name, &ids)
        .map_err(|e| RestError::store(e, started))?;
    let records: Vec<Record> = points
        .into_iter()
        .map(|p| record(p, &payload, vector))
        .collect();
    Ok(ok(started, records))
}

async fn get_point(
    State(shared): State<Arc<Shared>>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response, RestError> {
    let started = Instant::now();
    let id = id
        .parse::<u64>()
        .ok()
        .map(PointId::Num)
        .or_else(|| PointId::uuid(&id))
        .ok_or_else(|| RestError {
            code: StatusCode::BAD_REQUEST,
            message: format!(
                "Deserialize error in path parameters: value {id} is not a valid point ID, valid values are either an unsigned integer or a UUID"
            ),
            time: 0.0,
            close: false,
        })?;
    let mut points = shared
        .store
        .get(&name, std::slice::from_ref(&id))
        .map_err(|e| RestError::store(e, started))?;
    let point = points
        .pop()
        .ok_or_else(|| RestError::store(StoreError::PointNotFound(id), started))?;
    Ok(ok(started, record(point, &WithPayload::All, true)))
}

#[derive(Deserialize)]
struct CountRequest {
    filter: Option<Value>,
}

#[derive(Serialize)]
struct CountResult {
    count: usize,
}

async fn count_points(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Body(body): Body<CountRequest>,
) -> Result<Response, RestError> {
    let started = Instant::now();
    let filter = optional_filter(body.filter)?;
    let count = shared
        .store
        .count(&name, filter.as_ref())
        .map_err(|e| RestError::store(e, started))?;
    Ok(ok(started, CountResult { count }))
}

#[derive(Deserialize)]
struct ScrollRequest {
    offset: Option<ExtendedPointId>,
    limit: Option<usize>,
    filter: Option<Value>,
    with_payload: Option<WithPayloadInterface>,
    #[serde(alias = "with_vectors")]
    with_vector: Option<WithVector>,
    order_by: Option<Value>,
}

#[derive(Serialize)]
struct ScrollResult {
    points: Vec<Record>,
    next_page_offset: Option<IdOut>,
}

async fn scroll_points(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Body(body): Body<ScrollRequest>,
) -> Result<Response, RestError> {
    let started = Instant::now();
    if body.order_by.is_some_and(|o| !o.is_null()) {
        return Err(RestError::store(
            unsupported("scroll with `order_by`"),
            started,
        ));
    }
    if body.limit == Some(0) {
        return Err(RestError::validation(
            "scroll_request.limit: value 0 invalid, must be 1 or larger",
        ));
    }
    let filter = optional_filter(body.filter)?;
    let payload = with_payload(body.with_payload, WithPayload::All);
    let vector = with_vector(body.with_vector);
    let offset = body.offset.map(|o| o.0);
    let (points, next) = shared
        .store
        .scroll(
            &name,
            filter.as_ref(),
            offset.as_ref(),
            body.limit.unwrap_or(DEFAULT_LIMIT),
        )
        .map_err(|e| RestError::store(e, started))?;
    Ok(ok(
        started,
        ScrollResult {
            points: points
                .into_iter()
                .map(|p| record(p, &payload, vector))
                .collect(),
            next_page_offset: next.map(IdOut::from),
        },
    ))
}

#[derive(Deserialize)]
struct SearchRequest {
    vector: Value,
    filter: Option<Value>,
    limit: usize,
    offset: Option<usize>,
    with_payload: Option<WithPayloadInterface>,
    #[serde(alias = "with_vectors")]
    with_vector: Option<WithVector>,
    score_threshold: Option<f32>,
}

/// A search vector: `[..]` or `{"name": .., "vector": [..]}`.
fn search_vector(vector: Value) -> Result<Vec<f32>, StoreError> {
    match vector {
        Value::Object(mut named) if named.contains_key("name") => {
            let name = named.remove("name");
            match name.as_ref().and_then(Value::as_str) {
                Some("") => {}
                Some(name) => return Err(StoreError::VectorName(name.to_owned())),
                None => return Err(StoreError::BadInput("vector name must be a string".into())),
            }
            match named.remove("vector") {
                Some(Value::Object(_)) => Err(unsupported("sparse vectors")),
                Some(vector) => dense_vector(vector),
                None => Err(StoreError::BadInput("no vector given".into())),
            }
        }
        other => dense_vector(other),
    }
}

fn scored(
    hits: Vec<(Point, f32)>,
    with_payload: &WithPayload,
    with_vector: bool,
) -> Vec<ScoredPoint> {
    hits.into_iter()
        .map(|(point, score)| ScoredPoint {
            version: point.version,
            score,
            payload: with_payload.apply(&point.payload),
            vector: with_vector.then_some(point.vector),
            id: point.id.into(),
        })
        .collect()
}

async fn search_points(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Body(body): Body<SearchRequest>,
) -> Result<Response, RestError> {
    let started = Instant::now();
    let fail = |e| RestError::store(e, started);
    if body.limit == 0 {
        return Err(RestError::validation(
            "search_request.limit: value 0 invalid, must be 1 or larger",
        ));
    }
    let search = Search {
        vector: search_vector(body.vector).map_err(fail)?,
        filter: optional_filter(body.filter)?,
        limit: body.limit,
        offset: body.offset.unwrap_or(0),
        score_threshold: body.score_threshold,
    };
    let hits = shared.store.search(&name, &search).map_err(fail)?;
    let payload = with_payload(body.with_payload, WithPayload::Nothing);
    Ok(ok(
        started,
        scored(hits, &payload, with_vector(body.with_vector)),
    ))
}

#[derive(Deserialize)]
struct QueryRequest {
    prefetch: Option<Value>,
    query: Option<Value>,
    using: Option<String>,
    filter: Option<Value>,
    score_threshold: Option<f32>,
    limit: Option<usize>,
    offset: Option<usize>,
    #[serde(alias = "with_vectors")]
    with_vector: Option<WithVector>,
    with_payload: Option<WithPayloadInterface>,
    lookup_from: Option<Value>,
}

#[derive(Serialize)]
struct QueryResponse {
    points: Vec<ScoredPoint>,
}

/// The dense vector of a `query`: `[..]` or `{"nearest": [..]}`.
fn query_vector(query: Option<Value>) -> Result<Vec<f32>, StoreError> {
    match query {
        None | Some(Value::Null) => Err(unsupported("queries without `query` (ordering by id)")),
        Some(Value::Number(_) | Value::String(_)) => Err(unsupported("queries by point id")),
        Some(Value::Object(mut object)) => match object.remove("nearest") {
            Some(_) if object.get("mmr").is_some_and(|m| !m.is_null()) => {
                Err(unsupported("`nearest` queries with `mmr`"))
            }
            Some(Value::Number(_) | Value::String(_)) => Err(unsupported("queries by point id")),
            Some(Value::Object(_)) => Err(unsupported(
                "sparse and inference queries (only a dense `nearest` vector)",
            )),
            Some(nearest) => dense_vector(nearest),
            None if object.contains_key("indices") => Err(unsupported("sparse vectors")),
            None => Err(unsupported("query types other than `nearest`")),
        },
        Some(vector) => dense_vector(vector),
    }
}

async fn query_points(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Body(body): Body<QueryRequest>,
) -> Result<Response, RestError> {
    let started = Instant::now();
    let fail = |e| RestError::store(e, started);
    if body.limit == Some(0) {
        return Err(RestError::validation(
            "internal.limit: value 0 invalid, must be 1 or larger",
        ));
    }
    if body.prefetch.is_some_and(|p| !p.is_null()) {
        return Err(fail(unsupported("queries with `prefetch`")));
    }
    if body.lookup_from.is_some_and(|l| !l.is_null()) {
        return Err(fail(unsupported("queries with `lookup_from`")));
    }
    if let Some(using) = body.using.filter(|u| !u.is_empty()) {
        return Err(fail(StoreError::VectorName(using)));
    }
    let search = Search {
        vector: query_vector(body.query).map_err(fail)?,
        filter: optional_filter(body.filter)?,
        limit: body.limit.unwrap_or(DEFAULT_LIMIT),
        offset: body.offset.unwrap_or(0),
        score_threshold: body.score_threshold,
    };
    let hits = shared.store.search(&name, &search).map_err(fail)?;
    let payload = with_payload(body.with_payload, WithPayload::Nothing);
    Ok(ok(
        started,
        QueryResponse {
            points: scored(hits, &payload, with_vector(body.with_vector)),
        },
    ))
}

// ---- filters ----

fn optional_filter(filter: Option<Value>) -> Result<Option<Filter>, RestError> {
    match filter {
        None | Some(Value::Null) => Ok(None),
        Some(filter) => parse_filter(filter).map(Some),
    }
}

/// A filter in Qdrant's JSON form. Malformed filters are format errors (400), valid
/// conditions the fixture does not evaluate are 501s.
fn parse_filter(filter: Value) -> Result<Filter, RestError> {
    let Value::Object(object) = filter else {
        return Err(RestError::format(
            "invalid type: expected a filter object with `must`, `should`, `must_not` or `min_should`",
        ));
    };
    let mut parsed = Filter::default();
    for (key, value) in object {
        match key.as_str() {
            "must" => parsed.must = conditions(value)?,
            "should" => parsed.should = conditions(value)?,
            "must_not" => parsed.must_not = conditions(value)?,
            "min_should" => {
                if value.is_null() {
                    continue;
                }
                let min_count = value
                    .get("min_count")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| RestError::format("min_should needs an unsigned `min_count`"))?;
                let list = conditions(value.get("conditions").cloned().unwrap_or(Value::Null))?;
                parsed.min_should = Some((list, usize::try_from(min_count).unwrap_or(usize::MAX)));
            }
            other => {
                return Err(RestError::format(format!(
                    "unknown field `{other}`, expected one of `should`, `min_should`, `must`, `must_not`"
                )));
            }
        }
    }
    Ok(parsed)
}

/// One condition or a list of them (Qdrant accepts both), or null for none.
fn conditions(value: Value) -> Result<Vec<Condition>, RestError> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items.into_iter().map(condition).collect(),
        single => Ok(vec![condition(single)?]),
    }
}

fn not_evaluated(what: &str) -> RestError {
    RestError::store(unsupported(what), Instant::now())
}

fn key_of(value: &Value) -> Result<String, RestError> {
    value
        .get("key")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| RestError::format("condition needs a string `key`"))
}

fn condition(value: Value) -> Result<Condition, RestError> {
    let Value::Object(object) = &value else {
        return Err(RestError::format(
            "data did not match any variant of untagged enum Condition",
        ));
    };
    if object.contains_key("key") {
        return field_condition(&value);
    }
    if let Some(ids) = object.get("has_id") {
        let ids: Vec<ExtendedPointId> =
            serde_json::from_value(ids.clone()).map_err(RestError::format)?;
        return Ok(Condition::HasId(ids.into_iter().map(|id| id.0).collect()));
    }
    if let Some(inner) = object.get("is_empty") {
        return Ok(Condition::IsEmpty(key_of(inner)?));
    }
    if let Some(inner) = object.get("is_null") {
        return Ok(Condition::IsNull(key_of(inner)?));
    }
    if object.contains_key("nested") {
        return Err(not_evaluated("`nested` filter conditions"));
    }
    if object.contains_key("has_vector") {
        return Err(not_evaluated("`has_vector` filter conditions"));
    }
    if ["must", "should", "must_not", "min_should"]
        .iter()
        .any(|k| object.contains_key(*k))
    {
        return Ok(Condition::Filter(Box::new(parse_filter(value)?)));
    }
    Err(RestError::format(
        "data did not match any variant of untagged enum Condition",
    ))
}

fn field_condition(value: &Value) -> Result<Condition, RestError> {
    let key = key_of(value)?;
    for unsupported_key in [
        "geo_bounding_box",
        "geo_radius",
        "geo_polygon",
        "values_count",
    ] {
        if value.get(unsupported_key).is_some_and(|v| !v.is_null()) {
            return Err(not_evaluated(&format!(
                "`{unsupported_key}` filter conditions"
            )));
        }
    }
    let mut checks = Vec::new();
    if let Some(m) = value.get("match").filter(|m| !m.is_null()) {
        checks.push(FieldCheck::Match(parse_match(m)?));
    }
    if let Some(r) = value.get("range").filter(|r| !r.is_null()) {
        checks.push(FieldCheck::Range(parse_range(r)?));
    }
    for (name, make) in [
        ("is_empty", FieldCheck::IsEmpty as fn(bool) -> FieldCheck),
        ("is_null", FieldCheck::IsNull),
    ] {
        if let Some(flag) = value.get(name).filter(|v| !v.is_null()) {
            let flag = flag
                .as_bool()
                .ok_or_else(|| RestError::format(format!("`{name}` must be a boolean")))?;
            checks.push(make(flag));
        }
    }
    if checks.is_empty() {
        return Err(RestError::validation(format!(
            "field condition on `{key}` checks nothing: at least one of match, range, \
             geo_bounding_box, geo_radius, geo_polygon, values_count, is_empty or is_null"
        )));
    }
    Ok(Condition::Field { key, checks })
}

fn parse_match(value: &Value) -> Result<Match, RestError> {
    let bad = || RestError::format("data did not match any variant of untagged enum Match");
    if let Some(v) = value.get("value") {
        return match v {
            Value::String(s) => Ok(Match::Keyword(s.clone())),
            Value::Bool(b) => Ok(Match::Bool(*b)),
            Value::Number(n) => n.as_i64().map(Match::Integer).ok_or_else(bad),
            _ => Err(bad()),
        };
    }
    if let Some(text) = value.get("text") {
        return text
            .as_str()
            .map(|t| Match::Text(t.to_owned()))
            .ok_or_else(bad);
    }
    for (name, keywords, integers) in [
        (
            "any",
            Match::AnyKeywords as fn(Vec<String>) -> Match,
            Match::AnyIntegers as fn(Vec<i64>) -> Match,
        ),
        ("except", Match::ExceptKeywords, Match::ExceptIntegers),
    ] {
        if let Some(list) = value.get(name) {
            if let Ok(strings) = serde_json::from_value::<Vec<String>>(list.clone()) {
                return Ok(keywords(strings));
            }
            if let Ok(numbers) = serde_json::from_value::<Vec<i64>>(list.clone()) {
                return Ok(integers(numbers));
            }
            return Err(bad());
        }
    }
    if ["phrase", "text_any", "prefix"]
        .iter()
        .any(|k| value.get(*k).is_some())
    {
        return Err(not_evaluated("`phrase`, `text_any` and `prefix` matches"));
    }
    Err(bad())
}

fn parse_range(value: &Value) -> Result<Range, RestError> {
    let bound = |name: &str| -> Result<Option<f64>, RestError> {
        match value.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(Value::String(_)) => Err(not_evaluated("datetime range filter conditions")),
            Some(_) => Err(RestError::format(format!(
                "range bound `{name}` must be a number"
            ))),
        }
    };
    Ok(Range {
        lt: bound("lt")?,
        gt: bound("gt")?,
        gte: bound("gte")?,
        lte: bound("lte")?,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn filters_parse_from_qdrant_json() {
        let f = parse_filter(json!({
            "must": [
                {"key": "city", "match": {"value": "London"}},
                {"key": "price", "range": {"gte": 1, "lt": 10.5}},
                {"has_id": [1, "550e8400-e29b-41d4-a716-446655440000"]},
                {"is_empty": {"key": "tags"}},
                {"must_not": [{"key": "n", "match": {"any": [1, 2]}}]}
            ],
            "should": {"key": "color", "match": {"except": ["red"]}}
        }))
        .unwrap();
        assert_eq!(f.must.len(), 5);
        assert_eq!(f.should.len(), 1);
        assert!(matches!(&f.must[4], Condition::Filter(inner) if inner.must_not.len() == 1));

        let err = parse_filter(json!({"must": [{"key": "x", "geo_radius": {}}]})).unwrap_err();
        assert_eq!(err.code, StatusCode::NOT_IMPLEMENTED);
        let err = parse_filter(json!({"must": [{"nope": 1}]})).unwrap_err();
        assert_eq!(err.code, StatusCode::BAD_REQUEST);
        let err = parse_filter(json!({"bogus": []})).unwrap_err();
        assert!(
            err.message
                .starts_with("Format error in JSON body: unknown field `bogus`")
        );
    }

    #[test]
    fn vectors_and_queries() {
        assert_eq!(dense_vector(json!([1, 2.5])).unwrap(), vec![1.0, 2.5]);
        assert_eq!(dense_vector(json!({"": [1]})).unwrap(), vec![1.0]);
        assert_eq!(
            dense_vector(json!({"image": [1]})).unwrap_err(),
            StoreError::VectorName("image".into())
        );
        assert_eq!(
            query_vector(Some(json!({"nearest": [0.5]}))).unwrap(),
            vec![0.5]
        );
        assert!(matches!(
            query_vector(Some(json!(5))),
            Err(StoreError::Unsupported(_))
        ));
        assert_eq!(
            search_vector(json!({"name": "", "vector": [3]})).unwrap(),
            vec![3.0]
        );
    }

    #[test]
    fn collection_info_is_the_recorded_shape() {
        let text = collection_info_json(CollectionSummary {
            params: VectorParams {
                size: 4,
                distance: Distance::Cosine,
            },
            points_count: 0,
        });
        let recorded = r#"{"status":"green","optimizer_status":"ok","indexed_vectors_count":0,"points_count":0,"segments_count":2,"config":{"params":{"vectors":{"size":4,"distance":"Cosine"},"shard_number":1,"replication_factor":1,"write_consistency_factor":1,"on_disk_payload":true},"hnsw_config":{"m":16,"ef_construct":100,"full_scan_threshold":10000,"max_indexing_threads":0,"on_disk":false},"optimizer_config":{"deleted_threshold":0.2,"vacuum_min_vector_number":1000,"default_segment_number":0,"max_segment_size":null,"memmap_threshold":null,"indexing_threshold":10000,"flush_interval_sec":5,"max_optimization_threads":null,"prevent_unoptimized":null},"wal_config":{"wal_capacity_mb":32,"wal_segments_ahead":0,"wal_retain_closed":1},"quantization_config":null},"payload_schema":{},"update_queue":{"length":0}}"#;
        assert_eq!(text, recorded);
    }
}
