//! The `faults:` section: error-handling drills, each a call to a service whose dependency sits
//! behind a fault proxy, a fault to apply there, and the behaviour the service declares.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use citadel_itest_core::config::{MAX_TIMEOUT, Secret, Validate, Validator, redact_url};
use serde::{Deserialize, Serialize};

use crate::proxy::{Fault, FaultSpec};

/// Default `service.request_timeout`: how long one call to the service may take.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Most attempts a retry drill may declare (and most calls a circuit-breaker drill makes).
pub const MAX_ATTEMPTS: u32 = 100;
/// Most calls a circuit-breaker drill makes in all.
pub const MAX_CALLS: u32 = 1000;
/// Longest declared interval (timeouts, open intervals, recovery bounds): 10 minutes.
pub const MAX_INTERVAL: Duration = Duration::from_secs(600);

/// The `faults:` section.
///
/// ```yaml
/// faults:
///   drills:
///     - name: gateway
///       service: { url: http://127.0.0.1:58080/v1/models }
///       proxy: { control: http://127.0.0.1:58190 }
///       retry: { attempts: 3, fault: { type: http_status, status: 502 } }
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FaultsConfig {
    /// The drills; each declared behaviour of each drill is one check.
    #[serde(default)]
    pub drills: Vec<DrillConfig>,
}

impl FaultsConfig {
    /// A section with these drills.
    pub fn new(drills: impl IntoIterator<Item = DrillConfig>) -> Self {
        FaultsConfig {
            drills: drills.into_iter().collect(),
        }
    }
}

/// One drill: a service, the proxy in front of its dependency, and what the service does when
/// that dependency fails. Give at least one of `retry`, `circuit_breaker`, `timeout`,
/// `degradation`; each becomes the check `faults.<name>.<kind>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DrillConfig {
    /// Name in check ids (`faults.<name>.<kind>`).
    pub name: String,
    /// The call made to the service under test.
    pub service: ServiceCall,
    /// The fault proxy between the service and its dependency.
    pub proxy: ProxyRef,
    /// The service retries a failing dependency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryExpect>,
    /// The service stops calling a failing dependency for a while.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<BreakerExpect>,
    /// The service gives up on a hanging dependency in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<TimeoutExpect>,
    /// The service answers a declared fallback while its dependency fails, and recovers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degradation: Option<DegradationExpect>,
}

impl DrillConfig {
    /// A drill named `name` calling `service` with its dependency behind `proxy`; declare the
    /// behaviours with the other builders.
    pub fn new(name: impl Into<String>, service: ServiceCall, proxy: ProxyRef) -> Self {
        DrillConfig {
            name: name.into(),
            service,
            proxy,
            retry: None,
            circuit_breaker: None,
            timeout: None,
            degradation: None,
        }
    }

    /// Declare retries.
    pub fn retry(mut self, retry: RetryExpect) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Declare a circuit breaker.
    pub fn circuit_breaker(mut self, breaker: BreakerExpect) -> Self {
        self.circuit_breaker = Some(breaker);
        self
    }

    /// Declare a timeout.
    pub fn timeout(mut self, timeout: TimeoutExpect) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Declare a fallback.
    pub fn degradation(mut self, degradation: DegradationExpect) -> Self {
        self.degradation = Some(degradation);
        self
    }
}

/// `service`: one HTTP call to the service under test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ServiceCall {
    /// The full URL called, e.g. `http://127.0.0.1:58080/v1/chat/completions`.
    pub url: String,
    /// HTTP method, default `GET`.
    #[serde(default = "default_method")]
    pub method: String,
    /// Extra request headers (no secrets here: use `api_key`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Sent as `Authorization: Bearer ...`, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,
    /// Request body, sent as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The status of a normal answer (no fault applied), default 200.
    #[serde(default = "default_status")]
    pub expect_status: u16,
    /// Bound of one call (head and body) where the behaviour declares none.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
}

fn default_method() -> String {
    "GET".to_string()
}
fn default_status() -> u16 {
    200
}
fn default_request_timeout() -> Duration {
    DEFAULT_REQUEST_TIMEOUT
}

