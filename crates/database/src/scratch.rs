//! A uniquely named scratch database (`citadel_itest_<ms>_<rand>_<name>`) that is dropped on
//! success, failure, cancellation (explicitly, within a cleanup budget, retried) and on timeout
//! or panic (by its `Drop`); and the sweep that drops the ones earlier runs left behind.
//!
//! Names carry the creation time in milliseconds since the Unix epoch (13 digits, so they sort
//! by age) and four random base-36 characters. A leftover is a database whose name matches that
//! pattern exactly, whose time is before the current check started, that the connecting role
//! owns, that no check of this process is using, and that nobody is connected to: it is dropped
//! with a plain `DROP DATABASE` (without `FORCE`), which the server refuses while anyone is
//! connected, so a scratch database of a concurrent run is left alone.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use crate::connect::{connect_with, describe, sqlstate};
use crate::ident::quote_ident;

/// Prefix of every scratch database.
pub const SCRATCH_PREFIX: &str = "citadel_itest_";

/// Longest wait between two attempts to drop a scratch database.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Bound of the leftover sweep (it never delays a check by more).
const SWEEP_LIMIT: Duration = Duration::from_secs(10);

/// Scratch databases this process is using: the sweep never touches them.
static LIVE: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

fn live() -> std::sync::MutexGuard<'static, BTreeSet<String>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Four base-36 characters, different for each call.
fn random_tag() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(SEQ.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    let mut n = h.finish();
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    (0..4)
        .map(|_| {
            let c = DIGITS[(n % 36) as usize] as char;
            n /= 36;
            c
        })
        .collect()
}

/// `citadel_itest_<ms>_<rand>_<label>` within Postgres' 63 bytes, `[a-z0-9_]` only.
pub(crate) fn scratch_name(created_ms: u64, label: &str) -> String {
    let clean: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let mut name = format!("{SCRATCH_PREFIX}{created_ms:013}_{}_{clean}", random_tag());
    name.truncate(63);
    name
}

/// The creation time (ms) of a scratch database name of exactly the pattern
/// `citadel_itest_<13 digits>_<4 of [0-9a-z]>_<[a-z0-9_]*>`; `None` for any other name.
pub(crate) fn scratch_created_ms(name: &str) -> Option<u64> {
    let rest = name.strip_prefix(SCRATCH_PREFIX)?;
    let bytes = rest.as_bytes();
    if bytes.len() < 13 + 1 + 4 + 1 || name.len() > 63 {
        return None;
    }
    let (ms, rest) = rest.split_at(13);
    if !ms.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let rest = rest.strip_prefix('_')?;
    let (tag, rest) = rest.split_at(4);
    if !tag
        .bytes()
        .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    {
        return None;
    }
    let label = rest.strip_prefix('_')?;
    if !label
        .bytes()
        .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'_')
    {
        return None;
    }
    ms.parse().ok()
}

/// A scratch database that exists until [`ScratchDatabase::drop_now`] or its `Drop`.
pub(crate) struct ScratchDatabase {
    name: String,
    /// Options for the database the scratch one was created from (used to drop it).
    admin: PgConnectOptions,
    connect_timeout: Duration,
    cleanup: Duration,
    dropped: bool,
}

// Not derived: the admin options hold the password.
impl std::fmt::Debug for ScratchDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScratchDatabase")
            .field("name", &self.name)
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

/// How a drop went: `Ok(attempts)` or why it did not happen within the budget.
pub(crate) type DropResult = Result<u32, String>;

