//! One load run split over several processes ("shards"), each running a part of it.
//!
//! Shard `I` of `N` (0-based):
//!
//! - **Open model**: every stage's rate is divided by `N`. With constant spacing the shard's
//!   arrivals are phase-shifted by `I/N` of a gap, so the `N` shards together send exactly
//!   the arrivals of the whole run (shard `I` sends arrivals `I, I+N, I+2N, …` of the whole
//!   schedule, at their times). With Poisson arrivals each shard draws its own process (the
//!   sum of `N` Poisson processes of rate `r/N` is one of rate `r`).
//! - **Closed model**: the virtual users are split as evenly as possible (the first
//!   `vus % N` shards get one more), and `iterations` likewise.
//! - **Seeds**: the Poisson seed and the `random` prompt seed are derived from the run's seed
//!   and `I`, so shards differ and a rerun is the same.
//! - **Prompts** in `sequential` order: shard `I` sends prompts `I, I+N, I+2N, …` only, so no
//!   prompt is sent by two shards (with fewer prompts than shards, shard `I` sends prompt
//!   `I mod n`).
//!
//! ```
//! use citadel_itest_load::shard::Shard;
//!
//! let s: Shard = "1/4".parse().unwrap();
//! assert_eq!((s.index, s.count), (1, 4));
//! assert!("4/4".parse::<Shard>().is_err());
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::config::ScenarioConfig;

/// Most shards a run may have.
pub const MAX_SHARDS: u32 = 10_000;
/// Env var Kubernetes sets in each pod of an Indexed Job: the shard's index.
pub const ENV_INDEX: &str = "JOB_COMPLETION_INDEX";
/// Env var giving the number of shards (set in the Job's pod template).
pub const ENV_COUNT: &str = "CITADEL_ITEST_SHARDS";
/// How far ahead a synchronised start may be.
pub const MAX_START_AHEAD: Duration = Duration::from_secs(600);
/// How far in the past a synchronised start may be (a shard that late still runs, and says
/// so in `late_start_ms`).
pub const MAX_START_BEHIND: Duration = Duration::from_secs(600);

/// Which part of a sharded run this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Shard {
    /// From 0 to `count - 1`.
    pub index: u32,
    /// How many shards the run has (at least 1).
    pub count: u32,
}

/// A shard specification or a sharded scenario that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ShardError {
    /// `I/N` does not parse or is out of range.
    #[error("shard `{text}`: {reason}")]
    Spec {
        /// What was given.
        text: String,
        /// What is wrong.
        reason: String,
    },
    /// The scenario cannot be split this many ways.
    #[error("shard {index}/{count}: {reason}")]
    Split {
        /// The shard index.
        index: u32,
        /// The shard count.
        count: u32,
        /// What is wrong.
        reason: String,
    },
    /// The start time does not parse or is out of bounds.
    #[error("start time `{text}`: {reason}")]
    Start {
        /// What was given.
        text: String,
        /// What is wrong.
        reason: String,
    },
}

impl Shard {
    /// Shard `index` of `count`.
    pub fn new(index: u32, count: u32) -> Result<Shard, ShardError> {
        let bad = |reason: String| ShardError::Spec {
            text: format!("{index}/{count}"),
            reason,
        };
        if count == 0 || count > MAX_SHARDS {
            return Err(bad(format!("the count must be from 1 to {MAX_SHARDS}")));
        }
        if index >= count {
            return Err(bad(format!(
                "the index is 0-based and must be below the count {count}"
            )));
        }
        Ok(Shard { index, count })
    }

    /// The whole run (shard 0 of 1).
    pub fn whole() -> Shard {
        Shard { index: 0, count: 1 }
    }

    /// From the environment of a Kubernetes Indexed Job: index from [`ENV_INDEX`], count
    /// from [`ENV_COUNT`]; `Ok(None)` when neither is set.
    pub fn from_env() -> Result<Option<Shard>, ShardError> {
        Shard::from_vars(
            std::env::var(ENV_INDEX).ok().as_deref(),
            std::env::var(ENV_COUNT).ok().as_deref(),
        )
    }

