//! Topic administration on shard 0: requests to create, delete and grow
//! topics or change their configs are checked here, proposed to the
//! controller quorum, and answered once every shard of this node has
//! applied the metadata that holds the change.

use kafka_protocol::ResponseError as Kafka;
use uuid::Uuid;

use std::collections::BTreeMap;

use replication::controller::{Command, MetadataError, SubmitError};
use replication::partition_state::{ElectError, PartitionState};

use crate::metadata::TopicMeta;
use crate::peers::Peers;
use crate::shard::Shard;
use crate::topic_config;

/// Topic administration, done by shard 0 (the metadata owner).
pub enum AdminOp {
    CreateTopics {
        topics: Vec<NewTopic>,
        validate_only: bool,
    },
    DeleteTopics(Vec<String>),
    CreatePartitions {
        topics: Vec<(String, i32)>,
        validate_only: bool,
    },
    /// Topic config changes, one per topic.
    AlterTopicConfigs {
        changes: Vec<(String, ConfigChange)>,
        validate_only: bool,
    },
}

/// How a topic's configs change.
pub enum ConfigChange {
    /// AlterConfigs: the given set replaces every config of the topic.
    Replace(BTreeMap<String, String>),
    /// IncrementalAlterConfigs: `(key, operation, value)` with Kafka's
    /// operations 0 SET, 1 DELETE, 2 APPEND, 3 SUBTRACT.
    Incremental(Vec<(String, i8, Option<String>)>),
}

pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    /// Replicas per partition (-1: the broker's default).
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

/// Per topic: the topic as it now is, or a Kafka error code and message.
pub type AdminOutcome = Result<TopicMeta, (i16, String)>;

/// Shard 0's topic administration: one change at a time.
pub struct TopicAdmin {
    gate: crate::rt::Semaphore,
}

impl Default for TopicAdmin {
    fn default() -> Self {
        TopicAdmin {
            gate: crate::rt::Semaphore::new(1),
        }
    }
}

