//! The `external_api:` section: which PostgreSQL, Qdrant and Prometheus services to check.
//!
//! Every problem is found by one function per target kind ([`PostgresTarget`],
//! [`QdrantTarget`], [`PrometheusTarget`]): config validation reports them with key paths
//! before anything connects, and each target's `configuration` check reports them again at run
//! time (secrets are resolved then too).

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use citadel_itest_core::config::{Secret, Validate, Validator, redact_text, redact_url};
use citadel_itest_core::error_chain;
use serde::{Deserialize, Serialize};

/// Default number of timed round trips of each performance check.
pub const DEFAULT_SAMPLES: u32 = 50;
/// Largest accepted `performance.samples`.
pub const MAX_SAMPLES: u32 = 10_000;
/// Default `connect_timeout` of every target.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `request_timeout` of every target.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest accepted `connect_timeout`, `request_timeout` and `timeout`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// Default PostgreSQL `pool_size`.
pub const DEFAULT_POOL_SIZE: u32 = 5;
/// Largest accepted PostgreSQL `pool_size`.
pub const MAX_POOL_SIZE: u32 = 100;
/// Default Qdrant `collection_dimension`.
pub const DEFAULT_DIMENSION: u64 = 8;
/// Largest accepted Qdrant `collection_dimension` (Qdrant's own limit).
pub const MAX_DIMENSION: u64 = 65_536;

/// The `external_api:` section: any number of each kind of service.
///
/// ```yaml
/// external_api:
///   postgres:
///     - name: main_db
///       dsn: postgres://citadel@127.0.0.1:55432/citadel
///       password: { env: PG_PASSWORD }
///   qdrant:
///     - name: vectors
///       grpc_url: http://127.0.0.1:56334
///       rest_url: http://127.0.0.1:56333
///       api_key: { env: CITADEL_QDRANT_API_KEY }
///   prometheus:
///     - name: metrics
///       url: http://127.0.0.1:59090
///   performance:
///     samples: 50
/// ```
///
/// Names are unique across all three lists: they make the check ids
/// (`external_api.<name>.<category>`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ExternalApiConfig {
    /// PostgreSQL servers (feature `postgres`).
    #[serde(default)]
    pub postgres: Vec<PostgresTarget>,
    /// Qdrant servers (feature `qdrant`).
    #[serde(default)]
    pub qdrant: Vec<QdrantTarget>,
    /// Prometheus servers (feature `prometheus`).
    #[serde(default)]
    pub prometheus: Vec<PrometheusTarget>,
    /// Settings of the performance checks.
    #[serde(default)]
    pub performance: PerformanceConfig,
}

impl ExternalApiConfig {
    /// An empty section; add targets with the builder methods.
    pub fn new() -> Self {
        ExternalApiConfig::default()
    }

    /// Add a PostgreSQL target.
    pub fn postgres(mut self, target: PostgresTarget) -> Self {
        self.postgres.push(target);
        self
    }

    /// Add a Qdrant target.
    pub fn qdrant(mut self, target: QdrantTarget) -> Self {
        self.qdrant.push(target);
        self
    }

    /// Add a Prometheus target.
    pub fn prometheus(mut self, target: PrometheusTarget) -> Self {
        self.prometheus.push(target);
        self
    }

    /// Timed round trips of each performance check.
    pub fn samples(mut self, samples: u32) -> Self {
        self.performance.samples = samples;
        self
    }
}

/// `external_api.performance`: how the performance checks measure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PerformanceConfig {
    /// Timed round trips per performance check (1..=10000); p95 is held to
    /// `performance_targets.latency_p95`.
    #[serde(default = "default_samples")]
    pub samples: u32,
}

impl Default for PerformanceConfig {
    fn default() -> Self {
        PerformanceConfig {
            samples: DEFAULT_SAMPLES,
        }
    }
}

fn default_samples() -> u32 {
    DEFAULT_SAMPLES
}
fn default_true() -> bool {
    true
}
fn default_connect_timeout() -> Duration {
    DEFAULT_CONNECT_TIMEOUT
}
fn default_request_timeout() -> Duration {
    DEFAULT_REQUEST_TIMEOUT
}
fn default_pool_size() -> u32 {
    DEFAULT_POOL_SIZE
}
fn default_dimension() -> u64 {
    DEFAULT_DIMENSION
}

/// PostgreSQL `sslmode`, with libpq's meaning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// Plain first, TLS if the server insists.
    Allow,
    /// TLS when the server offers it, else plain (the default).
    #[default]
    Prefer,
    /// TLS required; the certificate is not verified.
    Require,
    /// TLS required; the certificate must chain to a trusted root.
    VerifyCa,
    /// TLS required; the certificate must chain to a trusted root and name the host.
    VerifyFull,
}

