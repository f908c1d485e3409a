//! Benchmark scenarios: TOML files in `perf/scenarios/` (the shipped ones
//! are also built into the binary), overridden field by field from the
//! command line, and checked before anything connects. A scenario is a
//! Kafka-protocol load, or with an `[http]` table an HTTP metrics-ingest
//! load; either may carry `[[goals]]`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::client::records::{parse_compression, VALUE_HEADER_BYTES};
use crate::error::{BenchError, Result};
use crate::goals::Goal;

mod http;

pub use http::{
    HttpLoad, HTTP_PROTOCOLS, HTTP_SERIES_MAX, HTTP_SERIES_PER_REQUEST_MAX, INGEST_FORMATS,
};

pub const BUILTIN: [(&str, &str); 11] = [
    (
        "default",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../perf/scenarios/default.toml"
        )),
    ),
    (
        "metrics-ingest",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../perf/scenarios/metrics-ingest.toml"
        )),
    ),
    (
        "large-records",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../perf/scenarios/large-records.toml"
        )),
    ),
    (
        "fan-out",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../perf/scenarios/fan-out.toml"
        )),
    ),
    (
        "goals",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../perf/scenarios/goals.toml"
        )),
    ),
    (
        "replicated-acks1",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../perf/scenarios/replicated-acks1.toml"
        )),
    ),
    (
        "replicated-acksall",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../perf/scenarios/replicated-acksall.toml"
        )),
    ),
    (
        "small-batches",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../perf/scenarios/small-batches.toml"
        )),
    ),
    (
        "catch-up",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../perf/scenarios/catch-up.toml"
        )),
    ),
    (
        "remote-write",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../perf/scenarios/remote-write.toml"
        )),
    ),
    (
        "influx",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../perf/scenarios/influx.toml"
        )),
    ),
];

/// The names of the built-in scenarios, comma-separated.
pub fn builtin_names() -> String {
    BUILTIN.map(|(n, _)| n).join(", ")
}

/// Nodes of an embedded cluster, at most: each is a process with its own
/// controller voter, listener and replication links on loopback.
pub const CLUSTER_NODES_MAX: u32 = 9;

pub const PROFILES: [&str; 3] = ["durable", "balanced", "throughput"];

/// Everything a run does; the JSON report carries it back verbatim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// Measured seconds, after the warm-up.
    pub duration_s: f64,
    /// Seconds of load before measuring starts.
    pub warmup_s: f64,
    /// Empty: a fresh `sluice-bench-<random>` topic per run.
    pub topic: String,
    pub partitions: i32,
    pub replication_factor: i16,
    /// Producer connections (per leader broker).
    pub producers: u32,
    pub record_bytes: usize,
    /// 0: records without keys; K: keys drawn uniformly from K.
    pub keys: u64,
    /// 0, 1 or -1 (all).
    pub acks: i16,
    /// Bytes of records per partition batch before it is sent.
    pub batch_bytes: usize,
    /// How long a partial batch may wait for more records.
    pub linger_ms: f64,
    /// none, gzip, snappy, lz4 or zstd.
    pub compression: String,
    /// Records/s over all producers; 0 = as fast as possible.
    pub rate: f64,
    /// At a fixed rate, records each producer makes at once (same rate,
    /// fewer and fuller requests, like an agent sending a scrape); 1: evenly
    /// spaced.
    pub burst: u64,
    /// Produce requests in flight per connection.
    pub in_flight: usize,
    /// Tailing consumers, each reading every partition.
    pub consumers: u32,
    /// Read the whole backlog from offset 0 after the run.
    pub catch_up: bool,
    /// Harness shards (one glommio executor per core).
    pub cores: usize,
    /// Broker profile for the embedded broker.
    pub profile: String,
    /// Shards of the embedded broker (of each node of an embedded cluster).
    pub broker_cores: usize,
    /// Nodes of the embedded Sluice: 1, a single node (the default); N > 1,
    /// a local N-node cluster on loopback, every node a controller voter.
    /// Ignored with `--bootstrap` (refused there when above 1).
    pub cluster_nodes: u32,
    /// An HTTP metrics-ingest load instead of Kafka producers: `rate` is
    /// then samples/s, and the producer and consumer fields are unused.
    pub http: Option<HttpLoad>,
    /// What the run should reach; the compare report judges each.
    pub goals: Vec<Goal>,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            name: "custom".into(),
            description: String::new(),
            duration_s: 10.0,
            warmup_s: 2.0,
            topic: String::new(),
            partitions: 4,
            replication_factor: 1,
            producers: 2,
            record_bytes: 1024,
            keys: 0,
            acks: 1,
            batch_bytes: 64 << 10,
            linger_ms: 1.0,
            compression: "none".into(),
            rate: 0.0,
            burst: 1,
            in_flight: 4,
            consumers: 1,
            catch_up: true,
            cores: 1,
            profile: "balanced".into(),
            broker_cores: 1,
            cluster_nodes: 1,
            http: None,
            goals: Vec::new(),
        }
    }
}

