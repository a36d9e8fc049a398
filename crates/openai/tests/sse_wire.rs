//! The stream reader against small misbehaving servers on 127.0.0.1: line ends, comments,
//! multi-line data, events split across TCP writes, huge and endless streams, and every way a
//! stream can end.

use std::future::Future;
use std::time::Duration;

use citadel_itest_openai::{
    ChatRequest, Client, RequestError, StreamEnd, StreamLimits, StreamReport, TokenCount,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, sleep};

const SSE_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Read one request (head and `content-length` body) so that closing the socket later does
/// not reset the connection over unread bytes.
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

/// Serve one connection with `script` after reading the request; the base URL (`.../v1`).
async fn serve<F, Fut>(script: F) -> String
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let _ = s.set_nodelay(true);
        if read_request(&mut s).await {
            script(s).await;
        }
    });
    format!("http://{addr}/v1")
}

/// Serve `head` then `body` in writes of `piece` bytes (flushed one by one), then close.
async fn serve_bytes(body: Vec<u8>, piece: usize) -> String {
    serve(move |mut s| async move {
        if s.write_all(SSE_HEAD).await.is_err() {
            return;
        }
        for chunk in body.chunks(piece.max(1)) {
            if s.write_all(chunk).await.is_err() || s.flush().await.is_err() {
                return;
            }
            if piece < 8 {
                // Separate TCP segments: give the reader a chance to see each write alone.
                tokio::task::yield_now().await;
            }
        }
        let _ = s.shutdown().await;
    })
    .await
}

async fn stream(base: &str, limits: StreamLimits) -> Result<StreamReport, RequestError> {
    Client::new(base)
        .unwrap()
        .chat_stream(&ChatRequest::new("m").user("hi"), &limits)
        .await
}

fn limits() -> StreamLimits {
    StreamLimits::default()
        .stall(Duration::from_secs(5))
        .max_duration(Duration::from_secs(20))
}

fn chunk(content: &str) -> String {
    format!(
        r#"{{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{{"index":0,"delta":{{"content":"{content}"}},"finish_reason":null}}]}}"#
    )
}

const FINISH: &str =
    r#"{"id":"c1","model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;
const USAGE: &str = r#"{"id":"c1","model":"m","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":3,"total_tokens":4}}"#;

/// A healthy stream with `: comment` lines, one event as two `data:` lines, and the given line
/// end.
fn healthy_body(eol: &str) -> Vec<u8> {
    let a = chunk("Hello");
    // One JSON object written over two data lines: joined with "\n", still valid JSON.
    let (b1, b2) = {
        let b = chunk(" big");
        let at = b.find(",\"choices\"").unwrap() + 1;
        (b[..at].to_string(), b[at..].to_string())
    };
    let c = chunk(" world");
    let lines = [
        ": keep-alive".to_string(),
        String::new(),
        format!("data: {a}"),
        String::new(),
        format!("data: {b1}"),
        format!("data:{b2}"),
        ": a comment inside nothing".to_string(),
        String::new(),
        format!("data: {c}"),
        String::new(),
        format!("data: {FINISH}"),
        String::new(),
        "data: [DONE]".to_string(),
        String::new(),
    ];
    let mut body = String::new();
    for l in lines {
        body.push_str(&l);
        body.push_str(eol);
    }
    body.into_bytes()
}

async fn assert_healthy(base: &str, what: &str) -> StreamReport {
    let r = stream(base, limits()).await.unwrap();
    assert_eq!(r.end, StreamEnd::Done, "{what}: {}", r.end);
    assert!(r.is_success(), "{what}");
    assert_eq!(r.content, "Hello big world", "{what}");
    assert_eq!(r.tokens, TokenCount::ContentChunks(3), "{what}");
    assert_eq!(r.events, 5, "{what}");
    assert_eq!(r.finish_reason.as_deref(), Some("stop"), "{what}");
    assert_eq!(r.model.as_deref(), Some("m"), "{what}");
    assert!(r.ttft.is_some(), "{what}");
    assert_eq!(r.gaps.count, 2, "{what}");
    r
}

#[tokio::test]
async fn crlf_lf_and_cr_line_ends_all_read() {
    for (eol, name) in [("\r\n", "CRLF"), ("\n", "LF"), ("\r", "CR")] {
        let base = serve_bytes(healthy_body(eol), 1 << 20).await;
        assert_healthy(&base, name).await;
    }
}

