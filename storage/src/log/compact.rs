//! Log compaction (`cleanup.policy=compact`), as Kafka's log cleaner does it:
//! keep the latest record of each key in the sealed segments, drop older
//! ones, and drop tombstones once `delete.retention.ms` has passed. Each
//! segment is rewritten beside itself and swapped in with a crash-safe
//! rename protocol; the active segment is never touched and appends never
//! wait for a pass.
//!
//! The swap, for a segment `B.log` (crash points marked ⚡):
//! 1. write `B.log.cleaned`, fsync; write `B.index.cleaned` and
//!    `B.timeindex.cleaned`, fsynced ⚡
//! 2. rename both indexes to `.swap` ⚡, then `B.log.cleaned` → `B.log.swap`,
//!    fsync the directory: this is the commit point ⚡
//! 3. rename the `.swap` indexes over `B.index` / `B.timeindex` ⚡, then
//!    `B.log.swap` over `B.log`, fsync the directory ⚡
//!
//! Recovery ([`finish_interrupted_swaps`]) deletes every `.cleaned` file;
//! where `B.log.swap` exists it completes step 3, otherwise it deletes the
//! stray `.swap` indexes. Either way each segment is wholly old or wholly
//! new, with indexes that match it.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;

use crate::batch::BatchHeader;
use crate::error::{Result, StorageError};
use crate::file::{self, Faults, SegmentFile};
use crate::index::SegmentIndex;
use crate::records::{self, RecordView};
use crate::segment::{self, Gaps};

use super::state::{Replacement, State};
use super::{now_ms, PartitionLog};

/// Distinct keys one pass maps (about 40 bytes each in memory). When a log
/// holds more, a pass cleans the segments whose keys fit and the next pass
/// continues, as Kafka does with its bounded dedupe buffer.
pub const COMPACTION_KEYS_MAX: usize = 1 << 21;

/// Cleaned bytes gathered in memory before they are written out.
const WRITE_CHUNK_BYTES: usize = 1 << 20;

/// What a cleaning pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionOutcome {
    /// Segments looked at (sealed, old enough, below the recovery point).
    pub segments_considered: usize,
    /// Segments rewritten and swapped in.
    pub segments_rewritten: usize,
    /// Segments left alone because a batch in them failed validation.
    pub segments_damaged: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records_removed: u64,
    pub tombstones_removed: u64,
}

/// One segment a pass works on, as it was when the pass planned.
struct Planned {
    base: i64,
    path: PathBuf,
    size: u64,
    max_timestamp: i64,
    generation: u64,
}

