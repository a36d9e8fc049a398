//! Exporting run results: a real suite run pushed to a real Pushgateway (testkit) and read back
//! from its `/metrics`; the node_exporter textfile parsed back and written atomically; a
//! Pushgateway that is down, answers 500 or never answers gives a clear, bounded ReportError.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use citadel_itest_core::{
    Category, Measurement, Outcome, Reporter, RunOutput, Status, Suite, TestResult, Threshold,
    Unit, check_fn,
};
use citadel_itest_monitoring::export::{PushgatewayReporter, TextfileReporter, render};
use citadel_itest_monitoring::exposition::{self, Exposition, Sample};
use citadel_itest_testkit::lying::Reply;
use citadel_itest_testkit::{HangingListener, LyingServer, Pushgateway, closed_port};

const TESTER: &str = "export \"test\"\\";

/// Four checks, one per status, with measurements and awkward label values.
fn suite(run_id: &str) -> Suite {
    Suite::builder()
        .run_id(run_id)
        .check(
            TESTER,
            Arc::new(check_fn(
                "export.passes \"quoted\"",
                Category::Connectivity,
                |_| async {
                    Ok(Outcome::passed().with_measurements([
                        Measurement::new("connect_time", 12.5, Unit::Milliseconds)
                            .with_threshold(Threshold::lt(200.0)),
                        Measurement::new("rows", 3.0, Unit::Count),
                        Measurement::missing("p95_without_samples", Unit::Milliseconds),
                    ]))
                },
            )),
        )
        .check(
            TESTER,
            Arc::new(check_fn("export.fails", Category::Performance, |_| async {
                Ok(Outcome::Failed {
                    message: "too slow".into(),
                    measurements: vec![Measurement::new("rps", 0.125, Unit::RequestsPerSecond)],
                })
            })),
        )
        .check(
            TESTER,
            Arc::new(check_fn("export.skips", Category::Schema, |_| async {
                Ok(Outcome::skipped("not here"))
            })),
        )
        .check(
            TESTER,
            Arc::new(check_fn(
                "export.errors\nline2",
                Category::Health,
                |_| async { Err("could not tell".into()) },
            )),
        )
        .build()
}

/// The run's results keyed by check id.
fn by_id(out: &RunOutput) -> BTreeMap<String, TestResult> {
    out.results
        .iter()
        .map(|r| (r.id.as_str().to_owned(), r.clone()))
        .collect()
}

fn select<'a>(exp: &'a Exposition, name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    exp.samples()
        .map(|(_, s)| s)
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
        .collect()
}

fn one(exp: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = select(exp, name, labels);
    assert_eq!(found.len(), 1, "{name}{labels:?}: {found:?}");
    found[0].value
}

