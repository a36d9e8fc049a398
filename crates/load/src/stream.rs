//! Reading one SSE stream of an OpenAI-compatible server for the load engine: the body is
//! read frame by frame within the stall and total-time bounds of
//! [`StreamLimits`](citadel_itest_openai::StreamLimits), and the openai crate's stream
//! classifier decides how it ended and times it.

use std::time::Instant;

use citadel_itest_openai::StreamLimits;
use http_body_util::BodyExt;

use crate::sample::StreamSample;

/// Read a streamed (SSE) response `body` to its end; `sent` is when the request was sent
/// (TTFT and e2e are measured from it). Returns the stream's timings and the body bytes
/// received. Never hangs (bounded by [`StreamLimits::stall`] and
/// [`StreamLimits::max_duration`]) and never fails: how the stream ended is in
/// [`StreamSample::end`]; only `done` is a success.
pub async fn read_sse<B>(mut body: B, sent: Instant, limits: &StreamLimits) -> (StreamSample, u64)
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    // Placeholder while the tracker lands: reads the body within the bounds and reports it as
    // cut off (never a success).
    let mut bytes = 0u64;
    let hard = tokio::time::Instant::from_std(sent + limits.max_duration);
    loop {
        let stall = tokio::time::Instant::now() + limits.stall;
        match tokio::time::timeout_at(stall.min(hard), body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    bytes += data.len() as u64;
                }
            }
            _ => break,
        }
    }
    let sample = StreamSample {
        e2e: sent.elapsed(),
        end: "cut off",
        ..StreamSample::default()
    };
    (sample, bytes)
}
