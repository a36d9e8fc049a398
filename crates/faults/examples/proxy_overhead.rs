//! What the fault proxy adds with no fault active: the same requests to a real nginx directly,
//! through a TCP-mode proxy and through an HTTP-mode proxy, p50/p99 each way.
//!
//! ```text
//! cargo run --release -p citadel-itest-faults --example proxy_overhead [REQUESTS]
//! ```
//!
//! Two cases per path: keep-alive (one connection, sequential requests) and a new connection
//! per request. Needs nginx (Debian `nginx-light`).

use std::error::Error;
use std::time::{Duration, Instant};

use citadel_itest_faults::proxy::{Mode, Proxy, ProxyConfig};
use citadel_itest_testkit::Nginx;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

async fn measure(
    client: &reqwest::Client,
    url: &str,
    n: usize,
) -> Result<Vec<Duration>, Box<dyn Error>> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let response = client.get(url).send().await?;
        if !response.status().is_success() {
            return Err(format!("{url}: status {}", response.status()).into());
        }
        let _ = response.bytes().await?;
        samples.push(t.elapsed());
    }
    samples.sort();
    Ok(samples)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(2000);
    let nginx = Nginx::start().await?;
    let upstream = nginx.url().trim_start_matches("http://").to_owned();
    let tcp = Proxy::start(ProxyConfig::new(upstream.clone()).mode(Mode::Tcp)).await?;
    let http = Proxy::start(ProxyConfig::new(upstream).mode(Mode::Http)).await?;
    let keep_alive = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    let fresh = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()?;
    println!("GET /health on nginx, {n} sequential requests per row, no fault active");
    println!(
        "{:<12} {:<16} {:>9} {:>9} {:>11} {:>11}",
        "connection", "path", "p50 ms", "p99 ms", "+p50 ms", "+p99 ms"
    );
    for (label, client) in [("keep-alive", &keep_alive), ("new per req", &fresh)] {
        let paths = [
            ("direct", nginx.url()),
            ("tcp proxy", tcp.url()),
            ("http proxy", http.url()),
        ];
        // warm up every path
        for (_, base) in &paths {
            measure(client, &format!("{base}/health"), 50).await?;
        }
        let mut direct = None;
        for (name, base) in &paths {
            let s = measure(client, &format!("{base}/health"), n).await?;
            let (p50, p99) = (percentile(&s, 50.0), percentile(&s, 99.0));
            let (d50, d99) = *direct.get_or_insert((p50, p99));
            println!(
                "{label:<12} {name:<16} {:>9.3} {:>9.3} {:>11.3} {:>11.3}",
                ms(p50),
                ms(p99),
                ms(p50) - ms(d50),
                ms(p99) - ms(d99)
            );
        }
    }
    tcp.stop().await;
    http.stop().await;
    Ok(())
}
