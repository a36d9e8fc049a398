//! Basic reachability of every Citadel service: the `basic:` tester.
//!
//! For each target under `basic.targets` it checks, with real I/O:
//!
//! - `basic.<name>.connectivity` ([`ConnectivityCheck`]): DNS, TCP connect and, for `https`,
//!   a TLS handshake; measures `dns_time`, `connect_time` and `tls_handshake_time`.
//! - `basic.<name>.health` ([`HealthCheck`], when `health_path` is set): timed GET requests
//!   with status and JSON assertions; measures `latency_p50`, `latency_p95`, `latency_max`.
//!
//! Embed one check in a test. Here nothing listens on the port, so the check fails and says
//! why:
//!
//! ```
//! use std::time::Duration;
//! use citadel_itest_basic::{ConnectivityCheck, TargetConfig};
//! use citadel_itest_core::{Status, run_one};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! // A loopback port that was free a moment ago and has no listener now.
//! let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
//! let target = TargetConfig::new("gateway", format!("http://127.0.0.1:{port}"))
//!     .timeout(Duration::from_secs(2));
//! let check = ConnectivityCheck::new(&target).connect_time_limit(Duration::from_millis(200));
//!
//! let result = run_one(&check).await;
//! assert_eq!(result.outcome.status(), Status::Failed);
//! assert_eq!(
//!     result.outcome.message(),
//!     Some(format!("connect to gateway at 127.0.0.1:{port}: connection refused").as_str())
//! );
//! # }
//! ```
//!
//! Or build the whole tester from configuration with [`from_config`] and run it in a
//! [`Suite`](citadel_itest_core::Suite): each check then retries until ready (`run.retries`)
//! within the target's `timeout` (else `run.timeout`).

#![forbid(unsafe_code)]

mod classify;
mod config;
mod connectivity;
mod health;

use std::sync::Arc;
use std::time::Duration;

use citadel_itest_core::config::{Config, ConfigProblem, PerformanceTargets, RunSettings};
use citadel_itest_core::{Check, CheckExt, IntegrationTester, RetryPolicy};

pub use config::{Auth, BasicConfig, DEFAULT_SAMPLES, JsonExpectation, MAX_SAMPLES, TargetConfig};
pub use connectivity::ConnectivityCheck;
pub use health::HealthCheck;

/// The tester's name and config section.
pub const NAME: &str = "basic";

/// The `basic` tester: a connectivity check per target and a health check per target with a
/// `health_path`.
#[derive(Debug, Clone)]
pub struct BasicTester {
    config: BasicConfig,
    timeout: Duration,
    retry: RetryPolicy,
    latency_p95: Duration,
}

impl BasicTester {
    /// A tester over `config` with the default [`RunSettings`] and [`PerformanceTargets`]:
    /// checks time out after the target's `timeout` (else `run.timeout`), retry until ready
    /// with `run`'s policy, and hold `connect_time` and `latency_p95` to
    /// `targets.latency_p95`. Every tester is built the same way:
    ///
    /// ```
    /// use citadel_itest_basic::{BasicConfig, BasicTester, TargetConfig};
    /// use citadel_itest_core::config::{PerformanceTargets, RunSettings};
    ///
    /// let config = BasicConfig::new().target(TargetConfig::new("gateway", "http://127.0.0.1:58080"));
    /// let tester = BasicTester::new(config)
    ///     .run_settings(&RunSettings::default())
    ///     .performance_targets(&PerformanceTargets::default());
    /// ```
    pub fn new(config: BasicConfig) -> Self {
        BasicTester {
            config,
            timeout: RunSettings::default().timeout,
            retry: RunSettings::default().retry_policy(),
            latency_p95: PerformanceTargets::default().latency_p95,
        }
    }

    /// Takes `run.timeout` and `run`'s retry policy (`run.retries`, `run.retry_backoff`).
    pub fn run_settings(mut self, run: &RunSettings) -> Self {
        self.timeout = run.timeout;
        self.retry = run.retry_policy();
        self
    }

    /// Holds `connect_time` and `latency_p95` to `targets.latency_p95`.
    pub fn performance_targets(mut self, targets: &PerformanceTargets) -> Self {
        self.latency_p95 = targets.latency_p95;
        self
    }

    /// The section this tester was built from.
    pub fn config(&self) -> &BasicConfig {
        &self.config
    }
}

impl IntegrationTester for BasicTester {
    fn name(&self) -> &str {
        NAME
    }

    fn checks(&self) -> Vec<Arc<dyn Check>> {
        let mut checks = Vec::new();
        for target in &self.config.targets {
            let timeout = target.timeout.unwrap_or(self.timeout);
            checks.push(
                ConnectivityCheck::new(target)
                    .connect_time_limit(self.latency_p95)
                    .with_timeout(timeout)
                    .retry_until_ready(self.retry)
                    .boxed(),
            );
            if target.health_path.is_some() {
                checks.push(
                    HealthCheck::new(target)
                        .latency_p95_limit(self.latency_p95)
                        .with_timeout(timeout)
                        .retry_until_ready(self.retry)
                        .boxed(),
                );
            }
        }
        checks
    }
}

/// Build the tester from the `basic:` section of `config`, appending every problem found to
/// `problems`. `None` when the section is absent or invalid.
pub fn from_config(config: &Config, problems: &mut Vec<ConfigProblem>) -> Option<BasicTester> {
    let before = problems.len();
    let section = config.section::<BasicConfig>(NAME, problems)?;
    if problems.len() > before {
        return None;
    }
    Some(
        BasicTester::new(section)
            .run_settings(&config.run)
            .performance_targets(&config.performance_targets),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use citadel_itest_core::Category;

    #[test]
    fn checks_per_target_with_timeouts_and_retries() {
        let config = BasicConfig::new()
            .target(TargetConfig::new("db", "postgres://127.0.0.1:5432"))
            .target(
                TargetConfig::new("gateway", "http://127.0.0.1:58080")
                    .health_path("/health")
                    .timeout(Duration::from_secs(5)),
            );
        let run = RunSettings {
            retries: 2,
            ..RunSettings::default()
        };
        let tester = BasicTester::new(config)
            .run_settings(&run)
            .performance_targets(&PerformanceTargets::default());
        let checks = tester.checks();
        let ids: Vec<&str> = checks.iter().map(|c| c.id().as_str()).collect();
        assert_eq!(
            ids,
            [
                "basic.db.connectivity",
                "basic.gateway.connectivity",
                "basic.gateway.health"
            ]
        );
        assert_eq!(checks[0].timeout(), Some(run.timeout));
        assert_eq!(checks[0].category(), Category::Connectivity);
        assert_eq!(checks[1].timeout(), Some(Duration::from_secs(5)));
        assert_eq!(checks[2].category(), Category::Health);
        assert_eq!(checks[2].retry_policy(), Some(run.retry_policy()));
        assert_eq!(tester.name(), "basic");
    }
}
