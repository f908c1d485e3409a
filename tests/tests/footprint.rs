//! Idle memory guards on the real `sluice` binary: nothing that holds tens
//! of MiB is built at start-up, and partitions at rest are not given
//! buffers sized for traffic. The bounds are anonymous memory only (code
//! pages depend on the build and the page cache) and several times the
//! measured figures, so that a debug build or a busy machine never trips
//! them; the strict figures are in ARCHITECTURE.md, "Memory at idle".

mod common;

use std::time::Duration;

use rdkafka::producer::FutureRecord;
use sluice_tests::Broker;

/// Anonymous memory of an idle two-shard broker: 6 MiB measured in a
/// release build, 7 MiB in a debug one (4 MiB of it the shards'
/// io_memory); 34 MiB before openraft's histogram tables were built lazily.
const IDLE_ANON_KIB_MAX: u64 = 16 << 10;
/// What 1,000 partitions with one record each may add: 3.5–4 MiB
/// measured. A buffer of 16 KiB per partition, allocated eagerly, is
/// enough to break this bound.
const PARTITIONS_1000_ANON_KIB_MAX: u64 = 16 << 10;
/// Time for start-up work still running after the port opens.
const SETTLE: Duration = Duration::from_secs(3);

/// A `/proc/PID/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

#[test]
fn an_idle_broker_and_a_thousand_quiet_partitions_stay_small() {
    // Two shards whatever the machine: io_memory is per shard.
    let broker = Broker::start(&["--cores", "2"]);
    let pid = broker.pid().expect("running");
    std::thread::sleep(SETTLE);
    let idle_kib = status_kib(pid, "RssAnon");
    eprintln!(
        "idle: RssAnon {idle_kib} KiB, VmRSS {} KiB",
        status_kib(pid, "VmRSS")
    );
    assert!(
        idle_kib <= IDLE_ANON_KIB_MAX,
        "an idle broker holds {idle_kib} KiB of anonymous memory (bound {IDLE_ANON_KIB_MAX})"
    );

    let bootstrap = broker.bootstrap();
    common::create_topic(&bootstrap, "quiet", 1000);
    let producer = common::producer(&bootstrap, "none");
    let sent: Vec<_> = (0..1000)
        .map(|p| {
            producer
                .send_result(FutureRecord::<(), _>::to("quiet").partition(p).payload("r"))
                .map_err(|(e, _)| e)
                .expect("queued")
        })
        .collect();
    for f in sent {
        futures_lite::future::block_on(f)
            .expect("delivery report")
            .map_err(|(e, _)| e)
            .expect("delivered");
    }
    drop(producer);
    std::thread::sleep(SETTLE);
    let quiet_kib = status_kib(pid, "RssAnon");
    eprintln!(
        "1,000 partitions: RssAnon {quiet_kib} KiB, VmRSS {} KiB",
        status_kib(pid, "VmRSS")
    );
    let grown_kib = quiet_kib.saturating_sub(idle_kib);
    assert!(
        grown_kib <= PARTITIONS_1000_ANON_KIB_MAX,
        "1,000 partitions of one record added {grown_kib} KiB (bound {PARTITIONS_1000_ANON_KIB_MAX})"
    );
}
