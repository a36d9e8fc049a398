//! The error-handling checks: one [`DrillCheck`] per declared behaviour of a drill.
//!
//! Every check adds its fault at the proxy, registers the fault's removal with
//! [`CheckContext::cleanup`] right away (so it is removed on pass, fail, timeout, panic and
//! Ctrl-C), claims the proxy exclusively ([`Resource`] `fault-proxy:<proxy>`), calls the service
//! and reads from the proxy's event log what the service did to its dependency.

mod breaker;
mod control;
mod degradation;
mod retry;
mod timeout;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use citadel_itest_core::config::SecretString;
use citadel_itest_core::http::{BodyLimit, read_body};
use citadel_itest_core::{
    BoxError, Category, Check, CheckContext, CheckId, CleanupHandle, ErrorKind, Outcome, Resource,
};
use reqwest::header::HeaderMap;
use tokio::time::Instant;

pub use control::{ControlError, MAX_CONTROL_BODY, ProxyControl};

use crate::NAME;

/// How long the retry and timeout checks wait for the service to answer normally again once
/// their fault is removed (the degradation check takes `recover_within` from its config).
pub(crate) const DEFAULT_RECOVER_WITHIN: Duration = Duration::from_secs(5);
/// Gap between the calls while waiting for recovery.
pub(crate) const RECOVERY_POLL: Duration = Duration::from_millis(100);
use crate::config::DrillConfig;
use crate::proxy::{Event, EventKind, Fault, FaultId, FaultSpec};

/// Which behaviour a check proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum DrillKind {
    /// Retries: the declared number of attempts, with backoff, then a clean give-up.
    Retry,
    /// A circuit breaker: open after K failures, a half-open probe, recovery.
    CircuitBreaker,
    /// A timeout: an error answer within the declared time when the dependency hangs.
    Timeout,
    /// Graceful degradation: the declared fallback, then recovery.
    Degradation,
}

impl DrillKind {
    /// Every kind, in check order.
    pub const ALL: [DrillKind; 4] = [
        DrillKind::Retry,
        DrillKind::CircuitBreaker,
        DrillKind::Timeout,
        DrillKind::Degradation,
    ];

    /// The last part of the check id.
    pub fn as_str(self) -> &'static str {
        match self {
            DrillKind::Retry => "retry",
            DrillKind::CircuitBreaker => "circuit_breaker",
            DrillKind::Timeout => "timeout",
            DrillKind::Degradation => "degradation",
        }
    }

    /// Whether `drill` declares this behaviour.
    pub fn declared_in(self, drill: &DrillConfig) -> bool {
        match self {
            DrillKind::Retry => drill.retry.is_some(),
            DrillKind::CircuitBreaker => drill.circuit_breaker.is_some(),
            DrillKind::Timeout => drill.timeout.is_some(),
            DrillKind::Degradation => drill.degradation.is_some(),
        }
    }
}

impl fmt::Display for DrillKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One declared behaviour of one drill: `faults.<name>.<kind>`, category `error_handling`.
///
/// ```
/// use citadel_itest_core::{Category, Check};
/// use citadel_itest_faults::checks::{DrillCheck, DrillKind};
/// use citadel_itest_faults::config::{DrillConfig, ProxyRef, RetryExpect, ServiceCall};
///
/// let drill = DrillConfig::new(
///     "gateway",
///     ServiceCall::get("http://127.0.0.1:58080/v1/models"),
///     ProxyRef::control("http://127.0.0.1:58190"),
/// )
/// .retry(RetryExpect::new(3));
/// let check = DrillCheck::new(&drill, DrillKind::Retry);
/// assert_eq!(check.id().as_str(), "faults.gateway.retry");
/// assert_eq!(check.category(), Category::ErrorHandling);
/// assert_eq!(check.exclusive()[0].as_str(), "fault-proxy:http://127.0.0.1:58190");
/// ```
#[derive(Debug, Clone)]
pub struct DrillCheck {
    id: CheckId,
    kind: DrillKind,
    drill: DrillConfig,
    proxy: ProxyControl,
    client: reqwest::Client,
}

impl DrillCheck {
    /// The check of `kind` of `drill`, driving the proxy at `drill.proxy.control`.
    pub fn new(drill: &DrillConfig, kind: DrillKind) -> Self {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            // A fresh connection per call: a pooled one the proxy or the service closed
            // meanwhile would count as the service's fault.
            .pool_max_idle_per_host(0)
            .build()
            .unwrap_or_default();
        DrillCheck {
            id: CheckId::new(format!("{NAME}.{}.{}", drill.name, kind.as_str())),
            kind,
            proxy: ProxyControl::remote(&drill.proxy.control, drill.proxy.timeout),
            drill: drill.clone(),
            client,
        }
    }

    /// Drive this proxy instead (an in-process [`ProxyControl::local`] in tests).
    pub fn with_proxy(mut self, proxy: ProxyControl) -> Self {
        self.proxy = proxy;
        self
    }

    /// Which behaviour it proves.
    pub fn kind(&self) -> DrillKind {
        self.kind
    }

