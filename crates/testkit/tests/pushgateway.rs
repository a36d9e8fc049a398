//! The Pushgateway launcher against the real `prometheus-pushgateway` binary: it starts, takes
//! pushes, serves them back on `/metrics` and its API, refuses malformed pushes, wipes with the
//! admin API only when enabled, and stops on drop. A missing binary fails these tests.

use std::time::{Duration, Instant};

use citadel_itest_testkit::Pushgateway;
use serde_json::Value;
use tokio::net::TcpStream;

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("build HTTP client")
}

/// The samples of `/metrics` named `name`, as (labels, value).
async fn samples(pg: &Pushgateway, name: &str) -> Vec<(Vec<(String, String)>, f64)> {
    let text = http()
        .get(format!("{}/metrics", pg.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("the Pushgateway's /metrics parses");
    scrape
        .samples
        .into_iter()
        .filter(|s| s.metric == name)
        .map(|s| {
            let mut labels: Vec<(String, String)> = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            labels.sort();
            let value = match s.value {
                prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Untyped(v) => v,
                other => panic!("unexpected value {other:?}"),
            };
            (labels, value)
        })
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn pushgateway_takes_pushes_and_serves_them_back() {
    let started = Instant::now();
    let pg = Pushgateway::start().await.unwrap_or_else(|e| panic!("{e}"));
    eprintln!("pushgateway started in {:?}", started.elapsed());
    assert_eq!(pg.url(), format!("http://127.0.0.1:{}", pg.port()));
    assert_eq!(pg.address(), format!("127.0.0.1:{}", pg.port()));

    let client = http();
    let body = "# HELP citadel_test_value A value pushed by the test.\n\
                # TYPE citadel_test_value gauge\n\
                citadel_test_value{check=\"a \\\"quoted\\\" one\"} 42.5\n";
    let resp = client
        .put(format!(
            "{}/metrics/job/citadel_test/instance/host-1",
            pg.url()
        ))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "{}",
        resp.text().await.unwrap_or_default()
    );

    let text = client
        .get(format!("{}/metrics", pg.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"citadel_test_value{check="a \"quoted\" one",instance="host-1",job="citadel_test"} 42.5"#),
        "{text}"
    );
    // prometheus-parse 0.2 hands label values back still escaped.
    let got = samples(&pg, "citadel_test_value").await;
    assert_eq!(
        got,
        vec![(
            labels(&[
                ("check", r#"a \"quoted\" one"#),
                ("instance", "host-1"),
                ("job", "citadel_test")
            ]),
            42.5
        )]
    );
    let push_time = samples(&pg, "push_time_seconds").await;
    assert_eq!(push_time.len(), 1, "{push_time:?}");
    assert!(push_time[0].1 > 1.0e9, "{push_time:?}");

    // PUT replaces the whole group.
    let resp = client
        .put(format!(
            "{}/metrics/job/citadel_test/instance/host-1",
            pg.url()
        ))
        .body("citadel_test_other 7\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(samples(&pg, "citadel_test_value").await.is_empty());
    assert_eq!(samples(&pg, "citadel_test_other").await.len(), 1);

    // The API lists the group.
    let api: Value = client
        .get(format!("{}/api/v1/metrics", pg.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api["status"], "success", "{api}");
    assert_eq!(api["data"][0]["labels"]["job"], "citadel_test", "{api}");
    assert_eq!(api["data"][0]["labels"]["instance"], "host-1", "{api}");

    // Malformed text is refused and changes nothing.
    let resp = client
        .put(format!(
            "{}/metrics/job/citadel_test/instance/host-1",
            pg.url()
        ))
        .body("this is { not metrics\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(samples(&pg, "citadel_test_other").await.len(), 1);

    // DELETE removes the group.
    let resp = client
        .delete(format!(
            "{}/metrics/job/citadel_test/instance/host-1",
            pg.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert!(samples(&pg, "citadel_test_other").await.is_empty());

    // The admin API is off by default.
    let resp = client
        .put(format!("{}/api/v1/admin/wipe", pg.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    let port = pg.port();
    let pid = pg.pid().unwrap();
    let dir = pg.log_path().parent().unwrap().to_path_buf();
    drop(pg);
    assert!(!dir.exists(), "temp dir deleted");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());
}

#[tokio::test]
async fn admin_api_wipes_everything_when_enabled() {
    let mut pg = Pushgateway::builder()
        .admin_api(true)
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let client = http();
    for job in ["a", "b"] {
        let resp = client
            .post(format!("{}/metrics/job/{job}", pg.url()))
            .body("citadel_test_wiped 1\n")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(samples(&pg, "citadel_test_wiped").await.len(), 2);
    let resp = client
        .put(format!("{}/api/v1/admin/wipe", pg.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert!(samples(&pg, "citadel_test_wiped").await.is_empty());

    let dir = pg.log_path().parent().unwrap().to_path_buf();
    pg.stop().await.unwrap();
    assert!(pg.pid().is_none());
    assert!(dir.exists(), "stop keeps the dir");
    assert!(TcpStream::connect(("127.0.0.1", pg.port())).await.is_err());
    drop(pg);
    assert!(!dir.exists());
}
