//! The result of a load run as written to `load-<scenario>.json` (schema
//! `citadel-itest.load/v1`): counts, derived figures, percentile tables, chart buckets, the
//! HDR histograms themselves (so results of several processes merge exactly), the per-second
//! series, the stream section, resources and thresholds. docs/reports.md documents every
//! field.
//!
//! ```
//! use citadel_itest_load::result::LoadResult;
//!
//! let json = br#"{"schema":"citadel-itest.load/v2"}"#;
//! let err = LoadResult::from_json_slice(json).unwrap_err();
//! assert!(err.to_string().contains("schema"));
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2Serializer};
use serde::{Deserialize, Serialize};

use crate::config::GoodputConfig;
use crate::resources::ResourceSummary;
use crate::slo::ThresholdResult;

/// The `schema` of every load result.
pub const SCHEMA: &str = "citadel-itest.load/v1";
/// How histograms are encoded: HdrHistogram's V2 binary format (uncompressed), then
/// standard base64 with padding.
pub const HISTOGRAM_ENCODING: &str = "hdr-v2+base64";
/// Significant digits of the whole-run histograms (values within 0.1 %).
pub const SIGNIFICANT_DIGITS: u8 = 3;
/// Significant digits of the per-second histograms (values within 1 %).
pub const SERIES_SIGNIFICANT_DIGITS: u8 = 2;
/// Largest result file [`LoadResult::from_json_slice`] accepts.
pub const MAX_RESULT_BYTES: u64 = 256 * 1024 * 1024;
/// Largest value a histogram records (larger ones are recorded as this): 48 hours in
/// microseconds.
pub(crate) const MAX_TRACKED: u64 = 48 * 3600 * 1_000_000;
/// Largest second of a series (seconds after it are counted in it): 49 hours.
pub(crate) const MAX_SERIES_SECOND: u64 = 49 * 3600;
/// Largest highest-trackable value a decoded histogram may announce (2^40, about 12.7 days
/// in microseconds): bounds what decoding one histogram allocates.
const MAX_DECODED_HIGH: u64 = 1 << 40;
/// Length of the V2 header: cookie, payload length, normalizing offset, significant
/// digits, lowest and highest trackable value, integer-to-double ratio.
const V2_HEADER: usize = 40;

/// A histogram of microseconds (or milli-tokens per second).
pub(crate) type Hist = Histogram<u64>;

/// A new auto-resizing histogram (lowest value 1) with `sigfig` significant digits.
pub(crate) fn new_hist(sigfig: u8) -> Hist {
    // 2 and 3 significant digits are always valid; fall back to 3 for anything else.
    Histogram::new(sigfig.clamp(1, 5))
        .or_else(|_| Histogram::new(3))
        .expect("3 significant digits is a valid histogram")
}

/// The metrics kept as histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum HistMetric {
    /// `http_req_duration`: from the intended send to the end of the answer (corrected
    /// for coordinated omission), every request, failed or not.
    Duration,
    /// `http_req_service`: from the actual send to the end of the answer, every request.
    Service,
    /// `ttft`: time to the first content token of a successful stream.
    Ttft,
    /// `itl`: every gap between consecutive content chunks of a successful stream.
    Itl,
    /// `tpot`: time per output token after the first, per successful stream.
    Tpot,
    /// `e2e`: from the send to `[DONE]`, per successful stream.
    E2e,
    /// `output_tps`: output tokens per second of each successful stream.
    OutputTps,
}

impl HistMetric {
    /// Every histogram metric, in report order.
    pub const ALL: [HistMetric; 7] = [
        HistMetric::Duration,
        HistMetric::Service,
        HistMetric::Ttft,
        HistMetric::Itl,
        HistMetric::Tpot,
        HistMetric::E2e,
        HistMetric::OutputTps,
    ];

    /// The name in reports and thresholds.
    pub fn name(self) -> &'static str {
        match self {
            HistMetric::Duration => "http_req_duration",
            HistMetric::Service => "http_req_service",
            HistMetric::Ttft => "ttft",
            HistMetric::Itl => "itl",
            HistMetric::Tpot => "tpot",
            HistMetric::E2e => "e2e",
            HistMetric::OutputTps => "output_tps",
        }
    }

    /// The metric named `name`.
    pub fn from_name(name: &str) -> Option<HistMetric> {
        HistMetric::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Unit of the percentile table: `ms`, or `tokens/s` for `output_tps`.
    pub fn unit(self) -> &'static str {
        match self {
            HistMetric::OutputTps => "tokens/s",
            _ => "ms",
        }
    }

    /// Unit of the encoded histogram's values: `us`, or `millitokens/s` for `output_tps`.
    /// Both are 1000 times the table's unit.
    pub fn stored_unit(self) -> &'static str {
        match self {
            HistMetric::OutputTps => "millitokens/s",
            _ => "us",
        }
    }

    /// Whether only stream scenarios have it.
    pub fn is_stream(self) -> bool {
        !matches!(self, HistMetric::Duration | HistMetric::Service)
    }

    pub(crate) fn index(self) -> usize {
        match self {
            HistMetric::Duration => 0,
            HistMetric::Service => 1,
            HistMetric::Ttft => 2,
            HistMetric::Itl => 3,
            HistMetric::Tpot => 4,
            HistMetric::E2e => 5,
            HistMetric::OutputTps => 6,
        }
    }
}

/// One histogram per [`HistMetric`], each made on first use.
#[derive(Debug, Clone, Default)]
pub(crate) struct HistSet {
    hists: [Option<Hist>; 7],
}

impl HistSet {
    pub(crate) fn get(&self, m: HistMetric) -> Option<&Hist> {
        self.hists[m.index()].as_ref()
    }

