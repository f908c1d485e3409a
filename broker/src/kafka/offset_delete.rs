//! OffsetDelete (v0): removes a group's committed offsets for partitions it
//! no longer consumes (GROUP_SUBSCRIBED_TO_TOPIC while it still does).

use std::rc::Rc;

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};
use net::RequestFrame;

use super::groups;
use super::{respond, HandlerError, Reply};
use crate::acl::{Operation, ResourceType};
use crate::group::coordinator::{GroupAnswer, GroupCall};
use crate::group::errors::UNKNOWN_SERVER_ERROR;
use crate::node::Node;

pub async fn handle(
    shard: &Rc<Node>,
    frame: &RequestFrame,
    request: OffsetDeleteRequest,
) -> Result<Reply, HandlerError> {
    let group_id = request.group_id.to_string();
    // As Kafka: Read on each topic, or its partitions are refused (and
    // left out of the deletion).
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
    let mut flags = readable.iter();
    let partitions: Vec<(String, i32)> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.to_string(), p.partition_index))
        })
        .filter(|_| flags.next().copied().unwrap_or(false))
        .collect();
    let n = partitions.len();
    let call = GroupCall::DeleteOffsets {
        group_id: group_id.clone(),
        partitions,
    };
    // As Kafka: Delete on the group.
    let allowed = if super::authz::check(
        shard,
        frame,
        Operation::Delete,
        ResourceType::Group,
        &group_id,
    ) {
        Ok(())
    } else {
        Err(kafka_protocol::ResponseError::GroupAuthorizationFailed.code())
    };
    let (top, codes) = match groups::call_if(allowed, shard, &group_id, call).await {
        Ok(GroupAnswer::Codes(top, codes)) => (top, codes),
        Ok(_) => (UNKNOWN_SERVER_ERROR, vec![0; n]),
        Err(code) => (code, vec![0; n]),
    };
    let mut response = OffsetDeleteResponse::default();
    response.error_code = top;
    if top == 0 {
        let mut codes = codes.into_iter();
        let refused = kafka_protocol::ResponseError::TopicAuthorizationFailed.code();
        let mut codes = readable.into_iter().map(move |ok| {
            if ok {
                codes.next().unwrap_or(UNKNOWN_SERVER_ERROR)
            } else {
                refused
            }
        });
        response.topics = request
            .topics
            .iter()
            .map(|t| {
                let mut rt = OffsetDeleteResponseTopic::default();
                rt.name = t.name.clone();
                rt.partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let mut rp = OffsetDeleteResponsePartition::default();
                        rp.partition_index = p.partition_index;
                        rp.error_code = codes.next().unwrap_or(UNKNOWN_SERVER_ERROR);
                        rp
                    })
                    .collect();
                rt
            })
            .collect();
    }
    respond(frame, &response)
}
