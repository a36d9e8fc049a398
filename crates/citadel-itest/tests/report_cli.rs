//! `citadel-itest report render|compare`, the html and md run formats and `run --baseline`,
//! end to end through the binary. The runs go against a small HTTP server on 127.0.0.1 whose
//! answer delay the test sets, so a latency regression is real.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::citadel;
use serde_json::Value;

fn fixture_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/fixtures/report_with_load.json")
}

fn fixture() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture_path()).unwrap()).unwrap()
}

fn write_json(path: &Path, v: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

fn result_mut<'a>(report: &'a mut Value, id: &str) -> &'a mut Value {
    report["results"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|r| r["id"] == id)
        .unwrap()
}

#[test]
fn render_recreates_html_md_and_junit_from_a_saved_report() {
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("report.json");
    std::fs::copy(fixture_path(), &saved).unwrap();
    let out = dir.path().join("out");
    let run = citadel(
        &[
            "report",
            "render",
            saved.to_str().unwrap(),
            "--format",
            "html,md,junit",
            "--out-dir",
            out.to_str().unwrap(),
        ],
        dir.path(),
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("id=\"run-id\">rtpanf2043</code>"));
    assert!(html.contains("<svg id=\"chart-histogram-0\""));
    assert!(html.contains("id=\"count-failed\">2</span>"));
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.starts_with("## citadel-itest: FAILED"));
    assert!(md.contains("| home | 240 | 40.1 |"));
    let junit = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<testcase ").count(), 6);
    assert_eq!(junit.matches("<failure ").count(), 2);
    assert!(junit.contains("<testsuite name=\"load\""));
    for f in ["report.html", "summary.md", "junit.xml"] {
        assert!(
            run.stderr
                .contains(&format!("report written: {}", out.join(f).display())),
            "{}",
            run.stderr
        );
    }

    // Default: html, md and junit next to the report.
    let run = citadel(&["report", "render", "report.json"], dir.path(), &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for f in ["report.html", "summary.md", "junit.xml"] {
        assert!(dir.path().join(f).is_file(), "{f}");
    }
}

#[test]
fn render_refuses_bad_input_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let run = citadel(&["report", "render", "missing.json"], dir.path(), &[]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("read report missing.json"),
        "{}",
        run.stderr
    );

    std::fs::write(
        dir.path().join("other.json"),
        r#"{"schema":"citadel-itest.load/v1"}"#,
    )
    .unwrap();
    let run = citadel(&["report", "render", "other.json"], dir.path(), &[]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("`citadel-itest.load/v1` is not `citadel-itest.report/v1`"),
        "{}",
        run.stderr
    );

    std::fs::copy(fixture_path(), dir.path().join("report.json")).unwrap();
    let run = citadel(
        &["report", "render", "report.json", "--format", "pdf"],
        dir.path(),
        &[],
    );
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("unknown format `pdf`"),
        "{}",
        run.stderr
    );
}

#[test]
fn compare_passes_an_unchanged_pair_and_flags_regressions() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.json");
    std::fs::copy(fixture_path(), &base).unwrap();

    // Unchanged: exit 0.
    let run = citadel(
        &["report", "compare", "base.json", "base.json"],
        dir.path(),
        &[],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("NO REGRESSION"), "{}", run.stdout);

    // p95 latency 30 % up in a check and in a load scenario: exit 1, both named.
    let mut slower = fixture();
    for m in result_mut(&mut slower, "basic.web.health")["measurements"]
        .as_array_mut()
        .unwrap()
    {
        if m["name"] == "latency_p95" {
            m["value"] = serde_json::json!(m["value"].as_f64().unwrap() * 1.3);
        }
    }
    let p95 = &mut result_mut(&mut slower, "load.home")["details"]["load"]["metrics"]["http_req_duration"]
        ["p95"];
    *p95 = serde_json::json!(p95.as_f64().unwrap() * 1.3);
    write_json(&dir.path().join("slower.json"), &slower);
    let run = citadel(
        &[
            "report",
            "compare",
            "base.json",
            "slower.json",
            "--tolerance",
            "10%",
        ],
        dir.path(),
        &[],
    );
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("REGRESSION basic.web.health latency_p95"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("REGRESSION load.home        load.p95_ms"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("REGRESSED: 2 regression(s)"),
        "{}",
        run.stdout
    );
    // Within a 40 % tolerance: exit 0.
    let run = citadel(
        &[
            "report",
            "compare",
            "base.json",
            "slower.json",
            "--tolerance",
            "40",
        ],
        dir.path(),
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stdout);

    // A check that passed and now fails: exit 1; as JSON.
    let mut broken = fixture();
    let r = result_mut(&mut broken, "basic.web.connectivity");
    r["status"] = "failed".into();
    r["message"] = "connect to 127.0.0.1:58931: connection refused".into();
    write_json(&dir.path().join("broken.json"), &broken);
    let run = citadel(
        &["report", "compare", "base.json", "broken.json", "--json"],
        dir.path(),
        &[],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let diff: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(diff["status_changes"][0]["id"], "basic.web.connectivity");
    assert_eq!(diff["status_changes"][0]["before"], "passed");
    assert_eq!(diff["status_changes"][0]["after"], "failed");
    assert_eq!(diff["status_changes"][0]["regression"], true);

    // Unreadable input or a bad tolerance: exit 2.
    let run = citadel(
        &["report", "compare", "base.json", "nope.json"],
        dir.path(),
        &[],
    );
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("nope.json"), "{}", run.stderr);
    std::fs::write(dir.path().join("junk.json"), "{ not json").unwrap();
    let run = citadel(
        &["report", "compare", "junk.json", "base.json"],
        dir.path(),
        &[],
    );
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("junk.json: not JSON"), "{}", run.stderr);
    let run = citadel(
        &[
            "report",
            "compare",
            "base.json",
            "base.json",
            "--tolerance",
            "lots",
        ],
        dir.path(),
        &[],
    );
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("tolerance `lots`"), "{}", run.stderr);
}

