//! One producer connection: accumulates records into per-partition
//! batches, sends a Produce request when a batch is full or has lingered
//! (then, like Kafka's sender, with every partition's pending batch), and
//! keeps up to `in_flight` requests outstanding. A fixed-rate producer
//! generates records on a schedule and measures each from its due time.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future;
use glommio::sync::Semaphore;
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::records::{Compression, Record};

use super::{Plan, ProducerUnit, ShardOutput};
use crate::client::produce::ProduceFrame;
use crate::client::records::{encode_batch, parse_compression, payload_pool, record, stamp_into};
use crate::client::versions::error_name;
use crate::client::{decode_response, ConnReader, Connection, CLIENT_ID};
use crate::error::{BenchError, Result};
use crate::stats::{record_scheduled_ack, Schedule};

/// Sleeps shorter than this are not worth a timer: spin through the loop.
const SLEEP_MIN: Duration = Duration::from_micros(50);
/// How long the broker may take to acknowledge (Produce `timeout_ms`).
const PRODUCE_TIMEOUT_MS: i32 = 30_000;
/// Longer sleeps are cut so that cancellation is noticed.
const SLEEP_MAX: Duration = Duration::from_millis(100);
/// How long the end of the run waits for outstanding acknowledgements.
const ACK_WAIT_MAX: Duration = Duration::from_secs(10);
const PAYLOAD_POOL_BYTES: usize = 64 << 10;
/// A v2 record batch header.
const BATCH_HEADER_BYTES: usize = 61;
/// A record's framing at most: length, attributes, timestamp and offset
/// deltas, key and value lengths, header count (varints).
const RECORD_OVERHEAD_BYTES: usize = 21;
/// Keys are `key-NNNNNNNN`.
const KEY_BYTES: usize = 12;
/// Keys are pre-built up to this many; more distinct keys reuse them.
const KEYS_PREBUILT_MAX: u64 = 100_000;

/// Which records a request carried, to charge their latency correctly.
#[derive(Debug, Clone, Copy)]
enum Span {
    /// Scheduled records `k0..k1`.
    Scheduled { k0: u64, k1: u64 },
    /// As-fast-as-possible records, all created at about `at`.
    Created { at: Instant },
}

#[derive(Debug)]
struct InFlight {
    correlation_id: i32,
    records: u64,
    bytes: u64,
    span: Span,
}

/// Per-partition batches being filled.
struct Accumulator {
    partitions: Vec<i32>,
    records: Vec<Vec<Record>>,
    bytes: Vec<usize>,
    /// Bytes of records a batch may hold (batch size less its header).
    batch_bytes: usize,
    /// What the next record may add, at most.
    record_bytes_next: usize,
    count: u64,
    value_bytes: u64,
    /// When the oldest pending record was due (or created).
    oldest: Option<Instant>,
    first_k: u64,
}

impl Accumulator {
    /// `record_bytes_max`: the largest value plus key a record may have.
    fn new(partitions: Vec<i32>, batch_bytes: usize, record_bytes_max: usize) -> Accumulator {
        let n = partitions.len();
        Accumulator {
            partitions,
            records: vec![Vec::new(); n],
            bytes: vec![0; n],
            batch_bytes: batch_bytes.saturating_sub(BATCH_HEADER_BYTES),
            record_bytes_next: record_bytes_max + RECORD_OVERHEAD_BYTES,
            count: 0,
            value_bytes: 0,
            oldest: None,
            first_k: 0,
        }
    }

    fn push(&mut self, slot: usize, r: Record, due: Instant, k: u64) {
        let value = r.value.as_ref().map_or(0, |v| v.len());
        let len = value + r.key.as_ref().map_or(0, |k| k.len()) + RECORD_OVERHEAD_BYTES;
        if self.count == 0 {
            self.oldest = Some(due);
            self.first_k = k;
        }
        self.records[slot].push(r);
        self.bytes[slot] += len;
        self.count += 1;
        self.value_bytes += value as u64;
    }

    /// Like Kafka's `batch.size`, a batch is full when the next record
    /// would take it past the size (a lone oversized record still goes).
    fn full(&self, bytes: usize) -> bool {
        bytes > 0 && bytes + self.record_bytes_next > self.batch_bytes
    }

