//! Exporting run results as Prometheus metrics: pushed to a Pushgateway
//! ([`PushgatewayReporter`]) or written as a node_exporter textfile ([`TextfileReporter`]).
//!
//! Both are core [`Reporter`]s: they collect every check's result and, when the run finishes,
//! render the same metrics ([`render`]) in the Prometheus text format 0.0.4:
//!
//! | metric | labels | value |
//! |---|---|---|
//! | `citadel_itest_check_success` | `tester`, `check`, `category` | 1 passed, 0 otherwise |
//! | `citadel_itest_check_status` | ..., `status` | 1 for the check's status (`passed`, `failed`, `skipped`, `error`), 0 for the other three |
//! | `citadel_itest_check_duration_seconds` | `tester`, `check`, `category` | wall time, all attempts |
//! | `citadel_itest_check_attempts` | `tester`, `check`, `category` | attempts made |
//! | `citadel_itest_check_measurement` | ..., `measurement`, `unit` | the measurement in its unit (`ms`, `s`, `bytes`, `count`, `percent`, `rps`, `ratio`); absent when it has no value |
//! | `citadel_itest_run_info` | `run_id` | 1 |
//! | `citadel_itest_run_success_rate` | | passed / (total - skipped), 0-1; absent when nothing ran |
//! | `citadel_itest_run_checks` | `status` | checks per status |
//! | `citadel_itest_run_duration_seconds` | | wall time of the run |
//! | `citadel_itest_run_timestamp_seconds` | | Unix time the run finished |
//! | `citadel_itest_run_interrupted` | | 1 when the run was interrupted (Ctrl-C) |
//! | `citadel_itest_run_leftovers` | | objects the run created and could not remove |
//!
//! All are gauges. The Pushgateway reporter `PUT`s them to
//! `<url>/metrics/job/citadel_itest/instance/<instance>` (the instance defaults to the host
//! name): a stable grouping key, so each run replaces the previous run's metrics of the same
//! job and instance, and a check that no longer runs disappears with it.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use citadel_itest_core::config::redact_url;
use citadel_itest_core::http::{BodyLimit, excerpt, read_body};
use citadel_itest_core::report::write_atomic;
use citadel_itest_core::{
    CheckId, ReportError, Reporter, RunPlan, RunSummary, Status, TestResult, Unit, error_chain,
    io_error_words_in_chain,
};

/// The Pushgateway `job` of the grouping key unless told otherwise.
pub const DEFAULT_JOB: &str = "citadel_itest";

/// How long a push may take, connection and answer included, unless told otherwise.
pub const DEFAULT_PUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// The most bytes of a Pushgateway's error answer that are read (an excerpt is shown).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The content type of the Prometheus text format.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// An exporter was given something it cannot use.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The Pushgateway URL is not an absolute `http(s)://` URL.
    #[error("invalid Pushgateway URL `{url}`: {why}")]
    InvalidUrl {
        /// The URL, password redacted.
        url: String,
        /// Why it is refused.
        why: String,
    },
    /// A grouping label name or value cannot be used.
    #[error("invalid Pushgateway grouping label `{name}`: {why}")]
    InvalidLabel {
        /// The label name.
        name: String,
        /// Why it is refused.
        why: String,
    },
    /// The textfile path cannot be used.
    #[error("invalid metrics textfile `{}`: {why}", .path.display())]
    InvalidPath {
        /// The path.
        path: PathBuf,
        /// Why it is refused.
        why: String,
    },
}

