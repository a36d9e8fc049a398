//! The recorder: HDR histograms and counters of one worker, flushed once per second into a
//! [`Shared`] per-second series, and merged into a [`LoadResult`] when the run ends.
//!
//! Every worker owns a [`Recorder`] (a [`SampleSink`]), so recording takes no lock. A
//! recorder keeps whole-run histograms (3 significant digits) and the histogram and counters
//! of its current second (2 significant digits). When a sample completes in a later second
//! (by `intended + latency` from the run start), the current second is flushed into
//! [`Shared`] under its mutex: at most a few flushes per worker per second. Memory does not
//! grow with the request count; the per-second series grows with the run's duration (older
//! seconds are kept encoded, a few hundred bytes each).
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, SystemTime};
//! use citadel_itest_load::config::GoodputConfig;
//! use citadel_itest_load::metrics::{finish, Recorder, RunMeta, Shared};
//! use citadel_itest_load::sample::{Sample, SampleSink};
//!
//! let shared = Arc::new(Shared::new(GoodputConfig::default(), false));
//! let mut rec = Recorder::new(shared.clone());
//! for i in 0..100u64 {
//!     let latency = Duration::from_millis(10 + i);
//!     let mut s = Sample::new(Duration::from_millis(i * 10), latency, latency);
//!     s.status = Some(200);
//!     rec.record(&s);
//! }
//! let meta = RunMeta::new("demo", "closed 1 vu for 1s", SystemTime::now(), Duration::from_secs(1));
//! let result = finish(vec![rec], &shared, meta);
//! assert_eq!(result.counts.requests, 100);
//! assert_eq!(result.derived.rps, Some(100.0));
//! ```

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::config::GoodputConfig;
use crate::result::{
    self, Counts, GoodputCriteria, HistMetric, HistSet, LoadResult, MAX_SERIES_SECOND, Parts,
    SERIES_SIGNIFICANT_DIGITS, SIGNIFICANT_DIGITS, SecondCounts, SecondPoint, StreamSummary,
    micros,
};
use crate::sample::{ErrorClass, Sample, SampleSink};

/// Seconds kept as live histograms in [`Shared`]; older ones are encoded.
const LIVE_SECONDS: u64 = 4;
/// Distinct seconds of dropped iterations a recorder keeps before flushing them.
const MAX_PENDING_DROP_SECONDS: usize = 16;

/// Counters of a recorder, a second, or a run.
#[derive(Debug, Clone, Default)]
struct Counters {
    requests: u64,
    ok: u64,
    errors: [u64; ErrorClass::ALL.len()],
    /// `(status, count)`, few distinct statuses in practice.
    status: Vec<(u16, u64)>,
    dropped: u64,
    bytes: u64,
    streams: u64,
    completed: u64,
    output_tokens: u64,
    from_usage: u64,
    from_chunks: u64,
    goodput: u64,
    /// `(end class, count)`.
    ends: Vec<(&'static str, u64)>,
}

fn class_index(c: ErrorClass) -> usize {
    match c {
        ErrorClass::Connect => 0,
        ErrorClass::Timeout => 1,
        ErrorClass::Http4xx => 2,
        ErrorClass::Http5xx => 3,
        ErrorClass::HttpOther => 4,
        ErrorClass::Protocol => 5,
        ErrorClass::Body => 6,
        ErrorClass::Stream => 7,
    }
}

fn bump<K: PartialEq + Copy>(list: &mut Vec<(K, u64)>, key: K, n: u64) {
    match list.iter_mut().find(|(k, _)| *k == key) {
        Some((_, c)) => *c = c.saturating_add(n),
        None => list.push((key, n)),
    }
}

impl Counters {
    fn add(&mut self, o: &Counters) {
        self.requests = self.requests.saturating_add(o.requests);
        self.ok = self.ok.saturating_add(o.ok);
        for (a, b) in self.errors.iter_mut().zip(o.errors) {
            *a = a.saturating_add(b);
        }
        for (k, n) in &o.status {
            bump(&mut self.status, *k, *n);
        }
        self.dropped = self.dropped.saturating_add(o.dropped);
        self.bytes = self.bytes.saturating_add(o.bytes);
        self.streams = self.streams.saturating_add(o.streams);
        self.completed = self.completed.saturating_add(o.completed);
        self.output_tokens = self.output_tokens.saturating_add(o.output_tokens);
        self.from_usage = self.from_usage.saturating_add(o.from_usage);
        self.from_chunks = self.from_chunks.saturating_add(o.from_chunks);
        self.goodput = self.goodput.saturating_add(o.goodput);
        for (k, n) in &o.ends {
            bump(&mut self.ends, *k, *n);
        }
    }

