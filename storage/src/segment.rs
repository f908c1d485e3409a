//! One segment of a partition log: its file name, sizes, offsets, indexes
//! and timestamps, and the batch scanner that recovery, index rebuilds and
//! timestamp lookups share.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;

use crate::batch::{self, BatchHeader, BATCH_HEADER_BYTES};
use crate::error::Result;
use crate::file::SegmentFile;
use crate::index::SegmentIndex;

/// Bytes read at once while scanning a segment.
const SCAN_WINDOW_BYTES: usize = 1 << 20;

pub(crate) fn log_file_name(base_offset: i64) -> String {
    format!("{base_offset:020}.log")
}

pub(crate) fn parse_log_file_name(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub base_offset: i64,
    pub path: PathBuf,
    /// Logical size, including batches assigned but not yet written.
    pub size: u64,
    /// Bytes known to be on disk (written, not necessarily synced).
    pub written_size: u64,
    /// Offset after the last batch assigned to this segment.
    pub next_offset: i64,
    pub index: SegmentIndex,
    /// Largest batch max-timestamp in the segment, -1 when empty.
    pub max_timestamp: i64,
    /// Base offset of the batch that holds `max_timestamp`.
    pub max_timestamp_batch: i64,
    /// `max_timestamp` over written batches only, for rollback.
    pub written_max_timestamp: (i64, i64),
    /// When the first batch was assigned, for `segment.ms`.
    pub created: Option<Instant>,
    /// Sealed segments are complete, synced and indexed on disk.
    pub sealed: bool,
    /// Producer state as of `base_offset`, not yet written to disk.
    pub producer_snapshot: Option<Vec<u8>>,
    /// Bumped when the cleaner swaps in a rewritten file (before and after
    /// the renames): a reader that found a position under one generation
    /// and read under another paired an index with the wrong file.
    pub generation: u64,
    /// The cleaner is renaming this segment's files right now.
    pub swapping: bool,
    /// The last cleaning kept tombstones here: a later pass may drop them
    /// once `delete.retention.ms` has passed.
    pub tombstones: bool,
}

impl Segment {
    pub(crate) fn new(dir: &Path, base_offset: i64) -> Segment {
        Segment {
            base_offset,
            path: dir.join(log_file_name(base_offset)),
            size: 0,
            written_size: 0,
            next_offset: base_offset,
            index: SegmentIndex::default(),
            max_timestamp: -1,
            max_timestamp_batch: base_offset,
            written_max_timestamp: (-1, base_offset),
            created: None,
            sealed: false,
            producer_snapshot: None,
            generation: 0,
            swapping: false,
            tombstones: false,
        }
    }

    pub(crate) fn index_path(&self) -> PathBuf {
        self.path.with_extension("index")
    }

    pub(crate) fn snapshot_path(&self) -> PathBuf {
        self.path.with_extension("snapshot")
    }

    pub(crate) fn time_index_path(&self) -> PathBuf {
        self.path.with_extension("timeindex")
    }

    pub(crate) fn relative(&self, offset: i64) -> u32 {
        debug_assert!(offset >= self.base_offset);
        u32::try_from(offset - self.base_offset).unwrap_or(u32::MAX)
    }

    /// Accounts for a batch placed at the end of the segment.
    pub(crate) fn on_batch(&mut self, header: &BatchHeader, index_interval_bytes: u32) {
        let position = self.size as u32;
        self.index.on_append(
            self.relative(header.base_offset),
            position,
            header.size as u32,
            header.max_timestamp,
            index_interval_bytes,
        );
        self.size += header.size as u64;
        self.next_offset = header.next_offset();
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.max_timestamp_batch = header.base_offset;
        }
        if self.created.is_none() {
            self.created = Some(Instant::now());
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.size == 0
    }
}

/// How a scan of a segment ended.
#[derive(Debug)]
pub(crate) struct ScanEnd {
    /// Position after the last good batch.
    pub position: u64,
    /// Offset after the last good batch.
    pub next_offset: i64,
    /// Why the scan stopped before `end`, if it did.
    pub damage: Option<String>,
}

/// How the offsets of a segment's batches may move from one to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gaps {
    /// Dense: each batch starts where the one before ended. This also
    /// catches a flipped bit in a base offset (outside the CRC) in the
    /// active segment.
    None,
    /// A batch may start past the expected offset (never before it): the
    /// cleaner drops batches whose records all went, so a sealed segment's
    /// offsets increase but need not be dense.
    Allowed,
    /// As `Allowed`, and every batch ends at or before this offset (the
    /// next segment's base): a batch past it has a damaged base offset.
    Below(i64),
}

/// Walks the batches of `file` from `position` (a batch boundary holding
/// `expected_offset`) to `end`, validating each one (CRC, offsets moving
/// forward as `gaps` says) and handing header, position and bytes to
/// `visit`. `visit` returns false to stop early.
pub(crate) async fn scan<F>(
    file: &SegmentFile,
    mut position: u64,
    end: u64,
    mut expected_offset: Option<i64>,
    gaps: Gaps,
    mut visit: F,
) -> Result<ScanEnd>
where
    F: FnMut(&BatchHeader, u64, &Bytes) -> bool,
{
    let mut window = Bytes::new();
    let mut window_pos = position;
    let stop = |position, next_offset: Option<i64>, why: String| ScanEnd {
        position,
        next_offset: next_offset.unwrap_or(-1),
        damage: Some(why),
    };
    while position < end {
        let at = (position - window_pos) as usize;
        let avail = window.len().saturating_sub(at);
        let size = if avail >= BATCH_HEADER_BYTES {
            batch::peek_batch_size(&window[at..])
        } else {
            None
        };
        let need = size.unwrap_or(BATCH_HEADER_BYTES);
        if avail < need {
            if end - position < need as u64 {
                return Ok(stop(
                    position,
                    expected_offset,
                    "torn batch at the end".into(),
                ));
            }
            let len = ((end - position) as usize).min(need.max(SCAN_WINDOW_BYTES));
            window = file.read(position, len).await?;
            window_pos = position;
            if window.len() < need {
                return Ok(stop(position, expected_offset, "short read".into()));
            }
            continue;
        }
        let Some(size) = size else {
            return Ok(stop(position, expected_offset, "no batch length".into()));
        };
        let bytes = window.slice(at..at + size);
        let header = match batch::validate_stored(&bytes) {
            Ok(h) => h,
            Err(e) => return Ok(stop(position, expected_offset, e.to_string())),
        };
        if let Gaps::Below(limit) = gaps {
            if header.next_offset() > limit {
                return Ok(stop(
                    position,
                    expected_offset,
                    format!(
                        "batch ends at offset {}, past the next segment's base {limit}",
                        header.next_offset()
                    ),
                ));
            }
        }
        if let Some(expected) = expected_offset {
            let dense = gaps == Gaps::None;
            if header.base_offset < expected || (dense && header.base_offset != expected) {
                return Ok(stop(
                    position,
                    expected_offset,
                    format!(
                        "batch starts at offset {}, before the expected {}",
                        header.base_offset, expected
                    ),
                ));
            }
        }
        expected_offset = Some(header.next_offset());
        let keep_going = visit(&header, position, &bytes);
        position += size as u64;
        if !keep_going {
            break;
        }
    }
    Ok(ScanEnd {
        position,
        next_offset: expected_offset.unwrap_or(-1),
        damage: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        assert_eq!(log_file_name(42), "00000000000000000042.log");
        assert_eq!(parse_log_file_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_log_file_name("42.log"), None);
        assert_eq!(parse_log_file_name("00000000000000000042.index"), None);
    }
}
