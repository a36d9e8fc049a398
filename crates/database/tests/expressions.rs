//! Expressions (CHECK conditions, partial-index predicates, index key expressions, defaults)
//! are equal exactly when PostgreSQL means the same by them: the server canonicalises both the
//! declared and the found one. A table of equal and unequal pairs goes through the schema check
//! against a real PostgreSQL: no false pass, no false difference.

mod common;

use std::fmt::Write as _;
use std::sync::Arc;

use citadel_itest_core::{ErrorKind, Outcome};
use citadel_itest_database::{ExpectedSchema, SchemaCheck};
use common::{Server, failed, run, value};

const TABLE: &str = "CREATE SCHEMA app;
CREATE TABLE app.t (
    id int PRIMARY KEY,
    role text,
    n int,
    max_tokens int,
    weight numeric,
    enabled bool,
    amount numeric(12,2),
    email text,
    d date
);";

/// (stored condition, declared condition, equal?)
const CHECKS: &[(&str, &str, bool)] = &[
    // IN is stored as = ANY (ARRAY[...]): both spellings match it.
    (
        "role IN ('system','user')",
        "role IN ('system', 'user')",
        true,
    ),
    (
        "role IN ('system','user')",
        "role = ANY (ARRAY['system'::text, 'user'::text])",
        true,
    ),
    (
        "role = ANY (ARRAY['system'::text, 'user'::text])",
        "role IN ('system','user')",
        true,
    ),
    (
        "role IN ('system','user')",
        "role IN ('system', 'admin')",
        false,
    ),
    // BETWEEN is rewritten into two comparisons.
    ("n BETWEEN 1 AND 10", "n >= 1 AND n <= 10", true),
    ("n BETWEEN 1 AND 10", "n BETWEEN 1 AND 11", false),
    // Regrouped boolean logic is another condition.
    (
        "max_tokens > 0 AND (weight > 0 OR NOT enabled)",
        "max_tokens > 0 AND (weight > 0 OR NOT enabled)",
        true,
    ),
    (
        "(max_tokens > 0 AND weight > 0) OR NOT enabled",
        "max_tokens > 0 AND (weight > 0 OR NOT enabled)",
        false,
    ),
    (
        "max_tokens > 0 AND (weight > 0 OR NOT enabled)",
        "(max_tokens > 0 AND weight > 0) OR NOT enabled",
        false,
    ),
    (
        "(n > 1 AND n > 2) AND n > 3",
        "n > 1 AND (n > 2 AND n > 3)",
        true,
    ),
    // Operators, constants, casts.
    ("max_tokens > 0", "max_tokens >= 0", false),
    ("weight >= 0", "weight >= (0)::numeric", true),
    ("weight >= 0", "((weight >= 0))", true),
    ("amount >= 0", "amount::integer >= 0", false),
    ("amount >= 0", "amount >= 1", false),
    ("length(email) > 3", "LENGTH( email )>3", true),
    ("length(email) > 3", "length(email) > 4", false),
    ("email <> ''", "email != ''", true),
    ("email LIKE 'a%'", "email ~~ 'a%'::text", true),
    ("email LIKE 'a%'", "email ILIKE 'a%'", false),
    ("d > '2020-01-01'", "d > '2020-01-01'::date", true),
    ("d > '2020-01-01'", "d > '2020-01-02'", false),
    ("NOT (n < 0)", "n >= 0", true),
    ("coalesce(n, 0) > 0", "COALESCE(n,0) > 0", true),
    ("role IS NOT NULL", "role IS NULL", false),
];

/// (index key column, stored predicate, declared predicate, equal?)
const PREDICATES: &[(&str, &str, &str, bool)] = &[
    (
        "id",
        "enabled AND (weight > 0 OR max_tokens > 0)",
        "enabled AND (weight > 0 OR max_tokens > 0)",
        true,
    ),
    (
        "n",
        "enabled AND (weight > 0 OR max_tokens > 0)",
        "(enabled AND weight > 0) OR max_tokens > 0",
        false,
    ),
    (
        "role",
        "role IN ('a','b')",
        "role = ANY (ARRAY['a', 'b'])",
        true,
    ),
    ("email", "email IS NOT NULL", "(email IS NOT NULL)", true),
    (
        "d",
        "d BETWEEN '2020-01-01' AND '2021-01-01'",
        "d >= '2020-01-01' AND d <= '2021-01-01'",
        true,
    ),
    (
        "amount",
        "amount > 0",
        "amount > 0::numeric OR amount IS NULL",
        false,
    ),
];

/// (column type, stored default, declared default, equal?)
const DEFAULTS: &[(&str, &str, &str, bool)] = &[
    ("timestamptz", "now()", "now()", true),
    ("timestamptz", "(now())::date", "now()", false),
    ("timestamptz", "now()", "(now())::date", false),
    ("numeric(12,2)", "0", "0.00", true),
    ("text", "'active'", "'active'::text", true),
    ("text", "'active'", "'inactive'", false),
    ("date", "CURRENT_DATE", "current_date", true),
    ("boolean", "false", "true", false),
    ("integer", "1 + 1", "2", true),
    ("text", "'a' || 'b'", "'ab'", true),
];

