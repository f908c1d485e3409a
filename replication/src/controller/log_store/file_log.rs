//! The controller's Raft log in a directory: `LogFiles`, the persistence
//! under `FileLogStore` (the log itself, its reads and its bookkeeping,
//! are `log_store`'s). The files:
//!
//! - `log`: entries appended as frames `[len: u32 LE][crc32c: u32 LE]
//!   [serde_json entry]`; an append is fsynced before openraft is told it
//!   is flushed. On open the frames are scanned and the file is cut at the
//!   first torn or corrupt one (a crash mid-append).
//! - `vote`: the vote, replaced atomically and durably (write a temporary,
//!   fsync, rename, fsync the directory) before `save_vote` returns.
//! - `purged`: the last purged log id, replaced the same way; a purge then
//!   rewrites `log` without the purged prefix (entries at or below it that
//!   a crash left in `log` are skipped on open).
//! - `committed`: the committed log id, replaced atomically but not
//!   fsynced: losing it only means re-applying less on restart.
//!
//! Every entry is also held in memory, by `LogStore` (the controller log is
//! small and is purged after snapshots), so reads never touch the disk.
//!
//! Known limitation: this first cut uses blocking `std::fs` calls on the
//! executor thread, so an fsync stalls the controller's shard for its
//! duration. The controller runs on one shard and writes little (metadata
//! changes, not records), which makes that acceptable for now; moving to
//! glommio's file API (or a blocking-thread pool) is the follow-up.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{LogStore, Persistence, Recovered};
use crate::controller::files::{invalid_data, read_if_exists, sync_dir, write_atomically};
use crate::controller::{Entry, LogId, Vote};

const LOG_FILE: &str = "log";
const VOTE_FILE: &str = "vote";
const PURGED_FILE: &str = "purged";
const COMMITTED_FILE: &str = "committed";
const FRAME_HEADER_BYTES: usize = 8;
/// No controller log entry comes near this; a larger length is corruption.
const FRAME_PAYLOAD_BYTES_MAX: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FileLogError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {detail}")]
    Corrupt { path: PathBuf, detail: String },
}

/// A file-backed Raft log. Clones share one log (the reader openraft asks
/// for is a clone).
pub type FileLogStore = LogStore<LogFiles>;

/// The log's files in its directory.
pub struct LogFiles {
    dir: PathBuf,
    file: File,
    /// Bytes of whole frames in `file`.
    end: u64,
    /// index → offset of the entry's frame in `file`.
    offsets: BTreeMap<u64, u64>,
}

fn encode_frame(entry: &Entry) -> io::Result<Vec<u8>> {
    let payload = serde_json::to_vec(entry).map_err(invalid_data)?;
    let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// Decodes whole, intact frames from the start of `bytes`; returns them
/// with their offsets, and where the intact prefix ends.
fn scan_frames(bytes: &[u8]) -> Result<(Vec<(u64, Entry)>, usize), String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while bytes.len() - pos >= FRAME_HEADER_BYTES {
        let header = &bytes[pos..pos + FRAME_HEADER_BYTES];
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let start = pos + FRAME_HEADER_BYTES;
        if len > FRAME_PAYLOAD_BYTES_MAX || bytes.len() - start < len {
            break;
        }
        let payload = &bytes[start..start + len];
        if crc32c::crc32c(payload) != crc {
            break;
        }
        // A frame whose checksum holds but which does not decode was
        // written by other code: not a torn write, so refuse to guess.
        let entry: Entry =
            serde_json::from_slice(payload).map_err(|e| format!("entry at byte {pos}: {e}"))?;
        out.push((pos as u64, entry));
        pos = start + len;
    }
    Ok((out, pos))
}

fn read_json<T: serde::de::DeserializeOwned>(
    dir: &Path,
    name: &str,
) -> Result<Option<T>, FileLogError> {
    let path = dir.join(name);
    let bytes = read_if_exists(&path).map_err(|source| FileLogError::Io {
        path: path.clone(),
        source,
    })?;
    bytes
        .map(|b| serde_json::from_slice(&b))
        .transpose()
        .map_err(|e| FileLogError::Corrupt {
            path,
            detail: e.to_string(),
        })
}

