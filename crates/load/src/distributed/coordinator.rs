//! The coordinator of a distributed run: serves the plan, collects one result per shard,
//! merges them exactly ([`LoadResult::merge`]) and judges the thresholds on the merged run.
//!
//! Bounded everywhere: request heads within 10 s, bodies within [`MAX_BODY_BYTES`] and
//! 60 s, the whole collection within the deadline. A shard that has not reported by then
//! fails the run, named in [`CoordinatorError::Missing`].

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{ShardPlan, constant_time_eq};
use crate::result::{LoadResult, MergeError};
use crate::shard::{MAX_SHARDS, Shard};
use crate::slo::Threshold;

/// Largest result a shard may post (64 MiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Default delay from the first plan request to the common start.
pub const DEFAULT_START_LEAD: Duration = Duration::from_secs(3);
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// What the coordinator coordinates.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CoordinatorConfig {
    /// The scenario every shard runs.
    pub scenario: String,
    /// How many shards report.
    pub shards: u32,
    /// Judged on the merged result.
    pub thresholds: Vec<Threshold>,
    /// Bearer token every request must carry (`None`: no token; loopback only).
    pub token: Option<String>,
    /// From the coordinator's start, how long it waits for every result.
    pub deadline: Duration,
    /// From the first plan request to the common start time.
    pub start_lead: Duration,
    /// Largest result body accepted.
    pub max_body: usize,
}

impl CoordinatorConfig {
    /// Coordinate `shards` shards of `scenario` for at most `deadline`.
    pub fn new(scenario: impl Into<String>, shards: u32, deadline: Duration) -> Self {
        CoordinatorConfig {
            scenario: scenario.into(),
            shards,
            thresholds: Vec::new(),
            token: None,
            deadline,
            start_lead: DEFAULT_START_LEAD,
            max_body: MAX_BODY_BYTES,
        }
    }

    /// Judge these thresholds on the merged result.
    pub fn thresholds(mut self, thresholds: Vec<Threshold>) -> Self {
        self.thresholds = thresholds;
        self
    }

    /// Require `Authorization: Bearer <token>`.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Start this long after the first plan request.
    pub fn start_lead(mut self, lead: Duration) -> Self {
        self.start_lead = lead;
        self
    }
}

/// Why a coordinated run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinatorError {
    /// The configuration cannot be used.
    #[error("coordinator: {0}")]
    Config(String),
    /// The listening socket could not be opened.
    #[error("listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Shards did not report by the deadline.
    #[error(
        "shard(s) {} of {count} did not report within the deadline of {}",
        .missing.iter().map(u32::to_string).collect::<Vec<_>>().join(", "),
        humantime::format_duration(*.deadline)
    )]
    Missing {
        /// The shards that did not report.
        missing: Vec<u32>,
        /// All shards.
        count: u32,
        /// The deadline.
        deadline: Duration,
    },
    /// The results do not merge.
    #[error("merge the shards' results")]
    Merge(#[source] MergeError),
    /// Cancelled before every shard reported.
    #[error("cancelled before every shard reported")]
    Cancelled,
}

/// What a coordinated run produced.
#[derive(Debug)]
#[non_exhaustive]
pub struct Outcome {
    /// The merged result, thresholds judged.
    pub merged: LoadResult,
    /// Each shard's result, by index.
    pub shards: BTreeMap<u32, LoadResult>,
}

struct State {
    start_at: Option<SystemTime>,
    results: BTreeMap<u32, LoadResult>,
}

struct Inner {
    config: CoordinatorConfig,
    state: Mutex<State>,
    complete: Notify,
}

/// A coordinator bound to its address, ready to [`run`](Coordinator::run).
#[derive(Debug)]
pub struct Coordinator {
    listener: TcpListener,
    config: CoordinatorConfig,
}

impl Coordinator {
    /// Listen on `addr` for `config`'s shards. Without a token only a loopback address is
    /// allowed.
    pub async fn bind(
        addr: SocketAddr,
        config: CoordinatorConfig,
    ) -> Result<Coordinator, CoordinatorError> {
        if config.shards == 0 || config.shards > MAX_SHARDS {
            return Err(CoordinatorError::Config(format!(
                "--shards must be from 1 to {MAX_SHARDS}, not {}",
                config.shards
            )));
        }
        if config.token.as_deref().is_none_or(str::is_empty) && !addr.ip().is_loopback() {
            return Err(CoordinatorError::Config(format!(
                "listening on {addr} (not loopback) needs a token: give --token-file"
            )));
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| CoordinatorError::Bind { addr, source })?;
        Ok(Coordinator { listener, config })
    }

