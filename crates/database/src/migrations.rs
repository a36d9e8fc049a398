//! `database.<name>.migrations`: the state of `_sqlx_migrations` against the migrations
//! directory, and drift between the live schema and the one the migrations produce.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use citadel_itest_core::{
    BoxError, Category, Check, CheckContext, CheckId, ErrorKind, Measurement, Outcome, Unit,
    error_chain,
};
use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection as _, PgConnection, Row};

use crate::catalog::{Catalog, Namespaces};
use crate::config::{DatabaseTarget, MigrationsConfig, MigrationsMode, ScratchServer};
use crate::connect::{Connector, connect_with, describe};
use crate::diff::{diff_database, diff_namespace};
use crate::ident::TableRef;
use crate::schema::{base_timeout, verdict};
use crate::scratch::{ScratchDatabase, now_ms, scratch_name, sweep_leftovers};

/// The table sqlx records applied migrations in.
pub const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// Checks a database against a sqlx migrations directory.
///
/// 1. State (mode `full`): `_sqlx_migrations` exists, every migration of the directory is
///    applied, none failed (`success = false`), every checksum matches its file, and nothing
///    applied is missing from the directory. Mode `drift_only` skips this step (a database
///    deployed by other means has no `_sqlx_migrations`).
/// 2. Drift: applies the migrations to a scratch database (on the target,
///    `citadel_itest_<ms>_<rand>_<name>`, or on a throwaway local PostgreSQL of the same major
///    version, see [`ScratchServer`]) and compares the two live schemas exactly within the
///    schemas the migrations create (and, with `exact`, everywhere); sqlx's own
///    `_sqlx_migrations` is never drift. A column added by hand after migrating shows up as
///    `drift: unexpected column public.users.nickname (text NULL)`. Skipped in
///    `run.read_only` mode.
///
/// The scratch database is dropped on success, failure and cancellation within
/// `cleanup_timeout` (retried; `statement_timeout` off for the drop), and by a drop guard on
/// timeout or panic. The verdict stands whatever the cleanup does: a database that could not be
/// dropped is named in the message (and the `left_behind` detail) and dropped by the next run,
/// which removes every leftover scratch database older than itself.
#[derive(Debug, Clone)]
pub struct MigrationsCheck {
    id: CheckId,
    connector: Arc<Connector>,
    config: MigrationsConfig,
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

/// Where the scratch schema was built; dropped (or stopped) after the comparison.
enum Scratch {
    Target(ScratchDatabase),
    #[cfg(feature = "local-scratch")]
    Local(local::LocalServer),
}

impl MigrationsCheck {
    /// The migrations check of `target` against the sqlx migrations in `dir` (mode `full`,
    /// scratch `auto`, default cleanup budget). `read_only` skips the drift comparison (it
    /// creates a scratch database).
    pub fn new(
        target: &DatabaseTarget,
        dir: impl Into<PathBuf>,
        exact: bool,
        read_only: bool,
    ) -> Self {
        Self::with_config(target, MigrationsConfig::new(dir.into()), exact, read_only)
    }

    /// The migrations check of `target` with every option of `config`.
    pub fn with_config(
        target: &DatabaseTarget,
        config: MigrationsConfig,
        exact: bool,
        read_only: bool,
    ) -> Self {
        Self::build(Arc::new(Connector::new(target)), config, exact, read_only)
    }

    pub(crate) fn build(
        connector: Arc<Connector>,
        config: MigrationsConfig,
        exact: bool,
        read_only: bool,
    ) -> Self {
        MigrationsCheck {
            id: CheckId::new(format!("database.{}.migrations", connector.name)),
            timeout: base_timeout(connector.target()) + config.cleanup_timeout,
            connector,
            config,
            exact,
            read_only,
        }
    }

