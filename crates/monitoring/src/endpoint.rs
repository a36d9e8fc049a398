//! `/metrics` endpoint checks: `monitoring.<name>.metrics` scrapes, parses, lints and asserts
//! on families and values; `monitoring.<name>.rates` scrapes twice around some traffic and
//! asserts on how much selected series grew.
//!
//! ```
//! use citadel_itest_monitoring::config::EndpointConfig;
//! use citadel_itest_monitoring::endpoint;
//!
//! let e: EndpointConfig = serde_json::from_value(serde_json::json!({
//!     "name": "model_a",
//!     "url": "http://127.0.0.1:58101/metrics",
//!     "values": [{ "series": "fixture_backend_info", "eq": 1.0 }],
//! }))
//! .unwrap();
//! let checks = endpoint::checks(&[e]);
//! assert_eq!(checks[0].id().as_str(), "monitoring.model_a.metrics");
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use citadel_itest_core::config::redact_url;
use citadel_itest_core::http::{BodyLimit, DEFAULT_MAX_BODY, excerpt, read_body};
use citadel_itest_core::{
    BoxError, Category, Check, CheckContext, CheckId, ErrorKind, Measurement, Outcome, Resource,
    Unit, error_chain,
};
use tokio::time::Instant;

use crate::config::{EndpointConfig, RateConfig, ValueConfig};
use crate::exposition::{self, Exposition, Finding, Format, Selector, parse_selector};

/// Most findings listed in a result's details (the total is given too).
pub const MAX_LISTED_FINDINGS: usize = 50;

/// Most problems named in a failure message (the rest are in the details).
const MAX_MESSAGE_PROBLEMS: usize = 5;

/// What the checks ask for: the text format first, OpenMetrics second.
pub const ACCEPT: &str =
    "text/plain;version=0.0.4;q=1,application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.1";

/// Time a check is given beyond its requests' own bounds.
const SLACK: Duration = Duration::from_secs(5);

/// The checks of `endpoints`: `monitoring.<name>.metrics` for each, and
/// `monitoring.<name>.rates` for those with `rates`.
pub fn checks(endpoints: &[EndpointConfig]) -> Vec<Arc<dyn Check>> {
    let mut out: Vec<Arc<dyn Check>> = Vec::new();
    for e in endpoints {
        out.push(Arc::new(MetricsCheck::new(e.clone())));
        if !e.rates.is_empty() {
            out.push(Arc::new(RatesCheck::new(e.clone())));
        }
    }
    out
}

/// `monitoring.<name>.metrics`: GET the page (bounded by `timeout` and `max_body_bytes`), make
/// sure it is a metrics exposition, parse it (every unreadable line fails the check, named by
/// its line), lint it when `lint` is on (minus `lint_ignore` kinds), and check the required
/// `families` and the `values` assertions.
///
/// Measures `families`, `series`, `body_bytes`, `scrape_ms`, `parse_findings` and
/// `lint_findings`; details hold `format`, `content_type` and `findings` (at most
/// [`MAX_LISTED_FINDINGS`], with `findings_total`).
#[derive(Clone)]
pub struct MetricsCheck {
    id: CheckId,
    config: EndpointConfig,
}

impl fmt::Debug for MetricsCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsCheck")
            .field("id", &self.id)
            .field("url", &redact_url(&self.config.url))
            .finish_non_exhaustive()
    }
}

impl MetricsCheck {
    /// The metrics check of one endpoint.
    pub fn new(config: EndpointConfig) -> Self {
        MetricsCheck {
            id: CheckId::new(format!("monitoring.{}.metrics", config.name)),
            config,
        }
    }
}

/// `monitoring.<name>.rates`: scrape, send each rate's `traffic`, wait the longest `interval`,
/// scrape again; the summed value of each rate's selected series must have grown by at least
/// `min_increase` and at most `max_increase`. A selected series that went down is reported as
/// a counter reset. Claims the traffic of the endpoint's server (and of the traffic targets)
/// so no other check's load ends up in its figures.
#[derive(Clone)]
pub struct RatesCheck {
    id: CheckId,
    config: EndpointConfig,
}

impl fmt::Debug for RatesCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RatesCheck")
            .field("id", &self.id)
            .field("url", &redact_url(&self.config.url))
            .finish_non_exhaustive()
    }
}

impl RatesCheck {
    /// The rates check of one endpoint.
    pub fn new(config: EndpointConfig) -> Self {
        RatesCheck {
            id: CheckId::new(format!("monitoring.{}.rates", config.name)),
            config,
        }
    }
}

