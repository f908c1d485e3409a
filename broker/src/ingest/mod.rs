//! Metrics ingest, off by default: an HTTP listener taking Influx line
//! protocol (`/api/v2/write`, `/write`) and Prometheus remote-write
//! (`/api/v1/write`), and a plain-TCP line-protocol listener, all bound by
//! every shard. Each protocol's decoder turns a write into keyed records;
//! `Ingest::write` appends them to the protocol's topic through
//! `route::produce`, exactly as a Produce request's batches are, and bounds
//! what each shard has on its way to each partition.

pub mod http;
pub mod influx_line;
pub mod influx_tcp;
pub mod remote_write;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::batch::{self, NewRecord};
use crate::config::HttpAuthMode;
use crate::kafka::topics;
use crate::listener::http::Https;
use crate::partition::ProduceItem;
use crate::preflight::StartError;
use crate::route;
use crate::security::http_auth::HttpAuth;
use crate::security::oauth::Validator;

/// How long an ingest write may wait for the in-sync replicas.
const INGEST_TIMEOUT_MS: i32 = 30_000;
use crate::node::Node;

/// Records per batch at most: keeps each batch well under the log's
/// `max_message_bytes` together with the byte bound below.
const BATCH_RECORDS_MAX: usize = 10_000;

/// Seconds a client is told to wait after a 429 or 503.
pub const RETRY_AFTER_S: u32 = 1;

pub use crate::config::IngestFormat as Format;

/// One ingested item (a point, a series' samples) as the record it becomes.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The canonical series: the same series always has the same key, and
    /// so the same partition.
    pub key: Bytes,
    pub value: Bytes,
    pub timestamp_ms: i64,
}

/// Why a write was not (wholly) stored.
#[derive(Debug)]
pub enum IngestError {
    /// The topic does not exist and auto-creation is off (or failed).
    NoTopic(String),
    /// A partition's queue from this shard is full; nothing was stored.
    Busy(String),
    /// An append failed or a shard could not take it; the client should
    /// retry. Partitions other than the failed ones may have stored theirs.
    Unavailable(String),
}

impl std::fmt::Display for IngestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IngestError::NoTopic(t) => write!(f, "topic {t} does not exist"),
            IngestError::Busy(why) | IngestError::Unavailable(why) => write!(f, "{why}"),
        }
    }
}

/// Bytes of writes on their way to each partition, from one shard.
#[derive(Debug)]
pub struct Queues {
    max: usize,
    queued: RefCell<HashMap<(String, i32), usize>>,
}

/// What an admitted write holds in `Queues`, given back when dropped.
#[derive(Debug)]
pub struct Permit {
    queues: Rc<Queues>,
    held: Vec<((String, i32), usize)>,
}

impl Queues {
    pub fn new(max: usize) -> Rc<Queues> {
        Rc::new(Queues {
            max,
            queued: RefCell::new(HashMap::new()),
        })
    }

    /// Admits a write of `bytes` to each partition named, all or nothing.
    /// A partition with nothing queued takes any write (one larger than the
    /// bound alone must still go through); otherwise the bound holds.
    /// `Err` names the first full partition.
    pub fn admit(
        self: &Rc<Self>,
        topic: &str,
        bytes: &[(i32, usize)],
    ) -> Result<Permit, (i32, usize)> {
        let mut queued = self.queued.borrow_mut();
        for &(partition, n) in bytes {
            let now = queued
                .get(&(topic.to_string(), partition))
                .copied()
                .unwrap_or(0);
            if now > 0 && now + n > self.max {
                return Err((partition, now));
            }
        }
        let mut held = Vec::with_capacity(bytes.len());
        for &(partition, n) in bytes {
            let key = (topic.to_string(), partition);
            *queued.entry(key.clone()).or_insert(0) += n;
            held.push((key, n));
        }
        Ok(Permit {
            queues: self.clone(),
            held,
        })
    }

    /// Bytes queued for a partition.
    pub fn queued(&self, topic: &str, partition: i32) -> usize {
        self.queued
            .borrow()
            .get(&(topic.to_string(), partition))
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut queued = self.queues.queued.borrow_mut();
        for (key, n) in self.held.drain(..) {
            if let Some(q) = queued.get_mut(&key) {
                *q = q.saturating_sub(n);
                if *q == 0 {
                    queued.remove(&key);
                }
            }
        }
    }
}

