//! The shard's side of a distributed run: fetch the plan from the coordinator, and post the
//! result. Every request is bounded (10 s each for the plan, 60 s to post) and retried a
//! bounded number of times.

use std::time::Duration;

use reqwest::StatusCode;

use super::ShardPlan;
use crate::result::LoadResult;
use crate::shard::Shard;

const PLAN_TIMEOUT: Duration = Duration::from_secs(10);
const POST_TIMEOUT: Duration = Duration::from_secs(60);

/// How the shard reaches its coordinator.
#[derive(Clone)]
#[non_exhaustive]
pub struct ShardClient {
    base: url::Url,
    shard: Shard,
    token: Option<String>,
    http: reqwest::Client,
    /// How long to keep asking for the plan (the coordinator may start after the shards).
    pub plan_wait: Duration,
    /// How many times to try posting the result.
    pub post_attempts: u32,
}

impl std::fmt::Debug for ShardClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardClient")
            .field("base", &self.base.as_str())
            .field("shard", &self.shard)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why talking to the coordinator failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The coordinator URL is not usable.
    #[error("coordinator url `{url}`: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The coordinator refused or never answered.
    #[error("{what}: {reason}")]
    Failed {
        /// What was being done.
        what: String,
        /// The last failure.
        reason: String,
    },
}

impl ShardClient {
    /// A client of the coordinator at `url` (`http://host:port`) for `shard`.
    pub fn new(url: &str, shard: Shard, token: Option<String>) -> Result<ShardClient, ClientError> {
        let bad = |reason: String| ClientError::Url {
            url: url.into(),
            reason,
        };
        let base = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(bad("use http:// or https://".into()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(ShardClient {
            base,
            shard,
            token: token.filter(|t| !t.is_empty()),
            http,
            plan_wait: Duration::from_secs(120),
            post_attempts: 5,
        })
    }

    /// The shard this client reports for.
    pub fn shard(&self) -> Shard {
        self.shard
    }

    fn url(&self, path: &str) -> Result<url::Url, ClientError> {
        let mut u = self.base.join(path).map_err(|e| ClientError::Url {
            url: self.base.to_string(),
            reason: e.to_string(),
        })?;
        u.set_query(Some(&format!("shard={}", self.shard.index)));
        Ok(u)
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Fetch the plan, retrying for up to [`ShardClient::plan_wait`] while the coordinator
    /// cannot be reached; a refusal (4xx) fails at once.
    pub async fn plan(&self) -> Result<ShardPlan, ClientError> {
        let url = self.url("/plan")?;
        let what = format!(
            "fetch the plan of shard {} from the coordinator",
            self.shard
        );
        let give_up = tokio::time::Instant::now() + self.plan_wait;
        let mut delay = Duration::from_millis(200);
        loop {
            let reason = match self
                .auth(self.http.get(url.clone()))
                .timeout(PLAN_TIMEOUT)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => {
                    let bytes = r.bytes().await.map_err(|e| ClientError::Failed {
                        what: what.clone(),
                        reason: e.to_string(),
                    })?;
                    let plan: ShardPlan =
                        serde_json::from_slice(&bytes).map_err(|e| ClientError::Failed {
                            what: what.clone(),
                            reason: format!("not a plan ({e})"),
                        })?;
                    if plan.shards != self.shard.count {
                        return Err(ClientError::Failed {
                            what,
                            reason: format!(
                                "the coordinator runs {} shards, this shard is {}",
                                plan.shards, self.shard
                            ),
                        });
                    }
                    return Ok(plan);
                }
                Ok(r) if r.status().is_client_error() => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    return Err(ClientError::Failed {
                        what,
                        reason: format!("{status}: {}", text.trim()),
                    });
                }
                Ok(r) => format!("status {}", r.status()),
                Err(e) => e.to_string(),
            };
            if tokio::time::Instant::now() + delay > give_up {
                return Err(ClientError::Failed {
                    what,
                    reason: format!(
                        "{reason} (gave up after {})",
                        humantime::format_duration(self.plan_wait)
                    ),
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Post `result`, up to [`ShardClient::post_attempts`] times; a `409` (already
    /// recorded, e.g. an earlier attempt whose answer was lost) counts as success.
    pub async fn post(&self, result: &LoadResult) -> Result<(), ClientError> {
        let url = self.url("/result")?;
        let what = format!("post the result of shard {} to the coordinator", self.shard);
        let body = serde_json::to_vec(result).map_err(|e| ClientError::Failed {
            what: what.clone(),
            reason: e.to_string(),
        })?;
        let mut reason = String::new();
        let mut delay = Duration::from_millis(500);
        for attempt in 0..self.post_attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(8));
            }
            match self
                .auth(self.http.post(url.clone()))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .timeout(POST_TIMEOUT)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() || r.status() == StatusCode::CONFLICT => {
                    return Ok(());
                }
                Ok(r) if r.status().is_client_error() => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    return Err(ClientError::Failed {
                        what,
                        reason: format!("{status}: {}", text.trim()),
                    });
                }
                Ok(r) => reason = format!("status {}", r.status()),
                Err(e) => reason = e.to_string(),
            }
        }
        Err(ClientError::Failed {
            what,
            reason: format!("{reason} (after {} attempts)", self.post_attempts.max(1)),
        })
    }
}
