//! Log compaction with a real broker and real clients: 100,000 records over
//! 1,000 keys (every codec, the last writes of 100 keys deletes) go to a
//! topic with cleanup.policy=compact and small segments; the broker's
//! cleaner (a short log.cleaner.backoff.ms) compacts it while it is being
//! written. A consumer from the beginning then sees exactly the latest
//! record of each key in offset order, consumers placed in the gaps read on
//! from the next surviving record, and once delete.retention.ms is made
//! short the deleted keys disappear. Producers are idempotent, so batches
//! the cleaner empties but keeps (a producer's last) reach the consumer.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use futures_lite::future::block_on;
use rand::{Rng, SeedableRng};
use rdkafka::admin::{AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use sluice_tests::Broker;

const TOPIC: &str = "compacted";
const KEYS: usize = 1_000;
const RECORDS: usize = 100_000;
const DELETED: usize = 100;
/// Records with this key follow the data so that it all lies in sealed
/// segments (the active one is never cleaned); they are left out of checks.
const FILLER: &[u8] = b"~filler";

/// What a consumer saw at one offset: key and value (`None` = tombstone).
type Seen = BTreeMap<i64, (Vec<u8>, Option<Vec<u8>>)>;

fn topic_configs(delete_retention_ms: &str) -> Vec<(&'static str, String)> {
    vec![
        ("cleanup.policy", "compact".into()),
        ("segment.bytes", "16384".into()),
        ("min.cleanable.dirty.ratio", "0.01".into()),
        ("delete.retention.ms", delete_retention_ms.into()),
    ]
}

/// Produces every record, chunk by chunk, each chunk with another codec.
fn produce_all(bootstrap: &str, recs: &[(Vec<u8>, Option<Vec<u8>>)]) -> Vec<i64> {
    let mut offsets = Vec::with_capacity(recs.len());
    let codecs = ["none", "gzip", "snappy", "lz4", "zstd"];
    for (n, chunk) in recs.chunks(10_000).enumerate() {
        // Idempotent, so that the cleaner meets producer ids and keeps each
        // producer's last batch even when it empties it.
        let p: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("compression.type", codecs[n % codecs.len()])
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "20000")
            .create()
            .expect("producer");
        let futures: Vec<_> = chunk
            .iter()
            .map(|(k, v)| {
                let mut record = FutureRecord::to(TOPIC).partition(0).key(k);
                if let Some(v) = v {
                    record = record.payload(v);
                }
                p.send_result(record).map_err(|(e, _)| e).expect("queued")
            })
            .collect();
        for f in futures {
            let (_, offset) = block_on(f)
                .expect("delivery report")
                .map_err(|(e, _)| e)
                .expect("delivered");
            offsets.push(offset);
        }
    }
    offsets
}

/// Reads the partition from `from` up to the high watermark.
fn read_from(c: &BaseConsumer, from: i64, hw: i64) -> Seen {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Offset(from))
        .expect("offset");
    c.assign(&tpl).expect("assign");
    let mut seen = Seen::new();
    let deadline = Instant::now() + TIMEOUT;
    let mut last = from - 1;
    while last < hw - 1 {
        assert!(
            Instant::now() < deadline,
            "read stalled after offset {last}"
        );
        let Some(m) = c.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.expect("message");
        assert!(m.offset() > last, "offset {} after {last}", m.offset());
        last = m.offset();
        seen.insert(
            m.offset(),
            (
                m.key().unwrap_or_default().to_vec(),
                m.payload().map(<[u8]>::to_vec),
            ),
        );
    }
    seen
}

fn without_filler(seen: &Seen) -> Seen {
    seen.iter()
        .filter(|(_, (k, _))| k != FILLER)
        .map(|(o, kv)| (*o, kv.clone()))
        .collect()
}

