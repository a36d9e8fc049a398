//! Live progress of a scenario: a bar on a terminal (feature `progress`), plain periodic lines
//! otherwise, nothing with `quiet`. Everything goes to standard error, so standard output
//! holds only the summary.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ProgressMode {
    /// A bar when standard error is a terminal, lines otherwise.
    #[default]
    Auto,
    /// Plain lines every [`LINE_EVERY`].
    Lines,
    /// Nothing.
    Quiet,
}

/// How often a plain progress line is written.
pub const LINE_EVERY: Duration = Duration::from_secs(5);

/// What the display shows, taken about once a second.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub struct Snapshot {
    /// Time since the scenario started.
    pub elapsed: Duration,
    /// Planned length, when known.
    pub total: Option<Duration>,
    /// Requests finished.
    pub completed: u64,
    /// Requests failed.
    pub errors: u64,
    /// Open-model iterations dropped.
    pub dropped: u64,
    /// Requests per second over the last complete second.
    pub rps: f64,
    /// p95 latency of the last complete second.
    pub p95: Option<Duration>,
}

impl Snapshot {
    /// One line: `12.0s/30s  2,345 req  195.0 req/s  3 err  p95 12.3ms`.
    pub fn line(&self) -> String {
        let total = self
            .total
            .map(|t| format!("/{}", secs(t)))
            .unwrap_or_default();
        let p95 = self
            .p95
            .map(|d| format!("{:.1}ms", d.as_secs_f64() * 1000.0))
            .unwrap_or_else(|| "-".into());
        let dropped = if self.dropped > 0 {
            format!("  {} dropped", self.dropped)
        } else {
            String::new()
        };
        format!(
            "{}{total}  {} req  {:.1} req/s  {} err{dropped}  p95 {p95}",
            secs(self.elapsed),
            self.completed,
            self.rps,
            self.errors
        )
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// The display of one scenario.
#[derive(Debug)]
pub struct Progress {
    name: String,
    kind: Kind,
    last_line: Option<Instant>,
}

#[derive(Debug)]
enum Kind {
    #[cfg(feature = "progress")]
    Bar(indicatif::ProgressBar),
    Lines,
    Quiet,
}

impl Progress {
    /// A display for scenario `name` that runs for about `total`.
    pub fn new(name: &str, mode: ProgressMode, total: Option<Duration>) -> Self {
        let kind = match mode {
            ProgressMode::Quiet => Kind::Quiet,
            ProgressMode::Lines => Kind::Lines,
            ProgressMode::Auto if std::io::stderr().is_terminal() => bar(name, total),
            ProgressMode::Auto => Kind::Lines,
        };
        Progress {
            name: name.to_string(),
            kind,
            last_line: None,
        }
    }

    /// Show `s`.
    pub fn update(&mut self, s: &Snapshot) {
        match &self.kind {
            #[cfg(feature = "progress")]
            Kind::Bar(bar) => {
                bar.set_position(s.elapsed.as_millis() as u64);
                bar.set_message(s.line());
            }
            Kind::Lines => {
                let due = self.last_line.is_none_or(|t| t.elapsed() >= LINE_EVERY);
                if due {
                    self.last_line = Some(Instant::now());
                    let _ = writeln!(std::io::stderr(), "load {}: {}", self.name, s.line());
                }
            }
            Kind::Quiet => {}
        }
    }

    /// The scenario ended: clear the bar (lines mode writes a last line).
    pub fn finish(&mut self, s: &Snapshot) {
        match &self.kind {
            #[cfg(feature = "progress")]
            Kind::Bar(bar) => bar.finish_and_clear(),
            Kind::Lines => {
                let _ = writeln!(std::io::stderr(), "load {}: done {}", self.name, s.line());
            }
            Kind::Quiet => {}
        }
    }
}

#[cfg(feature = "progress")]
fn bar(name: &str, total: Option<Duration>) -> Kind {
    let bar = match total {
        Some(t) => indicatif::ProgressBar::new(t.as_millis() as u64),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr_with_hz(4));
    let template = format!("load {name} [{{bar:30}}] {{msg}}");
    if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    Kind::Bar(bar)
}

#[cfg(not(feature = "progress"))]
fn bar(_name: &str, _total: Option<Duration>) -> Kind {
    Kind::Lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_says_time_rate_errors_and_p95() {
        let s = Snapshot {
            elapsed: Duration::from_millis(12_000),
            total: Some(Duration::from_secs(30)),
            completed: 2345,
            errors: 3,
            dropped: 0,
            rps: 195.0,
            p95: Some(Duration::from_micros(12_345)),
        };
        assert_eq!(
            s.line(),
            "12.0s/30.0s  2345 req  195.0 req/s  3 err  p95 12.3ms"
        );
        let none = Snapshot {
            dropped: 4,
            p95: None,
            total: None,
            ..s
        };
        assert_eq!(
            none.line(),
            "12.0s  2345 req  195.0 req/s  3 err  4 dropped  p95 -"
        );
    }
}
