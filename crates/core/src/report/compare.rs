//! Saved reports: read a `report.json` back ([`read_report`]), re-render it as JUnit
//! ([`render_junit`]; HTML and Markdown are [`render_html`](super::render_html) and
//! [`render_markdown`](super::render_markdown)), and compare two runs ([`compare_reports`]).
//!
//! A comparison lists the checks whose status changed (passed → failed or error is a
//! regression), the checks only one run has, and the measurements that moved by more than the
//! tolerance, judged by direction: a measurement with a threshold is better on the threshold's
//! side (`<`, `<=`: lower is better; `>`, `>=`: higher is better; `==`: any change is worse);
//! otherwise by its name and unit (latencies, durations, errors, memory and CPU: lower is better;
//! rates, throughput, goodput and success: higher is better). Load scenarios' p50/p95/p99,
//! requests per second and error rate are compared as well.
//!
//! ```
//! use citadel_itest_core::report::{CompareOptions, JsonReport, compare_reports};
//! let base: JsonReport = serde_json::from_str(include_str!("../../tests/golden/report.json")).unwrap();
//! let diff = compare_reports(&base, &base.clone(), &CompareOptions::default());
//! assert!(!diff.has_regression());
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;

use super::json::{JsonReport, JsonResult, REPORT_SCHEMA};
use super::junit::build_junit;
use crate::check::{Category, CheckId};
use crate::outcome::{Comparison, ErrorKind, Measurement, Outcome, Status, TestResult, Unit};
use crate::runner::{PlannedCheck, RunPlan, RunSummary};

/// Largest `report.json` read back: 256 MiB.
pub const MAX_REPORT_BYTES: u64 = 256 * 1024 * 1024;

/// A saved report could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadReportError {
    /// The file could not be read.
    #[error("read report {}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: crate::config::InputFileError,
    },
    /// The file is not a `citadel-itest.report/v1` document.
    #[error("parse report {}: {message}", .path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line and column.
        message: String,
    },
}

/// Read and parse a saved `report.json` (at most [`MAX_REPORT_BYTES`]), refusing any schema
/// other than `citadel-itest.report/v1`.
pub fn read_report(path: &Path) -> Result<JsonReport, ReadReportError> {
    let bytes = crate::config::read_input_file(path, MAX_REPORT_BYTES).map_err(|source| {
        ReadReportError::Io {
            path: path.to_path_buf(),
            source,
        }
    })?;
    parse_report(&bytes).map_err(|message| ReadReportError::Parse {
        path: path.to_path_buf(),
        message,
    })
}

/// Parse `report.json` bytes; the error says what is wrong and where.
pub fn parse_report(bytes: &[u8]) -> Result<JsonReport, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    match value.get("schema").and_then(Value::as_str) {
        Some(REPORT_SCHEMA) => {}
        Some(other) => {
            return Err(format!(
                "schema: `{}` is not `{REPORT_SCHEMA}`",
                crate::config::shorten(other)
            ));
        }
        None => return Err(format!("schema: missing (expected `{REPORT_SCHEMA}`)")),
    }
    serde_json::from_value(value).map_err(|e| format!("not a {REPORT_SCHEMA} document: {e}"))
}

/// Re-create `junit.xml` from a saved report (the same document the JUnit reporter writes).
pub fn render_junit(report: &JsonReport) -> Result<String, String> {
    let mut checks = Vec::new();
    let mut results = Vec::new();
    for r in &report.results {
        let category = Category::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == r.category)
            .ok_or_else(|| format!("results: check {}: unknown category `{}`", r.id, r.category))?;
        let id = CheckId::new(r.id.as_str());
        checks.push(PlannedCheck {
            id: id.clone(),
            tester: r.tester.clone(),
            category,
        });
        results.push(TestResult {
            id,
            tester: r.tester.clone(),
            category,
            outcome: outcome_of(r),
            duration: millis(r.duration_ms),
            attempts: r.attempts,
            details: BTreeMap::new(),
        });
    }
    let started_at = humantime::parse_rfc3339(&report.started_at).unwrap_or(SystemTime::UNIX_EPOCH);
    let plan = RunPlan {
        run_id: report.run_id.clone(),
        started_at,
        checks,
        config: Value::Null,
    };
    let summary = RunSummary::from_results(
        &report.run_id,
        started_at,
        millis(report.duration_ms),
        &results,
    );
    build_junit(&plan, &results, &summary)
        .to_string()
        .map_err(|e| format!("write junit: {e}"))
}

