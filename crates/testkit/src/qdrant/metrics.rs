//! `GET /metrics`: the Prometheus text Qdrant 1.18.3 serves, family by family in its order, with
//! its types and label names (recorded in `tests/reference/qdrant-1.18.3-metrics.txt`).
//!
//! Like Qdrant, request series exist only for the endpoints Qdrant reports (the points routes
//! of the REST API, the `qdrant.Points` service of gRPC) and only once one was called. REST
//! durations count successful answers only (status below 400); gRPC durations count every
//! answer, labelled by its gRPC status code.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::store::Store;

/// The histogram bounds Qdrant uses for response durations, in seconds (then `+Inf`).
const BUCKETS: [f64; 11] = [
    0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 50.0,
];

/// The REST route templates Qdrant reports (those of them the fixture serves).
const REST_ENDPOINTS: &[&str] = &[
    "/collections/{collection_name}/points",
    "/collections/{collection_name}/points/count",
    "/collections/{collection_name}/points/delete",
    "/collections/{collection_name}/points/query",
    "/collections/{collection_name}/points/scroll",
    "/collections/{collection_name}/points/search",
];

/// Whether Qdrant reports a REST route template in `/metrics`.
pub(crate) fn rest_endpoint_is_reported(endpoint: &str) -> bool {
    REST_ENDPOINTS.contains(&endpoint)
}

/// Whether Qdrant reports a gRPC method path in `/metrics`: the points service.
pub(crate) fn grpc_endpoint_is_reported(path: &str) -> bool {
    path.starts_with("/qdrant.Points/")
}

/// Responses of one series: how many, and the durations of the timed ones.
#[derive(Debug, Clone, Default)]
struct Stats {
    count: u64,
    timed: u64,
    sum: f64,
    min: f64,
    max: f64,
    /// Timed responses at most each bound of [`BUCKETS`] long.
    buckets: [u64; BUCKETS.len()],
}

impl Stats {
    fn add(&mut self, duration: Option<Duration>) {
        self.count += 1;
        let Some(duration) = duration else {
            return;
        };
        let seconds = duration.as_secs_f64();
        if self.timed == 0 || seconds < self.min {
            self.min = seconds;
        }
        if self.timed == 0 || seconds > self.max {
            self.max = seconds;
        }
        self.timed += 1;
        self.sum += seconds;
        for (bound, bucket) in BUCKETS.iter().zip(&mut self.buckets) {
            if seconds <= *bound {
                *bucket += 1;
            }
        }
    }
}

/// Response series, by REST endpoint and by gRPC method.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// (method, route template, HTTP status) -> responses.
    rest: Mutex<BTreeMap<(String, String, u16), Stats>>,
    /// (method path, gRPC status code) -> responses.
    grpc: Mutex<BTreeMap<(String, i32), Stats>>,
}

/// One sample: its label set (`{..}` or empty) and its value as text.
type Sample = (String, String);

impl Metrics {
    /// Counts one REST response of a reported endpoint (see [`rest_endpoint_is_reported`]);
    /// others are ignored. `endpoint` is the route template, e.g.
    /// `/collections/{collection_name}/points/search`.
    pub(crate) fn record_rest(&self, method: &str, endpoint: &str, status: u16, took: Duration) {
        if !rest_endpoint_is_reported(endpoint) {
            return;
        }
        let mut rest = self.rest.lock().unwrap_or_else(PoisonError::into_inner);
        rest.entry((method.to_owned(), endpoint.to_owned(), status))
            .or_default()
            .add((status < 400).then_some(took));
    }

    /// Counts one gRPC response of a reported method (see [`grpc_endpoint_is_reported`]) with
    /// its status code (0 is OK).
    pub(crate) fn record_grpc(&self, path: &str, code: i32, took: Duration) {
        if !grpc_endpoint_is_reported(path) {
            return;
        }
        let mut grpc = self.grpc.lock().unwrap_or_else(PoisonError::into_inner);
        grpc.entry((path.to_owned(), code))
            .or_default()
            .add(Some(took));
    }

