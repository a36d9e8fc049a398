//! `read_sse` against real streams: the testkit model server (healthy and with every stream
//! fault) and small raw servers on 127.0.0.1 for shapes the fixture cannot produce. The
//! requests go over a plain hyper HTTP/1 client connection, as in the engine.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use citadel_itest_load::sample::StreamSample;
use citadel_itest_load::stream::read_sse;
use citadel_itest_openai::StreamLimits;
use citadel_itest_testkit::model::{Faults, ModelServer};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{sleep, timeout};

/// Every test is over well within this.
const BOUND: Duration = Duration::from_secs(20);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// What one streamed request gave.
struct Got {
    status: u16,
    sample: StreamSample,
    bytes: u64,
}

/// POST a streaming chat request to `addr` over a new HTTP/1 connection and read the answer
/// with `read_sse`; `fault` goes in `x-fixture-fault`.
async fn stream_chat(
    addr: SocketAddr,
    usage: bool,
    fault: Option<&str>,
    limits: &StreamLimits,
) -> Got {
    let work = async {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let body = serde_json::json!({
            "model": "chat-small",
            "messages": [{"role": "user", "content": "Count for me"}],
            "stream": true,
            "stream_options": {"include_usage": usage},
        });
        let mut req = http::Request::post("/v1/chat/completions")
            .header("host", addr.to_string())
            .header("content-type", "application/json")
            .header("accept", "text/event-stream");
        if let Some(fault) = fault {
            req = req.header("x-fixture-fault", fault);
        }
        let req = req
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        let sent = Instant::now();
        let resp = sender.send_request(req).await.expect("response head");
        let status = resp.status().as_u16();
        let (sample, bytes) = read_sse(resp.into_body(), sent, limits).await;
        Got {
            status,
            sample,
            bytes,
        }
    };
    timeout(BOUND, work)
        .await
        .expect("the stream read is bounded")
}