    /// From the values of [`ENV_INDEX`] and [`ENV_COUNT`].
    pub fn from_vars(
        index: Option<&str>,
        count: Option<&str>,
    ) -> Result<Option<Shard>, ShardError> {
        match (index, count) {
            (None, None) => Ok(None),
            (Some(i), Some(n)) => format!("{}/{}", i.trim(), n.trim()).parse().map(Some),
            (Some(_), None) => Err(ShardError::Spec {
                text: ENV_INDEX.into(),
                reason: format!("{ENV_INDEX} is set but {ENV_COUNT} is not"),
            }),
            (None, Some(_)) => Err(ShardError::Spec {
                text: ENV_COUNT.into(),
                reason: format!("{ENV_COUNT} is set but {ENV_INDEX} is not"),
            }),
        }
    }

    /// Whether this is the whole run.
    pub fn is_whole(&self) -> bool {
        self.count <= 1
    }

    /// The seed of this shard derived from the run's `seed` (unchanged for the whole run).
    pub fn seed(&self, seed: u64) -> u64 {
        if self.is_whole() {
            return seed;
        }
        mix(seed ^ mix(0x5348_4152_4400_0000 ^ u64::from(self.index)))
    }

    /// This shard's part of `total` split as evenly as possible (the first `total % count`
    /// shards get one more).
    pub fn part(&self, total: u64) -> u64 {
        let n = u64::from(self.count.max(1));
        total / n + u64::from(u64::from(self.index) < total % n)
    }

    /// The phase of this shard's constant-spacing arrivals, in gaps: `index / count`.
    pub fn phase(&self) -> f64 {
        f64::from(self.index) / f64::from(self.count.max(1))
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(text: &str) -> Result<Shard, ShardError> {
        let bad = |reason: &str| ShardError::Spec {
            text: text.into(),
            reason: reason.into(),
        };
        let (i, n) = text
            .split_once('/')
            .ok_or_else(|| bad("give INDEX/COUNT, for example 0/4"))?;
        let i: u32 = i
            .trim()
            .parse()
            .map_err(|_| bad("the index is not a whole number"))?;
        let n: u32 = n
            .trim()
            .parse()
            .map_err(|_| bad("the count is not a whole number"))?;
        Shard::new(i, n).map_err(|e| match e {
            ShardError::Spec { reason, .. } => bad(&reason),
            other => other,
        })
    }
}

/// The SplitMix64 finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `scenario` as shard `shard` runs it: rates divided, users and iterations split, seeds
/// derived (see the [module](self)). The whole run is returned unchanged.
pub fn apply(scenario: &ScenarioConfig, shard: Shard) -> Result<ScenarioConfig, ShardError> {
    let mut out = scenario.clone();
    if shard.is_whole() {
        return Ok(out);
    }
    let split = |reason: String| ShardError::Split {
        index: shard.index,
        count: shard.count,
        reason,
    };
    let n = f64::from(shard.count);
    if let Some(c) = &mut out.closed {
        if (c.vus as u64) < u64::from(shard.count) {
            return Err(split(format!(
                "closed.vus {} is fewer than the {} shards: give every shard a user",
                c.vus, shard.count
            )));
        }
        c.vus = shard.part(c.vus as u64) as usize;
        if let Some(it) = c.iterations {
            if it < u64::from(shard.count) {
                return Err(split(format!(
                    "closed.iterations {it} is fewer than the {} shards",
                    shard.count
                )));
            }
            c.iterations = Some(shard.part(it));
        }
    }
    if let Some(o) = &mut out.open {
        let stages = o.parsed_stages().map_err(|e| split(format!("open: {e}")))?;
        if o.stages.is_some() {
            o.stages = Some(
                stages
                    .iter()
                    .map(|s| {
                        format!(
                            "{}/s for {}",
                            s.to / n,
                            humantime::format_duration(s.duration)
                        )
                    })
                    .collect(),
            );
        } else {
            o.rate = o.rate.map(|r| r / n);
        }
        o.seed = shard.seed(o.seed);
        // Each shard keeps at least one connection.
        o.max_connections = (shard.part(o.max_connections as u64) as usize).max(1);
    }
    if let Some(p) = &mut out.request.prompts {
        p.seed = shard.seed(p.seed);
    }
    Ok(out)
}

/// The prompts shard `shard` sends in `sequential` order: `I, I+N, I+2N, …` of `bodies`
/// (prompt `I mod n` when there are fewer prompts than shards).
pub fn stride(bodies: Vec<Bytes>, shard: Shard) -> Vec<Bytes> {
    if shard.is_whole() || bodies.is_empty() {
        return bodies;
    }
    let n = bodies.len();
    let i = shard.index as usize;
    if n <= i {
        return vec![bodies[i % n].clone()];
    }
    bodies
        .into_iter()
        .skip(i)
        .step_by(shard.count as usize)
        .collect()
}

/// Parse a start time: RFC 3339 (`2026-11-30T03:00:00Z`) or Unix milliseconds.
pub fn parse_start(text: &str) -> Result<SystemTime, ShardError> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        let ms: u64 = t.parse().map_err(|_| ShardError::Start {
            text: text.into(),
            reason: "too large".into(),
        })?;
        return SystemTime::UNIX_EPOCH
            .checked_add(Duration::from_millis(ms))
            .ok_or_else(|| ShardError::Start {
                text: text.into(),
                reason: "too large".into(),
            });
    }
    humantime::parse_rfc3339_weak(t).map_err(|e| ShardError::Start {
        text: text.into(),
        reason: format!("not an RFC 3339 time or Unix milliseconds ({e})"),
    })
}

