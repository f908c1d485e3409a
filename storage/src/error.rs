//! The storage crate's error type. The broker maps it to Kafka error codes
//! at its edge; nothing here knows about Kafka's numbering.

use std::path::PathBuf;

use crate::batch::BatchError;
use crate::producer::SequenceError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] BatchError),
    #[error("offset {offset} is outside the log [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    /// Stored bytes failed validation: never served, always reported.
    #[error("corrupt data in {path} at byte {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    /// An I/O operation failed; the log rolled back to its last good state.
    #[error("{op} {path} failed: {message}")]
    Io {
        op: &'static str,
        path: PathBuf,
        message: String,
        errno: Option<i32>,
    },
    /// An idempotent producer's batch is out of sequence or fenced.
    #[error("{0}")]
    Sequence(#[from] SequenceError),
    /// A leader's append under an epoch that is no longer current.
    #[error("leader epoch {epoch} is not the current one ({current})")]
    FencedLeaderEpoch { epoch: i32, current: i32 },
    #[error("the log was closed")]
    Closed,
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl StorageError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, err: impl IoErrorLike) -> Self {
        StorageError::Io {
            op,
            path: path.into(),
            message: err.message(),
            errno: err.errno(),
        }
    }

    /// True when the error is the disk running out of space.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StorageError::Io { errno: Some(e), .. } if *e == libc::ENOSPC || *e == libc::EDQUOT)
    }
}

/// Both std and glommio errors can report an errno and a message.
pub(crate) trait IoErrorLike {
    fn message(&self) -> String;
    fn errno(&self) -> Option<i32>;
}

impl IoErrorLike for std::io::Error {
    fn message(&self) -> String {
        self.to_string()
    }
    fn errno(&self) -> Option<i32> {
        self.raw_os_error()
    }
}

impl IoErrorLike for glommio::GlommioError<()> {
    fn message(&self) -> String {
        self.to_string()
    }
    fn errno(&self) -> Option<i32> {
        match self {
            glommio::GlommioError::IoError(e) => e.raw_os_error(),
            glommio::GlommioError::EnhancedIoError { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
