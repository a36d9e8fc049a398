//! Gateways that lie or hang: error handling fails on HTML 200 answers, on nginx's own HTML 413
//! page, and within its bounds on a gateway that never answers; the other checks fail closed too.

mod common;

use std::time::{Duration, Instant};

use citadel_itest_core::Status;
use citadel_itest_cross_service::{Aspect, BackendConfig, GatewayConfig};
use citadel_itest_testkit::{HangingListener, ModelServer, Nginx};
use common::{MODELS, Stack, assert_status, message, run};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Answers every request `200 text/html` with a small page, reading (and dropping) what the
/// client sends first.
async fn html_200() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await;
                let page = "<html><body>Welcome to the gateway</body></html>";
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                            page.len()
                        )
                        .as_bytes(),
                    )
                    .await;
                // Drain whatever else comes (a large body) for a moment, then close.
                let _ = tokio::time::timeout(Duration::from_millis(500), async {
                    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                })
                .await;
            });
        }
    });
    format!("http://{addr}/v1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_html_200_gateway_fails_every_check_it_reaches() {
    let url = html_200().await;
    let gw = GatewayConfig::new(url, ["llama-3-8b"]).backend(BackendConfig::new("model-a"));
    let r = run(&gw, Aspect::ErrorHandling).await;
    assert_status(&r, Status::Failed);
    let m = message(&r);
    assert!(m.contains("unknown model: answered 200 (text/html)"), "{m}");
    assert!(m.contains("malformed JSON: answered 200"), "{m}");
    assert!(m.contains("Welcome to the gateway"), "{m}");
    for aspect in [
        Aspect::Catalogue,
        Aspect::Routing,
        Aspect::RoundTrip,
        Aspect::Streaming,
        Aspect::LoadBalancing,
        Aspect::RequestId,
        Aspect::Performance,
    ] {
        let r = run(&gw, aspect).await;
        assert_status(&r, Status::Failed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_html_413_page_fails_error_handling() {
    let backend = ModelServer::builder()
        .backend_id("model-a")
        .models(MODELS)
        .start()
        .await
        .unwrap();
    let nginx = Nginx::builder()
        .upstream(format!("127.0.0.1:{}", backend.port()))
        .location("client_max_body_size 1m;")
        .start()
        .await
        .unwrap();
    let gw = GatewayConfig::new(format!("{}/v1", nginx.url()), ["llama-3-8b"]);
    let r = run(&gw, Aspect::ErrorHandling).await;
    assert_status(&r, Status::Failed);
    let m = message(&r);
    assert!(
        m.contains("oversized body: answered 413 with text/html"),
        "{m}"
    );
    assert!(
        !m.contains("unknown model") && !m.contains("malformed"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_gateway_fails_within_the_request_timeout() {
    let hang = HangingListener::start().await.unwrap();
    let mut gw = GatewayConfig::new(format!("http://127.0.0.1:{}/v1", hang.port()), ["m"]);
    gw.request_timeout = Duration::from_millis(300);
    let started = Instant::now();
    let r = run(&gw, Aspect::ErrorHandling).await;
    assert_status(&r, Status::Failed);
    assert!(message(&r).contains("no answer within"), "{}", message(&r));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let r = run(&gw, Aspect::Streaming).await;
    assert_status(&r, Status::Failed);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_routes_and_catalogues_are_named() {
    let stack = Stack::start([1, 1, 1]).await;
    // The catalogue lacks a configured model and lists three that are not configured.
    let gw = GatewayConfig::new(format!("{}/v1", stack.nginx.url()), ["gpt-oss"]);
    let r = run(&gw, Aspect::Catalogue).await;
    assert_status(&r, Status::Failed);
    let m = message(&r);
    assert!(
        m.contains("missing `gpt-oss`") && m.contains("unexpected `llama-3-8b`"),
        "{m}"
    );
    // model-c is said to host only the embeddings model, but round robin sends it chat too.
    let mut gw = stack.config([1, 1, 1]);
    gw.backends[2].models = vec!["text-embedding-small".into()];
    let r = run(&gw, Aspect::Routing).await;
    assert_status(&r, Status::Failed);
    assert!(
        message(&r).contains("served by backend `model-c`"),
        "{}",
        message(&r)
    );
    let r = run(&gw, Aspect::LoadBalancing).await;
    assert_status(&r, Status::Failed);
    assert!(
        message(&r).contains("not configured to host it: `model-c`"),
        "{}",
        message(&r)
    );
    // A path route said to reach model-b only.
    let mut gw = stack.config([1, 1, 1]);
    gw.routes[0].backends = vec!["model-b".into()];
    let r = run(&gw, Aspect::Routing).await;
    assert_status(&r, Status::Failed);
    assert!(
        message(&r).contains("route /pinned/model-a/v1"),
        "{}",
        message(&r)
    );
}
