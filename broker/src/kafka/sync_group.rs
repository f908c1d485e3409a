//! SyncGroup (v0–v5): the leader hands in the assignment it computed; every
//! member gets its own share once the leader's arrives.

use std::rc::Rc;

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use net::RequestFrame;

use super::groups;
use super::{respond, str_bytes, HandlerError, Reply};
use crate::group::coordinator::{GroupAnswer, GroupCall};
use crate::group::errors::UNKNOWN_SERVER_ERROR;
use crate::group::SyncRequest;
use crate::node::Node;

pub async fn handle(
    shard: &Rc<Node>,
    frame: &RequestFrame,
    request: SyncGroupRequest,
) -> Result<Reply, HandlerError> {
    let group_id = request.group_id.to_string();
    let sync = SyncRequest {
        request: 0,
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
        generation_id: request.generation_id,
        protocol_type: request.protocol_type.as_ref().map(|s| s.to_string()),
        protocol_name: request.protocol_name.as_ref().map(|s| s.to_string()),
        assignments: request
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
            .collect(),
    };
    let call = GroupCall::Sync {
        group_id: group_id.clone(),
        request: sync,
    };
    let mut response = SyncGroupResponse::default();
    match groups::call_if(
        super::authz::group_read(shard, frame, &group_id),
        shard,
        &group_id,
        call,
    )
    .await
    {
        Ok(GroupAnswer::Sync(a)) => {
            response.error_code = a.error_code;
            response.protocol_type = a.protocol_type.map(str_bytes);
            response.protocol_name = a.protocol_name.map(str_bytes);
            response.assignment = a.assignment;
        }
        Ok(_) => response.error_code = UNKNOWN_SERVER_ERROR,
        Err(code) => response.error_code = code,
    }
    respond(frame, &response)
}
