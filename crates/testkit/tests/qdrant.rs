//! The Qdrant fixture, driven as users drive Qdrant: the official `qdrant-client` crate over
//! gRPC and plain HTTP with reqwest, checked against Qdrant 1.18.3's documented and recorded
//! behaviour and against a brute-force nearest-neighbour computation done here. The replay of
//! the recorded exchange itself (`tests/reference/`) is `tests/qdrant_replay.rs`.
//!
//! Run with `cargo nextest run -p citadel-itest-testkit --features qdrant`.
#![cfg(feature = "qdrant")]

use std::collections::HashMap;

use citadel_itest_testkit::QdrantServer;
use citadel_itest_testkit::qdrant::QDRANT_VERSION;
use qdrant_client::qdrant::collections_client::CollectionsClient;
use qdrant_client::qdrant::{
    Condition, CountPointsBuilder, CreateCollectionBuilder, DeletePointsBuilder, Distance,
    FacetCountsBuilder, Filter, GetPointsBuilder, ListCollectionsRequest, PointStruct,
    PointsIdsList, QueryPointsBuilder, ScrollPointsBuilder, SearchPointsBuilder, UpdateStatus,
    UpsertPointsBuilder, VectorParamsBuilder, point_id::PointIdOptions,
};
use qdrant_client::{Payload, Qdrant, QdrantError};
use serde_json::{Value, json};

const DIM: usize = 64;
const POINTS: usize = 1000;
const KEY: &str = "fixture-test-key";

/// A small seeded generator (splitmix64), so the vectors are the same on every run.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn vector(&mut self) -> Vec<f32> {
        (0..DIM).map(|_| self.unit()).collect()
    }
}

fn dataset(seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng(seed);
    (0..POINTS).map(|_| rng.vector()).collect()
}

/// The true score of `point` for `query`, computed in f64: cosine similarity, dot product or
/// Euclidean distance.
fn true_score(distance: Distance, query: &[f32], point: &[f32]) -> f64 {
    let dot = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum::<f64>()
    };
    match distance {
        Distance::Cosine => {
            dot(query, point) / (dot(query, query).sqrt() * dot(point, point).sqrt())
        }
        Distance::Dot => dot(query, point),
        Distance::Euclid => query
            .iter()
            .zip(point)
            .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
            .sum::<f64>()
            .sqrt(),
        other => unreachable!("not used here: {other:?}"),
    }
}

/// Asserts that `found` (point id, score) are the true `k` nearest neighbours of `query`, best
/// first, with correct scores. A rank may hold another id only if its true score ties (to
/// 1e-5) with the true score at that rank, so f32 rounding cannot make the test flaky.
fn assert_true_neighbours(
    distance: Distance,
    points: &[Vec<f32>],
    query: &[f32],
    found: &[(u64, f32)],
    k: usize,
) {
    let mut truth: Vec<(usize, f64)> = points
        .iter()
        .enumerate()
        .map(|(i, p)| (i, true_score(distance, query, p)))
        .collect();
    match distance {
        Distance::Euclid => truth.sort_by(|a, b| a.1.total_cmp(&b.1)),
        _ => truth.sort_by(|a, b| b.1.total_cmp(&a.1)),
    }
    assert_eq!(found.len(), k, "wanted {k} hits, got {found:?}");
    for (rank, (id, score)) in found.iter().enumerate() {
        let own = true_score(distance, query, &points[*id as usize]);
        assert!(
            (own - truth[rank].1).abs() < 1e-5,
            "{distance:?} rank {rank}: got point {id} (true score {own}), the true neighbour is \
             point {} (score {})",
            truth[rank].0,
            truth[rank].1
        );
        assert!(
            (f64::from(*score) - own).abs() < 1e-4,
            "{distance:?} rank {rank}: reported score {score}, true score {own}"
        );
    }
}

fn grpc_client(server: &QdrantServer, key: Option<&str>) -> Qdrant {
    let mut config = Qdrant::from_url(&server.grpc_url());
    if let Some(key) = key {
        config = config.api_key(key);
    }
    config.build().expect("build the official client")
}

fn status_of(result: Result<impl std::fmt::Debug, QdrantError>) -> tonic::Status {
    match result {
        Err(QdrantError::ResponseError { status }) => status,
        other => panic!("expected a gRPC error status, got {other:?}"),
    }
}

