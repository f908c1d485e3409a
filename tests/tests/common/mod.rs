//! rdkafka helpers shared by the end-to-end tests: clients pointed at a
//! test broker, producing records that can be compared exactly after a
//! round trip, and reading partitions back with bounded waits.

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

pub mod inproc;

use std::time::{Duration, Instant};

use futures_lite::future::block_on;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A record as sent and as it must come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub timestamp: i64,
    pub headers: Vec<(String, Vec<u8>)>,
}

pub fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client")
}

pub fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    let admin = admin(bootstrap);
    let results = block_on(admin.create_topics(
        &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
        &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
    ))
    .expect("create topics request");
    for r in results {
        r.expect("topic created");
    }
}

pub fn producer(bootstrap: &str, compression: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("compression.type", compression)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "20000")
        .create()
        .expect("producer")
}

/// Produces `recs` (partition, key, value, timestamp, headers) and fills in
/// the offsets the broker assigned.
pub fn produce(producer: &FutureProducer, topic: &str, recs: &mut [Rec]) {
    let futures: Vec<_> = recs
        .iter()
        .map(|r| {
            let mut headers = OwnedHeaders::new();
            for (k, v) in &r.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v),
                });
            }
            let record = FutureRecord::to(topic)
                .partition(r.partition)
                .key(&r.key)
                .payload(&r.value)
                .timestamp(r.timestamp)
                .headers(headers);
            producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .expect("queued")
        })
        .collect();
    for (r, f) in recs.iter_mut().zip(futures) {
        let (partition, offset) = block_on(f)
            .expect("delivery report")
            .map_err(|(e, _)| e)
            .expect("delivered");
        assert_eq!(partition, r.partition);
        r.offset = offset;
    }
}

pub fn consumer(bootstrap: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "sluice-tests")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.wait.max.ms", "100")
        .set("enable.partition.eof", "false")
        .create()
        .expect("consumer")
}

/// Reads `count` records from `(topic, partition, offset)` assignments.
pub fn consume(bootstrap: &str, topic: &str, starts: &[(i32, Offset)], count: usize) -> Vec<Rec> {
    let c = consumer(bootstrap);
    let mut tpl = TopicPartitionList::new();
    for (p, o) in starts {
        tpl.add_partition_offset(topic, *p, *o).expect("offset");
    }
    c.assign(&tpl).expect("assign");
    let mut got = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while got.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} records arrived from {topic}",
            got.len()
        );
        let Some(m) = c.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.expect("consumed message");
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        got.push(Rec {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().unwrap_or_default().to_vec(),
            value: m.payload().unwrap_or_default().to_vec(),
            timestamp: m.timestamp().to_millis().unwrap_or(-1),
            headers,
        });
    }
    got.sort_by_key(|r| (r.partition, r.offset));
    got
}

/// `n` records spread over `partitions`, with keys, headers and distinct
/// increasing timestamps from `base_ts`.
pub fn records(tag: &str, n: usize, partitions: i32, base_ts: i64) -> Vec<Rec> {
    (0..n)
        .map(|i| Rec {
            partition: (i as i32) % partitions,
            offset: -1,
            key: format!("{tag}-key-{i}").into_bytes(),
            value: format!("{tag}-value-{i}-{}", "x".repeat(i % 50)).into_bytes(),
            timestamp: base_ts + i as i64 * 10,
            headers: vec![
                ("index".into(), i.to_string().into_bytes()),
                ("tag".into(), tag.as_bytes().to_vec()),
            ],
        })
        .collect()
}

pub fn sorted(mut recs: Vec<Rec>) -> Vec<Rec> {
    recs.sort_by_key(|r| (r.partition, r.offset));
    recs
}
