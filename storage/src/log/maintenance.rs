//! Everything that changes a log other than appending: sealing segments and
//! writing their indexes, the metadata file (log start offset, recovery
//! point), `delete_records_before`, `truncate_to`, retention, and deleting
//! the whole log.

use std::rc::Rc;

use super::{now_ms, Inner, PartitionLog};
use crate::error::{Result, StorageError};
use crate::file::{self, align_down};
use crate::segment::{self, Segment};

pub(crate) const META_FILE: &str = "meta";

/// What the metadata file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    pub log_start_offset: i64,
    pub recovery_point: i64,
}

impl Meta {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let body = format!(
            "log_start_offset={}\nrecovery_point={}\n",
            self.log_start_offset, self.recovery_point
        );
        let crc = crc32c::crc32c(body.as_bytes());
        format!("{body}crc={crc}\n").into_bytes()
    }

    /// `None` when the file is damaged (then recovery scans everything).
    pub(crate) fn decode(bytes: &[u8]) -> Option<Meta> {
        let text = std::str::from_utf8(bytes).ok()?;
        let crc_at = text.find("crc=")?;
        let (body, crc_line) = text.split_at(crc_at);
        let crc: u32 = crc_line.trim_start_matches("crc=").trim().parse().ok()?;
        if crc32c::crc32c(body.as_bytes()) != crc {
            return None;
        }
        let mut meta = Meta {
            log_start_offset: 0,
            recovery_point: 0,
        };
        for line in body.lines() {
            let (k, v) = line.split_once('=')?;
            let v: i64 = v.parse().ok()?;
            match k {
                "log_start_offset" => meta.log_start_offset = v,
                "recovery_point" => meta.recovery_point = v,
                _ => return None,
            }
        }
        Some(meta)
    }
}

/// Writes the metadata file; `recovery_point` = None keeps the current one.
pub(crate) async fn persist_meta(inner: &Rc<Inner>, recovery_point: Option<i64>) -> Result<()> {
    let (path, meta, epochs_path, epochs) = {
        let mut st = inner.state.borrow_mut();
        if let Some(rp) = recovery_point {
            st.recovery_point = rp;
        }
        (
            st.dir.join(META_FILE),
            Meta {
                log_start_offset: st.log_start_offset,
                recovery_point: st.recovery_point,
            },
            st.dir.join(crate::epochs::EPOCHS_FILE),
            st.epochs.encode(),
        )
    };
    // Before the meta: a recovery point that trusts a segment must find
    // the epochs starting in it in the file (see `epochs.rs`).
    file::write_atomic(&epochs_path, epochs).await?;
    file::write_atomic(&path, meta.encode()).await
}

