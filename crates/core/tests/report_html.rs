//! `report.html` and `summary.md`: rendered from a real run's report (tests/fixtures, a run of
//! the basic and load testers against a loopback HTTP server, with a real 404 page in a failure
//! message), from reporters fed by a real suite, and opened in headless Chromium.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use citadel_itest_core::outcome::{Measurement, Outcome, Status, Threshold, Unit};
use citadel_itest_core::report::{
    HtmlReporter, JsonReport, JsonReporter, MarkdownReporter, render_html, render_markdown,
};
use citadel_itest_core::{Category, Reporter, Suite, check_fn};

const FIXTURE: &str = include_str!("fixtures/report_with_load.json");
const HOSTILE: &str = "<script>alert('pwned')</script> | col\nnext line & \"quotes\"";

fn fixture() -> JsonReport {
    serde_json::from_str(FIXTURE).expect("fixture parses as a report")
}

/// The fixture with hostile text in a message, a tester name and a measurement name.
fn hostile() -> JsonReport {
    let mut r = fixture();
    let failed = r
        .results
        .iter_mut()
        .find(|x| x.status == Status::Failed)
        .expect("fixture has a failed check");
    failed.message = Some(HOSTILE.to_string());
    failed.measurements.push(Measurement::new(
        "<img src=x onerror=alert(1)>",
        1.0,
        Unit::Count,
    ));
    r.results[0].tester = "\"><svg onload=alert(2)>".to_string();
    r
}

#[test]
fn html_shows_summary_checks_and_load_charts() {
    let report = fixture();
    let html = render_html(&report);
    let t = &report.summary.totals;
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains(&format!(
        "<span class=\"n\" id=\"count-total\">{}</span>",
        t.total
    )));
    assert!(html.contains(&format!(
        "<span class=\"n\" id=\"count-failed\">{}</span>",
        t.failed
    )));
    assert!(html.contains(&format!("id=\"run-id\">{}</code>", report.run_id)));
    assert!(html.contains("id=\"verdict\">FAILED</span>"));
    // Counts by tester and category.
    for tester in report.summary.by_tester.keys() {
        assert!(html.contains(&format!("<tr><th>{tester}</th>")), "{tester}");
    }
    for category in report.summary.by_category.keys() {
        assert!(
            html.contains(&format!("<tr><th>{category}</th>")),
            "{category}"
        );
    }
    // One row per check, with its status for the filter.
    assert_eq!(
        html.matches("<tr data-status=").count(),
        report.results.len()
    );
    for r in &report.results {
        assert!(html.contains(&format!("<td class=\"id\">{}</td>", r.id)));
    }
    // Both load scenarios get the three charts, with bars and lines in them.
    let loads = report
        .results
        .iter()
        .filter(|r| r.category == "load")
        .count();
    assert_eq!(loads, 2);
    for i in 0..loads {
        for id in [
            format!("chart-percentiles-{i}-http_req_duration"),
            format!("chart-histogram-{i}"),
            format!("chart-throughput-{i}"),
            format!("chart-latency-{i}"),
        ] {
            assert!(html.contains(&format!("<svg id=\"{id}\"")), "{id}");
        }
    }
    assert!(html.matches("<rect ").count() > 20);
    assert!(html.contains("<polyline"));
    // The bucket counts of the histogram add up to the requests (one bar per bucket).
    let load = &report
        .results
        .iter()
        .find(|r| r.id == "load.home")
        .unwrap()
        .details["load"];
    let buckets = load["buckets"]["http_req_duration"].as_array().unwrap();
    let sum: u64 = buckets.iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(sum, load["counts"]["requests"].as_u64().unwrap());
    // Thresholds of the failed scenario are shown as failed.
    assert!(html.contains("<li class=\"bad\">✘ "));
    // Self-contained: nothing fetched at view time.
    for needle in [
        "src=\"http",
        "href=\"http",
        "@import",
        "<link",
        "<script src",
    ] {
        assert!(!html.contains(needle), "{needle}");
    }
}

#[test]
fn html_escapes_hostile_text() {
    let html = render_html(&hostile());
    // The only script element is the page's own.
    assert_eq!(html.matches("<script").count(), 1);
    assert!(!html.contains("<img src=x"));
    assert!(!html.contains("<svg onload"));
    assert!(html.contains("&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;"));
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(html.contains("data-tester=\"&quot;&gt;&lt;svg onload=alert(2)&gt;\""));
    // The real 404 page quoted in the fixture's failure message is text too.
    let html = render_html(&fixture());
    assert!(html.contains("&lt;!DOCTYPE HTML&gt;"));
    assert_eq!(html.matches("<!DOCTYPE").count(), 1);
}

