//! The cluster metadata the controller quorum replicates, and the commands
//! that change it: nodes and their liveness, topics with their ids and
//! configs, and every partition's `PartitionState`. `ClusterMetadata::apply`
//! is a pure function of the state and the command (no clock, no
//! randomness, ordered maps only), so every controller that applies the
//! same log holds the same metadata.
//!
//! Liveness timing is not here: as in KRaft, the active controller tracks
//! heartbeat times in memory and proposes `FenceNode` when a node's session
//! expires; the log only records the decisions.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::partition_state::{AlterError, ElectError, PartitionState};
use crate::{Epoch, NodeId};

/// A topic id (Kafka's topic UUID, as its 128 bits). Zero is reserved.
pub type TopicId = u128;

/// Topic config that lets a partition with no live in-sync replica elect
/// any live replica, losing what it lacks.
pub const UNCLEAN_LEADER_ELECTION_CONFIG: &str = "unclean.leader.election.enable";

/// A change to the cluster metadata, as proposed to the controller quorum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A node (re)starts and announces itself; it is live from now on.
    RegisterNode {
        node_id: NodeId,
        /// The Kafka listener clients are told about (`host:port`).
        addr: String,
        shards: u32,
        /// Each shard's replication link listener, indexed by shard.
        #[serde(default)]
        link_addrs: Vec<String>,
        /// Every Kafka listener, (name, `host:port` advertised); empty
        /// from nodes that had one listener, named by `addr` alone.
        #[serde(default)]
        listeners: Vec<(String, String)>,
    },
    /// Names the cluster once: the first proposal wins, later ones are
    /// no-ops, so every node can propose the id it would like.
    SetClusterId {
        cluster_id: String,
    },
    /// A node's heartbeat that the active controller chose to record: it
    /// unfences a fenced node (the node came back and caught up).
    NodeHeartbeat {
        node_id: NodeId,
    },
    /// A node's session expired or it shut down: it leaves every ISR and
    /// loses every leadership it had.
    FenceNode {
        node_id: NodeId,
    },
    /// A fenced node is live again.
    UnfenceNode {
        node_id: NodeId,
    },
    CreateTopic {
        name: String,
        topic_id: TopicId,
        partitions: u32,
        replication_factor: u16,
        configs: BTreeMap<String, String>,
    },
    DeleteTopic {
        name: String,
    },
    /// Replaces a topic's configs (validated by the proposer).
    SetTopicConfigs {
        name: String,
        configs: BTreeMap<String, String>,
    },
    /// Grows a topic to `total` partitions.
    CreatePartitions {
        name: String,
        total: u32,
    },
    /// An operator's (or the leader balancer's) election: the preferred
    /// replica, or with `unclean` any live replica of a leaderless
    /// partition.
    ElectLeader {
        topic: String,
        partition: u32,
        unclean: bool,
    },
    /// Reserves `count` producer ids for a node's idempotent producers
    /// (KRaft's AllocateProducerIds): ids never repeat in the cluster. The
    /// block starts at `at_least` or later (ids a node handed out before
    /// the controller existed).
    AllocateProducerIds {
        node_id: NodeId,
        count: u32,
        at_least: i64,
    },
    /// Sets a user's SCRAM credential for one mechanism (KIP-554): the
    /// keys a server checks a proof with, never the password nor the
    /// salted password, which would let anyone who reads the log log in.
    UpsertScramCredential {
        user: String,
        /// Kafka's ScramMechanism type: 1 SCRAM-SHA-256, 2 SCRAM-SHA-512.
        mechanism: i8,
        credential: ScramRecord,
    },
    /// Removes a user's credential for one mechanism.
    DeleteScramCredential {
        user: String,
        mechanism: i8,
    },
    /// One user's changes of an AlterUserScramCredentials, all or none:
    /// refused whole if a deletion names a credential that is not there.
    AlterScramCredentials {
        user: String,
        /// Mechanism types whose credentials go.
        deletions: Vec<i8>,
        /// Credentials set, each of its own `mechanism`.
        upsertions: Vec<ScramRecord>,
    },
    /// Adds ACL bindings (CreateAcls), validated by the proposer; a
    /// binding already there is kept once.
    CreateAcls {
        acls: Vec<AclRecord>,
    },
    /// Removes ACL bindings (DeleteAcls): the proposer matched its filters
    /// against the bindings it saw; one no longer there is skipped.
    DeleteAcls {
        acls: Vec<AclRecord>,
    },
    /// A partition leader's ISR change (a compare-and-set on the leader
    /// epoch and the partition epoch).
    AlterPartition {
        topic: String,
        partition: u32,
        from: NodeId,
        leader_epoch: Epoch,
        partition_epoch: i32,
        new_isr: Vec<NodeId>,
    },
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::RegisterNode { node_id, addr, .. } => {
                write!(f, "RegisterNode({node_id} at {addr})")
            }
            Command::SetClusterId { cluster_id } => write!(f, "SetClusterId({cluster_id})"),
            Command::SetTopicConfigs { name, .. } => write!(f, "SetTopicConfigs({name})"),
            Command::NodeHeartbeat { node_id } => write!(f, "NodeHeartbeat({node_id})"),
            Command::FenceNode { node_id } => write!(f, "FenceNode({node_id})"),
            Command::UnfenceNode { node_id } => write!(f, "UnfenceNode({node_id})"),
            Command::CreateTopic {
                name, partitions, ..
            } => write!(f, "CreateTopic({name}, {partitions} partitions)"),
            Command::DeleteTopic { name } => write!(f, "DeleteTopic({name})"),
            Command::CreatePartitions { name, total } => {
                write!(f, "CreatePartitions({name} to {total})")
            }
            Command::AlterPartition {
                topic,
                partition,
                new_isr,
                ..
            } => write!(f, "AlterPartition({topic}-{partition}, isr {new_isr:?})"),
            Command::ElectLeader {
                topic,
                partition,
                unclean,
            } => write!(f, "ElectLeader({topic}-{partition}, unclean {unclean})"),
            Command::AllocateProducerIds { node_id, count, .. } => {
                write!(f, "AllocateProducerIds({count} for {node_id})")
            }
            Command::UpsertScramCredential {
                user, mechanism, ..
            } => write!(f, "UpsertScramCredential({user}, type {mechanism})"),
            Command::DeleteScramCredential { user, mechanism } => {
                write!(f, "DeleteScramCredential({user}, type {mechanism})")
            }
            Command::CreateAcls { acls } => write!(f, "CreateAcls({} bindings)", acls.len()),
            Command::DeleteAcls { acls } => write!(f, "DeleteAcls({} bindings)", acls.len()),
            Command::AlterScramCredentials {
                user,
                deletions,
                upsertions,
            } => write!(
                f,
                "AlterScramCredentials({user}, delete {deletions:?}, set {:?})",
                upsertions.iter().map(|u| u.mechanism).collect::<Vec<_>>()
            ),
        }
    }
}

