//! AlterConfigs (v0-v2): replaces a topic's configs with the set given.
//! Checked like CreateTopics configs; shard 0 records the change and every
//! owning shard applies it to its logs. Broker configs are static here.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError as Kafka;
use net::RequestFrame;

use super::{respond, str_bytes, HandlerError, Reply};
use crate::cluster::admin::{AdminOp, ConfigChange};
use crate::node::Node;
use crate::route;

pub(crate) const RESOURCE_TOPIC: i8 = 2;
pub(crate) const RESOURCE_BROKER: i8 = 4;

pub async fn handle(
    shard: &Rc<Node>,
    frame: &RequestFrame,
    request: AlterConfigsRequest,
) -> Result<Reply, HandlerError> {
    let meta = shard.metadata();
    let resources = request
        .resources
        .into_iter()
        .map(|r| {
            let mut configs = BTreeMap::new();
            let mut refusal = super::authz::config_refusal(
                shard,
                &meta,
                frame,
                crate::acl::Operation::AlterConfigs,
                r.resource_type,
                r.resource_name.as_str(),
            );
            for c in r.configs {
                match c.value {
                    Some(v) => {
                        configs.insert(c.name.to_string(), v.to_string());
                    }
                    None if refusal.is_none() => {
                        refusal = Some((
                            Kafka::InvalidRequest.code(),
                            format!("Null value not supported for : {}", c.name.as_str()),
                        ))
                    }
                    None => {}
                }
            }
            (
                r.resource_type,
                r.resource_name,
                refusal,
                ConfigChange::Replace(configs),
            )
        })
        .collect();
    let outcomes = alter(shard, resources, request.validate_only).await;
    let mut response = AlterConfigsResponse::default();
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

type Resource = (i8, StrBytes, Option<(i16, String)>, ConfigChange);
type Outcome = (i8, StrBytes, Result<(), (i16, String)>);

/// Applies topic config changes through shard 0, in request order.
pub(crate) async fn alter(
    shard: &Rc<Node>,
    resources: Vec<Resource>,
    validate_only: bool,
) -> Vec<Outcome> {
    let mut changes = Vec::new();
    let mut slots = Vec::new();
    for (resource_type, name, refusal, change) in resources {
        let refusal = refusal.or(match resource_type {
            RESOURCE_TOPIC => None,
            RESOURCE_BROKER => Some((
                Kafka::InvalidRequest.code(),
                "Broker configs are static: set them in the config file or flags".to_string(),
            )),
            other => Some((
                Kafka::InvalidRequest.code(),
                format!("Unsupported resource type {other}"),
            )),
        });
        match refusal {
            Some(r) => slots.push((resource_type, name, Err(r))),
            None => {
                changes.push((name.to_string(), change));
                slots.push((resource_type, name, Ok(())));
            }
        }
    }
    let mut answers = if changes.is_empty() {
        Vec::new()
    } else {
        route::admin(
            shard,
            AdminOp::AlterTopicConfigs {
                changes,
                validate_only,
            },
        )
        .await
        .unwrap_or_default()
    }
    .into_iter();
    slots
        .into_iter()
        .map(|(t, name, slot)| {
            let outcome = match slot {
                Err(r) => Err(r),
                Ok(()) => match answers.next() {
                    Some(Ok(_)) => Ok(()),
                    Some(Err(e)) => Err(e),
                    None => Err((
                        Kafka::UnknownServerError.code(),
                        "no answer from shard 0".into(),
                    )),
                },
            };
            (t, name, outcome)
        })
        .collect()
}
