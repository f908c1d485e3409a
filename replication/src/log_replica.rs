//! One partition replica over its log: the `Replica` state machine joined
//! to a storage `PartitionLog`, so that what the state machine decides is
//! done to the log and what the log did is told to the state machine.
//!
//! - A leader appends with its epoch stamped (`append_as_leader`) and
//!   serves followers' fetches from its log (`serve_fetch`): records from
//!   the fetch offset, or where the follower's last epoch ends when its log
//!   diverges.
//! - A follower applies the answer (`apply_fetched`): truncates where it
//!   diverges, appends the leader's batches with their offsets and epochs
//!   (`append_as_follower`), and takes the leader's high watermark.
//!
//! Frames between nodes are `net::link` messages; this module works on
//! their per-partition parts, so the link driver only routes them.
//!
//! A replica is shared by the tasks of its shard (producers, the link
//! serving followers, the follower's fetch loop, metadata changes), so its
//! state sits in a `RefCell` that is never borrowed across an await: each
//! step reads or updates the state, awaits the log, then updates it again
//! from what the log did. The log's epoch fence keeps an append that was
//! waiting while leadership moved from landing under a stale epoch.

use std::cell::{Ref, RefCell};

use net::link::{PartitionFetch, PartitionFetched};
use storage::{batch, AppendInfo, PartitionLog, StorageError};

use crate::epochs::EpochCache;
use crate::partition_state::PartitionState;
use crate::replica::{AlterIsr, FetchAnswer, FetchError, FetchRequest, Replica, ReplicaConfig};
use crate::{NodeId, Offset};

