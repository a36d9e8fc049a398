//! Expected vs live schema, as a list of readable differences:
//! `column chat.sessions.user_id: expected uuid NOT NULL, found text NULL`,
//! `missing index chat.messages(session_id)`.

use std::collections::{BTreeMap, BTreeSet};

use crate::canon::{Canon, Context, Same};
use crate::catalog::{Catalog, Column, Index, IndexKey, Table, key_list};
use crate::ident::{TableRef, column_list, display_ident};
use crate::normalize::{DeclaredKey, is_serial, normalize_type};
use crate::spec::{ExpectedSchema, IndexSpec, NamespaceSpec, TableSpec};

/// What a comparison found: differences of the database (drift), and problems of the
/// declaration itself (an expression that does not parse, a type Postgres does not have).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Findings {
    pub(crate) diffs: Vec<String>,
    pub(crate) declaration: Vec<String>,
}

/// What the server told about the declaration before the comparison: canonical expressions
/// and declared types it does not know.
#[derive(Debug, Default)]
pub(crate) struct Resolved {
    pub(crate) canon: Canon,
    /// Declared type name -> why it is not a type.
    pub(crate) unknown_types: BTreeMap<String, String>,
    /// Declared view definitions as the server prints them.
    pub(crate) views: crate::objects::ViewDefinitions,
}

/// Declared column types that must be looked up in `pg_type`: those that do not already equal
/// the live column's type (a known type) and are not serial pseudo-types.
pub(crate) fn types_to_resolve(
    namespace: &str,
    spec: &NamespaceSpec,
    live: &Catalog,
) -> Vec<String> {
    let mut out = BTreeSet::new();
    for (name, t) in &spec.tables {
        let table = live.tables.get(&(namespace.to_string(), name.clone()));
        for (col, cs) in &t.columns {
            if is_serial(&cs.type_name) || cs.type_name.trim().is_empty() {
                continue;
            }
            let want = normalize_type(&cs.type_name);
            let same = table
                .and_then(|t| t.column(col))
                .is_some_and(|lc| normalize_type(&lc.type_name) == want);
            if !same {
                out.insert(want);
            }
        }
    }
    out.into_iter().collect()
}

/// Asks `canon` for every expression the comparison of `namespace` will need: declared and
/// found CHECK conditions, defaults, index predicates and key expressions.
pub(crate) fn want_expressions(
    namespace: &str,
    spec: &NamespaceSpec,
    live: &Catalog,
    canon: &mut Canon,
) {
    for (name, t) in &spec.tables {
        let Some(table) = live.tables.get(&(namespace.to_string(), name.clone())) else {
            continue;
        };
        let row = Context::row_of(table);
        for c in &t.checks {
            if let Some(e) = &c.expression {
                canon.want(&row, e);
                if let Some(l) = table.checks.iter().find(|l| l.name == c.name) {
                    canon.want(&row, &l.expression);
                }
            }
        }
        for (col, cs) in &t.columns {
            let (Some(d), Some(lc)) = (&cs.default, table.column(col)) else {
                continue;
            };
            let ctx = Context::cast_to(&lc.type_name);
            canon.want(&ctx, d);
            if let Some(ld) = &lc.default {
                canon.want(&ctx, ld);
            }
        }
        for (name, p) in &t.policies {
            let found = table.policies.iter().find(|l| &l.name == name);
            for (declared, live_expr) in [
                (&p.using_expr, found.and_then(|f| f.using_expr.as_ref())),
                (&p.with_check, found.and_then(|f| f.with_check.as_ref())),
            ] {
                if let Some(d) = declared {
                    canon.want(&row, d);
                    if let Some(l) = live_expr {
                        canon.want(&row, l);
                    }
                }
            }
        }
        let mut keys = false;
        let mut predicates = false;
        for ix in &t.indexes {
            for k in &ix.columns {
                let k = DeclaredKey::parse(k);
                if !k.column {
                    canon.want(&row, &k.expr);
                    keys = true;
                }
            }
            if let Some(p) = &ix.predicate {
                canon.want(&row, p);
                predicates = true;
            }
        }
        for ix in &table.indexes {
            if keys {
                for k in ix.keys.iter().filter(|k| !k.column) {
                    canon.want(&row, &k.expr);
                }
            }
            if let (true, Some(p)) = (predicates, &ix.predicate) {
                canon.want(&row, p);
            }
        }
    }
}

fn nullability(not_null: bool) -> &'static str {
    if not_null { "NOT NULL" } else { "NULL" }
}

fn describe_live(c: &Column) -> String {
    format!(
        "{} {}",
        normalize_type(&c.type_name),
        nullability(c.not_null)
    )
}

