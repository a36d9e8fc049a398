//! The client layer against the testkit's OpenAI-compatible model server: every endpoint, the
//! fixture's configured timing measured back, and each of its stream faults classified.

use std::time::Duration;

use citadel_itest_core::config::Secret;
use citadel_itest_openai::{
    ChatRequest, Client, CompletionRequest, EmbeddingsRequest, RequestError, StreamEnd,
    StreamLimits, StreamReport, TokenCount,
};
use citadel_itest_testkit::model::{Faults, ModelServer, ModelServerBuilder};

const TTFT: Duration = Duration::from_millis(120);
const ITL: Duration = Duration::from_millis(25);
const TOKENS: usize = 12;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn builder() -> ModelServerBuilder {
    ModelServer::builder()
        .backend_id("fixture-a")
        .models(["chat-small", "embed-small"])
        .ttft(TTFT)
        .itl(ITL)
        .completion_tokens(TOKENS)
        .embedding_dimension(16)
}

async fn start(b: ModelServerBuilder) -> (ModelServer, Client) {
    let server = b.start().await.unwrap_or_else(|e| panic!("{e}"));
    let client = Client::new(&server.base_url()).unwrap();
    (server, client)
}

fn chat() -> ChatRequest {
    ChatRequest::new("chat-small").user("Tell me about the weather")
}

fn limits() -> StreamLimits {
    StreamLimits::default()
        .stall(Duration::from_secs(5))
        .max_duration(Duration::from_secs(30))
}