    /// The exposition text. Families without samples are left out.
    pub(crate) fn render(&self, version: &str, store: &Store) -> String {
        let (collections, vectors) = store.totals();
        let per_collection = store.vector_bytes_written();
        let replicas = u64::from(collections > 0);
        let mut out = String::new();
        let plain = |value: u64| vec![(String::new(), value.to_string())];
        family(
            &mut out,
            "app_info",
            "information about qdrant server",
            "gauge",
            &[(
                format!("{{name=\"qdrant\",version=\"{}\"}}", escape(version)),
                "1".to_owned(),
            )],
        );
        family(
            &mut out,
            "app_status_recovery_mode",
            "features enabled in qdrant server",
            "gauge",
            &plain(0),
        );
        family(
            &mut out,
            "collections_total",
            "number of collections",
            "gauge",
            &plain(collections as u64),
        );
        family(
            &mut out,
            "collections_vector_total",
            "total number of vectors in all collections",
            "gauge",
            &plain(vectors as u64),
        );
        family(
            &mut out,
            "collection_active_replicas_min",
            "minimum number of active replicas across all shards",
            "gauge",
            &plain(replicas),
        );
        family(
            &mut out,
            "collection_active_replicas_max",
            "maximum number of active replicas across all shards",
            "gauge",
            &plain(replicas),
        );
        family(
            &mut out,
            "collection_dead_replicas",
            "total amount of shard replicas in non-active state",
            "gauge",
            &plain(0),
        );
        let by_id = |value: &dyn Fn(u64) -> u64| -> Vec<Sample> {
            per_collection
                .iter()
                .map(|(name, written)| {
                    (
                        format!("{{id=\"{}\"}}", escape(name)),
                        value(*written).to_string(),
                    )
                })
                .collect()
        };
        let zero = by_id(&|_| 0);
        family(
            &mut out,
            "snapshot_creation_running",
            "amount of snapshot creations that are currently running",
            "gauge",
            &zero,
        );
        family(
            &mut out,
            "snapshot_recovery_running",
            "amount of snapshot recovery operations currently running",
            "gauge",
            &zero,
        );
        family(
            &mut out,
            "snapshot_created_total",
            "total amount of snapshots created",
            "counter",
            &zero,
        );
        family(
            &mut out,
            "cluster_enabled",
            "is cluster support enabled",
            "gauge",
            &plain(0),
        );

        let rest: Vec<(String, Stats)> = self
            .rest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|((method, endpoint, status), stats)| {
                (
                    format!(
                        "method=\"{}\",endpoint=\"{}\",status=\"{status}\"",
                        escape(method),
                        escape(endpoint)
                    ),
                    stats.clone(),
                )
            })
            .collect();
        responses(&mut out, "rest", &rest);
        let grpc: Vec<(String, Stats)> = self
            .grpc
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|((path, code), stats)| {
                (
                    format!("endpoint=\"{}\",status=\"{code}\"", escape(path)),
                    stats.clone(),
                )
            })
            .collect();
        responses(&mut out, "grpc", &grpc);

        for (name, help) in [
            ("cpu", "CPU measurements of a collection"),
            (
                "payload_io_read",
                "Total IO payload read metrics of a collection",
            ),
            (
                "payload_index_io_read",
                "Total IO payload index read metrics of a collection",
            ),
            (
                "payload_index_io_write",
                "Total IO payload index write metrics of a collection",
            ),
            (
                "payload_io_write",
                "Total IO payload write metrics of a collection",
            ),
            (
                "vector_io_read",
                "Total IO vector read metrics of a collection",
            ),
            (
                "vector_io_write",
                "Total IO vector write metrics of a collection",
            ),
        ] {
            // Only the vector bytes written are measured; the rest stay 0.
            let samples = if name == "vector_io_write" {
                by_id(&|written| written)
            } else {
                zero.clone()
            };
            family(
                &mut out,
                &format!("collection_hardware_metric_{name}"),
                help,
                "counter",
                &samples,
            );
        }
        process_families(&mut out);
        out
    }
}

