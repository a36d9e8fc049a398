//! Expected vs live schema, as a list of readable differences:
//! `column chat.sessions.user_id: expected uuid NOT NULL, found text NULL`,
//! `missing index chat.messages(session_id)`.

use std::collections::BTreeSet;

use crate::catalog::{Catalog, Column, Table};
use crate::ident::{TableRef, column_list, display_ident};
use crate::normalize::{expr_key, is_serial, normalize_type};
use crate::spec::{ExpectedSchema, IndexSpec, NamespaceSpec, TableSpec};

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
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x == y || expr_key(x) == expr_key(y))
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
            let tables = live.tables_in(ns).count();
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

/// Differences within one namespace. Tables in `ignore` are neither expected nor flagged.
pub(crate) fn diff_namespace(
    namespace: &str,
    spec: &NamespaceSpec,
    live: &Catalog,
    exact: bool,
    ignore: &[TableRef],
) -> Vec<String> {
    if !live.namespaces.contains(namespace) {
        return vec![format!("missing schema {}", display_ident(namespace))];
    }
    let ignored = |t: &str| ignore.iter().any(|i| i.schema == namespace && i.table == t);
    let mut out = Vec::new();
    for (name, table_spec) in &spec.tables {
        if ignored(name) {
            continue;
        }
        let tref = TableRef::new(namespace, name.clone());
        match live.tables.get(&(namespace.to_string(), name.clone())) {
            None => out.push(format!("missing table {tref}")),
            Some(table) => out.extend(diff_table(&tref, table_spec, table, exact)),
        }
    }
    if exact {
        for (name, _) in live.tables_in(namespace) {
            if !spec.tables.contains_key(name) && !ignored(name) {
                out.push(format!(
                    "unexpected table {}",
                    TableRef::new(namespace, name)
                ));
            }
        }
    }
    out
}

fn diff_table(t: &TableRef, spec: &TableSpec, live: &Table, exact: bool) -> Vec<String> {
    let mut out = Vec::new();
    diff_columns(t, spec, live, exact, &mut out);

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
            .find(|ix| ix.unique && ix.predicate.is_none() && same_columns(cols, &ix.columns))
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
        diff_index(t, ix, live, &mut used_indexes, &mut out);
    }
    if exact {
        for ix in &live.indexes {
            if !ix.backs_constraint && !used_indexes.contains(ix.name.as_str()) {
                out.push(format!(
                    "unexpected {}index {t}{} ({})",
                    if ix.unique { "unique " } else { "" },
                    column_list(&ix.columns),
                    ix.name
                ));
            }
        }
    }

    // Check constraints, by name.
    for c in &spec.checks {
        match live.checks.iter().find(|l| l.name == c.name) {
            None => out.push(format!("missing check constraint {} on {t}", c.name)),
            Some(l) => {
                if let Some(e) = c
                    .expression
                    .as_ref()
                    .filter(|e| expr_key(e) != expr_key(&l.definition))
                {
                    out.push(format!(
                        "check constraint {} on {t}: expected CHECK ({e}), found {}",
                        c.name, l.definition
                    ));
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
    out
}

fn diff_columns(t: &TableRef, spec: &TableSpec, live: &Table, exact: bool, out: &mut Vec<String>) {
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
        let Some(lc) = live.column(name) else {
            out.push(format!(
                "missing column {at} ({want_type} {})",
                nullability(want_not_null)
            ));
            continue;
        };
        if normalize_type(&lc.type_name) != want_type || lc.not_null != want_not_null {
            out.push(format!(
                "column {at}: expected {want_type} {}, found {}",
                nullability(want_not_null),
                describe_live(lc)
            ));
        }
        let found_default = match &lc.default {
            Some(d) if lc.generated => format!("generated as {d}"),
            Some(d) => format!("default {d}"),
            None => "no default".to_string(),
        };
        let matches = |want: &str| lc.default.as_deref().map(expr_key) == Some(expr_key(want));
        let is_sequence = lc
            .default
            .as_deref()
            .is_some_and(|d| d.starts_with("nextval("));
        let wrong_default = match &cs.default {
            Some(d) => (!matches(d)).then(|| format!("default {d}")),
            None if serial => {
                (!is_sequence).then(|| "default nextval(...) of a serial".to_string())
            }
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
            let show = |i: Option<crate::spec::Identity>| {
                i.map_or("no identity".to_string(), |i| i.to_string())
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
    t: &TableRef,
    spec: &IndexSpec,
    live: &'a Table,
    used: &mut BTreeSet<&'a str>,
    out: &mut Vec<String>,
) {
    let candidates: Vec<_> = live
        .indexes
        .iter()
        .filter(|ix| same_columns(&spec.columns, &ix.columns))
        .filter(|ix| spec.name.as_ref().is_none_or(|n| *n == ix.name))
        .collect();
    let fits = |ix: &crate::catalog::Index| {
        spec.unique.is_none_or(|u| u == ix.unique)
            && spec
                .method
                .as_ref()
                .is_none_or(|m| m.eq_ignore_ascii_case(&ix.method))
            && spec
                .predicate
                .as_ref()
                .is_none_or(|p| ix.predicate.as_deref().map(expr_key) == Some(expr_key(p)))
    };
    let cols = column_list(&spec.columns);
    if let Some(ix) = candidates.iter().find(|ix| fits(ix)) {
        used.insert(&ix.name);
        return;
    }
    let Some(ix) = candidates.first() else {
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
        if ix.predicate.as_deref().map(expr_key) != Some(expr_key(p)) {
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
