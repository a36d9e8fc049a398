//! The expected schema, as declared in YAML (inline under `schema:` or in a `schema.file`).
//!
//! ```yaml
//! extensions: [pgcrypto]
//! schemas:
//!   chat:
//!     tables:
//!       sessions:
//!         columns:
//!           id: uuid NOT NULL DEFAULT gen_random_uuid()
//!           user_id: uuid NOT NULL
//!           title: text
//!         primary_key: [id]
//!         foreign_keys:
//!           - { columns: [user_id], references: auth.users(id), on_delete: cascade }
//!         indexes:
//!           - [user_id]
//!         checks: [sessions_title_not_blank]
//!         row_level_security: true
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::path::Path;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::ident::ColumnsRef;

/// Everything expected of a database: extensions and, per Postgres schema, its tables.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ExpectedSchema {
    /// Extensions that must be installed (`pgcrypto`, or `{ name, version, schema }`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<ExtensionSpec>,
    /// Postgres schemas (namespaces) by name; each gets its own check.
    #[serde(default)]
    pub schemas: BTreeMap<String, NamespaceSpec>,
}

impl ExpectedSchema {
    /// An empty expectation.
    pub fn new() -> Self {
        ExpectedSchema::default()
    }

    /// Read an expected schema from a YAML file. Errors name the file and the key path inside it;
    /// every unknown key is listed, not only the first.
    pub fn from_file(path: &Path) -> Result<Self, SpecFileError> {
        use figment::providers::{Format, Yaml};
        if let Err(e) = std::fs::metadata(path) {
            return Err(SpecFileError {
                path: path.display().to_string(),
                message: format!("cannot read it: {e}"),
            });
        }
        Self::extract(
            figment::Figment::from(Yaml::file_exact(path)),
            path.display().to_string(),
        )
    }

    /// Parse an expected schema from YAML text (for code and tests).
    pub fn from_yaml(text: &str) -> Result<Self, SpecFileError> {
        use figment::providers::{Format, Yaml};
        Self::extract(
            figment::Figment::from(Yaml::string(text)),
            "<inline>".to_string(),
        )
    }

    fn extract(figment: figment::Figment, path: String) -> Result<Self, SpecFileError> {
        let err = match figment.extract::<ExpectedSchema>() {
            Ok(spec) => return Ok(spec),
            Err(e) => e,
        };
        // serde stops at the first mistake: walk the raw document for every unknown key.
        let mut problems = Vec::new();
        if let Ok(raw) = figment.extract::<figment::value::Value>() {
            unknown_keys(&raw, &Shape::Root, String::new(), &mut problems);
        }
        for e in err {
            let mut at = String::new();
            for seg in &e.path {
                if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
                    at.push_str(&format!("[{seg}]"));
                } else {
                    if !at.is_empty() {
                        at.push('.');
                    }
                    at.push_str(seg);
                }
            }
            let walked = !problems.is_empty();
            let text = match &e.kind {
                // Already listed by the walk, with its place.
                figment::error::Kind::UnknownField(..) if walked => continue,
                figment::error::Kind::UnknownField(field, expected) => {
                    unknown_field_text(field, expected)
                }
                kind => kind.to_string(),
            };
            let line = if at.is_empty() {
                text
            } else {
                format!("{at}: {text}")
            };
            if !problems.iter().any(|p: &String| p == &line) {
                problems.push(line);
            }
        }
        Err(SpecFileError {
            path,
            message: problems.join("; "),
        })
    }

    /// Add a Postgres schema.
    pub fn schema(mut self, name: impl Into<String>, spec: NamespaceSpec) -> Self {
        self.schemas.insert(name.into(), spec);
        self
    }

    /// Require an extension.
    pub fn extension(mut self, spec: ExtensionSpec) -> Self {
        self.extensions.push(spec);
        self
    }

    /// Semantic problems (`path: message`), e.g. a foreign key whose column counts differ.
    pub(crate) fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (i, ext) in self.extensions.iter().enumerate() {
            if ext.name.trim().is_empty() {
                out.push((format!("extensions[{i}].name"), "must not be empty".into()));
            }
        }
        for (ns, spec) in &self.schemas {
            for (table, t) in &spec.tables {
                let at = format!("schemas.{ns}.tables.{table}");
                if t.columns.is_empty() {
                    out.push((format!("{at}.columns"), "list at least one column".into()));
                }
                for (name, col) in &t.columns {
                    if col.type_name.trim().is_empty() {
                        out.push((
                            format!("{at}.columns.{name}.type"),
                            "must not be empty".into(),
                        ));
                    } else if let Err(why) = check_type_syntax(&col.type_name) {
                        out.push((format!("{at}.columns.{name}"), why));
                    }
                }
                let check_cols = |cols: &[String]| -> Option<String> {
                    if cols.is_empty() {
                        Some("list at least one column".into())
                    } else {
                        cols.iter()
                            .find(|c| !t.columns.contains_key(*c))
                            .map(|c| format!("column `{c}` is not among the table's columns"))
                    }
                };
                if let Some(pk) = &t.primary_key {
                    if let Some(m) = check_cols(pk) {
                        out.push((format!("{at}.primary_key"), m));
                    }
                }
                for (i, u) in t.unique.iter().enumerate() {
                    if let Some(m) = check_cols(u) {
                        out.push((format!("{at}.unique[{i}]"), m));
                    }
                }
                for (i, fk) in t.foreign_keys.iter().enumerate() {
                    if let Some(m) = check_cols(&fk.columns) {
                        out.push((format!("{at}.foreign_keys[{i}].columns"), m));
                    }
                    if fk.columns.len() != fk.references.columns.len() {
                        out.push((
                            format!("{at}.foreign_keys[{i}]"),
                            format!(
                                "{} columns reference {} columns of {}",
                                fk.columns.len(),
                                fk.references.columns.len(),
                                fk.references.table
                            ),
                        ));
                    }
                }
                for (i, ix) in t.indexes.iter().enumerate() {
                    if ix.columns.is_empty() {
                        out.push((
                            format!("{at}.indexes[{i}].columns"),
                            "list at least one column or expression".into(),
                        ));
                    }
                }
                for (i, c) in t.checks.iter().enumerate() {
                    if c.name.trim().is_empty() {
                        out.push((format!("{at}.checks[{i}].name"), "must not be empty".into()));
                    }
                }
            }
        }
        out
    }
}

