//! The metrics exposition formats: a parser for the Prometheus text format 0.0.4 and
//! OpenMetrics 1.0, and a lint in the spirit of `promtool check metrics`.
//!
//! [`parse`] never fails as a whole: every line it cannot read becomes a [`Finding`] naming the
//! line, and the rest is read. [`lint`] looks at what was read and reports what a careful
//! exposition would not do (no `# HELP`, a counter without `_total`, `_milliseconds`, duplicate
//! series, incomplete histograms, ...). Every finding has a stable [`Finding::kind`].
//!
//! ```
//! use citadel_itest_monitoring::exposition::{self, Format};
//!
//! let text = concat!(
//!     "# HELP http_requests_total Requests.\n",
//!     "# TYPE http_requests_total counter\n",
//!     "http_requests_total{path=\"/a,b=c\",code=\"200\"} 3 1700000000000\n",
//! );
//! let exp = exposition::parse(text.as_bytes());
//! assert!(exp.findings.is_empty());
//! assert_eq!(exp.format, Format::Text);
//! let s = &exp.families[0].samples[0];
//! assert_eq!(s.label("path"), Some("/a,b=c"));
//! assert_eq!(s.value, 3.0);
//! assert!(exposition::lint(&exp).is_empty());
//!
//! let bad = exposition::parse(b"# TYPE requests counter\nrequests{code=\"200} 1\n");
//! assert_eq!(bad.findings[0].kind, "parse");
//! assert_eq!(bad.findings[0].line, Some(2));
//! ```

mod lint;
mod parse;

/// Every finding kind [`parse`] and [`lint`] report, for validating `lint_ignore`.
pub const FINDING_KINDS: &[&str] = &[
    // parse
    "parse",
    "invalid_utf8",
    "truncated",
    "missing_eof",
    "after_eof",
    "duplicate_label",
    "duplicate_help",
    "duplicate_type",
    "duplicate_unit",
    "type_after_samples",
    "interleaved",
    "exemplar_misplaced",
    "exemplar_too_long",
    // lint
    "missing_help",
    "missing_type",
    "invalid_name",
    "reserved_chars",
    "camel_case",
    "unit_suffix",
    "reserved_suffix",
    "counter_suffix",
    "counter_negative",
    "invalid_label_name",
    "reserved_label",
    "duplicate_series",
    "histogram_no_inf",
    "histogram_bad_le",
    "histogram_not_cumulative",
    "histogram_inf_count",
    "histogram_missing_sum",
    "histogram_missing_count",
    "histogram_sample_name",
    "summary_quantile",
];

use std::fmt;

pub use lint::lint;
pub use parse::{parse, parse_as, parse_selector};

/// Which format a text is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    /// Prometheus text format 0.0.4 (`text/plain; version=0.0.4`).
    Text,
    /// OpenMetrics 1.0 (`application/openmetrics-text`).
    OpenMetrics,
}

impl Format {
    /// The format a `Content-Type` names: `application/openmetrics-text` is OpenMetrics,
    /// `text/plain` (with `version=0.0.4` or no version) is the text format; anything else
    /// (HTML, JSON, protobuf) is `None`.
    ///
    /// ```
    /// use citadel_itest_monitoring::exposition::Format;
    /// assert_eq!(Format::from_content_type("text/plain; version=0.0.4; charset=utf-8"), Some(Format::Text));
    /// assert_eq!(Format::from_content_type("application/openmetrics-text; version=1.0.0"), Some(Format::OpenMetrics));
    /// assert_eq!(Format::from_content_type("text/html"), None);
    /// ```
    pub fn from_content_type(content_type: &str) -> Option<Format> {
        let mut parts = content_type.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let version = parts.find_map(|p| {
            let (k, v) = p.split_once('=')?;
            (k.trim().eq_ignore_ascii_case("version"))
                .then(|| v.trim().trim_matches('"').to_string())
        });
        match media.as_str() {
            "application/openmetrics-text" => Some(Format::OpenMetrics),
            // 1.0.0 is 0.0.4 plus quoted UTF-8 names; lines using those are parse findings.
            "text/plain" => match version.as_deref() {
                None | Some("0.0.4") | Some("1.0.0") => Some(Format::Text),
                Some(_) => None,
            },
            _ => None,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Text => "text 0.0.4",
            Format::OpenMetrics => "OpenMetrics 1.0",
        })
    }
}

