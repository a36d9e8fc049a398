//! Failover with a backend that is really stopped: model-b is the model fixture as its own
//! process (`citadel-itest-fixtures models`), started and stopped by `start-stop-daemon` (from
//! Debian's always-installed `dpkg`), the way an operator's `failover.action.command` would, no
//! shell involved. nginx sees refused connections, not 503s.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use citadel_itest_core::Status;
use citadel_itest_cross_service::{
    Aspect, BackendConfig, FailoverAction, FailoverConfig, GatewayConfig, ModelConfig,
};
use citadel_itest_testkit::{ModelServer, Nginx};
use common::{IDS, MODELS, assert_status, message, run};

/// The fixtures binary of this workspace (built when missing).
fn fixtures_bin() -> PathBuf {
    citadel_itest_testkit::fixtures_binary().unwrap_or_else(|e| panic!("{e}"))
}

fn free_port() -> u16 {
    citadel_itest_testkit::closed_port().unwrap_or_else(|e| panic!("{e}"))
}

/// `start-stop-daemon` argument lists that start and stop model-b on `port`.
fn daemon_commands(pidfile: &Path, port: u16) -> (Vec<String>, Vec<String>) {
    let pid = pidfile.display().to_string();
    let start = [
        "start-stop-daemon",
        "--start",
        "--background",
        "--make-pidfile",
        "--pidfile",
        &pid,
        "--exec",
        &fixtures_bin().display().to_string(),
        "--",
        "models",
        "--port",
        &port.to_string(),
        "--backend-id",
        IDS[1],
        "--models",
        &MODELS.join(","),
        "--ttft",
        "5ms",
        "--itl",
        "1ms",
    ]
    .map(String::from)
    .to_vec();
    let stop = [
        "start-stop-daemon",
        "--stop",
        "--pidfile",
        &pid,
        "--retry",
        "TERM/5/KILL/5",
        "--remove-pidfile",
    ]
    .map(String::from)
    .to_vec();
    (start, stop)
}

fn run_argv(argv: &[String]) -> bool {
    Command::new(&argv[0])
        .args(&argv[1..])
        .status()
        .is_ok_and(|s| s.success())
}

async fn wait_healthy(port: u16) {
    let client = reqwest::Client::new();
    for _ in 0..100 {
        let ok = client
            .get(format!("http://127.0.0.1:{port}/health"))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("model-b did not become healthy on 127.0.0.1:{port}");
}

/// Stops model-b at the end whatever happened.
struct Daemon(Vec<String>);

impl Drop for Daemon {
    fn drop(&mut self) {
        run_argv(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_passes_with_one_backend_process_stopped_and_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("model-b.pid");
    let port = free_port();
    let (start, stop) = daemon_commands(&pidfile, port);
    assert!(run_argv(&start), "start model-b: {start:?}");
    let _daemon = Daemon(stop.clone());
    wait_healthy(port).await;

    let mut others = Vec::new();
    for (i, id) in [(0, IDS[0]), (2, IDS[2])] {
        others.push(
            ModelServer::builder()
                .backend_id(id)
                .models(MODELS)
                .ttft(Duration::from_millis(5))
                .itl(Duration::from_millis(1))
                .seed(i as u64 + 1)
                .start()
                .await
                .expect("start model server"),
        );
    }
    let nginx = Nginx::builder()
        .upstream(format!("127.0.0.1:{}", others[0].port()))
        .upstream(format!("127.0.0.1:{port}"))
        .upstream(format!("127.0.0.1:{}", others[1].port()))
        .location("proxy_next_upstream error timeout http_502 http_503 non_idempotent;")
        .start()
        .await
        .expect("start nginx");

    let mut gw = GatewayConfig::new(format!("{}/v1", nginx.url()), ["llama-3-8b", "mistral-7b"])
        .model(ModelConfig::embeddings("text-embedding-small"))
        .backend(BackendConfig::new(IDS[0]).url(others[0].base_url()))
        .backend(BackendConfig::new(IDS[1]).url(format!("http://127.0.0.1:{port}/v1")))
        .backend(BackendConfig::new(IDS[2]).url(others[1].base_url()))
        .timeout(Duration::from_secs(60));
    let mut f = FailoverConfig::new(
        IDS[1],
        FailoverAction::Command {
            stop: stop.clone(),
            start: start.clone(),
        },
    );
    f.requests = 30;
    f.recovery_time = Duration::from_secs(25);
    gw.failover = Some(f);

    let r = run(&gw, Aspect::Failover).await;
    assert_status(&r, Status::Passed);
    eprintln!("failover: {:?} {:?}", r.outcome.measurements(), r.details);
    let absorbed = r.details["absorbed_by"].as_object().unwrap();
    assert!(
        absorbed.contains_key(IDS[0]) && absorbed.contains_key(IDS[2]),
        "{absorbed:?}"
    );
    assert!(!absorbed.contains_key(IDS[1]), "{absorbed:?}");
    // Brought back by the start command: the process answers again.
    wait_healthy(port).await;

    // With the other two made unavailable, stopping model-b leaves no healthy backend.
    for o in &others {
        o.set_faults(citadel_itest_testkit::Faults::none().with_unavailable())
            .unwrap();
    }
    if let Some(f) = gw.failover.as_mut() {
        f.requests = 10;
    }
    let r = run(&gw, Aspect::Failover).await;
    assert_status(&r, Status::Failed);
    let m = message(&r);
    assert!(m.contains("error rate 100.0%"), "{m}");
    wait_healthy(port).await;
}
