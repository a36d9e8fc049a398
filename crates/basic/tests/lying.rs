//! The health check against servers that lie: bodies that never end, 50 MB bodies, bodies that
//! stop half-way. None of them is a healthy answer; each check ends within its budget (plus a
//! second) and the process's memory stays bounded.

mod common;

use std::time::{Duration, Instant};

use citadel_itest_basic::{HealthCheck, TargetConfig};
use citadel_itest_core::http::DEFAULT_MAX_BODY;
use citadel_itest_core::{ErrorKind, Outcome, Status, TestResult, run_one};
use citadel_itest_testkit::lying::{LyingServer, Reply};
use common::{reset_peak_rss, rss_kib};

const LIMIT: Duration = Duration::from_millis(200);
const BUDGET: Duration = Duration::from_secs(3);

/// The health check of `/health` on `server`, without `expect_json`, with [`BUDGET`].
fn health(server: &LyingServer) -> HealthCheck {
    let target = TargetConfig::new("liar", server.url())
        .health_path("/health")
        .timeout(BUDGET);
    HealthCheck::new(&target).latency_p95_limit(LIMIT)
}

/// Run `check`, asserting it ends within its budget plus a second.
async fn run_bounded(check: &HealthCheck) -> TestResult {
    let started = Instant::now();
    let result = run_one(check).await;
    let elapsed = started.elapsed();
    eprintln!(
        "{} ended {:?} after {elapsed:?}: {:?}",
        result.id,
        result.outcome.status(),
        result.outcome.message()
    );
    assert!(
        elapsed < BUDGET + Duration::from_secs(1),
        "took {elapsed:?}, budget {BUDGET:?}"
    );
    result
}

fn failed_message(result: &TestResult) -> &str {
    match &result.outcome {
        Outcome::Failed { message, .. } => message,
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[tokio::test]
async fn a_body_that_never_ends_is_not_healthy() {
    let server = LyingServer::start(|_| Reply::Endless).await;
    let result = run_bounded(&health(&server)).await;
    let message = failed_message(&result);
    assert_eq!(
        message,
        format!("GET {}/health returned 200: body over 4 MiB", server.url())
    );
    assert!(!message.contains("no answer"));
}

#[tokio::test]
async fn a_50_mb_body_is_not_healthy_and_costs_little_memory() {
    // Chunked, so the size is only known by reading: the reader must stop at the cap.
    let server = LyingServer::start(|_| Reply::Chunked(50 * 1024 * 1024)).await;
    let check = health(&server);
    let (rss_before, _) = rss_kib();
    reset_peak_rss();
    let result = run_bounded(&check).await;
    let (_, peak) = rss_kib();
    let growth_mib = peak.saturating_sub(rss_before) as f64 / 1024.0;
    eprintln!(
        "50 MB chunked body: peak RSS grew by {growth_mib:.1} MiB (rss before {rss_before} KiB, peak {peak} KiB)"
    );
    assert!(growth_mib < 100.0, "peak RSS grew by {growth_mib:.1} MiB");
    assert!(
        failed_message(&result).ends_with("returned 200: body over 4 MiB"),
        "{:?}",
        result.outcome
    );

    // With a Content-Length: refused before reading.
    let server = LyingServer::start(|_| Reply::Sized(50 * 1024 * 1024)).await;
    let result = run_bounded(&health(&server)).await;
    assert!(failed_message(&result).ends_with("returned 200: body over 4 MiB"));
}

#[tokio::test]
async fn a_body_that_stops_half_way_ends_in_a_timeout_naming_the_bound() {
    let server = LyingServer::start(|_| Reply::Stalled).await;
    let started = Instant::now();
    let result = run_bounded(&health(&server)).await;
    assert!(started.elapsed() >= BUDGET - Duration::from_millis(100));
    match &result.outcome {
        Outcome::Error {
            kind: ErrorKind::Timeout,
            message,
        } => assert_eq!(
            message,
            &format!(
                "GET {}/health returned 200, then the check's timeout passed: body not \
                 finished within 3s (16 bytes received)",
                server.url()
            )
        ),
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[tokio::test]
async fn the_cap_is_configurable_and_a_body_under_it_passes() {
    let server = LyingServer::start(|_| Reply::Chunked(DEFAULT_MAX_BODY + 1)).await;
    let result = run_bounded(&health(&server)).await;
    assert_eq!(result.outcome.status(), Status::Failed);

    let result = run_bounded(&health(&server).max_body(DEFAULT_MAX_BODY + 1)).await;
    result.assert_passed();

    let result = run_bounded(&health(&server).max_body(1024)).await;
    assert!(failed_message(&result).ends_with("body over 1 KiB"));
}

#[tokio::test]
async fn a_wrong_status_quotes_only_a_short_excerpt_of_a_huge_body() {
    let server = LyingServer::start(|_| {
        let mut page = b"<html><title>Maintenance</title>\n".to_vec();
        page.resize(3 * 1024 * 1024, b'.');
        Reply::Full(503, "text/html", page)
    })
    .await;
    let result = run_bounded(&health(&server)).await;
    let message = failed_message(&result);
    assert!(
        message.contains("returned 503, expected 2xx: <html><title>Maintenance</title>"),
        "{message}"
    );
    assert!(message.chars().count() < 300, "{message}");
}
