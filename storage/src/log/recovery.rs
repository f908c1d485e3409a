//! Opening a log: list its segments, load or rebuild their indexes, and scan
//! what may not have reached the disk whole. Segments below the recovery
//! point were sealed and synced: a valid index is trusted and only the part
//! after its last entry is read. From the recovery point on, every batch is
//! validated and the log is cut at the first torn or corrupt one. A
//! compaction swap cut short by a crash is finished or undone first.

use std::path::Path;
use std::rc::Rc;

use crate::config::LogConfig;
use crate::epochs::{LeaderEpochs, EPOCHS_FILE};
use crate::error::{Result, StorageError};
use crate::file::{self, align_down, Faults, SegmentFile};
use crate::index::SegmentIndex;
use crate::producer::ProducerTable;
use crate::segment::{self, Gaps, Segment};

use super::compact::finish_interrupted_swaps;
use super::meta::{Meta, META_FILE};
use super::now_ms;
use super::state::{Recovered, State};

pub(super) async fn recover(
    dir: &Path,
    config: LogConfig,
    faults: Option<Rc<Faults>>,
) -> Result<State> {
    file::create_dir_all(dir).await?;
    let meta = match file::read_small(&dir.join(META_FILE)).await? {
        Some(bytes) => Meta::decode(&bytes).unwrap_or_else(|| {
            tracing::warn!(dir = %dir.display(), "damaged log metadata; rescanning every segment");
            Meta {
                log_start_offset: 0,
                recovery_point: 0,
            }
        }),
        None => Meta {
            log_start_offset: 0,
            recovery_point: 0,
        },
    };
    let mut names = file::list_dir(dir).await?;
    if finish_interrupted_swaps(dir, &names).await? {
        names = file::list_dir(dir).await?;
    }
    let mut bases: Vec<i64> = names
        .iter()
        .filter_map(|n| segment::parse_log_file_name(n))
        .collect();
    bases.sort_unstable();

    let (snapshot_base, mut producers) = latest_producer_snapshot(dir, &bases).await?;
    // Epochs of the batches the scans below see, in log order; merged with
    // the file's once the log's end is known.
    let mut scanned_epochs: Vec<(i32, i64)> = Vec::new();
    let mut segments: Vec<Segment> = Vec::with_capacity(bases.len().max(1));
    let mut cut_after: Option<usize> = None;
    for (k, &base) in bases.iter().enumerate() {
        let last = k + 1 == bases.len();
        let next_base = bases.get(k + 1).copied();
        let trusted = !last && next_base.is_some_and(|n| n <= meta.recovery_point);
        // A sealed segment's batches end by the next one's base.
        let gaps = match next_base {
            Some(n) => Gaps::Below(n),
            None => Gaps::None,
        };
        let mut seg = Segment::new(dir, base);
        let file = SegmentFile::open(&seg.path, faults.clone()).await?;
        let size = file.size().await?;
        // The active segment is always scanned whole: its index files, if
        // any, predate the writes that a crash may have torn.
        let loaded = if last {
            None
        } else {
            load_index(&seg, size).await?
        };
        let (from_pos, from_offset, mut index, resumed) = match loaded {
            Some(idx) => match idx.offsets.last().copied() {
                Some(e) => {
                    let offset = base + i64::from(e.relative_offset);
                    (u64::from(e.position), offset, idx, true)
                }
                None => (0, base, SegmentIndex::default(), false),
            },
            None => (0, base, SegmentIndex::default(), false),
        };
        let (mut max_ts, mut max_ts_batch) = index
            .times
            .last()
            .map(|t| (t.timestamp, base + i64::from(t.relative_offset)))
            .unwrap_or((-1, base));
        let interval = config.index_interval_bytes;
        // Producer state is replayed from the latest snapshot on.
        let replay = base >= snapshot_base;
        if replay && resumed {
            segment::scan(&file, 0, size, Some(base), gaps, |h, _, _| {
                producers.record(h);
                true
            })
            .await?;
        }
        // Sealed segments may hold the cleaner's gaps; the active one never.
        let end = segment::scan(
            &file,
            from_pos,
            size,
            Some(from_offset),
            gaps,
            |h, pos, _| {
                if replay && !resumed {
                    producers.record(h);
                }
                if h.partition_leader_epoch >= 0
                    && scanned_epochs
                        .last()
                        .is_none_or(|&(e, _)| e < h.partition_leader_epoch)
                {
                    scanned_epochs.push((h.partition_leader_epoch, h.base_offset));
                }
                if resumed && pos == from_pos {
                    index.resume_after(h.size as u32);
                } else {
                    index.on_append(
                        (h.base_offset - base) as u32,
                        pos as u32,
                        h.size as u32,
                        h.max_timestamp,
                        interval,
                    );
                }
                if h.max_timestamp > max_ts {
                    (max_ts, max_ts_batch) = (h.max_timestamp, h.base_offset);
                }
                true
            },
        )
        .await?;
        seg.index = index;
        seg.max_timestamp = max_ts;
        seg.max_timestamp_batch = max_ts_batch;
        seg.written_max_timestamp = (max_ts, max_ts_batch);
        seg.sealed = !last;
        let mut stop = false;
        match (&end.damage, trusted) {
            (None, _) => {
                seg.size = end.position;
                seg.next_offset = end.next_offset;
            }
            (Some(why), true) => {
                // A synced, sealed segment is never cut: the damage is
                // reported when a reader reaches it.
                tracing::error!(segment = %seg.path.display(), position = end.position, reason = %why, "corrupt batch in a sealed segment");
                seg.size = size;
                seg.next_offset = next_base.unwrap_or(end.next_offset);
            }
            (Some(why), false) => {
                let padding = end.position == align_down(size)
                    || is_zero_tail(&file, end.position, size).await?;
                if !padding {
                    tracing::warn!(segment = %seg.path.display(), position = end.position, reason = %why, "truncating the log at a torn or corrupt batch");
                }
                file.truncate(end.position).await?;
                file.sync().await?;
                seg.size = end.position;
                seg.next_offset = end.next_offset;
                if resumed {
                    // The loaded index and timestamps may reach past the
                    // cut: rebuild them from what remains.
                    let mut fresh = SegmentIndex::default();
                    let mut best = (-1, base);
                    segment::scan(&file, 0, end.position, Some(base), gaps, |h, pos, _| {
                        let rel = (h.base_offset - base) as u32;
                        fresh.on_append(rel, pos as u32, h.size as u32, h.max_timestamp, interval);
                        if h.max_timestamp > best.0 {
                            best = (h.max_timestamp, h.base_offset);
                        }
                        true
                    })
                    .await?;
                    seg.index = fresh;
                    (seg.max_timestamp, seg.max_timestamp_batch) = best;
                    seg.written_max_timestamp = best;
                }
                stop = !last;
                seg.sealed = false;
            }
        }
        if let Some(n) = next_base.filter(|n| !stop && *n > seg.next_offset) {
            // The cleaner dropped this sealed segment's last batches: the
            // offsets up to the next segment are a gap, not a loss (a crash
            // cannot shorten a sealed segment: it is synced before any
            // batch of the next one is written).
            seg.next_offset = n;
        }
        if !stop && next_base.is_some_and(|n| n != seg.next_offset) && !trusted {
            tracing::warn!(segment = %seg.path.display(), "next segment does not continue this one; dropping what follows");
            stop = true;
            seg.sealed = false;
        }
        seg.written_size = seg.size;
        file.close().await;
        segments.push(seg);
        if stop {
            cut_after = Some(k);
            break;
        }
    }
    if let Some(k) = cut_after {
        for &base in &bases[k + 1..] {
            let gone = Segment::new(dir, base);
            file::remove_file(&gone.snapshot_path()).await?;
            file::remove_file(&gone.index_path()).await?;
            file::remove_file(&gone.time_index_path()).await?;
            file::remove_file(&gone.path).await?;
        }
        // The last kept segment becomes the active one: stale indexes go.
        if let Some(seg) = segments.last() {
            file::remove_file(&seg.index_path()).await?;
            file::remove_file(&seg.time_index_path()).await?;
        }
        file::sync_dir(dir).await?;
    }
    if segments.is_empty() {
        segments.push(Segment::new(dir, meta.log_start_offset.max(0)));
    }
    let active = segments.len() - 1;
    segments[active].sealed = false;
    let next_offset = segments[active].next_offset;
    let log_start_offset = meta
        .log_start_offset
        .max(segments[0].base_offset)
        .min(next_offset);

    let (tail_pos, tail) = load_tail(&segments[active], faults.clone()).await?;
    // A snapshot past a cut made above describes batches that are gone.
    producers.truncate(next_offset);
    producers.expire(now_ms(), PRODUCER_ID_EXPIRATION_MS);
    let mut epochs = match file::read_small(&dir.join(EPOCHS_FILE)).await? {
        Some(bytes) => LeaderEpochs::decode(&bytes).unwrap_or_else(|| {
            tracing::warn!(dir = %dir.display(), "damaged leader-epoch checkpoint; keeping the epochs found in the scanned segments");
            Default::default()
        }),
        None => Default::default(),
    };
    epochs.truncate_to(next_offset);
    for (epoch, start) in scanned_epochs.into_iter().filter(|&(_, s)| s < next_offset) {
        epochs.observe(epoch, start);
    }
    Ok(State::recovered(Recovered {
        dir: dir.to_path_buf(),
        config,
        faults,
        segments,
        log_start_offset,
        recovery_point: meta.recovery_point.min(next_offset),
        tail_pos,
        tail,
        producers,
        producer_expiration_ms: PRODUCER_ID_EXPIRATION_MS,
        epochs,
    }))
}

