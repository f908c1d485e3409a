//! Produce request frames encoded around the record batches instead of
//! through them: the small parts are encoded here and the batches are
//! sent as the `Bytes` they already are, saving a copy of every byte a
//! producer sends. The layout is checked byte for byte against
//! `kafka_protocol`'s encoder for every Produce version it speaks.

use bytes::{BufMut, Bytes, BytesMut};
use uuid::Uuid;

use crate::error::{BenchError, Result};

/// Produce v9 and later use compact (flexible) encodings.
const FIRST_FLEXIBLE_VERSION: i16 = 9;
/// Produce v13 names topics by id.
const FIRST_TOPIC_ID_VERSION: i16 = 13;
/// Below this many batch bytes one contiguous frame is cheaper than
/// several writes.
pub const GATHER_BYTES_MIN: usize = 64 << 10;
const PRODUCE_KEY: i16 = 0;

fn put_uvarint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn put_len(buf: &mut BytesMut, flexible: bool, len: usize) -> Result<()> {
    let too_long = || BenchError::Protocol(format!("{len} bytes do not fit a Kafka length"));
    if flexible {
        put_uvarint(buf, len as u64 + 1);
    } else {
        buf.put_i32(i32::try_from(len).map_err(|_| too_long())?);
    }
    Ok(())
}

/// The pieces of one Produce request frame, length prefix included; the
/// record batches are among them, not copied.
pub struct ProduceFrame<'a> {
    pub version: i16,
    pub correlation_id: i32,
    pub client_id: &'a str,
    pub acks: i16,
    pub timeout_ms: i32,
    pub topic: &'a str,
    pub topic_id: Uuid,
    /// (partition, record batches)
    pub partitions: &'a [(i32, Bytes)],
}

impl ProduceFrame<'_> {
    pub fn chunks(&self) -> Result<Vec<Bytes>> {
        let v = self.version;
        let flexible = v >= FIRST_FLEXIBLE_VERSION;
        let mut chunks = Vec::with_capacity(2 * self.partitions.len() + 1);
        let mut cur = BytesMut::with_capacity(128);
        cur.put_i32(0); // length, filled in below
        cur.put_i16(PRODUCE_KEY);
        cur.put_i16(v);
        cur.put_i32(self.correlation_id);
        // client_id stays a classic nullable string even in header v2.
        cur.put_i16(self.client_id.len() as i16);
        cur.put_slice(self.client_id.as_bytes());
        if flexible {
            put_uvarint(&mut cur, 0); // header tagged fields
            put_uvarint(&mut cur, 0); // transactional_id: null
        } else {
            cur.put_i16(-1);
        }
        cur.put_i16(self.acks);
        cur.put_i32(self.timeout_ms);
        if flexible {
            put_uvarint(&mut cur, 2); // one topic
        } else {
            cur.put_i32(1);
        }
        if v >= FIRST_TOPIC_ID_VERSION {
            cur.put_slice(self.topic_id.as_bytes());
        } else if flexible {
            put_uvarint(&mut cur, self.topic.len() as u64 + 1);
            cur.put_slice(self.topic.as_bytes());
        } else {
            cur.put_i16(self.topic.len() as i16);
            cur.put_slice(self.topic.as_bytes());
        }
        if flexible {
            put_uvarint(&mut cur, self.partitions.len() as u64 + 1);
        } else {
            cur.put_i32(self.partitions.len() as i32);
        }
        for (i, (partition, records)) in self.partitions.iter().enumerate() {
            if i > 0 && flexible {
                put_uvarint(&mut cur, 0); // previous partition's tagged fields
            }
            cur.put_i32(*partition);
            put_len(&mut cur, flexible, records.len())?;
            chunks.push(cur.split().freeze());
            chunks.push(records.clone());
        }
        if flexible {
            if !self.partitions.is_empty() {
                put_uvarint(&mut cur, 0); // last partition's tagged fields
            }
            put_uvarint(&mut cur, 0); // topic tagged fields
            put_uvarint(&mut cur, 0); // request tagged fields
        }
        chunks.push(cur.freeze());
        let total: usize = chunks.iter().map(Bytes::len).sum();
        let length = i32::try_from(total - 4)
            .map_err(|_| BenchError::Protocol(format!("request of {total} bytes")))?;
        let mut first = BytesMut::from(&chunks[0][..]);
        first[..4].copy_from_slice(&length.to_be_bytes());
        chunks[0] = first.freeze();
        Ok(chunks)
    }

    /// One contiguous frame when the batches are small, the pieces otherwise.
    pub fn to_write(&self) -> Result<Vec<Bytes>> {
        let chunks = self.chunks()?;
        let batch_bytes: usize = self.partitions.iter().map(|(_, b)| b.len()).sum();
        if batch_bytes >= GATHER_BYTES_MIN {
            return Ok(chunks);
        }
        let mut one = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
        for c in &chunks {
            one.put_slice(c);
        }
        Ok(vec![one.freeze()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::encode_request;
    use crate::client::records::{encode_batch, record, stamped_value};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, TopicName};
    use kafka_protocol::protocol::{Message, StrBytes};
    use kafka_protocol::records::Compression;

    #[test]
    fn frames_match_kafka_protocol_byte_for_byte_in_every_version() {
        let pool = Bytes::from_static(b"abcdefghij");
        let batch = |n: usize| {
            let mut rs: Vec<_> = (0..n)
                .map(|i| record(None, stamped_value(50, i as u64, &pool, i), 0))
                .collect();
            encode_batch(&mut rs, Compression::None).expect("batch")
        };
        let partitions = [(0, batch(3)), (7, batch(1)), (2, batch(200))];
        let topic_id = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        for version in ProduceRequest::VERSIONS.min..=ProduceRequest::VERSIONS.max {
            for parts in [&partitions[..], &partitions[..1], &[][..]] {
                let frame = ProduceFrame {
                    version,
                    correlation_id: 42,
                    client_id: "sluice-bench",
                    acks: -1,
                    timeout_ms: 30_000,
                    topic: "bench-topic",
                    topic_id,
                    partitions: parts,
                };
                let ours: Vec<u8> = frame.chunks().expect("chunks").concat();
                let request = ProduceRequest::default()
                    .with_acks(-1)
                    .with_timeout_ms(30_000)
                    .with_topic_data(vec![TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_static_str("bench-topic")))
                        .with_topic_id(topic_id)
                        .with_partition_data(
                            parts
                                .iter()
                                .map(|(p, b)| {
                                    PartitionProduceData::default()
                                        .with_index(*p)
                                        .with_records(Some(b.clone()))
                                })
                                .collect(),
                        )]);
                let theirs = encode_request(0, version, 42, &request).expect("oracle");
                assert_eq!(
                    ours,
                    theirs.to_vec(),
                    "Produce v{version}, {} partitions",
                    parts.len()
                );
                let gathered: Vec<u8> = frame.to_write().expect("write").concat();
                assert_eq!(gathered, ours);
            }
        }
    }
}
