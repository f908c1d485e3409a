//! Consumers: tailing ones that read from the log end as records arrive
//! and measure end-to-end latency from each record's send stamp, and the
//! catch-up reader that reads a whole backlog from the start for MB/s.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use kafka_protocol::protocol::{Message, Request, VersionRange};
use serde::Serialize;

use super::{ConsumerUnit, Plan, ShardOutput};
use crate::client::admin::{list_offsets, topic_name, TopicInfo, EARLIEST, LATEST};
use crate::client::records::{scan_batch_headers, scan_batches, value_sent_wall_us};
use crate::client::versions::{api_name, error_name};
use crate::client::Connection;
use crate::error::{BenchError, Result};
use crate::stats::MB;

const FETCH_WAIT_MS: i32 = 100;
const FETCH_BYTES_MAX: i32 = 64 << 20;
/// Fetch v13 names topics by id only; a broker that reports no topic id
/// gets v12, which still names them.
const FETCH_BY_NAME_VERSION_MAX: i16 = 12;

/// What a tailing consumer does with each record value.
type ValueFn<'a> = dyn FnMut(&[u8]) + 'a;

/// A fetch session over some partitions of one leader.
struct Fetcher {
    conn: Connection,
    version: i16,
    topic: TopicInfo,
    offsets: BTreeMap<i32, i64>,
    partition_bytes_max: i32,
}

impl Fetcher {
    async fn open(
        addr: &str,
        topic: &TopicInfo,
        offsets: BTreeMap<i32, i64>,
        partition_bytes_max: usize,
        timeout: Duration,
    ) -> Result<Fetcher> {
        let conn = Connection::connect(addr, timeout).await?;
        let mut ours = FetchRequest::VERSIONS;
        if topic.topic_id.is_nil() {
            ours = ours.intersect(&VersionRange {
                min: ours.min,
                max: FETCH_BY_NAME_VERSION_MAX,
            });
        }
        let version =
            conn.versions
                .pick_range(FetchRequest::KEY, api_name(FetchRequest::KEY), ours)?;
        Ok(Fetcher {
            conn,
            version,
            topic: topic.clone(),
            offsets,
            partition_bytes_max: i32::try_from(partition_bytes_max).unwrap_or(i32::MAX),
        })
    }

    /// One Fetch. With `each`, every record is decoded and `each` sees its
    /// value, and bytes count record values; without it only batch
    /// headers are read and bytes count whole batches (the catch-up read
    /// measures the broker, not our decoder). Returns (records, bytes).
    async fn fetch(&mut self, mut each: Option<&mut ValueFn<'_>>) -> Result<(u64, u64)> {
        let partitions = self
            .offsets
            .iter()
            .map(|(&p, &offset)| {
                FetchPartition::default()
                    .with_partition(p)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(self.partition_bytes_max)
            })
            .collect();
        let request = FetchRequest::default()
            .with_replica_id((-1).into())
            .with_max_wait_ms(FETCH_WAIT_MS)
            .with_min_bytes(1)
            .with_max_bytes(FETCH_BYTES_MAX)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic_name(&self.topic.name))
                .with_topic_id(self.topic.topic_id)
                .with_partitions(partitions)]);
        let id = self
            .conn
            .writer
            .send(FetchRequest::KEY, self.version, &request)
            .await?;
        let response: FetchResponse = self.conn.reader.recv(self.version, id).await?;
        if response.error_code != 0 {
            return Err(BenchError::Kafka {
                api: "Fetch",
                code: response.error_code,
                what: error_name(response.error_code).to_string(),
            });
        }
        let (mut records, mut bytes) = (0, 0);
        for t in response.responses {
            for p in t.partitions {
                if p.error_code != 0 {
                    return Err(BenchError::Kafka {
                        api: "Fetch",
                        code: p.error_code,
                        what: format!(
                            "partition {}: {}",
                            p.partition_index,
                            error_name(p.error_code)
                        ),
                    });
                }
                let Some(data) = p.records else { continue };
                let scanned = match each.as_mut() {
                    Some(f) => scan_batches(data, |_, value| {
                        bytes += value.len() as u64;
                        f(value)
                    })?,
                    None => {
                        let s = scan_batch_headers(data)?;
                        bytes += s.bytes;
                        s
                    }
                };
                records += scanned.records;
                if let Some(next) = scanned.offset_next {
                    self.offsets.insert(p.partition_index, next);
                }
            }
        }
        Ok((records, bytes))
    }
}

/// Kafka consumers default to 1 MiB per partition per fetch; a batch
/// larger than that would come back alone anyway.
fn partition_bytes_max(batch_bytes: usize) -> usize {
    batch_bytes.clamp(1 << 20, 32 << 20)
}

