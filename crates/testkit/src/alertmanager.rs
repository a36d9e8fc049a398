//! A real Alertmanager (Debian package `prometheus-alertmanager`) with a generated config.
//!
//! The config routes every alert to one `webhook` receiver (the URLs given with
//! [`AlertmanagerBuilder::webhook`], `send_resolved: true`), with short grouping intervals so a
//! test sees a notification about a second after the alert arrives. The server runs without
//! clustering (`--cluster.listen-address=` is empty: no gossip listener), keeps its silences and
//! notification log in the temp dir and listens on 127.0.0.1 only.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::{ErrorKind, TestkitError};
use crate::process::{self, LaunchSpec, Running, Signal};

const SERVICE: &str = "alertmanager";
const PACKAGE: &str = "prometheus-alertmanager";
/// Debian's name for the `alertmanager` binary.
const BINARY: &str = "prometheus-alertmanager";

/// Options for an [`Alertmanager`]; [`AlertmanagerBuilder::start`] launches it.
#[derive(Debug, Clone)]
pub struct AlertmanagerBuilder {
    webhooks: Vec<String>,
    group_by: Vec<String>,
    group_wait: Duration,
    group_interval: Duration,
    repeat_interval: Duration,
    resolve_timeout: Duration,
    raw_config: Option<String>,
    args: Vec<String>,
    startup_timeout: Duration,
}

impl Default for AlertmanagerBuilder {
    fn default() -> Self {
        Self {
            webhooks: Vec::new(),
            group_by: vec!["alertname".to_owned()],
            group_wait: Duration::from_secs(1),
            group_interval: Duration::from_secs(1),
            repeat_interval: Duration::from_secs(4 * 3600),
            resolve_timeout: Duration::from_secs(5 * 60),
            raw_config: None,
            args: Vec::new(),
            startup_timeout: Duration::from_secs(30),
        }
    }
}

impl AlertmanagerBuilder {
    /// Sends every notification to the webhook at `url` (`http://127.0.0.1:PORT/path`), with
    /// `send_resolved: true`. May be given several times (one receiver, several webhooks).
    /// Without any, alerts are accepted and grouped but sent nowhere.
    pub fn webhook(mut self, url: impl Into<String>) -> Self {
        self.webhooks.push(url.into());
        self
    }

    /// The route's `group_by` labels; default `["alertname"]`. `["..."]` makes every alert its
    /// own group; an empty list puts all alerts in one group.
    pub fn group_by<I, T>(mut self, labels: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.group_by = labels.into_iter().map(Into::into).collect();
        self
    }

    /// How long a new group waits before its first notification; default 1 s.
    pub fn group_wait(mut self, wait: Duration) -> Self {
        self.group_wait = wait;
        self
    }

    /// How long a group waits before notifying about changes (new or resolved alerts);
    /// default 1 s.
    pub fn group_interval(mut self, interval: Duration) -> Self {
        self.group_interval = interval;
        self
    }

    /// How long before an unchanged, still firing group is notified again; default 4 h.
    pub fn repeat_interval(mut self, interval: Duration) -> Self {
        self.repeat_interval = interval;
        self
    }

    /// `global.resolve_timeout`: when an alert posted without `endsAt` counts as resolved if
    /// it is not posted again; default 5 min (Prometheus always sends `endsAt`).
    pub fn resolve_timeout(mut self, timeout: Duration) -> Self {
        self.resolve_timeout = timeout;
        self
    }

    /// Uses `yaml` as the whole `alertmanager.yml` instead of the generated one (the options
    /// above are then ignored).
    pub fn raw_config(mut self, yaml: impl Into<String>) -> Self {
        self.raw_config = Some(yaml.into());
        self
    }

    /// Adds a command-line flag, e.g. `--log.level=debug`.
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
    pub async fn start(self) -> Result<Alertmanager, TestkitError> {
        self.start_inner()
            .await
            .map_err(|kind| TestkitError::new("start", SERVICE, kind))
    }

