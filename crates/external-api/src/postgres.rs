//! PostgreSQL checks over sqlx (runtime query API only).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use citadel_itest_core::config::{SecretString, redact_text};
use citadel_itest_core::{CheckContext, ErrorKind, Measurement, Outcome, Unit, error_chain};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgSslMode};
use sqlx::{ConnectOptions, Connection, Row};
use tokio::time::Instant;

use crate::config::{PgEndpoint, Problem, SslMode};
use crate::support::{
    Cut, SilentListener, closed_loopback_port, count, flag, latency_measurements, ms,
    probe_setup_error, problems_outcome, resolve, tcp_connect, temp_name, timed_out, within,
    wrong_secret,
};
use crate::{Aspect, Common, POSTGRES_TLS, PostgresTarget, Settings};

const KIND: &str = "postgres";
const APPLICATION_NAME: &str = "citadel-itest";

/// One aspect of one PostgreSQL server, checked with real connections and queries.
///
/// - `configuration`: the target's settings (DSN, sslmode, pool, timeouts, password) are valid,
///   the password resolves, TLS is compiled in when sslmode requires it ([`POSTGRES_TLS`]), the
///   host resolves. Measures `dns_time`, `pool_size`, `tls_required`, `tls_available`.
/// - `connectivity`: TCP connect, TLS as configured, the protocol handshake and `SELECT 1`;
///   reports `server_version_num` and whether the session uses `tls`. Retries until ready.
/// - `authentication`: the configured credentials log in; with `require_auth`, a random wrong
///   password must be refused (SQLSTATE 28P01/28000): a server that lets it in fails the check.
/// - `operations`: in a transaction that is rolled back: create the temporary table
///   `citadel_itest_<run>_<name>_ops_<n>`, insert three rows, read them back, verify, roll back
///   and prove the table is gone. In read-only mode only `SELECT`s run in a `READ ONLY`
///   transaction and the check is skipped with that reason.
/// - `performance`: `samples` timed `SELECT 1` round trips through a pool of `pool_size`
///   connections (`pool_size` at a time): `latency_p50/p95/p99/max`, p95 held to
///   `performance_targets.latency_p95`.
/// - `error_handling`: a just-closed loopback port is refused ("connection refused"), a
///   loopback listener that never answers is cut at `connect_timeout`, the client then
///   connects to the server again, and malformed SQL yields SQLSTATE 42601 with the session
///   still usable.
///
/// [`POSTGRES_TLS`]: crate::POSTGRES_TLS
#[derive(Debug, Clone)]
pub struct PostgresCheck {
    common: Common,
    target: Arc<PostgresTarget>,
}

/// The most a cancelled check spends closing its session.
const CANCEL_CLEANUP: Duration = Duration::from_millis(500);

impl PostgresCheck {
    /// The `aspect` check of `target`.
    pub fn new(target: &PostgresTarget, aspect: Aspect, settings: &Settings) -> Self {
        PostgresCheck {
            common: Common::new(&target.name, target.timeout, aspect, settings),
            target: Arc::new(target.clone()),
        }
    }

    fn name(&self) -> &str {
        &self.common.name
    }

    /// Where to connect, or a harness error: the checks other than `configuration` cannot
    /// evaluate a misconfigured target.
    fn endpoint(&self) -> Result<PgEndpoint, Outcome> {
        self.target.endpoint().map_err(|problems| {
            Outcome::error(
                ErrorKind::Harness,
                misconfigured_message(self.name(), &problems),
            )
        })
    }

    fn password(&self, ep: &PgEndpoint) -> Result<Option<SecretString>, Outcome> {
        match &ep.password {
            None => Ok(None),
            Some(s) => s.resolve().map(Some).map_err(|e| {
                Outcome::error(
                    ErrorKind::Harness,
                    format!("{KIND} {}: password: {}", self.name(), error_chain(&e)),
                )
            }),
        }
    }

    fn options(
        &self,
        ep: &PgEndpoint,
        password: Option<&str>,
        at: Option<(&str, u16)>,
    ) -> PgConnectOptions {
        let (host, port) = at.unwrap_or((ep.host.as_str(), ep.port));
        let mut opts = PgConnectOptions::new_without_pgpass()
            .host(host)
            .port(port)
            .username(&ep.user)
            .database(&ep.database)
            .ssl_mode(ssl_mode(ep.sslmode))
            .application_name(APPLICATION_NAME)
            .disable_statement_logging();
        if let Some(root) = &ep.sslrootcert {
            opts = opts.ssl_root_cert(root);
        }
        if let Some(pw) = password {
            opts = opts.password(pw);
        }
        opts
    }

