//! How exactly the model-server fixture keeps its configured timing, seen from a client:
//! time to first token and inter-token gaps of streamed chat completions over loopback.
//!
//! ```sh
//! cargo run --release -p citadel-itest-testkit --features models --example fixture_timing            # 20 streams
//! cargo run --release -p citadel-itest-testkit --features models --example fixture_timing -- 50 64   # STREAMS TOKENS
//! ```

use std::time::{Duration, Instant};

use citadel_itest_testkit::ModelServer;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn describe(name: &str, configured: f64, mut v: Vec<f64>) {
    v.sort_by(f64::total_cmp);
    println!(
        "  {name:<20} configured {configured:>5.1} ms   p50 {:>7.3}  p95 {:>7.3}  p99 {:>7.3}  max {:>7.3} ms  (n={})",
        percentile(&v, 0.50),
        percentile(&v, 0.95),
        percentile(&v, 0.99),
        v[v.len() - 1],
        v.len()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let streams: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(20);
    let tokens: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(32);
    let (ttft, itl) = (Duration::from_millis(50), Duration::from_millis(10));
    let server = ModelServer::builder()
        .ttft(ttft)
        .itl(itl)
        .completion_tokens(tokens)
        .start()
        .await?;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", server.url());
    let body = serde_json::json!({
        "model": "fixture-chat",
        "messages": [{"role": "user", "content": "time me"}],
        "stream": true,
    });
    // Warm the connection pool.
    client
        .get(format!("{}/health", server.url()))
        .send()
        .await?
        .bytes()
        .await?;

    let (mut ttfts, mut gaps) = (Vec::new(), Vec::new());
    for _ in 0..streams {
        let sent = Instant::now();
        let mut response = client
            .post(&url)
            .json(&body)
            .send()
            .await?
            .error_for_status()?;
        let mut buffer = String::new();
        let mut arrivals = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            let now = Instant::now();
            buffer.push_str(std::str::from_utf8(&chunk)?);
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                if event.contains("\"content\":\"") && !event.contains("\"content\":\"\"") {
                    arrivals.push(now);
                }
            }
        }
        if arrivals.len() != tokens {
            return Err(format!("expected {tokens} content events, got {}", arrivals.len()).into());
        }
        ttfts.push((arrivals[0] - sent).as_secs_f64() * 1000.0);
        gaps.extend(
            arrivals
                .windows(2)
                .map(|w| (w[1] - w[0]).as_secs_f64() * 1000.0),
        );
    }
    println!("model-server fixture timing, {streams} streams of {tokens} tokens over loopback:");
    describe("time to first token", ttft.as_secs_f64() * 1000.0, ttfts);
    describe("inter-token gap", itl.as_secs_f64() * 1000.0, gaps);
    let mut server = server;
    server.stop().await?;
    Ok(())
}
