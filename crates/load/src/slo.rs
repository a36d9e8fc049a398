//! SLO thresholds: `<metric> [<stat>] <op> <value>[<unit>]`, parsed once when the config is
//! validated and evaluated against a [`LoadResult`].
//!
//! ```
//! use citadel_itest_load::slo::Threshold;
//!
//! let t = Threshold::parse("http_req_duration p95 < 200ms").unwrap();
//! assert_eq!(t.limit, 200.0);
//! let err = Threshold::parse("http_req_duration p95 < 200").unwrap_err();
//! assert!(err.to_string().contains("needs a unit"), "{err}");
//! ```
//!
//! Metrics and their units:
//!
//! | metric | stat | value |
//! |---|---|---|
//! | `http_req_duration`, `http_req_service`, `ttft`, `itl`, `tpot`, `e2e` | required: `p50` `p90` `p95` `p99` `p99.9` `p99.99` `med` `min` `max` `avg` (`mean`) | a duration with a unit: `us`, `ms`, `s`, `m` |
//! | `output_tps` (tokens/s of each stream) | required, as above | tokens/s: `40`, `40/s` |
//! | `http_reqs`, `errors`, `dropped_iterations` | none | a count |
//! | `rps`, `output_tokens_per_s` (whole run) | none | per second: `50`, `50/s` |
//! | `error_rate`, `goodput` | none | a percent `1%` or a ratio `0.01` (the same) |
//! | `memory_mb` | required: `max` or `avg` | MiB: `2048`, `2048MB`, `2GB` (GB = 1024 MiB) |
//! | `cpu_percent` | required: `max` or `avg` | percent of one core: `50` or `50%` |
//!
//! Operators: `<`, `<=`, `>`, `>=`, `==`.

use std::fmt;

use citadel_itest_core::config::PerformanceTargets;
use citadel_itest_core::{Comparison, Measurement, Unit};
use serde::{Deserialize, Serialize};

use crate::result::{HistMetric, LoadResult, Percentiles, fmt_value};

/// What a threshold measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Metric {
    /// A histogram metric; needs a [`Stat`].
    Hist(HistMetric),
    /// `http_reqs`: requests that finished.
    HttpReqs,
    /// `rps`: requests per second over the run.
    Rps,
    /// `error_rate`: failed requests over requests.
    ErrorRate,
    /// `errors`: failed requests.
    Errors,
    /// `dropped_iterations`: open-model iterations never sent.
    DroppedIterations,
    /// `output_tokens_per_s`: output tokens of all completed streams per second of the run.
    OutputTokensPerS,
    /// `goodput`: requests that were completed streams meeting the goodput bounds, over
    /// requests.
    Goodput,
    /// `memory_mb`: resident memory of the system under test, MiB; needs `max` or `avg`.
    MemoryMb,
    /// `cpu_percent`: CPU of the system under test, percent of one core; needs `max` or
    /// `avg`.
    CpuPercent,
}

/// How a metric's value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Duration,
    TokensPerS,
    PerS,
    Count,
    Rate,
    Memory,
    Cpu,
}

impl Metric {
    const NAMED: [Metric; 9] = [
        Metric::HttpReqs,
        Metric::Rps,
        Metric::ErrorRate,
        Metric::Errors,
        Metric::DroppedIterations,
        Metric::OutputTokensPerS,
        Metric::Goodput,
        Metric::MemoryMb,
        Metric::CpuPercent,
    ];

