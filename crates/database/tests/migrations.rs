//! Migrations mode against a real PostgreSQL: `_sqlx_migrations` state, drift from a scratch
//! database the migrations are applied to, and the scratch database always dropped.

mod common;

use std::path::Path;
use std::time::Duration;

use citadel_itest_core::{Check, CheckContext, CheckExt, ErrorKind, Outcome, run_one};
use citadel_itest_database::MigrationsCheck;
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

    let check = MigrationsCheck::new(&db.target(), dir.path(), false, false);
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
    run(&MigrationsCheck::new(&db.target(), dir.path(), false, true))
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

    let message = failed(
        &run(&MigrationsCheck::new(
            &db.target(),
            dir.path(),
            false,
            false,
        ))
        .await,
    );
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
    let message = failed(
        &run(&MigrationsCheck::new(
            &db.target(),
            dir.path(),
            false,
            false,
        ))
        .await,
    );
    assert_eq!(
        message,
        format!(
            "_sqlx_migrations is missing: no migration of {} has been applied; \
             drift: missing table public.users",
            dir.path().display()
        )
    );

    let broken = migrations(&[
        ("001_init.sql", INIT),
        ("002_oops.sql", "CREATE TABLE oops ("),
    ]);
    let message = failed(
        &run(&MigrationsCheck::new(
            &db.target(),
            broken.path(),
            false,
            false,
        ))
        .await,
    );
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
    let check = MigrationsCheck::new(&db.target(), dir.path(), false, false);
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
    assert!(seen[0].starts_with("citadel_itest_r"), "{seen:?}");
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
    let check = MigrationsCheck::new(&db.target(), dir.path(), false, false)
        .with_timeout(Duration::from_secs(2));
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
