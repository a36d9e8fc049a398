//! Resources of the system under test, sampled during a run: CPU and resident memory of a
//! local process (from `/proc`) or of a Prometheus target (its `process_*` metrics).

use serde::{Deserialize, Serialize};

/// What the sampler saw over a run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ResourceSummary {
    /// What was sampled: `pid 1234` or the metrics URL (redacted).
    pub source: String,
    /// Samples taken.
    pub samples: u64,
    /// Peak resident memory, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb_peak: Option<f64>,
    /// Mean resident memory, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb_mean: Option<f64>,
    /// Peak CPU use over one sampling interval, percent of one core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent_peak: Option<f64>,
    /// Mean CPU use over the run, percent of one core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent_mean: Option<f64>,
    /// Why sampling failed or stopped early, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