fn millis(ms: f64) -> Duration {
    if ms.is_finite() && ms > 0.0 {
        Duration::try_from_secs_f64(ms / 1000.0).unwrap_or(Duration::MAX)
    } else {
        Duration::ZERO
    }
}

fn outcome_of(r: &JsonResult) -> Outcome {
    let message = r.message.clone().unwrap_or_default();
    match r.status {
        Status::Passed => Outcome::Passed {
            measurements: r.measurements.clone(),
        },
        Status::Failed => Outcome::Failed {
            message,
            measurements: r.measurements.clone(),
        },
        Status::Skipped => Outcome::Skipped { reason: message },
        Status::Error => Outcome::Error {
            kind: r.error_kind.unwrap_or(ErrorKind::Harness),
            message,
        },
    }
}

/// How two reports are compared.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompareOptions {
    /// Relative change (0.10 = 10 %) a measurement may move in its worse direction before it
    /// counts as a regression.
    pub tolerance: f64,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions { tolerance: 0.10 }
    }
}

/// Parse a tolerance: `10%`, `10` (percent) or `2.5 %`; 0 to 1000 %.
pub fn parse_tolerance(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let number = t.strip_suffix('%').unwrap_or(t).trim();
    match number.parse::<f64>() {
        Ok(p) if p.is_finite() && (0.0..=1000.0).contains(&p) => Ok(p / 100.0),
        _ => Err(format!(
            "tolerance `{}`: give a percentage from 0 to 1000, e.g. `10%`",
            crate::config::shorten(t)
        )),
    }
}

/// Which way a measurement gets better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Direction {
    /// Lower is better (latency, errors).
    LowerIsBetter,
    /// Higher is better (throughput, success).
    HigherIsBetter,
    /// It should stay where it is (an `==` threshold): any change beyond tolerance is worse.
    Unchanged,
    /// Unknown: changes are listed, never regressions.
    Unknown,
}

impl Direction {
    fn arrow(self) -> &'static str {
        match self {
            Direction::LowerIsBetter => "lower is better",
            Direction::HigherIsBetter => "higher is better",
            Direction::Unchanged => "should not change",
            Direction::Unknown => "direction unknown",
        }
    }
}

const LOWER_WORDS: [&str; 18] = [
    "latency", "duration", "time", "ttft", "tpot", "itl", "e2e", "p50", "p90", "p95", "p99",
    "error", "fail", "drop", "timeout", "lag", "memory", "cpu",
];
const HIGHER_WORDS: [&str; 9] = [
    "rps",
    "throughput",
    "per_s",
    "per_second",
    "tps",
    "goodput",
    "success",
    "ok_rate",
    "availability",
];

/// The direction of a measurement: its threshold's side when it has one, else its name, else
/// its unit.
pub fn direction_of(m: &Measurement) -> Direction {
    if let Some(t) = m.threshold {
        return match t.op {
            Comparison::Lt | Comparison::Le => Direction::LowerIsBetter,
            Comparison::Gt | Comparison::Ge => Direction::HigherIsBetter,
            Comparison::Eq => Direction::Unchanged,
        };
    }
    let name = m.name.to_ascii_lowercase();
    let words: Vec<&str> = name.split(|c: char| !c.is_ascii_alphanumeric()).collect();
    let has = |w: &str| {
        if w.contains('_') {
            name.contains(w)
        } else {
            words.iter().any(|x| x == &w || x.starts_with(w))
        }
    };
    if HIGHER_WORDS.iter().any(|w| has(w)) {
        return Direction::HigherIsBetter;
    }
    if LOWER_WORDS.iter().any(|w| has(w)) {
        return Direction::LowerIsBetter;
    }
    match m.unit {
        Unit::Milliseconds | Unit::Seconds | Unit::Percent => Direction::LowerIsBetter,
        Unit::RequestsPerSecond => Direction::HigherIsBetter,
        _ => Direction::Unknown,
    }
}

/// A check whose status differs between the runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusChange {
    /// The check's id.
    pub id: String,
    /// Status in the baseline.
    pub before: Status,
    /// Status in the new run.
    pub after: Status,
    /// True when the check passed (or was skipped) before and fails or errors now.
    pub regression: bool,
    /// The new run's message, if any.
    pub message: Option<String>,
}

