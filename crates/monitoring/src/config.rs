//! The `monitoring:` section: `/metrics` endpoints, Prometheus servers, alert drills, health
//! endpoints.

use std::collections::BTreeSet;
use std::time::Duration;

use citadel_itest_core::config::{MAX_TIMEOUT, Secret, Validate, Validator};
use serde::{Deserialize, Serialize};

/// Default `max_body_bytes` of a scrape: 10 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
/// Largest accepted `max_body_bytes`.
pub const MAX_BODY_BYTES: u64 = 1024 * 1024 * 1024;
/// Default bound of each request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Names an endpoint or Prometheus server may not have: their check ids would collide with
/// `monitoring.drills.<name>` and `monitoring.health.<name>`.
pub const RESERVED_NAMES: [&str; 2] = ["drills", "health"];
/// Default `drills[].within`.
pub const DEFAULT_DRILL_WITHIN: Duration = Duration::from_secs(60);

/// The `monitoring:` section.
///
/// ```yaml
/// monitoring:
///   endpoints:
///     - { name: model_a, url: http://127.0.0.1:58101/metrics }
///   prometheus:
///     - { name: main, url: http://127.0.0.1:59090, jobs: [models] }
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct MonitoringConfig {
    /// `/metrics` pages to scrape, lint and assert on.
    #[serde(default)]
    pub endpoints: Vec<EndpointConfig>,
    /// Prometheus servers: health, targets, rules, queries, alerts.
    #[serde(default)]
    pub prometheus: Vec<PrometheusConfig>,
    /// End-to-end alert drills.
    #[serde(default)]
    pub drills: Vec<DrillConfig>,
    /// Health and readiness endpoints.
    #[serde(default)]
    pub health: Vec<HealthConfig>,
}

fn default_timeout() -> Duration {
    DEFAULT_REQUEST_TIMEOUT
}

fn default_max_body() -> u64 {
    DEFAULT_MAX_BODY_BYTES
}

fn yes() -> bool {
    true
}

/// `endpoints[]`: one `/metrics` page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct EndpointConfig {
    /// Name in check ids: `monitoring.<name>.metrics`.
    pub name: String,
    /// The page, e.g. `http://127.0.0.1:58101/metrics`.
    pub url: String,
    /// Sent as `Authorization: Bearer ...` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer: Option<Secret>,
    /// Bound of each scrape.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// A body over this many bytes fails the check.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    /// Lint the exposition (HELP/TYPE, names, suffixes, duplicates, histogram shape).
    #[serde(default = "yes")]
    pub lint: bool,
    /// Lint finding kinds not to report (e.g. `counter_suffix`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lint_ignore: Vec<String>,
    /// Metric families that must be present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub families: Vec<FamilyConfig>,
    /// Assertions on the values of selected series.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<ValueConfig>,
    /// Assertions on how series change between two scrapes (own check `...rates`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rates: Vec<RateConfig>,
}

/// `families[]`: a metric family that must be exposed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FamilyConfig {
    /// The family name (for counters the name with `_total` or without).
    pub name: String,
    /// Its declared `# TYPE`: counter, gauge, histogram, summary, untyped (any when absent).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Label names every series of it must carry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

/// `values[]`: `series` is a selector, `name{label="value",...}`; every matching series must
/// satisfy the bound(s) and at least one must match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ValueConfig {
    /// `name` or `name{label="value"}` (exact label matches).
    pub series: String,
    /// Greater than.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<f64>,
    /// Less than.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<f64>,
    /// At least.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// At most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eq: Option<f64>,
}

/// `rates[]`: scrape, optionally make traffic, scrape again; the series' summed value must grow
/// by at least `min_increase` (and at most `max_increase`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RateConfig {
    /// Selector, as in `values`.
    pub series: String,
    /// Least increase between the scrapes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_increase: Option<f64>,
    /// Largest increase between the scrapes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_increase: Option<f64>,
    /// Requests the check sends between the two scrapes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<TrafficConfig>,
    /// Wait between the scrapes (after the traffic).
    #[serde(default, with = "humantime_serde")]
    pub interval: Duration,
}

