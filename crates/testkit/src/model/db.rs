//! The optional request log in PostgreSQL (feature `models-db`): one row per completed request
//! in `fixture_request_log`, written by one background task so the response path never waits
//! on the database.

use std::str::FromStr as _;
use std::time::Duration;

use sqlx::ConnectOptions as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tokio::sync::{mpsc, oneshot};

use super::routes::{Completed, Shared};
use crate::error::ErrorKind;

/// How many rows may wait for the writer; more are dropped (and counted in
/// `fixture_request_log_dropped_total`).
const QUEUE: usize = 4096;
/// Connecting, and creating the table, at start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// One insert.
const INSERT_TIMEOUT: Duration = Duration::from_secs(5);

/// Matches [`REQUEST_LOG_TABLE`](super::REQUEST_LOG_TABLE).
const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS fixture_request_log (
    request_id text NOT NULL,
    model text NOT NULL,
    backend_id text NOT NULL,
    prompt_tokens integer NOT NULL,
    completion_tokens integer NOT NULL,
    duration_ms double precision NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)";

const INSERT: &str = "INSERT INTO fixture_request_log \
    (request_id, model, backend_id, prompt_tokens, completion_tokens, duration_ms) \
    VALUES ($1, $2, $3, $4, $5, $6)";

enum Message {
    Row(Completed),
    Flush(oneshot::Sender<()>),
}

/// The handle requests write through.
#[derive(Debug, Clone)]
pub(crate) struct RequestLog {
    tx: mpsc::Sender<Message>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Row(row) => f.debug_tuple("Row").field(row).finish(),
            Self::Flush(_) => f.write_str("Flush"),
        }
    }
}

/// `host:port/database` of a PostgreSQL URL, without user or password, for messages.
pub(crate) fn describe_url(url: &str) -> Result<(PgConnectOptions, String), ErrorKind> {
    let invalid = || {
        ErrorKind::invalid(
            "database url",
            "not a PostgreSQL URL (postgres://user:password@host:port/database)",
        )
    };
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(invalid());
    }
    let options = PgConnectOptions::from_str(url).map_err(|_| invalid())?;
    let place = format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("")
    );
    Ok((options, place))
}

impl RequestLog {
    /// Connects, creates the table if needed (under an advisory lock, so backends starting
    /// together do not race) and starts the writer task.
    pub(crate) async fn connect(url: &str, backend_id: &str) -> Result<Self, ErrorKind> {
        let (options, place) = describe_url(url)?;
        let options = options.disable_statement_logging();
        let fail = |what: &str, e: sqlx::Error| {
            ErrorKind::io(
                format!("{what} (request log at {place})"),
                std::io::Error::other(e.to_string()),
            )
        };
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| fail("connect to postgres", e))?;
        let create = async {
            let mut tx = pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock(7243170231)")
                .execute(&mut *tx)
                .await?;
            sqlx::query(CREATE_TABLE).execute(&mut *tx).await?;
            tx.commit().await
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, create).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(fail("create table fixture_request_log", e)),
            Err(_) => {
                return Err(fail(
                    "create table fixture_request_log",
                    sqlx::Error::PoolTimedOut,
                ));
            }
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_rows(pool, rx, backend_id.to_owned()));
        Ok(Self { tx })
    }

    /// Queues a row; never waits. A full queue drops the row with a warning.
    pub(crate) fn record(&self, shared: &Shared, row: Completed) {
        if self.tx.try_send(Message::Row(row)).is_err() {
            shared.metrics.request_log_dropped();
            tracing::warn!("request log queue full or closed; row dropped");
        }
    }

    /// Waits until every row queued before this call was written (or failed).
    pub(crate) async fn flush(&self) -> Result<(), ErrorKind> {
        let (done, wait) = oneshot::channel();
        let gone = || {
            ErrorKind::io(
                "flush request log",
                std::io::Error::other("the writer task has stopped"),
            )
        };
        self.tx
            .send(Message::Flush(done))
            .await
            .map_err(|_| gone())?;
        wait.await.map_err(|_| gone())
    }
}

/// The writer: one insert at a time, each bounded by [`INSERT_TIMEOUT`]; failures are logged.
async fn write_rows(pool: PgPool, mut rx: mpsc::Receiver<Message>, backend_id: String) {
    while let Some(message) = rx.recv().await {
        match message {
            Message::Flush(done) => {
                let _ = done.send(());
            }
            Message::Row(row) => {
                let clamp = |n: u64| i32::try_from(n).unwrap_or(i32::MAX);
                let insert = sqlx::query(INSERT)
                    .bind(&row.request_id)
                    .bind(&row.model)
                    .bind(&backend_id)
                    .bind(clamp(row.prompt_tokens))
                    .bind(clamp(row.completion_tokens))
                    .bind(row.duration.as_secs_f64() * 1000.0)
                    .execute(&pool);
                match tokio::time::timeout(INSERT_TIMEOUT, insert).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(request_id = %row.request_id, error = %e, "request log insert failed");
                    }
                    Err(_) => {
                        tracing::warn!(request_id = %row.request_id, "request log insert timed out");
                    }
                }
            }
        }
    }
    pool.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_description_hides_the_password() {
        let (_, place) = describe_url("postgres://u:hunter2@127.0.0.1:5433/logs").unwrap();
        assert_eq!(place, "127.0.0.1:5433/logs");
        assert!(describe_url("mysql://x").is_err());
    }
}
