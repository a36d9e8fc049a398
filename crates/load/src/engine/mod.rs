//! The load engine: sends a scenario's requests under the closed or the open model and hands
//! every [`Sample`](crate::sample::Sample) to a [`SampleSink`].
//!
//! # How it runs
//!
//! [`run`] starts [`Plan::threads`] OS threads (default: one per core), each with its own
//! single-threaded tokio runtime, like wrk's threads; the connections are split across them,
//! and each connection is one task using hyper's client connection API directly (HTTP/1.1
//! keep-alive, its connection future polled inline by that task; or HTTP/2 with prior
//! knowledge). Each thread has its own sink (made by
//! `make_sink(thread_index)`), so recording takes no lock; the caller merges the sinks from
//! [`Finished::sinks`]. The request parts are built once ([`Plan`]); a request costs one
//! header-map copy and a refcount on its body.
//!
//! - **Closed model**: `vus` users, each on its own connection, loop send → read the whole
//!   answer → `think_time`. No request starts after `duration` or once `iterations` requests
//!   (one shared counter) were started. Requests in flight at `duration` finish (each bounded
//!   by the request timeout). `intended` is the actual send time and `latency == service`.
//! - **Open model**: the arrival schedule of the stages (constant spacing or seeded Poisson,
//!   see [`schedule`](self)) is shared by up to `max_connections` connection tasks, which take
//!   the next arrival in order, wait for its intended time and send. `latency` is measured from
//!   the intended time (corrected for coordinated omission, as wrk2 does), `service` from the
//!   actual send. An arrival taken more than `max_lag` after its intended time is never sent:
//!   it goes to [`SampleSink::dropped`]. The run ends when the schedule has ended and the
//!   requests in flight have finished (each bounded by the request timeout). With HTTP/2 a
//!   connection task does not wait for the answer: each request is a stream of its
//!   connection (its own small task) and the task takes the next arrival at once, so
//!   `max_connections` connections carry as many concurrent requests as the server's stream
//!   limit allows.
//!
//! A connection is opened before its first request (in the open model up to 1 s before the
//! arrival's time, so it is not part of the latency); one that closes between requests is
//! reopened without a sample; a failed connect is a sample of class `connect` (a closed-model
//! user then waits 10 ms, doubling up to 1 s, before its next try). A request that
//! was sent and got no head is `protocol`; a body cut off is `body`; a status that is not 2xx
//! is classified with [`ErrorClass::of_status`](crate::sample::ErrorClass::of_status) (the
//! body is still read); nothing within the request timeout is `timeout`; a stream (with
//! [`Plan::stream`]) not ending in `[DONE]` is `stream`.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use citadel_itest_load::config::{LoadModel, OpenModel, ScenarioConfig};
//! use citadel_itest_load::engine::{self, Bodies, Control, Plan};
//! use citadel_itest_load::sample::VecSink;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let scenario = ScenarioConfig::new(
//!     "health",
//!     "http://127.0.0.1:8080/health",
//!     LoadModel::Open(OpenModel::constant(200.0, Duration::from_secs(10))),
//! );
//! let plan = Plan::from_scenario(&scenario, Bodies::none())?;
//! let control = Control::new();
//! let done = engine::run(&plan, |_thread| VecSink::default(), &control).await?;
//! let sent: usize = done.sinks.iter().map(|s| s.samples.len()).sum();
//! let dropped: usize = done.sinks.iter().map(|s| s.dropped.len()).sum();
//! println!("{sent} sent, {dropped} dropped in {:?}", done.elapsed);
//! # Ok(()) }
//! ```
//!
//! # Cancelling
//!
//! Cancelling [`Control::cancel`] stops every connection at once: requests in flight are
//! abandoned, not recorded (their count is [`Finished::abandoned`]), and [`run`] returns with
//! [`Finished::cancelled`] set, within milliseconds.

mod conn;
mod plan;
mod schedule;
mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::sample::SampleSink;

pub use plan::{Bodies, Model, Plan};

/// Live counters of a run, updated as it goes (in batches, at least every 10 ms while
/// requests finish) for the progress display.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Live {
    /// Requests started (including those whose connection could not be made).
    pub sent: AtomicU64,
    /// Requests finished, successfully or not (each one a sample).
    pub completed: AtomicU64,
    /// Requests finished with an error (part of `completed`).
    pub errors: AtomicU64,
    /// Open-model arrivals dropped because they were too far behind the schedule.
    pub dropped: AtomicU64,
    /// Requests started and not yet finished.
    pub in_flight: AtomicI64,
}

