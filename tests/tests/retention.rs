//! Retention with real clients: with small segments, a short retention.ms
//! and a short check interval, old segments go and the log start offset
//! (ListOffsets earliest) moves forward while the newest records stay.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::Consumer;
use rdkafka::Offset;
use sluice_tests::Broker;

#[test]
fn old_segments_are_deleted_and_the_log_start_moves() {
    let broker = Broker::start(&[
        "--cores",
        "2",
        "--segment-bytes",
        "4096",
        "--retention-ms",
        "60000",
        "--retention-check-interval-ms",
        "200",
    ]);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "metrics", 1);
    // Timestamps an hour old: every sealed segment is past retention.ms.
    let hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
        - 3_600_000;
    let p = producer(&bootstrap, "none");
    let mut recs = records("old", 300, 1, hour_ago);
    // One record per request, so batches are small and segments roll.
    for chunk in recs.chunks_mut(1) {
        produce(&p, "metrics", chunk);
    }
    let c = consumer(&bootstrap);
    // Retention runs every 200 ms: wait until the log start offset has
    // moved and then held still for a second.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = (0, 0);
    let mut still_since = Instant::now();
    let (low, high) = loop {
        let now = c
            .fetch_watermarks("metrics", 0, TIMEOUT)
            .expect("watermarks");
        if now != last {
            last = now;
            still_since = Instant::now();
        }
        let settled = now.0 > 0 && still_since.elapsed() > Duration::from_secs(1);
        if settled || Instant::now() > deadline {
            break now;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(high, 300);
    assert!(low > 0, "retention never moved the log start offset");
    let kept: Vec<Rec> = recs.iter().filter(|r| r.offset >= low).cloned().collect();
    if !kept.is_empty() {
        let got = consume(&bootstrap, "metrics", &[(0, Offset::Beginning)], kept.len());
        assert_eq!(got, kept);
    }
    assert!(
        !broker
            .data_dir()
            .join("metrics-0")
            .join("00000000000000000000.log")
            .exists(),
        "the first segment was deleted"
    );
}
