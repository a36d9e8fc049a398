//! A real nginx (Debian package `nginx-light`) acting as the API gateway.
//!
//! The generated `nginx.conf` keeps everything (pid, logs, temp paths) inside a temp prefix dir,
//! runs in the foreground (`daemon off;`) with one worker, listens on 127.0.0.1 and serves:
//!
//! - `GET /health` → `200 {"status":"ok"}` (`application/json`), always;
//! - any extra snippets given with [`NginxBuilder::location`];
//! - `location /` → the upstream servers (HTTP/1.1, keep-alive, `proxy_buffering off` so
//!   streamed responses pass through as they are produced, client headers passed on plus
//!   `X-Forwarded-*`), or, with no upstream, a plain `200 ok`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::{ErrorKind, TestkitError};
use crate::process::{self, LaunchSpec, Running, Signal};

const SERVICE: &str = "nginx";
const PACKAGE: &str = "nginx-light";

/// Options for an [`Nginx`] gateway; [`NginxBuilder::start`] launches it.
#[derive(Debug, Clone)]
pub struct NginxBuilder {
    upstreams: Vec<String>,
    upstream_directives: Vec<String>,
    locations: Vec<String>,
    http_snippets: Vec<String>,
    startup_timeout: Duration,
}

impl Default for NginxBuilder {
    fn default() -> Self {
        Self {
            upstreams: Vec::new(),
            upstream_directives: Vec::new(),
            locations: Vec::new(),
            http_snippets: Vec::new(),
            startup_timeout: Duration::from_secs(30),
        }
    }
}

impl NginxBuilder {
    /// Adds an upstream server: a `SocketAddr` or a string such as `"127.0.0.1:8001"`, optionally
    /// with `server` parameters (`"127.0.0.1:8001 weight=2 max_fails=1"`).
    pub fn upstream(mut self, addr: impl ToString) -> Self {
        self.upstreams.push(addr.to_string());
        self
    }

    /// Adds several upstream servers; see [`NginxBuilder::upstream`].
    pub fn upstreams<I, A>(mut self, addrs: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: ToString,
    {
        self.upstreams
            .extend(addrs.into_iter().map(|a| a.to_string()));
        self
    }

    /// Adds a directive to the `upstream` block, e.g. `"least_conn;"`.
    pub fn upstream_directive(mut self, directive: impl Into<String>) -> Self {
        self.upstream_directives.push(directive.into());
        self
    }

    /// Adds a snippet to the `server` block before `location /`, e.g.
    /// `"location = /slow { return 504; }"`.
    pub fn location(mut self, snippet: impl Into<String>) -> Self {
        self.locations.push(snippet.into());
        self
    }

    /// Adds a snippet to the `http` block, e.g. a `map` or a second `upstream`.
    pub fn http_snippet(mut self, snippet: impl Into<String>) -> Self {
        self.http_snippets.push(snippet.into());
        self
    }

    /// How long to wait for `GET /health` to answer 200; default 30 s.
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Writes the config and starts nginx; returns once `/health` answers 200.
    pub async fn start(self) -> Result<Nginx, TestkitError> {
        self.start_inner()
            .await
            .map_err(|kind| TestkitError::new("start", SERVICE, kind))
    }

    async fn start_inner(self) -> Result<Nginx, ErrorKind> {
        let binary = process::find_program("nginx", PACKAGE, &[])?;
        let dir = process::temp_dir(SERVICE, None)?;
        let prefix = dir.path().to_path_buf();
        let config_path = prefix.join("nginx.conf");
        let error_log = prefix.join("error.log");
        // Workers run as `nobody` when the master is root; keep them root so they can use the
        // private temp dir.
        let as_root = process::effective_uid() == Some(0);

        let spec = LaunchSpec {
            log: error_log.clone(),
            signal: Signal::Term,
            timeout: self.startup_timeout,
        };
        let command = |port: u16| {
            process::write_file(&config_path, &self.config(&prefix, port, as_root))?;
            let mut cmd = Command::new(&binary);
            cmd.arg("-p")
                .arg(format!("{}/", prefix.display()))
                .arg("-c")
                .arg(&config_path)
                .arg("-e")
                .arg(&error_log)
                .current_dir(&prefix);
            Ok(cmd)
        };
        let probe = |port: u16| async move {
            matches!(process::http_get_status(port, "/health").await, Ok(200))
        };
        let (running, port) = process::launch(dir, spec, command, probe).await?;
        Ok(Nginx {
            running,
            port,
            config_path,
        })
    }

    fn config(&self, prefix: &Path, port: u16, as_root: bool) -> String {
        let p = prefix.display();
        let mut c = String::new();
        let _ = writeln!(c, "daemon off;\nmaster_process on;\nworker_processes 1;");
        if as_root {
            let _ = writeln!(c, "user root;");
        }
        let _ = writeln!(c, "pid {p}/nginx.pid;\nerror_log {p}/error.log info;");
        let _ = writeln!(c, "events {{ worker_connections 1024; }}");
        let _ = writeln!(c, "http {{");
        let _ = writeln!(c, "  default_type application/octet-stream;");
        let _ = writeln!(c, "  access_log {p}/access.log;");
        for (directive, name) in [
            ("client_body_temp_path", "client_body_temp"),
            ("proxy_temp_path", "proxy_temp"),
            ("fastcgi_temp_path", "fastcgi_temp"),
            ("uwsgi_temp_path", "uwsgi_temp"),
            ("scgi_temp_path", "scgi_temp"),
        ] {
            let _ = writeln!(c, "  {directive} {p}/{name};");
        }
        let _ = writeln!(c, "  client_max_body_size 64m;");
        for snippet in &self.http_snippets {
            let _ = writeln!(c, "  {snippet}");
        }
        if !self.upstreams.is_empty() {
            let _ = writeln!(c, "  upstream citadel_backend {{");
            for server in &self.upstreams {
                let _ = writeln!(c, "    server {server};");
            }
            for directive in &self.upstream_directives {
                let _ = writeln!(c, "    {directive}");
            }
            let _ = writeln!(c, "    keepalive 32;\n  }}");
        }
        let _ = writeln!(c, "  server {{");
        let _ = writeln!(
            c,
            "    listen 127.0.0.1:{port};\n    server_name localhost;"
        );
        let _ = writeln!(
            c,
            "    location = /health {{ default_type application/json; return 200 '{{\"status\":\"ok\"}}'; }}"
        );
        for snippet in &self.locations {
            let _ = writeln!(c, "    {snippet}");
        }
        if self.upstreams.is_empty() {
            let _ = writeln!(
                c,
                "    location / {{ default_type text/plain; return 200 'ok\\n'; }}"
            );
        } else {
            let _ = writeln!(c, "    location / {{");
            for line in [
                "proxy_pass http://citadel_backend;",
                "proxy_http_version 1.1;",
                "proxy_set_header Connection \"\";",
                "proxy_set_header Host $http_host;",
                "proxy_set_header X-Real-IP $remote_addr;",
                "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
                "proxy_set_header X-Forwarded-Proto $scheme;",
                "proxy_buffering off;",
                "proxy_request_buffering off;",
                "proxy_connect_timeout 5s;",
                "proxy_read_timeout 300s;",
                "proxy_send_timeout 300s;",
            ] {
                let _ = writeln!(c, "      {line}");
            }
            let _ = writeln!(c, "    }}");
        }
        let _ = writeln!(c, "  }}\n}}");
        c
    }
}

/// A running nginx gateway. Dropping it stops nginx and deletes its prefix dir.
#[derive(Debug)]
pub struct Nginx {
    running: Running,
    port: u16,
    config_path: PathBuf,
}

impl Nginx {
    /// Options for a gateway; see [`NginxBuilder`].
    pub fn builder() -> NginxBuilder {
        NginxBuilder::default()
    }

