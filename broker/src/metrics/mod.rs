//! Broker metrics. Each shard owns a `ShardMetrics` of plain cells that
//! only its own thread touches (no atomics, no cross-core cache traffic,
//! no allocation per request); a scrape asks every shard over the mesh for
//! a `ShardSnapshot` and `render` adds them up into Prometheus text.
//! `http` serves `/metrics` and `/health` from shard 0.

pub mod http;
mod render;

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use storage::stats::{HistogramSnapshot, LatencyHistogram};

use crate::shard::Shard;

pub use render::{health, render};

/// Kafka API keys are below this (the highest in use is under 100); keys
/// above it are counted as `other`.
pub const API_KEYS_MAX: usize = 128;

/// How often each shard checks how late its reactor runs a timer.
pub const REACTOR_PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// A timer this late means the shard held its core without polling: a
/// stall. glommio's budget per task-queue run is 100 ms (its preemption
/// timer), so a healthy loaded shard stays well below.
pub const STALL_THRESHOLD: Duration = Duration::from_millis(150);

/// Counters of one shard, written only by its own thread.
pub struct ShardMetrics {
    /// Latency of each API's requests, indexed by API key; the histogram's
    /// count is the request count. The last slot collects unknown keys.
    requests: Box<[LatencyHistogram]>,
    bytes_in: Cell<u64>,
    bytes_out: Cell<u64>,
    connections_active: Cell<u64>,
    connections_accepted: Cell<u64>,
    connections_refused: Cell<u64>,
    tls_handshakes_failed: Cell<u64>,
    /// Failed SASL authentications by (listener, mechanism).
    authentications_failed:
        std::cell::RefCell<std::collections::BTreeMap<(&'static str, String), u64>>,
    /// Requests refused for their credentials on the ingest HTTP listener.
    ingest_http_authentications_failed: Cell<u64>,
    /// Re-authentications (KIP-368) completed, by (listener, mechanism).
    reauthentications: std::cell::RefCell<std::collections::BTreeMap<(&'static str, String), u64>>,
    /// Connections closed because their SASL session expired.
    sessions_expired: Cell<u64>,
    /// Operations the authorizer refused, by (resource type, operation).
    authorizations_denied:
        std::cell::RefCell<std::collections::BTreeMap<(&'static str, &'static str), u64>>,
    /// Influx line-protocol points stored, and lines refused as malformed.
    influx_points: Cell<u64>,
    influx_lines_malformed: Cell<u64>,
    /// Prometheus remote-write samples stored, and writes refused as
    /// malformed.
    prometheus_samples: Cell<u64>,
    prometheus_writes_malformed: Cell<u64>,
    /// Ingest writes refused with 429 because a partition's queue was full.
    ingest_writes_busy: Cell<u64>,
    /// Executor busy time summed over the scrapes so far (glommio's
    /// executor stats reset on every read).
    busy_ns: Cell<u64>,
    reactor_lag: LatencyHistogram,
    stalls: Cell<u64>,
    /// True from the moment the shard listens until shutdown begins.
    serving: Cell<bool>,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        ShardMetrics {
            requests: (0..=API_KEYS_MAX)
                .map(|_| LatencyHistogram::default())
                .collect(),
            bytes_in: Cell::new(0),
            bytes_out: Cell::new(0),
            connections_active: Cell::new(0),
            connections_accepted: Cell::new(0),
            connections_refused: Cell::new(0),
            tls_handshakes_failed: Cell::new(0),
            authentications_failed: Default::default(),
            ingest_http_authentications_failed: Cell::new(0),
            reauthentications: Default::default(),
            sessions_expired: Cell::new(0),
            authorizations_denied: Default::default(),
            influx_points: Cell::new(0),
            influx_lines_malformed: Cell::new(0),
            prometheus_samples: Cell::new(0),
            prometheus_writes_malformed: Cell::new(0),
            ingest_writes_busy: Cell::new(0),
            busy_ns: Cell::new(0),
            reactor_lag: LatencyHistogram::default(),
            stalls: Cell::new(0),
            serving: Cell::new(false),
        }
    }
}

impl ShardMetrics {
    /// Reads this shard's counters and logs, with the committed offsets
    /// of the groups it coordinates; runs on the shard itself.
    pub fn snapshot(&self, shard: &Shard, committed: Vec<CommittedOffset>) -> ShardSnapshot {
        let m = self;
        add(
            &m.busy_ns,
            crate::rt::executor()
                .executor_stats()
                .total_runtime()
                .as_nanos()
                .min(u64::MAX as u128) as u64,
        );
        let requests = m
            .requests
            .iter()
            .enumerate()
            .filter_map(|(key, h)| {
                let s = h.snapshot();
                let key = if key < API_KEYS_MAX { key as i16 } else { -1 };
                (s.count() > 0).then_some((key, s))
            })
            .collect();
        let partitions = shard
            .owned_logs()
            .into_iter()
            .map(|((topic, partition), log)| PartitionSnapshot {
                topic,
                partition,
                log_start_offset: log.log_start_offset(),
                log_end_offset: log.next_offset(),
                high_watermark: log.log_end_offset(),
                size_bytes: log.size_bytes(),
                offline: log.is_offline(),
            })
            .collect();
        let meta = shard.metadata();
        let under_replicated = shard
            .replicas()
            .iter()
            .filter(|r| r.is_leader())
            .filter(|r| {
                meta.topic(&r.topic)
                    .and_then(|t| t.state(r.partition))
                    .is_some_and(|s| s.isr.len() < s.replicas.len())
            })
            .count() as u64;
        ShardSnapshot {
            shard: shard.id,
            under_replicated,
            serving: m.serving.get() && !shard.is_shutting_down(),
            requests,
            bytes_in: m.bytes_in.get(),
            bytes_out: m.bytes_out.get(),
            connections_active: m.connections_active.get(),
            connections_accepted: m.connections_accepted.get(),
            connections_refused: m.connections_refused.get(),
            tls_handshakes_failed: m.tls_handshakes_failed.get(),
            authentications_failed: m
                .authentications_failed
                .borrow()
                .iter()
                .map(|((l, m), n)| (l.to_string(), m.clone(), *n))
                .collect(),
            ingest_http_authentications_failed: m.ingest_http_authentications_failed.get(),
            reauthentications: m
                .reauthentications
                .borrow()
                .iter()
                .map(|((l, m), n)| (l.to_string(), m.clone(), *n))
                .collect(),
            sessions_expired: m.sessions_expired.get(),
            authorizations_denied: m
                .authorizations_denied
                .borrow()
                .iter()
                .map(|((r, o), n)| (r.to_string(), o.to_string(), *n))
                .collect(),
            influx_points: m.influx_points.get(),
            influx_lines_malformed: m.influx_lines_malformed.get(),
            prometheus_samples: m.prometheus_samples.get(),
            prometheus_writes_malformed: m.prometheus_writes_malformed.get(),
            ingest_writes_busy: m.ingest_writes_busy.get(),
            busy_ns: m.busy_ns.get(),
            reactor_lag: m.reactor_lag.snapshot(),
            stalls: m.stalls.get(),
            fsync: storage::stats::fsync_latency(),
            partitions,
            committed,
        }
    }
}

pub fn add(c: &Cell<u64>, n: u64) {
    c.set(c.get().wrapping_add(n));
}

impl ShardMetrics {
    /// One request answered: its frame sizes on the wire (length prefix
    /// included) and the time from decoding to the response written.
    pub fn request_done(&self, api_key: i16, bytes_in: usize, bytes_out: usize, elapsed: Duration) {
        let slot = usize::try_from(api_key)
            .ok()
            .filter(|&k| k < API_KEYS_MAX)
            .unwrap_or(API_KEYS_MAX);
        self.requests[slot].observe(elapsed);
        add(&self.bytes_in, bytes_in as u64);
        add(&self.bytes_out, bytes_out as u64);
    }

