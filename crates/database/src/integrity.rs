//! `database.<name>.integrity`: orphans, duplicates, NULLs, row-count bounds and custom
//! invariants, all in one READ ONLY transaction under `statement_timeout`.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use citadel_itest_core::config::{REDACTED, redact_text, redact_value};
use citadel_itest_core::{
    BoxError, Category, Check, CheckContext, CheckId, ErrorKind, Measurement, Outcome, Unit,
};
use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use sqlx::{Column as _, Connection as _, PgConnection, Row, TypeInfo as _};

use crate::catalog::{Catalog, Namespaces};
use crate::config::{DatabaseTarget, IntegrityConfig, Invariant, RowCountBound};
use crate::connect::{Connector, describe, sqlstate};
use crate::ident::{ColumnRef, ColumnsRef, TableRef, quote_ident};
use crate::schema::{base_timeout, cancellable};

/// Longest value shown in a sample row before it is cut.
const MAX_VALUE_CHARS: usize = 60;

/// A detector is not started with less time than this left in the check's budget.
const MIN_DETECTOR_TIME: Duration = Duration::from_millis(50);

/// An invariant's SQL without surrounding whitespace and trailing `;`.
pub(crate) fn trim_sql(sql: &str) -> &str {
    let mut s = sql.trim();
    while let Some(rest) = s.strip_suffix(';') {
        s = rest.trim_end();
    }
    s
}

/// `sql` with string literals, quoted names, dollar-quoted bodies and comments blanked out, so
/// that what is left is SQL code; `Err` on an unterminated one.
fn code_only(sql: &str) -> Result<String, String> {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '-' if next == Some('-') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                out.push(' ');
            }
            '/' if next == Some('*') => {
                let mut depth = 0usize;
                loop {
                    match (chars.get(i), chars.get(i + 1)) {
                        (Some('/'), Some('*')) => {
                            depth += 1;
                            i += 2;
                        }
                        (Some('*'), Some('/')) => {
                            depth -= 1;
                            i += 2;
                            if depth == 0 {
                                break;
                            }
                        }
                        (Some(_), _) => i += 1,
                        (None, _) => return Err("a /* comment is not closed".to_string()),
                    }
                }
                out.push(' ');
            }
            '\'' | '"' => {
                // E'...' strings take backslash escapes.
                let backslash = c == '\''
                    && i > 0
                    && matches!(chars[i - 1], 'e' | 'E')
                    && (i < 2 || !chars[i - 2].is_alphanumeric() && chars[i - 2] != '_');
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(if c == '"' {
                                "a quoted name is not closed".to_string()
                            } else {
                                "a string literal is not closed".to_string()
                            });
                        }
                        Some('\\') if backslash => i += 2,
                        Some(&q) if q == c => {
                            if chars.get(i + 1) == Some(&c) {
                                i += 2;
                            } else {
                                i += 1;
                                break;
                            }
                        }
                        Some(_) => i += 1,
                    }
                }
                out.push(' ');
            }
            '$' if !chars[..i]
                .last()
                .is_some_and(|p| p.is_alphanumeric() || *p == '_') =>
            {
                // $tag$ ... $tag$ (a tag never starts with a digit: `$1` is a parameter).
                let mut j = i + 1;
                while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
                    j += 1;
                }
                let tag_ok = chars.get(j) == Some(&'$')
                    && !chars.get(i + 1).is_some_and(|d| d.is_ascii_digit());
                if !tag_ok {
                    out.push(c);
                    i += 1;
                    continue;
                }
                let tag: String = chars[i..=j].iter().collect();
                let rest: String = chars[j + 1..].iter().collect();
                match rest.find(&tag) {
                    Some(end) => {
                        i = j + 1 + rest[..end].chars().count() + tag.chars().count();
                        out.push(' ');
                    }
                    None => return Err(format!("a {tag} quoted body is not closed")),
                }
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// `Ok` when `sql` (trimmed of a trailing `;`) is one query that only reads: it starts with
/// `SELECT`, `WITH`, `VALUES`, `TABLE` or `(`, holds no second statement, and its `WITH` holds
/// no `INSERT`, `UPDATE`, `DELETE` or `MERGE`. The read-only transaction refuses writes anyway;
/// this gives the reason in words before anything connects.
pub(crate) fn one_select(sql: &str) -> Result<(), String> {
    const MUST: &str = "an invariant must be one SELECT";
    let code = code_only(trim_sql(sql)).map_err(|e| format!("{MUST}: {e}"))?;
    let code = code.trim();
    if code.contains(';') {
        return Err(format!(
            "{MUST} (it holds several statements separated by `;`)"
        ));
    }
    let words: Vec<String> = code
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    let first = words.first().map(String::as_str).unwrap_or("");
    if code.starts_with('(') {
        // A parenthesised query: judged by its first word.
    } else if !matches!(first, "select" | "with" | "values" | "table") {
        return Err(format!("{MUST}, not {}", first.to_ascii_uppercase()));
    }
    if first == "with" || code.starts_with('(') {
        // `WITH d AS (DELETE ...)`: a data-modifying CTE opens with the verb after `(`.
        let verbs = ["insert", "update", "delete", "merge"];
        for part in code.split('(').skip(1) {
            let word: String = part
                .trim_start()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect::<String>()
                .to_ascii_lowercase();
            if verbs.contains(&word.as_str()) {
                return Err(format!(
                    "{MUST}: it holds a {} (a data-modifying WITH)",
                    word.to_ascii_uppercase()
                ));
            }
        }
    }
    Ok(())
}

