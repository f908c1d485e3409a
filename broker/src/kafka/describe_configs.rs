//! DescribeConfigs (v1-v4): topic configs with their values and sources
//! (set on the topic, from the broker, or Kafka's default), and the
//! broker's own configuration.

use std::rc::Rc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::ResponseError as Kafka;
use net::RequestFrame;

use super::{respond, str_bytes, HandlerError, Reply};
use crate::node::Node;
use crate::topic_config::{describe_broker, describe_topic, Described};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

pub async fn handle(
    shard: &Rc<Node>,
    frame: &RequestFrame,
    request: DescribeConfigsRequest,
) -> Result<Reply, HandlerError> {
    let meta = shard.metadata();
    let mut response = DescribeConfigsResponse::default();
    for resource in &request.resources {
        let mut result = DescribeConfigsResult::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        let name = resource.resource_name.as_str();
        let refused = super::authz::config_refusal(
            shard,
            &meta,
            frame,
            crate::acl::Operation::DescribeConfigs,
            resource.resource_type,
            name,
        );
        if let Some((code, message)) = refused {
            result.error_code = code;
            result.error_message = Some(super::str_bytes(message));
            response.results.push(result);
            continue;
        }
        let described: Result<Vec<Described>, (Kafka, String)> = match resource.resource_type {
            RESOURCE_TOPIC => match meta.topic(name) {
                Some(t) => Ok(describe_topic(&shard.config, &t.configs)),
                None => Err((
                    Kafka::UnknownTopicOrPartition,
                    format!("Topic {name} does not exist"),
                )),
            },
            RESOURCE_BROKER => {
                if name.is_empty() || name == shard.config.node_id.to_string() {
                    Ok(describe_broker(&shard.config))
                } else {
                    Err((
                        Kafka::InvalidRequest,
                        format!(
                            "Unexpected broker id, expected {} but received {name}",
                            shard.config.node_id
                        ),
                    ))
                }
            }
            other => Err((
                Kafka::InvalidRequest,
                format!("Unsupported resource type {other}"),
            )),
        };
        match described {
            Ok(entries) => {
                let keys = resource.configuration_keys.as_ref();
                result.configs = entries
                    .into_iter()
                    .filter(|d| keys.is_none_or(|k| k.iter().any(|k| k.as_str() == d.name)))
                    .map(|d| {
                        let mut c = DescribeConfigsResourceResult::default();
                        c.name = str_bytes(d.name.clone());
                        c.value = Some(str_bytes(d.value.clone()));
                        c.config_source = d.source;
                        c.config_type = d.config_type;
                        if request.include_synonyms {
                            let mut s = DescribeConfigsSynonym::default();
                            s.name = str_bytes(d.name);
                            s.value = Some(str_bytes(d.value));
                            s.source = d.source;
                            c.synonyms = vec![s];
                        }
                        c
                    })
                    .collect();
            }
            Err((e, message)) => {
                result.error_code = e.code();
                result.error_message = Some(str_bytes(message));
            }
        }
        response.results.push(result);
    }
    respond(frame, &response)
}
