//! The cluster metadata as shards see it: topics with their ids, partition
//! counts, configs and partition states (replicas, leader, ISR, epochs),
//! the nodes with their addresses, the cluster id, SCRAM credentials and
//! ACLs (with the authorizer's index of them). The controller
//! quorum owns it; shard 0 turns each version the controller applies into
//! this form (`from_controller`) and hands every shard an immutable
//! snapshot. `<data-dir>/metadata.json`, where single nodes kept their
//! topics before the controller, is read once to import them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use replication::controller::{AclRecord, ClusterMetadata as Controlled};
use replication::partition_state::PartitionState;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::acl::AclIndex;

pub const METADATA_FILE: &str = "metadata.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: i32,
    /// Configs set explicitly on the topic (Kafka's DYNAMIC_TOPIC_CONFIG).
    pub configs: BTreeMap<String, String>,
    /// Each partition's state, indexed by partition id (empty in a legacy
    /// metadata file).
    #[serde(default)]
    pub states: Vec<PartitionState>,
}

impl TopicMeta {
    pub fn state(&self, partition: i32) -> Option<&PartitionState> {
        usize::try_from(partition)
            .ok()
            .and_then(|p| self.states.get(p))
    }
}

/// A registered node as clients and peers reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMeta {
    pub host: String,
    pub port: i32,
    /// (listener name, host, port) of every Kafka listener; empty for a
    /// node registered with one address (`host`, `port`) for all.
    #[serde(default)]
    pub listeners: Vec<(String, String, i32)>,
    pub link_addrs: Vec<String>,
    pub shards: u32,
    pub fenced: bool,
}

impl NodeMeta {
    /// Where clients of listener `name` reach this node; `None` if it has
    /// no such listener (Kafka then leaves it out of their answers).
    pub fn endpoint(&self, name: &str) -> Option<(&str, i32)> {
        if self.listeners.is_empty() {
            return Some((&self.host, self.port));
        }
        self.listeners
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, h, p)| (h.as_str(), *p))
    }
}

