//! `monitoring.<name>.metrics` and `.rates` against lying servers (garbage, truncated, invalid
//! UTF-8, oversized, endless and never-arriving bodies, an HTML login page) and against the
//! model fixture (families, values, rates with real traffic).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use citadel_itest_core::{Check, Status, TestResult, run_one};
use citadel_itest_monitoring::config::EndpointConfig;
use citadel_itest_monitoring::endpoint::{self, MAX_LISTED_FINDINGS, MetricsCheck, RatesCheck};
use citadel_itest_testkit::lying::Reply;
use citadel_itest_testkit::{HangingListener, LyingServer, ModelServer};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Every check here must end within this, whatever the server does.
const TEST_BOUND: Duration = Duration::from_secs(30);

fn config(value: serde_json::Value) -> EndpointConfig {
    serde_json::from_value(value).expect("endpoint config")
}

async fn run(check: &dyn Check) -> TestResult {
    let started = Instant::now();
    let result = tokio::time::timeout(TEST_BOUND, run_one(check))
        .await
        .expect("the check ends within its bound");
    eprintln!(
        "{} -> {:?} in {:?}: {}",
        result.id,
        result.outcome.status(),
        started.elapsed(),
        result.outcome.message().unwrap_or("")
    );
    result
}

async fn metrics(value: serde_json::Value) -> TestResult {
    run(&MetricsCheck::new(config(value))).await
}

fn failed_with(result: &TestResult, needles: &[&str]) {
    assert_eq!(
        result.outcome.status(),
        Status::Failed,
        "{:?}",
        result.outcome
    );
    let message = result.outcome.message().unwrap_or("");
    for needle in needles {
        assert!(
            message.contains(needle),
            "`{needle}` not in the message: {message}"
        );
    }
}

fn passed(result: &TestResult) {
    assert_eq!(
        result.outcome.status(),
        Status::Passed,
        "{:?}\n{:?}",
        result.outcome,
        result.details
    );
}

const GOOD: &str = "# HELP up Whether it is up.\n# TYPE up gauge\nup 1\n";

/// One connection at a time: read the request head, write `head`, then run `after`.
async fn raw_server<F, Fut>(head: Vec<u8>, after: F) -> String
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let after = Arc::new(after);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let head = head.clone();
            let after = after.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                if s.write_all(&head).await.is_err() {
                    return;
                }
                after(s).await;
            });
        }
    });
    format!("http://{addr}/metrics")
}

#[tokio::test]
async fn a_good_page_passes_with_measurements() {
    let server = LyingServer::start(|_| Reply::text(200, GOOD)).await;
    let r = metrics(json!({ "name": "good", "url": format!("{}/metrics", server.url()) })).await;
    passed(&r);
    assert_eq!(r.id.as_str(), "monitoring.good.metrics");
    let m = |name: &str| {
        r.outcome
            .measurements()
            .iter()
            .find(|m| m.name == name)
            .unwrap()
            .value
    };
    assert_eq!(m("families"), Some(1.0));
    assert_eq!(m("series"), Some(1.0));
    assert_eq!(m("body_bytes"), Some(GOOD.len() as f64));
    assert!(m("scrape_ms").is_some());
    assert_eq!(r.details["format"], "text 0.0.4");
    let accept = server.requests()[0]
        .header("accept")
        .unwrap_or("")
        .to_string();
    assert!(accept.starts_with("text/plain;version=0.0.4"), "{accept}");
}

#[tokio::test]
async fn garbage_with_200_fails_naming_the_line() {
    let server = LyingServer::start(|_| {
        Reply::text(
            200,
            "# HELP up Up.\n# TYPE up gauge\nup 1\nthis is { not metrics\n",
        )
    })
    .await;
    let r = metrics(json!({ "name": "garbage", "url": server.url() })).await;
    failed_with(&r, &["line 4", "[parse]"]);
}

#[tokio::test]
async fn an_html_login_page_with_200_is_not_a_metrics_endpoint() {
    let server = LyingServer::start(|_| {
        Reply::html("<html><body><form action=/login>Sign in</form></body></html>")
    })
    .await;
    let r = metrics(json!({ "name": "login", "url": server.url() })).await;
    failed_with(
        &r,
        &[
            "content-type `text/html",
            "not a metrics exposition",
            "Sign in",
        ],
    );
}