impl ServiceCall {
    /// `GET url`, a normal answer being 200.
    pub fn get(url: impl Into<String>) -> Self {
        ServiceCall {
            url: url.into(),
            method: default_method(),
            headers: BTreeMap::new(),
            api_key: None,
            body: None,
            expect_status: default_status(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// `POST url` with a JSON body.
    pub fn post_json(url: impl Into<String>, body: impl Into<String>) -> Self {
        let mut call = ServiceCall::get(url);
        call.method = "POST".to_string();
        call.body = Some(body.into());
        call.headers
            .insert("content-type".to_string(), "application/json".to_string());
        call
    }

    /// Add a request header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// The status of a normal answer.
    pub fn expect_status(mut self, status: u16) -> Self {
        self.expect_status = status;
        self
    }

    /// Bound of one call.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }
}

/// `proxy`: the fault proxy already running between the service and its dependency, reached
/// through its control API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ProxyRef {
    /// The proxy's control URL, e.g. `http://127.0.0.1:58190`.
    pub control: String,
    /// Count only requests whose path starts with this (HTTP mode), so other traffic through
    /// the proxy does not end up in the figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Bound of one control request, default 5 s.
    #[serde(default = "default_control_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_control_timeout() -> Duration {
    Duration::from_secs(5)
}

impl ProxyRef {
    /// The proxy whose control API is at `control`.
    pub fn control(control: impl Into<String>) -> Self {
        ProxyRef {
            control: control.into(),
            path_prefix: None,
            timeout: default_control_timeout(),
        }
    }
}

/// `retry`: one call while the dependency fails; the service must try it `attempts` times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryExpect {
    /// The fault, default `{ type: http_status, status: 502 }`.
    #[serde(default = "default_failure")]
    pub fault: Fault,
    /// Attempts the dependency must see for the one call (first try and retries), exactly.
    pub attempts: u32,
    /// The gap between consecutive attempts must be at least this, when set (backoff).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub min_backoff: Option<Duration>,
    /// The service must have given up (answered an error) within this, default 10 s.
    #[serde(default = "default_give_up", with = "humantime_serde")]
    pub give_up_within: Duration,
    /// Statuses a clean give-up may have; default any 4xx or 5xx.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub give_up_status: Vec<u16>,
    /// After the answer, attempts are still counted this long (late retries), default 300 ms.
    #[serde(default = "default_settle", with = "humantime_serde")]
    pub settle: Duration,
}

fn default_failure() -> Fault {
    Fault::HttpStatus {
        status: 502,
        retry_after: None,
        body: None,
    }
}
fn default_give_up() -> Duration {
    Duration::from_secs(10)
}
fn default_settle() -> Duration {
    Duration::from_millis(300)
}

impl RetryExpect {
    /// `attempts` attempts against `HTTP 502`, given up within 10 s.
    pub fn new(attempts: u32) -> Self {
        RetryExpect {
            fault: default_failure(),
            attempts,
            min_backoff: None,
            give_up_within: default_give_up(),
            give_up_status: Vec::new(),
            settle: default_settle(),
        }
    }

    /// Apply this fault.
    pub fn fault(mut self, fault: Fault) -> Self {
        self.fault = fault;
        self
    }

    /// Require at least this gap between attempts.
    pub fn min_backoff(mut self, gap: Duration) -> Self {
        self.min_backoff = Some(gap);
        self
    }

    /// Require the give-up within this.
    pub fn give_up_within(mut self, within: Duration) -> Self {
        self.give_up_within = within;
        self
    }
}

/// `circuit_breaker`: after `failures` failed calls the dependency gets no call for
/// `open_for`, then one probe; once the fault is removed calls flow again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BreakerExpect {
    /// The fault, default `{ type: http_status, status: 502 }`.
    #[serde(default = "default_failure")]
    pub fault: Fault,
    /// Failed calls that open the breaker (K).
    pub failures: u32,
    /// How long it stays open before a half-open probe (T).
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
    /// Gap between the drill's calls, default 50 ms.
    #[serde(default = "default_call_interval", with = "humantime_serde")]
    pub call_interval: Duration,
    /// Timing tolerance of the open interval, default 250 ms.
    #[serde(default = "default_tolerance", with = "humantime_serde")]
    pub tolerance: Duration,
    /// After the fault is removed calls must reach the dependency again within this; default
    /// `open_for` + `tolerance` + 1 s.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub recover_within: Option<Duration>,
}

