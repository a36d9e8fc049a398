//! What the binary's tests share: running `citadel-itest` and reading what it did.

#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use assert_cmd::cargo::cargo_bin;

/// One run of the binary: exit code, output and wall time.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Runs `citadel-itest args` in `dir` with `env` added (and `CITADEL_ITEST_LOG` removed).
pub fn citadel(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Run {
    let start = Instant::now();
    let mut cmd = Command::new(cargo_bin("citadel-itest"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("CITADEL_ITEST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("spawn citadel-itest");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}
