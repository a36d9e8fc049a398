//! `database.<name>.migrations`: the state of `_sqlx_migrations` against the migrations
//! directory, and drift between the live schema and the one the migrations produce.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use citadel_itest_core::{
    BoxError, Category, Check, CheckContext, CheckId, ErrorKind, Measurement, Outcome, Unit,
    error_chain, new_run_id,
};
use sqlx::migrate::Migrator;
use sqlx::{Connection as _, PgConnection, Row};

use crate::catalog::{Catalog, Namespaces};
use crate::config::DatabaseTarget;
use crate::connect::{Connector, connect_with, describe};
use crate::diff::{diff_database, diff_namespace};
use crate::ident::TableRef;
use crate::schema::{base_timeout, verdict};
use crate::scratch::{ScratchDatabase, scratch_name};

/// The table sqlx records applied migrations in.
pub const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// Checks a database against a sqlx migrations directory.
///
/// 1. State: `_sqlx_migrations` exists, every migration of the directory is applied, none failed
///    (`success = false`), every checksum matches its file, and nothing applied is missing from
///    the directory.
/// 2. Drift: creates a scratch database `citadel_itest_<run>_<name>`, applies the migrations
///    there and compares the two live schemas exactly within the schemas the migrations create
///    (and, with `exact`, everywhere): a column added by hand after migrating shows up as
///    `drift: unexpected column public.users.nickname (text NULL)`. The scratch database is
///    dropped on success, failure and cancellation, and by a drop guard on timeout or panic.
///    Skipped (with a note) in `run.read_only` mode.
#[derive(Debug, Clone)]
pub struct MigrationsCheck {
    id: CheckId,
    connector: Arc<Connector>,
    dir: PathBuf,
    exact: bool,
    read_only: bool,
    timeout: Duration,
}

struct Applied {
    version: i64,
    description: String,
    success: bool,
    checksum: Vec<u8>,
}

impl MigrationsCheck {
    /// The migrations check of `target` against the sqlx migrations in `dir`. `read_only`
    /// skips the drift comparison (it creates a scratch database).
    pub fn new(
        target: &DatabaseTarget,
        dir: impl Into<PathBuf>,
        exact: bool,
        read_only: bool,
    ) -> Self {
        Self::build(
            Arc::new(Connector::new(target)),
            dir.into(),
            exact,
            read_only,
        )
    }

    pub(crate) fn build(
        connector: Arc<Connector>,
        dir: PathBuf,
        exact: bool,
        read_only: bool,
    ) -> Self {
        MigrationsCheck {
            id: CheckId::new(format!("database.{}.migrations", connector.name)),
            timeout: base_timeout(connector.target()),
            connector,
            dir,
            exact,
            read_only,
        }
    }

