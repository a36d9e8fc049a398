//! The faults a [`ModelServer`](super::ModelServer) injects, how they are written in the
//! `x-fixture-fault` header (and on a command line), and their JSON form for `/fixture/faults`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The longest duration a fault may ask for (a stall, a slow stream, `Retry-After`).
const MAX_FAULT_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// What the server does wrong, on purpose. [`Faults::default`] is a healthy server.
///
/// The status faults answer `/v1/*` requests instead of serving them, checked in this order
/// after authentication: `unavailable` (503), `rate_limit` (429 with `Retry-After`), then, once
/// the request is known to be valid, `error_rate` (500). A `stall` then delays the whole
/// response (headers included). `cut_after`, `sse_error_after` and `slow_itl` shape streams
/// (`slow_itl` also lengthens a non-streaming answer), and `malformed_after` slips a chunk that
/// is not JSON into a stream that otherwise goes on to `[DONE]`.
///
/// Set them at start ([`ModelServerBuilder::faults`](super::ModelServerBuilder::faults)), at run
/// time ([`ModelServer::set_faults`](super::ModelServer::set_faults) or `POST /fixture/faults`),
/// or for one request with the `x-fixture-fault` header, whose syntax is this type's
/// [`FromStr`] / [`Display`](fmt::Display) form:
///
/// ```
/// # use citadel_itest_testkit::model::Faults;
/// # use std::time::Duration;
/// let faults: Faults = "stall:250ms, cut:3".parse().unwrap();
/// assert_eq!(faults.stall, Some(Duration::from_millis(250)));
/// assert_eq!(faults.cut_after, Some(3));
/// assert_eq!(faults.to_string(), "stall:250ms,cut:3");
/// ```
///
/// | item | effect |
/// |---|---|
/// | `error`, `error:0.25` | answer 500 (`server_error`) always, or with that seeded probability |
/// | `rate_limit`, `rate_limit:2s` | answer 429 (`rate_limit_exceeded`) with `Retry-After: 1` (or the given whole seconds, rounded up) |
/// | `unavailable` | answer 503 (`server_error`); `/health` also answers 503 when set server-wide |
/// | `stall:500ms` | send nothing at all (not even headers) for that long first |
/// | `cut:3` | end a stream after 3 `data:` events by dropping the connection: no `[DONE]`, no final chunk of the chunked encoding |
/// | `sse_error`, `sse_error:2` | after 2 (default) `data:` events, send `data: {"error":{...}}` and end the stream cleanly, without `[DONE]` |
/// | `slow:50ms` | use that inter-token delay instead of the configured one |
/// | `malformed`, `malformed:2` | after 2 (default) `data:` events, send one `data:` event that is not JSON (a chunk cut in the middle), then go on with the rest of the stream and `[DONE]` |
/// | `none` | no fault (an empty string too) |
///
/// Durations are a number and a unit: `us`, `ms`, `s` or `m` (`1.5s` is fine).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Faults {
    /// Probability in `[0, 1]` that a valid `/v1/*` request is answered with a 500. The draws
    /// come from the server's seed and a counter, so a sequence of requests fails the same way
    /// on every run.
    pub error_rate: f64,
    /// Answer 429 with this `Retry-After` (sent in whole seconds, rounded up).
    pub rate_limit: Option<Duration>,
    /// Answer 503.
    pub unavailable: bool,
    /// Send nothing (not even the status line) for this long before answering.
    pub stall: Option<Duration>,
    /// End streams after this many `data:` events by aborting the connection.
    pub cut_after: Option<u32>,
    /// After this many `data:` events, send an in-band error event and end the stream.
    pub sse_error_after: Option<u32>,
    /// Inter-token delay to use instead of the configured one.
    pub slow_itl: Option<Duration>,
    /// After this many `data:` events, send one `data:` event that is not JSON, then the
    /// rest of the stream as usual (`[DONE]` included).
    pub malformed_after: Option<u32>,
}

impl Faults {
    /// No fault: a healthy server.
    pub fn none() -> Self {
        Self::default()
    }

    /// True when no fault is set.
    pub fn is_none(&self) -> bool {
        *self == Self::default()
    }

