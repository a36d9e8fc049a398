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
use figment::providers::{Env, Serialized};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::check::RetryPolicy;

mod input;
mod secret;
mod yaml;

pub use input::{
    InputFileError, MAX_CONFIG_FILE_BYTES, MAX_ENV_FILE_BYTES, MAX_SECRET_FILE_BYTES,
    read_input_file, read_input_text,
};
pub use secret::{
    MIN_SECRET_CHARS, REDACTED, Secret, SecretError, SecretString, is_secret_key, redact_text,
    redact_url, redact_value, register_basic_credentials, register_secret, register_url_secrets,
};

/// Largest value of one `CITADEL_ITEST__*` environment variable: 64 KiB.
pub const MAX_ENV_VALUE_BYTES: usize = 64 * 1024;

/// Most characters of a value echoed in a message; [`shorten`] cuts longer ones.
pub const MAX_ECHOED_CHARS: usize = 200;

/// Most characters of one problem's message (and of its key path); longer ones are cut.
pub const MAX_PROBLEM_CHARS: usize = 1000;

/// A value fit to echo in a message: at most [`MAX_ECHOED_CHARS`] characters, then
/// `... (N bytes)` saying how long it really is.
///
/// ```
/// use citadel_itest_core::config::shorten;
/// assert_eq!(shorten("short"), "short");
/// let long = "x".repeat(50_000_000);
/// let shown = shorten(&long);
/// assert!(shown.ends_with("... (50000000 bytes)") && shown.len() < 250);
/// ```
pub fn shorten(value: &str) -> String {
    cut(value, MAX_ECHOED_CHARS)
}

fn cut(value: &str, max_chars: usize) -> String {
    match value.char_indices().nth(max_chars) {
        None => value.to_string(),
        Some((end, _)) => format!("{}... ({} bytes)", &value[..end], value.len()),
    }
}

/// Characters past the shown ones that are still redacted, so a secret (at most a secret file's
/// size) that starts in the shown part and crosses the cut is still recognised.
const REDACT_MARGIN: usize = MAX_SECRET_FILE_BYTES as usize + 1024;

/// Redact first (a cut must never leave half a secret visible), then cut to `max_chars`. Only
/// the part that can be shown, plus a margin, is looked at.
fn bounded(text: &str, max_chars: usize) -> String {
    let window_end = text
        .char_indices()
        .nth(max_chars + REDACT_MARGIN)
        .map_or(text.len(), |(i, _)| i);
    let shown = redact_text(&text[..window_end]);
    match shown.char_indices().nth(max_chars) {
        None if window_end == text.len() => shown,
        None => format!("{shown}... ({} bytes)", text.len()),
        Some((end, _)) => format!("{}... ({} bytes)", &shown[..end], text.len()),
    }
}

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

impl ConfigProblem {
    /// A problem at `path`; the message and path are redacted and cut to
    /// [`MAX_PROBLEM_CHARS`], so no value can make the harness print without bound.
    pub fn new(path: impl AsRef<str>, source: Option<String>, message: impl AsRef<str>) -> Self {
        ConfigProblem {
            path: bounded(path.as_ref(), MAX_PROBLEM_CHARS),
            source: source.map(|s| bounded(&s, MAX_PROBLEM_CHARS)),
            message: bounded(message.as_ref(), MAX_PROBLEM_CHARS),
        }
    }
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
            write!(
                f,
                "\n  - {}",
                bounded(&p.to_string(), 3 * MAX_PROBLEM_CHARS)
            )?;
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
    /// `report.html`: one self-contained page with charts of load scenarios.
    Html,
    /// `summary.md`: Markdown for CI job summaries and pull-request comments.
    #[serde(rename = "md", alias = "markdown")]
    Markdown,
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
    /// Once every check has ended, how long the run waits for the removals checks registered
    /// (temporary collections, tables, alerts); what is not removed by then is reported.
    #[serde(with = "humantime_serde")]
    pub cleanup_budget: Duration,
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
            cleanup_budget: crate::cleanup::DEFAULT_CLEANUP_BUDGET,
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
    /// [`Config::section`]; to report their problems together with the core's, use
    /// [`ConfigLoader::load_with`].
    pub fn load(self) -> Result<Config, ConfigError> {
        self.load_with(|_, _| ()).map(|(config, ())| config)
    }

