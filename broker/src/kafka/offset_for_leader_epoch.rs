//! OffsetForLeaderEpoch (v2–v4, as Kafka 4 serves it): where a leader epoch ends in the
//! leader's log, which consumers use after a leader change to check that
//! their position was not truncated away (KIP-320), answered by the
//! partition's leader from its epoch history. Followers' own fetches carry
//! the same question on the replication links, so `replica_id` is ignored.

use std::rc::Rc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use net::RequestFrame;

use super::{authz, respond, HandlerError, Reply};
use crate::acl::{Operation, ResourceType};
use crate::node::Node;
use crate::route;
use kafka_protocol::ResponseError as Kafka;

pub async fn handle(
    shard: &Rc<Node>,
    frame: &RequestFrame,
    request: OffsetForLeaderEpochRequest,
) -> Result<Reply, HandlerError> {
    let meta = shard.metadata();
    // As Kafka: ClusterAction for a follower (replica id >= 0), else
    // Describe on each topic.
    let follower = request.replica_id.0 >= 0;
    let allowed: Vec<bool> = request
        .topics
        .iter()
        .map(|t| {
            if follower {
                authz::cluster(shard, &meta, frame, Operation::ClusterAction)
            } else {
                authz::allowed(
                    shard,
                    &meta,
                    frame,
                    Operation::Describe,
                    ResourceType::Topic,
                    t.topic.0.as_str(),
                )
            }
        })
        .collect();
    let items: Vec<_> = request
        .topics
        .iter()
        .zip(&allowed)
        .filter(|(_, &ok)| ok)
        .flat_map(|(t, _)| {
            t.partitions.iter().map(|p| {
                (
                    (t.topic.0.to_string(), p.partition),
                    p.current_leader_epoch,
                    p.leader_epoch,
                )
            })
        })
        .collect();
    let mut answers = route::epoch_ends(shard, items).await.into_iter();
    let refused = (Kafka::TopicAuthorizationFailed.code(), -1, -1);
    let mut response = OffsetForLeaderEpochResponse::default();
    for (t, &ok) in request.topics.iter().zip(&allowed) {
        let mut result = OffsetForLeaderTopicResult::default();
        result.topic = t.topic.clone();
        for p in &t.partitions {
            let (error_code, leader_epoch, end_offset) = if ok {
                answers.next().unwrap_or((-1, -1, -1))
            } else {
                refused
            };
            let mut e = EpochEndOffset::default();
            e.partition = p.partition;
            e.error_code = error_code;
            e.leader_epoch = leader_epoch;
            e.end_offset = end_offset;
            result.partitions.push(e);
        }
        response.topics.push(result);
    }
    respond(frame, &response)
}
