//! A real PostgreSQL server (Debian package `postgresql`) in a temp dir on a free loopback port.
//!
//! `initdb` creates a cluster whose superuser has a generated password; the server runs as a
//! child process (not daemonized) with TCP on 127.0.0.1 only and its unix socket inside the temp
//! dir. PostgreSQL refuses to run as root, so when the test runs as root (as in CI containers)
//! `initdb` and `postgres` run as the `postgres` system user in a temp dir it owns.
//!
//! Clients use the `psql` binary (no driver crate): [`Postgres::execute`],
//! [`Postgres::create_database`] or a prepared [`Postgres::psql_command`]. With the feature
//! `fresh-database`, `Postgres::fresh_database` gives each test a database of its own with a
//! sqlx pool (and `fresh_database_with_migrations` applies a migrations directory), dropped
//! when the test is done, like `#[sqlx::test]`.
//!
//! Pointing a tester at the server is one call: `DatabaseTarget::from_url("main", &pg.dsn())`
//! (or [`Postgres::dsn_for`] a database), `external-api` targets take the same URL.
//!
//! With [`PostgresBuilder::tls`] the launcher makes a throwaway CA and a server certificate for
//! `127.0.0.1` / `localhost` with the `openssl` CLI (Debian package `openssl`) in the temp dir
//! and starts the server with `ssl=on`; clients verify it against [`Postgres::ca_cert_path`].

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::{ErrorKind, TestkitError};
use crate::process::{self, LaunchSpec, Running, Signal, SystemUser};

#[cfg(feature = "fresh-database")]
mod fresh;
#[cfg(feature = "fresh-database")]
pub use fresh::TestDatabase;

const SERVICE: &str = "postgres";
const PACKAGE: &str = "postgresql";
const CLIENT_PACKAGE: &str = "postgresql-client";
const DATABASE: &str = "postgres";
const READY_LINE: &str = "database system is ready to accept connections";
const DEFAULT_USER: &str = "citadel";
const OPENSSL_PACKAGE: &str = "openssl";
const INITDB_LIMIT: Duration = Duration::from_secs(120);
const PSQL_LIMIT: Duration = Duration::from_secs(60);
const OPENSSL_LIMIT: Duration = Duration::from_secs(30);
/// How long the throwaway certificates are valid.
const CERT_DAYS: &str = "3";
/// The server certificate's common name (its subjectAltName also names `localhost`).
const CERT_CN: &str = "127.0.0.1";

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
    tls: bool,
    require_tls: bool,
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
            tls: false,
            require_tls: false,
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
            .field("tls", &self.tls)
            .field("require_tls", &self.require_tls)
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

    /// Serves TLS (`ssl=on`) with a server certificate for `127.0.0.1` and `localhost`, signed
    /// by a throwaway CA made in the temp dir with the `openssl` CLI (Debian package
    /// `openssl`); [`Postgres::ca_cert_path`] is that CA for `sslrootcert`. Clients may still
    /// connect without TLS unless [`PostgresBuilder::require_tls`] is set. Default off.
    pub fn tls(mut self, yes: bool) -> Self {
        self.tls = yes;
        self
    }

    /// Accepts TCP connections only over TLS (`hostssl` lines in `pg_hba.conf`, with the
    /// method of [`PostgresBuilder::auth`]); `true` implies [`PostgresBuilder::tls`]. A client
    /// without TLS is refused with "no pg_hba.conf entry ... no encryption". Default off.
    pub fn require_tls(mut self, yes: bool) -> Self {
        self.require_tls = yes;
        if yes {
            self.tls = true;
        }
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
        let openssl = if self.tls {
            Some(process::find_program("openssl", OPENSSL_PACKAGE, &[])?)
        } else {
            None
        };
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
        // The certificates are made while initdb runs: TLS adds next to nothing to start-up.
        let certs = async {
            match &openssl {
                Some(openssl) => make_certs(openssl, &root.join("tls"), run_as.as_ref())
                    .await
                    .map(Some),
                None => Ok(None),
            }
        };
        let (initdb_result, certs) =
            tokio::join!(process::run_helper(cmd, "initdb", INITDB_LIMIT), certs);
        let _ = std::fs::remove_file(&pwfile);
        initdb_result?;
        let certs = certs?;
        if self.require_tls {
            let hba = data_dir.join("pg_hba.conf");
            let text = std::fs::read_to_string(&hba)
                .map_err(|e| ErrorKind::io(format!("read {}", hba.display()), e))?;
            process::write_file(&hba, &hostssl_only(&text))?;
        }

        let spec = LaunchSpec {
            log: root.join("postgres.log"),
            // SIGINT is the "fast" shutdown; SIGTERM would wait for clients to disconnect.
            signal: Signal::Int,
            timeout: self.startup_timeout,
        };
        let mut settings = Vec::new();
        if let Some(certs) = &certs {
            settings.push(("ssl".to_owned(), "on".to_owned()));
            settings.push((
                "ssl_cert_file".to_owned(),
                certs.server_cert.display().to_string(),
            ));
            settings.push((
                "ssl_key_file".to_owned(),
                certs.server_key.display().to_string(),
            ));
        }
        settings.extend(self.settings);
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
            ca_cert: certs.map(|c| c.ca_cert),
        })
    }
}