/// `unknown field `x`, expected one of `a`, `b``, without serde's nested backticks.
fn unknown_field_text(field: &str, expected: &[&str]) -> String {
    if expected.is_empty() {
        return format!("unknown key `{field}`: no keys are allowed here");
    }
    let list: Vec<String> = expected.iter().map(|k| format!("`{k}`")).collect();
    format!("unknown key `{field}`, expected one of {}", list.join(", "))
}

/// Where in the document a value is, for [`unknown_keys`].
enum Shape {
    Root,
    Extension,
    Namespaces,
    Namespace,
    Tables,
    Table,
    Columns,
    Column,
    ForeignKey,
    Index,
    Check,
    Views,
    View,
    Functions,
    Function,
    Sequences,
    Sequence,
    Triggers,
    Trigger,
    Policies,
    Policy,
    List(&'static Shape),
}

impl Shape {
    fn keys(&self) -> &'static [&'static str] {
        match self {
            Shape::Root => &["extensions", "schemas"],
            Shape::Extension => &["name", "version", "schema"],
            Shape::Namespace => &[
                "tables",
                "views",
                "functions",
                "enums",
                "sequences",
                "grants",
            ],
            Shape::View => &["columns", "definition", "materialized"],
            Shape::Function => &[
                "arguments",
                "returns",
                "language",
                "volatility",
                "security_definer",
            ],
            Shape::Sequence => &["type", "increment", "owned_by"],
            Shape::Trigger => &["timing", "events", "level", "function"],
            Shape::Policy => &["command", "roles", "using", "with_check", "permissive"],
            Shape::Table => &[
                "columns",
                "primary_key",
                "unique",
                "foreign_keys",
                "indexes",
                "checks",
                "row_level_security",
                "force_row_level_security",
                "triggers",
                "policies",
                "grants",
            ],
            Shape::Column => &["type", "not_null", "default", "identity"],
            Shape::ForeignKey => &["columns", "references", "on_delete", "on_update"],
            Shape::Index => &["columns", "unique", "method", "name", "predicate"],
            Shape::Check => &["name", "expression"],
            _ => &[],
        }
    }

