//! The model server's `/metrics`: Prometheus text exposition format 0.0.4.
//!
//! Requests are counted when they finish (for a stream: just before its last event is sent, so
//! a client that has read the whole stream always sees it counted). Scrapes of `/metrics` and
//! calls to `/fixture/*` are not counted; everything else is, under its route template
//! (`/v1/chat/completions`, `/v1/models/{model}`, `/health`) or `unmatched`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Upper bounds (seconds) of the request-duration histogram buckets; `+Inf` is added.
pub(crate) const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Linux's `USER_HZ` (the unit of `/proc/<pid>/stat` times), 100 on every supported platform.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug, Default)]
struct Histogram {
    /// Non-cumulative counts per bucket of [`DURATION_BUCKETS`], then `+Inf`.
    counts: [u64; DURATION_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

#[derive(Debug, Default)]
struct Inner {
    requests: BTreeMap<(String, u16), u64>,
    durations: BTreeMap<String, Histogram>,
    generated_tokens: BTreeMap<String, u64>,
    prompt_tokens: BTreeMap<String, u64>,
    faults: BTreeMap<&'static str, u64>,
    request_log_dropped: u64,
}

/// The server's counters. Cheap to update from any task.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    inner: Mutex<Inner>,
    in_flight: AtomicI64,
}

impl Metrics {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
    }

