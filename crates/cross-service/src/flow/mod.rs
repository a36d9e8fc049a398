//! Flows: one request followed across services.
//!
//! A [`Flow`] is a named list of [`Step`]s run in order. A step is an HTTP request (through the
//! gateway, or to an absolute URL), an SQL query against the configured PostgreSQL, or a Qdrant
//! operation or assertion over its REST API. HTTP steps capture values from the answer (by JSON
//! pointer or header name) into variables; later steps use them as `${name}`.
//!
//! Substitution: a string that is exactly `${name}` becomes the captured value with its JSON
//! type (an embedding stays an array of numbers); `${name}` inside a longer string is replaced
//! by the value's text. SQL steps never splice: their `params` are substituted, then bound as
//! query parameters (`$1`, `$2`, ...). Two variables exist from the start: `run_id` and
//! `request_id` (fresh for each run of the flow).
//!
//! ```
//! use citadel_itest_cross_service::flow::{Capture, Flow, HttpStep, SqlExpect, SqlStep};
//! use std::time::Duration;
//!
//! let flow = Flow::new("chat_is_logged")
//!     .http(
//!         "chat",
//!         HttpStep::post("/v1/chat/completions")
//!             .header("x-request-id", "${request_id}")
//!             .json(serde_json::json!({"model": "llama-3-8b", "max_tokens": 4,
//!                 "messages": [{"role": "user", "content": "hi"}]}))
//!             .capture("backend", Capture::header("x-backend-id")),
//!     )
//!     .sql(
//!         "logged",
//!         SqlStep::new("SELECT backend_id FROM fixture_request_log WHERE request_id = $1")
//!             .param("${request_id}")
//!             .expect(SqlExpect::value("${backend}"))
//!             .poll_until(Duration::from_secs(5)),
//!     );
//! assert_eq!(flow.steps.len(), 2);
//! ```

mod check;
mod config;
mod steps;
mod vars;

pub use check::FlowCheck;
pub use config::{
    DEFAULT_POLL_INTERVAL, DEFAULT_REQUEST_LOG_QUERY, DEFAULT_SCORE_TOLERANCE, FlowPostgres,
    FlowQdrant, FlowsConfig, ModelToDatabaseConfig, ModelToVectorConfig,
};

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A named list of steps, run in order; the first step that fails ends the flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Flow {
    /// Name in the check id `cross_service.flows.<name>`.
    pub name: String,
    /// The steps.
    pub steps: Vec<Step>,
}

impl Flow {
    /// A flow without steps yet.
    pub fn new(name: impl Into<String>) -> Self {
        Flow {
            name: name.into(),
            steps: Vec::new(),
        }
    }

    /// Append a step.
    pub fn step(mut self, step: Step) -> Self {
        self.steps.push(step);
        self
    }

    /// Append an HTTP step.
    pub fn http(self, name: impl Into<String>, step: HttpStep) -> Self {
        self.step(Step::http(name, step))
    }

    /// Append an SQL step.
    pub fn sql(self, name: impl Into<String>, step: SqlStep) -> Self {
        self.step(Step::sql(name, step))
    }

    /// Append a Qdrant step.
    pub fn qdrant(self, name: impl Into<String>, step: QdrantStep) -> Self {
        self.step(Step::qdrant(name, step))
    }
}

/// One step: a name and exactly one of `http`, `sql`, `qdrant`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Step {
    /// Name in messages (`flow x step y`).
    pub name: String,
    /// An HTTP request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpStep>,
    /// An SQL query and what it must return.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<SqlStep>,
    /// A Qdrant operation or assertion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qdrant: Option<QdrantStep>,
}

impl Step {
    fn empty(name: impl Into<String>) -> Self {
        Step {
            name: name.into(),
            http: None,
            sql: None,
            qdrant: None,
        }
    }

    /// An HTTP step.
    pub fn http(name: impl Into<String>, step: HttpStep) -> Self {
        Step {
            http: Some(step),
            ..Step::empty(name)
        }
    }

    /// An SQL step.
    pub fn sql(name: impl Into<String>, step: SqlStep) -> Self {
        Step {
            sql: Some(step),
            ..Step::empty(name)
        }
    }