    fn child(&self, key: &str) -> Option<&'static Shape> {
        static EXT: Shape = Shape::Extension;
        static NSS: Shape = Shape::Namespaces;
        static TABLES: Shape = Shape::Tables;
        static COLUMNS: Shape = Shape::Columns;
        static FK: Shape = Shape::ForeignKey;
        static IX: Shape = Shape::Index;
        static CK: Shape = Shape::Check;
        static EXTS: Shape = Shape::List(&EXT);
        static FKS: Shape = Shape::List(&FK);
        static IXS: Shape = Shape::List(&IX);
        static CKS: Shape = Shape::List(&CK);
        static VIEWS: Shape = Shape::Views;
        static FUNCTIONS: Shape = Shape::Functions;
        static SEQUENCES: Shape = Shape::Sequences;
        static TRIGGERS: Shape = Shape::Triggers;
        static POLICIES: Shape = Shape::Policies;
        match (self, key) {
            (Shape::Root, "extensions") => Some(&EXTS),
            (Shape::Root, "schemas") => Some(&NSS),
            (Shape::Namespace, "tables") => Some(&TABLES),
            (Shape::Namespace, "views") => Some(&VIEWS),
            (Shape::Namespace, "functions") => Some(&FUNCTIONS),
            (Shape::Namespace, "sequences") => Some(&SEQUENCES),
            (Shape::Table, "triggers") => Some(&TRIGGERS),
            (Shape::Table, "policies") => Some(&POLICIES),
            (Shape::Table, "columns") => Some(&COLUMNS),
            (Shape::Table, "foreign_keys") => Some(&FKS),
            (Shape::Table, "indexes") => Some(&IXS),
            (Shape::Table, "checks") => Some(&CKS),
            _ => None,
        }
    }

    /// The shape of every entry of a map keyed by names.
    fn entries(&self) -> Option<&'static Shape> {
        static NS: Shape = Shape::Namespace;
        static TABLE: Shape = Shape::Table;
        static COLUMN: Shape = Shape::Column;
        static VIEW: Shape = Shape::View;
        static FUNCTION: Shape = Shape::Function;
        static SEQUENCE: Shape = Shape::Sequence;
        static TRIGGER: Shape = Shape::Trigger;
        static POLICY: Shape = Shape::Policy;
        match self {
            Shape::Views => Some(&VIEW),
            Shape::Functions => Some(&FUNCTION),
            Shape::Sequences => Some(&SEQUENCE),
            Shape::Triggers => Some(&TRIGGER),
            Shape::Policies => Some(&POLICY),
            Shape::Namespaces => Some(&NS),
            Shape::Tables => Some(&TABLE),
            Shape::Columns => Some(&COLUMN),
            _ => None,
        }
    }
}

/// Every key of `value` that its place does not allow, as `path: unknown key ...`.
fn unknown_keys(value: &figment::value::Value, shape: &Shape, at: String, out: &mut Vec<String>) {
    use figment::value::Value;
    let join = |at: &str, key: &str| {
        if at.is_empty() {
            key.to_string()
        } else {
            format!("{at}.{key}")
        }
    };
    match (value, shape) {
        (Value::Array(_, items), Shape::List(inner)) => {
            for (i, item) in items.iter().enumerate() {
                unknown_keys(item, inner, format!("{at}[{i}]"), out);
            }
        }
        (Value::Dict(_, dict), _) => {
            if let Some(inner) = shape.entries() {
                for (name, v) in dict {
                    unknown_keys(v, inner, join(&at, name), out);
                }
                return;
            }
            let allowed = shape.keys();
            for (key, v) in dict {
                if !allowed.contains(&key.as_str()) {
                    let text = unknown_field_text(key, allowed);
                    out.push(if at.is_empty() {
                        text
                    } else {
                        format!("{at}: {text}")
                    });
                } else if let Some(child) = shape.child(key) {
                    unknown_keys(v, child, join(&at, key), out);
                }
            }
        }
        _ => {}
    }
}

/// Whether a declared column type reads as one type name: `text`, `varchar(20)`, `numeric(12, 2)`,
/// `chat.message_role`, `"Odd"`, `timestamp(3) with time zone`, `int[]`, `interval day to second`.
/// Anything else (`strng NOT NUL`) is a mistake in the declaration. Whether the type exists is
/// asked of the server when the check runs.
pub(crate) fn check_type_syntax(raw: &str) -> Result<(), String> {
    let lower = raw.trim().to_ascii_lowercase();
    // Drop array suffixes and argument lists.
    let mut words = String::new();
    let mut depth = 0i32;
    let mut quoted = false;
    for c in lower.chars() {
        if quoted {
            quoted = c != '"';
            continue;
        }
        match c {
            '"' if depth == 0 => {
                quoted = true;
                words.push_str("\"q\"");
            }
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            _ if depth == 0 => words.push(c),
            _ => {}
        }
        if depth < 0 {
            return Err(format!("`{raw}` is not a type: unbalanced brackets"));
        }
    }
    if depth != 0 || quoted {
        return Err(format!(
            "`{raw}` is not a type: unbalanced brackets or quotes"
        ));
    }
    let mut parts: Vec<&str> = words.split_whitespace().collect();
    if parts.last() == Some(&"array") && parts.len() > 1 {
        parts.pop();
    }
    let ident = |w: &str| {
        !w.is_empty()
            && w.split('.').all(|p| {
                (p.starts_with('"') && p.ends_with('"') && p.len() > 2)
                    || (p
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_alphabetic() || c == '_')
                        && p.chars()
                            .all(|c| c.is_alphanumeric() || c == '_' || c == '$'))
            })
    };
    const MULTI: &[&[&str]] = &[
        &["double", "precision"],
        &["character", "varying"],
        &["char", "varying"],
        &["bit", "varying"],
        &["national", "character"],
        &["national", "character", "varying"],
        &["timestamp", "with", "time", "zone"],
        &["timestamp", "without", "time", "zone"],
        &["time", "with", "time", "zone"],
        &["time", "without", "time", "zone"],
    ];
    const INTERVAL_FIELDS: &[&str] = &["year", "month", "day", "hour", "minute", "second", "to"];
    let ok = match parts.as_slice() {
        [one] => ident(one),
        ["interval", fields @ ..] => fields.iter().all(|f| INTERVAL_FIELDS.contains(f)),
        many => MULTI.contains(&many),
    };
    if ok {
        Ok(())
    } else {
        let trimmed = raw.trim();
        let first = trimmed.split_whitespace().next().unwrap_or(trimmed);
        let rest = trimmed[first.len()..].trim();
        Err(format!(
            "`{trimmed}` is not a column declaration: unknown words `{rest}` after the type \
             `{first}` (write `TYPE [NOT NULL | NULL] [DEFAULT expr]`)"
        ))
    }
}

