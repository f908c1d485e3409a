//! Response framing: `[i32 length][response header][body]`, with the header
//! version Kafka uses for each API key and version.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::Encodable;

#[derive(Debug, thiserror::Error)]
#[error("encoding the {api_key:?} v{api_version} response failed: {reason}")]
pub struct ResponseError {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub reason: String,
}

/// Writes a response header (without the length prefix) into `buf`.
pub fn response_header_bytes(
    buf: &mut BytesMut,
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
) -> Result<(), ResponseError> {
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(buf, api_key.response_header_version(api_version))
        .map_err(|e| ResponseError {
            api_key,
            api_version,
            reason: e.to_string(),
        })
}

/// Encodes a whole response frame, length prefix included.
pub fn encode_response<M: Encodable>(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &M,
) -> Result<Bytes, ResponseError> {
    let err = |reason: String| ResponseError {
        api_key,
        api_version,
        reason,
    };
    let size = body
        .compute_size(api_version)
        .map_err(|e| err(e.to_string()))?;
    let mut buf = BytesMut::with_capacity(4 + 8 + size);
    buf.put_i32(0);
    response_header_bytes(&mut buf, api_key, api_version, correlation_id)?;
    body.encode(&mut buf, api_version)
        .map_err(|e| err(e.to_string()))?;
    let length = frame_length(buf.len() - 4, api_key, api_version)?;
    buf[..4].copy_from_slice(&length.to_be_bytes());
    Ok(buf.freeze())
}

/// The length prefix for `payload_bytes`, refusing what does not fit an i32.
pub(crate) fn frame_length(
    payload_bytes: usize,
    api_key: ApiKey,
    api_version: i16,
) -> Result<i32, ResponseError> {
    i32::try_from(payload_bytes).map_err(|_| ResponseError {
        api_key,
        api_version,
        reason: format!("{payload_bytes} bytes do not fit a frame"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiVersionsResponse;
    use kafka_protocol::protocol::Decodable;

    #[test]
    fn frames_carry_length_header_and_body() {
        let body = ApiVersionsResponse::default().with_error_code(35);
        for version in 0..=4i16 {
            let frame = encode_response(ApiKey::ApiVersions, version, 1234, &body).expect("ok");
            let length = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
            assert_eq!(length as usize, frame.len() - 4);
            let mut rest = frame.slice(4..);
            // ApiVersions responses always use header v0, so old clients can
            // read the error whatever version they asked for.
            let header = ResponseHeader::decode(&mut rest, 0).expect("header");
            assert_eq!(header.correlation_id, 1234);
            let back = ApiVersionsResponse::decode(&mut rest, version).expect("body");
            assert_eq!(back.error_code, 35);
        }
    }
}
