//! Variables and `${name}` substitution.

use std::collections::BTreeMap;

use serde_json::Value;

/// The variables of one flow run.
#[derive(Debug, Clone, Default)]
pub(crate) struct Vars(BTreeMap<String, Value>);

impl Vars {
    pub(crate) fn set(&mut self, name: impl Into<String>, value: Value) {
        self.0.insert(name.into(), value);
    }

    #[cfg(test)]
    pub(crate) fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    /// `${name}` in `text` replaced by the variables' text (strings as they are, other values
    /// as JSON). An unknown variable or an unclosed `${` is an error naming it.
    pub(crate) fn text(&self, text: &str) -> Result<String, String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in `{text}`"))?;
            let name = &after[..end];
            match self.0.get(name) {
                Some(Value::String(s)) => out.push_str(s),
                Some(other) => out.push_str(&other.to_string()),
                None => return Err(self.unknown(name)),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// `value` with every string substituted; a string that is exactly `${name}` becomes the
    /// variable's value with its JSON type.
    pub(crate) fn value(&self, value: &Value) -> Result<Value, String> {
        Ok(match value {
            Value::String(s) => {
                if let Some(name) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}'))
                    && !name.contains("${")
                    && !name.contains('}')
                {
                    self.0
                        .get(name)
                        .cloned()
                        .ok_or_else(|| self.unknown(name))?
                } else {
                    Value::String(self.text(s)?)
                }
            }
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.value(v))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), self.value(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => other.clone(),
        })
    }

    fn unknown(&self, name: &str) -> String {
        let known: Vec<&str> = self.0.keys().map(String::as_str).collect();
        format!(
            "unknown variable `${{{name}}}` (known: {})",
            known.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn substitutes_whole_values_with_their_type_and_splices_text() {
        let mut v = Vars::default();
        v.set("vec", json!([0.5, 1.0]));
        v.set("id", json!("r-1"));
        assert_eq!(v.value(&json!("${vec}")).unwrap(), json!([0.5, 1.0]));
        assert_eq!(
            v.value(&json!({"a": ["x ${id} y", "${id}"]})).unwrap(),
            json!({"a": ["x r-1 y", "r-1"]})
        );
        assert_eq!(v.text("n=${vec}").unwrap(), "n=[0.5,1.0]");
        assert_eq!(v.get("id"), Some(&json!("r-1")));
        let e = v.text("${nope}").unwrap_err();
        assert!(e.contains("unknown variable `${nope}`"), "{e}");
        assert!(v.text("a ${id").unwrap_err().contains("unclosed"));
    }
}
