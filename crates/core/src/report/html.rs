//! `report.html`: one self-contained page (inline CSS, a little vanilla JavaScript for filtering,
//! inline SVG charts; nothing is fetched when it is viewed).
//!
//! The page shows the summary (counts by tester and by category, success rate, run id,
//! duration), a table of every check (status, duration, message, measurements) filterable by
//! status, tester and text, and for each load scenario (`details.load` of a `load` check) charts
//! of its latency percentiles, its latency histogram and its throughput, errors and latency over
//! time. Every piece of text from the report is HTML-escaped.
//!
//! ```
//! use citadel_itest_core::report::{JsonReport, render_html};
//! let report: JsonReport = serde_json::from_str(include_str!("../../tests/golden/report.json")).unwrap();
//! let html = render_html(&report);
//! assert!(html.starts_with("<!DOCTYPE html>"));
//! assert!(html.contains("rgolden01"));
//! ```

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde_json::Value;

use super::json::{JsonCounts, JsonReport, JsonResult};
use super::{Document, ReportError, Reporter};
use crate::outcome::{Measurement, Status, TestResult, fmt_number};
use crate::runner::{RunPlan, RunSummary};

/// Most points a time-series chart draws; longer series are merged into this many bins.
const MAX_SERIES_POINTS: usize = 600;

/// Escape text for HTML element content and attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn esc(s: &str) -> String {
    escape_html(s)
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Passed => "passed",
        Status::Failed => "failed",
        Status::Skipped => "skipped",
        Status::Error => "error",
    }
}

/// The verdict of a report: `INTERRUPTED`, `FAILED` or `PASSED`.
pub(crate) fn verdict(report: &JsonReport) -> &'static str {
    let t = &report.summary.totals;
    if report.interrupted {
        "INTERRUPTED"
    } else if t.failed + t.errors > 0 {
        "FAILED"
    } else {
        "PASSED"
    }
}

/// A success rate (0..1) as `87.5 %`, or `n/a`.
pub(crate) fn rate_text(rate: Option<f64>) -> String {
    match rate {
        Some(r) if r.is_finite() => format!("{} %", fmt_fixed(r * 100.0, 1)),
        _ => "n/a".to_string(),
    }
}

/// A duration in milliseconds, human-sized: `850 ms`, `2.25 s`, `3 min 5 s`.
pub(crate) fn duration_text(ms: f64) -> String {
    if !ms.is_finite() || ms < 0.0 {
        return "n/a".to_string();
    }
    if ms < 1000.0 {
        format!("{} ms", fmt_number(ms))
    } else if ms < 60_000.0 {
        format!("{} s", fmt_fixed(ms / 1000.0, 2))
    } else {
        let s = (ms / 1000.0).round() as u64;
        format!("{} min {} s", s / 60, s % 60)
    }
}

