//! Deparsing stored expressions once per distinct expression, not once per table.
//!
//! Defaults, CHECK conditions, policy expressions and index predicates are stored as
//! `pg_node_tree` text. Deparsing one (`pg_get_expr`) opens its relation, and on a new connection
//! that builds the relation's cache entry (triggers, policies, constraints, defaults): most of
//! the catalog round's time on a schema of many tables. Tables made from one template store the
//! same trees, so the catalog round reads the raw trees, groups them by [`expr_key`] and deparses
//! one representative of each group.
//!
//! Two trees with the same key deparse to the same text: the key is the tree without its
//! `:location` fields (source offsets, which deparsing ignores), plus the name of every column a
//! `:varattno` names in the relation the tree is deparsed against, plus that relation's name when
//! the deparsed text can show it (a whole-row reference, or a sub-select, whose own range table
//! is named around it and whose references to the outer table may be qualified with its name).

/// The tree with every `:location N` field left out.
fn without_locations(tree: &str) -> String {
    const FIELD: &str = ":location ";
    let mut out = String::with_capacity(tree.len());
    let mut copied = 0;
    let mut from = 0;
    while let Some(found) = tree[from..].find(FIELD) {
        let at = from + found;
        from = at + FIELD.len();
        // A field name follows an unescaped space (tokens never hold a raw space), or starts
        // the text.
        let bytes = tree.as_bytes();
        let field = at == 0 || (bytes[at - 1] == b' ' && (at < 2 || bytes[at - 2] != b'\\'));
        let rest = &tree[from..];
        let sign = usize::from(rest.starts_with('-'));
        let digits = rest[sign..].bytes().take_while(u8::is_ascii_digit).count();
        if field && digits > 0 {
            out.push_str(&tree[copied..at]);
            from += sign + digits;
            copied = from;
        }
    }
    out.push_str(&tree[copied..]);
    out
}

/// Every attribute number a `:varattno` field holds, in order of appearance.
fn var_attnos(tree: &str) -> Vec<i32> {
    let mut out = Vec::new();
    let mut rest = tree;
    while let Some(pos) = rest.find(" :varattno ") {
        let after = &rest[pos + " :varattno ".len()..];
        let end = after
            .char_indices()
            .find(|&(k, c)| !(c.is_ascii_digit() || (k == 0 && c == '-')))
            .map_or(after.len(), |(k, _)| k);
        if let Ok(n) = after[..end].parse() {
            out.push(n);
        }
        rest = after;
    }
    out
}

/// Whether deparsing `tree` needs the relation it belongs to: it references a column (a `VAR`
/// node, outer or in a sub-select) or holds a sub-select (whose names are chosen around the
/// relation's). Without either, `pg_get_expr(tree, 0)` prints the same text and opens nothing.
pub(crate) fn needs_relation(tree: &str) -> bool {
    ["{VAR ", "{SUBLINK ", "{QUERY "]
        .iter()
        .any(|node| tree.contains(node))
}

/// The grouping key of `tree` deparsed against relation `relation` whose column `n` is named
/// `column(n)` (None for a number that names no column: kept as the number).
pub(crate) fn expr_key<'a>(
    tree: &str,
    relation: &str,
    column: impl Fn(i32) -> Option<&'a str>,
) -> String {
    let mut key = without_locations(tree);
    let attnos = var_attnos(tree);
    key.push('\u{0}');
    for n in &attnos {
        match column(*n) {
            Some(name) if *n > 0 => {
                key.push_str(name);
            }
            _ => key.push_str(&n.to_string()),
        }
        key.push('\u{0}');
    }
    if attnos.contains(&0) || tree.contains("{SUBLINK") || tree.contains("{QUERY") {
        key.push('\u{1}');
        key.push_str(relation);
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    const GE_AMOUNT_AT_5: &str = "{OPEXPR :opno 1757 :opfuncid 1721 :opresulttype 16 :opretset false \
         :opcollid 0 :inputcollid 0 :args ({VAR :varno 1 :varattno 5 :vartype 1700 :vartypmod 786438 \
         :varcollid 0 :varlevelsup 0 :varnosyn 1 :varattnosyn 5 :location 118} {CONST :consttype 1700 \
         :consttypmod -1 :constcollid 0 :constlen -1 :constbyval false :constisnull false \
         :location 128 :constvalue 8 [ 32 0 0 0 0 0 0 0 ]}) :location 125}";

    fn names(n: i32) -> Option<&'static str> {
        ["", "id", "parent_id", "name", "email", "amount"]
            .get(usize::try_from(n).ok()?)
            .copied()
    }

    #[test]
    fn locations_do_not_matter() {
        let moved = GE_AMOUNT_AT_5
            .replace(":location 118", ":location 1118")
            .replace(":location 128", ":location -1");
        assert_eq!(
            expr_key(GE_AMOUNT_AT_5, "bench.t1", names),
            expr_key(&moved, "bench.t2", names)
        );
        assert!(!without_locations(GE_AMOUNT_AT_5).contains(":location"));
        assert!(without_locations(GE_AMOUNT_AT_5).contains(":varattnosyn 5"));
    }

    #[test]
    fn column_names_and_constants_matter() {
        let other_names = |n: i32| if n == 5 { Some("balance") } else { names(n) };
        assert_ne!(
            expr_key(GE_AMOUNT_AT_5, "bench.t1", names),
            expr_key(GE_AMOUNT_AT_5, "bench.t1", other_names)
        );
        let other_constant = GE_AMOUNT_AT_5.replace("[ 32 0 0 0", "[ 33 0 0 0");
        assert_ne!(
            expr_key(GE_AMOUNT_AT_5, "bench.t1", names),
            expr_key(&other_constant, "bench.t1", names)
        );
    }

    #[test]
    fn the_relation_matters_only_where_it_can_be_printed() {
        assert_eq!(
            expr_key(GE_AMOUNT_AT_5, "a.t", names),
            expr_key(GE_AMOUNT_AT_5, "b.u", names)
        );
        let whole_row = GE_AMOUNT_AT_5.replace(":varattno 5", ":varattno 0");
        assert_ne!(
            expr_key(&whole_row, "a.t", names),
            expr_key(&whole_row, "b.u", names)
        );
        let sublink = format!("{{SUBLINK :subLinkType 0 :testexpr {GE_AMOUNT_AT_5}}}");
        assert_ne!(
            expr_key(&sublink, "a.t", names),
            expr_key(&sublink, "b.u", names)
        );
    }

    #[test]
    fn only_trees_without_columns_or_sub_selects_are_deparsed_bare() {
        assert!(needs_relation(GE_AMOUNT_AT_5));
        let now = "{FUNCEXPR :funcid 1299 :funcresulttype 1184 :funcretset false \
                   :funcvariadic false :funcformat 0 :funccollid 0 :inputcollid 0 :args <> \
                   :location 38}";
        assert!(!needs_relation(now));
        assert!(needs_relation(
            "{SUBLINK :subLinkType 0 :subLinkId 0 :testexpr <> :operName <> :subselect \
             {QUERY :commandType 1} :location 3}"
        ));
    }

    #[test]
    fn an_escaped_location_token_is_data_not_a_field() {
        // outToken escapes spaces, so a name holding ":location 5" shows as `\ :location\ 5`.
        let tree = "{ALIAS :aliasname x\\ :location\\ 5 :colnames <>}";
        assert_eq!(without_locations(tree), tree);
        assert_eq!(without_locations(":location 7}"), "}");
        assert_eq!(without_locations("{A :location é}"), "{A :location é}");
    }
}
