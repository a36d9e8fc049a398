//! What both test files share: the service started on a testkit PostgreSQL, and how the
//! database tester reaches that PostgreSQL.

#![allow(dead_code, unreachable_pub)]

use citadel_itest::database::DatabaseTarget;
use citadel_itest_testkit::Postgres;

/// The schema the service must have, in the database tester's format (docs/database.md).
/// `exact: true` also fails on anything undeclared in the `notes` schema.
pub const EXPECTED_SCHEMA: &str = r#"
schemas:
  notes:
    tables:
      notes:
        columns:
          id: { type: bigint, not_null: true, identity: always }
          body: text NOT NULL
          created_at: timestamptz NOT NULL DEFAULT now()
        primary_key: [id]
        indexes: [[created_at]]
        checks: [notes_body_check]
"#;

/// The service on a free loopback port, on its own fresh PostgreSQL.
pub struct Service {
    /// Stops (and deletes) the server when dropped.
    pub postgres: Postgres,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for Service {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Start PostgreSQL (testkit), apply the service's schema, serve the service.
pub async fn start() -> Service {
    let postgres = Postgres::start().await.expect("start a testkit PostgreSQL");
    let pool = sqlx::PgPool::connect(&postgres.dsn())
        .await
        .expect("connect to PostgreSQL");
    citadel_notes::migrate(&pool)
        .await
        .expect("apply the schema");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("local address"));
    let server = tokio::spawn(citadel_notes::serve(listener, pool));
    Service {
        postgres,
        url,
        server,
    }
}

/// The database tester's view of a testkit PostgreSQL: its URL, split into host, port, user,
/// password (a secret: never shown) and database.
pub fn database_target(postgres: &Postgres) -> DatabaseTarget {
    DatabaseTarget::from_url("notes", &postgres.dsn()).expect("a postgres:// URL")
}
