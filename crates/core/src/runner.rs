//! The suite runner: concurrency limit, timeouts, retries-until-ready, cancellation, one
//! coordinator that feeds the reporters.

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::check::{Category, Check, CheckContext, CheckId, Details, IntegrationTester, Resource};
use crate::cleanup::{Cleaner, DEFAULT_CLEANUP_BUDGET, Leftover, Registry};
use crate::outcome::{ErrorKind, Outcome, Status, TestResult};
use crate::report::{ReportError, Reporter};

/// Default per-check time budget when neither the check nor the suite sets one.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// A check as announced to reporters before the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedCheck {
    /// The check's id.
    pub id: CheckId,
    /// The tester it belongs to.
    pub tester: String,
    /// Its category.
    pub category: Category,
}

/// What is about to run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunPlan {
    /// Unique id of this run (also the prefix of temporary objects).
    pub run_id: String,
    /// Wall-clock start.
    pub started_at: SystemTime,
    /// The checks, in plan order.
    pub checks: Vec<PlannedCheck>,
    /// Redacted summary of the effective configuration.
    pub config: serde_json::Value,
}

/// Result counts for a group of checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Checks in the group.
    pub total: usize,
    /// Passed.
    pub passed: usize,
    /// Failed (the system is wrong).
    pub failed: usize,
    /// Skipped (not applicable).
    pub skipped: usize,
    /// Errors (the harness could not tell), cancellations and timeouts included.
    pub errors: usize,
}

impl Counts {
    /// Count one status.
    pub fn add(&mut self, status: Status) {
        self.total += 1;
        match status {
            Status::Passed => self.passed += 1,
            Status::Failed => self.failed += 1,
            Status::Skipped => self.skipped += 1,
            Status::Error => self.errors += 1,
        }
    }

    /// passed / (total - skipped); `None` when nothing was executed.
    pub fn success_rate(&self) -> Option<f64> {
        let executed = self.total - self.skipped;
        (executed > 0).then(|| self.passed as f64 / executed as f64)
    }
}

/// What happened, in numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    /// The run's id.
    pub run_id: String,
    /// Wall-clock start.
    pub started_at: SystemTime,
    /// Wall time of the whole run.
    #[serde(with = "crate::outcome::duration_ms")]
    pub duration: Duration,
    /// Totals.
    pub counts: Counts,
    /// Counts per tester.
    pub by_tester: BTreeMap<String, Counts>,
    /// Counts per category.
    pub by_category: BTreeMap<Category, Counts>,
    /// True when the run was interrupted from outside (Ctrl-C).
    pub interrupted: bool,
    /// Why unfinished checks were cancelled, if they were.
    pub cancel_reason: Option<String>,
    /// Objects checks created that could not be removed (after every check ended, within the
    /// cleanup budget).
    pub leftovers: Vec<Leftover>,
}

impl RunSummary {
    /// Build the summary from results.
    pub fn from_results(
        run_id: &str,
        started_at: SystemTime,
        duration: Duration,
        results: &[TestResult],
    ) -> Self {
        let mut counts = Counts::default();
        let mut by_tester: BTreeMap<String, Counts> = BTreeMap::new();
        let mut by_category: BTreeMap<Category, Counts> = BTreeMap::new();
        for r in results {
            let s = r.outcome.status();
            counts.add(s);
            by_tester.entry(r.tester.clone()).or_default().add(s);
            by_category.entry(r.category).or_default().add(s);
        }
        RunSummary {
            run_id: run_id.to_string(),
            started_at,
            duration,
            counts,
            by_tester,
            by_category,
            interrupted: false,
            cancel_reason: None,
            leftovers: Vec::new(),
        }
    }

    /// Exit code of the checks alone: 130 interrupted, 1 any failure or error, 0 otherwise.
    /// A report that could not be written is not counted here (the summary does not know);
    /// use [`RunOutput::exit_code`], which does.
    pub fn exit_code(&self) -> i32 {
        if self.interrupted {
            130
        } else if self.counts.failed + self.counts.errors > 0 {
            1
        } else {
            0
        }
    }
}

