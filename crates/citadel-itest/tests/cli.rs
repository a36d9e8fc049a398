//! The `citadel-itest` binary end to end, against real services from testkit.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::cargo_bin;
use citadel_itest_testkit::{HangingListener, Nginx, closed_port};
use common::citadel;
use serde_json::Value;

fn write_config(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, yaml).unwrap();
    p
}

fn report(dir: &Path) -> Value {
    let text =
        std::fs::read_to_string(dir.join("reports/report.json")).expect("report.json written");
    serde_json::from_str(&text).unwrap()
}

fn result<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no result {id} in {report:#}"))
}

const RUN_FAST: &str =
    "run:\n  timeout: 5s\n  retries: 1\n  retry_backoff: 50ms\n  report_dir: reports\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_against_a_real_nginx_gateway_passes() {
    let nginx = Nginx::start().await.expect("start nginx");
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "itest.yaml",
        &format!(
            "{RUN_FAST}basic:\n  targets:\n    - name: gateway\n      url: {}\n      health_path: /health\n      expect_json: {{ pointer: /status, equals: ok }}\n",
            nginx.url()
        ),
    );
    let run = citadel(&["run", "--config", "itest.yaml"], dir.path(), &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("PASS  basic.gateway.health"),
        "{}",
        run.stdout
    );
    let r = report(dir.path());
    assert_eq!(r["summary"]["passed"], 2);
    assert_eq!(r["summary"]["total"], 2);
    let health = result(&r, "basic.gateway.health");
    assert!(
        health["measurements"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "latency_p95")
    );
    assert!(dir.path().join("reports/junit.xml").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_never_answers_times_out_within_the_bound() {
    let hang = HangingListener::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "itest.yaml",
        &format!(
            "run:\n  report_dir: reports\nbasic:\n  targets:\n    - name: silent\n      url: http://127.0.0.1:{}\n      health_path: /health\n      timeout: 1s\n",
            hang.port()
        ),
    );
    let run = tokio::task::spawn_blocking({
        let d = dir.path().to_path_buf();
        move || citadel(&["run", "--config", "itest.yaml"], &d, &[])
    })
    .await
    .unwrap();
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.elapsed < Duration::from_secs(3),
        "took {:?}",
        run.elapsed
    );
    let r = report(dir.path());
    let health = result(&r, "basic.silent.health");
    assert_eq!(health["status"], "error", "{health:#}");
    assert_eq!(health["error_kind"], "timeout", "{health:#}");
    assert_eq!(result(&r, "basic.silent.connectivity")["status"], "passed");
}

#[test]
fn a_closed_port_says_connection_refused() {
    let port = closed_port().unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "itest.yaml",
        &format!(
            "{RUN_FAST}basic:\n  targets:\n    - name: nobody\n      url: http://127.0.0.1:{port}\n"
        ),
    );
    let run = citadel(&["run", "--config", "itest.yaml"], dir.path(), &[]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("connection refused"), "{}", run.stdout);
    let r = report(dir.path());
    let c = result(&r, "basic.nobody.connectivity");
    assert_eq!(c["status"], "failed");
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{port}: connection refused")),
        "{c:#}"
    );
    assert_eq!(c["attempts"], 2, "one retry configured");
}

