//! The one-liners of docs/embedding.md "Pointing a tester at a testkit service", each against
//! the real service: a testkit handle's URL or DSN goes into a tester's target in one call.

#![cfg(all(feature = "basic", feature = "database", feature = "external-api"))]

use std::time::Duration;

use citadel_itest::basic::{ConnectivityCheck, HealthCheck, TargetConfig};
use citadel_itest::database::{
    DatabaseTarget, ExpectedSchema, IntegrityCheck, IntegrityConfig, NamespaceSpec, SchemaCheck,
    TableSpec,
};
use citadel_itest::external_api::{
    Aspect, PostgresCheck, PostgresTarget, PrometheusCheck, PrometheusTarget, Settings,
};
use citadel_itest::{Status, run_one};
use citadel_itest_testkit::{Alertmanager, ModelServer, Nginx, Postgres, Prometheus};

#[tokio::test]
async fn postgres_and_a_fresh_database_in_one_call_per_tester() {
    let pg = Postgres::start().await.unwrap();

    run_one(&ConnectivityCheck::new(&TargetConfig::new("db", pg.dsn())))
        .await
        .assert_passed();
    let db = DatabaseTarget::from_url("main", &pg.dsn()).unwrap();
    run_one(&IntegrityCheck::new(&db, IntegrityConfig::new()))
        .await
        .assert_passed();
    let ext = PostgresTarget::new("main_db").dsn(pg.dsn());
    run_one(&PostgresCheck::new(
        &ext,
        Aspect::Connectivity,
        &Settings::default(),
    ))
    .await
    .assert_passed();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("1_notes.sql"),
        "CREATE SCHEMA app; CREATE TABLE app.notes (id bigint PRIMARY KEY, body text NOT NULL);",
    )
    .unwrap();
    let fresh = pg
        .fresh_database_with_migrations("glue", dir.path())
        .await
        .unwrap();
    let target = DatabaseTarget::from_url("main", fresh.url()).unwrap();
    let expected = ExpectedSchema::new().schema(
        "app",
        NamespaceSpec::new().table(
            "notes",
            TableSpec::new()
                .column("id", "bigint NOT NULL")
                .column("body", "text NOT NULL")
                .primary_key(["id"]),
        ),
    );
    run_one(&SchemaCheck::new(&target, expected.clone(), "app").exact(true))
        .await
        .assert_passed();
    // The same declaration against the server's `postgres` database: no such schema there.
    let result = run_one(&SchemaCheck::new(&db, expected, "app")).await;
    assert_eq!(result.outcome.status(), Status::Failed, "{result:?}");
    let ext = PostgresTarget::new("main_db").dsn(fresh.url());
    run_one(&PostgresCheck::new(
        &ext,
        Aspect::Connectivity,
        &Settings::default(),
    ))
    .await
    .assert_passed();
    fresh.cleanup().await.unwrap();
}

#[tokio::test]
async fn http_services_in_one_call_per_tester() {
    let limit = Duration::from_secs(2);
    let prom = Prometheus::builder().start().await.unwrap();
    let health = TargetConfig::new("prometheus", prom.url()).health_path("/-/ready");
    run_one(&HealthCheck::new(&health).latency_p95_limit(limit))
        .await
        .assert_passed();
    let metrics = PrometheusTarget::new("metrics", prom.url());
    run_one(&PrometheusCheck::new(
        &metrics,
        Aspect::Connectivity,
        &Settings::default(),
    ))
    .await
    .assert_passed();

    let nginx = Nginx::proxy_to(["127.0.0.1:9"]).await.unwrap();
    let gateway = TargetConfig::new("gateway", nginx.url()).health_path("/health");
    run_one(&HealthCheck::new(&gateway).latency_p95_limit(limit))
        .await
        .assert_passed();

    let am = Alertmanager::builder().start().await.unwrap();
    let alerts = TargetConfig::new("alertmanager", am.url()).health_path("/-/ready");
    run_one(&HealthCheck::new(&alerts).latency_p95_limit(limit))
        .await
        .assert_passed();

    let model = ModelServer::start().await.unwrap();
    let target = TargetConfig::new("model", model.url()).health_path("/health");
    run_one(&HealthCheck::new(&target).latency_p95_limit(limit))
        .await
        .assert_passed();
    // A wrong path on the same service fails: the checks look at what the service answers.
    let wrong = TargetConfig::new("model", model.url()).health_path("/no-such-path");
    let result = run_one(&HealthCheck::new(&wrong).latency_p95_limit(limit)).await;
    assert_eq!(result.outcome.status(), Status::Failed, "{result:?}");
}