    /// The proxy it drives.
    pub fn proxy(&self) -> &ProxyControl {
        &self.proxy
    }

    /// The fault this check applies (`None` when its behaviour is not declared).
    pub fn fault(&self) -> Option<Fault> {
        let d = &self.drill;
        match self.kind {
            DrillKind::Retry => d.retry.as_ref().map(|r| r.fault.clone()),
            DrillKind::CircuitBreaker => d.circuit_breaker.as_ref().map(|b| b.fault.clone()),
            DrillKind::Timeout => d.timeout.as_ref().map(|t| t.hang_fault()),
            DrillKind::Degradation => d.degradation.as_ref().map(|g| g.fault.clone()),
        }
    }

    /// Add the drill's fault and register its removal at once.
    async fn apply(&self, ctx: &CheckContext, fault: &Fault) -> Result<Applied, BoxError> {
        let id = self.proxy.add(FaultSpec::new(fault.clone())).await?;
        let proxy = self.proxy.clone();
        let cleanup = ctx.cleanup(
            format!("fault proxy {}", self.proxy.key()),
            format!("fault {id} ({})", fault.describe()),
            async move {
                proxy.remove(id).await?;
                Ok(())
            },
        );
        ctx.detail("fault", fault.describe());
        Ok(Applied { id, cleanup })
    }

    /// Remove the fault now (the check goes on without it); the registered removal is disarmed
    /// once this succeeded.
    async fn lift(&self, applied: &Applied) -> Result<(), BoxError> {
        self.proxy.remove(applied.id).await?;
        applied.cleanup.disarm();
        Ok(())
    }

    /// One call to the service, bounded by `bound` (head and body).
    async fn call(&self, bound: Duration) -> Call {
        let s = &self.drill.service;
        let started = Instant::now();
        let deadline = deadline_from(started, bound);
        let method = reqwest::Method::from_bytes(s.method.as_bytes()).unwrap_or_default();
        let mut req = self.client.request(method, &s.url).timeout(bound);
        for (name, value) in &s.headers {
            req = req.header(name, value);
        }
        if let Some(key) = &s.api_key {
            match key.resolve() {
                Ok(key) => req = req.bearer_auth(SecretString::expose(&key)),
                Err(e) => {
                    return Call::Broken {
                        after: Duration::ZERO,
                        message: citadel_itest_core::error_chain(&e),
                    };
                }
            }
        }
        if let Some(body) = &s.body {
            req = req.body(body.clone());
        }
        let resp = match tokio::time::timeout_at(deadline, req.send()).await {
            Err(_) => return Call::Hung { bound },
            Ok(Err(e)) if e.is_timeout() => return Call::Hung { bound },
            Ok(Err(e)) => {
                let message = citadel_itest_core::io_error_words_in_chain(&e)
                    .map(str::to_string)
                    .unwrap_or_else(|| citadel_itest_core::error_chain(&e.without_url()));
                return Call::Broken {
                    after: started.elapsed(),
                    message,
                };
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        match read_body(resp, &BodyLimit::until(deadline).allowed(bound)).await {
            Ok(body) => Call::Answer(Answer {
                status,
                headers,
                body,
                elapsed: started.elapsed(),
            }),
            Err(e) if e.is_unfinished() => Call::Hung { bound },
            Err(e) => Call::Broken {
                after: started.elapsed(),
                message: e.to_string(),
            },
        }
    }

    /// The times (proxy clock) of the service's attempts at its dependency among `events`.
    fn attempts(&self, events: &[Event]) -> Vec<Duration> {
        attempts(events, self.drill.proxy.path_prefix.as_deref())
    }
}

/// The times of the attempts among `events`: HTTP requests (whose path starts with `prefix`,
/// when given) when the proxy saw any, else accepted connections (TCP mode, or faults that
/// act before a request is read).
pub fn attempts(events: &[Event], prefix: Option<&str>) -> Vec<Duration> {
    let requests: Vec<Duration> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Request { path, .. } if prefix.is_none_or(|p| path.starts_with(p)) => {
                Some(e.at)
            }
            _ => None,
        })
        .collect();
    if !requests.is_empty()
        || events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Request { .. }))
    {
        return requests;
    }
    events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Accepted))
        .map(|e| e.at)
        .collect()
}

struct Applied {
    id: FaultId,
    cleanup: CleanupHandle,
}

/// How one call to the service ended.
enum Call {
    Answer(Answer),
    /// No whole answer within the bound.
    Hung {
        bound: Duration,
    },
    /// The connection failed.
    Broken {
        after: Duration,
        message: String,
    },
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
    elapsed: Duration,
}

impl Call {
    fn status(&self) -> Option<u16> {
        match self {
            Call::Answer(a) => Some(a.status),
            _ => None,
        }
    }

    /// Short words: `503 after 12ms`, `no answer within 5s`, `connection reset after 3ms`.
    fn describe(&self) -> String {
        match self {
            Call::Answer(a) => format!("{} after {}", a.status, ms(a.elapsed)),
            Call::Hung { bound } => format!("no answer within {}", ms(*bound)),
            Call::Broken { after, message } => format!("{message} after {}", ms(*after)),
        }
    }
}

