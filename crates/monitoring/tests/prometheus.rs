//! `monitoring.<prom>.*` against a real Prometheus scraping model-server fixtures, and against
//! servers that lie.

use std::sync::Arc;
use std::time::{Duration, Instant};

use citadel_itest_core::{Check, Status, TestResult, run_one};
use citadel_itest_monitoring::config::PrometheusConfig;
use citadel_itest_monitoring::prometheus;
use citadel_itest_testkit::lying::{LyingServer, Reply};
use citadel_itest_testkit::{HangingListener, ModelServer, Prometheus};
use serde_json::json;

/// Recording and alerting rules that evaluate cleanly against the `models` job.
const GOOD_RULES: &str = r#"groups:
- name: models
  rules:
  - record: job:up:sum
    expr: sum by (job) (up{job="models"})
  - alert: ModelsDown
    expr: up{job="models"} == 0
    for: 1m
  - alert: Watchdog
    expr: vector(1)
"#;

/// A rule that loads fine but fails at every evaluation once `models` has two targets:
/// `on()` matches every series of one side with every series of the other.
const BAD_RULES: &str = r#"groups:
- name: broken
  rules:
  - record: models:up:many_to_many
    expr: up{job="models"} + on() up{job="models"}
"#;

fn config(value: serde_json::Value) -> PrometheusConfig {
    serde_json::from_value(value).expect("a valid prometheus config")
}

fn check(server: &PrometheusConfig, aspect: &str) -> Arc<dyn Check> {
    let id = format!("monitoring.{}.{aspect}", server.name);
    prometheus::checks(std::slice::from_ref(server))
        .into_iter()
        .find(|c| c.id().as_str() == id)
        .unwrap_or_else(|| panic!("no check {id}"))
}

async fn run(server: &PrometheusConfig, aspect: &str) -> TestResult {
    run_one(&*check(server, aspect)).await
}

fn message(r: &TestResult) -> &str {
    r.outcome.message().unwrap_or_default()
}

fn value(r: &TestResult, name: &str) -> f64 {
    r.measurement(name)
        .and_then(|m| m.value)
        .unwrap_or_else(|| panic!("no measurement {name} in {:?}", r.outcome))
}

/// Two model servers and a Prometheus scraping them every second as job `models`.
async fn stack(rules: &[(&str, &str)]) -> (Vec<ModelServer>, Prometheus) {
    let a = ModelServer::builder()
        .backend_id("model-a")
        .start()
        .await
        .unwrap();
    let b = ModelServer::builder()
        .backend_id("model-b")
        .start()
        .await
        .unwrap();
    let mut builder = Prometheus::builder()
        .scrape_target("models", [a.addr(), b.addr()])
        .scrape_interval(Duration::from_secs(1))
        .evaluation_interval(Duration::from_secs(1));
    for (name, contents) in rules {
        builder = builder.rule_file(*name, *contents);
    }
    let prom = builder.start().await.unwrap();
    (vec![a, b], prom)
}

