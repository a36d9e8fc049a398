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

/// Multi-word type names that may follow a `::` cast.
const TYPE_CONTINUATIONS: [&str; 5] = [
    " varying",
    " with time zone",
    " without time zone",
    " precision",
    " zone",
];

/// A comparison key for a SQL expression (default, check condition, index predicate): casts
/// (`::text`), case and whitespace outside string literals, parentheses and a leading `CHECK`
/// or trailing `NOT VALID` are removed.
pub(crate) fn expr_key(raw: &str) -> String {
    let without_casts = strip_casts(raw.trim());
    let mut out = String::with_capacity(without_casts.len());
    let mut chars = without_casts.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                out.push(c);
                while let Some(q) = chars.next() {
                    out.push(q);
                    if q == '\'' {
                        if chars.peek() == Some(&'\'') {
                            out.push('\'');
                            chars.next();
                        } else {
                            break;
                        }
                    }
                }
            }
            '(' | ')' => {}
            c if c.is_whitespace() => {}
            c => out.extend(c.to_lowercase()),
        }
    }
    let out = out.strip_prefix("check").unwrap_or(&out).to_string();
    out.strip_suffix("notvalid").unwrap_or(&out).to_string()
}

/// Removes `::type` casts outside string literals.
fn strip_casts(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'\'' {
            let start = i;
            i += 1;
            while i < bytes.len() {
                if bytes[i] == b'\'' {
                    if bytes.get(i + 1) == Some(&b'\'') {
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                i += 1;
            }
            out.push_str(&s[start..i]);
            continue;
        }
        if c == b':' && bytes.get(i + 1) == Some(&b':') {
            i += 2;
            while i < bytes.len() && bytes[i] == b' ' {
                i += 1;
            }
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'_' | b'.' | b'"'))
            {
                i += 1;
            }
            'words: loop {
                for word in TYPE_CONTINUATIONS {
                    let end = i + word.len();
                    if end <= bytes.len()
                        && bytes[i..end].eq_ignore_ascii_case(word.as_bytes())
                        && bytes
                            .get(end)
                            .is_none_or(|b| !b.is_ascii_alphanumeric() && *b != b'_')
                    {
                        i = end;
                        continue 'words;
                    }
                }
                break;
            }
            if bytes.get(i) == Some(&b'(') {
                if let Some(close) = s[i..].find(')') {
                    i += close + 1;
                }
            }
            while bytes.get(i) == Some(&b'[') && bytes.get(i + 1) == Some(&b']') {
                i += 2;
            }
            continue;
        }
        let ch = s[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
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
    fn expressions_compare_without_casts_case_and_spacing() {
        assert_eq!(expr_key("'active'::text"), expr_key("'active'"));
        assert_eq!(
            expr_key("'a b'::character varying"),
            expr_key("'a b'::varchar")
        );
        assert_ne!(expr_key("'a b'"), expr_key("'ab'"));
        assert_eq!(expr_key("NOW()"), expr_key("now()"));
        assert_eq!(
            expr_key("CHECK ((balance >= (0)::numeric))"),
            expr_key("balance >= 0")
        );
        assert_eq!(
            expr_key("CHECK ((char_length(title) > 0)) NOT VALID"),
            expr_key("char_length(title) > 0")
        );
        assert_eq!(
            expr_key("nextval('chat.messages_id_seq'::regclass)"),
            "nextval'chat.messages_id_seq'"
        );
        assert_eq!(
            expr_key("'2020-01-01 00:00:00+00'::timestamp with time zone"),
            expr_key("'2020-01-01 00:00:00+00'")
        );
        assert_eq!(expr_key("'it''s'::text"), "'it''s'");
        // Any text, however odd, gives a key and no panic.
        for odd in [
            "é::ü",
            "x::text é",
            "'unterminated",
            "::",
            "a::(",
            "ß::character varyingé",
        ] {
            let _ = expr_key(odd);
            let _ = normalize_type(odd);
        }
    }
}
