//! The records inside a v2 batch, for the log cleaner and the compacted-topic
//! append check: decompress a batch's records section (gzip, snappy, lz4,
//! zstd through kafka-protocol's codecs), list each record's offset, key and
//! whether its value is null, and rebuild a batch that keeps only some of
//! them, re-compressed with the same codec. Nothing else decompresses.

use std::ops::Range;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{self as codec, Compressor, Decompressor};

use crate::batch::{BatchError, BatchHeader, Compression, BATCH_HEADER_BYTES, BATCH_LOG_OVERHEAD};
use crate::varint::read_varint;

/// Where the fields that a filtered batch changes sit in the header.
const OFFSET_LENGTH: usize = 8;
const OFFSET_CRC: usize = 17;
const OFFSET_RECORDS_COUNT: usize = 57;
const CRC_START: usize = 21;
const OFFSET_ATTRIBUTES: usize = 21;
const ATTR_COMPRESSION_MASK: i16 = 0x07;

/// One record of a batch, located in the (decompressed) records section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordView {
    pub offset: i64,
    /// The key's bytes within the records section; `None` for a null key.
    pub key: Option<Range<usize>>,
    /// A null value: a tombstone when the key is set.
    pub tombstone: bool,
    /// The whole record (its length prefix included) within the section.
    pub raw: Range<usize>,
}

/// A batch's records, decompressed.
pub(crate) struct Records {
    pub section: Bytes,
    pub records: Vec<RecordView>,
}

impl Records {
    pub fn key(&self, r: &RecordView) -> Option<&[u8]> {
        r.key.clone().map(|k| &self.section[k])
    }
}

/// Decodes the records of one validated batch (`b` is exactly the batch).
pub(crate) fn decode(b: &Bytes, h: &BatchHeader) -> Result<Records, BatchError> {
    if h.records_count == 0 {
        // An emptied batch has no records section to decompress.
        return Ok(Records {
            section: Bytes::new(),
            records: Vec::new(),
        });
    }
    let body = b.slice(BATCH_HEADER_BYTES..);
    let section = decompress(h.compression(), body)?;
    let records = parse(&section, h)?;
    Ok(Records { section, records })
}

/// Kafka refuses a record without a key in a compacted topic (INVALID_RECORD,
/// "Compacted topic cannot accept message without key"): the cleaner could
/// never tell which record of it is the latest.
pub(crate) fn check_keys(b: &[u8], h: &BatchHeader) -> Result<(), BatchError> {
    let recs = decode(&Bytes::copy_from_slice(b), h)?;
    match recs.records.iter().position(|r| r.key.is_none()) {
        Some(i) => Err(BatchError::NullKey { index: i as i32 }),
        None => Ok(()),
    }
}

fn malformed(index: i32, reason: &'static str) -> BatchError {
    BatchError::MalformedRecord { index, reason }
}

fn decompress(c: Compression, body: Bytes) -> Result<Bytes, BatchError> {
    let mut body = body;
    let take = |b: &mut Bytes| Ok(b.copy_to_bytes(b.remaining()));
    let out = match c {
        Compression::None => return Ok(body),
        Compression::Gzip => <codec::Gzip as Decompressor<Bytes>>::decompress(&mut body, take),
        Compression::Snappy => <codec::Snappy as Decompressor<Bytes>>::decompress(&mut body, take),
        Compression::Lz4 => <codec::Lz4 as Decompressor<Bytes>>::decompress(&mut body, take),
        Compression::Zstd => <codec::Zstd as Decompressor<Bytes>>::decompress(&mut body, take),
        Compression::Unknown(_) => return Err(malformed(0, "unknown compression codec")),
    };
    out.map_err(|_| malformed(0, "records do not decompress"))
}