    /// Record `value` (clamped to [`MAX_TRACKED`]); allocates only on the first value.
    #[inline]
    pub(crate) fn record(&mut self, m: HistMetric, value: u64, sigfig: u8) {
        let h = self.hists[m.index()].get_or_insert_with(|| new_hist(sigfig));
        // Auto-resizing up to MAX_TRACKED: fails only when memory for it cannot be indexed,
        // then the value is counted at the largest trackable one.
        if h.record(value.min(MAX_TRACKED)).is_err() {
            h.saturating_record(value);
        }
    }

    /// Add `h` into metric `m` (exact when both have the same significant digits).
    pub(crate) fn add_hist(&mut self, m: HistMetric, h: &Hist, sigfig: u8) {
        let mine = self.hists[m.index()].get_or_insert_with(|| new_hist(sigfig));
        if !h.is_empty() {
            // Auto-resizing: fails only when the platform's usize cannot index the counts.
            let _ = mine.add(h);
        }
    }

    pub(crate) fn add(&mut self, other: &HistSet, sigfig: u8) {
        for m in HistMetric::ALL {
            if let Some(h) = other.get(m) {
                self.add_hist(m, h, sigfig);
            }
        }
    }

    /// Empty every histogram, keeping its memory.
    pub(crate) fn reset(&mut self) {
        for h in self.hists.iter_mut().flatten() {
            h.reset();
        }
    }

    /// Heap bytes held by the counts arrays.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.hists
            .iter()
            .flatten()
            .map(|h| h.distinct_values() * std::mem::size_of::<u64>())
            .sum()
    }
}

/// Microseconds of `d`, saturating.
#[inline]
pub(crate) fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The V2 bytes of `h`.
pub(crate) fn encode_bytes(h: &Hist) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut out)
        .map_err(|e| format!("cannot encode histogram ({e})"))?;
    Ok(out)
}

/// `h` in [`HISTOGRAM_ENCODING`].
pub(crate) fn encode_hist(h: &Hist) -> Result<String, String> {
    encode_bytes(h).map(|b| BASE64.encode(b))
}

/// Decode V2 bytes, checking the header first so a corrupt length cannot make the decoder
/// allocate more than the input holds.
pub(crate) fn decode_bytes(bytes: &[u8], sigfig: u8) -> Result<Hist, String> {
    if bytes.len() < V2_HEADER {
        return Err(format!(
            "not an HdrHistogram V2 encoding: {} bytes, shorter than its {V2_HEADER}-byte header",
            bytes.len()
        ));
    }
    let word =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let payload = word(4) as usize;
    if payload != bytes.len() - V2_HEADER {
        return Err(format!(
            "not an HdrHistogram V2 encoding: the header announces {payload} payload bytes, \
             {} follow",
            bytes.len() - V2_HEADER
        ));
    }
    let digits = word(12);
    if digits != u32::from(sigfig) {
        return Err(format!(
            "histogram has {digits} significant digits, expected {sigfig}"
        ));
    }
    let low = u64::from_be_bytes(bytes[16..24].try_into().unwrap_or_default());
    if low != 1 {
        return Err(format!(
            "histogram's lowest trackable value is {low}, expected 1"
        ));
    }
    let high = u64::from_be_bytes(bytes[24..32].try_into().unwrap_or_default());
    if high > MAX_DECODED_HIGH {
        return Err(format!(
            "histogram's highest trackable value {high} is beyond {MAX_DECODED_HIGH}"
        ));
    }
    let mut reader = bytes;
    let h: Hist = Deserializer::new()
        .deserialize(&mut reader)
        .map_err(|e| format!("not a valid HdrHistogram V2 encoding ({e})"))?;
    let mut h = h;
    h.auto(true);
    Ok(h)
}

/// Decode a histogram in [`HISTOGRAM_ENCODING`] with `sigfig` significant digits.
pub(crate) fn decode_hist(data: &str, sigfig: u8) -> Result<Hist, String> {
    let bytes = BASE64
        .decode(data)
        .map_err(|e| format!("not valid base64 ({e})"))?;
    decode_bytes(&bytes, sigfig)
}

/// What one load run (or several merged) measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LoadResult {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// The scenario's name.
    pub scenario: String,
    /// The load model, e.g. `open 20/s for 5s` or `closed 10 vus for 30s`.
    pub model: String,
    /// When the run started (RFC 3339, UTC); the earliest start of merged runs.
    pub started_at: String,
    /// How long the run lasted, seconds; the longest of merged runs (they ran side by side).
    pub duration_s: f64,
    /// How many runs this result holds (1 unless merged).
    #[serde(default = "one")]
    pub runs: u32,
    /// Why the run stopped before its schedule ended (cancelled, aborted by a threshold).
    #[serde(default)]
    pub stopped: Option<String>,
    /// Counters.
    pub counts: Counts,
    /// Figures computed from the counters and the duration.
    pub derived: Derived,
    /// A percentile table per histogram metric (by name).
    pub metrics: BTreeMap<String, Percentiles>,
    /// Log-spaced buckets per histogram metric, for charts.
    #[serde(default)]
    pub buckets: BTreeMap<String, Vec<Bucket>>,
    /// The histograms themselves.
    pub histograms: EncodedHistograms,
    /// One entry per second of the run.
    pub series: Series,
    /// Stream figures, for a stream scenario.
    #[serde(default)]
    pub stream: Option<StreamSummary>,
    /// CPU and memory of the system under test, when sampled.
    #[serde(default)]
    pub resources: Option<ResourceSummary>,
    /// Thresholds and their verdicts.
    #[serde(default)]
    pub thresholds: Vec<ThresholdResult>,
    /// The shard of a distributed run this result is (absent for a whole run and a merge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<crate::shard::Shard>,
    /// How late the run began after its synchronised start time, in milliseconds (absent
    /// without one); for a merge, the largest of its inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_start_ms: Option<u64>,
}

