//! Cleanup that outlives the check: a check registers what it created, the runner removes it
//! once the check has ended (passed, failed, timed out, panicked or cancelled) and waits for
//! every removal within a bounded budget before the run returns; what could not be removed is
//! listed as a [`Leftover`].
//!
//! ```
//! use citadel_itest_core::{Category, Outcome, check_fn, run_one};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let check = check_fn("demo.temp_table", Category::Operations, |ctx| async move {
//!     // ... create `citadel_itest_r1_orders` on the server ...
//!     ctx.cleanup("main_db", "table citadel_itest_r1_orders", async {
//!         // ... DROP TABLE IF EXISTS ...; an Err here becomes a leftover with its reason.
//!         Ok(())
//!     });
//!     Ok(Outcome::passed())
//! });
//! let result = run_one(&check).await;
//! result.assert_passed();
//! assert!(result.details.get("leftovers").is_none());
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::check::{BoxError, CheckId};

/// Default time the runner waits for pending cleanups once every check has ended.
pub const DEFAULT_CLEANUP_BUDGET: Duration = Duration::from_secs(30);

type CleanupFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send + 'static>>;

/// An object a check created and could not remove: reported after the run's summary and in
/// `report.json` under `leftovers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Leftover {
    /// The check that created it.
    pub check: CheckId,
    /// Which service holds it (a configured target name).
    pub service: String,
    /// What it is: `collection citadel_itest_r1_vectors_perf_2`.
    pub object: String,
    /// Why it is still there.
    pub reason: String,
}

impl Leftover {
    /// A leftover of `check` on `service`: `object`, still there because of `reason`.
    pub fn new(
        check: impl Into<CheckId>,
        service: impl Into<String>,
        object: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Leftover {
            check: check.into(),
            service: service.into(),
            object: object.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Leftover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} on {} (created by {}): {}",
            self.object, self.service, self.check, self.reason
        )
    }
}

/// Returned by [`CheckContext::cleanup`](crate::CheckContext::cleanup): disarm it when the
/// check removed the object itself and the registered removal is no longer needed.
#[derive(Debug, Clone)]
pub struct CleanupHandle {
    disarmed: Arc<AtomicBool>,
}

impl CleanupHandle {
    /// The object is gone already: the runner will not run this removal.
    pub fn disarm(&self) {
        self.disarmed.store(true, Ordering::SeqCst);
    }
}

struct Pending {
    service: String,
    object: String,
    disarmed: Arc<AtomicBool>,
    future: CleanupFuture,
}

/// The removals one check registered (shared by all its attempts).
#[derive(Clone, Default)]
pub(crate) struct Registry(Arc<Mutex<Vec<Pending>>>);

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.lock().map(|v| v.len()).unwrap_or(0);
        write!(f, "Registry({n} pending)")
    }
}

impl Registry {
    pub(crate) fn register<F>(&self, service: String, object: String, future: F) -> CleanupHandle
    where
        F: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        let disarmed = Arc::new(AtomicBool::new(false));
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Pending {
                service,
                object,
                disarmed: disarmed.clone(),
                future: Box::pin(future),
            });
        CleanupHandle { disarmed }
    }

    fn take(&self) -> Vec<Pending> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Removals started by the runner, awaited before the run returns.
#[derive(Default)]
pub(crate) struct Cleaner {
    tasks: Mutex<JoinSet<(usize, Option<Leftover>)>>,
    /// (check, service, object) of every started removal, by task index, to name those that
    /// do not finish within the budget.
    started: Mutex<Vec<(CheckId, String, String)>>,
}

impl Cleaner {
    /// Start every armed removal `registry` holds for `check`, each in its own task.
    pub(crate) fn start(&self, check: &CheckId, registry: &Registry) {
        let pending = registry.take();
        if pending.is_empty() {
            return;
        }
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        for p in pending {
            if p.disarmed.load(Ordering::SeqCst) {
                continue;
            }
            let index = started.len();
            started.push((check.clone(), p.service.clone(), p.object.clone()));
            let check = check.clone();
            tasks.spawn(async move {
                let result = AssertUnwindSafe(p.future).catch_unwind().await;
                let reason = match result {
                    Ok(Ok(())) => return (index, None),
                    Ok(Err(e)) => crate::error_chain(&*e),
                    Err(_) => "its removal panicked".to_string(),
                };
                let leftover = Leftover {
                    check,
                    service: p.service,
                    object: p.object,
                    reason,
                };
                (index, Some(leftover))
            });
        }
    }

    /// Wait for every started removal until `budget` has passed; those not finished by then are
    /// aborted and reported with that reason. Leftovers come in the order removals started.
    pub(crate) async fn finish(&self, budget: Duration) -> Vec<Leftover> {
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        let started = std::mem::take(&mut *self.started.lock().unwrap_or_else(|p| p.into_inner()));
        let mut ends: Vec<Option<Option<Leftover>>> = vec![None; started.len()];
        let deadline = Instant::now() + budget;
        loop {
            match tokio::time::timeout_at(deadline, tasks.join_next()).await {
                Ok(Some(Ok((i, end)))) => ends[i] = Some(end),
                // A task that could not be joined (aborted at shutdown) stays unfinished.
                Ok(Some(Err(_))) => {}
                Ok(None) => break,
                Err(_) => {
                    tasks.abort_all();
                    break;
                }
            }
        }
        started
            .into_iter()
            .zip(ends)
            .filter_map(|((check, service, object), end)| match end {
                Some(end) => end,
                None => Some(Leftover {
                    check,
                    service,
                    object,
                    reason: format!(
                        "its removal did not finish within the cleanup budget of {}",
                        humantime::format_duration(budget)
                    ),
                }),
            })
            .collect()
    }
}
