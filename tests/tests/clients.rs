//! Real Kafka clients (librdkafka through rdkafka) against a real `sluice`
//! process: topics with several partitions, every compression codec,
//! consuming from the beginning, an offset and a timestamp, offsets,
//! topic deletion, and everything read again after a restart.

mod common;

use common::*;
use futures_lite::future::block_on;
use rdkafka::admin::{
    AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::consumer::Consumer;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use sluice_tests::Broker;

const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];
const PARTITIONS: i32 = 3;
const PER_CODEC: usize = 60;
const BASE_TS: i64 = 1_700_000_000_000;

#[test]
fn produce_consume_every_codec_offsets_timestamps_delete_and_restart() {
    let mut broker = Broker::start(&["--cores", "2", "--profile", "durable"]);
    let bootstrap = broker.bootstrap();
    let mut all: Vec<(String, Vec<Rec>)> = Vec::new();
    for (i, codec) in CODECS.iter().enumerate() {
        let topic = format!("events-{codec}");
        create_topic(&bootstrap, &topic, PARTITIONS);
        let mut recs = records(codec, PER_CODEC, PARTITIONS, BASE_TS + i as i64 * 100_000);
        produce(&producer(&bootstrap, codec), &topic, &mut recs);
        let recs = sorted(recs);
        let starts: Vec<_> = (0..PARTITIONS).map(|p| (p, Offset::Beginning)).collect();
        let got = consume(&bootstrap, &topic, &starts, recs.len());
        assert_eq!(got, recs, "{codec}: from the beginning");
        all.push((topic, recs));
    }

    // From an offset: partition 1 from offset 7.
    let (topic, recs) = &all[0];
    let tail: Vec<Rec> = recs
        .iter()
        .filter(|r| r.partition == 1 && r.offset >= 7)
        .cloned()
        .collect();
    let got = consume(&bootstrap, topic, &[(1, Offset::Offset(7))], tail.len());
    assert_eq!(got, tail, "from offset 7");

    // From a timestamp, through ListOffsets (offsets_for_times).
    let (topic, recs) = &all[2];
    let pivot = &recs
        .iter()
        .filter(|r| r.partition == 2)
        .nth(5)
        .expect("6th record")
        .clone();
    let c = consumer(&bootstrap);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 2, Offset::Offset(pivot.timestamp - 1))
        .expect("tpl");
    tpl.add_partition_offset(topic, 0, Offset::Offset(BASE_TS * 2))
        .expect("tpl");
    let found = c
        .offsets_for_times(tpl, TIMEOUT)
        .expect("offsets_for_times");
    let by_time = found.find_partition(topic, 2).expect("partition 2");
    assert_eq!(by_time.offset(), Offset::Offset(pivot.offset));
    let beyond = found.find_partition(topic, 0).expect("partition 0");
    assert_eq!(
        beyond.offset(),
        Offset::End,
        "nothing at or after a future timestamp"
    );
    let tail: Vec<Rec> = recs
        .iter()
        .filter(|r| r.partition == 2 && r.offset >= pivot.offset)
        .cloned()
        .collect();
    let got = consume(
        &bootstrap,
        topic,
        &[(2, Offset::Offset(pivot.offset))],
        tail.len(),
    );
    assert_eq!(got, tail, "from a timestamp");

    // Watermarks (ListOffsets earliest and latest).
    for p in 0..PARTITIONS {
        let expected = recs.iter().filter(|r| r.partition == p).count() as i64;
        let (low, high) = c.fetch_watermarks(topic, p, TIMEOUT).expect("watermarks");
        assert_eq!((low, high), (0, expected), "partition {p}");
    }

    // Delete one topic; the others stay.
    let admin = admin(&bootstrap);
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let deleted = block_on(admin.delete_topics(&["events-none"], &opts)).expect("delete");
    assert!(deleted.iter().all(|r| r.is_ok()), "{deleted:?}");
    let meta = c.fetch_metadata(None, TIMEOUT).expect("metadata");
    let names: Vec<&str> = meta.topics().iter().map(|t| t.name()).collect();
    assert!(!names.contains(&"events-none"), "{names:?}");
    assert!(
        !broker.data_dir().join("events-none-0").exists(),
        "log directory removed"
    );
    all.remove(0);

    // Restart (SIGTERM must exit 0) and read everything again.
    drop(c);
    drop(admin);
    broker.restart();
    for (topic, recs) in &all {
        let starts: Vec<_> = (0..PARTITIONS).map(|p| (p, Offset::Beginning)).collect();
        let got = consume(&bootstrap, topic, &starts, recs.len());
        assert_eq!(&got, recs, "{topic} after restart");
    }
    let status = broker.stop();
    assert!(status.success(), "exit status {status}:\n{}", broker.log());
}

