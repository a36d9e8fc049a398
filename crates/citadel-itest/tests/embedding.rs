//! Embedding the harness in another crate: everything is reached through `citadel_itest::`
//! paths only (no `async-trait`, `tokio-util` or `serde_json` dependency of the embedder's own),
//! and `run_configured` keeps the binary's contract, exit codes included.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use citadel_itest::{
    CancellationToken, Category, Check, CheckContext, CheckId, ErrorKind, Outcome, RunRequest,
    Status, Suite, check_fn, run_configured, run_one,
};

/// A check written by hand, as a service's own test crate would.
struct AnswersOnPort {
    id: CheckId,
    port: u16,
}

#[citadel_itest::async_trait]
impl Check for AnswersOnPort {
    fn id(&self) -> &CheckId {
        &self.id
    }
    fn category(&self) -> Category {
        Category::Connectivity
    }
    async fn run(&self, ctx: &CheckContext) -> Result<Outcome, citadel_itest::BoxError> {
        let connect = tokio::net::TcpStream::connect(("127.0.0.1", self.port));
        match tokio::time::timeout(ctx.remaining(), connect).await {
            Ok(Ok(_)) => Ok(Outcome::passed()),
            Ok(Err(e)) => Ok(Outcome::failed(format!(
                "connect to port {}: {e}",
                self.port
            ))),
            Err(_) => Ok(Outcome::failed("no connection within the budget")),
        }
    }
}

#[tokio::test]
async fn a_hand_written_check_compiles_and_runs_from_facade_paths() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let open = listener.local_addr().unwrap().port();
    let passed = run_one(&AnswersOnPort {
        id: CheckId::new("svc.listener"),
        port: open,
    })
    .await;
    assert_eq!(passed.outcome.status(), Status::Passed, "{passed:?}");

    let closed = citadel_itest_testkit::closed_port().unwrap();
    let failed = run_one(&AnswersOnPort {
        id: CheckId::new("svc.nobody"),
        port: closed,
    })
    .await;
    assert_eq!(failed.outcome.status(), Status::Failed);
    assert!(
        failed.outcome.message().unwrap().contains("refused"),
        "{failed:?}"
    );
}

#[tokio::test]
async fn a_question_mark_in_check_fn_is_an_error_not_a_failure() {
    let check = check_fn("svc.parse", Category::Operations, |_ctx| async {
        let body: citadel_itest::serde_json::Value = citadel_itest::serde_json::from_str("{")?;
        Ok(Outcome::failed(format!("unreachable: {body}")))
    });
    let result = run_one(&check).await;
    assert_eq!(result.outcome.status(), Status::Error);
    assert!(matches!(
        result.outcome,
        Outcome::Error {
            kind: ErrorKind::Harness,
            ..
        }
    ));
    assert!(result.clone().into_result().is_err());

    // Skipped is Ok for `into_result` (not an assertion that the check passed).
    let skipped = run_one(&check_fn("svc.n_a", Category::Operations, |_ctx| async {
        Ok(Outcome::skipped("read-only mode"))
    }))
    .await;
    assert_eq!(skipped.outcome.status(), Status::Skipped);
    assert!(skipped.into_result().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suite_is_cancelled_through_the_reexported_token() {
    let token = CancellationToken::new();
    let slow = check_fn(
        "svc.slow",
        Category::Operations,
        |ctx: CheckContext| async move {
            ctx.cancel.cancelled().await;
            Ok(Outcome::error(ErrorKind::Cancelled, "stopped on request"))
        },
    );
    let suite = Suite::builder()
        .cancellation(token.clone())
        .check("svc", std::sync::Arc::new(slow))
        .build();
    let cancel = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        token.cancel();
    });
    let out = tokio::time::timeout(Duration::from_secs(10), suite.run(Vec::new()))
        .await
        .expect("the run ends once cancelled");
    cancel.await.unwrap();
    assert!(out.summary.interrupted);
    assert_eq!(out.exit_code(), 130);
}