fn one() -> u32 {
    1
}

/// Counters of a run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Counts {
    /// Requests that finished (successfully or not). Dropped iterations are not requests.
    pub requests: u64,
    /// Requests that succeeded.
    pub ok: u64,
    /// Failed requests by class (`connect`, `timeout`, `http_4xx`, ...); classes with none
    /// are left out.
    #[serde(default)]
    pub errors: BTreeMap<String, u64>,
    /// Responses by status code (`"200"`).
    #[serde(default)]
    pub status: BTreeMap<String, u64>,
    /// Open-model iterations never sent because no connection was free within `max_lag`.
    #[serde(default)]
    pub dropped: u64,
    /// Response body bytes received.
    #[serde(default)]
    pub bytes: u64,
}

impl Counts {
    /// Failed requests, all classes together.
    pub fn errors_total(&self) -> u64 {
        self.errors.values().fold(0u64, |a, b| a.saturating_add(*b))
    }
}

/// Figures derived from the counters; recomputed on merge.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Derived {
    /// `requests / duration_s`; null for a zero duration.
    pub rps: Option<f64>,
    /// `ok / duration_s`.
    pub ok_rps: Option<f64>,
    /// Failed requests over requests, a ratio 0-1; null without requests.
    pub error_rate: Option<f64>,
}

/// A percentile table. Durations in milliseconds, `output_tps` in tokens per second;
/// values are the upper end of the histogram bucket holding them (within 0.1 %). Every
/// value is null when `count` is 0.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Percentiles {
    /// `ms` or `tokens/s`.
    pub unit: String,
    /// Values recorded.
    pub count: u64,
    /// Smallest value.
    pub min: Option<f64>,
    /// Largest value.
    pub max: Option<f64>,
    /// Mean.
    pub mean: Option<f64>,
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// 99.9th percentile.
    pub p99_9: Option<f64>,
    /// 99.99th percentile.
    pub p99_99: Option<f64>,
}

impl Percentiles {
    /// The table of `h`, whose values are 1000 times `unit`.
    pub(crate) fn of(h: Option<&Hist>, unit: &str) -> Percentiles {
        let mut p = Percentiles {
            unit: unit.into(),
            ..Percentiles::default()
        };
        let Some(h) = h.filter(|h| !h.is_empty()) else {
            return p;
        };
        let at = |q: f64| Some(h.value_at_quantile(q) as f64 / 1000.0);
        p.count = h.len();
        p.min = Some(h.min() as f64 / 1000.0);
        p.max = Some(h.max() as f64 / 1000.0);
        p.mean = Some(h.mean().round() / 1000.0);
        p.p50 = at(0.5);
        p.p90 = at(0.9);
        p.p95 = at(0.95);
        p.p99 = at(0.99);
        p.p99_9 = at(0.999);
        p.p99_99 = at(0.9999);
        p
    }
}

/// One chart bucket: `count` values above the previous bucket's `le` and at most this `le`
/// (in the table's unit).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Bucket {
    /// Upper bound.
    pub le: f64,
    /// Values in the bucket.
    pub count: u64,
}

/// Bucket bounds per decade in hundredths (the R10 series): 10 buckets per factor of 10.
const R10: [u64; 10] = [100, 125, 160, 200, 250, 315, 400, 500, 630, 800];

/// Log-spaced buckets of `h`, from the first non-empty bucket to the last.
pub(crate) fn buckets_of(h: &Hist) -> Vec<Bucket> {
    if h.is_empty() {
        return Vec::new();
    }
    // Upper bounds in hundredths of the stored unit, from 1 to beyond the largest value.
    let top = u128::from(h.max()) * 100;
    let mut bounds: Vec<u128> = Vec::new();
    let mut decade: u128 = 1;
    'outer: while decade <= 10u128.pow(24) {
        for f in R10 {
            let b = u128::from(f) * decade;
            bounds.push(b);
            if b >= top {
                break 'outer;
            }
        }
        decade *= 10;
    }
    let mut counts = vec![0u64; bounds.len()];
    for v in h.iter_recorded() {
        let value = u128::from(v.value_iterated_to()) * 100;
        let i = bounds.partition_point(|b| *b < value).min(bounds.len() - 1);
        counts[i] = counts[i].saturating_add(v.count_at_value());
    }
    let first = counts.iter().position(|c| *c > 0).unwrap_or(0);
    let last = counts.iter().rposition(|c| *c > 0).unwrap_or(0);
    (first..=last)
        .map(|i| Bucket {
            le: bounds[i] as f64 / 100_000.0,
            count: counts[i],
        })
        .collect()
}

/// The histograms of a result.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EncodedHistograms {
    /// [`HISTOGRAM_ENCODING`].
    pub encoding: String,
    /// [`SIGNIFICANT_DIGITS`].
    pub significant_digits: u8,
    /// By metric name. Empty in an interim view.
    pub metrics: BTreeMap<String, EncodedHistogram>,
}

/// One encoded histogram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EncodedHistogram {
    /// Unit of the recorded values: `us` or `millitokens/s`.
    pub unit: String,
    /// The histogram in the enclosing `encoding`.
    pub data: String,
}

/// The per-second series.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Series {
    /// [`HISTOGRAM_ENCODING`].
    pub encoding: String,
    /// [`SERIES_SIGNIFICANT_DIGITS`].
    pub significant_digits: u8,
    /// The metric of each second's histogram: `http_req_duration`.
    pub metric: String,
    /// Unit of the histograms' values: `us`.
    pub unit: String,
    /// Second 0, 1, ... of the run, every second up to the last one with activity.
    pub seconds: Vec<SecondPoint>,
}

