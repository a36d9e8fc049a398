//! A real Prometheus server (Debian package `prometheus`) with a generated config.
//!
//! The config holds the given static scrape targets (or raw `scrape_configs` list items), rule
//! files and intervals; the TSDB lives in the temp dir; the web UI and API listen on 127.0.0.1
//! with `--web.enable-lifecycle`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::{ErrorKind, TestkitError};
use crate::process::{self, LaunchSpec, Running, Signal};

const SERVICE: &str = "prometheus";
const PACKAGE: &str = "prometheus";

/// Options for a [`Prometheus`] server; [`PrometheusBuilder::start`] launches it.
#[derive(Debug, Clone)]
pub struct PrometheusBuilder {
    static_jobs: Vec<(String, Vec<String>)>,
    raw_scrape_configs: Vec<String>,
    rule_files: Vec<(String, String)>,
    alertmanagers: Vec<String>,
    scrape_interval: Duration,
    evaluation_interval: Duration,
    args: Vec<String>,
    startup_timeout: Duration,
}

impl Default for PrometheusBuilder {
    fn default() -> Self {
        Self {
            static_jobs: Vec::new(),
            raw_scrape_configs: Vec::new(),
            rule_files: Vec::new(),
            alertmanagers: Vec::new(),
            scrape_interval: Duration::from_secs(1),
            evaluation_interval: Duration::from_secs(1),
            args: Vec::new(),
            startup_timeout: Duration::from_secs(30),
        }
    }
}

