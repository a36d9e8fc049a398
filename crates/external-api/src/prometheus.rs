//! Prometheus checks over its HTTP API (reqwest).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use citadel_itest_core::config::{Secret, SecretString};
use citadel_itest_core::http::DEFAULT_MAX_BODY;
use citadel_itest_core::{CheckContext, ErrorKind, Measurement, Outcome, error_chain};
use reqwest::StatusCode;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::config::{PrometheusAuth, redact};
use crate::support::{
    ProbeEnd, Reply, SilentListener, closed_loopback_port, count, excerpt, expected, flag,
    latency_measurements, probe_http, probe_setup_error, problems_outcome, resolve, send,
    version_measurement, version_number, wrong_secret,
};
use crate::{Aspect, Common, PrometheusTarget, Settings};

const KIND: &str = "prometheus";

/// What a real Prometheus answers on `GET /-/healthy` (server and agent mode).
const HEALTHY: [&str; 2] = [
    "Prometheus Server is Healthy.",
    "Prometheus Agent is Healthy.",
];
/// What a real Prometheus answers on `GET /-/ready` once it is ready.
const READY: [&str; 2] = ["Prometheus Server is Ready.", "Prometheus Agent is Ready."];

/// One aspect of one Prometheus server, checked over its HTTP API.
///
/// - `configuration`: URL (http/https with a host), timeouts and credentials are valid and
///   resolve; the host resolves. Measures `dns_time`.
/// - `connectivity`: `GET /-/healthy` and `GET /-/ready` answer 200 with Prometheus's own
///   text (`Prometheus Server is Healthy.`, `Prometheus Server is Ready.`; anything else, such
///   as a login page, fails naming what came back), and `/api/v1/status/buildinfo` reports the
///   version (`server_version`, 2.42.0 as 24200). Retries until ready.
/// - `authentication`: with `auth` configured (or credentials in the URL, `http://user:pass@…`),
///   the credentials are accepted while requests without credentials or with wrong ones are
///   refused (401/403); the request without credentials carries none at all. Without
///   credentials configured, the check is skipped once the API has answered without them
///   ("not required"), and fails when the server demands credentials.
/// - `operations`: the instant query `up`, a range query over the last 5 minutes, the target
///   list and the rule list all answer `status: success` with the shapes a real Prometheus
///   sends (every field the check reads is required; a wrong one fails, named); counts are
///   measured (`up_series`, `active_targets`, `rule_groups`, `rules`).
///
/// Every answer is read through the core's bounded reader: a body over the cap (4 MiB unless
/// [`PrometheusCheck::max_body`] says otherwise) fails with `body over 4 MiB`, one that does
/// not end within `request_timeout` fails naming it.
/// - `performance`: `samples` timed instant queries `up`: `latency_p50/p95/p99/max`, p95 held
///   to `performance_targets.latency_p95`.
/// - `error_handling`: a just-closed loopback port is refused, a loopback listener that never
///   answers is cut at `request_timeout`, the same client then reaches the server again, and
///   malformed PromQL yields the API's error (HTTP 400, `errorType: bad_data`), recognised.
#[derive(Debug, Clone)]
pub struct PrometheusCheck {
    common: Common,
    target: Arc<PrometheusTarget>,
    max_body: usize,
}

/// Which credentials a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Creds {
    Configured,
    Without,
    Wrong,
}

enum Resolved {
    Bearer(SecretString),
    Basic(String, SecretString),
    /// A user name without a password (`http://user@host`).
    User(String),
}

/// An HTTP client for one target, with its credentials resolved.
struct Api<'a> {
    check: &'a PrometheusCheck,
    client: reqwest::Client,
    base: url::Url,
    auth: Option<Resolved>,
    wrong: String,
}

impl PrometheusCheck {
    /// The `aspect` check of `target`.
    pub fn new(target: &PrometheusTarget, aspect: Aspect, settings: &Settings) -> Self {
        PrometheusCheck {
            common: Common::new(&target.name, target.timeout, aspect, settings),
            target: Arc::new(target.clone()),
            max_body: DEFAULT_MAX_BODY,
        }
    }

