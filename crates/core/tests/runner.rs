//! The suite runner's contract: timeouts, concurrency, panics, cancellation, retries.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use citadel_itest_core::report::JsonReporter;
use citadel_itest_core::{
    Category, CheckExt, ErrorKind, Outcome, Reporter, RetryPolicy, Status, Suite, check_fn, run_one,
};
use tokio_util::sync::CancellationToken;

fn sleeper(id: &str, d: Duration) -> Arc<dyn citadel_itest_core::Check> {
    check_fn(id.to_string(), Category::Operations, move |_| async move {
        tokio::time::sleep(d).await;
        Ok(Outcome::passed())
    })
    .boxed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_past_its_timeout_is_an_error_timeout_within_100ms() {
    let check = check_fn("t.slow", Category::Operations, |_| async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok(Outcome::passed())
    })
    .with_timeout(Duration::from_millis(300));
    let t = Instant::now();
    let out = Suite::builder()
        .check("t", check.boxed())
        .build()
        .run(Vec::new())
        .await;
    let elapsed = t.elapsed();
    let r = &out.results[0];
    assert!(
        matches!(
            r.outcome,
            Outcome::Error {
                kind: ErrorKind::Timeout,
                ..
            }
        ),
        "{:?}",
        r.outcome
    );
    assert!(elapsed < Duration::from_millis(400), "took {elapsed:?}");
    assert!(r.outcome.message().unwrap().contains("300ms"));
    assert_eq!(out.summary.exit_code(), 1);

    // run_one applies the same rule.
    let check = check_fn("t.slow", Category::Operations, |_| async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok(Outcome::passed())
    })
    .with_timeout(Duration::from_millis(200));
    let t = Instant::now();
    let r = run_one(&check).await;
    assert!(matches!(
        r.outcome,
        Outcome::Error {
            kind: ErrorKind::Timeout,
            ..
        }
    ));
    assert!(t.elapsed() < Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_limit_is_never_exceeded() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut b = Suite::builder().concurrency(4);
    for i in 0..40 {
        let (in_flight, peak) = (in_flight.clone(), peak.clone());
        b = b.check(
            "t",
            check_fn(format!("t.c{i}"), Category::Load, move |_| {
                let (in_flight, peak) = (in_flight.clone(), peak.clone());
                async move {
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    Ok(Outcome::passed())
                }
            })
            .boxed(),
        );
    }
    let out = b.build().run(Vec::new()).await;
    assert_eq!(out.summary.counts.passed, 40);
    let peak = peak.load(Ordering::SeqCst);
    assert_eq!(
        peak, 4,
        "peak concurrency {peak} (limit 4, and 40 checks must saturate it)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_check_is_an_error_and_the_others_still_run() {
    let out = Suite::builder()
        .check(
            "t",
            check_fn("t.boom", Category::Operations, |_| async {
                if true {
                    panic!("kaboom in check");
                }
                Ok(Outcome::passed())
            })
            .boxed(),
        )
        .check("t", sleeper("t.fine1", Duration::from_millis(5)))
        .check("t", sleeper("t.fine2", Duration::from_millis(5)))
        .build()
        .run(Vec::new())
        .await;
    let boom = &out.results[0];
    match &boom.outcome {
        Outcome::Error {
            kind: ErrorKind::Panicked,
            message,
        } => {
            assert!(message.contains("kaboom in check"), "{message}")
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
    assert!(out.results[1].outcome.is_passed());
    assert!(out.results[2].outcome.is_passed());
    assert_eq!(out.summary.counts.errors, 1);
    assert_eq!(out.summary.counts.passed, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_marks_unfinished_checks_and_the_report_is_still_written() {
    let token = CancellationToken::new();
    let cleaned = Arc::new(AtomicBool::new(false));
    let cleaned2 = cleaned.clone();
    let cleanup_check = check_fn("t.cleanup", Category::Operations, move |ctx| {
        let cleaned = cleaned2.clone();
        async move {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(30)) => Ok(Outcome::passed()),
                _ = ctx.cancel.cancelled() => {
                    // Cleanup that takes a little while still runs inside the grace period.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    cleaned.store(true, Ordering::SeqCst);
                    Err("cancelled during operations".into())
                }
            }
        }
    });
    let mut b = Suite::builder()
        .concurrency(2)
        .cancel_grace(Duration::from_millis(300))
        .cancellation(token.clone())
        .check("t", sleeper("t.quick", Duration::from_millis(1)))
        .check("t", cleanup_check.boxed());
    for i in 0..5 {
        b = b.check("t", sleeper(&format!("t.long{i}"), Duration::from_secs(30)));
    }
    let buf = Arc::new(Mutex::new(Vec::new()));
    let reporters: Vec<Box<dyn Reporter>> = vec![Box::new(JsonReporter::to_memory(buf.clone()))];
    tokio::spawn({
        let token = token.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            token.cancel();
        }
    });
    let t = Instant::now();
    let out = b.build().run(reporters).await;
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        cleaned.load(Ordering::SeqCst),
        "the check's cleanup must run"
    );
    assert!(out.summary.interrupted);
    assert_eq!(out.summary.exit_code(), 130);
    assert!(out.results[0].outcome.is_passed());
    for r in &out.results[1..] {
        assert!(
            matches!(
                r.outcome,
                Outcome::Error {
                    kind: ErrorKind::Cancelled,
                    ..
                }
            ),
            "{} {:?}",
            r.id,
            r.outcome
        );
    }
    let report: serde_json::Value = serde_json::from_slice(&buf.lock().unwrap()).unwrap();
    assert_eq!(report["interrupted"], true);
    assert_eq!(report["results"].as_array().unwrap().len(), 7);
    assert_eq!(report["summary"]["errors"], 6);
    assert_eq!(report["results"][3]["error_kind"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_until_ready_stop_at_the_first_pass() {
    let calls = Arc::new(AtomicU32::new(0));
    let c2 = calls.clone();
    let check = check_fn("t.ready", Category::Health, move |ctx| {
        let calls = c2.clone();
        async move {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            assert_eq!(n, ctx.attempt);
            if n < 3 {
                Ok(Outcome::failed("not ready yet"))
            } else {
                Ok(Outcome::passed())
            }
        }
    })
    .retry_until_ready(RetryPolicy::new(10, Duration::from_millis(10)));
    let r = run_one(&check).await;
    r.assert_passed();
    assert_eq!(r.attempts, 3);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // Why the earlier attempts did not pass is kept for the report.
    assert_eq!(
        r.details["earlier_attempts"],
        serde_json::json!([
            "attempt 1: failed: not ready yet",
            "attempt 2: failed: not ready yet"
        ])
    );

    // Out of retries: the last failure is the verdict.
    let check = check_fn("t.never", Category::Health, |_| async {
        Ok(Outcome::failed("down"))
    })
    .retry_until_ready(RetryPolicy::new(2, Duration::from_millis(5)));
    let r = run_one(&check).await;
    assert_eq!(r.outcome.status(), Status::Failed);
    assert_eq!(r.attempts, 3);

    // A retry that would cross the deadline is not started.
    let check = check_fn("t.deadline", Category::Health, |_| async {
        Ok(Outcome::failed("down"))
    })
    .retry_until_ready(RetryPolicy::new(50, Duration::from_millis(100)))
    .with_timeout(Duration::from_millis(250));
    let r = run_one(&check).await;
    assert_eq!(r.outcome.status(), Status::Failed, "{:?}", r.outcome);
    assert!(r.attempts >= 2 && r.attempts <= 3, "{}", r.attempts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_fast_and_deadline_cancel_the_rest_with_a_reason() {
    let out = Suite::builder()
        .concurrency(1)
        .cancel_grace(Duration::from_millis(100))
        .fail_fast(true)
        .check(
            "t",
            check_fn("t.bad", Category::Health, |_| async {
                Ok(Outcome::failed("no"))
            })
            .boxed(),
        )
        .check("t", sleeper("t.later", Duration::from_secs(10)))
        .build()
        .run(Vec::new())
        .await;
    assert_eq!(out.results[0].outcome.status(), Status::Failed);
    assert!(matches!(
        out.results[1].outcome,
        Outcome::Error {
            kind: ErrorKind::Cancelled,
            ..
        }
    ));
    assert!(
        out.summary
            .cancel_reason
            .as_deref()
            .unwrap()
            .contains("fail-fast after t.bad")
    );
    assert!(!out.summary.interrupted);

    let t = Instant::now();
    let out = Suite::builder()
        .deadline(Some(Duration::from_millis(200)))
        .cancel_grace(Duration::from_millis(100))
        .check("t", sleeper("t.forever", Duration::from_secs(10)))
        .build()
        .run(Vec::new())
        .await;
    assert!(t.elapsed() < Duration::from_secs(1));
    let msg = out.results[0].outcome.message().unwrap();
    assert!(msg.contains("run deadline of 200ms reached"), "{msg}");
    assert_eq!(out.summary.exit_code(), 1);
}

#[tokio::test]
async fn a_harness_error_keeps_its_cause_chain() {
    #[derive(Debug, thiserror::Error)]
    #[error("query prometheus at 127.0.0.1:9")]
    struct Outer(#[source] std::io::Error);
    let check = check_fn("t.err", Category::Operations, |_| async {
        Err(Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ))
        .into())
    });
    let r = run_one(&check).await;
    match r.outcome {
        Outcome::Error {
            kind: ErrorKind::Harness,
            message,
        } => {
            assert_eq!(
                message,
                "query prometheus at 127.0.0.1:9: connection refused"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn details_recorded_by_a_check_reach_the_result_and_the_json_report() {
    let check = check_fn("t.versioned", Category::Connectivity, |ctx| async move {
        ctx.detail("server_version", "15.18");
        ctx.detail("address", "127.0.0.1:5432");
        ctx.detail("address", "127.0.0.1:55432"); // the later value wins
        Ok(Outcome::passed())
    })
    .boxed();
    let r = run_one(&*check).await;
    r.assert_passed();
    assert_eq!(r.details["server_version"], "15.18");
    assert_eq!(r.details["address"], "127.0.0.1:55432");
    assert!(!r.details.contains_key("earlier_attempts"));

    let buffer = Arc::new(Mutex::new(Vec::new()));
    let json = JsonReporter::to_memory(buffer.clone());
    let out = Suite::builder()
        .check("t", check)
        .build()
        .run(vec![Box::new(json) as Box<dyn Reporter>])
        .await;
    assert_eq!(out.results[0].details["server_version"], "15.18");
    let report: serde_json::Value = serde_json::from_slice(&buffer.lock().unwrap()).unwrap();
    assert_eq!(report["results"][0]["details"]["server_version"], "15.18");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_that_reports_its_own_cancellation_keeps_its_message() {
    let token = CancellationToken::new();
    let check = check_fn("t.cleanup", Category::Operations, |ctx| async move {
        ctx.cancel.cancelled().await;
        Ok(Outcome::error(
            ErrorKind::Cancelled,
            "cancelled during upsert; temporary collection removed",
        ))
    })
    .boxed();
    let t2 = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        t2.cancel();
    });
    let out = Suite::builder()
        .check("t", check)
        .cancellation(token)
        .cancel_grace(Duration::from_secs(1))
        .build()
        .run(Vec::new())
        .await;
    let outcome = &out.results[0].outcome;
    assert_eq!(outcome.status(), Status::Error);
    assert_eq!(
        outcome.message(),
        Some("cancelled during upsert; temporary collection removed"),
        "{outcome:?}"
    );
}

/// A check that records how many checks claiming the same resource run beside it.
fn counting(
    id: &str,
    resource: Option<&str>,
    running: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
) -> Arc<dyn citadel_itest_core::Check> {
    let check = check_fn(id.to_string(), Category::Pooling, move |_| {
        let running = running.clone();
        let peak = peak.clone();
        async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(60)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            Ok(Outcome::passed())
        }
    });
    match resource {
        Some(r) => check
            .exclusive_on(citadel_itest_core::Resource::new("connections", r))
            .boxed(),
        None => check.boxed(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_claiming_one_resource_never_overlap_and_others_still_run_beside_them() {
    let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (free_running, free_peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut b = Suite::builder().concurrency(10);
    for i in 0..4 {
        b = b.check(
            "t",
            counting(
                &format!("t.db{i}"),
                Some("127.0.0.1:5432"),
                running.clone(),
                peak.clone(),
            ),
        );
        b = b.check(
            "t",
            counting(
                &format!("t.free{i}"),
                None,
                free_running.clone(),
                free_peak.clone(),
            ),
        );
    }
    let t = Instant::now();
    let out = b.build().run(Vec::new()).await;
    assert_eq!(out.summary.exit_code(), 0);
    assert_eq!(
        peak.load(Ordering::SeqCst),
        1,
        "two checks held the resource at once"
    );
    assert!(
        free_peak.load(Ordering::SeqCst) > 1,
        "unclaimed checks ran one by one"
    );
    // Four exclusive checks of 60 ms run one after the other: at least 240 ms.
    assert!(
        t.elapsed() >= Duration::from_millis(235),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_waiting_for_a_resource_is_cancelled_cleanly() {
    let holder = check_fn("t.holder", Category::Pooling, |_| async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok(Outcome::passed())
    })
    .exclusive_on(citadel_itest_core::Resource::new("connections", "x"));
    let waiter = check_fn("t.waiter", Category::Pooling, |_| async {
        Ok(Outcome::passed())
    })
    .exclusive_on(citadel_itest_core::Resource::new("connections", "x"));
    let t = Instant::now();
    let out = Suite::builder()
        .concurrency(4)
        .deadline(Some(Duration::from_millis(300)))
        .cancel_grace(Duration::from_millis(50))
        .check("t", holder.boxed())
        .check("t", waiter.boxed())
        .build()
        .run(Vec::new())
        .await;
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    for r in &out.results {
        assert_eq!(
            r.outcome.status(),
            Status::Error,
            "{}: {:?}",
            r.id,
            r.outcome
        );
    }
}

/// A check that creates an "object" (a flag) and registers its removal, then ends as told.
fn creator(
    id: &str,
    objects: Arc<Mutex<Vec<String>>>,
    ends: &'static str,
) -> Arc<dyn citadel_itest_core::Check> {
    let id = id.to_string();
    check_fn(id.clone(), Category::Operations, move |ctx| {
        let objects = objects.clone();
        let id = id.clone();
        async move {
            objects.lock().unwrap().push(id.clone());
            let gone = objects.clone();
            let name = id.clone();
            ctx.cleanup("svc", format!("object {id}"), async move {
                gone.lock().unwrap().retain(|o| *o != name);
                Ok(())
            });
            match ends {
                "pass" => Ok(Outcome::passed()),
                "fail" => Ok(Outcome::failed("wrong")),
                "panic" => panic!("boom"),
                _ => {
                    // Hangs: ended by the timeout or the cancellation.
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok(Outcome::passed())
                }
            }
        }
    })
    .with_timeout(Duration::from_millis(300))
    .boxed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_removals_run_on_every_path_before_the_run_returns() {
    let objects = Arc::new(Mutex::new(Vec::new()));
    let mut b = Suite::builder().concurrency(8);
    for ends in ["pass", "fail", "panic", "hang"] {
        b = b.check("t", creator(&format!("t.{ends}"), objects.clone(), ends));
    }
    let out = b.build().run(Vec::new()).await;
    assert!(
        out.summary.leftovers.is_empty(),
        "{:?}",
        out.summary.leftovers
    );
    assert!(
        objects.lock().unwrap().is_empty(),
        "left: {:?}",
        objects.lock().unwrap()
    );

    // Cancellation (Ctrl-C) too: the hanging check is abandoned, its removal still runs.
    let objects = Arc::new(Mutex::new(Vec::new()));
    let token = CancellationToken::new();
    let suite = Suite::builder()
        .cancellation(token.clone())
        .cancel_grace(Duration::from_millis(20))
        .check("t", creator("t.hang", objects.clone(), "hang"))
        .build();
    let cancel = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        token.cancel();
    });
    let out = suite.run(Vec::new()).await;
    cancel.await.unwrap();
    assert_eq!(out.summary.exit_code(), 130);
    assert!(
        objects.lock().unwrap().is_empty(),
        "left: {:?}",
        objects.lock().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removals_that_fail_or_outlast_the_budget_are_named_as_leftovers() {
    let check = check_fn("t.make", Category::Operations, |ctx| async move {
        ctx.cleanup("db", "table citadel_itest_a", async {
            Err("permission denied".into())
        });
        ctx.cleanup("vectors", "collection citadel_itest_b", async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(())
        });
        let done = ctx.cleanup("vectors", "collection citadel_itest_c", async {
            Err("must not run: disarmed".into())
        });
        done.disarm();
        Ok(Outcome::failed("the check's own verdict"))
    });
    let t = Instant::now();
    let out = Suite::builder()
        .cleanup_budget(Duration::from_millis(200))
        .check("t", check.boxed())
        .build()
        .run(Vec::new())
        .await;
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(
        out.results[0].outcome.message(),
        Some("the check's own verdict"),
        "cleanup never replaces the verdict"
    );
    let left: Vec<String> = out
        .summary
        .leftovers
        .iter()
        .map(|l| l.to_string())
        .collect();
    assert_eq!(
        left,
        [
            "table citadel_itest_a on db (created by t.make): permission denied",
            "collection citadel_itest_b on vectors (created by t.make): its removal did not \
             finish within the cleanup budget of 200ms",
        ]
    );
}

#[tokio::test]
async fn run_one_runs_the_removals_and_names_leftovers_in_the_details() {
    let check = check_fn("t.one", Category::Operations, |ctx| async move {
        ctx.cleanup("db", "table citadel_itest_x", async {
            Err("refused".into())
        });
        Ok(Outcome::passed())
    });
    let r = run_one(&check).await;
    assert_eq!(
        r.details["leftovers"],
        serde_json::json!(["table citadel_itest_x on db (created by t.one): refused"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_take_slots_in_plan_order() {
    for _ in 0..20 {
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut b = Suite::builder().concurrency(1);
        for i in 0..6 {
            let order = order.clone();
            b = b.check(
                "t",
                check_fn(format!("t.c{i}"), Category::Operations, move |_| {
                    let order = order.clone();
                    async move {
                        order.lock().unwrap().push(i);
                        Ok(Outcome::passed())
                    }
                })
                .boxed(),
            );
        }
        b.build().run(Vec::new()).await;
        assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3, 4, 5]);
    }
}

/// A reporter that fails on chosen events and counts what it was given.
struct Flaky {
    name: &'static str,
    fail_start: bool,
    fail_checks: bool,
    seen: Arc<AtomicUsize>,
}

impl Flaky {
    /// Count the event; fail it with `why` when `fail`.
    fn event(&self, fail: bool, why: &str) -> Result<(), citadel_itest_core::ReportError> {
        self.seen.fetch_add(1, Ordering::SeqCst);
        if !fail {
            return Ok(());
        }
        let source = std::io::Error::other(why.to_string());
        Err(citadel_itest_core::ReportError::new(
            self.name, None, source,
        ))
    }
}

impl Reporter for Flaky {
    fn run_started(
        &mut self,
        _plan: &citadel_itest_core::RunPlan,
    ) -> Result<(), citadel_itest_core::ReportError> {
        self.event(self.fail_start, "start refused")
    }
    fn check_finished(
        &mut self,
        _r: &citadel_itest_core::TestResult,
    ) -> Result<(), citadel_itest_core::ReportError> {
        self.event(self.fail_checks, "check refused")
    }
    fn run_finished(
        &mut self,
        _s: &citadel_itest_core::RunSummary,
    ) -> Result<(), citadel_itest_core::ReportError> {
        self.event(false, "")
    }
}

/// Every reporter gets every event; each one that failed is named once (its first failure),
/// in the order given, and the run's exit code says a report was lost.
#[tokio::test]
async fn every_failing_reporter_is_named_once_and_the_others_get_every_event() {
    let seen: Vec<Arc<AtomicUsize>> = (0..3).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let reporters: Vec<Box<dyn Reporter>> = vec![
        Box::new(Flaky {
            name: "healthy",
            fail_start: false,
            fail_checks: false,
            seen: seen[0].clone(),
        }),
        Box::new(Flaky {
            name: "checks",
            fail_start: false,
            fail_checks: true,
            seen: seen[1].clone(),
        }),
        Box::new(Flaky {
            name: "start",
            fail_start: true,
            fail_checks: true,
            seen: seen[2].clone(),
        }),
    ];
    let out = Suite::builder()
        .check("t", sleeper("t.a", Duration::ZERO))
        .check("t", sleeper("t.b", Duration::ZERO))
        .check("t", sleeper("t.c", Duration::ZERO))
        .build()
        .run(reporters)
        .await;
    assert_eq!(out.summary.exit_code(), 0);
    assert_eq!(out.exit_code(), 1);
    let named: Vec<(&str, String)> = out
        .report_errors
        .iter()
        .map(|e| (e.format, e.source.to_string()))
        .collect();
    assert_eq!(
        named,
        [
            ("checks", "check refused".to_string()),
            ("start", "start refused".to_string())
        ]
    );
    for s in &seen {
        assert_eq!(s.load(Ordering::SeqCst), 5, "start, 3 checks, finish");
    }
}