impl SslMode {
    /// The libpq spelling: `verify-full`.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether the connection must use TLS.
    pub fn requires_tls(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }

    fn parse(s: &str) -> Option<SslMode> {
        Some(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One PostgreSQL server: a `dsn`, or `host`/`port`/`user`/`database`, plus a `password`.
///
/// ```
/// use std::time::Duration;
/// use citadel_itest_core::config::Secret;
/// use citadel_itest_external_api::{PostgresTarget, SslMode};
///
/// let by_dsn = PostgresTarget::new("main_db")
///     .dsn("postgres://citadel@127.0.0.1:55432/citadel")
///     .password(Secret::env("PG_PASSWORD"));
/// let by_parts = PostgresTarget::new("replica")
///     .host("127.0.0.1")
///     .port(55433)
///     .user("citadel")
///     .database("citadel")
///     .password(Secret::inline("only-in-tests"))
///     .sslmode(SslMode::Disable)
///     .connect_timeout(Duration::from_secs(2));
/// assert!(by_dsn.require_auth);
/// assert!(!format!("{by_parts:?}").contains("only-in-tests"));
/// ```
///
/// Debug and Serialize show the DSN without its password.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PostgresTarget {
    /// Name in check ids (`external_api.<name>.<category>`): `[a-z0-9_-]+`, unique.
    pub name: String,
    /// `postgres://user[:password]@host[:port]/database[?sslmode=..&sslrootcert=..]`; instead
    /// of `host`, `port`, `user` and `database`. A password in it is never printed.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_redacted_opt"
    )]
    pub dsn: Option<String>,
    /// Host name or address (without `dsn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// TCP port (without `dsn`); default 5432.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// User name (without `dsn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The user's password (with a `dsn` only when the DSN has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Database (without `dsn`); default: the user name, as libpq does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// TLS mode; default `prefer` (or the DSN's `sslmode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslmode: Option<SslMode>,
    /// PEM file of the CA for `verify-ca` / `verify-full` (or the DSN's `sslrootcert`);
    /// default: the webpki roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslrootcert: Option<PathBuf>,
    /// The server must demand a password: the authentication check then also proves that a
    /// wrong password is refused. Default true.
    #[serde(default = "default_true")]
    pub require_auth: bool,
    /// Connections of the pool the performance check measures through (1..=100); its round
    /// trips run `pool_size` at a time. Default 5.
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    /// Bound of one connection attempt: TCP, TLS, startup and authentication. Default 5s.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Bound of one query. Default 10s.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Budget of each check of this target, all attempts included; default `run.timeout`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
}