impl LogStore<LogFiles> {
    /// Opens (or creates) the log in `dir`, recovering from a crash.
    pub fn open(dir: impl Into<PathBuf>) -> Result<FileLogStore, FileLogError> {
        let dir = dir.into();
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| FileLogError::Io { path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let vote: Option<Vote> = read_json(&dir, VOTE_FILE)?;
        let last_purged: Option<LogId> = read_json(&dir, PURGED_FILE)?;
        // Written without fsync: unreadable after a crash means unknown.
        let committed: Option<LogId> = read_json(&dir, COMMITTED_FILE).ok().flatten();

        let path = dir.join(LOG_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        let (frames, intact) = scan_frames(&bytes).map_err(|detail| FileLogError::Corrupt {
            path: path.clone(),
            detail,
        })?;
        if intact < bytes.len() {
            // A torn append: nothing past it was ever reported flushed.
            file.set_len(intact as u64).map_err(io_err(&path))?;
            file.sync_all().map_err(io_err(&path))?;
        }
        let purged_index = last_purged.as_ref().map(|l| l.index);
        let mut entries = BTreeMap::new();
        let mut offsets = BTreeMap::new();
        for (offset, entry) in frames {
            let index = entry.log_id.index;
            if purged_index.is_some_and(|p| index <= p) {
                continue;
            }
            let expected = entries
                .keys()
                .next_back()
                .map(|last| last + 1)
                .or(purged_index.map(|p| p + 1));
            if expected.is_some_and(|x| x != index) {
                return Err(FileLogError::Corrupt {
                    path,
                    detail: format!("entry {index} where {expected:?} was expected"),
                });
            }
            entries.insert(index, entry);
            offsets.insert(index, offset);
        }
        let files = LogFiles {
            dir,
            file,
            end: intact as u64,
            offsets,
        };
        let recovered = Recovered {
            vote,
            committed,
            last_purged,
            entries,
        };
        Ok(LogStore::with(files, recovered))
    }
}

impl Persistence for LogFiles {
    /// Writes the entries as one batch and fsyncs it; on failure the file
    /// is cut back (as far as the disk lets us; a torn tail is cut on open
    /// anyway).
    fn append(&mut self, entries: &[Entry]) -> io::Result<()> {
        let mut batch = Vec::new();
        let mut placed = Vec::with_capacity(entries.len());
        for entry in entries {
            placed.push((entry.log_id.index, self.end + batch.len() as u64));
            batch.extend(encode_frame(entry)?);
        }
        let written = self
            .file
            .write_all_at(&batch, self.end)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            let _ = self.file.set_len(self.end);
            return Err(e);
        }
        self.end += batch.len() as u64;
        self.offsets.extend(placed);
        Ok(())
    }

    fn truncate_from(&mut self, from: u64) -> io::Result<()> {
        let Some((_, &offset)) = self.offsets.range(from..).next() else {
            return Ok(());
        };
        self.file.set_len(offset)?;
        self.file.sync_data()?;
        self.end = offset;
        self.offsets.split_off(&from);
        Ok(())
    }

    /// Records the purge point durably, then rewrites the log without the
    /// purged prefix. A crash before the rename leaves the old file, whose
    /// purged entries `open` skips.
    fn purge<'a>(
        &mut self,
        log_id: LogId,
        kept: impl Iterator<Item = &'a Entry>,
    ) -> io::Result<()> {
        let bytes = serde_json::to_vec(&log_id).map_err(invalid_data)?;
        write_atomically(&self.dir, PURGED_FILE, &bytes, true)?;
        let tmp = self.dir.join(format!("{LOG_FILE}.tmp"));
        let mut offsets = BTreeMap::new();
        let mut end = 0u64;
        {
            let file = File::create(&tmp)?;
            for entry in kept {
                let frame = encode_frame(entry)?;
                file.write_all_at(&frame, end)?;
                offsets.insert(entry.log_id.index, end);
                end += frame.len() as u64;
            }
            file.sync_all()?;
        }
        let path = self.dir.join(LOG_FILE);
        std::fs::rename(&tmp, &path)?;
        sync_dir(&self.dir)?;
        self.file = OpenOptions::new().read(true).write(true).open(&path)?;
        self.offsets = offsets;
        self.end = end;
        Ok(())
    }

    fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        let bytes = serde_json::to_vec(vote).map_err(invalid_data)?;
        write_atomically(&self.dir, VOTE_FILE, &bytes, true)
    }

    fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        let bytes = serde_json::to_vec(&committed).map_err(invalid_data)?;
        write_atomically(&self.dir, COMMITTED_FILE, &bytes, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::storage::{IOFlushed, RaftLogStorage};
    use openraft::RaftLogReader;

    fn blank(term: u64, index: u64) -> Entry {
        use openraft::entry::RaftEntry;
        let leader = openraft::impls::leader_id_adv::LeaderId { term, node_id: 1 };
        Entry::new_blank(LogId::new(leader, index))
    }

    async fn indexes(store: &mut FileLogStore) -> Vec<u64> {
        let entries = store.try_get_log_entries(..).await.expect("read");
        entries.iter().map(|e| e.log_id.index).collect()
    }

    #[test]
    fn reopen_keeps_what_was_flushed_and_cuts_a_torn_tail() {
        use openraft::AsyncRuntime;
        let dir = tempfile::tempdir().expect("tempdir");
        crate::controller::GlommioRuntime::new(1).block_on(async {
            let mut store = FileLogStore::open(dir.path()).expect("open");
            store
                .append((1..=5).map(|i| blank(1, i)), IOFlushed::noop())
                .await
                .expect("append");
            store
                .truncate_after(Some(blank(1, 3).log_id))
                .await
                .expect("truncate");
            store
                .append([blank(2, 4)], IOFlushed::noop())
                .await
                .expect("append");
            store.purge(blank(1, 1).log_id).await.expect("purge");
            let vote = Vote::new(2, 1);
            store.save_vote(&vote).await.expect("vote");
            // Refused: not the next index. Nothing of it is kept.
            assert!(store
                .append([blank(2, 9)], IOFlushed::noop())
                .await
                .is_err());
            drop(store);

            // A crash mid-append leaves half a frame.
            let path = dir.path().join(LOG_FILE);
            let whole = std::fs::metadata(&path).expect("stat").len();
            let frame = encode_frame(&blank(2, 5)).expect("encode");
            let file = OpenOptions::new().write(true).open(&path).expect("open");
            file.write_all_at(&frame[..frame.len() / 2], whole)
                .expect("write");
            drop(file);

            let mut store = FileLogStore::open(dir.path()).expect("reopen");
            assert_eq!(indexes(&mut store).await, vec![2, 3, 4]);
            assert_eq!(std::fs::metadata(&path).expect("stat").len(), whole);
            let state = store.get_log_state().await.expect("state");
            assert_eq!(state.last_purged_log_id, Some(blank(1, 1).log_id));
            assert_eq!(state.last_log_id, Some(blank(2, 4).log_id));
            assert_eq!(store.read_vote().await.expect("vote"), Some(vote));
            // Appends go on after the cut.
            store
                .append([blank(2, 5)], IOFlushed::noop())
                .await
                .expect("append");
            drop(store);
            let mut store = FileLogStore::open(dir.path()).expect("reopen");
            assert_eq!(indexes(&mut store).await, vec![2, 3, 4, 5]);
        });
    }

    #[test]
    fn scan_stops_at_a_torn_or_corrupt_frame() {
        let entry = |i: u64| -> Entry {
            use openraft::entry::RaftEntry;
            let leader = openraft::impls::leader_id_adv::LeaderId {
                term: 1,
                node_id: 1,
            };
            Entry::new_blank(LogId::new(leader, i))
        };
        let mut bytes = Vec::new();
        for i in 1..=3 {
            bytes.extend(encode_frame(&entry(i)).expect("encode"));
        }
        let whole = bytes.len();
        let (frames, end) = scan_frames(&bytes).expect("scan");
        assert_eq!((frames.len(), end), (3, whole));
        // A torn tail.
        let (frames, end) = scan_frames(&bytes[..whole - 3]).expect("scan");
        assert_eq!(frames.len(), 2);
        assert!(end < whole - 3);
        // A flipped byte in the second frame's payload.
        let second = frames[1].0 as usize;
        bytes[second + FRAME_HEADER_BYTES + 2] ^= 0x40;
        let (frames, end) = scan_frames(&bytes).expect("scan");
        assert_eq!((frames.len(), end), (1, second));
    }
}
