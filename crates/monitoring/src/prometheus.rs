//! Checks of a Prometheus server over its HTTP API: health, scrape targets, rules, PromQL
//! assertions and alerts.
//!
//! [`checks`] builds, for each configured server `<name>`:
//!
//! | id | category | what |
//! |---|---|---|
//! | `monitoring.<name>.health` | health | `/-/healthy` and `/-/ready` answer Prometheus's own texts, `/api/v1/status/buildinfo` names a version |
//! | `monitoring.<name>.targets` | metrics | every configured job has active targets, all `up`; last scrape durations |
//! | `monitoring.<name>.rules` | alerting | listed rules loaded, rules healthy, group evaluation times (only with `rules`) |
//! | `monitoring.<name>.queries` | metrics | instant PromQL queries answer samples within bounds (only with `queries`) |
//! | `monitoring.<name>.alerts` | alerting | `quiet` alerts neither pending nor firing, `firing` ones firing (only with `alerts`) |
//!
//! Every request is bounded by the server's `timeout` and the check's deadline; every body is
//! read through the core's bounded reader and parsed into the shape a real Prometheus sends,
//! naming the field that is wrong when it is not.
//!
//! ```
//! use citadel_itest_monitoring::config::PrometheusConfig;
//! use citadel_itest_monitoring::prometheus;
//!
//! let server: PrometheusConfig = serde_json::from_value(serde_json::json!({
//!     "name": "main",
//!     "url": "http://127.0.0.1:59090",
//!     "jobs": ["models"],
//!     "queries": [{ "name": "models_up", "query": "sum(up{job=\"models\"})", "min": 1 }]
//! }))
//! .unwrap();
//! let ids: Vec<String> = prometheus::checks(&[server])
//!     .iter()
//!     .map(|c| c.id().to_string())
//!     .collect();
//! assert_eq!(
//!     ids,
//!     ["monitoring.main.health", "monitoring.main.targets", "monitoring.main.queries"]
//! );
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use citadel_itest_core::config::{Secret, SecretString, redact_url};
use citadel_itest_core::http::{BodyError, BodyLimit, excerpt, parse_json, read_body};
use citadel_itest_core::{
    BoxError, Category, Check, CheckContext, CheckId, ErrorKind, Measurement, Outcome, Threshold,
    Unit, error_chain, io_error_words_in_chain,
};
use reqwest::StatusCode;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::time::{Instant, timeout_at};

use crate::config::PrometheusConfig;

/// The most bytes of one Prometheus API answer the checks read: 16 MiB.
pub const API_MAX_BODY: usize = 16 * 1024 * 1024;

/// What a real Prometheus answers on `GET /-/healthy` (server and agent mode).
const HEALTHY: [&str; 2] = [
    "Prometheus Server is Healthy.",
    "Prometheus Agent is Healthy.",
];
/// What a real Prometheus answers on `GET /-/ready` once it is ready.
const READY: [&str; 2] = ["Prometheus Server is Ready.", "Prometheus Agent is Ready."];

/// The longest a check waits for targets or rules Prometheus has not scraped or evaluated yet
/// (`health: unknown`), on top of two of their intervals.
const UNKNOWN_WAIT_CAP: Duration = Duration::from_secs(60);

/// How long the targets check waits for a configured job that has no active targets (yet):
/// Prometheus hands newly discovered targets to its scrape loops about every 5 s.
const DISCOVERY_WAIT: Duration = Duration::from_secs(7);

/// The checks of every server in `servers`: `health` and `targets` always, `rules`, `queries`
/// and `alerts` when configured.
pub fn checks(servers: &[PrometheusConfig]) -> Vec<Arc<dyn Check>> {
    let mut out: Vec<Arc<dyn Check>> = Vec::new();
    for server in servers {
        let server = Arc::new(server.clone());
        let mut aspects = vec![Aspect::Health, Aspect::Targets];
        if server.rules.is_some() {
            aspects.push(Aspect::Rules);
        }
        if !server.queries.is_empty() {
            aspects.push(Aspect::Queries);
        }
        if server.alerts.is_some() {
            aspects.push(Aspect::Alerts);
        }
        for aspect in aspects {
            out.push(Arc::new(PrometheusCheck::new(server.clone(), aspect)));
        }
    }
    out
}

/// Which part of a Prometheus server a [`PrometheusCheck`] looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Aspect {
    /// `/-/healthy`, `/-/ready`, build info.
    Health,
    /// `/api/v1/targets`.
    Targets,
    /// `/api/v1/rules`.
    Rules,
    /// `/api/v1/query`.
    Queries,
    /// `/api/v1/alerts`.
    Alerts,
}

impl Aspect {
    /// The last segment of the check id.
    pub fn as_str(self) -> &'static str {
        match self {
            Aspect::Health => "health",
            Aspect::Targets => "targets",
            Aspect::Rules => "rules",
            Aspect::Queries => "queries",
            Aspect::Alerts => "alerts",
        }
    }

    fn category(self) -> Category {
        match self {
            Aspect::Health => Category::Health,
            Aspect::Targets | Aspect::Queries => Category::Metrics,
            Aspect::Rules | Aspect::Alerts => Category::Alerting,
        }
    }
}

/// One aspect of one Prometheus server: `monitoring.<name>.<aspect>`. See the module docs.
#[derive(Debug, Clone)]
pub struct PrometheusCheck {
    id: CheckId,
    aspect: Aspect,
    server: Arc<PrometheusConfig>,
}

