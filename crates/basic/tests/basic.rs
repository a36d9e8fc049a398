//! The basic tester against real services: PostgreSQL, Prometheus and nginx started by the
//! testkit, plus a closed port and a listener that never answers.

use std::time::{Duration, Instant};

use citadel_itest_basic::{
    Auth, BasicConfig, BasicTester, ConnectivityCheck, HealthCheck, TargetConfig, from_config,
};
use citadel_itest_core::config::{
    ConfigLoader, PerformanceTargets, RunSettings, Secret, redact_text,
};
use citadel_itest_core::{
    Category, Check, CheckExt, ErrorKind, IntegrationTester, Outcome, RetryPolicy, Status, Suite,
    TestResult, Threshold, Unit, run_one,
};
use citadel_itest_testkit::{HangingListener, Nginx, Postgres, Prometheus, closed_port};
use serde_json::json;

/// The limit `connect_time` and `latency_p95` are held to in these tests.
const LIMIT: Duration = Duration::from_millis(200);

/// A retry policy short enough that failing checks end quickly.
fn quick_retries() -> RunSettings {
    RunSettings {
        timeout: Duration::from_secs(5),
        retries: 2,
        retry_backoff: Duration::from_millis(50),
        ..RunSettings::default()
    }
}

fn tester(run: &RunSettings, targets: impl IntoIterator<Item = TargetConfig>) -> BasicTester {
    let config = targets
        .into_iter()
        .fold(BasicConfig::new(), BasicConfig::target);
    BasicTester::new(config)
        .run_settings(run)
        .performance_targets(&PerformanceTargets {
            latency_p95: LIMIT,
            ..Default::default()
        })
}

/// Runs every check of a tester, one after the other, like a suite would.
async fn run_all(tester: &BasicTester) -> Vec<TestResult> {
    let mut results = Vec::new();
    for check in tester.checks() {
        results.push(run_one(&*check).await);
    }
    results
}

fn value(result: &TestResult, name: &str) -> f64 {
    let m = result
        .measurement(name)
        .unwrap_or_else(|| panic!("{} has no {name}", result.id));
    m.value
        .unwrap_or_else(|| panic!("{} has {name} without a value", result.id))
}

fn assert_latencies(result: &TestResult, samples: u32) {
    result.assert_passed();
    let p50 = value(result, "latency_p50");
    let p95 = value(result, "latency_p95");
    let max = value(result, "latency_max");
    assert!(0.0 < p50 && p50 <= p95 && p95 <= max, "{p50} {p95} {max}");
    let p95m = result.measurement("latency_p95").unwrap();
    assert_eq!(p95m.unit, Unit::Milliseconds);
    assert_eq!(p95m.threshold, Some(Threshold::lt(200.0)));
    assert_eq!(value(result, "samples"), f64::from(samples));
    assert_eq!(result.measurement("samples").unwrap().unit, Unit::Count);
    eprintln!(
        "{}: p50={p50:.3}ms p95={p95:.3}ms max={max:.3}ms",
        result.id
    );
}

#[tokio::test]
async fn postgres_is_reachable_then_refused_once_stopped() {
    let mut pg = Postgres::start().await.expect("start postgres");
    // The DSN carries the superuser's password: it must never be printed.
    let target = TargetConfig::new("db", pg.dsn()).timeout(Duration::from_secs(5));
    let check = ConnectivityCheck::new(&target).connect_time_limit(LIMIT);
    assert_eq!(check.id().as_str(), "basic.db.connectivity");
    assert_eq!(check.category(), Category::Connectivity);

    let result = run_one(&check).await;
    result.assert_passed();
    let connect = result.measurement("connect_time").expect("connect_time");
    assert_eq!(connect.unit, Unit::Milliseconds);
    assert_eq!(connect.threshold, Some(Threshold::lt(200.0)));
    assert!(value(&result, "connect_time") < 200.0);
    assert!(value(&result, "dns_time") >= 0.0);
    assert!(
        result.measurement("tls_handshake_time").is_none(),
        "postgres:// has no TLS step"
    );
    eprintln!(
        "postgres: dns_time={:.3}ms connect_time={:.3}ms",
        value(&result, "dns_time"),
        value(&result, "connect_time")
    );

    pg.stop().await.expect("stop postgres");
    let result = run_one(&check).await;
    assert_eq!(
        result.outcome.status(),
        Status::Failed,
        "{:?}",
        result.outcome
    );
    let message = result.outcome.message().unwrap();
    assert_eq!(
        message,
        format!(
            "connect to db at 127.0.0.1:{}: connection refused",
            pg.port()
        )
    );
    assert!(!format!("{:?}", result.outcome).contains(pg.password()));
}

