//! Throughput of the load engine against wrk and oha, on the same nginx, in the same run.
//!
//! ```text
//! cargo run --release -p citadel-itest-load --example throughput            # engine, wrk, oha, 3 rounds
//! cargo run --release -p citadel-itest-load --example throughput -- rounds 1 secs 5
//! cargo run --release -p citadel-itest-load --example throughput -- engine  # the engine alone
//! cargo run --release -p citadel-itest-load --example throughput -- memory 5000000
//! ```
//!
//! `memory N` sends N requests (closed model, 64 connections) to nginx and prints the peak
//! resident memory of this process (`VmHWM`), to check that it stays flat as N grows.
//! With `recorder`, the samples go to the real [`Recorder`] (HDR histograms and the
//! per-second series) instead of a counter.
//! Options: `conns N` (64), `secs N` (10), `rounds N` (3), `threads N` (cores).

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use citadel_itest_load::config::GoodputConfig;
use citadel_itest_load::config::{ClosedModel, LoadModel, ScenarioConfig};
use citadel_itest_load::engine::{self, Bodies, Control, Plan};
use citadel_itest_load::metrics::{Recorder, Shared};
use citadel_itest_load::sample::{Sample, SampleSink};
use citadel_itest_testkit::Nginx;

type Error = Box<dyn std::error::Error>;

/// Counts what it is given; keeps nothing (flat memory).
#[derive(Default)]
struct Count {
    ok: u64,
    errors: u64,
    bytes: u64,
    service_ns: u128,
}

impl SampleSink for Count {
    fn record(&mut self, s: &Sample) {
        if s.is_ok() {
            self.ok += 1;
        } else {
            self.errors += 1;
        }
        self.bytes += s.bytes;
        self.service_ns += s.service.as_nanos();
    }

    fn dropped(&mut self, _: Duration) {}
}

struct Options {
    conns: usize,
    secs: u64,
    rounds: usize,
    threads: Option<usize>,
    only: Option<String>,
    memory: Option<u64>,
    recorder: bool,
}

