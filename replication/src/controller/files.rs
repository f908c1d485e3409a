//! Small durable-file helpers shared by the file log and the snapshot
//! store: replace a file's contents atomically (write a temporary, fsync,
//! rename over, fsync the directory), and read a file that may not exist.
//!
//! These use blocking `std::fs` calls; see the note in `file_log` on why
//! that is accepted for the controller for now.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Replaces `dir/name` with `bytes`. With `durable`, the data and the
/// rename are on disk when this returns; without, a crash may leave the old
/// contents (never a torn file, the rename is atomic).
pub(crate) fn write_atomically(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    durable: bool,
) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let dst = dir.join(name);
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
    }
    fs::rename(&tmp, &dst)?;
    if durable {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Makes the directory's entries (creations, renames) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The file's contents, or `None` when it does not exist.
pub(crate) fn read_if_exists(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// An `io::Error` of kind `InvalidData` for a file that does not decode.
pub(crate) fn invalid_data(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}
