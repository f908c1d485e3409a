//! Decoding the request header of a frame. The body stays a slice of the
//! frozen frame, so Produce records decoded from it are zero-copy views.

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::Decodable;

/// Bytes every request header starts with: api key, api version and
/// correlation id.
const HEADER_FIXED_BYTES: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("frame of {len} bytes is too short for a request header")]
    TooShort { len: usize },
    #[error("unknown api key {api_key} (correlation id {correlation_id})")]
    UnknownApiKey { api_key: i16, correlation_id: i32 },
    #[error("malformed request header for api key {api_key} v{api_version}: {reason}")]
    MalformedHeader {
        api_key: i16,
        api_version: i16,
        reason: String,
    },
}

/// A request whose header is decoded and whose body is still raw.
#[derive(Debug, Clone)]
pub struct RequestFrame {
    pub api_key: ApiKey,
    pub header: RequestHeader,
    pub body: Bytes,
    /// The client's address, set by the connection: group members are
    /// described with it.
    pub peer: Option<std::net::SocketAddr>,
    /// The broker listener the connection came in on (its place in the
    /// broker's list), set by the connection: Metadata answers with the
    /// addresses of that listener.
    pub listener: u8,
    /// Who the connection authenticated as (`User:NAME`), set by the
    /// connection: the authorizer checks requests against it.
    pub principal: std::sync::Arc<str>,
}

/// The principal of a connection that did not authenticate.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// `ANONYMOUS`, shared rather than allocated per request.
pub fn anonymous() -> std::sync::Arc<str> {
    static ANONYMOUS_SHARED: std::sync::OnceLock<std::sync::Arc<str>> = std::sync::OnceLock::new();
    ANONYMOUS_SHARED
        .get_or_init(|| std::sync::Arc::from(ANONYMOUS))
        .clone()
}

impl RequestFrame {
    pub fn api_version(&self) -> i16 {
        self.header.request_api_version
    }

    pub fn correlation_id(&self) -> i32 {
        self.header.correlation_id
    }
}

/// Decodes the header of a request frame (the payload after the length
/// prefix). Never panics, whatever the bytes.
pub fn decode_request(frame: Bytes) -> Result<RequestFrame, RequestError> {
    if frame.len() < HEADER_FIXED_BYTES {
        return Err(RequestError::TooShort { len: frame.len() });
    }
    let mut fixed = &frame[..HEADER_FIXED_BYTES];
    let api_key_raw = fixed.get_i16();
    let api_version = fixed.get_i16();
    let correlation_id = fixed.get_i32();
    let api_key = ApiKey::try_from(api_key_raw).map_err(|_| RequestError::UnknownApiKey {
        api_key: api_key_raw,
        correlation_id,
    })?;
    let header_version = api_key.request_header_version(api_version);
    let mut body = frame.clone();
    let header = match RequestHeader::decode(&mut body, header_version) {
        Ok(h) => Ok(h),
        // A client probing with an ApiVersions version newer than ours may
        // frame it with the older, non-flexible header; it must still get
        // the UNSUPPORTED_VERSION answer rather than a closed connection.
        Err(_) if api_key == ApiKey::ApiVersions && header_version > 1 => {
            body = frame;
            RequestHeader::decode(&mut body, 1)
        }
        Err(e) => Err(e),
    }
    .map_err(|e| RequestError::MalformedHeader {
        api_key: api_key_raw,
        api_version,
        reason: e.to_string(),
    })?;
    Ok(RequestFrame {
        api_key,
        header,
        body,
        peer: None,
        listener: 0,
        principal: anonymous(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::produce_request::{
        PartitionProduceData, ProduceRequest, TopicProduceData,
    };
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    #[test]
    fn produce_records_stay_a_slice_of_the_frame() {
        let records = Bytes::from_static(b"not really a batch but opaque here");
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("orders")))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(3)
                    .with_records(Some(records.clone()))])]);
        for version in [3i16, 8, 9, 11] {
            let header = RequestHeader::default()
                .with_request_api_key(ApiKey::Produce as i16)
                .with_request_api_version(version)
                .with_correlation_id(77)
                .with_client_id(Some(StrBytes::from_static_str("t")));
            let mut buf = BytesMut::new();
            header
                .encode(&mut buf, ApiKey::Produce.request_header_version(version))
                .expect("header");
            req.encode(&mut buf, version).expect("body");
            let frame = buf.freeze();
            let range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
            let decoded = decode_request(frame.clone()).expect("decodes");
            assert_eq!(decoded.api_key, ApiKey::Produce);
            assert_eq!(decoded.correlation_id(), 77);
            let mut body = decoded.body.clone();
            let got = ProduceRequest::decode(&mut body, version).expect("body decodes");
            let got_records = got.topic_data[0].partition_data[0]
                .records
                .clone()
                .expect("records");
            assert_eq!(got_records, records);
            assert!(range.contains(&(got_records.as_ptr() as usize)));
        }
    }

    #[test]
    fn short_and_unknown_frames_are_errors() {
        assert!(matches!(
            decode_request(Bytes::from_static(&[0, 1, 2])),
            Err(RequestError::TooShort { len: 3 })
        ));
        let frame = Bytes::from_static(&[0x7f, 0x00, 0, 1, 0, 0, 0, 9]);
        assert!(matches!(
            decode_request(frame),
            Err(RequestError::UnknownApiKey {
                api_key: 0x7f00,
                correlation_id: 9
            })
        ));
        // A client id length running past the end of the frame.
        let frame = Bytes::from_static(&[0, 18, 0, 0, 0, 0, 0, 1, 0x10, 0x00]);
        assert!(matches!(
            decode_request(frame),
            Err(RequestError::MalformedHeader { .. })
        ));
    }
}
