//! Reading a streamed completion: per-event arrival times, content, token count, and how the
//! stream ended.

use std::fmt;
use std::time::Duration;

use citadel_itest_core::http::{excerpt, fmt_size, parse_json};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use tokio::time::{Instant, timeout_at};

use crate::client::{header_text, transport_words};
use crate::error::{ApiError, humantime_ms};
use crate::sse::{SseEvent, SseParser};
use crate::types::{ChunkChoice, StreamChunk, Usage};

/// A chunk read in one pass: [`StreamChunk`]'s fields (the `id` only checked), and whether
/// the object has an `error` member (then the full path decides).
#[derive(serde::Deserialize)]
struct FastChunk<'a> {
    #[serde(default, borrow, rename = "id")]
    _id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    model: Option<std::borrow::Cow<'a, str>>,
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default, deserialize_with = "present")]
    error: bool,
}

/// True for a member that is there, whatever its value (`null` included).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    <serde::de::IgnoredAny as serde::Deserialize>::deserialize(d)?;
    Ok(true)
}

/// The bounds of one stream. [`StreamLimits::default`] suits a test of a model server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamLimits {
    /// The most bytes of one event (its `data` lines and any line being read): 1 MiB.
    pub max_event_bytes: usize,
    /// The most bytes of the whole stream: 64 MiB.
    pub max_total_bytes: usize,
    /// The most bytes of content kept in [`StreamReport::content`]: 1 MiB. Content past it is
    /// still counted, not kept ([`StreamReport::content_truncated`]).
    pub max_content_bytes: usize,
    /// The most inter-token gaps kept in [`Gaps::kept`], and the most event arrival times
    /// kept in [`StreamReport::arrivals`]: 100 000. Later gaps still count in the summary.
    pub max_kept_gaps: usize,
    /// A stream is stalled when no event arrives within this (also the wait for the response
    /// head): 30 s.
    pub stall: Duration,
    /// The whole stream, from sending the request to its end: 5 min.
    pub max_duration: Duration,
    /// Whether [`StreamReport::arrivals`] is kept: true. A reader that needs only the timings
    /// (TTFT, gaps, end to end) sets it false and saves one allocation per stream.
    pub keep_arrivals: bool,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            max_event_bytes: 1024 * 1024,
            max_total_bytes: 64 * 1024 * 1024,
            max_content_bytes: 1024 * 1024,
            max_kept_gaps: 100_000,
            stall: Duration::from_secs(30),
            max_duration: Duration::from_secs(300),
            keep_arrivals: true,
        }
    }
}

impl StreamLimits {
    /// Set [`StreamLimits::stall`].
    pub fn stall(mut self, d: Duration) -> Self {
        self.stall = d;
        self
    }

    /// Set [`StreamLimits::max_duration`].
    pub fn max_duration(mut self, d: Duration) -> Self {
        self.max_duration = d;
        self
    }

    /// Set [`StreamLimits::max_event_bytes`].
    pub fn max_event_bytes(mut self, n: usize) -> Self {
        self.max_event_bytes = n;
        self
    }

    /// Set [`StreamLimits::max_total_bytes`].
    pub fn max_total_bytes(mut self, n: usize) -> Self {
        self.max_total_bytes = n;
        self
    }

    /// Set [`StreamLimits::max_content_bytes`].
    pub fn max_content_bytes(mut self, n: usize) -> Self {
        self.max_content_bytes = n;
        self
    }

    /// Set [`StreamLimits::max_kept_gaps`].
    pub fn max_kept_gaps(mut self, n: usize) -> Self {
        self.max_kept_gaps = n;
        self
    }

    /// Set [`StreamLimits::keep_arrivals`].
    pub fn keep_arrivals(mut self, keep: bool) -> Self {
        self.keep_arrivals = keep;
        self
    }
}