impl PrometheusBuilder {
    /// Adds a scrape job with static targets (`host:port`), e.g. `("api", ["127.0.0.1:9100"])`.
    pub fn scrape_target<I, T>(mut self, job: impl Into<String>, targets: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: ToString,
    {
        let targets = targets.into_iter().map(|t| t.to_string()).collect();
        self.static_jobs.push((job.into(), targets));
        self
    }

    /// Adds raw YAML list items for `scrape_configs`, written at column 0, e.g.
    /// `"- job_name: api\n  metrics_path: /m\n  static_configs:\n    - targets: ['127.0.0.1:1']"`.
    pub fn scrape_config(mut self, yaml: impl Into<String>) -> Self {
        self.raw_scrape_configs.push(yaml.into());
        self
    }

    /// Adds a rule file `name` (a plain file name such as `alerts.yml`) with YAML `contents`.
    pub fn rule_file(mut self, name: impl Into<String>, contents: impl Into<String>) -> Self {
        self.rule_files.push((name.into(), contents.into()));
        self
    }

    /// Sends alerts to an Alertmanager at `host:port`.
    pub fn alertmanager(mut self, target: impl ToString) -> Self {
        self.alertmanagers.push(target.to_string());
        self
    }

    /// The global scrape interval; default 1 s.
    pub fn scrape_interval(mut self, interval: Duration) -> Self {
        self.scrape_interval = interval;
        self
    }

    /// The global rule evaluation interval; default 1 s.
    pub fn evaluation_interval(mut self, interval: Duration) -> Self {
        self.evaluation_interval = interval;
        self
    }

    /// Adds a command-line flag, e.g. `--web.enable-admin-api`.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// How long to wait for `GET /-/ready` to answer 200; default 30 s.
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Writes the config and starts the server; returns once `/-/ready` answers 200.
    pub async fn start(self) -> Result<Prometheus, TestkitError> {
        self.start_inner()
            .await
            .map_err(|kind| TestkitError::new("start", SERVICE, kind))
    }

    async fn start_inner(self) -> Result<Prometheus, ErrorKind> {
        let binary = process::find_program("prometheus", PACKAGE, &[])?;
        let dir = process::temp_dir(SERVICE, None)?;
        let root = dir.path().to_path_buf();
        let rules_dir = root.join("rules");
        process::create_dir(&rules_dir)?;
        let mut rule_paths = Vec::new();
        for (name, contents) in &self.rule_files {
            if name.is_empty() || name.contains('/') || name.starts_with('.') {
                return Err(ErrorKind::invalid(
                    format!("rule file name `{name}`"),
                    "use a plain file name such as `alerts.yml`",
                ));
            }
            let path = rules_dir.join(name);
            process::write_file(&path, contents)?;
            rule_paths.push(path);
        }
        let config_path = root.join("prometheus.yml");
        process::write_file(&config_path, &self.config_yaml(&rule_paths))?;
        let storage = root.join("data");

        let spec = LaunchSpec {
            log: root.join("prometheus.log"),
            signal: Signal::Term,
            timeout: self.startup_timeout,
        };
        let args = self.args;
        let command = |port: u16| {
            let mut cmd = Command::new(&binary);
            cmd.arg(format!("--config.file={}", config_path.display()))
                .arg(format!("--storage.tsdb.path={}", storage.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--web.enable-lifecycle")
                .args(&args)
                .current_dir(&root);
            Ok(cmd)
        };
        let probe = |port: u16| async move {
            matches!(process::http_get_status(port, "/-/ready").await, Ok(200))
        };
        let (running, port) = process::launch(dir, spec, command, probe).await?;
        Ok(Prometheus {
            running,
            port,
            config_path,
        })
    }

    fn config_yaml(&self, rule_paths: &[PathBuf]) -> String {
        let mut y = String::new();
        let _ = writeln!(y, "global:");
        let _ = writeln!(
            y,
            "  scrape_interval: {}",
            process::duration_literal(self.scrape_interval)
        );
        let _ = writeln!(
            y,
            "  evaluation_interval: {}",
            process::duration_literal(self.evaluation_interval)
        );
        if !self.alertmanagers.is_empty() {
            let _ = writeln!(y, "alerting:\n  alertmanagers:\n  - static_configs:");
            let _ = writeln!(y, "    - targets: [{}]", quoted_list(&self.alertmanagers));
        }
        let rules: Vec<String> = rule_paths.iter().map(|p| p.display().to_string()).collect();
        let _ = writeln!(y, "rule_files: [{}]", quoted_list(&rules));
        if self.static_jobs.is_empty() && self.raw_scrape_configs.is_empty() {
            let _ = writeln!(y, "scrape_configs: []");
            return y;
        }
        let _ = writeln!(y, "scrape_configs:");
        for (job, targets) in &self.static_jobs {
            let _ = writeln!(y, "- job_name: {}", yaml_quote(job));
            let _ = writeln!(y, "  static_configs:");
            let _ = writeln!(y, "  - targets: [{}]", quoted_list(targets));
        }
        for raw in &self.raw_scrape_configs {
            let _ = writeln!(y, "{}", raw.trim_end());
        }
        y
    }
}

/// A YAML double-quoted scalar.
fn yaml_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn quoted_list(items: &[String]) -> String {
    items
        .iter()
        .map(|s| yaml_quote(s))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A running Prometheus server. Dropping it stops the server and deletes its directory.
#[derive(Debug)]
pub struct Prometheus {
    running: Running,
    port: u16,
    config_path: PathBuf,
}

impl Prometheus {
    /// Options for a server; see [`PrometheusBuilder`].
    pub fn builder() -> PrometheusBuilder {
        PrometheusBuilder::default()
    }

    /// `http://127.0.0.1:port` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The HTTP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The generated `prometheus.yml`.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The server's log file.
    pub fn log_path(&self) -> &Path {
        self.running.log()
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.running.pid()
    }

    /// Stops the server (SIGTERM, SIGKILL after 10 s), keeping its directory until drop.
    pub async fn stop(&mut self) -> Result<(), TestkitError> {
        self.running
            .stop()
            .await
            .map_err(|kind| TestkitError::new("stop", SERVICE, kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lists_jobs_rules_and_raw_fragments() {
        let b = Prometheus::builder()
            .scrape_target("api", ["127.0.0.1:1", "127.0.0.1:2"])
            .scrape_config("- job_name: raw\n  static_configs:\n  - targets: ['127.0.0.1:3']\n")
            .scrape_interval(Duration::from_millis(500));
        let y = b.config_yaml(&[PathBuf::from("/t/rules/a.yml")]);
        assert!(y.contains("  scrape_interval: 500ms\n"), "{y}");
        assert!(y.contains("rule_files: [\"/t/rules/a.yml\"]\n"), "{y}");
        assert!(y.contains("- job_name: \"api\"\n"), "{y}");
        assert!(
            y.contains("  - targets: [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n"),
            "{y}"
        );
        assert!(y.contains("- job_name: raw\n"), "{y}");
    }

    #[test]
    fn yaml_quoting_escapes() {
        assert_eq!(yaml_quote("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
