//! `PartitionLog`: the log of one partition replica, owned by one shard.
//! Appends assign offsets synchronously and hand the bytes to the flusher
//! (`flush.rs`); reads come from the tail cache or the segment files;
//! lookups by offset and timestamp use the sparse indexes.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_channel::oneshot;
use glommio::sync::RwLock;

use crate::batch::{self, BatchError};
use crate::cache::TailCache;
use crate::config::{FsyncPolicy, LogConfig};
use crate::error::{Result, StorageError};
use crate::file::{Faults, SegmentFile};
use crate::flush;
use crate::producer::{ProducerEntry, ProducerTable, SequenceCheck};
use crate::segment::{self, Segment};

/// What an append was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// Wall-clock time of the append, in ms since the epoch.
    pub append_time_ms: i64,
    pub log_start_offset: i64,
    /// The batch was a retry of one already in the log (same producer,
    /// epoch and sequences): nothing was appended, the offsets are the
    /// original ones.
    pub duplicate: bool,
}

/// Whole batches read from a log. Each `Bytes` holds one or more complete
/// batches; sending them in order reproduces what was appended.
#[derive(Debug, Clone, Default)]
pub struct ReadBatches {
    pub chunks: Vec<Bytes>,
    /// The readable end of the log when the read was served.
    pub log_end_offset: i64,
    pub log_start_offset: i64,
}

impl ReadBatches {
    pub fn bytes_len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }
}

/// A point of the log found by timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    pub timestamp: i64,
    pub offset: i64,
}

pub(crate) struct PendingWrite {
    pub segment_base: i64,
    pub base_offset: i64,
    pub next_offset: i64,
    pub max_timestamp: i64,
    pub data: Bytes,
}

/// The segment being written and its partial last block, kept in memory
/// and rewritten with the next write (O_DIRECT writes whole blocks).
pub(crate) struct Writer {
    pub segment_base: i64,
    pub file: Option<SegmentFile>,
    pub tail_pos: u64,
    pub tail: Vec<u8>,
}

pub(crate) struct State {
    pub dir: PathBuf,
    pub config: LogConfig,
    pub faults: Option<Rc<Faults>>,
    pub segments: Vec<Segment>,
    pub log_start_offset: i64,
    /// Offset the next append gets (the log end offset once all is written).
    pub next_offset: i64,
    /// Offsets below this are on disk (written).
    pub written_end: i64,
    /// Offsets below this are covered by an fdatasync.
    pub synced_end: i64,
    /// Offsets below this are served to readers: the synced end under
    /// `fsync=always`, the written end otherwise.
    pub readable_end: i64,
    pub recovery_point: i64,
    pub pending: VecDeque<PendingWrite>,
    pub waiters: VecDeque<(i64, oneshot::Sender<Result<()>>)>,
    pub drain_waiters: Vec<oneshot::Sender<()>>,
    pub flusher_running: bool,
    pub writer: Writer,
    /// One open handle to a sealed segment, for catch-up readers.
    pub sealed_reader: Option<(i64, SegmentFile)>,
    pub cache: TailCache,
    pub unsynced_bytes: u64,
    pub first_unsynced_at: Option<Instant>,
    pub sync_timer_armed: bool,
    /// Set when an fdatasync failed: what was written may not be on disk,
    /// so the log refuses appends until it is reopened (and recovered).
    pub failed: Option<StorageError>,
    pub closed: bool,
    pub stats: LogStats,
    pub producers: ProducerTable,
    /// `producer.id.expiration.ms`.
    pub producer_expiration_ms: i64,
    /// Sealed segments below this offset were compacted by the last
    /// cleaning pass (Kafka's first dirty offset). Kept in memory only: after
    /// a restart the whole log counts as dirty and is cleaned once.
    pub cleaned_end: i64,
}

/// Counters of the work a log did, for metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    pub appends: u64,
    pub writes: u64,
    pub syncs: u64,
    pub bytes_written: u64,
}

pub(crate) struct Inner {
    pub state: RefCell<State>,
    /// Appends hold it shared while assigning offsets; truncation,
    /// deletion and close hold it exclusively.
    pub gate: RwLock<()>,
    /// Held exclusively by whatever replaces or removes sealed segments
    /// (cleaning, retention, DeleteRecords, truncation, close), so that a
    /// cleaning pass never races them. Appends and reads never take it.
    pub segments_lock: RwLock<()>,
    /// Set by `close`: a cleaning pass stops after the segment it is on,
    /// so that closing waits for one segment, not a whole pass.
    pub closing: std::cell::Cell<bool>,
}

