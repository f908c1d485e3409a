//! Topic administration on shard 0, the metadata owner: create, delete and
//! grow topics, persist the metadata file, and make every shard apply the
//! new metadata before answering.

use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::ResponseError as Kafka;
use uuid::Uuid;

use std::collections::BTreeMap;

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
        let mut next: ClusterMetadata = (*current).clone();
        let (outcomes, removing) = match op {
            AdminOp::CreateTopics {
                topics,
                validate_only,
            } => {
                let outcomes: Vec<AdminOutcome> = topics
                    .into_iter()
                    .map(|t| {
                        if next.topics.contains_key(&t.name) {
                            return Err((
                                Kafka::TopicAlreadyExists.code(),
                                format!("Topic '{}' already exists.", t.name),
                            ));
                        }
                        check_partitions(t.partitions, self.config.partitions_per_topic_max)?;
                        topic_config::log_config(&self.default_log, &t.configs)
                            .map_err(|e| (Kafka::InvalidConfig.code(), e))?;
                        let meta = TopicMeta {
                            name: t.name.clone(),
                            topic_id: Uuid::new_v4(),
                            partitions: t.partitions,
                            configs: t.configs,
                        };
                        if !validate_only {
                            next.topics.insert(t.name, meta.clone());
                        }
                        Ok(meta)
                    })
                    .collect();
                (outcomes, false)
            }
            AdminOp::DeleteTopics(names) => {
                let outcomes = names
                    .into_iter()
                    .map(|name| {
                        next.topics.remove(&name).ok_or((
                            Kafka::UnknownTopicOrPartition.code(),
                            "This server does not host this topic-partition.".into(),
                        ))
                    })
                    .collect();
                (outcomes, true)
            }
            AdminOp::CreatePartitions {
                topics,
                validate_only,
            } => {
                let outcomes = topics
                    .into_iter()
                    .map(|(name, count)| {
                        let Some(topic) = next.topics.get_mut(&name) else {
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
                        if !validate_only {
                            *topic = grown.clone();
                        }
                        Ok(grown)
                    })
                    .collect();
                (outcomes, false)
            }
            AdminOp::AlterTopicConfigs {
                changes,
                validate_only,
            } => {
                let outcomes = changes
                    .into_iter()
                    .map(|(name, change)| {
                        let Some(topic) = next.topics.get_mut(&name) else {
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
                        if !validate_only {
                            *topic = altered.clone();
                        }
                        Ok(altered)
                    })
                    .collect();
                (outcomes, false)
            }
        };
        next.reindex();
        if next == *current {
            return outcomes;
        }
        let next = Arc::new(next);
        // Deleting: drop the logs first, then forget the topic, so a crash
        // in between leaves a known topic rather than stray data under a
        // name that may be re-created. Creating: record the topic first.
        if removing {
            self.broadcast(next.clone()).await;
        }
        // The write and its fsyncs run on a helper thread: a shard never blocks.
        let (snapshot, dir) = (next.clone(), self.config.data_dir.clone());
        let saved = glommio::executor()
            .spawn_blocking(move || snapshot.save(&dir))
            .await;
        if let Err(e) = saved {
            tracing::error!("saving metadata failed: {e}");
            return outcomes
                .into_iter()
                .map(|o| {
                    o.and(Err((
                        Kafka::KafkaStorageError.code(),
                        format!("saving metadata failed: {e}"),
                    )))
                })
                .collect();
        }
        if !removing {
            self.broadcast(next).await;
        }
        outcomes
    }

    /// Makes every shard (this one included) apply `meta`, and waits.
    async fn broadcast(self: &Rc<Self>, meta: Arc<ClusterMetadata>) {
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
