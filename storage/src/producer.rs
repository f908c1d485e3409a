//! Idempotent-producer state of one partition: for each producer id its
//! epoch and the sequence ranges and offsets of its last five batches, as
//! Kafka keeps them. Appends are checked against it (duplicates answered
//! with their original offsets, gaps and stale epochs refused); it is
//! snapshotted when a segment rolls and rebuilt on open from the latest
//! snapshot plus the batches after it.

use std::collections::{BTreeMap, VecDeque};

use bytes::{Buf, BufMut, BytesMut};

use crate::batch::BatchHeader;

/// Batches remembered per producer for duplicate detection; Kafka clients
/// keep at most five requests in flight per connection for this reason.
pub const BATCHES_PER_PRODUCER: usize = 5;

const NO_SEQUENCE: i32 = -1;
const NO_EPOCH: i16 = -1;

/// One remembered batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

/// What the log knows of one producer id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub producer_id: i64,
    pub epoch: i16,
    pub batches: VecDeque<ProducerBatch>,
    /// Largest batch timestamp seen, for `producer.id.expiration.ms`.
    pub last_timestamp: i64,
}

impl ProducerEntry {
    pub fn last_seq(&self) -> i32 {
        self.batches
            .back()
            .map(|b| b.last_seq)
            .unwrap_or(NO_SEQUENCE)
    }
}

/// How an idempotent batch relates to what the log already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SequenceCheck {
    /// Not idempotent, or the next batch in sequence: append it.
    Append,
    /// A retry of a batch already in the log: answer with its offsets.
    Duplicate(ProducerBatch),
}

/// Why an idempotent batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("producer {producer_id} epoch {epoch} is older than the current epoch {current}")]
    InvalidProducerEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    #[error("producer {producer_id}: sequence {first_seq} does not follow {last_seq}")]
    OutOfOrderSequence {
        producer_id: i64,
        first_seq: i32,
        last_seq: i32,
    },
}

/// Kafka's sequence arithmetic: sequences wrap from i32::MAX to 0.
pub fn increment_sequence(seq: i32, by: i32) -> i32 {
    if seq > i32::MAX - by {
        by - (i32::MAX - seq) - 1
    } else {
        seq + by
    }
}

