//! Example binaries and benchmarks for citadel-itest; see the `examples` directory.