    async fn evaluate(&self, scratch: &mut Option<ScratchDatabase>) -> Result<Outcome, BoxError> {
        let migrator = Migrator::new(self.dir.clone()).await.map_err(|e| {
            format!(
                "read migrations from {}: {}",
                self.dir.display(),
                error_chain(&e)
            )
        })?;
        let migrations: Vec<_> = migrator
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .collect();
        let opts = self
            .connector
            .options(&self.connector.app_name("migrations"))?;
        let limit = self.connector.target().connect_timeout;
        let mut conn = connect_with(&self.connector.name, &opts, limit).await?;
        let mut findings = Vec::new();
        let mut measurements = vec![Measurement::new(
            "migrations_in_directory",
            migrations.len() as f64,
            Unit::Count,
        )];

        // 1. State of _sqlx_migrations.
        match read_applied(&mut conn).await.map_err(|e| {
            format!(
                "read {MIGRATIONS_TABLE} of database {}: {}",
                self.connector.name,
                describe(&e)
            )
        })? {
            None => findings.push(format!(
                "{MIGRATIONS_TABLE} is missing: no migration of {} has been applied",
                self.dir.display()
            )),
            Some(applied) => {
                let by_version: BTreeMap<i64, &Applied> =
                    applied.iter().map(|a| (a.version, a)).collect();
                measurements.push(Measurement::new(
                    "migrations_applied",
                    applied.iter().filter(|a| a.success).count() as f64,
                    Unit::Count,
                ));
                for a in applied.iter().filter(|a| !a.success) {
                    findings.push(format!(
                        "migration {} ({}) failed: success = false in {MIGRATIONS_TABLE}",
                        a.version, a.description
                    ));
                }
                for m in &migrations {
                    match by_version.get(&m.version) {
                        None => findings.push(format!(
                            "pending migration {} ({})",
                            m.version, m.description
                        )),
                        Some(a) if a.checksum != *m.checksum => findings.push(format!(
                            "migration {} ({}) was changed after it was applied: its checksum \
                             differs from {MIGRATIONS_TABLE}",
                            m.version, m.description
                        )),
                        Some(_) => {}
                    }
                }
                for a in &applied {
                    if !migrations.iter().any(|m| m.version == a.version) {
                        findings.push(format!(
                            "applied migration {} ({}) is not in {}",
                            a.version,
                            a.description,
                            self.dir.display()
                        ));
                    }
                }
            }
        }

        // 2. Drift from a scratch database with the migrations applied.
        if self.read_only {
            let _ = conn.close().await;
            return Ok(verdict(findings, measurements));
        }
        let name = scratch_name(&new_run_id(), &self.connector.name);
        let created = ScratchDatabase::create(&mut conn, &opts, limit, name).await?;
        let scratch_opts = created.options();
        let scratch_name = created.name().to_string();
        *scratch = Some(created);
        let mut sconn = connect_with(&scratch_name, &scratch_opts, limit).await?;
        let started = Instant::now();
        match migrator.run_direct(&mut sconn).await {
            Err(e) => findings.push(format!(
                "migrations do not apply to an empty database: {}",
                error_chain(&e)
            )),
            Ok(()) => {
                measurements.push(Measurement::duration("migrate_time", started.elapsed()));
                let fresh = Catalog::read(&mut sconn, &Namespaces::NonSystem)
                    .await
                    .map_err(|e| format!("read the catalog of {scratch_name}: {}", describe(&e)))?;
                let namespaces = if self.exact {
                    Namespaces::NonSystem
                } else {
                    Namespaces::Only(fresh.namespaces.iter().cloned().collect())
                };
                let live = Catalog::read(&mut conn, &namespaces).await.map_err(|e| {
                    format!(
                        "read the catalog of database {}: {}",
                        self.connector.name,
                        describe(&e)
                    )
                })?;
                let ignore: Vec<TableRef> = fresh
                    .namespaces
                    .iter()
                    .chain(&live.namespaces)
                    .map(|ns| TableRef::new(ns.clone(), MIGRATIONS_TABLE))
                    .collect();
                let expected = fresh.to_expected(&ignore);
                let mut drift = diff_database(&expected, &live, self.exact);
                for (ns, spec) in &expected.schemas {
                    drift.extend(diff_namespace(ns, spec, &live, true, &ignore));
                }
                measurements.push(Measurement::new(
                    "drift_differences",
                    drift.len() as f64,
                    Unit::Count,
                ));
                findings.extend(drift.into_iter().map(|d| format!("drift: {d}")));
            }
        }
        let _ = sconn.close().await;
        let _ = conn.close().await;
        Ok(verdict(findings, measurements))
    }
}

async fn read_applied(conn: &mut PgConnection) -> Result<Option<Vec<Applied>>, sqlx::Error> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(MIGRATIONS_TABLE)
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        return Ok(None);
    }
    let rows = sqlx::query(&format!(
        "SELECT version, description, success, checksum FROM {MIGRATIONS_TABLE} ORDER BY version"
    ))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Applied {
                version: r.try_get(0)?,
                description: r.try_get(1)?,
                success: r.try_get(2)?,
                checksum: r.try_get(3)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map(Some)
}

#[async_trait]
impl Check for MigrationsCheck {
    fn id(&self) -> &CheckId {
        &self.id
    }

    fn category(&self) -> Category {
        Category::Schema
    }

    fn timeout(&self) -> Option<Duration> {
        Some(self.timeout)
    }

    async fn run(&self, ctx: &CheckContext) -> Result<Outcome, BoxError> {
        // Declared outside the raced future: whatever happens to that future, the scratch
        // database is dropped below (or, if this future itself is dropped, by its guard).
        let mut scratch: Option<ScratchDatabase> = None;
        let result = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => Ok(Outcome::error(
                ErrorKind::Cancelled,
                format!("migrations check {} cancelled", self.id),
            )),
            r = self.evaluate(&mut scratch) => r,
        };
        if let Some(s) = scratch.take() {
            let name = s.name().to_string();
            if let Err(e) = s.drop_now().await {
                let cleanup = format!(
                    "could not drop scratch database {name}: {}",
                    error_chain(&*e)
                );
                return match result {
                    Err(e) => Err(format!("{}; {cleanup}", error_chain(&*e)).into()),
                    Ok(_) => Err(cleanup.into()),
                };
            }
        }
        result
    }
}
