//! Qdrant checks: gRPC through qdrant-client, REST through reqwest.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use citadel_itest_core::config::{SecretString, redact_text};
use citadel_itest_core::http::DEFAULT_MAX_BODY;
use citadel_itest_core::{CheckContext, ErrorKind, Measurement, Outcome, Status, error_chain};
use qdrant_client::qdrant::{
    CountPointsBuilder, CreateCollectionBuilder, Distance as QdrantDistance, PointStruct,
    QueryPointsBuilder, UpsertPointsBuilder, VectorParamsBuilder, point_id::PointIdOptions,
};
use qdrant_client::{Payload, Qdrant, QdrantError};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;
use tonic::Code;

use crate::config::{Distance, redact};
use crate::support::{
    Cut, ProbeEnd, Reply, SilentListener, closed_loopback_port, count, excerpt, expected, flag,
    io_words_in_chain, latency_measurements, probe_http, probe_setup_error, problems_outcome,
    resolve, send, temp_name, timed_out, version_measurement, within, wrong_secret,
};
use crate::{Aspect, Common, QdrantTarget, Settings};

const KIND: &str = "qdrant";
/// Points written to each temporary collection.
const POINTS: u64 = 16;
/// The point whose own vector the operations check searches with.
const PROBE_POINT: u64 = 5;
/// What a real Qdrant answers on `GET /readyz` when it is ready.
const READY_TEXT: &str = "all shards are ready";

/// One aspect of one Qdrant server, checked over gRPC (qdrant-client) and REST.
///
/// - `configuration`: both URLs parse (http/https, host, distinct ports), the API key resolves
///   and is present when `require_api_key` is set, the dimension is in range; both hosts
///   resolve.
/// - `connectivity`: REST `GET /readyz` must answer 200 `all shards are ready` (anything
///   else, such as a maintenance page, fails naming what came back), `GET /` its title and
///   version, gRPC `HealthCheck` its version; both must report the same version
///   (`server_version`, 1.18.3 as 11803). Retries until ready.
/// - `authentication`: the configured key lists collections over gRPC and REST (the REST
///   listing must have Qdrant's shape, `{"result": {"collections": [{"name"}]}, "status":
///   "ok"}`; a wrong field fails, named); a random wrong
///   key is refused on both (`UNAUTHENTICATED`, HTTP 401); with `require_api_key`, requests
///   without a key are refused too: a server that accepts them fails the check. Without a key
///   configured (and not required), the check is skipped once both protocols have answered
///   without one.
/// - `operations`: a temporary collection `citadel_itest_<run>_<name>_ops_<n>` with the
///   configured dimension and distance: create, upsert 16 points, query with one point's vector
///   (it must come back first), exact count over gRPC and over REST, delete, and confirm it is
///   gone. Its removal is registered with the runner before it is created, so it is deleted on
///   failure, timeout, panic and cancellation too, after the check ended and before the run
///   returns; a removal that fails is reported as a leftover beside the check's verdict.
///   Skipped in read-only mode.
/// - `performance`: `samples` timed nearest-neighbour queries on a temporary collection of 16
///   points: `latency_p50/p95/p99/max`, p95 held to `performance_targets.latency_p95`. Skipped
///   in read-only mode.
/// - `error_handling`: a just-closed loopback port is refused over gRPC and REST, a loopback
///   listener that never answers is cut at `request_timeout` on both, the clients then reach
///   the server again, and a query on a missing collection yields Qdrant's not-found error on
///   both (`NOT_FOUND`, HTTP 404 `Not found: Collection ... doesn't exist!`), recognised.
///
/// Every REST answer is read through the core's bounded reader: a body over the cap (4 MiB
/// unless [`QdrantCheck::max_body`] says otherwise) fails with `body over 4 MiB`, one that does
/// not end within `request_timeout` fails naming it.
#[derive(Debug, Clone)]
pub struct QdrantCheck {
    common: Common,
    target: Arc<QdrantTarget>,
    max_body: usize,
}

/// Which key a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Configured,
    Without,
    Wrong,
}

/// Clients for one run of a check: gRPC with the configured key and REST.
struct Clients<'a> {
    check: &'a QdrantCheck,
    grpc: Qdrant,
    rest: reqwest::Client,
    rest_base: url::Url,
    key: Option<SecretString>,
    wrong: String,
}

impl QdrantCheck {
    /// The `aspect` check of `target`.
    pub fn new(target: &QdrantTarget, aspect: Aspect, settings: &Settings) -> Self {
        QdrantCheck {
            common: Common::new(&target.name, target.timeout, aspect, settings),
            target: Arc::new(target.clone()),
            max_body: DEFAULT_MAX_BODY,
        }
    }

