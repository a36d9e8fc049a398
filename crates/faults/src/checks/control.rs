//! [`ProxyControl`]: one way to drive a fault proxy, in-process or through its REST control
//! API.

use std::time::Duration;

use citadel_itest_core::config::redact_url;
use citadel_itest_core::http::{BodyLimit, excerpt, read_body};
use serde::Deserialize;

use crate::proxy::{Event, FaultId, FaultSpec, ProxyHandle};

/// The most bytes one control answer may have (the event log of a busy proxy is large).
pub const MAX_CONTROL_BODY: usize = 32 * 1024 * 1024;

/// A request to the fault proxy failed; the message names the action and the proxy.
#[derive(Debug, thiserror::Error)]
#[error("{action} on the fault proxy at {proxy}: {message}")]
#[non_exhaustive]
pub struct ControlError {
    /// What was asked: `add fault`, `read events`.
    pub action: String,
    /// The proxy (control URL, secrets redacted, or listen address).
    pub proxy: String,
    /// What went wrong.
    pub message: String,
}

/// Drives one fault proxy: adds and removes faults and reads its event log, either through a
/// [`ProxyHandle`] in this process (tests) or through the REST control API of a proxy already
/// running in the stack (`proxy: { control: http://127.0.0.1:PORT }`).
#[derive(Debug, Clone)]
pub struct ProxyControl {
    inner: Inner,
    key: String,
}

#[derive(Debug, Clone)]
enum Inner {
    Local(ProxyHandle),
    Remote {
        base: String,
        client: reqwest::Client,
        timeout: Duration,
    },
}

#[derive(Deserialize)]
struct Added {
    id: FaultId,
}

/// `GET /events`: a list, or (should the API grow a clock) an envelope with the proxy's time.
#[derive(Deserialize)]
#[serde(untagged)]
enum EventsAnswer {
    List(Vec<Event>),
    Envelope {
        #[serde(default, with = "humantime_serde")]
        now: Option<Duration>,
        events: Vec<Event>,
    },
}

impl ProxyControl {
    /// The proxy behind `handle`, in this process.
    pub fn local(handle: ProxyHandle) -> Self {
        ProxyControl {
            key: handle.addr().to_string(),
            inner: Inner::Local(handle),
        }
    }

    /// The proxy whose control API is at `control` (`http://127.0.0.1:58190`); each request is
    /// bounded by `timeout`.
    pub fn remote(control: &str, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .build()
            .unwrap_or_default();
        ProxyControl {
            key: redact_url(control.trim_end_matches('/')),
            inner: Inner::Remote {
                base: control.trim_end_matches('/').to_string(),
                client,
                timeout,
            },
        }
    }

    /// Identifies the proxy (its control URL or listen address), for exclusive resources and
    /// messages.
    pub fn key(&self) -> &str {
        &self.key
    }

    fn error(&self, action: &str, message: impl Into<String>) -> ControlError {
        ControlError {
            action: action.to_string(),
            proxy: self.key.clone(),
            message: message.into(),
        }
    }

    /// Adds a fault; its id removes it again.
    pub async fn add(&self, spec: FaultSpec) -> Result<FaultId, ControlError> {
        match &self.inner {
            Inner::Local(h) => h
                .add(spec)
                .map_err(|e| self.error("add fault", citadel_itest_core::error_chain(&e))),
            Inner::Remote { .. } => {
                let body = serde_json::to_vec(&spec)
                    .map_err(|e| self.error("add fault", e.to_string()))?;
                let (status, bytes) = self
                    .request("add fault", reqwest::Method::POST, "/faults", Some(body))
                    .await?;
                if !(200..300).contains(&status) {
                    return Err(self.error(
                        "add fault",
                        format!("answered {status}: {}", excerpt(&bytes)),
                    ));
                }
                serde_json::from_slice::<Added>(&bytes)
                    .map(|a| a.id)
                    .or_else(|_| serde_json::from_slice::<FaultId>(&bytes))
                    .map_err(|_| {
                        self.error(
                            "add fault",
                            format!("answer has no fault id: {}", excerpt(&bytes)),
                        )
                    })
            }
        }
    }

    /// Removes a fault; `false` when the proxy had no fault with that id (already removed).
    pub async fn remove(&self, id: FaultId) -> Result<bool, ControlError> {
        match &self.inner {
            Inner::Local(h) => Ok(h.remove(id)),
            Inner::Remote { .. } => {
                let (status, bytes) = self
                    .request(
                        "remove fault",
                        reqwest::Method::DELETE,
                        &format!("/faults/{id}"),
                        None,
                    )
                    .await?;
                match status {
                    200..=299 => Ok(true),
                    404 => Ok(false),
                    _ => Err(self.error(
                        "remove fault",
                        format!("answered {status}: {}", excerpt(&bytes)),
                    )),
                }
            }
        }
    }