/// A measurement present in both runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeasurementChange {
    /// The check's id.
    pub check: String,
    /// The measurement's name (`load.p95_ms` etc. for load scenario figures).
    pub name: String,
    /// Its unit suffix (`ms`, `rps`, `%`, ``).
    pub unit: String,
    /// Value in the baseline (`None`: no samples).
    pub before: Option<f64>,
    /// Value in the new run (`None`: no samples).
    pub after: Option<f64>,
    /// `(after - before) / |before|`; `None` when either is missing or before is 0 and after
    /// is not.
    pub relative: Option<f64>,
    /// Which way is better.
    pub direction: Direction,
    /// Moved in the worse direction beyond the tolerance (or lost its value).
    pub regression: bool,
    /// Moved in the better direction beyond the tolerance.
    pub improvement: bool,
}

/// The result of comparing two reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportDiff {
    /// The baseline's run id.
    pub base_run: String,
    /// The new run's id.
    pub new_run: String,
    /// The tolerance used (0.10 = 10 %).
    pub tolerance: f64,
    /// Success rate of the baseline and of the new run.
    pub success_rate: (Option<f64>, Option<f64>),
    /// Checks whose status changed, in the new run's order.
    pub status_changes: Vec<StatusChange>,
    /// Checks only the new run has, with their status.
    pub added: Vec<(String, Status)>,
    /// Checks only the baseline has, with their status.
    pub removed: Vec<(String, Status)>,
    /// Every measurement both runs have that changed at all.
    pub measurements: Vec<MeasurementChange>,
}

impl ReportDiff {
    /// True when a check regressed or a measurement regressed beyond the tolerance.
    pub fn has_regression(&self) -> bool {
        self.status_changes.iter().any(|s| s.regression)
            || self.measurements.iter().any(|m| m.regression)
    }

    /// Number of regressions (status and measurements).
    pub fn regressions(&self) -> usize {
        self.status_changes.iter().filter(|s| s.regression).count()
            + self.measurements.iter().filter(|m| m.regression).count()
    }

    /// A plain-text report: the verdict, then tables of status changes, new and missing checks
    /// and measurements that moved beyond the tolerance.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "compare {} (baseline) -> {} (new), tolerance {}%",
            self.base_run,
            self.new_run,
            fmt2(self.tolerance * 100.0)
        );
        let _ = writeln!(
            out,
            "success rate: {} -> {}",
            super::html::rate_text(self.success_rate.0),
            super::html::rate_text(self.success_rate.1)
        );
        if !self.status_changes.is_empty() {
            let _ = writeln!(out, "\nstatus changes:");
            let rows: Vec<[String; 4]> = self
                .status_changes
                .iter()
                .map(|s| {
                    [
                        if s.regression {
                            "REGRESSION"
                        } else {
                            "changed"
                        }
                        .to_string(),
                        s.id.clone(),
                        format!("{} -> {}", s.before, s.after),
                        s.message.as_deref().map(one_line).unwrap_or_default(),
                    ]
                })
                .collect();
            table(&mut out, ["", "check", "status", "message"], &rows);
        }
        if !self.added.is_empty() {
            let _ = writeln!(out, "\nnew checks (not in the baseline):");
            for (id, status) in &self.added {
                let _ = writeln!(out, "  {id}  {status}");
            }
        }
        if !self.removed.is_empty() {
            let _ = writeln!(out, "\nmissing checks (in the baseline only):");
            for (id, status) in &self.removed {
                let _ = writeln!(out, "  {id}  was {status}");
            }
        }
        let moved: Vec<&MeasurementChange> = self
            .measurements
            .iter()
            .filter(|m| m.regression || m.improvement)
            .collect();
        if !moved.is_empty() {
            let _ = writeln!(out, "\nmeasurements beyond tolerance:");
            let rows: Vec<[String; 6]> = moved
                .iter()
                .map(|m| {
                    [
                        if m.regression {
                            "REGRESSION"
                        } else {
                            "improved"
                        }
                        .to_string(),
                        m.check.clone(),
                        m.name.clone(),
                        format!("{} -> {}", val(m.before, &m.unit), val(m.after, &m.unit)),
                        m.relative
                            .map(|r| {
                                format!("{}{}%", if r >= 0.0 { "+" } else { "" }, fmt2(r * 100.0))
                            })
                            .unwrap_or_else(|| "n/a".to_string()),
                        m.direction.arrow().to_string(),
                    ]
                })
                .collect();
            table(
                &mut out,
                ["", "check", "measurement", "value", "change", "direction"],
                &rows,
            );
        }
        let within = self
            .measurements
            .iter()
            .filter(|m| !m.regression && !m.improvement)
            .count();
        let _ = writeln!(
            out,
            "\n{}: {} regression(s), {} status change(s), {} new, {} missing, {} measurement(s) \
             changed within tolerance",
            if self.has_regression() {
                "REGRESSED"
            } else {
                "NO REGRESSION"
            },
            self.regressions(),
            self.status_changes.len(),
            self.added.len(),
            self.removed.len(),
            within
        );
        out
    }
}

