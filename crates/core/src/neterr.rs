//! Short, stable words for network errors ("connection refused", "timed out"), shared by every
//! tester so the same failure reads the same in every report.

use std::error::Error as StdError;
use std::io;

use crate::error_chain;

/// The words for an I/O error kind with a well-known meaning, else `None`.
///
/// ```
/// use std::io::ErrorKind;
/// assert_eq!(citadel_itest_core::io_error_words(ErrorKind::ConnectionRefused), Some("connection refused"));
/// assert_eq!(citadel_itest_core::io_error_words(ErrorKind::Other), None);
/// ```
pub fn io_error_words(kind: io::ErrorKind) -> Option<&'static str> {
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

/// An I/O error as text: the well-known kinds as their fixed words, the rest as the redacted
/// cause chain.
pub fn io_error_text(err: &io::Error) -> String {
    match io_error_words(err.kind()) {
        Some(words) => words.to_string(),
        None => error_chain(err),
    }
}

/// The words of the first well-known I/O error in an error's `source()` chain (how HTTP and
/// database clients wrap a refused connect).
pub fn io_error_words_in_chain(err: &(dyn StdError + 'static)) -> Option<&'static str> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(words) = e
            .downcast_ref::<io::Error>()
            .and_then(|io| io_error_words(io.kind()))
        {
            return Some(words);
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_kinds_get_fixed_words_and_the_rest_their_chain() {
        let e = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(io_error_text(&e), "connection refused");
        let e = io::Error::new(io::ErrorKind::TimedOut, "whatever the os says");
        assert_eq!(io_error_text(&e), "timed out");
        let e = io::Error::other("strange");
        assert_eq!(io_error_text(&e), "strange");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("tcp connect error")]
    struct Wrapper(#[source] io::Error);

    #[test]
    fn the_first_known_io_error_in_a_chain_is_found() {
        let e = Wrapper(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(io_error_words_in_chain(&e), Some("connection refused"));
        let e = Wrapper(io::Error::other("odd"));
        assert_eq!(io_error_words_in_chain(&e), None);
    }
}
