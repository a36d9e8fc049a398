//! One-liners from a testkit PostgreSQL to the database tester: `DatabaseTarget::from_url`
//! against the real server, and the schema builders (`TableSpec::unique`, `TableSpec::check`,
//! `SchemaCheck::new(..).exact(..)`) against a real catalog.

use citadel_itest_core::{Status, run_one};
use citadel_itest_database::{
    CheckSpec, DatabaseSchemaCheck, DatabaseTarget, ExpectedSchema, IntegrityCheck,
    IntegrityConfig, NamespaceSpec, SchemaCheck, SslMode, TableSpec,
};
use citadel_itest_testkit::Postgres;

const SQL: &str = "CREATE SCHEMA shop; \
    CREATE TABLE shop.orders (id bigint PRIMARY KEY, code text NOT NULL, amount int NOT NULL, \
    CONSTRAINT orders_code_key UNIQUE (code), CONSTRAINT positive_amount CHECK (amount > 0));";

fn orders(table: TableSpec) -> ExpectedSchema {
    ExpectedSchema::new().schema("shop", NamespaceSpec::new().table("orders", table))
}

fn declared() -> TableSpec {
    TableSpec::new()
        .column("id", "bigint NOT NULL")
        .column("code", "text NOT NULL")
        .column("amount", "int NOT NULL")
        .primary_key(["id"])
}

#[tokio::test]
async fn from_url_points_every_check_at_a_testkit_server_in_one_call() {
    let pg = Postgres::start().await.unwrap();
    let dsn = pg.create_database("shop").await.unwrap();
    pg.execute_in("shop", SQL).await.unwrap();

    let db = DatabaseTarget::from_url("main", &dsn).unwrap();
    assert_eq!(
        db.describe(),
        format!("citadel@127.0.0.1:{}/shop", pg.port())
    );
    assert_eq!(db.user.as_deref(), Some(pg.user()));
    assert_eq!(
        db.password.as_ref().unwrap().resolve().unwrap().expose(),
        pg.password()
    );

    let rules = IntegrityConfig::new().not_null("shop.orders.code").unwrap();
    run_one(&IntegrityCheck::new(&db, rules))
        .await
        .assert_passed();

    // The builders declare what the table has: exact mode finds nothing undeclared.
    let full = orders(
        declared()
            .unique(["code"])
            .check(CheckSpec::new("positive_amount").expression("amount > 0")),
    );
    run_one(&SchemaCheck::new(&db, full.clone(), "shop").exact(true))
        .await
        .assert_passed();
    run_one(&DatabaseSchemaCheck::new(&db, full).exact(true))
        .await
        .assert_passed();

    // Without them exact mode reports the unique key and the check constraint; not exact, it
    // compares only what is declared.
    let result = run_one(&SchemaCheck::new(&db, orders(declared()), "shop").exact(true)).await;
    assert_eq!(result.outcome.status(), Status::Failed, "{result:?}");
    let message = result.outcome.message().unwrap();
    assert!(message.contains("positive_amount"), "{message}");
    assert!(message.contains("code"), "{message}");
    run_one(&SchemaCheck::new(&db, orders(declared()), "shop"))
        .await
        .assert_passed();

    // A wrong expression in a declared check constraint is a difference.
    let wrong = orders(
        declared()
            .unique(["code"])
            .check(CheckSpec::new("positive_amount").expression("amount > 10")),
    );
    let result = run_one(&SchemaCheck::new(&db, wrong, "shop")).await;
    assert_eq!(result.outcome.status(), Status::Failed, "{result:?}");
    assert!(!format!("{result:?}").contains(pg.password()));

    // The parts stay editable: the same server, another database that does not exist.
    let missing = DatabaseTarget::from_url("main", &pg.dsn())
        .unwrap()
        .database("no_such_db");
    let result = run_one(&IntegrityCheck::new(&missing, IntegrityConfig::new())).await;
    assert_ne!(result.outcome.status(), Status::Passed, "{result:?}");
    assert!(!format!("{result:?}").contains(pg.password()));
}

#[test]
fn from_url_reads_every_part_and_names_what_is_wrong() {
    let db = DatabaseTarget::from_url(
        "main",
        "postgresql://app%20user:p%40ss%2Fw@[::1]:6543/my%20db?sslmode=verify-full",
    )
    .unwrap();
    assert_eq!(db.name, "main");
    assert_eq!(db.host.as_deref(), Some("::1"));
    assert_eq!(db.port, Some(6543));
    assert_eq!(db.user.as_deref(), Some("app user"));
    assert_eq!(
        db.password.as_ref().unwrap().resolve().unwrap().expose(),
        "p@ss/w"
    );
    assert_eq!(db.database.as_deref(), Some("my db"));
    assert_eq!(db.sslmode, Some(SslMode::VerifyFull));
    assert!(db.dsn.is_none());

    // Parts the URL leaves out keep their defaults.
    let bare = DatabaseTarget::from_url("main", "postgres://127.0.0.1").unwrap();
    assert_eq!(bare.describe(), "?@127.0.0.1:5432/?");
    assert!(bare.password.is_none() && bare.sslmode.is_none());

    let cases = [
        ("mysql://u:hunter2hunter2@127.0.0.1/db", "scheme `mysql`"),
        ("postgres://u:hunter2hunter2@127.0.0.1:x/db", "not a URL"),
        (
            "postgres://u:hunter2hunter2@127.0.0.1/db?sslmode=sometimes",
            "sslmode `sometimes`",
        ),
        (
            "postgres://u:hunter2hunter2@127.0.0.1/db?options=-c",
            "parameter `options`",
        ),
        ("no url at all", "not a URL"),
    ];
    for (url, expected) in cases {
        let message = DatabaseTarget::from_url("main", url)
            .unwrap_err()
            .to_string();
        assert!(message.starts_with("database url: "), "{message}");
        assert!(message.contains(expected), "{url}: {message}");
        assert!(!message.contains("hunter2"), "{message}");
    }
}
