//! `cross_service.flows`: the services flows reach, the built-in flows and custom ones.

use std::collections::HashSet;
use std::time::Duration;

use citadel_itest_core::config::{MAX_TIMEOUT, Secret, Validate, Validator, redact_url};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Capture, Flow, HttpStep, QdrantStep, SqlExpect, SqlStep, Step};

/// Default `poll_interval` of SQL steps.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Default score tolerance of Qdrant searches.
pub const DEFAULT_SCORE_TOLERANCE: f64 = 1e-3;

/// `cross_service.flows`.
///
/// ```yaml
/// flows:
///   postgres: { host: 127.0.0.1, port: 55432, user: citadel, password: { file: pw }, database: citadel_requests }
///   qdrant: { url: http://127.0.0.1:56333, api_key: { file: key } }
///   model_to_vector: { model: text-embedding-small, dimension: 384 }
///   model_to_database: { model: llama-3-8b, within: 10s }
///   custom: []
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FlowsConfig {
    /// Budget of each flow check; default the gateway's `timeout`, else `run.timeout`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// The PostgreSQL database SQL steps query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<FlowPostgres>,
    /// The Qdrant REST API Qdrant steps use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qdrant: Option<FlowQdrant>,
    /// Built-in flow: embeddings through the gateway, stored in and found again in Qdrant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_to_vector: Option<ModelToVectorConfig>,
    /// Built-in flow: a chat completion through the gateway is recorded in PostgreSQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_to_database: Option<ModelToDatabaseConfig>,
    /// Flows of your own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom: Vec<Flow>,
}

impl FlowsConfig {
    /// Nothing configured yet.
    pub fn new() -> Self {
        FlowsConfig::default()
    }

    /// SQL steps query this database.
    pub fn postgres(mut self, pg: FlowPostgres) -> Self {
        self.postgres = Some(pg);
        self
    }

    /// Qdrant steps use this server.
    pub fn qdrant(mut self, q: FlowQdrant) -> Self {
        self.qdrant = Some(q);
        self
    }

    /// Enable the model-to-vector flow.
    pub fn model_to_vector(mut self, c: ModelToVectorConfig) -> Self {
        self.model_to_vector = Some(c);
        self
    }

    /// Enable the model-to-database flow.
    pub fn model_to_database(mut self, c: ModelToDatabaseConfig) -> Self {
        self.model_to_database = Some(c);
        self
    }

    /// Add a flow of your own.
    pub fn flow(mut self, flow: Flow) -> Self {
        self.custom.push(flow);
        self
    }

    /// Budget of each flow check.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// Every flow to run: the built-in ones enabled, then `custom`. `default_model` names the
    /// chat model when `model_to_database.model` is unset.
    pub fn all_flows(&self, default_chat_model: Option<&str>) -> Vec<Flow> {
        let mut flows = Vec::new();
        if let Some(c) = &self.model_to_vector {
            flows.push(c.flow());
        }
        if let Some(c) = &self.model_to_database {
            flows.push(c.flow(default_chat_model.unwrap_or("")));
        }
        flows.extend(self.custom.iter().cloned());
        flows
    }
}

/// `flows.postgres`: a `dsn` secret, or the parts.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FlowPostgres {
    /// `postgres://user:password@host:port/database`, as a secret. Excludes the parts below.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsn: Option<Secret>,
    /// Host; default `127.0.0.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Port; default 5432.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Role (required without `dsn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The role's password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Database; default the user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

impl FlowPostgres {
    /// A database given by DSN.
    pub fn dsn(dsn: Secret) -> Self {
        FlowPostgres {
            dsn: Some(dsn),
            ..FlowPostgres::default()
        }
    }
}

/// `flows.qdrant`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FlowQdrant {
    /// REST base URL: `http://127.0.0.1:6333`.
    pub url: String,
    /// Sent as `api-key`, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,
}