/// One second of the run: requests that completed in it, iterations dropped in it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SecondPoint {
    /// Seconds from the start of the run.
    pub t: u64,
    /// Requests completed in this second.
    pub requests: u64,
    /// Of which succeeded.
    pub ok: u64,
    /// Of which failed.
    pub errors: u64,
    /// Iterations dropped whose intended time fell in this second.
    pub dropped: u64,
    /// Median `http_req_duration`, ms.
    pub p50_ms: Option<f64>,
    /// 95th percentile, ms.
    pub p95_ms: Option<f64>,
    /// 99th percentile, ms.
    pub p99_ms: Option<f64>,
    /// This second's `http_req_duration` histogram (2 significant digits); absent without
    /// requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram: Option<String>,
}

/// Stream figures.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StreamSummary {
    /// Requests whose answer was a stream (2xx head), however they ended.
    pub streams: u64,
    /// Streams that succeeded (ended with `[DONE]`).
    pub completed: u64,
    /// Output tokens of the completed streams.
    pub output_tokens: u64,
    /// Completed streams whose token count came from `usage.completion_tokens`.
    pub tokens_from_usage: u64,
    /// Completed streams whose token count is their number of content chunks.
    pub tokens_from_content_chunks: u64,
    /// `usage`, `content_chunks` or `mixed`; null without completed streams.
    pub token_source: Option<String>,
    /// Streams by how they ended (`done`, `cut off`, `stalled`, ...).
    #[serde(default)]
    pub ends: BTreeMap<String, u64>,
    /// `completed / duration_s`.
    pub request_throughput: Option<f64>,
    /// `output_tokens / duration_s`.
    pub output_tokens_per_s: Option<f64>,
    /// Completed streams meeting every goodput bound.
    pub goodput: u64,
    /// `goodput / requests` (every request of the scenario), a ratio 0-1; null without
    /// requests.
    pub goodput_rate: Option<f64>,
    /// The goodput bounds applied.
    #[serde(default)]
    pub goodput_criteria: GoodputCriteria,
}

/// The goodput bounds, milliseconds; absent bounds do not apply.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GoodputCriteria {
    /// Time to first token at most this.
    pub ttft_ms: Option<f64>,
    /// Time per output token at most this.
    pub tpot_ms: Option<f64>,
    /// End-to-end at most this.
    pub e2e_ms: Option<f64>,
}

impl From<&GoodputConfig> for GoodputCriteria {
    fn from(g: &GoodputConfig) -> Self {
        let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        GoodputCriteria {
            ttft_ms: ms(g.ttft),
            tpot_ms: ms(g.tpot),
            e2e_ms: ms(g.e2e),
        }
    }
}

/// Why a result file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// Over [`MAX_RESULT_BYTES`].
    #[error("load result is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Not JSON of the expected shape.
    #[error("not a load result: {0}")]
    Json(#[from] serde_json::Error),
    /// A field holds something wrong.
    #[error("{field}: {problem}")]
    Invalid {
        /// The field's path, e.g. `histograms.metrics.ttft.data`.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// Why results could not be merged. `index` counts inputs from 0; the message counts from 1.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum MergeError {
    /// Nothing to merge.
    #[error("no load results to merge")]
    Empty,
    /// One input cannot be merged with the others.
    #[error("input {}: {field}: {problem}", index + 1)]
    Input {
        /// Which input (0-based).
        index: usize,
        /// The field's path.
        field: String,
        /// What is wrong.
        problem: String,
    },
}

fn invalid(index: usize, field: impl Into<String>, problem: impl Into<String>) -> MergeError {
    MergeError::Input {
        index,
        field: field.into(),
        problem: problem.into(),
    }
}

/// The parts a result is built from.
pub(crate) struct Parts {
    pub(crate) scenario: String,
    pub(crate) model: String,
    pub(crate) started_at: String,
    pub(crate) duration_s: f64,
    pub(crate) runs: u32,
    pub(crate) stopped: Option<String>,
    pub(crate) counts: Counts,
    /// Stream counters (derived fields are recomputed); `None` for a non-stream scenario.
    pub(crate) stream: Option<StreamSummary>,
    pub(crate) hists: HistSet,
    /// The series, each second already reported (see [`second_point`]).
    pub(crate) series: Vec<SecondPoint>,
    /// Encode histograms and buckets (false for an interim view).
    pub(crate) full: bool,
    pub(crate) resources: Option<ResourceSummary>,
}

/// Counters of one second of the series.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SecondCounts {
    pub(crate) requests: u64,
    pub(crate) ok: u64,
    pub(crate) dropped: u64,
}

/// Report second `t`: percentiles from `hist`, and its encoding (`encoded` when the caller
/// has it already, otherwise encoded here when `full`). One second at a time, so a long
/// series never has every second's histogram decoded at once.
pub(crate) fn second_point(
    t: u64,
    c: SecondCounts,
    hist: Option<&Hist>,
    encoded: Option<String>,
    full: bool,
) -> Result<SecondPoint, String> {
    let h = hist.filter(|h| !h.is_empty());
    let at = |q: f64| h.map(|h| h.value_at_quantile(q) as f64 / 1000.0);
    let histogram = match (h, encoded) {
        (None, _) => None,
        (Some(_), _) if !full => None,
        (Some(_), Some(e)) => Some(e),
        (Some(h), None) => Some(encode_hist(h)?),
    };
    Ok(SecondPoint {
        t,
        requests: c.requests,
        ok: c.ok,
        errors: c.requests.saturating_sub(c.ok),
        dropped: c.dropped,
        p50_ms: at(0.5),
        p95_ms: at(0.95),
        p99_ms: at(0.99),
        histogram,
    })
}

