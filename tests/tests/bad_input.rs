//! Bad input over real TCP: garbage frames, oversize and negative length
//! prefixes, unknown API keys, unsupported versions and truncated bodies
//! each get a Kafka error or a closed connection, while other connections
//! keep working and the broker keeps running.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, ProduceRequest,
    RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use sluice_tests::Broker;

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as i32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

fn request<M: Encodable>(key: ApiKey, version: i16, correlation_id: i32, body: &M) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("bad-input-test")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, key.request_header_version(version))
        .expect("header");
    body.encode(&mut buf, version).expect("body");
    frame(&buf)
}

fn connect(broker: &Broker) -> TcpStream {
    let s = TcpStream::connect(broker.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

fn read_response(s: &mut TcpStream) -> Option<Bytes> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    Some(Bytes::from(body))
}

/// True when the broker closed the connection (EOF or reset) without
/// sending anything. The read timeout is not a close: a connection left
/// hanging fails the check.
fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

fn api_versions(s: &mut TcpStream, correlation_id: i32) -> ApiVersionsResponse {
    let req = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("t"))
        .with_client_software_version(StrBytes::from_static_str("1"));
    s.write_all(&request(ApiKey::ApiVersions, 3, correlation_id, &req))
        .expect("send");
    let mut resp = read_response(s).expect("ApiVersions answer");
    let header = ResponseHeader::decode(&mut resp, 0).expect("header");
    assert_eq!(header.correlation_id, correlation_id);
    ApiVersionsResponse::decode(&mut resp, 3).expect("body")
}

#[test]
fn bad_frames_close_their_connection_only() {
    let broker = Broker::start(&[
        "--cores",
        "2",
        "--max-request-bytes",
        "1048576",
        "--connections-max-idle-ms",
        "4000",
    ]);
    let mut good = connect(&broker);
    let first = api_versions(&mut good, 1);
    assert_eq!(first.error_code, 0);
    let advertised: Vec<i16> = first.api_keys.iter().map(|k| k.api_key).collect();
    assert!(advertised.contains(&(ApiKey::Fetch as i16)));

    // Garbage: an unknown API key.
    let mut s = connect(&broker);
    s.write_all(&frame(&[0x7f, 0x7f, 0, 0, 0, 0, 0, 7, 1, 2, 3]))
        .expect("send");
    assert!(closed(&mut s), "unknown api key closes");

    // Too short for a header.
    let mut s = connect(&broker);
    s.write_all(&frame(&[0, 3])).expect("send");
    assert!(closed(&mut s), "short frame closes");

    // A length prefix far above socket.request.max.bytes, with no payload:
    // refused from the prefix alone.
    let mut s = connect(&broker);
    s.write_all(&i32::MAX.to_be_bytes()).expect("send");
    assert!(closed(&mut s), "oversize prefix closes");

    let mut s = connect(&broker);
    s.write_all(&(-1i32).to_be_bytes()).expect("send");
    assert!(closed(&mut s), "negative prefix closes");

    // ApiVersions at an unsupported version: the v0 fallback with
    // UNSUPPORTED_VERSION and the supported keys.
    let mut s = connect(&broker);
    let mut raw = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::ApiVersions as i16)
        .with_request_api_version(99)
        .with_correlation_id(5)
        .encode(&mut raw, 1)
        .expect("header");
    s.write_all(&frame(&raw)).expect("send");
    let mut resp = read_response(&mut s).expect("fallback answer");
    assert_eq!(
        ResponseHeader::decode(&mut resp, 0)
            .expect("header")
            .correlation_id,
        5
    );
    let fallback = ApiVersionsResponse::decode(&mut resp, 0).expect("v0 body");
    assert_eq!(fallback.error_code, 35, "UNSUPPORTED_VERSION");
    assert_eq!(fallback.api_keys.len(), first.api_keys.len());

    // Produce v2 (below what is handled) closes, as Kafka does.
    let mut s = connect(&broker);
    let mut raw = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(2)
        .with_correlation_id(6)
        .encode(&mut raw, 1)
        .expect("header");
    raw.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    s.write_all(&frame(&raw)).expect("send");
    assert!(closed(&mut s), "unsupported produce version closes");

    // A truncated Metadata body.
    let mut s = connect(&broker);
    let mut bytes = request(
        ApiKey::Metadata,
        12,
        7,
        &MetadataRequest::default().with_topics(None),
    );
    bytes.truncate(bytes.len() - 2);
    let new_len = (bytes.len() - 4) as i32;
    bytes[..4].copy_from_slice(&new_len.to_be_bytes());
    s.write_all(&bytes).expect("send");
    assert!(closed(&mut s), "malformed body closes");

    // A produce whose records are garbage gets CORRUPT_MESSAGE, not a crash.
    let mut s = connect(&broker);
    let produce = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![
            kafka_protocol::messages::produce_request::TopicProduceData::default()
                .with_name(kafka_protocol::messages::TopicName(
                    StrBytes::from_static_str("garbage"),
                ))
                .with_partition_data(vec![
                    kafka_protocol::messages::produce_request::PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from_static(&[0u8; 80]))),
                ]),
        ]);
    s.write_all(&request(ApiKey::Produce, 9, 8, &produce))
        .expect("send");
    let mut resp = read_response(&mut s).expect("produce answer");
    ResponseHeader::decode(&mut resp, 1).expect("header");
    let answer = kafka_protocol::messages::ProduceResponse::decode(&mut resp, 9).expect("body");
    let code = answer.responses[0].partition_responses[0].error_code;
    assert!(
        code == 2 || code == 87,
        "CORRUPT_MESSAGE or INVALID_RECORD, got {code}"
    );

    // The first connection still works.
    assert_eq!(api_versions(&mut good, 2).error_code, 0);
    assert!(broker.log().contains("closing connection"));

    // A connection that sends nothing is closed after
    // connections.max.idle.ms.
    let mut idle = connect(&broker);
    let started = std::time::Instant::now();
    assert!(closed(&mut idle), "idle connection closes");
    assert!(started.elapsed() < Duration::from_secs(10));
}
