//! The `external_api:` tester: PostgreSQL, Qdrant and Prometheus, each checked with real
//! exchanges for configuration, connectivity, authentication, operations, performance and
//! error handling.
//!
//! Every configured service gets six checks, `external_api.<name>.<category>`:
//!
//! | aspect | PostgreSQL ([`PostgresCheck`]) | Qdrant ([`QdrantCheck`]) | Prometheus ([`PrometheusCheck`]) |
//! |---|---|---|---|
//! | configuration | DSN, sslmode (TLS compiled in?), pool, timeouts, password | URLs, ports, API key | URL, timeouts, credentials |
//! | connectivity | TCP, TLS, handshake, `SELECT 1`, server version | `/readyz`, gRPC health, version | `/-/healthy`, `/-/ready`, build info |
//! | authentication | login works, a wrong password is refused | key works, wrong key refused (gRPC + REST) | credentials work, missing/wrong refused |
//! | operations | temp table in a rolled-back transaction | temp collection: create, upsert, search, count, delete | `up`, range query, targets, rules |
//! | performance | N `SELECT 1` round trips | N searches | N instant queries |
//! | error_handling | refused, silent listener, recovery, SQL error | same + not-found collection | same + malformed PromQL |
//!
//! Embed one check in a test. Here nothing listens on the port, so the connectivity check fails
//! and says why:
//!
//! ```
//! # #[cfg(feature = "prometheus")] {
//! use std::time::Duration;
//! use citadel_itest_core::{Check, Status, run_one};
//! use citadel_itest_external_api::{Aspect, PrometheusCheck, PrometheusTarget, Settings};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! // A loopback port that was free a moment ago and has no listener now.
//! let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
//! let target = PrometheusTarget::new("metrics", format!("http://127.0.0.1:{port}"))
//!     .connect_timeout(Duration::from_secs(2));
//! let check = PrometheusCheck::new(&target, Aspect::Connectivity, &Settings::default());
//! assert_eq!(check.id().as_str(), "external_api.metrics.connectivity");
//!
//! let result = run_one(&check).await;
//! assert_eq!(result.outcome.status(), Status::Failed);
//! assert_eq!(
//!     result.outcome.message(),
//!     Some(format!("GET http://127.0.0.1:{port}/-/healthy: connection refused").as_str())
//! );
//! # });
//! # }
//! ```
//!
//! Or build the whole tester from configuration with [`from_config`] and run it in a
//! [`Suite`](citadel_itest_core::Suite). Writes only touch objects named
//! `citadel_itest_<run>_*` (a temporary table in a rolled-back transaction, temporary Qdrant
//! collections), removed on success, failure, panic and cancellation; `run.read_only: true`
//! skips them. Secrets never appear in any outcome.
//!
//! Cargo features `postgres` (with `postgres-tls`), `qdrant` and `prometheus`, all on by
//! default, select what is compiled.

#![forbid(unsafe_code)]

/// `impl Check` for a service's check type: it has a `common: Common` field, a `name()` and one
/// `async fn <aspect>(&self, &CheckContext) -> Result<Outcome, Outcome>` per aspect. The aspects
/// listed as `cleans_up` create temporary objects and handle cancellation themselves (they
/// remove what they made); the others are simply dropped when the run is cancelled.
macro_rules! service_check {
    ($ty:ty, cleans_up: [$($aspect:ident),*]) => {
        #[::async_trait::async_trait]
        impl ::citadel_itest_core::Check for $ty {
            fn id(&self) -> &::citadel_itest_core::CheckId {
                &self.common.id
            }

            fn category(&self) -> ::citadel_itest_core::Category {
                self.common.aspect.category()
            }

            fn timeout(&self) -> Option<::std::time::Duration> {
                Some(self.common.timeout)
            }

            fn retry_policy(&self) -> Option<::citadel_itest_core::RetryPolicy> {
                self.common.retry_policy()
            }

            async fn run(
                &self,
                ctx: &::citadel_itest_core::CheckContext,
            ) -> Result<::citadel_itest_core::Outcome, ::citadel_itest_core::BoxError> {
                use $crate::Aspect;
                let body = async {
                    match self.common.aspect {
                        Aspect::Configuration => self.configuration(ctx).await,
                        Aspect::Connectivity => self.connectivity(ctx).await,
                        Aspect::Authentication => self.authentication(ctx).await,
                        Aspect::Operations => self.operations(ctx).await,
                        Aspect::Performance => self.performance(ctx).await,
                        Aspect::ErrorHandling => self.error_handling(ctx).await,
                    }
                };
                let cleans_up = false $(|| self.common.aspect == Aspect::$aspect)*;
                let outcome = if cleans_up {
                    body.await
                } else {
                    ::tokio::select! {
                        biased;
                        _ = ctx.cancel.cancelled() => Err(::citadel_itest_core::Outcome::error(
                            ::citadel_itest_core::ErrorKind::Cancelled,
                            format!("{} of {} cancelled", self.common.aspect, self.name()),
                        )),
                        r = body => r,
                    }
                };
                Ok(outcome.unwrap_or_else(|o| o))
            }
        }
    };
}