impl PrometheusCheck {
    /// The `aspect` check of `server`.
    pub fn new(server: Arc<PrometheusConfig>, aspect: Aspect) -> Self {
        PrometheusCheck {
            id: CheckId::new(format!(
                "{}.{}.{}",
                crate::NAME,
                server.name,
                aspect.as_str()
            )),
            aspect,
            server,
        }
    }

    async fn health(&self, ctx: &CheckContext, api: &PromApi) -> Result<Outcome, Outcome> {
        let mut problems = Vec::new();
        let mut measurements = Vec::new();
        for (path, texts, name) in [
            ("-/healthy", &HEALTHY, "healthy_time"),
            ("-/ready", &READY, "ready_time"),
        ] {
            let reply = api.get(ctx, path, &[]).await?;
            measurements.push(Measurement::duration(name, reply.time));
            let body = reply.body.trim_ascii();
            if reply.status != StatusCode::OK || !texts.iter().any(|t| body == t.as_bytes()) {
                problems.push(format!(
                    "GET {}: HTTP {}{} with \"{}\", expected HTTP 200 with \"{}\"",
                    api.shown(path, &[]),
                    reply.status.as_u16(),
                    reply.redirect_text(),
                    excerpt(body),
                    texts[0]
                ));
            }
        }
        let path = "api/v1/status/buildinfo";
        match api.data::<BuildInfo>(ctx, path, &[], "build info").await {
            Ok((info, time)) => {
                measurements.push(Measurement::duration("buildinfo_time", time));
                if looks_like_version(&info.version) {
                    ctx.detail("server_version", info.version.as_str());
                } else {
                    problems.push(format!(
                        "GET {}: `data.version` is \"{}\", not a version number",
                        api.shown(path, &[]),
                        excerpt(info.version.as_bytes())
                    ));
                }
            }
            Err(o) if o.status() == citadel_itest_core::Status::Failed => {
                problems.push(o.message().unwrap_or_default().to_string())
            }
            Err(o) => return Err(o),
        }
        Ok(verdict(problems, measurements))
    }

    async fn targets(&self, ctx: &CheckContext, api: &PromApi) -> Result<Outcome, Outcome> {
        let path = "api/v1/targets";
        let started = Instant::now();
        let mut waited_until: Option<Instant> = None;
        let (data, time) = loop {
            let (data, time) = api
                .data::<TargetsData>(ctx, path, &[("state", "active")], "a target list")
                .await?;
            let considered: Vec<&Target> = data
                .active_targets
                .iter()
                .filter(|t| self.job_of(t).is_some())
                .collect();
            let unknown: Vec<&&Target> = considered
                .iter()
                .filter(|t| t.health == "unknown")
                .collect();
            let missing = if self.server.jobs.is_empty() {
                considered.is_empty()
            } else {
                self.server.jobs.iter().any(|j| {
                    !considered
                        .iter()
                        .any(|t| self.job_of(t) == Some(j.as_str()))
                })
            };
            if unknown.is_empty() && !missing {
                break (data, time);
            }
            // Not discovered or not scraped yet (a Prometheus that has just started): wait up
            // to two scrape intervals (and a bit), or the discovery wait, for a verdict.
            let until = *waited_until.get_or_insert_with(|| {
                let longest = unknown
                    .iter()
                    .filter_map(|t| t.scrape_interval.as_deref().and_then(prom_duration))
                    .max()
                    .unwrap_or(Duration::from_secs(15));
                let mut wait = longest
                    .saturating_mul(2)
                    .saturating_add(Duration::from_secs(2));
                if missing {
                    wait = if unknown.is_empty() {
                        DISCOVERY_WAIT
                    } else {
                        wait.max(DISCOVERY_WAIT)
                    };
                }
                started + wait.min(UNKNOWN_WAIT_CAP)
            });
            let latest = ctx
                .deadline
                .checked_sub(api.timeout)
                .unwrap_or(ctx.deadline);
            let next = Instant::now() + Duration::from_millis(250);
            if next >= until.min(latest) {
                break (data, time);
            }
            sleep_until(ctx, next).await?;
        };

        let mut problems = Vec::new();
        let mut by_job: BTreeMap<&str, Vec<&Target>> = BTreeMap::new();
        for t in &data.active_targets {
            if let Some(job) = self.job_of(t) {
                by_job.entry(job).or_default().push(t);
            }
        }
        if self.server.jobs.is_empty() {
            if by_job.is_empty() {
                problems.push(format!(
                    "GET {}: no active targets at all",
                    api.shown(path, &[])
                ));
            }
        } else {
            for job in &self.server.jobs {
                if !by_job.contains_key(job.as_str()) {
                    problems.push(format!(
                        "job `{job}` has no active targets (jobs with targets: {})",
                        list_or_none(data.active_targets.iter().map(|t| t.scrape_pool.as_str()))
                    ));
                }
            }
        }
        let mut up = 0u64;
        let mut down = 0u64;
        let mut slowest: Option<(f64, &Target)> = None;
        for (job, targets) in &by_job {
            for t in targets {
                match t.health.as_str() {
                    "up" => up += 1,
                    "unknown" => {
                        down += 1;
                        problems.push(format!(
                            "job `{job}`: target {} has not been scraped yet (health \"unknown\")",
                            t.describe()
                        ));
                    }
                    other => {
                        down += 1;
                        let why = if t.last_error.is_empty() {
                            "no lastError given".to_string()
                        } else {
                            format!("lastError \"{}\"", error_text(&t.last_error))
                        };
                        problems.push(format!(
                            "job `{job}`: target {} is {other}: {why}",
                            t.describe()
                        ));
                    }
                }
                if t.health == "up" && slowest.is_none_or(|(d, _)| t.last_scrape_duration > d) {
                    slowest = Some((t.last_scrape_duration, t));
                }
            }
        }
        let mut measurements = vec![
            Measurement::duration("targets_time", time),
            count("active_targets", up + down),
            count("targets_up", up),
            count("targets_down", down),
        ];
        let mut scrape = match slowest {
            Some((secs, _)) if secs.is_finite() && secs >= 0.0 => {
                Measurement::new("max_scrape_duration", secs * 1000.0, Unit::Milliseconds)
            }
            _ => Measurement::missing("max_scrape_duration", Unit::Milliseconds),
        };
        if let Some(limit) = self.server.max_scrape_duration {
            scrape = scrape.with_threshold(Threshold::le(limit.as_secs_f64() * 1000.0));
            for targets in by_job.values() {
                for t in targets {
                    if t.health == "up" && t.last_scrape_duration > limit.as_secs_f64() {
                        problems.push(format!(
                            "target {}: last scrape took {}, over max_scrape_duration {}",
                            t.describe(),
                            secs_text(t.last_scrape_duration),
                            humantime::format_duration(limit)
                        ));
                    }
                }
            }
        }
        measurements.push(scrape);
        Ok(verdict(problems, measurements))
    }

