//! The proxy's REST control API (being built).
