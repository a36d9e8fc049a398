//! `summary.md`: a Markdown summary for CI job summaries (`$GITHUB_STEP_SUMMARY`) and
//! pull-request comments.
//!
//! A headline (verdict, counts, success rate), then the failed and errored checks with their
//! messages, then performance figures (measurements with thresholds and each load scenario's
//! p95, rate and error rate), then the skipped checks with their reasons folded away. Table
//! cells are escaped: a `|` or a newline in a message cannot break the table, and `<`, `>` and
//! `&` are written as entities so no message becomes markup.
//!
//! ```
//! use citadel_itest_core::report::{JsonReport, render_markdown};
//! let report: JsonReport = serde_json::from_str(include_str!("../../tests/golden/report.json")).unwrap();
//! let md = render_markdown(&report);
//! assert!(md.starts_with("## citadel-itest: FAILED"));
//! ```

use std::fmt::Write as _;

use serde_json::Value;

use super::html::{duration_text, fmt_fixed, measurement_value, rate_text, verdict};
use super::json::JsonReport;
use super::{Document, ReportError, Reporter};
use crate::outcome::{Status, TestResult};
use crate::runner::{RunPlan, RunSummary};

/// Most characters of a message shown in a table cell; longer ones are cut with `…`.
const MAX_CELL_CHARS: usize = 600;