fn fmt2(v: f64) -> String {
    super::html::fmt_fixed(v, 2)
}

fn val(v: Option<f64>, unit: &str) -> String {
    v.map_or_else(
        || "no samples".to_string(),
        |x| format!("{}{unit}", fmt2(x)),
    )
}

fn one_line(s: &str) -> String {
    let s = s.replace(['\n', '\r'], " ");
    crate::config::shorten(&s)
}

fn table<const N: usize>(out: &mut String, head: [&str; N], rows: &[[String; N]]) {
    let mut widths = head.map(|h| h.chars().count());
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |out: &mut String, cells: Vec<&str>| {
        let mut s = String::from(" ");
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                s.push_str(&format!(" {c}"));
            } else {
                s.push_str(&format!(" {c:<w$}"));
            }
        }
        let _ = writeln!(out, "{}", s.trim_end());
    };
    line(out, head.to_vec());
    for r in rows {
        line(out, r.iter().map(String::as_str).collect());
    }
}

/// Load scenario figures of a check, as measurements with a direction given by their names.
fn load_figures(r: &JsonResult) -> Vec<Measurement> {
    let Some(load) = r.details.get("load") else {
        return Vec::new();
    };
    let f = |path: &[&str]| -> Option<f64> {
        let mut v = load;
        for p in path {
            v = v.get(*p)?;
        }
        v.as_f64().filter(|x| x.is_finite())
    };
    let mut out = Vec::new();
    for key in ["p50", "p95", "p99"] {
        if let Some(v) = f(&["metrics", "http_req_duration", key]) {
            out.push(Measurement::new(
                format!("load.{key}_ms"),
                v,
                Unit::Milliseconds,
            ));
        }
    }
    if let Some(v) = f(&["derived", "rps"]) {
        out.push(Measurement::new("load.rps", v, Unit::RequestsPerSecond));
    }
    if let Some(v) = f(&["derived", "error_rate"]) {
        out.push(Measurement::new(
            "load.error_rate",
            v * 100.0,
            Unit::Percent,
        ));
    }
    out
}

fn compare_measurement(
    check: &str,
    b: &Measurement,
    a: &Measurement,
    tol: f64,
) -> MeasurementChange {
    // The new run's threshold decides (it is what the run is held to), else the baseline's.
    let direction = if a.threshold.is_some() {
        direction_of(a)
    } else {
        direction_of(b)
    };
    let relative = match (b.value, a.value) {
        (Some(x), Some(y)) if x == y => Some(0.0),
        (Some(x), Some(y)) if x != 0.0 => Some((y - x) / x.abs()),
        _ => None,
    };
    let worse_and_better = match (b.value, a.value, relative) {
        // Lost its value: no samples now.
        (Some(_), None, _) => (true, false),
        (None, Some(_), _) => (false, true),
        (Some(_), Some(y), None) => {
            // From exactly 0: any move counts as beyond a relative tolerance.
            match direction {
                Direction::LowerIsBetter => (y > 0.0, y < 0.0),
                Direction::HigherIsBetter => (y < 0.0, y > 0.0),
                Direction::Unchanged => (true, false),
                Direction::Unknown => (false, false),
            }
        }
        (_, _, Some(r)) => match direction {
            Direction::LowerIsBetter => (r > tol, r < -tol),
            Direction::HigherIsBetter => (r < -tol, r > tol),
            Direction::Unchanged => (r.abs() > tol, false),
            Direction::Unknown => (false, false),
        },
        _ => (false, false),
    };
    MeasurementChange {
        check: check.to_string(),
        name: a.name.clone(),
        unit: a.unit.suffix().to_string(),
        before: b.value,
        after: a.value,
        relative,
        direction,
        regression: worse_and_better.0,
        improvement: worse_and_better.1,
    }
}