/// Whether a column's name says its values are secret. The name is split into whole parts on
/// `_`, other punctuation and camelCase humps: a part `token`, `password`, `passwd`, `pwd`,
/// `passphrase`, `secret`, `credential(s)` or `apikey`; the pairs `api key`, `private key`,
/// `access key`, `signing key`, `encryption key`; or a last part `hash` after another
/// (`key_hash`, `password_hash`). `prompt_tokens` and `tokens` are shown: `tokens` is not the
/// part `token`.
pub(crate) fn secret_column(name: &str) -> bool {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if !c.is_alphanumeric() {
            if !cur.is_empty() {
                parts.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !cur.is_empty() {
            parts.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        cur.extend(c.to_lowercase());
    }
    if !cur.is_empty() {
        parts.push(cur);
    }
    const WORDS: &[&str] = &[
        "token",
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "credential",
        "credentials",
        "apikey",
    ];
    const PAIRS: &[(&str, &str)] = &[
        ("api", "key"),
        ("private", "key"),
        ("access", "key"),
        ("signing", "key"),
        ("encryption", "key"),
    ];
    parts.iter().any(|p| WORDS.contains(&p.as_str()))
        || parts
            .windows(2)
            .any(|w| PAIRS.contains(&(w[0].as_str(), w[1].as_str())))
        || (parts.len() > 1 && parts.last().is_some_and(|p| p == "hash"))
}

/// Looks for data that breaks its rules, without changing any:
///
/// - orphan rows of every foreign key constraint marked `NOT VALID` and of every declared
///   logical foreign key without a valid constraint (anti-join: `NOT EXISTS`, which Postgres
///   runs as a hash or indexed anti-join);
/// - duplicates on declared unique keys that no unique constraint or index guarantees;
/// - NULLs in declared not-null columns without a `NOT NULL` constraint;
/// - row-count bounds (counting stops one row past the bound);
/// - custom invariants: SQL that must return no row, or one value within bounds.
///
/// Everything runs in one `REPEATABLE READ, READ ONLY` transaction (one snapshot; any write,
/// even `nextval()`, is refused by the server), each detector under its own savepoint and its
/// own `statement_timeout` inside the check's budget, so a failing or slow detector is named
/// (`invariant slow timed out after 10s (statement_timeout)`) and the findings of the others are
/// kept; the transaction is rolled back at the end. When row-level security hides rows of a
/// scanned table from the checking role, the result says the scan may be incomplete (never a
/// plain pass). Findings show counts and up to `sample_rows` offending rows, with values of
/// columns whose name parts look secret (`api_token`, `password`, `key_hash`, ...; not
/// `prompt_tokens`, never the column the finding is about) redacted and bytea shown as its
/// length. Measures `rows_examined` (rows the built-in detectors scanned; `scan_limit` caps it
/// per detector) and a count per kind of finding.
#[derive(Debug, Clone)]
pub struct IntegrityCheck {
    id: CheckId,
    connector: Arc<Connector>,
    config: IntegrityConfig,
    timeout: Duration,
}

/// One thing to look for.
#[derive(Debug, Clone)]
enum Detector {
    Orphans {
        label: String,
        from: ColumnsRef,
        to: ColumnsRef,
    },
    Duplicates(ColumnsRef),
    Nulls(ColumnRef),
    RowCount(RowCountBound),
    Invariant(Invariant),
}

impl fmt::Display for Detector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Detector::Orphans { label, .. } => write!(f, "orphan search for {label}"),
            Detector::Duplicates(k) => write!(f, "duplicate search on {k}"),
            Detector::Nulls(c) => write!(f, "NULL search in {c}"),
            Detector::RowCount(b) => write!(f, "row count of {}", b.table),
            Detector::Invariant(i) => write!(f, "invariant {}", i.name),
        }
    }
}

impl Detector {
    /// The tables it reads (an invariant's are found by `EXPLAIN` when it runs).
    fn tables(&self) -> Vec<TableRef> {
        match self {
            Detector::Orphans { from, to, .. } => vec![from.table.clone(), to.table.clone()],
            Detector::Duplicates(k) => vec![k.table.clone()],
            Detector::Nulls(c) => vec![c.table.clone()],
            Detector::RowCount(b) => vec![b.table.clone()],
            Detector::Invariant(_) => Vec::new(),
        }
    }
}

/// What one detector saw.
#[derive(Debug, Default)]
struct Seen {
    examined: u64,
    offending: u64,
    problem: Option<String>,
    /// Tables read, when the detector found them out itself (invariants).
    tables: Vec<TableRef>,
}