    fn connect_step(&self, ep: &PgEndpoint) -> String {
        format!("connect to {} at {}", self.name(), ep.addr())
    }

    /// Open one connection, bounded by `connect_timeout` and the deadline.
    async fn connect(
        &self,
        ctx: &CheckContext,
        opts: &PgConnectOptions,
        step: &str,
    ) -> Result<PgConnection, Outcome> {
        self.connect_mode(ctx, opts, step)
            .await
            .map(|(conn, _)| conn)
    }

    /// Open one connection like [`Self::connect`]; also returns the sslmode that got it
    /// (`require` when `allow` had to fall back to TLS).
    async fn connect_mode(
        &self,
        ctx: &CheckContext,
        opts: &PgConnectOptions,
        step: &str,
    ) -> Result<(PgConnection, PgSslMode), Outcome> {
        match within(
            ctx.deadline,
            self.target.connect_timeout,
            "connect_timeout",
            connect_with(opts),
        )
        .await
        {
            Err(cut) => Err(cut.outcome(step)),
            Ok(Err(e)) => Err(Outcome::failed(format!("{step}: {}", sqlx_error(&e)))),
            Ok(Ok(opened)) => Ok(opened),
        }
    }

    /// The options the performance check's pool connects with. The pool opens its connections
    /// with sqlx alone, whose `allow` never tries TLS, so with `allow` one connection settles
    /// whether the server insists on TLS first.
    async fn pool_options(
        &self,
        ctx: &CheckContext,
        ep: &PgEndpoint,
        opts: PgConnectOptions,
    ) -> Result<PgConnectOptions, Outcome> {
        if !matches!(opts.get_ssl_mode(), PgSslMode::Allow) {
            return Ok(opts);
        }
        let step = self.connect_step(ep);
        let (conn, mode) = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => return Err(Outcome::error(
                ErrorKind::Cancelled,
                format!("performance of {} cancelled", self.name()),
            )),
            r = self.connect_mode(ctx, &opts, &step) => r?,
        };
        self.close(conn).await;
        Ok(opts.ssl_mode(mode))
    }

    /// Run one query future, bounded by `request_timeout` and the deadline.
    async fn query<T>(
        &self,
        ctx: &CheckContext,
        step: &str,
        fut: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, Outcome> {
        match within(
            ctx.deadline,
            self.target.request_timeout,
            "request_timeout",
            fut,
        )
        .await
        {
            Err(cut) => Err(cut.outcome(step)),
            Ok(Err(e)) => Err(Outcome::failed(format!("{step}: {}", sqlx_error(&e)))),
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// Close politely (Terminate), bounded; a failure only means the socket is dropped.
    async fn close(&self, conn: PgConnection) {
        let _ = tokio::time::timeout(self.target.request_timeout, conn.close()).await;
    }

    /// After a cancellation: flush what sqlx queued (a ROLLBACK) and a Terminate without
    /// waiting for any answer, within [`CANCEL_CLEANUP`] (or the grace, if shorter); true when
    /// that went out. Either way the socket is closed.
    async fn close_on_cancel(&self, conn: PgConnection) -> bool {
        let bound = self.common.settings.cancel_grace.min(CANCEL_CLEANUP);
        matches!(tokio::time::timeout(bound, conn.close()).await, Ok(Ok(())))
    }

    async fn configuration(&self, ctx: &CheckContext) -> Result<Outcome, Outcome> {
        let problems = self.target.problems();
        if !problems.is_empty() {
            return Ok(problems_outcome(KIND, self.name(), &problems));
        }
        let ep = self.endpoint()?;
        if ep.sslmode.requires_tls() && !POSTGRES_TLS {
            return Ok(Outcome::failed(format!(
                "{KIND} {}: sslmode {} requires TLS, but this build has no PostgreSQL TLS \
                 (cargo feature `postgres-tls` of citadel-itest-external-api)",
                self.name(),
                ep.sslmode
            )));
        }
        let (_, dns_time) = resolve(
            &format!("resolve {} host {}", self.name(), ep.host),
            &ep.host,
            ep.port,
            ctx.deadline,
            self.target.connect_timeout,
        )
        .await?;
        Ok(Outcome::passed().with_measurements([
            Measurement::duration("dns_time", dns_time),
            count("pool_size", u64::from(self.target.pool_size)),
            Measurement::duration("connect_timeout", self.target.connect_timeout),
            Measurement::duration("request_timeout", self.target.request_timeout),
            flag("tls_required", ep.sslmode.requires_tls()),
            flag("tls_available", POSTGRES_TLS),
        ]))
    }

    async fn connectivity(&self, ctx: &CheckContext) -> Result<Outcome, Outcome> {
        let ep = self.endpoint()?;
        let password = self.password(&ep)?;
        let step = self.connect_step(&ep);
        let (addrs, dns_time) = resolve(
            &format!("resolve {} host {}", self.name(), ep.host),
            &ep.host,
            ep.port,
            ctx.deadline,
            self.target.connect_timeout,
        )
        .await?;
        let tcp_time = tcp_connect(
            &format!("connect to {} at", self.name()),
            &addrs,
            ctx.deadline,
            self.target.connect_timeout,
        )
        .await?;
        let started = Instant::now();
        let opts = self.options(&ep, password.as_ref().map(SecretString::expose), None);
        let mut conn = self.connect(ctx, &opts, &step).await?;
        let handshake_time = started.elapsed();

        let started = Instant::now();
        let one: i32 = self
            .query(ctx, &format!("SELECT 1 on {}", self.name()), async {
                sqlx::query("SELECT 1")
                    .fetch_one(&mut conn)
                    .await?
                    .try_get(0)
            })
            .await?;
        let query_time = started.elapsed();
        if one != 1 {
            return Ok(Outcome::failed(format!(
                "SELECT 1 on {} returned {one}",
                self.name()
            )));
        }
        let (version_num, version, tls): (String, String, Option<bool>) = self
            .query(ctx, &format!("read the server version of {}", self.name()), async {
                let row = sqlx::query(
                    "SELECT current_setting('server_version_num'), current_setting('server_version'), \
                     (SELECT ssl FROM pg_catalog.pg_stat_ssl WHERE pid = pg_catalog.pg_backend_pid())",
                )
                .fetch_one(&mut conn)
                .await?;
                Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
            })
            .await?;
        self.close(conn).await;
        let tls = tls.unwrap_or(false);
        ctx.detail("server_version", version.as_str());
        tracing::debug!(target_name = %self.name(), %version, tls, "postgres connected");
        let Ok(version_num) = version_num.trim().parse::<f64>() else {
            return Ok(Outcome::failed(format!(
                "{} reported server_version_num `{version_num}`, not a number",
                self.name()
            )));
        };
        if ep.sslmode.requires_tls() && !tls {
            return Ok(Outcome::failed(format!(
                "{step}: sslmode is {} but the session does not use TLS",
                ep.sslmode
            )));
        }
        Ok(Outcome::passed().with_measurements([
            Measurement::duration("dns_time", dns_time),
            Measurement::duration("tcp_connect_time", tcp_time),
            Measurement::duration("handshake_time", handshake_time),
            Measurement::duration("query_time", query_time),
            Measurement::new("server_version_num", version_num, Unit::Count),
            flag("tls", tls),
        ]))
    }

    async fn authentication(&self, ctx: &CheckContext) -> Result<Outcome, Outcome> {
        let ep = self.endpoint()?;
        let password = self.password(&ep)?;
        let step = self.connect_step(&ep);
        let started = Instant::now();
        let opts = self.options(&ep, password.as_ref().map(SecretString::expose), None);
        let mut conn = self
            .connect(ctx, &opts, &format!("log in as {}: {step}", ep.user))
            .await?;
        let login_time = started.elapsed();
        let user: String = self
            .query(
                ctx,
                &format!("SELECT current_user on {}", self.name()),
                async {
                    sqlx::query("SELECT current_user::text")
                        .fetch_one(&mut conn)
                        .await?
                        .try_get(0)
                },
            )
            .await?;
        self.close(conn).await;
        if user != ep.user {
            return Ok(Outcome::failed(format!(
                "{} logged {} in as `{user}`",
                self.name(),
                ep.user
            )));
        }
        let mut measurements = vec![Measurement::duration("login_time", login_time)];
        if !self.target.require_auth {
            measurements.push(flag("auth_enforced_checked", false));
            return Ok(Outcome::passed().with_measurements(measurements));
        }

        let wrong = wrong_secret();
        let opts = self.options(&ep, Some(&wrong), None);
        let probe = format!("log in as {} with a wrong password: {step}", ep.user);
        let started = Instant::now();
        match within(
            ctx.deadline,
            self.target.connect_timeout,
            "connect_timeout",
            connect_with(&opts),
        )
        .await
        {
            Err(cut) => Err(cut.outcome(&probe)),
            Ok(Ok((conn, _))) => {
                self.close(conn).await;
                Ok(Outcome::Failed {
                    message: format!(
                        "{} at {} let user {} in with a wrong password: authentication is not \
                         enforced (pg_hba.conf trusts this connection)",
                        self.name(),
                        ep.addr(),
                        ep.user
                    ),
                    measurements,
                })
            }
            Ok(Err(sqlx::Error::Database(db)))
                if matches!(db.code().as_deref(), Some("28P01" | "28000")) =>
            {
                measurements.push(Measurement::duration(
                    "wrong_password_rejection_time",
                    started.elapsed(),
                ));
                measurements.push(flag("auth_enforced_checked", true));
                Ok(Outcome::passed().with_measurements(measurements))
            }
            Ok(Err(e)) => Ok(Outcome::error(
                ErrorKind::Harness,
                format!(
                    "{probe}: expected an authentication failure (SQLSTATE 28P01), got: {}",
                    sqlx_error(&e)
                ),
            )),
        }
    }

    async fn operations(&self, ctx: &CheckContext) -> Result<Outcome, Outcome> {
        let ep = self.endpoint()?;
        let password = self.password(&ep)?;
        let opts = self.options(&ep, password.as_ref().map(SecretString::expose), None);
        let step = self.connect_step(&ep);
        let mut conn = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => return Err(Outcome::error(
                ErrorKind::Cancelled,
                format!("operations on {} cancelled while connecting", self.name()),
            )),
            r = self.connect(ctx, &opts, &step) => r?,
        };
        if self.common.settings.read_only {
            let started = Instant::now();
            let result = tokio::select! {
                biased;
                _ = ctx.cancel.cancelled() => None,
                r = self.read_only_selects(ctx, &mut conn) => Some(r),
            };
            let Some(result) = result else {
                self.close_on_cancel(conn).await;
                return Err(Outcome::error(
                    ErrorKind::Cancelled,
                    format!(
                        "operations on {} cancelled during its read-only SELECTs",
                        self.name()
                    ),
                ));
            };
            self.close(conn).await;
            result?;
            return Ok(Outcome::skipped(format!(
                "read-only mode (run.read_only: true): the write test on {} (a temporary table in \
                 a rolled-back transaction) was skipped; read-only SELECTs in a READ ONLY \
                 transaction passed in {:.1}ms",
                self.name(),
                ms(started.elapsed())
            )));
        }
        let table = temp_name(&self.common.settings.run_id, self.name(), "ops");
        let outcome = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => None,
            r = self.write_and_roll_back(ctx, &mut conn, &table) => Some(r),
        };
        match outcome {
            Some(result) => {
                self.close(conn).await;
                result
            }
            None => {
                // The transaction's guard was dropped with the body: sqlx queued its ROLLBACK.
                // Send it with a Terminate, without waiting for answers; the server rolls back
                // and drops temporary tables when the session ends either way.
                let message = if self.close_on_cancel(conn).await {
                    format!(
                        "operations on {} cancelled: the transaction was rolled back and the \
                         session closed (temporary table {table} does not outlive it)",
                        self.name()
                    )
                } else {
                    format!(
                        "operations on {} cancelled: the connection was dropped; the server \
                         rolls the transaction back and drops temporary table {table} when it \
                         notices",
                        self.name()
                    )
                };
                Ok(Outcome::error(ErrorKind::Cancelled, message))
            }
        }
    }

    async fn read_only_selects(
        &self,
        ctx: &CheckContext,
        conn: &mut PgConnection,
    ) -> Result<(), Outcome> {
        let name = self.name();
        self.query(ctx, &format!("BEGIN READ ONLY on {name}"), async {
            sqlx::query("BEGIN READ ONLY").execute(&mut *conn).await
        })
        .await?;
        let (db, user, relations): (String, String, i64) = self
            .query(ctx, &format!("read-only SELECTs on {name}"), async {
                let row = sqlx::query(
                    "SELECT current_database()::text, current_user::text, \
                     (SELECT count(*) FROM pg_catalog.pg_class)",
                )
                .fetch_one(&mut *conn)
                .await?;
                Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
            })
            .await?;
        self.query(ctx, &format!("ROLLBACK on {name}"), async {
            sqlx::query("ROLLBACK").execute(&mut *conn).await
        })
        .await?;
        if db.is_empty() || user.is_empty() || relations <= 0 {
            return Err(Outcome::failed(format!(
                "read-only SELECTs on {name} returned database `{db}`, user `{user}`, {relations} relations"
            )));
        }
        Ok(())
    }

    async fn write_and_roll_back(
        &self,
        ctx: &CheckContext,
        conn: &mut PgConnection,
        table: &str,
    ) -> Result<Outcome, Outcome> {
        let name = self.name();
        let quoted = format!("\"{table}\"");
        let rows: [(i32, &str, f64); 3] =
            [(1, "alpha", 0.25), (2, "beta", 0.5), (3, "gamma", 0.75)];
        let mut measurements = Vec::new();
        let total = Instant::now();

        let mut tx = self
            .query(ctx, &format!("BEGIN on {name}"), conn.begin())
            .await?;
        let started = Instant::now();
        self.query(
            ctx,
            &format!("create temporary table {table} on {name}"),
            async {
                sqlx::query(&format!(
                    "CREATE TEMPORARY TABLE {quoted} (id integer PRIMARY KEY, label text NOT NULL, \
                 score double precision NOT NULL) ON COMMIT DROP"
                ))
                .execute(&mut *tx)
                .await
            },
        )
        .await?;
        measurements.push(Measurement::duration("create_time", started.elapsed()));

        let started = Instant::now();
        for (id, label, score) in rows {
            self.query(ctx, &format!("insert into {table} on {name}"), async {
                sqlx::query(&format!(
                    "INSERT INTO {quoted} (id, label, score) VALUES ($1, $2, $3)"
                ))
                .bind(id)
                .bind(label)
                .bind(score)
                .execute(&mut *tx)
                .await
            })
            .await?;
        }
        measurements.push(Measurement::duration("insert_time", started.elapsed()));

        let started = Instant::now();
        let read: Vec<(i32, String, f64)> = self
            .query(ctx, &format!("read back {table} on {name}"), async {
                let rows = sqlx::query(&format!(
                    "SELECT id, label, score FROM {quoted} ORDER BY id"
                ))
                .fetch_all(&mut *tx)
                .await?;
                rows.iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                    .collect()
            })
            .await?;
        measurements.push(Measurement::duration("select_time", started.elapsed()));
        let expected: Vec<(i32, String, f64)> = rows
            .iter()
            .map(|(i, l, s)| (*i, (*l).to_string(), *s))
            .collect();
        if read != expected {
            return Err(Outcome::Failed {
                message: format!("{name}: read back {read:?} from {table}, expected {expected:?}"),
                measurements,
            });
        }
        measurements.push(count("rows_verified", read.len() as u64));

        let started = Instant::now();
        self.query(ctx, &format!("ROLLBACK on {name}"), tx.rollback())
            .await?;
        measurements.push(Measurement::duration("rollback_time", started.elapsed()));

        let left: i64 = self
            .query(
                ctx,
                &format!("look for {table} after ROLLBACK on {name}"),
                async {
                    sqlx::query("SELECT count(*) FROM pg_catalog.pg_class WHERE relname = $1")
                        .bind(table)
                        .fetch_one(&mut *conn)
                        .await?
                        .try_get(0)
                },
            )
            .await?;
        if left != 0 {
            return Err(Outcome::Failed {
                message: format!("{name}: temporary table {table} survived ROLLBACK"),
                measurements,
            });
        }
        measurements.push(Measurement::duration("operations_time", total.elapsed()));
        Ok(Outcome::passed().with_measurements(measurements))
    }

    async fn performance(&self, ctx: &CheckContext) -> Result<Outcome, Outcome> {
        let ep = self.endpoint()?;
        let password = self.password(&ep)?;
        let opts = self.options(&ep, password.as_ref().map(SecretString::expose), None);
        let opts = self.pool_options(ctx, &ep, opts).await?;
        let samples = self.common.settings.samples.max(1);
        let workers = self.target.pool_size.clamp(1, samples);
        let pool = PgPoolOptions::new()
            .max_connections(workers)
            .min_connections(0)
            .acquire_timeout(self.target.connect_timeout)
            .test_before_acquire(false)
            .connect_lazy_with(opts);
        let outcome = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => Err(Outcome::error(
                ErrorKind::Cancelled,
                format!("performance of {} cancelled", self.name()),
            )),
            r = self.round_trips(ctx, &pool, &ep, samples, workers) => r,
        };
        // Close politely but briefly: a connection still being opened is simply dropped.
        let bound = self
            .common
            .settings
            .cancel_grace
            .min(self.target.request_timeout)
            .min(Duration::from_secs(1));
        let _ = tokio::time::timeout(bound, pool.close()).await;
        outcome
    }

    async fn round_trips(
        &self,
        ctx: &CheckContext,
        pool: &PgPool,
        ep: &PgEndpoint,
        samples: u32,
        workers: u32,
    ) -> Result<Outcome, Outcome> {
        // Open the pool's connections (and prepare the statement on each) first, so the timed
        // round trips measure queries only.
        let started = Instant::now();
        let mut warm = tokio::task::JoinSet::new();
        for _ in 0..workers {
            let pool = pool.clone();
            warm.spawn(async move { pool.acquire().await });
        }
        let step = self.connect_step(ep);
        let mut held = Vec::new();
        while let Some(joined) = warm.join_next().await {
            match joined {
                Ok(Ok(mut conn)) => {
                    // Prepare the statement on every connection before timing it.
                    if let Err(e) = sqlx::query("SELECT 1").fetch_one(&mut *conn).await {
                        return Err(Outcome::failed(format!(
                            "SELECT 1 on {}: {}",
                            self.name(),
                            sqlx_error(&e)
                        )));
                    }
                    held.push(conn)
                }
                Ok(Err(sqlx::Error::PoolTimedOut)) => {
                    return Err(Cut::Limit {
                        after: self.target.connect_timeout,
                        key: "connect_timeout",
                    }
                    .outcome(&step));
                }
                Ok(Err(e)) => return Err(Outcome::failed(format!("{step}: {}", sqlx_error(&e)))),
                Err(e) => return Err(Outcome::error(ErrorKind::Harness, e.to_string())),
            }
        }
        drop(held);
        let warm_time = started.elapsed();

        let next = Arc::new(AtomicU32::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        let limit = self.target.request_timeout;
        let deadline = ctx.deadline;
        for _ in 0..workers {
            let pool = pool.clone();
            let next = next.clone();
            tasks.spawn(async move {
                let mut times = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= samples {
                        return Ok(times);
                    }
                    let started = Instant::now();
                    let r = within(deadline, limit, "request_timeout", async {
                        sqlx::query("SELECT 1")
                            .fetch_one(&pool)
                            .await?
                            .try_get::<i32, _>(0)
                    })
                    .await;
                    match r {
                        Ok(Ok(1)) => times.push(started.elapsed()),
                        Ok(Ok(v)) => return Err((n, times, RoundTrip::Wrong(v))),
                        Ok(Err(e)) => return Err((n, times, RoundTrip::Sql(e))),
                        Err(cut) => return Err((n, times, RoundTrip::Cut(cut))),
                    }
                }
            });
        }
        let mut times: Vec<Duration> = Vec::with_capacity(samples as usize);
        let mut failure = None;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(t)) => times.extend(t),
                Ok(Err((n, t, why))) => {
                    times.extend(t);
                    failure.get_or_insert((n, why));
                }
                Err(e) => return Err(Outcome::error(ErrorKind::Harness, e.to_string())),
            }
        }
        let limit = self.common.settings.latency_p95;
        let mut measurements = latency_measurements(&times, limit);
        measurements.push(count("connections", u64::from(workers)));
        measurements.push(Measurement::duration("pool_open_time", warm_time));
        if let Some((n, why)) = failure {
            let step = format!(
                "round trip {} of {samples} (SELECT 1) on {}",
                n + 1,
                self.name()
            );
            let outcome = match why {
                RoundTrip::Cut(Cut::Deadline) => return Err(timed_out(&step)),
                RoundTrip::Cut(cut) => cut.outcome(&step),
                RoundTrip::Sql(e) => Outcome::failed(format!("{step}: {}", sqlx_error(&e))),
                RoundTrip::Wrong(v) => Outcome::failed(format!("{step}: returned {v}")),
            };
            return Ok(Outcome::Failed {
                message: outcome.message().unwrap_or_default().to_string(),
                measurements,
            });
        }
        Ok(Outcome::from_measurements(measurements))
    }

    async fn error_handling(&self, ctx: &CheckContext) -> Result<Outcome, Outcome> {
        let ep = self.endpoint()?;
        let password = self.password(&ep)?;
        let pw = password.as_ref().map(SecretString::expose);
        let name = self.name();
        let limit = self.target.connect_timeout;
        let mut measurements = Vec::new();

        // 1. A wrong port: refused, and said so, well within the bound.
        let port = closed_loopback_port().map_err(|e| probe_setup_error("a closed port", &e))?;
        let step = format!("connect to a closed port 127.0.0.1:{port}");
        let started = Instant::now();
        let opts = self.options(&ep, pw, Some(("127.0.0.1", port)));
        match within(
            ctx.deadline,
            limit,
            "connect_timeout",
            PgConnection::connect_with(&opts),
        )
        .await
        {
            Err(Cut::Deadline) => return Err(timed_out(&step)),
            Err(cut) => {
                return Ok(Outcome::failed(format!(
                    "{step}: expected connection refused, got {}",
                    cut.outcome("no answer").message().unwrap_or_default()
                )));
            }
            Ok(Ok(conn)) => {
                self.close(conn).await;
                return Ok(Outcome::error(
                    ErrorKind::Harness,
                    format!("{step}: something started listening there; cannot probe"),
                ));
            }
            Ok(Err(sqlx::Error::Io(e))) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                measurements.push(Measurement::duration("refused_time", started.elapsed()));
            }
            Ok(Err(e)) => {
                return Ok(Outcome::failed(format!(
                    "{step}: expected connection refused, got {}",
                    sqlx_error(&e)
                )));
            }
        }

        // 2. A listener that never answers: cut at connect_timeout, not later.
        let silent = SilentListener::start()
            .await
            .map_err(|e| probe_setup_error("a silent listener", &e))?;
        let addr = silent.addr();
        let step = format!("connect to a listener that never answers at {addr}");
        let started = Instant::now();
        let opts = self.options(&ep, pw, Some(("127.0.0.1", addr.port())));
        match within(
            ctx.deadline,
            limit,
            "connect_timeout",
            PgConnection::connect_with(&opts),
        )
        .await
        {
            Err(Cut::Deadline) => return Err(timed_out(&step)),
            Err(Cut::Limit { .. }) => {
                let waited = started.elapsed();
                if waited > limit + Duration::from_secs(1) {
                    return Ok(Outcome::failed(format!(
                        "{step}: gave up after {:.0}ms, beyond connect_timeout {:.0}ms",
                        ms(waited),
                        ms(limit)
                    )));
                }
                measurements.push(Measurement::duration("silent_timeout", waited));
            }
            Ok(Ok(conn)) => {
                self.close(conn).await;
                return Ok(Outcome::error(
                    ErrorKind::Harness,
                    format!("{step}: the handshake completed; cannot probe"),
                ));
            }
            Ok(Err(e)) => {
                return Ok(Outcome::failed(format!(
                    "{step}: expected a timeout after {:.0}ms, got {}",
                    ms(limit),
                    sqlx_error(&e)
                )));
            }
        }
        drop(silent);

        // 3. The client recovers: a normal connection and query to the server succeed.
        let started = Instant::now();
        let opts = self.options(&ep, pw, None);
        let mut conn = self
            .connect(ctx, &opts, &format!("recover: {}", self.connect_step(&ep)))
            .await
            .map_err(|o| with_measurements(o, &measurements))?;
        self.query(ctx, &format!("recover: SELECT 1 on {name}"), async {
            sqlx::query("SELECT 1").fetch_one(&mut conn).await
        })
        .await
        .map_err(|o| with_measurements(o, &measurements))?;
        measurements.push(Measurement::duration("recovery_time", started.elapsed()));

        // 4. The server's own error for malformed SQL is recognised; the session survives it.
        let step = format!("malformed SQL on {name}");
        let started = Instant::now();
        let r = within(
            ctx.deadline,
            self.target.request_timeout,
            "request_timeout",
            async { sqlx::query("SELEC 1 FROM").execute(&mut conn).await },
        )
        .await;
        let verdict = match r {
            Err(cut) => Some(cut.outcome(&step)),
            Ok(Ok(_)) => Some(Outcome::failed(format!(
                "{step}: the server accepted `SELEC 1 FROM`"
            ))),
            Ok(Err(sqlx::Error::Database(db))) if db.code().as_deref() == Some("42601") => {
                measurements.push(Measurement::duration("sql_error_time", started.elapsed()));
                None
            }
            Ok(Err(e)) => Some(Outcome::failed(format!(
                "{step}: expected a syntax error (SQLSTATE 42601), got {}",
                sqlx_error(&e)
            ))),
        };
        if let Some(o) = verdict {
            self.close(conn).await;
            return Ok(with_measurements(o, &measurements));
        }
        let after = self
            .query(
                ctx,
                &format!("SELECT 1 on {name} after the syntax error"),
                async { sqlx::query("SELECT 1").fetch_one(&mut conn).await },
            )
            .await;
        self.close(conn).await;
        after.map_err(|o| with_measurements(o, &measurements))?;
        Ok(Outcome::passed().with_measurements(measurements))
    }
}