/// Everything a finished run produced.
#[derive(Debug)]
pub struct RunOutput {
    /// Counts and timing.
    pub summary: RunSummary,
    /// One result per planned check, in plan order.
    pub results: Vec<TestResult>,
    /// Reporter failures (the run itself went on): the first failure of every reporter that
    /// failed, in the order the reporters were given.
    pub report_errors: Vec<ReportError>,
}

impl RunOutput {
    /// The run's exit code: 130 interrupted, 1 when a check failed or errored **or a report
    /// could not be written**, 0 otherwise. This is the code `citadel-itest run` exits with.
    pub fn exit_code(&self) -> i32 {
        match self.summary.exit_code() {
            0 if !self.report_errors.is_empty() => 1,
            code => code,
        }
    }
}

/// Builder for a [`Suite`].
pub struct SuiteBuilder {
    checks: Vec<(String, Arc<dyn Check>)>,
    concurrency: usize,
    default_timeout: Duration,
    deadline: Option<Duration>,
    fail_fast: bool,
    cancel_grace: Duration,
    cleanup_budget: Duration,
    cancel: CancellationToken,
    run_id: Option<String>,
    config: serde_json::Value,
}

impl Default for SuiteBuilder {
    fn default() -> Self {
        SuiteBuilder {
            checks: Vec::new(),
            concurrency: 10,
            default_timeout: DEFAULT_CHECK_TIMEOUT,
            deadline: None,
            fail_fast: false,
            cancel_grace: Duration::from_secs(5),
            cleanup_budget: DEFAULT_CLEANUP_BUDGET,
            cancel: CancellationToken::new(),
            run_id: None,
            config: serde_json::Value::Null,
        }
    }
}

impl SuiteBuilder {
    /// Add every check of a tester.
    pub fn tester(mut self, tester: &dyn IntegrationTester) -> Self {
        let name = tester.name().to_string();
        self.checks
            .extend(tester.checks().into_iter().map(|c| (name.clone(), c)));
        self
    }

    /// Add one check under a tester name.
    pub fn check(mut self, tester: impl Into<String>, check: Arc<dyn Check>) -> Self {
        self.checks.push((tester.into(), check));
        self
    }

    /// How many checks may run at once (at least 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Time budget of a check that sets none.
    pub fn default_timeout(mut self, d: Duration) -> Self {
        self.default_timeout = d;
        self
    }

    /// Global deadline: when it passes, unfinished checks are cancelled.
    pub fn deadline(mut self, d: Option<Duration>) -> Self {
        self.deadline = d;
        self
    }

    /// Cancel the rest after the first failure or error.
    pub fn fail_fast(mut self, yes: bool) -> Self {
        self.fail_fast = yes;
        self
    }

    /// How long a cancelled check may take to clean up before it is abandoned.
    pub fn cancel_grace(mut self, d: Duration) -> Self {
        self.cancel_grace = d;
        self
    }

    /// How long the run waits, once every check has ended, for the removals checks registered
    /// ([`CheckContext::cleanup`]); what is not removed by then is reported as a leftover.
    pub fn cleanup_budget(mut self, d: Duration) -> Self {
        self.cleanup_budget = d;
        self
    }

