//! Verdicts, measurements and the per-check result record.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::check::{Category, CheckId};

/// What one check concluded.
///
/// `Failed` means the system under test is wrong; `Error` means the harness could not tell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// The check reached a verdict and the system behaved as required.
    Passed {
        /// Numbers measured on the way (latencies, counts, versions as numbers).
        measurements: Vec<Measurement>,
    },
    /// The check reached a verdict and the system is wrong.
    Failed {
        /// What was wrong, naming the target.
        message: String,
        /// Numbers measured on the way, including violated thresholds.
        measurements: Vec<Measurement>,
    },
    /// The check does not apply here; `reason` says why.
    Skipped {
        /// Why the check was not run.
        reason: String,
    },
    /// The harness could not evaluate the check.
    Error {
        /// Why it could not.
        kind: ErrorKind,
        /// Human-readable detail.
        message: String,
    },
}

impl Outcome {
    /// A pass with no measurements.
    pub fn passed() -> Self {
        Outcome::Passed {
            measurements: Vec::new(),
        }
    }

    /// A failure with a message.
    pub fn failed(message: impl Into<String>) -> Self {
        Outcome::Failed {
            message: message.into(),
            measurements: Vec::new(),
        }
    }

    /// A skip with a reason.
    pub fn skipped(reason: impl Into<String>) -> Self {
        Outcome::Skipped {
            reason: reason.into(),
        }
    }

    /// A harness error of the given kind.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Self {
        Outcome::Error {
            kind,
            message: message.into(),
        }
    }

    /// Verdict from measurements: `Passed` when every threshold holds, otherwise `Failed`
    /// listing each violated threshold. A thresholded measurement without a value (no samples)
    /// is a violation: thresholds never pass silently.
    pub fn from_measurements(measurements: Vec<Measurement>) -> Self {
        let violations: Vec<String> = measurements
            .iter()
            .filter_map(Measurement::violation)
            .collect();
        if violations.is_empty() {
            Outcome::Passed { measurements }
        } else {
            Outcome::Failed {
                message: violations.join("; "),
                measurements,
            }
        }
    }

    /// Attach more measurements (ignored for `Skipped` and `Error`).
    pub fn with_measurements(mut self, extra: impl IntoIterator<Item = Measurement>) -> Self {
        match &mut self {
            Outcome::Passed { measurements } | Outcome::Failed { measurements, .. } => {
                measurements.extend(extra)
            }
            _ => {}
        }
        self
    }

    /// The short status word used in reports: passed, failed, skipped, error.
    pub fn status(&self) -> Status {
        match self {
            Outcome::Passed { .. } => Status::Passed,
            Outcome::Failed { .. } => Status::Failed,
            Outcome::Skipped { .. } => Status::Skipped,
            Outcome::Error { .. } => Status::Error,
        }
    }

    /// The measurements, if the outcome carries any.
    pub fn measurements(&self) -> &[Measurement] {
        match self {
            Outcome::Passed { measurements } | Outcome::Failed { measurements, .. } => measurements,
            _ => &[],
        }
    }

    /// The failure message, skip reason or error message; `None` for a pass.
    pub fn message(&self) -> Option<&str> {
        match self {
            Outcome::Passed { .. } => None,
            Outcome::Failed { message, .. } | Outcome::Error { message, .. } => Some(message),
            Outcome::Skipped { reason } => Some(reason),
        }
    }

    /// True for `Passed`.
    pub fn is_passed(&self) -> bool {
        matches!(self, Outcome::Passed { .. })
    }
}

/// The four report statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Status {
    /// See [`Outcome::Passed`].
    Passed,
    /// See [`Outcome::Failed`].
    Failed,
    /// See [`Outcome::Skipped`].
    Skipped,
    /// See [`Outcome::Error`].
    Error,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Passed => "passed",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
            Status::Error => "error",
        })
    }
}

/// Why the harness could not reach a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The check did not finish within its timeout.
    Timeout,
    /// The run was cancelled (Ctrl-C, fail-fast or the global deadline) before it finished.
    Cancelled,
    /// The check panicked.
    Panicked,
    /// The check returned an error: it could not evaluate the target.
    Harness,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Panicked => "panicked",
            ErrorKind::Harness => "harness",
        })
    }
}

/// Unit of a [`Measurement`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Unit {
    /// Milliseconds.
    Milliseconds,
    /// Seconds.
    Seconds,
    /// Bytes.
    Bytes,
    /// A plain count.
    Count,
    /// Percent (0-100).
    Percent,
    /// Requests per second.
    RequestsPerSecond,
    /// A dimensionless ratio (0-1).
    Ratio,
}

