//! Layered configuration: built-in defaults < each `--config FILE` in order < environment
//! (`CITADEL_ITEST__SECTION__KEY`) < explicit overrides (CLI flags).
//!
//! Loading validates everything once, before anything connects, and reports every problem with
//! its key path and the file it came from.
//!
//! ```
//! use citadel_itest_core::config::ConfigLoader;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let file = dir.path().join("itest.yaml");
//! std::fs::write(&file, "run:\n  concurrency: 4\n  timeout: 5s\n").unwrap();
//! let config = ConfigLoader::new().env(false).file(&file).load().unwrap();
//! assert_eq!(config.run.concurrency, 4);
//! assert_eq!(config.run.timeout, std::time::Duration::from_secs(5));
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Yaml};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::check::RetryPolicy;

mod secret;

pub use secret::{
    REDACTED, Secret, SecretError, SecretString, is_secret_key, redact_text, redact_url,
    redact_value, register_secret,
};

/// Environment prefix; `__` separates nesting levels.
pub const ENV_PREFIX: &str = "CITADEL_ITEST__";

/// One problem found while loading or validating configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key path, e.g. `basic.targets[0].url` (empty for a whole file).
    pub path: String,
    /// The file (or `environment`) the offending value came from, when known.
    pub source: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)?;
        } else {
            write!(f, "{}: {}", self.path, self.message)?;
        }
        if let Some(src) = &self.source {
            write!(f, " (in {src})")?;
        }
        Ok(())
    }
}

/// Configuration is invalid; lists every problem.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    /// Every problem found, in discovery order.
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "invalid configuration ({n} problem{})",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  - {}", redact_text(&p.to_string()))?;
        }
        Ok(())
    }
}

/// Report formats the binary can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReportFormat {
    /// Human-readable output on stdout.
    Console,
    /// `report.json` (schema `citadel-itest.report/v1`).
    Json,
    /// `junit.xml`.
    Junit,
}

/// The `run:` section: how the suite runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunSettings {
    /// Checks running at once.
    pub concurrency: usize,
    /// Default time budget of a check (all attempts).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Global deadline for the whole run; unfinished checks are cancelled when it passes.
    #[serde(with = "humantime_serde")]
    pub deadline: Option<Duration>,
    /// Retries for readiness checks (connectivity, health) before they count as failed.
    pub retries: u32,
    /// First wait between retries; doubles each time, capped at 5 s.
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// Stop after the first failure or error.
    pub fail_fast: bool,
    /// How long a cancelled check may take to clean up.
    #[serde(with = "humantime_serde")]
    pub cancel_grace: Duration,
    /// Never write to targets; write-checks are skipped with a reason.
    pub read_only: bool,
    /// Where report files go.
    pub report_dir: PathBuf,
    /// Which reports to write.
    pub formats: Vec<ReportFormat>,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            concurrency: 10,
            timeout: Duration::from_secs(30),
            deadline: Some(Duration::from_secs(30 * 60)),
            retries: 3,
            retry_backoff: Duration::from_millis(200),
            fail_fast: false,
            cancel_grace: Duration::from_secs(5),
            read_only: false,
            report_dir: PathBuf::from("target/itest-reports"),
            formats: vec![
                ReportFormat::Console,
                ReportFormat::Json,
                ReportFormat::Junit,
            ],
        }
    }
}

impl RunSettings {
    /// The retry-until-ready policy these settings describe.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::new(self.retries, self.retry_backoff)
    }
}

/// The `performance_targets:` section: limits performance checks hold measurements to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PerformanceTargets {
    /// 95th percentile latency limit.
    #[serde(with = "humantime_serde")]
    pub latency_p95: Duration,
    /// Minimum sustained throughput, requests per second.
    pub min_throughput_rps: f64,
    /// Maximum resident memory, MiB.
    pub max_memory_mb: u64,
    /// Maximum CPU use, percent of one core.
    pub max_cpu_percent: f64,
}