async fn model(tokens: usize) -> ModelServer {
    ModelServer::builder()
        .models(["chat-small"])
        .ttft(ms(50))
        .itl(ms(10))
        .completion_tokens(tokens)
        .start()
        .await
        .expect("model server starts")
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

#[tokio::test]
async fn a_healthy_stream_is_done_with_the_fixtures_timings_and_usage_tokens() {
    let server = model(8).await;
    let got = stream_chat(server.addr(), true, None, &StreamLimits::default()).await;
    let s = &got.sample;
    assert_eq!(got.status, 200);
    assert_eq!(s.end, "done");
    assert_eq!(s.output_tokens, 8);
    assert!(s.tokens_from_usage);
    let ttft = s.ttft.expect("a first token");
    assert!(
        ttft >= ms(48) && ttft <= ms(150),
        "ttft {ttft:?} for a 50 ms fixture"
    );
    assert_eq!(s.itl.len(), 7, "one gap between each two of 8 tokens");
    let itl = median(&s.itl);
    assert!(
        itl >= ms(7) && itl <= ms(14),
        "median itl {itl:?} for 10 ms"
    );
    assert!(s.e2e >= ttft + ms(60), "e2e {:?} covers every token", s.e2e);
    assert!(s.e2e < ms(1000));
    let tpot = s.tpot().expect("tpot");
    assert!(tpot >= ms(7) && tpot <= ms(30), "tpot {tpot:?}");
    assert!(got.bytes > 8 * 50, "body bytes {}", got.bytes);
}

#[tokio::test]
async fn without_a_usage_chunk_tokens_are_content_chunks() {
    let server = model(5).await;
    let got = stream_chat(server.addr(), false, None, &StreamLimits::default()).await;
    assert_eq!(got.sample.end, "done");
    assert_eq!(got.sample.output_tokens, 5);
    assert!(!got.sample.tokens_from_usage);
    assert_eq!(got.sample.itl.len(), 4);
}

#[tokio::test]
async fn every_fixture_fault_is_never_done() {
    let server = model(8).await;
    let addr = server.addr();
    let normal = StreamLimits::default();
    let cases: [(Faults, StreamLimits, &str); 5] = [
        (Faults::none().with_cut_after(3), normal, "cut off"),
        (
            Faults::none().with_sse_error_after(2),
            normal,
            "in-band error",
        ),
        (Faults::none().with_malformed_after(2), normal, "malformed"),
        (
            Faults::none().with_slow_itl(ms(400)),
            normal.stall(ms(100)),
            "stalled",
        ),
        (
            Faults::none().with_slow_itl(ms(60)),
            normal.max_duration(ms(200)),
            "timed out",
        ),
    ];
    for (fault, limits, want) in cases {
        let fault = fault.to_string();
        let got = stream_chat(addr, true, Some(&fault), &limits).await;
        assert_eq!(got.status, 200, "{fault}");
        assert_eq!(got.sample.end, want, "fault {fault}");
        assert!(
            !got.sample.tokens_from_usage,
            "{fault}: no usage chunk came"
        );
    }
    // The stall is a stall of the stream, found within its bound, not at the fixture's pace.
    let got = stream_chat(addr, true, Some("slow:2s"), &normal.stall(ms(150))).await;
    assert_eq!(got.sample.end, "stalled");
    assert!(
        got.sample.e2e < ms(1500),
        "stalled after {:?}",
        got.sample.e2e
    );
    // One event over the event cap, and the stream over the total cap.
    let got = stream_chat(addr, true, None, &normal.max_event_bytes(40)).await;
    assert_eq!(got.sample.end, "too large");
    let got = stream_chat(addr, true, None, &normal.max_total_bytes(300)).await;
    assert_eq!(got.sample.end, "too large");
    // The same server is healthy without a fault: the faults above were the cause.
    let got = stream_chat(addr, true, None, &normal).await;
    assert_eq!(got.sample.end, "done");
}

#[tokio::test]
async fn a_stream_cut_after_some_tokens_keeps_what_it_measured() {
    let server = model(8).await;
    let got = stream_chat(server.addr(), true, Some("cut:4"), &StreamLimits::default()).await;
    let s = &got.sample;
    assert_eq!(s.end, "cut off");
    // role chunk + 3 token chunks (the role chunk carries no content).
    assert!(s.ttft.is_some());
    assert_eq!(s.output_tokens, 3);
    assert_eq!(s.itl.len(), 2);
}

// ---- raw servers for shapes the fixture cannot produce ----

/// Read one request (head and `content-length` body).
async fn read_request(s: &mut TcpStream) -> bool {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&seen[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while seen.len() < head_end + len {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// A server for one connection that runs `script` after reading the request.
async fn raw<F, Fut>(script: F) -> SocketAddr
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        if read_request(&mut s).await {
            script(s).await;
        }
    });
    addr
}

const CHUNKED_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
transfer-encoding: chunked\r\n\r\n";

fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

const TOKEN: &[u8] = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"w\"}}]}\n\n";

#[tokio::test]
async fn no_done_then_a_clean_close_is_cut_off() {
    let body = [TOKEN, TOKEN].concat();
    let len = body.len();
    let addr = raw(move |mut s| async move {
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {len}\r\n\r\n"
        );
        let _ = s.write_all(head.as_bytes()).await;
        let _ = s.write_all(&body).await;
        let _ = s.shutdown().await;
    })
    .await;
    let got = stream_chat(addr, false, None, &StreamLimits::default()).await;
    assert_eq!(got.sample.end, "cut off");
    assert_eq!(got.sample.output_tokens, 2);
    assert_eq!(got.bytes, len as u64);
}

#[tokio::test]
async fn a_chunked_body_broken_off_mid_event_is_cut_off() {
    let addr = raw(|mut s| async move {
        let _ = s.write_all(CHUNKED_HEAD).await;
        let _ = s.write_all(&chunk(TOKEN)).await;
        // A chunk that promises more than comes, then the connection closes.
        let _ = s.write_all(b"40\r\ndata: {\"choices\":[{\"ind").await;
        let _ = s.flush().await;
        sleep(ms(20)).await;
    })
    .await;
    let got = stream_chat(addr, false, None, &StreamLimits::default()).await;
    assert_eq!(got.sample.end, "cut off");
    assert_eq!(got.sample.output_tokens, 1);
}

