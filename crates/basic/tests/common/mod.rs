//! Helpers shared by the basic tester's tests: the process's peak memory (the misbehaving HTTP
//! server is testkit's `lying::LyingServer`).

#![allow(dead_code, unreachable_pub)]
/// The process's resident set size and its peak, in KiB, from `/proc/self/status`.
pub fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Reset the process's peak RSS (VmHWM) to its current RSS (Linux `clear_refs` value 5), so a
/// later [`rss_kib`] shows the peak of what ran in between.
pub fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS through clear_refs");
}