/// An expected schema file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected schema {path}: {message}")]
pub struct SpecFileError {
    /// The file.
    pub path: String,
    /// What is wrong, with key paths inside the file.
    pub message: String,
}

/// An extension that must be installed.
///
/// Written as its name (`pgcrypto`) or as `{ name: vector, version: "0.7.0", schema: public }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ExtensionSpec {
    /// `pg_extension.extname`.
    pub name: String,
    /// Required version (`pg_extension.extversion`); any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Schema it must be installed in; any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
}

impl ExtensionSpec {
    /// Any version of `name`, in any schema.
    pub fn new(name: impl Into<String>) -> Self {
        ExtensionSpec {
            name: name.into(),
            version: None,
            schema: None,
        }
    }
}

/// One Postgres schema (namespace).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct NamespaceSpec {
    /// Tables by name.
    #[serde(default)]
    pub tables: BTreeMap<String, TableSpec>,
    /// Views (and materialized views) by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub views: BTreeMap<String, ViewSpec>,
    /// Functions and procedures by name (one declaration per name; with overloads, the one
    /// whose `arguments` match).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub functions: BTreeMap<String, FunctionSpec>,
    /// Enum types by name: their labels, in order.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub enums: BTreeMap<String, Vec<String>>,
    /// Sequences by name (those behind serial and identity columns need not be declared).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sequences: BTreeMap<String, SequenceSpec>,
    /// Privileges on the schema per role (`usage`, `create`); `public` is every role. The owner's
    /// own privileges are not compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<BTreeMap<String, Vec<String>>>,
}

/// A view: its columns and its definition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ViewSpec {
    /// Columns by name with their types (`id: uuid`); compared when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<BTreeMap<String, String>>,
    /// The SELECT, compared as the server prints it back (`pg_get_viewdef`) after creating it as
    /// a temporary view in a rolled-back transaction; in read-only mode as text, whitespace aside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
    /// A materialized view (`true`) or a plain one (`false`); compared when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub materialized: Option<bool>,
}

/// A function or procedure.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FunctionSpec {
    /// Argument types in order (`[integer, text]`); compared when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Vec<String>>,
    /// Return type (`trigger`, `integer`, `SETOF text`); compared when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub returns: Option<String>,
    /// `sql`, `plpgsql`, ...; compared when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// `immutable`, `stable` or `volatile`; compared when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volatility: Option<Volatility>,
    /// `SECURITY DEFINER`; compared when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_definer: Option<bool>,
}

/// A function's volatility.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Volatility {
    /// `IMMUTABLE`.
    Immutable,
    /// `STABLE`.
    Stable,
    /// `VOLATILE`.
    Volatile,
}

impl fmt::Display for Volatility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Volatility::Immutable => "IMMUTABLE",
            Volatility::Stable => "STABLE",
            Volatility::Volatile => "VOLATILE",
        })
    }
}

/// A sequence.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SequenceSpec {
    /// `smallint`, `integer` or `bigint`; compared when given.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_name: Option<String>,
    /// Increment; compared when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub increment: Option<i64>,
    /// The column that owns it, `schema.table.column`; compared when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owned_by: Option<String>,
}

/// A trigger on a table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TriggerSpec {
    /// `before`, `after` or `instead_of`; compared when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<String>,
    /// Any of `insert`, `update`, `delete`, `truncate` (order aside); compared when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    /// `row` or `statement`; compared when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// The function it calls (`touch_updated_at` or `app.touch_updated_at`); compared when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
}

/// A row-level security policy on a table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PolicySpec {
    /// `all`, `select`, `insert`, `update` or `delete`; compared when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Roles it applies to (`public` for every role), order aside; compared when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    /// The USING expression, compared as the server canonicalises it; when given.
    #[serde(default, rename = "using", skip_serializing_if = "Option::is_none")]
    pub using_expr: Option<String>,
    /// The WITH CHECK expression, compared as the server canonicalises it; when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with_check: Option<String>,
    /// Permissive (`true`, the default of CREATE POLICY) or restrictive; compared when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissive: Option<bool>,
}

impl NamespaceSpec {
    /// A schema without tables.
    pub fn new() -> Self {
        NamespaceSpec::default()
    }

