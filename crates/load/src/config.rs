//! The `load:` section: scenarios, each a request template, a model (closed or open),
//! thresholds, stream goodput criteria and the resources of the system under test.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use citadel_itest_core::config::{MAX_TIMEOUT, Secret, Validate, Validator};
use serde::{Deserialize, Serialize};

/// Default per-request timeout.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `open.max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 100;
/// Default `open.max_lag`: an iteration further behind its schedule than this is dropped.
pub const DEFAULT_MAX_LAG: Duration = Duration::from_secs(5);
/// Default `resources.interval`.
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Default `stream_stall`: a stream with no event for this long has stalled.
pub const DEFAULT_STREAM_STALL: Duration = Duration::from_secs(30);
/// Largest accepted connection count (closed `vus`, open `max_connections`).
pub const MAX_CONNECTIONS: usize = 100_000;
/// Longest accepted scenario (all stages together).
pub const MAX_SCENARIO_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Largest accepted arrival rate, per second.
pub const MAX_RATE: f64 = 10_000_000.0;

/// The `load:` section.
///
/// ```yaml
/// load:
///   scenarios:
///     - name: chat_stream
///       request:
///         method: POST
///         url: http://127.0.0.1:58080/v1/chat/completions
///         headers: { content-type: application/json }
///         body: '{"model":"llama-3-8b","stream":true,"messages":[{"role":"user","content":"{{prompt}}"}]}'
///         prompts: { file: prompts.jsonl, order: random, seed: 7 }
///       stream: true
///       open: { rate: 20, duration: 5s }
///       thresholds: ["http_req_duration p95 < 2s", "ttft p95 < 500ms", "error_rate < 1%"]
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LoadConfig {
    /// The scenarios; each becomes one check `load.<name>` (category `load`).
    #[serde(default)]
    pub scenarios: Vec<ScenarioConfig>,
}

impl LoadConfig {
    /// A section with these scenarios.
    pub fn new(scenarios: impl IntoIterator<Item = ScenarioConfig>) -> Self {
        LoadConfig {
            scenarios: scenarios.into_iter().collect(),
        }
    }
}

/// One load scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ScenarioConfig {
    /// Name in the check id `load.<name>`.
    pub name: String,
    /// What each request sends.
    pub request: RequestConfig,
    /// `http1` (keep-alive, one request at a time per connection; default) or `http2` (one
    /// connection per virtual user, multiplexing when the open model needs it).
    #[serde(default)]
    pub protocol: Protocol,
    /// The answers are OpenAI SSE streams (`"stream": true` chat or completions): time TTFT,
    /// inter-token latency and tokens, and count a stream without `[DONE]` as failed.
    #[serde(default)]
    pub stream: bool,
    /// Closed model: N virtual users, each sending its next request when the last one ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<ClosedModel>,
    /// Open model: requests arrive on a schedule whatever the server does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open: Option<OpenModel>,
    /// Bound of each request, head to the end of the body or stream.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// A stream with no event for this long has stalled (a failed request).
    #[serde(default = "default_stream_stall", with = "humantime_serde")]
    pub stream_stall: Duration,
    /// Thresholds such as `http_req_duration p95 < 200ms`, `rps > 50`, `error_rate < 1%`.
    /// Absent: the defaults from `performance_targets` (see docs/load-testing.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<Vec<String>>,
    /// Stop the scenario as soon as a threshold fails (checked once a second).
    #[serde(default)]
    pub abort_on_fail: bool,
    /// What a stream must meet to count toward goodput.
    #[serde(default)]
    pub goodput: GoodputConfig,
    /// The system under test's process, sampled for CPU and memory during the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesConfig>,
}

fn default_request_timeout() -> Duration {
    DEFAULT_REQUEST_TIMEOUT
}

fn default_stream_stall() -> Duration {
    DEFAULT_STREAM_STALL
}