impl fmt::Debug for PostgresTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresTarget")
            .field("name", &self.name)
            .field("dsn", &self.dsn.as_deref().map(redact))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password)
            .field("database", &self.database)
            .field("sslmode", &self.sslmode)
            .field("sslrootcert", &self.sslrootcert)
            .field("require_auth", &self.require_auth)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl PostgresTarget {
    /// A target with only a name: give a `dsn` or a `host` and the rest with the builder
    /// methods.
    pub fn new(name: impl Into<String>) -> Self {
        PostgresTarget {
            name: name.into(),
            dsn: None,
            host: None,
            port: None,
            user: None,
            password: None,
            database: None,
            sslmode: None,
            sslrootcert: None,
            require_auth: true,
            pool_size: DEFAULT_POOL_SIZE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            timeout: None,
        }
    }

    /// Connect with this DSN.
    pub fn dsn(mut self, dsn: impl Into<String>) -> Self {
        self.dsn = Some(dsn.into());
        self
    }

    /// Host name or address.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// TCP port.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// User name.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Password.
    pub fn password(mut self, password: Secret) -> Self {
        self.password = Some(password);
        self
    }

    /// Database.
    pub fn database(mut self, database: impl Into<String>) -> Self {
        self.database = Some(database.into());
        self
    }

    /// TLS mode.
    pub fn sslmode(mut self, mode: SslMode) -> Self {
        self.sslmode = Some(mode);
        self
    }

    /// Whether the server must demand a password (default true).
    pub fn require_auth(mut self, yes: bool) -> Self {
        self.require_auth = yes;
        self
    }

    /// Size of the performance check's pool.
    pub fn pool_size(mut self, size: u32) -> Self {
        self.pool_size = size;
        self
    }

    /// Bound of one connection attempt.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Bound of one query.
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    /// Budget of each check of this target.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// Where and how to connect, or every problem found (relative key, message).
    pub(crate) fn endpoint(&self) -> Result<PgEndpoint, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut ep = PgEndpoint {
            host: String::new(),
            port: 5432,
            user: String::new(),
            database: String::new(),
            password: self.password.clone(),
            sslmode: SslMode::Prefer,
            sslrootcert: self.sslrootcert.clone(),
        };
        let mut dsn_sslmode = None;
        match (&self.dsn, &self.host) {
            (Some(_), Some(_)) => problems.push(Problem::new(
                "host",
                "give either `dsn` or `host`/`port`/`user`/`database`, not both",
            )),
            (None, None) => problems.push(Problem::new("", "give a `dsn` or a `host`")),
            _ => {}
        }
        if let Some(dsn) = &self.dsn {
            for key in ["port", "user", "database"] {
                let set = match key {
                    "port" => self.port.is_some(),
                    "user" => self.user.is_some(),
                    _ => self.database.is_some(),
                };
                if set {
                    problems.push(Problem::new(
                        key,
                        format!("already given by `dsn`: give `{key}` in one place"),
                    ));
                }
            }
            match parse_dsn(dsn) {
                Err(message) => problems.push(Problem::new("dsn", message)),
                Ok(parsed) => {
                    ep.host = parsed.host;
                    ep.port = parsed.port.unwrap_or(5432);
                    ep.user = parsed.user.unwrap_or_default();
                    ep.database = parsed.database.unwrap_or_default();
                    if let Some(pw) = parsed.password {
                        if self.password.is_some() {
                            problems.push(Problem::new(
                                "password",
                                "the DSN already carries a password: give it in one place",
                            ));
                        }
                        ep.password = Some(Secret::inline(pw));
                    }
                    dsn_sslmode = parsed.sslmode;
                    if let Some(root) = parsed.sslrootcert {
                        if self.sslrootcert.is_some() {
                            problems.push(Problem::new(
                                "sslrootcert",
                                "already given by the DSN's `sslrootcert`: give it in one place",
                            ));
                        }
                        ep.sslrootcert = Some(root);
                    }
                    if ep.user.is_empty() {
                        problems.push(Problem::new(
                            "dsn",
                            format!("`{}` names no user (postgres://USER@host/db)", redact(dsn)),
                        ));
                    }
                }
            }
        } else {
            if let Some(host) = &self.host {
                if host.is_empty() || host.starts_with('/') || host.contains(char::is_whitespace) {
                    problems.push(Problem::new(
                        "host",
                        format!("`{host}` is not a host name or address (unix sockets are not supported)"),
                    ));
                }
                ep.host = host.clone();
            }
            ep.port = self.port.unwrap_or(5432);
            match &self.user {
                Some(u) if !u.is_empty() => ep.user = u.clone(),
                _ => problems.push(Problem::new("user", "give the user name")),
            }
            if let Some(db) = &self.database {
                ep.database = db.clone();
            }
        }
        if ep.port == 0 {
            problems.push(Problem::new("port", "0 is not a usable port"));
        }
        if ep.database.is_empty() {
            ep.database = ep.user.clone();
        }
        ep.sslmode = match (self.sslmode, dsn_sslmode) {
            (Some(_), Some(_)) => {
                problems.push(Problem::new(
                    "sslmode",
                    "already given by the DSN's `sslmode`: give it in one place",
                ));
                SslMode::Prefer
            }
            (Some(m), None) | (None, Some(m)) => m,
            (None, None) => SslMode::Prefer,
        };
        if ep.sslrootcert.is_some()
            && !matches!(ep.sslmode, SslMode::VerifyCa | SslMode::VerifyFull)
        {
            problems.push(Problem::new(
                "sslrootcert",
                format!(
                    "only used with sslmode verify-ca or verify-full, not {}",
                    ep.sslmode
                ),
            ));
        }
        if let Some(root) = &ep.sslrootcert {
            if !root.is_file() {
                problems.push(Problem::new(
                    "sslrootcert",
                    format!("{} is not a readable file", root.display()),
                ));
            }
        }
        match &ep.password {
            Some(secret) => {
                if let Err(e) = secret.resolve() {
                    problems.push(Problem::new("password", error_chain(&e)));
                }
            }
            None if self.require_auth => problems.push(Problem::new(
                "password",
                "required when require_auth is true: give `password` or a password in the DSN",
            )),
            None => {}
        }
        if problems.is_empty() {
            Ok(ep)
        } else {
            Err(problems)
        }
    }

    /// Every problem of this target (relative key, message); secrets are resolved.
    pub(crate) fn problems(&self) -> Vec<Problem> {
        let mut problems = name_problems(&self.name);
        if let Err(p) = self.endpoint() {
            problems.extend(p);
        }
        if !(1..=MAX_POOL_SIZE).contains(&self.pool_size) {
            problems.push(Problem::new(
                "pool_size",
                format!("{} is out of range 1..={MAX_POOL_SIZE}", self.pool_size),
            ));
        }
        problems.extend(timeout_problems(
            self.connect_timeout,
            self.request_timeout,
            self.timeout,
        ));
        problems
    }
}

