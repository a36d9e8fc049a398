//! The lint: what `promtool check metrics` would say, and a little more (histogram shape).

use std::collections::{BTreeMap, HashMap};

use super::parse::parse_float;
use super::{Exposition, Family, Finding, Format, MetricType, Sample, series_text};

/// Non-base units and the base unit to use instead.
const NON_BASE_UNITS: &[(&str, &str)] = &[
    ("nanoseconds", "seconds"),
    ("microseconds", "seconds"),
    ("milliseconds", "seconds"),
    ("minutes", "seconds"),
    ("hours", "seconds"),
    ("days", "seconds"),
    ("kilobytes", "bytes"),
    ("megabytes", "bytes"),
    ("gigabytes", "bytes"),
    ("terabytes", "bytes"),
    ("kibibytes", "bytes"),
    ("mebibytes", "bytes"),
    ("gibibytes", "bytes"),
    ("millimeters", "meters"),
    ("centimeters", "meters"),
    ("kilometers", "meters"),
    ("milligrams", "grams"),
    ("kilograms", "grams"),
    ("millivolts", "volts"),
    ("milliamperes", "amperes"),
    ("kilojoules", "joules"),
];

/// Abbreviated units and the word to use instead.
const ABBREVIATED_UNITS: &[(&str, &str)] = &[
    ("ms", "seconds"),
    ("msec", "seconds"),
    ("us", "seconds"),
    ("usec", "seconds"),
    ("ns", "seconds"),
    ("sec", "seconds"),
    ("secs", "seconds"),
    ("kb", "bytes"),
    ("mb", "bytes"),
    ("gb", "bytes"),
];

/// Lint an exposition: each finding names the metric, and the line where one line is at
/// fault. Kinds: `missing_help`, `missing_type`, `counter_suffix`, `counter_negative`,
/// `unit_suffix`, `camel_case`, `reserved_chars`, `invalid_name`, `invalid_label_name`,
/// `reserved_suffix`, `reserved_label`, `duplicate_series`, `histogram_no_inf`,
/// `histogram_bad_le`, `histogram_not_cumulative`, `histogram_inf_count`,
/// `histogram_missing_sum`, `histogram_missing_count`, `summary_quantile`. Parse findings are
/// in [`Exposition::findings`], not repeated here.
pub fn lint(exp: &Exposition) -> Vec<Finding> {
    let mut out = Vec::new();
    for fam in &exp.families {
        lint_family(exp.format, fam, &mut out);
    }
    duplicates(exp, &mut out);
    out
}

fn lint_family(format: Format, fam: &Family, out: &mut Vec<Finding>) {
    let name = fam.name.as_str();
    let at = Some(fam.line);
    let mut push = |kind: &'static str, message: String| {
        out.push(Finding::new(at, Some(name), kind, message));
    };
    if fam.help.is_none() {
        push("missing_help", "no `# HELP` line".into());
    }
    if !fam.typed {
        push("missing_type", "no `# TYPE` line".into());
    }
    if name.starts_with("__") {
        push(
            "invalid_name",
            "names starting with `__` are reserved for Prometheus".into(),
        );
    }
    if name.contains(':') {
        push(
            "reserved_chars",
            "`:` is reserved for recording rules".into(),
        );
    }
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        push("camel_case", "metric names are snake_case".into());
    }
    let tokens: Vec<&str> = name.split('_').collect();
    for (i, token) in tokens.iter().enumerate() {
        if let Some((_, base)) = NON_BASE_UNITS.iter().find(|(u, _)| u == token) {
            push(
                "unit_suffix",
                format!("use the base unit: `_{base}`, not `_{token}`"),
            );
        }
        // An abbreviation counts only where a unit goes: last, or before `_total` & co.
        let unit_position = tokens[i + 1..]
            .iter()
            .all(|t| ["total", "bucket", "sum", "count", "created"].contains(t));
        if !unit_position {
            continue;
        }
        if let Some((_, base)) = ABBREVIATED_UNITS.iter().find(|(u, _)| u == token) {
            push(
                "unit_suffix",
                format!("write the unit out in its base form: `_{base}`, not `_{token}`"),
            );
        }
    }
    if let Some(unit) = fam.unit.as_deref().filter(|u| !u.is_empty()) {
        if !name.ends_with(&format!("_{unit}")) {
            push(
                "unit_suffix",
                format!("declares unit `{unit}` but its name does not end in `_{unit}`"),
            );
        }
    }
    let histogram_like = matches!(
        fam.kind,
        MetricType::Histogram | MetricType::GaugeHistogram | MetricType::Summary
    );
    if !histogram_like && fam.kind != MetricType::Counter {
        for suffix in ["_bucket", "_count", "_sum"] {
            if name.ends_with(suffix) {
                push(
                    "reserved_suffix",
                    format!(
                        "a {} named `…{suffix}` (the suffix is for histograms and summaries)",
                        fam.kind
                    ),
                );
            }
        }
    }
    match fam.kind {
        MetricType::Counter => {
            let names: Vec<&str> = fam
                .samples
                .iter()
                .map(|s| s.name.as_str())
                .filter(|n| !n.ends_with("_created"))
                .collect();
            let bad = if names.is_empty() {
                format == Format::Text && !name.ends_with("_total")
            } else {
                names.iter().any(|n| !n.ends_with("_total"))
            };
            if bad {
                push("counter_suffix", "counter names end in `_total`".into());
            }
        }
        MetricType::Histogram | MetricType::GaugeHistogram => histogram(fam, out),
        MetricType::Summary => summary(fam, out),
        _ => {}
    }
    for s in &fam.samples {
        sample(fam, s, out);
    }
}