#[tokio::test]
async fn prometheus_readiness_passes_with_latencies() {
    let prom = Prometheus::builder()
        .start()
        .await
        .expect("start prometheus");
    let target = TargetConfig::new("prometheus", prom.url())
        .health_path("/-/ready")
        .samples(7)
        .timeout(Duration::from_secs(10));
    let check = HealthCheck::new(&target).latency_p95_limit(LIMIT);
    assert_eq!(check.id().as_str(), "basic.prometheus.health");
    assert_eq!(check.category(), Category::Health);
    let result = run_one(&check).await;
    assert_latencies(&result, 7);

    // The same target through the tester: connectivity and health, both passing.
    let results = run_all(&tester(&quick_retries(), [target])).await;
    let ids: Vec<&str> = results.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        ["basic.prometheus.connectivity", "basic.prometheus.health"]
    );
    results.iter().for_each(TestResult::assert_passed);
    assert!(value(&results[0], "connect_time") < 200.0);
    eprintln!(
        "prometheus: connect_time={:.3}ms",
        value(&results[0], "connect_time")
    );
}

#[tokio::test]
async fn prometheus_buildinfo_json_pointer_is_asserted() {
    let prom = Prometheus::builder()
        .start()
        .await
        .expect("start prometheus");
    let target = |equals| {
        TargetConfig::new("prometheus", prom.url())
            .health_path("/api/v1/status/buildinfo")
            .expect_status(200)
            .expect_json("/status", equals)
            .samples(3)
            .timeout(Duration::from_secs(10))
    };

    let result =
        run_one(&HealthCheck::new(&target(json!("success"))).latency_p95_limit(LIMIT)).await;
    assert_latencies(&result, 3);

    let result = run_one(&HealthCheck::new(&target(json!("nope"))).latency_p95_limit(LIMIT)).await;
    assert_eq!(
        result.outcome.status(),
        Status::Failed,
        "{:?}",
        result.outcome
    );
    assert_eq!(
        result.outcome.message().unwrap(),
        format!(
            "GET {}/api/v1/status/buildinfo returned JSON pointer /status = \"success\", \
             expected \"nope\"",
            prom.url()
        )
    );
    // What was measured before the verdict is kept.
    assert_eq!(value(&result, "samples"), 1.0);

    // A pointer the body does not have.
    let missing = TargetConfig::new("prometheus", prom.url())
        .health_path("/api/v1/status/buildinfo")
        .expect_json("/data/no_such_field", json!(1));
    let result = run_one(&HealthCheck::new(&missing).latency_p95_limit(LIMIT)).await;
    assert_eq!(result.outcome.status(), Status::Failed);
    let message = result.outcome.message().unwrap();
    assert!(
        message.contains("returned JSON without pointer /data/no_such_field: {"),
        "{message}"
    );
}

#[tokio::test]
async fn nginx_health_passes_and_wrong_answers_fail() {
    let nginx = Nginx::builder()
        .location("location = /down { default_type text/plain; return 503 'upstream down\\n'; }")
        .start()
        .await
        .expect("start nginx");
    let target = TargetConfig::new("gateway", nginx.url())
        .health_path("/health")
        .expect_json("/status", json!("ok"))
        .timeout(Duration::from_secs(5));
    let results = run_all(&tester(&quick_retries(), [target])).await;
    results.iter().for_each(TestResult::assert_passed);
    assert_latencies(&results[1], 5);
    eprintln!(
        "nginx: connect_time={:.3}ms",
        value(&results[0], "connect_time")
    );

    let down = TargetConfig::new("gateway", nginx.url()).health_path("/down");
    let result = run_one(&HealthCheck::new(&down).latency_p95_limit(LIMIT)).await;
    assert_eq!(result.outcome.status(), Status::Failed);
    assert_eq!(
        result.outcome.message().unwrap(),
        format!(
            "GET {}/down returned 503, expected 2xx: upstream down",
            nginx.url()
        )
    );

    let wrong_status = TargetConfig::new("gateway", nginx.url())
        .health_path("/health")
        .expect_status(204);
    let result = run_one(&HealthCheck::new(&wrong_status).latency_p95_limit(LIMIT)).await;
    assert_eq!(
        result.outcome.message().unwrap(),
        format!(
            "GET {}/health returned 200, expected 204: {{\"status\":\"ok\"}}",
            nginx.url()
        )
    );
}

