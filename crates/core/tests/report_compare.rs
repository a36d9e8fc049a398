//! Comparing two reports (status changes, direction-aware measurement regressions beyond a
//! tolerance), reading saved reports back, and re-rendering JUnit from a saved report.

use std::sync::{Arc, Mutex};

use citadel_itest_core::outcome::{Measurement, Outcome, Status, Threshold, Unit};
use citadel_itest_core::report::compare::{Direction, parse_report};
use citadel_itest_core::report::{
    CompareOptions, JsonReport, JsonReporter, JunitReporter, compare_reports, parse_tolerance,
    read_report, render_junit,
};
use citadel_itest_core::{Category, Reporter, Suite, check_fn};

const FIXTURE: &str = include_str!("fixtures/report_with_load.json");

fn fixture() -> JsonReport {
    serde_json::from_str(FIXTURE).unwrap()
}

fn opts(pct: f64) -> CompareOptions {
    CompareOptions {
        tolerance: pct / 100.0,
    }
}

fn scale_measurement(r: &mut JsonReport, check: &str, name: &str, factor: f64) {
    let m = r
        .results
        .iter_mut()
        .find(|x| x.id == check)
        .unwrap()
        .measurements
        .iter_mut()
        .find(|m| m.name == name)
        .unwrap();
    m.value = m.value.map(|v| v * factor);
}

fn scale_load(r: &mut JsonReport, check: &str, path: &[&str], factor: f64) {
    let mut v = r
        .results
        .iter_mut()
        .find(|x| x.id == check)
        .unwrap()
        .details
        .get_mut("load")
        .unwrap();
    for p in path {
        v = v.get_mut(*p).unwrap();
    }
    *v = serde_json::json!(v.as_f64().unwrap() * factor);
}

#[test]
fn an_unchanged_pair_passes() {
    let base = fixture();
    let mut new = fixture();
    new.run_id = "rnext".into();
    let diff = compare_reports(&base, &new, &opts(10.0));
    assert!(!diff.has_regression());
    assert!(diff.status_changes.is_empty());
    assert!(diff.measurements.is_empty());
    assert!(diff.added.is_empty() && diff.removed.is_empty());
    let text = diff.to_text();
    assert!(text.contains("NO REGRESSION: 0 regression(s)"), "{text}");
}

#[test]
fn a_30_percent_latency_regression_is_flagged() {
    let base = fixture();
    let mut new = fixture();
    scale_measurement(&mut new, "basic.web.health", "latency_p95", 1.3);
    scale_load(
        &mut new,
        "load.home",
        &["metrics", "http_req_duration", "p95"],
        1.3,
    );
    let diff = compare_reports(&base, &new, &opts(10.0));
    assert!(diff.has_regression());
    let names: Vec<(&str, &str)> = diff
        .measurements
        .iter()
        .filter(|m| m.regression)
        .map(|m| (m.check.as_str(), m.name.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("basic.web.health", "latency_p95"),
            ("load.home", "load.p95_ms")
        ]
    );
    let m = &diff.measurements[0];
    assert_eq!(m.direction, Direction::LowerIsBetter);
    assert!((m.relative.unwrap() - 0.3).abs() < 1e-9);
    let text = diff.to_text();
    assert!(
        text.contains("REGRESSION basic.web.health latency_p95 4.77ms -> 6.2ms  +30%"),
        "{text}"
    );
    assert!(text.contains("+30%"), "{text}");
    assert!(text.contains("REGRESSED: 2 regression(s)"), "{text}");

    // Within a 35 % tolerance it is not a regression, but it is still listed as changed.
    let diff = compare_reports(&base, &new, &opts(35.0));
    assert!(!diff.has_regression());
    assert_eq!(diff.measurements.len(), 2);
    // The same change downwards is an improvement.
    let diff = compare_reports(&new, &base, &opts(10.0));
    assert!(!diff.has_regression());
    assert!(diff.measurements.iter().all(|m| m.improvement));
}

