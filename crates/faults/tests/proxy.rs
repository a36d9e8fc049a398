//! The fault proxy measured against a real nginx and the model server fixture.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use citadel_itest_faults::proxy::{
    self, Direction, EventKind, Fault, FaultSpec, Mode, Proxy, ProxyConfig, ProxyError, ProxyHandle,
};
use citadel_itest_testkit::{ModelServer, Nginx};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIG: usize = 300 * 1024;
const BOUND: Duration = Duration::from_secs(20);

/// nginx serving `GET /big` (300 KiB) from a temp dir, and `/health`.
async fn nginx_with_big_body() -> (Nginx, tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let body: Vec<u8> = (0..BIG).map(|i| b'a' + (i % 26) as u8).collect();
    std::fs::write(dir.path().join("big"), &body).expect("write body");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755));
    }
    let nginx = Nginx::builder()
        .location(format!(
            "location = /big {{ default_type application/octet-stream; alias {}/big; }}",
            dir.path().display()
        ))
        .start()
        .await
        .expect("start nginx");
    (nginx, dir, body)
}

fn upstream_of(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

/// A client that opens a fresh connection per request (TCP faults are per connection).
fn fresh_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(timeout)
        .build()
        .expect("client")
}

async fn start(upstream: String, mode: Mode) -> ProxyHandle {
    Proxy::start(ProxyConfig::new(upstream).mode(mode))
        .await
        .expect("start proxy")
}

async fn timed_get(client: &reqwest::Client, url: &str) -> (Duration, Vec<u8>) {
    let t = Instant::now();
    let response = client.get(url).send().await.expect("request");
    assert!(response.status().is_success(), "{}", response.status());
    let body = response.bytes().await.expect("body");
    (t.elapsed(), body.to_vec())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test]
async fn latency_200ms_shows_as_200ms_both_modes() {
    let nginx = Nginx::start().await.expect("nginx");
    let client = fresh_client(BOUND);
    for mode in [Mode::Tcp, Mode::Http] {
        let proxy = start(upstream_of(&nginx.url()), mode).await;
        let direct_url = format!("{}/health", nginx.url());
        let proxied_url = format!("{}/health", proxy.url());
        let mut direct = Vec::new();
        let mut plain = Vec::new();
        for _ in 0..5 {
            direct.push(timed_get(&client, &direct_url).await.0);
            plain.push(timed_get(&client, &proxied_url).await.0);
        }
        proxy
            .add(FaultSpec::new(Fault::Latency {
                delay: Duration::from_millis(200),
                jitter: Duration::ZERO,
                direction: Direction::Downstream,
            }))
            .expect("add");
        let mut slow = Vec::new();
        for _ in 0..5 {
            let (t, body) = timed_get(&client, &proxied_url).await;
            assert!(String::from_utf8_lossy(&body).contains("ok"));
            slow.push(t);
        }
        let added = median(slow).saturating_sub(median(plain.clone()));
        assert!(
            added >= Duration::from_millis(180) && added <= Duration::from_millis(220),
            "{mode}: added latency {added:?} (direct {:?}, proxied {:?})",
            median(direct),
            median(plain)
        );
        proxy.stop().await;
    }
}

#[tokio::test]
async fn bandwidth_limit_within_10_percent() {
    let (nginx, _dir, body) = nginx_with_big_body().await;
    let proxy = start(upstream_of(&nginx.url()), Mode::Tcp).await;
    let rate = 100 * 1024;
    proxy
        .add(FaultSpec::new(Fault::Bandwidth {
            bytes_per_sec: rate,
            direction: Direction::Downstream,
        }))
        .expect("add");
    let client = fresh_client(BOUND);
    let (elapsed, got) = timed_get(&client, &format!("{}/big", proxy.url())).await;
    assert_eq!(got, body, "body changed through the proxy");
    let measured = got.len() as f64 / elapsed.as_secs_f64();
    let ratio = measured / rate as f64;
    assert!(
        (0.9..=1.1).contains(&ratio),
        "measured {measured:.0} B/s for a limit of {rate} B/s over {elapsed:?}"
    );
}

