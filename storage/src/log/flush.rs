//! The flusher: one task per log, started by the first append that finds it
//! idle, that writes pending batches in order as whole blocks, syncs them
//! as the fsync policy says (group commit: every batch that arrived during
//! the previous fdatasync shares the next one), rolls segments, and
//! resolves the appenders. A failed write rolls the log back to what is on
//! disk; a failed fdatasync takes the log offline until it is reopened.

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::{Inner, PendingWrite, State};
use crate::config::FsyncPolicy;
use crate::error::{Result, StorageError};
use crate::file::{self, align_down, align_up, SegmentFile};

/// Upper bound of one write: bounds the DMA buffer the flusher allocates.
const WRITE_BYTES_MAX: usize = 4 << 20;

pub(crate) async fn run(inner: Rc<Inner>) {
    loop {
        fail_pending_if_offline(&mut inner.state.borrow_mut());
        let group = take_group(&mut inner.state.borrow_mut());
        let Some(group) = group else {
            let mut st = inner.state.borrow_mut();
            st.flusher_running = false;
            for tx in st.drain_waiters.drain(..) {
                let _ = tx.send(());
            }
            return;
        };
        if let Err(e) = write_group(&inner, &group).await {
            rollback(&inner, &group, e).await;
            continue;
        }
        let policy = inner.state.borrow().config.fsync;
        let synced = match policy {
            FsyncPolicy::Always => sync_now(&inner).await,
            FsyncPolicy::Interval {
                interval_ms,
                interval_bytes,
            } => sync_if_due(&inner, interval_ms, interval_bytes).await,
            FsyncPolicy::Never => Ok(()),
        };
        if synced.is_err() {
            // sync_now already took the log offline and failed the waiters.
            continue;
        }
        publish(&mut inner.state.borrow_mut());
    }
}

/// An offline log writes nothing more: everything queued fails.
fn fail_pending_if_offline(st: &mut State) {
    let Some(e) = st.failed.clone() else { return };
    let to = st.written_end;
    st.pending.clear();
    for (_, tx) in st.waiters.drain(..) {
        let _ = tx.send(Err(e.clone()));
    }
    st.cache.truncate(to);
}

/// The next run of pending writes that go to one segment, bounded in size.
fn take_group(st: &mut State) -> Option<Vec<PendingWrite>> {
    let segment_base = st.pending.front()?.segment_base;
    let mut group = Vec::new();
    let mut bytes = 0;
    while let Some(p) = st.pending.front() {
        if p.segment_base != segment_base
            || (!group.is_empty() && bytes + p.data.len() > WRITE_BYTES_MAX)
        {
            break;
        }
        bytes += p.data.len();
        if let Some(p) = st.pending.pop_front() {
            group.push(p);
        }
    }
    Some(group)
}

async fn write_group(inner: &Rc<Inner>, group: &[PendingWrite]) -> Result<()> {
    let segment_base = group[0].segment_base;
    if inner.state.borrow().writer.segment_base != segment_base {
        roll_writer(inner, segment_base).await?;
    }
    let file = writer_file(inner).await?;
    let (pos, buf, new_size, tail) = {
        let st = inner.state.borrow();
        let w = &st.writer;
        let data_len: usize = group.iter().map(|p| p.data.len()).sum();
        let used = w.tail.len() + data_len;
        let mut buf = file.alloc(align_up(used as u64) as usize);
        let out = buf.as_bytes_mut();
        out[..w.tail.len()].copy_from_slice(&w.tail);
        let mut at = w.tail.len();
        for p in group {
            out[at..at + p.data.len()].copy_from_slice(&p.data);
            at += p.data.len();
        }
        out[used..].fill(0);
        let new_size = w.tail_pos + used as u64;
        // The partial last block stays in memory for the next write.
        let from = (align_down(new_size) - w.tail_pos) as usize;
        let tail = out[from..used].to_vec();
        (w.tail_pos, buf, new_size, tail)
    };
    file.write_blocks(pos, buf).await?;
    let mut st = inner.state.borrow_mut();
    st.writer.tail = tail;
    st.writer.tail_pos = align_down(new_size);
    let last = group
        .last()
        .map(|p| p.next_offset)
        .unwrap_or(st.written_end);
    let i = st.segment_for(segment_base);
    let seg = &mut st.segments[i];
    debug_assert_eq!(seg.base_offset, segment_base);
    seg.written_size = new_size;
    for p in group {
        if p.max_timestamp > seg.written_max_timestamp.0 {
            seg.written_max_timestamp = (p.max_timestamp, p.base_offset);
        }
    }
    let written: u64 = group.iter().map(|p| p.data.len() as u64).sum();
    st.written_end = last;
    if st.first_unsynced_at.is_none() {
        st.first_unsynced_at = Some(Instant::now());
    }
    st.unsynced_bytes += written;
    st.stats.writes += 1;
    st.stats.bytes_written += written;
    Ok(())
}

/// The writer's file handle, opened (created) on first use.
async fn writer_file(inner: &Rc<Inner>) -> Result<SegmentFile> {
    let (path, faults) = {
        let st = inner.state.borrow();
        if let Some(f) = &st.writer.file {
            return Ok(f.share());
        }
        let i = st.segment_for(st.writer.segment_base);
        (st.segments[i].path.clone(), st.faults.clone())
    };
    let file = SegmentFile::open(&path, faults).await?;
    inner.state.borrow_mut().writer.file = Some(file.share());
    Ok(file)
}