impl TopicAdmin {
    pub async fn handle(&self, shard: &Shard, peers: &dyn Peers, op: AdminOp) -> Vec<AdminOutcome> {
        if shard.id != 0 {
            return vec![Err((
                Kafka::NotController.code(),
                "topic administration runs on shard 0".into(),
            ))];
        }
        let Ok(_permit) = self.gate.acquire_permit(1).await else {
            return vec![Err((
                Kafka::UnknownServerError.code(),
                "shutting down".into(),
            ))];
        };
        let current = shard.metadata();
        let live = current.nodes.values().filter(|n| !n.fenced).count().max(1) as i16;
        match op {
            AdminOp::CreateTopics {
                topics,
                validate_only,
            } => {
                let mut outcomes = Vec::with_capacity(topics.len());
                for t in topics {
                    let checked = (|| {
                        if current.topics.contains_key(&t.name) {
                            return Err((
                                Kafka::TopicAlreadyExists.code(),
                                format!("Topic '{}' already exists.", t.name),
                            ));
                        }
                        check_partitions(t.partitions, shard.config.partitions_per_topic_max)?;
                        topic_config::log_config(&shard.default_log, &t.configs)
                            .map_err(|e| (Kafka::InvalidConfig.code(), e))?;
                        let rf = match t.replication_factor {
                            -1 => shard.config.default_replication_factor,
                            // The offsets topic: as many as there are, up to its setting.
                            -2 => shard.config.offsets_topic_replication_factor.min(live),
                            n => n,
                        };
                        if rf > live {
                            return Err((
                                Kafka::InvalidReplicationFactor.code(),
                                format!("Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached because only {live} broker(s) are registered."),
                            ));
                        }
                        Ok(rf)
                    })();
                    let rf = match checked {
                        Ok(rf) => rf,
                        Err(e) => {
                            outcomes.push(Err(e));
                            continue;
                        }
                    };
                    let topic_id = Uuid::new_v4();
                    let states = (0..t.partitions)
                        .map(|_| PartitionState {
                            replicas: vec![0; rf as usize],
                            leader: None,
                            leader_epoch: 0,
                            isr: Vec::new(),
                            partition_epoch: 0,
                        })
                        .collect();
                    let mut meta = TopicMeta {
                        name: t.name.clone(),
                        topic_id,
                        partitions: t.partitions,
                        configs: t.configs.clone(),
                        states,
                    };
                    if validate_only {
                        outcomes.push(Ok(meta));
                        continue;
                    }
                    let command = Command::CreateTopic {
                        name: t.name.clone(),
                        topic_id: topic_id.as_u128(),
                        partitions: t.partitions as u32,
                        replication_factor: rf as u16,
                        configs: t.configs,
                    };
                    outcomes.push(propose(peers, command).await.map(|()| {
                        if let Some(created) = shard.metadata().topic(&t.name) {
                            meta = created.clone();
                        }
                        meta
                    }));
                }
                outcomes
            }
            AdminOp::DeleteTopics(names) => {
                let mut outcomes = Vec::with_capacity(names.len());
                for name in names {
                    let Some(topic) = current.topic(&name).cloned() else {
                        outcomes.push(Err((
                            Kafka::UnknownTopicOrPartition.code(),
                            "This server does not host this topic-partition.".into(),
                        )));
                        continue;
                    };
                    let command = Command::DeleteTopic { name };
                    outcomes.push(propose(peers, command).await.map(|()| topic));
                }
                outcomes
            }
            AdminOp::CreatePartitions {
                topics,
                validate_only,
            } => {
                let mut outcomes = Vec::with_capacity(topics.len());
                for (name, count) in topics {
                    let checked = (|| {
                        let Some(topic) = current.topic(&name) else {
                            return Err((
                                Kafka::UnknownTopicOrPartition.code(),
                                format!("The topic '{name}' does not exist."),
                            ));
                        };
                        if count < topic.partitions {
                            return Err((
                                Kafka::InvalidPartitions.code(),
                                format!(
                                    "Topic currently has {} partitions, which is higher than the requested {count}.",
                                    topic.partitions
                                ),
                            ));
                        }
                        if count == topic.partitions {
                            return Err((
                                Kafka::InvalidPartitions.code(),
                                format!("Topic already has {count} partitions."),
                            ));
                        }
                        check_partitions(count, shard.config.partitions_per_topic_max)?;
                        let mut grown = topic.clone();
                        grown.partitions = count;
                        Ok(grown)
                    })();
                    let grown = match checked {
                        Ok(g) if !validate_only => g,
                        other => {
                            outcomes.push(other);
                            continue;
                        }
                    };
                    let command = Command::CreatePartitions {
                        name: name.clone(),
                        total: count as u32,
                    };
                    outcomes.push(
                        propose(peers, command)
                            .await
                            .map(|()| shard.metadata().topic(&name).cloned().unwrap_or(grown)),
                    );
                }
                outcomes
            }
            AdminOp::AlterTopicConfigs {
                changes,
                validate_only,
            } => {
                let mut outcomes = Vec::with_capacity(changes.len());
                for (name, change) in changes {
                    let checked = (|| {
                        let Some(topic) = current.topic(&name) else {
                            return Err((
                                Kafka::UnknownTopicOrPartition.code(),
                                format!("Topic {name} does not exist"),
                            ));
                        };
                        let configs = changed_configs(&topic.configs, change)?;
                        topic_config::log_config(&shard.default_log, &configs)
                            .map_err(|e| (Kafka::InvalidConfig.code(), e))?;
                        let mut altered = topic.clone();
                        altered.configs = configs;
                        Ok(altered)
                    })();
                    let altered = match checked {
                        Ok(a) if !validate_only && a.configs != current.topics[&name].configs => a,
                        other => {
                            outcomes.push(other);
                            continue;
                        }
                    };
                    let command = Command::SetTopicConfigs {
                        name,
                        configs: altered.configs.clone(),
                    };
                    outcomes.push(propose(peers, command).await.map(|()| altered));
                }
                outcomes
            }
        }
    }
}

