//! [`GatewayCheck`]: one aspect of the gateway, checked with real requests through it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use citadel_itest_core::config::SecretString;
use citadel_itest_core::{
    BoxError, Category, Check, CheckContext, CheckId, ErrorKind, Measurement, Outcome, Resource,
    RetryPolicy, Threshold, Unit, error_chain,
};
use citadel_itest_openai::reqwest::{Method, header};
use citadel_itest_openai::{
    ChatRequest, Client, EmbeddingsRequest, RawReply, RequestError, StreamLimits,
};
use serde_json::json;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::config::{FailoverAction, GatewayConfig, ModelKind};
use crate::stats::{ChiSquareError, chi_square};
use crate::{Aspect, Settings};

/// One aspect ([`Aspect`]) of a gateway, checked with real requests through it.
///
/// Every request is bounded by the gateway's `request_timeout` (streams by
/// `round_trip.stall` between events), the whole check by its timeout. Each check claims the
/// gateway's traffic (`gateway-traffic` and `traffic:<host>:<port>` resources, the latter shared with load runs) so the load-balancing counts and the latency
/// figures are not disturbed by the other checks of this tester.
#[derive(Debug, Clone)]
pub struct GatewayCheck {
    id: CheckId,
    aspect: Aspect,
    gw: Arc<GatewayConfig>,
    settings: Settings,
    timeout: Duration,
}

/// What ends a check early: its outcome.
type Step<T> = Result<T, Outcome>;

/// One load-balancing request: the backend header's value (if any), or the error.
type Served = Result<Option<String>, String>;

impl GatewayCheck {
    /// The `aspect` check of gateway `gw`.
    pub fn new(gw: &GatewayConfig, aspect: Aspect, settings: &Settings) -> Self {
        GatewayCheck {
            id: aspect.check_id(&gw.name),
            aspect,
            gw: Arc::new(gw.clone()),
            settings: settings.clone(),
            timeout: {
                let base = gw.timeout.unwrap_or(settings.timeout);
                match (&gw.failover, aspect) {
                    (Some(f), Aspect::Failover) => {
                        base + f.recovery_time + f.action_timeout + f.action_timeout
                    }
                    _ => base,
                }
            },
        }
    }

    fn key(&self) -> Step<Option<SecretString>> {
        match &self.gw.api_key {
            None => Ok(None),
            Some(s) => s.resolve().map(Some).map_err(|e| {
                Outcome::error(
                    ErrorKind::Harness,
                    format!("resolve gateway api_key: {}", error_chain(&e)),
                )
            }),
        }
    }

    fn client_at(&self, base: &str) -> Step<Client> {
        let client = Client::new(base)
            .map_err(|e| Outcome::error(ErrorKind::Harness, e.to_string()))?
            .timeout(self.gw.request_timeout);
        Ok(match self.key()? {
            Some(k) => client.api_key(k),
            None => client,
        })
    }

    fn gateway(&self) -> Step<Client> {
        self.client_at(&self.gw.url)
    }

    fn chat_model(&self, configured: &Option<String>) -> Step<String> {
        configured
            .clone()
            .or_else(|| self.gw.chat_models().next().map(|m| m.id.clone()))
            .ok_or_else(|| Outcome::skipped("no chat model is configured"))
    }

    fn backend_of(
        &self,
        headers: &citadel_itest_openai::reqwest::header::HeaderMap,
    ) -> Option<String> {
        headers
            .get(self.gw.backend_header.as_str())
            .and_then(|v| v.to_str().ok())
            .map(|s| citadel_itest_core::http::excerpt(s.as_bytes()))
    }

    fn failed(&self, what: &str, e: RequestError) -> Outcome {
        Outcome::failed(format!("{what} through gateway {}: {e}", self.gw.name))
    }

    fn hosts(&self, model: &str) -> Vec<String> {
        self.gw
            .hosts_of(model)
            .iter()
            .map(|b| b.id.clone())
            .collect()
    }

    async fn catalogue(&self, ctx: &CheckContext) -> Step<Outcome> {
        let client = self.gateway()?;
        let reply = client
            .models()
            .await
            .map_err(|e| self.failed("list models", e))?;
        let listed: BTreeSet<&str> = reply.body.ids().into_iter().collect();
        let wanted: BTreeSet<&str> = self.gw.models.iter().map(|m| m.id.as_str()).collect();
        let missing: Vec<&str> = wanted.difference(&listed).copied().collect();
        let unexpected: Vec<&str> = listed.difference(&wanted).copied().collect();
        ctx.detail("listed", json!(listed));
        let measurements = vec![
            count("models_listed", listed.len()),
            count("models_missing", missing.len()),
            count("models_unexpected", unexpected.len()),
        ];
        let mut problems = Vec::new();
        if !missing.is_empty() {
            problems.push(format!("missing {}", quoted(&missing)));
        }
        if !unexpected.is_empty() && !self.gw.allow_extra_models {
            problems.push(format!("unexpected {}", quoted(&unexpected)));
        }
        if problems.is_empty() {
            Ok(Outcome::from_measurements(measurements))
        } else {
            Ok(Outcome::Failed {
                message: format!(
                    "/v1/models through gateway {} does not list the configured models: {}",
                    self.gw.name,
                    problems.join("; ")
                ),
                measurements,
            })
        }
    }

