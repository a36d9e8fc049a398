//! The parser: one pass over the lines, one finding per line that cannot be read.

use std::collections::{HashMap, HashSet};

use citadel_itest_core::config::redact_text;

use super::{
    Exemplar, Exposition, Family, Finding, Format, MetricType, Sample, Selector, Timestamp,
};

/// Most characters of a line quoted in a finding.
const QUOTE_CHARS: usize = 80;

/// Most characters of an exemplar's label names and values together (OpenMetrics).
const EXEMPLAR_LABEL_CHARS: usize = 128;

/// Parse an exposition; OpenMetrics when it has a `# EOF` line, else the text format 0.0.4.
/// Never fails: lines that cannot be read are [`Finding`]s (kind `parse`, `invalid_utf8`,
/// `truncated`, ...) naming their line, and are left out of the families.
pub fn parse(text: &[u8]) -> Exposition {
    parse_as(text, None)
}

/// Parse an exposition served with `content_type` (`application/openmetrics-text` reads it as
/// OpenMetrics, `text/plain` as the text format); without one, or with another, the format is
/// detected as in [`parse`].
pub fn parse_as(text: &[u8], content_type: Option<&str>) -> Exposition {
    let format = content_type
        .and_then(Format::from_content_type)
        .unwrap_or_else(|| {
            if text.split(|b| *b == b'\n').any(|l| l == b"# EOF") {
                Format::OpenMetrics
            } else {
                Format::Text
            }
        });
    let mut p = Parser {
        format,
        families: Vec::new(),
        index: HashMap::new(),
        current: None,
        closed: HashSet::new(),
        interleaved: HashSet::new(),
        findings: Vec::new(),
    };
    let mut lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
    let ends_in_newline = text.last() == Some(&b'\n');
    if ends_in_newline || text.is_empty() {
        lines.pop();
    }
    let count = lines.len();
    let mut eof: Option<usize> = None;
    let mut crlf = false;
    for (i, raw) in lines.iter().enumerate() {
        let n = i + 1;
        if let Some(at) = eof {
            p.finding(
                Some(n),
                None,
                "after_eof",
                format!("text after the `# EOF` of line {at}"),
            );
            break;
        }
        let raw = match raw.strip_suffix(b"\r") {
            Some(r) => {
                if !crlf {
                    crlf = true;
                    p.finding(
                        Some(n),
                        None,
                        "parse",
                        "line ends in a carriage return (lines end in `\\n` only)",
                    );
                }
                r
            }
            None => raw,
        };
        let line = match std::str::from_utf8(raw) {
            Ok(l) => l,
            Err(e) => {
                p.finding(
                    Some(n),
                    None,
                    "invalid_utf8",
                    format!(
                        "not valid UTF-8 (bad byte at column {}): `{}`",
                        e.valid_up_to() + 1,
                        quote(&String::from_utf8_lossy(raw))
                    ),
                );
                continue;
            }
        };
        if format == Format::OpenMetrics && line == "# EOF" {
            eof = Some(n);
            continue;
        }
        if line.trim().is_empty() {
            if format == Format::OpenMetrics {
                p.finding(
                    Some(n),
                    None,
                    "parse",
                    "empty line (not allowed in OpenMetrics)",
                );
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            p.comment(n, line, rest);
        } else {
            p.sample_line(n, line);
        }
    }
    if format == Format::OpenMetrics && eof.is_none() {
        p.finding(
            None,
            None,
            "missing_eof",
            "no `# EOF` line at the end: the exposition may be cut off",
        );
    }
    if format == Format::Text && !text.is_empty() && !ends_in_newline {
        p.finding(
            Some(count),
            None,
            "truncated",
            format!("the last line ({count}) does not end in a line feed: the body may be cut off"),
        );
    }
    Exposition {
        format,
        families: p.families,
        findings: p.findings,
        lines: count,
    }
}

/// Parse a selector, `name` or `name{label="value",...}`, as configured in `values` and
/// `rates`. The error says what is wrong and at which column.
///
/// ```
/// use citadel_itest_monitoring::exposition::parse_selector;
/// let s = parse_selector(r#"http_requests_total{code="200",path="/a,b"}"#).unwrap();
/// assert_eq!(s.name, "http_requests_total");
/// assert_eq!(s.labels[1], ("path".to_string(), "/a,b".to_string()));
/// assert!(parse_selector("up{job=}").is_err());
/// ```
pub fn parse_selector(text: &str) -> Result<Selector, String> {
    let mut c = Cursor::new(text.trim());
    let name = c.metric_name()?;
    let labels = if c.peek() == Some(b'{') {
        c.labels(Format::Text).map_err(|(_, e)| e)?
    } else {
        Vec::new()
    };
    if !c.at_end() {
        return Err(format!(
            "unexpected `{}` at column {}",
            c.rest_quote(),
            c.column()
        ));
    }
    Ok(Selector {
        name: name.to_string(),
        labels,
    })
}

struct Parser {
    format: Format,
    families: Vec<Family>,
    index: HashMap<String, usize>,
    /// The family of the last line.
    current: Option<usize>,
    /// Families that another family's lines followed.
    closed: HashSet<usize>,
    /// Families already reported as interleaved.
    interleaved: HashSet<usize>,
    findings: Vec<Finding>,
}

impl Parser {
    fn finding(
        &mut self,
        line: Option<usize>,
        metric: Option<&str>,
        kind: &'static str,
        message: impl Into<String>,
    ) {
        self.findings
            .push(Finding::new(line, metric, kind, message));
    }

    /// Make `idx` the current family; a family coming back after another one is reported.
    fn enter(&mut self, idx: usize, line: usize) {
        if self.current == Some(idx) {
            return;
        }
        if let Some(prev) = self.current {
            self.closed.insert(prev);
        }
        self.current = Some(idx);
        if self.closed.contains(&idx) && self.interleaved.insert(idx) {
            let name = self.families[idx].name.clone();
            let first = self.families[idx].line;
            self.finding(
                Some(line),
                Some(&name),
                "interleaved",
                format!("lines of this family (first at line {first}) are not all together"),
            );
        }
    }

    fn family(&mut self, name: &str, line: usize) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        self.families.push(Family {
            name: name.to_string(),
            kind: MetricType::Untyped,
            typed: false,
            help: None,
            unit: None,
            samples: Vec::new(),
            line,
        });
        let i = self.families.len() - 1;
        self.index.insert(name.to_string(), i);
        i
    }

    fn comment(&mut self, n: usize, line: &str, rest: &str) {
        let om = self.format == Format::OpenMetrics;
        let body = rest.trim_start_matches([' ', '\t']);
        let spaced = body.len() < rest.len();
        let (keyword, after) = match body.find([' ', '\t']) {
            Some(at) => (&body[..at], &body[at + 1..]),
            None => (body, ""),
        };
        let keyword = if spaced { keyword } else { "" };
        match keyword {
            "HELP" | "TYPE" => {}
            "UNIT" if om => {}
            _ => {
                if om {
                    self.finding(
                        Some(n),
                        None,
                        "parse",
                        format!(
                            "OpenMetrics allows only `# HELP`, `# TYPE`, `# UNIT` and `# EOF` comments: `{}`",
                            quote(line)
                        ),
                    );
                }
                return;
            }
        }
        let after = if om {
            after
        } else {
            after.trim_start_matches([' ', '\t'])
        };
        let (name, text) = match after.find([' ', '\t']) {
            Some(at) => (&after[..at], &after[at + 1..]),
            None => (after, ""),
        };
        if !valid_metric_name(name) {
            self.finding(
                Some(n),
                None,
                "parse",
                format!("`# {keyword}` names no valid metric: `{}`", quote(line)),
            );
            return;
        }
        let idx = self.family(name, n);
        self.enter(idx, n);
        match keyword {
            "HELP" => {
                if self.families[idx].help.is_some() {
                    self.finding(
                        Some(n),
                        Some(name),
                        "duplicate_help",
                        "a second `# HELP` for this family",
                    );
                    return;
                }
                self.families[idx].help = Some(unescape_help(text, om));
            }
            "TYPE" => {
                let word = text.trim_end_matches([' ', '\t']);
                let word = if om { text } else { word };
                let kind = MetricType::from_word(word).filter(|k| {
                    let text_only = matches!(k, MetricType::Untyped);
                    let om_only = matches!(
                        k,
                        MetricType::Unknown
                            | MetricType::Info
                            | MetricType::StateSet
                            | MetricType::GaugeHistogram
                    );
                    if om { !text_only } else { !om_only }
                });
                let Some(kind) = kind else {
                    self.finding(
                        Some(n),
                        Some(name),
                        "parse",
                        format!("`{}` is not a metric type of {}", quote(word), self.format),
                    );
                    return;
                };
                let fam = &self.families[idx];
                if fam.typed {
                    self.finding(
                        Some(n),
                        Some(name),
                        "duplicate_type",
                        "a second `# TYPE` for this family",
                    );
                    return;
                }
                if !fam.samples.is_empty() {
                    self.finding(
                        Some(n),
                        Some(name),
                        "type_after_samples",
                        "`# TYPE` comes after samples of this family",
                    );
                }
                let fam = &mut self.families[idx];
                fam.kind = kind;
                fam.typed = true;
            }
            _ => {
                if self.families[idx].unit.is_some() {
                    self.finding(
                        Some(n),
                        Some(name),
                        "duplicate_unit",
                        "a second `# UNIT` for this family",
                    );
                    return;
                }
                self.families[idx].unit = Some(text.to_string());
            }
        }
    }

    /// The family a sample called `name` belongs to: the current one if it fits, else a
    /// declared one it fits, else a new untyped one.
    fn family_of(&mut self, name: &str, n: usize) -> usize {
        let fits = |f: &Family| {
            f.name == name
                || f.kind
                    .suffixes()
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(f.name.as_str()))
        };
        if let Some(i) = self.current {
            if fits(&self.families[i]) {
                return i;
            }
        }
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        for suffix in [
            "_total", "_created", "_bucket", "_sum", "_count", "_gsum", "_gcount", "_info",
        ] {
            if let Some(base) = name.strip_suffix(suffix) {
                if let Some(&i) = self.index.get(base) {
                    if fits(&self.families[i]) {
                        return i;
                    }
                }
            }
        }
        self.family(name, n)
    }

    fn sample_line(&mut self, n: usize, line: &str) {
        let sample = match read_sample(line, n, self.format) {
            Ok(s) => s,
            Err((kind, message)) => {
                let metric = line
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                    .next()
                    .filter(|m| valid_metric_name(m));
                self.finding(
                    Some(n),
                    metric,
                    kind,
                    format!("{message}: `{}`", quote(line)),
                );
                return;
            }
        };
        let idx = self.family_of(&sample.name, n);
        self.enter(idx, n);
        if let Some(ex) = &sample.exemplar {
            let fam = &self.families[idx];
            let allowed = match fam.kind {
                MetricType::Counter => sample.name.ends_with("_total"),
                MetricType::Histogram | MetricType::GaugeHistogram => {
                    sample.name.ends_with("_bucket")
                }
                _ => false,
            };
            if !allowed {
                let name = sample.name.clone();
                self.finding(
                    Some(n),
                    Some(&name),
                    "exemplar_misplaced",
                    format!(
                        "an exemplar on a {} sample (only on counters' `_total` and histograms' `_bucket`)",
                        fam.kind
                    ),
                );
            }
            let chars: usize = ex
                .labels
                .iter()
                .map(|(k, v)| k.chars().count() + v.chars().count())
                .sum();
            if chars > EXEMPLAR_LABEL_CHARS {
                let name = sample.name.clone();
                self.finding(
                    Some(n),
                    Some(&name),
                    "exemplar_too_long",
                    format!(
                        "exemplar labels hold {chars} characters (at most {EXEMPLAR_LABEL_CHARS})"
                    ),
                );
            }
        }
        self.families[idx].samples.push(sample);
    }
}