/// A number with at most `decimals` decimals and no trailing zeros.
pub(crate) fn fmt_fixed(v: f64, decimals: usize) -> String {
    if !v.is_finite() {
        return "n/a".to_string();
    }
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// `latency_p95 = 12.3 ms (< 200)`-like text of a measurement's value with its unit.
pub(crate) fn measurement_value(m: &Measurement) -> String {
    match m.value {
        Some(v) => format!("{}{}", fmt_number(v), m.unit.suffix()),
        None => "no samples".to_string(),
    }
}

/// Render a report as one self-contained HTML page.
pub fn render_html(report: &JsonReport) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let t = &report.summary.totals;
    let verdict = verdict(report);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>citadel-itest report {run} ({verdict})</title>\n<style>{CSS}</style>\n</head>\n\
         <body data-ready=\"0\">\n<header class=\"top {vclass}\">\n<h1>citadel-itest report \
         <span class=\"verdict\" id=\"verdict\">{verdict}</span></h1>\n<p class=\"meta\">run \
         <code id=\"run-id\">{run}</code> · started {started} · duration {dur}",
        run = esc(&report.run_id),
        vclass = verdict.to_ascii_lowercase(),
        started = esc(&report.started_at),
        dur = esc(&duration_text(report.duration_ms)),
    );
    if let Some(reason) = &report.cancel_reason {
        let _ = write!(h, " · cancelled: {}", esc(reason));
    }
    h.push_str("</p>\n</header>\n<main>\n");

    // Summary cards.
    h.push_str("<section id=\"summary\">\n<h2>Summary</h2>\n<div class=\"cards\">\n");
    for (id, label, n, class) in [
        ("total", "total", t.total, "total"),
        ("passed", "passed", t.passed, "passed"),
        ("failed", "failed", t.failed, "failed"),
        ("skipped", "skipped", t.skipped, "skipped"),
        ("error", "errors", t.errors, "error"),
    ] {
        let filter = if id == "total" { "" } else { id };
        let _ = writeln!(
            h,
            "<button type=\"button\" class=\"card {class}\" data-filter-status=\"{filter}\">\
             <span class=\"n\" id=\"count-{id}\">{n}</span><span class=\"l\">{label}</span>\
             </button>"
        );
    }
    let _ = write!(
        h,
        "<div class=\"card rate\"><span class=\"n\" id=\"success-rate\">{}</span>\
         <span class=\"l\">success rate</span></div>\n</div>\n",
        esc(&rate_text(t.success_rate))
    );
    h.push_str("<div class=\"groups\">\n");
    counts_table(&mut h, "By tester", "by-tester", &report.summary.by_tester);
    counts_table(
        &mut h,
        "By category",
        "by-category",
        &report.summary.by_category,
    );
    h.push_str("</div>\n</section>\n");

    // Checks table.
    let testers: BTreeSet<&str> = report.results.iter().map(|r| r.tester.as_str()).collect();
    h.push_str(
        "<section id=\"checks-section\">\n<h2>Checks</h2>\n<div class=\"filters\">\n\
         <label>status <select id=\"f-status\"><option value=\"\">all</option>\
         <option value=\"passed\">passed</option><option value=\"failed\">failed</option>\
         <option value=\"skipped\">skipped</option><option value=\"error\">error</option>\
         </select></label>\n<label>tester <select id=\"f-tester\"><option value=\"\">all</option>",
    );
    for tester in &testers {
        let _ = write!(h, "<option value=\"{0}\">{0}</option>", esc(tester));
    }
    let _ = write!(
        h,
        "</select></label>\n<label>text <input id=\"f-text\" type=\"search\" \
         placeholder=\"id, message, measurement\"></label>\n<span class=\"shown\">showing \
         <span id=\"shown\">{n} of {n}</span></span>\n</div>\n",
        n = report.results.len()
    );
    h.push_str(
        "<table id=\"checks\">\n<thead><tr><th>status</th><th>check</th><th>tester</th>\
         <th>category</th><th class=\"num\">duration</th><th class=\"num\">attempts</th>\
         <th>message</th><th>measurements</th></tr></thead>\n<tbody>\n",
    );
    for r in &report.results {
        check_row(&mut h, r);
    }
    h.push_str("</tbody>\n</table>\n</section>\n");

    // Load scenarios.
    let loads: Vec<(&JsonResult, &Value)> = report
        .results
        .iter()
        .filter(|r| r.category == "load")
        .filter_map(|r| r.details.get("load").map(|v| (r, v)))
        .collect();
    if !loads.is_empty() {
        h.push_str("<section id=\"load\">\n<h2>Load scenarios</h2>\n");
        for (i, (r, load)) in loads.iter().enumerate() {
            load_section(&mut h, i, r, load);
        }
        h.push_str("</section>\n");
    }

    // Leftovers.
    if !report.leftovers.is_empty() {
        let _ = write!(
            h,
            "<section id=\"leftovers\">\n<h2>Left behind ({} objects could not be removed)</h2>\n\
             <table><thead><tr><th>object</th><th>service</th><th>check</th><th>reason</th>\
             </tr></thead><tbody>\n",
            report.leftovers.len()
        );
        for l in &report.leftovers {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&l.object),
                esc(&l.service),
                esc(l.check.as_str()),
                esc(&l.reason)
            );
        }
        h.push_str("</tbody></table>\n</section>\n");
    }

    let _ = write!(
        h,
        "</main>\n<footer>{} · generated by citadel-itest</footer>\n<script>{JS}</script>\n\
         </body>\n</html>\n",
        esc(&report.schema)
    );
    h
}

