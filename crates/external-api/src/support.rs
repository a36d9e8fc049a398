//! What every service's checks share: bounded steps, latency figures, temporary names, the
//! loopback fault listeners and short words for network errors.

#![cfg_attr(
    not(any(feature = "postgres", feature = "qdrant", feature = "prometheus")),
    allow(dead_code)
)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use citadel_itest_core::{ErrorKind, Measurement, Outcome, Threshold, Unit, error_chain};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout_at};

use crate::config::Problem;

/// A step did not finish in time: either its own configured bound or the check's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// The configured bound (`connect_timeout`, `request_timeout`) passed first: a verdict
    /// about the service.
    Limit { after: Duration, key: &'static str },
    /// The check's deadline passed first: the harness could not finish.
    Deadline,
}

impl Cut {
    /// The outcome of a step cut short: `Failed` for a configured bound, `Error{Timeout}` for
    /// the deadline.
    pub(crate) fn outcome(self, step: &str) -> Outcome {
        match self {
            Cut::Limit { after, key } => Outcome::failed(format!(
                "{step}: no answer within {} ({key})",
                fmt_duration(after)
            )),
            Cut::Deadline => timed_out(step),
        }
    }
}

/// The step did not finish before the check's deadline: the runner's kind of timeout, with the
/// step named.
pub(crate) fn timed_out(step: &str) -> Outcome {
    Outcome::error(
        ErrorKind::Timeout,
        format!("{step}: timed out at the check's deadline"),
    )
}

/// Run `fut` bounded by `limit` (named `key` in messages) and by the check's `deadline`,
/// whichever comes first.
pub(crate) async fn within<F: Future>(
    deadline: Instant,
    limit: Duration,
    key: &'static str,
    fut: F,
) -> Result<F::Output, Cut> {
    let limit_at = Instant::now() + limit;
    if limit_at < deadline {
        timeout_at(limit_at, fut)
            .await
            .map_err(|_| Cut::Limit { after: limit, key })
    } else {
        timeout_at(deadline, fut).await.map_err(|_| Cut::Deadline)
    }
}

/// `1s`, `250ms`.
pub(crate) fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Milliseconds as a measurement value.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `latency_p50`, `latency_p95` (held to `< limit`), `latency_p99`, `latency_max` and
/// `samples`. No samples: the p95 measurement is missing and fails its threshold.
pub(crate) fn latency_measurements(samples: &[Duration], limit: Duration) -> Vec<Measurement> {
    let max = samples.iter().max().copied();
    vec![
        Measurement::percentile_ms("latency_p50", samples, 0.50),
        Measurement::percentile_ms("latency_p95", samples, 0.95)
            .with_threshold(Threshold::lt(ms(limit))),
        Measurement::percentile_ms("latency_p99", samples, 0.99),
        match max {
            Some(d) => Measurement::duration("latency_max", d),
            None => Measurement::missing("latency_max", Unit::Milliseconds),
        },
        count("samples", samples.len() as u64),
    ]
}

/// A plain count measurement.
pub(crate) fn count(name: &str, n: u64) -> Measurement {
    Measurement::new(name, n as f64, Unit::Count)
}

/// A 0/1 flag measurement.
pub(crate) fn flag(name: &str, yes: bool) -> Measurement {
    Measurement::new(name, if yes { 1.0 } else { 0.0 }, Unit::Count)
}

/// `major.minor.patch` as one number, `major * 10000 + minor * 100 + patch`, the way
/// PostgreSQL's `server_version_num` encodes versions: `2.42.0+ds` is 24200, `1.18.3` is
/// 11803. `None` when the text does not start with a number.
#[cfg_attr(not(any(feature = "qdrant", feature = "prometheus")), allow(dead_code))]
pub(crate) fn version_number(version: &str) -> Option<f64> {
    let core = version
        .trim()
        .trim_start_matches('v')
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0).min(99);
    let patch = parts.next().flatten().unwrap_or(0).min(99);
    Some(f64::from(major) * 10_000.0 + f64::from(minor) * 100.0 + f64::from(patch))
}

/// `server_version` measurement from version text, if it parses.
#[cfg_attr(not(any(feature = "qdrant", feature = "prometheus")), allow(dead_code))]
pub(crate) fn version_measurement(version: &str) -> Option<Measurement> {
    version_number(version).map(|v| Measurement::new("server_version", v, Unit::Count))
}

/// A fresh name for a temporary object: `citadel_itest_<run>_<target>_<what>_<n>`; see
/// [`citadel_itest_core::temp::temp_name`] (its age can be read back from it).
#[cfg_attr(not(any(feature = "postgres", feature = "qdrant")), allow(dead_code))]
pub(crate) fn temp_name(run_id: &str, target: &str, what: &str) -> String {
    citadel_itest_core::temp::temp_name(run_id, target, what)
}

