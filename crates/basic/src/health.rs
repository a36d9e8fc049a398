//! `basic.<name>.health`: timed GET requests to a health endpoint with status and body
//! assertions.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use citadel_itest_core::config::SecretString;
use citadel_itest_core::http::{BodyError, BodyLimit, DEFAULT_MAX_BODY, excerpt, read_body};
use citadel_itest_core::{
    BoxError, Category, Check, CheckContext, CheckId, ErrorKind, Measurement, Outcome, Threshold,
    Unit, error_chain,
};
use tokio::time::Instant;

use crate::classify::http_error;
use crate::config::{Auth, Endpoint, EndpointError, JsonExpectation, TargetConfig, redact};
use crate::connectivity::timed_out;

/// Sends `samples` GET requests to a target's health endpoint, one after the other, and
/// checks each answer: the status (the configured one, else any 2xx) and, when configured, a
/// JSON pointer in the body.
///
/// Measures `latency_p50`, `latency_p95` (held to `<` [`HealthCheck::latency_p95_limit`], default
/// 200 ms), `latency_max` (each
/// request until its whole body arrived, in ms) and `samples`. A wrong status or body fails
/// with the request, what came back and what was expected:
/// `GET http://127.0.0.1:58080/health returned 503, expected 2xx: ...`. No proxy is used and
/// redirects are not followed (a 3xx is what the endpoint answered); the check's deadline bounds
/// every request.
///
/// Every body is read whole, through the core's bounded reader
/// ([`citadel_itest_core::http::read_body`]): a body over the cap (4 MiB unless
/// [`HealthCheck::max_body`] says otherwise) fails (`body over 4 MiB`), and a body that has not
/// ended by the check's deadline ends the check in a timeout naming it (`body not finished
/// within 10s`): an answer that never ends is not a healthy answer.
#[derive(Clone)]
pub struct HealthCheck {
    id: CheckId,
    name: String,
    url: Option<Result<url::Url, EndpointError>>,
    expect_status: Option<u16>,
    expect_json: Option<JsonExpectation>,
    samples: u32,
    auth: Option<Auth>,
    latency_p95_limit: Duration,
    timeout: Option<Duration>,
    max_body: usize,
}

impl fmt::Debug for HealthCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = self
            .url
            .as_ref()
            .map(|u| u.as_ref().map(|u| redact(u.as_str())));
        f.debug_struct("HealthCheck")
            .field("id", &self.id)
            .field("url", &url)
            .field("expect_status", &self.expect_status)
            .field("expect_json", &self.expect_json)
            .field("samples", &self.samples)
            .field("auth", &self.auth)
            .field("latency_p95_limit", &self.latency_p95_limit)
            .field("timeout", &self.timeout)
            .field("max_body", &self.max_body)
            .finish()
    }
}

impl HealthCheck {
    /// The health check of `target`: `latency_p95` must stay below 200 ms (the default
    /// `performance_targets.latency_p95`) unless [`HealthCheck::latency_p95_limit`] says
    /// otherwise. Its timeout is the target's `timeout` (else the runner's default). It carries
    /// no retry policy: add [`retry_until_ready`](citadel_itest_core::CheckExt::retry_until_ready)
    /// when the service may still be starting. Without a `health_path` the check is skipped; an
    /// unusable URL makes it end in a harness error.
    ///
    /// ```
    /// use std::time::Duration;
    /// use citadel_itest_basic::{HealthCheck, TargetConfig};
    ///
    /// let target = TargetConfig::new("gateway", "http://127.0.0.1:58080").health_path("/health");
    /// let check = HealthCheck::new(&target).latency_p95_limit(Duration::from_millis(50));
    /// ```
    pub fn new(target: &TargetConfig) -> Self {
        let url = target
            .health_path
            .as_deref()
            .map(|path| Endpoint::parse(&target.url).and_then(|ep| ep.join(path)));
        HealthCheck {
            id: CheckId::new(format!("basic.{}.health", target.name)),
            name: target.name.clone(),
            url,
            expect_status: target.expect_status,
            expect_json: target.expect_json.clone(),
            samples: target.samples,
            auth: target.auth.clone(),
            latency_p95_limit: crate::connectivity::DEFAULT_LIMIT,
            timeout: target.timeout,
            max_body: DEFAULT_MAX_BODY,
        }
    }

    /// `latency_p95` must stay below `limit` (default 200 ms; the tester uses
    /// `performance_targets.latency_p95`).
    pub fn latency_p95_limit(mut self, limit: Duration) -> Self {
        self.latency_p95_limit = limit;
        self
    }