/// Where and how to reach a PostgreSQL server, resolved from a [`PostgresTarget`].
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct PgEndpoint {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) user: String,
    pub(crate) database: String,
    pub(crate) password: Option<Secret>,
    pub(crate) sslmode: SslMode,
    pub(crate) sslrootcert: Option<PathBuf>,
}

impl fmt::Debug for PgEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgEndpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("database", &self.database)
            .field("password", &self.password)
            .field("sslmode", &self.sslmode)
            .finish()
    }
}

impl PgEndpoint {
    /// `host:port`, with IPv6 addresses in brackets.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn addr(&self) -> String {
        host_port(&self.host, self.port)
    }
}

struct ParsedDsn {
    host: String,
    port: Option<u16>,
    user: Option<String>,
    password: Option<String>,
    database: Option<String>,
    sslmode: Option<SslMode>,
    sslrootcert: Option<PathBuf>,
}

fn parse_dsn(dsn: &str) -> Result<ParsedDsn, String> {
    let shown = redact(dsn);
    let url = url::Url::parse(dsn).map_err(|e| format!("invalid DSN `{shown}`: {e}"))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(format!(
            "DSN `{shown}` must start with postgres:// or postgresql://"
        ));
    }
    let host = match url.host() {
        Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        _ => {
            return Err(format!(
                "DSN `{shown}` has no host (unix sockets are not supported)"
            ));
        }
    };
    let decode = |s: &str, what: &str| -> Result<String, String> {
        url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .ok_or_else(|| format!("DSN `{shown}`: cannot decode the {what}"))
    };
    let user = (!url.username().is_empty())
        .then(|| decode(url.username(), "user"))
        .transpose()?;
    let password = url.password().map(|p| decode(p, "password")).transpose()?;
    let path = url.path().trim_start_matches('/');
    let database = (!path.is_empty())
        .then(|| decode(path, "database"))
        .transpose()?;
    let mut sslmode = None;
    let mut sslrootcert = None;
    for (k, v) in url.query_pairs() {
        match &*k {
            "sslmode" => {
                sslmode = Some(SslMode::parse(&v).ok_or_else(|| {
                    format!(
                        "DSN `{shown}`: sslmode `{v}` is not one of disable, allow, prefer, require, verify-ca, verify-full"
                    )
                })?)
            }
            "sslrootcert" => sslrootcert = Some(PathBuf::from(&*v)),
            other => {
                return Err(format!(
                    "DSN `{shown}`: parameter `{other}` is not supported (only sslmode and sslrootcert)"
                ));
            }
        }
    }
    Ok(ParsedDsn {
        host,
        port: url.port(),
        user,
        password,
        database,
        sslmode,
        sslrootcert,
    })
}

/// Qdrant's vector distance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Distance {
    /// Cosine similarity (the default).
    #[default]
    Cosine,
    /// Euclidean distance.
    Euclid,
    /// Dot product.
    Dot,
    /// Manhattan distance.
    Manhattan,
}

impl fmt::Display for Distance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Distance::Cosine => "Cosine",
            Distance::Euclid => "Euclid",
            Distance::Dot => "Dot",
            Distance::Manhattan => "Manhattan",
        })
    }
}

/// One Qdrant server, reached over gRPC (qdrant-client) and REST.
///
/// ```
/// use citadel_itest_core::config::Secret;
/// use citadel_itest_external_api::{Distance, QdrantTarget};
///
/// let vectors = QdrantTarget::new("vectors", "http://127.0.0.1:56334", "http://127.0.0.1:56333")
///     .api_key(Secret::env("CITADEL_QDRANT_API_KEY"))
///     .collection_dimension(16)
///     .distance(Distance::Dot);
/// assert!(vectors.require_api_key);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct QdrantTarget {
    /// Name in check ids (`external_api.<name>.<category>`): `[a-z0-9_-]+`, unique.
    pub name: String,
    /// gRPC endpoint, `http://host:6334` or `https://...`.
    pub grpc_url: String,
    /// REST endpoint, `http://host:6333` or `https://...`.
    pub rest_url: String,
    /// API key sent as `api-key` (REST) and `api-key` metadata (gRPC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,
    /// The server must refuse requests without a key (and an `api_key` must be configured).
    /// Default true.
    #[serde(default = "default_true")]
    pub require_api_key: bool,
    /// Vector size of the temporary collections (2..=65536). Default 8.
    #[serde(default = "default_dimension")]
    pub collection_dimension: u64,
    /// Distance of the temporary collections. Default `Cosine`.
    #[serde(default)]
    pub distance: Distance,
    /// Bound of one connection attempt. Default 5s.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Bound of one request. Default 10s.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Budget of each check of this target, all attempts included; default `run.timeout`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Opt-in sweep: before it creates its own, the operations check deletes temporary
    /// collections earlier runs left behind (`citadel_itest_<run>_*`, the run's start read
    /// from its id) that are older than this. Unset (the default): nothing is swept.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub sweep_older_than: Option<Duration>,
}

