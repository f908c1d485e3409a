//! Fetch long polling and acks=0 with real clients: a consumer waiting with
//! a long `fetch.wait.max.ms` gets a record soon after it is produced (the
//! wait is woken by the append, across shards), and records produced with
//! acks=0 (no response at all) are stored.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluice_tests::Broker;

#[test]
fn waiting_fetches_are_woken_by_appends() {
    let broker = Broker::start(&["--cores", "2"]);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "tail", 2);
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "sluice-tests")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10000")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..2 {
        tpl.add_partition_offset("tail", p, Offset::End)
            .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    // Let the consumer reach the end and park a fetch on the broker.
    let settle = Instant::now() + Duration::from_secs(2);
    while Instant::now() < settle {
        assert!(consumer.poll(Duration::from_millis(100)).is_none());
    }
    let p = producer(&bootstrap, "none");
    for partition in [1, 0] {
        let sent = Instant::now();
        let delivery = p
            .send_result(
                FutureRecord::to("tail")
                    .partition(partition)
                    .key("k")
                    .payload("woken"),
            )
            .map_err(|(e, _)| e)
            .expect("queued");
        futures_lite::future::block_on(delivery)
            .expect("report")
            .map_err(|(e, _)| e)
            .expect("delivered");
        // Which side was slow, if the assertion below fails: the produce
        // acknowledgement or the waiting fetch.
        let acked = sent.elapsed();
        let got = loop {
            assert!(sent.elapsed() < Duration::from_secs(20), "never arrived");
            if let Some(m) = consumer.poll(Duration::from_millis(50)) {
                break m.expect("message").detach();
            }
        };
        assert_eq!(got.partition(), partition);
        assert_eq!(got.payload(), Some(&b"woken"[..]));
        let latency = sent.elapsed();
        assert!(
            latency < Duration::from_secs(3),
            "record took {latency:?} (acknowledged after {acked:?}): the 10 s fetch wait was not woken by the append"
        );
    }
}

#[test]
fn acks_zero_produces_are_stored() {
    let broker = Broker::start(&["--cores", "2"]);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "fire-and-forget", 2);
    let p: rdkafka::producer::FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("acks", "0")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let recs = records("acks0", 40, 2, 1_700_000_000_000);
    let deliveries: Vec<_> = recs
        .iter()
        .map(|r| {
            p.send_result(
                FutureRecord::to("fire-and-forget")
                    .partition(r.partition)
                    .key(&r.key)
                    .payload(&r.value)
                    .timestamp(r.timestamp),
            )
            .map_err(|(e, _)| e)
            .expect("queued")
        })
        .collect();
    for d in deliveries {
        futures_lite::future::block_on(d)
            .expect("report")
            .map_err(|(e, _)| e)
            .expect("sent");
    }
    let got = consume(
        &bootstrap,
        "fire-and-forget",
        &[(0, Offset::Beginning), (1, Offset::Beginning)],
        recs.len(),
    );
    let mut values: Vec<_> = got.iter().map(|r| r.value.clone()).collect();
    let mut expected: Vec<_> = recs.iter().map(|r| r.value.clone()).collect();
    values.sort();
    expected.sort();
    assert_eq!(values, expected);
}
