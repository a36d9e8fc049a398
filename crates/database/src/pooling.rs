//! `database.<name>.pooling`, `.headroom` and `.recovery`: the configured pool under
//! contention, room for every service's pools, and recovery after a server restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use citadel_itest_core::config::redact_text;
use citadel_itest_core::{
    BoxError, Category, Check, CheckContext, CheckId, Measurement, Outcome, Resource, Threshold,
    Unit, new_run_id,
};
use sqlx::postgres::PgPool;
use sqlx::{Connection as _, PgConnection, Row};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::{DatabaseTarget, HeadroomNeed, PoolConfig, PoolingConfig, RecoveryConfig};
use crate::connect::{Connector, describe};
use crate::schema::{base_timeout, cancellable};

/// How often the monitor samples `pg_stat_activity`.
const SAMPLE_EVERY: Duration = Duration::from_millis(5);
/// How long released connections may take to be back in the pool, idle.
const RETURN_GRACE: Duration = Duration::from_secs(2);
/// How long closed connections may take to leave `pg_stat_activity`.
const LEAK_GRACE: Duration = Duration::from_secs(5);

const COUNT_SQL: &str = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1";

/// Exercises the configured pool (`size + max_overflow` connections, `acquire_timeout`) with
/// more concurrent tasks than it holds, each acquiring a connection, holding it for `hold`
/// (`SELECT pg_sleep`) and releasing it, `iterations` times.
///
/// Measures `acquire_wait_p50`, `acquire_wait_p95`, `acquire_wait_max`, `acquire_timeouts`,
/// `acquire_errors`, and, from a separate connection polling `pg_stat_activity` every 5 ms for
/// the pool's unique `application_name` (`<application_name>/pool/<run>`),
/// `peak_server_connections`, which must stay within `size + max_overflow`. Afterwards every
/// connection must be back in the pool and idle, and once the pool is closed none may remain on
/// the server (`leaked_connections`). Fails listing each broken rule, e.g.
/// `12 of 60 acquisitions timed out after 1ms (pool.acquire_timeout)`.
#[derive(Debug, Clone)]
pub struct PoolingCheck {
    id: CheckId,
    connector: Arc<Connector>,
    pool: PoolConfig,
    pooling: PoolingConfig,
    timeout: Duration,
}

#[derive(Debug, Default)]
struct TaskReport {
    waits: Vec<Duration>,
    timeouts: u64,
    errors: Vec<String>,
}

impl PoolingCheck {
    /// The pooling check of `target` (its `pool`) with `pooling`'s workload.
    pub fn new(target: &DatabaseTarget, pooling: PoolingConfig) -> Self {
        Self::build(Arc::new(Connector::new(target)), pooling)
    }

    pub(crate) fn build(connector: Arc<Connector>, pooling: PoolingConfig) -> Self {
        let pool = connector.target().pool;
        PoolingCheck {
            id: CheckId::new(format!("database.{}.pooling", connector.name)),
            timeout: base_timeout(connector.target()) + pool.acquire_timeout,
            connector,
            pool,
            pooling,
        }
    }