/// Keys are remembered by a 128-bit hash (two SipHash runs), like Kafka's
/// cleaner with MD5: a collision would need ~2^64 keys.
fn key_hash(key: &[u8]) -> u128 {
    let mut a = std::collections::hash_map::DefaultHasher::new();
    0u8.hash(&mut a);
    key.hash(&mut a);
    let mut b = std::collections::hash_map::DefaultHasher::new();
    1u8.hash(&mut b);
    key.hash(&mut b);
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

/// How many leading segments a pass may clean: sealed, synced (below the
/// recovery point, so recovery trusts them and their gaps), not the
/// writer's, and with a newest record older than `min.compaction.lag.ms`.
fn cleanable_count(st: &State, now: i64) -> usize {
    if !st.config().cleanup_policy.compacts() {
        return 0;
    }
    let lag = st.config().min_compaction_lag_ms as i64;
    let mut n = 0;
    for w in st.segments().windows(2) {
        let (seg, next) = (&w[0], &w[1]);
        let ok = seg.sealed
            && !seg.swapping
            && next.base_offset <= st.recovery_point()
            && st.writer_segment_base() != seg.base_offset
            && (lag == 0 || seg.max_timestamp <= now.saturating_sub(lag));
        if !ok {
            break;
        }
        n += 1;
    }
    n
}

/// Whether a tombstone in a segment whose newest record is `max_timestamp`
/// may go: Kafka's rule keeps tombstones for `delete.retention.ms` after
/// the segment's last write, so that a consumer reading from the start
/// within that time sees every delete; the segment's newest record
/// timestamp stands for its last write here (as for `retention.ms`).
fn tombstone_expired(max_timestamp: i64, delete_retention_ms: u64, now: i64) -> bool {
    max_timestamp >= 0 && max_timestamp < now.saturating_sub(delete_retention_ms as i64)
}

impl PartitionLog {
    /// Kafka's dirty ratio: the share of the cleanable segments' bytes not
    /// cleaned since the log was opened. `None` when nothing is cleanable.
    pub fn dirty_ratio(&self) -> Option<f64> {
        let st = self.inner.state.borrow();
        let n = cleanable_count(&st, now_ms());
        let segs = &st.segments()[..n];
        let total: u64 = segs.iter().map(|s| s.size).sum();
        if n == 0 || total == 0 {
            return None;
        }
        let dirty: u64 = segs
            .iter()
            .filter(|s| s.next_offset > st.cleaned_end())
            .map(|s| s.size)
            .sum();
        Some(dirty as f64 / total as f64)
    }

    /// Whether a cleaning pass would do something worth its cost: the
    /// policy compacts and either the dirty ratio reached
    /// `min.cleanable.dirty.ratio` or kept tombstones have expired.
    pub fn compaction_due(&self) -> bool {
        let now = now_ms();
        let st = self.inner.state.borrow();
        if st.is_closed() {
            return false;
        }
        let n = cleanable_count(&st, now);
        let segs = &st.segments()[..n];
        let dirty: u64 = segs
            .iter()
            .filter(|s| s.next_offset > st.cleaned_end())
            .map(|s| s.size)
            .sum();
        let total: u64 = segs.iter().map(|s| s.size).sum();
        let ratio_due = dirty > 0
            && total > 0
            && dirty as f64 / total as f64 >= st.config().min_cleanable_dirty_ratio;
        let retention = st.config().delete_retention_ms;
        let tombstones_due = segs
            .iter()
            .any(|s| s.tombstones && tombstone_expired(s.max_timestamp, retention, now));
        ratio_due || tombstones_due
    }

    /// Runs one cleaning pass over the cleanable segments, whatever the
    /// dirty ratio (the broker asks [`PartitionLog::compaction_due`] first).
    /// Appends and reads go on meanwhile; retention, DeleteRecords and
    /// truncation wait for the pass, close for the segment in progress.
    pub async fn compact(&self) -> Result<CompactionOutcome> {
        let _lock = self.inner.segments_exclusive().await?;
        let now = now_ms();
        let (plan, faults, interval, retention, producers_last) = {
            let st = self.inner.state.borrow();
            st.check_open()?;
            let n = cleanable_count(&st, now);
            let plan: Vec<Planned> = st.segments()[..n]
                .iter()
                .map(|s| Planned {
                    base: s.base_offset,
                    path: s.path.clone(),
                    size: s.written_size,
                    max_timestamp: s.max_timestamp,
                    generation: s.generation,
                })
                .collect();
            let producers_last: HashMap<i64, i64> = st
                .producers()
                .entries()
                .filter_map(|e| e.batches.back().map(|b| (e.producer_id, b.last_offset)))
                .collect();
            (
                plan,
                st.faults(),
                st.config().index_interval_bytes,
                st.config().delete_retention_ms,
                producers_last,
            )
        };
        let mut outcome = CompactionOutcome {
            segments_considered: plan.len(),
            ..CompactionOutcome::default()
        };
        if plan.is_empty() {
            return Ok(outcome);
        }

        // Pass 1: the offset of the latest record of every key.
        let mut latest: HashMap<u128, i64> = HashMap::new();
        let mut damaged: HashSet<i64> = HashSet::new();
        let mut covered = plan.len();
        for (k, seg) in plan.iter().enumerate() {
            if self.inner.closing.get() {
                return Ok(outcome);
            }
            let file = SegmentFile::open(&seg.path, faults.clone()).await?;
            let mut full = false;
            let end = segment::scan(
                &file,
                0,
                seg.size,
                Some(seg.base),
                Gaps::Allowed,
                |h, _, bytes| {
                    if h.is_control() {
                        return true;
                    }
                    if let Ok(recs) = records::decode(bytes, h) {
                        for r in &recs.records {
                            if let Some(key) = recs.key(r) {
                                latest.insert(key_hash(key), r.offset);
                            }
                        }
                    }
                    full = latest.len() > COMPACTION_KEYS_MAX;
                    !full
                },
            )
            .await;
            file.close().await;
            let end = end?;
            if full {
                // This segment's keys did not all fit: clean only before it.
                tracing::info!(segment = %seg.path.display(), "compaction key map full; cleaning the segments before this one");
                covered = k;
                break;
            }
            if let Some(why) = end.damage {
                tracing::error!(segment = %seg.path.display(), position = end.position, reason = %why, "corrupt batch; the cleaner leaves this segment alone");
                damaged.insert(seg.base);
            }
            glommio::yield_if_needed().await;
        }

        // Pass 2: rewrite and swap each segment in turn.
        let mut done = 0;
        for seg in &plan[..covered] {
            if self.inner.closing.get() {
                break;
            }
            done += 1;
            outcome.bytes_before += seg.size;
            if damaged.contains(&seg.base) {
                outcome.segments_damaged += 1;
                outcome.bytes_after += seg.size;
                continue;
            }
            let ctx = Filter {
                latest: &latest,
                producers_last: &producers_last,
                drop_tombstones: tombstone_expired(seg.max_timestamp, retention, now),
            };
            let cleaned = self.rewrite(seg, &ctx, interval, &faults).await?;
            outcome.records_removed += cleaned.records_removed;
            outcome.tombstones_removed += cleaned.tombstones_removed;
            match cleaned.result {
                Rewrite::Unchanged => {
                    outcome.bytes_after += seg.size;
                    self.inner
                        .state
                        .borrow_mut()
                        .set_tombstones(seg.base, cleaned.tombstones_kept);
                }
                Rewrite::Damaged => {
                    outcome.segments_damaged += 1;
                    outcome.bytes_after += seg.size;
                }
                Rewrite::Written { size, index } => {
                    self.swap(seg, size, index, cleaned.tombstones_kept, &faults)
                        .await?;
                    outcome.segments_rewritten += 1;
                    outcome.bytes_after += size;
                }
            }
            glommio::yield_if_needed().await;
        }
        if done > 0 {
            let base = plan[done - 1].base;
            self.inner.state.borrow_mut().mark_cleaned_through(base);
        }
        Ok(outcome)
    }

    /// Writes the cleaned copy of `seg` to `B.log.cleaned`, building its
    /// index as it goes. Leaves no file behind unless something changed.
    async fn rewrite(
        &self,
        seg: &Planned,
        filter: &Filter<'_>,
        interval: u32,
        faults: &Option<Rc<Faults>>,
    ) -> Result<Cleaned> {
        let tmp = seg.path.with_extension("log.cleaned");
        file::create_empty(&tmp).await?;
        let src = SegmentFile::open(&seg.path, faults.clone()).await?;
        let mut cleaned = Cleaned {
            result: Rewrite::Unchanged,
            records_removed: 0,
            tombstones_removed: 0,
            tombstones_kept: false,
        };
        let mut index = SegmentIndex::default();
        let mut out: Vec<u8> = Vec::new();
        let mut written: u64 = 0;
        let mut changed = false;
        let mut position = 0u64;
        let mut expected = Some(seg.base);
        let result = loop {
            let end = segment::scan(
                &src,
                position,
                seg.size,
                expected,
                Gaps::Allowed,
                |h, _, bytes| {
                    let kept = filter.apply(h, bytes, &mut cleaned);
                    let batch: &[u8] = match &kept {
                        Kept::Whole => bytes,
                        Kept::Dropped => {
                            changed = true;
                            return out.len() < WRITE_CHUNK_BYTES;
                        }
                        Kept::Filtered(b) => {
                            changed = true;
                            b
                        }
                    };
                    let at = written + out.len() as u64;
                    index.on_append(
                        (h.base_offset - seg.base) as u32,
                        at as u32,
                        batch.len() as u32,
                        h.max_timestamp,
                        interval,
                    );
                    out.extend_from_slice(batch);
                    out.len() < WRITE_CHUNK_BYTES
                },
            )
            .await;
            let end = match end {
                Ok(end) => end,
                Err(e) => break Err(e),
            };
            if !out.is_empty() {
                written += out.len() as u64;
                if let Err(e) = file::append_file(&tmp, std::mem::take(&mut out)).await {
                    break Err(e);
                }
            }
            if end.damage.is_some() {
                break Ok(Rewrite::Damaged);
            }
            if end.position >= seg.size {
                break Ok(if changed {
                    Rewrite::Written {
                        size: written,
                        index,
                    }
                } else {
                    Rewrite::Unchanged
                });
            }
            position = end.position;
            expected = None;
            glommio::yield_if_needed().await;
        };
        src.close().await;
        match result {
            Ok(r @ Rewrite::Written { .. }) => {
                cleaned.result = r;
                Ok(cleaned)
            }
            Ok(other) => {
                file::remove_file(&tmp).await?;
                cleaned.result = other;
                Ok(cleaned)
            }
            Err(e) => {
                file::remove_file(&tmp).await?;
                Err(e)
            }
        }
    }

    /// Swaps the cleaned file of `seg` in (see the module comment for the
    /// protocol) and points the in-memory segment at it.
    async fn swap(
        &self,
        seg: &Planned,
        size: u64,
        index: SegmentIndex,
        tombstones_kept: bool,
        faults: &Option<Rc<Faults>>,
    ) -> Result<()> {
        let stop = || -> Result<()> {
            if faults.as_ref().is_some_and(|f| f.cleaner_must_stop()) {
                return Err(StorageError::io(
                    "clean",
                    seg.path.clone(),
                    std::io::Error::other("stopped by fault injection"),
                ));
            }
            Ok(())
        };
        let dir = seg.path.parent().map(Path::to_path_buf).unwrap_or_default();
        let names = SwapNames::of(&seg.path);
        stop()?;
        file::sync_file(&names.log_cleaned).await?;
        file::write_synced(&names.index_cleaned, index.encode_offsets()).await?;
        file::write_synced(&names.times_cleaned, index.encode_times()).await?;
        stop()?;
        file::rename(&names.index_cleaned, &names.index_swap).await?;
        file::rename(&names.times_cleaned, &names.times_swap).await?;
        stop()?;
        file::rename(&names.log_cleaned, &names.log_swap).await?;
        file::sync_dir(&dir).await?;
        stop()?;
        self.inner
            .state
            .borrow_mut()
            .begin_swap(seg.base, seg.generation);
        let renamed = async {
            file::rename(&names.index_swap, &names.index).await?;
            stop()?;
            file::rename(&names.times_swap, &names.times).await?;
            file::rename(&names.log_swap, &seg.path).await?;
            file::sync_dir(&dir).await?;
            stop()
        }
        .await;
        let replacement = renamed.is_ok().then_some(Replacement {
            size,
            index,
            tombstones: tombstones_kept,
        });
        self.inner
            .state
            .borrow_mut()
            .finish_swap(seg.base, replacement);
        renamed
    }
}

/// The names of one segment's files during a swap.
struct SwapNames {
    log_cleaned: PathBuf,
    log_swap: PathBuf,
    index: PathBuf,
    index_cleaned: PathBuf,
    index_swap: PathBuf,
    times: PathBuf,
    times_cleaned: PathBuf,
    times_swap: PathBuf,
}

impl SwapNames {
    fn of(log: &Path) -> SwapNames {
        SwapNames {
            log_cleaned: log.with_extension("log.cleaned"),
            log_swap: log.with_extension("log.swap"),
            index: log.with_extension("index"),
            index_cleaned: log.with_extension("index.cleaned"),
            index_swap: log.with_extension("index.swap"),
            times: log.with_extension("timeindex"),
            times_cleaned: log.with_extension("timeindex.cleaned"),
            times_swap: log.with_extension("timeindex.swap"),
        }
    }
}

/// Completes or discards what a cleaning pass left when the process died:
/// called by recovery before it lists the segments.
pub(super) async fn finish_interrupted_swaps(dir: &Path, names: &[String]) -> Result<bool> {
    let mut touched = false;
    for name in names {
        if name.ends_with(".cleaned") {
            file::remove_file(&dir.join(name)).await?;
            touched = true;
        }
    }
    let committed: HashSet<&str> = names
        .iter()
        .filter_map(|n| n.strip_suffix(".log.swap"))
        .collect();
    for stem in &committed {
        let swap = SwapNames::of(&dir.join(format!("{stem}.log")));
        for (from, to) in [
            (&swap.index_swap, &swap.index),
            (&swap.times_swap, &swap.times),
        ] {
            if file::read_small(from).await?.is_some() {
                file::rename(from, to).await?;
            }
        }
        file::rename(&swap.log_swap, &dir.join(format!("{stem}.log"))).await?;
        tracing::info!(segment = %stem, "completed an interrupted compaction swap");
        touched = true;
    }
    for name in names {
        let stem = name
            .strip_suffix(".index.swap")
            .or_else(|| name.strip_suffix(".timeindex.swap"));
        if let Some(stem) = stem {
            if !committed.contains(stem) {
                file::remove_file(&dir.join(name)).await?;
                touched = true;
            }
        }
    }
    if touched {
        file::sync_dir(dir).await?;
    }
    Ok(touched)
}

/// What the rewrite of one segment produced.
struct Cleaned {
    result: Rewrite,
    records_removed: u64,
    tombstones_removed: u64,
    tombstones_kept: bool,
}

enum Rewrite {
    Unchanged,
    Damaged,
    Written { size: u64, index: SegmentIndex },
}

/// What becomes of one batch.
enum Kept {
    Whole,
    Dropped,
    Filtered(Vec<u8>),
}

/// The per-segment rule of which records stay.
struct Filter<'a> {
    latest: &'a HashMap<u128, i64>,
    /// Each idempotent producer's last batch (its last offset): kept even
    /// when emptied, so that its sequence survives a restart (Kafka's rule).
    producers_last: &'a HashMap<i64, i64>,
    drop_tombstones: bool,
}

