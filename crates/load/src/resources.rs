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

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use citadel_itest_core::config::redact_url;
use citadel_itest_core::http::{BodyLimit, read_body};
use tokio_util::sync::CancellationToken;

use crate::config::ResourcesConfig;

/// Linux's user-visible clock tick (`USER_HZ`), in which `/proc/<pid>/stat` counts CPU time.
/// It is 100 on every Linux architecture's user ABI.
const USER_HZ: f64 = 100.0;

/// Largest `/proc` file or metrics page read.
const MAX_READ: usize = 4 * 1024 * 1024;

/// One reading: cumulative CPU seconds and resident bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// CPU time used so far (user + system), seconds.
    pub cpu_seconds: f64,
    /// Resident memory, bytes.
    pub resident_bytes: f64,
}

/// Why a reading could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResourceError {
    /// The process is not there (never was, or exited).
    #[error("process {pid} not found ({path}): {source}")]
    NoProcess {
        /// The pid.
        pid: u32,
        /// The file that could not be read.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The pid file could not be read or does not hold a pid.
    #[error("pid file {path}: {message}")]
    PidFile {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The process has exited but was not reaped yet (a zombie): it uses no memory any more.
    #[error("process {pid} exited (a zombie not yet reaped by its parent)")]
    Exited {
        /// The pid.
        pid: u32,
    },
    /// A `/proc` file or the metrics page did not have the expected shape.
    #[error("{source_name}: {message}")]
    Shape {
        /// Where it was read from.
        source_name: String,
        /// What is wrong.
        message: String,
    },
    /// The metrics endpoint could not be read.
    #[error("{url}: {message}")]
    Scrape {
        /// The URL (redacted).
        url: String,
        /// What happened.
        message: String,
    },
}

/// Where readings come from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Probe {
    /// A local process, through `/proc/<pid>`.
    Pid(u32),
    /// A Prometheus metrics endpoint.
    Metrics {
        /// The URL.
        url: String,
        /// The client.
        client: reqwest::Client,
    },
}

impl Probe {
    /// The probe `config` describes; a pid file is read now.
    pub fn from_config(config: &ResourcesConfig) -> Result<Probe, ResourceError> {
        if let Some(pid) = config.pid {
            return Ok(Probe::Pid(pid));
        }
        if let Some(path) = &config.pid_file {
            return read_pid_file(path).map(Probe::Pid);
        }
        match &config.metrics_url {
            Some(url) => Ok(Probe::Metrics {
                url: url.clone(),
                client: reqwest::Client::builder()
                    .timeout(config.interval.max(Duration::from_secs(1)))
                    .build()
                    .map_err(|e| ResourceError::Scrape {
                        url: redact_url(url),
                        message: format!("cannot build an HTTP client: {e}"),
                    })?,
            }),
            None => Err(ResourceError::Shape {
                source_name: "resources".into(),
                message: "give one of `pid`, `pid_file`, `metrics_url`".into(),
            }),
        }
    }

    /// What it samples, for reports: `pid 1234` or the redacted URL.
    pub fn describe(&self) -> String {
        match self {
            Probe::Pid(pid) => format!("pid {pid}"),
            Probe::Metrics { url, .. } => redact_url(url),
        }
    }

    /// Take one reading, bounded by `within`.
    pub async fn read(&self, within: Duration) -> Result<Reading, ResourceError> {
        match self {
            Probe::Pid(pid) => read_proc(*pid),
            Probe::Metrics { url, client } => scrape(client, url, within).await,
        }
    }
}

fn read_pid_file(path: &Path) -> Result<u32, ResourceError> {
    let fail = |message: String| ResourceError::PidFile {
        path: path.display().to_string(),
        message,
    };
    let text =
        citadel_itest_core::config::read_input_text(path, 64).map_err(|e| fail(e.to_string()))?;
    match text.trim().parse::<u32>() {
        Ok(pid) if pid > 0 => Ok(pid),
        _ => Err(fail(format!(
            "`{}` is not a process id",
            citadel_itest_core::http::excerpt(text.trim().as_bytes())
        ))),
    }
}

