//! Accuracy of the load engine's timing.
//!
//! ```text
//! cargo run --release -p citadel-itest-load --example accuracy
//! ```
//!
//! 1. Latency: the testkit model server answering every chat completion 20 ms after the
//!    request (`ttft 20ms`, one token), closed model, 8 users for 5 s: p50 should be within
//!    1 ms of 20 ms.
//! 2. Rate: the open model at 200/s for 10 s against nginx: the achieved send rate (requests
//!    over the span of their actual send times) should be within 1% of 200/s.
//! 3. Coordinated omission: the open model at 200/s for 10 s on 4 connections against a small
//!    server that holds every answer for 1 s in the middle of the run: the corrected p99
//!    (from the intended send time) shows the stall, the service-time p99 does not.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use citadel_itest_load::config::{
    ClosedModel, LoadModel, OpenModel, RequestConfig, ScenarioConfig,
};
use citadel_itest_load::engine::{self, Bodies, Control, Plan};
use citadel_itest_load::sample::{Sample, VecSink};
use citadel_itest_testkit::{ModelServer, Nginx};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type Error = Box<dyn std::error::Error>;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(samples: &[Sample], p: f64, f: impl Fn(&Sample) -> Duration) -> Duration {
    let mut v: Vec<Duration> = samples.iter().map(f).collect();
    v.sort();
    match v.len() {
        0 => Duration::ZERO,
        n => v[((n - 1) as f64 * p).round() as usize],
    }
}

async fn samples(scenario: &ScenarioConfig) -> Result<(Vec<Sample>, usize), Error> {
    let plan = Plan::from_scenario(scenario, Bodies::none())?;
    let done = engine::run(&plan, |_| VecSink::default(), &Control::new()).await?;
    let mut all = Vec::new();
    let mut dropped = 0;
    for s in done.sinks {
        all.extend(s.samples);
        dropped += s.dropped.len();
    }
    Ok((all, dropped))
}

/// An HTTP/1.1 server answering `200 ok` at once, except that every answer due in the
/// second from 4.5 s to 5.5 s after its first request waits until 5.5 s.
async fn stalling_server() -> Result<SocketAddr, Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let t0: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let t0 = t0.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
                    buf.drain(..end);
                    let start = *t0.get_or_init(Instant::now);
                    let (from, to) = (
                        start + Duration::from_millis(4500),
                        start + Duration::from_millis(5500),
                    );
                    let now = Instant::now();
                    if now >= from && now < to {
                        tokio::time::sleep_until(to.into()).await;
                    }
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if sock.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    // 1. Latency against a known delay.
    let model = ModelServer::builder()
        .ttft(Duration::from_millis(20))
        .start()
        .await?;
    let url = format!("{}/chat/completions", model.base_url());
    let body =
        r#"{"model":"fixture-chat","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}"#;
    let s = ScenarioConfig::new(
        "latency",
        &url,
        LoadModel::Closed(ClosedModel::new(8, Duration::from_secs(5))),
    )
    .request(RequestConfig::post(&url, body));
    let (all, _) = samples(&s).await?;
    let ok = all.iter().filter(|s| s.is_ok()).count();
    println!(
        "latency: model server with a 20 ms delay, closed 8 users 5 s: {} requests ({ok} ok), \
         p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, min {:.2} ms",
        all.len(),
        ms(percentile(&all, 0.5, |s| s.latency)),
        ms(percentile(&all, 0.9, |s| s.latency)),
        ms(percentile(&all, 0.99, |s| s.latency)),
        ms(percentile(&all, 0.0, |s| s.latency)),
    );

    // 2. Rate.
    let nginx = Nginx::builder().start().await?;
    let s = ScenarioConfig::new(
        "rate",
        format!("{}/", nginx.url()),
        LoadModel::Open(OpenModel::constant(200.0, Duration::from_secs(10))),
    );
    let (all, dropped) = samples(&s).await?;
    let sends: Vec<Duration> = all
        .iter()
        .map(|s| s.intended + s.latency.saturating_sub(s.service))
        .collect();
    let first = sends.iter().min().copied().unwrap_or_default();
    let last = sends.iter().max().copied().unwrap_or_default();
    // n requests over the span of their sends: (n - 1) gaps.
    let rate = (all.len().saturating_sub(1)) as f64 / (last - first).as_secs_f64().max(1e-9);
    let late = percentile(&all, 0.99, |s| s.latency.saturating_sub(s.service));
    println!(
        "rate: open 200/s for 10 s against nginx: {} sent, {dropped} dropped, achieved {rate:.2}/s \
         ({:+.3}%), send lag behind schedule p99 {:.3} ms, max {:.3} ms",
        all.len(),
        (rate / 200.0 - 1.0) * 100.0,
        ms(late),
        ms(percentile(&all, 1.0, |s| s
            .latency
            .saturating_sub(s.service))),
    );

    // 3. Coordinated omission.
    let addr = stalling_server().await?;
    let s = ScenarioConfig::new(
        "stall",
        format!("http://{addr}/"),
        LoadModel::Open(OpenModel::constant(200.0, Duration::from_secs(10)).max_connections(4)),
    );
    let (all, dropped) = samples(&s).await?;
    println!(
        "stall: open 200/s for 10 s on 4 connections, server stalls 1 s at 4.5 s: {} sent, \
         {dropped} dropped; corrected latency p50 {:.2} ms p99 {:.1} ms max {:.1} ms; \
         service time (uncorrected) p50 {:.2} ms p99 {:.2} ms max {:.1} ms",
        all.len(),
        ms(percentile(&all, 0.5, |s| s.latency)),
        ms(percentile(&all, 0.99, |s| s.latency)),
        ms(percentile(&all, 1.0, |s| s.latency)),
        ms(percentile(&all, 0.5, |s| s.service)),
        ms(percentile(&all, 0.99, |s| s.service)),
        ms(percentile(&all, 1.0, |s| s.service)),
    );
    Ok(())
}
