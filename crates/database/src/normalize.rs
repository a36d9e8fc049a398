//! Canonical forms of type names and SQL expressions, so that `timestamptz` matches
//! `timestamp with time zone` and `'active'` matches `'active'::text`.

/// The canonical spelling of a type name, as `format_type` prints it.
///
/// Aliases map to Postgres' names (`int` -> `integer`, `varchar(20)` -> `character varying(20)`,
/// `timestamptz` -> `timestamp with time zone`), `serial` types to their integer type, array
/// suffixes are kept as `[]`, and the `public.` / `pg_catalog.` qualifiers are dropped.
pub(crate) fn normalize_type(raw: &str) -> String {
    let mut s = collapse_whitespace(&raw.trim().to_ascii_lowercase());
    let mut dims = 0;
    loop {
        let t = s.trim_end();
        if let Some(stripped) = t.strip_suffix(']') {
            if let Some(open) = stripped.rfind('[') {
                s = stripped[..open].trim_end().to_string();
                dims += 1;
                continue;
            }
        }
        if let Some(stripped) = t.strip_suffix(" array") {
            s = stripped.to_string();
            dims += 1;
            continue;
        }
        break;
    }
    for prefix in ["public.", "pg_catalog."] {
        if let Some(rest) = s.strip_prefix(prefix) {
            s = rest.to_string();
        }
    }
    let (base, args, tail) = split_type(&s);
    let args = args.map(|a| a.chars().filter(|c| !c.is_whitespace()).collect::<String>());
    let with_args = |name: &str| match &args {
        Some(a) => format!("{name}({a})"),
        None => name.to_string(),
    };
    let tail = tail.trim();
    let canonical = match (base.trim(), tail) {
        ("int" | "int4" | "integer" | "serial" | "serial4", "") => "integer".to_string(),
        ("int8" | "bigint" | "bigserial" | "serial8", "") => "bigint".to_string(),
        ("int2" | "smallint" | "smallserial" | "serial2", "") => "smallint".to_string(),
        ("bool" | "boolean", "") => "boolean".to_string(),
        ("varchar" | "character varying", "") => with_args("character varying"),
        ("char" | "character" | "bpchar", "") if args.is_some() => with_args("character"),
        ("char" | "character", "") => "character(1)".to_string(),
        ("float8" | "double precision" | "float", "") => "double precision".to_string(),
        ("float4" | "real", "") => "real".to_string(),
        ("decimal" | "numeric", "") => with_args("numeric"),
        ("timestamptz", "") | ("timestamp", "with time zone") => {
            format!("{} with time zone", with_args("timestamp"))
        }
        ("timestamp", "" | "without time zone") => {
            format!("{} without time zone", with_args("timestamp"))
        }
        ("timetz", "") | ("time", "with time zone") => {
            format!("{} with time zone", with_args("time"))
        }
        ("time", "" | "without time zone") => format!("{} without time zone", with_args("time")),
        ("varbit" | "bit varying", "") => with_args("bit varying"),
        (base, "") => with_args(base),
        (base, tail) => format!("{} {tail}", with_args(base)),
    };
    format!("{canonical}{}", "[]".repeat(dims))
}

/// Whether a type name is one of the `serial` pseudo-types (integer + sequence default).
pub(crate) fn is_serial(raw: &str) -> bool {
    matches!(
        raw.trim().to_ascii_lowercase().as_str(),
        "serial" | "serial4" | "bigserial" | "serial8" | "smallserial" | "serial2"
    )
}

/// `numeric(12, 2) foo` -> (`numeric`, Some(`12, 2`), ` foo`); `timestamp(3) with time zone`
/// -> (`timestamp`, Some(`3`), ` with time zone`).
fn split_type(s: &str) -> (&str, Option<&str>, &str) {
    match s.find('(') {
        Some(open) => match s[open..].find(')') {
            Some(close) => (
                &s[..open],
                Some(&s[open + 1..open + close]),
                &s[open + close + 1..],
            ),
            None => (s, None, ""),
        },
        None => (s, None, ""),
    }
}

