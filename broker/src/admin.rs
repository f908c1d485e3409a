//! Topic administration on shard 0: requests to create, delete and grow
//! topics or change their configs are checked here, proposed to the
//! controller quorum, and answered once every shard of this node has
//! applied the metadata that holds the change.

use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::ResponseError as Kafka;
use uuid::Uuid;

use std::collections::BTreeMap;

use replication::controller::{Command, MetadataError, SubmitError};
use replication::partition_state::{ElectError, PartitionState};

use crate::mesh::{AdminOp, AdminOutcome, ConfigChange, ShardRequest};
use crate::metadata::{ClusterMetadata, TopicMeta};
use crate::shard::Shard;
use crate::topic_config;

impl Shard {
    pub(crate) async fn admin_local(self: &Rc<Self>, op: AdminOp) -> Vec<AdminOutcome> {
        if self.id != 0 {
            return vec![Err((
                Kafka::NotController.code(),
                "topic administration runs on shard 0".into(),
            ))];
        }
        let Ok(_permit) = self.admin_gate.acquire_permit(1).await else {
            return vec![Err((
                Kafka::UnknownServerError.code(),
                "shutting down".into(),
            ))];
        };
        let current = self.metadata();
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
                        check_partitions(t.partitions, self.config.partitions_per_topic_max)?;
                        topic_config::log_config(&self.default_log, &t.configs)
                            .map_err(|e| (Kafka::InvalidConfig.code(), e))?;
                        let rf = match t.replication_factor {
                            -1 => self.config.default_replication_factor,
                            // The offsets topic: as many as there are, up to its setting.
                            -2 => self.config.offsets_topic_replication_factor.min(live),
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
                    outcomes.push(self.propose(command).await.map(|()| {
                        if let Some(created) = self.metadata().topic(&t.name) {
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
                    outcomes.push(self.propose(command).await.map(|()| topic));
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
                        check_partitions(count, self.config.partitions_per_topic_max)?;
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
                        self.propose(command)
                            .await
                            .map(|()| self.metadata().topic(&name).cloned().unwrap_or(grown)),
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
                        topic_config::log_config(&self.default_log, &configs)
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
                    outcomes.push(self.propose(command).await.map(|()| altered));
                }
                outcomes
            }
        }
    }

    /// Runs `command` through the controller and waits until every shard
    /// has applied it; a refusal or a failure as Kafka's code and message.
    async fn propose(self: &Rc<Self>, command: Command) -> Result<(), (i16, String)> {
        match crate::cluster::submit(self, command).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(refusal(e)),
            Err(SubmitError::Stopped(e)) => Err((Kafka::NotController.code(), e)),
            Err(e) => Err((Kafka::RequestTimedOut.code(), e.to_string())),
        }
    }

    /// Makes every shard (this one included) apply `meta`, and waits.
    pub(crate) async fn broadcast(self: &Rc<Self>, meta: Arc<ClusterMetadata>) {
        let tasks: Vec<_> = (0..self.nr_shards)
            .map(|to| {
                let shard = self.clone();
                let meta = meta.clone();
                glommio::spawn_local(async move {
                    shard.call(to, ShardRequest::ApplyMetadata(meta)).await;
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
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