/// Bytes of record-less batches a read gathers, looking for a record, even
/// when its `max_bytes` is smaller.
const READ_ON_BYTES_MIN: usize = 64 << 10;

/// How often a read retries when a cleaner swap happened under it.
const READ_SWAP_RETRIES_MAX: u32 = 100;

/// The log of one partition replica. Cheap to clone (shared handle); not
/// `Send`: it lives on the shard that owns the partition.
#[derive(Clone)]
pub struct PartitionLog {
    pub(crate) inner: Rc<Inner>,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl State {
    pub(crate) fn active(&self) -> &Segment {
        // Invariant: a log always has at least one segment.
        &self.segments[self.segments.len() - 1]
    }

    pub(crate) fn active_mut(&mut self) -> &mut Segment {
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }

    /// Index of the segment that holds `offset` (the last one whose base is
    /// at or below it).
    pub(crate) fn segment_for(&self, offset: i64) -> usize {
        self.segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1)
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

    fn assert_invariants(&self) {
        debug_assert!(self.log_start_offset <= self.readable_end);
        debug_assert!(self.readable_end <= self.written_end);
        debug_assert!(self.written_end <= self.next_offset);
        debug_assert!(self.synced_end <= self.written_end);
        debug_assert_eq!(self.active().next_offset, self.next_offset);
    }
}

impl PartitionLog {
    /// Opens the log in `dir` (creating it), recovering whatever a crash
    /// left: see `recovery.rs`.
    pub async fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<PartitionLog> {
        Self::open_with_faults(dir, config, None).await
    }

    /// As `open`, with fault injection for tests.
    pub async fn open_with_faults(
        dir: impl AsRef<Path>,
        config: LogConfig,
        faults: Option<Rc<Faults>>,
    ) -> Result<PartitionLog> {
        config
            .validate()
            .map_err(|e| StorageError::InvalidArgument(e.to_string()))?;
        let state = crate::recovery::recover(dir.as_ref(), config, faults).await?;
        Ok(PartitionLog {
            inner: Rc::new(Inner {
                state: RefCell::new(state),
                gate: RwLock::new(()),
                segments_lock: RwLock::new(()),
                closing: std::cell::Cell::new(false),
            }),
        })
    }

    /// Appends one v2 record batch. Resolves when the batch is as durable
    /// as the log's fsync policy promises; an error leaves the log as it was.
    pub async fn append(&self, batch_bytes: &[u8]) -> Result<AppendInfo> {
        let header = batch::validate(batch_bytes)?;
        let _gate = self
            .inner
            .gate
            .read()
            .await
            .map_err(|_| StorageError::Closed)?;
        let (info, done, start_flusher) = {
            let mut st = self.inner.state.borrow_mut();
            st.check_open()?;
            if let Some(e) = &st.failed {
                return Err(e.clone());
            }
            if st.config.cleanup_policy.compacts() && !header.is_control() {
                crate::records::check_keys(batch_bytes, &header)?;
            }
            let limit = st.config.max_batch_bytes as usize;
            if header.size > limit {
                return Err(BatchError::TooLarge {
                    len: header.size,
                    limit,
                }
                .into());
            }
            if let SequenceCheck::Duplicate(original) = st.producers.check(&header)? {
                let info = AppendInfo {
                    base_offset: original.first_offset,
                    last_offset: original.last_offset,
                    append_time_ms: -1,
                    log_start_offset: st.log_start_offset,
                    duplicate: true,
                };
                // Answer the retry once the original is as durable as
                // the policy promises, like the original's own answer.
                let end = original.last_offset + 1;
                if st.readable_end >= end {
                    return Ok(info);
                }
                let (tx, rx) = oneshot::channel();
                let at = st.waiters.partition_point(|(e, _)| *e <= end);
                st.waiters.insert(at, (end, tx));
                (info, rx, false)
            } else {
                self.maybe_roll(&mut st, header.size as u64);
                let base_offset = st.next_offset;
                let data = batch::stamped(batch_bytes, base_offset);
                let stamped = batch::BatchHeader {
                    base_offset,
                    ..header
                };
                let interval = st.config.index_interval_bytes;
                st.active_mut().on_batch(&stamped, interval);
                st.producers.record(&stamped);
                st.next_offset = stamped.next_offset();
                let segment_base = st.active().base_offset;
                st.cache
                    .push(base_offset, stamped.next_offset(), data.clone());
                st.pending.push_back(PendingWrite {
                    segment_base,
                    base_offset,
                    next_offset: stamped.next_offset(),
                    max_timestamp: header.max_timestamp,
                    data,
                });
                let (tx, rx) = oneshot::channel();
                st.waiters.push_back((stamped.next_offset(), tx));
                st.stats.appends += 1;
                let start_flusher = !st.flusher_running;
                st.flusher_running = true;
                st.assert_invariants();
                let info = AppendInfo {
                    base_offset,
                    last_offset: stamped.last_offset(),
                    append_time_ms: now_ms(),
                    log_start_offset: st.log_start_offset,
                    duplicate: false,
                };
                (info, rx, start_flusher)
            }
        };
        drop(_gate);
        if start_flusher {
            glommio::spawn_local(flush::run(self.inner.clone())).detach();
        }
        match done.await {
            Ok(Ok(())) => Ok(info),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StorageError::Closed),
        }
    }

