//! Flows against real services: testkit PostgreSQL, a model server fixture logging its
//! requests there, and the Qdrant fixture. The flows reach the model server directly (it is
//! the "gateway" here); nginx adds nothing these tests look at.

use std::time::Duration;

use citadel_itest_core::IntegrationTester;
use citadel_itest_core::config::Secret;
use citadel_itest_core::{ErrorKind, Outcome, Status, Suite, run_one};
use citadel_itest_cross_service::flow::{
    Capture, Flow, FlowPostgres, FlowQdrant, FlowsConfig, HttpStep, ModelToDatabaseConfig,
    ModelToVectorConfig, QdrantStep, SqlExpect, SqlStep,
};
use citadel_itest_cross_service::{
    CrossServiceConfig, CrossServiceTester, FlowCheck, GatewayConfig, ModelConfig, Settings,
};
use citadel_itest_testkit::{ModelServer, Postgres, QdrantServer};
use serde_json::json;
use tokio::time::Instant;

const QDRANT_KEY: &str = "flow-test-qdrant-key";

struct Stack {
    pg: Postgres,
    model: ModelServer,
    qdrant: QdrantServer,
}

impl Stack {
    async fn start() -> Stack {
        let pg = Postgres::start().await.expect("start postgres");
        let model = ModelServer::builder()
            .backend_id("model-a")
            .models(["llama-3-8b", "text-embedding-small"])
            .ttft(Duration::from_millis(5))
            .itl(Duration::from_millis(1))
            .database_url(pg.dsn())
            .start()
            .await
            .expect("start model server");
        let qdrant = QdrantServer::builder()
            .api_key(QDRANT_KEY)
            .start()
            .await
            .expect("start qdrant fixture");
        Stack { pg, model, qdrant }
    }

    fn gateway(&self) -> GatewayConfig {
        GatewayConfig::new(self.model.base_url(), ["llama-3-8b"])
            .model(ModelConfig::embeddings("text-embedding-small"))
            .timeout(Duration::from_secs(20))
    }

    fn flows(&self) -> FlowsConfig {
        FlowsConfig::new()
            .postgres(FlowPostgres::dsn(Secret::inline(self.pg.dsn())))
            .qdrant(FlowQdrant::new(self.qdrant.http_url()).api_key(Secret::inline(QDRANT_KEY)))
    }

    fn check(&self, flow: Flow, flows: &FlowsConfig) -> FlowCheck {
        FlowCheck::new(flow, &self.gateway(), flows, &Settings::default())
    }