/// Tables among `tables` whose rows row-level security hides from the checking role
/// (Postgres' own `row_security_active`: RLS enabled, the role neither superuser, nor
/// `BYPASSRLS`, nor the owner of a table without `FORCE ROW LEVEL SECURITY`), and that role.
async fn row_security(
    conn: &mut PgConnection,
    tables: &[TableRef],
) -> Result<(String, Vec<String>), sqlx::Error> {
    let quoted: Vec<String> = tables.iter().map(TableRef::sql).collect();
    let shown: Vec<String> = tables.iter().map(ToString::to_string).collect();
    let row = sqlx::query(
        "SELECT current_user::text, coalesce(array_agg(u.shown ORDER BY u.shown) \
             FILTER (WHERE to_regclass(u.q) IS NOT NULL AND row_security_active(to_regclass(u.q))), \
             '{}') \
         FROM unnest($1::text[], $2::text[]) AS u(q, shown)",
    )
    .bind(&quoted)
    .bind(&shown)
    .fetch_one(&mut *conn)
    .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// Relations an `EXPLAIN (VERBOSE, FORMAT JSON)` plan reads.
fn plan_tables(plan: &serde_json::Value, out: &mut Vec<TableRef>) {
    match plan {
        serde_json::Value::Object(map) => {
            if let (Some(serde_json::Value::String(schema)), Some(serde_json::Value::String(rel))) =
                (map.get("Schema"), map.get("Relation Name"))
            {
                let t = TableRef::new(schema.clone(), rel.clone());
                if !out.contains(&t) {
                    out.push(t);
                }
            }
            for v in map.values() {
                plan_tables(v, out);
            }
        }
        serde_json::Value::Array(items) => {
            for v in items {
                plan_tables(v, out);
            }
        }
        _ => {}
    }
}

#[derive(Debug, Default)]
struct Tally {
    rows_examined: u64,
    detectors: u64,
    guaranteed: u64,
    orphan_rows: u64,
    duplicate_keys: u64,
    null_rows: u64,
    row_count_violations: u64,
    invariant_violations: u64,
    problems: Vec<String>,
    errors: Vec<String>,
    /// Detectors cancelled at their bound (or left without an answer).
    timed_out: Vec<String>,
    /// Detectors not started: the check's budget ran out first.
    not_run: Vec<String>,
    /// How many of `errors` are about time (timeouts, detectors not run).
    timing: usize,
}

impl IntegrityCheck {
    /// The integrity check of `target` with `config`.
    pub fn new(target: &DatabaseTarget, config: IntegrityConfig) -> Self {
        Self::build(Arc::new(Connector::new(target)), config)
    }

    pub(crate) fn build(connector: Arc<Connector>, config: IntegrityConfig) -> Self {
        IntegrityCheck {
            id: CheckId::new(format!("database.{}.integrity", connector.name)),
            timeout: base_timeout(connector.target()),
            connector,
            config,
        }
    }

    /// The detectors to run, given what the catalog guarantees already.
    fn plan(&self, catalog: &Catalog, tally: &mut Tally) -> Vec<Detector> {
        let c = &self.config;
        let mut plan = Vec::new();
        if c.not_valid_foreign_keys {
            for ((ns, table), t) in &catalog.tables {
                for fk in t.foreign_keys.iter().filter(|fk| !fk.validated) {
                    let from = ColumnsRef::new(
                        crate::TableRef::new(ns.clone(), table.clone()),
                        fk.columns.clone(),
                    );
                    plan.push(Detector::Orphans {
                        label: format!(
                            "NOT VALID foreign key {} {from} -> {}",
                            fk.name, fk.references
                        ),
                        from,
                        to: fk.references.clone(),
                    });
                }
            }
        }
        for lfk in &c.foreign_keys {
            let key = (lfk.from.table.schema.clone(), lfk.from.table.table.clone());
            let enforced = catalog.tables.get(&key).is_some_and(|t| {
                t.foreign_keys.iter().any(|fk| {
                    fk.validated && fk.columns == lfk.from.columns && fk.references == lfk.to
                })
            });
            if enforced {
                tally.guaranteed += 1;
            } else {
                plan.push(Detector::Orphans {
                    label: format!("{} -> {}", lfk.from, lfk.to),
                    from: lfk.from.clone(),
                    to: lfk.to.clone(),
                });
            }
        }
        for key in &c.unique {
            let k = (key.table.schema.clone(), key.table.table.clone());
            let enforced = catalog.tables.get(&k).is_some_and(|t| {
                t.primary_key
                    .iter()
                    .chain(&t.uniques)
                    .any(|u| u.columns == key.columns)
                    || t.indexes
                        .iter()
                        .any(|ix| ix.unique && ix.predicate.is_none() && ix.columns == key.columns)
            });
            if enforced {
                tally.guaranteed += 1;
            } else {
                plan.push(Detector::Duplicates(key.clone()));
            }
        }
        for col in &c.not_null {
            let k = (col.table.schema.clone(), col.table.table.clone());
            let enforced = catalog
                .tables
                .get(&k)
                .and_then(|t| t.column(&col.column))
                .is_some_and(|c| c.not_null);
            if enforced {
                tally.guaranteed += 1;
            } else {
                plan.push(Detector::Nulls(col.clone()));
            }
        }
        plan.extend(c.row_counts.iter().cloned().map(Detector::RowCount));
        plan.extend(c.invariants.iter().cloned().map(Detector::Invariant));
        plan
    }

    /// Schemas the configuration names (the catalog read is limited to them unless NOT VALID
    /// foreign keys are searched everywhere).
    fn namespaces(&self) -> Namespaces {
        let c = &self.config;
        if c.not_valid_foreign_keys {
            return Namespaces::NonSystem;
        }
        let mut set = BTreeSet::new();
        for fk in &c.foreign_keys {
            set.insert(fk.from.table.schema.clone());
        }
        for k in &c.unique {
            set.insert(k.table.schema.clone());
        }
        for col in &c.not_null {
            set.insert(col.table.schema.clone());
        }
        Namespaces::Only(set.into_iter().collect())
    }

    /// The bound of one detector's statements before the check's own deadline caps it:
    /// `integrity.statement_timeout` when given, else the database's `statement_timeout` but at
    /// most a third of the check's budget, so one slow detector leaves room for the others.
    fn detector_bound(&self, budget: Duration) -> Duration {
        match self.config.statement_timeout {
            Some(t) => t,
            // A third of the budget, to the nearest 100 ms (the budget is measured a moment
            // after the check started: 5.998 s of a 6 s budget gives 2 s).
            None => {
                let third = (budget / 3).as_millis() as u64;
                let third = Duration::from_millis((third + 50) / 100 * 100);
                self.connector
                    .target()
                    .statement_timeout
                    .min(third.max(MIN_DETECTOR_TIME))
            }
        }
    }

    async fn evaluate(&self, ctx: &CheckContext) -> Result<Outcome, BoxError> {
        let budget = ctx.remaining();
        // Kept free at the end of the budget to roll back, look at row-level security and
        // report.
        let reserve = (budget / 10).clamp(Duration::from_millis(250), Duration::from_secs(2));
        let per_detector = self.detector_bound(budget);
        let mut conn = self
            .connector
            .connect(&self.connector.app_name("integrity"))
            .await?;
        let name = &self.connector.name;
        let catalog = Catalog::read(&mut conn, &self.namespaces())
            .await
            .map_err(|e| format!("read the catalog of database {name}: {}", describe(&e)))?;
        let mut tally = Tally::default();
        let plan = self.plan(&catalog, &mut tally);
        let started = Instant::now();

        let mut tx = conn
            .begin()
            .await
            .map_err(|e| format!("begin a transaction on database {name}: {}", describe(&e)))?;
        for stmt in [
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
            "SET LOCAL lock_timeout = '5s'",
        ] {
            sqlx::query(stmt)
                .execute(&mut *tx)
                .await
                .map_err(|e| format!("{stmt} on database {name}: {}", describe(&e)))?;
        }

        // Tables whose rows the detectors read (row-level security is looked at for them).
        let mut scanned: Vec<TableRef> = Vec::new();
        // Set when the server stopped answering: the connection is not used again.
        let mut broken = false;
        for (i, detector) in plan.iter().enumerate() {
            let left = ctx.remaining().saturating_sub(reserve);
            let bound = per_detector.min(left);
            if broken || bound < MIN_DETECTOR_TIME {
                tally
                    .not_run
                    .extend(plan[i..].iter().map(|d| d.to_string()));
                break;
            }
            tally.detectors += 1;
            if let Detector::Invariant(inv) = detector {
                if let Err(why) = one_select(&inv.sql) {
                    tally
                        .errors
                        .push(format!("could not run the {detector}: {why}"));
                    continue;
                }
            }
            for t in detector.tables() {
                if !scanned.contains(&t) {
                    scanned.push(t);
                }
            }
            let prepare = format!(
                "SAVEPOINT citadel_itest_detector; SET LOCAL statement_timeout = '{}ms'",
                bound.as_millis().max(1)
            );
            sqlx::Executor::execute(&mut *tx, prepare.as_str())
                .await
                .map_err(|e| format!("savepoint on database {name}: {}", describe(&e)))?;
            // The server cancels a statement at `bound`; this guards against a server that
            // stops answering altogether (each detector runs at most two statements).
            let hard = (bound * 2 + Duration::from_secs(1))
                .min(ctx.remaining().saturating_sub(reserve / 2));
            let run = tokio::time::timeout(hard, self.detect(&mut tx, detector)).await;
            match run {
                Err(_) => {
                    broken = true;
                    tally.timing += 1;
                    tally.timed_out.push(detector.to_string());
                    tally.errors.push(format!(
                        "{detector} timed out after {} (no answer from the server)",
                        humantime::format_duration(hard)
                    ));
                }
                Ok(Ok(seen)) => {
                    sqlx::query("RELEASE SAVEPOINT citadel_itest_detector")
                        .execute(&mut *tx)
                        .await?;
                    tally.rows_examined += seen.examined;
                    for t in seen.tables {
                        if !scanned.contains(&t) {
                            scanned.push(t);
                        }
                    }
                    if let Some(problem) = seen.problem {
                        match detector {
                            Detector::Orphans { .. } => tally.orphan_rows += seen.offending,
                            Detector::Duplicates(_) => tally.duplicate_keys += seen.offending,
                            Detector::Nulls(_) => tally.null_rows += seen.offending,
                            Detector::RowCount(_) => tally.row_count_violations += 1,
                            Detector::Invariant(_) => tally.invariant_violations += 1,
                        }
                        tally.problems.push(problem);
                    }
                }
                Ok(Err(e)) => {
                    sqlx::query("ROLLBACK TO SAVEPOINT citadel_itest_detector")
                        .execute(&mut *tx)
                        .await?;
                    if sqlstate(&e).as_deref() == Some("57014") {
                        tally.timing += 1;
                        tally.timed_out.push(detector.to_string());
                        tally.errors.push(format!(
                            "{detector} timed out after {} (statement_timeout)",
                            humantime::format_duration(Duration::from_millis(
                                bound.as_millis().max(1) as u64
                            ))
                        ));
                    } else {
                        tally
                            .errors
                            .push(format!("could not run the {detector}: {}", describe(&e)));
                    }
                }
            }
        }

        let mut hidden_by_rls = Vec::new();
        let mut role = String::new();
        if broken {
            // The connection is dropped, not reused: the server rolls the transaction back.
            tally.timing += 1;
            tally.errors.push(
                "row-level security was not examined (the server stopped answering)".to_string(),
            );
        } else {
            match row_security(&mut tx, &scanned).await {
                Ok((r, tables)) => {
                    role = r;
                    hidden_by_rls = tables;
                }
                Err(e) => tally.errors.push(format!(
                    "could not tell whether row-level security hides rows: {}",
                    describe(&e)
                )),
            }
            // Nothing was written (the server refuses), and nothing is kept.
            tx.rollback().await?;
            let _ = conn.close().await;
        }

        let measurements = vec![
            Measurement::new("rows_examined", tally.rows_examined as f64, Unit::Count),
            Measurement::new("detectors", tally.detectors as f64, Unit::Count),
            Measurement::new(
                "guaranteed_by_constraints",
                tally.guaranteed as f64,
                Unit::Count,
            ),
            Measurement::new("orphan_rows", tally.orphan_rows as f64, Unit::Count),
            Measurement::new("duplicate_keys", tally.duplicate_keys as f64, Unit::Count),
            Measurement::new("null_rows", tally.null_rows as f64, Unit::Count),
            Measurement::new(
                "row_count_violations",
                tally.row_count_violations as f64,
                Unit::Count,
            ),
            Measurement::new(
                "invariant_violations",
                tally.invariant_violations as f64,
                Unit::Count,
            ),
            Measurement::new(
                "detectors_timed_out",
                tally.timed_out.len() as f64,
                Unit::Count,
            ),
            Measurement::duration("integrity_time", started.elapsed()),
        ];
        if !tally.timed_out.is_empty() {
            ctx.detail("timed_out", tally.timed_out.clone());
        }
        if !tally.not_run.is_empty() {
            ctx.detail("not_run", tally.not_run.clone());
            tally.timing += 1;
            tally.errors.push(format!(
                "not run, the check's budget ran out: {}",
                tally.not_run.join(", ")
            ));
        }
        let rls_note = (!hidden_by_rls.is_empty()).then(|| {
            ctx.detail("row_level_security", hidden_by_rls.clone());
            format!(
                "the scan may be incomplete: row-level security hides rows of {} from role {role} \
                 (use a role with BYPASSRLS, or the tables' owner without FORCE ROW LEVEL \
                 SECURITY)",
                hidden_by_rls.join(", ")
            )
        });
        if !tally.problems.is_empty() {
            let mut parts = tally.problems;
            parts.extend(tally.errors);
            parts.extend(rls_note);
            return Ok(Outcome::Failed {
                message: redact_text(&parts.join("; ")),
                measurements,
            });
        }
        if !tally.errors.is_empty() {
            let only_time = tally.errors.len() == tally.timing;
            let mut parts = tally.errors;
            parts.extend(rls_note);
            let kind = if only_time {
                ErrorKind::Timeout
            } else {
                ErrorKind::Harness
            };
            return Ok(Outcome::error(kind, redact_text(&parts.join("; "))));
        }
        if let Some(note) = rls_note {
            // Nothing found among the rows the role could see: not a clean bill of health.
            return Ok(Outcome::error(
                ErrorKind::Harness,
                format!("no finding, but {note}"),
            ));
        }
        Ok(Outcome::Passed { measurements })
    }

    fn scanned(&self, table: &crate::TableRef) -> String {
        match self.config.scan_limit {
            Some(n) => format!("(SELECT * FROM {} LIMIT {})", table.sql(), limit(n)),
            None => table.sql(),
        }
    }

    /// Up to `sample_rows` rows of the query `rows`, shown as JSON objects; `about` are the
    /// columns the finding is about (never redacted).
    async fn samples(
        &self,
        conn: &mut PgConnection,
        rows: &str,
        about: &[String],
    ) -> Result<Vec<String>, sqlx::Error> {
        if self.config.sample_rows == 0 {
            return Ok(Vec::new());
        }
        // The row as JSON, and its columns again for their types (bytea is shown as a length).
        let found = sqlx::query(&format!(
            "SELECT row_to_json(s)::text, s.* FROM ({rows}) s LIMIT {}",
            self.config.sample_rows
        ))
        .fetch_all(&mut *conn)
        .await?;
        let shown = Shown {
            about,
            redact: &self.config.redact_columns,
            show: &self.config.show_columns,
        };
        found
            .iter()
            .map(|r| {
                let types: Vec<String> = r
                    .columns()
                    .iter()
                    .skip(1)
                    .map(|c| c.type_info().name().to_string())
                    .collect();
                r.try_get::<String, _>(0)
                    .map(|json| format_row(&json, &types, &shown))
            })
            .collect()
    }

    async fn detect(
        &self,
        conn: &mut PgConnection,
        detector: &Detector,
    ) -> Result<Seen, sqlx::Error> {
        match detector {
            Detector::Orphans { label, from, to } => {
                let scanned = self.scanned(&from.table);
                let not_null: Vec<String> = from
                    .columns
                    .iter()
                    .map(|c| format!("c.{} IS NOT NULL", quote_ident(c)))
                    .collect();
                let join: Vec<String> = from
                    .columns
                    .iter()
                    .zip(&to.columns)
                    .map(|(c, p)| format!("p.{} = c.{}", quote_ident(p), quote_ident(c)))
                    .collect();
                let cond = format!(
                    "{} AND NOT EXISTS (SELECT 1 FROM {} p WHERE {})",
                    not_null.join(" AND "),
                    to.table.sql(),
                    join.join(" AND ")
                );
                let row = sqlx::query(&format!(
                    "SELECT (SELECT count(*) FROM {scanned} c), \
                            (SELECT count(*) FROM {scanned} c WHERE {cond})"
                ))
                .fetch_one(&mut *conn)
                .await?;
                let (examined, offending) = counts(&row)?;
                let problem = if offending > 0 {
                    let samples = self
                        .samples(
                            conn,
                            &format!("SELECT c.* FROM {scanned} c WHERE {cond}"),
                            &from.columns,
                        )
                        .await?;
                    Some(format!(
                        "orphan rows for {label}: {offending} of {examined} rows examined have no \
                         referenced row{}",
                        eg(&samples)
                    ))
                } else {
                    None
                };
                Ok(Seen {
                    examined,
                    offending,
                    problem,
                    ..Seen::default()
                })
            }
            Detector::Duplicates(key) => {
                let scanned = self.scanned(&key.table);
                let cols: Vec<String> = key.columns.iter().map(|c| quote_ident(c)).collect();
                let cols = cols.join(", ");
                let not_null: Vec<String> = key
                    .columns
                    .iter()
                    .map(|c| format!("s.{} IS NOT NULL", quote_ident(c)))
                    .collect();
                let groups = format!(
                    "SELECT {cols}, count(*) AS rows FROM {scanned} s WHERE {} GROUP BY {cols} \
                     HAVING count(*) > 1",
                    not_null.join(" AND ")
                );
                let row = sqlx::query(&format!(
                    "SELECT (SELECT count(*) FROM {scanned} s), count(*), \
                            coalesce(sum(d.rows), 0)::bigint FROM ({groups}) d"
                ))
                .fetch_one(&mut *conn)
                .await?;
                let (examined, keys) = counts(&row)?;
                let rows: i64 = row.try_get(2)?;
                let problem = if keys > 0 {
                    let samples = self
                        .samples(
                            conn,
                            &format!("{groups} ORDER BY count(*) DESC"),
                            &key.columns,
                        )
                        .await?;
                    Some(format!(
                        "duplicates on {key}: {keys} {} more than once ({rows} rows) among \
                         {examined} rows examined{}",
                        if keys == 1 {
                            "key occurs"
                        } else {
                            "keys occur"
                        },
                        eg(&samples)
                    ))
                } else {
                    None
                };
                Ok(Seen {
                    examined,
                    offending: keys,
                    problem,
                    ..Seen::default()
                })
            }
            Detector::Nulls(col) => {
                let scanned = self.scanned(&col.table);
                let c = quote_ident(&col.column);
                let row = sqlx::query(&format!(
                    "SELECT count(*), count(*) FILTER (WHERE s.{c} IS NULL) FROM {scanned} s"
                ))
                .fetch_one(&mut *conn)
                .await?;
                let (examined, offending) = counts(&row)?;
                let problem = if offending > 0 {
                    let samples = self
                        .samples(
                            conn,
                            &format!("SELECT s.* FROM {scanned} s WHERE s.{c} IS NULL"),
                            std::slice::from_ref(&col.column),
                        )
                        .await?;
                    Some(format!(
                        "NULLs in {col}: {offending} of {examined} rows examined{}",
                        eg(&samples)
                    ))
                } else {
                    None
                };
                Ok(Seen {
                    examined,
                    offending,
                    problem,
                    ..Seen::default()
                })
            }
            Detector::RowCount(bound) => {
                // Count one past the upper bound (or up to the lower one): enough to decide.
                let cap = limit(
                    bound
                        .max
                        .map(|m| m.saturating_add(1))
                        .or(bound.min)
                        .unwrap_or(1),
                );
                let found: i64 = sqlx::query_scalar(&format!(
                    "SELECT count(*) FROM (SELECT 1 FROM {} LIMIT {cap}) s",
                    bound.table.sql()
                ))
                .fetch_one(&mut *conn)
                .await?;
                let found = found.max(0) as u64;
                let expected = match (bound.min, bound.max) {
                    (Some(lo), Some(hi)) => format!("between {lo} and {hi}"),
                    (Some(lo), None) => format!("at least {lo}"),
                    (None, Some(hi)) => format!("at most {hi}"),
                    (None, None) => "any number".to_string(),
                };
                let too_few = bound.min.is_some_and(|lo| found < lo);
                let too_many = bound.max.is_some_and(|hi| found > hi);
                let problem = (too_few || too_many).then(|| {
                    let shown = if too_many {
                        format!("more than {}", bound.max.unwrap_or_default())
                    } else {
                        found.to_string()
                    };
                    format!(
                        "row count of {}: expected {expected} rows, found {shown}",
                        bound.table
                    )
                });
                Ok(Seen {
                    examined: found,
                    offending: u64::from(problem.is_some()),
                    problem,
                    ..Seen::default()
                })
            }
            Detector::Invariant(inv) => self.invariant(conn, inv).await,
        }
    }

    async fn invariant(
        &self,
        conn: &mut PgConnection,
        inv: &Invariant,
    ) -> Result<Seen, sqlx::Error> {
        let sql = trim_sql(&inv.sql);
        let what = match &inv.message {
            Some(m) => format!("invariant {} ({m})", inv.name),
            None => format!("invariant {}", inv.name),
        };
        // Planning only: which tables it reads, for the row-level security note.
        let plan = sqlx::query(&format!("EXPLAIN (VERBOSE, FORMAT JSON) {sql}"))
            .fetch_one(&mut *conn)
            .await?;
        let mut tables = Vec::new();
        if let Ok(text) = plan.try_get_unchecked::<String, _>(0) {
            if let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) {
                plan_tables(&json, &mut tables);
            }
        }
        if !inv.is_value() {
            let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM ({sql}) q"))
                .fetch_one(&mut *conn)
                .await?;
            if n == 0 {
                return Ok(Seen {
                    tables,
                    ..Seen::default()
                });
            }
            let samples = self.samples(conn, sql, &[]).await?;
            return Ok(Seen {
                examined: 0,
                offending: n as u64,
                problem: Some(format!(
                    "{what}: {n} offending row{}{}",
                    if n == 1 { "" } else { "s" },
                    eg(&samples)
                )),
                tables,
            });
        }
        let rows = sqlx::query(&format!(
            "SELECT row_to_json(q)::text FROM ({sql}) q LIMIT 2"
        ))
        .fetch_all(&mut *conn)
        .await?;
        let value = match rows.as_slice() {
            [row] => {
                let json: String = row.try_get(0)?;
                first_value(&json)
            }
            [] => Err("returned no row (a value invariant needs exactly one)".to_string()),
            _ => {
                Err("returned more than one row (a value invariant needs exactly one)".to_string())
            }
        };
        let expected = match (inv.min, inv.max) {
            (Some(lo), Some(hi)) if lo == hi => format!("expected {}", num(lo)),
            (Some(lo), Some(hi)) => format!("expected between {} and {}", num(lo), num(hi)),
            (Some(lo), None) => format!("expected at least {}", num(lo)),
            (None, Some(hi)) => format!("expected at most {}", num(hi)),
            (None, None) => String::new(),
        };
        let value = match value {
            Ok(v) => v,
            Err(why) => {
                let why = if why.starts_with("the query returned NULL") {
                    format!("{expected}, but {why}")
                } else {
                    why
                };
                return Ok(Seen {
                    examined: 0,
                    offending: 1,
                    problem: Some(format!("{what}: {why}")),
                    tables,
                });
            }
        };
        let low = inv.min.is_some_and(|lo| value < lo);
        let high = inv.max.is_some_and(|hi| value > hi);
        Ok(Seen {
            examined: 0,
            offending: u64::from(low || high),
            problem: (low || high).then(|| format!("{what}: {expected}, found {}", num(value))),
            tables,
        })
    }
}

