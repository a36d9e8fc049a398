//! The end-to-end alert drill: `monitoring.drills.<name>` (category alerting).
//!
//! A drill proves the whole alerting path works, not just that its parts answer:
//!
//! 1. listen on `webhook.listen` ([`WebhookReceiver`]) for Alertmanager's notifications;
//! 2. make sure the alert has an alerting rule in Prometheus and is not active already;
//! 3. induce the condition: push `metric value` to the Pushgateway group
//!    `job/<job>/instance/<run_id>`, or run `action.command` (only with `disposable: true`).
//!    The restore (deleting the group, or running `action.restore`) is registered with the
//!    runner *before* inducing, so it runs on every path: failure, timeout, panic, Ctrl-C;
//! 4. see the alert go `pending` then `firing` in Prometheus (`/api/v1/alerts`), reach
//!    Alertmanager (`/api/v2/alerts?filter=alertname="X"`) and be delivered to the webhook
//!    (a notification with the alert `firing`);
//! 5. restore, and see it resolve: Prometheus no longer lists it, and the webhook receives it
//!    `resolved`.
//!
//! Everything from inducing to the resolved notification must happen within `within`. The
//! measurements are the times of each phase: `pending_s`, `firing_s`, `received_s` and
//! `delivered_s` counted from inducing, `cleared_s` (Prometheus no longer lists the alert) and
//! `resolved_s` (the resolved notification arrived) counted from restoring, and `total_s`. A
//! failure names the phase that was not seen: `Alertmanager received the alert but no
//! delivery reached the webhook at 127.0.0.1:59095 within 30s`.
//!
//! Two drills of one alert, one Pushgateway group or one webhook address never run at once
//! (their [`Resource`]s are exclusive).
//!
//! ```
//! use citadel_itest_monitoring::config::DrillConfig;
//! use citadel_itest_monitoring::drill;
//!
//! let d: DrillConfig = serde_json::from_value(serde_json::json!({
//!     "name": "models_down",
//!     "prometheus": "http://127.0.0.1:59090",
//!     "alertmanager": "http://127.0.0.1:59093",
//!     "alert": "CitadelDrill",
//!     "induce": { "pushgateway": { "url": "http://127.0.0.1:59091", "metric": "citadel_drill" } },
//!     "webhook": { "listen": "127.0.0.1:59095" },
//!     "within": "60s"
//! }))
//! .unwrap();
//! let checks = drill::checks(&[d], "r1");
//! assert_eq!(checks[0].id().as_str(), "monitoring.drills.models_down");
//! ```

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use citadel_itest_core::config::redact_url;
use citadel_itest_core::http::{excerpt, parse_json};
use citadel_itest_core::{
    BoxError, Category, Check, CheckContext, CheckId, CleanupHandle, ErrorKind, Measurement,
    Outcome, Resource, Status, Unit,
};
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use crate::config::{ActionInduce, DrillConfig, PushInduce};
use crate::prometheus::{
    PromApi, base_url, error_text, http_client, list_or_none, send, sleep_until,
};
use crate::webhook::{Notification, WebhookReceiver};

/// How often Prometheus and Alertmanager are asked while a phase is awaited.
const POLL: Duration = Duration::from_millis(200);
/// The longest a drill waits for an alert that is already active (from an earlier drill) to
/// clear before inducing.
const QUIET_WAIT: Duration = Duration::from_secs(15);
/// The most bytes of a command's stderr kept for a message.
const STDERR_CAP: u64 = 64 * 1024;
/// The most bytes of an Alertmanager or Pushgateway answer read.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// One check per drill; `run_id` names the Pushgateway group (`instance` label).
pub fn checks(drills: &[DrillConfig], run_id: &str) -> Vec<Arc<dyn Check>> {
    drills
        .iter()
        .map(|d| Arc::new(DrillCheck::new(d.clone(), run_id)) as Arc<dyn Check>)
        .collect()
}

/// `monitoring.drills.<name>`: see the module docs.
#[derive(Debug, Clone)]
pub struct DrillCheck {
    id: CheckId,
    drill: Arc<DrillConfig>,
    run_id: String,
}

impl DrillCheck {
    /// The drill `drill` of run `run_id`.
    pub fn new(drill: DrillConfig, run_id: &str) -> Self {
        DrillCheck {
            id: CheckId::new(format!("{}.drills.{}", crate::NAME, drill.name)),
            drill: Arc::new(drill),
            run_id: run_id.to_string(),
        }
    }

