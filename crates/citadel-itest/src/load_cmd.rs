//! `citadel-itest load`: run the configured load scenarios with live progress, write one
//! result file per scenario, and gate on their thresholds; `citadel-itest load merge`: merge
//! the result files of several processes exactly and judge the merged run.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use citadel_itest::config::{ConfigProblem, read_input_file, redact_text};
use citadel_itest::load::config::LoadConfig;
use citadel_itest::load::distributed::client::ShardClient;
use citadel_itest::load::distributed::coordinator::{
    Coordinator, CoordinatorConfig, CoordinatorError,
};
use citadel_itest::load::distributed::{format_duration, parse_duration};
use citadel_itest::load::progress::ProgressMode;
use citadel_itest::load::result::LoadResult;
use citadel_itest::load::scenario::{self, RunOptions};
use citadel_itest::load::shard::{self, Shard};
use citadel_itest::load::slo::Threshold;
use citadel_itest::report::write_atomic;
use clap::{Args, Subcommand};
use tokio_util::sync::CancellationToken;

/// Largest result file `load merge` reads.
const MAX_RESULT_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct LoadArgs {
    #[command(subcommand)]
    action: Option<LoadAction>,
    #[command(flatten)]
    run: LoadRunArgs,
}

#[derive(Subcommand)]
enum LoadAction {
    /// Merge result files of several load processes into one (histograms added exactly)
    /// and judge the thresholds on the merged run.
    Merge(MergeArgs),
    /// Coordinate a distributed run: hand N shards the plan and a common start, collect
    /// their results, merge them exactly and judge the thresholds on the whole.
    Coordinate(CoordinateArgs),
    /// Print Kubernetes manifests for a distributed run: an Indexed Job of shards, the
    /// coordinator's Pod and headless Service, a ConfigMap with the config.
    K8sManifests(ManifestArgs),
}

#[derive(Args)]
struct ManifestArgs {
    /// How many shards (Job completions and parallelism).
    #[arg(long, value_name = "N")]
    shards: u32,
    /// The container image holding `citadel-itest`.
    #[arg(long, value_name = "IMAGE")]
    image: String,
    /// The configuration file to put in the ConfigMap.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The scenario to run (needed when several are configured).
    #[arg(long, value_name = "NAME")]
    scenario: Option<String>,
    /// Namespace of every object (default: the current one).
    #[arg(long, value_name = "NS")]
    namespace: Option<String>,
    /// The existing Secret holding the bearer token under key `token`.
    #[arg(long, value_name = "NAME", default_value = "citadel-itest-load-token")]
    token_secret: String,
    /// Prefix of every object's name.
    #[arg(long, value_name = "NAME", default_value = "citadel-itest-load")]
    name: String,
    /// The coordinator's deadline.
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = parse_duration)]
    deadline: std::time::Duration,
    /// Retries of each shard's pod (`backoffLimitPerIndex`).
    #[arg(long, value_name = "N", default_value_t = 0)]
    backoff_limit_per_index: i32,
}

