//! The flusher: one task per log, started by the first append that finds it
//! idle, that writes pending batches in order as whole blocks, syncs them
//! as the fsync policy says (group commit: every batch that arrived during
//! the previous fdatasync shares the next one), rolls segments, and
//! resolves the appenders. A failed write rolls the log back to what is on
//! disk; a failed fdatasync takes the log offline until it is reopened.

use std::rc::Rc;
use std::time::Duration;

use futures_lite::future;

use crate::config::FsyncPolicy;
use crate::error::{Result, StorageError};
use crate::file::{self, align_down, align_up, DmaBuffer, SegmentFile};

use super::maintenance::seal;
use super::meta::persist_meta;
use super::state::PendingWrite;
use super::Inner;

/// Upper bound of one write: bounds the DMA buffer the flusher allocates.
const WRITE_BYTES_MAX: usize = 4 << 20;

/// Writes up to this size carry zeros ahead of their data when they would
/// extend the file (see `zeros_ahead`).
const ZEROS_AHEAD_WRITE_MAX: usize = 256 << 10;
const ZEROS_AHEAD_MIN: u64 = 64 << 10;
const ZEROS_AHEAD_MAX: u64 = 1 << 20;

pub(super) async fn run(inner: Rc<Inner>) {
    // Under `fsync=always` a round's fdatasync runs while the next round's
    // write does, so a round costs the longer of the two, not their sum.
    // Each fdatasync covers what was written when it started.
    let mut syncing: Option<glommio::Task<Result<()>>> = None;
    loop {
        let idle = inner.state.borrow().nothing_pending();
        if let (true, Some(sync)) = (idle, syncing.take()) {
            if sync.await.is_ok() {
                inner.state.borrow_mut().publish();
            }
            continue;
        }
        let group = {
            let mut st = inner.state.borrow_mut();
            st.fail_queued_if_offline();
            st.next_write_group(WRITE_BYTES_MAX)
        };
        let Some(group) = group else {
            // The flusher stopped: the next append starts it again.
            return;
        };
        let (wrote, synced) = match syncing.take() {
            Some(sync) => {
                let (w, s) = future::zip(write_group(&inner, &group), sync).await;
                (w, Some(s))
            }
            None => (write_group(&inner, &group).await, None),
        };
        if let Some(Ok(())) = synced {
            inner.state.borrow_mut().publish();
        }
        // A failed fdatasync already took the log offline and failed the
        // waiters; the next round fails what is queued.
        if let Err(e) = wrote {
            rollback(&inner, &group, e).await;
            continue;
        }
        let policy = inner.state.borrow().config().fsync;
        let synced = match policy {
            FsyncPolicy::Always => {
                let inner = inner.clone();
                syncing = Some(glommio::spawn_local(async move { sync_now(&inner).await }));
                continue;
            }
            FsyncPolicy::Interval {
                interval_ms,
                interval_bytes,
            } => sync_if_due(&inner, interval_ms, interval_bytes).await,
            FsyncPolicy::Never => Ok(()),
        };
        if synced.is_err() {
            continue;
        }
        inner.state.borrow_mut().publish();
    }
}

async fn write_group(inner: &Rc<Inner>, group: &[PendingWrite]) -> Result<()> {
    let segment_base = group[0].segment_base;
    if inner.state.borrow().writer_segment_base() != segment_base {
        roll_writer(inner, segment_base).await?;
    }
    let file = writer_file(inner).await?;
    let (pos, buf, new_size, tail, ahead) = {
        let st = inner.state.borrow();
        let (tail_pos, tail) = st.writer_tail();
        let used = tail.len() + group.iter().map(|p| p.data.len()).sum::<usize>();
        let config = st.config();
        let ahead = if config.zeros_ahead {
            zeros_ahead(tail_pos, used, st.writer_zeroed_end(), config.segment_bytes)
        } else {
            0
        };
        let buf = block_buffer(&file, tail, group, ahead);
        let new_size = tail_pos + used as u64;
        // The partial last block stays in memory for the next write.
        let from = (align_down(new_size) - tail_pos) as usize;
        let tail = buf.as_bytes()[from..used].to_vec();
        (tail_pos, buf, new_size, tail, ahead)
    };
    let mut zeroed_end = align_up(new_size);
    let mut wrote = file.write_blocks(pos, buf).await;
    if ahead > 0 {
        if wrote.is_ok() {
            zeroed_end += ahead as u64;
        } else {
            // The zeros are only ahead of need: a disk too full for them
            // may still hold the data. Nothing else touches the writer's
            // tail while the flusher writes.
            let buf = {
                let st = inner.state.borrow();
                block_buffer(&file, st.writer_tail().1, group, 0)
            };
            wrote = file.write_blocks(pos, buf).await;
        }
    }
    wrote?;
    inner
        .state
        .borrow_mut()
        .on_write_complete(segment_base, group, new_size, tail, zeroed_end);
    Ok(())
}

