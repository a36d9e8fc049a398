//! Report output: JSON and JUnit compared against golden files; console output; atomic files.
//! Regenerate the golden files with `UPDATE_GOLDEN=1 cargo test -p citadel-itest-core --test reports`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use citadel_itest_core::config::Secret;
use citadel_itest_core::report::{
    ConsoleReporter, JsonReport, JsonReporter, JunitReporter, REPORT_SCHEMA,
};
use citadel_itest_core::{
    Category, CheckId, ErrorKind, Measurement, Outcome, PlannedCheck, Reporter, RunPlan,
    RunSummary, TestResult, Threshold, Unit,
};

fn result(id: &str, tester: &str, category: Category, outcome: Outcome, ms: u64) -> TestResult {
    TestResult {
        id: CheckId::new(id),
        tester: tester.to_string(),
        category,
        outcome,
        duration: Duration::from_millis(ms),
        attempts: 1,
        details: BTreeMap::new(),
    }
}

/// A fixed run covering every status and error kind.
fn fixture() -> (RunPlan, Vec<TestResult>, RunSummary) {
    let secret = Secret::inline("golden-secret-value").resolve().unwrap();
    let mut results = vec![
        result(
            "basic.gateway.connectivity",
            "basic",
            Category::Connectivity,
            Outcome::passed().with_measurements([Measurement::new(
                "connect_time",
                0.42,
                Unit::Milliseconds,
            )
            .with_threshold(Threshold::lt(200.0))]),
            1,
        ),
        result(
            "basic.gateway.health",
            "basic",
            Category::Health,
            Outcome::from_measurements(vec![
                Measurement::new("latency_p95", 250.0, Unit::Milliseconds)
                    .with_threshold(Threshold::lt(200.0)),
                Measurement::new("samples", 5.0, Unit::Count),
            ]),
            1250,
        ),
        result(
            "database.main.schema",
            "database",
            Category::Schema,
            Outcome::skipped("read_only: true skips writes"),
            0,
        ),
        result(
            "database.main.pooling",
            "database",
            Category::Pooling,
            Outcome::error(ErrorKind::Timeout, "did not finish within 1s"),
            1000,
        ),
        result(
            "external_api.postgres.authentication",
            "external_api",
            Category::Authentication,
            Outcome::error(
                ErrorKind::Harness,
                format!(
                    "login to postgres://app:{}@127.0.0.1:5432/db failed",
                    secret.expose()
                ),
            ),
            3,
        ),
    ];
    results[1].attempts = 2;
    results[1].details.insert(
        "earlier_attempts".into(),
        serde_json::json!(["attempt 1: failed: connection refused"]),
    );
    results[4]
        .details
        .insert("server_version".into(), serde_json::json!("15.18"));
    let plan = RunPlan {
        run_id: "rgolden01".into(),
        started_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_201_600),
        checks: results
            .iter()
            .map(|r| PlannedCheck {
                id: r.id.clone(),
                tester: r.tester.clone(),
                category: r.category,
            })
            .collect(),
        config: serde_json::json!({"run": {"concurrency": 4}, "basic": {"targets": [{"name": "gateway", "url": "http://127.0.0.1:58080", "auth": {"bearer": "<redacted>"}}]}}),
    };
    let mut summary = RunSummary::from_results(
        "rgolden01",
        plan.started_at,
        Duration::from_millis(2254),
        &results,
    );
    summary.cancel_reason = None;
    summary.leftovers = vec![citadel_itest_core::Leftover::new(
        "external_api.vectors.performance",
        "vectors",
        "collection citadel_itest_rgolden01_vectors_perf_2",
        "delete answered HTTP 503 (token golden-secret-value)",
    )];
    // Completion order differs from plan order: reports must not depend on it.
    results.reverse();
    (plan, results, summary)
}

fn run_reporter(mut r: Box<dyn Reporter>, buf: &Arc<Mutex<Vec<u8>>>) -> String {
    let (plan, results, summary) = fixture();
    r.run_started(&plan).unwrap();
    for res in &results {
        r.check_finished(res).unwrap();
    }
    r.run_finished(&summary).unwrap();
    String::from_utf8(buf.lock().unwrap().clone()).unwrap()
}

fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
    assert_eq!(actual, expected, "{name} differs from its golden file");
}

#[test]
fn json_report_matches_golden_file() {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let text = run_reporter(Box::new(JsonReporter::to_memory(buf.clone())), &buf);
    golden("report.json", &text);
}

#[test]
fn junit_report_matches_golden_file() {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let text = run_reporter(Box::new(JunitReporter::to_memory(buf.clone())), &buf);
    golden("junit.xml", &text);
    assert!(text.contains("<failure"), "failed maps to <failure>");
    assert!(
        text.contains("<error") && text.contains("type=\"timeout\""),
        "errors map to <error type=kind>"
    );
    assert!(text.contains("<skipped"));
}