mod config;
mod support;

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "prometheus")]
mod prometheus;
#[cfg(feature = "qdrant")]
mod qdrant;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use citadel_itest_core::config::{Config, ConfigProblem, PerformanceTargets, RunSettings};
use citadel_itest_core::{Category, Check, CheckId, IntegrationTester, RetryPolicy};

pub use config::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_DIMENSION, DEFAULT_POOL_SIZE, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_SAMPLES, Distance, ExternalApiConfig, MAX_DIMENSION, MAX_POOL_SIZE, MAX_SAMPLES,
    MAX_TIMEOUT, PerformanceConfig, PostgresTarget, PrometheusAuth, PrometheusTarget, QdrantTarget,
    SslMode,
};
#[cfg(feature = "postgres")]
pub use postgres::PostgresCheck;
#[cfg(feature = "prometheus")]
pub use prometheus::PrometheusCheck;
#[cfg(feature = "qdrant")]
pub use qdrant::QdrantCheck;
pub use support::TEMP_PREFIX;

/// The tester's name and config section.
pub const NAME: &str = "external_api";

/// Whether PostgreSQL TLS (`sslmode: require`, `verify-ca`, `verify-full`) is compiled in
/// (cargo feature `postgres-tls`).
pub const POSTGRES_TLS: bool = cfg!(feature = "postgres-tls");

/// The six things checked of every service, one check each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Aspect {
    /// Settings parse, are in range, secrets resolve, the host resolves.
    Configuration,
    /// The service answers its protocol and reports its version.
    Connectivity,
    /// Configured credentials work and wrong ones are refused.
    Authentication,
    /// Real operations on temporary objects (or reads) succeed and read back.
    Operations,
    /// N timed round trips; p95 against `performance_targets.latency_p95`.
    Performance,
    /// Refused ports, silent listeners and bad requests fail cleanly, and the client recovers.
    ErrorHandling,
}

impl Aspect {
    /// All six, in check order.
    pub const ALL: [Aspect; 6] = [
        Aspect::Configuration,
        Aspect::Connectivity,
        Aspect::Authentication,
        Aspect::Operations,
        Aspect::Performance,
        Aspect::ErrorHandling,
    ];

    /// The report category.
    pub fn category(self) -> Category {
        match self {
            Aspect::Configuration => Category::Configuration,
            Aspect::Connectivity => Category::Connectivity,
            Aspect::Authentication => Category::Authentication,
            Aspect::Operations => Category::Operations,
            Aspect::Performance => Category::Performance,
            Aspect::ErrorHandling => Category::ErrorHandling,
        }
    }

    /// The check id of this aspect of the service `name`: `external_api.<name>.<category>`.
    pub fn check_id(self, name: &str) -> CheckId {
        CheckId::new(format!("{NAME}.{name}.{}", self.category()))
    }
}

impl fmt::Display for Aspect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.category().as_str())
    }
}

/// Run-wide settings every check of this tester needs.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Settings {
    /// Run id in the names of temporary objects (`citadel_itest_<run>_*`).
    pub run_id: String,
    /// Skip every write (`run.read_only`).
    pub read_only: bool,
    /// Budget of a check whose target sets no `timeout` (`run.timeout`).
    pub timeout: Duration,
    /// Retry-until-ready of the connectivity checks (`run.retries`, `run.retry_backoff`).
    pub retry: RetryPolicy,
    /// How long cleanup may take after cancellation (`run.cancel_grace`).
    pub cancel_grace: Duration,
    /// Limit of every `latency_p95` (`performance_targets.latency_p95`).
    pub latency_p95: Duration,
    /// Timed round trips per performance check (`external_api.performance.samples`).
    pub samples: u32,
}

