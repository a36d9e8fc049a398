//! Migrations mode against a real PostgreSQL: `_sqlx_migrations` state, drift from a scratch
//! database the migrations are applied to, and the scratch database always dropped.

mod common;

use std::path::Path;
use std::time::Duration;

use citadel_itest_core::config::RunSettings;
use citadel_itest_core::{
    Check, CheckContext, CheckExt, ErrorKind, IntegrationTester, Outcome, run_one,
};
use citadel_itest_database::{
    DatabaseConfig, DatabaseTester, MigrationsCheck, MigrationsConfig, MigrationsMode,
    SchemaConfig, ScratchServer,
};
use common::{Db, Server, failed, run, value};
use sqlx::Connection as _;

const INIT: &str = "CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL UNIQUE);";
const POSTS: &str = "CREATE TABLE posts (\n\
    id bigserial PRIMARY KEY,\n\
    user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,\n\
    body text NOT NULL\n);\n\
    CREATE INDEX posts_user_id_idx ON posts (user_id);";

fn migrations(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, sql) in files {
        std::fs::write(dir.path().join(name), sql).unwrap();
    }
    dir
}

/// The check with its scratch database on the test server (where the tests can see it).
fn on_target(db: &Db, dir: &Path, exact: bool, read_only: bool) -> MigrationsCheck {
    MigrationsCheck::with_config(
        &db.target(),
        MigrationsConfig::new(dir).scratch(ScratchServer::Target),
        exact,
        read_only,
    )
}