impl FlowQdrant {
    /// Qdrant's REST API at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        FlowQdrant {
            url: url.into(),
            api_key: None,
        }
    }

    /// With an API key.
    pub fn api_key(mut self, key: Secret) -> Self {
        self.api_key = Some(key);
        self
    }
}

/// `flows.model_to_vector`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ModelToVectorConfig {
    /// The embeddings model asked through the gateway.
    pub model: String,
    /// The dimension of the platform's collections: the temporary collection has it, and the
    /// embedding must have it too.
    pub dimension: u64,
    /// Largest accepted `|score - 1|` of the search with the same vector (cosine).
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
}

fn default_tolerance() -> f64 {
    DEFAULT_SCORE_TOLERANCE
}

impl ModelToVectorConfig {
    /// Embeddings of `model` into collections of `dimension`.
    pub fn new(model: impl Into<String>, dimension: u64) -> Self {
        ModelToVectorConfig {
            model: model.into(),
            dimension,
            tolerance: DEFAULT_SCORE_TOLERANCE,
        }
    }

    /// The flow `model_to_vector`: embed, create a temporary collection, upsert, search
    /// (rank 1, score 1 within tolerance), read the payload back.
    pub fn flow(&self) -> Flow {
        Flow::new("model_to_vector")
            .http(
                "embed",
                HttpStep::post("/v1/embeddings")
                    .header("x-request-id", "${request_id}")
                    .json(json!({"model": self.model, "input": "citadel-itest flow ${request_id}"}))
                    .capture("vector", Capture::pointer("/data/0/embedding")),
            )
            .qdrant(
                "create_collection",
                QdrantStep::create_collection("collection", self.dimension),
            )
            .qdrant(
                "upsert",
                QdrantStep::upsert(
                    "${collection}",
                    1,
                    "${vector}",
                    Some(json!({"request_id": "${request_id}"})),
                ),
            )
            .qdrant(
                "search",
                QdrantStep::Search {
                    collection: "${collection}".into(),
                    vector: "${vector}".into(),
                    id: 1.into(),
                    rank: 1,
                    score: Some(1.0),
                    tolerance: self.tolerance,
                },
            )
            .qdrant(
                "payload",
                QdrantStep::payload_equals("${collection}", 1, "request_id", "${request_id}"),
            )
    }
}

/// The default query of `model_to_database`: the testkit model fixture's request log.
pub const DEFAULT_REQUEST_LOG_QUERY: &str =
    "SELECT request_id FROM fixture_request_log WHERE request_id = $1";

/// `flows.model_to_database`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ModelToDatabaseConfig {
    /// The chat model; default the gateway's first chat model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The query finding the record; `$1` is the request's `x-request-id`.
    #[serde(default = "default_query")]
    pub query: String,
    /// What it must return (default one row).
    #[serde(default = "default_expect")]
    pub expect: SqlExpect,
    /// The record must appear within this.
    #[serde(default = "default_within", with = "humantime_serde")]
    pub within: Duration,
}

fn default_query() -> String {
    DEFAULT_REQUEST_LOG_QUERY.to_string()
}
fn default_expect() -> SqlExpect {
    SqlExpect::rows(1)
}
fn default_within() -> Duration {
    Duration::from_secs(10)
}

impl Default for ModelToDatabaseConfig {
    fn default() -> Self {
        ModelToDatabaseConfig {
            model: None,
            query: default_query(),
            expect: default_expect(),
            within: default_within(),
        }
    }
}

impl ModelToDatabaseConfig {
    /// The flow `model_to_database`: a chat completion with a fresh `x-request-id`, then the
    /// query polled until it returns what `expect` says, within `within`.
    pub fn flow(&self, default_model: &str) -> Flow {
        let model = self.model.as_deref().unwrap_or(default_model);
        Flow::new("model_to_database")
            .http(
                "chat",
                HttpStep::post("/v1/chat/completions")
                    .header("x-request-id", "${request_id}")
                    .json(json!({
                        "model": model,
                        "max_tokens": 4,
                        "messages": [{"role": "user", "content": "citadel-itest flow"}],
                    })),
            )
            .sql(
                "recorded",
                SqlStep::new(self.query.clone())
                    .param("${request_id}")
                    .expect(self.expect.clone())
                    .poll_until(self.within),
            )
    }
}

