//! Tests of `report`.

use super::*;
use crate::stats::{latency_histogram, record_us};
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

#[test]
fn the_hdr_log_holds_tagged_intervals_in_time_order() {
    let mut h = latency_histogram();
    record_us(&mut h, Duration::from_micros(250), 10);
    let produce = vec![h.clone(), latency_histogram(), h.clone()];
    let e2e = vec![h.clone(), h];
    let bytes = hdr_log(
        &[("produce", &produce), ("e2e", &e2e)],
        1_700_000_000.5,
        Duration::from_secs(1),
    )
    .expect("log");
    let text = String::from_utf8(bytes).expect("utf8");
    let entries: Vec<(String, f64, f64)> = IntervalLogIterator::new(text.as_bytes())
        .filter_map(|e| match e {
            Ok(LogEntry::Interval(i)) => Some((
                i.tag().map(|t| t.as_str().to_string()).unwrap_or_default(),
                i.start_timestamp().as_secs_f64(),
                i.max(),
            )),
            _ => None,
        })
        .collect();
    let tags: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(tags, vec!["produce", "e2e", "e2e", "produce"]);
    assert_eq!(entries[3].1, 2.0);
}

#[test]
fn small_ratios_keep_two_significant_digits() {
    assert_eq!(ratio(0.5), "0.50");
    assert_eq!(ratio(1.234), "1.23");
    assert_eq!(ratio(0.0032), "0.0032");
    assert_eq!(ratio(0.0), "0.00");
}

#[test]
fn connection_memory_is_reported_per_connection() {
    let b = BrokerUsage {
        rss_idle_kib: 10_000,
        ..BrokerUsage::default()
    }
    .with_connections(
        Some(IdleConnections {
            connections: 1000,
            rss_before_kib: 10_000,
            rss_with_kib: 12_000,
            rss_after_close_kib: 11_000,
        }),
        1000,
        60_000,
    );
    assert_eq!(b.rss_per_idle_connection_bytes, Some(2048.0));
    assert_eq!(b.rss_per_active_connection_bytes, Some(51_200.0));
    let line = connection_memory(&b).expect("a line");
    assert!(
        line.contains("1000 idle connections 11.7 MiB (2.0 KiB each"),
        "{line}"
    );
    assert!(line.contains("(50.0 KiB each, at most)"), "{line}");
    let json = serde_json::to_value(b).expect("json");
    assert_eq!(json["rss_per_idle_connection_bytes"], 2048.0);
    assert_eq!(json["rss_per_active_connection_bytes"], 51_200.0);
    assert_eq!(connection_memory(&BrokerUsage::default()), None);
}

#[test]
fn the_cluster_lines_say_nodes_replication_and_acks() {
    let partitions = |isr: Vec<i32>| {
        vec![
            PartitionReplicas {
                partition: 0,
                leader: 1,
                replicas: vec![1, 2, 3],
                isr: vec![1, 2, 3],
            },
            PartitionReplicas {
                partition: 1,
                leader: 2,
                replicas: vec![2, 3, 1],
                isr,
            },
        ]
    };
    let c = ClusterReport {
        nodes: 3,
        cores_per_node: 1,
        machine_cores: 2,
        replication_factor: 3,
        acks: "all".into(),
        unpinned_by_harness: false,
        brokers: vec![NodeReport {
            node_id: 1,
            addr: "127.0.0.1:9001".into(),
            pid: 42,
            leader_of: vec![0],
            cores: Some(0.5),
            alive_after_load: false,
            exit: Some("signal: 9 (SIGKILL)".into()),
            killed_after_stop_wait: true,
            stop_wait_s: 15.0,
            log: NodeLog {
                load: LogProblems {
                    warn_lines: 2,
                    error_lines: 0,
                    samples: vec!["x WARN y".into()],
                },
                ..NodeLog::default()
            },
            ..NodeReport::default()
        }],
        partitions_at_start: partitions(vec![2, 3, 1]),
        partitions_at_end: Some(partitions(vec![2])),
    };
    let text = c.lines();
    assert!(
        text.contains(
            "3 sluice nodes on loopback, 1 core (shard) each, sharing this machine's 2 cores"
        ),
        "{text}"
    );
    assert!(text.contains("replication factor 3, acks=all"), "{text}");
    assert!(
        text.contains("node 1 127.0.0.1:9001 pid 42: leads [0], 0.50 cores"),
        "{text}"
    );
    assert!(
        text.contains("log: start-up 0 WARN, 0 ERROR, load 2 WARN, 0 ERROR, shutdown 0 WARN, 0 ERROR; EXITED DURING THE RUN; DID NOT EXIT within 15 s of SIGTERM: killed"),
        "{text}"
    );
    assert!(text.contains("    [load] x WARN y"), "{text}");
    assert!(
        text.contains("ISR at start: all 2 partitions: 3 replicas, 3 in sync"),
        "{text}"
    );
    assert!(
        text.contains("ISR after the load: 1 of 2 partitions short: partition 1 leader 2 replicas [2, 3, 1] ISR [2]"),
        "{text}"
    );
}

#[test]
fn other_programs_show_as_the_machine_less_broker_and_harness() {
    let m = MachineUsage::new(2, 30.0, 20.0, Some(1.0), 0.25);
    assert_eq!(m.cores_busy, 1.5);
    assert_eq!(m.other_cores, Some(0.25));
    assert_eq!(
        m.line(),
        "machine: 1.50 of 2 cores busy in the measured window, 0.25 of them neither broker nor harness"
    );
    // Sampling jitter never makes the rest negative.
    let m = MachineUsage::new(2, 10.0, 10.0, Some(0.9), 0.2);
    assert_eq!(m.other_cores, Some(0.0));
    assert_eq!(MachineUsage::new(2, 1.0, 1.0, None, 0.1).other_cores, None);
}

#[test]
fn flows_compare_against_the_lower_limit() {
    let f = Flow::new(1000, 500_000_000, 2.0, Some(500.0));
    assert_eq!(f.mb_per_s, 250.0);
    assert_eq!(f.fraction_of_lower_limit, Some(0.5));
    assert_eq!(Flow::new(1, 1, 1.0, None).fraction_of_lower_limit, None);
}
