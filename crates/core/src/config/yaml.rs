//! Config files: YAML parsed first, `${NAME}` references expanded afterwards inside string
//! values, so an expanded value is always exactly one scalar whatever characters it holds.
//!
//! The same pass finds what serde's YAML loading silently accepts: a key given twice in one
//! mapping (the last one would win), more than one document, anchors that expand without bound.

use std::collections::HashMap;

use figment::value::{Dict, Empty, Num, Tag, Value};
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::TScalarStyle;

/// Deepest nesting of mappings and sequences accepted.
const MAX_DEPTH: usize = 128;

/// Most nodes a document may hold once aliases are expanded.
const MAX_NODES: usize = 1_000_000;

/// A problem in one file: the 1-based line, the key path when known, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileProblem {
    pub(crate) line: usize,
    pub(crate) path: String,
    pub(crate) message: String,
}

#[derive(Debug, Clone)]
enum Node {
    Scalar {
        text: String,
        style: TScalarStyle,
        tag: Option<String>,
        line: usize,
    },
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

impl Node {
    fn size(&self) -> usize {
        match self {
            Node::Scalar { .. } => 1,
            Node::Seq(items) => 1 + items.iter().map(Node::size).sum::<usize>(),
            Node::Map(entries) => 1 + entries.iter().map(|(_, n)| 1 + n.size()).sum::<usize>(),
        }
    }
}

enum Frame {
    Seq {
        items: Vec<Node>,
        anchor: usize,
    },
    Map {
        entries: Vec<(String, Node)>,
        /// Line of each key, for duplicates.
        lines: HashMap<String, usize>,
        key: Option<String>,
        anchor: usize,
    },
}

/// Path of the node being built, from the open frames (`basic.targets[0]`).
fn stack_path(stack: &[Frame]) -> String {
    let mut out = String::new();
    for frame in stack {
        match frame {
            Frame::Seq { items, .. } => out.push_str(&format!("[{}]", items.len())),
            Frame::Map { key: Some(k), .. } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Frame::Map { key: None, .. } => {}
        }
    }
    out
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Parse one config file's text (a leading UTF-8 BOM is skipped) into a figment dictionary,
/// expanding `${NAME}` / `${NAME:-default}` in string values with `lookup`. Every problem is
/// returned, each with its line.
pub(crate) fn parse_config(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Dict, Vec<FileProblem>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let root = parse_tree(text).map_err(|p| vec![p])?;
    let mut problems = Vec::new();
    let dict = match root {
        None => Dict::new(),
        Some((Node::Map(entries), _)) => {
            let mut dict = Dict::new();
            for (key, node) in entries {
                let value = convert(&node, &key, lookup, &mut problems);
                dict.insert(key, value);
            }
            dict
        }
        Some((Node::Scalar { text, style, .. }, _))
            if style == TScalarStyle::Plain && resolve_plain(&text).is_none_or(is_null) =>
        {
            Dict::new()
        }
        Some((_, line)) => {
            return Err(vec![FileProblem {
                line,
                path: String::new(),
                message: "the top level of a config file must be a mapping of sections \
                          (`run:`, `basic:`, ...)"
                    .to_string(),
            }]);
        }
    };
    if problems.is_empty() {
        Ok(dict)
    } else {
        Err(problems)
    }
}

fn is_null(v: Value) -> bool {
    matches!(v, Value::Empty(..))
}

/// The document's root node and its line (`None` for an empty file); duplicate keys, several
/// documents, too deep nesting and alias bombs are errors.
fn parse_tree(text: &str) -> Result<Option<(Node, usize)>, FileProblem> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut root: Option<(Node, usize)> = None;
    let mut documents = 0usize;
    let mut nodes = 0usize;
    loop {
        let (event, mark) = parser.next_token().map_err(|e| FileProblem {
            line: e.marker().line(),
            path: String::new(),
            message: format!("invalid YAML: {}", e.info()),
        })?;
        let line = mark.line();
        let fail = |path: String, message: String| FileProblem {
            line,
            path,
            message,
        };
        let (node, anchor) = match event {
            Event::StreamEnd => break,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err(fail(
                        String::new(),
                        "a second YAML document starts here: a config file holds one document \
                         (give several files with repeated --config instead)"
                            .to_string(),
                    ));
                }
                continue;
            }
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => continue,
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(fail(
                        stack_path(&stack),
                        format!("nested deeper than {MAX_DEPTH} levels"),
                    ));
                }
                if matches!(event, Event::SequenceStart(..)) {
                    stack.push(Frame::Seq {
                        items: Vec::new(),
                        anchor,
                    });
                } else {
                    stack.push(Frame::Map {
                        entries: Vec::new(),
                        lines: HashMap::new(),
                        key: None,
                        anchor,
                    });
                }
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq { items, anchor }) => (Node::Seq(items), anchor),
                Some(Frame::Map {
                    entries, anchor, ..
                }) => (Node::Map(entries), anchor),
                None => continue,
            },
            Event::Scalar(text, style, anchor, tag) => (
                Node::Scalar {
                    text,
                    style,
                    tag: tag.map(|t| t.suffix),
                    line,
                },
                anchor,
            ),
            Event::Alias(id) => match anchors.get(&id) {
                Some(node) => {
                    // A copy counts every value it holds; other nodes were counted as they came.
                    nodes = nodes.saturating_add(node.size().saturating_sub(1));
                    (node.clone(), 0)
                }
                None => {
                    return Err(fail(
                        stack_path(&stack),
                        "alias to an unknown anchor".to_string(),
                    ));
                }
            },
        };
        nodes = nodes.saturating_add(1);
        if nodes > MAX_NODES {
            return Err(fail(
                stack_path(&stack),
                format!("more than {MAX_NODES} values once aliases are expanded"),
            ));
        }
        if anchor > 0 {
            anchors.insert(anchor, node.clone());
        }
        // Attach the finished node to its parent.
        let path = stack_path(&stack);
        match stack.last_mut() {
            None => root = Some((node, line)),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                lines,
                key,
                ..
            }) => match key.take() {
                Some(k) => entries.push((k, node)),
                None => {
                    let Node::Scalar { text, .. } = node else {
                        return Err(fail(
                            path,
                            "a mapping key must be a plain value, not a list or mapping"
                                .to_string(),
                        ));
                    };
                    if let Some(first) = lines.get(&text) {
                        return Err(fail(
                            join(&path, &text),
                            format!(
                                "duplicate key `{}`: given at line {first} and again at line \
                                 {line} (the later one would silently replace the earlier)",
                                super::shorten(&text)
                            ),
                        ));
                    }
                    lines.insert(text.clone(), line);
                    *key = Some(text);
                }
            },
        }
    }
    Ok(root)
}

