//! A live database's schema, read from `pg_catalog` in one round of 15 set-based queries in one
//! read-only transaction, whatever the number of tables and objects. Stored expressions are
//! deparsed once per distinct tree ([`crate::nodetree`]), so the round opens almost no relation.

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

/// Defaults come as raw trees with their `pg_attrdef` oid, deparsed later (see [`nodetree`]).
const COLUMNS_SQL: &str = "SELECT n.nspname::text, c.relname::text, a.attname::text, \
       format_type(a.atttypid, a.atttypmod), a.attnotnull, d.adbin::text, \
       a.attidentity::text, a.attgenerated::text, a.attnum::int4, d.oid::int8, a.attrelid::int8 \
     FROM pg_attribute a \
     JOIN pg_class c ON c.oid = a.attrelid \
     JOIN pg_namespace n ON n.oid = c.relnamespace \
     LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
     WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm') \
       AND NOT c.relispartition AND {NS} \
     ORDER BY a.attrelid, a.attnum";

/// Key columns come as attribute numbers and the referenced table as an oid, named from the
/// columns read (see [`Relations`]). CHECK conditions come as raw trees with the constraint's oid.
const CONSTRAINTS_SQL: &str = "SELECT n.nspname::text, c.relname::text, con.conname::text, con.contype::text, \
       coalesce(con.conkey, '{}')::int4[], con.confrelid::int8, coalesce(con.confkey, '{}')::int4[], \
       con.confdeltype::text, con.confupdtype::text, con.convalidated, con.connoinherit, \
       CASE WHEN con.contype = 'c' THEN con.conbin::text END, con.oid::int8 \
     FROM pg_constraint con \
     JOIN pg_class c ON c.oid = con.conrelid \
     JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE con.contype IN ('p', 'u', 'f', 'c') AND c.relkind IN ('r', 'p') \
       AND NOT c.relispartition AND {NS} \
     ORDER BY con.conrelid, con.conname";

/// Keys come as attribute numbers (0 for an expression) and option bits, named from the columns
/// read; only an index with an expression key has its keys deparsed (`pg_get_indexdef`, which
/// opens the index). Predicates come as raw trees with the index's oid.
const INDEXES_SQL: &str = "SELECT n.nspname::text, t.relname::text, i.relname::text, ix.indisunique, \
       am.amname::text, (ix.indkey::int2[])[:]::int4[], ix.indpred::text, \
       EXISTS (SELECT 1 FROM pg_constraint con WHERE con.conindid = ix.indexrelid \
               AND con.conrelid = ix.indrelid AND con.contype IN ('p', 'u', 'x')), \
       ix.indnkeyatts::int4, (ix.indoption::int2[])[:]::int4[], ix.indexrelid::int8, \
       CASE WHEN 0 = ANY (ix.indkey::int2[]) THEN \
         ARRAY(SELECT pg_get_indexdef(ix.indexrelid, k, true) FROM generate_series(1, ix.indnkeyatts) k ORDER BY k) END \
     FROM pg_index ix \
     JOIN pg_class i ON i.oid = ix.indexrelid \
     JOIN pg_class t ON t.oid = ix.indrelid \
     JOIN pg_namespace n ON n.oid = t.relnamespace \
     JOIN pg_am am ON am.oid = i.relam \
     WHERE t.relkind IN ('r', 'p') AND NOT t.relispartition AND {NS} \
     ORDER BY ix.indrelid, i.relname";

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

/// The owning column comes as (table oid, attribute number), named from the columns read.
const SEQUENCES_SQL: &str = "SELECT n.nspname::text, c.relname::text, format_type(s.seqtypid, NULL), s.seqincrement, \
       o.refobjid::int8, o.refobjsubid::int4, \
       coalesce(o.deptype = 'i', false) OR c.oid IN (SELECT d.refobjid FROM pg_depend d \
         WHERE d.classid = 'pg_attrdef'::regclass AND d.refclassid = 'pg_class'::regclass) \
     FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
     LEFT JOIN pg_depend o ON o.classid = 'pg_class'::regclass AND o.objid = c.oid \
       AND o.refclassid = 'pg_class'::regclass AND o.refobjsubid > 0 AND o.deptype IN ('a', 'i') \
     WHERE NOT {EXT_CLASS} AND {NS}";

const TRIGGERS_SQL: &str = "SELECT n.nspname::text, c.relname::text, t.tgname::text, t.tgtype::int, \
       pn.nspname::text || '.' || p.proname::text \
     FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
     JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_namespace pn ON pn.oid = p.pronamespace \
     WHERE NOT t.tgisinternal AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND {NS} ORDER BY t.tgrelid, t.tgname";