/// How a stream ended. Only [`StreamEnd::Done`] is a success.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamEnd {
    /// `data: [DONE]` arrived and no in-band error before it.
    #[error("stream ended with [DONE]")]
    Done,
    /// A `data: {"error":{...}}` event (or an `event: error`) arrived.
    #[error("stream carried an in-band error at event {event}: {}", error.detail())]
    InBandError {
        /// Which `data` event (1-based).
        event: u64,
        /// The error.
        error: ApiError,
    },
    /// A `data` event is not a JSON chunk of the expected shape.
    #[error("stream chunk {event} is malformed ({reason}): {excerpt}")]
    Malformed {
        /// Which `data` event (1-based).
        event: u64,
        /// What is wrong: `not JSON (...)`, `` `choices` is missing ``, ...
        reason: String,
        /// The start of the event's data, one line.
        excerpt: String,
    },
    /// The connection ended (cleanly or not) before `[DONE]`.
    #[error("stream cut off after {events} events without [DONE]{}", detail_suffix(.detail))]
    CutOff {
        /// `data` events received.
        events: u64,
        /// What the transport said, or that an event was left unfinished.
        detail: Option<String>,
    },
    /// No event within [`StreamLimits::stall`].
    #[error("stream stalled: no event within {} after {events} events", humantime_ms(*within))]
    Stalled {
        /// The stall bound.
        within: Duration,
        /// `data` events received.
        events: u64,
    },
    /// One event or the whole stream passed its byte cap.
    #[error("stream too large: {what} over {} after {events} events", fmt_size(*limit))]
    TooLarge {
        /// `one event` or `the stream`.
        what: &'static str,
        /// The cap in bytes.
        limit: usize,
        /// `data` events received.
        events: u64,
    },
    /// The stream did not end within [`StreamLimits::max_duration`].
    #[error("stream not finished within {} ({events} events)", humantime_ms(*within))]
    TimedOut {
        /// The time allowed.
        within: Duration,
        /// `data` events received.
        events: u64,
    },
}

fn detail_suffix(detail: &Option<String>) -> String {
    detail.as_ref().map_or(String::new(), |d| format!(": {d}"))
}

impl StreamEnd {
    /// True only for [`StreamEnd::Done`].
    pub fn is_success(&self) -> bool {
        matches!(self, StreamEnd::Done)
    }

    /// A short name of the class: `done`, `in-band error`, `malformed`, `cut off`, `stalled`,
    /// `too large`, `timed out`.
    pub fn class(&self) -> &'static str {
        match self {
            StreamEnd::Done => "done",
            StreamEnd::InBandError { .. } => "in-band error",
            StreamEnd::Malformed { .. } => "malformed",
            StreamEnd::CutOff { .. } => "cut off",
            StreamEnd::Stalled { .. } => "stalled",
            StreamEnd::TooLarge { .. } => "too large",
            StreamEnd::TimedOut { .. } => "timed out",
        }
    }
}

/// The completion token count of a stream, and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenCount {
    /// `usage.completion_tokens` of the stream's `usage` chunk.
    Usage(u64),
    /// No `usage` chunk: the number of chunks that carried content (an estimate; one chunk
    /// may hold several tokens).
    ContentChunks(u64),
}

impl TokenCount {
    /// The number, whatever its source.
    pub fn value(&self) -> u64 {
        match self {
            TokenCount::Usage(n) | TokenCount::ContentChunks(n) => *n,
        }
    }
}

impl fmt::Display for TokenCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenCount::Usage(n) => write!(f, "{n} tokens (usage)"),
            TokenCount::ContentChunks(n) => write!(f, "{n} content chunks (no usage chunk)"),
        }
    }
}

/// Inter-token gaps: the time between consecutive content-bearing chunks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Gaps {
    /// The first [`StreamLimits::max_kept_gaps`] gaps, in order.
    pub kept: Vec<Duration>,
    /// How many gaps there were in all.
    pub count: u64,
    /// The longest.
    pub max: Duration,
    /// Their sum.
    pub total: Duration,
}

