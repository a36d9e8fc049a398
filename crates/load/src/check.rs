//! Load scenarios as checks: `load.<scenario>` (category `load`) inside `citadel-itest run`,
//! and the tester that builds them from the `load:` section.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use citadel_itest_core::config::{Config, ConfigProblem, PerformanceTargets};
use citadel_itest_core::{
    BoxError, Category, Check, CheckContext, CheckId, ErrorKind, IntegrationTester, Measurement,
    Outcome, Resource, Unit,
};

use crate::NAME;
use crate::config::{LoadConfig, ScenarioConfig};
use crate::progress::ProgressMode;
use crate::scenario::{self, RunOptions};

/// Time a load check is given beyond its schedule: the last requests' timeout plus this.
pub const CHECK_MARGIN: Duration = Duration::from_secs(10);

/// One scenario as a check.
#[derive(Debug, Clone)]
pub struct LoadCheck {
    id: CheckId,
    scenario: ScenarioConfig,
    targets: PerformanceTargets,
    progress: ProgressMode,
}

impl LoadCheck {
    /// The check of `scenario`, default thresholds from `targets`.
    pub fn new(scenario: ScenarioConfig, targets: &PerformanceTargets) -> Self {
        LoadCheck {
            id: CheckId::new(format!("{NAME}.{}", scenario.name)),
            scenario,
            targets: targets.clone(),
            progress: ProgressMode::Quiet,
        }
    }

    /// Show progress this way while it runs (default: quiet, the suite has its own output).
    pub fn progress(mut self, mode: ProgressMode) -> Self {
        self.progress = mode;
        self
    }

    /// The scenario.
    pub fn scenario(&self) -> &ScenarioConfig {
        &self.scenario
    }
}

#[async_trait]
impl Check for LoadCheck {
    fn id(&self) -> &CheckId {
        &self.id
    }

    fn category(&self) -> Category {
        Category::Load
    }

    fn timeout(&self) -> Option<Duration> {
        let planned = scenario::planned_duration(&self.scenario).unwrap_or_default();
        Some(planned + self.scenario.timeout + CHECK_MARGIN)
    }

    /// A load run disturbs every other measurement of its target: it holds the target's
    /// traffic (`traffic:<host>:<port>`), as the gateway's checks do.
    fn exclusive(&self) -> Vec<Resource> {
        vec![Resource::traffic(&self.scenario.request.url)]
    }

    async fn run(&self, ctx: &CheckContext) -> Result<Outcome, BoxError> {
        let options = RunOptions::default()
            .cancel(ctx.cancel.clone())
            .progress(self.progress)
            .targets(self.targets.clone());
        let result = match scenario::run_scenario(&self.scenario, &options).await {
            Ok(r) => r,
            Err(e) => {
                return Ok(Outcome::error(
                    ErrorKind::Harness,
                    citadel_itest_core::error_chain(&e),
                ));
            }
        };
        ctx.detail("model", result.model.clone());
        ctx.detail("summary", result.summary_line());
        if let Some(stopped) = &result.stopped {
            ctx.detail("stopped", stopped.clone());
        }
        ctx.detail("load", serde_json::to_value(&result)?);
        let mut measurements: Vec<Measurement> = vec![
            Measurement::new("requests", result.counts.requests as f64, Unit::Count),
            Measurement::new("dropped", result.counts.dropped as f64, Unit::Count),
        ];
        measurements.extend(result.thresholds.iter().map(|t| t.to_measurement()));
        if ctx.cancel.is_cancelled() {
            return Ok(Outcome::error(
                ErrorKind::Cancelled,
                result.stopped.clone().unwrap_or_else(|| "cancelled".into()),
            ));
        }
        Ok(match scenario::verdict(&result) {
            Ok(()) => Outcome::passed().with_measurements(measurements),
            Err(reasons) => Outcome::Failed {
                message: reasons.join("; "),
                measurements,
            },
        })
    }
}

/// The `load` tester: one check per scenario.
#[derive(Debug, Clone)]
pub struct LoadTester {
    config: LoadConfig,
    targets: PerformanceTargets,
}

impl LoadTester {
    /// A tester over `config` with the default [`PerformanceTargets`]; built like every tester:
    /// `LoadTester::new(config).performance_targets(&targets)`. It takes no run settings: a
    /// scenario's duration and limits are in its own config.
    pub fn new(config: LoadConfig) -> Self {
        LoadTester {
            config,
            targets: PerformanceTargets::default(),
        }
    }

    /// Default thresholds of every scenario from `targets`.
    pub fn performance_targets(mut self, targets: &PerformanceTargets) -> Self {
        self.targets = targets.clone();
        self
    }

    /// The section it was built from.
    pub fn config(&self) -> &LoadConfig {
        &self.config
    }

    /// The checks, typed.
    pub fn load_checks(&self) -> Vec<LoadCheck> {
        self.config
            .scenarios
            .iter()
            .map(|s| LoadCheck::new(s.clone(), &self.targets))
            .collect()
    }
}

impl IntegrationTester for LoadTester {
    fn name(&self) -> &str {
        NAME
    }

    fn checks(&self) -> Vec<Arc<dyn Check>> {
        self.load_checks()
            .into_iter()
            .map(|c| Arc::new(c) as Arc<dyn Check>)
            .collect()
    }
}

/// Build the tester from the `load:` section of `config`, appending every problem (with key
/// paths) to `problems`. `None` when the section is absent or invalid.
pub fn from_config(config: &Config, problems: &mut Vec<ConfigProblem>) -> Option<LoadTester> {
    let before = problems.len();
    let section = config.section::<LoadConfig>(NAME, problems)?;
    if problems.len() > before {
        return None;
    }
    Some(LoadTester::new(section).performance_targets(&config.performance_targets))
}