impl Unit {
    /// Short suffix for display.
    pub fn suffix(self) -> &'static str {
        match self {
            Unit::Milliseconds => "ms",
            Unit::Seconds => "s",
            Unit::Bytes => "B",
            Unit::Count => "",
            Unit::Percent => "%",
            Unit::RequestsPerSecond => "rps",
            Unit::Ratio => "",
        }
    }
}

/// Comparison a [`Threshold`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Comparison {
    /// value < limit
    #[serde(rename = "<")]
    Lt,
    /// value <= limit
    #[serde(rename = "<=")]
    Le,
    /// value > limit
    #[serde(rename = ">")]
    Gt,
    /// value >= limit
    #[serde(rename = ">=")]
    Ge,
    /// value == limit
    #[serde(rename = "==")]
    Eq,
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Comparison::Lt => "<",
            Comparison::Le => "<=",
            Comparison::Gt => ">",
            Comparison::Ge => ">=",
            Comparison::Eq => "==",
        })
    }
}

/// A limit a measurement must respect, e.g. `< 200` (ms).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// How the value is compared with the limit.
    pub op: Comparison,
    /// The limit, in the measurement's unit.
    pub limit: f64,
}

impl Threshold {
    /// `value < limit`.
    pub fn lt(limit: f64) -> Self {
        Threshold {
            op: Comparison::Lt,
            limit,
        }
    }
    /// `value <= limit`.
    pub fn le(limit: f64) -> Self {
        Threshold {
            op: Comparison::Le,
            limit,
        }
    }
    /// `value > limit`.
    pub fn gt(limit: f64) -> Self {
        Threshold {
            op: Comparison::Gt,
            limit,
        }
    }
    /// `value >= limit`.
    pub fn ge(limit: f64) -> Self {
        Threshold {
            op: Comparison::Ge,
            limit,
        }
    }

    /// Whether `value` satisfies the threshold. NaN (no samples) never does.
    pub fn holds(&self, value: f64) -> bool {
        if value.is_nan() {
            return false;
        }
        match self.op {
            Comparison::Lt => value < self.limit,
            Comparison::Le => value <= self.limit,
            Comparison::Gt => value > self.limit,
            Comparison::Ge => value >= self.limit,
            Comparison::Eq => value == self.limit,
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op, fmt_number(self.limit))
    }
}

/// One number a check measured, optionally against a threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Name, snake_case: `latency_p95`, `connect_time`.
    pub name: String,
    /// The value; `None` when there were no samples to compute it from.
    pub value: Option<f64>,
    /// Unit of `value` and of the threshold's limit.
    pub unit: Unit,
    /// The limit the value must respect, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<Threshold>,
}

impl Measurement {
    /// A measurement without a threshold.
    pub fn new(name: impl Into<String>, value: f64, unit: Unit) -> Self {
        let value = if value.is_finite() { Some(value) } else { None };
        Measurement {
            name: name.into(),
            value,
            unit,
            threshold: None,
        }
    }

    /// A duration in milliseconds.
    pub fn duration(name: impl Into<String>, d: Duration) -> Self {
        Measurement::new(name, d.as_secs_f64() * 1000.0, Unit::Milliseconds)
    }

    /// A measurement that could not be computed (no samples); with a threshold it fails.
    pub fn missing(name: impl Into<String>, unit: Unit) -> Self {
        Measurement {
            name: name.into(),
            value: None,
            unit,
            threshold: None,
        }
    }

    /// The `q`-quantile (0..=1, nearest rank) of `samples` in milliseconds; missing when empty.
    pub fn percentile_ms(name: impl Into<String>, samples: &[Duration], q: f64) -> Self {
        match percentile(samples, q) {
            Some(d) => Measurement::duration(name, d),
            None => Measurement::missing(name, Unit::Milliseconds),
        }
    }

    /// Attach a threshold.
    pub fn with_threshold(mut self, threshold: Threshold) -> Self {
        self.threshold = Some(threshold);
        self
    }

    /// `None` when the threshold holds (or there is none), otherwise why it does not.
    pub fn violation(&self) -> Option<String> {
        let threshold = self.threshold?;
        match self.value {
            None => Some(format!(
                "{}: no samples (threshold {threshold}{})",
                self.name,
                self.unit.suffix()
            )),
            Some(v) if !threshold.holds(v) => Some(format!(
                "{} = {}{} violates threshold {threshold}{}",
                self.name,
                fmt_number(v),
                self.unit.suffix(),
                self.unit.suffix()
            )),
            Some(_) => None,
        }
    }
}

