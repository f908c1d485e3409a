//! Graceful shutdown: on SIGTERM a fetch parked in its long poll is
//! answered at once (not when its wait ends), the connection closes, and
//! the process exits 0 with its logs closed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    fetch_request, ApiKey, FetchRequest, FetchResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use sluice_tests::Broker;

#[test]
fn sigterm_answers_parked_fetches_and_exits_zero() {
    let mut broker = Broker::start(&["--cores", "2"]);
    common::create_topic(&broker.bootstrap(), "quiet", 1);
    let version = 12;
    let request = FetchRequest::default()
        .with_max_wait_ms(20_000)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![fetch_request::FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("quiet")))
            .with_partitions(vec![fetch_request::FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::Fetch as i16)
        .with_request_api_version(version)
        .with_correlation_id(77)
        .encode(&mut buf, ApiKey::Fetch.request_header_version(version))
        .expect("header");
    request.encode(&mut buf, version).expect("body");
    let mut stream = TcpStream::connect(broker.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let mut frame = (buf.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&buf);
    stream.write_all(&frame).expect("send fetch");
    // Let the fetch park in its wait.
    std::thread::sleep(Duration::from_millis(500));
    let stopping = Instant::now();
    let pid = broker.pid().expect("running");
    // SAFETY: signalling a child process we spawned and have not reaped.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).expect("fetch answered");
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).expect("fetch body");
    let answered = stopping.elapsed();
    let mut body = Bytes::from(body);
    let header = ResponseHeader::decode(&mut body, ApiKey::Fetch.response_header_version(version))
        .expect("header");
    assert_eq!(header.correlation_id, 77);
    let response = FetchResponse::decode(&mut body, version).expect("fetch response");
    assert_eq!(response.responses[0].partitions[0].error_code, 0);
    assert!(
        answered < Duration::from_secs(5),
        "answered after {answered:?}"
    );
    let mut rest = [0u8; 1];
    assert!(
        matches!(stream.read(&mut rest), Ok(0) | Err(_)),
        "connection closed"
    );
    let status = broker.stop();
    assert!(status.success(), "exit status {status}:\n{}", broker.log());
    assert!(stopping.elapsed() < Duration::from_secs(10));
}
