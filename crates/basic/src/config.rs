//! The `basic:` section: which targets to reach and what their health endpoints must answer.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use citadel_itest_core::config::{
    Secret, Validate, Validator, redact_text, redact_url, register_basic_credentials,
    register_url_secrets,
};
use serde::{Deserialize, Serialize};

/// Default number of timed health requests per target.
pub const DEFAULT_SAMPLES: u32 = 5;

/// Largest accepted `samples`.
pub const MAX_SAMPLES: u32 = 1000;

/// The `basic:` section.
///
/// ```yaml
/// basic:
///   targets:
///     - name: gateway
///       url: http://127.0.0.1:58080
///       health_path: /health
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BasicConfig {
    /// The services to reach, each producing a connectivity check and, with a `health_path`,
    /// a health check.
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
}

impl BasicConfig {
    /// An empty section; add targets with [`BasicConfig::target`].
    pub fn new() -> Self {
        BasicConfig::default()
    }

    /// Add a target.
    pub fn target(mut self, target: TargetConfig) -> Self {
        self.targets.push(target);
        self
    }
}

/// One service to check, e.g. the gateway or the database.
///
/// ```
/// use std::time::Duration;
/// use citadel_itest_basic::{Auth, TargetConfig};
/// use citadel_itest_core::config::Secret;
///
/// let gateway = TargetConfig::new("gateway", "http://127.0.0.1:58080")
///     .health_path("/health")
///     .timeout(Duration::from_secs(5))
///     .expect_status(200)
///     .samples(10)
///     .auth(Auth::bearer(Secret::env("GATEWAY_TOKEN")));
/// assert_eq!(gateway.health_path.as_deref(), Some("/health"));
/// ```
///
/// Debug and Serialize show the URL without its password, as every report must.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TargetConfig {
    /// Name used in check ids (`basic.<name>.connectivity`): `[a-z0-9_-]+`, unique.
    pub name: String,
    /// Where the service listens: `http://`, `https://`, or any scheme with host and port
    /// (`postgres://127.0.0.1:5432`, `tcp://127.0.0.1:6334`). http, https and postgres have
    /// default ports; other schemes need an explicit one. A password in it is never printed.
    #[serde(serialize_with = "serialize_redacted")]
    pub url: String,
    /// Path of the health endpoint (http and https only), e.g. `/health`. Without it, only
    /// connectivity is checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_path: Option<String>,
    /// Budget of each check of this target, all attempts included; default: `run.timeout`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Status the health endpoint must return; default: any 2xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<u16>,
    /// Assertion on the health endpoint's JSON body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_json: Option<JsonExpectation>,
    /// Health requests whose latency is measured (1..=1000).
    #[serde(default = "default_samples")]
    pub samples: u32,
    /// Credentials sent with health requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
}

fn serialize_redacted<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact(url))
}

impl fmt::Debug for TargetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TargetConfig")
            .field("name", &self.name)
            .field("url", &redact(&self.url))
            .field("health_path", &self.health_path)
            .field("timeout", &self.timeout)
            .field("expect_status", &self.expect_status)
            .field("expect_json", &self.expect_json)
            .field("samples", &self.samples)
            .field("auth", &self.auth)
            .finish()
    }
}

fn default_samples() -> u32 {
    DEFAULT_SAMPLES
}

impl TargetConfig {
    /// A target with only a name and a URL (connectivity only).
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        TargetConfig {
            name: name.into(),
            url: url.into(),
            health_path: None,
            timeout: None,
            expect_status: None,
            expect_json: None,
            samples: DEFAULT_SAMPLES,
            auth: None,
        }
    }

    /// Also check the health endpoint at `path`.
    pub fn health_path(mut self, path: impl Into<String>) -> Self {
        self.health_path = Some(path.into());
        self
    }

    /// Budget of each check of this target.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Require this exact status from the health endpoint.
    pub fn expect_status(mut self, status: u16) -> Self {
        self.expect_status = Some(status);
        self
    }

    /// Require the health body's value at `pointer` to equal `equals`.
    pub fn expect_json(mut self, pointer: impl Into<String>, equals: serde_json::Value) -> Self {
        self.expect_json = Some(JsonExpectation {
            pointer: pointer.into(),
            equals,
        });
        self
    }

    /// Number of timed health requests.
    pub fn samples(mut self, samples: u32) -> Self {
        self.samples = samples;
        self
    }

    /// Send these credentials with health requests.
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = Some(auth);
        self
    }
}

/// An assertion on a JSON body: the value at `pointer` (RFC 6901, e.g. `/status`) equals
/// `equals`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonExpectation {
    /// JSON pointer into the body: `""` for the whole body, otherwise starting with `/`.
    pub pointer: String,
    /// The value expected there.
    pub equals: serde_json::Value,
}

