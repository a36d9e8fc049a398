//! Whole scenarios against real servers: thresholds (breach, no samples, abort on fail),
//! resource budgets against processes made to exceed them, cancellation, and the check's
//! verdict. Every run is bounded to a few seconds.

use std::process::Stdio;
use std::time::{Duration, Instant};

use citadel_itest_core::config::PerformanceTargets;
use citadel_itest_core::{Status, run_one};
use citadel_itest_load::check::LoadCheck;
use citadel_itest_load::config::{
    ClosedModel, LoadModel, OpenModel, ResourcesConfig, ScenarioConfig,
};
use citadel_itest_load::scenario::{RunOptions, run_scenario, verdict};
use citadel_itest_testkit::Nginx;
use tokio_util::sync::CancellationToken;

async fn nginx() -> Nginx {
    Nginx::builder()
        .http_snippet("keepalive_requests 1000000;")
        .start()
        .await
        .expect("start testkit nginx (Debian package nginx-light)")
}

fn closed(url: &str, vus: usize, secs: u64) -> ScenarioConfig {
    ScenarioConfig::new(
        "s",
        url,
        LoadModel::Closed(ClosedModel::new(vus, Duration::from_secs(secs))),
    )
    .timeout(Duration::from_secs(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breached_threshold_fails_with_metric_value_and_limit() {
    let gw = nginx().await;
    let s = closed(&format!("{}/", gw.url()), 2, 1)
        .thresholds(["http_req_duration p95 < 1us", "error_rate < 1%"]);
    let result = run_scenario(&s, &RunOptions::default()).await.unwrap();
    assert!(result.counts.requests > 50, "{}", result.summary_line());
    let reasons = verdict(&result).unwrap_err();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    let r = &reasons[0];
    assert!(r.contains("http_req_duration p95 = "), "{r}");
    assert!(r.contains("threshold < 1us"), "{r}");
    assert!(result.thresholds[1].passed, "{:?}", result.thresholds[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threshold_without_samples_fails() {
    let gw = nginx().await;
    // A plain HTTP scenario has no streams, so no TTFT samples.
    let s = closed(&format!("{}/", gw.url()), 1, 1).thresholds(["ttft p95 < 10s"]);
    let result = run_scenario(&s, &RunOptions::default()).await.unwrap();
    let t = &result.thresholds[0];
    assert!(!t.passed);
    assert_eq!(t.observed, None);
    assert!(t.message.contains("no samples"), "{}", t.message);
    assert!(verdict(&result).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_on_fail_stops_the_run_early_and_says_so() {
    let gw = nginx().await;
    let s = closed(&format!("{}/", gw.url()), 2, 20)
        .thresholds(["http_req_duration p95 < 1us"])
        .abort_on_fail(true);
    let started = Instant::now();
    let result = run_scenario(&s, &RunOptions::default()).await.unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "took {took:?}");
    let stopped = result.stopped.clone().expect("the result says it stopped");
    assert!(stopped.starts_with("aborted after"), "{stopped}");
    assert!(stopped.contains("http_req_duration p95"), "{stopped}");
    let reasons = verdict(&result).unwrap_err().join("\n");
    assert!(reasons.contains("did not finish"), "{reasons}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_promptly() {
    let gw = nginx().await;
    let s = closed(&format!("{}/", gw.url()), 2, 30).thresholds(["error_rate < 1%"]);
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        c.cancel();
    });
    let started = Instant::now();
    let result = run_scenario(&s, &RunOptions::default().cancel(cancel))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        result
            .stopped
            .as_deref()
            .unwrap_or("")
            .starts_with("cancelled"),
        "{:?}",
        result.stopped
    );
    assert!(verdict(&result).is_err());
}

/// A process that burns a whole core: `sh` spinning.
fn spinner() -> tokio::process::Child {
    tokio::process::Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn sh")
}

/// A process holding about 200 MiB resident (python3 touching every page).
fn hog() -> tokio::process::Child {
    tokio::process::Command::new("python3")
        .args([
            "-c",
            "import time\nb = bytearray(200 * 1024 * 1024)\nfor i in range(0, len(b), 4096): b[i] = 1\ntime.sleep(60)",
        ])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn python3")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_budgets_fail_against_processes_that_exceed_them() {
    let gw = nginx().await;
    let mut spin = spinner();
    let mut mem = hog();
    // Let the hog reach its size.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let targets = PerformanceTargets {
        max_memory_mb: 100,
        // The spinner wants a whole core; on a busy 2-core machine it still gets far more
        // than this.
        max_cpu_percent: 10.0,
        ..PerformanceTargets::default()
    };
    let url = format!("{}/", gw.url());
    // CPU: the spinner uses up to 100% of a core against a 10% budget.
    let cpu = closed(&url, 1, 2)
        .resources(ResourcesConfig::pid(spin.id().unwrap()).interval(Duration::from_millis(200)));
    let options = RunOptions::default().targets(targets.clone());
    let r = run_scenario(&cpu, &options).await.unwrap();
    let res = r.resources.clone().expect("resources sampled");
    assert!(res.samples >= 3, "{res:?}");
    let t = r
        .thresholds
        .iter()
        .find(|t| t.metric.starts_with("cpu_percent"))
        .expect("a default cpu threshold");
    assert!(!t.passed, "{t:?}");
    assert!(t.observed.unwrap() > 10.0, "{t:?}");
    // Memory: 200 MiB against a 100 MiB budget.
    let memory = closed(&url, 1, 1)
        .resources(ResourcesConfig::pid(mem.id().unwrap()).interval(Duration::from_millis(200)));
    let r = run_scenario(&memory, &options).await.unwrap();
    let t = r
        .thresholds
        .iter()
        .find(|t| t.metric.starts_with("memory_mb"))
        .expect("a default memory threshold");
    assert!(!t.passed, "{t:?}");
    assert!(t.observed.unwrap() > 150.0, "{t:?}");
    // And the same budgets hold for a small process (nginx itself).
    let small = closed(&url, 1, 1)
        .resources(ResourcesConfig::pid(gw.pid().unwrap()).interval(Duration::from_millis(200)));
    let r = run_scenario(&small, &options).await.unwrap();
    let t = r
        .thresholds
        .iter()
        .find(|t| t.metric.starts_with("memory_mb"))
        .unwrap();
    assert!(t.passed, "{t:?}");
    let _ = spin.kill().await;
    let _ = mem.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_process_is_said_and_its_budget_fails() {
    let gw = nginx().await;
    let mut child = tokio::process::Command::new("sleep")
        .arg("0.5")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let s = closed(&format!("{}/", gw.url()), 1, 2)
        .thresholds(["memory_mb max < 2048", "cpu_percent avg < 50"])
        .resources(ResourcesConfig::pid(pid).interval(Duration::from_millis(100)));
    let waiter = tokio::spawn(async move { child.wait().await });
    let r = run_scenario(&s, &RunOptions::default()).await.unwrap();
    let _ = waiter.await;
    let res = r.resources.clone().unwrap();
    let error = res
        .error
        .clone()
        .expect("the sampler says the process went away");
    // Gone from /proc, or still a zombie the test has not reaped yet: either way it is said.
    assert!(
        error.contains(&format!("process {pid} not found"))
            || error.contains(&format!("process {pid} exited")),
        "{error}"
    );
    // What was sampled before it went still counts; a pid that never existed has nothing.
    let none = closed(&format!("{}/", gw.url()), 1, 1)
        .thresholds(["memory_mb max < 2048"])
        .resources(ResourcesConfig::pid(u32::MAX - 7));
    let r = run_scenario(&none, &RunOptions::default()).await.unwrap();
    assert!(!r.thresholds[0].passed, "{:?}", r.thresholds[0]);
    assert!(
        r.thresholds[0].message.contains("no samples"),
        "{:?}",
        r.thresholds[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_passes_on_a_healthy_target_and_fails_on_a_breach() {
    let gw = nginx().await;
    let targets = PerformanceTargets::default();
    let ok = closed(&format!("{}/", gw.url()), 2, 1).thresholds([
        "http_req_duration p95 < 1s",
        "error_rate < 1%",
        "rps > 10",
    ]);
    let result = run_one(&LoadCheck::new(ok, &targets)).await;
    assert_eq!(
        result.outcome.status(),
        Status::Passed,
        "{:?}",
        result.outcome
    );
    let load = &result.details["load"];
    assert_eq!(load["schema"], "citadel-itest.load/v1");
    assert!(load["counts"]["requests"].as_u64().unwrap() > 10);
    assert!(result.measurement("http_req_duration_p95").is_some());

    // Open model against a path nginx answers 404: every request is an error.
    let bad = ScenarioConfig::new(
        "missing",
        format!("{}/nothing-here", gw.url()),
        LoadModel::Open(OpenModel::constant(50.0, Duration::from_secs(1))),
    )
    .thresholds(["error_rate < 1%"]);
    let gw404 = Nginx::builder()
        .location("location = /nothing-here { return 404; }")
        .start()
        .await
        .unwrap();
    let bad = bad.request(citadel_itest_load::config::RequestConfig::get(format!(
        "{}/nothing-here",
        gw404.url()
    )));
    let result = run_one(&LoadCheck::new(bad, &targets)).await;
    assert_eq!(
        result.outcome.status(),
        Status::Failed,
        "{:?}",
        result.outcome
    );
    let msg = result.outcome.message().unwrap();
    assert!(msg.contains("error_rate = 100%"), "{msg}");
    let errors = &result.details["load"]["counts"]["errors"];
    assert!(errors["http_4xx"].as_u64().unwrap() >= 40, "{errors}");
}