impl Default for PerformanceTargets {
    fn default() -> Self {
        PerformanceTargets {
            latency_p95: Duration::from_millis(200),
            min_throughput_rps: 50.0,
            max_memory_mb: 2048,
            max_cpu_percent: 50.0,
        }
    }
}

/// Sections that every configuration may have besides the testers'.
pub const CORE_SECTIONS: [&str; 2] = ["run", "performance_targets"];

/// Builds a [`Config`] from layers.
#[derive(Debug, Clone)]
pub struct ConfigLoader {
    files: Vec<PathBuf>,
    env: bool,
    overrides: Vec<(String, serde_json::Value)>,
    sections: BTreeSet<String>,
}

impl Default for ConfigLoader {
    fn default() -> Self {
        ConfigLoader::new()
    }
}

impl ConfigLoader {
    /// Defaults only, environment on, no tester sections known.
    pub fn new() -> Self {
        ConfigLoader {
            files: Vec::new(),
            env: true,
            overrides: Vec::new(),
            sections: CORE_SECTIONS.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Add a YAML file; later files override earlier ones. A missing file is an error.
    pub fn file(mut self, path: impl AsRef<Path>) -> Self {
        self.files.push(path.as_ref().to_path_buf());
        self
    }

    /// Read `CITADEL_ITEST__*` variables (default on).
    pub fn env(mut self, enabled: bool) -> Self {
        self.env = enabled;
        self
    }

    /// Override one dotted key (highest precedence), e.g. `run.concurrency`.
    pub fn set(mut self, key: impl Into<String>, value: impl Serialize) -> Self {
        let value = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
        self.overrides.push((key.into(), value));
        self
    }

    /// Declare a tester section as known; any other top-level key is an error.
    pub fn section(mut self, name: impl Into<String>) -> Self {
        self.sections.insert(name.into());
        self
    }

    /// Merge the layers and validate the core sections. Tester sections are validated by
    /// [`Config::section`].
    pub fn load(self) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let mut figment = Figment::new();
        for file in &self.files {
            match std::fs::read_to_string(file) {
                Ok(text) => match expand_env(&text) {
                    Ok(expanded) => {
                        figment = figment.merge(ExpandedYaml { path: file.clone(), text: expanded })
                    }
                    Err(missing) => problems.extend(missing.into_iter().map(|(line, name)| {
                        ConfigProblem {
                            path: String::new(),
                            source: Some(format!("{}:{line}", file.display())),
                            message: format!(
                                "environment variable {name} is not set (referenced as ${{{name}}}; \
                                 set it or write ${{{name}:-default}})"
                            ),
                        }
                    })),
                },
                Err(e) => problems.push(ConfigProblem {
                    path: String::new(),
                    source: Some(file.display().to_string()),
                    message: format!("cannot read config file {}: {e}", file.display()),
                }),
            }
        }
        if self.env {
            figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
        }
        for (key, value) in &self.overrides {
            figment = figment.merge(Serialized::global(key, value));
        }

        // Top level: a mapping whose keys are known sections.
        let top: Option<serde_json::Map<String, serde_json::Value>> =
            match figment.extract::<serde_json::Map<String, serde_json::Value>>() {
                Ok(m) => Some(m),
                Err(e) => {
                    problems.extend(figment_problems(&figment, e, None));
                    None
                }
            };
        if let Some(top) = &top {
            for key in top.keys() {
                if !self.sections.contains(key) {
                    let expected: Vec<&str> = self.sections.iter().map(String::as_str).collect();
                    problems.push(ConfigProblem {
                        path: key.clone(),
                        source: source_of(&figment, key),
                        message: format!(
                            "unknown section `{key}`, expected one of: {}",
                            expected.join(", ")
                        ),
                    });
                }
            }
        }

        let run = extract_or_default::<RunSettings>(&figment, "run", &mut problems);
        let performance_targets = extract_or_default::<PerformanceTargets>(
            &figment,
            "performance_targets",
            &mut problems,
        );
        let config = Config {
            figment,
            run: run.unwrap_or_default(),
            performance_targets: performance_targets.unwrap_or_default(),
            sections: self.sections,
        };
        {
            let mut v = Validator::new(&config.figment, &mut problems);
            config.run.validate(&mut v.at("run"));
            config
                .performance_targets
                .validate(&mut v.at("performance_targets"));
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { problems })
        }
    }
}

