//! Results of several processes merge exactly: the same samples recorded in one recorder,
//! or split between two runs finished and serialised separately and then merged, give the
//! same histograms, percentiles, counters and per-second series. Foreign or corrupt inputs
//! fail with a message naming the input and field.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use citadel_itest_load::config::GoodputConfig;
use citadel_itest_load::metrics::{Recorder, RunMeta, Shared, finish};
use citadel_itest_load::result::{HistMetric, LoadResult, MAX_RESULT_BYTES, MergeError, ReadError};
use citadel_itest_load::sample::{ErrorClass, Sample, SampleSink, StreamSample};

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

enum Event {
    Sample(Sample),
    Dropped(Duration),
}

/// `n` events over `secs` seconds: latencies from 1 ms to ~2 s with a long tail, some
/// errors of several classes, some dropped iterations, and (with `stream`) SSE timings.
fn events(seed: u64, n: u64, secs: u64, stream: bool) -> Vec<Event> {
    let mut rng = Rng(seed);
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let intended = Duration::from_micros(i * secs * 1_000_000 / n);
        if rng.below(200) == 0 {
            out.push(Event::Dropped(intended));
            continue;
        }
        let base = 1_000 + rng.below(40_000);
        let tail = if rng.below(50) == 0 {
            rng.below(2_000_000)
        } else {
            0
        };
        let latency = Duration::from_micros(base + tail);
        let service = Duration::from_micros(base);
        let mut s = Sample::new(intended, latency, service);
        s.bytes = 100 + rng.below(900);
        match rng.below(40) {
            0 => s.error = Some(ErrorClass::Timeout),
            1 => s.error = Some(ErrorClass::Connect),
            2 => {
                s.status = Some(503);
                s.error = Some(ErrorClass::Http5xx);
            }
            _ => s.status = Some(200),
        }
        if stream && s.status == Some(200) {
            let tokens = 1 + rng.below(64);
            let ttft = Duration::from_micros(500 + rng.below(base));
            let itl = (1..tokens)
                .map(|_| Duration::from_micros(200 + rng.below(5_000)))
                .collect();
            let cut = rng.below(30) == 0;
            if cut {
                s.error = Some(ErrorClass::Stream);
            }
            let mut st = StreamSample::default();
            st.ttft = Some(ttft);
            st.itl = itl;
            st.e2e = service;
            st.output_tokens = tokens;
            st.tokens_from_usage = rng.below(2) == 0;
            st.end = if cut { "cut off" } else { "done" };
            s.stream = Some(st);
        }
        out.push(Event::Sample(s));
    }
    out
}

fn goodput() -> GoodputConfig {
    let mut g = GoodputConfig::default();
    g.ttft = Some(Duration::from_millis(20));
    g
}

/// Record `events` in `workers` recorders of one run (event i goes to worker i % workers)
/// and finish it.
fn run(events: &[&Event], workers: usize, stream: bool, meta: RunMeta) -> LoadResult {
    let shared = Arc::new(Shared::new(goodput(), stream));
    let mut recs: Vec<Recorder> = (0..workers)
        .map(|_| Recorder::new(shared.clone()))
        .collect();
    for (i, e) in events.iter().enumerate() {
        let r = &mut recs[i % workers];
        match e {
            Event::Sample(s) => r.record(s),
            Event::Dropped(d) => r.dropped(*d),
        }
    }
    finish(recs, &shared, meta)
}

fn meta(scenario: &str, secs: u64) -> RunMeta {
    RunMeta::new(
        scenario,
        "open 500/s for 10s",
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        Duration::from_secs(secs),
    )
}

fn through_json(r: &LoadResult) -> LoadResult {
    let bytes = serde_json::to_vec(r).unwrap();
    LoadResult::from_json_slice(&bytes).unwrap()
}