    /// Zero, keeping the lists' memory.
    fn clear(&mut self) {
        let mut status = std::mem::take(&mut self.status);
        let mut ends = std::mem::take(&mut self.ends);
        status.clear();
        ends.clear();
        *self = Counters {
            status,
            ends,
            ..Counters::default()
        };
    }

    fn counts(&self) -> Counts {
        let mut c = Counts {
            requests: self.requests,
            ok: self.ok,
            dropped: self.dropped,
            bytes: self.bytes,
            ..Counts::default()
        };
        for (class, n) in ErrorClass::ALL.iter().zip(self.errors) {
            if n > 0 {
                c.errors.insert(class.as_str().to_string(), n);
            }
        }
        for (status, n) in &self.status {
            c.status.insert(status.to_string(), *n);
        }
        c
    }

    fn stream(&self, goodput: &GoodputConfig) -> StreamSummary {
        StreamSummary {
            streams: self.streams,
            completed: self.completed,
            output_tokens: self.output_tokens,
            tokens_from_usage: self.from_usage,
            tokens_from_content_chunks: self.from_chunks,
            ends: self.ends.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
            goodput: self.goodput,
            goodput_criteria: GoodputCriteria::from(goodput),
            ..StreamSummary::default()
        }
    }
}

/// Counters and histograms at one precision.
#[derive(Debug, Clone)]
struct Acc {
    sigfig: u8,
    c: Counters,
    h: HistSet,
}

impl Acc {
    fn new(sigfig: u8) -> Acc {
        Acc {
            sigfig,
            c: Counters::default(),
            h: HistSet::default(),
        }
    }

    #[inline]
    fn record(&mut self, s: &Sample, goodput: &GoodputConfig) {
        let c = &mut self.c;
        c.requests = c.requests.saturating_add(1);
        match s.error {
            None => c.ok = c.ok.saturating_add(1),
            Some(e) => {
                let i = class_index(e);
                c.errors[i] = c.errors[i].saturating_add(1);
            }
        }
        if let Some(status) = s.status {
            bump(&mut c.status, status, 1);
        }
        c.bytes = c.bytes.saturating_add(s.bytes);
        let sig = self.sigfig;
        self.h.record(HistMetric::Duration, micros(s.latency), sig);
        self.h.record(HistMetric::Service, micros(s.service), sig);
        let Some(st) = &s.stream else {
            return;
        };
        c.streams = c.streams.saturating_add(1);
        bump(&mut c.ends, st.end, 1);
        if !s.is_ok() {
            return;
        }
        c.completed = c.completed.saturating_add(1);
        c.output_tokens = c.output_tokens.saturating_add(st.output_tokens);
        if st.tokens_from_usage {
            c.from_usage = c.from_usage.saturating_add(1);
        } else {
            c.from_chunks = c.from_chunks.saturating_add(1);
        }
        if goodput.admits(st) {
            c.goodput = c.goodput.saturating_add(1);
        }
        if let Some(t) = st.ttft {
            self.h.record(HistMetric::Ttft, micros(t), sig);
        }
        for gap in &st.itl {
            self.h.record(HistMetric::Itl, micros(*gap), sig);
        }
        if let Some(t) = st.tpot() {
            self.h.record(HistMetric::Tpot, micros(t), sig);
        }
        self.h.record(HistMetric::E2e, micros(st.e2e), sig);
        if let Some(tps) = st.tokens_per_second() {
            let milli = (tps * 1000.0).round();
            let milli = if milli.is_finite() && milli > 0.0 {
                milli as u64
            } else {
                0
            };
            self.h.record(HistMetric::OutputTps, milli, sig);
        }
    }

