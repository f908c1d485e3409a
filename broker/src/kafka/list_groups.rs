//! ListGroups (v0–v5): every group this node coordinates, optionally
//! filtered by state (v4+) and type (v5+; all of Sluice's are "classic").

use std::rc::Rc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use net::RequestFrame;

use super::groups;
use super::{respond, str_bytes, HandlerError, Reply};
use crate::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::group::coordinator::{GroupAnswer, GroupCall};
use crate::node::Node;

pub async fn handle(
    shard: &Rc<Node>,
    frame: &RequestFrame,
    request: ListGroupsRequest,
) -> Result<Reply, HandlerError> {
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let types: Vec<String> = request
        .types_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    // As Kafka: every group with Describe on the cluster, else those the
    // principal may describe, the others left out without a word.
    let meta = shard.metadata();
    let all = super::authz::allowed_quietly(
        shard,
        &meta,
        frame,
        Operation::Describe,
        ResourceType::Cluster,
        CLUSTER_NAME,
    );
    let mut response = ListGroupsResponse::default();
    for answer in groups::call_all(shard, || GroupCall::List).await {
        let GroupAnswer::List(listed) = answer else {
            continue;
        };
        for g in listed {
            let describable = all
                || super::authz::allowed_quietly(
                    shard,
                    &meta,
                    frame,
                    Operation::Describe,
                    ResourceType::Group,
                    &g.group_id,
                );
            if !describable {
                continue;
            }
            if !states.is_empty() && !states.contains(&g.state.to_lowercase()) {
                continue;
            }
            if !types.is_empty() && !types.iter().any(|t| t == "classic") {
                continue;
            }
            let mut l = ListedGroup::default();
            l.group_id = GroupId(str_bytes(g.group_id));
            l.protocol_type = str_bytes(g.protocol_type);
            l.group_state = str_bytes(g.state);
            l.group_type = str_bytes("classic");
            response.groups.push(l);
        }
    }
    respond(frame, &response)
}