fn default_call_interval() -> Duration {
    Duration::from_millis(50)
}
fn default_tolerance() -> Duration {
    Duration::from_millis(250)
}

impl BreakerExpect {
    /// Open after `failures` failures for `open_for`, against `HTTP 502`.
    pub fn new(failures: u32, open_for: Duration) -> Self {
        BreakerExpect {
            fault: default_failure(),
            failures,
            open_for,
            call_interval: default_call_interval(),
            tolerance: default_tolerance(),
            recover_within: None,
        }
    }

    /// Apply this fault.
    pub fn fault(mut self, fault: Fault) -> Self {
        self.fault = fault;
        self
    }

    /// Timing tolerance.
    pub fn tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// The bound of recovery.
    pub fn recovery_bound(&self) -> Duration {
        self.recover_within.unwrap_or_else(|| {
            self.open_for
                .saturating_add(self.tolerance)
                .saturating_add(Duration::from_secs(1))
        })
    }
}

/// `timeout`: with the dependency hanging, the service answers an error within `timeout`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TimeoutExpect {
    /// The fault; default `{ type: http_delay, before_first_byte: <the drill's hang bound + 10s> }`
    /// (per request, so it hits keep-alive connections too; `{ type: blackhole }` for a TCP-mode
    /// proxy, which hits new connections only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// The service's declared timeout.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How far from `timeout` the answer may come, default 500 ms.
    #[serde(default = "default_margin", with = "humantime_serde")]
    pub margin: Duration,
    /// The status of the answer (e.g. 504); default any 5xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

fn default_margin() -> Duration {
    Duration::from_millis(500)
}

impl TimeoutExpect {
    /// A declared `timeout`, the dependency's answers held back, margin 500 ms.
    pub fn new(timeout: Duration) -> Self {
        TimeoutExpect {
            fault: None,
            timeout,
            margin: default_margin(),
            status: None,
        }
    }

    /// Apply this fault.
    pub fn fault(mut self, fault: Fault) -> Self {
        self.fault = Some(fault);
        self
    }

    /// The fault applied: the configured one, else an HTTP delay longer than the drill waits.
    pub fn hang_fault(&self) -> Fault {
        self.fault.clone().unwrap_or(Fault::HttpDelay {
            before_first_byte: self.hang_after().saturating_add(Duration::from_secs(10)),
        })
    }

    /// The answer's status.
    pub fn status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// The margin.
    pub fn margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// How long the drill waits for an answer before calling it a hang.
    pub fn hang_after(&self) -> Duration {
        self.timeout
            .saturating_add(self.margin)
            .saturating_mul(2)
            .saturating_add(Duration::from_secs(1))
    }
}

/// `degradation`: with the dependency failing the service answers its fallback, and normal
/// answers come back within `recover_within` after the fault is removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DegradationExpect {
    /// The fault, default `{ type: http_status, status: 502 }`.
    #[serde(default = "default_failure")]
    pub fault: Fault,
    /// The fallback's status, e.g. 503.
    pub status: u16,
    /// Headers the fallback must carry (`retry-after`, a header naming another backend): a
    /// value must match exactly; `""` only requires the header.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// JSON fields the fallback body must have, by JSON pointer (`/error/code`), with their
    /// values; a `null` value only requires the field.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub json: BTreeMap<String, serde_json::Value>,
    /// After the fault is removed, normal answers must be back within this; default 5 s.
    #[serde(default = "default_recover", with = "humantime_serde")]
    pub recover_within: Duration,
    /// Gap between calls while waiting for recovery, default 100 ms.
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
}

