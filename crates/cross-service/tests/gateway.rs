//! Every gateway check against a real nginx in front of three model server fixtures: all pass on
//! the healthy stack; load balancing fails on undeclared weights; streams fail on each fault.

mod common;

use std::time::Duration;

use citadel_itest_core::Status;
use citadel_itest_cross_service::{Aspect, FailoverAction, FailoverConfig, StickyConfig};
use citadel_itest_testkit::Faults;
use common::{Stack, assert_status, message, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_check_passes_on_the_healthy_stack() {
    let stack = Stack::start_with([1, 1, 1], |b| {
        b.upstream_directive("hash $http_x_session_id consistent;")
    })
    .await;
    let mut gw = stack.config([1, 1, 1]);
    gw.load_balancing.sticky = Some(StickyConfig::new("x-session-id"));
    for aspect in Aspect::ALL {
        if aspect == Aspect::LoadBalancing || aspect == Aspect::Failover {
            continue; // hashing, not round robin, on this gateway; failover: see its own tests
        }
        let r = run(&gw, aspect).await;
        assert_status(&r, Status::Passed);
        eprintln!("{}: {:?} {:?}", r.id, r.outcome.measurements(), r.details);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_passes_every_check_and_fits_equal_weights() {
    let stack = Stack::start([1, 1, 1]).await;
    let gw = stack.config([1, 1, 1]);
    for aspect in Aspect::ALL {
        let r = run(&gw, aspect).await;
        if aspect == Aspect::Stickiness || aspect == Aspect::Failover {
            assert_status(&r, Status::Skipped); // neither is configured
            continue;
        }
        assert_status(&r, Status::Passed);
        eprintln!("{}: {:?}", r.id, r.outcome.measurements());
    }
    let r = run(&gw, Aspect::LoadBalancing).await;
    let p = r.measurement("p_value").and_then(|m| m.value).unwrap();
    assert!(p >= 0.01, "{p}");
    for id in common::IDS {
        let share = r
            .measurement(&format!("share_{id}"))
            .and_then(|m| m.value)
            .unwrap();
        assert!((share - 1.0 / 3.0).abs() < 0.05, "{id}: {share}");
    }
    // Stickiness fails on a round-robin gateway that is said to be sticky.
    let mut sticky = gw.clone();
    sticky.load_balancing.sticky = Some(StickyConfig::new("x-session-id"));
    let r = run(&sticky, Aspect::Stickiness).await;
    assert_status(&r, Status::Failed);
    assert!(message(&r).contains("is not sticky"), "{}", message(&r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeclared_skewed_weights_fail_and_declared_ones_pass() {
    let stack = Stack::start([5, 1, 1]).await;
    let r = run(&stack.config([1, 1, 1]), Aspect::LoadBalancing).await;
    assert_status(&r, Status::Failed);
    let m = message(&r);
    eprintln!("undeclared 5:1:1: {m}");
    assert!(
        m.contains("does not fit the configured weights")
            && m.contains("model-a")
            && m.contains("p = "),
        "{m}"
    );
    assert!(r.details.contains_key("p_value") && r.details.contains_key("chi_square"));
    let r = run(&stack.config([5, 1, 1]), Aspect::LoadBalancing).await;
    assert_status(&r, Status::Passed);
    eprintln!("declared 5:1:1: {:?}", r.details);
    let share = r
        .measurement("share_model-a")
        .and_then(|m| m.value)
        .unwrap();
    assert!((share - 5.0 / 7.0).abs() < 0.05, "{share}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_fail_on_each_fixture_fault_naming_it() {
    let stack = Stack::start([1, 1, 1]).await;
    let mut gw = stack.config([1, 1, 1]);
    gw.round_trip.stall = Duration::from_millis(500);
    for (faults, words) in [
        (Faults::none().with_cut_after(3), "cut off"),
        (Faults::none().with_sse_error_after(2), "in-band error"),
        (Faults::none().with_stall(Duration::from_secs(3)), "stalled"),
        (Faults::none().with_malformed_after(2), "malformed"),
    ] {
        for b in &stack.backends {
            b.set_faults(faults.clone()).unwrap();
        }
        let started = std::time::Instant::now();
        let r = run(&gw, Aspect::Streaming).await;
        assert_status(&r, Status::Failed);
        assert!(message(&r).contains(words), "{words}: {}", message(&r));
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    for b in &stack.backends {
        b.clear_faults();
    }
    assert_status(&run(&gw, Aspect::Streaming).await, Status::Passed);
}

/// nginx tries the next upstream on a 502/503, also for POST (`non_idempotent`: without it nginx
/// never retries a POST that reached a backend, so a backend answering 503 fails a third of
/// the chat completions).
const NEXT_UPSTREAM: &str = "proxy_next_upstream error timeout http_502 http_503 non_idempotent;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_keeps_serving_with_one_backend_down_and_recovers() {
    let stack = Stack::start_with([1, 1, 1], |b| b.location(NEXT_UPSTREAM)).await;
    let mut gw = stack.config([1, 1, 1]);
    // Without an action the check is skipped, saying why.
    let mut no_action = FailoverConfig::new("model-b", FailoverAction::FixtureFaults);
    no_action.action = None;
    gw.failover = Some(no_action);
    let r = run(&gw, Aspect::Failover).await;
    assert_status(&r, Status::Skipped);
    assert!(
        message(&r).contains("failover.action is not set"),
        "{}",
        message(&r)
    );

    let mut f = FailoverConfig::new("model-b", FailoverAction::FixtureFaults);
    f.recovery_time = Duration::from_secs(20);
    gw.failover = Some(f);
    let r = run(&gw, Aspect::Failover).await;
    assert_status(&r, Status::Passed);
    eprintln!("failover: {:?} {:?}", r.outcome.measurements(), r.details);
    let absorbed = r.details["absorbed_by"].as_object().unwrap();
    assert!(absorbed.contains_key("model-a") && absorbed.contains_key("model-c"));
    assert!(!absorbed.contains_key("model-b"), "{absorbed:?}");
    // The backend was brought back.
    assert!(stack.backends[1].faults().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_fails_naming_the_error_rate_when_no_backend_is_healthy() {
    let stack = Stack::start_with([1, 1, 1], |b| b.location(NEXT_UPSTREAM)).await;
    for b in [&stack.backends[0], &stack.backends[2]] {
        b.set_faults(Faults::none().with_unavailable()).unwrap();
    }
    let mut gw = stack.config([1, 1, 1]);
    let mut f = FailoverConfig::new("model-b", FailoverAction::FixtureFaults);
    f.requests = 20;
    gw.failover = Some(f);
    let r = run(&gw, Aspect::Failover).await;
    assert_status(&r, Status::Failed);
    let m = message(&r);
    assert!(
        m.contains("20 of 20 requests") && m.contains("error rate 100.0% over the budget of 5.0%"),
        "{m}"
    );
    assert!(
        stack.backends[1].faults().is_none(),
        "model-b left unavailable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_by_command_runs_the_programs_and_names_a_failing_one() {
    let stack = Stack::start([1, 1, 1]).await;
    let mut gw = stack.config([1, 1, 1]);
    gw.failover = Some(FailoverConfig::new(
        "model-b",
        FailoverAction::Command {
            stop: vec!["false".into()],
            start: vec!["true".into()],
        },
    ));
    let r = run(&gw, Aspect::Failover).await;
    assert_status(&r, Status::Error);
    assert!(
        message(&r).contains("make backend `model-b` unavailable: `false` exited with"),
        "{}",
        message(&r)
    );
}