    /// Starts a new segment when the active one is full or old enough.
    fn maybe_roll(&self, st: &mut State, incoming: u64) {
        let config = &st.config;
        let active = st.active();
        if active.is_empty() {
            return;
        }
        let full = active.size + incoming > config.segment_bytes;
        let old = active
            .created
            .is_some_and(|c| c.elapsed() >= config.segment_age_max());
        if full || old {
            let mut next = Segment::new(&st.dir, st.next_offset);
            // The producer state as of the new segment's base offset, written
            // when the flusher reaches it, so recovery replays one segment.
            next.producer_snapshot = Some(st.producers.encode());
            st.segments.push(next);
        }
    }

    /// Reads whole batches starting with the one that holds `offset` (or,
    /// when compaction removed it, the first batch after it), up to
    /// `max_bytes` (at least one batch when any is readable).
    pub async fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadBatches> {
        let mut retries = 0;
        // Where the next read starts: moves past what was read when that
        // brought no record at or after `offset` (see below).
        let mut from = offset;
        // Batches read so far that brought no such record, served first.
        let mut before: Vec<Bytes> = Vec::new();
        loop {
            let (seg_index, position, limit, end, start, version) = {
                let st = self.inner.state.borrow();
                st.check_open()?;
                if offset < st.log_start_offset || offset > st.readable_end {
                    return Err(st.out_of_range(offset));
                }
                let mut out = ReadBatches {
                    chunks: Vec::new(),
                    log_end_offset: st.readable_end,
                    log_start_offset: st.log_start_offset,
                };
                if offset == st.readable_end {
                    return Ok(out);
                }
                if let Some(chunks) = st.cache.read(from, st.readable_end, max_bytes) {
                    out.chunks = std::mem::take(&mut before);
                    out.chunks.extend(chunks);
                    return Ok(out);
                }
                let i = st.segment_for(from);
                let seg = &st.segments[i];
                let position = seg.index.position_floor(seg.relative(from));
                (
                    i,
                    u64::from(position),
                    seg.written_size,
                    st.readable_end,
                    st.log_start_offset,
                    seg_version(seg),
                )
            };
            let file = self.file_for(seg_index).await?;
            let got = read_batches(&file, position, limit, from, end, max_bytes).await;
            let (now, next_base) = {
                let st = self.inner.state.borrow();
                let now = st.segments.get(seg_index).and_then(seg_version);
                let next = st
                    .segments
                    .get(seg_index + 1)
                    .map(|s| s.base_offset)
                    .filter(|b| *b < end);
                (now, next)
            };
            if version.is_none() || now != version {
                // A cleaner swap ran under this read: its position may
                // belong to the other file. Read again once it is done.
                retries += 1;
                if retries > READ_SWAP_RETRIES_MAX {
                    return Err(StorageError::Io {
                        op: "read",
                        path: file.path().to_path_buf(),
                        message: "the segment was replaced under every attempt".into(),
                        errno: None,
                    });
                }
                glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
                continue;
            }
            let chunks = got?;
            // The rest of a segment the cleaner filtered may hold no record
            // at or after `offset` (emptied batches kept for producers,
            // records before it): read on into the next segment, so that a
            // fetch brings records. Clients take a response without one for
            // a size limit (librdkafka doubles its fetch size each time,
            // then fails with MSG_SIZE_TOO_LARGE).
            if !brings_records(&chunks, offset) {
                let after = last_next_offset(&chunks).or(next_base);
                let before_bytes: usize = before.iter().map(Bytes::len).sum();
                let room = before_bytes < max_bytes.max(READ_ON_BYTES_MIN);
                if let Some(after) = after.filter(|a| *a > from && *a < end && room) {
                    before.extend(chunks);
                    from = after;
                    continue;
                }
            }
            before.extend(chunks);
            return Ok(ReadBatches {
                chunks: before,
                log_end_offset: end,
                log_start_offset: start,
            });
        }
    }

