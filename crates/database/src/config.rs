//! The `database:` section: which databases to check and what to expect of them.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use citadel_itest_core::config::{MAX_TIMEOUT, Secret, Validate, Validator};
use serde::{Deserialize, Serialize};

use crate::ident::{ColumnRef, ColumnsRef, TableRef};
use crate::spec::{ExpectedSchema, ExtensionSpec, NamespaceSpec};

/// Default `pool.size` (SQLAlchemy's and the seed's).
pub const DEFAULT_POOL_SIZE: u32 = 20;
/// Default `pool.max_overflow`.
pub const DEFAULT_MAX_OVERFLOW: u32 = 10;
/// Default `pool.acquire_timeout`.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `statement_timeout`.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest accepted timeout or hold (a zero bound would never let anything finish).
const MIN_BOUND: Duration = Duration::from_millis(1);

/// Default `application_name` (the pooling check appends a unique suffix).
pub const DEFAULT_APPLICATION_NAME: &str = "citadel-itest";
/// Most offending rows an integrity finding shows.
pub const MAX_SAMPLE_ROWS: u32 = 10;
/// Longest accepted `application_name` (Postgres keeps 63 bytes; the checks append suffixes).
pub const MAX_APPLICATION_NAME: usize = 40;

/// The `database:` section.
///
/// ```yaml
/// database:
///   databases:
///     - name: main
///       dsn: { env: DATABASE_URL }
///       schema: { file: config/database/expected_schema.yaml }
///       integrity: { row_counts: [{ table: models.models, min: 1 }] }
///       pooling: {}
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DatabaseConfig {
    /// The databases to check; each name prefixes its check ids (`database.<name>.*`).
    #[serde(default)]
    pub databases: Vec<DatabaseTarget>,
}

impl DatabaseConfig {
    /// An empty section; add databases with [`DatabaseConfig::database`].
    pub fn new() -> Self {
        DatabaseConfig::default()
    }

    /// Add a database.
    pub fn database(mut self, target: DatabaseTarget) -> Self {
        self.databases.push(target);
        self
    }
}

/// `sslmode`, as libpq spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS only if the server insists.
    Allow,
    /// TLS when the server offers it (libpq's default).
    Prefer,
    /// TLS, without verifying the certificate.
    Require,
    /// TLS, certificate signed by a trusted CA.
    VerifyCa,
    /// TLS, certificate trusted and naming the host.
    VerifyFull,
}

impl SslMode {
    /// The mode libpq spells `name` (`verify-full`), if any.
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    pub(crate) fn to_sqlx(self) -> sqlx::postgres::PgSslMode {
        use sqlx::postgres::PgSslMode as M;
        match self {
            SslMode::Disable => M::Disable,
            SslMode::Allow => M::Allow,
            SslMode::Prefer => M::Prefer,
            SslMode::Require => M::Require,
            SslMode::VerifyCa => M::VerifyCa,
            SslMode::VerifyFull => M::VerifyFull,
        }
    }
}

/// Why [`DatabaseTarget::from_url`] could not use a URL. The message never contains the
/// password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("database url: {why}")]
pub struct DatabaseUrlError {
    why: String,
}

/// One database: how to reach it and what to check there.
///
/// Give either `dsn` or the parts (`host`, `port`, `user`, `password`, `database`).
///
/// ```
/// use std::time::Duration;
/// use citadel_itest_core::config::Secret;
/// use citadel_itest_database::{DatabaseTarget, PoolConfig};
///
/// let main = DatabaseTarget::new("main")
///     .host("127.0.0.1")
///     .port(55432)
///     .user("citadel")
///     .password(Secret::env("PGPASSWORD"))
///     .database("citadel")
///     .pool(PoolConfig { size: 5, max_overflow: 2, acquire_timeout: Duration::from_secs(3) });
/// assert_eq!(main.describe(), "citadel@127.0.0.1:55432/citadel");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DatabaseTarget {
    /// Name used in check ids: `[a-z0-9_-]+`, unique.
    pub name: String,
    /// A `postgres://user:password@host:port/database?sslmode=...` URL, as a secret (inline,
    /// `{ env }` or `{ file }`): it carries a password. Excludes the parts below.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsn: Option<Secret>,
    /// Host name or address; default `127.0.0.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Port; default 5432.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Role to log in as (required without `dsn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The role's password; none for trust or peer authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Database name; default the user name (as libpq).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// TLS mode; default `prefer` (a `dsn` may set it with `?sslmode=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslmode: Option<SslMode>,
    /// Server-side `statement_timeout` of every connection the checks open.
    #[serde(default = "default_statement_timeout", with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// Bound on opening one connection.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// `application_name` of the checks' connections, so they can be told apart in
    /// `pg_stat_activity`.
    #[serde(default = "default_application_name")]
    pub application_name: String,
    /// Budget of each check of this database; default `run.timeout`. The pooling check adds
    /// `pool.acquire_timeout`, the recovery check `pooling.recovery.timeout`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// The pool a service would use: exercised by the pooling checks.
    #[serde(default)]
    pub pool: PoolConfig,
    /// Schema validation: expected schema inline or in a file, and/or a migrations directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<SchemaConfig>,
    /// Data integrity detectors and invariants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity: Option<IntegrityConfig>,
    /// Connection pool behaviour, headroom and recovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooling: Option<PoolingConfig>,
}

