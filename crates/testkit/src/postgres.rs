//! A real PostgreSQL server (Debian package `postgresql`) in a temp dir on a free loopback port.
//!
//! `initdb` creates a cluster whose superuser has a generated password; the server runs as a
//! child process (not daemonized) with TCP on 127.0.0.1 only and its unix socket inside the temp
//! dir. PostgreSQL refuses to run as root, so when the test runs as root (as in CI containers)
//! `initdb` and `postgres` run as the `postgres` system user in a temp dir it owns.
//!
//! Clients use the `psql` binary (no driver crate): [`Postgres::execute`],
//! [`Postgres::create_database`] or a prepared [`Postgres::psql_command`].

use std::fmt;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::{ErrorKind, TestkitError};
use crate::process::{self, LaunchSpec, Running, Signal, SystemUser};

const SERVICE: &str = "postgres";
const PACKAGE: &str = "postgresql";
const CLIENT_PACKAGE: &str = "postgresql-client";
const DATABASE: &str = "postgres";
const READY_LINE: &str = "database system is ready to accept connections";
const DEFAULT_USER: &str = "citadel";
const INITDB_LIMIT: Duration = Duration::from_secs(120);
const PSQL_LIMIT: Duration = Duration::from_secs(60);

/// How clients must authenticate (the `pg_hba.conf` method for every connection).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PgAuth {
    /// `scram-sha-256`: the right password is required.
    #[default]
    Scram,
    /// `trust`: any password (or none) is accepted.
    Trust,
}

impl PgAuth {
    fn initdb_method(self) -> &'static str {
        match self {
            Self::Scram => "scram-sha-256",
            Self::Trust => "trust",
        }
    }
}

/// Options for a [`Postgres`] server; [`PostgresBuilder::start`] launches it.
#[derive(Clone)]
pub struct PostgresBuilder {
    auth: PgAuth,
    user: String,
    password: Option<String>,
    settings: Vec<(String, String)>,
    bin_dir: Option<PathBuf>,
    startup_timeout: Duration,
}

impl Default for PostgresBuilder {
    fn default() -> Self {
        Self {
            auth: PgAuth::default(),
            user: DEFAULT_USER.to_owned(),
            password: None,
            settings: Vec::new(),
            bin_dir: None,
            startup_timeout: Duration::from_secs(30),
        }
    }
}

impl fmt::Debug for PostgresBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresBuilder")
            .field("auth", &self.auth)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("settings", &self.settings)
            .field("bin_dir", &self.bin_dir)
            .field("startup_timeout", &self.startup_timeout)
            .finish()
    }
}

impl PostgresBuilder {
    /// How clients authenticate; default [`PgAuth::Scram`].
    pub fn auth(mut self, auth: PgAuth) -> Self {
        self.auth = auth;
        self
    }

