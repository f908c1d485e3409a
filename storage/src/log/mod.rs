//! `PartitionLog`: the log of one partition replica, owned by one shard.
//! Appends assign offsets here and hand the bytes to the flusher
//! (`flush.rs`); the log's offsets, segments and queues have one owner
//! (`state.rs`). The other rooms of the log: reads and timestamp lookups
//! (`read.rs`), retention, truncation and sealing (`maintenance.rs`),
//! opening after a crash (`recovery.rs`) and compaction (`compact.rs`).

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use glommio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::batch::{self, BatchError};
use crate::config::LogConfig;
use crate::error::{Result, StorageError};
use crate::file::Faults;
use crate::producer::{ProducerEntry, SequenceCheck};

mod compact;
mod flush;
mod maintenance;
mod meta;
mod read;
mod recovery;
mod state;

pub use compact::CompactionOutcome;
pub use maintenance::RetentionOutcome;

use state::State;

/// How an append places its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// At the log end, stamped with it (and the leader epoch, if any).
    Assign { leader_epoch: Option<i32> },
    /// Where the leader put it, as it is.
    Keep,
}

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

/// Counters of the work a log did, for metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    pub appends: u64,
    pub writes: u64,
    pub syncs: u64,
    pub bytes_written: u64,
}

struct Inner {
    state: RefCell<State>,
    /// Appends hold it shared while assigning offsets; truncation,
    /// deletion and close hold it exclusively.
    gate: RwLock<()>,
    /// Held exclusively by whatever replaces or removes sealed segments
    /// (cleaning, retention, DeleteRecords, truncation, close), so that a
    /// cleaning pass never races them. Appends and reads never take it.
    segments_lock: RwLock<()>,
    /// Set by `close`: a cleaning pass stops after the segment it is on,
    /// so that closing waits for one segment, not a whole pass.
    closing: Cell<bool>,
}