    /// Read at most `bytes` of each answer's body (default
    /// [`DEFAULT_MAX_BODY`](citadel_itest_core::http::DEFAULT_MAX_BODY), 4 MiB); a longer body
    /// fails the check.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    fn name(&self) -> &str {
        &self.common.name
    }

    fn api(&self) -> Result<Api<'_>, Outcome> {
        let cannot = |what: String| {
            Outcome::error(
                ErrorKind::Harness,
                format!("cannot check {KIND} {}: {what}", self.name()),
            )
        };
        let problems = self.target.problems();
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
            return Err(cannot(format!("it is misconfigured: {}", list.join("; "))));
        }
        let mut base = url::Url::parse(&self.target.url)
            .map_err(|e| cannot(format!("invalid URL `{}`: {e}", redact(&self.target.url))))?;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let auth = match &self.target.auth {
            // Credentials in the URL are the configured credentials: sent explicitly, so the
            // probes without (or with wrong) credentials really send none (or wrong ones).
            None if !base.username().is_empty() || base.password().is_some() => {
                let user = percent_decode(base.username());
                let password = percent_decode(base.password().unwrap_or_default());
                let _ = base.set_username("");
                let _ = base.set_password(None);
                if password.is_empty() {
                    Some(Resolved::User(user))
                } else {
                    let password = Secret::inline(password)
                        .resolve()
                        .map_err(|e| cannot(format!("url password: {}", error_chain(&e))))?;
                    Some(Resolved::Basic(user, password))
                }
            }
            None => None,
            Some(PrometheusAuth::Bearer(s)) => {
                Some(Resolved::Bearer(s.resolve().map_err(|e| {
                    cannot(format!("auth.bearer: {}", error_chain(&e)))
                })?))
            }
            Some(PrometheusAuth::Basic { username, password }) => Some(Resolved::Basic(
                username.clone(),
                password
                    .resolve()
                    .map_err(|e| cannot(format!("auth.basic.password: {}", error_chain(&e))))?,
            )),
        };
        if let Some(Resolved::Basic(user, password)) = &auth {
            // The header value (base64 of user:password) is redacted like the password.
            citadel_itest_core::config::register_basic_credentials(user, password.expose());
        }
        let client = reqwest::Client::builder()
            .connect_timeout(self.target.connect_timeout)
            .timeout(self.target.request_timeout)
            .build()
            .map_err(|e| cannot(format!("build the HTTP client: {}", error_chain(&e))))?;
        Ok(Api {
            check: self,
            client,
            base,
            auth,
            wrong: wrong_secret(),
        })
    }

    async fn configuration(&self, ctx: &CheckContext) -> Result<Outcome, Outcome> {
        let problems = self.target.problems();
        if !problems.is_empty() {
            return Ok(problems_outcome(KIND, self.name(), &problems));
        }
        let url = url::Url::parse(&self.target.url).map_err(|e| {
            Outcome::failed(format!("invalid URL `{}`: {e}", redact(&self.target.url)))
        })?;
        let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']);
        let port = url.port_or_known_default().unwrap_or(80);
        let (_, dns_time) = resolve(
            &format!("resolve {} host {host}", self.name()),
            host,
            port,
            ctx.deadline,
            self.target.connect_timeout,
        )
        .await?;
        Ok(Outcome::passed().with_measurements([
            Measurement::duration("dns_time", dns_time),
            Measurement::duration("connect_timeout", self.target.connect_timeout),
            Measurement::duration("request_timeout", self.target.request_timeout),
            flag("auth_configured", self.target.auth.is_some()),
        ]))
    }

    async fn connectivity(&self, ctx: &CheckContext) -> Result<Outcome, Outcome> {
        let api = self.api()?;
        let healthy = api.expect_text(ctx, "-/healthy", &HEALTHY).await?;
        let ready = api.expect_text(ctx, "-/ready", &READY).await?;
        let (info, buildinfo_time) = api
            .data::<BuildInfo>(ctx, "api/v1/status/buildinfo", &[], "build info")
            .await?;
        let version = info.version.as_str();
        if version_number(version).is_none() {
            return Ok(Outcome::failed(format!(
                "GET {}: `data.version` is \"{}\", not a version number",
                api.shown("api/v1/status/buildinfo"),
                excerpt(version.as_bytes())
            )));
        }
        let mut measurements = vec![
            Measurement::duration("healthy_time", healthy.time),
            Measurement::duration("ready_time", ready.time),
            Measurement::duration("buildinfo_time", buildinfo_time),
        ];
        measurements.extend(version_measurement(version));
        ctx.detail("server_version", version);
        tracing::debug!(target_name = %self.name(), %version, "prometheus build info");
        Ok(Outcome::passed().with_measurements(measurements))
    }

    async fn authentication(&self, ctx: &CheckContext) -> Result<Outcome, Outcome> {
        let api = self.api()?;
        let path = "api/v1/status/buildinfo";
        let shown = api.shown(path);
        if api.auth.is_none() {
            let reply = api.get(ctx, path, &[], Creds::Without).await?;
            if reply.status == StatusCode::OK {
                api.envelope::<BuildInfo>(&reply, path, "build info")?;
            }
            return Ok(match reply.status {
                StatusCode::OK => Outcome::skipped(format!(
                    "no auth configured for {}: GET {shown} answered 200 without credentials, so \
                     authentication is not required",
                    self.name()
                )),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Outcome::failed(format!(
                    "GET {shown}: HTTP {} without credentials: the server requires \
                     authentication but no `auth` is configured",
                    reply.status.as_u16()
                )),
                other => unexpected(&shown, other, &reply.body),
            });
        }
        // The configured credentials must get the real build info, not just any 200.
        let mut measurements = Vec::new();
        let ok = api.get(ctx, path, &[], Creds::Configured).await?;
        if ok.status != StatusCode::OK {
            return Ok(Outcome::failed(format!(
                "GET {shown}: HTTP {} with the configured credentials",
                ok.status.as_u16()
            )));
        }
        api.envelope::<BuildInfo>(&ok, path, "build info")?;
        measurements.push(Measurement::duration("auth_time", ok.time));
        for (creds, what, measure) in [
            (
                Creds::Without,
                "without credentials",
                "rejected_without_time",
            ),
            (
                Creds::Wrong,
                "with wrong credentials",
                "rejected_wrong_time",
            ),
        ] {
            let reply = api.get(ctx, path, &[], creds).await?;
            match reply.status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    measurements.push(Measurement::duration(measure, reply.time))
                }
                StatusCode::OK => {
                    return Ok(Outcome::Failed {
                        message: format!(
                            "GET {shown} {what} answered 200: authentication is not enforced"
                        ),
                        measurements,
                    });
                }
                other => return Ok(unexpected(&shown, other, &reply.body)),
            }
        }
        Ok(Outcome::passed().with_measurements(measurements))
    }

    async fn operations(&self, ctx: &CheckContext) -> Result<Outcome, Outcome> {
        let api = self.api()?;
        let mut measurements = Vec::new();

        let (data, t) = api
            .data::<VectorData>(ctx, "api/v1/query", &[("query", "up")], "an instant vector")
            .await?;
        let shown = api.shown("api/v1/query?query=up");
        let mut up = 0;
        for (i, s) in data.result.iter().enumerate() {
            let v = sample_value(&shown, &format!("data.result[{i}].value[1]"), &s.value.1)?;
            if v == 1.0 {
                up += 1;
            }
        }
        measurements.push(Measurement::duration("query_time", t));
        measurements.push(count("up_series", data.result.len() as u64));
        measurements.push(count("up_series_up", up));

        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let (start, end) = ((now - 300).to_string(), now.to_string());
        let (data, t) = api
            .data::<MatrixData>(
                ctx,
                "api/v1/query_range",
                &[
                    ("query", "up"),
                    ("start", &start),
                    ("end", &end),
                    ("step", "15"),
                ],
                "a range vector",
            )
            .await?;
        let shown = api.shown("api/v1/query_range?query=up");
        for (i, series) in data.result.iter().enumerate() {
            for (j, point) in series.values.iter().enumerate() {
                sample_value(
                    &shown,
                    &format!("data.result[{i}].values[{j}][1]"),
                    &point.1,
                )?;
            }
        }
        measurements.push(Measurement::duration("range_query_time", t));
        measurements.push(count("range_series", data.result.len() as u64));

        let (data, t) = api
            .data::<TargetsData>(ctx, "api/v1/targets", &[], "a target list")
            .await?;
        let healthy = data
            .active_targets
            .iter()
            .filter(|t| t.health == "up")
            .count();
        measurements.push(Measurement::duration("targets_time", t));
        measurements.push(count("active_targets", data.active_targets.len() as u64));
        measurements.push(count("active_targets_up", healthy as u64));

        let (data, t) = api
            .data::<RulesData>(ctx, "api/v1/rules", &[], "a rule list")
            .await?;
        let rules: usize = data.groups.iter().map(|g| g.rules.len()).sum();
        measurements.push(Measurement::duration("rules_time", t));
        measurements.push(count("rule_groups", data.groups.len() as u64));
        measurements.push(count("rules", rules as u64));
        Ok(Outcome::passed().with_measurements(measurements))
    }

    async fn performance(&self, ctx: &CheckContext) -> Result<Outcome, Outcome> {
        let api = self.api()?;
        let samples = self.common.settings.samples.max(1);
        // One untimed query opens the connection.
        api.data::<VectorData>(ctx, "api/v1/query", &[("query", "up")], "an instant vector")
            .await?;
        let mut times = Vec::with_capacity(samples as usize);
        for n in 0..samples {
            match api
                .data::<VectorData>(ctx, "api/v1/query", &[("query", "up")], "an instant vector")
                .await
            {
                Ok((_, t)) => times.push(t),
                Err(o) => {
                    if o.status() == citadel_itest_core::Status::Error {
                        return Err(o);
                    }
                    let mut ms = latency_measurements(&times, self.common.settings.latency_p95);
                    ms.push(count("failed_at", u64::from(n + 1)));
                    return Ok(Outcome::Failed {
                        message: format!(
                            "query {} of {samples}: {}",
                            n + 1,
                            o.message().unwrap_or_default()
                        ),
                        measurements: ms,
                    });
                }
            }
        }
        Ok(Outcome::from_measurements(latency_measurements(
            &times,
            self.common.settings.latency_p95,
        )))
    }

    async fn error_handling(&self, ctx: &CheckContext) -> Result<Outcome, Outcome> {
        let api = self.api()?;
        let limit = self.target.request_timeout;
        let mut measurements = Vec::new();

        // 1. A wrong port: refused, and said so.
        let port = closed_loopback_port().map_err(|e| probe_setup_error("a closed port", &e))?;
        let url = format!("http://127.0.0.1:{port}/-/healthy");
        let step = format!("GET {url}");
        match probe_http(ctx.deadline, limit, &step, api.client.get(&url)).await {
            ProbeEnd::Refused(t) => measurements.push(Measurement::duration("refused_time", t)),
            ProbeEnd::TimedOut(_) => {
                return Ok(Outcome::failed(format!(
                    "{step}: expected connection refused, got a timeout"
                )));
            }
            ProbeEnd::Other(o) => return Err(expected(o, "connection refused")),
        }

        // 2. A listener that never answers: cut at request_timeout.
        let silent = SilentListener::start()
            .await
            .map_err(|e| probe_setup_error("a silent listener", &e))?;
        let url = format!("http://{}/-/healthy", silent.addr());
        let step = format!("GET {url} (a listener that never answers)");
        match probe_http(ctx.deadline, limit, &step, api.client.get(&url)).await {
            ProbeEnd::TimedOut(t) => measurements.push(Measurement::duration("silent_timeout", t)),
            ProbeEnd::Refused(_) => {
                return Ok(Outcome::failed(format!(
                    "{step}: expected a timeout, got connection refused"
                )));
            }
            ProbeEnd::Other(o) => return Err(expected(o, "a timeout")),
        }
        drop(silent);

        // 3. The same client reaches the server again.
        let ready = api
            .expect_text(ctx, "-/ready", &READY)
            .await
            .map_err(|o| recover(o, &measurements))?;
        measurements.push(Measurement::duration("recovery_time", ready.time));

        // 4. Malformed PromQL: the API's own error, recognised.
        let path = "api/v1/query";
        let shown = api.shown("api/v1/query?query=up{");
        let reply = api
            .get(ctx, path, &[("query", "up{")], Creds::Configured)
            .await?;
        let body = citadel_itest_core::http::parse_json::<ApiError>(&reply.body).ok();
        let recognised = body.is_some_and(|b| {
            b.status == "error" && b.error_type == "bad_data" && !b.error.is_empty()
        });
        if reply.status != StatusCode::BAD_REQUEST || !recognised {
            return Ok(Outcome::Failed {
                message: format!(
                    "GET {shown}: expected HTTP 400 with status `error`, errorType `bad_data` and \
                     an `error` text, got HTTP {}: {}",
                    reply.status.as_u16(),
                    excerpt(&reply.body)
                ),
                measurements,
            });
        }
        measurements.push(Measurement::duration("bad_query_time", reply.time));
        Ok(Outcome::passed().with_measurements(measurements))
    }
}

