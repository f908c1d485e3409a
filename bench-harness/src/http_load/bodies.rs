//! The request bodies of an HTTP ingest load, encoded before the run so
//! that the writers' CPU goes to sending: Prometheus remote-write 1.0
//! (`prometheus.WriteRequest`, protobuf through prost's derive, in a
//! snappy block) and Influx line protocol, both over a pool of series
//! whose label sets look like a node_exporter and application fleet.

use bytes::Bytes;
use prost::Message;

/// Metric names of the remote-write series, with the extra label each
/// takes (name and the values it cycles through), as node_exporter and
/// instrumented services expose them.
const METRICS: [(&str, &str, &[&str]); 8] = [
    (
        "node_cpu_seconds_total",
        "mode",
        &["idle", "user", "system", "iowait"],
    ),
    ("node_memory_MemAvailable_bytes", "", &[]),
    (
        "node_network_receive_bytes_total",
        "device",
        &["eth0", "eth1", "lo"],
    ),
    (
        "node_disk_written_bytes_total",
        "device",
        &["nvme0n1", "nvme1n1", "sda"],
    ),
    ("node_load1", "", &[]),
    ("http_requests_total", "code", &["200", "201", "404", "500"]),
    (
        "http_request_duration_seconds_sum",
        "handler",
        &["/api/v1/query", "/api/v1/write", "/metrics", "/health"],
    ),
    ("process_resident_memory_bytes", "", &[]),
];

/// Influx measurements, with their tag beyond host/region/env and fields.
const MEASUREMENTS: [(&str, &str, &[&str], &[&str]); 4] = [
    (
        "cpu",
        "cpu",
        &["cpu0", "cpu1", "cpu2", "cpu3", "cpu-total"],
        &["usage_user", "usage_system", "usage_idle", "usage_iowait"],
    ),
    (
        "mem",
        "",
        &[],
        &["used_percent", "available", "buffered", "cached"],
    ),
    (
        "diskio",
        "name",
        &["nvme0n1", "nvme1n1", "sda"],
        &["reads", "writes", "read_bytes", "write_bytes"],
    ),
    (
        "net",
        "interface",
        &["eth0", "eth1"],
        &["bytes_recv", "bytes_sent", "packets_recv", "packets_sent"],
    ),
];

const REGIONS: [&str; 4] = ["eu-west-1", "us-east-1", "us-west-2", "ap-south-1"];
const ENVS: [&str; 3] = ["prod", "staging", "canary"];
const JOBS: [&str; 3] = ["node", "api", "ingest"];

/// One series' labels, sorted by name as Prometheus sends them (the
/// `__name__` first).
pub fn series_labels(i: u32) -> Vec<(String, String)> {
    let (name, extra, values) = METRICS[i as usize % METRICS.len()];
    let instance = i / METRICS.len() as u32;
    let mut labels = vec![
        ("__name__".to_string(), name.to_string()),
        (
            "env".to_string(),
            ENVS[instance as usize % ENVS.len()].into(),
        ),
        (
            "instance".to_string(),
            format!(
                "10.{}.{}.{}:9100",
                instance >> 16 & 255,
                instance >> 8 & 255,
                instance & 255
            ),
        ),
        (
            "job".to_string(),
            JOBS[instance as usize % JOBS.len()].into(),
        ),
        (
            "region".to_string(),
            REGIONS[instance as usize % REGIONS.len()].into(),
        ),
    ];
    if !extra.is_empty() {
        // `instance` already keeps the series apart; the extra label's
        // value varies over the fleet as a mode or device would.
        let v = values[(instance as usize / METRICS.len()) % values.len()];
        labels.push((extra.to_string(), v.to_string()));
    }
    labels.sort();
    labels
}

/// One Influx series (measurement and tags, canonical order) and its fields.
pub fn series_line_head(i: u32) -> (String, &'static [&'static str]) {
    let (m, extra, values, fields) = MEASUREMENTS[i as usize % MEASUREMENTS.len()];
    let host = i / MEASUREMENTS.len() as u32;
    let mut head = format!(
        "{m},env={},host=host-{host:05}",
        ENVS[host as usize % ENVS.len()]
    );
    if !extra.is_empty() {
        head.push_str(&format!(
            ",{extra}={}",
            values[(host as usize / MEASUREMENTS.len()) % values.len()]
        ));
    }
    head.push_str(&format!(
        ",region={}",
        REGIONS[host as usize % REGIONS.len()]
    ));
    (head, fields)
}

/// A sample value that changes from round to round as counters and gauges do.
fn value(series: u32, round: u32, k: u32) -> f64 {
    let base = f64::from(series % 997) * 13.7;
    base + f64::from(round) * 1.5 + f64::from(k) * 0.25
}

/// `prometheus.WriteRequest` (remote-write 1.0), the fields written.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// Series `first..first + count` (modulo `series`) with `samples` samples
/// each, 15 s apart (a scrape interval), as a snappy-compressed WriteRequest.
pub fn remote_write_body(
    series: u32,
    first: u32,
    count: u32,
    samples: u32,
    round: u32,
    now_ms: i64,
) -> Bytes {
    let timeseries = (0..count)
        .map(|j| {
            let i = (first + j) % series;
            TimeSeries {
                labels: series_labels(i)
                    .into_iter()
                    .map(|(name, value)| Label { name, value })
                    .collect(),
                samples: (0..samples)
                    .map(|k| Sample {
                        value: value(i, round, k),
                        timestamp: now_ms + i64::from(round * samples + k) * 15_000,
                    })
                    .collect(),
            }
        })
        .collect();
    let proto = WriteRequest { timeseries }.encode_to_vec();
    // Only an input past snap's 4 GiB bound fails; bodies are far smaller.
    let block = snap::raw::Encoder::new()
        .compress_vec(&proto)
        .unwrap_or_default();
    Bytes::from(block)
}