/// Compresses a records section with `c`.
pub(crate) fn compress(c: Compression, section: &[u8]) -> Result<Vec<u8>, BatchError> {
    let mut out = BytesMut::with_capacity(section.len() / 2 + 64);
    let put = |b: &mut BytesMut| {
        b.put_slice(section);
        Ok(())
    };
    let done = match c {
        Compression::None => {
            out.put_slice(section);
            Ok(())
        }
        Compression::Gzip => <codec::Gzip as Compressor<BytesMut>>::compress(&mut out, put),
        Compression::Snappy => <codec::Snappy as Compressor<BytesMut>>::compress(&mut out, put),
        Compression::Lz4 => <codec::Lz4 as Compressor<BytesMut>>::compress(&mut out, put),
        Compression::Zstd => <codec::Zstd as Compressor<BytesMut>>::compress(&mut out, put),
        Compression::Unknown(_) => return Err(malformed(0, "unknown compression codec")),
    };
    done.map_err(|_| malformed(0, "records do not compress"))?;
    Ok(out.to_vec())
}

/// Walks `recordsCount` records: length, attributes, timestamp delta,
/// offset delta, key, value; headers are skipped via the length.
fn parse(section: &[u8], h: &BatchHeader) -> Result<Vec<RecordView>, BatchError> {
    let count = usize::try_from(h.records_count).map_err(|_| malformed(0, "negative count"))?;
    // A count larger than the bytes could hold is damage, not a reason to
    // reserve memory for it.
    let mut out = Vec::with_capacity(count.min(section.len()));
    let mut at = 0usize;
    for index in 0..h.records_count {
        let bad = |reason| malformed(index, reason);
        let start = at;
        let (len, n) = read_varint(&section[at..]).ok_or_else(|| bad("bad length"))?;
        at += n;
        let len = usize::try_from(len).map_err(|_| bad("negative length"))?;
        let end = at.checked_add(len).ok_or_else(|| bad("overruns batch"))?;
        let body = section.get(at..end).ok_or_else(|| bad("overruns batch"))?;
        let mut p = 1usize; // attributes
        let (_, n) = read_varint(body.get(p..).ok_or_else(|| bad("empty record"))?)
            .ok_or_else(|| bad("bad timestamp"))?;
        p += n;
        let (off_delta, n) = read_varint(&body[p..]).ok_or_else(|| bad("bad offset"))?;
        p += n;
        let (key_len, n) = read_varint(&body[p..]).ok_or_else(|| bad("bad key length"))?;
        p += n;
        let key = if key_len < 0 {
            None
        } else {
            let k = p..p + key_len as usize;
            if k.end > body.len() {
                return Err(bad("key overruns record"));
            }
            p = k.end;
            Some(at + k.start..at + k.end)
        };
        let (value_len, _) = read_varint(&body[p..]).ok_or_else(|| bad("bad value length"))?;
        if off_delta < 0 || off_delta > i64::from(h.last_offset_delta) {
            return Err(bad("offset delta outside the batch"));
        }
        out.push(RecordView {
            offset: h.base_offset + off_delta,
            key,
            tombstone: value_len < 0,
            raw: start..end,
        });
        at = end;
    }
    Ok(out)
}

