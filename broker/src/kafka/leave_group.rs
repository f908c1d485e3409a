//! LeaveGroup (v0–v5): members leave at once instead of waiting for their
//! session to expire; v3+ removes several (static) members in one request.

use std::rc::Rc;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};
use net::RequestFrame;

use super::groups;
use super::{respond, str_bytes, HandlerError, Reply};
use crate::group::coordinator::{GroupAnswer, GroupCall};
use crate::group::errors::{INVALID_GROUP_ID, UNKNOWN_SERVER_ERROR};
use crate::node::Node;

pub async fn handle(
    shard: &Rc<Node>,
    frame: &RequestFrame,
    request: LeaveGroupRequest,
) -> Result<Reply, HandlerError> {
    let version = frame.api_version();
    let group_id = request.group_id.to_string();
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let (top, codes) = if group_id.is_empty() {
        (INVALID_GROUP_ID, vec![INVALID_GROUP_ID; members.len()])
    } else {
        let call = GroupCall::Leave {
            group_id: group_id.clone(),
            members: members.clone(),
        };
        match groups::call_if(
            super::authz::group_read(shard, frame, &group_id),
            shard,
            &group_id,
            call,
        )
        .await
        {
            Ok(GroupAnswer::Codes(top, codes)) => (top, codes),
            Ok(_) => (
                UNKNOWN_SERVER_ERROR,
                vec![UNKNOWN_SERVER_ERROR; members.len()],
            ),
            Err(code) => (code, vec![code; members.len()]),
        }
    };
    let mut response = LeaveGroupResponse::default();
    if version >= 3 {
        response.error_code = top;
        response.members = members
            .into_iter()
            .zip(codes)
            .map(|((member_id, instance), error_code)| {
                let mut m = MemberResponse::default();
                m.member_id = str_bytes(member_id);
                m.group_instance_id = instance.map(str_bytes);
                m.error_code = error_code;
                m
            })
            .collect();
    } else {
        // One member: its outcome is the request's.
        response.error_code = if top != 0 {
            top
        } else {
            codes.first().copied().unwrap_or(0)
        };
    }
    respond(frame, &response)
}
