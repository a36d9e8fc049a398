//! [`FlowCheck`]: one flow as one check.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use citadel_itest_core::config::Secret;
use citadel_itest_core::{
    BoxError, Category, Check, CheckContext, CheckId, ErrorKind, Measurement, Outcome, Resource,
    error_chain,
};
use tokio::time::Instant;

use super::steps::{Env, Exec, StepError};
use super::{Flow, FlowsConfig};
use crate::config::GatewayConfig;
use crate::{NAME, Settings};

/// One flow, run as the check `cross_service.flows.<name>` (category `operations`: a flow is
/// one operation of the platform followed end to end).
///
/// Steps run in order; the first that fails fails the check, naming the flow, the step and
/// what was wrong. Temporary collections are removed through the runner's cleanup on every
/// path. The check claims the gateway's traffic, like the gateway checks, so its requests do
/// not disturb their counts. Its budget is `flows.timeout` (else the gateway's `timeout`, else
/// `run.timeout`) plus the `poll_until` bounds of its SQL steps.
#[derive(Debug, Clone)]
pub struct FlowCheck {
    id: CheckId,
    flow: Arc<Flow>,
    gateway_url: String,
    gateway_key: Option<Secret>,
    request_timeout: Duration,
    flows: Arc<FlowsConfig>,
    run_id: String,
    timeout: Duration,
}

impl FlowCheck {
    /// `flow` through gateway `gw`, reaching the services `flows` names.
    pub fn new(flow: Flow, gw: &GatewayConfig, flows: &FlowsConfig, settings: &Settings) -> Self {
        FlowCheck {
            id: CheckId::new(format!("{NAME}.flows.{}", flow.name)),
            gateway_url: gw.url.clone(),
            gateway_key: gw.api_key.clone(),
            request_timeout: gw.request_timeout,
            flows: Arc::new(flows.clone()),
            run_id: settings.run_id.clone(),
            // The polls of SQL steps come on top of the base budget, so a flow reaches its
            // bound (and reports the last observed value) before the runner's timeout.
            timeout: flows.timeout.or(gw.timeout).unwrap_or(settings.timeout)
                + flow
                    .steps
                    .iter()
                    .filter_map(|s| s.sql.as_ref().and_then(|q| q.poll_until))
                    .sum::<Duration>(),
            flow: Arc::new(flow),
        }
    }

    /// The flow it runs.
    pub fn flow(&self) -> &Flow {
        &self.flow
    }

    fn env(&self) -> Result<Env, String> {
        let url = url::Url::parse(&self.gateway_url).map_err(|e| format!("gateway url: {e}"))?;
        let origin = url.origin().ascii_serialization();
        let gateway_key = match &self.gateway_key {
            None => None,
            Some(s) => Some(
                s.resolve()
                    .map_err(|e| format!("gateway api_key: {}", error_chain(&e)))?,
            ),
        };
        let qdrant = match &self.flows.qdrant {
            None => None,
            Some(q) => Some(Env::qdrant_from(q)?),
        };
        Ok(Env {
            gateway_origin: origin,
            gateway_key,
            request_timeout: self.request_timeout,
            postgres: self.flows.postgres.clone(),
            qdrant,
            run_id: self.run_id.clone(),
        })
    }
}

#[async_trait]
impl Check for FlowCheck {
    fn id(&self) -> &CheckId {
        &self.id
    }

    fn category(&self) -> Category {
        Category::Operations
    }

    fn timeout(&self) -> Option<Duration> {
        Some(self.timeout)
    }

    fn exclusive(&self) -> Vec<Resource> {
        vec![
            Resource::new("gateway-traffic", &self.gateway_url),
            Resource::traffic(&self.gateway_url),
        ]
    }

    async fn run(&self, ctx: &CheckContext) -> Result<Outcome, BoxError> {
        let name = &self.flow.name;
        let env = match self.env() {
            Ok(env) => env,
            Err(m) => {
                return Ok(Outcome::error(
                    ErrorKind::Harness,
                    format!("flow `{name}`: {m}"),
                ));
            }
        };
        let request_id = format!(
            "citadel-itest-{}-flow-{}",
            self.run_id,
            citadel_itest_core::temp::new_run_id()
        );
        ctx.detail("request_id", request_id.clone());
        let mut exec = match Exec::new(&env, ctx, request_id) {
            Ok(e) => e,
            Err(StepError::Harness(m) | StepError::Failed(m)) => {
                return Ok(Outcome::error(
                    ErrorKind::Harness,
                    format!("flow `{name}`: {m}"),
                ));
            }
        };
        let mut measurements = Vec::new();
        let started = Instant::now();
        for step in &self.flow.steps {
            let at = format!("flow `{name}` step `{}` ({})", step.name, step.kind());
            let step_started = Instant::now();
            let result = tokio::select! {
                r = exec.step(step) => r,
                _ = ctx.cancel.cancelled() => {
                    return Ok(Outcome::error(
                        ErrorKind::Cancelled,
                        format!("{at} cancelled; temporary objects are removed by the run's cleanup"),
                    ));
                }
            };
            match result {
                Ok(()) => measurements.push(Measurement::duration(
                    format!("step_{}", step.name),
                    step_started.elapsed(),
                )),
                Err(StepError::Failed(m)) => {
                    return Ok(Outcome::Failed {
                        message: format!("{at}: {m}"),
                        measurements,
                    });
                }
                Err(StepError::Harness(m)) => {
                    return Ok(Outcome::error(ErrorKind::Harness, format!("{at}: {m}")));
                }
            }
        }
        measurements.push(Measurement::duration("flow_time", started.elapsed()));
        Ok(Outcome::from_measurements(measurements))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{HttpStep, SqlStep};

    #[test]
    fn the_budget_covers_the_sql_polls() {
        let gw =
            GatewayConfig::new("http://127.0.0.1:58080/v1", ["m"]).timeout(Duration::from_secs(7));
        let flow = Flow::new("f").http("a", HttpStep::get("/v1/models")).sql(
            "b",
            SqlStep::new("SELECT 1").poll_until(Duration::from_secs(5)),
        );
        let check = FlowCheck::new(flow, &gw, &FlowsConfig::new(), &Settings::default());
        assert_eq!(check.timeout(), Some(Duration::from_secs(12)));
        assert_eq!(check.id().as_str(), "cross_service.flows.f");
        assert_eq!(check.category(), Category::Operations);
    }
}
