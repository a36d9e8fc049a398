//! Names of temporary objects: `citadel_itest_<run>_<target>_<what>_<n>`, and reading back
//! when a leftover was made, so a sweep can remove what earlier runs left behind.
//!
//! A run id is `r` + the run's start in seconds since the Unix epoch (6 base-36 digits, so ids
//! sort by time) + 3 random base-36 digits. Every temporary object a tester creates starts with
//! [`TEMP_PREFIX`] and the run id, so its age can be read from its name alone:
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use citadel_itest_core::temp::{created_at, is_stale, temp_name};
//! use citadel_itest_core::new_run_id;
//!
//! let run = new_run_id();
//! let name = temp_name(&run, "vectors", "perf");
//! assert!(name.starts_with(&format!("citadel_itest_{run}_vectors_perf_")));
//! let made = created_at(&name).unwrap();
//! assert!(SystemTime::now().duration_since(made).unwrap() < Duration::from_secs(5));
//! // Not stale yet at one hour; a name that is not ours is never stale.
//! assert!(!is_stale(&name, Duration::from_secs(3600), SystemTime::now()));
//! assert!(!is_stale("orders", Duration::ZERO, SystemTime::now()));
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// Every temporary object a tester creates starts with this prefix (then `_` and the run id).
pub const TEMP_PREFIX: &str = "citadel_itest";

/// Longest temporary name: PostgreSQL keeps 63 bytes of an identifier.
pub const MAX_TEMP_NAME: usize = 63;

const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
/// Base-36 digits of the time part of a run id.
const TIME_DIGITS: usize = 6;
/// Base-36 digits of the random part of a run id.
const RANDOM_DIGITS: usize = 3;

/// A fresh run id: `r` + seconds since the epoch (6 base-36 digits) + 3 random base-36 digits,
/// lowercase, usable as an identifier prefix (`citadel_itest_<run>_...`).
pub fn new_run_id() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    // A cheap mix of the sub-second time, the process id and a counter (splitmix64 finaliser).
    let mut z = (now.subsec_nanos() as u64)
        ^ (u64::from(std::process::id()) << 32)
        ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    format!(
        "r{}{}",
        base36(now.as_secs(), TIME_DIGITS),
        base36(z, RANDOM_DIGITS)
    )
}

/// `n` in base 36 with exactly `width` digits (the lowest ones when it needs more).
fn base36(mut n: u64, width: usize) -> String {
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(n % 36) as usize];
        n /= 36;
    }
    String::from_utf8(out).unwrap_or_default()
}

/// When the run with this id started (to the second), if it is a run id of this shape.
pub fn run_started_at(run_id: &str) -> Option<SystemTime> {
    let digits = run_id.strip_prefix('r')?;
    if digits.len() != TIME_DIGITS + RANDOM_DIGITS
        || !digits
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    {
        return None;
    }
    let mut secs = 0u64;
    for b in digits[..TIME_DIGITS].bytes() {
        let d = DIGITS.iter().position(|&x| x == b)? as u64;
        secs = secs * 36 + d;
    }
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// A fresh name for a temporary object: `citadel_itest_<run>_<target>_<what>_<n>`, unique in
/// this process (and across runs through the run id), at most 63 bytes, lowercase letters,
/// digits and `_` only (the target part is cut to fit).
pub fn temp_name(run_id: &str, target: &str, what: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(1);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let head = format!("{}_{}", TEMP_PREFIX, clean(run_id));
    let tail = format!("_{}_{n}", clean(what));
    let room = MAX_TEMP_NAME.saturating_sub(head.len() + tail.len() + 1);
    let mut target = clean(target);
    target.truncate(room);
    format!("{head}_{target}{tail}")
}

fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// When the run that made this temporary object started: `None` when the name is not one of
/// ours (`citadel_itest_r<9 digits>_...`).
pub fn created_at(name: &str) -> Option<SystemTime> {
    let rest = name.strip_prefix(TEMP_PREFIX)?.strip_prefix('_')?;
    let run = rest.split('_').next()?;
    run_started_at(run)
}

/// Whether `name` is a temporary object of ours made by a run that started more than
/// `older_than` before `now`. Names that are not ours are never stale.
pub fn is_stale(name: &str, older_than: Duration, now: SystemTime) -> bool {
    match created_at(name) {
        Some(made) => now
            .duration_since(made)
            .map(|age| age > older_than)
            .unwrap_or(false),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_sort_by_time_and_read_back() {
        let a = new_run_id();
        let b = new_run_id();
        assert_eq!(a.len(), 10, "{a}");
        assert_ne!(a, b);
        let t = run_started_at(&a).unwrap();
        let now = SystemTime::now();
        assert!(now.duration_since(t).unwrap() < Duration::from_secs(2));
        let old = format!("r{}abc", base36(1_000_000_000, 6));
        let new = format!("r{}abc", base36(1_800_000_000, 6));
        assert!(old < new, "ids sort by time");
        assert_eq!(
            run_started_at(&old),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000))
        );
        assert_eq!(run_started_at("rgolden01"), None);
        assert_eq!(run_started_at("r123"), None);
        assert_eq!(run_started_at("rABCDEFGHI"), None);
    }

    #[test]
    fn temp_names_are_unique_short_identifiers() {
        let run = new_run_id();
        let a = temp_name(&run, "main-db", "ops");
        let b = temp_name(&run, "main-db", "ops");
        assert_ne!(a, b);
        assert!(
            a.starts_with(&format!("citadel_itest_{run}_main_db_ops_")),
            "{a}"
        );
        let long = temp_name(&run, &"x".repeat(100), "perf");
        assert!(long.len() <= MAX_TEMP_NAME, "{long}");
        assert!(
            long.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        );
        assert_eq!(created_at(&long), run_started_at(&run));
    }

    #[test]
    fn only_our_old_names_are_stale() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let two_hours_ago = format!("r{}x1z", base36(1_800_000_000 - 7200, 6));
        let name = format!("citadel_itest_{two_hours_ago}_vectors_perf_3");
        assert!(is_stale(&name, Duration::from_secs(3600), now));
        assert!(!is_stale(&name, Duration::from_secs(3 * 3600), now));
        for not_ours in [
            "citadel_itest",
            "citadel_itest_",
            "citadel_itest_rgolden01_x",
            "citadel_itestr0000000000_x",
            "orders",
            "citadel_itest_R0000000000_x",
        ] {
            assert!(!is_stale(not_ours, Duration::ZERO, now), "{not_ours}");
        }
    }
}