/// One scrape that returned a metrics exposition.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Scrape {
    /// What was parsed.
    pub exposition: Exposition,
    /// The body's size.
    pub body_bytes: usize,
    /// From sending the request to the body's last byte.
    pub elapsed: Duration,
    /// The `Content-Type` answered.
    pub content_type: String,
}

/// Why a scrape gave no exposition.
#[derive(Debug, Clone)]
enum ScrapeError {
    /// The endpoint is wrong: the message says how.
    Failed(String),
    /// The harness could not tell.
    Error(ErrorKind, String),
}

impl ScrapeError {
    fn outcome(self) -> Outcome {
        match self {
            ScrapeError::Failed(m) => Outcome::failed(m),
            ScrapeError::Error(k, m) => Outcome::error(k, m),
        }
    }
}

fn client() -> Result<reqwest::Client, ScrapeError> {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| {
            ScrapeError::Error(
                ErrorKind::Harness,
                format!("build the HTTP client: {}", error_chain(&e)),
            )
        })
}

/// GET the page within `timeout` (and the check's deadline), read at most `max_body_bytes`,
/// make sure it is a metrics exposition and parse it.
async fn scrape(
    client: &reqwest::Client,
    config: &EndpointConfig,
    ctx: &CheckContext,
) -> Result<Scrape, ScrapeError> {
    let shown = redact_url(&config.url);
    let bearer = match &config.bearer {
        None => None,
        // Resolving registers the value with the redactor.
        Some(secret) => Some(secret.resolve().map_err(|e| {
            ScrapeError::Error(
                ErrorKind::Harness,
                format!("resolve the bearer of {}: {}", config.name, error_chain(&e)),
            )
        })?),
    };
    let started = Instant::now();
    let bound = started + config.timeout;
    let (deadline, allowed) = if bound <= ctx.deadline {
        (bound, config.timeout)
    } else {
        (
            ctx.deadline,
            ctx.deadline.saturating_duration_since(started),
        )
    };
    let mut request = client
        .get(&config.url)
        .header(reqwest::header::ACCEPT, ACCEPT)
        .timeout(allowed);
    if let Some(token) = &bearer {
        request = request.bearer_auth(token.expose());
    }
    let response = tokio::select! {
        biased;
        _ = ctx.cancel.cancelled() => {
            return Err(ScrapeError::Error(ErrorKind::Cancelled, format!("GET {shown}: cancelled")));
        }
        r = request.send() => r,
    };
    let response = match response {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return Err(ScrapeError::Failed(format!(
                "GET {shown}: no answer within {} (timeout)",
                humantime::format_duration(allowed)
            )));
        }
        Err(e) => {
            return Err(ScrapeError::Failed(format!(
                "GET {shown}: {}",
                error_chain(&e.without_url())
            )));
        }
    };
    let status = response.status();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let cap = usize::try_from(config.max_body_bytes).unwrap_or(usize::MAX);
    let limit = BodyLimit::until(deadline).max_bytes(cap).allowed(allowed);
    let body = tokio::select! {
        biased;
        _ = ctx.cancel.cancelled() => {
            return Err(ScrapeError::Error(ErrorKind::Cancelled, format!("GET {shown}: cancelled")));
        }
        b = read_body(response, &limit) => b,
    };
    let elapsed = started.elapsed();
    if !status.is_success() {
        let seen = match &body {
            Ok(b) => excerpt(b),
            Err(e) => format!("(body not read: {e})"),
        };
        return Err(ScrapeError::Failed(format!(
            "GET {shown} returned {}, expected 2xx: {seen}",
            status.as_u16()
        )));
    }
    let body = body.map_err(|e| {
        let key = if e.is_too_large() {
            " (max_body_bytes)"
        } else if e.is_unfinished() {
            " (timeout)"
        } else {
            ""
        };
        ScrapeError::Failed(format!(
            "GET {shown} returned {}: {e}{key}",
            status.as_u16()
        ))
    })?;
    let Some(format) = content_type.as_deref().and_then(Format::from_content_type) else {
        return Err(ScrapeError::Failed(format!(
            "GET {shown} returned {} with content-type `{}`, not a metrics exposition \
             (text/plain; version=0.0.4 or application/openmetrics-text): {}",
            status.as_u16(),
            content_type
                .as_deref()
                .map_or_else(|| "(none)".into(), |c| excerpt(c.as_bytes())),
            excerpt(&body)
        )));
    };
    let exposition = exposition::parse_as(
        &body,
        Some(match format {
            Format::OpenMetrics => "application/openmetrics-text",
            _ => "text/plain; version=0.0.4",
        }),
    );
    Ok(Scrape {
        exposition,
        body_bytes: body.len(),
        elapsed,
        content_type: content_type.unwrap_or_default(),
    })
}

