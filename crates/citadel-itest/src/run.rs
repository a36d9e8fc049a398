//! The library entry point: run a configured suite exactly as `citadel-itest run` does.
//!
//! [`run_configured`] is what the binary's `run` subcommand calls, so custom tooling gets the
//! same contract: the `.env` file, configuration layering and validation, `--only`/`--skip`
//! selection, the reporters named by `run.formats`, Ctrl-C (cancel, then the partial reports,
//! exit code 130) and an exit code that counts a report that could not be written.
//! The pieces it is made of are public too: [`load_dotenv`], [`crate::load`], [`crate::plan`],
//! [`reporters_for`] and [`RunOutput::exit_code`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use citadel_itest_core::config::{ConfigError, ReportFormat, RunSettings, redact_text};
use citadel_itest_core::report::{
    ConsoleReporter, HtmlReporter, JsonReporter, JunitReporter, MarkdownReporter,
};
use citadel_itest_core::{Reporter, RunOutput, error_chain};
use tokio_util::sync::CancellationToken;

use crate::NothingToRun;

/// What to run: the same inputs as `citadel-itest run`.
///
/// ```no_run
/// use citadel_itest::RunRequest;
///
/// let outcome = citadel_itest::run_configured_blocking(
///     RunRequest::new(["config/local.yaml"])
///         .only("basic.*")
///         .set("run.report_dir", "target/my-reports"),
/// );
/// std::process::exit(outcome.exit_code.into());
/// ```
#[must_use]
pub struct RunRequest {
    files: Vec<PathBuf>,
    overrides: Vec<(String, serde_json::Value)>,
    only: Vec<String>,
    skip: Vec<String>,
    reporters: Vec<Box<dyn Reporter>>,
    report_files: Vec<PathBuf>,
    cancel: CancellationToken,
    ctrl_c: bool,
    messages: bool,
}

impl RunRequest {
    /// A run of these config files (layered in order, later wins), nothing else set.
    pub fn new<P: Into<PathBuf>>(files: impl IntoIterator<Item = P>) -> Self {
        RunRequest {
            files: files.into_iter().map(Into::into).collect(),
            overrides: Vec::new(),
            only: Vec::new(),
            skip: Vec::new(),
            reporters: Vec::new(),
            report_files: Vec::new(),
            cancel: CancellationToken::new(),
            ctrl_c: true,
            messages: true,
        }
    }

    /// Override one key (dotted path, e.g. `run.report_dir`) over files and environment: the
    /// CLI flags' layer.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.overrides.push((key.into(), value.into()));
        self
    }

    /// Override many keys at once (see [`RunRequest::set`]).
    pub fn overrides(
        mut self,
        overrides: impl IntoIterator<Item = (String, serde_json::Value)>,
    ) -> Self {
        self.overrides.extend(overrides);
        self
    }

    /// Run only checks whose id matches this glob (repeatable; any match).
    pub fn only(mut self, glob: impl Into<String>) -> Self {
        self.only.push(glob.into());
        self
    }

    /// Leave out checks whose id matches this glob (repeatable).
    pub fn skip(mut self, glob: impl Into<String>) -> Self {
        self.skip.push(glob.into());
        self
    }

    /// Feed one more reporter besides those of `run.formats` (e.g. a metrics export).
    pub fn reporter(mut self, reporter: Box<dyn Reporter>) -> Self {
        self.reporters.push(reporter);
        self
    }

    /// A file an extra reporter writes: announced as `report written: PATH` when it exists.
    pub fn report_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.report_files.push(path.into());
        self
    }

    /// A token that interrupts the run from outside (the run then exits 130 as with Ctrl-C).
    pub fn cancellation(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    /// Whether Ctrl-C cancels the run (default yes; a second Ctrl-C exits the process with 130
    /// at once). Turn it off when the embedding program handles signals itself: once Tokio has
    /// taken SIGINT it keeps it for the rest of the process, so after such a run Ctrl-C no
    /// longer ends a long-lived program by default.
    pub fn ctrl_c(mut self, yes: bool) -> Self {
        self.ctrl_c = yes;
        self
    }

    /// Whether to print the binary's status lines on stderr (`error: ...`,
    /// `report written: ...`); default yes. Errors are in the [`RunOutcome`] either way.
    pub fn messages(mut self, yes: bool) -> Self {
        self.messages = yes;
        self
    }
}

