//! Reading one SSE stream of an OpenAI-compatible server for the load engine.
//!
//! [`read_sse`] reads a response body frame by frame within the stall and total-time bounds
//! of [`StreamLimits`] and feeds it to the openai crate's [`StreamTracker`], which decides
//! how the stream ended (only `[DONE]` is a success) and times it; the result is a
//! [`StreamSample`]: time to first token, every inter-token gap, end to end, the output
//! token count and where it came from, and the end class.
//!
//! It keeps no content and no arrival times (whatever `limits` says): per stream it holds
//! the SSE parser's one event and the gaps.

use std::time::{Duration, Instant};

use citadel_itest_core::http::excerpt;
use citadel_itest_openai::{StreamLimits, StreamReport, StreamTracker, TokenCount};
use http_body_util::BodyExt;

use crate::sample::StreamSample;

/// How many frames past `[DONE]` are read (without waiting) so that the connection can be
/// reused when the body's end is already there.
const DRAIN_FRAMES: usize = 4;

/// Read a streamed (SSE) response `body` to its end; `sent` is when the request was sent
/// (TTFT and e2e are measured from it); call it as soon as the response head arrived (the
/// first stall bound counts from then). Returns the stream's timings and the body bytes
/// received.
///
/// Never hangs: no frame within [`StreamLimits::stall`] ends the stream as `stalled`, and
/// the whole stream is bounded by [`StreamLimits::max_duration`] from `sent` (`timed out`).
/// Never fails: [`StreamSample::end`] says how the stream ended, and only `done` (a
/// `[DONE]` event with no in-band error before it) is a success; `in-band error`,
/// `malformed`, `cut off` (the body ended or broke before `[DONE]`), `stalled`, `too large`
/// and `timed out` are not.
///
/// The gaps kept in [`StreamSample::itl`] are the first [`StreamLimits::max_kept_gaps`].
/// After `[DONE]` the rest of the body is read only if it is already there (no wait).
pub async fn read_sse<B>(mut body: B, sent: Instant, limits: &StreamLimits) -> (StreamSample, u64)
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let limits = limits.max_content_bytes(0).keep_arrivals(false);
    let mut tracker = StreamTracker::new(sent, &limits);
    while tracker.end().is_none() {
        let deadline = tokio::time::Instant::from_std(tracker.deadline());
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => tracker.on_deadline(),
            Ok(None) => tracker.on_eof(),
            Ok(Some(Err(e))) => tracker.on_transport_error(excerpt(e.to_string().as_bytes())),
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    tracker.push(data, Instant::now());
                }
            }
        }
    }
    let mut extra = 0u64;
    if tracker.end().is_some_and(|e| e.is_success()) {
        for _ in 0..DRAIN_FRAMES {
            if body.is_end_stream() {
                break;
            }
            match tokio::time::timeout(Duration::ZERO, body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    extra += frame.data_ref().map_or(0, |d| d.len() as u64);
                }
                _ => break,
            }
        }
    }
    let report = tracker.finish();
    let bytes = report.bytes + extra;
    (sample_of(report), bytes)
}

/// The load sample of an openai stream report.
pub fn sample_of(report: StreamReport) -> StreamSample {
    StreamSample {
        ttft: report.ttft,
        itl: report.gaps.kept,
        e2e: report.total,
        output_tokens: report.tokens.value(),
        tokens_from_usage: matches!(report.tokens, TokenCount::Usage(_)),
        end: report.end.class(),
    }
}