/// A metric family's declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MetricType {
    /// `counter`.
    Counter,
    /// `gauge`.
    Gauge,
    /// `histogram`.
    Histogram,
    /// `summary`.
    Summary,
    /// `untyped` (text format) — also what a family without `# TYPE` is.
    Untyped,
    /// `unknown` (OpenMetrics).
    Unknown,
    /// `info` (OpenMetrics).
    Info,
    /// `stateset` (OpenMetrics).
    StateSet,
    /// `gaugehistogram` (OpenMetrics).
    GaugeHistogram,
}

impl MetricType {
    /// The type from its `# TYPE` word.
    pub fn from_word(word: &str) -> Option<MetricType> {
        Some(match word {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" => MetricType::Histogram,
            "summary" => MetricType::Summary,
            "untyped" => MetricType::Untyped,
            "unknown" => MetricType::Unknown,
            "info" => MetricType::Info,
            "stateset" => MetricType::StateSet,
            "gaugehistogram" => MetricType::GaugeHistogram,
            _ => return None,
        })
    }

    /// The `# TYPE` word.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::Summary => "summary",
            MetricType::Untyped => "untyped",
            MetricType::Unknown => "unknown",
            MetricType::Info => "info",
            MetricType::StateSet => "stateset",
            MetricType::GaugeHistogram => "gaugehistogram",
        }
    }

    /// The suffixes a sample of a family of this type may add to the family name.
    pub(crate) fn suffixes(self) -> &'static [&'static str] {
        match self {
            MetricType::Counter => &["_total", "_created"],
            MetricType::Histogram => &["_bucket", "_sum", "_count", "_created"],
            MetricType::GaugeHistogram => &["_bucket", "_gsum", "_gcount"],
            MetricType::Summary => &["_sum", "_count", "_created"],
            MetricType::Info => &["_info"],
            _ => &[],
        }
    }
}

impl fmt::Display for MetricType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A sample's timestamp as written.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Timestamp {
    /// Text format: integer milliseconds since the epoch.
    Millis(i64),
    /// OpenMetrics: seconds since the epoch, maybe fractional.
    Seconds(f64),
}

impl Timestamp {
    /// Seconds since the epoch.
    pub fn as_seconds(self) -> f64 {
        match self {
            Timestamp::Millis(ms) => ms as f64 / 1000.0,
            Timestamp::Seconds(s) => s,
        }
    }
}

/// An OpenMetrics exemplar: `# {trace_id="abc"} 0.67 1700000000.1`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Exemplar {
    /// Its labels, in order.
    pub labels: Vec<(String, String)>,
    /// Its value.
    pub value: f64,
    /// Its timestamp (seconds), if given.
    pub timestamp: Option<f64>,
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Sample {
    /// The metric name as written: `http_request_duration_seconds_bucket`.
    pub name: String,
    /// Labels in the order written, values unescaped.
    pub labels: Vec<(String, String)>,
    /// The value (`NaN`, `±Inf` included).
    pub value: f64,
    /// The timestamp, if given.
    pub timestamp: Option<Timestamp>,
    /// The exemplar (OpenMetrics), if given.
    pub exemplar: Option<Exemplar>,
    /// 1-based line number.
    pub line: usize,
}

impl Sample {
    /// The value of label `name`.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `name{a="1",b="2"}`, values escaped as in the text format.
    pub fn series(&self) -> String {
        series_text(
            &self.name,
            self.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )
    }
}

