//! Everything that changes a log other than appending: sealing segments and
//! writing their indexes, `delete_records_before`, `truncate_to`, retention,
//! and deleting the whole log. The metadata file they update is `meta.rs`.

use std::rc::Rc;

use crate::error::Result;
use crate::file::{self, align_down};
use crate::segment::{self, Gaps, Segment};

use super::meta::persist_meta;
use super::{now_ms, Inner, PartitionLog};

/// Makes the segment based at `base` immutable: cut the block padding,
/// fdatasync, write its indexes. Idempotent.
pub(super) async fn seal(inner: &Rc<Inner>, base: i64) -> Result<()> {
    let (file, size, sealed) = {
        let st = inner.state.borrow();
        let i = st.segment_for(base);
        let seg = &st.segments()[i];
        if seg.base_offset != base {
            return Ok(());
        }
        let file = if st.writer_segment_base() == base {
            st.writer_file().map(|f| f.share())
        } else {
            None
        };
        (file, seg.written_size, seg.sealed)
    };
    if sealed {
        return Ok(());
    }
    if let Some(f) = file {
        f.truncate(size).await?;
        f.sync().await?;
    }
    write_segment_index(inner, base).await?;
    inner.state.borrow_mut().mark_sealed(base);
    Ok(())
}

async fn write_segment_index(inner: &Rc<Inner>, base: i64) -> Result<()> {
    let (offsets, times, index_path, time_path) = {
        let st = inner.state.borrow();
        let seg = &st.segments()[st.segment_for(base)];
        (
            seg.index.encode_offsets(),
            seg.index.encode_times(),
            seg.index_path(),
            seg.time_index_path(),
        )
    };
    file::write_atomic(&index_path, offsets).await?;
    file::write_atomic(&time_path, times).await
}

/// Writes the indexes of every unsealed segment (the active one) and, on a
/// clean close, moves the recovery point to the end of the log.
pub(super) async fn write_indexes(inner: &Rc<Inner>, closing: bool) -> Result<()> {
    let bases: Vec<i64> = {
        let st = inner.state.borrow();
        st.segments()
            .iter()
            .filter(|s| !s.sealed && s.written_size > 0)
            .map(|s| s.base_offset)
            .collect()
    };
    for base in bases {
        write_segment_index(inner, base).await?;
    }
    let end = inner.state.borrow().synced_end();
    persist_meta(inner, closing.then_some(end)).await
}

/// Deletes the files of segments that left the log.
async fn remove_segment_files(gone: Vec<Segment>) -> Result<()> {
    for seg in gone {
        file::remove_file(&seg.snapshot_path()).await?;
        file::remove_file(&seg.index_path()).await?;
        file::remove_file(&seg.time_index_path()).await?;
        file::remove_file(&seg.path).await?;
    }
    Ok(())
}

/// Detaches the sealed segments wholly below the log start offset and
/// deletes their files.
async fn remove_segments_below_start(inner: &Rc<Inner>) -> Result<usize> {
    let gone = inner.state.borrow_mut().remove_segments_below_start();
    let count = gone.len();
    remove_segment_files(gone).await?;
    Ok(count)
}

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
    pub log_start_offset: i64,
}

impl PartitionLog {
    /// Moves the log start offset forward to `offset` (Kafka's DeleteRecords)
    /// and deletes segments now wholly below it. `offset` may not pass the
    /// readable end. Returns the new log start offset.
    pub async fn delete_records_before(&self, offset: i64) -> Result<i64> {
        let _segments = self.inner.segments_exclusive().await?;
        {
            let mut st = self.inner.state.borrow_mut();
            st.check_open()?;
            if offset > st.readable_end() || offset < 0 {
                return Err(st.out_of_range(offset));
            }
            if offset <= st.log_start_offset() {
                return Ok(st.log_start_offset());
            }
            st.advance_log_start(offset);
        }
        persist_meta(&self.inner, None).await?;
        remove_segments_below_start(&self.inner).await?;
        Ok(self.log_start_offset())
    }

    /// Deletes sealed segments older than `retention.ms` (by their newest
    /// timestamp) or beyond `retention.bytes` (oldest first), when the
    /// cleanup policy includes `delete`. The active segment is never
    /// deleted. Idempotent producers past their expiration are forgotten
    /// whatever the policy.
    pub async fn enforce_retention(&self) -> Result<RetentionOutcome> {
        let _segments = self.inner.segments_exclusive().await?;
        let now = now_ms();
        self.inner.state.borrow_mut().expire_producers(now);
        let (new_start, count, bytes) = {
            let st = self.inner.state.borrow();
            st.check_open()?;
            let segments = st.segments();
            let config = st.config();
            let mut total: u64 = segments.iter().map(|s| s.size).sum();
            let mut count = 0;
            let mut bytes = 0;
            let deletes = config.cleanup_policy.deletes();
            for seg in &segments[..segments.len() - 1] {
                if !seg.sealed || !deletes {
                    break;
                }
                // A segment the cleaner emptied has no timestamp left; it
                // must not hold back the older-than-retention ones after it.
                let emptied = seg.size == 0;
                let expired = config.retention_ms.is_some_and(|ms| {
                    emptied || (seg.max_timestamp >= 0 && seg.max_timestamp < now - ms as i64)
                });
                let oversize = config
                    .retention_bytes
                    .is_some_and(|limit| total - seg.size >= limit);
                if !(expired || oversize) {
                    break;
                }
                total -= seg.size;
                bytes += seg.size;
                count += 1;
            }
            let new_start = segments[count].base_offset.max(st.log_start_offset());
            (new_start, count, bytes)
        };
        if count > 0 {
            self.inner.state.borrow_mut().advance_log_start(new_start);
            persist_meta(&self.inner, None).await?;
            let removed = remove_segments_below_start(&self.inner).await?;
            debug_assert_eq!(removed, count);
        }
        Ok(RetentionOutcome {
            segments_deleted: count,
            bytes_deleted: bytes,
            log_start_offset: self.log_start_offset(),
        })
    }

