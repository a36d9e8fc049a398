//! The gateway routes each model to a backend hosting it: the catalogue (`/v1/models` lists
//! exactly the configured models), routing (every model answered by a backend that hosts it,
//! seen in the `x-backend-id` header) and request-id propagation, through the local gateway.
//!
//! `cargo run -p citadel-itest-examples --example gateway_routing -- [--gateway http://127.0.0.1:58080/v1] [--backends http://127.0.0.1:58101/v1,http://127.0.0.1:58102/v1,http://127.0.0.1:58103/v1]`
//!
//! The backends are `model-a`, `model-b`, ... in the order given. Exit code 0 when every check
//! passed, 1 otherwise.

use std::process::ExitCode;
use std::sync::Arc;

use citadel_itest::cross_service::{
    Aspect, BackendConfig, GatewayCheck, GatewayConfig, ModelConfig, Settings,
};
use citadel_itest::report::ConsoleReporter;
use citadel_itest::{RetryPolicy, Suite};
use citadel_itest_examples::{exit_code, flag};

const BACKENDS: &str =
    "http://127.0.0.1:58101/v1,http://127.0.0.1:58102/v1,http://127.0.0.1:58103/v1";

#[tokio::main]
async fn main() -> ExitCode {
    let mut gateway = GatewayConfig::new(
        flag("--gateway", "http://127.0.0.1:58080/v1"),
        ["llama-3-8b", "mistral-7b"],
    )
    .model(ModelConfig::embeddings("text-embedding-small"));
    for (i, url) in flag("--backends", BACKENDS).split(',').enumerate() {
        let id = format!("model-{}", char::from(b'a' + (i % 26) as u8));
        gateway = gateway.backend(BackendConfig::new(id).url(url.trim()));
    }
    let mut settings = Settings::default();
    settings.retry = RetryPolicy::new(5, std::time::Duration::from_millis(200));

    let mut suite = Suite::builder();
    for aspect in [Aspect::Catalogue, Aspect::Routing, Aspect::RequestId] {
        suite = suite.check(
            "cross_service",
            Arc::new(GatewayCheck::new(&gateway, aspect, &settings)),
        );
    }
    let out = suite
        .build()
        .run(vec![Box::new(ConsoleReporter::stdout())])
        .await;
    exit_code(&out)
}
