//! The Prometheus checks against a real Prometheus from the testkit (behind nginx for basic and
//! bearer auth), a closed port and a listener that never answers.

mod common;

use std::time::{Duration, Instant};

use citadel_itest_core::config::Secret;
use citadel_itest_core::{RetryPolicy, Status, Threshold, run_one};
use citadel_itest_external_api::{
    Aspect, ExternalApiConfig, PrometheusAuth, PrometheusCheck, PrometheusTarget,
};
use citadel_itest_testkit::{HangingListener, Prometheus, closed_port};
use common::*;

fn basic(g: &GuardedPrometheus) -> PrometheusTarget {
    PrometheusTarget::new("metrics", g.basic_url())
        .auth(PrometheusAuth::basic(&g.user, Secret::inline(&g.password)))
        .request_timeout(Duration::from_secs(2))
}

#[tokio::test]
async fn all_six_checks_pass_against_a_real_prometheus_with_basic_auth() {
    let g = GuardedPrometheus::start().await;
    let tester = tester(ExternalApiConfig::new().prometheus(basic(&g)));
    let out = run(&tester, None).await;
    print_results(&out.results);
    assert_eq!(out.results.len(), 6);
    assert_all_passed(&out.results);
    assert_no_secret(&out.results, &[&g.password, &g.token]);

    let conn = result(&out.results, "external_api.metrics.connectivity");
    let version = value(conn, "server_version");
    assert!((20_000.0..40_000.0).contains(&version), "{version}");
    let auth = result(&out.results, "external_api.metrics.authentication");
    assert!(value(auth, "rejected_without_time") > 0.0);
    assert!(value(auth, "rejected_wrong_time") > 0.0);
    let ops = result(&out.results, "external_api.metrics.operations");
    assert_eq!(value(ops, "rule_groups"), 1.0);
    assert_eq!(value(ops, "rules"), 2.0);
    assert!(value(ops, "active_targets") <= 1.0);
    let perf = result(&out.results, "external_api.metrics.performance");
    print_latencies(perf);
    assert_eq!(value(perf, "samples"), 50.0);
    assert_eq!(
        perf.measurement("latency_p95").unwrap().threshold,
        Some(Threshold::lt(200.0))
    );
    let eh = result(&out.results, "external_api.metrics.error_handling");
    assert!(value(eh, "refused_time") < 1000.0);
    let silent = value(eh, "silent_timeout");
    assert!((2000.0..2600.0).contains(&silent), "{silent}");
    assert!(value(eh, "bad_query_time") > 0.0);
}

#[tokio::test]
async fn bearer_tokens_work_and_open_servers_are_reported() {
    let g = GuardedPrometheus::start().await;
    let settings = settings();

    let bearer = PrometheusTarget::new("metrics", g.bearer_url())
        .auth(PrometheusAuth::bearer(Secret::inline(&g.token)));
    let r = run_one(&PrometheusCheck::new(
        &bearer,
        Aspect::Authentication,
        &settings,
    ))
    .await;
    r.assert_passed();
    assert_no_secret(std::slice::from_ref(&r), &[&g.token]);

    // A wrong token: the configured credentials themselves are refused.
    let wrong = PrometheusTarget::new("metrics", g.bearer_url())
        .auth(PrometheusAuth::bearer(Secret::inline("not-the-token-5150")));
    let r = run_one(&PrometheusCheck::new(
        &wrong,
        Aspect::Authentication,
        &settings,
    ))
    .await;
    assert_eq!(r.outcome.status(), Status::Failed);
    assert_eq!(
        r.outcome.message().unwrap(),
        format!(
            "GET {}/api/v1/status/buildinfo: HTTP 401 with the configured credentials",
            g.bearer_url()
        )
    );
    assert_no_secret(std::slice::from_ref(&r), &["not-the-token-5150", &g.token]);

    // No auth configured on an open server: skipped as not required.
    let open = PrometheusTarget::new("metrics", g.prometheus.url());
    let r = run_one(&PrometheusCheck::new(
        &open,
        Aspect::Authentication,
        &settings,
    ))
    .await;
    assert_eq!(r.outcome.status(), Status::Skipped);
    assert_eq!(
        r.outcome.message().unwrap(),
        format!(
            "no auth configured for metrics: GET {}/api/v1/status/buildinfo answered 200 without \
             credentials, so authentication is not required",
            g.prometheus.url()
        )
    );

    // Credentials configured but the server lets everyone in: auth is not enforced.
    let claimed = PrometheusTarget::new("metrics", g.prometheus.url()).auth(PrometheusAuth::basic(
        "itest",
        Secret::inline("whatever-pass-1"),
    ));
    let r = run_one(&PrometheusCheck::new(
        &claimed,
        Aspect::Authentication,
        &settings,
    ))
    .await;
    assert_eq!(r.outcome.status(), Status::Failed);
    assert_eq!(
        r.outcome.message().unwrap(),
        format!(
            "GET {}/api/v1/status/buildinfo without credentials answered 200: authentication is \
             not enforced",
            g.prometheus.url()
        )
    );

    // The server demands credentials nobody configured.
    let missing = PrometheusTarget::new("metrics", g.basic_url());
    let r = run_one(&PrometheusCheck::new(
        &missing,
        Aspect::Authentication,
        &settings,
    ))
    .await;
    assert_eq!(r.outcome.status(), Status::Failed);
    assert!(
        r.outcome
            .message()
            .unwrap()
            .ends_with("HTTP 401 without credentials: the server requires authentication but no `auth` is configured"),
        "{:?}",
        r.outcome
    );
}