fn same_columns(a: &[String], b: &[String]) -> bool {
    a == b
}

/// Whether an index's keys are plain columns, in default order, equal to `cols`.
fn index_on_columns(ix: &Index, cols: &[String]) -> bool {
    ix.keys.len() == cols.len()
        && ix
            .keys
            .iter()
            .zip(cols)
            .all(|(k, c)| k.column && !k.desc && !k.nulls_first && k.expr == *c)
}

/// Per-table comparison state.
pub(crate) struct Cmp<'a> {
    pub(crate) t: &'a TableRef,
    pub(crate) row: Context,
    pub(crate) resolved: &'a Resolved,
    pub(crate) declaration: Vec<String>,
}

impl Cmp<'_> {
    /// Compares a declared expression with a found one; a declared expression the server
    /// cannot use is noted as a declaration problem (and counts as equal: no drift claimed).
    pub(crate) fn same(&mut self, ctx: &Context, what: &str, declared: &str, found: &str) -> bool {
        match self.resolved.canon.same(ctx, declared, found) {
            Same::Equal => true,
            Same::Different => false,
            Same::BadDeclaration(why) => {
                let note = format!("table {}: {what} `{declared}`: {why}", self.t);
                if !self.declaration.contains(&note) {
                    self.declaration.push(note);
                }
                true
            }
        }
    }

    fn same_key(&mut self, declared: &DeclaredKey, found: &IndexKey) -> bool {
        if declared.desc != found.desc || declared.nulls_first != found.nulls_first {
            return false;
        }
        match (declared.column, found.column) {
            (true, true) => declared.expr == found.expr,
            (false, false) => {
                let row = self.row.clone();
                self.same(&row, "index expression", &declared.expr, &found.expr)
            }
            _ => false,
        }
    }

    fn same_keys(&mut self, declared: &[String], found: &[IndexKey]) -> bool {
        declared.len() == found.len()
            && declared
                .iter()
                .zip(found)
                .all(|(d, f)| self.same_key(&DeclaredKey::parse(d), f))
    }
}

/// `(a, lower(b), c DESC)` for declared keys: columns as names, expressions as written.
fn declared_key_list(keys: &[String]) -> String {
    let parts: Vec<String> = keys
        .iter()
        .map(|k| {
            let d = DeclaredKey::parse(k);
            IndexKey {
                expr: d.expr,
                column: d.column,
                desc: d.desc,
                nulls_first: d.nulls_first,
            }
            .to_string()
        })
        .collect();
    format!("({})", parts.join(", "))
}

/// Database-wide differences: extensions and, in exact mode, schemas nobody declared.
pub(crate) fn diff_database(spec: &ExpectedSchema, live: &Catalog, exact: bool) -> Vec<String> {
    let mut out = Vec::new();
    for ext in &spec.extensions {
        match live.extensions.get(&ext.name) {
            None => out.push(format!("missing extension {}", ext.name)),
            Some(found) => {
                if let Some(v) = ext.version.as_ref().filter(|v| **v != found.version) {
                    out.push(format!(
                        "extension {}: expected version {v}, found {}",
                        ext.name, found.version
                    ));
                }
                if let Some(s) = ext.schema.as_ref().filter(|s| **s != found.schema) {
                    out.push(format!(
                        "extension {}: expected in schema {s}, found in {}",
                        ext.name, found.schema
                    ));
                }
            }
        }
    }
    if exact {
        let declared: BTreeSet<&str> = spec.extensions.iter().map(|e| e.name.as_str()).collect();
        for (name, found) in &live.extensions {
            if name != "plpgsql" && !declared.contains(name.as_str()) {
                out.push(format!(
                    "unexpected extension {name} (version {})",
                    found.version
                ));
            }
        }
        for ns in &live.namespaces {
            if spec.schemas.contains_key(ns) {
                continue;
            }
            // sqlx's bookkeeping table is the tool's, not the schema's.
            let tables = live
                .tables_in(ns)
                .filter(|(t, _)| *t != crate::MIGRATIONS_TABLE)
                .count();
            if ns == "public" && tables == 0 {
                continue;
            }
            out.push(format!(
                "unexpected schema {} ({tables} table{})",
                display_ident(ns),
                if tables == 1 { "" } else { "s" }
            ));
        }
    }
    out
}

