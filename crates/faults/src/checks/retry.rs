//! `faults.<name>.retry`: one call while the dependency fails; the proxy's log shows how often
//! and how far apart the service tried it.

use std::time::Duration;

use citadel_itest_core::{BoxError, CheckContext, Measurement, Outcome, Threshold, Unit};

use super::{Call, DrillCheck, ms, ms_f64, pause, plural};
use crate::proxy::Fault;

impl DrillCheck {
    pub(super) async fn run_retry(
        &self,
        ctx: &CheckContext,
        fault: &Fault,
    ) -> Result<Outcome, BoxError> {
        let Some(r) = &self.drill.retry else {
            return Ok(Outcome::skipped("no retry declared"));
        };
        let mark = self.proxy.now().await?;
        let applied = self.apply(ctx, fault).await?;
        let call = self.call(r.give_up_within).await;
        // Late retries (a client that answers first and retries in the background) count too.
        if !pause(ctx, r.settle).await {
            return Ok(Outcome::error(
                citadel_itest_core::ErrorKind::Cancelled,
                "cancelled",
            ));
        }
        let events = self.proxy.events_since(mark).await?;
        self.lift(&applied).await?;

        let times = self.attempts(&events);
        let spacing: Vec<Duration> = times
            .windows(2)
            .map(|w| w[1].saturating_sub(w[0]))
            .collect();
        ctx.detail("answer", call.describe());
        ctx.detail(
            "attempts_at_ms",
            times
                .iter()
                .map(|t| ms_f64(t.saturating_sub(mark)).round())
                .collect::<Vec<_>>(),
        );
        ctx.detail(
            "spacing_ms",
            spacing
                .iter()
                .map(|d| ms_f64(*d).round())
                .collect::<Vec<_>>(),
        );
        let mut measurements = vec![
            Measurement::new("attempts", times.len() as f64, Unit::Count)
                .with_threshold(Threshold::le(f64::from(r.attempts))),
        ];
        if let Some(min) = spacing.iter().min() {
            let m = Measurement::new("spacing_min", ms_f64(*min), Unit::Milliseconds);
            measurements.push(match r.min_backoff {
                Some(b) => m.with_threshold(Threshold::ge(ms_f64(b))),
                None => m,
            });
        }
        if let Call::Answer(a) = &call {
            measurements.push(Measurement::duration("give_up_time", a.elapsed));
        }

        let dependency = "the dependency";
        let made = plural(times.len(), "attempt", "attempts");
        let mut problems = Vec::new();
        if times.is_empty() {
            problems.push(format!(
                "the service made no attempt to {dependency} through the proxy at {} ({}): \
                 the fault was never exercised (is the proxy between them?)",
                self.proxy.key(),
                call.describe()
            ));
        } else if times.len() as u32 != r.attempts {
            problems.push(format!(
                "the service made {made} to {dependency} for one call; declared {}",
                r.attempts
            ));
        }
        if let Some(b) = r.min_backoff {
            for (i, gap) in spacing.iter().enumerate() {
                if *gap < b {
                    problems.push(format!(
                        "attempts {} and {} were {} apart; declared backoff at least {}",
                        i + 1,
                        i + 2,
                        ms(*gap),
                        ms(b)
                    ));
                    break;
                }
            }
        }
        match &call {
            Call::Hung { bound } => problems.push(format!(
                "the service did not give up within {} ({made} by then): a hang, not a clean \
                 error",
                ms(*bound)
            )),
            Call::Broken { after, message } => problems.push(format!(
                "the service broke the connection after {} ({message}) instead of answering \
                 an error",
                ms(*after)
            )),
            Call::Answer(a) => {
                let clean = if r.give_up_status.is_empty() {
                    (400..=599).contains(&a.status)
                } else {
                    r.give_up_status.contains(&a.status)
                };
                if !clean {
                    let want = if r.give_up_status.is_empty() {
                        "an error status (4xx or 5xx)".to_string()
                    } else {
                        format!("one of {:?}", r.give_up_status)
                    };
                    problems.push(format!(
                        "the service answered {} after {} while every attempt failed; \
                         declared {want}",
                        a.status,
                        ms(a.elapsed)
                    ));
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