    fn add(&mut self, o: &Acc) {
        self.c.add(&o.c);
        self.h.add(&o.h, self.sigfig);
    }

    fn clear(&mut self) {
        self.c.clear();
        self.h.reset();
    }

    fn is_empty(&self) -> bool {
        self.c.requests == 0 && self.c.dropped == 0
    }
}

/// What the run's recorders have flushed so far: the per-second series and a running total
/// for live progress and abort-on-fail. Share it in an [`Arc`] between the recorders of one
/// run.
#[derive(Debug)]
pub struct Shared {
    goodput: GoodputConfig,
    stream: bool,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    seconds: Vec<Slot>,
    /// Seconds below this are encoded.
    sealed_below: u64,
    /// Everything flushed so far (2 significant digits).
    running: Acc,
}

impl Inner {
    /// The slot of second `t` (clamped to [`MAX_SERIES_SECOND`]), made when missing.
    fn slot(&mut self, t: u64) -> &mut Slot {
        let i = t.min(MAX_SERIES_SECOND) as usize;
        if self.seconds.len() <= i {
            self.seconds.resize_with(i + 1, Slot::default);
        }
        &mut self.seconds[i]
    }
}

#[derive(Debug, Default)]
struct Slot {
    requests: u64,
    ok: u64,
    dropped: u64,
    hist: SlotHist,
}

impl Slot {
    /// Second `t` as reported (with its encoded histogram when `full`).
    fn point(&self, t: u64, full: bool) -> Result<SecondPoint, String> {
        let c = SecondCounts {
            requests: self.requests,
            ok: self.ok,
            dropped: self.dropped,
        };
        match &self.hist {
            SlotHist::Empty => result::second_point(t, c, None, None, full),
            SlotHist::Live(h) => result::second_point(t, c, Some(h), None, full),
            SlotHist::Sealed(bytes) => {
                let h = result::decode_bytes(bytes, SERIES_SIGNIFICANT_DIGITS)?;
                let encoded = full.then(|| result::base64_of(bytes));
                result::second_point(t, c, Some(&h), encoded, full)
            }
        }
    }
}

#[derive(Debug, Default)]
enum SlotHist {
    #[default]
    Empty,
    Live(result::Hist),
    /// V2 bytes.
    Sealed(Vec<u8>),
}

impl SlotHist {
    fn decoded(&self) -> Option<result::Hist> {
        match self {
            SlotHist::Empty => None,
            SlotHist::Live(h) => Some(h.clone()),
            SlotHist::Sealed(b) => result::decode_bytes(b, SERIES_SIGNIFICANT_DIGITS).ok(),
        }
    }

    fn add(&mut self, h: &result::Hist) {
        if h.is_empty() {
            return;
        }
        match self {
            SlotHist::Empty => *self = SlotHist::Live(h.clone()),
            SlotHist::Live(mine) => {
                let _ = mine.add(h);
            }
            SlotHist::Sealed(_) => {
                // A late flush (a worker idle since then): decode, add, encode again.
                let mut mine = self
                    .decoded()
                    .unwrap_or_else(|| result::new_hist(SERIES_SIGNIFICANT_DIGITS));
                let _ = mine.add(h);
                *self = SlotHist::Live(mine);
                self.seal();
            }
        }
    }

    fn seal(&mut self) {
        if let SlotHist::Live(h) = self {
            if let Ok(bytes) = result::encode_bytes(h) {
                *self = SlotHist::Sealed(bytes);
            }
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            SlotHist::Empty => 0,
            SlotHist::Live(h) => h.distinct_values() * 8,
            SlotHist::Sealed(b) => b.capacity(),
        }
    }
}

/// What [`finish`] needs besides the recorders.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunMeta {
    /// The scenario's name.
    pub scenario: String,
    /// The model, e.g. `open 20/s for 5s`.
    pub model: String,
    /// When the run started.
    pub started_at: SystemTime,
    /// How long it ran.
    pub elapsed: Duration,
    /// Why it stopped early (cancelled, aborted by a threshold), if it did.
    pub stopped: Option<String>,
}

