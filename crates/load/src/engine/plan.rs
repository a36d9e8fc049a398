//! What a run sends, and how: the scenario resolved once into ready-to-send parts.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use citadel_itest_openai::StreamLimits;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use super::EngineError;
use super::schedule::mix;
use crate::config::{Arrivals, LoadModel, PromptOrder, Protocol, ScenarioConfig, Stage};

/// The bodies requests send, in a fixed order: request `k` sends body `k mod n`
/// (`sequential`) or a body drawn from a seeded hash of `k` (`random`, with replacement).
/// Bodies are reference-counted [`Bytes`]: picking one copies nothing.
#[derive(Clone)]
pub struct Bodies {
    bodies: Arc<[Bytes]>,
    order: PromptOrder,
    seed: u64,
}

impl Bodies {
    /// No body (a `GET`).
    pub fn none() -> Self {
        Bodies::new(Vec::new(), PromptOrder::Sequential, 0)
    }

    /// These bodies in this order; `seed` seeds the `random` order.
    pub fn new(bodies: Vec<Bytes>, order: PromptOrder, seed: u64) -> Self {
        Bodies {
            bodies: bodies.into(),
            order,
            seed,
        }
    }

    /// How many bodies there are.
    pub fn len(&self) -> usize {
        self.bodies.len()
    }

    /// Whether there is no body.
    pub fn is_empty(&self) -> bool {
        self.bodies.is_empty()
    }

    /// The body of request number `k` (empty when there is none).
    pub fn pick(&self, k: u64) -> Bytes {
        let n = self.bodies.len() as u64;
        match n {
            0 => Bytes::new(),
            1 => self.bodies[0].clone(),
            _ => {
                let i = match self.order {
                    PromptOrder::Random => mix(self.seed ^ mix(k)) % n,
                    _ => k % n,
                };
                self.bodies[i as usize].clone()
            }
        }
    }
}

impl fmt::Debug for Bodies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bodies")
            .field("count", &self.bodies.len())
            .field("order", &self.order)
            .field("seed", &self.seed)
            .finish()
    }
}

/// The load model of a [`Plan`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Model {
    /// `vus` virtual users, each on its own connection, sending the next request when the
    /// last one ended (after `think_time`).
    Closed {
        /// Virtual users (connections).
        vus: usize,
        /// No request starts after this much time from the start.
        duration: Duration,
        /// No more than this many requests in all.
        iterations: Option<u64>,
        /// Pause of each user between the end of one request and the next.
        think_time: Duration,
    },
    /// Requests sent on an arrival schedule, whatever the server does.
    Open {
        /// The rate over time (linear ramps).
        stages: Vec<Stage>,
        /// Constant spacing or Poisson arrivals.
        arrivals: Arrivals,
        /// Seed of the Poisson arrivals.
        seed: u64,
        /// Connections (each carrying one request at a time).
        max_connections: usize,
        /// An arrival taken later than this after its intended time is dropped.
        max_lag: Duration,
    },
}

impl Model {
    /// Connections the model opens (at most).
    pub fn connections(&self) -> usize {
        match self {
            Model::Closed { vus, .. } => *vus,
            Model::Open {
                max_connections, ..
            } => *max_connections,
        }
    }
}

/// A scenario resolved for the engine: the address resolved once, the request parts built
/// once, the model with its stages parsed. Cheap to clone (the bodies are shared).
#[derive(Debug, Clone)]
pub struct Plan {
    pub(crate) addr: SocketAddr,
    pub(crate) method: Method,
    /// Origin form (`/path?query`) for HTTP/1.1, absolute for HTTP/2 (`:scheme`, `:authority`).
    pub(crate) uri: Uri,
    /// With `host` for HTTP/1.1; without for HTTP/2 (the authority is in the URI).
    pub(crate) headers: HeaderMap,
    pub(crate) protocol: Protocol,
    pub(crate) model: Model,
    pub(crate) timeout: Duration,
    pub(crate) stream: Option<StreamLimits>,
    pub(crate) bodies: Bodies,
    pub(crate) threads: usize,
    /// Offset of constant-spacing open arrivals, in gaps (a shard's phase; 0 otherwise).
    pub(crate) phase: f64,
}

