//! The `cross_service:` section: the gateway, the models it serves and the backends behind it.

use std::collections::HashMap;
use std::time::Duration;

use citadel_itest_core::config::{MAX_TIMEOUT, Secret, Validate, Validator, redact_url};
use serde::{Deserialize, Serialize};

/// Default `request_timeout`: each request through the gateway.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `load_balancing.requests`.
pub const DEFAULT_LB_REQUESTS: u32 = 300;
/// Largest accepted `load_balancing.requests` and `performance.samples`.
pub const MAX_REQUESTS: u32 = 100_000;
/// Default `load_balancing.concurrency`.
pub const DEFAULT_LB_CONCURRENCY: u32 = 8;
/// Default `load_balancing.significance`: the false-failure rate of one run on a healthy,
/// correctly declared gateway.
pub const DEFAULT_SIGNIFICANCE: f64 = 0.01;
/// Default `performance.samples`.
pub const DEFAULT_SAMPLES: u32 = 50;
/// Default `error_handling.oversized_bytes`: 2 MiB, over the 1 MiB body limit the local
/// stack's gateway and backends use.
pub const DEFAULT_OVERSIZED_BYTES: u64 = 2 * 1024 * 1024;
/// Largest accepted `error_handling.oversized_bytes`.
pub const MAX_OVERSIZED_BYTES: u64 = 256 * 1024 * 1024;

/// The `cross_service:` section.
///
/// ```yaml
/// cross_service:
///   gateway:
///     url: http://127.0.0.1:58080/v1
///     models: [{ id: llama-3-8b }, { id: text-embedding-small, kind: embeddings }]
///     backends:
///       - { id: model-a, url: http://127.0.0.1:58101/v1 }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CrossServiceConfig {
    /// The gateway in front of the model backends.
    pub gateway: GatewayConfig,
    /// Flows that follow one request across services (gateway, PostgreSQL, Qdrant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flows: Option<crate::flow::FlowsConfig>,
}

impl CrossServiceConfig {
    /// A section with this gateway.
    pub fn new(gateway: GatewayConfig) -> Self {
        CrossServiceConfig {
            gateway,
            flows: None,
        }
    }

    /// Run these flows too.
    pub fn flows(mut self, flows: crate::flow::FlowsConfig) -> Self {
        self.flows = Some(flows);
        self
    }
}

/// `cross_service.gateway`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// Name in check ids (`cross_service.<name>.<check>`), default `gateway`.
    #[serde(default = "default_name")]
    pub name: String,
    /// The gateway's OpenAI base URL, `/v1` included: `http://127.0.0.1:58080/v1`.
    pub url: String,
    /// Sent as `Authorization: Bearer ...` with every request, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,
    /// Budget of each check; default `run.timeout`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Bound of each request (head and body; each stream has its own bounds below).
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// The response header naming the backend that served a request.
    #[serde(default = "default_backend_header")]
    pub backend_header: String,
    /// The models the gateway must serve (`/v1/models` lists exactly these).
    pub models: Vec<ModelConfig>,
    /// `/v1/models` may list models beyond `models` without failing the catalogue.
    #[serde(default)]
    pub allow_extra_models: bool,
    /// The backends behind the gateway: which models each hosts, its weight, its direct URL.
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
    /// Path routes: requests under a path prefix go to given backends.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// The round-trip and streaming checks.
    #[serde(default)]
    pub round_trip: RoundTripConfig,
    /// The load-balancing (and stickiness) checks.
    #[serde(default)]
    pub load_balancing: LoadBalancingConfig,
    /// The error-handling check.
    #[serde(default)]
    pub error_handling: ErrorHandlingConfig,
    /// The performance check.
    #[serde(default)]
    pub performance: PerformanceConfig,
    /// The failover check: one backend made unavailable on purpose. Without it the check is
    /// skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverConfig>,
}

fn default_name() -> String {
    "gateway".to_string()
}
fn default_request_timeout() -> Duration {
    DEFAULT_REQUEST_TIMEOUT
}
fn default_backend_header() -> String {
    "x-backend-id".to_string()
}