type ParseError = (&'static str, String);

fn read_sample(line: &str, n: usize, format: Format) -> Result<Sample, ParseError> {
    let om = format == Format::OpenMetrics;
    let mut c = Cursor::new(line);
    let name = c.metric_name().map_err(|e| ("parse", e))?.to_string();
    // The text format allows blanks between the name and its `{`.
    let blank = if om { 0 } else { c.spaces() };
    let labels = if c.peek() == Some(b'{') {
        let labels = c.labels(format)?;
        c.separator(om, "before the value")?;
        labels
    } else if blank == 0 {
        c.separator(om, "before the value")?;
        Vec::new()
    } else {
        if c.at_end() {
            return Err(("parse", "no value after the metric name".into()));
        }
        Vec::new()
    };
    let value = c.value("value")?;
    let mut timestamp = None;
    let mut exemplar = None;
    if !c.at_end() {
        let gap = c.spaces();
        if c.at_end() {
            if om {
                return Err((
                    "parse",
                    "trailing white space (not allowed in OpenMetrics)".into(),
                ));
            }
        } else if om && gap != 1 {
            return Err((
                "parse",
                format!(
                    "{gap} spaces at column {} (OpenMetrics: one)",
                    c.column() - gap
                ),
            ));
        } else if c.peek() != Some(b'#') {
            let col = c.column();
            let token = c.token();
            timestamp = Some(if om {
                Timestamp::Seconds(parse_float(token).ok_or_else(|| {
                    (
                        "parse",
                        format!(
                            "timestamp `{}` at column {col} is not a number",
                            quote(token)
                        ),
                    )
                })?)
            } else {
                Timestamp::Millis(token.parse::<i64>().map_err(|_| {
                    (
                        "parse",
                        format!(
                            "timestamp `{}` at column {col} is not integer milliseconds",
                            quote(token)
                        ),
                    )
                })?)
            });
            if !c.at_end() {
                let gap = c.spaces();
                if c.at_end() && om {
                    return Err((
                        "parse",
                        "trailing white space (not allowed in OpenMetrics)".into(),
                    ));
                }
                if om && !c.at_end() && gap != 1 {
                    return Err((
                        "parse",
                        format!(
                            "{gap} spaces at column {} (OpenMetrics: one)",
                            c.column() - gap
                        ),
                    ));
                }
            }
        }
        if c.peek() == Some(b'#') {
            if !om {
                return Err((
                    "parse",
                    format!(
                        "`#` at column {} after the value (exemplars exist only in OpenMetrics)",
                        c.column()
                    ),
                ));
            }
            exemplar = Some(c.exemplar()?);
        }
        if !c.at_end() {
            return Err((
                "parse",
                format!("unexpected `{}` at column {}", c.rest_quote(), c.column()),
            ));
        }
    }
    Ok(Sample {
        name,
        labels,
        value,
        timestamp,
        exemplar,
        line: n,
    })
}

struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Cursor { text, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    /// 1-based column (in characters) of the position.
    fn column(&self) -> usize {
        self.text[..self.pos].chars().count() + 1
    }

    fn rest_quote(&self) -> String {
        quote(&self.text[self.pos..])
    }

    /// Skips spaces and tabs; returns how many.
    fn spaces(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// White space before a token: one space in OpenMetrics, any spaces and tabs otherwise.
    fn separator(&mut self, om: bool, what: &str) -> Result<(), ParseError> {
        let col = self.column();
        let n = self.spaces();
        if n == 0 {
            return Err((
                "parse",
                if self.at_end() {
                    format!("no value ({what}, column {col})")
                } else {
                    format!(
                        "unexpected `{}` at column {col} (expected a space {what})",
                        self.rest_quote()
                    )
                },
            ));
        }
        if om && (n != 1 || self.text[self.pos - 1..].starts_with('\t')) {
            return Err((
                "parse",
                format!("{n} blanks at column {col} (OpenMetrics: one space)"),
            ));
        }
        if self.at_end() {
            return Err(("parse", format!("no value ({what}, column {col})")));
        }
        Ok(())
    }

    /// Up to the next blank.
    fn token(&mut self) -> &'a str {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if b == b' ' || b == b'\t' {
                break;
            }
            self.pos += 1;
        }
        &self.text[start..self.pos]
    }

    fn value(&mut self, what: &str) -> Result<f64, ParseError> {
        let col = self.column();
        let token = self.token();
        parse_float(token).ok_or_else(|| {
            (
                "parse",
                format!("{what} `{}` at column {col} is not a number", quote(token)),
            )
        })
    }

    fn metric_name(&mut self) -> Result<&'a str, String> {
        let start = self.pos;
        while let Some(b) = self.peek() {
            let ok = b.is_ascii_alphabetic()
                || b == b'_'
                || b == b':'
                || (self.pos > start && b.is_ascii_digit());
            if !ok {
                break;
            }
            self.pos += 1;
        }
        if self.pos == start {
            let what = self.text[start..]
                .chars()
                .next()
                .map_or_else(|| "nothing".to_string(), |c| format!("`{c}`"));
            return Err(format!(
                "expected a metric name at column {}, found {what}",
                self.column()
            ));
        }
        Ok(&self.text[start..self.pos])
    }

    /// `{a="1",b="2"}` from the `{`.
    fn labels(&mut self, format: Format) -> Result<Vec<(String, String)>, ParseError> {
        let om = format == Format::OpenMetrics;
        let open = self.column();
        self.pos += 1; // `{`
        let mut labels: Vec<(String, String)> = Vec::new();
        loop {
            if !om {
                self.spaces();
            }
            match self.peek() {
                None => {
                    return Err((
                        "parse",
                        format!("the `{{` of column {open} is never closed"),
                    ));
                }
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(labels);
                }
                _ => {}
            }
            let col = self.column();
            let start = self.pos;
            while let Some(b) = self.peek() {
                if b.is_ascii_alphanumeric() || b == b'_' {
                    self.pos += 1;
                } else {
                    break;
                }
            }
            let name = &self.text[start..self.pos];
            if name.is_empty() || name.as_bytes()[0].is_ascii_digit() {
                let found = self.text[start..]
                    .chars()
                    .next()
                    .map_or("the end of the line".to_string(), |c| format!("`{c}`"));
                return Err((
                    "parse",
                    format!("expected a label name at column {col}, found {found}"),
                ));
            }
            if !om {
                self.spaces();
            }
            if self.peek() != Some(b'=') {
                return Err((
                    "parse",
                    format!(
                        "expected `=` after label `{name}` (column {})",
                        self.column()
                    ),
                ));
            }
            self.pos += 1;
            if !om {
                self.spaces();
            }
            if self.peek() != Some(b'"') {
                return Err((
                    "parse",
                    format!(
                        "expected `\"` to open the value of label `{name}` (column {})",
                        self.column()
                    ),
                ));
            }
            self.pos += 1;
            let value = self.label_value(name)?;
            if labels.iter().any(|(k, _)| k == name) {
                return Err(("duplicate_label", format!("label `{name}` is given twice")));
            }
            labels.push((name.to_string(), value));
            if !om {
                self.spaces();
            }
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    if om && self.peek() == Some(b'}') {
                        return Err((
                            "parse",
                            format!(
                                "a trailing `,` at column {} (not allowed in OpenMetrics)",
                                self.column() - 1
                            ),
                        ));
                    }
                }
                Some(b'}') => {}
                None => {
                    return Err((
                        "parse",
                        format!("the `{{` of column {open} is never closed"),
                    ));
                }
                Some(_) => {
                    return Err((
                        "parse",
                        format!(
                            "expected `,` or `}}` after the value of label `{name}`, found `{}` (column {})",
                            self.rest_quote().chars().next().unwrap_or(' '),
                            self.column()
                        ),
                    ));
                }
            }
        }
    }

    /// The value after its opening `"`, up to and including the closing one, unescaped.
    fn label_value(&mut self, name: &str) -> Result<String, ParseError> {
        let mut value = String::new();
        let rest = &self.text[self.pos..];
        let mut chars = rest.char_indices();
        while let Some((i, ch)) = chars.next() {
            match ch {
                '"' => {
                    self.pos += i + 1;
                    return Ok(value);
                }
                '\\' => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    Some((j, other)) => {
                        self.pos += j;
                        return Err((
                            "parse",
                            format!(
                                "invalid escape `\\{other}` in the value of label `{name}` (column {})",
                                self.column()
                            ),
                        ));
                    }
                    None => break,
                },
                c => value.push(c),
            }
        }
        Err((
            "parse",
            format!("the value of label `{name}` is never closed (no ending `\"`)"),
        ))
    }

    /// ` # {labels} value [timestamp]` from the `#`.
    fn exemplar(&mut self) -> Result<Exemplar, ParseError> {
        self.pos += 1; // `#`
        if self.spaces() != 1 || self.peek() != Some(b'{') {
            return Err((
                "parse",
                format!(
                    "expected ` {{` after the exemplar's `#` (column {})",
                    self.column()
                ),
            ));
        }
        let labels = self.labels(Format::OpenMetrics)?;
        self.separator(true, "before the exemplar value")?;
        let value = self.value("exemplar value")?;
        let mut timestamp = None;
        if !self.at_end() {
            self.separator(true, "before the exemplar timestamp")?;
            let col = self.column();
            let token = self.token();
            timestamp = Some(parse_float(token).ok_or_else(|| {
                (
                    "parse",
                    format!(
                        "exemplar timestamp `{}` at column {col} is not a number",
                        quote(token)
                    ),
                )
            })?);
        }
        Ok(Exemplar {
            labels,
            value,
            timestamp,
        })
    }
}

/// A value as Go's `strconv.ParseFloat` reads it: decimal floats, `NaN`, `+Inf`, `-Inf`, `Inf`
/// (any case).
pub(crate) fn parse_float(token: &str) -> Option<f64> {
    if token.is_empty() || token.contains('_') {
        return None;
    }
    token.parse::<f64>().ok()
}

/// Whether `name` is a valid metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
pub(crate) fn valid_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// HELP text: `\\` and `\n` (and in OpenMetrics `\"`) unescaped; other backslashes kept.
fn unescape_help(text: &str, om: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('\\') => {
                out.push('\\');
                chars.next();
            }
            Some('n') => {
                out.push('\n');
                chars.next();
            }
            Some('"') if om => {
                out.push('"');
                chars.next();
            }
            _ => out.push('\\'),
        }
    }
    out
}

/// At most [`QUOTE_CHARS`] characters of `text`, secrets redacted.
pub(crate) fn quote(text: &str) -> String {
    let text = redact_text(text);
    if text.chars().count() <= QUOTE_CHARS {
        return text;
    }
    let mut out: String = text.chars().take(QUOTE_CHARS - 1).collect();
    out.push('…');
    out
}