const POLICIES_SQL: &str = "SELECT n.nspname::text, c.relname::text, p.polname::text, p.polpermissive, \
       ARRAY(SELECT CASE WHEN r = 0 THEN 'public' ELSE pg_get_userbyid(r)::text END \
             FROM unnest(p.polroles) r ORDER BY 1), \
       p.polcmd::text, p.polqual::text, p.polwithcheck::text, p.oid::int8 \
     FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE {NS} ORDER BY p.polrelid, p.polname";

const TABLE_GRANTS_SQL: &str = "SELECT n.nspname::text, c.relname::text, \
       CASE WHEN a.grantee = 0 THEN 'public' ELSE pg_get_userbyid(a.grantee)::text END, \
       lower(a.privilege_type) \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a \
     WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND a.grantee <> c.relowner AND {NS}";

const SCHEMA_GRANTS_SQL: &str = "SELECT n.nspname::text, \
       CASE WHEN a.grantee = 0 THEN 'public' ELSE pg_get_userbyid(a.grantee)::text END, \
       lower(a.privilege_type) \
     FROM pg_namespace n, aclexplode(n.nspacl) a WHERE a.grantee <> n.nspowner AND {NS}";

/// Deparses the representatives of [`nodetree`] groups: `$1` attrdef, `$2` constraint, `$3`
/// policy (USING), `$4` policy (WITH CHECK), `$5` index (predicate) oids, each with a flag in
/// `$6`..`$10`: whether the tree needs its table to be deparsed. One that does not (no column
/// reference, no sub-select: a constant, `now()`, a serial's `nextval`) is deparsed without it,
/// which opens no table at all.
const DEPARSE_SQL: &str = "SELECT 0, d.oid::int8, pg_get_expr(d.adbin, CASE WHEN u.rel THEN d.adrelid ELSE 0 END) \
       FROM unnest($1::int8[], $6::bool[]) u(oid, rel) JOIN pg_attrdef d ON d.oid = u.oid::oid \
     UNION ALL SELECT 1, c.oid::int8, pg_get_expr(c.conbin, CASE WHEN u.rel THEN c.conrelid ELSE 0 END) \
       FROM unnest($2::int8[], $7::bool[]) u(oid, rel) JOIN pg_constraint c ON c.oid = u.oid::oid \
     UNION ALL SELECT 2, p.oid::int8, pg_get_expr(p.polqual, CASE WHEN u.rel THEN p.polrelid ELSE 0 END) \
       FROM unnest($3::int8[], $8::bool[]) u(oid, rel) JOIN pg_policy p ON p.oid = u.oid::oid \
     UNION ALL SELECT 3, p.oid::int8, pg_get_expr(p.polwithcheck, CASE WHEN u.rel THEN p.polrelid ELSE 0 END) \
       FROM unnest($4::int8[], $9::bool[]) u(oid, rel) JOIN pg_policy p ON p.oid = u.oid::oid \
     UNION ALL SELECT 4, x.indexrelid::int8, pg_get_expr(x.indpred, CASE WHEN u.rel THEN x.indrelid ELSE 0 END) \
       FROM unnest($5::int8[], $10::bool[]) u(oid, rel) JOIN pg_index x ON x.indexrelid = u.oid::oid";

/// Names relations (and their columns) that the columns query did not read: `$1` oids.
const RELATIONS_SQL: &str = "SELECT c.oid::int8, n.nspname::text, c.relname::text, a.attnum::int4, \
       a.attname::text \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
     WHERE c.oid = ANY ($1::int8[]::oid[])";

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

type TableKey = (String, String);

/// Where a deparsed expression goes: (table, index in its list).
#[derive(Debug)]
enum Slot {
    Default(TableKey, usize),
    Check(TableKey, usize),
    Using(TableKey, usize),
    WithCheck(TableKey, usize),
    Predicate(TableKey, usize),
}

impl Slot {
    /// The `DEPARSE_SQL` branch that deparses this kind of tree.
    fn kind(&self) -> usize {
        match self {
            Slot::Default(..) => 0,
            Slot::Check(..) => 1,
            Slot::Using(..) => 2,
            Slot::WithCheck(..) => 3,
            Slot::Predicate(..) => 4,
        }
    }

    fn table(&self) -> &TableKey {
        match self {
            Slot::Default(t, _)
            | Slot::Check(t, _)
            | Slot::Using(t, _)
            | Slot::WithCheck(t, _)
            | Slot::Predicate(t, _) => t,
        }
    }
}

/// Stored expressions waiting to be deparsed, grouped by [`nodetree::expr_key`]: one
/// representative of each group is deparsed by the server, and its text is given to all.
#[derive(Debug, Default)]
struct Deparse {
    /// Group key -> group number.
    groups: std::collections::HashMap<String, usize>,
    /// Per group: (branch, oid) of its representative.
    representatives: Vec<(usize, i64)>,
    /// Oids to deparse, per `DEPARSE_SQL` branch.
    oids: [Vec<i64>; 5],
    /// Whether each of `oids` needs its table to be deparsed.
    needs_table: [Vec<bool>; 5],
    /// Every expression: its slot and group.
    pending: Vec<(Slot, usize)>,
}