    /// Counts a finished request and ends its in-flight time.
    pub(crate) fn request_finished(&self, route: &str, status: u16, duration: Duration) {
        let mut inner = self.lock();
        *inner
            .requests
            .entry((route.to_owned(), status))
            .or_default() += 1;
        let h = inner.durations.entry(route.to_owned()).or_default();
        let secs = duration.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(DURATION_BUCKETS.len());
        h.counts[bucket] += 1;
        h.sum += secs;
        h.count += 1;
        drop(inner);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    pub(crate) fn add_generated_tokens(&self, model: &str, tokens: u64) {
        if tokens > 0 {
            *self
                .lock()
                .generated_tokens
                .entry(model.to_owned())
                .or_default() += tokens;
        }
    }

    pub(crate) fn add_prompt_tokens(&self, model: &str, tokens: u64) {
        *self
            .lock()
            .prompt_tokens
            .entry(model.to_owned())
            .or_default() += tokens;
    }

    pub(crate) fn fault_injected(&self, fault: &'static str) {
        *self.lock().faults.entry(fault).or_default() += 1;
    }

    #[cfg_attr(not(feature = "models-db"), allow(dead_code))]
    pub(crate) fn request_log_dropped(&self) {
        self.lock().request_log_dropped += 1;
    }

    /// The exposition text.
    pub(crate) fn render(&self, backend_id: &str, models: &[String]) -> String {
        let inner = self.lock();
        let mut out = String::with_capacity(4096);
        header(
            &mut out,
            "fixture_backend_info",
            "gauge",
            "Identity of this model server backend (always 1).",
        );
        let _ = writeln!(
            out,
            "fixture_backend_info{{backend_id=\"{}\"}} 1",
            escape(backend_id)
        );

        header(
            &mut out,
            "fixture_requests_total",
            "counter",
            "Requests answered, by route template and HTTP status (not counting /metrics and /fixture/*).",
        );
        for ((route, status), n) in &inner.requests {
            let _ = writeln!(
                out,
                "fixture_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }

        let name = "fixture_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from receiving a request to its last byte being handed to the connection."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (route, h) in &inner.durations {
            let route = escape(route);
            let mut cumulative = 0;
            for (i, le) in DURATION_BUCKETS.iter().enumerate() {
                cumulative += h.counts[i];
                let _ = writeln!(
                    out,
                    "{name}_bucket{{route=\"{route}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "{name}_sum{{route=\"{route}\"}} {}", h.sum);
            let _ = writeln!(out, "{name}_count{{route=\"{route}\"}} {}", h.count);
        }

        let _ = writeln!(
            out,
            "# HELP fixture_requests_in_flight Requests received and not yet finished."
        );
        let _ = writeln!(out, "# TYPE fixture_requests_in_flight gauge");
        let _ = writeln!(
            out,
            "fixture_requests_in_flight {}",
            // This scrape is never counted, so it is not in flight either.
            self.in_flight.load(Ordering::SeqCst).max(0)
        );

        for (name, help, map) in [
            (
                "fixture_generated_tokens_total",
                "Completion tokens sent to clients, by model.",
                &inner.generated_tokens,
            ),
            (
                "fixture_prompt_tokens_total",
                "Prompt tokens of answered completion and embedding requests, by model.",
                &inner.prompt_tokens,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            // Every configured model appears, at 0 until used, so rates work from the start.
            let mut all: BTreeMap<&str, u64> = models.iter().map(|m| (m.as_str(), 0)).collect();
            for (model, n) in map {
                all.insert(model, *n);
            }
            for (model, n) in all {
                let _ = writeln!(out, "{name}{{model=\"{}\"}} {n}", escape(model));
            }
        }

        let _ = writeln!(
            out,
            "# HELP fixture_faults_injected_total Faults injected into responses, by kind."
        );
        let _ = writeln!(out, "# TYPE fixture_faults_injected_total counter");
        for (fault, n) in &inner.faults {
            let _ = writeln!(
                out,
                "fixture_faults_injected_total{{fault=\"{fault}\"}} {n}"
            );
        }

        let _ = writeln!(
            out,
            "# HELP fixture_request_log_dropped_total Request-log rows dropped because the writer queue was full."
        );
        let _ = writeln!(out, "# TYPE fixture_request_log_dropped_total counter");
        let _ = writeln!(
            out,
            "fixture_request_log_dropped_total {}",
            inner.request_log_dropped
        );
        drop(inner);

        if let Some(rss) = resident_memory_bytes() {
            let _ = writeln!(
                out,
                "# HELP process_resident_memory_bytes Resident memory size in bytes."
            );
            let _ = writeln!(out, "# TYPE process_resident_memory_bytes gauge");
            let _ = writeln!(out, "process_resident_memory_bytes {rss}");
        }
        if let Some(cpu) = cpu_seconds() {
            let _ = writeln!(
                out,
                "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds."
            );
            let _ = writeln!(out, "# TYPE process_cpu_seconds_total counter");
            let _ = writeln!(out, "process_cpu_seconds_total {cpu}");
        }
        out
    }
}

/// Writes the `# HELP` and `# TYPE` lines of a metric family.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value: backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `VmRSS` from `/proc/self/status`, in bytes.
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `utime + stime` from `/proc/self/stat`, in seconds.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: skip past it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / CLOCK_TICKS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histogram_and_process_metrics() {
        let m = Metrics::default();
        m.request_started();
        m.request_finished("/v1/models", 200, Duration::from_millis(7));
        m.request_started();
        m.request_started();
        m.request_finished("/v1/models", 200, Duration::from_millis(60));
        m.add_generated_tokens("a", 5);
        m.fault_injected("stall");
        let text = m.render("b\"1", &["a".to_owned(), "b".to_owned()]);
        assert!(text.contains("fixture_backend_info{backend_id=\"b\\\"1\"} 1\n"));
        assert!(text.contains("fixture_requests_total{route=\"/v1/models\",status=\"200\"} 2\n"));
        assert!(text.contains(
            "fixture_request_duration_seconds_bucket{route=\"/v1/models\",le=\"0.005\"} 0\n"
        ));
        assert!(text.contains(
            "fixture_request_duration_seconds_bucket{route=\"/v1/models\",le=\"0.01\"} 1\n"
        ));
        assert!(text.contains(
            "fixture_request_duration_seconds_bucket{route=\"/v1/models\",le=\"0.1\"} 2\n"
        ));
        assert!(text.contains(
            "fixture_request_duration_seconds_bucket{route=\"/v1/models\",le=\"+Inf\"} 2\n"
        ));
        assert!(text.contains("fixture_requests_in_flight 1\n"));
        assert!(text.contains("fixture_generated_tokens_total{model=\"a\"} 5\n"));
        assert!(text.contains("fixture_generated_tokens_total{model=\"b\"} 0\n"));
        assert!(text.contains("fixture_faults_injected_total{fault=\"stall\"} 1\n"));
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"));
        assert!(resident_memory_bytes().is_some_and(|b| b > 0));
        assert!(cpu_seconds().is_some());
    }
}
