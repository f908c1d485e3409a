//! The HTTP ingest load's request bodies, read by the broker's own
//! decoders: what `sluice-bench --scenario remote-write` and `--scenario
//! influx` send is what the broker stores, series for series.

use bench_harness::http_load::bodies::{influx_body, remote_write_body, series_labels, Bodies};
use broker::config::IngestFormat;
use broker::ingest::influx_line::{parse_all, Precision};
use broker::ingest::remote_write::{decode, decompress, Version};
use bytes::Bytes;

#[test]
fn remote_write_bodies_decode_with_the_broker_s_decoder() {
    let body = remote_write_body(10_000, 9_990, 2_000, 2, 3, 1_700_000_000_000);
    let proto = decompress(&body, 16 << 20).expect("a snappy block the broker reads");
    let json = decode(
        Bytes::copy_from_slice(&proto),
        Version::V1,
        IngestFormat::Json,
    )
    .expect("a WriteRequest");
    assert_eq!(json.records.len(), 2_000);
    assert_eq!(json.samples, 4_000);
    // The 11th series wraps round to series 0; its key is the series in
    // Prometheus notation, from the labels the generator meant.
    let key = std::str::from_utf8(&json.records[10].key).expect("utf-8");
    let labels = series_labels(0);
    assert!(key.starts_with(&format!("{}{{", labels[0].1)), "{key}");
    for (name, value) in labels.iter().skip(1) {
        assert!(key.contains(&format!("{name}=\"{value}\"")), "{key}");
    }
    let raw = decode(
        Bytes::copy_from_slice(&proto),
        Version::V1,
        IngestFormat::Raw,
    )
    .expect("raw");
    assert_eq!(raw.records.len(), 2_000);
    assert_eq!(raw.records[10].key, json.records[10].key);
}

#[test]
fn influx_bodies_parse_with_the_broker_s_parser() {
    let body = influx_body(10_000, 0, 1_000, 4, 0, 1_700_000_000_000_000_000);
    let text = std::str::from_utf8(&body).expect("utf-8");
    for format in [IngestFormat::Json, IngestFormat::Raw] {
        let records = parse_all(text, Precision::Ns, 0, format).expect("valid line protocol");
        assert_eq!(records.len(), 1_000);
        assert_eq!(records[0].timestamp_ms, 1_700_000_000_000);
    }
    let json = parse_all(text, Precision::Ns, 0, IngestFormat::Json).expect("json");
    let value: serde_json::Value = serde_json::from_slice(&json[0].value).expect("a JSON record");
    assert_eq!(value["fields"].as_object().map(|f| f.len()), Some(4));
}

#[test]
fn every_pre_encoded_body_is_accepted() {
    for protocol in ["remote-write", "influx"] {
        let b = Bodies::encode(protocol, 3_000, 1_000, 1, 1_700_000_000_000_000_000);
        for (body, samples) in b.bodies.iter().zip(&b.samples) {
            let n = if protocol == "influx" {
                let text = std::str::from_utf8(body).expect("utf-8");
                parse_all(text, Precision::Ns, 0, IngestFormat::Raw)
                    .expect("line protocol")
                    .len() as u64
            } else {
                let proto = decompress(body, 16 << 20).expect("snappy");
                decode(
                    Bytes::copy_from_slice(&proto),
                    Version::V1,
                    IngestFormat::Raw,
                )
                .expect("WriteRequest")
                .samples
            };
            assert_eq!(n, *samples, "{protocol}");
        }
    }
}
