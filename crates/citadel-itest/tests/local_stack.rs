//! The demo path end to end: `scripts/services.sh up` starts the local stack (real PostgreSQL,
//! Prometheus and nginx, testkit's model and Qdrant fixtures) on its fixed loopback ports, and
//! `citadel-itest run --config config/local.yaml` passes against it, with every tester's results
//! and measurements in the reports and no secret in any output.
//!
//! The stack uses fixed ports, so nextest runs this test alone (`.config/nextest.toml`). A stack
//! that was already up (from `scripts/demo.sh`) is used and left up; otherwise this test starts
//! a fresh one (its `target/services/` removed first, as on a new machine), runs the suite on
//! it twice (the first run on a fresh stack must pass too) and stops it again.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use assert_cmd::cargo::cargo_bin;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn services(arg: &str) -> Output {
    let mut cmd = Command::new(repo().join("scripts/services.sh"));
    cmd.arg(arg).current_dir(repo());
    // Reuse the fixtures binary the workspace test build made (`--all-features`), if any.
    let fixtures = cargo_bin("citadel-itest").with_file_name("citadel-itest-fixtures");
    if fixtures.is_file() {
        cmd.env("CITADEL_FIXTURES_BIN", fixtures);
    }
    cmd.output().expect("run scripts/services.sh")
}

/// Stops the stack at the end when this test started it, also when an assertion fails.
struct StackGuard {
    stop: bool,
}