impl ScratchDatabase {
    /// Creates `name` through `admin_conn` (a connection to the database described by
    /// `admin`); dropping it later may take `cleanup`.
    pub(crate) async fn create(
        admin_conn: &mut PgConnection,
        admin: &PgConnectOptions,
        connect_timeout: Duration,
        cleanup: Duration,
        name: String,
    ) -> Result<ScratchDatabase, String> {
        live().insert(name.clone());
        if let Err(e) = sqlx::query(&format!("CREATE DATABASE {}", quote_ident(&name)))
            .execute(&mut *admin_conn)
            .await
        {
            live().remove(&name);
            return Err(format!("create scratch database {name}: {}", describe(&e)));
        }
        tracing::debug!(database = %name, "created scratch database");
        Ok(ScratchDatabase {
            name,
            admin: admin.clone(),
            connect_timeout,
            cleanup,
            dropped: false,
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Options for connecting to the scratch database.
    pub(crate) fn options(&self) -> PgConnectOptions {
        self.admin.clone().database(&self.name)
    }

    /// Drops the database now (terminating its connections) within `budget`, retried.
    pub(crate) async fn drop_now(mut self, budget: Duration) -> DropResult {
        self.dropped = true;
        let r = drop_database(&self.admin, self.connect_timeout, &self.name, budget).await;
        live().remove(&self.name);
        r
    }
}

/// `DROP DATABASE IF EXISTS name WITH (FORCE)` on a dedicated connection with
/// `statement_timeout` off (a drop that forces a slow checkpoint is not cancelled by the
/// server) and `lock_timeout` within the budget (a drop waiting for a lock is), retried with
/// backoff until `budget` is spent.
pub(crate) async fn drop_database(
    admin: &PgConnectOptions,
    connect_timeout: Duration,
    name: &str,
    budget: Duration,
) -> DropResult {
    let started = Instant::now();
    let mut attempts = 0u32;
    let mut last = String::from("no attempt fitted in the budget");
    loop {
        let left = budget.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        attempts += 1;
        let lock_ms = (left.as_millis() * 9 / 10).max(1);
        let work = async {
            let mut conn = connect_with("scratch admin", admin, connect_timeout.min(left))
                .await
                .map_err(|e| e.to_string())?;
            let settings = format!("SET statement_timeout = 0; SET lock_timeout = '{lock_ms}ms'");
            sqlx::Executor::execute(&mut conn, settings.as_str())
                .await
                .map_err(|e| describe(&e))?;
            sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(name)
            ))
            .execute(&mut conn)
            .await
            .map_err(|e| describe(&e))?;
            let _ = conn.close().await;
            Ok::<(), String>(())
        };
        match tokio::time::timeout(left, work).await {
            Ok(Ok(())) => {
                tracing::debug!(database = %name, attempts, "dropped scratch database");
                return Ok(attempts);
            }
            Ok(Err(e)) => last = e,
            Err(_) => {
                last = format!(
                    "DROP DATABASE did not finish within {}",
                    humantime::format_duration(budget)
                )
            }
        }
        let backoff = (Duration::from_millis(200) * 2u32.saturating_pow(attempts - 1))
            .min(MAX_BACKOFF)
            .min(budget.saturating_sub(started.elapsed()));
        tokio::time::sleep(backoff).await;
    }
    Err(format!(
        "{last} ({attempts} attempt{} within the cleanup budget of {})",
        if attempts == 1 { "" } else { "s" },
        humantime::format_duration(budget)
    ))
}

/// What the leftover sweep did.
#[derive(Debug, Default)]
pub(crate) struct Sweep {
    /// Leftovers dropped.
    pub(crate) dropped: Vec<String>,
    /// Leftovers kept, with why (in use, the drop failed).
    pub(crate) kept: Vec<String>,
}

/// Drops scratch databases earlier runs left behind on the server `conn` is connected to (see
/// the module docs for what counts as one): created before `before_ms`, owned by the current
/// role, not in use. Bounded by 10 s overall; never fails the check.
pub(crate) async fn sweep_leftovers(
    conn: &mut PgConnection,
    admin: &PgConnectOptions,
    connect_timeout: Duration,
    before_ms: u64,
) -> Sweep {
    let mut sweep = Sweep::default();
    let started = Instant::now();
    let names: Vec<String> = match tokio::time::timeout(
        SWEEP_LIMIT,
        sqlx::query_scalar(
            "SELECT d.datname::text FROM pg_database d \
             WHERE d.datname LIKE 'citadel\\_itest\\_%' \
               AND d.datdba = (SELECT oid FROM pg_roles WHERE rolname = current_user) \
             ORDER BY 1",
        )
        .fetch_all(&mut *conn),
    )
    .await
    {
        Ok(Ok(names)) => names,
        Ok(Err(e)) => {
            sweep.kept.push(format!(
                "could not list scratch databases: {}",
                describe(&e)
            ));
            return sweep;
        }
        Err(_) => {
            sweep
                .kept
                .push("could not list scratch databases: timed out".to_string());
            return sweep;
        }
    };
    for name in names {
        let Some(created) = scratch_created_ms(&name) else {
            continue;
        };
        if created >= before_ms || live().contains(&name) {
            continue;
        }
        let left = SWEEP_LIMIT.saturating_sub(started.elapsed());
        if left.is_zero() {
            sweep.kept.push(format!("{name}: no time left"));
            continue;
        }
        let work = async {
            let mut c = connect_with("scratch admin", admin, connect_timeout.min(left))
                .await
                .map_err(|e| e.to_string())?;
            let settings = format!(
                "SET statement_timeout = 0; SET lock_timeout = '{}ms'",
                (left.as_millis() * 9 / 10).max(1)
            );
            sqlx::Executor::execute(&mut c, settings.as_str())
                .await
                .map_err(|e| describe(&e))?;
            // No FORCE: the server refuses while anyone is connected.
            let r = sqlx::query(&format!("DROP DATABASE IF EXISTS {}", quote_ident(&name)))
                .execute(&mut c)
                .await;
            let _ = c.close().await;
            match r {
                Ok(_) => Ok(()),
                Err(e) if sqlstate(&e).as_deref() == Some("55006") => {
                    Err("in use (someone is connected to it)".to_string())
                }
                Err(e) => Err(describe(&e)),
            }
        };
        match tokio::time::timeout(left, work).await {
            Ok(Ok(())) => {
                tracing::info!(database = %name, "dropped a scratch database an earlier run left behind");
                sweep.dropped.push(name);
            }
            Ok(Err(e)) => sweep.kept.push(format!("{name}: {e}")),
            Err(_) => sweep.kept.push(format!("{name}: the drop timed out")),
        }
    }
    sweep
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // The check was dropped mid-way (timeout, panic, cancellation without grace): drop the
        // database in the background.
        let (admin, limit, name, budget) = (
            self.admin.clone(),
            self.connect_timeout,
            self.name.clone(),
            self.cleanup,
        );
        let cleanup = async move {
            if let Err(e) = drop_database(&admin, limit, &name, budget).await {
                tracing::debug!(database = %name, error = %e, "could not drop scratch database; the next run drops it");
            }
            live().remove(&name);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(cleanup);
            }
            Err(_) => {
                let _ = std::thread::Builder::new()
                    .name("citadel-itest-scratch-drop".into())
                    .spawn(move || {
                        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                        {
                            rt.block_on(cleanup);
                        }
                    })
                    .map(|h| h.join());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_safe_bounded_and_recognised() {
        let name = scratch_name(1_764_000_000_123, "main-db");
        assert!(name.starts_with("citadel_itest_1764000000123_"), "{name}");
        assert!(name.ends_with("_main_db"), "{name}");
        assert_eq!(scratch_created_ms(&name), Some(1_764_000_000_123));
        assert_ne!(name, scratch_name(1_764_000_000_123, "main-db"));
        let long = scratch_name(1, &"x".repeat(100));
        assert_eq!(long.len(), 63);
        assert_eq!(scratch_created_ms(&long), Some(1));
        for other in [
            "citadel_itest_r1a2b3c4_main",
            "citadel_itest_1764000000123_abcd",
            "citadel_itest_176400000012_abcd_x",
            "citadel_itest_1764000000123_ABCD_x",
            "citadel_itest_1764000000123_abcd_x-y",
            "citadel_itest_1764000000123_abc_x",
            "citadel_itest_1764000000123_abcd_X",
            "app",
        ] {
            assert_eq!(scratch_created_ms(other), None, "{other}");
        }
    }

    /// A check that panics while its scratch database exists: the guard drops it.
    #[tokio::test]
    async fn a_panic_drops_the_scratch_database() {
        let pg = citadel_itest_testkit::Postgres::start().await.unwrap();
        let opts = crate::connect::parse_dsn(&pg.dsn()).unwrap();
        let limit = Duration::from_secs(10);
        let task = tokio::spawn(async move {
            let mut conn = connect_with("t", &opts, limit).await.unwrap();
            let guard = ScratchDatabase::create(
                &mut conn,
                &opts,
                limit,
                limit,
                "citadel_itest_rpanic_t".to_string(),
            )
            .await
            .unwrap();
            assert_eq!(guard.name(), "citadel_itest_rpanic_t");
            panic!("the check blew up");
        });
        assert!(task.await.unwrap_err().is_panic());
        let count = "SELECT count(*) FROM pg_database WHERE datname = 'citadel_itest_rpanic_t'";
        let mut left = String::new();
        for _ in 0..100 {
            left = pg.execute(count).await.unwrap().trim().to_string();
            if left == "0" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(left, "0", "the scratch database survived the panic");
    }
}
