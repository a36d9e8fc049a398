//! Server-canonical SQL expressions: two expressions are equal exactly when PostgreSQL deparses
//! them to the same text after parsing, analysing and simplifying them the same way.
//!
//! Every expression of a schema check (declared and found: CHECK conditions, index predicates
//! and key expressions, column defaults) goes into ONE read-only statement:
//!
//! ```sql
//! EXPLAIN (VERBOSE, COSTS OFF, FORMAT JSON) SELECT
//!   (SELECT (role IN ('system', 'user')) FROM (SELECT NULL::integer AS "id", NULL::text AS "role" OFFSET 0) AS c),
//!   (SELECT CAST((now()) AS timestamp with time zone)),
//!   ...
//! ```
//!
//! Each scalar subquery becomes an init plan whose `Output` is the expression as the planner
//! deparses it: `IN (...)` is already `= ANY ('{system,user}'::text[])`, `BETWEEN` two
//! comparisons, implicit casts explicit, constants folded, redundant parentheses gone, while
//! regrouped boolean logic, another operator, constant or cast stays different. Column
//! references point at a row of NULLs typed like the live table's columns (`OFFSET 0` keeps the
//! planner from folding them away), so nothing is read from the table and no privilege on it is
//! needed; defaults, which cannot reference columns, are cast to the column's type as Postgres
//! does when it stores one. The statement is planned, never executed, inside a READ ONLY
//! transaction. If it fails (a declared expression that does not parse or plan), every
//! expression is tried alone under a savepoint, so the bad one is named and the others still
//! compare.

use std::collections::HashMap;

use sqlx::{Connection as _, PgConnection, Row};

use crate::catalog::Table;
use crate::connect::describe;
use crate::ident::quote_ident;

/// What an expression is evaluated against: the columns of a table (CHECK, predicate, index
/// key) or nothing (a default, cast to the column's type).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Context {
    /// `FROM (SELECT NULL::type AS "col", ... OFFSET 0) AS c`.
    Row(String),
    /// No FROM; the result is cast to this type.
    Cast(String),
}

impl Context {
    /// The columns of a live table.
    pub(crate) fn row_of(table: &Table) -> Context {
        let cols: Vec<String> = table
            .columns
            .iter()
            .map(|c| format!("NULL::{} AS {}", c.type_name, quote_ident(&c.name)))
            .collect();
        Context::Row(cols.join(", "))
    }

    /// A value of type `type_name` (as `format_type` prints it).
    pub(crate) fn cast_to(type_name: &str) -> Context {
        Context::Cast(type_name.to_string())
    }

    fn select(&self, expr: &str) -> String {
        match self {
            Context::Row(cols) => {
                format!("(SELECT (\n{expr}\n) FROM (SELECT {cols} OFFSET 0) AS c)")
            }
            Context::Cast(ty) => format!("(SELECT CAST((\n{expr}\n) AS {ty}))"),
        }
    }
}

type Key = (Context, String);

/// Expressions to canonicalise, then their canonical forms.
#[derive(Debug, Default)]
pub(crate) struct Canon {
    wanted: Vec<Key>,
    done: HashMap<Key, Result<String, String>>,
    /// Round trips of the last [`Canon::resolve`] (1 unless some expression failed).
    pub(crate) statements: usize,
}

/// Outcome of comparing a declared expression with a found one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Same {
    Equal,
    Different,
    /// The declared expression cannot be used: why (the server's words).
    BadDeclaration(String),
}

impl Canon {
    pub(crate) fn new() -> Self {
        Canon::default()
    }

    /// Ask for the canonical form of `expr` in `ctx` (duplicates are asked once).
    pub(crate) fn want(&mut self, ctx: &Context, expr: &str) {
        let key = (ctx.clone(), expr.trim().to_string());
        if !self.done.contains_key(&key) && !self.wanted.contains(&key) {
            self.wanted.push(key);
        }
    }