    /// Sets [`Faults::error_rate`].
    pub fn with_error_rate(mut self, rate: f64) -> Self {
        self.error_rate = rate;
        self
    }

    /// Sets [`Faults::rate_limit`] with this `Retry-After`.
    pub fn with_rate_limit(mut self, retry_after: Duration) -> Self {
        self.rate_limit = Some(retry_after);
        self
    }

    /// Sets [`Faults::unavailable`].
    pub fn with_unavailable(mut self) -> Self {
        self.unavailable = true;
        self
    }

    /// Sets [`Faults::stall`].
    pub fn with_stall(mut self, stall: Duration) -> Self {
        self.stall = Some(stall);
        self
    }

    /// Sets [`Faults::cut_after`].
    pub fn with_cut_after(mut self, events: u32) -> Self {
        self.cut_after = Some(events);
        self
    }

    /// Sets [`Faults::sse_error_after`].
    pub fn with_sse_error_after(mut self, events: u32) -> Self {
        self.sse_error_after = Some(events);
        self
    }

    /// Sets [`Faults::slow_itl`].
    pub fn with_slow_itl(mut self, itl: Duration) -> Self {
        self.slow_itl = Some(itl);
        self
    }

    /// Sets [`Faults::malformed_after`].
    pub fn with_malformed_after(mut self, events: u32) -> Self {
        self.malformed_after = Some(events);
        self
    }

    /// Checks the values are usable: a rate in `[0, 1]`, durations of at most a day.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(format!(
                "error rate must be between 0 and 1, got {}",
                self.error_rate
            ));
        }
        for (name, d) in [
            ("rate limit retry-after", self.rate_limit),
            ("stall", self.stall),
            ("slow inter-token delay", self.slow_itl),
        ] {
            if d.is_some_and(|d| d > MAX_FAULT_DURATION) {
                return Err(format!("{name} must be at most 24h"));
            }
        }
        Ok(())
    }

    /// These faults with every fault set in `other` added (or overriding).
    pub(crate) fn overlaid_with(&self, other: &Faults) -> Faults {
        Faults {
            error_rate: if other.error_rate > 0.0 {
                other.error_rate
            } else {
                self.error_rate
            },
            rate_limit: other.rate_limit.or(self.rate_limit),
            unavailable: self.unavailable || other.unavailable,
            stall: other.stall.or(self.stall),
            cut_after: other.cut_after.or(self.cut_after),
            sse_error_after: other.sse_error_after.or(self.sse_error_after),
            slow_itl: other.slow_itl.or(self.slow_itl),
            malformed_after: other.malformed_after.or(self.malformed_after),
        }
    }

    /// `Retry-After` in whole seconds, rounded up.
    pub(crate) fn retry_after_secs(retry_after: Duration) -> u64 {
        retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0)
    }
}

/// A fault list that does not parse, e.g. `unknown fault "explode"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseFaultsError(String);

impl FromStr for Faults {
    type Err = ParseFaultsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut faults = Faults::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, arg) = match item.split_once(':') {
                Some((name, arg)) => (name.trim(), Some(arg.trim())),
                None => (item, None),
            };
            let bad = |why: &str| ParseFaultsError(format!("fault `{item}`: {why}"));
            match (name, arg) {
                ("none", None) => {}
                ("error", None) => faults.error_rate = 1.0,
                ("error", Some(rate)) => {
                    faults.error_rate = rate
                        .parse::<f64>()
                        .ok()
                        .filter(|r| (0.0..=1.0).contains(r))
                        .ok_or_else(|| bad("the rate must be a number between 0 and 1"))?;
                }
                ("rate_limit", None) => faults.rate_limit = Some(Duration::from_secs(1)),
                ("rate_limit", Some(d)) => {
                    faults.rate_limit = Some(parse_duration(d).map_err(|e| bad(&e))?)
                }
                ("unavailable", None) => faults.unavailable = true,
                ("stall", Some(d)) => faults.stall = Some(parse_duration(d).map_err(|e| bad(&e))?),
                ("slow", Some(d)) => {
                    faults.slow_itl = Some(parse_duration(d).map_err(|e| bad(&e))?)
                }
                ("cut", Some(n)) => {
                    faults.cut_after =
                        Some(n.parse().map_err(|_| bad("expected a number of events"))?);
                }
                ("sse_error", None) => faults.sse_error_after = Some(2),
                ("sse_error", Some(n)) => {
                    faults.sse_error_after =
                        Some(n.parse().map_err(|_| bad("expected a number of events"))?);
                }
                ("malformed", None) => faults.malformed_after = Some(2),
                ("malformed", Some(n)) => {
                    faults.malformed_after =
                        Some(n.parse().map_err(|_| bad("expected a number of events"))?);
                }
                ("stall" | "slow", None) => {
                    return Err(bad("needs a duration, e.g. `stall:500ms`"));
                }
                ("cut", None) => return Err(bad("needs a number of events, e.g. `cut:3`")),
                ("none" | "unavailable", Some(_)) => return Err(bad("takes no argument")),
                _ => {
                    return Err(bad(
                        "unknown fault (known: error, rate_limit, unavailable, stall, cut, \
                         sse_error, slow, malformed, none)",
                    ));
                }
            }
        }
        faults.validate().map_err(ParseFaultsError)?;
        Ok(faults)
    }
}

impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut items = Vec::new();
        if self.error_rate >= 1.0 {
            items.push("error".to_owned());
        } else if self.error_rate > 0.0 {
            items.push(format!("error:{}", self.error_rate));
        }
        if let Some(d) = self.rate_limit {
            items.push(format!("rate_limit:{}", format_duration(d)));
        }
        if self.unavailable {
            items.push("unavailable".to_owned());
        }
        if let Some(d) = self.stall {
            items.push(format!("stall:{}", format_duration(d)));
        }
        if let Some(n) = self.cut_after {
            items.push(format!("cut:{n}"));
        }
        if let Some(n) = self.sse_error_after {
            items.push(format!("sse_error:{n}"));
        }
        if let Some(d) = self.slow_itl {
            items.push(format!("slow:{}", format_duration(d)));
        }
        if let Some(n) = self.malformed_after {
            items.push(format!("malformed:{n}"));
        }
        if items.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&items.join(","))
        }
    }
}

/// Parses `250ms`, `1.5s`, `100us`, `2m`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("duration `{s}` needs a unit (us, ms, s or m)"))?;
    let (number, unit) = s.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("duration `{s}` does not start with a number"))?;
    let scale = match unit {
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        _ => {
            return Err(format!(
                "duration `{s}` has an unknown unit (use us, ms, s or m)"
            ));
        }
    };
    let secs = number * scale;
    if !secs.is_finite() || secs > MAX_FAULT_DURATION.as_secs_f64() {
        return Err(format!("duration `{s}` is longer than 24h"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The shortest exact form: `250ms`, `2s`, `1500us`.
fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_nanos() % 1_000_000 == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}us", d.as_micros())
    }
}

/// The JSON body of `GET/POST /fixture/faults`: every field optional; unknown fields rejected.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultsJson {
    #[serde(default)]
    error_rate: f64,
    #[serde(default)]
    rate_limit: bool,
    #[serde(default)]
    retry_after_secs: Option<u64>,
    #[serde(default)]
    unavailable: bool,
    #[serde(default)]
    stall_ms: Option<u64>,
    #[serde(default)]
    cut_after: Option<u32>,
    #[serde(default)]
    sse_error_after: Option<u32>,
    #[serde(default)]
    slow_itl_ms: Option<u64>,
    #[serde(default)]
    malformed_after: Option<u32>,
}

impl From<&Faults> for FaultsJson {
    fn from(f: &Faults) -> Self {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            error_rate: f.error_rate,
            rate_limit: f.rate_limit.is_some(),
            retry_after_secs: f.rate_limit.map(Faults::retry_after_secs),
            unavailable: f.unavailable,
            stall_ms: f.stall.map(ms),
            cut_after: f.cut_after,
            sse_error_after: f.sse_error_after,
            slow_itl_ms: f.slow_itl.map(ms),
            malformed_after: f.malformed_after,
        }
    }
}

impl TryFrom<FaultsJson> for Faults {
    type Error = String;