/// `bytes` in [`HISTOGRAM_ENCODING`].
pub(crate) fn base64_of(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

fn per_second(n: u64, duration_s: f64) -> Option<f64> {
    (duration_s > 0.0 && duration_s.is_finite()).then(|| n as f64 / duration_s)
}

fn ratio(n: u64, of: u64) -> Option<f64> {
    (of > 0).then(|| n as f64 / of as f64)
}

/// Build a result, computing every derived figure. Returns the problems met while encoding
/// (none in practice: a count over `i64::MAX` cannot be encoded).
pub(crate) fn build(parts: Parts) -> (LoadResult, Vec<String>) {
    let mut problems = Vec::new();
    let d = parts.duration_s;
    let counts = parts.counts;
    let derived = Derived {
        rps: per_second(counts.requests, d),
        ok_rps: per_second(counts.ok, d),
        error_rate: ratio(counts.requests.saturating_sub(counts.ok), counts.requests),
    };
    let stream = parts.stream.map(|mut s| {
        s.token_source = match (s.tokens_from_usage, s.tokens_from_content_chunks) {
            (0, 0) => None,
            (_, 0) => Some("usage".into()),
            (0, _) => Some("content_chunks".into()),
            _ => Some("mixed".into()),
        };
        s.request_throughput = per_second(s.completed, d);
        s.output_tokens_per_s = per_second(s.output_tokens, d);
        s.goodput_rate = ratio(s.goodput, counts.requests);
        s
    });
    let mut metrics = BTreeMap::new();
    let mut buckets = BTreeMap::new();
    let mut encoded = BTreeMap::new();
    for m in HistMetric::ALL {
        if m.is_stream() && stream.is_none() {
            continue;
        }
        let h = parts.hists.get(m);
        metrics.insert(m.name().to_string(), Percentiles::of(h, m.unit()));
        if !parts.full {
            continue;
        }
        let empty;
        let h = match h {
            Some(h) => h,
            None => {
                empty = new_hist(SIGNIFICANT_DIGITS);
                &empty
            }
        };
        buckets.insert(m.name().to_string(), buckets_of(h));
        match encode_hist(h) {
            Ok(data) => {
                encoded.insert(
                    m.name().to_string(),
                    EncodedHistogram {
                        unit: m.stored_unit().into(),
                        data,
                    },
                );
            }
            Err(e) => problems.push(format!("histograms.metrics.{}: {e}", m.name())),
        }
    }
    let seconds = parts.series;
    let result = LoadResult {
        schema: SCHEMA.into(),
        scenario: parts.scenario,
        model: parts.model,
        started_at: parts.started_at,
        duration_s: d,
        runs: parts.runs,
        stopped: parts.stopped,
        counts,
        derived,
        metrics,
        buckets,
        histograms: EncodedHistograms {
            encoding: HISTOGRAM_ENCODING.into(),
            significant_digits: SIGNIFICANT_DIGITS,
            metrics: encoded,
        },
        series: Series {
            encoding: HISTOGRAM_ENCODING.into(),
            significant_digits: SERIES_SIGNIFICANT_DIGITS,
            metric: HistMetric::Duration.name().into(),
            unit: HistMetric::Duration.stored_unit().into(),
            seconds,
        },
        stream,
        resources: parts.resources,
        thresholds: Vec::new(),
        shard: None,
        late_start_ms: None,
    };
    (result, problems)
}

/// RFC 3339 (UTC, milliseconds) of `t`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl LoadResult {
    /// Read a result from JSON, refusing more than [`MAX_RESULT_BYTES`], another schema,
    /// another histogram encoding, or histograms that do not decode or disagree with the
    /// counts.
    pub fn from_json_slice(bytes: &[u8]) -> Result<LoadResult, ReadError> {
        if bytes.len() as u64 > MAX_RESULT_BYTES {
            return Err(ReadError::TooLarge {
                size: bytes.len() as u64,
                limit: MAX_RESULT_BYTES,
            });
        }
        // Look at the schema first, so a result of another version says so rather than
        // naming the first field that changed.
        #[derive(Deserialize)]
        struct Head {
            schema: Option<serde_json::Value>,
        }
        let head: Head = serde_json::from_slice(bytes)?;
        match head.schema {
            Some(serde_json::Value::String(s)) if s == SCHEMA => {}
            Some(other) => {
                return Err(ReadError::Invalid {
                    field: "schema".into(),
                    problem: format!("{other} is not \"{SCHEMA}\""),
                });
            }
            None => {
                return Err(ReadError::Invalid {
                    field: "schema".into(),
                    problem: format!("missing (expected \"{SCHEMA}\")"),
                });
            }
        }
        let result: LoadResult = serde_json::from_slice(bytes)?;
        result
            .validate()
            .map_err(|(field, problem)| ReadError::Invalid { field, problem })?;
        Ok(result)
    }

    /// The whole-run histogram of `metric`, decoded (values in [`HistMetric::stored_unit`]);
    /// `None` when the result has none (an interim view, or a stream metric of a non-stream
    /// run).
    pub fn histogram(&self, metric: HistMetric) -> Result<Option<Histogram<u64>>, ReadError> {
        let Some(e) = self.histograms.metrics.get(metric.name()) else {
            return Ok(None);
        };
        decode_hist(&e.data, SIGNIFICANT_DIGITS)
            .map(Some)
            .map_err(|problem| ReadError::Invalid {
                field: format!("histograms.metrics.{}.data", metric.name()),
                problem,
            })
    }

    /// Decode every histogram and check it against the counts: `(field, problem)` on the
    /// first that fails.
    fn validate(&self) -> Result<HistSet, (String, String)> {
        let enc = &self.histograms;
        if enc.encoding != HISTOGRAM_ENCODING {
            return Err((
                "histograms.encoding".into(),
                format!("`{}` is not `{HISTOGRAM_ENCODING}`", enc.encoding),
            ));
        }
        if enc.significant_digits != SIGNIFICANT_DIGITS {
            return Err((
                "histograms.significant_digits".into(),
                format!("{} is not {SIGNIFICANT_DIGITS}", enc.significant_digits),
            ));
        }
        let mut set = HistSet::default();
        for (name, e) in &enc.metrics {
            let field = format!("histograms.metrics.{name}");
            let m = HistMetric::from_name(name)
                .ok_or_else(|| (field.clone(), "unknown metric".to_string()))?;
            if e.unit != m.stored_unit() {
                return Err((
                    format!("{field}.unit"),
                    format!("`{}` is not `{}`", e.unit, m.stored_unit()),
                ));
            }
            let h = decode_hist(&e.data, SIGNIFICANT_DIGITS)
                .map_err(|p| (format!("{field}.data"), p))?;
            set.add_hist(m, &h, SIGNIFICANT_DIGITS);
        }
        let n = set.get(HistMetric::Duration).map_or(0, |h| h.len());
        if n != self.counts.requests {
            let what = if enc.metrics.is_empty() {
                "the result has no histograms (an interim view cannot be merged)".to_string()
            } else {
                format!(
                    "holds {n} values but counts.requests is {}",
                    self.counts.requests
                )
            };
            return Err(("histograms.metrics.http_req_duration".into(), what));
        }
        let series = &self.series;
        if !series.seconds.is_empty() {
            if series.encoding != HISTOGRAM_ENCODING {
                return Err((
                    "series.encoding".into(),
                    format!("`{}` is not `{HISTOGRAM_ENCODING}`", series.encoding),
                ));
            }
            if series.significant_digits != SERIES_SIGNIFICANT_DIGITS {
                return Err((
                    "series.significant_digits".into(),
                    format!(
                        "{} is not {SERIES_SIGNIFICANT_DIGITS}",
                        series.significant_digits
                    ),
                ));
            }
        }
        let mut next_t = 0u64;
        for (i, s) in series.seconds.iter().enumerate() {
            let field = format!("series.seconds[{i}]");
            if s.t < next_t || s.t > MAX_SERIES_SECOND {
                return Err((
                    format!("{field}.t"),
                    format!(
                        "{} is not after the previous second and at most {MAX_SERIES_SECOND}",
                        s.t
                    ),
                ));
            }
            next_t = s.t + 1;
            // Decoded one at a time and dropped: a long series is never all in memory.
            let n = match &s.histogram {
                Some(data) => decode_hist(data, SERIES_SIGNIFICANT_DIGITS)
                    .map_err(|p| (format!("{field}.histogram"), p))?
                    .len(),
                None => 0,
            };
            if n != s.requests {
                return Err((
                    format!("{field}.histogram"),
                    format!("holds {n} values but requests is {}", s.requests),
                ));
            }
            if s.ok > s.requests {
                return Err((
                    format!("{field}.ok"),
                    format!("{} is more than requests ({})", s.ok, s.requests),
                ));
            }
        }
        if self.counts.ok > self.counts.requests {
            return Err((
                "counts.ok".into(),
                format!(
                    "{} is more than counts.requests ({})",
                    self.counts.ok, self.counts.requests
                ),
            ));
        }
        Ok(set)
    }

    /// Merge results of one scenario run by several processes at the same time: histograms
    /// are decoded and added (exact), counters summed, per-second series aligned by the
    /// offset from each run's own start, the duration is the longest run's, the start the
    /// earliest, and every derived figure is recomputed. Thresholds are left empty:
    /// evaluate them again on the merged result.
    pub fn merge(results: &[LoadResult]) -> Result<LoadResult, MergeError> {
        let first = results.first().ok_or(MergeError::Empty)?;
        let mut hists = HistSet::default();
        let mut counts = Counts::default();
        let mut stream: Option<StreamSummary> = None;
        let mut started: Option<(SystemTime, String)> = None;
        let mut duration_s = 0.0f64;
        let mut runs = 0u32;
        let mut models: Vec<&str> = Vec::new();
        let mut stopped: Vec<&str> = Vec::new();
        let mut resources: Vec<&ResourceSummary> = Vec::new();
        for (i, r) in results.iter().enumerate() {
            if r.schema != SCHEMA {
                return Err(invalid(
                    i,
                    "schema",
                    format!("`{}` is not `{SCHEMA}`", r.schema),
                ));
            }
            if r.scenario != first.scenario {
                return Err(invalid(
                    i,
                    "scenario",
                    format!(
                        "`{}` differs from input 1's `{}`: merge results of one scenario",
                        r.scenario, first.scenario
                    ),
                ));
            }
            let set = r.validate().map_err(|(f, p)| invalid(i, f, p))?;
            hists.add(&set, SIGNIFICANT_DIGITS);
            add_counts(&mut counts, &r.counts)
                .map_err(|f| invalid(i, format!("counts.{f}"), "the sum overflows".to_string()))?;
            match (&mut stream, &r.stream) {
                (_, None) => {}
                (None, Some(s)) => stream = Some(s.clone()),
                (Some(mine), Some(s)) => {
                    if mine.goodput_criteria != s.goodput_criteria {
                        return Err(invalid(
                            i,
                            "stream.goodput_criteria",
                            format!(
                                "{:?} differ from the other inputs' {:?}: goodput counts \
                                 different things",
                                s.goodput_criteria, mine.goodput_criteria
                            ),
                        ));
                    }
                    add_stream(mine, s);
                }
            }
            let t = humantime::parse_rfc3339_weak(&r.started_at).map_err(|e| {
                invalid(
                    i,
                    "started_at",
                    format!("`{}` is not an RFC 3339 time ({e})", r.started_at),
                )
            })?;
            if started.as_ref().is_none_or(|(s, _)| t < *s) {
                started = Some((t, r.started_at.clone()));
            }
            if !r.duration_s.is_finite() || r.duration_s < 0.0 {
                return Err(invalid(
                    i,
                    "duration_s",
                    format!("{} is not a duration", r.duration_s),
                ));
            }
            duration_s = duration_s.max(r.duration_s);
            runs = runs.saturating_add(r.runs.max(1));
            if !models.contains(&r.model.as_str()) {
                models.push(&r.model);
            }
            if let Some(s) = &r.stopped {
                if !stopped.contains(&s.as_str()) {
                    stopped.push(s);
                }
            }
            if let Some(res) = &r.resources {
                resources.push(res);
            }
        }
        let series = merge_series(results)?;
        let (result, problems) = build(Parts {
            scenario: first.scenario.clone(),
            model: models.join("; "),
            started_at: started.map(|(_, s)| s).unwrap_or_default(),
            duration_s,
            runs,
            stopped: (!stopped.is_empty()).then(|| stopped.join("; ")),
            counts,
            stream,
            hists,
            series,
            full: true,
            resources: merge_resources(&resources),
        });
        if let Some(p) = problems.into_iter().next() {
            return Err(invalid(results.len() - 1, "merged", p));
        }
        let mut result = result;
        result.late_start_ms = results.iter().filter_map(|r| r.late_start_ms).max();
        Ok(result)
    }

    /// Put the verdicts of `thresholds` into [`LoadResult::thresholds`]; true when all pass.
    pub fn apply_thresholds(&mut self, thresholds: &[crate::slo::Threshold]) -> bool {
        self.thresholds = thresholds.iter().map(|t| t.evaluate(self)).collect();
        self.thresholds.iter().all(|t| t.passed)
    }

    /// One line for consoles: `1200 requests, 99.9 rps, 0.5% errors, p50 12.1ms, p95
    /// 40.2ms, p99 80.3ms`.
    pub fn summary_line(&self) -> String {
        let mut s = format!("{} requests", self.counts.requests);
        if let Some(rps) = self.derived.rps {
            s.push_str(&format!(", {} rps", fmt_value(rps)));
        }
        if let Some(e) = self.derived.error_rate {
            s.push_str(&format!(", {}% errors", fmt_value(e * 100.0)));
        }
        if self.counts.dropped > 0 {
            s.push_str(&format!(", {} dropped", self.counts.dropped));
        }
        if let Some(p) = self.metrics.get(HistMetric::Duration.name()) {
            for (name, v) in [("p50", p.p50), ("p95", p.p95), ("p99", p.p99)] {
                if let Some(v) = v {
                    s.push_str(&format!(", {name} {}ms", fmt_value(v)));
                }
            }
        }
        if let Some(st) = &self.stream {
            if let Some(p) = self
                .metrics
                .get(HistMetric::Ttft.name())
                .and_then(|p| p.p95)
            {
                s.push_str(&format!(", ttft p95 {}ms", fmt_value(p)));
            }
            if let Some(t) = st.output_tokens_per_s {
                s.push_str(&format!(", {} tokens/s", fmt_value(t)));
            }
        }
        s
    }
}