async fn migrate(db: &Db, dir: &Path) {
    let mut conn = sqlx::PgConnection::connect(&db.dsn).await.unwrap();
    sqlx::migrate::Migrator::new(dir.to_path_buf())
        .await
        .unwrap()
        .run_direct(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

#[tokio::test]
async fn a_migrated_database_passes_and_the_scratch_database_is_dropped() {
    let server = Server::start().await;
    let dir = migrations(&[("001_init.sql", INIT), ("002_posts.sql", POSTS)]);
    let db = server.database("app", "").await;
    migrate(&db, dir.path()).await;

    let check = on_target(&db, dir.path(), false, false);
    assert_eq!(check.id().as_str(), "database.db.migrations");
    let result = run(&check).await;
    result.assert_passed();
    assert_eq!(value(&result, "migrations_in_directory"), 2.0);
    assert_eq!(value(&result, "migrations_applied"), 2.0);
    assert_eq!(value(&result, "drift_differences"), 0.0);
    assert!(value(&result, "migrate_time") > 0.0);
    assert_eq!(server.scratch_databases().await, Vec::<String>::new());
}

#[tokio::test]
async fn a_column_added_by_hand_after_migrating_is_drift() {
    let server = Server::start().await;
    let dir = migrations(&[("001_init.sql", INIT), ("002_posts.sql", POSTS)]);
    let db = server.database("app", "").await;
    migrate(&db, dir.path()).await;
    server
        .psql(
            "app",
            "ALTER TABLE users ADD COLUMN nickname text; DROP INDEX posts_user_id_idx;",
        )
        .await;

    let result = run(&MigrationsCheck::new(
        &db.target(),
        dir.path(),
        false,
        false,
    ))
    .await;
    assert_eq!(
        failed(&result),
        "drift: missing index public.posts(user_id); \
         drift: unexpected column public.users.nickname (text NULL)"
    );
    assert_eq!(value(&result, "drift_differences"), 2.0);
    assert_eq!(server.scratch_databases().await, Vec::<String>::new());

    // In read-only mode no scratch database is made: only the migrations state is checked.
    run(&on_target(&db, dir.path(), false, true))
        .await
        .assert_passed();
}

#[tokio::test]
async fn pending_changed_failed_and_unknown_migrations_are_named() {
    let server = Server::start().await;
    let dir = migrations(&[("001_init.sql", INIT), ("002_posts.sql", POSTS)]);
    let db = server.database("app", "").await;
    migrate(&db, dir.path()).await;
    server
        .psql(
            "app",
            "UPDATE _sqlx_migrations SET success = false WHERE version = 2;\n\
             INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9, 'hotfix', true, '\\x00', 1);",
        )
        .await;
    std::fs::write(
        dir.path().join("001_init.sql"),
        format!("{INIT}\n-- edited"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("003_tags.sql"),
        "CREATE TABLE tags (name text PRIMARY KEY);",
    )
    .unwrap();

    let message = failed(&run(&on_target(&db, dir.path(), false, false)).await);
    let dir_name = dir.path().display().to_string();
    assert_eq!(
        message,
        format!(
            "migration 2 (posts) failed: success = false in _sqlx_migrations; \
             migration 1 (init) was changed after it was applied: its checksum differs from \
             _sqlx_migrations; pending migration 3 (tags); applied migration 9 (hotfix) is not in \
             {dir_name}; drift: missing table public.tags"
        )
    );
}

#[tokio::test]
async fn an_unmigrated_database_and_broken_migrations_fail() {
    let server = Server::start().await;
    let dir = migrations(&[("001_init.sql", INIT)]);
    let db = server.database("empty", "").await;
    let message = failed(&run(&on_target(&db, dir.path(), false, false)).await);
    assert_eq!(
        message,
        format!(
            "_sqlx_migrations is missing: no migration of {} has been applied (for a database \
             deployed without sqlx, use mode drift_only); drift: missing table public.users",
            dir.path().display()
        )
    );

    let broken = migrations(&[
        ("001_init.sql", INIT),
        ("002_oops.sql", "CREATE TABLE oops ("),
    ]);
    let message = failed(&run(&on_target(&db, broken.path(), false, false)).await);
    assert!(
        message.contains("; migrations do not apply to an empty database: "),
        "{message}"
    );
    assert!(message.contains("syntax error"), "{message}");
    assert_eq!(server.scratch_databases().await, Vec::<String>::new());
}

const SLOW: &str = "SELECT pg_sleep(30);";

#[tokio::test]
async fn cancelling_the_check_drops_the_scratch_database() {
    let server = Server::start().await;
    let dir = migrations(&[("001_init.sql", INIT), ("002_slow.sql", SLOW)]);
    let db = server.database("app", "").await;
    let check = on_target(&db, dir.path(), false, false);
    let ctx = CheckContext::with_budget(Duration::from_secs(60));
    let cancel = ctx.cancel.clone();
    let run = tokio::spawn(async move { check.run(&ctx).await });
    // Wait until the scratch database exists (the slow migration is running), then cancel.
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen = server.scratch_databases().await;
        if !seen.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen.len(), 1, "the scratch database was never created");
    assert!(seen[0].starts_with("citadel_itest_1"), "{seen:?}");
    cancel.cancel();
    let outcome = run.await.unwrap().unwrap();
    assert!(
        matches!(
            outcome,
            Outcome::Error {
                kind: ErrorKind::Cancelled,
                ..
            }
        ),
        "{outcome:?}"
    );
    // Dropped before the check returned.
    assert_eq!(server.scratch_databases().await, Vec::<String>::new());
}

#[tokio::test]
async fn a_check_that_times_out_still_drops_its_scratch_database() {
    let server = Server::start().await;
    let dir = migrations(&[("001_init.sql", INIT), ("002_slow.sql", SLOW)]);
    let db = server.database("app", "").await;
    let check = on_target(&db, dir.path(), false, false).with_timeout(Duration::from_secs(2));
    let result = run_one(&check).await;
    assert!(
        matches!(
            result.outcome,
            Outcome::Error {
                kind: ErrorKind::Timeout,
                ..
            }
        ),
        "{:?}",
        result.outcome
    );
    // The runner dropped the check's future: the drop guard removes the database in the
    // background.
    let mut left = server.scratch_databases().await;
    for _ in 0..100 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = server.scratch_databases().await;
    }
    assert_eq!(left, Vec::<String>::new());
}

const PAUSE: &str = "SELECT pg_sleep(2);";

/// The case: dropping the scratch database takes longer than its budget (here another
/// session holds a lock on it, as a slow checkpoint would hold the drop). The drift verdict
/// stands, the leftover is named, and the next run drops it.
#[tokio::test]
async fn a_slow_drop_keeps_the_verdict_names_the_leftover_and_the_next_run_drops_it() {
    let server = Server::start().await;
    let dir = migrations(&[("001_init.sql", INIT), ("002_pause.sql", PAUSE)]);
    let db = server.database("app", "").await;
    migrate(&db, dir.path()).await;
    server
        .psql("app", "ALTER TABLE users ADD COLUMN nickname text;")
        .await;
    let check = MigrationsCheck::with_config(
        &db.target(),
        MigrationsConfig::new(dir.path())
            .scratch(ScratchServer::Target)
            .cleanup_timeout(Duration::from_secs(2)),
        false,
        false,
    );
    let running = tokio::spawn(async move { run(&check).await });
    // While the migrations run in the scratch database, take a lock its DROP DATABASE waits
    // for (from another database, so WITH (FORCE) does not end this session).
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen = server.scratch_databases().await;
        if !seen.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen.len(), 1, "the scratch database was never created");
    let scratch = seen[0].clone();
    let sql = format!(
        "BEGIN; COMMENT ON DATABASE \"{scratch}\" IS 'held by the test'; \
         SELECT pg_sleep(6); ROLLBACK;"
    );
    let holder = server.pg.execute_in("postgres", &sql);
    let (held, result) = tokio::join!(holder, running);
    held.expect("the lock holder ran");
    let result = result.unwrap();

    let message = failed(&result);
    let (verdict, note) = message
        .split_once("; scratch database ")
        .unwrap_or_else(|| panic!("the leftover is not named: {message}"));
    assert_eq!(
        verdict,
        "drift: unexpected column public.users.nickname (text NULL)"
    );
    assert!(
        note.starts_with(&format!("{scratch} was left behind: "))
            && note.ends_with("; the next run drops it"),
        "{note}"
    );
    assert!(note.contains("within the cleanup budget of 2s"), "{note}");
    assert_eq!(result.details["left_behind"], serde_json::json!(scratch));
    assert_eq!(value(&result, "scratch_databases_left_behind"), 1.0);
    assert_eq!(value(&result, "drift_differences"), 1.0);
    // The server gave up the drop too (lock_timeout within the budget): it is still there.
    assert_eq!(server.scratch_databases().await, vec![scratch.clone()]);

    // The next run finds it by its name (older than the run) and drops it; its own scratch
    // database is dropped as usual; the verdict is the same.
    let result = run(&on_target(&db, dir.path(), false, false)).await;
    assert_eq!(
        failed(&result),
        "drift: unexpected column public.users.nickname (text NULL)"
    );
    assert_eq!(
        result.details["leftovers_dropped"],
        serde_json::json!([scratch])
    );
    assert_eq!(value(&result, "leftovers_dropped"), 1.0);
    assert_eq!(value(&result, "scratch_databases_left_behind"), 0.0);
    assert_eq!(server.scratch_databases().await, Vec::<String>::new());
}

