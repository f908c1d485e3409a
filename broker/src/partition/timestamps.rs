//! Exact answers for ListOffsets by timestamp inside compressed batches.
//! The log answers at batch level for compressed batches (it never
//! decompresses); Kafka answers with the exact record, so the broker opens
//! that one batch here.

use kafka_protocol::records::RecordBatchDecoder;
use storage::{PartitionLog, StorageError, TimestampOffset};

/// Bytes read to reach the batch holding a hit: one batch is returned
/// whatever its size, so this only bounds what comes after it.
const READ_BYTES: usize = 1;

/// Refines a hit from `offset_for_timestamp` (`exact == false`: first
/// record with timestamp >= `target`) or `max_timestamp` (`exact == true`:
/// first record with timestamp == `target`).
pub async fn refine(
    log: &PartitionLog,
    hit: TimestampOffset,
    target: i64,
    exact: bool,
) -> Result<TimestampOffset, StorageError> {
    let read = log.read(hit.offset, READ_BYTES).await?;
    let Some(chunk) = read.chunks.first() else {
        return Ok(hit);
    };
    let mut bytes = chunk.clone();
    let header = storage::batch::parse_header(&bytes)?;
    if header.compression() == storage::batch::Compression::None {
        return Ok(hit);
    }
    let Ok(set) = RecordBatchDecoder::decode(&mut bytes) else {
        tracing::warn!(
            offset = hit.offset,
            "a stored compressed batch does not decode"
        );
        return Ok(hit);
    };
    let found = set.records.iter().find(|r| {
        r.offset >= hit.offset
            && if exact {
                r.timestamp == target
            } else {
                r.timestamp >= target
            }
    });
    Ok(match found {
        Some(r) => TimestampOffset {
            timestamp: r.timestamp,
            offset: r.offset,
        },
        None => hit,
    })
}
