//! Runner overhead benchmark: 10,000 no-op checks at concurrency 64, with and without the JSON
//! reporter (in memory). Prints min / median / max wall time over repeated runs.
//!
//! Run: `cargo run --release -p citadel-itest-examples --example runner_overhead [-- CHECKS CONCURRENCY ROUNDS]`
//! Target (docs/performance.md): the median with reporters stays under 100 ms on the 2-core
//! reference machine.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use citadel_itest_core::report::JsonReporter;
use citadel_itest_core::{Category, CheckExt, Outcome, Reporter, Suite, check_fn};

fn suite(checks: usize, concurrency: usize) -> Suite {
    let mut b = Suite::builder().concurrency(concurrency);
    for i in 0..checks {
        b = b.check(
            "bench",
            check_fn(format!("bench.noop{i}"), Category::Operations, |_| async {
                Ok(Outcome::passed())
            })
            .boxed(),
        );
    }
    b.build()
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let checks = args.first().copied().unwrap_or(10_000);
    let concurrency = args.get(1).copied().unwrap_or(64);
    let rounds = args.get(2).copied().unwrap_or(15);

    // Warm up the runtime and allocator.
    suite(checks, concurrency).run(Vec::new()).await;

    for with_reporter in [false, true] {
        let mut times = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let s = suite(checks, concurrency);
            let buf = Arc::new(Mutex::new(Vec::new()));
            let reporters: Vec<Box<dyn Reporter>> = if with_reporter {
                vec![Box::new(JsonReporter::to_memory(buf.clone()))]
            } else {
                Vec::new()
            };
            let t = Instant::now();
            let out = s.run(reporters).await;
            times.push(t.elapsed());
            anyhow::ensure!(
                out.summary.counts.passed == checks,
                "not every check passed"
            );
            anyhow::ensure!(
                !with_reporter || !buf.lock().unwrap().is_empty(),
                "no report written"
            );
        }
        let (min, med, max) = stats(times);
        println!(
            "runner_overhead checks={checks} concurrency={concurrency} reporter={} rounds={rounds}: min {:.1} ms, median {:.1} ms, max {:.1} ms, {:.2} us/check (median)",
            if with_reporter {
                "json(memory)"
            } else {
                "none"
            },
            min.as_secs_f64() * 1e3,
            med.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3,
            med.as_secs_f64() * 1e6 / checks as f64,
        );
    }
    Ok(())
}
