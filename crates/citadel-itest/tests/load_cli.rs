//! `citadel-itest load` and `load merge` end to end, against a real nginx and the model
//! fixture: exit codes, messages, result files, exact merges, and load checks inside `run`.

mod common;

use std::path::Path;
use std::time::Duration;

use citadel_itest_testkit::Nginx;
use citadel_itest_testkit::model::ModelServer;
use common::citadel;
use serde_json::Value;

async fn nginx() -> Nginx {
    Nginx::builder()
        .http_snippet("keepalive_requests 1000000;")
        .start()
        .await
        .expect("start testkit nginx (Debian package nginx-light)")
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breach_exits_1_naming_metric_observed_value_and_threshold() {
    let gw = nginx().await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "load.yaml",
        &format!(
            "load:\n  scenarios:\n    - name: root\n      request: {{ url: \"{}/\" }}\n      closed: {{ vus: 2, duration: 1s }}\n      thresholds: [\"http_req_duration p99 < 1us\", \"error_rate < 1%\"]\n",
            gw.url()
        ),
    );
    let run = citadel(
        &["load", "-c", "load.yaml", "--quiet", "--out-dir", "out"],
        dir.path(),
        &[],
    );
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("load root (closed 2 vus for 1s): FAIL"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("threshold `http_req_duration p99 < 1us` failed: http_req_duration p99 = "),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("threshold < 1us"), "{}", run.stderr);
    // Quiet: no progress lines.
    assert!(!run.stderr.contains("req/s"), "{}", run.stderr);
    let result = read_json(&dir.path().join("out/load-root.json"));
    assert_eq!(result["schema"], "citadel-itest.load/v1");
    assert_eq!(result["thresholds"][0]["passed"], false);
    assert_eq!(result["thresholds"][1]["passed"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_metric_or_bad_model_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "load.yaml",
        "load:\n  scenarios:\n    - name: a\n      request: { url: \"http://127.0.0.1:9/\" }\n      open: { rate: 10, duration: 1s }\n      thresholds: [\"latency_p95 < 200ms\"]\n    - name: b\n      request: { url: \"http://127.0.0.1:9/\" }\n      open: { stages: [\"10/s for 1s\", \"fast for 2s\"] }\n",
    );
    let run = citadel(&["load", "-c", "load.yaml"], dir.path(), &[]);
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("load.scenarios[0].thresholds[0]"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("latency_p95"), "{}", run.stderr);
    assert!(
        run.stderr.contains("load.scenarios[1].open.stages"),
        "{}",
        run.stderr
    );
    // The same config is refused by `validate` and `run` before anything connects.
    let validate = citadel(&["validate", "-c", "load.yaml"], dir.path(), &[]);
    assert_eq!(validate.code, 2, "{}", validate.stderr);
    // An unknown scenario name is a usage error.
    write(
        dir.path(),
        "ok.yaml",
        "load:\n  scenarios:\n    - name: a\n      request: { url: \"http://127.0.0.1:9/\" }\n      open: { rate: 10, duration: 1s }\n",
    );
    let run = citadel(
        &["load", "-c", "ok.yaml", "--scenario", "zz"],
        dir.path(),
        &[],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("no scenario named `zz`"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_half_runs_merge_into_one_runs_counts() {
    let gw = nginx().await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "load.yaml",
        &format!(
            "load:\n  scenarios:\n    - name: half\n      request: {{ url: \"{}/\" }}\n      closed: {{ vus: 4, duration: 20s, iterations: 1500 }}\n      thresholds: [\"http_reqs == 1500\", \"error_rate < 1%\"]\n",
            gw.url()
        ),
    );
    // Two processes side by side, each half of a 3000-request run.
    let d = dir.path().to_path_buf();
    let a = std::thread::spawn({
        let d = d.clone();
        move || {
            citadel(
                &["load", "-c", "load.yaml", "-q", "--out-dir", "a"],
                &d,
                &[],
            )
        }
    });
    let b = citadel(
        &["load", "-c", "load.yaml", "-q", "--out-dir", "b"],
        &d,
        &[],
    );
    let a = a.join().unwrap();
    assert_eq!(a.code, 0, "{}\n{}", a.stdout, a.stderr);
    assert_eq!(b.code, 0, "{}\n{}", b.stdout, b.stderr);
    let merged = citadel(
        &[
            "load",
            "merge",
            "a/load-half.json",
            "b/load-half.json",
            "--out",
            "merged.json",
            "--threshold",
            "http_reqs == 3000",
        ],
        &d,
        &[],
    );
    assert_eq!(merged.code, 0, "{}\n{}", merged.stdout, merged.stderr);
    let (ra, rb, m) = (
        read_json(&d.join("a/load-half.json")),
        read_json(&d.join("b/load-half.json")),
        read_json(&d.join("merged.json")),
    );
    assert_eq!(m["counts"]["requests"], 3000);
    assert_eq!(m["runs"], 2);
    let count = |r: &Value| r["metrics"]["http_req_duration"]["count"].as_u64().unwrap();
    assert_eq!(count(&m), count(&ra) + count(&rb));
    assert_eq!(count(&m), 3000);
    // The merged percentiles lie between the halves'.
    let p = |r: &Value, q: &str| r["metrics"]["http_req_duration"][q].as_f64().unwrap();
    for q in ["p50", "p99"] {
        let (lo, hi) = (p(&ra, q).min(p(&rb, q)), p(&ra, q).max(p(&rb, q)));
        assert!(
            p(&m, q) >= lo && p(&m, q) <= hi,
            "{q}: {} not in [{lo}, {hi}]",
            p(&m, q)
        );
    }
    // A merge that breaks a threshold exits 1; a result of another scenario exits 2.
    let breach = citadel(
        &[
            "load",
            "merge",
            "a/load-half.json",
            "b/load-half.json",
            "--threshold",
            "http_reqs < 10",
        ],
        &d,
        &[],
    );
    assert_eq!(breach.code, 1, "{}", breach.stderr);
    let mut other = ra.clone();
    other["scenario"] = "other".into();
    std::fs::write(d.join("other.json"), other.to_string()).unwrap();
    let mismatch = citadel(
        &["load", "merge", "a/load-half.json", "other.json"],
        &d,
        &[],
    );
    assert_eq!(mismatch.code, 2, "{}", mismatch.stderr);
    assert!(mismatch.stderr.contains("scenario"), "{}", mismatch.stderr);
    std::fs::write(d.join("junk.json"), "{\"schema\": 1").unwrap();
    let junk = citadel(&["load", "merge", "a/load-half.json", "junk.json"], &d, &[]);
    assert_eq!(junk.code, 2, "{}", junk.stderr);
    assert!(junk.stderr.contains("junk.json"), "{}", junk.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_scenario_runs_inside_the_suite_as_a_load_check() {
    let model = ModelServer::builder()
        .models(["m"])
        .ttft(Duration::from_millis(20))
        .itl(Duration::from_millis(2))
        .completion_tokens(8)
        .start()
        .await
        .expect("start the model fixture");
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "prompts.jsonl",
        "\"one\"\n{\"prompt\": \"two\"}\n",
    );
    write(
        dir.path(),
        "itest.yaml",
        &format!(
            "run:\n  report_dir: reports\nload:\n  scenarios:\n    - name: chat\n      request:\n        url: \"{}/v1/chat/completions\"\n        headers: {{ content-type: application/json }}\n        body: '{{\"model\":\"m\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"{{{{prompt}}}}\"}}]}}'\n        prompts: {{ file: prompts.jsonl, order: random, seed: 3 }}\n      stream: true\n      open: {{ rate: 20, duration: 1s }}\n      goodput: {{ ttft: 1s }}\n      thresholds: [\"ttft p95 < 1s\", \"goodput > 95%\", \"error_rate < 1%\"]\n",
            model.url()
        ),
    );
    let run = citadel(&["run", "-c", "itest.yaml"], dir.path(), &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("PASS  load.chat"), "{}", run.stdout);
    let report = read_json(&dir.path().join("reports/report.json"));
    let result = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "load.chat")
        .expect("load.chat in the report");
    assert_eq!(result["category"], "load");
    let load = &result["details"]["load"];
    assert!(load["counts"]["requests"].as_u64().unwrap() >= 15, "{load}");
    assert!(
        load["metrics"]["ttft"]["count"].as_u64().unwrap() >= 15,
        "{load}"
    );
    assert!(!load["series"]["seconds"].as_array().unwrap().is_empty());
}