    /// The name in thresholds.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Hist(m) => m.name(),
            Metric::HttpReqs => "http_reqs",
            Metric::Rps => "rps",
            Metric::ErrorRate => "error_rate",
            Metric::Errors => "errors",
            Metric::DroppedIterations => "dropped_iterations",
            Metric::OutputTokensPerS => "output_tokens_per_s",
            Metric::Goodput => "goodput",
            Metric::MemoryMb => "memory_mb",
            Metric::CpuPercent => "cpu_percent",
        }
    }

    /// The metric named `name`.
    pub fn from_name(name: &str) -> Option<Metric> {
        HistMetric::from_name(name)
            .map(Metric::Hist)
            .or_else(|| Metric::NAMED.into_iter().find(|m| m.name() == name))
    }

    fn all_names() -> String {
        HistMetric::ALL
            .iter()
            .map(|m| m.name())
            .chain(Metric::NAMED.iter().map(|m| m.name()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn kind(self) -> Kind {
        match self {
            Metric::Hist(HistMetric::OutputTps) => Kind::TokensPerS,
            Metric::Hist(_) => Kind::Duration,
            Metric::HttpReqs | Metric::Errors | Metric::DroppedIterations => Kind::Count,
            Metric::Rps => Kind::PerS,
            Metric::OutputTokensPerS => Kind::TokensPerS,
            Metric::ErrorRate | Metric::Goodput => Kind::Rate,
            Metric::MemoryMb => Kind::Memory,
            Metric::CpuPercent => Kind::Cpu,
        }
    }

    /// The unit of values and limits: `ms`, `tokens/s`, `rps`, `count`, `%`, `MiB`.
    pub fn unit(self) -> &'static str {
        match self.kind() {
            Kind::Duration => "ms",
            Kind::TokensPerS => "tokens/s",
            Kind::PerS => "rps",
            Kind::Count => "count",
            Kind::Rate | Kind::Cpu => "%",
            Kind::Memory => "MiB",
        }
    }

    fn suffix(self) -> &'static str {
        match self.kind() {
            Kind::Duration => "ms",
            Kind::TokensPerS => " tokens/s",
            Kind::PerS => "/s",
            Kind::Count => "",
            Kind::Rate | Kind::Cpu => "%",
            Kind::Memory => " MiB",
        }
    }
}

/// Which statistic of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Stat {
    /// `p50` (also `med`).
    P50,
    /// `p90`.
    P90,
    /// `p95`.
    P95,
    /// `p99`.
    P99,
    /// `p99.9`.
    P99_9,
    /// `p99.99`.
    P99_99,
    /// `min`.
    Min,
    /// `max`.
    Max,
    /// `avg` (also `mean`).
    Mean,
}

impl Stat {
    const HIST: &'static str = "p50, p90, p95, p99, p99.9, p99.99, med, min, max, avg, mean";

    /// The name as written in thresholds.
    pub fn name(self) -> &'static str {
        match self {
            Stat::P50 => "p50",
            Stat::P90 => "p90",
            Stat::P95 => "p95",
            Stat::P99 => "p99",
            Stat::P99_9 => "p99.9",
            Stat::P99_99 => "p99.99",
            Stat::Min => "min",
            Stat::Max => "max",
            Stat::Mean => "avg",
        }
    }

    /// Parse `p95`, `p(95)`, `p99.9`, `med`, `min`, `max`, `avg`, `mean`.
    pub fn parse(s: &str) -> Option<Stat> {
        let s = s.to_ascii_lowercase();
        let p = s
            .strip_prefix("p(")
            .and_then(|r| r.strip_suffix(')'))
            .or_else(|| s.strip_prefix('p'));
        if let Some(p) = p {
            return match p {
                "50" => Some(Stat::P50),
                "90" => Some(Stat::P90),
                "95" => Some(Stat::P95),
                "99" => Some(Stat::P99),
                "99.9" => Some(Stat::P99_9),
                "99.99" => Some(Stat::P99_99),
                _ => None,
            };
        }
        match s.as_str() {
            "med" | "median" => Some(Stat::P50),
            "min" => Some(Stat::Min),
            "max" => Some(Stat::Max),
            "avg" | "mean" => Some(Stat::Mean),
            _ => None,
        }
    }

    fn of(self, p: &Percentiles) -> Option<f64> {
        match self {
            Stat::P50 => p.p50,
            Stat::P90 => p.p90,
            Stat::P95 => p.p95,
            Stat::P99 => p.p99,
            Stat::P99_9 => p.p99_9,
            Stat::P99_99 => p.p99_99,
            Stat::Min => p.min,
            Stat::Max => p.max,
            Stat::Mean => p.mean,
        }
    }
}

/// A threshold's comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
}

