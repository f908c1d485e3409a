//! Per-log configuration: segment sizing, retention and compaction, indexes,
//! the fsync policy and the tail cache, with `validate()` rejecting nonsense.

use std::time::Duration;

/// When appended data is made durable with fdatasync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// An append resolves only once an fdatasync covers it. Appends that
    /// arrive while one fdatasync runs share the next one (group commit).
    Always,
    /// Appends resolve once written; fdatasync runs when `interval_ms` has
    /// passed since the oldest unsynced write or `interval_bytes` are unsynced.
    Interval {
        interval_ms: u64,
        interval_bytes: u64,
    },
    /// Appends resolve once written; the kernel flushes when it likes and
    /// segments are synced when they roll. Durability comes from replication.
    Never,
}

impl FsyncPolicy {
    /// Whether appends are acknowledged (and readable) only once synced.
    pub(crate) fn acks_after_sync(&self) -> bool {
        matches!(self, FsyncPolicy::Always)
    }

    /// Parses `always`, `never` or `interval` (with the given bounds).
    pub fn parse(name: &str, interval_ms: u64, interval_bytes: u64) -> Option<FsyncPolicy> {
        match name {
            "always" => Some(FsyncPolicy::Always),
            "never" => Some(FsyncPolicy::Never),
            "interval" => Some(FsyncPolicy::Interval {
                interval_ms,
                interval_bytes,
            }),
            _ => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::Interval { .. } => "interval",
            FsyncPolicy::Never => "never",
        }
    }
}

/// `cleanup.policy`: what happens to old segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CleanupPolicy {
    /// Segments past `retention.ms` / `retention.bytes` are deleted.
    #[default]
    Delete,
    /// Only the latest record of each key is kept; retention deletes nothing.
    Compact,
    /// Both: compaction, and retention deletes old segments.
    CompactDelete,
}

impl CleanupPolicy {
    /// Parses Kafka's list syntax: `delete`, `compact`, `compact,delete`
    /// (in either order, spaces allowed).
    pub fn parse(value: &str) -> Option<CleanupPolicy> {
        let (mut compact, mut delete) = (false, false);
        for item in value.split(',').map(str::trim) {
            match item {
                "compact" => compact = true,
                "delete" => delete = true,
                _ => return None,
            }
        }
        match (compact, delete) {
            (true, true) => Some(CleanupPolicy::CompactDelete),
            (true, false) => Some(CleanupPolicy::Compact),
            (false, true) => Some(CleanupPolicy::Delete),
            (false, false) => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
            CleanupPolicy::CompactDelete => "compact,delete",
        }
    }

    pub fn compacts(&self) -> bool {
        matches!(self, CleanupPolicy::Compact | CleanupPolicy::CompactDelete)
    }

    pub fn deletes(&self) -> bool {
        matches!(self, CleanupPolicy::Delete | CleanupPolicy::CompactDelete)
    }
}

/// A configuration value that cannot be used, named for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value {value} for {key}: {allowed}")]
pub struct ConfigError {
    pub key: &'static str,
    pub value: String,
    pub allowed: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll the active segment once it would exceed this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll the active segment once it is this old.
    pub segment_ms: u64,
    /// `retention.ms`: delete sealed segments whose newest record is older.
    /// `None` keeps data forever (Kafka's -1).
    pub retention_ms: Option<u64>,
    /// `retention.bytes`: delete the oldest sealed segments while the log is
    /// larger. `None` means no size limit (Kafka's -1).
    pub retention_bytes: Option<u64>,
    /// `index.interval.bytes`: bytes between two sparse index entries.
    pub index_interval_bytes: u32,
    /// `max.message.bytes`: the largest batch accepted.
    pub max_batch_bytes: u32,
    pub fsync: FsyncPolicy,
    /// Bytes of recently appended batches kept in memory for tailing readers.
    pub tail_cache_bytes: usize,
    /// `cleanup.policy`.
    pub cleanup_policy: CleanupPolicy,
    /// `delete.retention.ms`: how long a tombstone survives compaction,
    /// counted from the newest timestamp of the segment that holds it.
    pub delete_retention_ms: u64,
    /// `min.compaction.lag.ms`: a sealed segment whose newest record is
    /// younger than this is not compacted yet.
    pub min_compaction_lag_ms: u64,
    /// `min.cleanable.dirty.ratio`: compact once this fraction of the
    /// compactable bytes has not been cleaned yet.
    pub min_cleanable_dirty_ratio: f64,
    /// Small writes that would extend the active segment's file carry
    /// zeros ahead of their data, so the writes after them overwrite
    /// (`log/flush.rs`). Off only to measure what it gains.
    pub zeros_ahead: bool,
}

