//! What one request of a load run produced: the contract between the engine (which makes
//! requests), the stream reader (which times SSE streams) and the recorder (which keeps
//! histograms and counters).

use std::fmt;
use std::time::Duration;

/// Why a request failed. Every failed request has exactly one class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ErrorClass {
    /// The TCP connection (or TLS/HTTP2 handshake) could not be made.
    Connect,
    /// No complete answer within the request timeout.
    Timeout,
    /// A 4xx status.
    Http4xx,
    /// A 5xx status.
    Http5xx,
    /// Any other status that is not a success (1xx, 3xx).
    HttpOther,
    /// The peer broke HTTP: a malformed head, a reset stream, a closed connection before the
    /// head.
    Protocol,
    /// The body could not be read to its end (cut off, too large).
    Body,
    /// An SSE stream that did not end with `[DONE]`: cut off, stalled, in-band error,
    /// malformed chunk, too large. [`StreamSample::end`] says which.
    Stream,
}

impl ErrorClass {
    /// Every class, in report order.
    pub const ALL: [ErrorClass; 8] = [
        ErrorClass::Connect,
        ErrorClass::Timeout,
        ErrorClass::Http4xx,
        ErrorClass::Http5xx,
        ErrorClass::HttpOther,
        ErrorClass::Protocol,
        ErrorClass::Body,
        ErrorClass::Stream,
    ];

    /// The name in reports: `connect`, `timeout`, `http_4xx`, `http_5xx`, `http_other`,
    /// `protocol`, `body`, `stream`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Connect => "connect",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Http4xx => "http_4xx",
            ErrorClass::Http5xx => "http_5xx",
            ErrorClass::HttpOther => "http_other",
            ErrorClass::Protocol => "protocol",
            ErrorClass::Body => "body",
            ErrorClass::Stream => "stream",
        }
    }

    /// The class of a status that is not 2xx; `None` for 2xx.
    pub fn of_status(status: u16) -> Option<ErrorClass> {
        match status {
            200..=299 => None,
            400..=499 => Some(ErrorClass::Http4xx),
            500..=599 => Some(ErrorClass::Http5xx),
            _ => Some(ErrorClass::HttpOther),
        }
    }

    /// The class named `name` (as [`ErrorClass::as_str`] writes it).
    pub fn from_name(name: &str) -> Option<ErrorClass> {
        ErrorClass::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finished request (or one that failed).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Sample {
    /// When the request was meant to be sent, from the start of the run. In the open model
    /// this is its place in the arrival schedule; in the closed model it is when it was sent.
    pub intended: Duration,
    /// From the intended send time to the end of the answer: the latency corrected for
    /// coordinated omission (equal to [`Sample::service`] in the closed model).
    pub latency: Duration,
    /// From the actual send to the end of the answer (the uncorrected latency).
    pub service: Duration,
    /// The status, when a response head arrived.
    pub status: Option<u16>,
    /// `None` for a success; the class of the failure otherwise.
    pub error: Option<ErrorClass>,
    /// Body bytes received.
    pub bytes: u64,
    /// The stream's timings, for a streamed (SSE) request whose head arrived with a 2xx.
    pub stream: Option<StreamSample>,
}

impl Sample {
    /// A sample with these times and no status, error, bytes or stream.
    pub fn new(intended: Duration, latency: Duration, service: Duration) -> Self {
        Sample {
            intended,
            latency,
            service,
            status: None,
            error: None,
            bytes: 0,
            stream: None,
        }
    }

    /// Whether the request succeeded.
    pub fn is_ok(&self) -> bool {
        self.error.is_none()
    }
}

/// The timings of one SSE stream, measured from the actual send of its request.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct StreamSample {
    /// Time to the first content token (the first chunk carrying content).
    pub ttft: Option<Duration>,
    /// Gaps between consecutive content chunks (inter-token latency samples).
    pub itl: Vec<Duration>,
    /// From the send to the end of the stream (`[DONE]` or the failure).
    pub e2e: Duration,
    /// Output tokens: `usage.completion_tokens` when the stream carried usage, otherwise the
    /// number of content chunks.
    pub output_tokens: u64,
    /// Whether [`StreamSample::output_tokens`] came from `usage`.
    pub tokens_from_usage: bool,
    /// How the stream ended: `done`, `in-band error`, `malformed`, `cut off`, `stalled`,
    /// `too large`, `timed out` (the openai crate's `StreamEnd::class`).
    pub end: &'static str,
}

impl StreamSample {
    /// Time per output token after the first: `(e2e - ttft) / (tokens - 1)`; `None` with
    /// fewer than two tokens or no first token.
    pub fn tpot(&self) -> Option<Duration> {
        let ttft = self.ttft?;
        if self.output_tokens < 2 {
            return None;
        }
        let rest = self.e2e.checked_sub(ttft)?;
        let per = rest.as_secs_f64() / (self.output_tokens - 1) as f64;
        Some(Duration::from_secs_f64(per))
    }

    /// Output tokens per second of this request (`tokens / e2e`); `None` for a zero e2e.
    pub fn tokens_per_second(&self) -> Option<f64> {
        let secs = self.e2e.as_secs_f64();
        (secs > 0.0).then(|| self.output_tokens as f64 / secs)
    }
}

/// Where the engine puts what it measured. One sink per worker, so recording needs no lock;
/// the caller merges the sinks when the run ends.
pub trait SampleSink: Send + 'static {
    /// A request finished (successfully or not).
    fn record(&mut self, sample: &Sample);
    /// An open-model iteration whose intended send time (from the start of the run) passed
    /// by more than the allowed lag before a connection was free: it was never sent.
    fn dropped(&mut self, intended: Duration);
}

/// A sink that keeps every sample: for tests and small runs only (memory grows with the
/// request count).
#[derive(Debug, Default, Clone)]
pub struct VecSink {
    /// The samples, in the order they finished.
    pub samples: Vec<Sample>,
    /// Intended times of dropped iterations.
    pub dropped: Vec<Duration>,
}

impl SampleSink for VecSink {
    fn record(&mut self, sample: &Sample) {
        self.samples.push(sample.clone());
    }

    fn dropped(&mut self, intended: Duration) {
        self.dropped.push(intended);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_round_trip_and_statuses_classify() {
        for c in ErrorClass::ALL {
            assert_eq!(ErrorClass::from_name(c.as_str()), Some(c));
        }
        assert_eq!(ErrorClass::of_status(204), None);
        assert_eq!(ErrorClass::of_status(429), Some(ErrorClass::Http4xx));
        assert_eq!(ErrorClass::of_status(503), Some(ErrorClass::Http5xx));
        assert_eq!(ErrorClass::of_status(302), Some(ErrorClass::HttpOther));
    }

    #[test]
    fn tpot_is_time_after_the_first_token_per_token() {
        let s = StreamSample {
            ttft: Some(Duration::from_millis(100)),
            e2e: Duration::from_millis(1100),
            output_tokens: 11,
            ..StreamSample::default()
        };
        assert_eq!(s.tpot(), Some(Duration::from_millis(100)));
        assert_eq!(s.tokens_per_second(), Some(10.0));
        let one = StreamSample {
            output_tokens: 1,
            ..s.clone()
        };
        assert_eq!(one.tpot(), None);
    }
}
