//! Fault descriptions: what to inject, in which direction, and for which share of traffic.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Mode;

/// The longest delay any fault accepts (latency, jitter, slice delay, SSE delays): one hour.
pub const MAX_FAULT_DELAY: Duration = Duration::from_secs(3600);
/// The largest injected HTTP body, in bytes.
pub const MAX_FAULT_BODY: usize = 64 * 1024;
/// The largest slice size, in bytes.
pub const MAX_SLICE: usize = 1024 * 1024;

/// The id the proxy gives an added fault; used to remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FaultId(pub u64);

impl fmt::Display for FaultId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Which way the bytes a fault acts on travel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Direction {
    /// From the client to the upstream (requests).
    Upstream,
    /// From the upstream to the client (responses); the default.
    #[default]
    Downstream,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Upstream => "upstream",
            Direction::Downstream => "downstream",
        })
    }
}

fn is_zero(d: &Duration) -> bool {
    d.is_zero()
}

/// One kind of fault. TCP-level faults act on the bytes of a connection and work in both
/// [`Mode`]s; the `Http*` and `Sse*` faults act on requests and need [`Mode::Http`].
///
/// Serialized with a `type` tag in snake_case, durations in humantime (`"200ms"`):
/// `{"type": "latency", "delay": "200ms", "direction": "downstream"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Fault {
    /// Delays every chunk by `delay` ± a uniform `jitter`, measured from when the proxy read it
    /// (chunks stay in order and pipelined: a long body is delayed once, not per chunk).
    Latency {
        /// The added delay.
        #[serde(with = "humantime_serde")]
        delay: Duration,
        /// Uniform jitter around `delay` (never below zero); default none.
        #[serde(default, with = "humantime_serde", skip_serializing_if = "is_zero")]
        jitter: Duration,
        /// Which way; default downstream.
        #[serde(default)]
        direction: Direction,
    },
    /// Limits the throughput to `bytes_per_sec`.
    Bandwidth {
        /// Bytes per second, at least 1.
        bytes_per_sec: u64,
        /// Which way; default downstream.
        #[serde(default)]
        direction: Direction,
    },
    /// Resets the client connection (TCP RST, `SO_LINGER` 0) once the client has sent its first
    /// bytes (or after 1 s); the upstream is never contacted.
    Reset,
    /// Accepts the connection and never answers: reads and discards what the client sends; the
    /// upstream is never contacted.
    Blackhole,
    /// Closes the connection once `bytes` bytes went the given way (the client sees a truncated
    /// answer or request).
    CloseAfter {
        /// Bytes passed before the close.
        bytes: u64,
        /// Which way; default downstream.
        #[serde(default)]
        direction: Direction,
    },
    /// Writes the bytes in slices of `size` bytes with `delay` between slices.
    Slice {
        /// Slice size in bytes, 1 ..= 1 MiB.
        size: usize,
        /// Pause between slices.
        #[serde(default, with = "humantime_serde")]
        delay: Duration,
        /// Which way; default downstream.
        #[serde(default)]
        direction: Direction,
    },
    /// Answers the request with `status` instead of forwarding it (HTTP mode).
    HttpStatus {
        /// The status code, 100 ..= 599.
        status: u16,
        /// A `Retry-After` header (whole seconds, rounded up).
        #[serde(
            default,
            with = "humantime_serde",
            skip_serializing_if = "Option::is_none"
        )]
        retry_after: Option<Duration>,
        /// The body; by default an OpenAI-style JSON error
        /// `{"error": {"message", "type", "param", "code"}}`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
    },
    /// Waits before forwarding the request, so the first byte of the answer comes this much later
    /// (HTTP mode).
    HttpDelay {
        /// The wait.
        #[serde(with = "humantime_serde")]
        before_first_byte: Duration,
    },
    /// Cuts a `text/event-stream` answer after `after_events` events: the connection is closed
    /// without the end of the chunked body (HTTP mode).
    SseCut {
        /// Events passed before the cut.
        after_events: u32,
    },
    /// Injects an in-band OpenAI-style error event (`data: {"error": {...}}`) after
    /// `after_events` events of a `text/event-stream` answer and ends the stream (HTTP mode).
    SseError {
        /// Events passed before the error event.
        after_events: u32,
    },
    /// Delays every event of a `text/event-stream` answer by `delay` (HTTP mode).
    SseSlow {
        /// The delay before each event.
        #[serde(with = "humantime_serde")]
        delay: Duration,
    },
}

impl Fault {
    /// Whether this fault acts on HTTP requests (needs [`Mode::Http`]).
    pub fn is_http(&self) -> bool {
        matches!(
            self,
            Fault::HttpStatus { .. }
                | Fault::HttpDelay { .. }
                | Fault::SseCut { .. }
                | Fault::SseError { .. }
                | Fault::SseSlow { .. }
        )
    }