/// The five families of one protocol's responses: total, avg/min/max durations, histogram.
fn responses(out: &mut String, protocol: &str, series: &[(String, Stats)]) {
    let total: Vec<Sample> = series
        .iter()
        .map(|(labels, s)| (format!("{{{labels}}}"), s.count.to_string()))
        .collect();
    family(
        out,
        &format!("{protocol}_responses_total"),
        "total number of responses",
        "counter",
        &total,
    );
    let timed: Vec<&(String, Stats)> = series.iter().filter(|(_, s)| s.timed > 0).collect();
    for (suffix, help, value) in [
        (
            "avg",
            "average response duration",
            (|s: &Stats| s.sum / s.timed as f64) as fn(&Stats) -> f64,
        ),
        ("min", "minimum response duration", |s: &Stats| s.min),
        ("max", "maximum response duration", |s: &Stats| s.max),
    ] {
        let samples: Vec<Sample> = timed
            .iter()
            .map(|(labels, s)| (format!("{{{labels}}}"), value(s).to_string()))
            .collect();
        family(
            out,
            &format!("{protocol}_responses_{suffix}_duration_seconds"),
            help,
            "gauge",
            &samples,
        );
    }
    if timed.is_empty() {
        return;
    }
    let name = format!("{protocol}_responses_duration_seconds");
    let _ = writeln!(out, "# HELP {name} response duration histogram");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (labels, s) in timed {
        for (bound, n) in BUCKETS.iter().zip(s.buckets) {
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", s.timed);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", s.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", s.timed);
    }
}

/// The memory and process families, read from `/proc/self` (Linux; elsewhere left out). They
/// describe the process the fixture runs in (the test binary), and `memory_*` come from
/// `/proc/self/statm` rather than an allocator's statistics.
fn process_families(out: &mut String) {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let page = 4096u64;
    if let Some(statm) = read("/proc/self/statm") {
        let fields: Vec<u64> = statm
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        if let (Some(resident), Some(data)) = (fields.get(1), fields.get(5)) {
            let (resident, data) = (resident * page, data * page);
            for (name, help, value) in [
                (
                    "active",
                    "Total number of bytes in active pages allocated by the application",
                    resident,
                ),
                (
                    "allocated",
                    "Total number of bytes allocated by the application",
                    data,
                ),
                ("metadata", "Total number of bytes dedicated to metadata", 0),
                (
                    "resident",
                    "Maximum number of bytes in physically resident data pages mapped",
                    resident,
                ),
                (
                    "retained",
                    "Total number of bytes in virtual memory mappings",
                    0,
                ),
            ] {
                family(
                    out,
                    &format!("memory_{name}_bytes"),
                    help,
                    "gauge",
                    &[(String::new(), value.to_string())],
                );
            }
        }
    }
    let Some(status) = read("/proc/self/stat") else {
        return;
    };
    // Fields after the command name (which may contain spaces) closing with ')'.
    let after = status.rsplit_once(')').map_or("", |(_, rest)| rest);
    let stat: Vec<&str> = after.split_whitespace().collect();
    // stat(5): minflt is field 10, majflt 12, num_threads 20 (1-based, counting pid and comm).
    let field = |n: usize| stat.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let count = |path: &str| std::fs::read_dir(path).map(|d| d.count() as u64).ok();
    let maps = read("/proc/self/maps").map(|m| m.lines().count() as u64);
    let max_maps = read("/proc/sys/vm/max_map_count").and_then(|v| v.trim().parse::<u64>().ok());
    let max_fds = read("/proc/self/limits").and_then(|limits| {
        limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse::<u64>().ok())
    });
    for (name, help, kind, value) in [
        (
            "process_threads",
            "count of active threads",
            "gauge",
            field(20),
        ),
        ("process_open_mmaps", "count of open mmaps", "gauge", maps),
        (
            "system_max_mmaps",
            "system wide limit of open mmaps",
            "gauge",
            max_maps,
        ),
        (
            "process_open_fds",
            "count of currently open file descriptors",
            "gauge",
            count("/proc/self/fd"),
        ),
        (
            "process_max_fds",
            "limit for open file descriptors",
            "gauge",
            max_fds,
        ),
        (
            "process_minor_page_faults_total",
            "count of minor page faults which didn't cause a disk access",
            "counter",
            field(10),
        ),
        (
            "process_major_page_faults_total",
            "count of disk accesses caused by a mmap page fault",
            "counter",
            field(12),
        ),
    ] {
        if let Some(value) = value {
            family(out, name, help, kind, &[(String::new(), value.to_string())]);
        }
    }
}

fn family(out: &mut String, name: &str, help: &str, kind: &str, samples: &[Sample]) {
    if samples.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// Escapes a label value (backslash, double quote, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_families_follow_qdrant() {
        let metrics = Metrics::default();
        let store = Store::default();
        let text = metrics.render("1.18.3", &store);
        assert!(text.starts_with(
            "# HELP app_info information about qdrant server\n# TYPE app_info gauge\n\
             app_info{name=\"qdrant\",version=\"1.18.3\"} 1\n"
        ));
        assert!(text.contains("\ncollections_total 0\n"));
        assert!(!text.contains("rest_responses_total"));

        let ms = Duration::from_millis(2);
        let search = "/collections/{collection_name}/points/search";
        metrics.record_rest("POST", search, 200, ms);
        metrics.record_rest("POST", search, 200, ms);
        metrics.record_rest("POST", search, 422, ms);
        metrics.record_rest("GET", "/collections", 200, ms);
        metrics.record_grpc("/qdrant.Points/Search", 0, ms);
        metrics.record_grpc("/qdrant.Points/Search", 3, ms);
        metrics.record_grpc("/qdrant.Collections/List", 0, ms);
        let text = metrics.render("1.18.3", &store);
        let labels = "method=\"POST\",endpoint=\"/collections/{collection_name}/points/search\"";
        for line in [
            format!("rest_responses_total{{{labels},status=\"200\"}} 2"),
            format!("rest_responses_total{{{labels},status=\"422\"}} 1"),
            format!("rest_responses_min_duration_seconds{{{labels},status=\"200\"}} 0.002"),
            format!(
                "rest_responses_duration_seconds_bucket{{{labels},status=\"200\",le=\"0.001\"}} 0"
            ),
            format!(
                "rest_responses_duration_seconds_bucket{{{labels},status=\"200\",le=\"0.005\"}} 2"
            ),
            format!("rest_responses_duration_seconds_count{{{labels},status=\"200\"}} 2"),
            "grpc_responses_total{endpoint=\"/qdrant.Points/Search\",status=\"0\"} 1".to_owned(),
            "grpc_responses_total{endpoint=\"/qdrant.Points/Search\",status=\"3\"} 1".to_owned(),
            "grpc_responses_max_duration_seconds{endpoint=\"/qdrant.Points/Search\",status=\"3\"} 0.002"
                .to_owned(),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        assert!(!text.contains("status=\"422\"}} 0.002"));
        assert!(!text.contains("avg_duration_seconds{method=\"POST\",endpoint=\"/collections/{collection_name}/points/search\",status=\"422\""));
        assert!(!text.contains("/qdrant.Collections/List"));
        assert!(!text.contains("endpoint=\"/collections\""));
        assert!(!text.contains("fail_total"));
    }
}