    /// Bytes of a request that got no answer counted by `request_done`
    /// (a frame that failed to decode).
    pub fn bytes_received(&self, bytes: usize) {
        add(&self.bytes_in, bytes as u64);
    }

    pub fn connection_opened(&self) {
        add(&self.connections_accepted, 1);
        add(&self.connections_active, 1);
    }

    pub fn connection_closed(&self) {
        self.connections_active
            .set(self.connections_active.get().saturating_sub(1));
    }

    pub fn connection_refused(&self) {
        add(&self.connections_refused, 1);
    }

    pub fn tls_handshake_failed(&self) {
        add(&self.tls_handshakes_failed, 1);
    }

    pub fn authentication_failed(&self, listener: &'static str, mechanism: &str) {
        // Mechanism names come from the client only when offered here,
        // else "none": the map stays small.
        *self
            .authentications_failed
            .borrow_mut()
            .entry((listener, mechanism.to_string()))
            .or_default() += 1;
    }

    pub fn ingest_http_authentication_failed(&self) {
        add(&self.ingest_http_authentications_failed, 1);
    }

    /// A re-authentication completed; `mechanism` is one offered here.
    pub fn reauthenticated(&self, listener: &'static str, mechanism: &str) {
        *self
            .reauthentications
            .borrow_mut()
            .entry((listener, mechanism.to_string()))
            .or_default() += 1;
    }

