//! Helpers shared by handlers: creating topics through shard 0 (for
//! CreateTopics and auto-creation) and resolving names and topic ids.

use std::collections::BTreeMap;
use std::rc::Rc;

use crate::cluster::admin::{AdminOp, AdminOutcome, NewTopic};
use crate::metadata::validate_topic_name;
use crate::node::Node;
use crate::route;

/// Creates the missing topics among `names` with the broker defaults, when
/// auto.create.topics.enable is on. Invalid names are left alone (the
/// caller reports them) and races with other creators are harmless.
pub async fn auto_create(shard: &Rc<Node>, names: &[String]) {
    if !shard.config.auto_create_topics {
        return;
    }
    let meta = shard.metadata();
    let mut missing: Vec<String> = names
        .iter()
        .filter(|n| meta.topic(n).is_none() && validate_topic_name(n).is_ok())
        .cloned()
        .collect();
    missing.sort();
    missing.dedup();
    if missing.is_empty() {
        return;
    }
    let topics = missing
        .into_iter()
        .map(|name| NewTopic {
            name,
            partitions: shard.config.default_partitions,
            replication_factor: -1,
            configs: BTreeMap::new(),
        })
        .collect();
    let outcomes: Option<Vec<AdminOutcome>> = route::admin(
        shard,
        AdminOp::CreateTopics {
            topics,
            validate_only: false,
        },
    )
    .await;
    if let Some(outcomes) = outcomes {
        for o in outcomes {
            if let Err((code, message)) = o {
                tracing::debug!(code, "auto-creating a topic failed: {message}");
            }
        }
    }
}