    /// The configured job a target belongs to (its scrape pool or `job` label), or with no jobs
    /// configured, its scrape pool.
    fn job_of<'t>(&'t self, t: &'t Target) -> Option<&'t str> {
        if self.server.jobs.is_empty() {
            return Some(t.scrape_pool.as_str());
        }
        self.server
            .jobs
            .iter()
            .find(|j| **j == t.scrape_pool || t.labels.get("job") == Some(*j))
            .map(String::as_str)
    }

    async fn rules(&self, ctx: &CheckContext, api: &PromApi) -> Result<Outcome, Outcome> {
        let Some(cfg) = self.server.rules.as_ref() else {
            return Ok(Outcome::skipped("no `rules` configured"));
        };
        let path = "api/v1/rules";
        let started = Instant::now();
        let mut waited_until: Option<Instant> = None;
        let (data, time) = loop {
            let (data, time) = api.data::<RulesData>(ctx, path, &[], "a rule list").await?;
            let watched = |g: &RuleGroup, r: &Rule| {
                cfg.all_healthy
                    || cfg.alerting.iter().any(|s| rule_matches(s, g, r))
                    || cfg.recording.iter().any(|s| rule_matches(s, g, r))
            };
            let unknown_intervals: Vec<f64> = data
                .groups
                .iter()
                .filter(|g| {
                    g.rules
                        .iter()
                        .any(|r| r.health == "unknown" && watched(g, r))
                })
                .map(|g| g.interval)
                .collect();
            if unknown_intervals.is_empty() {
                break (data, time);
            }
            let until = *waited_until.get_or_insert_with(|| {
                let longest = unknown_intervals
                    .iter()
                    .copied()
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .fold(1.0_f64, f64::max)
                    .min(UNKNOWN_WAIT_CAP.as_secs_f64());
                started
                    + (Duration::from_secs_f64(longest) * 2 + Duration::from_secs(2))
                        .min(UNKNOWN_WAIT_CAP)
            });
            let latest = ctx
                .deadline
                .checked_sub(api.timeout)
                .unwrap_or(ctx.deadline);
            let next = Instant::now() + Duration::from_millis(250);
            if next >= until.min(latest) {
                break (data, time);
            }
            sleep_until(ctx, next).await?;
        };

        let mut problems = Vec::new();
        for (specs, kind) in [(&cfg.alerting, "alerting"), (&cfg.recording, "recording")] {
            for spec in specs {
                let found: Vec<(&RuleGroup, &Rule)> = data
                    .groups
                    .iter()
                    .flat_map(|g| g.rules.iter().map(move |r| (g, r)))
                    .filter(|(g, r)| rule_matches(spec, g, r))
                    .collect();
                if found.is_empty() {
                    let loaded = data
                        .groups
                        .iter()
                        .flat_map(|g| g.rules.iter().map(move |r| (g, r)))
                        .filter(|(_, r)| r.kind == kind)
                        .map(|(g, r)| format!("{}/{}", g.name, r.name));
                    problems.push(format!(
                        "{kind} rule `{spec}` is not loaded (loaded {kind} rules: {})",
                        list_or_none(loaded)
                    ));
                } else if !found.iter().any(|(_, r)| r.kind == kind) {
                    let (g, r) = found[0];
                    problems.push(format!(
                        "rule `{}/{}` is a {} rule, not {kind}",
                        g.name, r.name, r.kind
                    ));
                }
            }
        }
        let mut rules_total = 0u64;
        let mut unhealthy = 0u64;
        for g in &data.groups {
            for r in &g.rules {
                rules_total += 1;
                let watched = cfg.all_healthy
                    || cfg.alerting.iter().any(|s| rule_matches(s, g, r))
                    || cfg.recording.iter().any(|s| rule_matches(s, g, r));
                let error = r.last_error.as_deref().unwrap_or_default();
                if !watched || (r.health == "ok" && error.is_empty()) {
                    continue;
                }
                unhealthy += 1;
                let problem = match r.health.as_str() {
                    "unknown" => format!(
                        "{} rule `{}/{}` has not been evaluated yet (health \"unknown\")",
                        r.kind, g.name, r.name
                    ),
                    health => format!(
                        "{} rule `{}/{}` fails evaluation (health \"{}\"): lastError \"{}\"",
                        r.kind,
                        g.name,
                        r.name,
                        excerpt(health.as_bytes()),
                        error_text(error)
                    ),
                };
                problems.push(problem);
            }
        }
        let mut measurements = vec![
            Measurement::duration("rules_time", time),
            count("rule_groups", data.groups.len() as u64),
            count("rules", rules_total),
            count("rules_unhealthy", unhealthy),
        ];
        let slowest = data
            .groups
            .iter()
            .filter(|g| g.evaluation_time.is_finite())
            .max_by(|a, b| a.evaluation_time.total_cmp(&b.evaluation_time));
        let mut eval = match slowest {
            Some(g) => Measurement::new(
                "max_group_evaluation_time",
                g.evaluation_time * 1000.0,
                Unit::Milliseconds,
            ),
            None => Measurement::missing("max_group_evaluation_time", Unit::Milliseconds),
        };
        if let Some(limit) = cfg.max_evaluation_time {
            eval = eval.with_threshold(Threshold::le(limit.as_secs_f64() * 1000.0));
            if slowest.is_none() {
                problems.push("no rule group is loaded to measure evaluation time".to_string());
            }
            for g in &data.groups {
                if g.evaluation_time > limit.as_secs_f64() {
                    problems.push(format!(
                        "rule group `{}` took {} to evaluate, over max_evaluation_time {}",
                        g.name,
                        secs_text(g.evaluation_time),
                        humantime::format_duration(limit)
                    ));
                }
            }
        }
        measurements.push(eval);
        Ok(verdict(problems, measurements))
    }

