//! Payload filters: the subset of Qdrant's filter language the fixture evaluates, shared by
//! both protocols (each converts its own wire form into these types).

use std::collections::HashSet;

use serde_json::Value;

use super::store::{Payload, PointId};

/// `must` (all), `should` (at least one, when any), `must_not` (none) and `min_should`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Filter {
    pub(crate) must: Vec<Condition>,
    pub(crate) should: Vec<Condition>,
    pub(crate) must_not: Vec<Condition>,
    pub(crate) min_should: Option<(Vec<Condition>, usize)>,
}

/// One condition of a clause.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Condition {
    /// Every check holds for the payload field `key` (a dotted path, `[]` allowed).
    Field {
        key: String,
        checks: Vec<FieldCheck>,
    },
    /// The field is missing, `null` or an empty array.
    IsEmpty(String),
    /// The field exists and is `null`.
    IsNull(String),
    /// The point's id is one of these.
    HasId(HashSet<PointId>),
    /// A nested filter.
    Filter(Box<Filter>),
}

/// A check on the values of one payload field.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FieldCheck {
    /// A value matches.
    Match(Match),
    /// A numeric value lies in the range.
    Range(Range),
    /// `is_empty: true|false` inside a field condition.
    IsEmpty(bool),
    /// `is_null: true|false` inside a field condition.
    IsNull(bool),
}

/// What a `match` condition compares against.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Match {
    Keyword(String),
    Integer(i64),
    Bool(bool),
    /// A substring of a string value (Qdrant's full-text match without a text index).
    Text(String),
    AnyKeywords(Vec<String>),
    AnyIntegers(Vec<i64>),
    ExceptKeywords(Vec<String>),
    ExceptIntegers(Vec<i64>),
}

/// Numeric bounds; every bound given must hold.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Range {
    pub(crate) lt: Option<f64>,
    pub(crate) gt: Option<f64>,
    pub(crate) gte: Option<f64>,
    pub(crate) lte: Option<f64>,
}

impl Filter {
    /// Whether the point with this id and payload passes the filter.
    pub(crate) fn matches(&self, id: &PointId, payload: &Payload) -> bool {
        let check = |c: &Condition| c.matches(id, payload);
        self.must.iter().all(check)
            && (self.should.is_empty() || self.should.iter().any(check))
            && !self.must_not.iter().any(check)
            && self.min_should.as_ref().is_none_or(|(conditions, min)| {
                conditions.iter().filter(|c| check(c)).count() >= *min
            })
    }
}

impl Condition {
    fn matches(&self, id: &PointId, payload: &Payload) -> bool {
        match self {
            Self::Field { key, checks } => {
                let values = values_at(payload, key);
                checks.iter().all(|check| check.matches(&values))
            }
            Self::IsEmpty(key) => is_empty(&values_at(payload, key)),
            Self::IsNull(key) => is_null(&values_at(payload, key)),
            Self::HasId(ids) => ids.contains(id),
            Self::Filter(filter) => filter.matches(id, payload),
        }
    }
}

impl FieldCheck {
    fn matches(&self, values: &[&Value]) -> bool {
        match self {
            Self::Match(m) => m.matches(values),
            Self::Range(range) => values
                .iter()
                .filter_map(|v| v.as_f64())
                .any(|x| range.contains(x)),
            Self::IsEmpty(want) => is_empty(values) == *want,
            Self::IsNull(want) => is_null(values) == *want,
        }
    }
}

impl Match {
    fn matches(&self, values: &[&Value]) -> bool {
        let keyword_in = |set: &[String]| {
            values
                .iter()
                .any(|v| v.as_str().is_some_and(|s| set.iter().any(|k| k == s)))
        };
        let integer_in = |set: &[i64]| {
            values
                .iter()
                .any(|v| v.as_i64().is_some_and(|n| set.contains(&n)))
        };
        match self {
            Self::Keyword(k) => keyword_in(std::slice::from_ref(k)),
            Self::Integer(n) => integer_in(&[*n]),
            Self::Bool(b) => values.iter().any(|v| v.as_bool() == Some(*b)),
            Self::Text(t) => values
                .iter()
                .any(|v| v.as_str().is_some_and(|s| s.contains(t.as_str()))),
            Self::AnyKeywords(set) => keyword_in(set),
            Self::AnyIntegers(set) => integer_in(set),
            Self::ExceptKeywords(set) => !keyword_in(set),
            Self::ExceptIntegers(set) => !integer_in(set),
        }
    }
}

