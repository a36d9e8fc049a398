//! A small incremental Server-Sent Events parser with a per-event byte cap.
//!
//! It follows the WHATWG `text/event-stream` rules: lines end in CRLF, LF or a lone CR (a CR
//! at the end of one write and the LF at the start of the next are one line end); a line
//! starting with `:` is a comment; `data:` lines of one event are joined with `\n`; one space
//! after the colon is dropped; a blank line dispatches the event (an event without `data` is
//! not dispatched); a leading byte-order mark is skipped; `id` and `retry` are ignored.
//!
//! Why not `eventsource-stream`: it buffers a whole line or event before handing anything out
//! and has no size cap, so a server that never sends a line end (or sends one huge event)
//! makes it grow without bound before the caller can refuse. This parser counts every byte of
//! the event being built (its pending line included) and fails as soon as the cap is passed,
//! holding at most the cap plus one write.
//!
//! ```
//! use citadel_itest_openai::sse::SseParser;
//! let mut parser = SseParser::new(1024);
//! let mut events = Vec::new();
//! parser.push(b": keep-alive\r\ndata: {\"a\":\r", &mut events).unwrap();
//! parser.push(b"\ndata: 1}\r\n\r\ndata: [DONE]\n\n", &mut events).unwrap();
//! assert_eq!(events.len(), 2);
//! assert_eq!(events[0].data, b"{\"a\":\n1}");
//! assert_eq!(events[1].data, b"[DONE]");
//! ```

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SseEvent {
    /// The `event:` field, when one was given (`None` means the default, `message`).
    pub event: Option<String>,
    /// The `data:` lines joined with `\n` (raw bytes; not checked to be UTF-8).
    pub data: Vec<u8>,
}

/// An event grew past the cap before it was complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("event over {limit} bytes")]
#[non_exhaustive]
pub struct EventTooLarge {
    /// The cap in bytes.
    pub limit: usize,
}

/// The incremental parser: feed it writes as they arrive with [`SseParser::push`].
#[derive(Debug, Clone)]
pub struct SseParser {
    max_event_bytes: usize,
    /// The line being read (without its line end).
    line: Vec<u8>,
    /// The `data` of the event being built, lines joined with `\n` (a trailing `\n` is
    /// dropped at dispatch).
    data: Vec<u8>,
    has_data: bool,
    event: Option<Vec<u8>>,
    /// The previous write ended in CR: a leading LF of the next one ends nothing.
    after_cr: bool,
    /// Still at the very start of the stream (a byte-order mark may follow).
    at_start: bool,
    failed: bool,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl SseParser {
    /// A parser that refuses any event (its `data`, `event` and pending line together) over
    /// `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> Self {
        SseParser {
            max_event_bytes,
            line: Vec::new(),
            data: Vec::new(),
            has_data: false,
            event: None,
            after_cr: false,
            at_start: true,
            failed: false,
        }
    }

    /// Bytes held for the event being built.
    pub fn pending_bytes(&self) -> usize {
        self.line.len() + self.data.len() + self.event.as_ref().map_or(0, Vec::len)
    }

    /// Whether some part of an event has been read but not dispatched (bytes of an unfinished
    /// line, or `data` lines without the blank line that ends the event).
    pub fn has_partial_event(&self) -> bool {
        !self.line.is_empty() || self.has_data
    }

