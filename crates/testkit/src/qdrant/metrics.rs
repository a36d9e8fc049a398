//! `GET /metrics`: the Prometheus text Qdrant serves, for the families a monitoring check reads.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};

use super::store::Store;

/// Response counters, by REST endpoint and by gRPC method.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// (method, endpoint pattern, status) -> responses.
    rest: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// gRPC path -> (responses, failed responses).
    grpc: Mutex<BTreeMap<String, (u64, u64)>>,
}

impl Metrics {
    /// Counts one REST response. `endpoint` is the route pattern, e.g.
    /// `/collections/{name}/points/search`, as Qdrant labels it.
    pub(crate) fn record_rest(&self, method: &str, endpoint: &str, status: u16) {
        let mut rest = self.rest.lock().unwrap_or_else(PoisonError::into_inner);
        *rest
            .entry((method.to_owned(), endpoint.to_owned(), status))
            .or_default() += 1;
    }

    /// Counts one gRPC response; `ok` is whether its status was `OK`.
    pub(crate) fn record_grpc(&self, path: &str, ok: bool) {
        let mut grpc = self.grpc.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = grpc.entry(path.to_owned()).or_default();
        entry.0 += 1;
        if !ok {
            entry.1 += 1;
        }
    }

    /// The exposition text. Like Qdrant, the request families appear only once there is a
    /// request to count; a REST response counts as failed when its status is 400 or more.
    pub(crate) fn render(&self, version: &str, store: &Store) -> String {
        let (collections, vectors) = store.totals();
        let mut out = String::new();
        family(
            &mut out,
            "app_info",
            "information about qdrant server",
            "gauge",
            &[(
                format!("{{name=\"qdrant\",version=\"{}\"}}", escape(version)),
                1,
            )],
        );
        family(
            &mut out,
            "app_status_recovery_mode",
            "features enabled in qdrant server",
            "gauge",
            &[(String::new(), 0)],
        );
        family(
            &mut out,
            "collections_total",
            "number of collections",
            "gauge",
            &[(String::new(), collections as u64)],
        );
        family(
            &mut out,
            "collections_vector_total",
            "total number of vectors in all collections",
            "gauge",
            &[(String::new(), vectors as u64)],
        );

        let rest = self
            .rest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if !rest.is_empty() {
            let label = |(method, endpoint, status): &(String, String, u16)| {
                format!(
                    "{{method=\"{}\",endpoint=\"{}\",status=\"{status}\"}}",
                    escape(method),
                    escape(endpoint)
                )
            };
            let total: Vec<_> = rest.iter().map(|(k, n)| (label(k), *n)).collect();
            let failed: Vec<_> = rest
                .iter()
                .map(|(k, n)| (label(k), if k.2 >= 400 { *n } else { 0 }))
                .collect();
            family(
                &mut out,
                "rest_responses_total",
                "total number of responses",
                "counter",
                &total,
            );
            family(
                &mut out,
                "rest_responses_fail_total",
                "total number of failed responses",
                "counter",
                &failed,
            );
        }

        let grpc = self
            .grpc
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if !grpc.is_empty() {
            let label = |path: &str| format!("{{endpoint=\"{}\"}}", escape(path));
            let total: Vec<_> = grpc.iter().map(|(p, (n, _))| (label(p), *n)).collect();
            let failed: Vec<_> = grpc.iter().map(|(p, (_, f))| (label(p), *f)).collect();
            family(
                &mut out,
                "grpc_responses_total",
                "total number of responses",
                "counter",
                &total,
            );
            family(
                &mut out,
                "grpc_responses_fail_total",
                "total number of failed responses",
                "counter",
                &failed,
            );
        }
        out
    }
}

fn family(out: &mut String, name: &str, help: &str, kind: &str, samples: &[(String, u64)]) {
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
    fn families_appear_once_there_are_requests() {
        let metrics = Metrics::default();
        let store = Store::default();
        let text = metrics.render("1.18.3", &store);
        assert!(text.starts_with(
            "# HELP app_info information about qdrant server\n# TYPE app_info gauge\n\
             app_info{name=\"qdrant\",version=\"1.18.3\"} 1\n"
        ));
        assert!(text.contains("\ncollections_total 0\n"));
        assert!(!text.contains("rest_responses_total"));

        metrics.record_rest("GET", "/collections", 200);
        metrics.record_rest("GET", "/collections", 200);
        metrics.record_rest("GET", "/collections/{name}", 404);
        metrics.record_grpc("/qdrant.Points/Search", true);
        metrics.record_grpc("/qdrant.Points/Search", false);
        let text = metrics.render("1.18.3", &store);
        for line in [
            "rest_responses_total{method=\"GET\",endpoint=\"/collections\",status=\"200\"} 2",
            "rest_responses_fail_total{method=\"GET\",endpoint=\"/collections\",status=\"200\"} 0",
            "rest_responses_fail_total{method=\"GET\",endpoint=\"/collections/{name}\",status=\"404\"} 1",
            "grpc_responses_total{endpoint=\"/qdrant.Points/Search\"} 2",
            "grpc_responses_fail_total{endpoint=\"/qdrant.Points/Search\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }
}