/// `host:port` split, the port -1 when missing or bad.
fn host_port(addr: &str) -> (String, i32) {
    match addr.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().unwrap_or(-1)),
        None => (addr.to_string(), -1),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterMetadata {
    pub cluster_id: String,
    pub topics: BTreeMap<String, TopicMeta>,
    #[serde(default)]
    pub nodes: BTreeMap<i32, NodeMeta>,
    /// The controller leader as this node last knew it (-1: none).
    #[serde(default)]
    pub controller_id: i32,
    /// The controller log index this version reflects.
    #[serde(default)]
    pub applied_index: u64,
    /// SCRAM credentials by user (stored and server keys).
    #[serde(default)]
    pub scram_credentials: BTreeMap<String, Vec<replication::controller::ScramRecord>>,
    /// The ACL bindings, as stored.
    #[serde(default)]
    pub acls: BTreeSet<AclRecord>,
    /// `acls` arranged for the authorizer's decision; derived by
    /// `reindex`, once per metadata version, shared by every shard.
    #[serde(skip)]
    pub acl_index: AclIndex,
    /// Topic names by id, for requests naming topics by id (Fetch v13+,
    /// Produce v13, DeleteTopics v6). Derived from `topics` by `reindex`.
    #[serde(skip)]
    by_id: HashMap<Uuid, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid metadata: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// The index is derived, so it takes no part in equality.
impl PartialEq for ClusterMetadata {
    fn eq(&self, other: &Self) -> bool {
        self.cluster_id == other.cluster_id
            && self.topics == other.topics
            && self.nodes == other.nodes
            && self.controller_id == other.controller_id
            && self.acls == other.acls
    }
}

impl Eq for ClusterMetadata {}

impl ClusterMetadata {
    pub fn new() -> Self {
        ClusterMetadata {
            cluster_id: Uuid::new_v4().simple().to_string(),
            ..ClusterMetadata::empty()
        }
    }

    /// The shards' form of what the controller applied up to `index`.
    pub fn from_controller(c: &Controlled, index: u64, controller_id: i32) -> ClusterMetadata {
        let topics = c
            .topics
            .iter()
            .map(|(name, t)| {
                let meta = TopicMeta {
                    name: name.clone(),
                    topic_id: Uuid::from_u128(t.topic_id),
                    partitions: t.partitions.len() as i32,
                    configs: t.configs.clone(),
                    states: t.partitions.clone(),
                };
                (name.clone(), meta)
            })
            .collect();
        let nodes = c
            .nodes
            .iter()
            .map(|(&id, n)| {
                let (host, port) = host_port(&n.addr);
                let listeners = n
                    .listeners
                    .iter()
                    .map(|(name, addr)| {
                        let (h, p) = host_port(addr);
                        (name.clone(), h, p)
                    })
                    .collect();
                let meta = NodeMeta {
                    host,
                    port,
                    listeners,
                    link_addrs: n.link_addrs.clone(),
                    shards: n.shards,
                    fenced: n.fenced,
                };
                (id as i32, meta)
            })
            .collect();
        let mut meta = ClusterMetadata {
            cluster_id: c.cluster_id.clone(),
            topics,
            nodes,
            controller_id,
            applied_index: index,
            scram_credentials: c.scram_credentials.clone(),
            acls: c.acls.clone(),
            acl_index: AclIndex::default(),
            by_id: HashMap::new(),
        };
        meta.reindex();
        meta
    }

    /// Whether `node` is registered and not fenced.
    pub fn is_live(&self, node: i32) -> bool {
        self.nodes.get(&node).is_some_and(|n| !n.fenced)
    }

    /// No topics and no cluster id: what a shard holds before start-up
    /// hands it the real metadata.
    pub fn empty() -> Self {
        ClusterMetadata {
            cluster_id: String::new(),
            topics: BTreeMap::new(),
            nodes: BTreeMap::new(),
            controller_id: -1,
            applied_index: 0,
            scram_credentials: BTreeMap::new(),
            acls: BTreeSet::new(),
            acl_index: AclIndex::default(),
            by_id: HashMap::new(),
        }
    }

    pub fn topic(&self, name: &str) -> Option<&TopicMeta> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, topic_id: Uuid) -> Option<&TopicMeta> {
        match self.by_id.get(&topic_id) {
            Some(name) => self.topics.get(name).filter(|t| t.topic_id == topic_id),
            // Not indexed (or unknown): the scan keeps answers right even
            // if a change was not reindexed.
            None => self.topics.values().find(|t| t.topic_id == topic_id),
        }
    }

    /// Rebuilds the topic id and ACL indexes after `topics` or `acls`
    /// changed.
    pub fn reindex(&mut self) {
        self.acl_index = AclIndex::build(&self.acls);
        self.by_id = self
            .topics
            .values()
            .map(|t| (t.topic_id, t.name.clone()))
            .collect();
    }

    /// Loads the metadata file, or returns `None` when there is none yet.
    /// A short blocking read: it runs once, before a shard serves anything.
    pub fn load(data_dir: &Path) -> Result<Option<ClusterMetadata>, MetadataError> {
        let path = data_dir.join(METADATA_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(MetadataError::Read { path, source }),
        };
        let mut meta: ClusterMetadata =
            serde_json::from_str(&text).map_err(|e| MetadataError::Invalid {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        for (name, topic) in &meta.topics {
            if name != &topic.name || topic.partitions < 1 {
                return Err(MetadataError::Invalid {
                    path,
                    reason: format!("topic entry {name:?} is inconsistent"),
                });
            }
        }
        meta.reindex();
        Ok(Some(meta))
    }
}

impl Default for ClusterMetadata {
    fn default() -> Self {
        ClusterMetadata::new()
    }
}

/// Kafka's rule for topic names: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("Topic name is illegal, it can't be empty".into());
    }
    if name == "." || name == ".." {
        return Err("Topic name cannot be \".\" or \"..\"".into());
    }
    if name.len() > 249 {
        return Err(format!(
            "Topic name is illegal, it can't be longer than 249 characters, topic name: {name}"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(format!(
            "Topic name {name} is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// The directory of one partition's log, as Kafka names it.
pub fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

/// The shard that owns a partition: stable for a given shard count, and
/// spreading a topic's partitions over consecutive shards.
pub fn owner_shard(topic: &str, partition: i32, shards: usize) -> usize {
    // FNV-1a: deterministic across processes, unlike std's RandomState.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in topic.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let slot = hash.wrapping_add(partition as u64);
    (slot % shards as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_what_a_single_node_saved() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(ClusterMetadata::load(dir.path()).expect("ok").is_none());
        let mut meta = ClusterMetadata::new();
        meta.topics.insert(
            "orders".into(),
            TopicMeta {
                name: "orders".into(),
                topic_id: Uuid::new_v4(),
                partitions: 3,
                configs: [("retention.ms".to_string(), "1000".to_string())].into(),
                states: Vec::new(),
            },
        );
        let text = serde_json::to_vec(&meta).expect("encodes");
        std::fs::write(dir.path().join(METADATA_FILE), text).expect("write");
        let back = ClusterMetadata::load(dir.path())
            .expect("ok")
            .expect("some");
        assert_eq!(back, meta);
        let id = meta.topics["orders"].topic_id;
        assert_eq!(
            back.topic_by_id(id).map(|t| t.name.as_str()),
            Some("orders")
        );
        assert!(back.topic_by_id(Uuid::new_v4()).is_none());
        std::fs::write(dir.path().join(METADATA_FILE), "{").expect("write");
        assert!(ClusterMetadata::load(dir.path()).is_err());
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("metrics.cpu_1-a").is_ok());
        for bad in ["", ".", "..", "a b", "a/b", "ü"] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
    }

    #[test]
    fn owner_shard_is_stable_and_spreads_partitions() {
        assert_eq!(owner_shard("t", 0, 1), 0);
        let a = owner_shard("orders", 0, 2);
        assert_eq!(owner_shard("orders", 1, 2), 1 - a);
        assert_eq!(owner_shard("orders", 0, 2), a);
    }
}
