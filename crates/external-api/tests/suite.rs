//! The whole tester: 18 checks against real PostgreSQL, the Qdrant fixture and a real
//! Prometheus in one suite with a JSON report; the same tester against three dead services
//! within its deadline; and the section read from YAML through the layered config.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use citadel_itest_core::config::{ConfigLoader, PerformanceTargets, RunSettings, Secret};
use citadel_itest_core::report::json::JsonReporter;
use citadel_itest_core::{Category, IntegrationTester, Status, Suite};
use citadel_itest_external_api::{
    ExternalApiConfig, ExternalApiTester, PostgresTarget, PrometheusAuth, PrometheusTarget,
    QdrantTarget, from_config,
};
use citadel_itest_testkit::{HangingListener, Postgres, QdrantServer};
use common::*;

const KEY: &str = "suite-qdrant-key-1357";

#[tokio::test]
async fn all_eighteen_checks_pass_and_land_in_the_json_report() {
    let pg = Postgres::start().await.expect("start postgres");
    let q = QdrantServer::builder()
        .api_key(KEY)
        .start()
        .await
        .expect("start qdrant");
    let prom = GuardedPrometheus::start().await;
    let config = ExternalApiConfig::new()
        .postgres(
            PostgresTarget::new("main_db")
                .host("127.0.0.1")
                .port(pg.port())
                .user(pg.user())
                .password(Secret::inline(pg.password()))
                .database("postgres")
                .connect_timeout(Duration::from_secs(2)),
        )
        .qdrant(
            QdrantTarget::new("vectors", q.grpc_url(), q.http_url())
                .api_key(Secret::inline(KEY))
                .request_timeout(Duration::from_secs(2)),
        )
        .prometheus(
            PrometheusTarget::new("metrics", prom.basic_url())
                .auth(PrometheusAuth::basic(
                    &prom.user,
                    Secret::inline(&prom.password),
                ))
                .request_timeout(Duration::from_secs(2)),
        );
    let tester = tester(config);
    let buf = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let out = Suite::builder()
        .tester(&tester)
        .concurrency(6)
        .run_id(tester.settings().run_id.clone())
        .build()
        .run(vec![Box::new(JsonReporter::to_memory(buf.clone()))])
        .await;
    eprintln!("18 checks in {:?}", started.elapsed());
    print_results(&out.results);
    assert_eq!(out.results.len(), 18);
    assert_all_passed(&out.results);
    assert_eq!(out.summary.exit_code(), 0);
    assert_eq!(out.summary.by_tester["external_api"].passed, 18);
    for category in [
        Category::Configuration,
        Category::Connectivity,
        Category::Authentication,
        Category::Operations,
        Category::Performance,
        Category::ErrorHandling,
    ] {
        assert_eq!(out.summary.by_category[&category].passed, 3, "{category}");
    }
    for name in ["main_db", "vectors", "metrics"] {
        print_latencies(result(
            &out.results,
            &format!("external_api.{name}.performance"),
        ));
    }
    assert_no_secret(&out.results, &[pg.password(), KEY, &prom.password]);

    let report: serde_json::Value =
        serde_json::from_slice(&buf.lock().unwrap()).expect("report is JSON");
    let text = report.to_string();
    for secret in [pg.password(), KEY, prom.password.as_str()] {
        assert!(!text.contains(secret), "the report leaks a secret");
    }
    let results = report["results"].as_array().expect("results");
    let ours: Vec<&serde_json::Value> = results
        .iter()
        .filter(|r| {
            r["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("external_api."))
        })
        .collect();
    assert_eq!(ours.len(), 18);
    for r in ours.iter().filter(|r| r["category"] == "performance") {
        assert_eq!(r["status"], "passed");
        let ms = r["measurements"].as_array().expect("measurements");
        let p95 = ms
            .iter()
            .find(|m| m["name"] == "latency_p95")
            .expect("latency_p95");
        assert_eq!(p95["unit"], "milliseconds");
        assert!(p95["value"].as_f64().unwrap() < 200.0);
    }
    assert_no_temp_tables(&pg).await;
}

#[tokio::test]
async fn three_dead_services_finish_within_the_deadline() {
    // Every service accepts connections and never answers: the worst case for bounds.
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(HangingListener::start().await.expect("hanging listener"));
    }
    let url = |l: &HangingListener| format!("http://127.0.0.1:{}", l.port());
    let bound = Duration::from_secs(1);
    let config = ExternalApiConfig::new()
        .postgres(
            PostgresTarget::new("main_db")
                .host("127.0.0.1")
                .port(silent[0].port())
                .user("citadel")
                .password(Secret::inline("dead-service-pw"))
                .connect_timeout(bound)
                .request_timeout(bound),
        )
        .qdrant(
            QdrantTarget::new("vectors", url(&silent[1]), url(&silent[2]))
                .api_key(Secret::inline(KEY))
                .connect_timeout(bound)
                .request_timeout(bound),
        )
        .prometheus(
            PrometheusTarget::new("metrics", url(&silent[3]))
                .connect_timeout(bound)
                .request_timeout(bound),
        );
    let run_settings = RunSettings {
        timeout: Duration::from_secs(8),
        retries: 2,
        retry_backoff: Duration::from_millis(100),
        ..RunSettings::default()
    };
    let tester = ExternalApiTester::new(config)
        .run_settings(&run_settings)
        .performance_targets(&PerformanceTargets::default());
    let deadline = Duration::from_secs(15);
    let started = Instant::now();
    let out = Suite::builder()
        .tester(&tester)
        .concurrency(18)
        .default_timeout(run_settings.timeout)
        .deadline(Some(deadline))
        .build()
        .run(Vec::new())
        .await;
    let took = started.elapsed();
    print_results(&out.results);
    eprintln!("18 checks against three dead services in {took:?}");
    assert!(took < deadline, "{took:?}");
    assert!(
        out.summary.cancel_reason.is_none(),
        "the deadline had to cancel checks"
    );
    for r in &out.results {
        let expected = if r.category == Category::Configuration {
            Status::Passed
        } else {
            Status::Failed
        };
        assert_eq!(r.outcome.status(), expected, "{}: {:?}", r.id, r.outcome);
        if expected == Status::Failed {
            let m = r.outcome.message().unwrap();
            assert!(m.contains("no answer within 1s"), "{}: {m}", r.id);
        }
    }
    // Connectivity retried until ready, three attempts, each cut at 1s.
    let conn = result(&out.results, "external_api.metrics.connectivity");
    assert_eq!(conn.attempts, 3);
    assert_no_secret(&out.results, &["dead-service-pw", KEY]);
}