#[test]
fn html_survives_malformed_load_details() {
    let mut r = fixture();
    let load = r.results.iter_mut().find(|x| x.id == "load.home").unwrap();
    load.details
        .insert("load".into(), serde_json::json!("not an object"));
    let other = r.results.iter_mut().find(|x| x.id == "load.mixed").unwrap();
    other.details.insert(
        "load".into(),
        serde_json::json!({"metrics": {"http_req_duration": {"count": "x", "p50": null}},
                           "buckets": {"http_req_duration": [{"le": "?"}]},
                           "series": {"seconds": [{"t": -1, "ok": 1e308}, {}]}}),
    );
    let html = render_html(&r);
    assert!(html.contains("not an object"));
    assert!(html.ends_with("</html>\n"));
}

#[test]
fn markdown_puts_failures_first_and_escapes_cells() {
    let report = hostile();
    let md = render_markdown(&report);
    let t = &report.summary.totals;
    assert!(md.starts_with("## citadel-itest: FAILED"));
    assert!(md.contains(&format!(
        "**{} passed, {} failed, {} errors, {} skipped** of {} checks",
        t.passed, t.failed, t.errors, t.skipped, t.total
    )));
    assert!(md.contains("success rate **66.7 %**"));
    let failed_at = md.find("### Failed and errored checks (2)").unwrap();
    let perf_at = md.find("### Performance").unwrap();
    assert!(failed_at < perf_at);
    // The hostile message stays in one cell of one row.
    let row = md
        .lines()
        .find(|l| l.contains("alert(&#39;pwned") || l.contains("alert('pwned"))
        .expect("message row");
    assert!(row.contains("&lt;script&gt;"));
    assert!(row.contains("\\| col<br>next line &amp;"));
    let unescaped = row
        .match_indices('|')
        .filter(|(i, _)| !row[..*i].ends_with('\\'))
        .count();
    assert_eq!(unescaped, 4, "{row}");
    assert!(!md.contains("<script>"));
    // Load scenarios and thresholded measurements.
    assert!(md.contains("| home | "));
    assert!(md.contains("| mixed | "));
    assert!(md.contains("| `load.home` | http_req_duration_p95 | "));
    assert!(md.contains("| ✅ |"));
    assert!(md.contains("| ❌ |"));
}

#[test]
fn markdown_folds_skipped_checks() {
    let mut report = fixture();
    report.results[0].status = Status::Skipped;
    report.results[0].message = Some("read-only mode: writes are skipped".into());
    let md = render_markdown(&report);
    assert!(md.contains("<details><summary>Skipped (1)</summary>"));
    assert!(md.contains("| read-only mode: writes are skipped |"));
    assert!(md.contains("</details>"));
}

fn buf() -> Arc<Mutex<Vec<u8>>> {
    Arc::new(Mutex::new(Vec::new()))
}

#[tokio::test]
async fn reporters_render_what_the_json_report_holds() {
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
                Ok(Outcome::failed("status 500 | <b>down</b>"))
            })),
        )
        .build();
    let (json, html, md) = (buf(), buf(), buf());
    let reporters: Vec<Box<dyn Reporter>> = vec![
        Box::new(JsonReporter::to_memory(json.clone())),
        Box::new(HtmlReporter::to_memory(html.clone())),
        Box::new(MarkdownReporter::to_memory(md.clone())),
    ];
    let out = suite.run(reporters).await;
    assert!(out.report_errors.is_empty());
    let report: JsonReport = serde_json::from_slice(&json.lock().unwrap()).unwrap();
    assert_eq!(
        String::from_utf8(html.lock().unwrap().clone()).unwrap(),
        render_html(&report)
    );
    let md = String::from_utf8(md.lock().unwrap().clone()).unwrap();
    assert_eq!(md, render_markdown(&report));
    assert!(md.contains("| failed | `demo.broken` | status 500 \\| &lt;b&gt;down&lt;/b&gt; |"));
    assert!(md.contains("| `demo.fast` | latency_p95 | 12.5ms | &lt; 200ms | ✅ |"));
}

