//! Record batches as the harness writes and reads them. Each value starts
//! with a marker and the wall-clock microsecond it was meant to be sent,
//! so any consumer of the topic, in this process or another on the same
//! host, can compute end-to-end latency.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use crate::error::{BenchError, Result};

/// Marks values written by sluice-bench (version 1 of the layout).
pub const VALUE_MARKER: &[u8; 4] = b"SLB1";
/// Marker plus the u64 timestamp.
pub const VALUE_HEADER_BYTES: usize = 12;

/// Offset of the batch length field in a v2 record batch; the length
/// counts the bytes after it.
const BATCH_LENGTH_OFFSET: usize = 8;
const BATCH_PREFIX_BYTES: usize = 12;

pub fn parse_compression(name: &str) -> Option<Compression> {
    match name {
        "none" => Some(Compression::None),
        "gzip" => Some(Compression::Gzip),
        "snappy" => Some(Compression::Snappy),
        "lz4" => Some(Compression::Lz4),
        "zstd" => Some(Compression::Zstd),
        _ => None,
    }
}

/// Filler for record values: text-like and mildly repetitive, so codecs
/// compress it about as well as they compress metrics or logs, not as
/// well as they compress zeros.
pub fn payload_pool(bytes: usize, seed: u64) -> Bytes {
    const WORDS: [&[u8]; 16] = [
        b"cpu",
        b"host=",
        b"region=eu-west",
        b"value=",
        b"0.",
        b"42",
        b"17",
        b"usage_idle",
        b"mem",
        b"disk",
        b" ",
        b",",
        b"9",
        b"3",
        b"service=api",
        b"\n",
    ];
    let mut state = seed | 1;
    let mut out = BytesMut::with_capacity(bytes + 16);
    while out.len() < bytes {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.put_slice(WORDS[(state % 16) as usize]);
    }
    out.truncate(bytes);
    out.freeze()
}

/// A record value of `value_bytes` (at least the header) stamped with
/// `sent_wall_us`; the filler comes from `pool`, starting at `pool_at`.
pub fn stamped_value(value_bytes: usize, sent_wall_us: u64, pool: &Bytes, pool_at: usize) -> Bytes {
    let mut arena = BytesMut::new();
    stamp_into(&mut arena, value_bytes, sent_wall_us, pool, pool_at)
}

/// Bytes an arena grows by: many values share one allocation.
const ARENA_BYTES: usize = 256 << 10;

/// Like [`stamped_value`] but carves the value out of `arena`, so a
/// producer allocates once per many records rather than once per record.
pub fn stamp_into(
    arena: &mut BytesMut,
    value_bytes: usize,
    sent_wall_us: u64,
    pool: &Bytes,
    pool_at: usize,
) -> Bytes {
    let value_bytes = value_bytes.max(VALUE_HEADER_BYTES);
    if arena.capacity() - arena.len() < value_bytes {
        *arena = BytesMut::with_capacity(value_bytes.max(ARENA_BYTES));
    }
    let v = arena;
    v.put_slice(VALUE_MARKER);
    v.put_u64(sent_wall_us);
    let mut left = value_bytes - VALUE_HEADER_BYTES;
    let mut at = if pool.is_empty() {
        0
    } else {
        pool_at % pool.len()
    };
    while left > 0 {
        if pool.is_empty() {
            v.put_bytes(b'x', left);
            break;
        }
        let n = left.min(pool.len() - at);
        v.put_slice(&pool[at..at + n]);
        left -= n;
        at = 0;
    }
    v.split().freeze()
}

/// The send timestamp of a value written by [`stamped_value`].
pub fn value_sent_wall_us(value: &[u8]) -> Option<u64> {
    if value.len() < VALUE_HEADER_BYTES || &value[..4] != VALUE_MARKER {
        return None;
    }
    let mut ts = &value[4..VALUE_HEADER_BYTES];
    Some(ts.get_u64())
}

pub fn record(key: Option<Bytes>, value: Bytes, timestamp_ms: i64) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: timestamp_ms,
        key,
        value: Some(value),
        headers: Default::default(),
    }
}