/// The sweep drops only what matches the scratch pattern exactly and is older than the run:
/// a database merely starting with the prefix, and a scratch-named one somebody is connected to,
/// are kept.
#[tokio::test]
async fn the_sweep_keeps_databases_it_did_not_create_or_that_are_in_use() {
    let server = Server::start().await;
    let dir = migrations(&[("001_init.sql", INIT)]);
    let db = server.database("app", "").await;
    migrate(&db, dir.path()).await;
    let stale = "citadel_itest_1000000000000_abcd_app";
    let busy = "citadel_itest_1000000000001_wxyz_app";
    for name in [
        stale,
        busy,
        "citadel_itest_mine",
        "citadel_itest_r1a2b3c4_app",
    ] {
        server.pg.create_database(name).await.unwrap();
    }
    let conn = sqlx::PgConnection::connect(&server.pg.dsn_for(busy))
        .await
        .unwrap();
    let result = run(&on_target(&db, dir.path(), false, false)).await;
    result.assert_passed();
    assert_eq!(
        result.details["leftovers_dropped"],
        serde_json::json!([stale])
    );
    let kept = result.details["leftovers_kept"].to_string();
    assert!(kept.contains(busy) && kept.contains("in use"), "{kept}");
    assert_eq!(
        server.scratch_databases().await,
        vec![
            busy.to_string(),
            "citadel_itest_mine".into(),
            "citadel_itest_r1a2b3c4_app".into()
        ]
    );
    conn.close().await.unwrap();
}