/// `rates[].traffic`: requests the check sends itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TrafficConfig {
    /// `GET` (default) or `POST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Where to send them.
    pub url: String,
    /// A JSON body (sent with `content-type: application/json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    /// How many.
    pub requests: u32,
}

/// `prometheus[]`: one Prometheus server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PrometheusConfig {
    /// Name in check ids: `monitoring.<name>.<check>`.
    pub name: String,
    /// The server's base URL, e.g. `http://127.0.0.1:59090`.
    pub url: String,
    /// Sent as `Authorization: Bearer ...` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer: Option<Secret>,
    /// Bound of each request.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Scrape jobs whose every target must be `up` (check `targets`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<String>,
    /// Largest acceptable last scrape duration of a target.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_scrape_duration: Option<Duration>,
    /// Rules that must be loaded and healthy (check `rules`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<RulesConfig>,
    /// PromQL assertions (check `queries`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queries: Vec<QueryConfig>,
    /// Alerts expected quiet or firing (check `alerts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<AlertsConfig>,
}

/// `prometheus[].rules`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RulesConfig {
    /// Alerting rules, `group/name` or `name`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerting: Vec<String>,
    /// Recording rules, `group/name` or `name`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recording: Vec<String>,
    /// Largest acceptable evaluation time of a rule group.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_evaluation_time: Option<Duration>,
    /// Every loaded rule (not only the listed ones) must be healthy (default true).
    #[serde(default = "yes")]
    pub all_healthy: bool,
}

/// `prometheus[].queries[]`: an instant query; the result must be non-empty, and with bounds
/// every sample must be within them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct QueryConfig {
    /// Name in messages.
    pub name: String,
    /// The PromQL expression.
    pub query: String,
    /// Least value of every sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest value of every sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// An empty result passes (default false: empty fails).
    #[serde(default)]
    pub allow_empty: bool,
}

/// `prometheus[].alerts`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AlertsConfig {
    /// Alerts that must not be firing (nor pending).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quiet: Vec<String>,
    /// Alerts that must be firing (a watchdog).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub firing: Vec<String>,
}

/// `drills[]`: induce a condition, see the alert go pending, firing, reach Alertmanager and be
/// delivered to the webhook receiver; restore, see it resolve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DrillConfig {
    /// Name in the check id `monitoring.drills.<name>`.
    pub name: String,
    /// Prometheus evaluating the alert rule.
    pub prometheus: String,
    /// Alertmanager the Prometheus sends to.
    pub alertmanager: String,
    /// The alert (its `alertname`).
    pub alert: String,
    /// How the condition is induced.
    pub induce: InduceConfig,
    /// The webhook receiver Alertmanager delivers the alert to: the check listens there
    /// while it runs (a loopback address, as in Alertmanager's receiver `url`).
    pub webhook: WebhookConfig,
    /// Bound of the whole drill (firing, delivery, resolution).
    #[serde(default = "default_within", with = "humantime_serde")]
    pub within: Duration,
    /// Bound of each request.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_within() -> Duration {
    DEFAULT_DRILL_WITHIN
}

/// `drills[].induce`: exactly one way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct InduceConfig {
    /// Push a metric to a Pushgateway (deleted again to restore).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushgateway: Option<PushInduce>,
    /// Run a command (and its `restore` command afterwards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<ActionInduce>,
}

/// `induce.pushgateway`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PushInduce {
    /// The Pushgateway, e.g. `http://127.0.0.1:59091`.
    pub url: String,
    /// The job label of the pushed group (the run id is added as label `instance`).
    #[serde(default = "default_drill_job")]
    pub job: String,
    /// The metric pushed.
    pub metric: String,
    /// Its value while the condition holds.
    #[serde(default = "one")]
    pub value: f64,
}

fn default_drill_job() -> String {
    "citadel_itest_drill".into()
}

