//! Secrets that never print, and redaction of URLs and text.

use std::fmt;
use std::path::PathBuf;
use std::sync::RwLock;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::input::{InputFileError, MAX_SECRET_FILE_BYTES, read_input_text};

/// Shortest secret accepted: [`Secret::resolve`] refuses shorter values, because a value of one
/// to three characters cannot be removed from output without destroying ordinary text.
pub const MIN_SECRET_CHARS: usize = 4;

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
    /// The secret file is not a regular file, too large or not text.
    #[error("read secret file {}", .0.display())]
    FileInput(PathBuf, #[source] InputFileError),
    /// The value is shorter than [`MIN_SECRET_CHARS`]: it could not be told apart from ordinary
    /// text, so it could not be kept out of output.
    #[error(
        "secret from {0} is shorter than {MIN_SECRET_CHARS} characters: so short a value cannot be \
         redacted from output reliably, use a longer one"
    )]
    TooShort(String),
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
            Secret::File(path) => read_input_text(path, MAX_SECRET_FILE_BYTES)
                .map_err(|e| SecretError::FileInput(path.clone(), e))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        };
        if value.is_empty() {
            return Err(SecretError::Empty(self.origin()));
        }
        if value.chars().count() < MIN_SECRET_CHARS {
            return Err(SecretError::TooShort(self.origin()));
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
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Secret, E> {
                Ok(Secret::Inline(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Secret, E> {
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

fn remember(forms: impl IntoIterator<Item = String>) {
    let mut known = KNOWN_SECRETS.write().unwrap_or_else(|p| p.into_inner());
    let mut added = false;
    for form in forms {
        if form.chars().count() >= MIN_SECRET_CHARS && !known.contains(&form) {
            known.push(form);
            added = true;
        }
    }
    if added {
        known.sort_by_key(|k| std::cmp::Reverse(k.len()));
    }
}

/// Remember a secret value so [`redact_text`] removes it from any output, together with the
/// forms it travels in: base64 (standard and URL-safe, with and without padding),
/// percent-encoded (every reserved byte encoded, upper and lower case hex; URL userinfo, path and
/// query encoding; `application/x-www-form-urlencoded`) and JSON-escaped. Values shorter than
/// [`MIN_SECRET_CHARS`] are not registered: [`Secret::resolve`] refuses them.
///
/// ```
/// use citadel_itest_core::config::{redact_text, register_secret};
/// register_secret("p@ss word/1");
/// assert_eq!(redact_text("q=p%40ss+word%2F1"), "q=<redacted>");
/// assert_eq!(redact_text("b64 cEBzcyB3b3JkLzE="), "b64 <redacted>");
/// ```
pub fn register_secret(value: &str) {
    if value.chars().count() < MIN_SECRET_CHARS {
        return;
    }
    remember(secret_forms(value));
}

/// Remember HTTP Basic credentials: the password with its forms ([`register_secret`]) and the
/// `Authorization: Basic` value, base64 of `user:password`. Call it wherever Basic auth is built.
///
/// ```
/// use citadel_itest_core::config::{redact_text, register_basic_credentials};
/// register_basic_credentials("itest", "echo-secret-1");
/// // base64("itest:echo-secret-1")
/// assert_eq!(
///     redact_text("authorization: Basic aXRlc3Q6ZWNoby1zZWNyZXQtMQ=="),
///     "authorization: Basic <redacted>"
/// );
/// ```
pub fn register_basic_credentials(user: &str, password: &str) {
    register_secret(password);
    if password.chars().count() < MIN_SECRET_CHARS {
        return;
    }
    let pair = format!("{user}:{password}");
    remember(base64_forms(pair.as_bytes()));
}

/// Remember the secrets a URL carries: its userinfo password (as written and decoded, and the
/// Basic header value a client derives from the userinfo) and the values of secret-looking query
/// parameters ([`is_secret_key`]). Returns an error naming the first one shorter than
/// [`MIN_SECRET_CHARS`] (registered values are kept; that one is not).
pub fn register_url_secrets(url: &url::Url) -> Result<(), SecretError> {
    let mut short = None;
    if let Some(raw) = url.password() {
        let password = percent_decode(raw);
        let user = percent_decode(url.username());
        if password.chars().count() < MIN_SECRET_CHARS {
            short.get_or_insert_with(|| "the URL's password".to_string());
        } else {
            register_basic_credentials(&user, &password);
            register_secret(raw);
        }
    }
    for (key, value) in url.query_pairs() {
        if is_secret_key(&key) && !value.is_empty() {
            if value.chars().count() < MIN_SECRET_CHARS {
                short.get_or_insert_with(|| format!("the URL's `{key}` parameter"));
            } else {
                register_secret(&value);
            }
        }
    }
    match short {
        Some(origin) => Err(SecretError::TooShort(origin)),
        None => Ok(()),
    }
}

/// Every form of `value` to redact (the value itself first).
fn secret_forms(value: &str) -> Vec<String> {
    let mut forms = vec![value.to_string()];
    forms.extend(base64_forms(value.as_bytes()));
    let encoded = percent_encode_all(value);
    forms.push(encoded.to_ascii_lowercase());
    forms.push(encoded);
    forms.push(url::form_urlencoded::byte_serialize(value.as_bytes()).collect());
    if let Ok(mut u) = url::Url::parse("http://h/") {
        if u.set_password(Some(value)).is_ok() {
            if let Some(p) = u.password() {
                forms.push(p.to_string());
            }
        }
        u.set_query(Some(value));
        if let Some(q) = u.query() {
            forms.push(q.to_string());
        }
        if let Ok(mut segments) = u.path_segments_mut() {
            segments.clear().push(value);
        }
        forms.push(u.path().trim_start_matches('/').to_string());
    }
    if let Ok(json) = serde_json::to_string(value) {
        forms.push(json[1..json.len() - 1].to_string());
    }
    forms.sort();
    forms.dedup();
    forms
}

use crate::encode::base64;

/// base64 of `bytes`: standard and URL-safe alphabets, padded and unpadded.
fn base64_forms(bytes: &[u8]) -> Vec<String> {
    let std = base64(bytes);
    let url_safe = std.replace('+', "-").replace('/', "_");
    let mut forms = vec![
        std.trim_end_matches('=').to_string(),
        url_safe.trim_end_matches('=').to_string(),
        url_safe,
        std,
    ];
    forms.dedup();
    forms
}

/// Every byte outside RFC 3986's unreserved set as `%XX`.
fn percent_encode_all(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `%XX` sequences decoded (invalid ones kept as written), lossy UTF-8.
fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
