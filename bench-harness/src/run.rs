//! One benchmark run from start to end: start (or reach) the broker,
//! measure the machine's limits, create the topic, run the load on a pool
//! of glommio shards while the main thread prints progress and samples
//! counters and /proc, then gather the shards' histograms into a report.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use glommio::{LocalExecutorBuilder, LocalExecutorPoolBuilder, Placement, PoolPlacement};

use crate::broker_proc::{self, EmbeddedBroker, EmbeddedCluster, ListenerSecurity, ProcSample};
use crate::client::admin::{
    create_acls, create_topic, describe_topic, wait_for_brokers, TopicInfo,
};
use crate::client::security::{self, SaslLogin};
use crate::client::Connection;
use crate::clock::Clock;
use crate::connections;
use crate::error::{BenchError, Result};
use crate::limits::{self, LimitsConfig, IO_MEMORY_BYTES};
use crate::report::{
    broker_usage, ClusterReport, Flow, HarnessUsage, LogProblems, MachineUsage, NodeLog,
    NodeReport, PartitionReplicas, Report, Settings, Target,
};
use crate::scenario::Scenario;
use crate::stats::{CounterSnapshot, Counters, Percentiles, RatePoint};
use crate::workload::consumer::{catch_up, log_ends};
use crate::workload::{consumer_units, producer_units, run_shard, Plan, ShardOutput};

/// Time for the pool's threads to start before the load begins.
const POOL_START_DELAY: Duration = Duration::from_millis(500);
/// Tailing consumers read this long after producers stop.
const DRAIN: Duration = Duration::from_secs(2);
const TICK: Duration = Duration::from_secs(1);
/// How long every node of an embedded cluster gets to register, and a new
/// topic's replicas to all be in sync, before the load starts.
const CLUSTER_SETTLE_MAX: Duration = Duration::from_secs(30);
/// Warnings and errors of each node's log kept in the report, per phase.
const LOG_SAMPLES_KEPT: usize = 5;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub scenario: Scenario,
    /// Run against this broker instead of an embedded one.
    pub bootstrap: Option<String>,
    pub sluice_bin: Option<PathBuf>,
    /// A local broker whose CPU and memory to read from /proc.
    pub broker_pid: Option<u32>,
    /// Where the embedded broker's data (and the disk test) go.
    pub data_dir: Option<PathBuf>,
    /// `None` skips the machine-limit measurements.
    pub limits: Option<LimitsConfig>,
    /// Before the load, hold as many idle connections as the load will
    /// open and read what they cost the broker (only with a broker pid).
    pub idle_probe: bool,
    pub progress: bool,
    pub connect_timeout: Duration,
    pub catch_up_time_max: Duration,
    /// Copy the embedded broker's (every node's) log here at the end.
    pub logs_dir: Option<PathBuf>,
    /// Experiment: once an embedded cluster is up, let every node's
    /// threads run on any CPU instead of the one its shard pinned itself to.
    pub unpin_nodes: bool,
    /// Set by a signal handler: end the run early, clean up, report nothing.
    pub cancel: Arc<AtomicBool>,
    /// Connect over TLS (`--tls`).
    pub tls: bool,
    /// The CA to trust with `--bootstrap` (an embedded broker's is made
    /// for the run).
    pub tls_ca: Option<PathBuf>,
    /// Log in with SASL (`--sasl`).
    pub sasl: Option<SaslLogin>,
    /// With the embedded broker's authorizer on, define this many ACL
    /// bindings before the load (`--acls`); 0: authorizer off.
    pub acls: u32,
}

/// Runs `make()` to completion on a fresh glommio executor thread.
pub fn on_executor<T, F, Fut>(name: &str, make: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>> + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .name(name)
        .io_memory(IO_MEMORY_BYTES)
        .spawn(make)
        .map_err(|e| BenchError::Runtime(e.to_string()))?
        .join()
        .map_err(|e| BenchError::Runtime(e.to_string()))?
}

