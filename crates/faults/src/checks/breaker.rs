//! `faults.<name>.circuit_breaker`: K failed calls open the breaker; while open the dependency
//! gets no call; after the open interval one half-open probe; with the fault removed calls flow
//! again. The state timeline goes into the result's details.

use std::time::Duration;

use citadel_itest_core::{
    BoxError, CheckContext, ErrorKind, Measurement, Outcome, Threshold, Unit,
};
use serde_json::json;
use tokio::time::Instant;

use super::{Call, DrillCheck, ms, ms_f64, ordinal, pause, plural};
use crate::config::MAX_CALLS;
use crate::proxy::Fault;

/// The calls of one drill and what the proxy saw of each.
struct Walk<'a> {
    check: &'a DrillCheck,
    ctx: &'a CheckContext,
    /// Proxy clock at the start.
    start: Duration,
    /// Local clock at the start.
    local: Instant,
    /// Events before this (proxy clock) are already seen.
    cursor: Duration,
    calls: u32,
    log: Vec<serde_json::Value>,
    timeline: Vec<serde_json::Value>,
}

impl Walk<'_> {
    /// Milliseconds since the start of a proxy-clock time.
    fn at(&self, t: Duration) -> f64 {
        ms_f64(t.saturating_sub(self.start)).round()
    }

    /// Milliseconds since the start, now.
    fn now(&self) -> f64 {
        ms_f64(self.local.elapsed()).round()
    }

    fn state(&mut self, state: &str, at_ms: f64, evidence: String) {
        self.timeline
            .push(json!({ "state": state, "at_ms": at_ms, "evidence": evidence }));
        self.ctx.detail("timeline", self.timeline.clone());
    }

    /// One call, and the attempts the dependency saw during it (proxy clock).
    async fn step(&mut self, bound: Duration) -> Result<(Call, Vec<Duration>), BoxError> {
        if self.calls >= MAX_CALLS {
            return Err(format!("the drill made {MAX_CALLS} calls without a verdict").into());
        }
        self.calls += 1;
        let sent = self.now();
        let call = self.check.call(bound).await;
        let events = self.check.proxy.events_since(self.cursor).await?;
        if let Some(last) = events.last() {
            self.cursor = last.at.saturating_add(Duration::from_nanos(1));
        }
        let attempts = self.check.attempts(&events);
        if self.log.len() < 200 {
            self.log.push(json!({
                "call": self.calls,
                "sent_ms": sent,
                "answer": call.describe(),
                "reached_dependency": attempts.len(),
            }));
        }
        Ok((call, attempts))
    }
}

impl DrillCheck {
    pub(super) async fn run_breaker(
        &self,
        ctx: &CheckContext,
        fault: &Fault,
    ) -> Result<Outcome, BoxError> {
        let Some(b) = &self.drill.circuit_breaker else {
            return Ok(Outcome::skipped("no circuit breaker declared"));
        };
        let s = &self.drill.service;
        let start = self.proxy.now().await?;
        let mut w = Walk {
            check: self,
            ctx,
            start,
            local: Instant::now(),
            cursor: start,
            calls: 0,
            log: Vec::new(),
            timeline: Vec::new(),
        };
        let applied = self.apply(ctx, fault).await?;
        w.state(
            "closed",
            0.0,
            "the drill starts; the fault is applied".into(),
        );
        let outcome = walk(&mut w, b, s.expect_status, s.request_timeout, &applied).await;
        ctx.detail("calls", w.log.clone());
        // The fault goes on every path: removed here, or by the registered cleanup.
        if let Err(e) = self.lift(&applied).await {
            tracing::debug!("removing the fault failed, the cleanup retries: {e}");
        }
        outcome
    }
}