    /// Feed one write. Complete events are appended to `out` in order; events completed
    /// before the cap was passed are kept in `out` even when this returns the error. After an
    /// error the parser stays failed and ignores further input.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), EventTooLarge> {
        if self.failed {
            return Err(EventTooLarge {
                limit: self.max_event_bytes,
            });
        }
        if self.at_start {
            // The BOM may itself be split across writes: hold its bytes in `line` until known.
            while let Some((&b, rest)) = bytes.split_first() {
                let at = self.line.len();
                if at < BOM.len() && b == BOM[at] {
                    self.line.push(b);
                    bytes = rest;
                    if self.line.len() == BOM.len() {
                        self.line.clear();
                        self.at_start = false;
                        break;
                    }
                } else {
                    self.at_start = false;
                    break;
                }
            }
        }
        if self.after_cr {
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
            if !bytes.is_empty() {
                self.after_cr = false;
            }
        }
        while !bytes.is_empty() {
            match bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
                None => {
                    self.line.extend_from_slice(bytes);
                    bytes = &[];
                    self.check()?;
                }
                Some(end) => {
                    self.line.extend_from_slice(&bytes[..end]);
                    self.check()?;
                    let cr = bytes[end] == b'\r';
                    bytes = &bytes[end + 1..];
                    if cr {
                        match bytes.first() {
                            Some(b'\n') => bytes = &bytes[1..],
                            Some(_) => {}
                            None => self.after_cr = true,
                        }
                    }
                    let line = std::mem::take(&mut self.line);
                    self.line_done(&line, out);
                    self.line = line;
                    self.line.clear();
                    self.check()?;
                }
            }
        }
        Ok(())
    }

    fn check(&mut self) -> Result<(), EventTooLarge> {
        if self.pending_bytes() > self.max_event_bytes {
            self.failed = true;
            self.line = Vec::new();
            self.data = Vec::new();
            self.event = None;
            return Err(EventTooLarge {
                limit: self.max_event_bytes,
            });
        }
        Ok(())
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match field {
            b"data" => {
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
                self.has_data = true;
            }
            b"event" => self.event = Some(value.to_vec()),
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = self.event.take();
        if !self.has_data {
            self.data.clear();
            return;
        }
        self.has_data = false;
        let mut data = std::mem::take(&mut self.data);
        if data.last() == Some(&b'\n') {
            data.pop();
        }
        out.push(SseEvent {
            event: event.map(|e| String::from_utf8_lossy(&e).into_owned()),
            data,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(input: &[u8], piece: usize) -> Vec<SseEvent> {
        let mut p = SseParser::new(1 << 20);
        let mut out = Vec::new();
        for chunk in input.chunks(piece.max(1)) {
            p.push(chunk, &mut out).unwrap();
        }
        out
    }

    fn datas(events: &[SseEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| String::from_utf8(e.data.clone()).unwrap())
            .collect()
    }

    #[test]
    fn every_line_end_and_every_split_gives_the_same_events() {
        let body = "\u{feff}: comment\n\nevent: x\ndata: a\ndata:b\n\ndata:  two spaces\n\n\
                    data\n\nid: 7\nretry: 9\n\n:only a comment\n\ndata: [DONE]\n\n";
        let want = vec!["a\nb", " two spaces", "", "[DONE]"];
        for ending in ["\n", "\r\n", "\r"] {
            let text = body.replace('\n', ending);
            for piece in [1, 2, 3, 5, 7, text.len()] {
                let events = parse_in_pieces(text.as_bytes(), piece);
                assert_eq!(datas(&events), want, "ending {ending:?}, pieces of {piece}");
                assert_eq!(events[0].event.as_deref(), Some("x"));
                assert_eq!(events[1].event, None);
            }
        }
    }

    #[test]
    fn cr_then_lf_in_the_next_write_is_one_line_end() {
        let mut p = SseParser::new(100);
        let mut out = Vec::new();
        p.push(b"data: a\r", &mut out).unwrap();
        p.push(b"\n", &mut out).unwrap();
        p.push(b"\r", &mut out).unwrap();
        assert_eq!(datas(&out), ["a"]);
        p.push(b"\ndata: b\n\n", &mut out).unwrap();
        assert_eq!(datas(&out), ["a", "b"]);
    }

    #[test]
    fn the_cap_stops_a_line_that_never_ends() {
        let mut p = SseParser::new(64);
        let mut out = Vec::new();
        p.push(b"data: ok\n\n", &mut out).unwrap();
        let err = p.push(&[b'x'; 65], &mut out).unwrap_err();
        assert_eq!(err.limit, 64);
        assert_eq!(err.to_string(), "event over 64 bytes");
        assert_eq!(datas(&out), ["ok"]);
        assert!(p.pending_bytes() == 0);
        assert!(p.push(b"\n\n", &mut out).is_err());
    }

    #[test]
    fn the_cap_counts_every_data_line_of_one_event() {
        let mut p = SseParser::new(20);
        let mut out = Vec::new();
        p.push(b"data: 0123456789\n", &mut out).unwrap();
        assert!(p.push(b"data: 0123456789\n", &mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn partial_events_are_seen() {
        let mut p = SseParser::new(100);
        let mut out = Vec::new();
        p.push(b"data: a\n", &mut out).unwrap();
        assert!(p.has_partial_event());
        p.push(b"\n", &mut out).unwrap();
        assert!(!p.has_partial_event());
        p.push(b"da", &mut out).unwrap();
        assert!(p.has_partial_event());
    }
}
