//! A short load scenario on the gateway: streamed chat completions at a constant arrival rate,
//! with SLO thresholds on time to first token, latency, errors and throughput. Prints the
//! headline figures and every violated threshold.
//!
//! `cargo run -p citadel-itest-examples --example llm_load -- [--url http://127.0.0.1:58080/v1/chat/completions] [--model llama-3-8b] [--rate 10] [--seconds 3]`
//!
//! Exit code 0 when every threshold held, 1 when one was violated or the scenario could not run.

use std::process::ExitCode;

use anyhow::Context;
use citadel_itest::load::config::{OpenModel, RequestConfig};
use citadel_itest::load::progress::ProgressMode;
use citadel_itest::load::scenario::figure_lines;
use citadel_itest::load::{LoadModel, RunOptions, ScenarioConfig, run_scenario, verdict};
use citadel_itest_examples::flag;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let url = flag("--url", "http://127.0.0.1:58080/v1/chat/completions");
    let model = flag("--model", "llama-3-8b");
    let rate: f64 = flag("--rate", "10")
        .parse()
        .context("--rate: not a number")?;
    let seconds: f64 = flag("--seconds", "3")
        .parse()
        .context("--seconds: not a number")?;
    let duration = std::time::Duration::try_from_secs_f64(seconds).context("--seconds")?;

    let body = citadel_itest::serde_json::json!({
        "model": model,
        "stream": true,
        "max_tokens": 16,
        "messages": [{ "role": "user", "content": "Say hello." }],
    });
    let scenario = ScenarioConfig::new(
        "gateway_chat_stream",
        &url,
        LoadModel::Open(OpenModel::constant(rate, duration)),
    )
    .request(RequestConfig::post(&url, body.to_string()).header("content-type", "application/json"))
    .stream(true)
    .thresholds([
        "error_rate < 1%",
        "ttft p95 < 500ms",
        "http_req_duration p95 < 2s",
        &format!("rps > {}", rate * 0.8),
    ]);

    let options = RunOptions::default().progress(ProgressMode::Quiet);
    let result = run_scenario(&scenario, &options)
        .await
        .context("run the scenario")?;
    for line in figure_lines(&result) {
        println!("{line}");
    }
    Ok(match verdict(&result) {
        Ok(()) => {
            println!("every threshold held");
            ExitCode::SUCCESS
        }
        Err(violations) => {
            for v in violations {
                println!("violated: {v}");
            }
            ExitCode::FAILURE
        }
    })
}