/// Command-line fields that override the scenario's.
#[derive(Debug, Clone, Default, clap::Args, Serialize)]
pub struct Overrides {
    /// Measured seconds (after the warm-up).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Warm-up seconds, excluded from the figures.
    #[arg(long)]
    pub warmup: Option<f64>,
    #[arg(long)]
    pub topic: Option<String>,
    #[arg(long)]
    pub partitions: Option<i32>,
    #[arg(long)]
    pub replication_factor: Option<i16>,
    /// Producer connections.
    #[arg(long)]
    pub producers: Option<u32>,
    /// Bytes per record value (at least 12: the send-time stamp).
    #[arg(long)]
    pub record_bytes: Option<usize>,
    /// 0 = no keys; K = keys uniform over K distinct values.
    #[arg(long)]
    pub keys: Option<u64>,
    /// 0, 1 or -1 (all).
    #[arg(long, allow_negative_numbers = true)]
    pub acks: Option<i16>,
    /// Bytes per partition batch.
    #[arg(long)]
    pub batch_bytes: Option<usize>,
    #[arg(long)]
    pub linger_ms: Option<f64>,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long)]
    pub compression: Option<String>,
    /// Target records/s over all producers; 0 = as fast as possible.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Records each producer makes at once at a fixed rate (1 = evenly spaced).
    #[arg(long)]
    pub burst: Option<u64>,
    /// Produce requests in flight per connection.
    #[arg(long)]
    pub in_flight: Option<usize>,
    /// Tailing consumers measuring end-to-end latency.
    #[arg(long)]
    pub consumers: Option<u32>,
    /// Read the backlog from offset 0 at the end (true/false).
    #[arg(long)]
    pub catch_up: Option<bool>,
    /// Harness cores (glommio executors).
    #[arg(long)]
    pub cores: Option<usize>,
    /// Embedded broker profile: durable, balanced or throughput.
    #[arg(long)]
    pub profile: Option<String>,
    /// Embedded broker cores (per node with --cluster).
    #[arg(long)]
    pub broker_cores: Option<usize>,
    /// Start a local N-node Sluice cluster instead of a single node; the
    /// topic's replication factor becomes N unless --replication-factor
    /// says otherwise (scenario key `cluster_nodes`).
    #[arg(long, value_name = "N")]
    pub cluster: Option<u32>,
    /// HTTP ingest scenarios: the broker's --ingest-format, raw or json.
    #[arg(long)]
    pub ingest_format: Option<String>,
    /// HTTP ingest scenarios: concurrent writer connections.
    #[arg(long)]
    pub writers: Option<u32>,
    /// HTTP ingest scenarios: distinct series.
    #[arg(long)]
    pub series: Option<u32>,
    /// HTTP ingest scenarios: series per request.
    #[arg(long)]
    pub series_per_request: Option<u32>,
    /// HTTP ingest scenarios: samples/s of the latency phase (0: half the
    /// goal, or half the peak).
    #[arg(long)]
    pub latency_rate: Option<f64>,
}