#[test]
fn json_summary_numbers_add_up() {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let text = run_reporter(Box::new(JsonReporter::to_memory(buf.clone())), &buf);
    let report: JsonReport = serde_json::from_str(&text).unwrap();
    assert_eq!(report.schema, REPORT_SCHEMA);
    let s = &report.summary.totals;
    assert_eq!(s.total, report.results.len());
    assert_eq!(s.passed + s.failed + s.skipped + s.errors, s.total);
    assert_eq!(
        s.success_rate,
        Some(0.25),
        "1 passed of 4 executed (1 skipped)"
    );
    let by_tester: usize = report.summary.by_tester.values().map(|c| c.total).sum();
    let by_category: usize = report.summary.by_category.values().map(|c| c.total).sum();
    assert_eq!(by_tester, s.total);
    assert_eq!(by_category, s.total);
    // Plan order, not completion order.
    assert_eq!(report.results[0].id, "basic.gateway.connectivity");
}

#[test]
fn no_report_contains_a_secret() {
    for make in [
        |b: Arc<Mutex<Vec<u8>>>| Box::new(JsonReporter::to_memory(b)) as Box<dyn Reporter>,
        |b: Arc<Mutex<Vec<u8>>>| Box::new(JunitReporter::to_memory(b)) as Box<dyn Reporter>,
    ] {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let text = run_reporter(make(buf.clone()), &buf);
        assert!(!text.contains("golden-secret-value"), "{text}");
        assert!(text.contains("<redacted>") || text.contains("&lt;redacted&gt;"));
    }
}

#[derive(Clone)]
struct Shared(Arc<Mutex<Vec<u8>>>);
impl std::io::Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn console_groups_by_tester_and_prints_a_summary_table() {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let text = run_reporter(
        Box::new(ConsoleReporter::new(Box::new(Shared(buf.clone())), false)),
        &buf,
    );
    assert!(!text.contains('\x1b'), "no colours when not asked");
    assert!(!text.contains("golden-secret-value"));
    assert!(text.contains("Results by tester\nbasic\n"), "{text}");
    assert!(
        text.contains("FAIL  basic.gateway.health (1250.0 ms, 2 attempts)"),
        "{text}"
    );
    assert!(
        text.contains("latency_p95 = 250ms violates threshold < 200ms"),
        "{text}"
    );
    assert!(
        text.contains("\n          attempt 1: failed: connection refused\n"),
        "earlier attempts are shown: {text}"
    );
    assert!(text.contains("ERROR database.main.pooling"), "{text}");
    assert!(text.contains("timeout: did not finish within 1s"), "{text}");
    let total = text.lines().find(|l| l.starts_with("TOTAL")).unwrap();
    assert_eq!(
        total.split_whitespace().collect::<Vec<_>>(),
        ["TOTAL", "5", "1", "1", "1", "2", "25.0%"]
    );
    assert!(text.contains("category schema"));
    // Leftovers come after the summary table, never interleaved with the results.
    let table = text.find("\nSummary (run").unwrap();
    let left = text
        .find("\nLeft behind (1 object could not be removed)\n")
        .expect(&text);
    assert!(left > table, "{text}");
    assert!(text.contains(
        "  collection citadel_itest_rgolden01_vectors_perf_2 on vectors (created by \
         external_api.vectors.performance): delete answered HTTP 503 (token <redacted>)\n"
    ));
    assert!(text.trim_end().ends_with("FAILED"));

    let buf = Arc::new(Mutex::new(Vec::new()));
    let text = run_reporter(
        Box::new(ConsoleReporter::new(Box::new(Shared(buf.clone())), true)),
        &buf,
    );
    assert!(text.contains("\x1b[31mFAIL "), "colours when asked");
}

#[test]
fn report_files_are_written_atomically_and_replace_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/report.json");
    let mut r = JsonReporter::to_file(&path);
    let (plan, results, summary) = fixture();
    r.run_started(&plan).unwrap();
    for res in &results {
        r.check_finished(res).unwrap();
    }
    assert!(!path.exists(), "nothing is written before the run finishes");
    r.run_finished(&summary).unwrap();
    let report: JsonReport = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(report.results.len(), 5);
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "report.json")
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // A destination that cannot be written is a clear error, not a panic.
    let blocked = dir.path().join("file-not-dir");
    std::fs::write(&blocked, "x").unwrap();
    let mut r = JsonReporter::to_file(blocked.join("report.json"));
    r.run_started(&plan).unwrap();
    let err = r.run_finished(&summary).unwrap_err();
    assert!(
        err.to_string().starts_with("write json report to "),
        "{err}"
    );
}