/// Escape text for one Markdown table cell: `|` and `\` escaped, newlines as `<br>`, HTML
/// special characters as entities, and cut to a bounded length.
pub fn escape_cell(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_CELL_CHARS + 16));
    let trimmed = s.trim();
    let mut chars = trimmed.chars();
    for c in chars.by_ref().take(MAX_CELL_CHARS) {
        match c {
            '|' => out.push_str("\\|"),
            '\\' => out.push_str("\\\\"),
            '`' => out.push_str("\\`"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\r' => {}
            '\n' => out.push_str("<br>"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Render a report as Markdown.
pub fn render_markdown(report: &JsonReport) -> String {
    let mut md = String::with_capacity(8 * 1024);
    let t = &report.summary.totals;
    let icon = match verdict(report) {
        "PASSED" => "✅",
        "FAILED" => "❌",
        _ => "⚠️",
    };
    let _ = writeln!(
        md,
        "## citadel-itest: {} {icon}\n\n**{} passed, {} failed, {}, {} skipped** of {} · success \
         rate **{}**\n\nrun `{}` · started {} · duration {}",
        verdict(report),
        t.passed,
        t.failed,
        plural(t.errors, "error", "errors"),
        t.skipped,
        plural(t.total, "check", "checks"),
        rate_text(t.success_rate),
        escape_cell(&report.run_id),
        escape_cell(&report.started_at),
        duration_text(report.duration_ms)
    );
    if let Some(reason) = &report.cancel_reason {
        let _ = writeln!(md, "\ncancelled: {}", escape_cell(reason));
    }

    // Failed and errored checks first.
    let bad: Vec<_> = report
        .results
        .iter()
        .filter(|r| matches!(r.status, Status::Failed | Status::Error))
        .collect();
    if !bad.is_empty() {
        let _ = writeln!(
            md,
            "\n### Failed and errored checks ({})\n\n| status | check | message |\n|---|---|---|",
            bad.len()
        );
        for r in bad {
            let status = match (r.status, r.error_kind) {
                (Status::Error, Some(kind)) => format!("error ({kind})"),
                (Status::Error, None) => "error".to_string(),
                _ => "failed".to_string(),
            };
            let _ = writeln!(
                md,
                "| {status} | `{}` | {} |",
                r.id.replace('`', "'").replace('|', "\\|"),
                escape_cell(r.message.as_deref().unwrap_or(""))
            );
        }
    }

    // Performance: thresholded measurements, then load scenarios.
    let measured: Vec<_> = report
        .results
        .iter()
        .flat_map(|r| {
            r.measurements
                .iter()
                .filter(|m| m.threshold.is_some())
                .map(move |m| (r, m))
        })
        .collect();
    let loads: Vec<(&str, &Value, Status)> = report
        .results
        .iter()
        .filter(|r| r.category == "load")
        .filter_map(|r| r.details.get("load").map(|v| (r.id.as_str(), v, r.status)))
        .collect();
    if !measured.is_empty() || !loads.is_empty() {
        md.push_str("\n### Performance\n");
    }
    if !loads.is_empty() {
        md.push_str(
            "\n| load scenario | requests | rps | p50 | p95 | p99 | error rate | verdict |\n\
             |---|---:|---:|---:|---:|---:|---:|---|\n",
        );
        for (id, load, status) in loads {
            let f = |path: &[&str]| -> Option<f64> {
                let mut v = load;
                for p in path {
                    v = v.get(*p)?;
                }
                v.as_f64().filter(|x| x.is_finite())
            };
            let ms = |key: &str| {
                f(&["metrics", "http_req_duration", key])
                    .map_or("n/a".to_string(), |v| format!("{} ms", fmt_fixed(v, 2)))
            };
            let name = load.get("scenario").and_then(Value::as_str).unwrap_or(id);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                escape_cell(name),
                f(&["counts", "requests"]).map_or("n/a".into(), |v| fmt_fixed(v, 0)),
                f(&["derived", "rps"]).map_or("n/a".into(), |v| fmt_fixed(v, 1)),
                ms("p50"),
                ms("p95"),
                ms("p99"),
                f(&["derived", "error_rate"])
                    .map_or("n/a".into(), |v| format!("{} %", fmt_fixed(v * 100.0, 2))),
                if status == Status::Passed {
                    "✅"
                } else {
                    "❌"
                }
            );
        }
    }
    if !measured.is_empty() {
        md.push_str("\n| check | measurement | value | threshold | |\n|---|---|---:|---|---|\n");
        for (r, m) in measured {
            let threshold = m
                .threshold
                .map(|t| format!("{t}{}", m.unit.suffix()))
                .unwrap_or_default();
            let _ = writeln!(
                md,
                "| `{}` | {} | {} | {} | {} |",
                r.id.replace('`', "'").replace('|', "\\|"),
                escape_cell(&m.name),
                escape_cell(&measurement_value(m)),
                escape_cell(&threshold),
                if m.violation().is_some() {
                    "❌"
                } else {
                    "✅"
                }
            );
        }
    }

    // Skipped, folded away.
    let skipped: Vec<_> = report
        .results
        .iter()
        .filter(|r| r.status == Status::Skipped)
        .collect();
    if !skipped.is_empty() {
        let _ = writeln!(
            md,
            "\n<details><summary>Skipped ({})</summary>\n\n| check | reason |\n|---|---|",
            skipped.len()
        );
        for r in skipped {
            let _ = writeln!(
                md,
                "| `{}` | {} |",
                r.id.replace('`', "'").replace('|', "\\|"),
                escape_cell(r.message.as_deref().unwrap_or(""))
            );
        }
        md.push_str("\n</details>\n");
    }

    if !report.leftovers.is_empty() {
        let _ = writeln!(
            md,
            "\n### Left behind ({} objects could not be removed)\n\n| object | service | check | \
             reason |\n|---|---|---|---|",
            report.leftovers.len()
        );
        for l in &report.leftovers {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                escape_cell(&l.object),
                escape_cell(&l.service),
                escape_cell(l.check.as_str()),
                escape_cell(&l.reason)
            );
        }
    }
    md
}

/// Collects results and writes `summary.md` when the run finishes.
pub struct MarkdownReporter(Document);

impl MarkdownReporter {
    /// Write to a file (atomically, at the end of the run).
    pub fn to_file(path: impl Into<std::path::PathBuf>) -> Self {
        MarkdownReporter(Document::file(path))
    }

    /// Write into a shared buffer (tests, embedding).
    pub fn to_memory(buf: std::sync::Arc<std::sync::Mutex<Vec<u8>>>) -> Self {
        MarkdownReporter(Document::memory(buf))
    }
}

impl Reporter for MarkdownReporter {
    fn run_started(&mut self, plan: &RunPlan) -> Result<(), ReportError> {
        self.0.start(plan)
    }

    fn check_finished(&mut self, result: &TestResult) -> Result<(), ReportError> {
        self.0.add(result)
    }

    fn run_finished(&mut self, summary: &RunSummary) -> Result<(), ReportError> {
        let report = self.0.report(summary);
        self.0
            .write("markdown", render_markdown(&report).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_cannot_break_the_table() {
        assert_eq!(
            escape_cell("a | b\nc <script>"),
            "a \\| b<br>c &lt;script&gt;"
        );
        let long = "x".repeat(MAX_CELL_CHARS + 5);
        assert!(escape_cell(&long).ends_with('…'));
    }
}