/// Tails `unit`'s partitions from where the log ended before the load,
/// until the run's end plus the drain time.
pub async fn run_tailing(
    plan: &Plan,
    unit: &ConsumerUnit,
    out: &Rc<RefCell<ShardOutput>>,
) -> Result<()> {
    let offsets = unit
        .partitions
        .iter()
        .map(|p| (*p, plan.tail_from.get(p).copied().unwrap_or(0)))
        .collect();
    let mut fetcher = Fetcher::open(
        &unit.leader_addr,
        &plan.topic,
        offsets,
        partition_bytes_max(plan.scenario.batch_bytes),
        plan.connect_timeout,
    )
    .await?;
    let clock = plan.clock;
    let counted_from = clock.wall_us(plan.measure_from);
    let counted_to = clock.wall_us(plan.stop_at);
    let end = plan.stop_at + plan.drain;
    while Instant::now() < end && !plan.cancelled() {
        let mut latencies: Vec<u64> = Vec::new();
        let mut each = |value: &[u8]| {
            if let Some(sent) = value_sent_wall_us(value) {
                if sent >= counted_from && sent < counted_to {
                    latencies.push(sent);
                }
            }
        };
        let (records, bytes) = fetcher.fetch(Some(&mut each)).await?;
        let now = Instant::now();
        let now_us = clock.wall_us(now);
        let mut o = out.borrow_mut();
        for sent in latencies {
            o.e2e
                .record(now, Duration::from_micros(now_us.saturating_sub(sent)), 1);
        }
        drop(o);
        plan.counters.add_in(records, bytes);
    }
    Ok(())
}

/// The catch-up read's figures.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct CatchUp {
    pub records: u64,
    /// Bytes of whole record batches read.
    pub bytes: u64,
    pub seconds: f64,
    pub records_per_s: f64,
    pub mb_per_s: f64,
    /// False when the time bound ended it before the log end.
    pub complete: bool,
}

/// Reads every partition from its earliest offset to the log end as it
/// stands now, one connection per leader, for at most `time_max`.
pub async fn catch_up(
    topic: &TopicInfo,
    time_max: Duration,
    timeout: Duration,
    cancel: &AtomicBool,
) -> Result<CatchUp> {
    let mut by_leader: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for p in &topic.partitions {
        by_leader
            .entry(p.leader_addr.clone())
            .or_default()
            .push(p.partition);
    }
    let mut sessions = Vec::new();
    for (leader, partitions) in by_leader {
        let mut conn = Connection::connect(&leader, timeout).await?;
        let start = list_offsets(&mut conn, &topic.name, &partitions, EARLIEST).await?;
        let end: BTreeMap<i32, i64> = list_offsets(&mut conn, &topic.name, &partitions, LATEST)
            .await?
            .into_iter()
            .collect();
        drop(conn);
        let fetcher = Fetcher::open(
            &leader,
            topic,
            start.into_iter().collect(),
            32 << 20,
            timeout,
        )
        .await?;
        sessions.push((fetcher, end));
    }
    let started = Instant::now();
    let deadline = started + time_max;
    let mut result = CatchUp {
        complete: true,
        ..CatchUp::default()
    };
    for (mut fetcher, end) in sessions {
        loop {
            fetcher
                .offsets
                .retain(|p, o| *o < end.get(p).copied().unwrap_or(0));
            if fetcher.offsets.is_empty() {
                break;
            }
            if Instant::now() >= deadline || cancel.load(Ordering::Relaxed) {
                result.complete = false;
                break;
            }
            let (records, bytes) = fetcher.fetch(None).await?;
            result.records += records;
            result.bytes += bytes;
        }
    }
    result.seconds = started.elapsed().as_secs_f64();
    let s = result.seconds.max(1e-9);
    result.records_per_s = result.records as f64 / s;
    result.mb_per_s = result.bytes as f64 / MB / s;
    Ok(result)
}

/// The log end of every partition, for tailing consumers to start at.
pub async fn log_ends(topic: &TopicInfo, timeout: Duration) -> Result<BTreeMap<i32, i64>> {
    let mut by_leader: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for p in &topic.partitions {
        by_leader
            .entry(p.leader_addr.clone())
            .or_default()
            .push(p.partition);
    }
    let mut ends = BTreeMap::new();
    for (leader, partitions) in by_leader {
        let mut conn = Connection::connect(&leader, timeout).await?;
        ends.extend(list_offsets(&mut conn, &topic.name, &partitions, LATEST).await?);
    }
    Ok(ends)
}
