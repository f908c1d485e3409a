//! The Fetch response encoder. kafka-protocol's encoder copies every
//! partition's records into its output; this one writes only the framing
//! and hands back the stored record batches as separate chunks, so a fetch
//! goes from the log's `Bytes` to the socket without a copy. Tests hold it
//! byte for byte against kafka-protocol's `FetchResponse::encode`.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use crate::response::{frame_length, response_header_bytes, ResponseError};

/// Fetch versions this encoder knows the layout of (kafka-protocol 0.18).
pub const FETCH_VERSION_MIN: i16 = 4;
pub const FETCH_VERSION_MAX: i16 = 18;
/// From this version on, the message uses compact (varint) lengths and
/// tagged fields.
const FLEXIBLE_FROM: i16 = 12;

#[derive(Debug, Clone, Default)]
pub struct FetchResponseParts {
    pub throttle_time_ms: i32,
    pub error_code: i16,
    pub session_id: i32,
    pub topics: Vec<FetchTopicParts>,
}

#[derive(Debug, Clone, Default)]
pub struct FetchTopicParts {
    /// Sent up to v12.
    pub topic: StrBytes,
    /// Sent from v13.
    pub topic_id: Uuid,
    pub partitions: Vec<FetchPartitionParts>,
}

#[derive(Debug, Clone)]
pub struct FetchPartitionParts {
    pub partition_index: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// `(producer_id, first_offset)`; `None` is sent as a null array, as
    /// Kafka does for read_uncommitted fetches.
    pub aborted_transactions: Option<Vec<(i64, i64)>>,
    pub preferred_read_replica: i32,
    /// Whole record batches, sent one after the other as the records field.
    pub records: Vec<Bytes>,
}

impl Default for FetchPartitionParts {
    fn default() -> Self {
        FetchPartitionParts {
            partition_index: 0,
            error_code: 0,
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            aborted_transactions: None,
            preferred_read_replica: -1,
            records: Vec::new(),
        }
    }
}

impl FetchPartitionParts {
    pub fn records_bytes(&self) -> usize {
        self.records.iter().map(Bytes::len).sum()
    }
}

/// Encodes a whole Fetch response frame (length prefix included) as chunks
/// to be written in order: framing pieces interleaved with the records.
pub fn encode_fetch_response(
    correlation_id: i32,
    version: i16,
    response: &FetchResponseParts,
) -> Result<Vec<Bytes>, ResponseError> {
    let fail = |reason: String| ResponseError {
        api_key: ApiKey::Fetch,
        api_version: version,
        reason,
    };
    if !(FETCH_VERSION_MIN..=FETCH_VERSION_MAX).contains(&version) {
        return Err(fail(format!("version {version} is not supported")));
    }
    let flexible = version >= FLEXIBLE_FROM;
    let mut framing = BytesMut::with_capacity(64 + 64 * response.topics.len());
    // Where each partition's records go in the framing, to splice them in.
    let mut splice_at: Vec<(usize, &[Bytes])> = Vec::new();
    framing.put_i32(0);
    response_header_bytes(&mut framing, ApiKey::Fetch, version, correlation_id)?;
    framing.put_i32(response.throttle_time_ms);
    if version >= 7 {
        framing.put_i16(response.error_code);
        framing.put_i32(response.session_id);
    }
    put_array_len(&mut framing, response.topics.len(), flexible);
    for topic in &response.topics {
        if version <= 12 {
            put_string(&mut framing, topic.topic.as_str(), flexible).map_err(fail)?;
        }
        if version >= 13 {
            framing.put_slice(topic.topic_id.as_bytes());
        }
        put_array_len(&mut framing, topic.partitions.len(), flexible);
        for p in &topic.partitions {
            framing.put_i32(p.partition_index);
            framing.put_i16(p.error_code);
            framing.put_i64(p.high_watermark);
            framing.put_i64(p.last_stable_offset);
            if version >= 5 {
                framing.put_i64(p.log_start_offset);
            }
            match &p.aborted_transactions {
                None if flexible => put_uvarint(&mut framing, 0),
                None => framing.put_i32(-1),
                Some(list) => {
                    put_array_len(&mut framing, list.len(), flexible);
                    for (producer_id, first_offset) in list {
                        framing.put_i64(*producer_id);
                        framing.put_i64(*first_offset);
                        if flexible {
                            put_uvarint(&mut framing, 0);
                        }
                    }
                }
            }
            if version >= 11 {
                framing.put_i32(p.preferred_read_replica);
            }
            let records_len = p.records_bytes();
            if flexible {
                let n = u32::try_from(records_len + 1)
                    .map_err(|_| fail(format!("{records_len} bytes of records")))?;
                put_uvarint(&mut framing, n);
            } else {
                let n = i32::try_from(records_len)
                    .map_err(|_| fail(format!("{records_len} bytes of records")))?;
                framing.put_i32(n);
            }
            splice_at.push((framing.len(), &p.records));
            if flexible {
                // No tagged fields: diverging epoch, current leader and
                // snapshot id are only set by replication errors.
                put_uvarint(&mut framing, 0);
            }
        }
        if flexible {
            put_uvarint(&mut framing, 0);
        }
    }
    if flexible {
        put_uvarint(&mut framing, 0);
    }
    let records_total: usize = splice_at
        .iter()
        .map(|(_, r)| r.iter().map(Bytes::len).sum::<usize>())
        .sum();
    let length = frame_length(framing.len() - 4 + records_total, ApiKey::Fetch, version)?;
    framing[..4].copy_from_slice(&length.to_be_bytes());
    let framing = framing.freeze();
    let mut chunks = Vec::with_capacity(2 * splice_at.len() + 1);
    let mut from = 0;
    for (at, records) in splice_at {
        if at > from {
            chunks.push(framing.slice(from..at));
        }
        chunks.extend(records.iter().filter(|r| !r.is_empty()).cloned());
        from = at;
    }
    if from < framing.len() {
        chunks.push(framing.slice(from..));
    }
    Ok(chunks)
}