/// Why a run did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The `.env` file or the configuration is invalid (exit code 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No check is left to run (exit code 2).
    #[error(transparent)]
    NothingToRun(#[from] NothingToRun),
    /// The async runtime could not be started (exit code 1).
    #[error("start the async runtime")]
    Runtime(#[source] std::io::Error),
}

/// What [`run_configured`] did.
#[derive(Debug)]
#[non_exhaustive]
pub struct RunOutcome {
    /// 0 every executed check passed; 1 a check failed or errored, or a report could not be
    /// written; 2 invalid configuration or nothing to run; 130 interrupted.
    pub exit_code: u8,
    /// The run's results, when it started.
    pub output: Option<RunOutput>,
    /// Why it did not start, when it did not.
    pub error: Option<RunError>,
    /// Report files that exist after the run (JSON, JUnit, extra reporters' files).
    pub report_files: Vec<PathBuf>,
}

impl RunOutcome {
    fn failed(error: RunError) -> Self {
        let exit_code = match error {
            RunError::Runtime(_) => 1,
            _ => 2,
        };
        RunOutcome {
            exit_code,
            output: None,
            error: Some(error),
            report_files: Vec::new(),
        }
    }

    /// The exit code for `main`.
    pub fn process_exit_code(&self) -> ExitCode {
        ExitCode::from(self.exit_code)
    }
}

/// The reporters `run.formats` names, and the files they will write (under `run.report_dir`):
/// `console` on stdout, `json` to `report.json`, `junit` to `junit.xml`, `html` to
/// `report.html`, `md` to `summary.md`.
pub fn reporters_for(run: &RunSettings) -> (Vec<Box<dyn Reporter>>, Vec<PathBuf>) {
    let mut reporters: Vec<Box<dyn Reporter>> = Vec::new();
    let mut files = Vec::new();
    for format in &run.formats {
        match format {
            ReportFormat::Console => reporters.push(Box::new(ConsoleReporter::stdout())),
            ReportFormat::Json => {
                let p = run.report_dir.join("report.json");
                files.push(p.clone());
                reporters.push(Box::new(JsonReporter::to_file(p)));
            }
            ReportFormat::Junit => {
                let p = run.report_dir.join("junit.xml");
                files.push(p.clone());
                reporters.push(Box::new(JunitReporter::to_file(p)));
            }
            ReportFormat::Html => {
                let p = run.report_dir.join("report.html");
                files.push(p.clone());
                reporters.push(Box::new(HtmlReporter::to_file(p)));
            }
            ReportFormat::Markdown => {
                let p = run.report_dir.join("summary.md");
                files.push(p.clone());
                reporters.push(Box::new(MarkdownReporter::to_file(p)));
            }
            // A format added to the config enum but not yet wired here.
            other => tracing::warn!("report format {other:?} is not supported by this build"),
        }
    }
    (reporters, files)
}

/// Run a configured suite as `citadel-itest run` does; see [`RunRequest`]. Must be called
/// inside a multi-threaded Tokio runtime (with the `signal` driver when Ctrl-C is handled);
/// from synchronous code use [`run_configured_blocking`].
pub async fn run_configured(request: RunRequest) -> RunOutcome {
    let RunRequest {
        files,
        overrides,
        only,
        skip,
        reporters: extra,
        report_files: extra_files,
        cancel,
        ctrl_c,
        messages,
    } = request;
    let say = |line: &str| {
        if messages {
            eprintln!("{line}");
        }
    };
    let loaded = match crate::load(&files, overrides) {
        Ok(l) => l,
        Err(e) => {
            say(&format!("error: {e}"));
            return RunOutcome::failed(e.into());
        }
    };
    let builder = match crate::plan(&loaded, &only, &skip) {
        Ok(b) => b,
        Err(e) => {
            say(&format!("error: {e}"));
            return RunOutcome::failed(e.into());
        }
    };
    let (mut reporters, mut report_files) = reporters_for(&loaded.config.run);
    reporters.extend(extra);
    report_files.extend(extra_files);

    let signals = ctrl_c
        .then(|| cancel_on_ctrl_c(cancel.clone(), "interrupted: cancelling unfinished checks"));
    let output = builder.cancellation(cancel).build().run(reporters).await;
    if let Some(task) = signals {
        task.abort();
    }

    for e in &output.report_errors {
        say(&format!("error: {}", redact_text(&error_chain(e))));
    }
    report_files.retain(|f| f.exists());
    for f in &report_files {
        say(&format!("report written: {}", f.display()));
    }
    RunOutcome {
        exit_code: u8::try_from(output.exit_code()).unwrap_or(1),
        output: Some(output),
        error: None,
        report_files,
    }
}

/// On the first Ctrl-C, print `message` (with "(Ctrl-C again to abort)") and cancel `token`;
/// on a second, exit the process with 130 at once. Abort the returned task to stop listening.
/// Must be called inside a Tokio runtime with signals enabled.
pub fn cancel_on_ctrl_c(
    token: CancellationToken,
    message: &'static str,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\n{message} (Ctrl-C again to abort)");
            token.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    })
}