#[tokio::test]
async fn a_table_of_expression_pairs_has_no_false_pass_and_no_false_difference() {
    assert!(CHECKS.len() + PREDICATES.len() + DEFAULTS.len() >= 20);
    let mut sql = String::from(TABLE);
    let mut yaml = String::from(
        "schemas:\n  app:\n    tables:\n      t:\n        columns:\n          id: int NOT NULL\n          role: text\n          n: int\n          max_tokens: int\n          weight: numeric\n          enabled: bool\n          amount: numeric(12,2)\n          email: text\n          d: date\n",
    );
    for (i, (ty, stored, declared, _)) in DEFAULTS.iter().enumerate() {
        writeln!(
            sql,
            "ALTER TABLE app.t ADD COLUMN def{i} {ty} DEFAULT {stored};"
        )
        .unwrap();
        writeln!(
            yaml,
            "          def{i}: {{ type: \"{ty}\", default: \"{declared}\" }}"
        )
        .unwrap();
    }
    yaml.push_str("        primary_key: [id]\n        checks:\n");
    for (i, (stored, declared, _)) in CHECKS.iter().enumerate() {
        writeln!(
            sql,
            "ALTER TABLE app.t ADD CONSTRAINT c{i:02} CHECK ({stored});"
        )
        .unwrap();
        writeln!(
            yaml,
            "          - {{ name: c{i:02}, expression: \"{declared}\" }}"
        )
        .unwrap();
    }
    yaml.push_str("        indexes:\n");
    for (i, (col, stored, declared, _)) in PREDICATES.iter().enumerate() {
        writeln!(sql, "CREATE INDEX p{i} ON app.t ({col}) WHERE {stored};").unwrap();
        writeln!(
            yaml,
            "          - {{ columns: [{col}], name: p{i}, predicate: \"{declared}\" }}"
        )
        .unwrap();
    }
    let server = Server::start().await;
    let db = server.database("pairs", &sql).await;
    let spec = Arc::new(ExpectedSchema::from_yaml(&yaml).expect("yaml"));
    let result = run(&SchemaCheck::new(&db.target(), spec, "app").exact(true)).await;
    let message = failed(&result);
    let parts: Vec<&str> = message.split("; ").collect();

    let mut expected_differences = 0;
    for (i, (stored, declared, equal)) in CHECKS.iter().enumerate() {
        let named = parts.iter().any(|p| {
            p.starts_with(&format!(
                "check constraint c{i:02} on app.t: expected CHECK ({declared}), found CHECK ("
            ))
        });
        assert_eq!(
            named,
            !equal,
            "CHECK ({stored}) declared as {declared:?}: expected {}; message: {message}",
            if *equal { "equal" } else { "a difference" }
        );
        expected_differences += usize::from(!equal);
    }
    for (i, (col, stored, declared, equal)) in PREDICATES.iter().enumerate() {
        let named = parts.iter().any(|p| {
            p.starts_with(&format!(
                "index app.t({col}) (p{i}): expected WHERE {declared}, found WHERE "
            ))
        });
        assert_eq!(
            named, !equal,
            "WHERE {stored} declared as {declared:?}; message: {message}"
        );
        expected_differences += usize::from(!equal);
    }
    for (i, (ty, stored, declared, equal)) in DEFAULTS.iter().enumerate() {
        let named = parts.iter().any(|p| {
            p.starts_with(&format!(
                "column app.t.def{i}: expected default {declared}, found default "
            ))
        });
        assert_eq!(
            named, !equal,
            "{ty} DEFAULT {stored} declared as {declared:?}; message: {message}"
        );
        expected_differences += usize::from(!equal);
    }
    assert_eq!(
        parts.len(),
        expected_differences,
        "nothing else differs: {message}"
    );
    assert_eq!(value(&result, "differences"), expected_differences as f64);
    assert!(value(&result, "expressions") >= 40.0);
}