#[tokio::test]
async fn credentials_are_sent_to_nginx() {
    let nginx = Nginx::builder()
        .location(
            "location = /bearer { if ($http_authorization != 'Bearer tok-4711-abcdef') \
             { return 401; } return 200 'yes'; }",
        )
        .location(
            // base64("ops:pw-0815-ghijk")
            "location = /basic { if ($http_authorization != 'Basic b3BzOnB3LTA4MTUtZ2hpams=') \
             { return 401; } return 200 'yes'; }",
        )
        .start()
        .await
        .expect("start nginx");
    let bearer = TargetConfig::new("gateway", nginx.url())
        .health_path("/bearer")
        .samples(2)
        .auth(Auth::bearer(Secret::inline("tok-4711-abcdef")));
    run_one(&HealthCheck::new(&bearer).latency_p95_limit(LIMIT))
        .await
        .assert_passed();

    let basic = TargetConfig::new("gateway", nginx.url())
        .health_path("/basic")
        .samples(2)
        .auth(Auth::basic("ops", Secret::inline("pw-0815-ghijk")));
    run_one(&HealthCheck::new(&basic).latency_p95_limit(LIMIT))
        .await
        .assert_passed();

    let wrong = TargetConfig::new("gateway", nginx.url())
        .health_path("/bearer")
        .auth(Auth::bearer(Secret::inline("tok-wrong-000000")));
    let result = run_one(&HealthCheck::new(&wrong).latency_p95_limit(LIMIT)).await;
    assert_eq!(result.outcome.status(), Status::Failed);
    assert!(
        result
            .outcome
            .message()
            .unwrap()
            .contains("returned 401, expected 2xx")
    );

    let missing = TargetConfig::new("gateway", nginx.url())
        .health_path("/bearer")
        .auth(Auth::bearer(Secret::env(
            "CITADEL_ITEST_BASIC_TEST_NEVER_SET",
        )));
    let result = run_one(&HealthCheck::new(&missing).latency_p95_limit(LIMIT)).await;
    assert_eq!(
        result.outcome,
        Outcome::error(
            ErrorKind::Harness,
            "resolve credentials of target gateway: environment variable \
             CITADEL_ITEST_BASIC_TEST_NEVER_SET is not set"
        )
    );
}

#[tokio::test]
async fn closed_port_is_refused_after_retries() {
    let port = closed_port().expect("closed port");
    let target =
        TargetConfig::new("gateway", format!("http://127.0.0.1:{port}")).health_path("/health");
    let started = Instant::now();
    let results = run_all(&tester(&quick_retries(), [target])).await;
    let elapsed = started.elapsed();

    let [connectivity, health] = &results[..] else {
        panic!("two checks: {results:?}")
    };
    assert_eq!(connectivity.outcome.status(), Status::Failed);
    assert_eq!(
        connectivity.outcome.message().unwrap(),
        format!("connect to gateway at 127.0.0.1:{port}: connection refused")
    );
    assert_eq!(connectivity.attempts, 3, "first attempt + 2 retries");
    assert!(connectivity.measurement("connect_time").is_none());
    assert!(connectivity.measurement("dns_time").is_some());

    assert_eq!(health.outcome.status(), Status::Failed);
    assert_eq!(
        health.outcome.message().unwrap(),
        format!("GET http://127.0.0.1:{port}/health: connection refused")
    );
    assert_eq!(health.attempts, 3);
    assert_eq!(value(health, "samples"), 0.0);
    // 2 checks x (50 ms + 100 ms backoff) plus refused connects.
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
}

#[tokio::test]
async fn retries_until_the_listener_comes_up() {
    let port = closed_port().expect("closed port");
    let server = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind");
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let run = RunSettings {
        retries: 10,
        retry_backoff: Duration::from_millis(50),
        ..quick_retries()
    };
    let target = TargetConfig::new("late", format!("tcp://127.0.0.1:{port}"));
    let results = run_all(&tester(&run, [target])).await;
    server.abort();
    results[0].assert_passed();
    assert!(results[0].attempts > 1, "attempts: {}", results[0].attempts);
    assert!(value(&results[0], "connect_time") < 200.0);
}