impl Op {
    /// As written.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
        }
    }

    /// Whether `value op limit` holds.
    pub fn holds(self, value: f64, limit: f64) -> bool {
        match self {
            Op::Lt => value < limit,
            Op::Le => value <= limit,
            Op::Gt => value > limit,
            Op::Ge => value >= limit,
            Op::Eq => value == limit,
        }
    }

    fn comparison(self) -> Comparison {
        match self {
            Op::Lt => Comparison::Lt,
            Op::Le => Comparison::Le,
            Op::Gt => Comparison::Gt,
            Op::Ge => Comparison::Ge,
            Op::Eq => Comparison::Eq,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A threshold that does not parse: the text and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("threshold `{text}`: {problem}")]
#[non_exhaustive]
pub struct ThresholdError {
    /// The threshold as written.
    pub text: String,
    /// What is wrong.
    pub problem: String,
}

/// A parsed threshold.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Threshold {
    /// The text as written.
    pub text: String,
    /// The metric.
    pub metric: Metric,
    /// The statistic, for metrics that have one.
    pub stat: Option<Stat>,
    /// The comparison.
    pub op: Op,
    /// The limit in the metric's [`Metric::unit`] (`2s` is 2000, `1%` and `0.01` are 1).
    pub limit: f64,
    /// The limit as written (`2s`, `1%`), for messages.
    pub limit_text: String,
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.label(), self.op, self.limit_text)
    }
}

impl Threshold {
    /// Parse `<metric> [<stat>] <op> <value>[<unit>]`; see the module docs for what each
    /// metric takes.
    pub fn parse(text: &str) -> Result<Threshold, ThresholdError> {
        let fail = |problem: String| ThresholdError {
            text: text.to_string(),
            problem,
        };
        let t = text.trim();
        let at = t.find(['<', '>', '=', '!']).ok_or_else(|| {
            fail(
                "no comparison: write `<metric> [<stat>] <op> <value>`, op one of <, <=, >, >=, =="
                    .into(),
            )
        })?;
        let (lhs, rest) = t.split_at(at);
        let (op, len) = if rest.starts_with("<=") {
            (Op::Le, 2)
        } else if rest.starts_with(">=") {
            (Op::Ge, 2)
        } else if rest.starts_with("==") {
            (Op::Eq, 2)
        } else if rest.starts_with('<') {
            (Op::Lt, 1)
        } else if rest.starts_with('>') {
            (Op::Gt, 1)
        } else {
            let op: String = rest.chars().take_while(|c| "<>=!".contains(*c)).collect();
            return Err(fail(format!(
                "`{op}` is not a comparison: use <, <=, >, >= or =="
            )));
        };
        let words: Vec<&str> = lhs.split_whitespace().collect();
        let (name, stat) = match words.as_slice() {
            [] => return Err(fail(format!("no metric before `{op}`"))),
            [m] => (*m, None),
            [m, s] => (*m, Some(*s)),
            _ => {
                return Err(fail(format!("`{}` is not `<metric> [<stat>]`", lhs.trim())));
            }
        };
        let metric = Metric::from_name(name).ok_or_else(|| {
            fail(format!(
                "unknown metric `{name}` (known: {})",
                Metric::all_names()
            ))
        })?;
        let stat = match (metric.kind(), stat) {
            (Kind::Duration | Kind::TokensPerS, Some(s)) if matches!(metric, Metric::Hist(_)) => {
                Some(Stat::parse(s).ok_or_else(|| {
                    fail(format!(
                        "unknown statistic `{s}` for {name} (use one of {})",
                        Stat::HIST
                    ))
                })?)
            }
            (_, None) if matches!(metric, Metric::Hist(_)) => {
                return Err(fail(format!(
                    "{name} needs a statistic: `{name} p95 {op} ...` (one of {})",
                    Stat::HIST
                )));
            }
            (Kind::Memory | Kind::Cpu, Some(s)) => match Stat::parse(s) {
                Some(s @ (Stat::Max | Stat::Mean)) => Some(s),
                _ => {
                    return Err(fail(format!(
                        "unknown statistic `{s}` for {name} (use max or avg)"
                    )));
                }
            },
            (Kind::Memory | Kind::Cpu, None) => {
                return Err(fail(format!(
                    "{name} needs a statistic: `{name} max {op} ...` or `{name} avg {op} ...`"
                )));
            }
            (_, Some(s)) => {
                return Err(fail(format!(
                    "{name} takes no statistic (`{s}`): write `{name} {op} <value>`"
                )));
            }
            (_, None) => None,
        };
        let value = rest[len..].trim();
        if value.is_empty() {
            return Err(fail(format!("no value after `{op}`")));
        }
        let split = value
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
            .unwrap_or(value.len());
        let (number, unit) = (&value[..split], value[split..].trim());
        if number.is_empty() {
            return Err(fail(format!("`{value}` is not a number")));
        }
        let n: f64 = number
            .parse()
            .map_err(|_| fail(format!("`{number}` is not a number")))?;
        if !n.is_finite() || n < 0.0 {
            return Err(fail(format!("`{number}` must be a number of at least 0")));
        }
        let limit = limit_of(metric, n, unit).map_err(fail)?;
        Ok(Threshold {
            text: text.to_string(),
            metric,
            stat,
            op,
            limit,
            limit_text: format!("{number}{unit}"),
        })
    }