/// Encodes `records` as one v2 batch (offsets are assigned here, relative
/// to 0; the broker stamps the base offset).
pub fn encode_batch(records: &mut [Record], compression: Compression) -> Result<Bytes> {
    // The encoder starts a new batch wherever offset − sequence changes;
    // keeping it constant with the first sequence at −1 gives one batch
    // with base sequence −1, as a non-idempotent producer sends.
    for (i, r) in records.iter_mut().enumerate() {
        r.offset = i as i64;
        r.sequence = (i as i32).wrapping_sub(1);
    }
    let mut buf = BytesMut::with_capacity(
        records
            .iter()
            .map(|r| r.value.as_ref().map_or(0, |v| v.len()) + 24)
            .sum::<usize>()
            + 61,
    );
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    if compression == Compression::Lz4 {
        RecordBatchEncoder::encode_with_custom_compression(
            &mut buf,
            records.iter(),
            &options,
            Some(lz4_fast),
        )
    } else {
        RecordBatchEncoder::encode(&mut buf, records.iter(), &options)
    }
    .map_err(BenchError::codec)?;
    Ok(buf.freeze())
}

/// LZ4 frames at the fast level. `kafka_protocol` uses level 4, which is
/// LZ4HC: several times the CPU, enough to make a small-record producer
/// the bottleneck. librdkafka's default is the fast level too. (The
/// `anyhow` result is the type `kafka_protocol`'s compressor hook takes.)
fn lz4_fast(records: &mut BytesMut, out: &mut BytesMut, _: Compression) -> anyhow::Result<()> {
    use std::io::Write;
    let mut encoder = lz4::EncoderBuilder::new()
        .level(0)
        .block_mode(lz4::BlockMode::Independent)
        .build(out.writer())?;
    encoder.write_all(records)?;
    let (_, finished) = encoder.finish();
    finished?;
    Ok(())
}

/// What one pass over a Fetch partition's records found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    pub records: u64,
    pub bytes: u64,
    /// The offset to fetch next, if any whole batch was read.
    pub offset_next: Option<i64>,
}

/// Walks the whole batches in `records` (a Fetch response may end in a
/// partial one, which is left for the next fetch) and calls `each` with
/// every record's offset and value.
pub fn scan_batches(mut records: Bytes, mut each: impl FnMut(i64, &[u8])) -> Result<Scanned> {
    let mut out = Scanned::default();
    while records.len() >= BATCH_PREFIX_BYTES {
        let len = i32::from_be_bytes([
            records[BATCH_LENGTH_OFFSET],
            records[BATCH_LENGTH_OFFSET + 1],
            records[BATCH_LENGTH_OFFSET + 2],
            records[BATCH_LENGTH_OFFSET + 3],
        ]);
        let Ok(len) = usize::try_from(len) else {
            return Err(BenchError::Protocol(format!("batch length {len}")));
        };
        let whole = BATCH_PREFIX_BYTES + len;
        if records.len() < whole {
            break;
        }
        let mut batch = records.split_to(whole);
        out.bytes += whole as u64;
        let set = RecordBatchDecoder::decode(&mut batch).map_err(BenchError::codec)?;
        for r in &set.records {
            if r.control {
                continue;
            }
            out.records += 1;
            each(r.offset, r.value.as_deref().unwrap_or(&[]));
            out.offset_next = Some(out.offset_next.unwrap_or(0).max(r.offset + 1));
        }
        if set.records.is_empty() {
            break;
        }
    }
    Ok(out)
}

