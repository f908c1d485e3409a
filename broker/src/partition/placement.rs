//! Which partitions this shard holds: the logs opened, reconfigured and
//! deleted as the cluster metadata changes, closed at shutdown, and trimmed
//! by retention.

use std::rc::Rc;
use std::sync::Arc;

use replication::log_replica::LogReplica;
use replication::partition_state::PartitionState;
use replication::replica::ReplicaConfig;
use storage::PartitionLog;

use crate::metadata::{partition_dir, ClusterMetadata};
use crate::shard::{OwnedLog, Shard};
use crate::topic_config;

/// Makes this shard's logs match `meta`: opens the logs of partitions
/// it owns that this node replicates, deletes logs of removed (or
/// re-created) topics, applies config changes and partition states.
/// An older version than the one applied (broadcasts may cross) is
/// ignored.
pub async fn apply_metadata(shard: &Shard, meta: Arc<ClusterMetadata>) {
    if meta.applied_index > 0 && meta.applied_index < shard.metadata().applied_index {
        return;
    }
    let me = shard.node_id();
    let mut gone = Vec::new();
    {
        for (tp, owned) in shard.owned() {
            let keep = meta.topic(&tp.0).is_some_and(|t| {
                t.topic_id == owned.topic_id
                    && tp.1 < t.partitions
                    && state_of(t, tp.1, me).replicas.contains(&me)
            });
            if !keep {
                gone.push(tp);
            }
        }
    }
    for tp in gone {
        let removed = shard.release_log(&tp);
        if let Some(owned) = removed {
            if let Err(e) = owned.log.delete().await {
                tracing::error!(topic = %tp.0, partition = tp.1, "deleting the log failed: {e}");
            }
        }
    }
    let now = super::now_ms();
    let replica_config = ReplicaConfig {
        lag_time_max_ms: shard.config.replica_lag_time_max_ms,
        ..ReplicaConfig::default()
    };
    for topic in meta.topics.values() {
        let log_config = match topic_config::log_config(&shard.default_log, &topic.configs) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(topic = %topic.name, "unusable topic config, using defaults: {e}");
                shard.default_log.clone()
            }
        };
        for partition in 0..topic.partitions {
            if shard.owner(&topic.name, partition) != shard.id {
                continue;
            }
            let state = state_of(topic, partition, me);
            if !state.replicas.contains(&me) {
                continue;
            }
            let tp = (topic.name.clone(), partition);
            let existing = shard.replica(&tp);
            let replica = match existing {
                Some(replica) => {
                    let log = replica.log();
                    if log.config() != log_config {
                        if let Err(e) = log.set_config(log_config.clone()) {
                            tracing::error!(topic = %topic.name, partition, "config change refused: {e}");
                        }
                    }
                    replica
                }
                None => {
                    let dir = partition_dir(&shard.config.data_dir, &topic.name, partition);
                    match PartitionLog::open(&dir, log_config.clone()).await {
                        Ok(log) => {
                            log.set_cache_budget(shard.cache_budget.clone());
                            let replica = Rc::new(LogReplica::new(
                                topic.name.clone(),
                                partition,
                                me,
                                replica_config,
                                log.clone(),
                            ));
                            shard.adopt_log(
                                tp,
                                OwnedLog {
                                    topic_id: topic.topic_id,
                                    log,
                                    replica: replica.clone(),
                                },
                            );
                            replica
                        }
                        Err(e) => {
                            tracing::error!(dir = %dir.display(), "opening the log failed: {e}");
                            continue;
                        }
                    }
                }
            };
            replica.apply_state(&state, now).await;
        }
    }
    shard.set_metadata(meta);
    // Leaders may have changed: waiting producers and consumers look
    // again.
    shard.appended.notify();
}

/// Closes every log this shard owns (flushing per the fsync policy).
pub async fn close_logs(shard: &Shard) {
    let logs = shard.release_all_logs();
    for ((topic, partition), owned) in logs {
        if let Err(e) = owned.log.close().await {
            tracing::error!(%topic, partition, "closing the log failed: {e}");
        }
    }
}

pub async fn enforce_retention(shard: &Shard) {
    for ((topic, partition), log) in shard.owned_logs() {
        match log.enforce_retention().await {
            Ok(outcome) if outcome.segments_deleted > 0 => tracing::info!(
                %topic,
                partition,
                segments = outcome.segments_deleted,
                bytes = outcome.bytes_deleted,
                log_start_offset = outcome.log_start_offset,
                "retention deleted segments"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(%topic, partition, "retention failed: {e}"),
        }
    }
}

/// A partition's state; a topic made without a controller (tests that
/// build metadata by hand) is led by this node alone.
fn state_of(topic: &crate::metadata::TopicMeta, partition: i32, me: u32) -> PartitionState {
    topic.state(partition).cloned().unwrap_or(PartitionState {
        replicas: vec![me],
        leader: Some(me),
        leader_epoch: 0,
        isr: vec![me],
        partition_epoch: 0,
    })
}