impl Validate for FlowsConfig {
    fn validate(&self, v: &mut Validator<'_>) {
        if let Some(t) = self.timeout {
            v.duration_range("timeout", t, Duration::from_millis(1), MAX_TIMEOUT);
        }
        if let Some(pg) = &self.postgres {
            let mut pv = v.at("postgres");
            match &pg.dsn {
                Some(dsn) => {
                    if pg.host.is_some()
                        || pg.port.is_some()
                        || pg.user.is_some()
                        || pg.password.is_some()
                        || pg.database.is_some()
                    {
                        pv.error(
                            "dsn",
                            "give either `dsn` or host/port/user/password/database",
                        );
                    }
                    pv.secret("dsn", dsn);
                }
                None => {
                    if pg.user.as_deref().is_none_or(|u| u.trim().is_empty()) {
                        pv.error("user", "required without `dsn`");
                    }
                    if let Some(p) = pg.port {
                        pv.port("port", p);
                    }
                    if let Some(pw) = &pg.password {
                        pv.secret("password", pw);
                    }
                }
            }
        }
        if let Some(q) = &self.qdrant {
            let mut qv = v.at("qdrant");
            check_http_url(&mut qv, "url", &q.url);
            if let Some(k) = &q.api_key {
                qv.secret("api_key", k);
            }
        }
        if let Some(m) = &self.model_to_vector {
            let mut mv = v.at("model_to_vector");
            if m.model.trim().is_empty() {
                mv.error("model", "must not be empty");
            }
            mv.range("dimension", m.dimension, 1, 65_536);
            if !(m.tolerance >= 0.0 && m.tolerance < 1.0) {
                mv.error("tolerance", format!("{} is not in [0, 1)", m.tolerance));
            }
            if self.qdrant.is_none() {
                mv.error("", "needs `flows.qdrant`");
            }
        }
        if let Some(m) = &self.model_to_database {
            let mut mv = v.at("model_to_database");
            if m.query.trim().is_empty() {
                mv.error("query", "must not be empty");
            }
            check_expect(&mut mv, "expect", &m.expect);
            mv.duration_range("within", m.within, Duration::from_millis(1), MAX_TIMEOUT);
            if self.postgres.is_none() {
                mv.error("", "needs `flows.postgres`");
            }
        }
        let mut names = HashSet::new();
        for builtin in ["model_to_vector", "model_to_database"] {
            names.insert(builtin.to_string());
        }
        for (i, flow) in self.custom.iter().enumerate() {
            let mut fv = v.at(&format!("custom[{i}]"));
            if fv.name("name", &flow.name) && !names.insert(flow.name.clone()) {
                fv.error(
                    "name",
                    format!(
                        "duplicate flow `{}` (built-in names are reserved)",
                        flow.name
                    ),
                );
            }
            if flow.steps.is_empty() {
                fv.error("steps", "list at least one step");
            }
            let mut step_names = HashSet::new();
            for (j, step) in flow.steps.iter().enumerate() {
                let mut sv = fv.at(&format!("steps[{j}]"));
                validate_step(&mut sv, step, self);
                if !step_names.insert(step.name.as_str()) {
                    sv.error("name", format!("duplicate step `{}`", step.name));
                }
            }
        }
    }
}

fn check_http_url(v: &mut Validator<'_>, key: &str, raw: &str) {
    match url::Url::parse(raw) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        Ok(u) => v.error(
            key,
            format!(
                "`{}` must be an http or https URL with a host (scheme `{}`)",
                redact_url(raw),
                u.scheme()
            ),
        ),
        Err(e) => v.error(key, format!("invalid URL `{}`: {e}", redact_url(raw))),
    }
}