#[tokio::test]
async fn html_reporter_writes_its_file_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/report.html");
    let suite = Suite::builder()
        .check(
            "demo",
            Arc::new(check_fn("demo.ok", Category::Health, |_ctx| async {
                Ok(Outcome::passed())
            })),
        )
        .build();
    let out = suite
        .run(vec![
            Box::new(HtmlReporter::to_file(&path)) as Box<dyn Reporter>
        ])
        .await;
    assert!(out.report_errors.is_empty());
    let html = std::fs::read_to_string(&path).unwrap();
    assert!(html.contains("id=\"verdict\">PASSED</span>"));
    // No temporary file is left next to it.
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("report.html")]);
}

// ---- headless Chromium -------------------------------------------------------------------

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(p);
    }
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "headless Chromium not found: install the Debian package `chromium` (scripts/test.sh \
         does) or set CHROMIUM to its path"
    );
}

/// Run Chromium headless with these extra arguments; (stdout, stderr), bounded to 90 s.
fn run_chromium(profile: &Path, extra: &[String]) -> (String, String) {
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--no-first-run",
        "--no-default-browser-check",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start chromium");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let (out, err) = (out_t.join().unwrap(), err_t.join().unwrap());
            assert!(status.success(), "chromium exited with {status}: {err}");
            return (out, err);
        }
        if start.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium did not finish within 90s: {}",
                err_t.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// Renders the fixture (with hostile text) to target/tmp/report-html/report.html, opens it in
/// headless Chromium: the script ran without errors (`data-ready="1"`, the filter line, no
/// "Uncaught" on the console), the summary counts are in the DOM, a status filter given in the
/// address hides the other rows, and a screenshot of the page is saved and is not blank.
#[test]
fn html_report_in_headless_chromium() {
    let report = hostile();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-html");
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("report.html");
    std::fs::write(&page, render_html(&report)).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let total = report.results.len();
    let failed = report
        .results
        .iter()
        .filter(|r| r.status == Status::Failed)
        .count();

    // 1. The DOM after the script ran.
    let (dom, log) = run_chromium(
        profile.path(),
        &[
            "--virtual-time-budget=3000".to_string(),
            "--dump-dom".to_string(),
            file_url(&page),
        ],
    );
    assert!(!log.contains("Uncaught"), "script error: {log}");
    assert!(
        dom.contains("data-ready=\"1\""),
        "script did not run: {dom:.400}"
    );
    assert!(dom.contains(&format!("<span id=\"shown\">{total} of {total}</span>")));
    let t = &report.summary.totals;
    assert!(dom.contains(&format!("id=\"count-total\">{}</span>", t.total)));
    assert!(dom.contains(&format!("id=\"count-passed\">{}</span>", t.passed)));
    assert!(dom.contains(&format!("id=\"count-failed\">{}</span>", t.failed)));
    assert!(dom.contains("id=\"success-rate\">66.7 %</span>"));
    // The hostile text stayed text: no element was made of it.
    assert!(!dom.contains("<img src=\"x\""));
    assert!(!dom.contains("<svg onload"));
    assert_eq!(dom.matches("<script").count(), 1);

    // 2. A filter in the address: only failed rows stay visible.
    let (dom, log) = run_chromium(
        profile.path(),
        &[
            "--virtual-time-budget=3000".to_string(),
            "--dump-dom".to_string(),
            format!("{}#status=failed", file_url(&page)),
        ],
    );
    assert!(!log.contains("Uncaught"), "script error: {log}");
    assert!(dom.contains(&format!("<span id=\"shown\">{failed} of {total}</span>")));
    assert_eq!(
        dom.matches("<tr data-status=\"passed\"").count(),
        dom.matches("<tr data-status=\"passed\" data-tester=")
            .count()
    );
    let hidden = dom.matches("hidden=\"\"").count();
    assert_eq!(hidden, total - failed, "rows hidden by the filter");

    // 3. The screenshot.
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-html-screenshot.png");
    let _ = std::fs::remove_file(&shot);
    let (_, log) = run_chromium(
        profile.path(),
        &[
            "--hide-scrollbars".to_string(),
            "--window-size=1280,2000".to_string(),
            format!("--screenshot={}", shot.display()),
            file_url(&page),
        ],
    );
    assert!(!log.contains("Uncaught"), "script error: {log}");
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    // A blank 1280x2000 page compresses to a few KB; the report with its charts is far larger.
    assert!(png.len() > 60_000, "screenshot is only {} bytes", png.len());
    eprintln!("screenshot: {} ({} bytes)", shot.display(), png.len());
}