    /// `http_req_duration p95`, `rps`.
    pub fn label(&self) -> String {
        match self.stat {
            Some(s) => format!("{} {}", self.metric.name(), s.name()),
            None => self.metric.name().to_string(),
        }
    }

    /// The observed value in [`Metric::unit`], or why there is none.
    fn observe(&self, r: &LoadResult) -> Result<f64, String> {
        let not_stream = "no samples: not a stream scenario";
        match self.metric {
            Metric::Hist(m) => {
                let p = match r.metrics.get(m.name()) {
                    None if m.is_stream() && r.stream.is_none() => return Err(not_stream.into()),
                    None => return Err("no samples".into()),
                    Some(p) => p,
                };
                if p.count == 0 {
                    return Err(match m {
                        HistMetric::Duration | HistMetric::Service => {
                            "no samples: no request finished".into()
                        }
                        HistMetric::Tpot => {
                            "no samples: no completed stream had two tokens or more".into()
                        }
                        _ => "no samples: no stream completed".into(),
                    });
                }
                self.stat
                    .unwrap_or(Stat::P95)
                    .of(p)
                    .ok_or_else(|| "no samples".into())
            }
            Metric::HttpReqs => Ok(r.counts.requests as f64),
            Metric::Rps => r
                .derived
                .rps
                .ok_or_else(|| "no samples: the run lasted 0s".into()),
            Metric::ErrorRate => r
                .derived
                .error_rate
                .map(|e| e * 100.0)
                .ok_or_else(|| "no samples: no request finished".into()),
            Metric::Errors => Ok(r.counts.errors_total() as f64),
            Metric::DroppedIterations => Ok(r.counts.dropped as f64),
            Metric::OutputTokensPerS => match &r.stream {
                None => Err(not_stream.into()),
                Some(s) => s
                    .output_tokens_per_s
                    .ok_or_else(|| "no samples: the run lasted 0s".into()),
            },
            Metric::Goodput => match &r.stream {
                None => Err(not_stream.into()),
                Some(s) => s
                    .goodput_rate
                    .map(|g| g * 100.0)
                    .ok_or_else(|| "no samples: no request finished".into()),
            },
            Metric::MemoryMb | Metric::CpuPercent => {
                let Some(res) = &r.resources else {
                    return Err(
                        "no samples: resources were not sampled (no `resources:` in the scenario)"
                            .into(),
                    );
                };
                let max = self.stat == Some(Stat::Max);
                let v = match (self.metric, max) {
                    (Metric::MemoryMb, true) => res.memory_mb_peak,
                    (Metric::MemoryMb, false) => res.memory_mb_mean,
                    (_, true) => res.cpu_percent_peak,
                    (_, false) => res.cpu_percent_mean,
                };
                v.ok_or_else(|| match &res.error {
                    Some(e) => format!("no samples of {} ({e})", res.source),
                    None => format!("no samples of {}", res.source),
                })
            }
        }
    }