impl RunMeta {
    /// A run that went to the end of its schedule.
    pub fn new(
        scenario: impl Into<String>,
        model: impl Into<String>,
        started_at: SystemTime,
        elapsed: Duration,
    ) -> Self {
        RunMeta {
            scenario: scenario.into(),
            model: model.into(),
            started_at,
            elapsed,
            stopped: None,
        }
    }

    /// The run stopped early, for this reason.
    pub fn stopped(mut self, reason: impl Into<String>) -> Self {
        self.stopped = Some(reason.into());
        self
    }
}

impl Shared {
    /// The shared state of one run: `goodput` bounds for streams; `stream` when the
    /// scenario's answers are streams (the result then has a stream section even when no
    /// stream arrived).
    pub fn new(goodput: GoodputConfig, stream: bool) -> Self {
        Shared {
            goodput,
            stream,
            inner: Mutex::new(Inner {
                seconds: Vec::new(),
                sealed_below: 0,
                running: Acc::new(SERIES_SIGNIFICANT_DIGITS),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves counters that are still consistent enough
        // to report; never propagate it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Add one recorder's second `t`.
    fn absorb(&self, t: u64, acc: &Acc, drops: &[(u64, u64)]) {
        let mut inner = self.lock();
        inner.running.add(acc);
        for (t, n) in drops {
            inner.running.c.dropped = inner.running.c.dropped.saturating_add(*n);
            let slot = inner.slot(*t);
            slot.dropped = slot.dropped.saturating_add(*n);
        }
        if acc.is_empty() {
            return;
        }
        let t = t.min(MAX_SERIES_SECOND);
        let slot = inner.slot(t);
        slot.requests = slot.requests.saturating_add(acc.c.requests);
        slot.ok = slot.ok.saturating_add(acc.c.ok);
        if let Some(h) = acc.h.get(HistMetric::Duration) {
            slot.hist.add(h);
        }
        let horizon = t.saturating_sub(LIVE_SECONDS);
        if horizon > inner.sealed_below {
            let from = inner.sealed_below as usize;
            for slot in &mut inner.seconds[from..horizon as usize] {
                slot.hist.seal();
            }
            inner.sealed_below = horizon;
        }
    }

    /// The series, one second decoded at a time (a sealed second reuses its encoding).
    fn series(&self, problems: &mut Vec<String>) -> Vec<SecondPoint> {
        let inner = self.lock();
        let mut out = Vec::with_capacity(inner.seconds.len());
        for (t, s) in inner.seconds.iter().enumerate() {
            match s.point(t as u64, true) {
                Ok(p) => out.push(p),
                Err(e) => problems.push(format!("series.seconds[{t}].histogram: {e}")),
            }
        }
        out
    }

    fn stream_section(&self, c: &Counters) -> Option<StreamSummary> {
        (self.stream || c.streams > 0).then(|| c.stream(&self.goodput))
    }

    /// What has been flushed so far, for live progress and abort-on-fail: counts, derived
    /// figures, percentile tables (2 significant digits) and the stream section, with
    /// `series.seconds` holding only the last complete second and no encoded histograms or
    /// buckets. Each recorder flushes a second when it records a sample of a later one, so
    /// the "last complete second" is the last one that ended at least half a second before
    /// `elapsed` (second 1 from 2.5 s to 3.5 s), and a worker waiting on a slow answer has
    /// not flushed yet.
    pub fn interim(&self, elapsed: Duration) -> LoadResult {
        let inner = self.lock();
        let last = last_complete(elapsed)
            .and_then(|t| inner.seconds.get(t as usize)?.point(t, false).ok());
        let c = &inner.running.c;
        let started = SystemTime::now()
            .checked_sub(elapsed)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let (result, _) = result::build(Parts {
            scenario: String::new(),
            model: String::new(),
            started_at: result::rfc3339(started),
            duration_s: elapsed.as_secs_f64(),
            runs: 1,
            stopped: None,
            counts: c.counts(),
            stream: self.stream_section(c),
            hists: inner.running.h.clone(),
            series: last.into_iter().collect(),
            full: false,
            resources: None,
        });
        result
    }

    /// Heap bytes held by the series and the running totals (for measurements).
    pub fn heap_bytes(&self) -> usize {
        let inner = self.lock();
        inner.running.h.heap_bytes()
            + inner.seconds.capacity() * std::mem::size_of::<Slot>()
            + inner
                .seconds
                .iter()
                .map(|s| s.hist.heap_bytes())
                .sum::<usize>()
    }
}

/// The last second of the series that ended at least half a second before `elapsed`.
fn last_complete(elapsed: Duration) -> Option<u64> {
    elapsed
        .checked_sub(Duration::from_millis(500))?
        .as_secs()
        .checked_sub(1)
}

/// The metrics of one worker. Create one per worker with [`Recorder::new`]; record with
/// [`SampleSink`]; give them all to [`finish`] when the run ends.
#[derive(Debug)]
pub struct Recorder {
    shared: Arc<Shared>,
    total: Acc,
    second: Acc,
    second_t: u64,
    /// Dropped iterations not flushed yet, by the second of their intended time (which is
    /// `max_lag` or more behind the current second, so they are kept apart).
    drops: Vec<(u64, u64)>,
}

impl Recorder {
    /// A recorder flushing into `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Recorder {
            shared,
            total: Acc::new(SIGNIFICANT_DIGITS),
            second: Acc::new(SERIES_SIGNIFICANT_DIGITS),
            second_t: 0,
            drops: Vec::new(),
        }
    }

    /// Move to second `t`, flushing the current one when it differs.
    #[inline]
    fn at_second(&mut self, t: u64) {
        if t != self.second_t {
            self.flush();
            self.second_t = t;
        }
    }

    /// Put the current second into the shared series.
    pub fn flush(&mut self) {
        if !self.second.is_empty() || !self.drops.is_empty() {
            self.shared.absorb(self.second_t, &self.second, &self.drops);
            self.second.clear();
            self.drops.clear();
        }
    }

    /// Add `other`'s counters and histograms to this recorder (flushing `other`'s current
    /// second into its shared series first).
    pub fn merge(&mut self, mut other: Recorder) {
        other.flush();
        self.total.add(&other.total);
    }

    /// Heap bytes held by this recorder's histograms (for measurements).
    pub fn heap_bytes(&self) -> usize {
        self.total.h.heap_bytes() + self.second.h.heap_bytes()
    }
}

impl SampleSink for Recorder {
    #[inline]
    fn record(&mut self, sample: &Sample) {
        let done = sample.intended.saturating_add(sample.latency).as_secs();
        self.at_second(done);
        self.total.record(sample, &self.shared.goodput);
        self.second.record(sample, &self.shared.goodput);
    }

    fn dropped(&mut self, intended: Duration) {
        self.total.c.dropped = self.total.c.dropped.saturating_add(1);
        bump(&mut self.drops, intended.as_secs(), 1);
        if self.drops.len() >= MAX_PENDING_DROP_SECONDS {
            self.flush();
        }
    }
}

/// The result of a run: flushes every recorder into `shared` (which must be the one they
/// were made with), merges their histograms and counters, and reads the per-second series.
/// Thresholds and resources are left empty for the caller to fill.
pub fn finish(recorders: Vec<Recorder>, shared: &Shared, meta: RunMeta) -> LoadResult {
    let mut total = Acc::new(SIGNIFICANT_DIGITS);
    for mut r in recorders {
        r.flush();
        total.add(&r.total);
    }
    let mut problems = Vec::new();
    let series = shared.series(&mut problems);
    let (result, more) = result::build(Parts {
        scenario: meta.scenario,
        model: meta.model,
        started_at: result::rfc3339(meta.started_at),
        duration_s: meta.elapsed.as_secs_f64(),
        runs: 1,
        stopped: meta.stopped,
        counts: total.c.counts(),
        stream: shared.stream_section(&total.c),
        hists: total.h,
        series,
        full: true,
        resources: None,
    });
    for p in problems.into_iter().chain(more) {
        tracing::warn!("load result: {p}");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::StreamSample;

    fn ok(at_ms: u64, latency_ms: u64) -> Sample {
        let l = Duration::from_millis(latency_ms);
        let mut s = Sample::new(Duration::from_millis(at_ms), l, l);
        s.status = Some(200);
        s.bytes = 10;
        s
    }

    #[test]
    fn counts_errors_statuses_and_seconds() {
        let shared = Arc::new(Shared::new(GoodputConfig::default(), false));
        let mut r = Recorder::new(shared.clone());
        r.record(&ok(0, 10));
        r.record(&ok(500, 20));
        let mut bad = ok(1200, 5);
        bad.status = Some(503);
        bad.error = Some(ErrorClass::Http5xx);
        r.record(&bad);
        r.dropped(Duration::from_millis(2500));
        let res = finish(
            vec![r],
            &shared,
            RunMeta::new("s", "m", SystemTime::UNIX_EPOCH, Duration::from_secs(3)),
        );
        assert_eq!(res.counts.requests, 3);
        assert_eq!(res.counts.ok, 2);
        assert_eq!(res.counts.errors.get("http_5xx"), Some(&1));
        assert_eq!(res.counts.status.get("503"), Some(&1));
        assert_eq!(res.counts.status.get("200"), Some(&2));
        assert_eq!(res.counts.dropped, 1);
        assert_eq!(res.counts.bytes, 30);
        assert_eq!(res.started_at, "1970-01-01T00:00:00.000Z");
        let secs: Vec<(u64, u64, u64, u64)> = res
            .series
            .seconds
            .iter()
            .map(|s| (s.t, s.requests, s.errors, s.dropped))
            .collect();
        assert_eq!(secs, vec![(0, 2, 0, 0), (1, 1, 1, 0), (2, 0, 0, 1)]);
        assert!(res.stream.is_none());
        assert!(!res.metrics.contains_key("ttft"));
        let e = res.derived.error_rate.unwrap();
        assert!((e - 1.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn stream_metrics_come_from_completed_streams() {
        let goodput = GoodputConfig {
            ttft: Some(Duration::from_millis(100)),
            ..GoodputConfig::default()
        };
        let shared = Arc::new(Shared::new(goodput, true));
        let mut r = Recorder::new(shared.clone());
        let stream = |ttft: u64, end: &'static str, usage: bool| StreamSample {
            ttft: Some(Duration::from_millis(ttft)),
            itl: vec![Duration::from_millis(10); 4],
            e2e: Duration::from_millis(ttft + 40),
            output_tokens: 5,
            tokens_from_usage: usage,
            end,
        };
        let mut a = ok(0, 100);
        a.stream = Some(stream(50, "done", true));
        let mut b = ok(0, 300);
        b.stream = Some(stream(250, "done", false));
        let mut c = ok(0, 100);
        c.stream = Some(stream(60, "cut off", true));
        c.error = Some(ErrorClass::Stream);
        for s in [&a, &b, &c] {
            r.record(s);
        }
        let res = finish(
            vec![r],
            &shared,
            RunMeta::new("s", "m", SystemTime::UNIX_EPOCH, Duration::from_secs(1)),
        );
        let st = res.stream.as_ref().unwrap();
        assert_eq!((st.streams, st.completed, st.goodput), (3, 2, 1));
        assert_eq!(st.output_tokens, 10);
        assert_eq!(st.token_source.as_deref(), Some("mixed"));
        assert_eq!(st.ends.get("cut off"), Some(&1));
        assert_eq!(st.output_tokens_per_s, Some(10.0));
        assert!((st.goodput_rate.unwrap() - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(res.metrics["ttft"].count, 2);
        assert_eq!(res.metrics["itl"].count, 8);
        assert_eq!(res.metrics["tpot"].count, 2);
        assert_eq!(res.metrics["e2e"].count, 2);
        // 5 tokens in 90 ms and in 290 ms.
        let tps = &res.metrics["output_tps"];
        assert!((tps.max.unwrap() - 55.555).abs() < 0.1, "{tps:?}");
    }

    #[test]
    fn interim_shows_what_was_flushed() {
        let shared = Arc::new(Shared::new(GoodputConfig::default(), false));
        let mut r = Recorder::new(shared.clone());
        for i in 0..10 {
            r.record(&ok(i * 100, 10));
        }
        // Still in second 0: nothing flushed.
        assert_eq!(shared.interim(Duration::from_secs(1)).counts.requests, 0);
        r.record(&ok(1000, 10));
        assert!(
            shared
                .interim(Duration::from_secs(1))
                .series
                .seconds
                .is_empty()
        );
        let live = shared.interim(Duration::from_millis(2000));
        assert_eq!(live.counts.requests, 10);
        assert_eq!(live.derived.rps, Some(5.0));
        assert_eq!(live.series.seconds.len(), 1);
        assert_eq!(live.series.seconds[0].t, 0);
        assert_eq!(live.series.seconds[0].requests, 10);
        // Second 1 is not flushed yet: nothing to show for it at 2.5 s.
        let later = shared.interim(Duration::from_millis(2500));
        assert!(later.series.seconds.is_empty());
        let p95 = live.metrics["http_req_duration"].p95.unwrap();
        assert!((10.0..10.1).contains(&p95), "{p95}");
        assert!(live.histograms.metrics.is_empty());
    }

    #[test]
    fn old_seconds_are_sealed_and_late_flushes_still_count() {
        let shared = Arc::new(Shared::new(GoodputConfig::default(), false));
        let mut slow = Recorder::new(shared.clone());
        let mut fast = Recorder::new(shared.clone());
        slow.record(&ok(0, 10));
        for t in 0..20 {
            fast.record(&ok(t * 1000, 10));
        }
        // `slow` flushes second 0 long after it was sealed.
        slow.record(&ok(19_000, 10));
        let res = finish(
            vec![slow, fast],
            &shared,
            RunMeta::new("s", "m", SystemTime::UNIX_EPOCH, Duration::from_secs(20)),
        );
        assert_eq!(res.series.seconds.len(), 20);
        assert_eq!(res.series.seconds[0].requests, 2);
        assert_eq!(res.series.seconds[19].requests, 2);
        assert!(res.series.seconds.iter().all(|s| s.histogram.is_some()));
    }

    #[test]
    fn dropped_iterations_wait_for_the_next_flush_in_their_own_second() {
        let shared = Arc::new(Shared::new(GoodputConfig::default(), false));
        let mut r = Recorder::new(shared.clone());
        r.record(&ok(10_000, 10));
        for _ in 0..5 {
            r.dropped(Duration::from_millis(3_500));
        }
        // No flush yet: the current second (10) has not changed.
        assert_eq!(shared.interim(Duration::from_secs(11)).counts.dropped, 0);
        r.record(&ok(11_000, 10));
        let live = shared.interim(Duration::from_secs(12));
        assert_eq!((live.counts.dropped, live.counts.requests), (5, 1));
        let res = finish(
            vec![r],
            &shared,
            RunMeta::new("s", "m", SystemTime::UNIX_EPOCH, Duration::from_secs(12)),
        );
        assert_eq!(res.counts.dropped, 5);
        assert_eq!(res.series.seconds[3].dropped, 5);
        assert_eq!(res.series.seconds[3].requests, 0);
        assert_eq!(res.series.seconds[10].requests, 1);
    }

    #[test]
    fn the_last_complete_second_ended_half_a_second_ago() {
        let at = |ms| last_complete(Duration::from_millis(ms));
        assert_eq!(at(0), None);
        assert_eq!(at(1499), None);
        assert_eq!(at(1500), Some(0));
        assert_eq!(at(2499), Some(0));
        assert_eq!(at(2500), Some(1));
    }

    #[test]
    fn recorder_memory_is_constant_in_the_request_count() {
        let shared = Arc::new(Shared::new(GoodputConfig::default(), false));
        let mut r = Recorder::new(shared.clone());
        for i in 0..1000u64 {
            r.record(&ok(i, 1 + i % 500));
        }
        let after_1k = r.heap_bytes();
        for i in 0..100_000u64 {
            r.record(&ok(1000 + i / 100, 1 + i % 500));
        }
        assert_eq!(r.heap_bytes(), after_1k);
    }
}