/// Read `/proc/<pid>/stat` (CPU) and `/proc/<pid>/status` (`VmRSS`).
pub fn read_proc(pid: u32) -> Result<Reading, ResourceError> {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|source| ResourceError::NoProcess {
            pid,
            path: path.display().to_string(),
            source,
        })
    };
    let stat = read("stat")?;
    let status = read("status")?;
    let shape = |message: String| ResourceError::Shape {
        source_name: format!("/proc/{pid}"),
        message,
    };
    // The command name (field 2) is in parentheses and may hold spaces or `)`: split after
    // the last `)`. Fields 14 and 15 (utime, stime) are then the 12th and 13th.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| shape("stat has no `(comm)` field".into()))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize, name: &str| -> Result<f64, ResourceError> {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .map(|t| t as f64)
            .ok_or_else(|| shape(format!("stat field {name} is missing or not a number")))
    };
    let cpu_seconds = (ticks(11, "utime")? + ticks(12, "stime")?) / USER_HZ;
    let zombie = status
        .lines()
        .find_map(|l| l.strip_prefix("State:"))
        .is_some_and(|state| matches!(state.trim().chars().next(), Some('Z' | 'X')));
    if zombie {
        return Err(ResourceError::Exited { pid });
    }
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .ok_or_else(|| shape("status has no VmRSS line (a zombie or kernel thread?)".into()))?;
    let kb: f64 = rss_kb
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .map_err(|_| shape(format!("VmRSS `{}` is not a number of kB", rss_kb.trim())))?;
    Ok(Reading {
        cpu_seconds,
        resident_bytes: kb * 1024.0,
    })
}

async fn scrape(
    client: &reqwest::Client,
    url: &str,
    within: Duration,
) -> Result<Reading, ResourceError> {
    let shown = redact_url(url);
    let fail = |message: String| ResourceError::Scrape {
        url: shown.clone(),
        message,
    };
    let response = tokio::time::timeout(within, client.get(url).send())
        .await
        .map_err(|_| {
            fail(format!(
                "no answer within {}",
                humantime::format_duration(within)
            ))
        })?
        .map_err(|e| fail(citadel_itest_core::error_chain(&e.without_url())))?;
    let status = response.status();
    let body = read_body(response, &BodyLimit::within(within).max_bytes(MAX_READ))
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !status.is_success() {
        return Err(fail(format!(
            "status {status}: {}",
            citadel_itest_core::http::excerpt(&body)
        )));
    }
    let text = std::str::from_utf8(&body).map_err(|_| fail("the page is not UTF-8".into()))?;
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines)
        .map_err(|e| fail(format!("not the Prometheus text format: {e}")))?;
    let find = |name: &str| {
        let mut found = scrape.samples.iter().filter(|s| s.metric == name);
        let first = found.next()?;
        if found.next().is_some() {
            return None;
        }
        match first.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v)
                if v.is_finite() && v >= 0.0 =>
            {
                Some(v)
            }
            _ => None,
        }
    };
    let missing = |name: &str| ResourceError::Shape {
        source_name: shown.clone(),
        message: format!(
            "no single finite `{name}` sample (is it a process exporting the standard \
                 process metrics?)"
        ),
    };
    let cpu_seconds =
        find("process_cpu_seconds_total").ok_or_else(|| missing("process_cpu_seconds_total"))?;
    let resident_bytes = find("process_resident_memory_bytes")
        .ok_or_else(|| missing("process_resident_memory_bytes"))?;
    Ok(Reading {
        cpu_seconds,
        resident_bytes,
    })
}

/// Accumulates readings into a [`ResourceSummary`].
#[derive(Debug)]
pub struct Accumulator {
    source: String,
    last: Option<(Instant, Reading)>,
    first: Option<(Instant, Reading)>,
    samples: u64,
    memory_sum: f64,
    memory_peak: f64,
    cpu_peak: Option<f64>,
    error: Option<String>,
}

const MIB: f64 = 1024.0 * 1024.0;

impl Accumulator {
    /// An empty accumulator for `source`.
    pub fn new(source: impl Into<String>) -> Self {
        Accumulator {
            source: source.into(),
            last: None,
            first: None,
            samples: 0,
            memory_sum: 0.0,
            memory_peak: 0.0,
            cpu_peak: None,
            error: None,
        }
    }

