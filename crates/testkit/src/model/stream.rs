//! A generated answer, its timing, and how it goes on the wire: one JSON object, or an SSE stream
//! of chunks paced by time to first token and inter-token delay.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::generate::Rng;
use super::wire::{
    ApiError, AssistantMessage, ChatChoice, ChatChunk, ChatChunkChoice, ChatCompletion, Delta,
    Head, TextChoice, TextCompletion, Usage, json_response,
};

/// Which endpoint's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Text,
}

/// One generated choice.
#[derive(Debug, Clone)]
pub(crate) struct Choice {
    pub(crate) tokens: Vec<String>,
    pub(crate) finish_reason: &'static str,
}

/// A complete generated answer, before it is sent.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) kind: Kind,
    pub(crate) head: Head,
    pub(crate) fingerprint: String,
    pub(crate) choices: Vec<Choice>,
    pub(crate) prompt_tokens: u64,
    pub(crate) include_usage: bool,
}

impl Answer {
    pub(crate) fn completion_tokens(&self) -> u64 {
        self.choices.iter().map(|c| c.tokens.len() as u64).sum()
    }

    /// Token steps: the longest choice.
    pub(crate) fn steps(&self) -> usize {
        self.choices
            .iter()
            .map(|c| c.tokens.len())
            .max()
            .unwrap_or(0)
    }

    fn usage(&self) -> Usage {
        match self.kind {
            Kind::Chat => Usage::chat(self.prompt_tokens, self.completion_tokens()),
            Kind::Text => Usage::text(self.prompt_tokens, self.completion_tokens()),
        }
    }

    /// The non-streaming response body.
    pub(crate) fn into_json_response(self) -> Response {
        let usage = self.usage();
        match self.kind {
            Kind::Chat => json_response(&ChatCompletion {
                head: &self.head,
                choices: self
                    .choices
                    .iter()
                    .enumerate()
                    .map(|(i, c)| ChatChoice {
                        index: i as u64,
                        message: AssistantMessage {
                            role: "assistant",
                            content: c.tokens.concat(),
                            refusal: (),
                            annotations: [],
                        },
                        logprobs: (),
                        finish_reason: c.finish_reason,
                    })
                    .collect(),
                usage,
                service_tier: "default",
                system_fingerprint: &self.fingerprint,
            }),
            Kind::Text => json_response(&TextCompletion {
                head: &self.head,
                choices: self
                    .choices
                    .iter()
                    .enumerate()
                    .map(|(i, c)| TextChoice {
                        text: c.tokens.concat(),
                        index: i as u64,
                        logprobs: (),
                        finish_reason: Some(c.finish_reason),
                    })
                    .collect(),
                system_fingerprint: &self.fingerprint,
                usage: Some(Some(usage)),
            }),
        }
    }

    fn chat_chunk(&self, choices: Vec<ChatChunkChoice>, usage: Option<Usage>) -> String {
        let chunk = ChatChunk {
            head: &self.head,
            service_tier: "default",
            system_fingerprint: &self.fingerprint,
            choices,
            usage: self.include_usage.then_some(usage),
        };
        serde_json::to_string(&chunk).unwrap_or_default()
    }

    fn text_chunk(&self, choices: Vec<TextChoice>, usage: Option<Usage>) -> String {
        let chunk = TextCompletion {
            head: &self.head,
            choices,
            system_fingerprint: &self.fingerprint,
            usage: self.include_usage.then_some(usage),
        };
        serde_json::to_string(&chunk).unwrap_or_default()
    }