impl Api<'_> {
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
    fn shown(&self, path: &str) -> String {
        redact(
            self.base
                .join(path)
                .map(|u| u.to_string())
                .as_deref()
                .unwrap_or(path),
        )
    }

    async fn get(
        &self,
        ctx: &CheckContext,
        path: &str,
        query: &[(&str, &str)],
        creds: Creds,
    ) -> Result<Reply, Outcome> {
        let url = self.url(path, query);
        let step = format!("GET {}", redact(url.as_str()));
        let mut req = self.client.get(url);
        match (creds, &self.auth) {
            (Creds::Without, _) | (_, None) => {}
            (Creds::Configured, Some(Resolved::Bearer(t))) => req = req.bearer_auth(t.expose()),
            (Creds::Configured, Some(Resolved::Basic(u, p))) => {
                req = req.basic_auth(u, Some(p.expose()))
            }
            (Creds::Wrong, Some(Resolved::Bearer(_))) => req = req.bearer_auth(&self.wrong),
            (Creds::Configured, Some(Resolved::User(u))) => req = req.basic_auth(u, None::<&str>),
            (Creds::Wrong, Some(Resolved::Basic(u, _) | Resolved::User(u))) => {
                req = req.basic_auth(u, Some(&self.wrong))
            }
        }
        send(
            ctx.deadline,
            self.check.target.request_timeout,
            self.check.max_body,
            &step,
            req,
        )
        .await
    }

    /// GET that must answer 200.
    async fn expect_ok(
        &self,
        ctx: &CheckContext,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Reply, Outcome> {
        let reply = self.get(ctx, path, query, Creds::Configured).await?;
        if reply.status != StatusCode::OK {
            return Err(Outcome::failed(format!(
                "GET {}: HTTP {}: {}",
                self.shown(path),
                reply.status.as_u16(),
                excerpt(&reply.body)
            )));
        }
        Ok(reply)
    }

    /// GET of a health or readiness endpoint: HTTP 200 with one of the texts a real
    /// Prometheus answers with.
    async fn expect_text(
        &self,
        ctx: &CheckContext,
        path: &str,
        texts: &[&str],
    ) -> Result<Reply, Outcome> {
        let reply = self.get(ctx, path, &[], Creds::Configured).await?;
        let step = format!("GET {}", self.shown(path));
        if texts.iter().any(|t| reply.expect_text(&step, t).is_ok()) {
            return Ok(reply);
        }
        // Name the usual text (a server's) in the message.
        reply.expect_text(&step, texts.first().copied().unwrap_or_default())?;
        Ok(reply)
    }

    /// GET of an API endpoint that must answer 200 with `status: success` and `data` of shape
    /// `T` (`what` names it in messages); returns `data`.
    async fn data<T: DeserializeOwned>(
        &self,
        ctx: &CheckContext,
        path: &str,
        query: &[(&str, &str)],
        what: &str,
    ) -> Result<(T, Duration), Outcome> {
        let reply = self.expect_ok(ctx, path, query).await?;
        let data = self.envelope(&reply, path, what)?;
        Ok((data, reply.time))
    }

    /// The `data` of an API answer `{"status": "success", "data": T}`, or Failed naming the
    /// field that is wrong.
    fn envelope<T: DeserializeOwned>(
        &self,
        reply: &Reply,
        path: &str,
        what: &str,
    ) -> Result<T, Outcome> {
        let step = format!("GET {}", self.shown(path));
        reply
            .parse::<Envelope<T>>(&step, &format!("an API answer with {what}"))
            .map(|e| e.data)
    }
}