    /// The Pushgateway group URL of a push drill:
    /// `<url>/metrics/job/<job>/instance/<run_id>`.
    pub fn push_group_url(&self) -> Option<String> {
        let p = self.drill.induce.pushgateway.as_ref()?;
        group_url(p, &self.run_id).ok().map(|u| u.to_string())
    }
}

#[async_trait]
impl Check for DrillCheck {
    fn id(&self) -> &CheckId {
        &self.id
    }

    fn category(&self) -> Category {
        Category::Alerting
    }

    fn timeout(&self) -> Option<Duration> {
        // The drill's own bound comes first and names the phase; this is the backstop.
        Some(
            self.drill
                .within
                .saturating_add(QUIET_WAIT)
                .saturating_add(self.drill.timeout.saturating_mul(4))
                .saturating_add(Duration::from_secs(5)),
        )
    }

    fn exclusive(&self) -> Vec<Resource> {
        let mut r = vec![
            Resource::new("alert", &self.drill.alert),
            Resource::new("webhook", &self.drill.webhook.listen),
        ];
        if let Some(url) = self.push_group_url() {
            r.push(Resource::new("pushgateway-group", &url));
        }
        r
    }

    async fn run(&self, ctx: &CheckContext) -> Result<Outcome, BoxError> {
        Ok(Drill::new(self, ctx).run().await.unwrap_or_else(|o| o))
    }
}

/// The times each phase was first seen.
#[derive(Default)]
struct Phases {
    induced: Option<Instant>,
    pending: Option<Instant>,
    firing: Option<Instant>,
    received: Option<Instant>,
    delivered: Option<Instant>,
    restored: Option<Instant>,
    cleared: Option<Instant>,
    resolved: Option<Instant>,
}