/// Differences within one namespace, comparing expressions as text deparsed by the server on
/// both sides (migrations mode: both catalogs are). Tables in `ignore` are neither expected nor
/// flagged.
pub(crate) fn diff_namespace(
    namespace: &str,
    spec: &NamespaceSpec,
    live: &Catalog,
    exact: bool,
    ignore: &[TableRef],
) -> Vec<String> {
    diff_namespace_with(namespace, spec, live, exact, ignore, &Resolved::default()).diffs
}

/// Differences within one namespace, with expressions compared through `resolved`.
pub(crate) fn diff_namespace_with(
    namespace: &str,
    spec: &NamespaceSpec,
    live: &Catalog,
    exact: bool,
    ignore: &[TableRef],
    resolved: &Resolved,
) -> Findings {
    let mut findings = Findings::default();
    if !live.namespaces.contains(namespace) {
        findings
            .diffs
            .push(format!("missing schema {}", display_ident(namespace)));
        return findings;
    }
    let ignored = |t: &str| ignore.iter().any(|i| i.schema == namespace && i.table == t);
    for (name, table_spec) in &spec.tables {
        if ignored(name) {
            continue;
        }
        let tref = TableRef::new(namespace, name.clone());
        match live.tables.get(&(namespace.to_string(), name.clone())) {
            None => {
                findings.diffs.push(format!("missing table {tref}"));
                for (col, cs) in &table_spec.columns {
                    unknown_type(
                        &tref,
                        col,
                        &cs.type_name,
                        resolved,
                        &mut findings.declaration,
                    );
                }
            }
            Some(table) => {
                let mut cmp = Cmp {
                    t: &tref,
                    row: Context::row_of(table),
                    resolved,
                    declaration: Vec::new(),
                };
                let diffs = diff_table(&mut cmp, table_spec, table, exact);
                findings.diffs.extend(diffs);
                findings.declaration.append(&mut cmp.declaration);
            }
        }
    }
    if exact {
        for (name, _) in live.tables_in(namespace) {
            if !spec.tables.contains_key(name) && !ignored(name) && name != crate::MIGRATIONS_TABLE
            {
                findings.diffs.push(format!(
                    "unexpected table {}",
                    TableRef::new(namespace, name)
                ));
            }
        }
    }
    crate::objects::diff_namespace_objects(
        namespace,
        spec,
        live,
        exact,
        &resolved.views,
        &mut findings.diffs,
        &mut findings.declaration,
    );
    findings
}

/// Notes a declared type the server does not know; true if it is unknown.
fn unknown_type(
    t: &TableRef,
    column: &str,
    type_name: &str,
    resolved: &Resolved,
    declaration: &mut Vec<String>,
) -> bool {
    match resolved.unknown_types.get(&normalize_type(type_name)) {
        Some(why) => {
            declaration.push(format!(
                "column {t}.{}: type `{type_name}` is not a type of this database ({why})",
                display_ident(column)
            ));
            true
        }
        None => false,
    }
}

