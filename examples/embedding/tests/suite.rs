//! The whole configured suite as cargo tests: every check of the config this file writes
//! (basic health of the service, the database tester on its PostgreSQL) is one test that
//! `cargo test` and `cargo nextest` list, filter and run by check id.
//!
//! `cargo nextest run -p citadel-notes --test suite` (or `cargo test -p citadel-notes --test suite
//! -- database`). A `harness = false` target: see `[[test]] name = "suite"` in Cargo.toml.

mod common;

use std::process::ExitCode;

use citadel_itest::harness::{Arguments, run_suite_as_tests};

/// The suite's configuration (the same format as `citadel-itest run --config`).
fn config(service_url: &str, pg: (&str, u16, &str, &str), dir: &std::path::Path) -> String {
    let (host, port, user, database) = pg;
    let (password, schema) = (dir.join("pg-password"), dir.join("expected_schema.yaml"));
    format!(
        r#"
run:
  timeout: 10s
basic:
  targets:
    - name: notes
      url: {service_url}
      health_path: /health
      expect_json: {{ pointer: /status, equals: ok }}
database:
  databases:
    - name: notes
      host: {host}
      port: {port}
      user: {user}
      password: {{ file: "{password}" }}
      database: {database}
      sslmode: disable
      schema: {{ file: "{schema}", exact: true }}
      integrity:
        not_null: [notes.notes.body]
"#,
        password = password.display(),
        schema = schema.display(),
    )
}

fn main() -> ExitCode {
    let dir = tempfile::tempdir().expect("temporary directory");
    let write =
        |name: &str, text: &str| std::fs::write(dir.path().join(name), text).expect("write");
    write("expected_schema.yaml", common::EXPECTED_SCHEMA);
    let file = dir.path().join("itest.yaml");

    // Listing (`--list`, what nextest does first) needs the check ids only: start nothing.
    if Arguments::from_args().list {
        write("pg-password", "unused");
        write(
            "itest.yaml",
            &config("http://127.0.0.1:1", ("127.0.0.1", 1, "u", "d"), dir.path()),
        );
        return run_suite_as_tests(&[file]);
    }

    // The service and its PostgreSQL run on this runtime while the checks run.
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let service = runtime.block_on(common::start());
    let pg = &service.postgres;
    write("pg-password", pg.password());
    let pg_at = (pg.host(), pg.port(), pg.user(), pg.database());
    write("itest.yaml", &config(&service.url, pg_at, dir.path()));
    let code = run_suite_as_tests(&[file]);
    drop(service);
    code
}
