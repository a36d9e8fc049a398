//! A uniquely named scratch database (`citadel_itest_<run>_<name>`) that is dropped on success,
//! failure, cancellation (explicitly) and on timeout or panic (by its `Drop`).

use std::time::Duration;

use citadel_itest_core::BoxError;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use crate::connect::{connect_with, describe};
use crate::ident::quote_ident;

/// Prefix of every scratch database.
pub const SCRATCH_PREFIX: &str = "citadel_itest_";

/// How long dropping a scratch database may take.
const DROP_LIMIT: Duration = Duration::from_secs(15);

/// A scratch database that exists until [`ScratchDatabase::drop_now`] or its `Drop`.
pub(crate) struct ScratchDatabase {
    name: String,
    /// Options for the database the scratch one was created from (used to drop it).
    admin: PgConnectOptions,
    connect_timeout: Duration,
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

/// `citadel_itest_<run>_<label>` within Postgres' 63 bytes, `[a-z0-9_]` only.
pub(crate) fn scratch_name(run: &str, label: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect()
    };
    let mut name = format!("{SCRATCH_PREFIX}{}_{}", clean(run), clean(label));
    name.truncate(63);
    name
}

impl ScratchDatabase {
    /// Creates `name` through `admin_conn` (a connection to the database described by `admin`).
    pub(crate) async fn create(
        admin_conn: &mut PgConnection,
        admin: &PgConnectOptions,
        connect_timeout: Duration,
        name: String,
    ) -> Result<ScratchDatabase, BoxError> {
        sqlx::query(&format!("CREATE DATABASE {}", quote_ident(&name)))
            .execute(&mut *admin_conn)
            .await
            .map_err(|e| format!("create scratch database {name}: {}", describe(&e)))?;
        tracing::debug!(database = %name, "created scratch database");
        Ok(ScratchDatabase {
            name,
            admin: admin.clone(),
            connect_timeout,
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

    /// Drops the database now (terminating its connections) and waits for it.
    pub(crate) async fn drop_now(mut self) -> Result<(), BoxError> {
        self.dropped = true;
        drop_database(&self.admin, self.connect_timeout, &self.name).await
    }
}

async fn drop_database(
    admin: &PgConnectOptions,
    connect_timeout: Duration,
    name: &str,
) -> Result<(), BoxError> {
    let work = async {
        let mut conn = connect_with("scratch admin", admin, connect_timeout).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(name)
        ))
        .execute(&mut conn)
        .await
        .map_err(|e| format!("drop scratch database {name}: {}", describe(&e)))?;
        let _ = conn.close().await;
        tracing::debug!(database = %name, "dropped scratch database");
        Ok::<(), BoxError>(())
    };
    match tokio::time::timeout(DROP_LIMIT, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("drop scratch database {name}: timed out").into()),
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // The check was dropped mid-way (timeout, panic, cancellation without grace): drop the
        // database in the background.
        let (admin, limit, name) = (self.admin.clone(), self.connect_timeout, self.name.clone());
        let cleanup = async move {
            if let Err(e) = drop_database(&admin, limit, &name).await {
                tracing::warn!(database = %name, error = %e, "could not drop scratch database");
            }
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
    fn names_are_safe_and_bounded() {
        assert_eq!(
            scratch_name("r1a2b3", "main-db"),
            "citadel_itest_r1a2b3_main_db"
        );
        let long = scratch_name("r1", &"x".repeat(100));
        assert_eq!(long.len(), 63);
        assert!(long.starts_with(SCRATCH_PREFIX));
    }

    /// A check that panics while its scratch database exists: the guard drops it.
    #[tokio::test]
    async fn a_panic_drops_the_scratch_database() {
        let pg = citadel_itest_testkit::Postgres::start().await.unwrap();
        let opts = crate::connect::parse_dsn(&pg.dsn()).unwrap();
        let limit = Duration::from_secs(10);
        let task = tokio::spawn(async move {
            let mut conn = connect_with("t", &opts, limit).await.unwrap();
            let guard =
                ScratchDatabase::create(&mut conn, &opts, limit, scratch_name("rpanic", "t"))
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
