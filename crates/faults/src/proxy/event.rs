//! The proxy's event log: every connection, request and injected fault, with timestamps.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::FaultId;

/// How many events the log keeps; older ones are dropped first.
pub const EVENT_LOG_CAPACITY: usize = 100_000;

/// One thing the proxy saw or did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Event {
    /// When, since the proxy started ([`super::ProxyHandle::started`]); humantime in JSON.
    #[serde(with = "humantime_serde")]
    pub at: Duration,
    /// The client connection's number (from 1, in accept order).
    pub conn: u64,
    /// What happened.
    pub kind: EventKind,
}

/// What an [`Event`] records. Serialized with a `type` tag in snake_case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A client connection was accepted.
    Accepted,
    /// The proxy connected to the upstream for this client connection.
    UpstreamConnected,
    /// Connecting to the upstream failed or timed out.
    UpstreamFailed {
        /// Why.
        error: String,
    },
    /// The client connection ended; bytes from the client and to the client.
    Closed {
        /// Bytes read from the client.
        up_bytes: u64,
        /// Bytes written to the client.
        down_bytes: u64,
    },
    /// An HTTP request arrived (HTTP mode).
    Request {
        /// The method.
        method: String,
        /// The path, without the query (a query may carry a key).
        path: String,
    },
    /// The proxy answered a request with this status (HTTP mode).
    Response {
        /// The status code.
        status: u16,
    },
    /// A fault was applied to this connection or request.
    Fault {
        /// The fault's id.
        id: FaultId,
        /// What it did ([`super::Fault::describe`]).
        what: String,
    },
}

/// A bounded ring of events.
#[derive(Debug)]
pub(crate) struct EventLog {
    started: Instant,
    events: Mutex<VecDeque<Event>>,
    capacity: usize,
}

impl EventLog {
    pub(crate) fn new(started: Instant, capacity: usize) -> Self {
        Self {
            started,
            events: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
        }
    }

    pub(crate) fn record(&self, conn: u64, kind: EventKind) {
        let at = self.started.elapsed();
        if let Some(kind) = match &kind {
            EventKind::Fault { id, what } => Some(format!("fault {id}: {what}")),
            EventKind::UpstreamFailed { error } => Some(format!("upstream failed: {error}")),
            _ => None,
        } {
            tracing::debug!(conn, "{kind}");
        }
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        while events.len() >= self.capacity {
            events.pop_front();
        }
        events.push_back(Event { at, conn, kind });
    }

    pub(crate) fn since(&self, t: Duration) -> Vec<Event> {
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let start = events.partition_point(|e| e.at < t);
        events.range(start..).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_is_bounded_and_since_filters() {
        let log = EventLog::new(Instant::now(), 3);
        for conn in 1..=5 {
            log.record(conn, EventKind::Accepted);
        }
        let all = log.since(Duration::ZERO);
        assert_eq!(all.iter().map(|e| e.conn).collect::<Vec<_>>(), [3, 4, 5]);
        let later = log.since(all[2].at + Duration::from_nanos(1));
        assert!(later.is_empty());
        let json = serde_json::to_value(&all[0]).unwrap();
        assert_eq!(json["kind"]["type"], "accepted");
    }
}