fn diff_table(cmp: &mut Cmp<'_>, spec: &TableSpec, live: &Table, exact: bool) -> Vec<String> {
    let t = cmp.t;
    let mut out = Vec::new();
    diff_columns(cmp, spec, live, exact, &mut out);

    // Primary key.
    match (&spec.primary_key, &live.primary_key) {
        (Some(cols), None) => out.push(format!("missing primary key {t}{}", column_list(cols))),
        (Some(cols), Some(k)) if !same_columns(cols, &k.columns) => out.push(format!(
            "primary key {t}: expected {}, found {}",
            column_list(cols),
            column_list(&k.columns)
        )),
        (None, Some(k)) if exact => out.push(format!(
            "unexpected primary key {t}{} ({})",
            column_list(&k.columns),
            k.name
        )),
        _ => {}
    }

    // Unique keys: a unique constraint or a full (non-partial) unique index.
    let mut used_indexes: BTreeSet<&str> = BTreeSet::new();
    let mut used_uniques: BTreeSet<&str> = BTreeSet::new();
    for cols in &spec.unique {
        if let Some(k) = live.uniques.iter().find(|k| same_columns(cols, &k.columns)) {
            used_uniques.insert(&k.name);
        } else if let Some(ix) = live
            .indexes
            .iter()
            .find(|ix| ix.unique && ix.predicate.is_none() && index_on_columns(ix, cols))
        {
            used_indexes.insert(&ix.name);
        } else {
            out.push(format!(
                "missing unique constraint {t}{}",
                column_list(cols)
            ));
        }
    }
    if exact {
        for k in &live.uniques {
            if !used_uniques.contains(k.name.as_str()) {
                out.push(format!(
                    "unexpected unique constraint {t}{} ({})",
                    column_list(&k.columns),
                    k.name
                ));
            }
        }
    }

    // Foreign keys.
    let mut used_fks: BTreeSet<&str> = BTreeSet::new();
    for fk in &spec.foreign_keys {
        let arrow = format!("{t}{} -> {}", column_list(&fk.columns), fk.references);
        let found = live.foreign_keys.iter().find(|l| {
            l.columns == fk.columns
                && l.references.table == fk.references.table
                && l.references.columns == fk.references.columns
        });
        match found {
            None => out.push(format!("missing foreign key {arrow}")),
            Some(l) => {
                used_fks.insert(&l.name);
                if let Some(a) = fk.on_delete.filter(|a| *a != l.on_delete) {
                    out.push(format!(
                        "foreign key {arrow}: expected ON DELETE {a}, found ON DELETE {}",
                        l.on_delete
                    ));
                }
                if let Some(a) = fk.on_update.filter(|a| *a != l.on_update) {
                    out.push(format!(
                        "foreign key {arrow}: expected ON UPDATE {a}, found ON UPDATE {}",
                        l.on_update
                    ));
                }
            }
        }
    }
    if exact {
        for l in &live.foreign_keys {
            if !used_fks.contains(l.name.as_str()) {
                out.push(format!(
                    "unexpected foreign key {t}{} -> {} ({})",
                    column_list(&l.columns),
                    l.references,
                    l.name
                ));
            }
        }
    }

    // Indexes.
    for ix in &spec.indexes {
        diff_index(cmp, ix, live, &mut used_indexes, &mut out);
    }
    if exact {
        for ix in &live.indexes {
            if !ix.backs_constraint && !used_indexes.contains(ix.name.as_str()) {
                out.push(format!(
                    "unexpected {}index {t}{} ({})",
                    if ix.unique { "unique " } else { "" },
                    key_list(&ix.keys),
                    ix.name
                ));
            }
        }
    }

    // Check constraints, by name.
    let row = cmp.row.clone();
    for c in &spec.checks {
        match live.checks.iter().find(|l| l.name == c.name) {
            None => out.push(format!("missing check constraint {} on {t}", c.name)),
            Some(l) => {
                if let Some(e) = &c.expression {
                    if !cmp.same(&row, "check expression", e, &l.expression) {
                        out.push(format!(
                            "check constraint {} on {t}: expected CHECK ({e}), found {}",
                            c.name, l.definition
                        ));
                    }
                }
            }
        }
    }
    if exact {
        for l in &live.checks {
            if !spec.checks.iter().any(|c| c.name == l.name) {
                out.push(format!(
                    "unexpected check constraint {} on {t}: {}",
                    l.name, l.definition
                ));
            }
        }
    }

    // Row-level security.
    let on_off = |b: bool| if b { "enabled" } else { "disabled" };
    let rls = spec.row_level_security.or(exact.then_some(false));
    if let Some(want) = rls.filter(|w| *w != live.rls) {
        out.push(format!(
            "table {t}: expected row level security {}, found {}",
            on_off(want),
            on_off(live.rls)
        ));
    }
    let force = spec.force_row_level_security.or(exact.then_some(false));
    if let Some(want) = force.filter(|w| *w != live.force_rls) {
        out.push(format!(
            "table {t}: expected forced row level security {}, found {}",
            on_off(want),
            on_off(live.force_rls)
        ));
    }
    crate::objects::diff_table_objects(cmp, spec, live, exact, &mut out);
    out
}