    async fn start_inner(self) -> Result<Alertmanager, ErrorKind> {
        for url in &self.webhooks {
            validate_url(url)?;
        }
        let binary = process::find_program(BINARY, PACKAGE, &[])?;
        let dir = process::temp_dir(SERVICE, None)?;
        let root = dir.path().to_path_buf();
        let config_path = root.join("alertmanager.yml");
        let config = match &self.raw_config {
            Some(raw) => raw.clone(),
            None => self.config_yaml(),
        };
        process::write_file(&config_path, &config)?;
        let storage = root.join("data");
        process::create_dir(&storage)?;

        let spec = LaunchSpec {
            log: root.join("alertmanager.log"),
            signal: Signal::Term,
            timeout: self.startup_timeout,
        };
        let args = self.args;
        let command = |port: u16| {
            let mut cmd = Command::new(&binary);
            cmd.arg(format!("--config.file={}", config_path.display()))
                .arg(format!("--storage.path={}", storage.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg(format!("--web.external-url=http://127.0.0.1:{port}"))
                .arg("--cluster.listen-address=")
                .args(&args)
                .current_dir(&root);
            Ok(cmd)
        };
        let probe = |port: u16| async move {
            matches!(process::http_get_status(port, "/-/ready").await, Ok(200))
        };
        let (running, port) = process::launch(dir, spec, command, probe).await?;
        Ok(Alertmanager {
            running,
            port,
            config_path,
        })
    }

    fn config_yaml(&self) -> String {
        let mut y = String::new();
        let _ = writeln!(y, "global:");
        let _ = writeln!(
            y,
            "  resolve_timeout: {}",
            process::duration_literal(self.resolve_timeout)
        );
        let receiver = if self.webhooks.is_empty() {
            "none"
        } else {
            "webhook"
        };
        let _ = writeln!(y, "route:");
        let _ = writeln!(y, "  receiver: {receiver}");
        let group_by: Vec<String> = self.group_by.iter().map(|l| yaml_quote(l)).collect();
        let _ = writeln!(y, "  group_by: [{}]", group_by.join(", "));
        for (key, value) in [
            ("group_wait", self.group_wait),
            ("group_interval", self.group_interval),
            ("repeat_interval", self.repeat_interval),
        ] {
            let _ = writeln!(y, "  {key}: {}", process::duration_literal(value));
        }
        let _ = writeln!(y, "receivers:");
        if self.webhooks.is_empty() {
            let _ = writeln!(y, "- name: none");
        } else {
            let _ = writeln!(y, "- name: webhook");
            let _ = writeln!(y, "  webhook_configs:");
            for url in &self.webhooks {
                let _ = writeln!(y, "  - url: {}", yaml_quote(url));
                let _ = writeln!(y, "    send_resolved: true");
            }
        }
        y
    }
}

fn validate_url(url: &str) -> Result<(), ErrorKind> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() && !url.chars().any(char::is_whitespace) => Ok(()),
        _ => Err(ErrorKind::invalid(
            format!("webhook URL `{url}`"),
            "use an absolute http:// or https:// URL such as `http://127.0.0.1:9095/alerts`",
        )),
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

/// A running Alertmanager. Dropping it stops the server and deletes its directory.
#[derive(Debug)]
pub struct Alertmanager {
    running: Running,
    port: u16,
    config_path: PathBuf,
}

impl Alertmanager {
    /// Options for a server; see [`AlertmanagerBuilder`].
    pub fn builder() -> AlertmanagerBuilder {
        AlertmanagerBuilder::default()
    }

    /// `http://127.0.0.1:port` (no trailing slash); the API is under `/api/v2`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:port`, the form [`crate::PrometheusBuilder::alertmanager`] takes.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The HTTP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `alertmanager.yml` it runs with.
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
    fn config_routes_everything_to_the_webhooks() {
        let y = Alertmanager::builder()
            .webhook("http://127.0.0.1:1/alerts")
            .group_wait(Duration::from_millis(500))
            .config_yaml();
        assert!(y.contains("  receiver: webhook\n"), "{y}");
        assert!(y.contains("  group_by: [\"alertname\"]\n"), "{y}");
        assert!(y.contains("  group_wait: 500ms\n"), "{y}");
        assert!(y.contains("  group_interval: 1s\n"), "{y}");
        assert!(y.contains("  repeat_interval: 14400s\n"), "{y}");
        assert!(
            y.contains("  - url: \"http://127.0.0.1:1/alerts\"\n    send_resolved: true\n"),
            "{y}"
        );
    }

    #[test]
    fn without_webhooks_the_receiver_sends_nowhere() {
        let y = Alertmanager::builder().group_by(["..."]).config_yaml();
        assert!(y.contains("  receiver: none\n"), "{y}");
        assert!(y.contains("- name: none\n"), "{y}");
        assert!(y.contains("  group_by: [\"...\"]\n"), "{y}");
        assert!(!y.contains("webhook_configs"), "{y}");
    }

    #[test]
    fn webhook_urls_must_be_absolute_http() {
        assert!(validate_url("http://127.0.0.1:9/a").is_ok());
        assert!(validate_url("https://127.0.0.1:9/a").is_ok());
        for bad in ["127.0.0.1:9/a", "http://", "ftp://x", "http://a b"] {
            let err = validate_url(bad).unwrap_err().to_string();
            assert!(err.contains("webhook URL"), "{bad}: {err}");
        }
    }
}