/// `Failed` listing the first problems (and how many more), else `Passed`.
fn verdict(what: &str, problems: &[String], measurements: Vec<Measurement>) -> Outcome {
    if problems.is_empty() {
        return Outcome::Passed { measurements };
    }
    let mut message = format!(
        "{what}: {} problem{}: {}",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        problems
            .iter()
            .take(MAX_MESSAGE_PROBLEMS)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ")
    );
    if problems.len() > MAX_MESSAGE_PROBLEMS {
        message.push_str(&format!(
            "; and {} more (see details.findings)",
            problems.len() - MAX_MESSAGE_PROBLEMS
        ));
    }
    Outcome::Failed {
        message,
        measurements,
    }
}

fn bounds(v: &ValueConfig) -> Vec<(&'static str, f64)> {
    [
        ("gt", v.gt),
        ("lt", v.lt),
        ("min", v.min),
        ("max", v.max),
        ("eq", v.eq),
    ]
    .into_iter()
    .filter_map(|(k, b)| b.map(|b| (k, b)))
    .collect()
}

fn holds(op: &str, value: f64, bound: f64) -> bool {
    match op {
        "gt" => value > bound,
        "lt" => value < bound,
        "min" => value >= bound,
        "max" => value <= bound,
        _ => value == bound,
    }
}

fn op_words(op: &str) -> &'static str {
    match op {
        "gt" => ">",
        "lt" => "<",
        "min" => ">=",
        "max" => "<=",
        _ => "==",
    }
}

/// The `families` and `values` problems of a scrape.
pub fn assert_expectations(config: &EndpointConfig, exp: &Exposition) -> Vec<String> {
    let mut problems = Vec::new();
    for f in &config.families {
        let Some(fam) = exp.family(&f.name) else {
            problems.push(format!("family `{}` is missing", f.name));
            continue;
        };
        if let Some(kind) = &f.kind {
            if fam.kind.as_str() != kind {
                problems.push(format!(
                    "family `{}` is a {}{}, expected {kind}",
                    f.name,
                    fam.kind,
                    if fam.typed { "" } else { " (no # TYPE)" }
                ));
            }
        }
        if !f.labels.is_empty() && fam.samples.is_empty() {
            problems.push(format!(
                "family `{}` has no samples to carry labels {}",
                f.name,
                f.labels.join(", ")
            ));
        }
        for label in &f.labels {
            let lacking: Vec<&exposition::Sample> = fam
                .samples
                .iter()
                .filter(|s| s.label(label).is_none())
                .collect();
            if let Some(first) = lacking.first() {
                problems.push(format!(
                    "family `{}`: {} series lack label `{label}` (e.g. line {}: {})",
                    f.name,
                    lacking.len(),
                    first.line,
                    first.series()
                ));
            }
        }
    }
    for (i, v) in config.values.iter().enumerate() {
        let selector = match parse_selector(&v.series) {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!(
                    "values[{i}]: `{}` is not a selector: {e}",
                    v.series
                ));
                continue;
            }
        };
        let matched: Vec<&exposition::Sample> = selector.select(exp).collect();
        if matched.is_empty() {
            problems.push(format!("no series matches `{selector}`"));
            continue;
        }
        let bounds = bounds(v);
        for s in matched {
            for (op, bound) in &bounds {
                if !holds(op, s.value, *bound) {
                    problems.push(format!(
                        "{} = {} (line {}), expected {} {bound}",
                        s.series(),
                        s.value,
                        s.line,
                        op_words(op)
                    ));
                }
            }
        }
    }
    problems
}

fn listed(findings: &[Finding]) -> serde_json::Value {
    serde_json::Value::Array(
        findings
            .iter()
            .take(MAX_LISTED_FINDINGS)
            .map(|f| serde_json::Value::String(f.to_string()))
            .collect(),
    )
}

#[async_trait]
impl Check for MetricsCheck {
    fn id(&self) -> &CheckId {
        &self.id
    }

    fn category(&self) -> Category {
        Category::Metrics
    }

    fn timeout(&self) -> Option<Duration> {
        Some(self.config.timeout + SLACK)
    }