fn one() -> f64 {
    1.0
}

/// `induce.action`: commands that take something down and bring it back. Only with
/// `disposable: true`, saying the target may be disturbed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ActionInduce {
    /// Program and arguments that induce the condition.
    pub command: Vec<String>,
    /// Program and arguments that restore it (always run, on every path).
    pub restore: Vec<String>,
    /// Must be true: the target is disposable.
    #[serde(default)]
    pub disposable: bool,
}

/// `drills[].webhook`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct WebhookConfig {
    /// `127.0.0.1:59095`: where to listen.
    pub listen: String,
    /// The path Alertmanager posts to (default `/`).
    #[serde(default = "default_webhook_path")]
    pub path: String,
}

fn default_webhook_path() -> String {
    "/".into()
}

/// `health[]`: one service's liveness and readiness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HealthConfig {
    /// Name in the check id `monitoring.health.<name>`.
    pub name: String,
    /// Liveness URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<String>,
    /// Readiness URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// Status a healthy answer has (default 200).
    #[serde(default = "default_status")]
    pub expect_status: u16,
    /// JSON fields a healthy answer has: `{ pointer: /status, equals: ok }`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expect_json: Vec<JsonExpect>,
    /// Text a healthy answer's body contains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_body: Option<String>,
    /// Largest acceptable response time.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_latency: Option<Duration>,
    /// Bound of each request.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_status() -> u16 {
    200
}

/// A JSON field and the value it must have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct JsonExpect {
    /// RFC 6901 pointer: `/status`.
    pub pointer: String,
    /// The value.
    pub equals: serde_json::Value,
}

