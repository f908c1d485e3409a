//! Helpers shared by the consumer-group handlers: creating
//! `__consumer_offsets` on first use, and sending a group's request to the
//! shard that coordinates it.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::ResponseError as Kafka;

use crate::cluster::admin::{AdminOp, NewTopic};
use crate::group::coordinator::{GroupAnswer, GroupCall, OFFSETS_TOPIC};
use crate::group::errors::COORDINATOR_NOT_AVAILABLE;
use crate::group::records::partition_for;
use crate::node::Node;
use crate::node::{ShardRequest, ShardResponse};
use crate::route;

/// `offsets.topic.segment.bytes`: Kafka's 100 MiB, so that compaction has
/// sealed segments to clean long before the default 1 GiB.
const OFFSETS_SEGMENT_BYTES: u64 = 100 << 20;

/// Creates `__consumer_offsets` if it does not exist yet, as Kafka does on
/// the first FindCoordinator for a group. Errors carry Kafka's code and a
/// message.
pub async fn ensure_offsets_topic(shard: &Rc<Node>) -> Result<(), (i16, String)> {
    if shard.metadata().topic(OFFSETS_TOPIC).is_some() {
        return Ok(());
    }
    let mut configs = BTreeMap::new();
    configs.insert("cleanup.policy".to_string(), "compact".to_string());
    configs.insert(
        "segment.bytes".to_string(),
        OFFSETS_SEGMENT_BYTES.to_string(),
    );
    let op = AdminOp::CreateTopics {
        topics: vec![NewTopic {
            name: OFFSETS_TOPIC.to_string(),
            partitions: shard.config.offsets_topic_partitions,
            // Capped at the live nodes by shard 0, so that a small
            // cluster can still coordinate groups.
            replication_factor: -2,
            configs,
        }],
        validate_only: false,
    };
    match route::admin(shard, op).await {
        Some(outcomes) => match outcomes.into_iter().next() {
            Some(Ok(_)) => Ok(()),
            // Another request created it first.
            Some(Err((code, _))) if code == Kafka::TopicAlreadyExists.code() => Ok(()),
            Some(Err((code, message))) => {
                tracing::error!(code, "creating {OFFSETS_TOPIC} failed: {message}");
                Err((COORDINATOR_NOT_AVAILABLE, message))
            }
            None => Err((COORDINATOR_NOT_AVAILABLE, "no answer".into())),
        },
        None => Err((
            COORDINATOR_NOT_AVAILABLE,
            "the metadata shard is not reachable".into(),
        )),
    }
}

/// Sends `call` to the shard coordinating `group_id`; the error code when
/// there is no coordinator to ask.
pub async fn call(shard: &Rc<Node>, group_id: &str, call: GroupCall) -> Result<GroupAnswer, i16> {
    let meta = shard.metadata();
    let Some(topic) = meta.topic(OFFSETS_TOPIC) else {
        return Err(COORDINATOR_NOT_AVAILABLE);
    };
    let owner = shard.owner(OFFSETS_TOPIC, partition_for(group_id, topic.partitions));
    match shard.call(owner, ShardRequest::Group(call)).await {
        Some(ShardResponse::Group(answer)) => Ok(answer),
        _ => Err(COORDINATOR_NOT_AVAILABLE),
    }
}

/// `call`, once the authorization check `allowed` passed; its error code
/// otherwise (GROUP_AUTHORIZATION_FAILED), the group untouched.
pub async fn call_if(
    allowed: Result<(), i16>,
    shard: &Rc<Node>,
    group_id: &str,
    group_call: GroupCall,
) -> Result<GroupAnswer, i16> {
    allowed?;
    call(shard, group_id, group_call).await
}

/// Asks every shard (ListGroups).
pub async fn call_all(shard: &Rc<Node>, make: impl Fn() -> GroupCall) -> Vec<GroupAnswer> {
    let mut out = Vec::with_capacity(shard.nr_shards);
    for to in 0..shard.nr_shards {
        if let Some(ShardResponse::Group(answer)) =
            shard.call(to, ShardRequest::Group(make())).await
        {
            out.push(answer);
        }
    }
    out
}

/// Kafka names a member's host `/IP`.
pub fn client_host(frame: &net::RequestFrame) -> String {
    frame
        .peer
        .map(|p| format!("/{}", p.ip()))
        .unwrap_or_default()
}

pub fn client_id(frame: &net::RequestFrame) -> String {
    frame
        .header
        .client_id
        .as_ref()
        .map(|c| c.to_string())
        .unwrap_or_default()
}