    /// Token that interrupts the run from outside (Ctrl-C); the summary says `interrupted`.
    pub fn cancellation(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    /// Set the run id (default: derived from time and process id).
    pub fn run_id(mut self, id: impl Into<String>) -> Self {
        self.run_id = Some(id.into());
        self
    }

    /// Redacted configuration summary to put in reports.
    pub fn config_summary(mut self, config: serde_json::Value) -> Self {
        self.config = config;
        self
    }

    /// Finish building.
    pub fn build(self) -> Suite {
        Suite { b: self }
    }
}

/// A run of many checks. See [`Suite::builder`].
pub struct Suite {
    b: SuiteBuilder,
}

/// A fresh run id: `r` + the start in seconds since the epoch (6 base-36 digits, so ids sort
/// by time) + 3 random base-36 digits; see [`crate::temp`].
pub fn new_run_id() -> String {
    crate::temp::new_run_id()
}

struct Shared {
    semaphore: Arc<Semaphore>,
    /// One lock per exclusive resource a check declared; see [`Check::exclusive`].
    resources: HashMap<Resource, Arc<tokio::sync::Mutex<()>>>,
    cancel: CancellationToken,
    reason: OnceLock<String>,
    default_timeout: Duration,
    cancel_grace: Duration,
    cleaner: Cleaner,
}

impl Suite {
    /// Start building a suite.
    pub fn builder() -> SuiteBuilder {
        SuiteBuilder::default()
    }

    /// The checks that will run, in order.
    pub fn plan(&self) -> Vec<PlannedCheck> {
        self.b
            .checks
            .iter()
            .map(|(tester, c)| PlannedCheck {
                id: c.id().clone(),
                tester: tester.clone(),
                category: c.category(),
            })
            .collect()
    }

    /// Run every check and feed the reporters. Must be called inside a Tokio runtime.
    pub async fn run(self, mut reporters: Vec<Box<dyn Reporter>>) -> RunOutput {
        let b = self.b;
        let run_id = b.run_id.clone().unwrap_or_else(new_run_id);
        let started_at = SystemTime::now();
        let start = Instant::now();
        let planned: Vec<PlannedCheck> = b
            .checks
            .iter()
            .map(|(tester, c)| PlannedCheck {
                id: c.id().clone(),
                tester: tester.clone(),
                category: c.category(),
            })
            .collect();
        let plan = RunPlan {
            run_id: run_id.clone(),
            started_at,
            checks: planned.clone(),
            config: b.config,
        };

        let mut report_errors = ReportErrors::new(reporters.len());
        report_errors.feed(&mut reporters, |r| r.run_started(&plan));

        let external = b.cancel;
        let internal = external.child_token();
        let resources = resource_locks(b.checks.iter().map(|(_, c)| &**c));
        let shared = Arc::new(Shared {
            semaphore: Arc::new(Semaphore::new(b.concurrency)),
            resources,
            cancel: internal.clone(),
            reason: OnceLock::new(),
            default_timeout: b.default_timeout,
            cancel_grace: b.cancel_grace,
            cleaner: Cleaner::default(),
        });

        let mut set = JoinSet::new();
        let mut index_of = HashMap::with_capacity(b.checks.len());
        let turns = turns(b.checks.len());
        for (i, ((tester, check), turn)) in b.checks.into_iter().zip(turns).enumerate() {
            let shared = shared.clone();
            let handle = set.spawn(execute(check, tester, shared, turn));
            index_of.insert(handle.id(), i);
        }

        let mut results: Vec<Option<TestResult>> = vec![None; planned.len()];
        let global_deadline = b.deadline.map(|d| start + d);
        let mut deadline_fired = false;
        loop {
            let joined = tokio::select! {
                joined = set.join_next_with_id() => joined,
                _ = async { sleep_until(global_deadline.unwrap_or(start)).await },
                    if global_deadline.is_some() && !deadline_fired =>
                {
                    deadline_fired = true;
                    let d = b.deadline.unwrap_or_default();
                    let _ = shared.reason.set(format!(
                        "run deadline of {} reached",
                        humantime::format_duration(d)
                    ));
                    internal.cancel();
                    continue;
                }
            };
            let Some(joined) = joined else { break };
            let (i, result) = match joined {
                Ok((id, result)) => (index_of[&id], result),
                Err(e) => {
                    let i = index_of[&e.id()];
                    let p = &planned[i];
                    let outcome =
                        Outcome::error(ErrorKind::Panicked, format!("runner task failed: {e}"));
                    (
                        i,
                        TestResult {
                            id: p.id.clone(),
                            tester: p.tester.clone(),
                            category: p.category,
                            outcome,
                            duration: Duration::ZERO,
                            attempts: 0,
                            details: BTreeMap::new(),
                        },
                    )
                }
            };
            if b.fail_fast
                && matches!(result.outcome.status(), Status::Failed | Status::Error)
                && !internal.is_cancelled()
            {
                let _ = shared.reason.set(format!(
                    "fail-fast after {} {}",
                    result.id,
                    result.outcome.status()
                ));
                internal.cancel();
            }
            report_errors.feed(&mut reporters, |r| r.check_finished(&result));
            results[i] = Some(result);
        }

        // Every check has ended: wait for the removals they registered, within the budget.
        let leftovers = shared.cleaner.finish(b.cleanup_budget).await;
        let results: Vec<TestResult> = results.into_iter().flatten().collect();
        let mut summary = RunSummary::from_results(&run_id, started_at, start.elapsed(), &results);
        summary.leftovers = leftovers;
        summary.interrupted = external.is_cancelled();
        summary.cancel_reason = if summary.interrupted {
            Some("run interrupted".to_string())
        } else {
            shared.reason.get().cloned()
        };
        report_errors.feed(&mut reporters, |r| r.run_finished(&summary));
        RunOutput {
            summary,
            results,
            report_errors: report_errors.into_vec(),
        }
    }
}

/// The first error of each reporter: every reporter gets every event, and one that fails on
/// every check is named once, not once per check.
struct ReportErrors(Vec<Option<ReportError>>);

impl ReportErrors {
    fn new(reporters: usize) -> Self {
        ReportErrors(std::iter::repeat_with(|| None).take(reporters).collect())
    }

