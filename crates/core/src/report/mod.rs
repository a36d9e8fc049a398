//! Reporters: one trait, one module per format, fed by the runner's single coordinator.
//!
//! Reporters write to any [`std::io::Write`] so tests can snapshot them in memory; the file
//! variants write to a temporary file in the target directory and rename it into place, so a
//! crash never leaves a half-written report.

use std::io;
use std::path::{Path, PathBuf};

use crate::outcome::TestResult;
use crate::runner::{RunPlan, RunSummary};

pub mod compare;
pub mod console;
pub mod html;
pub mod json;
pub mod junit;
pub mod markdown;

pub use compare::{
    CompareOptions, ReportDiff, compare_reports, parse_tolerance, read_report, render_junit,
};
pub use console::ConsoleReporter;
pub use html::{HtmlReporter, render_html};
pub use json::{JsonReport, JsonReporter, REPORT_SCHEMA};
pub use junit::JunitReporter;
pub use markdown::{MarkdownReporter, render_markdown};

/// A report could not be produced or written.
#[derive(Debug, thiserror::Error)]
#[error("write {format} report{}", .path.as_ref().map(|p| format!(" to {}", p.display())).unwrap_or_default())]
pub struct ReportError {
    /// Which report: console, json, junit.
    pub format: &'static str,
    /// The destination file, when there is one.
    pub path: Option<PathBuf>,
    /// What went wrong.
    #[source]
    pub source: io::Error,
}

impl ReportError {
    /// Wrap an I/O error for a format and optional path.
    pub fn new(format: &'static str, path: Option<PathBuf>, source: io::Error) -> Self {
        ReportError {
            format,
            path,
            source,
        }
    }
}

/// Receives run events. Every hook defaults to a no-op; a `Vec<Box<dyn Reporter>>` fans out.
pub trait Reporter: Send {
    /// Before any check runs.
    fn run_started(&mut self, _plan: &RunPlan) -> Result<(), ReportError> {
        Ok(())
    }
    /// After each check finishes (completion order).
    fn check_finished(&mut self, _result: &TestResult) -> Result<(), ReportError> {
        Ok(())
    }
    /// After every check finished or was cancelled.
    fn run_finished(&mut self, _summary: &RunSummary) -> Result<(), ReportError> {
        Ok(())
    }
}

/// Fan-out: every reporter gets every event; the first error is returned after all ran.
impl Reporter for Vec<Box<dyn Reporter>> {
    fn run_started(&mut self, plan: &RunPlan) -> Result<(), ReportError> {
        fan_out(self, |r| r.run_started(plan))
    }
    fn check_finished(&mut self, result: &TestResult) -> Result<(), ReportError> {
        fan_out(self, |r| r.check_finished(result))
    }
    fn run_finished(&mut self, summary: &RunSummary) -> Result<(), ReportError> {
        fan_out(self, |r| r.run_finished(summary))
    }
}

fn fan_out(
    reporters: &mut [Box<dyn Reporter>],
    mut f: impl FnMut(&mut dyn Reporter) -> Result<(), ReportError>,
) -> Result<(), ReportError> {
    let mut first = None;
    for r in reporters.iter_mut() {
        if let Err(e) = f(r.as_mut()) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// Write `bytes` to `path` atomically: a temporary file in the same directory, synced, then
/// renamed over the destination. Creates the directory when missing.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".citadel-itest-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// What a whole-run reporter (JSON, JUnit, Markdown, HTML) keeps until the run finishes: the
/// plan, every result, and where the rendered bytes go.
#[derive(Debug)]
pub(crate) struct Document {
    sink: Sink,
    plan: Option<RunPlan>,
    results: Vec<TestResult>,
}

impl Document {
    /// Written to `path` (atomically) at the end of the run.
    pub(crate) fn file(path: impl Into<PathBuf>) -> Self {
        Document::new(Sink::File(path.into()))
    }

    /// Written into a buffer shared with the caller.
    pub(crate) fn memory(buf: std::sync::Arc<std::sync::Mutex<Vec<u8>>>) -> Self {
        Document::new(Sink::Memory(buf))
    }

    fn new(sink: Sink) -> Self {
        Document {
            sink,
            plan: None,
            results: Vec::new(),
        }
    }

    pub(crate) fn start(&mut self, plan: &RunPlan) -> Result<(), ReportError> {
        self.plan = Some(plan.clone());
        Ok(())
    }

    pub(crate) fn add(&mut self, result: &TestResult) -> Result<(), ReportError> {
        self.results.push(result.clone());
        Ok(())
    }

    /// The plan announced, or (a run that was never announced) an empty one with the
    /// summary's id and start.
    pub(crate) fn plan(&mut self, summary: &RunSummary) -> RunPlan {
        self.plan.take().unwrap_or_else(|| RunPlan {
            run_id: summary.run_id.clone(),
            started_at: summary.started_at,
            checks: Vec::new(),
            config: serde_json::Value::Null,
        })
    }

    pub(crate) fn results(&self) -> &[TestResult] {
        &self.results
    }

    /// The `report.json` model of the finished run, which the other formats render from.
    pub(crate) fn report(&mut self, summary: &RunSummary) -> JsonReport {
        let plan = self.plan(summary);
        JsonReport::build(&plan, &self.results, summary)
    }

    pub(crate) fn write(&self, format: &'static str, bytes: &[u8]) -> Result<(), ReportError> {
        self.sink.write(format, bytes)
    }
}

/// Where a file reporter sends its bytes.
#[derive(Debug)]
pub enum Sink {
    /// A file, written atomically at the end.
    File(PathBuf),
    /// An in-memory buffer shared with the caller (for tests and embedding).
    Memory(std::sync::Arc<std::sync::Mutex<Vec<u8>>>),
}

impl Sink {
    pub(crate) fn write(&self, format: &'static str, bytes: &[u8]) -> Result<(), ReportError> {
        match self {
            Sink::File(p) => {
                write_atomic(p, bytes).map_err(|e| ReportError::new(format, Some(p.clone()), e))
            }
            Sink::Memory(buf) => {
                let mut b = buf.lock().unwrap_or_else(|p| p.into_inner());
                b.clear();
                b.extend_from_slice(bytes);
                Ok(())
            }
        }
    }
}