#[test]
fn topic_administration_errors_are_kafkas() {
    let broker = Broker::start(&["--cores", "2", "--auto-create-topics", "false"]);
    let bootstrap = broker.bootstrap();
    let admin = admin(&bootstrap);
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let created = block_on(admin.create_topics(
        &[
            NewTopic::new("ok-topic", 2, TopicReplication::Fixed(1)),
            NewTopic::new("replicated", 1, TopicReplication::Fixed(3)),
            NewTopic::new("bad name!", 1, TopicReplication::Fixed(1)),
            NewTopic::new("no-partitions", 0, TopicReplication::Fixed(1)),
            NewTopic::new("bad-config", 1, TopicReplication::Fixed(1)).set("retention.ms", "soon"),
        ],
        &opts,
    ))
    .expect("create topics");
    let codes: Vec<_> = created
        .iter()
        .map(|r| r.as_ref().err().map(|(_, code)| *code))
        .collect();
    assert_eq!(
        codes,
        vec![
            None,
            Some(RDKafkaErrorCode::InvalidReplicationFactor),
            Some(RDKafkaErrorCode::InvalidTopic),
            Some(RDKafkaErrorCode::InvalidPartitions),
            Some(RDKafkaErrorCode::InvalidConfig),
        ]
    );
    let again = block_on(admin.create_topics(
        &[NewTopic::new("ok-topic", 2, TopicReplication::Fixed(1))],
        &opts,
    ))
    .expect("create again");
    assert_eq!(
        again[0].as_ref().err().map(|(_, c)| *c),
        Some(RDKafkaErrorCode::TopicAlreadyExists)
    );

    // Grow the topic, refuse shrinking.
    let grown = block_on(admin.create_partitions(&[NewPartitions::new("ok-topic", 4)], &opts))
        .expect("create partitions");
    assert!(grown[0].is_ok(), "{grown:?}");
    let shrunk = block_on(admin.create_partitions(&[NewPartitions::new("ok-topic", 3)], &opts))
        .expect("create partitions");
    assert_eq!(
        shrunk[0].as_ref().err().map(|(_, c)| *c),
        Some(RDKafkaErrorCode::InvalidPartitions)
    );
    let c = consumer(&bootstrap);
    let meta = c
        .fetch_metadata(Some("ok-topic"), TIMEOUT)
        .expect("metadata");
    assert_eq!(meta.topics()[0].partitions().len(), 4);
    // The new partitions take records on whichever shard owns them.
    let mut recs = records("grown", 8, 4, BASE_TS);
    produce(&producer(&bootstrap, "none"), "ok-topic", &mut recs);
    let starts: Vec<_> = (0..4).map(|p| (p, Offset::Beginning)).collect();
    assert_eq!(consume(&bootstrap, "ok-topic", &starts, 8), sorted(recs));

    // Configs: defaults and sources.
    let configs = block_on(admin.describe_configs(&[ResourceSpecifier::Topic("ok-topic")], &opts))
        .expect("describe configs");
    let resource = configs[0].as_ref().expect("topic configs");
    let retention = resource.get("retention.ms").expect("retention.ms");
    assert_eq!(retention.value.as_deref(), Some("604800000"));
    assert!(retention.is_default);

    // AlterConfigs changes a topic config and DescribeConfigs shows it set
    // on the topic. A bad value is refused (rdkafka 0.37 drops per-resource
    // errors of AlterConfigs, so the refusal shows as an unchanged value).
    let retention_ms = |admin: &rdkafka::admin::AdminClient<_>| {
        let configs =
            block_on(admin.describe_configs(&[ResourceSpecifier::Topic("ok-topic")], &opts))
                .expect("describe configs");
        let resource = configs[0].as_ref().expect("topic configs");
        let entry = resource.get("retention.ms").expect("retention.ms");
        (entry.value.clone(), entry.is_default)
    };
    for value in ["3600000", "later"] {
        let altered = block_on(admin.alter_configs(
            &[AlterConfig::new(ResourceSpecifier::Topic("ok-topic")).set("retention.ms", value)],
            &opts,
        ))
        .expect("alter configs");
        assert_eq!(altered.len(), 1);
        assert_eq!(retention_ms(&admin), (Some("3600000".to_string()), false));
    }

    // With auto-creation off, producing to an unknown topic fails.
    let p: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("message.timeout.ms", "3000")
        .set("topic.metadata.propagation.max.ms", "1000")
        .create()
        .expect("producer");
    let recs = records("x", 1, 1, BASE_TS);
    let record = rdkafka::producer::FutureRecord::to("unknown-topic")
        .key(&recs[0].key)
        .payload(&recs[0].value);
    let delivery = p.send_result(record).map_err(|(e, _)| e).expect("queued");
    let outcome = block_on(delivery).expect("report");
    assert!(outcome.is_err(), "produce to an unknown topic must fail");
}