#[tokio::test]
async fn reset_gives_connection_reset() {
    let nginx = Nginx::start().await.expect("nginx");
    let proxy = start(upstream_of(&nginx.url()), Mode::Tcp).await;
    proxy.add(FaultSpec::new(Fault::Reset)).expect("add");
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(BOUND, stream.read(&mut buf))
        .await
        .expect("reset within bound");
    match read {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
        Ok(n) => panic!("expected a reset, read {n} bytes"),
    }
    // reqwest reports it as a failed request, not an answer.
    let err = fresh_client(BOUND)
        .get(format!("{}/health", proxy.url()))
        .send()
        .await
        .expect_err("reset connection must not answer");
    assert!(!err.is_timeout(), "{err}");
    let events = proxy.events();
    assert!(
        !events
            .iter()
            .any(|e| e.kind == EventKind::UpstreamConnected),
        "a reset connection must not reach the upstream: {events:?}"
    );
}

#[tokio::test]
async fn blackhole_times_out() {
    let nginx = Nginx::start().await.expect("nginx");
    let proxy = start(upstream_of(&nginx.url()), Mode::Http).await;
    proxy.add(FaultSpec::new(Fault::Blackhole)).expect("add");
    let t = Instant::now();
    let err = fresh_client(Duration::from_millis(500))
        .get(format!("{}/health", proxy.url()))
        .send()
        .await
        .expect_err("blackhole must not answer");
    assert!(err.is_timeout(), "expected a timeout, got {err}");
    assert!(t.elapsed() >= Duration::from_millis(450));
    // removing the fault heals new connections
    proxy.clear();
    let (_, body) = timed_get(&fresh_client(BOUND), &format!("{}/health", proxy.url())).await;
    assert!(String::from_utf8_lossy(&body).contains("ok"));
}

#[tokio::test]
async fn close_after_truncates_and_slice_delivers_everything() {
    let (nginx, _dir, body) = nginx_with_big_body().await;
    let proxy = start(upstream_of(&nginx.url()), Mode::Tcp).await;
    let id = proxy
        .add(FaultSpec::new(Fault::CloseAfter {
            bytes: 1000,
            direction: Direction::Downstream,
        }))
        .expect("add");
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    stream
        .write_all(b"GET /big HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(BOUND, stream.read_to_end(&mut got))
        .await
        .expect("closed within bound");
    assert_eq!(got.len(), 1000, "close after 1000 bytes");
    assert!(got.starts_with(b"HTTP/1.1 200"));
    let err = fresh_client(BOUND)
        .get(format!("{}/big", proxy.url()))
        .send()
        .await
        .expect("headers fit in 1000 bytes")
        .bytes()
        .await
        .expect_err("truncated body must be an error");
    assert!(err.is_body() || err.is_decode(), "{err}");
    assert!(proxy.remove(id));
    assert!(!proxy.remove(id));

    proxy
        .add(FaultSpec::new(Fault::Slice {
            size: 4096,
            delay: Duration::from_millis(2),
            direction: Direction::Downstream,
        }))
        .expect("add");
    let (elapsed, got) = timed_get(&fresh_client(BOUND), &format!("{}/big", proxy.url())).await;
    assert_eq!(got, body, "sliced body must arrive whole");
    // 75 slices with 2 ms between them
    assert!(elapsed >= Duration::from_millis(140), "{elapsed:?}");
}

#[tokio::test]
async fn http_status_503_with_retry_after_for_the_first_two() {
    let nginx = Nginx::start().await.expect("nginx");
    let proxy = start(upstream_of(&nginx.url()), Mode::Http).await;
    proxy
        .add(
            FaultSpec::new(Fault::HttpStatus {
                status: 503,
                retry_after: Some(Duration::from_secs(2)),
                body: None,
            })
            .first(2),
        )
        .expect("add");
    // keep-alive client: HTTP faults count requests, not connections
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(BOUND)
        .build()
        .expect("client");
    let url = format!("{}/health", proxy.url());
    let mut statuses = Vec::new();
    for i in 0..4 {
        let response = client.get(&url).send().await.expect("request");
        statuses.push(response.status().as_u16());
        if i < 2 {
            assert_eq!(response.headers()["retry-after"], "2");
            let json: serde_json::Value = response.json().await.expect("json error body");
            assert_eq!(json["error"]["type"], "server_error", "{json}");
            assert!(json["error"]["message"].as_str().is_some());
        } else {
            assert!(response.headers().get("retry-after").is_none());
            let _ = response.bytes().await;
        }
    }
    assert_eq!(statuses, [503, 503, 200, 200]);
    let requests = proxy
        .events()
        .into_iter()
        .filter(|e| matches!(e.kind, EventKind::Request { .. }))
        .count();
    assert_eq!(requests, 4);
    // an HTTP fault on a TCP proxy is refused
    let tcp = start(upstream_of(&nginx.url()), Mode::Tcp).await;
    let err = tcp
        .add(FaultSpec::new(Fault::HttpDelay {
            before_first_byte: Duration::from_millis(1),
        }))
        .expect_err("http fault on a tcp proxy");
    assert!(matches!(err, ProxyError::InvalidFault { .. }), "{err}");
}

#[tokio::test]
async fn http_delay_before_first_byte() {
    let nginx = Nginx::start().await.expect("nginx");
    let proxy = start(upstream_of(&nginx.url()), Mode::Http).await;
    let client = fresh_client(BOUND);
    let url = format!("{}/health", proxy.url());
    let (plain, _) = timed_get(&client, &url).await;
    proxy
        .add(FaultSpec::new(Fault::HttpDelay {
            before_first_byte: Duration::from_millis(300),
        }))
        .expect("add");
    let t = Instant::now();
    let response = client.get(&url).send().await.expect("request");
    let first_byte = t.elapsed();
    assert_eq!(response.status(), 200);
    assert!(
        first_byte >= Duration::from_millis(300)
            && first_byte <= Duration::from_millis(400) + plain,
        "first byte after {first_byte:?} (plain {plain:?})"
    );
}

/// Reads a streamed chat answer: the SSE `data:` payloads and whether the body ended in error.
async fn stream_chat(base: &str) -> (Vec<String>, Option<String>, Duration) {
    let client = fresh_client(BOUND);
    let t = Instant::now();
    let mut response = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&serde_json::json!({
            "model": "fixture-chat",
            "messages": [{"role": "user", "content": "hello"}],
            "stream": true,
        }))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let mut raw = Vec::new();
    let mut error = None;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => raw.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let events = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| e.trim().trim_start_matches("data: ").to_owned())
        .collect();
    (events, error, t.elapsed())
}