/// Renders a finished run as Prometheus text format 0.0.4 (HELP and TYPE for every family,
/// label values escaped), the metrics listed in the [module docs](self).
///
/// `results` are rendered in the order given. Should two results share tester and check id,
/// or a check carry two measurements of one name, the first is kept (the text format forbids
/// duplicate series).
pub fn render(summary: &RunSummary, results: &[TestResult]) -> String {
    let mut out = Exposition::default();

    let check_labels = |r: &TestResult| {
        vec![
            ("tester", r.tester.clone()),
            ("check", r.id.as_str().to_owned()),
            ("category", r.category.as_str().to_owned()),
        ]
    };

    let mut family = out.family(
        "citadel_itest_check_success",
        "Whether the check passed (1) or not (0: failed, skipped or error).",
    );
    for r in results {
        let passed = r.outcome.status() == Status::Passed;
        family.sample(check_labels(r), if passed { 1.0 } else { 0.0 });
    }
    family.end(&mut out);

    let mut family = out.family(
        "citadel_itest_check_status",
        "The check's status: 1 for the status it ended with, 0 for the others.",
    );
    for r in results {
        let status = r.outcome.status();
        for s in STATUSES {
            let mut labels = check_labels(r);
            labels.push(("status", s.to_string()));
            family.sample(labels, if s == status { 1.0 } else { 0.0 });
        }
    }
    family.end(&mut out);

    let mut family = out.family(
        "citadel_itest_check_duration_seconds",
        "Wall time of the check, all attempts included, in seconds.",
    );
    for r in results {
        family.sample(check_labels(r), r.duration.as_secs_f64());
    }
    family.end(&mut out);

    let mut family = out.family(
        "citadel_itest_check_attempts",
        "How many attempts the check made (retries until ready).",
    );
    for r in results {
        family.sample(check_labels(r), f64::from(r.attempts));
    }
    family.end(&mut out);

    let mut family = out.family(
        "citadel_itest_check_measurement",
        "A number the check measured, in the unit of the unit label.",
    );
    for r in results {
        for m in r.outcome.measurements() {
            let Some(value) = m.value else { continue };
            let mut labels = check_labels(r);
            labels.push(("measurement", m.name.clone()));
            labels.push(("unit", unit_label(m.unit).to_owned()));
            family.sample(labels, value);
        }
    }
    family.end(&mut out);

    let mut family = out.family(
        "citadel_itest_run_info",
        "The run that produced these metrics (its id is the report's run id).",
    );
    family.sample(vec![("run_id", summary.run_id.clone())], 1.0);
    family.end(&mut out);

    let mut family = out.family(
        "citadel_itest_run_success_rate",
        "Passed checks / (all checks - skipped checks), 0 to 1; absent when none ran.",
    );
    if let Some(rate) = summary.counts.success_rate() {
        family.sample(Vec::new(), rate);
    }
    family.end(&mut out);

    let mut family = out.family("citadel_itest_run_checks", "Checks of the run per status.");
    let c = &summary.counts;
    for (s, n) in [
        (Status::Passed, c.passed),
        (Status::Failed, c.failed),
        (Status::Skipped, c.skipped),
        (Status::Error, c.errors),
    ] {
        family.sample(vec![("status", s.to_string())], n as f64);
    }
    family.end(&mut out);

    let mut family = out.family(
        "citadel_itest_run_duration_seconds",
        "Wall time of the whole run, in seconds.",
    );
    family.sample(Vec::new(), summary.duration.as_secs_f64());
    family.end(&mut out);

    let mut family = out.family(
        "citadel_itest_run_timestamp_seconds",
        "When the run finished, in seconds since the Unix epoch.",
    );
    let finished = summary.started_at + summary.duration;
    let unix = finished
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    family.sample(Vec::new(), unix);
    family.end(&mut out);

    let mut family = out.family(
        "citadel_itest_run_interrupted",
        "Whether the run was interrupted from outside (1) or not (0).",
    );
    family.sample(Vec::new(), if summary.interrupted { 1.0 } else { 0.0 });
    family.end(&mut out);

    let mut family = out.family(
        "citadel_itest_run_leftovers",
        "Objects the run created and could not remove.",
    );
    family.sample(Vec::new(), summary.leftovers.len() as f64);
    family.end(&mut out);

    out.text
}

const STATUSES: [Status; 4] = [
    Status::Passed,
    Status::Failed,
    Status::Skipped,
    Status::Error,
];

fn unit_label(unit: Unit) -> &'static str {
    match unit {
        Unit::Milliseconds => "ms",
        Unit::Seconds => "s",
        Unit::Bytes => "bytes",
        Unit::Count => "count",
        Unit::Percent => "percent",
        Unit::RequestsPerSecond => "rps",
        Unit::Ratio => "ratio",
        _ => "other",
    }
}

/// The text being built.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &'static str, help: &'static str) -> Family {
        Family {
            name,
            help,
            samples: String::new(),
            seen: HashSet::new(),
        }
    }
}

/// One metric family's samples, written with HELP and TYPE when it has any.
struct Family {
    name: &'static str,
    help: &'static str,
    samples: String,
    seen: HashSet<String>,
}