    /// Add a table.
    pub fn table(mut self, name: impl Into<String>, spec: TableSpec) -> Self {
        self.tables.insert(name.into(), spec);
        self
    }
}

/// One table: columns and constraints. Lists not given are not compared (except in exact mode,
/// where anything present but not declared is a difference).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TableSpec {
    /// Columns by name: `TYPE [NOT NULL] [DEFAULT expr]` or `{ type, not_null, default, identity }`.
    pub columns: BTreeMap<String, ColumnSpec>,
    /// Primary key columns, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_key: Option<Vec<String>>,
    /// Unique keys: each a list of columns, met by a unique constraint or a unique index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unique: Vec<Vec<String>>,
    /// Foreign keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub foreign_keys: Vec<ForeignKeySpec>,
    /// Indexes: a list of columns/expressions, or `{ columns, unique, method, name, predicate }`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indexes: Vec<IndexSpec>,
    /// Check constraints: a name, or `{ name, expression }`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckSpec>,
    /// Whether row-level security is enabled; not compared when absent (exact mode: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_level_security: Option<bool>,
    /// Whether row-level security is forced on the owner too; not compared when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_row_level_security: Option<bool>,
    /// Triggers by name (internal ones, e.g. of foreign keys, are not compared).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub triggers: BTreeMap<String, TriggerSpec>,
    /// Row-level security policies by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub policies: BTreeMap<String, PolicySpec>,
    /// Privileges on the table per role (`select`, `insert`, `update`, `delete`, `truncate`,
    /// `references`, `trigger`); `public` is every role. The owner's own are not compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<BTreeMap<String, Vec<String>>>,
}

impl TableSpec {
    /// A table without columns yet.
    pub fn new() -> Self {
        TableSpec::default()
    }

    /// Add a column from its short form, e.g. `uuid NOT NULL DEFAULT gen_random_uuid()`.
    pub fn column(mut self, name: impl Into<String>, definition: &str) -> Self {
        self.columns
            .insert(name.into(), ColumnSpec::parse(definition));
        self
    }

    /// Set the primary key.
    pub fn primary_key(mut self, columns: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.primary_key = Some(columns.into_iter().map(Into::into).collect());
        self
    }

    /// Add an index on `columns`.
    pub fn index(mut self, columns: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.indexes.push(IndexSpec::new(columns));
        self
    }

    /// Add a foreign key.
    pub fn foreign_key(mut self, fk: ForeignKeySpec) -> Self {
        self.foreign_keys.push(fk);
        self
    }

    /// Add a unique key on `columns`, met by a unique constraint or a unique index.
    pub fn unique(mut self, columns: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.unique
            .push(columns.into_iter().map(Into::into).collect());
        self
    }

    /// Add a check constraint: a name (`"positive_amount"`, any expression) or a
    /// [`CheckSpec`] with its expression (`CheckSpec::new("positive_amount").expression("amount > 0")`).
    pub fn check(mut self, check: impl Into<CheckSpec>) -> Self {
        self.checks.push(check.into());
        self
    }

    /// Require row-level security on or off.
    pub fn row_level_security(mut self, enabled: bool) -> Self {
        self.row_level_security = Some(enabled);
        self
    }
}

/// One column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ColumnSpec {
    /// The type as Postgres spells it or a common alias: `uuid`, `text`, `varchar(255)`,
    /// `timestamptz`, `int`, `numeric(12,2)`, `text[]`, `serial`.
    #[serde(rename = "type")]
    pub type_name: String,
    /// `NOT NULL`; nullability is always compared.
    #[serde(default)]
    pub not_null: bool,
    /// Default expression, compared when given (casts, case and spacing ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Identity column (`always` or `by_default`); compared when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
}

impl ColumnSpec {
    /// A column of `type_name`, nullable, without default.
    pub fn new(type_name: impl Into<String>) -> Self {
        ColumnSpec {
            type_name: type_name.into(),
            not_null: false,
            default: None,
            identity: None,
        }
    }

    /// Parse the short form `TYPE [NOT NULL | NULL] [DEFAULT expr]` (keywords in any case).
    pub fn parse(definition: &str) -> Self {
        let text = definition.trim();
        let upper = text.to_ascii_uppercase();
        let default_at = find_keyword(&upper, "DEFAULT");
        let (head, default) = match default_at {
            Some(i) => (
                &text[..i],
                Some(text[i + "DEFAULT".len()..].trim().to_string()),
            ),
            None => (text, None),
        };
        let head_upper = head.to_ascii_uppercase();
        let (type_name, not_null) = if let Some(i) = find_keyword(&head_upper, "NOT NULL") {
            (head[..i].trim(), true)
        } else if let Some(i) = find_keyword(&head_upper, "NULL") {
            (head[..i].trim(), false)
        } else {
            (head.trim(), false)
        };
        ColumnSpec {
            type_name: type_name.to_string(),
            not_null,
            default: default.filter(|d| !d.is_empty()),
            identity: None,
        }
    }
}

