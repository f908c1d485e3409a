//! Prometheus remote-write to records. A request body is a snappy block
//! holding a protobuf `prometheus.WriteRequest` (remote-write 1.0) or an
//! `io.prometheus.write.v2.Request` (2.0, labels as references into a
//! symbol table); the messages are declared here with prost's derive,
//! holding only the fields Sluice stores (the decoder skips the others:
//! exemplars, native histograms, metadata).
//!
//! Each series of a request becomes one record: key = the series in
//! Prometheus notation (`name{label="value",...}`, labels sorted by name),
//! timestamp = its first sample's, value = JSON
//! `{"name":..,"labels":{..},"samples":[{"timestamp_ms":..,"value":..}]}`
//! (non-finite values as the strings "NaN", "+Inf", "-Inf") or, in the raw
//! format, the series as a protobuf `prometheus.TimeSeries`.

use bytes::Bytes;
use prost::Message;
use serde_json::{Map, Value};

use super::{Format, Record};

/// `prometheus.WriteRequest` (remote-write 1.0).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.WriteRequest` as it is read: each series left as its bytes,
/// a slice of the body, so that the raw format can store a series as sent.
#[derive(Clone, PartialEq, prost::Message)]
struct WriteRequestWire {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    timeseries: Vec<Bytes>,
}

/// `prometheus.TimeSeries`; also the raw format's record value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// Name and value are protobuf strings, held as slices of the request
/// body (decoded from a `Bytes`, prost shares it rather than allocating two
/// `String`s per label); `push_series` checks that they are UTF-8.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, prost::Message)]
pub struct Label {
    #[prost(bytes = "bytes", tag = "1")]
    pub name: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

/// A sample in both versions: value, then milliseconds since the epoch.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `io.prometheus.write.v2.Request`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RequestV2 {
    #[prost(string, repeated, tag = "4")]
    pub symbols: Vec<String>,
    #[prost(message, repeated, tag = "5")]
    pub timeseries: Vec<TimeSeriesV2>,
}

/// `io.prometheus.write.v2.TimeSeries`: label name and value pairs as
/// indexes into the request's symbols.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeriesV2 {
    #[prost(uint32, repeated, tag = "1")]
    pub labels_refs: Vec<u32>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// The protocol version a request is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    /// Reads a Content-Type: `application/x-protobuf`, with `proto=`
    /// naming the message (none means 1.0, as 1.0 senders send it).
    pub fn from_content_type(content_type: &str) -> Result<Version, String> {
        let mut parts = content_type.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default();
        if !media.eq_ignore_ascii_case("application/x-protobuf") {
            return Err(format!(
                "Content-Type {content_type:?} is not application/x-protobuf"
            ));
        }
        let proto = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("proto"))
            .map(|(_, v)| v.trim().trim_matches('"'));
        match proto {
            None | Some("prometheus.WriteRequest") => Ok(Version::V1),
            Some("io.prometheus.write.v2.Request") => Ok(Version::V2),
            Some(other) => Err(format!("proto={other} is not a remote-write message")),
        }
    }
}

/// A decoded request: its records and the samples they hold.
#[derive(Debug, Default)]
pub struct Decoded {
    pub records: Vec<Record>,
    pub samples: u64,
}

/// Decompresses a snappy block, refusing one that claims more than `max`
/// bytes before any allocation. `Err` says why (the caller answers 400,
/// or 413 for the size).
pub fn decompress(body: &[u8], max: usize) -> Result<Vec<u8>, (u16, String)> {
    let len = snap::raw::decompress_len(body)
        .map_err(|e| (400, format!("body is not a snappy block: {e}")))?;
    if len > max {
        return Err((
            413,
            format!("body of {len} bytes once decompressed is over {max}"),
        ));
    }
    snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| (400, format!("body is not a snappy block: {e}")))
}

