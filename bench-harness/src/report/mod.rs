//! A run's results: the figures as a struct (written as JSON with the full
//! configuration), the table printed at the end, and the HdrHistogram log.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2Serializer;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::broker_proc::ProcSample;
use crate::connections::{per_connection_bytes, IdleConnections};
use crate::error::{BenchError, Result};
use crate::goals::Metric;
use crate::limits::Limits;
use crate::scenario::Scenario;
use crate::stats::{Percentiles, RatePoint, MB};
use crate::workload::consumer::CatchUp;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Target {
    pub bootstrap: String,
    /// The listener protocol the clients spoke (PLAINTEXT, SSL, ...).
    pub security: String,
    /// True when sluice-bench started the broker itself.
    pub embedded: bool,
    pub sluice_bin: Option<String>,
    /// The pid whose /proc figures are reported, if any.
    pub broker_pid: Option<u32>,
}

/// How the run itself was set up, beyond the scenario.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Settings {
    pub data_dir: Option<String>,
    pub limits: Option<crate::limits::LimitsConfig>,
    pub connect_timeout_s: f64,
    pub catch_up_max_s: f64,
    pub topic: String,
    pub harness_executors: usize,
    pub io_memory_bytes: usize,
    /// The harness's soft RLIMIT_NOFILE during the run (an embedded broker
    /// inherits it).
    pub open_files_limit: u64,
}

/// The embedded cluster a run used (`cluster_nodes` > 1).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ClusterReport {
    pub nodes: u32,
    /// Shards (`--cores`) of each node.
    pub cores_per_node: usize,
    /// The machine's cores, which the nodes and the harness share.
    pub machine_cores: usize,
    pub replication_factor: i16,
    /// acks as clients write it: 0, 1 or all.
    pub acks: String,
    /// `--unpin-nodes`: the harness let every node's threads run on any
    /// CPU after start (the nodes' own placement pins each shard).
    pub unpinned_by_harness: bool,
    pub brokers: Vec<NodeReport>,
    /// Replicas and ISR once the topic was ready, and after the load.
    pub partitions_at_start: Vec<PartitionReplicas>,
    pub partitions_at_end: Option<Vec<PartitionReplicas>>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct NodeReport {
    pub node_id: i32,
    pub addr: String,
    pub pid: u32,
    /// Partitions of the topic it led at the start.
    pub leader_of: Vec<i32>,
    /// CPU seconds and average cores during the measured window.
    pub cpu_s: Option<f64>,
    pub cores: Option<f64>,
    pub rss_peak_kib: Option<u64>,
    /// Threads pinned to fewer CPUs than the process may use (`name: cpu N`).
    pub pinned_threads: Vec<String>,
    /// False when the node had exited before the harness stopped it.
    pub alive_after_load: bool,
    /// Its exit status once stopped (`exit status: 0` after SIGTERM).
    pub exit: Option<String>,
    /// Still running `stop_wait_s` after SIGTERM, so killed (SIGKILL).
    pub killed_after_stop_wait: bool,
    pub stop_wait_s: f64,
    /// WARN and ERROR lines of its log, and the first of them, in each
    /// phase of the run.
    pub log: NodeLog,
    /// Where its log was copied (`--logs-dir`).
    pub log_copy: Option<String>,
}

/// What a node logged at WARN and ERROR, by phase: start-up (until the
/// load starts: voters dial each other before every one listens), the
/// load (warm-up, measured window, drain and catch-up read) and shutdown
/// (from the harness's SIGTERM to the node's exit).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct NodeLog {
    pub startup: LogProblems,
    pub load: LogProblems,
    pub shutdown: LogProblems,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LogProblems {
    pub warn_lines: u64,
    pub error_lines: u64,
    pub samples: Vec<String>,
}

