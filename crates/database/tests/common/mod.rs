//! Shared fixtures: a real PostgreSQL per test (testkit), a fresh database per scenario, and
//! helpers to look at results.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use citadel_itest_core::config::Secret;
use citadel_itest_core::{Check, Status, TestResult, run_one};
use citadel_itest_database::DatabaseTarget;
use citadel_itest_testkit::Postgres;

/// A small chat application: users, sessions, messages, with keys, indexes and RLS.
pub const CHAT_SQL: &str = r#"
CREATE SCHEMA auth;
CREATE SCHEMA chat;
CREATE TABLE auth.users (
    id uuid NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    email text NOT NULL UNIQUE,
    api_key text,
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE auth.users ENABLE ROW LEVEL SECURITY;
CREATE TABLE chat.sessions (
    id uuid NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    title varchar(200),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sessions_user_id_idx ON chat.sessions (user_id);
CREATE TABLE chat.messages (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id uuid NOT NULL REFERENCES chat.sessions (id) ON DELETE CASCADE,
    role text NOT NULL CONSTRAINT messages_role_check CHECK (role IN ('user', 'assistant')),
    content text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_session_id_idx ON chat.messages (session_id);
"#;

/// Exactly what [`CHAT_SQL`] creates.
pub const CHAT_YAML: &str = r#"
schemas:
  auth:
    tables:
      users:
        columns:
          id: uuid NOT NULL DEFAULT gen_random_uuid()
          email: text NOT NULL
          api_key: text
          created_at: timestamptz NOT NULL DEFAULT now()
        primary_key: [id]
        unique: [[email]]
        row_level_security: true
  chat:
    tables:
      sessions:
        columns:
          id: uuid NOT NULL DEFAULT gen_random_uuid()
          user_id: uuid NOT NULL
          title: varchar(200)
          created_at: timestamptz NOT NULL DEFAULT now()
        primary_key: [id]
        foreign_keys:
          - { columns: [user_id], references: auth.users(id), on_delete: cascade }
        indexes: [[user_id]]
      messages:
        columns:
          id: { type: bigint, not_null: true, identity: always }
          session_id: uuid NOT NULL
          role: text NOT NULL
          content: text NOT NULL
          created_at: timestamptz NOT NULL DEFAULT now()
        primary_key: [id]
        foreign_keys:
          - { columns: [session_id], references: chat.sessions(id), on_delete: cascade }
        indexes: [[session_id]]
        checks: [messages_role_check]
"#;

/// One PostgreSQL server for a test.
pub struct Server {
    pub pg: Postgres,
}

impl Server {
    pub async fn start() -> Server {
        Server {
            pg: Postgres::start().await.expect("start postgres"),
        }
    }

    /// A fresh database `name` with `sql` applied; its config target is named `db`.
    pub async fn database(&self, name: &str, sql: &str) -> Db {
        let dsn = self
            .pg
            .create_database(name)
            .await
            .expect("create database");
        if !sql.trim().is_empty() {
            self.psql(name, sql).await;
        }
        Db {
            name: name.to_string(),
            dsn,
        }
    }

    /// Runs SQL in `database` (psql, one transaction), panicking with psql's error on failure.
    pub async fn psql(&self, database: &str, sql: &str) -> String {
        self.pg
            .execute_in(database, &format!("BEGIN;\n{sql}\nCOMMIT;"))
            .await
            .unwrap_or_else(|e| panic!("psql in {database}: {e}"))
    }

    /// A single value.
    pub async fn scalar(&self, database: &str, sql: &str) -> String {
        self.pg
            .execute_in(database, sql)
            .await
            .unwrap_or_else(|e| panic!("psql in {database}: {e}"))
            .trim()
            .to_string()
    }

    /// Names of databases starting with `citadel_itest_`.
    pub async fn scratch_databases(&self) -> Vec<String> {
        self.scalar(
            "postgres",
            "SELECT string_agg(datname, ',') FROM pg_database WHERE datname LIKE 'citadel\\_itest\\_%'",
        )
        .await
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
    }

    /// md5 over every row of every user table of `database`, table by table.
    pub async fn checksum(&self, database: &str) -> String {
        let tables = self
            .scalar(
                database,
                "SELECT string_agg(format('%I.%I', schemaname, relname), ',' ORDER BY 1) \
                 FROM pg_stat_user_tables",
            )
            .await;
        let mut parts = Vec::new();
        for t in tables.split(',').filter(|s| !s.is_empty()) {
            let sum = self
                .scalar(
                    database,
                    &format!(
                        "SELECT count(*) || ':' || coalesce(md5(string_agg(md5(x::text), '' \
                         ORDER BY md5(x::text))), '-') FROM {t} x"
                    ),
                )
                .await;
            parts.push(format!("{t}={sum}"));
        }
        parts.join(" ")
    }
}

/// One database of the test server.
pub struct Db {
    pub name: String,
    pub dsn: String,
}

impl Db {
    /// A config target for this database (DSN given inline, as a secret).
    pub fn target(&self) -> DatabaseTarget {
        DatabaseTarget::new("db")
            .dsn(Secret::inline(self.dsn.clone()))
            .timeout(Duration::from_secs(60))
    }
}

/// Runs a check the way the suite would.
pub async fn run(check: &dyn Check) -> TestResult {
    let result = run_one(check).await;
    eprintln!(
        "{} -> {} {}",
        result.id,
        result.outcome.status(),
        result.outcome.message().unwrap_or("")
    );
    for m in result.outcome.measurements() {
        eprintln!("    {m}");
    }
    result
}

/// The check failed; returns its message.
#[track_caller]
pub fn failed(result: &TestResult) -> String {
    assert_eq!(
        result.outcome.status(),
        Status::Failed,
        "{} should fail: {:?}",
        result.id,
        result.outcome
    );
    result.outcome.message().unwrap_or_default().to_string()
}

/// The value of a measurement that must be there.
#[track_caller]
pub fn value(result: &TestResult, name: &str) -> f64 {
    result
        .measurement(name)
        .unwrap_or_else(|| panic!("{} has no measurement {name}", result.id))
        .value
        .unwrap_or_else(|| panic!("{} has {name} without a value", result.id))
}

/// Asserts that nothing in the result mentions `secret`.
#[track_caller]
pub fn assert_no_secret(result: &TestResult, secret: &str) {
    let text = format!("{result:?}");
    assert!(!text.contains(secret), "secret leaked: {text}");
}
