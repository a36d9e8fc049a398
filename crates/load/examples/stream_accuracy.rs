//! How exactly the load engine measures LLM streams: the testkit model server streams with a
//! known time to first token and inter-token latency (no jitter), N streams run at once (one
//! connection each), and the medians of what the engine measured are compared with the truth.
//!
//! ```text
//! cargo run --release -p citadel-itest-load --example stream_accuracy                 # 1000 streams, engine
//! cargo run --release -p citadel-itest-load --example stream_accuracy -- streams 200 tokens 16
//! cargo run --release -p citadel-itest-load --example stream_accuracy -- tasks        # read_sse in plain tasks
//! ```
//!
//! `engine` (default) runs the closed model with one virtual user per stream and one
//! iteration each through `engine::run`, recording every sample; `tasks` opens the
//! connections itself (one tokio task each) and reads with `stream::read_sse` directly.
//! Options: `streams N` (1000), `tokens N` (32), `ttft MS` (50), `itl MS` (10).
//! Exits non-zero when a stream did not end `done` or a median is more than 2 ms off.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use citadel_itest_load::config::{
    ClosedModel, GoodputConfig, LoadModel, OpenModel, RequestConfig, ScenarioConfig,
};
use citadel_itest_load::engine::{self, Bodies, Control, Plan};
use citadel_itest_load::metrics::{self, Recorder, RunMeta, Shared};
use citadel_itest_load::sample::{Sample, SampleSink, StreamSample};
use citadel_itest_load::stream::read_sse;
use citadel_itest_openai::{StreamLimits, StreamTracker};
use citadel_itest_testkit::ModelServer;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The most a median may be off.
const TARGET: Duration = Duration::from_millis(2);

struct Options {
    streams: usize,
    tokens: usize,
    ttft: u64,
    itl: u64,
    tasks: bool,
    /// Spread the sends over this many ms (open model) instead of sending all at once.
    ramp: Option<u64>,
}

fn options() -> Result<Options, Error> {
    let mut o = Options {
        streams: 1000,
        tokens: 32,
        ttft: 50,
        itl: 10,
        tasks: false,
        ramp: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num =
            || -> Result<u64, Error> { Ok(args.next().ok_or("missing number")?.parse::<u64>()?) };
        match a.as_str() {
            "streams" => o.streams = num()? as usize,
            "tokens" => o.tokens = num()? as usize,
            "ttft" => o.ttft = num()?,
            "itl" => o.itl = num()?,
            "tasks" => o.tasks = true,
            "ramp" => o.ramp = Some(num()?),
            "engine" => o.tasks = false,
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    if o.streams == 0 || o.tokens < 2 {
        return Err("need at least 1 stream and 2 tokens".into());
    }
    Ok(o)
}

fn body() -> String {
    serde_json::json!({
        "model": "fixture-chat",
        "messages": [{"role": "user", "content": "time me"}],
        "stream": true,
        "stream_options": {"include_usage": true},
    })
    .to_string()
}

/// The run's real recorder, and every sample kept for the exact medians.
struct Both {
    recorder: Recorder,
    samples: Vec<Sample>,
}

impl SampleSink for Both {
    fn record(&mut self, sample: &Sample) {
        self.recorder.record(sample);
        self.samples.push(sample.clone());
    }

    fn dropped(&mut self, intended: Duration) {
        self.recorder.dropped(intended);
    }
}

/// Samples through the engine; prints the recorder's medians.
async fn through_engine(url: &str, o: &Options) -> Result<Vec<Sample>, Error> {
    let model = match o.ramp {
        None => LoadModel::Closed(
            ClosedModel::new(o.streams, Duration::from_secs(60)).iterations(o.streams as u64),
        ),
        Some(ramp) => {
            let secs = ramp as f64 / 1000.0;
            LoadModel::Open(
                OpenModel::constant(o.streams as f64 / secs, Duration::from_millis(ramp))
                    .max_connections(o.streams)
                    .max_lag(Duration::from_secs(10)),
            )
        }
    };
    let scenario = ScenarioConfig::new("accuracy", url, model)
        .request(RequestConfig::post(url, body()))
        .stream(true)
        .timeout(Duration::from_secs(30));
    let plan = Plan::from_scenario(&scenario, Bodies::none())?;
    let shared = Arc::new(Shared::new(GoodputConfig::default(), true));
    let make = |_| Both {
        recorder: Recorder::new(shared.clone()),
        samples: Vec::new(),
    };
    let done = engine::run(&plan, make, &Control::new()).await?;
    let mut samples = Vec::new();
    let mut recorders = Vec::new();
    for sink in done.sinks {
        samples.extend(sink.samples);
        recorders.push(sink.recorder);
    }
    let meta = RunMeta::new("accuracy", "accuracy", done.started_at, done.elapsed);
    let result = metrics::finish(recorders, &shared, meta);
    let p50 = |name: &str| {
        result
            .metrics
            .get(name)
            .and_then(|p| p.p50)
            .unwrap_or(f64::NAN)
    };
    println!(
        "  recorder (HDR histograms) p50: TTFT {:.3} ms, ITL {:.3} ms, e2e {:.3} ms",
        p50("ttft"),
        p50("itl"),
        p50("e2e")
    );
    Ok(samples)
}

/// One stream over its own connection, read with `read_sse`.
async fn one_stream(
    addr: SocketAddr,
    start: Instant,
    at: Instant,
    limits: StreamLimits,
) -> Result<Sample, Error> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    tokio::time::sleep_until(at.into()).await;
    let req = http::Request::post("/v1/chat/completions")
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body())))?;
    let sent = Instant::now();
    let resp = sender.send_request(req).await?;
    let (stream, bytes) = read_sse(resp.into_body(), sent, &limits).await;
    let service = sent.elapsed();
    let mut sample = Sample::new(sent - start, service, service);
    sample.bytes = bytes;
    sample.stream = Some(stream);
    Ok(sample)
}

