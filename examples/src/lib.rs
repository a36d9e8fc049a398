//! Example binaries and benchmarks for citadel-itest; see the `examples` directory.
//!
//! The examples run against the local stack (`scripts/services.sh up`; `scripts/examples.sh`
//! runs every one of them) from the repository root. This library holds the little they share:
//! reading `--flag VALUE` arguments and turning a run into an exit code.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use citadel_itest::{RunOutput, Status, TestResult};

/// Every value given as `--name VALUE` or `--name=VALUE` on the command line, in order.
pub fn flags(name: &str) -> Vec<String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut values = Vec::new();
    let mut i = 0;
    while i < args.len() {
        if args[i] == name {
            if let Some(v) = args.get(i + 1) {
                values.push(v.clone());
            }
            i += 2;
            continue;
        }
        if let Some(v) = args[i].strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
            values.push(v.to_string());
        }
        i += 1;
    }
    values
}

/// The last `--name VALUE` on the command line, else `default`.
pub fn flag(name: &str, default: &str) -> String {
    flags(name).pop().unwrap_or_else(|| default.to_string())
}

/// The run's exit code for `main` (0 passed; 1 a check failed or errored or a report could not
/// be written; 130 interrupted).
pub fn exit_code(out: &RunOutput) -> ExitCode {
    ExitCode::from(u8::try_from(out.exit_code()).unwrap_or(1))
}

/// One line for a result: status, duration, id, and the message when there is one.
pub fn line(result: &TestResult) -> String {
    let status = match result.outcome.status() {
        Status::Passed => "PASS",
        Status::Failed => "FAIL",
        Status::Skipped => "SKIP",
        _ => "ERROR",
    };
    let mut line = format!("{status:5} {:>7.1?} {}", result.duration, result.id);
    if let Some(message) = result.outcome.message() {
        line.push_str(": ");
        line.push_str(message);
    }
    line
}