    /// Records, spread evenly, that fill one batch of every partition.
    fn records_to_fill(&self) -> u64 {
        let per_batch = (self.batch_bytes / self.record_bytes_next.max(1)).max(1);
        (per_batch * self.partitions.len()) as u64
    }

    fn any_full(&self) -> bool {
        self.bytes.iter().any(|&b| self.full(b))
    }

    fn all_full(&self) -> bool {
        self.bytes.iter().all(|&b| self.full(b))
    }

    /// Encodes every pending batch: (partition, batch) for one request.
    fn drain(&mut self, compression: Compression) -> Result<Vec<(i32, Bytes)>> {
        let mut data = Vec::new();
        for (slot, records) in self.records.iter_mut().enumerate() {
            if records.is_empty() {
                continue;
            }
            let batch = encode_batch(records, compression)?;
            records.clear();
            self.bytes[slot] = 0;
            data.push((self.partitions[slot], batch));
        }
        self.count = 0;
        self.value_bytes = 0;
        self.oldest = None;
        Ok(data)
    }
}

/// A tiny xorshift: key choice needs speed and spread, not quality.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// What every producer of a shard reads and none changes: the key table
/// and the payload words. Built once per shard, so that a thousand
/// producers cost a thousand connections, not a thousand copies.
#[derive(Debug, Clone)]
pub struct Shared {
    /// All keys in one allocation: a key is a slice of it, so each record
    /// touches one shared reference count instead of one per key.
    keys: Bytes,
    key_count: usize,
    pool: Bytes,
}

impl Shared {
    pub fn new(s: &crate::scenario::Scenario, shard: usize) -> Shared {
        let key_count = s.keys.min(KEYS_PREBUILT_MAX) as usize;
        Shared {
            keys: Bytes::from(
                (0..key_count)
                    .map(|k| format!("key-{k:08}"))
                    .collect::<String>(),
            ),
            key_count,
            pool: payload_pool(PAYLOAD_POOL_BYTES, 0x9e37_79b9_7f4a_7c15 ^ shard as u64),
        }
    }
}