/// Checks that `exp` holds exactly what `out` says (labels unescaped by the parser).
fn assert_matches_run(exp: &Exposition, out: &RunOutput, extra: &[(&str, &str)]) {
    let results = by_id(out);
    assert_eq!(results.len(), 4);
    for (id, r) in &results {
        let mut labels = vec![
            ("tester", TESTER),
            ("check", id.as_str()),
            ("category", r.category.as_str()),
        ];
        labels.extend_from_slice(extra);
        let status = r.outcome.status();
        let success = one(exp, "citadel_itest_check_success", &labels);
        assert_eq!(
            success,
            f64::from(u8::from(status == Status::Passed)),
            "{id}"
        );
        for s in ["passed", "failed", "skipped", "error"] {
            let mut l = labels.clone();
            l.push(("status", s));
            let v = one(exp, "citadel_itest_check_status", &l);
            assert_eq!(v, f64::from(u8::from(status.to_string() == s)), "{id} {s}");
        }
        let d = one(exp, "citadel_itest_check_duration_seconds", &labels);
        assert!((d - r.duration.as_secs_f64()).abs() < 1e-9, "{id}: {d}");
        let a = one(exp, "citadel_itest_check_attempts", &labels);
        assert_eq!(a, f64::from(r.attempts));
        let exported = select(exp, "citadel_itest_check_measurement", &labels);
        let with_value: Vec<_> = r
            .outcome
            .measurements()
            .iter()
            .filter(|m| m.value.is_some())
            .collect();
        assert_eq!(exported.len(), with_value.len(), "{id}: {exported:?}");
        for m in with_value {
            let mut l = labels.clone();
            l.push(("measurement", m.name.as_str()));
            assert_eq!(
                Some(one(exp, "citadel_itest_check_measurement", &l)),
                m.value
            );
        }
    }
    let c = &out.summary.counts;
    for (s, n) in [
        ("passed", c.passed),
        ("failed", c.failed),
        ("skipped", c.skipped),
        ("error", c.errors),
    ] {
        let mut l = vec![("status", s)];
        l.extend_from_slice(extra);
        assert_eq!(one(exp, "citadel_itest_run_checks", &l), n as f64, "{s}");
    }
    let rate = one(exp, "citadel_itest_run_success_rate", extra);
    assert_eq!(Some(rate), c.success_rate());
    let mut l = vec![("run_id", out.summary.run_id.as_str())];
    l.extend_from_slice(extra);
    assert_eq!(one(exp, "citadel_itest_run_info", &l), 1.0);
    let finished = out.summary.started_at + out.summary.duration;
    let ts = one(exp, "citadel_itest_run_timestamp_seconds", extra);
    let expected = finished
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((ts - expected).abs() < 1e-3, "{ts} vs {expected}");
    assert_eq!(one(exp, "citadel_itest_run_interrupted", extra), 0.0);
    assert_eq!(one(exp, "citadel_itest_run_leftovers", extra), 0.0);
}

async fn scrape(pg: &Pushgateway) -> Exposition {
    let text = reqwest::Client::new()
        .get(format!("{}/metrics", pg.url()))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let exp = exposition::parse(&text);
    assert!(exp.findings.is_empty(), "{:?}", exp.findings);
    exp
}

#[tokio::test]
async fn a_real_run_is_pushed_to_a_real_pushgateway_and_read_back() {
    let pg = Pushgateway::start().await.unwrap_or_else(|e| panic!("{e}"));
    let reporter = PushgatewayReporter::new(&pg.url())
        .unwrap()
        .instance("ci-host-1")
        .unwrap();
    let push_url = reporter.push_url();
    assert_eq!(
        push_url,
        format!("{}/metrics/job/citadel_itest/instance/ci-host-1", pg.url())
    );
    let started = Instant::now();
    let out = suite("rexport1").run(vec![Box::new(reporter)]).await;
    eprintln!("run with push took {:?}", started.elapsed());
    assert!(out.report_errors.is_empty(), "{:?}", out.report_errors);
    assert_eq!(out.summary.counts.passed, 1);
    assert_eq!(out.summary.counts.errors, 1);

    let exp = scrape(&pg).await;
    let grouping = [("job", "citadel_itest"), ("instance", "ci-host-1")];
    assert_matches_run(&exp, &out, &grouping);
    // The Pushgateway stamps the push.
    assert_eq!(select(&exp, "push_time_seconds", &grouping).len(), 1);
    // HELP and TYPE came through.
    let family = exp.family("citadel_itest_check_success").unwrap();
    assert_eq!(family.kind.as_str(), "gauge");
    assert!(family.help.as_deref().unwrap().contains("passed"));

    // A second run with one check replaces the whole group: the other checks disappear.
    let reporter = PushgatewayReporter::new(&pg.url())
        .unwrap()
        .instance("ci-host-1")
        .unwrap();
    let out2 = Suite::builder()
        .run_id("rexport2")
        .check(
            "second",
            Arc::new(check_fn("export.only", Category::Health, |_| async {
                Ok(Outcome::passed())
            })),
        )
        .build()
        .run(vec![Box::new(reporter)])
        .await;
    assert!(out2.report_errors.is_empty(), "{:?}", out2.report_errors);
    let exp = scrape(&pg).await;
    let success = select(&exp, "citadel_itest_check_success", &grouping);
    assert_eq!(success.len(), 1, "{success:?}");
    assert_eq!(success[0].label("check"), Some("export.only"));
    assert_eq!(one(&exp, "citadel_itest_run_success_rate", &grouping), 1.0);
    assert_eq!(
        one(&exp, "citadel_itest_run_info", &[("run_id", "rexport2")]),
        1.0
    );

    // Another instance is its own group, next to the first.
    let reporter = PushgatewayReporter::new(&pg.url())
        .unwrap()
        .instance("ci host/2")
        .unwrap();
    let out3 = suite("rexport3").run(vec![Box::new(reporter)]).await;
    assert!(out3.report_errors.is_empty(), "{:?}", out3.report_errors);
    let exp = scrape(&pg).await;
    assert_matches_run(
        &exp,
        &out3,
        &[("job", "citadel_itest"), ("instance", "ci host/2")],
    );
    assert_eq!(
        select(&exp, "citadel_itest_check_success", &grouping).len(),
        1
    );
}