/// An HTTP/1.1 server on 127.0.0.1 that answers every request with 200 `ok` after `delay`.
fn slow_server(delay: Arc<AtomicU64>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let delay = delay.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                std::thread::sleep(Duration::from_millis(delay.load(Ordering::SeqCst)));
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\
                      connection: close\r\n\r\nok",
                );
            });
        }
    });
    port
}

#[test]
fn run_writes_html_and_md_and_baseline_regressions_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let delay = Arc::new(AtomicU64::new(0));
    let port = slow_server(delay.clone());
    std::fs::write(
        dir.path().join("c.yaml"),
        format!(
            "run:\n  timeout: 10s\n  retries: 0\n  report_dir: reports\n  formats: [json, html, md]\n\
             performance_targets:\n  latency_p95: 5s\n\
             basic:\n  targets:\n    - name: web\n      url: http://127.0.0.1:{port}\n      \
             health_path: /health\n      samples: 5\n"
        ),
    )
    .unwrap();
    let only = ["--only", "basic.web.health"];

    // 1. The baseline run: a fast server; json, html and md written.
    let mut args = vec!["run", "-c", "c.yaml"];
    args.extend(only);
    let run = citadel(&args, dir.path(), &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let reports = dir.path().join("reports");
    let html = std::fs::read_to_string(reports.join("report.html")).unwrap();
    assert!(html.contains("id=\"verdict\">PASSED</span>"));
    assert!(html.contains("<td class=\"id\">basic.web.health</td>"));
    let md = std::fs::read_to_string(reports.join("summary.md")).unwrap();
    assert!(md.starts_with("## citadel-itest: PASSED"), "{md}");
    assert!(
        run.stderr.contains("report written: reports/report.html"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("report written: reports/summary.md"),
        "{}",
        run.stderr
    );
    std::fs::copy(reports.join("report.json"), dir.path().join("base.json")).unwrap();

    // 2. Same server, compared with the baseline: no regression within a wide tolerance.
    let mut args = vec![
        "run",
        "-c",
        "c.yaml",
        "--baseline",
        "base.json",
        "--baseline-tolerance",
        "1000%",
    ];
    args.extend(only);
    let run = citadel(&args, dir.path(), &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("baseline base.json:"), "{}", run.stdout);
    assert!(run.stdout.contains("NO REGRESSION"), "{}", run.stdout);

    // 3. The server now answers 300 ms later: the check still passes (limit 5 s), but the
    //    latency regressed against the baseline, so the run exits 1.
    delay.store(300, Ordering::SeqCst);
    let run = citadel(&args, dir.path(), &[]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(reports.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["summary"]["passed"], 1, "the check itself passed");
    assert!(
        run.stdout
            .contains("REGRESSION basic.web.health latency_p95"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("REGRESSED"), "{}", run.stdout);

    // 4. An unreadable baseline is a usage error before anything runs.
    let mut args = vec!["run", "-c", "c.yaml", "--baseline", "missing.json"];
    args.extend(only);
    let run = citadel(&args, dir.path(), &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("read report missing.json"),
        "{}",
        run.stderr
    );
}