fn failing(s: Status) -> bool {
    matches!(s, Status::Failed | Status::Error)
}

/// Compare a new report with a baseline.
pub fn compare_reports(
    base: &JsonReport,
    new: &JsonReport,
    options: &CompareOptions,
) -> ReportDiff {
    let tol = if options.tolerance.is_finite() {
        options.tolerance.max(0.0)
    } else {
        0.0
    };
    let base_by_id: HashMap<&str, &JsonResult> =
        base.results.iter().map(|r| (r.id.as_str(), r)).collect();
    let new_ids: HashMap<&str, ()> = new.results.iter().map(|r| (r.id.as_str(), ())).collect();
    let mut diff = ReportDiff {
        base_run: base.run_id.clone(),
        new_run: new.run_id.clone(),
        tolerance: tol,
        success_rate: (
            base.summary.totals.success_rate,
            new.summary.totals.success_rate,
        ),
        status_changes: Vec::new(),
        added: Vec::new(),
        removed: base
            .results
            .iter()
            .filter(|r| !new_ids.contains_key(r.id.as_str()))
            .map(|r| (r.id.clone(), r.status))
            .collect(),
        measurements: Vec::new(),
    };
    for a in &new.results {
        let Some(b) = base_by_id.get(a.id.as_str()) else {
            diff.added.push((a.id.clone(), a.status));
            continue;
        };
        if a.status != b.status {
            diff.status_changes.push(StatusChange {
                id: a.id.clone(),
                before: b.status,
                after: a.status,
                regression: failing(a.status) && !failing(b.status),
                message: a.message.clone(),
            });
        }
        let before: Vec<Measurement> = b
            .measurements
            .iter()
            .cloned()
            .chain(load_figures(b))
            .collect();
        for m in a.measurements.iter().cloned().chain(load_figures(a)) {
            let Some(old) = before.iter().find(|x| x.name == m.name) else {
                continue;
            };
            if old.value == m.value {
                continue;
            }
            diff.measurements
                .push(compare_measurement(&a.id, old, &m, tol));
        }
    }
    diff
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Threshold;

    #[test]
    fn directions_follow_threshold_then_name_then_unit() {
        let m = |name: &str, unit| Measurement::new(name, 1.0, unit);
        assert_eq!(
            direction_of(&m("connect_time", Unit::Milliseconds)),
            Direction::LowerIsBetter
        );
        assert_eq!(
            direction_of(&m("throughput", Unit::Count)),
            Direction::HigherIsBetter
        );
        assert_eq!(
            direction_of(&m("goodput_rate", Unit::Percent)),
            Direction::HigherIsBetter
        );
        assert_eq!(
            direction_of(&m("error_rate", Unit::Ratio)),
            Direction::LowerIsBetter
        );
        assert_eq!(direction_of(&m("rows", Unit::Count)), Direction::Unknown);
        assert_eq!(
            direction_of(&m("rows", Unit::Count).with_threshold(Threshold::ge(5.0))),
            Direction::HigherIsBetter
        );
        assert_eq!(
            direction_of(&m("rps", Unit::RequestsPerSecond).with_threshold(Threshold::lt(5.0))),
            Direction::LowerIsBetter
        );
    }

    #[test]
    fn tolerance_parses_percent() {
        assert_eq!(parse_tolerance("10%"), Ok(0.10));
        assert_eq!(parse_tolerance(" 2.5 % "), Ok(0.025));
        assert_eq!(parse_tolerance("0"), Ok(0.0));
        assert!(parse_tolerance("-1%").is_err());
        assert!(parse_tolerance("ten").is_err());
        assert!(parse_tolerance("NaN").is_err());
    }

    #[test]
    fn zero_baseline_moves_are_judged_by_direction() {
        let b = Measurement::new("errors", 0.0, Unit::Count).with_threshold(Threshold::le(3.0));
        let a = Measurement::new("errors", 2.0, Unit::Count).with_threshold(Threshold::le(3.0));
        let c = compare_measurement("x", &b, &a, 0.1);
        assert!(c.regression);
        assert_eq!(c.relative, None);
    }
}
