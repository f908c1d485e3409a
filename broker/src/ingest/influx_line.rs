//! Influx line protocol to records: InfluxData's `influxdb-line-protocol`
//! parser (the one IOx uses, ported from the Go parser) per line, with line
//! numbers for errors, precision handling, and the record each point becomes:
//! key = canonical series, value = JSON (or the line itself in the raw
//! format), timestamp = the point's time in ms.

use bytes::Bytes;
use influxdb_line_protocol::{parse_lines, split_lines, FieldValue};
use serde_json::{Map, Value};

use super::{Format, Record};

/// The unit of the timestamps in a write (`precision` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Ns,
    Us,
    Ms,
    S,
}

impl Precision {
    /// Reads the query value; InfluxDB 1 also spells them n, u, ms, s.
    pub fn parse(value: &str) -> Option<Precision> {
        match value {
            "" | "ns" | "n" => Some(Precision::Ns),
            "us" | "u" | "µs" => Some(Precision::Us),
            "ms" => Some(Precision::Ms),
            "s" => Some(Precision::S),
            _ => None,
        }
    }

    fn ns_per_unit(self) -> i64 {
        match self {
            Precision::Ns => 1,
            Precision::Us => 1_000,
            Precision::Ms => 1_000_000,
            Precision::S => 1_000_000_000,
        }
    }
}

/// Why a line was refused; `line` counts from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// Parses every line of `body`; the first error refuses the whole body (a
/// write is all or nothing). `now_ns` stamps points without a timestamp.
pub fn parse_all(
    body: &str,
    precision: Precision,
    now_ns: i64,
    format: Format,
) -> Result<Vec<Record>, LineError> {
    let mut points = Vec::new();
    for (line, text) in numbered_lines(body) {
        if let Some(point) = parse_one(line, text, precision, now_ns, format)? {
            points.push(point);
        }
    }
    Ok(points)
}

