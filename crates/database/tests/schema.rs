//! Schema validation against a real PostgreSQL: a matching schema passes, every kind of
//! difference fails with a message naming it, exact mode flags what is not declared.

mod common;

use std::path::Path;
use std::sync::Arc;

use citadel_itest_core::config::RunSettings;
use citadel_itest_core::{Category, Check, ErrorKind, IntegrationTester, Outcome, Status};
use citadel_itest_database::{
    DatabaseConfig, DatabaseSchemaCheck, DatabaseTarget, DatabaseTester, ExpectedSchema,
    SchemaCheck, SchemaConfig,
};
use common::{CHAT_SQL, CHAT_YAML, Server, assert_no_secret, failed, run, value};

fn chat_spec() -> Arc<ExpectedSchema> {
    Arc::new(ExpectedSchema::from_yaml(CHAT_YAML).expect("fixture yaml"))
}

#[tokio::test]
async fn a_schema_that_matches_its_yaml_passes_even_in_exact_mode() {
    let server = Server::start().await;
    let db = server.database("matching", CHAT_SQL).await;
    let spec = chat_spec();
    for exact in [false, true] {
        for ns in ["auth", "chat"] {
            let check = SchemaCheck::new(&db.target(), spec.clone(), ns).exact(exact);
            assert_eq!(check.id().as_str(), format!("database.db.schema.{ns}"));
            assert_eq!(check.category(), Category::Schema);
            let result = run(&check).await;
            result.assert_passed();
            assert_eq!(value(&result, "differences"), 0.0);
            assert!(value(&result, "catalog_read_time") > 0.0);
            assert_no_secret(&result, server.pg.password());
        }
    }
    assert!(
        value(
            &run(&SchemaCheck::new(&db.target(), spec, "chat").exact(true)).await,
            "tables"
        ) == 2.0
    );
}

/// Each deliberate difference, in its own database, fails with exactly one message naming it.
#[tokio::test]
async fn each_kind_of_difference_fails_with_a_message_naming_it() {
    let server = Server::start().await;
    let spec = chat_spec();
    let cases: [(&str, &str, &str, bool, &str); 12] = [
        (
            "missing_table",
            "chat",
            "DROP TABLE chat.messages;",
            false,
            "missing table chat.messages",
        ),
        (
            "wrong_type",
            "chat",
            "ALTER TABLE chat.sessions DROP CONSTRAINT sessions_user_id_fkey; \
             ALTER TABLE chat.sessions ALTER COLUMN user_id TYPE text, \
             ALTER COLUMN user_id DROP NOT NULL;",
            false,
            "column chat.sessions.user_id: expected uuid NOT NULL, found text NULL; \
             missing foreign key chat.sessions(user_id) -> auth.users(id)",
        ),
        (
            "nullable_column",
            "chat",
            "ALTER TABLE chat.messages ALTER COLUMN content DROP NOT NULL;",
            false,
            "column chat.messages.content: expected text NOT NULL, found text NULL",
        ),
        (
            "missing_index",
            "chat",
            "DROP INDEX chat.messages_session_id_idx;",
            false,
            "missing index chat.messages(session_id)",
        ),
        (
            "missing_fk",
            "chat",
            "ALTER TABLE chat.messages DROP CONSTRAINT messages_session_id_fkey;",
            false,
            "missing foreign key chat.messages(session_id) -> chat.sessions(id)",
        ),
        (
            "wrong_fk_action",
            "chat",
            "ALTER TABLE chat.messages DROP CONSTRAINT messages_session_id_fkey, \
             ADD FOREIGN KEY (session_id) REFERENCES chat.sessions (id);",
            false,
            "foreign key chat.messages(session_id) -> chat.sessions(id): expected ON DELETE \
             CASCADE, found ON DELETE NO ACTION",
        ),
        (
            "extra_table_exact",
            "chat",
            "CREATE TABLE chat.drafts (id int PRIMARY KEY);",
            true,
            "unexpected table chat.drafts",
        ),
        (
            "rls_off",
            "auth",
            "ALTER TABLE auth.users DISABLE ROW LEVEL SECURITY;",
            false,
            "table auth.users: expected row level security enabled, found disabled",
        ),
        (
            "missing_column",
            "auth",
            "ALTER TABLE auth.users DROP COLUMN api_key;",
            false,
            "missing column auth.users.api_key (text NULL)",
        ),
        (
            "changed_default",
            "chat",
            "ALTER TABLE chat.sessions ALTER COLUMN created_at SET DEFAULT clock_timestamp();",
            false,
            "column chat.sessions.created_at: expected default now(), found default clock_timestamp()",
        ),
        (
            "extra_column_and_index_exact",
            "chat",
            "ALTER TABLE chat.sessions ADD COLUMN nickname text; \
             CREATE INDEX sessions_title_idx ON chat.sessions (title);",
            true,
            "unexpected column chat.sessions.nickname (text NULL); unexpected index \
             chat.sessions(title) (sessions_title_idx)",
        ),
        (
            "missing_unique",
            "auth",
            "ALTER TABLE auth.users DROP CONSTRAINT users_email_key;",
            false,
            "missing unique constraint auth.users(email)",
        ),
    ];
    for (name, ns, alteration, exact, expected) in cases {
        let db = server
            .database(name, &format!("{CHAT_SQL}\n{alteration}"))
            .await;
        let result = run(&SchemaCheck::new(&db.target(), spec.clone(), ns).exact(exact)).await;
        assert_eq!(failed(&result), expected, "case {name}");
        let n = expected.split("; ").count() as f64;
        assert_eq!(value(&result, "differences"), n, "case {name}");
    }
}

