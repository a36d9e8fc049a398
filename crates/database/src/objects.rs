//! Views, functions, enum types, sequences and schema grants of a namespace; triggers, policies
//! and grants of a table: declared vs found, as pgTAP's `views_are`, `function_returns`,
//! `trigger_is`, `policies_are`, `enum_has_labels`, `sequence_*` and `*_privs_are` do.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{Connection as _, PgConnection};

use crate::catalog::{Catalog, Grants, Table};
use crate::connect::describe;
use crate::diff::Cmp;
use crate::ident::{TableRef, display_ident, quote_ident};
use crate::normalize::normalize_type;
use crate::spec::{NamespaceSpec, TableSpec};

/// How declared view definitions were compared.
#[derive(Debug, Default)]
pub(crate) struct ViewDefinitions {
    /// View name -> the declared SELECT as `pg_get_viewdef` prints it, or why it could not be
    /// created. Empty in read-only mode.
    pub(crate) canonical: BTreeMap<String, Result<String, String>>,
    /// Read-only mode: definitions compared as text, whitespace aside.
    pub(crate) as_text: bool,
}

fn collapse(s: &str) -> String {
    s.trim()
        .trim_end_matches(';')
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Creates each declared view definition of `namespace` as a temporary view inside a
/// transaction that is always rolled back, and reads `pg_get_viewdef` of it: the server's own
/// text for the declared SELECT, comparable with the live view's. Nothing outlives the
/// transaction; a definition that does not create is named.
pub(crate) async fn canonical_view_definitions(
    conn: &mut PgConnection,
    spec: &NamespaceSpec,
    live: &Catalog,
    namespace: &str,
) -> Result<BTreeMap<String, Result<String, String>>, sqlx::Error> {
    let mut out = BTreeMap::new();
    let wanted: Vec<(&String, &String)> = spec
        .views
        .iter()
        .filter(|(name, _)| {
            live.views
                .contains_key(&(namespace.to_string(), (*name).clone()))
        })
        .filter_map(|(name, v)| v.definition.as_ref().map(|d| (name, d)))
        .collect();
    if wanted.is_empty() {
        return Ok(out);
    }
    let mut tx = conn.begin().await?;
    for (i, (name, definition)) in wanted.into_iter().enumerate() {
        if let Err(why) = crate::canon::self_contained(definition) {
            out.insert(name.clone(), Err(why));
            continue;
        }
        let temp = format!("citadel_itest_view_{i}");
        sqlx::query("SAVEPOINT view_def").execute(&mut *tx).await?;
        let created = sqlx::query(&format!(
            "CREATE TEMP VIEW {} AS {}",
            quote_ident(&temp),
            definition.trim().trim_end_matches(';')
        ))
        .execute(&mut *tx)
        .await;
        let result = match created {
            Ok(_) => {
                let def: Option<String> = sqlx::query_scalar(
                    "SELECT pg_get_viewdef(c.oid, true) FROM pg_class c \
                         WHERE c.relname = $1 AND c.relnamespace = pg_my_temp_schema()",
                )
                .bind(&temp)
                .fetch_one(&mut *tx)
                .await?;
                Ok(def.unwrap_or_default())
            }
            Err(e @ sqlx::Error::Database(_)) => Err(describe(&e)),
            Err(e) => return Err(e),
        };
        sqlx::query("ROLLBACK TO SAVEPOINT view_def")
            .execute(&mut *tx)
            .await?;
        out.insert(name.clone(), result);
    }
    tx.rollback().await?;
    Ok(out)
}

/// Namespace-level objects: views, functions, enums, sequences, schema grants.
pub(crate) fn diff_namespace_objects(
    namespace: &str,
    spec: &NamespaceSpec,
    live: &Catalog,
    exact: bool,
    views: &ViewDefinitions,
    out: &mut Vec<String>,
    declaration: &mut Vec<String>,
) {
    let q = |name: &str| format!("{}.{}", display_ident(namespace), display_ident(name));
    let key = |name: &str| (namespace.to_string(), name.to_string());

    // Views.
    for (name, v) in &spec.views {
        let Some(found) = live.views.get(&key(name)) else {
            out.push(format!("missing view {}", q(name)));
            continue;
        };
        if let Some(m) = v.materialized.filter(|m| *m != found.materialized) {
            let word = |m: bool| if m { "materialized" } else { "plain" };
            out.push(format!(
                "view {}: expected a {} view, found a {} one",
                q(name),
                word(m),
                word(found.materialized)
            ));
        }
        if let Some(cols) = &v.columns {
            for (col, ty) in cols {
                match found.columns.iter().find(|(n, _)| n == col) {
                    None => out.push(format!(
                        "missing column {}.{} of the view",
                        q(name),
                        display_ident(col)
                    )),
                    Some((_, found_ty)) if normalize_type(found_ty) != normalize_type(ty) => out
                        .push(format!(
                            "view column {}.{}: expected {}, found {}",
                            q(name),
                            display_ident(col),
                            normalize_type(ty),
                            normalize_type(found_ty)
                        )),
                    Some(_) => {}
                }
            }
            for (col, ty) in &found.columns {
                if !cols.contains_key(col) {
                    out.push(format!(
                        "unexpected column {}.{} of the view ({})",
                        q(name),
                        display_ident(col),
                        normalize_type(ty)
                    ));
                }
            }
        }
        if let Some(def) = &v.definition {
            let same = if views.as_text {
                collapse(def) == collapse(&found.definition)
            } else {
                match views.canonical.get(name) {
                    Some(Ok(canonical)) => collapse(canonical) == collapse(&found.definition),
                    Some(Err(why)) => {
                        declaration.push(format!("view {}: definition `{def}`: {why}", q(name)));
                        true
                    }
                    None => collapse(def) == collapse(&found.definition),
                }
            };
            if !same {
                out.push(format!(
                    "view {}: definition differs: expected {}, found {}{}",
                    q(name),
                    collapse(def),
                    collapse(&found.definition),
                    if views.as_text {
                        " (read-only mode compares the text as pg_get_viewdef prints it)"
                    } else {
                        ""
                    }
                ));
            }
        }
    }

    // Functions.
    for (name, f) in &spec.functions {
        let Some(overloads) = live.functions.get(&key(name)) else {
            out.push(format!("missing function {}", q(name)));
            continue;
        };
        let want_args: Option<Vec<String>> = f
            .arguments
            .as_ref()
            .map(|a| a.iter().map(|t| normalize_type(t)).collect());
        let args_of = |fl: &crate::catalog::Function| -> Vec<String> {
            fl.arguments.iter().map(|t| normalize_type(t)).collect()
        };
        let found = match &want_args {
            Some(want) => overloads.iter().find(|fl| &args_of(fl) == want),
            None => overloads.first(),
        };
        let Some(fl) = found else {
            let have: Vec<String> = overloads
                .iter()
                .map(|fl| format!("({})", args_of(fl).join(", ")))
                .collect();
            out.push(format!(
                "function {}: expected arguments ({}), found {}",
                q(name),
                want_args.unwrap_or_default().join(", "),
                have.join(" and ")
            ));
            continue;
        };
        let at = format!("function {}({})", q(name), args_of(fl).join(", "));
        if let Some(r) = &f.returns {
            if normalize_type(r) != normalize_type(&fl.returns) {
                out.push(format!(
                    "{at}: expected returns {r}, found returns {}",
                    fl.returns
                ));
            }
        }
        if let Some(l) = f
            .language
            .as_ref()
            .filter(|l| !l.eq_ignore_ascii_case(&fl.language))
        {
            out.push(format!(
                "{at}: expected language {l}, found {}",
                fl.language
            ));
        }
        if let Some(v) = f.volatility.filter(|v| *v != fl.volatility) {
            out.push(format!("{at}: expected {v}, found {}", fl.volatility));
        }
        if let Some(d) = f.security_definer.filter(|d| *d != fl.security_definer) {
            let word = |d: bool| {
                if d {
                    "SECURITY DEFINER"
                } else {
                    "SECURITY INVOKER"
                }
            };
            out.push(format!(
                "{at}: expected {}, found {}",
                word(d),
                word(fl.security_definer)
            ));
        }
    }

    // Enums.
    for (name, labels) in &spec.enums {
        match live.enums.get(&key(name)) {
            None => out.push(format!("missing enum type {}", q(name))),
            Some(found) if found != labels => out.push(format!(
                "enum type {}: expected labels ({}), found ({})",
                q(name),
                labels.join(", "),
                found.join(", ")
            )),
            Some(_) => {}
        }
    }

    // Sequences.
    for (name, s) in &spec.sequences {
        let Some(found) = live.sequences.get(&key(name)) else {
            out.push(format!("missing sequence {}", q(name)));
            continue;
        };
        if let Some(t) = s
            .type_name
            .as_ref()
            .filter(|t| normalize_type(t) != normalize_type(&found.type_name))
        {
            out.push(format!(
                "sequence {}: expected type {}, found {}",
                q(name),
                normalize_type(t),
                found.type_name
            ));
        }
        if let Some(i) = s.increment.filter(|i| *i != found.increment) {
            out.push(format!(
                "sequence {}: expected increment {i}, found {}",
                q(name),
                found.increment
            ));
        }
        if let Some(o) = s
            .owned_by
            .as_ref()
            .filter(|o| Some(o.as_str()) != found.owned_by.as_deref())
        {
            out.push(format!(
                "sequence {}: expected owned by {o}, found {}",
                q(name),
                found
                    .owned_by
                    .as_deref()
                    .map_or("no owner column".to_string(), |f| format!("owned by {f}"))
            ));
        }
    }

    if exact {
        for ((ns, name), v) in &live.views {
            if ns == namespace && !spec.views.contains_key(name) {
                out.push(format!(
                    "unexpected {}view {}",
                    if v.materialized { "materialized " } else { "" },
                    q(name)
                ));
            }
        }
        for (ns, name) in live.functions.keys() {
            if ns == namespace && !spec.functions.contains_key(name) {
                out.push(format!("unexpected function {}", q(name)));
            }
        }
        for ((ns, name), labels) in &live.enums {
            if ns == namespace && !spec.enums.contains_key(name) {
                out.push(format!(
                    "unexpected enum type {} ({})",
                    q(name),
                    labels.join(", ")
                ));
            }
        }
        for ((ns, name), s) in &live.sequences {
            if ns == namespace && !s.column_default && !spec.sequences.contains_key(name) {
                out.push(format!("unexpected sequence {}", q(name)));
            }
        }
    }

    let empty = Grants::new();
    let found = live.schema_grants.get(namespace).unwrap_or(&empty);
    diff_grants(
        &format!("schema {}", display_ident(namespace)),
        spec.grants.as_ref(),
        found,
        exact,
        out,
    );
}

/// Table-level objects: triggers, policies, grants.
pub(crate) fn diff_table_objects(
    cmp: &mut Cmp<'_>,
    spec: &TableSpec,
    live: &Table,
    exact: bool,
    out: &mut Vec<String>,
) {
    let t: &TableRef = cmp.t;
    for (name, tr) in &spec.triggers {
        let Some(found) = live.triggers.iter().find(|f| &f.name == name) else {
            out.push(format!("missing trigger {name} on {t}"));
            continue;
        };
        let at = format!("trigger {name} on {t}");
        if let Some(timing) = tr
            .timing
            .as_ref()
            .filter(|x| !x.eq_ignore_ascii_case(&found.timing))
        {
            out.push(format!(
                "{at}: expected {}, found {}",
                timing.to_ascii_lowercase(),
                found.timing
            ));
        }
        if let Some(events) = &tr.events {
            let want: BTreeSet<String> = events
                .iter()
                .map(|e| e.trim().to_ascii_lowercase())
                .collect();
            let have: BTreeSet<String> = found.events.iter().cloned().collect();
            if want != have {
                out.push(format!(
                    "{at}: expected events {}, found {}",
                    want.into_iter().collect::<Vec<_>>().join(" or "),
                    found.events.join(" or ")
                ));
            }
        }
        if let Some(level) = tr
            .level
            .as_ref()
            .filter(|x| !x.eq_ignore_ascii_case(&found.level))
        {
            out.push(format!(
                "{at}: expected for each {}, found for each {}",
                level.to_ascii_lowercase(),
                found.level
            ));
        }
        if let Some(f) = &tr.function {
            let same = if f.contains('.') {
                f == &found.function
            } else {
                found.function.rsplit('.').next() == Some(f.as_str())
            };
            if !same {
                out.push(format!(
                    "{at}: expected function {f}, found {}",
                    found.function
                ));
            }
        }
    }
    let row = cmp.row.clone();
    for (name, p) in &spec.policies {
        let Some(found) = live.policies.iter().find(|f| &f.name == name) else {
            out.push(format!("missing policy {name} on {t}"));
            continue;
        };
        let at = format!("policy {name} on {t}");
        if let Some(c) = p
            .command
            .as_ref()
            .filter(|c| !c.eq_ignore_ascii_case(&found.command))
        {
            out.push(format!(
                "{at}: expected FOR {}, found FOR {}",
                c.to_ascii_uppercase(),
                found.command.to_ascii_uppercase()
            ));
        }
        if let Some(roles) = &p.roles {
            let want: BTreeSet<&str> = roles.iter().map(String::as_str).collect();
            let have: BTreeSet<&str> = found.roles.iter().map(String::as_str).collect();
            if want != have {
                out.push(format!(
                    "{at}: expected roles ({}), found ({})",
                    want.into_iter().collect::<Vec<_>>().join(", "),
                    found.roles.join(", ")
                ));
            }
        }
        if let Some(perm) = p.permissive.filter(|x| *x != found.permissive) {
            let word = |b: bool| if b { "PERMISSIVE" } else { "RESTRICTIVE" };
            out.push(format!(
                "{at}: expected {}, found {}",
                word(perm),
                word(found.permissive)
            ));
        }
        for (what, declared, live_expr) in [
            ("USING", &p.using_expr, &found.using_expr),
            ("WITH CHECK", &p.with_check, &found.with_check),
        ] {
            let Some(d) = declared else { continue };
            let same = match live_expr {
                Some(l) => cmp.same(&row, &format!("policy {name} {what}"), d, l),
                None => false,
            };
            if !same {
                out.push(format!(
                    "{at}: expected {what} ({d}), found {}",
                    live_expr
                        .as_ref()
                        .map_or(format!("no {what}"), |l| format!("{what} {l}"))
                ));
            }
        }
    }
    if exact {
        for tr in &live.triggers {
            if !spec.triggers.contains_key(&tr.name) {
                out.push(format!("unexpected trigger {} on {t}", tr.name));
            }
        }
        for p in &live.policies {
            if !spec.policies.contains_key(&p.name) {
                out.push(format!("unexpected policy {} on {t}", p.name));
            }
        }
    }
    diff_grants(
        &format!("table {t}"),
        spec.grants.as_ref(),
        &live.grants,
        exact,
        out,
    );
}

/// Declared grants per role equal the found ones exactly; in exact mode (or when grants are
/// declared) a role with privileges nobody declared is unexpected.
fn diff_grants(
    what: &str,
    declared: Option<&BTreeMap<String, Vec<String>>>,
    found: &Grants,
    exact: bool,
    out: &mut Vec<String>,
) {
    let empty = BTreeMap::new();
    let declared = match declared {
        Some(d) => d,
        None if exact => &empty,
        None => return,
    };
    for (role, privileges) in declared {
        let want: BTreeSet<String> = privileges
            .iter()
            .map(|p| p.trim().to_ascii_lowercase())
            .collect();
        let none = BTreeSet::new();
        let have = found.get(role).unwrap_or(&none);
        let missing: Vec<String> = want.difference(have).map(|s| s.to_uppercase()).collect();
        let extra: Vec<String> = have.difference(&want).map(|s| s.to_uppercase()).collect();
        if !missing.is_empty() {
            out.push(format!("{what}: role {role} lacks {}", missing.join(", ")));
        }
        if !extra.is_empty() {
            out.push(format!(
                "{what}: role {role} has {} besides what is declared",
                extra.join(", ")
            ));
        }
    }
    for (role, have) in found {
        if !declared.contains_key(role) && !have.is_empty() {
            let list: Vec<String> = have.iter().map(|p| p.to_uppercase()).collect();
            out.push(format!(
                "{what}: unexpected grant of {} to {role}",
                list.join(", ")
            ));
        }
    }
}