    async fn queries(&self, ctx: &CheckContext, api: &PromApi) -> Result<Outcome, Outcome> {
        let mut problems = Vec::new();
        let mut measurements = Vec::new();
        for q in &self.server.queries {
            let key = metric_key(&q.name);
            let answer = match api.query(ctx, &q.query).await {
                Ok(answer) => answer,
                Err(o) if o.status() == citadel_itest_core::Status::Failed => {
                    problems.push(format!(
                        "query `{}`: {}",
                        q.name,
                        o.message().unwrap_or_default()
                    ));
                    continue;
                }
                Err(o) => return Err(o),
            };
            measurements.push(Measurement::duration(format!("{key}_time"), answer.time));
            measurements.push(count(
                &format!("{key}_samples"),
                answer.samples.len() as u64,
            ));
            if answer.samples.is_empty() {
                if !q.allow_empty {
                    problems.push(format!(
                        "query `{}` (`{}`): empty result ({}), expected at least one sample",
                        q.name,
                        excerpt(q.query.as_bytes()),
                        answer.result_type
                    ));
                }
                continue;
            }
            for (labels, value) in &answer.samples {
                // NaN is within no bound.
                let low = q.min.is_some_and(|m| value.is_nan() || *value < m);
                let high = q.max.is_some_and(|m| value.is_nan() || *value > m);
                if low || high {
                    let bound = match (q.min, q.max) {
                        (Some(min), Some(max)) => format!("within [{min}, {max}]"),
                        (Some(min), None) => format!("at least {min}"),
                        (None, Some(max)) => format!("at most {max}"),
                        (None, None) => String::new(),
                    };
                    problems.push(format!(
                        "query `{}`: sample {labels} is {value}, expected {bound}",
                        q.name
                    ));
                }
            }
        }
        Ok(verdict(problems, measurements))
    }