fn default_statement_timeout() -> Duration {
    DEFAULT_STATEMENT_TIMEOUT
}
fn default_connect_timeout() -> Duration {
    DEFAULT_CONNECT_TIMEOUT
}
fn default_application_name() -> String {
    DEFAULT_APPLICATION_NAME.to_string()
}

impl DatabaseTarget {
    /// A database named `name` with every default and nothing to check yet.
    pub fn new(name: impl Into<String>) -> Self {
        DatabaseTarget {
            name: name.into(),
            dsn: None,
            host: None,
            port: None,
            user: None,
            password: None,
            database: None,
            sslmode: None,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            application_name: DEFAULT_APPLICATION_NAME.to_string(),
            timeout: None,
            pool: PoolConfig::default(),
            schema: None,
            integrity: None,
            pooling: None,
        }
    }

    /// A database named `name` at a `postgres://user:password@host:port/database?sslmode=...`
    /// URL, split into its parts in one call: `host`, `port`, `user`, `password` (an inline
    /// [`Secret`], percent-decoded), `database` and `sslmode`; any part the URL leaves out keeps
    /// its default. For a testkit server: `DatabaseTarget::from_url("main", &pg.dsn())`.
    ///
    /// Unlike [`DatabaseTarget::dsn`], the parts show in [`DatabaseTarget::describe`] and can be
    /// changed afterwards (`.database("other")`). The error names what is wrong and never
    /// contains the password.
    ///
    /// ```
    /// use citadel_itest_database::{DatabaseTarget, SslMode};
    ///
    /// let db = DatabaseTarget::from_url("main", "postgres://citadel:s%40cret@127.0.0.1:55432/orders?sslmode=disable")?;
    /// assert_eq!(db.describe(), "citadel@127.0.0.1:55432/orders");
    /// assert_eq!(db.password.as_ref().unwrap().resolve()?.expose(), "s@cret");
    /// assert_eq!(db.sslmode, Some(SslMode::Disable));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_url(name: impl Into<String>, url: &str) -> Result<Self, DatabaseUrlError> {
        let err = |why: String| DatabaseUrlError { why };
        let parsed = url::Url::parse(url).map_err(|e| {
            err(format!(
                "not a URL ({e}): expected postgres://user:password@host:port/database"
            ))
        })?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(err(format!(
                "scheme `{}` is not postgres:// or postgresql://",
                parsed.scheme()
            )));
        }
        let decode = |part: &str, what: &str| {
            crate::connect::percent_decode(part)
                .map_err(|_| err(format!("the {what} is not UTF-8 once percent-decoded")))
        };
        let mut target = DatabaseTarget::new(name);
        if let Some(host) = parsed.host_str().filter(|h| !h.is_empty()) {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            target.host = Some(decode(host, "host")?);
        }
        target.port = parsed.port();
        if !parsed.username().is_empty() {
            target.user = Some(decode(parsed.username(), "user")?);
        }
        if let Some(password) = parsed.password() {
            let password = decode(password, "password")?;
            citadel_itest_core::config::register_secret(&password);
            target.password = Some(Secret::inline(password));
        }
        let database = parsed.path().trim_start_matches('/');
        if !database.is_empty() {
            target.database = Some(decode(database, "database")?);
        }
        for (key, value) in parsed.query_pairs() {
            match key.as_ref() {
                "sslmode" => {
                    target.sslmode = Some(SslMode::from_name(&value).ok_or_else(|| {
                        err(format!(
                            "sslmode `{value}` is not one of disable, allow, prefer, require, \
                             verify-ca, verify-full"
                        ))
                    })?);
                }
                other => {
                    return Err(err(format!(
                        "parameter `{other}` is not supported (only sslmode); use \
                         DatabaseTarget::dsn for other libpq parameters"
                    )));
                }
            }
        }
        Ok(target)
    }

    /// Connect with this DSN.
    pub fn dsn(mut self, dsn: Secret) -> Self {
        self.dsn = Some(dsn);
        self
    }

    /// Connect to this host.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Connect to this port.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Log in as this role.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// With this password.
    pub fn password(mut self, password: Secret) -> Self {
        self.password = Some(password);
        self
    }

    /// Connect to this database.
    pub fn database(mut self, database: impl Into<String>) -> Self {
        self.database = Some(database.into());
        self
    }

    /// TLS mode.
    pub fn sslmode(mut self, mode: SslMode) -> Self {
        self.sslmode = Some(mode);
        self
    }

    /// Server-side statement timeout.
    pub fn statement_timeout(mut self, d: Duration) -> Self {
        self.statement_timeout = d;
        self
    }

    /// Budget of each check.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// The pool to exercise.
    pub fn pool(mut self, pool: PoolConfig) -> Self {
        self.pool = pool;
        self
    }

    /// Schema validation settings.
    pub fn schema(mut self, schema: SchemaConfig) -> Self {
        self.schema = Some(schema);
        self
    }

    /// Integrity settings.
    pub fn integrity(mut self, integrity: IntegrityConfig) -> Self {
        self.integrity = Some(integrity);
        self
    }

    /// Pooling settings.
    pub fn pooling(mut self, pooling: PoolingConfig) -> Self {
        self.pooling = Some(pooling);
        self
    }

    /// `user@host:port/database` without any password (from the parts, or the DSN when it is
    /// inline; `dsn from env NAME` otherwise).
    pub fn describe(&self) -> String {
        match &self.dsn {
            Some(Secret::Inline(raw)) => match url::Url::parse(raw) {
                Ok(u) => format!(
                    "{}@{}:{}{}",
                    u.username(),
                    u.host_str().unwrap_or("?"),
                    u.port().unwrap_or(5432),
                    u.path()
                ),
                Err(_) => "an unparsable dsn".to_string(),
            },
            Some(other) => format!("dsn from {}", other.origin()),
            None => {
                let user = self.user.as_deref().unwrap_or("?");
                format!(
                    "{user}@{}:{}/{}",
                    self.host.as_deref().unwrap_or("127.0.0.1"),
                    self.port.unwrap_or(5432),
                    self.database.as_deref().unwrap_or(user)
                )
            }
        }
    }
}

