//! The write path's transitions of a log's state: appends (offsets, the
//! active segment's roll, the flusher's queue), then writes, syncs and
//! publication, and the rollback after a failed write.

use std::path::PathBuf;
use std::time::Instant;

use bytes::Bytes;
use futures_channel::oneshot;

use crate::batch::BatchHeader;
use crate::error::{Result, StorageError};
use crate::file::{align_down, SegmentFile};
use crate::segment::Segment;

use super::{PendingWrite, State};

/// Appending.
impl State {
    /// Places a batch whose offsets are final (`header.base_offset`) at the
    /// log end: rolls the active segment if it is full or old, indexes and
    /// caches the batch, and queues it for the flusher. A base past the log
    /// end (a follower's batch after offsets the leader's cleaner removed)
    /// starts a segment there. Returns the receiver that resolves once the
    /// batch is as durable as the policy promises, and whether the flusher
    /// must be started.
    pub(crate) fn on_append(
        &mut self,
        header: &BatchHeader,
        data: Bytes,
    ) -> (oneshot::Receiver<Result<()>>, bool) {
        // Offsets are dense below the log end: a batch below it would
        // overwrite offsets already given out.
        assert!(
            header.base_offset >= self.next_offset,
            "a batch at {} below the log end {}",
            header.base_offset,
            self.next_offset
        );
        if header.base_offset > self.next_offset {
            self.start_segment_at(header.base_offset);
        }
        self.maybe_roll(header.size as u64);
        let base_offset = header.base_offset;
        let next_offset = header.next_offset();
        self.epochs
            .observe(header.partition_leader_epoch, base_offset);
        let interval = self.config.index_interval_bytes;
        let last = self.segments.len() - 1;
        self.segments[last].on_batch(header, interval);
        self.producers.record(header);
        self.next_offset = next_offset;
        let segment_base = self.active().base_offset;
        self.cache.push(base_offset, next_offset, data.clone());
        self.pending.push_back(PendingWrite {
            segment_base,
            base_offset,
            next_offset,
            max_timestamp: header.max_timestamp,
            data,
        });
        let (tx, rx) = oneshot::channel();
        self.waiters.push_back((next_offset, tx));
        self.stats.appends += 1;
        let start_flusher = !self.flusher_running;
        self.flusher_running = true;
        self.debug_assert_invariants();
        (rx, start_flusher)
    }

    /// A receiver that resolves once the readable end reaches `end` (a
    /// retried batch is answered when its original is as durable as the
    /// policy promises).
    pub(crate) fn wait_for_readable(&mut self, end: i64) -> oneshot::Receiver<Result<()>> {
        let (tx, rx) = oneshot::channel();
        let at = self.waiters.partition_point(|(e, _)| *e <= end);
        self.waiters.insert(at, (end, tx));
        self.debug_assert_invariants();
        rx
    }

    /// Moves the log end to `base` (past it): the active segment, if it
    /// holds nothing, is replaced by one based there, else a new segment
    /// starts there. Recovery reads the offsets between as a gap, as it
    /// does after the cleaner. Part of `on_append`.
    fn start_segment_at(&mut self, base: i64) {
        let mut next = Segment::new(&self.dir, base);
        next.producer_snapshot = Some(self.producers.encode());
        let last = self.segments.len() - 1;
        if self.segments[last].is_empty() {
            self.segments[last] = next;
        } else {
            self.segments.push(next);
        }
        let empty = self.next_offset == self.log_start_offset && self.pending.is_empty();
        self.next_offset = base;
        // The tail cache holds a dense run ending at the log end.
        self.cache.truncate(i64::MIN);
        if empty {
            // Nothing below: the log starts at the batch (the leader's log
            // starts there), and every end moves with it.
            self.log_start_offset = base;
            self.written_end = base;
            self.synced_end = base;
            self.readable_end = base;
        }
    }

