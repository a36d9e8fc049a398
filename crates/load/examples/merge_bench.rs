//! Distributed-run figures for docs/performance.md:
//!
//! 1. Aggregate throughput of 1, 2 and 4 shards of one closed-model run (64 users split
//!    between them) against the same testkit nginx, the shards running at once in this
//!    process (each its own engine with its own threads, as separate processes would be).
//!    On a 2-core machine this shows what sharding costs, not more capacity.
//! 2. The coordinator's merge of 64 shards' results: parse 64 JSON results (each with a
//!    per-second series) and [`LoadResult::merge`] them, then judge a threshold.
//!
//! ```sh
//! cargo run --release -p citadel-itest-load --example merge_bench            # 5 s per run
//! cargo run --release -p citadel-itest-load --example merge_bench -- secs 10 shards 64
//! ```

use std::time::{Duration, Instant};

use citadel_itest_load::config::{ClosedModel, LoadModel, OpenModel, ScenarioConfig};
use citadel_itest_load::result::LoadResult;
use citadel_itest_load::scenario::{RunOptions, run_scenario};
use citadel_itest_load::shard::Shard;
use citadel_itest_load::slo::Threshold;
use citadel_itest_testkit::Nginx;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|w| w[0] == name)
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let secs = arg("secs", 5);
    let merge_shards = arg("shards", 64) as u32;
    let nginx = Nginx::builder()
        .http_snippet("keepalive_requests 1000000;")
        .start()
        .await
        .expect("start testkit nginx (Debian package nginx-light)");
    let url = format!("{}/", nginx.url());
    let whole = ScenarioConfig::new(
        "bench",
        url.clone(),
        LoadModel::Closed(ClosedModel::new(64, Duration::from_secs(secs))),
    )
    .timeout(Duration::from_secs(5));

    println!("| shards | requests | aggregate req/s | per shard req/s |");
    println!("|---|---|---|---|");
    for n in [1u32, 2, 4] {
        let runs = (0..n).map(|i| {
            let s = whole.clone();
            let options = RunOptions::default().shard(Shard::new(i, n).unwrap());
            tokio::spawn(async move { run_scenario(&s, &options).await.unwrap() })
        });
        let mut results = Vec::new();
        for r in runs.collect::<Vec<_>>() {
            results.push(r.await.unwrap());
        }
        let merged = LoadResult::merge(&results).unwrap();
        let rps = merged.counts.requests as f64 / merged.duration_s;
        let per: Vec<String> = results
            .iter()
            .map(|r| format!("{:.0}", r.counts.requests as f64 / r.duration_s))
            .collect();
        println!(
            "| {n} | {} | {:.0} | {} |",
            merged.counts.requests,
            rps,
            per.join(" / ")
        );
    }

    // One pod's result of an open run at 2000/s with a per-second series, as a coordinator
    // receives it from each shard; 64 of them (each its own shard index) are parsed and
    // merged.
    let open = ScenarioConfig::new(
        "bench",
        url,
        LoadModel::Open(OpenModel::constant(2000.0, Duration::from_secs(secs)).poisson(1)),
    );
    let one = run_scenario(&open, &RunOptions::default()).await.unwrap();
    let jsons: Vec<Vec<u8>> = (0..merge_shards)
        .map(|i| {
            let mut r = one.clone();
            r.shard = Some(Shard::new(i, merge_shards).unwrap());
            serde_json::to_vec(&r).unwrap()
        })
        .collect();
    let bytes: usize = jsons.iter().map(Vec::len).sum();
    let threshold = Threshold::parse("http_req_duration p99 < 1s").unwrap();
    let mut best = Duration::MAX;
    let mut best_parse = Duration::MAX;
    for _ in 0..5 {
        let t0 = Instant::now();
        let results: Vec<LoadResult> = jsons
            .iter()
            .map(|j| LoadResult::from_json_slice(j).unwrap())
            .collect();
        let parsed = t0.elapsed();
        let mut merged = LoadResult::merge(&results).unwrap();
        merged.apply_thresholds(std::slice::from_ref(&threshold));
        let all = t0.elapsed();
        assert_eq!(
            merged.counts.requests,
            one.counts.requests * u64::from(merge_shards)
        );
        best = best.min(all);
        best_parse = best_parse.min(parsed);
    }
    println!(
        "\nmerge of {merge_shards} shard results ({} requests each, {} s series, {:.1} MiB of JSON): \
         parse {:.1} ms + merge and judge {:.1} ms = {:.1} ms (best of 5)",
        one.counts.requests,
        one.series.seconds.len(),
        bytes as f64 / (1024.0 * 1024.0),
        best_parse.as_secs_f64() * 1000.0,
        (best - best_parse).as_secs_f64() * 1000.0,
        best.as_secs_f64() * 1000.0
    );
}