    /// Read at most `bytes` of each answer's body (default
    /// [`DEFAULT_MAX_BODY`](citadel_itest_core::http::DEFAULT_MAX_BODY), 4 MiB); a longer body
    /// fails the check.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    fn measurements(&self, latencies: &[Duration]) -> Vec<Measurement> {
        let limit_ms = self.latency_p95_limit.as_secs_f64() * 1000.0;
        vec![
            Measurement::percentile_ms("latency_p50", latencies, 0.50),
            Measurement::percentile_ms("latency_p95", latencies, 0.95)
                .with_threshold(Threshold::lt(limit_ms)),
            Measurement::percentile_ms("latency_max", latencies, 1.0),
            Measurement::new("samples", latencies.len() as f64, Unit::Count),
        ]
    }

    async fn sample(
        &self,
        url: &url::Url,
        deadline: Instant,
        budget: Duration,
    ) -> Result<Outcome, BoxError> {
        let shown = redact(url.as_str());
        let credentials = self.credentials()?;
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(deadline.saturating_duration_since(Instant::now()))
            .build()
            .map_err(|e| {
                format!(
                    "build the HTTP client for {}: {}",
                    self.name,
                    error_chain(&e)
                )
            })?;

        let mut latencies = Vec::with_capacity(self.samples as usize);
        for _ in 0..self.samples {
            let started = Instant::now();
            let remaining = deadline.saturating_duration_since(started);
            let mut request = client.get(url.clone()).timeout(remaining);
            match &credentials {
                Some(Credentials::Bearer(token)) => request = request.bearer_auth(token.expose()),
                Some(Credentials::Basic(user, password)) => {
                    request = request.basic_auth(user, Some(password.expose()))
                }
                None => {}
            }
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) if e.is_timeout() => return Ok(timed_out(format!("GET {shown}"))),
                Err(e) => {
                    return Ok(Outcome::Failed {
                        message: format!("GET {shown}: {}", http_error(e)),
                        measurements: self.measurements(&latencies),
                    });
                }
            };
            let status = response.status().as_u16();
            let limit = BodyLimit::until(deadline)
                .max_bytes(self.max_body)
                .allowed(budget);
            let body = match read_body(response, &limit).await {
                Ok(b) => b,
                Err(e @ BodyError::Unfinished { .. }) => {
                    return Ok(Outcome::error(
                        ErrorKind::Timeout,
                        format!(
                            "GET {shown} returned {status}, then the check's timeout passed: {e}"
                        ),
                    ));
                }
                Err(e) => {
                    return Ok(Outcome::Failed {
                        message: format!("GET {shown} returned {status}: {e}"),
                        measurements: self.measurements(&latencies),
                    });
                }
            };
            latencies.push(started.elapsed());
            if let Some(problem) = self.assert_answer(status, &body) {
                return Ok(Outcome::Failed {
                    message: format!("GET {shown} {problem}"),
                    measurements: self.measurements(&latencies),
                });
            }
        }
        tracing::debug!(target = %self.name, samples = latencies.len(), "health sampled");
        Ok(Outcome::from_measurements(self.measurements(&latencies)))
    }

    fn credentials(&self) -> Result<Option<Credentials>, BoxError> {
        let resolve = |secret: &citadel_itest_core::config::Secret| {
            secret.resolve().map_err(|e| {
                format!(
                    "resolve credentials of target {}: {}",
                    self.name,
                    error_chain(&e)
                )
            })
        };
        Ok(match &self.auth {
            None => None,
            Some(Auth::Bearer(token)) => Some(Credentials::Bearer(resolve(token)?)),
            Some(Auth::Basic { username, password }) => {
                let password = resolve(password)?;
                // The header value (base64 of user:password) is redacted like the password.
                citadel_itest_core::config::register_basic_credentials(username, password.expose());
                Some(Credentials::Basic(username.clone(), password))
            }
        })
    }

    /// What is wrong with one answer, as the end of a sentence starting `GET <url> `.
    fn assert_answer(&self, status: u16, body: &[u8]) -> Option<String> {
        let status_ok = match self.expect_status {
            Some(expected) => status == expected,
            None => (200..300).contains(&status),
        };
        if !status_ok {
            let expected = self
                .expect_status
                .map_or_else(|| "2xx".to_string(), |s| s.to_string());
            return Some(format!(
                "returned {status}, expected {expected}{}",
                suffix(body)
            ));
        }
        let expectation = self.expect_json.as_ref()?;
        let pointer = &expectation.pointer;
        let json: serde_json::Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return Some(format!(
                    "returned a body that is not JSON ({}); cannot check JSON pointer {pointer}{}",
                    preview(&e.to_string()),
                    suffix(body)
                ));
            }
        };
        match json.pointer(pointer) {
            None => Some(format!(
                "returned JSON without pointer {pointer}{}",
                suffix(body)
            )),
            Some(found) if *found != expectation.equals => Some(format!(
                "returned JSON pointer {pointer} = {}, expected {}",
                preview(&found.to_string()),
                preview(&expectation.equals.to_string())
            )),
            Some(_) => None,
        }
    }
}