impl Range {
    fn contains(&self, x: f64) -> bool {
        self.lt.is_none_or(|b| x < b)
            && self.gt.is_none_or(|b| x > b)
            && self.gte.is_none_or(|b| x >= b)
            && self.lte.is_none_or(|b| x <= b)
    }
}

fn is_empty(values: &[&Value]) -> bool {
    values.iter().all(|v| v.is_null())
}

fn is_null(values: &[&Value]) -> bool {
    !values.is_empty() && values.iter().all(|v| v.is_null())
}

/// The values at a dotted `path` (`a.b`, `a[].b`): arrays met on the way and at the end are
/// flattened, so a condition on `tags` sees each tag. A missing field gives no values; an
/// empty array gives none either (so it counts as empty, as in Qdrant).
pub(crate) fn values_at<'a>(payload: &'a Payload, path: &str) -> Vec<&'a Value> {
    let mut segments = path.split('.').map(|s| s.strip_suffix("[]").unwrap_or(s));
    let Some(first) = segments.next() else {
        return Vec::new();
    };
    let mut current: Vec<&Value> = payload.get(first).into_iter().collect();
    for segment in segments {
        current = flatten(current)
            .into_iter()
            .filter_map(|v| v.as_object().and_then(|o| o.get(segment)))
            .collect();
    }
    flatten(current)
}

fn flatten(values: Vec<&Value>) -> Vec<&Value> {
    values
        .into_iter()
        .flat_map(|v| match v {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn payload(v: Value) -> Payload {
        match v {
            Value::Object(map) => map,
            _ => unreachable!("test payloads are objects"),
        }
    }

    fn field(key: &str, check: FieldCheck) -> Condition {
        Condition::Field {
            key: key.into(),
            checks: vec![check],
        }
    }

    #[test]
    fn clauses_combine_like_qdrant() {
        let p =
            payload(json!({"city": "London", "color": "red", "price": 12.5, "tags": ["a", "b"]}));
        let id = PointId::Num(7);
        let london = field("city", FieldCheck::Match(Match::Keyword("London".into())));
        let berlin = field("city", FieldCheck::Match(Match::Keyword("Berlin".into())));
        let cheap = field(
            "price",
            FieldCheck::Range(Range {
                lt: Some(20.0),
                ..Range::default()
            }),
        );
        let tag_b = field("tags", FieldCheck::Match(Match::Keyword("b".into())));

        let f = Filter {
            must: vec![london.clone(), cheap, tag_b],
            ..Filter::default()
        };
        assert!(f.matches(&id, &p));
        let f = Filter {
            should: vec![berlin.clone(), london.clone()],
            ..Filter::default()
        };
        assert!(f.matches(&id, &p));
        let f = Filter {
            must_not: vec![london],
            ..Filter::default()
        };
        assert!(!f.matches(&id, &p));
        let f = Filter {
            should: vec![berlin],
            ..Filter::default()
        };
        assert!(!f.matches(&id, &p));
        let f = Filter {
            must: vec![Condition::HasId([PointId::Num(7)].into_iter().collect())],
            ..Filter::default()
        };
        assert!(f.matches(&id, &p));
    }

    #[test]
    fn nested_paths_and_emptiness() {
        let p = payload(json!({"a": {"b": [{"c": 1}, {"c": 2}]}, "n": null, "e": []}));
        assert_eq!(values_at(&p, "a.b[].c"), vec![&json!(1), &json!(2)]);
        assert_eq!(values_at(&p, "a.b.c"), vec![&json!(1), &json!(2)]);
        let id = PointId::Num(1);
        for (cond, want) in [
            (Condition::IsEmpty("missing".into()), true),
            (Condition::IsEmpty("e".into()), true),
            (Condition::IsEmpty("n".into()), true),
            (Condition::IsEmpty("a".into()), false),
            (Condition::IsNull("n".into()), true),
            (Condition::IsNull("missing".into()), false),
        ] {
            let f = Filter {
                must: vec![cond.clone()],
                ..Filter::default()
            };
            assert_eq!(f.matches(&id, &p), want, "{cond:?}");
        }
    }
}
