//! Heartbeat (v0–v4): keeps a member's session alive and tells it when the
//! group is rebalancing.

use std::rc::Rc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};
use net::RequestFrame;

use super::groups;
use super::{respond, HandlerError, Reply};
use crate::group::coordinator::{GroupAnswer, GroupCall};
use crate::group::errors::{INVALID_GROUP_ID, UNKNOWN_SERVER_ERROR};
use crate::node::Node;

pub async fn handle(
    shard: &Rc<Node>,
    frame: &RequestFrame,
    request: HeartbeatRequest,
) -> Result<Reply, HandlerError> {
    let group_id = request.group_id.to_string();
    let mut response = HeartbeatResponse::default();
    response.error_code = if group_id.is_empty() {
        INVALID_GROUP_ID
    } else {
        let call = GroupCall::Heartbeat {
            group_id: group_id.clone(),
            member_id: request.member_id.to_string(),
            instance: request.group_instance_id.as_ref().map(|s| s.to_string()),
            generation: request.generation_id,
        };
        match groups::call_if(
            super::authz::group_read(shard, frame, &group_id),
            shard,
            &group_id,
            call,
        )
        .await
        {
            Ok(GroupAnswer::Code(code)) => code,
            Ok(_) => UNKNOWN_SERVER_ERROR,
            Err(code) => code,
        }
    };
    respond(frame, &response)
}