/// The inputs' series added second by second (by offset from each run's start), one
/// second's histograms decoded at a time. Inputs are validated: seconds increase.
fn merge_series(results: &[LoadResult]) -> Result<Vec<SecondPoint>, MergeError> {
    let Some(last) = results
        .iter()
        .filter_map(|r| r.series.seconds.last().map(|s| s.t))
        .max()
    else {
        return Ok(Vec::new());
    };
    let mut cursors = vec![0usize; results.len()];
    let mut h = new_hist(SERIES_SIGNIFICANT_DIGITS);
    let mut out = Vec::with_capacity(usize::try_from(last).unwrap_or(0).saturating_add(1));
    for t in 0..=last {
        let mut c = SecondCounts::default();
        h.reset();
        for (i, r) in results.iter().enumerate() {
            let at = cursors[i];
            let Some(s) = r.series.seconds.get(at).filter(|s| s.t == t) else {
                continue;
            };
            cursors[i] += 1;
            c.requests = c.requests.saturating_add(s.requests);
            c.ok = c.ok.saturating_add(s.ok);
            c.dropped = c.dropped.saturating_add(s.dropped);
            if let Some(data) = &s.histogram {
                let d = decode_hist(data, SERIES_SIGNIFICANT_DIGITS)
                    .map_err(|p| invalid(i, format!("series.seconds[{at}].histogram"), p))?;
                let _ = h.add(&d);
            }
        }
        let point = second_point(t, c, Some(&h), None, true)
            .map_err(|p| invalid(results.len() - 1, format!("series.seconds[{t}]"), p))?;
        out.push(point);
    }
    Ok(out)
}