/// Parses every line of `body`, keeping the good points and the errors
/// apart (the TCP listener stores what it can).
pub fn parse_lossy(
    body: &str,
    precision: Precision,
    now_ns: i64,
    format: Format,
) -> (Vec<Record>, Vec<LineError>) {
    let mut points = Vec::new();
    let mut errors = Vec::new();
    for (line, text) in numbered_lines(body) {
        match parse_one(line, text, precision, now_ns, format) {
            Ok(Some(p)) => points.push(p),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    (points, errors)
}

/// The lines of `body` as line protocol splits them (a quoted string field
/// may hold a newline), each with the number of the text line it starts on.
fn numbered_lines(body: &str) -> impl Iterator<Item = (usize, &str)> {
    let base = body.as_ptr() as usize;
    let mut counted_to = 0usize;
    let mut line = 1usize;
    split_lines(body).map(move |text| {
        // Every piece is a slice of `body`: its offset says where it starts.
        let start = (text.as_ptr() as usize)
            .saturating_sub(base)
            .min(body.len());
        if start > counted_to {
            line += body.as_bytes()[counted_to..start]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            counted_to = start;
        }
        (line, text.strip_suffix('\r').unwrap_or(text))
    })
}

fn parse_one(
    line: usize,
    text: &str,
    precision: Precision,
    now_ns: i64,
    format: Format,
) -> Result<Option<Record>, LineError> {
    let error = |reason: String| LineError { line, reason };
    // A NUL would end the string in InfluxDB's own (C-string era) tooling.
    if text.contains('\0') {
        return Err(error("the line contains a NUL byte".into()));
    }
    let mut parsed = parse_lines(text);
    let parsed = match parsed.next() {
        None => return Ok(None), // empty line or comment
        Some(Err(e)) => return Err(error(e.to_string())),
        Some(Ok(p)) => p,
    };
    let timestamp_ns = match parsed.timestamp {
        None => now_ns,
        Some(t) => t.checked_mul(precision.ns_per_unit()).ok_or_else(|| {
            error(format!(
                "timestamp {t} is out of range for precision {precision:?}"
            ))
        })?,
    };
    let mut tag_pairs: Vec<(String, String)> = parsed
        .series
        .tag_set
        .iter()
        .flatten()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tag_pairs.sort();
    if let Some(w) = tag_pairs.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(error(format!("tag {} is repeated", w[0].0)));
    }
    let measurement = parsed.series.measurement.to_string();
    // The canonical series: measurement and tags sorted by key, escaped as
    // line protocol does (so the key is unambiguous), as InfluxDB's own.
    let mut key = String::with_capacity(64);
    escape_into(&mut key, &measurement, &[',', ' ']);
    for (k, v) in &tag_pairs {
        key.push(',');
        escape_into(&mut key, k, &[',', ' ', '=']);
        key.push('=');
        escape_into(&mut key, v, &[',', ' ', '=']);
    }
    let tags: Map<String, Value> = tag_pairs
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let mut fields = Map::new();
    for (k, v) in &parsed.field_set {
        let v = match v {
            FieldValue::I64(i) => Value::from(*i),
            FieldValue::U64(u) => Value::from(*u),
            FieldValue::F64(f) => match serde_json::Number::from_f64(*f) {
                Some(n) => Value::Number(n),
                None => return Err(error(format!("field {k} is not a finite number"))),
            },
            FieldValue::String(s) => Value::String(s.to_string()),
            FieldValue::Boolean(b) => Value::Bool(*b),
        };
        fields.insert(k.to_string(), v);
    }
    let value = match format {
        Format::Raw => Bytes::copy_from_slice(text.trim().as_bytes()),
        Format::Json => {
            let value = serde_json::json!({
                "measurement": measurement,
                "tags": tags,
                "fields": fields,
                "timestamp_ns": timestamp_ns,
            });
            let value = serde_json::to_vec(&value)
                .map_err(|e| error(format!("encoding the point: {e}")))?;
            Bytes::from(value)
        }
    };
    Ok(Some(Record {
        key: Bytes::from(key),
        value,
        timestamp_ms: timestamp_ns.div_euclid(1_000_000),
    }))
}

fn escape_into(out: &mut String, text: &str, special: &[char]) {
    for c in text.chars() {
        if special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(p: &Record) -> Value {
        serde_json::from_slice(&p.value).expect("json")
    }

    #[test]
    fn types_tags_and_canonical_keys() {
        let body = "cpu,region=west,host=a usage=0.5,count=3i,big=18446744073709551615u,name=\"x y\",ok=true,bad=F 1700000000000000000\n";
        let points = parse_all(body, Precision::Ns, 0, Format::Json).expect("parses");
        assert_eq!(points.len(), 1);
        let p = &points[0];
        assert_eq!(&p.key[..], b"cpu,host=a,region=west");
        assert_eq!(p.timestamp_ms, 1_700_000_000_000);
        let v = value(p);
        assert_eq!(v["measurement"], "cpu");
        assert_eq!(v["tags"]["host"], "a");
        assert_eq!(v["fields"]["usage"], 0.5);
        assert_eq!(v["fields"]["count"], 3);
        assert_eq!(v["fields"]["big"], u64::MAX);
        assert_eq!(v["fields"]["name"], "x y");
        assert_eq!(v["fields"]["ok"], true);
        assert_eq!(v["fields"]["bad"], false);
        assert_eq!(v["timestamp_ns"], 1_700_000_000_000_000_000i64);
    }

    #[test]
    fn escaping() {
        let body = r#"my\ meas\,ure,ta\=g=v\ a\,l f\ 1="say \"hi\", \\ ok" 1"#;
        let points = parse_all(body, Precision::S, 0, Format::Json).expect("parses");
        let v = value(&points[0]);
        assert_eq!(v["measurement"], "my meas,ure");
        assert_eq!(v["tags"]["ta=g"], "v a,l");
        assert_eq!(v["fields"]["f 1"], r#"say "hi", \ ok"#);
        assert_eq!(v["timestamp_ns"], 1_000_000_000);
        // The key keeps line protocol's escaping, so it is unambiguous.
        assert_eq!(&points[0].key[..], br"my\ meas\,ure,ta\=g=v\ a\,l");
    }

    #[test]
    fn comments_empty_lines_crlf_and_precision() {
        let body = "# a comment\n\n  \nm f=1i 5\r\n# another\nm f=2i\n";
        let points = parse_all(body, Precision::Ms, 42_000_000, Format::Json).expect("parses");
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].timestamp_ms, 5);
        assert_eq!(points[1].timestamp_ms, 42, "now when the line has none");
        assert_eq!(Precision::parse("u"), Some(Precision::Us));
        assert_eq!(Precision::parse("h"), None);
    }

    #[test]
    fn errors_name_the_line() {
        let body = "m f=1\n\n# c\nm,t=1 f=\"unterminated\nm f=1\n";
        let e = parse_all(body, Precision::Ns, 0, Format::Json).expect_err("refused");
        assert_eq!(e.line, 4, "{e}");
        for (body, line) in [
            ("m f=1\nm", 2),
            ("m f=1\nm f=1 notatime", 2),
            ("m f=1i\nm f=1x", 2),
            ("m,t=a,t=b f=1", 1),
            ("m f=99999999999999999999i", 1),
            ("m f=1 9223372036854775807", 1),
            ("\n\n\nm,t f=1", 4),
            ("m f=1\n\x00", 2),
        ] {
            let e = parse_all(body, Precision::S, 0, Format::Json).expect_err(body);
            assert_eq!(e.line, line, "{body:?}: {e}");
            assert!(!e.reason.is_empty());
        }
    }

    #[test]
    fn a_quoted_newline_stays_in_its_line() {
        let body = "m s=\"a\nb\" 1\nm f=2 2\nbroken";
        let (points, errors) = parse_lossy(body, Precision::Ns, 0, Format::Json);
        assert_eq!(points.len(), 2);
        assert_eq!(value(&points[0])["fields"]["s"], "a\nb");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 4);
    }

    #[test]
    fn arbitrary_input_never_panics() {
        // A small deterministic fuzz: random splices of line-protocol
        // characters, every prefix of a valid body, and byte flips.
        let alphabet: &[u8] = b"m,=\\ \"\n\r#tf01iu.-eE\tTx\x00";
        let mut seed: u64 = 0x5eed_1234_abcd_0001;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse_all(&text, Precision::Ns, 0, Format::Json);
            let _ = parse_lossy(&text, Precision::S, 0, Format::Json);
        }
        let valid = "cpu,host=a\\ b f=1.5,s=\"q\\\"\",i=-3i,u=4u,b=t 1700000000\n";
        for n in 0..=valid.len() {
            if let Some(prefix) = valid.get(..n) {
                let _ = parse_all(prefix, Precision::S, 0, Format::Json);
            }
        }
    }
}
