//! One scenario from configuration to verdict: render the bodies, build the engine plan, run
//! it into recorders while sampling the system under test and showing progress, evaluate the
//! thresholds (stopping early on a failure when `abort_on_fail` says so), and return the
//! [`LoadResult`].

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use citadel_itest_core::config::{PerformanceTargets, SecretError, register_secret};
use tokio_util::sync::CancellationToken;

use crate::bodies::{self, PromptsError};
use crate::config::{LoadModel, ScenarioConfig};
use crate::engine::{self, Bodies, Control, EngineError, Plan};
use crate::metrics::{Recorder, RunMeta, Shared};
use crate::progress::{Progress, ProgressMode, Snapshot};
use crate::resources::{self, Probe, ResourceSummary};
use crate::result::{HistMetric, LoadResult};
use crate::shard::{self, Shard, ShardError};
use crate::slo::{Metric, Op, Threshold, ThresholdError, default_thresholds};

/// How a scenario is run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunOptions {
    /// Cancel to stop early (Ctrl-C, the check's deadline); the result says it was stopped.
    pub cancel: CancellationToken,
    /// How progress is shown.
    pub progress: ProgressMode,
    /// Where default thresholds come from.
    pub targets: PerformanceTargets,
    /// Run only this shard of the scenario (see [`crate::shard`]); `None`: the whole run.
    pub shard: Option<Shard>,
    /// Begin the run at this wall-clock time (a synchronised start of several shards).
    pub start_at: Option<SystemTime>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            cancel: CancellationToken::new(),
            progress: ProgressMode::Quiet,
            targets: PerformanceTargets::default(),
            shard: None,
            start_at: None,
        }
    }
}

impl RunOptions {
    /// Stop when `cancel` is cancelled.
    pub fn cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// Show progress this way.
    pub fn progress(mut self, mode: ProgressMode) -> Self {
        self.progress = mode;
        self
    }

    /// Default thresholds from these targets.
    pub fn targets(mut self, targets: PerformanceTargets) -> Self {
        self.targets = targets;
        self
    }

    /// Run only `shard` of the scenario.
    pub fn shard(mut self, shard: Shard) -> Self {
        self.shard = Some(shard);
        self
    }

    /// Begin at `start` (wall clock); checked against [`crate::shard::check_start`].
    pub fn start_at(mut self, start: SystemTime) -> Self {
        self.start_at = Some(start);
        self
    }
}

/// Why a scenario could not be run at all (failed requests and failed thresholds are in the
/// result, not errors).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// The prompts file cannot be used.
    #[error("scenario `{scenario}`: prompts: {source}")]
    Prompts {
        /// The scenario.
        scenario: String,
        /// What is wrong.
        #[source]
        source: PromptsError,
    },
    /// A threshold does not parse.
    #[error("scenario `{scenario}`: {source}")]
    Threshold {
        /// The scenario.
        scenario: String,
        /// What is wrong.
        #[source]
        source: ThresholdError,
    },
    /// The API key could not be read.
    #[error("scenario `{scenario}`: request.api_key: {source}")]
    Secret {
        /// The scenario.
        scenario: String,
        /// What is wrong.
        #[source]
        source: SecretError,
    },
    /// The scenario cannot be sharded this way, or the start time is out of bounds.
    #[error("scenario `{scenario}`: {source}")]
    Shard {
        /// The scenario.
        scenario: String,
        /// What is wrong.
        #[source]
        source: ShardError,
    },
    /// The engine could not start.
    #[error("scenario `{scenario}`: {source}")]
    Engine {
        /// The scenario.
        scenario: String,
        /// What is wrong.
        #[source]
        source: EngineError,
    },
}

/// The thresholds of `scenario`: its own, or the defaults from `targets`.
pub fn thresholds(
    scenario: &ScenarioConfig,
    targets: &PerformanceTargets,
) -> Result<Vec<Threshold>, ThresholdError> {
    match &scenario.thresholds {
        Some(list) => list.iter().map(|t| Threshold::parse(t)).collect(),
        None => Ok(default_thresholds(
            targets,
            scenario.stream,
            scenario.resources.is_some(),
        )),
    }
}