    /// A Qdrant step.
    pub fn qdrant(name: impl Into<String>, step: QdrantStep) -> Self {
        Step {
            qdrant: Some(step),
            ..Step::empty(name)
        }
    }

    /// `http`, `sql` or `qdrant` (the first one set), for messages.
    pub fn kind(&self) -> &'static str {
        if self.http.is_some() {
            "http"
        } else if self.sql.is_some() {
            "sql"
        } else if self.qdrant.is_some() {
            "qdrant"
        } else {
            "empty"
        }
    }
}

/// An HTTP request and what its answer must be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HttpStep {
    /// `GET`, `POST`, ... (default `GET`).
    #[serde(default = "default_method")]
    pub method: String,
    /// A path starting with `/`, sent to the gateway's origin with its API key
    /// (`/v1/embeddings`), or an absolute `http(s)://` URL (sent without the key).
    pub url: String,
    /// Request headers; values may use `${var}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// A JSON body; strings in it may use `${var}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// The status the answer must have (default 200).
    #[serde(default = "default_status")]
    pub expect_status: u16,
    /// Variables taken from the answer.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capture: BTreeMap<String, Capture>,
}

fn default_method() -> String {
    "GET".to_string()
}
fn default_status() -> u16 {
    200
}

impl HttpStep {
    /// A request with `method` to `url`, expecting 200.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        HttpStep {
            method: method.into(),
            url: url.into(),
            headers: BTreeMap::new(),
            body: None,
            expect_status: 200,
            capture: BTreeMap::new(),
        }
    }

    /// A `GET`.
    pub fn get(url: impl Into<String>) -> Self {
        HttpStep::new("GET", url)
    }

    /// A `POST`.
    pub fn post(url: impl Into<String>) -> Self {
        HttpStep::new("POST", url)
    }

    /// Add a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Send this JSON body.
    pub fn json(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    /// Expect this status.
    pub fn expect_status(mut self, status: u16) -> Self {
        self.expect_status = status;
        self
    }

    /// Capture a variable.
    pub fn capture(mut self, var: impl Into<String>, capture: Capture) -> Self {
        self.capture.insert(var.into(), capture);
        self
    }
}

/// Where a variable comes from: a JSON pointer into the answer's body, or a header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Capture {
    /// RFC 6901 pointer into the JSON body: `/data/0/embedding`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// A response header's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
}

impl Capture {
    /// By JSON pointer.
    pub fn pointer(pointer: impl Into<String>) -> Self {
        Capture {
            pointer: Some(pointer.into()),
            header: None,
        }
    }

    /// By header name.
    pub fn header(name: impl Into<String>) -> Self {
        Capture {
            pointer: None,
            header: Some(name.into()),
        }
    }
}

/// An SQL query, its parameters and what it must return, optionally polled until it does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SqlStep {
    /// The query, with `$1`, `$2`, ... for the parameters.
    pub query: String,
    /// Parameters, bound (never spliced); strings may use `${var}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Value>,
    /// What the result must be.
    pub expect: SqlExpect,
    /// Re-run the query until the expectation holds, for at most this long.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub poll_until: Option<Duration>,
    /// Wait between two queries when polling.
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
}

fn default_poll_interval() -> Duration {
    DEFAULT_POLL_INTERVAL
}

impl SqlStep {
    /// A query expecting one row.
    pub fn new(query: impl Into<String>) -> Self {
        SqlStep {
            query: query.into(),
            params: Vec::new(),
            expect: SqlExpect::rows(1),
            poll_until: None,
            poll_interval: DEFAULT_POLL_INTERVAL,
        }
    }

    /// Add a parameter.
    pub fn param(mut self, value: impl Into<Value>) -> Self {
        self.params.push(value.into());
        self
    }

    /// What the result must be.
    pub fn expect(mut self, expect: SqlExpect) -> Self {
        self.expect = expect;
        self
    }

    /// Poll until the expectation holds, within `bound`.
    pub fn poll_until(mut self, bound: Duration) -> Self {
        self.poll_until = Some(bound);
        self
    }

    /// Wait between two polls.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }
}

/// What an SQL result must be: a number of rows, the first column of the first row, or both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SqlExpect {
    /// Exactly this many rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// The first column of the first row equals this (numbers compare by value; `${var}`
    /// allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