    async fn run(&self, ctx: &CheckContext) -> Result<Outcome, BoxError> {
        let client = match client() {
            Ok(c) => c,
            Err(e) => return Ok(e.outcome()),
        };
        let scrape = match scrape(&client, &self.config, ctx).await {
            Ok(s) => s,
            Err(e) => return Ok(e.outcome()),
        };
        let exp = &scrape.exposition;
        let mut findings: Vec<Finding> = exp.findings.clone();
        let parse_count = findings.len();
        let mut lint_count = 0;
        if self.config.lint {
            let linted: Vec<Finding> = exposition::lint(exp)
                .into_iter()
                .filter(|f| !self.config.lint_ignore.iter().any(|k| k == f.kind))
                .collect();
            lint_count = linted.len();
            findings.extend(linted);
        }
        ctx.detail("format", exp.format.to_string());
        ctx.detail("content_type", scrape.content_type.clone());
        ctx.detail("findings_total", findings.len());
        ctx.detail("findings", listed(&findings));
        let mut problems: Vec<String> = findings.iter().map(ToString::to_string).collect();
        for kind in &self.config.lint_ignore {
            if !exposition::FINDING_KINDS.contains(&kind.as_str()) {
                problems.push(format!(
                    "lint_ignore: `{kind}` is not a finding kind (known: {})",
                    exposition::FINDING_KINDS.join(", ")
                ));
            }
        }
        if exp.series_count() == 0 {
            problems.push("the exposition holds no samples".into());
        }
        problems.extend(assert_expectations(&self.config, exp));
        let measurements = vec![
            Measurement::new("families", exp.families.len() as f64, Unit::Count),
            Measurement::new("series", exp.series_count() as f64, Unit::Count),
            Measurement::new("body_bytes", scrape.body_bytes as f64, Unit::Bytes),
            Measurement::duration("scrape_ms", scrape.elapsed),
            Measurement::new("parse_findings", parse_count as f64, Unit::Count),
            Measurement::new("lint_findings", lint_count as f64, Unit::Count),
        ];
        Ok(verdict(
            &redact_url(&self.config.url),
            &problems,
            measurements,
        ))
    }
}

/// The summed value of the series `selector` picks, each series' value by its text.
fn picked(selector: &Selector, exp: &Exposition) -> Vec<(String, f64)> {
    selector
        .select(exp)
        .map(|s| (s.series(), s.value))
        .collect()
}

fn traffic_budget(rates: &[RateConfig], timeout: Duration) -> Duration {
    let requests: u64 = rates
        .iter()
        .filter_map(|r| r.traffic.as_ref())
        .map(|t| u64::from(t.requests))
        .sum();
    let per = timeout.min(Duration::from_secs(30));
    per.saturating_mul(u32::try_from(requests).unwrap_or(u32::MAX))
        .min(Duration::from_secs(3600))
}

#[async_trait]
impl Check for RatesCheck {
    fn id(&self) -> &CheckId {
        &self.id
    }

    fn category(&self) -> Category {
        Category::Metrics
    }

    fn timeout(&self) -> Option<Duration> {
        let interval = self
            .config
            .rates
            .iter()
            .map(|r| r.interval)
            .max()
            .unwrap_or_default();
        Some(
            self.config.timeout * 2
                + interval
                + traffic_budget(&self.config.rates, self.config.timeout)
                + SLACK,
        )
    }

    fn exclusive(&self) -> Vec<Resource> {
        let mut out = vec![Resource::traffic(&self.config.url)];
        for r in &self.config.rates {
            if let Some(t) = &r.traffic {
                let res = Resource::traffic(&t.url);
                if !out.contains(&res) {
                    out.push(res);
                }
            }
        }
        out
    }