/// What an applied command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    Done,
    /// The node's epoch is the log index of its registration (as Kafka's
    /// broker epoch is the offset of its registration record).
    NodeRegistered {
        epoch: u64,
    },
    TopicCreated {
        topic_id: TopicId,
    },
    /// The partition's state after an accepted AlterPartition.
    PartitionAltered(PartitionState),
    /// The first of the producer ids reserved.
    ProducerIds {
        first: i64,
    },
}

/// Why a command was refused. A refused command changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MetadataError {
    #[error("node {0} is not registered")]
    UnknownNode(NodeId),
    #[error("topic {0} already exists")]
    TopicExists(String),
    #[error("topic id {0:032x} is zero or already in use")]
    InvalidTopicId(TopicId),
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    #[error("unknown partition {topic}-{partition}")]
    UnknownPartition { topic: String, partition: u32 },
    #[error("{requested} partitions requested, the topic has {current}")]
    InvalidPartitions { requested: u32, current: u32 },
    #[error("replication factor {requested} with {live} live nodes")]
    InvalidReplicationFactor { requested: u16, live: usize },
    #[error("AlterPartition refused: {0:?}")]
    AlterPartition(AlterError),
    #[error("election not made: {0:?}")]
    Elect(ElectError),
    #[error("no SCRAM credential of type {mechanism} for user {user}")]
    UnknownScramCredential { user: String, mechanism: i8 },
}

