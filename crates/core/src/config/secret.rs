//! Secrets that never print, and redaction of URLs and text.

use std::fmt;
use std::path::PathBuf;
use std::sync::RwLock;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a redacted secret prints as.
pub const REDACTED: &str = "<redacted>";

/// A password, API key or token from config: inline, `{ env: NAME }` or `{ file: PATH }`.
///
/// Debug, Display and Serialize never show an inline value; `{ env }` and `{ file }` show only
/// where the value comes from.
///
/// ```
/// use citadel_itest_core::config::Secret;
/// let s = Secret::inline("hunter2");
/// assert_eq!(format!("{s} {s:?}"), "<redacted> Secret(<redacted>)");
/// assert_eq!(s.resolve().unwrap().expose(), "hunter2");
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Secret {
    /// Given in the config file itself.
    Inline(String),
    /// Read from an environment variable.
    Env(String),
    /// Read from a file (trailing newline stripped).
    File(PathBuf),
}

/// A resolved secret value. Redacted in Debug and Display; use [`SecretString::expose`] to
/// hand it to a client library.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// The plain value. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// A secret could not be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The environment variable is not set (or not unicode).
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    /// The file could not be read.
    #[error("read secret file {}", .0.display())]
    File(PathBuf, #[source] std::io::Error),
    /// The value is empty.
    #[error("secret from {0} is empty")]
    Empty(String),
}

impl Secret {
    /// An inline secret (mostly for code and tests).
    pub fn inline(value: impl Into<String>) -> Self {
        Secret::Inline(value.into())
    }

    /// A secret read from `NAME` at resolve time.
    pub fn env(name: impl Into<String>) -> Self {
        Secret::Env(name.into())
    }

    /// A secret read from the file at `path` at resolve time (trailing newlines dropped).
    pub fn file(path: impl Into<std::path::PathBuf>) -> Self {
        Secret::File(path.into())
    }

    /// Where the value comes from, without the value: `inline`, `env FOO`, `file /x`.
    pub fn origin(&self) -> String {
        match self {
            Secret::Inline(_) => "inline value".to_string(),
            Secret::Env(n) => format!("env {n}"),
            Secret::File(p) => format!("file {}", p.display()),
        }
    }