impl Overrides {
    /// The flags that only an HTTP ingest scenario takes, given.
    pub fn http_flags(&self) -> Vec<&'static str> {
        [
            ("--ingest-format", self.ingest_format.is_some()),
            ("--writers", self.writers.is_some()),
            ("--series", self.series.is_some()),
            ("--series-per-request", self.series_per_request.is_some()),
            ("--latency-rate", self.latency_rate.is_some()),
        ]
        .into_iter()
        .filter_map(|(f, given)| given.then_some(f))
        .collect()
    }
}

impl Scenario {
    pub fn parse(text: &str, origin: &Path) -> Result<Scenario> {
        let s: Scenario = toml::from_str(text).map_err(|e| BenchError::Scenario {
            path: origin.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(s)
    }

    /// A built-in name (`default`, `metrics-ingest`, ...), a name under
    /// `./perf/scenarios/`, or a path to a TOML file.
    pub fn load(name_or_path: &str) -> Result<Scenario> {
        let as_path = PathBuf::from(name_or_path);
        let local = Path::new("perf/scenarios").join(format!("{name_or_path}.toml"));
        for candidate in [&as_path, &local] {
            if candidate.is_file() {
                let text = std::fs::read_to_string(candidate)
                    .map_err(|e| BenchError::io(format!("reading {}", candidate.display()), e))?;
                return Scenario::parse(&text, candidate);
            }
        }
        if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            return Scenario::parse(text, Path::new(name_or_path));
        }
        Err(BenchError::Scenario {
            path: as_path,
            message: format!(
                "no such file, and not a built-in scenario ({})",
                builtin_names()
            ),
        })
    }

    pub fn apply(&mut self, o: &Overrides) {
        macro_rules! set {
            ($($field:ident <- $flag:ident),* $(,)?) => {
                $(if let Some(v) = &o.$flag { self.$field = v.clone(); })*
            };
        }
        set!(
            duration_s <- duration, warmup_s <- warmup, topic <- topic,
            partitions <- partitions, replication_factor <- replication_factor,
            producers <- producers, record_bytes <- record_bytes, keys <- keys,
            acks <- acks, batch_bytes <- batch_bytes, linger_ms <- linger_ms,
            compression <- compression, rate <- rate, burst <- burst, in_flight <- in_flight,
            consumers <- consumers, catch_up <- catch_up, cores <- cores,
            profile <- profile, broker_cores <- broker_cores, cluster_nodes <- cluster,
        );
        if let (Some(n), None) = (o.cluster, o.replication_factor) {
            self.replication_factor = i16::try_from(n).unwrap_or(i16::MAX);
        }
        if let Some(h) = self.http.as_mut() {
            macro_rules! set_http {
                ($($field:ident <- $flag:ident),* $(,)?) => {
                    $(if let Some(v) = &o.$flag { h.$field = v.clone(); })*
                };
            }
            set_http!(
                ingest_format <- ingest_format, writers <- writers, series <- series,
                series_per_request <- series_per_request, latency_rate <- latency_rate,
            );
        }
    }

    /// The ingest format of an HTTP run, none for a Kafka one: goals
    /// can be bound to it.
    pub fn ingest_format(&self) -> Option<&str> {
        self.http.as_ref().map(|h| h.ingest_format.as_str())
    }

    /// True when the embedded broker is a cluster of several nodes.
    pub fn is_cluster(&self) -> bool {
        self.cluster_nodes > 1
    }

    /// acks as Kafka clients write it: `all` for -1.
    pub fn acks_name(&self) -> String {
        match self.acks {
            -1 => "all".to_string(),
            a => a.to_string(),
        }
    }

    /// Refuses what cannot run, naming the field, the value and what is allowed.
    pub fn validate(&self) -> Result<()> {
        fn bad(key: &'static str, value: impl ToString, allowed: &str) -> Result<()> {
            Err(BenchError::Config {
                key,
                value: value.to_string(),
                allowed: allowed.to_string(),
            })
        }
        let cores_available = std::thread::available_parallelism().map_or(1, |n| n.get());
        if !(self.duration_s > 0.0 && self.duration_s <= 86_400.0) {
            return bad(
                "duration",
                self.duration_s,
                "more than 0 and at most 86400 seconds",
            );
        }
        if !(0.0..=3600.0).contains(&self.warmup_s) {
            return bad("warmup", self.warmup_s, "0 to 3600 seconds");
        }
        if !(1..=100_000).contains(&self.partitions) {
            return bad("partitions", self.partitions, "1 to 100000");
        }
        if !(1..=CLUSTER_NODES_MAX).contains(&self.cluster_nodes) {
            return bad(
                "cluster",
                self.cluster_nodes,
                &format!("1 (a single node) to {CLUSTER_NODES_MAX} nodes"),
            );
        }
        if self.replication_factor < 1 {
            return bad("replication-factor", self.replication_factor, "at least 1");
        }
        if self.producers > 10_000 {
            return bad("producers", self.producers, "0 to 10000");
        }
        if self.consumers > 1_000 {
            return bad("consumers", self.consumers, "0 to 1000");
        }
        for g in &self.goals {
            if let Err(why) = g.check() {
                return bad("goals", why, "one finite at_most or at_least per goal");
            }
            if let Some(p) = &g.profile {
                if !PROFILES.contains(&p.as_str()) {
                    return bad("goals", p, "profile durable, balanced or throughput");
                }
            }
            if let Some(f) = &g.ingest_format {
                if !INGEST_FORMATS.contains(&f.as_str()) {
                    return bad("goals", f, "ingest_format raw or json");
                }
            }
        }
        if let Some(h) = &self.http {
            return self.validate_http(h);
        }
        if self.producers == 0 && self.consumers == 0 {
            return bad("producers", 0, "at least one producer or consumer");
        }
        if !(VALUE_HEADER_BYTES..=16 << 20).contains(&self.record_bytes) {
            return bad(
                "record-bytes",
                self.record_bytes,
                "12 (the send-time stamp) to 16 MiB",
            );
        }
        if ![0, 1, -1].contains(&self.acks) {
            return bad("acks", self.acks, "0, 1 or -1");
        }
        if !(1..=64 << 20).contains(&self.batch_bytes) {
            return bad("batch-bytes", self.batch_bytes, "1 byte to 64 MiB");
        }
        if !(0.0..=60_000.0).contains(&self.linger_ms) {
            return bad("linger-ms", self.linger_ms, "0 to 60000");
        }
        if parse_compression(&self.compression).is_none() {
            return bad(
                "compression",
                &self.compression,
                "none, gzip, snappy, lz4 or zstd",
            );
        }
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            return bad("rate", self.rate, "0 (as fast as possible) or records/s");
        }
        if !(1..=100_000).contains(&self.burst) {
            return bad("burst", self.burst, "1 to 100000 records");
        }
        if !(1..=64).contains(&self.in_flight) {
            return bad("in-flight", self.in_flight, "1 to 64");
        }
        if self.cores < 1 || self.cores > cores_available {
            return bad(
                "cores",
                self.cores,
                &format!("1 to {cores_available} (this machine's cores)"),
            );
        }
        if self.broker_cores < 1 {
            return bad("broker-cores", self.broker_cores, "at least 1");
        }
        if !PROFILES.contains(&self.profile.as_str()) {
            return bad("profile", &self.profile, "durable, balanced or throughput");
        }
        if self.is_cluster() && self.replication_factor > self.cluster_nodes as i16 {
            return bad(
                "replication-factor",
                self.replication_factor,
                &format!(
                    "at most the cluster's {} nodes (--cluster)",
                    self.cluster_nodes
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
