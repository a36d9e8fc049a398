//! The error-handling checks against real services: nginx (retries with `proxy_next_upstream`,
//! `proxy_read_timeout`, an `error_page` fallback) and a small breaker service written here,
//! each with the fault proxy between it and the model fixture. Every test also proves the fault
//! is gone from the proxy afterwards.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use citadel_itest_core::{Check, CheckExt, Status, TestResult, run_one};
use citadel_itest_faults::checks::{DrillCheck, DrillKind, ProxyControl};
use citadel_itest_faults::config::{
    BreakerExpect, DegradationExpect, DrillConfig, ProxyRef, RetryExpect, ServiceCall,
    TimeoutExpect,
};
use citadel_itest_faults::proxy::{Fault, Mode, Proxy, ProxyConfig, ProxyHandle};
use citadel_itest_testkit::model::ModelServer;
use citadel_itest_testkit::{Nginx, NginxBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The model fixture with an HTTP-mode fault proxy in front of it.
async fn backend() -> (ModelServer, ProxyHandle) {
    let model = ModelServer::start().await.expect("model fixture");
    let proxy = Proxy::start(ProxyConfig::new(model.addr().to_string()).mode(Mode::Http))
        .await
        .expect("fault proxy");
    (model, proxy)
}

/// A location `prefix` proxying to the upstream group (the prefix stripped) with `extra`
/// directives.
fn location(prefix: &str, extra: &str) -> String {
    format!(
        "location {prefix} {{ proxy_pass http://citadel_backend/; proxy_http_version 1.1; \
         proxy_set_header Connection \"\"; {extra} }}"
    )
}

async fn start(builder: NginxBuilder) -> Nginx {
    builder
        .startup_timeout(Duration::from_secs(20))
        .start()
        .await
        .expect("nginx")
}

fn drill(name: &str, url: String, proxy: &ProxyHandle) -> DrillConfig {
    DrillConfig::new(
        name,
        ServiceCall::get(url).request_timeout(Duration::from_secs(10)),
        ProxyRef::control(proxy.url()),
    )
}

async fn run(drill: &DrillConfig, kind: DrillKind, proxy: &ProxyHandle) -> TestResult {
    let check = DrillCheck::new(drill, kind).with_proxy(ProxyControl::local(proxy.clone()));
    assert!(
        check
            .timeout()
            .is_some_and(|t| t < Duration::from_secs(120))
    );
    let result = run_one(&check).await;
    assert_no_fault_left(proxy, &result);
    result
}

fn assert_no_fault_left(proxy: &ProxyHandle, result: &TestResult) {
    assert!(
        proxy.faults().is_empty(),
        "faults left on the proxy after {}: {:?}",
        result.id,
        proxy.faults()
    );
    assert!(
        !result.details.contains_key("leftovers"),
        "{:?}",
        result.details
    );
}

fn message(result: &TestResult) -> String {
    result.outcome.message().unwrap_or_default().to_string()
}

fn value(result: &TestResult, name: &str) -> f64 {
    result
        .measurement(name)
        .and_then(|m| m.value)
        .unwrap_or_else(|| panic!("no measurement {name}: {:?}", result.outcome))
}

/// nginx with three upstream entries, all the proxy (`max_fails=0`: never marked down).
fn three_entries(proxy: &ProxyHandle) -> NginxBuilder {
    let entry = format!("{} max_fails=0", proxy.addr());
    Nginx::builder().upstreams([entry.clone(), entry.clone(), entry])
}

#[tokio::test]
async fn retry_passes_with_proxy_next_upstream_and_fails_without() {
    let (_model, proxy) = backend().await;
    let nginx = start(
        three_entries(&proxy)
            .location(location(
                "/retry/",
                "proxy_next_upstream error timeout http_502; proxy_next_upstream_tries 3;",
            ))
            .location(location("/once/", "proxy_next_upstream off;")),
    )
    .await;
    let declared = RetryExpect::new(3).give_up_within(Duration::from_secs(5));

    let retrying = drill(
        "gateway",
        format!("{}/retry/v1/models", nginx.url()),
        &proxy,
    )
    .retry(declared.clone());
    let result = run(&retrying, DrillKind::Retry, &proxy).await;
    result.assert_passed();
    assert_eq!(result.id.as_str(), "faults.gateway.retry");
    assert_eq!(value(&result, "attempts"), 3.0);
    // Once the fault is gone the gateway answers normally again, and how soon is measured.
    let recovery = value(&result, "recovery_time");
    assert!((0.0..5000.0).contains(&recovery), "{recovery}");
    let spacing = value(&result, "spacing_min");
    assert!(spacing < 200.0, "nginx retries at once: {spacing}ms");
    eprintln!(
        "retry: 3 attempts, min spacing {spacing:.1}ms, gave up after {:.1}ms; details {:?}",
        value(&result, "give_up_time"),
        result.details
    );

    let once = drill("gateway", format!("{}/once/v1/models", nginx.url()), &proxy).retry(declared);
    let result = run(&once, DrillKind::Retry, &proxy).await;
    assert_eq!(
        result.outcome.status(),
        Status::Failed,
        "{:?}",
        result.outcome
    );
    assert!(
        message(&result).contains("made 1 attempt to the dependency for one call; declared 3"),
        "{}",
        message(&result)
    );
    assert_eq!(value(&result, "attempts"), 1.0);
}

#[tokio::test]
async fn retry_backoff_and_a_hang_are_failures() {
    let (_model, proxy) = backend().await;
    let nginx = start(three_entries(&proxy).location(location(
        "/retry/",
        "proxy_next_upstream error timeout http_502; proxy_read_timeout 30s;",
    )))
    .await;
    // nginx retries at once: a declared backoff of 100 ms fails, naming the gap.
    let backoff = drill("gw", format!("{}/retry/v1/models", nginx.url()), &proxy)
        .retry(RetryExpect::new(3).min_backoff(Duration::from_millis(100)));
    let result = run(&backoff, DrillKind::Retry, &proxy).await;
    assert_eq!(result.outcome.status(), Status::Failed);
    assert!(
        message(&result).contains("attempts 1 and 2 were")
            && message(&result).contains("declared backoff at least 100ms"),
        "{}",
        message(&result)
    );
    // A dependency that hangs: the service does not give up within the declared bound.
    let hang = drill("gw", format!("{}/retry/v1/models", nginx.url()), &proxy).retry(
        RetryExpect::new(1)
            .fault(Fault::HttpDelay {
                before_first_byte: Duration::from_secs(20),
            })
            .give_up_within(Duration::from_millis(700)),
    );
    let started = Instant::now();
    let result = run(&hang, DrillKind::Retry, &proxy).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(result.outcome.status(), Status::Failed);
    assert!(
        message(&result).contains("did not give up within 700ms"),
        "{}",
        message(&result)
    );
}

#[tokio::test]
async fn timeout_passes_when_declared_and_fails_when_the_real_one_is_longer() {
    let (_model, proxy) = backend().await;
    let nginx = start(
        Nginx::builder()
            .upstream(proxy.addr())
            .location(location(
                "/t1/",
                "proxy_next_upstream off; proxy_read_timeout 1s;",
            ))
            .location(location(
                "/t3/",
                "proxy_next_upstream off; proxy_read_timeout 3s;",
            )),
    )
    .await;
    let hang = Fault::HttpDelay {
        before_first_byte: Duration::from_secs(30),
    };
    let declared = TimeoutExpect::new(Duration::from_secs(1))
        .fault(hang.clone())
        .status(504)
        .margin(Duration::from_millis(900));

    // The default fault: an HTTP delay longer than the drill waits.
    let d = drill("gateway", format!("{}/t1/v1/models", nginx.url()), &proxy).timeout(
        TimeoutExpect::new(Duration::from_secs(1))
            .status(504)
            .margin(Duration::from_millis(900)),
    );
    let result = run(&d, DrillKind::Timeout, &proxy).await;
    result.assert_passed();
    let answered = value(&result, "answer_time");
    assert!((900.0..1500.0).contains(&answered), "{answered}");
    eprintln!("timeout: nginx proxy_read_timeout 1s answered 504 after {answered:.1}ms");

    // The real timeout is 3 s; declared 1 s.
    let d = drill("gateway", format!("{}/t3/v1/models", nginx.url()), &proxy).timeout(declared);
    let result = run(&d, DrillKind::Timeout, &proxy).await;
    assert_eq!(
        result.outcome.status(),
        Status::Failed,
        "{:?}",
        result.outcome
    );
    assert!(
        message(&result).contains("later than its declared timeout 1.000s (+900ms margin)"),
        "{}",
        message(&result)
    );
    let answered = value(&result, "answer_time");
    assert!((2900.0..3600.0).contains(&answered), "{answered}");

    // Declared longer than it is: the answer comes before the declared timeout.
    let d = drill("gateway", format!("{}/t1/v1/models", nginx.url()), &proxy).timeout(
        TimeoutExpect::new(Duration::from_secs(3))
            .fault(hang)
            .status(504),
    );
    let result = run(&d, DrillKind::Timeout, &proxy).await;
    assert_eq!(result.outcome.status(), Status::Failed);
    assert!(
        message(&result).contains("before its declared timeout 3.000s"),
        "{}",
        message(&result)
    );
}

#[tokio::test]
async fn a_check_that_times_out_still_removes_its_fault() {
    let (_model, proxy) = backend().await;
    let nginx = start(Nginx::builder().upstream(proxy.addr()).location(location(
        "/slow/",
        "proxy_next_upstream off; proxy_read_timeout 60s;",
    )))
    .await;
    let d = drill("gateway", format!("{}/slow/v1/models", nginx.url()), &proxy).timeout(
        TimeoutExpect::new(Duration::from_secs(10)).fault(Fault::HttpDelay {
            before_first_byte: Duration::from_secs(60),
        }),
    );
    let check = DrillCheck::new(&d, DrillKind::Timeout)
        .with_proxy(ProxyControl::local(proxy.clone()))
        .with_timeout(Duration::from_millis(600));
    let started = Instant::now();
    let result = run_one(&check).await;
    assert_eq!(
        result.outcome.status(),
        Status::Error,
        "{:?}",
        result.outcome
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_no_fault_left(&proxy, &result);
    // The proxy forwards again: a call through nginx is served.
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{}/slow/v1/models", nginx.url()))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn degradation_passes_with_a_fallback_and_fails_without() {
    let (_model, proxy) = backend().await;
    let nginx = start(
        Nginx::builder()
            .upstream(proxy.addr())
            .location(location(
                "/fb/",
                "proxy_next_upstream off; proxy_intercept_errors on; \
                 error_page 502 503 504 = @fallback;",
            ))
            .location(
                "location @fallback { default_type application/json; \
                 add_header Retry-After 5 always; \
                 return 503 '{\"error\":{\"code\":\"degraded\",\"message\":\"backend unavailable\"}}'; }",
            )
            .location(location("/plain/", "proxy_next_upstream off;")),
    )
    .await;
    let declared = DegradationExpect::new(503)
        .header("retry-after", "5")
        .json("/error/code", serde_json::json!("degraded"))
        .recover_within(Duration::from_secs(3));

    let d = drill("gateway", format!("{}/fb/v1/models", nginx.url()), &proxy)
        .degradation(declared.clone());
    let result = run(&d, DrillKind::Degradation, &proxy).await;
    result.assert_passed();
    let recovery = value(&result, "recovery_time");
    assert!(recovery < 3000.0, "{recovery}");
    eprintln!("degradation: fallback 503 + Retry-After, recovered {recovery:.1}ms after removal");

    let d = drill(
        "gateway",
        format!("{}/plain/v1/models", nginx.url()),
        &proxy,
    )
    .degradation(declared);
    let result = run(&d, DrillKind::Degradation, &proxy).await;
    assert_eq!(result.outcome.status(), Status::Failed);
    assert!(
        message(&result)
            .contains("answered 502 with its dependency failing; declared fallback 503"),
        "{}",
        message(&result)
    );
}

/// A hand-written circuit breaker: `failures` failed calls open it for `open_for`; then one
/// probe is let through (half-open); its success closes it, its failure opens it again.
#[derive(Debug)]
struct Breaker {
    enabled: bool,
    failures: u32,
    threshold: u32,
    open_for: Duration,
    open_until: Option<Instant>,
}

impl Breaker {
    fn allow(&mut self) -> bool {
        !self.enabled || self.open_until.is_none_or(|t| Instant::now() >= t)
    }

    fn record(&mut self, ok: bool) {
        if ok {
            self.failures = 0;
            self.open_until = None;
            return;
        }
        self.failures += 1;
        if self.open_until.is_some() || self.failures >= self.threshold {
            self.open_until = Some(Instant::now() + self.open_for);
        }
    }
}

/// A tiny HTTP service on 127.0.0.1: every request calls `upstream` through `breaker` and
/// answers 200 with the upstream's body, 502 when it failed, 503 while the breaker is open.
async fn breaker_service(upstream: String, breaker: Breaker) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let breaker = Arc::new(Mutex::new(breaker));
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let breaker = breaker.clone();
            let client = client.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 2048];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let allowed = breaker.lock().unwrap().allow();
                let (status, body) = if !allowed {
                    (503, "{\"error\":\"circuit open\"}".to_string())
                } else {
                    let answer = client.get(&upstream).send().await;
                    let ok = matches!(&answer, Ok(r) if r.status().is_success());
                    breaker.lock().unwrap().record(ok);
                    match answer {
                        Ok(r) if ok => (200, r.text().await.unwrap_or_default()),
                        _ => (502, "{\"error\":\"upstream failed\"}".to_string()),
                    }
                };
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    format!("http://{addr}/api")
}

