//! The controller's record of one partition (replicas, leader, leader
//! epoch, ISR, partition epoch) and the rules that change it, as pure
//! functions: the controller quorum applies them to its replicated state,
//! the simulation applies them to its model of it. Kafka's KRaft rules:
//!
//! - A leader changes the ISR with AlterPartition, a compare-and-set on the
//!   leader epoch and the partition epoch; members it adds must be live.
//! - A fenced node leaves every ISR it is in (unless it is the last member,
//!   which stays so that the partition can come back cleanly), and a fenced
//!   leader is replaced by a live ISR member; with none, the partition is
//!   offline (no leader) until an ISR member returns, or, with unclean
//!   election allowed, any live replica takes it (losing what it lacks).
//! - Every leader change bumps the leader epoch; every change bumps the
//!   partition epoch.

use serde::{Deserialize, Serialize};

use crate::{Epoch, NodeId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Assigned replicas, preferred leader first.
    pub replicas: Vec<NodeId>,
    pub leader: Option<NodeId>,
    pub leader_epoch: Epoch,
    /// In-sync replicas, in replica order.
    pub isr: Vec<NodeId>,
    pub partition_epoch: i32,
}

/// Why an AlterPartition was refused (Kafka's error names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlterError {
    /// The sender is not the leader of the epoch it names.
    FencedLeaderEpoch,
    /// The partition changed since the sender's view (partition epoch).
    InvalidUpdateVersion,
    /// The new ISR names a fenced node or a node that is not a replica.
    IneligibleReplica,
    /// The new ISR leaves out the leader.
    InvalidRequest,
}

/// Why a leader election was not made (Kafka's error names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectError {
    /// The partition already has the leader asked for.
    NotNeeded,
    /// No replica that may lead is live (and in sync, for a preferred one).
    NotAvailable,
}

impl PartitionState {
    /// A new partition: the first live replica leads, the live replicas
    /// are in sync. `None` when no replica is live.
    pub fn new(replicas: Vec<NodeId>, live: impl Fn(NodeId) -> bool) -> Option<PartitionState> {
        let isr: Vec<NodeId> = replicas.iter().copied().filter(|&r| live(r)).collect();
        let leader = *isr.first()?;
        Some(PartitionState {
            replicas,
            leader: Some(leader),
            leader_epoch: 0,
            isr,
            partition_epoch: 0,
        })
    }

    /// Applies a leader's AlterPartition.
    pub fn alter_isr(
        &mut self,
        from: NodeId,
        leader_epoch: Epoch,
        partition_epoch: i32,
        new_isr: &[NodeId],
        live: impl Fn(NodeId) -> bool,
    ) -> Result<(), AlterError> {
        if self.leader != Some(from) || self.leader_epoch != leader_epoch {
            return Err(AlterError::FencedLeaderEpoch);
        }
        if self.partition_epoch != partition_epoch {
            return Err(AlterError::InvalidUpdateVersion);
        }
        if !new_isr.contains(&from) {
            return Err(AlterError::InvalidRequest);
        }
        let added_ok = new_isr
            .iter()
            .all(|&n| self.replicas.contains(&n) && (self.isr.contains(&n) || live(n)));
        if !added_ok {
            return Err(AlterError::IneligibleReplica);
        }
        self.isr = self.in_replica_order(new_isr);
        self.partition_epoch += 1;
        Ok(())
    }

    /// `node` stopped heartbeating. Returns whether the state changed.
    pub fn on_fenced(
        &mut self,
        node: NodeId,
        live: impl Fn(NodeId) -> bool,
        unclean: bool,
    ) -> bool {
        let mut changed = false;
        if self.isr.contains(&node) && self.isr.len() > 1 {
            self.isr.retain(|&n| n != node);
            changed = true;
        }
        if self.leader == Some(node) {
            let next = self.isr.iter().copied().find(|&n| n != node && live(n));
            match next {
                Some(n) => self.leader = Some(n),
                None if unclean => match self
                    .replicas
                    .iter()
                    .copied()
                    .find(|&n| n != node && live(n))
                {
                    Some(n) => {
                        self.leader = Some(n);
                        self.isr = vec![n];
                    }
                    None => self.leader = None,
                },
                None => self.leader = None,
            }
            self.leader_epoch += 1;
            changed = true;
        }
        if changed {
            self.partition_epoch += 1;
        }
        changed
    }

    /// `node` heartbeats again: an offline partition whose ISR holds it
    /// gets it as leader (or, with unclean election, any live replica).
    pub fn on_unfenced(&mut self, node: NodeId, unclean: bool) -> bool {
        if self.leader.is_some() || !self.replicas.contains(&node) {
            return false;
        }
        if self.isr.contains(&node) {
            self.leader = Some(node);
        } else if unclean {
            self.leader = Some(node);
            self.isr = vec![node];
        } else {
            return false;
        }
        self.leader_epoch += 1;
        self.partition_epoch += 1;
        true
    }

    /// Moves leadership to the preferred replica (the first) when it is
    /// live and in sync and does not lead already.
    pub fn elect_preferred(&mut self, live: impl Fn(NodeId) -> bool) -> Result<(), ElectError> {
        let preferred = *self.replicas.first().ok_or(ElectError::NotAvailable)?;
        if self.leader == Some(preferred) {
            return Err(ElectError::NotNeeded);
        }
        if !live(preferred) || !self.isr.contains(&preferred) {
            return Err(ElectError::NotAvailable);
        }
        self.leader = Some(preferred);
        self.leader_epoch += 1;
        self.partition_epoch += 1;
        Ok(())
    }