/// Makes the segment based at `base` immutable: cut the block padding,
/// fdatasync, write its indexes. Idempotent.
pub(crate) async fn seal(inner: &Rc<Inner>, base: i64) -> Result<()> {
    let (file, size, sealed) = {
        let st = inner.state.borrow();
        let i = st.segment_for(base);
        let seg = &st.segments[i];
        if seg.base_offset != base {
            return Ok(());
        }
        let file = if st.writer.segment_base == base {
            st.writer.file.as_ref().map(|f| f.share())
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
    let mut st = inner.state.borrow_mut();
    let i = st.segment_for(base);
    st.segments[i].sealed = true;
    Ok(())
}

async fn write_segment_index(inner: &Rc<Inner>, base: i64) -> Result<()> {
    let (offsets, times, index_path, time_path) = {
        let st = inner.state.borrow();
        let seg = &st.segments[st.segment_for(base)];
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
pub(crate) async fn write_indexes(inner: &Rc<Inner>, closing: bool) -> Result<()> {
    let bases: Vec<i64> = {
        let st = inner.state.borrow();
        st.segments
            .iter()
            .filter(|s| !s.sealed && s.written_size > 0)
            .map(|s| s.base_offset)
            .collect()
    };
    for base in bases {
        write_segment_index(inner, base).await?;
    }
    let end = inner.state.borrow().synced_end;
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

/// Drops sealed segments that lie wholly below the log start offset.
fn detach_segments_below_start(inner: &Rc<Inner>) -> Vec<Segment> {
    let mut st = inner.state.borrow_mut();
    let start = st.log_start_offset;
    let mut gone = Vec::new();
    while st.segments.len() > 1 && st.segments[0].sealed && st.segments[1].base_offset <= start {
        gone.push(st.segments.remove(0));
    }
    if let Some((b, _)) = &st.sealed_reader {
        if gone.iter().any(|s| s.base_offset == *b) {
            st.sealed_reader = None;
        }
    }
    let start = st.log_start_offset;
    st.cache.trim_front(start);
    gone
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
        let _segments = self
            .inner
            .segments_lock
            .write()
            .await
            .map_err(|_| StorageError::Closed)?;
        {
            let mut st = self.inner.state.borrow_mut();
            st.check_open()?;
            if offset > st.readable_end || offset < 0 {
                return Err(st.out_of_range(offset));
            }
            if offset <= st.log_start_offset {
                return Ok(st.log_start_offset);
            }
            st.log_start_offset = offset;
        }
        persist_meta(&self.inner, None).await?;
        let gone = detach_segments_below_start(&self.inner);
        remove_segment_files(gone).await?;
        Ok(self.log_start_offset())
    }

    /// Deletes sealed segments older than `retention.ms` (by their newest
    /// timestamp) or beyond `retention.bytes` (oldest first), when the
    /// cleanup policy includes `delete`. The active segment is never
    /// deleted. Idempotent producers past their expiration are forgotten
    /// whatever the policy.
    pub async fn enforce_retention(&self) -> Result<RetentionOutcome> {
        let _segments = self
            .inner
            .segments_lock
            .write()
            .await
            .map_err(|_| StorageError::Closed)?;
        let now = now_ms();
        {
            let mut st = self.inner.state.borrow_mut();
            let ms = st.producer_expiration_ms;
            st.producers.expire(now, ms);
        }
        let (new_start, count, bytes) = {
            let st = self.inner.state.borrow();
            st.check_open()?;
            let mut total: u64 = st.segments.iter().map(|s| s.size).sum();
            let mut count = 0;
            let mut bytes = 0;
            let deletes = st.config.cleanup_policy.deletes();
            for seg in &st.segments[..st.segments.len() - 1] {
                if !seg.sealed || !deletes {
                    break;
                }
                // A segment the cleaner emptied has no timestamp left; it
                // must not hold back the older-than-retention ones after it.
                let emptied = seg.size == 0;
                let expired = st.config.retention_ms.is_some_and(|ms| {
                    emptied || (seg.max_timestamp >= 0 && seg.max_timestamp < now - ms as i64)
                });
                let oversize = st
                    .config
                    .retention_bytes
                    .is_some_and(|limit| total - seg.size >= limit);
                if !(expired || oversize) {
                    break;
                }
                total -= seg.size;
                bytes += seg.size;
                count += 1;
            }
            let new_start = st.segments[count].base_offset.max(st.log_start_offset);
            (new_start, count, bytes)
        };
        if count > 0 {
            self.inner.state.borrow_mut().log_start_offset = new_start;
            persist_meta(&self.inner, None).await?;
            let gone = detach_segments_below_start(&self.inner);
            debug_assert_eq!(gone.len(), count);
            remove_segment_files(gone).await?;
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
        let _gate = self
            .inner
            .gate
            .write()
            .await
            .map_err(|_| StorageError::Closed)?;
        let _segments = self
            .inner
            .segments_lock
            .write()
            .await
            .map_err(|_| StorageError::Closed)?;
        self.drain().await;
        let (i, from, base, limit, start) = {
            let st = self.inner.state.borrow();
            st.check_open()?;
            if let Some(e) = &st.failed {
                return Err(e.clone());
            }
            if offset >= st.next_offset {
                return Ok(st.next_offset);
            }
            if offset < st.log_start_offset {
                return Err(st.out_of_range(offset));
            }
            let i = st.segment_for(offset);
            let seg = &st.segments[i];
            let pos = seg.index.position_floor(seg.relative(offset));
            (
                i,
                u64::from(pos),
                seg.base_offset,
                seg.written_size,
                st.log_start_offset,
            )
        };
        // Find the first batch that reaches `offset`: everything from it goes.
        let file = self.file_for(i).await?;
        let mut cut = (limit, -1i64);
        segment::scan(&file, from, limit, None, true, |h, pos, _| {
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
            return self.restart_empty_at(start).await;
        }
        let gone = {
            let mut st = self.inner.state.borrow_mut();
            let gone: Vec<Segment> = st.segments.drain(i + 1..).collect();
            st.sealed_reader = None;
            let dir = st.dir.clone();
            let seg = &mut st.segments[i];
            debug_assert_eq!(seg.base_offset, base);
            seg.size = cut_pos;
            seg.written_size = cut_pos;
            seg.next_offset = cut_offset;
            seg.sealed = false;
            let rel = seg.relative(cut_offset);
            seg.index.truncate_to_position(cut_pos as u32, rel);
            let _ = dir;
            st.next_offset = cut_offset;
            st.written_end = cut_offset;
            st.synced_end = st.synced_end.min(cut_offset);
            st.readable_end = st.readable_end.min(cut_offset);
            st.recovery_point = st.recovery_point.min(base);
            st.cache.truncate(cut_offset);
            st.producers.truncate(cut_offset);
            st.epochs.truncate_to(cut_offset);
            st.writer.file = None;
            st.writer.segment_base = base;
            gone
        };
        remove_segment_files(gone).await?;
        // The truncated segment is active again: its old indexes are stale.
        {
            let (index, times) = {
                let st = self.inner.state.borrow();
                let seg = &st.segments[i];
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
            st.writer.tail_pos = tail_pos;
            st.writer.tail = tail.to_vec();
            st.synced_end = cut_offset;
            st.dir.clone()
        };
        file::sync_dir(&dir).await?;
        recompute_max_timestamp(self, i).await?;
        persist_meta(&self.inner, None).await?;
        Ok(cut_offset)
    }

    /// Drops every segment and starts a fresh, empty one at `offset`
    /// (Kafka's truncateFullyAndStartAt). Called with the gate held.
    async fn restart_empty_at(&self, offset: i64) -> Result<i64> {
        let (gone, dir) = {
            let mut st = self.inner.state.borrow_mut();
            let dir = st.dir.clone();
            let gone: Vec<Segment> = st.segments.drain(..).collect();
            st.segments.push(Segment::new(&dir, offset));
            st.sealed_reader = None;
            st.writer.file = None;
            st.writer.segment_base = offset;
            st.writer.tail_pos = 0;
            st.writer.tail.clear();
            st.log_start_offset = offset;
            st.next_offset = offset;
            st.written_end = offset;
            st.synced_end = offset;
            st.readable_end = offset;
            st.cache.truncate(i64::MIN);
            st.producers = Default::default();
            st.epochs.clear();
            (gone, dir)
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
        let seg = &st.segments[i];
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
    segment::scan(&file, from_pos, limit, Some(expected), true, |h, _, _| {
        if h.max_timestamp > best.0 {
            best = (h.max_timestamp, h.base_offset);
        }
        true
    })
    .await?;
    let mut st = log.inner.state.borrow_mut();
    let seg = &mut st.segments[i];
    (seg.max_timestamp, seg.max_timestamp_batch) = best;
    seg.written_max_timestamp = best;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_detects_damage() {
        let m = Meta {
            log_start_offset: 7,
            recovery_point: 42,
        };
        let mut b = m.encode();
        assert_eq!(Meta::decode(&b), Some(m));
        b[17] ^= 1;
        assert_eq!(Meta::decode(&b), None);
    }
}