/// Polls (bounded) until a read from the beginning equals `want`.
fn wait_for(bootstrap: &str, hw: i64, want: &Seen, what: &str) -> Seen {
    let c = consumer(bootstrap);
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let seen = without_filler(&read_from(&c, 0, hw));
        if &seen == want {
            return seen;
        }
        if Instant::now() > deadline {
            let extra = seen.keys().filter(|o| !want.contains_key(o)).count();
            let missing = want.keys().filter(|o| !seen.contains_key(o)).count();
            panic!("{what}: {extra} records not expected, {missing} missing after 40 s");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn the_cleaner_keeps_the_latest_record_of_each_key() {
    let broker = Broker::start(&["--cores", "2", "--log-cleaner-backoff-ms", "200"]);
    let bootstrap = broker.bootstrap();
    let admin = admin(&bootstrap);
    let opts = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let configs = topic_configs("86400000");
    let mut topic = NewTopic::new(TOPIC, 1, TopicReplication::Fixed(1));
    for (k, v) in &configs {
        topic = topic.set(k, v);
    }
    for r in block_on(admin.create_topics(&[topic], &opts)).expect("create") {
        r.expect("topic created");
    }

    // Every key once, then random keys, then deletes of the first 100 keys.
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut recs: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::with_capacity(RECORDS + 40);
    for i in 0..RECORDS - DELETED {
        let key = if i < KEYS { i } else { rng.gen_range(0..KEYS) };
        let value = format!(
            "value {i} of key {key} {}",
            "x".repeat(rng.gen_range(0..40))
        );
        recs.push((
            format!("key-{key:04}").into_bytes(),
            Some(value.into_bytes()),
        ));
    }
    for key in 0..DELETED {
        recs.push((format!("key-{key:04}").into_bytes(), None));
    }
    for _ in 0..40 {
        recs.push((FILLER.to_vec(), Some(vec![b'f'; 1000])));
    }
    let offsets = produce_all(&bootstrap, &recs);
    let hw = offsets.last().copied().expect("offsets") + 1;
    assert_eq!(hw as usize, recs.len());

    // The latest record of each key, by offset.
    let mut latest: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
    for (i, (k, _)) in recs.iter().enumerate() {
        if k != FILLER {
            latest.insert(k.clone(), offsets[i]);
        }
    }
    let by_offset: BTreeMap<i64, &(Vec<u8>, Option<Vec<u8>>)> =
        offsets.iter().copied().zip(recs.iter()).collect();
    let mut want: Seen = latest
        .values()
        .map(|o| (*o, by_offset[o].clone()))
        .collect();
    assert_eq!(want.len(), KEYS);
    let seen = wait_for(&bootstrap, hw, &want, "compaction with tombstones kept");
    assert_eq!(seen.values().filter(|(_, v)| v.is_none()).count(), DELETED);

    let low_high = consumer(&bootstrap)
        .fetch_watermarks(TOPIC, 0, TIMEOUT)
        .expect("watermarks");
    assert_eq!(low_high, (0, hw), "compaction keeps the log's offsets");

    // Consumers placed in gaps left by compaction read on from the next
    // surviving record.
    let c = consumer(&bootstrap);
    let survivors: Vec<i64> = read_from(&c, 0, hw).keys().copied().collect();
    let gaps: Vec<i64> = (0..hw)
        .filter(|o| survivors.binary_search(o).is_err())
        .step_by(9_973)
        .chain([0, 1])
        .collect();
    assert!(gaps.len() > 5);
    for gap in gaps {
        let next = survivors[survivors.partition_point(|s| *s < gap)];
        let got = read_from(&c, gap, hw);
        assert_eq!(got.keys().next(), Some(&next), "a read placed at {gap}");
    }

    // A short delete.retention.ms: the tombstones go on a later pass.
    let mut alter = AlterConfig::new(ResourceSpecifier::Topic(TOPIC));
    let short = topic_configs("500");
    for (k, v) in &short {
        alter = alter.set(k, v);
    }
    block_on(admin.alter_configs(&[alter], &opts)).expect("alter configs");
    want.retain(|_, (_, v)| v.is_some());
    assert_eq!(want.len(), KEYS - DELETED);
    wait_for(&bootstrap, hw, &want, "tombstones past delete.retention.ms");
    assert!(broker.log().contains("log compacted"));
}