    /// The fault's `type` name, e.g. `"latency"`.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Latency { .. } => "latency",
            Fault::Bandwidth { .. } => "bandwidth",
            Fault::Reset => "reset",
            Fault::Blackhole => "blackhole",
            Fault::CloseAfter { .. } => "close_after",
            Fault::Slice { .. } => "slice",
            Fault::HttpStatus { .. } => "http_status",
            Fault::HttpDelay { .. } => "http_delay",
            Fault::SseCut { .. } => "sse_cut",
            Fault::SseError { .. } => "sse_error",
            Fault::SseSlow { .. } => "sse_slow",
        }
    }

    /// A short human description, used in [`super::EventKind::Fault`].
    pub fn describe(&self) -> String {
        let d = |d: &Duration| humantime::format_duration(*d).to_string();
        match self {
            Fault::Latency {
                delay,
                jitter,
                direction,
            } => format!("latency {} ± {} {direction}", d(delay), d(jitter)),
            Fault::Bandwidth {
                bytes_per_sec,
                direction,
            } => format!("bandwidth {bytes_per_sec} B/s {direction}"),
            Fault::Reset => "reset".to_owned(),
            Fault::Blackhole => "blackhole".to_owned(),
            Fault::CloseAfter { bytes, direction } => {
                format!("close after {bytes} bytes {direction}")
            }
            Fault::Slice {
                size,
                delay,
                direction,
            } => format!("slice {size} bytes every {} {direction}", d(delay)),
            Fault::HttpStatus { status, .. } => format!("http status {status}"),
            Fault::HttpDelay { before_first_byte } => {
                format!("http delay {}", d(before_first_byte))
            }
            Fault::SseCut { after_events } => format!("sse cut after {after_events} events"),
            Fault::SseError { after_events } => {
                format!("sse error after {after_events} events")
            }
            Fault::SseSlow { delay } => format!("sse slow {} per event", d(delay)),
        }
    }

    fn validate(&self) -> Result<(), String> {
        let delay = |what: &str, v: &Duration| {
            if *v > MAX_FAULT_DELAY {
                Err(format!(
                    "{}.{what} {} is over the limit of 1h",
                    self.name(),
                    humantime::format_duration(*v)
                ))
            } else {
                Ok(())
            }
        };
        match self {
            Fault::Latency {
                delay: v, jitter, ..
            } => {
                delay("delay", v)?;
                delay("jitter", jitter)
            }
            Fault::Bandwidth { bytes_per_sec, .. } => {
                if *bytes_per_sec == 0 {
                    Err("bandwidth.bytes_per_sec must be at least 1".to_owned())
                } else {
                    Ok(())
                }
            }
            Fault::Reset | Fault::Blackhole | Fault::CloseAfter { .. } => Ok(()),
            Fault::Slice { size, delay: v, .. } => {
                if *size == 0 || *size > MAX_SLICE {
                    return Err(format!("slice.size {size} is not in 1..={MAX_SLICE}"));
                }
                delay("delay", v)
            }
            Fault::HttpStatus {
                status,
                retry_after,
                body,
            } => {
                if !(100..=599).contains(status) {
                    return Err(format!("http_status.status {status} is not in 100..=599"));
                }
                if let Some(r) = retry_after {
                    delay("retry_after", r)?;
                }
                match body {
                    Some(b) if b.len() > MAX_FAULT_BODY => Err(format!(
                        "http_status.body is {} bytes, over the limit of {MAX_FAULT_BODY}",
                        b.len()
                    )),
                    _ => Ok(()),
                }
            }
            Fault::HttpDelay { before_first_byte } => delay("before_first_byte", before_first_byte),
            Fault::SseCut { .. } | Fault::SseError { .. } => Ok(()),
            Fault::SseSlow { delay: v } => delay("delay", v),
        }
    }
}

fn default_toxicity() -> f64 {
    1.0
}

/// A fault and the share of traffic it applies to.
///
/// Each added fault counts the connections (TCP faults) or requests (HTTP faults) it sees from 0;
/// number `n` is hit when `n < first` (if set) and a SplitMix64 draw from `(seed, n)` falls below
/// `toxicity`. The same seed gives the same choice for the same numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FaultSpec {
    /// What to inject.
    pub fault: Fault,
    /// Share of connections (TCP faults) or requests (HTTP faults) hit, 0 ..= 1; default 1.
    #[serde(default = "default_toxicity")]
    pub toxicity: f64,
    /// Seed of the per-connection/request choice (and of latency jitter); default 0.
    #[serde(default)]
    pub seed: u64,
    /// Only the first N connections/requests seen after the fault was added; default all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<u64>,
}

impl FaultSpec {
    /// A fault applied to every connection/request (toxicity 1, seed 0).
    pub fn new(fault: Fault) -> Self {
        Self {
            fault,
            toxicity: 1.0,
            seed: 0,
            first: None,
        }
    }