#[tokio::test]
async fn sse_cut_error_and_slow_against_the_model_fixture() {
    let model = ModelServer::builder()
        .completion_tokens(8)
        .start()
        .await
        .expect("model server");
    let proxy = start(upstream_of(&model.url()), Mode::Http).await;

    let (direct, direct_err, direct_time) = stream_chat(&model.url()).await;
    assert!(direct_err.is_none());
    assert_eq!(direct.last().map(String::as_str), Some("[DONE]"));
    let n = direct.len();
    assert!(n >= 6, "{direct:?}");
    let (plain, plain_err, _) = stream_chat(&proxy.url()).await;
    assert!(plain_err.is_none());
    assert_eq!(plain.len(), n, "no fault: same events as direct");

    let cut = proxy
        .add(FaultSpec::new(Fault::SseCut { after_events: 3 }))
        .expect("add");
    let (events, err, _) = stream_chat(&proxy.url()).await;
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(err.is_some(), "a cut stream must end in a body error");
    assert!(!events.iter().any(|e| e == "[DONE]"));
    proxy.remove(cut);

    let error = proxy
        .add(FaultSpec::new(Fault::SseError { after_events: 2 }))
        .expect("add");
    let (events, err, _) = stream_chat(&proxy.url()).await;
    assert!(
        err.is_none(),
        "in-band error ends the stream cleanly: {err:?}"
    );
    assert_eq!(events.len(), 3, "{events:?}");
    let last: serde_json::Value = serde_json::from_str(&events[2]).expect("error event json");
    assert_eq!(last["error"]["type"], "server_error", "{last}");
    proxy.remove(error);

    proxy
        .add(FaultSpec::new(Fault::SseSlow {
            delay: Duration::from_millis(50),
        }))
        .expect("add");
    let (events, err, slow_time) = stream_chat(&proxy.url()).await;
    assert!(err.is_none());
    assert_eq!(events.len(), n);
    let expected = Duration::from_millis(50) * n as u32;
    assert!(
        slow_time >= expected && slow_time <= expected + direct_time + Duration::from_millis(200),
        "{n} events slowed by 50 ms took {slow_time:?} (direct {direct_time:?})"
    );
}

#[tokio::test]
async fn toxicity_half_with_a_seed_is_deterministic() {
    let nginx = Nginx::start().await.expect("nginx");
    let proxy = start(upstream_of(&nginx.url()), Mode::Tcp).await;
    let spec = FaultSpec::new(Fault::Reset).toxicity(0.5).seed(7);
    proxy.add(spec.clone()).expect("add");
    let client = fresh_client(BOUND);
    let mut hit = Vec::new();
    for _ in 0..40 {
        let result = client.get(format!("{}/health", proxy.url())).send().await;
        hit.push(result.is_err());
    }
    let count = hit.iter().filter(|h| **h).count();
    assert!((12..=28).contains(&count), "{count} of 40 reset");
    let expected: Vec<bool> = (0..40).map(|n| spec.hits(n)).collect();
    assert_eq!(hit, expected, "the seed decides which connections are hit");
}