/// A `LIMIT` Postgres accepts (a bigint).
fn limit(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn counts(row: &sqlx::postgres::PgRow) -> Result<(u64, u64), sqlx::Error> {
    let a: i64 = row.try_get(0)?;
    let b: i64 = row.try_get(1)?;
    Ok((a.max(0) as u64, b.max(0) as u64))
}

fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// `, e.g. {..}; {..}` or nothing.
fn eg(samples: &[String]) -> String {
    if samples.is_empty() {
        String::new()
    } else {
        format!(", e.g. {}", samples.join(", "))
    }
}

/// A row from `row_to_json`, keeping column order.
struct OrderedRow(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for OrderedRow {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedRow;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedRow, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
                    out.push((k, v));
                }
                Ok(OrderedRow(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Which columns of a sample row are shown.
struct Shown<'a> {
    /// The columns the finding is about: always shown.
    about: &'a [String],
    /// `integrity.redact_columns`: always hidden (unless the finding is about them).
    redact: &'a [String],
    /// `integrity.show_columns`: shown although their name looks secret.
    show: &'a [String],
}

impl Shown<'_> {
    fn hides(&self, column: &str) -> bool {
        let listed = |names: &[String]| names.iter().any(|n| n.eq_ignore_ascii_case(column));
        if self.about.iter().any(|a| a == column) || listed(self.show) {
            return false;
        }
        listed(self.redact) || secret_column(column)
    }
}

/// `"\x0102"` (bytea as `row_to_json` writes it) as `"<2 bytes>"`; arrays element-wise.
fn bytea_length(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::String(hex) => {
            let n = hex.strip_prefix("\\x").map_or(hex.len(), |h| h.len() / 2);
            serde_json::Value::String(format!("<{n} bytes>"))
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(bytea_length).collect())
        }
        other => other.clone(),
    }
}

