//! Fault injection and error-handling checks (being built; see docs/faults.md when it lands).

#![forbid(unsafe_code)]

/// The tester's name and config section.
pub const NAME: &str = "faults";
