//! The `cross_service:` tester: the gateway in front of the model backends, checked with real
//! requests through it.
//!
//! One check per aspect of the gateway, `cross_service.<name>.<aspect>` (name default
//! `gateway`):
//!
//! | check | category | proves |
//! |---|---|---|
//! | `catalogue` | routing | `/v1/models` lists every configured model (missing and unexpected ones named) |
//! | `routing` | routing | each model, and each configured path route, is served by a backend that hosts it |
//! | `round_trip` | operations | a non-streaming chat completion is well formed (shape, `finish_reason`, `usage`) |
//! | `streaming` | streaming | a streamed chat completion is well formed and ends with `[DONE]`; TTFT and total time |
//! | `load_balancing` | load_balancing | K requests spread over the backends as their weights say (chi-square) |
//! | `stickiness` | load_balancing | the same key reaches the same backend (when configured) |
//! | `request_id` | routing | an `x-request-id` sent to the gateway reaches the backend and comes back |
//! | `error_handling` | error_handling | unknown model, malformed JSON, oversized body: OpenAI-format errors, right status |
//! | `performance` | performance | latency percentiles through the gateway, and its overhead over direct requests |
//! | `failover` | load_balancing | with one backend made unavailable the gateway keeps serving within an error budget, and takes it back (when configured) |
//!
//! With `flows:` configured, one more check per flow, `cross_service.flows.<name>` (category
//! `operations`): the built-in `model_to_vector` and `model_to_database`, and flows of your own
//! (see [`flow`]).
//!
//! Build it from configuration with [`from_config`], or embed one check:
//!
//! ```
//! use citadel_itest_cross_service::{Aspect, GatewayCheck, GatewayConfig, Settings};
//! use citadel_itest_core::{Category, Check};
//!
//! let gateway = GatewayConfig::new("http://127.0.0.1:58080/v1", ["llama-3-8b"]);
//! let check = GatewayCheck::new(&gateway, Aspect::Catalogue, &Settings::default());
//! assert_eq!(check.id().as_str(), "cross_service.gateway.catalogue");
//! assert_eq!(check.category(), Category::Routing);
//! ```

#![forbid(unsafe_code)]

mod checks;
mod config;
pub mod flow;
mod stats;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use citadel_itest_core::config::{Config, ConfigProblem, PerformanceTargets, RunSettings};
use citadel_itest_core::{Category, Check, CheckExt, CheckId, IntegrationTester, RetryPolicy};

pub use checks::GatewayCheck;
pub use config::{
    BackendConfig, CrossServiceConfig, DEFAULT_LB_CONCURRENCY, DEFAULT_LB_REQUESTS,
    DEFAULT_OVERSIZED_BYTES, DEFAULT_REQUEST_TIMEOUT, DEFAULT_SAMPLES, DEFAULT_SIGNIFICANCE,
    ErrorHandlingConfig, FailoverAction, FailoverConfig, GatewayConfig, LoadBalancingConfig,
    MAX_OVERSIZED_BYTES, MAX_REQUESTS, ModelConfig, ModelKind, PerformanceConfig, RoundTripConfig,
    RouteConfig, StickyConfig,
};
pub use flow::{Flow, FlowCheck, FlowsConfig};

/// The tester's name and config section.
pub const NAME: &str = "cross_service";

/// What one gateway check looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Aspect {
    /// `/v1/models` lists the configured models.
    Catalogue,
    /// Each model (and path route) is served by a backend hosting it.
    Routing,
    /// A non-streaming chat completion round trip.
    RoundTrip,
    /// A streaming chat completion round trip.
    Streaming,
    /// Requests spread as the configured weights say.
    LoadBalancing,
    /// The same key reaches the same backend.
    Stickiness,
    /// `x-request-id` propagation.
    RequestId,
    /// OpenAI-format errors for bad requests.
    ErrorHandling,
    /// Latency through the gateway and its overhead.
    Performance,
    /// One backend made unavailable: the gateway keeps serving and recovers.
    Failover,
}

impl Aspect {
    /// Every aspect, in check order.
    pub const ALL: [Aspect; 10] = [
        Aspect::Catalogue,
        Aspect::Routing,
        Aspect::RoundTrip,
        Aspect::Streaming,
        Aspect::LoadBalancing,
        Aspect::Stickiness,
        Aspect::RequestId,
        Aspect::ErrorHandling,
        Aspect::Performance,
        Aspect::Failover,
    ];

    /// The last part of the check id.
    pub fn as_str(self) -> &'static str {
        match self {
            Aspect::Catalogue => "catalogue",
            Aspect::Routing => "routing",
            Aspect::RoundTrip => "round_trip",
            Aspect::Streaming => "streaming",
            Aspect::LoadBalancing => "load_balancing",
            Aspect::Stickiness => "stickiness",
            Aspect::RequestId => "request_id",
            Aspect::ErrorHandling => "error_handling",
            Aspect::Performance => "performance",
            Aspect::Failover => "failover",
        }
    }

    /// The report category.
    pub fn category(self) -> Category {
        match self {
            Aspect::Catalogue | Aspect::Routing | Aspect::RequestId => Category::Routing,
            Aspect::RoundTrip => Category::Operations,
            Aspect::Streaming => Category::Streaming,
            Aspect::LoadBalancing | Aspect::Stickiness | Aspect::Failover => {
                Category::LoadBalancing
            }
            Aspect::ErrorHandling => Category::ErrorHandling,
            Aspect::Performance => Category::Performance,
        }
    }

    /// `cross_service.<gateway>.<aspect>`.
    pub fn check_id(self, gateway: &str) -> CheckId {
        CheckId::new(format!("{NAME}.{gateway}.{}", self.as_str()))
    }
}