    async fn alerts(&self, ctx: &CheckContext, api: &PromApi) -> Result<Outcome, Outcome> {
        let Some(cfg) = self.server.alerts.as_ref() else {
            return Ok(Outcome::skipped("no `alerts` configured"));
        };
        let (data, time) = api.alerts(ctx).await?;
        // An alert with no rule is trivially quiet: ask which alerting rules are loaded.
        let (rules, _) = api
            .data::<RulesData>(ctx, "api/v1/rules", &[("type", "alert")], "a rule list")
            .await?;
        let loaded: Vec<&str> = rules
            .groups
            .iter()
            .flat_map(|g| g.rules.iter())
            .filter(|r| r.kind == "alerting")
            .map(|r| r.name.as_str())
            .collect();
        let mut problems = Vec::new();
        for name in cfg.quiet.iter().chain(cfg.firing.iter()) {
            if !loaded.contains(&name.as_str()) {
                problems.push(format!(
                    "alert `{name}` has no alerting rule loaded (loaded: {})",
                    list_or_none(loaded.iter().copied())
                ));
            }
        }
        for name in &cfg.quiet {
            for a in data.alerts.iter().filter(|a| a.name() == Some(name)) {
                if a.state == "pending" || a.state == "firing" {
                    problems.push(format!(
                        "alert `{name}` is {} (active since {}, labels {}, value {})",
                        a.state,
                        a.active_at.as_deref().unwrap_or("?"),
                        labels_text(&a.labels),
                        a.value.as_deref().unwrap_or("?")
                    ));
                }
            }
        }
        for name in &cfg.firing {
            let mine: Vec<&PromAlert> = data
                .alerts
                .iter()
                .filter(|a| a.name() == Some(name))
                .collect();
            if !mine.iter().any(|a| a.state == "firing") {
                let now = if mine.is_empty() {
                    "not active".to_string()
                } else {
                    mine.iter()
                        .map(|a| a.state.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                problems.push(format!("alert `{name}` is not firing ({now})"));
            }
        }
        let firing = data.alerts.iter().filter(|a| a.state == "firing").count();
        let pending = data.alerts.iter().filter(|a| a.state == "pending").count();
        let measurements = vec![
            Measurement::duration("alerts_time", time),
            count("alerts_firing", firing as u64),
            count("alerts_pending", pending as u64),
        ];
        Ok(verdict(problems, measurements))
    }
}

#[async_trait]
impl Check for PrometheusCheck {
    fn id(&self) -> &CheckId {
        &self.id
    }

    fn category(&self) -> Category {
        self.aspect.category()
    }

    fn timeout(&self) -> Option<Duration> {
        // Many queries, each bounded by `timeout`, may need more than the suite's default.
        if self.aspect == Aspect::Queries && self.server.queries.len() > 4 {
            let n = u32::try_from(self.server.queries.len()).unwrap_or(u32::MAX);
            return Some(
                self.server
                    .timeout
                    .saturating_mul(n.saturating_add(1))
                    .max(Duration::from_secs(30)),
            );
        }
        None
    }

    async fn run(&self, ctx: &CheckContext) -> Result<Outcome, BoxError> {
        let api = match PromApi::new(
            &self.server.url,
            self.server.bearer.as_ref(),
            self.server.timeout,
        ) {
            Ok(api) => api,
            Err(o) => return Ok(o),
        };
        ctx.detail("url", redact_url(&self.server.url));
        let result = match self.aspect {
            Aspect::Health => self.health(ctx, &api).await,
            Aspect::Targets => self.targets(ctx, &api).await,
            Aspect::Rules => self.rules(ctx, &api).await,
            Aspect::Queries => self.queries(ctx, &api).await,
            Aspect::Alerts => self.alerts(ctx, &api).await,
        };
        Ok(result.unwrap_or_else(|o| o))
    }
}

// ---------------------------------------------------------------------------------------------
// Shared HTTP plumbing (also used by the drill and health checks).

/// One answer, read whole within its bounds.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    /// The `Location` of a redirect.
    pub(crate) location: Option<String>,
    pub(crate) body: Vec<u8>,
    pub(crate) time: Duration,
}

impl Reply {
    /// ` (redirect to /login)` for a redirect, else nothing.
    pub(crate) fn redirect_text(&self) -> String {
        match &self.location {
            Some(l) if self.status.is_redirection() => format!(" (redirect to {l})"),
            _ => String::new(),
        }
    }
}

/// An HTTP client for the checks: no own timeout (each request is bounded by [`send`]), no
/// proxy, and redirects not followed: a health URL that redirects to a login page answering
/// 200 is not healthy, so the redirect itself is the answer judged.
pub(crate) fn http_client(connect_timeout: Duration) -> Result<reqwest::Client, Outcome> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| {
            Outcome::error(
                ErrorKind::Harness,
                format!("build the HTTP client: {}", error_chain(&e)),
            )
        })
}

/// Send `request` and read its body, bounded by `timeout`, the check's deadline and `max_body`
/// bytes; `step` (`GET http://…`) starts every message. Past `timeout` the target is too slow
/// (Failed); past the check's deadline or on cancellation the harness could not tell (Error).
pub(crate) async fn send(
    ctx: &CheckContext,
    step: &str,
    request: reqwest::RequestBuilder,
    timeout: Duration,
    max_body: usize,
) -> Result<Reply, Outcome> {
    let started = Instant::now();
    // A timeout too large to add never comes first.
    let limit_at = started.checked_add(timeout).unwrap_or(ctx.deadline);
    let by_deadline = ctx.deadline < limit_at;
    let bound_at = if by_deadline { ctx.deadline } else { limit_at };
    let too_slow = |what: String| {
        if by_deadline {
            Outcome::error(
                ErrorKind::Timeout,
                format!("{step}: {what} by the check's deadline"),
            )
        } else {
            Outcome::failed(format!(
                "{step}: {what} within {} (timeout)",
                humantime::format_duration(timeout)
            ))
        }
    };
    let cancelled = || Outcome::error(ErrorKind::Cancelled, format!("{step}: cancelled"));
    let response = tokio::select! {
        biased;
        () = ctx.cancel.cancelled() => return Err(cancelled()),
        r = timeout_at(bound_at, request.send()) => r,
    };
    let response = match response {
        Err(_) => return Err(too_slow("no answer".to_string())),
        Ok(Err(e)) if e.is_timeout() => return Err(too_slow("no answer".to_string())),
        Ok(Err(e)) => return Err(Outcome::failed(format!("{step}: {}", http_error(e)))),
        Ok(Ok(r)) => r,
    };
    let status = response.status();
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .map(|v| excerpt(v.as_bytes()));
    let limit = BodyLimit::until(bound_at)
        .max_bytes(max_body)
        .allowed(if by_deadline {
            bound_at.saturating_duration_since(started)
        } else {
            timeout
        });
    let body = tokio::select! {
        biased;
        () = ctx.cancel.cancelled() => return Err(cancelled()),
        b = read_body(response, &limit) => b,
    };
    match body {
        Ok(body) => Ok(Reply {
            status,
            location,
            body,
            time: started.elapsed(),
        }),
        Err(e @ BodyError::Unfinished { .. }) if by_deadline => Err(Outcome::error(
            ErrorKind::Timeout,
            format!(
                "{step}: HTTP {}: {e}: the check's deadline",
                status.as_u16()
            ),
        )),
        Err(e) => Err(Outcome::failed(format!(
            "{step}: HTTP {}: {e}",
            status.as_u16()
        ))),
    }
}