/// The pool a service would configure (SQLAlchemy's terms): `size` connections kept, up to
/// `max_overflow` more under load, waiting at most `acquire_timeout` for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Connections kept open.
    pub size: u32,
    /// Extra connections allowed under load; the pool never holds more than
    /// `size + max_overflow`.
    pub max_overflow: u32,
    /// Longest wait for a connection before an acquisition fails.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            size: DEFAULT_POOL_SIZE,
            max_overflow: DEFAULT_MAX_OVERFLOW,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
        }
    }
}

impl PoolConfig {
    /// `size + max_overflow`: the most connections the pool may hold.
    pub fn max_connections(&self) -> u32 {
        self.size.saturating_add(self.max_overflow)
    }
}

/// Schema validation. Give the expected schema inline (`extensions`, `schemas`) or in a `file`,
/// and/or a sqlx `migrations` directory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SchemaConfig {
    /// A YAML file with `extensions:` and `schemas:` (relative paths: from the working
    /// directory). Excludes the inline keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Inline: extensions that must be installed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<ExtensionSpec>,
    /// Inline: expected Postgres schemas by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub schemas: BTreeMap<String, NamespaceSpec>,
    /// A sqlx migrations directory (`<version>_<description>.sql`), or a map with `dir` and
    /// options: adds the `database.<name>.migrations` check (state of `_sqlx_migrations` and
    /// drift from a scratch database the migrations are applied to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrations: Option<MigrationsConfig>,
    /// Also flag anything present but not declared (tables, columns, indexes, constraints,
    /// defaults, RLS, extensions, schemas).
    #[serde(default)]
    pub exact: bool,
}

impl SchemaConfig {
    /// Expect the schema in this YAML file.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        SchemaConfig {
            file: Some(path.into()),
            ..SchemaConfig::default()
        }
    }

    /// Expect this schema.
    pub fn expected(expected: ExpectedSchema) -> Self {
        SchemaConfig {
            extensions: expected.extensions,
            schemas: expected.schemas,
            ..SchemaConfig::default()
        }
    }

    /// Compare with what these sqlx migrations produce: a directory (`PathBuf`, `&str`) or a
    /// [`MigrationsConfig`].
    pub fn migrations(migrations: impl Into<MigrationsConfig>) -> Self {
        SchemaConfig {
            migrations: Some(migrations.into()),
            ..SchemaConfig::default()
        }
    }

    /// Set exact mode.
    pub fn exact(mut self, exact: bool) -> Self {
        self.exact = exact;
        self
    }

    /// Whether an expected schema is given (inline or as a file).
    pub fn has_expected(&self) -> bool {
        self.file.is_some() || !self.schemas.is_empty() || !self.extensions.is_empty()
    }

    /// The expected schema: the inline one, or the file's.
    pub fn load_expected(&self) -> Result<Option<ExpectedSchema>, crate::spec::SpecFileError> {
        match &self.file {
            Some(path) => ExpectedSchema::from_file(path).map(Some),
            None if self.has_expected() => Ok(Some(ExpectedSchema {
                extensions: self.extensions.clone(),
                schemas: self.schemas.clone(),
            })),
            None => Ok(None),
        }
    }
}

