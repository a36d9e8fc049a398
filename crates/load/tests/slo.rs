//! SLO thresholds: what parses, what does not and why, verdicts on real recorded results,
//! no samples failing, the defaults from `performance_targets`, and core measurements.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use citadel_itest_core::config::PerformanceTargets;
use citadel_itest_core::{Outcome, Unit};
use citadel_itest_load::config::GoodputConfig;
use citadel_itest_load::metrics::{Recorder, RunMeta, Shared, finish};
use citadel_itest_load::resources::ResourceSummary;
use citadel_itest_load::result::{HistMetric, LoadResult};
use citadel_itest_load::sample::{ErrorClass, Sample, SampleSink, StreamSample};
use citadel_itest_load::slo::{Metric, Op, Stat, Threshold, default_thresholds};

fn parse(t: &str) -> Threshold {
    Threshold::parse(t).unwrap_or_else(|e| panic!("{t}: {e}"))
}

fn parse_err(t: &str) -> String {
    match Threshold::parse(t) {
        Ok(th) => panic!("`{t}` parsed: {th:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_grammar_accepts_every_metric_with_its_units() {
    let t = parse("http_req_duration p95 < 200ms");
    assert_eq!(t.metric, Metric::Hist(HistMetric::Duration));
    assert_eq!((t.stat, t.op, t.limit), (Some(Stat::P95), Op::Lt, 200.0));
    let cases: &[(&str, f64)] = &[
        ("http_req_service p99.9 <= 1.5s", 1500.0),
        ("ttft p95 < 500ms", 500.0),
        ("ttft p(99) < 500ms", 500.0),
        ("itl p99.99 < 800us", 0.8),
        ("tpot med < 50ms", 50.0),
        ("e2e max < 2m", 120_000.0),
        ("e2e mean < 10 s", 10_000.0),
        ("output_tps p50 > 20", 20.0),
        ("output_tps min >= 5/s", 5.0),
        ("http_reqs >= 1000", 1000.0),
        ("rps > 50", 50.0),
        ("rps>50/s", 50.0),
        ("error_rate < 1%", 1.0),
        ("error_rate < 0.01", 1.0),
        ("errors == 0", 0.0),
        ("dropped_iterations == 0", 0.0),
        ("output_tokens_per_s > 100", 100.0),
        ("goodput > 95%", 95.0),
        ("goodput >= 0.9", 90.0),
        ("memory_mb max < 2048", 2048.0),
        ("memory_mb avg < 1.5GiB", 1536.0),
        ("cpu_percent avg < 50", 50.0),
        ("cpu_percent max < 180%", 180.0),
    ];
    for (text, limit) in cases {
        let t = parse(text);
        assert_eq!(t.limit, *limit, "{text}");
        assert_eq!(t.text, *text);
    }
    assert_eq!(parse("errors == 0").op, Op::Eq);
    assert_eq!(parse("rps >= 1").op, Op::Ge);
}

#[test]
fn bad_thresholds_say_what_is_wrong() {
    let cases: &[(&str, &str)] = &[
        ("latency p95 < 200ms", "unknown metric `latency`"),
        ("http_req_duration p97 < 200ms", "unknown statistic `p97`"),
        ("http_req_duration < 200ms", "needs a statistic"),
        ("memory_mb < 2048", "memory_mb needs a statistic"),
        (
            "cpu_percent p95 < 50",
            "unknown statistic `p95` for cpu_percent (use max or avg)",
        ),
        ("rps p95 > 50", "rps takes no statistic"),
        (
            "http_req_duration p95 < 200",
            "`200` needs a unit: us, ms, s or m",
        ),
        ("ttft p95 < 200kb", "`kb` is not a unit of ttft"),
        ("error_rate < 1ms", "`ms` is not a unit of error_rate"),
        ("error_rate < 5", "not a ratio between 0 and 1"),
        ("goodput > 120%", "over 100%"),
        ("http_reqs > 10/s", "`/s` is not a unit of http_reqs"),
        ("memory_mb max < 2TB", "`TB` is not a unit of memory_mb"),
        ("http_req_duration p95 200ms", "no comparison"),
        ("http_req_duration p95 = 200ms", "`=` is not a comparison"),
        ("rps != 5", "`!=` is not a comparison"),
        ("< 5", "no metric before `<`"),
        ("rps >", "no value after `>`"),
        ("rps > fast", "`fast` is not a number"),
        ("rps > 1.2.3", "`1.2.3` is not a number"),
        ("rps > -5", "at least 0"),
        (
            "http_req_duration p95 extra < 1ms",
            "is not `<metric> [<stat>]`",
        ),
    ];
    for (text, want) in cases {
        let e = parse_err(text);
        assert!(e.starts_with(&format!("threshold `{text}`: ")), "{e}");
        assert!(e.contains(want), "`{text}`: {e}\n  wanted: {want}");
    }
}

fn sample(at_ms: u64, latency_ms: u64) -> Sample {
    let l = Duration::from_millis(latency_ms);
    let mut s = Sample::new(Duration::from_millis(at_ms), l, l);
    s.status = Some(200);
    s
}

fn result_of(samples: &[Sample], dropped: u64, stream: bool, secs: u64) -> LoadResult {
    let shared = Arc::new(Shared::new(GoodputConfig::default(), stream));
    let mut r = Recorder::new(shared.clone());
    for s in samples {
        r.record(s);
    }
    for i in 0..dropped {
        r.dropped(Duration::from_millis(i));
    }
    let meta = RunMeta::new(
        "s",
        "closed 1 vu",
        SystemTime::UNIX_EPOCH,
        Duration::from_secs(secs),
    );
    finish(vec![r], &shared, meta)
}

/// 100 requests over 2 s: 94 at 20 ms, 6 at 300 ms; 2 of the fast ones failed with 500.
fn http_result() -> LoadResult {
    let mut samples: Vec<Sample> = (0..100)
        .map(|i| sample(i * 20, if i % 16 == 15 { 300 } else { 20 }))
        .collect();
    for s in samples.iter_mut().take(2) {
        s.status = Some(500);
        s.error = Some(ErrorClass::Http5xx);
    }
    result_of(&samples, 0, false, 2)
}

#[test]
fn verdicts_name_the_metric_the_value_and_the_threshold() {
    let r = http_result();
    assert_eq!(r.counts.requests, 100);
    let v = parse("http_req_duration p95 < 200ms").evaluate(&r);
    assert!(!v.passed);
    assert_eq!(
        v.message,
        "http_req_duration p95 = 300ms, threshold < 200ms"
    );
    assert_eq!(v.metric, "http_req_duration p95");
    assert_eq!(v.unit, "ms");
    assert_eq!(v.limit, 200.0);
    let observed = v.observed.unwrap();
    assert!((300.0..300.5).contains(&observed), "{observed}");

    let v = parse("http_req_duration p50 < 0.1s").evaluate(&r);
    assert!(v.passed, "{}", v.message);
    assert_eq!(
        v.message,
        "http_req_duration p50 = 20.02ms, threshold < 0.1s"
    );

    let v = parse("rps > 50").evaluate(&r);
    assert!(!v.passed);
    assert_eq!(v.message, "rps = 50/s, threshold > 50");
    assert!(parse("rps >= 50").evaluate(&r).passed);
    assert!(parse("http_reqs == 100").evaluate(&r).passed);

    let v = parse("error_rate < 1%").evaluate(&r);
    assert!(!v.passed);
    assert_eq!(v.message, "error_rate = 2%, threshold < 1%");
    assert_eq!(v.observed, Some(2.0));
    assert!(parse("error_rate <= 0.02").evaluate(&r).passed);
    assert!(!parse("errors == 0").evaluate(&r).passed);
    assert!(parse("errors == 2").evaluate(&r).passed);
    assert!(parse("dropped_iterations == 0").evaluate(&r).passed);
    let with_drops = result_of(&[sample(0, 1)], 3, false, 1);
    let v = parse("dropped_iterations == 0").evaluate(&with_drops);
    assert_eq!(
        (v.passed, v.message.as_str()),
        (false, "dropped_iterations = 3, threshold == 0")
    );

    let mut r = r;
    let all = r.apply_thresholds(&[parse("rps >= 50"), parse("error_rate < 1%")]);
    assert!(!all);
    assert_eq!(r.thresholds.len(), 2);
    assert!(r.thresholds[0].passed && !r.thresholds[1].passed);
}

#[test]
fn stream_thresholds_read_the_stream_figures() {
    let mut samples = Vec::new();
    for i in 0..20u64 {
        let mut s = sample(i * 50, 1000);
        let mut st = StreamSample::default();
        st.ttft = Some(Duration::from_millis(if i < 19 { 100 } else { 900 }));
        st.itl = vec![Duration::from_millis(10); 9];
        st.e2e = Duration::from_millis(1000);
        st.output_tokens = 10;
        st.tokens_from_usage = true;
        st.end = "done";
        s.stream = Some(st);
        samples.push(s);
    }
    let r = result_of(&samples, 0, true, 2);
    let v = parse("ttft p95 < 500ms").evaluate(&r);
    assert!(v.passed, "{}", v.message);
    assert!(!parse("ttft max < 500ms").evaluate(&r).passed);
    // 200 tokens in 2 s.
    let v = parse("output_tokens_per_s > 100").evaluate(&r);
    assert_eq!(
        v.message,
        "output_tokens_per_s = 100 tokens/s, threshold > 100"
    );
    assert!(!v.passed);
    assert!(parse("output_tps p50 >= 10").evaluate(&r).passed);
    let v = parse("goodput > 99%").evaluate(&r);
    assert!(v.passed, "{}", v.message);
    assert_eq!(v.message, "goodput = 100%, threshold > 99%");
}

#[test]
fn no_samples_fail_and_say_why() {
    let plain = http_result();
    for (text, why) in [
        (
            "ttft p95 < 500ms",
            "ttft p95: no samples: not a stream scenario, threshold < 500ms",
        ),
        (
            "goodput > 90%",
            "goodput: no samples: not a stream scenario, threshold > 90%",
        ),
        ("output_tokens_per_s > 1", "not a stream scenario"),
        (
            "memory_mb max < 2048",
            "memory_mb max: no samples: resources were not sampled",
        ),
        ("cpu_percent avg < 50", "resources were not sampled"),
    ] {
        let v = parse(text).evaluate(&plain);
        assert!(!v.passed, "{text}");
        assert_eq!(v.observed, None);
        assert!(v.message.contains(why), "{}", v.message);
        // A "less than" threshold must not pass on nothing either.
        assert!(
            !Outcome::from_measurements(vec![v.to_measurement()]).is_passed(),
            "{text}"
        );
    }

    let empty = result_of(&[], 0, false, 1);
    let v = parse("error_rate < 1%").evaluate(&empty);
    assert!(!v.passed);
    assert!(v.message.contains("no request finished"), "{}", v.message);
    let v = parse("http_req_duration p99 < 1s").evaluate(&empty);
    assert!(
        !v.passed && v.message.contains("no samples"),
        "{}",
        v.message
    );
    assert!(!parse("rps > 0").evaluate(&empty).passed);

    // A stream scenario whose every request failed before its stream.
    let mut failed = sample(0, 5);
    failed.error = Some(ErrorClass::Connect);
    failed.status = None;
    let r = result_of(&[failed], 0, true, 1);
    let v = parse("ttft p95 < 500ms").evaluate(&r);
    assert!(!v.passed);
    assert!(v.message.contains("no stream completed"), "{}", v.message);
    let v = parse("goodput > 0%").evaluate(&r);
    assert_eq!(v.observed, Some(0.0));
    assert!(!v.passed);

    // Resources configured but the sampler failed.
    let mut r = http_result();
    let mut res = ResourceSummary::default();
    res.source = "pid 4242".into();
    res.error = Some("process 4242 is gone".into());
    r.resources = Some(res);
    let v = parse("memory_mb max < 2048").evaluate(&r);
    assert!(!v.passed);
    assert!(
        v.message
            .contains("no samples of pid 4242 (process 4242 is gone)"),
        "{}",
        v.message
    );
}

#[test]
fn resources_are_compared_in_mib_and_percent() {
    let mut r = http_result();
    let mut res = ResourceSummary::default();
    res.source = "pid 1".into();
    res.samples = 10;
    res.memory_mb_peak = Some(2100.0);
    res.memory_mb_mean = Some(1800.0);
    res.cpu_percent_peak = Some(95.0);
    res.cpu_percent_mean = Some(40.0);
    r.resources = Some(res);
    let v = parse("memory_mb max < 2048").evaluate(&r);
    assert_eq!(
        (v.passed, v.message.as_str()),
        (false, "memory_mb max = 2100 MiB, threshold < 2048")
    );
    assert!(parse("memory_mb avg < 2GB").evaluate(&r).passed);
    assert!(parse("cpu_percent avg < 50").evaluate(&r).passed);
    let v = parse("cpu_percent max < 50%").evaluate(&r);
    assert_eq!(v.message, "cpu_percent max = 95%, threshold < 50%");
}

#[test]
fn defaults_come_from_performance_targets() {
    let targets = PerformanceTargets {
        latency_p95: Duration::from_millis(250),
        min_throughput_rps: 12.5,
        max_memory_mb: 1024,
        max_cpu_percent: 80.0,
    };
    let texts = |stream, resources| -> Vec<String> {
        default_thresholds(&targets, stream, resources)
            .iter()
            .map(|t| t.text.clone())
            .collect()
    };
    assert_eq!(
        texts(false, false),
        [
            "http_req_duration p95 < 250ms",
            "rps > 12.5",
            "error_rate < 1%"
        ]
    );
    assert_eq!(
        texts(true, true),
        [
            "ttft p95 < 250ms",
            "rps > 12.5",
            "error_rate < 1%",
            "memory_mb max < 1024",
            "cpu_percent avg < 80"
        ]
    );
    // The defaults parse back to themselves and evaluate like written ones.
    for t in default_thresholds(&targets, false, true) {
        assert_eq!(Threshold::parse(&t.text).unwrap(), t);
    }
    let r = http_result();
    let verdicts: Vec<bool> = default_thresholds(&targets, false, false)
        .iter()
        .map(|t| t.evaluate(&r).passed)
        .collect();
    // p95 300 ms > 250 ms; 50 rps > 12.5; 2 % errors.
    assert_eq!(verdicts, [false, true, false]);
}

#[test]
fn measurements_carry_the_verdict_into_core_outcomes() {
    let r = http_result();
    let failing = parse("http_req_duration p99.9 < 200ms").evaluate(&r);
    let m = failing.to_measurement();
    assert_eq!(m.name, "http_req_duration_p99_9");
    assert_eq!(m.unit, Unit::Milliseconds);
    assert!(m.violation().is_some());
    let passing = parse("errors == 2").evaluate(&r);
    let m = passing.to_measurement();
    assert_eq!((m.name.as_str(), m.value), ("errors", Some(2.0)));
    assert!(m.violation().is_none());
    let rate = parse("error_rate < 5%").evaluate(&r).to_measurement();
    assert_eq!((rate.unit, rate.value), (Unit::Percent, Some(2.0)));
    assert!(rate.violation().is_none());
    let rps = parse("rps > 10").evaluate(&r).to_measurement();
    assert_eq!(rps.unit, Unit::RequestsPerSecond);
    let outcome =
        Outcome::from_measurements(vec![passing.to_measurement(), failing.to_measurement()]);
    assert!(!outcome.is_passed());
    assert!(
        outcome
            .message()
            .unwrap()
            .contains("http_req_duration_p99_9")
    );
    // Thresholds round-trip through the result's JSON.
    let mut r = r;
    r.apply_thresholds(&[parse("rps > 10")]);
    let back: LoadResult = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
    assert_eq!(back.thresholds, r.thresholds);
}
