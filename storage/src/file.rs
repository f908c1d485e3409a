//! The storage crate's only contact with the runtime's file API: segment
//! files opened with O_DIRECT through glommio (io_uring), aligned writes,
//! reads, fdatasync, truncation, and the few blocking metadata operations
//! (listing, small metadata files) moved off the executor. Fault-injection
//! points live here so tests can make the disk fail on demand.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
pub(crate) use glommio::io::DmaBuffer;
use glommio::io::{DmaFile, OpenOptions};

use crate::error::{Result, StorageError};

/// Writes go to the disk in whole blocks of this size: O_DIRECT needs at
/// least the device's logical block size, and 4 KiB also avoids
/// read-modify-write inside the SSD.
pub const BLOCK_BYTES: u64 = 4096;

pub(crate) fn align_down(v: u64) -> u64 {
    v & !(BLOCK_BYTES - 1)
}

pub(crate) fn align_up(v: u64) -> u64 {
    align_down(v + BLOCK_BYTES - 1)
}

/// Failures a test can switch on; shared by every file of the logs that
/// were opened with it. Off unless a test builds one.
#[derive(Debug, Default)]
pub struct Faults {
    /// Bytes the "disk" still accepts; a write beyond fails with ENOSPC
    /// after writing what fits. `None` = unlimited.
    disk_bytes_left: Cell<Option<u64>>,
    /// Fail every fdatasync with EIO while set.
    fail_sync: Cell<bool>,
    /// Stop a cleaning pass (as a crash would) when it reaches this step of
    /// its write-and-swap protocol; see `compact.rs`.
    cleaner_stop_at: Cell<Option<u32>>,
    cleaner_steps: Cell<u32>,
}

impl Faults {
    pub fn new() -> Rc<Faults> {
        Rc::new(Faults::default())
    }

    pub fn set_disk_bytes_left(&self, bytes: Option<u64>) {
        self.disk_bytes_left.set(bytes);
    }

    pub fn set_fail_sync(&self, fail: bool) {
        self.fail_sync.set(fail);
    }

    /// Makes the next cleaning pass stop dead at its `step`-th crash point
    /// (counted from 0 over the whole pass), leaving the files as a crash
    /// there would. `None` lets passes finish.
    pub fn set_cleaner_stop_at(&self, step: Option<u32>) {
        self.cleaner_stop_at.set(step);
        self.cleaner_steps.set(0);
    }

    /// Counts one cleaner crash point; true when the pass must stop here.
    pub(crate) fn cleaner_must_stop(&self) -> bool {
        let n = self.cleaner_steps.get();
        self.cleaner_steps.set(n + 1);
        self.cleaner_stop_at.get() == Some(n)
    }

    /// How much of a `len`-byte write fits; `None` when all of it does.
    fn admit_write(&self, len: u64) -> Option<u64> {
        let left = self.disk_bytes_left.get()?;
        if len <= left {
            self.disk_bytes_left.set(Some(left - len));
            None
        } else {
            self.disk_bytes_left.set(Some(0));
            Some(left)
        }
    }
}

fn injected(op: &'static str, path: &Path, errno: i32) -> StorageError {
    StorageError::Io {
        op,
        path: path.to_path_buf(),
        message: format!(
            "{} (injected fault)",
            std::io::Error::from_raw_os_error(errno)
        ),
        errno: Some(errno),
    }
}

thread_local! {
    /// Devices whose iopoll support this executor thread has probed.
    static PROBED_DEVICES: RefCell<HashSet<u64>> = RefCell::new(HashSet::new());
}

/// glommio decides once per device and executor whether reads may use the
/// polled ring, by reading the first block of the first file it opens there.
/// If that file is empty the read "succeeds", polling is wrongly enabled and
/// every later read fails with EOPNOTSUPP on devices without poll queues.
/// So the first open on a device goes to a scratch file holding one block.
///
/// Call it (through [`probe_direct_io`]) before opening any other direct-I/O
/// file on the device from this thread.
async fn probe_device_once(path: &Path) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let shown = dir.clone();
    let probe = dir.join(".sluice-direct-io-probe");
    let dev = blocking(move || {
        std::fs::metadata(&dir).map(|m| std::os::linux::fs::MetadataExt::st_dev(&m))
    })
    .await
    .map_err(|e| StorageError::io("stat", &shown, e))?;
    if PROBED_DEVICES.with(|p| p.borrow().contains(&dev)) {
        return Ok(());
    }
    let scratch = probe.clone();
    blocking(move || std::fs::write(&scratch, vec![0u8; BLOCK_BYTES as usize]))
        .await
        .map_err(|e| StorageError::io("write", &probe, e))?;
    let opened = DmaFile::open(&probe).await;
    remove_file(&probe).await?;
    let file = opened.map_err(|e| StorageError::io("open", &probe, e))?;
    let _ = file.close().await;
    PROBED_DEVICES.with(|p| p.borrow_mut().insert(dev));
    Ok(())
}