/// Check `start` against `now`: at most [`MAX_START_AHEAD`] ahead and
/// [`MAX_START_BEHIND`] behind.
pub fn check_start(start: SystemTime, now: SystemTime) -> Result<(), ShardError> {
    let text = humantime::format_rfc3339_millis(start).to_string();
    match start.duration_since(now) {
        Ok(ahead) if ahead > MAX_START_AHEAD => Err(ShardError::Start {
            text,
            reason: format!(
                "{} ahead; at most {} is allowed",
                humantime::format_duration(Duration::from_secs(ahead.as_secs())),
                humantime::format_duration(MAX_START_AHEAD)
            ),
        }),
        Ok(_) => Ok(()),
        Err(e) if e.duration() > MAX_START_BEHIND => Err(ShardError::Start {
            text,
            reason: format!(
                "{} in the past; at most {} is allowed",
                humantime::format_duration(Duration::from_secs(e.duration().as_secs())),
                humantime::format_duration(MAX_START_BEHIND)
            ),
        }),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_sum_to_the_whole() {
        for total in [0u64, 1, 3, 4, 10, 1001] {
            for count in 1..=7u32 {
                let sum: u64 = (0..count)
                    .map(|i| Shard::new(i, count).unwrap().part(total))
                    .sum();
                assert_eq!(sum, total, "{total} over {count}");
            }
        }
    }

    #[test]
    fn specs_parse_and_bad_ones_say_why() {
        assert_eq!("3/4".parse::<Shard>().unwrap(), Shard::new(3, 4).unwrap());
        for bad in ["", "1", "a/4", "1/b", "4/4", "0/0", "-1/4", "1/100000"] {
            let e = bad.parse::<Shard>().unwrap_err().to_string();
            assert!(e.contains(&format!("`{bad}`")), "{e}");
        }
        assert_eq!(Shard::from_vars(None, None).unwrap(), None);
        assert_eq!(
            Shard::from_vars(Some("2"), Some("3")).unwrap(),
            Some(Shard::new(2, 3).unwrap())
        );
        assert!(Shard::from_vars(Some("2"), None).is_err());
    }

    #[test]
    fn start_bounds() {
        let now = SystemTime::now();
        assert!(check_start(now + Duration::from_secs(5), now).is_ok());
        assert!(check_start(now - Duration::from_secs(5), now).is_ok());
        assert!(check_start(now + Duration::from_secs(3600), now).is_err());
        assert!(check_start(now - Duration::from_secs(3600), now).is_err());
        let t = parse_start("1700000000123").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap(),
            Duration::from_millis(1_700_000_000_123)
        );
        assert!(parse_start("2026-11-30T03:00:00Z").is_ok());
        assert!(parse_start("tomorrow").is_err());
    }
}
