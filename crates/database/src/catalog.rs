//! A live database's schema, read from `pg_catalog` in one round of six queries whatever the
//! number of tables and columns.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{PgConnection, Row};

use crate::ident::{ColumnsRef, TableRef};
use crate::spec::{
    CheckSpec, ColumnSpec, ExpectedSchema, ExtensionSpec, ForeignKeySpec, Identity, IndexSpec,
    NamespaceSpec, ReferentialAction, TableSpec,
};

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
     WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p') \
       AND NOT c.relispartition AND {NS} \
     ORDER BY 1, 2, a.attnum";

const CONSTRAINTS_SQL: &str = "SELECT n.nspname::text, c.relname::text, con.conname::text, con.contype::text, \
       ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(num, ord) \
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num ORDER BY k.ord), \
       fn.nspname::text, fc.relname::text, \
       ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(num, ord) \
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num ORDER BY k.ord), \
       con.confdeltype::text, con.confupdtype::text, con.convalidated, pg_get_constraintdef(con.oid), \
       pg_get_expr(con.conbin, con.conrelid) \
     FROM pg_constraint con \
     JOIN pg_class c ON c.oid = con.conrelid \
     JOIN pg_namespace n ON n.oid = c.relnamespace \
     LEFT JOIN pg_class fc ON fc.oid = con.confrelid \
     LEFT JOIN pg_namespace fn ON fn.oid = fc.relnamespace \
     WHERE con.contype IN ('p', 'u', 'f', 'c') AND c.relkind IN ('r', 'p') \
       AND NOT c.relispartition AND {NS} \
     ORDER BY 1, 2, 3";

const INDEXES_SQL: &str = "SELECT n.nspname::text, t.relname::text, i.relname::text, ix.indisunique, \
       am.amname::text, \
       ARRAY(SELECT pg_get_indexdef(ix.indexrelid, k, true) \
             FROM generate_series(1, ix.indnkeyatts) k ORDER BY k), \
       pg_get_expr(ix.indpred, ix.indrelid), \
       EXISTS (SELECT 1 FROM pg_constraint con WHERE con.conindid = ix.indexrelid \
               AND con.conrelid = ix.indrelid AND con.contype IN ('p', 'u', 'x')), \
       ARRAY(SELECT ix.indkey[k - 1] <> 0 FROM generate_series(1, ix.indnkeyatts) k ORDER BY k), \
       ARRAY(SELECT ix.indoption[k - 1] & 1 = 1 FROM generate_series(1, ix.indnkeyatts) k ORDER BY k), \
       ARRAY(SELECT ix.indoption[k - 1] & 2 = 2 FROM generate_series(1, ix.indnkeyatts) k ORDER BY k) \
     FROM pg_index ix \
     JOIN pg_class i ON i.oid = ix.indexrelid \
     JOIN pg_class t ON t.oid = ix.indrelid \
     JOIN pg_namespace n ON n.oid = t.relnamespace \
     JOIN pg_am am ON am.oid = i.relam \
     WHERE t.relkind IN ('r', 'p') AND NOT t.relispartition AND {NS} \
     ORDER BY 1, 2, 3";

const EXTENSIONS_SQL: &str = "SELECT e.extname::text, e.extversion, n.nspname::text \
     FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace ORDER BY 1";

fn sql(template: &str) -> String {
    template.replace("{NS}", NS_FILTER)
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
                _ => t.checks.push(Check {
                    name,
                    definition: row.try_get(11)?,
                    expression: row.try_get::<Option<String>, _>(12)?.unwrap_or_default(),
                }),
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
                            expr: if column {
                                crate::normalize::plain_identifier(&expr).unwrap_or(expr)
                            } else {
                                expr
                            },
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
            expected.schemas.insert(ns.clone(), NamespaceSpec::new());
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
