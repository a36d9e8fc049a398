//! Running the steps of one flow.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use citadel_itest_core::config::{SecretString, redact_url, register_url_secrets};
use citadel_itest_core::http::{BodyLimit, excerpt, read_body};
use citadel_itest_core::temp::temp_name;
use citadel_itest_core::{BoxError, CheckContext, error_chain};
use futures_util::TryStreamExt as _;
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgRow};
use sqlx::{
    Column as _, ConnectOptions as _, Connection as _, PgConnection, Row as _, TypeInfo as _,
};
use tokio::time::Instant;

use super::config::show;
use super::vars::Vars;
use super::{FlowPostgres, FlowQdrant, HttpStep, QdrantStep, SqlExpect, SqlStep, Step};

/// Most rows an SQL step reads; more are counted as "over".
const MAX_ROWS: u64 = 10_000;
/// Bound of the cleanup's collection removal.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a step did not pass.
#[derive(Debug)]
pub(crate) enum StepError {
    /// The system is wrong (Outcome::Failed).
    Failed(String),
    /// The harness could not tell (Outcome::Error).
    Harness(String),
}

fn failed(m: impl Into<String>) -> StepError {
    StepError::Failed(m.into())
}

/// What the steps reach: resolved once per flow run.
#[derive(Debug, Clone)]
pub(crate) struct Env {
    /// `scheme://host:port` of the gateway.
    pub gateway_origin: String,
    pub gateway_key: Option<SecretString>,
    pub request_timeout: Duration,
    pub postgres: Option<FlowPostgres>,
    pub qdrant: Option<(String, Option<SecretString>)>,
    pub run_id: String,
}

impl Env {
    pub(crate) fn qdrant_from(q: &FlowQdrant) -> Result<(String, Option<SecretString>), String> {
        let key = match &q.api_key {
            None => None,
            Some(s) => Some(
                s.resolve()
                    .map_err(|e| format!("flows.qdrant.api_key: {}", error_chain(&e)))?,
            ),
        };
        Ok((q.url.trim_end_matches('/').to_string(), key))
    }
}

/// One run of one flow.
pub(crate) struct Exec<'a> {
    env: &'a Env,
    ctx: &'a CheckContext,
    http: reqwest::Client,
    pub(crate) vars: Vars,
    pg: Option<PgConnection>,
    sizes: HashMap<String, u64>,
}

impl<'a> Exec<'a> {
    pub(crate) fn new(
        env: &'a Env,
        ctx: &'a CheckContext,
        request_id: String,
    ) -> Result<Self, StepError> {
        let http = reqwest::Client::builder()
            .connect_timeout(env.request_timeout)
            .no_proxy()
            .build()
            .map_err(|e| {
                StepError::Harness(format!("build the HTTP client: {}", error_chain(&e)))
            })?;
        let mut vars = Vars::default();
        vars.set("run_id", Value::String(env.run_id.clone()));
        vars.set("request_id", Value::String(request_id));
        Ok(Exec {
            env,
            ctx,
            http,
            vars,
            pg: None,
            sizes: HashMap::new(),
        })
    }

    pub(crate) async fn step(&mut self, step: &Step) -> Result<(), StepError> {
        if let Some(h) = &step.http {
            self.http_step(h).await
        } else if let Some(s) = &step.sql {
            self.sql_step(s).await
        } else if let Some(q) = &step.qdrant {
            self.qdrant_step(&step.name, q).await
        } else {
            Err(StepError::Harness(
                "the step has no `http`, `sql` or `qdrant`".into(),
            ))
        }
    }

    fn text(&self, s: &str) -> Result<String, StepError> {
        self.vars.text(s).map_err(StepError::Harness)
    }

    fn value(&self, v: &Value) -> Result<Value, StepError> {
        self.vars.value(v).map_err(StepError::Harness)
    }

