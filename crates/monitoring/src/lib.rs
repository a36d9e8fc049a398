//! The `monitoring:` tester (being built; see docs/monitoring.md when it lands).

#![forbid(unsafe_code)]

pub mod config;
pub mod endpoint;
pub mod exposition;
pub mod health;
pub mod prometheus;

/// The tester's name and config section.
pub const NAME: &str = "monitoring";