/// Default `schema.migrations.cleanup_timeout`: how long dropping the scratch database may take
/// (on PostgreSQL 15 `DROP DATABASE` forces a checkpoint: 31 s were seen on a busy server).
pub const DEFAULT_CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);

/// `schema.migrations`: a sqlx migrations directory, given as its path or as a map with options:
///
/// ```yaml
/// migrations: migrations            # the same as { dir: migrations }
/// migrations:
///   dir: migrations
///   mode: full                      # full (default) | drift_only
///   scratch: auto                   # target | local | auto (default)
///   cleanup_timeout: 60s            # budget for dropping the scratch database
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct MigrationsConfig {
    /// The directory (`<version>_<description>.sql` files).
    pub dir: PathBuf,
    /// What is checked: `full` (the `_sqlx_migrations` state and drift) or `drift_only`.
    pub mode: MigrationsMode,
    /// Where the migrations are applied for the drift comparison.
    pub scratch: ScratchServer,
    /// Budget for dropping the scratch database (retried within it); added to the check's
    /// budget.
    #[serde(with = "humantime_serde")]
    pub cleanup_timeout: Duration,
}

/// What the migrations check looks at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MigrationsMode {
    /// `_sqlx_migrations` against the directory, and drift from a scratch database.
    #[default]
    Full,
    /// Only drift from a scratch database: for databases deployed without sqlx (no
    /// `_sqlx_migrations` needed).
    DriftOnly,
}

/// Where the scratch database the migrations are applied to lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ScratchServer {
    /// A database created on the target server (needs `CREATEDB`; its `DROP DATABASE` forces a
    /// checkpoint there).
    Target,
    /// A throwaway PostgreSQL of the target's major version started on this machine (feature
    /// `local-scratch` and the Debian package `postgresql-<major>`); an error if it cannot run.
    Local,
    /// `local` when it can run, else `target` (the result says which was used).
    #[default]
    Auto,
}

impl MigrationsConfig {
    /// The migrations in `dir` with every default.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        MigrationsConfig {
            dir: dir.into(),
            mode: MigrationsMode::default(),
            scratch: ScratchServer::default(),
            cleanup_timeout: DEFAULT_CLEANUP_TIMEOUT,
        }
    }

    /// Set the mode.
    pub fn mode(mut self, mode: MigrationsMode) -> Self {
        self.mode = mode;
        self
    }

    /// Set where the scratch database lives.
    pub fn scratch(mut self, scratch: ScratchServer) -> Self {
        self.scratch = scratch;
        self
    }

    /// Set the cleanup budget.
    pub fn cleanup_timeout(mut self, timeout: Duration) -> Self {
        self.cleanup_timeout = timeout;
        self
    }
}

impl<'de> Deserialize<'de> for MigrationsConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            dir: PathBuf,
            #[serde(default)]
            mode: MigrationsMode,
            #[serde(default)]
            scratch: ScratchServer,
            #[serde(default = "default_cleanup_timeout", with = "humantime_serde")]
            cleanup_timeout: Duration,
        }
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = MigrationsConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a migrations directory, or a map with `dir` and options")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<MigrationsConfig, E> {
                Ok(MigrationsConfig::new(s))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<MigrationsConfig, A::Error> {
                let f = Full::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(MigrationsConfig {
                    dir: f.dir,
                    mode: f.mode,
                    scratch: f.scratch,
                    cleanup_timeout: f.cleanup_timeout,
                })
            }
        }
        d.deserialize_any(V)
    }
}

fn default_cleanup_timeout() -> Duration {
    DEFAULT_CLEANUP_TIMEOUT
}

impl From<PathBuf> for MigrationsConfig {
    fn from(dir: PathBuf) -> Self {
        MigrationsConfig::new(dir)
    }
}

impl From<&str> for MigrationsConfig {
    fn from(dir: &str) -> Self {
        MigrationsConfig::new(dir)
    }
}

impl From<&Path> for MigrationsConfig {
    fn from(dir: &Path) -> Self {
        MigrationsConfig::new(dir)
    }
}

impl From<String> for MigrationsConfig {
    fn from(dir: String) -> Self {
        MigrationsConfig::new(dir)
    }
}

/// Data integrity: built-in detectors and custom invariants, run read-only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct IntegrityConfig {
    /// `statement_timeout` inside the read-only transaction; default the database's.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub statement_timeout: Option<Duration>,
    /// Offending rows shown per finding (0..=10).
    #[serde(default = "default_sample_rows")]
    pub sample_rows: u32,
    /// Examine at most this many rows of each table per detector (the first ones the scan
    /// meets); default every row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_limit: Option<u64>,
    /// Look for orphans of every foreign key constraint marked `NOT VALID`.
    #[serde(default = "yes")]
    pub not_valid_foreign_keys: bool,
    /// Logical foreign keys (no constraint in the database).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub foreign_keys: Vec<LogicalForeignKey>,
    /// Keys that must be unique: `schema.table(a, b)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unique: Vec<ColumnsRef>,
    /// Columns that must not be NULL: `schema.table.column`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_null: Vec<ColumnRef>,
    /// Row-count bounds per table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub row_counts: Vec<RowCountBound>,
    /// Custom invariants.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub invariants: Vec<Invariant>,
    /// Column names whose values sample rows always hide (besides the built-in secret-looking
    /// names); matched case-insensitively.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redact_columns: Vec<String>,
    /// Column names whose values sample rows show although they look secret (e.g.
    /// `content_hash`); matched case-insensitively.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub show_columns: Vec<String>,
}