#[tokio::test]
async fn the_textfile_parses_back_and_is_replaced_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("collector").join("citadel_itest.prom");
    let reporter = TextfileReporter::new(&path).unwrap();
    let out = suite("rtext1").run(vec![Box::new(reporter)]).await;
    assert!(out.report_errors.is_empty(), "{:?}", out.report_errors);

    let text = std::fs::read(&path).unwrap();
    let exp = exposition::parse(&text);
    assert!(exp.findings.is_empty(), "{:?}", exp.findings);
    assert_matches_run(&exp, &out, &[]);
    let lint = exposition::lint(&exp);
    assert!(lint.is_empty(), "{lint:?}");
    // An independent parser reads it too.
    let text = String::from_utf8(text).unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    assert_eq!(scrape.samples.len(), exp.series_count());
    // Exactly escaped label values.
    assert!(
        text.contains(r#"tester="export \"test\"\\",check="export.passes \"quoted\"""#),
        "{text}"
    );
    assert!(text.contains(r#"check="export.errors\nline2""#), "{text}");
    // A measurement without a value is left out, not exported as a number.
    assert!(!text.contains("p95_without_samples"), "{text}");

    // While runs rewrite the file, a reader only ever sees whole files.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, path) = (stop.clone(), path.clone());
        std::thread::spawn(move || {
            let mut reads = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(
                    text.ends_with("citadel_itest_run_leftovers 0\n"),
                    "a partial file was seen: {} bytes",
                    text.len()
                );
                reads += 1;
            }
            reads
        })
    };
    let inode =
        |p: &std::path::Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    // Holding the first file open keeps its inode from being reused for a later file.
    let first = std::fs::File::open(&path).unwrap();
    let before = std::os::unix::fs::MetadataExt::ino(&first.metadata().unwrap());
    assert_eq!(before, inode(&path));
    for i in 0..20 {
        let reporter = TextfileReporter::new(&path).unwrap();
        let out = suite(&format!("rtext{i}"))
            .run(vec![Box::new(reporter)])
            .await;
        assert!(out.report_errors.is_empty());
    }
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().expect("reader saw only whole files");
    eprintln!("{reads} reads during 20 rewrites");
    assert_ne!(
        inode(&path),
        before,
        "replaced by rename, not rewritten in place"
    );
    let old = std::io::read_to_string(&first).unwrap();
    assert!(
        old.contains("run_id=\"rtext1\""),
        "the old file is untouched: {old}"
    );
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["citadel_itest.prom"], "no temp files left");
}

#[tokio::test]
async fn an_unwritable_textfile_is_a_report_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "x").unwrap();
    let path = blocker.join("citadel.prom");
    let out = suite("rtext-bad")
        .run(vec![Box::new(TextfileReporter::new(&path).unwrap())])
        .await;
    assert_eq!(out.report_errors.len(), 1);
    let err = citadel_itest_core::error_chain(&out.report_errors[0]);
    assert!(
        err.starts_with(&format!(
            "write metrics textfile report to {}",
            path.display()
        )),
        "{err}"
    );
}