impl Validate for MonitoringConfig {
    fn validate(&self, v: &mut Validator<'_>) {
        let mut names = BTreeSet::new();
        let mut unique = |v: &mut Validator<'_>, key: &str, name: &str| {
            v.name(key, name);
            if RESERVED_NAMES.contains(&name) {
                v.error(
                    key,
                    format!(
                        "`{name}` is taken by the `monitoring.{name}.*` checks: choose another name"
                    ),
                );
            } else if !names.insert(name.to_string()) {
                v.error(key, format!("name `{name}` is used twice in `monitoring`"));
            }
        };
        for (i, e) in self.endpoints.iter().enumerate() {
            let mut v = v.at(&format!("endpoints[{i}]"));
            unique(&mut v, "name", &e.name);
            v.url("url", &e.url);
            if let Some(b) = &e.bearer {
                v.secret("bearer", b);
            }
            v.duration_range("timeout", e.timeout, Duration::from_millis(1), MAX_TIMEOUT);
            v.range("max_body_bytes", e.max_body_bytes, 1, MAX_BODY_BYTES);
            for (j, kind) in e.lint_ignore.iter().enumerate() {
                if !crate::exposition::FINDING_KINDS.contains(&kind.as_str()) {
                    v.error(
                        &format!("lint_ignore[{j}]"),
                        format!(
                            "`{kind}` is not a finding kind (kinds: {})",
                            crate::exposition::FINDING_KINDS.join(", ")
                        ),
                    );
                }
            }
            for (j, f) in e.families.iter().enumerate() {
                if let Some(kind) = &f.kind {
                    if ![
                        "counter",
                        "gauge",
                        "histogram",
                        "summary",
                        "untyped",
                        "info",
                        "stateset",
                        "gaugehistogram",
                        "unknown",
                    ]
                    .contains(&kind.as_str())
                    {
                        v.error(
                            &format!("families[{j}].type"),
                            format!("`{kind}` is not a metric type"),
                        );
                    }
                }
            }
            for (j, val) in e.values.iter().enumerate() {
                if [val.gt, val.lt, val.min, val.max, val.eq]
                    .iter()
                    .all(Option::is_none)
                {
                    v.error(
                        &format!("values[{j}]"),
                        "give a bound: gt, lt, min, max or eq",
                    );
                }
            }
            for (j, r) in e.rates.iter().enumerate() {
                let mut v = v.at(&format!("rates[{j}]"));
                if r.min_increase.is_none() && r.max_increase.is_none() {
                    v.error("", "give min_increase or max_increase");
                }
                v.duration_range("interval", r.interval, Duration::ZERO, MAX_TIMEOUT);
                if let Some(t) = &r.traffic {
                    v.url("traffic.url", &t.url);
                    v.range("traffic.requests", t.requests, 1, 100_000);
                }
            }
        }
        for (i, p) in self.prometheus.iter().enumerate() {
            let mut v = v.at(&format!("prometheus[{i}]"));
            unique(&mut v, "name", &p.name);
            v.url("url", &p.url);
            if let Some(b) = &p.bearer {
                v.secret("bearer", b);
            }
            v.duration_range("timeout", p.timeout, Duration::from_millis(1), MAX_TIMEOUT);
            for (j, q) in p.queries.iter().enumerate() {
                if q.query.trim().is_empty() {
                    v.error(&format!("queries[{j}].query"), "must not be empty");
                }
            }
        }
        let mut drills = BTreeSet::new();
        for (i, d) in self.drills.iter().enumerate() {
            let mut v = v.at(&format!("drills[{i}]"));
            v.name("name", &d.name);
            if !drills.insert(d.name.as_str()) {
                v.error("name", format!("drill name `{}` is used twice", d.name));
            }
            v.url("prometheus", &d.prometheus);
            v.url("alertmanager", &d.alertmanager);
            v.duration_range(
                "within",
                d.within,
                Duration::from_secs(1),
                Duration::from_secs(3600),
            );
            v.duration_range("timeout", d.timeout, Duration::from_millis(1), MAX_TIMEOUT);
            match (&d.induce.pushgateway, &d.induce.action) {
                (Some(p), None) => {
                    v.url("induce.pushgateway.url", &p.url);
                }
                (None, Some(a)) => {
                    if !a.disposable {
                        v.error(
                            "induce.action.disposable",
                            "an action takes a target down: set `disposable: true` to say it may be",
                        );
                    }
                    if a.command.is_empty() {
                        v.error("induce.action.command", "must not be empty");
                    }
                    if a.restore.is_empty() {
                        v.error("induce.action.restore", "must not be empty");
                    }
                }
                _ => v.error("induce", "give exactly one of `pushgateway`, `action`"),
            }
            match d.webhook.listen.parse::<std::net::SocketAddr>() {
                Ok(addr) if addr.ip().is_loopback() => {}
                Ok(_) => v.error("webhook.listen", "listen on a loopback address only"),
                Err(_) => v.error(
                    "webhook.listen",
                    format!(
                        "`{}` is not an address such as 127.0.0.1:59095",
                        d.webhook.listen
                    ),
                ),
            }
            if !d.webhook.path.starts_with('/') {
                v.error("webhook.path", "must start with `/`");
            }
        }
        let mut health = BTreeSet::new();
        for (i, h) in self.health.iter().enumerate() {
            let mut v = v.at(&format!("health[{i}]"));
            v.name("name", &h.name);
            if !health.insert(h.name.as_str()) {
                v.error("name", format!("health name `{}` is used twice", h.name));
            }
            if h.live.is_none() && h.ready.is_none() {
                v.error("", "give `live`, `ready` or both");
            }
            if let Some(u) = &h.live {
                v.url("live", u);
            }
            if let Some(u) = &h.ready {
                v.url("ready", u);
            }
            v.range("expect_status", h.expect_status, 100, 599);
            v.duration_range("timeout", h.timeout, Duration::from_millis(1), MAX_TIMEOUT);
            for (j, e) in h.expect_json.iter().enumerate() {
                if !e.pointer.is_empty() && !e.pointer.starts_with('/') {
                    v.error(
                        &format!("expect_json[{j}].pointer"),
                        "a JSON pointer starts with `/`",
                    );
                }
            }
        }
    }
}