impl Live {
    /// Fresh counters at zero.
    pub fn new() -> Self {
        Live::default()
    }
}

/// How the caller steers a run.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Control {
    /// Cancel to stop early (Ctrl-C, a failed threshold with abort-on-fail, the check's
    /// deadline): every connection stops at once.
    pub cancel: CancellationToken,
    /// The live counters.
    pub live: Arc<Live>,
}

impl Control {
    /// A control with a fresh token and counters.
    pub fn new() -> Self {
        Control::default()
    }

    /// A control stopping when `cancel` is cancelled.
    pub fn with_cancel(cancel: CancellationToken) -> Self {
        Control {
            cancel,
            live: Arc::new(Live::new()),
        }
    }
}

/// What a run returns.
#[derive(Debug)]
#[non_exhaustive]
pub struct Finished<S> {
    /// The sinks, one per thread, in thread order.
    pub sinks: Vec<S>,
    /// Wall-clock time of the start.
    pub started_at: SystemTime,
    /// From the start to the end of the last request.
    pub elapsed: Duration,
    /// Whether the run was cancelled before it ended by itself.
    pub cancelled: bool,
    /// Requests in flight when the run was cancelled: sent, never recorded.
    pub abandoned: u64,
}

/// Why a run could not be made (failed requests are samples, not errors).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The request URL is not usable.
    #[error("use url `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The host name did not resolve.
    #[error("resolve host `{host}`")]
    Resolve {
        /// The host name.
        host: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
    /// A part of the request is not valid.
    #[error("build the request: {what}: {reason}")]
    InvalidRequest {
        /// Which part (`method`, a header name, `api_key`).
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The API key could not be resolved.
    #[error("resolve api_key")]
    Secret(#[source] citadel_itest_core::config::SecretError),
    /// The scenario has no model (or both).
    #[error("use the scenario: give exactly one model, `closed` or `open`")]
    NoModel,
    /// A worker thread or its runtime could not be started.
    #[error("start a load worker thread")]
    Spawn(#[source] std::io::Error),
    /// A worker thread ended without handing back its sink (a bug).
    #[error("finish a load worker thread: it stopped without its results")]
    WorkerLost,
}

/// Run `plan`: send its requests until the model ends or `control.cancel` is cancelled, and
/// give the samples to the sinks (`make_sink(i)` for thread `i`).
///
/// Returns once every connection has stopped: at most the model's length plus one request
/// timeout, or at once after a cancel.
pub async fn run<S: SampleSink>(
    plan: &Plan,
    mut make_sink: impl FnMut(usize) -> S,
    control: &Control,
) -> Result<Finished<S>, EngineError> {
    let threads = plan.threads();
    let started_at = SystemTime::now();
    let start = Instant::now();
    // Workers watch a child token, so an internal stop does not cancel the caller's token.
    let stop = control.cancel.child_token();
    let shared = Arc::new(worker::Shared::new(
        plan.clone(),
        start,
        stop.clone(),
        control.live.clone(),
    ));
    let mut results = Vec::with_capacity(threads);
    for i in 0..threads {
        let sink = make_sink(i);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let shared = shared.clone();
        std::thread::Builder::new()
            .name(format!("load-worker-{i}"))
            .spawn(move || {
                let out = worker::thread_main(shared, i, threads, sink);
                let _ = tx.send(out);
            })
            .map_err(|e| {
                // Stop the threads already started.
                stop.cancel();
                EngineError::Spawn(e)
            })?;
        results.push(rx);
    }
    let mut sinks = Vec::with_capacity(threads);
    let mut abandoned = 0;
    let mut failure = None;
    for rx in results {
        match rx.await {
            Ok(Ok((sink, lost))) => {
                sinks.push(sink);
                abandoned += lost;
            }
            Ok(Err(e)) => {
                stop.cancel();
                failure.get_or_insert(EngineError::Spawn(e));
            }
            Err(_) => {
                stop.cancel();
                failure.get_or_insert(EngineError::WorkerLost);
            }
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(Finished {
        sinks,
        started_at,
        elapsed: start.elapsed(),
        cancelled: control.cancel.is_cancelled(),
        abandoned,
    })
}