impl ScenarioConfig {
    /// A scenario sending `GET url` with the given model.
    pub fn new(name: impl Into<String>, url: impl Into<String>, model: LoadModel) -> Self {
        let (closed, open) = match model {
            LoadModel::Closed(c) => (Some(c), None),
            LoadModel::Open(o) => (None, Some(o)),
        };
        ScenarioConfig {
            name: name.into(),
            request: RequestConfig::get(url),
            protocol: Protocol::default(),
            stream: false,
            closed,
            open,
            timeout: DEFAULT_REQUEST_TIMEOUT,
            stream_stall: DEFAULT_STREAM_STALL,
            thresholds: None,
            abort_on_fail: false,
            goodput: GoodputConfig::default(),
            resources: None,
        }
    }

    /// Send this request.
    pub fn request(mut self, request: RequestConfig) -> Self {
        self.request = request;
        self
    }

    /// Use this protocol.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Answers are SSE streams.
    pub fn stream(mut self, stream: bool) -> Self {
        self.stream = stream;
        self
    }

    /// Bound of each request.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Bound of the silence inside a stream.
    pub fn stream_stall(mut self, stall: Duration) -> Self {
        self.stream_stall = stall;
        self
    }

    /// These thresholds instead of the defaults.
    pub fn thresholds<I, S>(mut self, thresholds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.thresholds = Some(thresholds.into_iter().map(Into::into).collect());
        self
    }

    /// Stop as soon as a threshold fails.
    pub fn abort_on_fail(mut self, abort: bool) -> Self {
        self.abort_on_fail = abort;
        self
    }

    /// Goodput criteria.
    pub fn goodput(mut self, goodput: GoodputConfig) -> Self {
        self.goodput = goodput;
        self
    }

    /// Sample this process's resources.
    pub fn resources(mut self, resources: ResourcesConfig) -> Self {
        self.resources = Some(resources);
        self
    }

    /// The model, when exactly one of `closed` and `open` is set.
    pub fn model(&self) -> Option<LoadModel> {
        match (&self.closed, &self.open) {
            (Some(c), None) => Some(LoadModel::Closed(c.clone())),
            (None, Some(o)) => Some(LoadModel::Open(o.clone())),
            _ => None,
        }
    }
}

/// The closed or the open model.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum LoadModel {
    /// N virtual users.
    Closed(ClosedModel),
    /// An arrival schedule.
    Open(OpenModel),
}

/// `http1` or `http2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Protocol {
    /// HTTP/1.1 with keep-alive.
    #[default]
    Http1,
    /// HTTP/2 (prior knowledge on `http://`).
    Http2,
}

/// `request:`: the template of every request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RequestConfig {
    /// HTTP method, default `GET` (`POST` when a body or prompts are given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Absolute `http://` URL.
    pub url: String,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Sent as `Authorization: Bearer ...` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,
    /// The body. With `prompts`, `{{prompt}}` in it is replaced by each prompt (as a JSON
    /// string's content, escaped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Prompts from a JSON-lines file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompts: Option<PromptsConfig>,
}

impl RequestConfig {
    /// `GET url`.
    pub fn get(url: impl Into<String>) -> Self {
        RequestConfig {
            method: None,
            url: url.into(),
            headers: BTreeMap::new(),
            api_key: None,
            body: None,
            prompts: None,
        }
    }

    /// `POST url` with this body.
    pub fn post(url: impl Into<String>, body: impl Into<String>) -> Self {
        RequestConfig {
            method: Some("POST".into()),
            body: Some(body.into()),
            ..RequestConfig::get(url)
        }
    }

    /// Add a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Send a bearer token.
    pub fn api_key(mut self, key: Secret) -> Self {
        self.api_key = Some(key);
        self
    }

    /// Draw prompts from a file.
    pub fn prompts(mut self, prompts: PromptsConfig) -> Self {
        self.prompts = Some(prompts);
        self
    }

    /// The method to send.
    pub fn method(&self) -> &str {
        match &self.method {
            Some(m) => m,
            None if self.body.is_some() || self.prompts.is_some() => "POST",
            None => "GET",
        }
    }
}