#[tokio::test]
async fn a_missing_schema_and_a_missing_extension_are_named() {
    let server = Server::start().await;
    let db = server
        .database("partial", "CREATE EXTENSION pgcrypto; CREATE SCHEMA auth;")
        .await;
    let spec = Arc::new(
        ExpectedSchema::from_yaml(
            "extensions: [pgcrypto, vector, { name: plpgsql, version: '0.1' }]\n\
             schemas: { auth: {}, chat: {} }",
        )
        .unwrap(),
    );
    let result = run(&SchemaCheck::new(&db.target(), spec.clone(), "chat").exact(false)).await;
    assert_eq!(failed(&result), "missing schema chat");
    run(&SchemaCheck::new(&db.target(), spec.clone(), "auth").exact(false))
        .await
        .assert_passed();

    let check = DatabaseSchemaCheck::new(&db.target(), spec.clone()).exact(false);
    assert_eq!(check.id().as_str(), "database.db.schema");
    let message = failed(&run(&check).await);
    assert!(
        message.starts_with(
            "missing extension vector; extension plpgsql: expected version 0.1, found "
        ),
        "{message}"
    );

    // Exact mode also names what nobody declared.
    server
        .psql(
            "partial",
            "CREATE SCHEMA scratchpad; CREATE TABLE scratchpad.t (x int); CREATE EXTENSION hstore;",
        )
        .await;
    let spec = Arc::new(
        ExpectedSchema::from_yaml("extensions: [pgcrypto]\nschemas: { auth: {} }").unwrap(),
    );
    let message = failed(&run(&DatabaseSchemaCheck::new(&db.target(), spec).exact(true)).await);
    assert!(
        message.starts_with("unexpected extension hstore (version "),
        "{message}"
    );
    assert!(
        message.ends_with("; unexpected schema scratchpad (1 table)"),
        "{message}"
    );
}