fn default_sample_rows() -> u32 {
    MAX_SAMPLE_ROWS
}
fn yes() -> bool {
    true
}

impl Default for IntegrityConfig {
    fn default() -> Self {
        IntegrityConfig {
            statement_timeout: None,
            sample_rows: MAX_SAMPLE_ROWS,
            scan_limit: None,
            not_valid_foreign_keys: true,
            foreign_keys: Vec::new(),
            unique: Vec::new(),
            not_null: Vec::new(),
            row_counts: Vec::new(),
            invariants: Vec::new(),
            redact_columns: Vec::new(),
            show_columns: Vec::new(),
        }
    }
}

impl IntegrityConfig {
    /// Nothing declared yet (NOT VALID foreign keys are still examined).
    pub fn new() -> Self {
        IntegrityConfig::default()
    }

    /// Declare a logical foreign key: `from` must find its row in `to`.
    pub fn foreign_key(mut self, from: &str, to: &str) -> Result<Self, crate::ParseRefError> {
        self.foreign_keys.push(LogicalForeignKey {
            from: from.parse()?,
            to: to.parse()?,
        });
        Ok(self)
    }

    /// Declare a unique key.
    pub fn unique(mut self, key: &str) -> Result<Self, crate::ParseRefError> {
        self.unique.push(key.parse()?);
        Ok(self)
    }

    /// Declare a not-null column.
    pub fn not_null(mut self, column: &str) -> Result<Self, crate::ParseRefError> {
        self.not_null.push(column.parse()?);
        Ok(self)
    }

    /// Bound a table's row count.
    pub fn row_count(mut self, bound: RowCountBound) -> Self {
        self.row_counts.push(bound);
        self
    }

    /// Add a custom invariant.
    pub fn invariant(mut self, invariant: Invariant) -> Self {
        self.invariants.push(invariant);
        self
    }
}

/// A foreign key the application keeps without a constraint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogicalForeignKey {
    /// Referencing columns: `chat.messages(session_id)`.
    pub from: ColumnsRef,
    /// Referenced columns: `chat.sessions(id)`.
    pub to: ColumnsRef,
}

/// Bounds on a table's row count (counting stops past the bound, so large tables are cheap).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowCountBound {
    /// The table.
    pub table: TableRef,
    /// At least this many rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u64>,
    /// At most this many rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
}

impl RowCountBound {
    /// `table` must hold between `min` and `max` rows (either may be open).
    pub fn new(
        table: &str,
        min: Option<u64>,
        max: Option<u64>,
    ) -> Result<Self, crate::ParseRefError> {
        Ok(RowCountBound {
            table: table.parse()?,
            min,
            max,
        })
    }
}

/// A custom invariant: SQL that must return no row, or (with `min`/`max`) one value in bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Invariant {
    /// Short name for messages: `[a-z0-9_-]+`, unique.
    pub name: String,
    /// One SELECT (no trailing `;` needed); runs in the read-only transaction.
    pub sql: String,
    /// What a violation means, shown with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Value mode: the first column of the single row must be at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Value mode: the first column of the single row must be at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

impl Invariant {
    /// `sql` must return no row.
    pub fn no_rows(name: impl Into<String>, sql: impl Into<String>) -> Self {
        Invariant {
            name: name.into(),
            sql: sql.into(),
            message: None,
            min: None,
            max: None,
        }
    }

    /// `sql` must return one row whose first column is within `min..=max`.
    pub fn value(
        name: impl Into<String>,
        sql: impl Into<String>,
        min: Option<f64>,
        max: Option<f64>,
    ) -> Self {
        Invariant {
            min,
            max,
            ..Invariant::no_rows(name, sql)
        }
    }

    /// Explain what a violation means.
    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// Whether this is a value invariant (`min` or `max` set).
    pub fn is_value(&self) -> bool {
        self.min.is_some() || self.max.is_some()
    }
}

/// Connection pool behaviour under contention, headroom and (optionally) recovery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PoolingConfig {
    /// Concurrent tasks; must exceed `pool.size + pool.max_overflow`. Default twice that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<u32>,
    /// Acquire-hold-release cycles per task.
    #[serde(default = "default_iterations")]
    pub iterations: u32,
    /// How long each task holds its connection (`SELECT pg_sleep(..)`).
    #[serde(default = "default_hold", with = "humantime_serde")]
    pub hold: Duration,
    /// Acquisitions allowed to time out before the check fails.
    #[serde(default)]
    pub max_acquire_timeouts: u32,
    /// What the pools of every service using this server need (headroom check). Default: just
    /// this database's own `pool`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headroom: Vec<HeadroomNeed>,
    /// Restart the server and time until the pool serves again (disposable servers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryConfig>,
}