    /// A handle to the file of segment `i`, opening it if needed. The
    /// writer's handle is shared; one sealed handle is kept per log.
    pub(crate) async fn file_for(&self, i: usize) -> Result<SegmentFile> {
        let (base, path, faults, version) = {
            let st = self.inner.state.borrow();
            let seg = &st.segments[i];
            if st.writer.segment_base == seg.base_offset {
                if let Some(f) = &st.writer.file {
                    return Ok(f.share());
                }
            }
            if let Some((b, f)) = &st.sealed_reader {
                if *b == seg.base_offset {
                    return Ok(f.share());
                }
            }
            (
                seg.base_offset,
                seg.path.clone(),
                st.faults.clone(),
                seg_version(seg),
            )
        };
        let file = SegmentFile::open(&path, faults).await?;
        let mut st = self.inner.state.borrow_mut();
        if st.writer.segment_base == base {
            if st.writer.file.is_none() {
                st.writer.file = Some(file.share());
            }
        } else {
            // Kept only if no cleaner swap ran while it opened: the handle
            // could be the replaced file.
            let i = st.segment_for(base);
            let same = st.segments.get(i).and_then(seg_version) == version && version.is_some();
            if same {
                st.sealed_reader = Some((base, file.share()));
            }
        }
        Ok(file)
    }

    /// Idempotent producers this log knows (for DescribeProducers).
    pub fn producers(&self) -> Vec<ProducerEntry> {
        self.inner
            .state
            .borrow()
            .producers
            .entries()
            .cloned()
            .collect()
    }

    /// `producer.id.expiration.ms` for this log.
    pub fn set_producer_id_expiration_ms(&self, ms: i64) {
        self.inner.state.borrow_mut().producer_expiration_ms = ms;
    }

    pub fn stats(&self) -> LogStats {
        self.inner.state.borrow().stats
    }

    pub fn log_start_offset(&self) -> i64 {
        self.inner.state.borrow().log_start_offset
    }

    /// The end of what readers see: the offset the next visible batch gets.
    pub fn log_end_offset(&self) -> i64 {
        self.inner.state.borrow().readable_end
    }

    /// The offset the next append gets: past everything appended, readable
    /// or still on its way to disk.
    pub fn next_offset(&self) -> i64 {
        self.inner.state.borrow().next_offset
    }

    /// True once an fdatasync failed: appends are refused until the log is
    /// reopened.
    pub fn is_offline(&self) -> bool {
        self.inner.state.borrow().failed.is_some()
    }

    /// Offsets below this are covered by an fdatasync.
    pub fn synced_end_offset(&self) -> i64 {
        self.inner.state.borrow().synced_end
    }

    pub fn size_bytes(&self) -> u64 {
        self.inner
            .state
            .borrow()
            .segments
            .iter()
            .map(|s| s.size)
            .sum()
    }

    /// Base offsets of the segments, oldest first (the last is active).
    pub fn segment_bases(&self) -> Vec<i64> {
        let st = self.inner.state.borrow();
        st.segments.iter().map(|s| s.base_offset).collect()
    }

    pub fn segment_count(&self) -> usize {
        self.inner.state.borrow().segments.len()
    }

    pub fn config(&self) -> LogConfig {
        self.inner.state.borrow().config.clone()
    }

    pub fn dir(&self) -> PathBuf {
        self.inner.state.borrow().dir.clone()
    }

