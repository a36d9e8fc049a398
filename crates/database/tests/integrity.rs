//! Data integrity against a real PostgreSQL: orphans, duplicates, NULLs, row counts and
//! invariants are found with counts and sample rows; clean data passes; no row ever changes.

mod common;

use std::time::Duration;

use citadel_itest_core::{Category, Check, ErrorKind, Outcome};
use citadel_itest_database::{IntegrityCheck, IntegrityConfig, Invariant, RowCountBound};
use common::{Server, failed, run, value};

const SCHEMA: &str = r#"
CREATE SCHEMA app;
CREATE SEQUENCE app.invoice_numbers;
CREATE TABLE app.users (id int PRIMARY KEY, email text, api_key text, is_admin boolean NOT NULL DEFAULT false);
CREATE TABLE app.orders (id int PRIMARY KEY, user_id int, total numeric NOT NULL);
CREATE TABLE app.items (id int PRIMARY KEY, order_id int);
"#;

const CLEAN: &str = r#"
INSERT INTO app.users VALUES (1, 'a@x.invalid', 'sk-aaaa', true), (2, 'b@x.invalid', NULL, false),
                             (3, 'c@x.invalid', 'sk-cccc', false);
INSERT INTO app.orders VALUES (10, 1, 5), (11, 2, 7), (12, NULL, 1);
INSERT INTO app.items VALUES (100, 10), (101, 11);
ALTER TABLE app.items ADD CONSTRAINT items_order_id_fkey FOREIGN KEY (order_id)
    REFERENCES app.orders (id) NOT VALID;
"#;

/// Rows that break every rule; the NOT VALID constraint is added after its orphan.
const DIRTY: &str = r#"
INSERT INTO app.users VALUES (1, 'a@x.invalid', 'sk-live-secret-1', true),
                             (2, 'a@x.invalid', 'sk-live-secret-2', true),
                             (3, NULL, 'sk-live-secret-3', false),
                             (4, 'd@x.invalid', NULL, false);
INSERT INTO app.orders VALUES (10, 1, 5), (11, 99, 7), (12, 98, -5);
INSERT INTO app.items VALUES (100, 10), (101, 55);
ALTER TABLE app.items ADD CONSTRAINT items_order_id_fkey FOREIGN KEY (order_id)
    REFERENCES app.orders (id) NOT VALID;
"#;

fn rules() -> IntegrityConfig {
    IntegrityConfig::new()
        .foreign_key("app.orders(user_id)", "app.users(id)")
        .unwrap()
        .unique("app.users(email)")
        .unwrap()
        .not_null("app.users.email")
        .unwrap()
        .row_count(RowCountBound::new("app.users", Some(1), Some(3)).unwrap())
        .invariant(
            Invariant::no_rows(
                "non_negative_totals",
                "SELECT id, total FROM app.orders WHERE total < 0;",
            )
            .message("order totals are never negative"),
        )
        .invariant(Invariant::value(
            "one_admin",
            "SELECT count(*) FROM app.users WHERE is_admin",
            Some(1.0),
            Some(1.0),
        ))
}

#[tokio::test]
async fn clean_data_passes_and_reports_rows_examined() {
    let server = Server::start().await;
    let db = server.database("clean", &format!("{SCHEMA}{CLEAN}")).await;
    let before = server.checksum("clean").await;
    let mut config = rules();
    config.row_counts[0].max = Some(10);
    let check = IntegrityCheck::new(&db.target(), config);
    assert_eq!(check.id().as_str(), "database.db.integrity");
    assert_eq!(check.category(), Category::Integrity);
    let result = run(&check).await;
    result.assert_passed();
    // NOT VALID FK (items, 2 rows) + logical FK (orders, 3) + unique (users, 3) + not-null
    // (users, 3) + row count (users, 3).
    assert_eq!(value(&result, "rows_examined"), 14.0);
    assert_eq!(value(&result, "detectors"), 7.0);
    assert_eq!(value(&result, "orphan_rows"), 0.0);
    assert_eq!(server.checksum("clean").await, before);
}