    /// Read the value, and remember it so [`redact_text`] hides it from any output.
    pub fn resolve(&self) -> Result<SecretString, SecretError> {
        let value = match self {
            Secret::Inline(v) => v.clone(),
            Secret::Env(name) => {
                std::env::var(name).map_err(|_| SecretError::MissingEnv(name.clone()))?
            }
            Secret::File(path) => std::fs::read_to_string(path)
                .map_err(|e| SecretError::File(path.clone(), e))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        };
        if value.is_empty() {
            return Err(SecretError::Empty(self.origin()));
        }
        register_secret(&value);
        Ok(SecretString(value))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Inline(_) => write!(f, "Secret({REDACTED})"),
            Secret::Env(n) => write!(f, "Secret(env: {n})"),
            Secret::File(p) => write!(f, "Secret(file: {})", p.display()),
        }
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Secret::Inline(_) => s.serialize_str(REDACTED),
            Secret::Env(n) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("env", n)?;
                m.end()
            }
            Secret::File(p) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("file", p)?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a secret: a string, { env: NAME } or { file: PATH }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret::Inline(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Secret, E> {
                Ok(Secret::Inline(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Secret, E> {
                Ok(Secret::Inline(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Secret, E> {
                Ok(Secret::Inline(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Secret, A::Error> {
                let mut out = None;
                while let Some(key) = map.next_key::<String>()? {
                    if out.is_some() {
                        return Err(de::Error::custom(
                            "a secret takes exactly one of `env` or `file`",
                        ));
                    }
                    out = Some(match key.as_str() {
                        "env" => Secret::Env(map.next_value()?),
                        "file" => Secret::File(map.next_value()?),
                        other => return Err(de::Error::unknown_field(other, &["env", "file"])),
                    });
                }
                out.ok_or_else(|| de::Error::custom("a secret map needs `env` or `file`"))
            }
        }
        d.deserialize_any(V)
    }
}

static KNOWN_SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Remember a secret value so [`redact_text`] removes it from any output. Values shorter than
/// 4 characters are not registered (they would redact ordinary text).
pub fn register_secret(value: &str) {
    if value.len() < 4 {
        return;
    }
    let mut known = KNOWN_SECRETS.write().unwrap_or_else(|p| p.into_inner());
    if !known.iter().any(|k| k == value) {
        known.push(value.to_string());
        known.sort_by_key(|k| std::cmp::Reverse(k.len()));
    }
}

/// Replace every registered secret value and every URL password in `text` with `<redacted>`.
pub fn redact_text(text: &str) -> String {
    let mut out = redact_urls_in(text);
    let known = KNOWN_SECRETS.read().unwrap_or_else(|p| p.into_inner());
    for k in known.iter() {
        if out.contains(k.as_str()) {
            out = out.replace(k.as_str(), REDACTED);
        }
    }
    out
}

/// Redact the password of one URL or DSN (`postgres://u:pw@h/db` -> `postgres://u:<redacted>@h/db`)
/// and secret-looking query parameters. Text that is not a URL is returned unchanged.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return raw.to_string();
    };
    let mut changed = false;
    if url.password().is_some() {
        let _ = url.set_password(Some(REDACTED));
        changed = true;
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                if is_secret_key(&k) {
                    changed = true;
                    (k.into_owned(), REDACTED.to_string())
                } else {
                    (k.into_owned(), v.into_owned())
                }
            })
            .collect();
        if changed {
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
    }
    if changed {
        url.to_string().replace("%3Credacted%3E", REDACTED)
    } else {
        raw.to_string()
    }
}

/// Finds `scheme://user:password@` in free text and redacts the password part.
fn redact_urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '/' || c == '"')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..=colon]);
                out.push_str(REDACTED);
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Whether a config key or parameter name holds a secret.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "api-key",
        "authorization",
        "bearer",
        "credential",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// A copy of a configuration value tree with every secret redacted: values under secret-looking
/// keys (except `{ env }` / `{ file }` references), URL passwords and registered secret values.
pub fn redact_value(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if is_secret_key(k) && !is_reference(v) {
                        Value::String(REDACTED.to_string())
                    } else {
                        redact_value(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact_value).collect()),
        Value::String(s) => Value::String(redact_text(&redact_url(s))),
        other => other.clone(),
    }
}

fn is_reference(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Object(m) => {
            m.len() == 1 && (m.contains_key("env") || m.contains_key("file"))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(
            redact_url("postgres://app:s3cretpw@127.0.0.1:5432/db?sslmode=disable"),
            "postgres://app:<redacted>@127.0.0.1:5432/db?sslmode=disable"
        );
        assert_eq!(redact_url("http://127.0.0.1:80/x"), "http://127.0.0.1:80/x");
        assert_eq!(
            redact_text("connect postgres://u:pw12345@127.0.0.1/db failed"),
            "connect postgres://u:<redacted>@127.0.0.1/db failed"
        );
    }

    #[test]
    fn registered_values_are_removed_from_text() {
        let s = Secret::inline("correct-horse-battery").resolve().unwrap();
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(
            redact_text("got correct-horse-battery back"),
            "got <redacted> back"
        );
    }

    #[test]
    fn value_trees_are_redacted_by_key() {
        let v = serde_json::json!({
            "targets": [{"password": "abc123", "api_key": {"env": "K"}, "url": "http://u:p4ss@127.0.0.1/"}]
        });
        let r = redact_value(&v);
        assert_eq!(r["targets"][0]["password"], REDACTED);
        assert_eq!(r["targets"][0]["api_key"]["env"], "K");
        assert_eq!(r["targets"][0]["url"], "http://u:<redacted>@127.0.0.1/");
    }
}