    /// Starts a new segment when the active one is full or old enough.
    /// Part of `on_append`.
    fn maybe_roll(&mut self, incoming: u64) {
        let config = &self.config;
        let active = self.active();
        if active.is_empty() {
            return;
        }
        let full = active.size + incoming > config.segment_bytes;
        let old = active
            .created
            .is_some_and(|c| c.elapsed() >= config.segment_age_max());
        if full || old {
            let mut next = Segment::new(&self.dir, self.next_offset);
            // The producer state as of the new segment's base offset, written
            // when the flusher reaches it, so recovery replays one segment.
            next.producer_snapshot = Some(self.producers.encode());
            self.segments.push(next);
        }
    }
}

/// Writing, syncing and publishing (the flusher's side).
impl State {
    /// An offline log writes nothing more: everything queued fails.
    pub(crate) fn fail_queued_if_offline(&mut self) {
        let Some(e) = self.failed.clone() else { return };
        let to = self.written_end;
        self.pending.clear();
        for (_, tx) in self.waiters.drain(..) {
            let _ = tx.send(Err(e.clone()));
        }
        self.cache.truncate(to);
        self.debug_assert_invariants();
    }

    /// The next run of pending writes that go to one segment, at most
    /// `bytes_max` unless one batch is larger. `None` when nothing is
    /// pending: then the flusher stops, and whoever waits for it to drain
    /// is woken.
    pub(crate) fn next_write_group(&mut self, bytes_max: usize) -> Option<Vec<PendingWrite>> {
        let Some(segment_base) = self.pending.front().map(|p| p.segment_base) else {
            self.flusher_running = false;
            for tx in self.drain_waiters.drain(..) {
                let _ = tx.send(());
            }
            self.debug_assert_invariants();
            return None;
        };
        let mut group = Vec::new();
        let mut bytes = 0;
        while let Some(p) = self.pending.front() {
            if p.segment_base != segment_base
                || (!group.is_empty() && bytes + p.data.len() > bytes_max)
            {
                break;
            }
            bytes += p.data.len();
            if let Some(p) = self.pending.pop_front() {
                group.push(p);
            }
        }
        self.debug_assert_invariants();
        Some(group)
    }

    /// The writer's file was opened for segment `base`: kept, unless the
    /// writer moved meanwhile or already has one.
    pub(crate) fn adopt_writer_file(&mut self, base: i64, file: SegmentFile) {
        if self.writer.segment_base == base && self.writer.file.is_none() {
            self.writer.file = Some(file);
            self.writer.zeroed_end = 0;
        }
        self.debug_assert_invariants();
    }

    /// Points the writer at the (new, empty) segment based at `next_base`,
    /// once the previous one is sealed.
    pub(crate) fn roll_writer_to(&mut self, next_base: i64) {
        self.writer.file = None;
        self.writer.segment_base = next_base;
        self.writer.tail_pos = 0;
        self.writer.tail.clear();
        self.writer.zeroed_end = 0;
        self.debug_assert_invariants();
    }

    /// The producer snapshot of the segment based at `base`, to write when
    /// the writer reaches it (its path and bytes), once.
    pub(crate) fn take_producer_snapshot(&mut self, base: i64) -> Option<(PathBuf, Vec<u8>)> {
        let i = self.segment_for(base);
        let seg = &mut self.segments[i];
        let snapshot = seg
            .producer_snapshot
            .take()
            .map(|b| (seg.snapshot_path(), b));
        self.debug_assert_invariants();
        snapshot
    }

    /// `group`, all in the segment based at `segment_base`, is on disk; the
    /// segment now holds `new_size` bytes, `tail` is its partial last block,
    /// and the file holds written blocks up to `zeroed_end` (past
    /// `new_size` when the write carried zeros ahead of the data).
    pub(crate) fn on_write_complete(
        &mut self,
        segment_base: i64,
        group: &[PendingWrite],
        new_size: u64,
        tail: Vec<u8>,
        zeroed_end: u64,
    ) {
        self.writer.zeroed_end = self.writer.zeroed_end.max(zeroed_end);
        self.writer.tail = tail;
        self.writer.tail_pos = align_down(new_size);
        let last = group
            .last()
            .map(|p| p.next_offset)
            .unwrap_or(self.written_end);
        let i = self.segment_for(segment_base);
        let seg = &mut self.segments[i];
        debug_assert_eq!(seg.base_offset, segment_base);
        seg.written_size = new_size;
        for p in group {
            if p.max_timestamp > seg.written_max_timestamp.0 {
                seg.written_max_timestamp = (p.max_timestamp, p.base_offset);
            }
        }
        let written: u64 = group.iter().map(|p| p.data.len() as u64).sum();
        self.written_end = last;
        if self.first_unsynced_at.is_none() {
            self.first_unsynced_at = Some(Instant::now());
        }
        self.unsynced_bytes += written;
        self.stats.writes += 1;
        self.stats.bytes_written += written;
        self.debug_assert_invariants();
    }