pub fn run(opts: &RunOptions) -> Result<Report> {
    let s = opts.scenario.clone();
    s.validate()?;
    let started_unix_s = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());

    // Raised before the embedded broker starts: it inherits the limit.
    let estimate = u64::from(s.producers) + u64::from(s.consumers) + 2;
    let partitions = s.partitions as u64;
    let embedded_broker = opts.bootstrap.is_none();
    connections::raise_open_files_limit(connections::open_files_needed(
        estimate,
        partitions,
        embedded_broker,
    ))?;

    let mut embedded = None;
    let mut cluster: Option<EmbeddedCluster> = None;
    let (bootstrap, broker_pids, sluice_bin) = match &opts.bootstrap {
        Some(_) if s.is_cluster() => {
            return Err(BenchError::Config {
                key: "cluster",
                value: s.cluster_nodes.to_string(),
                allowed: "1 with --bootstrap (the harness starts a cluster only itself)".into(),
            })
        }
        Some(b) => (b.clone(), opts.broker_pid.into_iter().collect(), None),
        None if s.is_cluster() => {
            let bin = broker_proc::find_sluice(opts.sluice_bin.as_deref())?;
            if opts.progress {
                eprintln!(
                    "starting a {}-node sluice cluster (--cores {} each) ...",
                    s.cluster_nodes, s.broker_cores
                );
            }
            let c = EmbeddedCluster::start(
                &bin,
                &s.profile,
                s.cluster_nodes,
                s.broker_cores,
                opts.data_dir.as_deref(),
            )?;
            if opts.unpin_nodes {
                for pid in c.pids() {
                    broker_proc::unpin(pid)?;
                }
            }
            let out = (
                c.addrs().join(","),
                c.pids(),
                Some(bin.display().to_string()),
            );
            cluster = Some(c);
            out
        }
        None => {
            let bin = broker_proc::find_sluice(opts.sluice_bin.as_deref())?;
            let listener = ListenerSecurity {
                tls: opts.tls,
                sasl: opts.sasl.clone(),
            };
            // Every principal may do what no ACL covers (the harness's
            // own setup), so the bindings decide only for the topic.
            let authorizer: Vec<String> = if opts.acls > 0 {
                [
                    "--authorizer",
                    "on",
                    "--allow-everyone-if-no-acl-found",
                    "true",
                ]
                .map(String::from)
                .to_vec()
            } else {
                Vec::new()
            };
            let b = EmbeddedBroker::start_secured(
                &bin,
                &s.profile,
                s.broker_cores,
                opts.data_dir.as_deref(),
                &listener,
                &authorizer,
            )?;
            let out = (b.addr.clone(), vec![b.pid], Some(bin.display().to_string()));
            embedded = Some(b);
            out
        }
    };
    security::install(security::for_run(
        opts.tls,
        embedded.as_ref().and_then(|b| b.ca.as_deref()),
        opts.tls_ca.as_deref(),
        opts.sasl.clone(),
    )?);
    // The pid whose figures stand for "the broker" with one process.
    let broker_pid = match broker_pids.as_slice() {
        [one] => Some(*one),
        _ => None,
    };
    let target = Target {
        security: match opts.acls {
            0 => security::current().protocol().to_string(),
            n => format!(
                "{}, authorizer on with {n} ACLs",
                security::current().protocol()
            ),
        },
        bootstrap: bootstrap.clone(),
        embedded: embedded.is_some() || cluster.is_some(),
        sluice_bin,
        broker_pid,
    };
    // Clients start from the first node; they find every leader from it.
    let bootstrap = bootstrap.split(',').next().unwrap_or_default().to_string();

    let limits = match opts.limits {
        None => None,
        Some(config) => {
            let dir = match (&embedded, &opts.data_dir) {
                _ if cluster.is_some() => cluster
                    .as_ref()
                    .map(|c| c.dir_path.clone())
                    .unwrap_or_else(std::env::temp_dir),
                (Some(b), _) => b
                    .data_dir
                    .parent()
                    .map(|p| p.to_path_buf())
                    .unwrap_or_else(std::env::temp_dir),
                (None, Some(d)) => d.clone(),
                (None, None) => std::env::temp_dir(),
            };
            if opts.progress {
                eprintln!("measuring machine limits in {} ...", dir.display());
            }
            Some(limits::measure(&dir, config)?)
        }
    };
    let lower_limit = limits.as_ref().map(|l| l.lower_limit_mb_per_s);

    // Topic and starting offsets.
    let topic_name = if s.topic.is_empty() {
        format!("sluice-bench-{}-{started_unix_s}", std::process::id())
    } else {
        s.topic.clone()
    };
    let timeout = opts.connect_timeout;
    let setup_scenario = s.clone();
    let setup_bootstrap = bootstrap.clone();
    let cluster_nodes = cluster.as_ref().map_or(0, |c| c.nodes.len());
    let acls = opts.acls;
    let (topic, tail_from) = on_executor("sluice-bench-setup", move || async move {
        let mut conn = Connection::connect(&setup_bootstrap, timeout).await?;
        if acls > 0 {
            create_acls(&mut conn, &topic_name, acls).await?;
        }
        if cluster_nodes > 1 {
            wait_for_brokers(&mut conn, cluster_nodes, CLUSTER_SETTLE_MAX).await?;
        }
        create_topic(
            &mut conn,
            &topic_name,
            setup_scenario.partitions,
            setup_scenario.replication_factor,
        )
        .await?;
        let mut topic = describe_topic(&mut conn, &topic_name, Duration::from_secs(30)).await?;
        let mut ends = None;
        if cluster_nodes > 1 {
            topic = wait_in_sync(&mut conn, topic, setup_scenario.replication_factor).await?;
            ends = Some(wait_leaders_serve(&topic, timeout).await?);
        }
        let tail_from = match ends {
            Some(ends) if setup_scenario.consumers > 0 => ends,
            None if setup_scenario.consumers > 0 => log_ends(&topic, timeout).await?,
            _ => Default::default(),
        };
        Ok((topic, tail_from))
    })?;
    let partitions_at_start = PartitionReplicas::of(&topic);

    // With several leaders a producer opens one connection per leader.
    let load_connections =
        producer_units(&s, &topic).len() as u32 + consumer_units(&s, &topic).len() as u32;
    let open_files = connections::raise_open_files_limit(connections::open_files_needed(
        u64::from(load_connections) + 2,
        partitions,
        embedded_broker,
    ))?;

    let idle = sample_all(&broker_pids);
    let idle_connections = match broker_pid {
        Some(pid) if opts.idle_probe && load_connections > 0 => {
            if opts.progress {
                eprintln!("holding {load_connections} idle connections to read their memory ...");
            }
            let (addr, name) = (bootstrap.clone(), topic.name.clone());
            on_executor("sluice-bench-idle", move || async move {
                connections::measure_idle(&addr, &name, load_connections, pid, timeout).await
            })?
        }
        _ => None,
    };
    // The load's peak, not start-up's or the idle connections'.
    let peak_reset =
        !broker_pids.is_empty() && broker_pids.iter().all(|p| broker_proc::reset_peak(*p));
    let mut load_peak_kib = 0;
    let counters = Arc::new(Counters::default());
    let start = Instant::now() + POOL_START_DELAY;
    let measure_from = start + Duration::from_secs_f64(s.warmup_s);
    let stop_at = measure_from + Duration::from_secs_f64(s.duration_s);
    let plan = Arc::new(Plan {
        scenario: s.clone(),
        topic: topic.clone(),
        clock: Clock::new(),
        start,
        measure_from,
        stop_at,
        drain: DRAIN,
        tail_from: tail_from.into_iter().collect(),
        counters: counters.clone(),
        connect_timeout: timeout,
        cancel: opts.cancel.clone(),
    });

    // Node log lines from here on are the load's.
    let load_log_marks: Vec<u64> = cluster
        .as_ref()
        .map(|c| {
            c.nodes
                .iter()
                .map(|n| broker_proc::log_len(n.log_path()))
                .collect()
        })
        .unwrap_or_default();
    let shards = s.cores;
    let next_shard = Arc::new(AtomicUsize::new(0));
    let pool_plan = plan.clone();
    let handles = LocalExecutorPoolBuilder::new(PoolPlacement::Unbound(shards))
        .name("sluice-bench")
        .io_memory(IO_MEMORY_BYTES)
        .on_all_shards(move || {
            let shard = next_shard.fetch_add(1, Ordering::Relaxed);
            async move { run_shard(pool_plan, shard, shards).await }
        })
        .map_err(|e| BenchError::Runtime(e.to_string()))?;

    // The main thread watches: progress, timeline, window snapshots.
    let mut timeline = Vec::new();
    type Snapshot = (CounterSnapshot, Vec<Option<ProcSample>>, f64, Option<f64>);
    let mut at_measure: Option<Snapshot> = None;
    let mut at_stop: Option<Snapshot> = None;
    let mut prev = (start, CounterSnapshot::default());
    let mut next_tick = start + TICK;
    let end = stop_at + DRAIN;
    let tty = std::io::stderr().is_terminal();
    sleep_until(start);
    loop {
        let now = Instant::now();
        if at_measure.is_none() && now >= measure_from {
            at_measure = Some((
                counters.snapshot(),
                samples(&broker_pids),
                broker_proc::self_cpu_s(),
                broker_proc::machine_busy_s(),
            ));
        }
        if at_stop.is_none() && now >= stop_at {
            at_stop = Some((
                counters.snapshot(),
                samples(&broker_pids),
                broker_proc::self_cpu_s(),
                broker_proc::machine_busy_s(),
            ));
        }
        if now >= next_tick {
            if now <= stop_at {
                if let Some(p) = sample_all(&broker_pids) {
                    load_peak_kib = load_peak_kib.max(p.rss_kib);
                }
            }
            let snap = counters.snapshot();
            let seconds = now.duration_since(prev.0).as_secs_f64();
            let point = RatePoint::between(
                now.duration_since(start).as_secs_f64(),
                &snap.minus(&prev.1),
                seconds,
            );
            // Points after the drain began only show the load stopping.
            if now <= stop_at + TICK / 2 {
                timeline.push(point);
            }
            if opts.progress {
                progress(&point, &s, snap.errors, now < measure_from, tty);
            }
            prev = (now, snap);
            next_tick += TICK;
        }
        if now >= end || opts.cancel.load(Ordering::Relaxed) {
            break;
        }
        let wake = [next_tick, end, measure_from, stop_at]
            .into_iter()
            .filter(|t| *t > now)
            .min()
            .unwrap_or(end);
        sleep_until(wake);
    }
    if opts.progress && tty {
        eprintln!();
    }
    // Shards see the same flag and end within a fetch wait or a sleep.
    let interrupted = opts.cancel.load(Ordering::Relaxed);
    let mut joined = Vec::new();
    for r in handles.join_all() {
        match r {
            Ok(o) => joined.push(o),
            Err(e) => return Err(BenchError::Runtime(format!("a harness shard failed: {e}"))),
        }
    }

    let mut merged = ShardOutput::new(&plan);
    for o in joined {
        merged.produce.add(&o.produce);
        merged.e2e.add(&o.e2e);
        merged.produce_requests += o.produce_requests;
        for e in o.errors {
            merged.note_error(e);
        }
    }
    if interrupted {
        return Err(BenchError::Interrupted);
    }
    let total = counters.snapshot();
    if s.producers > 0 && total.records_out == 0 && !merged.errors.is_empty() {
        return Err(BenchError::Protocol(format!(
            "nothing was produced: {}",
            merged.errors.join("; ")
        )));
    }

    // Right after the load: did every node live through it, and is every
    // replica still in sync?
    let alive_after_load: Vec<bool> = cluster
        .as_mut()
        .map(|c| c.nodes.iter_mut().map(|n| n.alive()).collect())
        .unwrap_or_default();
    let pinned: Vec<Vec<String>> = broker_pids
        .iter()
        .map(|p| broker_proc::pinned_threads(*p))
        .collect();
    let partitions_at_end = if cluster.is_some() {
        let (addr, name) = (bootstrap.clone(), topic.name.clone());
        let described = on_executor("sluice-bench-isr", move || async move {
            let mut conn = Connection::connect(&addr, timeout).await?;
            describe_topic(&mut conn, &name, Duration::from_secs(5)).await
        });
        match described {
            Ok(t) => Some(PartitionReplicas::of(&t)),
            Err(e) => {
                merged.note_error(format!("describing the topic after the load: {e}"));
                None
            }
        }
    } else {
        None
    };

    let catch_up_result = if s.catch_up {
        if opts.progress {
            eprintln!("catch-up read from offset 0 ...");
        }
        let topic = topic.clone();
        let time_max = opts.catch_up_time_max;
        let cancel = opts.cancel.clone();
        Some(on_executor("sluice-bench-catch-up", move || async move {
            catch_up(&topic, time_max, timeout, &cancel).await
        })?)
    } else {
        None
    };

    let final_samples = samples(&broker_pids);
    let final_sample = sum(&final_samples);
    if let Some(mut b) = embedded.take() {
        b.stop();
        if let Some(dir) = &opts.logs_dir {
            copy_log(b.log_path(), dir, &format!("{}-sluice.log", topic.name))?;
        }
    }
    let (m_snap, m_proc, m_cpu, m_busy) = at_measure.unwrap_or_default();
    let (s_snap, s_proc, s_cpu, s_busy) = at_stop.unwrap_or_default();
    let measured_s = stop_at.duration_since(measure_from).as_secs_f64();
    let cluster_report = match cluster.take() {
        None => None,
        Some(mut c) => {
            let stop_log_marks: Vec<u64> = c
                .nodes
                .iter()
                .map(|n| broker_proc::log_len(n.log_path()))
                .collect();
            let exits = c.stop();
            let mut brokers = Vec::new();
            for (i, node) in c.nodes.iter().enumerate() {
                let text = std::fs::read(node.log_path()).unwrap_or_default();
                let log = node_log(
                    &text,
                    load_log_marks.get(i).copied().unwrap_or(0),
                    stop_log_marks.get(i).copied().unwrap_or(0),
                );
                let log_copy = match &opts.logs_dir {
                    Some(dir) => Some(copy_log(
                        node.log_path(),
                        dir,
                        &format!("{}-n{}.log", topic.name, node.node_id),
                    )?),
                    None => None,
                };
                let at = |v: &Vec<Option<ProcSample>>| v.get(i).copied().flatten();
                let cpu_s = match (at(&m_proc), at(&s_proc)) {
                    (Some(a), Some(b)) => Some((b.cpu_s - a.cpu_s).max(0.0)),
                    _ => None,
                };
                brokers.push(NodeReport {
                    node_id: node.node_id,
                    addr: node.addr.clone(),
                    pid: node.pid,
                    leader_of: topic
                        .partitions
                        .iter()
                        .filter(|p| p.leader_id == node.node_id)
                        .map(|p| p.partition)
                        .collect(),
                    cpu_s,
                    cores: cpu_s.map(|c| c / measured_s.max(1e-9)),
                    rss_peak_kib: at(&final_samples).map(|p| p.rss_peak_kib),
                    pinned_threads: pinned.get(i).cloned().unwrap_or_default(),
                    alive_after_load: alive_after_load.get(i).copied().unwrap_or(false),
                    exit: exits
                        .get(i)
                        .copied()
                        .flatten()
                        .or(node.exit())
                        .map(|e| e.to_string()),
                    killed_after_stop_wait: node.killed(),
                    stop_wait_s: broker_proc::STOP_WAIT_MAX.as_secs_f64(),
                    log,
                    log_copy: log_copy.map(|p| p.display().to_string()),
                });
            }
            Some(ClusterReport {
                nodes: s.cluster_nodes,
                cores_per_node: s.broker_cores,
                machine_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
                replication_factor: s.replication_factor,
                acks: s.acks_name(),
                unpinned_by_harness: opts.unpin_nodes,
                brokers,
                partitions_at_start,
                partitions_at_end,
            })
        }
    };
    let (m_proc, s_proc) = (sum(&m_proc), sum(&s_proc));

    let window = s_snap.minus(&m_snap);
    let produced = Flow::new(
        window.records_out,
        window.bytes_out,
        measured_s,
        lower_limit,
    );
    let consumed = Flow::new(window.records_in, window.bytes_in, measured_s, lower_limit);
    for p in [m_proc, s_proc].into_iter().flatten() {
        load_peak_kib = load_peak_kib.max(p.rss_kib);
        if peak_reset {
            load_peak_kib = load_peak_kib.max(p.rss_peak_kib);
        }
    }
    // Per-connection memory means something for one process only: a
    // cluster's nodes each hold some of the connections and the links.
    let single_process = cluster_report.is_none();
    let mut broker = broker_usage(idle, m_proc, s_proc, measured_s, window.bytes_out).map(|b| {
        if single_process {
            b.with_connections(idle_connections, load_connections, load_peak_kib)
        } else {
            b
        }
    });
    if let (Some(b), Some(f)) = (broker.as_mut(), final_sample) {
        b.rss_peak_kib = b.rss_peak_kib.max(f.rss_peak_kib);
    }
    let harness_cpu = (s_cpu - m_cpu).max(0.0);
    let machine = match (m_busy, s_busy) {
        (Some(a), Some(b)) => Some(MachineUsage::new(
            broker_proc::online_cpus(),
            b - a,
            measured_s,
            broker.map(|b| b.cores),
            harness_cpu / measured_s.max(1e-9),
        )),
        _ => None,
    };
    let gbps = (produced.mb_per_s + consumed.mb_per_s) / 1000.0;
    Ok(Report {
        tool: "sluice-bench".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        started_unix_s,
        target,
        scenario: s.clone(),
        settings: Settings {
            data_dir: opts.data_dir.as_ref().map(|d| d.display().to_string()),
            limits: opts.limits,
            connect_timeout_s: timeout.as_secs_f64(),
            catch_up_max_s: opts.catch_up_time_max.as_secs_f64(),
            topic: topic.name.clone(),
            harness_executors: shards,
            io_memory_bytes: IO_MEMORY_BYTES,
            open_files_limit: open_files,
        },
        limits,
        measured_s,
        produced,
        consumed,
        produce_latency: Percentiles::of(&merged.produce.total),
        e2e_latency: Percentiles::of(&merged.e2e.total),
        corrected_for_coordinated_omission: s.rate > 0.0,
        broker,
        cluster: cluster_report,
        harness: HarnessUsage {
            cpu_s: harness_cpu,
            cores: harness_cpu / measured_s.max(1e-9),
            cores_per_gb_per_s: (gbps > 0.0).then(|| harness_cpu / measured_s.max(1e-9) / gbps),
        },
        machine,
        catch_up: catch_up_result,
        produce_requests: merged.produce_requests,
        records_per_request: (merged.produce_requests > 0)
            .then(|| total.records_out as f64 / merged.produce_requests as f64),
        errors: total.errors,
        error_samples: merged.errors,
        timeline,
        measured_from_unix_s: plan.clock.wall_us(measure_from) as f64 / 1e6,
        interval_s: merged.produce.interval().as_secs_f64(),
        produce_hist: merged.produce.total,
        e2e_hist: merged.e2e.total,
        produce_intervals: merged.produce.intervals,
        e2e_intervals: merged.e2e.intervals,
    })
}

