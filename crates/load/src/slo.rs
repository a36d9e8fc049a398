//! SLO thresholds (placeholder until the parser lands).

/// A parsed threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// The text.
    pub text: String,
}

impl Threshold {
    /// Parse a threshold.
    pub fn parse(text: &str) -> Result<Threshold, String> {
        Ok(Threshold { text: text.into() })
    }
}