    /// The stream's events, each at its time: `deadlines[i]` is when token `i` is due.
    ///
    /// Chat: a `{"role":"assistant","content":""}` chunk per choice together with the first
    /// token, one chunk per token, a `{}` delta with `finish_reason` per choice, then (with
    /// `include_usage`) a chunk with `choices: []` and `usage`, then `[DONE]`. Completions: the
    /// same without the role chunk (a final `text: ""` chunk carries `finish_reason`).
    pub(crate) fn events(&self, deadlines: &[Instant]) -> Vec<Scheduled> {
        let mut events = Vec::new();
        let (Some(first), Some(last)) = (deadlines.first(), deadlines.last()) else {
            return events;
        };
        if self.kind == Kind::Chat {
            for index in 0..self.choices.len() as u64 {
                let delta = Delta {
                    role: Some("assistant"),
                    content: Some(String::new()),
                    refusal: true,
                };
                let choice = chat_choice(index, delta, None);
                events.push(Scheduled::data(
                    *first,
                    self.chat_chunk(vec![choice], None),
                    0,
                ));
            }
        }
        for (step, at) in deadlines.iter().enumerate() {
            for (index, choice) in self.choices.iter().enumerate() {
                let Some(token) = choice.tokens.get(step) else {
                    continue;
                };
                let json = match self.kind {
                    Kind::Chat => {
                        let delta = Delta {
                            content: Some(token.clone()),
                            ..Delta::default()
                        };
                        self.chat_chunk(vec![chat_choice(index as u64, delta, None)], None)
                    }
                    Kind::Text => {
                        self.text_chunk(vec![text_choice(index as u64, token.clone(), None)], None)
                    }
                };
                events.push(Scheduled::data(*at, json, 1));
            }
        }
        for (index, choice) in self.choices.iter().enumerate() {
            let reason = Some(choice.finish_reason);
            let json = match self.kind {
                Kind::Chat => self.chat_chunk(
                    vec![chat_choice(index as u64, Delta::default(), reason)],
                    None,
                ),
                Kind::Text => {
                    self.text_chunk(vec![text_choice(index as u64, String::new(), reason)], None)
                }
            };
            events.push(Scheduled::data(*last, json, 0));
        }
        if self.include_usage {
            let usage = Some(self.usage());
            let json = match self.kind {
                Kind::Chat => self.chat_chunk(Vec::new(), usage),
                Kind::Text => self.text_chunk(Vec::new(), usage),
            };
            events.push(Scheduled::data(*last, json, 0));
        }
        events.push(Scheduled {
            at: *last,
            event: Event::Done,
            tokens: 0,
        });
        events
    }
}

fn chat_choice(index: u64, delta: Delta, finish_reason: Option<&'static str>) -> ChatChunkChoice {
    ChatChunkChoice {
        index,
        delta,
        logprobs: (),
        finish_reason,
    }
}

fn text_choice(index: u64, text: String, finish_reason: Option<&'static str>) -> TextChoice {
    TextChoice {
        text,
        index,
        logprobs: (),
        finish_reason,
    }
}

/// When each token is due: the first after `ttft`, each next one `itl` later, each delay moved
/// by a seeded offset in `[-jitter, +jitter]` (never below zero). Deadlines are absolute, so
/// timer lateness never accumulates.
pub(crate) fn schedule(
    start: Instant,
    steps: usize,
    ttft: Duration,
    itl: Duration,
    jitter: Duration,
    rng: &mut Rng,
) -> Vec<Instant> {
    let mut jittered = |base: Duration| {
        if jitter.is_zero() {
            return base;
        }
        let offset = (rng.next_f64() * 2.0 - 1.0) * jitter.as_secs_f64();
        Duration::from_secs_f64((base.as_secs_f64() + offset).max(0.0))
    };
    let mut at = start + jittered(ttft);
    let mut deadlines = Vec::with_capacity(steps);
    for step in 0..steps {
        if step > 0 {
            at += jittered(itl);
        }
        deadlines.push(at);
    }
    deadlines
}

/// What one stream event puts on the wire.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    /// `data: {json}\n\n`.
    Data(String),
    /// `data: [DONE]\n\n`, the normal end.
    Done,
    /// `data: {"error":{...}}\n\n`, then the stream ends (cleanly, without `[DONE]`).
    Error(String),
    /// The connection is dropped without the chunked encoding's final chunk.
    Abort,
}

/// An event and when it is due.
#[derive(Debug, Clone)]
pub(crate) struct Scheduled {
    pub(crate) at: Instant,
    pub(crate) event: Event,
    /// Completion tokens this event carries (for the tokens counter).
    pub(crate) tokens: u64,
}

impl Scheduled {
    fn data(at: Instant, json: String, tokens: u64) -> Self {
        Self {
            at,
            event: Event::Data(json),
            tokens,
        }
    }
}

