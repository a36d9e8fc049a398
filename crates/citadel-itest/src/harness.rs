//! Suites as cargo tests (feature `harness`): every check of a configuration becomes one test
//! that `cargo test` and `cargo nextest` list, filter, run and report, named by its check id.
//!
//! In `Cargo.toml`:
//!
//! ```toml
//! [[test]]
//! name = "suite"
//! harness = false
//!
//! [dev-dependencies]
//! citadel-itest = { path = "...", default-features = false, features = ["basic", "harness"] }
//! ```
//!
//! and `tests/suite.rs`:
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     citadel_itest::harness::run_suite_as_tests(&["tests/itest.yaml"])
//! }
//! ```
//!
//! Config paths are relative to the working directory, which cargo sets to the package's
//! directory. `cargo test --test suite -- --list` lists the checks, `cargo test --test suite
//! basic.gateway` runs those whose id contains `basic.gateway`, `-- --exact ID` one check,
//! `--test-threads 1` one at a time. A failed check's test fails with the check's message,
//! measurements and details. A skipped check is reported `ignored` with its reason.
//!
//! Each test runs its check as a suite of one, with the configuration's `run.timeout`,
//! `run.cancel_grace`, `run.cleanup_budget` and run id. Checks that claim the same
//! [`Resource`](crate::Resource) never run at once inside one test process (`cargo test`);
//! `cargo nextest` runs every test in a process of its own, so give such checks a nextest test
//! group (or `--test-threads 1`) there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use citadel_itest_core::config::ConfigError;
use citadel_itest_core::{Resource, Status, Suite, TestResult};

use crate::Loaded;

pub use libtest_mimic::{Arguments, Completion, Conclusion, Failed, Trial, run};

/// Load `config_files` (layered in order, with `.env` and `CITADEL_ITEST__*` as everywhere),
/// make one test per check and run them as the test binary's `main`: arguments are read from
/// the command line as libtest does. Invalid configuration prints every problem and exits 2.
pub fn run_suite_as_tests<P: AsRef<Path>>(config_files: &[P]) -> ExitCode {
    let args = Arguments::from_args();
    match trials(config_files) {
        Ok(trials) => libtest_mimic::run(&args, trials).exit_code(),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// One test per check of `config_files` (see [`trials_of`]); run them with
/// [`libtest_mimic::run`], alone or beside trials of your own.
pub fn trials<P: AsRef<Path>>(config_files: &[P]) -> Result<Vec<Trial>, ConfigError> {
    let files: Vec<PathBuf> = config_files
        .iter()
        .map(|f| f.as_ref().to_path_buf())
        .collect();
    let loaded = crate::load(&files, Vec::new())?;
    Ok(trials_of(&loaded))
}

/// One test per check of a loaded configuration, in plan order, named by check id.
pub fn trials_of(loaded: &Loaded) -> Vec<Trial> {
    let run = &loaded.config.run;
    let settings = Arc::new(Settings {
        run_id: loaded.run_id.clone(),
        timeout: run.timeout,
        cancel_grace: run.cancel_grace,
        cleanup_budget: run.cleanup_budget,
    });
    let checks = crate::select(&loaded.testers, &[], &[]);
    // One lock per claimed resource, shared by every test that claims it.
    let mut locks: BTreeMap<Resource, Arc<Mutex<()>>> = BTreeMap::new();
    for (_, check) in &checks {
        for r in check.exclusive() {
            locks.entry(r).or_default();
        }
    }
    checks
        .into_iter()
        .map(|(tester, check)| {
            let name = check.id().to_string();
            // BTreeMap order: every test takes its locks in the same order, so none deadlock.
            let mut claimed: Vec<Resource> = check.exclusive();
            claimed.sort();
            claimed.dedup();
            let mine: Vec<Arc<Mutex<()>>> = claimed
                .iter()
                .filter_map(|r| locks.get(r).cloned())
                .collect();
            let settings = settings.clone();
            Trial::ignorable_test(name, move || {
                let _held: Vec<_> = mine
                    .iter()
                    .map(|m| m.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
                    .collect();
                let result = run_single(&settings, tester, check)?;
                verdict(&result)
            })
        })
        .collect()
}

struct Settings {
    run_id: String,
    timeout: Duration,
    cancel_grace: Duration,
    cleanup_budget: Duration,
}

fn run_single(
    settings: &Settings,
    tester: String,
    check: Arc<dyn crate::Check>,
) -> Result<TestResult, Failed> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failed::from(format!("start the async runtime: {e}")))?;
    let id = check.id().to_string();
    let suite = Suite::builder()
        .run_id(settings.run_id.clone())
        .concurrency(1)
        .default_timeout(settings.timeout)
        .cancel_grace(settings.cancel_grace)
        .cleanup_budget(settings.cleanup_budget)
        .check(tester, check)
        .build();
    let out = runtime.block_on(suite.run(Vec::new()));
    runtime.shutdown_timeout(Duration::from_secs(1));
    for leftover in &out.summary.leftovers {
        eprintln!("{id}: left behind: {leftover:?}");
    }
    out.results
        .into_iter()
        .next()
        .ok_or_else(|| Failed::from(format!("check {id} produced no result")))
}

/// Passed → ok, Skipped → ignored (with the reason), Failed/Error → the message, measurements
/// and details.
fn verdict(result: &TestResult) -> Result<libtest_mimic::Completion, Failed> {
    match result.outcome.status() {
        Status::Passed => Ok(libtest_mimic::Completion::Completed),
        Status::Skipped => Ok(libtest_mimic::Completion::ignored_with(
            result.outcome.message().unwrap_or("skipped"),
        )),
        _ => Err(Failed::from(describe(result))),
    }
}

/// The failure text of a result: status and message, then measurements, details, attempts.
pub fn describe(result: &TestResult) -> String {
    let mut text = format!(
        "check {} {}: {}",
        result.id,
        result.outcome.status(),
        result.outcome.message().unwrap_or("")
    );
    let measurements = result.outcome.measurements();
    if !measurements.is_empty() {
        text.push_str("\nmeasurements:");
        for m in measurements {
            text.push_str(&format!("\n  {m}"));
        }
    }
    if !result.details.is_empty() {
        text.push_str("\ndetails:");
        for (k, v) in &result.details {
            text.push_str(&format!("\n  {k}: {v}"));
        }
    }
    text.push_str(&format!(
        "\nattempts: {}, duration: {:.3}s",
        result.attempts,
        result.duration.as_secs_f64()
    ));
    citadel_itest_core::config::redact_text(&text)
}