/// Builds the batch `original` (header `h`) holding only `keep` (records
/// of `records`, in order): same base offset, lastOffsetDelta, timestamps,
/// producer fields and codec; new length, count and CRC. A batch left with
/// no records says it is uncompressed, as Kafka writes empty batches:
/// clients must not try to decompress an empty body (librdkafka 2.12
/// spins forever inflating zero bytes of gzip).
pub(crate) fn rebuild(
    original: &[u8],
    h: &BatchHeader,
    records: &Records,
    keep: &[&RecordView],
) -> Result<Vec<u8>, BatchError> {
    let mut section = Vec::with_capacity(records.section.len());
    for r in keep {
        section.extend_from_slice(&records.section[r.raw.clone()]);
    }
    let body = if keep.is_empty() {
        Vec::new()
    } else {
        compress(h.compression(), &section)?
    };
    let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + body.len());
    out.extend_from_slice(&original[..BATCH_HEADER_BYTES]);
    out.extend_from_slice(&body);
    if keep.is_empty() {
        let attributes = i16::from_be_bytes([out[OFFSET_ATTRIBUTES], out[OFFSET_ATTRIBUTES + 1]]);
        let plain = attributes & !ATTR_COMPRESSION_MASK;
        out[OFFSET_ATTRIBUTES..OFFSET_ATTRIBUTES + 2].copy_from_slice(&plain.to_be_bytes());
    }
    let length = (out.len() - BATCH_LOG_OVERHEAD) as i32;
    out[OFFSET_LENGTH..OFFSET_LENGTH + 4].copy_from_slice(&length.to_be_bytes());
    let count = keep.len() as i32;
    out[OFFSET_RECORDS_COUNT..OFFSET_RECORDS_COUNT + 4].copy_from_slice(&count.to_be_bytes());
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{validate, validate_stored};
    use crate::testing::{keyed_batch, KeyedRecord};

    fn sample(c: Compression) -> Bytes {
        let recs: Vec<KeyedRecord> = (0..6)
            .map(|i| KeyedRecord {
                key: (i != 2).then(|| format!("k{}", i % 3).into_bytes()),
                value: (i != 4).then(|| vec![i as u8; 40]),
            })
            .collect();
        keyed_batch(&recs, 1_000, c, None)
    }

    #[test]
    fn filtering_keeps_offsets_and_codec() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let b = crate::batch::stamped(&sample(c), 100, None);
            let h = validate(&b).expect("valid");
            assert_eq!(h.compression(), c);
            let recs = decode(&b, &h).expect("decode");
            assert_eq!(recs.records.len(), 6);
            assert_eq!(recs.key(&recs.records[1]), Some(&b"k1"[..]));
            assert!(recs.records[2].key.is_none());
            assert!(recs.records[4].tombstone);
            let keep: Vec<&RecordView> = recs.records.iter().skip(3).collect();
            let out = Bytes::from(rebuild(&b, &h, &recs, &keep).expect("rebuild"));
            assert!(validate(&out).is_err(), "fewer records than offsets");
            let h2 = validate_stored(&out).expect("stored batch is valid");
            assert_eq!((h2.base_offset, h2.last_offset()), (100, 105));
            assert_eq!(h2.records_count, 3);
            assert_eq!(h2.compression(), c);
            let again = decode(&out, &h2).expect("decode filtered");
            let offsets: Vec<i64> = again.records.iter().map(|r| r.offset).collect();
            assert_eq!(offsets, vec![103, 104, 105]);
            assert_eq!(again.key(&again.records[0]), Some(&b"k0"[..]));
        }
    }

    #[test]
    fn an_emptied_batch_is_uncompressed_and_decodes_to_nothing() {
        for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
            let b = crate::batch::stamped(&sample(c), 7, None);
            let h = validate(&b).expect("valid");
            let recs = decode(&b, &h).expect("decode");
            let out = Bytes::from(rebuild(&b, &h, &recs, &[]).expect("rebuild"));
            let h2 = validate_stored(&out).expect("valid empty batch");
            assert_eq!(out.len(), BATCH_HEADER_BYTES);
            assert_eq!((h2.records_count, h2.last_offset()), (0, 12));
            assert_eq!(h2.compression(), Compression::None);
            assert_eq!(h2.producer_id, h.producer_id);
            assert!(decode(&out, &h2).expect("decode empty").records.is_empty());
        }
    }

    #[test]
    fn damaged_records_are_an_error_not_a_panic() {
        let b = crate::batch::stamped(&sample(Compression::None), 0, None);
        let h = validate(&b).expect("valid");
        for cut in [BATCH_HEADER_BYTES + 1, BATCH_HEADER_BYTES + 7, b.len() - 3] {
            let short = b.slice(..cut);
            assert!(decode(&short, &h).is_err());
        }
        let gz = crate::batch::stamped(&sample(Compression::Gzip), 0, None);
        let mut bad = gz.to_vec();
        let n = bad.len();
        bad[n - 10..].fill(0xff);
        let hb = crate::batch::parse_header(&bad).expect("header");
        assert!(decode(&Bytes::from(bad), &hb).is_err());
    }
}
