//! citadel-itest: integration-test harness for the Citadel LLM platform.
//!
//! This facade re-exports the core ([`Check`], [`Suite`], [`config`], [`report`]) and, per cargo
//! feature, each tester crate. The `citadel-itest` binary is built on [`load`] and [`plan`].
//!
//! Embed a single check in your own `cargo test`:
//!
//! ```
//! # #[cfg(feature = "basic")]
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use citadel_itest::basic::{ConnectivityCheck, TargetConfig};
//! use citadel_itest::{Status, run_one};
//!
//! // A loopback port nothing listens on: the check must fail, and say why.
//! let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
//! let target = TargetConfig::new("nobody", format!("tcp://127.0.0.1:{port}"));
//! let check = ConnectivityCheck::new(&target);
//! let result = run_one(&check).await;
//! assert_eq!(result.outcome.status(), Status::Failed);
//! assert!(result.outcome.message().unwrap().contains("connection refused"));
//! # }
//! # #[cfg(not(feature = "basic"))] fn main() {}
//! ```
//!
//! Or load a layered configuration and run every configured tester:
//!
//! ```no_run
//! # #[tokio::main] async fn main() {
//! let loaded = citadel_itest::load(&["config/local.yaml".into()], Vec::new()).unwrap();
//! let suite = citadel_itest::plan(&loaded, &[], &[]).unwrap();
//! let out = suite.build().run(Vec::new()).await;
//! // The exit code counts a report that could not be written; `summary.exit_code()` does not.
//! std::process::exit(out.exit_code());
//! # }
//! ```
//!
//! Or do exactly what `citadel-itest run` does (`.env`, reporters from `run.formats`, Ctrl-C,
//! exit codes) with the entry point the binary calls; see [`RunRequest`] and
//! `docs/embedding.md`:
//!
//! ```no_run
//! let outcome = citadel_itest::run_configured_blocking(
//!     citadel_itest::RunRequest::new(["config/local.yaml"]).only("basic.*"),
//! );
//! std::process::exit(outcome.exit_code.into());
//! ```

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;

pub use citadel_itest_core::*;

#[cfg(feature = "harness")]
pub mod harness;
mod run;
pub use run::{
    RunError, RunOutcome, RunRequest, cancel_on_ctrl_c, load_dotenv, reporters_for, run_configured,
    run_configured_blocking,
};

/// The `#[async_trait]` attribute a hand-written `impl Check` needs:
/// `#[citadel_itest::async_trait] impl Check for MyCheck { .. }` (no `async-trait` dependency
/// of your own).
pub use async_trait::async_trait;
/// `serde_json`, for configuration overrides ([`load`], [`RunRequest::set`]) and JSON
/// expectations (`expect_json`), so embedders need no dependency of their own.
pub use serde_json;
/// The token that cancels a run from outside ([`SuiteBuilder::cancellation`],
/// [`RunRequest::cancellation`]) and that checks `select!` on (`ctx.cancel`).
pub use tokio_util::sync::CancellationToken;

use citadel_itest_core::config::{Config, ConfigError, ConfigLoader, ConfigProblem};

/// The `basic` tester (feature `basic`).
#[cfg(feature = "basic")]
pub use citadel_itest_basic as basic;
/// The `cross_service` tester (feature `cross-service`).
#[cfg(feature = "cross-service")]
pub use citadel_itest_cross_service as cross_service;
/// The `database` tester (feature `database`).
#[cfg(feature = "database")]
pub use citadel_itest_database as database;
/// The `external_api` tester (feature `external-api`).
#[cfg(feature = "external-api")]
pub use citadel_itest_external_api as external_api;
/// The fault proxy and the `error_handling` checks (feature `faults`).
#[cfg(feature = "faults")]
pub use citadel_itest_faults as faults;
/// The `load` tester (feature `load`). (A module: [`load()`](fn@load) is the config loader.)
#[cfg(feature = "load")]
pub use citadel_itest_load as load;
/// The `monitoring` tester and result export (feature `monitoring`).
#[cfg(feature = "monitoring")]
pub use citadel_itest_monitoring as monitoring;

/// The README's code blocks, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

/// docs/embedding.md's code blocks, compiled as doctests.
#[cfg(all(doctest, feature = "basic"))]
#[doc = include_str!("../../../docs/embedding.md")]
pub struct EmbeddingDoctests;

/// The reference configuration: every key, commented (`config/reference.yaml`).
pub const REFERENCE_YAML: &str = include_str!("../../../config/reference.yaml");

/// Builds a tester from its section and the suite's run id (temporary objects carry it);
/// problems are appended. `None` when the section is absent or invalid.
pub type BuildTester =
    fn(&Config, &str, &mut Vec<ConfigProblem>) -> Option<Box<dyn IntegrationTester>>;

/// How a tester is found in configuration and built from it.
pub struct TesterEntry {
    /// The config section, also the tester's name.
    pub section: &'static str,
    /// Build from the section.
    pub build: BuildTester,
}