fn sample(fam: &Family, s: &Sample, out: &mut Vec<Finding>) {
    let push = |out: &mut Vec<Finding>, kind: &'static str, message: String| {
        out.push(Finding::new(Some(s.line), Some(&s.name), kind, message));
    };
    for (k, _) in &s.labels {
        if k.starts_with("__") {
            push(
                out,
                "invalid_label_name",
                format!("label `{k}`: names starting with `__` are reserved"),
            );
        } else if k.chars().any(|c| c.is_ascii_uppercase()) {
            push(out, "camel_case", format!("label `{k}` is not snake_case"));
        }
        let histogram = matches!(fam.kind, MetricType::Histogram | MetricType::GaugeHistogram);
        if k == "le" && !(histogram && s.name.ends_with("_bucket")) {
            push(
                out,
                "reserved_label",
                format!(
                    "label `le` on a {} sample (it is for histogram buckets)",
                    fam.kind
                ),
            );
        }
        if k == "quantile" && fam.kind != MetricType::Summary {
            push(
                out,
                "reserved_label",
                format!(
                    "label `quantile` on a {} sample (it is for summaries)",
                    fam.kind
                ),
            );
        }
    }
    if fam.kind == MetricType::Counter && s.value < 0.0 {
        push(
            out,
            "counter_negative",
            format!("counter value {} is negative", s.value),
        );
    }
}

/// Labels without `le` / `quantile`, as a key.
fn group_key(s: &Sample, without: &str) -> String {
    series_text(
        "",
        s.labels
            .iter()
            .filter(|(k, _)| k != without)
            .map(|(k, v)| (k.as_str(), v.as_str())),
    )
}

#[derive(Default)]
struct Group<'a> {
    buckets: Vec<(f64, &'a Sample)>,
    sum: bool,
    count: Option<f64>,
    line: usize,
}