impl GatewayConfig {
    /// A gateway at `url` (the OpenAI base URL, `/v1` included) serving `models` (chat).
    pub fn new<I, S>(url: impl Into<String>, models: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        GatewayConfig {
            name: default_name(),
            url: url.into(),
            api_key: None,
            timeout: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            backend_header: default_backend_header(),
            models: models.into_iter().map(ModelConfig::chat).collect(),
            allow_extra_models: false,
            backends: Vec::new(),
            routes: Vec::new(),
            round_trip: RoundTripConfig::default(),
            load_balancing: LoadBalancingConfig::default(),
            error_handling: ErrorHandlingConfig::default(),
            performance: PerformanceConfig::default(),
            failover: None,
        }
    }

    /// Also serve this model.
    pub fn model(mut self, model: ModelConfig) -> Self {
        self.models.push(model);
        self
    }

    /// Add a backend.
    pub fn backend(mut self, backend: BackendConfig) -> Self {
        self.backends.push(backend);
        self
    }

    /// Add a path route.
    pub fn route(mut self, route: RouteConfig) -> Self {
        self.routes.push(route);
        self
    }

    /// Budget of each check.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The models that answer chat completions.
    pub fn chat_models(&self) -> impl Iterator<Item = &ModelConfig> {
        self.models.iter().filter(|m| m.kind == ModelKind::Chat)
    }

    /// The backends hosting `model`: those listing it, and those listing no model at all.
    pub fn hosts_of(&self, model: &str) -> Vec<&BackendConfig> {
        self.backends
            .iter()
            .filter(|b| b.models.is_empty() || b.models.iter().any(|m| m == model))
            .collect()
    }
}

/// What a model answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ModelKind {
    /// `POST /v1/chat/completions` (the default).
    #[default]
    Chat,
    /// `POST /v1/embeddings`.
    Embeddings,
}

/// One model the gateway serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ModelConfig {
    /// The model id, as requests name it and `/v1/models` lists it.
    pub id: String,
    /// `chat` (default) or `embeddings`.
    #[serde(default)]
    pub kind: ModelKind,
}

impl ModelConfig {
    /// A chat model.
    pub fn chat(id: impl Into<String>) -> Self {
        ModelConfig {
            id: id.into(),
            kind: ModelKind::Chat,
        }
    }

    /// An embeddings model.
    pub fn embeddings(id: impl Into<String>) -> Self {
        ModelConfig {
            id: id.into(),
            kind: ModelKind::Embeddings,
        }
    }
}

/// One backend behind the gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BackendConfig {
    /// Its id, as the `backend_header` names it.
    pub id: String,
    /// Its own OpenAI base URL (`/v1` included), for the gateway-overhead measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The models it hosts; empty = every configured model.
    #[serde(default)]
    pub models: Vec<String>,
    /// Its load-balancing weight (the gateway's `weight=`), default 1.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

impl BackendConfig {
    /// A backend hosting every model, weight 1, no direct URL.
    pub fn new(id: impl Into<String>) -> Self {
        BackendConfig {
            id: id.into(),
            url: None,
            models: Vec::new(),
            weight: 1,
        }
    }

    /// Its direct base URL.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// Its weight.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// The models it hosts.
    pub fn models<I, S>(mut self, models: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.models = models.into_iter().map(Into::into).collect();
        self
    }
}

/// A path route: requests for `model` under the gateway's origin + `path` (an OpenAI base
/// path, `/v1` included) must be served by one of `backends`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RouteConfig {
    /// The base path, e.g. `/pinned/model-a/v1`.
    pub path: String,
    /// The model to request there.
    pub model: String,
    /// The backends allowed to serve it.
    pub backends: Vec<String>,
}

impl RouteConfig {
    /// A route.
    pub fn new<I, S>(path: impl Into<String>, model: impl Into<String>, backends: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        RouteConfig {
            path: path.into(),
            model: model.into(),
            backends: backends.into_iter().map(Into::into).collect(),
        }
    }
}

/// `round_trip`: the non-streaming and the streaming round trip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RoundTripConfig {
    /// The chat model to ask; default the first chat model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The user message.
    pub prompt: String,
    /// `max_tokens` of the request.
    pub max_tokens: u32,
    /// Time to first token must stay below this (streams).
    #[serde(with = "humantime_serde")]
    pub max_ttft: Duration,
    /// The whole exchange must finish below this.
    #[serde(with = "humantime_serde")]
    pub max_total: Duration,
    /// A stream with no event for this long is stalled.
    #[serde(with = "humantime_serde")]
    pub stall: Duration,
}

