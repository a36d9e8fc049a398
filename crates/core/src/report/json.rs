//! `report.json`: schema `citadel-itest.report/v1` (documented field by field in
//! docs/reports.md).

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{Document, ReportError, Reporter};
use crate::check::CheckId;
use crate::config::redact_text;
use crate::outcome::{ErrorKind, Measurement, Status, TestResult};
use crate::runner::{Counts, PlannedCheck, RunPlan, RunSummary};

/// The schema identifier written in every JSON report.
pub const REPORT_SCHEMA: &str = "citadel-itest.report/v1";

/// The whole JSON report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonReport {
    /// Always [`REPORT_SCHEMA`].
    pub schema: String,
    /// Unique id of the run.
    pub run_id: String,
    /// Start time, RFC 3339 UTC with milliseconds.
    pub started_at: String,
    /// Wall time of the run in milliseconds.
    pub duration_ms: f64,
    /// True when the run was interrupted (Ctrl-C); unfinished checks are `cancelled` errors.
    pub interrupted: bool,
    /// Why unfinished checks were cancelled, if any were.
    pub cancel_reason: Option<String>,
    /// Redacted effective configuration.
    pub config: serde_json::Value,
    /// Counts and success rates.
    pub summary: JsonSummary,
    /// One entry per planned check, in plan order.
    pub results: Vec<JsonResult>,
    /// Objects checks created and the run could not remove (empty when all were removed).
    #[serde(default)]
    pub leftovers: Vec<crate::cleanup::Leftover>,
}

/// Counts plus success rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonCounts {
    /// Checks in the group.
    pub total: usize,
    /// Passed.
    pub passed: usize,
    /// Failed.
    pub failed: usize,
    /// Skipped.
    pub skipped: usize,
    /// Errors (timeouts, cancellations, panics, harness errors).
    pub errors: usize,
    /// passed / (total - skipped), 0..=1; null when nothing executed.
    pub success_rate: Option<f64>,
}

impl From<Counts> for JsonCounts {
    fn from(c: Counts) -> Self {
        JsonCounts {
            total: c.total,
            passed: c.passed,
            failed: c.failed,
            skipped: c.skipped,
            errors: c.errors,
            success_rate: c.success_rate().map(|r| (r * 10_000.0).round() / 10_000.0),
        }
    }
}

/// The `summary` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonSummary {
    /// Totals over all results.
    #[serde(flatten)]
    pub totals: JsonCounts,
    /// Per tester.
    pub by_tester: BTreeMap<String, JsonCounts>,
    /// Per category.
    pub by_category: BTreeMap<String, JsonCounts>,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonResult {
    /// Check id.
    pub id: String,
    /// Tester name.
    pub tester: String,
    /// Category name.
    pub category: String,
    /// passed, failed, skipped or error.
    pub status: Status,
    /// For errors: timeout, cancelled, panicked or harness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<ErrorKind>,
    /// Failure message, skip reason or error message (redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Wall time, all attempts.
    pub duration_ms: f64,
    /// Attempts made.
    pub attempts: u32,
    /// Measured numbers.
    pub measurements: Vec<Measurement>,
    /// Extra details (redacted).
    pub details: BTreeMap<String, serde_json::Value>,
}

impl JsonReport {
    /// Build a report from a plan, results (any order) and the summary.
    pub fn build(plan: &RunPlan, results: &[TestResult], summary: &RunSummary) -> Self {
        let order: HashMap<(&str, &CheckId), usize> = plan
            .checks
            .iter()
            .enumerate()
            .map(|(i, PlannedCheck { id, tester, .. })| ((tester.as_str(), id), i))
            .collect();
        let mut sorted: Vec<&TestResult> = results.iter().collect();
        sorted.sort_by_key(|r| {
            order
                .get(&(r.tester.as_str(), &r.id))
                .copied()
                .unwrap_or(usize::MAX)
        });
        JsonReport {
            schema: REPORT_SCHEMA.to_string(),
            run_id: summary.run_id.clone(),
            started_at: rfc3339(summary.started_at),
            duration_ms: ms(summary.duration),
            interrupted: summary.interrupted,
            cancel_reason: summary.cancel_reason.clone(),
            config: plan.config.clone(),
            summary: JsonSummary {
                totals: summary.counts.into(),
                by_tester: summary
                    .by_tester
                    .iter()
                    .map(|(k, v)| (k.clone(), (*v).into()))
                    .collect(),
                by_category: summary
                    .by_category
                    .iter()
                    .map(|(k, v)| (k.as_str().to_string(), (*v).into()))
                    .collect(),
            },
            results: sorted.into_iter().map(JsonResult::from).collect(),
            leftovers: summary
                .leftovers
                .iter()
                .map(|l| crate::cleanup::Leftover {
                    reason: crate::config::redact_text(&l.reason),
                    object: crate::config::redact_text(&l.object),
                    ..l.clone()
                })
                .collect(),
        }
    }

    /// Pretty JSON bytes with a trailing newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

impl From<&TestResult> for JsonResult {
    fn from(r: &TestResult) -> Self {
        let error_kind = match &r.outcome {
            crate::outcome::Outcome::Error { kind, .. } => Some(*kind),
            _ => None,
        };
        JsonResult {
            id: r.id.to_string(),
            tester: r.tester.clone(),
            category: r.category.as_str().to_string(),
            status: r.outcome.status(),
            error_kind,
            message: r.outcome.message().map(redact_text),
            duration_ms: ms(r.duration),
            attempts: r.attempts,
            measurements: r.outcome.measurements().to_vec(),
            details: r
                .details
                .iter()
                .map(|(k, v)| (k.clone(), crate::config::redact_value(v)))
                .collect(),
        }
    }
}

fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// RFC 3339 UTC with milliseconds.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Collects results and writes `report.json` when the run finishes.
pub struct JsonReporter(Document);

impl JsonReporter {
    /// Write to a file (atomically, at the end of the run).
    pub fn to_file(path: impl Into<std::path::PathBuf>) -> Self {
        JsonReporter(Document::file(path))
    }

    /// Write into a shared buffer (tests, embedding).
    pub fn to_memory(buf: std::sync::Arc<std::sync::Mutex<Vec<u8>>>) -> Self {
        JsonReporter(Document::memory(buf))
    }
}

impl Reporter for JsonReporter {
    fn run_started(&mut self, plan: &RunPlan) -> Result<(), ReportError> {
        self.0.start(plan)
    }

    fn check_finished(&mut self, result: &TestResult) -> Result<(), ReportError> {
        self.0.add(result)
    }

    fn run_finished(&mut self, summary: &RunSummary) -> Result<(), ReportError> {
        let report = self.0.report(summary);
        self.0.write("json", &report.to_bytes())
    }
}