/// Zeros written ahead of the data, in the same write, when it would
/// extend the file. On ext4 a direct write that extends its file runs
/// synchronously in an io_uring worker thread and leaves a size change for
/// the next fdatasync to commit to the journal; one that overwrites written
/// blocks is submitted inline and syncs with a bare cache flush. So small
/// writes pay for one extension per stretch of zeros instead of one each.
/// Large writes gain little and would double the bytes written, so they
/// carry none; the stretch grows with the segment (a partition that holds
/// one record does not cost a mebibyte) and stops at `segment.bytes`, where
/// the segment is sealed and cut back to its data.
fn zeros_ahead(pos: u64, len: usize, zeroed_end: u64, segment_bytes: u64) -> usize {
    let end = align_up(pos + len as u64);
    if len > ZEROS_AHEAD_WRITE_MAX || end <= zeroed_end {
        return 0;
    }
    let stretch = end.clamp(ZEROS_AHEAD_MIN, ZEROS_AHEAD_MAX);
    let limit = align_up(segment_bytes);
    (end + stretch).min(limit).saturating_sub(end) as usize
}

/// The partial last block `tail` and the group's batches, padded with
/// zeros to whole blocks and then `ahead` more zero bytes.
fn block_buffer(
    file: &SegmentFile,
    tail: &[u8],
    group: &[PendingWrite],
    ahead: usize,
) -> DmaBuffer {
    let used = tail.len() + group.iter().map(|p| p.data.len()).sum::<usize>();
    let mut buf = file.alloc(align_up(used as u64) as usize + ahead);
    let out = buf.as_bytes_mut();
    out[..tail.len()].copy_from_slice(tail);
    let mut at = tail.len();
    for p in group {
        out[at..at + p.data.len()].copy_from_slice(&p.data);
        at += p.data.len();
    }
    out[used..].fill(0);
    buf
}

/// The writer's file handle, opened (created) on first use.
async fn writer_file(inner: &Rc<Inner>) -> Result<SegmentFile> {
    let (base, path, faults) = {
        let st = inner.state.borrow();
        if let Some(f) = st.writer_file() {
            return Ok(f.share());
        }
        let base = st.writer_segment_base();
        let i = st.segment_for(base);
        (base, st.segments()[i].path.clone(), st.faults())
    };
    let file = SegmentFile::open(&path, faults).await?;
    inner
        .state
        .borrow_mut()
        .adopt_writer_file(base, file.share());
    Ok(file)
}

/// Seals the segment being written and points the writer at the next one.
async fn roll_writer(inner: &Rc<Inner>, next_base: i64) -> Result<()> {
    let old_base = inner.state.borrow().writer_segment_base();
    seal(inner, old_base).await?;
    let dir = {
        let mut st = inner.state.borrow_mut();
        st.roll_writer_to(next_base);
        st.dir().to_path_buf()
    };
    writer_file(inner).await?;
    let snapshot = inner.state.borrow_mut().take_producer_snapshot(next_base);
    if let Some((path, bytes)) = snapshot {
        file::write_atomic(&path, bytes).await?;
    }
    // The new file's name must survive a crash before its data is acknowledged.
    file::sync_dir(&dir).await?;
    persist_meta(inner, Some(next_base)).await
}

/// fdatasync of the writer's file; on success everything written is synced.
/// On failure the log goes offline: what was written may be lost.
pub(super) async fn sync_now(inner: &Rc<Inner>) -> Result<()> {
    let (target, file) = {
        let st = inner.state.borrow();
        if let Some(e) = st.failed() {
            return Err(e.clone());
        }
        if st.synced_end() == st.written_end() {
            return Ok(());
        }
        (st.written_end(), st.writer_file().map(SegmentFile::share))
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
            st.on_sync_complete(target);
            Ok(())
        }
        Err(e) => {
            tracing::error!(dir = %st.dir().display(), error = %e, "fdatasync failed; log taken offline");
            st.on_sync_failed(e.clone());
            Err(e)
        }
    }
}

async fn sync_if_due(inner: &Rc<Inner>, interval_ms: u64, interval_bytes: u64) -> Result<()> {
    let (due, arm) = {
        let st = inner.state.borrow();
        let age = st
            .first_unsynced_at()
            .map(|t| t.elapsed())
            .unwrap_or_default();
        let by_bytes = interval_bytes > 0 && st.unsynced_bytes() >= interval_bytes;
        let by_time = interval_ms > 0 && age >= Duration::from_millis(interval_ms);
        let arm = interval_ms > 0 && !st.is_sync_timer_armed();
        (
            by_bytes || by_time,
            arm.then(|| Duration::from_millis(interval_ms).saturating_sub(age)),
        )
    };
    if due {
        return sync_now(inner).await;
    }
    if let Some(delay) = arm {
        inner.state.borrow_mut().set_sync_timer_armed(true);
        let inner = inner.clone();
        glommio::spawn_local(async move {
            glommio::timer::sleep(delay).await;
            inner.state.borrow_mut().set_sync_timer_armed(false);
            let closed = inner.state.borrow().is_closed();
            if !closed {
                let _ = sync_now(&inner).await;
            }
        })
        .detach();
    }
    Ok(())
}

/// Undoes every append from the failed group on: offsets, segment sizes,
/// indexes and cache return to what is on disk, and the file is cut back
/// so no partial bytes remain past it.
async fn rollback(inner: &Rc<Inner>, group: &[PendingWrite], error: StorageError) {
    let (file, size) = {
        let mut st = inner.state.borrow_mut();
        let to = group[0].base_offset;
        tracing::warn!(dir = %st.dir().display(), offset = to, error = %error, "append failed; rolled back");
        st.rollback_to(to, &error)
    };
    if let Some(f) = file {
        if let Err(e) = f.truncate(size).await {
            tracing::warn!(error = %e, "could not cut the segment back after a failed write");
        }
    }
}
