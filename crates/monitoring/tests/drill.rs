//! `monitoring.drills.<name>`: the whole alert path with a real Pushgateway, Prometheus and
//! Alertmanager, the check's own webhook receiver at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use citadel_itest_core::{CheckExt, ErrorKind, Outcome, Status, TestResult, run_one};
use citadel_itest_monitoring::config::{DrillConfig, PrometheusConfig};
use citadel_itest_monitoring::drill::{self, DrillCheck};
use citadel_itest_monitoring::prometheus;
use citadel_itest_testkit::{Alertmanager, Prometheus, Pushgateway};
use serde_json::json;

const ALERT: &str = "CitadelDrill";
const METRIC: &str = "citadel_itest_drill_metric";

fn rules(for_: &str) -> String {
    format!(
        "groups:\n- name: drill\n  rules:\n  - alert: {ALERT}\n    expr: {METRIC} > 0\n    for: {for_}\n"
    )
}

/// A free loopback port for the webhook (Alertmanager must know it before the check listens).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Stack {
    push: Pushgateway,
    am: Alertmanager,
    prom: Prometheus,
    /// Where the drill listens.
    webhook: String,
}

/// Pushgateway <- Prometheus (1 s scrapes and evaluations, the rule `for: <for_>`) ->
/// Alertmanager (group_wait 1 s) -> `deliver_to` (the drill's webhook unless told otherwise).
async fn stack(for_: &str, deliver_to: Option<String>) -> Stack {
    let port = free_port();
    let webhook = format!("127.0.0.1:{port}");
    let push = Pushgateway::start().await.unwrap();
    let am = Alertmanager::builder()
        .webhook(deliver_to.unwrap_or_else(|| format!("http://{webhook}/alerts")))
        .group_wait(Duration::from_secs(1))
        .group_interval(Duration::from_secs(1))
        .start()
        .await
        .unwrap();
    let prom = Prometheus::builder()
        .scrape_config(format!(
            "- job_name: pushgateway\n  honor_labels: true\n  static_configs:\n  - targets: ['{}']",
            push.address()
        ))
        .rule_file("drill.yml", rules(for_))
        .alertmanager(am.address())
        .scrape_interval(Duration::from_secs(1))
        .evaluation_interval(Duration::from_secs(1))
        .start()
        .await
        .unwrap();
    Stack {
        push,
        am,
        prom,
        webhook,
    }
}

fn config(s: &Stack, within: &str) -> DrillConfig {
    serde_json::from_value(json!({
        "name": "drill",
        "prometheus": s.prom.url(),
        "alertmanager": s.am.url(),
        "alert": ALERT,
        "induce": { "pushgateway": { "url": s.push.url(), "metric": METRIC, "value": 3 } },
        "webhook": { "listen": s.webhook, "path": "/alerts" },
        "within": within,
        "timeout": "2s"
    }))
    .unwrap()
}

fn message(r: &TestResult) -> &str {
    r.outcome.message().unwrap_or_default()
}

fn seconds(r: &TestResult, name: &str) -> f64 {
    r.measurement(name)
        .and_then(|m| m.value)
        .unwrap_or_else(|| panic!("no measurement {name} in {:?}", r.outcome))
}

/// The Pushgateway's groups (its JSON API), as text.
async fn groups(push: &Pushgateway) -> String {
    let answer = reqwest::Client::new()
        .get(format!("{}/api/v1/metrics", push.url()))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    answer.text().await.unwrap()
}

/// Whether the group of `run_id` is on the Pushgateway now.
async fn has_group(push: &Pushgateway, run_id: &str) -> bool {
    groups(push)
        .await
        .contains(&format!("\"instance\":\"{run_id}\""))
}