/// The files a TLS server needs, in the launcher's temp dir.
#[derive(Debug)]
struct Certs {
    ca_cert: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

/// The `openssl` config for both certificates: extensions rustls/webpki and libpq accept.
const OPENSSL_CONFIG: &str = "\
[req]
distinguished_name = dn
prompt = no

[dn]
CN = citadel-itest

[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

/// Makes a throwaway CA and a server key and certificate (ECDSA P-256, valid a few days) in
/// `dir`; the server files are given to `run_as` (PostgreSQL wants its key `0600` and its own).
/// Only the CA certificate and the server's files are kept.
async fn make_certs(
    openssl: &Path,
    dir: &Path,
    run_as: Option<&SystemUser>,
) -> Result<Certs, ErrorKind> {
    process::create_dir(dir)?;
    let config = dir.join("openssl.cnf");
    let ca_key = dir.join("ca.key");
    let csr = dir.join("server.csr");
    let certs = Certs {
        ca_cert: dir.join("ca.crt"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
    };
    process::write_file(&config, OPENSSL_CONFIG)?;
    let openssl_cmd = |args: &[&OsStr]| {
        let mut cmd = tokio::process::Command::new(openssl);
        cmd.args(args).current_dir(dir).env("LC_ALL", "C");
        cmd
    };
    let new_key: [&OsStr; 6] = [
        "-newkey".as_ref(),
        "ec".as_ref(),
        "-pkeyopt".as_ref(),
        "ec_paramgen_curve:prime256v1".as_ref(),
        "-nodes".as_ref(),
        "-sha256".as_ref(),
    ];
    let ca_serial = format!("0x{}", process::random_hex(16)?);
    let mut ca = openssl_cmd(&["req".as_ref(), "-x509".as_ref()]);
    ca.args(new_key)
        .args(["-days", CERT_DAYS, "-set_serial", &ca_serial])
        .args([
            "-subj",
            "/CN=citadel-itest throwaway CA",
            "-extensions",
            "ca_ext",
        ])
        .arg("-config")
        .arg(&config)
        .arg("-keyout")
        .arg(&ca_key)
        .arg("-out")
        .arg(&certs.ca_cert);
    let mut request = openssl_cmd(&["req".as_ref(), "-new".as_ref()]);
    request
        .args(new_key)
        .args(["-subj", &format!("/CN={CERT_CN}")])
        .arg("-config")
        .arg(&config)
        .arg("-keyout")
        .arg(&certs.server_key)
        .arg("-out")
        .arg(&csr);
    let (ca, request) = tokio::join!(
        process::run_helper(ca, "openssl req -x509", OPENSSL_LIMIT),
        process::run_helper(request, "openssl req -new", OPENSSL_LIMIT),
    );
    ca?;
    request?;

    let server_serial = format!("0x{}", process::random_hex(16)?);
    let mut sign = openssl_cmd(&["x509".as_ref(), "-req".as_ref()]);
    sign.arg("-in")
        .arg(&csr)
        .arg("-CA")
        .arg(&certs.ca_cert)
        .arg("-CAkey")
        .arg(&ca_key)
        .args(["-set_serial", &server_serial, "-days", CERT_DAYS, "-sha256"])
        .arg("-extfile")
        .arg(&config)
        .args(["-extensions", "server_ext"])
        .arg("-out")
        .arg(&certs.server_cert);
    let signed = process::run_helper(sign, "openssl x509", OPENSSL_LIMIT).await;
    // Nobody signs anything else with this CA.
    for path in [&ca_key, &csr, &config] {
        let _ = std::fs::remove_file(path);
    }
    signed?;

    std::fs::set_permissions(&certs.server_key, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| ErrorKind::io("chmod server.key", e))?;
    if let Some(user) = run_as {
        for path in [dir, &certs.server_cert, &certs.server_key] {
            user.chown(path)?;
        }
    }
    Ok(certs)
}

/// `pg_hba.conf` with every `host` line turned into `hostssl`: TCP only over TLS.
fn hostssl_only(hba: &str) -> String {
    hba.lines()
        .map(|line| match line.strip_prefix("host") {
            Some(rest) if rest.starts_with([' ', '\t']) => format!("hostssl{rest}\n"),
            _ => format!("{line}\n"),
        })
        .collect()
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
    ca_cert: Option<PathBuf>,
}

impl fmt::Debug for Postgres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Postgres")
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("auth", &self.auth)
            .field("data_dir", &self.data_dir)
            .field("ca_cert", &self.ca_cert)
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

    /// Whether the server serves TLS ([`PostgresBuilder::tls`]).
    pub fn tls(&self) -> bool {
        self.ca_cert.is_some()
    }

    /// The PEM certificate of the throwaway CA that signed the server's certificate, for a
    /// client's `sslrootcert` (with `sslmode=verify-full`); `None` without TLS. It lives in the
    /// server's temp dir and is deleted on drop.
    pub fn ca_cert_path(&self) -> Option<&Path> {
        self.ca_cert.as_deref()
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
    ///
    /// Without TLS it sets `PGSSLMODE=disable`; on a TLS server `PGSSLMODE=verify-full` with
    /// `PGSSLROOTCERT` = [`Postgres::ca_cert_path`]. Override either to try something else.
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
            .env("LC_ALL", "C")
            .env_remove("PGSERVICE")
            .env_remove("PGOPTIONS");
        match &self.ca_cert {
            Some(ca) => cmd.env("PGSSLMODE", "verify-full").env("PGSSLROOTCERT", ca),
            None => cmd.env("PGSSLMODE", "disable").env_remove("PGSSLROOTCERT"),
        };
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
    fn require_tls_turns_host_lines_into_hostssl() {
        let hba = "# host in a comment\nlocal   all all trust\nhost    all all 127.0.0.1/32 trust\n\
                   host\treplication all ::1/128 trust\nhostssl all all ::1/128 trust\n";
        assert_eq!(
            hostssl_only(hba),
            "# host in a comment\nlocal   all all trust\nhostssl    all all 127.0.0.1/32 trust\n\
             hostssl\treplication all ::1/128 trust\nhostssl all all ::1/128 trust\n"
        );
        let b = Postgres::builder().require_tls(true);
        assert!(b.tls && b.require_tls);
    }

    #[test]
    fn builder_debug_hides_the_password() {
        let b = Postgres::builder().password("hunter2");
        assert!(!format!("{b:?}").contains("hunter2"));
    }
}