impl Phases {
    fn measurements(&self) -> Vec<Measurement> {
        let since = |from: Option<Instant>, to: Option<Instant>, name: &str| {
            let (from, to) = (from?, to?);
            Some(Measurement::new(
                name,
                to.saturating_duration_since(from).as_secs_f64(),
                Unit::Seconds,
            ))
        };
        [
            since(self.induced, self.pending, "pending_s"),
            since(self.induced, self.firing, "firing_s"),
            since(self.induced, self.received, "received_s"),
            since(self.induced, self.delivered, "delivered_s"),
            since(self.restored, self.cleared, "cleared_s"),
            since(self.restored, self.resolved, "resolved_s"),
            since(self.induced, self.resolved, "total_s"),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

struct Drill<'a> {
    check: &'a DrillCheck,
    d: &'a DrillConfig,
    ctx: &'a CheckContext,
    phases: Phases,
}

impl<'a> Drill<'a> {
    fn new(check: &'a DrillCheck, ctx: &'a CheckContext) -> Self {
        Drill {
            check,
            d: &check.drill,
            ctx,
            phases: Phases::default(),
        }
    }

    fn failed(&self, message: String) -> Outcome {
        Outcome::Failed {
            message,
            measurements: self.phases.measurements(),
        }
    }

    /// `within 30s` (the configured bound) for messages.
    fn within(&self) -> String {
        format!("within {}", humantime::format_duration(self.d.within))
    }

    async fn run(mut self) -> Result<Outcome, Outcome> {
        let d = self.d;
        let ctx = self.ctx;
        let alert = d.alert.as_str();
        let prom = PromApi::new(&d.prometheus, None, d.timeout)?;
        let am = base_url(&d.alertmanager)?;
        let client = http_client(d.timeout)?;
        ctx.detail("alert", alert);
        ctx.detail("webhook", format!("{}{}", d.webhook.listen, d.webhook.path));

        // 1. Listen before anything can be delivered.
        let hook = WebhookReceiver::bind(&d.webhook.listen, &d.webhook.path)
            .await
            .map_err(|e| {
                Outcome::error(
                    ErrorKind::Harness,
                    format!(
                        "cannot {e}; the drill receives Alertmanager's notifications there \
                         (`webhook.listen`)"
                    ),
                )
            })?;
        let hook_at = format!("{}{}", hook.addr(), d.webhook.path);

        // 2. The rule exists, and the alert is quiet before the drill.
        let (rules, _) = prom
            .data::<RulesData>(ctx, "api/v1/rules", &[("type", "alert")], "a rule list")
            .await?;
        let loaded: Vec<&str> = rules
            .groups
            .iter()
            .flat_map(|g| g.rules.iter())
            .filter(|r| r.kind == "alerting")
            .map(|r| r.name.as_str())
            .collect();
        if !loaded.contains(&alert) {
            return Err(self.failed(format!(
                "Prometheus at {} has no alerting rule `{alert}` (loaded: {})",
                redact_url(&d.prometheus),
                list_or_none(loaded.iter().copied())
            )));
        }
        let quiet_by = later(QUIET_WAIT.min(d.within / 4));
        loop {
            let states = self.prometheus_states(&prom).await?;
            if states.is_empty() {
                break;
            }
            if Instant::now() >= quiet_by {
                return Err(self.failed(format!(
                    "alert `{alert}` is already {} in Prometheus before the drill induced it; \
                     the drill cannot tell its own alert from it",
                    states.join(", ")
                )));
            }
            sleep_until(ctx, Instant::now() + POLL).await?;
        }

        // 3. Register the restore, then induce.
        let end = later(d.within);
        let restore = self.induce(&client).await?;
        let induced = Instant::now();
        self.phases.induced = Some(induced);

        // 4a. Pending, then firing, in Prometheus.
        let mut last = "inactive".to_string();
        loop {
            let states = self.prometheus_states(&prom).await?;
            let now = Instant::now();
            if states.iter().any(|s| s == "pending") {
                self.phases.pending.get_or_insert(now);
            }
            if states.iter().any(|s| s == "firing") {
                // With `for: 0` an alert fires without being pending first.
                self.phases.pending.get_or_insert(now);
                self.phases.firing = Some(now);
                break;
            }
            if let Some(s) = states.first() {
                last = s.clone();
            }
            if now >= end {
                let seen = if self.phases.pending.is_some() {
                    format!("it went pending but did not fire {}", self.within())
                } else {
                    format!(
                        "it was neither pending nor firing {} after inducing (last seen: {last})",
                        self.within()
                    )
                };
                return Err(self.failed(format!(
                    "alert `{alert}` in Prometheus at {}: {seen}",
                    redact_url(&d.prometheus)
                )));
            }
            sleep_until(ctx, (now + POLL).min(end)).await?;
        }

        // 4b. Received by Alertmanager.
        let (state, how) = loop {
            let answer = self.alertmanager_alerts(&client, &am).await;
            let now = Instant::now();
            match &answer {
                Ok(alerts) => {
                    if let Some(a) = alerts
                        .iter()
                        .find(|a| a.labels.get("alertname").map(String::as_str) == Some(alert))
                    {
                        self.phases.received = Some(now);
                        break (a.status.state.clone(), a.status.clone());
                    }
                }
                Err(o) if o.status() == Status::Failed => {}
                Err(o) => return Err(o.clone()),
            }
            if now >= end {
                let last = match answer {
                    Ok(_) => "it lists no such alert".to_string(),
                    Err(o) => o.message().unwrap_or_default().to_string(),
                };
                return Err(self.failed(format!(
                    "Prometheus fires `{alert}` but Alertmanager at {} did not receive it {} \
                     (last answer: {last})",
                    redact_url(&d.alertmanager),
                    self.within()
                )));
            }
            sleep_until(ctx, (now + POLL).min(end)).await?;
        };
        ctx.detail("alertmanager_state", state.as_str());

        // 4c. Delivered to the webhook.
        let delivered = self
            .notification(&hook, end, |n| {
                n.alerts_named(alert, "firing").next().is_some()
            })
            .await?;
        match delivered {
            Some(n) => self.phases.delivered = Some(n.at.max(induced)),
            None => {
                let mut why = format!(
                    "Alertmanager received the alert but no delivery reached the webhook at \
                     {hook_at} {}",
                    self.within()
                );
                if state != "active" {
                    why.push_str(&format!(
                        " (Alertmanager has it {state}: silenced by [{}], inhibited by [{}])",
                        how.silenced_by.join(", "),
                        how.inhibited_by.join(", ")
                    ));
                }
                why.push_str(&self.webhook_traffic(&hook));
                return Err(self.failed(why));
            }
        }

        // 5. Restore; see it clear in Prometheus and resolve at the webhook.
        let restored_at = Instant::now();
        self.restore(&client, restore).await?;
        self.phases.restored = Some(restored_at);
        loop {
            let states = self.prometheus_states(&prom).await?;
            let now = Instant::now();
            if states.is_empty() {
                self.phases.cleared = Some(now);
                break;
            }
            if now >= end {
                return Err(self.failed(format!(
                    "alert `{alert}` fired and was delivered, but after restoring it is still \
                     {} in Prometheus at {} {} of inducing",
                    states.join(", "),
                    redact_url(&d.prometheus),
                    self.within()
                )));
            }
            sleep_until(ctx, (now + POLL).min(end)).await?;
        }
        let resolved = self
            .notification(&hook, end, |n| {
                n.at >= restored_at && n.alerts_named(alert, "resolved").next().is_some()
            })
            .await?;
        match resolved {
            Some(n) => self.phases.resolved = Some(n.at),
            None => {
                return Err(self.failed(format!(
                    "alert `{alert}` fired, was delivered and cleared in Prometheus, but no \
                     `resolved` notification reached the webhook at {hook_at} {} of inducing{}",
                    self.within(),
                    self.webhook_traffic(&hook)
                )));
            }
        }
        Ok(Outcome::passed().with_measurements(self.phases.measurements()))
    }

    /// The states (`pending`, `firing`) of the drill's alert in Prometheus now.
    async fn prometheus_states(&self, prom: &PromApi) -> Result<Vec<String>, Outcome> {
        let (data, _) = prom
            .alerts(self.ctx)
            .await
            .map_err(|o| self.phase_error(o))?;
        Ok(data
            .alerts
            .iter()
            .filter(|a| a.name().map(String::as_str) == Some(self.d.alert.as_str()))
            .filter(|a| a.state == "pending" || a.state == "firing")
            .map(|a| a.state.clone())
            .collect())
    }

    /// A Failed answer mid-drill keeps the phases measured so far.
    fn phase_error(&self, o: Outcome) -> Outcome {
        match o {
            Outcome::Failed { message, .. } => self.failed(message),
            other => other,
        }
    }

    /// Alertmanager's alerts named like the drill's.
    async fn alertmanager_alerts(
        &self,
        client: &reqwest::Client,
        am: &url::Url,
    ) -> Result<Vec<AmAlert>, Outcome> {
        let mut url = am.join("api/v2/alerts").unwrap_or_else(|_| am.clone());
        let escaped = self.d.alert.replace('\\', "\\\\").replace('"', "\\\"");
        url.query_pairs_mut()
            .append_pair("filter", &format!("alertname=\"{escaped}\""));
        let step = format!("GET {}", redact_url(url.as_str()));
        let reply = send(self.ctx, &step, client.get(url), self.d.timeout, MAX_BODY).await?;
        if reply.status != reqwest::StatusCode::OK {
            return Err(Outcome::failed(format!(
                "{step}: HTTP {}: {}",
                reply.status.as_u16(),
                excerpt(&reply.body)
            )));
        }
        parse_json::<Vec<AmAlert>>(&reply.body).map_err(|e| {
            Outcome::failed(format!(
                "{step}: HTTP 200 is not an Alertmanager alert list: {e}: {}",
                excerpt(&reply.body)
            ))
        })
    }

    /// Wait for a notification, stopping on cancellation.
    async fn notification(
        &self,
        hook: &WebhookReceiver,
        until: Instant,
        wanted: impl Fn(&Notification) -> bool,
    ) -> Result<Option<Notification>, Outcome> {
        tokio::select! {
            biased;
            () = self.ctx.cancel.cancelled() => {
                Err(Outcome::error(ErrorKind::Cancelled, "cancelled while awaiting the webhook"))
            }
            n = hook.wait_for(until, wanted) => Ok(n),
        }
    }

    /// What reached the webhook otherwise, for a message: `; the webhook got 2 other
    /// notifications (…) and refused: …`.
    fn webhook_traffic(&self, hook: &WebhookReceiver) -> String {
        let notes = hook.notifications();
        let rejected = hook.rejected();
        let mut out = String::new();
        if !notes.is_empty() {
            let names = notes
                .iter()
                .flat_map(|n| {
                    n.alerts.iter().map(|a| {
                        format!(
                            "{} {}",
                            a.labels.get("alertname").map_or("?", String::as_str),
                            a.status
                        )
                    })
                })
                .collect::<Vec<_>>();
            out.push_str(&format!(
                "; the webhook got {} other notification(s): {}",
                notes.len(),
                list_or_none(names.iter())
            ));
        }
        if !rejected.is_empty() {
            out.push_str(&format!(
                "; the webhook refused {} request(s): {}",
                rejected.len(),
                list_or_none(rejected.iter())
            ));
        }
        out
    }

    /// Register the restore with the runner, then induce the condition.
    async fn induce(&self, client: &reqwest::Client) -> Result<Restore, Outcome> {
        let d = self.d;
        if let Some(push) = &d.induce.pushgateway {
            let url = group_url(push, &self.check.run_id).map_err(|e| {
                Outcome::error(
                    ErrorKind::Harness,
                    format!("invalid Pushgateway URL `{}`: {e}", redact_url(&push.url)),
                )
            })?;
            let shown = redact_url(url.as_str());
            // Registered before the push: a push that times out half-way is removed too.
            let handle = {
                let client = client.clone();
                let url = url.clone();
                let timeout = d.timeout;
                self.ctx.cleanup(
                    format!("pushgateway {}", redact_url(&push.url)),
                    format!("group {shown}"),
                    async move {
                        delete_group(&client, url, timeout)
                            .await
                            .map_err(Into::into)
                    },
                )
            };
            let body = format!("{} {}\n", push.metric, sample_text(push.value));
            let step = format!("PUT {shown}");
            let request = client
                .put(url.clone())
                .header("content-type", "text/plain; version=0.0.4")
                .body(body);
            let reply = send(self.ctx, &step, request, d.timeout, MAX_BODY).await?;
            if !reply.status.is_success() {
                return Err(self.failed(format!(
                    "inducing: {step}: HTTP {}: {}",
                    reply.status.as_u16(),
                    excerpt(&reply.body)
                )));
            }
            self.ctx.detail("pushgateway_group", shown);
            return Ok(Restore::Push { url, handle });
        }
        if let Some(action) = &d.induce.action {
            if !action.disposable {
                return Err(Outcome::error(
                    ErrorKind::Harness,
                    "an action drill needs `induce.action.disposable: true`",
                ));
            }
            let handle = {
                let restore = action.restore.clone();
                let timeout = d.timeout;
                self.ctx.cleanup(
                    format!("drill {}", d.name),
                    format!("the condition `{}` induced", command_text(&action.command)),
                    async move { run_command(&restore, timeout).await.map_err(Into::into) },
                )
            };
            run_command(&action.command, d.timeout)
                .await
                .map_err(|e| self.failed(format!("inducing: {e}")))?;
            return Ok(Restore::Action {
                action: action.clone(),
                handle,
            });
        }
        Err(Outcome::error(
            ErrorKind::Harness,
            "`induce` needs `pushgateway` or `action`",
        ))
    }

    /// Undo the condition now; the registered removal is disarmed once it is done.
    async fn restore(&self, client: &reqwest::Client, restore: Restore) -> Result<(), Outcome> {
        match restore {
            Restore::Push { url, handle } => {
                delete_group(client, url, self.d.timeout)
                    .await
                    .map_err(|e| self.failed(format!("restoring: {e}")))?;
                handle.disarm();
            }
            Restore::Action { action, handle } => {
                run_command(&action.restore, self.d.timeout)
                    .await
                    .map_err(|e| self.failed(format!("restoring: {e}")))?;
                handle.disarm();
            }
        }
        Ok(())
    }
}

/// How the condition is undone.
enum Restore {
    Push {
        url: url::Url,
        handle: CleanupHandle,
    },
    Action {
        action: ActionInduce,
        handle: CleanupHandle,
    },
}

/// `d` from now; a day from now for a duration too large to add.
fn later(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(86_400))
}

/// `<url>/metrics/job/<job>/instance/<run_id>`, label values in Pushgateway's base64 form
/// (`job@base64/…`) when they hold a `/` or are empty.
fn group_url(p: &PushInduce, run_id: &str) -> Result<url::Url, url::ParseError> {
    let base = url::Url::parse(&p.url)?;
    let path = crate::pushgateway::group_path(&p.job, [("instance", run_id)]);
    url::Url::parse(&format!("{}{path}", base.as_str().trim_end_matches('/')))
}

/// DELETE a Pushgateway group; its own bounded request (it runs after the check, too).
async fn delete_group(
    client: &reqwest::Client,
    url: url::Url,
    timeout: Duration,
) -> Result<(), String> {
    let step = format!("DELETE {}", redact_url(url.as_str()));
    let request = client.delete(url);
    let response = tokio::time::timeout(timeout, request.send())
        .await
        .map_err(|_| {
            format!(
                "{step}: no answer within {}",
                humantime::format_duration(timeout)
            )
        })?
        .map_err(|e| format!("{step}: {}", crate::prometheus::http_error(e)))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let limit = citadel_itest_core::http::BodyLimit::within(timeout).max_bytes(64 * 1024);
    let body = citadel_itest_core::http::read_body(response, &limit)
        .await
        .unwrap_or_default();
    Err(format!(
        "{step}: HTTP {}: {}",
        status.as_u16(),
        excerpt(&body)
    ))
}

/// Run `command` (program and arguments, no shell) within `timeout`; an exit other than 0
/// is an error naming the command, its exit and the start of its stderr.
async fn run_command(command: &[String], timeout: Duration) -> Result<(), String> {
    let shown = command_text(command);
    let Some((program, args)) = command.split_first() else {
        return Err("an empty command".to_string());
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("run `{shown}`: {}", citadel_itest_core::io_error_text(&e)))?;
    let stderr = child.stderr.take();
    let read_stderr = async move {
        let mut out = Vec::new();
        if let Some(s) = stderr {
            let _ = s.take(STDERR_CAP).read_to_end(&mut out).await;
        }
        out
    };
    let done = tokio::time::timeout(timeout, async {
        let (err, status) = tokio::join!(read_stderr, child.wait());
        (err, status)
    })
    .await;
    match done {
        Err(_) => {
            let _ = child.kill().await;
            Err(format!(
                "`{shown}` did not finish within {}",
                humantime::format_duration(timeout)
            ))
        }
        Ok((_, Err(e))) => Err(format!(
            "wait for `{shown}`: {}",
            citadel_itest_core::io_error_text(&e)
        )),
        Ok((_, Ok(status))) if status.success() => Ok(()),
        Ok((err, Ok(status))) => Err(format!(
            "`{shown}` exited with {}: {}",
            status
                .code()
                .map_or_else(|| "a signal".to_string(), |c| c.to_string()),
            error_text(&String::from_utf8_lossy(&err))
        )),
    }
}

/// `prog arg1 arg2`, redacted, for messages.
fn command_text(command: &[String]) -> String {
    excerpt(command.join(" ").as_bytes())
}

/// A sample value in the text format: `1`, `0.5`, `+Inf`, `NaN`.
fn sample_text(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v == f64::INFINITY {
        "+Inf".to_string()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        format!("{v}")
    }
}

#[derive(Deserialize)]
struct RulesData {
    groups: Vec<RuleGroup>,
}

#[derive(Deserialize)]
struct RuleGroup {
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
struct Rule {
    name: String,
    #[serde(rename = "type")]
    kind: String,
}

/// One alert of Alertmanager's `GET /api/v2/alerts`.
#[derive(Deserialize)]
struct AmAlert {
    labels: BTreeMap<String, String>,
    status: AmStatus,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct AmStatus {
    state: String,
    #[serde(default)]
    silenced_by: Vec<String>,
    #[serde(default)]
    inhibited_by: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_urls() {
        let p: PushInduce = serde_json::from_value(serde_json::json!({
            "url": "http://127.0.0.1:9091/", "metric": "m"
        }))
        .unwrap();
        assert_eq!(
            group_url(&p, "r1abc").unwrap().as_str(),
            "http://127.0.0.1:9091/metrics/job/citadel_itest_drill/instance/r1abc"
        );
        assert_eq!(
            group_url(&p, "a/b").unwrap().as_str(),
            "http://127.0.0.1:9091/metrics/job/citadel_itest_drill/instance@base64/YS9i"
        );
    }

    #[test]
    fn sample_texts() {
        assert_eq!(sample_text(1.0), "1");
        assert_eq!(sample_text(0.5), "0.5");
        assert_eq!(sample_text(f64::INFINITY), "+Inf");
        assert_eq!(sample_text(f64::NAN), "NaN");
    }

    #[tokio::test]
    async fn commands_are_bounded_and_failures_named() {
        run_command(&["true".into()], Duration::from_secs(5))
            .await
            .unwrap();
        let e = run_command(
            &["sh".into(), "-c".into(), "echo broken >&2; exit 3".into()],
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert_eq!(e, "`sh -c echo broken >&2; exit 3` exited with 3: broken");
        let started = Instant::now();
        let e = run_command(&["sleep".into(), "30".into()], Duration::from_millis(300))
            .await
            .unwrap_err();
        assert_eq!(e, "`sleep 30` did not finish within 300ms");
        assert!(started.elapsed() < Duration::from_secs(3));
        let e = run_command(&["/nonexistent/citadel".into()], Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(e.starts_with("run `/nonexistent/citadel`: "), "{e}");
    }
}
