//! PostgreSQL checks for citadel-itest: schema validation, data integrity and connection
//! pooling, the `database:` tester.
//!
//! For each database under `database.databases` it builds, with real queries:
//!
//! | check id | category | what |
//! |---|---|---|
//! | `database.<name>.schema.<pg_schema>` | schema | [`SchemaCheck`]: inside one Postgres schema (tables, columns, keys, indexes, ...) against its declaration |
//! | `database.<name>.schema` | schema | [`DatabaseSchemaCheck`]: the database as a whole: extensions; with `exact`, no undeclared schema or extension |
//! | `database.<name>.migrations` | schema | [`MigrationsCheck`]: `_sqlx_migrations` state and drift from a scratch database |
//! | `database.<name>.integrity` | integrity | [`IntegrityCheck`]: orphans, duplicates, NULLs, row counts, invariants (read-only) |
//! | `database.<name>.pooling` | pooling | [`PoolingCheck`]: the configured pool under contention |
//! | `database.<name>.headroom` | pooling | [`HeadroomCheck`]: `max_connections` vs what every pool needs |
//! | `database.<name>.recovery` | pooling | [`RecoveryCheck`]: restart a disposable server, time until the pool serves |
//!
//! Build the tester from configuration and see which checks it makes (nothing connects until a
//! check runs):
//!
//! ```
//! use citadel_itest_core::IntegrationTester;
//! use citadel_itest_core::config::ConfigLoader;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let password = dir.path().join("pg-password");
//! std::fs::write(&password, "example-only\n").unwrap();
//! let file = dir.path().join("itest.yaml");
//! std::fs::write(&file, format!(r#"
//! database:
//!   databases:
//!     - name: main
//!       host: 127.0.0.1
//!       port: 55432
//!       user: citadel
//!       password: {{ file: {} }}
//!       database: citadel
//!       schema:
//!         extensions: [pgcrypto]
//!         schemas:
//!           chat:
//!             tables:
//!               sessions:
//!                 columns: {{ id: uuid NOT NULL, user_id: uuid NOT NULL }}
//!                 primary_key: [id]
//!                 indexes: [[user_id]]
//!       integrity:
//!         not_null: [chat.sessions.user_id]
//!       pooling: {{ tasks: 50 }}
//! "#, password.display())).unwrap();
//!
//! let config = ConfigLoader::new().env(false).section("database").file(&file).load().unwrap();
//! let mut problems = Vec::new();
//! let tester = citadel_itest_database::from_config(&config, &mut problems).unwrap();
//! assert!(problems.is_empty(), "{problems:?}");
//! let ids: Vec<String> = tester.checks().iter().map(|c| c.id().to_string()).collect();
//! assert_eq!(ids, [
//!     "database.main.schema",
//!     "database.main.schema.chat",
//!     "database.main.integrity",
//!     "database.main.pooling",
//!     "database.main.headroom",
//! ]);
//! ```
//!
//! Or embed one check in a service's own tests with [`run_one`](citadel_itest_core::run_one):
//! `run_one(&IntegrityCheck::new(&target, integrity)).await.assert_passed()`.
//!
//! Passwords are [`Secret`](citadel_itest_core::config::Secret)s and a `dsn` is one too:
//! neither ever appears in a message, a report or a log. Integrity checks change no row: they
//! run in a READ ONLY transaction. Only the pooling checks (connections), the migrations check
//! (a scratch database `citadel_itest_<ms>_<rand>_<name>`, dropped within its cleanup budget or
//! by the next run) and the recovery check (a restart of a server marked disposable) do more than
//! read.

#![forbid(unsafe_code)]

mod canon;
mod catalog;
mod config;
mod connect;
mod diff;
mod ident;
mod integrity;
mod migrations;
mod nodetree;
mod normalize;
mod objects;
mod pooling;
mod schema;
mod scratch;
mod spec;

use std::sync::Arc;
use std::time::Duration;

use citadel_itest_core::config::{Config, ConfigProblem, RunSettings};
use citadel_itest_core::{Check, CheckExt, IntegrationTester};

