//! One partition replica's replication state, as a state machine without
//! I/O: the log is seen only through its offsets and epochs (the driver
//! appends and truncates the real log when told to), time is passed in,
//! and what must be sent (fetches, ISR changes) is returned.
//!
//! Kafka's protocol, with KRaft's ISR rules:
//! - The leader stamps its epoch on what it appends and records where each
//!   epoch starts (`EpochCache`). A follower fetches from its log end with
//!   the epoch of its last record; the leader answers with records, or with
//!   the point where that epoch ends in its own log when the follower's log
//!   diverges there (KIP-320's diverging epoch), and the follower truncates
//!   to it and fetches again.
//! - The high watermark is the smallest log end among the leader and the
//!   ISR members, counting members the leader is adding before the
//!   controller confirms them (KIP-497's maximal ISR), so that whatever ISR
//!   the controller ends up with holds every record below it.
//! - A follower joins the ISR when it has caught up to the high watermark
//!   and into the leader's epoch; an ISR member that has not caught up to
//!   the leader's log end for `lag_time_max_ms` is dropped. Both go through
//!   the controller (AlterPartition); one change is in flight at a time and
//!   is re-sent until the controller's answer or a newer partition state
//!   arrives.

use std::collections::{BTreeMap, BTreeSet};

use crate::epochs::EpochCache;
use crate::partition_state::PartitionState;
use crate::{Epoch, NodeId, Offset};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// `replica.lag.time.max.ms`.
    pub lag_time_max_ms: u64,
    /// How long an unanswered AlterPartition waits before it is re-sent.
    pub alter_retry_ms: u64,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            lag_time_max_ms: 30_000,
            alter_retry_ms: 1_000,
        }
    }
}

/// A follower's fetch, as the leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchRequest {
    pub replica: NodeId,
    /// The leader epoch the follower believes current.
    pub leader_epoch: Epoch,
    /// The follower's log end offset.
    pub fetch_offset: Offset,
    /// The epoch of the follower's last record (None: an empty log).
    pub last_fetched_epoch: Option<Epoch>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchError {
    /// The receiver does not lead this partition.
    NotLeader,
    /// The follower's epoch is older than the leader's.
    FencedLeaderEpoch,
    /// The follower's epoch is newer than the leader's: the leader has not
    /// learned of it yet.
    UnknownLeaderEpoch,
    /// The fetch offset is outside the leader's log; it starts here.
    OffsetOutOfRange { log_start: Offset },
}

/// The leader's answer to a fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchAnswer {
    /// The records in `[from, to)` follow (the driver may send fewer, a
    /// prefix of whole batches).
    Records {
        from: Offset,
        to: Offset,
        high_watermark: Offset,
    },
    /// The follower's last epoch ends at `end_offset` here (as `epoch`, the
    /// largest epoch at most the follower's that the leader holds).
    Diverging {
        epoch: Option<Epoch>,
        end_offset: Offset,
        high_watermark: Offset,
    },
    Error(FetchError),
}