fn check_expect(v: &mut Validator<'_>, key: &str, e: &SqlExpect) {
    if e.rows.is_none() && e.value.is_none() {
        v.error(key, "give `rows`, `value` or both");
    }
}

fn validate_step(v: &mut Validator<'_>, step: &Step, flows: &FlowsConfig) {
    if step.name.trim().is_empty() {
        v.error("name", "must not be empty");
    }
    let kinds = [
        step.http.is_some(),
        step.sql.is_some(),
        step.qdrant.is_some(),
    ]
    .iter()
    .filter(|k| **k)
    .count();
    if kinds != 1 {
        v.error("", "give exactly one of `http`, `sql`, `qdrant`");
    }
    if let Some(h) = &step.http {
        if reqwest::Method::from_bytes(h.method.as_bytes()).is_err() {
            v.error(
                "http.method",
                format!("`{}` is not an HTTP method", h.method),
            );
        }
        if !h.url.starts_with('/') {
            check_http_url(v, "http.url", &h.url);
        }
        for name in h.headers.keys() {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                v.error(
                    &format!("http.headers.{name}"),
                    format!("`{name}` is not a header name"),
                );
            }
        }
        if !(100..=599).contains(&h.expect_status) {
            v.error(
                "http.expect_status",
                format!("{} is not an HTTP status", h.expect_status),
            );
        }
        for (var, c) in &h.capture {
            let key = format!("http.capture.{var}");
            match (&c.pointer, &c.header) {
                (Some(p), None) => {
                    if !p.is_empty() && !p.starts_with('/') {
                        v.error(
                            &format!("{key}.pointer"),
                            format!("`{p}` is not a JSON pointer (starts with `/`)"),
                        );
                    }
                }
                (None, Some(_)) => {}
                _ => v.error(&key, "give exactly one of `pointer`, `header`"),
            }
        }
    }
    if let Some(s) = &step.sql {
        if s.query.trim().is_empty() {
            v.error("sql.query", "must not be empty");
        }
        check_expect(v, "sql.expect", &s.expect);
        if let Some(p) = s.poll_until {
            v.duration_range("sql.poll_until", p, Duration::from_millis(1), MAX_TIMEOUT);
        }
        v.duration_range(
            "sql.poll_interval",
            s.poll_interval,
            Duration::from_millis(1),
            MAX_TIMEOUT,
        );
        if flows.postgres.is_none() {
            v.error("sql", "needs `flows.postgres`");
        }
    }
    if let Some(q) = &step.qdrant {
        if flows.qdrant.is_none() {
            v.error("qdrant", "needs `flows.qdrant`");
        }
        match q {
            QdrantStep::CreateCollection {
                var,
                size,
                distance,
            } => {
                if var.trim().is_empty() {
                    v.error("qdrant.create_collection.var", "must not be empty");
                }
                v.range("qdrant.create_collection.size", *size, 1, 65_536);
                if !["Cosine", "Dot", "Euclid", "Manhattan"].contains(&distance.as_str()) {
                    v.error(
                        "qdrant.create_collection.distance",
                        format!("`{distance}` is not Cosine, Dot, Euclid or Manhattan"),
                    );
                }
            }
            QdrantStep::Search {
                rank, tolerance, ..
            } => {
                v.range("qdrant.search.rank", *rank, 1, 1000);
                if tolerance.is_nan() || *tolerance < 0.0 {
                    v.error("qdrant.search.tolerance", "must be 0 or more");
                }
            }
            _ => {}
        }
    }
}

/// A JSON value for messages (short).
pub(crate) fn show(v: &Value) -> String {
    citadel_itest_core::http::excerpt(v.to_string().as_bytes())
}