impl SqlExpect {
    /// Exactly `n` rows.
    pub fn rows(n: u64) -> Self {
        SqlExpect {
            rows: Some(n),
            value: None,
        }
    }

    /// The first column of the first row equals `v`.
    pub fn value(v: impl Into<Value>) -> Self {
        SqlExpect {
            rows: None,
            value: Some(v.into()),
        }
    }
}

/// A Qdrant operation or assertion, over its REST API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum QdrantStep {
    /// Create a temporary collection `citadel_itest_<run>_flow_<what>_<n>` (its removal is
    /// registered with the runner's cleanup before it is created) and put its name in the
    /// variable `var`.
    CreateCollection {
        /// The variable that gets the collection's name.
        var: String,
        /// Vector size.
        size: u64,
        /// `Cosine`, `Dot`, `Euclid` or `Manhattan`.
        #[serde(default = "default_distance")]
        distance: String,
    },
    /// Upsert one point (waiting for it to be applied). The vector's dimension must match the
    /// collection's.
    Upsert {
        /// Collection name (`${var}` allowed).
        collection: String,
        /// Point id: an unsigned integer or a UUID.
        id: Value,
        /// The vector (e.g. `${vector}`).
        vector: Value,
        /// Its payload.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payload: Option<Value>,
    },
    /// The point exists.
    PointExists {
        /// Collection name.
        collection: String,
        /// Point id.
        id: Value,
    },
    /// A search with `vector` returns `id` at `rank` (1 = first), with `score` within
    /// `tolerance` when set.
    Search {
        /// Collection name.
        collection: String,
        /// The query vector.
        vector: Value,
        /// The point id expected.
        id: Value,
        /// Its expected rank, 1-based.
        #[serde(default = "default_rank")]
        rank: u32,
        /// Its expected score.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        score: Option<f64>,
        /// Largest accepted `|score - expected|`.
        #[serde(default = "default_tolerance")]
        tolerance: f64,
    },
    /// A point's payload field equals a value.
    PayloadEquals {
        /// Collection name.
        collection: String,
        /// Point id.
        id: Value,
        /// Top-level payload key.
        field: String,
        /// The value it must have (`${var}` allowed).
        equals: Value,
    },
}

fn default_distance() -> String {
    "Cosine".to_string()
}
fn default_rank() -> u32 {
    1
}
fn default_tolerance() -> f64 {
    DEFAULT_SCORE_TOLERANCE
}

impl QdrantStep {
    /// Create a temporary collection of `size` (cosine distance) named in `var`.
    pub fn create_collection(var: impl Into<String>, size: u64) -> Self {
        QdrantStep::CreateCollection {
            var: var.into(),
            size,
            distance: default_distance(),
        }
    }

    /// Upsert a point.
    pub fn upsert(
        collection: impl Into<String>,
        id: impl Into<Value>,
        vector: impl Into<Value>,
        payload: Option<Value>,
    ) -> Self {
        QdrantStep::Upsert {
            collection: collection.into(),
            id: id.into(),
            vector: vector.into(),
            payload,
        }
    }

    /// The point exists.
    pub fn point_exists(collection: impl Into<String>, id: impl Into<Value>) -> Self {
        QdrantStep::PointExists {
            collection: collection.into(),
            id: id.into(),
        }
    }

    /// A search returns `id` at `rank`, score unchecked.
    pub fn search(
        collection: impl Into<String>,
        vector: impl Into<Value>,
        id: impl Into<Value>,
        rank: u32,
    ) -> Self {
        QdrantStep::Search {
            collection: collection.into(),
            vector: vector.into(),
            id: id.into(),
            rank,
            score: None,
            tolerance: DEFAULT_SCORE_TOLERANCE,
        }
    }

    /// A payload field equals a value.
    pub fn payload_equals(
        collection: impl Into<String>,
        id: impl Into<Value>,
        field: impl Into<String>,
        equals: impl Into<Value>,
    ) -> Self {
        QdrantStep::PayloadEquals {
            collection: collection.into(),
            id: id.into(),
            field: field.into(),
            equals: equals.into(),
        }
    }
}