/// A node as a figment value, `${...}` expanded in string scalars.
fn convert(
    node: &Node,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<FileProblem>,
) -> Value {
    match node {
        Node::Seq(items) => Value::Array(
            Tag::Default,
            items
                .iter()
                .enumerate()
                .map(|(i, n)| convert(n, &format!("{path}[{i}]"), lookup, problems))
                .collect(),
        ),
        Node::Map(entries) => {
            let mut dict = Dict::new();
            for (k, n) in entries {
                let v = convert(n, &join(path, k), lookup, problems);
                dict.insert(k.clone(), v);
            }
            Value::Dict(Tag::Default, dict)
        }
        Node::Scalar {
            text,
            style,
            tag,
            line,
        } => {
            let string = |s: String| Value::String(Tag::Default, s);
            let expanded = match expand(text, *line, lookup) {
                Ok(e) => e,
                Err(found) => {
                    problems.extend(found.into_iter().map(|(line, message)| FileProblem {
                        line,
                        path: path.to_string(),
                        message,
                    }));
                    return string(String::new());
                }
            };
            match tag.as_deref() {
                Some("str") => return string(expanded.value),
                Some(other) if !matches!(other, "int" | "float" | "bool" | "null") => {
                    problems.push(FileProblem {
                        line: *line,
                        path: path.to_string(),
                        message: format!(
                            "YAML tag `!{}` is not supported (only !!str, !!int, !!float, !!bool, !!null)",
                            super::shorten(other)
                        ),
                    });
                    return string(expanded.value);
                }
                _ => {}
            }
            if *style != TScalarStyle::Plain && tag.is_none() {
                return string(expanded.value);
            }
            if expanded.references == 0 && !expanded.escaped {
                return resolve_plain(text).unwrap_or_else(|| string(text.clone()));
            }
            if expanded.whole {
                if let Some(v) = typed_reference(&expanded.value) {
                    return v;
                }
            }
            string(expanded.value)
        }
    }
}

/// A scalar after expansion.
struct Expanded {
    value: String,
    /// How many `${...}` references were replaced.
    references: usize,
    /// The scalar is exactly one reference, nothing around it.
    whole: bool,
    /// A `$${` escape was unescaped.
    escaped: bool,
}

