//! The state of one partition log, with one owner: its offsets (log start,
//! written, synced, readable and next), its segments, the flusher's queue
//! and the writer. The fields are private to this module and its children;
//! the rest of `log/` reads them through the accessors here and changes them
//! through named transitions (`write.rs`: appends, writes, syncs;
//! `segments.rs`: sealing, retention, truncation, compaction swaps), each of
//! which ends by checking the invariants written on [`State`]
//! (`invariants.rs`).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use futures_channel::oneshot;

use crate::cache::{CacheBudget, TailCache};
use crate::config::LogConfig;
use crate::epochs::LeaderEpochs;
use crate::error::{Result, StorageError};
use crate::file::{Faults, SegmentFile};
use crate::index::SegmentIndex;
use crate::producer::ProducerTable;
use crate::segment::Segment;

use super::LogStats;

mod invariants;
mod segments;
mod write;

/// A batch assigned its offsets and queued for the flusher.
pub(crate) struct PendingWrite {
    pub segment_base: i64,
    pub base_offset: i64,
    pub next_offset: i64,
    pub max_timestamp: i64,
    pub data: Bytes,
}

/// The segment being written and its partial last block, kept in memory
/// and rewritten with the next write (O_DIRECT writes whole blocks).
struct Writer {
    segment_base: i64,
    file: Option<SegmentFile>,
    tail_pos: u64,
    tail: Vec<u8>,
    /// The writer's file holds allocated, written blocks (data or zeros)
    /// up to here, so a write below it overwrites instead of extending the
    /// file. 0 when unknown: whatever may have shrunk the file resets it.
    zeroed_end: u64,
}

/// An append waiting for the readable end to reach `.0`.
type Waiter = (i64, oneshot::Sender<Result<()>>);

/// What recovery found on disk: the state a log opens with.
pub(crate) struct Recovered {
    pub dir: PathBuf,
    pub config: LogConfig,
    pub faults: Option<Rc<Faults>>,
    pub segments: Vec<Segment>,
    pub log_start_offset: i64,
    pub recovery_point: i64,
    /// The active segment's partial last block: its position and bytes.
    pub tail_pos: u64,
    pub tail: Vec<u8>,
    pub producers: ProducerTable,
    pub producer_expiration_ms: i64,
    pub epochs: LeaderEpochs,
}

/// A compacted segment's new contents, swapped in by [`State::finish_swap`].
pub(crate) struct Replacement {
    pub size: u64,
    pub index: SegmentIndex,
    /// The cleaned segment still holds tombstones.
    pub tombstones: bool,
}

/// Everything one partition log knows about itself. Between transitions
/// (checked by `broken_invariant`):
/// - there is at least one segment; base offsets strictly increase; each
///   segment holds offsets from its base to its `next_offset`, at or below
///   the next segment's base (below it where a follower's log skips
///   offsets that the leader's cleaner removed);
/// - the last (active) segment ends at `next_offset` and is not sealed;
///   sealed segments come first; no segment has written more than its size;
/// - `readable_end <= written_end <= next_offset`, `synced_end <=
///   written_end`, `log_start_offset <= next_offset` and `recovery_point <=
///   next_offset`. The log start may pass the readable end for a moment:
///   retention may delete the sealed segment before a follower's skipped
///   offsets while the batch after them is still being written. The
///   readable end is not tied to the synced end under `fsync=always`: the
///   policy may change on a live log;
/// - pending writes are in offset order, segment by segment, start at or
///   past `written_end` and end at `next_offset`; an idle flusher has none;
/// - waiters are in the order of the offsets they wait for;
/// - the writer's segment is at or below the active one.
pub(crate) struct State {
    dir: PathBuf,
    config: LogConfig,
    faults: Option<Rc<Faults>>,
    segments: Vec<Segment>,
    log_start_offset: i64,
    /// Offset the next append gets (the log end offset once all is written).
    next_offset: i64,
    /// Offsets below this are on disk (written).
    written_end: i64,
    /// Offsets below this are covered by an fdatasync.
    synced_end: i64,
    /// Offsets below this are served to readers: the synced end under
    /// `fsync=always`, the written end otherwise.
    readable_end: i64,
    /// Segments wholly below this were sealed and synced: recovery trusts
    /// their indexes.
    recovery_point: i64,
    pending: VecDeque<PendingWrite>,
    waiters: VecDeque<Waiter>,
    drain_waiters: Vec<oneshot::Sender<()>>,
    flusher_running: bool,
    writer: Writer,
    /// One open handle to a sealed segment, for catch-up readers.
    sealed_reader: Option<(i64, SegmentFile)>,
    cache: TailCache,
    unsynced_bytes: u64,
    first_unsynced_at: Option<Instant>,
    sync_timer_armed: bool,
    /// Set when an fdatasync failed: what was written may not be on disk,
    /// so the log refuses appends until it is reopened (and recovered).
    failed: Option<StorageError>,
    /// The only leader epoch `append_as_leader` accepts, once set: the
    /// replica sets it when its role changes, so that an append that was
    /// waiting while leadership moved cannot land under a stale epoch.
    epoch_fence: Option<i32>,
    closed: bool,
    stats: LogStats,
    producers: ProducerTable,
    /// `producer.id.expiration.ms`.
    producer_expiration_ms: i64,
    /// Sealed segments below this offset were compacted by the last
    /// cleaning pass (Kafka's first dirty offset). Kept in memory only: after
    /// a restart the whole log counts as dirty and is cleaned once.
    cleaned_end: i64,
    /// Where each leader epoch stamped on the batches starts.
    epochs: LeaderEpochs,
}