/// Watch the Pushgateway in the background: did the group of `run_id` ever appear?
fn watch_group(push: &Pushgateway, run_id: &str) -> Arc<AtomicBool> {
    let seen = Arc::new(AtomicBool::new(false));
    let (url, run_id, flag) = (push.url(), run_id.to_string(), seen.clone());
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        loop {
            if let Ok(r) = client
                .get(format!("{url}/api/v1/metrics"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
            {
                if let Ok(text) = r.text().await {
                    if text.contains(&format!("\"instance\":\"{run_id}\"")) {
                        flag.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drill_passes_through_prometheus_and_alertmanager_to_the_webhook() {
    let s = stack("1s", None).await;
    // Phase times without Prometheus's start-up: wait until it scrapes the Pushgateway.
    let prom: PrometheusConfig = serde_json::from_value(json!({
        "name": "main", "url": s.prom.url(), "jobs": ["pushgateway"]
    }))
    .unwrap();
    let targets = prometheus::checks(&[prom]).remove(1);
    run_one(&*targets).await.assert_passed();

    let run_id = citadel_itest_core::new_run_id();
    let seen = watch_group(&s.push, &run_id);
    let checks = drill::checks(&[config(&s, "40s")], &run_id);
    assert_eq!(checks[0].id().as_str(), "monitoring.drills.drill");
    let exclusive: Vec<String> = checks[0]
        .exclusive()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        exclusive.contains(&format!("alert:{ALERT}")),
        "{exclusive:?}"
    );

    let started = Instant::now();
    let r = run_one(&*checks[0]).await;
    let took = started.elapsed();
    r.assert_passed();
    let phases: Vec<(&str, f64)> = [
        "pending_s",
        "firing_s",
        "received_s",
        "delivered_s",
        "cleared_s",
        "resolved_s",
        "total_s",
    ]
    .iter()
    .map(|n| (*n, seconds(&r, n)))
    .collect();
    eprintln!("drill phases: {phases:?}, check took {took:?}");
    let get = |n: &str| phases.iter().find(|(k, _)| *k == n).unwrap().1;
    assert!(get("pending_s") <= get("firing_s"));
    assert!(get("firing_s") <= get("received_s"));
    assert!(get("received_s") <= get("delivered_s"));
    assert!(get("cleared_s") <= get("resolved_s") + 1.0);
    // `for: 1s` with 1 s evaluations: firing at least ~1 s after pending.
    assert!(get("firing_s") - get("pending_s") >= 0.5, "{phases:?}");
    // Scraped every second, evaluated every second, `for: 1s`, group_wait 1s: a few seconds.
    assert!(get("delivered_s") < 10.0, "{phases:?}");
    assert!(get("total_s") < 40.0);
    assert!(took < Duration::from_secs(40), "{took:?}");
    assert_eq!(r.details["alertmanager_state"], "active");
    assert!(!r.details.contains_key("leftovers"), "{:?}", r.details);

    // The condition really was induced, and is gone again.
    assert!(seen.load(Ordering::SeqCst));
    assert!(
        !has_group(&s.push, &run_id).await,
        "{}",
        groups(&s.push).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_alertmanager_stopped_the_drill_fails_naming_receipt_and_cleans_up() {
    let mut s = stack("1s", None).await;
    s.am.stop().await.unwrap();
    let run_id = citadel_itest_core::new_run_id();
    let seen = watch_group(&s.push, &run_id);
    let check = DrillCheck::new(config(&s, "8s"), &run_id);
    let started = Instant::now();
    let r = run_one(&check).await;
    let m = message(&r);
    assert_eq!(r.outcome.status(), Status::Failed, "{m}");
    assert!(
        m.starts_with(&format!(
            "Prometheus fires `{ALERT}` but Alertmanager at {} did not receive it within 8s \
             (last answer: GET {}/api/v2/alerts?filter=",
            s.am.url(),
            s.am.url()
        )),
        "{m}"
    );
    assert!(m.ends_with(": connection refused)"), "{m}");
    // The phases seen are measured; the rest are not.
    assert!(seconds(&r, "firing_s") > 0.0);
    assert!(r.measurement("received_s").is_none());
    assert!(started.elapsed() < Duration::from_secs(20));
    // Restored by the registered cleanup.
    assert!(seen.load(Ordering::SeqCst));
    assert!(!r.details.contains_key("leftovers"), "{:?}", r.details);
    assert!(!has_group(&s.push, &run_id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_never_reaches_the_webhook_is_named() {
    // Alertmanager delivers to a port nobody listens on, not to the drill's webhook.
    let closed = citadel_itest_testkit::closed_port().unwrap();
    let s = stack("1s", Some(format!("http://127.0.0.1:{closed}/alerts"))).await;
    let run_id = citadel_itest_core::new_run_id();
    let r = run_one(&DrillCheck::new(config(&s, "8s"), &run_id)).await;
    let m = message(&r);
    assert_eq!(r.outcome.status(), Status::Failed, "{m}");
    assert_eq!(
        m,
        format!(
            "Alertmanager received the alert but no delivery reached the webhook at {}/alerts \
             within 8s",
            s.webhook
        )
    );
    assert!(seconds(&r, "received_s") >= seconds(&r, "firing_s"));
    assert!(r.measurement("delivered_s").is_none());
    assert!(!has_group(&s.push, &run_id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pushgateway_group_is_removed_when_the_check_times_out() {
    // The alert never fires (`for: 1h`); the runner stops the check after 3 s.
    let s = stack("1h", None).await;
    let run_id = citadel_itest_core::new_run_id();
    let seen = watch_group(&s.push, &run_id);
    let check = DrillCheck::new(config(&s, "60s"), &run_id).with_timeout(Duration::from_secs(3));
    let r = run_one(&check).await;
    assert!(
        matches!(
            r.outcome,
            Outcome::Error {
                kind: ErrorKind::Timeout,
                ..
            }
        ),
        "{:?}",
        r.outcome
    );
    assert!(seen.load(Ordering::SeqCst), "the group was never pushed");
    assert!(!r.details.contains_key("leftovers"), "{:?}", r.details);
    assert!(
        !has_group(&s.push, &run_id).await,
        "{}",
        groups(&s.push).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_address_in_use_or_a_missing_rule_is_named() {
    let s = stack("1s", None).await;
    let taken = std::net::TcpListener::bind(&s.webhook).unwrap();
    let run_id = citadel_itest_core::new_run_id();
    let r = run_one(&DrillCheck::new(config(&s, "8s"), &run_id)).await;
    assert_eq!(r.outcome.status(), Status::Error, "{:?}", r.outcome);
    assert_eq!(
        message(&r),
        format!(
            "cannot listen for the webhook on {}: address in use; the drill receives \
             Alertmanager's notifications there (`webhook.listen`)",
            s.webhook
        )
    );
    drop(taken);

    let mut d = config(&s, "8s");
    d.alert = "NoSuchAlert".to_string();
    let started = Instant::now();
    let r = run_one(&DrillCheck::new(d, &run_id)).await;
    assert_eq!(
        message(&r),
        format!(
            "Prometheus at {} has no alerting rule `NoSuchAlert` (loaded: {ALERT})",
            s.prom.url()
        )
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!has_group(&s.push, &run_id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_drill_runs_its_command_and_its_restore() {
    let s = stack("1s", None).await;
    let run_id = citadel_itest_core::new_run_id();
    let group = format!(
        "{}/metrics/job/action_drill/instance/{run_id}",
        s.push.url()
    );
    let d: DrillConfig = serde_json::from_value(json!({
        "name": "action",
        "prometheus": s.prom.url(),
        "alertmanager": s.am.url(),
        "alert": ALERT,
        "induce": { "action": {
            "command": ["sh", "-c", format!("echo '{METRIC} 1' | curl -sf --data-binary @- {group}")],
            "restore": ["curl", "-sf", "-X", "DELETE", group],
            "disposable": true
        } },
        "webhook": { "listen": s.webhook, "path": "/alerts" },
        "within": "40s",
        "timeout": "5s"
    }))
    .unwrap();
    let r = run_one(&DrillCheck::new(d, &run_id)).await;
    r.assert_passed();
    assert!(seconds(&r, "resolved_s") > 0.0);
    assert!(!has_group(&s.push, &run_id).await);
}