fn config(dir: &Path, report_dir: &str, port: u16) -> PathBuf {
    let p = dir.join("itest.yaml");
    std::fs::write(
        &p,
        format!(
            "run:\n  timeout: 5s\n  retries: 0\n  report_dir: {report_dir}\n  formats: [json, junit]\n\
             basic:\n  targets:\n    - name: svc\n      url: tcp://127.0.0.1:{port}\n"
        ),
    )
    .unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_configured_passes_and_writes_the_configured_reports() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let reports = dir.path().join("reports");
    let cfg = config(
        dir.path(),
        &reports.display().to_string(),
        listener.local_addr().unwrap().port(),
    );
    let outcome = run_configured(RunRequest::new([&cfg]).ctrl_c(false).messages(false)).await;
    assert_eq!(outcome.exit_code, 0, "{outcome:?}");
    let out = outcome.output.as_ref().unwrap();
    assert_eq!(out.summary.counts.passed, 1);
    assert_eq!(
        outcome.report_files,
        [reports.join("report.json"), reports.join("junit.xml")]
    );
    let report: citadel_itest::report::JsonReport =
        citadel_itest::serde_json::from_slice(&std::fs::read(reports.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report.summary.totals.total, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_report_dir_exits_1_from_the_library() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A directory inside a regular file cannot be created, even by root.
    std::fs::write(dir.path().join("blocker"), "a file").unwrap();
    let cfg = config(
        dir.path(),
        &dir.path().join("blocker/reports").display().to_string(),
        listener.local_addr().unwrap().port(),
    );
    let outcome = run_configured(RunRequest::new([&cfg]).ctrl_c(false).messages(false)).await;
    let out = outcome.output.as_ref().expect("the run happened");
    assert_eq!(out.summary.counts.passed, 1, "the check itself passed");
    assert_eq!(out.summary.exit_code(), 0, "the checks alone");
    assert_eq!(
        out.report_errors[0].format, "json",
        "{:?}",
        out.report_errors
    );
    assert_eq!(out.exit_code(), 1);
    assert_eq!(outcome.exit_code, 1);
    assert!(outcome.report_files.is_empty());
}

#[test]
fn an_unwritable_report_dir_exits_1_from_the_binary() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("blocker"), "a file").unwrap();
    config(
        dir.path(),
        "blocker/reports",
        listener.local_addr().unwrap().port(),
    );
    let run = common::citadel(&["run", "--config", "itest.yaml"], dir.path(), &[]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("error: write json report to blocker/reports/report.json"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("report written"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_configured_exit_codes_for_bad_config_nothing_to_run_and_cancel() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let reports = dir.path().join("reports").display().to_string();
    let cfg = config(dir.path(), &reports, port);

    let bad = run_configured(
        RunRequest::new([&cfg])
            .set("run.concurrency", 0)
            .ctrl_c(false)
            .messages(false),
    )
    .await;
    assert_eq!(bad.exit_code, 2);
    assert!(matches!(
        bad.error,
        Some(citadel_itest::RunError::Config(_))
    ));
    assert!(bad.output.is_none());

    let none = run_configured(
        RunRequest::new([&cfg])
            .only("database.*")
            .ctrl_c(false)
            .messages(false),
    )
    .await;
    assert_eq!(none.exit_code, 2);
    assert!(
        none.error
            .as_ref()
            .unwrap()
            .to_string()
            .contains("matched nothing")
    );

    // Cancelled from outside before it starts: every check is reported cancelled, exit 130.
    let token = CancellationToken::new();
    token.cancel();
    let cancelled = run_configured(
        RunRequest::new([&cfg])
            .cancellation(token)
            .ctrl_c(false)
            .messages(false),
    )
    .await;
    assert_eq!(cancelled.exit_code, 130);
    let out = cancelled.output.unwrap();
    assert_eq!(out.results[0].outcome.status(), Status::Error);
    // The partial report is still written.
    assert!(dir.path().join("reports/report.json").is_file());
}

/// Set in the child process of `load_reads_the_dotenv_file_as_the_binary_does`.
const DOTENV_CHILD: &str = "CITADEL_ITEST_EMBEDDING_DOTENV_CHILD";

#[test]
fn load_reads_the_dotenv_file_as_the_binary_does() {
    if let Some(expect) = std::env::var_os(DOTENV_CHILD) {
        // The child: its working directory holds `.env` and `itest.yaml`.
        let loaded = citadel_itest::load(&["itest.yaml".into()], Vec::new());
        match expect.to_str() {
            Some("ok") => {
                let loaded = loaded.expect("valid with the .env values");
                assert_eq!(
                    loaded.config.run.concurrency, 3,
                    "CITADEL_ITEST__* from .env"
                );
                let ids: Vec<String> = citadel_itest::select(&loaded.testers, &[], &[])
                    .iter()
                    .map(|(_, c)| c.id().to_string())
                    .collect();
                assert_eq!(ids, ["basic.from_dotenv.connectivity"]);
            }
            _ => {
                let err = loaded
                    .err()
                    .expect("a bad .env line is an error")
                    .to_string();
                assert!(err.contains(".env:2"), "{err}");
                assert!(!err.contains("hunter2"), "the line is not echoed: {err}");
            }
        }
        return;
    }
    for (env_file, expect) in [
        (
            "CITADEL_ITEST__RUN__CONCURRENCY=3\nTARGET_NAME=from_dotenv\n",
            "ok",
        ),
        ("A=1\nthis line hunter2 is not an assignment\n", "bad"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".env"), env_file).unwrap();
        std::fs::write(
            dir.path().join("itest.yaml"),
            "basic:\n  targets:\n    - name: ${TARGET_NAME:-unset}\n      url: tcp://127.0.0.1:9\n",
        )
        .unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "load_reads_the_dotenv_file_as_the_binary_does",
                "--nocapture",
            ])
            .current_dir(dir.path())
            .env(DOTENV_CHILD, expect)
            .env_remove("CITADEL_ITEST__RUN__CONCURRENCY")
            .env_remove("TARGET_NAME")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "child ({expect}) failed:\n{text}");
        assert!(text.contains("1 passed"), "the child ran the test:\n{text}");
    }
}
