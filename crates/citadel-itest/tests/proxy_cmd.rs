//! `citadel-itest proxy`: a real nginx behind the proxy, faults added through the control API,
//! stopped by SIGTERM.

#![cfg(feature = "faults")]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use assert_cmd::cargo::cargo_bin;
use citadel_itest_testkit::Nginx;

/// The value after `prefix` on the first stdout line that starts with it.
fn wait_line(rx: &mpsc::Receiver<String>, prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no line starting with {prefix:?}"));
        if let Some(rest) = line.strip_prefix(prefix) {
            return rest.split_whitespace().next().unwrap_or("").to_owned();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_subcommand_forwards_takes_faults_and_stops_on_sigterm() {
    let nginx = Nginx::start().await.expect("nginx");
    let upstream = nginx.url().trim_start_matches("http://").to_owned();
    let mut child = Command::new(cargo_bin("citadel-itest"))
        .args([
            "proxy",
            "--upstream",
            &upstream,
            "--mode",
            "http",
            "--control",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let proxy = wait_line(&rx, "proxy ");
    let control = wait_line(&rx, "control API ");
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    let ok = client
        .get(format!("http://{proxy}/health"))
        .send()
        .await
        .expect("through the proxy");
    assert_eq!(ok.status(), 200);
    let added = client
        .post(format!("{control}/faults"))
        .body(r#"{"fault": {"type": "http_status", "status": 503, "retry_after": "3s"}}"#)
        .send()
        .await
        .expect("add fault");
    assert_eq!(added.status(), 201);
    let faulty = client
        .get(format!("http://{proxy}/health"))
        .send()
        .await
        .expect("through the proxy");
    assert_eq!(faulty.status(), 503);
    assert_eq!(faulty.headers()["retry-after"], "3");

    let start = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "did not stop after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(code, Some(0));
    assert!(
        client
            .get(format!("http://{proxy}/health"))
            .send()
            .await
            .is_err()
    );
}

#[test]
fn proxy_subcommand_refuses_a_non_loopback_listen_address() {
    let out = Command::new(cargo_bin("citadel-itest"))
        .args([
            "proxy",
            "--listen",
            "0.0.0.0:0",
            "--upstream",
            "127.0.0.1:1",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("loopback"), "{stderr}");
    let out = Command::new(cargo_bin("citadel-itest"))
        .args(["proxy", "--upstream", "no-port"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}