#[tokio::test]
async fn the_issue_cases_regrouped_check_and_date_default_fail_and_in_passes() {
    let server = Server::start().await;
    let db = server
        .database(
            "issue",
            "CREATE SCHEMA llm;
             CREATE TABLE llm.models (
                 id int PRIMARY KEY,
                 max_tokens int NOT NULL,
                 weight int NOT NULL,
                 enabled bool NOT NULL,
                 role text NOT NULL CHECK (role IN ('system','user')),
                 created_at timestamptz NOT NULL DEFAULT now(),
                 CONSTRAINT models_weight_check CHECK (max_tokens > 0 AND (weight > 0 OR NOT enabled))
             );
             CREATE INDEX models_enabled_idx ON llm.models (enabled) WHERE max_tokens > 0 AND (weight > 0 OR NOT enabled);",
        )
        .await;
    let yaml = "schemas:
  llm:
    tables:
      models:
        columns:
          id: int NOT NULL
          max_tokens: int NOT NULL
          weight: int NOT NULL
          enabled: bool NOT NULL
          role: text NOT NULL
          created_at: timestamptz NOT NULL DEFAULT now()
        primary_key: [id]
        checks:
          - { name: models_role_check, expression: \"role IN ('system','user')\" }
          - { name: models_weight_check, expression: max_tokens > 0 AND (weight > 0 OR NOT enabled) }
        indexes:
          - { columns: [enabled], predicate: max_tokens > 0 AND (weight > 0 OR NOT enabled) }
";
    let spec = Arc::new(ExpectedSchema::from_yaml(yaml).unwrap());
    let check = SchemaCheck::new(&db.target(), spec, "llm").exact(true);
    run(&check).await.assert_passed();

    server
        .psql(
            "issue",
            "ALTER TABLE llm.models DROP CONSTRAINT models_weight_check,
               ADD CONSTRAINT models_weight_check CHECK ((max_tokens > 0 AND weight > 0) OR NOT enabled);
             DROP INDEX llm.models_enabled_idx;
             CREATE INDEX models_enabled_idx ON llm.models (enabled) WHERE (max_tokens > 0 AND weight > 0) OR NOT enabled;
             ALTER TABLE llm.models ALTER COLUMN created_at SET DEFAULT (now())::date;",
        )
        .await;
    let message = failed(&run(&check).await);
    assert_eq!(
        message,
        "column llm.models.created_at: expected default now(), found default (now())::date; \
         index llm.models(enabled) (models_enabled_idx): expected WHERE max_tokens > 0 AND \
         (weight > 0 OR NOT enabled), found WHERE (((max_tokens > 0) AND (weight > 0)) OR (NOT enabled)); \
         check constraint models_weight_check on llm.models: expected CHECK (max_tokens > 0 AND \
         (weight > 0 OR NOT enabled)), found CHECK ((((max_tokens > 0) AND (weight > 0)) OR (NOT enabled)))"
    );
    // The drifted table really accepts what the declared check refused.
    server
        .psql(
            "issue",
            "INSERT INTO llm.models VALUES (1, -5, 0, false, 'user');",
        )
        .await;
}

#[tokio::test]
async fn a_declared_expression_the_server_cannot_use_is_a_problem_with_the_declaration() {
    let server = Server::start().await;
    let db = server
        .database(
            "bad",
            "CREATE SCHEMA app;
             CREATE TABLE app.t (n int CONSTRAINT t_n_check CHECK (n > 0), m int CONSTRAINT t_m_check CHECK (m > 0), k int DEFAULT 1);",
        )
        .await;
    let yaml = "schemas:
  app:
    tables:
      t:
        columns:
          n: int
          m: int
          k: int DEFAULT nosuchfunction()
        checks:
          - { name: t_n_check, expression: n >>> 0 }
          - { name: t_m_check, expression: m > 1 }
";
    let spec = Arc::new(ExpectedSchema::from_yaml(yaml).unwrap());
    let result = run(&SchemaCheck::new(&db.target(), spec, "app").exact(false)).await;
    let Outcome::Error { kind, message } = &result.outcome else {
        panic!("expected an error: {:?}", result.outcome)
    };
    assert_eq!(*kind, ErrorKind::Harness);
    assert!(
        message.starts_with("problem with the declaration: "),
        "{message}"
    );
    assert!(
        message.contains("table app.t: default of column k `nosuchfunction()`: function nosuchfunction() does not exist"),
        "{message}"
    );
    assert!(
        message.contains(
            "table app.t: check expression `n >>> 0`: operator does not exist: integer >>> integer"
        ),
        "{message}"
    );
    // The drift that could be told is still reported, the unusable expressions are not drift.
    assert!(
        message.ends_with(
            "; differences besides: check constraint t_m_check on app.t: expected CHECK (m > 1), found CHECK ((m > 0))"
        ),
        "{message}"
    );

    // An expression that would break out of its place is refused before it reaches the server.
    let yaml = "schemas: { app: { tables: { t: { columns: { n: int }, checks: [{ name: t_n_check, expression: \"n > 0)) FROM c), (SELECT 1\" }] } } } }";
    let spec = Arc::new(ExpectedSchema::from_yaml(yaml).unwrap());
    let result = run(&SchemaCheck::new(&db.target(), spec, "app").exact(false)).await;
    let message = result.outcome.message().unwrap_or_default().to_string();
    assert!(
        message
            .contains("check expression `n > 0)) FROM c), (SELECT 1`: `)` without a matching `(`"),
        "{message}"
    );
}
