//! Reads of partitions this node leads: Fetch (up to the high watermark),
//! the long-poll wait for new data, ListOffsets and DeleteRecords.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future;
use futures_util::future::join_all;
use kafka_protocol::ResponseError as Kafka;
use storage::PartitionLog;

use super::{FetchItem, OffsetAnswer, PartitionRead};
use crate::errors::{code, storage_error_code};
use crate::shard::{Shard, TopicPartition};

/// ListOffsets special timestamps.
pub const LATEST_TIMESTAMP: i64 = -1;
pub const EARLIEST_TIMESTAMP: i64 = -2;
pub const MAX_TIMESTAMP: i64 = -3;

/// Reads each partition's records, within `budget_bytes` for the whole
/// response. Each read is given what the reads before it leave of the
/// budget if they fill their own limits, so they can all run at once (a
/// catch-up over many partitions keeps several disk reads in flight); the
/// partitions that got nothing that way are read afterwards, in order, from
/// what the others left, as a one-at-a-time fetch would have.
pub async fn fetch(
    shard: &Shard,
    items: Vec<FetchItem>,
    budget_bytes: usize,
) -> Vec<PartitionRead> {
    let mut reserved = budget_bytes;
    let limits: Vec<usize> = items
        .iter()
        .map(|item| {
            let limit = item.partition_max_bytes.min(reserved);
            reserved -= limit;
            limit
        })
        .collect();
    let first = items
        .iter()
        .zip(&limits)
        .map(|(item, &limit)| fetch_one(shard, item, limit));
    let mut out = join_all(first).await;
    let mut left = budget_bytes.saturating_sub(out.iter().map(PartitionRead::bytes_len).sum());
    for (i, item) in items.iter().enumerate() {
        if limits[i] > 0 || out[i].error_code != 0 || left == 0 {
            continue;
        }
        let read = fetch_one(shard, item, item.partition_max_bytes.min(left)).await;
        left = left.saturating_sub(read.bytes_len());
        out[i] = read;
    }
    out
}

/// One partition's part of a fetch, at most `limit` bytes (0: none, but
/// its high watermark and log start).
async fn fetch_one(shard: &Shard, item: &FetchItem, limit: usize) -> PartitionRead {
    let failed = |error_code| PartitionRead {
        error_code,
        high_watermark: -1,
        log_start_offset: -1,
        chunks: Vec::new(),
    };
    let replica = match shard.led(&item.tp) {
        Ok(r) => r,
        Err(code) => return failed(code),
    };
    let log = replica.log();
    // Consumers read what the ISR has: up to the high watermark
    // (never past what this log can serve yet).
    let high_watermark = replica.high_watermark().min(log.log_end_offset());
    if limit == 0 || (item.offset >= high_watermark && item.offset <= log.log_end_offset()) {
        return PartitionRead {
            error_code: 0,
            high_watermark,
            log_start_offset: log.log_start_offset(),
            chunks: Vec::new(),
        };
    }
    match log.read(item.offset, limit).await {
        Ok(read) => PartitionRead {
            error_code: 0,
            high_watermark,
            log_start_offset: read.log_start_offset,
            chunks: clip_to(read.chunks, high_watermark),
        },
        Err(e) => failed(storage_error_code(&e)),
    }
}

/// Waits until a partition's log end offset passes the offset given (or
/// the partition is gone), or `timeout`.
pub async fn wait_for_data(shard: &Shard, items: &[(TopicPartition, i64)], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let ready = items.iter().any(|(tp, offset)| match shard.replica(tp) {
            Some(r) => !r.is_leader() || r.high_watermark() > *offset,
            None => true,
        });
        if ready || shard.is_shutting_down() {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        // Wake at least every 100 ms to notice shutdown.
        let nap = left.min(Duration::from_millis(100));
        future::or(shard.appended.next(), crate::rt::sleep(nap)).await;
    }
}