/// `{"status": "success", "data": …}`, the envelope of every successful API answer.
#[derive(Deserialize)]
struct Envelope<T> {
    #[allow(dead_code)]
    status: Success,
    data: T,
}

/// The only `status` a successful answer has.
#[derive(Deserialize)]
enum Success {
    #[serde(rename = "success")]
    Success,
}

/// `/api/v1/status/buildinfo`'s `data`.
#[derive(Deserialize)]
struct BuildInfo {
    version: String,
}

/// An instant query's `data`: `{"resultType": "vector", "result": [...]}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VectorData {
    #[allow(dead_code)]
    result_type: VectorType,
    result: Vec<InstantSample>,
}

#[derive(Deserialize)]
enum VectorType {
    #[serde(rename = "vector")]
    Vector,
}

/// One series of an instant vector: labels and `[time, "value"]`.
#[derive(Deserialize)]
struct InstantSample {
    #[allow(dead_code)]
    metric: std::collections::BTreeMap<String, String>,
    value: (f64, String),
}

/// A range query's `data`: `{"resultType": "matrix", "result": [...]}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MatrixData {
    #[allow(dead_code)]
    result_type: MatrixType,
    result: Vec<RangeSeries>,
}

#[derive(Deserialize)]
enum MatrixType {
    #[serde(rename = "matrix")]
    Matrix,
}

