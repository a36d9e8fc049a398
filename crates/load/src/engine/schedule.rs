//! The open model's arrival schedule: the intended send times of the iterations, from the
//! stages (a piecewise-linear rate) and the arrival process (constant spacing or Poisson).
//!
//! With the cumulative rate `Λ(t) = ∫₀ᵗ rate`, arrival `k` (from 0) is due at `Λ⁻¹(k)` with
//! constant spacing, and at `Λ⁻¹(E₁ + … + Eₖ₊₁)` with Poisson arrivals (`Eᵢ` independent
//! Exp(1) draws from a seeded generator). Inverting the integrated rate keeps the count exact
//! on ramps: over a stage the expected number of arrivals is the area under its rate.

use std::time::Duration;

use crate::config::{Arrivals, Stage};

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny seeded generator, good enough for arrival gaps
/// and prompt order; the same seed gives the same sequence.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// An Exp(1) draw: `-ln(1 - U)`, finite because `1 - U` is in `(0, 1]`.
    pub(crate) fn next_exp(&mut self) -> f64 {
        -(1.0 - self.next_f64()).ln()
    }
}

/// The SplitMix64 finaliser: a good 64-bit hash of `z` (used to pick the body of request `k`).
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One stage in seconds, with its start and the cumulative arrivals before it.
#[derive(Debug, Clone, Copy)]
struct Segment {
    start: f64,
    length: f64,
    from: f64,
    slope: f64,
    /// `Λ` at the start of the segment.
    before: f64,
    /// Arrivals in the segment (`Λ(end) - Λ(start)`).
    area: f64,
}

impl Segment {
    /// Time into the segment where `Λ` has grown by `x` (`0 <= x <= area`): the root of
    /// `slope/2 τ² + from τ - x = 0`, written `2x / (from + √(from² + 2 slope x))` so it is
    /// stable for rising, falling and flat rates.
    fn solve(&self, x: f64) -> f64 {
        if x <= 0.0 {
            return 0.0;
        }
        let disc = (self.from * self.from + 2.0 * self.slope * x).max(0.0);
        let denom = self.from + disc.sqrt();
        if denom <= 0.0 {
            return self.length;
        }
        (2.0 * x / denom).clamp(0.0, self.length)
    }
}

/// The intended send times of an open-model run, generated in order.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    segments: Vec<Segment>,
    /// Total length in seconds: no arrival is due at or after it.
    end: f64,
    arrivals: Arrivals,
    rng: SplitMix64,
    /// The `Λ` value of the next arrival.
    next_x: f64,
    /// Arrivals handed out so far.
    issued: u64,
    segment: usize,
    /// Offset of constant-spacing arrivals, in gaps (`0 <= phase < 1`): arrival `k` is due at
    /// `Λ⁻¹(k + phase)` (a shard's place in the whole run's arrivals).
    phase: f64,
}

impl Schedule {
    /// A schedule over `stages`; Poisson gaps drawn from `seed`.
    pub(crate) fn new(stages: &[Stage], arrivals: Arrivals, seed: u64) -> Self {
        let mut segments = Vec::with_capacity(stages.len());
        let mut start = 0.0;
        let mut before = 0.0;
        for s in stages {
            let length = s.duration.as_secs_f64();
            let (from, to) = (s.from.max(0.0), s.to.max(0.0));
            if length > 0.0 && from.is_finite() && to.is_finite() {
                let area = (from + to) / 2.0 * length;
                segments.push(Segment {
                    start,
                    length,
                    from,
                    slope: (to - from) / length,
                    before,
                    area,
                });
                before += area;
            }
            start += length.max(0.0);
        }
        let mut rng = SplitMix64::new(seed);
        let next_x = match arrivals {
            Arrivals::Poisson => rng.next_exp(),
            _ => 0.0,
        };
        Schedule {
            segments,
            end: start,
            arrivals,
            rng,
            next_x,
            issued: 0,
            segment: 0,
            phase: 0.0,
        }
    }

    /// Shift constant-spacing arrivals by `phase` gaps (clamped to `[0, 1)`); Poisson
    /// arrivals are not shifted.
    pub(crate) fn with_phase(mut self, phase: f64) -> Self {
        let phase = if phase.is_finite() {
            phase.clamp(0.0, 0.999_999)
        } else {
            0.0
        };
        if !matches!(self.arrivals, Arrivals::Poisson) && self.issued == 0 {
            self.phase = phase;
            self.next_x = phase;
        }
        self
    }

    /// How many arrivals the schedule expects in all (`Λ(end)`).
    #[cfg(test)]
    pub(crate) fn expected(&self) -> f64 {
        self.segments.iter().map(|s| s.area).sum()
    }