impl Family {
    fn sample(&mut self, labels: Vec<(&'static str, String)>, value: f64) {
        let mut series = String::new();
        if !labels.is_empty() {
            series.push('{');
            for (i, (name, value)) in labels.iter().enumerate() {
                if i > 0 {
                    series.push(',');
                }
                let _ = write!(series, "{name}=\"{}\"", escape_label_value(value));
            }
            series.push('}');
        }
        if !self.seen.insert(series.clone()) {
            return;
        }
        let _ = writeln!(
            self.samples,
            "{}{series} {}",
            self.name,
            format_value(value)
        );
    }

    fn end(self, out: &mut Exposition) {
        if self.samples.is_empty() {
            return;
        }
        let _ = writeln!(out.text, "# HELP {} {}", self.name, escape_help(self.help));
        let _ = writeln!(out.text, "# TYPE {} gauge", self.name);
        out.text.push_str(&self.samples);
    }
}

/// A label value in the text format: `\` -> `\\`, `"` -> `\"`, line feed -> `\n`.
pub fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A HELP text: `\` -> `\\`, line feed -> `\n`.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value as Prometheus reads it: integers without a fraction, `NaN`, `+Inf`, `-Inf`.
fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        // Debug gives the shortest round-trip form, with an exponent for very large or small
        // numbers (`1e-7`), which Prometheus parses.
        format!("{v:?}")
    }
}

/// Collects results in plan order for the exporters.
#[derive(Debug, Default)]
struct Collector {
    order: HashMap<CheckId, usize>,
    results: Vec<TestResult>,
}

impl Collector {
    fn run_started(&mut self, plan: &RunPlan) {
        self.order = plan
            .checks
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id.clone(), i))
            .collect();
        self.results.clear();
    }

    fn check_finished(&mut self, result: &TestResult) {
        self.results.push(result.clone());
    }

    fn render(&mut self, summary: &RunSummary) -> String {
        let order = &self.order;
        self.results
            .sort_by_key(|r| order.get(&r.id).copied().unwrap_or(usize::MAX));
        render(summary, &self.results)
    }
}

/// Pushes the run's metrics to a Prometheus Pushgateway when the run finishes.
///
/// The push is one `PUT <url>/metrics/job/<job>/instance/<instance>[/<label>/<value>...]`
/// (label values outside `[A-Za-z0-9_.-]` are sent base64url-encoded, `<label>@base64`),
/// bounded by [`PushgatewayReporter::timeout`]. A URL with `user:password@` sends them as basic
/// auth; the password never appears in an error. A failed push (refused, timed out, an answer
/// other than 2xx) is a [`ReportError`] of format `pushgateway` naming the push URL; the run's
/// verdict is unaffected, the CLI exits 1 as for any report it could not write.
///
/// Reporters are synchronous: the push runs on a thread of its own and the thread that called
/// `run_finished` waits for it (at most the timeout). On a current-thread tokio runtime nothing
/// else runs meanwhile, so a Pushgateway served by a task of that same runtime cannot answer;
/// use a multi-thread runtime there (the CLI does).
#[derive(Debug)]
pub struct PushgatewayReporter {
    base: url::Url,
    username: String,
    password: Option<String>,
    job: String,
    grouping: Vec<(String, String)>,
    timeout: Duration,
    collector: Collector,
}

impl PushgatewayReporter {
    /// A reporter pushing to the Pushgateway at `url` (`http://127.0.0.1:9091`; a path prefix
    /// such as `/pushgateway` is kept), with job [`DEFAULT_JOB`] and the host name as instance.
    pub fn new(url: &str) -> Result<Self, ExportError> {
        let invalid = |why: &str| ExportError::InvalidUrl {
            url: redact_url(url),
            why: why.to_owned(),
        };
        let mut base = url::Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("use an http:// or https:// URL"));
        }
        if base.host_str().is_none_or(str::is_empty) {
            return Err(invalid("the URL has no host"));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid("the URL may not have a query or fragment"));
        }
        if base.path().contains("/metrics/job/") {
            return Err(invalid(
                "give the Pushgateway's base URL; the grouping key (`/metrics/job/...`) is added",
            ));
        }
        let username = base.username().to_owned();
        let password = base.password().map(str::to_owned);
        // Credentials travel in the Authorization header, never in the URL shown in errors.
        let _ = base.set_username("");
        let _ = base.set_password(None);
        let instance = host_name();
        Ok(PushgatewayReporter {
            base,
            username,
            password,
            job: DEFAULT_JOB.to_owned(),
            grouping: vec![("instance".to_owned(), instance)],
            timeout: DEFAULT_PUSH_TIMEOUT,
            collector: Collector::default(),
        })
    }

    /// The grouping key's `job` (default [`DEFAULT_JOB`]); it may not be empty.
    pub fn job(mut self, job: impl Into<String>) -> Result<Self, ExportError> {
        let job = job.into();
        if job.is_empty() {
            return Err(ExportError::InvalidLabel {
                name: "job".to_owned(),
                why: "the job may not be empty".to_owned(),
            });
        }
        self.job = job;
        Ok(self)
    }

    /// The grouping key's `instance` (default: this machine's host name).
    pub fn instance(self, instance: impl Into<String>) -> Result<Self, ExportError> {
        self.grouping_label("instance", instance)
    }

    /// Adds (or replaces) a grouping-key label, e.g. `("suite", "nightly")`. Names follow
    /// Prometheus's rules (`[a-zA-Z_][a-zA-Z0-9_]*`, not `job`, not starting with `__`).
    pub fn grouping_label(
        mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Self, ExportError> {
        let name = name.into();
        let why = if !is_label_name(&name) {
            Some("a label name is [a-zA-Z_][a-zA-Z0-9_]*")
        } else if name == "job" {
            Some("set the job with `job()`")
        } else if name.starts_with("__") {
            Some("names starting with `__` are reserved")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(ExportError::InvalidLabel {
                name,
                why: why.to_owned(),
            });
        }
        let value = value.into();
        match self.grouping.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = value,
            None => self.grouping.push((name, value)),
        }
        Ok(self)
    }

    /// How long the push may take, from connecting to reading the answer; default 10 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The URL the metrics are `PUT` to (without credentials).
    pub fn push_url(&self) -> String {
        let mut url = self.base.as_str().trim_end_matches('/').to_owned();
        url.push_str(&crate::pushgateway::group_path(
            &self.job,
            self.grouping.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        ));
        url
    }

    /// Pushes `text` (Prometheus text format) with `PUT`, replacing the group.
    pub fn push_text(&self, text: String) -> Result<(), ReportError> {
        let target = self.push_url();
        let shown = redact_url(&target);
        let fail = |message: String| {
            ReportError::new(
                "pushgateway",
                Some(PathBuf::from(&shown)),
                io::Error::other(message),
            )
        };
        let auth = (!self.username.is_empty() || self.password.is_some())
            .then(|| (self.username.clone(), self.password.clone()));
        let timeout = self.timeout;
        // Reporters are called synchronously, possibly on a current-thread runtime: the push
        // runs on its own thread with its own runtime, and this thread waits for it (bounded).
        let worker = std::thread::Builder::new()
            .name("citadel-itest-push".to_owned())
            .spawn(move || -> Result<(), String> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("start a runtime for the push: {e}"))?;
                runtime.block_on(put(target, auth, text, timeout))
            })
            .map_err(|e| fail(format!("start the push thread: {e}")))?;
        match worker.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(fail(message)),
            Err(_) => Err(fail("the push thread panicked".to_owned())),
        }
    }
}