impl Filter<'_> {
    fn apply(&self, h: &BatchHeader, bytes: &Bytes, stats: &mut Cleaned) -> Kept {
        if h.is_control() {
            return Kept::Whole;
        }
        let recs = match records::decode(bytes, h) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(offset = h.base_offset, error = %e, "records of a batch do not parse; the cleaner keeps it whole");
                return Kept::Whole;
            }
        };
        let mut keep: Vec<&RecordView> = Vec::with_capacity(recs.records.len());
        for r in &recs.records {
            let Some(key) = recs.key(r) else {
                keep.push(r);
                continue;
            };
            let newest = self
                .latest
                .get(&key_hash(key))
                .is_none_or(|l| *l <= r.offset);
            if !newest {
                stats.records_removed += 1;
            } else if r.tombstone && self.drop_tombstones {
                stats.records_removed += 1;
                stats.tombstones_removed += 1;
            } else {
                stats.tombstones_kept |= r.tombstone;
                keep.push(r);
            }
        }
        if keep.len() == recs.records.len() {
            return Kept::Whole;
        }
        let producer_last =
            h.producer_id >= 0 && self.producers_last.get(&h.producer_id) == Some(&h.last_offset());
        if keep.is_empty() && !producer_last {
            return Kept::Dropped;
        }
        match records::rebuild(bytes, h, &recs, &keep) {
            Ok(b) => Kept::Filtered(b),
            Err(e) => {
                tracing::warn!(offset = h.base_offset, error = %e, "cannot re-encode a filtered batch; keeping it whole");
                Kept::Whole
            }
        }
    }
}
