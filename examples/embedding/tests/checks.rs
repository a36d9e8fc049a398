//! Single checks in `#[tokio::test]`s: the service is started in the test, each check runs
//! with `run_one` (the runner's timeout, panics caught, clean-up) and asserts its outcome.
//!
//! `cargo nextest run -p citadel-notes --test checks`

mod common;

use std::time::Duration;

use citadel_itest::basic::{HealthCheck, TargetConfig};
use citadel_itest::database::{ExpectedSchema, IntegrityCheck, IntegrityConfig, SchemaCheck};
use citadel_itest::{Category, CheckExt, Outcome, RetryPolicy, Status, check_fn_with, run_one};

#[tokio::test]
async fn service_is_healthy() {
    let service = common::start().await;
    let target = TargetConfig::new("notes", &service.url)
        .health_path("/health")
        .expect_json("/status", "ok".into());
    // Built by hand, a check has no retry policy: give it one, the server may still be starting.
    let ready = RetryPolicy::new(10, Duration::from_millis(100));
    let check = HealthCheck::new(&target)
        .latency_p95_limit(Duration::from_millis(500))
        .retry_until_ready(ready);
    run_one(&check).await.assert_passed();
}

#[tokio::test]
async fn database_schema_and_integrity() {
    let service = common::start().await;
    let db = common::database_target(&service.postgres);
    let expected = ExpectedSchema::from_yaml(common::EXPECTED_SCHEMA).expect("declared schema");
    // Exact: anything in the `notes` schema that is not declared is a difference too.
    run_one(&SchemaCheck::new(&db, expected, "notes").exact(true))
        .await
        .assert_passed();

    let rules = IntegrityConfig::new()
        .not_null("notes.notes.body")
        .expect("column reference");
    run_one(&IntegrityCheck::new(&db, rules))
        .await
        .assert_passed();
}

#[tokio::test]
async fn a_schema_drift_fails_and_names_the_column() {
    let service = common::start().await;
    let db = common::database_target(&service.postgres);
    let declared = common::EXPECTED_SCHEMA.replace(
        "body: text NOT NULL",
        "body: text NOT NULL\n          title: text",
    );
    let expected = ExpectedSchema::from_yaml(&declared).expect("declared schema");
    let result = run_one(&SchemaCheck::new(&db, expected, "notes").exact(true)).await;
    assert_eq!(
        result.outcome.status(),
        Status::Failed,
        "{:?}",
        result.outcome
    );
    assert!(
        result
            .outcome
            .message()
            .unwrap_or_default()
            .contains("title"),
        "{:?}",
        result.outcome
    );
}

/// A check of your own: a note posted is listed. `check_fn_with` hands the closure its state
/// (here the URL) on every run, since a check may run more than once; `check_fn` is the same
/// without state. `?` on an I/O error makes the outcome Error ("could not tell"); a wrong answer
/// is `Outcome::failed` ("the service is wrong").
#[tokio::test]
async fn a_posted_note_is_listed() {
    let service = common::start().await;
    let url = format!("{}/notes", service.url);
    let check = check_fn_with(
        "notes.round_trip",
        Category::Operations,
        url,
        |url, ctx| async move {
            let client = reqwest::Client::builder()
                .timeout(ctx.remaining())
                .build()?;
            let created = client
                .post(url.as_str())
                .json(&citadel_itest::serde_json::json!({ "body": "remember the milk" }))
                .send()
                .await?;
            if created.status() != reqwest::StatusCode::CREATED {
                return Ok(Outcome::failed(format!(
                    "POST /notes answered {}",
                    created.status()
                )));
            }
            let notes: Vec<citadel_notes::Note> =
                client.get(url.as_str()).send().await?.json().await?;
            Ok(if notes.iter().any(|n| n.body == "remember the milk") {
                Outcome::passed()
            } else {
                Outcome::failed(format!(
                    "GET /notes lists {} notes, not the one posted",
                    notes.len()
                ))
            })
        },
    );
    run_one(&check).await.assert_passed();
}
