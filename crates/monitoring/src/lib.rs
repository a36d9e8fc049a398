//! The `monitoring:` tester: the platform's observability, checked against the real thing.
//!
//! | check | category | proves |
//! |---|---|---|
//! | `monitoring.<endpoint>.metrics` | metrics | a `/metrics` page parses exactly, passes the lint, has the required families and values |
//! | `monitoring.<endpoint>.rates` | metrics | a series grows as it should between two scrapes around traffic the check sends |
//! | `monitoring.<prometheus>.health` | health | `/-/healthy`, `/-/ready` answer Prometheus's own texts; build info |
//! | `monitoring.<prometheus>.targets` | metrics | every expected job's targets are up (down ones listed with their last error) |
//! | `monitoring.<prometheus>.rules` | alerting | expected alerting and recording rules are loaded and evaluate without error |
//! | `monitoring.<prometheus>.queries` | metrics | PromQL assertions |
//! | `monitoring.<prometheus>.alerts` | alerting | quiet alerts are quiet, expected ones fire |
//! | `monitoring.drills.<name>` | alerting | an induced condition fires the alert, Alertmanager receives and delivers it, and it resolves |
//! | `monitoring.health.<name>` | health | liveness and readiness, told apart |
//!
//! [`export`] sends a run's results to a Pushgateway or a node_exporter textfile. See
//! docs/monitoring.md.

#![forbid(unsafe_code)]

pub mod config;
pub mod drill;
pub mod endpoint;
pub mod export;
pub mod exposition;
pub mod health;
pub mod prometheus;
mod pushgateway;
pub mod webhook;

use std::sync::Arc;

use citadel_itest_core::config::{Config, ConfigProblem};
use citadel_itest_core::{Check, IntegrationTester};

pub use config::MonitoringConfig;

/// The tester's name and config section.
pub const NAME: &str = "monitoring";

/// The `monitoring` tester.
#[derive(Debug, Clone)]
pub struct MonitoringTester {
    config: MonitoringConfig,
    run_id: String,
}

impl MonitoringTester {
    /// A tester over `config` with a fresh run id.
    pub fn new(config: MonitoringConfig) -> Self {
        MonitoringTester {
            config,
            run_id: citadel_itest_core::new_run_id(),
        }
    }

    /// Use this run id (pass the suite's; the alert drill labels what it pushes with it).
    pub fn run_id(mut self, run_id: impl Into<String>) -> Self {
        self.run_id = run_id.into();
        self
    }

    /// The section it was built from.
    pub fn config(&self) -> &MonitoringConfig {
        &self.config
    }
}

impl IntegrationTester for MonitoringTester {
    fn name(&self) -> &str {
        NAME
    }

    fn checks(&self) -> Vec<Arc<dyn Check>> {
        let c = &self.config;
        let mut checks = endpoint::checks(&c.endpoints);
        checks.extend(prometheus::checks(&c.prometheus));
        checks.extend(drill::checks(&c.drills, &self.run_id));
        checks.extend(health::checks(&c.health));
        checks
    }
}

/// Build the tester from the `monitoring:` section of `config`, appending every problem (with
/// key paths) to `problems`. `None` when the section is absent or invalid.
pub fn from_config(config: &Config, problems: &mut Vec<ConfigProblem>) -> Option<MonitoringTester> {
    let before = problems.len();
    let section = config.section::<MonitoringConfig>(NAME, problems)?;
    if problems.len() > before {
        return None;
    }
    Some(MonitoringTester::new(section))
}