/// Testers compiled into this build (by cargo feature).
pub fn registry() -> Vec<TesterEntry> {
    #[allow(unused_mut)]
    let mut entries: Vec<TesterEntry> = Vec::new();
    #[cfg(feature = "basic")]
    entries.push(TesterEntry {
        section: "basic",
        build: |c, _run_id, p| {
            citadel_itest_basic::from_config(c, p)
                .map(|t| Box::new(t) as Box<dyn IntegrationTester>)
        },
    });
    #[cfg(feature = "database")]
    entries.push(TesterEntry {
        section: "database",
        build: |c, _run_id, p| {
            citadel_itest_database::from_config(c, p)
                .map(|t| Box::new(t) as Box<dyn IntegrationTester>)
        },
    });
    #[cfg(feature = "external-api")]
    entries.push(TesterEntry {
        section: "external_api",
        build: |c, run_id, p| {
            citadel_itest_external_api::from_config(c, p)
                .map(|t| Box::new(t.run_id(run_id)) as Box<dyn IntegrationTester>)
        },
    });
    #[cfg(feature = "cross-service")]
    entries.push(TesterEntry {
        section: "cross_service",
        build: |c, run_id, p| {
            citadel_itest_cross_service::from_config(c, p)
                .map(|t| Box::new(t.run_id(run_id)) as Box<dyn IntegrationTester>)
        },
    });
    #[cfg(feature = "load")]
    entries.push(TesterEntry {
        section: "load",
        build: |c, _run_id, p| {
            citadel_itest_load::from_config(c, p).map(|t| Box::new(t) as Box<dyn IntegrationTester>)
        },
    });
    #[cfg(feature = "monitoring")]
    entries.push(TesterEntry {
        section: "monitoring",
        build: |c, run_id, p| {
            citadel_itest_monitoring::from_config(c, p)
                .map(|t| Box::new(t.run_id(run_id)) as Box<dyn IntegrationTester>)
        },
    });
    #[cfg(feature = "faults")]
    entries.push(TesterEntry {
        section: "faults",
        build: |c, _run_id, p| {
            citadel_itest_faults::from_config(c, p)
                .map(|t| Box::new(t) as Box<dyn IntegrationTester>)
        },
    });
    entries
}

/// A validated configuration and the testers it describes.
pub struct Loaded {
    /// The merged configuration.
    pub config: Config,
    /// One tester per configured section, in registry order.
    pub testers: Vec<Box<dyn IntegrationTester>>,
    /// The run id the testers were built with; [`plan`] gives it to the suite.
    pub run_id: String,
}

/// Load config files (in order) over the defaults, then `CITADEL_ITEST__*` env, then
/// `overrides` (dotted key, value), and build every configured tester. All problems of all
/// sections are returned together.
///
/// The nearest `.env` file is loaded into the environment first ([`load_dotenv`], feature
/// `dotenv`, on by default), exactly as the binary does: variables already set win.
pub fn load(
    files: &[PathBuf],
    overrides: Vec<(String, serde_json::Value)>,
) -> Result<Loaded, ConfigError> {
    load_dotenv()?;
    let entries = registry();
    let mut loader = ConfigLoader::new();
    for e in &entries {
        loader = loader.section(e.section);
    }
    for f in files {
        loader = loader.file(f);
    }
    for (k, v) in overrides {
        loader = loader.set(k, v);
    }
    let run_id = new_run_id();
    // Tester sections are validated even when a core section is invalid: every problem at once.
    let (config, testers) = loader.load_with(|config, problems| {
        entries
            .iter()
            .filter_map(|e| (e.build)(config, &run_id, problems))
            .collect::<Vec<Box<dyn IntegrationTester>>>()
    })?;
    Ok(Loaded {
        config,
        testers,
        run_id,
    })
}

/// `*` matches any run of characters, `?` one character; everything else literally.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0usize, 0usize, None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The checks selected by `only` (any match; empty = all) minus `skip` (any match), with their
/// tester names, in tester order.
pub fn select(
    testers: &[Box<dyn IntegrationTester>],
    only: &[String],
    skip: &[String],
) -> Vec<(String, Arc<dyn Check>)> {
    let mut out = Vec::new();
    for t in testers {
        for c in t.checks() {
            let id = c.id().as_str();
            let included = only.is_empty() || only.iter().any(|g| glob_match(g, id));
            let excluded = skip.iter().any(|g| glob_match(g, id));
            if included && !excluded {
                out.push((t.name().to_string(), c));
            }
        }
    }
    out
}

/// No check is left to run after filtering.
#[derive(Debug, thiserror::Error)]
#[error("no checks to run{}", if .0.is_empty() { String::new() } else { format!(" ({})", .0) })]
pub struct NothingToRun(pub String);

/// A suite builder with the configured run settings and the selected checks.
pub fn plan(
    loaded: &Loaded,
    only: &[String],
    skip: &[String],
) -> Result<SuiteBuilder, NothingToRun> {
    let checks = select(&loaded.testers, only, skip);
    if checks.is_empty() {
        let why = if loaded.testers.is_empty() {
            "no tester section is configured".to_string()
        } else if !only.is_empty() || !skip.is_empty() {
            "--only/--skip matched nothing".to_string()
        } else {
            "the configured testers produced no checks".to_string()
        };
        return Err(NothingToRun(why));
    }
    let run = &loaded.config.run;
    let mut b = Suite::builder()
        .run_id(loaded.run_id.clone())
        .concurrency(run.concurrency)
        .default_timeout(run.timeout)
        .deadline(run.deadline)
        .fail_fast(run.fail_fast)
        .cancel_grace(run.cancel_grace)
        .cleanup_budget(run.cleanup_budget)
        .config_summary(loaded.config.summary());
    for (tester, check) in checks {
        b = b.check(tester, check);
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("basic.*", "basic.gw.health"));
        assert!(glob_match("*.health", "basic.gw.health"));
        assert!(glob_match("basic.g?.*", "basic.gw.health"));
        assert!(!glob_match("basic.*.connectivity", "basic.gw.health"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("a", "ab"));
    }
}