/// Applies the stream faults: the first of `cut_after` (abort) and `sse_error_after` (in-band
/// error) to be reached truncates the `data:` events to that count and replaces the rest.
/// Returns which fault took effect.
pub(crate) fn apply_faults(
    events: &mut Vec<Scheduled>,
    start: Instant,
    cut_after: Option<u32>,
    sse_error_after: Option<u32>,
) -> Option<&'static str> {
    let (keep, end, name) = match (cut_after, sse_error_after) {
        (Some(cut), Some(err)) if err < cut => (err, error_event(), "sse_error"),
        (Some(cut), _) => (cut, Event::Abort, "cut"),
        (None, Some(err)) => (err, error_event(), "sse_error"),
        (None, None) => return None,
    };
    let data = events
        .iter()
        .filter(|e| matches!(e.event, Event::Data(_)))
        .count();
    let keep = (keep as usize).min(data);
    events.truncate(keep);
    let at = events.last().map_or_else(|| start, |e| e.at);
    events.push(Scheduled {
        at,
        event: end,
        tokens: 0,
    });
    Some(name)
}

/// Applies the `malformed_after` fault: after that many `data:` events, one more `data:` event
/// whose payload is the next chunk cut in half (so not JSON); the rest of the stream follows
/// unchanged, `[DONE]` included. Run it before [`apply_faults`], which then counts the bad
/// event as a `data:` event. Returns the fault's name when it took effect.
pub(crate) fn insert_malformed(
    events: &mut Vec<Scheduled>,
    start: Instant,
    malformed_after: Option<u32>,
) -> Option<&'static str> {
    let after = malformed_after? as usize;
    let mut seen = 0;
    let mut at = events.len();
    for (i, e) in events.iter().enumerate() {
        if matches!(e.event, Event::Data(_)) {
            if seen == after {
                at = i;
                break;
            }
            seen += 1;
        } else {
            at = i;
            break;
        }
    }
    // The chunk that would come next (or the last one before), cut in half.
    let template = events[at..]
        .iter()
        .take(1)
        .chain(events[..at].iter().rev())
        .find_map(|e| match &e.event {
            Event::Data(json) => Some(json.clone()),
            _ => None,
        })
        .unwrap_or_else(|| r#"{"choices":[{"index":0,"delta":{"content":"x"}}]}"#.to_owned());
    let mut cut = template.len() / 2;
    while !template.is_char_boundary(cut) {
        cut -= 1;
    }
    let when = at.checked_sub(1).map_or(start, |i| events[i].at);
    events.insert(
        at,
        Scheduled {
            at: when,
            event: Event::Data(template[..cut].to_owned()),
            tokens: 0,
        },
    );
    Some("malformed")
}

fn error_event() -> Event {
    Event::Error(ApiError::server_error().to_json())
}

/// How a stream ended, for [`sse_response`]'s `on_end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// `[DONE]` is about to be sent.
    Done,
    /// The in-band error event is about to be sent.
    Error,
    /// The connection is about to be dropped.
    Abort,
}

struct StreamState<F, T> {
    events: VecDeque<Scheduled>,
    on_tokens: T,
    on_end: Option<F>,
}