/// Every temporary object this tester creates starts with this prefix.
pub const TEMP_PREFIX: &str = citadel_itest_core::temp::TEMP_PREFIX;

/// A random value for wrong credentials, made once per process: never the real secret, never
/// printed (it is registered with the redactor all the same).
pub(crate) fn wrong_secret() -> String {
    use std::hash::{BuildHasher, Hasher};
    static WRONG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    WRONG
        .get_or_init(|| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos(),
            );
            let value = format!("citadel-itest-wrong-{:016x}", h.finish());
            citadel_itest_core::config::register_secret(&value);
            value
        })
        .clone()
}

/// A port on 127.0.0.1 nothing listens on (bound and released a moment ago).
pub(crate) fn closed_loopback_port() -> io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    drop(listener);
    Ok(port)
}

/// A loopback listener that accepts connections and never answers, until dropped.
pub(crate) struct SilentListener {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl SilentListener {
    pub(crate) async fn start() -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        Ok(SilentListener { addr, task })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for SilentListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The fault probes' local endpoints could not be set up: the harness, not the service.
pub(crate) fn probe_setup_error(what: &str, e: &io::Error) -> Outcome {
    Outcome::error(
        ErrorKind::Harness,
        format!("set up {what} on 127.0.0.1: {}", error_chain(e)),
    )
}

/// Configuration problems as one failure message naming the target.
pub(crate) fn problems_outcome(kind: &str, name: &str, problems: &[Problem]) -> Outcome {
    let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
    Outcome::failed(format!(
        "{kind} {name} is misconfigured: {}",
        list.join("; ")
    ))
}

/// Resolve `host:port` bounded by `limit` and the deadline; `Ok(addrs)` or a finished outcome.
pub(crate) async fn resolve(
    step: &str,
    host: &str,
    port: u16,
    deadline: Instant,
    limit: Duration,
) -> Result<(Vec<SocketAddr>, Duration), Outcome> {
    let started = Instant::now();
    match within(
        deadline,
        limit,
        "connect_timeout",
        tokio::net::lookup_host((host, port)),
    )
    .await
    {
        Err(cut) => Err(cut.outcome(step)),
        Ok(Err(e)) => Err(Outcome::failed(format!("{step}: {}", io_error(&e)))),
        Ok(Ok(addrs)) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                Err(Outcome::failed(format!("{step}: no addresses")))
            } else {
                Ok((addrs, started.elapsed()))
            }
        }
    }
}

/// Open a TCP connection to the first address that accepts; bounded.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) async fn tcp_connect(
    step: &str,
    addrs: &[SocketAddr],
    deadline: Instant,
    limit: Duration,
) -> Result<Duration, Outcome> {
    let started = Instant::now();
    let mut errors = Vec::new();
    for addr in addrs {
        match within(
            deadline,
            limit,
            "connect_timeout",
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Err(cut) => return Err(cut.outcome(&format!("{step} {addr}"))),
            Ok(Ok(_stream)) => return Ok(started.elapsed()),
            Ok(Err(e)) => errors.push(format!("{addr}: {}", io_error(&e))),
        }
    }
    Err(Outcome::failed(format!("{step} {}", errors.join("; "))))
}

/// Classify an I/O error: well-known kinds as fixed words, the rest as the redacted chain.
pub(crate) fn io_error(err: &io::Error) -> String {
    citadel_itest_core::io_error_text(err)
}

/// The words of the first well-known I/O error in an error's source chain.
#[cfg_attr(not(any(feature = "qdrant", feature = "prometheus")), allow(dead_code))]
pub(crate) fn io_words_in_chain(err: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    citadel_itest_core::io_error_words_in_chain(err)
}

/// Classify an HTTP client error by the first I/O error in its chain; else its redacted chain
/// (without the URL, which the caller prints redacted).
#[cfg(any(feature = "qdrant", feature = "prometheus"))]
pub(crate) fn http_error(err: reqwest::Error) -> String {
    if err.is_timeout() {
        return "timed out".to_string();
    }
    if let Some(words) = io_words_in_chain(&err) {
        return words.to_string();
    }
    // hyper-util reports a refused connect as "tcp connect error" with the io error inside;
    // some versions keep only its text.
    let chain = error_chain(&err.without_url());
    if chain.to_ascii_lowercase().contains("connection refused") {
        return "connection refused".to_string();
    }
    chain
}