/// Reading.
impl State {
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn config(&self) -> &LogConfig {
        &self.config
    }

    pub(crate) fn faults(&self) -> Option<Rc<Faults>> {
        self.faults.clone()
    }

    /// The segments, oldest first; the last is the active one.
    pub(crate) fn segments(&self) -> &[Segment] {
        &self.segments
    }

    pub(crate) fn active(&self) -> &Segment {
        // Invariant: a log always has at least one segment.
        &self.segments[self.segments.len() - 1]
    }

    /// Index of the segment that holds `offset` (the last one whose base is
    /// at or below it).
    pub(crate) fn segment_for(&self, offset: i64) -> usize {
        self.segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1)
    }

    pub(crate) fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    pub(crate) fn next_offset(&self) -> i64 {
        self.next_offset
    }

    pub(crate) fn written_end(&self) -> i64 {
        self.written_end
    }

    pub(crate) fn synced_end(&self) -> i64 {
        self.synced_end
    }

    pub(crate) fn readable_end(&self) -> i64 {
        self.readable_end
    }

    pub(crate) fn recovery_point(&self) -> i64 {
        self.recovery_point
    }

    pub(crate) fn writer_segment_base(&self) -> i64 {
        self.writer.segment_base
    }

    pub(crate) fn writer_file(&self) -> Option<&SegmentFile> {
        self.writer.file.as_ref()
    }

    /// How far the writer's file is known to hold written blocks.
    pub(crate) fn writer_zeroed_end(&self) -> u64 {
        self.writer.zeroed_end
    }

    /// Where the writer's partial last block starts, and its bytes.
    pub(crate) fn writer_tail(&self) -> (u64, &[u8]) {
        (self.writer.tail_pos, &self.writer.tail)
    }

    pub(crate) fn sealed_reader(&self) -> Option<(i64, &SegmentFile)> {
        self.sealed_reader.as_ref().map(|(b, f)| (*b, f))
    }

    pub(crate) fn cache(&self) -> &TailCache {
        &self.cache
    }

    pub(crate) fn unsynced_bytes(&self) -> u64 {
        self.unsynced_bytes
    }

    pub(crate) fn first_unsynced_at(&self) -> Option<Instant> {
        self.first_unsynced_at
    }

    /// No append waits for the flusher to write it.
    pub(crate) fn nothing_pending(&self) -> bool {
        self.pending.is_empty()
    }

    pub(crate) fn is_sync_timer_armed(&self) -> bool {
        self.sync_timer_armed
    }

    pub(crate) fn failed(&self) -> Option<&StorageError> {
        self.failed.as_ref()
    }

    pub(crate) fn epoch_fence(&self) -> Option<i32> {
        self.epoch_fence
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    pub(crate) fn stats(&self) -> LogStats {
        self.stats
    }

    pub(crate) fn producers(&self) -> &ProducerTable {
        &self.producers
    }

    pub(crate) fn cleaned_end(&self) -> i64 {
        self.cleaned_end
    }

    pub(crate) fn epochs(&self) -> &LeaderEpochs {
        &self.epochs
    }

    /// Memory held by the indexes, the cache and the writer's last block.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.cache.memory_bytes()
            + self.writer.tail.capacity()
            + self
                .segments
                .iter()
                .map(|s| s.index.memory_bytes() + std::mem::size_of::<Segment>())
                .sum::<usize>()
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed {
            return Err(StorageError::Closed);
        }
        Ok(())
    }

    pub(crate) fn out_of_range(&self, offset: i64) -> StorageError {
        StorageError::OffsetOutOfRange {
            offset,
            log_start_offset: self.log_start_offset,
            log_end_offset: self.readable_end,
        }
    }
}