fn numeric_id(id: Option<qdrant_client::qdrant::PointId>) -> u64 {
    match id.and_then(|id| id.point_id_options) {
        Some(PointIdOptions::Num(n)) => n,
        other => panic!("expected a numeric id, got {other:?}"),
    }
}

fn points_for(vectors: &[Vec<f32>]) -> Vec<PointStruct> {
    vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let mut payload = Payload::new();
            payload.insert("i", i as i64);
            payload.insert("parity", if i % 2 == 0 { "even" } else { "odd" });
            PointStruct::new(i as u64, v.clone(), payload)
        })
        .collect()
}

#[tokio::test]
async fn official_client_finds_the_true_nearest_neighbours_for_every_distance() {
    let server = QdrantServer::builder().api_key(KEY).start().await.unwrap();
    let client = grpc_client(&server, Some(KEY));
    assert!(
        !format!("{server:?}").contains(KEY),
        "the key stays out of Debug"
    );

    let health = client.health_check().await.unwrap();
    assert_eq!(health.title, "qdrant - vector search engine");
    assert_eq!(health.version, QDRANT_VERSION);

    let mut queries = Rng(99);
    for (seed, distance) in [
        (1, Distance::Cosine),
        (2, Distance::Dot),
        (3, Distance::Euclid),
    ] {
        let name = format!("citadel_itest_{distance:?}").to_lowercase();
        let vectors = dataset(seed);
        let created = client
            .create_collection(
                CreateCollectionBuilder::new(&name)
                    .vectors_config(VectorParamsBuilder::new(DIM as u64, distance)),
            )
            .await
            .unwrap();
        assert!(created.result);

        let upserted = client
            .upsert_points(UpsertPointsBuilder::new(&name, points_for(&vectors)).wait(true))
            .await
            .unwrap();
        let update = upserted.result.unwrap();
        assert_eq!(update.status, UpdateStatus::Completed as i32);
        assert_eq!(update.operation_id, Some(1));

        let count = client
            .count(CountPointsBuilder::new(&name).exact(true))
            .await
            .unwrap();
        assert_eq!(count.result.unwrap().count, POINTS as u64);

        let info = client.collection_info(&name).await.unwrap().result.unwrap();
        assert_eq!(info.points_count, Some(POINTS as u64));

        for _ in 0..5 {
            let query = queries.vector();
            let hits = client
                .search_points(
                    SearchPointsBuilder::new(&name, query.clone(), 10).with_payload(true),
                )
                .await
                .unwrap()
                .result;
            let found: Vec<(u64, f32)> = hits
                .iter()
                .map(|h| (numeric_id(h.id.clone()), h.score))
                .collect();
            assert_true_neighbours(distance, &vectors, &query, &found, 10);
            for hit in &hits {
                let i = numeric_id(hit.id.clone());
                assert_eq!(hit.payload["i"], (i as i64).into(), "payload of point {i}");
                assert_eq!(hit.version, 1);
            }

            let queried = client
                .query(
                    QueryPointsBuilder::new(&name)
                        .query(query.clone())
                        .limit(7)
                        .with_payload(false),
                )
                .await
                .unwrap()
                .result;
            let found: Vec<(u64, f32)> = queried
                .iter()
                .map(|h| (numeric_id(h.id.clone()), h.score))
                .collect();
            assert_true_neighbours(distance, &vectors, &query, &found, 7);
            assert!(queried.iter().all(|h| h.payload.is_empty()));
        }

        // A filter and an offset: the 5 best even points, then the same skipping 2.
        let query = queries.vector();
        let even = Filter::must([Condition::matches("parity", "even".to_string())]);
        let evens: Vec<Vec<f32>> = vectors.iter().step_by(2).cloned().collect();
        let as_even_index = |hits: Vec<qdrant_client::qdrant::ScoredPoint>| -> Vec<(u64, f32)> {
            hits.iter()
                .map(|h| (numeric_id(h.id.clone()) / 2, h.score))
                .collect()
        };
        let best = as_even_index(
            client
                .search_points(
                    SearchPointsBuilder::new(&name, query.clone(), 5).filter(even.clone()),
                )
                .await
                .unwrap()
                .result,
        );
        assert_true_neighbours(distance, &evens, &query, &best, 5);
        let skipped = as_even_index(
            client
                .search_points(
                    SearchPointsBuilder::new(&name, query.clone(), 3)
                        .filter(even)
                        .offset(2),
                )
                .await
                .unwrap()
                .result,
        );
        assert_eq!(&best[2..], &skipped[..], "offset 2 skips the two best");

        let deleted = client
            .delete_points(
                DeletePointsBuilder::new(&name)
                    .points(PointsIdsList {
                        ids: vec![0u64.into(), 1u64.into(), 2u64.into()],
                    })
                    .wait(true),
            )
            .await
            .unwrap();
        assert_eq!(deleted.result.unwrap().operation_id, Some(2));
        let count = client.count(CountPointsBuilder::new(&name)).await.unwrap();
        assert_eq!(count.result.unwrap().count, POINTS as u64 - 3);
        let got = client
            .get_points(
                GetPointsBuilder::new(&name, vec![2u64.into(), 3u64.into()]).with_vectors(true),
            )
            .await
            .unwrap()
            .result;
        assert_eq!(got.len(), 1, "point 2 is gone, 3 is there");
        assert_eq!(got[0].payload["parity"], "odd".into());
        assert!(got[0].vectors.is_some());

        assert!(client.collection_exists(&name).await.unwrap());
        let listed = client.list_collections().await.unwrap();
        assert!(listed.collections.iter().any(|c| c.name == name));
        assert!(client.delete_collection(&name).await.unwrap().result);
        assert!(!client.collection_exists(&name).await.unwrap());
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn grpc_errors_carry_qdrant_codes_and_messages() {
    let server = QdrantServer::start().await.unwrap();
    let client = grpc_client(&server, None);
    client
        .create_collection(
            CreateCollectionBuilder::new("g")
                .vectors_config(VectorParamsBuilder::new(4, Distance::Cosine)),
        )
        .await
        .unwrap();

    let duplicate = status_of(
        client
            .create_collection(
                CreateCollectionBuilder::new("g")
                    .vectors_config(VectorParamsBuilder::new(4, Distance::Cosine)),
            )
            .await,
    );
    assert_eq!(duplicate.code(), tonic::Code::AlreadyExists);
    assert_eq!(
        duplicate.message(),
        "Wrong input: Collection `g` already exists!"
    );

    let missing = status_of(
        client
            .query(QueryPointsBuilder::new("nope").query(vec![1.0, 0.0, 0.0, 0.0]))
            .await,
    );
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert_eq!(
        missing.message(),
        "Not found: Collection `nope` doesn't exist!"
    );

    let wrong_dim = status_of(
        client
            .upsert_points(UpsertPointsBuilder::new(
                "g",
                vec![PointStruct::new(1, vec![1.0, 2.0, 3.0], Payload::new())],
            ))
            .await,
    );
    assert_eq!(wrong_dim.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        wrong_dim.message(),
        "Wrong input: Vector dimension error: expected dim: 4, got 3"
    );

    let wrong_query_dim = status_of(
        client
            .search_points(SearchPointsBuilder::new("g", vec![1.0; 5], 3))
            .await,
    );
    assert_eq!(wrong_query_dim.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        wrong_query_dim.message(),
        "Wrong input: Vector dimension error: expected dim: 4, got 5"
    );

    let unsupported = status_of(client.facet(FacetCountsBuilder::new("g", "k")).await);
    assert_eq!(unsupported.code(), tonic::Code::Unimplemented);
    assert!(
        unsupported.message().contains("/qdrant.Points/Facet"),
        "{}",
        unsupported.message()
    );

    // Scroll works and pages in id order.
    client
        .upsert_points(
            UpsertPointsBuilder::new(
                "g",
                (1..=3u64)
                    .map(|i| PointStruct::new(i, vec![i as f32, 1.0, 0.0, 0.0], Payload::new()))
                    .collect::<Vec<_>>(),
            )
            .wait(true),
        )
        .await
        .unwrap();
    let page = client
        .scroll(ScrollPointsBuilder::new("g").limit(2))
        .await
        .unwrap();
    let ids: Vec<u64> = page
        .result
        .iter()
        .map(|p| numeric_id(p.id.clone()))
        .collect();
    assert_eq!(ids, [1, 2]);
    assert_eq!(numeric_id(page.next_page_offset), 3);
}

#[tokio::test]
async fn grpc_api_key_is_enforced_except_on_the_health_check() {
    let server = QdrantServer::builder().api_key(KEY).start().await.unwrap();

    for (key, message) in [
        (Some("wrong"), "Invalid API key or JWT"),
        (
            None,
            "Must provide an API key or an Authorization bearer token",
        ),
    ] {
        let client = grpc_client(&server, key);
        let refused = status_of(client.list_collections().await);
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "key {key:?}");
        assert_eq!(refused.message(), message, "key {key:?}");
        // The health check is open, as in Qdrant.
        assert_eq!(client.health_check().await.unwrap().version, QDRANT_VERSION);
    }
    let client = grpc_client(&server, Some(KEY));
    assert!(
        client
            .list_collections()
            .await
            .unwrap()
            .collections
            .is_empty()
    );

    // `authorization: Bearer KEY` is accepted too (the generated tonic client, by hand).
    let mut raw = CollectionsClient::connect(server.grpc_url()).await.unwrap();
    let mut request = tonic::Request::new(ListCollectionsRequest {});
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {KEY}").parse().unwrap());
    raw.list(request).await.unwrap();
    let refused = raw
        .list(tonic::Request::new(ListCollectionsRequest {}))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
}

/// A REST exchange: status, content type and JSON (or text) body.
struct Answer {
    status: u16,
    content_type: Option<String>,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// The `result` of an ok envelope, after checking the envelope's exact keys.
    fn result(&self) -> Value {
        assert_eq!(self.status, 200, "{}", self.text);
        let body = self.json();
        let object = body.as_object().unwrap();
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        assert_eq!(keys, ["result", "status", "time"], "{}", self.text);
        assert_eq!(body["status"], "ok");
        assert!(body["time"].as_f64().is_some_and(|t| t >= 0.0));
        body["result"].clone()
    }

    /// The message of an error envelope `{"status":{"error":..},"time":..}` with this status.
    fn error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.content_type.as_deref(), Some("application/json"));
        let body = self.json();
        let keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["status", "time"], "{}", self.text);
        body["status"]["error"].as_str().unwrap().to_owned()
    }
}