impl Gaps {
    /// The mean gap, if there is one.
    pub fn mean(&self) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let n = u32::try_from(self.count).unwrap_or(u32::MAX);
        Some(self.total / n)
    }

    fn add(&mut self, gap: Duration, keep: usize) {
        if self.kept.len() < keep {
            self.kept.push(gap);
        }
        self.count += 1;
        self.max = self.max.max(gap);
        self.total = self.total.saturating_add(gap);
    }
}

/// What reading one stream found.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StreamReport {
    /// The status; `None` when no response head came ([`StreamEnd::Stalled`] after 0
    /// events).
    pub status: Option<StatusCode>,
    /// The response headers (empty without a head).
    pub headers: HeaderMap,
    /// How it ended.
    pub end: StreamEnd,
    /// From sending the request to the response head.
    pub head: Option<Duration>,
    /// Time to first token: from sending the request to the first chunk that carries content.
    pub ttft: Option<Duration>,
    /// Gaps between consecutive content-bearing chunks.
    pub gaps: Gaps,
    /// When each `data` event arrived (`[DONE]` included), from sending the request: the
    /// first [`StreamLimits::max_kept_gaps`] of them.
    pub arrivals: Vec<Duration>,
    /// End to end: from sending the request to the end of the stream (whatever the end).
    pub total: Duration,
    /// The content of choice 0, at most [`StreamLimits::max_content_bytes`].
    pub content: String,
    /// Content was dropped because of [`StreamLimits::max_content_bytes`].
    pub content_truncated: bool,
    /// The token count and its source.
    pub tokens: TokenCount,
    /// The `usage` chunk, when there was one.
    pub usage: Option<Usage>,
    /// The `finish_reason` of choice 0, when given.
    pub finish_reason: Option<String>,
    /// The `model` of the first chunk that named one.
    pub model: Option<String>,
    /// `data` events received (`[DONE]` included).
    pub events: u64,
    /// Chunks that carried content, over all choices.
    pub content_chunks: u64,
    /// Bytes of the body received.
    pub bytes: u64,
    /// Pieces the body arrived in (one per read of the connection; at least one per TCP
    /// segment that arrived alone).
    pub reads: u64,
}

impl StreamReport {
    /// True only when the stream ended with `[DONE]` and no in-band error.
    pub fn is_success(&self) -> bool {
        self.end.is_success()
    }

    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_text(&self.headers, name)
    }

    pub(crate) fn stalled_before_head(started: Instant, limits: &StreamLimits) -> Self {
        let mut report = Self::empty(None, HeaderMap::new());
        report.end = StreamEnd::Stalled {
            within: limits.stall,
            events: 0,
        };
        report.total = started.elapsed();
        report
    }

    fn empty(status: Option<StatusCode>, headers: HeaderMap) -> Self {
        StreamReport {
            status,
            headers,
            end: StreamEnd::Done,
            head: None,
            ttft: None,
            gaps: Gaps::default(),
            arrivals: Vec::new(),
            total: Duration::ZERO,
            content: String::new(),
            content_truncated: false,
            tokens: TokenCount::ContentChunks(0),
            usage: None,
            finish_reason: None,
            model: None,
            events: 0,
            content_chunks: 0,
            bytes: 0,
            reads: 0,
        }
    }
}

/// Read a streaming `response` to its end within `limits`; `started` is when the request was
/// sent (TTFT and the total are measured from it). Never fails: how the stream ended is in
/// [`StreamReport::end`]. Holds at most one event, the kept content and the kept gaps.
///
/// The classification and timing are [`StreamTracker`]'s; this is its reqwest transport.
pub async fn read_stream(
    mut response: reqwest::Response,
    started: Instant,
    limits: &StreamLimits,
) -> StreamReport {
    let status = response.status();
    let headers = response.headers().clone();
    let mut tracker = StreamTracker::new(started.into_std(), limits);
    loop {
        let deadline = Instant::from_std(tracker.deadline());
        match timeout_at(deadline, response.chunk()).await {
            Err(_) => tracker.on_deadline(),
            Ok(Err(e)) if e.is_timeout() => tracker.on_timeout(false),
            Ok(Err(e)) => tracker.on_transport_error(transport_words(e)),
            Ok(Ok(None)) => tracker.on_eof(),
            Ok(Ok(Some(chunk))) => {
                tracker.push(&chunk, std::time::Instant::now());
            }
        }
        if tracker.end().is_some() {
            break;
        }
    }
    let mut report = tracker.finish();
    report.status = Some(status);
    report.headers = headers;
    report
}

