//! `citadel-itest report render|compare` and `run --baseline`.
//!
//! - `report render report.json --format html,md,junit [--out-dir DIR]`: re-create reports from a
//!   saved `report.json` (written next to it unless `--out-dir` says otherwise).
//! - `report compare BASE.json NEW.json [--tolerance 10%] [--json]`: status changes, new and
//!   missing checks, measurements that regressed beyond the tolerance. Exit 1 on a regression,
//!   0 otherwise, 2 when an input cannot be read.
//! - `run --baseline BASE.json [--baseline-tolerance 10%]`: the same comparison after a run; a
//!   regression makes the exit code 1.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use citadel_itest::Reporter;
use citadel_itest::config::redact_text;
use citadel_itest::report::compare::parse_report;
use citadel_itest::report::{
    CompareOptions, JsonReport, JsonReporter, compare_reports, parse_tolerance, read_report,
    render_html, render_junit, render_markdown, write_atomic,
};
use clap::{Args, Subcommand};

/// `citadel-itest report ...`
#[derive(Args)]
pub(crate) struct ReportArgs {
    #[command(subcommand)]
    command: ReportCommand,
}

#[derive(Subcommand)]
enum ReportCommand {
    /// Re-render a saved report.json as html (report.html), md (summary.md), junit (junit.xml).
    Render(RenderArgs),
    /// Compare two report.json files; exit 1 when NEW regressed against BASE.
    Compare(CompareArgs),
}

#[derive(Args)]
struct RenderArgs {
    /// The saved report (schema citadel-itest.report/v1).
    #[arg(value_name = "REPORT.json")]
    report: PathBuf,
    /// Formats to write, comma separated: html, md, junit, json.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "FORMATS",
        default_value = "html,md,junit"
    )]
    format: Vec<String>,
    /// Directory for the files (default: the report's directory).
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

#[derive(Args)]
struct CompareArgs {
    /// The baseline report.json.
    #[arg(value_name = "BASE.json")]
    base: PathBuf,
    /// The new report.json.
    #[arg(value_name = "NEW.json")]
    new: PathBuf,
    /// How far (percent) a measurement may move in its worse direction before it regresses.
    #[arg(long, value_name = "PERCENT", default_value = "10%")]
    tolerance: String,
    /// Print the comparison as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Run `report render` or `report compare`.
pub(crate) fn report_command(args: ReportArgs) -> ExitCode {
    match args.command {
        ReportCommand::Render(a) => render(a),
        ReportCommand::Compare(a) => compare(a),
    }
}

fn read(path: &Path) -> Result<JsonReport, ExitCode> {
    read_report(path).map_err(|e| {
        eprintln!("error: {}", redact_text(&citadel_itest::error_chain(&e)));
        ExitCode::from(2)
    })
}

fn render(args: RenderArgs) -> ExitCode {
    let mut formats = Vec::new();
    for f in &args.format {
        let (name, file) = match f.trim().to_ascii_lowercase().as_str() {
            "html" => ("html", "report.html"),
            "md" | "markdown" => ("md", "summary.md"),
            "junit" => ("junit", "junit.xml"),
            "json" => ("json", "report.json"),
            "" => continue,
            other => {
                eprintln!(
                    "error: --format: unknown format `{}`: use html, md, junit or json",
                    citadel_itest::config::shorten(other)
                );
                return ExitCode::from(2);
            }
        };
        if !formats.iter().any(|(n, _)| *n == name) {
            formats.push((name, file));
        }
    }
    if formats.is_empty() {
        eprintln!("error: --format: give at least one of html, md, junit, json");
        return ExitCode::from(2);
    }
    let report = match read(&args.report) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let dir = args
        .out_dir
        .clone()
        .unwrap_or_else(|| match args.report.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        });
    let mut code = 0u8;
    for (name, file) in formats {
        let path = dir.join(file);
        let bytes = match name {
            "html" => render_html(&report).into_bytes(),
            "md" => render_markdown(&report).into_bytes(),
            "json" => report.to_bytes(),
            _ => match render_junit(&report) {
                Ok(x) => x.into_bytes(),
                Err(e) => {
                    eprintln!("error: {}: {e}", args.report.display());
                    code = 1;
                    continue;
                }
            },
        };
        // Rendering the report onto itself would be a no-op at best: refuse it.
        if name == "json" && same_file(&path, &args.report) {
            eprintln!("error: --format json would overwrite the input report; give --out-dir");
            code = 1;
            continue;
        }
        match write_atomic(&path, &bytes) {
            Ok(()) => eprintln!("report written: {}", path.display()),
            Err(e) => {
                eprintln!("error: write {name} report to {}: {e}", path.display());
                code = 1;
            }
        }
    }
    ExitCode::from(code)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn tolerance(text: &str, flag: &str) -> Result<f64, ExitCode> {
    parse_tolerance(text).map_err(|e| {
        eprintln!("error: {flag}: {e}");
        ExitCode::from(2)
    })
}

fn compare(args: CompareArgs) -> ExitCode {
    let tol = match tolerance(&args.tolerance, "--tolerance") {
        Ok(t) => t,
        Err(code) => return code,
    };
    let base = match read(&args.base) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let new = match read(&args.new) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let diff = compare_reports(&base, &new, &CompareOptions { tolerance: tol });
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&diff).unwrap_or_default()
        );
    } else {
        print!("{}", redact_text(&diff.to_text()));
    }
    ExitCode::from(u8::from(diff.has_regression()))
}

/// `run --baseline`: the baseline read before the run, and the new report captured in memory.
pub(crate) struct Baseline {
    path: PathBuf,
    base: JsonReport,
    tolerance: f64,
    buffer: Arc<Mutex<Vec<u8>>>,
}

impl Baseline {
    /// Read the baseline (before anything runs: an unreadable one is exit code 2).
    pub(crate) fn open(
        path: Option<&Path>,
        tolerance_text: &str,
    ) -> Result<Option<Baseline>, ExitCode> {
        let Some(path) = path else {
            return Ok(None);
        };
        let tol = tolerance(tolerance_text, "--baseline-tolerance")?;
        let base = read(path)?;
        Ok(Some(Baseline {
            path: path.to_path_buf(),
            base,
            tolerance: tol,
            buffer: Arc::new(Mutex::new(Vec::new())),
        }))
    }

    /// A reporter capturing the new run's report.json in memory.
    pub(crate) fn reporter(&self) -> Box<dyn Reporter> {
        Box::new(JsonReporter::to_memory(self.buffer.clone()))
    }

    /// Compare after the run and print the comparison; the exit code becomes 1 when the run
    /// regressed and would otherwise have been 0. Runs that did not start (2) or were
    /// interrupted (130) keep their code.
    pub(crate) fn finish(&self, code: u8) -> u8 {
        if code == 2 || code == 130 {
            return code;
        }
        let bytes = self.buffer.lock().map(|b| b.clone()).unwrap_or_default();
        let new = match parse_report(&bytes) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: compare with baseline: the run's report: {e}");
                return code.max(1);
            }
        };
        let diff = compare_reports(
            &self.base,
            &new,
            &CompareOptions {
                tolerance: self.tolerance,
            },
        );
        println!("\nbaseline {}:", self.path.display());
        print!("{}", redact_text(&diff.to_text()));
        if diff.has_regression() && code == 0 {
            1
        } else {
            code
        }
    }
}