fn put_uvarint(buf: &mut BytesMut, mut n: u32) {
    while n >= 0x80 {
        buf.put_u8((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    buf.put_u8(n as u8);
}

fn put_array_len(buf: &mut BytesMut, len: usize, flexible: bool) {
    if flexible {
        put_uvarint(buf, len as u32 + 1);
    } else {
        buf.put_i32(len as i32);
    }
}

fn put_string(buf: &mut BytesMut, s: &str, flexible: bool) -> Result<(), String> {
    if flexible {
        put_uvarint(buf, s.len() as u32 + 1);
    } else {
        let n = i16::try_from(s.len()).map_err(|_| format!("string of {} bytes", s.len()))?;
        buf.put_i16(n);
    }
    buf.put_slice(s.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{
        AbortedTransaction, FetchResponse, FetchableTopicResponse, PartitionData,
    };
    use kafka_protocol::messages::{BrokerId, ProducerId, TopicName};
    use kafka_protocol::protocol::Encodable;

    /// The same response as kafka-protocol's type, records concatenated.
    fn oracle(parts: &FetchResponseParts, version: i16) -> FetchResponse {
        FetchResponse::default()
            .with_throttle_time_ms(parts.throttle_time_ms)
            .with_error_code(if version >= 7 { parts.error_code } else { 0 })
            .with_session_id(if version >= 7 { parts.session_id } else { 0 })
            .with_responses(
                parts
                    .topics
                    .iter()
                    .map(|t| {
                        FetchableTopicResponse::default()
                            .with_topic(TopicName(t.topic.clone()))
                            .with_topic_id(t.topic_id)
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        let mut records = BytesMut::new();
                                        for r in &p.records {
                                            records.put_slice(r);
                                        }
                                        PartitionData::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(p.error_code)
                                            .with_high_watermark(p.high_watermark)
                                            .with_last_stable_offset(p.last_stable_offset)
                                            .with_log_start_offset(p.log_start_offset)
                                            .with_aborted_transactions(
                                                p.aborted_transactions.as_ref().map(|l| {
                                                    l.iter()
                                                        .map(|(id, first)| {
                                                            AbortedTransaction::default()
                                                                .with_producer_id(ProducerId(*id))
                                                                .with_first_offset(*first)
                                                        })
                                                        .collect()
                                                }),
                                            )
                                            .with_preferred_read_replica(BrokerId(
                                                if version >= 11 {
                                                    p.preferred_read_replica
                                                } else {
                                                    -1
                                                },
                                            ))
                                            .with_records(Some(records.freeze()))
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )
    }

    fn sample() -> FetchResponseParts {
        let batch =
            |tag: u8, n: usize| Bytes::from((0..n).map(|i| tag ^ i as u8).collect::<Vec<_>>());
        FetchResponseParts {
            throttle_time_ms: 7,
            error_code: 0,
            session_id: 0,
            topics: vec![
                FetchTopicParts {
                    topic: StrBytes::from_static_str("metrics"),
                    topic_id: Uuid::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
                    partitions: vec![
                        FetchPartitionParts {
                            partition_index: 0,
                            high_watermark: 42,
                            last_stable_offset: 42,
                            log_start_offset: 3,
                            records: vec![batch(1, 300), batch(2, 70), batch(3, 1)],
                            ..FetchPartitionParts::default()
                        },
                        FetchPartitionParts {
                            partition_index: 5,
                            error_code: 1,
                            aborted_transactions: Some(vec![(9, 10), (11, 12)]),
                            ..FetchPartitionParts::default()
                        },
                        FetchPartitionParts {
                            partition_index: 2,
                            high_watermark: 0,
                            last_stable_offset: 0,
                            log_start_offset: 0,
                            aborted_transactions: Some(vec![]),
                            ..FetchPartitionParts::default()
                        },
                    ],
                },
                FetchTopicParts {
                    topic: StrBytes::from_string("x".repeat(200)),
                    topic_id: Uuid::from_u128(5),
                    partitions: vec![FetchPartitionParts {
                        partition_index: 1,
                        high_watermark: 1 << 40,
                        last_stable_offset: 1 << 40,
                        log_start_offset: 1 << 39,
                        // 200 bytes makes the compact length a two-byte varint.
                        records: vec![batch(4, 200)],
                        ..FetchPartitionParts::default()
                    }],
                },
                FetchTopicParts {
                    topic: StrBytes::from_static_str("empty"),
                    topic_id: Uuid::nil(),
                    partitions: vec![],
                },
            ],
        }
    }

    fn oracle_frame(parts: &FetchResponseParts, version: i16, correlation_id: i32) -> Vec<u8> {
        crate::encode_response(
            ApiKey::Fetch,
            version,
            correlation_id,
            &oracle(parts, version),
        )
        .expect("oracle encodes")
        .to_vec()
    }

    #[test]
    fn matches_kafka_protocol_byte_for_byte_at_every_version() {
        let mut parts = sample();
        for version in FETCH_VERSION_MIN..=FETCH_VERSION_MAX {
            parts.session_id = if version >= 7 { 99 } else { 0 };
            let chunks = encode_fetch_response(-3, version, &parts).expect("encodes");
            let ours: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
            assert_eq!(ours, oracle_frame(&parts, version, -3), "v{version}");
        }
        let empty = FetchResponseParts::default();
        for version in [4, 11, 12, 13, 16, 17, 18] {
            let ours: Vec<u8> = encode_fetch_response(1, version, &empty)
                .expect("encodes")
                .iter()
                .flat_map(|c| c.iter().copied())
                .collect();
            assert_eq!(ours, oracle_frame(&empty, version, 1), "empty v{version}");
        }
    }

    #[test]
    fn records_are_not_copied() {
        let parts = sample();
        let stored = &parts.topics[0].partitions[0].records;
        let chunks = encode_fetch_response(1, 16, &parts).expect("encodes");
        for batch in stored {
            assert!(
                chunks
                    .iter()
                    .any(|c| c.as_ptr() == batch.as_ptr() && c.len() == batch.len()),
                "a stored batch is sent as its own chunk"
            );
        }
    }

    #[test]
    fn unsupported_versions_are_refused() {
        assert!(encode_fetch_response(1, 3, &sample()).is_err());
        assert!(encode_fetch_response(1, 19, &sample()).is_err());
        // The oracle agrees that encoding Fetch v4+ needs no field it lacks.
        assert!(oracle(&sample(), 4).compute_size(4).is_ok());
    }
}