    /// The index and intended send time (from the start of the run) of the next arrival, or
    /// `None` when the schedule has ended.
    pub(crate) fn next_arrival(&mut self) -> Option<(u64, Duration)> {
        let x = self.next_x;
        if !x.is_finite() {
            return None;
        }
        loop {
            let seg = self.segments.get(self.segment)?;
            if x < seg.before + seg.area {
                break;
            }
            self.segment += 1;
        }
        let seg = self.segments[self.segment];
        let t = seg.start + seg.solve(x - seg.before);
        if t >= self.end {
            return None;
        }
        let k = self.issued;
        self.issued += 1;
        self.next_x = match self.arrivals {
            Arrivals::Poisson => x + self.rng.next_exp(),
            _ => self.issued as f64 + self.phase,
        };
        Some((
            k,
            Duration::try_from_secs_f64(t.max(0.0)).unwrap_or(Duration::MAX),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(mut s: Schedule) -> Vec<Duration> {
        let mut out = Vec::new();
        while let Some((k, t)) = s.next_arrival() {
            assert_eq!(k as usize, out.len());
            out.push(t);
        }
        out
    }

    #[test]
    fn constant_rate_spaces_arrivals_evenly_and_counts_exactly() {
        let s = Schedule::new(
            &[Stage::new(200.0, 200.0, Duration::from_secs(10))],
            Arrivals::Constant,
            0,
        );
        let times = all(s);
        assert_eq!(times.len(), 2000);
        assert_eq!(times[0], Duration::ZERO);
        let gap = times[1001] - times[1000];
        assert!(gap.abs_diff(Duration::from_millis(5)) < Duration::from_micros(1));
        assert!(*times.last().unwrap() < Duration::from_secs(10));
    }

    #[test]
    fn shards_with_a_phase_interleave_into_the_whole_schedule() {
        // A ramp then a plateau, split 4 ways: rates / 4, phase i / 4. Together the shards
        // send exactly the whole run's arrivals at the whole run's times.
        let whole = [
            Stage::new(0.0, 100.0, Duration::from_secs(4)),
            Stage::new(100.0, 100.0, Duration::from_secs(3)),
        ];
        let mut expected = all(Schedule::new(&whole, Arrivals::Constant, 0));
        let n = 4u32;
        let part: Vec<Stage> = whole
            .iter()
            .map(|s| Stage::new(s.from / 4.0, s.to / 4.0, s.duration))
            .collect();
        let mut merged = Vec::new();
        for i in 0..n {
            let s =
                Schedule::new(&part, Arrivals::Constant, 0).with_phase(f64::from(i) / f64::from(n));
            merged.extend(all(s));
        }
        assert_eq!(merged.len(), expected.len());
        merged.sort();
        expected.sort();
        for (a, b) in merged.iter().zip(&expected) {
            assert!(a.abs_diff(*b) < Duration::from_micros(1), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn a_ramp_has_the_area_under_its_rate_and_speeds_up() {
        // 0 -> 100/s over 10 s: 500 arrivals, denser at the end.
        let s = Schedule::new(
            &[Stage::new(0.0, 100.0, Duration::from_secs(10))],
            Arrivals::Constant,
            0,
        );
        assert_eq!(s.expected(), 500.0);
        let times = all(s);
        assert!((499..=500).contains(&times.len()), "{}", times.len());
        let first_half = times
            .iter()
            .filter(|t| **t < Duration::from_secs(5))
            .count();
        // A quarter of the area lies in the first half of a linear ramp.
        assert!((120..=130).contains(&first_half), "{first_half}");
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn stages_chain_and_a_zero_stage_pauses() {
        let s = Schedule::new(
            &[
                Stage::new(10.0, 10.0, Duration::from_secs(1)),
                Stage::new(0.0, 0.0, Duration::from_secs(1)),
                Stage::new(20.0, 20.0, Duration::from_secs(1)),
            ],
            Arrivals::Constant,
            0,
        );
        let times = all(s);
        assert_eq!(times.len(), 30);
        assert!(
            times
                .iter()
                .all(|t| *t < Duration::from_secs(1) || *t >= Duration::from_secs(2))
        );
    }

    #[test]
    fn poisson_is_seeded_and_has_the_right_mean() {
        let stage = [Stage::new(1000.0, 1000.0, Duration::from_secs(10))];
        let a = all(Schedule::new(&stage, Arrivals::Poisson, 7));
        let b = all(Schedule::new(&stage, Arrivals::Poisson, 7));
        let c = all(Schedule::new(&stage, Arrivals::Poisson, 8));
        assert_eq!(a, b);
        assert_ne!(a, c);
        // 10 000 expected, standard deviation 100.
        assert!((9500..=10500).contains(&a.len()), "{}", a.len());
        let gaps: Vec<f64> = a.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        // Exponential gaps: standard deviation equals the mean (1 ms).
        assert!((mean - 0.001).abs() < 0.00005, "{mean}");
        assert!((var.sqrt() - 0.001).abs() < 0.0001, "{}", var.sqrt());
    }

    #[test]
    fn zero_and_degenerate_stages_end_the_schedule() {
        assert!(all(Schedule::new(&[], Arrivals::Constant, 0)).is_empty());
        let zero = [Stage::new(0.0, 0.0, Duration::from_secs(5))];
        assert!(all(Schedule::new(&zero, Arrivals::Poisson, 1)).is_empty());
        let infinite = [Stage::new(f64::INFINITY, 5.0, Duration::from_secs(5))];
        assert!(all(Schedule::new(&infinite, Arrivals::Constant, 1)).is_empty());
        // A rate that is not a number counts as 0: 0 -> 5/s over 5 s.
        let nan = [Stage::new(f64::NAN, 5.0, Duration::from_secs(5))];
        assert_eq!(all(Schedule::new(&nan, Arrivals::Constant, 1)).len(), 13);
    }
}