/// Whether `name` is an environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
fn is_var_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Replace `${NAME}` and `${NAME:-default}`; `$${` is a literal `${`. Errors carry their line
/// (`line` is the scalar's first line; each newline before the reference adds one).
fn expand(
    text: &str,
    line: usize,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Expanded, Vec<(usize, String)>> {
    let mut out = String::new();
    let mut errors = Vec::new();
    let mut rest = text;
    let mut consumed = 0usize;
    let (mut references, mut escaped, mut literal) = (0usize, false, false);
    let line_at = |offset: usize| line + text[..offset].matches('\n').count();
    while let Some(pos) = rest.find("${") {
        if pos > 0 && rest.as_bytes()[pos - 1] == b'$' {
            out.push_str(&rest[..pos - 1]);
            out.push_str("${");
            escaped = true;
            consumed += pos + 2;
            rest = &rest[pos + 2..];
            continue;
        }
        if pos > 0 {
            literal = true;
        }
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 2..];
        let Some(end) = after.find('}') else {
            errors.push((
                line_at(consumed + pos),
                format!(
                    "unterminated `${{` in `{}`: close it with `}}`, or write `$${{` for a literal `${{`",
                    super::shorten(text)
                ),
            ));
            rest = "";
            break;
        };
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        references += 1;
        if !is_var_name(name) {
            errors.push((
                line_at(consumed + pos),
                format!(
                    "`${{{}}}` does not name an environment variable (letters, digits and `_`, \
                     not starting with a digit; write `$${{` for a literal `${{`)",
                    super::shorten(inner)
                ),
            ));
        } else {
            match (lookup(name), default) {
                (Some(v), _) if !v.is_empty() => out.push_str(&v),
                (_, Some(d)) => out.push_str(d),
                (Some(v), None) => out.push_str(&v),
                (None, None) => errors.push((
                    line_at(consumed + pos),
                    format!(
                        "environment variable {name} is not set (referenced as ${{{name}}}; \
                         set it or write ${{{name}:-default}})"
                    ),
                )),
            }
        }
        consumed += pos + 2 + end + 1;
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        literal = true;
    }
    out.push_str(rest);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Expanded {
        value: out,
        references,
        whole: references == 1 && !literal && !escaped,
        escaped,
    })
}

/// The typed value of a whole-scalar reference: `true`, `false`, or a decimal number written
/// exactly as it prints (no sign `+`, leading zeros or exponent), so no character is lost.
fn typed_reference(v: &str) -> Option<Value> {
    match v {
        "true" => return Some(Value::Bool(Tag::Default, true)),
        "false" => return Some(Value::Bool(Tag::Default, false)),
        _ => {}
    }
    if let Ok(u) = v.parse::<u64>() {
        return (u.to_string() == v).then_some(Value::Num(Tag::Default, Num::U64(u)));
    }
    if let Ok(i) = v.parse::<i64>() {
        return (i.to_string() == v).then_some(Value::Num(Tag::Default, Num::I64(i)));
    }
    if v.contains('.') && !v.contains(['e', 'E', '+']) {
        if let Ok(f) = v.parse::<f64>() {
            if f.is_finite() && f.to_string() == v {
                return Some(Value::Num(Tag::Default, Num::F64(f)));
            }
        }
    }
    None
}

