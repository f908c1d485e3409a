//! The transitions of a log's state that change its segments or its start:
//! sealing, the recovery point, retention and DeleteRecords, truncation,
//! the compaction swap, and the open handle to a sealed segment.

use crate::file::SegmentFile;
use crate::producer::ProducerTable;
use crate::segment::Segment;

use super::{Replacement, State, Writer};

/// Sealing, retention, truncation and the metadata file.
impl State {
    /// Moves the recovery point (what the metadata file will say).
    pub(crate) fn set_recovery_point(&mut self, recovery_point: i64) {
        self.recovery_point = recovery_point;
        self.assert_invariants();
    }

    /// The segment based at `base` is complete, synced and indexed on disk.
    pub(crate) fn mark_sealed(&mut self, base: i64) {
        let i = self.segment_for(base);
        if self.segments[i].base_offset == base {
            self.segments[i].sealed = true;
        }
        self.assert_invariants();
    }

    /// Moves the log start offset forward to `offset` (DeleteRecords,
    /// retention). The segments wholly below it stay until
    /// `remove_segments_below_start`.
    pub(crate) fn advance_log_start(&mut self, offset: i64) {
        assert!(
            offset >= self.log_start_offset,
            "the log start moves forward only"
        );
        self.log_start_offset = offset;
        self.assert_invariants();
    }

    /// Detaches the sealed segments that lie wholly below the log start
    /// offset, for their files to be deleted.
    pub(crate) fn remove_segments_below_start(&mut self) -> Vec<Segment> {
        let start = self.log_start_offset;
        let mut gone = Vec::new();
        while self.segments.len() > 1
            && self.segments[0].sealed
            && self.segments[1].base_offset <= start
        {
            gone.push(self.segments.remove(0));
        }
        if let Some((b, _)) = &self.sealed_reader {
            if gone.iter().any(|s| s.base_offset == *b) {
                self.sealed_reader = None;
            }
        }
        self.cache.trim_front(start);
        self.assert_invariants();
        gone
    }

    /// Cuts the log at `cut_offset`, `cut_pos` bytes into the segment based
    /// at `base` (a batch boundary): later segments are detached (and
    /// returned, for their files to be deleted), the cut segment becomes the
    /// active one and the writer's, and every end moves back to the cut. The
    /// writer's last block is reloaded by `on_truncation_synced`. The
    /// flusher must be idle.
    pub(crate) fn truncate_to(&mut self, base: i64, cut_pos: u64, cut_offset: i64) -> Vec<Segment> {
        assert!(self.pending.is_empty(), "truncation with writes queued");
        let i = self.segment_for(base);
        assert_eq!(self.segments[i].base_offset, base, "no segment at {base}");
        let gone: Vec<Segment> = self.segments.drain(i + 1..).collect();
        self.sealed_reader = None;
        let seg = &mut self.segments[i];
        seg.size = cut_pos;
        seg.written_size = cut_pos;
        seg.next_offset = cut_offset;
        seg.sealed = false;
        let rel = seg.relative(cut_offset);
        seg.index.truncate_to_position(cut_pos as u32, rel);
        self.next_offset = cut_offset;
        self.written_end = cut_offset;
        self.synced_end = self.synced_end.min(cut_offset);
        self.readable_end = self.readable_end.min(cut_offset);
        self.recovery_point = self.recovery_point.min(base);
        self.cache.truncate(cut_offset);
        self.producers.truncate(cut_offset);
        self.epochs.truncate_to(cut_offset);
        self.writer.file = None;
        self.writer.segment_base = base;
        self.writer.zeroed_end = 0;
        self.assert_invariants();
        gone
    }

    /// The truncated segment's file was cut and synced: `tail` (from
    /// `tail_pos`) is its partial last block, and all that is written is
    /// synced.
    pub(crate) fn on_truncation_synced(&mut self, tail_pos: u64, tail: Vec<u8>) {
        self.writer.tail_pos = tail_pos;
        self.writer.tail = tail;
        self.synced_end = self.written_end;
        self.assert_invariants();
    }