    /// An fdatasync that started when `target` was the written end
    /// succeeded. A truncation that ran meanwhile may have cut the log below
    /// `target`: what is synced never passes what is written.
    pub(crate) fn on_sync_complete(&mut self, target: i64) {
        self.stats.syncs += 1;
        let target = target.min(self.written_end);
        if target > self.synced_end {
            self.synced_end = target;
        }
        if self.synced_end == self.written_end {
            self.unsynced_bytes = 0;
            self.first_unsynced_at = None;
        }
        self.debug_assert_invariants();
    }

    /// An fdatasync failed: the log goes offline and every waiting append
    /// fails.
    pub(crate) fn on_sync_failed(&mut self, error: StorageError) {
        for (_, tx) in self.waiters.drain(..) {
            let _ = tx.send(Err(error.clone()));
        }
        self.failed = Some(error);
        self.debug_assert_invariants();
    }

    pub(crate) fn set_sync_timer_armed(&mut self, armed: bool) {
        self.sync_timer_armed = armed;
        self.debug_assert_invariants();
    }

    /// Advances what readers see (the synced end under `fsync=always`, the
    /// written end otherwise) and resolves the appends it covers.
    pub(crate) fn publish(&mut self) {
        let visible = if self.config.fsync.acks_after_sync() {
            self.synced_end
        } else {
            self.written_end
        };
        if visible > self.readable_end {
            self.readable_end = visible;
        }
        while self.waiters.front().is_some_and(|(end, _)| *end <= visible) {
            if let Some((_, tx)) = self.waiters.pop_front() {
                let _ = tx.send(Ok(()));
            }
        }
        self.debug_assert_invariants();
    }

    /// Undoes every append from `to` on, after a write there failed:
    /// offsets, segment sizes, indexes and cache return to what is on disk,
    /// and every waiting append fails with `error`. Returns the writer's
    /// file, if the active segment is the writer's, and the size to cut it
    /// back to.
    pub(crate) fn rollback_to(
        &mut self,
        to: i64,
        error: &StorageError,
    ) -> (Option<SegmentFile>, u64) {
        self.pending.clear();
        for (_, tx) in self.waiters.drain(..) {
            let _ = tx.send(Err(error.clone()));
        }
        debug_assert_eq!(self.written_end, to);
        let keep = self
            .segments
            .partition_point(|s| s.base_offset <= to)
            .max(1);
        self.segments.truncate(keep);
        let writer_base = self.writer.segment_base;
        let last = self.segments.len() - 1;
        let seg = &mut self.segments[last];
        if seg.base_offset != writer_base {
            // The failed group opened this segment; it holds nothing yet.
            seg.written_size = 0;
        }
        seg.size = seg.written_size;
        seg.next_offset = to;
        let (pos, rel) = (seg.size as u32, seg.relative(to));
        seg.index.truncate_to_position(pos, rel);
        (seg.max_timestamp, seg.max_timestamp_batch) = seg.written_max_timestamp;
        let size = seg.written_size;
        let same = seg.base_offset == writer_base;
        self.next_offset = to;
        self.cache.truncate(to);
        self.producers.truncate(to);
        // The caller cuts the file back to `size`.
        self.writer.zeroed_end = 0;
        self.assert_invariants();
        let file = same
            .then(|| self.writer.file.as_ref().map(SegmentFile::share))
            .flatten();
        (file, size)
    }
}