fn histogram(fam: &Family, out: &mut Vec<Finding>) {
    let (sum_suffix, count_suffix) = if fam.kind == MetricType::GaugeHistogram {
        ("_gsum", "_gcount")
    } else {
        ("_sum", "_count")
    };
    let bucket_name = format!("{}_bucket", fam.name);
    let sum_name = format!("{}{sum_suffix}", fam.name);
    let count_name = format!("{}{count_suffix}", fam.name);
    let mut groups: BTreeMap<String, Group<'_>> = BTreeMap::new();
    let mut push = |line: usize, kind: &'static str, message: String| {
        out.push(Finding::new(Some(line), Some(&fam.name), kind, message));
    };
    for s in &fam.samples {
        if s.name.ends_with("_created") {
            continue;
        }
        let key = group_key(s, "le");
        let g = groups.entry(key.clone()).or_insert_with(|| Group {
            line: s.line,
            ..Group::default()
        });
        if s.name == bucket_name {
            match s.label("le").map(|le| (le, parse_float(le))) {
                Some((_, Some(le))) if !le.is_nan() => g.buckets.push((le, s)),
                Some((le, _)) => push(
                    s.line,
                    "histogram_bad_le",
                    format!("bucket {}: `le=\"{le}\"` is not a number", s.series()),
                ),
                None => push(
                    s.line,
                    "histogram_bad_le",
                    format!("bucket {} has no `le` label", s.series()),
                ),
            }
        } else if s.name == sum_name {
            g.sum = true;
        } else if s.name == count_name {
            g.count = Some(s.value);
        } else {
            push(
                s.line,
                "histogram_sample_name",
                format!(
                    "sample `{}` is not `{bucket_name}`, `{sum_name}` or `{count_name}`",
                    s.name
                ),
            );
        }
    }
    for (key, g) in &mut groups {
        let series = if key.is_empty() {
            fam.name.clone()
        } else {
            format!("{}{key}", fam.name)
        };
        let line = g.line;
        if g.buckets.is_empty() {
            push(
                line,
                "histogram_no_inf",
                format!("{series} has no `_bucket` samples (at least `le=\"+Inf\"`)"),
            );
        } else {
            g.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            let inf = g.buckets.iter().find(|(le, _)| *le == f64::INFINITY);
            match inf {
                None => push(
                    line,
                    "histogram_no_inf",
                    format!("{series} has no `le=\"+Inf\"` bucket"),
                ),
                Some((_, b)) => {
                    if let Some(count) = g.count {
                        if b.value != count && !(b.value.is_nan() && count.is_nan()) {
                            push(
                                b.line,
                                "histogram_inf_count",
                                format!(
                                    "{series}: the `+Inf` bucket ({}) differs from `{count_name}` ({count})",
                                    b.value
                                ),
                            );
                        }
                    }
                }
            }
            for pair in g.buckets.windows(2) {
                let ((le_a, a), (le_b, b)) = (pair[0], pair[1]);
                if b.value < a.value {
                    push(
                        b.line,
                        "histogram_not_cumulative",
                        format!(
                            "{series}: bucket le={le_b} ({}) is below bucket le={le_a} ({})",
                            b.value, a.value
                        ),
                    );
                }
            }
        }
        if !g.sum {
            push(
                line,
                "histogram_missing_sum",
                format!("{series} has no `{sum_name}`"),
            );
        }
        if g.count.is_none() {
            push(
                line,
                "histogram_missing_count",
                format!("{series} has no `{count_name}`"),
            );
        }
    }
}

fn summary(fam: &Family, out: &mut Vec<Finding>) {
    for s in &fam.samples {
        if s.name != fam.name {
            continue;
        }
        match s.label("quantile") {
            None => out.push(Finding::new(
                Some(s.line),
                Some(&fam.name),
                "summary_quantile",
                format!("{} has no `quantile` label", s.series()),
            )),
            Some(q) => {
                let ok = parse_float(q).is_some_and(|v| (0.0..=1.0).contains(&v));
                if !ok {
                    out.push(Finding::new(
                        Some(s.line),
                        Some(&fam.name),
                        "summary_quantile",
                        format!("{}: quantile `{q}` is not a number from 0 to 1", s.series()),
                    ));
                }
            }
        }
    }
}

fn duplicates(exp: &Exposition, out: &mut Vec<Finding>) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (_, s) in exp.samples() {
        let mut labels: Vec<(&str, &str)> = s
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        labels.sort_unstable();
        let key = series_text(&s.name, labels.into_iter());
        if let Some(first) = seen.get(&key) {
            out.push(Finding::new(
                Some(s.line),
                Some(&s.name),
                "duplicate_series",
                format!("{key} is given again (first at line {first})"),
            ));
        } else {
            seen.insert(key, s.line);
        }
    }
}