/// How long the scenario's schedule lasts (closed: `duration`; open: all stages).
pub fn planned_duration(scenario: &ScenarioConfig) -> Option<Duration> {
    match scenario.model()? {
        LoadModel::Closed(c) => Some(c.duration),
        LoadModel::Open(o) => o
            .parsed_stages()
            .ok()
            .map(|s| s.iter().map(|s| s.duration).sum()),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// A short description of the model: `open 20/s for 5s`, `closed 8 vus for 10s`.
pub fn describe_model(scenario: &ScenarioConfig) -> String {
    let secs = |d: Duration| humantime::format_duration(d).to_string();
    match scenario.model() {
        Some(LoadModel::Closed(c)) => {
            let mut s = format!("closed {} vus for {}", c.vus, secs(c.duration));
            if let Some(n) = c.iterations {
                s.push_str(&format!(" (at most {n} requests)"));
            }
            if !c.think_time.is_zero() {
                s.push_str(&format!(", think {}", secs(c.think_time)));
            }
            s
        }
        Some(LoadModel::Open(o)) => match (&o.stages, o.rate, o.duration) {
            (Some(stages), _, _) => format!("open stages [{}]", stages.join(", ")),
            (None, Some(rate), Some(d)) => format!("open {rate}/s for {}", secs(d)),
            _ => "open".into(),
        },
        _ => "no model".into(),
    }
}

/// Whether a failing `t` may stop the run before it ends: not a lower bound on a count or
/// a whole-run rate (the rest of the run may still meet it), and only once it has samples.
fn judged_early(t: &Threshold) -> bool {
    let lower = matches!(t.op, Op::Gt | Op::Ge | Op::Eq);
    let cumulative = matches!(
        t.metric,
        Metric::HttpReqs | Metric::Rps | Metric::OutputTokensPerS | Metric::DroppedIterations
    );
    let resources = matches!(t.metric, Metric::MemoryMb | Metric::CpuPercent);
    !(resources || lower && cumulative)
}

/// Run `scenario` and return what it measured, its thresholds evaluated.
pub async fn run_scenario(
    scenario: &ScenarioConfig,
    options: &RunOptions,
) -> Result<LoadResult, ScenarioError> {
    let name = scenario.name.clone();
    let shard_err = |source| ScenarioError::Shard {
        scenario: name.clone(),
        source,
    };
    let part = options.shard.filter(|s| !s.is_whole());
    let sharded;
    let scenario = match part {
        Some(s) => {
            sharded = shard::apply(scenario, s).map_err(shard_err)?;
            &sharded
        }
        None => scenario,
    };
    if let Some(start) = options.start_at {
        shard::check_start(start, SystemTime::now()).map_err(shard_err)?;
    }
    let thresholds =
        thresholds(scenario, &options.targets).map_err(|source| ScenarioError::Threshold {
            scenario: name.clone(),
            source,
        })?;
    let rendered = bodies::render(&scenario.request).map_err(|source| ScenarioError::Prompts {
        scenario: name.clone(),
        source,
    })?;
    let rendered = match (part, &scenario.request.prompts) {
        (Some(s), Some(p)) if p.order != crate::config::PromptOrder::Random => {
            shard::stride(rendered, s)
        }
        _ => rendered,
    };
    let bodies = match &scenario.request.prompts {
        Some(p) => Bodies::new(rendered, p.order, p.seed),
        None => Bodies::new(rendered, Default::default(), 0),
    };
    let mut with_key = scenario.clone();
    if let Some(key) = &scenario.request.api_key {
        let key = key.resolve().map_err(|source| ScenarioError::Secret {
            scenario: name.clone(),
            source,
        })?;
        register_secret(key.expose());
        with_key
            .request
            .headers
            .insert("authorization".into(), format!("Bearer {}", key.expose()));
        with_key.request.api_key = None;
    }
    let mut plan =
        Plan::from_scenario(&with_key, bodies).map_err(|source| ScenarioError::Engine {
            scenario: name.clone(),
            source,
        })?;
    if let Some(s) = part {
        plan = plan.with_phase(s.phase());
    }

    // A synchronised start: wait (cancellably) until `start_at`, then say how late we are.
    let late_start_ms = match options.start_at {
        Some(start) => {
            if let Ok(ahead) = start.duration_since(SystemTime::now()) {
                tokio::select! {
                    _ = tokio::time::sleep(ahead) => {}
                    _ = options.cancel.cancelled() => {}
                }
            }
            Some(
                SystemTime::now()
                    .duration_since(start)
                    .map_or(0, |late| late.as_millis() as u64),
            )
        }
        None => None,
    };

    let shared = Arc::new(Shared::new(scenario.goodput, scenario.stream));
    let stop = options.cancel.child_token();
    let control = Control::with_cancel(stop.clone());
    let total = planned_duration(scenario);

    // The system under test's resources, sampled until the engine is done.
    let sampler_stop = CancellationToken::new();
    let sampler = scenario
        .resources
        .as_ref()
        .map(|r| match Probe::from_config(r) {
            Ok(probe) => tokio::spawn(resources::sample(probe, r.interval, sampler_stop.clone())),
            Err(e) => {
                let summary = ResourceSummary {
                    source: "resources".into(),
                    error: Some(e.to_string()),
                    ..ResourceSummary::default()
                };
                tokio::spawn(async move { summary })
            }
        });

    // Progress and abort-on-fail, once a second.
    let watcher = {
        let shared = shared.clone();
        let live = control.live.clone();
        let stop = stop.clone();
        let early: Vec<Threshold> = thresholds
            .iter()
            .filter(|t| scenario.abort_on_fail && judged_early(t))
            .cloned()
            .collect();
        let mut progress = Progress::new(&name, options.progress, total);
        let done = CancellationToken::new();
        let done_in = done.clone();
        let handle = tokio::spawn(async move {
            let start = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut aborted = None;
            let snapshot = |interim: &LoadResult, elapsed: Duration| Snapshot {
                elapsed,
                total,
                completed: live.completed.load(std::sync::atomic::Ordering::Relaxed),
                errors: live.errors.load(std::sync::atomic::Ordering::Relaxed),
                dropped: live.dropped.load(std::sync::atomic::Ordering::Relaxed),
                rps: interim
                    .series
                    .seconds
                    .last()
                    .map_or(0.0, |p| p.requests as f64),
                p95: interim
                    .series
                    .seconds
                    .last()
                    .and_then(|p| p.p95_ms)
                    .map(|ms| Duration::from_secs_f64(ms / 1000.0)),
                ..Snapshot::default()
            };
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = done_in.cancelled() => break,
                }
                let elapsed = start.elapsed();
                let interim = shared.interim(elapsed);
                progress.update(&snapshot(&interim, elapsed));
                if aborted.is_none() && !early.is_empty() {
                    let failed = early
                        .iter()
                        .map(|t| t.evaluate(&interim))
                        .find(|r| r.observed.is_some() && !r.passed);
                    if let Some(r) = failed {
                        aborted = Some(format!(
                            "aborted after {:.1}s: {}",
                            elapsed.as_secs_f64(),
                            r.message
                        ));
                        stop.cancel();
                    }
                }
            }
            let elapsed = start.elapsed();
            progress.finish(&snapshot(&shared.interim(elapsed), elapsed));
            aborted
        });
        (handle, done)
    };

    let run = engine::run(&plan, |_| Recorder::new(shared.clone()), &control).await;
    sampler_stop.cancel();
    watcher.1.cancel();
    let aborted = watcher.0.await.ok().flatten();
    let finished = run.map_err(|source| ScenarioError::Engine {
        scenario: name.clone(),
        source,
    })?;
    let stopped = match (&aborted, finished.cancelled) {
        (Some(reason), _) => Some(reason.clone()),
        (None, true) => Some(format!(
            "cancelled after {:.1}s ({} request(s) in flight abandoned)",
            finished.elapsed.as_secs_f64(),
            finished.abandoned
        )),
        (None, false) => None,
    };
    let meta = RunMeta {
        scenario: name.clone(),
        model: describe_model(scenario),
        started_at: finished.started_at,
        elapsed: finished.elapsed,
        stopped,
    };
    let mut result = crate::metrics::finish(finished.sinks, &shared, meta);
    if let Some(sampler) = sampler {
        result.resources = sampler.await.ok();
    }
    result.shard = part;
    result.late_start_ms = late_start_ms;
    result.apply_thresholds(&thresholds);
    Ok(result)
}

