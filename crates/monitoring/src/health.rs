//! Liveness and readiness endpoints: `monitoring.health.<name>` (category health).
//!
//! Each configured URL (`live`, `ready`) is fetched once, bounded by `timeout`. An answer is
//! healthy when its status is `expect_status` (200 unless told), every `expect_json` pointer
//! holds its value, the body contains `expect_body`, and it came within `max_latency`. The
//! message always says which endpoint failed: a service that is live but not ready fails with
//! `live but not ready: …`; one that is not live with `not live: …`.
//!
//! ```
//! use citadel_itest_monitoring::config::HealthConfig;
//! use citadel_itest_monitoring::health;
//!
//! let gateway: HealthConfig = serde_json::from_value(serde_json::json!({
//!     "name": "gateway",
//!     "live": "http://127.0.0.1:58080/health",
//!     "ready": "http://127.0.0.1:58080/ready",
//!     "expect_json": [{ "pointer": "/status", "equals": "ok" }],
//!     "max_latency": "500ms"
//! }))
//! .unwrap();
//! let checks = health::checks(&[gateway]);
//! assert_eq!(checks[0].id().as_str(), "monitoring.health.gateway");
//! ```

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use citadel_itest_core::config::redact_url;
use citadel_itest_core::http::{excerpt, parse_json};
use citadel_itest_core::{
    BoxError, Category, Check, CheckContext, CheckId, Measurement, Outcome, Status, Threshold,
};

use crate::config::HealthConfig;
use crate::prometheus::{http_client, send};

/// The most bytes of a health answer the check reads: 1 MiB.
pub const HEALTH_MAX_BODY: usize = 1024 * 1024;

/// One check per configured service.
pub fn checks(health: &[HealthConfig]) -> Vec<Arc<dyn Check>> {
    health
        .iter()
        .map(|h| Arc::new(HealthCheck::new(h.clone())) as Arc<dyn Check>)
        .collect()
}

/// `monitoring.health.<name>`: see the module docs.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    id: CheckId,
    config: Arc<HealthConfig>,
}

/// Why one endpoint is not healthy, or how long it took when it is.
type Probe = Result<(), String>;

impl HealthCheck {
    /// The check of `config`.
    pub fn new(config: HealthConfig) -> Self {
        HealthCheck {
            id: CheckId::new(format!("{}.health.{}", crate::NAME, config.name)),
            config: Arc::new(config),
        }
    }

    /// Fetch one endpoint and judge its answer; `Err(outcome)` only when the harness could not
    /// tell (deadline, cancellation).
    async fn probe(
        &self,
        ctx: &CheckContext,
        client: &reqwest::Client,
        kind: &str,
        url: &str,
        measurements: &mut Vec<Measurement>,
    ) -> Result<Probe, Outcome> {
        let c = &self.config;
        let step = format!("GET {}", redact_url(url));
        let reply = match send(ctx, &step, client.get(url), c.timeout, HEALTH_MAX_BODY).await {
            Ok(reply) => reply,
            Err(o) if o.status() == Status::Failed => {
                measurements.push(Measurement::missing(
                    format!("{kind}_time"),
                    citadel_itest_core::Unit::Milliseconds,
                ));
                return Ok(Err(o.message().unwrap_or_default().to_string()));
            }
            Err(o) => return Err(o),
        };
        let mut time = Measurement::duration(format!("{kind}_time"), reply.time);
        if let Some(max) = c.max_latency {
            time = time.with_threshold(Threshold::le(max.as_secs_f64() * 1000.0));
        }
        measurements.push(time);

        let mut wrong = Vec::new();
        if reply.status.as_u16() != c.expect_status {
            wrong.push(format!(
                "HTTP {}{} (expected {}): {}",
                reply.status.as_u16(),
                reply.redirect_text(),
                c.expect_status,
                excerpt(&reply.body)
            ));
        }
        if !c.expect_json.is_empty() && wrong.is_empty() {
            match parse_json::<serde_json::Value>(&reply.body) {
                Err(e) => wrong.push(format!("{e}: {}", excerpt(&reply.body))),
                Ok(doc) => {
                    for e in &c.expect_json {
                        match doc.pointer(&e.pointer) {
                            None => wrong.push(format!("`{}` is missing", e.pointer)),
                            Some(v) if *v != e.equals => wrong.push(format!(
                                "`{}` is {}, expected {}",
                                e.pointer,
                                excerpt(v.to_string().as_bytes()),
                                excerpt(e.equals.to_string().as_bytes())
                            )),
                            Some(_) => {}
                        }
                    }
                }
            }
        }
        if let Some(text) = &c.expect_body {
            if wrong.is_empty() && !String::from_utf8_lossy(&reply.body).contains(text.as_str()) {
                wrong.push(format!(
                    "the body does not contain \"{}\": {}",
                    excerpt(text.as_bytes()),
                    excerpt(&reply.body)
                ));
            }
        }
        if let Some(max) = c.max_latency {
            if reply.time > max {
                wrong.push(format!(
                    "answered in {}, over max_latency {}",
                    millis(reply.time),
                    humantime::format_duration(max)
                ));
            }
        }
        if wrong.is_empty() {
            Ok(Ok(()))
        } else {
            Ok(Err(format!("{step}: {}", wrong.join(", "))))
        }
    }
}

#[async_trait]
impl Check for HealthCheck {
    fn id(&self) -> &CheckId {
        &self.id
    }

    fn category(&self) -> Category {
        Category::Health
    }

    async fn run(&self, ctx: &CheckContext) -> Result<Outcome, BoxError> {
        let c = &self.config;
        let client = match http_client(c.timeout) {
            Ok(client) => client,
            Err(o) => return Ok(o),
        };
        let mut measurements = Vec::new();
        let mut live = None;
        let mut ready = None;
        if let Some(url) = &c.live {
            ctx.detail("live", redact_url(url));
            match self
                .probe(ctx, &client, "live", url, &mut measurements)
                .await
            {
                Ok(p) => live = Some(p),
                Err(o) => return Ok(o),
            }
        }
        if let Some(url) = &c.ready {
            ctx.detail("ready", redact_url(url));
            match self
                .probe(ctx, &client, "ready", url, &mut measurements)
                .await
            {
                Ok(p) => ready = Some(p),
                Err(o) => return Ok(o),
            }
        }
        let message = match (live, ready) {
            (Some(Ok(())), Some(Err(r))) => Some(format!("live but not ready: {r}")),
            (Some(Err(l)), Some(Ok(()))) => Some(format!("not live (though ready): {l}")),
            (Some(Err(l)), Some(Err(r))) => Some(format!("not live: {l}; not ready: {r}")),
            (Some(Err(l)), None) => Some(format!("not live: {l}")),
            (None, Some(Err(r))) => Some(format!("not ready: {r}")),
            (None, None) => Some("neither `live` nor `ready` is configured".to_string()),
            _ => None,
        };
        Ok(match message {
            Some(message) => Outcome::Failed {
                message,
                measurements,
            },
            None => Outcome::from_measurements(measurements),
        })
    }
}

/// `812ms`, `1.204s`.
fn millis(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.3}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}