impl Deparse {
    fn add(
        &mut self,
        attnums: &BTreeMap<TableKey, BTreeMap<i32, String>>,
        slot: Slot,
        oid: i64,
        tree: &str,
    ) {
        let table = slot.table();
        let columns = attnums.get(table);
        let relation = format!("{}.{}", table.0, table.1);
        let key = crate::nodetree::expr_key(tree, &relation, |n| {
            columns.and_then(|c| c.get(&n)).map(String::as_str)
        });
        let kind = slot.kind();
        let group = *self.groups.entry(key).or_insert_with(|| {
            self.oids[kind].push(oid);
            self.needs_table[kind].push(crate::nodetree::needs_relation(tree));
            self.representatives.push((kind, oid));
            self.representatives.len() - 1
        });
        self.pending.push((slot, group));
    }

    /// Deparses the representatives in one statement and fills every slot.
    async fn resolve(
        self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        cat: &mut Catalog,
    ) -> Result<(), sqlx::Error> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut texts: std::collections::HashMap<(usize, i64), String> =
            std::collections::HashMap::new();
        let mut query = sqlx::query(DEPARSE_SQL);
        for oids in &self.oids {
            query = query.bind(oids);
        }
        for flags in &self.needs_table {
            query = query.bind(flags);
        }
        let rows = query.fetch_all(&mut **tx).await?;
        for row in rows {
            let kind: i32 = row.try_get(0)?;
            let text: Option<String> = row.try_get(2)?;
            if let (Ok(kind), Some(text)) = (usize::try_from(kind), text) {
                texts.insert((kind, row.try_get(1)?), text);
            }
        }
        for (slot, group) in self.pending {
            let text = self
                .representatives
                .get(group)
                .and_then(|rep| texts.get(rep))
                .cloned();
            let table = cat.tables.get_mut(slot.table());
            let (Some(text), Some(t)) = (text, table) else {
                return Err(changed_while_reading(slot.table(), "an expression"));
            };
            match slot {
                Slot::Default(_, i) => {
                    if let Some(c) = t.columns.get_mut(i) {
                        c.default = Some(text);
                    }
                }
                Slot::Check(_, i) => {
                    if let Some(c) = t.checks.get_mut(i) {
                        // `definition` holds the suffix (` NO INHERIT`, ` NOT VALID`) until now.
                        c.definition = format!("CHECK ({text}){}", c.definition);
                        c.expression = text;
                    }
                }
                Slot::Using(_, i) => {
                    if let Some(p) = t.policies.get_mut(i) {
                        p.using_expr = Some(text);
                    }
                }
                Slot::WithCheck(_, i) => {
                    if let Some(p) = t.policies.get_mut(i) {
                        p.with_check = Some(text);
                    }
                }
                Slot::Predicate(_, i) => {
                    if let Some(ix) = t.indexes.get_mut(i) {
                        ix.predicate = Some(text);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Relations by oid and their columns by attribute number: filled by the columns query, and
/// for relations it does not read (a foreign key into another schema or a partition, a sequence
/// owned by a column of one) by one more query, only when there are such relations.
#[derive(Debug, Default)]
struct Relations {
    by_oid: std::collections::HashMap<i64, TableKey>,
    /// (schema, table) -> attribute number -> column name.
    attnums: BTreeMap<TableKey, BTreeMap<i32, String>>,
}

impl Relations {
    fn add_column(&mut self, oid: i64, table: &TableKey, attnum: i32, name: String) {
        self.by_oid.entry(oid).or_insert_with(|| table.clone());
        self.attnums
            .entry(table.clone())
            .or_default()
            .insert(attnum, name);
    }

    /// Reads every relation of `oids` not known yet.
    async fn load(
        &mut self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        oids: impl IntoIterator<Item = i64>,
    ) -> Result<(), sqlx::Error> {
        let mut missing: Vec<i64> = oids
            .into_iter()
            .filter(|oid| !self.by_oid.contains_key(oid))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        missing.sort_unstable();
        missing.dedup();
        let rows = sqlx::query(RELATIONS_SQL)
            .bind(&missing)
            .fetch_all(&mut **tx)
            .await?;
        for row in rows {
            let table: TableKey = (row.try_get(1)?, row.try_get(2)?);
            self.add_column(row.try_get(0)?, &table, row.try_get(3)?, row.try_get(4)?);
        }
        Ok(())
    }

    fn table(&self, oid: i64) -> Option<&TableKey> {
        self.by_oid.get(&oid)
    }

    fn column(&self, table: &TableKey, attnum: i32) -> Option<&str> {
        self.attnums
            .get(table)
            .and_then(|c| c.get(&attnum))
            .map(String::as_str)
    }

    /// Names of `table`'s columns by attribute number (the key of constraint `what`).
    fn column_names(
        &self,
        table: &TableKey,
        numbers: &[i32],
        what: &str,
    ) -> Result<Vec<String>, sqlx::Error> {
        numbers
            .iter()
            .map(|&n| {
                self.column(table, n)
                    .map(str::to_string)
                    .ok_or_else(|| changed_while_reading(table, what))
            })
            .collect()
    }
}

/// The catalog moved under the read (DDL between two queries: catalog look-ups see the latest
/// committed state, not the transaction's snapshot).
fn changed_while_reading(table: &TableKey, what: &str) -> sqlx::Error {
    sqlx::Error::Protocol(format!(
        "the catalog changed while it was read ({what} of {}.{}): run the check again",
        table.0, table.1
    ))
}

/// One catalog query, bound to the namespace filter.
async fn fetch(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    template: &str,
    ns: &Option<Vec<String>>,
) -> Result<Vec<sqlx::postgres::PgRow>, sqlx::Error> {
    let start = std::time::Instant::now();
    let q = sql(template);
    let rows = if q.contains("$1") {
        sqlx::query(&q).bind(ns).fetch_all(&mut **tx).await
    } else {
        sqlx::query(&q).fetch_all(&mut **tx).await
    };
    tracing::trace!(
        elapsed_ms = start.elapsed().as_secs_f64() * 1e3,
        query = template.get(..60).unwrap_or(template),
        "catalog query"
    );
    rows
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
        let mut tx = conn
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await?;
        let mut cat = Catalog::default();
        let mut view_columns: Vec<((String, String), String, String)> = Vec::new();
        let mut rel = Relations::default();
        // Foreign keys, named once every referenced relation is known: (table, name, columns,
        // referenced oid, referenced attribute numbers, on delete, on update, validated).
        let mut foreign_keys = Vec::new();
        // Raw default trees: (table, column index, pg_attrdef oid, tree).
        let mut defaults: Vec<((String, String), usize, i64, String)> = Vec::new();
        let mut deparse = Deparse::default();

        for row in fetch(&mut tx, NAMESPACES_SQL, &ns).await? {
            cat.namespaces.insert(row.try_get(0)?);
        }

        for row in fetch(&mut tx, TABLES_SQL, &ns).await? {
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

        for row in fetch(&mut tx, COLUMNS_SQL, &ns).await? {
            let key: (String, String) = (row.try_get(0)?, row.try_get(1)?);
            let identity: Option<String> = row.try_get(6)?;
            let generated: Option<String> = row.try_get(7)?;
            let name: String = row.try_get(2)?;
            rel.add_column(row.try_get(10)?, &key, row.try_get(8)?, name.clone());
            let column = Column {
                name,
                type_name: row.try_get(3)?,
                not_null: row.try_get(4)?,
                default: None,
                identity: match identity.as_deref() {
                    Some("a") => Some(Identity::Always),
                    Some("d") => Some(Identity::ByDefault),
                    _ => None,
                },
                generated: generated.as_deref() == Some("s"),
            };
            if let Some(t) = cat.tables.get_mut(&key) {
                if let Some(tree) = row.try_get::<Option<String>, _>(5)? {
                    defaults.push((key.clone(), t.columns.len(), row.try_get(9)?, tree));
                }
                t.columns.push(column);
            } else {
                view_columns.push((key, column.name, column.type_name));
            }
        }

        for (key, column, oid, tree) in defaults {
            deparse.add(&rel.attnums, Slot::Default(key, column), oid, &tree);
        }

        for row in fetch(&mut tx, CONSTRAINTS_SQL, &ns).await? {
            let key: (String, String) = (row.try_get(0)?, row.try_get(1)?);
            let Some(t) = cat.tables.get_mut(&key) else {
                continue;
            };
            let name: String = row.try_get(2)?;
            let kind: String = row.try_get(3)?;
            let numbers: Vec<i32> = row.try_get(4)?;
            let columns = rel.column_names(&key, &numbers, &name)?;
            match kind.as_str() {
                "p" => t.primary_key = Some(Key { name, columns }),
                "u" => t.uniques.push(Key { name, columns }),
                "f" => {
                    let del: Option<String> = row.try_get(7)?;
                    let upd: Option<String> = row.try_get(8)?;
                    let action = |code: Option<String>| {
                        code.as_deref()
                            .and_then(ReferentialAction::from_code)
                            .unwrap_or(ReferentialAction::NoAction)
                    };
                    foreign_keys.push((
                        key.clone(),
                        name,
                        columns,
                        row.try_get::<i64, _>(5)?,
                        row.try_get::<Vec<i32>, _>(6)?,
                        action(del),
                        action(upd),
                        row.try_get::<bool, _>(9)?,
                    ));
                }
                _ => {
                    // The definition (as pg_get_constraintdef prints it) is completed once the
                    // condition is deparsed: for now it holds the suffix.
                    let validated: bool = row.try_get(9)?;
                    let no_inherit: bool = row.try_get(10)?;
                    if let Some(tree) = row.try_get::<Option<String>, _>(11)? {
                        let slot = Slot::Check(key.clone(), t.checks.len());
                        deparse.add(&rel.attnums, slot, row.try_get(12)?, &tree);
                    }
                    t.checks.push(Check {
                        name,
                        definition: format!(
                            "{}{}",
                            if no_inherit { " NO INHERIT" } else { "" },
                            if validated { "" } else { " NOT VALID" }
                        ),
                        expression: String::new(),
                    })
                }
            }
        }

        rel.load(&mut tx, foreign_keys.iter().map(|fk| fk.3))
            .await?;
        for (key, name, columns, ref_oid, ref_numbers, on_delete, on_update, validated) in
            foreign_keys
        {
            let Some(ref_table) = rel.table(ref_oid) else {
                return Err(changed_while_reading(&key, &name));
            };
            let references = ColumnsRef::new(
                TableRef::new(ref_table.0.clone(), ref_table.1.clone()),
                rel.column_names(ref_table, &ref_numbers, &name)?,
            );
            if let Some(t) = cat.tables.get_mut(&key) {
                t.foreign_keys.push(ForeignKey {
                    name,
                    columns,
                    references,
                    on_delete,
                    on_update,
                    validated,
                });
            }
        }

        for row in fetch(&mut tx, INDEXES_SQL, &ns).await? {
            let key: (String, String) = (row.try_get(0)?, row.try_get(1)?);
            if let Some(t) = cat.tables.get_mut(&key) {
                let name: String = row.try_get(2)?;
                let indkey: Vec<i32> = row.try_get(5)?;
                let key_count = usize::try_from(row.try_get::<i32, _>(8)?).unwrap_or(0);
                let options: Vec<i32> = row.try_get(9)?;
                let defs: Option<Vec<String>> = row.try_get(11)?;
                let mut keys = Vec::with_capacity(key_count);
                for (i, &attnum) in indkey.iter().take(key_count).enumerate() {
                    let expr = if attnum != 0 {
                        rel.column(&key, attnum).map(str::to_string)
                    } else {
                        defs.as_ref().and_then(|d| d.get(i)).cloned()
                    };
                    let Some(expr) = expr else {
                        return Err(changed_while_reading(&key, &name));
                    };
                    let option = options.get(i).copied().unwrap_or(0);
                    keys.push(IndexKey {
                        expr,
                        column: attnum != 0,
                        desc: option & 1 == 1,
                        nulls_first: option & 2 == 2,
                    });
                }
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
                if let Some(tree) = row.try_get::<Option<String>, _>(6)? {
                    let slot = Slot::Predicate(key.clone(), t.indexes.len());
                    deparse.add(&rel.attnums, slot, row.try_get(10)?, &tree);
                }
                t.indexes.push(Index {
                    name,
                    unique: row.try_get(3)?,
                    method: row.try_get(4)?,
                    columns,
                    keys,
                    predicate: None,
                    backs_constraint: row.try_get(7)?,
                });
            }
        }

        for row in fetch(&mut tx, VIEWS_SQL, &ns).await? {
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

        for row in fetch(&mut tx, FUNCTIONS_SQL, &ns).await? {
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

        for row in fetch(&mut tx, ENUMS_SQL, &ns).await? {
            cat.enums
                .insert((row.try_get(0)?, row.try_get(1)?), row.try_get(2)?);
        }

        let mut owners = Vec::new();
        for row in fetch(&mut tx, SEQUENCES_SQL, &ns).await? {
            let key: TableKey = (row.try_get(0)?, row.try_get(1)?);
            let owner_oid: Option<i64> = row.try_get(4)?;
            let owner_column: Option<i32> = row.try_get(5)?;
            if let (Some(oid), Some(attnum)) = (owner_oid, owner_column) {
                owners.push((key.clone(), oid, attnum));
            }
            cat.sequences.insert(
                key,
                Sequence {
                    type_name: row.try_get(2)?,
                    increment: row.try_get(3)?,
                    owned_by: None,
                    column_default: row.try_get(6)?,
                },
            );
        }
        rel.load(&mut tx, owners.iter().map(|o| o.1)).await?;
        for (key, oid, attnum) in owners {
            let owner = rel.table(oid).and_then(|table| {
                rel.column(table, attnum)
                    .map(|column| format!("{}.{}.{column}", table.0, table.1))
            });
            let Some(owner) = owner else {
                return Err(changed_while_reading(&key, "the owner"));
            };
            if let Some(s) = cat.sequences.get_mut(&key) {
                s.owned_by = Some(owner);
            }
        }

        for row in fetch(&mut tx, TRIGGERS_SQL, &ns).await? {
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

        for row in fetch(&mut tx, POLICIES_SQL, &ns).await? {
            let key: (String, String) = (row.try_get(0)?, row.try_get(1)?);
            let cmd: String = row.try_get(5)?;
            if let Some(t) = cat.tables.get_mut(&key) {
                let oid: i64 = row.try_get(8)?;
                if let Some(tree) = row.try_get::<Option<String>, _>(6)? {
                    let slot = Slot::Using(key.clone(), t.policies.len());
                    deparse.add(&rel.attnums, slot, oid, &tree);
                }
                if let Some(tree) = row.try_get::<Option<String>, _>(7)? {
                    let slot = Slot::WithCheck(key.clone(), t.policies.len());
                    deparse.add(&rel.attnums, slot, oid, &tree);
                }
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
                    using_expr: None,
                    with_check: None,
                });
            }
        }

        deparse.resolve(&mut tx, &mut cat).await?;

        for row in fetch(&mut tx, TABLE_GRANTS_SQL, &ns).await? {
            let key: (String, String) = (row.try_get(0)?, row.try_get(1)?);
            if let Some(t) = cat.tables.get_mut(&key) {
                t.grants
                    .entry(row.try_get(2)?)
                    .or_default()
                    .insert(row.try_get(3)?);
            }
        }

        for row in fetch(&mut tx, SCHEMA_GRANTS_SQL, &ns).await? {
            cat.schema_grants
                .entry(row.try_get(0)?)
                .or_default()
                .entry(row.try_get(1)?)
                .or_default()
                .insert(row.try_get(2)?);
        }

        for row in fetch(&mut tx, EXTENSIONS_SQL, &ns).await? {
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

#[cfg(test)]
mod tests {
    //! The catalog round deparses one representative per group of equal stored trees: every
    //! text it reports must be what deparsing each object itself gives.

    use super::*;
    use sqlx::Connection as _;

    /// Tables built to share trees where sharing is wrong: the same attribute number under
    /// another name, a dropped column's gap, a generated column naming a later column, sub-selects
    /// whose output depends on the outer table's name, whole-row references, several statements
    /// in one query string (every tree's locations differ), keys by number, a foreign key into
    /// another schema.
    const SQL: &str = "
        CREATE SCHEMA app; CREATE SCHEMA other;
        CREATE TABLE other.orgs (org_id int PRIMARY KEY, zone text);
        CREATE TABLE other.p1 (org int);
        CREATE TABLE app.members (org int, uid int);
        CREATE TABLE app.a1 (id int PRIMARY KEY, amount int DEFAULT 1 CHECK (amount > 0),
            note text DEFAULT 'x', at timestamptz DEFAULT now());
        CREATE TABLE app.a2 (id int PRIMARY KEY, balance int DEFAULT 1 CHECK (balance > 0),
            note text DEFAULT 'x', at timestamptz DEFAULT now()::date);
        CREATE TABLE app.a3 (id int, gone int, amount int);
        ALTER TABLE app.a3 DROP COLUMN gone;
        ALTER TABLE app.a3 ADD CONSTRAINT a3_amount_check CHECK (amount > 0) NOT VALID;
        ALTER TABLE app.a3 ADD CONSTRAINT a3_amount_small CHECK (amount < 100) NO INHERIT;
        ALTER TABLE app.a3 ADD CONSTRAINT a3_no_columns CHECK (1 > 0);
        CREATE TABLE app.g (id int, doubled int GENERATED ALWAYS AS (later * 2) STORED, later int);
        CREATE TABLE app.p1 (id int, org_id int);
        CREATE TABLE app.p2 (id int, org_id int);
        CREATE POLICY s ON app.p1 USING (EXISTS (SELECT 1 FROM other.p1 x WHERE x.org = org_id))
            WITH CHECK (org_id > 0);
        CREATE POLICY s ON app.p2 USING (EXISTS (SELECT 1 FROM other.p1 x WHERE x.org = org_id))
            WITH CHECK (org_id > 0);
        CREATE POLICY m ON app.p1 USING (EXISTS (SELECT 1 FROM other.p1 WHERE other.p1.org = app.p1.org_id));
        CREATE POLICY m ON app.p2 USING (EXISTS (SELECT 1 FROM other.p1 WHERE other.p1.org = app.p2.org_id));
        CREATE POLICY w ON app.p1 USING (row_to_json(p1.*)::text <> '');
        CREATE POLICY w ON app.p2 USING (row_to_json(p2.*)::text <> '');
        CREATE INDEX ON app.a1 (amount) WHERE amount > 0;
        CREATE INDEX ON app.a2 (balance) WHERE balance > 0;
        CREATE INDEX ON app.a1 (lower(note) DESC NULLS LAST, amount NULLS FIRST) INCLUDE (at);
        CREATE INDEX ON app.a2 (lower(note), balance DESC);
        CREATE TABLE app.f (id int, org int REFERENCES other.orgs (org_id),
            a1 int REFERENCES app.a1 (id), a2 int REFERENCES app.a2 (id) ON DELETE CASCADE);
        CREATE TABLE app.parted (id int PRIMARY KEY, v int) PARTITION BY RANGE (id);
        CREATE TABLE app.part1 PARTITION OF app.parted FOR VALUES FROM (0) TO (10);
        CREATE TABLE app.fp (x int, pid int REFERENCES app.parted (id));
        CREATE TABLE app.ident (id int GENERATED ALWAYS AS IDENTITY, s serial);
        CREATE SEQUENCE app.s1 OWNED BY app.a1.note;
        CREATE SEQUENCE app.s2 OWNED BY app.part1.v;
        CREATE SEQUENCE app.s3;
    ";

    /// (table, what, text) for every expression and key the round reports.
    type Texts = BTreeSet<(String, String, String)>;

    fn from_catalog(cat: &Catalog) -> Texts {
        let mut out = Texts::new();
        for ((ns, name), t) in &cat.tables {
            let table = format!("{ns}.{name}");
            let mut add = |what: String, text: String| {
                out.insert((table.clone(), what, text));
            };
            for c in &t.columns {
                if let Some(d) = &c.default {
                    add(format!("default {}", c.name), d.clone());
                }
            }
            for c in &t.checks {
                add(format!("check {}", c.name), c.expression.clone());
                add(format!("checkdef {}", c.name), c.definition.clone());
            }
            for p in &t.policies {
                if let Some(u) = &p.using_expr {
                    add(format!("using {}", p.name), u.clone());
                }
                if let Some(w) = &p.with_check {
                    add(format!("with_check {}", p.name), w.clone());
                }
            }
            for ix in &t.indexes {
                if let Some(p) = &ix.predicate {
                    add(format!("predicate {}", ix.name), p.clone());
                }
                add(format!("keys {}", ix.name), key_list(&ix.keys));
            }
            for k in t.primary_key.iter().chain(&t.uniques) {
                add(format!("key {}", k.name), k.columns.join(","));
            }
            for fk in &t.foreign_keys {
                add(
                    format!("fk {} {}", fk.name, fk.references.table),
                    format!("{} -> {}", fk.columns.join(","), fk.references),
                );
            }
        }
        out
    }

    /// The same, each object deparsed by itself.
    const ONE_BY_ONE: &str = "
        SELECT c.relnamespace::regnamespace::text || '.' || c.relname, 'default ' || a.attname,
               pg_get_expr(d.adbin, d.adrelid)
          FROM pg_attrdef d JOIN pg_class c ON c.oid = d.adrelid
          JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
        UNION ALL
        SELECT c.relnamespace::regnamespace::text || '.' || c.relname, 'check ' || con.conname,
               pg_get_expr(con.conbin, con.conrelid)
          FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid WHERE con.contype = 'c'
        UNION ALL
        SELECT c.relnamespace::regnamespace::text || '.' || c.relname, 'checkdef ' || con.conname,
               pg_get_constraintdef(con.oid)
          FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid WHERE con.contype = 'c'
        UNION ALL
        SELECT c.relnamespace::regnamespace::text || '.' || c.relname, 'using ' || p.polname,
               pg_get_expr(p.polqual, p.polrelid)
          FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid WHERE p.polqual IS NOT NULL
        UNION ALL
        SELECT c.relnamespace::regnamespace::text || '.' || c.relname, 'with_check ' || p.polname,
               pg_get_expr(p.polwithcheck, p.polrelid)
          FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid WHERE p.polwithcheck IS NOT NULL
        UNION ALL
        SELECT c.relnamespace::regnamespace::text || '.' || c.relname, 'predicate ' || i.relname,
               pg_get_expr(x.indpred, x.indrelid)
          FROM pg_index x JOIN pg_class c ON c.oid = x.indrelid JOIN pg_class i ON i.oid = x.indexrelid
         WHERE x.indpred IS NOT NULL
        UNION ALL
        SELECT c.relnamespace::regnamespace::text || '.' || c.relname,
               'fk ' || con.conname || ' ' || fc.relnamespace::regnamespace::text || '.' || fc.relname,
               (SELECT string_agg(a.attname, ',' ORDER BY k.ord)
                  FROM unnest(con.conkey) WITH ORDINALITY k(num, ord)
                  JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num)
               || ' -> ' || fc.relnamespace::regnamespace::text || '.' || fc.relname || '('
               || (SELECT string_agg(a.attname, ', ' ORDER BY k.ord)
                     FROM unnest(con.confkey) WITH ORDINALITY k(num, ord)
                     JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num) || ')'
          FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid
          JOIN pg_class fc ON fc.oid = con.confrelid WHERE con.contype = 'f'";

    #[tokio::test]
    async fn grouped_deparsing_reports_what_each_object_deparses_to() {
        let pg = citadel_itest_testkit::Postgres::start().await.unwrap();
        let dsn = pg.create_database("trees").await.unwrap();
        pg.execute_in("trees", SQL).await.unwrap();
        let mut conn = PgConnection::connect(&dsn).await.unwrap();
        let namespaces = Namespaces::Only(vec!["app".into(), "other".into()]);
        let cat = Catalog::read(&mut conn, &namespaces).await.unwrap();
        let found = from_catalog(&cat);

        let mut expected = Texts::new();
        for row in sqlx::query(ONE_BY_ONE).fetch_all(&mut conn).await.unwrap() {
            let table: String = row.get(0);
            let read = table
                .split_once('.')
                .is_some_and(|(ns, t)| cat.tables.contains_key(&(ns.into(), t.into())));
            if read {
                expected.insert((table, row.get(1), row.get(2)));
            }
        }
        let deparsed: Texts = found
            .iter()
            .filter(|(_, what, _)| !what.starts_with("key"))
            .cloned()
            .collect();
        assert_eq!(deparsed, expected);
        // A foreign key into a partitioned table is also kept against each partition.
        assert!(
            expected.iter().any(|(t, what, text)| t == "app.fp"
                && what.ends_with(" app.part1")
                && text == "pid -> app.part1(id)"),
            "{expected:?}"
        );

        // Relations the round does not read (another schema, a partition) are named by one more
        // query: the same names.
        let only_app = Namespaces::Only(vec!["app".into()]);
        let app = Catalog::read(&mut conn, &only_app).await.unwrap();
        assert_eq!(
            app.tables[&("app".into(), "f".into())],
            cat.tables[&("app".into(), "f".into())]
        );
        assert_eq!(
            app.tables[&("app".into(), "fp".into())],
            cat.tables[&("app".into(), "fp".into())]
        );
        let owner = |name: &str| {
            let s = &app.sequences[&("app".to_string(), name.to_string())];
            (s.owned_by.clone(), s.column_default)
        };
        assert_eq!(owner("s1"), (Some("app.a1.note".into()), false));
        assert_eq!(owner("s2"), (Some("app.part1.v".into()), false));
        assert_eq!(owner("s3"), (None, false));
        assert_eq!(owner("ident_id_seq"), (Some("app.ident.id".into()), true));
        assert_eq!(owner("ident_s_seq"), (Some("app.ident.s".into()), true));

        // The cases above really do deparse differently: sharing a text would have been wrong.
        let text = |table: &str, what: &str| {
            found
                .iter()
                .find(|(t, w, _)| t == table && w == what)
                .map(|(_, _, text)| text.clone())
                .unwrap_or_else(|| panic!("{table} {what} not read"))
        };
        assert_eq!(text("app.a1", "check a1_amount_check"), "(amount > 0)");
        assert_eq!(text("app.a2", "check a2_balance_check"), "(balance > 0)");
        assert_eq!(text("app.a3", "check a3_amount_check"), "(amount > 0)");
        assert_eq!(
            text("app.a3", "checkdef a3_amount_check"),
            "CHECK ((amount > 0)) NOT VALID"
        );
        assert_eq!(
            text("app.a3", "checkdef a3_amount_small"),
            "CHECK ((amount < 100)) NO INHERIT"
        );
        assert_eq!(text("app.g", "default doubled"), "(later * 2)");
        assert_ne!(text("app.p1", "using w"), text("app.p2", "using w"));
        assert_ne!(text("app.p1", "using m"), text("app.p2", "using m"));
        assert_eq!(text("app.p1", "with_check s"), "(org_id > 0)");

        // Keys by attribute number: named as pg_get_indexdef and the constraint definitions do.
        assert_eq!(
            text("app.a1", "keys a1_lower_amount_at_idx"),
            "(lower(note) DESC NULLS LAST, amount NULLS FIRST)"
        );
        assert_eq!(
            text("app.a2", "keys a2_lower_balance_idx"),
            "(lower(note), balance DESC)"
        );
        assert_eq!(text("app.a1", "keys a1_amount_idx"), "(amount)");
        assert_eq!(text("app.a1", "key a1_pkey"), "id");
        assert_eq!(
            text("app.f", "fk f_org_fkey other.orgs"),
            "org -> other.orgs(org_id)"
        );
        assert_eq!(text("app.f", "fk f_a2_fkey app.a2"), "a2 -> app.a2(id)");
    }
}