/// Re-reads the topic until every partition's ISR holds
/// `replication_factor` replicas (a new topic's followers join once they
/// have fetched), for at most [`CLUSTER_SETTLE_MAX`]; then goes on with
/// what it has: the report shows the ISR the load started with.
async fn wait_in_sync(
    conn: &mut Connection,
    mut topic: TopicInfo,
    replication_factor: i16,
) -> Result<TopicInfo> {
    let started = Instant::now();
    let want = usize::try_from(replication_factor).unwrap_or(0);
    while topic.partitions.iter().any(|p| p.isr.len() < want)
        && started.elapsed() < CLUSTER_SETTLE_MAX
    {
        glommio::timer::sleep(Duration::from_millis(100)).await;
        topic = describe_topic(conn, &topic.name, Duration::from_secs(5)).await?;
    }
    Ok(topic)
}

/// Kafka errors a leader answers while it has not yet applied the
/// metadata that made it leader: UNKNOWN_TOPIC_OR_PARTITION,
/// LEADER_NOT_AVAILABLE, NOT_LEADER_OR_FOLLOWER.
pub fn not_ready_yet(e: &BenchError) -> bool {
    matches!(
        e,
        BenchError::Kafka {
            code: 3 | 5 | 6,
            ..
        }
    )
}

/// Asks every leader for its partitions' log ends until each answers (the
/// metadata names a leader a moment before that node serves the new
/// partition), for at most [`CLUSTER_SETTLE_MAX`].
async fn wait_leaders_serve(
    topic: &TopicInfo,
    timeout: Duration,
) -> Result<std::collections::BTreeMap<i32, i64>> {
    let started = Instant::now();
    loop {
        match log_ends(topic, timeout).await {
            Err(e) if not_ready_yet(&e) && started.elapsed() < CLUSTER_SETTLE_MAX => {
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

/// A node's log split at the load's start and at its SIGTERM (byte
/// offsets into `text`), each phase's warnings and errors counted.
pub fn node_log(text: &[u8], load_from: u64, stop_from: u64) -> NodeLog {
    let at = |m: u64| usize::try_from(m).unwrap_or(usize::MAX).min(text.len());
    let (a, b) = (at(load_from), at(stop_from));
    let b = b.max(a);
    let phase = |bytes: &[u8], keep: usize| {
        let (warn_lines, error_lines, samples) =
            broker_proc::log_problems(&String::from_utf8_lossy(bytes), keep);
        LogProblems {
            warn_lines,
            error_lines,
            samples,
        }
    };
    NodeLog {
        startup: phase(&text[..a], 0),
        load: phase(&text[a..b], LOG_SAMPLES_KEPT),
        shutdown: phase(&text[b..], LOG_SAMPLES_KEPT),
    }
}

fn samples(pids: &[u32]) -> Vec<Option<ProcSample>> {
    pids.iter().map(|p| broker_proc::sample(*p)).collect()
}

/// Every process's figures added up; none unless each was read.
fn sum(samples: &[Option<ProcSample>]) -> Option<ProcSample> {
    if samples.is_empty() {
        return None;
    }
    samples.iter().try_fold(ProcSample::default(), |acc, s| {
        s.map(|s| ProcSample {
            cpu_s: acc.cpu_s + s.cpu_s,
            rss_kib: acc.rss_kib + s.rss_kib,
            rss_peak_kib: acc.rss_peak_kib + s.rss_peak_kib,
        })
    })
}

fn sample_all(pids: &[u32]) -> Option<ProcSample> {
    sum(&samples(pids))
}

fn copy_log(from: &std::path::Path, dir: &std::path::Path, name: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .map_err(|e| BenchError::io(format!("creating {}", dir.display()), e))?;
    let to = dir.join(name);
    std::fs::copy(from, &to)
        .map_err(|e| BenchError::io(format!("copying the broker log to {}", to.display()), e))?;
    Ok(to)
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

fn progress(p: &RatePoint, s: &Scenario, errors: u64, warming: bool, tty: bool) {
    let total = s.warmup_s + s.duration_s;
    let line = format!(
        "[{:>6.1}/{:.0} s{}] out {:>10.0} rec/s {:>8.1} MB/s | in {:>10.0} rec/s {:>8.1} MB/s{}",
        p.elapsed_s.min(total),
        total,
        if warming { " warm-up" } else { "" },
        p.records_out_per_s,
        p.mb_out_per_s,
        p.records_in_per_s,
        p.mb_in_per_s,
        if errors > 0 {
            format!(" | {errors} errors")
        } else {
            String::new()
        }
    );
    let mut err = std::io::stderr().lock();
    if tty {
        let _ = write!(err, "\r{line}\x1b[K");
    } else {
        let _ = writeln!(err, "{line}");
    }
    let _ = err.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker_proc::ProcSample;

    #[test]
    fn node_logs_are_split_into_start_up_load_and_shutdown() {
        let startup = "t  WARN openraft: failed to send a heartbeat\n";
        let load = "t  INFO broker: x\nt  WARN broker::metrics: reactor stall\n";
        let shutdown = "t ERROR broker: a\nt  WARN openraft: b\nt  WARN openraft: c\n";
        let text = format!("{startup}{load}{shutdown}");
        let a = startup.len() as u64;
        let b = a + load.len() as u64;
        let log = node_log(text.as_bytes(), a, b);
        assert_eq!((log.startup.warn_lines, log.startup.error_lines), (1, 0));
        assert!(log.startup.samples.is_empty());
        assert_eq!((log.load.warn_lines, log.load.error_lines), (1, 0));
        assert_eq!(
            log.load.samples,
            vec!["t  WARN broker::metrics: reactor stall"]
        );
        assert_eq!((log.shutdown.warn_lines, log.shutdown.error_lines), (2, 1));
        // Marks past the end (a log that shrank) or out of order clamp.
        let log = node_log(text.as_bytes(), 10_000, 5);
        assert_eq!(log.shutdown, LogProblems::default());
    }

    #[test]
    fn process_figures_add_up_only_when_every_process_was_read() {
        let p = |cpu_s, rss_kib| {
            Some(ProcSample {
                cpu_s,
                rss_kib,
                rss_peak_kib: rss_kib,
            })
        };
        let total = sum(&[p(1.0, 10), p(2.5, 20)]).expect("both read");
        assert_eq!(total.cpu_s, 3.5);
        assert_eq!(total.rss_kib, 30);
        assert_eq!(sum(&[p(1.0, 10), None]), None);
        assert_eq!(sum(&[]), None);
    }

    #[test]
    fn leaders_not_ready_yet_are_retried_other_errors_are_not() {
        let kafka = |code| BenchError::Kafka {
            api: "ListOffsets",
            code,
            what: String::new(),
        };
        assert!(not_ready_yet(&kafka(3)));
        assert!(not_ready_yet(&kafka(6)));
        assert!(!not_ready_yet(&kafka(36)));
        assert!(!not_ready_yet(&BenchError::Protocol("x".into())));
    }
}
