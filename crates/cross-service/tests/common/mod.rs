//! A real nginx gateway in front of three model server fixtures, as the local stack has.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use citadel_itest_core::{Status, TestResult, run_one};
use citadel_itest_cross_service::{
    Aspect, BackendConfig, GatewayCheck, GatewayConfig, ModelConfig, RouteConfig, Settings,
};
use citadel_itest_testkit::{ModelServer, Nginx, NginxBuilder};

pub const MODELS: [&str; 3] = ["llama-3-8b", "mistral-7b", "text-embedding-small"];
pub const IDS: [&str; 3] = ["model-a", "model-b", "model-c"];

/// What a Citadel gateway does with a body over its limit: an OpenAI-format 413, not nginx's
/// HTML page (the same lines as `scripts/services.sh`'s gateway).
pub const OPENAI_413: &str = r#"client_max_body_size 1m;
    error_page 413 = @openai_413;
    location @openai_413 { default_type application/json; return 413 '{"error":{"message":"Request body too large.","type":"invalid_request_error","param":null,"code":"request_too_large"}}'; }"#;

pub struct Stack {
    pub backends: Vec<ModelServer>,
    pub nginx: Nginx,
}

impl Stack {
    /// Three backends; `weights` become nginx's `weight=` per upstream; a path route
    /// `/pinned/model-a/v1` to model-a only; the OpenAI-format 413.
    pub async fn start(weights: [u32; 3]) -> Stack {
        Self::start_with(weights, |b| b).await
    }

    pub async fn start_with(
        weights: [u32; 3],
        extra: impl FnOnce(NginxBuilder) -> NginxBuilder,
    ) -> Stack {
        let mut backends = Vec::new();
        for (i, id) in IDS.iter().enumerate() {
            backends.push(
                ModelServer::builder()
                    .backend_id(*id)
                    .models(MODELS)
                    .ttft(Duration::from_millis(5))
                    .itl(Duration::from_millis(1))
                    .seed(i as u64 + 1)
                    .start()
                    .await
                    .expect("start model server"),
            );
        }
        let mut b = Nginx::builder();
        for (s, w) in backends.iter().zip(weights) {
            b = b.upstream(format!("127.0.0.1:{} weight={w}", s.port()));
        }
        let pinned = format!(
            "upstream pinned_a {{ server 127.0.0.1:{}; keepalive 4; }}",
            backends[0].port()
        );
        let b = b.http_snippet(pinned).location(OPENAI_413).location(
            "location /pinned/model-a/ { proxy_pass http://pinned_a/; proxy_http_version 1.1; \
                 proxy_set_header Connection \"\"; proxy_buffering off; }",
        );
        let nginx = extra(b).start().await.expect("start nginx");
        Stack { backends, nginx }
    }

    /// The config of this stack, with `weights` declared.
    pub fn config(&self, weights: [u32; 3]) -> GatewayConfig {
        let mut gw = GatewayConfig::new(
            format!("{}/v1", self.nginx.url()),
            ["llama-3-8b", "mistral-7b"],
        )
        .model(ModelConfig::embeddings("text-embedding-small"))
        .route(RouteConfig::new(
            "/pinned/model-a/v1",
            "llama-3-8b",
            ["model-a"],
        ))
        .timeout(Duration::from_secs(30));
        for ((s, id), w) in self.backends.iter().zip(IDS).zip(weights) {
            gw = gw.backend(BackendConfig::new(id).url(s.base_url()).weight(w));
        }
        gw.load_balancing.requests = 300;
        gw.performance.samples = 20;
        gw
    }
}

pub async fn run(gw: &GatewayConfig, aspect: Aspect) -> TestResult {
    let settings = Settings::default().latency_p95(Duration::from_secs(2));
    run_one(&GatewayCheck::new(gw, aspect, &settings)).await
}

pub fn assert_status(r: &TestResult, status: Status) {
    assert_eq!(
        r.outcome.status(),
        status,
        "{}: {:?}\ndetails: {:?}",
        r.id,
        r.outcome,
        r.details
    );
}

pub fn message(r: &TestResult) -> String {
    r.outcome.message().unwrap_or_default().to_string()
}