    /// One request for `model` at `client`: (backend header, the answer's model).
    async fn probe(
        &self,
        client: &Client,
        model: &str,
        kind: ModelKind,
    ) -> Result<(Option<String>, String), RequestError> {
        match kind {
            ModelKind::Embeddings => {
                let r = client
                    .embeddings(&EmbeddingsRequest::new(model, "routing probe"))
                    .await?;
                Ok((self.backend_of(&r.headers), r.body.model))
            }
            _ => {
                let req = ChatRequest::new(model).user("routing probe").max_tokens(1);
                let r = client.chat(&req).await?;
                Ok((self.backend_of(&r.headers), r.body.model))
            }
        }
    }

    /// What is wrong with one routed answer, if anything.
    fn judge_route(
        &self,
        model: &str,
        allowed: &[String],
        backend: Option<&str>,
        answered: &str,
    ) -> Option<String> {
        if answered != model {
            return Some(format!(
                "a request for `{model}` was answered by model `{answered}`"
            ));
        }
        if self.gw.backends.is_empty() {
            return None;
        }
        match backend {
            None => Some(format!(
                "the answer for `{model}` has no {} header naming its backend",
                self.gw.backend_header
            )),
            Some(b) if !allowed.iter().any(|a| a == b) => Some(format!(
                "`{model}` was served by backend `{b}`, which is not one of {}",
                quoted(allowed)
            )),
            Some(_) => None,
        }
    }

    async fn routing(&self, ctx: &CheckContext) -> Step<Outcome> {
        let client = self.gateway()?;
        let per_model = self.gw.backends.len().clamp(1, 8);
        let mut problems = Vec::new();
        let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut requests = 0usize;
        for m in &self.gw.models {
            let allowed = self.hosts(&m.id);
            for _ in 0..per_model {
                requests += 1;
                let (backend, answered) = self
                    .probe(&client, &m.id, m.kind)
                    .await
                    .map_err(|e| self.failed(&format!("request for model `{}`", m.id), e))?;
                if let Some(b) = &backend {
                    seen.entry(m.id.clone()).or_default().insert(b.clone());
                }
                if let Some(p) = self.judge_route(&m.id, &allowed, backend.as_deref(), &answered) {
                    problems.push(p);
                    break;
                }
            }
        }
        for r in &self.gw.routes {
            let mut url = url::Url::parse(&self.gw.url)
                .map_err(|e| Outcome::error(ErrorKind::Harness, format!("gateway url: {e}")))?;
            url.set_path(&r.path);
            url.set_query(None);
            let client = self.client_at(url.as_str())?;
            let kind = self
                .gw
                .models
                .iter()
                .find(|m| m.id == r.model)
                .map_or(ModelKind::Chat, |m| m.kind);
            requests += 1;
            let (backend, answered) = self.probe(&client, &r.model, kind).await.map_err(|e| {
                self.failed(&format!("request for `{}` on route {}", r.model, r.path), e)
            })?;
            if let Some(b) = &backend {
                seen.entry(format!("route {}", r.path))
                    .or_default()
                    .insert(b.clone());
            }
            let judged = if backend.is_none() {
                Some(format!(
                    "the answer has no {} header naming its backend",
                    self.gw.backend_header
                ))
            } else {
                self.judge_route(&r.model, &r.backends, backend.as_deref(), &answered)
            };
            if let Some(p) = judged {
                problems.push(format!("route {}: {p}", r.path));
            }
        }
        ctx.detail("backends_seen", json!(seen));
        let measurements = vec![count("requests", requests)];
        if problems.is_empty() {
            Ok(Outcome::from_measurements(measurements))
        } else {
            Ok(Outcome::Failed {
                message: format!(
                    "gateway {} routes wrongly: {}",
                    self.gw.name,
                    problems.join("; ")
                ),
                measurements,
            })
        }
    }

    fn round_trip_request(&self) -> Step<ChatRequest> {
        let rt = &self.gw.round_trip;
        let model = self.chat_model(&rt.model)?;
        Ok(ChatRequest::new(model)
            .user(rt.prompt.clone())
            .max_tokens(rt.max_tokens))
    }

