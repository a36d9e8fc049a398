//! `faults.<name>.timeout`: the dependency hangs; the service must answer an error within its
//! declared timeout, not hang and not answer later.

use citadel_itest_core::{BoxError, CheckContext, Measurement, Outcome, Threshold, Unit};

use super::{Call, DrillCheck, ms, ms_f64, plural};
use crate::proxy::Fault;

impl DrillCheck {
    pub(super) async fn run_timeout(
        &self,
        ctx: &CheckContext,
        fault: &Fault,
    ) -> Result<Outcome, BoxError> {
        let Some(t) = &self.drill.timeout else {
            return Ok(Outcome::skipped("no timeout declared"));
        };
        let mark = self.proxy.now().await?;
        let applied = self.apply(ctx, fault).await?;
        let call = self.call(t.hang_after()).await;
        let events = self.proxy.events_since(mark).await?;
        self.lift(&applied).await?;

        let times = self.attempts(&events);
        ctx.detail("answer", call.describe());
        ctx.detail("attempts", times.len());
        let latest = t.timeout.saturating_add(t.margin);
        let earliest = t.timeout.saturating_sub(t.margin);
        let mut measurements = vec![Measurement::new(
            "attempts",
            times.len() as f64,
            Unit::Count,
        )];
        let mut problems = Vec::new();
        if times.is_empty() {
            problems.push(format!(
                "the service never reached the dependency through the proxy at {} ({}): the \
                 hang was never exercised (is the proxy between them?)",
                self.proxy.key(),
                call.describe()
            ));
        }
        match &call {
            Call::Hung { bound } => {
                measurements.push(
                    Measurement::missing("answer_time", Unit::Milliseconds)
                        .with_threshold(Threshold::le(ms_f64(latest))),
                );
                problems.push(format!(
                    "the service hangs: no answer within {} ({} to the dependency); declared \
                     timeout {} (+{} margin)",
                    ms(*bound),
                    plural(times.len(), "attempt", "attempts"),
                    ms(t.timeout),
                    ms(t.margin)
                ));
            }
            Call::Broken { after, message } => problems.push(format!(
                "the service broke the connection after {} ({message}) instead of answering \
                 an error; declared timeout {}",
                ms(*after),
                ms(t.timeout)
            )),
            Call::Answer(a) => {
                measurements.push(Measurement::duration("answer_time", a.elapsed));
                if a.elapsed > latest {
                    problems.push(format!(
                        "the service answered {} after {}, later than its declared timeout {} \
                         (+{} margin)",
                        a.status,
                        ms(a.elapsed),
                        ms(t.timeout),
                        ms(t.margin)
                    ));
                } else if a.elapsed < earliest {
                    problems.push(format!(
                        "the service answered {} after {}, before its declared timeout {} \
                         (-{} margin): the answer did not come from that timeout",
                        a.status,
                        ms(a.elapsed),
                        ms(t.timeout),
                        ms(t.margin)
                    ));
                }
                match t.status {
                    Some(want) if a.status != want => problems.push(format!(
                        "the service answered {}; declared {want}",
                        a.status
                    )),
                    None if !(500..=599).contains(&a.status) => problems.push(format!(
                        "the service answered {}; declared an error status (5xx)",
                        a.status
                    )),
                    _ => {}
                }
                if a.body.iter().all(u8::is_ascii_whitespace) {
                    problems.push(format!(
                        "the service answered {} with an empty body; an error body was expected",
                        a.status
                    ));
                } else {
                    ctx.detail("body", citadel_itest_core::http::excerpt(&a.body));
                }
            }
        }
        // The fault is gone: the service answers normally again, and how soon is measured.
        let (recovery, problem) = self
            .recovery(ctx, super::DEFAULT_RECOVER_WITHIN, super::RECOVERY_POLL)
            .await;
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
