//! Sharding a scenario (`citadel-itest load --shard I/N`): the shards' planned totals sum to
//! the whole run, their seeds differ, sequential prompts are never sent by two shards, and a
//! synchronised start waits and records lateness. Runs are bounded to a few seconds.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use citadel_itest_load::config::{
    ClosedModel, LoadModel, OpenModel, PromptsConfig, RequestConfig, ScenarioConfig,
};
use citadel_itest_load::scenario::{RunOptions, run_scenario};
use citadel_itest_load::shard::{self, Shard};
use citadel_itest_testkit::Nginx;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn shards(n: u32) -> Vec<Shard> {
    (0..n).map(|i| Shard::new(i, n).unwrap()).collect()
}

fn total_rate(s: &ScenarioConfig) -> f64 {
    let o = s.open.as_ref().unwrap();
    o.parsed_stages()
        .unwrap()
        .iter()
        .map(|st| (st.from + st.to) / 2.0 * st.duration.as_secs_f64())
        .sum()
}

#[test]
fn four_shards_planned_totals_sum_to_the_whole() {
    let open = ScenarioConfig::new(
        "o",
        "http://127.0.0.1:1/",
        LoadModel::Open(
            OpenModel::stages(["40/s for 2s", "100/s for 3s", "10/s for 1s"]).poisson(7),
        ),
    );
    let whole = total_rate(&open);
    let parts: Vec<ScenarioConfig> = shards(4)
        .into_iter()
        .map(|s| shard::apply(&open, s).unwrap())
        .collect();
    let sum: f64 = parts.iter().map(total_rate).sum();
    assert!((sum - whole).abs() < 1e-9, "{sum} vs {whole}");
    let seeds: std::collections::BTreeSet<u64> = parts
        .iter()
        .map(|p| p.open.as_ref().unwrap().seed)
        .collect();
    assert_eq!(seeds.len(), 4, "every shard has its own seed: {seeds:?}");
    assert!(!seeds.contains(&7));
    // Derived seeds are stable: a rerun draws the same arrivals.
    assert_eq!(
        shard::apply(&open, Shard::new(2, 4).unwrap()).unwrap(),
        parts[2]
    );

    let closed = ScenarioConfig::new(
        "c",
        "http://127.0.0.1:1/",
        LoadModel::Closed(ClosedModel::new(10, Duration::from_secs(1)).iterations(1003)),
    );
    let parts: Vec<ClosedModel> = shards(4)
        .into_iter()
        .map(|s| shard::apply(&closed, s).unwrap().closed.unwrap())
        .collect();
    let vus: Vec<usize> = parts.iter().map(|c| c.vus).collect();
    assert_eq!(vus, [3, 3, 2, 2]);
    let its: Vec<u64> = parts.iter().map(|c| c.iterations.unwrap()).collect();
    assert_eq!(its, [251, 251, 251, 250]);
    assert_eq!(its.iter().sum::<u64>(), 1003);

    // Too few users to split is an error naming the shard and why.
    let small = ScenarioConfig::new(
        "c",
        "http://127.0.0.1:1/",
        LoadModel::Closed(ClosedModel::new(3, Duration::from_secs(1))),
    );
    let e = shard::apply(&small, Shard::new(3, 4).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("3/4") && e.contains("closed.vus 3"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_open_shards_send_exactly_the_whole_runs_arrivals() {
    let nginx = Nginx::builder()
        .http_snippet("keepalive_requests 1000000;")
        .start()
        .await
        .expect("start testkit nginx");
    let s = ScenarioConfig::new(
        "o",
        format!("{}/", nginx.url()),
        LoadModel::Open(OpenModel::stages(["0/s for 1s", "150/s for 1s"]).max_connections(8)),
    )
    .timeout(Duration::from_secs(2));
    let whole = run_scenario(&s, &RunOptions::default()).await.unwrap();
    let mut sum = 0;
    for p in shards(4) {
        let r = run_scenario(&s, &RunOptions::default().shard(p))
            .await
            .unwrap();
        assert_eq!(r.shard, Some(p));
        sum += r.counts.requests + r.counts.dropped;
    }
    assert_eq!(
        sum,
        whole.counts.requests + whole.counts.dropped,
        "the whole run: {}",
        whole.summary_line()
    );
    assert!(sum >= 70, "{sum}");
}

/// An HTTP/1.1 server answering 200 to everything and keeping every request body.
async fn recording_server() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // One request: head, then content-length bytes.
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned();
                    kept.lock().unwrap().push(body);
                    buf.drain(..head_end + len);
                    let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if sock.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, bodies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_prompts_do_not_repeat_across_shards() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prompts.jsonl");
    let lines: Vec<String> = (0..40).map(|i| format!("{{\"id\":{i}}}")).collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let (addr, bodies) = recording_server().await;
    let s = ScenarioConfig::new(
        "p",
        format!("http://{addr}/"),
        LoadModel::Closed(ClosedModel::new(4, Duration::from_secs(5)).iterations(40)),
    )
    .request(RequestConfig::get(format!("http://{addr}/")).prompts(PromptsConfig::new(&file)))
    .timeout(Duration::from_secs(2));
    let mut per_shard = BTreeMap::new();
    for p in shards(4) {
        let before = bodies.lock().unwrap().len();
        let r = run_scenario(&s, &RunOptions::default().shard(p))
            .await
            .unwrap();
        assert_eq!(r.counts.ok, 10, "{}", r.summary_line());
        let sent: Vec<String> = bodies.lock().unwrap()[before..].to_vec();
        per_shard.insert(p.index, sent);
    }
    let mut all: Vec<&String> = per_shard.values().flatten().collect();
    assert_eq!(all.len(), 40);
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 40, "a prompt was sent twice: {per_shard:?}");
    // Shard 1 sends prompts 1, 5, 9, ...
    assert!(per_shard[&1].contains(&"{\"id\":1}".to_string()));
    assert!(per_shard[&1].contains(&"{\"id\":37}".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synchronised_start_waits_and_records_how_late_it_began() {
    let nginx = Nginx::builder().start().await.expect("start testkit nginx");
    let s = ScenarioConfig::new(
        "s",
        format!("{}/", nginx.url()),
        LoadModel::Closed(ClosedModel::new(1, Duration::from_millis(200))),
    );
    let start = SystemTime::now() + Duration::from_millis(700);
    let r = run_scenario(&s, &RunOptions::default().start_at(start))
        .await
        .unwrap();
    let began = humantime::parse_rfc3339_weak(&r.started_at).unwrap();
    assert!(
        began >= start - Duration::from_millis(5),
        "{}",
        r.started_at
    );
    assert!(r.late_start_ms.unwrap() < 500, "{:?}", r.late_start_ms);

    // A start already 2 s past: runs at once and says so.
    let past = SystemTime::now() - Duration::from_secs(2);
    let r = run_scenario(&s, &RunOptions::default().start_at(past))
        .await
        .unwrap();
    assert!(r.late_start_ms.unwrap() >= 2000, "{:?}", r.late_start_ms);

    // An hour ahead is refused, not waited for.
    let far = SystemTime::now() + Duration::from_secs(3600);
    let e = run_scenario(&s, &RunOptions::default().start_at(far))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("ahead"), "{e}");

    // The merge shows the latest start.
    let a = run_scenario(&s, &RunOptions::default().start_at(past))
        .await
        .unwrap();
    let mut b = a.clone();
    b.late_start_ms = Some(a.late_start_ms.unwrap() + 1234);
    let m = citadel_itest_load::LoadResult::merge(&[a, b.clone()]).unwrap();
    assert_eq!(m.late_start_ms, b.late_start_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_counts_a_shard_once_and_wants_its_token() {
    use citadel_itest_load::distributed::client::ShardClient;
    use citadel_itest_load::distributed::coordinator::{Coordinator, CoordinatorConfig};
    use tokio_util::sync::CancellationToken;

    let nginx = Nginx::builder().start().await.expect("start testkit nginx");
    let s = ScenarioConfig::new(
        "s",
        format!("{}/", nginx.url()),
        LoadModel::Closed(ClosedModel::new(2, Duration::from_secs(5)).iterations(20)),
    );
    let config = CoordinatorConfig::new("s", 2, Duration::from_secs(20))
        .token("tok")
        .start_lead(Duration::from_millis(300));
    let coordinator = Coordinator::bind("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    let url = format!("http://{}", coordinator.local_addr().unwrap());
    let run = tokio::spawn(coordinator.run(CancellationToken::new()));
    let http = reqwest::Client::new();

    // No token, a wrong token, an out-of-range shard.
    let r = http
        .get(format!("{url}/plan?shard=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(format!("{url}/plan?shard=0"))
        .bearer_auth("tok2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(format!("{url}/plan?shard=2"))
        .bearer_auth("tok")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let mut results = Vec::new();
    for i in 0..2 {
        let shard = Shard::new(i, 2).unwrap();
        let client = ShardClient::new(&url, shard, Some("tok".into())).unwrap();
        let plan = client.plan().await.unwrap();
        assert_eq!((plan.scenario.as_str(), plan.shards), ("s", 2));
        let start = SystemTime::UNIX_EPOCH + Duration::from_millis(plan.start_at_ms);
        let r = run_scenario(&s, &RunOptions::default().shard(shard).start_at(start))
            .await
            .unwrap();
        client.post(&r).await.unwrap();
        results.push(r);
        if i == 0 {
            // Shard 0 again: 409, counted once.
            let again = http
                .post(format!("{url}/result?shard=0"))
                .bearer_auth("tok")
                .body(serde_json::to_vec(&results[0]).unwrap())
                .send()
                .await
                .unwrap();
            assert_eq!(again.status(), 409);
            // Shard 0's result posted as shard 1 is refused.
            let wrong = http
                .post(format!("{url}/result?shard=1"))
                .bearer_auth("tok")
                .body(serde_json::to_vec(&results[0]).unwrap())
                .send()
                .await
                .unwrap();
            assert_eq!(wrong.status(), 400);
        }
    }
    let outcome = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(outcome.shards.len(), 2);
    assert_eq!(outcome.merged.counts.requests, 20);
    assert_eq!(outcome.merged.runs, 2);
}

#[tokio::test]
async fn a_coordinator_off_loopback_needs_a_token() {
    use citadel_itest_load::distributed::coordinator::{Coordinator, CoordinatorConfig};
    let e = Coordinator::bind(
        SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0)),
        CoordinatorConfig::new("s", 2, Duration::from_secs(1)),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("needs a token"), "{e}");
}