async fn walk(
    w: &mut Walk<'_>,
    b: &crate::config::BreakerExpect,
    normal: u16,
    rt: Duration,
    applied: &super::Applied,
) -> Result<Outcome, BoxError> {
    let k = b.failures;
    let t = b.open_for;
    let tol = b.tolerance;
    let failed = |message: String, measurements: Vec<Measurement>| {
        Ok(Outcome::failed(message).with_measurements(measurements))
    };

    // 1. Trip: K calls, each must reach the failing dependency and fail.
    let mut last_failure = Duration::ZERO;
    for i in 1..=k {
        let (call, attempts) = w.step(rt).await?;
        if attempts.is_empty() {
            let msg = if i == 1 {
                format!(
                    "the first call never reached the dependency through the proxy at {} ({}): \
                     the fault was never exercised (is the proxy between them?)",
                    w.check.proxy.key(),
                    call.describe()
                )
            } else {
                format!(
                    "the breaker opened after {}: call {i} ({}) never reached the dependency; \
                     declared open after {k}",
                    plural(i as usize - 1, "failure", "failures"),
                    call.describe()
                )
            };
            return failed(msg, Vec::new());
        }
        if call.status() == Some(normal) {
            return failed(
                format!(
                    "call {i} answered {normal}, the normal status, while the dependency \
                     failed: the fault did not fail the calls"
                ),
                Vec::new(),
            );
        }
        last_failure = *attempts.last().unwrap_or(&last_failure);
        if !pause(w.ctx, b.call_interval).await {
            return Ok(Outcome::error(ErrorKind::Cancelled, "cancelled"));
        }
    }

    // 2. Open: calls must not reach the dependency until the open interval has passed.
    let opened_ms = w.at(last_failure);
    // The proxy clock at the start and the local one run side by side.
    let opened_local = w.local + last_failure.saturating_sub(w.start);
    let mut open_calls = 0u32;
    let mut fast_fails: Vec<Duration> = Vec::new();
    let probe;
    let patience = t.saturating_add(tol).saturating_add(b.call_interval);
    loop {
        let waited = opened_local.elapsed();
        let (call, attempts) = w
            .step(
                rt.min(
                    patience
                        .saturating_sub(waited)
                        .saturating_add(b.call_interval),
                ),
            )
            .await?;
        if let Some(first) = attempts.first() {
            probe = *first;
            break;
        }
        if open_calls == 0 {
            w.state(
                "open",
                opened_ms,
                format!(
                    "the {} failure; the next call did not reach the dependency",
                    ordinal(u64::from(k))
                ),
            );
        }
        open_calls += 1;
        if let Call::Answer(a) = &call {
            fast_fails.push(a.elapsed);
        }
        if waited > patience {
            return failed(
                format!(
                    "no half-open probe reached the dependency within {} of the {} failure \
                     ({open_calls} calls while open); declared open for {}",
                    ms(waited),
                    ordinal(u64::from(k)),
                    ms(t)
                ),
                Vec::new(),
            );
        }
        if !pause(w.ctx, b.call_interval).await {
            return Ok(Outcome::error(ErrorKind::Cancelled, "cancelled"));
        }
    }
    let gap = probe.saturating_sub(last_failure);
    let mut measurements = vec![
        Measurement::duration("open_interval", gap)
            .with_threshold(Threshold::ge(ms_f64(t.saturating_sub(tol)))),
        Measurement::new("calls_while_open", f64::from(open_calls), Unit::Count),
    ];
    if let Some(p50) = citadel_itest_core::percentile(&fast_fails, 0.5) {
        measurements.push(Measurement::duration("open_answer_p50", p50));
    }
    if open_calls == 0 {
        return failed(
            format!(
                "the breaker did not open: after the {} failure the service called the \
                 dependency again {} later (call {}); declared open after {k} for {}",
                ordinal(u64::from(k)),
                ms(gap),
                k + 1,
                ms(t)
            ),
            measurements,
        );
    }
    if gap.saturating_add(tol) < t {
        return failed(
            format!(
                "the breaker stayed open for only {}: the dependency received a call {} after \
                 the {} failure; declared open for {}",
                ms(gap),
                ms(gap),
                ordinal(u64::from(k)),
                ms(t)
            ),
            measurements,
        );
    }
    if gap > patience {
        return failed(
            format!(
                "the half-open probe came {} after the {} failure; declared open for {} \
                 (±{})",
                ms(gap),
                ordinal(u64::from(k)),
                ms(t),
                ms(tol)
            ),
            measurements,
        );
    }
    w.state(
        "half_open",
        w.at(probe),
        format!(
            "a probe reached the dependency {} after opening (failed: the fault is on)",
            ms(gap)
        ),
    );

    // 3. Remove the fault; the failed probe re-opened the breaker, the next probe closes it.
    w.check.lift(applied).await?;
    let removed = Instant::now();
    let removed_ms = w.now();
    let bound = b.recovery_bound();
    let mut next_probe = None;
    let mut last = String::from("no call made");
    let recovered = loop {
        let left = bound.saturating_sub(removed.elapsed());
        let (call, attempts) = w.step(rt.min(left.saturating_add(b.call_interval))).await?;
        if let (None, Some(first)) = (next_probe, attempts.first()) {
            next_probe = Some(*first);
        }
        if call.status() == Some(normal) && !attempts.is_empty() {
            break Some(removed.elapsed());
        }
        last = call.describe();
        if removed.elapsed() > bound || !pause(w.ctx, b.call_interval).await {
            break None;
        }
    };
    match recovered {
        Some(d) => {
            measurements.push(
                Measurement::duration("recovery_time", d)
                    .with_threshold(Threshold::le(ms_f64(bound))),
            );
            let closed_at = w.now();
            w.state(
                "closed",
                closed_at,
                format!("a call reached the healthy dependency and answered {normal}, {} after the fault was removed", ms(d)),
            );
        }
        None => {
            measurements.push(
                Measurement::missing("recovery_time", Unit::Milliseconds)
                    .with_threshold(Threshold::le(ms_f64(bound))),
            );
            return failed(
                format!(
                    "calls did not flow again within {} of the fault's removal (at {}ms; the \
                     last call: {last})",
                    ms(bound),
                    removed_ms
                ),
                measurements,
            );
        }
    }
    if let Some(p2) = next_probe {
        let reopen = p2.saturating_sub(probe);
        measurements.push(Measurement::duration("reopen_interval", reopen));
        if reopen.saturating_add(tol) < t {
            return failed(
                format!(
                    "the breaker did not open again after its failed half-open probe: the \
                     dependency received a call {} later; declared open for {}",
                    ms(reopen),
                    ms(t)
                ),
                measurements,
            );
        }
    }
    Ok(Outcome::passed().with_measurements(measurements))
}