    /// Compares `_sqlx_migrations` with the directory (mode `full`).
    async fn state(
        &self,
        conn: &mut PgConnection,
        migrations: &[&sqlx::migrate::Migration],
        findings: &mut Vec<String>,
        measurements: &mut Vec<Measurement>,
    ) -> Result<(), BoxError> {
        let dir = self.config.dir.display();
        let applied = read_applied(conn).await.map_err(|e| {
            format!(
                "read {MIGRATIONS_TABLE} of database {}: {}",
                self.connector.name,
                describe(&e)
            )
        })?;
        let Some(applied) = applied else {
            findings.push(format!(
                "{MIGRATIONS_TABLE} is missing: no migration of {dir} has been applied (for a \
                 database deployed without sqlx, use mode drift_only)"
            ));
            return Ok(());
        };
        let by_version: BTreeMap<i64, &Applied> = applied.iter().map(|a| (a.version, a)).collect();
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
        for m in migrations {
            match by_version.get(&m.version) {
                None => findings.push(format!(
                    "pending migration {} ({})",
                    m.version, m.description
                )),
                Some(a) if a.checksum != *m.checksum => findings.push(format!(
                    "migration {} ({}) was changed after it was applied: its checksum differs \
                     from {MIGRATIONS_TABLE}",
                    m.version, m.description
                )),
                Some(_) => {}
            }
        }
        for a in &applied {
            if !migrations.iter().any(|m| m.version == a.version) {
                findings.push(format!(
                    "applied migration {} ({}) is not in {dir}",
                    a.version, a.description
                ));
            }
        }
        Ok(())
    }

    /// A scratch database on the target; returns a connection to it.
    async fn target_scratch(
        &self,
        ctx: &CheckContext,
        conn: &mut PgConnection,
        opts: &PgConnectOptions,
        scratch: &mut Option<Scratch>,
    ) -> Result<PgConnection, BoxError> {
        let limit = self.connector.target().connect_timeout;
        let name = scratch_name(now_ms(), &self.connector.name);
        let created =
            ScratchDatabase::create(conn, opts, limit, self.config.cleanup_timeout, name).await?;
        let scratch_opts = created.options();
        let scratch_name = created.name().to_string();
        ctx.detail("scratch_server", "target");
        ctx.detail("scratch_database", scratch_name.clone());
        *scratch = Some(Scratch::Target(created));
        connect_with(&scratch_name, &scratch_opts, limit).await
    }

    /// A connection to an empty scratch database, where `migrations.scratch` says.
    async fn make_scratch(
        &self,
        ctx: &CheckContext,
        conn: &mut PgConnection,
        opts: &PgConnectOptions,
        scratch: &mut Option<Scratch>,
    ) -> Result<PgConnection, BoxError> {
        match self.config.scratch {
            ScratchServer::Target => self.target_scratch(ctx, conn, opts, scratch).await,
            #[cfg(feature = "local-scratch")]
            ScratchServer::Local => Ok(self.local_scratch(ctx, conn, scratch).await?),
            #[cfg(feature = "local-scratch")]
            ScratchServer::Auto => match self.local_scratch(ctx, conn, scratch).await {
                Ok(sconn) => Ok(sconn),
                Err(why) => {
                    ctx.detail("local_scratch_unavailable", why);
                    self.target_scratch(ctx, conn, opts, scratch).await
                }
            },
            #[cfg(not(feature = "local-scratch"))]
            ScratchServer::Local => Err("migrations.scratch: `local` needs \
                 citadel-itest-database built with the feature `local-scratch`"
                .into()),
            #[cfg(not(feature = "local-scratch"))]
            _ => self.target_scratch(ctx, conn, opts, scratch).await,
        }
    }

    /// A throwaway local PostgreSQL of the target's major version.
    #[cfg(feature = "local-scratch")]
    async fn local_scratch(
        &self,
        ctx: &CheckContext,
        conn: &mut PgConnection,
        scratch: &mut Option<Scratch>,
    ) -> Result<PgConnection, String> {
        let version: String = sqlx::query_scalar("SELECT current_setting('server_version_num')")
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| format!("read the target's server_version_num: {}", describe(&e)))?;
        let major = version
            .trim()
            .parse::<u32>()
            .map(|v| v / 10_000)
            .map_err(|_| format!("unreadable server_version_num `{version}`"))?;
        let limit = self.connector.target().connect_timeout;
        let server = local::LocalServer::start(major, Duration::from_secs(30)).await?;
        let opts = server.options()?;
        let endpoint = Connector::endpoint(&opts);
        *scratch = Some(Scratch::Local(server));
        let sconn = connect_with("local scratch", &opts, limit)
            .await
            .map_err(|e| e.to_string())?;
        ctx.detail(
            "scratch_server",
            format!("local PostgreSQL {major} at {endpoint}"),
        );
        Ok(sconn)
    }