/// A stored SCRAM credential (RFC 5802's server-side keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramRecord {
    pub mechanism: i8,
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

/// An ACL binding as stored, in Kafka's wire codes (resource type,
/// pattern type, operation, permission), so that the log does not depend
/// on the broker's model of them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclRecord {
    pub resource_type: i8,
    pub resource_name: String,
    pub pattern_type: i8,
    /// `User:NAME` or `User:*`.
    pub principal: String,
    /// A client address or `*`.
    pub host: String,
    pub operation: i8,
    pub permission: i8,
}

/// The answer to a command, carried back to the proposer through Raft.
pub type CommandResult = Result<Applied, MetadataError>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub addr: String,
    pub shards: u32,
    #[serde(default)]
    pub link_addrs: Vec<String>,
    /// (listener name, `host:port`), as registered.
    #[serde(default)]
    pub listeners: Vec<(String, String)>,
    pub fenced: bool,
    /// Log index of the node's latest registration.
    pub epoch: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub topic_id: TopicId,
    pub configs: BTreeMap<String, String>,
    /// Indexed by partition id.
    pub partitions: Vec<PartitionState>,
}

impl TopicRecord {
    fn unclean_election(&self) -> bool {
        self.configs
            .get(UNCLEAN_LEADER_ELECTION_CONFIG)
            .is_some_and(|v| v == "true")
    }
}

/// The applied state of the metadata log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMetadata {
    /// Empty until a `SetClusterId` applies.
    #[serde(default)]
    pub cluster_id: String,
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    pub topics: BTreeMap<String, TopicRecord>,
    /// The next producer id to hand out.
    #[serde(default)]
    pub next_producer_id: i64,
    /// Rotates where replica placement starts, topic after topic, so that
    /// leaders spread (Kafka draws this at random; a replicated state
    /// machine cannot).
    pub placement_cursor: u64,
    /// SCRAM credentials by user, one per mechanism.
    #[serde(default)]
    pub scram_credentials: BTreeMap<String, Vec<ScramRecord>>,
    /// The ACL bindings the authorizer enforces.
    #[serde(default)]
    pub acls: BTreeSet<AclRecord>,
}

impl ClusterMetadata {
    /// Whether `node` is registered and not fenced.
    pub fn is_live(&self, node: NodeId) -> bool {
        is_live(&self.nodes, node)
    }