    fn feed(
        &mut self,
        reporters: &mut [Box<dyn Reporter>],
        mut event: impl FnMut(&mut dyn Reporter) -> Result<(), ReportError>,
    ) {
        for (reporter, first) in reporters.iter_mut().zip(self.0.iter_mut()) {
            if let Err(e) = event(reporter.as_mut()) {
                first.get_or_insert(e);
            }
        }
    }

    fn into_vec(self) -> Vec<ReportError> {
        self.0.into_iter().flatten().collect()
    }
}

fn cancelled_message(shared: &Shared) -> String {
    let reason = shared
        .reason
        .get()
        .map(String::as_str)
        .unwrap_or("run interrupted");
    format!("cancelled before finishing: {reason}")
}

/// A check's place in the plan: it may queue for a concurrency slot once the check before it
/// has queued (`mine`), and lets the next one queue once it has (`next`). Checks therefore take
/// slots in plan order: with `concurrency: 1` they run exactly in plan order.
struct Turn {
    mine: tokio::sync::oneshot::Receiver<()>,
    next: tokio::sync::oneshot::Sender<()>,
}

/// One [`Turn`] per check, chained in plan order.
fn turns(n: usize) -> Vec<Turn> {
    let (first_tx, mut prev_rx) = tokio::sync::oneshot::channel();
    let _ = first_tx.send(());
    (0..n)
        .map(|_| {
            let (tx, rx) = tokio::sync::oneshot::channel();
            Turn {
                mine: std::mem::replace(&mut prev_rx, rx),
                next: tx,
            }
        })
        .collect()
}

async fn execute(
    check: Arc<dyn Check>,
    tester: String,
    shared: Arc<Shared>,
    turn: Turn,
) -> TestResult {
    // A concurrency slot in plan order, then the exclusive resources (in key order, so two
    // checks never wait on each other; a holder always has its slot and runs to the end).
    let permit = acquire_in_turn(&shared, turn).await;
    let held = match permit {
        Some(_) => lock_resources(&*check, &shared).await,
        None => None,
    };
    let acquired = match (permit, held) {
        (Some(p), Some(locks)) => Some((p, locks)),
        _ => None,
    };
    let (outcome, duration, attempts, details) = match acquired {
        None => (
            Outcome::error(ErrorKind::Cancelled, cancelled_message(&shared)),
            Duration::ZERO,
            0,
            BTreeMap::new(),
        ),
        Some(_permit) => {
            let cleanups = Registry::default();
            let ran = run_guarded(&*check, &shared, &cleanups).await;
            shared.cleaner.start(check.id(), &cleanups);
            ran
        }
    };
    TestResult {
        id: check.id().clone(),
        tester,
        category: check.category(),
        outcome,
        duration,
        attempts,
        details,
    }
}

/// Runs all attempts of a check under its timeout, honouring cancellation with a grace period.
/// Returns the verdict, the wall time, the number of attempts and the details the check
/// recorded (plus `earlier_attempts`: why each attempt before the last did not pass).
async fn run_guarded(
    check: &dyn Check,
    shared: &Shared,
    cleanups: &Registry,
) -> (Outcome, Duration, u32, BTreeMap<String, serde_json::Value>) {
    let started = Instant::now();
    let attempts = AtomicU32::new(0);
    let details = Details::default();
    let earlier = std::sync::Mutex::new(Vec::new());
    let timeout = check.timeout().unwrap_or(shared.default_timeout);
    let deadline = started + timeout;
    let mut fut = std::pin::pin!(run_attempts(
        check,
        &shared.cancel,
        deadline,
        Record {
            attempts: &attempts,
            details: &details,
            earlier: &earlier,
            cleanups,
        },
    ));
    let outcome = tokio::select! {
        biased;
        o = &mut fut => o,
        _ = sleep_until(deadline) => Outcome::error(
            ErrorKind::Timeout,
            format!("did not finish within {}", humantime::format_duration(timeout)),
        ),
        _ = shared.cancel.cancelled() => {
            match tokio::time::timeout(shared.cancel_grace, &mut fut).await {
                Ok(o @ (Outcome::Passed { .. } | Outcome::Failed { .. } | Outcome::Skipped { .. })) => o,
                // The check noticed the cancellation itself: its message says what it cleaned up.
                Ok(o @ Outcome::Error { kind: ErrorKind::Cancelled, .. }) => o,
                _ => Outcome::error(ErrorKind::Cancelled, cancelled_message(shared)),
            }
        }
    };
    let mut details = details.take();
    let earlier = std::mem::take(&mut *earlier.lock().unwrap_or_else(|p| p.into_inner()));
    if !earlier.is_empty() {
        details.insert(
            "earlier_attempts".to_string(),
            serde_json::Value::from(earlier),
        );
    }
    (
        outcome,
        started.elapsed(),
        attempts.load(Ordering::Relaxed),
        details,
    )
}

/// Where the attempts of one check leave their traces.
struct Record<'a> {
    attempts: &'a AtomicU32,
    details: &'a Details,
    /// `attempt 1: failed: connection refused`, for each attempt that was retried.
    earlier: &'a std::sync::Mutex<Vec<String>>,
    cleanups: &'a Registry,
}

