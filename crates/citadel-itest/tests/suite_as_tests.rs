//! A configured suite as cargo tests (`harness = false`, feature `harness`): every check of a
//! small config against a real nginx gateway (testkit) is one test that `cargo test` and
//! `cargo nextest` list, filter and run; two more tests run this binary again to see what a
//! user sees: the listing, and a failing check's message and measurements.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use citadel_itest::harness::{self, Arguments, Failed, Trial};
use citadel_itest_testkit::{Nginx, closed_port};

/// Set by the parent when it runs this binary on a config of its choosing.
const CHILD_CONFIG: &str = "CITADEL_ITEST_SUITE_AS_TESTS_CONFIG";

/// The checks the passing config produces, in plan order.
const CHECKS: [&str; 3] = [
    "basic.gateway.connectivity",
    "basic.gateway.health",
    "basic.gateway_tcp.connectivity",
];

fn main() -> ExitCode {
    if let Some(config) = std::env::var_os(CHILD_CONFIG) {
        // What a user's `harness = false` test target is: one call.
        return harness::run_suite_as_tests(&[PathBuf::from(config)]);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let nginx = runtime
        .block_on(Nginx::start())
        .expect("start nginx (Debian nginx-light)");
    let dir = tempfile::tempdir().expect("temp dir");
    let passing = write(
        dir.path(),
        "passing.yaml",
        &format!(
            "run:\n  timeout: 5s\n  retries: 1\n  retry_backoff: 50ms\n\
             basic:\n  targets:\n\
             \x20   - name: gateway\n      url: {url}\n      health_path: /health\n      \
             expect_json: {{ pointer: /status, equals: ok }}\n\
             \x20   - name: gateway_tcp\n      url: tcp://127.0.0.1:{port}\n",
            url = nginx.url(),
            port = nginx.port(),
        ),
    );
    // Health latency must be under 1 µs: impossible, so the check fails on its measurement; the
    // other target is a closed port, so its connectivity check fails with the OS's words.
    let failing = write(
        dir.path(),
        "failing.yaml",
        &format!(
            "run:\n  timeout: 5s\n  retries: 0\n\
             performance_targets:\n  latency_p95: 1us\n\
             basic:\n  targets:\n\
             \x20   - name: gateway\n      url: {url}\n      health_path: /health\n\
             \x20   - name: nobody\n      url: tcp://127.0.0.1:{closed}\n",
            url = nginx.url(),
            closed = closed_port().expect("a closed port"),
        ),
    );

    let mut trials = match harness::trials(&[&passing]) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let listed_from = passing.clone();
    trials.push(Trial::test("harness::lists_every_check_by_id", move || {
        lists_every_check_by_id(&listed_from)
    }));
    trials.push(Trial::test(
        "harness::a_failed_check_prints_its_message_and_measurements",
        move || a_failed_check_prints_its_message_and_measurements(&failing),
    ));
    let conclusion = harness::run(&Arguments::from_args(), trials);
    drop(nginx);
    drop(runtime);
    conclusion.exit_code()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write config");
    p
}

/// This binary on `config` with `args`: exit code, stdout, stderr.
fn child(config: &Path, args: &[&str]) -> Result<(i32, String, String), Failed> {
    let exe = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    let out = Command::new(exe)
        .args(args)
        .env(CHILD_CONFIG, config)
        .output()
        .map_err(|e| format!("run the test binary again: {e}"))?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), Failed> {
    if ok { Ok(()) } else { Err(what().into()) }
}

fn lists_every_check_by_id(config: &Path) -> Result<(), Failed> {
    // The listing nextest reads (`--list --format terse`): one `ID: test` line per check.
    let (code, stdout, stderr) = child(config, &["--list", "--format", "terse"])?;
    ensure(code == 0, || format!("--list exited {code}: {stderr}"))?;
    let mut lines: Vec<&str> = stdout.lines().collect();
    lines.sort_unstable();
    let mut want: Vec<String> = CHECKS.iter().map(|c| format!("{c}: test")).collect();
    want.sort_unstable();
    ensure(lines == want, || {
        format!("listed {lines:?}, expected {want:?}")
    })?;
    // A filter selects by id substring, as with any cargo test.
    let (code, stdout, stderr) = child(config, &["--list", "--format", "terse", "gateway_tcp"])?;
    ensure(code == 0, || format!("--list exited {code}: {stderr}"))?;
    ensure(
        stdout.trim() == "basic.gateway_tcp.connectivity: test",
        || format!("filtered listing: {stdout:?}"),
    )
}

fn a_failed_check_prints_its_message_and_measurements(config: &Path) -> Result<(), Failed> {
    let (code, stdout, stderr) = child(config, &["--exact", "basic.gateway.health"])?;
    ensure(code == 101, || {
        format!("a failing check must fail its test (exit 101), got {code}\n{stdout}\n{stderr}")
    })?;
    for needle in [
        "test basic.gateway.health ... FAILED",
        "check basic.gateway.health failed",
        "measurements:",
        "latency_p95=",
        "0 passed; 1 failed",
        "2 filtered out",
    ] {
        ensure(stdout.contains(needle), || {
            format!("`{needle}` missing from the output:\n{stdout}\n{stderr}")
        })?;
    }
    let (code, stdout, stderr) = child(config, &["--exact", "basic.nobody.connectivity"])?;
    ensure(code == 101, || format!("exit {code}\n{stdout}\n{stderr}"))?;
    ensure(stdout.contains("connection refused"), || {
        format!("the check's message is missing:\n{stdout}")
    })?;
    Ok(())
}