pub const SEGMENT_BYTES_MIN: u64 = 14;
/// Positions inside a segment are 32-bit, as in Kafka's index format.
pub const SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            index_interval_bytes: 4096,
            max_batch_bytes: 1_048_588,
            fsync: FsyncPolicy::Never,
            tail_cache_bytes: 1 << 20,
            cleanup_policy: CleanupPolicy::Delete,
            delete_retention_ms: 86_400_000,
            min_compaction_lag_ms: 0,
            min_cleanable_dirty_ratio: 0.5,
            zeros_ahead: true,
        }
    }
}

impl LogConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return Err(ConfigError {
                key: "segment.bytes",
                value: self.segment_bytes.to_string(),
                allowed: "between 14 and 2147483647",
            });
        }
        if self.segment_ms == 0 {
            return Err(ConfigError {
                key: "segment.ms",
                value: "0".into(),
                allowed: "at least 1",
            });
        }
        if self.index_interval_bytes == 0 {
            return Err(ConfigError {
                key: "index.interval.bytes",
                value: "0".into(),
                allowed: "at least 1",
            });
        }
        if self.max_batch_bytes < 61 {
            return Err(ConfigError {
                key: "max.message.bytes",
                value: self.max_batch_bytes.to_string(),
                allowed: "at least 61 (one record batch header)",
            });
        }
        if !(0.0..=1.0).contains(&self.min_cleanable_dirty_ratio) {
            return Err(ConfigError {
                key: "min.cleanable.dirty.ratio",
                value: self.min_cleanable_dirty_ratio.to_string(),
                allowed: "between 0 and 1",
            });
        }
        if let FsyncPolicy::Interval {
            interval_ms,
            interval_bytes,
        } = self.fsync
        {
            if interval_ms == 0 && interval_bytes == 0 {
                return Err(ConfigError {
                    key: "fsync.interval",
                    value: "0 ms and 0 bytes".into(),
                    allowed: "a positive interval in ms or bytes (or use fsync=always)",
                });
            }
        }
        Ok(())
    }

    pub(crate) fn segment_age_max(&self) -> Duration {
        Duration::from_millis(self.segment_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_nonsense_is_named() {
        assert!(LogConfig::default().validate().is_ok());
        let bad = LogConfig {
            segment_bytes: 3,
            ..LogConfig::default()
        };
        let err = bad.validate().expect_err("too small");
        assert_eq!(err.key, "segment.bytes");
        assert!(err.to_string().contains("segment.bytes"));
        assert_eq!(
            FsyncPolicy::parse("always", 0, 0),
            Some(FsyncPolicy::Always)
        );
        assert_eq!(FsyncPolicy::parse("sometimes", 0, 0), None);
        assert_eq!(
            CleanupPolicy::parse("delete, compact"),
            Some(CleanupPolicy::CompactDelete)
        );
        assert_eq!(
            CleanupPolicy::parse("compact"),
            Some(CleanupPolicy::Compact)
        );
        assert_eq!(CleanupPolicy::parse("compress"), None);
        assert_eq!(CleanupPolicy::parse(""), None);
    }
}