fn breaker(enabled: bool) -> Breaker {
    Breaker {
        enabled,
        failures: 0,
        threshold: 3,
        open_for: Duration::from_secs(1),
        open_until: None,
    }
}

#[tokio::test]
async fn circuit_breaker_passes_with_a_breaker_and_fails_without() {
    let (_model, proxy) = backend().await;
    let upstream = format!("{}/v1/models", proxy.url());
    // 400 ms of tolerance: two cores run the whole suite at once.
    let declared =
        BreakerExpect::new(3, Duration::from_secs(1)).tolerance(Duration::from_millis(400));

    let url = breaker_service(upstream.clone(), breaker(true)).await;
    let d = drill("svc", url, &proxy).circuit_breaker(declared.clone());
    let result = run(&d, DrillKind::CircuitBreaker, &proxy).await;
    result.assert_passed();
    assert_eq!(result.id.as_str(), "faults.svc.circuit_breaker");
    let open = value(&result, "open_interval");
    assert!((1000.0..1500.0).contains(&open), "{open}");
    let recovery = value(&result, "recovery_time");
    let reopen = value(&result, "reopen_interval");
    assert!(reopen >= 1000.0, "{reopen}");
    let timeline = result.details["timeline"].as_array().unwrap().clone();
    let states: Vec<&str> = timeline
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["closed", "open", "half_open", "closed"],
        "{timeline:?}"
    );
    eprintln!(
        "breaker: open {open:.1}ms, re-open {reopen:.1}ms, recovery {recovery:.1}ms, \
         {} calls while open; timeline {timeline:?}",
        value(&result, "calls_while_open")
    );

    let url = breaker_service(upstream, breaker(false)).await;
    let d = drill("svc", url, &proxy).circuit_breaker(declared);
    let result = run(&d, DrillKind::CircuitBreaker, &proxy).await;
    assert_eq!(
        result.outcome.status(),
        Status::Failed,
        "{:?}",
        result.outcome
    );
    assert!(
        message(&result).contains("the breaker did not open: after the 3rd failure"),
        "{}",
        message(&result)
    );
}

