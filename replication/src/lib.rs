//! Replication: the per-partition leader/follower state machine with ISR,
//! high watermark and leader epochs (`replica`), the leader-epoch cache
//! that finds where two logs diverge (`epochs`), and the controller's
//! partition-state rules (`partition_state`). All three are pure state
//! machines (no I/O, time passed in) so that a seeded simulation can drive
//! them through message loss, partitions and crashes; `log_replica` joins a
//! replica to its storage log, and the broker drives it over its links.
//!
//! `controller` is the controller quorum: cluster metadata (nodes, topics,
//! partition states) as a replicated log run by openraft on glommio, with
//! its runtime adapter, storage and an in-process network for tests.

pub mod controller;
pub mod epochs;
pub mod log_replica;
pub mod partition_state;
pub mod replica;

/// A node (broker) id.
pub type NodeId = u32;
/// A log offset.
pub type Offset = i64;
/// A leader epoch.
pub type Epoch = i32;
