//! The `load:` tester: a load engine for HTTP targets and OpenAI-compatible streams, with
//! latency kept in HDR histograms, SLO thresholds that gate CI, and the system under test's
//! CPU and memory sampled during the run.
//!
//! - **Models.** Closed (N virtual users, optional think time) and open (arrivals on a
//!   schedule: a constant rate or ramping stages, evenly spaced or Poisson). In the open model
//!   latency is measured from each request's intended send time, which corrects coordinated
//!   omission as wrk2 does; an arrival that cannot be sent within `max_lag` is counted as
//!   dropped, never silently delayed.
//! - **Engine.** hyper's client connection API directly, one task per connection, HTTP/1.1
//!   keep-alive or HTTP/2 ([`engine`]).
//! - **Streams.** With `stream: true` each answer is read as an OpenAI SSE stream: TTFT,
//!   inter-token latency, time per output token, end-to-end latency, tokens per second,
//!   goodput. A stream without `[DONE]` is a failed request ([`stream`]).
//! - **Results.** [`result::LoadResult`] holds percentile tables, chartable buckets, the
//!   per-second series and the histograms themselves (HdrHistogram V2, base64), so results of
//!   several processes merge exactly ([`result::LoadResult::merge`]).
//! - **Thresholds.** `http_req_duration p95 < 200ms`, `rps > 50`, `error_rate < 1%`, ...
//!   ([`slo`]); a threshold without samples fails; defaults come from `performance_targets`.
//!
//! Each scenario is one check, `load.<name>` (category `load`), inside `citadel-itest run`;
//! `citadel-itest load` runs the scenarios alone with live progress. Embed one in a test:
//!
//! ```no_run
//! use std::time::Duration;
//! use citadel_itest_load::config::{ClosedModel, LoadModel, ScenarioConfig};
//! use citadel_itest_load::scenario::{RunOptions, run_scenario, verdict};
//!
//! # #[tokio::main] async fn main() {
//! let scenario = ScenarioConfig::new(
//!     "health",
//!     "http://127.0.0.1:58080/health",
//!     LoadModel::Closed(ClosedModel::new(8, Duration::from_secs(5))),
//! )
//! .thresholds(["http_req_duration p95 < 50ms", "error_rate < 1%"]);
//! let result = run_scenario(&scenario, &RunOptions::default()).await.unwrap();
//! println!("{}", result.summary_line());
//! assert!(verdict(&result).is_ok());
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod bodies;
pub mod check;
pub mod config;
pub mod distributed;
pub mod engine;
pub mod metrics;
pub mod progress;
pub mod resources;
pub mod result;
pub mod sample;
pub mod scenario;
pub mod shard;
pub mod slo;
pub mod stream;

pub use check::{LoadCheck, LoadTester, from_config};
pub use config::{LoadConfig, LoadModel, ScenarioConfig};
pub use result::LoadResult;
pub use scenario::{RunOptions, run_scenario, verdict};

/// The tester's name and config section.
pub const NAME: &str = "load";
