//! A monitoring drill: induce an alert's condition (a gauge pushed to the Pushgateway), then
//! require that Prometheus fires the alert and Alertmanager delivers it to a webhook this drill
//! listens on, within a bound; the condition is removed afterwards (also on failure).
//!
//! `cargo run -p citadel-itest-examples --example alerts_fire -- [--prometheus http://127.0.0.1:59090] [--alertmanager http://127.0.0.1:59093] [--pushgateway http://127.0.0.1:59091] [--alert CitadelItestDrill] [--webhook 127.0.0.1:59095]`
//!
//! The local stack's Alertmanager sends every alert to `127.0.0.1:59095/alerts` and Prometheus
//! fires `CitadelItestDrill` when `citadel_itest_drill_condition > 0` for 2 s. Exit code 0 when
//! the alert arrived in time, 1 otherwise.

use std::process::ExitCode;

use anyhow::Context;
use citadel_itest::monitoring::config::DrillConfig;
use citadel_itest::monitoring::drill::DrillCheck;
use citadel_itest::{Status, new_run_id, run_one};
use citadel_itest_examples::{flag, line};

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    // Drill configs are easiest written as they are in YAML; here the same keys as JSON.
    let drill: DrillConfig =
        citadel_itest::serde_json::from_value(citadel_itest::serde_json::json!({
            "name": "drill",
            "prometheus": flag("--prometheus", "http://127.0.0.1:59090"),
            "alertmanager": flag("--alertmanager", "http://127.0.0.1:59093"),
            "alert": flag("--alert", "CitadelItestDrill"),
            "induce": { "pushgateway": {
                "url": flag("--pushgateway", "http://127.0.0.1:59091"),
                "metric": "citadel_itest_drill_condition",
            } },
            "webhook": { "listen": flag("--webhook", "127.0.0.1:59095"), "path": "/alerts" },
            "within": "45s",
        }))
        .context("the drill's configuration")?;

    let result = run_one(&DrillCheck::new(drill, &new_run_id())).await;
    println!("{}", line(&result));
    for m in result.outcome.measurements() {
        println!("  {m}");
    }
    Ok(if result.outcome.status() == Status::Passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