/// Kafka error codes a fetch answer carries.
const NONE: i16 = 0;
const OFFSET_OUT_OF_RANGE: i16 = 1;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const FENCED_LEADER_EPOCH: i16 = 74;
const UNKNOWN_LEADER_EPOCH: i16 = 75;

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("this replica does not lead the partition")]
    NotLeader,
    #[error("the leader answered with error code {0}")]
    Leader(i16),
    #[error("the leader sent a malformed batch: {0}")]
    BadBatch(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A partition replica: its state machine and its log.
pub struct LogReplica {
    pub topic: String,
    pub partition: i32,
    replica: RefCell<Replica>,
    log: PartitionLog,
    /// Held by a follower's whole apply of a fetch answer and by role
    /// changes: a role change in the middle of a follower append or
    /// truncation would see a log end that is about to change and lose
    /// the new epoch's start from the epoch cache.
    io: glommio::sync::Semaphore,
}

impl LogReplica {
    /// The replica over an opened log: its offsets and leader epochs are
    /// read from the log; it follows nobody until `apply`.
    pub fn new(
        topic: String,
        partition: i32,
        id: NodeId,
        config: ReplicaConfig,
        log: PartitionLog,
    ) -> LogReplica {
        let mut epochs = EpochCache::new();
        for (epoch, start) in log.leader_epochs() {
            epochs.assign(epoch, start);
        }
        let replica = Replica::recover(
            id,
            config,
            log.log_start_offset(),
            log.log_end_offset(),
            epochs,
            0,
        );
        LogReplica {
            topic,
            partition,
            replica: RefCell::new(replica),
            log,
            io: glommio::sync::Semaphore::new(1),
        }
    }

    pub fn replica(&self) -> Ref<'_, Replica> {
        self.replica.borrow()
    }

    pub fn log(&self) -> &PartitionLog {
        &self.log
    }

    /// Applies the controller's state once no follower I/O is under way.
    pub async fn apply_state(&self, state: &PartitionState, now_ms: u64) {
        let _io = self.io.acquire_permit(1).await;
        self.apply(state, now_ms);
    }

    /// Applies the controller's state for this partition (the caller
    /// makes sure no follower I/O is under way: `apply_state`).
    pub fn apply(&self, state: &PartitionState, now_ms: u64) {
        let mut replica = self.replica.borrow_mut();
        // Appends assigned offsets but not yet answered belong to the old
        // role: a new epoch starts after them.
        replica.observe_log_end(self.log.next_offset());
        replica.apply(state, now_ms);
        let fence = replica.is_leader().then(|| replica.leader_epoch());
        // A follower's log takes no leader appends at all: -1 is no epoch.
        self.log.set_epoch_fence(Some(fence.unwrap_or(-1)));
    }

    /// Time passes on a leader: the ISR change it calls for, if any.
    pub fn tick(&self, now_ms: u64) -> Option<AlterIsr> {
        let mut replica = self.replica.borrow_mut();
        replica.observe_log_start(self.log.log_start_offset());
        replica.tick(now_ms)
    }

    pub fn on_alter_accepted(&self, change: &AlterIsr) {
        self.replica.borrow_mut().on_alter_accepted(change);
    }

    pub fn on_alter_refused(&self, change: &AlterIsr) {
        self.replica.borrow_mut().on_alter_refused(change);
    }

    /// Appends a producer's batch as leader. The high watermark moves once
    /// the followers have it (`serve_fetch`).
    pub async fn append_as_leader(&self, batch_bytes: &[u8]) -> Result<AppendInfo, ReplicaError> {
        let epoch = {
            let replica = self.replica.borrow();
            if !replica.is_leader() {
                return Err(ReplicaError::NotLeader);
            }
            replica.leader_epoch()
        };
        let info = self.log.append_as_leader(batch_bytes, epoch).await?;
        // What is readable now (this append and any before it) counts for
        // the high watermark.
        self.replica
            .borrow_mut()
            .leader_appended(self.log.log_end_offset());
        Ok(info)
    }

    /// The fetch this follower sends next, with the leader to send it to.
    pub fn next_fetch(&self, max_bytes: u32) -> Option<(NodeId, PartitionFetch)> {
        let (leader, req) = self.replica.borrow().next_fetch()?;
        Some((
            leader,
            PartitionFetch {
                topic: self.topic.clone(),
                partition: self.partition,
                leader_epoch: req.leader_epoch,
                fetch_offset: req.fetch_offset,
                last_fetched_epoch: req.last_fetched_epoch.unwrap_or(-1),
                max_bytes,
            },
        ))
    }

    /// The leader answers a follower's fetch from its log; the ISR change
    /// the fetch calls for, if any, is to be sent to the controller.
    pub async fn serve_fetch(
        &self,
        from: NodeId,
        req: &PartitionFetch,
        now_ms: u64,
    ) -> Result<(PartitionFetched, Option<AlterIsr>), ReplicaError> {
        let request = FetchRequest {
            replica: from,
            leader_epoch: req.leader_epoch,
            fetch_offset: req.fetch_offset,
            last_fetched_epoch: (req.last_fetched_epoch >= 0).then_some(req.last_fetched_epoch),
        };
        let (answer, alter, high_watermark) = {
            let mut replica = self.replica.borrow_mut();
            replica.observe_log_start(self.log.log_start_offset());
            let (answer, alter) = replica.on_fetch(request, now_ms);
            (answer, alter, replica.high_watermark())
        };
        let mut out = PartitionFetched {
            topic: self.topic.clone(),
            partition: self.partition,
            error_code: NONE,
            high_watermark,
            log_start_offset: self.log.log_start_offset(),
            diverging: None,
            records: Vec::new(),
        };
        match answer {
            FetchAnswer::Records {
                from,
                to,
                high_watermark,
            } => {
                out.high_watermark = high_watermark;
                if to > from {
                    let read = self.log.read(from, req.max_bytes.max(1) as usize).await?;
                    for chunk in &read.chunks {
                        out.records.extend_from_slice(chunk);
                    }
                }
            }
            FetchAnswer::Diverging {
                epoch,
                end_offset,
                high_watermark,
            } => {
                out.high_watermark = high_watermark;
                out.diverging = Some((epoch.unwrap_or(-1), end_offset));
            }
            FetchAnswer::Error(e) => {
                out.error_code = match e {
                    FetchError::NotLeader => NOT_LEADER_OR_FOLLOWER,
                    FetchError::FencedLeaderEpoch => FENCED_LEADER_EPOCH,
                    FetchError::UnknownLeaderEpoch => UNKNOWN_LEADER_EPOCH,
                    FetchError::OffsetOutOfRange { log_start } => {
                        out.log_start_offset = log_start;
                        OFFSET_OUT_OF_RANGE
                    }
                };
            }
        }
        Ok((out, alter))
    }

    /// A follower applies its leader's answer. Stale answers (asked at
    /// another offset or epoch) are ignored by the caller matching them.
    /// `epoch` is the leader epoch the fetch was sent in: an answer that
    /// arrives after this replica moved on to another epoch is dropped.
    pub async fn apply_fetched(
        &self,
        epoch: i32,
        reply: &PartitionFetched,
    ) -> Result<(), ReplicaError> {
        let _io = self.io.acquire_permit(1).await;
        let current = || {
            let r = self.replica.borrow();
            !r.is_leader() && r.leader_epoch() == epoch
        };
        if !current() {
            return Err(ReplicaError::NotLeader);
        }
        match reply.error_code {
            NONE => {}
            OFFSET_OUT_OF_RANGE => {
                // Everything here is below the leader's log: start over
                // where it starts.
                self.log.truncate_to(self.log.log_start_offset()).await?;
                self.replica.borrow_mut().reset_to(reply.log_start_offset);
                return Err(ReplicaError::Leader(reply.error_code));
            }
            code => return Err(ReplicaError::Leader(code)),
        }
        if let Some((epoch, end_offset)) = reply.diverging {
            let epoch = (epoch >= 0).then_some(epoch);
            let to = self.replica.borrow_mut().truncation_for(epoch, end_offset);
            if let Some(to) = to {
                let end = self.log.truncate_to(to).await?;
                // A batch straddling `to` goes whole.
                self.replica.borrow_mut().truncated_to(end);
            }
            self.replica
                .borrow_mut()
                .follower_high_watermark(reply.high_watermark);
            return Ok(());
        }
        let mut records: &[u8] = &reply.records;
        while !records.is_empty() {
            let size = batch::peek_batch_size(records)
                .filter(|&s| s <= records.len())
                .ok_or_else(|| ReplicaError::BadBatch("a truncated batch".into()))?;
            let (one, rest) = records.split_at(size);
            records = rest;
            let header = batch::validate(one).map_err(|e| ReplicaError::BadBatch(e.to_string()))?;
            if header.next_offset() <= self.replica.borrow().log_end() {
                continue; // already here (a repeated answer)
            }
            if !current() {
                return Err(ReplicaError::NotLeader);
            }
            let info = self.log.append_as_follower(one).await?;
            self.replica.borrow_mut().follower_appended_batch(
                info.base_offset,
                header.partition_leader_epoch,
                info.last_offset + 1,
            );
        }
        self.replica
            .borrow_mut()
            .follower_high_watermark(reply.high_watermark);
        // The leader's log start moved (retention, DeleteRecords): so does
        // this copy's, as in Kafka, so that deleted records stay deleted.
        let start = reply.log_start_offset;
        if start > self.log.log_start_offset() && start <= self.log.log_end_offset() {
            self.log.delete_records_before(start).await?;
            self.replica.borrow_mut().observe_log_start(start);
        }
        Ok(())
    }

    /// The replica's end as the state machine sees it, for checks.
    pub fn log_end(&self) -> Offset {
        self.replica.borrow().log_end()
    }

    pub fn high_watermark(&self) -> Offset {
        self.replica.borrow().high_watermark()
    }

    pub fn is_leader(&self) -> bool {
        self.replica.borrow().is_leader()
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.replica.borrow().leader()
    }

    pub fn leader_epoch(&self) -> i32 {
        self.replica.borrow().leader_epoch()
    }

    /// Kafka's OffsetForLeaderEpoch on the leader: the largest epoch at
    /// most `epoch` in this log and where it ends, as (error code, epoch,
    /// end offset); -1, -1 when every epoch here is newer. A client's
    /// `current_leader_epoch` (-1: not given) older than this leader's is
    /// FENCED_LEADER_EPOCH, a newer one UNKNOWN_LEADER_EPOCH.
    pub fn epoch_end(&self, current_leader_epoch: i32, epoch: i32) -> (i16, i32, i64) {
        let r = self.replica.borrow();
        if !r.is_leader() {
            return (NOT_LEADER_OR_FOLLOWER, -1, -1);
        }
        if current_leader_epoch >= 0 && current_leader_epoch < r.leader_epoch() {
            return (FENCED_LEADER_EPOCH, -1, -1);
        }
        if current_leader_epoch > r.leader_epoch() {
            return (UNKNOWN_LEADER_EPOCH, -1, -1);
        }
        match r.epochs().end_offset_for(epoch, r.log_end()) {
            Some((found, end)) => (NONE, found, end),
            None => (NONE, -1, -1),
        }
    }

    /// The ISR as this leader counts it (None on a follower).
    pub fn isr(&self) -> Option<Vec<NodeId>> {
        self.replica.borrow().isr()
    }
}