    /// The active faults.
    pub async fn faults(&self) -> Result<Vec<(FaultId, FaultSpec)>, ControlError> {
        match &self.inner {
            Inner::Local(h) => Ok(h.faults()),
            Inner::Remote { .. } => {
                let (status, bytes) = self
                    .request("list faults", reqwest::Method::GET, "/faults", None)
                    .await?;
                if status != 200 {
                    return Err(self.error(
                        "list faults",
                        format!("answered {status}: {}", excerpt(&bytes)),
                    ));
                }
                let bad = |e: &dyn std::fmt::Display| {
                    self.error(
                        "list faults",
                        format!("not a list of faults ({e}): {}", excerpt(&bytes)),
                    )
                };
                let listed: Vec<serde_json::Map<String, serde_json::Value>> =
                    serde_json::from_slice(&bytes).map_err(|e| bad(&e))?;
                let mut faults = Vec::with_capacity(listed.len());
                for mut entry in listed {
                    let id = entry
                        .remove("id")
                        .ok_or_else(|| bad(&"an entry has no `id`"))?;
                    let id: FaultId = serde_json::from_value(id).map_err(|e| bad(&e))?;
                    let spec: FaultSpec = serde_json::from_value(serde_json::Value::Object(entry))
                        .map_err(|e| bad(&e))?;
                    faults.push((id, spec));
                }
                Ok(faults)
            }
        }
    }

    /// The proxy's clock: time since it started, the scale of [`Event::at`].
    pub async fn now(&self) -> Result<Duration, ControlError> {
        match &self.inner {
            Inner::Local(h) => Ok(h.started().elapsed()),
            Inner::Remote { .. } => {
                // The control API has no clock of its own: the newest event marks "now" (every
                // later event is new), an empty log its start.
                let (now, events) = self.remote_events(0).await?;
                Ok(now.unwrap_or_else(|| {
                    events
                        .last()
                        .map(|e| e.at.saturating_add(Duration::from_nanos(1)))
                        .unwrap_or_default()
                }))
            }
        }
    }

    /// The events at or after `t` on the proxy's clock.
    pub async fn events_since(&self, t: Duration) -> Result<Vec<Event>, ControlError> {
        match &self.inner {
            Inner::Local(h) => Ok(h.events_since(t)),
            Inner::Remote { .. } => {
                let ms = u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
                let (_, events) = self.remote_events(ms).await?;
                // The API counts in whole milliseconds: drop what came before `t`.
                Ok(events.into_iter().filter(|e| e.at >= t).collect())
            }
        }
    }

    async fn remote_events(
        &self,
        since_ms: u64,
    ) -> Result<(Option<Duration>, Vec<Event>), ControlError> {
        let (status, bytes) = self
            .request(
                "read events",
                reqwest::Method::GET,
                &format!("/events?since_ms={since_ms}"),
                None,
            )
            .await?;
        if status != 200 {
            return Err(self.error(
                "read events",
                format!("answered {status}: {}", excerpt(&bytes)),
            ));
        }
        match serde_json::from_slice::<EventsAnswer>(&bytes) {
            Ok(EventsAnswer::Envelope { now, events }) => Ok((now, events)),
            Ok(EventsAnswer::List(events)) => Ok((None, events)),
            Err(e) => Err(self.error(
                "read events",
                format!("not an event log ({e}): {}", excerpt(&bytes)),
            )),
        }
    }

    async fn request(
        &self,
        action: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Vec<u8>), ControlError> {
        let Inner::Remote {
            base,
            client,
            timeout,
        } = &self.inner
        else {
            return Err(self.error(action, "not a remote proxy"));
        };
        let deadline = super::deadline(*timeout);
        let mut req = client.request(method, format!("{base}{path}"));
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        let resp = match tokio::time::timeout_at(deadline, req.send()).await {
            Err(_) => {
                return Err(self.error(
                    action,
                    format!("no answer within {}", humantime::format_duration(*timeout)),
                ));
            }
            Ok(Err(e)) => {
                return Err(self.error(action, citadel_itest_core::error_chain(&e.without_url())));
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status().as_u16();
        let bytes = read_body(
            resp,
            &BodyLimit::until(deadline)
                .max_bytes(MAX_CONTROL_BODY)
                .allowed(*timeout),
        )
        .await
        .map_err(|e| self.error(action, e.to_string()))?;
        Ok((status, bytes))
    }
}