impl QdrantTarget {
    /// A target with its two endpoints, no API key and `require_api_key: true` (set a key or
    /// turn the requirement off).
    pub fn new(
        name: impl Into<String>,
        grpc_url: impl Into<String>,
        rest_url: impl Into<String>,
    ) -> Self {
        QdrantTarget {
            name: name.into(),
            grpc_url: grpc_url.into(),
            rest_url: rest_url.into(),
            api_key: None,
            require_api_key: true,
            collection_dimension: DEFAULT_DIMENSION,
            distance: Distance::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            timeout: None,
            sweep_older_than: None,
        }
    }

    /// The API key.
    pub fn api_key(mut self, key: Secret) -> Self {
        self.api_key = Some(key);
        self
    }

    /// Sweep temporary collections of earlier runs older than `age` (opt-in).
    pub fn sweep_older_than(mut self, age: Duration) -> Self {
        self.sweep_older_than = Some(age);
        self
    }

    /// Whether the server must refuse requests without a key.
    pub fn require_api_key(mut self, yes: bool) -> Self {
        self.require_api_key = yes;
        self
    }

    /// Vector size of the temporary collections.
    pub fn collection_dimension(mut self, dimension: u64) -> Self {
        self.collection_dimension = dimension;
        self
    }

    /// Distance of the temporary collections.
    pub fn distance(mut self, distance: Distance) -> Self {
        self.distance = distance;
        self
    }

    /// Bound of one connection attempt.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Bound of one request.
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    /// Budget of each check of this target.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// Every problem of this target (relative key, message); the key is resolved.
    pub(crate) fn problems(&self) -> Vec<Problem> {
        let mut problems = name_problems(&self.name);
        let grpc = http_endpoint(&self.grpc_url, "grpc_url", &mut problems);
        let rest = http_endpoint(&self.rest_url, "rest_url", &mut problems);
        if let (Some(g), Some(r)) = (&grpc, &rest) {
            if g.host_str() == r.host_str()
                && g.port_or_known_default() == r.port_or_known_default()
            {
                problems.push(Problem::new(
                    "grpc_url",
                    format!(
                        "points at the same port as rest_url ({}): Qdrant serves gRPC and REST on different ports (6334 and 6333 by default)",
                        g.port_or_known_default().unwrap_or_default()
                    ),
                ));
            }
        }
        match &self.api_key {
            Some(key) => {
                if let Err(e) = key.resolve() {
                    problems.push(Problem::new("api_key", error_chain(&e)));
                }
            }
            None if self.require_api_key => problems.push(Problem::new(
                "api_key",
                "required when require_api_key is true (set require_api_key: false for a server without a key)",
            )),
            None => {}
        }
        if !(2..=MAX_DIMENSION).contains(&self.collection_dimension) {
            problems.push(Problem::new(
                "collection_dimension",
                format!(
                    "{} is out of range 2..={MAX_DIMENSION}",
                    self.collection_dimension
                ),
            ));
        }
        problems.extend(timeout_problems(
            self.connect_timeout,
            self.request_timeout,
            self.timeout,
        ));
        problems
    }
}

/// Credentials for the Prometheus HTTP API. Secrets are never printed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum PrometheusAuth {
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
    /// `Authorization: Basic ...` (Prometheus' `--web.config.file` `basic_auth_users`).
    Basic {
        /// User name (must not contain `:`).
        username: String,
        /// Password.
        password: Secret,
    },
}

impl PrometheusAuth {
    /// A bearer token.
    pub fn bearer(token: Secret) -> Self {
        PrometheusAuth::Bearer(token)
    }

    /// HTTP basic credentials.
    pub fn basic(username: impl Into<String>, password: Secret) -> Self {
        PrometheusAuth::Basic {
            username: username.into(),
            password,
        }
    }
}