pub async fn run(
    plan: &Plan,
    unit: &ProducerUnit,
    shared: &Shared,
    out: &Rc<RefCell<ShardOutput>>,
) -> Result<()> {
    let s = &plan.scenario;
    let conn = Connection::connect(&unit.leader_addr, plan.connect_timeout).await?;
    let version = conn.versions.pick::<ProduceRequest>()?;
    let Connection {
        mut writer, reader, ..
    } = conn;
    let compression = parse_compression(&s.compression).ok_or_else(|| BenchError::Config {
        key: "compression",
        value: s.compression.clone(),
        allowed: "none, gzip, snappy, lz4 or zstd".into(),
    })?;
    let schedule = Schedule::for_rate(plan.start, unit.rate).map(|sc| {
        sc.in_bursts(s.burst)
            .phased(f64::from(unit.producer) / f64::from(s.producers.max(1)))
    });
    let linger = Duration::from_secs_f64(s.linger_ms / 1000.0);
    let permits = Rc::new(Semaphore::new(s.in_flight as u64));
    let queue: Rc<RefCell<VecDeque<InFlight>>> = Rc::new(RefCell::new(VecDeque::new()));
    let pool = &shared.pool;
    // Producers share the pool; each starts reading it somewhere else.
    let pool_from = (unit.producer as usize).wrapping_mul(104_729);
    let key_count = shared.key_count;
    let all_keys = &shared.keys;
    let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ (u64::from(unit.producer) << 17) | 1);
    let key_bytes = if s.keys > 0 { KEY_BYTES } else { 0 };
    let mut acc = Accumulator::new(
        unit.partitions.clone(),
        s.batch_bytes,
        s.record_bytes
            .max(crate::client::records::VALUE_HEADER_BYTES)
            + key_bytes,
    );
    let topic_id = plan.topic.topic_id;
    let acks = s.acks;

    let reading = read_acks(
        plan,
        reader,
        version,
        schedule,
        queue.clone(),
        permits.clone(),
        out,
    );
    let writing = async {
        glommio::timer::sleep(plan.start.saturating_duration_since(Instant::now())).await;
        let mut k_next: u64 = 0;
        let mut round_robin = 0usize;
        // Flat out, a request slot is taken before its records are made,
        // so their latency is the broker's round trip, not time spent
        // queued behind full slots; on a schedule, records are made when
        // due and any wait for a slot is charged to them.
        let mut slot_held = false;
        let mut arena = bytes::BytesMut::new();
        loop {
            if schedule.is_none() && acks != 0 && !slot_held {
                if Instant::now() >= plan.stop_at || plan.cancelled() {
                    break;
                }
                acquire_slot(&permits, &unit.leader_addr).await?;
                slot_held = true;
            }
            let now = Instant::now();
            // At the end, records already due still go out, so that every
            // record of the window is measured, the slowest included.
            let ending = now >= plan.stop_at;
            if plan.cancelled() || (ending && acc.count == 0 && schedule.is_none()) {
                break;
            }
            // Generate what is due (or, flat out, enough to fill every batch).
            let target = match &schedule {
                Some(sc) => sc.due_by(now.min(plan.stop_at)),
                None => u64::MAX,
            };
            while k_next < target && !acc.any_full() {
                let due = schedule.as_ref().map_or(now, |sc| sc.due(k_next));
                let key = (key_count > 0).then(|| {
                    let i = ((rng.next() % s.keys) % key_count as u64) as usize;
                    all_keys.slice(i * KEY_BYTES..(i + 1) * KEY_BYTES)
                });
                let slot = match &key {
                    Some(_) => (rng.next() % acc.partitions.len() as u64) as usize,
                    None => {
                        round_robin = (round_robin + 1) % acc.partitions.len();
                        round_robin
                    }
                };
                let wall_us = plan.clock.wall_us(due);
                let value = stamp_into(
                    &mut arena,
                    s.record_bytes,
                    wall_us,
                    pool,
                    (k_next as usize).wrapping_mul(7919).wrapping_add(pool_from),
                );
                acc.push(
                    slot,
                    record(key, value, (wall_us / 1000) as i64),
                    due,
                    k_next,
                );
                k_next += 1;
                if schedule.is_none() && acc.all_full() {
                    break;
                }
            }
            let lingered = acc.oldest.is_some_and(|t| now >= t + linger);
            let flat_out = schedule.is_none() && acc.count > 0;
            if ending && acc.count == 0 {
                break;
            }
            if acc.count > 0 && (acc.any_full() || lingered || flat_out || ending) {
                if acks != 0 && !slot_held {
                    acquire_slot(&permits, &unit.leader_addr).await?;
                }
                slot_held = false;
                let span = match &schedule {
                    Some(_) => Span::Scheduled {
                        k0: acc.first_k,
                        k1: k_next,
                    },
                    None => Span::Created {
                        at: acc.oldest.unwrap_or(now),
                    },
                };
                let records = acc.count;
                let bytes = acc.value_bytes;
                let partitions = acc.drain(compression)?;
                let id = writer.next_correlation_id();
                let chunks = ProduceFrame {
                    version,
                    correlation_id: id,
                    client_id: CLIENT_ID,
                    acks,
                    timeout_ms: PRODUCE_TIMEOUT_MS,
                    topic: &plan.topic.name,
                    topic_id,
                    partitions: &partitions,
                }
                .to_write()?;
                if acks != 0 {
                    queue.borrow_mut().push_back(InFlight {
                        correlation_id: id,
                        records,
                        bytes,
                        span,
                    });
                }
                writer.write_chunks(&chunks).await?;
                out.borrow_mut().produce_requests += 1;
                if acks == 0 {
                    plan.counters.add_out(records, bytes);
                }
                // Socket writes often complete without suspending; let the
                // shard's consumers and ack readers run.
                glommio::executor().yield_if_needed().await;
                continue;
            }
            // Nothing to send yet. Records carry their due time whenever
            // they are made, so there is no need to wake for each one:
            // only when the oldest pending record (or the next one) has
            // lingered, or when enough are due to fill a batch. Waking per
            // record would spin a core at high rates.
            let mut wake = plan.stop_at;
            if let Some(sc) = &schedule {
                let first = if acc.count > 0 { acc.first_k } else { k_next };
                wake = wake
                    .min(sc.due(first) + linger)
                    .min(sc.due(first + acc.records_to_fill()).max(sc.due(k_next)));
            } else if let Some(t) = acc.oldest {
                wake = wake.min(t + linger);
            }
            let now = Instant::now();
            if wake > now + SLEEP_MIN {
                glommio::timer::sleep((wake - now).min(SLEEP_MAX)).await;
            } else {
                glommio::executor().yield_if_needed().await;
            }
        }
        if slot_held {
            permits.signal(1);
        }
        // Wait for every outstanding acknowledgement, bounded.
        if acks != 0 {
            let waited =
                glommio::timer::timeout(ACK_WAIT_MAX, permits.acquire(s.in_flight as u64)).await;
            if waited.is_err() {
                return Err(BenchError::Timeout {
                    what: format!("the last acknowledgements from {}", unit.leader_addr),
                    seconds: ACK_WAIT_MAX.as_secs(),
                });
            }
        }
        Ok(())
    };
    future::or(writing, reading).await
}