fn recorded(h: &hdrhistogram::Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

fn assert_same_measurements(one: &LoadResult, merged: &LoadResult) {
    assert_eq!(merged.counts, one.counts);
    assert_eq!(merged.derived, one.derived);
    assert_eq!(merged.metrics, one.metrics, "percentile tables differ");
    assert_eq!(merged.buckets, one.buckets);
    assert_eq!(merged.stream, one.stream);
    for m in HistMetric::ALL {
        let a = one.histogram(m).unwrap();
        let b = merged.histogram(m).unwrap();
        match (a, b) {
            (Some(a), Some(b)) => {
                assert_eq!(a.len(), b.len(), "{}", m.name());
                assert_eq!(recorded(&a), recorded(&b), "{}", m.name());
            }
            (None, None) => {}
            (a, b) => panic!("{}: {:?} vs {:?}", m.name(), a.is_some(), b.is_some()),
        }
    }
    assert_eq!(merged.series.seconds.len(), one.series.seconds.len());
    for (a, b) in one.series.seconds.iter().zip(&merged.series.seconds) {
        assert_eq!(
            (a.t, a.requests, a.ok, a.errors, a.dropped),
            (b.t, b.requests, b.ok, b.errors, b.dropped)
        );
        assert_eq!(
            (a.p50_ms, a.p95_ms, a.p99_ms),
            (b.p50_ms, b.p95_ms, b.p99_ms)
        );
    }
}

#[test]
fn one_recorder_and_two_merged_runs_give_identical_histograms_and_percentiles() {
    for stream in [false, true] {
        let all = events(7, 20_000, 10, stream);
        let refs: Vec<&Event> = all.iter().collect();
        let one = through_json(&run(&refs, 1, stream, meta("chat", 10)));
        // Split between two processes (every other sample), each with two workers.
        let a: Vec<&Event> = all.iter().step_by(2).collect();
        let b: Vec<&Event> = all.iter().skip(1).step_by(2).collect();
        let ra = through_json(&run(&a, 2, stream, meta("chat", 10)));
        let rb = through_json(&run(&b, 2, stream, meta("chat", 10)));
        assert_ne!(ra.counts.requests, 0);
        assert_ne!(ra.metrics, one.metrics, "the halves alone must differ");
        let merged = through_json(&LoadResult::merge(&[ra, rb]).unwrap());
        assert_eq!(merged.runs, 2);
        assert_eq!(merged.duration_s, 10.0);
        assert_eq!(merged.started_at, one.started_at);
        assert_same_measurements(&one, &merged);
        assert!(one.counts.errors.len() >= 3, "{:?}", one.counts.errors);
        assert!(one.counts.dropped > 0);
        if stream {
            let s = merged.stream.as_ref().unwrap();
            assert_eq!(s.token_source.as_deref(), Some("mixed"));
            assert!(s.goodput > 0 && s.goodput < s.completed);
            assert!(s.ends.contains_key("cut off"));
        }
    }
}

#[test]
fn runs_of_different_lengths_align_by_offset_and_take_the_longest_duration() {
    let long = events(1, 3_000, 6, false);
    let short = events(2, 1_000, 2, false);
    let r_long = run(&long.iter().collect::<Vec<_>>(), 1, false, meta("s", 6));
    let mut m = meta("s", 2);
    m.started_at += Duration::from_secs(3);
    let r_short = run(&short.iter().collect::<Vec<_>>(), 1, false, m);
    let merged = LoadResult::merge(&[r_short.clone(), r_long.clone()]).unwrap();
    assert_eq!(merged.duration_s, 6.0);
    assert_eq!(merged.started_at, r_long.started_at, "the earliest start");
    let requests = r_long.counts.requests + r_short.counts.requests;
    assert_eq!(merged.counts.requests, requests);
    assert_eq!(merged.derived.rps, Some(requests as f64 / 6.0));
    let s0 = r_long.series.seconds[0].requests + r_short.series.seconds[0].requests;
    assert_eq!(merged.series.seconds[0].requests, s0);
    assert_eq!(
        merged.series.seconds[5].requests,
        r_long.series.seconds[5].requests
    );
}

#[test]
fn merging_another_scenario_fails_naming_both() {
    let e = events(3, 200, 1, false);
    let refs: Vec<&Event> = e.iter().collect();
    let a = run(&refs, 1, false, meta("chat", 1));
    let b = run(&refs, 1, false, meta("embeddings", 1));
    let err = LoadResult::merge(&[a.clone(), b]).unwrap_err();
    assert!(matches!(err, MergeError::Input { index: 1, .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with("input 2: scenario:"), "{msg}");
    assert!(
        msg.contains("`embeddings`") && msg.contains("`chat`"),
        "{msg}"
    );
    assert_eq!(LoadResult::merge(&[]).unwrap_err(), MergeError::Empty);
    let mut other = a.clone();
    other.schema = "citadel-itest.load/v9".into();
    let msg = LoadResult::merge(&[a, other]).unwrap_err().to_string();
    assert!(msg.contains("input 2: schema"), "{msg}");
}

#[test]
fn corrupt_histograms_fail_clearly_without_panic() {
    let e = events(4, 500, 2, true);
    let good = run(&e.iter().collect::<Vec<_>>(), 1, true, meta("chat", 2));
    let json: serde_json::Value = serde_json::to_value(&good).unwrap();

    let read = |v: &serde_json::Value| {
        LoadResult::from_json_slice(&serde_json::to_vec(v).unwrap()).map(|_| ())
    };
    let set = |path: &[&str], to: serde_json::Value| {
        let mut v = json.clone();
        let mut at = &mut v;
        for p in path {
            at = match p.parse::<usize>() {
                Ok(i) => &mut at[i],
                Err(_) => &mut at[*p],
            };
        }
        *at = to;
        v
    };

    let bad = set(
        &["histograms", "metrics", "ttft", "data"],
        "not base64!".into(),
    );
    let err = read(&bad).unwrap_err().to_string();
    assert!(err.contains("histograms.metrics.ttft.data"), "{err}");
    assert!(err.contains("base64"), "{err}");

    let bad = set(&["histograms", "metrics", "e2e", "data"], "AAAA".into());
    let err = read(&bad).unwrap_err().to_string();
    assert!(
        err.contains("histograms.metrics.e2e.data") && err.contains("V2"),
        "{err}"
    );

    let bad = set(&["series", "seconds", "1", "histogram"], "SGVsbG8=".into());
    let err = read(&bad).unwrap_err().to_string();
    assert!(err.contains("series.seconds[1].histogram"), "{err}");

    let bad = set(&["series", "seconds", "1", "t"], 0.into());
    let err = read(&bad).unwrap_err().to_string();
    assert!(
        err.contains("series.seconds[1].t: 0 is not after the previous second"),
        "{err}"
    );
    let bad = set(&["series", "seconds", "1", "t"], u64::MAX.into());
    let err = read(&bad).unwrap_err().to_string();
    assert!(err.contains("series.seconds[1].t"), "{err}");

    let bad = set(&["counts", "requests"], 5.into());
    let err = read(&bad).unwrap_err().to_string();
    assert!(
        err.contains("http_req_duration") && err.contains("counts.requests is 5"),
        "{err}"
    );

    let bad = set(&["histograms", "encoding"], "hdr-v3".into());
    assert!(
        read(&bad)
            .unwrap_err()
            .to_string()
            .contains("histograms.encoding")
    );

    // Every byte of a real encoding flipped in turn: an error or a histogram, never a panic.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let data = good.histograms.metrics["http_req_duration"].data.clone();
    let bytes = b64.decode(&data).unwrap();
    let mut rejected = 0;
    let mut flipped = good.clone();
    for i in 0..bytes.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[i] ^= flip;
            let entry = flipped.histograms.metrics.get_mut("http_req_duration");
            entry.unwrap().data = b64.encode(&b);
            if flipped.histogram(HistMetric::Duration).is_err() {
                rejected += 1;
            }
        }
    }
    // The header's length, digits, lowest value and cookie are checked; a flipped count
    // decodes (and is caught by the count check on reading a file, tested above).
    assert!(
        rejected >= 3 * 12,
        "corrupt headers are caught ({rejected})"
    );

    // In memory, merge names the input.
    let mut broken = good.clone();
    broken
        .histograms
        .metrics
        .get_mut("itl")
        .unwrap()
        .data
        .truncate(12);
    let err = LoadResult::merge(&[good, broken]).unwrap_err().to_string();
    assert!(
        err.starts_with("input 2: histograms.metrics.itl.data:"),
        "{err}"
    );
}

#[test]
fn foreign_oversized_and_interim_inputs_are_refused() {
    let err = LoadResult::from_json_slice(b"{\"schema\":\"citadel-itest.report/v1\"}").unwrap_err();
    assert!(
        err.to_string()
            .contains("schema: \"citadel-itest.report/v1\" is not \"citadel-itest.load/v1\""),
        "{err}"
    );
    let err = LoadResult::from_json_slice(b"{\"results\":[]}").unwrap_err();
    assert!(err.to_string().contains("schema: missing"), "{err}");
    let err = LoadResult::from_json_slice(b"not json").unwrap_err();
    assert!(matches!(err, ReadError::Json(_)), "{err}");
    let big = vec![0u8; MAX_RESULT_BYTES as usize + 1];
    let err = LoadResult::from_json_slice(&big).unwrap_err();
    assert!(matches!(err, ReadError::TooLarge { .. }), "{err}");

    let shared = Arc::new(Shared::new(GoodputConfig::default(), false));
    let mut r = Recorder::new(shared.clone());
    for e in events(5, 300, 3, false) {
        if let Event::Sample(s) = e {
            r.record(&s);
        }
    }
    let mut interim = shared.interim(Duration::from_secs(3));
    interim.scenario = "s".into();
    let done = finish(vec![r], &shared, meta("s", 3));
    let err = LoadResult::merge(&[done, interim]).unwrap_err().to_string();
    assert!(err.contains("input 2") && err.contains("interim"), "{err}");
}

/// The sizes quoted in docs/reports.md: a minute at 500 requests/s.
#[test]
fn a_minute_at_500_rps_stays_small() {
    for stream in [false, true] {
        let e = events(9, 30_000, 60, stream);
        let shared = Arc::new(Shared::new(goodput(), stream));
        let mut r = Recorder::new(shared.clone());
        for ev in &e {
            match ev {
                Event::Sample(s) => r.record(s),
                Event::Dropped(d) => r.dropped(*d),
            }
        }
        let recorder_bytes = r.heap_bytes();
        let shared_bytes = shared.heap_bytes();
        let result = finish(vec![r], &shared, meta("s", 60));
        let json = serde_json::to_vec(&result).unwrap();
        let pretty = serde_json::to_vec_pretty(&result).unwrap();
        eprintln!(
            "stream={stream}: recorder {recorder_bytes} B, shared {shared_bytes} B, \
             result {} B compact / {} B pretty",
            json.len(),
            pretty.len()
        );
        assert!(recorder_bytes < 2 * 1024 * 1024);
        assert!(json.len() < 256 * 1024);
        assert!((60..=62).contains(&result.series.seconds.len()));
    }
}