/// Decodes a (decompressed) request into records; the first bad series
/// refuses the whole request, so a write is all or nothing.
pub fn decode(body: Bytes, version: Version, format: Format) -> Result<Decoded, String> {
    let mut out = Decoded::default();
    match version {
        Version::V1 => {
            let req =
                WriteRequestWire::decode(body).map_err(|e| format!("not a WriteRequest: {e}"))?;
            for (i, sent) in req.timeseries.into_iter().enumerate() {
                let ts = TimeSeries::decode(sent.clone())
                    .map_err(|e| format!("not a WriteRequest: series {i}: {e}"))?;
                push_series(&mut out, i, ts.labels, ts.samples, Some(sent), format)?;
            }
        }
        Version::V2 => {
            let RequestV2 {
                symbols,
                timeseries,
            } = RequestV2::decode(body)
                .map_err(|e| format!("not an io.prometheus.write.v2.Request: {e}"))?;
            let symbols: Vec<Bytes> = symbols.into_iter().map(Bytes::from).collect();
            let symbol = |i: usize, r: u32| {
                symbols
                    .get(r as usize)
                    .cloned()
                    .ok_or_else(|| format!("series {i}: label reference {r} is past the symbols"))
            };
            for (i, ts) in timeseries.into_iter().enumerate() {
                if ts.labels_refs.len() % 2 != 0 {
                    return Err(format!("series {i}: an odd number of label references"));
                }
                let mut labels = Vec::with_capacity(ts.labels_refs.len() / 2);
                for pair in ts.labels_refs.chunks_exact(2) {
                    labels.push(Label {
                        name: symbol(i, pair[0])?,
                        value: symbol(i, pair[1])?,
                    });
                }
                push_series(&mut out, i, labels, ts.samples, None, format)?;
            }
        }
    }
    Ok(out)
}

/// One series to one record. `sent` is the series' bytes as the request
/// held them (1.0), which the raw format stores as they are when they
/// already say what it would write: labels sorted, nothing it would drop.
fn push_series(
    out: &mut Decoded,
    index: usize,
    mut labels: Vec<Label>,
    samples: Vec<Sample>,
    sent: Option<Bytes>,
    format: Format,
) -> Result<(), String> {
    if samples.is_empty() {
        // Exemplars or histograms only: nothing Sluice stores.
        return Ok(());
    }
    if labels.is_empty() {
        return Err(format!("series {index} has no labels"));
    }
    let was_sorted = labels.is_sorted_by(|a, b| a.name <= b.name);
    labels.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    let text = |b| {
        label_text(b).ok_or_else(|| format!("series {index}: a label name or value is not UTF-8"))
    };
    if let Some(w) = labels.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(format!(
            "series {index}: label {} is repeated",
            String::from_utf8_lossy(&w[0].name)
        ));
    }
    let key_len: usize = labels
        .iter()
        .map(|l| l.name.len() + l.value.len() + 4)
        .sum();
    let mut key = String::with_capacity(key_len + 2);
    let name = match labels.iter().find(|l| l.name == "__name__") {
        Some(l) => Some(text(&l.value)?),
        None => None,
    };
    key.push_str(name.unwrap_or_default());
    key.push('{');
    // Each name and value is checked as it is written into the key.
    let mut first = true;
    for l in &labels {
        let (n, v) = (text(&l.name)?, text(&l.value)?);
        if n.is_empty() {
            return Err(format!(
                "series {index}: a label with an empty name ({v:?})"
            ));
        }
        if n == "__name__" {
            continue;
        }
        if !first {
            key.push(',');
        }
        first = false;
        key.push_str(n);
        key.push_str("=\"");
        if v.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
            for c in v.chars() {
                match c {
                    '\\' => key.push_str("\\\\"),
                    '"' => key.push_str("\\\""),
                    '\n' => key.push_str("\\n"),
                    c => key.push(c),
                }
            }
        } else {
            key.push_str(v);
        }
        key.push('"');
    }
    key.push('}');
    let timestamp_ms = samples[0].timestamp;
    out.samples += samples.len() as u64;
    let value = match format {
        Format::Raw => {
            let ts = TimeSeries { labels, samples };
            match sent {
                Some(sent) if was_sorted && sent.len() == ts.encoded_len() => sent,
                _ => Bytes::from(ts.encode_to_vec()),
            }
        }
        Format::Json => {
            // Every name and value was checked while building the key.
            let owned = |b| label_text(b).unwrap_or_default().to_string();
            let label_map: Map<String, Value> = labels
                .iter()
                .filter(|l| l.name != "__name__")
                .map(|l| (owned(&l.name), Value::String(owned(&l.value))))
                .collect();
            let samples: Vec<Value> = samples
                .iter()
                .map(|s| serde_json::json!({ "timestamp_ms": s.timestamp, "value": number(s.value) }))
                .collect();
            let value =
                serde_json::json!({ "name": name, "labels": label_map, "samples": samples });
            Bytes::from(value.to_string())
        }
    };
    out.records.push(Record {
        key: Bytes::from(key),
        value,
        timestamp_ms,
    });
    Ok(())
}

fn label_text(b: &Bytes) -> Option<&str> {
    std::str::from_utf8(b).ok()
}