/// The verdict of a finished result: `Ok(())` when it ran to its end and every threshold
/// held; otherwise every reason, one per line.
pub fn verdict(result: &LoadResult) -> Result<(), Vec<String>> {
    let mut reasons: Vec<String> = result
        .thresholds
        .iter()
        .filter(|t| !t.passed)
        .map(|t| format!("threshold `{}` failed: {}", t.text, t.message))
        .collect();
    if let Some(stopped) = &result.stopped {
        reasons.push(format!("the run did not finish: {stopped}"));
    }
    if result.thresholds.is_empty() && reasons.is_empty() && result.counts.requests == 0 {
        reasons.push("no request finished and no threshold was given".into());
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}

/// The headline figures of a result as one line per metric, for consoles.
pub fn figure_lines(result: &LoadResult) -> Vec<String> {
    let mut out = vec![result.summary_line()];
    for m in [
        HistMetric::Ttft,
        HistMetric::Itl,
        HistMetric::Tpot,
        HistMetric::E2e,
    ] {
        if let Some(p) = result.metrics.get(m.name()) {
            if p.count > 0 {
                out.push(format!(
                    "{}: p50 {} p95 {} p99 {} {}",
                    m.name(),
                    fmt_opt(p.p50),
                    fmt_opt(p.p95),
                    fmt_opt(p.p99),
                    p.unit
                ));
            }
        }
    }
    if let Some(r) = &result.resources {
        out.push(format!(
            "resources ({}): memory peak {} MiB, cpu mean {}%{}",
            r.source,
            fmt_opt(r.memory_mb_peak),
            fmt_opt(r.cpu_percent_mean),
            r.error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ));
    }
    out
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), crate::result::fmt_value)
}
