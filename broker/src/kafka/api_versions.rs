//! ApiVersions: the APIs and version ranges this broker handles, straight
//! from the dispatch table. An unsupported ApiVersions version gets Kafka's
//! v0 answer with UNSUPPORTED_VERSION, so the client can retry lower.

use std::rc::Rc;

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::ResponseError as Kafka;
use net::RequestFrame;

use super::{apis, respond, HandlerError, Reply};
use crate::node::Node;

pub async fn handle(
    _shard: &Rc<Node>,
    frame: &RequestFrame,
    _request: ApiVersionsRequest,
) -> Result<Reply, HandlerError> {
    respond(frame, &response(0))
}

fn response(error_code: i16) -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    r.error_code = error_code;
    r.api_keys = apis()
        .iter()
        .map(|a| {
            let mut v = ApiVersion::default();
            v.api_key = a.key as i16;
            v.min_version = a.min_version;
            v.max_version = a.max_version;
            v
        })
        .collect();
    r
}

pub fn unsupported_version(frame: &RequestFrame) -> Result<Reply, HandlerError> {
    let body = response(Kafka::UnsupportedVersion.code());
    let bytes = net::encode_response(ApiKey::ApiVersions, 0, frame.correlation_id(), &body)?;
    Ok(Reply::Frame(vec![bytes]))
}
