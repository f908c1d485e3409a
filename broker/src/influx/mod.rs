//! Influx line-protocol ingest, off by default: an HTTP listener
//! (`/api/v2/write`, `/write`) and a plain TCP one, both bound by every
//! shard. Points become keyed JSON records in one topic, appended through
//! `route::produce` exactly as a Produce request's batches are.

pub mod http;
pub mod line;
pub mod tcp;

use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use crate::batch::{self, NewRecord};
use crate::kafka::topics;
use crate::mesh::ProduceItem;
use crate::preflight::StartError;
use crate::route;
use crate::shard::Shard;
use line::Point;

/// Records per batch at most: keeps each batch well under the log's
/// `max_message_bytes` together with the byte bound below.
const BATCH_RECORDS_MAX: usize = 10_000;

/// Per-record overhead estimate of the v2 record encoding (varints, attrs).
const RECORD_OVERHEAD_BYTES: usize = 32;

/// Why a write was not (wholly) stored.
#[derive(Debug)]
pub enum IngestError {
    /// The topic does not exist and auto-creation is off (or failed).
    NoTopic(String),
    /// An append failed or a shard could not take it; the client should
    /// retry. Partitions other than the failed ones may have stored theirs.
    Unavailable(String),
}

impl std::fmt::Display for IngestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IngestError::NoTopic(t) => write!(f, "topic {t} does not exist"),
            IngestError::Unavailable(why) => write!(f, "{why}"),
        }
    }
}

/// Binds this shard's Influx listeners (SO_REUSEPORT, like the Kafka
/// listener, so every shard parses its share) and serves them; nothing
/// when both are switched off.
pub fn start(shard: &Rc<Shard>) -> Result<(), StartError> {
    let (http_addr, tcp_addr) = shard.config.influx_addrs()?;
    let bind = |addr: std::net::SocketAddr| {
        crate::listen::bind(addr).map_err(|e| StartError::Bind {
            addr: addr.to_string(),
            reason: e.to_string(),
        })
    };
    let http_listener = http_addr.map(bind).transpose()?;
    let tcp_listener = tcp_addr.map(bind).transpose()?;
    if let Some(l) = http_listener {
        if shard.id == 0 {
            tracing::info!(addr = ?http_addr, "influx http listening");
        }
        http::spawn_server(shard, l);
    }
    if let Some(l) = tcp_listener {
        if shard.id == 0 {
            tracing::info!(addr = ?tcp_addr, "influx tcp listening");
        }
        tcp::spawn_server(shard, l);
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

/// Encodes `points` (in order) as one or more batches, concatenated: the
/// owning shard splits a records field into its batches as for Produce.
fn encode(points: Vec<Point>, batch_bytes_max: usize) -> Result<Bytes, String> {
    let mut out = BytesMut::new();
    let mut pending: Vec<NewRecord> = Vec::new();
    let mut pending_bytes = 0usize;
    for p in points {
        let size = p.key.len() + p.value.len() + RECORD_OVERHEAD_BYTES;
        if !pending.is_empty()
            && (pending.len() >= BATCH_RECORDS_MAX || pending_bytes + size > batch_bytes_max)
        {
            out.extend_from_slice(&batch::encode(std::mem::take(&mut pending))?);
            pending_bytes = 0;
        }
        pending_bytes += size;
        pending.push(NewRecord {
            key: Some(p.key),
            value: Some(p.value),
            timestamp_ms: p.timestamp_ms,
        });
    }
    if !pending.is_empty() {
        out.extend_from_slice(&batch::encode(pending)?);
    }
    Ok(out.freeze())
}

/// Appends `points` to the ingest topic, grouped by partition, and returns
/// once every partition's append is durable as the topic's fsync policy
/// requires (what `route::produce`'s answer means).
pub async fn write(shard: &Rc<Shard>, points: Vec<Point>) -> Result<(), IngestError> {
    if points.is_empty() {
        return Ok(());
    }
    let topic = shard.config.influx_topic.clone();
    let mut partitions = shard.metadata().topic(&topic).map(|t| t.partitions);
    if partitions.is_none() {
        topics::auto_create(shard, std::slice::from_ref(&topic)).await;
        partitions = shard.metadata().topic(&topic).map(|t| t.partitions);
    }
    let Some(partitions) = partitions else {
        return Err(IngestError::NoTopic(topic));
    };
    let points_n = points.len();
    let mut by_partition: BTreeMap<i32, Vec<Point>> = BTreeMap::new();
    for p in points {
        by_partition
            .entry(partition_of(&p.key, partitions))
            .or_default()
            .push(p);
    }
    // Half the largest batch a log accepts leaves room for the estimate's error.
    let batch_bytes_max = (shard.config.max_message_bytes as usize / 2).max(1024);
    let mut items = Vec::with_capacity(by_partition.len());
    let order: Vec<i32> = by_partition.keys().copied().collect();
    for (partition, points) in by_partition {
        let records = encode(points, batch_bytes_max)
            .map_err(|e| IngestError::Unavailable(format!("encoding a batch failed: {e}")))?;
        items.push(ProduceItem {
            tp: (topic.clone(), partition),
            records,
        });
    }
    let points_n = points_n as u64;
    let written = route::produce(shard, items).await;
    let failed: Vec<String> = written
        .iter()
        .zip(&order)
        .filter(|(w, _)| w.error_code != 0)
        .map(|(w, partition)| {
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
        shard.metrics.influx_points_stored(points_n);
        Ok(())
    } else {
        Err(IngestError::Unavailable(format!(
            "appending to {topic} failed: {}",
            failed.join(", ")
        )))
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
        let points: Vec<Point> = (0..100)
            .map(|i| Point {
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