/// One Prometheus server, reached over its HTTP API.
///
/// ```
/// use citadel_itest_core::config::Secret;
/// use citadel_itest_external_api::{PrometheusAuth, PrometheusTarget};
///
/// let metrics = PrometheusTarget::new("metrics", "http://127.0.0.1:59090")
///     .auth(PrometheusAuth::basic("itest", Secret::env("PROM_PASSWORD")));
/// assert_eq!(metrics.url, "http://127.0.0.1:59090");
/// ```
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PrometheusTarget {
    /// Name in check ids (`external_api.<name>.<category>`): `[a-z0-9_-]+`, unique.
    pub name: String,
    /// Base URL, `http://host:9090` (a path prefix such as `/prometheus` is kept).
    #[serde(serialize_with = "serialize_redacted")]
    pub url: String,
    /// Credentials, when the server demands them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<PrometheusAuth>,
    /// Bound of one connection attempt. Default 5s.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Bound of one request. Default 10s.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Budget of each check of this target, all attempts included; default `run.timeout`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
}

impl fmt::Debug for PrometheusTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrometheusTarget")
            .field("name", &self.name)
            .field("url", &redact(&self.url))
            .field("auth", &self.auth)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl PrometheusTarget {
    /// A target without credentials.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        PrometheusTarget {
            name: name.into(),
            url: url.into(),
            auth: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            timeout: None,
        }
    }

    /// Credentials.
    pub fn auth(mut self, auth: PrometheusAuth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Bound of one connection attempt.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Bound of one request.
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    /// Budget of each check of this target.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// Every problem of this target (relative key, message); secrets are resolved.
    pub(crate) fn problems(&self) -> Vec<Problem> {
        let mut problems = name_problems(&self.name);
        let url = http_endpoint(&self.url, "url", &mut problems);
        if let (Some(_), Some(u)) = (&self.auth, &url) {
            if !u.username().is_empty() || u.password().is_some() {
                problems.push(Problem::new(
                    "auth",
                    "the URL already carries credentials: give them in one place",
                ));
            }
        }
        match &self.auth {
            None => {}
            Some(PrometheusAuth::Bearer(token)) => {
                if let Err(e) = token.resolve() {
                    problems.push(Problem::new("auth.bearer", error_chain(&e)));
                }
            }
            Some(PrometheusAuth::Basic { username, password }) => {
                if username.is_empty() || username.contains(':') {
                    problems.push(Problem::new(
                        "auth.basic.username",
                        "must be non-empty and must not contain `:`",
                    ));
                }
                match password.resolve() {
                    Ok(p) => {
                        citadel_itest_core::config::register_basic_credentials(username, p.expose())
                    }
                    Err(e) => problems.push(Problem::new("auth.basic.password", error_chain(&e))),
                }
            }
        }
        problems.extend(timeout_problems(
            self.connect_timeout,
            self.request_timeout,
            self.timeout,
        ));
        problems
    }
}

/// One configuration problem: a key relative to the target (`""` for the target itself) and
/// what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub(crate) key: String,
    pub(crate) message: String,
}

impl Problem {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

fn name_problems(name: &str) -> Vec<Problem> {
    let valid = name.len() <= 40 && citadel_itest_core::config::is_valid_name(name);
    if valid {
        Vec::new()
    } else {
        vec![Problem::new(
            "name",
            format!(
                "`{}` is not a valid name: use 1-40 lowercase letters, digits, `_` and `-`",
                citadel_itest_core::config::shorten(name)
            ),
        )]
    }
}

fn timeout_problems(
    connect: Duration,
    request: Duration,
    budget: Option<Duration>,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut range = |key: &str, d: Duration| {
        if d.is_zero() || d > MAX_TIMEOUT {
            problems.push(Problem::new(
                key,
                format!(
                    "{} is out of range (greater than 0s, at most {})",
                    humantime::format_duration(d),
                    humantime::format_duration(MAX_TIMEOUT)
                ),
            ));
        }
    };
    range("connect_timeout", connect);
    range("request_timeout", request);
    if let Some(b) = budget {
        range("timeout", b);
    }
    problems
}

/// Parse an http(s) endpoint with a host.
fn http_endpoint(raw: &str, key: &str, problems: &mut Vec<Problem>) -> Option<url::Url> {
    let url = match url::Url::parse(raw) {
        Ok(u) => u,
        Err(e) => {
            problems.push(Problem::new(
                key,
                format!("invalid URL `{}`: {e}", redact(raw)),
            ));
            return None;
        }
    };
    if !matches!(url.scheme(), "http" | "https") {
        problems.push(Problem::new(
            key,
            format!(
                "URL `{}` must be http:// or https://, not {}://",
                redact(raw),
                url.scheme()
            ),
        ));
        return None;
    }
    if url.host_str().is_none_or(str::is_empty) {
        problems.push(Problem::new(
            key,
            format!("URL `{}` has no host", redact(raw)),
        ));
        return None;
    }
    if url.query().is_some() || url.fragment().is_some() {
        problems.push(Problem::new(
            key,
            format!("URL `{}` must not have a query or fragment", redact(raw)),
        ));
        return None;
    }
    if url.port() == Some(0) {
        problems.push(Problem::new(key, "port 0 is not a usable port (1..=65535)"));
        return None;
    }
    // Userinfo credentials travel as a Basic header: redact that form too.
    if let Err(short) = citadel_itest_core::config::register_url_secrets(&url) {
        problems.push(Problem::new(key, short.to_string()));
    }
    Some(url)
}

/// `host:port`, with IPv6 addresses in brackets.
pub(crate) fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A URL or DSN fit for a message: password and secret parameters removed.
pub(crate) fn redact(raw: &str) -> String {
    redact_text(&redact_url(raw))
}

fn serialize_redacted<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact(url))
}