    async fn round_trip(&self, ctx: &CheckContext) -> Step<Outcome> {
        let client = self.gateway()?;
        let req = self.round_trip_request()?;
        let reply = client
            .chat(&req)
            .await
            .map_err(|e| self.failed("chat completion", e))?;
        let backend = self.backend_of(&reply.headers);
        if let Some(b) = &backend {
            ctx.detail("backend", b.clone());
        }
        let c = &reply.body;
        let mut problems = Vec::new();
        if c.object != "chat.completion" {
            problems.push(format!(
                "`object` is `{}`, expected `chat.completion`",
                c.object
            ));
        }
        if c.model != req.model {
            problems.push(format!(
                "`model` is `{}`, expected `{}`",
                c.model, req.model
            ));
        }
        let finish = c.choices.first().and_then(|ch| ch.finish_reason.clone());
        match c.choices.first() {
            None => problems.push("`choices` is empty".to_string()),
            Some(ch) => {
                if ch.message.role != "assistant" {
                    problems.push(format!(
                        "`choices[0].message.role` is `{}`",
                        ch.message.role
                    ));
                }
                if c.content().is_empty() {
                    problems.push("`choices[0].message.content` is empty".to_string());
                }
            }
        }
        let completion = match c.usage {
            None => {
                problems.push("`usage` is missing".to_string());
                None
            }
            Some(u) => {
                problems.extend(usage_problems(
                    u.prompt_tokens,
                    u.completion_tokens,
                    u.total_tokens,
                    req.max_tokens.unwrap_or(u32::MAX),
                    finish.as_deref(),
                ));
                Some(u.completion_tokens)
            }
        };
        problems.extend(finish_problem(finish.as_deref()));
        let rt = &self.gw.round_trip;
        let mut measurements = vec![
            Measurement::duration("total_time", reply.elapsed)
                .with_threshold(Threshold::lt(ms(rt.max_total))),
        ];
        if let Some(n) = completion {
            measurements.push(count("completion_tokens", n as usize));
        }
        if problems.is_empty() {
            Ok(Outcome::from_measurements(measurements))
        } else {
            Ok(Outcome::Failed {
                message: format!(
                    "chat completion through gateway {}{} is not well formed: {}",
                    self.gw.name,
                    on_backend(&backend),
                    problems.join("; ")
                ),
                measurements,
            })
        }
    }