    /// Starts a gateway with no upstream: `/health` and a plain `200 ok` for everything else.
    pub async fn start() -> Result<Self, TestkitError> {
        Self::builder().start().await
    }

    /// Starts a gateway that proxies `/` to `upstreams`.
    pub async fn proxy_to<I, A>(upstreams: I) -> Result<Self, TestkitError>
    where
        I: IntoIterator<Item = A>,
        A: ToString,
    {
        Self::builder().upstreams(upstreams).start().await
    }

    /// `http://127.0.0.1:port` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The HTTP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The generated `nginx.conf`.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The error log (start-up messages included).
    pub fn log_path(&self) -> &Path {
        self.running.log()
    }

    /// The master process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.running.pid()
    }

    /// Stops nginx (SIGTERM, SIGKILL after 10 s), keeping its directory until drop.
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
    fn config_proxies_to_the_upstreams() {
        let b = Nginx::builder()
            .upstream("127.0.0.1:1")
            .upstream(std::net::SocketAddr::from(([127, 0, 0, 1], 2)))
            .location("location = /x { return 204; }");
        let c = b.config(Path::new("/p"), 8080, true);
        assert!(c.contains("user root;"), "{c}");
        assert!(
            c.contains("    server 127.0.0.1:1;\n    server 127.0.0.1:2;\n"),
            "{c}"
        );
        assert!(c.contains("listen 127.0.0.1:8080;"), "{c}");
        assert!(c.contains("proxy_buffering off;"), "{c}");
        assert!(c.contains("location = /x { return 204; }"), "{c}");
        assert!(c.contains("pid /p/nginx.pid;"), "{c}");
    }

    #[test]
    fn config_without_upstream_answers_ok() {
        let c = Nginx::builder().config(Path::new("/p"), 1, false);
        assert!(!c.contains("upstream"), "{c}");
        assert!(!c.contains("user root"), "{c}");
        assert!(c.contains("return 200 'ok\\n';"), "{c}");
    }
}
