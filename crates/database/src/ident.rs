//! Names of tables and columns as written in configuration (`chat.messages(session_id)`), and
//! quoting them safely into SQL.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The schema a table name without a dot lives in.
pub const DEFAULT_SCHEMA: &str = "public";

/// Quotes an identifier for SQL: `chat` -> `"chat"`, `a"b` -> `"a""b"`.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A name as printed in messages: bare when it is a plain lowercase identifier, else quoted.
pub(crate) fn display_ident(name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'$');
    if plain {
        name.to_string()
    } else {
        quote_ident(name)
    }
}

/// Why a table or column reference does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not {expected}: {why}")]
pub struct ParseRefError {
    input: String,
    expected: &'static str,
    why: &'static str,
}

fn err(input: &str, expected: &'static str, why: &'static str) -> ParseRefError {
    ParseRefError {
        input: input.to_string(),
        expected,
        why,
    }
}

/// Splits `a.b."c.d"` on dots outside double quotes, unquoting each part (`""` inside quotes is
/// one `"`). Bare parts are kept as written.
fn split_dotted(input: &str) -> Result<Vec<String>, &'static str> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = input.trim().chars().peekable();
    let mut quoted_part = false;
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                if !cur.is_empty() || quoted_part {
                    return Err("a quote may only start a name");
                }
                quoted_part = true;
                loop {
                    match chars.next() {
                        None => return Err("unterminated quoted name"),
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            cur.push('"');
                        }
                        Some('"') => break,
                        Some(c) => cur.push(c),
                    }
                }
                if !matches!(chars.peek(), None | Some('.')) {
                    return Err("a quoted name must end at a dot");
                }
            }
            '.' => {
                if cur.is_empty() {
                    return Err("empty name");
                }
                parts.push(std::mem::take(&mut cur));
                quoted_part = false;
            }
            c if c.is_whitespace() || c == '(' || c == ')' || c == ',' => {
                return Err("unexpected character (quote names with spaces or punctuation)");
            }
            c => cur.push(c),
        }
    }
    if cur.is_empty() {
        return Err("empty name");
    }
    parts.push(cur);
    Ok(parts)
}

/// A table: `schema.table`, or `table` in [`DEFAULT_SCHEMA`].
///
/// ```
/// use citadel_itest_database::TableRef;
/// let t: TableRef = "chat.sessions".parse().unwrap();
/// assert_eq!((t.schema.as_str(), t.table.as_str()), ("chat", "sessions"));
/// assert_eq!("users".parse::<TableRef>().unwrap().to_string(), "public.users");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TableRef {
    /// The Postgres schema (namespace).
    pub schema: String,
    /// The table's name.
    pub table: String,
}

impl TableRef {
    /// A table in `schema`.
    pub fn new(schema: impl Into<String>, table: impl Into<String>) -> Self {
        TableRef {
            schema: schema.into(),
            table: table.into(),
        }
    }

    /// `"schema"."table"` for SQL.
    pub(crate) fn sql(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.table))
    }
}

impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}",
            display_ident(&self.schema),
            display_ident(&self.table)
        )
    }
}

impl FromStr for TableRef {
    type Err = ParseRefError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const WHAT: &str = "a table (`schema.table`)";
        let parts = split_dotted(s).map_err(|why| err(s, WHAT, why))?;
        match <[String; 2]>::try_from(parts) {
            Ok([schema, table]) => Ok(TableRef { schema, table }),
            Err(parts) if parts.len() == 1 => Ok(TableRef::new(DEFAULT_SCHEMA, parts[0].clone())),
            Err(_) => Err(err(s, WHAT, "too many dots")),
        }
    }
}

impl TryFrom<String> for TableRef {
    type Error = ParseRefError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<TableRef> for String {
    fn from(t: TableRef) -> String {
        t.to_string()
    }
}

/// One column of a table: `schema.table.column` (or `table.column` in [`DEFAULT_SCHEMA`]).
///
/// ```
/// use citadel_itest_database::ColumnRef;
/// let c: ColumnRef = "chat.messages.content".parse().unwrap();
/// assert_eq!(c.column, "content");
/// assert_eq!(c.table.to_string(), "chat.messages");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ColumnRef {
    /// The table.
    pub table: TableRef,
    /// The column's name.
    pub column: String,
}

impl fmt::Display for ColumnRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.table, display_ident(&self.column))
    }
}