    async fn http_step(&mut self, h: &HttpStep) -> Result<(), StepError> {
        let relative = h.url.starts_with('/');
        let url = if relative {
            format!("{}{}", self.env.gateway_origin, self.text(&h.url)?)
        } else {
            self.text(&h.url)?
        };
        let method = Method::from_bytes(h.method.as_bytes())
            .map_err(|_| StepError::Harness(format!("`{}` is not an HTTP method", h.method)))?;
        let what = format!("{method} {}", redact_url(&url));
        let timeout = self.env.request_timeout;
        let mut req = self.http.request(method, &url).timeout(timeout);
        if relative && let Some(key) = &self.env.gateway_key {
            req = req.bearer_auth(key.expose());
        }
        for (name, value) in &h.headers {
            req = req.header(name.as_str(), self.text(value)?);
        }
        if let Some(body) = &h.body {
            req = req.json(&self.value(body)?);
        }
        let deadline = Instant::now() + timeout;
        let resp = req
            .send()
            .await
            .map_err(|e| failed(format!("{what}: {}", error_chain(&e))))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = read_body(resp, &BodyLimit::until(deadline).allowed(timeout))
            .await
            .map_err(|e| failed(format!("{what}: HTTP {status}: {e}")))?;
        if status != h.expect_status {
            return Err(failed(format!(
                "{what} answered {status}, expected {}: {}",
                h.expect_status,
                excerpt(&body)
            )));
        }
        let mut parsed: Option<Value> = None;
        for (var, capture) in &h.capture {
            let value = if let Some(pointer) = &capture.pointer {
                if parsed.is_none() {
                    parsed = Some(serde_json::from_slice(&body).map_err(|e| {
                        failed(format!(
                            "capture `{var}`: the answer to {what} is not JSON ({e}): {}",
                            excerpt(&body)
                        ))
                    })?);
                }
                parsed
                    .as_ref()
                    .and_then(|json| json.pointer(pointer))
                    .cloned()
                    .ok_or_else(|| {
                        failed(format!(
                            "capture `{var}`: JSON pointer `{pointer}` not found in the answer to {what}: {}",
                            excerpt(&body)
                        ))
                    })?
            } else if let Some(name) = &capture.header {
                let v = headers
                    .get(name.as_str())
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| {
                        failed(format!(
                            "capture `{var}`: the answer to {what} has no header `{name}`"
                        ))
                    })?;
                Value::String(v.to_string())
            } else {
                return Err(StepError::Harness(format!(
                    "capture `{var}` has neither `pointer` nor `header`"
                )));
            };
            self.vars.set(var.clone(), value);
        }
        Ok(())
    }

    // ---- SQL ----

    fn pg_options(pg: &FlowPostgres) -> Result<PgConnectOptions, StepError> {
        let harness = |m: String| StepError::Harness(m);
        let opts = match &pg.dsn {
            Some(dsn) => {
                let raw = dsn
                    .resolve()
                    .map_err(|e| harness(format!("flows.postgres.dsn: {}", error_chain(&e))))?;
                if let Ok(u) = url::Url::parse(raw.expose()) {
                    let _ = register_url_secrets(&u);
                }
                PgConnectOptions::from_str(raw.expose()).map_err(|e| {
                    harness(format!(
                        "flows.postgres.dsn is not a postgres:// URL: {}",
                        redact_url(&error_chain(&e))
                    ))
                })?
            }
            None => {
                let user = pg.user.as_deref().unwrap_or_default();
                let mut o = PgConnectOptions::new_without_pgpass()
                    .host(pg.host.as_deref().unwrap_or("127.0.0.1"))
                    .port(pg.port.unwrap_or(5432))
                    .username(user)
                    .database(pg.database.as_deref().unwrap_or(user));
                if let Some(pw) = &pg.password {
                    let pw = pw.resolve().map_err(|e| {
                        harness(format!("flows.postgres.password: {}", error_chain(&e)))
                    })?;
                    o = o.password(pw.expose());
                }
                o
            }
        };
        Ok(opts
            .application_name("citadel-itest-flows")
            .statement_cache_capacity(0)
            .disable_statement_logging())
    }

    async fn connection(&mut self) -> Result<&mut PgConnection, StepError> {
        if self.pg.is_none() {
            let pg =
                self.env.postgres.as_ref().ok_or_else(|| {
                    StepError::Harness("an sql step needs `flows.postgres`".into())
                })?;
            let opts = Self::pg_options(pg)?;
            let place = format!(
                "{}:{}/{}",
                opts.get_host(),
                opts.get_port(),
                opts.get_database().unwrap_or(opts.get_username())
            );
            let conn =
                tokio::time::timeout(self.env.request_timeout, PgConnection::connect_with(&opts))
                    .await
                    .map_err(|_| {
                        failed(format!(
                            "connect to postgres at {place}: no connection within {}",
                            humantime::format_duration(self.env.request_timeout)
                        ))
                    })?
                    .map_err(|e| {
                        failed(format!(
                            "connect to postgres at {place}: {}",
                            error_chain(&e)
                        ))
                    })?;
            self.pg = Some(conn);
        }
        self.pg
            .as_mut()
            .ok_or_else(|| StepError::Harness("no connection".into()))
    }

    /// Run the query once: (rows, first column of the first row).
    async fn query(&mut self, sql: &str, params: &[Value]) -> Result<Observed, StepError> {
        let timeout = self.env.request_timeout;
        let conn = self.connection().await?;
        let mut q = sqlx::query(sql);
        for p in params {
            q = match p {
                Value::String(s) => q.bind(s.clone()),
                Value::Bool(b) => q.bind(*b),
                Value::Number(n) => match n.as_i64() {
                    Some(i) => q.bind(i),
                    None => q.bind(n.as_f64().unwrap_or(f64::NAN)),
                },
                Value::Null => q.bind(None::<String>),
                other => q.bind(other.to_string()),
            };
        }
        let run = async {
            let mut rows = q.fetch(&mut *conn);
            let mut count = 0u64;
            let mut first = None;
            while let Some(row) = rows.try_next().await? {
                if count == 0 {
                    first = Some(first_column(&row));
                }
                count += 1;
                if count > MAX_ROWS {
                    break;
                }
            }
            Ok::<_, sqlx::Error>(Observed { rows: count, first })
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(Ok(o)) => Ok(o),
            Ok(Err(e)) => Err(failed(format!("query failed: {}", error_chain(&e)))),
            Err(_) => {
                // A cancelled query leaves the connection in an unknown state: open a new one.
                self.pg = None;
                Err(failed(format!(
                    "query did not finish within {}",
                    humantime::format_duration(timeout)
                )))
            }
        }
    }

    async fn sql_step(&mut self, s: &SqlStep) -> Result<(), StepError> {
        let params: Vec<Value> = s
            .params
            .iter()
            .map(|p| self.value(p))
            .collect::<Result<_, _>>()?;
        let expect = SqlExpect {
            rows: s.expect.rows,
            value: s.expect.value.as_ref().map(|v| self.value(v)).transpose()?,
        };
        let started = Instant::now();
        let mut queries = 0u32;
        loop {
            queries += 1;
            let observed = self.query(&s.query, &params).await?;
            let Some(why) = judge(&expect, &observed)? else {
                self.ctx.detail("sql_queries", queries);
                return Ok(());
            };
            // Kept up to date, so a run that ends before the bound (deadline, cancel) still
            // reports what was last seen.
            self.ctx.detail("sql_last_observed", why.clone());
            let elapsed = started.elapsed();
            match s.poll_until {
                Some(bound) if elapsed + s.poll_interval < bound => {
                    tokio::time::sleep(s.poll_interval).await;
                }
                Some(bound) => {
                    return Err(failed(format!(
                        "{} did not hold within {} ({queries} queries); last observed: {}",
                        describe(&expect),
                        humantime::format_duration(bound),
                        why
                    )));
                }
                None => {
                    return Err(failed(format!(
                        "expected {}; observed: {why}",
                        describe(&expect)
                    )));
                }
            }
        }
    }

    // ---- Qdrant ----

    async fn qdrant(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value, String), StepError> {
        let (base, key) = self
            .env
            .qdrant
            .as_ref()
            .ok_or_else(|| StepError::Harness("a qdrant step needs `flows.qdrant`".into()))?;
        let what = format!("{method} {path}");
        let timeout = self.env.request_timeout;
        let mut req = self
            .http
            .request(method, format!("{base}{path}"))
            .timeout(timeout);
        if let Some(k) = key {
            req = req.header("api-key", k.expose());
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let deadline = Instant::now() + timeout;
        let resp = req
            .send()
            .await
            .map_err(|e| failed(format!("qdrant {what}: {}", error_chain(&e))))?;
        let status = resp.status().as_u16();
        let bytes = read_body(resp, &BodyLimit::until(deadline).allowed(timeout))
            .await
            .map_err(|e| failed(format!("qdrant {what}: HTTP {status}: {e}")))?;
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, json, excerpt(&bytes)))
    }

    /// A 200 answer's `result`, or a failure naming the call.
    async fn qdrant_ok(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, StepError> {
        let what = format!("{method} {path}");
        let (status, json, text) = self.qdrant(method, path, body).await?;
        if status != 200 || json.get("status").and_then(Value::as_str) != Some("ok") {
            return Err(failed(format!(
                "qdrant {what} answered {status}, expected 200 with status ok: {text}"
            )));
        }
        json.get("result")
            .cloned()
            .ok_or_else(|| failed(format!("qdrant {what}: `result` is missing: {text}")))
    }

    async fn qdrant_step(&mut self, step: &str, q: &QdrantStep) -> Result<(), StepError> {
        match q {
            QdrantStep::CreateCollection {
                var,
                size,
                distance,
            } => {
                let name = temp_name(&self.env.run_id, "flow", step);
                // Registered before the collection exists: removed on every path.
                let (base, key) = self.env.qdrant.clone().ok_or_else(|| {
                    StepError::Harness("a qdrant step needs `flows.qdrant`".into())
                })?;
                self.ctx.cleanup(
                    "qdrant",
                    format!("collection {name}"),
                    delete_collection(self.http.clone(), base, key, name.clone()),
                );
                let result = self
                    .qdrant_ok(
                        Method::PUT,
                        &format!("/collections/{name}"),
                        Some(&json!({"vectors": {"size": size, "distance": distance}})),
                    )
                    .await?;
                if result != Value::Bool(true) {
                    return Err(failed(format!(
                        "creating collection {name} answered result {}",
                        show(&result)
                    )));
                }
                self.sizes.insert(name.clone(), *size);
                self.ctx.detail("collection", name.clone());
                self.vars.set(var.clone(), Value::String(name));
                Ok(())
            }
            QdrantStep::Upsert {
                collection,
                id,
                vector,
                payload,
            } => {
                let c = self.text(collection)?;
                let id = self.value(id)?;
                let vector = numbers(&self.value(vector)?)?;
                if let Some(size) = self.sizes.get(&c)
                    && vector.len() as u64 != *size
                {
                    return Err(failed(format!(
                        "the vector has {} dimensions, collection {c} has {size}",
                        vector.len()
                    )));
                }
                let mut point = json!({"id": id, "vector": vector});
                if let Some(p) = payload {
                    point["payload"] = self.value(p)?;
                }
                self.qdrant_ok(
                    Method::PUT,
                    &format!("/collections/{c}/points?wait=true"),
                    Some(&json!({"points": [point]})),
                )
                .await?;
                Ok(())
            }
            QdrantStep::PointExists { collection, id } => {
                let c = self.text(collection)?;
                let id = self.value(id)?;
                self.point(&c, &id).await.map(|_| ())
            }
            QdrantStep::Search {
                collection,
                vector,
                id,
                rank,
                score,
                tolerance,
            } => {
                let c = self.text(collection)?;
                let id = self.value(id)?;
                let vector = numbers(&self.value(vector)?)?;
                let limit = (*rank).max(10);
                let result = self
                    .qdrant_ok(
                        Method::POST,
                        &format!("/collections/{c}/points/search"),
                        Some(&json!({"vector": vector, "limit": limit, "with_payload": false})),
                    )
                    .await?;
                let hits = result.as_array().ok_or_else(|| {
                    failed(format!(
                        "search in {c}: `result` is not a list: {}",
                        show(&result)
                    ))
                })?;
                let ids: Vec<String> = hits
                    .iter()
                    .map(|h| h.get("id").map(show).unwrap_or_else(|| "?".into()))
                    .collect();
                let Some(pos) = hits
                    .iter()
                    .position(|h| h.get("id").is_some_and(|x| same_id(x, &id)))
                else {
                    return Err(failed(format!(
                        "search in {c}: id {} is not among the {} results (ids {})",
                        show(&id),
                        hits.len(),
                        ids.join(", ")
                    )));
                };
                if pos + 1 != *rank as usize {
                    return Err(failed(format!(
                        "search in {c}: id {} is at rank {}, expected rank {rank} (ids {})",
                        show(&id),
                        pos + 1,
                        ids.join(", ")
                    )));
                }
                let got = hits[pos]
                    .get("score")
                    .and_then(Value::as_f64)
                    .ok_or_else(|| {
                        failed(format!(
                            "search in {c}: hit {} has no numeric `score`",
                            pos + 1
                        ))
                    })?;
                self.ctx.detail("search_score", got);
                if let Some(want) = score
                    && (got - want).abs() > *tolerance
                {
                    return Err(failed(format!(
                        "search in {c}: id {} scored {got}, expected {want} within {tolerance}",
                        show(&id)
                    )));
                }
                Ok(())
            }
            QdrantStep::PayloadEquals {
                collection,
                id,
                field,
                equals,
            } => {
                let c = self.text(collection)?;
                let id = self.value(id)?;
                let want = self.value(equals)?;
                let point = self.point(&c, &id).await?;
                let got = point.get("payload").and_then(|p| p.get(field.as_str()));
                match got {
                    Some(v) if same_value(v, &want) => Ok(()),
                    Some(v) => Err(failed(format!(
                        "payload `{field}` of point {} in {c} is {}, expected {}",
                        show(&id),
                        show(v),
                        show(&want)
                    ))),
                    None => Err(failed(format!(
                        "point {} in {c} has no payload `{field}` (expected {})",
                        show(&id),
                        show(&want)
                    ))),
                }
            }
        }
    }

    async fn point(&self, c: &str, id: &Value) -> Result<Value, StepError> {
        let id_text = match id {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let path = format!("/collections/{c}/points/{id_text}");
        let (status, json, text) = self.qdrant(Method::GET, &path, None).await?;
        match status {
            200 => json
                .get("result")
                .cloned()
                .ok_or_else(|| failed(format!("qdrant GET {path}: `result` is missing: {text}"))),
            404 => Err(failed(format!(
                "point {} not found in collection {c}: {text}",
                show(id)
            ))),
            s => Err(failed(format!("qdrant GET {path} answered {s}: {text}"))),
        }
    }
}

/// The removal registered for a temporary collection.
async fn delete_collection(
    http: reqwest::Client,
    base: String,
    key: Option<SecretString>,
    name: String,
) -> Result<(), BoxError> {
    let mut req = http
        .delete(format!("{base}/collections/{name}"))
        .timeout(CLEANUP_TIMEOUT);
    if let Some(k) = &key {
        req = req.header("api-key", k.expose());
    }
    let resp = req.send().await.map_err(|e| error_chain(&e))?;
    let status = resp.status();
    // 404: it was never created (the run ended before) or is already gone.
    if status.is_success() || status.as_u16() == 404 {
        Ok(())
    } else {
        Err(format!("DELETE collection answered {status}").into())
    }
}

/// One SQL result, as far as the expectation needs it.
#[derive(Debug)]
struct Observed {
    rows: u64,
    first: Option<Result<Value, String>>,
}

fn first_column(row: &PgRow) -> Result<Value, String> {
    let Some(col) = row.columns().first() else {
        return Ok(Value::Null);
    };
    let ty = col.type_info().name().to_string();
    let v = match ty.as_str() {
        "TEXT" | "VARCHAR" | "NAME" | "BPCHAR" | "CHAR" => {
            row.try_get::<Option<String>, _>(0).map(|v| json!(v))
        }
        "INT2" => row.try_get::<Option<i16>, _>(0).map(|v| json!(v)),
        "INT4" => row.try_get::<Option<i32>, _>(0).map(|v| json!(v)),
        "INT8" => row.try_get::<Option<i64>, _>(0).map(|v| json!(v)),
        "FLOAT4" => row.try_get::<Option<f32>, _>(0).map(|v| json!(v)),
        "FLOAT8" => row.try_get::<Option<f64>, _>(0).map(|v| json!(v)),
        "BOOL" => row.try_get::<Option<bool>, _>(0).map(|v| json!(v)),
        other => {
            return Err(format!(
                "column `{}` has type {other}: cast it to text or a number in the query",
                col.name()
            ));
        }
    };
    v.map_err(|e| format!("column `{}`: {}", col.name(), error_chain(&e)))
}

fn describe(e: &SqlExpect) -> String {
    match (&e.rows, &e.value) {
        (Some(r), Some(v)) => format!("`rows = {r}` and `value = {}`", show(v)),
        (Some(r), None) => format!("`rows = {r}`"),
        (None, Some(v)) => format!("`value = {}`", show(v)),
        (None, None) => "nothing".to_string(),
    }
}

fn rows_text(n: u64) -> String {
    match n {
        1 => "1 row".to_string(),
        n if n > MAX_ROWS => format!("over {MAX_ROWS} rows"),
        n => format!("{n} rows"),
    }
}

/// `None` when `o` meets `e`, else what was observed. A column that cannot be read is a
/// harness error.
fn judge(e: &SqlExpect, o: &Observed) -> Result<Option<String>, StepError> {
    let value = match &o.first {
        Some(Err(m)) => return Err(StepError::Harness(m.clone())),
        Some(Ok(v)) => Some(v),
        None => None,
    };
    let rows_ok = e.rows.is_none_or(|r| r == o.rows);
    let value_ok = match (&e.value, value) {
        (None, _) => true,
        (Some(want), Some(got)) => same_value(got, want),
        (Some(_), None) => false,
    };
    if rows_ok && value_ok {
        return Ok(None);
    }
    Ok(Some(match value {
        Some(v) if e.value.is_some() => format!("value {} ({})", show(v), rows_text(o.rows)),
        _ => rows_text(o.rows),
    }))
}

/// Numbers compare by value (1 = 1.0), everything else exactly.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn same_id(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.eq_ignore_ascii_case(y),
        _ => same_value(a, b),
    }
}

fn numbers(v: &Value) -> Result<Vec<f64>, StepError> {
    v.as_array()
        .and_then(|items| {
            items
                .iter()
                .map(Value::as_f64)
                .collect::<Option<Vec<f64>>>()
        })
        .filter(|v| !v.is_empty())
        .ok_or_else(|| failed(format!("the vector is not a list of numbers: {}", show(v))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judging_names_what_was_observed() {
        let o = Observed {
            rows: 0,
            first: None,
        };
        assert_eq!(judge(&SqlExpect::rows(1), &o).unwrap().unwrap(), "0 rows");
        let o = Observed {
            rows: 1,
            first: Some(Ok(json!(0))),
        };
        assert_eq!(
            judge(&SqlExpect::value(1), &o).unwrap().unwrap(),
            "value 0 (1 row)"
        );
        assert!(judge(&SqlExpect::value(0.0), &o).unwrap().is_none());
        assert!(judge(&SqlExpect::rows(1), &o).unwrap().is_none());
    }
}