#[tokio::test]
async fn events_split_byte_by_byte_across_tcp_writes() {
    for (eol, name) in [("\r\n", "CRLF"), ("\n", "LF"), ("\r", "CR")] {
        let body = healthy_body(eol);
        let len = body.len() as u64;
        let base = serve_bytes(body, 1).await;
        let r = assert_healthy(&base, &format!("{name}, one byte per write")).await;
        // The events really arrived in pieces (most bytes alone).
        assert!(
            r.reads > len / 4,
            "{name}: {} reads of {len} bytes",
            r.reads
        );
        let base = serve_bytes(healthy_body(eol), 7).await;
        assert_healthy(&base, &format!("{name}, seven bytes per write")).await;
    }
}

#[tokio::test]
async fn usage_chunk_gives_the_token_count() {
    let body = format!(
        "data: {}\n\ndata: {}\n\ndata: {}\n\ndata: {FINISH}\n\ndata: {USAGE}\n\ndata: [DONE]\n\n",
        chunk("a"),
        chunk(" b"),
        chunk(" c")
    );
    let r = stream(&serve_bytes(body.into_bytes(), 1 << 20).await, limits())
        .await
        .unwrap();
    assert_eq!(r.end, StreamEnd::Done);
    assert_eq!(r.tokens, TokenCount::Usage(3));
    assert_eq!(r.tokens.to_string(), "3 tokens (usage)");
    assert_eq!(r.usage.unwrap().prompt_tokens, 1);
    assert_eq!(r.content_chunks, 3);
}

#[tokio::test]
async fn arrival_times_are_measured() {
    let base = serve(|mut s| async move {
        let _ = s.write_all(SSE_HEAD).await;
        sleep(ms(150)).await;
        for word in ["a", " b", " c", " d"] {
            let _ = s
                .write_all(format!("data: {}\n\n", chunk(word)).as_bytes())
                .await;
            sleep(ms(60)).await;
        }
        let _ = s.write_all(b"data: [DONE]\n\n").await;
    })
    .await;
    let r = stream(&base, limits()).await.unwrap();
    assert_eq!(r.end, StreamEnd::Done);
    let ttft = r.ttft.unwrap();
    assert!(ttft >= ms(150) && ttft < ms(1000), "ttft {ttft:?}");
    assert!(r.head.unwrap() < ttft);
    assert_eq!(r.gaps.count, 3);
    for gap in &r.gaps.kept {
        assert!(*gap >= ms(30) && *gap < ms(600), "gap {gap:?}");
    }
    assert!(r.gaps.max >= ms(60));
    // One arrival per data event, in order, the first at the TTFT.
    assert_eq!(r.arrivals.len(), 5);
    assert_eq!(r.arrivals[0], ttft);
    assert!(r.arrivals.windows(2).all(|w| w[0] <= w[1]));
    assert!(r.total >= ttft + ms(180), "total {:?}", r.total);
    assert_eq!(r.tokens, TokenCount::ContentChunks(4));
}

#[tokio::test]
async fn in_band_error_is_never_success_even_if_done_follows() {
    let body = format!(
        "data: {}\n\ndata: {{\"error\":{{\"message\":\"The server had an error\",\"type\":\"server_error\",\"param\":null,\"code\":null}}}}\n\ndata: [DONE]\n\n",
        chunk("a")
    );
    let r = stream(&serve_bytes(body.into_bytes(), 1 << 20).await, limits())
        .await
        .unwrap();
    assert!(!r.is_success());
    let StreamEnd::InBandError { event, error } = &r.end else {
        panic!("{}", r.end)
    };
    assert_eq!(*event, 2);
    assert_eq!(error.kind.as_deref(), Some("server_error"));
    assert_eq!(
        r.end.to_string(),
        "stream carried an in-band error at event 2: server_error: The server had an error"
    );
    assert_eq!(r.content, "a");

    // `event: error` with a non-JSON payload is an in-band error too.
    let body = "event: error\ndata: upstream went away\n\n".to_string();
    let r = stream(&serve_bytes(body.into_bytes(), 1 << 20).await, limits())
        .await
        .unwrap();
    assert_eq!(r.end.class(), "in-band error");
    assert!(
        r.end.to_string().contains("upstream went away"),
        "{}",
        r.end
    );
}

#[tokio::test]
async fn malformed_chunks_are_named_by_number() {
    let cases = [
        (
            "data: {not json}\n\n",
            "stream chunk 2 is malformed (not JSON",
        ),
        (
            "data: {\"id\":\"x\"}\n\n",
            "stream chunk 2 is malformed (`choices` is missing)",
        ),
        (
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":5}}]}\n\n",
            "stream chunk 2 is malformed (`choices[0].delta.content`",
        ),
        ("data: [1,2]\n\n", "stream chunk 2 is malformed"),
    ];
    for (bad, want) in cases {
        let body = format!("data: {}\n\n{bad}data: [DONE]\n\n", chunk("a"));
        let r = stream(&serve_bytes(body.into_bytes(), 1 << 20).await, limits())
            .await
            .unwrap();
        assert_eq!(r.end.class(), "malformed", "{bad}");
        let text = r.end.to_string();
        assert!(text.starts_with(want), "{bad}: {text}");
        assert!(!r.is_success());
    }
}