/// A database deployed without sqlx has no `_sqlx_migrations`: mode drift_only compares its
/// schema with what the migrations produce and nothing else.
#[tokio::test]
async fn drift_only_needs_no_sqlx_migrations_table() {
    let server = Server::start().await;
    let dir = migrations(&[("001_init.sql", INIT), ("002_posts.sql", POSTS)]);
    let db = server
        .database("deployed", &format!("{INIT}\n{POSTS}"))
        .await;
    let drift_only = |scratch| {
        MigrationsCheck::with_config(
            &db.target(),
            MigrationsConfig::new(dir.path())
                .mode(MigrationsMode::DriftOnly)
                .scratch(scratch),
            true,
            false,
        )
    };
    let result = run(&drift_only(ScratchServer::Target)).await;
    result.assert_passed();
    assert_eq!(value(&result, "drift_differences"), 0.0);
    assert!(result.measurement("migrations_applied").is_none());
    // Mode full says what is missing, and how to check such a database.
    let message = failed(&run(&on_target(&db, dir.path(), true, false)).await);
    assert!(message.contains("use mode drift_only"), "{message}");

    server
        .psql("deployed", "ALTER TABLE posts ADD COLUMN draft boolean;")
        .await;
    let result = run(&drift_only(ScratchServer::Auto)).await;
    assert_eq!(
        failed(&result),
        "drift: unexpected column public.posts.draft (boolean NULL)"
    );
    assert_eq!(server.scratch_databases().await, Vec::<String>::new());

    // In read-only mode there is nothing drift_only could check.
    let check = MigrationsCheck::with_config(
        &db.target(),
        MigrationsConfig::new(dir.path()).mode(MigrationsMode::DriftOnly),
        false,
        true,
    );
    assert_eq!(
        run(&check).await.outcome.status(),
        citadel_itest_core::Status::Skipped
    );
}

/// Exact mode on a database sqlx manages: `_sqlx_migrations` (and the `public` schema holding
/// only it) is the tool's bookkeeping, not drift.
#[tokio::test]
async fn exact_mode_on_a_sqlx_managed_database_passes() {
    let server = Server::start().await;
    let in_schema = "CREATE SCHEMA app;\nCREATE TABLE app.users (id bigserial PRIMARY KEY, email text NOT NULL);";
    let dir = migrations(&[("001_init.sql", in_schema)]);
    let db = server.database("managed", "").await;
    migrate(&db, dir.path()).await;
    let result = run(&on_target(&db, dir.path(), true, false)).await;
    result.assert_passed();
    assert_eq!(value(&result, "drift_differences"), 0.0);

    // The schema checks in exact mode, beside the migrations check, say the same.
    let expected = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        expected.path(),
        "schemas:\n  app:\n    tables:\n      users:\n        columns:\n          \
         id: bigserial\n          email: text NOT NULL\n        primary_key: [id]\n",
    )
    .unwrap();
    let mut schema = SchemaConfig::file(expected.path()).exact(true);
    schema.migrations = Some(MigrationsConfig::new(dir.path()).scratch(ScratchServer::Target));
    let tester = DatabaseTester::new(DatabaseConfig::new().database(db.target().schema(schema)))
        .run_settings(&RunSettings::default());
    let checks = tester.checks();
    assert_eq!(checks.len(), 3);
    for check in &checks {
        run(check.as_ref()).await.assert_passed();
    }

    // A schema nobody declared is still drift in exact mode.
    server.psql("managed", "CREATE SCHEMA scratchpad;").await;
    assert_eq!(
        failed(&run(&on_target(&db, dir.path(), true, false)).await),
        "drift: unexpected schema scratchpad (0 tables)"
    );
}