    /// How many distinct expressions are waiting for [`Canon::resolve`].
    pub(crate) fn wanted_len(&self) -> usize {
        self.wanted.len()
    }

    /// Canonicalises everything asked for: one statement, or one per expression if that
    /// statement fails. `Err` only when the connection itself fails.
    pub(crate) async fn resolve(&mut self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        let wanted = std::mem::take(&mut self.wanted);
        self.statements = 0;
        if wanted.is_empty() {
            return Ok(());
        }
        let mut usable = Vec::new();
        for key in wanted {
            match self_contained(&key.1) {
                Ok(()) => usable.push(key),
                Err(why) => {
                    self.done.insert(key, Err(why));
                }
            }
        }
        if usable.is_empty() {
            return Ok(());
        }
        let mut tx = conn.begin().await?;
        sqlx::query("SET TRANSACTION READ ONLY")
            .execute(&mut *tx)
            .await?;
        sqlx::query("SAVEPOINT canon").execute(&mut *tx).await?;
        self.statements += 1;
        match explain(&mut tx, &usable).await {
            Ok(Ok(forms)) => {
                for (key, form) in usable.into_iter().zip(forms) {
                    self.done.insert(key, Ok(form));
                }
            }
            Ok(Err(why)) => return Err(sqlx::Error::Protocol(why)),
            Err(e) if is_connection_error(&e) => return Err(e),
            Err(_) => {
                // Find the expressions that fail, one statement each.
                for key in usable {
                    sqlx::query("ROLLBACK TO SAVEPOINT canon")
                        .execute(&mut *tx)
                        .await?;
                    self.statements += 1;
                    let result = match explain(&mut tx, std::slice::from_ref(&key)).await {
                        Ok(Ok(mut forms)) => Ok(forms.pop().unwrap_or_default()),
                        Ok(Err(why)) => return Err(sqlx::Error::Protocol(why)),
                        Err(e) if is_connection_error(&e) => return Err(e),
                        Err(e) => Err(describe(&e)),
                    };
                    self.done.insert(key, result);
                }
            }
        }
        tx.rollback().await?;
        Ok(())
    }

    /// The canonical form of `expr` in `ctx`, if it was resolved.
    pub(crate) fn form(&self, ctx: &Context, expr: &str) -> Option<&Result<String, String>> {
        self.done.get(&(ctx.clone(), expr.trim().to_string()))
    }

    /// Whether the declared expression means what the found one does. Without canonical forms
    /// (nothing resolved: both sides are deparsed by the server already, as in migrations mode)
    /// the texts must be equal up to whitespace.
    pub(crate) fn same(&self, ctx: &Context, declared: &str, found: &str) -> Same {
        match (self.form(ctx, declared), self.form(ctx, found)) {
            (Some(Err(why)), _) => Same::BadDeclaration(why.clone()),
            (Some(Ok(a)), Some(Ok(b))) => {
                if a == b {
                    Same::Equal
                } else {
                    Same::Different
                }
            }
            _ => {
                if collapse(declared) == collapse(found) {
                    Same::Equal
                } else {
                    Same::Different
                }
            }
        }
    }
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn is_connection_error(e: &sqlx::Error) -> bool {
    !matches!(e, sqlx::Error::Database(_))
}

/// One EXPLAIN over `keys`; `Ok(Err)` when its answer does not have the expected shape.
async fn explain(
    conn: &mut PgConnection,
    keys: &[Key],
) -> Result<Result<Vec<String>, String>, sqlx::Error> {
    let outputs: Vec<String> = keys.iter().map(|(ctx, e)| ctx.select(e)).collect();
    let sql = format!(
        "EXPLAIN (VERBOSE, COSTS OFF, FORMAT JSON) SELECT {}",
        outputs.join(",\n")
    );
    let row = sqlx::query(&sql).fetch_one(&mut *conn).await?;
    // `json` in binary format is its text.
    let text: String = row.try_get_unchecked(0)?;
    Ok(parse_plan(&text, keys.len()))
}

/// The `Output` of each init plan of the top node, in order, with the subquery's alias
/// (`c`, `c_1`, ...) removed from column references.
fn parse_plan(text: &str, expected: usize) -> Result<Vec<String>, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("EXPLAIN answered unreadable JSON: {e}"))?;
    let plans = value
        .get(0)
        .and_then(|v| v.get("Plan"))
        .and_then(|p| p.get("Plans"))
        .and_then(|p| p.as_array())
        .ok_or("EXPLAIN answered without Plan.Plans")?;
    let mut found: Vec<(u64, String)> = Vec::new();
    for node in plans {
        let Some(name) = node.get("Subplan Name").and_then(|n| n.as_str()) else {
            continue;
        };
        let Some(number) = name
            .strip_prefix("InitPlan ")
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let output = node
            .get("Output")
            .and_then(|o| o.get(0))
            .and_then(|o| o.as_str())
            .ok_or_else(|| format!("EXPLAIN answered {name} without Output"))?;
        let form = match node.get("Alias").and_then(|a| a.as_str()) {
            Some(alias) => strip_qualifier(output, alias),
            None => output.to_string(),
        };
        found.push((number, form));
    }
    found.sort_by_key(|(n, _)| *n);
    if found.len() != expected {
        return Err(format!(
            "EXPLAIN answered {} init plans for {expected} expressions",
            found.len()
        ));
    }
    Ok(found.into_iter().map(|(_, f)| f).collect())
}