/// Kafka's default `producer.id.expiration.ms` (one day).
const PRODUCER_ID_EXPIRATION_MS: i64 = 86_400_000;

/// The newest readable producer snapshot and the segment base it was taken
/// at; without one, state is replayed from the first segment.
async fn latest_producer_snapshot(dir: &Path, bases: &[i64]) -> Result<(i64, ProducerTable)> {
    for &base in bases.iter().rev() {
        let path = Segment::new(dir, base).snapshot_path();
        if let Some(bytes) = file::read_small(&path).await? {
            match ProducerTable::decode(&bytes) {
                Some(table) => return Ok((base, table)),
                None => {
                    tracing::warn!(snapshot = %path.display(), "damaged producer snapshot; replaying further back")
                }
            }
        }
    }
    Ok((i64::MIN, ProducerTable::default()))
}

async fn load_index(seg: &Segment, size: u64) -> Result<Option<SegmentIndex>> {
    let offsets = file::read_small(&seg.index_path()).await?;
    let times = file::read_small(&seg.time_index_path()).await?;
    match (offsets, times) {
        (Some(o), Some(t)) => {
            let idx = SegmentIndex::decode(&o, &t, size);
            if idx.is_none() {
                tracing::warn!(segment = %seg.path.display(), "index damaged; rebuilding from the log");
            }
            Ok(idx)
        }
        _ => Ok(None),
    }
}

/// True when everything from `from` to `size` is zero: the block padding
/// of an unsealed segment, not damage.
async fn is_zero_tail(file: &SegmentFile, from: u64, size: u64) -> Result<bool> {
    if size <= from {
        return Ok(true);
    }
    let len = ((size - from) as usize).min(1 << 20);
    let bytes = file.read(from, len).await?;
    Ok(bytes.iter().all(|b| *b == 0))
}

/// The partial last block of the active segment, which the next write
/// rewrites whole.
async fn load_tail(seg: &Segment, faults: Option<Rc<Faults>>) -> Result<(u64, Vec<u8>)> {
    let tail_pos = align_down(seg.size);
    if tail_pos == seg.size {
        return Ok((tail_pos, Vec::new()));
    }
    let file = SegmentFile::open(&seg.path, faults).await?;
    let bytes = file.read(tail_pos, (seg.size - tail_pos) as usize).await?;
    file.close().await;
    if bytes.len() as u64 != seg.size - tail_pos {
        return Err(StorageError::Corrupt {
            path: seg.path.clone(),
            position: tail_pos,
            reason: "short read of the last block".into(),
        });
    }
    Ok((tail_pos, bytes.to_vec()))
}
