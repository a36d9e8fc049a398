//! Fault injection and error-handling checks (being built; see docs/faults.md when it lands).

#![forbid(unsafe_code)]

pub mod proxy;

pub use proxy::{
    Direction, Event, EventKind, Fault, FaultId, FaultSpec, Mode, Proxy, ProxyConfig, ProxyError,
    ProxyHandle,
};

/// The tester's name and config section.
pub const NAME: &str = "faults";