    /// Registered, unfenced nodes in id order.
    pub fn live_nodes(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, r)| !r.fenced)
            .map(|(&id, _)| id)
            .collect()
    }

    pub fn partition(&self, topic: &str, partition: u32) -> Option<&PartitionState> {
        self.topics.get(topic)?.partitions.get(partition as usize)
    }

    /// Applies the command at log index `index`.
    pub fn apply(&mut self, index: u64, command: &Command) -> CommandResult {
        match command {
            Command::RegisterNode {
                node_id,
                addr,
                shards,
                link_addrs,
                listeners,
            } => {
                let record = self.nodes.entry(*node_id).or_insert_with(|| NodeRecord {
                    addr: String::new(),
                    shards: 0,
                    link_addrs: Vec::new(),
                    listeners: Vec::new(),
                    fenced: true,
                    epoch: 0,
                });
                record.addr.clone_from(addr);
                record.shards = *shards;
                record.link_addrs.clone_from(link_addrs);
                record.listeners.clone_from(listeners);
                record.epoch = index;
                self.unfence(*node_id);
                Ok(Applied::NodeRegistered { epoch: index })
            }
            Command::NodeHeartbeat { node_id } | Command::UnfenceNode { node_id } => {
                if !self.nodes.contains_key(node_id) {
                    return Err(MetadataError::UnknownNode(*node_id));
                }
                self.unfence(*node_id);
                Ok(Applied::Done)
            }
            Command::FenceNode { node_id } => {
                let Some(record) = self.nodes.get_mut(node_id) else {
                    return Err(MetadataError::UnknownNode(*node_id));
                };
                if record.fenced {
                    return Ok(Applied::Done);
                }
                record.fenced = true;
                let nodes = &self.nodes;
                for topic in self.topics.values_mut() {
                    let unclean = topic.unclean_election();
                    for p in &mut topic.partitions {
                        p.on_fenced(*node_id, |n| is_live(nodes, n), unclean);
                    }
                }
                Ok(Applied::Done)
            }
            Command::CreateTopic {
                name,
                topic_id,
                partitions,
                replication_factor,
                configs,
            } => {
                if let Some(existing) = self.topics.get(name) {
                    if existing.topic_id == *topic_id {
                        // A retry of a creation whose answer was lost.
                        return Ok(Applied::TopicCreated {
                            topic_id: *topic_id,
                        });
                    }
                    return Err(MetadataError::TopicExists(name.clone()));
                }
                if *topic_id == 0 || self.topics.values().any(|t| t.topic_id == *topic_id) {
                    return Err(MetadataError::InvalidTopicId(*topic_id));
                }
                if *partitions == 0 {
                    return Err(MetadataError::InvalidPartitions {
                        requested: 0,
                        current: 0,
                    });
                }
                let states = self.place(0, *partitions, *replication_factor)?;
                self.topics.insert(
                    name.clone(),
                    TopicRecord {
                        topic_id: *topic_id,
                        configs: configs.clone(),
                        partitions: states,
                    },
                );
                Ok(Applied::TopicCreated {
                    topic_id: *topic_id,
                })
            }
            Command::SetClusterId { cluster_id } => {
                if self.cluster_id.is_empty() {
                    self.cluster_id.clone_from(cluster_id);
                }
                Ok(Applied::Done)
            }
            Command::SetTopicConfigs { name, configs } => match self.topics.get_mut(name) {
                Some(topic) => {
                    topic.configs.clone_from(configs);
                    Ok(Applied::Done)
                }
                None => Err(MetadataError::UnknownTopic(name.clone())),
            },
            Command::DeleteTopic { name } => match self.topics.remove(name) {
                Some(_) => Ok(Applied::Done),
                None => Err(MetadataError::UnknownTopic(name.clone())),
            },
            Command::CreatePartitions { name, total } => {
                let Some(topic) = self.topics.get(name) else {
                    return Err(MetadataError::UnknownTopic(name.clone()));
                };
                let current = topic.partitions.len() as u32;
                if *total <= current {
                    return Err(MetadataError::InvalidPartitions {
                        requested: *total,
                        current,
                    });
                }
                let rf = topic.partitions.first().map_or(1, |p| p.replicas.len()) as u16;
                let states = self.place(current, total - current, rf)?;
                if let Some(topic) = self.topics.get_mut(name) {
                    topic.partitions.extend(states);
                }
                Ok(Applied::Done)
            }
            Command::UpsertScramCredential {
                user,
                mechanism,
                credential,
            } => {
                let credentials = self.scram_credentials.entry(user.clone()).or_default();
                let record = ScramRecord {
                    mechanism: *mechanism,
                    ..credential.clone()
                };
                match credentials.iter_mut().find(|c| c.mechanism == *mechanism) {
                    Some(c) => *c = record,
                    None => credentials.push(record),
                }
                Ok(Applied::Done)
            }
            Command::DeleteScramCredential { user, mechanism } => {
                let unknown = || MetadataError::UnknownScramCredential {
                    user: user.clone(),
                    mechanism: *mechanism,
                };
                let credentials = self.scram_credentials.get_mut(user).ok_or_else(unknown)?;
                let before = credentials.len();
                credentials.retain(|c| c.mechanism != *mechanism);
                if credentials.len() == before {
                    return Err(unknown());
                }
                if credentials.is_empty() {
                    self.scram_credentials.remove(user);
                }
                Ok(Applied::Done)
            }
            Command::CreateAcls { acls } => {
                self.acls.extend(acls.iter().cloned());
                Ok(Applied::Done)
            }
            Command::DeleteAcls { acls } => {
                for acl in acls {
                    self.acls.remove(acl);
                }
                Ok(Applied::Done)
            }
            Command::AlterScramCredentials {
                user,
                deletions,
                upsertions,
            } => {
                let stored = self.scram_credentials.get(user);
                if let Some(&missing) = deletions
                    .iter()
                    .find(|&&m| !stored.is_some_and(|c| c.iter().any(|c| c.mechanism == m)))
                {
                    return Err(MetadataError::UnknownScramCredential {
                        user: user.clone(),
                        mechanism: missing,
                    });
                }
                let credentials = self.scram_credentials.entry(user.clone()).or_default();
                credentials.retain(|c| !deletions.contains(&c.mechanism));
                for record in upsertions {
                    match credentials
                        .iter_mut()
                        .find(|c| c.mechanism == record.mechanism)
                    {
                        Some(c) => *c = record.clone(),
                        None => credentials.push(record.clone()),
                    }
                }
                if credentials.is_empty() {
                    self.scram_credentials.remove(user);
                }
                Ok(Applied::Done)
            }
            Command::AllocateProducerIds {
                node_id,
                count,
                at_least,
            } => {
                if !self.nodes.contains_key(node_id) {
                    return Err(MetadataError::UnknownNode(*node_id));
                }
                let first = self.next_producer_id.max(*at_least).max(0);
                self.next_producer_id = first.saturating_add(i64::from(*count));
                Ok(Applied::ProducerIds { first })
            }
            Command::ElectLeader {
                topic,
                partition,
                unclean,
            } => {
                let nodes = &self.nodes;
                let p = self
                    .topics
                    .get_mut(topic)
                    .and_then(|t| t.partitions.get_mut(*partition as usize))
                    .ok_or_else(|| MetadataError::UnknownPartition {
                        topic: topic.clone(),
                        partition: *partition,
                    })?;
                let live = |n| is_live(nodes, n);
                let elected = if *unclean {
                    p.elect_unclean(live)
                } else {
                    p.elect_preferred(live)
                };
                elected.map_err(MetadataError::Elect)?;
                Ok(Applied::PartitionAltered(p.clone()))
            }
            Command::AlterPartition {
                topic,
                partition,
                from,
                leader_epoch,
                partition_epoch,
                new_isr,
            } => {
                let nodes = &self.nodes;
                let Some(t) = self.topics.get_mut(topic) else {
                    return Err(MetadataError::UnknownTopic(topic.clone()));
                };
                let Some(p) = t.partitions.get_mut(*partition as usize) else {
                    return Err(MetadataError::UnknownPartition {
                        topic: topic.clone(),
                        partition: *partition,
                    });
                };
                p.alter_isr(*from, *leader_epoch, *partition_epoch, new_isr, |n| {
                    is_live(nodes, n)
                })
                .map_err(MetadataError::AlterPartition)?;
                Ok(Applied::PartitionAltered(p.clone()))
            }
        }
    }

    /// Marks `node` live and gives it the offline partitions it can lead.
    fn unfence(&mut self, node: NodeId) {
        let Some(record) = self.nodes.get_mut(&node) else {
            return;
        };
        if !record.fenced {
            return;
        }
        record.fenced = false;
        for topic in self.topics.values_mut() {
            let unclean = topic.unclean_election();
            for p in &mut topic.partitions {
                p.on_unfenced(node, unclean);
            }
        }
    }

    /// Places `count` new partitions, numbered from `first`, on the live
    /// nodes, and advances the placement cursor.
    fn place(
        &mut self,
        first: u32,
        count: u32,
        rf: u16,
    ) -> Result<Vec<PartitionState>, MetadataError> {
        let live = self.live_nodes();
        let invalid_rf = MetadataError::InvalidReplicationFactor {
            requested: rf,
            live: live.len(),
        };
        if rf == 0 || usize::from(rf) > live.len() {
            return Err(invalid_rf);
        }
        let n = live.len() as u64;
        let start = self.placement_cursor % n;
        let assignments = assign_replicas(&live, start as usize, start as usize, first, count, rf);
        let states: Option<Vec<PartitionState>> = assignments
            .into_iter()
            .map(|replicas| PartitionState::new(replicas, |r| live.contains(&r)))
            .collect();
        let states = states.ok_or(invalid_rf)?;
        self.placement_cursor += 1;
        Ok(states)
    }
}

