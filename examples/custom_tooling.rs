//! Custom tooling: a suite built in code, its results consumed without any reporter. Checks the
//! local stack's entry points (connectivity and health of the gateway and each model backend,
//! and a check of its own: the gateway lists at least `--min-models` models), then prints its
//! own table and a one-line verdict from `RunOutput` (results, summary), as a deploy gate or a
//! dashboard feeder would.
//!
//! `cargo run -p citadel-itest-examples --example custom_tooling -- [--gateway http://127.0.0.1:58080] [--backends http://127.0.0.1:58101,http://127.0.0.1:58102,http://127.0.0.1:58103] [--min-models 3]`
//!
//! Exit code 0 when every check passed, 1 otherwise.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use citadel_itest::basic::{ConnectivityCheck, HealthCheck, TargetConfig};
use citadel_itest::{Category, CheckExt, Outcome, RetryPolicy, Status, Suite, check_fn_with};
use citadel_itest_examples::{flag, line};

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let gateway = flag("--gateway", "http://127.0.0.1:58080");
    let backends = flag(
        "--backends",
        "http://127.0.0.1:58101,http://127.0.0.1:58102,http://127.0.0.1:58103",
    );
    let min_models: usize = flag("--min-models", "3")
        .parse()
        .context("--min-models: not a number")?;

    // Hand-built checks carry no retry policy: give them one, a service may still be starting.
    let ready = RetryPolicy::new(5, Duration::from_millis(200));
    let mut suite = Suite::builder()
        .concurrency(4)
        .default_timeout(Duration::from_secs(10));
    let targets = std::iter::once(("gateway".to_string(), gateway.clone())).chain(
        backends
            .split(',')
            .enumerate()
            .map(|(i, url)| (format!("backend_{i}"), url.trim().to_string())),
    );
    for (name, url) in targets {
        let target = TargetConfig::new(name, url).health_path("/health");
        suite = suite
            .check(
                "entry_points",
                ConnectivityCheck::new(&target)
                    .retry_until_ready(ready)
                    .boxed(),
            )
            .check(
                "entry_points",
                HealthCheck::new(&target).retry_until_ready(ready).boxed(),
            );
    }
    let models = check_fn_with(
        "entry_points.gateway.models",
        Category::Routing,
        format!("{gateway}/v1/models"),
        move |url, ctx| async move {
            let client = reqwest::Client::builder()
                .timeout(ctx.remaining())
                .build()?;
            let list: citadel_itest::serde_json::Value = client
                .get(url.as_str())
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let n = list["data"].as_array().map_or(0, Vec::len);
            Ok(if n >= min_models {
                Outcome::passed()
            } else {
                Outcome::failed(format!(
                    "{url} lists {n} models, at least {min_models} expected"
                ))
            })
        },
    );
    suite = suite.check("entry_points", models.boxed());

    // No reporter: the results are ours to use.
    let out = suite.build().run(Vec::new()).await;
    for result in &out.results {
        println!("{}", line(result));
    }
    let passed = out
        .results
        .iter()
        .filter(|r| r.outcome.status() == Status::Passed)
        .count();
    let slowest = out.results.iter().max_by_key(|r| r.duration);
    println!(
        "{passed}/{} passed in {:.1?}{}",
        out.results.len(),
        out.summary.duration,
        slowest.map_or(String::new(), |r| format!(
            "; slowest {} ({:.1?})",
            r.id, r.duration
        )),
    );
    Ok(if passed == out.results.len() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