/// Removes `alias.` before column names, outside string literals and quoted names.
fn strip_qualifier(text: &str, alias: &str) -> String {
    let prefix = format!("{alias}.");
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut prev: Option<char> = None;
    while let Some(c) = rest.chars().next() {
        if c == '\'' || c == '"' {
            let end = quoted_end(rest, c);
            out.push_str(&rest[..end]);
            rest = &rest[end..];
            prev = Some(c);
            continue;
        }
        let boundary = prev.is_none_or(|p| !(p.is_alphanumeric() || p == '_' || p == '$'));
        if boundary && rest.starts_with(&prefix) {
            rest = &rest[prefix.len()..];
            prev = Some('.');
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
        prev = Some(c);
    }
    out
}

/// Byte length of the quoted token at the start of `s` (quote char `q`, doubled to escape).
fn quoted_end(s: &str, q: char) -> usize {
    quoted_token(s, q).0
}

/// Byte length of the quoted token at the start of `s`, and whether it is closed.
fn quoted_token(s: &str, q: char) -> (usize, bool) {
    let bytes = s.as_bytes();
    let q = q as u8;
    let mut i = 1;
    while i < bytes.len() {
        if bytes[i] == q {
            if bytes.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return (i + 1, true);
        }
        i += 1;
    }
    (bytes.len(), false)
}

/// A declared expression must be one expression: parentheses balanced outside quotes, no `;`,
/// comment, dollar quote or backslash escape string, so that it cannot change the statement
/// around it (the server still parses it; this only keeps expressions apart).
pub(crate) fn self_contained(expr: &str) -> Result<(), String> {
    if expr.trim().is_empty() {
        return Err("the expression is empty".into());
    }
    let bytes = expr.as_bytes();
    let mut depth = 0i64;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\'' | b'"' => {
                let escape_string = b == b'\''
                    && i > 0
                    && matches!(bytes[i - 1], b'e' | b'E')
                    && (i < 2 || !(bytes[i - 2].is_ascii_alphanumeric() || bytes[i - 2] == b'_'));
                let (len, closed) = quoted_token(&expr[i..], b as char);
                if !closed {
                    return Err(format!(
                        "unterminated {} in the expression",
                        if b == b'\'' { "string" } else { "quoted name" }
                    ));
                }
                if escape_string && expr[i..i + len].contains('\\') {
                    return Err("escape strings with backslashes (E'\\...') are not supported in a declared expression".into());
                }
                i += len;
                continue;
            }
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("`)` without a matching `(`".into());
                }
            }
            b';' => return Err("`;` is not allowed: declare one expression".into()),
            b'$' => {
                return Err(
                    "`$` (dollar quotes, parameters) is not allowed in a declared expression"
                        .into(),
                );
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                return Err("comments are not allowed in a declared expression".into());
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                return Err("comments are not allowed in a declared expression".into());
            }
            _ => {}
        }
        i += 1;
    }
    if depth != 0 {
        return Err("`(` without a matching `)`".into());
    }
    Ok(())
}