/// One shard's ingest state, shared by its listeners.
pub struct Ingest {
    pub shard: Rc<Node>,
    pub format: Format,
    queues: Rc<Queues>,
    /// The HTTP listener's TLS, when it serves HTTPS.
    pub https: Option<Https>,
    /// Who may write over HTTP.
    pub auth: HttpAuth,
}

/// Binds this shard's ingest listeners (SO_REUSEPORT, like the Kafka
/// listener, so every shard parses its share) and serves them; nothing
/// when both are switched off. The HTTP listener serves HTTPS with `https`.
pub fn start(
    shard: &Rc<Node>,
    https: Option<Https>,
    oauth: Option<Arc<Validator>>,
) -> Result<(), StartError> {
    let (http_addr, tcp_addr) = shard.config.ingest_addrs()?;
    let format = shard.config.ingest_format()?;
    let auth = shard.config.ingest_http_auth()?;
    let bind = |addr: std::net::SocketAddr| {
        crate::listener::bind(addr).map_err(|e| StartError::Bind {
            addr: addr.to_string(),
            reason: e.to_string(),
        })
    };
    let http_listener = http_addr.map(bind).transpose()?;
    let tcp_listener = tcp_addr.map(bind).transpose()?;
    let ingest = Rc::new(Ingest {
        shard: shard.clone(),
        format,
        queues: Queues::new(shard.config.ingest_queue_bytes_max),
        https,
        auth: HttpAuth::new(auth, oauth),
    });
    if let Some(l) = http_listener {
        if shard.id == 0 {
            let https = ingest.https.is_some();
            let auth = &shard.config.ingest_http_auth;
            tracing::info!(addr = ?http_addr, https, auth, "ingest http listening");
            if !https && ingest.auth.mode() != HttpAuthMode::None {
                tracing::warn!(
                    "ingest http: passwords or tokens are taken over plain HTTP, in clear on \
                     the network (ingest_http_auth_insecure); set ingest_http_tls"
                );
            }
        }
        http::spawn_server(&ingest, l);
    }
    if let Some(l) = tcp_listener {
        if shard.id == 0 {
            tracing::info!(addr = ?tcp_addr, "influx tcp listening");
        }
        influx_tcp::spawn_server(&ingest, l);
    }
    Ok(())
}

/// The partition of a series: FNV-1a (32 bit) of the key, modulo the
/// partition count. Stable across processes and versions, so a series
/// always lands in the same partition (and stays in order) while the
/// partition count is unchanged.
pub fn partition_of(key: &[u8], partitions: i32) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in key {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % partitions.max(1) as u32) as i32
}

/// Nanoseconds since the epoch, for points without a timestamp.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Encodes `records` (in order) as one or more batches, concatenated: the
/// owning shard splits a records field into its batches as for Produce.
fn encode(records: Vec<Record>, batch_bytes_max: usize) -> Result<Bytes, String> {
    let mut out = BytesMut::new();
    let mut pending: Vec<NewRecord> = Vec::with_capacity(records.len().min(BATCH_RECORDS_MAX));
    let mut pending_bytes = 0usize;
    for r in records {
        let size = r.key.len() + r.value.len() + batch::RECORD_FRAMING_BYTES_MAX;
        if !pending.is_empty()
            && (pending.len() >= BATCH_RECORDS_MAX || pending_bytes + size > batch_bytes_max)
        {
            batch::encode_into(&mut out, std::mem::take(&mut pending))?;
            pending_bytes = 0;
        }
        pending_bytes += size;
        pending.push(NewRecord {
            key: Some(r.key),
            value: Some(r.value),
            timestamp_ms: r.timestamp_ms,
        });
    }
    if !pending.is_empty() {
        batch::encode_into(&mut out, pending)?;
    }
    Ok(out.freeze())
}

