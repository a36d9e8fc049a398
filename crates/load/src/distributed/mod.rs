//! A load run over several processes: a [`coordinator`] hands each shard the plan (scenario,
//! shard count, a common start time), receives each shard's [`LoadResult`](crate::LoadResult),
//! merges them exactly and judges the thresholds on the whole; the [`client`] is the shard's
//! side. HTTP/1.1, JSON bodies, an optional bearer token.
//!
//! | Request | Answer |
//! |---|---|
//! | `GET /plan?shard=I` | `200` [`ShardPlan`] |
//! | `POST /result?shard=I` (a `LoadResult`) | `200`; `409` when shard `I` already reported; `400` for a result of another scenario or shard |
//! | anything without the token | `401` |

pub mod client;
pub mod coordinator;
#[cfg(feature = "k8s")]
pub mod k8s;

use serde::{Deserialize, Serialize};

/// What the coordinator tells a shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ShardPlan {
    /// The scenario to run.
    pub scenario: String,
    /// How many shards the run has.
    pub shards: u32,
    /// When every shard begins, in Unix milliseconds.
    pub start_at_ms: u64,
}

/// Parse a duration such as `5m`, `90s` or `1h 30m` (for command lines).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| format!("`{text}` is not a duration ({e})"))
}

/// A duration as `5m 3s`.
pub fn format_duration(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Whether `a` equals `b`, in time independent of where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u64;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= u64::from(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn constant_time_eq_compares() {
        use super::constant_time_eq as eq;
        assert!(eq(b"secret", b"secret"));
        assert!(!eq(b"secret", b"secreT"));
        assert!(!eq(b"secret", b"secret2"));
        assert!(!eq(b"", b"x"));
        assert!(eq(b"", b""));
    }
}