fn diff_columns(
    cmp: &mut Cmp<'_>,
    spec: &TableSpec,
    live: &Table,
    exact: bool,
    out: &mut Vec<String>,
) {
    let t = cmp.t;
    let in_pk = |name: &str| {
        spec.primary_key
            .as_ref()
            .is_some_and(|pk| pk.iter().any(|c| c == name))
    };
    for (name, cs) in &spec.columns {
        let at = format!("{t}.{}", display_ident(name));
        let serial = is_serial(&cs.type_name);
        let want_type = normalize_type(&cs.type_name);
        let want_not_null = cs.not_null || serial || cs.identity.is_some() || in_pk(name);
        let bad_type = unknown_type(t, name, &cs.type_name, cmp.resolved, &mut cmp.declaration);
        let Some(lc) = live.column(name) else {
            out.push(format!(
                "missing column {at} ({want_type} {})",
                nullability(want_not_null)
            ));
            continue;
        };
        let type_differs = !bad_type && normalize_type(&lc.type_name) != want_type;
        if type_differs || lc.not_null != want_not_null {
            out.push(format!(
                "column {at}: expected {} {}, found {}",
                if bad_type {
                    normalize_type(&lc.type_name)
                } else {
                    want_type.clone()
                },
                nullability(want_not_null),
                describe_live(lc)
            ));
        }
        let found_default = match &lc.default {
            Some(d) if lc.generated => format!("generated as {d}"),
            Some(d) => format!("default {d}"),
            None => match lc.identity {
                Some(i) => format!("no default but {i}"),
                None => "no default".to_string(),
            },
        };
        let is_sequence = lc
            .default
            .as_deref()
            .is_some_and(|d| d.starts_with("nextval("));
        let wrong_default = match &cs.default {
            Some(d) => {
                let same = match &lc.default {
                    Some(found) => {
                        let ctx = Context::cast_to(&lc.type_name);
                        cmp.same(&ctx, &format!("default of column {name}"), d, found)
                    }
                    None => false,
                };
                (!same).then(|| format!("default {d}"))
            }
            None if serial => (!is_sequence).then(|| "a serial (default nextval(...))".to_string()),
            None if exact && lc.default.is_some() && lc.identity.is_none() => {
                Some("no default".to_string())
            }
            None => None,
        };
        if let Some(want) = wrong_default {
            out.push(format!(
                "column {at}: expected {want}, found {found_default}"
            ));
        }
        let want_identity = match cs.identity {
            Some(i) => Some(Some(i)),
            None if exact && !serial => Some(None),
            None => None,
        };
        if let Some(want) = want_identity.filter(|w| *w != lc.identity) {
            let show = |i: Option<crate::spec::Identity>| match i {
                Some(i) => i.to_string(),
                None if is_sequence => format!(
                    "no identity but a serial (default {})",
                    lc.default.as_deref().unwrap_or_default()
                ),
                None => "no identity".to_string(),
            };
            out.push(format!(
                "column {at}: expected {}, found {}",
                show(want),
                show(lc.identity)
            ));
        }
    }
    if exact {
        for c in &live.columns {
            if !spec.columns.contains_key(&c.name) {
                out.push(format!(
                    "unexpected column {t}.{} ({})",
                    display_ident(&c.name),
                    describe_live(c)
                ));
            }
        }
    }
}

fn diff_index<'a>(
    cmp: &mut Cmp<'_>,
    spec: &IndexSpec,
    live: &'a Table,
    used: &mut BTreeSet<&'a str>,
    out: &mut Vec<String>,
) {
    let t = cmp.t;
    let candidates: Vec<&Index> = live
        .indexes
        .iter()
        .filter(|ix| spec.name.as_ref().is_none_or(|n| *n == ix.name))
        .filter(|ix| cmp.same_keys(&spec.columns, &ix.keys))
        .collect();
    let row = cmp.row.clone();
    let predicate_fits = |cmp: &mut Cmp<'_>, ix: &Index| match (&spec.predicate, &ix.predicate) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(p), Some(f)) => cmp.same(&row, "index predicate", p, f),
    };
    let cols = declared_key_list(&spec.columns);
    let fits = candidates.iter().position(|ix| {
        spec.unique.is_none_or(|u| u == ix.unique)
            && spec
                .method
                .as_ref()
                .is_none_or(|m| m.eq_ignore_ascii_case(&ix.method))
            && predicate_fits(cmp, ix)
    });
    if let Some(i) = fits {
        used.insert(&candidates[i].name);
        return;
    }
    let Some(ix) = candidates.first().copied() else {
        let kind = if spec.unique == Some(true) {
            "unique index"
        } else {
            "index"
        };
        let named = spec
            .name
            .as_ref()
            .map(|n| format!(" named {n}"))
            .unwrap_or_default();
        out.push(format!("missing {kind} {t}{cols}{named}"));
        return;
    };
    used.insert(&ix.name);
    let mut wrong = Vec::new();
    if let Some(u) = spec.unique.filter(|u| *u != ix.unique) {
        let word = |b: bool| if b { "unique" } else { "not unique" };
        wrong.push(format!("expected {}, found {}", word(u), word(ix.unique)));
    }
    if let Some(m) = spec
        .method
        .as_ref()
        .filter(|m| !m.eq_ignore_ascii_case(&ix.method))
    {
        wrong.push(format!("expected method {m}, found {}", ix.method));
    }
    if let Some(p) = &spec.predicate {
        if !predicate_fits(cmp, ix) {
            wrong.push(format!(
                "expected WHERE {p}, found {}",
                ix.predicate
                    .as_ref()
                    .map_or("no predicate".to_string(), |f| format!("WHERE {f}"))
            ));
        }
    }
    out.push(format!(
        "index {t}{cols} ({}): {}",
        ix.name,
        wrong.join(", ")
    ));
}
