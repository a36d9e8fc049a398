//! Times schema validation of a 200-table schema in a testkit PostgreSQL (target: < 1 s).
//!
//! ```sh
//! cargo run --release -p citadel-itest-database --example schema_bench              # 200 tables, 15 rounds
//! cargo run --release -p citadel-itest-database --example schema_bench -- 200 15
//! cargo run --release -p citadel-itest-database --example schema_bench -- 200 15 serial  # bigserial keys
//! ```
//!
//! Each table has 7 columns (identity, FK to the previous table, NOT NULL, varchar, numeric with
//! default, timestamptz default, jsonb), a primary key, a unique key, a check constraint, an
//! index, a trigger, an RLS policy and a grant; every tenth table also a view, a function, an
//! enum type and a sequence. The check runs in exact mode, so every column, key, index,
//! constraint and object is compared, with every CHECK, default and policy expression
//! canonicalised by the server. Prints the time of one whole check (connect, catalog round,
//! canonicalisation, diff), of the catalog round and of the canonicalisation.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use citadel_itest_core::config::Secret;
use citadel_itest_core::run_one;
use citadel_itest_database::{DatabaseTarget, ExpectedSchema, SchemaCheck};
use citadel_itest_testkit::Postgres;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let tables: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(200);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(15);
    // `serial`: `id bigserial` instead of an identity column, so every table has its own
    // default (`nextval` of its own sequence) and no two defaults are the same expression.
    let serial = match args.next().as_deref() {
        None | Some("identity") => false,
        Some("serial") => true,
        Some(other) => bail!("third argument: `identity` or `serial`, not `{other}`"),
    };

    let pg = Postgres::start().await.context("start postgres")?;
    let dsn = pg.create_database("bench").await?;

    let mut sql = String::from(
        "CREATE SCHEMA bench;\n\
         DO $$ BEGIN CREATE ROLE bench_reader; EXCEPTION WHEN duplicate_object THEN NULL; END $$;\n\
         CREATE FUNCTION bench.touch() RETURNS trigger LANGUAGE plpgsql AS \
         $f$ BEGIN RETURN NEW; END $f$;\n",
    );
    let mut yaml = String::from("schemas:\n  bench:\n    tables:\n");
    for i in 0..tables {
        let parent = if i == 0 {
            String::new()
        } else {
            format!(" REFERENCES bench.t{} (id) ON DELETE CASCADE", i - 1)
        };
        let (id_sql, id_yaml) = if serial {
            (
                "bigserial".to_string(),
                format!("\"bigint NOT NULL DEFAULT nextval('bench.t{i}_id_seq'::regclass)\""),
            )
        } else {
            (
                "bigint GENERATED ALWAYS AS IDENTITY".to_string(),
                "{ type: bigint, not_null: true, identity: always }".to_string(),
            )
        };
        writeln!(
            sql,
            "CREATE TABLE bench.t{i} (\n\
             id {id_sql} PRIMARY KEY,\n\
             parent_id bigint{parent},\n\
             name text NOT NULL,\n\
             email varchar(200),\n\
             amount numeric(12,2) NOT NULL DEFAULT 0,\n\
             created_at timestamptz NOT NULL DEFAULT now(),\n\
             attrs jsonb,\n\
             CONSTRAINT t{i}_name_key UNIQUE (name),\n\
             CONSTRAINT t{i}_amount_check CHECK (amount >= 0));\n\
             CREATE INDEX t{i}_created_at_idx ON bench.t{i} (created_at);\n\
             CREATE TRIGGER t{i}_touch BEFORE UPDATE ON bench.t{i} FOR EACH ROW EXECUTE FUNCTION bench.touch();\n\
             ALTER TABLE bench.t{i} ENABLE ROW LEVEL SECURITY;\n\
             CREATE POLICY t{i}_named ON bench.t{i} FOR SELECT TO bench_reader USING (name <> '' AND amount >= 0);\n\
             GRANT SELECT ON bench.t{i} TO bench_reader;"
        )?;
        if i % 10 == 0 {
            writeln!(
                sql,
                "CREATE VIEW bench.v{i} AS SELECT id, name FROM bench.t{i} WHERE amount > 0;\n\
                 CREATE FUNCTION bench.f{i}(x integer) RETURNS integer LANGUAGE sql IMMUTABLE AS $f$ SELECT x + {i} $f$;\n\
                 CREATE TYPE bench.e{i} AS ENUM ('a', 'b', 'c');\n\
                 CREATE SEQUENCE bench.s{i} INCREMENT BY 5;"
            )?;
        }
        write!(
            yaml,
            "      t{i}:\n\
             \x20       columns:\n\
             \x20         id: {id_yaml}\n\
             \x20         parent_id: bigint\n\
             \x20         name: text NOT NULL\n\
             \x20         email: varchar(200)\n\
             \x20         amount: numeric(12,2) NOT NULL DEFAULT 0\n\
             \x20         created_at: timestamptz NOT NULL DEFAULT now()\n\
             \x20         attrs: jsonb\n\
             \x20       primary_key: [id]\n\
             \x20       unique: [[name]]\n\
             \x20       indexes: [[created_at]]\n\
             \x20       checks: [{{ name: t{i}_amount_check, expression: amount >= 0 }}]\n\
             \x20       row_level_security: true\n\
             \x20       triggers: {{ t{i}_touch: {{ timing: before, events: [update], function: touch }} }}\n\
             \x20       policies: {{ t{i}_named: {{ command: select, roles: [bench_reader], using: \"name <> '' AND amount >= 0\" }} }}\n\
             \x20       grants: {{ bench_reader: [select] }}\n"
        )?;
        if i > 0 {
            writeln!(
                yaml,
                "        foreign_keys: [{{ columns: [parent_id], references: bench.t{}(id), on_delete: cascade }}]",
                i - 1
            )?;
        }
    }
    yaml.push_str(
        "    functions:\n      touch: { arguments: [], returns: trigger, language: plpgsql }\n",
    );
    let mut views = String::from("    views:\n");
    let mut enums = String::from("    enums:\n");
    let mut sequences = String::from("    sequences:\n");
    for i in (0..tables).step_by(10) {
        writeln!(
            views,
            "      v{i}: {{ columns: {{ id: bigint, name: text }}, definition: \"SELECT id, name FROM bench.t{i} WHERE amount > 0\" }}"
        )?;
        writeln!(
            yaml,
            "      f{i}: {{ arguments: [integer], returns: integer, language: sql, volatility: immutable }}"
        )?;
        writeln!(enums, "      e{i}: [a, b, c]")?;
        writeln!(sequences, "      s{i}: {{ type: bigint, increment: 5 }}")?;
    }
    yaml.push_str(&views);
    yaml.push_str(&enums);
    yaml.push_str(&sequences);
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), &sql)?;
    let mut psql = pg.psql_command("bench")?;
    psql.args(["-q", "-1", "-f"]).arg(file.path());
    let out = psql.output().await?;
    if !out.status.success() {
        bail!("psql: {}", String::from_utf8_lossy(&out.stderr));
    }
    let spec = Arc::new(ExpectedSchema::from_yaml(&yaml)?);

    let target = DatabaseTarget::new("bench").dsn(Secret::inline(dsn));
    let check = SchemaCheck::new(&target, spec, "bench").exact(true);
    let warm = run_one(&check).await;
    if !warm.outcome.is_passed() {
        bail!("schema check did not pass: {:?}", warm.outcome);
    }
    let mut totals = Vec::with_capacity(rounds);
    let mut catalog = Vec::with_capacity(rounds);
    let mut canon = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let r = run_one(&check).await;
        if !r.outcome.is_passed() {
            bail!("schema check did not pass: {:?}", r.outcome);
        }
        totals.push(r.duration);
        let ms = r
            .measurement("catalog_read_time")
            .and_then(|m| m.value)
            .unwrap_or(f64::NAN);
        catalog.push(Duration::from_secs_f64(ms / 1000.0));
        let ms = r
            .measurement("canonicalise_time")
            .and_then(|m| m.value)
            .unwrap_or(f64::NAN);
        canon.push(Duration::from_secs_f64(ms / 1000.0));
    }
    let stats = |mut v: Vec<Duration>| {
        v.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        format!(
            "min {:.1} ms, median {:.1} ms, max {:.1} ms",
            ms(v[0]),
            ms(v[v.len() / 2]),
            ms(v[v.len() - 1])
        )
    };
    println!(
        "schema validation of {tables} tables ({} columns), exact mode, {rounds} rounds:",
        tables * 7
    );
    let expressions = warm
        .measurement("expressions")
        .and_then(|m| m.value)
        .unwrap_or(f64::NAN);
    println!(
        "  whole check (connect + catalog + canonicalise + diff): {}",
        stats(totals.clone())
    );
    println!(
        "  catalog round (15 queries):                            {}",
        stats(catalog)
    );
    println!(
        "  canonicalise ({expressions} expressions, views, types):     {}",
        stats(canon)
    );
    // The peer: `pg_dump --schema-only` of the same database, what a "dump and diff" schema check
    // starts with (the diff itself comes on top). Same server, same rounds.
    let mut dumps = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = std::time::Instant::now();
        let out = std::process::Command::new("pg_dump")
            .args([
                "--schema-only",
                "-h",
                "127.0.0.1",
                "-U",
                pg.user(),
                "-d",
                "bench",
            ])
            .arg("-p")
            .arg(pg.port().to_string())
            .env("PGPASSWORD", pg.password())
            .output()
            .context("run pg_dump (Debian package postgresql-client)")?;
        if !out.status.success() {
            bail!("pg_dump failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        dumps.push(start.elapsed());
    }
    println!(
        "  peer: pg_dump --schema-only (dump only, no diff): {}",
        stats(dumps)
    );
    let median = {
        let mut v = totals;
        v.sort();
        v[v.len() / 2]
    };
    println!(
        "  target < 1 s: {}",
        if median < Duration::from_secs(1) {
            "met"
        } else {
            "MISSED"
        }
    );
    Ok(())
}