    /// The verdict on `result`. No value to compare (no samples) fails.
    pub fn evaluate(&self, result: &LoadResult) -> ThresholdResult {
        let label = self.label();
        let (observed, passed, message) = match self.observe(result) {
            Ok(v) => {
                let passed = self.op.holds(v, self.limit);
                let message = format!(
                    "{label} = {}{}, threshold {} {}",
                    fmt_value(v),
                    self.metric.suffix(),
                    self.op,
                    self.limit_text
                );
                (Some(v), passed, message)
            }
            Err(why) => (
                None,
                false,
                format!("{label}: {why}, threshold {} {}", self.op, self.limit_text),
            ),
        };
        ThresholdResult {
            text: self.text.clone(),
            metric: label,
            op: self.op.as_str().into(),
            observed,
            limit: self.limit,
            unit: self.metric.unit().into(),
            passed,
            message,
        }
    }
}

/// The limit in the metric's unit, from a number and the unit written after it.
fn limit_of(metric: Metric, n: f64, unit: &str) -> Result<f64, String> {
    let name = metric.name();
    let wrong = |expected: &str| {
        if unit.is_empty() {
            format!("`{}` needs a unit: {expected}", fmt_value(n))
        } else {
            format!("`{unit}` is not a unit of {name}: {expected}")
        }
    };
    match metric.kind() {
        Kind::Duration => match unit {
            "us" | "µs" => Ok(n / 1000.0),
            "ms" => Ok(n),
            "s" => Ok(n * 1000.0),
            "m" | "min" => Ok(n * 60_000.0),
            _ => Err(wrong("us, ms, s or m")),
        },
        Kind::TokensPerS => match unit {
            "" | "/s" | "tokens/s" => Ok(n),
            _ => Err(wrong("tokens per second, `40` or `40/s`")),
        },
        Kind::PerS => match unit {
            "" | "/s" | "rps" => Ok(n),
            _ => Err(wrong("requests per second, `50` or `50/s`")),
        },
        Kind::Count => match unit {
            "" => Ok(n),
            _ => Err(wrong("a plain count")),
        },
        Kind::Rate => match unit {
            "%" if n <= 100.0 => Ok(n),
            "%" => Err(format!("{}% is over 100%", fmt_value(n))),
            "" if n <= 1.0 => Ok(n * 100.0),
            "" => Err(format!(
                "`{}` is not a ratio between 0 and 1: write a percent with `%` (`{}%`)",
                fmt_value(n),
                fmt_value(n)
            )),
            _ => Err(wrong("a percent (`1%`) or a ratio (`0.01`)")),
        },
        Kind::Memory => match unit {
            "" | "MB" | "MiB" => Ok(n),
            "GB" | "GiB" => Ok(n * 1024.0),
            _ => Err(wrong("MiB, `2048`, `2048MB` or `2GB`")),
        },
        Kind::Cpu => match unit {
            "" | "%" => Ok(n),
            _ => Err(wrong("percent of one core, `50` or `50%`")),
        },
    }
}

/// A threshold's verdict, as kept in the result and reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ThresholdResult {
    /// The threshold as written.
    pub text: String,
    /// The metric and statistic: `http_req_duration p95`.
    pub metric: String,
    /// The comparison: `<`, `<=`, `>`, `>=`, `==`.
    pub op: String,
    /// The observed value in `unit`; null when there were no samples.
    pub observed: Option<f64>,
    /// The limit in `unit`.
    pub limit: f64,
    /// `ms`, `tokens/s`, `rps`, `count`, `%` or `MiB`.
    pub unit: String,
    /// Whether it held. False without samples.
    pub passed: bool,
    /// `http_req_duration p95 = 312.4ms, threshold < 200ms`, or why there is no value.
    pub message: String,
}

impl ThresholdResult {
    /// As a core measurement named like `http_req_duration_p95` (`.` and spaces become
    /// `_`), with the threshold attached, so `Outcome::from_measurements` fails on it
    /// exactly when [`ThresholdResult::passed`] is false.
    pub fn to_measurement(&self) -> Measurement {
        let name: String = self
            .metric
            .chars()
            .map(|c| if c == ' ' || c == '.' { '_' } else { c })
            .collect();
        let unit = match self.unit.as_str() {
            "ms" => Unit::Milliseconds,
            "%" => Unit::Percent,
            "rps" => Unit::RequestsPerSecond,
            _ => Unit::Count,
        };
        let op = match self.op.as_str() {
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            _ => Op::Eq,
        };
        let threshold = citadel_itest_core::Threshold {
            op: op.comparison(),
            limit: self.limit,
        };
        let m = match self.observed {
            Some(v) => Measurement::new(name, v, unit),
            None => Measurement::missing(name, unit),
        };
        m.with_threshold(threshold)
    }
}

