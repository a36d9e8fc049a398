//! A live database's schema, read from `pg_catalog` in one round of six queries whatever the
//! number of tables and columns.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{PgConnection, Row};

use crate::ident::{ColumnsRef, TableRef};
use crate::spec::{
    CheckSpec, ColumnSpec, ExpectedSchema, ExtensionSpec, ForeignKeySpec, FunctionSpec, Identity,
    IndexSpec, NamespaceSpec, PolicySpec, ReferentialAction, SequenceSpec, TableSpec, TriggerSpec,
    ViewSpec,
};

/// Found grants as a declaration.
fn grants_spec(found: Option<&Grants>) -> BTreeMap<String, Vec<String>> {
    found
        .map(|g| {
            g.iter()
                .map(|(role, privs)| (role.clone(), privs.iter().cloned().collect()))
                .collect()
        })
        .unwrap_or_default()
}

/// Which namespaces to read.
#[derive(Debug, Clone)]
pub(crate) enum Namespaces {
    /// Exactly these.
    Only(Vec<String>),
    /// Every schema that is not Postgres' own (`pg_catalog`, `information_schema`, `pg_toast`,
    /// temp schemas).
    NonSystem,
}

impl Namespaces {
    fn param(&self) -> Option<Vec<String>> {
        match self {
            Namespaces::Only(v) => Some(v.clone()),
            Namespaces::NonSystem => None,
        }
    }
}

/// `n` is pg_namespace; `$1` a text[] or NULL for every non-system schema.
const NS_FILTER: &str = "(CASE WHEN $1::text[] IS NULL THEN n.nspname NOT IN ('pg_catalog', \
     'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%' \
     ELSE n.nspname = ANY($1::text[]) END)";

/// The tables and extensions of a database.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Catalog {
    /// Namespaces that exist (among those asked for).
    pub(crate) namespaces: BTreeSet<String>,
    /// Ordinary and partitioned tables (not partitions), by (schema, table).
    pub(crate) tables: BTreeMap<(String, String), Table>,
    /// Every installed extension, by name.
    pub(crate) extensions: BTreeMap<String, Extension>,
    /// Views and materialized views, by (schema, name).
    pub(crate) views: BTreeMap<(String, String), View>,
    /// Functions and procedures (not of extensions), by (schema, name): every overload.
    pub(crate) functions: BTreeMap<(String, String), Vec<Function>>,
    /// Enum types (not of extensions), by (schema, name): labels in order.
    pub(crate) enums: BTreeMap<(String, String), Vec<String>>,
    /// Sequences, by (schema, name).
    pub(crate) sequences: BTreeMap<(String, String), Sequence>,
    /// Privileges on each schema: role -> privileges (the owner's own left out).
    pub(crate) schema_grants: BTreeMap<String, Grants>,
}

