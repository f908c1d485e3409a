//! IncrementalAlterConfigs (v0-v1): sets, deletes (back to the default),
//! appends to or subtracts from topic configs, leaving the others as they
//! are.

use std::rc::Rc;

use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use net::RequestFrame;

use super::alter_configs::alter;
use super::{respond, str_bytes, HandlerError, Reply};
use crate::cluster::admin::ConfigChange;
use crate::node::Node;

pub async fn handle(
    shard: &Rc<Node>,
    frame: &RequestFrame,
    request: IncrementalAlterConfigsRequest,
) -> Result<Reply, HandlerError> {
    let meta = shard.metadata();
    let resources = request
        .resources
        .into_iter()
        .map(|r| {
            let refusal = super::authz::config_refusal(
                shard,
                &meta,
                frame,
                crate::acl::Operation::AlterConfigs,
                r.resource_type,
                r.resource_name.as_str(),
            );
            let ops = r
                .configs
                .into_iter()
                .map(|c| {
                    (
                        c.name.to_string(),
                        c.config_operation,
                        c.value.map(|v| v.to_string()),
                    )
                })
                .collect();
            (
                r.resource_type,
                r.resource_name,
                refusal,
                ConfigChange::Incremental(ops),
            )
        })
        .collect();
    let outcomes = alter(shard, resources, request.validate_only).await;
    let mut response = IncrementalAlterConfigsResponse::default();
    for (resource_type, resource_name, outcome) in outcomes {
        let mut r = AlterConfigsResourceResponse::default();
        r.resource_type = resource_type;
        r.resource_name = resource_name;
        if let Err((code, message)) = outcome {
            r.error_code = code;
            r.error_message = Some(str_bytes(message));
        }
        response.responses.push(r);
    }
    respond(frame, &response)
}
