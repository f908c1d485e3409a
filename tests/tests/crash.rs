//! Crash safety with real clients: under the durable profile (fsync
//! always), every record acknowledged with acks=all is still there after
//! the broker is killed with SIGKILL, from several producers across shards.

mod common;

use std::thread;

use common::*;
use rdkafka::Offset;
use sluice_tests::Broker;

const PRODUCERS: usize = 3;
const PER_PRODUCER: usize = 400;
const PARTITIONS: i32 = 4;

#[test]
fn acknowledged_records_survive_sigkill_under_fsync_always() {
    let mut broker = Broker::start(&["--cores", "2", "--profile", "durable"]);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "durable", PARTITIONS);
    // Several producers at once: appends from connections on both shards
    // to partitions on both shards, sharing fsyncs (group commit).
    let handles: Vec<_> = (0..PRODUCERS)
        .map(|i| {
            let bootstrap = bootstrap.clone();
            thread::spawn(move || {
                let p = producer(&bootstrap, if i % 2 == 0 { "lz4" } else { "none" });
                let mut recs = records(
                    &format!("p{i}"),
                    PER_PRODUCER,
                    PARTITIONS,
                    1_700_000_000_000,
                );
                for chunk in recs.chunks_mut(50) {
                    produce(&p, "durable", chunk);
                }
                recs
            })
        })
        .collect();
    let mut acked: Vec<Rec> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("producer thread"))
        .collect();
    acked = sorted(acked);
    // Offsets are dense per partition: every acknowledged offset is unique
    // and they run 0..n.
    for p in 0..PARTITIONS {
        let offsets: Vec<i64> = acked
            .iter()
            .filter(|r| r.partition == p)
            .map(|r| r.offset)
            .collect();
        let dense: Vec<i64> = (0..offsets.len() as i64).collect();
        assert_eq!(offsets, dense, "partition {p}");
    }
    broker.crash_and_restart();
    let starts: Vec<_> = (0..PARTITIONS).map(|p| (p, Offset::Beginning)).collect();
    let got = consume(&bootstrap, "durable", &starts, acked.len());
    assert_eq!(got, acked);
}