/// A body excerpt fit for a message: one line, at most 200 characters, secrets redacted; only
/// the first few KiB of the body are looked at.
#[cfg(any(feature = "qdrant", feature = "prometheus"))]
pub(crate) fn excerpt(body: &[u8]) -> String {
    citadel_itest_core::http::excerpt(body)
}

/// A fault probe ended otherwise than expected: say what was expected.
#[cfg(any(feature = "qdrant", feature = "prometheus"))]
pub(crate) fn expected(outcome: Outcome, what: &str) -> Outcome {
    match outcome {
        Outcome::Failed {
            message,
            measurements,
        } => Outcome::Failed {
            message: format!("{message} (expected {what})"),
            measurements,
        },
        other => other,
    }
}

/// One HTTP answer: status, body (at most the body cap), latency (until the whole body
/// arrived).
#[cfg(any(feature = "qdrant", feature = "prometheus"))]
pub(crate) struct Reply {
    pub(crate) status: reqwest::StatusCode,
    pub(crate) body: Vec<u8>,
    pub(crate) time: Duration,
}

#[cfg(any(feature = "qdrant", feature = "prometheus"))]
impl Reply {
    /// The body parsed into `T`, the shape a healthy server answers with; otherwise Failed,
    /// naming the field that is wrong: `<step>: HTTP 200 is not <what>: `result` is missing:
    /// <excerpt>`.
    pub(crate) fn parse<T: serde::de::DeserializeOwned>(
        &self,
        step: &str,
        what: &str,
    ) -> Result<T, Outcome> {
        citadel_itest_core::http::parse_json(&self.body).map_err(|e| {
            Outcome::failed(format!(
                "{step}: HTTP {} is not {what}: {e}: {}",
                self.status.as_u16(),
                excerpt(&self.body)
            ))
        })
    }

    /// HTTP 200 with exactly `text` (surrounding white space aside), the way the real server
    /// answers a health or readiness probe; otherwise Failed naming what came back.
    pub(crate) fn expect_text(&self, step: &str, text: &str) -> Result<(), Outcome> {
        let body = self.body.trim_ascii();
        if self.status == reqwest::StatusCode::OK && body == text.as_bytes() {
            return Ok(());
        }
        Err(Outcome::failed(format!(
            "{step}: HTTP {} with \"{}\", expected HTTP 200 with \"{text}\"",
            self.status.as_u16(),
            excerpt(body)
        )))
    }
}