/// A number with about four significant figures and no trailing zeros.
pub(crate) fn fmt_value(v: f64) -> String {
    let decimals = match v.abs() {
        a if a >= 1000.0 => 0,
        a if a >= 100.0 => 1,
        a if a >= 10.0 => 2,
        _ => 3,
    };
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn add_counts(into: &mut Counts, c: &Counts) -> Result<(), &'static str> {
    let add = |a: &mut u64, b: u64, f: &'static str| -> Result<(), &'static str> {
        *a = a.checked_add(b).ok_or(f)?;
        Ok(())
    };
    add(&mut into.requests, c.requests, "requests")?;
    add(&mut into.ok, c.ok, "ok")?;
    add(&mut into.dropped, c.dropped, "dropped")?;
    into.bytes = into.bytes.saturating_add(c.bytes);
    for (k, v) in &c.errors {
        add(into.errors.entry(k.clone()).or_default(), *v, "errors")?;
    }
    for (k, v) in &c.status {
        add(into.status.entry(k.clone()).or_default(), *v, "status")?;
    }
    Ok(())
}

fn add_stream(into: &mut StreamSummary, s: &StreamSummary) {
    into.streams = into.streams.saturating_add(s.streams);
    into.completed = into.completed.saturating_add(s.completed);
    into.output_tokens = into.output_tokens.saturating_add(s.output_tokens);
    into.tokens_from_usage = into.tokens_from_usage.saturating_add(s.tokens_from_usage);
    into.tokens_from_content_chunks = into
        .tokens_from_content_chunks
        .saturating_add(s.tokens_from_content_chunks);
    into.goodput = into.goodput.saturating_add(s.goodput);
    for (k, v) in &s.ends {
        let e = into.ends.entry(k.clone()).or_default();
        *e = e.saturating_add(*v);
    }
}