/// A sample value in JSON: a number when finite, else Prometheus's spelling.
fn number(v: f64) -> Value {
    match serde_json::Number::from_f64(v) {
        Some(n) => Value::Number(n),
        None if v.is_nan() => Value::String("NaN".into()),
        None if v > 0.0 => Value::String("+Inf".into()),
        None => Value::String("-Inf".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(name: &str, value: &str) -> Label {
        Label {
            name: Bytes::copy_from_slice(name.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
        }
    }

    fn sample(timestamp: i64, value: f64) -> Sample {
        Sample { value, timestamp }
    }

    fn json(r: &Record) -> Value {
        serde_json::from_slice(&r.value).expect("json")
    }

    #[test]
    fn v1_series_become_keyed_json_records() {
        let req = WriteRequest {
            timeseries: vec![
                TimeSeries {
                    labels: vec![
                        label("job", "node"),
                        label("__name__", "up"),
                        label("instance", "a:9100"),
                    ],
                    samples: vec![sample(1_000, 1.0), sample(2_000, f64::NAN)],
                },
                TimeSeries {
                    labels: vec![label("__name__", "temp"), label("room", "say \"hi\"\n")],
                    samples: vec![sample(5, f64::NEG_INFINITY)],
                },
                // Histograms only: no record.
                TimeSeries {
                    labels: vec![label("__name__", "h")],
                    samples: vec![],
                },
            ],
        };
        let body = req.encode_to_vec();
        let d = decode(Bytes::copy_from_slice(&body), Version::V1, Format::Json).expect("decodes");
        assert_eq!((d.records.len(), d.samples), (2, 3));
        let r = &d.records[0];
        assert_eq!(&r.key[..], br#"up{instance="a:9100",job="node"}"#);
        assert_eq!(r.timestamp_ms, 1_000);
        let v = json(r);
        assert_eq!(v["name"], "up");
        assert_eq!(v["labels"]["job"], "node");
        assert!(v["labels"].get("__name__").is_none());
        assert_eq!(v["samples"][0]["value"], 1.0);
        assert_eq!(v["samples"][1]["value"], "NaN");
        assert_eq!(v["samples"][1]["timestamp_ms"], 2_000);
        let r = &d.records[1];
        assert_eq!(&r.key[..], br#"temp{room="say \"hi\"\n"}"#);
        assert_eq!(json(r)["samples"][0]["value"], "-Inf");
        assert_eq!(json(r)["labels"]["room"], "say \"hi\"\n");
    }

    #[test]
    fn v2_resolves_symbols_and_matches_v1() {
        let req = RequestV2 {
            symbols: vec![
                "".into(),
                "__name__".into(),
                "up".into(),
                "job".into(),
                "node".into(),
            ],
            timeseries: vec![TimeSeriesV2 {
                labels_refs: vec![3, 4, 1, 2],
                samples: vec![sample(7, 0.5)],
            }],
        };
        let d2 = decode(
            Bytes::copy_from_slice(&req.encode_to_vec()),
            Version::V2,
            Format::Json,
        )
        .expect("v2");
        let v1 = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![label("__name__", "up"), label("job", "node")],
                samples: vec![sample(7, 0.5)],
            }],
        };
        let d1 = decode(
            Bytes::copy_from_slice(&v1.encode_to_vec()),
            Version::V1,
            Format::Json,
        )
        .expect("v1");
        assert_eq!(d1.records, d2.records);
        for bad in [vec![3, 4, 1], vec![3, 99]] {
            let req = RequestV2 {
                symbols: vec!["".into(), "a".into(), "b".into(), "c".into(), "d".into()],
                timeseries: vec![TimeSeriesV2 {
                    labels_refs: bad.clone(),
                    samples: vec![sample(7, 0.5)],
                }],
            };
            assert!(
                decode(
                    Bytes::copy_from_slice(&req.encode_to_vec()),
                    Version::V2,
                    Format::Json
                )
                .is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn raw_records_are_sorted_timeseries() {
        let req = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![label("b", "2"), label("__name__", "m"), label("a", "1")],
                samples: vec![sample(3, 4.0)],
            }],
        };
        let d = decode(
            Bytes::copy_from_slice(&req.encode_to_vec()),
            Version::V1,
            Format::Raw,
        )
        .expect("decodes");
        let ts = TimeSeries::decode(&d.records[0].value[..]).expect("a TimeSeries");
        let names: Vec<&str> = ts
            .labels
            .iter()
            .map(|l| label_text(&l.name).expect("utf-8"))
            .collect();
        assert_eq!(names, ["__name__", "a", "b"]);
        assert_eq!(ts.samples, vec![sample(3, 4.0)]);
    }

    #[test]
    fn malformed_requests_are_refused_whole() {
        let bad_series = [
            vec![],
            vec![label("", "x")],
            vec![label("__name__", "a"), label("__name__", "b")],
            vec![Label {
                name: Bytes::from_static(b"job"),
                value: Bytes::from_static(b"\xff"),
            }],
        ];
        for labels in bad_series {
            let req = WriteRequest {
                timeseries: vec![
                    TimeSeries {
                        labels: vec![label("__name__", "fine")],
                        samples: vec![sample(1, 1.0)],
                    },
                    TimeSeries {
                        labels: labels.clone(),
                        samples: vec![sample(1, 1.0)],
                    },
                ],
            };
            let e = decode(
                Bytes::copy_from_slice(&req.encode_to_vec()),
                Version::V1,
                Format::Json,
            )
            .expect_err("refused");
            assert!(e.contains("series 1"), "{labels:?}: {e}");
        }
        assert!(decode(
            Bytes::copy_from_slice(b"\xff\xff\xff"),
            Version::V1,
            Format::Json
        )
        .is_err());
        // Invalid UTF-8 in a label is refused by the decoder.
        let mut body = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![label("__name__", "ab")],
                samples: vec![sample(1, 1.0)],
            }],
        }
        .encode_to_vec();
        let at = body
            .windows(2)
            .position(|w| w == b"ab")
            .expect("label bytes");
        body[at] = 0xff;
        assert!(decode(Bytes::copy_from_slice(&body), Version::V1, Format::Json).is_err());
    }

    #[test]
    fn content_types_and_snappy_bounds() {
        assert_eq!(
            Version::from_content_type("application/x-protobuf"),
            Ok(Version::V1)
        );
        assert_eq!(
            Version::from_content_type(
                "application/x-protobuf;proto=io.prometheus.write.v2.Request"
            ),
            Ok(Version::V2)
        );
        assert_eq!(
            Version::from_content_type("application/x-protobuf; proto=prometheus.WriteRequest"),
            Ok(Version::V1)
        );
        assert!(Version::from_content_type("application/json").is_err());
        assert!(Version::from_content_type("application/x-protobuf;proto=x.Y").is_err());
        let raw = vec![7u8; 10_000];
        let block = snap::raw::Encoder::new()
            .compress_vec(&raw)
            .expect("compress");
        assert_eq!(decompress(&block, 10_000).expect("fits"), raw);
        assert_eq!(decompress(&block, 9_999).expect_err("too big").0, 413);
        assert_eq!(
            decompress(b"\xff\xff\xff\xff\xff\xff", 100)
                .expect_err("bad")
                .0,
            400
        );
    }

    #[test]
    fn arbitrary_bodies_never_panic() {
        let valid = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![label("__name__", "up"), label("job", "x")],
                samples: vec![sample(1, 1.0), sample(2, 2.0)],
            }],
        }
        .encode_to_vec();
        let mut seed: u64 = 0x00c0_ffee_1234_5678;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for n in 0..=valid.len() {
            let _ = decode(
                Bytes::copy_from_slice(&valid[..n]),
                Version::V1,
                Format::Json,
            );
            let _ = decode(
                Bytes::copy_from_slice(&valid[..n]),
                Version::V2,
                Format::Raw,
            );
        }
        for _ in 0..20_000 {
            let mut v = valid.clone();
            let i = (next() % v.len() as u64) as usize;
            v[i] = next() as u8;
            let _ = decode(Bytes::copy_from_slice(&v), Version::V1, Format::Json);
            let _ = decode(Bytes::copy_from_slice(&v), Version::V2, Format::Json);
            let _ = decompress(&v, 1 << 16);
        }
    }

    #[test]
    fn raw_records_are_the_series_as_sent_unless_they_need_rewriting() {
        let sorted = TimeSeries {
            labels: vec![label("__name__", "up"), label("job", "node")],
            samples: vec![sample(7, 1.0)],
        };
        // The same series with an exemplar field (3, empty), which the raw
        // format does not keep.
        let mut with_exemplar = sorted.encode_to_vec();
        with_exemplar.extend_from_slice(&[0x1a, 0x00]);
        let unsorted = TimeSeries {
            labels: vec![label("job", "node"), label("__name__", "up")],
            samples: vec![sample(7, 1.0)],
        };
        for (sent, why) in [
            (sorted.encode_to_vec(), "as sent"),
            (with_exemplar, "exemplar dropped"),
            (unsorted.encode_to_vec(), "labels sorted"),
        ] {
            let mut body = Vec::new();
            prost::encoding::bytes::encode(1, &sent, &mut body);
            let d = decode(Bytes::from(body), Version::V1, Format::Raw).expect(why);
            assert_eq!(d.records[0].value, sorted.encode_to_vec(), "{why}");
        }
    }
}
