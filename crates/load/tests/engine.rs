//! The load engine against real servers: testkit nginx (HTTP/1.1 and h2c), the testkit model
//! server, and small raw servers on 127.0.0.1 for stalls, slow answers, cut-off bodies,
//! closed connections and silence.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use citadel_itest_load::config::{
    ClosedModel, LoadModel, OpenModel, Protocol, RequestConfig, ScenarioConfig,
};
use citadel_itest_load::engine::{self, Bodies, Control, Plan};
use citadel_itest_load::sample::{ErrorClass, Sample, VecSink};
use citadel_itest_testkit::{HangingListener, ModelServer, Nginx, closed_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// No run in this file may take longer than this.
const BOUND: Duration = Duration::from_secs(30);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn closed(url: &str, vus: usize, duration: Duration) -> ScenarioConfig {
    ScenarioConfig::new("t", url, LoadModel::Closed(ClosedModel::new(vus, duration)))
}

fn open(url: &str, model: OpenModel) -> ScenarioConfig {
    ScenarioConfig::new("t", url, LoadModel::Open(model))
}

/// Everything a run recorded, merged over its threads.
struct Run {
    samples: Vec<Sample>,
    dropped: Vec<Duration>,
    finished: Done,
}

/// The run's outcome without its sinks.
struct Done {
    elapsed: Duration,
    cancelled: bool,
    abandoned: u64,
}

impl Run {
    fn errors(&self, class: ErrorClass) -> usize {
        self.samples
            .iter()
            .filter(|s| s.error == Some(class))
            .count()
    }

    fn ok(&self) -> usize {
        self.samples.iter().filter(|s| s.is_ok()).count()
    }

    fn percentile(&self, p: f64, f: impl Fn(&Sample) -> Duration) -> Duration {
        let mut v: Vec<Duration> = self.samples.iter().map(f).collect();
        v.sort();
        if v.is_empty() {
            return Duration::ZERO;
        }
        let i = ((v.len() - 1) as f64 * p).round() as usize;
        v[i]
    }
}

async fn run_with(plan: &Plan, control: &Control) -> Run {
    let done = tokio::time::timeout(BOUND, engine::run(plan, |_| VecSink::default(), control))
        .await
        .expect("the run ends within the bound")
        .expect("the run starts");
    let mut samples = Vec::new();
    let mut dropped = Vec::new();
    for s in &done.sinks {
        samples.extend(s.samples.iter().cloned());
        dropped.extend(s.dropped.iter().copied());
    }
    let finished = Done {
        elapsed: done.elapsed,
        cancelled: done.cancelled,
        abandoned: done.abandoned,
    };
    Run {
        samples,
        dropped,
        finished,
    }
}

async fn run(scenario: &ScenarioConfig) -> Run {
    let plan = Plan::from_scenario(scenario, Bodies::none()).expect("plan");
    run_with(&plan, &Control::new()).await
}

/// What a raw server does with request number `n` (from 0).
#[derive(Clone, Copy)]
enum Reply {
    /// `200 ok` after waiting until this instant (if in the future).
    OkAt(Option<Instant>),
    /// Announce 100 bytes, send 10, close.
    CutBody,
    /// `200 ok` with `connection: close`, then close.
    OkThenClose,
    /// `200 ok` (keep-alive), then close the connection when no request follows within
    /// 100 ms (an idle timeout, announced by nothing but the FIN).
    OkIdleClose,
}

/// An HTTP/1.1 server on 127.0.0.1 reading request heads (no bodies) and answering each as
/// `reply(n)` says, keep-alive otherwise.
async fn raw_server(reply: impl Fn(u64) -> Reply + Send + Sync + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let reply = Arc::new(reply);
    let counter = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let reply = reply.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let mut idle_close = false;
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        let read = sock.read(&mut chunk);
                        let got = if idle_close && buf.is_empty() {
                            match tokio::time::timeout(ms(100), read).await {
                                Ok(r) => r,
                                Err(_) => return,
                            }
                        } else {
                            read.await
                        };
                        match got {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
                    buf.drain(..end);
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    let r = reply(n);
                    idle_close = matches!(r, Reply::OkIdleClose);
                    let out: &[u8] = match r {
                        Reply::OkIdleClose => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                        Reply::OkAt(at) => {
                            if let Some(at) = at {
                                tokio::time::sleep_until(at.into()).await;
                            }
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                        }
                        Reply::CutBody => {
                            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789"
                        }
                        Reply::OkThenClose => {
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                        }
                    };
                    if sock.write_all(out).await.is_err() {
                        return;
                    }
                    if matches!(r, Reply::CutBody | Reply::OkThenClose) {
                        let _ = sock.shutdown().await;
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn closed_model_against_nginx_stops_exactly_at_the_iteration_cap() {
    let nginx = Nginx::builder().start().await.expect("nginx");
    let mut s = closed(&format!("{}/", nginx.url()), 8, Duration::from_secs(20));
    s.closed = s.closed.map(|c| c.iterations(1000));
    let r = run(&s).await;
    assert_eq!(r.samples.len(), 1000);
    assert_eq!(r.ok(), 1000, "{:?}", r.samples.iter().find(|s| !s.is_ok()));
    assert!(
        r.samples
            .iter()
            .all(|s| s.status == Some(200) && s.bytes == 3)
    );
    // Closed model: the intended time is the send time, latency is service time.
    assert!(r.samples.iter().all(|s| s.latency == s.service));
    assert!(r.finished.elapsed < Duration::from_secs(10));
    assert!(!r.finished.cancelled);
}

#[tokio::test]
async fn closed_model_stops_at_its_duration_and_counts_live() {
    let nginx = Nginx::builder().start().await.expect("nginx");
    let s = closed(&format!("{}/", nginx.url()), 4, ms(700));
    let plan = Plan::from_scenario(&s, Bodies::none()).expect("plan");
    let control = Control::new();
    let r = run_with(&plan, &control).await;
    assert!(r.finished.elapsed >= ms(700), "{:?}", r.finished.elapsed);
    assert!(r.finished.elapsed < ms(2500), "{:?}", r.finished.elapsed);
    assert!(r.samples.len() > 100, "{}", r.samples.len());
    assert_eq!(r.ok(), r.samples.len());
    let live = &control.live;
    assert_eq!(live.sent.load(Ordering::Relaxed), r.samples.len() as u64);
    assert_eq!(
        live.completed.load(Ordering::Relaxed),
        r.samples.len() as u64
    );
    assert_eq!(live.errors.load(Ordering::Relaxed), 0);
    assert_eq!(live.in_flight.load(Ordering::Relaxed), 0);
    // No request was started after the duration. A closed-model sample's time is when it was
    // sent, after its connection was reopened if the server had closed it (nginx closes a
    // keep-alive connection every 1,000 requests), so the last ones may carry a time just past
    // the duration: allow one reconnect on a busy machine.
    assert!(
        r.samples.iter().all(|s| s.intended < ms(800)),
        "{:?}",
        r.samples.iter().map(|s| s.intended).max()
    );
}

#[tokio::test]
async fn open_model_sends_rate_times_duration_on_schedule() {
    let nginx = Nginx::builder().start().await.expect("nginx");
    let s = open(
        &format!("{}/", nginx.url()),
        OpenModel::constant(200.0, Duration::from_secs(2)),
    );
    let r = run(&s).await;
    assert_eq!(r.samples.len() + r.dropped.len(), 400);
    assert!(r.dropped.is_empty(), "{} dropped", r.dropped.len());
    assert_eq!(r.ok(), 400);
    let mut intended: Vec<Duration> = r.samples.iter().map(|s| s.intended).collect();
    intended.sort();
    assert_eq!(intended[0], Duration::ZERO);
    assert!(intended[1].abs_diff(ms(5)) < Duration::from_micros(10));
    assert!(r.finished.elapsed >= ms(1995) && r.finished.elapsed < ms(3000));
    // Sent on time: the corrected latency is close to the service time.
    let lag = r.percentile(0.99, |s| s.latency.saturating_sub(s.service));
    assert!(lag < ms(50), "{lag:?}");
}

#[tokio::test]
async fn poisson_ramp_against_the_model_server_sends_about_the_area_of_the_rate() {
    let model = ModelServer::builder()
        .ttft(ms(5))
        .start()
        .await
        .expect("model server");
    // 0 -> 200/s over 1 s, then 200/s for 1 s: 300 expected.
    let s = open(
        &format!("{}/models", model.base_url()),
        OpenModel::stages(["200/s for 1s", "200/s for 1s"]).poisson(11),
    );
    let r = run(&s).await;
    let n = r.samples.len();
    assert!((240..=360).contains(&n), "{n}");
    assert_eq!(r.ok(), n, "{:?}", r.samples.iter().find(|s| !s.is_ok()));
    let first_half = r.samples.iter().filter(|s| s.intended < ms(500)).count();
    assert!(
        first_half < n / 6,
        "{first_half} of {n} in the first 0.5 s of the ramp"
    );
}

#[tokio::test]
async fn model_server_latency_matches_its_configured_delay() {
    let model = ModelServer::builder()
        .ttft(ms(20))
        .start()
        .await
        .expect("model server");
    let body =
        r#"{"model":"fixture-chat","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut s = closed(&model.base_url(), 4, Duration::from_secs(10));
    s.closed = s.closed.map(|c| c.iterations(100));
    let s = s.request(RequestConfig::post(
        format!("{}/chat/completions", model.base_url()),
        body,
    ));
    let r = run(&s).await;
    assert_eq!(r.ok(), 100, "{:?}", r.samples.iter().find(|s| !s.is_ok()));
    let p50 = r.percentile(0.5, |s| s.latency);
    assert!(p50 >= ms(20) && p50 < ms(40), "{p50:?}");
    assert!(r.samples.iter().all(|s| s.bytes > 50));
}

#[tokio::test]
async fn a_server_stall_shows_in_corrected_latency_not_in_service_time() {
    // Every answer between 1.0 s and 2.0 s after the first request waits until 2.0 s.
    let t0 = Arc::new(std::sync::OnceLock::<Instant>::new());
    let t = t0.clone();
    let addr = raw_server(move |_| {
        let start = *t.get_or_init(Instant::now);
        let now = Instant::now();
        if now >= start + ms(1000) && now < start + ms(2000) {
            Reply::OkAt(Some(start + ms(2000)))
        } else {
            Reply::OkAt(None)
        }
    })
    .await;
    let s = open(
        &format!("http://{addr}/"),
        OpenModel::constant(100.0, Duration::from_secs(3)).max_connections(1),
    );
    let r = run(&s).await;
    assert_eq!(r.samples.len() + r.dropped.len(), 300);
    let slow_corrected = r.samples.iter().filter(|s| s.latency > ms(300)).count();
    let slow_service = r.samples.iter().filter(|s| s.service > ms(300)).count();
    // The stall blocks the only connection: every arrival during it is late.
    assert!(slow_corrected >= 50, "{slow_corrected}");
    assert!(slow_service <= 5, "{slow_service}");
    let p99 = r.percentile(0.99, |s| s.latency);
    let p99_service = r.percentile(0.99, |s| s.service);
    assert!(p99 > ms(500), "{p99:?}");
    assert!(p99_service < ms(100), "{p99_service:?}");
}

#[tokio::test]
async fn arrivals_too_far_behind_schedule_are_dropped_and_counted() {
    // Every answer takes 200 ms; 2 connections carry 10/s, the schedule asks 50/s.
    let addr = raw_server(|_| Reply::OkAt(Some(Instant::now() + ms(200)))).await;
    let s = open(
        &format!("http://{addr}/"),
        OpenModel::constant(50.0, Duration::from_secs(2))
            .max_connections(2)
            .max_lag(ms(100)),
    );
    let plan = Plan::from_scenario(&s, Bodies::none()).expect("plan");
    let control = Control::new();
    let r = run_with(&plan, &control).await;
    assert_eq!(r.samples.len() + r.dropped.len(), 100);
    assert!(r.dropped.len() >= 50, "{} dropped", r.dropped.len());
    assert!(r.samples.len() >= 15, "{} sent", r.samples.len());
    assert_eq!(
        control.live.dropped.load(Ordering::Relaxed),
        r.dropped.len() as u64
    );
    // Nothing sent later than max_lag behind its time (plus the wait for the answer).
    assert!(
        r.samples
            .iter()
            .all(|s| s.latency.saturating_sub(s.service) <= ms(250))
    );
}

#[tokio::test]
async fn connection_refused_is_a_connect_error() {
    let port = closed_port().expect("closed port");
    let mut s = closed(
        &format!("http://127.0.0.1:{port}/"),
        2,
        Duration::from_secs(5),
    );
    s.closed = s.closed.map(|c| c.iterations(8));
    let r = run(&s).await;
    assert_eq!(r.samples.len(), 8);
    assert_eq!(r.errors(ErrorClass::Connect), 8);
    assert!(r.samples.iter().all(|s| s.status.is_none()));
}

/// A closed-model user facing a refused port backs off (10 ms doubling to 1 s) instead of
/// spinning: over 1.5 s two users make about 8 attempts each, not thousands, and the run still
/// fails on them and ends on time.
#[tokio::test]
async fn a_refused_port_is_retried_with_backoff_not_in_a_spin() {
    let port = closed_port().expect("closed port");
    let s = closed(
        &format!("http://127.0.0.1:{port}/"),
        2,
        Duration::from_millis(1500),
    );
    let started = std::time::Instant::now();
    let r = run(&s).await;
    let took = started.elapsed();
    let n = r.samples.len();
    assert!((4..=40).contains(&n), "{n} connect attempts in 1.5 s");
    assert_eq!(r.errors(ErrorClass::Connect), n);
    assert!(took < Duration::from_secs(4), "took {took:?}");
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_within_the_request_timeout() {
    let hang = HangingListener::start().await.expect("listener");
    let mut s = closed(
        &format!("http://{}/", hang.addr()),
        2,
        Duration::from_secs(10),
    )
    .timeout(ms(300));
    s.closed = s.closed.map(|c| c.iterations(4));
    let started = Instant::now();
    let r = run(&s).await;
    assert_eq!(r.samples.len(), 4);
    assert_eq!(r.errors(ErrorClass::Timeout), 4);
    assert!(
        r.samples
            .iter()
            .all(|s| s.service >= ms(300) && s.service < ms(1000))
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn statuses_4xx_and_5xx_are_classified_and_their_bodies_read() {
    let nginx = Nginx::builder()
        .location("location = /missing { return 404 'gone'; }")
        .location("location = /fail { return 503 'busy'; }")
        .location("location = /moved { return 302 /; }")
        .start()
        .await
        .expect("nginx");
    for (path, class, status) in [
        ("/missing", ErrorClass::Http4xx, 404),
        ("/fail", ErrorClass::Http5xx, 503),
        ("/moved", ErrorClass::HttpOther, 302),
    ] {
        let mut s = closed(&format!("{}{path}", nginx.url()), 2, Duration::from_secs(5));
        s.closed = s.closed.map(|c| c.iterations(10));
        let r = run(&s).await;
        assert_eq!(r.errors(class), 10, "{path}");
        assert!(
            r.samples
                .iter()
                .all(|s| s.status == Some(status) && s.bytes > 0)
        );
    }
}

#[tokio::test]
async fn a_body_cut_off_is_a_body_error_and_a_closed_connection_is_reopened() {
    let addr = raw_server(|_| Reply::CutBody).await;
    let mut s = closed(&format!("http://{addr}/"), 1, Duration::from_secs(5));
    s.closed = s.closed.map(|c| c.iterations(5));
    let r = run(&s).await;
    assert_eq!(r.errors(ErrorClass::Body), 5);
    assert!(r.samples.iter().all(|s| s.status == Some(200)));

    // A server closing after every answer: each request gets a new connection, no error.
    let addr = raw_server(|_| Reply::OkThenClose).await;
    let mut s = closed(&format!("http://{addr}/"), 2, Duration::from_secs(5));
    s.closed = s.closed.map(|c| c.iterations(50));
    let r = run(&s).await;
    assert_eq!(r.ok(), 50, "{:?}", r.samples.iter().find(|s| !s.is_ok()));
}

/// A free port on 127.0.0.1 (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

#[tokio::test]
async fn http2_prior_knowledge_against_nginx_h2c() {
    let port = free_port();
    let nginx = Nginx::builder()
        .http_snippet(format!(
            "server {{ listen 127.0.0.1:{port} http2; \
             location / {{ default_type text/plain; return 200 'h2c'; }} }}"
        ))
        .start()
        .await
        .expect("nginx");
    let url = format!("http://127.0.0.1:{port}/");
    let mut s = closed(&url, 4, Duration::from_secs(10)).protocol(Protocol::Http2);
    s.closed = s.closed.map(|c| c.iterations(400));
    let r = run(&s).await;
    assert_eq!(r.ok(), 400, "{:?}", r.samples.iter().find(|s| !s.is_ok()));
    assert!(r.samples.iter().all(|s| s.bytes == 3));

    let s =
        open(&url, OpenModel::constant(100.0, Duration::from_secs(1))).protocol(Protocol::Http2);
    let r = run(&s).await;
    assert_eq!(r.ok(), 100);

    // The same port spoken to in HTTP/1.1 does not answer in HTTP/1.1: every request fails.
    let mut s = closed(&url, 1, Duration::from_secs(5)).timeout(ms(1000));
    s.closed = s.closed.map(|c| c.iterations(3));
    let r = run(&s).await;
    assert_eq!(r.ok(), 0);
    assert_eq!(r.samples.len(), 3);
    drop(nginx);
}

#[tokio::test]
async fn cancel_stops_a_run_at_once_and_counts_the_abandoned_requests() {
    let hang = HangingListener::start().await.expect("listener");
    let s = closed(
        &format!("http://{}/", hang.addr()),
        3,
        Duration::from_secs(60),
    )
    .timeout(Duration::from_secs(30));
    let plan = Plan::from_scenario(&s, Bodies::none()).expect("plan");
    let control = Control::new();
    let cancel = control.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(ms(300)).await;
        cancel.cancel();
    });
    let started = Instant::now();
    let r = run_with(&plan, &control).await;
    assert!(started.elapsed() < ms(1500), "{:?}", started.elapsed());
    assert!(r.finished.cancelled);
    assert_eq!(r.finished.abandoned, 3);
    assert!(r.samples.is_empty());
    assert_eq!(control.live.in_flight.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn bodies_headers_and_api_key_are_sent() {
    // nginx answers 200 only when the request carries what the plan says.
    let nginx = Nginx::builder()
        .location(
            "location = /echo { \
             if ($http_authorization != 'Bearer sk-test-0123456789') { return 401; } \
             if ($content_type != 'application/json') { return 415; } \
             if ($http_x_extra != '1') { return 400; } \
             if ($content_length != '2') { return 411; } \
             return 200 'echo'; }",
        )
        .start()
        .await
        .expect("nginx");
    let url = format!("{}/echo", nginx.url());
    let mut s = closed(&url, 1, Duration::from_secs(5)).request(
        RequestConfig::post(&url, "{}")
            .api_key(citadel_itest_core::config::Secret::inline(
                "sk-test-0123456789",
            ))
            .header("x-extra", "1"),
    );
    s.closed = s.closed.map(|c| c.iterations(3));
    let plan = Plan::from_scenario(&s, Bodies::none()).expect("plan");
    assert_eq!(plan.method(), "POST");
    assert_eq!(plan.headers()["content-type"], "application/json");
    assert!(plan.headers()["authorization"].is_sensitive());
    assert!(!format!("{plan:?}").contains("sk-test-0123456789"));
    let r = run_with(&plan, &Control::new()).await;
    assert_eq!(r.ok(), 3, "{:?}", r.samples.first());

    let bodies = Bodies::new(
        vec!["a".into(), "bb".into(), "ccc".into()],
        citadel_itest_load::config::PromptOrder::Sequential,
        0,
    );
    assert_eq!(bodies.pick(4), "bb");
    let random = Bodies::new(
        vec!["a".into(), "bb".into(), "ccc".into()],
        citadel_itest_load::config::PromptOrder::Random,
        9,
    );
    let picks: Vec<_> = (0..30).map(|k| random.pick(k)).collect();
    assert_eq!(picks, (0..30).map(|k| random.pick(k)).collect::<Vec<_>>());
    assert!(picks.iter().any(|b| b == "a") && picks.iter().any(|b| b == "ccc"));
}

#[tokio::test]
async fn bad_plans_are_clear_errors() {
    let s = closed("https://127.0.0.1:1/", 1, ms(10));
    let e = Plan::from_scenario(&s, Bodies::none()).unwrap_err();
    assert!(e.to_string().contains("https"), "{e}");
    let s = closed("not a url", 1, ms(10));
    assert!(Plan::from_scenario(&s, Bodies::none()).is_err());
    let mut s = closed("http://127.0.0.1:1/", 1, ms(10));
    s.closed = None;
    let e = Plan::from_scenario(&s, Bodies::none()).unwrap_err();
    assert!(e.to_string().contains("model"), "{e}");
}

fn stream_scenario(model: &ModelServer, fault: Option<&str>) -> ScenarioConfig {
    let url = format!("{}/chat/completions", model.base_url());
    let body = r#"{"model":"fixture-chat","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"count"}]}"#;
    let mut request = RequestConfig::post(&url, body);
    if let Some(f) = fault {
        request = request.header("x-fixture-fault", f);
    }
    let mut s = closed(&url, 2, Duration::from_secs(10))
        .request(request)
        .stream(true)
        .stream_stall(ms(500));
    s.closed = s.closed.map(|c| c.iterations(6));
    s
}

#[tokio::test]
async fn streams_are_timed_and_a_stream_without_done_is_a_stream_error() {
    let model = ModelServer::builder()
        .ttft(ms(30))
        .itl(ms(5))
        .completion_tokens(8)
        .start()
        .await
        .expect("model server");
    let r = run(&stream_scenario(&model, None)).await;
    assert_eq!(r.ok(), 6, "{:?}", r.samples.iter().find(|s| !s.is_ok()));
    for s in &r.samples {
        let st = s.stream.as_ref().expect("a stream sample");
        assert_eq!(st.end, "done");
        assert_eq!(st.output_tokens, 8);
        let ttft = st.ttft.expect("a first token");
        assert!(ttft >= ms(30) && ttft < ms(200), "{ttft:?}");
        assert!(s.service >= ms(60), "{:?}", s.service);
        assert!(s.bytes > 100);
    }

    let r = run(&stream_scenario(&model, Some("cut:3"))).await;
    assert_eq!(r.errors(ErrorClass::Stream), 6);
    assert!(
        r.samples
            .iter()
            .all(|s| s.stream.as_ref().is_some_and(|st| st.end == "cut off"))
    );

    let r = run(&stream_scenario(&model, Some("sse_error"))).await;
    assert_eq!(r.errors(ErrorClass::Stream), 6);
    // A stream that ended cleanly without [DONE] leaves the connection usable: no new
    // failures after it.
    assert!(r.samples.iter().all(|s| s.status == Some(200)));

    // An error status on a stream request is an HTTP error, its body read as a body.
    let r = run(&stream_scenario(&model, Some("unavailable"))).await;
    assert_eq!(r.errors(ErrorClass::Http5xx), 6);
    assert!(r.samples.iter().all(|s| s.stream.is_none()));
}

#[tokio::test]
async fn a_connection_closed_while_idle_is_reopened_without_an_error() {
    // The server closes a keep-alive connection after 100 ms of silence; arrivals come every
    // 250 ms on one connection, so each finds its connection closed by the peer.
    let addr = raw_server(|_| Reply::OkIdleClose).await;
    let s = open(
        &format!("http://{addr}/"),
        OpenModel::constant(4.0, Duration::from_secs(2)).max_connections(1),
    );
    let r = run(&s).await;
    assert_eq!(r.samples.len(), 8);
    assert_eq!(r.ok(), 8, "{:?}", r.samples.iter().find(|s| !s.is_ok()));
}

#[tokio::test]
async fn http2_open_model_multiplexes_streams_on_one_connection() {
    // nginx speaks h2c to the engine and proxies to the model server, which answers each
    // chat completion after 200 ms.
    let model = ModelServer::builder()
        .ttft(ms(200))
        .start()
        .await
        .expect("model server");
    let port = free_port();
    let nginx = Nginx::builder()
        .http_snippet(format!(
            "server {{ listen 127.0.0.1:{port} http2; \
             location / {{ proxy_pass http://127.0.0.1:{}; }} }}",
            model.port()
        ))
        .start()
        .await
        .expect("nginx");
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    let body =
        r#"{"model":"fixture-chat","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}"#;
    // 50/s on one connection with answers taking 200 ms: about 10 streams at once.
    let s = open(
        &url,
        OpenModel::constant(50.0, Duration::from_secs(1))
            .max_connections(1)
            .max_lag(ms(100)),
    )
    .protocol(Protocol::Http2)
    .request(RequestConfig::post(&url, body));
    let r = run(&s).await;
    assert!(r.dropped.is_empty(), "{} dropped", r.dropped.len());
    assert_eq!(r.ok(), 50, "{:?}", r.samples.iter().find(|s| !s.is_ok()));
    let p50 = r.percentile(0.5, |s| s.latency);
    assert!(p50 >= ms(200) && p50 < ms(400), "{p50:?}");
    // Sent on schedule, not one after the other.
    let lag = r.percentile(1.0, |s| s.latency.saturating_sub(s.service));
    assert!(lag < ms(100), "{lag:?}");
    assert!(r.finished.elapsed < ms(2500), "{:?}", r.finished.elapsed);
    drop(nginx);
}

#[test]
fn the_plan_sends_one_host_and_the_url_path_and_query() {
    let s = closed("http://localhost:8080/v1/x?a=1&b=2", 1, ms(10));
    let plan = Plan::from_scenario(&s, Bodies::none()).expect("plan");
    assert_eq!(plan.method(), "GET");
    assert_eq!(plan.uri(), "/v1/x?a=1&b=2");
    assert_eq!(plan.headers()["host"], "localhost:8080");
    assert!(plan.addr().ip().is_loopback());
    assert!(!plan.headers().contains_key("content-type"));

    let s = closed("http://127.0.0.1:8080/", 1, ms(10))
        .request(RequestConfig::get("http://127.0.0.1:8080/").header("host", "api.internal"));
    let plan = Plan::from_scenario(&s, Bodies::none()).expect("plan");
    assert_eq!(plan.headers().get_all("host").iter().count(), 1);
    assert_eq!(plan.headers()["host"], "api.internal");

    let s = closed("http://127.0.0.1:8080/p", 1, ms(10)).protocol(Protocol::Http2);
    let plan = Plan::from_scenario(&s, Bodies::none()).expect("plan");
    assert_eq!(plan.uri(), "http://127.0.0.1:8080/p");
    assert!(!plan.headers().contains_key("host"));
}

#[tokio::test]
async fn live_counters_follow_the_run_while_it_goes() {
    let nginx = Nginx::builder().start().await.expect("nginx");
    let s = open(
        &format!("{}/", nginx.url()),
        OpenModel::constant(20.0, Duration::from_secs(2)),
    );
    let plan = Plan::from_scenario(&s, Bodies::none()).expect("plan");
    let control = Control::new();
    let live = control.live.clone();
    let watch = tokio::spawn(async move {
        tokio::time::sleep(ms(1000)).await;
        (
            live.sent.load(Ordering::Relaxed),
            live.completed.load(Ordering::Relaxed),
        )
    });
    let r = run_with(&plan, &control).await;
    let (sent, completed) = watch.await.expect("watcher");
    // About 20 due in the first second; the counters lag by at most 100 ms.
    assert!((15..=21).contains(&sent), "{sent}");
    assert!((15..=21).contains(&completed), "{completed}");
    assert_eq!(r.samples.len(), 40);
}