/// The transport-independent part of reading a stream: feed it the body as it arrives
/// ([`StreamTracker::push`]) and tell it how the transport ended ([`StreamTracker::on_eof`],
/// [`StreamTracker::on_deadline`], [`StreamTracker::on_timeout`],
/// [`StreamTracker::on_transport_error`]); it classifies the stream ([`StreamEnd`]: only
/// `[DONE]` is a success), times it (TTFT, inter-token gaps, end to end) and counts tokens.
/// [`StreamTracker::finish`] gives the [`StreamReport`] (without status and headers, which
/// are the transport's).
///
/// The first decision wins: input after the stream is decided is ignored. The transport
/// must wait for more input no longer than [`StreamTracker::deadline`].
///
/// Per stream it holds the SSE parser's one event, the kept content (none with
/// [`StreamLimits::max_content_bytes`] 0), the kept gaps and the kept arrival times (none
/// with [`StreamLimits::keep_arrivals`] false).
///
/// ```
/// use std::time::{Duration, Instant};
/// use citadel_itest_openai::{StreamLimits, StreamTracker, TokenCount};
///
/// let sent = Instant::now();
/// let mut tracker = StreamTracker::new(sent, &StreamLimits::default());
/// let chunk = br#"data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}"#;
/// assert!(tracker.push(chunk, sent + Duration::from_millis(5)).is_none());
/// assert!(tracker.push(b"\n\n", sent + Duration::from_millis(20)).is_none());
/// let end = tracker.push(b"data: [DONE]\n\n", sent + Duration::from_millis(30));
/// assert!(end.unwrap().is_success());
/// let report = tracker.finish();
/// assert_eq!(report.ttft, Some(Duration::from_millis(20)));
/// assert_eq!(report.tokens, TokenCount::ContentChunks(1));
/// assert_eq!(report.total, Duration::from_millis(30));
/// ```
#[derive(Debug)]
pub struct StreamTracker {
    limits: StreamLimits,
    started: std::time::Instant,
    parser: SseParser,
    events: Vec<SseEvent>,
    last_content: Option<std::time::Instant>,
    last_event: std::time::Instant,
    hard_deadline: std::time::Instant,
    end: Option<StreamEnd>,
    ended_at: Option<std::time::Instant>,
    report: StreamReport,
}

