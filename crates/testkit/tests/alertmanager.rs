//! The Alertmanager launcher against the real `prometheus-alertmanager` binary: it starts, takes
//! alerts on its v2 API, delivers them to a webhook (firing, then resolved), works behind a
//! testkit Prometheus (rule file -> alert -> Alertmanager -> webhook), and stops on drop. A
//! missing binary fails these tests; it never skips them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use citadel_itest_testkit::{Alertmanager, Prometheus, Pushgateway, closed_port};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("build HTTP client")
}

/// The JSON bodies a webhook listener received, oldest first.
#[derive(Clone, Default)]
struct Notifications(Arc<Mutex<Vec<Value>>>);

/// A webhook receiver on 127.0.0.1: every POSTed JSON body is recorded and answered with 200.
/// Returns the receiver's URL.
async fn webhook_listener() -> (String, Notifications) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    let received = Notifications::default();
    let tx = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = serve_webhook(stream, tx).await;
            });
        }
    });
    (url, received)
}

/// Reads HTTP/1.1 requests off one connection (keep-alive), forwarding each body.
async fn serve_webhook(mut stream: TcpStream, tx: Notifications) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk))
                .await
                .map_err(|_| std::io::Error::other("idle"))??;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body: Value = serde_json::from_slice(&buf[head_end..head_end + length])
            .unwrap_or_else(|e| json!({ "unparsable": e.to_string() }));
        buf.drain(..head_end + length);
        tx.0.lock().unwrap().push(body);
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await?;
    }
}

