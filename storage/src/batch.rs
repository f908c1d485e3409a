//! Kafka RecordBatch v2 framing: header parsing, validation and base-offset
//! stamping. The log stores batches exactly as producers sent them; this
//! module is the only place that knows where the fields sit.

use bytes::{Bytes, BytesMut};

use crate::varint::read_varint;

/// Size of the fixed RecordBatch v2 header that precedes the records.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes before `batchLength` counts: baseOffset (8) + batchLength (4).
pub const BATCH_LOG_OVERHEAD: usize = 12;
/// First byte covered by the CRC (the attributes field).
const CRC_START: usize = 21;

const OFFSET_LENGTH: usize = 8;
const OFFSET_LEADER_EPOCH: usize = 12;
const OFFSET_MAGIC: usize = 16;
const OFFSET_CRC: usize = 17;
const OFFSET_ATTRIBUTES: usize = 21;
const OFFSET_LAST_OFFSET_DELTA: usize = 23;
const OFFSET_BASE_TIMESTAMP: usize = 27;
const OFFSET_MAX_TIMESTAMP: usize = 35;
const OFFSET_PRODUCER_ID: usize = 43;
const OFFSET_PRODUCER_EPOCH: usize = 51;
const OFFSET_BASE_SEQUENCE: usize = 53;
const OFFSET_RECORDS_COUNT: usize = 57;

const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_TIMESTAMP_TYPE: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

/// Why a batch was refused. `kind()` tells which Kafka error it maps to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch is {len} bytes, shorter than the {BATCH_HEADER_BYTES}-byte v2 header")]
    TooShort { len: usize },
    #[error("batchLength field says {declared} bytes but {actual} follow it")]
    LengthMismatch { declared: i64, actual: usize },
    #[error("magic byte is {magic}, only v2 record batches are accepted")]
    UnsupportedMagic { magic: i8 },
    #[error("CRC-32C mismatch: header says {expected:#010x}, content gives {actual:#010x}")]
    CrcMismatch { expected: u32, actual: u32 },
    #[error("recordsCount {count} does not match lastOffsetDelta {last_offset_delta} + 1")]
    CountMismatch { count: i32, last_offset_delta: i32 },
    #[error("batch holds no records")]
    Empty,
    #[error("batch of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("record {index} is malformed: {reason}")]
    MalformedRecord { index: i32, reason: &'static str },
    #[error("compacted topic cannot accept message without key (record {index})")]
    NullKey { index: i32 },
}

/// The two Kafka error families a refused batch belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchErrorKind {
    /// Kafka's CORRUPT_MESSAGE: the bytes are damaged (length, CRC).
    Corrupt,
    /// Kafka's INVALID_RECORD: well-formed bytes that break a rule.
    Invalid,
    /// Kafka's MESSAGE_TOO_LARGE.
    TooLarge,
    /// Kafka's UNSUPPORTED_FOR_MESSAGE_FORMAT.
    UnsupportedFormat,
}

impl BatchError {
    pub fn kind(&self) -> BatchErrorKind {
        match self {
            BatchError::TooShort { .. }
            | BatchError::LengthMismatch { .. }
            | BatchError::CrcMismatch { .. } => BatchErrorKind::Corrupt,
            BatchError::UnsupportedMagic { .. } => BatchErrorKind::UnsupportedFormat,
            BatchError::TooLarge { .. } => BatchErrorKind::TooLarge,
            BatchError::CountMismatch { .. }
            | BatchError::Empty
            | BatchError::MalformedRecord { .. }
            | BatchError::NullKey { .. } => BatchErrorKind::Invalid,
        }
    }
}

/// Compression codec named by a batch's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
    Unknown(u8),
}

