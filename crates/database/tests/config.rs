//! The `database:` section: every problem reported at once with its key path, secrets never
//! printed, and the local-stack configuration end to end against a real PostgreSQL.

mod common;

use std::path::Path;

use citadel_itest_core::IntegrationTester;
use citadel_itest_core::config::{ConfigLoader, ConfigProblem};
use citadel_itest_database::{DatabaseTester, from_config};
use common::{Server, run};

fn load(
    yaml: &str,
) -> (
    Option<DatabaseTester>,
    Vec<ConfigProblem>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("itest.yaml");
    std::fs::write(&file, yaml).unwrap();
    let config = ConfigLoader::new()
        .env(false)
        .section("database")
        .file(&file)
        .load()
        .expect("core sections are valid");
    let mut problems = Vec::new();
    let tester = from_config(&config, &mut problems);
    (tester, problems, dir)
}

fn paths_and_messages(problems: &[ConfigProblem]) -> Vec<(String, String)> {
    problems
        .iter()
        .map(|p| (p.path.clone(), p.message.clone()))
        .collect()
}

#[test]
fn semantic_problems_are_all_reported_with_key_paths() {
    let yaml = r#"
database:
  databases:
    - name: Main DB
      dsn: postgres://app:hunter2hunter2@127.0.0.1/app
      host: 127.0.0.1
      statement_timeout: 0s
      pool: { size: 0, acquire_timeout: 0s }
      schema:
        file: /nonexistent/expected.yaml
        schemas: { chat: { tables: { t: { columns: { a: int }, primary_key: [b] } } } }
      integrity:
        sample_rows: 11
        row_counts: [{ table: app.t }, { table: app.u, min: 5, max: 1 }]
        invariants:
          - { name: same, sql: " ; " }
          - { name: same, sql: "SELECT 1", min: 2, max: 1 }
        foreign_keys: [{ from: "a.b(c, d)", to: "a.e(f)" }]
      pooling: { tasks: 10, recovery: { restart_command: [pg_ctl, restart] } }
    - name: main-db
      user: citadel
      password: { env: CITADEL_ITEST_TEST_SURELY_UNSET }
      schema: { migrations: /nonexistent/migrations }
      pooling: { tasks: 10 }
    - name: main-db
      dsn: "mysql://root:hunter3hunter3@127.0.0.1/x"
"#;
    let (tester, problems, _dir) = load(yaml);
    assert!(tester.is_none());
    let got = paths_and_messages(&problems);
    let db0 = "database.databases[0]";
    let expected: Vec<(String, String)> = [
        (format!("{db0}.name"), "`Main DB` is not a valid name: use 1 to 64 lowercase letters, digits, `_` and `-`"),
        (format!("{db0}.host"), "give either `dsn` or the connection parts, not both"),
        (format!("{db0}.statement_timeout"), "0s is out of range 1ms..=1day"),
        (format!("{db0}.pool.size"), "must be at least 1"),
        (format!("{db0}.pool.acquire_timeout"), "0s is out of range 1ms..=1day"),
        (format!("{db0}.schema.file"), "give the expected schema either in `file` or inline (`extensions`, `schemas`), not both"),
        (format!("{db0}.schema.schemas.chat.tables.t.primary_key"), "column `b` is not among the table's columns"),
        (format!("{db0}.schema.file"), "expected schema /nonexistent/expected.yaml: cannot read it: No such file or directory (os error 2)"),
        (format!("{db0}.integrity.sample_rows"), "11 is out of range 0..=10"),
        (format!("{db0}.integrity.foreign_keys[0]"), "2 columns reference 1 columns"),
        (format!("{db0}.integrity.row_counts[0]"), "give `min`, `max` or both"),
        (format!("{db0}.integrity.row_counts[1].min"), "5 is greater than max 1"),
        (format!("{db0}.integrity.invariants[0].sql"), "must not be empty"),
        (format!("{db0}.integrity.invariants[1].name"), "duplicate invariant `same` (also invariants[0])"),
        (format!("{db0}.integrity.invariants[1].min"), "2 is greater than max 1"),
        (format!("{db0}.pooling.recovery.disposable"), "the recovery check restarts the server: set `disposable: true` only for a testkit or throwaway server"),
        (format!("{db0}.pooling.tasks"), "10 tasks cannot contend for a pool of 10 (pool.size + pool.max_overflow): use more"),
        ("database.databases[1].password".into(), "environment variable CITADEL_ITEST_TEST_SURELY_UNSET is not set"),
        ("database.databases[1].schema.migrations".into(), "cannot read directory /nonexistent/migrations: No such file or directory (os error 2)"),
        ("database.databases[1].pooling.tasks".into(), "10 tasks cannot contend for a pool of 30 (pool.size + pool.max_overflow): use more"),
        ("database.databases[2].name".into(), "duplicate database name `main-db` (also databases[1])"),
        ("database.databases[2].dsn".into(), "scheme `mysql` is not postgres:// or postgresql://"),
    ]
    .into_iter()
    .map(|(p, m)| (p, m.to_string()))
    .collect();
    assert_eq!(got, expected);
    for p in &problems {
        assert!(
            p.source
                .as_deref()
                .is_some_and(|s| s.ends_with("itest.yaml")),
            "{p}"
        );
        assert!(!p.to_string().contains("hunter"), "{p}");
    }
}

