//! Sparse offset and time indexes of one segment. Both live in memory while
//! the segment is open and are written beside it (`.index`, `.timeindex`,
//! Kafka's entry layout) when it is sealed; a missing or inconsistent file
//! is rebuilt from the log by the caller.

use bytes::{BufMut, BytesMut};

/// One offset index entry: a batch's offset relative to the segment base,
/// and its byte position in the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// One time index entry: the largest timestamp seen so far in the segment,
/// and the relative offset of the batch where it was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SegmentIndex {
    pub offsets: Vec<OffsetEntry>,
    pub times: Vec<TimeEntry>,
    bytes_since_entry: u32,
}

const OFFSET_ENTRY_BYTES: usize = 8;
const TIME_ENTRY_BYTES: usize = 12;

impl SegmentIndex {
    /// Records a batch appended at `position`; adds entries every
    /// `interval_bytes` as Kafka does.
    pub(crate) fn on_append(
        &mut self,
        relative_offset: u32,
        position: u32,
        size: u32,
        max_timestamp: i64,
        interval_bytes: u32,
    ) {
        if self.bytes_since_entry >= interval_bytes {
            debug_assert!(self
                .offsets
                .last()
                .is_none_or(|e| e.relative_offset < relative_offset && e.position < position));
            self.offsets.push(OffsetEntry {
                relative_offset,
                position,
            });
            if self
                .times
                .last()
                .is_none_or(|t| max_timestamp > t.timestamp)
            {
                self.times.push(TimeEntry {
                    timestamp: max_timestamp,
                    relative_offset,
                });
            }
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry = self.bytes_since_entry.saturating_add(size);
    }

    /// Position of the last indexed batch at or before `relative_offset`.
    pub(crate) fn position_floor(&self, relative_offset: u32) -> u32 {
        let i = self
            .offsets
            .partition_point(|e| e.relative_offset <= relative_offset);
        if i == 0 {
            0
        } else {
            self.offsets[i - 1].position
        }
    }

    /// Relative offset from which a scan for the first timestamp ≥ `ts`
    /// may start: every record before it has a smaller timestamp.
    pub(crate) fn scan_start_for_timestamp(&self, ts: i64) -> u32 {
        let i = self.times.partition_point(|e| e.timestamp < ts);
        if i == 0 {
            0
        } else {
            self.times[i - 1].relative_offset
        }
    }

    /// Drops every entry at or after `position` (the log was truncated).
    pub(crate) fn truncate_to_position(&mut self, position: u32, relative_offset: u32) {
        self.offsets.retain(|e| e.position < position);
        self.times.retain(|e| e.relative_offset < relative_offset);
        self.bytes_since_entry = u32::MAX;
    }

    pub(crate) fn encode_offsets(&self) -> Vec<u8> {
        let mut b = BytesMut::with_capacity(self.offsets.len() * OFFSET_ENTRY_BYTES);
        for e in &self.offsets {
            b.put_u32(e.relative_offset);
            b.put_u32(e.position);
        }
        b.to_vec()
    }

    pub(crate) fn encode_times(&self) -> Vec<u8> {
        let mut b = BytesMut::with_capacity(self.times.len() * TIME_ENTRY_BYTES);
        for e in &self.times {
            b.put_i64(e.timestamp);
            b.put_u32(e.relative_offset);
        }
        b.to_vec()
    }

    /// Decodes both files and checks them against the segment: entry sizes,
    /// strictly increasing entries, positions inside the segment. `None`
    /// means "rebuild from the log".
    pub(crate) fn decode(offsets: &[u8], times: &[u8], segment_size: u64) -> Option<SegmentIndex> {
        if !offsets.len().is_multiple_of(OFFSET_ENTRY_BYTES)
            || !times.len().is_multiple_of(TIME_ENTRY_BYTES)
        {
            return None;
        }
        let mut index = SegmentIndex {
            bytes_since_entry: u32::MAX,
            ..SegmentIndex::default()
        };
        for c in offsets.chunks_exact(OFFSET_ENTRY_BYTES) {
            let e = OffsetEntry {
                relative_offset: u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                position: u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
            };
            let ordered = index
                .offsets
                .last()
                .is_none_or(|p| p.relative_offset < e.relative_offset && p.position < e.position);
            if !ordered || u64::from(e.position) >= segment_size {
                return None;
            }
            index.offsets.push(e);
        }
        for c in times.chunks_exact(TIME_ENTRY_BYTES) {
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&c[..8]);
            let e = TimeEntry {
                timestamp: i64::from_be_bytes(ts),
                relative_offset: u32::from_be_bytes([c[8], c[9], c[10], c[11]]),
            };
            let ordered = index
                .times
                .last()
                .is_none_or(|p| p.timestamp < e.timestamp && p.relative_offset < e.relative_offset);
            if !ordered {
                return None;
            }
            index.times.push(e);
        }
        Some(index)
    }

    /// Continues indexing after a loaded index whose last entry points at a
    /// batch of `size` bytes that is about to be rescanned.
    pub(crate) fn resume_after(&mut self, size: u32) {
        self.bytes_since_entry = size;
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        self.offsets.capacity() * OFFSET_ENTRY_BYTES + self.times.capacity() * 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built(n: u32) -> SegmentIndex {
        let mut idx = SegmentIndex::default();
        for i in 0..n {
            idx.on_append(i * 10, i * 100, 100, i64::from(i) * 5, 250);
        }
        idx
    }

    #[test]
    fn entries_are_sparse_and_lookups_floor() {
        let idx = built(20);
        assert!(idx.offsets.len() < 20 && !idx.offsets.is_empty());
        for e in &idx.offsets {
            assert_eq!(idx.position_floor(e.relative_offset), e.position);
            assert_eq!(idx.position_floor(e.relative_offset + 1), e.position);
        }
        assert_eq!(idx.position_floor(0), 0);
    }

    #[test]
    fn round_trips_and_rejects_damage() {
        let idx = built(50);
        let (o, t) = (idx.encode_offsets(), idx.encode_times());
        let back = SegmentIndex::decode(&o, &t, 5_000).expect("decodes");
        assert_eq!(back.offsets, idx.offsets);
        assert_eq!(back.times, idx.times);
        assert!(SegmentIndex::decode(&o[..o.len() - 1], &t, 5_000).is_none());
        assert!(SegmentIndex::decode(&o, &t, 100).is_none());
        let mut swapped = o.clone();
        swapped[..8].copy_from_slice(&o[8..16]);
        assert!(SegmentIndex::decode(&swapped, &t, 5_000).is_none());
    }

    #[test]
    fn timestamp_scan_start_never_skips_a_match() {
        let idx = built(50);
        for ts in 0..260 {
            let start = idx.scan_start_for_timestamp(ts);
            // Every batch before `start` has timestamps below `ts`.
            assert!(start == 0 || i64::from(start / 10) * 5 < ts);
        }
    }
}