    async fn run(&self, ctx: &CheckContext) -> Result<Outcome, BoxError> {
        let shown = redact_url(&self.config.url);
        let mut selectors = Vec::new();
        for (i, r) in self.config.rates.iter().enumerate() {
            match parse_selector(&r.series) {
                Ok(s) => selectors.push(s),
                Err(e) => {
                    return Ok(Outcome::failed(format!(
                        "rates[{i}]: `{}` is not a selector: {e}",
                        r.series
                    )));
                }
            }
        }
        let client = match client() {
            Ok(c) => c,
            Err(e) => return Ok(e.outcome()),
        };
        let before = match scrape(&client, &self.config, ctx).await {
            Ok(s) => s.exposition,
            Err(e) => return Ok(e.outcome()),
        };
        let mut problems = Vec::new();
        // A series missing from the first scrape counts from 0 (a counter a server creates
        // on its first event); one in neither scrape fails below.
        let first: Vec<Vec<(String, f64)>> = selectors.iter().map(|s| picked(s, &before)).collect();
        let mut sent = 0u64;
        let mut non_2xx = 0u64;
        for r in &self.config.rates {
            let Some(t) = &r.traffic else { continue };
            let method = match t
                .method
                .as_deref()
                .unwrap_or("GET")
                .to_ascii_uppercase()
                .as_str()
            {
                "GET" => reqwest::Method::GET,
                "POST" => reqwest::Method::POST,
                other => {
                    return Ok(Outcome::error(
                        ErrorKind::Harness,
                        format!("traffic method `{other}` is not GET or POST"),
                    ));
                }
            };
            let target = redact_url(&t.url);
            for _ in 0..t.requests {
                let started = Instant::now();
                let mut req = client
                    .request(method.clone(), &t.url)
                    .timeout(self.config.timeout);
                if let Some(body) = &t.body {
                    req = req.json(body);
                }
                let sent_one = async {
                    let resp = req.send().await.map_err(|e| {
                        if e.is_timeout() {
                            format!(
                                "no answer within {} (timeout)",
                                humantime::format_duration(self.config.timeout)
                            )
                        } else {
                            error_chain(&e.without_url())
                        }
                    })?;
                    let status = resp.status();
                    let limit = BodyLimit::until(started + self.config.timeout)
                        .max_bytes(DEFAULT_MAX_BODY)
                        .allowed(self.config.timeout);
                    read_body(resp, &limit).await.map_err(|e| e.to_string())?;
                    Ok::<_, String>(status)
                };
                let result = tokio::select! {
                    biased;
                    _ = ctx.cancel.cancelled() => {
                        return Ok(Outcome::error(ErrorKind::Cancelled, "cancelled while sending traffic"));
                    }
                    r = sent_one => r,
                };
                match result {
                    Ok(status) => {
                        sent += 1;
                        if !status.is_success() {
                            non_2xx += 1;
                        }
                    }
                    Err(e) => {
                        return Ok(Outcome::failed(format!(
                            "traffic {method} {target} (request {} of {}): {e}",
                            sent + 1,
                            t.requests
                        )));
                    }
                }
            }
        }
        let interval = self
            .config
            .rates
            .iter()
            .map(|r| r.interval)
            .max()
            .unwrap_or_default();
        tokio::select! {
            _ = ctx.cancel.cancelled() => {
                return Ok(Outcome::error(ErrorKind::Cancelled, "cancelled between the scrapes"));
            }
            _ = tokio::time::sleep(interval) => {}
        }
        let after = match scrape(&client, &self.config, ctx).await {
            Ok(s) => s.exposition,
            Err(e) => return Ok(e.outcome()),
        };
        let mut measurements = vec![
            Measurement::new("traffic_requests", sent as f64, Unit::Count),
            Measurement::new("traffic_non_2xx", non_2xx as f64, Unit::Count),
        ];
        for (i, ((sel, r), before)) in selectors
            .iter()
            .zip(&self.config.rates)
            .zip(&first)
            .enumerate()
        {
            let now = picked(sel, &after);
            if now.is_empty() {
                problems.push(if before.is_empty() {
                    format!("no series matches `{sel}` (in either scrape)")
                } else {
                    format!("no series matches `{sel}` in the second scrape (it did in the first)")
                });
                continue;
            }
            for (series, old) in before {
                match now.iter().find(|(s, _)| s == series) {
                    Some((_, new)) if new < old => problems.push(format!(
                        "counter reset: {series} went down from {old} to {new} between the scrapes"
                    )),
                    Some(_) => {}
                    None => problems.push(format!(
                        "counter reset: {series} (at {old}) is gone from the second scrape"
                    )),
                }
            }
            let sum_before: f64 = before.iter().map(|(_, v)| v).sum();
            let sum_after: f64 = now.iter().map(|(_, v)| v).sum();
            let increase = sum_after - sum_before;
            measurements.push(Measurement::new(
                format!("rates_{i}_increase"),
                increase,
                Unit::Count,
            ));
            if !increase.is_finite() {
                problems.push(format!(
                    "`{sel}` went from {sum_before} to {sum_after}: no finite increase"
                ));
                continue;
            }
            if let Some(min) = r.min_increase {
                if increase < min {
                    problems.push(format!(
                        "`{sel}` increased by {increase} ({sum_before} -> {sum_after}), expected at least {min}"
                    ));
                }
            }
            if let Some(max) = r.max_increase {
                if increase > max {
                    problems.push(format!(
                        "`{sel}` increased by {increase} ({sum_before} -> {sum_after}), expected at most {max}"
                    ));
                }
            }
        }
        Ok(verdict(&shown, &problems, measurements))
    }
}
