//! `monitoring.health.<name>` against the model server fixture's real `/health`, and against
//! small servers that are slow, not ready or say the wrong thing.

use std::time::{Duration, Instant};

use citadel_itest_core::{Category, Status, TestResult, run_one};
use citadel_itest_monitoring::config::HealthConfig;
use citadel_itest_monitoring::health;
use citadel_itest_testkit::lying::{LyingServer, Reply};
use citadel_itest_testkit::{Faults, HangingListener, ModelServer};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn config(value: serde_json::Value) -> HealthConfig {
    serde_json::from_value(value).expect("a valid health config")
}

async fn run(config: HealthConfig) -> TestResult {
    let checks = health::checks(&[config]);
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].category(), Category::Health);
    run_one(&*checks[0]).await
}

fn message(r: &TestResult) -> &str {
    r.outcome.message().unwrap_or_default()
}

/// A server that answers every request `200 {"status":"ok"}` after `delay`.
async fn slow_server(delay: Duration) -> String {
    raw_server(delay, |_| {
        let body = r#"{"status":"ok"}"#;
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    })
    .await
}

/// A server that answers each request with `answer(request head)` after `delay`.
async fn raw_server(delay: Duration, answer: fn(&str) -> String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                tokio::time::sleep(delay).await;
                let answer = answer(&String::from_utf8_lossy(&seen));
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn the_model_servers_health_passes_and_fails_when_it_is_unavailable() {
    let model = ModelServer::builder()
        .backend_id("model-h")
        .start()
        .await
        .unwrap();
    let url = format!("{}/health", model.url());
    let cfg = config(json!({
        "name": "model",
        "live": url,
        "ready": url,
        "expect_json": [
            { "pointer": "/status", "equals": "ok" },
            { "pointer": "/backend_id", "equals": "model-h" }
        ],
        "expect_body": "backend_id",
        "max_latency": "1s"
    }));
    let r = run(cfg.clone()).await;
    assert_eq!(r.id.as_str(), "monitoring.health.model");
    r.assert_passed();
    for name in ["live_time", "ready_time"] {
        let m = r.measurement(name).unwrap();
        assert!(m.value.unwrap() > 0.0 && m.value.unwrap() < 1000.0, "{m}");
        assert!(m.threshold.is_some(), "{m}");
    }

    model.set_faults(Faults::none().with_unavailable()).unwrap();
    let r = run(cfg).await;
    let m = message(&r);
    assert_eq!(r.outcome.status(), Status::Failed, "{m}");
    assert!(
        m.starts_with(&format!("not live: GET {url}: HTTP 503 (expected 200): ")),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "; not ready: GET {url}: HTTP 503 (expected 200): "
        )),
        "{m}"
    );
}

