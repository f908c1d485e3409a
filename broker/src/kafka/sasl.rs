//! SaslHandshake and SaslAuthenticate where no authentication is under way:
//! on a listener without SASL, or a SaslAuthenticate on a connection that
//! has authenticated already. Kafka answers both with ILLEGAL_SASL_STATE
//! there. While a SASL listener's connection authenticates, or
//! re-authenticates (a SaslHandshake once authenticated, KIP-368),
//! `connection` answers them itself (see `security::sasl`), because what it
//! may read next depends on them.

use std::rc::Rc;

use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::ResponseError as Kafka;
use net::RequestFrame;

use super::{respond, str_bytes, HandlerError, Reply};
use crate::node::Node;

pub mod handshake {
    use super::*;

    pub async fn handle(
        _shard: &Rc<Node>,
        frame: &RequestFrame,
        _request: SaslHandshakeRequest,
    ) -> Result<Reply, HandlerError> {
        let mut response = SaslHandshakeResponse::default();
        response.error_code = Kafka::IllegalSaslState.code();
        respond(frame, &response)
    }
}

pub mod authenticate {
    use super::*;

    pub async fn handle(
        _shard: &Rc<Node>,
        frame: &RequestFrame,
        _request: SaslAuthenticateRequest,
    ) -> Result<Reply, HandlerError> {
        let mut response = SaslAuthenticateResponse::default();
        response.error_code = Kafka::IllegalSaslState.code();
        response.error_message = Some(str_bytes(
            "SaslAuthenticate request received after successful authentication or on a listener without SASL",
        ));
        respond(frame, &response)
    }
}