fn is_live(nodes: &BTreeMap<NodeId, NodeRecord>, node: NodeId) -> bool {
    nodes.get(&node).is_some_and(|r| !r.fenced)
}

/// Kafka's rack-unaware replica assignment: partition `p`'s first replica
/// is node `(p + start) % n`, the others follow at a shift that grows by
/// one every `n` partitions, so that replicas spread and no two partitions
/// of a run share the same follower pattern. `rf <= nodes.len()`.
pub fn assign_replicas(
    nodes: &[NodeId],
    start: usize,
    shift: usize,
    first: u32,
    count: u32,
    rf: u16,
) -> Vec<Vec<NodeId>> {
    let n = nodes.len();
    assert!(usize::from(rf) <= n && rf > 0, "rf {rf} with {n} nodes");
    let mut shift = shift;
    (first..first + count)
        .map(|p| {
            let p = p as usize;
            if p > 0 && p.is_multiple_of(n) {
                shift += 1;
            }
            let head = (p + start) % n;
            let mut replicas = Vec::with_capacity(usize::from(rf));
            replicas.push(nodes[head]);
            for j in 0..usize::from(rf) - 1 {
                replicas.push(nodes[(head + 1 + (shift + j) % (n - 1)) % n]);
            }
            replicas
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three_nodes() -> ClusterMetadata {
        let mut m = ClusterMetadata::default();
        for (i, id) in [1, 2, 3].into_iter().enumerate() {
            let r = m.apply(
                i as u64 + 1,
                &Command::RegisterNode {
                    node_id: id,
                    addr: format!("n{id}:9093"),
                    shards: 2,
                    link_addrs: Vec::new(),
                    listeners: Vec::new(),
                },
            );
            assert_eq!(
                r,
                Ok(Applied::NodeRegistered {
                    epoch: i as u64 + 1
                })
            );
        }
        m
    }

    fn create(name: &str, id: TopicId, partitions: u32, rf: u16) -> Command {
        Command::CreateTopic {
            name: name.into(),
            topic_id: id,
            partitions,
            replication_factor: rf,
            configs: BTreeMap::new(),
        }
    }

    #[test]
    fn placement_spreads_leaders_and_replicas() {
        let a = assign_replicas(&[1, 2, 3], 0, 0, 0, 6, 2);
        assert_eq!(
            a,
            vec![
                vec![1, 2],
                vec![2, 3],
                vec![3, 1],
                vec![1, 3],
                vec![2, 1],
                vec![3, 2]
            ]
        );
        // Each node leads two of six partitions and holds four replicas.
        for node in [1, 2, 3] {
            assert_eq!(a.iter().filter(|r| r[0] == node).count(), 2);
            assert_eq!(a.iter().filter(|r| r.contains(&node)).count(), 4);
        }
        // No partition holds a node twice, whatever the start and shift.
        for start in 0..4 {
            for shift in 0..4 {
                for r in assign_replicas(&[1, 2, 3, 4], start, shift, 0, 12, 3) {
                    let mut d = r.clone();
                    d.sort_unstable();
                    d.dedup();
                    assert_eq!(d.len(), 3, "{r:?}");
                }
            }
        }
    }

    #[test]
    fn single_partition_topics_rotate_their_leader() {
        let mut m = three_nodes();
        let leaders: Vec<NodeId> = (1..=3)
            .map(|i| {
                let name = format!("t{i}");
                m.apply(10 + i, &create(&name, i as u128, 1, 3))
                    .expect("created");
                m.partition(&name, 0)
                    .and_then(|p| p.leader)
                    .expect("leader")
            })
            .collect();
        assert_eq!(leaders, vec![1, 2, 3]);
    }

    #[test]
    fn create_topic_validates_and_refusals_change_nothing() {
        let mut m = three_nodes();
        assert_eq!(
            m.apply(10, &create("t", 7, 3, 3)),
            Ok(Applied::TopicCreated { topic_id: 7 })
        );
        let before = m.clone();
        assert_eq!(
            m.apply(11, &create("t", 8, 1, 1)),
            Err(MetadataError::TopicExists("t".into()))
        );
        assert_eq!(
            m.apply(12, &create("u", 7, 1, 1)),
            Err(MetadataError::InvalidTopicId(7))
        );
        assert_eq!(
            m.apply(13, &create("u", 0, 1, 1)),
            Err(MetadataError::InvalidTopicId(0))
        );
        assert_eq!(
            m.apply(14, &create("u", 9, 1, 4)),
            Err(MetadataError::InvalidReplicationFactor {
                requested: 4,
                live: 3
            })
        );
        assert_eq!(m, before);
        // A fenced node takes no new replicas.
        m.apply(15, &Command::FenceNode { node_id: 3 })
            .expect("fence");
        assert!(matches!(
            m.apply(16, &create("u", 9, 1, 3)),
            Err(MetadataError::InvalidReplicationFactor { .. })
        ));
        m.apply(17, &create("u", 9, 4, 2)).expect("created");
        assert!(m.topics["u"]
            .partitions
            .iter()
            .all(|p| !p.replicas.contains(&3)));
    }

    #[test]
    fn create_partitions_keeps_the_replication_factor() {
        let mut m = three_nodes();
        m.apply(10, &create("t", 1, 2, 2)).expect("created");
        assert_eq!(
            m.apply(
                11,
                &Command::CreatePartitions {
                    name: "t".into(),
                    total: 2
                }
            ),
            Err(MetadataError::InvalidPartitions {
                requested: 2,
                current: 2
            })
        );
        m.apply(
            12,
            &Command::CreatePartitions {
                name: "t".into(),
                total: 5,
            },
        )
        .expect("grown");
        let t = &m.topics["t"];
        assert_eq!(t.partitions.len(), 5);
        assert!(t
            .partitions
            .iter()
            .all(|p| p.replicas.len() == 2 && p.isr.len() == 2));
        assert_eq!(
            m.apply(13, &Command::DeleteTopic { name: "t".into() }),
            Ok(Applied::Done)
        );
        assert!(m.topics.is_empty());
    }

    #[test]
    fn fencing_moves_leaders_and_unfencing_restores_offline_partitions() {
        let mut m = three_nodes();
        m.apply(10, &create("t", 1, 3, 2)).expect("created");
        m.apply(11, &Command::FenceNode { node_id: 1 })
            .expect("fenced");
        for p in &m.topics["t"].partitions {
            assert_ne!(p.leader, Some(1));
            assert!(!p.isr.contains(&1));
        }
        // Fencing the other replica of a partition leaves it offline.
        let (pid, other) = m.topics["t"]
            .partitions
            .iter()
            .enumerate()
            .find(|(_, p)| p.replicas.contains(&1))
            .map(|(i, p)| (i as u32, p.leader.expect("led")))
            .expect("a partition on node 1");
        m.apply(12, &Command::FenceNode { node_id: other })
            .expect("fenced");
        assert_eq!(m.partition("t", pid).and_then(|p| p.leader), None);
        // Node 1 is not in the ISR any more: its return does not lead.
        m.apply(13, &Command::NodeHeartbeat { node_id: 1 })
            .expect("unfenced");
        assert_eq!(m.partition("t", pid).and_then(|p| p.leader), None);
        m.apply(14, &Command::UnfenceNode { node_id: other })
            .expect("unfenced");
        assert_eq!(m.partition("t", pid).and_then(|p| p.leader), Some(other));
        assert_eq!(
            m.apply(15, &Command::FenceNode { node_id: 9 }),
            Err(MetadataError::UnknownNode(9))
        );
    }

    #[test]
    fn alter_partition_answers_with_the_new_state_or_the_refusal() {
        let mut m = three_nodes();
        m.apply(10, &create("t", 1, 1, 3)).expect("created");
        let p = m.partition("t", 0).expect("p").clone();
        let leader = p.leader.expect("leader");
        let alter = |pe: i32, isr: Vec<NodeId>| Command::AlterPartition {
            topic: "t".into(),
            partition: 0,
            from: leader,
            leader_epoch: p.leader_epoch,
            partition_epoch: pe,
            new_isr: isr,
        };
        let r = m.apply(11, &alter(0, vec![leader]));
        let Ok(Applied::PartitionAltered(after)) = r else {
            panic!("{r:?}");
        };
        assert_eq!((after.isr, after.partition_epoch), (vec![leader], 1));
        assert_eq!(
            m.apply(12, &alter(0, vec![leader])),
            Err(MetadataError::AlterPartition(
                AlterError::InvalidUpdateVersion
            ))
        );
        assert_eq!(
            m.apply(
                13,
                &Command::AlterPartition {
                    topic: "t".into(),
                    partition: 5,
                    from: leader,
                    leader_epoch: 0,
                    partition_epoch: 1,
                    new_isr: vec![leader],
                }
            ),
            Err(MetadataError::UnknownPartition {
                topic: "t".into(),
                partition: 5
            })
        );
    }

    #[test]
    fn metadata_round_trips_through_json() {
        let mut m = three_nodes();
        m.apply(10, &create("t", u128::MAX - 5, 3, 2))
            .expect("created");
        let json = serde_json::to_vec(&m).expect("encode");
        let back: ClusterMetadata = serde_json::from_slice(&json).expect("decode");
        assert_eq!(back, m);
    }

    #[test]
    fn a_users_scram_changes_apply_all_or_none() {
        let record = |mechanism| ScramRecord {
            mechanism,
            salt: vec![1],
            iterations: 4096,
            stored_key: vec![2],
            server_key: vec![3],
        };
        let mut m = ClusterMetadata::default();
        let alter =
            |deletions: Vec<i8>, upsertions: Vec<ScramRecord>| Command::AlterScramCredentials {
                user: "alice".into(),
                deletions,
                upsertions,
            };
        assert!(m
            .apply(1, &alter(vec![], vec![record(1), record(2)]))
            .is_ok());
        assert_eq!(m.scram_credentials["alice"].len(), 2);
        // Deleting type 2 and a missing one changes nothing.
        let before = m.clone();
        assert!(matches!(
            m.apply(2, &alter(vec![2, 3], vec![])),
            Err(MetadataError::UnknownScramCredential { mechanism: 3, .. })
        ));
        assert_eq!(m, before);
        assert!(m.apply(3, &alter(vec![1, 2], vec![])).is_ok());
        assert!(
            !m.scram_credentials.contains_key("alice"),
            "no credential, no user"
        );
    }

    #[test]
    fn acls_are_added_once_removed_and_kept_in_snapshots() {
        let acl = |name: &str| AclRecord {
            resource_type: 2,
            resource_name: name.into(),
            pattern_type: 3,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: 3,
            permission: 3,
        };
        let mut m = ClusterMetadata::default();
        let create = Command::CreateAcls {
            acls: vec![acl("a"), acl("b"), acl("a")],
        };
        assert_eq!(m.apply(1, &create), Ok(Applied::Done));
        assert_eq!(m.acls.len(), 2);
        let delete = Command::DeleteAcls {
            acls: vec![acl("a"), acl("gone")],
        };
        assert_eq!(m.apply(2, &delete), Ok(Applied::Done));
        assert_eq!(m.acls.iter().collect::<Vec<_>>(), vec![&acl("b")]);
        let json = serde_json::to_string(&m).expect("encodes");
        let back: ClusterMetadata = serde_json::from_str(&json).expect("decodes");
        assert_eq!(back, m);
    }
}