#[tokio::test]
async fn a_json_answer_is_not_a_metrics_endpoint() {
    let server = LyingServer::start(|_| Reply::json(200, r#"{"up":1}"#)).await;
    let r = metrics(json!({ "name": "json", "url": server.url() })).await;
    failed_with(&r, &["application/json", "not a metrics exposition"]);
}

#[tokio::test]
async fn a_server_error_fails_with_status_and_excerpt() {
    let server = LyingServer::start(|_| Reply::text(503, "upstream exploded")).await;
    let r = metrics(json!({ "name": "err", "url": server.url() })).await;
    failed_with(&r, &["returned 503", "upstream exploded"]);
}

#[tokio::test]
async fn a_redirect_to_a_login_page_is_not_followed() {
    let url = raw_server(
        b"HTTP/1.1 302 Found\r\nlocation: /login\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            .to_vec(),
        |_s| async {},
    )
    .await;
    let r = metrics(json!({ "name": "redirect", "url": url })).await;
    failed_with(&r, &["returned 302"]);
}

#[tokio::test]
async fn invalid_utf8_fails_naming_the_line() {
    let server = LyingServer::start(|_| {
        Reply::Full(
            200,
            "text/plain; version=0.0.4",
            b"# HELP up Up.\n# TYPE up gauge\nup{job=\"\xff\"} 1\nup{job=\"b\"} 1\n".to_vec(),
        )
    })
    .await;
    let r = metrics(json!({ "name": "utf8", "url": server.url() })).await;
    failed_with(&r, &["line 3", "not valid UTF-8", "[invalid_utf8]"]);
}

#[tokio::test]
async fn an_oversized_body_fails_naming_the_cap() {
    let server = LyingServer::start(|_| Reply::Sized(2 * 1024 * 1024)).await;
    let r = metrics(json!({ "name": "big", "url": server.url(), "max_body_bytes": 65536 })).await;
    failed_with(&r, &["body over 64 KiB", "max_body_bytes"]);
    let server = LyingServer::start(|_| Reply::Chunked(2 * 1024 * 1024)).await;
    let r = metrics(json!({ "name": "big", "url": server.url(), "max_body_bytes": 65536 })).await;
    failed_with(&r, &["body over 64 KiB", "max_body_bytes"]);
}

#[tokio::test]
async fn an_endless_body_fails_at_the_cap_without_growing() {
    let server = LyingServer::start(|_| Reply::Endless).await;
    let started = Instant::now();
    let r = metrics(json!({
        "name": "endless", "url": server.url(), "max_body_bytes": 1048576, "timeout": "20s"
    }))
    .await;
    failed_with(&r, &["body over 1 MiB"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_body_that_never_arrives_fails_at_the_timeout() {
    let server = LyingServer::start(|_| Reply::Stalled).await;
    let started = Instant::now();
    let r = metrics(json!({ "name": "stalled", "url": server.url(), "timeout": "1s" })).await;
    failed_with(&r, &["body not finished within 1s", "(timeout)"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_server_that_never_answers_fails_at_the_timeout() {
    let hanging = HangingListener::start().await.unwrap();
    let started = Instant::now();
    let r = metrics(json!({
        "name": "hang", "url": format!("http://{}/metrics", hanging.addr()), "timeout": "1s"
    }))
    .await;
    failed_with(&r, &["no answer within 1s"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_truncated_body_fails() {
    // The connection closes after part of the announced length.
    let url = raw_server(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: 1000\r\n\r\n# HELP up Up.\n# TYPE up gauge\nup 1\nup{job=\"x"
            .to_vec(),
        |s| async move { drop(s) },
    )
    .await;
    let r = metrics(json!({ "name": "cut", "url": url })).await;
    failed_with(&r, &["body broken off"]);
    // A complete HTTP answer whose exposition ends mid-line.
    let server =
        LyingServer::start(|_| Reply::text(200, "# HELP up Up.\n# TYPE up gauge\nup{job=\"a"))
            .await;
    let r = metrics(json!({ "name": "cut", "url": server.url() })).await;
    failed_with(&r, &["line 3", "[truncated]"]);
}

#[tokio::test]
async fn an_empty_page_fails() {
    let server = LyingServer::start(|_| Reply::text(200, "")).await;
    let r = metrics(json!({ "name": "empty", "url": server.url() })).await;
    failed_with(&r, &["no samples"]);
}

#[tokio::test]
async fn openmetrics_cut_before_eof_fails() {
    let server = LyingServer::start(|_| {
        Reply::Full(
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            b"# TYPE up gauge\n# HELP up Up.\nup 1\n".to_vec(),
        )
    })
    .await;
    let r = metrics(json!({ "name": "om", "url": server.url() })).await;
    failed_with(&r, &["[missing_eof]"]);
    assert_eq!(r.details["format"], "OpenMetrics 1.0");
}

#[tokio::test]
async fn lint_findings_fail_unless_ignored_or_off() {
    let body = "# HELP requests Requests.\n# TYPE requests counter\nrequests 3\n";
    let server = LyingServer::start(move |_| Reply::text(200, body)).await;
    let url = server.url();
    let r = metrics(json!({ "name": "lint", "url": url })).await;
    failed_with(&r, &["requests", "[counter_suffix]", "line 1"]);
    let r = metrics(json!({ "name": "lint", "url": url, "lint_ignore": ["counter_suffix"] })).await;
    passed(&r);
    let r = metrics(json!({ "name": "lint", "url": url, "lint": false })).await;
    passed(&r);
    let r = metrics(json!({ "name": "lint", "url": url, "lint_ignore": ["counter_sufix"] })).await;
    failed_with(&r, &["lint_ignore: `counter_sufix` is not a finding kind"]);
}

#[tokio::test]
async fn many_findings_are_capped_in_details_and_message() {
    let mut body = String::new();
    for i in 0..300 {
        body.push_str(&format!("bad line {i}\n"));
    }
    let body: &'static str = Box::leak(body.into_boxed_str());
    let server = LyingServer::start(move |_| Reply::text(200, body)).await;
    let r = metrics(json!({ "name": "many", "url": server.url() })).await;
    failed_with(&r, &["problems", "and ", "more"]);
    assert!(r.outcome.message().unwrap().len() < 2000);
    assert_eq!(
        r.details["findings"].as_array().unwrap().len(),
        MAX_LISTED_FINDINGS
    );
    assert_eq!(r.details["findings_total"], 300);
}

#[tokio::test]
async fn the_bearer_is_sent_and_never_shown() {
    const TOKEN: &str = "metrics-bearer-7f3a9c1e";
    let server = LyingServer::start(|req| {
        if req.header("authorization") == Some(&format!("Bearer {TOKEN}")) {
            Reply::text(200, GOOD)
        } else {
            Reply::text(401, "unauthorized, got Bearer metrics-bearer-7f3a9c1e?")
        }
    })
    .await;
    let r = metrics(json!({ "name": "auth", "url": server.url(), "bearer": TOKEN })).await;
    passed(&r);
    let r = metrics(json!({ "name": "auth", "url": server.url() })).await;
    failed_with(&r, &["returned 401"]);
    let text = serde_json::to_string(&r).unwrap();
    let shown = citadel_itest_core::config::redact_text(&text);
    assert!(!shown.contains(TOKEN), "{shown}");
}

#[tokio::test]
async fn every_check_is_built() {
    let e = config(json!({
        "name": "m", "url": "http://127.0.0.1:9/metrics",
        "rates": [{ "series": "x_total", "min_increase": 1.0 }]
    }));
    let checks = endpoint::checks(&[e]);
    let ids: Vec<&str> = checks.iter().map(|c| c.id().as_str()).collect();
    assert_eq!(ids, ["monitoring.m.metrics", "monitoring.m.rates"]);
    assert_eq!(checks[1].exclusive().len(), 1);
}

// ---- against the model fixture ----

async fn model_with_traffic() -> ModelServer {
    let model = ModelServer::builder()
        .models(["m-small"])
        .start()
        .await
        .expect("start model server");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = client
        .get(format!("{}/v1/models", model.url()))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    model
}

#[tokio::test]
async fn families_and_values_pass_against_the_model_fixture() {
    let model = model_with_traffic().await;
    let r = metrics(json!({
        "name": "model",
        "url": format!("{}/metrics", model.url()),
        "families": [
            { "name": "fixture_requests_total", "type": "counter", "labels": ["route", "status"] },
            { "name": "fixture_request_duration_seconds", "type": "histogram", "labels": ["route"] },
            { "name": "fixture_requests_in_flight", "type": "gauge" },
        ],
        "values": [
            { "series": "fixture_backend_info", "eq": 1.0 },
            { "series": "fixture_requests_total{route=\"/v1/models\",status=\"200\"}", "min": 1.0, "lt": 100.0 },
            { "series": "fixture_requests_in_flight", "min": 0.0 },
            { "series": "fixture_prompt_tokens_total{model=\"m-small\"}", "min": 0.0 },
        ],
    }))
    .await;
    passed(&r);
}

#[tokio::test]
async fn wrong_expectations_fail_against_the_model_fixture() {
    let model = model_with_traffic().await;
    let url = format!("{}/metrics", model.url());
    let r = metrics(json!({
        "name": "model", "url": url,
        "families": [{ "name": "fixture_no_such_family" }],
    }))
    .await;
    failed_with(&r, &["family `fixture_no_such_family` is missing"]);
    let r = metrics(json!({
        "name": "model", "url": url,
        "families": [{ "name": "fixture_requests_in_flight", "type": "counter" }],
    }))
    .await;
    failed_with(&r, &["is a gauge, expected counter"]);
    let r = metrics(json!({
        "name": "model", "url": url,
        "families": [{ "name": "fixture_requests_total", "labels": ["tenant"] }],
    }))
    .await;
    failed_with(&r, &["lack label `tenant`"]);
    let r = metrics(json!({
        "name": "model", "url": url,
        "values": [{ "series": "fixture_backend_info", "gt": 1.0 }],
    }))
    .await;
    failed_with(&r, &["fixture_backend_info", "= 1", "expected > 1"]);
    let r = metrics(json!({
        "name": "model", "url": url,
        "values": [{ "series": "fixture_requests_total{route=\"/nowhere\"}", "min": 0.0 }],
    }))
    .await;
    failed_with(
        &r,
        &["no series matches `fixture_requests_total{route=\"/nowhere\"}`"],
    );
    let r = metrics(json!({
        "name": "model", "url": url,
        "values": [{ "series": "fixture_requests_total{route=}", "min": 0.0 }],
    }))
    .await;
    failed_with(&r, &["values[0]", "not a selector"]);
}

#[tokio::test]
async fn rates_follow_real_traffic_to_the_model_fixture() {
    let model = ModelServer::builder()
        .models(["m-small"])
        .start()
        .await
        .expect("start model server");
    let e = config(json!({
        "name": "model",
        "url": format!("{}/metrics", model.url()),
        "rates": [
            {
                "series": "fixture_requests_total{route=\"/v1/models\"}",
                "min_increase": 5.0, "max_increase": 5.0,
                "traffic": { "url": format!("{}/v1/models", model.url()), "requests": 5 },
            },
            {
                "series": "fixture_generated_tokens_total{model=\"m-small\"}",
                "min_increase": 1.0,
                "traffic": {
                    "method": "POST",
                    "url": format!("{}/v1/chat/completions", model.url()),
                    "body": { "model": "m-small", "messages": [{ "role": "user", "content": "hi" }] },
                    "requests": 2,
                },
                "interval": "100ms",
            },
        ],
    }));
    let r = run(&RatesCheck::new(e)).await;
    passed(&r);
    let m = |name: &str| {
        r.outcome
            .measurements()
            .iter()
            .find(|m| m.name == name)
            .unwrap()
            .value
    };
    assert_eq!(m("rates_0_increase"), Some(5.0));
    assert!(m("rates_1_increase").unwrap() >= 1.0);
    assert_eq!(m("traffic_requests"), Some(7.0));
    assert_eq!(m("traffic_non_2xx"), Some(0.0));

    // The same traffic with a wrong expectation.
    let e = config(json!({
        "name": "model",
        "url": format!("{}/metrics", model.url()),
        "rates": [{
            "series": "fixture_requests_total{route=\"/v1/models\"}",
            "min_increase": 100.0,
            "traffic": { "url": format!("{}/v1/models", model.url()), "requests": 3 },
        }],
    }));
    let r = run(&RatesCheck::new(e)).await;
    failed_with(&r, &["increased by 3", "expected at least 100"]);

    // No traffic, a series that must not grow.
    let e = config(json!({
        "name": "model",
        "url": format!("{}/metrics", model.url()),
        "rates": [{ "series": "fixture_requests_total{route=\"/v1/models\"}", "max_increase": 0.0 }],
    }));
    passed(&run(&RatesCheck::new(e)).await);
}

#[tokio::test]
async fn a_counter_going_down_is_reported_as_a_reset() {
    let scrapes = Arc::new(AtomicU64::new(0));
    let seen = scrapes.clone();
    let server = LyingServer::start(move |_| {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        let value = if n == 0 { 40 } else { 3 };
        let body = format!(
            "# HELP jobs_total Jobs.\n# TYPE jobs_total counter\njobs_total{{queue=\"a\"}} {value}\n"
        );
        Reply::text(200, Box::leak(body.into_boxed_str()))
    })
    .await;
    let e = config(json!({
        "name": "reset", "url": server.url(),
        "rates": [{ "series": "jobs_total", "min_increase": 0.0 }],
    }));
    let r = run(&RatesCheck::new(e)).await;
    failed_with(
        &r,
        &["counter reset", "jobs_total{queue=\"a\"}", "from 40 to 3"],
    );
    assert_eq!(scrapes.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn rates_fail_when_nothing_matches_or_the_page_is_wrong() {
    let server = LyingServer::start(|_| Reply::text(200, GOOD)).await;
    let e = config(json!({
        "name": "none", "url": server.url(),
        "rates": [{ "series": "jobs_total", "min_increase": 1.0 }],
    }));
    failed_with(
        &run(&RatesCheck::new(e)).await,
        &["no series matches `jobs_total`"],
    );
    let server = LyingServer::start(|_| Reply::html("<html>login</html>")).await;
    let e = config(json!({
        "name": "html", "url": server.url(),
        "rates": [{ "series": "jobs_total", "min_increase": 1.0 }],
    }));
    failed_with(
        &run(&RatesCheck::new(e)).await,
        &["not a metrics exposition"],
    );
}
