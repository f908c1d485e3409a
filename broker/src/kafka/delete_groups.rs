//! DeleteGroups (v0–v2): removes empty groups and their committed offsets
//! (NON_EMPTY_GROUP while members remain, GROUP_ID_NOT_FOUND if unknown).

use std::rc::Rc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};
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
    request: DeleteGroupsRequest,
) -> Result<Reply, HandlerError> {
    let mut response = DeleteGroupsResponse::default();
    for group_id in &request.groups_names {
        let call = GroupCall::Delete(group_id.to_string());
        let mut r = DeletableGroupResult::default();
        r.group_id = group_id.clone();
        // As Kafka: Delete on the group.
        let allowed = if super::authz::check(
            shard,
            frame,
            Operation::Delete,
            ResourceType::Group,
            group_id,
        ) {
            Ok(())
        } else {
            Err(kafka_protocol::ResponseError::GroupAuthorizationFailed.code())
        };
        r.error_code = match groups::call_if(allowed, shard, group_id, call).await {
            Ok(GroupAnswer::Code(code)) => code,
            Ok(_) => UNKNOWN_SERVER_ERROR,
            Err(code) => code,
        };
        response.results.push(r);
    }
    respond(frame, &response)
}
