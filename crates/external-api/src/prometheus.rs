//! Prometheus checks over its HTTP API (reqwest).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use citadel_itest_core::config::SecretString;
use citadel_itest_core::{CheckContext, ErrorKind, Measurement, Outcome, error_chain};
use reqwest::StatusCode;
use serde_json::Value;

use crate::config::{PrometheusAuth, redact};
use crate::support::{
    ProbeEnd, Reply, SilentListener, closed_loopback_port, count, excerpt, expected, flag,
    latency_measurements, probe_http, probe_setup_error, problems_outcome, resolve, send,
    version_measurement, wrong_secret,
};
use crate::{Aspect, Common, PrometheusTarget, Settings};

const KIND: &str = "prometheus";

/// One aspect of one Prometheus server, checked over its HTTP API.
///
/// - `configuration`: URL (http/https with a host), timeouts and credentials are valid and
///   resolve; the host resolves. Measures `dns_time`.
/// - `connectivity`: `GET /-/healthy` and `GET /-/ready` answer 200, and
///   `/api/v1/status/buildinfo` reports the version (`server_version`, 2.42.0 as 24200).
///   Retries until ready.
/// - `authentication`: with `auth` configured, the credentials are accepted while requests
///   without credentials or with wrong ones are refused (401/403); without `auth`, the check is
///   skipped once the API has answered without credentials ("not required"), and fails when
///   the server demands credentials.
/// - `operations`: the instant query `up`, a range query over the last 5 minutes, the target
///   list and the rule list all answer `status: success` with the expected shapes; counts are
///   measured (`up_series`, `active_targets`, `rule_groups`, `rules`).
/// - `performance`: `samples` timed instant queries `up`: `latency_p50/p95/p99/max`, p95 held
///   to `performance_targets.latency_p95`.
/// - `error_handling`: a just-closed loopback port is refused, a loopback listener that never
///   answers is cut at `request_timeout`, the same client then reaches the server again, and
///   malformed PromQL yields the API's error (HTTP 400, `errorType: bad_data`), recognised.
#[derive(Debug, Clone)]
pub struct PrometheusCheck {
    common: Common,
    target: Arc<PrometheusTarget>,
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
        }
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
        let healthy = api.expect_ok(ctx, "-/healthy", &[]).await?;
        let ready = api.expect_ok(ctx, "-/ready", &[]).await?;
        let (data, buildinfo_time) = api.data(ctx, "api/v1/status/buildinfo", &[]).await?;
        let version = data.get("version").and_then(Value::as_str).ok_or_else(|| {
            Outcome::failed(format!(
                "GET {}: no `data.version` in the build info",
                api.shown("api/v1/status/buildinfo")
            ))
        })?;
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
        let mut measurements = Vec::new();
        let ok = api.get(ctx, path, &[], Creds::Configured).await?;
        if ok.status != StatusCode::OK {
            return Ok(Outcome::failed(format!(
                "GET {shown}: HTTP {} with the configured credentials",
                ok.status.as_u16()
            )));
        }
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

        let (data, t) = api.data(ctx, "api/v1/query", &[("query", "up")]).await?;
        let shown = api.shown("api/v1/query?query=up");
        let series =
            result_of(&data, "vector").ok_or_else(|| shape(&shown, "a `vector` result", &data))?;
        let up = series
            .iter()
            .filter(|s| s.pointer("/value/1").and_then(Value::as_str) == Some("1"))
            .count();
        measurements.push(Measurement::duration("query_time", t));
        measurements.push(count("up_series", series.len() as u64));
        measurements.push(count("up_series_up", up as u64));

        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let (start, end) = ((now - 300).to_string(), now.to_string());
        let (data, t) = api
            .data(
                ctx,
                "api/v1/query_range",
                &[
                    ("query", "up"),
                    ("start", &start),
                    ("end", &end),
                    ("step", "15"),
                ],
            )
            .await?;
        let shown = api.shown("api/v1/query_range?query=up");
        let matrix =
            result_of(&data, "matrix").ok_or_else(|| shape(&shown, "a `matrix` result", &data))?;
        measurements.push(Measurement::duration("range_query_time", t));
        measurements.push(count("range_series", matrix.len() as u64));

        let (data, t) = api.data(ctx, "api/v1/targets", &[]).await?;
        let active = data
            .get("activeTargets")
            .and_then(Value::as_array)
            .ok_or_else(|| shape(&api.shown("api/v1/targets"), "`activeTargets`", &data))?;
        let healthy = active
            .iter()
            .filter(|t| t.get("health").and_then(Value::as_str) == Some("up"))
            .count();
        measurements.push(Measurement::duration("targets_time", t));
        measurements.push(count("active_targets", active.len() as u64));
        measurements.push(count("active_targets_up", healthy as u64));

        let (data, t) = api.data(ctx, "api/v1/rules", &[]).await?;
        let groups = data
            .get("groups")
            .and_then(Value::as_array)
            .ok_or_else(|| shape(&api.shown("api/v1/rules"), "`groups`", &data))?;
        let rules: usize = groups
            .iter()
            .map(|g| g.get("rules").and_then(Value::as_array).map_or(0, Vec::len))
            .sum();
        measurements.push(Measurement::duration("rules_time", t));
        measurements.push(count("rule_groups", groups.len() as u64));
        measurements.push(count("rules", rules as u64));
        Ok(Outcome::passed().with_measurements(measurements))
    }

    async fn performance(&self, ctx: &CheckContext) -> Result<Outcome, Outcome> {
        let api = self.api()?;
        let samples = self.common.settings.samples.max(1);
        // One untimed query opens the connection.
        api.data(ctx, "api/v1/query", &[("query", "up")]).await?;
        let mut times = Vec::with_capacity(samples as usize);
        for n in 0..samples {
            match api.data(ctx, "api/v1/query", &[("query", "up")]).await {
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
            .expect_ok(ctx, "-/ready", &[])
            .await
            .map_err(|o| recover(o, &measurements))?;
        measurements.push(Measurement::duration("recovery_time", ready.time));

        // 4. Malformed PromQL: the API's own error, recognised.
        let path = "api/v1/query";
        let shown = api.shown("api/v1/query?query=up{");
        let reply = api
            .get(ctx, path, &[("query", "up{")], Creds::Configured)
            .await?;
        let body: Option<Value> = serde_json::from_str(&reply.body).ok();
        let status = body
            .as_ref()
            .and_then(|b| b.get("status"))
            .and_then(Value::as_str);
        let error_type = body
            .as_ref()
            .and_then(|b| b.get("errorType"))
            .and_then(Value::as_str);
        if reply.status != StatusCode::BAD_REQUEST
            || status != Some("error")
            || error_type != Some("bad_data")
        {
            return Ok(Outcome::Failed {
                message: format!(
                    "GET {shown}: expected HTTP 400 with status `error` and errorType `bad_data`, \
                     got HTTP {}: {}",
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
            (Creds::Wrong, Some(Resolved::Basic(u, _))) => {
                req = req.basic_auth(u, Some(&self.wrong))
            }
        }
        send(ctx.deadline, self.check.target.request_timeout, &step, req).await
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

    /// GET of an API endpoint that must answer 200 with `status: success`; returns `data`.
    async fn data(
        &self,
        ctx: &CheckContext,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<(Value, Duration), Outcome> {
        let reply = self.expect_ok(ctx, path, query).await?;
        let shown = self.shown(path);
        let body: Value = serde_json::from_str(&reply.body).map_err(|e| {
            Outcome::failed(format!(
                "GET {shown}: the answer is not JSON ({e}): {}",
                excerpt(&reply.body)
            ))
        })?;
        if body.get("status").and_then(Value::as_str) != Some("success") {
            return Err(Outcome::failed(format!(
                "GET {shown}: status is not `success`: {}",
                excerpt(&reply.body)
            )));
        }
        match body.get("data") {
            Some(d) => Ok((d.clone(), reply.time)),
            None => Err(Outcome::failed(format!(
                "GET {shown}: no `data` in the answer: {}",
                excerpt(&reply.body)
            ))),
        }
    }
}

/// The `result` array of a query's `data` when its `resultType` is `kind`.
fn result_of<'a>(data: &'a Value, kind: &str) -> Option<&'a Vec<Value>> {
    if data.get("resultType").and_then(Value::as_str) != Some(kind) {
        return None;
    }
    data.get("result").and_then(Value::as_array)
}

fn shape(shown: &str, expected: &str, data: &Value) -> Outcome {
    Outcome::failed(format!(
        "GET {shown}: expected {expected}, got {}",
        excerpt(&data.to_string())
    ))
}

fn unexpected(shown: &str, status: StatusCode, body: &str) -> Outcome {
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