/// `bound` from now, or far ahead when that is past what the clock can hold.
pub(crate) fn deadline(bound: Duration) -> Instant {
    deadline_from(Instant::now(), bound)
}

fn deadline_from(start: Instant, bound: Duration) -> Instant {
    start
        .checked_add(bound)
        .unwrap_or_else(|| start + Duration::from_secs(10 * 365 * 24 * 3600))
}

/// A duration for messages, to the millisecond: `1.003s`, `52ms`.
pub(crate) fn ms(d: Duration) -> String {
    let millis = d.as_millis();
    if millis >= 1000 {
        format!("{:.3}s", d.as_secs_f64())
    } else {
        format!("{millis}ms")
    }
}

pub(crate) fn ms_f64(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `1st`, `2nd`, `3rd`, `4th`, `11th`.
pub(crate) fn ordinal(n: u64) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

pub(crate) fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

/// Sleep, unless the run is cancelled first (then `false`).
pub(crate) async fn pause(ctx: &CheckContext, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = ctx.cancel.cancelled() => false,
    }
}

#[async_trait]
impl Check for DrillCheck {
    fn id(&self) -> &CheckId {
        &self.id
    }

    fn category(&self) -> Category {
        Category::ErrorHandling
    }

    fn timeout(&self) -> Option<Duration> {
        let d = &self.drill;
        let rt = d.service.request_timeout;
        let control = d.proxy.timeout.saturating_mul(4);
        let slack = Duration::from_secs(5);
        // Saturating: durations given through the builders are not range-checked.
        let sum = |parts: &[Duration]| {
            parts
                .iter()
                .fold(Duration::ZERO, |a, b| a.saturating_add(*b))
        };
        match self.kind {
            DrillKind::Retry => d
                .retry
                .as_ref()
                .map(|r| sum(&[r.give_up_within, r.settle, control, slack])),
            DrillKind::CircuitBreaker => d.circuit_breaker.as_ref().map(|b| {
                // The trip calls, then two open intervals and the recovery, each call bounded.
                sum(&[
                    rt.saturating_mul(b.failures.saturating_add(2)),
                    b.open_for.saturating_mul(2),
                    b.tolerance.saturating_mul(2),
                    b.recovery_bound(),
                    control,
                    slack,
                ])
            }),
            DrillKind::Timeout => d
                .timeout
                .as_ref()
                .map(|t| sum(&[t.hang_after(), control, slack])),
            DrillKind::Degradation => d
                .degradation
                .as_ref()
                .map(|g| sum(&[rt.saturating_mul(2), g.recover_within, control, slack])),
        }
    }

    fn exclusive(&self) -> Vec<Resource> {
        vec![Resource::new("fault-proxy", self.proxy.key())]
    }

    async fn run(&self, ctx: &CheckContext) -> Result<Outcome, BoxError> {
        let Some(fault) = self.fault() else {
            return Ok(Outcome::skipped(format!(
                "drill `{}` declares no {} behaviour",
                self.drill.name, self.kind
            )));
        };
        ctx.detail("proxy", self.proxy.key());
        let run = async {
            match self.kind {
                DrillKind::Retry => self.run_retry(ctx, &fault).await,
                DrillKind::CircuitBreaker => self.run_breaker(ctx, &fault).await,
                DrillKind::Timeout => self.run_timeout(ctx, &fault).await,
                DrillKind::Degradation => self.run_degradation(ctx, &fault).await,
            }
        };
        tokio::select! {
            outcome = run => outcome,
            _ = ctx.cancel.cancelled() => Ok(Outcome::error(
                ErrorKind::Cancelled,
                "cancelled; the fault is removed by the cleanup",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(at_ms: u64, kind: EventKind) -> Event {
        serde_json::from_value(serde_json::json!({
            "at": format!("{at_ms}ms"),
            "conn": 1,
            "kind": kind,
        }))
        .unwrap()
    }

    #[test]
    fn attempts_are_requests_else_connections() {
        let req = |p: &str| EventKind::Request {
            method: "GET".into(),
            path: p.into(),
        };
        let events = vec![
            ev(1, EventKind::Accepted),
            ev(2, req("/v1/a")),
            ev(3, req("/health")),
            ev(9, req("/v1/b")),
        ];
        assert_eq!(attempts(&events, None).len(), 3);
        assert_eq!(
            attempts(&events, Some("/v1")),
            vec![Duration::from_millis(2), Duration::from_millis(9)]
        );
        assert!(attempts(&events, Some("/v2")).is_empty());
        let tcp = vec![ev(1, EventKind::Accepted), ev(5, EventKind::Accepted)];
        assert_eq!(attempts(&tcp, Some("/v1")).len(), 2);
    }

    #[test]
    fn words() {
        assert_eq!(ordinal(1), "1st");
        assert_eq!(ordinal(12), "12th");
        assert_eq!(ordinal(23), "23rd");
        assert_eq!(ms(Duration::from_millis(52)), "52ms");
        assert_eq!(ms(Duration::from_millis(1003)), "1.003s");
    }
}