    /// Read at most `bytes` of each REST answer's body (default
    /// [`DEFAULT_MAX_BODY`](citadel_itest_core::http::DEFAULT_MAX_BODY), 4 MiB); a longer body
    /// fails the check.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    fn name(&self) -> &str {
        &self.common.name
    }

    fn cannot(&self, what: impl std::fmt::Display) -> Outcome {
        Outcome::error(
            ErrorKind::Harness,
            format!("cannot check {KIND} {}: {what}", self.name()),
        )
    }

    /// A gRPC client for `url` carrying `key`; it connects lazily.
    fn grpc_client(&self, url: &str, key: Option<&str>) -> Result<Qdrant, Outcome> {
        let mut config = Qdrant::from_url(url)
            .timeout(self.target.request_timeout)
            .connect_timeout(self.target.connect_timeout)
            .skip_compatibility_check();
        config.set_pool_size(1);
        if let Some(k) = key {
            config.set_api_key(k);
        }
        config.build().map_err(|e| {
            self.cannot(format!(
                "build the gRPC client for {}: {}",
                redact(url),
                error_chain(&e)
            ))
        })
    }

    fn clients(&self) -> Result<Clients<'_>, Outcome> {
        let problems = self.target.problems();
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
            return Err(self.cannot(format!("it is misconfigured: {}", list.join("; "))));
        }
        let key = match &self.target.api_key {
            None => None,
            Some(s) => Some(
                s.resolve()
                    .map_err(|e| self.cannot(format!("api_key: {}", error_chain(&e))))?,
            ),
        };
        let mut rest_base = url::Url::parse(&self.target.rest_url)
            .map_err(|e| self.cannot(format!("rest_url: {e}")))?;
        if !rest_base.path().ends_with('/') {
            let path = format!("{}/", rest_base.path());
            rest_base.set_path(&path);
        }
        let grpc = self.grpc_client(
            &self.target.grpc_url,
            key.as_ref().map(SecretString::expose),
        )?;
        let rest = reqwest::Client::builder()
            .connect_timeout(self.target.connect_timeout)
            .timeout(self.target.request_timeout)
            .build()
            .map_err(|e| self.cannot(format!("build the HTTP client: {}", error_chain(&e))))?;
        Ok(Clients {
            check: self,
            grpc,
            rest,
            rest_base,
            key,
            wrong: wrong_secret(),
        })
    }

    /// One gRPC call, bounded by `request_timeout` and the deadline.
    async fn grpc<T>(
        &self,
        ctx: &CheckContext,
        step: &str,
        fut: impl Future<Output = Result<T, QdrantError>>,
    ) -> Result<T, Outcome> {
        match within(
            ctx.deadline,
            self.target.request_timeout,
            "request_timeout",
            fut,
        )
        .await
        {
            Err(cut) => Err(cut.outcome(step)),
            Ok(Err(e)) => Err(self.grpc_failure(step, &e)),
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// A failed gRPC call: the client's own timeout is the same bound as ours.
    fn grpc_failure(&self, step: &str, e: &QdrantError) -> Outcome {
        match grpc_error(e).as_str() {
            "timed out" => Cut::Limit {
                after: self.target.request_timeout,
                key: "request_timeout",
            }
            .outcome(step),
            words => Outcome::failed(format!("{step}: {words}")),
        }
    }

    fn grpc_step(&self, call: &str) -> String {
        format!("gRPC {call} on {}", redact(&self.target.grpc_url))
    }

    async fn configuration(&self, ctx: &CheckContext) -> Result<Outcome, Outcome> {
        let problems = self.target.problems();
        if !problems.is_empty() {
            return Ok(problems_outcome(KIND, self.name(), &problems));
        }
        let mut measurements = Vec::new();
        for (which, raw) in [
            ("grpc", &self.target.grpc_url),
            ("rest", &self.target.rest_url),
        ] {
            let url = url::Url::parse(raw)
                .map_err(|e| Outcome::failed(format!("invalid URL `{}`: {e}", redact(raw))))?;
            let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']);
            let port = url.port_or_known_default().unwrap_or(80);
            let (_, dns_time) = resolve(
                &format!("resolve {} {which} host {host}", self.name()),
                host,
                port,
                ctx.deadline,
                self.target.connect_timeout,
            )
            .await?;
            measurements.push(Measurement::duration(format!("{which}_dns_time"), dns_time));
        }
        measurements.extend([
            count("collection_dimension", self.target.collection_dimension),
            Measurement::duration("connect_timeout", self.target.connect_timeout),
            Measurement::duration("request_timeout", self.target.request_timeout),
            flag("api_key_configured", self.target.api_key.is_some()),
            flag("api_key_required", self.target.require_api_key),
        ]);
        Ok(Outcome::passed().with_measurements(measurements))
    }

    async fn connectivity(&self, ctx: &CheckContext) -> Result<Outcome, Outcome> {
        let c = self.clients()?;
        let ready = c.ready(ctx).await?;
        let root = c.rest_ok(ctx, "GET", "", None).await?;
        let info: RootInfo = root.parse(&c.shown("GET", ""), "Qdrant's title and version")?;
        if !info.title.starts_with("qdrant") || info.version.trim().is_empty() {
            return Ok(Outcome::failed(format!(
                "GET {}: title \"{}\" and version \"{}\" are not Qdrant's: {}",
                c.shown_url(""),
                excerpt(info.title.as_bytes()),
                excerpt(info.version.as_bytes()),
                excerpt(&root.body)
            )));
        }
        let rest_version = info.version;
        let started = Instant::now();
        let health = self
            .grpc(ctx, &self.grpc_step("HealthCheck"), c.grpc.health_check())
            .await?;
        let grpc_time = started.elapsed();
        if health.version != rest_version {
            return Ok(Outcome::failed(format!(
                "{} reports version {} but REST {} reports {rest_version}: grpc_url and rest_url \
                 point at different servers",
                self.grpc_step("HealthCheck"),
                health.version,
                c.shown_url("")
            )));
        }
        let mut measurements = vec![
            Measurement::duration("readyz_time", ready.time),
            Measurement::duration("rest_version_time", root.time),
            Measurement::duration("grpc_health_time", grpc_time),
        ];
        measurements.extend(version_measurement(&health.version));
        ctx.detail("server_version", health.version.as_str());
        tracing::debug!(target_name = %self.name(), version = %health.version, "qdrant connected");
        Ok(Outcome::passed().with_measurements(measurements))
    }

    async fn authentication(&self, ctx: &CheckContext) -> Result<Outcome, Outcome> {
        let c = self.clients()?;
        let mut measurements = Vec::new();
        if c.key.is_none() {
            // Not configured and (validation guarantees) not required: show it is not needed.
            let grpc = c.list_grpc(ctx, Key::Without).await?;
            let rest = c.list_rest(ctx, Key::Without).await?;
            if rest.status == StatusCode::OK {
                c.listing(&rest)?;
            }
            return Ok(match (grpc, rest.status) {
                (Ok(()), StatusCode::OK) => Outcome::skipped(format!(
                    "no API key configured for {} and require_api_key is false: gRPC and REST \
                     answered without a key, so authentication is not required",
                    self.name()
                )),
                (Err(code), _) => Outcome::failed(format!(
                    "{}: {code:?} without an API key: the server requires one but no api_key is \
                     configured",
                    self.grpc_step("ListCollections")
                )),
                (Ok(()), status) => Outcome::failed(format!(
                    "GET {}: HTTP {} without an API key: the server requires one but no api_key \
                     is configured",
                    c.shown_url("collections"),
                    status.as_u16()
                )),
            });
        }

        let started = Instant::now();
        if let Err(code) = c.list_grpc(ctx, Key::Configured).await? {
            return Ok(Outcome::failed(format!(
                "{}: {code:?} with the configured API key",
                self.grpc_step("ListCollections")
            )));
        }
        measurements.push(Measurement::duration("grpc_auth_time", started.elapsed()));
        let ok = c.list_rest(ctx, Key::Configured).await?;
        if ok.status != StatusCode::OK {
            return Ok(Outcome::failed(format!(
                "GET {}: HTTP {} with the configured API key: {}",
                c.shown_url("collections"),
                ok.status.as_u16(),
                excerpt(&ok.body)
            )));
        }
        c.listing(&ok)
            .map_err(|o| o.with_measurements(measurements.clone()))?;
        measurements.push(Measurement::duration("rest_auth_time", ok.time));

        let mut probes = vec![(Key::Wrong, "a wrong API key", "wrong_key")];
        if self.target.require_api_key {
            probes.push((Key::Without, "no API key", "no_key"));
        }
        for (key, what, measure) in probes {
            let started = Instant::now();
            match c.list_grpc(ctx, key).await? {
                Err(Code::Unauthenticated | Code::PermissionDenied) => {
                    measurements.push(Measurement::duration(
                        format!("grpc_{measure}_rejection_time"),
                        started.elapsed(),
                    ))
                }
                Ok(()) => {
                    return Ok(Outcome::Failed {
                        message: format!(
                            "{} with {what} succeeded: the API key is not enforced",
                            self.grpc_step("ListCollections")
                        ),
                        measurements,
                    });
                }
                Err(code) => {
                    return Ok(Outcome::failed(format!(
                        "{} with {what}: expected UNAUTHENTICATED, got {code:?}",
                        self.grpc_step("ListCollections")
                    )));
                }
            }
            let reply = c.list_rest(ctx, key).await?;
            match reply.status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => measurements.push(
                    Measurement::duration(format!("rest_{measure}_rejection_time"), reply.time),
                ),
                StatusCode::OK => {
                    return Ok(Outcome::Failed {
                        message: format!(
                            "GET {} with {what} answered 200: the API key is not enforced",
                            c.shown_url("collections")
                        ),
                        measurements,
                    });
                }
                other => {
                    return Ok(Outcome::failed(format!(
                        "GET {} with {what}: expected HTTP 401, got {}: {}",
                        c.shown_url("collections"),
                        other.as_u16(),
                        excerpt(&reply.body)
                    )));
                }
            }
        }
        Ok(Outcome::passed().with_measurements(measurements))
    }

    fn read_only_skip(&self, what: &str) -> Outcome {
        Outcome::skipped(format!(
            "read-only mode (run.read_only: true): {what} on {} needs a temporary collection \
             ({}_<run>_*), so it was skipped",
            self.name(),
            crate::TEMP_PREFIX
        ))
    }

    async fn operations(&self, ctx: &CheckContext) -> Result<Outcome, Outcome> {
        if self.common.settings.read_only {
            return Ok(self.read_only_skip("the create/upsert/query/count/delete test"));
        }
        let c = self.clients()?;
        if let Some(age) = self.target.sweep_older_than {
            self.sweep(ctx, &c, age).await?;
        }
        let name = temp_name(&self.common.settings.run_id, self.name(), "ops");
        let guard = self.temp_collection(ctx, &c, name);
        let body = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => None,
            r = self.write_read_delete(ctx, &c, &guard) => Some(r),
        };
        self.finish(&guard, body, "operations")
    }

    /// The opt-in sweep (`sweep_older_than`): delete the temporary collections of earlier runs
    /// older than `age`, read from the run id in their names; never a collection whose name is
    /// not the harness's. What was deleted is the detail `swept`, what could not be is
    /// `sweep_failed` (the check goes on: its verdict is about the server's operations).
    async fn sweep(
        &self,
        ctx: &CheckContext,
        c: &Clients<'_>,
        age: Duration,
    ) -> Result<(), Outcome> {
        let listed = self
            .grpc(
                ctx,
                &self.grpc_step("ListCollections"),
                c.grpc.list_collections(),
            )
            .await?;
        let now = std::time::SystemTime::now();
        let own = format!("{}_{}_", crate::TEMP_PREFIX, self.common.settings.run_id);
        let (mut swept, mut failed) = (Vec::new(), Vec::new());
        for d in listed.collections {
            if d.name.starts_with(&own) || !citadel_itest_core::temp::is_stale(&d.name, age, now) {
                continue;
            }
            let step = self.grpc_step(&format!("delete leftover collection {}", d.name));
            match self
                .grpc(ctx, &step, c.grpc.delete_collection(d.name.as_str()))
                .await
            {
                Ok(_) => swept.push(d.name),
                Err(o) if o.status() == Status::Error => return Err(o),
                Err(o) => failed.push(o.message().unwrap_or_default().to_string()),
            }
        }
        ctx.detail("swept", swept);
        if !failed.is_empty() {
            ctx.detail("sweep_failed", failed);
        }
        Ok(())
    }

    /// A temporary collection whose removal is registered with the runner before it is
    /// created: it runs once the check has ended, whatever the outcome (cancellation, timeout
    /// and panic included), bounded by `request_timeout`; a removal that fails is reported as
    /// a leftover beside the check's own verdict.
    fn temp_collection(&self, ctx: &CheckContext, c: &Clients<'_>, name: String) -> TempCollection {
        let client = c.grpc.clone();
        let bound = self.target.request_timeout;
        let removing = name.clone();
        let handle = ctx.cleanup(
            self.name().to_string(),
            format!("collection {name}"),
            async move {
                match tokio::time::timeout(bound, client.delete_collection(removing.as_str())).await
                {
                    Err(_) => Err(format!(
                        "delete collection {removing}: no answer within {} (request_timeout)",
                        crate::support::fmt_duration(bound)
                    )
                    .into()),
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(QdrantError::ResponseError { status }))
                        if status.code() == Code::NotFound =>
                    {
                        Ok(())
                    }
                    Ok(Err(e)) => {
                        Err(format!("delete collection {removing}: {}", grpc_error(&e)).into())
                    }
                }
            },
        );
        TempCollection { name, handle }
    }

    /// After the body of a writing check: its own verdict stands; what it created and did not
    /// remove itself is removed by the registered cleanup (and named as a leftover if that
    /// fails).
    fn finish(
        &self,
        guard: &TempCollection,
        body: Option<Result<Outcome, Outcome>>,
        what: &str,
    ) -> Result<Outcome, Outcome> {
        match body {
            None => Err(Outcome::error(
                ErrorKind::Cancelled,
                format!(
                    "{what} on {} cancelled; the temporary collection {} is removed by the \
                     run's cleanup",
                    self.name(),
                    guard.name
                ),
            )),
            Some(result) => result,
        }
    }

    async fn create_and_fill(
        &self,
        ctx: &CheckContext,
        c: &Clients<'_>,
        guard: &TempCollection,
        measurements: &mut Vec<Measurement>,
    ) -> Result<(), Outcome> {
        let name = guard.name.clone();
        let dim = self.target.collection_dimension;
        let started = Instant::now();
        let created = self
            .grpc(
                ctx,
                &self.grpc_step(&format!("create collection {name}")),
                c.grpc
                    .create_collection(CreateCollectionBuilder::new(&name).vectors_config(
                        VectorParamsBuilder::new(dim, distance(self.target.distance)),
                    )),
            )
            .await?;
        if !created.result {
            return Err(Outcome::failed(format!(
                "{}: the server answered result=false",
                self.grpc_step(&format!("create collection {name}"))
            )));
        }
        measurements.push(Measurement::duration("create_time", started.elapsed()));

        let points: Vec<PointStruct> = (0..POINTS)
            .map(|id| {
                let mut payload = Payload::new();
                payload.insert("citadel_itest", true);
                payload.insert("n", id as i64);
                PointStruct::new(id, vector(id, dim), payload)
            })
            .collect();
        let started = Instant::now();
        self.grpc(
            ctx,
            &self.grpc_step(&format!("upsert {POINTS} points into {name}")),
            c.grpc
                .upsert_points(UpsertPointsBuilder::new(&name, points).wait(true)),
        )
        .await?;
        measurements.push(Measurement::duration("upsert_time", started.elapsed()));
        Ok(())
    }

    async fn nearest(
        &self,
        ctx: &CheckContext,
        c: &Clients<'_>,
        name: &str,
        point: u64,
    ) -> Result<(Option<u64>, usize), Outcome> {
        let dim = self.target.collection_dimension;
        let found = self
            .grpc(
                ctx,
                &self.grpc_step(&format!("query {name}")),
                c.grpc.query(
                    QueryPointsBuilder::new(name)
                        .query(vector(point, dim))
                        .limit(3),
                ),
            )
            .await?;
        let first = found
            .result
            .first()
            .and_then(|p| match p.id.as_ref()?.point_id_options {
                Some(PointIdOptions::Num(n)) => Some(n),
                _ => None,
            });
        Ok((first, found.result.len()))
    }

    async fn write_read_delete(
        &self,
        ctx: &CheckContext,
        c: &Clients<'_>,
        guard: &TempCollection,
    ) -> Result<Outcome, Outcome> {
        let name = guard.name.clone();
        let mut measurements = Vec::new();
        let total = Instant::now();
        self.create_and_fill(ctx, c, guard, &mut measurements)
            .await
            .map_err(|o| o.with_measurements(measurements.clone()))?;

        let started = Instant::now();
        let (first, hits) = self.nearest(ctx, c, &name, PROBE_POINT).await?;
        measurements.push(Measurement::duration("query_time", started.elapsed()));
        if first != Some(PROBE_POINT) {
            return Err(Outcome::Failed {
                message: format!(
                    "{}: the nearest point to point {PROBE_POINT}'s own vector is {first:?} ({hits} hits), not {PROBE_POINT}",
                    self.grpc_step(&format!("query {name}"))
                ),
                measurements,
            });
        }

        let started = Instant::now();
        let counted = self
            .grpc(
                ctx,
                &self.grpc_step(&format!("count {name}")),
                c.grpc.count(CountPointsBuilder::new(&name).exact(true)),
            )
            .await?
            .result
            .map(|r| r.count);
        measurements.push(Measurement::duration("count_time", started.elapsed()));
        if counted != Some(POINTS) {
            return Err(Outcome::Failed {
                message: format!(
                    "{}: {counted:?} points, expected {POINTS}",
                    self.grpc_step(&format!("count {name}"))
                ),
                measurements,
            });
        }

        let path = format!("collections/{name}/points/count");
        let reply = c
            .rest_ok(ctx, "POST", &path, Some(json!({ "exact": true })))
            .await?;
        let rest_count = reply
            .parse::<Answer<CountResult>>(&c.shown("POST", &path), "a point count")
            .map_err(|o| o.with_measurements(measurements.clone()))?
            .result
            .count;
        let rest_count = Some(rest_count);
        measurements.push(Measurement::duration("rest_count_time", reply.time));
        if rest_count != Some(POINTS) {
            return Err(Outcome::Failed {
                message: format!(
                    "POST {}: count {rest_count:?}, expected {POINTS}: {}",
                    c.shown_url(&path),
                    excerpt(&reply.body)
                ),
                measurements,
            });
        }
        measurements.push(count("points", POINTS));

        let started = Instant::now();
        let deleted = self
            .grpc(
                ctx,
                &self.grpc_step(&format!("delete collection {name}")),
                c.grpc.delete_collection(name.as_str()),
            )
            .await?;
        if !deleted.result {
            return Err(Outcome::Failed {
                message: format!(
                    "{}: the server answered result=false",
                    self.grpc_step(&format!("delete collection {name}"))
                ),
                measurements,
            });
        }
        measurements.push(Measurement::duration("delete_time", started.elapsed()));
        let listed = self
            .grpc(
                ctx,
                &self.grpc_step("ListCollections"),
                c.grpc.list_collections(),
            )
            .await?;
        if listed.collections.iter().any(|d| d.name == name) {
            return Err(Outcome::Failed {
                message: format!("{name} is still listed after its deletion"),
                measurements,
            });
        }
        guard.handle.disarm();
        measurements.push(Measurement::duration("operations_time", total.elapsed()));
        Ok(Outcome::passed().with_measurements(measurements))
    }

    async fn performance(&self, ctx: &CheckContext) -> Result<Outcome, Outcome> {
        if self.common.settings.read_only {
            return Ok(self.read_only_skip("the query benchmark"));
        }
        let c = self.clients()?;
        let name = temp_name(&self.common.settings.run_id, self.name(), "perf");
        let guard = self.temp_collection(ctx, &c, name);
        let body = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => None,
            r = self.benchmark(ctx, &c, &guard) => Some(r),
        };
        self.finish(&guard, body, "performance")
    }

    async fn benchmark(
        &self,
        ctx: &CheckContext,
        c: &Clients<'_>,
        guard: &TempCollection,
    ) -> Result<Outcome, Outcome> {
        let name = guard.name.clone();
        let mut setup = Vec::new();
        self.create_and_fill(ctx, c, guard, &mut setup).await?;
        self.nearest(ctx, c, &name, 0).await?;
        let samples = self.common.settings.samples.max(1);
        let mut times = Vec::with_capacity(samples as usize);
        for n in 0..u64::from(samples) {
            let point = n % POINTS;
            let started = Instant::now();
            let result = self.nearest(ctx, c, &name, point).await;
            let elapsed = started.elapsed();
            let failure = match result {
                Ok((Some(first), _)) if first == point => None,
                Ok((first, hits)) => Some(Outcome::failed(format!(
                    "query {} of {samples} on {name}: nearest is {first:?} ({hits} hits), expected {point}",
                    n + 1
                ))),
                Err(o) if o.status() == Status::Error => return Err(o),
                Err(o) => Some(o),
            };
            if let Some(o) = failure {
                let mut ms = latency_measurements(&times, self.common.settings.latency_p95);
                ms.push(count("failed_at", n + 1));
                return Ok(Outcome::Failed {
                    message: o.message().unwrap_or_default().to_string(),
                    measurements: ms,
                });
            }
            times.push(elapsed);
        }
        let mut measurements = latency_measurements(&times, self.common.settings.latency_p95);
        measurements.push(count("points", POINTS));
        let deleted = self
            .grpc(
                ctx,
                &self.grpc_step(&format!("delete collection {name}")),
                c.grpc.delete_collection(name.as_str()),
            )
            .await
            .map_err(|o| o.with_measurements(measurements.clone()))?;
        if deleted.result {
            guard.handle.disarm();
        }
        Ok(Outcome::from_measurements(measurements))
    }

    async fn error_handling(&self, ctx: &CheckContext) -> Result<Outcome, Outcome> {
        let c = self.clients()?;
        let limit = self.target.request_timeout;
        let key = c.key.as_ref().map(SecretString::expose);
        let mut measurements = Vec::new();

        // 1. A wrong port, on both protocols: refused, and said so.
        let port = closed_loopback_port().map_err(|e| probe_setup_error("a closed port", &e))?;
        let grpc_url = format!("http://127.0.0.1:{port}");
        let rest_url = format!("http://127.0.0.1:{port}/readyz");
        let closed = self.grpc_client(&grpc_url, key)?;
        let grpc_step = format!("gRPC HealthCheck on {grpc_url}");
        let rest_step = format!("GET {rest_url}");
        let (g, r) = tokio::join!(
            probe_grpc(ctx.deadline, limit, &grpc_step, closed.health_check()),
            probe_http(ctx.deadline, limit, &rest_step, c.rest.get(&rest_url)),
        );
        for (end, proto) in [(g, "grpc"), (r, "rest")] {
            match end {
                ProbeEnd::Refused(t) => {
                    measurements.push(Measurement::duration(format!("{proto}_refused_time"), t))
                }
                ProbeEnd::TimedOut(_) => {
                    let step = if proto == "grpc" {
                        &grpc_step
                    } else {
                        &rest_step
                    };
                    return Ok(Outcome::failed(format!(
                        "{step}: expected connection refused, got a timeout"
                    )));
                }
                ProbeEnd::Other(o) => return Err(expected(o, "connection refused")),
            }
        }

        // 2. A listener that never answers, on both protocols: cut at request_timeout.
        let silent = SilentListener::start()
            .await
            .map_err(|e| probe_setup_error("a silent listener", &e))?;
        let grpc_url = format!("http://{}", silent.addr());
        let rest_url = format!("http://{}/readyz", silent.addr());
        let hanging = self.grpc_client(&grpc_url, key)?;
        let grpc_step = format!("gRPC HealthCheck on {grpc_url} (a listener that never answers)");
        let rest_step = format!("GET {rest_url} (a listener that never answers)");
        let (g, r) = tokio::join!(
            probe_grpc(ctx.deadline, limit, &grpc_step, hanging.health_check()),
            probe_http(ctx.deadline, limit, &rest_step, c.rest.get(&rest_url)),
        );
        for (end, proto, step) in [(g, "grpc", &grpc_step), (r, "rest", &rest_step)] {
            match end {
                ProbeEnd::TimedOut(t) => {
                    measurements.push(Measurement::duration(format!("{proto}_silent_timeout"), t))
                }
                ProbeEnd::Refused(_) => {
                    return Ok(Outcome::failed(format!(
                        "{step}: expected a timeout, got connection refused"
                    )));
                }
                ProbeEnd::Other(o) => return Err(expected(o, "a timeout")),
            }
        }
        drop(silent);

        // 3. The clients reach the server again.
        let started = Instant::now();
        self.grpc(
            ctx,
            &format!("recover: {}", self.grpc_step("HealthCheck")),
            c.grpc.health_check(),
        )
        .await
        .map_err(|o| o.with_measurements(measurements.clone()))?;
        let ready = c.ready(ctx).await.map_err(|o| match o {
            Outcome::Failed { message, .. } => Outcome::Failed {
                message: format!("recover: {message}"),
                measurements: measurements.clone(),
            },
            other => other,
        })?;
        measurements.push(Measurement::duration(
            "grpc_recovery_time",
            started.elapsed() - ready.time,
        ));
        measurements.push(Measurement::duration("rest_recovery_time", ready.time));

        // 4. A missing collection: Qdrant's not-found error on both protocols, recognised.
        let missing = temp_name(&self.common.settings.run_id, self.name(), "missing");
        let dim = self.target.collection_dimension;
        let step = self.grpc_step(&format!("query missing collection {missing}"));
        let started = Instant::now();
        match within(
            ctx.deadline,
            limit,
            "request_timeout",
            c.grpc.query(
                QueryPointsBuilder::new(&missing)
                    .query(vector(0, dim))
                    .limit(1),
            ),
        )
        .await
        {
            Err(cut) => return Err(cut.outcome(&step)),
            Ok(Err(QdrantError::ResponseError { status })) if status.code() == Code::NotFound => {
                measurements.push(Measurement::duration(
                    "grpc_not_found_time",
                    started.elapsed(),
                ))
            }
            Ok(Err(e)) => {
                return Ok(Outcome::failed(format!(
                    "{step}: expected NOT_FOUND, got {}",
                    grpc_error(&e)
                )));
            }
            Ok(Ok(_)) => {
                return Ok(Outcome::failed(format!(
                    "{step}: the query succeeded on a collection that does not exist"
                )));
            }
        }
        let path = format!("collections/{missing}/points/query");
        let reply = c
            .rest(
                ctx,
                "POST",
                &path,
                Some(json!({ "query": vector(0, dim), "limit": 1 })),
                Key::Configured,
            )
            .await?;
        let error = citadel_itest_core::http::parse_json::<ErrorAnswer>(&reply.body)
            .ok()
            .map(|b| b.status.error);
        match (reply.status, error) {
            (StatusCode::NOT_FOUND, Some(e)) if e.starts_with("Not found") => {
                measurements.push(Measurement::duration("rest_not_found_time", reply.time))
            }
            (status, _) => {
                return Ok(Outcome::Failed {
                    message: format!(
                        "POST {}: expected HTTP 404 with `status.error` \"Not found: ...\", got HTTP {}: {}",
                        c.shown_url(&path),
                        status.as_u16(),
                        excerpt(&reply.body)
                    ),
                    measurements,
                });
            }
        }
        Ok(Outcome::passed().with_measurements(measurements))
    }
}