#[tokio::test]
async fn eof_without_done_is_cut_off() {
    let body = format!("data: {}\n\ndata: {}\n\n", chunk("a"), chunk(" b"));
    let r = stream(&serve_bytes(body.into_bytes(), 1 << 20).await, limits())
        .await
        .unwrap();
    assert_eq!(
        r.end,
        StreamEnd::CutOff {
            events: 2,
            detail: None
        }
    );
    assert_eq!(
        r.end.to_string(),
        "stream cut off after 2 events without [DONE]"
    );
    assert_eq!(r.content, "a b");

    // The connection ends in the middle of an event.
    let body = format!("data: {}\n\ndata: {{\"cho", chunk("a"));
    let r = stream(&serve_bytes(body.into_bytes(), 1 << 20).await, limits())
        .await
        .unwrap();
    assert_eq!(
        r.end.to_string(),
        "stream cut off after 1 events without [DONE]: the last event was not finished"
    );
}

#[tokio::test]
async fn a_chunked_stream_broken_off_is_cut_off() {
    let base = serve(|mut s| async move {
        let head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
        let event = format!("data: {}\n\n", chunk("a"));
        let _ = s.write_all(head).await;
        let _ = s
            .write_all(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes())
            .await;
        let _ = s.flush().await;
        sleep(ms(50)).await;
        // Drop without the final 0-size chunk.
    })
    .await;
    let r = stream(&base, limits()).await.unwrap();
    assert_eq!(r.end.class(), "cut off", "{}", r.end);
    assert!(
        r.end
            .to_string()
            .starts_with("stream cut off after 1 events without [DONE]: "),
        "{}",
        r.end
    );
}

#[tokio::test]
async fn a_silent_stream_is_stalled_and_comments_do_not_count_as_events() {
    let base = serve(|mut s| async move {
        let _ = s.write_all(SSE_HEAD).await;
        let _ = s
            .write_all(format!("data: {}\n\n", chunk("a")).as_bytes())
            .await;
        // Keep-alive comments only, for longer than the stall bound.
        for _ in 0..40 {
            if s.write_all(b": ping\n\n").await.is_err() {
                return;
            }
            sleep(ms(50)).await;
        }
    })
    .await;
    let started = Instant::now();
    let r = stream(&base, limits().stall(ms(400))).await.unwrap();
    assert_eq!(
        r.end,
        StreamEnd::Stalled {
            within: ms(400),
            events: 1
        }
    );
    assert_eq!(
        r.end.to_string(),
        "stream stalled: no event within 400ms after 1 events"
    );
    assert!(started.elapsed() < ms(1500), "{:?}", started.elapsed());
}

#[tokio::test]
async fn no_response_head_within_the_stall_bound_is_stalled() {
    let base = serve(|mut s| async move {
        sleep(ms(1500)).await;
        let _ = s.write_all(SSE_HEAD).await;
    })
    .await;
    let r = stream(&base, limits().stall(ms(300))).await.unwrap();
    assert_eq!(r.status, None);
    assert_eq!(
        r.end.to_string(),
        "stream stalled: no event within 300ms after 0 events"
    );
}

#[tokio::test]
async fn a_huge_event_is_refused_at_the_cap() {
    // 32 MiB in one data line, no line end; the reader must stop at 64 KiB.
    let base = serve(|mut s| async move {
        let _ = s.write_all(SSE_HEAD).await;
        let _ = s
            .write_all(format!("data: {}\n\ndata: ", chunk("a")).as_bytes())
            .await;
        let block = vec![b'x'; 64 * 1024];
        for _ in 0..512 {
            if s.write_all(&block).await.is_err() {
                return;
            }
        }
    })
    .await;
    let r = stream(&base, limits().max_event_bytes(64 * 1024))
        .await
        .unwrap();
    assert_eq!(
        r.end.to_string(),
        "stream too large: one event over 64 KiB after 1 events"
    );
    assert!(r.bytes < 4 * 1024 * 1024, "read {} bytes", r.bytes);
}

