//! Short, stable words for network errors: "connection refused", "timed out".

use std::error::Error as StdError;
use std::io;

use citadel_itest_core::error_chain;

/// The words for an I/O error kind that has a well-known meaning, else `None`.
fn io_words(kind: io::ErrorKind) -> Option<&'static str> {
    Some(match kind {
        io::ErrorKind::ConnectionRefused => "connection refused",
        io::ErrorKind::TimedOut => "timed out",
        io::ErrorKind::ConnectionReset => "connection reset by peer",
        io::ErrorKind::ConnectionAborted => "connection aborted",
        io::ErrorKind::HostUnreachable => "host unreachable",
        io::ErrorKind::NetworkUnreachable => "network unreachable",
        io::ErrorKind::AddrNotAvailable => "address not available",
        io::ErrorKind::UnexpectedEof => "connection closed before a complete answer",
        io::ErrorKind::BrokenPipe => "connection closed by peer",
        _ => return None,
    })
}

/// Classify an I/O error: well-known kinds as fixed words, the rest as the redacted chain.
pub(crate) fn io_error(err: &io::Error) -> String {
    match io_words(err.kind()) {
        Some(words) => words.to_string(),
        None => error_chain(err),
    }
}

/// Classify an HTTP client error by the first I/O error in its chain; else its redacted chain
/// (without the URL, which the caller prints redacted).
pub(crate) fn http_error(err: reqwest::Error) -> String {
    if err.is_timeout() {
        return "timed out".to_string();
    }
    let mut cur: Option<&(dyn StdError + 'static)> = Some(&err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(words) = io_words(io.kind()) {
                return words.to_string();
            }
        }
        cur = e.source();
    }
    error_chain(&err.without_url())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_kinds_get_fixed_words() {
        let e = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(io_error(&e), "connection refused");
        let e = io::Error::new(io::ErrorKind::TimedOut, "whatever the os says");
        assert_eq!(io_error(&e), "timed out");
        let e = io::Error::other("strange");
        assert_eq!(io_error(&e), "strange");
    }
}