impl fmt::Display for Measurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.value {
            Some(v) => write!(f, "{}={}{}", self.name, fmt_number(v), self.unit.suffix())?,
            None => write!(f, "{}=n/a", self.name)?,
        }
        if let Some(t) = self.threshold {
            write!(f, " ({t}{})", self.unit.suffix())?;
        }
        Ok(())
    }
}

/// Nearest-rank quantile of unsorted samples; `None` when empty.
pub fn percentile(samples: &[Duration], q: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let q = q.clamp(0.0, 1.0);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Formats with at most 3 decimals and no trailing zeros.
pub(crate) fn fmt_number(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// The record of one executed (or cancelled) check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    /// The check's id.
    pub id: CheckId,
    /// The tester that produced the check.
    pub tester: String,
    /// The check's category.
    pub category: Category,
    /// The verdict.
    pub outcome: Outcome,
    /// Wall time from start to verdict, all attempts included.
    #[serde(with = "duration_ms")]
    pub duration: Duration,
    /// How many attempts were made (retries-until-ready).
    pub attempts: u32,
    /// Free-form details (server version, target, counts) for reports.
    #[serde(default)]
    pub details: BTreeMap<String, serde_json::Value>,
}

/// Returned by [`TestResult::into_result`] when a check did not pass.
#[derive(Debug, Clone, thiserror::Error)]
#[error("check {id} {status}: {message}")]
pub struct CheckFailed {
    /// The check's id.
    pub id: CheckId,
    /// failed or error.
    pub status: Status,
    /// The outcome's message.
    pub message: String,
}

impl TestResult {
    /// Panics with the outcome's message unless the check passed (for `#[tokio::test]`).
    #[track_caller]
    pub fn assert_passed(&self) {
        if !self.outcome.is_passed() {
            panic!(
                "check {} did not pass: {} ({})",
                self.id,
                self.outcome.status(),
                self.outcome.message().unwrap_or("")
            );
        }
    }

    /// `Ok(self)` when the check passed or was skipped, `Err` otherwise.
    pub fn into_result(self) -> Result<Self, CheckFailed> {
        match self.outcome.status() {
            Status::Passed | Status::Skipped => Ok(self),
            status => Err(CheckFailed {
                id: self.id.clone(),
                status,
                message: self.outcome.message().unwrap_or("").to_string(),
            }),
        }
    }

    /// Find a measurement by name.
    pub fn measurement(&self, name: &str) -> Option<&Measurement> {
        self.outcome.measurements().iter().find(|m| m.name == name)
    }
}

/// Serialises a `Duration` as fractional milliseconds.
pub mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialise as milliseconds (f64, microsecond precision).
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        let ms = (d.as_secs_f64() * 1_000_000.0).round() / 1000.0;
        s.serialize_f64(ms)
    }

    /// Deserialise from milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        Ok(Duration::from_secs_f64((ms / 1000.0).max(0.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_without_samples_fails() {
        let m = Measurement::percentile_ms("latency_p95", &[], 0.95)
            .with_threshold(Threshold::lt(200.0));
        let outcome = Outcome::from_measurements(vec![m]);
        assert_eq!(outcome.status(), Status::Failed);
        assert!(outcome.message().unwrap().contains("no samples"));
    }

    #[test]
    fn threshold_violation_names_value_and_limit() {
        let m = Measurement::new("latency_p95", 250.0, Unit::Milliseconds)
            .with_threshold(Threshold::lt(200.0));
        let outcome = Outcome::from_measurements(vec![m]);
        assert_eq!(
            outcome.message().unwrap(),
            "latency_p95 = 250ms violates threshold < 200ms"
        );
        let ok = Measurement::new("latency_p95", 150.0, Unit::Milliseconds)
            .with_threshold(Threshold::lt(200.0));
        assert!(Outcome::from_measurements(vec![ok]).is_passed());
    }

    #[test]
    fn nearest_rank_percentile() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 0.95), Some(Duration::from_millis(95)));
        assert_eq!(percentile(&samples, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&samples, 1.0), Some(Duration::from_millis(100)));
        assert_eq!(
            percentile(&samples[..1], 0.95),
            Some(Duration::from_millis(1))
        );
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn into_result_distinguishes_pass_and_fail() {
        let mut r = TestResult {
            id: CheckId::new("a.b"),
            tester: "a".into(),
            category: Category::Health,
            outcome: Outcome::passed(),
            duration: Duration::ZERO,
            attempts: 1,
            details: BTreeMap::new(),
        };
        assert!(r.clone().into_result().is_ok());
        r.outcome = Outcome::failed("down");
        let err = r.into_result().unwrap_err();
        assert_eq!(err.to_string(), "check a.b failed: down");
    }
}