/// Resolves declared type names against `pg_type` (`to_regtype`): which of `names` are
/// unknown. Each name is asked alone under a savepoint if the batch fails (a syntax error).
pub(crate) async fn unknown_types(
    conn: &mut PgConnection,
    names: &[String],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut tx = conn.begin().await?;
    sqlx::query("SET TRANSACTION READ ONLY")
        .execute(&mut *tx)
        .await?;
    sqlx::query("SAVEPOINT types").execute(&mut *tx).await?;
    let batch = sqlx::query(
        "SELECT n, to_regtype(n) IS NULL FROM unnest($1::text[]) WITH ORDINALITY u(n, i) ORDER BY i",
    )
    .bind(names)
    .fetch_all(&mut *tx)
    .await;
    match batch {
        Ok(rows) => {
            for row in rows {
                if row.try_get::<bool, _>(1)? {
                    out.push((row.try_get(0)?, "no such type".to_string()));
                }
            }
        }
        Err(e) if is_connection_error(&e) => return Err(e),
        Err(_) => {
            for name in names {
                sqlx::query("ROLLBACK TO SAVEPOINT types")
                    .execute(&mut *tx)
                    .await?;
                match sqlx::query_scalar::<_, bool>("SELECT to_regtype($1) IS NULL")
                    .bind(name)
                    .fetch_one(&mut *tx)
                    .await
                {
                    Ok(false) => {}
                    Ok(true) => out.push((name.clone(), "no such type".to_string())),
                    Err(e) if is_connection_error(&e) => return Err(e),
                    Err(e) => out.push((name.clone(), describe(&e))),
                }
            }
        }
    }
    tx.rollback().await?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_stripped_outside_quotes_only() {
        assert_eq!(
            strip_qualifier("((c_1.a > 0) AND ('c_1.x'::text = c_1.\"B\"))", "c_1"),
            "((a > 0) AND ('c_1.x'::text = \"B\"))"
        );
        assert_eq!(strip_qualifier("abc_1.a + c.b", "c"), "abc_1.a + b");
        assert_eq!(strip_qualifier("é'unterminated", "c"), "é'unterminated");
    }

    #[test]
    fn declared_expressions_must_stand_alone() {
        for ok in [
            "a > 0",
            "role IN ('a', 'b')",
            "name ~ '^\\d+$'",
            "\"odd;name\" IS NOT NULL",
            "'it''s' <> x",
            "f((a), (b))",
        ] {
            assert_eq!(self_contained(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "a > 0) FROM c), (SELECT 1",
            "(a > 0",
            "a; DROP TABLE x",
            "a > 0 -- )",
            "a /* ) */",
            "$$)$$",
            "E'\\'' ) '",
            "'unterminated",
        ] {
            assert!(self_contained(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn plans_are_read_in_init_plan_order() {
        let text = r#"[{"Plan": {"Node Type": "Result", "Plans": [
            {"Subplan Name": "InitPlan 2 (returns $1)", "Alias": "c_1", "Output": ["(c_1.x > 1)"]},
            {"Subplan Name": "CTE x", "Output": ["1"]},
            {"Subplan Name": "InitPlan 1 (returns $0)", "Output": ["now()"]}]}}]"#;
        assert_eq!(
            parse_plan(text, 2).unwrap(),
            ["now()".to_string(), "(x > 1)".to_string()]
        );
        assert!(parse_plan(text, 3).is_err());
        assert!(parse_plan("not json", 1).is_err());
    }
}