#[tokio::test]
async fn the_last_chunk_of_the_encoding_without_done_is_cut_off() {
    let addr = raw(|mut s| async move {
        let _ = s.write_all(CHUNKED_HEAD).await;
        let _ = s.write_all(&chunk(TOKEN)).await;
        let _ = s.write_all(&chunk(b"data: {\"choices\":[]}")).await;
        let _ = s.write_all(b"0\r\n\r\n").await;
        sleep(ms(200)).await;
    })
    .await;
    let got = stream_chat(addr, false, None, &StreamLimits::default()).await;
    assert_eq!(
        got.sample.end, "cut off",
        "an unfinished event and no [DONE]"
    );
}

#[tokio::test]
async fn an_endless_event_is_too_large_at_the_cap() {
    let addr = raw(|mut s| async move {
        let _ = s.write_all(CHUNKED_HEAD).await;
        let _ = s.write_all(&chunk(b"data: ")).await;
        let piece = chunk(&[b'x'; 4096]);
        for _ in 0..10_000 {
            if s.write_all(&piece).await.is_err() {
                return;
            }
        }
    })
    .await;
    let limits = StreamLimits::default().max_event_bytes(64 * 1024);
    let got = stream_chat(addr, false, None, &limits).await;
    assert_eq!(got.sample.end, "too large");
    assert!(
        got.bytes < 1024 * 1024,
        "stopped near the cap: {}",
        got.bytes
    );
}

#[tokio::test]
async fn silence_in_the_middle_is_stalled_within_the_bound() {
    let addr = raw(|mut s| async move {
        let _ = s.write_all(CHUNKED_HEAD).await;
        let _ = s.write_all(&chunk(TOKEN)).await;
        // Comments keep the connection busy but are not events.
        for _ in 0..30 {
            if s.write_all(&chunk(b": keep-alive\n\n")).await.is_err() {
                return;
            }
            sleep(ms(20)).await;
        }
    })
    .await;
    let limits = StreamLimits::default().stall(ms(150));
    let got = stream_chat(addr, false, None, &limits).await;
    assert_eq!(got.sample.end, "stalled");
    assert!(got.sample.e2e < ms(1000), "{:?}", got.sample.e2e);
}

#[tokio::test]
async fn an_in_band_error_is_not_done_even_when_done_follows() {
    let addr = raw(|mut s| async move {
        let _ = s.write_all(CHUNKED_HEAD).await;
        let _ = s.write_all(&chunk(TOKEN)).await;
        let _ = s
            .write_all(&chunk(
                b"data: {\"error\":{\"message\":\"overloaded\"}}\n\n",
            ))
            .await;
        let _ = s.write_all(&chunk(b"data: [DONE]\n\n")).await;
        let _ = s.write_all(b"0\r\n\r\n").await;
        sleep(ms(200)).await;
    })
    .await;
    let got = stream_chat(addr, false, None, &StreamLimits::default()).await;
    assert_eq!(got.sample.end, "in-band error");
}

#[tokio::test]
async fn events_split_across_writes_are_timed_at_their_completion() {
    let addr = raw(|mut s| async move {
        let _ = s.write_all(CHUNKED_HEAD).await;
        let (a, b) = TOKEN.split_at(20);
        let _ = s.write_all(&chunk(a)).await;
        let _ = s.flush().await;
        sleep(ms(80)).await;
        let _ = s.write_all(&chunk(b)).await;
        let _ = s.flush().await;
        sleep(ms(40)).await;
        let _ = s.write_all(&chunk(TOKEN)).await;
        let _ = s.write_all(&chunk(b"data: [DONE]\n\n")).await;
        let _ = s.write_all(b"0\r\n\r\n").await;
        sleep(ms(200)).await;
    })
    .await;
    let got = stream_chat(addr, false, None, &StreamLimits::default()).await;
    let s = &got.sample;
    assert_eq!(s.end, "done");
    let ttft = s.ttft.expect("ttft");
    assert!(
        ttft >= ms(78),
        "the first token is complete only after 80 ms: {ttft:?}"
    );
    assert_eq!(s.itl.len(), 1);
    assert!(s.itl[0] >= ms(35) && s.itl[0] < ms(400), "{:?}", s.itl);
    assert_eq!(s.output_tokens, 2);
}