#[tokio::test]
async fn control_api_add_list_remove_events() {
    let nginx = Nginx::start().await.expect("nginx");
    let proxy = start(upstream_of(&nginx.url()), Mode::Http).await;
    let control = proxy::control::serve(proxy.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .expect("control");
    let api = fresh_client(BOUND);
    let base = control.url();

    let added: serde_json::Value = api
        .post(format!("{base}/faults"))
        .json(&serde_json::json!({
            "fault": {"type": "http_status", "status": 429, "retry_after": "1s"},
            "first": 1
        }))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    let id = added["id"].as_u64().expect("id");
    let list: serde_json::Value = api
        .get(format!("{base}/faults"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(list[0]["id"], id);
    assert_eq!(list[0]["fault"]["type"], "http_status");
    assert_eq!(proxy.faults().len(), 1);

    let through = api
        .get(format!("{}/health", proxy.url()))
        .send()
        .await
        .expect("through");
    assert_eq!(through.status(), 429);

    let events: serde_json::Value = api
        .get(format!("{base}/events?since_ms=0"))
        .send()
        .await
        .expect("events")
        .json()
        .await
        .expect("json");
    let kinds: Vec<&str> = events
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|e| e["kind"]["type"].as_str())
        .collect();
    assert!(
        kinds.contains(&"request") && kinds.contains(&"fault"),
        "{kinds:?}"
    );
    assert!(events[0]["at"].is_string());

    let bad = api
        .post(format!("{base}/faults"))
        .body(r#"{"fault": {"type": "latency"}}"#)
        .send()
        .await
        .expect("post");
    assert_eq!(bad.status(), 400);
    let msg: serde_json::Value = bad.json().await.expect("json");
    assert!(
        msg["error"].as_str().unwrap_or("").contains("delay"),
        "{msg}"
    );
    let toxic = api
        .post(format!("{base}/faults"))
        .body(r#"{"fault": {"type": "reset"}, "toxicity": 2}"#)
        .send()
        .await
        .expect("post");
    assert_eq!(toxic.status(), 400);
    let huge = api
        .post(format!("{base}/faults"))
        .body(vec![b' '; 100 * 1024])
        .send()
        .await
        .expect("post");
    assert_eq!(huge.status(), 400);

    let deleted = api
        .delete(format!("{base}/faults/{id}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 200);
    let again = api
        .delete(format!("{base}/faults/{id}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(again.status(), 404);
    assert!(proxy.faults().is_empty());
    let cleared = api
        .delete(format!("{base}/faults"))
        .send()
        .await
        .expect("clear");
    assert_eq!(cleared.status(), 200);
    let missing = api.get(format!("{base}/nope")).send().await.expect("get");
    assert_eq!(missing.status(), 404);
    control.stop().await;
}

#[tokio::test]
async fn event_log_shows_attempts_with_timestamps() {
    let nginx = Nginx::start().await.expect("nginx");
    let proxy = start(upstream_of(&nginx.url()), Mode::Tcp).await;
    let client = fresh_client(BOUND);
    for _ in 0..3 {
        timed_get(&client, &format!("{}/health", proxy.url())).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = proxy.events();
    let accepted: Vec<_> = events
        .iter()
        .filter(|e| e.kind == EventKind::Accepted)
        .collect();
    assert_eq!(accepted.len(), 3, "{events:?}");
    for pair in accepted.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(100), "attempts {gap:?} apart");
        assert!(pair[1].conn > pair[0].conn);
    }
    let closed = events.iter().find_map(|e| match e.kind {
        EventKind::Closed {
            up_bytes,
            down_bytes,
        } => Some((up_bytes, down_bytes)),
        _ => None,
    });
    let (up, down) = closed.expect("a closed event");
    assert!(up > 20 && down > 20, "{up} {down}");
    let later = proxy.events_since(accepted[2].at);
    assert!(later.iter().all(|e| e.at >= accepted[2].at));
    assert!(later.len() < events.len());
}

#[tokio::test]
async fn upstream_down_refused_listen_and_clean_stop() {
    // refuse a non-loopback listen address
    let err = Proxy::start(ProxyConfig::new("127.0.0.1:1").listen("0.0.0.0:0".parse().unwrap()))
        .await
        .expect_err("non-loopback listen");
    assert!(matches!(err, ProxyError::NotLoopback { .. }), "{err}");
    assert!(matches!(
        Proxy::start(ProxyConfig::new("no-port")).await,
        Err(ProxyError::InvalidUpstream { .. })
    ));

    // an upstream nobody listens on: 502 in HTTP mode, logged as UpstreamFailed
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = free.local_addr().unwrap().to_string();
    drop(free);
    let proxy = start(dead, Mode::Http).await;
    let response = fresh_client(BOUND)
        .get(format!("{}/v1/models", proxy.url()))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 502);
    assert!(
        proxy
            .events()
            .iter()
            .any(|e| matches!(e.kind, EventKind::UpstreamFailed { .. }))
    );

    // stop: the port no longer accepts; dropping the last handle stops as well
    let addr = proxy.addr();
    let clone = proxy.clone();
    proxy.stop().await;
    assert!(clone.is_stopped());
    assert!(TcpStream::connect(addr).await.is_err());
    let other = start("127.0.0.1:1".to_owned(), Mode::Tcp).await;
    let other_addr = other.addr();
    drop(other);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(TcpStream::connect(other_addr).await.is_err());
}

#[tokio::test]
async fn http_toxicity_counts_requests_and_upstream_latency_and_jitter() {
    let nginx = Nginx::start().await.expect("nginx");
    let proxy = start(upstream_of(&nginx.url()), Mode::Http).await;
    let spec = FaultSpec::new(Fault::HttpStatus {
        status: 500,
        retry_after: None,
        body: Some("boom".into()),
    })
    .toxicity(0.5)
    .seed(99);
    let id = proxy.add(spec.clone()).expect("add");
    // one keep-alive connection: the draw is per request
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(BOUND)
        .build()
        .expect("client");
    let mut hit = Vec::new();
    for _ in 0..40 {
        let r = client
            .get(format!("{}/health", proxy.url()))
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let body = r.text().await.expect("body");
        if status == 500 {
            assert_eq!(body, "boom");
        }
        hit.push(status == 500);
    }
    let expected: Vec<bool> = (0..40).map(|n| spec.hits(n)).collect();
    assert_eq!(hit, expected);
    let accepted = proxy
        .events()
        .iter()
        .filter(|e| e.kind == EventKind::Accepted)
        .count();
    assert!(accepted <= 2, "keep-alive expected, {accepted} connections");
    proxy.remove(id);

    // upstream latency with jitter: every request between 150 and 250 ms (plus the request and
    // slack for a loaded machine)
    proxy
        .add(FaultSpec::new(Fault::Latency {
            delay: Duration::from_millis(200),
            jitter: Duration::from_millis(50),
            direction: Direction::Upstream,
        }))
        .expect("add");
    let fresh = fresh_client(BOUND);
    let mut times = Vec::new();
    for _ in 0..6 {
        times.push(
            timed_get(&fresh, &format!("{}/health", proxy.url()))
                .await
                .0,
        );
    }
    for t in &times {
        assert!(
            *t >= Duration::from_millis(145) && *t <= Duration::from_millis(350),
            "{times:?}"
        );
    }
    let spread = times
        .iter()
        .max()
        .unwrap()
        .saturating_sub(*times.iter().min().unwrap());
    assert!(
        spread >= Duration::from_millis(5),
        "jitter shows no spread: {times:?}"
    );
}

#[tokio::test]
async fn garbage_input_and_stop_with_open_connections() {
    let nginx = Nginx::start().await.expect("nginx");
    let proxy = start(upstream_of(&nginx.url()), Mode::Http).await;
    // garbage instead of HTTP: an error answer or a close, never a hang or a crash
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    stream
        .write_all(b"\x00\xff\x13garbage\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(BOUND, stream.read_to_end(&mut got))
        .await
        .expect("answered or closed within bound");
    assert!(got.is_empty() || got.starts_with(b"HTTP/1.1 4"), "{got:?}");
    // the proxy still works
    let (_, body) = timed_get(&fresh_client(BOUND), &format!("{}/health", proxy.url())).await;
    assert!(String::from_utf8_lossy(&body).contains("ok"));

    // a blackholed connection is ended by stop, and stop returns promptly
    proxy.add(FaultSpec::new(Fault::Blackhole)).expect("add");
    let mut held = TcpStream::connect(proxy.addr()).await.expect("connect");
    held.write_all(b"GET / HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    proxy.stop().await;
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "stop took {:?}",
        t.elapsed()
    );
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(BOUND, held.read(&mut buf))
        .await
        .expect("closed by stop");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}