    /// Applies a new configuration to the open log (topic configs are
    /// altered live).
    pub fn set_config(&self, config: LogConfig) -> Result<()> {
        config
            .validate()
            .map_err(|e| StorageError::InvalidArgument(e.to_string()))?;
        let mut st = self.inner.state.borrow_mut();
        st.cache.set_bytes_max(config.tail_cache_bytes);
        st.config = config;
        Ok(())
    }

    /// Makes this log's tail cache share `budget` with the shard's other
    /// logs, so that all of them together stay within it.
    pub fn set_cache_budget(&self, budget: Rc<crate::cache::CacheBudget>) {
        self.inner.state.borrow_mut().cache.set_budget(budget);
    }

    /// Memory held by this log's indexes and cache, for footprint budgets.
    pub fn memory_bytes(&self) -> usize {
        let st = self.inner.state.borrow();
        st.cache.memory_bytes()
            + st.writer.tail.capacity()
            + st.segments
                .iter()
                .map(|s| s.index.memory_bytes() + std::mem::size_of::<Segment>())
                .sum::<usize>()
    }

    /// The largest timestamp in the log and the offset of the record that
    /// carries it (Kafka's MAX_TIMESTAMP lookup). `None` for an empty log.
    pub async fn max_timestamp(&self) -> Result<Option<TimestampOffset>> {
        let found = {
            let st = self.inner.state.borrow();
            st.check_open()?;
            st.segments
                .iter()
                .enumerate()
                .filter(|(_, s)| s.base_offset < st.readable_end && s.max_timestamp >= 0)
                .max_by_key(|(_, s)| s.max_timestamp)
                .map(|(i, s)| (i, s.max_timestamp, s.max_timestamp_batch))
        };
        let Some((i, ts, batch_base)) = found else {
            return Ok(None);
        };
        let hit = self.find_in_segment(i, batch_base, ts, true).await?;
        Ok(hit.or(Some(TimestampOffset {
            timestamp: ts,
            offset: batch_base,
        })))
    }

    /// The first offset whose record timestamp is at or after `timestamp`
    /// (ListOffsets by time); `None` when every record is older.
    pub async fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<TimestampOffset>> {
        let candidates: Vec<(usize, i64)> = {
            let st = self.inner.state.borrow();
            st.check_open()?;
            st.segments
                .iter()
                .enumerate()
                .filter(|(_, s)| s.base_offset < st.readable_end && s.max_timestamp >= timestamp)
                .map(|(i, s)| {
                    let rel = s.index.scan_start_for_timestamp(timestamp);
                    (i, s.base_offset + i64::from(rel))
                })
                .collect()
        };
        for (i, from) in candidates {
            if let Some(hit) = self.find_in_segment(i, from, timestamp, false).await? {
                let start = self.log_start_offset();
                return Ok(Some(TimestampOffset {
                    timestamp: hit.timestamp,
                    offset: hit.offset.max(start),
                }));
            }
        }
        Ok(None)
    }