    async fn streaming(&self, ctx: &CheckContext) -> Step<Outcome> {
        let client = self.gateway()?;
        let req = self.round_trip_request()?.include_usage(true);
        let rt = &self.gw.round_trip;
        let limits = StreamLimits::default()
            .stall(rt.stall)
            .max_duration(self.gw.request_timeout.max(rt.max_total));
        let report = client
            .chat_stream(&req, &limits)
            .await
            .map_err(|e| self.failed("streamed chat completion", e))?;
        let backend = self.backend_of(&report.headers);
        if let Some(b) = &backend {
            ctx.detail("backend", b.clone());
        }
        ctx.detail("stream_end", report.end.class());
        ctx.detail("tokens", report.tokens.to_string());
        let mut measurements = vec![
            match report.ttft {
                Some(t) => Measurement::duration("ttft", t),
                None => Measurement::missing("ttft", Unit::Milliseconds),
            }
            .with_threshold(Threshold::lt(ms(rt.max_ttft))),
            Measurement::duration("total_time", report.total)
                .with_threshold(Threshold::lt(ms(rt.max_total))),
            match report.gaps.mean() {
                Some(g) => Measurement::duration("itl_mean", g),
                None => Measurement::missing("itl_mean", Unit::Milliseconds),
            },
            Measurement::duration("itl_max", report.gaps.max),
            count("content_chunks", report.content_chunks as usize),
            count("events", report.events as usize),
        ];
        let where_ = format!(
            "stream through gateway {}{}",
            self.gw.name,
            on_backend(&backend)
        );
        if !report.is_success() {
            return Ok(Outcome::Failed {
                message: format!("{where_} failed ({}): {}", report.end.class(), report.end),
                measurements,
            });
        }
        let mut problems = Vec::new();
        if report.content.is_empty() {
            problems.push("no content arrived".to_string());
        }
        if report.model.as_deref() != Some(req.model.as_str()) {
            problems.push(format!(
                "chunks name model {}, expected `{}`",
                report
                    .model
                    .as_deref()
                    .map_or("(none)".to_string(), |m| format!("`{m}`")),
                req.model
            ));
        }
        problems.extend(finish_problem(report.finish_reason.as_deref()));
        match report.usage {
            None => problems.push(
                "no `usage` chunk although `stream_options.include_usage` was sent".to_string(),
            ),
            Some(u) => {
                measurements.push(count("completion_tokens", u.completion_tokens as usize));
                problems.extend(usage_problems(
                    u.prompt_tokens,
                    u.completion_tokens,
                    u.total_tokens,
                    rt.max_tokens,
                    report.finish_reason.as_deref(),
                ));
                if report.content_chunks > u.completion_tokens {
                    problems.push(format!(
                        "{} chunks carried content but `usage.completion_tokens` is {}",
                        report.content_chunks, u.completion_tokens
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(Outcome::from_measurements(measurements))
        } else {
            Ok(Outcome::Failed {
                message: format!("{where_} is not well formed: {}", problems.join("; ")),
                measurements,
            })
        }
    }

    async fn load_balancing(&self, ctx: &CheckContext) -> Step<Outcome> {
        if self.gw.backends.is_empty() {
            return Ok(Outcome::skipped(
                "no backends are configured: load balancing needs their ids and weights",
            ));
        }
        let lb = &self.gw.load_balancing;
        let client = self.gateway()?;
        let model = self.chat_model(&lb.model)?;
        let req = ChatRequest::new(model.clone())
            .user("balance probe")
            .max_tokens(1);
        let k = lb.requests;
        let next = Arc::new(AtomicU32::new(0));
        let results: Arc<Mutex<Vec<Served>>> = Arc::new(Mutex::new(Vec::with_capacity(k as usize)));
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..lb.concurrency.min(k) {
            let (client, req, next, results) =
                (client.clone(), req.clone(), next.clone(), results.clone());
            let header = self.gw.backend_header.clone();
            workers.spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < k {
                    let r = match client.chat(&req).await {
                        Ok(reply) => Ok(reply
                            .header(&header)
                            .map(|s| citadel_itest_core::http::excerpt(s.as_bytes()))),
                        Err(e) => Err(e.to_string()),
                    };
                    results.lock().await.push(r);
                }
            });
        }
        while workers.join_next().await.is_some() {}
        let results = std::mem::take(&mut *results.lock().await);
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let (mut errors, mut unnamed, mut first_error) = (0u64, 0u64, None);
        for r in results {
            match r {
                Ok(Some(b)) => *counts.entry(b).or_default() += 1,
                Ok(None) => unnamed += 1,
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        ctx.detail("observed_counts", json!(counts));
        let mut measurements = vec![
            count("requests", k as usize),
            count("errors", errors as usize),
        ];
        if errors > 0 {
            return Ok(Outcome::Failed {
                message: format!(
                    "{errors} of {k} requests through gateway {} failed; first: {}",
                    self.gw.name,
                    first_error.unwrap_or_default()
                ),
                measurements,
            });
        }
        if unnamed > 0 {
            return Ok(Outcome::Failed {
                message: format!(
                    "{unnamed} of {k} answers through gateway {} have no {} header: the backend \
                     that served them is unknown",
                    self.gw.name, self.gw.backend_header
                ),
                measurements,
            });
        }
        let hosts = self.gw.hosts_of(&model);
        let strangers: Vec<String> = counts
            .iter()
            .filter(|(b, _)| !hosts.iter().any(|h| &h.id == *b))
            .map(|(b, n)| format!("`{b}` ({n})"))
            .collect();
        if !strangers.is_empty() {
            return Ok(Outcome::Failed {
                message: format!(
                    "answers for `{model}` came from backends not configured to host it: {}",
                    strangers.join(", ")
                ),
                measurements,
            });
        }
        let observed: Vec<u64> = hosts
            .iter()
            .map(|h| counts.get(&h.id).copied().unwrap_or(0))
            .collect();
        let weights: Vec<f64> = hosts.iter().map(|h| f64::from(h.weight)).collect();
        let weight_sum: f64 = weights.iter().sum();
        let mut shares = Vec::new();
        let mut observed_shares = BTreeMap::new();
        let mut expected_shares = BTreeMap::new();
        for ((h, o), w) in hosts.iter().zip(&observed).zip(&weights) {
            let share = *o as f64 / k as f64;
            let expected = w / weight_sum;
            observed_shares.insert(h.id.clone(), share);
            expected_shares.insert(h.id.clone(), expected);
            measurements.push(Measurement::new(
                format!("share_{}", h.id),
                share,
                Unit::Ratio,
            ));
            measurements.push(Measurement::new(
                format!("expected_share_{}", h.id),
                expected,
                Unit::Ratio,
            ));
            shares.push(format!(
                "{} {} ({:.1}%, expected {:.1}%)",
                h.id,
                o,
                share * 100.0,
                expected * 100.0
            ));
        }
        ctx.detail("observed_shares", json!(observed_shares));
        ctx.detail("expected_shares", json!(expected_shares));
        let test = match chi_square(&observed, &weights) {
            Ok(t) => t,
            Err(ChiSquareError::TooFew { smallest_expected }) => {
                return Ok(Outcome::error(
                    ErrorKind::Harness,
                    format!(
                        "{k} requests are too few for a chi-square test: the smallest expected \
                         count is {smallest_expected:.1}, under 5; raise load_balancing.requests"
                    ),
                ));
            }
            Err(e) => {
                return Ok(Outcome::error(
                    ErrorKind::Harness,
                    format!("chi-square test: {e:?}"),
                ));
            }
        };
        ctx.detail("chi_square", test.statistic);
        ctx.detail("degrees_of_freedom", test.df);
        ctx.detail("p_value", test.p_value);
        ctx.detail("significance", lb.significance);
        measurements.push(Measurement::new("chi_square", test.statistic, Unit::Count));
        measurements.push(Measurement::new("p_value", test.p_value, Unit::Ratio));
        if test.p_value < lb.significance {
            return Ok(Outcome::Failed {
                message: format!(
                    "the spread over the backends does not fit the configured weights: {}; \
                     chi-square {:.2} with {} df, p = {:.3e} < significance {}",
                    shares.join(", "),
                    test.statistic,
                    test.df,
                    test.p_value,
                    lb.significance
                ),
                measurements,
            });
        }
        Ok(Outcome::from_measurements(measurements))
    }

    async fn stickiness(&self, ctx: &CheckContext) -> Step<Outcome> {
        let Some(sticky) = &self.gw.load_balancing.sticky else {
            return Ok(Outcome::skipped("load_balancing.sticky is not configured"));
        };
        let client = self.gateway()?;
        let model = self.chat_model(&self.gw.load_balancing.model)?;
        let mut pinned = BTreeMap::new();
        let mut problems = Vec::new();
        for i in 0..sticky.keys {
            let key = format!("citadel-itest-{}-sticky-{i}", self.settings.run_id);
            let req = ChatRequest::new(model.clone())
                .user("stickiness probe")
                .max_tokens(1)
                .header(sticky.header.clone(), key.clone());
            let mut backends = BTreeSet::new();
            for _ in 0..sticky.requests_per_key {
                let reply = client
                    .chat(&req)
                    .await
                    .map_err(|e| self.failed("request with a sticky key", e))?;
                match self.backend_of(&reply.headers) {
                    Some(b) => {
                        backends.insert(b);
                    }
                    None => {
                        return Ok(Outcome::failed(format!(
                            "an answer through gateway {} has no {} header: the backend is unknown",
                            self.gw.name, self.gw.backend_header
                        )));
                    }
                }
            }
            if backends.len() > 1 {
                problems.push(format!(
                    "{} `{key}` reached {}",
                    sticky.header,
                    quoted(&backends.iter().map(String::as_str).collect::<Vec<_>>())
                ));
            }
            pinned.insert(key, json!(backends));
        }
        ctx.detail("backends_per_key", json!(pinned));
        let measurements = vec![count("keys", sticky.keys as usize)];
        if problems.is_empty() {
            Ok(Outcome::from_measurements(measurements))
        } else {
            Ok(Outcome::Failed {
                message: format!(
                    "gateway {} is not sticky: {}",
                    self.gw.name,
                    problems.join("; ")
                ),
                measurements,
            })
        }
    }

    async fn request_id(&self, ctx: &CheckContext) -> Step<Outcome> {
        let client = self.gateway()?;
        let model = self.chat_model(&self.gw.round_trip.model)?;
        let mut backends = Vec::new();
        for n in 0..2 {
            let id = format!("citadel-itest-{}-rid-{n}-{}", self.settings.run_id, nonce());
            let req = ChatRequest::new(model.clone())
                .user("request id probe")
                .max_tokens(1)
                .header("x-request-id", id.clone());
            let reply = client
                .chat(&req)
                .await
                .map_err(|e| self.failed("request with x-request-id", e))?;
            let backend = self.backend_of(&reply.headers);
            match reply.header("x-request-id") {
                Some(back) if back == id => {}
                Some(back) => {
                    return Ok(Outcome::failed(format!(
                        "x-request-id `{id}` sent through gateway {} came back as `{}`{}",
                        self.gw.name,
                        citadel_itest_core::http::excerpt(back.as_bytes()),
                        on_backend(&backend)
                    )));
                }
                None => {
                    return Ok(Outcome::failed(format!(
                        "x-request-id `{id}` sent through gateway {} did not come back{}",
                        self.gw.name,
                        on_backend(&backend)
                    )));
                }
            }
            match backend {
                Some(b)
                    if self.gw.backends.is_empty()
                        || self.gw.backends.iter().any(|c| c.id == b) =>
                {
                    backends.push(b)
                }
                Some(b) => {
                    return Ok(Outcome::failed(format!(
                        "x-request-id came back, but from `{b}`, which is not a configured backend"
                    )));
                }
                None => {
                    return Ok(Outcome::failed(format!(
                        "x-request-id `{id}` came back without a {} header: nothing shows the \
                         backend saw it",
                        self.gw.backend_header
                    )));
                }
            }
        }
        ctx.detail("echoed_by", json!(backends));
        Ok(Outcome::from_measurements(vec![count("requests", 2)]))
    }

    async fn error_handling(&self, ctx: &CheckContext) -> Step<Outcome> {
        let client = self.gateway()?;
        let model = self.chat_model(&self.gw.round_trip.model)?;
        let unknown = format!("citadel-itest-no-such-model-{}", self.settings.run_id);
        let unknown_body = serde_json::to_vec(&json!({
            "model": unknown,
            "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": 1
        }))
        .map_err(|e| Outcome::error(ErrorKind::Harness, e.to_string()))?;
        let malformed =
            format!(r#"{{"model": "{model}", "messages": [{{"role": "user", "#).into_bytes();
        let size = usize::try_from(self.gw.error_handling.oversized_bytes).unwrap_or(usize::MAX);
        let filler = "a ".repeat(size / 2 + 1);
        let oversized = serde_json::to_vec(&json!({
            "model": model,
            "messages": [{"role": "user", "content": filler}],
            "max_tokens": 1
        }))
        .map_err(|e| Outcome::error(ErrorKind::Harness, e.to_string()))?;
        drop(filler);
        let probes: [(&str, Vec<u8>, u16); 3] = [
            ("unknown model", unknown_body, 404),
            ("malformed JSON", malformed, 400),
            ("oversized body", oversized, 413),
        ];
        let mut problems = Vec::new();
        let mut seen = BTreeMap::new();
        let mut measurements = Vec::new();
        for (what, body, expected) in probes {
            let len = body.len();
            let req = client
                .request(Method::POST, "chat/completions")
                .header(header::CONTENT_TYPE, "application/json")
                .body(body);
            let started = Instant::now();
            let answer = client.send_raw("POST /v1/chat/completions", req).await;
            measurements.push(Measurement::duration(
                format!("{}_time", what.to_lowercase().replace(' ', "_")),
                started.elapsed(),
            ));
            match answer {
                Err(e) => problems.push(format!("{what} ({len} bytes): {e}")),
                Ok(raw) => {
                    seen.insert(
                        what,
                        json!({"status": raw.status.as_u16(), "content_type": raw.content_type()}),
                    );
                    if let Some(p) = judge_error(&raw, expected) {
                        problems.push(format!("{what}: {p}"));
                    }
                }
            }
        }
        ctx.detail("answers", json!(seen));
        if problems.is_empty() {
            Ok(Outcome::from_measurements(measurements))
        } else {
            Ok(Outcome::Failed {
                message: format!(
                    "gateway {} mishandles bad requests: {}",
                    self.gw.name,
                    problems.join("; ")
                ),
                measurements,
            })
        }
    }

    async fn performance(&self, ctx: &CheckContext) -> Step<Outcome> {
        let gateway = self.gateway()?;
        let model = self.chat_model(&self.gw.round_trip.model)?;
        let direct: Vec<(String, Client)> = self
            .gw
            .hosts_of(&model)
            .into_iter()
            .filter_map(|b| b.url.as_ref().map(|u| (b.id.clone(), u.clone())))
            .map(|(id, u)| self.client_at(&u).map(|c| (id, c)))
            .collect::<Result<_, _>>()?;
        let req = ChatRequest::new(model).user("latency probe").max_tokens(1);
        let n = self.gw.performance.samples as usize;
        let (mut through, mut straight) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for i in 0..n {
            let gateway_first = i % 2 == 0;
            for leg in 0..2 {
                let via_gateway = (leg == 0) == gateway_first;
                if via_gateway {
                    let r = gateway
                        .chat(&req)
                        .await
                        .map_err(|e| self.failed("timed request", e))?;
                    through.push(r.elapsed);
                } else if !direct.is_empty() {
                    let (id, c) = &direct[i % direct.len()];
                    let r = c.chat(&req).await.map_err(|e| {
                        Outcome::failed(format!("timed request straight to backend {id}: {e}"))
                    })?;
                    straight.push(r.elapsed);
                }
            }
        }
        let limit = ms(self.settings.latency_p95);
        let mut measurements = vec![
            Measurement::percentile_ms("latency_p50", &through, 0.50),
            Measurement::percentile_ms("latency_p95", &through, 0.95)
                .with_threshold(Threshold::lt(limit)),
            Measurement::percentile_ms("latency_p99", &through, 0.99),
            Measurement::percentile_ms("latency_max", &through, 1.0),
            count("samples", through.len()),
        ];
        if direct.is_empty() {
            ctx.detail(
                "overhead",
                "not measured: no backend of the model has a `url` to call directly",
            );
        } else {
            let p50 = |s: &[Duration]| citadel_itest_core::outcome::percentile(s, 0.5);
            measurements.push(Measurement::percentile_ms(
                "direct_latency_p50",
                &straight,
                0.50,
            ));
            measurements.push(Measurement::percentile_ms(
                "direct_latency_p95",
                &straight,
                0.95,
            ));
            if let (Some(g), Some(d)) = (p50(&through), p50(&straight)) {
                let overhead = ms(g) - ms(d);
                let mut m = Measurement::new("overhead_p50", overhead, Unit::Milliseconds);
                if let Some(max) = self.gw.performance.max_overhead {
                    m = m.with_threshold(Threshold::lt(ms(max)));
                }
                measurements.push(m);
            }
        }
        Ok(Outcome::from_measurements(measurements))
    }
}

impl GatewayCheck {
    async fn failover(&self, ctx: &CheckContext) -> Step<Outcome> {
        let Some(f) = &self.gw.failover else {
            return Ok(Outcome::skipped("failover is not configured"));
        };
        let Some(action) = f.action.clone() else {
            return Ok(Outcome::skipped(format!(
                "failover.action is not set: nothing makes backend `{}` unavailable",
                f.backend
            )));
        };
        if !f.disposable {
            return Ok(Outcome::skipped(
                "failover.disposable is not true: the backend may not be made unavailable",
            ));
        }
        let Some(down) = self.gw.backends.iter().find(|b| b.id == f.backend) else {
            return Ok(Outcome::error(
                ErrorKind::Harness,
                format!(
                    "failover.backend `{}` is not a configured backend",
                    f.backend
                ),
            ));
        };
        let client = self.gateway()?;
        let model = self.chat_model(&self.gw.load_balancing.model)?;
        let req = ChatRequest::new(model).user("failover probe").max_tokens(1);
        let url = down.url.clone();
        let bound = f.action_timeout;
        // Registered first: a cancellation while it is being taken down still brings it back.
        let restore = ctx.cleanup(down.id.clone(), "backend made unavailable", {
            let (action, url) = (action.clone(), url.clone());
            async move {
                act(&action, url.as_deref(), false, bound)
                    .await
                    .map_err(Into::into)
            }
        });
        act(&action, url.as_deref(), true, bound)
            .await
            .map_err(|e| {
                Outcome::error(
                    ErrorKind::Harness,
                    format!("make backend `{}` unavailable: {e}", down.id),
                )
            })?;
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let (mut errors, mut first_error) = (0u32, None);
        for _ in 0..f.requests {
            match client.chat(&req).await {
                Ok(r) => {
                    let b = self
                        .backend_of(&r.headers)
                        .unwrap_or_else(|| "(unnamed)".into());
                    *counts.entry(b).or_default() += 1;
                }
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        ctx.detail("absorbed_by", json!(counts));
        let rate = f64::from(errors) / f64::from(f.requests);
        let mut measurements = vec![
            count("requests", f.requests as usize),
            count("errors", errors as usize),
            Measurement::new("error_rate", rate, Unit::Ratio)
                .with_threshold(Threshold::le(f.error_budget)),
        ];
        // Bring it back (the registered removal stays as the fallback until this succeeds).
        act(&action, url.as_deref(), false, bound)
            .await
            .map_err(|e| {
                Outcome::error(
                    ErrorKind::Harness,
                    format!("bring backend `{}` back: {e}", down.id),
                )
            })?;
        restore.disarm();
        if let Some(n) = counts.get(&down.id) {
            return Ok(Outcome::error(
                ErrorKind::Harness,
                format!(
                    "backend `{}` still served {n} requests after it was made unavailable: the \
                     action did not take it down",
                    down.id
                ),
            ));
        }
        if rate > f.error_budget {
            return Ok(Outcome::Failed {
                message: format!(
                    "with backend `{}` unavailable, {errors} of {} requests through gateway {} \
                     failed: error rate {:.1}% over the budget of {:.1}%; served by {}; first \
                     error: {}",
                    down.id,
                    f.requests,
                    self.gw.name,
                    rate * 100.0,
                    f.error_budget * 100.0,
                    served(&counts),
                    first_error.unwrap_or_default()
                ),
                measurements,
            });
        }
        // Recovery: the backend serves through the gateway again within recovery_time.
        let started = Instant::now();
        let until = started + f.recovery_time;
        let mut tries = 0u32;
        let mut others: BTreeMap<String, u64> = BTreeMap::new();
        let recovered = loop {
            if Instant::now() >= until {
                break None;
            }
            tries += 1;
            if let Ok(r) = client.chat(&req).await {
                match self.backend_of(&r.headers) {
                    Some(b) if b == down.id => break Some(started.elapsed()),
                    Some(b) => *others.entry(b).or_default() += 1,
                    None => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        match recovered {
            Some(t) => {
                measurements.push(
                    Measurement::duration("recovery_time", t)
                        .with_threshold(Threshold::lt(ms(f.recovery_time))),
                );
                Ok(Outcome::from_measurements(measurements))
            }
            None => {
                measurements.push(Measurement::missing("recovery_time", Unit::Milliseconds));
                Ok(Outcome::Failed {
                    message: format!(
                        "backend `{}` did not serve through gateway {} again within {} of being \
                         brought back ({tries} requests, served by {})",
                        down.id,
                        self.gw.name,
                        humantime::format_duration(f.recovery_time),
                        served(&others)
                    ),
                    measurements,
                })
            }
        }
    }
}

fn served(counts: &BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return "no backend".to_string();
    }
    counts
        .iter()
        .map(|(b, n)| format!("{b} ({n})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Make the backend unavailable (`down`) or bring it back, within `bound`.
async fn act(
    action: &FailoverAction,
    url: Option<&str>,
    down: bool,
    bound: Duration,
) -> Result<(), String> {
    match action {
        FailoverAction::FixtureFaults => {
            let base = url.ok_or("the backend has no url")?;
            let mut u = url::Url::parse(base).map_err(|e| format!("backend url: {e}"))?;
            u.set_path("/fixture/faults");
            u.set_query(None);
            let http = reqwest::Client::builder()
                .no_proxy()
                .timeout(bound)
                .build()
                .map_err(|e| error_chain(&e))?;
            let req = if down {
                http.post(u.clone()).json(&json!({ "unavailable": true }))
            } else {
                http.delete(u.clone())
            };
            let what = if down { "POST" } else { "DELETE" };
            let shown = citadel_itest_core::config::redact_url(u.as_str());
            let resp = req
                .send()
                .await
                .map_err(|e| format!("{what} {shown}: {}", error_chain(&e.without_url())))?;
            if !resp.status().is_success() {
                return Err(format!(
                    "{what} {shown} answered {}",
                    resp.status().as_u16()
                ));
            }
            Ok(())
        }
        FailoverAction::Command { stop, start } => {
            let argv = if down { stop } else { start };
            let (program, args) = argv.split_first().ok_or("no program given")?;
            let mut cmd = tokio::process::Command::new(program);
            cmd.args(args)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true);
            let out = tokio::time::timeout(bound, cmd.output())
                .await
                .map_err(|_| {
                    format!(
                        "`{program}` did not finish within {}",
                        humantime::format_duration(bound)
                    )
                })?
                .map_err(|e| {
                    format!("run `{program}`: {}", citadel_itest_core::io_error_text(&e))
                })?;
            if !out.status.success() {
                return Err(format!(
                    "`{program}` exited with {}: {}",
                    out.status,
                    citadel_itest_core::http::excerpt(&out.stderr)
                ));
            }
            Ok(())
        }
    }
}

/// What is wrong with an answer to a bad request, if anything.
fn judge_error(raw: &RawReply, expected: u16) -> Option<String> {
    let status = raw.status.as_u16();
    let ct = raw.content_type();
    let api = raw.api_error();
    if status != expected {
        return Some(format!(
            "answered {status} ({ct}), expected {expected} with an OpenAI error: {}",
            raw.excerpt()
        ));
    }
    if !ct.to_ascii_lowercase().starts_with("application/json") {
        return Some(format!(
            "answered {status} with {ct}, not an OpenAI error in JSON: {}",
            raw.excerpt()
        ));
    }
    match api {
        None => Some(format!(
            "answered {status} without an OpenAI error body (`error.message`): {}",
            raw.excerpt()
        )),
        Some(_) => None,
    }
}

fn finish_problem(finish: Option<&str>) -> Option<String> {
    match finish {
        Some("stop" | "length") => None,
        Some(other) => Some(format!(
            "`finish_reason` is `{other}`, expected `stop` or `length`"
        )),
        None => Some("`finish_reason` is missing".to_string()),
    }
}

fn usage_problems(
    prompt: u64,
    completion: u64,
    total: u64,
    max_tokens: u32,
    finish: Option<&str>,
) -> Vec<String> {
    let mut p = Vec::new();
    if prompt.checked_add(completion) != Some(total) {
        p.push(format!(
            "`usage.total_tokens` {total} is not prompt {prompt} + completion {completion}"
        ));
    }
    if completion == 0 {
        p.push("`usage.completion_tokens` is 0 although content arrived".to_string());
    }
    if completion > u64::from(max_tokens) {
        p.push(format!(
            "`usage.completion_tokens` {completion} is over max_tokens {max_tokens}"
        ));
    }
    if finish == Some("length") && completion != u64::from(max_tokens) {
        p.push(format!(
            "`finish_reason` is `length` but {completion} tokens were generated, not max_tokens {max_tokens}"
        ));
    }
    p
}

fn on_backend(backend: &Option<String>) -> String {
    backend
        .as_ref()
        .map_or(String::new(), |b| format!(" (backend {b})"))
}

fn quoted<S: AsRef<str>>(items: &[S]) -> String {
    items
        .iter()
        .map(|s| format!("`{}`", s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn count(name: &str, n: usize) -> Measurement {
    Measurement::new(name, n as f64, Unit::Count)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A short value that differs between calls.
fn nonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!("{:08x}", h.finish() as u32)
}

#[async_trait]
impl Check for GatewayCheck {
    fn id(&self) -> &CheckId {
        &self.id
    }

    fn category(&self) -> Category {
        self.aspect.category()
    }

    fn timeout(&self) -> Option<Duration> {
        Some(self.timeout)
    }

    fn retry_policy(&self) -> Option<RetryPolicy> {
        None
    }

    fn exclusive(&self) -> Vec<Resource> {
        vec![
            Resource::new("gateway-traffic", &self.gw.url),
            Resource::traffic(&self.gw.url),
        ]
    }

    async fn run(&self, ctx: &CheckContext) -> Result<Outcome, BoxError> {
        let body = async {
            match self.aspect {
                Aspect::Catalogue => self.catalogue(ctx).await,
                Aspect::Routing => self.routing(ctx).await,
                Aspect::RoundTrip => self.round_trip(ctx).await,
                Aspect::Streaming => self.streaming(ctx).await,
                Aspect::LoadBalancing => self.load_balancing(ctx).await,
                Aspect::Stickiness => self.stickiness(ctx).await,
                Aspect::RequestId => self.request_id(ctx).await,
                Aspect::ErrorHandling => self.error_handling(ctx).await,
                Aspect::Performance => self.performance(ctx).await,
                Aspect::Failover => self.failover(ctx).await,
            }
        };
        let outcome = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => Err(Outcome::error(
                ErrorKind::Cancelled,
                format!("{} of gateway {} cancelled", self.aspect, self.gw.name),
            )),
            r = body => r,
        };
        Ok(outcome.unwrap_or_else(|o| o))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_must_add_up() {
        assert!(usage_problems(5, 16, 21, 16, Some("stop")).is_empty());
        assert_eq!(usage_problems(5, 16, 20, 16, Some("stop")).len(), 1);
        assert_eq!(usage_problems(5, 0, 5, 16, Some("stop")).len(), 1);
        assert_eq!(usage_problems(5, 8, 13, 16, Some("length")).len(), 1);
        assert!(usage_problems(5, 17, 22, 16, Some("stop"))[0].contains("over max_tokens"));
        assert_eq!(finish_problem(None).unwrap(), "`finish_reason` is missing");
        assert!(finish_problem(Some("content_filter")).is_some());
    }
}