/// `request.prompts`: one JSON value per line.
///
/// A line is a JSON string (the prompt) or an object with a string field `field` (default
/// `prompt`). With a `body` template, `{{prompt}}` is replaced by the prompt; without one,
/// each line's object is sent as the body as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PromptsConfig {
    /// The JSON-lines file.
    pub file: PathBuf,
    /// `sequential` (default, wrapping around) or `random`.
    #[serde(default)]
    pub order: PromptOrder,
    /// Seed of the `random` order: the same seed gives the same sequence.
    #[serde(default)]
    pub seed: u64,
    /// Field of an object line holding the prompt.
    #[serde(default = "default_prompt_field")]
    pub field: String,
}

fn default_prompt_field() -> String {
    "prompt".into()
}

impl PromptsConfig {
    /// Prompts from `file`, in order.
    pub fn new(file: impl Into<PathBuf>) -> Self {
        PromptsConfig {
            file: file.into(),
            order: PromptOrder::Sequential,
            seed: 0,
            field: default_prompt_field(),
        }
    }

    /// Random order with this seed.
    pub fn random(mut self, seed: u64) -> Self {
        self.order = PromptOrder::Random;
        self.seed = seed;
        self
    }
}

/// The order prompts are used in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum PromptOrder {
    /// File order, wrapping around.
    #[default]
    Sequential,
    /// Drawn at random (with replacement) from a seeded generator.
    Random,
}

/// `closed:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ClosedModel {
    /// Virtual users (each one connection).
    pub vus: usize,
    /// How long the scenario runs.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// Stop after this many requests in all (whichever of this and `duration` comes first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u64>,
    /// Pause of each user between the end of one request and the next.
    #[serde(default, with = "humantime_serde")]
    pub think_time: Duration,
}

impl ClosedModel {
    /// `vus` users for `duration`.
    pub fn new(vus: usize, duration: Duration) -> Self {
        ClosedModel {
            vus,
            duration,
            iterations: None,
            think_time: Duration::ZERO,
        }
    }

    /// Stop after this many requests.
    pub fn iterations(mut self, n: u64) -> Self {
        self.iterations = Some(n);
        self
    }

    /// Pause between requests.
    pub fn think_time(mut self, d: Duration) -> Self {
        self.think_time = d;
        self
    }
}

/// `open:`: a constant `rate` for `duration`, or `stages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct OpenModel {
    /// Requests per second (with `duration`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// How long (with `rate`).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub duration: Option<Duration>,
    /// Stages such as `10/s for 30s`: the rate ramps linearly from the previous stage's
    /// target (0 before the first) to this one over the stage, as k6's ramping arrival rate
    /// does. Write a stage twice (`50/s for 0s`, `50/s for 2m`) to jump and hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stages: Option<Vec<String>>,
    /// `constant` spacing (default) or `poisson` arrivals.
    #[serde(default)]
    pub arrivals: Arrivals,
    /// Seed of the Poisson arrivals.
    #[serde(default)]
    pub seed: u64,
    /// Connections the engine may open.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// An iteration further than this behind its intended send time when a connection
    /// frees up is dropped (counted, never sent).
    #[serde(default = "default_max_lag", with = "humantime_serde")]
    pub max_lag: Duration,
}

fn default_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}

fn default_max_lag() -> Duration {
    DEFAULT_MAX_LAG
}

impl OpenModel {
    /// `rate` requests per second for `duration`.
    pub fn constant(rate: f64, duration: Duration) -> Self {
        OpenModel {
            rate: Some(rate),
            duration: Some(duration),
            stages: None,
            arrivals: Arrivals::Constant,
            seed: 0,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_lag: DEFAULT_MAX_LAG,
        }
    }

    /// Ramping stages (`"10/s for 30s"`).
    pub fn stages<I, S>(stages: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        OpenModel {
            rate: None,
            duration: None,
            stages: Some(stages.into_iter().map(Into::into).collect()),
            ..OpenModel::constant(0.0, Duration::ZERO)
        }
    }