fn default_iterations() -> u32 {
    3
}
fn default_hold() -> Duration {
    Duration::from_millis(50)
}

impl Default for PoolingConfig {
    fn default() -> Self {
        PoolingConfig {
            tasks: None,
            iterations: default_iterations(),
            hold: default_hold(),
            max_acquire_timeouts: 0,
            headroom: Vec::new(),
            recovery: None,
        }
    }
}

impl PoolingConfig {
    /// Defaults: twice as many tasks as the pool holds, 3 cycles of 50 ms each.
    pub fn new() -> Self {
        PoolingConfig::default()
    }

    /// Number of concurrent tasks.
    pub fn tasks(mut self, tasks: u32) -> Self {
        self.tasks = Some(tasks);
        self
    }

    /// Cycles per task.
    pub fn iterations(mut self, n: u32) -> Self {
        self.iterations = n;
        self
    }

    /// Hold time per cycle.
    pub fn hold(mut self, d: Duration) -> Self {
        self.hold = d;
        self
    }

    /// Add a service's pool to the headroom calculation.
    pub fn need(mut self, need: HeadroomNeed) -> Self {
        self.headroom.push(need);
        self
    }

    /// Configure the recovery check.
    pub fn recovery(mut self, recovery: RecoveryConfig) -> Self {
        self.recovery = Some(recovery);
        self
    }

    /// The number of tasks for `pool`.
    pub fn tasks_for(&self, pool: &PoolConfig) -> u32 {
        self.tasks
            .unwrap_or_else(|| pool.max_connections().saturating_mul(2))
    }
}

/// One service's pools, for the headroom check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadroomNeed {
    /// Who needs the connections (for messages).
    pub service: String,
    /// Its pool size.
    pub pool_size: u32,
    /// Its max overflow.
    #[serde(default)]
    pub max_overflow: u32,
    /// How many instances run.
    #[serde(default = "one")]
    pub replicas: u32,
}

fn one() -> u32 {
    1
}

impl HeadroomNeed {
    /// `replicas` instances of `service`, each with `pool_size + max_overflow` connections.
    pub fn new(
        service: impl Into<String>,
        pool_size: u32,
        max_overflow: u32,
        replicas: u32,
    ) -> Self {
        HeadroomNeed {
            service: service.into(),
            pool_size,
            max_overflow,
            replicas,
        }
    }

    /// `replicas * (pool_size + max_overflow)`.
    pub fn connections(&self) -> u64 {
        u64::from(self.replicas) * (u64::from(self.pool_size) + u64::from(self.max_overflow))
    }
}

/// The recovery check: run `restart_command` (which must restart the server) and time until
/// the pool serves queries again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoveryConfig {
    /// Must be `true`: confirms the server is disposable (a testkit or throwaway server) and may
    /// be restarted.
    #[serde(default)]
    pub disposable: bool,
    /// Program and arguments (no shell) that restart the server and exit 0, e.g.
    /// `[pg_ctl, restart, -D, /path/to/data, -m, fast, -w]`. Without it the check is skipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restart_command: Vec<String>,
    /// Longest time for the restart and for the pool to serve again.
    #[serde(default = "default_recovery_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_recovery_timeout() -> Duration {
    Duration::from_secs(60)
}

impl RecoveryConfig {
    /// A disposable server restarted by `command`.
    pub fn disposable(command: impl IntoIterator<Item = impl Into<String>>) -> Self {
        RecoveryConfig {
            disposable: true,
            restart_command: command.into_iter().map(Into::into).collect(),
            timeout: default_recovery_timeout(),
        }
    }
}

impl Validate for DatabaseConfig {
    fn validate(&self, v: &mut Validator<'_>) {
        if self.databases.is_empty() {
            v.error("databases", "list at least one database");
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, db) in self.databases.iter().enumerate() {
            let mut dv = v.at(&format!("databases[{i}]"));
            if let Some(first) = seen.get(db.name.as_str()) {
                dv.error(
                    "name",
                    format!(
                        "duplicate database name `{}` (also databases[{first}])",
                        db.name
                    ),
                );
            } else {
                seen.insert(&db.name, i);
            }
            db.validate(&mut dv);
        }
    }
}