/// The next notification whose `status` is `status`, within `limit`.
/// Earlier notifications with another status are consumed and dropped.
async fn next_notification(rx: &mut Notifications, status: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        {
            let mut received = rx.0.lock().unwrap();
            while !received.is_empty() {
                let body = received.remove(0);
                if body["status"] == status {
                    return body;
                }
                eprintln!("skipping notification: {body}");
            }
        }
        assert!(
            Instant::now() < deadline,
            "no `{status}` notification within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// RFC 3339 UTC timestamp of `t` (seconds precision), e.g. `2026-11-30T02:16:59Z`.
fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[test]
fn rfc3339_formats_known_instants() {
    assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    assert_eq!(rfc3339(t), "2027-01-15T08:00:00Z");
    let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
    assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
}

#[tokio::test]
async fn alertmanager_delivers_posted_alerts_to_the_webhook() {
    let (webhook, mut notifications) = webhook_listener().await;
    let started = Instant::now();
    let am = Alertmanager::builder()
        .webhook(&webhook)
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("alertmanager started in {:?}", started.elapsed());
    assert_eq!(am.url(), format!("http://127.0.0.1:{}", am.port()));
    assert_eq!(am.address(), format!("127.0.0.1:{}", am.port()));
    let config = std::fs::read_to_string(am.config_path()).unwrap();
    assert!(config.contains(&webhook), "{config}");

    let client = http();
    let status: Value = client
        .get(format!("{}/api/v2/status", am.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["cluster"]["status"], "disabled", "{status}");
    assert!(status["versionInfo"]["version"].is_string(), "{status}");

    let starts = SystemTime::now() - Duration::from_secs(5);
    let alert = |ends: Option<SystemTime>| {
        let mut a = json!({
            "labels": { "alertname": "CitadelTestAlert", "severity": "warning", "run": "t1" },
            "annotations": { "summary": "posted by the testkit test" },
            "startsAt": rfc3339(starts),
            "generatorURL": "http://127.0.0.1:1/graph",
        });
        if let Some(ends) = ends {
            a["endsAt"] = json!(rfc3339(ends));
        }
        json!([a])
    };
    let posted = Instant::now();
    let resp = client
        .post(format!("{}/api/v2/alerts", am.url()))
        .json(&alert(None))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "{}",
        resp.text().await.unwrap_or_default()
    );

    let listed: Value = client
        .get(format!("{}/api/v2/alerts", am.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = listed.as_array().expect("alerts array");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["labels"]["alertname"], "CitadelTestAlert");
    assert_eq!(listed[0]["status"]["state"], "active");

    let firing = next_notification(&mut notifications, "firing", Duration::from_secs(20)).await;
    eprintln!("firing notification after {:?}", posted.elapsed());
    assert_eq!(firing["receiver"], "webhook", "{firing}");
    assert_eq!(firing["version"], "4", "{firing}");
    assert_eq!(firing["groupLabels"]["alertname"], "CitadelTestAlert");
    let alerts = firing["alerts"].as_array().expect("alerts");
    assert_eq!(alerts.len(), 1, "{firing}");
    assert_eq!(alerts[0]["labels"]["severity"], "warning");
    assert_eq!(
        alerts[0]["annotations"]["summary"],
        "posted by the testkit test"
    );

    // Ending the alert sends a resolved notification (send_resolved: true).
    let resolved_at = Instant::now();
    let resp = client
        .post(format!("{}/api/v2/alerts", am.url()))
        .json(&alert(Some(SystemTime::now() - Duration::from_secs(1))))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resolved = next_notification(&mut notifications, "resolved", Duration::from_secs(20)).await;
    eprintln!("resolved notification after {:?}", resolved_at.elapsed());
    assert_eq!(resolved["alerts"][0]["status"], "resolved", "{resolved}");
    assert_eq!(resolved["alerts"][0]["labels"]["run"], "t1");

    // A malformed alert is refused by the real API.
    let resp = client
        .post(format!("{}/api/v2/alerts", am.url()))
        .json(&json!([{ "annotations": {} }]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let body = resp.text().await.unwrap();
    assert!(body.contains("labels"), "{body}");

    let port = am.port();
    let dir = am.config_path().parent().unwrap().to_path_buf();
    let pid = am.pid().unwrap();
    drop(am);
    assert!(!dir.exists(), "temp dir deleted");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());
}

#[tokio::test]
async fn bad_webhook_urls_and_configs_are_clear_errors() {
    let err = Alertmanager::builder()
        .webhook("127.0.0.1:9/alerts")
        .start()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("start alertmanager: invalid webhook URL `127.0.0.1:9/alerts`"),
        "{err}"
    );

    let err = Alertmanager::builder()
        .raw_config("route:\n  receiver: missing\nreceivers: []\n")
        .start()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("start alertmanager: server exited during start-up"),
        "{err}"
    );
    assert!(
        err.contains("missing"),
        "the log tail names the problem: {err}"
    );
}

#[tokio::test]
async fn stop_keeps_the_dir_until_drop() {
    let mut am = Alertmanager::builder().start().await.unwrap();
    let dir = am.config_path().parent().unwrap().to_path_buf();
    am.stop().await.unwrap();
    assert!(am.pid().is_none());
    assert!(dir.exists());
    assert!(TcpStream::connect(("127.0.0.1", am.port())).await.is_err());
    drop(am);
    assert!(!dir.exists());
}

/// The whole path a drill takes: a metric pushed to the Pushgateway, scraped by Prometheus
/// (`honor_labels`), an alerting rule from a rule file fires, Prometheus sends it to the
/// Alertmanager, which notifies the webhook; the metric going to 0 resolves it.
#[tokio::test]
async fn prometheus_rule_fires_through_alertmanager_to_the_webhook() {
    let (webhook, mut notifications) = webhook_listener().await;
    let am = Alertmanager::builder()
        .webhook(&webhook)
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pg = Pushgateway::start().await.unwrap_or_else(|e| panic!("{e}"));
    let rules = "groups:
- name: citadel
  rules:
  - alert: CitadelItestDrill
    expr: citadel_itest_drill_condition > 0
    for: 1s
    labels:
      severity: none
    annotations:
      summary: drill {{ $labels.drill }}
  - record: job:up:sum
    expr: sum by (job) (up)
";
    let prom = Prometheus::builder()
        .scrape_config(format!(
            "- job_name: pushgateway\n  honor_labels: true\n  static_configs:\n  - targets: ['{}']",
            pg.address()
        ))
        .rule_file("citadel.yml", rules)
        .alertmanager(am.address())
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let client = http();
    let push = |value: u8| {
        client
            .put(format!("{}/metrics/job/citadel_itest_drill/drill/d1", pg.url()))
            .body(format!(
                "# TYPE citadel_itest_drill_condition gauge\ncitadel_itest_drill_condition {value}\n"
            ))
            .send()
    };
    assert_eq!(push(1).await.unwrap().status(), 200);
    let pushed = Instant::now();

    let firing = next_notification(&mut notifications, "firing", Duration::from_secs(60)).await;
    eprintln!("pushed -> firing webhook in {:?}", pushed.elapsed());
    let alert = &firing["alerts"][0];
    assert_eq!(
        alert["labels"]["alertname"], "CitadelItestDrill",
        "{firing}"
    );
    // honor_labels kept the pushed grouping labels instead of the scrape's job.
    assert_eq!(alert["labels"]["job"], "citadel_itest_drill", "{firing}");
    assert_eq!(alert["labels"]["drill"], "d1", "{firing}");
    assert_eq!(alert["annotations"]["summary"], "drill d1", "{firing}");

    // The recording rule evaluates too.
    let recorded: Value = client
        .get(format!("{}/api/v1/query", prom.url()))
        .query(&[("query", "job:up:sum{job=\"pushgateway\"}")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(recorded["data"]["result"][0]["value"][1], "1", "{recorded}");

    assert_eq!(push(0).await.unwrap().status(), 200);
    let cleared = Instant::now();
    let resolved = next_notification(&mut notifications, "resolved", Duration::from_secs(60)).await;
    eprintln!("cleared -> resolved webhook in {:?}", cleared.elapsed());
    assert_eq!(resolved["alerts"][0]["labels"]["drill"], "d1", "{resolved}");

    // Nothing listens at a closed port: Prometheus still starts with such an Alertmanager.
    let lonely = Prometheus::builder()
        .alertmanager(format!("127.0.0.1:{}", closed_port().unwrap()))
        .start()
        .await;
    assert!(lonely.is_ok());
}