fn default_recover() -> Duration {
    Duration::from_secs(5)
}
fn default_poll() -> Duration {
    Duration::from_millis(100)
}

impl DegradationExpect {
    /// A fallback answering `status`, recovering within 5 s, against `HTTP 502`.
    pub fn new(status: u16) -> Self {
        DegradationExpect {
            fault: default_failure(),
            status,
            headers: BTreeMap::new(),
            json: BTreeMap::new(),
            recover_within: default_recover(),
            poll_interval: default_poll(),
        }
    }

    /// Apply this fault.
    pub fn fault(mut self, fault: Fault) -> Self {
        self.fault = fault;
        self
    }

    /// Require a header (`""`: any value).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Require a JSON field (`null`: any value).
    pub fn json(mut self, pointer: impl Into<String>, value: serde_json::Value) -> Self {
        self.json.insert(pointer.into(), value);
        self
    }

    /// The bound of recovery.
    pub fn recover_within(mut self, within: Duration) -> Self {
        self.recover_within = within;
        self
    }
}

fn check_http_url(v: &mut Validator<'_>, key: &str, raw: &str) {
    match url::Url::parse(raw) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            if let Some(port) = u.port() {
                v.port(key, port);
            }
        }
        Ok(u) => v.error(
            key,
            format!(
                "`{}` must be an http or https URL with a host (scheme `{}`)",
                redact_url(raw),
                u.scheme()
            ),
        ),
        Err(e) => v.error(key, format!("invalid URL `{}`: {e}", redact_url(raw))),
    }
}

fn check_status(v: &mut Validator<'_>, key: &str, status: u16) {
    v.range(key, status, 100, 599);
}

fn check_header_name(v: &mut Validator<'_>, key: &str, name: &str) {
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        v.error(key, format!("`{name}` is not a header name"));
    }
}

fn check_interval(v: &mut Validator<'_>, key: &str, d: Duration) {
    v.duration_range(key, d, Duration::from_millis(1), MAX_INTERVAL);
}

impl Validate for FaultsConfig {
    fn validate(&self, v: &mut Validator<'_>) {
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, d) in self.drills.iter().enumerate() {
            let mut dv = v.at(&format!("drills[{i}]"));
            if dv.name("name", &d.name) {
                if let Some(first) = names.insert(&d.name, i) {
                    dv.error(
                        "name",
                        format!("duplicate drill `{}` (also drills[{first}])", d.name),
                    );
                }
            }
            d.validate(&mut dv);
        }
    }
}