#[tokio::test]
async fn live_but_not_ready_is_said_so() {
    let server = LyingServer::start(|req| match req.path() {
        "/live" => Reply::json(200, r#"{"status":"ok"}"#),
        "/ready" => Reply::json(503, r#"{"status":"starting","pending":["db"]}"#),
        _ => Reply::text(404, "not found"),
    })
    .await;
    let r = run(config(json!({
        "name": "svc",
        "live": format!("{}/live", server.url()),
        "ready": format!("{}/ready", server.url()),
        "expect_json": [{ "pointer": "/status", "equals": "ok" }]
    })))
    .await;
    assert_eq!(r.outcome.status(), Status::Failed);
    assert_eq!(
        message(&r),
        format!(
            "live but not ready: GET {}/ready: HTTP 503 (expected 200): \
             {{\"status\":\"starting\",\"pending\":[\"db\"]}}",
            server.url()
        )
    );

    // And the other way round: ready, but the liveness URL is wrong.
    let r = run(config(json!({
        "name": "svc",
        "live": format!("{}/livez", server.url()),
        "ready": format!("{}/live", server.url())
    })))
    .await;
    assert_eq!(
        message(&r),
        format!(
            "not live (though ready): GET {}/livez: HTTP 404 (expected 200): not found",
            server.url()
        )
    );
}

#[tokio::test]
async fn wrong_json_fields_and_bodies_are_named() {
    let server = LyingServer::start(|req| match req.path() {
        "/degraded" => Reply::json(200, r#"{"status":"degraded","checks":{"db":"down"}}"#),
        "/html" => Reply::html("<html>Sign in</html>"),
        _ => Reply::text(404, "not found"),
    })
    .await;
    let r = run(config(json!({
        "name": "svc",
        "ready": format!("{}/degraded", server.url()),
        "expect_json": [
            { "pointer": "/status", "equals": "ok" },
            { "pointer": "/checks/db", "equals": "up" },
            { "pointer": "/version", "equals": 2 }
        ]
    })))
    .await;
    assert_eq!(
        message(&r),
        format!(
            "not ready: GET {}/degraded: `/status` is \"degraded\", expected \"ok\", \
             `/checks/db` is \"down\", expected \"up\", `/version` is missing",
            server.url()
        )
    );

    // An HTML page with 200 is not a healthy JSON answer.
    let r = run(config(json!({
        "name": "svc",
        "live": format!("{}/html", server.url()),
        "expect_json": [{ "pointer": "/status", "equals": "ok" }]
    })))
    .await;
    let m = message(&r);
    assert!(
        m.starts_with(&format!("not live: GET {}/html: not JSON (", server.url())),
        "{m}"
    );
    assert!(m.ends_with("): <html>Sign in</html>"), "{m}");

    let r = run(config(json!({
        "name": "svc",
        "live": format!("{}/html", server.url()),
        "expect_body": "healthy"
    })))
    .await;
    assert_eq!(
        message(&r),
        format!(
            "not live: GET {}/html: the body does not contain \"healthy\": <html>Sign in</html>",
            server.url()
        )
    );
}

#[tokio::test]
async fn a_slow_answer_over_max_latency_and_no_answer_are_named() {
    let slow = slow_server(Duration::from_millis(400)).await;
    let r = run(config(json!({
        "name": "slow",
        "live": format!("{slow}/health"),
        "max_latency": "100ms",
        "timeout": "5s"
    })))
    .await;
    let m = message(&r);
    assert_eq!(r.outcome.status(), Status::Failed, "{m}");
    assert!(
        m.starts_with(&format!("not live: GET {slow}/health: answered in ")),
        "{m}"
    );
    assert!(m.ends_with("ms, over max_latency 100ms"), "{m}");
    let live = r.measurement("live_time").unwrap();
    assert!(live.value.unwrap() >= 400.0, "{live}");
    assert!(live.violation().is_some(), "{live}");

    // Within the bound it passes.
    run(config(json!({
        "name": "slow",
        "live": format!("{slow}/health"),
        "max_latency": "2s"
    })))
    .await
    .assert_passed();

    // A server that never answers is cut at `timeout`, and the check says which URL.
    let hanging = HangingListener::start().await.unwrap();
    let started = Instant::now();
    let r = run(config(json!({
        "name": "hanging",
        "live": format!("{slow}/health"),
        "ready": format!("http://{}/ready", hanging.addr()),
        "timeout": "500ms"
    })))
    .await;
    assert_eq!(
        message(&r),
        format!(
            "live but not ready: GET http://{}/ready: no answer within 500ms (timeout)",
            hanging.addr()
        )
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(r.measurement("ready_time").unwrap().value.is_none());

    let closed = citadel_itest_testkit::closed_port().unwrap();
    let r = run(config(json!({
        "name": "closed",
        "live": format!("http://127.0.0.1:{closed}/health")
    })))
    .await;
    assert_eq!(
        message(&r),
        format!("not live: GET http://127.0.0.1:{closed}/health: connection refused")
    );
}

#[tokio::test]
async fn a_redirect_to_a_login_page_or_an_endless_body_is_not_healthy() {
    // The redirect is the answer: a login page behind it answering 200 does not count.
    let server = raw_server(Duration::ZERO, |head| {
        if head.starts_with("GET /login ") {
            "HTTP/1.1 200 OK\r\ncontent-length: 13\r\nconnection: close\r\n\r\n<html></html>"
                .to_string()
        } else {
            "HTTP/1.1 302 Found\r\nlocation: /login\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                .to_string()
        }
    })
    .await;
    let r = run(config(
        json!({ "name": "svc", "live": format!("{server}/health") }),
    ))
    .await;
    assert_eq!(
        message(&r),
        format!(
            "not live: GET {server}/health: HTTP 302 (redirect to /login) (expected 200): (empty body)"
        )
    );

    let endless = LyingServer::start(|_| Reply::Endless).await;
    let started = Instant::now();
    let r = run(config(
        json!({ "name": "svc", "ready": format!("{}/ready", endless.url()) }),
    ))
    .await;
    assert_eq!(
        message(&r),
        format!(
            "not ready: GET {}/ready: HTTP 200: body over 1 MiB",
            endless.url()
        )
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}
