//! Reading a partition log: whole batches from an offset (tail cache first,
//! then the segment files, every batch checked before it is served, reading
//! on past batches compaction emptied), and lookups by timestamp through the
//! sparse time indexes.

use std::path::PathBuf;

use bytes::Bytes;

use crate::batch;
use crate::error::{Result, StorageError};
use crate::file::SegmentFile;
use crate::segment::{self, Gaps, Segment};

use super::{PartitionLog, ReadBatches, TimestampOffset, READ_ON_BYTES_MIN, READ_SWAP_RETRIES_MAX};

impl PartitionLog {
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
                let (start, end) = (st.log_start_offset(), st.readable_end());
                if offset < start || offset > end {
                    return Err(st.out_of_range(offset));
                }
                let mut out = ReadBatches {
                    chunks: Vec::new(),
                    log_end_offset: end,
                    log_start_offset: start,
                };
                if offset == end {
                    return Ok(out);
                }
                if let Some(chunks) = st.cache().read(from, end, max_bytes) {
                    out.chunks = std::mem::take(&mut before);
                    out.chunks.extend(chunks);
                    return Ok(out);
                }
                let i = st.segment_for(from);
                let seg = &st.segments()[i];
                let position = seg.index.position_floor(seg.relative(from));
                (
                    i,
                    u64::from(position),
                    seg.written_size,
                    end,
                    start,
                    seg_version(seg),
                )
            };
            let file = self.file_for(seg_index).await?;
            let got = read_batches(&file, position, limit, from, end, max_bytes).await;
            let (now, next_base) = {
                let st = self.inner.state.borrow();
                let now = st.segments().get(seg_index).and_then(seg_version);
                let next = st
                    .segments()
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
    pub(super) async fn file_for(&self, i: usize) -> Result<SegmentFile> {
        let (base, path, faults, version) = {
            let st = self.inner.state.borrow();
            let seg = &st.segments()[i];
            if st.writer_segment_base() == seg.base_offset {
                if let Some(f) = st.writer_file() {
                    return Ok(f.share());
                }
            }
            if let Some((b, f)) = st.sealed_reader() {
                if b == seg.base_offset {
                    return Ok(f.share());
                }
            }
            (
                seg.base_offset,
                seg.path.clone(),
                st.faults(),
                seg_version(seg),
            )
        };
        let file = SegmentFile::open(&path, faults).await?;
        let mut st = self.inner.state.borrow_mut();
        if st.writer_segment_base() == base {
            st.adopt_writer_file(base, file.share());
        } else {
            // Kept only if no cleaner swap ran while it opened: the handle
            // could be the replaced file.
            let i = st.segment_for(base);
            let same = st.segments().get(i).and_then(seg_version) == version && version.is_some();
            if same {
                st.keep_sealed_reader(base, file.share());
            }
        }
        Ok(file)
    }

    /// The largest timestamp in the log and the offset of the record that
    /// carries it (Kafka's MAX_TIMESTAMP lookup). `None` for an empty log.
    pub async fn max_timestamp(&self) -> Result<Option<TimestampOffset>> {
        let found = {
            let st = self.inner.state.borrow();
            st.check_open()?;
            let end = st.readable_end();
            st.segments()
                .iter()
                .enumerate()
                .filter(|(_, s)| s.base_offset < end && s.max_timestamp >= 0)
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
            let end = st.readable_end();
            st.segments()
                .iter()
                .enumerate()
                .filter(|(_, s)| s.base_offset < end && s.max_timestamp >= timestamp)
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
            let seg = &st.segments()[i];
            let pos = seg
                .index
                .position_floor(seg.relative(from.max(seg.base_offset)));
            (
                u64::from(pos),
                seg.written_size,
                seg.base_offset,
                st.readable_end(),
                seg_version(seg),
            )
        };
        let file = self.file_for(i).await?;
        let expected = if position == 0 { Some(base) } else { None };
        let mut hit = None;
        let matches = |t: i64| if exact { t == ts } else { t >= ts };
        let scan_end = segment::scan(
            &file,
            position,
            end,
            expected,
            Gaps::Allowed,
            |h, _, bytes| {
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
            },
        )
        .await;
        let stale = version.is_none()
            || self
                .inner
                .state
                .borrow()
                .segments()
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
                        path: file_path(&self.inner.state.borrow().segments()[i]),
                        position: scan_end.position,
                        reason: why,
                    });
                }
            }
        }
        Ok((hit, false))
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
fn seg_version(seg: &Segment) -> Option<(i64, u64)> {
    (!seg.swapping).then_some((seg.base_offset, seg.generation))
}

fn file_path(seg: &Segment) -> PathBuf {
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
