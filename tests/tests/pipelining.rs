//! Pipelined requests on one connection, over real TCP: an idempotent
//! producer's requests sent back to back, without waiting for answers, to
//! partitions on both shards under the durable profile, with other
//! requests among them. Every batch must land in order (a batch appended
//! out of order would be refused for its sequence), and every answer must
//! come back in request order.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, InitProducerIdRequest, InitProducerIdResponse,
    MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use sluice_tests::Broker;

const PARTITIONS: i32 = 4;
const REQUESTS: i32 = 300;
/// Where the other requests go among the produce requests.
const METADATA_AT: i32 = 120;
const API_VERSIONS_AT: i32 = 121;

fn request<M: Encodable>(key: ApiKey, version: i16, correlation_id: i32, body: &M) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("pipelining-test")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, key.request_header_version(version))
        .expect("header");
    body.encode(&mut buf, version).expect("body");
    let mut framed = (buf.len() as i32).to_be_bytes().to_vec();
    framed.extend_from_slice(&buf);
    framed
}

/// Reads one answer and checks that it is the one for `correlation_id`.
fn answer(s: &mut TcpStream, key: ApiKey, version: i16, correlation_id: i32) -> Bytes {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).expect("an answer");
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).expect("the whole answer");
    let mut body = Bytes::from(body);
    let header =
        ResponseHeader::decode(&mut body, key.response_header_version(version)).expect("header");
    assert_eq!(
        header.correlation_id, correlation_id,
        "answers come back in request order"
    );
    body
}

/// One record, `value`, as a batch of producer `id` at `sequence`.
fn batch(id: i64, epoch: i16, sequence: i32, value: String) -> Bytes {
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: id,
        producer_epoch: epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence,
        timestamp: 1_700_000_000_000,
        key: None,
        value: Some(Bytes::from(value)),
        headers: Default::default(),
    };
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, [record].iter(), &options).expect("encodes");
    buf.freeze()
}

/// Whether produce request `i` writes partition `p`.
fn writes(i: i32, p: i32) -> bool {
    p == i % PARTITIONS || i % 3 == 0
}

#[test]
fn pipelined_produce_requests_land_in_order_and_are_answered_in_order() {
    let broker = Broker::start(&["--cores", "2", "--profile", "durable"]);
    let topic = "pipelined";
    common::create_topic(&broker.bootstrap(), topic, PARTITIONS);
    let mut s = TcpStream::connect(broker.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.set_nodelay(true).expect("nodelay");

    let init = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(kafka_protocol::messages::ProducerId(-1))
        .with_producer_epoch(-1);
    s.write_all(&request(ApiKey::InitProducerId, 4, 1, &init))
        .expect("send");
    let mut body = answer(&mut s, ApiKey::InitProducerId, 4, 1);
    let init = InitProducerIdResponse::decode(&mut body, 4).expect("InitProducerId");
    assert_eq!(init.error_code, 0);
    let (id, epoch) = (init.producer_id.0, init.producer_epoch);

    // Every request is written before any answer is read.
    let mut wire = Vec::new();
    let mut sent = [0i32; PARTITIONS as usize];
    for i in 0..REQUESTS {
        let correlation_id = 100 + i;
        if i == METADATA_AT {
            wire.extend(request(
                ApiKey::Metadata,
                9,
                correlation_id,
                &MetadataRequest::default().with_topics(None),
            ));
            continue;
        }
        if i == API_VERSIONS_AT {
            let req = ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("t"))
                .with_client_software_version(StrBytes::from_static_str("1"));
            wire.extend(request(ApiKey::ApiVersions, 3, correlation_id, &req));
            continue;
        }
        // Most requests write one partition, every third writes all of
        // them: the shards get single and several appends per request.
        let partitions = (0..PARTITIONS)
            .filter(|p| writes(i, *p))
            .map(|p| {
                let sequence = sent[p as usize];
                sent[p as usize] += 1;
                PartitionProduceData::default()
                    .with_index(p)
                    .with_records(Some(batch(id, epoch, sequence, format!("{p}-{sequence}"))))
            })
            .collect();
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(topic)))
                .with_partition_data(partitions)]);
        wire.extend(request(ApiKey::Produce, 9, correlation_id, &req));
    }
    s.write_all(&wire).expect("send every request");

    let mut answered = [0i64; PARTITIONS as usize];
    for i in 0..REQUESTS {
        let correlation_id = 100 + i;
        if i == METADATA_AT {
            let mut body = answer(&mut s, ApiKey::Metadata, 9, correlation_id);
            let meta = MetadataResponse::decode(&mut body, 9).expect("Metadata");
            assert_eq!(meta.topics.len(), 1);
            continue;
        }
        if i == API_VERSIONS_AT {
            let mut body = answer(&mut s, ApiKey::ApiVersions, 3, correlation_id);
            let versions = ApiVersionsResponse::decode(&mut body, 3).expect("ApiVersions");
            assert_eq!(versions.error_code, 0);
            continue;
        }
        let mut body = answer(&mut s, ApiKey::Produce, 9, correlation_id);
        let response = ProduceResponse::decode(&mut body, 9).expect("Produce");
        assert!(!body.has_remaining());
        let partitions = &response.responses[0].partition_responses;
        let expected = (0..PARTITIONS).filter(|p| writes(i, *p)).count();
        assert_eq!(partitions.len(), expected);
        for p in partitions {
            assert_eq!(
                p.error_code, 0,
                "request {i}, partition {}: error {}",
                p.index, p.error_code
            );
            let next = &mut answered[p.index as usize];
            assert_eq!(
                p.base_offset, *next,
                "request {i}, partition {}: its batch lands behind every earlier one",
                p.index
            );
            *next += 1;
        }
    }

    // Read back: each partition holds its batches in sequence order.
    let starts: Vec<_> = (0..PARTITIONS)
        .map(|p| (p, rdkafka::Offset::Beginning))
        .collect();
    let records = common::consume(
        &broker.bootstrap(),
        topic,
        &starts,
        answered.iter().sum::<i64>() as usize,
    );
    for p in 0..PARTITIONS {
        let values: Vec<String> = records
            .iter()
            .filter(|r| r.partition == p)
            .map(|r| String::from_utf8_lossy(&r.value).into_owned())
            .collect();
        let expected: Vec<String> = (0..answered[p as usize])
            .map(|k| format!("{p}-{k}"))
            .collect();
        assert_eq!(values, expected, "partition {p} holds its batches in order");
    }
}