    async fn evaluate(&self) -> Result<Outcome, BoxError> {
        let app = self.connector.app_name(&format!("pool/{}", new_run_id()));
        let max = self.pool.max_connections();
        let tasks = self.pooling.tasks_for(&self.pool);
        if tasks == 0 || self.pooling.iterations == 0 || max == 0 {
            return Err(
                "nothing to measure: pooling.tasks, pooling.iterations and pool.size must \
                        be at least 1"
                    .into(),
            );
        }
        let pool = self.connector.pool(&app, max, self.pool.acquire_timeout)?;
        let mut monitor = self
            .connector
            .connect(&self.connector.app_name("monitor"))
            .await?;

        let peak_server = AtomicU64::new(0);
        let peak_pool = Arc::new(AtomicU64::new(0));
        let (done_tx, mut done_rx) = tokio::sync::watch::channel(false);

        let mut set = JoinSet::new();
        for _ in 0..tasks {
            let pool = pool.clone();
            let peak_pool = peak_pool.clone();
            let (iterations, hold) = (self.pooling.iterations, self.pooling.hold);
            set.spawn(async move {
                let mut report = TaskReport::default();
                for _ in 0..iterations {
                    let started = Instant::now();
                    match pool.acquire().await {
                        Ok(mut conn) => {
                            report.waits.push(started.elapsed());
                            peak_pool.fetch_max(u64::from(pool.size()), Ordering::Relaxed);
                            if let Err(e) = sqlx::query("SELECT pg_sleep($1)")
                                .bind(hold.as_secs_f64())
                                .execute(&mut *conn)
                                .await
                            {
                                report.errors.push(describe(&e));
                            }
                        }
                        Err(sqlx::Error::PoolTimedOut) => report.timeouts += 1,
                        Err(e) => report.errors.push(describe(&e)),
                    }
                }
                report
            });
        }

        let workers = async {
            let mut all = TaskReport::default();
            let mut failed = None;
            while let Some(joined) = set.join_next().await {
                match joined {
                    Ok(r) => {
                        all.waits.extend(r.waits);
                        all.timeouts += r.timeouts;
                        all.errors.extend(r.errors);
                    }
                    Err(e) => failed = Some(format!("a pool task failed: {e}")),
                }
            }
            // Always stop the sampler, whatever happened to the tasks.
            let _ = done_tx.send(true);
            match failed {
                Some(e) => Err::<TaskReport, BoxError>(e.into()),
                None => Ok(all),
            }
        };
        let sampler = async {
            loop {
                let n: i64 = sqlx::query_scalar(COUNT_SQL)
                    .bind(&app)
                    .fetch_one(&mut monitor)
                    .await
                    .map_err(|e| format!("sample pg_stat_activity: {}", describe(&e)))?;
                peak_server.fetch_max(n.max(0) as u64, Ordering::Relaxed);
                if *done_rx.borrow() {
                    return Ok::<(), BoxError>(());
                }
                tokio::select! {
                    _ = tokio::time::sleep(SAMPLE_EVERY) => {}
                    _ = done_rx.changed() => {}
                }
            }
        };
        let (report, sampled) = tokio::join!(workers, sampler);
        let report = report?;
        sampled?;

        // Every connection back in the pool, idle on the server too. sqlx returns a released
        // connection from a background task, so give them a moment.
        let settle = Instant::now() + RETURN_GRACE;
        let (pool_size, idle, busy_on_server) = loop {
            let pool_size = pool.size();
            let idle = pool.num_idle() as u32;
            let busy: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
                 AND state IS DISTINCT FROM 'idle'",
            )
            .bind(&app)
            .fetch_one(&mut monitor)
            .await
            .map_err(|e| format!("read pg_stat_activity: {}", describe(&e)))?;
            if (idle >= pool_size && busy == 0) || Instant::now() >= settle {
                break (pool_size, idle, busy);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), pool.close()).await;
        let leaked = wait_until_gone(&mut monitor, &app).await?;
        let _ = monitor.close().await;

        let attempts = u64::from(tasks) * u64::from(self.pooling.iterations);
        let acquired = report.waits.len() as u64;
        let peak = peak_server.load(Ordering::Relaxed);
        let peak_client = peak_pool.load(Ordering::Relaxed);
        let limit = f64::from(max);
        let measurements = vec![
            Measurement::new("tasks", f64::from(tasks), Unit::Count),
            Measurement::new("acquisitions", acquired as f64, Unit::Count),
            Measurement::percentile_ms("acquire_wait_p50", &report.waits, 0.50),
            Measurement::percentile_ms("acquire_wait_p95", &report.waits, 0.95),
            Measurement::percentile_ms("acquire_wait_max", &report.waits, 1.0),
            Measurement::new("acquire_timeouts", report.timeouts as f64, Unit::Count)
                .with_threshold(Threshold::le(f64::from(self.pooling.max_acquire_timeouts))),
            Measurement::new("acquire_errors", report.errors.len() as f64, Unit::Count)
                .with_threshold(Threshold::le(0.0)),
            Measurement::new("peak_server_connections", peak as f64, Unit::Count)
                .with_threshold(Threshold::le(limit)),
            Measurement::new("peak_pool_connections", peak_client as f64, Unit::Count)
                .with_threshold(Threshold::le(limit)),
            Measurement::new("leaked_connections", leaked as f64, Unit::Count)
                .with_threshold(Threshold::le(0.0)),
        ];