/// One lock for every resource any of `checks` declares.
fn resource_locks<'a>(
    checks: impl Iterator<Item = &'a dyn Check>,
) -> HashMap<Resource, Arc<tokio::sync::Mutex<()>>> {
    let mut locks = HashMap::new();
    for check in checks {
        for r in check.exclusive() {
            locks.entry(r).or_insert_with(Default::default);
        }
    }
    locks
}

/// Takes the locks of the check's exclusive resources in key order; `None` when the run is
/// cancelled while waiting.
async fn lock_resources(
    check: &dyn Check,
    shared: &Shared,
) -> Option<Vec<tokio::sync::OwnedMutexGuard<()>>> {
    let mut wanted = check.exclusive();
    wanted.sort();
    wanted.dedup();
    let mut held = Vec::with_capacity(wanted.len());
    for r in wanted {
        let Some(lock) = shared.resources.get(&r) else {
            continue;
        };
        tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => return None,
            g = lock.clone().lock_owned() => held.push(g),
        }
    }
    Some(held)
}

/// Waits for this check's turn, queues for a slot (the semaphore serves its queue in order),
/// lets the next check queue, then waits for the slot; `None` when the run is cancelled first.
async fn acquire_in_turn(shared: &Shared, turn: Turn) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let Turn { mine, next } = turn;
    // A predecessor that ended without signalling (its task failed) still lets us go.
    tokio::select! {
        biased;
        _ = shared.cancel.cancelled() => {
            let _ = next.send(());
            return None;
        }
        _ = mine => {}
    }
    if shared.cancel.is_cancelled() {
        let _ = next.send(());
        return None;
    }
    let mut slot = std::pin::pin!(shared.semaphore.clone().acquire_owned());
    // The first poll takes a free slot or joins the semaphore's queue.
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(slot.as_mut().poll(cx))).await;
    let _ = next.send(());
    match first {
        std::task::Poll::Ready(p) => p.ok(),
        std::task::Poll::Pending => tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => None,
            p = &mut slot => p.ok(),
        },
    }
}

