//! The whole suite from a config, exactly as `citadel-itest run` runs it: `.env`, layered and
//! validated configuration, `--only`/`--skip`, the reporters `run.formats` names, Ctrl-C and the
//! exit code (0 passed, 1 failed or a report not written, 2 bad config, 130 interrupted). No run
//! loop of its own: it calls the library entry point the binary calls, `run_configured`.
//!
//! `cargo run -p citadel-itest-examples --example run_integration_tests -- [--config config/local.yaml]... [--only GLOB]... [--skip GLOB]... [--report-dir target/itest-reports]`
//!
//! From the repository root, with the local stack up (`scripts/services.sh up`).

use std::process::ExitCode;

use citadel_itest::RunRequest;
use citadel_itest_examples::flags;

fn main() -> ExitCode {
    let mut configs = flags("--config");
    if configs.is_empty() {
        configs.push("config/local.yaml".into());
    }
    let mut request = RunRequest::new(configs);
    for glob in flags("--only") {
        request = request.only(glob);
    }
    for glob in flags("--skip") {
        request = request.skip(glob);
    }
    if let Some(dir) = flags("--report-dir").pop() {
        request = request.set("run.report_dir", dir);
    }
    citadel_itest::run_configured_blocking(request).process_exit_code()
}