#[tokio::test]
async fn operations_and_error_handling_without_auth() {
    let prom = Prometheus::builder()
        .rule_file("rules.yml", RULES)
        .start()
        .await
        .expect("start prometheus");
    let t = PrometheusTarget::new("metrics", prom.url()).request_timeout(Duration::from_secs(1));
    let settings = settings();
    let ops = run_one(&PrometheusCheck::new(&t, Aspect::Operations, &settings)).await;
    ops.assert_passed();
    assert_eq!(value(&ops, "active_targets"), 0.0);
    assert_eq!(value(&ops, "rules"), 2.0);
    let started = Instant::now();
    let eh = run_one(&PrometheusCheck::new(&t, Aspect::ErrorHandling, &settings)).await;
    eh.assert_passed();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let silent = value(&eh, "silent_timeout");
    assert!((1000.0..1600.0).contains(&silent), "{silent}");
}

#[tokio::test]
async fn a_closed_port_and_a_silent_listener_fail_within_their_bounds() {
    let silent = HangingListener::start().await.expect("hanging listener");
    let closed = closed_port().expect("closed port");
    let settings = settings()
        .retry(RetryPolicy::new(0, Duration::ZERO))
        .timeout(Duration::from_secs(10));
    for (port, why) in [
        (closed, "connection refused"),
        (silent.port(), "no answer within 1s (request_timeout)"),
    ] {
        let url = format!("http://127.0.0.1:{port}");
        let t = PrometheusTarget::new("metrics", &url).request_timeout(Duration::from_secs(1));
        for aspect in [
            Aspect::Connectivity,
            Aspect::Operations,
            Aspect::Performance,
            Aspect::ErrorHandling,
        ] {
            let started = Instant::now();
            let r = run_one(&PrometheusCheck::new(&t, aspect, &settings)).await;
            let took = started.elapsed();
            assert_eq!(
                r.outcome.status(),
                Status::Failed,
                "{aspect}: {:?}",
                r.outcome
            );
            let expected = match aspect {
                Aspect::Connectivity => format!("GET {url}/-/healthy: {why}"),
                Aspect::ErrorHandling => format!("recover: GET {url}/-/ready: {why}"),
                _ => format!("GET {url}/api/v1/query?query=up: {why}"),
            };
            assert_eq!(r.outcome.message().unwrap(), expected, "{aspect}");
            let bound = match aspect {
                Aspect::ErrorHandling => Duration::from_millis(3000),
                _ => Duration::from_millis(1500),
            };
            assert!(took < bound, "{aspect} against {url} took {took:?}");
            eprintln!("{aspect} against {url}: {expected} ({took:?})");
        }
    }
}
