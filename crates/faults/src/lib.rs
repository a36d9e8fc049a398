//! Fault injection and error-handling checks (being built; see docs/faults.md when it lands).

#![forbid(unsafe_code)]

pub mod checks;
pub mod config;
pub mod proxy;

pub use proxy::{
    Direction, Event, EventKind, Fault, FaultId, FaultSpec, Mode, Proxy, ProxyConfig, ProxyError,
    ProxyHandle,
};

/// The tester's name and config section.
pub const NAME: &str = "faults";

pub use checks::{DrillCheck, DrillKind, ProxyControl};
pub use config::FaultsConfig;

/// The `faults` tester: one [`DrillCheck`] per declared behaviour of each drill
/// (`faults.<drill>.<kind>`, category `error_handling`).
#[derive(Debug, Clone)]
pub struct FaultsTester {
    config: FaultsConfig,
}

impl FaultsTester {
    /// A tester over `config`.
    pub fn new(config: FaultsConfig) -> Self {
        FaultsTester { config }
    }

    /// The section it was built from.
    pub fn config(&self) -> &FaultsConfig {
        &self.config
    }
}

impl citadel_itest_core::IntegrationTester for FaultsTester {
    fn name(&self) -> &str {
        NAME
    }

    fn checks(&self) -> Vec<std::sync::Arc<dyn citadel_itest_core::Check>> {
        self.config
            .drills
            .iter()
            .flat_map(|drill| {
                DrillKind::ALL
                    .into_iter()
                    .filter(|kind| kind.declared_in(drill))
                    .map(|kind| {
                        std::sync::Arc::new(DrillCheck::new(drill, kind))
                            as std::sync::Arc<dyn citadel_itest_core::Check>
                    })
            })
            .collect()
    }
}

/// Build the tester from the `faults:` section of `config`, appending every problem (with key
/// paths) to `problems`. `None` when the section is absent or invalid.
pub fn from_config(
    config: &citadel_itest_core::config::Config,
    problems: &mut Vec<citadel_itest_core::config::ConfigProblem>,
) -> Option<FaultsTester> {
    let before = problems.len();
    let section = config.section::<FaultsConfig>(NAME, problems)?;
    if problems.len() > before {
        return None;
    }
    Some(FaultsTester::new(section))
}