fn collapse_whitespace(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A declared index key: `created_at`, `"Odd Name"`, `lower(email)`, `created_at DESC NULLS
/// LAST`, split into the column or expression and its ordering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeclaredKey {
    /// The column's name (unquoted) or the expression, without the ordering words.
    pub(crate) expr: String,
    /// A plain column (else an expression).
    pub(crate) column: bool,
    pub(crate) desc: bool,
    pub(crate) nulls_first: bool,
}

impl DeclaredKey {
    /// Parse one element of `indexes[].columns`.
    pub(crate) fn parse(raw: &str) -> DeclaredKey {
        let mut words: Vec<&str> = raw.split_whitespace().collect();
        let mut desc = false;
        let mut nulls: Option<bool> = None;
        loop {
            let n = words.len();
            let upper = |w: &str| w.to_ascii_uppercase();
            if n >= 3 && upper(words[n - 2]) == "NULLS" && upper(words[n - 1]) == "FIRST" {
                nulls = Some(true);
                words.truncate(n - 2);
            } else if n >= 3 && upper(words[n - 2]) == "NULLS" && upper(words[n - 1]) == "LAST" {
                nulls = Some(false);
                words.truncate(n - 2);
            } else if n >= 2 && upper(words[n - 1]) == "DESC" {
                desc = true;
                words.truncate(n - 1);
            } else if n >= 2 && upper(words[n - 1]) == "ASC" {
                words.truncate(n - 1);
            } else {
                break;
            }
        }
        let text = words.join(" ");
        let (expr, column) = match plain_identifier(&text) {
            Some(name) => (name, true),
            None => (text, false),
        };
        DeclaredKey {
            expr,
            column,
            desc,
            nulls_first: nulls.unwrap_or(desc),
        }
    }
}

/// `name` or `"Quoted ""Name"""` as an identifier (unquoted), else `None`.
pub(crate) fn plain_identifier(text: &str) -> Option<String> {
    if let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        let valid = !inner.is_empty() && !inner.replace("\"\"", "").contains('"');
        return valid.then(|| inner.replace("\"\"", "\""));
    }
    let mut chars = text.chars();
    let first = chars.next()?;
    ((first.is_alphabetic() || first == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_' || c == '$'))
    .then(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_aliases_meet_format_type() {
        for (alias, canonical) in [
            ("int", "integer"),
            ("INT4", "integer"),
            ("serial", "integer"),
            ("bigserial", "bigint"),
            ("bool", "boolean"),
            ("varchar(255)", "character varying(255)"),
            ("VARCHAR", "character varying"),
            ("char(3)", "character(3)"),
            ("char", "character(1)"),
            ("timestamptz", "timestamp with time zone"),
            ("timestamp", "timestamp without time zone"),
            ("timestamptz(3)", "timestamp(3) with time zone"),
            ("timestamp(3) with time zone", "timestamp(3) with time zone"),
            ("decimal(12, 2)", "numeric(12,2)"),
            ("float8", "double precision"),
            ("text[]", "text[]"),
            ("int[][]", "integer[][]"),
            ("integer array", "integer[]"),
            ("public.vector(1536)", "vector(1536)"),
            ("chat.message_role", "chat.message_role"),
            ("jsonb", "jsonb"),
            ("uuid", "uuid"),
        ] {
            assert_eq!(normalize_type(alias), canonical, "{alias}");
            assert_eq!(
                normalize_type(canonical),
                canonical,
                "{canonical} is a fixpoint"
            );
        }
        assert!(is_serial("BIGSERIAL"));
        assert!(!is_serial("bigint"));
    }

    #[test]
    fn index_keys_split_ordering_from_the_column_or_expression() {
        let k = DeclaredKey::parse("created_at DESC");
        assert_eq!(
            (k.expr.as_str(), k.column, k.desc, k.nulls_first),
            ("created_at", true, true, true)
        );
        let k = DeclaredKey::parse("lower(email) asc nulls first");
        assert_eq!(
            (k.expr.as_str(), k.column, k.desc, k.nulls_first),
            ("lower(email)", false, false, true)
        );
        let k = DeclaredKey::parse("\"Odd Name\" DESC NULLS LAST");
        assert_eq!(
            (k.expr.as_str(), k.column, k.desc, k.nulls_first),
            ("Odd Name", true, true, false)
        );
        let k = DeclaredKey::parse("(a + b)");
        assert!(!k.column);
        for odd in ["", "DESC", "é", "\"", "\"a\"b\""] {
            let _ = DeclaredKey::parse(odd);
            let _ = normalize_type(odd);
        }
    }
}