impl Validate for DatabaseTarget {
    fn validate(&self, v: &mut Validator<'_>) {
        v.name("name", &self.name);
        match &self.dsn {
            Some(dsn) => {
                for (key, set) in [
                    ("host", self.host.is_some()),
                    ("port", self.port.is_some()),
                    ("user", self.user.is_some()),
                    ("password", self.password.is_some()),
                    ("database", self.database.is_some()),
                ] {
                    if set {
                        v.error(key, "give either `dsn` or the connection parts, not both");
                    }
                }
                if let Some(resolved) = v.secret("dsn", dsn) {
                    if let Err(e) = crate::connect::parse_dsn(resolved.expose()) {
                        v.error("dsn", e);
                    }
                }
            }
            None => {
                if self.user.as_deref().is_none_or(str::is_empty) {
                    v.error("user", "required (or give a `dsn`)");
                }
                if self.host.as_deref().is_some_and(str::is_empty) {
                    v.error("host", "must not be empty");
                }
                if let Some(port) = self.port {
                    v.port("port", port);
                }
                if self.database.as_deref().is_some_and(str::is_empty) {
                    v.error("database", "must not be empty");
                }
                if let Some(p) = &self.password {
                    v.secret("password", p);
                }
            }
        }
        v.duration_range(
            "statement_timeout",
            self.statement_timeout,
            MIN_BOUND,
            MAX_TIMEOUT,
        );
        v.duration_range(
            "connect_timeout",
            self.connect_timeout,
            MIN_BOUND,
            MAX_TIMEOUT,
        );
        if let Some(t) = self.timeout {
            v.duration_range("timeout", t, MIN_BOUND, MAX_TIMEOUT);
        }
        if self.application_name.is_empty()
            || self.application_name.len() > MAX_APPLICATION_NAME
            || !self
                .application_name
                .bytes()
                .all(|b| b.is_ascii_graphic() || b == b' ')
        {
            v.error(
                "application_name",
                format!("use 1-{MAX_APPLICATION_NAME} printable ASCII characters"),
            );
        }
        self.pool.validate(&mut v.at("pool"));
        if let Some(s) = &self.schema {
            s.validate(&mut v.at("schema"));
        }
        if let Some(i) = &self.integrity {
            i.validate(&mut v.at("integrity"));
        }
        if let Some(p) = &self.pooling {
            let mut pv = v.at("pooling");
            p.validate(&mut pv);
            let tasks = p.tasks_for(&self.pool);
            if tasks <= self.pool.max_connections() {
                pv.error(
                    "tasks",
                    format!(
                        "{tasks} tasks cannot contend for a pool of {} (pool.size + \
                         pool.max_overflow): use more",
                        self.pool.max_connections()
                    ),
                );
            }
        }
    }
}

impl Validate for PoolConfig {
    fn validate(&self, v: &mut Validator<'_>) {
        if self.size == 0 {
            v.error("size", "must be at least 1");
        }
        if self.max_connections() > 10_000 {
            v.error("max_overflow", "size + max_overflow must be at most 10000");
        }
        v.duration_range(
            "acquire_timeout",
            self.acquire_timeout,
            MIN_BOUND,
            MAX_TIMEOUT,
        );
    }
}

impl Validate for SchemaConfig {
    fn validate(&self, v: &mut Validator<'_>) {
        let inline = !self.schemas.is_empty() || !self.extensions.is_empty();
        if self.file.is_some() && inline {
            v.error(
                "file",
                "give the expected schema either in `file` or inline (`extensions`, `schemas`), \
                 not both",
            );
        }
        if !self.has_expected() && self.migrations.is_none() {
            v.error(
                "",
                "give an expected schema (`file`, or inline `schemas`/`extensions`) and/or \
                 `migrations`",
            );
        }
        if inline {
            for (path, message) in (ExpectedSchema {
                extensions: self.extensions.clone(),
                schemas: self.schemas.clone(),
            })
            .problems()
            {
                v.error(&path, message);
            }
        }
        if let Some(file) = &self.file {
            match ExpectedSchema::from_file(file) {
                Err(e) => v.error("file", e.to_string()),
                Ok(spec) => {
                    if spec.schemas.is_empty() && spec.extensions.is_empty() {
                        v.error(
                            "file",
                            format!("{} declares no schemas and no extensions", file.display()),
                        );
                    }
                    for (path, message) in spec.problems() {
                        v.error("file", format!("{}: {path}: {message}", file.display()));
                    }
                }
            }
        }
        if let Some(m) = &self.migrations {
            if let Err(e) = check_migrations_dir(&m.dir) {
                v.error("migrations", e);
            }
            v.duration_range(
                "migrations.cleanup_timeout",
                m.cleanup_timeout,
                MIN_BOUND,
                MAX_TIMEOUT,
            );
            if cfg!(not(feature = "local-scratch")) && m.scratch == ScratchServer::Local {
                v.error(
                    "migrations.scratch",
                    "`local` needs citadel-itest-database built with the feature `local-scratch`",
                );
            }
        }
    }
}