#[test]
fn throughput_down_and_errors_up_are_regressions() {
    let base = fixture();
    let mut new = fixture();
    // rps: has a `>` threshold in the check's measurements and is a load figure.
    scale_measurement(&mut new, "load.home", "rps", 0.7);
    scale_load(&mut new, "load.home", &["derived", "rps"], 0.7);
    let diff = compare_reports(&base, &new, &opts(10.0));
    let regressed: Vec<&str> = diff
        .measurements
        .iter()
        .filter(|m| m.regression)
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(regressed, ["rps", "load.rps"]);
    // Throughput up is fine.
    let mut faster = fixture();
    scale_load(&mut faster, "load.home", &["derived", "rps"], 1.5);
    assert!(!compare_reports(&base, &faster, &opts(10.0)).has_regression());

    // An error rate from 0 to anything is worse, whatever the tolerance.
    let mut errors = fixture();
    let m = errors
        .results
        .iter_mut()
        .find(|x| x.id == "load.home")
        .unwrap()
        .measurements
        .iter_mut()
        .find(|m| m.name == "error_rate")
        .unwrap();
    assert_eq!(m.value, Some(0.0));
    m.value = Some(0.5);
    let diff = compare_reports(&base, &errors, &opts(100.0));
    assert!(diff.has_regression());
    assert_eq!(diff.measurements[0].relative, None);
}

#[test]
fn the_threshold_decides_the_direction() {
    let mk = |value: f64, threshold: Option<Threshold>| {
        let mut r = fixture();
        let m = Measurement::new("rows_checked", value, Unit::Count);
        r.results[0].measurements = vec![match threshold {
            Some(t) => m.with_threshold(t),
            None => m,
        }];
        r
    };
    // `>=`: higher is better, so a drop is a regression.
    let d = compare_reports(
        &mk(100.0, Some(Threshold::ge(10.0))),
        &mk(50.0, Some(Threshold::ge(10.0))),
        &opts(10.0),
    );
    assert!(d.has_regression());
    // `<`: lower is better, so the same drop is an improvement.
    let d = compare_reports(
        &mk(100.0, Some(Threshold::lt(1000.0))),
        &mk(50.0, Some(Threshold::lt(1000.0))),
        &opts(10.0),
    );
    assert!(!d.has_regression());
    assert!(d.measurements[0].improvement);
    // No threshold and a name without direction: listed, never a regression.
    let d = compare_reports(&mk(100.0, None), &mk(50.0, None), &opts(10.0));
    assert!(!d.has_regression());
    assert_eq!(d.measurements[0].direction, Direction::Unknown);
    // A value lost (no samples now) is a regression.
    let mut gone = mk(100.0, Some(Threshold::ge(10.0)));
    gone.results[0].measurements[0].value = None;
    let d = compare_reports(&mk(100.0, Some(Threshold::ge(10.0))), &gone, &opts(10.0));
    assert!(d.has_regression());
}