/// One series of a range vector: labels and `[[time, "value"], ...]`.
#[derive(Deserialize)]
struct RangeSeries {
    #[allow(dead_code)]
    metric: std::collections::BTreeMap<String, String>,
    values: Vec<(f64, String)>,
}

/// `/api/v1/targets`'s `data`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TargetsData {
    active_targets: Vec<ActiveTarget>,
}

#[derive(Deserialize)]
struct ActiveTarget {
    health: String,
}

/// `/api/v1/rules`' `data`.
#[derive(Deserialize)]
struct RulesData {
    groups: Vec<RuleGroup>,
}

#[derive(Deserialize)]
struct RuleGroup {
    #[allow(dead_code)]
    name: String,
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
struct Rule {
    #[allow(dead_code)]
    name: String,
    #[allow(dead_code)]
    #[serde(rename = "type")]
    kind: RuleType,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum RuleType {
    Alerting,
    Recording,
}

/// An API error answer: `{"status": "error", "errorType": "bad_data", "error": "..."}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiError {
    status: String,
    error_type: String,
    error: String,
}

/// A sample value (`"1"`, `"NaN"`, `"+Inf"`) as a number, or Failed naming where it is.
fn sample_value(shown: &str, at: &str, text: &str) -> Result<f64, Outcome> {
    text.parse::<f64>().map_err(|_| {
        Outcome::failed(format!(
            "GET {shown}: `{at}` is \"{}\", not a sample value",
            excerpt(text.as_bytes())
        ))
    })
}

/// Percent-decode a URL's user or password (`%40` -> `@`).
fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn unexpected(shown: &str, status: StatusCode, body: &[u8]) -> Outcome {
    Outcome::failed(format!(
        "GET {shown}: unexpected HTTP {}: {}",
        status.as_u16(),
        excerpt(body)
    ))
}

fn recover(outcome: Outcome, measurements: &[Measurement]) -> Outcome {
    match outcome {
        Outcome::Failed { message, .. } => Outcome::Failed {
            message: format!("recover: {message}"),
            measurements: measurements.to_vec(),
        },
        other => other,
    }
}

service_check!(PrometheusCheck, cleans_up: []);
