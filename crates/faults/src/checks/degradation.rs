//! `faults.<name>.degradation`: with the dependency failing the service answers its declared
//! fallback; once the fault is removed normal answers come back within a bound.

use std::time::Duration;

use citadel_itest_core::http::excerpt;
use citadel_itest_core::{BoxError, CheckContext, Measurement, Outcome, Threshold, Unit};
use tokio::time::Instant;

use super::{Answer, Call, DrillCheck, ms, ms_f64, pause};
use crate::config::DegradationExpect;
use crate::proxy::Fault;

impl DrillCheck {
    pub(super) async fn run_degradation(
        &self,
        ctx: &CheckContext,
        fault: &Fault,
    ) -> Result<Outcome, BoxError> {
        let Some(g) = &self.drill.degradation else {
            return Ok(Outcome::skipped("no degradation declared"));
        };
        let s = &self.drill.service;
        let mark = self.proxy.now().await?;
        let applied = self.apply(ctx, fault).await?;
        let call = self.call(s.request_timeout).await;
        let events = self.proxy.events_since(mark).await?;
        let times = self.attempts(&events);
        ctx.detail("fallback_answer", call.describe());
        ctx.detail("attempts", times.len());

        let mut problems = Vec::new();
        if times.is_empty() {
            problems.push(format!(
                "the service never reached the dependency through the proxy at {} ({}): the \
                 answer was not caused by the fault (is the proxy between them?)",
                self.proxy.key(),
                call.describe()
            ));
        }
        match &call {
            Call::Answer(a) => problems.extend(fallback_problems(g, a)),
            other => problems.push(format!(
                "the service gave no fallback: {}; declared {}",
                other.describe(),
                g.status
            )),
        }

        // Recovery: remove the fault, then call until a normal answer comes back.
        self.lift(&applied).await?;
        let mut measurements = vec![Measurement::new(
            "attempts",
            times.len() as f64,
            Unit::Count,
        )];
        let (recovery, problem) = self.recovery(ctx, g.recover_within, g.poll_interval).await;
        measurements.push(recovery);
        problems.extend(problem);
        Ok(if problems.is_empty() {
            Outcome::passed()
        } else {
            Outcome::failed(problems.join("; "))
        }
        .with_measurements(measurements))
    }
}

impl DrillCheck {
    /// After the fault was lifted: call the service every `poll` until it answers its normal
    /// status, within `bound`. Gives the `recovery_time` measurement (held to `bound`; missing,
    /// and so failing, when it never recovered) and, when it did not, what was seen.
    pub(super) async fn recovery(
        &self,
        ctx: &CheckContext,
        bound: Duration,
        poll: Duration,
    ) -> (Measurement, Option<String>) {
        let s = &self.drill.service;
        let removed = Instant::now();
        let mut last = String::from("no call made");
        let mut calls = 0u32;
        let mut recovered = None;
        while removed.elapsed() <= bound {
            let left = bound.saturating_sub(removed.elapsed());
            let call = self
                .call(
                    s.request_timeout
                        .min(left.saturating_add(Duration::from_millis(100))),
                )
                .await;
            calls += 1;
            if call.status() == Some(s.expect_status) {
                recovered = Some(removed.elapsed());
                break;
            }
            last = call.describe();
            if !pause(ctx, poll).await {
                break;
            }
        }
        ctx.detail("recovery_calls", calls);
        let limit = Threshold::le(ms_f64(bound));
        match recovered {
            Some(d) => {
                ctx.detail("recovered_after_ms", ms_f64(d).round());
                (
                    Measurement::duration("recovery_time", d).with_threshold(limit),
                    None,
                )
            }
            None => (
                Measurement::missing("recovery_time", Unit::Milliseconds).with_threshold(limit),
                Some(format!(
                    "the service did not recover within {} of the fault's removal ({calls} \
                     calls, the last: {last}); declared normal status {}",
                    ms(bound),
                    s.expect_status
                )),
            ),
        }
    }
}

/// What is wrong with `a` as the declared fallback.
fn fallback_problems(g: &DegradationExpect, a: &Answer) -> Vec<String> {
    let mut problems = Vec::new();
    if a.status != g.status {
        problems.push(format!(
            "the service answered {} with its dependency failing; declared fallback {} ({})",
            a.status,
            g.status,
            excerpt(&a.body)
        ));
        // The rest describes a fallback; an answer of another status is not one.
        return problems;
    }
    for (name, want) in &g.headers {
        match a.headers.get(name.as_str()) {
            None => problems.push(format!("the fallback has no `{name}` header")),
            Some(v) if !want.is_empty() && v.as_bytes() != want.as_bytes() => {
                problems.push(format!(
                    "the fallback's `{name}` is `{}`; declared `{want}`",
                    String::from_utf8_lossy(v.as_bytes())
                ))
            }
            Some(_) => {}
        }
    }
    if !g.json.is_empty() {
        match serde_json::from_slice::<serde_json::Value>(&a.body) {
            Err(e) => problems.push(format!(
                "the fallback body is not JSON ({e}): {}",
                excerpt(&a.body)
            )),
            Ok(body) => {
                for (pointer, want) in &g.json {
                    match body.pointer(pointer) {
                        None => problems.push(format!(
                            "the fallback body has no `{pointer}`: {}",
                            excerpt(&a.body)
                        )),
                        Some(v) if !want.is_null() && v != want => problems.push(format!(
                            "the fallback's `{pointer}` is {v}; declared {want}"
                        )),
                        Some(_) => {}
                    }
                }
            }
        }
    }
    problems
}