/// A transport error in a few words: `connection refused`, `dns error: …`.
pub(crate) fn http_error(err: reqwest::Error) -> String {
    if let Some(words) = io_error_words_in_chain(&err) {
        return words.to_string();
    }
    let chain = error_chain(&err.without_url());
    if chain.to_ascii_lowercase().contains("connection refused") {
        return "connection refused".to_string();
    }
    chain
}

/// Sleep until `at`, or stop with Error(Cancelled) when the run is cancelled.
pub(crate) async fn sleep_until(ctx: &CheckContext, at: Instant) -> Result<(), Outcome> {
    tokio::select! {
        biased;
        () = ctx.cancel.cancelled() => Err(Outcome::error(ErrorKind::Cancelled, "cancelled")),
        () = tokio::time::sleep_until(at) => Ok(()),
    }
}

/// A base URL with a trailing slash, so `join("api/v1/…")` keeps any path prefix.
pub(crate) fn base_url(raw: &str) -> Result<url::Url, Outcome> {
    let mut base = url::Url::parse(raw).map_err(|e| {
        Outcome::error(
            ErrorKind::Harness,
            format!("invalid URL `{}`: {e}", redact_url(raw)),
        )
    })?;
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    Ok(base)
}

/// A Prometheus HTTP API at one base URL, with its bearer token resolved.
#[derive(Debug, Clone)]
pub(crate) struct PromApi {
    client: reqwest::Client,
    base: url::Url,
    bearer: Option<SecretString>,
    pub(crate) timeout: Duration,
}

/// The answer of an instant query: its result type and `(labels, value)` of every sample.
pub(crate) struct QueryAnswer {
    pub(crate) result_type: String,
    pub(crate) samples: Vec<(String, f64)>,
    pub(crate) time: Duration,
}