    /// Sets the share of connections/requests hit, 0 ..= 1.
    pub fn toxicity(mut self, toxicity: f64) -> Self {
        self.toxicity = toxicity;
        self
    }

    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Applies only to the first `n` connections/requests.
    pub fn first(mut self, n: u64) -> Self {
        self.first = Some(n);
        self
    }

    /// Checks the values (toxicity in 0 ..= 1, sizes and delays in range); the message names the
    /// field.
    pub fn validate(&self) -> Result<(), String> {
        if !self.toxicity.is_finite() || !(0.0..=1.0).contains(&self.toxicity) {
            return Err(format!("toxicity {} is not in 0..=1", self.toxicity));
        }
        self.fault.validate()
    }

    /// Checks the values and that the fault works in `mode` (HTTP faults need [`Mode::Http`]).
    pub fn validate_for(&self, mode: Mode) -> Result<(), String> {
        self.validate()?;
        if self.fault.is_http() && mode != Mode::Http {
            return Err(format!(
                "fault {} needs an HTTP-mode proxy (mode: http); this proxy is in {mode} mode",
                self.fault.name()
            ));
        }
        Ok(())
    }

    /// Whether connection/request number `n` (counted by this fault from 0) is hit.
    pub fn hits(&self, n: u64) -> bool {
        if self.first.is_some_and(|first| n >= first) {
            return false;
        }
        if self.toxicity >= 1.0 {
            return true;
        }
        unit(splitmix64(self.seed ^ splitmix64(n))) < self.toxicity
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): one step of the generator as a hash of `x`.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A value in [0, 1) from 53 bits of `x`.
pub(crate) fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// A small SplitMix64 stream (for jitter).
#[derive(Debug, Clone)]
pub(crate) struct SplitMix(u64);

impl SplitMix {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix64(self.0)
    }

    /// A uniform value in [0, 1).
    pub(crate) fn next_unit(&mut self) -> f64 {
        unit(self.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toxicity_half_hits_about_half_and_is_deterministic() {
        let spec = FaultSpec::new(Fault::Reset).toxicity(0.5).seed(42);
        let hits: Vec<bool> = (0..1000).map(|n| spec.hits(n)).collect();
        let count = hits.iter().filter(|h| **h).count();
        assert!((450..=550).contains(&count), "{count}");
        let again: Vec<bool> = (0..1000).map(|n| spec.hits(n)).collect();
        assert_eq!(hits, again);
        let other = spec.clone().seed(43);
        assert_ne!(hits, (0..1000).map(|n| other.hits(n)).collect::<Vec<_>>());
    }

    #[test]
    fn first_limits_and_edges() {
        let spec = FaultSpec::new(Fault::Reset).first(2);
        assert!(spec.hits(0) && spec.hits(1) && !spec.hits(2));
        let never = FaultSpec::new(Fault::Reset).toxicity(0.0);
        assert!((0..100).all(|n| !never.hits(n)));
    }

    #[test]
    fn validation_names_the_field() {
        let bad = FaultSpec::new(Fault::Reset).toxicity(1.5);
        assert!(bad.validate().unwrap_err().contains("toxicity"));
        let nan = FaultSpec::new(Fault::Reset).toxicity(f64::NAN);
        assert!(nan.validate().is_err());
        let http = FaultSpec::new(Fault::SseCut { after_events: 1 });
        assert!(http.validate_for(Mode::Tcp).unwrap_err().contains("mode"));
        assert!(http.validate_for(Mode::Http).is_ok());
        let slice = FaultSpec::new(Fault::Slice {
            size: 0,
            delay: Duration::ZERO,
            direction: Direction::Downstream,
        });
        assert!(slice.validate().unwrap_err().contains("slice.size"));
        let status = FaultSpec::new(Fault::HttpStatus {
            status: 42,
            retry_after: None,
            body: None,
        });
        assert!(status.validate().unwrap_err().contains("status"));
    }

    #[test]
    fn serde_shape() {
        let json =
            r#"{"fault": {"type": "latency", "delay": "200ms"}, "toxicity": 0.5, "seed": 7}"#;
        let spec: FaultSpec = serde_json::from_str(json).unwrap();
        assert_eq!(
            spec.fault,
            Fault::Latency {
                delay: Duration::from_millis(200),
                jitter: Duration::ZERO,
                direction: Direction::Downstream
            }
        );
        let back = serde_json::to_value(&spec).unwrap();
        assert_eq!(back["fault"]["type"], "latency");
        assert_eq!(back["fault"]["delay"], "200ms");
        let status: FaultSpec = serde_json::from_str(
            r#"{"fault": {"type": "http_status", "status": 503, "retry_after": "2s"}, "first": 2}"#,
        )
        .unwrap();
        assert_eq!(status.first, Some(2));
        assert!(serde_json::from_str::<FaultSpec>(r#"{"fault": {"type": "nope"}}"#).is_err());
        assert!(
            serde_json::from_str::<FaultSpec>(r#"{"fault": {"type": "reset"}, "bogus": 1}"#)
                .is_err()
        );
    }
}