/// An ISR change to send to the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterIsr {
    pub leader_epoch: Epoch,
    pub partition_epoch: i32,
    pub isr: Vec<NodeId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    /// The follower's log end, once a fetch has shown it to agree with
    /// this leader's log.
    log_end: Option<Offset>,
    /// When the follower last had everything this leader had.
    caught_up_ms: u64,
    /// The leader's log end and the time of the follower's previous fetch.
    last_fetch_leader_end: Offset,
    last_fetch_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Leading {
    replicas: Vec<NodeId>,
    isr: BTreeSet<NodeId>,
    /// An AlterPartition in flight: the ISR asked for, and when.
    pending: Option<(BTreeSet<NodeId>, u64)>,
    progress: BTreeMap<NodeId, Progress>,
    /// Where this leader's epoch starts in its log.
    epoch_start: Offset,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    Leader(Leading),
    Follower { leader: Option<NodeId> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub id: NodeId,
    config: ReplicaConfig,
    /// The leader epoch and partition epoch of the partition state this
    /// replica last applied (-1: none yet).
    leader_epoch: Epoch,
    partition_epoch: i32,
    role: Role,
    log_start: Offset,
    log_end: Offset,
    high_watermark: Offset,
    epochs: EpochCache,
}

impl Replica {
    /// A replica over a log as recovered from disk: its start and end and
    /// epochs, and the high watermark last checkpointed (clamped to the
    /// log). It follows nobody until it learns the partition state.
    pub fn recover(
        id: NodeId,
        config: ReplicaConfig,
        log_start: Offset,
        log_end: Offset,
        epochs: EpochCache,
        high_watermark: Offset,
    ) -> Replica {
        Replica {
            id,
            config,
            leader_epoch: -1,
            partition_epoch: -1,
            role: Role::Follower { leader: None },
            log_start,
            log_end,
            high_watermark: high_watermark.clamp(log_start, log_end),
            epochs,
        }
    }

    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader(_))
    }

    pub fn leader(&self) -> Option<NodeId> {
        match &self.role {
            Role::Leader(_) => Some(self.id),
            Role::Follower { leader } => *leader,
        }
    }

    pub fn leader_epoch(&self) -> Epoch {
        self.leader_epoch
    }

    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }

    pub fn log_end(&self) -> Offset {
        self.log_end
    }

    pub fn log_start(&self) -> Offset {
        self.log_start
    }

    pub fn epochs(&self) -> &EpochCache {
        &self.epochs
    }

    /// The ISR as the controller last confirmed it (leaders only).
    pub fn isr(&self) -> Option<Vec<NodeId>> {
        match &self.role {
            Role::Leader(l) => Some(l.isr.iter().copied().collect()),
            Role::Follower { .. } => None,
        }
    }

    /// Applies the controller's partition state. Older states are ignored;
    /// a new leader epoch makes this replica lead or follow; the same epoch
    /// with a newer partition epoch updates the leader's ISR.
    pub fn apply(&mut self, state: &PartitionState, now_ms: u64) {
        let newer_epoch = state.leader_epoch > self.leader_epoch;
        let same_epoch_newer =
            state.leader_epoch == self.leader_epoch && state.partition_epoch > self.partition_epoch;
        if !newer_epoch && !same_epoch_newer {
            return;
        }
        self.partition_epoch = state.partition_epoch;
        if !newer_epoch {
            if let Role::Leader(l) = &mut self.role {
                l.isr = state.isr.iter().copied().collect();
                l.replicas = state.replicas.clone();
                l.pending = None;
                self.advance_high_watermark();
            }
            return;
        }
        self.leader_epoch = state.leader_epoch;
        if state.leader == Some(self.id) {
            // The new epoch starts at the log end, before any record of it.
            self.epochs.assign(self.leader_epoch, self.log_end);
            let progress = state
                .replicas
                .iter()
                .filter(|&&r| r != self.id)
                .map(|&r| {
                    (
                        r,
                        Progress {
                            log_end: None,
                            caught_up_ms: now_ms,
                            last_fetch_leader_end: self.log_end,
                            last_fetch_ms: now_ms,
                        },
                    )
                })
                .collect();
            self.role = Role::Leader(Leading {
                replicas: state.replicas.clone(),
                isr: state.isr.iter().copied().collect(),
                pending: None,
                progress,
                epoch_start: self.log_end,
            });
            self.advance_high_watermark();
        } else {
            self.role = Role::Follower {
                leader: state.leader,
            };
        }
    }

    /// The leader appends `count` records; returns their base offset and
    /// the epoch to stamp on them.
    pub fn append(&mut self, count: i64) -> Option<(Offset, Epoch)> {
        if !self.is_leader() || count <= 0 {
            return None;
        }
        let base = self.log_end;
        self.log_end += count;
        self.advance_high_watermark();
        Some((base, self.leader_epoch))
    }

    /// The driver's log really ends at `end` (appends answered before a
    /// role change; the log is the truth): the replica takes it.
    pub fn observe_log_end(&mut self, end: Offset) {
        if end != self.log_end {
            if end < self.log_end {
                self.truncate_to(end);
            } else {
                self.log_end = end;
            }
            self.advance_high_watermark();
        }
    }

    /// Retention or DeleteRecords moved the log's start.
    pub fn observe_log_start(&mut self, start: Offset) {
        if start > self.log_start {
            self.log_start = start;
            self.high_watermark = self.high_watermark.max(start.min(self.log_end));
        }
    }

    /// A leader's appends are readable up to `end`.
    pub fn leader_appended(&mut self, end: Offset) {
        if self.is_leader() && end > self.log_end {
            self.log_end = end;
            self.advance_high_watermark();
        }
    }

    /// The leader answers a follower's fetch, updating what it knows of
    /// the follower; may return an ISR expansion to send.
    pub fn on_fetch(&mut self, req: FetchRequest, now_ms: u64) -> (FetchAnswer, Option<AlterIsr>) {
        let hw = self.high_watermark;
        let Role::Leader(leading) = &mut self.role else {
            return (FetchAnswer::Error(FetchError::NotLeader), None);
        };
        if req.leader_epoch < self.leader_epoch {
            return (FetchAnswer::Error(FetchError::FencedLeaderEpoch), None);
        }
        if req.leader_epoch > self.leader_epoch {
            return (FetchAnswer::Error(FetchError::UnknownLeaderEpoch), None);
        }
        let Some(progress) = leading.progress.get_mut(&req.replica) else {
            return (FetchAnswer::Error(FetchError::NotLeader), None);
        };
        if let Some(epoch) = req.last_fetched_epoch {
            let here = self.epochs.end_offset_for(epoch, self.log_end);
            let agrees = here.is_some_and(|(e, end)| e == epoch && end >= req.fetch_offset);
            if !agrees {
                let (epoch, end_offset) = match here {
                    Some((e, end)) => (Some(e), end),
                    None => (None, self.log_start),
                };
                return (
                    FetchAnswer::Diverging {
                        epoch,
                        end_offset,
                        high_watermark: hw,
                    },
                    None,
                );
            }
        }
        if req.fetch_offset < self.log_start || req.fetch_offset > self.log_end {
            return (
                FetchAnswer::Error(FetchError::OffsetOutOfRange {
                    log_start: self.log_start,
                }),
                None,
            );
        }
        // Kafka's lastCaughtUpTime: caught up now if the follower has all
        // the leader has; else as of its previous fetch if it has what the
        // leader had then.
        if req.fetch_offset >= self.log_end {
            progress.caught_up_ms = now_ms;
        } else if req.fetch_offset >= progress.last_fetch_leader_end {
            progress.caught_up_ms = progress.caught_up_ms.max(progress.last_fetch_ms);
        }
        progress.last_fetch_leader_end = self.log_end;
        progress.last_fetch_ms = now_ms;
        progress.log_end = Some(req.fetch_offset);
        let joins = !leading.isr.contains(&req.replica)
            && leading.pending.is_none()
            && req.fetch_offset >= hw
            && req.fetch_offset >= leading.epoch_start;
        let alter = joins.then(|| {
            let mut isr = leading.isr.clone();
            isr.insert(req.replica);
            leading.pending = Some((isr.clone(), now_ms));
            AlterIsr {
                leader_epoch: self.leader_epoch,
                partition_epoch: self.partition_epoch,
                isr: isr.into_iter().collect(),
            }
        });
        self.advance_high_watermark();
        let answer = FetchAnswer::Records {
            from: req.fetch_offset,
            to: self.log_end,
            high_watermark: self.high_watermark,
        };
        (answer, alter)
    }

    /// Time passes on the leader: drops ISR members that lag, re-sends an
    /// unanswered change.
    pub fn tick(&mut self, now_ms: u64) -> Option<AlterIsr> {
        let Role::Leader(leading) = &mut self.role else {
            return None;
        };
        if let Some((isr, sent)) = &mut leading.pending {
            if now_ms.saturating_sub(*sent) < self.config.alter_retry_ms {
                return None;
            }
            *sent = now_ms;
            return Some(AlterIsr {
                leader_epoch: self.leader_epoch,
                partition_epoch: self.partition_epoch,
                isr: isr.iter().copied().collect(),
            });
        }
        let lagging: Vec<NodeId> = leading
            .isr
            .iter()
            .copied()
            .filter(|&r| r != self.id)
            .filter(|r| {
                leading.progress.get(r).is_none_or(|p| {
                    now_ms.saturating_sub(p.caught_up_ms) > self.config.lag_time_max_ms
                })
            })
            .collect();
        if lagging.is_empty() {
            return None;
        }
        let isr: BTreeSet<NodeId> = leading
            .isr
            .iter()
            .copied()
            .filter(|r| !lagging.contains(r))
            .collect();
        // A shrink takes effect for the high watermark only once confirmed:
        // until then the old ISR (a superset) still counts.
        leading.pending = Some((isr.clone(), now_ms));
        Some(AlterIsr {
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            isr: isr.into_iter().collect(),
        })
    }

    /// The controller accepted this leader's AlterPartition.
    pub fn on_alter_accepted(&mut self, change: &AlterIsr) {
        if change.leader_epoch != self.leader_epoch
            || change.partition_epoch != self.partition_epoch
        {
            return;
        }
        if let Role::Leader(l) = &mut self.role {
            l.isr = change.isr.iter().copied().collect();
            l.pending = None;
            self.partition_epoch += 1;
            self.advance_high_watermark();
        }
    }

    /// The controller refused it: the newer state will arrive through
    /// `apply`; until then nothing is re-sent early.
    pub fn on_alter_refused(&mut self, change: &AlterIsr) {
        if let Role::Leader(l) = &mut self.role {
            if l.pending
                .as_ref()
                .is_some_and(|(isr, _)| isr.iter().copied().eq(change.isr.iter().copied()))
                && change.partition_epoch != self.partition_epoch
            {
                l.pending = None;
            }
        }
    }

    /// The fetch a follower sends next, to the leader it follows.
    pub fn next_fetch(&self) -> Option<(NodeId, FetchRequest)> {
        let Role::Follower {
            leader: Some(leader),
        } = self.role
        else {
            return None;
        };
        Some((
            leader,
            FetchRequest {
                replica: self.id,
                leader_epoch: self.leader_epoch,
                fetch_offset: self.log_end,
                last_fetched_epoch: self.epochs.epoch_at(self.log_end - 1),
            },
        ))
    }

    /// A follower appended a batch of `count` records of `epoch` at its
    /// log end (the driver checked that the batch starts there).
    pub fn follower_appended(&mut self, epoch: Epoch, count: i64) {
        self.follower_appended_batch(self.log_end, epoch, self.log_end + count);
    }

    /// A follower appended a batch of `epoch` from `base` (at or past its
    /// log end: a compacted leader leaves gaps) to `next`.
    pub fn follower_appended_batch(&mut self, base: Offset, epoch: Epoch, next: Offset) {
        if self.is_leader() {
            // A leader's epochs are its own; a stray follower append
            // must not truncate them.
            return;
        }
        // An epoch starting at the log end has no records (this replica led
        // it without appending): records of the leader's log replace it.
        self.epochs.truncate_to(self.log_end);
        let start = base.max(self.log_end);
        let ordered = self.epochs.assign(epoch, start);
        debug_assert!(ordered, "a leader sent epoch {epoch} after newer ones");
        self.log_end = next.max(self.log_end);
    }

    /// The log was cut at `end`, at or below where `truncation_for` asked
    /// (a batch straddling that point goes whole).
    pub fn truncated_to(&mut self, end: Offset) {
        if end < self.log_end {
            self.truncate_to(end);
        }
    }

    /// A follower learned the leader's high watermark.
    pub fn follower_high_watermark(&mut self, leader_hw: Offset) {
        if !self.is_leader() {
            self.high_watermark = self.high_watermark.max(leader_hw.min(self.log_end));
        }
    }

    /// Where a follower truncates its log after a diverging answer, or
    /// `None` when nothing needs to go. Applies the truncation to this
    /// state; the driver truncates the log to the returned offset.
    pub fn truncation_for(&mut self, epoch: Option<Epoch>, end_offset: Offset) -> Option<Offset> {
        let mine = epoch.and_then(|e| self.epochs.end_offset_for(e, self.log_end));
        let to = match mine {
            Some((_, my_end)) => my_end.min(end_offset),
            None => self.log_start,
        };
        if to >= self.log_end {
            return None;
        }
        self.truncate_to(to);
        Some(to)
    }

    /// The leader's log starts past this follower's end: everything goes.
    pub fn reset_to(&mut self, log_start: Offset) {
        self.epochs = EpochCache::new();
        self.log_start = log_start;
        self.log_end = log_start;
        self.high_watermark = log_start;
    }

    fn truncate_to(&mut self, offset: Offset) {
        self.epochs.truncate_to(offset);
        self.log_end = offset;
        self.high_watermark = self.high_watermark.min(offset);
    }

    fn advance_high_watermark(&mut self) {
        let Role::Leader(leading) = &self.role else {
            return;
        };
        let mut members: BTreeSet<NodeId> = leading.isr.clone();
        if let Some((pending, _)) = &leading.pending {
            members.extend(pending.iter().copied());
        }
        let mut hw = self.log_end;
        for m in members.iter().filter(|&&m| m != self.id) {
            match leading.progress.get(m).and_then(|p| p.log_end) {
                Some(end) => hw = hw.min(end),
                None => return,
            }
        }
        self.high_watermark = self.high_watermark.max(hw);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(leader: NodeId, epoch: Epoch, isr: &[NodeId], pe: i32) -> PartitionState {
        PartitionState {
            replicas: vec![1, 2, 3],
            leader: Some(leader),
            leader_epoch: epoch,
            isr: isr.to_vec(),
            partition_epoch: pe,
        }
    }

    fn fresh(id: NodeId) -> Replica {
        Replica::recover(id, ReplicaConfig::default(), 0, 0, EpochCache::new(), 0)
    }

    fn fetch(r: &Replica) -> FetchRequest {
        r.next_fetch().expect("a follower with a leader").1
    }

    #[test]
    fn high_watermark_waits_for_every_isr_member() {
        let s = state(1, 0, &[1, 2, 3], 0);
        let (mut l, mut f2, mut f3) = (fresh(1), fresh(2), fresh(3));
        for r in [&mut l, &mut f2, &mut f3] {
            r.apply(&s, 0);
        }
        assert_eq!(l.append(5), Some((0, 0)));
        assert_eq!(l.high_watermark(), 0, "followers not heard from yet");
        let (a, _) = l.on_fetch(fetch(&f2), 1);
        assert_eq!(
            a,
            FetchAnswer::Records {
                from: 0,
                to: 5,
                high_watermark: 0
            }
        );
        f2.follower_appended(0, 5);
        l.on_fetch(fetch(&f3), 1);
        f3.follower_appended(0, 3);
        let (a, _) = l.on_fetch(fetch(&f2), 2);
        assert_eq!(
            a,
            FetchAnswer::Records {
                from: 5,
                to: 5,
                high_watermark: 0
            }
        );
        l.on_fetch(fetch(&f3), 2);
        assert_eq!(l.high_watermark(), 3, "the slowest ISR member has 3");
    }

    #[test]
    fn a_lagging_member_is_dropped_and_rejoins_when_caught_up() {
        let cfg = ReplicaConfig {
            lag_time_max_ms: 100,
            alter_retry_ms: 50,
        };
        let mut l = Replica::recover(1, cfg, 0, 0, EpochCache::new(), 0);
        let mut f2 = Replica::recover(2, cfg, 0, 0, EpochCache::new(), 0);
        let s = state(1, 0, &[1, 2], 0);
        l.apply(&s, 0);
        f2.apply(&s, 0);
        l.append(10);
        assert_eq!(l.tick(50), None);
        let shrink = l.tick(101).expect("2 lags");
        assert_eq!(shrink.isr, vec![1]);
        assert_eq!(l.high_watermark(), 0, "unconfirmed shrink still counts 2");
        assert_eq!(l.tick(120), None, "one change in flight");
        assert_eq!(l.tick(160).expect("re-sent"), shrink);
        l.on_alter_accepted(&shrink);
        assert_eq!(l.high_watermark(), 10);
        assert_eq!(l.isr(), Some(vec![1]));
        // The follower catches up: it asks to join at the high watermark.
        let (_, alter) = l.on_fetch(fetch(&f2), 200);
        assert_eq!(alter, None, "at 0 it is below the high watermark");
        f2.follower_appended(0, 10);
        let (_, alter) = l.on_fetch(fetch(&f2), 210);
        let grow = alter.expect("joins");
        assert_eq!(grow.isr, vec![1, 2]);
        l.append(1);
        assert_eq!(l.high_watermark(), 10, "a pending member counts at once");
        l.on_alter_accepted(&grow);
        assert_eq!(l.isr(), Some(vec![1, 2]));
    }

    #[test]
    fn a_diverged_follower_truncates_to_the_leaders_epoch_end() {
        // Node 1 led epoch 0 and wrote 0..8; 2 got 0..5. Then 2 led epoch
        // 1 and wrote 5..7; 1 comes back as its follower.
        let mut e1 = EpochCache::new();
        e1.assign(0, 0);
        let mut old = Replica::recover(1, ReplicaConfig::default(), 0, 8, e1, 5);
        let mut e2 = EpochCache::new();
        e2.assign(0, 0);
        let mut leader = Replica::recover(2, ReplicaConfig::default(), 0, 5, e2, 5);
        let s = PartitionState {
            replicas: vec![1, 2],
            leader: Some(2),
            leader_epoch: 1,
            isr: vec![2],
            partition_epoch: 3,
        };
        leader.apply(&s, 0);
        old.apply(&s, 0);
        assert_eq!(leader.append(2), Some((5, 1)));
        let (a, _) = leader.on_fetch(fetch(&old), 1);
        assert_eq!(
            a,
            FetchAnswer::Diverging {
                epoch: Some(0),
                end_offset: 5,
                high_watermark: 7
            }
        );
        assert_eq!(old.truncation_for(Some(0), 5), Some(5));
        assert_eq!((old.log_end(), old.high_watermark()), (5, 5));
        let (a, alter) = leader.on_fetch(fetch(&old), 2);
        assert_eq!(
            a,
            FetchAnswer::Records {
                from: 5,
                to: 7,
                high_watermark: 7
            }
        );
        assert!(alter.is_none(), "below the high watermark still");
        old.follower_appended(1, 2);
        old.follower_high_watermark(7);
        assert_eq!(old.epochs().entries(), leader.epochs().entries());
    }

    #[test]
    fn stale_and_future_epochs_are_refused() {
        let mut l = fresh(1);
        l.apply(&state(1, 4, &[1, 2], 0), 0);
        let mut req = FetchRequest {
            replica: 2,
            leader_epoch: 3,
            fetch_offset: 0,
            last_fetched_epoch: None,
        };
        assert_eq!(
            l.on_fetch(req, 0).0,
            FetchAnswer::Error(FetchError::FencedLeaderEpoch)
        );
        req.leader_epoch = 5;
        assert_eq!(
            l.on_fetch(req, 0).0,
            FetchAnswer::Error(FetchError::UnknownLeaderEpoch)
        );
        // An older state does not undo a newer one.
        l.apply(&state(2, 3, &[1, 2], 9), 0);
        assert!(l.is_leader());
        // A newer epoch makes it a follower.
        l.apply(&state(2, 5, &[1, 2], 1), 0);
        assert_eq!((l.is_leader(), l.leader()), (false, Some(2)));
        assert_eq!(l.append(1), None);
    }
}