/// The fields of a v2 batch header that the log and the broker use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Total size of the batch in bytes, header included.
    pub size: usize,
    pub partition_leader_epoch: i32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    pub fn compression(&self) -> Compression {
        match (self.attributes & ATTR_COMPRESSION_MASK) as u8 {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => Compression::Unknown(other),
        }
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_TIMESTAMP_TYPE != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// Reads the total size of the batch starting at `b`, from its
/// `batchLength` field, without validating anything else. `None` when fewer
/// than 12 bytes are available or the length is impossible.
pub fn peek_batch_size(b: &[u8]) -> Option<usize> {
    if b.len() < BATCH_LOG_OVERHEAD {
        return None;
    }
    let declared = i32_at(b, OFFSET_LENGTH);
    let size = usize::try_from(declared).ok()? + BATCH_LOG_OVERHEAD;
    (size >= BATCH_HEADER_BYTES).then_some(size)
}

/// Parses the header of the batch that starts at `b[0]` and fills exactly
/// `b`. Checks nothing but the sizes; use [`validate`] for full checks.
pub fn parse_header(b: &[u8]) -> Result<BatchHeader, BatchError> {
    if b.len() < BATCH_HEADER_BYTES {
        return Err(BatchError::TooShort { len: b.len() });
    }
    let declared = i64::from(i32_at(b, OFFSET_LENGTH));
    if declared < 0 || declared as usize + BATCH_LOG_OVERHEAD != b.len() {
        return Err(BatchError::LengthMismatch {
            declared,
            actual: b.len() - BATCH_LOG_OVERHEAD,
        });
    }
    Ok(BatchHeader {
        base_offset: i64_at(b, 0),
        size: b.len(),
        partition_leader_epoch: i32_at(b, OFFSET_LEADER_EPOCH),
        attributes: i16_at(b, OFFSET_ATTRIBUTES),
        last_offset_delta: i32_at(b, OFFSET_LAST_OFFSET_DELTA),
        base_timestamp: i64_at(b, OFFSET_BASE_TIMESTAMP),
        max_timestamp: i64_at(b, OFFSET_MAX_TIMESTAMP),
        producer_id: i64_at(b, OFFSET_PRODUCER_ID),
        producer_epoch: i16_at(b, OFFSET_PRODUCER_EPOCH),
        base_sequence: i32_at(b, OFFSET_BASE_SEQUENCE),
        records_count: i32_at(b, OFFSET_RECORDS_COUNT),
    })
}

/// Checks that `b` is exactly one intact v2 batch: length, magic, CRC-32C
/// over attributes..end, and a record count that agrees with
/// lastOffsetDelta. This is the produce-time check.
pub fn validate(b: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = validate_stored(b)?;
    if header.records_count <= 0 {
        return Err(BatchError::Empty);
    }
    if header.records_count != header.last_offset_delta + 1 {
        return Err(BatchError::CountMismatch {
            count: header.records_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    Ok(header)
}

/// The check for batches already in the log: as [`validate`], except that
/// a batch the log cleaner filtered may hold fewer records than its offset
/// range (`0 ≤ recordsCount ≤ lastOffsetDelta + 1`): it keeps its base
/// offset and lastOffsetDelta so that offsets and producer sequences stay
/// what they were, as Kafka's cleaner does.
pub fn validate_stored(b: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = parse_header(b)?;
    let magic = b[OFFSET_MAGIC] as i8;
    if magic != 2 {
        return Err(BatchError::UnsupportedMagic { magic });
    }
    let expected = u32::from_be_bytes([
        b[OFFSET_CRC],
        b[OFFSET_CRC + 1],
        b[OFFSET_CRC + 2],
        b[OFFSET_CRC + 3],
    ]);
    let actual = crc32c::crc32c(&b[CRC_START..]);
    if expected != actual {
        return Err(BatchError::CrcMismatch { expected, actual });
    }
    if header.last_offset_delta < 0
        || header.records_count < 0
        || header.records_count > header.last_offset_delta + 1
    {
        return Err(BatchError::CountMismatch {
            count: header.records_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    Ok(header)
}

/// Writes `base_offset` into the batch. The field lies outside the CRC, so
/// the batch stays valid.
pub fn stamp_base_offset(b: &mut [u8], base_offset: i64) {
    b[..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Writes the partition leader epoch (also outside the CRC).
pub fn stamp_leader_epoch(b: &mut [u8], epoch: i32) {
    b[OFFSET_LEADER_EPOCH..OFFSET_LEADER_EPOCH + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// Returns a copy of `batch` carrying `base_offset` (and the leader epoch,
/// when given). One copy is needed because a produce request's records are
/// a shared slice of its frame.
pub fn stamped(batch: &[u8], base_offset: i64, leader_epoch: Option<i32>) -> Bytes {
    let mut owned = BytesMut::from(batch);
    stamp_base_offset(&mut owned, base_offset);
    if let Some(epoch) = leader_epoch {
        stamp_leader_epoch(&mut owned, epoch);
    }
    owned.freeze()
}

/// One record of an uncompressed batch, as far as offset and timestamp
/// lookups need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordPosition {
    pub offset: i64,
    pub timestamp: i64,
}

/// Lists offset and timestamp of every record of an uncompressed batch.
/// Compressed batches are not opened here (the log never decompresses);
/// callers fall back to batch-level answers for them.
pub fn record_positions(b: &[u8]) -> Result<Vec<RecordPosition>, BatchError> {
    let header = parse_header(b)?;
    if header.compression() != Compression::None {
        return Ok(Vec::new());
    }
    let mut out = Vec::with_capacity(header.records_count.max(0) as usize);
    let mut at = BATCH_HEADER_BYTES;
    for index in 0..header.records_count {
        let malformed = |reason| BatchError::MalformedRecord { index, reason };
        let (len, n) = read_varint(&b[at..]).ok_or_else(|| malformed("bad length"))?;
        at += n;
        let len = usize::try_from(len).map_err(|_| malformed("negative length"))?;
        let body = b
            .get(at..at + len)
            .ok_or_else(|| malformed("overruns batch"))?;
        // attributes (1 byte), timestampDelta (varlong), offsetDelta (varint)
        let rest = body.get(1..).ok_or_else(|| malformed("empty record"))?;
        let (ts_delta, n1) = read_varint(rest).ok_or_else(|| malformed("bad timestamp"))?;
        let (off_delta, _) = read_varint(&rest[n1..]).ok_or_else(|| malformed("bad offset"))?;
        out.push(RecordPosition {
            offset: header.base_offset + off_delta,
            timestamp: header.base_timestamp.wrapping_add(ts_delta),
        });
        at += len;
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testing::batch_bytes;

    #[test]
    fn accepts_a_valid_batch_and_reads_its_header() {
        let b = batch_bytes(5, 1_000, 10);
        let h = validate(&b).expect("valid");
        assert_eq!(h.records_count, 5);
        assert_eq!(h.last_offset_delta, 4);
        assert_eq!(h.size, b.len());
        assert_eq!(h.compression(), Compression::None);
        assert_eq!(peek_batch_size(&b), Some(b.len()));
    }

    #[test]
    fn stamping_the_base_offset_keeps_the_crc_valid() {
        let b = batch_bytes(3, 1_000, 10);
        let s = stamped(&b, 42, None);
        let h = validate(&s).expect("still valid");
        assert_eq!(h.base_offset, 42);
        assert_eq!(h.last_offset(), 44);
    }

    #[test]
    fn a_flipped_bit_fails_the_crc() {
        let mut b = batch_bytes(3, 1_000, 10).to_vec();
        let last = b.len() - 1;
        b[last] ^= 1;
        assert!(matches!(validate(&b), Err(BatchError::CrcMismatch { .. })));
        assert_eq!(
            validate(&b).expect_err("corrupt").kind(),
            BatchErrorKind::Corrupt
        );
    }

    #[test]
    fn wrong_magic_and_truncation_are_refused() {
        let mut b = batch_bytes(1, 1_000, 10).to_vec();
        assert!(matches!(
            validate(&b[..b.len() - 1]),
            Err(BatchError::LengthMismatch { .. })
        ));
        assert!(matches!(
            validate(&b[..20]),
            Err(BatchError::TooShort { .. })
        ));
        b[16] = 1;
        assert!(matches!(
            validate(&b),
            Err(BatchError::UnsupportedMagic { magic: 1 })
        ));
    }

    #[test]
    fn record_positions_follow_the_records() {
        let b = stamped(&batch_bytes(4, 5_000, 8), 100, None);
        let p = record_positions(&b).expect("parse");
        assert_eq!(p.len(), 4);
        assert_eq!(
            p[0],
            RecordPosition {
                offset: 100,
                timestamp: 5_000
            }
        );
        assert_eq!(
            p[3],
            RecordPosition {
                offset: 103,
                timestamp: 5_003
            }
        );
    }
}