        if acquired > 0 && peak == 0 {
            return Err(format!(
                "pg_stat_activity never showed a connection with application_name {app} although \
                 the pool served {acquired} acquisitions: the role cannot see its own sessions"
            )
            .into());
        }
        let mut problems = Vec::new();
        if report.timeouts > u64::from(self.pooling.max_acquire_timeouts) {
            problems.push(format!(
                "{} of {attempts} acquisitions timed out after {} (pool.acquire_timeout)",
                report.timeouts,
                humantime::format_duration(self.pool.acquire_timeout)
            ));
        }
        if let Some(first) = report.errors.first() {
            problems.push(format!(
                "{} of {attempts} acquisitions or queries failed, first: {first}",
                report.errors.len()
            ));
        }
        if peak > u64::from(max) {
            problems.push(format!(
                "peak of {peak} server connections exceeds pool.size + pool.max_overflow = {max}"
            ));
        }
        if idle < pool_size || busy_on_server > 0 {
            problems.push(format!(
                "{} of {pool_size} pooled connections were not back in the pool and idle {} after \
                 the tasks finished ({busy_on_server} not idle on the server)",
                pool_size - idle.min(pool_size),
                humantime::format_duration(RETURN_GRACE)
            ));
        }
        if leaked > 0 {
            problems.push(format!(
                "{leaked} server connections were still open {} after the pool closed",
                humantime::format_duration(LEAK_GRACE)
            ));
        }
        Ok(if problems.is_empty() {
            Outcome::from_measurements(measurements)
        } else {
            Outcome::Failed {
                message: redact_text(&problems.join("; ")),
                measurements,
            }
        })
    }
}

/// Waits (bounded) until no connection named `app` is left; returns how many remain.
async fn wait_until_gone(monitor: &mut PgConnection, app: &str) -> Result<u64, BoxError> {
    let deadline = Instant::now() + LEAK_GRACE;
    loop {
        let n: i64 = sqlx::query_scalar(COUNT_SQL)
            .bind(app)
            .fetch_one(&mut *monitor)
            .await
            .map_err(|e| format!("read pg_stat_activity: {}", describe(&e)))?;
        if n <= 0 || Instant::now() >= deadline {
            return Ok(n.max(0) as u64);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[async_trait]
impl Check for PoolingCheck {
    fn id(&self) -> &CheckId {
        &self.id
    }

    fn exclusive(&self) -> Vec<Resource> {
        vec![server_connections(&self.connector)]
    }

    fn category(&self) -> Category {
        Category::Pooling
    }

    fn timeout(&self) -> Option<Duration> {
        Some(self.timeout)
    }

    async fn run(&self, ctx: &CheckContext) -> Result<Outcome, BoxError> {
        cancellable(ctx, &format!("pooling check {}", self.id), self.evaluate()).await
    }
}

/// The connections of the server a target points at, as a resource the runner hands to one
/// check at a time: the pooling, headroom and recovery checks all count or change them.
/// `host:port` when configured; from a `dsn` when it resolves and parses; else the target name.
pub(crate) fn server_connections(connector: &Connector) -> Resource {
    let t = connector.target();
    let instance = match &t.dsn {
        None => format!(
            "{}:{}",
            t.host.as_deref().unwrap_or("127.0.0.1"),
            t.port.unwrap_or(5432)
        ),
        Some(dsn) => dsn
            .resolve()
            .ok()
            .and_then(|raw| url::Url::parse(raw.expose()).ok())
            .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port().unwrap_or(5432))))
            .unwrap_or_else(|| format!("database {}", connector.name)),
    };
    Resource::new("postgres-connections", &instance)
}