/// A YAML file whose `${NAME}` / `${NAME:-default}` references were expanded from the
/// environment; errors still name the file.
struct ExpandedYaml {
    path: PathBuf,
    text: String,
}

impl figment::Provider for ExpandedYaml {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::from("YAML file", figment::Source::File(self.path.clone()))
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        Yaml::string(&self.text).data()
    }
}

/// Expands `${NAME}` and `${NAME:-default}` from the environment. `$${` escapes a literal
/// `${`. Returns the (line, name) of every unset variable without a default.
pub fn expand_env(text: &str) -> Result<String, Vec<(usize, String)>> {
    let mut out = String::with_capacity(text.len());
    let mut missing = Vec::new();
    for (lineno, full_line) in text.split_inclusive('\n').enumerate() {
        // YAML comments are copied verbatim: `${NAME}` in a comment is documentation.
        let (line, comment) = full_line.split_at(comment_start(full_line));
        let mut rest = line;
        while let Some(pos) = rest.find("${") {
            if pos > 0 && rest.as_bytes()[pos - 1] == b'$' {
                out.push_str(&rest[..pos - 1]);
                out.push_str("${");
                rest = &rest[pos + 2..];
                continue;
            }
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[pos..]);
                rest = "";
                break;
            };
            let inner = &after[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            match (std::env::var(name), default) {
                (Ok(v), _) if !v.is_empty() => out.push_str(&v),
                (_, Some(d)) => out.push_str(d),
                (Ok(v), None) => out.push_str(&v),
                (Err(_), None) => missing.push((lineno + 1, name.to_string())),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out.push_str(comment);
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(missing)
    }
}

/// Byte offset where a YAML comment starts on this line (line length when there is none): a
/// `#` at the start or after whitespace, outside quotes.
fn comment_start(line: &str) -> usize {
    let (mut single, mut double, mut prev_ws) = (false, false, true);
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev_ws => return i,
            _ => {}
        }
        prev_ws = c.is_whitespace();
    }
    line.len()
}

fn extract_or_default<T: DeserializeOwned + Default>(
    figment: &Figment,
    key: &str,
    problems: &mut Vec<ConfigProblem>,
) -> Option<T> {
    if figment.find_value(key).is_err() {
        return Some(T::default());
    }
    match figment.extract_inner::<T>(key) {
        Ok(v) => Some(v),
        Err(e) => {
            problems.extend(figment_problems(figment, e, Some(key)));
            None
        }
    }
}

/// Converts figment's errors (one or many) to problems with path and source. `section` is the
/// key given to `extract_inner`, which figment appends at the end of the error path.
fn figment_problems(
    figment: &Figment,
    err: figment::Error,
    section: Option<&str>,
) -> Vec<ConfigProblem> {
    err.into_iter()
        .map(|e| {
            let mut segments: Vec<String> = e.path.clone();
            if let Some(section) = section {
                let tail: Vec<String> = section.split('.').map(str::to_string).collect();
                if segments.ends_with(&tail) {
                    segments.truncate(segments.len() - tail.len());
                }
                segments.splice(0..0, tail);
            }
            let path = join_path(&segments);
            let source = e
                .metadata
                .as_ref()
                .and_then(|m| m.source.as_ref().map(|s| describe_source(m, s)))
                .or_else(|| source_of(figment, &path));
            ConfigProblem {
                path,
                source,
                message: e.kind.to_string(),
            }
        })
        .collect()
}

