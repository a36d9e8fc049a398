//! The `citadel-itest-fixtures` binary: serves both fixtures, rejects bad arguments with exit 2,
//! reads secrets from `env:`/`file:` and stops cleanly (exit 0) on SIGTERM.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_citadel-itest-fixtures");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `url` until it answers (any status) or 10 s pass.
async fn wait_http(client: &reqwest::Client, url: &str, child: &mut Child) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = client.get(url).send().await {
            return r;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("fixture exited early with {status}");
        }
        assert!(
            Instant::now() < deadline,
            "{url} did not answer within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGTERM through kill(1), then the exit status within 5 s, and stderr.
fn terminate(mut child: Child) -> (std::process::ExitStatus, String) {
    let ok = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(ok.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("fixture did not exit within 5 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, err)
}

#[tokio::test]
async fn models_subcommand_serves_with_identity_and_key_and_exits_on_sigterm() {
    let port = free_port();
    let mut child = Command::new(BIN)
        .args([
            "models",
            "--port",
            &port.to_string(),
            "--backend-id",
            "model-z",
        ])
        .args([
            "--models",
            "m1,m2",
            "--ttft",
            "1ms",
            "--itl",
            "1ms",
            "--api-key",
            "env:FX_KEY",
        ])
        .env("FX_KEY", "sk-fixture-secret")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let health = wait_http(&client, &format!("{base}/health"), &mut child).await;
    assert_eq!(health.headers()["x-backend-id"], "model-z");

    let denied = client
        .get(format!("{base}/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    let models: serde_json::Value = client
        .get(format!("{base}/v1/models"))
        .bearer_auth("sk-fixture-secret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["m1", "m2"]);

    let (status, stderr) = terminate(child);
    assert!(status.success(), "exit {status}; stderr: {stderr}");
    assert!(stderr.contains("model server listening"), "{stderr}");
    assert!(
        !stderr.contains("sk-fixture-secret"),
        "key leaked to the log: {stderr}"
    );
}

#[tokio::test]
async fn qdrant_subcommand_serves_rest_with_key_from_file_and_exits_on_sigterm() {
    let (http, grpc) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "qdrant-fixture-key\n").unwrap();
    let mut child = Command::new(BIN)
        .args([
            "qdrant",
            "--http-port",
            &http.to_string(),
            "--grpc-port",
            &grpc.to_string(),
        ])
        .arg("--api-key")
        .arg(format!("file:{}", key_file.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{http}");
    let ready = wait_http(&client, &format!("{base}/readyz"), &mut child).await;
    assert!(ready.status().is_success(), "readyz: {}", ready.status());
    let denied = client
        .get(format!("{base}/collections"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    let listed = client
        .get(format!("{base}/collections"))
        .header("api-key", "qdrant-fixture-key")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", grpc)).is_ok(),
        "gRPC port not listening"
    );

    let (status, stderr) = terminate(child);
    assert!(status.success(), "exit {status}; stderr: {stderr}");
}

#[test]
fn bad_arguments_exit_2_with_a_message_naming_them() {
    let out = Command::new(BIN)
        .args(["models", "--faults", "explode"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--faults") && err.contains("explode"), "{err}");

    let out = Command::new(BIN)
        .args(["qdrant", "--api-key", "env:CITADEL_FIXTURES_TEST_UNSET_VAR"])
        .env_remove("CITADEL_FIXTURES_TEST_UNSET_VAR")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CITADEL_FIXTURES_TEST_UNSET_VAR is not set"),
        "{err}"
    );
}