impl Default for RoundTripConfig {
    fn default() -> Self {
        RoundTripConfig {
            model: None,
            prompt: "Say hello to the integration test.".to_string(),
            max_tokens: 16,
            max_ttft: Duration::from_secs(2),
            max_total: Duration::from_secs(5),
            stall: Duration::from_secs(5),
        }
    }
}

/// `load_balancing`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct LoadBalancingConfig {
    /// Requests sent (K).
    pub requests: u32,
    /// Requests in flight at once.
    pub concurrency: u32,
    /// The chi-square test's significance level (alpha): a healthy gateway fails one run in
    /// 1/alpha.
    pub significance: f64,
    /// The chat model to ask; default the first chat model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Same key -> same backend, when the gateway is sticky.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sticky: Option<StickyConfig>,
}

impl Default for LoadBalancingConfig {
    fn default() -> Self {
        LoadBalancingConfig {
            requests: DEFAULT_LB_REQUESTS,
            concurrency: DEFAULT_LB_CONCURRENCY,
            significance: DEFAULT_SIGNIFICANCE,
            model: None,
            sticky: None,
        }
    }
}

/// `load_balancing.sticky`: the header whose value pins a client to a backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct StickyConfig {
    /// The header carrying the key, e.g. `x-session-id`.
    pub header: String,
    /// Distinct keys tried.
    #[serde(default = "default_keys")]
    pub keys: u32,
    /// Requests per key.
    #[serde(default = "default_keys")]
    pub requests_per_key: u32,
}

fn default_keys() -> u32 {
    5
}

impl StickyConfig {
    /// Stickiness on `header`, 5 keys of 5 requests.
    pub fn new(header: impl Into<String>) -> Self {
        StickyConfig {
            header: header.into(),
            keys: 5,
            requests_per_key: 5,
        }
    }
}

/// `error_handling`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ErrorHandlingConfig {
    /// Size of the oversized request body (bytes); must be over the gateway's limit.
    pub oversized_bytes: u64,
}

impl Default for ErrorHandlingConfig {
    fn default() -> Self {
        ErrorHandlingConfig {
            oversized_bytes: DEFAULT_OVERSIZED_BYTES,
        }
    }
}

/// `performance`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PerformanceConfig {
    /// Timed requests through the gateway (and as many direct ones, interleaved).
    pub samples: u32,
    /// The gateway's median overhead must stay below this, when set.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub max_overhead: Option<Duration>,
}

impl Default for PerformanceConfig {
    fn default() -> Self {
        PerformanceConfig {
            samples: DEFAULT_SAMPLES,
            max_overhead: None,
        }
    }
}

/// `failover`: make one backend unavailable, keep serving, recover.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FailoverConfig {
    /// Must be `true`: confirms the backend may be made unavailable (a testkit fixture or a
    /// throwaway deployment).
    #[serde(default)]
    pub disposable: bool,
    /// The backend to make unavailable (one of `backends`).
    pub backend: String,
    /// How to make it unavailable and bring it back; without it the check is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<FailoverAction>,
    /// Requests sent through the gateway while the backend is down.
    #[serde(default = "default_failover_requests")]
    pub requests: u32,
    /// Largest share of those requests that may fail (0..1).
    #[serde(default = "default_error_budget")]
    pub error_budget: f64,
    /// After it is brought back, the backend must serve through the gateway again within this.
    #[serde(default = "default_recovery_time", with = "humantime_serde")]
    pub recovery_time: Duration,
    /// Bound of the stop and start actions.
    #[serde(default = "default_action_timeout", with = "humantime_serde")]
    pub action_timeout: Duration,
}

fn default_failover_requests() -> u32 {
    60
}
fn default_error_budget() -> f64 {
    0.05
}
fn default_recovery_time() -> Duration {
    Duration::from_secs(30)
}
fn default_action_timeout() -> Duration {
    Duration::from_secs(30)
}

impl FailoverConfig {
    /// Take `backend` down with `action` (marked disposable).
    pub fn new(backend: impl Into<String>, action: FailoverAction) -> Self {
        FailoverConfig {
            disposable: true,
            backend: backend.into(),
            action: Some(action),
            requests: default_failover_requests(),
            error_budget: default_error_budget(),
            recovery_time: default_recovery_time(),
            action_timeout: default_action_timeout(),
        }
    }
}