    /// Removes every batch at or after `offset` (a follower diverging from
    /// its leader). A batch that straddles `offset` goes whole, so the new
    /// log end offset may be below `offset`. Returns the new log end offset.
    pub async fn truncate_to(&self, offset: i64) -> Result<i64> {
        let _gate = self.inner.gate_exclusive().await?;
        let _segments = self.inner.segments_exclusive().await?;
        self.drain().await;
        let (i, from, base, limit, start) = {
            let st = self.inner.state.borrow();
            st.check_open()?;
            if let Some(e) = st.failed() {
                return Err(e.clone());
            }
            if offset >= st.next_offset() {
                return Ok(st.next_offset());
            }
            if offset < st.log_start_offset() {
                return Err(st.out_of_range(offset));
            }
            let i = st.segment_for(offset);
            let seg = &st.segments()[i];
            let pos = seg.index.position_floor(seg.relative(offset));
            (
                i,
                u64::from(pos),
                seg.base_offset,
                seg.written_size,
                st.log_start_offset(),
            )
        };
        // Find the first batch that reaches `offset`: everything from it goes.
        let file = self.file_for(i).await?;
        let mut cut = (limit, -1i64);
        segment::scan(&file, from, limit, None, Gaps::Allowed, |h, pos, _| {
            if h.next_offset() > offset {
                cut = (pos, h.base_offset);
                return false;
            }
            true
        })
        .await?;
        let (cut_pos, cut_offset) = if cut.1 < 0 { (limit, offset) } else { cut };
        drop(file);
        if cut_offset < start {
            // The straddling batch began below the log start: nothing
            // visible remains, so the log restarts empty at its start.
            return self.truncate_fully_and_start_at(start).await;
        }
        let gone = self
            .inner
            .state
            .borrow_mut()
            .truncate_to(base, cut_pos, cut_offset);
        remove_segment_files(gone).await?;
        // The truncated segment is active again: its old indexes are stale.
        {
            let (index, times) = {
                let st = self.inner.state.borrow();
                let seg = &st.segments()[i];
                (seg.index_path(), seg.time_index_path())
            };
            file::remove_file(&index).await?;
            file::remove_file(&times).await?;
        }
        let file = self.file_for(i).await?;
        file.truncate(cut_pos).await?;
        file.sync().await?;
        let tail_pos = align_down(cut_pos);
        let tail = file.read(tail_pos, (cut_pos - tail_pos) as usize).await?;
        let dir = {
            let mut st = self.inner.state.borrow_mut();
            st.on_truncation_synced(tail_pos, tail.to_vec());
            st.dir().to_path_buf()
        };
        file::sync_dir(&dir).await?;
        recompute_max_timestamp(self, i).await?;
        persist_meta(&self.inner, None).await?;
        Ok(cut_offset)
    }

    /// Drops every segment and starts a fresh, empty one at `offset`
    /// (Kafka's truncateFullyAndStartAt). Called with the gate held.
    async fn truncate_fully_and_start_at(&self, offset: i64) -> Result<i64> {
        let (gone, dir) = {
            let mut st = self.inner.state.borrow_mut();
            let gone = st.truncate_fully_and_start_at(offset);
            (gone, st.dir().to_path_buf())
        };
        remove_segment_files(gone).await?;
        file::sync_dir(&dir).await?;
        persist_meta(&self.inner, Some(offset)).await?;
        Ok(offset)
    }

    /// Closes the log and deletes its directory (DeleteTopics).
    pub async fn delete(&self) -> Result<()> {
        self.close().await?;
        let dir = self.dir();
        file::remove_dir_all(&dir).await
    }
}

/// After a truncation, the segment's largest timestamp is found again from
/// its time index and a scan of what follows the last entry.
async fn recompute_max_timestamp(log: &PartitionLog, i: usize) -> Result<()> {
    let (from_pos, expected, limit, mut best) = {
        let st = log.inner.state.borrow();
        let seg = &st.segments()[i];
        let best = seg
            .index
            .times
            .last()
            .map(|t| (t.timestamp, seg.base_offset + i64::from(t.relative_offset)))
            .unwrap_or((-1, seg.base_offset));
        let pos = seg.index.offsets.last().map(|e| e.position).unwrap_or(0);
        let expected = seg
            .index
            .offsets
            .last()
            .map(|e| seg.base_offset + i64::from(e.relative_offset))
            .unwrap_or(seg.base_offset);
        (u64::from(pos), expected, seg.written_size, best)
    };
    let file = log.file_for(i).await?;
    segment::scan(
        &file,
        from_pos,
        limit,
        Some(expected),
        Gaps::Allowed,
        |h, _, _| {
            if h.max_timestamp > best.0 {
                best = (h.max_timestamp, h.base_offset);
            }
            true
        },
    )
    .await?;
    log.inner.state.borrow_mut().restore_max_timestamp(i, best);
    Ok(())
}