struct Rest {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Rest {
    fn new(server: &QdrantServer) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: server.http_url(),
            key: server.api_key().map(str::to_owned),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let request = match &self.key {
            Some(key) => request.header("api-key", key),
            None => request,
        };
        let response = request.send().await.unwrap();
        Answer {
            status: response.status().as_u16(),
            content_type: response
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned()),
            text: response.text().await.unwrap(),
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    async fn delete(&self, path: &str) -> Answer {
        self.send(self.http.delete(format!("{}{path}", self.base)))
            .await
    }

    async fn put(&self, path: &str, body: Value) -> Answer {
        self.send(self.http.put(format!("{}{path}", self.base)).json(&body))
            .await
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(self.http.post(format!("{}{path}", self.base)).json(&body))
            .await
    }

    async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> Answer {
        self.send(
            self.http
                .request(method, format!("{}{path}", self.base))
                .header("content-type", content_type)
                .body(body.to_owned()),
        )
        .await
    }
}

fn hits(result: &Value) -> Vec<(u64, f32)> {
    result
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["id"].as_u64().unwrap(),
                h["score"].as_f64().unwrap() as f32,
            )
        })
        .collect()
}

#[tokio::test]
async fn rest_flow_has_qdrant_shapes_and_true_neighbours() {
    let server = QdrantServer::start().await.unwrap();
    let rest = Rest::new(&server);

    let root = rest.get("/").await;
    assert_eq!(root.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        root.text,
        r#"{"title":"qdrant - vector search engine","version":"1.18.3"}"#
    );
    assert_eq!(
        rest.get("/collections").await.result(),
        json!({"collections": []})
    );

    // The recorded exchange: create, duplicate, info, exists, upsert, wrong dimension, query,
    // search, count, unknown collection, delete.
    assert_eq!(
        rest.put(
            "/collections/w",
            json!({"vectors": {"size": 4, "distance": "Cosine"}})
        )
        .await
        .result(),
        json!(true)
    );
    let duplicate = rest
        .put(
            "/collections/w",
            json!({"vectors": {"size": 4, "distance": "Cosine"}}),
        )
        .await;
    assert_eq!(
        duplicate.error(409),
        "Wrong input: Collection `w` already exists!"
    );
    let info = rest.get("/collections/w").await.result();
    assert_eq!(
        info["config"]["params"]["vectors"],
        json!({"size": 4, "distance": "Cosine"})
    );
    assert_eq!(info["points_count"], 0);
    assert_eq!(info["status"], "green");
    assert_eq!(
        rest.get("/collections/w/exists").await.result(),
        json!({"exists": true})
    );
    let upserted = rest
        .put(
            "/collections/w/points?wait=true",
            json!({"points": [
                {"id": 1, "vector": [1.0, 0.0, 0.0, 0.0], "payload": {"a": 1}},
                {"id": 2, "vector": [0.0, 1.0, 0.0, 0.0]}
            ]}),
        )
        .await
        .result();
    assert_eq!(upserted, json!({"operation_id": 1, "status": "completed"}));
    let wrong_dim = rest
        .put(
            "/collections/w/points",
            json!({"points": [{"id": 3, "vector": [1, 2, 3]}]}),
        )
        .await;
    assert_eq!(
        wrong_dim.error(400),
        "Wrong input: Vector dimension error: expected dim: 4, got 3"
    );
    let query = rest
        .post(
            "/collections/w/points/query",
            json!({"query": [1.0, 0.1, 0.0, 0.0], "with_payload": true}),
        )
        .await;
    // Byte for byte as recorded, up to the time.
    assert!(
        query.text.starts_with(
            r#"{"result":{"points":[{"id":1,"version":1,"score":0.99503714,"payload":{"a":1}},{"id":2,"version":1,"score":0.09950372,"payload":{}}]},"status":"ok","time":"#
        ),
        "{}",
        query.text
    );
    let search = rest
        .post(
            "/collections/w/points/search",
            json!({"vector": [1.0, 0.1, 0.0, 0.0], "limit": 10}),
        )
        .await;
    assert!(
        search.text.starts_with(
            r#"{"result":[{"id":1,"version":1,"score":0.99503714},{"id":2,"version":1,"score":0.09950372}],"status":"ok","time":"#
        ),
        "{}",
        search.text
    );
    assert_eq!(
        rest.post("/collections/w/points/count", json!({}))
            .await
            .result(),
        json!({"count": 2})
    );
    assert_eq!(
        rest.get("/collections/nope").await.error(404),
        "Not found: Collection `nope` doesn't exist!"
    );
    assert_eq!(
        rest.post(
            "/collections/nope/points/query",
            json!({"query": [1, 0, 0, 0]})
        )
        .await
        .error(404),
        "Not found: Collection `nope` doesn't exist!"
    );
    let malformed = rest
        .raw(
            reqwest::Method::PUT,
            "/collections/bad",
            "application/json",
            r#"{"vectors":"#,
        )
        .await;
    assert_eq!(
        malformed.text,
        r#"{"status":{"error":"Format error in JSON body: EOF while parsing a value at line 1 column 11"},"time":0.0}"#
    );
    assert_eq!(malformed.status, 400);
    assert_eq!(rest.delete("/collections/w").await.result(), json!(true));
    assert_eq!(rest.delete("/collections/w").await.result(), json!(false));

    // 1,000 points per distance, batch and list forms, checked against brute force.
    let mut queries = Rng(7);
    for (seed, distance, name) in [
        (11, Distance::Cosine, "Cosine"),
        (12, Distance::Dot, "Dot"),
        (13, Distance::Euclid, "Euclid"),
    ] {
        let path = format!("/collections/rest_{name}");
        let vectors = dataset(seed);
        rest.put(&path, json!({"vectors": {"size": DIM, "distance": name}}))
            .await
            .result();
        let (first, second) = vectors.split_at(POINTS / 2);
        let listed: Vec<Value> = first
            .iter()
            .enumerate()
            .map(|(i, v)| json!({"id": i, "vector": v, "payload": {"i": i}}))
            .collect();
        let op = rest
            .put(
                &format!("{path}/points?wait=true"),
                json!({"points": listed}),
            )
            .await
            .result();
        assert_eq!(op, json!({"operation_id": 1, "status": "completed"}));
        let ids: Vec<usize> = (POINTS / 2..POINTS).collect();
        let payloads: Vec<Value> = ids.iter().map(|i| json!({"i": i})).collect();
        let op = rest
            .put(
                &format!("{path}/points"),
                json!({"batch": {"ids": ids, "vectors": second, "payloads": payloads}}),
            )
            .await
            .result();
        assert_eq!(op, json!({"operation_id": 2, "status": "acknowledged"}));
        assert_eq!(
            rest.post(&format!("{path}/points/count"), json!({"exact": true}))
                .await
                .result(),
            json!({"count": POINTS})
        );

        for _ in 0..3 {
            let query = queries.vector();
            let result = rest
                .post(
                    &format!("{path}/points/search"),
                    json!({"vector": query, "limit": 10, "with_payload": true}),
                )
                .await
                .result();
            assert_true_neighbours(distance, &vectors, &query, &hits(&result), 10);
            for hit in result.as_array().unwrap() {
                let mut keys: Vec<&str> = hit
                    .as_object()
                    .unwrap()
                    .keys()
                    .map(String::as_str)
                    .collect();
                keys.sort_unstable();
                assert_eq!(keys, ["id", "payload", "score", "version"]);
                assert_eq!(hit["payload"]["i"], hit["id"]);
            }
            let result = rest
                .post(
                    &format!("{path}/points/query"),
                    json!({"query": {"nearest": query}, "limit": 5, "with_vector": true}),
                )
                .await
                .result();
            let points = &result["points"];
            assert_true_neighbours(distance, &vectors, &query, &hits(points), 5);
            let first = &points[0];
            assert!(
                first.get("payload").is_none(),
                "payload only when asked: {first}"
            );
            assert_eq!(first["vector"].as_array().unwrap().len(), DIM);
        }

        let records = rest
            .post(&format!("{path}/points"), json!({"ids": [5, 999, 123456]}))
            .await
            .result();
        assert_eq!(
            records,
            json!([{"id": 5, "payload": {"i": 5}}, {"id": 999, "payload": {"i": 999}}])
        );
        let deleted = rest
            .post(
                &format!("{path}/points/delete?wait=true"),
                json!({"filter": {"must": [{"key": "i", "range": {"lt": 100}}]}}),
            )
            .await
            .result();
        assert_eq!(deleted, json!({"operation_id": 3, "status": "completed"}));
        rest.post(
            &format!("{path}/points/delete"),
            json!({"points": [100, 101]}),
        )
        .await
        .result();
        assert_eq!(
            rest.post(&format!("{path}/points/count"), json!({}))
                .await
                .result(),
            json!({"count": POINTS - 102})
        );
        assert_eq!(rest.delete(&path).await.result(), json!(true));
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn rest_bad_requests_get_qdrant_errors_and_never_break_the_server() {
    let server = QdrantServer::builder()
        .max_request_size(64 * 1024)
        .start()
        .await
        .unwrap();
    let rest = Rest::new(&server);
    rest.put(
        "/collections/b",
        json!({"vectors": {"size": 2, "distance": "Dot"}}),
    )
    .await
    .result();

    let cases: Vec<(Answer, u16, &str)> = vec![
        (
            rest.raw(
                reqwest::Method::POST,
                "/collections/b/points/search",
                "application/json",
                "{",
            )
            .await,
            400,
            "Format error in JSON body: EOF while parsing an object at line 1 column 1",
        ),
        (
            rest.post("/collections/b/points/search", json!({"vector": [1, 2]}))
                .await,
            400,
            "Format error in JSON body: missing field `limit` at line 1 column 16",
        ),
        (
            rest.post(
                "/collections/b/points/search",
                json!({"vector": "x", "limit": 1}),
            )
            .await,
            400,
            "Wrong input: vector must be an array of numbers",
        ),
        (
            rest.put(
                "/collections/c",
                json!({"vectors": {"size": 2, "distance": "Cosin"}}),
            )
            .await,
            400,
            "Format error in JSON body: data did not match any variant of untagged enum VectorsConfig at line 1 column 41",
        ),
        (
            rest.post(
                "/collections/b/points/query",
                json!({"query": [1, 2], "limit": 0}),
            )
            .await,
            422,
            "Validation error in JSON body: [internal.limit: value 0 invalid, must be 1 or larger]",
        ),
        (
            rest.post(
                "/collections/b/points/query",
                json!({"query": {"fusion": "rrf"}}),
            )
            .await,
            501,
            "Not implemented by the Qdrant fixture of citadel-itest: query types other than `nearest`",
        ),
        (
            rest.post(
                "/collections/b/points/search",
                json!({"vector": {"name": "image", "vector": [1, 2]}, "limit": 1}),
            )
            .await,
            400,
            "Wrong input: Not existing vector name error: image",
        ),
    ];
    for (answer, status, message) in cases {
        assert_eq!(answer.error(status), message);
    }

    let huge = format!(
        r#"{{"points":[{{"id":1,"vector":[{}]}}]}}"#,
        vec!["0.5"; 40_000].join(",")
    );
    let too_large = rest
        .raw(
            reqwest::Method::PUT,
            "/collections/b/points",
            "application/json",
            &huge,
        )
        .await;
    assert_eq!(
        too_large.error(400),
        format!(
            "JSON payload ({} bytes) is larger than allowed (limit: 65536 bytes).",
            huge.len()
        )
    );

    // Like Qdrant, any content type is read as JSON (curl's `-d` sends a form type).
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let answer = rest
            .raw(
                reqwest::Method::POST,
                "/collections/b/points/count",
                content_type,
                "{}",
            )
            .await;
        assert_eq!(answer.result(), json!({"count": 0}), "{content_type}");
    }

    let unknown = rest.get("/no/such/route").await;
    assert_eq!((unknown.status, unknown.text.as_str()), (404, ""));
    let wrong_method = rest.get("/collections/b/points/search").await;
    assert_eq!(wrong_method.status, 404);

    // Still serving.
    assert_eq!(rest.get("/healthz").await.text, "healthz check passed");
    assert_eq!(
        rest.post("/collections/b/points/count", json!({}))
            .await
            .result(),
        json!({"count": 0})
    );
}

#[tokio::test]
async fn rest_api_key_is_enforced_except_on_health_endpoints() {
    let server = QdrantServer::builder().api_key(KEY).start().await.unwrap();
    let anonymous = Rest {
        http: reqwest::Client::new(),
        base: server.http_url(),
        key: None,
    };
    for (path, text) in [
        ("/healthz", "healthz check passed"),
        ("/readyz", "all shards are ready"),
        ("/livez", "healthz check passed"),
    ] {
        let answer = anonymous.get(path).await;
        assert_eq!(answer.status, 200, "{path}");
        assert_eq!(
            answer.content_type.as_deref(),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(answer.text, text);
    }
    assert_eq!(anonymous.get("/").await.json()["version"], QDRANT_VERSION);

    for path in ["/collections", "/metrics", "/collections/x/points/search"] {
        let refused = anonymous.get(path).await;
        assert_eq!(refused.status, 401, "{path}");
        assert_eq!(refused.content_type, None);
        assert_eq!(
            refused.text,
            "Must provide an API key or an Authorization bearer token"
        );
    }
    let wrong = Rest {
        key: Some("wrong".into()),
        ..Rest::new(&server)
    };
    let refused = wrong.get("/collections").await;
    assert_eq!(
        (refused.status, refused.text.as_str()),
        (401, "Invalid API key or JWT")
    );

    let keyed = Rest::new(&server);
    assert_eq!(
        keyed.get("/collections").await.result(),
        json!({"collections": []})
    );
    let bearer = anonymous
        .send(
            anonymous
                .http
                .get(format!("{}/collections", anonymous.base))
                .bearer_auth(KEY),
        )
        .await;
    assert_eq!(bearer.result(), json!({"collections": []}));
}

/// A `/metrics` scrape: the raw text, and its samples as parsed by `prometheus-parse` (keyed
/// `name{label=value,...}`, labels sorted).
async fn scrape(rest: &Rest) -> (String, HashMap<String, f64>) {
    let answer = rest.get("/metrics").await;
    assert_eq!(answer.status, 200);
    let lines = answer.text.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("valid exposition text");
    let samples = parsed
        .samples
        .iter()
        .map(|s| {
            let mut labels: Vec<String> =
                s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            };
            (format!("{}{{{}}}", s.metric, labels.join(",")), value)
        })
        .collect();
    (answer.text, samples)
}

/// The value of the sample line `name{labels}` in exposition text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_count_every_request() {
    let server = QdrantServer::start().await.unwrap();
    let rest = Rest::new(&server);

    let (text, before) = scrape(&rest).await;
    assert_eq!(before["app_info{name=qdrant,version=1.18.3}"], 1.0);
    assert_eq!(before["app_status_recovery_mode{}"], 0.0);
    assert_eq!(before["collections_total{}"], 0.0);
    assert!(
        !text.contains("rest_responses_total"),
        "no requests counted yet:\n{text}"
    );

    rest.put(
        "/collections/m",
        json!({"vectors": {"size": 2, "distance": "Euclid"}}),
    )
    .await
    .result();
    rest.put(
        "/collections/m/points?wait=true",
        json!({"points": [{"id": 1, "vector": [0, 1]}]}),
    )
    .await
    .result();
    for _ in 0..3 {
        rest.post(
            "/collections/m/points/search",
            json!({"vector": [0, 0], "limit": 1}),
        )
        .await
        .result();
    }
    rest.get("/collections/none").await.error(404);
    let client = grpc_client(&server, None);
    client.list_collections().await.unwrap();
    client.list_collections().await.unwrap();
    let _ = client.collection_info("none").await.unwrap_err();

    let (text, after) = scrape(&rest).await;
    assert_eq!(after["collections_total{}"], 1.0);
    assert_eq!(after["collections_vector_total{}"], 1.0);
    assert!(!text.contains("_fail_total"), "{text}");
    // Like Qdrant 1.18.3: gRPC series only for the points service, REST series only for the
    // points routes, labelled with the route template; collection routes and /metrics itself
    // are not counted.
    assert!(!text.contains("/qdrant.Collections/"), "{text}");
    assert!(!text.contains("endpoint=\"/metrics\""), "{text}");
    assert!(
        !text.contains("endpoint=\"/collections/{collection_name}\""),
        "{text}"
    );
    let _ = client
        .query(qdrant_client::qdrant::QueryPointsBuilder::new("none").query(vec![0.0, 0.0]))
        .await
        .unwrap_err();
    let (text, _) = scrape(&rest).await;
    // prometheus-parse 0.2 drops sample lines with `}` inside a label value, so these are read
    // from the text.
    let search =
        r#"method="POST",endpoint="/collections/{collection_name}/points/search",status="200""#;
    for (series, want) in [
        (format!("rest_responses_total{{{search}}}"), 3.0),
        (
            r#"rest_responses_total{method="PUT",endpoint="/collections/{collection_name}/points",status="200"}"#.to_owned(),
            1.0,
        ),
        (format!("rest_responses_duration_seconds_count{{{search}}}"), 3.0),
        (format!("rest_responses_duration_seconds_bucket{{{search},le=\"+Inf\"}}"), 3.0),
        (
            r#"grpc_responses_total{endpoint="/qdrant.Points/Query",status="5"}"#.to_owned(),
            1.0,
        ),
        (
            r#"grpc_responses_duration_seconds_count{endpoint="/qdrant.Points/Query",status="5"}"#.to_owned(),
            1.0,
        ),
    ] {
        assert_eq!(sample(&text, &series), Some(want), "{series} in\n{text}");
    }
    assert!(
        sample(
            &text,
            &format!("rest_responses_avg_duration_seconds{{{search}}}")
        )
        .is_some_and(|v| v > 0.0)
    );
}