#[tokio::test]
async fn a_drill_whose_service_bypasses_the_proxy_fails() {
    let (model, proxy) = backend().await;
    // nginx talks to the model directly: the fault is never exercised.
    let nginx = start(Nginx::builder().upstream(model.addr()).location(location(
        "/r/",
        "proxy_next_upstream error timeout http_502;",
    )))
    .await;
    let d = drill("gw", format!("{}/r/v1/models", nginx.url()), &proxy).retry(RetryExpect::new(3));
    let result = run(&d, DrillKind::Retry, &proxy).await;
    assert_eq!(result.outcome.status(), Status::Failed);
    assert!(
        message(&result).contains("made no attempt to the dependency through the proxy"),
        "{}",
        message(&result)
    );
}

#[tokio::test]
async fn drills_work_through_the_rest_control_api() {
    let (_model, proxy) = backend().await;
    let control =
        citadel_itest_faults::proxy::control::serve(proxy.clone(), "127.0.0.1:0".parse().unwrap())
            .await
            .expect("control API");
    let nginx = start(three_entries(&proxy).location(location(
        "/retry/",
        "proxy_next_upstream error timeout http_502;",
    )))
    .await;
    // Traffic before the drill is not counted: the mark is the newest event.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for _ in 0..3 {
        let r = client
            .get(format!("{}/retry/v1/models", nginx.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let d = DrillConfig::new(
        "gateway",
        ServiceCall::get(format!("{}/retry/v1/models", nginx.url())),
        ProxyRef::control(control.url()),
    )
    .retry(RetryExpect::new(3));
    let check = DrillCheck::new(&d, DrillKind::Retry);
    assert_eq!(check.proxy().key(), control.url());
    let result = run_one(&check).await;
    result.assert_passed();
    assert_eq!(value(&result, "attempts"), 3.0);
    assert_no_fault_left(&proxy, &result);
    let remote = ProxyControl::remote(&control.url(), Duration::from_secs(5));
    assert!(remote.faults().await.unwrap().is_empty());

    // The same drill declaring 2 attempts fails, naming what was seen.
    let d = d.retry(RetryExpect::new(2));
    let result = run_one(&DrillCheck::new(&d, DrillKind::Retry)).await;
    assert_eq!(result.outcome.status(), Status::Failed);
    assert!(
        message(&result).contains("made 3 attempts to the dependency for one call; declared 2"),
        "{}",
        message(&result)
    );
    assert_no_fault_left(&proxy, &result);
    control.stop().await;
}

#[tokio::test]
async fn an_unreachable_control_api_is_a_harness_error_naming_it() {
    let port = citadel_itest_testkit::closed_port().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let d = DrillConfig::new(
        "gateway",
        ServiceCall::get("http://127.0.0.1:9/"),
        ProxyRef::control(url.clone()),
    )
    .timeout(TimeoutExpect::new(Duration::from_secs(1)));
    let result = run_one(&DrillCheck::new(&d, DrillKind::Timeout)).await;
    assert_eq!(
        result.outcome.status(),
        Status::Error,
        "{:?}",
        result.outcome
    );
    let text = message(&result);
    assert!(
        text.contains(&format!("on the fault proxy at {url}")),
        "{text}"
    );
}

#[test]
fn the_tester_makes_one_check_per_declared_behaviour() {
    use citadel_itest_core::IntegrationTester;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("faults.yaml");
    std::fs::write(
        &path,
        r#"
faults:
  drills:
    - name: gateway
      service: { url: "http://127.0.0.1:58080/v1/models" }
      proxy: { control: "http://127.0.0.1:58190" }
      retry: { attempts: 3 }
      degradation: { status: 503, headers: { retry-after: "" } }
    - name: model-b
      service: { url: "http://127.0.0.1:58080/v1/models" }
      proxy: { control: "http://127.0.0.1:58191" }
      timeout: { timeout: 2s, status: 504, fault: { type: http_delay, before_first_byte: 30s } }
      circuit_breaker: { failures: 5, open_for: 10s }
"#,
    )
    .unwrap();
    let config = citadel_itest_core::config::ConfigLoader::new()
        .file(&path)
        .env(false)
        .section("faults")
        .load()
        .unwrap();
    let mut problems = Vec::new();
    let tester = citadel_itest_faults::from_config(&config, &mut problems).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let checks = tester.checks();
    let ids: Vec<&str> = checks.iter().map(|c| c.id().as_str()).collect();
    assert_eq!(
        ids,
        [
            "faults.gateway.retry",
            "faults.gateway.degradation",
            "faults.model-b.circuit_breaker",
            "faults.model-b.timeout",
        ]
    );
    assert_eq!(
        checks[2].exclusive()[0].as_str(),
        "fault-proxy:http://127.0.0.1:58191"
    );
    assert!(checks.iter().all(|c| c.timeout().is_some()));
}

#[tokio::test]
async fn timeout_through_a_tcp_proxy_with_a_blackhole() {
    let model = ModelServer::start().await.expect("model fixture");
    let proxy = Proxy::start(ProxyConfig::new(model.addr().to_string()))
        .await
        .expect("fault proxy");
    let nginx = start(Nginx::builder().upstream(proxy.addr()).location(location(
        "/t/",
        "proxy_next_upstream off; proxy_read_timeout 1s;",
    )))
    .await;
    let d = drill("gateway", format!("{}/t/v1/models", nginx.url()), &proxy).timeout(
        TimeoutExpect::new(Duration::from_secs(1))
            .fault(Fault::Blackhole)
            .status(504),
    );
    let result = run(&d, DrillKind::Timeout, &proxy).await;
    result.assert_passed();
    assert_eq!(value(&result, "attempts"), 1.0, "one connection accepted");
    // An HTTP fault on a TCP proxy is refused: a harness error naming why.
    let d = drill("gateway", format!("{}/t/v1/models", nginx.url()), &proxy)
        .timeout(TimeoutExpect::new(Duration::from_secs(1)));
    let result = run(&d, DrillKind::Timeout, &proxy).await;
    assert_eq!(
        result.outcome.status(),
        Status::Error,
        "{:?}",
        result.outcome
    );
    assert!(
        message(&result).contains("needs an HTTP-mode proxy"),
        "{}",
        message(&result)
    );
}

#[tokio::test]
async fn circuit_breaker_with_another_threshold_or_interval_fails() {
    let (_model, proxy) = backend().await;
    let upstream = format!("{}/v1/models", proxy.url());
    let declared =
        BreakerExpect::new(3, Duration::from_secs(1)).tolerance(Duration::from_millis(300));

    // Opens after 2 failures; declared 3.
    let early = Breaker {
        threshold: 2,
        ..breaker(true)
    };
    let url = breaker_service(upstream.clone(), early).await;
    let d = drill("svc", url, &proxy).circuit_breaker(declared.clone());
    let result = run(&d, DrillKind::CircuitBreaker, &proxy).await;
    assert_eq!(
        result.outcome.status(),
        Status::Failed,
        "{:?}",
        result.outcome
    );
    assert!(
        message(&result).contains("the breaker opened after 2 failures: call 3"),
        "{}",
        message(&result)
    );

    // Open for 400 ms; declared 1 s.
    let short = Breaker {
        open_for: Duration::from_millis(400),
        ..breaker(true)
    };
    let url = breaker_service(upstream, short).await;
    let d = drill("svc", url, &proxy).circuit_breaker(declared);
    let result = run(&d, DrillKind::CircuitBreaker, &proxy).await;
    assert_eq!(
        result.outcome.status(),
        Status::Failed,
        "{:?}",
        result.outcome
    );
    assert!(
        message(&result).contains("the breaker stayed open for only"),
        "{}",
        message(&result)
    );
    let open = value(&result, "open_interval");
    assert!((380.0..700.0).contains(&open), "{open}");
}