/// Whether the server has room for every pool: `max_connections` minus reserved slots minus
/// client connections in use (the harness's own excepted: every connection whose
/// `application_name` is the target's `application_name` or starts with it and `/`; they are
/// measured as `harness_connections`) must cover what the configured pools
/// need (`pooling.headroom`, each `replicas * (pool_size + max_overflow)`; default this
/// database's own `pool`). Measures `max_connections`, `reserved_connections`,
/// `connections_in_use`, `connections_free`, `connections_needed` and `headroom` (>= 0).
#[derive(Debug, Clone)]
pub struct HeadroomCheck {
    id: CheckId,
    connector: Arc<Connector>,
    needs: Vec<HeadroomNeed>,
    timeout: Duration,
}

impl HeadroomCheck {
    /// The headroom check of `target` for `needs` (empty: the target's own pool).
    pub fn new(target: &DatabaseTarget, needs: Vec<HeadroomNeed>) -> Self {
        Self::build(Arc::new(Connector::new(target)), needs)
    }

    pub(crate) fn build(connector: Arc<Connector>, mut needs: Vec<HeadroomNeed>) -> Self {
        if needs.is_empty() {
            let pool = connector.target().pool;
            needs.push(HeadroomNeed::new(
                format!("database {}", connector.name),
                pool.size,
                pool.max_overflow,
                1,
            ));
        }
        HeadroomCheck {
            id: CheckId::new(format!("database.{}.headroom", connector.name)),
            timeout: base_timeout(connector.target()),
            connector,
            needs,
        }
    }

    async fn evaluate(&self) -> Result<Outcome, BoxError> {
        let mut conn = self
            .connector
            .connect(&self.connector.app_name("headroom"))
            .await?;
        let row = sqlx::query(
            "SELECT current_setting('max_connections')::int8, \
                    current_setting('superuser_reserved_connections')::int8, \
                    coalesce(nullif(current_setting('reserved_connections', true), '')::int8, 0), \
                    (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' \
                       AND application_name <> $1 AND left(application_name, length($1) + 1) <> $1 || '/'), \
                    (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' \
                       AND (application_name = $1 OR left(application_name, length($1) + 1) = $1 || '/'))",
        )
        .bind(&self.connector.target().application_name)
        .fetch_one(&mut conn)
        .await
        .map_err(|e| {
            format!(
                "read connection settings of database {}: {}",
                self.connector.name,
                describe(&e)
            )
        })?;
        let _ = conn.close().await;
        let max: i64 = row.try_get(0)?;
        let su_reserved: i64 = row.try_get(1)?;
        let reserved: i64 = row.try_get(2)?;
        let in_use: i64 = row.try_get(3)?;
        let harness: i64 = row.try_get(4)?;
        let reserved_all = su_reserved + reserved;
        let free = max - reserved_all - in_use.max(0);
        let needed: u64 = self.needs.iter().map(HeadroomNeed::connections).sum();
        let needed = i64::try_from(needed).unwrap_or(i64::MAX);
        let headroom = free - needed;
        let measurements = vec![
            Measurement::new("max_connections", max as f64, Unit::Count),
            Measurement::new("reserved_connections", reserved_all as f64, Unit::Count),
            Measurement::new("connections_in_use", in_use.max(0) as f64, Unit::Count),
            Measurement::new("harness_connections", harness as f64, Unit::Count),
            Measurement::new("connections_free", free as f64, Unit::Count),
            Measurement::new("connections_needed", needed as f64, Unit::Count),
            Measurement::new("headroom", headroom as f64, Unit::Count)
                .with_threshold(Threshold::ge(0.0)),
        ];
        if headroom >= 0 {
            return Ok(Outcome::from_measurements(measurements));
        }
        let breakdown: Vec<String> = self
            .needs
            .iter()
            .map(|n| {
                format!(
                    "{} {} x ({} + {})",
                    n.service, n.replicas, n.pool_size, n.max_overflow
                )
            })
            .collect();
        Ok(Outcome::Failed {
            message: format!(
                "the pools need {needed} connections ({}) but only {free} are free \
                 (max_connections {max} - {reserved_all} reserved - {} in use)",
                breakdown.join(", "),
                in_use.max(0)
            ),
            measurements,
        })
    }
}