enum Credentials {
    Bearer(SecretString),
    Basic(String, SecretString),
}

/// `: <excerpt>` for a body that is not blank, else nothing.
fn suffix(body: &[u8]) -> String {
    if body.iter().all(u8::is_ascii_whitespace) {
        String::new()
    } else {
        format!(": {}", excerpt(body))
    }
}

/// At most 200 characters of `text` on one line, secrets redacted.
fn preview(text: &str) -> String {
    excerpt(text.as_bytes())
}

/// The check's time as a message names it: rounded up to a tenth of a second (the runner's
/// deadline was set a moment before the check started).
fn budget_of(remaining: Duration) -> Duration {
    let tenths = remaining.as_millis().div_ceil(100);
    Duration::from_millis(u64::try_from(tenths * 100).unwrap_or(u64::MAX))
}

#[async_trait]
impl Check for HealthCheck {
    fn id(&self) -> &CheckId {
        &self.id
    }

    fn category(&self) -> Category {
        Category::Health
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    async fn run(&self, ctx: &CheckContext) -> Result<Outcome, BoxError> {
        let url = match &self.url {
            None => {
                return Ok(Outcome::skipped(format!(
                    "target {} has no health_path",
                    self.name
                )));
            }
            Some(Err(e)) => return Err(format!("target {}: {e}", self.name).into()),
            Some(Ok(url)) => url,
        };
        let budget = budget_of(ctx.remaining());
        tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => {
                Ok(Outcome::error(ErrorKind::Cancelled, format!("health of {} cancelled", self.name)))
            }
            outcome = self.sample(url, ctx.deadline, budget) => outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(target: TargetConfig) -> HealthCheck {
        HealthCheck::new(&target).latency_p95_limit(Duration::from_millis(200))
    }

    fn body(text: &str) -> &[u8] {
        text.as_bytes()
    }

    #[test]
    fn status_defaults_to_any_2xx() {
        let c = check(TargetConfig::new("g", "http://127.0.0.1:1").health_path("/health"));
        assert_eq!(c.assert_answer(204, body("")), None);
        assert_eq!(
            c.assert_answer(503, body("down\n")).as_deref(),
            Some("returned 503, expected 2xx: down")
        );
        let c = check(
            TargetConfig::new("g", "http://127.0.0.1:1")
                .health_path("/health")
                .expect_status(200),
        );
        assert_eq!(
            c.assert_answer(204, body("")).as_deref(),
            Some("returned 204, expected 200")
        );
    }

    #[test]
    fn json_pointer_mismatch_names_pointer_and_values() {
        let c = check(
            TargetConfig::new("g", "http://127.0.0.1:1")
                .health_path("/health")
                .expect_json("/status", serde_json::json!("ok")),
        );
        assert_eq!(c.assert_answer(200, body(r#"{"status":"ok"}"#)), None);
        assert_eq!(
            c.assert_answer(200, body(r#"{"status":"degraded"}"#))
                .as_deref(),
            Some(r#"returned JSON pointer /status = "degraded", expected "ok""#)
        );
        let missing = c.assert_answer(200, body(r#"{"state":"ok"}"#)).unwrap();
        assert!(
            missing.starts_with("returned JSON without pointer /status"),
            "{missing}"
        );
        let not_json = c.assert_answer(200, body("OK")).unwrap();
        assert!(not_json.contains("not JSON"), "{not_json}");
    }

    #[test]
    fn previews_are_short_and_on_one_line() {
        let long = "x".repeat(500);
        let p = preview(&long);
        assert_eq!(p.chars().count(), 200);
        assert_eq!(preview("a\nb"), "a b");
        assert_eq!(suffix(b" \n"), "");
    }

    #[test]
    fn budgets_round_up_to_tenths() {
        assert_eq!(
            budget_of(Duration::from_micros(9_999_990)),
            Duration::from_secs(10)
        );
        assert_eq!(
            budget_of(Duration::from_millis(2_950)),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn no_samples_is_not_a_pass() {
        let c = check(TargetConfig::new("g", "http://127.0.0.1:1").health_path("/health"));
        let outcome = Outcome::from_measurements(c.measurements(&[]));
        assert!(!outcome.is_passed());
    }
}
