//! Builders of valid v2 batches for tests, crash drivers and benchmarks:
//! uncompressed value-only batches, and keyed batches (any codec, optionally
//! idempotent) for compaction. Real producers' batches come from Kafka
//! clients in the end-to-end tests; these only need to be valid.

use bytes::{BufMut, Bytes, BytesMut};

use crate::varint::put_varint;

/// A batch of `count` records, each with a `value_len`-byte value derived
/// from its index, record `i` stamped `base_timestamp + i`. Base offset 0.
pub fn batch_bytes(count: i32, base_timestamp: i64, value_len: usize) -> Bytes {
    batch_with_values(
        base_timestamp,
        (0..count).map(|i| {
            (0..value_len)
                .map(|j| (i as usize + j) as u8)
                .collect::<Vec<u8>>()
        }),
    )
}

/// A batch holding one record per value, timestamps `base_timestamp + i`.
pub fn batch_with_values<I, V>(base_timestamp: i64, values: I) -> Bytes
where
    I: IntoIterator<Item = V>,
    V: AsRef<[u8]>,
{
    let mut records = BytesMut::new();
    let mut count: i32 = 0;
    for value in values {
        let value = value.as_ref();
        let mut body = BytesMut::new();
        body.put_i8(0); // attributes
        put_varint(&mut body, i64::from(count)); // timestampDelta
        put_varint(&mut body, i64::from(count)); // offsetDelta
        put_varint(&mut body, -1); // null key
        put_varint(&mut body, value.len() as i64);
        body.put_slice(value);
        put_varint(&mut body, 0); // no headers
        put_varint(&mut records, body.len() as i64);
        records.put_slice(&body);
        count += 1;
    }
    assert!(count > 0, "a batch needs at least one record");
    let mut b = BytesMut::with_capacity(61 + records.len());
    b.put_i64(0); // baseOffset, stamped by the log
    b.put_i32((49 + records.len()) as i32); // batchLength
    b.put_i32(-1); // partitionLeaderEpoch
    b.put_i8(2); // magic
    b.put_u32(0); // crc, filled below
    b.put_i16(0); // attributes
    b.put_i32(count - 1); // lastOffsetDelta
    b.put_i64(base_timestamp);
    b.put_i64(base_timestamp + i64::from(count - 1));
    b.put_i64(-1); // producerId
    b.put_i16(-1); // producerEpoch
    b.put_i32(-1); // baseSequence
    b.put_i32(count);
    b.put_slice(&records);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

/// One record of [`keyed_batch`]: `None` key or value is Kafka's null.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

fn put_bytes(out: &mut BytesMut, b: &Option<Vec<u8>>) {
    match b {
        Some(b) => {
            put_varint(out, b.len() as i64);
            out.put_slice(b);
        }
        None => put_varint(out, -1),
    }
}

/// A batch of keyed records compressed with `compression`, timestamps
/// `base_timestamp + i`; `producer` = (id, epoch, base sequence) makes it
/// idempotent. Base offset 0. Panics on an empty list (tests only).
pub fn keyed_batch(
    records: &[KeyedRecord],
    base_timestamp: i64,
    compression: crate::batch::Compression,
    producer: Option<(i64, i16, i32)>,
) -> Bytes {
    assert!(!records.is_empty(), "a batch needs at least one record");
    let mut section = BytesMut::new();
    for (i, r) in records.iter().enumerate() {
        let mut body = BytesMut::new();
        body.put_i8(0);
        put_varint(&mut body, i as i64);
        put_varint(&mut body, i as i64);
        put_bytes(&mut body, &r.key);
        put_bytes(&mut body, &r.value);
        put_varint(&mut body, 0);
        put_varint(&mut section, body.len() as i64);
        section.put_slice(&body);
    }
    let body = crate::records::compress(compression, &section).expect("codec compresses");
    let codec: i16 = match compression {
        crate::batch::Compression::None => 0,
        crate::batch::Compression::Gzip => 1,
        crate::batch::Compression::Snappy => 2,
        crate::batch::Compression::Lz4 => 3,
        crate::batch::Compression::Zstd => 4,
        crate::batch::Compression::Unknown(c) => i16::from(c),
    };
    let count = records.len() as i32;
    let (pid, epoch, seq) = producer.unwrap_or((-1, -1, -1));
    let mut b = BytesMut::with_capacity(61 + body.len());
    b.put_i64(0);
    b.put_i32((49 + body.len()) as i32);
    b.put_i32(-1);
    b.put_i8(2);
    b.put_u32(0);
    b.put_i16(codec);
    b.put_i32(count - 1);
    b.put_i64(base_timestamp);
    b.put_i64(base_timestamp + i64::from(count - 1));
    b.put_i64(pid);
    b.put_i16(epoch);
    b.put_i32(seq);
    b.put_i32(count);
    b.put_slice(&body);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}