fn serialize_redacted_opt<S: serde::Serializer>(
    url: &Option<String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match url {
        Some(u) => s.serialize_str(&redact(u)),
        None => s.serialize_none(),
    }
}

impl ExternalApiConfig {
    /// Every problem of the section (key relative to the section, message).
    pub(crate) fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.postgres.is_empty() && self.qdrant.is_empty() && self.prometheus.is_empty() {
            problems.push(Problem::new(
                "",
                "list at least one service under postgres, qdrant or prometheus",
            ));
        }
        let mut seen: HashMap<&str, String> = HashMap::new();
        let names = self
            .postgres
            .iter()
            .enumerate()
            .map(|(i, t)| ("postgres", i, t.name.as_str()))
            .chain(
                self.qdrant
                    .iter()
                    .enumerate()
                    .map(|(i, t)| ("qdrant", i, t.name.as_str())),
            )
            .chain(
                self.prometheus
                    .iter()
                    .enumerate()
                    .map(|(i, t)| ("prometheus", i, t.name.as_str())),
            );
        for (list, i, name) in names {
            let here = format!("{list}[{i}]");
            match seen.get(name) {
                Some(first) => problems.push(Problem::new(
                    format!("{here}.name"),
                    format!("duplicate name `{name}` (also {first}): names make the check ids"),
                )),
                None => {
                    seen.insert(name, here);
                }
            }
        }
        for (kind, present, compiled) in [
            (
                "postgres",
                !self.postgres.is_empty(),
                cfg!(feature = "postgres"),
            ),
            ("qdrant", !self.qdrant.is_empty(), cfg!(feature = "qdrant")),
            (
                "prometheus",
                !self.prometheus.is_empty(),
                cfg!(feature = "prometheus"),
            ),
        ] {
            if present && !compiled {
                problems.push(Problem::new(
                    kind,
                    format!(
                        "the {kind} checks are not compiled into this build (cargo feature `{kind}` of citadel-itest-external-api)"
                    ),
                ));
            }
        }
        let targets = self
            .postgres
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("postgres[{i}]"), t.problems()))
            .chain(
                self.qdrant
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (format!("qdrant[{i}]"), t.problems())),
            )
            .chain(
                self.prometheus
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (format!("prometheus[{i}]"), t.problems())),
            );
        for (prefix, target_problems) in targets {
            for p in target_problems {
                let key = if p.key.is_empty() {
                    prefix.clone()
                } else {
                    format!("{prefix}.{}", p.key)
                };
                problems.push(Problem::new(key, p.message));
            }
        }
        if !(1..=MAX_SAMPLES).contains(&self.performance.samples) {
            problems.push(Problem::new(
                "performance.samples",
                format!(
                    "{} is out of range 1..={MAX_SAMPLES}",
                    self.performance.samples
                ),
            ));
        }
        problems
    }
}