fn in_sequence(last_seq: i32, next_seq: i32) -> bool {
    next_seq == last_seq.wrapping_add(1) || (next_seq == 0 && last_seq == i32::MAX)
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerTable {
    producers: BTreeMap<i64, ProducerEntry>,
}

impl ProducerTable {
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    pub fn entries(&self) -> impl Iterator<Item = &ProducerEntry> {
        self.producers.values()
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Checks a batch about to be appended, by Kafka's rules.
    pub(crate) fn check(&self, h: &BatchHeader) -> Result<SequenceCheck, SequenceError> {
        if h.producer_id < 0 || h.base_sequence < 0 {
            return Ok(SequenceCheck::Append);
        }
        let last_seq = increment_sequence(h.base_sequence, h.last_offset_delta);
        let Some(entry) = self.producers.get(&h.producer_id) else {
            // Unknown producers (new, or expired, or removed by retention)
            // are accepted at any sequence, as Kafka does since KIP-360.
            return Ok(SequenceCheck::Append);
        };
        if h.producer_epoch < entry.epoch {
            return Err(SequenceError::InvalidProducerEpoch {
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
                current: entry.epoch,
            });
        }
        if h.producer_epoch == entry.epoch {
            if let Some(dup) = entry
                .batches
                .iter()
                .find(|b| b.first_seq == h.base_sequence && b.last_seq == last_seq)
            {
                return Ok(SequenceCheck::Duplicate(*dup));
            }
            let current = entry.last_seq();
            if current != NO_SEQUENCE && !in_sequence(current, h.base_sequence) {
                return Err(SequenceError::OutOfOrderSequence {
                    producer_id: h.producer_id,
                    first_seq: h.base_sequence,
                    last_seq: current,
                });
            }
        } else if h.base_sequence != 0 && entry.epoch != NO_EPOCH {
            // A new epoch starts its sequences at zero.
            return Err(SequenceError::OutOfOrderSequence {
                producer_id: h.producer_id,
                first_seq: h.base_sequence,
                last_seq: NO_SEQUENCE,
            });
        }
        Ok(SequenceCheck::Append)
    }

    /// Records an appended batch (its header carries its assigned offsets).
    pub(crate) fn record(&mut self, h: &BatchHeader) {
        if h.producer_id < 0 || h.base_sequence < 0 {
            return;
        }
        let entry = self
            .producers
            .entry(h.producer_id)
            .or_insert_with(|| ProducerEntry {
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
                batches: VecDeque::new(),
                last_timestamp: -1,
            });
        if h.producer_epoch != entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == BATCHES_PER_PRODUCER {
            entry.batches.pop_front();
        }
        entry.batches.push_back(ProducerBatch {
            first_seq: h.base_sequence,
            last_seq: increment_sequence(h.base_sequence, h.last_offset_delta),
            first_offset: h.base_offset,
            last_offset: h.last_offset(),
            max_timestamp: h.max_timestamp,
        });
        entry.last_timestamp = entry.last_timestamp.max(h.max_timestamp);
    }

    /// Forgets every batch at or after `offset` (rollback, truncation).
    pub(crate) fn truncate(&mut self, offset: i64) {
        for entry in self.producers.values_mut() {
            entry.batches.retain(|b| b.first_offset < offset);
        }
        self.producers.retain(|_, e| !e.batches.is_empty());
    }

    /// Drops producers silent for longer than `expiration_ms`.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, e| e.last_timestamp >= now_ms.saturating_sub(expiration_ms));
        before - self.producers.len()
    }

    /// Snapshot file contents: entries, then a CRC-32C of everything before.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_u32(self.producers.len() as u32);
        for e in self.producers.values() {
            b.put_i64(e.producer_id);
            b.put_i16(e.epoch);
            b.put_i64(e.last_timestamp);
            b.put_u8(e.batches.len() as u8);
            for x in &e.batches {
                b.put_i32(x.first_seq);
                b.put_i32(x.last_seq);
                b.put_i64(x.first_offset);
                b.put_i64(x.last_offset);
                b.put_i64(x.max_timestamp);
            }
        }
        let crc = crc32c::crc32c(&b);
        b.put_u32(crc);
        b.to_vec()
    }

    /// `None` when the snapshot is damaged (then the log is replayed).
    pub(crate) fn decode(bytes: &[u8]) -> Option<ProducerTable> {
        if bytes.len() < 8 {
            return None;
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body) != u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return None;
        }
        let mut b = body;
        let mut table = ProducerTable::default();
        let count = b.try_get_u32().ok()?;
        for _ in 0..count {
            let producer_id = b.try_get_i64().ok()?;
            let epoch = b.try_get_i16().ok()?;
            let last_timestamp = b.try_get_i64().ok()?;
            let n = b.try_get_u8().ok()? as usize;
            if n > BATCHES_PER_PRODUCER {
                return None;
            }
            let mut batches = VecDeque::with_capacity(n);
            for _ in 0..n {
                batches.push_back(ProducerBatch {
                    first_seq: b.try_get_i32().ok()?,
                    last_seq: b.try_get_i32().ok()?,
                    first_offset: b.try_get_i64().ok()?,
                    last_offset: b.try_get_i64().ok()?,
                    max_timestamp: b.try_get_i64().ok()?,
                });
            }
            table.producers.insert(
                producer_id,
                ProducerEntry {
                    producer_id,
                    epoch,
                    batches,
                    last_timestamp,
                },
            );
        }
        b.is_empty().then_some(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: i32, offset: i64) -> BatchHeader {
        BatchHeader {
            base_offset: offset,
            size: 100,
            partition_leader_epoch: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 1_000,
            max_timestamp: 1_000 + offset,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: count,
        }
    }

    fn appended(t: &mut ProducerTable, h: BatchHeader) {
        assert_eq!(t.check(&h), Ok(SequenceCheck::Append), "{h:?}");
        t.record(&h);
    }

    #[test]
    fn in_order_batches_append_and_retries_are_duplicates() {
        let mut t = ProducerTable::default();
        appended(&mut t, header(7, 0, 0, 3, 0));
        appended(&mut t, header(7, 0, 3, 2, 3));
        match t.check(&header(7, 0, 0, 3, 99)) {
            Ok(SequenceCheck::Duplicate(b)) => assert_eq!((b.first_offset, b.last_offset), (0, 2)),
            other => panic!("expected duplicate, got {other:?}"),
        }
        assert!(matches!(
            t.check(&header(7, 0, 6, 1, 99)),
            Err(SequenceError::OutOfOrderSequence { last_seq: 4, .. })
        ));
        assert!(matches!(
            t.check(&header(7, 0, 4, 1, 99)),
            Err(SequenceError::OutOfOrderSequence { .. })
        ));
        appended(&mut t, header(7, 0, 5, 1, 5));
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut t = ProducerTable::default();
        for i in 0..7 {
            appended(&mut t, header(1, 0, i, 1, i64::from(i)));
        }
        assert_eq!(t.get(1).expect("entry").batches.len(), BATCHES_PER_PRODUCER);
        assert!(matches!(
            t.check(&header(1, 0, 6, 1, 9)),
            Ok(SequenceCheck::Duplicate(_))
        ));
        // Sequence 0 fell out of the window: neither duplicate nor in order.
        assert!(t.check(&header(1, 0, 0, 1, 9)).is_err());
    }

    #[test]
    fn epochs_fence_old_producers_and_restart_sequences() {
        let mut t = ProducerTable::default();
        appended(&mut t, header(2, 3, 0, 1, 0));
        assert!(matches!(
            t.check(&header(2, 2, 1, 1, 1)),
            Err(SequenceError::InvalidProducerEpoch { current: 3, .. })
        ));
        assert!(matches!(
            t.check(&header(2, 4, 5, 1, 1)),
            Err(SequenceError::OutOfOrderSequence { .. })
        ));
        appended(&mut t, header(2, 4, 0, 1, 1));
        assert_eq!(t.get(2).expect("entry").epoch, 4);
    }

    #[test]
    fn sequences_wrap_around() {
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        let mut t = ProducerTable::default();
        appended(&mut t, header(3, 0, i32::MAX - 1, 2, 0));
        assert_eq!(t.get(3).expect("entry").last_seq(), i32::MAX);
        appended(&mut t, header(3, 0, 0, 2, 2));
        assert_eq!(t.get(3).expect("entry").last_seq(), 1);
    }

    #[test]
    fn unknown_producers_and_plain_batches_are_accepted() {
        let t = ProducerTable::default();
        assert_eq!(t.check(&header(9, 0, 42, 1, 0)), Ok(SequenceCheck::Append));
        assert_eq!(
            t.check(&header(-1, -1, -1, 1, 0)),
            Ok(SequenceCheck::Append)
        );
    }

    #[test]
    fn snapshots_round_trip_and_detect_damage() {
        let mut t = ProducerTable::default();
        for p in 0..20 {
            for i in 0..7 {
                t.record(&header(p, 1, i * 2, 2, p * 100 + i64::from(i) * 2));
            }
        }
        let bytes = t.encode();
        assert_eq!(ProducerTable::decode(&bytes), Some(t.clone()));
        let mut bad = bytes.clone();
        bad[10] ^= 1;
        assert_eq!(ProducerTable::decode(&bad), None);
        t.truncate(1_000);
        assert!(t
            .entries()
            .all(|e| e.batches.iter().all(|b| b.first_offset < 1_000)));
        let before = t.len();
        assert_eq!(t.expire(1_000_000, 10), before);
        assert!(t.is_empty());
    }
}