#[async_trait]
impl Check for HeadroomCheck {
    fn id(&self) -> &CheckId {
        &self.id
    }

    fn exclusive(&self) -> Vec<Resource> {
        vec![server_connections(&self.connector)]
    }

    fn category(&self) -> Category {
        Category::Pooling
    }

    fn timeout(&self) -> Option<Duration> {
        Some(self.timeout)
    }

    async fn run(&self, ctx: &CheckContext) -> Result<Outcome, BoxError> {
        cancellable(ctx, &format!("headroom check {}", self.id), self.evaluate()).await
    }
}

/// Restarts a disposable server with `pooling.recovery.restart_command` and measures how long
/// until the pool serves again.
///
/// Fills the pool with idle connections, runs the command (no shell; it must restart the server
/// and exit 0 within `timeout`), then queries through the same pool until it answers. The
/// server must really have restarted (`pg_postmaster_start_time()` changed), and a burst of
/// `pool.size` queries right after must not meet a dead connection. Measures `restart_time`
/// (the command), `recovery_time` (from the restart until the pool served), `failed_attempts`
/// and `stale_connection_errors` (must be 0). Skipped without a `restart_command`, and in
/// `run.read_only` mode.
#[derive(Debug, Clone)]
pub struct RecoveryCheck {
    id: CheckId,
    connector: Arc<Connector>,
    recovery: RecoveryConfig,
    read_only: bool,
    timeout: Duration,
}

impl RecoveryCheck {
    /// The recovery check of `target`. `read_only` skips it.
    pub fn new(target: &DatabaseTarget, recovery: RecoveryConfig, read_only: bool) -> Self {
        Self::build(Arc::new(Connector::new(target)), recovery, read_only)
    }

    pub(crate) fn build(
        connector: Arc<Connector>,
        recovery: RecoveryConfig,
        read_only: bool,
    ) -> Self {
        RecoveryCheck {
            id: CheckId::new(format!("database.{}.recovery", connector.name)),
            timeout: base_timeout(connector.target()) + recovery.timeout,
            connector,
            recovery,
            read_only,
        }
    }