/// Invalid configuration: exit 2, every problem with key path and file, and nothing connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_exits_2_naming_key_and_file_and_connects_nowhere() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let target = format!(
        "basic:\n  targets:\n    - name: watched\n      url: http://127.0.0.1:{port}\n      health_path: /\n"
    );
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "unknown.yaml",
            format!("run:\n  concurency: 3\n{target}"),
            vec!["run.concurency", "unknown field", "unknown.yaml"],
        ),
        (
            "type.yaml",
            format!("run:\n  concurrency: many\n{target}"),
            vec!["run.concurrency", "invalid type", "type.yaml"],
        ),
        (
            "duration.yaml",
            format!("run:\n  timeout: 3 fortnights\n{target}"),
            vec!["run.timeout", "3 fortnights", "duration.yaml"],
        ),
        (
            "secret.yaml",
            format!("{target}      auth:\n        bearer: {{ env: CITADEL_TEST_NO_SUCH_TOKEN }}\n"),
            vec![
                "basic.targets[0].auth",
                "CITADEL_TEST_NO_SUCH_TOKEN is not set",
                "secret.yaml",
            ],
        ),
        (
            "section.yaml",
            format!("{target}databse:\n  url: x\n"),
            vec!["unknown section `databse`", "section.yaml"],
        ),
    ];
    for (file, yaml, needles) in cases {
        write_config(dir.path(), file, &yaml);
        for cmd in ["run", "validate"] {
            let run = citadel(&[cmd, "--config", file], dir.path(), &[]);
            assert_eq!(run.code, 2, "{cmd} {file}: {}\n{}", run.stdout, run.stderr);
            for n in &needles {
                assert!(
                    run.stderr.contains(n),
                    "{cmd} {file}: missing `{n}` in:\n{}",
                    run.stderr
                );
            }
        }
    }
    let run = citadel(&["run", "--config", "missing.yaml"], dir.path(), &[]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("cannot read config file missing.yaml"),
        "{}",
        run.stderr
    );
    // Usage errors are exit 2 as well.
    assert_eq!(
        citadel(&["run", "--concurrency", "x"], dir.path(), &[]).code,
        2
    );
    assert_eq!(citadel(&["frobnicate"], dir.path(), &[]).code, 2);

    // Nothing connected to the target of any invalid config.
    let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
    assert!(
        accepted.is_err(),
        "an invalid config must not connect anywhere"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_appear_in_no_output_at_all() {
    let nginx = Nginx::start().await.unwrap();
    let refused = closed_port().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pw = "Sup3r-Secret-Passw0rd";
    let token = "tok-3f9a8b7c6d5e4f";
    let yaml = format!(
        "{RUN_FAST}basic:\n  targets:\n    - name: gateway\n      url: {}\n      health_path: /health\n      auth:\n        basic: {{ username: admin, password: {pw} }}\n    - name: db\n      url: postgres://app:{pw}@127.0.0.1:{refused}/db\n    - name: api\n      url: http://127.0.0.1:{refused}\n      health_path: /health\n      auth:\n        bearer: {{ env: CITADEL_TEST_TOKEN }}\n",
        nginx.url()
    );
    write_config(dir.path(), "itest.yaml", &yaml);
    let env = [
        ("CITADEL_TEST_TOKEN", token),
        ("CITADEL_ITEST_LOG", "trace"),
    ];
    let mut outputs = Vec::new();
    let run = citadel(&["run", "--config", "itest.yaml"], dir.path(), &env);
    assert_eq!(
        run.code, 1,
        "the db and api targets are refused: {}",
        run.stdout
    );
    assert!(run.stdout.contains("connection refused"));
    outputs.push(("run stdout", run.stdout));
    outputs.push(("run stderr", run.stderr));
    for f in ["reports/report.json", "reports/junit.xml"] {
        outputs.push((f, std::fs::read_to_string(dir.path().join(f)).unwrap()));
    }
    let run = citadel(&["list", "--config", "itest.yaml"], dir.path(), &env);
    outputs.push(("list", run.stdout + &run.stderr));
    let run = citadel(&["validate", "--config", "itest.yaml"], dir.path(), &env);
    outputs.push(("validate", run.stdout + &run.stderr));
    // An invalid config that contains the secrets: the error message must not echo them.
    write_config(
        dir.path(),
        "bad.yaml",
        &format!(
            "{yaml}      timeout: 0s\n    - name: bad\n      url: 'postgres://app:{pw}@ bad'\n"
        ),
    );
    let run = citadel(&["validate", "--config", "bad.yaml"], dir.path(), &env);
    assert_eq!(run.code, 2, "{}", run.stderr);
    outputs.push(("invalid config", run.stdout + &run.stderr));
    for (what, text) in &outputs {
        assert!(!text.contains(pw), "{what} leaks the password:\n{text}");
        assert!(!text.contains(token), "{what} leaks the token:\n{text}");
    }
    assert!(
        outputs[2].1.contains("<redacted>"),
        "the report shows that something was redacted"
    );
}

#[test]
fn list_validate_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "itest.yaml",
        "basic:\n  targets:\n    - name: a\n      url: http://127.0.0.1:9\n      health_path: /h\n    - name: b\n      url: tcp://127.0.0.1:9\n",
    );
    let run = citadel(&["validate", "--config", "itest.yaml"], dir.path(), &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("1 tester(s) [basic], 3 check(s)"),
        "{}",
        run.stdout
    );
    let run = citadel(
        &["list", "--config", "itest.yaml", "--only", "*.connectivity"],
        dir.path(),
        &[],
    );
    assert_eq!(run.code, 0);
    let ids: Vec<&str> = run
        .stdout
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(ids, ["basic.a.connectivity", "basic.b.connectivity"]);
    let run = citadel(
        &["run", "--config", "itest.yaml", "--only", "nothing.*"],
        dir.path(),
        &[],
    );
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("no checks to run (--only/--skip matched nothing)"),
        "{}",
        run.stderr
    );
    let run = citadel(&["run"], dir.path(), &[]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("no tester section is configured"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_cancels_and_still_writes_the_report() {
    let hang = HangingListener::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "itest.yaml",
        &format!(
            "run:\n  report_dir: reports\n  cancel_grace: 200ms\nbasic:\n  targets:\n    - name: silent\n      url: http://127.0.0.1:{}\n      health_path: /\n      timeout: 60s\n",
            hang.port()
        ),
    );
    let mut child = Command::new(cargo_bin("citadel-itest"))
        .args(["run", "--config", "itest.yaml"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let start = Instant::now();
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "did not stop after SIGINT"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(code, Some(130), "{stderr}");
    let r = report(dir.path());
    assert_eq!(r["interrupted"], true);
    let health = result(&r, "basic.silent.health");
    assert_eq!(health["error_kind"], "cancelled", "{health:#}");
}

#[test]
fn a_dotenv_file_in_the_working_directory_is_read_first() {
    let port = closed_port().unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "itest.yaml",
        &format!(
            "{RUN_FAST}basic:\n  targets:\n    - name: nobody\n      url: http://127.0.0.1:{port}\n"
        ),
    );
    std::fs::write(
        dir.path().join(".env"),
        "CITADEL_ITEST__RUN__REPORT_DIR=from-dotenv\nCITADEL_ITEST__RUN__FORMATS=[json]\n",
    )
    .unwrap();
    let run = citadel(&["run", "--config", "itest.yaml"], dir.path(), &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stdout.is_empty(),
        "console reporter disabled by .env: {}",
        run.stdout
    );
    assert!(
        dir.path().join("from-dotenv/report.json").exists(),
        "{}",
        run.stderr
    );
    // A real environment variable beats the .env file; a CLI flag beats both.
    let run = citadel(
        &["run", "--config", "itest.yaml", "--report-dir", "from-flag"],
        dir.path(),
        &[("CITADEL_ITEST__RUN__REPORT_DIR", "from-env")],
    );
    assert_eq!(run.code, 1);
    assert!(dir.path().join("from-flag/report.json").exists());
    let run = citadel(
        &["run", "--config", "itest.yaml"],
        dir.path(),
        &[("CITADEL_ITEST__RUN__REPORT_DIR", "from-env")],
    );
    assert_eq!(run.code, 1);
    assert!(dir.path().join("from-env/report.json").exists());
}