#[tokio::test]
async fn hanging_listener_times_out_within_the_target_timeout() {
    let hanging = HangingListener::start()
        .await
        .expect("start hanging listener");
    let target = TargetConfig::new("stuck", format!("http://127.0.0.1:{}", hanging.port()))
        .health_path("/health")
        .timeout(Duration::from_secs(1));
    // Retries on: a timeout still ends the check at its budget.
    let results = {
        let tester = tester(&quick_retries(), [target.clone()]);
        let health = tester.checks().pop().unwrap();
        assert_eq!(health.id().as_str(), "basic.stuck.health");
        let started = Instant::now();
        let result = run_one(&*health).await;
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_millis(1500), "took {elapsed:?}");
        eprintln!("hanging listener: health ended after {elapsed:?}");
        result
    };
    match &results.outcome {
        Outcome::Error {
            kind: ErrorKind::Timeout,
            message,
        } => {
            assert!(
                message.contains("timed out") || message.contains("did not finish"),
                "{message}"
            )
        }
        other => panic!("expected Error{{Timeout}}, got {other:?}"),
    }

    // It accepts connections: connectivity passes.
    run_one(&ConnectivityCheck::new(&target).connect_time_limit(LIMIT))
        .await
        .assert_passed();

    // Over https the handshake never completes: a timeout naming the step, at the budget.
    let tls = TargetConfig::new("stuck", format!("https://127.0.0.1:{}", hanging.port()))
        .timeout(Duration::from_millis(500));
    let started = Instant::now();
    let result = run_one(&ConnectivityCheck::new(&tls).connect_time_limit(LIMIT)).await;
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        result.outcome,
        Outcome::error(
            ErrorKind::Timeout,
            format!(
                "tls handshake with stuck at 127.0.0.1:{}: timed out at the check's deadline",
                hanging.port()
            )
        )
    );
}

#[tokio::test]
async fn https_to_a_plain_http_server_fails_the_tls_handshake() {
    let nginx = Nginx::start().await.expect("start nginx");
    let target = TargetConfig::new("gateway", format!("https://127.0.0.1:{}", nginx.port()))
        .timeout(Duration::from_secs(5));
    let result = run_one(&ConnectivityCheck::new(&target).connect_time_limit(LIMIT)).await;
    assert_eq!(
        result.outcome.status(),
        Status::Failed,
        "{:?}",
        result.outcome
    );
    let message = result.outcome.message().unwrap();
    let prefix = format!("tls handshake with gateway at 127.0.0.1:{}: ", nginx.port());
    assert!(message.starts_with(&prefix), "{message}");
    eprintln!("tls failure: {message}");
    // TCP worked and was measured; the handshake did not complete.
    assert!(result.measurement("connect_time").is_some());
    assert!(result.measurement("tls_handshake_time").is_none());
}

#[tokio::test]
async fn config_problems_are_all_listed_with_their_paths() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("itest.yaml");
    std::fs::write(
        &file,
        r#"
basic:
  targets:
    - name: Gateway!
      url: "http://[::1"
      timeout: 0s
      samples: 0
    - name: db
      url: postgres://127.0.0.1:5432
      health_path: /health
    - name: db
      url: tcp://127.0.0.1
      expect_status: 200
    - name: web
      url: http://127.0.0.1:8080
      health_path: health
      expect_status: 700
      samples: 1001
      expect_json: { pointer: status, equals: ok }
      auth: { bearer: { env: CITADEL_ITEST_BASIC_TEST_NEVER_SET } }
    - name: ok
      url: https://localhost
      health_path: /ready
      auth: { basic: { username: "a:b", password: { file: /nonexistent/citadel-itest-pw } } }
"#,
    )
    .unwrap();
    let config = ConfigLoader::new()
        .env(false)
        .section("basic")
        .file(&file)
        .load()
        .unwrap();
    let mut problems = Vec::new();
    assert!(from_config(&config, &mut problems).is_none());
    let found: Vec<(&str, &str)> = problems
        .iter()
        .map(|p| (p.path.as_str(), p.message.as_str()))
        .collect();
    let paths: Vec<&str> = found.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        paths,
        [
            "basic.targets[0].name",
            "basic.targets[0].url",
            "basic.targets[0].timeout",
            "basic.targets[0].samples",
            "basic.targets[1].health_path",
            "basic.targets[2].name",
            "basic.targets[2].url",
            "basic.targets[2].expect_status",
            "basic.targets[3].health_path",
            "basic.targets[3].expect_status",
            "basic.targets[3].expect_json.pointer",
            "basic.targets[3].samples",
            "basic.targets[3].auth.bearer",
            "basic.targets[4].auth.basic.username",
            "basic.targets[4].auth.basic.password",
        ],
        "{found:#?}"
    );
    let message = |path: &str| found.iter().find(|(p, _)| *p == path).unwrap().1;
    assert!(message("basic.targets[0].url").starts_with("invalid URL `http://[::1`"));
    assert_eq!(
        message("basic.targets[1].health_path"),
        "needs an http or https URL, not `postgres`"
    );
    assert_eq!(
        message("basic.targets[2].name"),
        "duplicate target name `db` (also targets[1])"
    );
    assert_eq!(
        message("basic.targets[2].url"),
        "URL `tcp://127.0.0.1` has no port and scheme `tcp` has no default port"
    );
    assert_eq!(
        message("basic.targets[3].auth.bearer"),
        "environment variable CITADEL_ITEST_BASIC_TEST_NEVER_SET is not set"
    );
    let file_name = file.display().to_string();
    assert!(
        problems
            .iter()
            .all(|p| p.source.as_deref() == Some(file_name.as_str())),
        "{problems:?}"
    );
}