impl StreamTracker {
    /// A tracker for a stream whose request was sent at `started`; the response head has
    /// just arrived (the head time and the first stall bound count from now).
    pub fn new(started: std::time::Instant, limits: &StreamLimits) -> Self {
        let now = std::time::Instant::now();
        let mut report = StreamReport::empty(None, HeaderMap::new());
        report.head = Some(now.saturating_duration_since(started));
        StreamTracker {
            limits: *limits,
            started,
            parser: SseParser::new(limits.max_event_bytes),
            events: Vec::new(),
            last_content: None,
            last_event: now,
            hard_deadline: started
                .checked_add(limits.max_duration)
                .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365)),
            end: None,
            ended_at: None,
            report,
        }
    }

    /// The latest instant to wait for more input: the stall bound after the last event, or
    /// the end of [`StreamLimits::max_duration`], whichever comes first. When it passes
    /// without input, call [`StreamTracker::on_deadline`].
    pub fn deadline(&self) -> std::time::Instant {
        self.stall_deadline().min(self.hard_deadline)
    }

    fn stall_deadline(&self) -> std::time::Instant {
        self.last_event
            .checked_add(self.limits.stall)
            .unwrap_or(self.hard_deadline)
    }

    /// How the stream ended, once it is decided.
    pub fn end(&self) -> Option<&StreamEnd> {
        self.end.as_ref()
    }

    /// `data` events received so far (`[DONE]` included).
    pub fn events(&self) -> u64 {
        self.report.events
    }

    /// Body bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.report.bytes
    }

    /// Take one piece of the body that arrived at `now`. Returns the end when this piece
    /// decided the stream (`[DONE]`, an in-band error, a malformed chunk, an event or the
    /// stream over its byte cap), or when it was decided before.
    pub fn push(&mut self, bytes: &[u8], now: std::time::Instant) -> Option<&StreamEnd> {
        if self.end.is_some() {
            return self.end.as_ref();
        }
        self.report.bytes += bytes.len() as u64;
        self.report.reads += 1;
        if self.report.bytes > self.limits.max_total_bytes as u64 {
            let end = StreamEnd::TooLarge {
                what: "the stream",
                limit: self.limits.max_total_bytes,
                events: self.report.events,
            };
            self.decide(end, now);
            return self.end.as_ref();
        }
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        let pushed = self.parser.push(bytes, &mut events);
        let before = self.report.events;
        let mut decided = None;
        for event in events.drain(..) {
            if let Some(end) = self.event(event, now) {
                decided = Some(end);
                break;
            }
        }
        events.clear();
        self.events = events;
        if let Some(end) = decided {
            self.decide(end, now);
            return self.end.as_ref();
        }
        if self.report.events > before {
            self.last_event = now;
        }
        if pushed.is_err() {
            let end = StreamEnd::TooLarge {
                what: "one event",
                limit: self.limits.max_event_bytes,
                events: self.report.events,
            };
            self.decide(end, now);
        }
        self.end.as_ref()
    }

    /// The body ended (cleanly) before the stream was decided: cut off (saying so when an
    /// event was left unfinished).
    pub fn on_eof(&mut self) {
        let detail = self
            .parser
            .has_partial_event()
            .then(|| "the last event was not finished".to_string());
        let end = StreamEnd::CutOff {
            events: self.report.events,
            detail,
        };
        self.decide(end, std::time::Instant::now());
    }

    /// [`StreamTracker::deadline`] passed without input: stalled when the stall bound was
    /// the nearer, timed out otherwise.
    pub fn on_deadline(&mut self) {
        let stalled = self.stall_deadline() <= self.hard_deadline;
        self.on_timeout(stalled);
    }

    /// The transport gave up waiting: [`StreamEnd::Stalled`] when `stalled`, otherwise
    /// [`StreamEnd::TimedOut`].
    pub fn on_timeout(&mut self, stalled: bool) {
        let events = self.report.events;
        let end = if stalled {
            StreamEnd::Stalled {
                within: self.limits.stall,
                events,
            }
        } else {
            StreamEnd::TimedOut {
                within: self.limits.max_duration,
                events,
            }
        };
        self.decide(end, std::time::Instant::now());
    }

    /// The transport failed (reset, broken chunked encoding, ...): cut off, with `detail`
    /// (which must hold no secret).
    pub fn on_transport_error(&mut self, detail: String) {
        let end = StreamEnd::CutOff {
            events: self.report.events,
            detail: Some(detail),
        };
        self.decide(end, std::time::Instant::now());
    }

    /// The report. A stream not decided yet counts as cut off (the reader stopped before its
    /// end). [`StreamReport::total`] runs to the decision; status and headers are empty.
    pub fn finish(mut self) -> StreamReport {
        if self.end.is_none() {
            let end = StreamEnd::CutOff {
                events: self.report.events,
                detail: Some("the reader stopped before the end of the stream".to_string()),
            };
            self.decide(end, std::time::Instant::now());
        }
        let mut report = self.report;
        if let Some(end) = self.end {
            report.end = end;
        }
        let ended = self.ended_at.unwrap_or_else(std::time::Instant::now);
        report.total = ended.saturating_duration_since(self.started);
        report
    }

    fn decide(&mut self, end: StreamEnd, at: std::time::Instant) {
        if self.end.is_none() {
            self.end = Some(end);
            self.ended_at = Some(at);
        }
    }

    /// Take one event; `Some` when it ends the stream.
    fn event(&mut self, event: SseEvent, at: std::time::Instant) -> Option<StreamEnd> {
        let started = self.started;
        self.report.events += 1;
        let n = self.report.events;
        if self.limits.keep_arrivals && self.report.arrivals.len() < self.limits.max_kept_gaps {
            self.report
                .arrivals
                .push(at.saturating_duration_since(started));
        }
        let data = event.data.as_slice();
        if event.event.is_none() && data == b"[DONE]" {
            return Some(StreamEnd::Done);
        }
        if event.event.is_none() {
            // The common case in one pass; anything unusual takes the full path below, which
            // decides exactly as before (and words the errors).
            if let Ok(fast) = serde_json::from_slice::<FastChunk<'_>>(data) {
                if !fast.error {
                    self.take_chunk(fast.model, fast.usage, &fast.choices, at);
                    return None;
                }
            }
        }
        let value: serde_json::Value = match serde_json::from_slice(data) {
            Ok(v) => v,
            Err(e) => {
                if event.event.as_deref() == Some("error") {
                    return Some(in_band(n, None, data));
                }
                return Some(StreamEnd::Malformed {
                    event: n,
                    reason: format!("not JSON: {}", excerpt(e.to_string().as_bytes())),
                    excerpt: excerpt(data),
                });
            }
        };
        if value.get("error").is_some() || event.event.as_deref() == Some("error") {
            return Some(in_band(n, Some(value), data));
        }
        let chunk: StreamChunk = match parse_json(data) {
            Ok(c) => c,
            Err(e) => {
                return Some(StreamEnd::Malformed {
                    event: n,
                    reason: e.to_string(),
                    excerpt: excerpt(data),
                });
            }
        };
        let model = chunk.model.map(std::borrow::Cow::Owned);
        self.take_chunk(model, chunk.usage, &chunk.choices, at);
        None
    }

    /// Take the parts of a well-formed chunk.
    fn take_chunk(
        &mut self,
        model: Option<std::borrow::Cow<'_, str>>,
        usage: Option<Usage>,
        choices: &[ChunkChoice],
        at: std::time::Instant,
    ) {
        let started = self.started;
        if self.report.model.is_none() {
            self.report.model = model.map(std::borrow::Cow::into_owned);
        }
        if let Some(usage) = usage {
            self.report.usage = Some(usage);
            self.report.tokens = TokenCount::Usage(usage.completion_tokens);
        }
        let mut has_content = false;
        for choice in choices {
            if let Some(text) = choice.content().filter(|t| !t.is_empty()) {
                has_content = true;
                self.report.content_chunks += 1;
                if choice.index == 0 {
                    self.keep_content(text);
                }
            }
            if choice.index == 0 && choice.finish_reason.is_some() {
                self.report.finish_reason = choice.finish_reason.clone();
            }
        }
        if has_content {
            match self.last_content {
                None => self.report.ttft = Some(at.saturating_duration_since(started)),
                Some(last) => self.report.gaps.add(
                    at.saturating_duration_since(last),
                    self.limits.max_kept_gaps,
                ),
            }
            self.last_content = Some(at);
            if self.report.usage.is_none() {
                self.report.tokens = TokenCount::ContentChunks(self.report.content_chunks);
            }
        }
    }

    fn keep_content(&mut self, text: &str) {
        let room = self
            .limits
            .max_content_bytes
            .saturating_sub(self.report.content.len());
        if text.len() <= room {
            self.report.content.push_str(text);
            return;
        }
        let mut cut = room;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        self.report.content.push_str(&text[..cut]);
        self.report.content_truncated = true;
    }
}