impl Validate for DrillConfig {
    fn validate(&self, v: &mut Validator<'_>) {
        let s = &self.service;
        check_http_url(v, "service.url", &s.url);
        if http::Method::from_bytes(s.method.as_bytes()).is_err() {
            v.error(
                "service.method",
                format!("`{}` is not an HTTP method", s.method),
            );
        }
        for (name, value) in &s.headers {
            check_header_name(v, &format!("service.headers.{name}"), name);
            if http::HeaderValue::from_str(value).is_err() {
                v.error(
                    &format!("service.headers.{name}"),
                    "not a valid header value",
                );
            }
        }
        if let Some(key) = &s.api_key {
            v.secret("service.api_key", key);
        }
        check_status(v, "service.expect_status", s.expect_status);
        v.duration_range(
            "service.request_timeout",
            s.request_timeout,
            Duration::from_millis(1),
            MAX_TIMEOUT,
        );
        check_http_url(v, "proxy.control", &self.proxy.control);
        if let Some(p) = &self.proxy.path_prefix {
            if !p.starts_with('/') {
                v.error("proxy.path_prefix", format!("`{p}` must start with `/`"));
            }
        }
        check_interval(v, "proxy.timeout", self.proxy.timeout);
        if self.retry.is_none()
            && self.circuit_breaker.is_none()
            && self.timeout.is_none()
            && self.degradation.is_none()
        {
            v.error(
                "",
                "declare at least one behaviour: retry, circuit_breaker, timeout or degradation",
            );
        }
        if let Some(r) = &self.retry {
            let mut rv = v.at("retry");
            check_fault(&mut rv, "fault", &r.fault);
            rv.range("attempts", r.attempts, 1, MAX_ATTEMPTS);
            if let Some(b) = r.min_backoff {
                rv.duration_range("min_backoff", b, Duration::ZERO, MAX_INTERVAL);
            }
            check_interval(&mut rv, "give_up_within", r.give_up_within);
            rv.duration_range("settle", r.settle, Duration::ZERO, MAX_INTERVAL);
            for (j, st) in r.give_up_status.iter().enumerate() {
                rv.range(&format!("give_up_status[{j}]"), *st, 400, 599);
            }
        }
        if let Some(b) = &self.circuit_breaker {
            let mut bv = v.at("circuit_breaker");
            check_fault(&mut bv, "fault", &b.fault);
            bv.range("failures", b.failures, 1, MAX_ATTEMPTS);
            check_interval(&mut bv, "open_for", b.open_for);
            check_interval(&mut bv, "call_interval", b.call_interval);
            bv.duration_range("tolerance", b.tolerance, Duration::ZERO, MAX_INTERVAL);
            if let Some(r) = b.recover_within {
                check_interval(&mut bv, "recover_within", r);
            }
            if b.call_interval >= b.open_for {
                bv.error(
                    "call_interval",
                    format!(
                        "{} is not shorter than open_for ({}): the drill could not see the \
                         breaker open",
                        humantime::format_duration(b.call_interval),
                        humantime::format_duration(b.open_for)
                    ),
                );
            }
            let calls = b.failures as u128
                + 2 * (b.recovery_bound().as_millis() + b.open_for.as_millis())
                    / b.call_interval.as_millis().max(1);
            if calls > MAX_CALLS as u128 {
                bv.error(
                    "call_interval",
                    format!(
                        "the drill would make up to {calls} calls (over {MAX_CALLS}): \
                         use a longer call_interval"
                    ),
                );
            }
        }
        if let Some(t) = &self.timeout {
            let mut tv = v.at("timeout");
            check_fault(&mut tv, "fault", &t.hang_fault());
            check_interval(&mut tv, "timeout", t.timeout);
            tv.duration_range("margin", t.margin, Duration::ZERO, MAX_INTERVAL);
            if let Some(st) = t.status {
                check_status(&mut tv, "status", st);
            }
            if let Some(Fault::HttpDelay { before_first_byte }) = t.fault {
                if before_first_byte <= t.timeout.saturating_add(t.margin) {
                    tv.error(
                        "fault.before_first_byte",
                        format!(
                            "{} is not longer than timeout + margin ({}): the service would \
                             not need its timeout",
                            humantime::format_duration(before_first_byte),
                            humantime::format_duration(t.timeout.saturating_add(t.margin))
                        ),
                    );
                }
            }
        }
        if let Some(d) = &self.degradation {
            let mut gv = v.at("degradation");
            check_fault(&mut gv, "fault", &d.fault);
            check_status(&mut gv, "status", d.status);
            for name in d.headers.keys() {
                check_header_name(&mut gv, &format!("headers.{name}"), name);
            }
            for pointer in d.json.keys() {
                if !pointer.starts_with('/') {
                    gv.error(
                        &format!("json.{pointer}"),
                        format!("`{pointer}` is not a JSON pointer (`/error/code`)"),
                    );
                }
            }
            check_interval(&mut gv, "recover_within", d.recover_within);
            check_interval(&mut gv, "poll_interval", d.poll_interval);
            if d.status == s.expect_status {
                gv.error(
                    "status",
                    format!(
                        "the fallback status {} is the normal status (service.expect_status): \
                         recovery could not be told from the fallback",
                        d.status
                    ),
                );
            }
        }
    }
}