async fn put(
    url: String,
    auth: Option<(String, Option<String>)>,
    body: String,
    timeout: Duration,
) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("build the HTTP client: {}", error_chain(&e)))?;
    let mut request = client
        .put(&url)
        .header(reqwest::header::CONTENT_TYPE, TEXT_FORMAT)
        .body(body);
    if let Some((user, password)) = auth {
        request = request.basic_auth(user, password);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let response = match tokio::time::timeout_at(deadline, request.send()).await {
        Err(_) => {
            return Err(format!(
                "no answer within {}",
                humantime::format_duration(timeout)
            ));
        }
        Ok(Err(e)) if e.is_timeout() => {
            return Err(format!(
                "no answer within {}",
                humantime::format_duration(timeout)
            ));
        }
        Ok(Err(e)) => {
            let words = io_error_words_in_chain(&e)
                .map(str::to_owned)
                .unwrap_or_else(|| error_chain(&e.without_url()));
            return Err(words);
        }
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let limit = BodyLimit::until(deadline).max_bytes(MAX_ERROR_BODY);
    let detail = match read_body(response, &limit).await {
        Ok(body) => excerpt(&body),
        Err(e) => e.to_string(),
    };
    Err(format!("answered HTTP {status}: {detail}"))
}

/// Writes the run's metrics to a node_exporter textfile-collector file (`*.prom`) when the
/// run finishes, atomically (a temp file in the same directory, renamed into place: the
/// collector never reads half a file).
#[derive(Debug)]
pub struct TextfileReporter {
    path: PathBuf,
    collector: Collector,
}

impl TextfileReporter {
    /// A reporter writing `path`, whose file name must end in `.prom` (node_exporter reads
    /// only those).
    pub fn new(path: impl Into<PathBuf>) -> Result<Self, ExportError> {
        let path = path.into();
        let ok = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.len() > ".prom".len() && n.ends_with(".prom"));
        if !ok {
            return Err(ExportError::InvalidPath {
                path,
                why: "the file name must end in `.prom` (node_exporter's textfile collector reads only those)".to_owned(),
            });
        }
        Ok(TextfileReporter {
            path,
            collector: Collector::default(),
        })
    }

    /// The file it writes.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Reporter for TextfileReporter {
    fn run_started(&mut self, plan: &RunPlan) -> Result<(), ReportError> {
        self.collector.run_started(plan);
        Ok(())
    }

    fn check_finished(&mut self, result: &TestResult) -> Result<(), ReportError> {
        self.collector.check_finished(result);
        Ok(())
    }

    fn run_finished(&mut self, summary: &RunSummary) -> Result<(), ReportError> {
        let text = self.collector.render(summary);
        write_atomic(&self.path, text.as_bytes())
            .map_err(|e| ReportError::new("metrics textfile", Some(self.path.clone()), e))
    }
}