/// Runs `command` through the controller and waits until every shard has
/// applied it; a refusal or a failure as Kafka's code and message.
async fn propose(peers: &dyn Peers, command: Command) -> Result<(), (i16, String)> {
    match peers.submit(command).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(refusal(e)),
        Err(SubmitError::Stopped(e)) => Err((Kafka::NotController.code(), e)),
        Err(e) => Err((Kafka::RequestTimedOut.code(), e.to_string())),
    }
}

/// The controller's refusal as Kafka says it.
fn refusal(e: MetadataError) -> (i16, String) {
    let code = match &e {
        MetadataError::TopicExists(_) => Kafka::TopicAlreadyExists,
        MetadataError::UnknownTopic(_) | MetadataError::UnknownPartition { .. } => {
            Kafka::UnknownTopicOrPartition
        }
        MetadataError::InvalidPartitions { .. } => Kafka::InvalidPartitions,
        MetadataError::InvalidReplicationFactor { .. } => Kafka::InvalidReplicationFactor,
        MetadataError::InvalidTopicId(_) => Kafka::InvalidRequest,
        MetadataError::UnknownNode(_) => Kafka::BrokerNotAvailable,
        MetadataError::AlterPartition(_) => Kafka::InvalidRequest,
        MetadataError::Elect(ElectError::NotNeeded) => Kafka::ElectionNotNeeded,
        MetadataError::Elect(ElectError::NotAvailable) => Kafka::EligibleLeadersNotAvailable,
        MetadataError::UnknownScramCredential { .. } => Kafka::ResourceNotFound,
    };
    (code.code(), e.to_string())
}

/// Partition counts are bounded: opening thousands of logs in one request
/// stalls the shards, and is most likely a mistake.
fn check_partitions(count: i32, max: i32) -> Result<(), (i16, String)> {
    if count < 1 {
        return Err((
            Kafka::InvalidPartitions.code(),
            "Number of partitions must be larger than 0.".into(),
        ));
    }
    if count > max {
        return Err((
            Kafka::InvalidPartitions.code(),
            format!("Number of partitions {count} exceeds partitions-per-topic-max = {max}."),
        ));
    }
    Ok(())
}

/// Kafka's IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// The topic's configs after `change`; list operations apply to list-typed
/// keys only, as in Kafka.
fn changed_configs(
    current: &BTreeMap<String, String>,
    change: ConfigChange,
) -> Result<BTreeMap<String, String>, (i16, String)> {
    let invalid = |m: String| (Kafka::InvalidConfig.code(), m);
    match change {
        ConfigChange::Replace(all) => Ok(all),
        ConfigChange::Incremental(ops) => {
            let mut configs = current.clone();
            for (key, op, value) in ops {
                let is_list = topic_config::TOPIC_KEYS
                    .iter()
                    .any(|k| k.name == key && k.config_type == topic_config::config_type::LIST);
                match (op, value) {
                    (OP_SET, Some(v)) => {
                        configs.insert(key, v);
                    }
                    (OP_DELETE, _) => {
                        configs.remove(&key);
                    }
                    (OP_APPEND | OP_SUBTRACT, Some(v)) if is_list => {
                        let mut items: Vec<String> = configs
                            .get(&key)
                            .map(|s| s.split(',').map(|i| i.trim().to_string()).collect())
                            .unwrap_or_default();
                        items.retain(|i| !i.is_empty());
                        for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                            if op == OP_APPEND && !items.iter().any(|i| i == item) {
                                items.push(item.to_string());
                            }
                            if op == OP_SUBTRACT {
                                items.retain(|i| i != item);
                            }
                        }
                        if items.is_empty() {
                            configs.remove(&key);
                        } else {
                            configs.insert(key, items.join(","));
                        }
                    }
                    (OP_APPEND | OP_SUBTRACT, _) => {
                        return Err(invalid(format!(
                            "Config value append/subtract is not allowed for config key {key}"
                        )))
                    }
                    (op, _) => {
                        return Err(invalid(format!(
                            "Invalid config operation {op} (or a missing value) for {key}"
                        )))
                    }
                }
            }
            Ok(configs)
        }
    }
}