#[tokio::test]
async fn configured_ports_and_version_and_stop_closes_both_ports() {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (http_port, grpc_port) = (free(), free());
    let server = QdrantServer::builder()
        .http_port(http_port)
        .grpc_port(grpc_port)
        .version("1.20.0")
        .start()
        .await
        .unwrap();
    assert_eq!(server.http_port(), http_port);
    assert_eq!(server.grpc_port(), grpc_port);
    assert_eq!(server.http_url(), format!("http://127.0.0.1:{http_port}"));
    assert_eq!(server.grpc_url(), format!("http://127.0.0.1:{grpc_port}"));
    assert!(server.http_addr().ip().is_loopback() && server.grpc_addr().ip().is_loopback());
    let client = grpc_client(&server, None);
    assert_eq!(client.health_check().await.unwrap().version, "1.20.0");

    // A port in use is a clear error.
    let taken = QdrantServer::builder()
        .http_port(http_port)
        .start()
        .await
        .unwrap_err();
    assert!(
        taken
            .to_string()
            .contains(&format!("bind 127.0.0.1:{http_port}")),
        "{taken}"
    );

    server.stop().await.unwrap();
    for port in [http_port, grpc_port] {
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err(),
            "port {port} still open"
        );
    }

    // Dropping the handle stops the server as well.
    let dropped = QdrantServer::start().await.unwrap();
    let port = dropped.http_port();
    drop(dropped);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "port {port} still open after drop"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