fn options() -> Result<Options, Error> {
    let mut o = Options {
        conns: 64,
        secs: 10,
        rounds: 3,
        threads: None,
        only: None,
        memory: None,
        recorder: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num =
            || -> Result<u64, Error> { Ok(args.next().ok_or("missing number")?.parse::<u64>()?) };
        match a.as_str() {
            "conns" => o.conns = num()? as usize,
            "secs" => o.secs = num()?,
            "rounds" => o.rounds = num()? as usize,
            "threads" => o.threads = Some(num()? as usize),
            "memory" => o.memory = Some(num()?),
            "recorder" => o.recorder = true,
            "engine" | "wrk" | "oha" => o.only = Some(a),
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    Ok(o)
}

/// CPU seconds (user + system) of this process and of its waited-for children, from
/// `/proc/self/stat` (clock ticks of 10 ms).
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // rest[0] is field 3 (state): utime is field 14, stime 15, cutime 16, cstime 17.
    let at = |field: usize| f.get(field - 3).copied().unwrap_or(0.0) / 100.0;
    (at(14) + at(15), at(16) + at(17))
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn engine_run(url: &str, o: &Options, iterations: Option<u64>) -> Result<f64, Error> {
    let mut model = ClosedModel::new(o.conns, Duration::from_secs(o.secs));
    if let Some(n) = iterations {
        model = ClosedModel::new(o.conns, Duration::from_secs(3600)).iterations(n);
    }
    let scenario = ScenarioConfig::new("throughput", url, LoadModel::Closed(model));
    let mut plan = Plan::from_scenario(&scenario, Bodies::none())?;
    if let Some(t) = o.threads {
        plan = plan.with_threads(t);
    }
    let control = Control::new();
    let cpu_before = cpu_seconds().0;
    let done = engine::run(&plan, |_| Count::default(), &control).await?;
    let cpu = cpu_seconds().0 - cpu_before;
    let ok: u64 = done.sinks.iter().map(|s| s.ok).sum();
    let errors: u64 = done.sinks.iter().map(|s| s.errors).sum();
    let service: u128 = done.sinks.iter().map(|s| s.service_ns).sum();
    let rate = (ok + errors) as f64 / done.elapsed.as_secs_f64();
    println!(
        "engine: {rate:>9.0} req/s  {:>5.2} us CPU/req  ({ok} ok, {errors} errors in {:.2} s, mean service {:.1} us, {} threads)",
        cpu * 1e6 / (ok + errors).max(1) as f64,
        done.elapsed.as_secs_f64(),
        service as f64 / (ok + errors).max(1) as f64 / 1000.0,
        plan.threads(),
    );
    Ok(rate)
}

/// `n` requests recorded by the real recorder.
async fn recorder_run(url: &str, o: &Options, n: u64) -> Result<f64, Error> {
    let model = ClosedModel::new(o.conns, Duration::from_secs(3600)).iterations(n);
    let scenario = ScenarioConfig::new("throughput", url, LoadModel::Closed(model));
    let plan = Plan::from_scenario(&scenario, Bodies::none())?;
    let shared = Arc::new(Shared::new(GoodputConfig::default(), false));
    let control = Control::new();
    let done = engine::run(&plan, |_| Recorder::new(shared.clone()), &control).await?;
    let heap: usize = done.sinks.iter().map(Recorder::heap_bytes).sum();
    let rate = n as f64 / done.elapsed.as_secs_f64();
    println!(
        "engine with recorder: {rate:>9.0} req/s ({n} requests in {:.2} s, recorders' histograms {heap} bytes, series heap {} bytes)",
        done.elapsed.as_secs_f64(),
        shared.heap_bytes(),
    );
    Ok(rate)
}

fn wrk_run(url: &str, o: &Options) -> Result<f64, Error> {
    let cpu_before = cpu_seconds().1;
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{}", o.conns),
            &format!("-d{}s", o.secs),
            url,
        ])
        .output()
        .map_err(|e| format!("run wrk (apt-get install -y wrk): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rate = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| format!("no Requests/sec in wrk output: {text}"))?;
    let cpu = cpu_seconds().1 - cpu_before;
    let errors = text
        .lines()
        .find(|l| l.contains("Non-2xx") || l.contains("Socket errors"));
    println!(
        "wrk:    {rate:>9.0} req/s  {:>5.2} us CPU/req  {}",
        cpu * 1e6 / (rate * o.secs as f64).max(1.0),
        errors.map(str::trim).unwrap_or("")
    );
    Ok(rate)
}

fn oha_run(url: &str, o: &Options) -> Result<f64, Error> {
    let oha = std::env::var("HOME")
        .map(|h| format!("{h}/.cargo/bin/oha"))
        .ok()
        .filter(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| "oha".into());
    let cpu_before = cpu_seconds().1;
    let out = Command::new(oha)
        .args([
            "-z",
            &format!("{}s", o.secs),
            "-c",
            &o.conns.to_string(),
            "--no-tui",
            url,
        ])
        .output()
        .map_err(|e| format!("run oha (cargo install oha --locked): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rate = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| format!("no Requests/sec in oha output: {text}"))?;
    let cpu = cpu_seconds().1 - cpu_before;
    println!(
        "oha:    {rate:>9.0} req/s  {:>5.2} us CPU/req",
        cpu * 1e6 / (rate * o.secs as f64).max(1.0)
    );
    Ok(rate)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let o = options()?;
    let nginx = Nginx::builder()
        .http_snippet("keepalive_requests 1000000;")
        .start()
        .await?;
    let url = format!("{}/", nginx.url());
    println!("nginx at {url}, {} connections", o.conns);

    if let Some(n) = o.memory {
        let before = peak_rss_kib();
        let rate = if o.recorder {
            recorder_run(&url, &o, n).await?
        } else {
            engine_run(&url, &o, Some(n)).await?
        };
        println!(
            "memory: {n} requests at {rate:.0} req/s: peak RSS {} KiB (before the run {before} KiB)",
            peak_rss_kib()
        );
        return Ok(());
    }

    let mut sums = [0.0f64; 3];
    let mut counts = [0usize; 3];
    for round in 1..=o.rounds {
        println!("round {round}");
        let want = |name: &str| o.only.as_deref().is_none_or(|w| w == name);
        if want("engine") {
            sums[0] += engine_run(&url, &o, None).await?;
            counts[0] += 1;
        }
        if want("wrk") {
            match wrk_run(&url, &o) {
                Ok(r) => {
                    sums[1] += r;
                    counts[1] += 1;
                }
                Err(e) => println!("wrk:    not run: {e}"),
            }
        }
        if want("oha") {
            match oha_run(&url, &o) {
                Ok(r) => {
                    sums[2] += r;
                    counts[2] += 1;
                }
                Err(e) => println!("oha:    not run: {e}"),
            }
        }
    }
    println!("mean over {} rounds:", o.rounds);
    for (i, name) in ["engine", "wrk", "oha"].iter().enumerate() {
        if counts[i] > 0 {
            println!("  {name:<6} {:>9.0} req/s", sums[i] / counts[i] as f64);
        }
    }
    if counts[0] > 0 && counts[1] > 0 {
        println!(
            "  engine/wrk {:.2}",
            (sums[0] / counts[0] as f64) / (sums[1] / counts[1] as f64)
        );
    }
    if counts[0] > 0 && counts[2] > 0 {
        println!(
            "  engine/oha {:.2}",
            (sums[0] / counts[0] as f64) / (sums[2] / counts[2] as f64)
        );
    }
    Ok(())
}