    /// The superuser's name; default `citadel`.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = user.into();
        self
    }

    /// The superuser's password; default a random 32-character hex string.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Adds a server setting passed as `-c key=value`, e.g. `("max_connections", "20")`.
    pub fn setting(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((key.into(), value.into()));
        self
    }

    /// Uses the binaries in `dir` instead of the newest `/usr/lib/postgresql/*/bin` or `PATH`.
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    /// How long to wait for the server to accept connections; default 30 s.
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Creates the cluster and starts the server; returns once it accepts connections.
    pub async fn start(self) -> Result<Postgres, TestkitError> {
        self.start_inner()
            .await
            .map_err(|kind| TestkitError::new("start", SERVICE, kind))
    }

    async fn start_inner(self) -> Result<Postgres, ErrorKind> {
        validate_user(&self.user)?;
        let password = match self.password {
            Some(p) => p,
            None => process::random_hex(16)?,
        };
        if password.is_empty() || password.contains(['\n', '\r', '\0']) {
            return Err(ErrorKind::invalid(
                "password",
                "must be non-empty, on one line, without NUL",
            ));
        }
        let bin_dirs: Vec<PathBuf> = self.bin_dir.into_iter().chain(newest_bin_dir()).collect();
        let initdb = process::find_program("initdb", PACKAGE, &bin_dirs)?;
        let postgres = process::find_program("postgres", PACKAGE, &bin_dirs)?;
        let run_as = match process::effective_uid() {
            Some(0) => Some(SystemUser::lookup("postgres").ok_or_else(|| {
                ErrorKind::UserNotFound {
                    user: "postgres".to_owned(),
                    why: "PostgreSQL refuses to run as root; the Debian package `postgresql` \
                          creates that user"
                        .to_owned(),
                }
            })?),
            _ => None,
        };

        // Under /tmp: short enough for the unix socket path, and traversable by `postgres`.
        let tmp = Path::new("/tmp");
        let dir = process::temp_dir(SERVICE, tmp.is_dir().then_some(tmp))?;
        let root = dir.path().to_path_buf();
        let data_dir = root.join("data");
        let socket_dir = root.join("sock");
        let pwfile = root.join("pwfile");
        process::create_dir(&socket_dir)?;
        process::write_file(&pwfile, &format!("{password}\n"))?;
        std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| ErrorKind::io("chmod pwfile", e))?;
        if let Some(user) = &run_as {
            for path in [&root, &socket_dir, &pwfile] {
                user.chown(path)?;
            }
        }

        let mut cmd = tokio::process::Command::new(&initdb);
        cmd.arg("-D")
            .arg(&data_dir)
            .arg("-U")
            .arg(&self.user)
            .arg(format!("--pwfile={}", pwfile.display()))
            .arg(format!("--auth={}", self.auth.initdb_method()))
            .args(["--encoding=UTF8", "--locale=C", "--no-sync"])
            .env("LC_ALL", "C")
            .current_dir(&root);
        if let Some(user) = &run_as {
            cmd.uid(user.uid).gid(user.gid);
        }
        let initdb_result = process::run_helper(cmd, "initdb", INITDB_LIMIT).await;
        let _ = std::fs::remove_file(&pwfile);
        initdb_result?;

        let spec = LaunchSpec {
            log: root.join("postgres.log"),
            // SIGINT is the "fast" shutdown; SIGTERM would wait for clients to disconnect.
            signal: Signal::Int,
            timeout: self.startup_timeout,
        };
        let settings = self.settings;
        let command = |port: u16| {
            let mut cmd = Command::new(&postgres);
            cmd.arg("-D")
                .arg(&data_dir)
                .arg("-p")
                .arg(port.to_string())
                .arg("-k")
                .arg(&socket_dir)
                .env("LC_ALL", "C")
                .current_dir(&root);
            let defaults = [
                ("listen_addresses", "127.0.0.1"),
                ("logging_collector", "off"),
                ("log_destination", "stderr"),
                ("fsync", "off"),
                ("synchronous_commit", "off"),
                ("full_page_writes", "off"),
            ];
            let given = settings.iter().map(|(k, v)| (k.as_str(), v.as_str()));
            for (key, value) in defaults.into_iter().chain(given) {
                cmd.arg("-c").arg(format!("{key}={value}"));
            }
            if let Some(user) = &run_as {
                cmd.uid(user.uid).gid(user.gid);
            }
            Ok(cmd)
        };
        let log = spec.log.clone();
        let probe = move |port: u16| {
            let log = log.clone();
            async move { process::log_contains(&log, READY_LINE) && process::tcp_accepts(port).await }
        };
        let (running, port) = process::launch(dir, spec, command, probe).await?;
        Ok(Postgres {
            running,
            port,
            user: self.user,
            password,
            auth: self.auth,
            bin_dirs,
            data_dir,
        })
    }
}

fn validate_user(user: &str) -> Result<(), ErrorKind> {
    let ok = !user.is_empty()
        && user.len() <= 63
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ErrorKind::invalid(
            format!("user name `{user}`"),
            "use 1-63 ASCII letters, digits, `_` or `-`",
        ))
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has `postgres` in it.
fn newest_bin_dir() -> Option<PathBuf> {
    let entries = std::fs::read_dir("/usr/lib/postgresql").ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<f64>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, bin)| bin)
}

/// A running PostgreSQL server. Dropping it stops the server and deletes its directory.
pub struct Postgres {
    running: Running,
    port: u16,
    user: String,
    password: String,
    auth: PgAuth,
    bin_dirs: Vec<PathBuf>,
    data_dir: PathBuf,
}

impl fmt::Debug for Postgres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Postgres")
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("auth", &self.auth)
            .field("data_dir", &self.data_dir)
            .field("pid", &self.running.pid())
            .finish()
    }
}

impl Postgres {
    /// Options for a server; see [`PostgresBuilder`].
    pub fn builder() -> PostgresBuilder {
        PostgresBuilder::default()
    }

    /// Starts a server with the default options (scram auth, user `citadel`, random password).
    pub async fn start() -> Result<Self, TestkitError> {
        Self::builder().start().await
    }

