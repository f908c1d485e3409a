//! JoinGroup (v0–v9): a member joins (or rejoins) a group and waits until
//! the rebalance completes; the leader gets every member's metadata.

use std::rc::Rc;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use net::RequestFrame;

use super::groups::{self, client_host, client_id};
use super::{respond, str_bytes, HandlerError, Reply};
use crate::group::coordinator::{GroupAnswer, GroupCall};
use crate::group::errors::UNKNOWN_SERVER_ERROR;
use crate::group::JoinRequest;
use crate::node::Node;

pub async fn handle(
    shard: &Rc<Node>,
    frame: &RequestFrame,
    request: JoinGroupRequest,
) -> Result<Reply, HandlerError> {
    let version = frame.api_version();
    let group_id = request.group_id.to_string();
    let join = JoinRequest {
        request: 0,
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: client_id(frame),
        client_host: client_host(frame),
        session_timeout_ms: request.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let call = GroupCall::Join {
        group_id: group_id.clone(),
        request: join,
    };
    let answer = match groups::call_if(
        super::authz::group_read(shard, frame, &group_id),
        shard,
        &group_id,
        call,
    )
    .await
    {
        Ok(GroupAnswer::Join(a)) => a,
        Ok(_) => crate::group::classic::join_error(UNKNOWN_SERVER_ERROR, &request.member_id),
        Err(code) => crate::group::classic::join_error(code, &request.member_id),
    };
    let mut response = JoinGroupResponse::default();
    response.error_code = answer.error_code;
    response.generation_id = answer.generation_id;
    response.protocol_type = answer.protocol_type.map(str_bytes);
    response.protocol_name = answer.protocol_name.map(str_bytes);
    if version < 7 && response.protocol_name.is_none() {
        // Before v7 the protocol name is not nullable.
        response.protocol_name = Some(str_bytes(""));
    }
    response.leader = str_bytes(answer.leader);
    response.member_id = str_bytes(answer.member_id);
    response.members = answer
        .members
        .into_iter()
        .map(|m| {
            let mut r = JoinGroupResponseMember::default();
            r.member_id = str_bytes(m.member_id);
            r.group_instance_id = m.group_instance_id.map(str_bytes);
            r.metadata = m.metadata;
            r
        })
        .collect();
    respond(frame, &response)
}