/// Waits for a free in-flight slot, bounded so a silent broker ends the run.
async fn acquire_slot(permits: &Semaphore, addr: &str) -> Result<()> {
    match glommio::timer::timeout(ACK_WAIT_MAX, permits.acquire(1)).await {
        Ok(()) => Ok(()),
        Err(_) => Err(BenchError::Timeout {
            what: format!("acknowledgements from {addr}"),
            seconds: ACK_WAIT_MAX.as_secs(),
        }),
    }
}

/// Reads Produce responses in order, charging each record's latency.
/// Only returns on a failure: the writer side ends the pair.
async fn read_acks(
    plan: &Plan,
    mut reader: ConnReader,
    version: i16,
    schedule: Option<Schedule>,
    queue: Rc<RefCell<VecDeque<InFlight>>>,
    permits: Rc<Semaphore>,
    out: &Rc<RefCell<ShardOutput>>,
) -> Result<()> {
    if plan.scenario.acks == 0 {
        return future::pending().await;
    }
    loop {
        let frame = reader.read_frame().await?;
        let acked = Instant::now();
        let Some(entry) = queue.borrow_mut().pop_front() else {
            return Err(BenchError::Protocol(format!(
                "{} sent a response to no request",
                reader.addr
            )));
        };
        let (id, response) = decode_response::<ProduceResponse>(frame, version)?;
        if id != entry.correlation_id {
            return Err(BenchError::Protocol(format!(
                "{} answered correlation id {id}, expected {}",
                reader.addr, entry.correlation_id
            )));
        }
        let mut failed = None;
        for t in &response.responses {
            for p in &t.partition_responses {
                if p.error_code != 0 {
                    failed = Some(p.error_code);
                }
            }
        }
        permits.signal(1);
        if let Some(code) = failed {
            plan.counters
                .errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            out.borrow_mut().note_error(format!(
                "Produce to {}: error {code} ({})",
                reader.addr,
                error_name(code)
            ));
            continue;
        }
        plan.counters.add_out(entry.records, entry.bytes);
        let mut o = out.borrow_mut();
        match entry.span {
            Span::Scheduled { k0, k1 } => {
                if let Some(sc) = &schedule {
                    record_scheduled_ack(
                        &mut o.produce,
                        sc,
                        k0,
                        k1,
                        acked,
                        plan.measure_from..plan.stop_at,
                    );
                }
            }
            Span::Created { at } => {
                if at >= plan.measure_from && at < plan.stop_at {
                    o.produce
                        .record(acked, acked.saturating_duration_since(at), entry.records);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::records::{payload_pool, stamped_value};

    #[test]
    fn batches_never_exceed_the_batch_size() {
        let pool = payload_pool(4096, 3);
        for (batch_bytes, record_bytes, keyed) in [
            (16_384, 1024, false),
            (1 << 20, 1024, true),
            (4096, 100, true),
            (1000, 5000, false),
        ] {
            let key_bytes = if keyed { KEY_BYTES } else { 0 };
            let mut acc = Accumulator::new(vec![0, 1], batch_bytes, record_bytes + key_bytes);
            let now = Instant::now();
            let mut k = 0;
            while !acc.any_full() {
                let key = keyed.then(|| Bytes::from(format!("key-{:08}", k % 1000)));
                let r = record(key, stamped_value(record_bytes, k, &pool, 0), 0);
                acc.push((k % 2) as usize, r, now, k);
                k += 1;
            }
            let data = acc.drain(Compression::None).expect("drain");
            for (_, batch) in data {
                let len = batch.len();
                assert!(
                    len <= batch_bytes.max(record_bytes + 100),
                    "{len} > {batch_bytes} ({record_bytes} B records)"
                );
            }
            assert_eq!(acc.count, 0);
        }
    }
}