impl Inner {
    /// The gate held shared, as appends hold it while assigning offsets.
    pub(crate) async fn gate_shared(&self) -> Result<RwLockReadGuard<'_, ()>> {
        self.gate.read().await.map_err(|_| StorageError::Closed)
    }

    /// The gate held exclusively: no append is between its checks and its
    /// offsets (truncation, close).
    pub(crate) async fn gate_exclusive(&self) -> Result<RwLockWriteGuard<'_, ()>> {
        self.gate.write().await.map_err(|_| StorageError::Closed)
    }

    /// Sealed segments held exclusively, by whatever replaces or removes
    /// them (cleaning, retention, DeleteRecords, truncation, close).
    pub(crate) async fn segments_exclusive(&self) -> Result<RwLockWriteGuard<'_, ()>> {
        self.segments_lock
            .write()
            .await
            .map_err(|_| StorageError::Closed)
    }
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
    inner: Rc<Inner>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
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
        let state = recovery::recover(dir.as_ref(), config, faults).await?;
        Ok(PartitionLog {
            inner: Rc::new(Inner {
                state: RefCell::new(state),
                gate: RwLock::new(()),
                segments_lock: RwLock::new(()),
                closing: Cell::new(false),
            }),
        })
    }

    /// Appends one v2 record batch. Resolves when the batch is as durable
    /// as the log's fsync policy promises; an error leaves the log as it was.
    pub async fn append(&self, batch_bytes: &[u8]) -> Result<AppendInfo> {
        self.append_stamped(batch_bytes, None).await
    }

    /// Appends a batch as the partition's leader in `leader_epoch`: the
    /// epoch is stamped on the batch (outside its CRC) and the log notes
    /// where each epoch starts (`leader_epochs`).
    pub async fn append_as_leader(
        &self,
        batch_bytes: &[u8],
        leader_epoch: i32,
    ) -> Result<AppendInfo> {
        self.append_stamped(batch_bytes, Some(leader_epoch)).await
    }

    /// Makes `append_as_leader` accept only `epoch` (`None`: any, which is
    /// also where a log starts).
    pub fn set_epoch_fence(&self, epoch: Option<i32>) {
        self.inner.state.borrow_mut().set_epoch_fence(epoch);
    }

    /// Where each leader epoch stamped on this log's batches starts, as
    /// (epoch, first offset), oldest first.
    pub fn leader_epochs(&self) -> Vec<(i32, i64)> {
        self.inner.state.borrow().epochs().entries().to_vec()
    }

    /// Appends a batch replicated from the partition's leader, keeping the
    /// base offset and leader epoch the leader gave it. The batch must start
    /// at or past the log end; past it (the leader's log was compacted
    /// there) the batch starts a new segment, so that every segment's
    /// offsets stay dense from its base, as recovery expects of the active
    /// one. Producer sequences are recorded, not checked: the leader did.
    pub async fn append_as_follower(&self, batch_bytes: &[u8]) -> Result<AppendInfo> {
        self.append_placed(batch_bytes, Placement::Keep).await
    }

    async fn append_stamped(
        &self,
        batch_bytes: &[u8],
        leader_epoch: Option<i32>,
    ) -> Result<AppendInfo> {
        self.append_placed(batch_bytes, Placement::Assign { leader_epoch })
            .await
    }

    async fn append_placed(&self, batch_bytes: &[u8], placement: Placement) -> Result<AppendInfo> {
        let mut header = batch::validate(batch_bytes)?;
        let leader_epoch = match placement {
            Placement::Assign { leader_epoch } => leader_epoch,
            Placement::Keep => None,
        };
        if let Some(epoch) = leader_epoch {
            header.partition_leader_epoch = epoch;
        }
        let _gate = self.inner.gate_shared().await?;
        let (info, done, start_flusher) = {
            let mut st = self.inner.state.borrow_mut();
            st.check_open()?;
            if let Some(e) = st.failed() {
                return Err(e.clone());
            }
            if let (Some(epoch), Some(fence)) = (leader_epoch, st.epoch_fence()) {
                if epoch != fence {
                    return Err(StorageError::FencedLeaderEpoch {
                        epoch,
                        current: fence,
                    });
                }
            }
            if st.config().cleanup_policy.compacts() && !header.is_control() {
                crate::records::check_keys(batch_bytes, &header)?;
            }
            let limit = st.config().max_batch_bytes as usize;
            if header.size > limit && placement != Placement::Keep {
                return Err(BatchError::TooLarge {
                    len: header.size,
                    limit,
                }
                .into());
            }
            if placement == Placement::Keep && header.base_offset < st.next_offset() {
                return Err(StorageError::InvalidArgument(format!(
                    "a replicated batch at offset {} is below the log end {}",
                    header.base_offset,
                    st.next_offset()
                )));
            }
            let duplicate = match placement {
                Placement::Keep => None,
                Placement::Assign { .. } => match st.producers().check(&header)? {
                    SequenceCheck::Duplicate(original) => Some(original),
                    _ => None,
                },
            };
            if let Some(original) = duplicate {
                let info = AppendInfo {
                    base_offset: original.first_offset,
                    last_offset: original.last_offset,
                    append_time_ms: -1,
                    log_start_offset: st.log_start_offset(),
                    duplicate: true,
                };
                // Answer the retry once the original is as durable as
                // the policy promises, like the original's own answer.
                let end = original.last_offset + 1;
                if st.readable_end() >= end {
                    return Ok(info);
                }
                (info, st.wait_for_readable(end), false)
            } else {
                // A follower's batch keeps its offsets (past the log end
                // when the leader's cleaner removed the ones between).
                let base_offset = match placement {
                    Placement::Keep => header.base_offset,
                    Placement::Assign { .. } => st.next_offset(),
                };
                let data = match placement {
                    Placement::Keep => Bytes::copy_from_slice(batch_bytes),
                    Placement::Assign { .. } => {
                        batch::stamped(batch_bytes, base_offset, leader_epoch)
                    }
                };
                let stamped = batch::BatchHeader {
                    base_offset,
                    ..header
                };
                let (rx, start_flusher) = st.on_append(&stamped, data);
                let info = AppendInfo {
                    base_offset,
                    last_offset: stamped.last_offset(),
                    append_time_ms: now_ms(),
                    log_start_offset: st.log_start_offset(),
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

    /// Idempotent producers this log knows (for DescribeProducers).
    pub fn producers(&self) -> Vec<ProducerEntry> {
        self.inner
            .state
            .borrow()
            .producers()
            .entries()
            .cloned()
            .collect()
    }

    /// `producer.id.expiration.ms` for this log.
    pub fn set_producer_id_expiration_ms(&self, ms: i64) {
        self.inner.state.borrow_mut().set_producer_expiration_ms(ms);
    }

    pub fn stats(&self) -> LogStats {
        self.inner.state.borrow().stats()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.inner.state.borrow().log_start_offset()
    }

    /// The end of what readers see: the offset the next visible batch gets.
    pub fn log_end_offset(&self) -> i64 {
        self.inner.state.borrow().readable_end()
    }

    /// The offset the next append gets: past everything appended, readable
    /// or still on its way to disk.
    pub fn next_offset(&self) -> i64 {
        self.inner.state.borrow().next_offset()
    }

    /// True once an fdatasync failed: appends are refused until the log is
    /// reopened.
    pub fn is_offline(&self) -> bool {
        self.inner.state.borrow().failed().is_some()
    }

    /// Offsets below this are covered by an fdatasync.
    pub fn synced_end_offset(&self) -> i64 {
        self.inner.state.borrow().synced_end()
    }

    pub fn size_bytes(&self) -> u64 {
        self.inner
            .state
            .borrow()
            .segments()
            .iter()
            .map(|s| s.size)
            .sum()
    }

    /// Base offsets of the segments, oldest first (the last is active).
    pub fn segment_bases(&self) -> Vec<i64> {
        let st = self.inner.state.borrow();
        st.segments().iter().map(|s| s.base_offset).collect()
    }

    pub fn segment_count(&self) -> usize {
        self.inner.state.borrow().segments().len()
    }

    pub fn config(&self) -> LogConfig {
        self.inner.state.borrow().config().clone()
    }

    pub fn dir(&self) -> PathBuf {
        self.inner.state.borrow().dir().to_path_buf()
    }

    /// Applies a new configuration to the open log (topic configs are
    /// altered live).
    pub fn set_config(&self, config: LogConfig) -> Result<()> {
        config
            .validate()
            .map_err(|e| StorageError::InvalidArgument(e.to_string()))?;
        self.inner.state.borrow_mut().set_config(config);
        Ok(())
    }

    /// Makes this log's tail cache share `budget` with the shard's other
    /// logs, so that all of them together stay within it.
    pub fn set_cache_budget(&self, budget: Rc<crate::cache::CacheBudget>) {
        self.inner.state.borrow_mut().set_cache_budget(budget);
    }

    /// Memory held by this log's indexes and cache, for footprint budgets.
    pub fn memory_bytes(&self) -> usize {
        self.inner.state.borrow().memory_bytes()
    }

    /// Makes everything written so far durable, whatever the policy.
    pub async fn sync(&self) -> Result<()> {
        flush::sync_now(&self.inner).await
    }

    /// Waits until every append made so far has been written (or failed).
    async fn drain(&self) {
        let rx = self.inner.state.borrow_mut().wait_for_drain();
        if let Some(rx) = rx {
            let _ = rx.await;
        }
    }

    /// Flushes, syncs, writes the active segment's indexes and the recovery
    /// point, and closes every file. Later calls fail with `Closed`.
    pub async fn close(&self) -> Result<()> {
        let _gate = self.inner.gate_exclusive().await?;
        // A cleaning pass in progress finishes the segment it is on first.
        self.inner.closing.set(true);
        let _segments = self.inner.segments_exclusive().await?;
        self.drain().await;
        if self.inner.state.borrow().is_closed() {
            return Ok(());
        }
        let failed = self.inner.state.borrow().failed().is_some();
        if !failed {
            flush::sync_now(&self.inner).await?;
            maintenance::write_indexes(&self.inner, true).await?;
        }
        let trim = {
            let st = self.inner.state.borrow();
            let active = st.active();
            let same = st.writer_segment_base() == active.base_offset;
            same.then(|| st.writer_file().map(|f| (f.share(), active.written_size)))
                .flatten()
        };
        if let (Some((file, size)), false) = (trim, failed) {
            // Leave no block padding behind: the file ends where the log does.
            file.truncate(size).await?;
        }
        let files = self.inner.state.borrow_mut().on_close();
        for f in files {
            f.close().await;
        }
        Ok(())
    }
}
