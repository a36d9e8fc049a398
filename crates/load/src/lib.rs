//! The `load:` tester: a load engine for HTTP targets and OpenAI-compatible streams.
//!
//! (Module overview written when the crate is complete; see docs/load-testing.md.)

#![forbid(unsafe_code)]

pub mod bodies;
pub mod check;
pub mod config;
pub mod engine;
pub mod metrics;
pub mod progress;
pub mod resources;
pub mod result;
pub mod sample;
pub mod slo;
pub mod stream;

/// The tester's name and config section.
pub const NAME: &str = "load";