async fn run_attempts(
    check: &dyn Check,
    cancel: &CancellationToken,
    deadline: Instant,
    record: Record<'_>,
) -> Outcome {
    let policy = check.retry_policy();
    let mut attempt = 1u32;
    loop {
        record.attempts.store(attempt, Ordering::Relaxed);
        let ctx = CheckContext::new(cancel.clone(), deadline, attempt)
            .with_details(record.details.clone())
            .with_cleanups(record.cleanups.clone());
        let outcome = match AssertUnwindSafe(check.run(&ctx)).catch_unwind().await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => Outcome::error(ErrorKind::Harness, crate::error_chain(&*e)),
            Err(payload) => Outcome::error(ErrorKind::Panicked, panic_message(&*payload)),
        };
        let retryable = matches!(
            outcome,
            Outcome::Failed { .. }
                | Outcome::Error {
                    kind: ErrorKind::Harness,
                    ..
                }
        );
        let Some(policy) = policy else { return outcome };
        if !retryable || attempt > policy.retries || cancel.is_cancelled() {
            return outcome;
        }
        let wait = policy.backoff(attempt);
        if Instant::now() + wait >= deadline {
            return outcome;
        }
        let why = match &outcome {
            Outcome::Error { kind, message } => format!("error ({kind}): {message}"),
            other => format!("failed: {}", other.message().unwrap_or("")),
        };
        record
            .earlier
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("attempt {attempt}: {why}"));
        tokio::select! {
            _ = sleep(wait) => {}
            _ = cancel.cancelled() => return outcome,
        }
        attempt += 1;
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    };
    format!("check panicked: {text}")
}

/// Run a single check the way the suite would (its own timeout, else 30 s; its retry policy;
/// panics caught) and return its result. Meant for `#[tokio::test]`; the tester name is the
/// first segment of the check id.
pub async fn run_one(check: &dyn Check) -> TestResult {
    let shared = Shared {
        semaphore: Arc::new(Semaphore::new(1)),
        resources: HashMap::new(),
        cancel: CancellationToken::new(),
        reason: OnceLock::new(),
        default_timeout: DEFAULT_CHECK_TIMEOUT,
        cancel_grace: Duration::from_secs(5),
        cleaner: Cleaner::default(),
    };
    let cleanups = Registry::default();
    let (outcome, duration, attempts, mut details) = run_guarded(check, &shared, &cleanups).await;
    shared.cleaner.start(check.id(), &cleanups);
    let leftovers = shared.cleaner.finish(DEFAULT_CLEANUP_BUDGET).await;
    if !leftovers.is_empty() {
        let list: Vec<serde_json::Value> = leftovers
            .iter()
            .map(|l| serde_json::Value::from(l.to_string()))
            .collect();
        details.insert("leftovers".to_string(), serde_json::Value::from(list));
    }
    let id = check.id().clone();
    TestResult {
        tester: id.as_str().split('.').next().unwrap_or("").to_string(),
        id,
        category: check.category(),
        outcome,
        duration,
        attempts,
        details,
    }
}