    /// Merge the layers, validate the core sections, then call `sections` with the merged
    /// configuration so it can validate (and build from) the tester sections, appending its
    /// problems. Every problem of every section is returned at once: a bad `run.timeout` does not
    /// hide a tester's problems. When a core section is invalid, `sections` still runs (with that
    /// section's defaults in [`Config::run`] / [`Config::performance_targets`]).
    ///
    /// ```
    /// use citadel_itest_core::config::ConfigLoader;
    /// let err = ConfigLoader::new()
    ///     .env(false)
    ///     .set("run.concurrency", 0)
    ///     .load_with(|_config, problems| {
    ///         problems.push(citadel_itest_core::config::ConfigProblem::new("demo", None, "bad"));
    ///     })
    ///     .unwrap_err();
    /// assert_eq!(err.problems.len(), 2);
    /// ```
    pub fn load_with<T>(
        self,
        sections: impl FnOnce(&Config, &mut Vec<ConfigProblem>) -> T,
    ) -> Result<(Config, T), ConfigError> {
        let mut problems = Vec::new();
        let mut figment = Figment::new();
        let lookup = |name: &str| std::env::var(name).ok();
        for file in &self.files {
            let shown = file.display().to_string();
            let text = match read_input_text(file, MAX_CONFIG_FILE_BYTES) {
                Ok(text) => text,
                Err(e) => {
                    problems.push(ConfigProblem::new(
                        "",
                        Some(shown.clone()),
                        format!("cannot read config file {shown}: {e}"),
                    ));
                    continue;
                }
            };
            match yaml::parse_config(&text, &lookup) {
                Ok(dict) => {
                    figment = figment.merge(ParsedYaml {
                        path: file.clone(),
                        dict,
                    })
                }
                Err(found) => problems.extend(found.into_iter().map(|p| {
                    ConfigProblem::new(&p.path, Some(format!("{shown}:{}", p.line)), &p.message)
                })),
            }
        }
        if self.env {
            // An oversized value is refused before figment parses it.
            let mut oversize: Vec<String> = Vec::new();
            for (key, value) in std::env::vars_os() {
                let Some(key) = key.to_str() else { continue };
                let upper = key.to_ascii_uppercase();
                if upper.starts_with(ENV_PREFIX) && value.len() > MAX_ENV_VALUE_BYTES {
                    let stripped = key[ENV_PREFIX.len()..].to_string();
                    problems.push(ConfigProblem::new(
                        stripped.to_ascii_lowercase().replace("__", "."),
                        Some("environment".to_string()),
                        format!(
                            "the value of {} is {} bytes, more than the {} KiB limit of one \
                             environment value",
                            shorten(key),
                            value.len(),
                            MAX_ENV_VALUE_BYTES / 1024
                        ),
                    ));
                    oversize.push(stripped);
                }
            }
            figment = figment.merge(
                Env::prefixed(ENV_PREFIX)
                    .filter(move |key| !oversize.iter().any(|o| key == o.as_str()))
                    .split("__"),
            );
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
                    problems.push(ConfigProblem::new(
                        key,
                        source_of(&figment, key),
                        format!(
                            "unknown section `{}`, expected one of: {}",
                            shorten(key),
                            expected.join(", ")
                        ),
                    ));
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
            run: run.clone().unwrap_or_default(),
            performance_targets: performance_targets.clone().unwrap_or_default(),
            sections: self.sections,
        };
        {
            let mut v = Validator::new(&config.figment, &mut problems);
            if let Some(run) = &run {
                run.validate(&mut v.at("run"));
            }
            if let Some(targets) = &performance_targets {
                targets.validate(&mut v.at("performance_targets"));
            }
        }
        let built = sections(&config, &mut problems);
        if problems.is_empty() {
            Ok((config, built))
        } else {
            Err(ConfigError { problems })
        }
    }
}

/// A config file parsed into values (`${...}` expanded inside them); errors still name the file.
struct ParsedYaml {
    path: PathBuf,
    dict: figment::value::Dict,
}

impl figment::Provider for ParsedYaml {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::from("YAML file", figment::Source::File(self.path.clone()))
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        Ok(figment::value::Map::from([(
            figment::Profile::Default,
            self.dict.clone(),
        )]))
    }
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
            ConfigProblem::new(path, source, e.kind.to_string())
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

/// Longest name accepted by [`is_valid_name`] (names become part of check ids).
pub const MAX_NAME_CHARS: usize = 64;