impl Plan {
    /// Resolve `scenario` into a plan sending `bodies`.
    ///
    /// When `bodies` is empty and the scenario has a `body` (without prompts), that body is
    /// sent by every request. The request carries `host`, the scenario's headers,
    /// `authorization: Bearer …` from `api_key` (resolved here, marked sensitive), and
    /// `content-type: application/json` when there is a body and no content type was given.
    /// The host name is resolved once, here (blocking; loopback names such as `localhost` are
    /// fine). Streams are read with the scenario's `stream_stall` as stall bound and its
    /// `timeout` as total bound.
    pub fn from_scenario(scenario: &ScenarioConfig, bodies: Bodies) -> Result<Plan, EngineError> {
        let raw = &scenario.request.url;
        let invalid = |reason: String| EngineError::InvalidUrl {
            url: raw.clone(),
            reason,
        };
        let url = url::Url::parse(raw).map_err(|e| invalid(e.to_string()))?;
        if url.scheme() != "http" {
            return Err(invalid(format!(
                "scheme `{}` is not supported: use http://",
                url.scheme()
            )));
        }
        let host = url
            .host_str()
            .ok_or_else(|| invalid("no host".into()))?
            .to_string();
        let port = url.port_or_known_default().unwrap_or(80);
        let lookup = host.trim_start_matches('[').trim_end_matches(']');
        let addr = (lookup, port)
            .to_socket_addrs()
            .map_err(|source| EngineError::Resolve {
                host: host.clone(),
                source,
            })?
            .next()
            .ok_or_else(|| EngineError::Resolve {
                host: host.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
            })?;
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let uri_text = match scenario.protocol {
            Protocol::Http2 => format!("http://{authority}{path}"),
            _ => path,
        };
        let uri: Uri = uri_text
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(e.to_string()))?;
        let method_name = scenario.request.method();
        let method = Method::from_bytes(method_name.as_bytes()).map_err(|_| {
            EngineError::InvalidRequest {
                what: "method".into(),
                reason: format!("`{method_name}` is not an HTTP method"),
            }
        })?;

        let mut headers = HeaderMap::new();
        if scenario.protocol != Protocol::Http2 {
            let value =
                HeaderValue::from_str(&authority).map_err(|e| invalid(format!("host: {e}")))?;
            headers.insert(HOST, value);
        }
        for (name, value) in &scenario.request.headers {
            let bad = |reason: String| EngineError::InvalidRequest {
                what: format!("header `{name}`"),
                reason,
            };
            let n = HeaderName::from_bytes(name.as_bytes()).map_err(|e| bad(e.to_string()))?;
            let v = HeaderValue::from_str(value).map_err(|e| bad(e.to_string()))?;
            if n == HOST {
                // A `host` given replaces the URL's (HTTP/2 carries the URL's authority).
                if scenario.protocol != Protocol::Http2 {
                    headers.insert(n, v);
                }
                continue;
            }
            headers.append(n, v);
        }
        if let Some(key) = &scenario.request.api_key {
            let secret = key.resolve().map_err(EngineError::Secret)?;
            let mut v =
                HeaderValue::from_str(&format!("Bearer {}", secret.expose())).map_err(|_| {
                    EngineError::InvalidRequest {
                        what: "api_key".into(),
                        reason: "not a valid header value".into(),
                    }
                })?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }

        let bodies = match (&scenario.request.body, bodies.is_empty()) {
            (Some(body), true) if scenario.request.prompts.is_none() => {
                Bodies::new(vec![Bytes::from(body.clone())], PromptOrder::Sequential, 0)
            }
            _ => bodies,
        };
        if !bodies.is_empty() && !headers.contains_key(CONTENT_TYPE) {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }

        let model = match scenario.model() {
            Some(LoadModel::Closed(c)) => Model::Closed {
                vus: c.vus.max(1),
                duration: c.duration,
                iterations: c.iterations,
                think_time: c.think_time,
            },
            Some(LoadModel::Open(o)) => Model::Open {
                stages: o
                    .parsed_stages()
                    .map_err(|reason| EngineError::InvalidRequest {
                        what: "open.stages".into(),
                        reason,
                    })?,
                arrivals: o.arrivals,
                seed: o.seed,
                max_connections: o.max_connections.max(1),
                max_lag: o.max_lag,
            },
            _ => return Err(EngineError::NoModel),
        };
        let stream = scenario.stream.then(|| {
            StreamLimits::default()
                .stall(scenario.stream_stall)
                .max_duration(scenario.timeout)
        });
        Ok(Plan {
            addr,
            method,
            uri,
            headers,
            protocol: scenario.protocol,
            model,
            timeout: scenario.timeout,
            stream,
            bodies,
            threads: default_threads(),
            phase: 0.0,
        })
    }

    /// Run the connections on `threads` threads (each a single-threaded runtime, like wrk's
    /// threads); default: one per core. Never more threads than connections.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Shift constant-spacing open arrivals by `phase` gaps (`0 <= phase < 1`): shard `I` of
    /// `N` uses `I/N`, so the shards' arrivals interleave into the whole run's.
    pub fn with_phase(mut self, phase: f64) -> Self {
        self.phase = if phase.is_finite() {
            phase.clamp(0.0, 0.999_999)
        } else {
            0.0
        };
        self
    }

    /// Bound each request by `timeout` instead of the scenario's.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The target's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The request method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The request URI as sent (origin form for HTTP/1.1, absolute for HTTP/2).
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The request headers (an `authorization` value is marked sensitive).
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// HTTP/1.1 or HTTP/2.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The load model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The bound of each request (connect, head and body or stream).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The stream bounds, when answers are read as SSE streams.
    pub fn stream(&self) -> Option<&StreamLimits> {
        self.stream.as_ref()
    }

    /// The bodies.
    pub fn bodies(&self) -> &Bodies {
        &self.bodies
    }

    /// Threads the run uses (at most; never more than connections).
    pub fn threads(&self) -> usize {
        self.threads.min(self.model.connections()).max(1)
    }
}

fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