#[tokio::test]
async fn orphans_duplicates_nulls_and_broken_invariants_are_found_with_samples() {
    let server = Server::start().await;
    let db = server.database("dirty", &format!("{SCHEMA}{DIRTY}")).await;
    let before = server.checksum("dirty").await;
    let result = run(&IntegrityCheck::new(&db.target(), rules())).await;
    let message = failed(&result);
    let findings: Vec<&str> = message.split("; ").collect();
    assert_eq!(
        findings,
        [
            "orphan rows for NOT VALID foreign key items_order_id_fkey app.items(order_id) -> \
             app.orders(id): 1 of 2 rows examined have no referenced row, e.g. \
             {\"id\": 101, \"order_id\": 55}",
            "orphan rows for app.orders(user_id) -> app.users(id): 2 of 3 rows examined have no \
             referenced row, e.g. {\"id\": 11, \"user_id\": 99, \"total\": 7}, \
             {\"id\": 12, \"user_id\": 98, \"total\": -5}",
            "duplicates on app.users(email): 1 key occurs more than once (2 rows) among 4 rows \
             examined, e.g. {\"email\": \"a@x.invalid\", \"rows\": 2}",
            "NULLs in app.users.email: 1 of 4 rows examined, e.g. {\"id\": 3, \"email\": null, \
             \"api_key\": \"<redacted>\", \"is_admin\": false}",
            "row count of app.users: expected between 1 and 3 rows, found more than 3",
            "invariant non_negative_totals (order totals are never negative): 1 offending row, \
             e.g. {\"id\": 12, \"total\": -5}",
            "invariant one_admin: expected 1, found 2",
        ]
    );
    assert!(!message.contains("sk-live-secret"), "{message}");
    assert_eq!(value(&result, "orphan_rows"), 3.0);
    assert_eq!(value(&result, "duplicate_keys"), 1.0);
    assert_eq!(value(&result, "null_rows"), 1.0);
    assert_eq!(value(&result, "row_count_violations"), 1.0);
    assert_eq!(value(&result, "invariant_violations"), 2.0);
    // Running the detectors changed no row.
    assert_eq!(server.checksum("dirty").await, before);
}

#[tokio::test]
async fn rules_the_schema_already_enforces_are_not_scanned() {
    let server = Server::start().await;
    let enforced = "CREATE SCHEMA app;\n\
        CREATE TABLE app.users (id int PRIMARY KEY, email text NOT NULL UNIQUE);\n\
        CREATE TABLE app.orders (id int PRIMARY KEY, user_id int REFERENCES app.users (id));";
    let db = server.database("enforced", enforced).await;
    let config = IntegrityConfig::new()
        .foreign_key("app.orders(user_id)", "app.users(id)")
        .unwrap()
        .unique("app.users(email)")
        .unwrap()
        .not_null("app.users.email")
        .unwrap();
    let result = run(&IntegrityCheck::new(&db.target(), config)).await;
    result.assert_passed();
    assert_eq!(value(&result, "guaranteed_by_constraints"), 3.0);
    assert_eq!(value(&result, "detectors"), 0.0);
}

#[tokio::test]
async fn writes_are_refused_and_slow_statements_time_out_without_stopping_the_rest() {
    let server = Server::start().await;
    let db = server.database("ro", &format!("{SCHEMA}{CLEAN}")).await;
    let sequence_before = server
        .scalar("ro", "SELECT last_value FROM app.invoice_numbers")
        .await;
    let before = server.checksum("ro").await;
    let mut config = IntegrityConfig::new()
        .invariant(Invariant::no_rows(
            "takes_a_number",
            "SELECT nextval('app.invoice_numbers') AS n",
        ))
        .invariant(Invariant::no_rows("sleeps", "SELECT pg_sleep(5)"))
        .row_count(RowCountBound::new("app.orders", Some(5), None).unwrap());
    config.statement_timeout = Some(Duration::from_millis(300));
    let result = run(&IntegrityCheck::new(&db.target(), config)).await;
    assert_eq!(
        failed(&result),
        "row count of app.orders: expected at least 5 rows, found 3; could not run the invariant \
         takes_a_number: cannot execute nextval() in a read-only transaction (SQLSTATE 25006); \
         could not run the invariant sleeps: exceeded statement_timeout (300ms)"
    );
    assert_eq!(
        server
            .scalar("ro", "SELECT last_value FROM app.invoice_numbers")
            .await,
        sequence_before
    );
    assert_eq!(server.checksum("ro").await, before);

    // Without a finding, errors alone are a harness error: the check could not tell.
    let config =
        IntegrityConfig::new().invariant(Invariant::no_rows("bad", "SELECT * FROM app.nope"));
    let result = run(&IntegrityCheck::new(&db.target(), config)).await;
    let Outcome::Error { kind, message } = &result.outcome else {
        panic!("{:?}", result.outcome)
    };
    assert_eq!(*kind, ErrorKind::Harness);
    assert_eq!(
        message,
        "could not run the invariant bad: relation \"app.nope\" does not exist (SQLSTATE 42P01)"
    );
}

#[tokio::test]
async fn scan_limit_caps_the_rows_examined() {
    let server = Server::start().await;
    let db = server.database("big", "CREATE SCHEMA app; CREATE TABLE app.events (id int, actor int);\n\
        INSERT INTO app.events SELECT g, CASE WHEN g % 10 = 0 THEN NULL ELSE g END FROM generate_series(1, 1000) g;").await;
    let mut config = IntegrityConfig::new().not_null("app.events.actor").unwrap();
    config.scan_limit = Some(100);
    config.sample_rows = 2;
    let result = run(&IntegrityCheck::new(&db.target(), config)).await;
    assert_eq!(
        failed(&result),
        "NULLs in app.events.actor: 10 of 100 rows examined, e.g. {\"id\": 10, \"actor\": null}, \
         {\"id\": 20, \"actor\": null}"
    );
    assert_eq!(value(&result, "rows_examined"), 100.0);
}