/// Checks that `dir` accepts direct I/O through io_uring and settles how
/// this executor thread reads from its device. Every executor should call
/// it for its data directory before opening direct-I/O files there.
pub async fn probe_direct_io(dir: &Path) -> Result<()> {
    create_dir_all(dir).await?;
    probe_device_once(&dir.join("probe")).await
}

/// A segment file opened for direct I/O.
pub(crate) struct SegmentFile {
    file: Rc<DmaFile>,
    path: PathBuf,
    faults: Option<Rc<Faults>>,
}

impl SegmentFile {
    pub(crate) async fn open(path: &Path, faults: Option<Rc<Faults>>) -> Result<SegmentFile> {
        probe_device_once(path).await?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .dma_open(path)
            .await
            .map_err(|e| StorageError::io("open", path, e))?;
        if file.alignment() > BLOCK_BYTES {
            return Err(StorageError::Io {
                op: "open",
                path: path.to_path_buf(),
                message: format!(
                    "the file system needs {}-byte aligned direct I/O, more than {BLOCK_BYTES}",
                    file.alignment()
                ),
                errno: None,
            });
        }
        Ok(SegmentFile {
            file: Rc::new(file),
            path: path.to_path_buf(),
            faults,
        })
    }

    /// A buffer for `write_blocks`, aligned for direct I/O.
    pub(crate) fn alloc(&self, len: usize) -> DmaBuffer {
        self.file.alloc_dma_buffer(len)
    }

