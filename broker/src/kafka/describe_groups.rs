//! DescribeGroups (v0–v5): state, protocol and members (with their
//! subscriptions and assignments) of each group; an unknown group is "Dead".

use std::rc::Rc;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use net::RequestFrame;

use super::groups;
use super::{respond, str_bytes, HandlerError, Reply};
use crate::acl::{Operation, ResourceType};
use crate::group::coordinator::{GroupAnswer, GroupCall};
use crate::group::errors::UNKNOWN_SERVER_ERROR;
use crate::node::Node;

pub async fn handle(
    shard: &Rc<Node>,
    frame: &RequestFrame,
    request: DescribeGroupsRequest,
) -> Result<Reply, HandlerError> {
    let meta = shard.metadata();
    let mut response = DescribeGroupsResponse::default();
    for group_id in &request.groups {
        let call = GroupCall::Describe(group_id.to_string());
        let mut d = DescribedGroup::default();
        d.group_id = group_id.clone();
        d.authorized_operations = i32::MIN;
        // As Kafka: Describe on the group.
        let allowed = if super::authz::allowed(
            shard,
            &meta,
            frame,
            Operation::Describe,
            ResourceType::Group,
            group_id,
        ) {
            if request.include_authorized_operations && frame.api_version() >= 3 {
                d.authorized_operations = super::authz::authorized_operations(
                    shard,
                    &meta,
                    frame,
                    ResourceType::Group,
                    group_id,
                );
            }
            Ok(())
        } else {
            Err(kafka_protocol::ResponseError::GroupAuthorizationFailed.code())
        };
        match groups::call_if(allowed, shard, group_id, call).await {
            Ok(GroupAnswer::Described(g)) => {
                d.error_code = g.error_code;
                d.group_state = str_bytes(g.state);
                d.protocol_type = str_bytes(g.protocol_type);
                d.protocol_data = str_bytes(g.protocol);
                d.members = g
                    .members
                    .into_iter()
                    .map(|m| {
                        let mut r = DescribedGroupMember::default();
                        r.member_id = str_bytes(m.member_id);
                        r.group_instance_id = m.group_instance_id.map(str_bytes);
                        r.client_id = str_bytes(m.client_id);
                        r.client_host = str_bytes(m.client_host);
                        r.member_metadata = m.metadata;
                        r.member_assignment = m.assignment;
                        r
                    })
                    .collect();
            }
            Ok(_) => d.error_code = UNKNOWN_SERVER_ERROR,
            Err(code) => d.error_code = code,
        }
        response.groups.push(d);
    }
    respond(frame, &response)
}
