//! The database's schema against its declaration: the database as a whole (extensions, no
//! undeclared schema) and every declared Postgres schema (tables, columns, keys, indexes,
//! constraints, views, ...), exactly. Prints one line per check and every difference.
//!
//! `cargo run -p citadel-itest-examples --example check_database_schema -- [--host 127.0.0.1] [--port 55432] [--user citadel] [--database citadel] [--password-file target/services/postgres/password] [--schema config/database/expected_schema.yaml]`
//!
//! Exit code 0 when the schema matches, 1 when it differs or the database cannot be read.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use citadel_itest::config::Secret;
use citadel_itest::database::{
    DatabaseSchemaCheck, DatabaseTarget, ExpectedSchema, SchemaCheck, SslMode,
};
use citadel_itest::report::ConsoleReporter;
use citadel_itest::{Check, Suite};
use citadel_itest_examples::{exit_code, flag};

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let port = flag("--port", "55432");
    let db = DatabaseTarget::new("citadel")
        .host(flag("--host", "127.0.0.1"))
        .port(
            port.parse()
                .with_context(|| format!("--port {port}: not a port"))?,
        )
        .user(flag("--user", "citadel"))
        .password(Secret::file(flag(
            "--password-file",
            "target/services/postgres/password",
        )))
        .database(flag("--database", "citadel"))
        .sslmode(SslMode::Disable);
    let schema = flag("--schema", "config/database/expected_schema.yaml");
    let expected = Arc::new(
        ExpectedSchema::from_file(Path::new(&schema))
            .with_context(|| format!("read the declared schema {schema}"))?,
    );

    let mut suite = Suite::builder().check(
        "database",
        Arc::new(DatabaseSchemaCheck::new(&db, Arc::clone(&expected)).exact(true))
            as Arc<dyn Check>,
    );
    for namespace in expected.schemas.keys() {
        let check = SchemaCheck::new(&db, Arc::clone(&expected), namespace).exact(true);
        suite = suite.check("database", Arc::new(check));
    }
    let out = suite
        .build()
        .run(vec![Box::new(ConsoleReporter::stdout())])
        .await;
    Ok(exit_code(&out))
}