/// A light look at a migrations directory (the check reads it for real): it exists and has at
/// least one `<version>_<description>.sql` file.
fn check_migrations_dir(dir: &Path) -> Result<(), String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read directory {}: {e}", dir.display()))?;
    let mut found = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.ends_with(".sql") {
            continue;
        }
        let version = name.split('_').next().unwrap_or("");
        if version.is_empty() || i64::from_str(version).is_err() || !name.contains('_') {
            return Err(format!(
                "{}: `{name}` is not named `<version>_<description>.sql`",
                dir.display()
            ));
        }
        found += 1;
    }
    if found == 0 {
        return Err(format!(
            "{} has no `<version>_<description>.sql` migration",
            dir.display()
        ));
    }
    Ok(())
}

impl Validate for IntegrityConfig {
    fn validate(&self, v: &mut Validator<'_>) {
        if let Some(t) = self.statement_timeout {
            v.duration_range("statement_timeout", t, MIN_BOUND, MAX_TIMEOUT);
        }
        if self.sample_rows > MAX_SAMPLE_ROWS {
            v.error(
                "sample_rows",
                format!("{} is out of range 0..={MAX_SAMPLE_ROWS}", self.sample_rows),
            );
        }
        if self.scan_limit == Some(0) {
            v.error(
                "scan_limit",
                "must be at least 1 (leave it out to scan every row)",
            );
        }
        for (i, fk) in self.foreign_keys.iter().enumerate() {
            if fk.from.columns.len() != fk.to.columns.len() {
                v.at(&format!("foreign_keys[{i}]")).error(
                    "",
                    format!(
                        "{} columns reference {} columns",
                        fk.from.columns.len(),
                        fk.to.columns.len()
                    ),
                );
            }
        }
        for (i, b) in self.row_counts.iter().enumerate() {
            let mut bv = v.at(&format!("row_counts[{i}]"));
            match (b.min, b.max) {
                (None, None) => bv.error("", "give `min`, `max` or both"),
                (Some(lo), Some(hi)) if lo > hi => {
                    bv.error("min", format!("{lo} is greater than max {hi}"))
                }
                _ => {}
            }
        }
        for (key, names) in [
            ("redact_columns", &self.redact_columns),
            ("show_columns", &self.show_columns),
        ] {
            for (i, name) in names.iter().enumerate() {
                if name.trim().is_empty() {
                    v.error(&format!("{key}[{i}]"), "must not be empty");
                }
            }
        }
        for (i, name) in self.show_columns.iter().enumerate() {
            if self
                .redact_columns
                .iter()
                .any(|r| r.eq_ignore_ascii_case(name))
            {
                v.error(
                    &format!("show_columns[{i}]"),
                    format!("`{name}` is also in redact_columns: keep it in one of them"),
                );
            }
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, inv) in self.invariants.iter().enumerate() {
            let mut iv = v.at(&format!("invariants[{i}]"));
            if !iv.name("name", &inv.name) {
                // Named already; a duplicate of an invalid name adds nothing.
            } else if let Some(first) = seen.get(inv.name.as_str()) {
                iv.error(
                    "name",
                    format!(
                        "duplicate invariant `{}` (also invariants[{first}])",
                        inv.name
                    ),
                );
            } else {
                seen.insert(&inv.name, i);
            }
            let sql = crate::integrity::trim_sql(&inv.sql);
            if sql.is_empty() {
                iv.error("sql", "must not be empty");
            } else if let Err(why) = crate::integrity::one_select(sql) {
                iv.error("sql", why);
            }
            for (key, bound) in [("min", inv.min), ("max", inv.max)] {
                if bound.is_some_and(|b| !b.is_finite()) {
                    iv.error(key, "must be a finite number");
                }
            }
            if let (Some(lo), Some(hi)) = (inv.min, inv.max) {
                if lo > hi {
                    iv.error("min", format!("{lo} is greater than max {hi}"));
                }
            }
        }
    }
}

impl Validate for PoolingConfig {
    fn validate(&self, v: &mut Validator<'_>) {
        if self.iterations == 0 {
            v.error("iterations", "must be at least 1");
        }
        if self.tasks.is_some_and(|t| t > 10_000) {
            v.error("tasks", "must be at most 10000");
        }
        v.duration_range("hold", self.hold, MIN_BOUND, MAX_TIMEOUT);
        for (i, need) in self.headroom.iter().enumerate() {
            let mut hv = v.at(&format!("headroom[{i}]"));
            if need.service.trim().is_empty() {
                hv.error("service", "must not be empty");
            }
            if need.pool_size == 0 {
                hv.error("pool_size", "must be at least 1");
            }
            if need.replicas == 0 {
                hv.error("replicas", "must be at least 1");
            }
        }
        if let Some(r) = &self.recovery {
            let mut rv = v.at("recovery");
            if !r.disposable {
                rv.error(
                    "disposable",
                    "the recovery check restarts the server: set `disposable: true` only for a \
                     testkit or throwaway server",
                );
            }
            if r.restart_command
                .first()
                .is_some_and(|p| p.trim().is_empty())
            {
                rv.error("restart_command", "the program must not be empty");
            }
            v.at("recovery")
                .duration_range("timeout", r.timeout, MIN_BOUND, MAX_TIMEOUT);
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        })
    }
}
