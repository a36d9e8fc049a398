//! `Postgres::fresh_database`: a database per test with a pool, migrations applied, dropped on
//! cleanup, on drop and on panic, against the real server.

use std::sync::Arc;
use std::time::Instant;

use citadel_itest_testkit::{PgAuth, Postgres, TestDatabase};

/// The names of the server's databases besides the built-in ones.
async fn user_databases(pg: &Postgres) -> Vec<String> {
    let out = pg
        .execute(
            "SELECT datname FROM pg_database WHERE datname NOT IN ('postgres', 'template0', \
             'template1') ORDER BY datname",
        )
        .await
        .unwrap();
    out.lines().map(str::to_owned).collect()
}

async fn count(db: &TestDatabase, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(db.pool()).await.unwrap();
    n
}

#[tokio::test]
async fn each_test_gets_its_own_database_and_cleanup_drops_it() {
    let pg = Postgres::start().await.unwrap();
    let started = Instant::now();
    let a = pg.fresh_database("orders test").await.unwrap();
    let took = started.elapsed();
    let b = pg.fresh_database("orders test").await.unwrap();
    assert_ne!(a.name(), b.name());
    assert!(a.name().starts_with("orders_test_"), "{}", a.name());
    assert_eq!(user_databases(&pg).await.len(), 2);
    eprintln!("fresh_database took {took:?}");

    sqlx::query("CREATE TABLE t (id int)")
        .execute(a.pool())
        .await
        .unwrap();
    sqlx::query("INSERT INTO t VALUES (1), (2)")
        .execute(a.pool())
        .await
        .unwrap();
    assert_eq!(count(&a, "SELECT count(*) FROM t").await, 2);
    // The other database does not see it: they are separate databases.
    let other = sqlx::query("SELECT 1 FROM t").execute(b.pool()).await;
    assert!(other.is_err(), "{other:?}");
    // The URL reaches the same database as the pool.
    assert!(a.url().ends_with(&format!(":{}/{}", pg.port(), a.name())));
    let (db,): (String,) = sqlx::query_as("SELECT current_database()")
        .fetch_one(&sqlx::PgPool::connect(a.url()).await.unwrap())
        .await
        .unwrap();
    assert_eq!(db, a.name());
    // Debug shows no password.
    assert!(!format!("{a:?}").contains(pg.password()));

    let (a_name, b_name) = (a.name().to_owned(), b.name().to_owned());
    a.cleanup().await.unwrap();
    assert_eq!(user_databases(&pg).await, [b_name]);
    // Dropped without cleanup (open connections and all): gone too.
    drop(b);
    assert!(user_databases(&pg).await.is_empty());
    assert!(!a_name.is_empty());
}

#[tokio::test]
async fn a_panicking_test_leaves_no_database_behind() {
    let pg = Arc::new(
        Postgres::builder()
            .auth(PgAuth::Trust)
            .start()
            .await
            .unwrap(),
    );
    let server = pg.clone();
    let handle = tokio::spawn(async move {
        let db = server.fresh_database("panics").await.unwrap();
        sqlx::query("CREATE TABLE t (id int)")
            .execute(db.pool())
            .await
            .unwrap();
        assert_eq!(user_databases(&server).await, [db.name().to_owned()]);
        if !db.name().is_empty() {
            panic!("the test failed while holding {}", db.name());
        }
    });
    let err = handle.await.unwrap_err();
    assert!(err.is_panic());
    assert!(user_databases(&pg).await.is_empty());
}

#[tokio::test]
async fn migrations_are_applied_and_a_bad_one_leaves_nothing() {
    let pg = Postgres::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("1_orders.sql"),
        "CREATE TABLE orders (id bigint PRIMARY KEY, amount int NOT NULL);",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("2_seed.sql"),
        "INSERT INTO orders VALUES (1, 10), (2, 20), (3, 30);",
    )
    .unwrap();
    let db = pg
        .fresh_database_with_migrations("migrated", dir.path())
        .await
        .unwrap();
    assert_eq!(count(&db, "SELECT count(*) FROM orders").await, 3);
    assert_eq!(
        count(&db, "SELECT count(*) FROM _sqlx_migrations WHERE success").await,
        2
    );
    db.cleanup().await.unwrap();

    std::fs::write(
        dir.path().join("3_broken.sql"),
        "ALTER TABLE no_such_table ADD COLUMN x int;",
    )
    .unwrap();
    let err = pg
        .fresh_database_with_migrations("migrated", dir.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("apply migrations on postgres: apply migrations in "),
        "{err}"
    );
    assert!(err.contains("no_such_table"), "{err}");
    assert!(!err.contains(pg.password()), "{err}");
    assert!(user_databases(&pg).await.is_empty());

    let missing = pg
        .fresh_database_with_migrations("migrated", dir.path().join("nope"))
        .await
        .unwrap_err()
        .to_string();
    assert!(missing.contains("read migrations in"), "{missing}");
    assert!(user_databases(&pg).await.is_empty());
}

#[tokio::test]
async fn works_on_a_server_that_requires_tls() {
    let pg = Postgres::builder().require_tls(true).start().await.unwrap();
    let db = pg.fresh_database("tls").await.unwrap();
    let (ssl,): (bool,) =
        sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert!(ssl);
    db.cleanup().await.unwrap();
    assert!(user_databases(&pg).await.is_empty());
}
