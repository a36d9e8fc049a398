//! `check_fn_with`: state moved in once, handed to every run (retries included) without a
//! hand-written clone.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use citadel_itest_core::{
    Category, Check, CheckExt, Outcome, RetryPolicy, Status, check_fn_with, run_one,
};

/// State that is not `Clone`: the check must share it, not copy it.
struct Service {
    name: String,
    calls: AtomicU32,
    ready_after: u32,
}

#[tokio::test]
async fn every_run_sees_the_same_state_and_retries_reach_it() {
    let service = Service {
        name: "orders".into(),
        calls: AtomicU32::new(0),
        ready_after: 3,
    };
    let check = check_fn_with(
        "orders.ready",
        Category::Health,
        service,
        |svc, _ctx| async move {
            let n = svc.calls.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(if n >= svc.ready_after {
                Outcome::passed()
            } else {
                Outcome::failed(format!("{} not ready on call {n}", svc.name))
            })
        },
    );
    assert_eq!(check.id().as_str(), "orders.ready");
    assert_eq!(check.category(), Category::Health);

    // Without retries the first run fails and says why.
    let first = run_one(&check).await;
    assert_eq!(first.outcome.status(), Status::Failed);
    assert_eq!(first.outcome.message(), Some("orders not ready on call 1"));

    // With retries the same state keeps counting until it is ready.
    let check = check.retry_until_ready(RetryPolicy::new(5, Duration::from_millis(1)));
    let result = run_one(&check).await;
    assert_eq!(result.outcome.status(), Status::Passed, "{result:?}");

    // A `?` inside is an error of the harness, not a failure.
    let erroring = check_fn_with(
        "orders.parse",
        Category::Integrity,
        "x12".to_owned(),
        |text, _ctx| async move {
            let n: u32 = text.parse()?;
            Ok(if n > 0 {
                Outcome::passed()
            } else {
                Outcome::failed("zero")
            })
        },
    );
    let result = run_one(&erroring).await;
    assert_eq!(result.outcome.status(), Status::Error, "{result:?}");
}
