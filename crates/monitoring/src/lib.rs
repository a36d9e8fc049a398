//! The `monitoring:` tester (being built; see docs/monitoring.md when it lands).

#![forbid(unsafe_code)]

pub mod config;
pub mod drill;
pub mod endpoint;
pub mod export;
pub mod exposition;
pub mod health;
pub mod prometheus;
pub mod webhook;

/// The tester's name and config section.
pub const NAME: &str = "monitoring";