impl Ingest {
    /// Appends `records` to `topic`, grouped by partition, and returns once
    /// every partition's append is durable as the topic's fsync policy
    /// requires (what `route::produce`'s answer means). A write that would
    /// overfill a partition's queue stores nothing and is `Busy`.
    pub async fn write(&self, topic: &str, records: Vec<Record>) -> Result<(), IngestError> {
        if records.is_empty() {
            return Ok(());
        }
        let shard = &self.shard;
        let mut partitions = shard.metadata().topic(topic).map(|t| t.partitions);
        if partitions.is_none() {
            topics::auto_create(shard, &[topic.to_string()]).await;
            partitions = shard.metadata().topic(topic).map(|t| t.partitions);
        }
        let Some(partitions) = partitions else {
            return Err(IngestError::NoTopic(topic.to_string()));
        };
        let mut by_partition: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
        for r in records {
            by_partition
                .entry(partition_of(&r.key, partitions))
                .or_default()
                .push(r);
        }
        // Half the largest batch a log accepts leaves room for the estimate's error.
        let batch_bytes_max = (shard.config.max_message_bytes as usize / 2).max(1024);
        let mut items = Vec::with_capacity(by_partition.len());
        for (partition, records) in by_partition {
            let records = encode(records, batch_bytes_max)
                .map_err(|e| IngestError::Unavailable(format!("encoding a batch failed: {e}")))?;
            // A 204 promises the write is as safe as the cluster makes it.
            items.push(ProduceItem {
                tp: (topic.to_string(), partition),
                records,
                acks: -1,
                timeout_ms: INGEST_TIMEOUT_MS,
            });
        }
        let sizes: Vec<(i32, usize)> = items.iter().map(|i| (i.tp.1, i.records.len())).collect();
        let _permit = self.queues.admit(topic, &sizes).map_err(|(p, queued)| {
            shard.metrics.ingest_writes_refused_busy(1);
            IngestError::Busy(format!(
                "partition {p} of {topic} has {queued} bytes of writes queued (ingest_queue_bytes_max {}): retry later",
                self.queues.max
            ))
        })?;
        let written = route::produce(shard, items).await;
        let failed: Vec<String> = written
            .iter()
            .zip(&sizes)
            .filter(|(w, _)| w.error_code != 0)
            .map(|(w, (partition, _))| {
                format!(
                    "partition {partition}: error code {}{}",
                    w.error_code,
                    w.error_message
                        .as_deref()
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                )
            })
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(IngestError::Unavailable(format!(
                "appending to {topic} failed: {}",
                failed.join(", ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

    #[test]
    fn partitions_are_stable_and_in_range() {
        assert_eq!(partition_of(b"cpu,host=a", 1), 0);
        let p = partition_of(b"cpu,host=a", 7);
        assert!((0..7).contains(&p));
        assert_eq!(p, partition_of(b"cpu,host=a", 7));
        // FNV-1a of "a" is 0xe40c292c.
        assert_eq!(
            partition_of(b"a", 1 << 30),
            (0xe40c_292c_u32 % (1 << 30)) as i32
        );
    }

    #[test]
    fn encode_splits_into_bounded_batches_in_order() {
        let points: Vec<Record> = (0..100)
            .map(|i| Record {
                key: Bytes::from("m"),
                value: Bytes::from(format!("{i:0100}")),
                timestamp_ms: i,
            })
            .collect();
        let mut bytes = encode(points, 2048).expect("encodes");
        let mut seen = Vec::new();
        let mut batches = 0;
        while !bytes.is_empty() {
            let set = RecordBatchDecoder::decode(&mut bytes).expect("decodes");
            batches += 1;
            seen.extend(set.records.iter().map(|r| r.timestamp));
        }
        assert!(batches > 5, "{batches}");
        assert_eq!(seen, (0..100).collect::<Vec<i64>>());
    }
}

#[cfg(test)]
mod queue_tests {
    use super::*;

    #[test]
    fn admission_is_all_or_nothing_and_released_on_drop() {
        let q = Queues::new(100);
        let a = q
            .admit("t", &[(0, 60), (1, 10)])
            .expect("empty queues admit");
        assert_eq!(q.queued("t", 0), 60);
        // Partition 0 would go over; partition 1 must not be charged either.
        assert_eq!(q.admit("t", &[(1, 10), (0, 50)]).expect_err("full").0, 0);
        assert_eq!(q.queued("t", 1), 10);
        let b = q.admit("t", &[(0, 40)]).expect("exactly at the bound");
        assert_eq!(q.queued("t", 0), 100);
        // Another topic's partition 0 is another queue.
        let c = q.admit("u", &[(0, 100)]).expect("other topic");
        drop(a);
        assert_eq!((q.queued("t", 0), q.queued("t", 1)), (40, 0));
        drop((b, c));
        assert_eq!(q.queued("t", 0), 0);
        assert!(q.queued.borrow().is_empty());
    }

    #[test]
    fn an_oversized_write_goes_through_an_empty_queue_alone() {
        let q = Queues::new(100);
        let big = q.admit("t", &[(0, 1_000)]).expect("empty queue admits");
        assert!(q.admit("t", &[(0, 1)]).is_err());
        drop(big);
        assert!(q.admit("t", &[(0, 1)]).is_ok());
    }
}