    /// Poisson arrivals with this seed.
    pub fn poisson(mut self, seed: u64) -> Self {
        self.arrivals = Arrivals::Poisson;
        self.seed = seed;
        self
    }

    /// At most this many connections.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Drop iterations further behind than this.
    pub fn max_lag(mut self, d: Duration) -> Self {
        self.max_lag = d;
        self
    }

    /// The stages: parsed `stages`, or one constant stage from `rate` and `duration`.
    pub fn parsed_stages(&self) -> Result<Vec<Stage>, String> {
        match (&self.stages, self.rate, self.duration) {
            (Some(stages), None, None) => {
                if stages.is_empty() {
                    return Err("`stages` is empty".into());
                }
                let mut out = Vec::with_capacity(stages.len());
                let mut from = 0.0;
                for (i, s) in stages.iter().enumerate() {
                    let stage = Stage::parse(s, from).map_err(|e| format!("stages[{i}]: {e}"))?;
                    from = stage.to;
                    out.push(stage);
                }
                Ok(out)
            }
            (None, Some(rate), Some(duration)) => Ok(vec![Stage {
                from: rate,
                to: rate,
                duration,
            }]),
            (Some(_), _, _) => {
                Err("give either `stages` or `rate` with `duration`, not both".into())
            }
            (None, _, _) => Err("give `rate` with `duration`, or `stages`".into()),
        }
    }
}

/// One stage of the open model: the rate goes linearly from `from` to `to` per second over
/// `duration`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Stage {
    /// Rate at the start, per second.
    pub from: f64,
    /// Rate at the end, per second.
    pub to: f64,
    /// Length.
    pub duration: Duration,
}

impl Stage {
    /// A stage from `from` to `to` per second over `duration`.
    pub fn new(from: f64, to: f64, duration: Duration) -> Self {
        Stage { from, to, duration }
    }

    /// Parse `50/s for 2m` (also `50 for 2m`, `3000/m for 1m`), ramping from `from`.
    pub fn parse(text: &str, from: f64) -> Result<Stage, String> {
        let (rate, duration) = text
            .split_once(" for ")
            .ok_or_else(|| format!("`{text}` is not `RATE/s for DURATION`"))?;
        let rate = rate.trim();
        let (number, per) = match rate.split_once('/') {
            Some((n, unit)) => {
                let per = match unit.trim() {
                    "s" => 1.0,
                    "m" => 60.0,
                    "h" => 3600.0,
                    other => return Err(format!("unknown rate unit `/{other}` in `{text}`")),
                };
                (n.trim(), per)
            }
            None => (rate, 1.0),
        };
        let value: f64 = number
            .parse()
            .map_err(|_| format!("`{number}` is not a number in `{text}`"))?;
        let to = value / per;
        if !to.is_finite() || !(0.0..=MAX_RATE).contains(&to) {
            return Err(format!("rate `{rate}` is out of range (0 to {MAX_RATE}/s)"));
        }
        let duration = humantime::parse_duration(duration.trim())
            .map_err(|e| format!("`{}` is not a duration ({e})", duration.trim()))?;
        Ok(Stage { from, to, duration })
    }
}

/// Spacing of open-model arrivals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Arrivals {
    /// Evenly spaced at the current rate.
    #[default]
    Constant,
    /// A Poisson process at the current rate (exponential gaps), seeded.
    Poisson,
}

/// `goodput:`: a stream counts toward goodput when it succeeded and meets every bound given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct GoodputConfig {
    /// Time to first token at most this.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttft: Option<Duration>,
    /// Time per output token at most this.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub tpot: Option<Duration>,
    /// End-to-end latency at most this.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub e2e: Option<Duration>,
}

impl GoodputConfig {
    /// Whether a successful stream with these timings meets every bound.
    pub fn admits(&self, s: &crate::sample::StreamSample) -> bool {
        let within = |bound: Option<Duration>, value: Option<Duration>| match bound {
            None => true,
            Some(b) => value.is_some_and(|v| v <= b),
        };
        s.end == "done"
            && within(self.ttft, s.ttft)
            && within(self.tpot, s.tpot().or(s.ttft.map(|_| Duration::ZERO)))
            && within(self.e2e, Some(s.e2e))
    }
}

