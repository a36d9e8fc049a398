//! A fresh database per test on a testkit server, like `#[sqlx::test]` (feature
//! `fresh-database`): [`Postgres::fresh_database`] and
//! [`Postgres::fresh_database_with_migrations`].

use std::fmt;
use std::path::Path;
use std::process::Stdio;
use std::str::FromStr as _;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sqlx::ConnectOptions as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};

use super::{DATABASE, Postgres, SERVICE};
use crate::error::{ErrorKind, TestkitError};
use crate::process;

/// How long dropping a database may take before `psql` is killed.
const DROP_LIMIT: Duration = Duration::from_secs(10);
/// How long the pool waits for a connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long applying a migrations directory may take.
const MIGRATE_LIMIT: Duration = Duration::from_secs(120);
/// Connections in a [`TestDatabase`]'s pool.
const POOL_SIZE: u32 = 5;
/// Longest kept part of a name hint (the whole name stays within Postgres' 63 bytes).
const MAX_HINT: usize = 40;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A database of its own for one test, on a [`Postgres`] server: a unique name, a URL, a sqlx
/// pool, and (with [`Postgres::fresh_database_with_migrations`]) the migrations applied.
///
/// It is dropped from the server by [`TestDatabase::cleanup`] (async, reports errors) or, when
/// the value is dropped without it (a failed assertion, a panic), synchronously in `Drop`
/// with `DROP DATABASE ... WITH (FORCE)`, bounded by 10 s. Should the whole test process die,
/// the server's watchdog removes the server and with it every database.
///
/// ```no_run
/// use citadel_itest_testkit::{Postgres, TestkitError};
///
/// # async fn example() -> Result<(), TestkitError> {
/// let pg = Postgres::start().await?;
/// let db = pg.fresh_database_with_migrations("orders", "migrations").await?;
/// let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM orders").fetch_one(db.pool()).await.unwrap();
/// println!("{} has {n} orders at {}", db.name(), db.url());
/// db.cleanup().await?;
/// # Ok(()) }
/// ```
pub struct TestDatabase {
    name: String,
    url: String,
    pool: PgPool,
    /// `psql ... -c 'DROP DATABASE ...'` on the server's `postgres` database; `None` once run.
    drop_command: Option<tokio::process::Command>,
}

impl fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestDatabase")
            .field("name", &self.name)
            .field("url", &"<redacted: has the password>")
            .field("dropped", &self.drop_command.is_none())
            .finish()
    }
}

impl TestDatabase {
    /// The database's name: the hint, a counter and a random suffix, e.g. `orders_3_9f1c2a7e`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `postgres://user:password@127.0.0.1:port/<name>`, for a tester's target
    /// (`DatabaseTarget::from_url("main", db.url())`) or the service under test.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A pool of up to 5 connections to the database (10 s acquire timeout).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the pool and drops the database (its other connections are terminated), within
    /// 10 s.
    pub async fn cleanup(mut self) -> Result<(), TestkitError> {
        let Some(cmd) = self.drop_command.take() else {
            return Ok(());
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), self.pool.close()).await;
        process::run_helper(cmd, "psql", DROP_LIMIT)
            .await
            .map(drop)
            .map_err(|kind| TestkitError::new("drop a test database on", SERVICE, kind))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(cmd) = self.drop_command.take() else {
            return;
        };
        // No await here: run psql to completion (bounded), whatever runtime we are on.
        let mut cmd = cmd.into_std();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let Ok(mut child) = cmd.spawn() else {
            return;
        };
        let started = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if started.elapsed() >= DROP_LIMIT => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

impl Postgres {
    /// Creates a database with a unique name made from `name_hint` (letters, digits and `_`
    /// kept, the rest turned into `_`, at most 40 bytes) and returns it with a pool. It is
    /// dropped by [`TestDatabase::cleanup`] or when the [`TestDatabase`] is dropped.
    pub async fn fresh_database(&self, name_hint: &str) -> Result<TestDatabase, TestkitError> {
        let name = unique_name(name_hint)
            .map_err(|kind| TestkitError::new("create a test database on", SERVICE, kind))?;
        let url = self.create_database(&name).await?;
        let mut drop_command = self.psql_command(DATABASE)?;
        drop_command.args([
            "-q",
            "-c",
            &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
        ]);
        let pool = match self.pool_for(&url).await {
            Ok(pool) => pool,
            Err(kind) => {
                let _ = process::run_helper(drop_command, "psql", DROP_LIMIT).await;
                return Err(TestkitError::new(
                    "connect to a test database on",
                    SERVICE,
                    kind,
                ));
            }
        };
        Ok(TestDatabase {
            name,
            url,
            pool,
            drop_command: Some(drop_command),
        })
    }

    /// Like [`Postgres::fresh_database`], then applies the migrations in `dir` with sqlx's
    /// migrator (files `<version>_<description>.sql`, or `.up.sql`/`.down.sql` pairs), within
    /// 120 s. A migration that fails drops the database and names the migration.
    pub async fn fresh_database_with_migrations(
        &self,
        name_hint: &str,
        dir: impl AsRef<Path>,
    ) -> Result<TestDatabase, TestkitError> {
        let dir = dir.as_ref();
        let fail = |what: String, e: String| {
            TestkitError::new(
                "apply migrations on",
                SERVICE,
                ErrorKind::io(what, std::io::Error::other(e)),
            )
        };
        let migrator = sqlx::migrate::Migrator::new(dir).await.map_err(|e| {
            fail(
                format!("read migrations in {}", dir.display()),
                e.to_string(),
            )
        })?;
        let db = self.fresh_database(name_hint).await?;
        match tokio::time::timeout(MIGRATE_LIMIT, migrator.run(db.pool())).await {
            Ok(Ok(())) => Ok(db),
            Ok(Err(e)) => Err(fail(
                format!("apply migrations in {} to {}", dir.display(), db.name()),
                e.to_string(),
            )),
            Err(_) => Err(fail(
                format!("apply migrations in {} to {}", dir.display(), db.name()),
                format!("not done within {MIGRATE_LIMIT:?}"),
            )),
        }
    }

    async fn pool_for(&self, url: &str) -> Result<PgPool, ErrorKind> {
        let mut options = PgConnectOptions::from_str(url)
            .map_err(|e| ErrorKind::io("read the test database url", std::io::Error::other(e)))?
            .disable_statement_logging();
        options = match self.ca_cert_path() {
            Some(ca) => options.ssl_mode(PgSslMode::VerifyFull).ssl_root_cert(ca),
            None => options.ssl_mode(PgSslMode::Disable),
        };
        PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| ErrorKind::io("connect", std::io::Error::other(e)))
    }
}

/// `<hint>_<counter>_<8 hex>`: unique within the process and, by the random part, across
/// processes sharing a server.
fn unique_name(hint: &str) -> Result<String, ErrorKind> {
    let mut kept: String = hint
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(MAX_HINT)
        .collect();
    if kept.is_empty() {
        kept.push_str("test");
    }
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    Ok(format!("{kept}_{n}_{}", process::random_hex(4)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_short_and_plain() {
        let a = unique_name("Orders API/v2").unwrap();
        let b = unique_name("Orders API/v2").unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("orders_api_v2_"), "{a}");
        let long = unique_name(&"x".repeat(200)).unwrap();
        assert!(long.len() <= 63, "{long}");
        assert!(unique_name("").unwrap().starts_with("test_"));
        assert!(
            unique_name("a\"; DROP")
                .unwrap()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        );
    }
}