/// How the failover check makes its backend unavailable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum FailoverAction {
    /// The model fixture's runtime fault API on the backend's `url`: `POST /fixture/faults`
    /// `{"unavailable": true}` (every `/v1` request and `/health` answer 503), then
    /// `DELETE /fixture/faults`.
    FixtureFaults,
    /// Programs (no shell) that stop and start the backend and exit 0.
    Command {
        /// e.g. `[systemctl, stop, model-b]`.
        stop: Vec<String>,
        /// e.g. `[systemctl, start, model-b]`.
        start: Vec<String>,
    },
}

fn check_url(v: &mut Validator<'_>, key: &str, raw: &str) {
    match url::Url::parse(raw) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            if let Some(port) = u.port() {
                v.port(key, port);
            }
        }
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

fn check_header(v: &mut Validator<'_>, key: &str, name: &str) {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        v.error(
            key,
            format!("`{name}` is not a header name (letters, digits, `-`, `_`)"),
        );
    }
}

impl Validate for CrossServiceConfig {
    fn validate(&self, v: &mut Validator<'_>) {
        self.gateway.validate(&mut v.at("gateway"));
        if let Some(flows) = &self.flows {
            flows.validate(&mut v.at("flows"));
            if let Some(m) = &flows.model_to_database {
                let model = m.model.as_deref();
                match model {
                    Some(id)
                        if !self
                            .gateway
                            .models
                            .iter()
                            .any(|c| c.id == id && c.kind == ModelKind::Chat) =>
                    {
                        v.error(
                            "flows.model_to_database.model",
                            format!("`{id}` is not a chat model of `gateway.models`"),
                        )
                    }
                    None if self.gateway.chat_models().next().is_none() => v.error(
                        "flows.model_to_database.model",
                        "no chat model in `gateway.models`: name one",
                    ),
                    _ => {}
                }
            }
        }
    }
}

