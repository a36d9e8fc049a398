//! Pearson's chi-square goodness-of-fit test of observed backend counts against configured
//! weights (the distribution from `statrs`).

use statrs::distribution::{ChiSquared, ContinuousCDF};

/// The smallest expected count per backend for the chi-square approximation to hold (the
/// usual rule of thumb).
pub(crate) const MIN_EXPECTED: f64 = 5.0;

/// The result of one goodness-of-fit test.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChiSquare {
    /// Pearson's statistic, sum of (observed - expected)^2 / expected.
    pub(crate) statistic: f64,
    /// Degrees of freedom (backends - 1).
    pub(crate) df: u64,
    /// P(X >= statistic) under the configured weights; 1 when there is one backend.
    pub(crate) p_value: f64,
}

/// Why the test cannot be made.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ChiSquareError {
    /// No observations, or no categories.
    Empty,
    /// An expected count is below [`MIN_EXPECTED`].
    TooFew { smallest_expected: f64 },
    /// Weights that are not positive, or lengths that differ.
    Invalid(String),
}

/// Test `observed` counts against `weights` (same order, positive).
pub(crate) fn chi_square(observed: &[u64], weights: &[f64]) -> Result<ChiSquare, ChiSquareError> {
    if observed.len() != weights.len() {
        return Err(ChiSquareError::Invalid(format!(
            "{} counts for {} weights",
            observed.len(),
            weights.len()
        )));
    }
    if weights.iter().any(|w| !(w.is_finite() && *w > 0.0)) {
        return Err(ChiSquareError::Invalid("a weight is not positive".into()));
    }
    let total: u64 = observed.iter().sum();
    let weight_sum: f64 = weights.iter().sum();
    if observed.is_empty() || total == 0 {
        return Err(ChiSquareError::Empty);
    }
    let expected: Vec<f64> = weights
        .iter()
        .map(|w| w / weight_sum * total as f64)
        .collect();
    let smallest_expected = expected.iter().copied().fold(f64::INFINITY, f64::min);
    if observed.len() > 1 && smallest_expected < MIN_EXPECTED {
        return Err(ChiSquareError::TooFew { smallest_expected });
    }
    let statistic: f64 = observed
        .iter()
        .zip(&expected)
        .map(|(o, e)| (*o as f64 - e).powi(2) / e)
        .sum();
    let df = observed.len() as u64 - 1;
    let p_value = if df == 0 {
        1.0
    } else {
        let dist = ChiSquared::new(df as f64)
            .map_err(|e| ChiSquareError::Invalid(format!("chi-square distribution: {e}")))?;
        dist.sf(statistic).clamp(0.0, 1.0)
    };
    Ok(ChiSquare {
        statistic,
        df,
        p_value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_counts_fit_equal_weights() {
        let r = chi_square(&[100, 100, 100], &[1.0, 1.0, 1.0]).unwrap();
        assert_eq!(r.statistic, 0.0);
        assert_eq!(r.df, 2);
        assert!((r.p_value - 1.0).abs() < 1e-12);
    }

    #[test]
    fn known_values() {
        // 2 df: the survival function is exp(-x/2).
        let r = chi_square(&[120, 90, 90], &[1.0, 1.0, 1.0]).unwrap();
        assert!((r.statistic - 6.0).abs() < 1e-12);
        assert!((r.p_value - (-3.0f64).exp()).abs() < 1e-9, "{r:?}");
        // 1 df at the 0.01 critical value 6.6349.
        let r = chi_square(&[50 + 18, 50 - 18], &[1.0, 1.0]).unwrap();
        assert!((r.statistic - 12.96).abs() < 1e-9);
        assert!(r.p_value < 0.001);
    }

    #[test]
    fn skewed_counts_do_not_fit_equal_weights_but_fit_declared_ones() {
        let observed = [215, 43, 42];
        assert!(chi_square(&observed, &[1.0, 1.0, 1.0]).unwrap().p_value < 1e-10);
        assert!(chi_square(&observed, &[5.0, 1.0, 1.0]).unwrap().p_value > 0.5);
    }

    #[test]
    fn refuses_what_it_cannot_test() {
        assert_eq!(chi_square(&[0, 0], &[1.0, 1.0]), Err(ChiSquareError::Empty));
        assert!(matches!(
            chi_square(&[3, 3], &[1.0, 1.0]),
            Err(ChiSquareError::TooFew { .. })
        ));
        assert!(matches!(
            chi_square(&[3], &[1.0, 1.0]),
            Err(ChiSquareError::Invalid(_))
        ));
        assert!(matches!(
            chi_square(&[30, 30], &[1.0, 0.0]),
            Err(ChiSquareError::Invalid(_))
        ));
        let one = chi_square(&[7], &[2.0]).unwrap();
        assert_eq!((one.df, one.p_value), (0, 1.0));
    }
}
