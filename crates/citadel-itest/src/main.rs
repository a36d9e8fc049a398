//! The `citadel-itest` binary: `run`, `validate`, `list`, `load`.
//!
//! Exit codes: 0 every executed check passed; 1 a check failed or errored (or a report could
//! not be written); 2 invalid config or usage; 130 interrupted.

use std::path::PathBuf;
use std::process::ExitCode;

use std::io::IsTerminal;

use citadel_itest::config::ConfigError;
#[cfg(feature = "monitoring")]
use citadel_itest::config::redact_text;
use citadel_itest::{Loaded, RunRequest};
use clap::{Args, Parser, Subcommand};

#[cfg(feature = "load")]
mod load_cmd;
#[cfg(feature = "faults")]
mod proxy_cmd;
mod report_cmd;

#[derive(Parser)]
#[command(
    name = "citadel-itest",
    version,
    about = "Integration tests for the Citadel LLM platform"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the configured checks and write reports.
    Run(RunArgs),
    /// Load and validate configuration without connecting to anything.
    Validate(ConfigArgs),
    /// List the checks the configuration produces.
    List(ListArgs),
    /// Run the `load:` scenarios alone, with live progress; `load merge` merges results.
    #[cfg(feature = "load")]
    Load(load_cmd::LoadArgs),
    /// Re-render a saved report.json (`report render`) or compare two (`report compare`).
    Report(report_cmd::ReportArgs),
    /// Run a TCP/HTTP fault proxy (with an optional REST control API) until Ctrl-C/SIGTERM.
    #[cfg(feature = "faults")]
    Proxy(proxy_cmd::ProxyArgs),
}

#[derive(Args)]
struct ConfigArgs {
    /// Config file (YAML); repeat to layer, later files win.
    #[arg(long = "config", short = 'c', value_name = "FILE")]
    configs: Vec<PathBuf>,
}

#[derive(Args)]
struct ListArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Only checks whose id matches this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    only: Vec<String>,
    /// Leave out checks whose id matches this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    skip: Vec<String>,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    list: ListArgs,
    /// Directory for report files (default from config: target/itest-reports).
    #[arg(long, value_name = "DIR")]
    report_dir: Option<PathBuf>,
    /// Reports to write, comma separated: console,json,junit,html,md.
    #[arg(long, value_delimiter = ',', value_name = "FORMATS")]
    format: Vec<String>,
    /// Checks running at once.
    #[arg(long, value_name = "N")]
    concurrency: Option<usize>,
    /// Default time budget of a check, e.g. 5s.
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,
    /// Stop after the first failure or error.
    #[arg(long)]
    fail_fast: bool,
    /// Compare the run with this earlier report.json; a regression makes the exit code 1.
    #[arg(long, value_name = "BASE.json")]
    baseline: Option<PathBuf>,
    /// How far (percent) a measurement may move in its worse direction against the baseline.
    #[arg(
        long,
        value_name = "PERCENT",
        default_value = "10%",
        requires = "baseline"
    )]
    baseline_tolerance: String,
    /// Push the results as metrics to this Pushgateway (base URL), grouping key
    /// job=citadel_itest, instance=<host name>: each run replaces the last.
    #[cfg(feature = "monitoring")]
    #[arg(long, value_name = "URL")]
    push_gateway: Option<String>,
    /// The Pushgateway grouping key's instance (default: the host name).
    #[cfg(feature = "monitoring")]
    #[arg(long, value_name = "NAME", requires = "push_gateway")]
    push_instance: Option<String>,
    /// Write the results as metrics to this node_exporter textfile (must end in .prom).
    #[cfg(feature = "monitoring")]
    #[arg(long, value_name = "PATH")]
    metrics_textfile: Option<PathBuf>,
}

