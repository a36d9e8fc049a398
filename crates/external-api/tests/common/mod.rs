//! Helpers shared by the external-API tests: settings with short bounds, running a tester
//! through a `Suite`, reading measurements, a secret scan over every result, a latency proxy
//! and Prometheus behind an authenticating nginx.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use citadel_itest_core::{RetryPolicy, RunOutput, Status, Suite, TestResult};
use citadel_itest_external_api::{ExternalApiConfig, ExternalApiTester, Settings};
use citadel_itest_testkit::{Nginx, Postgres, Prometheus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// The limit every `latency_p95` is held to in these tests (the reference default).
pub const LIMIT: Duration = Duration::from_millis(200);

/// Settings with a fresh run id, quick retries and the reference latency limit.
pub fn settings() -> Settings {
    Settings::default()
        .timeout(Duration::from_secs(30))
        .retry(RetryPolicy::new(2, Duration::from_millis(100)))
        .latency_p95(LIMIT)
        .samples(50)
        .cancel_grace(Duration::from_secs(5))
}

/// A tester over `config` with [`settings`].
pub fn tester(config: ExternalApiConfig) -> ExternalApiTester {
    ExternalApiTester::with_settings(config, settings())
}

/// Run every check of `tester` in a suite (the way the binary does), optionally with an
/// external cancellation token.
pub async fn run(tester: &ExternalApiTester, cancel: Option<CancellationToken>) -> RunOutput {
    let mut b = Suite::builder()
        .tester(tester)
        .concurrency(6)
        .default_timeout(Duration::from_secs(30))
        .cancel_grace(Duration::from_secs(5))
        .run_id(tester.settings().run_id.clone());
    if let Some(token) = cancel {
        b = b.cancellation(token);
    }
    b.build().run(Vec::new()).await
}

/// The result with this id.
pub fn result<'a>(results: &'a [TestResult], id: &str) -> &'a TestResult {
    results
        .iter()
        .find(|r| r.id.as_str() == id)
        .unwrap_or_else(|| panic!("no result {id}"))
}

/// A measurement's value, which must be there.
pub fn value(result: &TestResult, name: &str) -> f64 {
    result
        .measurement(name)
        .unwrap_or_else(|| panic!("{} has no {name}: {:?}", result.id, result.outcome))
        .value
        .unwrap_or_else(|| panic!("{} has {name} without a value", result.id))
}

/// Every result passed; otherwise panic listing those that did not.
pub fn assert_all_passed(results: &[TestResult]) {
    let bad: Vec<String> = results
        .iter()
        .filter(|r| r.outcome.status() != Status::Passed)
        .map(|r| format!("{} {}: {:?}", r.id, r.outcome.status(), r.outcome.message()))
        .collect();
    assert!(bad.is_empty(), "not passed:\n{}", bad.join("\n"));
}

/// No secret appears in any message, Debug output or JSON serialisation of the results.
pub fn assert_no_secret(results: &[TestResult], secrets: &[&str]) {
    for r in results {
        let texts = [
            r.outcome.message().unwrap_or_default().to_string(),
            format!("{r:?}"),
            serde_json::to_string(r).expect("serialise result"),
        ];
        for secret in secrets {
            assert!(
                secret.len() >= 4,
                "test secrets must be at least 4 characters"
            );
            for t in &texts {
                assert!(!t.contains(secret), "{} leaks a secret: {t}", r.id);
            }
        }
    }
}

/// Print the latency figures of a performance result (for the report of measured numbers).
pub fn print_latencies(r: &TestResult) {
    eprintln!(
        "{}: p50={:.3}ms p95={:.3}ms p99={:.3}ms max={:.3}ms samples={}",
        r.id,
        value(r, "latency_p50"),
        value(r, "latency_p95"),
        value(r, "latency_p99"),
        value(r, "latency_max"),
        value(r, "samples"),
    );
}

/// Print every result on one line each.
pub fn print_results(results: &[TestResult]) {
    for r in results {
        let ms: Vec<String> = r
            .outcome
            .measurements()
            .iter()
            .map(|m| m.to_string())
            .collect();
        eprintln!(
            "{} {} in {:?} [{}] {}",
            r.id,
            r.outcome.status(),
            r.duration,
            ms.join(", "),
            r.outcome.message().unwrap_or_default()
        );
    }
}

/// Temporary tables with the harness prefix that any session can see.
pub async fn pg_temp_tables(pg: &Postgres) -> String {
    pg.execute(
        "SELECT coalesce(string_agg(relname, ','), '') FROM pg_catalog.pg_class \
         WHERE relname LIKE 'citadel\\_itest\\_%'",
    )
    .await
    .expect("query pg_class")
    .trim()
    .to_string()
}

/// Wait until no table with the harness prefix exists (sessions end asynchronously).
pub async fn assert_no_temp_tables(pg: &Postgres) {
    let mut left = String::new();
    for _ in 0..50 {
        left = pg_temp_tables(pg).await;
        if left.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("temporary tables left behind: {left}");
}

/// A TCP proxy on 127.0.0.1 that forwards to `target` and holds every chunk for `delay` in
/// each direction: a slow network, so a test can act in the middle of a check.
pub struct DelayProxy {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl DelayProxy {
    pub async fn start(target: SocketAddr, delay: Duration) -> DelayProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                conns.spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pump(cr, sw, delay), pump(sr, cw, delay));
                });
            }
        });
        DelayProxy { addr, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tokio::time::sleep(delay).await;
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A real Prometheus (scraping a dead target, with a rule file) behind nginx, which demands
/// basic auth under `/basic/` and a bearer token under `/bearer/`, and is open at `/`.
pub struct GuardedPrometheus {
    pub prometheus: Prometheus,
    pub nginx: Nginx,
    pub user: String,
    pub password: String,
    pub token: String,
    _dir: tempfile::TempDir,
}

pub const RULES: &str = "groups:
  - name: citadel_itest_rules
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
      - alert: TargetDown
        expr: up == 0
        for: 1m
";

impl GuardedPrometheus {
    pub async fn start() -> GuardedPrometheus {
        let dead = citadel_itest_testkit::closed_port().expect("closed port");
        let prometheus = Prometheus::builder()
            .scrape_target("dead", [format!("127.0.0.1:{dead}")])
            .rule_file("rules.yml", RULES)
            .start()
            .await
            .expect("start prometheus");
        let dir = tempfile::tempdir().expect("temp dir");
        let user = "itest".to_string();
        let password = "prom-basic-secret-4711".to_string();
        let token = "prom-bearer-token-0815".to_string();
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(&htpasswd, format!("{user}:{{PLAIN}}{password}\n")).expect("htpasswd");
        let proxy = "proxy_pass http://citadel_backend/; proxy_http_version 1.1; \
                     proxy_set_header Connection \"\"; proxy_set_header Authorization \"\";";
        let nginx = Nginx::builder()
            .upstream(format!("127.0.0.1:{}", prometheus.port()))
            .location(format!(
                "location /basic/ {{ auth_basic \"prometheus\"; auth_basic_user_file {}; {proxy} }}",
                htpasswd.display()
            ))
            .location(format!(
                "location /bearer/ {{ if ($http_authorization != \"Bearer {token}\") {{ return 401; }} {proxy} }}"
            ))
            .start()
            .await
            .expect("start nginx");
        GuardedPrometheus {
            prometheus,
            nginx,
            user,
            password,
            token,
            _dir: dir,
        }
    }

    pub fn basic_url(&self) -> String {
        format!("{}/basic", self.nginx.url())
    }

    pub fn bearer_url(&self) -> String {
        format!("{}/bearer", self.nginx.url())
    }
}
