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

use super::{respond, HandlerError, Reply};
use crate::node::Node;
use crate::route;

pub async fn handle(
    shard: &Rc<Node>,
    frame: &RequestFrame,
    request: OffsetForLeaderEpochRequest,
) -> Result<Reply, HandlerError> {
    let items: Vec<_> = request
        .topics
        .iter()
        .flat_map(|t| {
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
    let mut response = OffsetForLeaderEpochResponse::default();
    for t in &request.topics {
        let mut result = OffsetForLeaderTopicResult::default();
        result.topic = t.topic.clone();
        for p in &t.partitions {
            let (error_code, leader_epoch, end_offset) = answers.next().unwrap_or((-1, -1, -1));
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