/// Role (`public` for every role) -> privilege names in lowercase.
pub(crate) type Grants = BTreeMap<String, BTreeSet<String>>;

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct View {
    /// Columns in order: (name, `format_type`).
    pub(crate) columns: Vec<(String, String)>,
    /// `pg_get_viewdef(oid, true)`.
    pub(crate) definition: String,
    pub(crate) materialized: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Function {
    /// Argument types (`format_type`), in order.
    pub(crate) arguments: Vec<String>,
    /// `pg_get_function_result`, empty for a procedure.
    pub(crate) returns: String,
    pub(crate) language: String,
    pub(crate) volatility: crate::spec::Volatility,
    pub(crate) security_definer: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sequence {
    pub(crate) type_name: String,
    pub(crate) increment: i64,
    /// `schema.table.column` of the column that owns it (serial, identity or OWNED BY).
    pub(crate) owned_by: Option<String>,
    /// Behind a serial or identity column.
    pub(crate) column_default: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Trigger {
    pub(crate) name: String,
    /// `before`, `after` or `instead_of`.
    pub(crate) timing: String,
    /// Sorted: `delete`, `insert`, `truncate`, `update`.
    pub(crate) events: Vec<String>,
    /// `row` or `statement`.
    pub(crate) level: String,
    /// `schema.name` of the function.
    pub(crate) function: String,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Policy {
    pub(crate) name: String,
    pub(crate) permissive: bool,
    /// Sorted role names (`public`).
    pub(crate) roles: Vec<String>,
    /// `all`, `select`, ...
    pub(crate) command: String,
    pub(crate) using_expr: Option<String>,
    pub(crate) with_check: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Table {
    pub(crate) columns: Vec<Column>,
    pub(crate) primary_key: Option<Key>,
    pub(crate) uniques: Vec<Key>,
    pub(crate) foreign_keys: Vec<ForeignKey>,
    pub(crate) checks: Vec<Check>,
    pub(crate) indexes: Vec<Index>,
    pub(crate) rls: bool,
    pub(crate) force_rls: bool,
    pub(crate) triggers: Vec<Trigger>,
    pub(crate) policies: Vec<Policy>,
    /// Privileges on the table (the owner's own left out).
    pub(crate) grants: Grants,
}

impl Table {
    pub(crate) fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Column {
    pub(crate) name: String,
    /// As `format_type` prints it.
    pub(crate) type_name: String,
    pub(crate) not_null: bool,
    pub(crate) default: Option<String>,
    pub(crate) identity: Option<Identity>,
    /// `GENERATED ALWAYS AS (expr) STORED`: the expression is in `default`.
    pub(crate) generated: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Key {
    pub(crate) name: String,
    pub(crate) columns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ForeignKey {
    pub(crate) name: String,
    pub(crate) columns: Vec<String>,
    pub(crate) references: ColumnsRef,
    pub(crate) on_delete: ReferentialAction,
    pub(crate) on_update: ReferentialAction,
    pub(crate) validated: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Check {
    pub(crate) name: String,
    /// `pg_get_constraintdef`: `CHECK ((balance >= 0))`.
    pub(crate) definition: String,
    /// `pg_get_expr` of the condition: `(balance >= 0)`.
    pub(crate) expression: String,
}

/// One key of an index: a column or an expression, with its ordering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexKey {
    /// The column's name, or the expression as `pg_get_indexdef` prints it.
    pub(crate) expr: String,
    /// A plain column (else an expression).
    pub(crate) column: bool,
    pub(crate) desc: bool,
    pub(crate) nulls_first: bool,
}

impl IndexKey {
    /// `DESC`, `NULLS FIRST`, ... where they differ from the default (ASC NULLS LAST).
    pub(crate) fn order_suffix(&self) -> String {
        let mut s = String::new();
        if self.desc {
            s.push_str(" DESC");
        }
        match (self.desc, self.nulls_first) {
            (false, true) => s.push_str(" NULLS FIRST"),
            (true, false) => s.push_str(" NULLS LAST"),
            _ => {}
        }
        s
    }
}

impl std::fmt::Display for IndexKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.column {
            write!(f, "{}", crate::ident::display_ident(&self.expr))?;
        } else {
            f.write_str(&self.expr)?;
        }
        f.write_str(&self.order_suffix())
    }
}

/// `(a, lower(b), c DESC)`: columns shown as names, expressions as written.
pub(crate) fn key_list(keys: &[IndexKey]) -> String {
    let parts: Vec<String> = keys.iter().map(ToString::to_string).collect();
    format!("({})", parts.join(", "))
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Index {
    pub(crate) name: String,
    /// Each key as `pg_get_indexdef` prints it, plus ` DESC` / ` NULLS FIRST|LAST`.
    pub(crate) columns: Vec<String>,
    pub(crate) keys: Vec<IndexKey>,
    pub(crate) unique: bool,
    pub(crate) method: String,
    pub(crate) predicate: Option<String>,
    /// Backs a primary key, unique or exclusion constraint.
    pub(crate) backs_constraint: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Extension {
    pub(crate) version: String,
    pub(crate) schema: String,
}

const NAMESPACES_SQL: &str = "SELECT n.nspname::text FROM pg_namespace n WHERE {NS}";

const TABLES_SQL: &str = "SELECT n.nspname::text, c.relname::text, c.relrowsecurity, c.relforcerowsecurity \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND {NS}";

const COLUMNS_SQL: &str = "SELECT n.nspname::text, c.relname::text, a.attname::text, \
       format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid), \
       a.attidentity::text, a.attgenerated::text \
     FROM pg_attribute a \
     JOIN pg_class c ON c.oid = a.attrelid \
     JOIN pg_namespace n ON n.oid = c.relnamespace \
     LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
     WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm') \
       AND NOT c.relispartition AND {NS} \
     ORDER BY 1, 2, a.attnum";

const CONSTRAINTS_SQL: &str = "SELECT n.nspname::text, c.relname::text, con.conname::text, con.contype::text, \
       ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(num, ord) \
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num ORDER BY k.ord), \
       fn.nspname::text, fc.relname::text, \
       ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(num, ord) \
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num ORDER BY k.ord), \
       con.confdeltype::text, con.confupdtype::text, con.convalidated, con.connoinherit, \
       CASE WHEN con.contype = 'c' THEN pg_get_expr(con.conbin, con.conrelid) END \
     FROM pg_constraint con \
     JOIN pg_class c ON c.oid = con.conrelid \
     JOIN pg_namespace n ON n.oid = c.relnamespace \
     LEFT JOIN pg_class fc ON fc.oid = con.confrelid \
     LEFT JOIN pg_namespace fn ON fn.oid = fc.relnamespace \
     WHERE con.contype IN ('p', 'u', 'f', 'c') AND c.relkind IN ('r', 'p') \
       AND NOT c.relispartition AND {NS} \
     ORDER BY 1, 2, 3";

const INDEXES_SQL: &str = "SELECT n.nspname::text, t.relname::text, i.relname::text, ix.indisunique, \
       am.amname::text, k.defs, pg_get_expr(ix.indpred, ix.indrelid), \
       EXISTS (SELECT 1 FROM pg_constraint con WHERE con.conindid = ix.indexrelid \
               AND con.conrelid = ix.indrelid AND con.contype IN ('p', 'u', 'x')), \
       k.is_column, k.descending, k.nulls_first \
     FROM pg_index ix \
     JOIN pg_class i ON i.oid = ix.indexrelid \
     JOIN pg_class t ON t.oid = ix.indrelid \
     JOIN pg_namespace n ON n.oid = t.relnamespace \
     JOIN pg_am am ON am.oid = i.relam \
     CROSS JOIN LATERAL ( \
       SELECT array_agg(CASE WHEN ix.indkey[s.k - 1] <> 0 THEN a.attname::text \
                             ELSE pg_get_indexdef(ix.indexrelid, s.k, true) END ORDER BY s.k) AS defs, \
              array_agg(ix.indkey[s.k - 1] <> 0 ORDER BY s.k) AS is_column, \
              array_agg(ix.indoption[s.k - 1] & 1 = 1 ORDER BY s.k) AS descending, \
              array_agg(ix.indoption[s.k - 1] & 2 = 2 ORDER BY s.k) AS nulls_first \
       FROM generate_series(1, ix.indnkeyatts) s(k) \
       LEFT JOIN pg_attribute a ON a.attrelid = ix.indrelid AND a.attnum = ix.indkey[s.k - 1]) k \
     WHERE t.relkind IN ('r', 'p') AND NOT t.relispartition AND {NS} \
     ORDER BY 1, 2, 3";

/// Whether object `oid` of catalog `class` belongs to an extension.
const EXT_MEMBER: &str = "EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = '{CLASS}'::regclass \
     AND d.objid = {OID} AND d.deptype = 'e')";

const VIEWS_SQL: &str = "SELECT n.nspname::text, c.relname::text, pg_get_viewdef(c.oid, true), c.relkind = 'm' \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind IN ('v', 'm') AND NOT {EXT_CLASS} AND {NS}";

const FUNCTIONS_SQL: &str = "SELECT n.nspname::text, p.proname::text, \
       ARRAY(SELECT format_type(a.t, NULL) FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY a(t, i) ORDER BY a.i), \
       coalesce(pg_get_function_result(p.oid), ''), l.lanname::text, p.provolatile::text, p.prosecdef \
     FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang \
     WHERE p.prokind IN ('f', 'p') AND NOT {EXT_PROC} AND {NS} ORDER BY 1, 2, 3";

const ENUMS_SQL: &str = "SELECT n.nspname::text, t.typname::text, \
       ARRAY(SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder) \
     FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
     WHERE t.typtype = 'e' AND NOT {EXT_TYPE} AND {NS}";

const SEQUENCES_SQL: &str = "SELECT n.nspname::text, c.relname::text, format_type(s.seqtypid, NULL), s.seqincrement, \
       (SELECT format('%s.%s.%s', tn.nspname, tc.relname, ta.attname) FROM pg_depend d \
          JOIN pg_class tc ON tc.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = tc.relnamespace \
          JOIN pg_attribute ta ON ta.attrelid = d.refobjid AND ta.attnum = d.refobjsubid \
          WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass \
            AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i') LIMIT 1), \
       EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid \
               AND d.deptype = 'i') \
         OR EXISTS (SELECT 1 FROM pg_attrdef ad JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass \
               AND d.objid = ad.oid WHERE d.refobjid = c.oid AND d.refclassid = 'pg_class'::regclass) \
     FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE NOT {EXT_CLASS} AND {NS}";

const TRIGGERS_SQL: &str = "SELECT n.nspname::text, c.relname::text, t.tgname::text, t.tgtype::int, \
       pn.nspname::text || '.' || p.proname::text \
     FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
     JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_namespace pn ON pn.oid = p.pronamespace \
     WHERE NOT t.tgisinternal AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND {NS} ORDER BY 1, 2, 3";

const POLICIES_SQL: &str = "SELECT n.nspname::text, c.relname::text, p.polname::text, p.polpermissive, \
       ARRAY(SELECT CASE WHEN r = 0 THEN 'public' ELSE pg_get_userbyid(r)::text END \
             FROM unnest(p.polroles) r ORDER BY 1), \
       p.polcmd::text, pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid) \
     FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE {NS} ORDER BY 1, 2, 3";

const TABLE_GRANTS_SQL: &str = "SELECT n.nspname::text, c.relname::text, \
       CASE WHEN a.grantee = 0 THEN 'public' ELSE pg_get_userbyid(a.grantee)::text END, \
       lower(a.privilege_type) \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a \
     WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND a.grantee <> c.relowner AND {NS}";

const SCHEMA_GRANTS_SQL: &str = "SELECT n.nspname::text, \
       CASE WHEN a.grantee = 0 THEN 'public' ELSE pg_get_userbyid(a.grantee)::text END, \
       lower(a.privilege_type) \
     FROM pg_namespace n, aclexplode(n.nspacl) a WHERE a.grantee <> n.nspowner AND {NS}";

const EXTENSIONS_SQL: &str = "SELECT e.extname::text, e.extversion, n.nspname::text \
     FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace ORDER BY 1";

fn sql(template: &str) -> String {
    let member =
        |class: &str, oid: &str| EXT_MEMBER.replace("{CLASS}", class).replace("{OID}", oid);
    template
        .replace("{NS}", NS_FILTER)
        .replace("{EXT_CLASS}", &member("pg_class", "c.oid"))
        .replace("{EXT_PROC}", &member("pg_proc", "p.oid"))
        .replace("{EXT_TYPE}", &member("pg_type", "t.oid"))
}

impl Catalog {
    /// Reads `namespaces` (tables with their columns, keys, indexes, checks, RLS) and every
    /// extension, in one REPEATABLE READ, READ ONLY transaction (one consistent snapshot).
    pub(crate) async fn read(
        conn: &mut PgConnection,
        namespaces: &Namespaces,
    ) -> Result<Catalog, sqlx::Error> {
        use sqlx::Connection as _;
        let ns = namespaces.param();
        let mut tx = conn.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let mut cat = Catalog::default();
        let mut view_columns: Vec<((String, String), String, String)> = Vec::new();

        for row in sqlx::query(&sql(NAMESPACES_SQL))
            .bind(&ns)
            .fetch_all(&mut *tx)
            .await?
        {
            cat.namespaces.insert(row.try_get(0)?);
        }

        for row in sqlx::query(&sql(TABLES_SQL))
            .bind(&ns)
            .fetch_all(&mut *tx)
            .await?
        {
            let key = (row.try_get(0)?, row.try_get(1)?);
            cat.tables.insert(
                key,
                Table {
                    rls: row.try_get(2)?,
                    force_rls: row.try_get(3)?,
                    ..Table::default()
                },
            );
        }

        for row in sqlx::query(&sql(COLUMNS_SQL))
            .bind(&ns)
            .fetch_all(&mut *tx)
            .await?
        {
            let key: (String, String) = (row.try_get(0)?, row.try_get(1)?);
            let identity: Option<String> = row.try_get(6)?;
            let generated: Option<String> = row.try_get(7)?;
            let column = Column {
                name: row.try_get(2)?,
                type_name: row.try_get(3)?,
                not_null: row.try_get(4)?,
                default: row.try_get(5)?,
                identity: match identity.as_deref() {
                    Some("a") => Some(Identity::Always),
                    Some("d") => Some(Identity::ByDefault),
                    _ => None,
                },
                generated: generated.as_deref() == Some("s"),
            };
            if let Some(t) = cat.tables.get_mut(&key) {
                t.columns.push(column);
            } else {
                view_columns.push((key, column.name, column.type_name));
            }
        }

        for row in sqlx::query(&sql(CONSTRAINTS_SQL))
            .bind(&ns)
            .fetch_all(&mut *tx)
            .await?
        {
            let key: (String, String) = (row.try_get(0)?, row.try_get(1)?);
            let Some(t) = cat.tables.get_mut(&key) else {
                continue;
            };
            let name: String = row.try_get(2)?;
            let kind: String = row.try_get(3)?;
            let columns: Vec<String> = row.try_get(4)?;
            match kind.as_str() {
                "p" => t.primary_key = Some(Key { name, columns }),
                "u" => t.uniques.push(Key { name, columns }),
                "f" => {
                    let ref_schema: Option<String> = row.try_get(5)?;
                    let ref_table: Option<String> = row.try_get(6)?;
                    let ref_columns: Vec<String> = row.try_get(7)?;
                    let del: Option<String> = row.try_get(8)?;
                    let upd: Option<String> = row.try_get(9)?;
                    t.foreign_keys.push(ForeignKey {
                        name,
                        columns,
                        references: ColumnsRef::new(
                            TableRef::new(
                                ref_schema.unwrap_or_default(),
                                ref_table.unwrap_or_default(),
                            ),
                            ref_columns,
                        ),
                        on_delete: del
                            .as_deref()
                            .and_then(ReferentialAction::from_code)
                            .unwrap_or(ReferentialAction::NoAction),
                        on_update: upd
                            .as_deref()
                            .and_then(ReferentialAction::from_code)
                            .unwrap_or(ReferentialAction::NoAction),
                        validated: row.try_get(10)?,
                    });
                }
                _ => {
                    // As pg_get_constraintdef prints it, without deparsing twice.
                    let expression: String =
                        row.try_get::<Option<String>, _>(12)?.unwrap_or_default();
                    let validated: bool = row.try_get(10)?;
                    let no_inherit: bool = row.try_get(11)?;
                    t.checks.push(Check {
                        name,
                        definition: format!(
                            "CHECK ({expression}){}{}",
                            if no_inherit { " NO INHERIT" } else { "" },
                            if validated { "" } else { " NOT VALID" }
                        ),
                        expression,
                    })
                }
            }
        }

        for row in sqlx::query(&sql(INDEXES_SQL))
            .bind(&ns)
            .fetch_all(&mut *tx)
            .await?
        {
            let key: (String, String) = (row.try_get(0)?, row.try_get(1)?);
            if let Some(t) = cat.tables.get_mut(&key) {
                let exprs: Vec<String> = row.try_get(5)?;
                let is_column: Vec<bool> = row.try_get(8)?;
                let desc: Vec<bool> = row.try_get(9)?;
                let nulls_first: Vec<bool> = row.try_get(10)?;
                let keys: Vec<IndexKey> = exprs
                    .into_iter()
                    .enumerate()
                    .map(|(i, expr)| {
                        let column = is_column.get(i).copied().unwrap_or(false);
                        IndexKey {
                            expr,
                            column,
                            desc: desc.get(i).copied().unwrap_or(false),
                            nulls_first: nulls_first.get(i).copied().unwrap_or(false),
                        }
                    })
                    .collect();
                let columns = keys
                    .iter()
                    .map(|k| {
                        let e = if k.column {
                            crate::ident::display_ident(&k.expr)
                        } else {
                            k.expr.clone()
                        };
                        format!("{e}{}", k.order_suffix())
                    })
                    .collect();
                t.indexes.push(Index {
                    name: row.try_get(2)?,
                    unique: row.try_get(3)?,
                    method: row.try_get(4)?,
                    columns,
                    keys,
                    predicate: row.try_get(6)?,
                    backs_constraint: row.try_get(7)?,
                });
            }
        }

        for row in sqlx::query(&sql(VIEWS_SQL))
            .bind(&ns)
            .fetch_all(&mut *tx)
            .await?
        {
            cat.views.insert(
                (row.try_get(0)?, row.try_get(1)?),
                View {
                    columns: Vec::new(),
                    definition: row.try_get::<Option<String>, _>(2)?.unwrap_or_default(),
                    materialized: row.try_get(3)?,
                },
            );
        }
        for (key, name, type_name) in view_columns {
            if let Some(v) = cat.views.get_mut(&key) {
                v.columns.push((name, type_name));
            }
        }

        for row in sqlx::query(&sql(FUNCTIONS_SQL))
            .bind(&ns)
            .fetch_all(&mut *tx)
            .await?
        {
            let volatility: String = row.try_get(5)?;
            cat.functions
                .entry((row.try_get(0)?, row.try_get(1)?))
                .or_default()
                .push(Function {
                    arguments: row.try_get(2)?,
                    returns: row.try_get(3)?,
                    language: row.try_get(4)?,
                    volatility: match volatility.as_str() {
                        "i" => crate::spec::Volatility::Immutable,
                        "s" => crate::spec::Volatility::Stable,
                        _ => crate::spec::Volatility::Volatile,
                    },
                    security_definer: row.try_get(6)?,
                });
        }

        for row in sqlx::query(&sql(ENUMS_SQL))
            .bind(&ns)
            .fetch_all(&mut *tx)
            .await?
        {
            cat.enums
                .insert((row.try_get(0)?, row.try_get(1)?), row.try_get(2)?);
        }

        for row in sqlx::query(&sql(SEQUENCES_SQL))
            .bind(&ns)
            .fetch_all(&mut *tx)
            .await?
        {
            cat.sequences.insert(
                (row.try_get(0)?, row.try_get(1)?),
                Sequence {
                    type_name: row.try_get(2)?,
                    increment: row.try_get(3)?,
                    owned_by: row.try_get(4)?,
                    column_default: row.try_get(5)?,
                },
            );
        }

        for row in sqlx::query(&sql(TRIGGERS_SQL))
            .bind(&ns)
            .fetch_all(&mut *tx)
            .await?
        {
            let key: (String, String) = (row.try_get(0)?, row.try_get(1)?);
            let tgtype: i32 = row.try_get(3)?;
            let timing = if tgtype & 64 != 0 {
                "instead_of"
            } else if tgtype & 2 != 0 {
                "before"
            } else {
                "after"
            };
            let mut events = Vec::new();
            for (bit, name) in [
                (8, "delete"),
                (4, "insert"),
                (32, "truncate"),
                (16, "update"),
            ] {
                if tgtype & bit != 0 {
                    events.push(name.to_string());
                }
            }
            if let Some(t) = cat.tables.get_mut(&key) {
                t.triggers.push(Trigger {
                    name: row.try_get(2)?,
                    timing: timing.to_string(),
                    events,
                    level: if tgtype & 1 != 0 { "row" } else { "statement" }.to_string(),
                    function: row.try_get(4)?,
                });
            }
        }

        for row in sqlx::query(&sql(POLICIES_SQL))
            .bind(&ns)
            .fetch_all(&mut *tx)
            .await?
        {
            let key: (String, String) = (row.try_get(0)?, row.try_get(1)?);
            let cmd: String = row.try_get(5)?;
            if let Some(t) = cat.tables.get_mut(&key) {
                t.policies.push(Policy {
                    name: row.try_get(2)?,
                    permissive: row.try_get(3)?,
                    roles: row.try_get(4)?,
                    command: match cmd.as_str() {
                        "r" => "select",
                        "a" => "insert",
                        "w" => "update",
                        "d" => "delete",
                        _ => "all",
                    }
                    .to_string(),
                    using_expr: row.try_get(6)?,
                    with_check: row.try_get(7)?,
                });
            }
        }

        for row in sqlx::query(&sql(TABLE_GRANTS_SQL))
            .bind(&ns)
            .fetch_all(&mut *tx)
            .await?
        {
            let key: (String, String) = (row.try_get(0)?, row.try_get(1)?);
            if let Some(t) = cat.tables.get_mut(&key) {
                t.grants
                    .entry(row.try_get(2)?)
                    .or_default()
                    .insert(row.try_get(3)?);
            }
        }

        for row in sqlx::query(&sql(SCHEMA_GRANTS_SQL))
            .bind(&ns)
            .fetch_all(&mut *tx)
            .await?
        {
            cat.schema_grants
                .entry(row.try_get(0)?)
                .or_default()
                .entry(row.try_get(1)?)
                .or_default()
                .insert(row.try_get(2)?);
        }

        for row in sqlx::query(EXTENSIONS_SQL).fetch_all(&mut *tx).await? {
            cat.extensions.insert(
                row.try_get(0)?,
                Extension {
                    version: row.try_get(1)?,
                    schema: row.try_get(2)?,
                },
            );
        }
        tx.rollback().await?;
        Ok(cat)
    }

    /// The tables of one namespace, by name.
    pub(crate) fn tables_in<'a>(
        &'a self,
        namespace: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a Table)> + 'a {
        self.tables
            .iter()
            .filter(move |((ns, _), _)| ns == namespace)
            .map(|((_, name), t)| (name.as_str(), t))
    }

    /// This catalog as an expectation that pins everything down: used to compare a database with
    /// one its migrations produced. `skip` tables are left out (`_sqlx_migrations`).
    pub(crate) fn to_expected(&self, skip: &[TableRef]) -> ExpectedSchema {
        let mut expected = ExpectedSchema::new();
        expected.extensions = self
            .extensions
            .iter()
            .filter(|(name, _)| name.as_str() != "plpgsql")
            .map(|(name, e)| {
                let mut spec = ExtensionSpec::new(name.clone());
                spec.version = Some(e.version.clone());
                spec.schema = Some(e.schema.clone());
                spec
            })
            .collect();
        for ns in &self.namespaces {
            let mut spec = NamespaceSpec::new();
            let here = |key: &(String, String)| &key.0 == ns;
            for (key, v) in self.views.iter().filter(|(k, _)| here(k)) {
                let view = ViewSpec {
                    columns: Some(v.columns.iter().cloned().collect()),
                    definition: Some(v.definition.clone()),
                    materialized: Some(v.materialized),
                };
                spec.views.insert(key.1.clone(), view);
            }
            for (key, overloads) in self.functions.iter().filter(|(k, _)| here(k)) {
                // One declaration per name: the first overload pins the name down.
                if let Some(f) = overloads.first() {
                    let func = FunctionSpec {
                        arguments: Some(f.arguments.clone()),
                        returns: Some(f.returns.clone()),
                        language: Some(f.language.clone()),
                        volatility: Some(f.volatility),
                        security_definer: Some(f.security_definer),
                    };
                    spec.functions.insert(key.1.clone(), func);
                }
            }
            for (key, labels) in self.enums.iter().filter(|(k, _)| here(k)) {
                spec.enums.insert(key.1.clone(), labels.clone());
            }
            for (key, s) in self.sequences.iter().filter(|(k, _)| here(k)) {
                if s.column_default {
                    continue;
                }
                let seq = SequenceSpec {
                    type_name: Some(s.type_name.clone()),
                    increment: Some(s.increment),
                    owned_by: s.owned_by.clone(),
                };
                spec.sequences.insert(key.1.clone(), seq);
            }
            spec.grants = Some(grants_spec(self.schema_grants.get(ns)));
            expected.schemas.insert(ns.clone(), spec);
        }
        for ((ns, name), t) in &self.tables {
            if skip.iter().any(|s| &s.schema == ns && &s.table == name) {
                continue;
            }
            let mut spec = TableSpec::new();
            for c in &t.columns {
                let mut col = ColumnSpec::new(c.type_name.clone());
                col.not_null = c.not_null;
                col.default = c.default.clone();
                col.identity = c.identity;
                spec.columns.insert(c.name.clone(), col);
            }
            spec.primary_key = t.primary_key.as_ref().map(|k| k.columns.clone());
            spec.unique = t.uniques.iter().map(|k| k.columns.clone()).collect();
            spec.foreign_keys = t
                .foreign_keys
                .iter()
                .map(|fk| {
                    let mut f = ForeignKeySpec::new(fk.columns.clone(), fk.references.clone());
                    f.on_delete = Some(fk.on_delete);
                    f.on_update = Some(fk.on_update);
                    f
                })
                .collect();
            spec.indexes = t
                .indexes
                .iter()
                .filter(|ix| !ix.backs_constraint)
                .map(|ix| {
                    let mut i = IndexSpec::new(ix.keys.iter().map(ToString::to_string));
                    i.unique = Some(ix.unique);
                    i.method = Some(ix.method.clone());
                    i.predicate = ix.predicate.clone();
                    i
                })
                .collect();
            spec.checks = t
                .checks
                .iter()
                .map(|c| {
                    let mut s = CheckSpec::new(c.name.clone());
                    s.expression = Some(c.expression.clone());
                    s
                })
                .collect();
            spec.row_level_security = Some(t.rls);
            spec.force_row_level_security = Some(t.force_rls);
            for tr in &t.triggers {
                let trigger = TriggerSpec {
                    timing: Some(tr.timing.clone()),
                    events: Some(tr.events.clone()),
                    level: Some(tr.level.clone()),
                    function: Some(tr.function.clone()),
                };
                spec.triggers.insert(tr.name.clone(), trigger);
            }
            for p in &t.policies {
                let policy = PolicySpec {
                    command: Some(p.command.clone()),
                    roles: Some(p.roles.clone()),
                    using_expr: p.using_expr.clone(),
                    with_check: p.with_check.clone(),
                    permissive: Some(p.permissive),
                };
                spec.policies.insert(p.name.clone(), policy);
            }
            spec.grants = Some(grants_spec(Some(&t.grants)));
            expected
                .schemas
                .entry(ns.clone())
                .or_default()
                .tables
                .insert(name.clone(), spec);
        }
        expected
    }
}