/// `resources:`: which process to sample. Exactly one of `pid`, `pid_file`, `metrics_url`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ResourcesConfig {
    /// A local process id (read from `/proc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// A file holding a local process id (read when the scenario starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_file: Option<PathBuf>,
    /// A Prometheus metrics endpoint exposing `process_cpu_seconds_total` and
    /// `process_resident_memory_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_url: Option<String>,
    /// How often to sample.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
}

fn default_interval() -> Duration {
    DEFAULT_SAMPLE_INTERVAL
}

impl ResourcesConfig {
    /// Sample a local process.
    pub fn pid(pid: u32) -> Self {
        ResourcesConfig {
            pid: Some(pid),
            pid_file: None,
            metrics_url: None,
            interval: DEFAULT_SAMPLE_INTERVAL,
        }
    }

    /// Sample a Prometheus metrics endpoint.
    pub fn metrics_url(url: impl Into<String>) -> Self {
        ResourcesConfig {
            pid: None,
            metrics_url: Some(url.into()),
            ..ResourcesConfig::pid(0)
        }
    }

    /// Sample this often.
    pub fn interval(mut self, d: Duration) -> Self {
        self.interval = d;
        self
    }
}

impl Validate for LoadConfig {
    fn validate(&self, v: &mut Validator<'_>) {
        let mut seen = std::collections::BTreeSet::new();
        for (i, s) in self.scenarios.iter().enumerate() {
            let mut v = v.at(&format!("scenarios[{i}]"));
            if !seen.insert(s.name.as_str()) {
                v.error("name", format!("scenario name `{}` is used twice", s.name));
            }
            s.validate(&mut v);
        }
    }
}