impl Drop for StackGuard {
    fn drop(&mut self) {
        if self.stop {
            let out = services("down");
            eprintln!("services.sh down: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// A plain HTTP/1.0 GET on loopback: (status, body).
fn http_get(port: u16, path: &str, api_key: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\napi-key: {api_key}\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn secret(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

#[test]
fn demo_config_passes_against_the_local_stack() {
    let was_up = services("status").status.success();
    if !was_up {
        // A fresh stack, as on a new machine: no data directory, no secrets, no demo rows. The
        // demo must pass on its first run against it (it once failed only then).
        let _ = services("down");
        let dir = repo().join("target/services");
        if dir.exists() {
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
    let up = services("up");
    let _guard = StackGuard { stop: !was_up };
    assert!(
        up.status.success(),
        "scripts/services.sh up failed:\n{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let exported = String::from_utf8_lossy(&up.stdout).into_owned();
    let pg_password = secret(&repo().join("target/services/postgres/password"));
    let qdrant_key = secret(&repo().join("target/services/qdrant/api_key"));
    assert!(!exported.contains(&pg_password) && !exported.contains(&qdrant_key));

    // The first run on the fresh stack, then a second one: both pass.
    for round in ["first", "second"] {
        eprintln!("{round} run");
        run_demo_suite(&pg_password, &qdrant_key);
    }
}

fn run_demo_suite(pg_password: &str, qdrant_key: &str) {
    let reports = tempfile::tempdir().unwrap();
    let out = Command::new(cargo_bin("citadel-itest"))
        .args([
            "run",
            "--config",
            "config/local.yaml",
            "--format",
            "console,json,junit",
        ])
        .arg("--report-dir")
        .arg(reports.path())
        .current_dir(repo())
        .env_remove("CITADEL_ITEST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );

    let json = std::fs::read_to_string(reports.path().join("report.json")).unwrap();
    let junit = std::fs::read_to_string(reports.path().join("junit.xml")).unwrap();
    for (name, text) in [
        ("stdout", &*stdout),
        ("stderr", &*stderr),
        ("report.json", &json),
        ("junit.xml", &junit),
    ] {
        assert!(
            !text.contains(pg_password),
            "the Postgres password is in {name}"
        );
        assert!(
            !text.contains(qdrant_key),
            "the Qdrant API key is in {name}"
        );
    }

    let report: Value = serde_json::from_str(&json).unwrap();
    let results = report["results"].as_array().unwrap();
    let of = |tester: &str| -> Vec<&Value> {
        results.iter().filter(|r| r["tester"] == tester).collect()
    };

    // basic: every service of the stack, each reachable and healthy.
    let basic = of("basic");
    for target in [
        "gateway",
        "gateway_models",
        "model_a",
        "model_b",
        "model_c",
        "qdrant",
        "prometheus",
        "postgres",
    ] {
        let r = basic
            .iter()
            .find(|r| r["id"] == format!("basic.{target}.connectivity"))
            .unwrap_or_else(|| panic!("no connectivity check for {target}"));
        assert_eq!(r["status"], "passed", "{r}");
    }

    // external_api: 18 results, 6 categories x (Postgres, Qdrant, Prometheus), with latencies.
    let external = of("external_api");
    assert_eq!(external.len(), 18, "{external:#?}");
    for r in &external {
        let ok = r["status"] == "passed"
            || (r["id"] == "external_api.metrics.authentication"
                && r["status"] == "skipped"
                && r["message"].as_str().unwrap_or("").contains("not required"));
        assert!(ok, "{r}");
    }
    for service in ["main_db", "vectors", "metrics"] {
        let perf = external
            .iter()
            .find(|r| r["id"] == format!("external_api.{service}.performance"))
            .unwrap();
        let p95 = perf["measurements"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "latency_p95")
            .unwrap_or_else(|| panic!("no latency_p95 in {perf}"));
        assert!(
            p95["value"].as_f64().unwrap() > 0.0 && p95["threshold"]["op"] == "<",
            "{p95}"
        );
    }

    // Versions as text in the details, as the servers report them.
    for service in ["main_db", "vectors", "metrics"] {
        let r = external
            .iter()
            .find(|r| r["id"] == format!("external_api.{service}.connectivity"))
            .unwrap();
        let version = r["details"]["server_version"].as_str().unwrap_or_default();
        assert!(
            version.chars().next().is_some_and(|c| c.is_ascii_digit()),
            "{r}"
        );
    }

    // database: the demo schema validates exactly, data integrity and pooling pass.
    let database = of("database");
    let schema_checks = database
        .iter()
        .filter(|r| r["category"] == "schema")
        .count();
    assert_eq!(
        schema_checks, 10,
        "nine schemas plus extensions/namespaces: {database:#?}"
    );
    for r in &database {
        assert_eq!(r["status"], "passed", "{r}");
    }

    // cross_service: every gateway check passed (stickiness and failover are not configured:
    // skipped), with the load-balancing test's figures in the result; the two built-in flows
    // (model to vector database, model to database) passed too.
    let cross = of("cross_service");
    assert_eq!(cross.len(), 12, "{cross:#?}");
    for id in [
        "cross_service.flows.model_to_vector",
        "cross_service.flows.model_to_database",
    ] {
        assert!(
            cross.iter().any(|r| r["id"] == id),
            "{id} missing: {cross:#?}"
        );
    }
    for r in &cross {
        let skipped_by_config = [
            "cross_service.gateway.stickiness",
            "cross_service.gateway.failover",
        ];
        let ok = r["status"] == "passed"
            || (skipped_by_config.iter().any(|id| r["id"] == *id) && r["status"] == "skipped");
        assert!(ok, "{r}");
    }
    let lb = cross
        .iter()
        .find(|r| r["id"] == "cross_service.gateway.load_balancing")
        .unwrap();
    for key in [
        "p_value",
        "chi_square",
        "observed_shares",
        "expected_shares",
    ] {
        assert!(lb["details"].get(key).is_some(), "no {key} in {lb}");
    }

    // load: the short stream scenario through the gateway passed its thresholds, with TTFT
    // measured on every request and the model backend's resources sampled.
    let load = of("load");
    assert_eq!(load.len(), 1, "{load:#?}");
    assert_eq!(load[0]["id"], "load.gateway_chat_stream");
    assert_eq!(load[0]["status"], "passed", "{}", load[0]);
    let figures = &load[0]["details"]["load"];
    let requests = figures["counts"]["requests"].as_u64().unwrap();
    assert!(requests >= 50, "{figures}");
    assert_eq!(
        figures["metrics"]["ttft"]["count"].as_u64().unwrap(),
        requests
    );
    assert!(
        figures["resources"]["samples"].as_u64().unwrap() >= 3,
        "{figures}"
    );

    // monitoring: every check passed: the /metrics pages parse and lint clean, Prometheus's
    // targets, rules, queries and alerts are as expected, and the alert drill went through
    // Prometheus and Alertmanager to the webhook and back to resolved.
    let monitoring = of("monitoring");
    for id in [
        "monitoring.model_a_metrics.metrics",
        "monitoring.model_a_metrics.rates",
        "monitoring.prometheus.targets",
        "monitoring.prometheus.rules",
        "monitoring.drills.drill",
        "monitoring.health.gateway",
    ] {
        assert!(
            monitoring.iter().any(|r| r["id"] == id),
            "{id} missing: {monitoring:#?}"
        );
    }
    for r in &monitoring {
        assert_eq!(r["status"], "passed", "{r}");
    }
    // The drill removed what it pushed.
    let (status, body) = http_get(59091, "/metrics", "");
    assert_eq!(status, 200, "{body}");
    assert!(
        !body.contains("citadel_itest_drill_condition{"),
        "the drill's metric is still on the Pushgateway: {body}"
    );

    // faults: the gateway's /drill/ route, through the fault proxy in front of model-c, retries
    // a 502 once, answers 504 after its 2 s read timeout, and degrades to an OpenAI-format 503
    // with Retry-After; every fault was removed afterwards.
    let faults = of("faults");
    assert_eq!(faults.len(), 3, "{faults:#?}");
    for r in &faults {
        assert_eq!(r["status"], "passed", "{r}");
    }
    let (status, body) = http_get(58190, "/faults", "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.trim(), "[]", "faults left on the proxy: {body}");

    // The summary adds up, and the temporary Qdrant collections are gone.
    let s = &report["summary"];
    assert_eq!(s["total"].as_u64().unwrap() as usize, results.len());
    let (status, body) = http_get(56333, "/collections", qdrant_key);
    assert_eq!(status, 200, "{body}");
    assert!(
        !body.contains("citadel_itest_"),
        "temporary collection left behind: {body}"
    );
}