impl Clients<'_> {
    fn url(&self, path: &str) -> url::Url {
        self.rest_base
            .join(path)
            .unwrap_or_else(|_| self.rest_base.clone())
    }

    fn shown_url(&self, path: &str) -> String {
        redact(self.url(path).as_str())
    }

    fn shown(&self, method: &str, path: &str) -> String {
        format!("{method} {}", self.shown_url(path))
    }

    async fn rest(
        &self,
        ctx: &CheckContext,
        method: &str,
        path: &str,
        body: Option<Value>,
        key: Key,
    ) -> Result<Reply, Outcome> {
        let url = self.url(path);
        let mut req = match method {
            "POST" => self.rest.post(url),
            "PUT" => self.rest.put(url),
            "DELETE" => self.rest.delete(url),
            _ => self.rest.get(url),
        };
        match (key, &self.key) {
            (Key::Configured, Some(k)) => req = req.header("api-key", k.expose()),
            (Key::Wrong, _) => req = req.header("api-key", &self.wrong),
            _ => {}
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        send(
            ctx.deadline,
            self.check.target.request_timeout,
            self.check.max_body,
            &self.shown(method, path),
            req,
        )
        .await
    }

    /// `GET /readyz` with the configured key: HTTP 200 with Qdrant's readiness text.
    async fn ready(&self, ctx: &CheckContext) -> Result<Reply, Outcome> {
        let reply = self
            .rest(ctx, "GET", "readyz", None, Key::Configured)
            .await?;
        reply.expect_text(&self.shown("GET", "readyz"), READY_TEXT)?;
        Ok(reply)
    }

    /// A `GET /collections` answer of HTTP 200 parsed into Qdrant's listing shape; Failed
    /// naming the field that is wrong.
    fn listing(&self, reply: &Reply) -> Result<Vec<String>, Outcome> {
        let answer: Answer<CollectionsResult> =
            reply.parse(&self.shown("GET", "collections"), "a collection listing")?;
        Ok(answer
            .result
            .collections
            .into_iter()
            .map(|c| c.name)
            .collect())
    }

    /// A REST request with the configured key that must answer 200.
    async fn rest_ok(
        &self,
        ctx: &CheckContext,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Reply, Outcome> {
        let reply = self.rest(ctx, method, path, body, Key::Configured).await?;
        if reply.status != StatusCode::OK {
            return Err(Outcome::failed(format!(
                "{}: HTTP {}: {}",
                self.shown(method, path),
                reply.status.as_u16(),
                excerpt(&reply.body)
            )));
        }
        Ok(reply)
    }

    /// `GET /collections` with the given key; any status is an answer.
    async fn list_rest(&self, ctx: &CheckContext, key: Key) -> Result<Reply, Outcome> {
        self.rest(ctx, "GET", "collections", None, key).await
    }

    /// gRPC `ListCollections` with the given key: `Ok(Ok)` accepted, `Ok(Err(code))` refused
    /// with a status, `Err` could not tell (transport trouble, timeouts).
    async fn list_grpc(&self, ctx: &CheckContext, key: Key) -> Result<Result<(), Code>, Outcome> {
        let check = self.check;
        let client = match key {
            Key::Configured => self.grpc.clone(),
            Key::Without => check.grpc_client(&check.target.grpc_url, None)?,
            Key::Wrong => check.grpc_client(&check.target.grpc_url, Some(&self.wrong))?,
        };
        let step = check.grpc_step("ListCollections");
        match within(
            ctx.deadline,
            check.target.request_timeout,
            "request_timeout",
            client.list_collections(),
        )
        .await
        {
            Err(cut) => Err(cut.outcome(&step)),
            Ok(Ok(_)) => Ok(Ok(())),
            Ok(Err(QdrantError::ResponseError { status }))
                if matches!(
                    status.code(),
                    Code::Unauthenticated
                        | Code::PermissionDenied
                        | Code::NotFound
                        | Code::InvalidArgument
                ) =>
            {
                Ok(Err(status.code()))
            }
            Ok(Err(e)) => Err(check.grpc_failure(&step, &e)),
        }
    }
}

/// A temporary collection and the handle of its registered removal (disarmed once the check
/// deleted it itself).
struct TempCollection {
    name: String,
    handle: citadel_itest_core::CleanupHandle,
}

/// Send a gRPC fault probe bounded by `limit` (plus slack, so the client's own timeout ends
/// it) and classify how it ended.
async fn probe_grpc<T>(
    deadline: Instant,
    limit: Duration,
    step: &str,
    fut: impl Future<Output = Result<T, QdrantError>>,
) -> ProbeEnd {
    let started = Instant::now();
    match within(deadline, limit, "request_timeout", fut).await {
        Err(Cut::Deadline) => ProbeEnd::Other(timed_out(step)),
        Err(Cut::Limit { .. }) => ProbeEnd::TimedOut(started.elapsed()),
        Ok(Ok(_)) => ProbeEnd::Other(Outcome::error(
            ErrorKind::Harness,
            format!("{step}: something answered; cannot probe"),
        )),
        Ok(Err(e)) => match grpc_error(&e).as_str() {
            "connection refused" => ProbeEnd::Refused(started.elapsed()),
            "timed out" => ProbeEnd::TimedOut(started.elapsed()),
            other => ProbeEnd::Other(Outcome::failed(format!("{step}: {other}"))),
        },
    }
}

/// Short words for a qdrant-client error: transport trouble as fixed words, server answers
/// as `message (Code)`, secrets redacted.
fn grpc_error(e: &QdrantError) -> String {
    let status = match e {
        QdrantError::ResponseError { status } => status,
        QdrantError::ResourceExhaustedError { status, .. } => status,
        other => return error_chain(other),
    };
    if let Some(words) = io_words_in_chain(status) {
        return words.to_string();
    }
    let message = status.message();
    let lower = message.to_ascii_lowercase();
    if lower.contains("connectionrefused") || lower.contains("connection refused") {
        return "connection refused".to_string();
    }
    if status.code() == Code::DeadlineExceeded
        || (status.code() == Code::Cancelled && lower.contains("timeout"))
    {
        return "timed out".to_string();
    }
    let short: String = message.chars().take(300).collect();
    redact_text(&format!("{short} ({:?})", status.code()))
}

/// `GET /`: `{"title": "qdrant - vector search engine", "version": "1.18.3"}`.
#[derive(Deserialize)]
struct RootInfo {
    title: String,
    version: String,
}

/// Qdrant's envelope of a successful REST answer: `{"result": T, "status": "ok", "time": s}`.
#[derive(Deserialize)]
struct Answer<T> {
    result: T,
    #[allow(dead_code)]
    status: OkStatus,
    #[allow(dead_code)]
    time: f64,
}

/// The only `status` of a successful answer.
#[derive(Deserialize)]
enum OkStatus {
    #[serde(rename = "ok")]
    Ok,
}

/// `GET /collections`' `result`.
#[derive(Deserialize)]
struct CollectionsResult {
    collections: Vec<CollectionName>,
}

#[derive(Deserialize)]
struct CollectionName {
    name: String,
}

/// `POST /collections/{name}/points/count`'s `result`.
#[derive(Deserialize)]
struct CountResult {
    count: u64,
}

/// Qdrant's error answer: `{"status": {"error": "Not found: ..."}, "time": s}`.
#[derive(Deserialize)]
struct ErrorAnswer {
    status: ErrorStatus,
}

#[derive(Deserialize)]
struct ErrorStatus {
    error: String,
}

fn distance(d: Distance) -> QdrantDistance {
    match d {
        Distance::Cosine => QdrantDistance::Cosine,
        Distance::Euclid => QdrantDistance::Euclid,
        Distance::Dot => QdrantDistance::Dot,
        Distance::Manhattan => QdrantDistance::Manhattan,
    }
}

/// The unit vector of point `id` (of [`POINTS`]): the points stand at equal angles
/// (360° / 16 = 22.5° apart) on a circle in the plane of the first two axes, so at every
/// dimension a point's own vector finds it first under every distance (Cosine, Dot, Euclid,
/// Manhattan) by a clear margin (cosine 1 against at most cos 22.5° = 0.924), and no result
/// depends on the order a server breaks ties in.
fn vector(id: u64, dim: u64) -> Vec<f32> {
    let angle = std::f64::consts::TAU * (id % POINTS) as f64 / POINTS as f64;
    let mut v = vec![0.0f32; dim.max(2) as usize];
    v[0] = angle.cos() as f32;
    v[1] = angle.sin() as f32;
    v
}

service_check!(QdrantCheck, cleans_up: [Operations, Performance]);

#[cfg(test)]
mod tests {
    use super::*;

    fn score(a: &[f32], b: &[f32], d: Distance) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        match d {
            Distance::Cosine | Distance::Dot => dot,
            Distance::Euclid => -a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f32>(),
            Distance::Manhattan => -a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>(),
        }
    }

    #[test]
    fn each_point_is_its_own_nearest_neighbour_by_a_clear_margin() {
        for dim in 2..=16 {
            let vs: Vec<Vec<f32>> = (0..POINTS).map(|i| vector(i, dim)).collect();
            for d in [
                Distance::Cosine,
                Distance::Dot,
                Distance::Euclid,
                Distance::Manhattan,
            ] {
                for (i, q) in vs.iter().enumerate() {
                    let mut scores: Vec<(f32, usize)> = vs
                        .iter()
                        .enumerate()
                        .map(|(j, v)| (score(q, v, d), j))
                        .collect();
                    scores.sort_by(|a, b| b.0.total_cmp(&a.0));
                    assert_eq!(scores[0].1, i, "dim {dim} {d}");
                    let margin = scores[0].0 - scores[1].0;
                    assert!(margin > 0.05, "dim {dim} {d}: margin {margin}");
                }
            }
            let norm: f32 = vs[3].iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5);
        }
    }
}