pub use config::{
    DEFAULT_ACQUIRE_TIMEOUT, DEFAULT_APPLICATION_NAME, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_OVERFLOW, DEFAULT_POOL_SIZE, DEFAULT_STATEMENT_TIMEOUT, DatabaseConfig,
    DatabaseTarget, DatabaseUrlError, HeadroomNeed, IntegrityConfig, Invariant, LogicalForeignKey,
    MAX_APPLICATION_NAME, MAX_SAMPLE_ROWS, PoolConfig, PoolingConfig, RecoveryConfig,
    RowCountBound, SchemaConfig, SslMode,
};
pub use config::{DEFAULT_CLEANUP_TIMEOUT, MigrationsConfig, MigrationsMode, ScratchServer};
pub use ident::{ColumnRef, ColumnsRef, DEFAULT_SCHEMA, ParseRefError, TableRef};
pub use integrity::IntegrityCheck;
pub use migrations::{MIGRATIONS_TABLE, MigrationsCheck};
pub use pooling::{HeadroomCheck, PoolingCheck, RecoveryCheck};
pub use schema::{DatabaseSchemaCheck, SchemaCheck};
pub use scratch::SCRATCH_PREFIX;
pub use spec::{
    CheckSpec, ColumnSpec, ExpectedSchema, ExtensionSpec, ForeignKeySpec, FunctionSpec, Identity,
    IndexSpec, NamespaceSpec, PolicySpec, ReferentialAction, SequenceSpec, SpecFileError,
    TableSpec, TriggerSpec, ViewSpec, Volatility,
};

use connect::Connector;

/// The tester's name and config section.
pub const NAME: &str = "database";

/// The `database` tester: schema, migrations, integrity and pooling checks per configured
/// database.
#[derive(Debug, Clone)]
pub struct DatabaseTester {
    config: DatabaseConfig,
    timeout: Duration,
    read_only: bool,
}

impl DatabaseTester {
    /// A tester over `config` with the default [`RunSettings`]. Checks get the database's
    /// `timeout` (else `run.timeout`; the pooling and recovery checks get more, see
    /// [`DatabaseTarget::timeout`]). Built like every tester:
    /// `DatabaseTester::new(config).run_settings(&run)`. It takes no performance targets: its
    /// limits are in its own config.
    pub fn new(config: DatabaseConfig) -> Self {
        let run = RunSettings::default();
        DatabaseTester {
            config,
            timeout: run.timeout,
            read_only: run.read_only,
        }
    }

    /// Takes `run.timeout` and `run.read_only` (which skips the recovery check and the
    /// migrations drift comparison: both write).
    pub fn run_settings(mut self, run: &RunSettings) -> Self {
        self.timeout = run.timeout;
        self.read_only = run.read_only;
        self
    }

    /// The section this tester was built from.
    pub fn config(&self) -> &DatabaseConfig {
        &self.config
    }
}

impl IntegrationTester for DatabaseTester {
    fn name(&self) -> &str {
        NAME
    }