pub async fn list_offsets(shard: &Shard, items: Vec<(TopicPartition, i64)>) -> Vec<OffsetAnswer> {
    let mut out = Vec::with_capacity(items.len());
    for (tp, timestamp) in items {
        let replica = match shard.led(&tp) {
            Ok(r) => r,
            Err(error_code) => {
                out.push(OffsetAnswer {
                    error_code,
                    timestamp: -1,
                    offset: -1,
                });
                continue;
            }
        };
        let log = replica.log().clone();
        let found: Result<Option<(i64, i64)>, i16> = match timestamp {
            EARLIEST_TIMESTAMP => Ok(Some((-1, log.log_start_offset()))),
            LATEST_TIMESTAMP => Ok(Some((
                -1,
                replica.high_watermark().min(log.log_end_offset()),
            ))),
            MAX_TIMESTAMP => match log.max_timestamp().await {
                Ok(Some(hit)) => refine(&log, hit, hit.timestamp, true).await,
                other => other.map(|h| h.map(|h| (h.timestamp, h.offset))),
            }
            .map_err(|e| storage_error_code(&e)),
            ts if ts < 0 => Err(code(Kafka::InvalidRequest)),
            ts => match log.offset_for_timestamp(ts).await {
                Ok(Some(hit)) => refine(&log, hit, ts, false).await,
                other => other.map(|h| h.map(|h| (h.timestamp, h.offset))),
            }
            .map_err(|e| storage_error_code(&e)),
        };
        out.push(match found {
            Ok(Some((timestamp, offset))) => OffsetAnswer {
                error_code: 0,
                timestamp,
                offset,
            },
            // Kafka answers "nothing at or after that time" this way.
            Ok(None) => OffsetAnswer {
                error_code: 0,
                timestamp: -1,
                offset: -1,
            },
            Err(error_code) => OffsetAnswer {
                error_code,
                timestamp: -1,
                offset: -1,
            },
        });
    }
    out
}

pub async fn delete_records(shard: &Shard, items: Vec<(TopicPartition, i64)>) -> Vec<(i16, i64)> {
    let mut out = Vec::with_capacity(items.len());
    for (tp, offset) in items {
        let replica = match shard.led(&tp) {
            Ok(r) => r,
            Err(error_code) => {
                out.push((error_code, -1));
                continue;
            }
        };
        let log = replica.log().clone();
        let high_watermark = replica.high_watermark();
        // -1 means "everything up to the high watermark".
        let offset = if offset == -1 { high_watermark } else { offset };
        if offset > high_watermark {
            out.push((code(Kafka::OffsetOutOfRange), -1));
            continue;
        }
        out.push(match log.delete_records_before(offset).await {
            Ok(log_start_offset) => (0, log_start_offset),
            Err(e) => (storage_error_code(&e), -1),
        });
    }
    out
}

async fn refine(
    log: &PartitionLog,
    hit: storage::TimestampOffset,
    target: i64,
    exact: bool,
) -> Result<Option<(i64, i64)>, storage::StorageError> {
    let exact_hit = super::timestamps::refine(log, hit, target, exact).await?;
    Ok(Some((exact_hit.timestamp, exact_hit.offset)))
}

/// Cuts record batches at the first one that is not wholly below
/// `high_watermark`: consumers see only what every in-sync replica has.
pub fn clip_to(chunks: Vec<Bytes>, high_watermark: i64) -> Vec<Bytes> {
    let mut out = Vec::with_capacity(chunks.len());
    for chunk in chunks {
        let mut at = 0;
        while at < chunk.len() {
            let rest = &chunk[at..];
            let Some(size) = storage::batch::peek_batch_size(rest).filter(|&s| s <= rest.len())
            else {
                break;
            };
            let visible = storage::batch::parse_header(&rest[..size])
                .is_ok_and(|h| h.last_offset() < high_watermark);
            if !visible {
                break;
            }
            at += size;
        }
        if at == chunk.len() {
            out.push(chunk);
            continue;
        }
        if at > 0 {
            out.push(chunk.slice(..at));
        }
        return out;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(base: i64, count: i32) -> Vec<u8> {
        let records: Vec<crate::batch::NewRecord> = (0..count)
            .map(|i| crate::batch::NewRecord {
                key: None,
                value: Some(Bytes::from(format!("v{i}"))),
                timestamp_ms: 0,
            })
            .collect();
        let mut b = crate::batch::encode(records).expect("encodes").to_vec();
        b[0..8].copy_from_slice(&base.to_be_bytes());
        b
    }

    #[test]
    fn clips_at_the_first_batch_not_below_the_high_watermark() {
        let mut chunk = batch(0, 3);
        chunk.extend(batch(3, 2));
        chunk.extend(batch(5, 4));
        let chunk = Bytes::from(chunk);
        let sizes = |v: &[Bytes]| v.iter().map(|c| c.len()).sum::<usize>();
        let one = batch(0, 3).len();
        let two = one + batch(3, 2).len();
        assert_eq!(sizes(&clip_to(vec![chunk.clone()], 9)), chunk.len());
        assert_eq!(sizes(&clip_to(vec![chunk.clone()], 5)), two);
        assert_eq!(sizes(&clip_to(vec![chunk.clone()], 4)), one);
        assert_eq!(sizes(&clip_to(vec![chunk.clone()], 2)), 0);
        assert!(clip_to(vec![chunk.clone(), chunk], 5).len() == 1);
    }
}