fn main() -> ExitCode {
    // A `.env` in the working directory (or a parent) is read first, as the old framework did.
    if let Err(e) = citadel_itest::load_dotenv() {
        return config_failed(&e);
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, never into a file or pipe.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CITADEL_ITEST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match cli.command {
        Command::Validate(args) => validate(args),
        Command::List(args) => list(args),
        Command::Run(args) => run(args),
        #[cfg(feature = "load")]
        Command::Load(args) => load_cmd::load_command(args),
        Command::Report(args) => report_cmd::report_command(args),
        #[cfg(feature = "faults")]
        Command::Proxy(args) => proxy_cmd::proxy_command(args),
    }
}

fn config_failed(e: &ConfigError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

fn load(
    args: &ConfigArgs,
    overrides: Vec<(String, serde_json::Value)>,
) -> Result<Loaded, ExitCode> {
    citadel_itest::load(&args.configs, overrides).map_err(|e| config_failed(&e))
}

fn validate(args: ConfigArgs) -> ExitCode {
    match load(&args, Vec::new()) {
        Ok(loaded) => {
            let checks: usize = loaded.testers.iter().map(|t| t.checks().len()).sum();
            let names: Vec<&str> = loaded.testers.iter().map(|t| t.name()).collect();
            println!(
                "configuration valid: {} tester(s) [{}], {checks} check(s)",
                names.len(),
                names.join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn list(args: ListArgs) -> ExitCode {
    let loaded = match load(&args.config, Vec::new()) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let selected = citadel_itest::select(&loaded.testers, &args.only, &args.skip);
    for (tester, check) in &selected {
        let timeout = check
            .timeout()
            .map(|d| format!("  timeout {}", humantime_fmt(d)))
            .unwrap_or_default();
        println!(
            "{:<48} {:<10} {}{timeout}",
            check.id(),
            tester,
            check.category()
        );
    }
    eprintln!("{} check(s)", selected.len());
    ExitCode::SUCCESS
}

fn humantime_fmt(d: std::time::Duration) -> String {
    format!("{:.3}s", d.as_secs_f64()).replace(".000s", "s")
}

fn run(args: RunArgs) -> ExitCode {
    let mut overrides = Vec::new();
    if let Some(dir) = &args.report_dir {
        overrides.push(("run.report_dir".to_string(), serde_json::json!(dir)));
    }
    if !args.format.is_empty() {
        overrides.push(("run.formats".to_string(), serde_json::json!(args.format)));
    }
    if let Some(n) = args.concurrency {
        overrides.push(("run.concurrency".to_string(), serde_json::json!(n)));
    }
    if let Some(t) = &args.timeout {
        overrides.push(("run.timeout".to_string(), serde_json::json!(t)));
    }
    if args.fail_fast {
        overrides.push(("run.fail_fast".to_string(), serde_json::json!(true)));
    }
    let mut request = RunRequest::new(args.list.config.configs.clone()).overrides(overrides);
    for glob in &args.list.only {
        request = request.only(glob.clone());
    }
    for glob in &args.list.skip {
        request = request.skip(glob.clone());
    }
    #[cfg(feature = "monitoring")]
    let pushed_to = match export_reporters(&args, request) {
        Ok((r, url)) => {
            request = r;
            url
        }
        Err(e) => {
            eprintln!("error: {}", redact_text(&e.to_string()));
            return ExitCode::from(2);
        }
    };
    let baseline =
        match report_cmd::Baseline::open(args.baseline.as_deref(), &args.baseline_tolerance) {
            Ok(b) => b,
            Err(code) => return code,
        };
    if let Some(b) = &baseline {
        request = request.reporter(b.reporter());
    }
    let outcome = citadel_itest::run_configured_blocking(request);
    #[cfg(feature = "monitoring")]
    if let (Some(url), Some(out)) = (pushed_to, &outcome.output) {
        if out.report_errors.iter().all(|e| e.format != "pushgateway") {
            eprintln!("metrics pushed: {}", redact_text(&url));
        }
    }
    match &baseline {
        Some(b) => ExitCode::from(b.finish(outcome.exit_code)),
        None => outcome.process_exit_code(),
    }
}

/// The `--push-gateway` and `--metrics-textfile` reporters; returns the push URL, if any.
#[cfg(feature = "monitoring")]
fn export_reporters(
    args: &RunArgs,
    mut request: RunRequest,
) -> Result<(RunRequest, Option<String>), citadel_itest_monitoring::export::ExportError> {
    use citadel_itest_monitoring::export::{PushgatewayReporter, TextfileReporter};
    if let Some(path) = &args.metrics_textfile {
        request = request
            .reporter(Box::new(TextfileReporter::new(path)?))
            .report_file(path);
    }
    let Some(url) = &args.push_gateway else {
        return Ok((request, None));
    };
    let mut push = PushgatewayReporter::new(url)?;
    if let Some(instance) = &args.push_instance {
        push = push.instance(instance)?;
    }
    let push_url = push.push_url();
    Ok((request.reporter(Box::new(push)), Some(push_url)))
}