    fn try_from(j: FaultsJson) -> Result<Self, String> {
        if j.retry_after_secs.is_some() && !j.rate_limit {
            return Err("`retry_after_secs` needs `rate_limit: true`".to_owned());
        }
        let faults = Faults {
            error_rate: j.error_rate,
            rate_limit: j
                .rate_limit
                .then(|| Duration::from_secs(j.retry_after_secs.unwrap_or(1))),
            unavailable: j.unavailable,
            stall: j.stall_ms.map(Duration::from_millis),
            cut_after: j.cut_after,
            sse_error_after: j.sse_error_after,
            slow_itl: j.slow_itl_ms.map(Duration::from_millis),
            malformed_after: j.malformed_after,
        };
        faults.validate()?;
        Ok(faults)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_syntax_round_trips() {
        let f: Faults =
            "error:0.5, rate_limit:2s, unavailable, stall:250ms, cut:3, sse_error:1, slow:1500us, \
             malformed:4"
                .parse()
                .unwrap();
        assert_eq!(f.error_rate, 0.5);
        assert_eq!(f.rate_limit, Some(Duration::from_secs(2)));
        assert!(f.unavailable);
        assert_eq!(f.stall, Some(Duration::from_millis(250)));
        assert_eq!(f.cut_after, Some(3));
        assert_eq!(f.sse_error_after, Some(1));
        assert_eq!(f.slow_itl, Some(Duration::from_micros(1500)));
        assert_eq!(f.malformed_after, Some(4));
        assert_eq!(f.to_string().parse::<Faults>().unwrap(), f);
        assert_eq!(
            "malformed".parse::<Faults>().unwrap().malformed_after,
            Some(2)
        );
        assert_eq!("".parse::<Faults>().unwrap(), Faults::none());
        assert_eq!("none".parse::<Faults>().unwrap().to_string(), "none");
        assert_eq!("error".parse::<Faults>().unwrap().error_rate, 1.0);
        assert_eq!(
            "sse_error".parse::<Faults>().unwrap().sse_error_after,
            Some(2)
        );
        assert_eq!(
            "rate_limit".parse::<Faults>().unwrap().rate_limit,
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn bad_items_are_named() {
        for (input, needle) in [
            ("explode", "unknown fault"),
            ("stall", "needs a duration"),
            ("stall:5", "needs a unit"),
            ("stall:5h", "unknown unit"),
            ("stall:25m,slow:99999s", "longer than 24h"),
            ("error:2", "between 0 and 1"),
            ("cut:x", "number of events"),
            ("malformed:-1", "number of events"),
            ("unavailable:1", "takes no argument"),
        ] {
            let err = input.parse::<Faults>().unwrap_err().to_string();
            assert!(err.contains(needle), "{input}: {err}");
        }
    }

    #[test]
    fn json_form_converts_both_ways() {
        let f = Faults::none()
            .with_rate_limit(Duration::from_millis(1500))
            .with_stall(Duration::from_millis(20))
            .with_malformed_after(3);
        let json = serde_json::to_value(FaultsJson::from(&f)).unwrap();
        assert_eq!(json["malformed_after"], 3);
        assert_eq!(json["rate_limit"], true);
        assert_eq!(json["retry_after_secs"], 2);
        assert_eq!(json["stall_ms"], 20);
        let back: FaultsJson = serde_json::from_value(json).unwrap();
        let back = Faults::try_from(back).unwrap();
        assert_eq!(back.rate_limit, Some(Duration::from_secs(2)));
        assert_eq!(back.malformed_after, Some(3));
        assert!(serde_json::from_str::<FaultsJson>(r#"{"stal_ms":1}"#).is_err());
        let bad: FaultsJson = serde_json::from_str(r#"{"error_rate":1.5}"#).unwrap();
        assert!(Faults::try_from(bad).is_err());
    }

    #[test]
    fn overlay_adds_request_faults() {
        let server = Faults::none().with_slow_itl(Duration::from_millis(5));
        let request: Faults = "cut:2".parse().unwrap();
        let both = server.overlaid_with(&request);
        assert_eq!(both.cut_after, Some(2));
        assert_eq!(both.slow_itl, Some(Duration::from_millis(5)));
    }
}