/// The thresholds used when a scenario gives none, from `performance_targets`:
/// `http_req_duration p95 < {latency_p95}` (for a stream scenario `ttft p95 < {latency_p95}`
/// instead: a whole generation is not meant to fit the latency target, its first token
/// is), `rps > {min_throughput_rps}`, `error_rate < 1%`, and when resources are sampled
/// `memory_mb max < {max_memory_mb}` and `cpu_percent avg < {max_cpu_percent}`.
pub fn default_thresholds(
    targets: &PerformanceTargets,
    stream: bool,
    resources: bool,
) -> Vec<Threshold> {
    let latency_ms = targets.latency_p95.as_secs_f64() * 1000.0;
    let latency_text = format!("{}ms", trim(latency_ms));
    let mut out = vec![
        made(
            Metric::Hist(if stream {
                HistMetric::Ttft
            } else {
                HistMetric::Duration
            }),
            Some(Stat::P95),
            Op::Lt,
            latency_ms,
            latency_text,
        ),
        made(
            Metric::Rps,
            None,
            Op::Gt,
            targets.min_throughput_rps,
            trim(targets.min_throughput_rps),
        ),
        made(Metric::ErrorRate, None, Op::Lt, 1.0, "1%".into()),
    ];
    if resources {
        out.push(made(
            Metric::MemoryMb,
            Some(Stat::Max),
            Op::Lt,
            targets.max_memory_mb as f64,
            targets.max_memory_mb.to_string(),
        ));
        out.push(made(
            Metric::CpuPercent,
            Some(Stat::Mean),
            Op::Lt,
            targets.max_cpu_percent,
            trim(targets.max_cpu_percent),
        ));
    }
    out
}

/// A number without trailing zeros and without rounding away precision.
fn trim(v: f64) -> String {
    let s = format!("{v}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn made(metric: Metric, stat: Option<Stat>, op: Op, limit: f64, limit_text: String) -> Threshold {
    let label = match stat {
        Some(s) => format!("{} {}", metric.name(), s.name()),
        None => metric.name().to_string(),
    };
    Threshold {
        text: format!("{label} {op} {limit_text}"),
        metric,
        stat,
        op,
        limit,
        limit_text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_convert_to_the_metric_unit() {
        let limit = |t: &str| Threshold::parse(t).unwrap().limit;
        assert_eq!(limit("http_req_duration p95 < 2s"), 2000.0);
        assert_eq!(limit("ttft p99.9 <= 500 ms"), 500.0);
        assert_eq!(limit("itl max < 250us"), 0.25);
        assert_eq!(limit("e2e avg < 1.5m"), 90_000.0);
        assert_eq!(limit("error_rate < 1%"), 1.0);
        assert_eq!(limit("error_rate < 0.01"), 1.0);
        assert_eq!(limit("goodput >= 95%"), 95.0);
        assert_eq!(limit("memory_mb max < 2GB"), 2048.0);
        assert_eq!(limit("cpu_percent avg < 50%"), 50.0);
        assert_eq!(limit("rps > 50/s"), 50.0);
    }

    #[test]
    fn defaults_round_trip_through_the_parser() {
        let targets = PerformanceTargets::default();
        for t in default_thresholds(&targets, true, true) {
            let again = Threshold::parse(&t.text).unwrap();
            assert_eq!(again, t, "{}", t.text);
        }
    }

    #[test]
    fn measurement_names_replace_dots() {
        let r = ThresholdResult {
            text: "x".into(),
            metric: "http_req_duration p99.9".into(),
            op: "==".into(),
            observed: Some(3.0),
            limit: 3.0,
            unit: "ms".into(),
            passed: true,
            message: String::new(),
        };
        let m = r.to_measurement();
        assert_eq!(m.name, "http_req_duration_p99_9");
        assert!(m.violation().is_none());
    }
}