/// The demo schema of the local stack applies twice (idempotent) and matches its declaration
/// in exact mode: nine schema checks and the database-wide one pass.
#[tokio::test]
async fn the_local_demo_schema_is_idempotent_and_matches_its_declaration() {
    let server = Server::start().await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let sql = std::fs::read_to_string(root.join("config/database/demo_schema.sql")).unwrap();
    let db = server.database("demo", "").await;
    for _ in 0..2 {
        let mut cmd = server.pg.psql_command("demo").unwrap();
        cmd.args(["-q", "-1", "-f"])
            .arg(root.join("config/database/demo_schema.sql"));
        let out = cmd.output().await.unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(sql.contains("CREATE SCHEMA IF NOT EXISTS monitoring"));
    let before = server.checksum("demo").await;

    let schema = SchemaConfig::file(root.join("config/database/expected_schema.yaml")).exact(true);
    let tester = DatabaseTester::new(DatabaseConfig::new().database(db.target().schema(schema)))
        .run_settings(&RunSettings::default());
    let checks = tester.checks();
    let ids: Vec<&str> = checks.iter().map(|c| c.id().as_str()).collect();
    assert_eq!(
        ids,
        [
            "database.db.schema",
            "database.db.schema.analytics",
            "database.db.schema.audit",
            "database.db.schema.auth",
            "database.db.schema.billing",
            "database.db.schema.chat",
            "database.db.schema.config",
            "database.db.schema.models",
            "database.db.schema.monitoring",
            "database.db.schema.rag",
        ]
    );
    for check in &checks {
        run(&**check).await.assert_passed();
    }
    assert_eq!(
        server.checksum("demo").await,
        before,
        "validation changed data"
    );
}

#[tokio::test]
async fn an_unreachable_database_is_a_harness_error_without_the_password() {
    let server = Server::start().await;
    let db = server.database("gone", "").await;

    // Wrong password: refused by the server, the password never printed.
    let target = DatabaseTarget::new("db")
        .port(server.pg.port())
        .user("citadel")
        .database("gone")
        .password(citadel_itest_core::config::Secret::inline(
            "not-the-password-123",
        ));
    let result = run(&SchemaCheck::new(&target, chat_spec(), "chat").exact(false)).await;
    let message = result.outcome.message().unwrap();
    assert_eq!(result.outcome.status(), Status::Error);
    assert!(
        message.starts_with(&format!(
            "connect to database db at 127.0.0.1:{}/gone: password authentication failed",
            server.pg.port()
        )),
        "{message}"
    );
    assert_no_secret(&result, "not-the-password-123");

    let mut pg = server.pg;
    pg.stop().await.unwrap();
    let result = run(&SchemaCheck::new(&db.target(), chat_spec(), "chat").exact(false)).await;
    let Outcome::Error { kind, message } = &result.outcome else {
        panic!("expected an error: {:?}", result.outcome)
    };
    assert_eq!(*kind, ErrorKind::Harness);
    assert_eq!(
        message,
        &format!(
            "connect to database db at 127.0.0.1:{}/gone: connection refused",
            pg.port()
        )
    );
    assert_no_secret(&result, pg.password());
}

/// Issue 10's messages: a serial turned identity names the identity; an index with DESC and an
/// expression prints them unquoted; a type Postgres does not have is a problem with the
/// declaration, not drift; unknown words in a column declaration are refused up front.
#[tokio::test]
async fn identity_desc_keys_and_unknown_types_are_named_plainly() {
    let server = Server::start().await;
    let db = server
        .database(
            "messages",
            "CREATE SCHEMA app;
             CREATE TABLE app.jobs (id serial PRIMARY KEY, kind text NOT NULL, created_at timestamptz NOT NULL);
             ALTER TABLE app.jobs ALTER COLUMN id DROP DEFAULT;
             DROP SEQUENCE app.jobs_id_seq;
             ALTER TABLE app.jobs ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY;
             CREATE INDEX jobs_recent_idx ON app.jobs (created_at DESC, lower(kind));",
        )
        .await;
    let yaml = "schemas:
  app:
    tables:
      jobs:
        columns: { id: serial, kind: text NOT NULL, created_at: timestamptz NOT NULL }
        primary_key: [id]
        indexes:
          - [created_at DESC, LOWER(kind)]
          - [created_at, lower(kind)]
";
    let spec = Arc::new(ExpectedSchema::from_yaml(yaml).unwrap());
    let message = failed(&run(&SchemaCheck::new(&db.target(), spec, "app").exact(true)).await);
    assert_eq!(
        message,
        "column app.jobs.id: expected a serial (default nextval(...)), found no default but \
         GENERATED ALWAYS AS IDENTITY; missing index app.jobs(created_at, lower(kind))"
    );

    let yaml = "schemas: { app: { tables: { jobs: { columns: { id: integr NOT NULL, kind: text NOT NULL, created_at: timestamptz NOT NULL } } } } }";
    let spec = Arc::new(ExpectedSchema::from_yaml(yaml).unwrap());
    let result = run(&SchemaCheck::new(&db.target(), spec, "app").exact(false)).await;
    let Outcome::Error { kind, message } = &result.outcome else {
        panic!("expected an error: {:?}", result.outcome)
    };
    assert_eq!(*kind, ErrorKind::Harness);
    assert_eq!(
        message,
        "problem with the declaration: column app.jobs.id: type `integr` is not a type of this \
         database (no such type)"
    );

    // Unknown words are a configuration error, listed with every other problem.
    let spec = ExpectedSchema::from_yaml(
        "schemas: { app: { tables: { jobs: { columns: { id: strng NOT NUL, kind: text NOTNULL } } } } }",
    )
    .unwrap();
    let schema = SchemaConfig::expected(spec);
    let mut problems = Vec::new();
    let config = DatabaseConfig::new().database(db.target().schema(schema));
    let figment = figment::Figment::new();
    let mut validator = citadel_itest_core::config::Validator::new(&figment, &mut problems);
    citadel_itest_core::config::Validate::validate(&config, &mut validator);
    let got: Vec<String> = problems
        .iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect();
    assert_eq!(
        got,
        [
            "databases[0].schema.schemas.app.tables.jobs.columns.id: `strng NOT NUL` is not a \
             column declaration: unknown words `NOT NUL` after the type `strng` (write `TYPE \
             [NOT NULL | NULL] [DEFAULT expr]`)",
            "databases[0].schema.schemas.app.tables.jobs.columns.kind: `text NOTNULL` is not a \
             column declaration: unknown words `NOTNULL` after the type `text` (write `TYPE \
             [NOT NULL | NULL] [DEFAULT expr]`)",
        ]
    );
}
