//! `database.<name>.integrity`: orphans, duplicates, NULLs, row-count bounds and custom
//! invariants, all in one READ ONLY transaction under `statement_timeout`.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use citadel_itest_core::config::{REDACTED, is_secret_key, redact_text, redact_value};
use citadel_itest_core::{
    BoxError, Category, Check, CheckContext, CheckId, ErrorKind, Measurement, Outcome, Unit,
};
use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use sqlx::{Connection as _, PgConnection, Row};

use crate::catalog::{Catalog, Namespaces};
use crate::config::{DatabaseTarget, IntegrityConfig, Invariant, RowCountBound};
use crate::connect::{Connector, describe, sqlstate};
use crate::ident::{ColumnRef, ColumnsRef, quote_ident};
use crate::schema::{base_timeout, cancellable};

/// Longest value shown in a sample row before it is cut.
const MAX_VALUE_CHARS: usize = 60;

/// An invariant's SQL without surrounding whitespace and trailing `;`.
pub(crate) fn trim_sql(sql: &str) -> &str {
    let mut s = sql.trim();
    while let Some(rest) = s.strip_suffix(';') {
        s = rest.trim_end();
    }
    s
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
/// even `nextval()`, is refused by the server) with `SET LOCAL statement_timeout`, each detector
/// under its own savepoint so one failing statement does not stop the others; the transaction is
/// rolled back at the end. Findings show counts and up to `sample_rows` offending rows, with
/// values of secret-looking columns (`password`, `api_key`, `token`, ...) redacted. Measures
/// `rows_examined` (rows the built-in detectors scanned; `scan_limit` caps it per detector) and a
/// count per kind of finding.
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

/// What one detector saw.
#[derive(Debug, Default)]
struct Seen {
    examined: u64,
    offending: u64,
    problem: Option<String>,
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

    fn statement_timeout(&self) -> Duration {
        self.config
            .statement_timeout
            .unwrap_or(self.connector.target().statement_timeout)
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

    async fn evaluate(&self) -> Result<Outcome, BoxError> {
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
        let timeout_ms = self.statement_timeout().as_millis().max(1);
        for stmt in [
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY".to_string(),
            format!("SET LOCAL statement_timeout = '{timeout_ms}ms'"),
            "SET LOCAL lock_timeout = '5s'".to_string(),
        ] {
            sqlx::query(&stmt)
                .execute(&mut *tx)
                .await
                .map_err(|e| format!("{stmt} on database {name}: {}", describe(&e)))?;
        }

        for detector in &plan {
            tally.detectors += 1;
            sqlx::query("SAVEPOINT citadel_itest_detector")
                .execute(&mut *tx)
                .await
                .map_err(|e| format!("savepoint on database {name}: {}", describe(&e)))?;
            match self.detect(&mut tx, detector).await {
                Ok(seen) => {
                    sqlx::query("RELEASE SAVEPOINT citadel_itest_detector")
                        .execute(&mut *tx)
                        .await?;
                    tally.rows_examined += seen.examined;
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
                Err(e) => {
                    sqlx::query("ROLLBACK TO SAVEPOINT citadel_itest_detector")
                        .execute(&mut *tx)
                        .await?;
                    let why = if sqlstate(&e).as_deref() == Some("57014") {
                        format!(
                            "exceeded statement_timeout ({})",
                            humantime::format_duration(self.statement_timeout())
                        )
                    } else {
                        describe(&e)
                    };
                    tally
                        .errors
                        .push(format!("could not run the {detector}: {why}"));
                }
            }
        }
        // Nothing was written (the server refuses), and nothing is kept.
        tx.rollback().await?;
        let _ = conn.close().await;

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
            Measurement::duration("integrity_time", started.elapsed()),
        ];
        if !tally.problems.is_empty() {
            let mut parts = tally.problems;
            parts.extend(tally.errors);
            return Ok(Outcome::Failed {
                message: redact_text(&parts.join("; ")),
                measurements,
            });
        }
        if !tally.errors.is_empty() {
            return Ok(Outcome::error(
                ErrorKind::Harness,
                redact_text(&tally.errors.join("; ")),
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

    async fn samples(
        &self,
        conn: &mut PgConnection,
        sql: &str,
    ) -> Result<Vec<String>, sqlx::Error> {
        if self.config.sample_rows == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!("{sql} LIMIT {}", self.config.sample_rows))
            .fetch_all(&mut *conn)
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map(|json| format_row(&json)))
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
                            &format!("SELECT row_to_json(c)::text FROM {scanned} c WHERE {cond}"),
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
                            &format!("SELECT row_to_json(d)::text FROM ({groups} ORDER BY count(*) DESC) d"),
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
                            &format!(
                                "SELECT row_to_json(s)::text FROM {scanned} s WHERE s.{c} IS NULL"
                            ),
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
        if !inv.is_value() {
            let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM ({sql}) q"))
                .fetch_one(&mut *conn)
                .await?;
            if n == 0 {
                return Ok(Seen::default());
            }
            let samples = self
                .samples(conn, &format!("SELECT row_to_json(q)::text FROM ({sql}) q"))
                .await?;
            return Ok(Seen {
                examined: 0,
                offending: n as u64,
                problem: Some(format!(
                    "{what}: {n} offending row{}{}",
                    if n == 1 { "" } else { "s" },
                    eg(&samples)
                )),
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
        let value = match value {
            Ok(v) => v,
            Err(why) => {
                return Ok(Seen {
                    examined: 0,
                    offending: 1,
                    problem: Some(format!("{what}: {why}")),
                });
            }
        };
        let low = inv.min.is_some_and(|lo| value < lo);
        let high = inv.max.is_some_and(|hi| value > hi);
        let expected = match (inv.min, inv.max) {
            (Some(lo), Some(hi)) if lo == hi => format!("expected {}", num(lo)),
            (Some(lo), Some(hi)) => format!("expected between {} and {}", num(lo), num(hi)),
            (Some(lo), None) => format!("expected at least {}", num(lo)),
            (None, Some(hi)) => format!("expected at most {}", num(hi)),
            (None, None) => String::new(),
        };
        Ok(Seen {
            examined: 0,
            offending: u64::from(low || high),
            problem: (low || high).then(|| format!("{what}: {expected}, found {}", num(value))),
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

/// `{"id": 3, "api_key": "<redacted>", "note": "a long te…"}`: secret columns redacted by name,
/// nested secrets by key, long values cut.
fn format_row(json: &str) -> String {
    let Ok(OrderedRow(fields)) = serde_json::from_str::<OrderedRow>(json) else {
        return redact_text(json);
    };
    let parts: Vec<String> = fields
        .into_iter()
        .map(|(k, v)| {
            let shown = if is_secret_key(&k) {
                serde_json::Value::String(REDACTED.to_string())
            } else {
                cut(redact_value(&v))
            };
            format!("{}: {}", serde_json::Value::String(k), shown)
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
        serde_json::Value::Null => Err(format!("{col} is NULL")),
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
            self.evaluate(),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_keep_order_and_lose_secrets() {
        let row = r#"{"id": 7, "api_key": "sk-live-123", "profile": {"password": "x", "n": 1}, "note": null}"#;
        assert_eq!(
            format_row(row),
            r#"{"id": 7, "api_key": "<redacted>", "profile": {"n":1,"password":"<redacted>"}, "note": null}"#
        );
        let long = format!(r#"{{"text": "{}"}}"#, "a".repeat(100));
        assert!(format_row(&long).ends_with("a…\"}"));
    }

    #[test]
    fn value_invariants_read_the_first_column() {
        assert_eq!(first_value(r#"{"count": 3, "x": 9}"#), Ok(3.0));
        assert_eq!(first_value(r#"{"sum": "12.50"}"#), Ok(12.5));
        assert_eq!(
            first_value(r#"{"max": null}"#),
            Err("max is NULL".to_string())
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