#[derive(Args)]
struct CoordinateArgs {
    #[command(flatten)]
    config: crate::ConfigArgs,
    /// The scenario the shards run (required when several are configured).
    #[arg(long, value_name = "NAME")]
    scenario: Option<String>,
    /// How many shards report.
    #[arg(long, value_name = "N")]
    shards: u32,
    /// Address to listen on (loopback unless a token is given).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7070")]
    listen: std::net::SocketAddr,
    /// File holding the bearer token shards must send.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Fail the run when a shard has not reported this long after the coordinator started.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    deadline: std::time::Duration,
    /// The common start is this long after the first shard asks for the plan.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = parse_duration)]
    start_lead: std::time::Duration,
    /// Directory for the merged `load-<scenario>.json` (default: `run.report_dir`).
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

#[derive(Args)]
struct LoadRunArgs {
    #[command(flatten)]
    config: crate::ConfigArgs,
    /// Run only this scenario (repeatable); default all.
    #[arg(long, value_name = "NAME")]
    scenario: Vec<String>,
    /// Directory for the result files `load-<scenario>.json` (default: `run.report_dir`).
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
    /// Print nothing but the summary (no live progress).
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Run only shard INDEX/COUNT of the run (0-based; default from the env vars
    /// JOB_COMPLETION_INDEX and CITADEL_ITEST_SHARDS when both are set).
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
    /// Begin the run at this time (RFC 3339 or Unix milliseconds; at most 10 minutes
    /// ahead), so that shards' ramps line up.
    #[arg(long, value_name = "TIME")]
    start_at: Option<String>,
    /// Run as a shard of the coordinator at this URL: fetch the plan and start time from it
    /// and post the result to it (needs --shard or the env vars).
    #[arg(long, value_name = "URL")]
    coordinator: Option<String>,
    /// File holding the coordinator's bearer token.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

#[derive(Args)]
struct MergeArgs {
    /// Result files written by `citadel-itest load` (two or more).
    #[arg(value_name = "FILE", required = true, num_args = 1..)]
    files: Vec<PathBuf>,
    /// Write the merged result here.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Judge these thresholds (repeatable) instead of those of the first file.
    #[arg(long, value_name = "THRESHOLD")]
    threshold: Vec<String>,
}

pub(crate) fn load_command(args: LoadArgs) -> ExitCode {
    match args.action {
        Some(LoadAction::Merge(m)) => merge(m),
        Some(LoadAction::Coordinate(c)) => coordinate(c),
        Some(LoadAction::K8sManifests(m)) => k8s_manifests(m),
        None => run(args.run),
    }
}

fn run(args: LoadRunArgs) -> ExitCode {
    let loaded = match crate::load(&args.config, Vec::new()) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let mut problems = Vec::new();
    let Some(section) = loaded
        .config
        .section::<LoadConfig>(citadel_itest::load::NAME, &mut problems)
    else {
        eprintln!("error: the configuration has no `load:` section with scenarios");
        return ExitCode::from(2);
    };
    let mut scenarios = section.scenarios.clone();
    if !args.scenario.is_empty() {
        let unknown: Vec<&String> = args
            .scenario
            .iter()
            .filter(|n| !scenarios.iter().any(|s| &s.name == *n))
            .collect();
        if !unknown.is_empty() {
            let known: Vec<&str> = scenarios.iter().map(|s| s.name.as_str()).collect();
            let problem = ConfigProblem::new(
                "load.scenarios",
                None,
                format!(
                    "no scenario named {} (configured: {})",
                    unknown
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    known.join(", ")
                ),
            );
            eprintln!("error: {problem}");
            return ExitCode::from(2);
        }
        scenarios.retain(|s| args.scenario.contains(&s.name));
    }
    if scenarios.is_empty() {
        eprintln!("error: `load.scenarios` is empty");
        return ExitCode::from(2);
    }
    let out_dir = args
        .out_dir
        .clone()
        .unwrap_or_else(|| loaded.config.run.report_dir.clone());
    let part = match &args.shard {
        Some(text) => text.parse::<Shard>().map(Some),
        None => Shard::from_env(),
    };
    let part = match part {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: --shard: {e}");
            return ExitCode::from(2);
        }
    };
    let start_at = match args.start_at.as_deref().map(shard::parse_start) {
        None => None,
        Some(Ok(t)) => match shard::check_start(t, std::time::SystemTime::now()) {
            Ok(()) => Some(t),
            Err(e) => {
                eprintln!("error: --start-at: {e}");
                return ExitCode::from(2);
            }
        },
        Some(Err(e)) => {
            eprintln!("error: --start-at: {e}");
            return ExitCode::from(2);
        }
    };
    let mut plan_start = None;
    if let Some(url) = &args.coordinator {
        let Some(p) = part else {
            eprintln!(
                "error: --coordinator needs --shard I/N (or JOB_COMPLETION_INDEX and \
                 CITADEL_ITEST_SHARDS)"
            );
            return ExitCode::from(2);
        };
        let token = match args.token_file.as_deref().map(read_token).transpose() {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        let client = match ShardClient::new(url, p, token) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        plan_start = Some(client);
    }
    let progress = if args.quiet {
        ProgressMode::Quiet
    } else {
        ProgressMode::Auto
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let cancel = CancellationToken::new();
    let mut code = 0u8;
    runtime.block_on(async {
        let _signals =
            citadel_itest::cancel_on_ctrl_c(cancel.clone(), "interrupted: stopping the load run");
        let mut start_at = start_at;
        let mut client = None;
        if let Some(c) = plan_start.take() {
            let plan = match c.plan().await {
                Ok(plan) => plan,
                Err(e) => {
                    eprintln!("error: {e}");
                    code = 1;
                    return;
                }
            };
            scenarios.retain(|s| s.name == plan.scenario);
            if scenarios.is_empty() {
                eprintln!(
                    "error: the coordinator runs scenario `{}`, which this configuration lacks",
                    plan.scenario
                );
                code = 2;
                return;
            }
            scenarios.truncate(1);
            start_at =
                Some(std::time::UNIX_EPOCH + std::time::Duration::from_millis(plan.start_at_ms));
            client = Some(c);
        }
        for s in &scenarios {
            if cancel.is_cancelled() {
                break;
            }
            let mut options = RunOptions::default()
                .cancel(cancel.clone())
                .progress(progress)
                .targets(loaded.config.performance_targets.clone());
            if let Some(p) = part {
                options = options.shard(p);
            }
            if let Some(t) = start_at {
                options = options.start_at(t);
            }
            let result = match scenario::run_scenario(s, &options).await {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {}", redact_text(&citadel_itest::error_chain(&e)));
                    code = code.max(1);
                    continue;
                }
            };
            let passed = print_result(&result);
            if !passed && client.is_none() {
                code = code.max(1);
            }
            if let Some(c) = &client {
                // Thresholds are judged on the merged run by the coordinator.
                match c.post(&result).await {
                    Ok(()) => {
                        eprintln!("result of shard {} posted to the coordinator", c.shard());
                        code = 0;
                    }
                    Err(e) => {
                        eprintln!("error: {}", redact_text(&e.to_string()));
                        code = 1;
                    }
                }
            }
            let path = out_dir.join(match result.shard {
                Some(p) => format!("load-{}.shard-{}-of-{}.json", s.name, p.index, p.count),
                None => format!("load-{}.json", s.name),
            });
            if let Err(e) = write_result(&path, &result) {
                eprintln!("error: {e}");
                code = code.max(1);
            } else {
                eprintln!("result written: {}", path.display());
            }
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    if cancel.is_cancelled() {
        return ExitCode::from(130);
    }
    ExitCode::from(code)
}

/// Print a result's summary and thresholds to standard output; true when it passed.
fn print_result(result: &LoadResult) -> bool {
    let verdict = scenario::verdict(result);
    let colour = std::io::stdout().is_terminal();
    let (ok, bad) = if colour {
        ("\x1b[32mPASS\x1b[0m", "\x1b[31mFAIL\x1b[0m")
    } else {
        ("PASS", "FAIL")
    };
    println!(
        "load {} ({}): {}",
        result.scenario,
        result.model,
        if verdict.is_ok() { ok } else { bad }
    );
    for line in scenario::figure_lines(result) {
        println!("  {}", redact_text(&line));
    }
    for t in &result.thresholds {
        let mark = if t.passed { "ok  " } else { "FAIL" };
        println!("  {mark} {}  ({})", t.text, redact_text(&t.message));
    }
    if let Some(p) = &result.shard {
        println!("  shard {p} of a distributed run");
    }
    if let Some(ms) = result.late_start_ms {
        println!("  late start: {ms} ms after the synchronised start");
    }
    if let Some(stopped) = &result.stopped {
        println!("  stopped: {}", redact_text(stopped));
    }
    if let Err(reasons) = &verdict {
        for r in reasons {
            eprintln!("load {}: {}", result.scenario, redact_text(r));
        }
    }
    verdict.is_ok()
}

fn write_result(path: &Path, result: &LoadResult) -> Result<(), String> {
    let json = serde_json::to_vec_pretty(result)
        .map_err(|e| format!("serialise the result of `{}`: {e}", result.scenario))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    write_atomic(path, &json).map_err(|e| format!("write {}: {e}", path.display()))
}

fn merge(args: MergeArgs) -> ExitCode {
    if args.files.len() < 2 {
        eprintln!("error: give two or more result files to merge");
        return ExitCode::from(2);
    }
    let mut results = Vec::with_capacity(args.files.len());
    for f in &args.files {
        let bytes = match read_input_file(f, MAX_RESULT_BYTES) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: {}: {e}", f.display());
                return ExitCode::from(2);
            }
        };
        match LoadResult::from_json_slice(&bytes) {
            Ok(r) => results.push(r),
            Err(e) => {
                eprintln!("error: {}: {e}", f.display());
                return ExitCode::from(2);
            }
        }
    }
    let texts: Vec<String> = if args.threshold.is_empty() {
        results[0]
            .thresholds
            .iter()
            .map(|t| t.text.clone())
            .collect()
    } else {
        args.threshold.clone()
    };
    let mut thresholds = Vec::with_capacity(texts.len());
    for t in &texts {
        match Threshold::parse(t) {
            Ok(t) => thresholds.push(t),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let mut merged = match LoadResult::merge(&results) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: merge: {e}");
            return ExitCode::from(2);
        }
    };
    merged.apply_thresholds(&thresholds);
    let passed = print_result(&merged);
    if let Some(out) = &args.out {
        if let Err(e) = write_result(out, &merged) {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
        eprintln!("merged result written: {}", out.display());
    }
    ExitCode::from(if passed { 0 } else { 1 })
}

/// Largest token file read.
const MAX_TOKEN_BYTES: u64 = 4096;

/// The bearer token in `path` (surrounding whitespace removed), registered as a secret.
fn read_token(path: &Path) -> Result<String, String> {
    let bytes = read_input_file(path, MAX_TOKEN_BYTES)
        .map_err(|e| format!("--token-file {}: {e}", path.display()))?;
    let token = String::from_utf8(bytes)
        .map_err(|_| format!("--token-file {}: not UTF-8", path.display()))?
        .trim()
        .to_string();
    if token.is_empty() {
        return Err(format!("--token-file {}: empty", path.display()));
    }
    citadel_itest::config::register_secret(&token);
    Ok(token)
}

fn coordinate(args: CoordinateArgs) -> ExitCode {
    let loaded = match crate::load(&args.config, Vec::new()) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let mut problems = Vec::new();
    let Some(section) = loaded
        .config
        .section::<LoadConfig>(citadel_itest::load::NAME, &mut problems)
    else {
        eprintln!("error: the configuration has no `load:` section with scenarios");
        return ExitCode::from(2);
    };
    let scenario = match (&args.scenario, section.scenarios.as_slice()) {
        (None, [only]) => only.clone(),
        (None, list) => {
            let names: Vec<&str> = list.iter().map(|s| s.name.as_str()).collect();
            eprintln!(
                "error: give --scenario: {} scenarios are configured ({})",
                list.len(),
                names.join(", ")
            );
            return ExitCode::from(2);
        }
        (Some(name), list) => match list.iter().find(|s| &s.name == name) {
            Some(s) => s.clone(),
            None => {
                eprintln!("error: no scenario named `{name}` in `load.scenarios`");
                return ExitCode::from(2);
            }
        },
    };
    let thresholds = match scenario::thresholds(&scenario, &loaded.config.performance_targets) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: scenario `{}`: {e}", scenario.name);
            return ExitCode::from(2);
        }
    };
    let mut config = CoordinatorConfig::new(&scenario.name, args.shards, args.deadline)
        .thresholds(thresholds)
        .start_lead(args.start_lead);
    if let Some(path) = &args.token_file {
        match read_token(path) {
            Ok(t) => config = config.token(t),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let out_dir = args
        .out_dir
        .clone()
        .unwrap_or_else(|| loaded.config.run.report_dir.clone());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let cancel = CancellationToken::new();
    let code = runtime.block_on(async {
        let _signals = citadel_itest::cancel_on_ctrl_c(
            cancel.clone(),
            "interrupted: stopping the coordinator",
        );
        let coordinator = match Coordinator::bind(args.listen, config).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {}", citadel_itest::error_chain(&e));
                return 2;
            }
        };
        if let Some(addr) = coordinator.local_addr() {
            eprintln!(
                "coordinating {} shard(s) of `{}` on http://{addr} (deadline {})",
                args.shards,
                scenario.name,
                format_duration(args.deadline)
            );
        }
        let outcome = match coordinator.run(cancel.clone()).await {
            Ok(o) => o,
            Err(e @ CoordinatorError::Missing { .. }) => {
                eprintln!("error: {e}");
                return 1;
            }
            Err(e) => {
                eprintln!("error: {}", citadel_itest::error_chain(&e));
                return 1;
            }
        };
        for (i, r) in &outcome.shards {
            println!("  shard {i}: {}", redact_text(&r.summary_line()));
        }
        let passed = print_result(&outcome.merged);
        let path = out_dir.join(format!("load-{}.json", scenario.name));
        if let Err(e) = write_result(&path, &outcome.merged) {
            eprintln!("error: {e}");
            return 1;
        }
        eprintln!("merged result written: {}", path.display());
        if passed { 0 } else { 1 }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    if cancel.is_cancelled() {
        return ExitCode::from(130);
    }
    ExitCode::from(code)
}

/// Largest configuration file put into a ConfigMap (Kubernetes allows 1 MiB).
const MAX_CONFIGMAP_BYTES: u64 = 1024 * 1024;

fn k8s_manifests(args: ManifestArgs) -> ExitCode {
    use citadel_itest::load::distributed::k8s;
    let text = match read_input_file(&args.config, MAX_CONFIGMAP_BYTES)
        .map_err(|e| e.to_string())
        .and_then(|b| String::from_utf8(b).map_err(|_| "not UTF-8".to_string()))
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: --config {}: {e}", args.config.display());
            return ExitCode::from(2);
        }
    };
    let file = args
        .config
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "load.yaml".into());
    let mut o = k8s::ManifestOptions::new(args.shards, args.image, file, text);
    o.name = args.name;
    o.scenario = args.scenario;
    o.namespace = args.namespace;
    o.token_secret = args.token_secret;
    o.deadline = args.deadline;
    o.backoff_limit_per_index = args.backoff_limit_per_index;
    match k8s::yaml(&o) {
        Ok(y) => {
            print!("{y}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