    /// Add a reading taken at `at`.
    pub fn add(&mut self, at: Instant, r: Reading) {
        self.samples += 1;
        self.memory_sum += r.resident_bytes;
        self.memory_peak = self.memory_peak.max(r.resident_bytes);
        if let Some((t0, r0)) = self.last {
            let wall = at.saturating_duration_since(t0).as_secs_f64();
            if wall > 0.0 {
                let pct = ((r.cpu_seconds - r0.cpu_seconds).max(0.0) / wall) * 100.0;
                self.cpu_peak = Some(self.cpu_peak.map_or(pct, |p: f64| p.max(pct)));
            }
        }
        if self.first.is_none() {
            self.first = Some((at, r));
        }
        self.last = Some((at, r));
    }

    /// Record why sampling stopped (the first reason is kept).
    pub fn fail(&mut self, message: impl Into<String>) {
        if self.error.is_none() {
            self.error = Some(message.into());
        }
    }

    /// The summary so far.
    pub fn summary(&self) -> ResourceSummary {
        let cpu_mean = match (self.first, self.last) {
            (Some((t0, r0)), Some((t1, r1))) => {
                let wall = t1.saturating_duration_since(t0).as_secs_f64();
                (wall > 0.0).then(|| ((r1.cpu_seconds - r0.cpu_seconds).max(0.0) / wall) * 100.0)
            }
            _ => None,
        };
        ResourceSummary {
            source: self.source.clone(),
            samples: self.samples,
            memory_mb_peak: (self.samples > 0).then(|| self.memory_peak / MIB),
            memory_mb_mean: (self.samples > 0).then(|| self.memory_sum / self.samples as f64 / MIB),
            cpu_percent_peak: self.cpu_peak,
            cpu_percent_mean: cpu_mean,
            error: self.error.clone(),
        }
    }
}

/// Sample `probe` every `interval` until `stop` is cancelled; the first reading is taken at
/// once and a last one when stopped, so even a short run has a CPU figure.
pub async fn sample(probe: Probe, interval: Duration, stop: CancellationToken) -> ResourceSummary {
    let mut acc = Accumulator::new(probe.describe());
    let bound = interval.max(Duration::from_millis(500));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = ticker.tick() => false,
            _ = stop.cancelled() => true,
        };
        match probe.read(bound).await {
            Ok(r) => acc.add(Instant::now(), r),
            Err(e) => {
                acc.fail(format!("after {} sample(s): {e}", acc.samples));
                return acc.summary();
            }
        }
        if stopping {
            return acc.summary();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_reads_and_accumulates() {
        let pid = std::process::id();
        let r = read_proc(pid).unwrap();
        assert!(r.resident_bytes > 1024.0 * 1024.0, "{r:?}");
        let mut acc = Accumulator::new(format!("pid {pid}"));
        let t0 = Instant::now();
        acc.add(
            t0,
            Reading {
                cpu_seconds: 1.0,
                resident_bytes: 100.0 * MIB,
            },
        );
        acc.add(
            t0 + Duration::from_secs(1),
            Reading {
                cpu_seconds: 1.5,
                resident_bytes: 300.0 * MIB,
            },
        );
        acc.add(
            t0 + Duration::from_secs(2),
            Reading {
                cpu_seconds: 1.6,
                resident_bytes: 200.0 * MIB,
            },
        );
        let s = acc.summary();
        assert_eq!(s.samples, 3);
        assert_eq!(s.memory_mb_peak, Some(300.0));
        assert_eq!(s.memory_mb_mean, Some(200.0));
        assert!((s.cpu_percent_peak.unwrap() - 50.0).abs() < 1e-9);
        assert!((s.cpu_percent_mean.unwrap() - 30.0).abs() < 1e-9);
    }

    #[test]
    fn a_missing_process_is_named() {
        let e = read_proc(u32::MAX - 1).unwrap_err().to_string();
        assert!(e.contains("process 4294967294 not found"), "{e}");
    }

    #[test]
    fn a_bad_pid_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pid");
        std::fs::write(&p, "abc\n").unwrap();
        let e = read_pid_file(&p).unwrap_err().to_string();
        assert!(e.contains("is not a process id"), "{e}");
        std::fs::write(&p, format!("{}\n", std::process::id())).unwrap();
        assert_eq!(read_pid_file(&p).unwrap(), std::process::id());
    }
}