/// Whether `name` can be part of a check id: 1 to [`MAX_NAME_CHARS`] lowercase ASCII letters,
/// digits, `_` and `-`.
///
/// ```
/// use citadel_itest_core::config::is_valid_name;
/// assert!(is_valid_name("model-1_a"));
/// assert!(!is_valid_name("") && !is_valid_name("Gateway") && !is_valid_name("a.b"));
/// assert!(!is_valid_name(&"a".repeat(65)));
/// ```
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_CHARS
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
        self.problems
            .push(ConfigProblem::new(path, source, message.into()));
    }

    /// Check a name that becomes part of check ids (`[a-z0-9_-]+`); a problem at `key` when it
    /// is not one. Returns whether it is valid.
    pub fn name(&mut self, key: &str, name: &str) -> bool {
        let valid = is_valid_name(name);
        if !valid {
            self.error(
                key,
                format!(
                    "`{}` is not a valid name: use 1 to {MAX_NAME_CHARS} lowercase letters, \
                     digits, `_` and `-`",
                    shorten(name)
                ),
            );
        }
        valid
    }

    /// Check a TCP port: 0 is not one a service listens on. Returns whether it is usable.
    pub fn port(&mut self, key: &str, port: u16) -> bool {
        if port == 0 {
            self.error(key, "port 0 is not a usable port (1..=65535)");
        }
        port != 0
    }

    /// Check that `value` lies in `min..=max`; the problem names the range.
    pub fn range<T>(&mut self, key: &str, value: T, min: T, max: T) -> bool
    where
        T: PartialOrd + fmt::Display,
    {
        let ok = value >= min && value <= max;
        if !ok {
            self.error(key, format!("{value} is out of range {min}..={max}"));
        }
        ok
    }

    /// A duration in `min..=max` (humantime in the message).
    pub fn duration_range(&mut self, key: &str, d: Duration, min: Duration, max: Duration) -> bool {
        let ok = d >= min && d <= max;
        if !ok {
            self.error(
                key,
                format!(
                    "{} is out of range {}..={}",
                    humantime::format_duration(d),
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            );
        }
        ok
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
                    format!("invalid URL `{}`: {e}", shorten(&redact_url(raw))),
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

/// Largest `run.concurrency` (tokio's semaphore allows far more, but no run needs more).
pub const MAX_CONCURRENCY: usize = 10_000;

/// Largest `run.retries`.
pub const MAX_RETRIES: u32 = 100;

/// Longest check budget (`run.timeout`, a tester's `timeout`): one day.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// Longest `run.deadline`: one week.
pub const MAX_DEADLINE: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Longest `run.retry_backoff` and `run.cancel_grace`: ten minutes.
pub const MAX_GRACE: Duration = Duration::from_secs(10 * 60);

impl Validate for RunSettings {
    fn validate(&self, v: &mut Validator<'_>) {
        v.range("concurrency", self.concurrency, 1, MAX_CONCURRENCY);
        v.duration_range(
            "timeout",
            self.timeout,
            Duration::from_millis(1),
            MAX_TIMEOUT,
        );
        if let Some(d) = self.deadline {
            v.duration_range("deadline", d, Duration::from_millis(1), MAX_DEADLINE);
        }
        v.range("retries", self.retries, 0, MAX_RETRIES);
        v.duration_range(
            "retry_backoff",
            self.retry_backoff,
            Duration::ZERO,
            MAX_GRACE,
        );
        v.duration_range("cancel_grace", self.cancel_grace, Duration::ZERO, MAX_GRACE);
        v.duration_range(
            "cleanup_budget",
            self.cleanup_budget,
            Duration::ZERO,
            MAX_GRACE,
        );
        if self.formats.is_empty() {
            v.error(
                "formats",
                "list at least one of console, json, junit, html, md",
            );
        }
    }
}

impl Validate for PerformanceTargets {
    fn validate(&self, v: &mut Validator<'_>) {
        v.duration_range(
            "latency_p95",
            self.latency_p95,
            Duration::from_micros(1),
            Duration::from_secs(60 * 60),
        );
        if !(self.min_throughput_rps.is_finite()
            && (0.0..=1_000_000.0).contains(&self.min_throughput_rps))
        {
            v.error(
                "min_throughput_rps",
                format!("{} is out of range 0..=1000000", self.min_throughput_rps),
            );
        }
        if !(self.max_cpu_percent.is_finite()
            && self.max_cpu_percent > 0.0
            && self.max_cpu_percent <= 100_000.0)
        {
            v.error(
                "max_cpu_percent",
                format!(
                    "{} is out of range: more than 0 and at most 100000 (1000 cores)",
                    self.max_cpu_percent
                ),
            );
        }
        v.range("max_memory_mb", self.max_memory_mb, 1, 16 * 1024 * 1024);
    }
}