async fn through_tasks(addr: SocketAddr, o: &Options) -> Result<Vec<Sample>, Error> {
    let limits = StreamLimits::default()
        .stall(Duration::from_secs(10))
        .max_duration(Duration::from_secs(30));
    let start = Instant::now();
    // Connections first (1 s), then the sends: at once, or spread over the ramp.
    let first = start + Duration::from_secs(1);
    let step = Duration::from_millis(o.ramp.unwrap_or(0)) / o.streams as u32;
    let tasks: Vec<_> = (0..o.streams)
        .map(|i| tokio::spawn(one_stream(addr, start, first + step * i as u32, limits)))
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn describe(name: &str, truth: Duration, mut v: Vec<Duration>) -> Duration {
    v.sort();
    let p50 = percentile(&v, 0.5);
    println!(
        "  {name:<5} truth {:>5.1} ms   p50 {:>7.3}  p90 {:>7.3}  p99 {:>7.3}  max {:>7.3} ms   median off by {:+.3} ms  (n={})",
        ms(truth),
        ms(p50),
        ms(percentile(&v, 0.9)),
        ms(percentile(&v, 0.99)),
        ms(v[v.len() - 1]),
        ms(p50) - ms(truth),
        v.len()
    );
    p50.abs_diff(truth)
}

/// The most streams in flight at one time.
fn peak_concurrency(samples: &[Sample]) -> usize {
    let mut edges: Vec<(Duration, i32)> = samples
        .iter()
        .flat_map(|s| [(s.intended, 1), (s.intended + s.service, -1)])
        .collect();
    edges.sort();
    let (mut now, mut peak) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        peak = peak.max(now);
    }
    peak as usize
}

/// The reader's own CPU cost: one content event pushed through the tracker, averaged.
fn reader_cost() {
    let event = br#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"fixture-chat","choices":[{"index":0,"delta":{"content":"word"},"finish_reason":null}]}

"#;
    let n = 200_000u32;
    let limits = StreamLimits::default()
        .max_content_bytes(0)
        .keep_arrivals(false);
    let t = Instant::now();
    let mut tracker = StreamTracker::new(t, &limits);
    for _ in 0..n {
        tracker.push(event, Instant::now());
    }
    tracker.push(b"data: [DONE]\n\n", Instant::now());
    let elapsed = t.elapsed();
    let report = tracker.finish();
    println!(
        "  reader cost: {:.2} us of CPU per content event ({} events, end {})",
        elapsed.as_secs_f64() * 1e6 / f64::from(n),
        report.events,
        report.end.class()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let o = options()?;
    let (ttft, itl) = (Duration::from_millis(o.ttft), Duration::from_millis(o.itl));
    let server = ModelServer::builder()
        .ttft(ttft)
        .itl(itl)
        .completion_tokens(o.tokens)
        .start()
        .await?;
    let url = format!("{}/v1/chat/completions", server.url());
    let how = match (o.tasks, o.ramp) {
        (true, _) => "read_sse in tokio tasks",
        (false, None) => "engine::run, closed model",
        (false, Some(_)) => "engine::run, open model",
    };
    let when = match o.ramp {
        None => "sent at once".to_string(),
        Some(ms) => format!("sends spread over {ms} ms"),
    };
    println!(
        "{} streams ({how}, {when}), {} tokens each, fixture ttft {} ms, itl {} ms, no jitter",
        o.streams, o.tokens, o.ttft, o.itl
    );
    println!(
        "  load average before: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    reader_cost();
    let wall = Instant::now();
    let samples = if o.tasks {
        through_tasks(server.addr(), &o).await?
    } else {
        through_engine(&url, &o).await?
    };
    let wall = wall.elapsed();
    let streams: Vec<&StreamSample> = samples.iter().filter_map(|s| s.stream.as_ref()).collect();
    let done = streams.iter().filter(|s| s.end == "done").count();
    let ok = samples.iter().filter(|s| s.is_ok()).count();
    let usage = streams.iter().filter(|s| s.tokens_from_usage).count();
    let right_tokens = streams
        .iter()
        .filter(|s| s.output_tokens == o.tokens as u64)
        .count();
    println!(
        "  {} samples, {ok} ok, {done} done, {usage} with usage tokens, {right_tokens} with {} tokens; peak {} in flight; wall {:.2} s",
        samples.len(),
        o.tokens,
        peak_concurrency(&samples),
        wall.as_secs_f64()
    );
    let ttfts: Vec<Duration> = streams.iter().filter_map(|s| s.ttft).collect();
    let gaps: Vec<Duration> = streams.iter().flat_map(|s| s.itl.iter().copied()).collect();
    if ttfts.is_empty() || gaps.is_empty() {
        return Err("no stream produced tokens".into());
    }
    let ttft_off = describe("TTFT", ttft, ttfts);
    let itl_off = describe("ITL", itl, gaps);
    let e2e_truth = ttft + itl * (o.tokens as u32 - 1);
    describe("e2e", e2e_truth, streams.iter().map(|s| s.e2e).collect());
    if done != samples.len() || samples.len() + 1 < o.streams {
        return Err(format!("{done} of {} streams ended done", samples.len()).into());
    }
    if ttft_off > TARGET || itl_off > TARGET {
        return Err(format!(
            "a median is more than {} ms off (TTFT {:.3} ms, ITL {:.3} ms)",
            ms(TARGET),
            ms(ttft_off),
            ms(itl_off)
        )
        .into());
    }
    println!("  both medians within {} ms of the truth", ms(TARGET));
    Ok(())
}