    /// Writes `buf` (a whole number of blocks) at the block-aligned `pos`.
    pub(crate) async fn write_blocks(&self, pos: u64, mut buf: DmaBuffer) -> Result<()> {
        debug_assert_eq!(pos % BLOCK_BYTES, 0);
        debug_assert_eq!(buf.len() as u64 % BLOCK_BYTES, 0);
        let mut fault = None;
        if let Some(fit) = self
            .faults
            .as_ref()
            .and_then(|f| f.admit_write(buf.len() as u64))
        {
            buf.trim_to_size(align_down(fit) as usize);
            fault = Some(injected("write", &self.path, libc::ENOSPC));
        }
        if !buf.is_empty() {
            let len = buf.len();
            let wrote = self
                .file
                .write_at(buf, pos)
                .await
                .map_err(|e| StorageError::io("write", &self.path, e))?;
            if wrote < len {
                // Direct writes are all-or-error on local file systems; a
                // short one means the device ran out of room mid-way.
                return Err(StorageError::Io {
                    op: "write",
                    path: self.path.clone(),
                    message: format!("short write: {wrote} of {len} bytes"),
                    errno: Some(libc::ENOSPC),
                });
            }
        }
        match fault {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Reads `len` bytes at `pos` (fewer at the end of the file).
    pub(crate) async fn read(&self, pos: u64, len: usize) -> Result<Bytes> {
        let got = self
            .file
            .read_at(pos, len)
            .await
            .map_err(|e| StorageError::io("read", &self.path, e))?;
        Ok(Bytes::copy_from_slice(&got))
    }

    pub(crate) async fn sync(&self) -> Result<()> {
        if self.faults.as_ref().is_some_and(|f| f.fail_sync.get()) {
            return Err(injected("fdatasync", &self.path, libc::EIO));
        }
        self.file
            .fdatasync()
            .await
            .map_err(|e| StorageError::io("fdatasync", &self.path, e))
    }

    pub(crate) async fn truncate(&self, size: u64) -> Result<()> {
        self.file
            .truncate(size)
            .await
            .map_err(|e| StorageError::io("truncate", &self.path, e))
    }

    pub(crate) async fn size(&self) -> Result<u64> {
        self.file
            .file_size()
            .await
            .map_err(|e| StorageError::io("stat", &self.path, e))
    }

    pub(crate) async fn close(self) {
        // Another reader may still hold the handle; the last one closes it.
        let _ = self.file.close_rc().await;
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn share(&self) -> SegmentFile {
        SegmentFile {
            file: self.file.clone(),
            path: self.path.clone(),
            faults: self.faults.clone(),
        }
    }
}

/// Runs a blocking file-system call on glommio's helper threads so the
/// shard never blocks on it.
pub(crate) async fn blocking<R, F>(f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    glommio::executor().spawn_blocking(f).await
}

/// Writes a small file atomically: temporary file, fsync, rename, fsync of
/// the directory.
pub(crate) async fn write_atomic(path: &Path, contents: Vec<u8>) -> Result<()> {
    let path = path.to_path_buf();
    let shown = path.clone();
    blocking(move || -> std::io::Result<()> {
        use std::io::Write;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&contents)?;
        f.sync_data()?;
        std::fs::rename(&tmp, &path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })
    .await
    .map_err(|e| StorageError::io("write", shown, e))
}

/// Appends `bytes` to `path`, creating it, with ordinary buffered writes:
/// the cleaner builds whole new segment files this way and fsyncs them
/// once at the end with [`sync_file`].
pub(crate) async fn append_file(path: &Path, bytes: Vec<u8>) -> Result<()> {
    let owned = path.to_path_buf();
    blocking(move || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(owned)?;
        f.write_all(&bytes)
    })
    .await
    .map_err(|e| StorageError::io("write", path, e))
}

/// Creates `path` empty (truncating what was there).
pub(crate) async fn create_empty(path: &Path) -> Result<()> {
    let owned = path.to_path_buf();
    blocking(move || std::fs::File::create(owned).map(drop))
        .await
        .map_err(|e| StorageError::io("create", path, e))
}

/// Writes `contents` to `path` and fsyncs it (no rename: the caller owns
/// the naming protocol).
pub(crate) async fn write_synced(path: &Path, contents: Vec<u8>) -> Result<()> {
    let owned = path.to_path_buf();
    blocking(move || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(owned)?;
        f.write_all(&contents)?;
        f.sync_all()
    })
    .await
    .map_err(|e| StorageError::io("write", path, e))
}

pub(crate) async fn sync_file(path: &Path) -> Result<()> {
    let owned = path.to_path_buf();
    blocking(move || std::fs::File::open(owned)?.sync_all())
        .await
        .map_err(|e| StorageError::io("fsync", path, e))
}

/// Renames `from` to `to`, replacing `to` atomically.
pub(crate) async fn rename(from: &Path, to: &Path) -> Result<()> {
    let (a, b) = (from.to_path_buf(), to.to_path_buf());
    blocking(move || std::fs::rename(a, b))
        .await
        .map_err(|e| StorageError::io("rename", from, e))
}

/// Reads a small file; `None` when it does not exist.
pub(crate) async fn read_small(path: &Path) -> Result<Option<Vec<u8>>> {
    let owned = path.to_path_buf();
    match blocking(move || std::fs::read(owned)).await {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io("read", path, e)),
    }
}

pub(crate) async fn remove_file(path: &Path) -> Result<()> {
    let owned = path.to_path_buf();
    match blocking(move || std::fs::remove_file(owned)).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io("remove", path, e)),
    }
}

pub(crate) async fn sync_dir(dir: &Path) -> Result<()> {
    let owned = dir.to_path_buf();
    blocking(move || std::fs::File::open(owned)?.sync_all())
        .await
        .map_err(|e| StorageError::io("fsync directory", dir, e))
}

pub(crate) async fn create_dir_all(dir: &Path) -> Result<()> {
    let owned = dir.to_path_buf();
    blocking(move || std::fs::create_dir_all(owned))
        .await
        .map_err(|e| StorageError::io("create directory", dir, e))
}

/// File names in `dir`.
pub(crate) async fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let owned = dir.to_path_buf();
    blocking(move || -> std::io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(owned)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        Ok(names)
    })
    .await
    .map_err(|e| StorageError::io("list", dir, e))
}

pub(crate) async fn remove_dir_all(dir: &Path) -> Result<()> {
    let owned = dir.to_path_buf();
    match blocking(move || std::fs::remove_dir_all(owned)).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io("remove directory", dir, e)),
    }
}
