//! A real Prometheus Pushgateway (Debian package `prometheus-pushgateway`).
//!
//! It listens on 127.0.0.1 only and keeps pushed metrics in memory (`--persistence.file=` is
//! empty, so Debian's default file under `/var/lib` is never touched).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::error::{ErrorKind, TestkitError};
use crate::process::{self, LaunchSpec, Running, Signal};

const SERVICE: &str = "pushgateway";
const PACKAGE: &str = "prometheus-pushgateway";
/// Debian's name for the `pushgateway` binary.
const BINARY: &str = "prometheus-pushgateway";

/// Options for a [`Pushgateway`]; [`PushgatewayBuilder::start`] launches it.
#[derive(Debug, Clone)]
pub struct PushgatewayBuilder {
    admin_api: bool,
    args: Vec<String>,
    startup_timeout: Duration,
}

impl Default for PushgatewayBuilder {
    fn default() -> Self {
        Self {
            admin_api: false,
            args: Vec::new(),
            startup_timeout: Duration::from_secs(30),
        }
    }
}

impl PushgatewayBuilder {
    /// Enables the admin API (`PUT /api/v1/admin/wipe`) with `--web.enable-admin-api`;
    /// default off.
    pub fn admin_api(mut self, enabled: bool) -> Self {
        self.admin_api = enabled;
        self
    }

    /// Adds a command-line flag, e.g. `--push.disable-consistency-check`.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// How long to wait for `GET /-/ready` to answer 200; default 30 s.
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Starts the server; returns once `/-/ready` answers 200.
    pub async fn start(self) -> Result<Pushgateway, TestkitError> {
        self.start_inner()
            .await
            .map_err(|kind| TestkitError::new("start", SERVICE, kind))
    }

    async fn start_inner(self) -> Result<Pushgateway, ErrorKind> {
        let binary = process::find_program(BINARY, PACKAGE, &[])?;
        let dir = process::temp_dir(SERVICE, None)?;
        let root = dir.path().to_path_buf();
        let spec = LaunchSpec {
            log: root.join("pushgateway.log"),
            signal: Signal::Term,
            timeout: self.startup_timeout,
        };
        let admin_api = self.admin_api;
        let args = self.args;
        let command = |port: u16| {
            let mut cmd = Command::new(&binary);
            cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--persistence.file=")
                .args(admin_api.then_some("--web.enable-admin-api"))
                .args(&args)
                .current_dir(&root);
            Ok(cmd)
        };
        let probe = |port: u16| async move {
            matches!(process::http_get_status(port, "/-/ready").await, Ok(200))
        };
        let (running, port) = process::launch(dir, spec, command, probe).await?;
        Ok(Pushgateway { running, port })
    }
}

/// A running Pushgateway. Dropping it stops the server and deletes its directory.
#[derive(Debug)]
pub struct Pushgateway {
    running: Running,
    port: u16,
}

impl Pushgateway {
    /// Options for a server; see [`PushgatewayBuilder`].
    pub fn builder() -> PushgatewayBuilder {
        PushgatewayBuilder::default()
    }

    /// Starts a server with the default options.
    pub async fn start() -> Result<Self, TestkitError> {
        Self::builder().start().await
    }

    /// `http://127.0.0.1:port` (no trailing slash): push to `/metrics/job/<job>/...`, scrape
    /// `/metrics`, the API is under `/api/v1`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:port`, the form [`crate::PrometheusBuilder::scrape_target`] takes.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The HTTP port.
    pub fn port(&self) -> u16 {
        self.port
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