/// Byte offset of `word` as a whole word in `upper` (already uppercase), outside parentheses.
fn find_keyword(upper: &str, word: &str) -> Option<usize> {
    let bytes = upper.as_bytes();
    let mut depth = 0i32;
    for (i, b) in bytes.iter().enumerate() {
        match b {
            b'(' => depth += 1,
            b')' => depth -= 1,
            _ => {}
        }
        if depth == 0
            && bytes[i..].starts_with(word.as_bytes())
            && (i == 0 || bytes[i - 1].is_ascii_whitespace())
            && bytes
                .get(i + word.len())
                .is_none_or(|b| b.is_ascii_whitespace())
        {
            return Some(i);
        }
    }
    None
}

/// `GENERATED ALWAYS AS IDENTITY` or `GENERATED BY DEFAULT AS IDENTITY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Identity {
    /// `GENERATED ALWAYS AS IDENTITY`.
    Always,
    /// `GENERATED BY DEFAULT AS IDENTITY`.
    ByDefault,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Identity::Always => "GENERATED ALWAYS AS IDENTITY",
            Identity::ByDefault => "GENERATED BY DEFAULT AS IDENTITY",
        })
    }
}

/// A foreign key from this table's `columns` to `references`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ForeignKeySpec {
    /// Referencing columns of this table, in order.
    pub columns: Vec<String>,
    /// Referenced table and columns: `auth.users(id)`.
    pub references: ColumnsRef,
    /// Required `ON DELETE` action; any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_delete: Option<ReferentialAction>,
    /// Required `ON UPDATE` action; any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_update: Option<ReferentialAction>,
}

impl ForeignKeySpec {
    /// `columns` referencing `references`.
    pub fn new(
        columns: impl IntoIterator<Item = impl Into<String>>,
        references: ColumnsRef,
    ) -> Self {
        ForeignKeySpec {
            columns: columns.into_iter().map(Into::into).collect(),
            references,
            on_delete: None,
            on_update: None,
        }
    }

    /// Require an `ON DELETE` action.
    pub fn on_delete(mut self, action: ReferentialAction) -> Self {
        self.on_delete = Some(action);
        self
    }
}

/// What a foreign key does when the referenced row goes away or changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReferentialAction {
    /// `NO ACTION` (the default).
    NoAction,
    /// `RESTRICT`.
    Restrict,
    /// `CASCADE`.
    Cascade,
    /// `SET NULL`.
    SetNull,
    /// `SET DEFAULT`.
    SetDefault,
}

impl ReferentialAction {
    /// From `pg_constraint.confdeltype` / `confupdtype`.
    pub(crate) fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "a" => ReferentialAction::NoAction,
            "r" => ReferentialAction::Restrict,
            "c" => ReferentialAction::Cascade,
            "n" => ReferentialAction::SetNull,
            "d" => ReferentialAction::SetDefault,
            _ => return None,
        })
    }
}

impl fmt::Display for ReferentialAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReferentialAction::NoAction => "NO ACTION",
            ReferentialAction::Restrict => "RESTRICT",
            ReferentialAction::Cascade => "CASCADE",
            ReferentialAction::SetNull => "SET NULL",
            ReferentialAction::SetDefault => "SET DEFAULT",
        })
    }
}

/// An index: written as a list of columns (`[session_id, created_at]`) or as a map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct IndexSpec {
    /// Key columns or expressions (`lower(email)`), in order.
    pub columns: Vec<String>,
    /// Whether it must (true) or must not (false) be unique; any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique: Option<bool>,
    /// Access method: `btree`, `hash`, `gin`, `gist`, `brin`, `hnsw`, ...; any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Required index name; any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Partial index predicate (`WHERE ...`); compared when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicate: Option<String>,
}

impl IndexSpec {
    /// An index on `columns`, any uniqueness and method.
    pub fn new(columns: impl IntoIterator<Item = impl Into<String>>) -> Self {
        IndexSpec {
            columns: columns.into_iter().map(Into::into).collect(),
            unique: None,
            method: None,
            name: None,
            predicate: None,
        }
    }
}

/// A check constraint, by name; its expression is compared when given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CheckSpec {
    /// `pg_constraint.conname`.
    pub name: String,
    /// The condition, e.g. `balance >= 0` (casts, case, spacing and parentheses ignored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
}

impl CheckSpec {
    /// A check constraint named `name`, any expression.
    pub fn new(name: impl Into<String>) -> Self {
        CheckSpec {
            name: name.into(),
            expression: None,
        }
    }

    /// Its condition, e.g. `amount > 0` (casts, case, spacing and parentheses ignored).
    pub fn expression(mut self, expression: impl Into<String>) -> Self {
        self.expression = Some(expression.into());
        self
    }
}

impl From<&str> for CheckSpec {
    fn from(name: &str) -> Self {
        CheckSpec::new(name)
    }
}

