//! OffsetCommit (v2–v9): a group's progress, stored in `__consumer_offsets`
//! and acknowledged once the log's fsync policy covers it.

use std::rc::Rc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use net::RequestFrame;

use super::groups;
use super::{respond, HandlerError, Reply};
use crate::acl::{Operation, ResourceType};
use crate::group::coordinator::{GroupAnswer, GroupCall, OffsetCommit};
use crate::group::errors::UNKNOWN_SERVER_ERROR;
use crate::node::Node;
use kafka_protocol::ResponseError;

pub async fn handle(
    shard: &Rc<Node>,
    frame: &RequestFrame,
    request: OffsetCommitRequest,
) -> Result<Reply, HandlerError> {
    let group_id = request.group_id.to_string();
    // As Kafka: Read on the group, or every partition is refused; Read on
    // each topic, or its partitions are.
    let group_allowed = super::authz::group_read(shard, frame, &group_id);
    let group_refused = group_allowed.err();
    let meta = shard.metadata();
    let readable: Vec<bool> = request
        .topics
        .iter()
        .flat_map(|t| {
            let ok = super::authz::allowed(
                shard,
                &meta,
                frame,
                Operation::Read,
                ResourceType::Topic,
                t.name.as_str(),
            );
            t.partitions.iter().map(move |_| ok)
        })
        .collect();
    let mut readable_flags = readable.iter();
    let offsets: Vec<(String, i32, i64, i32, Option<String>)> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.to_string(),
                    p.partition_index,
                    p.committed_offset,
                    p.committed_leader_epoch,
                    p.committed_metadata.as_ref().map(|m| m.to_string()),
                )
            })
        })
        .filter(|_| readable_flags.next().copied().unwrap_or(false))
        .collect();
    let n = offsets.len();
    let call = GroupCall::Commit(OffsetCommit {
        group_id: group_id.clone(),
        member_id: request.member_id.to_string(),
        instance: request.group_instance_id.as_ref().map(|s| s.to_string()),
        generation: request.generation_id_or_member_epoch,
        offsets,
    });
    let codes = match groups::call_if(group_allowed, shard, &group_id, call).await {
        // A group-level refusal applies to every partition.
        Ok(GroupAnswer::Codes(top, codes)) if top != 0 => vec![top; codes.len()],
        Ok(GroupAnswer::Codes(_, codes)) => codes,
        Ok(_) => vec![UNKNOWN_SERVER_ERROR; n],
        Err(code) => vec![code; n],
    };
    let mut codes = codes.into_iter();
    let topic_refused = group_refused.unwrap_or(ResponseError::TopicAuthorizationFailed.code());
    let mut codes = readable.into_iter().map(move |ok| {
        if ok && group_refused.is_none() {
            codes.next().unwrap_or(UNKNOWN_SERVER_ERROR)
        } else {
            topic_refused
        }
    });
    let mut response = OffsetCommitResponse::default();
    response.topics = request
        .topics
        .iter()
        .map(|t| {
            let mut rt = OffsetCommitResponseTopic::default();
            rt.name = t.name.clone();
            rt.topic_id = t.topic_id;
            rt.partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut rp = OffsetCommitResponsePartition::default();
                    rp.partition_index = p.partition_index;
                    rp.error_code = codes.next().unwrap_or(UNKNOWN_SERVER_ERROR);
                    rp
                })
                .collect();
            rt
        })
        .collect();
    respond(frame, &response)
}