    /// A connection closed because its SASL session expired.
    pub fn session_expired(&self) {
        add(&self.sessions_expired, 1);
    }

    /// The authorizer refused `operation` on a resource of this type.
    pub fn authorization_denied(&self, resource_type: &'static str, operation: &'static str) {
        *self
            .authorizations_denied
            .borrow_mut()
            .entry((resource_type, operation))
            .or_default() += 1;
    }

    pub fn influx_points_stored(&self, n: u64) {
        add(&self.influx_points, n);
    }

    pub fn influx_lines_refused(&self, n: u64) {
        add(&self.influx_lines_malformed, n);
    }

    pub fn prometheus_samples_stored(&self, n: u64) {
        add(&self.prometheus_samples, n);
    }

    pub fn prometheus_write_refused(&self) {
        add(&self.prometheus_writes_malformed, 1);
    }

    pub fn ingest_writes_refused_busy(&self, n: u64) {
        add(&self.ingest_writes_busy, n);
    }

    pub fn connections_active(&self) -> u64 {
        self.connections_active.get()
    }

    pub fn set_serving(&self, serving: bool) {
        self.serving.set(serving);
    }
}

/// One partition log as a scrape sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSnapshot {
    pub topic: String,
    pub partition: i32,
    pub log_start_offset: i64,
    /// The offset the next append gets.
    pub log_end_offset: i64,
    /// What Fetch reports and serves up to (the readable end).
    pub high_watermark: i64,
    pub size_bytes: u64,
    pub offline: bool,
}

/// A group's committed offset for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// Everything one shard contributes to a scrape; sent over the mesh.
#[derive(Debug, Clone, Default)]
pub struct ShardSnapshot {
    pub shard: usize,
    pub serving: bool,
    /// (API key, latency histogram) for every API that saw a request; key
    /// -1 for keys beyond `API_KEYS_MAX`.
    pub requests: Vec<(i16, HistogramSnapshot)>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub connections_active: u64,
    pub connections_accepted: u64,
    pub connections_refused: u64,
    pub tls_handshakes_failed: u64,
    /// (listener, mechanism, count).
    pub authentications_failed: Vec<(String, String, u64)>,
    pub ingest_http_authentications_failed: u64,
    /// (listener, mechanism, count).
    pub reauthentications: Vec<(String, String, u64)>,
    pub sessions_expired: u64,
    /// (resource type, operation, count).
    pub authorizations_denied: Vec<(String, String, u64)>,
    pub influx_points: u64,
    pub influx_lines_malformed: u64,
    pub prometheus_samples: u64,
    pub prometheus_writes_malformed: u64,
    pub ingest_writes_busy: u64,
    pub busy_ns: u64,
    pub reactor_lag: HistogramSnapshot,
    pub stalls: u64,
    pub fsync: HistogramSnapshot,
    pub partitions: Vec<PartitionSnapshot>,
    pub committed: Vec<CommittedOffset>,
    /// Partitions this shard leads whose ISR is smaller than their replicas.
    pub under_replicated: u64,
}

/// Measures, every `REACTOR_PROBE_INTERVAL`, how late the shard's reactor
/// fires a timer: the time this shard's tasks kept the core without
/// polling. glommio's own stall detector arms and disarms a timerfd and
/// allocates on every task-queue run, too dear for the request path.
pub fn spawn_reactor_probe(shard: &Rc<Shard>, metrics: Rc<ShardMetrics>) {
    let shard = shard.clone();
    crate::rt::spawn_local(async move {
        loop {
            let started = Instant::now();
            if !shard.nap(REACTOR_PROBE_INTERVAL).await {
                return;
            }
            let late = started.elapsed().saturating_sub(REACTOR_PROBE_INTERVAL);
            metrics.reactor_lag.observe(late);
            if late >= STALL_THRESHOLD {
                add(&metrics.stalls, 1);
                tracing::warn!(
                    shard = shard.id,
                    late_ms = late.as_millis() as u64,
                    "reactor stall: a timer fired late"
                );
            }
        }
    })
    .detach();
}
