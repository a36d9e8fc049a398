//! `citadel-itest run --push-gateway URL --metrics-textfile PATH`: a real run's results pushed
//! to a real Pushgateway and written for node_exporter's textfile collector.

mod common;

use citadel_itest_testkit::{Nginx, Pushgateway, closed_port};
use common::citadel;

fn config(gateway: &str) -> String {
    format!(
        "run:\n  report_dir: reports\n  formats: [json]\nbasic:\n  targets:\n    - name: gateway\n      url: {gateway}\n      health_path: /health\n      expect_json: {{ pointer: /status, equals: ok }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_reach_the_pushgateway_and_the_textfile() {
    let nginx = Nginx::start().await.expect("start nginx");
    let push = Pushgateway::start().await.expect("start the pushgateway");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("itest.yaml"), config(&nginx.url())).unwrap();
    let run = citadel(
        &[
            "run",
            "-c",
            "itest.yaml",
            "--push-gateway",
            &push.url(),
            "--push-instance",
            "ci-job-7",
            "--metrics-textfile",
            "citadel.prom",
        ],
        dir.path(),
        &[],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("metrics pushed"), "{}", run.stderr);

    // Read back from the Pushgateway itself.
    let body = reqwest::get(format!("{}/metrics", push.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = body
        .lines()
        .find(|l| {
            l.starts_with("citadel_itest_check_success{")
                && l.contains("check=\"basic.gateway.health\"")
                && l.contains("instance=\"ci-job-7\"")
        })
        .unwrap_or_else(|| panic!("no success series for the health check in:\n{body}"));
    assert!(line.ends_with(" 1"), "{line}");
    assert!(body.contains("citadel_itest_run_success_rate{"), "{body}");

    // The textfile holds the same series and parses.
    let text = std::fs::read_to_string(dir.path().join("citadel.prom")).unwrap();
    assert!(text.contains("check=\"basic.gateway.health\""), "{text}");
    let exposition = citadel_itest::monitoring::exposition::parse(text.as_bytes());
    assert!(exposition.findings.is_empty(), "{:?}", exposition.findings);
    assert!(citadel_itest::monitoring::exposition::lint(&exposition).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_textfile_name_is_a_usage_error_and_an_unreachable_pushgateway_fails_the_run() {
    let nginx = Nginx::start().await.expect("start nginx");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("itest.yaml"), config(&nginx.url())).unwrap();
    let run = citadel(
        &[
            "run",
            "-c",
            "itest.yaml",
            "--metrics-textfile",
            "citadel.txt",
        ],
        dir.path(),
        &[],
    );
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains(".prom"), "{}", run.stderr);
    // Nothing listens on this port: the checks pass, the push fails, the run exits 1.
    let port = closed_port().unwrap();
    let run = citadel(
        &[
            "run",
            "-c",
            "itest.yaml",
            "--push-gateway",
            &format!("http://127.0.0.1:{port}"),
        ],
        dir.path(),
        &[],
    );
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("pushgateway"), "{}", run.stderr);
}