/// An SSE response that sends `events` at their times. `on_tokens(n)` runs before an event
/// carrying tokens is sent, `on_end` right before the last event is sent (so a client that has
/// read the whole stream always finds the request counted).
pub(crate) fn sse_response<F, T>(events: Vec<Scheduled>, on_tokens: T, on_end: F) -> Response
where
    F: FnOnce(End) + Send + 'static,
    T: Fn(u64) + Send + 'static,
{
    let state = StreamState {
        events: events.into(),
        on_tokens,
        on_end: Some(on_end),
    };
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        let next = state.events.pop_front()?;
        super::timer::sleep_until(next.at).await;
        if next.tokens > 0 {
            (state.on_tokens)(next.tokens);
        }
        if state.events.is_empty() {
            let end = match next.event {
                Event::Error(_) => End::Error,
                Event::Abort => End::Abort,
                Event::Data(_) | Event::Done => End::Done,
            };
            if let Some(on_end) = state.on_end.take() {
                on_end(end);
            }
        }
        let item = match next.event {
            Event::Data(json) | Event::Error(json) => Ok(Bytes::from(format!("data: {json}\n\n"))),
            Event::Done => Ok(Bytes::from_static(b"data: [DONE]\n\n")),
            Event::Abort => {
                // Let the connection flush what it holds before the error drops it.
                tokio::task::yield_now().await;
                Err(io::Error::other("stream cut by the `cut` fault"))
            }
        };
        Some((item, state))
    });
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells nginx (the gateway) not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(kind: Kind, include_usage: bool) -> Answer {
        Answer {
            kind,
            head: Head {
                id: "x".into(),
                object: "chat.completion.chunk",
                created: 0,
                model: "m".into(),
            },
            fingerprint: "fp".into(),
            choices: vec![Choice {
                tokens: vec!["a".into(), " b".into(), " c".into()],
                finish_reason: "stop",
            }],
            prompt_tokens: 2,
            include_usage,
        }
    }

    #[test]
    fn schedule_is_absolute_and_jitter_is_bounded() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let d = schedule(start, 4, ms(50), ms(10), Duration::ZERO, &mut Rng::new(0));
        assert_eq!(
            d,
            vec![
                start + ms(50),
                start + ms(60),
                start + ms(70),
                start + ms(80)
            ]
        );
        let d = schedule(start, 100, ms(50), ms(10), ms(3), &mut Rng::new(0));
        assert!(d[0] >= start + ms(47) && d[0] <= start + ms(53));
        for pair in d.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap >= ms(7) && gap <= ms(13), "{gap:?}");
        }
    }

    #[test]
    fn chat_stream_has_role_tokens_finish_usage_done() {
        let start = Instant::now();
        let a = answer(Kind::Chat, true);
        let deadlines = [start, start, start];
        let events = a.events(&deadlines);
        // role + 3 tokens + finish + usage + DONE
        assert_eq!(events.len(), 7);
        assert_eq!(events.iter().map(|e| e.tokens).sum::<u64>(), 3);
        assert!(matches!(events.last().unwrap().event, Event::Done));
        let Event::Data(usage) = &events[5].event else {
            panic!("usage chunk")
        };
        assert!(
            usage.contains(
                r#""choices":[],"usage":{"prompt_tokens":2,"completion_tokens":3,"total_tokens":5"#
            ),
            "{usage}"
        );
    }

    #[test]
    fn malformed_chunk_is_inserted_and_the_stream_goes_on() {
        let start = Instant::now();
        let a = answer(Kind::Chat, false);
        let mut events = a.events(&[start, start, start]);
        let before = events.len();
        assert_eq!(
            insert_malformed(&mut events, start, Some(2)),
            Some("malformed")
        );
        assert_eq!(events.len(), before + 1);
        let Event::Data(bad) = &events[2].event else {
            panic!("a data event")
        };
        assert!(
            serde_json::from_str::<serde_json::Value>(bad).is_err(),
            "{bad}"
        );
        assert!(bad.starts_with('{'), "{bad}");
        assert!(matches!(events.last().unwrap().event, Event::Done));
        // Past the last data event: just before [DONE].
        let mut events = a.events(&[start, start, start]);
        insert_malformed(&mut events, start, Some(100));
        assert!(matches!(events[events.len() - 2].event, Event::Data(_)));
        assert!(matches!(events.last().unwrap().event, Event::Done));
        assert_eq!(insert_malformed(&mut events, start, None), None);
    }

    #[test]
    fn faults_truncate_the_stream() {
        let start = Instant::now();
        let a = answer(Kind::Text, false);
        let mut events = a.events(&[start, start, start]);
        assert_eq!(apply_faults(&mut events, start, Some(2), None), Some("cut"));
        assert_eq!(events.len(), 3);
        assert!(matches!(events[2].event, Event::Abort));

        let mut events = a.events(&[start, start, start]);
        assert_eq!(
            apply_faults(&mut events, start, Some(5), Some(1)),
            Some("sse_error")
        );
        assert_eq!(events.len(), 2);
        assert!(matches!(events[1].event, Event::Error(_)));

        let mut events = a.events(&[start, start, start]);
        assert_eq!(
            apply_faults(&mut events, start, Some(100), None),
            Some("cut")
        );
        // every data event (3 tokens + finish), no [DONE], then the abort
        assert_eq!(events.len(), 5);
        assert!(matches!(events[4].event, Event::Abort));
    }
}
