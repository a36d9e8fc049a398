//! A fault drill with the fault proxy: what a caller of the gateway sees when the way to it
//! fails, and that it recovers once the fault is gone. Starts an HTTP fault proxy in front of
//! the gateway on a free loopback port, then (one check each, in order): normal answers through
//! the proxy; with an injected `503` every call gets the 503 and the proxy logged it; with the
//! connection reset the call fails at the transport; the fault removed, normal answers again.
//! Point your own service's dependency URL at `proxy.url()` to drill its error handling the same
//! way (the `faults:` tester's drills do that through the proxy's control API).
//!
//! `cargo run -p citadel-itest-examples --example fault_drill -- [--upstream 127.0.0.1:58080] [--path /v1/models]`
//!
//! Exit code 0 when every step behaved, 1 otherwise.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use citadel_itest::faults::{EventKind, Fault, FaultSpec, Mode, Proxy, ProxyConfig, ProxyHandle};
use citadel_itest::report::ConsoleReporter;
use citadel_itest::serde_json::json;
use citadel_itest::{BoxError, Category, CheckExt, Outcome, Suite, check_fn_with};
use citadel_itest_examples::{exit_code, flag};

/// What every step needs (each check holds it; `check_fn_with` hands it to every run).
#[derive(Clone)]
struct Drill {
    proxy: Arc<ProxyHandle>,
    url: Arc<String>,
    client: reqwest::Client,
}

impl Drill {
    /// The status of one GET through the proxy, or the transport error.
    async fn get(&self) -> Result<u16, reqwest::Error> {
        Ok(self
            .client
            .get(self.url.as_str())
            .send()
            .await?
            .status()
            .as_u16())
    }

    /// One GET with `fault` applied, the fault removed afterwards.
    async fn get_with(
        &self,
        fault: citadel_itest::serde_json::Value,
    ) -> Result<Result<u16, reqwest::Error>, BoxError> {
        let fault: Fault = citadel_itest::serde_json::from_value(fault)?;
        let id = self.proxy.add(FaultSpec::new(fault))?;
        let status = self.get().await;
        self.proxy.remove(id);
        Ok(status)
    }
}

fn expect(ok: bool, otherwise: String) -> Outcome {
    if ok {
        Outcome::passed()
    } else {
        Outcome::failed(otherwise)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let upstream = flag("--upstream", "127.0.0.1:58080");
    let proxy = Proxy::start(ProxyConfig::new(&upstream).mode(Mode::Http))
        .await
        .with_context(|| format!("start a fault proxy in front of {upstream}"))?;
    let drill = Drill {
        url: Arc::new(format!("{}{}", proxy.url(), flag("--path", "/v1/models"))),
        proxy: Arc::new(proxy),
        // A new connection per call: TCP faults (reset) act on connections as they are made.
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(0)
            .build()?,
    };

    let baseline = check_fn_with(
        "faults.gateway.baseline",
        Category::ErrorHandling,
        drill.clone(),
        |d, _ctx| async move {
            let status = d.get().await?;
            Ok(expect(
                status == 200,
                format!("without a fault the gateway answered {status}"),
            ))
        },
    );
    let status_503 = check_fn_with(
        "faults.gateway.status_503",
        Category::ErrorHandling,
        drill.clone(),
        |d, _ctx| async move {
            let status = d
                .get_with(json!({ "type": "http_status", "status": 503 }))
                .await?;
            let logged = d
                .proxy
                .events()
                .iter()
                .any(|e| matches!(e.kind, EventKind::Response { status: 503 }));
            Ok(expect(
                matches!(status, Ok(503)) && logged,
                format!(
                    "with a 503 injected the call got {status:?} (in the proxy's log: {logged})"
                ),
            ))
        },
    );
    let reset = check_fn_with(
        "faults.gateway.reset",
        Category::ErrorHandling,
        drill.clone(),
        |d, _ctx| async move {
            let status = d.get_with(json!({ "type": "reset" })).await?;
            Ok(expect(
                status.is_err(),
                format!("with the connection reset the call got {status:?}"),
            ))
        },
    );
    let recovery = check_fn_with(
        "faults.gateway.recovery",
        Category::ErrorHandling,
        drill.clone(),
        |d, _ctx| async move {
            d.proxy.clear();
            let status = d.get().await?;
            Ok(expect(
                status == 200,
                format!("after the fault's removal the gateway answered {status}"),
            ))
        },
    );

    // One at a time, in this order: each step changes the proxy the next one goes through.
    let out = Suite::builder()
        .concurrency(1)
        .check("faults", baseline.boxed())
        .check("faults", status_503.boxed())
        .check("faults", reset.boxed())
        .check("faults", recovery.boxed())
        .build()
        .run(vec![Box::new(ConsoleReporter::stdout())])
        .await;
    drill.proxy.stop().await;
    Ok(exit_code(&out))
}