fn counts_table(
    h: &mut String,
    title: &str,
    id: &str,
    groups: &std::collections::BTreeMap<String, JsonCounts>,
) {
    let _ = writeln!(
        h,
        "<table id=\"{id}\" class=\"counts\"><caption>{title}</caption><thead><tr><th></th>\
         <th class=\"num\">total</th><th class=\"num\">passed</th><th class=\"num\">failed</th>\
         <th class=\"num\">skipped</th><th class=\"num\">errors</th><th class=\"num\">success</th>\
         </tr></thead><tbody>"
    );
    for (name, c) in groups {
        let _ = writeln!(
            h,
            "<tr><th>{}</th><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td></tr>",
            esc(name),
            c.total,
            c.passed,
            c.failed,
            c.skipped,
            c.errors,
            esc(&rate_text(c.success_rate))
        );
    }
    h.push_str("</tbody></table>\n");
}

fn check_row(h: &mut String, r: &JsonResult) {
    let status = status_word(r.status);
    let mut label = status.to_string();
    if let Some(kind) = r.error_kind {
        label = format!("error ({kind})");
    }
    let _ = write!(
        h,
        "<tr data-status=\"{status}\" data-tester=\"{tester}\"><td><span class=\"badge \
         {status}\">{label}</span></td><td class=\"id\">{id}</td><td>{tester}</td><td>{cat}</td>\
         <td class=\"num\">{dur}</td><td class=\"num\">{att}</td><td class=\"msg\">{msg}</td><td>",
        tester = esc(&r.tester),
        label = esc(&label),
        id = esc(&r.id),
        cat = esc(&r.category),
        dur = esc(&duration_text(r.duration_ms)),
        att = r.attempts,
        msg = esc(r.message.as_deref().unwrap_or("")),
    );
    if !r.measurements.is_empty() {
        h.push_str("<ul class=\"ms\">");
        for m in &r.measurements {
            let violated = m.violation().is_some();
            let _ = write!(
                h,
                "<li{}><span class=\"mn\">{}</span> {}",
                if violated { " class=\"bad\"" } else { "" },
                esc(&m.name),
                esc(&measurement_value(m))
            );
            if let Some(t) = m.threshold {
                let _ = write!(
                    h,
                    " <span class=\"th\">({}{})</span>",
                    esc(&t.to_string()),
                    { esc(m.unit.suffix()) }
                );
            }
            h.push_str("</li>");
        }
        h.push_str("</ul>");
    }
    h.push_str("</td></tr>\n");
}

fn num(v: Option<&Value>) -> Option<f64> {
    v.and_then(Value::as_f64).filter(|x| x.is_finite())
}

fn opt_text(v: Option<f64>, suffix: &str, decimals: usize) -> String {
    match v {
        Some(x) => format!("{}{suffix}", fmt_fixed(x, decimals)),
        None => "n/a".to_string(),
    }
}

const PERCENTILES: [(&str, &str); 6] = [
    ("p50", "p50"),
    ("p90", "p90"),
    ("p95", "p95"),
    ("p99", "p99"),
    ("p99_9", "p99.9"),
    ("p99_99", "p99.99"),
];