    fn checks(&self) -> Vec<Arc<dyn Check>> {
        let mut checks: Vec<Arc<dyn Check>> = Vec::new();
        for db in &self.config.databases {
            let connector = Arc::new(Connector::new(db));
            let base = db.timeout.unwrap_or(self.timeout);
            if let Some(schema) = &db.schema {
                let loaded = schema.load_expected().map(|o| o.map(Arc::new));
                match loaded {
                    Ok(None) => {}
                    Ok(Some(spec)) => {
                        if schema.exact || !spec.extensions.is_empty() {
                            checks.push(
                                DatabaseSchemaCheck::build(
                                    connector.clone(),
                                    Ok(spec.clone()),
                                    schema.exact,
                                )
                                .with_timeout(base)
                                .boxed(),
                            );
                        }
                        for ns in spec.schemas.keys() {
                            checks.push(
                                SchemaCheck::build(
                                    connector.clone(),
                                    Ok(spec.clone()),
                                    ns.clone(),
                                    schema.exact,
                                )
                                .read_only(self.read_only)
                                .with_timeout(base)
                                .boxed(),
                            );
                        }
                    }
                    // The file went bad after validation: one check reports it.
                    Err(e) => checks.push(
                        DatabaseSchemaCheck::build(connector.clone(), Err(e.to_string()), false)
                            .with_timeout(base)
                            .boxed(),
                    ),
                }
                if let Some(m) = &schema.migrations {
                    // Dropping the scratch database has its own budget on top.
                    checks.push(
                        MigrationsCheck::build(
                            connector.clone(),
                            m.clone(),
                            schema.exact,
                            self.read_only,
                        )
                        .with_timeout(base + m.cleanup_timeout)
                        .boxed(),
                    );
                }
            }
            if let Some(integrity) = &db.integrity {
                checks.push(
                    IntegrityCheck::build(connector.clone(), integrity.clone())
                        .with_timeout(base)
                        .boxed(),
                );
            }
            if let Some(pooling) = &db.pooling {
                checks.push(
                    PoolingCheck::build(connector.clone(), pooling.clone())
                        .with_timeout(base + db.pool.acquire_timeout)
                        .boxed(),
                );
                checks.push(
                    HeadroomCheck::build(connector.clone(), pooling.headroom.clone())
                        .with_timeout(base)
                        .boxed(),
                );
                if let Some(recovery) = &pooling.recovery {
                    checks.push(
                        RecoveryCheck::build(connector.clone(), recovery.clone(), self.read_only)
                            .with_timeout(base + recovery.timeout)
                            .boxed(),
                    );
                }
            }
        }
        checks
    }
}

/// Build the tester from the `database:` section of `config`, appending every problem found to
/// `problems` (with key paths such as `database.databases[0].pool.size`). `None` when the
/// section is absent or invalid.
pub fn from_config(config: &Config, problems: &mut Vec<ConfigProblem>) -> Option<DatabaseTester> {
    let before = problems.len();
    let section = config.section::<DatabaseConfig>(NAME, problems)?;
    if problems.len() > before {
        return None;
    }
    Some(DatabaseTester::new(section).run_settings(&config.run))
}

#[cfg(test)]
mod tests {
    use super::*;
    use citadel_itest_core::Category;
    use citadel_itest_core::config::Secret;

    #[test]
    fn checks_per_database_with_ids_categories_and_budgets() {
        let spec = ExpectedSchema::new()
            .schema("auth", NamespaceSpec::new())
            .schema("chat", NamespaceSpec::new());
        let target = DatabaseTarget::new("main")
            .user("citadel")
            .password(Secret::inline("pw-for-a-unit-test"))
            .timeout(Duration::from_secs(7))
            .schema(SchemaConfig::expected(spec).exact(true))
            .integrity(IntegrityConfig::new())
            .pooling(PoolingConfig::new().recovery(RecoveryConfig::disposable(["true"])));
        let other = DatabaseTarget::new("replica")
            .user("citadel")
            .schema(SchemaConfig::migrations("migrations"));
        let run = RunSettings {
            read_only: true,
            ..RunSettings::default()
        };
        let tester = DatabaseTester::new(DatabaseConfig::new().database(target).database(other))
            .run_settings(&run);
        assert_eq!(tester.name(), "database");
        let checks = tester.checks();
        let got: Vec<(&str, Category, Option<Duration>)> = checks
            .iter()
            .map(|c| (c.id().as_str(), c.category(), c.timeout()))
            .collect();
        let s = Duration::from_secs;
        assert_eq!(
            got,
            [
                ("database.main.schema", Category::Schema, Some(s(7))),
                ("database.main.schema.auth", Category::Schema, Some(s(7))),
                ("database.main.schema.chat", Category::Schema, Some(s(7))),
                ("database.main.integrity", Category::Integrity, Some(s(7))),
                ("database.main.pooling", Category::Pooling, Some(s(37))),
                ("database.main.headroom", Category::Pooling, Some(s(7))),
                ("database.main.recovery", Category::Pooling, Some(s(67))),
                (
                    "database.replica.migrations",
                    Category::Schema,
                    Some(run.timeout + DEFAULT_CLEANUP_TIMEOUT)
                ),
            ]
        );
    }
}