fn in_band(event: u64, value: Option<serde_json::Value>, data: &[u8]) -> StreamEnd {
    let error = value
        .and_then(|v| ApiError::from_value(None, v))
        .unwrap_or_else(|| ApiError {
            status: None,
            message: excerpt(data),
            kind: None,
            param: None,
            code: None,
        });
    StreamEnd::InBandError { event, error }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pieces: &[&[u8]]) -> StreamReport {
        let t0 = std::time::Instant::now();
        let mut tracker = StreamTracker::new(t0, &StreamLimits::default());
        for (i, p) in pieces.iter().enumerate() {
            let at = t0 + Duration::from_millis(10 * (i as u64 + 1));
            if tracker.push(p, at).is_some() {
                break;
            }
        }
        if tracker.end().is_none() {
            tracker.on_eof();
        }
        tracker.finish()
    }

    const TOKEN: &[u8] =
        b"data: {\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n";

    #[test]
    fn an_error_member_is_in_band_whatever_else_the_chunk_holds() {
        for bad in [
            &b"data: {\"choices\":[],\"error\":{\"message\":\"boom\"}}\n\n"[..],
            b"data: {\"choices\":[],\"error\":null}\n\n",
            b"event: error\ndata: {\"choices\":[]}\n\n",
            b"event: error\ndata: not json\n\n",
        ] {
            let r = run(&[TOKEN, bad, b"data: [DONE]\n\n"]);
            assert_eq!(
                r.end.class(),
                "in-band error",
                "{}",
                String::from_utf8_lossy(bad)
            );
            assert_eq!(r.content_chunks, 1);
        }
    }

    #[test]
    fn malformed_chunks_are_named_as_before() {
        let r = run(&[TOKEN, b"data: {\"id\":5,\"choices\":[]}\n\n"]);
        let StreamEnd::Malformed { event, reason, .. } = &r.end else {
            panic!("{:?}", r.end)
        };
        assert_eq!(*event, 2);
        assert!(reason.contains("id"), "{reason}");
        let r = run(&[b"data: {\"object\":\"x\"}\n\n"]);
        assert!(
            matches!(&r.end, StreamEnd::Malformed { reason, .. } if reason.contains("choices"))
        );
        let r = run(&[b"data: {\"choices\":[\n\n"]);
        assert!(
            matches!(&r.end, StreamEnd::Malformed { reason, .. } if reason.starts_with("not JSON"))
        );
    }

    #[test]
    fn timings_tokens_and_the_model_come_from_the_chunks() {
        let usage = b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":9,\"total_tokens\":10}}\n\n";
        let escaped = b"data: {\"model\":\"other\\u0021\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\\u00e9\"}}]}\n\n";
        let r = run(&[TOKEN, escaped, usage, b"data: [DONE]\n\n"]);
        assert_eq!(r.end, StreamEnd::Done);
        assert_eq!(r.model.as_deref(), Some("m"));
        assert_eq!(r.content, "aé");
        assert_eq!(r.ttft, Some(Duration::from_millis(10)));
        assert_eq!(r.gaps.kept, [Duration::from_millis(10)]);
        assert_eq!(r.tokens, TokenCount::Usage(9));
        assert_eq!(r.total, Duration::from_millis(40));
    }

    #[test]
    fn the_first_decision_wins_and_an_undecided_stream_is_never_done() {
        let t0 = std::time::Instant::now();
        let limits = StreamLimits::default().keep_arrivals(false);
        let mut tracker = StreamTracker::new(t0, &limits);
        assert!(tracker.push(TOKEN, t0).is_none());
        tracker.on_timeout(true);
        tracker.on_eof();
        assert!(tracker.push(b"data: [DONE]\n\n", t0).is_some());
        let r = tracker.finish();
        assert_eq!(r.end.class(), "stalled");
        assert!(r.arrivals.is_empty());
        let mut tracker = StreamTracker::new(t0, &limits);
        tracker.push(TOKEN, t0);
        assert_eq!(tracker.finish().end.class(), "cut off");
    }
}