    /// Names of the collections the Qdrant fixture holds.
    async fn collections(&self) -> Vec<String> {
        let body: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/collections", self.qdrant.http_url()))
            .header("api-key", QDRANT_KEY)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("list collections")
            .json()
            .await
            .expect("collections JSON");
        body["result"]["collections"]
            .as_array()
            .expect("collection list")
            .iter()
            .map(|c| c["name"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

fn message(o: &Outcome) -> String {
    o.message().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_built_in_flows_pass_on_healthy_services() {
    let stack = Stack::start().await;
    let flows = stack
        .flows()
        .model_to_vector(ModelToVectorConfig::new("text-embedding-small", 384))
        .model_to_database(ModelToDatabaseConfig::default());
    let tester = CrossServiceTester::with_settings(
        CrossServiceConfig::new(stack.gateway()).flows(flows),
        Settings::default(),
    );
    let checks: Vec<_> = tester
        .checks()
        .into_iter()
        .filter(|c| c.id().as_str().starts_with("cross_service.flows."))
        .collect();
    let ids: Vec<&str> = checks.iter().map(|c| c.id().as_str()).collect();
    assert_eq!(
        ids,
        [
            "cross_service.flows.model_to_vector",
            "cross_service.flows.model_to_database"
        ]
    );
    for check in &checks {
        let r = run_one(check.as_ref()).await;
        assert_eq!(r.outcome.status(), Status::Passed, "{r:#?}");
        assert!(!r.details.contains_key("leftovers"), "{r:#?}");
    }
    // The vector flow's temporary collection is gone once the check has ended.
    let left: Vec<String> = stack
        .collections()
        .await
        .into_iter()
        .filter(|c| c.starts_with("citadel_itest_"))
        .collect();
    assert!(left.is_empty(), "temporary collections left: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sql_assertion_that_never_holds_fails_at_its_bound_with_the_last_value() {
    let stack = Stack::start().await;
    let flow = Flow::new("counted_twice")
        .http(
            "chat",
            HttpStep::post("/v1/chat/completions")
                .header("x-request-id", "${request_id}")
                .json(json!({"model": "llama-3-8b", "max_tokens": 2,
                    "messages": [{"role": "user", "content": "hi"}]})),
        )
        .sql(
            "logged_twice",
            SqlStep::new("SELECT count(*) FROM fixture_request_log WHERE request_id = $1")
                .param("${request_id}")
                .expect(SqlExpect::value(2))
                .poll_until(Duration::from_secs(1)),
        );
    let started = Instant::now();
    let r = run_one(&stack.check(flow, &stack.flows())).await;
    let took = started.elapsed();
    let msg = message(&r.outcome);
    assert_eq!(r.outcome.status(), Status::Failed, "{r:#?}");
    assert!(
        msg.contains(
            "flow `counted_twice` step `logged_twice` (sql): `value = 2` did not hold within 1s"
        ),
        "{msg}"
    );
    // The row was written once: the last observed value is 1.
    assert!(msg.contains("last observed: value 1 (1 row)"), "{msg}");
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert_eq!(r.details["sql_last_observed"], "value 1 (1 row)", "{r:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_cancelled_midway_leaves_no_temporary_collection() {
    let stack = Stack::start().await;
    // Creates a collection, then waits on an assertion that never holds.
    let flow = Flow::new("stuck")
        .qdrant("collection", QdrantStep::create_collection("c", 4))
        .sql(
            "never",
            SqlStep::new("SELECT 0")
                .expect(SqlExpect::value(1))
                .poll_until(Duration::from_secs(60)),
        );
    let check = stack.check(flow, &stack.flows());
    let token = tokio_util::sync::CancellationToken::new();
    let suite = Suite::builder()
        .check("cross_service", std::sync::Arc::new(check))
        .default_timeout(Duration::from_secs(90))
        .cancellation(token.clone())
        .build();
    let run = tokio::spawn(suite.run(Vec::new()));
    // Cancel once the collection exists.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let names = stack.collections().await;
        if names.iter().any(|c| c.starts_with("citadel_itest_")) {
            break;
        }
        assert!(Instant::now() < deadline, "the collection never appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    token.cancel();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the run ends after cancellation")
        .expect("run task");
    let r = &out.results[0];
    assert_eq!(r.outcome.status(), Status::Error, "{r:#?}");
    assert!(
        matches!(
            r.outcome,
            Outcome::Error {
                kind: ErrorKind::Cancelled,
                ..
            }
        ),
        "{r:#?}"
    );
    assert!(
        out.summary.leftovers.is_empty(),
        "{:?}",
        out.summary.leftovers
    );
    let left: Vec<String> = stack
        .collections()
        .await
        .into_iter()
        .filter(|c| c.starts_with("citadel_itest_"))
        .collect();
    assert!(left.is_empty(), "temporary collections left: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_whose_pointer_is_missing_fails_naming_step_and_pointer() {
    let stack = Stack::start().await;
    let flow = Flow::new("typo").http(
        "embed",
        HttpStep::post("/v1/embeddings")
            .json(json!({"model": "text-embedding-small", "input": "x"}))
            .capture("vector", Capture::pointer("/data/0/embeding")),
    );
    let r = run_one(&stack.check(flow, &stack.flows())).await;
    let msg = message(&r.outcome);
    assert_eq!(r.outcome.status(), Status::Failed, "{r:#?}");
    assert!(
        msg.contains("flow `typo` step `embed` (http): capture `vector`: JSON pointer `/data/0/embeding` not found"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vector_of_the_wrong_dimension_fails_naming_both_and_cleans_up() {
    let stack = Stack::start().await;
    let flows = stack.flows();
    let flow = ModelToVectorConfig::new("text-embedding-small", 256).flow();
    let r = run_one(&stack.check(flow, &flows)).await;
    let msg = message(&r.outcome);
    assert_eq!(r.outcome.status(), Status::Failed, "{r:#?}");
    assert!(
        msg.contains(
            "step `upsert` (qdrant): the vector has 384 dimensions, collection citadel_itest_"
        ),
        "{msg}"
    );
    assert!(msg.contains("has 256"), "{msg}");
    assert!(
        stack
            .collections()
            .await
            .iter()
            .all(|c| !c.starts_with("citadel_itest_")),
        "collection left behind"
    );
}

/// Loads a `cross_service:` section from YAML text (a file, as the binary reads it).
fn load_yaml(yaml: &str) -> Result<CrossServiceTester, Vec<String>> {
    let path = std::env::temp_dir().join(format!(
        "citadel-itest-flows-{}-{}.yaml",
        std::process::id(),
        citadel_itest_core::new_run_id()
    ));
    std::fs::write(&path, yaml).expect("write yaml");
    let loader = citadel_itest_core::config::ConfigLoader::new()
        .env(false)
        .section("cross_service")
        .file(&path);
    let loaded = loader.load_with(citadel_itest_cross_service::from_config);
    let _ = std::fs::remove_file(&path);
    match loaded {
        Ok((_, Some(t))) => Ok(t),
        Ok((_, None)) => Err(vec!["<no tester and no problem>".into()]),
        Err(e) => Err(e.problems.iter().map(|p| p.to_string()).collect()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_written_in_yaml_captures_by_header_and_pointer_and_passes() {
    let stack = Stack::start().await;
    let yaml = format!(
        r#"
cross_service:
  gateway:
    url: {gw}
    models: [{{ id: llama-3-8b }}, {{ id: text-embedding-small, kind: embeddings }}]
  flows:
    postgres: {{ dsn: "{dsn}" }}
    qdrant: {{ url: "{qdrant}", api_key: {key} }}
    custom:
      - name: chat_is_logged
        steps:
          - name: chat
            http:
              method: POST
              url: /v1/chat/completions
              headers: {{ x-request-id: "$${{request_id}}" }}
              body: {{ model: llama-3-8b, max_tokens: 3, messages: [{{ role: user, content: hi }}] }}
              capture:
                backend: {{ header: x-backend-id }}
                tokens: {{ pointer: /usage/completion_tokens }}
          - name: logged
            sql:
              query: SELECT backend_id, completion_tokens FROM fixture_request_log WHERE request_id = $1
              params: ["$${{request_id}}"]
              expect: {{ rows: 1, value: "$${{backend}}" }}
              poll_until: 5s
          - name: tokens
            sql:
              query: SELECT completion_tokens FROM fixture_request_log WHERE request_id = $1
              params: ["$${{request_id}}"]
              expect: {{ value: "$${{tokens}}" }}
"#,
        gw = stack.model.base_url(),
        dsn = stack.pg.dsn(),
        qdrant = stack.qdrant.http_url(),
        key = QDRANT_KEY,
    );
    let tester = load_yaml(&yaml).unwrap_or_else(|p| panic!("{p:#?}"));
    let check = tester
        .checks()
        .into_iter()
        .find(|c| c.id().as_str() == "cross_service.flows.chat_is_logged")
        .expect("the custom flow's check");
    let r = run_one(check.as_ref()).await;
    assert_eq!(r.outcome.status(), Status::Passed, "{r:#?}");
}

#[test]
fn flow_config_problems_are_named_with_their_key_paths() {
    let yaml = r#"
cross_service:
  gateway:
    url: http://127.0.0.1:58080/v1
    models: [{ id: text-embedding-small, kind: embeddings }]
  flows:
    model_to_vector: { model: text-embedding-small, dimension: 0, tolerance: 2 }
    model_to_database: { within: 0s }
    custom:
      - name: Bad Name
        steps: []
      - name: two
        steps:
          - name: a
            http: { method: "GE T", url: "ftp://127.0.0.1/x", headers: { "x bad": v }, capture: { v: { pointer: data } } }
            sql: { query: "SELECT 1", expect: {} }
          - name: a
            qdrant: { search: { collection: c, vector: [1], id: 1, rank: 0 } }
"#;
    let found = load_yaml(yaml).expect_err("problems").join("\n");
    for expected in [
        "cross_service.flows.model_to_vector.dimension",
        "cross_service.flows.model_to_vector.tolerance",
        "cross_service.flows.model_to_vector: needs `flows.qdrant`",
        "cross_service.flows.model_to_database: needs `flows.postgres`",
        "cross_service.flows.model_to_database.within",
        "cross_service.flows.model_to_database.model: no chat model",
        "cross_service.flows.custom[0].name",
        "cross_service.flows.custom[0].steps: list at least one step",
        "cross_service.flows.custom[1].steps[0]: give exactly one of `http`, `sql`, `qdrant`",
        "cross_service.flows.custom[1].steps[0].http.method",
        "cross_service.flows.custom[1].steps[0].http.url",
        "cross_service.flows.custom[1].steps[0].http.headers.x bad: `x bad` is not a header name",
        "cross_service.flows.custom[1].steps[0].http.capture.v.pointer: `data` is not a JSON pointer",
        "cross_service.flows.custom[1].steps[0].sql.expect: give `rows`, `value` or both",
        "cross_service.flows.custom[1].steps[0].sql: needs `flows.postgres`",
        "cross_service.flows.custom[1].steps[1].name: duplicate step `a`",
        "cross_service.flows.custom[1].steps[1].qdrant.search.rank",
    ] {
        assert!(found.contains(expected), "{expected} not in:\n{found}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_that_times_out_leaves_no_temporary_collection() {
    let stack = Stack::start().await;
    let flows = stack.flows().timeout(Duration::from_secs(1));
    let flow = Flow::new("slow")
        .qdrant("collection", QdrantStep::create_collection("c", 4))
        .sql(
            "sleep",
            SqlStep::new("SELECT pg_sleep(5)::text").expect(SqlExpect::rows(1)),
        );
    let started = Instant::now();
    let r = run_one(&stack.check(flow, &flows)).await;
    assert!(
        matches!(
            r.outcome,
            Outcome::Error {
                kind: ErrorKind::Timeout,
                ..
            }
        ),
        "{r:#?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(
        r.details["collection"]
            .as_str()
            .is_some_and(|c| c.starts_with("citadel_itest_"))
    );
    assert!(!r.details.contains_key("leftovers"), "{r:#?}");
    let left: Vec<String> = stack
        .collections()
        .await
        .into_iter()
        .filter(|c| c.starts_with("citadel_itest_"))
        .collect();
    assert!(left.is_empty(), "temporary collections left: {left:?}");
}