impl Validate for ExternalApiConfig {
    fn validate(&self, v: &mut Validator<'_>) {
        for p in self.problems() {
            v.error(&p.key, p.message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_parts_and_parameters_are_read() {
        let t = PostgresTarget::new("db")
            .dsn("postgresql://app%40corp:p%40ss%2Bword@[::1]:6543/orders?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem");
        let problems = t.endpoint().unwrap_err();
        // Everything parsed; only the missing CA file is a problem.
        assert_eq!(
            problems,
            vec![Problem::new(
                "sslrootcert",
                "/nonexistent/ca.pem is not a readable file"
            )]
        );
        let t = PostgresTarget::new("db")
            .dsn("postgresql://app%40corp:p%40ss%2Bword@[::1]:6543/orders?sslmode=require");
        let ep = t.endpoint().unwrap();
        assert_eq!(
            (
                ep.host.as_str(),
                ep.port,
                ep.user.as_str(),
                ep.database.as_str()
            ),
            ("::1", 6543, "app@corp", "orders")
        );
        assert_eq!(ep.addr(), "[::1]:6543");
        assert_eq!(ep.sslmode, SslMode::Require);
        let pw = ep.password.unwrap().resolve().unwrap();
        assert_eq!(pw.expose(), "p@ss+word");
    }

    #[test]
    fn parts_default_like_libpq() {
        let t = PostgresTarget::new("db")
            .host("127.0.0.1")
            .user("citadel")
            .require_auth(false);
        let ep = t.endpoint().unwrap();
        assert_eq!((ep.port, ep.database.as_str()), (5432, "citadel"));
        assert_eq!(ep.sslmode, SslMode::Prefer);
        assert!(ep.password.is_none());
    }

    #[test]
    fn conflicting_and_missing_settings_are_named() {
        let t = PostgresTarget::new("db")
            .dsn("postgres://u@127.0.0.1/db?sslmode=disable&application_name=x")
            .host("127.0.0.1");
        let keys: Vec<String> = t.problems().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["host", "dsn", "password"]);
        let t = PostgresTarget::new("db")
            .dsn("postgres://u:pw12@127.0.0.1/db?sslmode=disable")
            .sslmode(SslMode::Require)
            .user("v");
        let problems = t.problems();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["user", "sslmode"], "{problems:?}");
        let t = PostgresTarget::new("db").dsn("mysql://u@127.0.0.1/db");
        assert!(
            t.problems()[0]
                .message
                .contains("must start with postgres://")
        );
        let t = PostgresTarget::new("").host("127.0.0.1");
        let keys: Vec<String> = t.problems().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["name", "user", "password"]);
    }

    #[test]
    fn dsn_passwords_never_print() {
        let t = PostgresTarget::new("db").dsn("postgres://app:hunter2-in-dsn@127.0.0.1:5432/db");
        let debug = format!("{t:?}");
        assert!(!debug.contains("hunter2-in-dsn"), "{debug}");
        assert!(
            debug.contains("postgres://app:<redacted>@127.0.0.1:5432/db"),
            "{debug}"
        );
        let json = serde_json::to_string(&t).unwrap();
        assert!(!json.contains("hunter2-in-dsn"), "{json}");
        let bad = PostgresTarget::new("db").dsn("postgres://app:hunter3-in-dsn@127.0.0.1:x/db");
        let text = format!("{:?}", bad.problems());
        assert!(!text.contains("hunter3-in-dsn"), "{text}");
        let p = PrometheusTarget::new("m", "http://u:hunter4-in-url@127.0.0.1:9090");
        assert!(!format!("{p:?}").contains("hunter4-in-url"));
        assert!(
            !serde_json::to_string(&p)
                .unwrap()
                .contains("hunter4-in-url")
        );
    }

    #[test]
    fn yaml_shapes_deserialize_and_unknown_keys_fail() {
        let c: ExternalApiConfig = serde_json::from_value(serde_json::json!({
            "postgres": [{ "name": "db", "dsn": "postgres://u@127.0.0.1/db",
                           "password": { "env": "PW" }, "sslmode": "verify-ca",
                           "connect_timeout": "2s", "timeout": "20s" }],
            "qdrant": [{ "name": "v", "grpc_url": "http://127.0.0.1:6334",
                         "rest_url": "http://127.0.0.1:6333", "distance": "Manhattan",
                         "require_api_key": false }],
            "prometheus": [{ "name": "m", "url": "http://127.0.0.1:9090",
                             "auth": { "basic": { "username": "u", "password": "p" } } }],
            "performance": { "samples": 7 }
        }))
        .unwrap();
        assert_eq!(c.postgres[0].sslmode, Some(SslMode::VerifyCa));
        assert_eq!(c.postgres[0].connect_timeout, Duration::from_secs(2));
        assert_eq!(c.postgres[0].request_timeout, DEFAULT_REQUEST_TIMEOUT);
        assert!(c.postgres[0].require_auth);
        assert_eq!(c.qdrant[0].distance, Distance::Manhattan);
        assert_eq!(c.qdrant[0].collection_dimension, DEFAULT_DIMENSION);
        assert_eq!(
            c.prometheus[0].auth,
            Some(PrometheusAuth::basic("u", Secret::inline("p")))
        );
        assert_eq!(c.performance.samples, 7);
        for bad in [
            serde_json::json!({ "postgres": [{ "name": "db", "hots": "x" }] }),
            serde_json::json!({ "qdrant": [{ "name": "v", "grpc_url": "x", "rest_url": "y", "key": "k" }] }),
            serde_json::json!({ "performance": { "samples": 1, "rounds": 2 } }),
            serde_json::json!({ "mysql": [] }),
        ] {
            let e = serde_json::from_value::<ExternalApiConfig>(bad).unwrap_err();
            assert!(e.to_string().contains("unknown field"), "{e}");
        }
    }

    #[test]
    fn an_empty_section_is_a_problem() {
        let problems = ExternalApiConfig::new().problems();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "");
    }
}
