//! Human-readable output: a line per finished check while the run goes, then the results
//! grouped by tester and a summary table (by tester and by category). Colours only when asked
//! (the binary asks when stdout is a terminal).

use std::collections::BTreeMap;
use std::io::Write;

use super::{ReportError, Reporter};
use crate::config::redact_text;
use crate::outcome::{Outcome, Status, TestResult};
use crate::runner::{Counts, RunPlan, RunSummary};

/// Console reporter writing to any `io::Write`.
pub struct ConsoleReporter {
    out: Box<dyn Write + Send>,
    color: bool,
    results: Vec<TestResult>,
    planned: usize,
}

impl ConsoleReporter {
    /// Write to `out`; `color` enables ANSI colours.
    pub fn new(out: Box<dyn Write + Send>, color: bool) -> Self {
        ConsoleReporter {
            out,
            color,
            results: Vec::new(),
            planned: 0,
        }
    }

    /// Write to stdout, with colours when stdout is a terminal and `NO_COLOR` is unset.
    pub fn stdout() -> Self {
        use std::io::IsTerminal;
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        ConsoleReporter::new(Box::new(std::io::stdout()), color)
    }

    fn paint(&self, status: Status, text: &str) -> String {
        if !self.color {
            return text.to_string();
        }
        let code = match status {
            Status::Passed => "32",
            Status::Failed => "31",
            Status::Skipped => "33",
            Status::Error => "35",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }

    fn err(&self, e: std::io::Error) -> ReportError {
        ReportError::new("console", None, e)
    }
}

fn label(status: Status) -> &'static str {
    match status {
        Status::Passed => "PASS ",
        Status::Failed => "FAIL ",
        Status::Skipped => "SKIP ",
        Status::Error => "ERROR",
    }
}

fn result_line(r: &TestResult) -> String {
    let mut line = format!("{} ({:.1} ms", r.id, r.duration.as_secs_f64() * 1000.0);
    if r.attempts > 1 {
        line.push_str(&format!(", {} attempts", r.attempts));
    }
    line.push(')');
    let ms = r.outcome.measurements();
    if !ms.is_empty() {
        let shown: Vec<String> = ms.iter().map(|m| m.to_string()).collect();
        line.push_str("  ");
        line.push_str(&shown.join(", "));
    }
    line
}

/// The lines under a result: its message, then why earlier attempts did not pass.
fn detail_lines(r: &TestResult) -> Vec<String> {
    let mut lines: Vec<String> = match &r.outcome {
        Outcome::Passed { .. } => None,
        Outcome::Error { kind, message } => Some(format!("{kind}: {}", redact_text(message))),
        other => other.message().map(redact_text),
    }
    .into_iter()
    .collect();
    if let Some(earlier) = r.details.get("earlier_attempts").and_then(|v| v.as_array()) {
        lines.extend(earlier.iter().filter_map(|e| e.as_str()).map(redact_text));
    }
    lines
}

fn rate(c: &Counts) -> String {
    c.success_rate()
        .map(|r| format!("{:.1}%", r * 100.0))
        .unwrap_or_else(|| "-".to_string())
}

fn table_row(name: &str, c: &Counts) -> String {
    format!(
        "{name:<24} {:>6} {:>6} {:>6} {:>7} {:>6} {:>8}",
        c.total,
        c.passed,
        c.failed,
        c.skipped,
        c.errors,
        rate(c)
    )
}

impl Reporter for ConsoleReporter {
    fn run_started(&mut self, plan: &RunPlan) -> Result<(), ReportError> {
        self.planned = plan.checks.len();
        writeln!(
            self.out,
            "citadel-itest run {}: {} checks",
            plan.run_id,
            plan.checks.len()
        )
        .map_err(|e| self.err(e))
    }

    fn check_finished(&mut self, r: &TestResult) -> Result<(), ReportError> {
        let status = r.outcome.status();
        let mut text = format!(
            "  {} {}",
            self.paint(status, label(status)),
            redact_text(&result_line(r))
        );
        for d in detail_lines(r) {
            text.push_str(&format!("\n          {d}"));
        }
        self.results.push(r.clone());
        writeln!(self.out, "{text}")
            .and_then(|_| self.out.flush())
            .map_err(|e| self.err(e))
    }

    fn run_finished(&mut self, s: &RunSummary) -> Result<(), ReportError> {
        let mut text = String::new();
        let mut by_tester: BTreeMap<&str, Vec<&TestResult>> = BTreeMap::new();
        for r in &self.results {
            by_tester.entry(r.tester.as_str()).or_default().push(r);
        }
        text.push_str("\nResults by tester\n");
        for (tester, results) in &by_tester {
            text.push_str(&format!("{tester}\n"));
            let mut results = results.clone();
            results.sort_by(|a, b| a.id.cmp(&b.id));
            for r in results {
                let status = r.outcome.status();
                text.push_str(&format!(
                    "  {} {}\n",
                    self.paint(status, label(status)),
                    redact_text(&result_line(r))
                ));
                for d in detail_lines(r) {
                    text.push_str(&format!("          {d}\n"));
                }
            }
        }
        let header = format!(
            "{:<24} {:>6} {:>6} {:>6} {:>7} {:>6} {:>8}",
            "", "total", "passed", "failed", "skipped", "errors", "success"
        );
        text.push_str(&format!(
            "\nSummary (run {}, {:.2} s)\n{header}\n",
            s.run_id,
            s.duration.as_secs_f64()
        ));
        for (tester, c) in &s.by_tester {
            text.push_str(&table_row(&format!("tester {tester}"), c));
            text.push('\n');
        }
        for (category, c) in &s.by_category {
            text.push_str(&table_row(&format!("category {category}"), c));
            text.push('\n');
        }
        text.push_str(&table_row("TOTAL", &s.counts));
        text.push('\n');
        if let Some(reason) = &s.cancel_reason {
            text.push_str(&format!("unfinished checks were cancelled: {reason}\n"));
        }
        if !s.leftovers.is_empty() {
            text.push_str(&format!(
                "\nLeft behind ({} object{} could not be removed)\n",
                s.leftovers.len(),
                if s.leftovers.len() == 1 { "" } else { "s" }
            ));
            for l in &s.leftovers {
                text.push_str(&format!("  {}\n", redact_text(&l.to_string())));
            }
        }
        let verdict = match s.exit_code() {
            0 => self.paint(Status::Passed, "PASSED"),
            130 => self.paint(Status::Error, "INTERRUPTED"),
            _ => self.paint(Status::Failed, "FAILED"),
        };
        text.push_str(&format!("{verdict}\n"));
        self.out
            .write_all(text.as_bytes())
            .and_then(|_| self.out.flush())
            .map_err(|e| self.err(e))
    }
}