    /// Scans segment `i` from the batch holding `from` for the first record
    /// with timestamp ≥ `ts` (or == `ts` when `exact`). Compressed batches
    /// answer at batch granularity, since the log never decompresses.
    async fn find_in_segment(
        &self,
        i: usize,
        from: i64,
        ts: i64,
        exact: bool,
    ) -> Result<Option<TimestampOffset>> {
        let mut retries = 0;
        loop {
            let (hit, stale) = self.find_in_segment_once(i, from, ts, exact).await?;
            if !stale || retries >= READ_SWAP_RETRIES_MAX {
                return Ok(hit);
            }
            retries += 1;
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// One attempt of `find_in_segment`; also says whether a cleaner swap
    /// ran under it (then the answer may come from the wrong file).
    async fn find_in_segment_once(
        &self,
        i: usize,
        from: i64,
        ts: i64,
        exact: bool,
    ) -> Result<(Option<TimestampOffset>, bool)> {
        let (position, end, base, end_offset, version) = {
            let st = self.inner.state.borrow();
            let seg = &st.segments[i];
            let pos = seg
                .index
                .position_floor(seg.relative(from.max(seg.base_offset)));
            (
                u64::from(pos),
                seg.written_size,
                seg.base_offset,
                st.readable_end,
                seg_version(seg),
            )
        };
        let file = self.file_for(i).await?;
        let expected = if position == 0 { Some(base) } else { None };
        let mut hit = None;
        let matches = |t: i64| if exact { t == ts } else { t >= ts };
        let scan_end = segment::scan(&file, position, end, expected, true, |h, _, bytes| {
            if h.base_offset >= end_offset {
                return false;
            }
            if !matches(h.max_timestamp) {
                return true;
            }
            let records = batch::record_positions(bytes).unwrap_or_default();
            hit = records
                .iter()
                .find(|r| matches(r.timestamp))
                .map(|r| TimestampOffset {
                    timestamp: r.timestamp,
                    offset: r.offset,
                })
                .or(Some(TimestampOffset {
                    timestamp: h.max_timestamp,
                    offset: h.base_offset,
                }));
            false
        })
        .await;
        let stale = version.is_none()
            || self
                .inner
                .state
                .borrow()
                .segments
                .get(i)
                .and_then(seg_version)
                != version;
        if stale {
            return Ok((None, true));
        }
        let scan_end = scan_end?;
        if hit.is_none() {
            if let Some(why) = scan_end.damage {
                if scan_end.position < end {
                    return Err(StorageError::Corrupt {
                        path: file_path(&self.inner.state.borrow().segments[i]),
                        position: scan_end.position,
                        reason: why,
                    });
                }
            }
        }
        Ok((hit, false))
    }

    /// Makes everything written so far durable, whatever the policy.
    pub async fn sync(&self) -> Result<()> {
        flush::sync_now(&self.inner).await
    }

    /// Waits until every append made so far has been written (or failed).
    pub(crate) async fn drain(&self) {
        let rx = {
            let mut st = self.inner.state.borrow_mut();
            if !st.flusher_running {
                return;
            }
            let (tx, rx) = oneshot::channel();
            st.drain_waiters.push(tx);
            rx
        };
        let _ = rx.await;
    }

    /// Flushes, syncs, writes the active segment's indexes and the recovery
    /// point, and closes every file. Later calls fail with `Closed`.
    pub async fn close(&self) -> Result<()> {
        let _gate = self
            .inner
            .gate
            .write()
            .await
            .map_err(|_| StorageError::Closed)?;
        // A cleaning pass in progress finishes the segment it is on first.
        self.inner.closing.set(true);
        let _segments = self
            .inner
            .segments_lock
            .write()
            .await
            .map_err(|_| StorageError::Closed)?;
        self.drain().await;
        if self.inner.state.borrow().closed {
            return Ok(());
        }
        let failed = self.inner.state.borrow().failed.is_some();
        if !failed {
            flush::sync_now(&self.inner).await?;
            crate::maintenance::write_indexes(&self.inner, true).await?;
        }
        let trim = {
            let st = self.inner.state.borrow();
            let active = st.active();
            let same = st.writer.segment_base == active.base_offset;
            same.then(|| {
                st.writer
                    .file
                    .as_ref()
                    .map(|f| (f.share(), active.written_size))
            })
            .flatten()
        };
        if let (Some((file, size)), false) = (trim, failed) {
            // Leave no block padding behind: the file ends where the log does.
            file.truncate(size).await?;
        }
        let files = {
            let mut st = self.inner.state.borrow_mut();
            st.closed = true;
            let mut files: Vec<SegmentFile> = st.writer.file.take().into_iter().collect();
            files.extend(st.sealed_reader.take().map(|(_, f)| f));
            files
        };
        for f in files {
            f.close().await;
        }
        Ok(())
    }
}

/// True when `chunks` surely hold a record at or after `offset`, judged
/// from batch headers alone: a batch with records that starts at or after
/// it, or a whole (unfiltered) batch that reaches it. Batches the cleaner
/// emptied, or filtered ones straddling `offset`, may not.
fn brings_records(chunks: &[Bytes], offset: i64) -> bool {
    for chunk in chunks {
        let mut at = 0;
        while let Some(size) = chunk.get(at..).and_then(batch::peek_batch_size) {
            let Some(h) = chunk
                .get(at..at + size)
                .and_then(|b| batch::parse_header(b).ok())
            else {
                return true;
            };
            let whole = h.records_count == h.last_offset_delta + 1;
            if h.records_count > 0 && (h.base_offset >= offset || whole) {
                return true;
            }
            at += size;
        }
    }
    false
}

/// The offset after the last batch of `chunks`.
fn last_next_offset(chunks: &[Bytes]) -> Option<i64> {
    let mut last = None;
    for chunk in chunks {
        let mut at = 0;
        while let Some(size) = chunk.get(at..).and_then(batch::peek_batch_size) {
            let h = chunk
                .get(at..at + size)
                .and_then(|b| batch::parse_header(b).ok())?;
            last = Some(h.next_offset());
            at += size;
        }
    }
    last
}

/// What identifies the file contents a segment's index describes: `None`
/// while a cleaner swap is renaming its files.
pub(crate) fn seg_version(seg: &Segment) -> Option<(i64, u64)> {
    (!seg.swapping).then_some((seg.base_offset, seg.generation))
}

pub(crate) fn file_path(seg: &Segment) -> PathBuf {
    seg.path.clone()
}

/// Reads whole batches from a segment file: from `position` (a batch
/// boundary at or before `offset`) to `limit`, skipping batches that end
/// before `offset`, stopping before `end_offset` and after `max_bytes`
/// (but always returning the first batch). Every batch is validated:
/// damaged bytes are reported, never served.
async fn read_batches(
    file: &SegmentFile,
    mut position: u64,
    limit: u64,
    offset: i64,
    end_offset: i64,
    max_bytes: usize,
) -> Result<Vec<Bytes>> {
    let mut chunks = Vec::new();
    let mut total = 0usize;
    // Slack past max_bytes so that a batch just over the limit (producers
    // fill batches up to it) comes in one read rather than two.
    let window_bytes = max_bytes.clamp(64 << 10, 8 << 20) + (64 << 10);
    'windows: while position < limit {
        let len = ((limit - position) as usize).min(window_bytes);
        let window = file.read(position, len).await?;
        let mut at = 0usize;
        let mut first_in_window = None;
        loop {
            let Some(size) = batch::peek_batch_size(&window[at..]) else {
                if window.len() - at >= batch::BATCH_LOG_OVERHEAD {
                    return Err(corrupt(
                        file,
                        position + at as u64,
                        "impossible batch length",
                    ));
                }
                break;
            };
            if at + size > window.len() {
                if at == 0 {
                    // One batch larger than the window: read exactly it.
                    if position + size as u64 > limit {
                        return Err(corrupt(file, position, "batch runs past the segment end"));
                    }
                    let whole = file.read(position, size).await?;
                    if whole.len() < size {
                        return Err(corrupt(file, position, "short read"));
                    }
                    let header = batch::validate_stored(&whole)
                        .map_err(|e| corrupt(file, position, &e.to_string()))?;
                    if header.base_offset >= end_offset {
                        break 'windows;
                    }
                    position += size as u64;
                    if header.next_offset() > offset {
                        total += size;
                        chunks.push(whole);
                        if total >= max_bytes {
                            break 'windows;
                        }
                    }
                    continue 'windows;
                }
                break;
            }
            let bytes = &window[at..at + size];
            let header = batch::validate_stored(bytes)
                .map_err(|e| corrupt(file, position + at as u64, &e.to_string()))?;
            if header.base_offset >= end_offset {
                if let Some(s) = first_in_window {
                    chunks.push(window.slice(s..at));
                }
                break 'windows;
            }
            if header.next_offset() > offset {
                let have_one = !chunks.is_empty() || first_in_window.is_some();
                if have_one && total + size > max_bytes {
                    if let Some(s) = first_in_window {
                        chunks.push(window.slice(s..at));
                    }
                    break 'windows;
                }
                first_in_window.get_or_insert(at);
                total += size;
            }
            at += size;
            if at == window.len() {
                break;
            }
        }
        if let Some(s) = first_in_window {
            chunks.push(window.slice(s..at));
        }
        position += at as u64;
        if at == 0 {
            break;
        }
    }
    Ok(chunks)
}

fn corrupt(file: &SegmentFile, position: u64, why: &str) -> StorageError {
    StorageError::Corrupt {
        path: file.path().to_path_buf(),
        position,
        reason: why.to_string(),
    }
}

impl FsyncPolicy {
    pub(crate) fn acks_after_sync(&self) -> bool {
        matches!(self, FsyncPolicy::Always)
    }
}