fn load_section(h: &mut String, index: usize, r: &JsonResult, load: &Value) {
    let scenario = load
        .get("scenario")
        .and_then(Value::as_str)
        .unwrap_or(r.id.as_str());
    let _ = write!(
        h,
        "<article class=\"scenario\" id=\"load-{index}\">\n<h3>{} <span class=\"badge {}\">{}\
         </span></h3>\n",
        esc(scenario),
        status_word(r.status),
        status_word(r.status)
    );
    if !load.is_object() {
        h.push_str(
            "<p class=\"bad\">the load result of this check is not an object</p>\n</article>\n",
        );
        return;
    }
    let model = load.get("model").and_then(Value::as_str).unwrap_or("");
    let counts = load.get("counts");
    let derived = load.get("derived");
    let requests = num(counts.and_then(|c| c.get("requests")));
    let ok = num(counts.and_then(|c| c.get("ok")));
    let dropped = num(counts.and_then(|c| c.get("dropped")));
    let rps = num(derived.and_then(|d| d.get("rps")));
    let error_rate = num(derived.and_then(|d| d.get("error_rate")));
    let duration_s = num(load.get("duration_s"));
    let http = load.get("metrics").and_then(|m| m.get("http_req_duration"));
    let _ = write!(
        h,
        "<p class=\"meta\">check <code>{}</code> · {} · {}</p>\n<dl class=\"figures\">",
        esc(&r.id),
        esc(model),
        esc(&opt_text(duration_s, " s", 2))
    );
    for (label, value) in [
        ("requests", opt_text(requests, "", 0)),
        ("ok", opt_text(ok, "", 0)),
        ("dropped", opt_text(dropped, "", 0)),
        ("rps", opt_text(rps, "", 1)),
        (
            "error rate",
            opt_text(error_rate.map(|e| e * 100.0), " %", 2),
        ),
        (
            "p50",
            opt_text(num(http.and_then(|m| m.get("p50"))), " ms", 2),
        ),
        (
            "p95",
            opt_text(num(http.and_then(|m| m.get("p95"))), " ms", 2),
        ),
        (
            "p99",
            opt_text(num(http.and_then(|m| m.get("p99"))), " ms", 2),
        ),
    ] {
        let _ = write!(h, "<div><dt>{}</dt><dd>{}</dd></div>", label, esc(&value));
    }
    h.push_str("</dl>\n");
    if let Some(stopped) = load.get("stopped").and_then(Value::as_str) {
        let _ = writeln!(h, "<p class=\"bad\">stopped early: {}</p>", esc(stopped));
    }
    if let Some(errors) = counts
        .and_then(|c| c.get("errors"))
        .and_then(Value::as_object)
        .filter(|e| !e.is_empty())
    {
        h.push_str("<p>errors: ");
        let parts: Vec<String> = errors
            .iter()
            .map(|(k, v)| format!("{} {}", esc(k), esc(&v.to_string())))
            .collect();
        h.push_str(&parts.join(", "));
        h.push_str("</p>\n");
    }

    // Thresholds.
    if let Some(ths) = load
        .get("thresholds")
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty())
    {
        h.push_str("<ul class=\"thresholds\">");
        for t in ths {
            let passed = t.get("passed").and_then(Value::as_bool).unwrap_or(false);
            let text = t
                .get("message")
                .or_else(|| t.get("text"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let _ = write!(
                h,
                "<li class=\"{}\">{} {}</li>",
                if passed { "good" } else { "bad" },
                if passed { "✔" } else { "✘" },
                esc(text)
            );
        }
        h.push_str("</ul>\n");
    }

    h.push_str("<div class=\"charts\">\n");
    // Latency percentiles of http_req_duration (and ttft for streams).
    for metric in ["http_req_duration", "ttft"] {
        let Some(table) = load.get("metrics").and_then(|m| m.get(metric)) else {
            continue;
        };
        if num(table.get("count")).unwrap_or(0.0) <= 0.0 {
            continue;
        }
        let unit = table.get("unit").and_then(Value::as_str).unwrap_or("ms");
        let bars: Vec<(String, Option<f64>)> = PERCENTILES
            .iter()
            .map(|(key, label)| (label.to_string(), num(table.get(*key))))
            .collect();
        h.push_str(&bar_chart(
            &format!("{metric} percentiles ({unit})"),
            &format!("chart-percentiles-{index}-{metric}"),
            &bars,
            unit,
            "#3b6fd4",
        ));
    }
    // Histogram.
    if let Some(buckets) = load
        .get("buckets")
        .and_then(|b| b.get("http_req_duration"))
        .and_then(Value::as_array)
        .filter(|b| !b.is_empty())
    {
        let bars: Vec<(String, Option<f64>)> = buckets
            .iter()
            .map(|b| {
                let le = num(b.get("le")).map_or_else(|| "?".to_string(), |x| fmt_fixed(x, 3));
                (format!("≤{le}"), num(b.get("count")))
            })
            .collect();
        h.push_str(&bar_chart(
            "http_req_duration histogram (requests per bucket, ms)",
            &format!("chart-histogram-{index}"),
            &bars,
            "",
            "#7a55c7",
        ));
    }
    // Over time.
    if let Some(seconds) = load
        .get("series")
        .and_then(|s| s.get("seconds"))
        .and_then(Value::as_array)
        .filter(|s| !s.is_empty())
    {
        let t: Vec<f64> = seconds
            .iter()
            .enumerate()
            .map(|(i, p)| num(p.get("t")).unwrap_or(i as f64))
            .collect();
        let field =
            |name: &str| -> Vec<Option<f64>> { seconds.iter().map(|p| num(p.get(name))).collect() };
        h.push_str(&line_chart(
            "throughput and errors per second",
            &format!("chart-throughput-{index}"),
            &t,
            &[
                ("ok/s", "#2e9e4f", field("ok")),
                ("errors/s", "#d43b3b", field("errors")),
                ("dropped/s", "#e08a1e", field("dropped")),
            ],
            false,
        ));
        h.push_str(&line_chart(
            "latency over time (ms)",
            &format!("chart-latency-{index}"),
            &t,
            &[
                ("p50", "#3b6fd4", field("p50_ms")),
                ("p95", "#e08a1e", field("p95_ms")),
                ("p99", "#d43b3b", field("p99_ms")),
            ],
            true,
        ));
    }
    h.push_str("</div>\n");

    // Every metric's percentile table.
    if let Some(metrics) = load
        .get("metrics")
        .and_then(Value::as_object)
        .filter(|m| !m.is_empty())
    {
        h.push_str(
            "<table class=\"metrics\"><thead><tr><th>metric</th><th>unit</th>\
             <th class=\"num\">count</th><th class=\"num\">min</th><th class=\"num\">mean</th>",
        );
        for (_, label) in PERCENTILES {
            let _ = write!(h, "<th class=\"num\">{label}</th>");
        }
        h.push_str("<th class=\"num\">max</th></tr></thead><tbody>\n");
        for (name, table) in metrics {
            let _ = write!(
                h,
                "<tr><th>{}</th><td>{}</td><td class=\"num\">{}</td>",
                esc(name),
                esc(table.get("unit").and_then(Value::as_str).unwrap_or("")),
                esc(&opt_text(num(table.get("count")), "", 0))
            );
            for key in ["min", "mean"]
                .into_iter()
                .chain(PERCENTILES.iter().map(|(k, _)| *k))
                .chain(["max"])
            {
                let _ = write!(
                    h,
                    "<td class=\"num\">{}</td>",
                    esc(&opt_text(num(table.get(key)), "", 3))
                );
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</tbody></table>\n");
    }
    h.push_str("</article>\n");
}

const CHART_W: f64 = 600.0;
const CHART_H: f64 = 240.0;
const PAD_L: f64 = 56.0;
const PAD_R: f64 = 12.0;
const PAD_T: f64 = 28.0;
const PAD_B: f64 = 44.0;

/// A "nice" upper bound for an axis: 1, 2, 2.5 or 5 times a power of ten, at least `max`.
fn nice_max(max: f64) -> f64 {
    if !max.is_finite() || max <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(max.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * p >= max {
            return m * p;
        }
    }
    10.0 * p
}

fn svg_open(out: &mut String, title: &str, id: &str) {
    let _ = write!(
        out,
        "<figure class=\"chart\"><svg id=\"{id}\" xmlns=\"http://www.w3.org/2000/svg\" \
         viewBox=\"0 0 {CHART_W} {CHART_H}\" role=\"img\" aria-label=\"{t}\">\
         <text x=\"{PAD_L}\" y=\"16\" class=\"ct\">{t}</text>",
        id = esc(id),
        t = esc(title)
    );
}

fn y_axis(out: &mut String, top: f64, unit: &str) {
    let plot_h = CHART_H - PAD_T - PAD_B;
    for i in 0..=4 {
        let v = top * i as f64 / 4.0;
        let y = PAD_T + plot_h - plot_h * i as f64 / 4.0;
        let _ = write!(
            out,
            "<line x1=\"{PAD_L}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" class=\"grid\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" class=\"yl\">{}</text>",
            CHART_W - PAD_R,
            PAD_L - 6.0,
            y + 4.0,
            esc(&format!("{}{unit}", fmt_fixed(v, 2)))
        );
    }
}

/// Vertical bars with a label under each (labels thinned out when there are many).
fn bar_chart(
    title: &str,
    id: &str,
    bars: &[(String, Option<f64>)],
    unit: &str,
    colour: &str,
) -> String {
    let mut out = String::new();
    svg_open(&mut out, title, id);
    let max = bars.iter().filter_map(|(_, v)| *v).fold(0.0f64, f64::max);
    let top = nice_max(max);
    y_axis(&mut out, top, if unit == "ms" { "" } else { unit });
    let plot_w = CHART_W - PAD_L - PAD_R;
    let plot_h = CHART_H - PAD_T - PAD_B;
    let n = bars.len().max(1);
    let slot = plot_w / n as f64;
    let label_every = n.div_ceil(12);
    for (i, (label, value)) in bars.iter().enumerate() {
        let x = PAD_L + slot * i as f64;
        if let Some(v) = value {
            let bh = (v / top).clamp(0.0, 1.0) * plot_h;
            let _ = write!(
                out,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{colour}\">\
                 <title>{}: {}</title></rect>",
                x + slot * 0.12,
                PAD_T + plot_h - bh,
                (slot * 0.76).max(0.5),
                esc(label),
                esc(&fmt_fixed(*v, 3))
            );
            if n <= 12 {
                let _ = write!(
                    out,
                    "<text x=\"{:.1}\" y=\"{:.1}\" class=\"vl\">{}</text>",
                    x + slot / 2.0,
                    PAD_T + plot_h - bh - 4.0,
                    esc(&fmt_fixed(*v, 2))
                );
            }
        }
        if i % label_every == 0 {
            let _ = write!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" class=\"xl\">{}</text>",
                x + slot / 2.0,
                CHART_H - PAD_B + 16.0,
                esc(label)
            );
        }
    }
    out.push_str("</svg></figure>\n");
    out
}

/// Merge a long series into at most [`MAX_SERIES_POINTS`] bins: the bin's mean (rates) or
/// maximum (latencies).
fn downsample(t: &[f64], ys: &[Option<f64>], use_max: bool) -> (Vec<f64>, Vec<Option<f64>>) {
    if t.len() <= MAX_SERIES_POINTS {
        return (t.to_vec(), ys.to_vec());
    }
    let k = t.len().div_ceil(MAX_SERIES_POINTS);
    let mut tx = Vec::new();
    let mut out = Vec::new();
    for (tc, yc) in t.chunks(k).zip(ys.chunks(k)) {
        tx.push(tc[0]);
        let vals: Vec<f64> = yc.iter().filter_map(|v| *v).collect();
        out.push(if vals.is_empty() {
            None
        } else if use_max {
            Some(vals.iter().copied().fold(f64::MIN, f64::max))
        } else {
            Some(vals.iter().sum::<f64>() / yc.len() as f64)
        });
    }
    (tx, out)
}

/// A series ready to draw: name, colour, times, values.
type Sampled<'a> = (&'a str, &'a str, Vec<f64>, Vec<Option<f64>>);

/// Lines over time; a missing value breaks its line.
fn line_chart(
    title: &str,
    id: &str,
    t: &[f64],
    series: &[(&str, &str, Vec<Option<f64>>)],
    use_max: bool,
) -> String {
    let mut out = String::new();
    svg_open(&mut out, title, id);
    let sampled: Vec<Sampled<'_>> = series
        .iter()
        .map(|(name, colour, ys)| {
            let (tx, ys) = downsample(t, ys, use_max);
            (*name, *colour, tx, ys)
        })
        .collect();
    let max = sampled
        .iter()
        .flat_map(|(_, _, _, ys)| ys.iter().filter_map(|v| *v))
        .fold(0.0f64, f64::max);
    let top = nice_max(max);
    y_axis(&mut out, top, "");
    let plot_w = CHART_W - PAD_L - PAD_R;
    let plot_h = CHART_H - PAD_T - PAD_B;
    let t0 = t.first().copied().unwrap_or(0.0);
    let t1 = t.last().copied().unwrap_or(1.0).max(t0 + 1.0);
    let px = |x: f64| PAD_L + (x - t0) / (t1 - t0) * plot_w;
    let py = |y: f64| PAD_T + plot_h - (y / top).clamp(0.0, 1.0) * plot_h;
    // Whole seconds unless the run is too short for five distinct ones.
    let decimals = if t1 - t0 < 8.0 { 1 } else { 0 };
    for i in 0..=4 {
        let x = t0 + (t1 - t0) * i as f64 / 4.0;
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" class=\"xl\">{}s</text>",
            px(x),
            CHART_H - PAD_B + 16.0,
            fmt_fixed(x, decimals)
        );
    }
    for (si, (name, colour, tx, ys)) in sampled.iter().enumerate() {
        let mut segment: Vec<String> = Vec::new();
        let flush = |segment: &mut Vec<String>, out: &mut String| {
            if segment.len() == 1 {
                let _ = write!(
                    out,
                    "<circle r=\"2\" fill=\"{colour}\" cx=\"{}\"/>",
                    segment[0].replace(',', "\" cy=\"")
                );
            } else if segment.len() > 1 {
                let _ = write!(
                    out,
                    "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.6\" \
                     points=\"{}\"/>",
                    segment.join(" ")
                );
            }
            segment.clear();
        };
        for (x, y) in tx.iter().zip(ys) {
            match y {
                Some(y) => segment.push(format!("{:.1},{:.1}", px(*x), py(*y))),
                None => flush(&mut segment, &mut out),
            }
        }
        flush(&mut segment, &mut out);
        // Legend.
        let lx = PAD_L + 8.0 + 90.0 * si as f64;
        let _ = write!(
            out,
            "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{colour}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" class=\"lg\">{}</text>",
            CHART_H - 16.0,
            lx + 14.0,
            CHART_H - 7.0,
            esc(name)
        );
    }
    out.push_str("</svg></figure>\n");
    out
}

const CSS: &str = r#"
:root{--ok:#2e9e4f;--bad:#d43b3b;--skip:#8a8f98;--err:#e08a1e;--fg:#1d2330;--mut:#5d6675;--line:#dfe3ea}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:#f6f7f9}
header.top{padding:18px 28px;color:#fff;background:#3f4a5c}header.passed{background:#23753c}header.failed{background:#a62c2c}header.interrupted{background:#a8631a}
h1{margin:0;font-size:22px}h2{margin:28px 0 10px;font-size:18px}h3{margin:6px 0;font-size:16px}.meta{margin:4px 0 0;opacity:.9}
main{padding:0 28px 28px}code{font-family:ui-monospace,Menlo,Consolas,monospace}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{display:flex;flex-direction:column;min-width:110px;padding:10px 14px;border:1px solid var(--line);border-radius:8px;background:#fff;font:inherit;text-align:left;cursor:pointer}
.card .n{font-size:26px;font-weight:600}.card .l{color:var(--mut)}.card.passed .n{color:var(--ok)}.card.failed .n{color:var(--bad)}.card.error .n{color:var(--err)}.card.skipped .n{color:var(--skip)}.card.rate{cursor:default}
.groups{display:flex;flex-wrap:wrap;gap:24px;margin-top:16px}
table{border-collapse:collapse;background:#fff;border:1px solid var(--line)}th,td{padding:5px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
caption{text-align:left;font-weight:600;padding:4px 0}.num{text-align:right;font-variant-numeric:tabular-nums}
#checks{width:100%}#checks td.id{font-family:ui-monospace,Menlo,Consolas,monospace;word-break:break-all}td.msg{white-space:pre-wrap;max-width:42em;word-break:break-word}
.badge{display:inline-block;padding:1px 7px;border-radius:10px;color:#fff;font-size:12px;white-space:nowrap}.badge.passed{background:var(--ok)}.badge.failed{background:var(--bad)}.badge.skipped{background:var(--skip)}.badge.error{background:var(--err)}
ul.ms,ul.thresholds{margin:0;padding-left:16px}.mn{font-family:ui-monospace,Menlo,Consolas,monospace}.th{color:var(--mut)}.bad{color:var(--bad)}.good{color:var(--ok)}
.filters{display:flex;flex-wrap:wrap;gap:14px;align-items:center;margin-bottom:8px}.shown{color:var(--mut)}
.scenario{background:#fff;border:1px solid var(--line);border-radius:8px;padding:12px 16px;margin-bottom:18px}
dl.figures{display:flex;flex-wrap:wrap;gap:18px;margin:10px 0}dl.figures dt{color:var(--mut);font-size:12px}dl.figures dd{margin:0;font-size:18px;font-weight:600}
.charts{display:flex;flex-wrap:wrap;gap:12px}figure.chart{margin:0;width:560px;max-width:100%}figure.chart svg{width:100%;height:auto;background:#fbfcfd;border:1px solid var(--line)}
svg .ct{font-size:13px;font-weight:600;fill:var(--fg)}svg .grid{stroke:#e6e9ef}svg .yl{font-size:10px;text-anchor:end;fill:var(--mut)}svg .xl,svg .vl{font-size:10px;text-anchor:middle;fill:var(--mut)}svg .lg{font-size:11px;fill:var(--fg)}
table.metrics{margin-top:12px}footer{padding:14px 28px;color:var(--mut)}
"#;

const JS: &str = r#"
(function(){
  var rows=Array.prototype.slice.call(document.querySelectorAll('#checks tbody tr'));
  var st=document.getElementById('f-status'),te=document.getElementById('f-tester'),tx=document.getElementById('f-text'),shown=document.getElementById('shown');
  function apply(){
    var s=st.value,t=te.value,q=tx.value.toLowerCase(),n=0;
    rows.forEach(function(r){
      var ok=(!s||r.getAttribute('data-status')===s)&&(!t||r.getAttribute('data-tester')===t)&&(!q||r.textContent.toLowerCase().indexOf(q)>=0);
      r.hidden=!ok;if(ok){n++;}
    });
    shown.textContent=n+' of '+rows.length;
  }
  [st,te,tx].forEach(function(e){e.addEventListener('input',apply);e.addEventListener('change',apply);});
  Array.prototype.forEach.call(document.querySelectorAll('[data-filter-status]'),function(b){
    b.addEventListener('click',function(){st.value=b.getAttribute('data-filter-status');apply();});
  });
  // A filter in the address: report.html#status=failed&tester=basic&q=timeout
  (location.hash||'').replace(/^#/,'').split('&').forEach(function(kv){
    var i=kv.indexOf('=');if(i<0){return;}
    var k=kv.slice(0,i),v=decodeURIComponent(kv.slice(i+1).replace(/\+/g,' '));
    if(k==='status'){st.value=v;}else if(k==='tester'){te.value=v;}else if(k==='q'){tx.value=v;}
  });
  apply();
  document.body.setAttribute('data-ready','1');
})();
"#;

/// Collects results and writes `report.html` when the run finishes.
pub struct HtmlReporter(Document);

impl HtmlReporter {
    /// Write to a file (atomically, at the end of the run).
    pub fn to_file(path: impl Into<std::path::PathBuf>) -> Self {
        HtmlReporter(Document::file(path))
    }

    /// Write into a shared buffer (tests, embedding).
    pub fn to_memory(buf: std::sync::Arc<std::sync::Mutex<Vec<u8>>>) -> Self {
        HtmlReporter(Document::memory(buf))
    }
}

impl Reporter for HtmlReporter {
    fn run_started(&mut self, plan: &RunPlan) -> Result<(), ReportError> {
        self.0.start(plan)
    }

    fn check_finished(&mut self, result: &TestResult) -> Result<(), ReportError> {
        self.0.add(result)
    }

    fn run_finished(&mut self, summary: &RunSummary) -> Result<(), ReportError> {
        let report = self.0.report(summary);
        self.0.write("html", render_html(&report).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_special_character() {
        assert_eq!(
            escape_html(r#"<a href="x" onclick='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
    }

    #[test]
    fn nice_axis_bounds() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(180.0), 200.0);
        assert_eq!(nice_max(2.2), 2.5);
        assert_eq!(nice_max(f64::NAN), 1.0);
    }

    #[test]
    fn long_series_are_binned() {
        let t: Vec<f64> = (0..6000).map(f64::from).collect();
        let ys: Vec<Option<f64>> = (0..6000).map(|i| Some(f64::from(i % 10))).collect();
        let (tx, out) = downsample(&t, &ys, true);
        assert_eq!(tx.len(), 600);
        assert!(out.iter().all(|v| *v == Some(9.0)));
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration_text(850.0), "850 ms");
        assert_eq!(duration_text(2254.0), "2.25 s");
        assert_eq!(duration_text(185_000.0), "3 min 5 s");
    }
}