#[test]
fn unknown_keys_and_bad_references_name_their_place() {
    let (_, problems, _dir) =
        load("database:\n  databases:\n    - name: main\n      user: u\n      pool: { sise: 3 }\n");
    let got = paths_and_messages(&problems);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "database.databases[0].pool.sise");
    assert!(
        got[0].1.starts_with("unknown field: found `sise`"),
        "{got:?}"
    );

    let (_, problems, _dir) = load(
        "database:\n  databases:\n    - name: main\n      user: u\n      integrity:\n        unique: [\"app.users\"]\n",
    );
    let got = paths_and_messages(&problems);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "database.databases[0].integrity.unique[0]");
    assert!(
        got[0].1.contains(
            "`app.users` is not columns of a table (`schema.table(a, b)`): missing `(columns)`"
        ),
        "{got:?}"
    );

    let (_, problems, _dir) = load("database:\n  databases: []\n");
    assert_eq!(
        paths_and_messages(&problems),
        [(
            "database.databases".to_string(),
            "list at least one database".to_string()
        )]
    );
}

/// The configuration proposed for config/local.yaml (see docs/database.md), pointed at a testkit
/// server with the demo schema applied, builds every check and they all pass.
#[tokio::test]
async fn the_local_stack_configuration_passes_against_the_demo_schema() {
    let server = Server::start().await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    server.database("citadel", "").await;
    let mut psql = server.pg.psql_command("citadel").unwrap();
    psql.args(["-q", "-1", "-f"])
        .arg(root.join("config/database/demo_schema.sql"));
    assert!(psql.status().await.unwrap().success());
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, format!("{}\n", server.pg.password())).unwrap();
    let snippet = docs_snippet("<!-- local.yaml -->");
    let yaml = snippet
        .replace("port: 55432", &format!("port: {}", server.pg.port()))
        .replace(
            "target/services/postgres/password",
            &password.display().to_string(),
        )
        .replace(
            "config/database/expected_schema.yaml",
            &root
                .join("config/database/expected_schema.yaml")
                .display()
                .to_string(),
        );
    let (tester, problems, _dir) = load(&yaml);
    assert!(problems.is_empty(), "{problems:?}");
    let tester = tester.unwrap();
    let checks = tester.checks();
    assert_eq!(
        checks.len(),
        13,
        "{:?}",
        checks
            .iter()
            .map(|c| c.id().to_string())
            .collect::<Vec<_>>()
    );
    for check in checks {
        let result = run(&*check).await;
        result.assert_passed();
    }
}

fn docs_snippet(marker: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let docs = std::fs::read_to_string(root.join("docs/database.md")).unwrap();
    docs.split(marker)
        .nth(1)
        .and_then(|s| s.split("```yaml\n").nth(1))
        .and_then(|s| s.split("```").next())
        .unwrap_or_else(|| panic!("docs/database.md has no {marker} snippet"))
        .to_string()
}

/// The section proposed for config/reference.yaml (every key) is valid and builds every check
/// but recovery (commented out there).
#[test]
#[allow(clippy::result_large_err)]
fn the_reference_section_is_valid() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("CITADEL_POSTGRES_PASSWORD", "reference-password");
        let (tester, problems, _dir) = load(&docs_snippet("<!-- reference.yaml -->"));
        assert!(problems.is_empty(), "{problems:?}");
        let ids: Vec<String> = tester
            .unwrap()
            .checks()
            .iter()
            .map(|c| c.id().to_string())
            .collect();
        assert_eq!(
            ids,
            [
                "database.main.schema",
                "database.main.schema.chat",
                "database.main.integrity",
                "database.main.pooling",
                "database.main.headroom",
            ]
        );
        Ok(())
    });
}

/// Several typos in one expected-schema file are all reported, each with its place inside the
/// file, in plain words (no nested backticks).
#[test]
fn every_typo_of_a_schema_file_is_listed() {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("expected.yaml");
    std::fs::write(
        &schema,
        "schemas:\n  chat:\n    tables:\n      t:\n        columns: { a: { type: int, nulable: true }, b: strng NOT NUL }\n        primary_kye: [a]\n        indexes: [{ columns: [a], uniq: true }]\n",
    )
    .unwrap();
    let yaml = format!(
        "database:\n  databases:\n    - name: main\n      user: u\n      schema: {{ file: {} }}\n",
        schema.display()
    );
    let (tester, problems, _dir) = load(&yaml);
    assert!(tester.is_none());
    let got = paths_and_messages(&problems);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "database.databases[0].schema.file");
    let parts: Vec<&str> = got[0].1.split("; ").collect();
    assert_eq!(
        parts,
        [
            format!(
                "expected schema {}: schemas.chat.tables.t.columns.a: unknown key `nulable`, \
                 expected one of `type`, `not_null`, `default`, `identity`",
                schema.display()
            )
            .as_str(),
            "schemas.chat.tables.t.indexes[0]: unknown key `uniq`, expected one of `columns`, \
             `unique`, `method`, `name`, `predicate`",
            "schemas.chat.tables.t: unknown key `primary_kye`, expected one of `columns`, \
             `primary_key`, `unique`, `foreign_keys`, `indexes`, `checks`, `row_level_security`, \
             `force_row_level_security`, `triggers`, `policies`, `grants`",
        ],
        "{got:?}"
    );
    assert!(!got[0].1.contains("``"), "{got:?}");
}