/// Series `first..first + count` (modulo `series`) as line protocol, one
/// line per series with `fields` fields, nanosecond timestamps.
pub fn influx_body(
    series: u32,
    first: u32,
    count: u32,
    fields: u32,
    round: u32,
    now_ns: i64,
) -> Bytes {
    let mut out = String::with_capacity(count as usize * 160);
    for j in 0..count {
        let i = (first + j) % series;
        let (head, names) = series_line_head(i);
        out.push_str(&head);
        for k in 0..fields {
            out.push(if k == 0 { ' ' } else { ',' });
            let name = names[k as usize % names.len()];
            if k as usize >= names.len() {
                out.push_str(&format!("{name}_{}", k as usize / names.len()));
            } else {
                out.push_str(name);
            }
            out.push_str(&format!("={}", value(i, round, k)));
        }
        out.push_str(&format!(
            " {}\n",
            now_ns + i64::from(round) * 15_000_000_000
        ));
    }
    Bytes::from(out)
}

/// Every body of a run: `rounds` passes over the series, each cut into
/// requests of `per_request` series; a writer sends them in turn.
#[derive(Debug, Clone)]
pub struct Bodies {
    pub bodies: Vec<Bytes>,
    /// Samples in each body (the last request of a pass may be short).
    pub samples: Vec<u64>,
}

/// Passes over the series encoded ahead of the run, so that timestamps
/// and values move between rounds (a broker that kept only the latest
/// sample of a series would still see new data) while memory stays bound.
pub const ROUNDS: u32 = 4;

impl Bodies {
    pub fn encode(
        protocol: &str,
        series: u32,
        per_request: u32,
        samples_per_series: u32,
        now_ns: i64,
    ) -> Bodies {
        let per_request = per_request.clamp(1, series.max(1));
        let mut bodies = Vec::new();
        let mut samples = Vec::new();
        for round in 0..ROUNDS {
            let mut first = 0;
            while first < series {
                let count = per_request.min(series - first);
                bodies.push(match protocol {
                    "influx" => {
                        influx_body(series, first, count, samples_per_series, round, now_ns)
                    }
                    _ => remote_write_body(
                        series,
                        first,
                        count,
                        samples_per_series,
                        round,
                        now_ns / 1_000_000,
                    ),
                });
                samples.push(u64::from(count) * u64::from(samples_per_series));
                first += count;
            }
        }
        Bodies { bodies, samples }
    }

    pub fn bytes(&self) -> usize {
        self.bodies.iter().map(Bytes::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_series_has_its_own_label_set() {
        let sets: BTreeSet<_> = (0..10_000).map(series_labels).collect();
        assert_eq!(sets.len(), 10_000);
        let heads: BTreeSet<_> = (0..10_000).map(|i| series_line_head(i).0).collect();
        assert_eq!(heads.len(), 10_000);
        let l = series_labels(8);
        let names: Vec<_> = l.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["__name__", "env", "instance", "job", "mode", "region"]
        );
        assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted by name");
    }

    #[test]
    fn remote_write_bodies_decode_to_what_was_meant() {
        let body = remote_write_body(100, 90, 20, 2, 1, 1_700_000_000_000);
        let proto = snap::raw::Decoder::new()
            .decompress_vec(&body)
            .expect("a snappy block");
        let req = WriteRequest::decode(proto.as_slice()).expect("a WriteRequest");
        assert_eq!(req.timeseries.len(), 20);
        let last = &req.timeseries[19];
        // Series wrap around: the 20th from 90 is series 9.
        let want: Vec<_> = series_labels(9)
            .into_iter()
            .map(|(name, value)| Label { name, value })
            .collect();
        assert_eq!(last.labels, want);
        assert_eq!(last.samples.len(), 2);
        assert_eq!(last.samples[0].timestamp, 1_700_000_000_000 + 2 * 15_000);
        assert_eq!(
            last.samples[1].timestamp - last.samples[0].timestamp,
            15_000
        );
    }

    #[test]
    fn influx_bodies_are_one_line_per_series() {
        let body = influx_body(8, 6, 3, 5, 0, 1_700_000_000_000_000_000);
        let text = std::str::from_utf8(&body).expect("utf-8");
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("diskio,env="), "{}", lines[0]);
        // Five fields from four names: the fifth is named apart.
        assert!(lines[0].contains(",reads_1="), "{}", lines[0]);
        assert!(lines[2].ends_with(" 1700000000000000000"));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn bodies_cover_every_series_each_round() {
        let b = Bodies::encode("remote-write", 1000, 300, 1, 0);
        // 300 + 300 + 300 + 100, four rounds.
        assert_eq!(b.bodies.len(), 16);
        assert_eq!(b.samples.iter().sum::<u64>(), 4000);
        assert_eq!(b.samples[3], 100);
        let i = Bodies::encode("influx", 10, 10, 4, 0);
        assert_eq!(i.samples, vec![40; ROUNDS as usize]);
        assert!(i.bytes() > 0);
    }
}