impl From<String> for CheckSpec {
    fn from(name: String) -> Self {
        CheckSpec::new(name)
    }
}

// Short forms: a string (or a list, for indexes) stands for the whole map. The map forms are
// private derived twins, so errors inside a map keep serde's precise messages and key paths.

/// Accepts a short form `S` (string or sequence) or a map `M`, both convertible to `T`.
struct ShortOr<T, S, M>(PhantomData<(T, S, M)>);

impl<'de, T, S, M> Visitor<'de> for ShortOr<T, S, M>
where
    S: Deserialize<'de> + Into<T>,
    M: Deserialize<'de> + Into<T>,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a short form or a map")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        S::deserialize(de::value::StrDeserializer::<E>::new(v)).map(Into::into)
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<T, E> {
        self.visit_str(&v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
        S::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(Into::into)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        M::deserialize(de::value::MapAccessDeserializer::new(map)).map(Into::into)
    }
}

macro_rules! short_form {
    ($ty:ty, $short:ty, $map:ty) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(ShortOr::<$ty, $short, $map>(PhantomData))
            }
        }
    };
}

short_form!(ExtensionSpec, ExtensionName, ExtensionMap);
short_form!(ColumnSpec, ColumnShort, ColumnMap);
short_form!(IndexSpec, Vec<String>, IndexMap);
short_form!(CheckSpec, CheckName, CheckMap);

#[derive(Deserialize)]
#[serde(transparent)]
struct ExtensionName(String);

