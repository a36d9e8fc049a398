//! Views, functions, triggers, policies, enum types, sequences and grants, declared in YAML and
//! compared in exact mode against a real PostgreSQL: a matching declaration passes, and one drift
//! per kind is named.

mod common;

use std::sync::Arc;

use citadel_itest_database::{ExpectedSchema, SchemaCheck};
use common::{Server, failed, run, value};

const SQL: &str = r#"
CREATE ROLE app_reader;
CREATE ROLE app_writer;
CREATE SCHEMA app;
GRANT USAGE ON SCHEMA app TO app_reader, app_writer;
CREATE TYPE app.message_role AS ENUM ('system', 'user', 'assistant');
CREATE TABLE app.users (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email text NOT NULL,
    active boolean NOT NULL DEFAULT true,
    tenant text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE app.users ENABLE ROW LEVEL SECURITY;
CREATE POLICY users_tenant ON app.users FOR SELECT TO app_reader
    USING (tenant = current_setting('app.tenant', true) AND active);
CREATE POLICY users_write ON app.users AS RESTRICTIVE FOR UPDATE TO app_writer
    USING (tenant IN ('a', 'b')) WITH CHECK (email <> '');
GRANT SELECT ON app.users TO app_reader;
GRANT SELECT, INSERT, UPDATE ON app.users TO app_writer;
CREATE SEQUENCE app.invoice_numbers AS integer INCREMENT BY 10;
CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN NEW.updated_at := now(); RETURN NEW; END $$;
CREATE FUNCTION app.user_count(tenant_name text) RETURNS bigint LANGUAGE sql STABLE
    SECURITY DEFINER AS $$ SELECT count(*) FROM app.users WHERE tenant = tenant_name $$;
CREATE TRIGGER users_touch BEFORE INSERT OR UPDATE ON app.users
    FOR EACH ROW EXECUTE FUNCTION app.touch();
CREATE VIEW app.active_users AS SELECT id, email FROM app.users WHERE active;
"#;

const YAML: &str = r#"
schemas:
  app:
    grants:
      app_reader: [usage]
      app_writer: [usage]
    enums:
      message_role: [system, user, assistant]
    sequences:
      invoice_numbers: { type: integer, increment: 10 }
    functions:
      touch: { arguments: [], returns: trigger, language: plpgsql, volatility: volatile, security_definer: false }
      user_count: { arguments: [text], returns: bigint, language: sql, volatility: stable, security_definer: true }
    views:
      active_users:
        columns: { id: bigint, email: text }
        definition: "SELECT id, email FROM app.users WHERE active"
        materialized: false
    tables:
      users:
        columns:
          id: { type: bigint, not_null: true, identity: always }
          email: text NOT NULL
          active: boolean NOT NULL DEFAULT true
          tenant: text NOT NULL
          updated_at: timestamptz NOT NULL DEFAULT now()
        primary_key: [id]
        row_level_security: true
        triggers:
          users_touch: { timing: before, events: [update, insert], level: row, function: touch }
        policies:
          users_tenant:
            command: select
            roles: [app_reader]
            using: "active AND tenant = current_setting('app.tenant', true)"
          users_write:
            command: update
            roles: [app_writer]
            permissive: false
            using: "tenant = ANY (ARRAY['a', 'b'])"
            with_check: "email != ''"
        grants:
          app_reader: [select]
          app_writer: [insert, select, update]
"#;

fn spec() -> Arc<ExpectedSchema> {
    Arc::new(ExpectedSchema::from_yaml(YAML).expect("yaml"))
}

#[tokio::test]
async fn every_object_kind_that_matches_its_declaration_passes_in_exact_mode() {
    let server = Server::start().await;
    // Roles are cluster-wide: the drift test's server has its own.
    let db = server.database("objects", SQL).await;
    let result = run(&SchemaCheck::new(&db.target(), spec(), "app").exact(true)).await;
    let message = result.outcome.message().unwrap_or_default().to_string();
    // The policy's USING is written in another order than stored: `active AND tenant = ...` is
    // a different condition from `tenant = ... AND active` only in operand order, which
    // Postgres keeps; so this declaration must name that difference and nothing else.
    assert_eq!(
        message,
        "policy users_tenant on app.users: expected USING (active AND tenant = \
         current_setting('app.tenant', true)), found USING ((tenant = current_setting('app.tenant'::text, true)) AND active)"
    );
    let fixed = YAML.replace(
        "using: \"active AND tenant = current_setting('app.tenant', true)\"",
        "using: \"tenant = current_setting('app.tenant', true) AND active\"",
    );
    let spec = Arc::new(ExpectedSchema::from_yaml(&fixed).unwrap());
    let result = run(&SchemaCheck::new(&db.target(), spec.clone(), "app").exact(true)).await;
    result.assert_passed();
    assert_eq!(value(&result, "differences"), 0.0);
    // Read-only mode compares the view's text as pg_get_viewdef prints it: the declared SELECT
    // here is spelled differently, and the result says how it compared.
    let result = run(&SchemaCheck::new(&db.target(), spec, "app")
        .exact(true)
        .read_only(true))
    .await;
    assert_eq!(
        failed(&result),
        "view app.active_users: definition differs: expected SELECT id, email FROM app.users \
         WHERE active, found SELECT users.id, users.email FROM app.users WHERE users.active \
         (read-only mode compares the text as pg_get_viewdef prints it)"
    );
}

#[tokio::test]
async fn one_drift_per_object_kind_is_named() {
    let server = Server::start().await;
    let spec = Arc::new(
        ExpectedSchema::from_yaml(&YAML.replace(
            "using: \"active AND tenant = current_setting('app.tenant', true)\"",
            "using: \"tenant = current_setting('app.tenant', true) AND active\"",
        ))
        .unwrap(),
    );
    let cases: [(&str, &str, &str); 8] = [
        (
            "view_definition",
            "CREATE OR REPLACE VIEW app.active_users AS SELECT id, email FROM app.users WHERE NOT active;",
            "view app.active_users: definition differs: expected SELECT id, email FROM app.users \
             WHERE active, found SELECT users.id, users.email FROM app.users WHERE NOT users.active",
        ),
        (
            "function_volatility",
            "ALTER FUNCTION app.user_count(text) VOLATILE;",
            "function app.user_count(text): expected STABLE, found VOLATILE",
        ),
        (
            "trigger_events",
            "DROP TRIGGER users_touch ON app.users; CREATE TRIGGER users_touch BEFORE UPDATE ON \
             app.users FOR EACH ROW EXECUTE FUNCTION app.touch();",
            "trigger users_touch on app.users: expected events insert or update, found update",
        ),
        (
            "policy_using",
            "ALTER POLICY users_write ON app.users USING (tenant IN ('a', 'c'));",
            "policy users_write on app.users: expected USING (tenant = ANY (ARRAY['a', 'b'])), \
             found USING (tenant = ANY (ARRAY['a'::text, 'c'::text]))",
        ),
        (
            "enum_order",
            "ALTER TYPE app.message_role RENAME VALUE 'user' TO 'tmp'; \
             ALTER TYPE app.message_role RENAME VALUE 'assistant' TO 'user'; \
             ALTER TYPE app.message_role RENAME VALUE 'tmp' TO 'assistant';",
            "enum type app.message_role: expected labels (system, user, assistant), found \
             (system, assistant, user)",
        ),
        (
            "revoked_grant",
            "REVOKE UPDATE ON app.users FROM app_writer;",
            "table app.users: role app_writer lacks UPDATE",
        ),
        (
            "sequence_increment",
            "ALTER SEQUENCE app.invoice_numbers INCREMENT BY 1;",
            "sequence app.invoice_numbers: expected increment 10, found 1",
        ),
        (
            "extra_objects_exact",
            "CREATE VIEW app.extra AS SELECT 1 AS one; GRANT CREATE ON SCHEMA app TO app_reader; \
             CREATE TYPE app.mood AS ENUM ('ok');",
            "unexpected view app.extra; unexpected enum type app.mood (ok); schema app: role \
             app_reader has CREATE besides what is declared",
        ),
    ];
    for (i, (name, alteration, expected)) in cases.iter().enumerate() {
        // Roles are cluster-wide: create them once.
        let sql = if i == 0 {
            format!("{SQL}\n{alteration}")
        } else {
            format!(
                "{}\n{alteration}",
                SQL.replace("CREATE ROLE app_reader;\nCREATE ROLE app_writer;\n", "")
            )
        };
        let db = server.database(name, &sql).await;
        let result = run(&SchemaCheck::new(&db.target(), spec.clone(), "app").exact(true)).await;
        assert_eq!(&failed(&result), expected, "case {name}");
    }
}