/// `scratch: local` applies the migrations to a throwaway PostgreSQL of the target's major
/// version on this machine: the target gets no CREATE/DROP DATABASE (no forced checkpoint),
/// and drift is found the same way.
#[cfg(feature = "local-scratch")]
#[tokio::test]
async fn a_local_scratch_server_spares_the_target() {
    let server = Server::start().await;
    let dir = migrations(&[("001_init.sql", INIT), ("002_posts.sql", POSTS)]);
    let db = server.database("app", "").await;
    migrate(&db, dir.path()).await;
    let local = |scratch| {
        MigrationsCheck::with_config(
            &db.target(),
            MigrationsConfig::new(dir.path()).scratch(scratch),
            false,
            false,
        )
    };
    let checkpoints = || server.scalar("postgres", "SELECT checkpoints_req FROM pg_stat_bgwriter");
    let before = checkpoints().await;
    let result = run(&local(ScratchServer::Local)).await;
    result.assert_passed();
    let used = result.details["scratch_server"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let major = server
        .scalar(
            "postgres",
            "SELECT current_setting('server_version_num')::int / 10000",
        )
        .await;
    assert!(
        used.starts_with(&format!("local PostgreSQL {major} at 127.0.0.1:")),
        "{used}"
    );
    assert!(!result.details.contains_key("scratch_database"));
    assert_eq!(
        checkpoints().await,
        before,
        "the target was made to checkpoint"
    );
    eprintln!("local scratch: {:?}", result.duration);

    server
        .psql("app", "ALTER TABLE users ADD COLUMN nickname text;")
        .await;
    assert_eq!(
        failed(&run(&local(ScratchServer::Auto)).await),
        "drift: unexpected column public.users.nickname (text NULL)"
    );
    let before = checkpoints().await;
    let result = run(&local(ScratchServer::Target)).await;
    eprintln!("target scratch: {:?}", result.duration);
    // What the local server spares: DROP DATABASE on the target forces a checkpoint there.
    let after = checkpoints().await;
    assert!(
        after.parse::<i64>().unwrap() > before.parse::<i64>().unwrap(),
        "{before} -> {after}"
    );
    assert_eq!(
        result.details["scratch_server"],
        serde_json::json!("target")
    );
    assert_eq!(server.scratch_databases().await, Vec::<String>::new());
}

/// `schema.migrations` is a directory or a map with options; mistakes in the map are named.
#[test]
fn migrations_take_a_directory_or_a_map_with_options() {
    let dir = migrations(&[("001_init.sql", INIT)]);
    let load = |migrations: &str| {
        let cfg = tempfile::tempdir().unwrap();
        let file = cfg.path().join("itest.yaml");
        std::fs::write(
            &file,
            format!(
                "database:\n  databases:\n    - name: main\n      user: citadel\n      \
                 schema:\n        migrations: {migrations}\n"
            ),
        )
        .unwrap();
        let config = citadel_itest_core::config::ConfigLoader::new()
            .env(false)
            .section("database")
            .file(&file)
            .load()
            .unwrap();
        let mut problems = Vec::new();
        let tester = citadel_itest_database::from_config(&config, &mut problems);
        let problems: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect();
        (tester, problems)
    };
    let d = dir.path().display();
    let (tester, problems) = load(&d.to_string());
    assert!(problems.is_empty(), "{problems:?}");
    let m = tester.unwrap().config().databases[0]
        .schema
        .as_ref()
        .unwrap()
        .migrations
        .clone()
        .unwrap();
    assert_eq!(m, MigrationsConfig::new(dir.path()));
    assert_eq!(m.scratch, ScratchServer::Auto);

    let (tester, problems) = load(&format!(
        "{{ dir: {d}, mode: drift_only, scratch: target, cleanup_timeout: 5s }}"
    ));
    assert!(problems.is_empty(), "{problems:?}");
    let checks = tester.unwrap().checks();
    assert_eq!(checks[0].id().as_str(), "database.main.migrations");
    // The check's budget: run.timeout plus the cleanup budget.
    assert_eq!(
        checks[0].timeout(),
        Some(RunSettings::default().timeout + Duration::from_secs(5))
    );

    let (_, problems) = load(&format!("{{ dir: {d}, mod: drift_only }}"));
    eprintln!("{problems:?}");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("database.databases[0].schema.migrations")
            && problems[0].contains("mod"),
        "{problems:?}"
    );
    let (_, problems) = load(&format!(
        "{{ dir: {d}, cleanup_timeout: 0s, mode: sometimes }}"
    ));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("sometimes"), "{problems:?}");
    let (_, problems) = load(&format!("{{ dir: {d}, cleanup_timeout: 0s }}"));
    assert_eq!(
        problems,
        ["database.databases[0].schema.migrations.cleanup_timeout: 0s is out of range 1ms..=1day"]
    );
}
