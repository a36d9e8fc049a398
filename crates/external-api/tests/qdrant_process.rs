//! A Qdrant server paused (SIGSTOP) or killed in the middle of the performance check, with the
//! Qdrant fixture as its own process (`citadel-itest-fixtures qdrant`): the check keeps its own
//! verdict, the run returns within its bounds, and every temporary collection is either removed
//! or named in the report as left behind.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use citadel_itest_core::config::Secret;
use citadel_itest_core::{RunOutput, Status, Suite};
use citadel_itest_external_api::{Aspect, QdrantCheck, QdrantTarget};
use common::settings;

const KEY: &str = "qdrant-process-key-1357";

/// The fixtures binary of this workspace (built when missing).
fn fixtures_bin() -> PathBuf {
    citadel_itest_testkit::fixtures_binary().unwrap_or_else(|e| panic!("{e}"))
}

fn free_port() -> u16 {
    citadel_itest_testkit::closed_port().unwrap_or_else(|e| panic!("{e}"))
}

/// A Qdrant fixture process; killed (and continued first, if stopped) on drop.
struct QdrantProcess {
    child: Child,
    http: u16,
    grpc: u16,
    _dir: tempfile::TempDir,
}

impl QdrantProcess {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("api_key");
        std::fs::write(&key_file, KEY).unwrap();
        let (http, grpc) = (free_port(), free_port());
        let child = Command::new(fixtures_bin())
            .args(["qdrant", "--http-port", &http.to_string()])
            .args(["--grpc-port", &grpc.to_string()])
            .arg("--api-key")
            .arg(format!("file:{}", key_file.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start citadel-itest-fixtures qdrant");
        let p = QdrantProcess {
            child,
            http,
            grpc,
            _dir: dir,
        };
        let client = reqwest::Client::new();
        for _ in 0..150 {
            let ready = client
                .get(format!("http://127.0.0.1:{http}/readyz"))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the Qdrant fixture process did not become ready on 127.0.0.1:{http}");
    }

    fn target(&self) -> QdrantTarget {
        QdrantTarget::new(
            "vectors",
            format!("http://127.0.0.1:{}", self.grpc),
            format!("http://127.0.0.1:{}", self.http),
        )
        .api_key(Secret::inline(KEY))
        .request_timeout(Duration::from_secs(1))
        .connect_timeout(Duration::from_secs(1))
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} failed");
    }

    /// Names of the temporary collections the server holds.
    async fn temp_collections(&self) -> Vec<String> {
        let body: serde_json::Value = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/collections", self.http))
            .header("api-key", KEY)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("list collections")
            .json()
            .await
            .expect("JSON");
        body["result"]["collections"]
            .as_array()
            .expect("collections")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .filter(|n| n.starts_with("citadel_itest_"))
            .map(str::to_string)
            .collect()
    }

    /// Wait until the performance check's collection exists, then a little longer so queries
    /// are under way.
    async fn wait_for_collection(&self) -> String {
        for _ in 0..500 {
            if let Some(name) = self.temp_collections().await.into_iter().next() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                return name;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no temporary collection was ever created");
    }
}

impl Drop for QdrantProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The performance check alone, with many samples so it is still querying when the server
/// is stopped; a short cleanup budget.
fn performance_run(target: &QdrantTarget) -> tokio::task::JoinHandle<(RunOutput, Duration)> {
    let check = QdrantCheck::new(target, Aspect::Performance, &settings().samples(1_000_000));
    tokio::spawn(async move {
        let t = Instant::now();
        let out = Suite::builder()
            .check("external_api", Arc::new(check))
            .cleanup_budget(Duration::from_secs(3))
            .build()
            .run(Vec::new())
            .await;
        (out, t.elapsed())
    })
}

fn assert_own_verdict_kept(out: &RunOutput) {
    let r = &out.results[0];
    assert_eq!(r.outcome.status(), Status::Failed, "{:?}", r.outcome);
    let message = r.outcome.message().unwrap_or_default();
    assert!(message.contains("query"), "{message}");
    assert!(
        !message.contains("cleanup"),
        "the cleanup replaced the verdict: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_paused_mid_check_keeps_the_verdict_and_nothing_is_left_unnamed() {
    let q = QdrantProcess::start().await;
    let run = performance_run(&q.target());
    let name = q.wait_for_collection().await;
    q.signal("-STOP");
    let (out, elapsed) = run.await.unwrap();
    // request_timeout 1s for the query, 1s for the removal: well within 10 s.
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    assert_own_verdict_kept(&out);
    let named: Vec<&str> = out
        .summary
        .leftovers
        .iter()
        .map(|l| l.object.as_str())
        .collect();
    assert_eq!(
        named,
        [format!("collection {name}")],
        "{:?}",
        out.summary.leftovers
    );
    // The client's own 1s timeout or the removal's bound, whichever speaks first.
    let reason = &out.summary.leftovers[0].reason;
    assert!(
        reason.contains("timed out") || reason.contains("no answer within 1s"),
        "{reason}"
    );

    // Resumed after the run: whatever is still there is named in the report.
    q.signal("-CONT");
    for left in q.temp_collections().await {
        assert!(
            named.iter().any(|n| n.ends_with(&left)),
            "{left} is left behind and the report does not name it"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_check_has_its_collection_named_as_left_behind() {
    let mut q = QdrantProcess::start().await;
    let run = performance_run(&q.target());
    let name = q.wait_for_collection().await;
    q.child.kill().unwrap();
    let _ = q.child.wait();
    let (out, elapsed) = run.await.unwrap();
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    assert_own_verdict_kept(&out);
    let left = &out.summary.leftovers;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].object, format!("collection {name}"));
    assert_eq!(left[0].service, "vectors");
    assert_eq!(left[0].check.as_str(), "external_api.vectors.performance");
    assert!(!left[0].reason.is_empty());
}