/// `["a", "targets", "0", "url"]` -> `a.targets[0].url`.
fn join_path(segments: &[String]) -> String {
    let mut out = String::new();
    for seg in segments {
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

fn describe_source(meta: &figment::Metadata, source: &figment::Source) -> String {
    match source {
        figment::Source::File(p) => p.display().to_string(),
        _ if meta.name.contains("environment") => "environment".to_string(),
        other => other.to_string(),
    }
}

/// The file (or `environment`) that provided the value at `path`, searching up the path.
fn source_of(figment: &Figment, path: &str) -> Option<String> {
    let clean: Vec<&str> = path
        .split('.')
        .map(|seg| seg.split('[').next().unwrap_or(seg))
        .filter(|s| !s.is_empty())
        .collect();
    for len in (1..=clean.len()).rev() {
        let key = clean[..len].join(".");
        if let Some(meta) = figment.find_metadata(&key) {
            return match &meta.source {
                Some(src) => Some(describe_source(meta, src)),
                None if meta.name.contains("environment") => Some("environment".to_string()),
                None => Some(meta.name.to_string()),
            };
        }
    }
    None
}

/// The merged configuration with its core sections validated.
#[derive(Debug, Clone)]
pub struct Config {
    figment: Figment,
    /// The `run:` section.
    pub run: RunSettings,
    /// The `performance_targets:` section.
    pub performance_targets: PerformanceTargets,
    sections: BTreeSet<String>,
}

impl Config {
    /// The merged layers, for custom extraction.
    pub fn figment(&self) -> &Figment {
        &self.figment
    }

    /// Whether the section is present in any layer.
    pub fn has_section(&self, name: &str) -> bool {
        self.figment.find_value(name).is_ok()
    }

    /// Deserialise and validate a tester section; problems are appended. `None` when the section
    /// is absent or invalid.
    pub fn section<T: DeserializeOwned + Validate>(
        &self,
        name: &str,
        problems: &mut Vec<ConfigProblem>,
    ) -> Option<T> {
        if !self.has_section(name) {
            return None;
        }
        match self.figment.extract_inner::<T>(name) {
            Ok(v) => {
                let mut val = Validator::new(&self.figment, problems);
                v.validate(&mut val.at(name));
                Some(v)
            }
            Err(e) => {
                problems.extend(figment_problems(&self.figment, e, Some(name)));
                None
            }
        }
    }

    /// Redacted summary of the merged configuration for reports.
    pub fn summary(&self) -> serde_json::Value {
        let mut value = self
            .figment
            .extract::<serde_json::Value>()
            .unwrap_or(serde_json::Value::Object(Default::default()));
        if let serde_json::Value::Object(map) = &mut value {
            map.insert(
                "run".into(),
                serde_json::to_value(&self.run).unwrap_or_default(),
            );
            map.insert(
                "performance_targets".into(),
                serde_json::to_value(&self.performance_targets).unwrap_or_default(),
            );
        }
        redact_value(&value)
    }

    /// Known section names (core + registered testers).
    pub fn known_sections(&self) -> impl Iterator<Item = &str> {
        self.sections.iter().map(String::as_str)
    }
}

/// Semantic validation of a deserialised section.
pub trait Validate {
    /// Report every problem through `v`; key paths are relative to the section.
    fn validate(&self, v: &mut Validator<'_>);
}

/// Whether `name` can be part of a check id: non-empty, lowercase ASCII letters, digits, `_`
/// and `-` only.
///
/// ```
/// use citadel_itest_core::config::is_valid_name;
/// assert!(is_valid_name("model-1_a"));
/// assert!(!is_valid_name("") && !is_valid_name("Gateway") && !is_valid_name("a.b"));
/// ```
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Collects problems with key paths and their source files.
pub struct Validator<'a> {
    figment: &'a Figment,
    prefix: String,
    problems: &'a mut Vec<ConfigProblem>,
}

impl<'a> Validator<'a> {
    /// A validator at the root of `figment`.
    pub fn new(figment: &'a Figment, problems: &'a mut Vec<ConfigProblem>) -> Self {
        Validator {
            figment,
            prefix: String::new(),
            problems,
        }
    }

    /// A child validator for a nested key (`targets[0]`, `auth`).
    pub fn at(&mut self, key: &str) -> Validator<'_> {
        Validator {
            figment: self.figment,
            prefix: self.path(key),
            problems: self.problems,
        }
    }

    /// Full path of `key` under this validator.
    pub fn path(&self, key: &str) -> String {
        match (self.prefix.is_empty(), key.is_empty(), key.starts_with('[')) {
            (true, _, _) => key.to_string(),
            (false, true, _) => self.prefix.clone(),
            (false, false, true) => format!("{}{key}", self.prefix),
            (false, false, false) => format!("{}.{key}", self.prefix),
        }
    }

    /// Record a problem at `key` ("" for this node).
    pub fn error(&mut self, key: &str, message: impl Into<String>) {
        let path = self.path(key);
        let source = source_of(self.figment, &path);
        self.problems.push(ConfigProblem {
            path,
            source,
            message: message.into(),
        });
    }

    /// Check a name that becomes part of check ids (`[a-z0-9_-]+`); a problem at `key` when it
    /// is not one. Returns whether it is valid.
    pub fn name(&mut self, key: &str, name: &str) -> bool {
        let valid = is_valid_name(name);
        if !valid {
            self.error(
                key,
                format!("`{name}` is not a valid name: use lowercase letters, digits, `_` and `-`"),
            );
        }
        valid
    }

    /// Resolve a secret now; a missing env variable or unreadable file is a problem.
    pub fn secret(&mut self, key: &str, secret: &Secret) -> Option<SecretString> {
        match secret.resolve() {
            Ok(s) => Some(s),
            Err(e) => {
                self.error(key, crate::error_chain(&e));
                None
            }
        }
    }

    /// Parse a URL; problems name the (redacted) value.
    pub fn url(&mut self, key: &str, raw: &str) -> Option<url::Url> {
        match url::Url::parse(raw) {
            Ok(u) => Some(u),
            Err(e) => {
                self.error(
                    key,
                    format!("invalid URL `{}`: {e}", redact_text(&redact_url(raw))),
                );
                None
            }
        }
    }

    /// A duration that must be greater than zero.
    pub fn positive(&mut self, key: &str, d: Duration) {
        if d.is_zero() {
            self.error(key, "must be greater than 0s");
        }
    }

    /// Whether any problem has been recorded so far (in total).
    pub fn has_problems(&self) -> bool {
        !self.problems.is_empty()
    }
}

impl Validate for RunSettings {
    fn validate(&self, v: &mut Validator<'_>) {
        if self.concurrency == 0 {
            v.error("concurrency", "must be at least 1");
        }
        v.positive("timeout", self.timeout);
        if let Some(d) = self.deadline {
            v.positive("deadline", d);
        }
        if self.formats.is_empty() {
            v.error("formats", "list at least one of console, json, junit");
        }
    }
}

impl Validate for PerformanceTargets {
    fn validate(&self, v: &mut Validator<'_>) {
        v.positive("latency_p95", self.latency_p95);
        if !(self.min_throughput_rps.is_finite() && self.min_throughput_rps >= 0.0) {
            v.error("min_throughput_rps", "must be a number >= 0");
        }
        if !(self.max_cpu_percent.is_finite() && self.max_cpu_percent > 0.0) {
            v.error("max_cpu_percent", "must be a number > 0");
        }
        if self.max_memory_mb == 0 {
            v.error("max_memory_mb", "must be greater than 0");
        }
    }
}