    /// Always `127.0.0.1`.
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The superuser's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// How clients authenticate.
    pub fn auth(&self) -> PgAuth {
        self.auth
    }

    /// The database that always exists: `postgres`.
    pub fn database(&self) -> &str {
        DATABASE
    }

    /// `postgres://user:password@127.0.0.1:port/postgres`.
    pub fn dsn(&self) -> String {
        self.dsn_for(DATABASE)
    }

    /// The DSN for another database on this server.
    pub fn dsn_for(&self, database: &str) -> String {
        format!(
            "postgres://{}:{}@{}:{}/{}",
            percent_encode(&self.user),
            percent_encode(&self.password),
            self.host(),
            self.port,
            percent_encode(database)
        )
    }

    /// The cluster's data directory (kept by [`Postgres::stop`], deleted on drop).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server's log file.
    pub fn log_path(&self) -> &Path {
        self.running.log()
    }

    /// The postmaster's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.running.pid()
    }

    /// A `psql` command connected over TCP to `database` as the superuser, with the password
    /// in `PGPASSWORD`, `-X -w -v ON_ERROR_STOP=1` and a 10 s connect timeout. Add arguments
    /// such as `-c 'SELECT 1'`; override `PGPASSWORD` to try another password.
    pub fn psql_command(&self, database: &str) -> Result<tokio::process::Command, TestkitError> {
        let psql = process::find_program("psql", CLIENT_PACKAGE, &self.bin_dirs)
            .map_err(|kind| TestkitError::new("run psql on", SERVICE, kind))?;
        let mut cmd = tokio::process::Command::new(psql);
        cmd.args(["-X", "-w", "-v", "ON_ERROR_STOP=1", "-h", self.host()])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-U")
            .arg(&self.user)
            .arg("-d")
            .arg(database)
            .env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGSSLMODE", "disable")
            .env("LC_ALL", "C")
            .env_remove("PGSERVICE")
            .env_remove("PGOPTIONS");
        Ok(cmd)
    }

    /// Runs `sql` (one `psql -c` string) in the `postgres` database; returns the unaligned,
    /// tuples-only output (`psql -At`).
    pub async fn execute(&self, sql: &str) -> Result<String, TestkitError> {
        self.execute_in(DATABASE, sql).await
    }

    /// Runs `sql` in `database`, like [`Postgres::execute`].
    pub async fn execute_in(&self, database: &str, sql: &str) -> Result<String, TestkitError> {
        self.psql(database, sql, "run sql on").await
    }

    async fn psql(
        &self,
        database: &str,
        sql: &str,
        action: &'static str,
    ) -> Result<String, TestkitError> {
        let mut cmd = self.psql_command(database)?;
        cmd.args(["-q", "-A", "-t", "-c", sql]);
        process::run_helper(cmd, "psql", PSQL_LIMIT)
            .await
            .map_err(|kind| TestkitError::new(action, SERVICE, kind))
    }

    /// Creates the database `name`; returns its DSN.
    pub async fn create_database(&self, name: &str) -> Result<String, TestkitError> {
        if name.is_empty() || name.len() > 63 || name.contains('\0') {
            return Err(TestkitError::new(
                "create database on",
                SERVICE,
                ErrorKind::invalid(format!("database name `{name}`"), "use 1-63 bytes, no NUL"),
            ));
        }
        let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        self.psql(DATABASE, &sql, "create database on").await?;
        Ok(self.dsn_for(name))
    }

    /// Stops the server (fast shutdown, SIGKILL after 10 s) but keeps the data directory, so a
    /// test can check how clients see a stopped server. Calling it twice is fine.
    pub async fn stop(&mut self) -> Result<(), TestkitError> {
        self.running
            .stop()
            .await
            .map_err(|kind| TestkitError::new("stop", SERVICE, kind))
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_parts_are_percent_encoded() {
        assert_eq!(percent_encode("a b@c:d/é"), "a%20b%40c%3Ad%2F%C3%A9");
        assert_eq!(percent_encode("plain-._~09"), "plain-._~09");
    }

    #[test]
    fn user_names_are_checked() {
        assert!(validate_user("citadel_1").is_ok());
        assert!(validate_user("").is_err());
        assert!(validate_user("a;b").is_err());
    }

    #[test]
    fn builder_debug_hides_the_password() {
        let b = Postgres::builder().password("hunter2");
        assert!(!format!("{b:?}").contains("hunter2"));
    }
}