/// [`run_configured`] on a runtime of its own (multi-threaded, shut down after the run with
/// one second for stray tasks). Do not call it from inside a Tokio runtime.
pub fn run_configured_blocking(request: RunRequest) -> RunOutcome {
    let messages = request.messages;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let error = RunError::Runtime(e);
            if messages {
                eprintln!("error: {}", error_chain(&error));
            }
            return RunOutcome::failed(error);
        }
    };
    let outcome = runtime.block_on(run_configured(request));
    runtime.shutdown_timeout(Duration::from_secs(1));
    outcome
}

/// The nearest `.env`, from the working directory up; none is fine.
fn find_dotenv() -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors()
        .map(|dir| dir.join(".env"))
        .find(|p| std::fs::symlink_metadata(p).is_ok())
}

/// Load the nearest `.env` (working directory, then its parents) into the environment,
/// strictly: only a regular file of at most 1 MiB, and every line must parse (a line that
/// does not is an error naming file and line, never the silent end of the file; the line's
/// text is not shown, it may hold a secret). Variables already set win. No `.env` is fine.
///
/// [`crate::load`] calls it first, so the binary, [`run_configured`] and embedding code get the
/// same layering. Needs the `dotenv` feature (on by default, part of `cli`); without it, this
/// does nothing.
pub fn load_dotenv() -> Result<(), ConfigError> {
    match find_dotenv() {
        Some(path) => load_dotenv_file(&path),
        None => Ok(()),
    }
}

#[cfg(not(feature = "dotenv"))]
fn load_dotenv_file(_path: &Path) -> Result<(), ConfigError> {
    Ok(())
}

#[cfg(feature = "dotenv")]
fn load_dotenv_file(path: &Path) -> Result<(), ConfigError> {
    use citadel_itest_core::config::{ConfigProblem, MAX_ENV_FILE_BYTES, read_input_file};
    let shown = path.display().to_string();
    let fail = |source: String, message: String| ConfigError {
        problems: vec![ConfigProblem::new("", Some(source), message)],
    };
    let bytes = read_input_file(path, MAX_ENV_FILE_BYTES)
        .map_err(|e| fail(shown.clone(), format!("cannot read .env file {shown}: {e}")))?;
    let text = String::from_utf8_lossy(&bytes);
    let mut problems = Vec::new();
    let mut from = 0usize;
    for item in dotenvy::from_read_iter(std::io::Cursor::new(&bytes)) {
        match item {
            Ok(_) => {}
            Err(dotenvy::Error::LineParse(line, index)) => {
                // The line's number: the next line start, from the last error on, holding it.
                let mut starts =
                    std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1));
                let found = starts.find(|&s| s >= from && text[s..].starts_with(line.as_str()));
                let at = found.unwrap_or(from);
                from = at + line.len();
                let number = text[..at.min(text.len())].matches('\n').count() + 1;
                // The line itself is not shown: it may hold a secret.
                problems.push(ConfigProblem::new(
                    "",
                    Some(format!("{shown}:{number}")),
                    format!(
                        "line {number} of {shown} cannot be parsed (at character {index}): \
                         write KEY=VALUE, quote values with spaces or `#`, start comments with `#`"
                    ),
                ));
            }
            Err(e) => problems.push(ConfigProblem::new(
                "",
                Some(shown.clone()),
                format!("cannot read .env file {shown}: {e}"),
            )),
        }
    }
    if !problems.is_empty() {
        return Err(ConfigError { problems });
    }
    dotenvy::from_read(std::io::Cursor::new(&bytes))
        .map_err(|e| fail(shown.clone(), format!("cannot load .env file {shown}: {e}")))
}