impl FromStr for ColumnRef {
    type Err = ParseRefError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const WHAT: &str = "a column (`schema.table.column`)";
        let mut parts = split_dotted(s).map_err(|why| err(s, WHAT, why))?;
        let column = match parts.len() {
            2 | 3 => parts.pop().unwrap_or_default(),
            1 => return Err(err(s, WHAT, "name the table too")),
            _ => return Err(err(s, WHAT, "too many dots")),
        };
        let table = if parts.len() == 2 {
            TableRef::new(parts[0].clone(), parts[1].clone())
        } else {
            TableRef::new(DEFAULT_SCHEMA, parts[0].clone())
        };
        Ok(ColumnRef { table, column })
    }
}

impl TryFrom<String> for ColumnRef {
    type Error = ParseRefError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ColumnRef> for String {
    fn from(c: ColumnRef) -> String {
        c.to_string()
    }
}

/// Columns of one table: `schema.table(a, b)`.
///
/// ```
/// use citadel_itest_database::ColumnsRef;
/// let k: ColumnsRef = "billing.invoices(account_id, number)".parse().unwrap();
/// assert_eq!(k.columns, ["account_id", "number"]);
/// assert_eq!(k.to_string(), "billing.invoices(account_id, number)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ColumnsRef {
    /// The table.
    pub table: TableRef,
    /// The columns, in order (at least one).
    pub columns: Vec<String>,
}

impl ColumnsRef {
    /// Columns of `table`.
    pub fn new(table: TableRef, columns: impl IntoIterator<Item = impl Into<String>>) -> Self {
        ColumnsRef {
            table,
            columns: columns.into_iter().map(Into::into).collect(),
        }
    }
}

/// `(a, b)` with names displayed like identifiers.
pub(crate) fn column_list(columns: &[String]) -> String {
    let names: Vec<String> = columns.iter().map(|c| display_ident(c)).collect();
    format!("({})", names.join(", "))
}

impl fmt::Display for ColumnsRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.table, column_list(&self.columns))
    }
}

impl FromStr for ColumnsRef {
    type Err = ParseRefError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const WHAT: &str = "columns of a table (`schema.table(a, b)`)";
        let trimmed = s.trim();
        let Some(open) = trimmed.find('(') else {
            return Err(err(s, WHAT, "missing `(columns)`"));
        };
        let Some(inner) = trimmed[open + 1..].strip_suffix(')') else {
            return Err(err(s, WHAT, "missing closing `)`"));
        };
        let table: TableRef = trimmed[..open]
            .parse()
            .map_err(|e: ParseRefError| err(s, WHAT, e.why))?;
        let mut columns = Vec::new();
        for part in inner.split(',') {
            let parts = split_dotted(part).map_err(|why| err(s, WHAT, why))?;
            match <[String; 1]>::try_from(parts) {
                Ok([c]) => columns.push(c),
                Err(_) => return Err(err(s, WHAT, "a column name has a dot")),
            }
        }
        Ok(ColumnsRef { table, columns })
    }
}

impl TryFrom<String> for ColumnsRef {
    type Error = ParseRefError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ColumnsRef> for String {
    fn from(c: ColumnsRef) -> String {
        c.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_with_quotes_and_defaults() {
        let t: TableRef = "\"My Schema\".\"a\"\"b\"".parse().unwrap();
        assert_eq!((t.schema.as_str(), t.table.as_str()), ("My Schema", "a\"b"));
        assert_eq!(t.to_string(), "\"My Schema\".\"a\"\"b\"");
        assert_eq!(t.sql(), "\"My Schema\".\"a\"\"b\"");
        let c: ColumnsRef = " chat.messages( session_id , \"Created At\" ) "
            .parse()
            .unwrap();
        assert_eq!(c.columns, ["session_id", "Created At"]);
        let c: ColumnRef = "users.email".parse().unwrap();
        assert_eq!(c.to_string(), "public.users.email");
    }

    #[test]
    fn bad_references_say_why() {
        assert_eq!(
            "a.b.c".parse::<TableRef>().unwrap_err().to_string(),
            "`a.b.c` is not a table (`schema.table`): too many dots"
        );
        assert!("chat.messages".parse::<ColumnsRef>().is_err());
        assert!("chat.messages()".parse::<ColumnsRef>().is_err());
        assert!("chat.messages(a".parse::<ColumnsRef>().is_err());
        assert!("content".parse::<ColumnRef>().is_err());
        assert!("a b".parse::<TableRef>().is_err());
        assert!("\"open".parse::<TableRef>().is_err());
        assert!(
            "x;drop".parse::<TableRef>().is_ok(),
            "any bare text is a name; SQL quotes it"
        );
        assert_eq!(quote_ident("x\";drop"), "\"x\"\";drop\"");
    }
}