#[tokio::test]
async fn an_endless_stream_is_stopped_by_the_total_cap() {
    let base = serve(|mut s| async move {
        let _ = s.write_all(SSE_HEAD).await;
        let event = format!("data: {}\n\n", chunk("tok"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if s.write_all(event.as_bytes()).await.is_err() {
                return;
            }
        }
    })
    .await;
    let r = stream(
        &base,
        limits()
            .max_total_bytes(1024 * 1024)
            .max_content_bytes(1000)
            .max_kept_gaps(100),
    )
    .await
    .unwrap();
    assert_eq!(r.end.class(), "too large", "{}", r.end);
    assert!(
        r.end
            .to_string()
            .starts_with("stream too large: the stream over 1 MiB after "),
        "{}",
        r.end
    );
    assert!(r.content.len() <= 1000);
    assert!(r.content_truncated);
    assert_eq!(r.gaps.kept.len(), 100);
    assert_eq!(r.arrivals.len(), 100);
    assert!(r.gaps.count > 1000, "{}", r.gaps.count);
    assert!(matches!(r.tokens, TokenCount::ContentChunks(n) if n > 1000));
}

#[tokio::test]
async fn an_endless_slow_stream_is_stopped_by_the_time_bound() {
    let base = serve(|mut s| async move {
        let _ = s.write_all(SSE_HEAD).await;
        for _ in 0..200 {
            let event = format!("data: {}\n\n", chunk("tok"));
            if s.write_all(event.as_bytes()).await.is_err() {
                return;
            }
            sleep(ms(20)).await;
        }
    })
    .await;
    let started = Instant::now();
    let r = stream(&base, limits().max_duration(ms(500))).await.unwrap();
    assert_eq!(r.end.class(), "timed out", "{}", r.end);
    assert!(
        r.end
            .to_string()
            .starts_with("stream not finished within 500ms ("),
        "{}",
        r.end
    );
    assert!(started.elapsed() < ms(2000));
}

#[tokio::test]
async fn error_answers_are_typed() {
    let base = serve(|mut s| async move {
        let body = r#"{"error":{"message":"The model `m` does not exist or you do not have access to it.","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#;
        let head = format!(
            "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = s.write_all(head.as_bytes()).await;
    })
    .await;
    let err = stream(&base, limits()).await.unwrap_err();
    assert_eq!(err.status(), Some(404));
    assert_eq!(
        err.api_error().unwrap().code.as_deref(),
        Some("model_not_found")
    );
    assert_eq!(
        err.to_string(),
        "POST /v1/chat/completions: HTTP 404 invalid_request_error (code model_not_found): The model `m` does not exist or you do not have access to it."
    );

    let base = serve(|mut s| async move {
        let body = "<html><body>502 Bad Gateway</body></html>";
        let head = format!(
            "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = s.write_all(head.as_bytes()).await;
    })
    .await;
    let err = stream(&base, limits()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "POST /v1/chat/completions: HTTP 502 without an OpenAI error body (text/html): <html><body>502 Bad Gateway</body></html>"
    );

    let base = serve(|mut s| async move {
        let body = r#"{"id":"x"}"#;
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = s.write_all(head.as_bytes()).await;
    })
    .await;
    let err = stream(&base, limits()).await.unwrap_err();
    assert!(
        matches!(err, RequestError::NotEventStream { status: 200, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn a_wrong_shaped_answer_names_the_field() {
    let base = serve(|mut s| async move {
        let body = r#"{"object":"list","data":[{"object":"model"}]}"#;
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = s.write_all(head.as_bytes()).await;
    })
    .await;
    let err = Client::new(&base).unwrap().models().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"GET /v1/models: HTTP 200 answer is not a model list: `data[0].id` is missing; body: {"object":"list","data":[{"object":"model"}]}"#
    );
}

#[tokio::test]
async fn a_closed_port_is_a_transport_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = Client::new(&format!("http://{addr}/v1"))
        .unwrap()
        .models()
        .await
        .unwrap_err();
    assert!(matches!(err, RequestError::Transport { .. }), "{err}");
    assert!(err.to_string().starts_with("GET /v1/models: "), "{err}");
}

#[tokio::test]
async fn a_slow_body_is_bounded_by_the_client_timeout() {
    let base = serve(|mut s| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"object\":")
            .await;
        sleep(Duration::from_secs(5)).await;
    })
    .await;
    let started = Instant::now();
    let err = Client::new(&base)
        .unwrap()
        .timeout(ms(300))
        .models()
        .await
        .unwrap_err();
    assert!(started.elapsed() < ms(2000));
    assert!(
        err.to_string()
            .starts_with("GET /v1/models: HTTP 200: body not finished within 300ms"),
        "{err}"
    );
}