impl Validate for GatewayConfig {
    fn validate(&self, v: &mut Validator<'_>) {
        v.name("name", &self.name);
        check_url(v, "url", &self.url);
        if let Some(key) = &self.api_key {
            v.secret("api_key", key);
        }
        if let Some(t) = self.timeout {
            v.duration_range("timeout", t, Duration::from_millis(1), MAX_TIMEOUT);
        }
        v.duration_range(
            "request_timeout",
            self.request_timeout,
            Duration::from_millis(1),
            MAX_TIMEOUT,
        );
        check_header(v, "backend_header", &self.backend_header);
        if self.models.is_empty() {
            v.error("models", "list at least one model");
        }
        let mut models: HashMap<&str, usize> = HashMap::new();
        for (i, m) in self.models.iter().enumerate() {
            if m.id.trim().is_empty() {
                v.error(&format!("models[{i}].id"), "must not be empty");
            } else if let Some(first) = models.insert(&m.id, i) {
                v.error(
                    &format!("models[{i}].id"),
                    format!("duplicate model `{}` (also models[{first}])", m.id),
                );
            }
        }
        let known_model = |m: &str| models.contains_key(m);
        let mut backends: HashMap<&str, usize> = HashMap::new();
        for (i, b) in self.backends.iter().enumerate() {
            let mut bv = v.at(&format!("backends[{i}]"));
            if b.id.trim().is_empty() {
                bv.error("id", "must not be empty");
            } else if let Some(first) = backends.insert(&b.id, i) {
                bv.error(
                    "id",
                    format!("duplicate backend `{}` (also backends[{first}])", b.id),
                );
            }
            if let Some(url) = &b.url {
                check_url(&mut bv, "url", url);
            }
            if b.weight == 0 {
                bv.error("weight", "must be at least 1 (leave a backend out instead)");
            }
            for (j, m) in b.models.iter().enumerate() {
                if !known_model(m) {
                    bv.error(
                        &format!("models[{j}]"),
                        format!("`{m}` is not one of `models`"),
                    );
                }
            }
        }
        if !self.backends.is_empty() {
            for m in &self.models {
                if self.hosts_of(&m.id).is_empty() {
                    v.error("backends", format!("no backend hosts model `{}`", m.id));
                }
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            let mut rv = v.at(&format!("routes[{i}]"));
            if !r.path.starts_with('/') {
                rv.error("path", format!("`{}` must start with `/`", r.path));
            }
            if !known_model(&r.model) {
                rv.error("model", format!("`{}` is not one of `models`", r.model));
            }
            if r.backends.is_empty() {
                rv.error("backends", "list at least one backend");
            }
            for (j, b) in r.backends.iter().enumerate() {
                if !backends.contains_key(b.as_str()) {
                    rv.error(
                        &format!("backends[{j}]"),
                        format!("`{b}` is not one of `backends`"),
                    );
                }
            }
        }
        let chat = |key: &str, model: &Option<String>, v: &mut Validator<'_>| match model {
            Some(m) => {
                if !self
                    .models
                    .iter()
                    .any(|c| c.id == *m && c.kind == ModelKind::Chat)
                {
                    v.error(key, format!("`{m}` is not a chat model of `models`"));
                }
            }
            None => {
                if self.chat_models().next().is_none() && !self.models.is_empty() {
                    v.error(key, "no chat model in `models`: name one");
                }
            }
        };
        let rt = &self.round_trip;
        chat("round_trip.model", &rt.model, v);
        v.range("round_trip.max_tokens", rt.max_tokens, 1, 4096);
        for (key, d) in [
            ("round_trip.max_ttft", rt.max_ttft),
            ("round_trip.max_total", rt.max_total),
            ("round_trip.stall", rt.stall),
        ] {
            v.duration_range(key, d, Duration::from_millis(1), MAX_TIMEOUT);
        }
        let lb = &self.load_balancing;
        chat("load_balancing.model", &lb.model, v);
        v.range("load_balancing.requests", lb.requests, 1, MAX_REQUESTS);
        v.range("load_balancing.concurrency", lb.concurrency, 1, 256);
        if !(lb.significance > 0.0 && lb.significance < 1.0) {
            v.error(
                "load_balancing.significance",
                format!("{} is not in (0, 1)", lb.significance),
            );
        }
        if let Some(s) = &lb.sticky {
            check_header(v, "load_balancing.sticky.header", &s.header);
            v.range("load_balancing.sticky.keys", s.keys, 1, 1000);
            v.range(
                "load_balancing.sticky.requests_per_key",
                s.requests_per_key,
                2,
                1000,
            );
        }
        v.range(
            "error_handling.oversized_bytes",
            self.error_handling.oversized_bytes,
            1,
            MAX_OVERSIZED_BYTES,
        );
        v.range(
            "performance.samples",
            self.performance.samples,
            1,
            MAX_REQUESTS,
        );
        if let Some(d) = self.performance.max_overhead {
            v.duration_range(
                "performance.max_overhead",
                d,
                Duration::from_micros(1),
                MAX_TIMEOUT,
            );
        }
        if let Some(f) = &self.failover {
            f.validate_against(&self.backends, &mut v.at("failover"));
        }
    }
}

impl FailoverConfig {
    fn validate_against(&self, backends: &[BackendConfig], fv: &mut Validator<'_>) {
        if !self.disposable {
            fv.error(
                "disposable",
                "the failover check makes a backend unavailable: set `disposable: true` only \
                 for a testkit or throwaway deployment",
            );
        }
        match backends.iter().find(|b| b.id == self.backend) {
            None => fv.error(
                "backend",
                format!("`{}` is not one of `backends`", self.backend),
            ),
            Some(b) => {
                if self.action == Some(FailoverAction::FixtureFaults) && b.url.is_none() {
                    fv.error(
                        "action",
                        format!("fixture_faults needs backend `{}` to have a `url`", b.id),
                    );
                }
            }
        }
        if let Some(FailoverAction::Command { stop, start }) = &self.action {
            for (key, argv) in [
                ("action.command.stop", stop),
                ("action.command.start", start),
            ] {
                if argv.first().is_none_or(|p| p.trim().is_empty()) {
                    fv.error(key, "give the program and its arguments (no shell)");
                }
            }
        }
        fv.range("requests", self.requests, 1, MAX_REQUESTS);
        if !(0.0..1.0).contains(&self.error_budget) {
            fv.error(
                "error_budget",
                format!("{} is not in [0, 1)", self.error_budget),
            );
        }
        fv.duration_range(
            "recovery_time",
            self.recovery_time,
            Duration::from_millis(1),
            MAX_TIMEOUT,
        );
        fv.duration_range(
            "action_timeout",
            self.action_timeout,
            Duration::from_millis(1),
            MAX_TIMEOUT,
        );
    }
}
