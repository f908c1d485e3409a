//! Record batches the broker writes itself (group state, ingested points):
//! uncompressed Kafka v2 batches built with kafka-protocol's encoder, with
//! no producer id, offsets from 0 (the log assigns the real ones).

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// One record to encode: key, value (None = tombstone), create time in ms.
pub struct NewRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub timestamp_ms: i64,
}

/// Encodes `records` as one record batch.
pub fn encode(records: Vec<NewRecord>) -> Result<Bytes, String> {
    let mut buf = BytesMut::new();
    encode_into(&mut buf, records)?;
    Ok(buf.freeze())
}

/// Bytes of a v2 batch's header, and the most a record adds besides its key
/// and value (its varint fields): what `encode_into` reserves up front so
/// that the encoder never grows the buffer, and what callers count to
/// size their batches.
const BATCH_HEADER_BYTES: usize = 61;
pub const RECORD_FRAMING_BYTES_MAX: usize = 32;

/// Appends `records` to `buf` as one record batch.
pub fn encode_into(buf: &mut BytesMut, records: Vec<NewRecord>) -> Result<(), String> {
    let data: usize = records
        .iter()
        .map(|r| {
            r.key.as_ref().map_or(0, Bytes::len)
                + r.value.as_ref().map_or(0, Bytes::len)
                + RECORD_FRAMING_BYTES_MAX
        })
        .sum();
    buf.reserve(BATCH_HEADER_BYTES + data);
    let records: Vec<Record> = records
        .into_iter()
        .enumerate()
        .map(|(i, r)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch wherever offset - sequence
            // changes; this keeps every record in one batch whose base
            // sequence is -1 (no producer).
            sequence: i as i32 - 1,
            timestamp: r.timestamp_ms,
            key: r.key,
            value: r.value,
            headers: Default::default(),
        })
        .collect();
    RecordBatchEncoder::encode(
        buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

    #[test]
    fn one_batch_with_keys_values_and_times() {
        let records = (0..3)
            .map(|i| NewRecord {
                key: Some(Bytes::from(format!("k{i}"))),
                value: (i != 2).then(|| Bytes::from(format!("v{i}"))),
                timestamp_ms: 1000 + i,
            })
            .collect();
        let mut bytes = encode(records).expect("encodes");
        let decoded = RecordBatchDecoder::decode(&mut bytes).expect("decodes");
        assert_eq!(decoded.records.len(), 3);
        assert_eq!(decoded.records[1].timestamp, 1001);
        assert_eq!(decoded.records[2].value, None);
        assert!(bytes.is_empty(), "one batch");
    }
}