async fn chat_stream(client: &Client, limits: StreamLimits) -> StreamReport {
    client
        .chat_stream(&chat().include_usage(true), &limits)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_ttft_and_itl_are_measured_back() {
    let (server, client) = start(builder()).await;
    let r = chat_stream(&client, limits()).await;
    assert_eq!(r.end, StreamEnd::Done, "{}", r.end);
    assert_eq!(r.tokens, TokenCount::Usage(TOKENS as u64));
    assert_eq!(r.content_chunks, TOKENS as u64);
    assert_eq!(r.finish_reason.as_deref(), Some("stop"));
    assert_eq!(r.model.as_deref(), Some("chat-small"));
    assert_eq!(r.header("x-backend-id"), Some("fixture-a"));
    let ttft = r.ttft.unwrap();
    let mean = r.gaps.mean().unwrap();
    eprintln!(
        "configured ttft {TTFT:?} itl {ITL:?}; measured ttft {ttft:?}, mean gap {mean:?}, max gap {:?}, total {:?}",
        r.gaps.max, r.total
    );
    assert!(ttft >= TTFT && ttft < TTFT + ms(300), "ttft {ttft:?}");
    assert_eq!(r.gaps.count, TOKENS as u64 - 1);
    assert!(
        mean >= ITL - ms(10) && mean < ITL + ms(40),
        "mean gap {mean:?}"
    );
    let least = TTFT + ITL * (TOKENS as u32 - 1);
    assert!(r.total >= least - ms(5), "total {:?}", r.total);

    // The streamed text is the non-streaming answer's text (the fixture is deterministic).
    let whole = client.chat(&chat()).await.unwrap();
    assert_eq!(r.content, whole.body.content());
    assert_eq!(whole.body.usage.unwrap().completion_tokens, TOKENS as u64);
    assert!(whole.elapsed >= least - ms(5));

    // Without `include_usage` the count comes from content chunks, and says so.
    let r = client.chat_stream(&chat(), &limits()).await.unwrap();
    assert_eq!(r.end, StreamEnd::Done);
    assert_eq!(r.usage, None);
    assert_eq!(r.tokens, TokenCount::ContentChunks(TOKENS as u64));
    drop(server);
}

#[tokio::test]
async fn a_cut_stream_is_cut_off() {
    let (server, client) = start(builder().faults(Faults::none().with_cut_after(3))).await;
    let r = chat_stream(&client, limits()).await;
    let StreamEnd::CutOff { events, detail } = &r.end else {
        panic!("{}", r.end)
    };
    assert_eq!(*events, 3);
    assert!(detail.is_some(), "the transport error is named");
    assert!(
        r.end
            .to_string()
            .starts_with("stream cut off after 3 events without [DONE]: "),
        "{}",
        r.end
    );
    assert!(!r.is_success());
    eprintln!("cut:3 -> {}", r.end);
    drop(server);
}

#[tokio::test]
async fn an_in_band_error_is_an_in_band_error() {
    let (server, client) = start(builder().faults(Faults::none().with_sse_error_after(2))).await;
    let r = chat_stream(&client, limits()).await;
    let StreamEnd::InBandError { event, error } = &r.end else {
        panic!("{}", r.end)
    };
    assert_eq!(*event, 3);
    assert_eq!(error.kind.as_deref(), Some("server_error"));
    assert_eq!(error.status, None);
    assert!(
        r.end
            .to_string()
            .starts_with("stream carried an in-band error at event 3: server_error: "),
        "{}",
        r.end
    );
    assert!(!r.is_success());
    eprintln!("sse_error:2 -> {}", r.end);
    drop(server);
}

#[tokio::test]
async fn a_stalled_server_is_stalled() {
    let (server, client) = start(builder().faults(Faults::none().with_stall(ms(1500)))).await;
    let started = tokio::time::Instant::now();
    let r = chat_stream(&client, limits().stall(ms(300))).await;
    assert_eq!(
        r.end,
        StreamEnd::Stalled {
            within: ms(300),
            events: 0
        }
    );
    assert_eq!(
        r.end.to_string(),
        "stream stalled: no event within 300ms after 0 events"
    );
    assert!(started.elapsed() < ms(1200), "{:?}", started.elapsed());
    // The same stall within a generous bound only delays the first token.
    let r = chat_stream(&client, limits()).await;
    assert_eq!(r.end, StreamEnd::Done);
    assert!(r.ttft.unwrap() >= ms(1500) + TTFT, "{:?}", r.ttft);
    drop(server);
}

#[tokio::test]
async fn a_slow_stream_is_measured_or_stalled_by_the_bound() {
    let slow = Faults::none().with_slow_itl(ms(250));
    let (server, client) = start(builder().ttft(ms(20)).completion_tokens(6).faults(slow)).await;
    let r = chat_stream(&client, limits()).await;
    assert_eq!(r.end, StreamEnd::Done);
    let mean = r.gaps.mean().unwrap();
    eprintln!("slow:250ms -> mean gap {mean:?}");
    assert!(mean >= ms(225) && mean < ms(400), "mean gap {mean:?}");

    let r = chat_stream(&client, limits().stall(ms(150))).await;
    let StreamEnd::Stalled { events, .. } = r.end else {
        panic!("{}", r.end)
    };
    // The role chunk and the first token arrive together; the next token is 250 ms away.
    assert_eq!(events, 2);
    assert_eq!(
        r.end.to_string(),
        "stream stalled: no event within 150ms after 2 events"
    );
    drop(server);
}

#[tokio::test]
async fn a_malformed_chunk_is_named() {
    let (server, client) = start(builder()).await;
    server
        .set_faults(Faults::none().with_malformed_after(2))
        .unwrap();
    let r = chat_stream(&client, limits()).await;
    let StreamEnd::Malformed { event, .. } = &r.end else {
        panic!("{}", r.end)
    };
    assert_eq!(*event, 3);
    assert!(
        r.end
            .to_string()
            .starts_with("stream chunk 3 is malformed (not JSON: "),
        "{}",
        r.end
    );
    assert!(!r.is_success());
    eprintln!("malformed:2 -> {}", r.end);

    // Text completion streams too.
    let r = client
        .completion_stream(&CompletionRequest::new("chat-small", "x"), &limits())
        .await
        .unwrap();
    assert_eq!(r.end.class(), "malformed", "{}", r.end);

    server.clear_faults();
    let r = client
        .completion_stream(&CompletionRequest::new("chat-small", "x"), &limits())
        .await
        .unwrap();
    assert_eq!(r.end, StreamEnd::Done);
    assert_eq!(r.tokens, TokenCount::ContentChunks(TOKENS as u64));
}

#[tokio::test]
async fn every_endpoint_answers_typed() {
    let (server, client) = start(builder()).await;
    let models = client.models().await.unwrap();
    assert_eq!(models.body.ids(), ["chat-small", "embed-small"]);
    assert_eq!(models.status, 200);

    let c = client
        .completion(&CompletionRequest::new("chat-small", "Once upon").max_tokens(5))
        .await
        .unwrap();
    assert_eq!(c.body.object, "text_completion");
    assert_eq!(c.body.text().split_whitespace().count(), 5);
    assert_eq!(c.body.usage.unwrap().completion_tokens, 5);

    let e = client
        .embeddings(&EmbeddingsRequest::many("embed-small", ["a", "b"]).dimensions(8))
        .await
        .unwrap();
    assert_eq!(e.body.data.len(), 2);
    assert!(e.body.data.iter().all(|d| d.embedding.len() == 8));
    assert!(e.body.usage.unwrap().prompt_tokens > 0);

    // Seeds and extra headers go through; the fixture echoes the request id.
    let req = chat()
        .seed(42)
        .max_tokens(3)
        .header("x-request-id", "itest-req-7");
    let a = client.chat(&req).await.unwrap();
    assert_eq!(a.header("x-request-id"), Some("itest-req-7"));
    assert_eq!(a.body.choices[0].finish_reason.as_deref(), Some("length"));
    let b = client.chat(&req).await.unwrap();
    assert_eq!(a.body.content(), b.body.content());

    // Errors are typed with their status.
    let err = client
        .chat(&ChatRequest::new("nope").user("x"))
        .await
        .unwrap_err();
    let api = err.api_error().unwrap();
    assert_eq!(api.status, Some(404));
    assert_eq!(api.code.as_deref(), Some("model_not_found"));
    let err = client
        .chat(&chat().extra("max_tokens", serde_json::json!("many")))
        .await
        .unwrap_err();
    let api = err.api_error().unwrap();
    assert_eq!(api.status, Some(400));
    assert_eq!(api.param.as_deref(), Some("max_tokens"));
    assert_eq!(api.code.as_deref(), Some("invalid_type"));

    // Streams that fail before they start are errors, not reports.
    server
        .set_faults(Faults::none().with_rate_limit(Duration::from_secs(2)))
        .unwrap();
    let err = client.chat_stream(&chat(), &limits()).await.unwrap_err();
    assert_eq!(err.status(), Some(429));
    assert_eq!(
        err.api_error().unwrap().code.as_deref(),
        Some("rate_limit_exceeded")
    );

    // Requests the typed calls do not cover: the raw call keeps any status and the body.
    server.clear_faults();
    let raw = client
        .send_raw(
            "POST /v1/chat/completions",
            client
                .request(
                    citadel_itest_openai::reqwest::Method::POST,
                    "chat/completions",
                )
                .header("content-type", "application/json")
                .body("{not json"),
        )
        .await
        .unwrap();
    assert_eq!(raw.status, 400);
    assert_eq!(raw.content_type(), "application/json");
    assert_eq!(
        raw.api_error().unwrap().kind.as_deref(),
        Some("invalid_request_error")
    );
}

#[tokio::test]
async fn the_api_key_is_sent_and_never_shown() {
    let key = "sk-itest-4f9a1c2e7b";
    let (server, client) = start(builder().api_key(key)).await;
    let err = client.models().await.unwrap_err();
    assert_eq!(err.status(), Some(401));

    let secret = Secret::inline(key).resolve().unwrap();
    let client = client.api_key(secret);
    assert_eq!(client.models().await.unwrap().status, 200);
    let shown = format!("{client:?}");
    assert!(!shown.contains(key), "{shown}");

    let err = client
        .chat(&chat().header("bad header", "x"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "bad request setup: header name `bad header` is not a valid HTTP header name"
    );
    let err = client
        .chat(&chat().header("x-a", "line\nbreak"))
        .await
        .unwrap_err();
    assert!(matches!(err, RequestError::Setup(_)), "{err}");
    assert!(Client::new("ftp://127.0.0.1/v1").is_err());
    assert!(Client::new("not a url").is_err());
    drop(server);
}