    /// A partition without a leader takes any live replica, losing what
    /// it lacks (an operator's unclean election).
    pub fn elect_unclean(&mut self, live: impl Fn(NodeId) -> bool) -> Result<(), ElectError> {
        if self.leader.is_some() {
            return Err(ElectError::NotNeeded);
        }
        let pick = self
            .isr
            .iter()
            .chain(self.replicas.iter())
            .copied()
            .find(|&n| live(n))
            .ok_or(ElectError::NotAvailable)?;
        self.leader = Some(pick);
        if !self.isr.contains(&pick) {
            self.isr = vec![pick];
        }
        self.leader_epoch += 1;
        self.partition_epoch += 1;
        Ok(())
    }

    fn in_replica_order(&self, nodes: &[NodeId]) -> Vec<NodeId> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| nodes.contains(r))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_live(_: NodeId) -> bool {
        true
    }

    #[test]
    fn alter_partition_is_a_compare_and_set() {
        let mut p = PartitionState::new(vec![1, 2, 3], all_live).expect("live");
        assert_eq!((p.leader, p.isr.clone()), (Some(1), vec![1, 2, 3]));
        assert_eq!(
            p.alter_isr(2, 0, 0, &[2], all_live),
            Err(AlterError::FencedLeaderEpoch)
        );
        assert_eq!(
            p.alter_isr(1, 0, 5, &[1], all_live),
            Err(AlterError::InvalidUpdateVersion)
        );
        assert_eq!(
            p.alter_isr(1, 0, 0, &[2, 3], all_live),
            Err(AlterError::InvalidRequest)
        );
        assert_eq!(p.alter_isr(1, 0, 0, &[3, 1], all_live), Ok(()));
        assert_eq!((p.isr.clone(), p.partition_epoch), (vec![1, 3], 1));
        // Adding a fenced node, or one that is not a replica, is refused.
        assert_eq!(
            p.alter_isr(1, 0, 1, &[1, 2, 3], |n| n != 2),
            Err(AlterError::IneligibleReplica)
        );
        assert_eq!(
            p.alter_isr(1, 0, 1, &[1, 3, 4], all_live),
            Err(AlterError::IneligibleReplica)
        );
        // The same request again is stale.
        assert_eq!(
            p.alter_isr(1, 0, 0, &[1, 3], all_live),
            Err(AlterError::InvalidUpdateVersion)
        );
    }

    #[test]
    fn fencing_moves_leadership_within_the_isr_only() {
        let mut p = PartitionState::new(vec![1, 2, 3], all_live).expect("live");
        p.alter_isr(1, 0, 0, &[1, 2], all_live).expect("shrink");
        // 1 fenced: 2 is in the ISR and live.
        assert!(p.on_fenced(1, |n| n != 1, false));
        assert_eq!(
            (p.leader, p.leader_epoch, p.isr.clone()),
            (Some(2), 1, vec![2])
        );
        // 2 fenced: it is the last ISR member; 3 is live but not in sync.
        assert!(p.on_fenced(2, |n| n == 3, false));
        assert_eq!(
            (p.leader, p.leader_epoch, p.isr.clone()),
            (None, 2, vec![2])
        );
        assert!(!p.on_unfenced(3, false), "3 lacks acknowledged records");
        assert!(p.on_unfenced(2, false));
        assert_eq!((p.leader, p.leader_epoch), (Some(2), 3));
        // A follower's fencing only shrinks the ISR.
        let mut p = PartitionState::new(vec![1, 2, 3], all_live).expect("live");
        assert!(p.on_fenced(3, |n| n != 3, false));
        assert_eq!(
            (p.leader, p.leader_epoch, p.isr.clone()),
            (Some(1), 0, vec![1, 2])
        );
        assert!(!p.on_fenced(3, |n| n != 3, false));
    }

    #[test]
    fn preferred_election_needs_the_first_replica_live_and_in_sync() {
        let mut p = PartitionState::new(vec![1, 2, 3], all_live).expect("live");
        assert_eq!(p.elect_preferred(all_live), Err(ElectError::NotNeeded));
        assert!(p.on_fenced(1, |n| n != 1, false));
        assert_eq!(p.leader, Some(2));
        assert_eq!(p.elect_preferred(|n| n != 1), Err(ElectError::NotAvailable));
        p.alter_isr(2, 1, p.partition_epoch, &[1, 2, 3], all_live)
            .expect("1 back in sync");
        let epoch = p.leader_epoch;
        assert_eq!(p.elect_preferred(all_live), Ok(()));
        assert_eq!((p.leader, p.leader_epoch), (Some(1), epoch + 1));
        // Unclean: only without a leader.
        assert_eq!(p.elect_unclean(all_live), Err(ElectError::NotNeeded));
        p.alter_isr(1, p.leader_epoch, p.partition_epoch, &[1], all_live)
            .expect("shrink");
        assert!(p.on_fenced(1, |n| n == 3, false));
        assert_eq!(p.leader, None);
        assert_eq!(p.elect_unclean(|n| n == 3), Ok(()));
        assert_eq!((p.leader, p.isr.clone()), (Some(3), vec![3]));
    }

    #[test]
    fn unclean_election_takes_any_live_replica() {
        let mut p = PartitionState::new(vec![1, 2, 3], all_live).expect("live");
        p.alter_isr(1, 0, 0, &[1], all_live).expect("shrink");
        assert!(p.on_fenced(1, |n| n == 3, true));
        assert_eq!((p.leader, p.isr.clone()), (Some(3), vec![3]));
        assert!(PartitionState::new(vec![1, 2], |_| false).is_none());
    }
}