/// Like [`scan_batches`] but reads only batch headers: record counts and
/// offsets, no decompression or per-record work. Bytes count whole batches.
pub fn scan_batch_headers(mut records: Bytes) -> Result<Scanned> {
    const BASE_OFFSET_AT: usize = 0;
    const LAST_OFFSET_DELTA_AT: usize = 23;
    const RECORD_COUNT_AT: usize = 57;
    const HEADER_BYTES: usize = 61;
    let be_i32 = |b: &[u8], at: usize| i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let mut out = Scanned::default();
    while records.len() >= BATCH_PREFIX_BYTES {
        let len = be_i32(&records, BATCH_LENGTH_OFFSET);
        let Ok(len) = usize::try_from(len) else {
            return Err(BenchError::Protocol(format!("batch length {len}")));
        };
        let whole = BATCH_PREFIX_BYTES + len;
        if records.len() < whole {
            break;
        }
        if whole < HEADER_BYTES {
            return Err(BenchError::Protocol(format!(
                "record batch of {whole} bytes"
            )));
        }
        let mut base = [0u8; 8];
        base.copy_from_slice(&records[BASE_OFFSET_AT..BASE_OFFSET_AT + 8]);
        let base = i64::from_be_bytes(base);
        let last = base + i64::from(be_i32(&records, LAST_OFFSET_DELTA_AT));
        out.records += u64::try_from(be_i32(&records, RECORD_COUNT_AT)).unwrap_or(0);
        out.bytes += whole as u64;
        out.offset_next = Some(out.offset_next.unwrap_or(0).max(last + 1));
        records.advance(whole);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_of(n: usize, compression: Compression) -> (Vec<Record>, Bytes) {
        let pool = payload_pool(4096, 7);
        let mut records: Vec<Record> = (0..n)
            .map(|i| {
                let key = (i % 2 == 0).then(|| Bytes::from(format!("key-{i}")));
                record(key, stamped_value(100, 1_000 + i as u64, &pool, i * 13), 5)
            })
            .collect();
        let bytes = encode_batch(&mut records, compression).expect("encode");
        (records, bytes)
    }

    #[test]
    fn batches_round_trip_through_the_decoder_in_every_codec() {
        for name in ["none", "gzip", "snappy", "lz4", "zstd"] {
            let compression = parse_compression(name).expect("codec");
            let (records, bytes) = batch_of(50, compression);
            let mut b = bytes.clone();
            let set = RecordBatchDecoder::decode(&mut b).expect("decode");
            assert_eq!(set.compression, compression, "{name}");
            assert_eq!(set.records.len(), 50);
            for (a, b) in records.iter().zip(&set.records) {
                assert_eq!(a.key, b.key);
                assert_eq!(a.value, b.value);
                assert_eq!(a.offset, b.offset);
            }
            let mut seen = Vec::new();
            let scanned = scan_batches(bytes.clone(), |off, v| {
                seen.push((off, value_sent_wall_us(v).expect("stamped")))
            })
            .expect("scan");
            assert_eq!(scanned.records, 50);
            assert_eq!(scanned.bytes, bytes.len() as u64);
            assert_eq!(scanned.offset_next, Some(50));
            assert_eq!(seen[7], (7, 1_007));
        }
    }

    #[test]
    fn records_go_out_as_one_batch_from_a_plain_producer() {
        let (_, bytes) = batch_of(20, Compression::Lz4);
        let mut b = bytes.clone();
        let info = RecordBatchDecoder::decode_batch_info(&mut b).expect("info");
        assert_eq!(info.len(), 1);
        assert_eq!(info[0].record_count, 20);
        assert_eq!(info[0].base_sequence, -1);
        assert_eq!(info[0].producer_id, -1);
        assert_eq!(info[0].min_offset, 0);
    }

    #[test]
    fn header_scans_agree_with_full_decoding() {
        for compression in [Compression::None, Compression::Zstd] {
            let (_, one) = batch_of(7, compression);
            let mut two = BytesMut::from(&one[..]);
            // A second batch at base offset 7, then half of a third.
            let mut second = BytesMut::from(&one[..]);
            second[..8].copy_from_slice(&7i64.to_be_bytes());
            two.put_slice(&second);
            two.put_slice(&one[..40]);
            let two = two.freeze();
            let full = scan_batches(two.clone(), |_, _| {}).expect("full");
            let headers = scan_batch_headers(two).expect("headers");
            assert_eq!(headers.records, 14);
            assert_eq!(headers.offset_next, Some(14));
            assert_eq!(full.records, headers.records);
            assert_eq!(full.offset_next, headers.offset_next);
            assert_eq!(full.bytes, headers.bytes);
        }
    }

    #[test]
    fn a_trailing_partial_batch_is_left_for_the_next_fetch() {
        let (_, one) = batch_of(3, Compression::None);
        let mut two = BytesMut::from(&one[..]);
        two.put_slice(&one[..one.len() / 2]);
        let scanned = scan_batches(two.freeze(), |_, _| {}).expect("scan");
        assert_eq!(scanned.records, 3);
        assert_eq!(scanned.bytes, one.len() as u64);
    }

    #[test]
    fn values_carry_their_send_time_and_size() {
        let pool = payload_pool(10, 1);
        let v = stamped_value(1024, 123_456, &pool, 3);
        assert_eq!(v.len(), 1024);
        assert_eq!(value_sent_wall_us(&v), Some(123_456));
        assert_eq!(value_sent_wall_us(b"plain"), None);
        assert_eq!(stamped_value(1, 9, &pool, 0).len(), VALUE_HEADER_BYTES);
        let mut arena = BytesMut::new();
        let values: Vec<Bytes> = (0..1000)
            .map(|i| stamp_into(&mut arena, 700, i, &pool, i as usize))
            .collect();
        for (i, v) in values.iter().enumerate() {
            assert_eq!(v.len(), 700);
            assert_eq!(value_sent_wall_us(v), Some(i as u64));
        }
    }
}