#[tokio::test]
async fn unknown_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("itest.yaml");
    std::fs::write(
        &file,
        "basic:\n  targets:\n    - name: a\n      url: http://127.0.0.1\n      helth_path: /x\n",
    )
    .unwrap();
    let config = ConfigLoader::new()
        .env(false)
        .section("basic")
        .file(&file)
        .load()
        .unwrap();
    let mut problems = Vec::new();
    assert!(from_config(&config, &mut problems).is_none());
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "basic.targets[0].helth_path");
    assert!(
        problems[0]
            .message
            .contains("unknown field: found `helth_path`"),
        "{problems:?}"
    );
}

#[tokio::test]
async fn a_valid_yaml_section_runs_as_a_suite() {
    let prom = Prometheus::builder()
        .start()
        .await
        .expect("start prometheus");
    let port = closed_port().expect("closed port");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("itest.yaml");
    std::fs::write(
        &file,
        format!(
            r#"
run:
  timeout: 5s
  retries: 1
  retry_backoff: 50ms
performance_targets:
  latency_p95: 250ms
basic:
  targets:
    - name: prometheus
      url: {url}
      health_path: /api/v1/status/buildinfo
      expect_status: 200
      expect_json: {{ pointer: /status, equals: success }}
      samples: 3
    - name: missing
      url: tcp://127.0.0.1:{port}
      timeout: 2s
"#,
            url = prom.url()
        ),
    )
    .unwrap();
    let config = ConfigLoader::new()
        .env(false)
        .section("basic")
        .file(&file)
        .load()
        .unwrap();
    let mut problems = Vec::new();
    let tester = from_config(&config, &mut problems).expect("valid section");
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(tester.config().targets.len(), 2);

    let output = Suite::builder()
        .tester(&tester)
        .build()
        .run(Vec::new())
        .await;
    let by_id: Vec<(&str, Status)> = output
        .results
        .iter()
        .map(|r| (r.id.as_str(), r.outcome.status()))
        .collect();
    assert_eq!(
        by_id,
        [
            ("basic.prometheus.connectivity", Status::Passed),
            ("basic.prometheus.health", Status::Passed),
            ("basic.missing.connectivity", Status::Failed),
        ]
    );
    assert!(output.results.iter().all(|r| r.tester == "basic"));
    let health = &output.results[1];
    assert_eq!(
        health.measurement("latency_p95").unwrap().threshold,
        Some(Threshold::lt(250.0))
    );
    assert_eq!(output.results[2].attempts, 2);
    assert_eq!(output.summary.counts.failed, 1);
    assert_eq!(output.summary.by_category[&Category::Health].passed, 1);
}