impl LogProblems {
    fn brief(&self) -> String {
        format!("{} WARN, {} ERROR", self.warn_lines, self.error_lines)
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PartitionReplicas {
    pub partition: i32,
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

impl PartitionReplicas {
    pub fn of(topic: &crate::client::admin::TopicInfo) -> Vec<PartitionReplicas> {
        topic
            .partitions
            .iter()
            .map(|p| PartitionReplicas {
                partition: p.partition,
                leader: p.leader_id,
                replicas: p.replicas.clone(),
                isr: p.isr.clone(),
            })
            .collect()
    }
}

/// "all 6 partitions: 3 replicas, ISR 3" or the partitions that differ.
pub fn isr_summary(partitions: &[PartitionReplicas], rf: i16) -> String {
    let short: Vec<String> = partitions
        .iter()
        .filter(|p| p.isr.len() < rf.max(1) as usize || p.replicas.len() != rf.max(1) as usize)
        .map(|p| {
            format!(
                "partition {} leader {} replicas {:?} ISR {:?}",
                p.partition, p.leader, p.replicas, p.isr
            )
        })
        .collect();
    if short.is_empty() {
        format!(
            "all {} partitions: {rf} replicas, {rf} in sync",
            partitions.len()
        )
    } else {
        format!(
            "{} of {} partitions short: {}",
            short.len(),
            partitions.len(),
            short.join("; ")
        )
    }
}

impl ClusterReport {
    /// The cluster's part of the table.
    pub fn lines(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "cluster: {} sluice nodes on loopback, {} core{} (shard) each, sharing this machine's {} cores with the harness; topic replication factor {}, acks={}",
            self.nodes,
            self.cores_per_node,
            if self.cores_per_node == 1 { "" } else { "s" },
            self.machine_cores,
            self.replication_factor,
            self.acks
        );
        if self.unpinned_by_harness {
            let _ = writeln!(
                o,
                "  --unpin-nodes: after start the harness let every node thread run on any CPU (not the broker's own placement)"
            );
        }
        for n in &self.brokers {
            let cpu = match (n.cores, n.rss_peak_kib) {
                (Some(c), Some(r)) => {
                    format!("{c:.2} cores, RSS peak {:.1} MiB", r as f64 / 1024.0)
                }
                (Some(c), None) => format!("{c:.2} cores"),
                _ => "no /proc figures".to_string(),
            };
            let pinned = if n.pinned_threads.is_empty() {
                String::new()
            } else {
                format!(", pinned {}", n.pinned_threads.join(", "))
            };
            let _ = writeln!(
                o,
                "  node {} {} pid {}: leads {:?}, {cpu}{pinned}; log: start-up {}, load {}, shutdown {}{}{}",
                n.node_id,
                n.addr,
                n.pid,
                n.leader_of,
                n.log.startup.brief(),
                n.log.load.brief(),
                n.log.shutdown.brief(),
                if n.alive_after_load {
                    String::new()
                } else {
                    "; EXITED DURING THE RUN".to_string()
                },
                match (&n.exit, n.killed_after_stop_wait) {
                    (_, true) => format!(
                        "; DID NOT EXIT within {:.0} s of SIGTERM: killed",
                        n.stop_wait_s
                    ),
                    (Some(e), false) => format!("; stopped: {e}"),
                    (None, false) => String::new(),
                }
            );
            for (phase, p) in [("load", &n.log.load), ("shutdown", &n.log.shutdown)] {
                for line in &p.samples {
                    let _ = writeln!(o, "    [{phase}] {line}");
                }
            }
        }
        let _ = writeln!(
            o,
            "  ISR at start: {}",
            isr_summary(&self.partitions_at_start, self.replication_factor)
        );
        if let Some(end) = &self.partitions_at_end {
            let _ = writeln!(
                o,
                "  ISR after the load: {}",
                isr_summary(end, self.replication_factor)
            );
        }
        o
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Flow {
    pub records: u64,
    pub bytes: u64,
    pub records_per_s: f64,
    pub mb_per_s: f64,
    /// `mb_per_s` over the lower of the measured machine limits.
    pub fraction_of_lower_limit: Option<f64>,
}

impl Flow {
    pub fn new(records: u64, bytes: u64, seconds: f64, limit_mb_per_s: Option<f64>) -> Flow {
        let s = seconds.max(1e-9);
        let mb_per_s = bytes as f64 / MB / s;
        Flow {
            records,
            bytes,
            records_per_s: records as f64 / s,
            mb_per_s,
            fraction_of_lower_limit: limit_mb_per_s.filter(|l| *l > 0.0).map(|l| mb_per_s / l),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct BrokerUsage {
    /// CPU seconds during the measured window.
    pub cpu_s: f64,
    /// Average cores busy during the measured window.
    pub cores: f64,
    /// CPU seconds per GB produced (acknowledged) in the window.
    pub cpu_s_per_gb: Option<f64>,
    /// Before the load, with no client connections open.
    pub rss_idle_kib: u64,
    /// From the start of the load to the end of the catch-up read (from
    /// the broker's start when its peak could not be reset).
    pub rss_peak_kib: u64,
    /// Connections held open and idle to measure their cost; 0: not measured.
    pub idle_connections: u32,
    pub rss_with_idle_connections_kib: Option<u64>,
    /// Once they closed again: memory a broker keeps shows here.
    pub rss_after_idle_connections_closed_kib: Option<u64>,
    /// RSS growth with the idle connections open, per connection.
    pub rss_per_idle_connection_bytes: Option<f64>,
    /// Client connections of the load (producers' and tailing consumers').
    pub load_connections: u32,
    /// Highest RSS from the start of the load to its end (warm-up included).
    pub rss_load_peak_kib: u64,
    /// `rss_load_peak_kib` less `rss_idle_kib`, per load connection: an
    /// upper bound, since it also holds what the load costs regardless of
    /// connections (partition buffers, indexes, batches in flight).
    pub rss_per_active_connection_bytes: Option<f64>,
}

impl BrokerUsage {
    /// Adds the per-connection figures: `idle` from the idle measurement,
    /// `load_peak_kib` the highest RSS seen while `load_connections` were busy.
    pub fn with_connections(
        mut self,
        idle: Option<IdleConnections>,
        load_connections: u32,
        load_peak_kib: u64,
    ) -> BrokerUsage {
        if let Some(i) = idle {
            self.idle_connections = i.connections;
            self.rss_with_idle_connections_kib = Some(i.rss_with_kib);
            self.rss_after_idle_connections_closed_kib = Some(i.rss_after_close_kib);
            self.rss_per_idle_connection_bytes = i.per_connection_bytes();
        }
        self.load_connections = load_connections;
        self.rss_load_peak_kib = load_peak_kib;
        self.rss_per_active_connection_bytes = (self.rss_idle_kib > 0)
            .then(|| per_connection_bytes(self.rss_idle_kib, load_peak_kib, load_connections))
            .flatten();
        self
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct HarnessUsage {
    pub cpu_s: f64,
    pub cores: f64,
    /// Cores the harness used per GB/s it generated and read.
    pub cores_per_gb_per_s: Option<f64>,
}

/// The whole machine's CPU during the measured window, so that another
/// program's load (a build, a test) shows in the report.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct MachineUsage {
    pub cores: usize,
    /// Average cores busy (anything but idle and iowait).
    pub cores_busy: f64,
    /// `cores_busy` less the broker's and the harness's (when the broker's
    /// figures are known): other programs and the kernel's own threads.
    pub other_cores: Option<f64>,
}

impl MachineUsage {
    pub fn new(
        cores: usize,
        busy_s: f64,
        seconds: f64,
        broker_cores: Option<f64>,
        harness_cores: f64,
    ) -> MachineUsage {
        let cores_busy = busy_s.max(0.0) / seconds.max(1e-9);
        MachineUsage {
            cores,
            cores_busy,
            other_cores: broker_cores.map(|b| (cores_busy - b - harness_cores).max(0.0)),
        }
    }

    fn line(&self) -> String {
        format!(
            "machine: {:.2} of {} cores busy in the measured window{}",
            self.cores_busy,
            self.cores,
            self.other_cores.map_or(String::new(), |o| format!(
                ", {o:.2} of them neither broker nor harness"
            ))
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: String,
    pub version: String,
    /// Seconds since the Unix epoch when the run started.
    pub started_unix_s: u64,
    pub target: Target,
    pub scenario: Scenario,
    pub settings: Settings,
    pub limits: Option<Limits>,
    pub measured_s: f64,
    pub produced: Flow,
    pub consumed: Flow,
    pub produce_latency: Percentiles,
    pub e2e_latency: Percentiles,
    /// Fixed-rate runs measure every record from its intended send time.
    pub corrected_for_coordinated_omission: bool,
    /// Summed over every node of an embedded cluster.
    pub broker: Option<BrokerUsage>,
    /// The embedded cluster, when the run started one.
    pub cluster: Option<ClusterReport>,
    pub harness: HarnessUsage,
    pub machine: Option<MachineUsage>,
    pub catch_up: Option<CatchUp>,
    pub produce_requests: u64,
    /// Records per Produce request over the whole run (warm-up included):
    /// how small the batches really were.
    pub records_per_request: Option<f64>,
    pub errors: u64,
    pub error_samples: Vec<String>,
    pub timeline: Vec<RatePoint>,
    /// Wall-clock start of the measured window, the interval log's base.
    pub measured_from_unix_s: f64,
    /// Length of each interval of the HdrHistogram log.
    pub interval_s: f64,
    #[serde(skip)]
    pub produce_hist: Histogram<u64>,
    #[serde(skip)]
    pub e2e_hist: Histogram<u64>,
    #[serde(skip)]
    pub produce_intervals: Vec<Histogram<u64>>,
    #[serde(skip)]
    pub e2e_intervals: Vec<Histogram<u64>>,
}

pub fn broker_usage(
    idle: Option<ProcSample>,
    from: Option<ProcSample>,
    to: Option<ProcSample>,
    seconds: f64,
    produced_bytes: u64,
) -> Option<BrokerUsage> {
    let (from, to) = (from?, to?);
    let cpu_s = (to.cpu_s - from.cpu_s).max(0.0);
    let gb = produced_bytes as f64 / 1e9;
    Some(BrokerUsage {
        cpu_s,
        cores: cpu_s / seconds.max(1e-9),
        cpu_s_per_gb: (gb > 0.0).then(|| cpu_s / gb),
        rss_idle_kib: idle.map_or(0, |s| s.rss_kib),
        rss_peak_kib: to.rss_peak_kib,
        ..BrokerUsage::default()
    })
}

fn us(v: u64) -> String {
    if v >= 10_000 {
        format!("{:.1} ms", v as f64 / 1000.0)
    } else if v >= 1000 {
        format!("{:.2} ms", v as f64 / 1000.0)
    } else {
        format!("{v} µs")
    }
}

fn latency_row(out: &mut String, name: &str, p: &Percentiles) {
    if p.count == 0 {
        let _ = writeln!(out, "  {name:<18} (no samples)");
        return;
    }
    let _ = writeln!(
        out,
        "  {name:<18} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}   n={}",
        us(p.p50_us),
        us(p.p90_us),
        us(p.p99_us),
        us(p.p999_us),
        us(p.p9999_us),
        us(p.max_us),
        p.count
    );
}

/// Two significant digits at least, so a small ratio does not print as 0.00.
fn ratio(x: f64) -> String {
    let digits = if x > 0.0 && x.is_finite() {
        (1 - x.log10().floor() as i32).max(2) as usize
    } else {
        2
    };
    format!("{x:.digits$}")
}

fn kib(bytes: f64) -> String {
    format!("{:.1} KiB", bytes / 1024.0)
}

/// The per-connection memory line, when anything of it was measured.
fn connection_memory(b: &BrokerUsage) -> Option<String> {
    let mut parts = Vec::new();
    if let (Some(with), Some(per)) = (
        b.rss_with_idle_connections_kib,
        b.rss_per_idle_connection_bytes,
    ) {
        parts.push(format!(
            "{} idle connections {:.1} MiB ({} each; {:.1} MiB once closed)",
            b.idle_connections,
            with as f64 / 1024.0,
            kib(per),
            b.rss_after_idle_connections_closed_kib.unwrap_or(0) as f64 / 1024.0
        ));
    }
    if let Some(per) = b.rss_per_active_connection_bytes {
        parts.push(format!(
            "load peak {:.1} MiB over {} connections ({} each, at most)",
            b.rss_load_peak_kib as f64 / 1024.0,
            b.load_connections,
            kib(per)
        ));
    }
    (!parts.is_empty()).then(|| format!("broker RSS per connection: {}", parts.join("; ")))
}

fn flow_row(out: &mut String, name: &str, f: &Flow) {
    let frac = f.fraction_of_lower_limit.map_or(String::new(), |x| {
        format!("   {} of the lower limit", ratio(x))
    });
    let _ = writeln!(
        out,
        "  {name:<18} {:>14.0} records/s {:>10.1} MB/s{frac}",
        f.records_per_s, f.mb_per_s
    );
}

impl Report {
    /// A figure a goal bounds, when this run measured it.
    pub fn measure(&self, m: Metric) -> Option<f64> {
        match m {
            Metric::ProduceP99Ms => (self.produce_latency.count > 0)
                .then(|| self.produce_latency.p99_us as f64 / 1000.0),
            Metric::BrokerCpuSPerGb => self.broker?.cpu_s_per_gb,
            Metric::ScheduleKeptRatio => {
                (self.scenario.rate > 0.0).then(|| self.produced.records_per_s / self.scenario.rate)
            }
            Metric::LowerLimitRatio => self.produced.fraction_of_lower_limit,
            Metric::CatchUpToProduceRatio => {
                let c = self.catch_up.as_ref()?;
                (self.produced.mb_per_s > 0.0).then(|| c.mb_per_s / self.produced.mb_per_s)
            }
            Metric::SamplesPerS | Metric::RequestP99MsAtRate | Metric::BrokerCpuSPerMSamples => {
                None
            }
        }
    }

    /// The final table, for people.
    pub fn table(&self) -> String {
        let mut o = String::new();
        let s = &self.scenario;
        let _ = writeln!(
            o,
            "sluice-bench {}: scenario {} against {}{}{}",
            self.version,
            s.name,
            self.target.bootstrap,
            if self.target.security == "PLAINTEXT" || self.target.security.is_empty() {
                String::new()
            } else {
                format!(" over {}", self.target.security)
            },
            match (&self.cluster, self.target.embedded) {
                (Some(c), _) => format!(
                    " (embedded {}-node sluice cluster, replication factor {}, acks={}, --cores {} per node, profile {})",
                    c.nodes, c.replication_factor, c.acks, c.cores_per_node, s.profile
                ),
                (None, true) => format!(" (embedded sluice, profile {})", s.profile),
                (None, false) => String::new(),
            }
        );
        let rate = if s.rate > 0.0 && s.burst > 1 {
            format!("{:.0} records/s in bursts of {}", s.rate, s.burst)
        } else if s.rate > 0.0 {
            format!("{:.0} records/s", s.rate)
        } else {
            "as fast as possible".to_string()
        };
        let _ = writeln!(
            o,
            "  {} producers x {} partitions (replication factor {}), {} B records, keys {}, acks={}, batch {} B, linger {} ms, {}, {}, {} in flight, {} consumers, {} s + {} s warm-up, {} harness cores",
            s.producers, s.partitions, s.replication_factor, s.record_bytes, s.keys, s.acks_name(),
            s.batch_bytes, s.linger_ms, s.compression, rate, s.in_flight, s.consumers, s.duration_s,
            s.warmup_s, s.cores
        );
        if let Some(c) = &self.cluster {
            o.push_str(&c.lines());
        }
        if let Some(l) = &self.limits {
            let _ = writeln!(
                o,
                "limits: O_DIRECT write {:.0} MB/s, fdatasync p50 {} p99 {}, loopback TCP {:.0} MB/s (lower: {:.0} MB/s)",
                l.disk_write_mb_per_s,
                us(l.fdatasync_us_p50),
                us(l.fdatasync_us_p99),
                l.loopback_mb_per_s,
                l.lower_limit_mb_per_s
            );
        }
        let _ = writeln!(o, "throughput over {:.1} s:", self.measured_s);
        let produced = if s.acks == 0 {
            "produced (sent)"
        } else {
            "produced (acked)"
        };
        flow_row(&mut o, produced, &self.produced);
        if let Some(r) = self.records_per_request {
            let _ = writeln!(
                o,
                "  {:<18} {:>14} requests  {:>10.1} records each",
                "produce requests", self.produce_requests, r
            );
        }
        flow_row(&mut o, "consumed (tailing)", &self.consumed);
        if let Some(c) = &self.catch_up {
            let _ = writeln!(
                o,
                "  {:<18} {:>14.0} records/s {:>10.1} MB/s   {} records in {:.2} s{}",
                "catch-up (batches)",
                c.records_per_s,
                c.mb_per_s,
                c.records,
                c.seconds,
                if c.complete { "" } else { " (time bound hit)" }
            );
        }
        let _ = writeln!(
            o,
            "latency per record, {}:",
            if self.corrected_for_coordinated_omission {
                "from its intended send time (corrected for coordinated omission)"
            } else {
                "from its creation (as fast as possible: no schedule to omit)"
            }
        );
        let _ = writeln!(
            o,
            "  {:<18} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "", "p50", "p90", "p99", "p99.9", "p99.99", "max"
        );
        latency_row(&mut o, "produce ack", &self.produce_latency);
        latency_row(&mut o, "end to end", &self.e2e_latency);
        if let Some(b) = &self.broker {
            let _ = writeln!(
                o,
                "broker{}: {:.2} CPU s ({:.2} cores){}, RSS idle {:.1} MiB, peak {:.1} MiB",
                if self.cluster.is_some() {
                    " (all nodes)"
                } else {
                    ""
                },
                b.cpu_s,
                b.cores,
                b.cpu_s_per_gb
                    .map_or(String::new(), |x| format!(", {x:.2} CPU s per GB")),
                b.rss_idle_kib as f64 / 1024.0,
                b.rss_peak_kib as f64 / 1024.0
            );
            if let Some(line) = connection_memory(b) {
                let _ = writeln!(o, "{line}");
            }
        }
        let _ = writeln!(
            o,
            "harness: {:.2} CPU s ({:.2} cores){}",
            self.harness.cpu_s,
            self.harness.cores,
            self.harness
                .cores_per_gb_per_s
                .map_or(String::new(), |x| format!(", {x:.2} cores per GB/s"))
        );
        if let Some(m) = &self.machine {
            let _ = writeln!(o, "{}", m.line());
        }
        if self.errors > 0 {
            let _ = writeln!(o, "errors: {}", self.errors);
            for e in &self.error_samples {
                let _ = writeln!(o, "  {e}");
            }
        }
        o
    }

    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(BenchError::codec)?;
        std::fs::write(path, text + "\n")
            .map_err(|e| BenchError::io(format!("writing {}", path.display()), e))
    }

    /// An HdrHistogram interval log of the measured window, one histogram
    /// per interval and kind (tags `produce` and `e2e`), readable by
    /// HdrHistogram's log tools (HistogramLogAnalyzer, hdr-plot).
    pub fn write_hdr_log(&self, path: &Path) -> Result<()> {
        let bytes = hdr_log(
            &[
                ("produce", &self.produce_intervals),
                ("e2e", &self.e2e_intervals),
            ],
            self.measured_from_unix_s,
            Duration::from_secs_f64(self.interval_s.max(1e-3)),
        )?;
        std::fs::write(path, bytes)
            .map_err(|e| BenchError::io(format!("writing {}", path.display()), e))
    }
}

/// Interval `i` of every kind is written before interval `i + 1`, so the
/// log reads in time order; empty intervals are left out.
pub fn hdr_log(
    kinds: &[(&str, &[Histogram<u64>])],
    base_unix_s: f64,
    interval: Duration,
) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut serializer = V2Serializer::new();
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs_f64(base_unix_s.max(0.0));
    let mut writer = IntervalLogWriterBuilder::new()
        .with_base_time(start)
        .with_start_time(start)
        .begin_log_with(&mut buf, &mut serializer)
        .map_err(|e| BenchError::io("writing the HdrHistogram log", e))?;
    writer
        .write_comment("sluice-bench latencies in microseconds")
        .map_err(|e| BenchError::io("writing the HdrHistogram log", e))?;
    let intervals = kinds.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    for i in 0..intervals {
        for (tag, series) in kinds {
            let Some(h) = series.get(i).filter(|h| !h.is_empty()) else {
                continue;
            };
            writer
                .write_histogram(h, interval * i as u32, interval, Tag::new(tag))
                .map_err(|e| BenchError::Codec(format!("HdrHistogram log: {e:?}")))?;
        }
    }
    drop(writer);
    Ok(buf)
}

#[cfg(test)]
mod tests;
