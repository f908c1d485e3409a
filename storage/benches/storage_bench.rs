//! The storage benchmark: measures, in one run and on one file system, the
//! machine's raw O_DIRECT sequential write bandwidth and fdatasync latency,
//! then the log's append throughput (1 KiB records in 16 KiB and 1 MiB
//! batches) under each fsync policy and its append latency under
//! `fsync=always` with 1, 16 and 256 concurrent appenders, each printed as
//! a ratio to the raw figures; the small-batch shape over 16 logs with and
//! without zeros written ahead; then opens 10,000 logs on one shard and
//! reports memory and descriptors.
//!
//! `cargo bench -p storage --bench storage_bench [-- --dir PATH --mib N --logs N --only small-batches]`

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::io::{DmaFile, OpenOptions};
use hdrhistogram::Histogram;
use storage::{FsyncPolicy, LogConfig, PartitionLog};

struct Args {
    dir: PathBuf,
    mib: u64,
    logs: usize,
    /// `--only small-batches`: just the small-batch case.
    only_small: bool,
}

fn args() -> Args {
    let mut a = Args {
        dir: std::env::temp_dir(),
        mib: 512,
        logs: 10_000,
        only_small: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--dir" => a.dir = PathBuf::from(it.next().expect("--dir PATH")),
            "--mib" => a.mib = it.next().and_then(|v| v.parse().ok()).expect("--mib N"),
            "--logs" => a.logs = it.next().and_then(|v| v.parse().ok()).expect("--logs N"),
            "--only" => a.only_small = it.next().as_deref() == Some("small-batches"),
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

fn main() {
    let a = args();
    let work = tempfile::tempdir_in(&a.dir).expect("scratch dir");
    let root = work.path().to_path_buf();
    let (mib, logs, only_small) = (a.mib, a.logs, a.only_small);
    glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(0))
        .io_memory(8 << 20)
        .spawn(move || async move { bench(&root, mib, logs, only_small).await })
        .expect("executor")
        .join()
        .expect("bench");
}

async fn bench(root: &Path, mib: u64, logs: usize, only_small: bool) {
    println!(
        "storage benchmark in {} ({mib} MiB per throughput run)",
        root.display()
    );
    storage::probe_direct_io(root)
        .await
        .expect("direct I/O works here");
    if only_small {
        small_batches_over_partitions(root, mib).await;
        return;
    }
    let raw_mbps = raw_write_bandwidth(&root.join("raw"), mib).await;
    let sync_us = raw_fdatasync_latency(&root.join("sync")).await;
    println!("raw O_DIRECT sequential write (1 MiB writes): {raw_mbps:.0} MB/s");
    println!(
        "raw 4 KiB write + fdatasync: p50 {} us, p99 {} us",
        sync_us.value_at_quantile(0.5),
        sync_us.value_at_quantile(0.99)
    );
    println!();
    println!("append throughput, 1 KiB records, 32 concurrent appenders:");
    println!(
        "{:<10} {:>10} {:>12} {:>12} {:>10}",
        "policy", "batch", "MB/s", "records/s", "vs raw"
    );
    for (batch_kib, name, policy) in [
        (16, "never", FsyncPolicy::Never),
        (
            16,
            "interval",
            FsyncPolicy::Interval {
                interval_ms: 100,
                interval_bytes: 16 << 20,
            },
        ),
        (16, "always", FsyncPolicy::Always),
        (1024, "never", FsyncPolicy::Never),
        (
            1024,
            "interval",
            FsyncPolicy::Interval {
                interval_ms: 100,
                interval_bytes: 16 << 20,
            },
        ),
        (1024, "always", FsyncPolicy::Always),
    ] {
        let dir = root.join(format!("tp-{name}-{batch_kib}"));
        let (mbps, _) = append_run(&dir, policy, batch_kib * 1024, 32, mib << 20).await;
        println!(
            "{name:<10} {:>8}KiB {mbps:>12.0} {:>12.0} {:>10.2}",
            batch_kib,
            mbps * 1e6 / 1024.0,
            mbps / raw_mbps
        );
    }
    println!();
    println!("append latency under fsync=always, 16 KiB batches of 1 KiB records");
    println!("(vs never: throughput ratio to fsync=never with as many appenders):");
    println!(
        "{:<10} {:>10} {:>10} {:>10} {:>10} {:>12}",
        "appenders", "p50 us", "p99 us", "p99.9 us", "MB/s", "vs never"
    );
    for appenders in [1usize, 16, 256] {
        let dir = root.join(format!("lat-{appenders}"));
        let bytes = (mib << 20).min(if appenders == 1 { 64 << 20 } else { 256 << 20 });
        let (mbps, h) = append_run(&dir, FsyncPolicy::Always, 16 << 10, appenders, bytes).await;
        // The same load without fsync, for the ratio group commit is judged by.
        let dir = root.join(format!("lat-never-{appenders}"));
        let (never, _) = append_run(&dir, FsyncPolicy::Never, 16 << 10, appenders, bytes).await;
        println!(
            "{appenders:<10} {:>10} {:>10} {:>10} {mbps:>10.0} {:>12.2}",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            mbps / never.max(1.0)
        );
    }
    println!();
    small_batches_over_partitions(root, mib).await;
    println!();
    many_logs(&root.join("many"), logs).await;
}

/// The small-batch shape metrics fleets send: 16 KiB batches over 16
/// partition logs on one shard, 4 appenders each, under each policy, with
/// zeros written ahead of the data (the default) and without, run back to
/// back so the comparison shares the machine's state.
async fn small_batches_over_partitions(root: &Path, mib: u64) {
    println!("16 KiB batches over 16 logs, 4 appenders each (zeros ahead on / off):");
    println!(
        "{:<10} {:>6} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "policy", "zeros", "MB/s", "p50 us", "p99 us", "p99.9 us", "vs raw"
    );
    let raw = raw_write_bandwidth(&root.join("raw-again"), mib.min(256)).await;
    for (name, policy) in [
        ("never", FsyncPolicy::Never),
        ("always", FsyncPolicy::Always),
    ] {
        for zeros_ahead in [true, false] {
            let dir = root.join(format!("parts-{name}-{zeros_ahead}"));
            let total = (mib << 20).min(512 << 20);
            let (mbps, h) = partitions_run(&dir, policy, zeros_ahead, 16, 4, total).await;
            println!(
                "{name:<10} {:>6} {mbps:>10.0} {:>10} {:>10} {:>10} {:>8.2}",
                if zeros_ahead { "on" } else { "off" },
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                mbps / raw
            );
        }
    }
}

/// The small-batch case's run: 16 KiB batches over `logs` logs.
async fn partitions_run(
    dir: &Path,
    policy: FsyncPolicy,
    zeros_ahead: bool,
    logs: usize,
    appenders: usize,
    total: u64,
) -> (f64, Histogram<u64>) {
    let config = LogConfig {
        fsync: policy,
        retention_ms: None,
        zeros_ahead,
        ..LogConfig::default()
    };
    appends(dir, config, logs, 16 << 10, appenders, total).await
}

/// Writes `mib` MiB sequentially in 1 MiB direct writes, then fdatasync.
async fn raw_write_bandwidth(path: &Path, mib: u64) -> f64 {
    let file: DmaFile = OpenOptions::new()
        .write(true)
        .read(true)
        .create(true)
        .dma_open(path)
        .await
        .expect("open raw file");
    let start = Instant::now();
    for i in 0..mib {
        let mut buf = file.alloc_dma_buffer(1 << 20);
        buf.as_bytes_mut().fill(i as u8);
        file.write_at(buf, i << 20).await.expect("raw write");
    }
    file.fdatasync().await.expect("fdatasync");
    let secs = start.elapsed().as_secs_f64();
    file.close().await.expect("close");
    let _ = std::fs::remove_file(path);
    (mib << 20) as f64 / secs / 1e6
}

/// 4 KiB appended then fdatasync, 300 times.
async fn raw_fdatasync_latency(path: &Path) -> Histogram<u64> {
    let file: DmaFile = OpenOptions::new()
        .write(true)
        .read(true)
        .create(true)
        .dma_open(path)
        .await
        .expect("open sync file");
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    for i in 0..300u64 {
        let buf = file.alloc_dma_buffer(4096);
        let start = Instant::now();
        file.write_at(buf, i * 4096).await.expect("write");
        file.fdatasync().await.expect("fdatasync");
        h.record(start.elapsed().as_micros() as u64)
            .expect("record");
    }
    file.close().await.expect("close");
    let _ = std::fs::remove_file(path);
    h
}

/// A batch of 1 KiB records totalling about `batch_bytes`.
fn batch(batch_bytes: usize) -> Bytes {
    let records = (batch_bytes / 1024).max(1);
    storage::testing::batch_with_values(0, (0..records).map(|i| vec![i as u8; 1000]))
}

/// `appenders` tasks append `batch_bytes` batches to one log until `total`
/// bytes are in; returns MB/s and the per-append latency histogram (us).
async fn append_run(
    dir: &Path,
    policy: FsyncPolicy,
    batch_bytes: usize,
    appenders: usize,
    total: u64,
) -> (f64, Histogram<u64>) {
    let config = LogConfig {
        fsync: policy,
        segment_bytes: 256 << 20,
        retention_ms: None,
        ..LogConfig::default()
    };
    appends(dir, config, 1, batch_bytes, appenders, total).await
}

/// `appenders` tasks on each of `logs` logs append `batch_bytes` batches
/// until `total` bytes are in; returns MB/s and the per-append latency (us).
async fn appends(
    dir: &Path,
    config: LogConfig,
    logs: usize,
    batch_bytes: usize,
    appenders: usize,
    total: u64,
) -> (f64, Histogram<u64>) {
    let mut opened = Vec::new();
    for i in 0..logs {
        let log = PartitionLog::open(&dir.join(i.to_string()), config.clone())
            .await
            .expect("open");
        opened.push(log);
    }
    let b = batch(batch_bytes);
    let per_task = (total / b.len() as u64 / (logs * appenders) as u64).max(1);
    let hist = Rc::new(std::cell::RefCell::new(
        Histogram::<u64>::new(3).expect("histogram"),
    ));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for log in &opened {
        for _ in 0..appenders {
            let (log, b, hist) = (log.clone(), b.clone(), hist.clone());
            tasks.push(glommio::spawn_local(async move {
                for _ in 0..per_task {
                    let t = Instant::now();
                    log.append(&b).await.expect("append");
                    let _ = hist.borrow_mut().record(t.elapsed().as_micros() as u64);
                }
            }));
        }
    }
    for t in tasks {
        t.await;
    }
    let secs = start.elapsed().as_secs_f64();
    let bytes = per_task * (logs * appenders) as u64 * b.len() as u64;
    for log in opened {
        log.delete().await.expect("delete");
    }
    let h = hist.borrow().clone();
    (bytes as f64 / secs / 1e6, h)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Opens `n` logs on this shard, appends one batch to each, closes and
/// reopens them: memory and descriptors at each step.
async fn many_logs(root: &Path, n: usize) {
    let config = LogConfig {
        tail_cache_bytes: 64 << 10,
        ..LogConfig::default()
    };
    let (rss0, fds0) = (rss_kib(), open_fds());
    let start = Instant::now();
    let mut logs = Vec::with_capacity(n);
    for p in 0..n {
        logs.push(
            PartitionLog::open(root.join(format!("topic-{p}")), config.clone())
                .await
                .expect("open"),
        );
    }
    let opened = start.elapsed();
    let (rss1, fds1) = (rss_kib(), open_fds());
    let b = batch(1024);
    for log in &logs {
        log.append(&b).await.expect("append");
    }
    let (rss2, fds2) = (rss_kib(), open_fds());
    let held: usize = logs.iter().map(|l| l.memory_bytes()).sum();
    for log in &logs {
        log.close().await.expect("close");
    }
    drop(logs);
    let start = Instant::now();
    let mut logs = Vec::with_capacity(n);
    for p in 0..n {
        logs.push(
            PartitionLog::open(root.join(format!("topic-{p}")), config.clone())
                .await
                .expect("reopen"),
        );
    }
    let reopened = start.elapsed();
    let (rss3, fds3) = (rss_kib(), open_fds());
    println!("{n} partition logs on one shard:");
    println!(
        "  open (empty):         {:>8.1} s, RSS +{} KiB, fds +{}",
        secs(opened),
        rss1 - rss0,
        fds1 - fds0
    );
    println!(
        "  after one append each: RSS +{} KiB, fds +{} (one active segment each)",
        rss2 - rss0,
        fds2 - fds0
    );
    println!(
        "  log-owned memory:     {} KiB ({} B per log)",
        held / 1024,
        held / n.max(1)
    );
    println!(
        "  reopen (recovery):    {:>8.1} s, RSS +{} KiB, fds +{}",
        secs(reopened),
        rss3 - rss0,
        fds3 - fds0
    );
    for log in &logs {
        log.close().await.expect("close");
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}