/// Send a request and read its body, bounded by `limit` (`request_timeout`), the deadline and
/// `max_body` bytes, through the core's bounded reader. The client's own timeout counts as the
/// same bound. What it ends in names the bound that was hit: `no answer within 2s
/// (request_timeout)` before the headers, `HTTP 200: body not finished within 2s (…)
/// (request_timeout)` or `HTTP 200: body over 4 MiB` after them.
#[cfg(any(feature = "qdrant", feature = "prometheus"))]
pub(crate) async fn send(
    deadline: Instant,
    limit: Duration,
    max_body: usize,
    step: &str,
    request: reqwest::RequestBuilder,
) -> Result<Reply, Outcome> {
    use citadel_itest_core::http::{BodyError, BodyLimit, read_body};

    let started = Instant::now();
    let limit_at = started + limit;
    let (bound_at, cut, allowed) = if limit_at < deadline {
        (
            limit_at,
            Cut::Limit {
                after: limit,
                key: "request_timeout",
            },
            limit,
        )
    } else {
        (
            deadline,
            Cut::Deadline,
            deadline.saturating_duration_since(started),
        )
    };
    let resp = match timeout_at(bound_at, request.send()).await {
        Err(_) => return Err(cut.outcome(step)),
        Ok(Err(e)) if e.is_timeout() => {
            return Err(Cut::Limit {
                after: limit,
                key: "request_timeout",
            }
            .outcome(step));
        }
        Ok(Err(e)) => return Err(Outcome::failed(format!("{step}: {}", http_error(e)))),
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    let body_limit = BodyLimit::until(bound_at)
        .max_bytes(max_body)
        .allowed(allowed);
    match read_body(resp, &body_limit).await {
        Ok(body) => Ok(Reply {
            status,
            body,
            time: started.elapsed(),
        }),
        Err(e @ BodyError::Unfinished { .. }) => Err(match cut {
            Cut::Limit { key, .. } => {
                Outcome::failed(format!("{step}: HTTP {}: {e} ({key})", status.as_u16()))
            }
            Cut::Deadline => Outcome::error(
                ErrorKind::Timeout,
                format!(
                    "{step}: HTTP {}: {e}: timed out at the check's deadline",
                    status.as_u16()
                ),
            ),
        }),
        Err(e) => Err(Outcome::failed(format!(
            "{step}: HTTP {}: {e}",
            status.as_u16()
        ))),
    }
}

/// What a fault probe's request ended in.
#[cfg(any(feature = "qdrant", feature = "prometheus"))]
pub(crate) enum ProbeEnd {
    /// Refused, as expected for a closed port.
    Refused(Duration),
    /// Given up at the configured bound, as expected for a silent listener.
    TimedOut(Duration),
    /// Anything else: the outcome to report.
    Other(Outcome),
}

/// Send a fault probe bounded by `limit` (plus a little slack, so the client's own timeout is
/// what ends it) and classify how it ended.
#[cfg(any(feature = "qdrant", feature = "prometheus"))]
pub(crate) async fn probe_http(
    deadline: Instant,
    limit: Duration,
    step: &str,
    request: reqwest::RequestBuilder,
) -> ProbeEnd {
    let started = Instant::now();
    let slack = Duration::from_millis(500);
    match within(deadline, limit + slack, "request_timeout", request.send()).await {
        Err(Cut::Deadline) => ProbeEnd::Other(timed_out(step)),
        Err(Cut::Limit { .. }) => ProbeEnd::Other(Outcome::failed(format!(
            "{step}: the client did not give up at request_timeout ({})",
            fmt_duration(limit)
        ))),
        Ok(Ok(r)) => ProbeEnd::Other(Outcome::error(
            ErrorKind::Harness,
            format!(
                "{step}: something answered HTTP {}; cannot probe",
                r.status()
            ),
        )),
        Ok(Err(e)) if e.is_timeout() => ProbeEnd::TimedOut(started.elapsed()),
        Ok(Err(e)) => {
            let words = http_error(e);
            if words == "connection refused" {
                ProbeEnd::Refused(started.elapsed())
            } else {
                ProbeEnd::Other(Outcome::failed(format!("{step}: {words}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_become_numbers() {
        assert_eq!(version_number("2.42.0+ds"), Some(24200.0));
        assert_eq!(version_number("1.18.3"), Some(11803.0));
        assert_eq!(version_number("v3.1"), Some(30100.0));
        assert_eq!(version_number("dev"), None);
        assert_eq!(version_number(""), None);
    }

    #[test]
    fn temp_names_are_unique_short_identifiers() {
        let a = temp_name("r0abc1234", "main-db", "ops");
        let b = temp_name("r0abc1234", "main-db", "ops");
        assert_ne!(a, b);
        assert!(a.starts_with("citadel_itest_r0abc1234_main_db_ops_"), "{a}");
        let long = temp_name("r0abc1234", &"x".repeat(100), "perf");
        assert!(long.len() <= 63, "{long}");
        assert!(
            long.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        );
    }

    #[test]
    fn latency_without_samples_fails_its_threshold() {
        let ms = latency_measurements(&[], Duration::from_millis(200));
        let outcome = Outcome::from_measurements(ms);
        assert!(!outcome.is_passed());
        let ms = latency_measurements(
            &[Duration::from_millis(1), Duration::from_millis(3)],
            Duration::from_millis(200),
        );
        assert!(Outcome::from_measurements(ms).is_passed());
    }

    #[tokio::test]
    async fn limits_and_deadlines_are_told_apart() {
        let far = Instant::now() + Duration::from_secs(60);
        let cut = within(far, Duration::from_millis(10), "request_timeout", async {
            tokio::time::sleep(Duration::from_secs(5)).await
        })
        .await
        .unwrap_err();
        assert!(matches!(
            cut,
            Cut::Limit {
                key: "request_timeout",
                ..
            }
        ));
        assert_eq!(
            cut.outcome("query").message(),
            Some("query: no answer within 10ms (request_timeout)")
        );
        let near = Instant::now() + Duration::from_millis(10);
        let cut = within(near, Duration::from_secs(5), "request_timeout", async {
            tokio::time::sleep(Duration::from_secs(5)).await
        })
        .await
        .unwrap_err();
        assert_eq!(cut, Cut::Deadline);
        assert_eq!(
            cut.outcome("query").status(),
            citadel_itest_core::Status::Error
        );
    }

    #[tokio::test]
    async fn silent_listener_accepts_and_never_answers() {
        use tokio::io::AsyncReadExt;
        let l = SilentListener::start().await.unwrap();
        let mut s = tokio::net::TcpStream::connect(l.addr()).await.unwrap();
        let mut buf = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_millis(50), s.read(&mut buf)).await;
        assert!(r.is_err(), "the listener answered");
        let port = closed_loopback_port().unwrap();
        let e = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap_err();
        assert_eq!(io_error(&e), "connection refused");
    }
}