/// Credentials for a health endpoint. Secrets are never printed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Auth {
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
    /// `Authorization: Basic ...`.
    Basic {
        /// User name (must not contain `:`).
        username: String,
        /// Password.
        password: Secret,
    },
}

impl Auth {
    /// A bearer token.
    pub fn bearer(token: Secret) -> Self {
        Auth::Bearer(token)
    }

    /// HTTP basic credentials.
    pub fn basic(username: impl Into<String>, password: Secret) -> Self {
        Auth::Basic {
            username: username.into(),
            password,
        }
    }
}

/// Where a target listens, derived from its URL.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) url: url::Url,
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &redact(self.url.as_str()))
            .field("host", &self.host)
            .field("port", &self.port)
            .finish()
    }
}

impl Endpoint {
    /// Parse and check a target URL: it needs a host and a port (explicit or the scheme's
    /// default).
    pub(crate) fn parse(raw: &str) -> Result<Endpoint, EndpointError> {
        let url = url::Url::parse(raw).map_err(|e| EndpointError::Parse(redact(raw), e))?;
        Endpoint::from_url(url)
    }

    fn from_url(url: url::Url) -> Result<Endpoint, EndpointError> {
        let host = match url.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(EndpointError::NoHost(redact(url.as_str()))),
        };
        let port = match url
            .port_or_known_default()
            .or_else(|| default_port(url.scheme()))
        {
            Some(p) => p,
            None => {
                return Err(EndpointError::NoPort {
                    url: redact(url.as_str()),
                    scheme: url.scheme().to_string(),
                });
            }
        };
        Ok(Endpoint { url, host, port })
    }

    /// http or https: a health path makes sense.
    pub(crate) fn is_http(&self) -> bool {
        matches!(self.url.scheme(), "http" | "https")
    }

    /// A TLS handshake is part of connecting.
    pub(crate) fn is_tls(&self) -> bool {
        self.url.scheme() == "https"
    }

    /// The URL of the health endpoint.
    pub(crate) fn join(&self, path: &str) -> Result<url::Url, EndpointError> {
        if !path.starts_with('/') {
            return Err(EndpointError::RelativePath(path.to_string()));
        }
        let url = self
            .url
            .join(path)
            .map_err(|e| EndpointError::Parse(path.to_string(), e))?;
        // Tokens in the query (`?token=...`) are redacted wherever a server echoes them.
        let _ = register_url_secrets(&url);
        Ok(url)
    }
}

/// A URL fit for a message: password and secret parameters removed, even when it does not parse.
pub(crate) fn redact(raw: &str) -> String {
    redact_text(&redact_url(raw))
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "postgres" | "postgresql" => Some(5432),
        _ => None,
    }
}

/// A target URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EndpointError {
    #[error("invalid URL `{0}`: {1}")]
    Parse(String, #[source] url::ParseError),
    #[error("URL `{0}` has no host")]
    NoHost(String),
    #[error("URL `{url}` has no port and scheme `{scheme}` has no default port")]
    NoPort { url: String, scheme: String },
    #[error("path `{0}` must start with `/`")]
    RelativePath(String),
}

impl Validate for BasicConfig {
    fn validate(&self, v: &mut Validator<'_>) {
        if self.targets.is_empty() {
            v.error("targets", "list at least one target");
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, target) in self.targets.iter().enumerate() {
            let mut tv = v.at(&format!("targets[{i}]"));
            if let Some(first) = seen.get(target.name.as_str()) {
                tv.error(
                    "name",
                    format!(
                        "duplicate target name `{}` (also targets[{first}])",
                        target.name
                    ),
                );
            } else {
                seen.insert(&target.name, i);
            }
            target.validate(&mut tv);
        }
    }
}

