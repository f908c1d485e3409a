//! Sluice's storage engine: one append-only log per partition replica, made
//! of segments written with direct I/O through glommio (io_uring), with
//! sparse offset and time indexes, a tail cache, fsync policies with group
//! commit, crash recovery, retention and truncation. It knows nothing of
//! Kafka requests, shards or the cluster; the broker composes it. Log
//! compaction (`log/compact.rs`) rewrites sealed segments in the background.

pub mod batch;
mod cache;
pub mod config;
mod epochs;
mod error;
mod file;
mod index;
mod log;
pub mod producer;
mod records;
mod segment;
pub mod stats;
pub mod testing;
mod varint;

pub use cache::CacheBudget;
pub use config::{CleanupPolicy, ConfigError, FsyncPolicy, LogConfig};
pub use error::StorageError;
pub use file::{probe_direct_io, Faults, BLOCK_BYTES};
pub use log::{
    AppendInfo, CompactionOutcome, LogStats, PartitionLog, ReadBatches, RetentionOutcome,
    TimestampOffset,
};
pub use producer::{ProducerEntry, SequenceError};