/// Run `aspect` until it passes (Prometheus needs a scrape or two), at most `within`.
async fn until_passed(server: &PrometheusConfig, aspect: &str, within: Duration) -> TestResult {
    let started = Instant::now();
    loop {
        let r = run(server, aspect).await;
        if r.outcome.is_passed() || started.elapsed() > within {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_passes_health_targets_rules_queries_and_alerts() {
    let (_models, prom) = stack(&[("good.yml", GOOD_RULES)]).await;
    let server = config(json!({
        "name": "main",
        "url": prom.url(),
        "jobs": ["models"],
        "max_scrape_duration": "1s",
        "rules": {
            "alerting": ["models/ModelsDown", "Watchdog"],
            "recording": ["job:up:sum"],
            "max_evaluation_time": "1s"
        },
        "queries": [
            { "name": "models_up", "query": "sum(up{job=\"models\"})", "min": 2, "max": 2 },
            { "name": "recorded", "query": "job:up:sum", "min": 2 },
            { "name": "nothing", "query": "up{job=\"nope\"}", "allow_empty": true }
        ],
        "alerts": { "quiet": ["ModelsDown"], "firing": ["Watchdog"] }
    }));
    let ids: Vec<String> = prometheus::checks(std::slice::from_ref(&server))
        .iter()
        .map(|c| c.id().to_string())
        .collect();
    assert_eq!(
        ids,
        [
            "monitoring.main.health",
            "monitoring.main.targets",
            "monitoring.main.rules",
            "monitoring.main.queries",
            "monitoring.main.alerts"
        ]
    );

    let health = run(&server, "health").await;
    health.assert_passed();
    assert!(value(&health, "healthy_time") > 0.0);
    assert!(value(&health, "buildinfo_time") > 0.0);
    assert!(
        health.details["server_version"]
            .as_str()
            .is_some_and(|v| v.starts_with("2.") || v.starts_with("3.")),
        "{:?}",
        health.details
    );

    // The targets check waits for targets Prometheus has not scraped yet.
    let targets = run(&server, "targets").await;
    targets.assert_passed();
    assert_eq!(value(&targets, "active_targets"), 2.0);
    assert_eq!(value(&targets, "targets_up"), 2.0);
    let scrape = value(&targets, "max_scrape_duration");
    assert!(scrape > 0.0 && scrape < 1000.0, "{scrape}");

    let rules = run(&server, "rules").await;
    rules.assert_passed();
    assert_eq!(value(&rules, "rules"), 3.0);
    assert_eq!(value(&rules, "rules_unhealthy"), 0.0);

    // The recorded series appears one evaluation after the first scrape.
    let queries = until_passed(&server, "queries", Duration::from_secs(10)).await;
    queries.assert_passed();
    assert_eq!(value(&queries, "models_up_samples"), 1.0);
    assert_eq!(value(&queries, "nothing_samples"), 0.0);

    let alerts = until_passed(&server, "alerts", Duration::from_secs(10)).await;
    alerts.assert_passed();
    assert!(value(&alerts, "alerts_firing") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_failing_at_evaluation_fails_the_rules_check_naming_it() {
    let (_models, prom) = stack(&[("good.yml", GOOD_RULES), ("broken.yml", BAD_RULES)]).await;
    // The rule only fails once both targets have been scraped: until then `up` is empty.
    let targets = config(json!({ "name": "main", "url": prom.url(), "jobs": ["models"] }));
    run(&targets, "targets").await.assert_passed();

    let all = config(json!({
        "name": "main",
        "url": prom.url(),
        "rules": { "alerting": ["Watchdog"] }
    }));
    let started = Instant::now();
    let r = loop {
        let r = run(&all, "rules").await;
        if !r.outcome.is_passed() || started.elapsed() > Duration::from_secs(10) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(r.outcome.status(), Status::Failed, "{:?}", r.outcome);
    let m = message(&r);
    assert!(
        m.contains("recording rule `broken/models:up:many_to_many` fails evaluation"),
        "{m}"
    );
    assert!(m.contains("lastError"), "{m}");
    assert!(m.contains("many-to-many"), "{m}");
    assert_eq!(value(&r, "rules_unhealthy"), 1.0);

    // Only the listed rules: the broken one is not looked at.
    let listed = config(json!({
        "name": "main",
        "url": prom.url(),
        "rules": { "alerting": ["Watchdog"], "all_healthy": false }
    }));
    run(&listed, "rules").await.assert_passed();

    // Listed by name, it fails even without all_healthy; a rule never loaded is named too.
    let named = config(json!({
        "name": "main",
        "url": prom.url(),
        "rules": {
            "recording": ["models:up:many_to_many"],
            "alerting": ["NoSuchAlert", "job:up:sum"],
            "all_healthy": false
        }
    }));
    let r = run(&named, "rules").await;
    let m = message(&r);
    assert_eq!(r.outcome.status(), Status::Failed, "{m}");
    assert!(
        m.contains("models:up:many_to_many` fails evaluation"),
        "{m}"
    );
    assert!(
        m.contains("alerting rule `NoSuchAlert` is not loaded (loaded alerting rules: models/ModelsDown, models/Watchdog)"),
        "{m}"
    );
    assert!(
        m.contains("rule `models/job:up:sum` is a recording rule, not alerting"),
        "{m}"
    );

    // A bad query names Prometheus's error; a sample out of bounds and an empty result too.
    let queries = config(json!({
        "name": "main",
        "url": prom.url(),
        "queries": [
            { "name": "broken", "query": "sum(up{job=" },
            { "name": "too_high", "query": "count(up{job=\"models\"})", "max": 1 },
            { "name": "empty", "query": "up{job=\"nope\"}" }
        ]
    }));
    let r = run(&queries, "queries").await;
    let m = message(&r);
    assert_eq!(r.outcome.status(), Status::Failed, "{m}");
    assert!(m.contains("query `broken`: GET "), "{m}");
    assert!(m.contains("HTTP 400: bad_data error: "), "{m}");
    assert!(
        m.contains("query `empty` (`up{job=\"nope\"}`): empty result"),
        "{m}"
    );
    assert!(
        m.contains("query `too_high`: sample {} is 2, expected at most 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_target_shows_as_down_with_its_last_error() {
    let (mut models, prom) = stack(&[]).await;
    let server = config(json!({ "name": "main", "url": prom.url(), "jobs": ["models"] }));
    run(&server, "targets").await.assert_passed();

    let stopped = models[1].addr();
    models[1].stop().await.unwrap();
    // Wait for Prometheus to scrape the stopped server (1 s interval).
    let started = Instant::now();
    let r = loop {
        let r = run(&server, "targets").await;
        if r.outcome.status() != Status::Passed || started.elapsed() > Duration::from_secs(10) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let m = message(&r);
    assert_eq!(r.outcome.status(), Status::Failed, "{:?}", r.outcome);
    assert!(
        m.contains(&format!(
            "job `models`: target http://{stopped}/metrics is down: lastError"
        )),
        "{m}"
    );
    assert!(m.contains("connection refused"), "{m}");
    assert!(!m.contains(&models[0].addr().to_string()), "{m}");
    assert_eq!(value(&r, "targets_up"), 1.0);
    assert_eq!(value(&r, "targets_down"), 1.0);

    // A configured job without targets fails, named, listing the jobs that have some.
    let ghost = config(json!({
        "name": "main",
        "url": prom.url(),
        "jobs": ["ghost"]
    }));
    let r = run(&ghost, "targets").await;
    assert_eq!(
        message(&r),
        "job `ghost` has no active targets (jobs with targets: models)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_that_should_be_quiet_but_fire_are_named() {
    let (_models, prom) = stack(&[("good.yml", GOOD_RULES)]).await;
    let server = config(json!({
        "name": "main",
        "url": prom.url(),
        "alerts": { "quiet": ["Watchdog"], "firing": ["ModelsDown", "Ghost"] }
    }));
    // Wait until Watchdog fires (one evaluation).
    let started = Instant::now();
    let r = loop {
        let r = run(&server, "alerts").await;
        if message(&r).contains("alert `Watchdog` is firing")
            || started.elapsed() > Duration::from_secs(10)
        {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let m = message(&r);
    assert_eq!(r.outcome.status(), Status::Failed, "{m}");
    assert!(
        m.contains("alert `Watchdog` is firing (active since "),
        "{m}"
    );
    assert!(
        m.contains("alert `ModelsDown` is not firing (not active)"),
        "{m}"
    );
    assert!(
        m.contains("alert `Ghost` has no alerting rule loaded (loaded: ModelsDown, Watchdog)"),
        "{m}"
    );
}

#[tokio::test]
async fn a_lying_server_fails_health_and_targets() {
    let liar = LyingServer::start(|req| match req.path() {
        "/-/healthy" | "/-/ready" => Reply::html("<html><body>Please log in</body></html>"),
        "/api/v1/status/buildinfo" => Reply::json(200, r#"{"status":"success","data":{}}"#),
        "/api/v1/targets" => Reply::json(
            200,
            r#"{"status":"success","data":{"activeTargets":[{"health":"up"}]}}"#,
        ),
        _ => Reply::text(404, "not found"),
    })
    .await;
    let server = config(json!({
        "name": "liar",
        "url": liar.url(),
        "bearer": "prometheus-bearer-5afe7"
    }));

    let r = run(&server, "health").await;
    let m = message(&r);
    assert_eq!(r.outcome.status(), Status::Failed, "{m}");
    assert!(
        m.contains(&format!(
            "GET {}/-/healthy: HTTP 200 with \"<html><body>Please log in</body></html>\", \
             expected HTTP 200 with \"Prometheus Server is Healthy.\"",
            liar.url()
        )),
        "{m}"
    );
    assert!(m.contains("/-/ready: HTTP 200 with \"<html>"), "{m}");
    assert!(
        m.contains("/api/v1/status/buildinfo: HTTP 200 is not an API answer with build info: `data.version` is missing"),
        "{m}"
    );

    let r = run(&server, "targets").await;
    let m = message(&r);
    assert_eq!(r.outcome.status(), Status::Failed, "{m}");
    assert!(
        m.contains("HTTP 200 is not an API answer with a target list: `data.activeTargets[0].labels` is missing"),
        "{m}"
    );
    // The bearer token went to the server, and is redacted from any text.
    let requests = liar.requests();
    assert!(!requests.is_empty());
    assert!(
        requests
            .iter()
            .all(|r| r.header("authorization") == Some("Bearer prometheus-bearer-5afe7"))
    );
    assert_eq!(
        citadel_itest_core::config::redact_text("token prometheus-bearer-5afe7"),
        "token <redacted>"
    );

    // An HTML page where the API belongs.
    let html = LyingServer::start(|_| Reply::html("<html>login</html>")).await;
    let server = config(
        json!({ "name": "html", "url": html.url(), "queries": [{"name": "q", "query": "up"}] }),
    );
    let r = run(&server, "queries").await;
    let m = message(&r);
    assert_eq!(r.outcome.status(), Status::Failed, "{m}");
    assert!(
        m.contains("is not an API answer with a query result: not JSON"),
        "{m}"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_fails_within_the_timeout() {
    let hanging = HangingListener::start().await.unwrap();
    let server = config(json!({
        "name": "hanging",
        "url": format!("http://{}", hanging.addr()),
        "timeout": "500ms"
    }));
    let started = Instant::now();
    let r = run(&server, "health").await;
    let elapsed = started.elapsed();
    assert_eq!(r.outcome.status(), Status::Failed, "{:?}", r.outcome);
    assert_eq!(
        message(&r),
        format!(
            "GET http://{}/-/healthy: no answer within 500ms (timeout)",
            hanging.addr()
        )
    );
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");

    let closed = citadel_itest_testkit::closed_port().unwrap();
    let server = config(json!({ "name": "closed", "url": format!("http://127.0.0.1:{closed}") }));
    let r = run(&server, "targets").await;
    assert_eq!(
        message(&r),
        format!("GET http://127.0.0.1:{closed}/api/v1/targets?state=active: connection refused")
    );
}