    async fn evaluate(&self) -> Result<Outcome, BoxError> {
        if self.read_only {
            return Ok(Outcome::skipped(
                "run.read_only is set and the recovery check restarts the server",
            ));
        }
        if !self.recovery.disposable {
            return Ok(Outcome::skipped(
                "pooling.recovery.disposable is not true: the server is not marked disposable",
            ));
        }
        let Some(program) = self.recovery.restart_command.first() else {
            return Ok(Outcome::skipped(
                "no pooling.recovery.restart_command: give the command that restarts this \
                 disposable server (e.g. pg_ctl restart -D DATA -m fast -w)",
            ));
        };
        let args = &self.recovery.restart_command[1..];
        let shown = redact_text(&self.recovery.restart_command.join(" "));
        let pool_cfg = self.connector.target().pool;
        let app = self
            .connector
            .app_name(&format!("recovery/{}", new_run_id()));
        let attempt_limit = pool_cfg.acquire_timeout.min(Duration::from_secs(2));
        let pool = self
            .connector
            .pool(&app, pool_cfg.max_connections(), attempt_limit)?;

        let before = start_time(&pool).await.map_err(|e| {
            format!(
                "query database {} before the restart: {}",
                self.connector.name,
                describe(&e)
            )
        })?;
        // Fill the pool with idle connections that the restart will break.
        let warm = burst(&pool, pool_cfg.size).await;
        if warm > 0 {
            return Err(format!(
                "{warm} of {} queries failed before the restart",
                pool_cfg.size
            )
            .into());
        }

        let output = tempfile::NamedTempFile::new()?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .stdin(std::process::Stdio::null())
            .stdout(output.reopen()?)
            .stderr(output.reopen()?)
            .kill_on_drop(true);
        let started = Instant::now();
        let status = match tokio::time::timeout(self.recovery.timeout, cmd.status()).await {
            Err(_) => {
                return Err(format!(
                    "restart command `{shown}` did not finish within {}",
                    humantime::format_duration(self.recovery.timeout)
                )
                .into());
            }
            Ok(Err(e)) => return Err(format!("run restart command `{shown}`: {e}").into()),
            Ok(Ok(status)) => status,
        };
        let restart_time = started.elapsed();
        if !status.success() {
            let text = std::fs::read_to_string(output.path()).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(10).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(format!(
                "restart command `{shown}` failed with {status}: {}",
                redact_text(&tail.join(" | "))
            )
            .into());
        }

        let deadline = started + self.recovery.timeout;
        let mut failed_attempts = 0u64;
        let mut last_error = String::new();
        let after = loop {
            match tokio::time::timeout(attempt_limit, start_time(&pool)).await {
                Ok(Ok(t)) => break Some(t),
                Ok(Err(e)) => last_error = describe(&e),
                Err(_) => last_error = "timed out".to_string(),
            }
            failed_attempts += 1;
            if Instant::now() >= deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let recovery_time = started.elapsed();
        let mut measurements = vec![
            Measurement::duration("restart_time", restart_time),
            Measurement::new("failed_attempts", failed_attempts as f64, Unit::Count),
        ];
        let Some(after) = after else {
            pool.close().await;
            measurements.push(Measurement::missing("recovery_time", Unit::Milliseconds));
            return Ok(Outcome::Failed {
                message: format!(
                    "the pool did not serve again within {} of the restart ({failed_attempts} \
                     failed attempts, last: {last_error})",
                    humantime::format_duration(self.recovery.timeout)
                ),
                measurements,
            });
        };
        if after == before {
            pool.close().await;
            return Err(format!(
                "restart command `{shown}` exited 0 but the server did not restart \
                 (pg_postmaster_start_time() is still {before})"
            )
            .into());
        }
        let stale = burst(&pool, pool_cfg.size).await;
        pool.close().await;
        measurements.push(
            Measurement::duration("recovery_time", recovery_time)
                .with_threshold(Threshold::le(self.recovery.timeout.as_secs_f64() * 1000.0)),
        );
        measurements.push(
            Measurement::new("stale_connection_errors", stale as f64, Unit::Count)
                .with_threshold(Threshold::le(0.0)),
        );
        Ok(Outcome::from_measurements(measurements))
    }
}

async fn start_time(pool: &PgPool) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_postmaster_start_time()::text")
        .fetch_one(pool)
        .await
}

/// Runs `n` concurrent short queries through `pool`; returns how many failed.
async fn burst(pool: &PgPool, n: u32) -> u64 {
    let mut set = JoinSet::new();
    for _ in 0..n {
        let pool = pool.clone();
        set.spawn(async move {
            sqlx::query("SELECT pg_sleep(0.01)")
                .execute(&pool)
                .await
                .is_err()
        });
    }
    let mut failed = 0;
    while let Some(r) = set.join_next().await {
        if !matches!(r, Ok(false)) {
            failed += 1;
        }
    }
    failed
}

#[async_trait]
impl Check for RecoveryCheck {
    fn id(&self) -> &CheckId {
        &self.id
    }

    fn exclusive(&self) -> Vec<Resource> {
        vec![server_connections(&self.connector)]
    }

    fn category(&self) -> Category {
        Category::Pooling
    }

    fn timeout(&self) -> Option<Duration> {
        Some(self.timeout)
    }

    async fn run(&self, ctx: &CheckContext) -> Result<Outcome, BoxError> {
        cancellable(ctx, &format!("recovery check {}", self.id), self.evaluate()).await
    }
}