/// `{"id": 3, "api_key": "<redacted>", "note": "a long te…"}`: secret columns redacted by name
/// (never the ones the finding is about), nested secrets by key, bytea shown as its length
/// (`types` are the columns' Postgres types in order), long values cut.
fn format_row(json: &str, types: &[String], shown: &Shown<'_>) -> String {
    let Ok(OrderedRow(fields)) = serde_json::from_str::<OrderedRow>(json) else {
        return redact_text(json);
    };
    let parts: Vec<String> = fields
        .into_iter()
        .enumerate()
        .map(|(i, (k, v))| {
            let is_bytea = types.get(i).is_some_and(|t| {
                t.eq_ignore_ascii_case("bytea") || t.eq_ignore_ascii_case("bytea[]")
            });
            let value = if shown.hides(&k) {
                serde_json::Value::String(REDACTED.to_string())
            } else if is_bytea {
                bytea_length(&v)
            } else {
                cut(redact_value(&v))
            };
            format!("{}: {}", serde_json::Value::String(k), value)
        })
        .collect();
    format!("{{{}}}", parts.join(", "))
}

fn cut(v: serde_json::Value) -> serde_json::Value {
    let text = v.to_string();
    if text.chars().count() <= MAX_VALUE_CHARS {
        return v;
    }
    let head: String = match &v {
        serde_json::Value::String(s) => s.chars().take(MAX_VALUE_CHARS).collect(),
        _ => text.chars().take(MAX_VALUE_CHARS).collect(),
    };
    serde_json::Value::String(format!("{head}…"))
}