impl Validate for ScenarioConfig {
    fn validate(&self, v: &mut Validator<'_>) {
        v.name("name", &self.name);
        self.request.validate(&mut v.at("request"));
        v.duration_range(
            "timeout",
            self.timeout,
            Duration::from_millis(1),
            MAX_TIMEOUT,
        );
        v.duration_range(
            "stream_stall",
            self.stream_stall,
            Duration::from_millis(1),
            MAX_TIMEOUT,
        );
        match (&self.closed, &self.open) {
            (None, None) => v.error("", "give a model: `closed` or `open`"),
            (Some(_), Some(_)) => v.error("", "give one model, `closed` or `open`, not both"),
            (Some(c), None) => {
                let mut v = v.at("closed");
                v.range("vus", c.vus, 1, MAX_CONNECTIONS);
                v.duration_range(
                    "duration",
                    c.duration,
                    Duration::from_millis(1),
                    MAX_SCENARIO_DURATION,
                );
                if c.iterations == Some(0) {
                    v.error("iterations", "must be at least 1");
                }
                v.duration_range("think_time", c.think_time, Duration::ZERO, MAX_TIMEOUT);
            }
            (None, Some(o)) => {
                let mut v = v.at("open");
                match o.parsed_stages() {
                    Err(e) => v.error("stages", e),
                    Ok(stages) => {
                        let total: Duration = stages.iter().map(|s| s.duration).sum();
                        if total.is_zero() || total > MAX_SCENARIO_DURATION {
                            v.error(
                                if o.stages.is_some() {
                                    "stages"
                                } else {
                                    "duration"
                                },
                                format!(
                                    "the schedule lasts {}: give more than 0s and at most {}",
                                    humantime::format_duration(total),
                                    humantime::format_duration(MAX_SCENARIO_DURATION)
                                ),
                            );
                        }
                        if stages.iter().all(|s| s.from == 0.0 && s.to == 0.0) {
                            v.error(
                                if o.stages.is_some() { "stages" } else { "rate" },
                                "the rate is 0 throughout: nothing would be sent",
                            );
                        }
                    }
                }
                v.range("max_connections", o.max_connections, 1, MAX_CONNECTIONS);
                v.duration_range("max_lag", o.max_lag, Duration::ZERO, MAX_TIMEOUT);
            }
        }
        if let Some(thresholds) = &self.thresholds {
            for (i, t) in thresholds.iter().enumerate() {
                if let Err(e) = crate::slo::Threshold::parse(t) {
                    v.error(&format!("thresholds[{i}]"), e.to_string());
                }
            }
        }
        if let Some(r) = &self.resources {
            let mut v = v.at("resources");
            let given = [
                r.pid.is_some(),
                r.pid_file.is_some(),
                r.metrics_url.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if given != 1 {
                v.error("", "give exactly one of `pid`, `pid_file`, `metrics_url`");
            }
            if r.pid == Some(0) {
                v.error("pid", "0 is not a process id");
            }
            if let Some(url) = &r.metrics_url {
                v.url("metrics_url", url);
            }
            v.duration_range(
                "interval",
                r.interval,
                Duration::from_millis(10),
                Duration::from_secs(3600),
            );
        }
    }
}

impl Validate for RequestConfig {
    fn validate(&self, v: &mut Validator<'_>) {
        if let Some(url) = v.url("url", &self.url) {
            if url.scheme() != "http" {
                v.error(
                    "url",
                    format!(
                        "scheme `{}` is not supported by the load engine: use http:// (TLS \
                         termination in front of the target is measured by the checks, not here)",
                        url.scheme()
                    ),
                );
            }
        }
        let method = self.method();
        if http::Method::from_bytes(method.as_bytes()).is_err() {
            v.error("method", format!("`{method}` is not an HTTP method"));
        }
        for (name, value) in &self.headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                v.error(&format!("headers.{name}"), "not a valid header name");
            } else if http::HeaderValue::from_str(value).is_err() {
                v.error(&format!("headers.{name}"), "not a valid header value");
            }
        }
        if let Some(key) = &self.api_key {
            v.secret("api_key", key);
        }
        if let Some(p) = &self.prompts {
            if p.field.is_empty() {
                v.error("prompts.field", "must not be empty");
            } else if let Err(e) = crate::bodies::render(self) {
                // Read now, before anything connects: a missing or bad file is a config error.
                v.error("prompts.file", e.to_string());
            }
            if let Some(body) = &self.body {
                if !body.contains("{{prompt}}") {
                    v.error(
                        "body",
                        "with `prompts`, the body must contain `{{prompt}}` (or leave `body` out \
                         to send each line as the body)",
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_parse_and_ramp_from_the_previous_target() {
        let open = OpenModel::stages(["10/s for 30s", "3000/m for 2m", "0 for 10s"]);
        let stages = open.parsed_stages().unwrap();
        assert_eq!(stages[0], Stage::new(0.0, 10.0, Duration::from_secs(30)));
        assert_eq!(stages[1], Stage::new(10.0, 50.0, Duration::from_secs(120)));
        assert_eq!(stages[2], Stage::new(50.0, 0.0, Duration::from_secs(10)));
        for bad in [
            "10/s",
            "x/s for 1s",
            "10/d for 1s",
            "10/s for soon",
            "-1/s for 1s",
        ] {
            let e = OpenModel::stages([bad]).parsed_stages().unwrap_err();
            assert!(e.starts_with("stages[0]: "), "{bad}: {e}");
        }
    }

    #[test]
    fn constant_rate_is_one_flat_stage() {
        let o = OpenModel::constant(200.0, Duration::from_secs(10));
        assert_eq!(
            o.parsed_stages().unwrap(),
            vec![Stage::new(200.0, 200.0, Duration::from_secs(10))]
        );
    }

    #[test]
    fn method_defaults_follow_the_body() {
        assert_eq!(RequestConfig::get("http://127.0.0.1:1/").method(), "GET");
        assert_eq!(
            RequestConfig::post("http://127.0.0.1:1/", "{}").method(),
            "POST"
        );
    }
}