    async fn evaluate(
        &self,
        ctx: &CheckContext,
        scratch: &mut Option<Scratch>,
    ) -> Result<Outcome, BoxError> {
        let dir = &self.config.dir;
        let migrator = Migrator::new(dir.clone()).await.map_err(|e| {
            format!(
                "read migrations from {}: {}",
                dir.display(),
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
        if self.config.mode == MigrationsMode::Full {
            self.state(&mut conn, &migrations, &mut findings, &mut measurements)
                .await?;
        }

        // 2. Drift from a scratch database with the migrations applied.
        if self.read_only {
            let _ = conn.close().await;
            if self.config.mode == MigrationsMode::DriftOnly {
                return Ok(Outcome::skipped(
                    "run.read_only: the drift comparison needs a scratch database, and mode \
                     drift_only checks nothing else",
                ));
            }
            return Ok(verdict(findings, measurements));
        }
        // Scratch databases earlier runs left on the target go first, wherever this run's is.
        let sweep = sweep_leftovers(&mut conn, &opts, limit, now_ms()).await;
        measurements.push(Measurement::new(
            "leftovers_dropped",
            sweep.dropped.len() as f64,
            Unit::Count,
        ));
        if !sweep.dropped.is_empty() {
            ctx.detail("leftovers_dropped", sweep.dropped);
        }
        if !sweep.kept.is_empty() {
            ctx.detail("leftovers_kept", sweep.kept);
        }
        let mut sconn = self.make_scratch(ctx, &mut conn, &opts, scratch).await?;
        let started = Instant::now();
        #[allow(unused_mut)]
        let mut applied = migrator.run_direct(&mut sconn).await;
        #[cfg(feature = "local-scratch")]
        if let (Err(e), ScratchServer::Auto, Some(Scratch::Local(_))) =
            (&applied, self.config.scratch, &*scratch)
        {
            // The local server may lack what the target has (an extension): try the target.
            ctx.detail(
                "local_scratch_unavailable",
                format!("the migrations failed there: {}", error_chain(e)),
            );
            let _ = sconn.close().await;
            *scratch = None;
            sconn = self.target_scratch(ctx, &mut conn, &opts, scratch).await?;
            applied = migrator.run_direct(&mut sconn).await;
        }
        match applied {
            Err(e) => findings.push(format!(
                "migrations do not apply to an empty database: {}",
                error_chain(&e)
            )),
            Ok(()) => {
                measurements.push(Measurement::duration("migrate_time", started.elapsed()));
                let fresh = Catalog::read(&mut sconn, &Namespaces::NonSystem)
                    .await
                    .map_err(|e| {
                        format!("read the catalog of the scratch database: {}", describe(&e))
                    })?;
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
                // sqlx's bookkeeping table is never drift, wherever it lives.
                let ignore: Vec<TableRef> = fresh
                    .namespaces
                    .iter()
                    .chain(&live.namespaces)
                    .map(|ns| TableRef::new(ns.clone(), MIGRATIONS_TABLE))
                    .collect();
                let expected = fresh.to_expected(&ignore);
                let mut drift: Vec<String> = diff_database(&expected, &live, self.exact)
                    .into_iter()
                    .filter(|d| !only_bookkeeping(d, &live))
                    .collect();
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

/// `unexpected schema X (1 table)` where that one table is `_sqlx_migrations`: sqlx's
/// bookkeeping, not drift.
fn only_bookkeeping(diff: &str, live: &Catalog) -> bool {
    let Some(rest) = diff.strip_prefix("unexpected schema ") else {
        return false;
    };
    live.namespaces.iter().any(|ns| {
        let tables: Vec<&str> = live.tables_in(ns).map(|(t, _)| t).collect();
        rest.starts_with(&format!("{} (", crate::ident::display_ident(ns)))
            && tables == [MIGRATIONS_TABLE]
    })
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
        // Kept for dropping the scratch database: `cleanup_timeout`, at most half the budget.
        let reserve = self.config.cleanup_timeout.min(ctx.remaining() / 2);
        let work = ctx.remaining().saturating_sub(reserve);
        // Declared outside the raced future: whatever happens to that future, the scratch
        // database is dropped below (or, if this future itself is dropped, by its guard).
        let mut scratch: Option<Scratch> = None;
        let result = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => Ok(Outcome::error(
                ErrorKind::Cancelled,
                format!("migrations check {} cancelled", self.id),
            )),
            _ = tokio::time::sleep(work) => Ok(Outcome::error(
                ErrorKind::Timeout,
                format!(
                    "migrations check {} did not finish within {} (the rest of its budget, {}, \
                     is kept for dropping the scratch database)",
                    self.id,
                    humantime::format_duration(round_ms(work)),
                    humantime::format_duration(round_ms(reserve)),
                ),
            )),
            r = self.evaluate(ctx, &mut scratch) => r,
        };
        let left_behind = match scratch.take() {
            None => None,
            #[cfg(feature = "local-scratch")]
            Some(Scratch::Local(server)) => {
                // Stops the server and deletes its directory.
                drop(server);
                None
            }
            Some(Scratch::Target(s)) => {
                let name = s.name().to_string();
                // Within cleanup_timeout, and back before the runner gives up on the check.
                let budget = self
                    .config
                    .cleanup_timeout
                    .min(ctx.remaining().saturating_sub(Duration::from_millis(200)));
                match s.drop_now(budget).await {
                    Ok(_) => None,
                    Err(why) => Some((name, why)),
                }
            }
        };
        let Some((name, why)) = left_behind else {
            return result.map(|o| {
                o.with_measurements([Measurement::new(
                    "scratch_databases_left_behind",
                    0.0,
                    Unit::Count,
                )])
            });
        };
        // The verdict stands; the leftover is named.
        tracing::debug!(database = %name, error = %why, "scratch database left behind (named in the result)");
        ctx.detail("left_behind", name.clone());
        let note = format!("scratch database {name} was left behind: {why}; the next run drops it");
        match result {
            Ok(Outcome::Failed {
                message,
                measurements,
            }) => Ok(Outcome::Failed {
                message: format!("{message}; {note}"),
                measurements,
            }
            .with_measurements([Measurement::new(
                "scratch_databases_left_behind",
                1.0,
                Unit::Count,
            )])),
            Ok(Outcome::Error { kind, message }) => {
                Ok(Outcome::error(kind, format!("{message}; {note}")))
            }
            Ok(other) => Ok(other.with_measurements([Measurement::new(
                "scratch_databases_left_behind",
                1.0,
                Unit::Count,
            )])),
            Err(e) => Err(format!("{}; {note}", error_chain(&*e)).into()),
        }
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

#[cfg(feature = "local-scratch")]
mod local {
    //! A throwaway local PostgreSQL (testkit's launcher) for the scratch schema.

    use std::path::PathBuf;
    use std::time::Duration;

    use citadel_itest_testkit::Postgres;
    use sqlx::postgres::PgConnectOptions;

    /// A local server; dropping it stops the server and deletes its directory.
    pub(super) struct LocalServer {
        pg: Postgres,
    }

    impl LocalServer {
        /// Starts PostgreSQL `major` from `/usr/lib/postgresql/<major>/bin`, durability off
        /// (nothing in it is kept).
        pub(super) async fn start(major: u32, limit: Duration) -> Result<LocalServer, String> {
            let bin = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"));
            if !bin.join("postgres").is_file() || !bin.join("initdb").is_file() {
                return Err(format!(
                    "no local PostgreSQL {major} ({} missing; Debian package postgresql-{major})",
                    bin.display()
                ));
            }
            let start = Postgres::builder()
                .bin_dir(bin)
                .startup_timeout(limit)
                .setting("fsync", "off")
                .setting("full_page_writes", "off")
                .setting("synchronous_commit", "off")
                .start();
            match tokio::time::timeout(limit + Duration::from_secs(5), start).await {
                Ok(Ok(pg)) => Ok(LocalServer { pg }),
                Ok(Err(e)) => Err(format!("could not start a local PostgreSQL {major}: {e}")),
                Err(_) => Err(format!(
                    "a local PostgreSQL {major} did not start within {}",
                    humantime::format_duration(limit)
                )),
            }
        }

        /// Options for its default database.
        pub(super) fn options(&self) -> Result<PgConnectOptions, String> {
            crate::connect::parse_dsn(&self.pg.dsn())
                .map(|o| o.ssl_mode(sqlx::postgres::PgSslMode::Disable))
        }
    }
}