/// The first column of a `row_to_json` row as a number.
fn first_value(json: &str) -> Result<f64, String> {
    let OrderedRow(fields) =
        serde_json::from_str::<OrderedRow>(json).map_err(|e| format!("unreadable row: {e}"))?;
    let Some((col, v)) = fields.into_iter().next() else {
        return Err("returned a row without columns".to_string());
    };
    match &v {
        serde_json::Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| format!("{col} = {n} is not a number")),
        serde_json::Value::String(s) => s
            .parse::<f64>()
            .map_err(|_| format!("{col} = {} is not a number", cut(v.clone()))),
        serde_json::Value::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
        serde_json::Value::Null => Err(format!("the query returned NULL (column {col})")),
        other => Err(format!("{col} = {} is not a number", cut(other.clone()))),
    }
}

#[async_trait]
impl Check for IntegrityCheck {
    fn id(&self) -> &CheckId {
        &self.id
    }

    fn category(&self) -> Category {
        Category::Integrity
    }

    fn timeout(&self) -> Option<Duration> {
        Some(self.timeout)
    }

    async fn run(&self, ctx: &CheckContext) -> Result<Outcome, BoxError> {
        cancellable(
            ctx,
            &format!("integrity check {}", self.id),
            self.evaluate(ctx),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: Shown<'static> = Shown {
        about: &[],
        redact: &[],
        show: &[],
    };

    #[test]
    fn rows_keep_order_and_lose_secrets() {
        let row = r#"{"id": 7, "api_key": "sk-live-123", "profile": {"password": "x", "n": 1}, "note": null}"#;
        assert_eq!(
            format_row(row, &[], &NONE),
            r#"{"id": 7, "api_key": "<redacted>", "profile": {"n":1,"password":"<redacted>"}, "note": null}"#
        );
        let long = format!(r#"{{"text": "{}"}}"#, "a".repeat(100));
        assert!(format_row(&long, &[], &NONE).ends_with("a…\"}"));
    }

    #[test]
    fn secret_columns_by_whole_name_parts() {
        for hidden in [
            "api_token",
            "token",
            "accessToken",
            "password",
            "password_hash",
            "key_hash",
            "api_key",
            "apiKey",
            "APIKEY",
            "client_secret",
            "db_credentials",
            "private_key",
            "passwd",
        ] {
            assert!(secret_column(hidden), "{hidden} should be hidden");
        }
        for shown in [
            "prompt_tokens",
            "completion_tokens",
            "tokens",
            "hash",
            "hashed_at",
            "keyword",
            "monkey",
            "primary_key_id",
            "id",
            "email",
        ] {
            assert!(!secret_column(shown), "{shown} should be shown");
        }
    }

    #[test]
    fn the_finding_column_config_and_bytea() {
        let about = ["api_token".to_string()];
        let redact = ["email".to_string()];
        let show = ["Key_Hash".to_string()];
        let shown = Shown {
            about: &about,
            redact: &redact,
            show: &show,
        };
        let row = r#"{"api_token": "t-1", "email": "a@x.invalid", "key_hash": "ab12", "blob": "\\x00ff10", "n": 1}"#;
        let types = ["TEXT", "TEXT", "TEXT", "BYTEA", "INT4"].map(String::from);
        assert_eq!(
            format_row(row, &types, &shown),
            r#"{"api_token": "t-1", "email": "<redacted>", "key_hash": "ab12", "blob": "<3 bytes>", "n": 1}"#
        );
    }

    #[test]
    fn invariants_must_be_one_select() {
        for ok in [
            "SELECT 1",
            "select id from t where a = ';' -- a comment; here",
            "WITH x AS (SELECT 1) SELECT * FROM x;",
            "(SELECT 1) UNION (SELECT 2)",
            "SELECT $$a;b$$, $t$;$t$, E'\\';', \"se;mi\" FROM t /* ; */",
            "VALUES (1)",
            "TABLE app.users",
        ] {
            assert_eq!(one_select(ok), Ok(()), "{ok}");
        }
        let why = |sql: &str| one_select(sql).unwrap_err();
        assert_eq!(
            why("DELETE FROM app.users"),
            "an invariant must be one SELECT, not DELETE"
        );
        assert_eq!(
            why("TRUNCATE app.users"),
            "an invariant must be one SELECT, not TRUNCATE"
        );
        assert_eq!(
            why("DO $$ BEGIN PERFORM 1; END $$"),
            "an invariant must be one SELECT, not DO"
        );
        assert_eq!(
            why("UPDATE t SET a = 1"),
            "an invariant must be one SELECT, not UPDATE"
        );
        assert_eq!(
            why("SELECT 1; DELETE FROM t"),
            "an invariant must be one SELECT (it holds several statements separated by `;`)"
        );
        assert_eq!(
            why("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d"),
            "an invariant must be one SELECT: it holds a DELETE (a data-modifying WITH)"
        );
        assert_eq!(
            why("SELECT 'open"),
            "an invariant must be one SELECT: a string literal is not closed"
        );
    }

    #[test]
    fn value_invariants_read_the_first_column() {
        assert_eq!(first_value(r#"{"count": 3, "x": 9}"#), Ok(3.0));
        assert_eq!(first_value(r#"{"sum": "12.50"}"#), Ok(12.5));
        assert_eq!(
            first_value(r#"{"max": null}"#),
            Err("the query returned NULL (column max)".to_string())
        );
        assert!(first_value(r#"{"s": "abc"}"#).is_err());
    }

    #[test]
    fn sql_is_trimmed() {
        assert_eq!(trim_sql("  SELECT 1 ;; \n"), "SELECT 1");
        assert_eq!(num(1.0), "1");
        assert_eq!(num(2.5), "2.5");
    }
}