    /// Drops every segment (returned, for their files to be deleted) and
    /// starts a fresh, empty one at `offset` (Kafka's
    /// truncateFullyAndStartAt). The flusher must be idle.
    pub(crate) fn truncate_fully_and_start_at(&mut self, offset: i64) -> Vec<Segment> {
        assert!(self.pending.is_empty(), "truncation with writes queued");
        let gone: Vec<Segment> = self.segments.drain(..).collect();
        self.segments.push(Segment::new(&self.dir, offset));
        self.sealed_reader = None;
        self.writer = Writer {
            segment_base: offset,
            file: None,
            tail_pos: 0,
            tail: Vec::new(),
            zeroed_end: 0,
        };
        self.log_start_offset = offset;
        self.next_offset = offset;
        self.written_end = offset;
        self.synced_end = offset;
        self.readable_end = offset;
        self.recovery_point = offset;
        self.cache.truncate(i64::MIN);
        self.producers = ProducerTable::default();
        self.epochs.clear();
        self.assert_invariants();
        gone
    }

    /// The largest timestamp of segment `i` and the base offset of its
    /// batch, found again after a truncation.
    pub(crate) fn restore_max_timestamp(&mut self, i: usize, best: (i64, i64)) {
        let seg = &mut self.segments[i];
        (seg.max_timestamp, seg.max_timestamp_batch) = best;
        seg.written_max_timestamp = best;
        self.assert_invariants();
    }
}

/// Reading files, and compaction.
impl State {
    /// Keeps `file` as the one open handle to a sealed segment.
    pub(crate) fn keep_sealed_reader(&mut self, base: i64, file: SegmentFile) {
        self.sealed_reader = Some((base, file));
        self.debug_assert_invariants();
    }

    /// Notes whether the last cleaning of the segment based at `base` kept
    /// tombstones.
    pub(crate) fn set_tombstones(&mut self, base: i64, kept: bool) {
        let i = self.segment_for(base);
        if self.segments[i].base_offset == base {
            self.segments[i].tombstones = kept;
        }
        self.debug_assert_invariants();
    }

    /// The cleaner starts renaming the files of the segment based at `base`,
    /// which it read under `generation`: readers that straddle the renames
    /// see the generation change and read again.
    pub(crate) fn begin_swap(&mut self, base: i64, generation: u64) {
        let i = self.segment_for(base);
        let s = &mut self.segments[i];
        assert_eq!(s.base_offset, base, "no segment at {base}");
        debug_assert_eq!(s.generation, generation);
        s.swapping = true;
        s.generation += 1;
        self.assert_invariants();
    }

    /// The renames of the segment based at `base` ended: with `replacement`
    /// when they all succeeded (the segment now has the cleaned file's size
    /// and index), without when they did not (the old file and index stay).
    pub(crate) fn finish_swap(&mut self, base: i64, replacement: Option<Replacement>) {
        let i = self.segment_for(base);
        let s = &mut self.segments[i];
        assert_eq!(s.base_offset, base, "no segment at {base}");
        s.swapping = false;
        s.generation += 1;
        if let Some(r) = replacement {
            s.index = r.index;
            s.size = r.size;
            s.written_size = r.size;
            s.tombstones = r.tombstones;
        }
        let next = s.next_offset;
        if self.sealed_reader.as_ref().is_some_and(|(b, _)| *b == base) {
            self.sealed_reader = None;
        }
        // The tail cache may still hold the segment's batches as appended.
        self.cache.trim_front(next);
        self.assert_invariants();
    }

    /// A cleaning pass finished with the segment based at `base`: everything
    /// up to its end counts as clean.
    pub(crate) fn mark_cleaned_through(&mut self, base: i64) {
        let i = self.segment_for(base);
        self.cleaned_end = self.segments[i].next_offset;
        self.debug_assert_invariants();
    }
}