/// A plain scalar as YAML resolves it (as serde_yaml does): null, bool, integer, float, else
/// `None` (a string).
fn resolve_plain(v: &str) -> Option<Value> {
    let t = Tag::Default;
    if matches!(v, "" | "~" | "null" | "Null" | "NULL") {
        return Some(Value::Empty(t, Empty::Unit));
    }
    match v {
        "true" | "True" | "TRUE" => return Some(Value::Bool(t, true)),
        "false" | "False" | "FALSE" => return Some(Value::Bool(t, false)),
        _ => {}
    }
    let digits_not_number = {
        let s = v.strip_prefix(['-', '+']).unwrap_or(v);
        s.len() > 1 && s.starts_with('0') && s[1..].bytes().all(|b| b.is_ascii_digit())
    };
    let (negative, unsigned) = match v.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, v.strip_prefix('+').unwrap_or(v)),
    };
    if !unsigned.starts_with(['+', '-']) {
        let radix = [("0x", 16), ("0o", 8), ("0b", 2)]
            .iter()
            .find_map(|(p, r)| unsigned.strip_prefix(p).map(|rest| (rest, *r)));
        let parsed = match radix {
            Some((rest, r)) if !rest.starts_with(['+', '-']) => u128::from_str_radix(rest, r).ok(),
            Some(_) => None,
            None if digits_not_number => None,
            None => unsigned.parse::<u128>().ok(),
        };
        if let Some(n) = parsed {
            if !negative {
                return Some(match u64::try_from(n) {
                    Ok(n) => Value::Num(t, Num::U64(n)),
                    Err(_) => Value::Num(t, Num::U128(n)),
                });
            }
            if let Ok(n) = i128::try_from(n) {
                let n = -n;
                return Some(match i64::try_from(n) {
                    Ok(n) => Value::Num(t, Num::I64(n)),
                    Err(_) => Value::Num(t, Num::I128(n)),
                });
            }
        }
    }
    if !digits_not_number {
        let unpositive = match v.strip_prefix('+') {
            Some(u) if u.starts_with(['+', '-']) => return None,
            Some(u) => u,
            None => v,
        };
        match unpositive {
            ".inf" | ".Inf" | ".INF" => return Some(Value::Num(t, Num::F64(f64::INFINITY))),
            "-.inf" | "-.Inf" | "-.INF" => {
                return Some(Value::Num(t, Num::F64(f64::NEG_INFINITY)));
            }
            ".nan" | ".NaN" | ".NAN" => return Some(Value::Num(t, Num::F64(f64::NAN))),
            _ => {}
        }
        if let Ok(f) = unpositive.parse::<f64>() {
            if f.is_finite() {
                return Some(Value::Num(t, Num::F64(f)));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("127.0.0.1".into()),
            "EMPTY" => Some(String::new()),
            "NL" => Some("a\nb: 1\n- c".into()),
            "PORT" => Some("5432".into()),
            "ZIP" => Some("0123".into()),
            _ => None,
        }
    }

    fn parse(text: &str) -> Result<serde_json::Value, Vec<FileProblem>> {
        let dict = parse_config(text, &env)?;
        Ok(serde_json::to_value(Value::from(dict)).unwrap())
    }

    #[test]
    fn plain_scalars_resolve_like_serde_yaml() {
        let v =
            parse("a: 1\nb: -2\nc: 1.5\nd: true\ne: ~\nf: 0123\ng: 0x10\nh: text\ni: '1'\nj:\n")
                .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a": 1, "b": -2, "c": 1.5, "d": true, "e": null, "f": "0123",
                               "g": 16, "h": "text", "i": "1", "j": null})
        );
    }

    #[test]
    fn references_expand_inside_values_only() {
        let v = parse(
            "url: http://${HOST}:${MISSING:-8080}/ # ${NOT_EXPANDED}\nraw: '$${KEPT}'\nport: ${PORT}\nquoted: \"${PORT}\"\nzip: ${ZIP}\nnl: ${NL}\nempty: ${EMPTY}\n",
        )
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"url": "http://127.0.0.1:8080/", "raw": "${KEPT}", "port": 5432,
                               "quoted": "5432", "zip": "0123", "nl": "a\nb: 1\n- c", "empty": ""})
        );
    }

    #[test]
    fn problems_name_lines_and_paths() {
        let err = parse("a:\n  b: ${MISSING}\n  c: 'x ${OPEN'\n  d: ${bad name}\n").unwrap_err();
        let lines: Vec<(usize, &str)> = err.iter().map(|p| (p.line, p.path.as_str())).collect();
        assert_eq!(lines, [(2, "a.b"), (3, "a.c"), (4, "a.d")], "{err:?}");
        assert!(err[1].message.contains("unterminated"), "{err:?}");

        let err = parse("basic:\n  x: 1\nrun: {}\nbasic:\n  y: 2\n").unwrap_err();
        assert_eq!(err[0].line, 4, "{err:?}");
        assert!(
            err[0].message.contains("line 1 and again at line 4"),
            "{err:?}"
        );
        let err = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(err[0].line, 2, "{err:?}");
        let err = parse("- a\n").unwrap_err();
        assert!(err[0].message.contains("must be a mapping"), "{err:?}");
        assert_eq!(
            parse("\u{feff}a: 1\n").unwrap(),
            serde_json::json!({"a": 1})
        );
        assert_eq!(parse("").unwrap(), serde_json::json!({}));
        assert_eq!(parse("# only a comment\n").unwrap(), serde_json::json!({}));
    }

    #[test]
    fn large_flat_and_nested_documents_are_not_mistaken_for_bombs() {
        let mut text = String::from("a:\n  b:\n    c:\n      d:\n");
        for i in 0..300_000 {
            text.push_str(&format!("        - {i}\n"));
        }
        let v = parse(&text).unwrap();
        assert_eq!(v["a"]["b"]["c"]["d"].as_array().unwrap().len(), 300_000);
        let err = parse("a: [1,\n").unwrap_err();
        assert!(err[0].message.starts_with("invalid YAML"), "{err:?}");
    }

    #[test]
    fn alias_bombs_and_deep_nesting_are_refused() {
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..8 {
            let prev = if i == 0 {
                "a".to_string()
            } else {
                format!("l{}", i - 1)
            };
            bomb.push_str(&format!(
                "l{i}: &l{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
        }
        let err = parse(&bomb).unwrap_err();
        assert!(err[0].message.contains("aliases"), "{err:?}");
        let deep = format!("a: {}{}\n", "[".repeat(200), "]".repeat(200));
        assert!(parse(&deep).is_err());
    }
}