impl Default for Settings {
    /// The defaults of `run`, `performance_targets` and `external_api.performance`, with a
    /// fresh run id.
    fn default() -> Self {
        Settings::new(
            &RunSettings::default(),
            &PerformanceTargets::default(),
            &PerformanceConfig::default(),
        )
    }
}

impl Settings {
    /// Settings from the run, the performance targets and the section's `performance`, with a
    /// fresh run id ([`citadel_itest_core::new_run_id`]).
    pub fn new(
        run: &RunSettings,
        targets: &PerformanceTargets,
        performance: &PerformanceConfig,
    ) -> Self {
        Settings {
            run_id: citadel_itest_core::new_run_id(),
            read_only: run.read_only,
            timeout: run.timeout,
            retry: run.retry_policy(),
            cancel_grace: run.cancel_grace,
            latency_p95: targets.latency_p95,
            samples: performance.samples,
        }
    }

    /// Use this run id (the suite's, so temporary objects carry it).
    pub fn run_id(mut self, run_id: impl Into<String>) -> Self {
        self.run_id = run_id.into();
        self
    }

    /// Skip writes, or not.
    pub fn read_only(mut self, yes: bool) -> Self {
        self.read_only = yes;
        self
    }

    /// Timed round trips per performance check.
    pub fn samples(mut self, samples: u32) -> Self {
        self.samples = samples;
        self
    }

    /// Limit of every `latency_p95`.
    pub fn latency_p95(mut self, limit: Duration) -> Self {
        self.latency_p95 = limit;
        self
    }

    /// Budget of a check whose target sets no `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Retry-until-ready of the connectivity checks.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// How long cleanup may take after cancellation.
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.cancel_grace = grace;
        self
    }
}

/// The `external_api` tester: six checks per configured service.
#[derive(Debug, Clone)]
pub struct ExternalApiTester {
    config: ExternalApiConfig,
    settings: Settings,
}

impl ExternalApiTester {
    /// A tester over `config` with the default [`RunSettings`] and [`PerformanceTargets`] and a
    /// fresh run id; built like every tester:
    /// `ExternalApiTester::new(config).run_settings(&run).performance_targets(&targets)`.
    pub fn new(config: ExternalApiConfig) -> Self {
        let settings = Settings::new(
            &RunSettings::default(),
            &PerformanceTargets::default(),
            &config.performance,
        );
        ExternalApiTester { config, settings }
    }

    /// Takes `run.read_only`, `run.timeout`, `run`'s retry policy and `run.cancel_grace`.
    pub fn run_settings(mut self, run: &RunSettings) -> Self {
        self.settings.read_only = run.read_only;
        self.settings.timeout = run.timeout;
        self.settings.retry = run.retry_policy();
        self.settings.cancel_grace = run.cancel_grace;
        self
    }

    /// Holds every `latency_p95` to `targets.latency_p95`.
    pub fn performance_targets(mut self, targets: &PerformanceTargets) -> Self {
        self.settings.latency_p95 = targets.latency_p95;
        self
    }

    /// A tester with explicit settings.
    pub fn with_settings(config: ExternalApiConfig, settings: Settings) -> Self {
        ExternalApiTester { config, settings }
    }

    /// Use this run id for temporary objects (pass the suite's).
    pub fn run_id(mut self, run_id: impl Into<String>) -> Self {
        self.settings.run_id = run_id.into();
        self
    }

    /// The section this tester was built from.
    pub fn config(&self) -> &ExternalApiConfig {
        &self.config
    }

    /// The settings its checks use.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }
}

impl IntegrationTester for ExternalApiTester {
    fn name(&self) -> &str {
        NAME
    }