impl fmt::Display for Aspect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Run-wide settings the checks need.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Settings {
    /// Run id, part of the request ids the checks send.
    pub run_id: String,
    /// Budget of a check when the gateway sets no `timeout` (`run.timeout`).
    pub timeout: Duration,
    /// Retry-until-ready of the catalogue check (`run.retries`, `run.retry_backoff`).
    pub retry: RetryPolicy,
    /// Limit of `latency_p95` through the gateway (`performance_targets.latency_p95`).
    pub latency_p95: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings::new(&RunSettings::default(), &PerformanceTargets::default())
    }
}

impl Settings {
    /// From the run settings and performance targets, with a fresh run id.
    pub fn new(run: &RunSettings, targets: &PerformanceTargets) -> Self {
        Settings {
            run_id: citadel_itest_core::new_run_id(),
            timeout: run.timeout,
            retry: run.retry_policy(),
            latency_p95: targets.latency_p95,
        }
    }

    /// Use this run id.
    pub fn run_id(mut self, run_id: impl Into<String>) -> Self {
        self.run_id = run_id.into();
        self
    }

    /// Budget of a check when the gateway sets no `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Limit of `latency_p95`.
    pub fn latency_p95(mut self, limit: Duration) -> Self {
        self.latency_p95 = limit;
        self
    }

    /// Retry-until-ready of the catalogue check.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }
}

/// The `cross_service` tester.
#[derive(Debug, Clone)]
pub struct CrossServiceTester {
    config: CrossServiceConfig,
    settings: Settings,
}

impl CrossServiceTester {
    /// A tester over `config` with the default [`RunSettings`] and [`PerformanceTargets`];
    /// built like every tester:
    /// `CrossServiceTester::new(config).run_settings(&run).performance_targets(&targets)`.
    pub fn new(config: CrossServiceConfig) -> Self {
        CrossServiceTester {
            config,
            settings: Settings::default(),
        }
    }

    /// Takes `run.timeout` and `run`'s retry policy.
    pub fn run_settings(mut self, run: &RunSettings) -> Self {
        self.settings.timeout = run.timeout;
        self.settings.retry = run.retry_policy();
        self
    }

    /// Holds `latency_p95` through the gateway to `targets.latency_p95`.
    pub fn performance_targets(mut self, targets: &PerformanceTargets) -> Self {
        self.settings.latency_p95 = targets.latency_p95;
        self
    }

    /// A tester with explicit settings.
    pub fn with_settings(config: CrossServiceConfig, settings: Settings) -> Self {
        CrossServiceTester { config, settings }
    }

    /// Use this run id (pass the suite's).
    pub fn run_id(mut self, run_id: impl Into<String>) -> Self {
        self.settings.run_id = run_id.into();
        self
    }

    /// The section it was built from.
    pub fn config(&self) -> &CrossServiceConfig {
        &self.config
    }
}

impl IntegrationTester for CrossServiceTester {
    fn name(&self) -> &str {
        NAME
    }

    fn checks(&self) -> Vec<Arc<dyn Check>> {
        let gw = &self.config.gateway;
        let mut checks: Vec<Arc<dyn Check>> = Aspect::ALL
            .into_iter()
            .map(|aspect| {
                let check = GatewayCheck::new(gw, aspect, &self.settings);
                if aspect == Aspect::Catalogue {
                    check.retry_until_ready(self.settings.retry).boxed()
                } else {
                    Arc::new(check) as Arc<dyn Check>
                }
            })
            .collect();
        if let Some(flows) = &self.config.flows {
            let chat = gw.chat_models().next().map(|m| m.id.as_str());
            for flow in flows.all_flows(chat) {
                checks.push(Arc::new(FlowCheck::new(flow, gw, flows, &self.settings)));
            }
        }
        checks
    }
}

/// Build the tester from the `cross_service:` section of `config`, appending every problem
/// (with key paths) to `problems`. `None` when the section is absent or invalid.
pub fn from_config(
    config: &Config,
    problems: &mut Vec<ConfigProblem>,
) -> Option<CrossServiceTester> {
    let before = problems.len();
    let section = config.section::<CrossServiceConfig>(NAME, problems)?;
    if problems.len() > before {
        return None;
    }
    Some(
        CrossServiceTester::new(section)
            .run_settings(&config.run)
            .performance_targets(&config.performance_targets),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_checks_in_order() {
        let gw =
            GatewayConfig::new("http://127.0.0.1:58080/v1", ["m"]).timeout(Duration::from_secs(7));
        let run = RunSettings {
            retries: 2,
            ..RunSettings::default()
        };
        let tester = CrossServiceTester::new(CrossServiceConfig::new(gw))
            .run_settings(&run)
            .performance_targets(&PerformanceTargets::default());
        let checks = tester.checks();
        let ids: Vec<&str> = checks.iter().map(|c| c.id().as_str()).collect();
        let expected: Vec<String> = Aspect::ALL
            .iter()
            .map(|a| format!("cross_service.gateway.{a}"))
            .collect();
        assert_eq!(ids, expected);
        assert_eq!(checks[0].retry_policy(), Some(run.retry_policy()));
        assert_eq!(checks[1].retry_policy(), None);
        assert_eq!(checks[4].category(), Category::LoadBalancing);
        assert!(
            checks
                .iter()
                .all(|c| c.timeout() == Some(Duration::from_secs(7)))
        );
        assert!(!checks[4].exclusive().is_empty());
    }
}
