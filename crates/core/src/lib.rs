//! Core of citadel-itest: the [`Check`] trait and its [`Outcome`], the [`Suite`] runner,
//! layered [`config`] loading and the [`report`]ers.
//!
//! A check is one real exchange with a service that ends in a verdict. Embed one in a test:
//!
//! ```
//! use citadel_itest_core::{Category, Measurement, Outcome, check_fn, run_one};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let check = check_fn("my_service.clock", Category::Operations, |_ctx| async {
//!     let t = std::time::Instant::now();
//!     tokio::time::sleep(std::time::Duration::from_millis(1)).await;
//!     Ok(Outcome::passed().with_measurements([Measurement::duration("sleep", t.elapsed())]))
//! });
//! let result = run_one(&check).await;
//! result.assert_passed();
//! assert!(result.measurement("sleep").is_some());
//! # }
//! ```
//!
//! Or run many through a [`Suite`] with a concurrency limit, timeouts, retries-until-ready,
//! cancellation and reporters.

#![forbid(unsafe_code)]

pub mod check;
pub mod cleanup;
pub mod config;
pub mod encode;
#[cfg(feature = "http")]
pub mod http;
mod neterr;
pub mod outcome;
pub mod report;
pub mod runner;
pub mod temp;

pub use check::{
    BoxError, Category, Check, CheckContext, CheckExt, CheckId, Exclusive, FnCheck, FnCheckWith,
    IntegrationTester, Resource, RetryPolicy, RetryUntilReady, WithTimeout, check_fn,
    check_fn_with,
};
pub use cleanup::{CleanupHandle, DEFAULT_CLEANUP_BUDGET, Leftover};
pub use neterr::{io_error_text, io_error_words, io_error_words_in_chain};
pub use outcome::{
    CheckFailed, Comparison, ErrorKind, Measurement, Outcome, Status, TestResult, Threshold, Unit,
    percentile,
};
pub use report::{ReportError, Reporter};
pub use runner::{
    Counts, DEFAULT_CHECK_TIMEOUT, PlannedCheck, RunOutput, RunPlan, RunSummary, Suite,
    SuiteBuilder, new_run_id, run_one,
};

/// Formats an error with its whole `source()` chain: `a: b: c`, with secrets redacted.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.ends_with(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    config::redact_text(&out)
}