impl From<ExtensionName> for ExtensionSpec {
    fn from(v: ExtensionName) -> Self {
        ExtensionSpec::new(v.0)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtensionMap {
    name: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    schema: Option<String>,
}

impl From<ExtensionMap> for ExtensionSpec {
    fn from(v: ExtensionMap) -> Self {
        ExtensionSpec {
            name: v.name,
            version: v.version,
            schema: v.schema,
        }
    }
}

#[derive(Deserialize)]
#[serde(transparent)]
struct ColumnShort(String);

impl From<ColumnShort> for ColumnSpec {
    fn from(v: ColumnShort) -> Self {
        ColumnSpec::parse(&v.0)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnMap {
    #[serde(rename = "type")]
    type_name: String,
    #[serde(default)]
    not_null: bool,
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    identity: Option<Identity>,
}

impl From<ColumnMap> for ColumnSpec {
    fn from(v: ColumnMap) -> Self {
        ColumnSpec {
            type_name: v.type_name,
            not_null: v.not_null,
            default: v.default,
            identity: v.identity,
        }
    }
}

impl From<Vec<String>> for IndexSpec {
    fn from(columns: Vec<String>) -> Self {
        IndexSpec::new(columns)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexMap {
    columns: Vec<String>,
    #[serde(default)]
    unique: Option<bool>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    predicate: Option<String>,
}

impl From<IndexMap> for IndexSpec {
    fn from(v: IndexMap) -> Self {
        IndexSpec {
            columns: v.columns,
            unique: v.unique,
            method: v.method,
            name: v.name,
            predicate: v.predicate,
        }
    }
}

#[derive(Deserialize)]
#[serde(transparent)]
struct CheckName(String);

impl From<CheckName> for CheckSpec {
    fn from(v: CheckName) -> Self {
        CheckSpec::new(v.0)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckMap {
    name: String,
    #[serde(default)]
    expression: Option<String>,
}

impl From<CheckMap> for CheckSpec {
    fn from(v: CheckMap) -> Self {
        CheckSpec {
            name: v.name,
            expression: v.expression,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_forms_read_the_same() {
        let spec = ExpectedSchema::from_yaml(
            r#"
extensions: [pgcrypto, { name: vector, version: "0.7.0" }]
schemas:
  chat:
    tables:
      sessions:
        columns:
          id: uuid NOT NULL DEFAULT gen_random_uuid()
          title: varchar(200) null
          created_at: { type: timestamptz, not_null: true, default: now() }
          n: { type: bigint, identity: always, not_null: true }
        primary_key: [id]
        indexes:
          - [title]
          - { columns: [created_at], unique: false, method: brin }
        checks: [title_len, { name: n_pos, expression: n > 0 }]
        foreign_keys:
          - { columns: [id], references: auth.users(id), on_delete: set_null }
"#,
        )
        .unwrap();
        assert_eq!(spec.extensions[0], ExtensionSpec::new("pgcrypto"));
        assert_eq!(spec.extensions[1].version.as_deref(), Some("0.7.0"));
        let t = &spec.schemas["chat"].tables["sessions"];
        let id = &t.columns["id"];
        assert_eq!(
            (id.type_name.as_str(), id.not_null, id.default.as_deref()),
            ("uuid", true, Some("gen_random_uuid()"))
        );
        let title = &t.columns["title"];
        assert_eq!(
            (title.type_name.as_str(), title.not_null),
            ("varchar(200)", false)
        );
        assert!(t.columns["created_at"].not_null);
        assert_eq!(t.columns["n"].identity, Some(Identity::Always));
        assert_eq!(t.indexes[0], IndexSpec::new(["title"]));
        assert_eq!(t.indexes[1].method.as_deref(), Some("brin"));
        assert_eq!(t.checks[1].expression.as_deref(), Some("n > 0"));
        assert_eq!(
            t.foreign_keys[0].on_delete,
            Some(ReferentialAction::SetNull)
        );
        assert!(spec.problems().is_empty(), "{:?}", spec.problems());
    }

    #[test]
    fn mistakes_are_reported_with_their_place() {
        let err = ExpectedSchema::from_yaml(
            "schemas: { chat: { tables: { t: { columns: { a: { type: int, nulable: true } } } } } }",
        )
        .unwrap_err();
        assert!(err.message.contains("nulable"), "{err}");
        let spec = ExpectedSchema::from_yaml(
            r#"
schemas:
  chat:
    tables:
      t:
        columns: { a: int }
        primary_key: [b]
        foreign_keys: [{ columns: [a], references: "x.y(a, b)" }]
"#,
        )
        .unwrap();
        let problems = spec.problems();
        assert_eq!(
            problems,
            [
                (
                    "schemas.chat.tables.t.primary_key".to_string(),
                    "column `b` is not among the table's columns".to_string()
                ),
                (
                    "schemas.chat.tables.t.foreign_keys[0]".to_string(),
                    "1 columns reference 2 columns of x.y".to_string()
                ),
            ]
        );
    }

    #[test]
    fn every_unknown_key_is_listed_without_nested_backticks() {
        let err = ExpectedSchema::from_yaml(
            r#"
extensoins: [pgcrypto]
schemas:
  chat:
    tables:
      t:
        columns: { a: { type: int, nulable: true }, b: text }
        primary_kye: [a]
        indexes: [{ columns: [a], uniq: true }]
        checks: [{ name: c, expresion: a > 0 }]
"#,
        )
        .unwrap_err();
        assert_eq!(
            err.message.split("; ").collect::<Vec<_>>(),
            [
                "unknown key `extensoins`, expected one of `extensions`, `schemas`",
                "schemas.chat.tables.t.checks[0]: unknown key `expresion`, expected one of `name`, `expression`",
                "schemas.chat.tables.t.columns.a: unknown key `nulable`, expected one of `type`, `not_null`, `default`, `identity`",
                "schemas.chat.tables.t.indexes[0]: unknown key `uniq`, expected one of `columns`, `unique`, `method`, `name`, `predicate`",
                "schemas.chat.tables.t: unknown key `primary_kye`, expected one of `columns`, `primary_key`, `unique`, `foreign_keys`, `indexes`, `checks`, `row_level_security`, `force_row_level_security`, `triggers`, `policies`, `grants`",
            ],
            "{err}"
        );
    }

    #[test]
    fn column_types_must_read_as_one_type() {
        for ok in [
            "int",
            "integr",
            "varchar(20)",
            "numeric(12, 2)",
            "timestamp(3) with time zone",
            "double precision",
            "chat.message_role",
            "\"Odd Type\"",
            "text[]",
            "int[3][3]",
            "integer array",
            "interval day to second",
            "public.vector(1536)",
        ] {
            assert_eq!(check_type_syntax(ok), Ok(()), "{ok}");
        }
        let c = ColumnSpec::parse("strng NOT NUL");
        assert_eq!(
            check_type_syntax(&c.type_name).unwrap_err(),
            "`strng NOT NUL` is not a column declaration: unknown words `NOT NUL` after the type \
             `strng` (write `TYPE [NOT NULL | NULL] [DEFAULT expr]`)"
        );
        for bad in [
            "text NOTNULL",
            "int primary key",
            "varchar(20",
            "a b",
            "é(",
            ")",
        ] {
            assert!(check_type_syntax(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn column_short_form_keeps_parentheses_and_keywords_apart() {
        let c = ColumnSpec::parse("numeric(12, 2) not null default 0");
        assert_eq!(
            (c.type_name.as_str(), c.not_null, c.default.as_deref()),
            ("numeric(12, 2)", true, Some("0"))
        );
        let c = ColumnSpec::parse("text DEFAULT 'NOT NULL'");
        assert_eq!(
            (c.type_name.as_str(), c.not_null, c.default.as_deref()),
            ("text", false, Some("'NOT NULL'"))
        );
        let c = ColumnSpec::parse("tëxt NOT NULL DEFAULT 'é'");
        assert_eq!(
            (c.type_name.as_str(), c.not_null, c.default.as_deref()),
            ("tëxt", true, Some("'é'"))
        );
        let c = ColumnSpec::parse("timestamp with time zone");
        assert_eq!(
            (c.type_name.as_str(), c.not_null),
            ("timestamp with time zone", false)
        );
    }
}