impl Reporter for PushgatewayReporter {
    fn run_started(&mut self, plan: &RunPlan) -> Result<(), ReportError> {
        self.collector.run_started(plan);
        Ok(())
    }

    fn check_finished(&mut self, result: &TestResult) -> Result<(), ReportError> {
        self.collector.check_finished(result);
        Ok(())
    }

    fn run_finished(&mut self, summary: &RunSummary) -> Result<(), ReportError> {
        let text = self.collector.render(summary);
        self.push_text(text)
    }
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// This machine's host name, or `citadel-itest` when it cannot be read.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "citadel-itest".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_exactly() {
        assert_eq!(escape_label_value(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label_value("x\ny"), "x\\ny");
        assert_eq!(escape_label_value("ünïcode {}=,"), "ünïcode {}=,");
    }

    #[test]
    fn values_read_as_prometheus_floats() {
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(0.0), "0");
        assert_eq!(format_value(-3.0), "-3");
        assert_eq!(format_value(0.25), "0.25");
        assert_eq!(format_value(1e-7), "1e-7");
        assert_eq!(format_value(1e20), "1e20");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn push_url_has_a_stable_grouping_key() {
        let r = PushgatewayReporter::new("http://127.0.0.1:9091/")
            .unwrap()
            .instance("ci-1")
            .unwrap()
            .grouping_label("suite", "nightly/a")
            .unwrap();
        assert_eq!(
            r.push_url(),
            "http://127.0.0.1:9091/metrics/job/citadel_itest/instance/ci-1/suite@base64/bmlnaHRseS9h"
        );
        let r = PushgatewayReporter::new("https://u:pw@127.0.0.1/pg")
            .unwrap()
            .job("my job")
            .unwrap();
        let url = r.push_url();
        assert!(
            url.starts_with("https://127.0.0.1/pg/metrics/job@base64/bXkgam9i/instance/"),
            "{url}"
        );
        assert!(!url.contains("pw"), "{url}");
    }

    #[test]
    fn bad_urls_labels_and_paths_are_refused_by_name() {
        for (url, why) in [
            ("127.0.0.1:9091", "relative URL"),
            ("ftp://127.0.0.1", "http:// or https://"),
            ("http://127.0.0.1:9091/metrics/job/x", "base URL"),
            ("http://127.0.0.1:9091/?a=b", "query"),
        ] {
            let err = PushgatewayReporter::new(url).unwrap_err().to_string();
            assert!(err.starts_with("invalid Pushgateway URL"), "{err}");
            assert!(err.contains(why), "{url}: {err}");
        }
        let err = PushgatewayReporter::new("http://u:s3cret@127.0.0.1:1/metrics/job/x")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cret"), "{err}");

        let r = || PushgatewayReporter::new("http://127.0.0.1:9091").unwrap();
        for name in ["1a", "a-b", "", "job", "__x"] {
            let err = r().grouping_label(name, "v").unwrap_err().to_string();
            assert!(err.contains("grouping label"), "{name}: {err}");
        }
        assert!(r().job("").is_err());

        for p in ["out.txt", ".prom", "dir/", "metrics.prom.tmp"] {
            let err = TextfileReporter::new(p).unwrap_err().to_string();
            assert!(err.contains("must end in `.prom`"), "{p}: {err}");
        }
        assert!(TextfileReporter::new("/var/lib/node_exporter/citadel.prom").is_ok());
    }
}
