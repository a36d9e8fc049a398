//! Connection options from configuration, bounded connects, and short words for sqlx errors.

use std::io;
use std::str::FromStr;
use std::time::Duration;

use citadel_itest_core::config::{redact_text, register_secret};
use citadel_itest_core::{BoxError, error_chain};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};

use crate::config::DatabaseTarget;

/// Parses a `postgres://` DSN. The error never contains the password.
pub(crate) fn parse_dsn(raw: &str) -> Result<PgConnectOptions, String> {
    let url = url::Url::parse(raw).map_err(|e| {
        format!("not a URL ({e}): expected postgres://user:password@host:port/database")
    })?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(format!(
            "scheme `{}` is not postgres:// or postgresql://",
            url.scheme()
        ));
    }
    if let Some(pw) = url.password() {
        register_secret(pw);
        if let Ok(decoded) = percent_decode(pw) {
            register_secret(&decoded);
        }
    }
    PgConnectOptions::from_str(raw).map_err(|e| redact_text(&error_chain(&e)))
}

pub(crate) fn percent_decode(s: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out)
}

/// Builds connections to one configured database. Secrets are resolved when a check runs.
#[derive(Debug, Clone)]
pub(crate) struct Connector {
    pub(crate) name: String,
    target: DatabaseTarget,
}

impl Connector {
    pub(crate) fn new(target: &DatabaseTarget) -> Self {
        Connector {
            name: target.name.clone(),
            target: target.clone(),
        }
    }

    pub(crate) fn target(&self) -> &DatabaseTarget {
        &self.target
    }

    /// Options with every setting but the application name.
    pub(crate) fn base_options(&self) -> Result<PgConnectOptions, BoxError> {
        let t = &self.target;
        let mut opts = match &t.dsn {
            Some(dsn) => {
                let raw = dsn
                    .resolve()
                    .map_err(|e| format!("database {}: dsn: {}", self.name, error_chain(&e)))?;
                parse_dsn(raw.expose()).map_err(|e| format!("database {}: dsn: {e}", self.name))?
            }
            None => {
                let user = t.user.as_deref().unwrap_or_default();
                let mut o = PgConnectOptions::new_without_pgpass()
                    .host(t.host.as_deref().unwrap_or("127.0.0.1"))
                    .port(t.port.unwrap_or(5432))
                    .username(user)
                    .database(t.database.as_deref().unwrap_or(user));
                if let Some(pw) = &t.password {
                    let pw = pw.resolve().map_err(|e| {
                        format!("database {}: password: {}", self.name, error_chain(&e))
                    })?;
                    o = o.password(pw.expose());
                }
                o.ssl_mode(sqlx::postgres::PgSslMode::Prefer)
            }
        };
        if let Some(mode) = t.sslmode {
            opts = opts.ssl_mode(mode.to_sqlx());
        }
        let ms = t.statement_timeout.as_millis().max(1);
        Ok(opts
            .options([("statement_timeout", format!("{ms}ms"))])
            .statement_cache_capacity(0)
            .disable_statement_logging())
    }

    /// Options for connections named `application_name` in `pg_stat_activity`.
    pub(crate) fn options(&self, application_name: &str) -> Result<PgConnectOptions, BoxError> {
        Ok(self.base_options()?.application_name(application_name))
    }

    /// `host:port/database` for messages.
    pub(crate) fn endpoint(opts: &PgConnectOptions) -> String {
        format!(
            "{}:{}/{}",
            opts.get_host(),
            opts.get_port(),
            opts.get_database().unwrap_or(opts.get_username())
        )
    }

    /// One connection, bounded by `connect_timeout`.
    pub(crate) async fn connect(&self, application_name: &str) -> Result<PgConnection, BoxError> {
        let opts = self.options(application_name)?;
        connect_with(&self.name, &opts, self.target.connect_timeout).await
    }

    /// A pool of at most `max` connections that waits `acquire_timeout` for one; it connects
    /// lazily.
    pub(crate) fn pool(
        &self,
        application_name: &str,
        max: u32,
        acquire_timeout: Duration,
    ) -> Result<PgPool, BoxError> {
        let opts = self.options(application_name)?;
        Ok(PgPoolOptions::new()
            .max_connections(max)
            .min_connections(0)
            .acquire_timeout(acquire_timeout)
            .test_before_acquire(true)
            .connect_lazy_with(opts))
    }

    /// The application name of a check's connection: `<application_name>/<what>`.
    pub(crate) fn app_name(&self, what: &str) -> String {
        let name = format!("{}/{what}", self.target.application_name);
        // Postgres keeps 63 bytes; cut on a character boundary.
        let mut end = name.len().min(63);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name[..end].to_string()
    }
}

/// Connects with `opts`, bounded by `limit`; errors name the database and the endpoint.
pub(crate) async fn connect_with(
    name: &str,
    opts: &PgConnectOptions,
    limit: Duration,
) -> Result<PgConnection, BoxError> {
    let endpoint = Connector::endpoint(opts);
    match tokio::time::timeout(limit, PgConnection::connect_with(opts)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => {
            Err(format!("connect to database {name} at {endpoint}: {}", describe(&e)).into())
        }
        Err(_) => Err(format!(
            "connect to database {name} at {endpoint}: timed out after {}",
            humantime::format_duration(limit)
        )
        .into()),
    }
}

/// Short, redacted words for a sqlx error: `connection refused`,
/// `password authentication failed for user "x" (SQLSTATE 28P01)`.
pub(crate) fn describe(err: &sqlx::Error) -> String {
    let text = match err {
        sqlx::Error::Io(e) => io_words(e),
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("{} (SQLSTATE {code})", db.message()),
            None => db.message().to_string(),
        },
        sqlx::Error::PoolTimedOut => "timed out waiting for a connection from the pool".into(),
        sqlx::Error::PoolClosed => "the pool was closed".into(),
        other => error_chain(other),
    };
    redact_text(&text)
}

/// The SQLSTATE of a database error.
pub(crate) fn sqlstate(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

fn io_words(err: &io::Error) -> String {
    citadel_itest_core::io_error_text(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_errors_hide_the_password() {
        let err = parse_dsn("mysql://u:hunter2hunter2@127.0.0.1/db").unwrap_err();
        assert!(err.contains("mysql"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = parse_dsn("postgres://u:pa%20ss@127.0.0.1:x/db").unwrap_err();
        assert!(!err.contains("pa%20ss") && !err.contains("pa ss"), "{err}");
        let ok = parse_dsn("postgres://u:p%40ss@127.0.0.1:5433/app?sslmode=disable").unwrap();
        assert_eq!(Connector::endpoint(&ok), "127.0.0.1:5433/app");
        assert_eq!(redact_text("x p@ss y"), "x <redacted> y");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%40").unwrap(), "a b@");
        assert_eq!(percent_decode("100%").unwrap(), "100%");
    }
}