/// `name{a="1",b="2"}`.
pub(crate) fn series_text<'a>(
    name: &str,
    labels: impl Iterator<Item = (&'a str, &'a str)>,
) -> String {
    let mut out = String::from(name);
    let mut first = true;
    for (k, v) in labels {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    if !first {
        out.push('}');
    }
    out
}

/// A metric family: its `# TYPE`, `# HELP`, `# UNIT` and samples.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Family {
    /// The family name (for an OpenMetrics counter, without `_total`).
    pub name: String,
    /// Its declared type; [`MetricType::Untyped`] when there is no `# TYPE`.
    pub kind: MetricType,
    /// Whether a `# TYPE` line declared it.
    pub typed: bool,
    /// The `# HELP` text, unescaped.
    pub help: Option<String>,
    /// The `# UNIT` (OpenMetrics).
    pub unit: Option<String>,
    /// Its samples in the order written.
    pub samples: Vec<Sample>,
    /// The first line that named it.
    pub line: usize,
}

/// Something wrong with an exposition, at a line or for a metric.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Finding {
    /// 1-based line number, when one line is at fault.
    pub line: Option<usize>,
    /// The metric (family or sample name) concerned, when known.
    pub metric: Option<String>,
    /// A stable id: `parse`, `invalid_utf8`, `missing_help`, `counter_suffix`, ...
    pub kind: &'static str,
    /// What is wrong, in words.
    pub message: String,
}

impl Finding {
    pub(crate) fn new(
        line: Option<usize>,
        metric: Option<&str>,
        kind: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Finding {
            line,
            metric: metric.map(str::to_string),
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if let Some(metric) = &self.metric {
            write!(f, "{metric}: ")?;
        }
        write!(f, "{} [{}]", self.message, self.kind)
    }
}

/// What [`parse`] read.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Exposition {
    /// The format it was read as.
    pub format: Format,
    /// Families in the order first seen.
    pub families: Vec<Family>,
    /// Lines that could not be read, and format rules broken while reading.
    pub findings: Vec<Finding>,
    /// How many lines the text had.
    pub lines: usize,
}

impl Exposition {
    /// Every sample of every family.
    pub fn samples(&self) -> impl Iterator<Item = (&Family, &Sample)> {
        self.families
            .iter()
            .flat_map(|f| f.samples.iter().map(move |s| (f, s)))
    }

    /// The family called `name`; a counter is also found by its name with or without
    /// `_total` (`http_requests` and `http_requests_total` find the same counter in either
    /// format).
    pub fn family(&self, name: &str) -> Option<&Family> {
        let counter = |n: &str| {
            self.families
                .iter()
                .find(|f| f.name == n && f.kind == MetricType::Counter)
        };
        self.families.iter().find(|f| f.name == name).or_else(|| {
            match name.strip_suffix("_total") {
                Some(base) => counter(base),
                None => counter(&format!("{name}_total")),
            }
        })
    }

    /// How many samples it holds.
    pub fn series_count(&self) -> usize {
        self.families.iter().map(|f| f.samples.len()).sum()
    }
}

/// A series selector: `name` or `name{label="value",...}` (exact matches).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Selector {
    /// The sample name.
    pub name: String,
    /// Labels that must have these values.
    pub labels: Vec<(String, String)>,
}

impl Selector {
    /// Whether `sample` is selected.
    pub fn matches(&self, sample: &Sample) -> bool {
        sample.name == self.name
            && self
                .labels
                .iter()
                .all(|(k, v)| sample.label(k) == Some(v.as_str()))
    }

    /// The samples of `exp` it selects.
    pub fn select<'a>(&'a self, exp: &'a Exposition) -> impl Iterator<Item = &'a Sample> + 'a {
        exp.samples()
            .map(|(_, s)| s)
            .filter(move |s| self.matches(s))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&series_text(
            &self.name,
            self.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        ))
    }
}