#[test]
fn status_regressions_and_new_or_missing_checks() {
    let base = fixture();
    let mut new = fixture();
    // passed -> failed: a regression.
    let r = new
        .results
        .iter_mut()
        .find(|x| x.id == "basic.web.health")
        .unwrap();
    r.status = Status::Failed;
    r.message = Some("GET http://127.0.0.1:58931/index.html returned 503".into());
    // failed -> passed: a change, not a regression.
    new.results
        .iter_mut()
        .find(|x| x.id == "load.mixed")
        .unwrap()
        .status = Status::Passed;
    // One check gone, one new.
    let gone = new.results.remove(0);
    let mut added = new.results[0].clone();
    added.id = "basic.extra.health".into();
    added.status = Status::Failed;
    new.results.push(added);

    let diff = compare_reports(&base, &new, &opts(10.0));
    assert!(diff.has_regression());
    assert_eq!(diff.regressions(), 1);
    let changes: Vec<(&str, Status, Status, bool)> = diff
        .status_changes
        .iter()
        .map(|s| (s.id.as_str(), s.before, s.after, s.regression))
        .collect();
    assert_eq!(
        changes,
        [
            ("basic.web.health", Status::Passed, Status::Failed, true),
            ("load.mixed", Status::Failed, Status::Passed, false),
        ]
    );
    assert_eq!(diff.removed, [(gone.id.clone(), Status::Passed)]);
    assert_eq!(
        diff.added,
        [("basic.extra.health".to_string(), Status::Failed)]
    );
    let text = diff.to_text();
    assert!(text.contains("passed -> failed"), "{text}");
    assert!(text.contains("returned 503"), "{text}");
    assert!(
        text.contains("missing checks (in the baseline only):"),
        "{text}"
    );
    assert!(text.contains("basic.extra.health  failed"), "{text}");
}

#[test]
fn tolerance_and_report_parsing_errors_are_clear() {
    assert_eq!(parse_tolerance("30%"), Ok(0.3));
    assert!(
        parse_tolerance("fast")
            .unwrap_err()
            .contains("tolerance `fast`")
    );
    let e = parse_report(b"{\"schema\": \"other/v9\"}").unwrap_err();
    assert!(
        e.contains("`other/v9` is not `citadel-itest.report/v1`"),
        "{e}"
    );
    let e = parse_report(b"not json").unwrap_err();
    assert!(e.starts_with("not JSON"), "{e}");
    let e = parse_report(b"{\"schema\": \"citadel-itest.report/v1\"}").unwrap_err();
    assert!(e.contains("missing field"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.json");
    let e = read_report(&missing).unwrap_err().to_string();
    assert!(e.contains("nope.json"), "{e}");
    let good = dir.path().join("report.json");
    std::fs::write(&good, FIXTURE).unwrap();
    assert_eq!(read_report(&good).unwrap(), fixture());
}

#[tokio::test]
async fn junit_rendered_from_a_saved_report_matches_the_reporter() {
    let suite = Suite::builder()
        .check(
            "demo",
            Arc::new(check_fn("demo.fast", Category::Performance, |_ctx| async {
                Ok(Outcome::from_measurements(vec![
                    Measurement::new("latency_p95", 12.5, Unit::Milliseconds)
                        .with_threshold(Threshold::lt(200.0)),
                ]))
            })),
        )
        .check(
            "demo",
            Arc::new(check_fn("demo.broken", Category::Health, |_ctx| async {
                Ok(Outcome::failed("status 500 <b>down</b>"))
            })),
        )
        .check(
            "other",
            Arc::new(check_fn("other.skip", Category::Schema, |_ctx| async {
                Ok(Outcome::skipped("read-only"))
            })),
        )
        .build();
    let json = Arc::new(Mutex::new(Vec::new()));
    let junit = Arc::new(Mutex::new(Vec::new()));
    let reporters: Vec<Box<dyn Reporter>> = vec![
        Box::new(JsonReporter::to_memory(json.clone())),
        Box::new(JunitReporter::to_memory(junit.clone())),
    ];
    suite.run(reporters).await;
    let report = parse_report(&json.lock().unwrap()).unwrap();
    let rendered = render_junit(&report).unwrap();
    let written = String::from_utf8(junit.lock().unwrap().clone()).unwrap();
    // Times are rounded to the microsecond in report.json; compare everything else.
    let strip = |s: &str| -> String {
        let mut out = String::new();
        for part in s.split("time=\"") {
            match part.find('"') {
                Some(i) if !out.is_empty() => out.push_str(&part[i..]),
                _ => out.push_str(part),
            }
        }
        out.replace("timestamp", "")
    };
    assert_eq!(strip(&rendered), strip(&written));
    assert!(rendered.contains("<failure"));
    assert!(rendered.contains("<skipped"));
}