/// Several samplers' summaries as one: peaks are the largest, means weighted by samples.
fn merge_resources(list: &[&ResourceSummary]) -> Option<ResourceSummary> {
    match list {
        [] => None,
        [one] => Some((*one).clone()),
        many => {
            let mut sources = BTreeSet::new();
            let mut errors = BTreeSet::new();
            let mut out = ResourceSummary::default();
            let max = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            let mut mem = (0.0, 0u64);
            let mut cpu = (0.0, 0u64);
            for r in many {
                sources.insert(r.source.as_str());
                if let Some(e) = &r.error {
                    errors.insert(e.as_str());
                }
                out.samples = out.samples.saturating_add(r.samples);
                out.memory_mb_peak = max(out.memory_mb_peak, r.memory_mb_peak);
                out.cpu_percent_peak = max(out.cpu_percent_peak, r.cpu_percent_peak);
                let w = r.samples.max(1);
                if let Some(m) = r.memory_mb_mean {
                    mem.0 += m * w as f64;
                    mem.1 += w;
                }
                if let Some(c) = r.cpu_percent_mean {
                    cpu.0 += c * w as f64;
                    cpu.1 += w;
                }
            }
            out.memory_mb_mean = (mem.1 > 0).then(|| mem.0 / mem.1 as f64);
            out.cpu_percent_mean = (cpu.1 > 0).then(|| cpu.0 / cpu.1 as f64);
            out.source = sources.into_iter().collect::<Vec<_>>().join("; ");
            out.error =
                (!errors.is_empty()).then(|| errors.into_iter().collect::<Vec<_>>().join("; "));
            Some(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist_of(values: &[u64], sigfig: u8) -> Hist {
        let mut h = new_hist(sigfig);
        for v in values {
            h.record(*v).unwrap();
        }
        h
    }

    #[test]
    fn encoding_round_trips() {
        let h = hist_of(&[1, 10, 100, 1000, 123_456, 30_000_000], 3);
        let back = decode_hist(&encode_hist(&h).unwrap(), 3).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.len(), 6);
    }

    #[test]
    fn an_empty_histogram_round_trips() {
        let h = new_hist(SIGNIFICANT_DIGITS);
        let back = decode_hist(&encode_hist(&h).unwrap(), SIGNIFICANT_DIGITS).unwrap();
        assert!(back.is_empty());
        assert_eq!(Percentiles::of(Some(&back), "ms").p50, None);
    }

    #[test]
    fn corrupt_encodings_fail_with_a_reason() {
        let good = encode_bytes(&hist_of(&[5, 50, 500], 3)).unwrap();
        assert!(decode_hist("!!!", 3).unwrap_err().contains("base64"));
        assert!(decode_bytes(&good[..10], 3).unwrap_err().contains("header"));
        // A header announcing 4 GiB of payload must not allocate it.
        let mut long = good.clone();
        long[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_bytes(&long, 3).unwrap_err().contains("payload"));
        assert!(
            decode_bytes(&good, 2)
                .unwrap_err()
                .contains("significant digits")
        );
        let mut high = good.clone();
        high[24..32].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(
            decode_bytes(&high, 3)
                .unwrap_err()
                .contains("highest trackable")
        );
        let mut cookie = good.clone();
        cookie[0] ^= 0xff;
        assert!(decode_bytes(&cookie, 3).unwrap_err().contains("V2"));
        // Garbage payload: either rejected or decoded, never a panic.
        for i in V2_HEADER..good.len() {
            let mut g = good.clone();
            g[i] = 0xff;
            let _ = decode_bytes(&g, 3);
        }
    }

    #[test]
    fn percentiles_are_in_milliseconds() {
        let values: Vec<u64> = (1..=1000).map(|ms| ms * 1000).collect();
        let p = Percentiles::of(Some(&hist_of(&values, 3)), "ms");
        assert_eq!(p.count, 1000);
        let p95 = p.p95.unwrap();
        assert!((950.0..=951.0).contains(&p95), "{p95}");
        assert!((1.0..=1.001).contains(&p.min.unwrap()));
        assert!((500.0..=501.0).contains(&p.mean.unwrap()));
        let empty = Percentiles::of(None, "ms");
        assert_eq!((empty.count, empty.p95), (0, None));
    }

    #[test]
    fn buckets_cover_every_value_in_log_steps() {
        let h = hist_of(&[150, 900, 1000, 1100, 20_000], 3);
        let b = buckets_of(&h);
        assert_eq!(b.iter().map(|b| b.count).sum::<u64>(), 5);
        assert_eq!(b.first().unwrap().le, 0.16);
        assert!(b.last().unwrap().le >= 20.0);
        assert!(b.windows(2).all(|w| w[0].le < w[1].le));
        assert!(buckets_of(&new_hist(3)).is_empty());
    }

    #[test]
    fn values_format_compactly() {
        assert_eq!(fmt_value(312.44), "312.4");
        assert_eq!(fmt_value(0.5), "0.5");
        assert_eq!(fmt_value(2000.0), "2000");
        assert_eq!(fmt_value(12.345), "12.35");
    }
}