    fn checks(&self) -> Vec<Arc<dyn Check>> {
        #[allow(unused_mut)]
        let mut checks: Vec<Arc<dyn Check>> = Vec::new();
        #[cfg(feature = "postgres")]
        for target in &self.config.postgres {
            for aspect in Aspect::ALL {
                checks.push(Arc::new(PostgresCheck::new(target, aspect, &self.settings)));
            }
        }
        #[cfg(feature = "qdrant")]
        for target in &self.config.qdrant {
            for aspect in Aspect::ALL {
                checks.push(Arc::new(QdrantCheck::new(target, aspect, &self.settings)));
            }
        }
        #[cfg(feature = "prometheus")]
        for target in &self.config.prometheus {
            for aspect in Aspect::ALL {
                checks.push(Arc::new(PrometheusCheck::new(
                    target,
                    aspect,
                    &self.settings,
                )));
            }
        }
        checks
    }
}

/// Build the tester from the `external_api:` section of `config`, appending every problem
/// found (with key paths) to `problems`. `None` when the section is absent or invalid.
pub fn from_config(
    config: &Config,
    problems: &mut Vec<ConfigProblem>,
) -> Option<ExternalApiTester> {
    let before = problems.len();
    let section = config.section::<ExternalApiConfig>(NAME, problems)?;
    if problems.len() > before {
        return None;
    }
    Some(
        ExternalApiTester::new(section)
            .run_settings(&config.run)
            .performance_targets(&config.performance_targets),
    )
}

/// Shared by the three check types: identity, budget and retry policy.
#[cfg_attr(
    not(any(feature = "postgres", feature = "qdrant", feature = "prometheus")),
    allow(dead_code)
)]
#[derive(Debug, Clone)]
pub(crate) struct Common {
    pub(crate) id: CheckId,
    pub(crate) aspect: Aspect,
    pub(crate) name: String,
    pub(crate) timeout: Duration,
    pub(crate) settings: Settings,
}

#[cfg_attr(
    not(any(feature = "postgres", feature = "qdrant", feature = "prometheus")),
    allow(dead_code)
)]
impl Common {
    pub(crate) fn new(
        name: &str,
        timeout: Option<Duration>,
        aspect: Aspect,
        settings: &Settings,
    ) -> Self {
        Common {
            id: aspect.check_id(name),
            aspect,
            name: name.to_string(),
            timeout: timeout.unwrap_or(settings.timeout),
            settings: settings.clone(),
        }
    }

    /// Connectivity retries until ready; nothing else retries (writes and probes run once).
    pub(crate) fn retry_policy(&self) -> Option<RetryPolicy> {
        (self.aspect == Aspect::Connectivity).then_some(self.settings.retry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use citadel_itest_core::config::Secret;

    #[test]
    fn six_checks_per_service_in_order() {
        let config = ExternalApiConfig::new()
            .postgres(
                PostgresTarget::new("main_db")
                    .dsn("postgres://citadel@127.0.0.1:55432/citadel")
                    .password(Secret::inline("pw-for-unit-test")),
            )
            .qdrant(
                QdrantTarget::new(
                    "vectors",
                    "http://127.0.0.1:56334",
                    "http://127.0.0.1:56333",
                )
                .api_key(Secret::inline("key-for-unit-test"))
                .timeout(Duration::from_secs(7)),
            )
            .prometheus(PrometheusTarget::new("metrics", "http://127.0.0.1:59090"));
        let run = RunSettings {
            retries: 2,
            ..RunSettings::default()
        };
        let tester = ExternalApiTester::new(config)
            .run_settings(&run)
            .performance_targets(&PerformanceTargets::default())
            .run_id("rtest0001");
        assert_eq!(tester.name(), "external_api");
        assert_eq!(tester.settings().run_id, "rtest0001");
        let checks = tester.checks();
        let ids: Vec<&str> = checks.iter().map(|c| c.id().as_str()).collect();
        let mut expected = Vec::new();
        for name in ["main_db", "vectors", "metrics"] {
            for c in [
                "configuration",
                "connectivity",
                "authentication",
                "operations",
                "performance",
                "error_handling",
            ] {
                expected.push(format!("external_api.{name}.{c}"));
            }
        }
        assert_eq!(ids, expected);
        assert_eq!(checks[1].category(), Category::Connectivity);
        assert_eq!(checks[1].retry_policy(), Some(run.retry_policy()));
        assert_eq!(checks[2].retry_policy(), None);
        assert_eq!(checks[0].timeout(), Some(run.timeout));
        assert_eq!(checks[6].timeout(), Some(Duration::from_secs(7)));
    }
}