#[tokio::test]
async fn a_pushgateway_that_is_down_is_a_clear_report_error() {
    let port = closed_port().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let reporter = PushgatewayReporter::new(&url)
        .unwrap()
        .instance("x")
        .unwrap();
    let started = Instant::now();
    let out = suite("rdown").run(vec![Box::new(reporter)]).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(out.report_errors.len(), 1);
    let e = &out.report_errors[0];
    assert_eq!(e.format, "pushgateway");
    let err = citadel_itest_core::error_chain(e);
    assert_eq!(
        err,
        format!(
            "write pushgateway report to {url}/metrics/job/citadel_itest/instance/x: connection refused"
        )
    );
    // The run's own verdicts are unaffected.
    assert_eq!(out.summary.counts.total, 4);
}

// The push blocks the thread that calls the reporter (reporters are synchronous); an
// in-process server needs another runtime thread to answer meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushgateway_answering_500_is_a_clear_report_error_without_the_password() {
    let server = LyingServer::start(|_| {
        Reply::text(
            500,
            "pushed metrics are invalid or inconsistent with existing metrics",
        )
    })
    .await;
    let url = format!("http://citadel:s3cret-pw@127.0.0.1:{}", server.port());
    let reporter = PushgatewayReporter::new(&url)
        .unwrap()
        .instance("x")
        .unwrap();
    let out = suite("r500").run(vec![Box::new(reporter)]).await;
    assert_eq!(out.report_errors.len(), 1);
    let err = citadel_itest_core::error_chain(&out.report_errors[0]);
    assert_eq!(
        err,
        format!(
            "write pushgateway report to http://127.0.0.1:{}/metrics/job/citadel_itest/instance/x: \
             answered HTTP 500 Internal Server Error: pushed metrics are invalid or inconsistent \
             with existing metrics",
            server.port()
        )
    );
    assert!(!format!("{:?}", out.report_errors[0]).contains("s3cret-pw"));

    // What was sent: one PUT with the text format and basic auth from the URL.
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let req = &requests[0];
    assert_eq!(req.method, "PUT");
    assert_eq!(req.path(), "/metrics/job/citadel_itest/instance/x");
    assert_eq!(
        req.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    // base64("citadel:s3cret-pw")
    assert_eq!(
        req.header("authorization"),
        Some("Basic Y2l0YWRlbDpzM2NyZXQtcHc=")
    );
}

#[tokio::test]
async fn a_pushgateway_that_never_answers_is_cut_at_the_timeout() {
    let hanging = HangingListener::start().await.unwrap();
    let reporter = PushgatewayReporter::new(&format!("http://{}", hanging.addr()))
        .unwrap()
        .instance("x")
        .unwrap()
        .timeout(Duration::from_millis(500));
    let started = Instant::now();
    let out = suite("rhang").run(vec![Box::new(reporter)]).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(out.report_errors.len(), 1);
    let err = citadel_itest_core::error_chain(&out.report_errors[0]);
    assert!(
        err.ends_with("/metrics/job/citadel_itest/instance/x: no answer within 500ms"),
        "{err}"
    );
}

#[test]
fn render_without_executed_checks_has_no_success_rate() {
    let summary = citadel_itest_core::RunSummary::from_results(
        "rempty",
        std::time::SystemTime::now(),
        Duration::from_millis(5),
        &[],
    );
    let text = render(&summary, &[]);
    assert!(!text.contains("citadel_itest_run_success_rate"), "{text}");
    assert!(!text.contains("citadel_itest_check_"), "{text}");
    let exp = exposition::parse(text.as_bytes());
    assert!(exp.findings.is_empty(), "{:?}", exp.findings);
    assert_eq!(
        one(&exp, "citadel_itest_run_checks", &[("status", "passed")]),
        0.0
    );
}

/// A reporter is a plain `Reporter`: usable in a fan-out next to the others.
#[test]
fn exporters_are_reporters() {
    fn is_reporter<R: Reporter>() {}
    is_reporter::<PushgatewayReporter>();
    is_reporter::<TextfileReporter>();
}