#[tokio::test]
async fn an_inline_bearer_token_never_shows() {
    const TOKEN: &str = "tok-9f8e7d6c5b4a-inline";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("itest.yaml");
    let nginx = Nginx::builder()
        .location(
            "location = /echo { default_type text/plain; return 503 'got $http_authorization'; }",
        )
        .start()
        .await
        .expect("start nginx");
    let hanging = HangingListener::start()
        .await
        .expect("start hanging listener");
    let port = closed_port().expect("closed port");
    std::fs::write(
        &file,
        format!(
            r#"
run:
  retries: 0
basic:
  targets:
    - name: echo
      url: {nginx_url}
      health_path: /echo
      auth: {{ bearer: {TOKEN} }}
    - name: json
      url: {nginx_url}
      health_path: /echo
      expect_status: 503
      expect_json: {{ pointer: /x, equals: 1 }}
      auth: {{ bearer: {TOKEN} }}
    - name: closed
      url: http://ops:{TOKEN}@127.0.0.1:{port}
      health_path: /health
    - name: stuck
      url: http://127.0.0.1:{stuck}
      health_path: /health
      timeout: 500ms
      auth: {{ bearer: {TOKEN} }}
"#,
            nginx_url = nginx.url(),
            stuck = hanging.port(),
        ),
    )
    .unwrap();
    let config = ConfigLoader::new()
        .env(false)
        .section("basic")
        .file(&file)
        .load()
        .unwrap();
    let mut problems = Vec::new();
    let tester = from_config(&config, &mut problems).expect("valid section");
    assert!(problems.is_empty(), "{problems:?}");

    let mut debug = format!("{tester:?}");
    for target in &tester.config().targets {
        let connectivity = ConnectivityCheck::new(target).connect_time_limit(LIMIT);
        let health = HealthCheck::new(target).latency_p95_limit(LIMIT);
        debug.push_str(&format!("\n{target:?}\n{connectivity:?}\n{health:?}"));
    }
    assert!(!debug.contains(TOKEN), "{debug}");
    assert!(debug.contains("Secret(<redacted>)"), "{debug}");
    let serialized = serde_json::to_string(tester.config()).unwrap();
    assert!(!serialized.contains(TOKEN), "{serialized}");
    assert!(!format!("{:?}", config.summary()).contains(TOKEN));

    let results = run_all(&tester).await;
    let statuses: Vec<(&str, Status)> = results
        .iter()
        .map(|r| (r.id.as_str(), r.outcome.status()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("basic.echo.connectivity", Status::Passed),
            ("basic.echo.health", Status::Failed),
            ("basic.json.connectivity", Status::Passed),
            ("basic.json.health", Status::Failed),
            ("basic.closed.connectivity", Status::Failed),
            ("basic.closed.health", Status::Failed),
            ("basic.stuck.connectivity", Status::Passed),
            ("basic.stuck.health", Status::Error),
        ]
    );
    for r in &results {
        let shown = format!("{:?} {}", r.outcome, serde_json::to_string(r).unwrap());
        assert!(!shown.contains(TOKEN), "{shown}");
        eprintln!("{}: {}", r.id, r.outcome.message().unwrap_or("passed"));
    }
    // The server really echoed the header back; the preview redacted it.
    let echo = results[1].outcome.message().unwrap();
    assert!(
        echo.ends_with("returned 503, expected 2xx: got Bearer <redacted>"),
        "{echo}"
    );
    let closed = results[5].outcome.message().unwrap();
    assert_eq!(
        closed,
        format!("GET http://ops:<redacted>@127.0.0.1:{port}/health: connection refused")
    );
    assert_eq!(redact_text(TOKEN), "<redacted>");
}

/// Checks compose with core's wrappers when embedded directly.
#[tokio::test]
async fn embedded_checks_compose_with_core_wrappers() {
    let port = closed_port().expect("closed port");
    let target = TargetConfig::new("gateway", format!("http://127.0.0.1:{port}"));
    let check = ConnectivityCheck::new(&target)
        .connect_time_limit(LIMIT)
        .with_timeout(Duration::from_secs(2))
        .retry_until_ready(RetryPolicy::new(1, Duration::from_millis(20)));
    let result = run_one(&check).await;
    assert_eq!(result.attempts, 2);
    assert_eq!(result.outcome.status(), Status::Failed);

    // No health_path: the health check says so instead of guessing.
    let result = run_one(&HealthCheck::new(&target).latency_p95_limit(LIMIT)).await;
    assert_eq!(
        result.outcome,
        Outcome::skipped("target gateway has no health_path")
    );

    // An unusable URL is a harness error, not a pass.
    let bad = TargetConfig::new("bad", "tcp://127.0.0.1");
    let result = run_one(&ConnectivityCheck::new(&bad).connect_time_limit(LIMIT)).await;
    assert_eq!(result.outcome.status(), Status::Error);
}