    /// The address listened on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serve until every shard has reported (then merge and judge), the deadline passes or
    /// `cancel` is cancelled.
    pub async fn run(self, cancel: CancellationToken) -> Result<Outcome, CoordinatorError> {
        let deadline = self.config.deadline;
        let inner = Arc::new(Inner {
            config: self.config,
            state: Mutex::new(State {
                start_at: None,
                results: BTreeMap::new(),
            }),
            complete: Notify::new(),
        });
        let stop = CancellationToken::new();
        let _stop_guard = stop.clone().drop_guard();
        let timer = tokio::time::sleep(deadline);
        tokio::pin!(timer);
        let complete = inner.complete.notified();
        tokio::pin!(complete);
        loop {
            tokio::select! {
                _ = &mut complete => break,
                _ = &mut timer => {
                    let state = lock(&inner.state);
                    let missing: Vec<u32> = (0..inner.config.shards)
                        .filter(|i| !state.results.contains_key(i))
                        .collect();
                    if missing.is_empty() {
                        break;
                    }
                    return Err(CoordinatorError::Missing {
                        missing,
                        count: inner.config.shards,
                        deadline,
                    });
                }
                _ = cancel.cancelled() => return Err(CoordinatorError::Cancelled),
                accepted = self.listener.accept() => {
                    let Ok((sock, _)) = accepted else {
                        // A transient accept error (out of descriptors): back off a little.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let inner = inner.clone();
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req| {
                            let inner = inner.clone();
                            async move { Ok::<_, Infallible>(handle(&inner, req).await) }
                        });
                        let conn = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(HEAD_TIMEOUT)
                            .keep_alive(false)
                            .serve_connection(TokioIo::new(sock), service);
                        tokio::select! {
                            _ = conn => {}
                            _ = stop.cancelled() => {}
                        }
                    });
                }
            }
        }
        let shards = std::mem::take(&mut lock(&inner.state).results);
        let list: Vec<LoadResult> = shards.values().cloned().collect();
        let mut merged = LoadResult::merge(&list).map_err(CoordinatorError::Merge)?;
        merged.apply_thresholds(&inner.config.thresholds);
        Ok(Outcome { merged, shards })
    }
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

fn authorised(config: &CoordinatorConfig, req: &Request<Incoming>) -> bool {
    let Some(token) = config.token.as_deref().filter(|t| !t.is_empty()) else {
        return true;
    };
    let given = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    constant_time_eq(given.as_bytes(), token.as_bytes())
}

fn shard_param(req: &Request<Incoming>, count: u32) -> Result<u32, String> {
    let query = req.uri().query().unwrap_or("");
    let value = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("shard="))
        .ok_or("give ?shard=INDEX")?;
    let i: u32 = value
        .parse()
        .map_err(|_| "the shard index is not a whole number".to_string())?;
    if i >= count {
        return Err(format!(
            "shard {i} is out of range: this run has {count} shards (0-based)"
        ));
    }
    Ok(i)
}

async fn handle(inner: &Inner, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let config = &inner.config;
    if !authorised(config, &req) {
        return reply(StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n");
    }
    let index = match shard_param(&req, config.shards) {
        Ok(i) => i,
        Err(e) if matches!(req.uri().path(), "/plan" | "/result") => {
            return reply(StatusCode::BAD_REQUEST, format!("{e}\n"));
        }
        Err(_) => return reply(StatusCode::NOT_FOUND, "not found\n"),
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/plan") => {
            let start = {
                let mut state = lock(&inner.state);
                *state
                    .start_at
                    .get_or_insert_with(|| SystemTime::now() + config.start_lead)
            };
            let plan = ShardPlan {
                scenario: config.scenario.clone(),
                shards: config.shards,
                start_at_ms: start
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
            };
            match serde_json::to_vec(&plan) {
                Ok(json) => reply(StatusCode::OK, json),
                Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            }
        }
        (&Method::POST, "/result") => {
            if lock(&inner.state).results.contains_key(&index) {
                return reply(
                    StatusCode::CONFLICT,
                    format!("shard {index} already reported; counted once\n"),
                );
            }
            let body = Limited::new(req.into_body(), config.max_body);
            let bytes = match tokio::time::timeout(BODY_TIMEOUT, body.collect()).await {
                Ok(Ok(b)) => b.to_bytes(),
                Ok(Err(e)) => {
                    return reply(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("read the result: {e} (at most {} bytes)\n", config.max_body),
                    );
                }
                Err(_) => return reply(StatusCode::REQUEST_TIMEOUT, "the body took too long\n"),
            };
            let result = match LoadResult::from_json_slice(&bytes) {
                Ok(r) => r,
                Err(e) => return reply(StatusCode::BAD_REQUEST, format!("{e}\n")),
            };
            if result.scenario != config.scenario {
                return reply(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "a result of scenario `{}`; this run is `{}`\n",
                        result.scenario, config.scenario
                    ),
                );
            }
            let expected = Shard::new(index, config.shards).ok();
            if result.shard.is_some() && result.shard != expected {
                return reply(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "the result says shard {}, posted as shard {index}/{}\n",
                        result.shard.map(|s| s.to_string()).unwrap_or_default(),
                        config.shards
                    ),
                );
            }
            let mut state = lock(&inner.state);
            if state.results.contains_key(&index) {
                return reply(
                    StatusCode::CONFLICT,
                    format!("shard {index} already reported; counted once\n"),
                );
            }
            state.results.insert(index, result);
            if state.results.len() as u64 >= u64::from(config.shards) {
                inner.complete.notify_one();
            }
            reply(StatusCode::OK, "recorded\n")
        }
        _ => reply(StatusCode::NOT_FOUND, "not found\n"),
    }
}