enum RoundTrip {
    Cut(Cut),
    Sql(sqlx::Error),
    Wrong(i32),
}

fn with_measurements(outcome: Outcome, measurements: &[Measurement]) -> Outcome {
    outcome.with_measurements(measurements.iter().cloned())
}

fn misconfigured_message(name: &str, problems: &[Problem]) -> String {
    let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
    format!(
        "cannot check {KIND} {name}: it is misconfigured: {}",
        list.join("; ")
    )
}

/// Opens one connection; returns it and the sslmode that got it.
///
/// sqlx treats `allow` as `disable` (it never tries TLS). libpq's `allow` tries plain first and,
/// when the server refuses that session (a `hostssl`-only `pg_hba.conf` answers "no
/// encryption"), tries again over TLS without verifying the certificate; so does this. If the
/// TLS attempt cannot even start (no TLS in this build or on the server), the plain attempt's
/// error is the one reported.
async fn connect_with(opts: &PgConnectOptions) -> Result<(PgConnection, PgSslMode), sqlx::Error> {
    let mode = opts.get_ssl_mode();
    let plain = match PgConnection::connect_with(opts).await {
        Ok(conn) => return Ok((conn, mode)),
        Err(e) => e,
    };
    if !matches!(mode, PgSslMode::Allow)
        || !POSTGRES_TLS
        || !matches!(plain, sqlx::Error::Database(_))
    {
        return Err(plain);
    }
    let tls = opts.clone().ssl_mode(PgSslMode::Require);
    match PgConnection::connect_with(&tls).await {
        Ok(conn) => Ok((conn, PgSslMode::Require)),
        Err(e @ sqlx::Error::Database(_)) => Err(e),
        Err(_) => Err(plain),
    }
}

fn ssl_mode(mode: SslMode) -> PgSslMode {
    match mode {
        SslMode::Disable => PgSslMode::Disable,
        SslMode::Allow => PgSslMode::Allow,
        SslMode::Prefer => PgSslMode::Prefer,
        SslMode::Require => PgSslMode::Require,
        SslMode::VerifyCa => PgSslMode::VerifyCa,
        SslMode::VerifyFull => PgSslMode::VerifyFull,
    }
}

/// Short words for a sqlx error: I/O kinds as fixed words, server errors with their SQLSTATE,
/// the rest as the redacted chain.
fn sqlx_error(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Io(io) => crate::support::io_error(io),
        sqlx::Error::Database(db) => redact_text(&match db.code() {
            Some(code) => format!("{} (SQLSTATE {code})", db.message()),
            None => db.message().to_string(),
        }),
        sqlx::Error::Tls(t) => format!("tls: {}", error_chain(t.as_ref())),
        sqlx::Error::PoolTimedOut => "no pooled connection within connect_timeout".to_string(),
        other => error_chain(other),
    }
}

service_check!(PostgresCheck, cleans_up: [Operations, Performance]);
