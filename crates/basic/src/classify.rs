//! Short, stable words for network errors: "connection refused", "timed out".

use std::io;

use citadel_itest_core::{error_chain, io_error_text, io_error_words_in_chain};

/// Classify an I/O error: well-known kinds as fixed words, the rest as the redacted chain.
pub(crate) fn io_error(err: &io::Error) -> String {
    io_error_text(err)
}

/// Classify an HTTP client error by the first I/O error in its chain; else its redacted chain
/// (without the URL, which the caller prints redacted).
pub(crate) fn http_error(err: reqwest::Error) -> String {
    if err.is_timeout() {
        return "timed out".to_string();
    }
    if let Some(words) = io_error_words_in_chain(&err) {
        return words.to_string();
    }
    error_chain(&err.without_url())
}