impl Validate for TargetConfig {
    fn validate(&self, v: &mut Validator<'_>) {
        v.name("name", &self.name);
        let endpoint = match Endpoint::parse(&self.url) {
            Ok(e) => {
                v.port("url", e.port);
                if let Err(short) = register_url_secrets(&e.url) {
                    v.error("url", short.to_string());
                }
                Some(e)
            }
            Err(e) => {
                v.error("url", e.to_string());
                None
            }
        };
        if let Some(path) = &self.health_path {
            match &endpoint {
                Some(e) if !e.is_http() => v.error(
                    "health_path",
                    format!("needs an http or https URL, not `{}`", e.url.scheme()),
                ),
                Some(e) => match e.join(path) {
                    Err(err) => v.error("health_path", err.to_string()),
                    Ok(url) => {
                        if let Err(short) = register_url_secrets(&url) {
                            v.error("health_path", short.to_string());
                        }
                    }
                },
                None if !path.starts_with('/') => v.error(
                    "health_path",
                    format!(
                        "path `{}` must start with `/`",
                        citadel_itest_core::config::shorten(path)
                    ),
                ),
                None => {}
            }
        } else {
            for (key, set) in [
                ("expect_status", self.expect_status.is_some()),
                ("expect_json", self.expect_json.is_some()),
                ("auth", self.auth.is_some()),
            ] {
                if set {
                    v.error(key, "only used with health_path, which is not set");
                }
            }
        }
        if let Some(t) = self.timeout {
            v.duration_range(
                "timeout",
                t,
                Duration::from_millis(1),
                citadel_itest_core::config::MAX_TIMEOUT,
            );
        }
        if let Some(status) = self.expect_status {
            if !(100..=599).contains(&status) {
                v.error(
                    "expect_status",
                    format!("{status} is not an HTTP status (100..=599)"),
                );
            }
        }
        if let Some(json) = &self.expect_json {
            if !json.pointer.is_empty() && !json.pointer.starts_with('/') {
                v.error(
                    "expect_json.pointer",
                    format!(
                        "`{}` is not a JSON pointer: it must be empty or start with `/`",
                        json.pointer
                    ),
                );
            }
        }
        if !(1..=MAX_SAMPLES).contains(&self.samples) {
            v.error(
                "samples",
                format!("{} is out of range 1..={MAX_SAMPLES}", self.samples),
            );
        }
        if let (Some(_), Some(e)) = (&self.auth, &endpoint) {
            if !e.url.username().is_empty() || e.url.password().is_some() {
                v.error(
                    "auth",
                    "the URL already carries credentials: give them in one place",
                );
            }
        }
        match &self.auth {
            None => {}
            Some(Auth::Bearer(token)) => {
                v.at("auth").secret("bearer", token);
            }
            Some(Auth::Basic { username, password }) => {
                let mut av = v.at("auth.basic");
                if username.is_empty() || username.contains(':') {
                    av.error("username", "must be non-empty and must not contain `:`");
                }
                if let Some(password) = av.secret("password", password) {
                    register_basic_credentials(username, password.expose());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_default_ports() {
        let e = Endpoint::parse("http://127.0.0.1").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.is_tls()),
            ("127.0.0.1", 80, false)
        );
        let e = Endpoint::parse("https://localhost/api").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.is_tls()),
            ("localhost", 443, true)
        );
        let e = Endpoint::parse("postgres://app:pw@127.0.0.1/db").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.is_http()),
            ("127.0.0.1", 5432, false)
        );
        let e = Endpoint::parse("postgresql://127.0.0.1:6543").unwrap();
        assert_eq!(e.port, 6543);
        let e = Endpoint::parse("tcp://[::1]:6334").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 6334));
    }

    #[test]
    fn endpoints_without_host_or_port_are_refused() {
        assert_eq!(
            Endpoint::parse("tcp://127.0.0.1").unwrap_err().to_string(),
            "URL `tcp://127.0.0.1` has no port and scheme `tcp` has no default port"
        );
        assert!(matches!(
            Endpoint::parse("tcp:nohost"),
            Err(EndpointError::NoHost(_))
        ));
        assert!(matches!(
            Endpoint::parse("unix:///run/x.sock"),
            Err(EndpointError::NoHost(_))
        ));
        let err = Endpoint::parse("postgres://u:hunter22@127.0.0.1:x/db")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter22"), "{err}");
    }

    #[test]
    fn health_url_replaces_the_path() {
        let e = Endpoint::parse("http://127.0.0.1:8080/api/").unwrap();
        assert_eq!(
            e.join("/health").unwrap().as_str(),
            "http://127.0.0.1:8080/health"
        );
        assert_eq!(
            e.join("/ready?full=1").unwrap().as_str(),
            "http://127.0.0.1:8080/ready?full=1"
        );
        assert!(e.join("health").is_err());
    }

    #[test]
    fn yaml_shapes_deserialize() {
        let t: TargetConfig = serde_json::from_value(serde_json::json!({
            "name": "gateway",
            "url": "http://127.0.0.1:58080",
            "health_path": "/health",
            "timeout": "5s",
            "expect_json": { "pointer": "/status", "equals": "ok" },
            "auth": { "basic": { "username": "u", "password": { "env": "PW" } } }
        }))
        .unwrap();
        assert_eq!(t.timeout, Some(Duration::from_secs(5)));
        assert_eq!(t.samples, DEFAULT_SAMPLES);
        assert_eq!(t.auth, Some(Auth::basic("u", Secret::env("PW"))));
        let bad = serde_json::from_value::<TargetConfig>(serde_json::json!({
            "name": "g", "url": "http://127.0.0.1", "healthpath": "/x"
        }));
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("unknown field `healthpath`")
        );
        let bad = serde_json::from_value::<Auth>(serde_json::json!({
            "basic": { "username": "u", "password": "p", "realm": "x" }
        }));
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("unknown field `realm`")
        );
    }
}