/// Opening, settings and closing.
impl State {
    /// The state of a log recovery has just opened: everything found is
    /// written, synced and readable, and the writer is at the active segment.
    pub(crate) fn recovered(r: Recovered) -> State {
        let next_offset = r.segments.last().map_or(0, |s| s.next_offset);
        let writer_base = r.segments.last().map_or(0, |s| s.base_offset);
        let state = State {
            cache: TailCache::new(r.config.tail_cache_bytes),
            dir: r.dir,
            config: r.config,
            faults: r.faults,
            segments: r.segments,
            log_start_offset: r.log_start_offset,
            next_offset,
            written_end: next_offset,
            synced_end: next_offset,
            readable_end: next_offset,
            recovery_point: r.recovery_point,
            pending: VecDeque::new(),
            waiters: VecDeque::new(),
            drain_waiters: Vec::new(),
            flusher_running: false,
            writer: Writer {
                segment_base: writer_base,
                file: None,
                tail_pos: r.tail_pos,
                tail: r.tail,
                zeroed_end: 0,
            },
            sealed_reader: None,
            unsynced_bytes: 0,
            first_unsynced_at: None,
            sync_timer_armed: false,
            failed: None,
            epoch_fence: None,
            closed: false,
            stats: LogStats::default(),
            producers: r.producers,
            producer_expiration_ms: r.producer_expiration_ms,
            cleaned_end: i64::MIN,
            epochs: r.epochs,
        };
        state.assert_invariants();
        state
    }

    /// Applies a validated configuration to the open log.
    pub(crate) fn set_config(&mut self, config: LogConfig) {
        self.cache.set_bytes_max(config.tail_cache_bytes);
        self.config = config;
        self.debug_assert_invariants();
    }

    pub(crate) fn set_cache_budget(&mut self, budget: Rc<CacheBudget>) {
        self.cache.set_budget(budget);
        self.debug_assert_invariants();
    }

    pub(crate) fn set_epoch_fence(&mut self, epoch: Option<i32>) {
        self.epoch_fence = epoch;
        self.debug_assert_invariants();
    }

    pub(crate) fn set_producer_expiration_ms(&mut self, ms: i64) {
        self.producer_expiration_ms = ms;
        self.debug_assert_invariants();
    }

    /// Forgets idempotent producers past `producer.id.expiration.ms`.
    pub(crate) fn expire_producers(&mut self, now_ms: i64) {
        let ms = self.producer_expiration_ms;
        self.producers.expire(now_ms, ms);
        self.debug_assert_invariants();
    }

    /// A receiver that fires once the flusher has written everything
    /// queued (or failed it); `None` when it is idle already.
    pub(crate) fn wait_for_drain(&mut self) -> Option<oneshot::Receiver<()>> {
        if !self.flusher_running {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        self.drain_waiters.push(tx);
        Some(rx)
    }

    /// Marks the log closed and hands back its open files to close.
    pub(crate) fn on_close(&mut self) -> Vec<SegmentFile> {
        self.closed = true;
        let mut files: Vec<SegmentFile> = self.writer.file.take().into_iter().collect();
        files.extend(self.sealed_reader.take().map(|(_, f)| f));
        self.assert_invariants();
        files
    }
}

#[cfg(test)]
mod tests;