/// Seals the segment being written and points the writer at the next one.
async fn roll_writer(inner: &Rc<Inner>, next_base: i64) -> Result<()> {
    let old_base = inner.state.borrow().writer.segment_base;
    super::maintenance::seal(inner, old_base).await?;
    let dir = {
        let mut st = inner.state.borrow_mut();
        if let Some(f) = st.writer.file.take() {
            drop(f);
        }
        st.writer.segment_base = next_base;
        st.writer.tail_pos = 0;
        st.writer.tail.clear();
        st.dir.clone()
    };
    writer_file(inner).await?;
    let snapshot = {
        let mut st = inner.state.borrow_mut();
        let i = st.segment_for(next_base);
        let seg = &mut st.segments[i];
        seg.producer_snapshot
            .take()
            .map(|b| (seg.snapshot_path(), b))
    };
    if let Some((path, bytes)) = snapshot {
        file::write_atomic(&path, bytes).await?;
    }
    // The new file's name must survive a crash before its data is acknowledged.
    file::sync_dir(&dir).await?;
    super::maintenance::persist_meta(inner, Some(next_base)).await
}

/// fdatasync of the writer's file; on success everything written is synced.
/// On failure the log goes offline: what was written may be lost.
pub(crate) async fn sync_now(inner: &Rc<Inner>) -> Result<()> {
    let (target, file) = {
        let st = inner.state.borrow();
        if let Some(e) = &st.failed {
            return Err(e.clone());
        }
        if st.synced_end == st.written_end {
            return Ok(());
        }
        (
            st.written_end,
            st.writer.file.as_ref().map(SegmentFile::share),
        )
    };
    let started = std::time::Instant::now();
    let result = match file {
        Some(f) => {
            let r = f.sync().await;
            crate::stats::record_fsync(started.elapsed());
            r
        }
        None => Ok(()),
    };
    let mut st = inner.state.borrow_mut();
    match result {
        Ok(()) => {
            st.stats.syncs += 1;
            if target > st.synced_end {
                st.synced_end = target;
            }
            if st.synced_end == st.written_end {
                st.unsynced_bytes = 0;
                st.first_unsynced_at = None;
            }
            Ok(())
        }
        Err(e) => {
            tracing::error!(dir = %st.dir.display(), error = %e, "fdatasync failed; log taken offline");
            st.failed = Some(e.clone());
            for (_, tx) in st.waiters.drain(..) {
                let _ = tx.send(Err(e.clone()));
            }
            Err(e)
        }
    }
}

async fn sync_if_due(inner: &Rc<Inner>, interval_ms: u64, interval_bytes: u64) -> Result<()> {
    let (due, arm) = {
        let st = inner.state.borrow();
        let age = st
            .first_unsynced_at
            .map(|t| t.elapsed())
            .unwrap_or_default();
        let by_bytes = interval_bytes > 0 && st.unsynced_bytes >= interval_bytes;
        let by_time = interval_ms > 0 && age >= Duration::from_millis(interval_ms);
        let arm = interval_ms > 0 && !st.sync_timer_armed;
        (
            by_bytes || by_time,
            arm.then(|| Duration::from_millis(interval_ms).saturating_sub(age)),
        )
    };
    if due {
        return sync_now(inner).await;
    }
    if let Some(delay) = arm {
        inner.state.borrow_mut().sync_timer_armed = true;
        let inner = inner.clone();
        glommio::spawn_local(async move {
            glommio::timer::sleep(delay).await;
            inner.state.borrow_mut().sync_timer_armed = false;
            let closed = inner.state.borrow().closed;
            if !closed {
                let _ = sync_now(&inner).await;
            }
        })
        .detach();
    }
    Ok(())
}

/// Advances what readers see and resolves the appends it covers.
pub(crate) fn publish(st: &mut State) {
    let visible = if st.config.fsync.acks_after_sync() {
        st.synced_end
    } else {
        st.written_end
    };
    if visible > st.readable_end {
        st.readable_end = visible;
    }
    while st.waiters.front().is_some_and(|(end, _)| *end <= visible) {
        if let Some((_, tx)) = st.waiters.pop_front() {
            let _ = tx.send(Ok(()));
        }
    }
}

/// Undoes every append from the failed group on: offsets, segment sizes,
/// indexes and cache return to what is on disk, and the file is cut back
/// so no partial bytes remain past it.
async fn rollback(inner: &Rc<Inner>, group: &[PendingWrite], error: StorageError) {
    let (file, size) = {
        let mut st = inner.state.borrow_mut();
        let to = group[0].base_offset;
        tracing::warn!(dir = %st.dir.display(), offset = to, error = %error, "append failed; rolled back");
        st.pending.clear();
        for (_, tx) in st.waiters.drain(..) {
            let _ = tx.send(Err(error.clone()));
        }
        debug_assert_eq!(st.written_end, to);
        let keep = st.segments.partition_point(|s| s.base_offset <= to).max(1);
        st.segments.truncate(keep);
        let writer_base = st.writer.segment_base;
        let seg = st.active_mut();
        if seg.base_offset != writer_base {
            // The failed group opened this segment; it holds nothing yet.
            seg.written_size = 0;
        }
        seg.size = seg.written_size;
        seg.next_offset = to;
        let (pos, rel) = (seg.size as u32, seg.relative(to));
        seg.index.truncate_to_position(pos, rel);
        (seg.max_timestamp, seg.max_timestamp_batch) = seg.written_max_timestamp;
        st.next_offset = to;
        st.cache.truncate(to);
        st.producers.truncate(to);
        let size = st.active().written_size;
        let same = st.active().base_offset == writer_base;
        (
            same.then(|| st.writer.file.as_ref().map(SegmentFile::share))
                .flatten(),
            size,
        )
    };
    if let Some(f) = file {
        if let Err(e) = f.truncate(size).await {
            tracing::warn!(error = %e, "could not cut the segment back after a failed write");
        }
    }
}