impl PromApi {
    /// The API at `url` (`http://127.0.0.1:9090`, or with a path prefix), every request
    /// bounded by `timeout`, with `bearer` (resolved and registered for redaction) if given.
    pub(crate) fn new(
        url: &str,
        bearer: Option<&Secret>,
        timeout: Duration,
    ) -> Result<Self, Outcome> {
        let base = base_url(url)?;
        let _ = citadel_itest_core::config::register_url_secrets(&base);
        let bearer = match bearer {
            None => None,
            Some(s) => Some(s.resolve().map_err(|e| {
                Outcome::error(
                    ErrorKind::Harness,
                    format!("cannot resolve `bearer`: {}", error_chain(&e)),
                )
            })?),
        };
        Ok(PromApi {
            client: http_client(timeout)?,
            base,
            bearer,
            timeout,
        })
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> url::Url {
        let mut url = self
            .base
            .join(path.trim_start_matches('/'))
            .unwrap_or_else(|_| self.base.clone());
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query.iter().copied());
        }
        url
    }

    /// The URL of `path` fit for a message.
    pub(crate) fn shown(&self, path: &str, query: &[(&str, &str)]) -> String {
        redact_url(self.url(path, query).as_str())
    }

    /// `GET path?query`, read whole.
    pub(crate) async fn get(
        &self,
        ctx: &CheckContext,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Reply, Outcome> {
        let url = self.url(path, query);
        let step = format!("GET {}", redact_url(url.as_str()));
        let mut request = self.client.get(url);
        if let Some(token) = &self.bearer {
            request = request.bearer_auth(token.expose());
        }
        send(ctx, &step, request, self.timeout, API_MAX_BODY).await
    }

    /// `GET path?query` that must answer 200 with `{"status":"success","data":T}`; an API error
    /// answer is named by its `errorType` and `error`.
    pub(crate) async fn data<T: DeserializeOwned>(
        &self,
        ctx: &CheckContext,
        path: &str,
        query: &[(&str, &str)],
        what: &str,
    ) -> Result<(T, Duration), Outcome> {
        let reply = self.get(ctx, path, query).await?;
        let step = format!("GET {}", self.shown(path, query));
        if reply.status != StatusCode::OK {
            return Err(Outcome::failed(match parse_json::<ApiError>(&reply.body) {
                Ok(e) => format!(
                    "{step}: HTTP {}: {} error: {}",
                    reply.status.as_u16(),
                    excerpt(e.error_type.as_bytes()),
                    excerpt(e.error.as_bytes())
                ),
                Err(_) => format!(
                    "{step}: HTTP {}{}: {}",
                    reply.status.as_u16(),
                    reply.redirect_text(),
                    excerpt(&reply.body)
                ),
            }));
        }
        match parse_json::<Envelope<T>>(&reply.body) {
            Ok(e) => Ok((e.data, reply.time)),
            Err(e) => Err(Outcome::failed(format!(
                "{step}: HTTP 200 is not an API answer with {what}: {e}: {}",
                excerpt(&reply.body)
            ))),
        }
    }

    /// `GET /api/v1/alerts`.
    pub(crate) async fn alerts(
        &self,
        ctx: &CheckContext,
    ) -> Result<(AlertsData, Duration), Outcome> {
        self.data::<AlertsData>(ctx, "api/v1/alerts", &[], "an alert list")
            .await
    }

    /// An instant query: every sample with its labels; a scalar is one sample `scalar`.
    pub(crate) async fn query(
        &self,
        ctx: &CheckContext,
        promql: &str,
    ) -> Result<QueryAnswer, Outcome> {
        let path = "api/v1/query";
        let query = [("query", promql)];
        let (data, time) = self
            .data::<QueryData>(ctx, path, &query, "a query result")
            .await?;
        let step = format!("GET {}", self.shown(path, &query));
        let wrong = |at: &str, what: &str| {
            Outcome::failed(format!(
                "{step}: HTTP 200 is not a query result: `{at}` {what}"
            ))
        };
        let mut samples = Vec::new();
        match data.result_type.as_str() {
            "vector" => {
                let series: Vec<VectorSample> = serde_json::from_value(data.result)
                    .map_err(|e| wrong("data.result", &format!("is not a vector: {e}")))?;
                for (i, s) in series.iter().enumerate() {
                    let v = sample_value(&s.value.1).ok_or_else(|| {
                        wrong(&format!("data.result[{i}].value[1]"), "is not a number")
                    })?;
                    samples.push((labels_text(&s.metric), v));
                }
            }
            "scalar" => {
                let (_, text): (f64, String) = serde_json::from_value(data.result)
                    .map_err(|e| wrong("data.result", &format!("is not a scalar: {e}")))?;
                let v = sample_value(&text)
                    .ok_or_else(|| wrong("data.result[1]", "is not a number"))?;
                samples.push(("scalar".to_string(), v));
            }
            "matrix" => {
                let series: Vec<MatrixSeries> = serde_json::from_value(data.result)
                    .map_err(|e| wrong("data.result", &format!("is not a matrix: {e}")))?;
                for (i, s) in series.iter().enumerate() {
                    for (j, (_, text)) in s.values.iter().enumerate() {
                        let v = sample_value(text).ok_or_else(|| {
                            wrong(
                                &format!("data.result[{i}].values[{j}][1]"),
                                "is not a number",
                            )
                        })?;
                        samples.push((labels_text(&s.metric), v));
                    }
                }
            }
            other => {
                return Err(Outcome::failed(format!(
                    "{step}: the result is a {}, not numbers",
                    excerpt(other.as_bytes())
                )));
            }
        }
        Ok(QueryAnswer {
            result_type: data.result_type,
            samples,
            time,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Wire shapes (Prometheus 2.x HTTP API).

/// `{"status":"success","data":…}`.
#[derive(Deserialize)]
struct Envelope<T> {
    #[allow(dead_code)]
    status: Success,
    data: T,
}

#[derive(Deserialize)]
enum Success {
    #[serde(rename = "success")]
    Success,
}

/// `{"status":"error","errorType":"bad_data","error":"…"}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiError {
    #[allow(dead_code)]
    status: ErrorStatus,
    error_type: String,
    error: String,
}

#[derive(Deserialize)]
enum ErrorStatus {
    #[serde(rename = "error")]
    Error,
}

#[derive(Deserialize)]
struct BuildInfo {
    version: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TargetsData {
    active_targets: Vec<Target>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Target {
    labels: BTreeMap<String, String>,
    scrape_pool: String,
    scrape_url: String,
    last_error: String,
    last_scrape_duration: f64,
    health: String,
    #[serde(default)]
    scrape_interval: Option<String>,
}

impl Target {
    fn describe(&self) -> String {
        let url = redact_url(&self.scrape_url);
        match self.labels.get("instance") {
            Some(i) if !url.contains(i.as_str()) => format!("{url} (instance {i})"),
            _ => url,
        }
    }
}

#[derive(Deserialize)]
struct RulesData {
    groups: Vec<RuleGroup>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuleGroup {
    name: String,
    rules: Vec<Rule>,
    interval: f64,
    evaluation_time: f64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    name: String,
    health: String,
    #[serde(default)]
    last_error: Option<String>,
    #[serde(rename = "type")]
    kind: String,
}

/// `/api/v1/alerts`' `data`.
#[derive(Debug, Deserialize)]
pub(crate) struct AlertsData {
    pub(crate) alerts: Vec<PromAlert>,
}

/// One active alert.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PromAlert {
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) state: String,
    #[serde(default)]
    pub(crate) active_at: Option<String>,
    #[serde(default)]
    pub(crate) value: Option<String>,
}

impl PromAlert {
    /// Its `alertname` label.
    pub(crate) fn name(&self) -> Option<&String> {
        self.labels.get("alertname")
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryData {
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct VectorSample {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

#[derive(Deserialize)]
struct MatrixSeries {
    metric: BTreeMap<String, String>,
    values: Vec<(f64, String)>,
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

/// Passed with `measurements` when there are no problems, else Failed listing them all.
pub(crate) fn verdict(problems: Vec<String>, measurements: Vec<Measurement>) -> Outcome {
    if problems.is_empty() {
        return Outcome::from_measurements(measurements);
    }
    Outcome::Failed {
        message: problems.join("; "),
        measurements,
    }
}

pub(crate) fn count(name: &str, n: u64) -> Measurement {
    Measurement::new(name, n as f64, Unit::Count)
}

/// `group/name` or `name` matches a rule.
fn rule_matches(spec: &str, group: &RuleGroup, rule: &Rule) -> bool {
    if spec == rule.name {
        return true;
    }
    match spec.rsplit_once('/') {
        Some((g, n)) => g == group.name && n == rule.name,
        None => false,
    }
}

/// A sample value as Prometheus writes it: `"1"`, `"1e+00"`, `"NaN"`, `"+Inf"`.
fn sample_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        other => other.parse::<f64>().ok(),
    }
}

/// `{job="models", instance="…"}`.
pub(crate) fn labels_text(labels: &BTreeMap<String, String>) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{k}=\"{v}\"");
    }
    out.push('}');
    excerpt(out.as_bytes())
}

/// At most ten items, comma-separated, or `none`.
pub(crate) fn list_or_none<'a>(items: impl Iterator<Item = impl AsRef<str> + 'a>) -> String {
    let mut all: Vec<String> = items.map(|s| s.as_ref().to_string()).collect();
    all.sort();
    all.dedup();
    if all.is_empty() {
        return "none".to_string();
    }
    let more = all.len().saturating_sub(10);
    all.truncate(10);
    let mut out = all.join(", ");
    if more > 0 {
        let _ = write!(out, " and {more} more");
    }
    excerpt(out.as_bytes())
}

/// A server's error text for a message: one line, secrets redacted, at most
/// [`ERROR_TEXT_CHARS`] characters keeping both its start and its end (Prometheus puts the
/// cause last: `found duplicate series … ;many-to-many matching not allowed: …`).
pub(crate) fn error_text(text: &str) -> String {
    let line = citadel_itest_core::config::redact_text(
        &text.split_whitespace().collect::<Vec<_>>().join(" "),
    );
    let n = line.chars().count();
    if n <= ERROR_TEXT_CHARS {
        return line;
    }
    let half = ERROR_TEXT_CHARS / 2 - 1;
    let head: String = line.chars().take(half).collect();
    let tail: String = line.chars().skip(n - half).collect();
    format!("{head} … {tail}")
}

/// The most characters of an [`error_text`].
const ERROR_TEXT_CHARS: usize = 500;

/// A Prometheus duration (`15s`, `1m`, `1m30s`, `500ms`).
fn prom_duration(text: &str) -> Option<Duration> {
    humantime::parse_duration(text).ok()
}

/// `1.234s` or `12.3ms`.
fn secs_text(secs: f64) -> String {
    if secs >= 1.0 {
        format!("{secs:.3}s")
    } else {
        format!("{:.1}ms", secs * 1000.0)
    }
}

/// `2.42.0`, `2.42.0+ds`, `3.1.0-rc.0`: digits, a dot, digits.
fn looks_like_version(v: &str) -> bool {
    let mut parts = v.split(['.', '+', '-']);
    let major = parts.next().unwrap_or_default();
    let minor = parts.next().unwrap_or_default();
    !major.is_empty()
        && !minor.is_empty()
        && major.bytes().all(|b| b.is_ascii_digit())
        && minor.bytes().all(|b| b.is_ascii_digit())
}

/// A measurement name from a configured name: lowercase letters, digits and `_`.
pub(crate) fn metric_key(name: &str) -> String {
    let key: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if key.is_empty() { "_".to_string() } else { key }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert!(looks_like_version("2.42.0"));
        assert!(looks_like_version("2.42.0+ds"));
        assert!(looks_like_version("3.0.0-rc.1"));
        assert!(!looks_like_version("<html>"));
        assert!(!looks_like_version(""));
        assert!(!looks_like_version("v2"));
    }

    #[test]
    fn sample_values() {
        assert_eq!(sample_value("1e+00"), Some(1.0));
        assert_eq!(sample_value("+Inf"), Some(f64::INFINITY));
        assert!(sample_value("NaN").is_some_and(f64::is_nan));
        assert_eq!(sample_value("one"), None);
    }

    #[test]
    fn rule_specs() {
        let g = RuleGroup {
            name: "a/b".into(),
            rules: vec![],
            interval: 1.0,
            evaluation_time: 0.0,
        };
        let r = Rule {
            name: "X".into(),
            health: "ok".into(),
            last_error: None,
            kind: "alerting".into(),
        };
        assert!(rule_matches("X", &g, &r));
        assert!(rule_matches("a/b/X", &g, &r));
        assert!(!rule_matches("a/X", &g, &r));
        assert!(!rule_matches("Y", &g, &r));
    }

    #[test]
    fn lists_are_bounded() {
        let many = (0..30).map(|i| format!("j{i:02}"));
        let text = list_or_none(many);
        assert!(text.ends_with("and 20 more"), "{text}");
        assert_eq!(list_or_none(std::iter::empty::<&str>()), "none");
    }

    #[test]
    fn error_texts_keep_start_and_end() {
        let long = format!(
            "found duplicate series {} many-to-many matching not allowed",
            "x ".repeat(2000)
        );
        let t = error_text(&long);
        assert!(t.chars().count() <= ERROR_TEXT_CHARS + 3, "{}", t.len());
        assert!(t.starts_with("found duplicate series"));
        assert!(t.ends_with("many-to-many matching not allowed"));
        assert_eq!(error_text("a\n  b"), "a b");
    }

    #[test]
    fn keys() {
        assert_eq!(metric_key("Models Up!"), "models_up_");
    }
}