fn check_fault(v: &mut Validator<'_>, key: &str, fault: &Fault) {
    if let Err(e) = FaultSpec::new(fault.clone()).validate() {
        v.error(key, e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use citadel_itest_core::config::ConfigLoader;

    fn problems(yaml: &str) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, yaml).unwrap();
        let config = ConfigLoader::new()
            .file(&path)
            .env(false)
            .section("faults")
            .load()
            .unwrap();
        let mut problems = Vec::new();
        let _ = config.section::<FaultsConfig>("faults", &mut problems);
        problems.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn a_full_drill_parses_with_defaults() {
        let yaml = r#"
drills:
  - name: gateway
    service: { url: "http://127.0.0.1:58080/v1/models" }
    proxy: { control: "http://127.0.0.1:58190" }
    retry: { attempts: 3 }
    timeout: { timeout: 1s, status: 504 }
    degradation: { status: 503, headers: { retry-after: "" }, json: { /error/code: null } }
    circuit_breaker: { failures: 3, open_for: 2s }
"#;
        let c: FaultsConfig = serde_yaml_ng_or_json(yaml);
        let d = &c.drills[0];
        assert_eq!(d.service.method, "GET");
        assert_eq!(d.service.expect_status, 200);
        assert_eq!(d.retry.as_ref().unwrap().fault, default_failure());
        assert!(matches!(
            d.timeout.as_ref().unwrap().hang_fault(),
            Fault::HttpDelay { before_first_byte } if before_first_byte == Duration::from_secs(14)
        ));
        assert_eq!(
            d.circuit_breaker.as_ref().unwrap().recovery_bound(),
            Duration::from_millis(3250)
        );
    }

    fn serde_yaml_ng_or_json(yaml: &str) -> FaultsConfig {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, format!("faults:\n{}", indent(yaml))).unwrap();
        let config = ConfigLoader::new()
            .file(&path)
            .env(false)
            .section("faults")
            .load()
            .unwrap();
        let mut problems = Vec::new();
        let c = config.section::<FaultsConfig>("faults", &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        c.unwrap()
    }

    fn indent(yaml: &str) -> String {
        yaml.lines().map(|l| format!("  {l}\n")).collect()
    }

    #[test]
    fn bad_drills_are_named_with_their_keys() {
        let yaml = r#"
faults:
  drills:
    - name: Bad.Name
      service: { url: "ftp://127.0.0.1/x", method: "GE T", expect_status: 99 }
      proxy: { control: "http://127.0.0.1:0" }
    - name: ok
      service: { url: "http://127.0.0.1:1/" }
      proxy: { control: "http://127.0.0.1:2", path_prefix: "v1" }
      retry: { attempts: 0, give_up_status: [200] }
      timeout: { timeout: 1s, fault: { type: http_delay, before_first_byte: 1s } }
      degradation: { status: 200, json: { error: null } }
      circuit_breaker: { failures: 3, open_for: 50ms }
    - name: ok
      service: { url: "http://127.0.0.1:1/" }
      proxy: { control: "http://127.0.0.1:2" }
      retry: { attempts: 2 }
"#;
        let p = problems(yaml).join("\n");
        for needle in [
            "faults.drills[0].name",
            "faults.drills[0].service.url",
            "faults.drills[0].service.method",
            "faults.drills[0].service.expect_status",
            "faults.drills[0].proxy.control",
            "faults.drills[0]: declare at least one behaviour",
            "faults.drills[1].proxy.path_prefix",
            "faults.drills[1].retry.attempts",
            "faults.drills[1].retry.give_up_status[0]",
            "faults.drills[1].timeout.fault.before_first_byte",
            "faults.drills[1].degradation.status",
            "faults.drills[1].degradation.json.error",
            "faults.drills[1].circuit_breaker.call_interval",
            "faults.drills[2].name",
        ] {
            assert!(p.contains(needle), "{needle} not in\n{p}");
        }
    }

    #[test]
    fn unknown_keys_and_faults_are_refused() {
        let p = problems(
            r#"
faults:
  drills:
    - name: a
      service: { url: "http://127.0.0.1:1/" }
      proxy: { control: "http://127.0.0.1:2" }
      retry: { attempts: 2, fault: { type: teleport } }
"#,
        )
        .join("\n");
        assert!(p.contains("teleport"), "{p}");
    }
}