#[tokio::test]
async fn the_section_is_read_from_yaml_and_problems_have_key_paths() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        "run:\n  read_only: true\n  timeout: 12s\n\
         external_api:\n  postgres:\n    - name: main_db\n      host: 127.0.0.1\n      port: 55432\n      user: citadel\n      password: { file: PWFILE }\n      database: citadel\n      sslmode: disable\n      pool_size: 3\n  \
         qdrant:\n    - name: vectors\n      grpc_url: http://127.0.0.1:56334\n      rest_url: http://127.0.0.1:56333\n      require_api_key: false\n      distance: Euclid\n  \
         prometheus:\n    - name: metrics\n      url: http://127.0.0.1:59090\n      auth: { bearer: inline-token-xyz }\n  performance:\n    samples: 20\n",
    )
    .unwrap();
    let pw = dir.path().join("pg-password");
    std::fs::write(&pw, "from-a-file-1234\n").unwrap();
    let text = std::fs::read_to_string(&good)
        .unwrap()
        .replace("PWFILE", pw.to_str().unwrap());
    std::fs::write(&good, text).unwrap();
    let config = ConfigLoader::new()
        .env(false)
        .section("external_api")
        .file(&good)
        .load()
        .expect("load");
    let mut problems = Vec::new();
    let tester = from_config(&config, &mut problems).expect("valid section");
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(tester.checks().len(), 18);
    assert!(tester.settings().read_only);
    assert_eq!(tester.settings().samples, 20);
    assert_eq!(tester.settings().timeout, Duration::from_secs(12));
    assert_eq!(tester.config().postgres[0].pool_size, 3);
    let summary = config.summary().to_string();
    assert!(!summary.contains("inline-token-xyz"), "{summary}");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "external_api:\n  postgres:\n    - name: Main DB\n      dsn: postgres://citadel:pw-in-dsn-42@127.0.0.1:5432/citadel\n      password: other\n      pool_size: 500\n  \
         qdrant:\n    - name: vectors\n      grpc_url: http://127.0.0.1:6333\n      rest_url: http://127.0.0.1:6333\n      collection_dimension: 1\n  \
         prometheus:\n    - name: vectors\n      url: ftp://127.0.0.1\n      request_timeout: 0s\n  performance:\n    samples: 0\n",
    )
    .unwrap();
    let config = ConfigLoader::new()
        .env(false)
        .section("external_api")
        .file(&bad)
        .load()
        .expect("core sections are fine");
    let mut problems = Vec::new();
    assert!(from_config(&config, &mut problems).is_none());
    let lines: Vec<String> = problems
        .iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect();
    eprintln!("{}", lines.join("\n"));
    let expect = [
        "external_api.prometheus[0].name: duplicate name `vectors` (also qdrant[0]): names make the check ids",
        "external_api.postgres[0].name: `Main DB` is not a valid name: use 1-40 lowercase letters, digits, `_` and `-`",
        "external_api.postgres[0].password: the DSN already carries a password: give it in one place",
        "external_api.postgres[0].pool_size: 500 is out of range 1..=100",
        "external_api.qdrant[0].grpc_url: points at the same port as rest_url (6333): Qdrant serves gRPC and REST on different ports (6334 and 6333 by default)",
        "external_api.qdrant[0].api_key: required when require_api_key is true (set require_api_key: false for a server without a key)",
        "external_api.qdrant[0].collection_dimension: 1 is out of range 2..=65536",
        "external_api.prometheus[0].url: URL `ftp://127.0.0.1` must be http:// or https://, not ftp://",
        "external_api.prometheus[0].request_timeout: 0s is out of range (greater than 0s, at most 10m)",
        "external_api.performance.samples: 0 is out of range 1..=10000",
    ];
    assert_eq!(lines, expect);
    for p in &problems {
        assert_eq!(p.source.as_deref(), Some(bad.to_str().unwrap()), "{p}");
        assert!(!p.to_string().contains("pw-in-dsn-42"));
    }

    // Unknown keys are errors with their path.
    let typo = dir.path().join("typo.yaml");
    std::fs::write(
        &typo,
        "external_api:\n  prometheus:\n    - name: metrics\n      url: http://127.0.0.1:59090\n      timout: 5s\n",
    )
    .unwrap();
    let config = ConfigLoader::new()
        .env(false)
        .section("external_api")
        .file(&typo)
        .load()
        .unwrap();
    let mut problems = Vec::new();
    assert!(from_config(&config, &mut problems).is_none());
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "external_api.prometheus[0].timout");
    assert!(
        problems[0]
            .message
            .contains("unknown field: found `timout`"),
        "{}",
        problems[0].message
    );
}

#[test]
fn the_documented_configuration_parses() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/external-api.md"
    ))
    .expect("read docs/external-api.md");
    let after = doc
        .split("## Configuration")
        .nth(1)
        .expect("a Configuration section");
    let yaml = after
        .split("```yaml\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("a yaml block");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("doc.yaml");
    std::fs::write(&file, yaml).unwrap();
    let config = ConfigLoader::new()
        .env(false)
        .section("external_api")
        .file(&file)
        .load()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut problems = Vec::new();
    let _ = from_config(&config, &mut problems);
    // Only the secrets cannot be resolved here (no such variables or files).
    for p in &problems {
        assert!(
            p.message.starts_with("environment variable")
                || p.message.starts_with("read secret file"),
            "{p}"
        );
    }
    assert_eq!(problems.len(), 3, "{problems:?}");
}
