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

use crate::broker_proc::{self, EmbeddedBroker, ProcSample};
use crate::client::admin::{create_topic, describe_topic};
use crate::client::Connection;
use crate::clock::Clock;
use crate::connections;
use crate::error::{BenchError, Result};
use crate::limits::{self, LimitsConfig, IO_MEMORY_BYTES};
use crate::report::{broker_usage, Flow, HarnessUsage, Report, Settings, Target};
use crate::scenario::Scenario;
use crate::stats::{CounterSnapshot, Counters, Percentiles, RatePoint};
use crate::workload::consumer::{catch_up, log_ends};
use crate::workload::{consumer_units, producer_units, run_shard, Plan, ShardOutput};

/// Time for the pool's threads to start before the load begins.
const POOL_START_DELAY: Duration = Duration::from_millis(500);
/// Tailing consumers read this long after producers stop.
const DRAIN: Duration = Duration::from_secs(2);
const TICK: Duration = Duration::from_secs(1);

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
    /// Set by a signal handler: end the run early, clean up, report nothing.
    pub cancel: Arc<AtomicBool>,
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
    let (bootstrap, broker_pid, sluice_bin) = match &opts.bootstrap {
        Some(b) => (b.clone(), opts.broker_pid, None),
        None => {
            let bin = broker_proc::find_sluice(opts.sluice_bin.as_deref())?;
            let b =
                EmbeddedBroker::start(&bin, &s.profile, s.broker_cores, opts.data_dir.as_deref())?;
            let out = (b.addr.clone(), Some(b.pid), Some(bin.display().to_string()));
            embedded = Some(b);
            out
        }
    };
    let target = Target {
        bootstrap: bootstrap.clone(),
        embedded: embedded.is_some(),
        sluice_bin,
        broker_pid,
    };

    let limits = match opts.limits {
        None => None,
        Some(config) => {
            let dir = match (&embedded, &opts.data_dir) {
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
    let (topic, tail_from) = on_executor("sluice-bench-setup", move || async move {
        let mut conn = Connection::connect(&setup_bootstrap, timeout).await?;
        create_topic(
            &mut conn,
            &topic_name,
            setup_scenario.partitions,
            setup_scenario.replication_factor,
        )
        .await?;
        let topic = describe_topic(&mut conn, &topic_name, Duration::from_secs(30)).await?;
        let tail_from = if setup_scenario.consumers > 0 {
            log_ends(&topic, timeout).await?
        } else {
            Default::default()
        };
        Ok((topic, tail_from))
    })?;

    // With several leaders a producer opens one connection per leader.
    let load_connections =
        producer_units(&s, &topic).len() as u32 + consumer_units(&s, &topic).len() as u32;
    let open_files = connections::raise_open_files_limit(connections::open_files_needed(
        u64::from(load_connections) + 2,
        partitions,
        embedded_broker,
    ))?;

    let idle = broker_pid.and_then(broker_proc::sample);
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
    let peak_reset = broker_pid.is_some_and(broker_proc::reset_peak);
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
    let mut at_measure: Option<(CounterSnapshot, Option<ProcSample>, f64)> = None;
    let mut at_stop: Option<(CounterSnapshot, Option<ProcSample>, f64)> = None;
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
                broker_pid.and_then(broker_proc::sample),
                broker_proc::self_cpu_s(),
            ));
        }
        if at_stop.is_none() && now >= stop_at {
            at_stop = Some((
                counters.snapshot(),
                broker_pid.and_then(broker_proc::sample),
                broker_proc::self_cpu_s(),
            ));
        }
        if now >= next_tick {
            if now <= stop_at {
                if let Some(p) = broker_pid.and_then(broker_proc::sample) {
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

    let final_sample = broker_pid.and_then(broker_proc::sample);
    if let Some(mut b) = embedded.take() {
        b.stop();
    }

    let (m_snap, m_proc, m_cpu) = at_measure.unwrap_or_default();
    let (s_snap, s_proc, s_cpu) = at_stop.unwrap_or_default();
    let window = s_snap.minus(&m_snap);
    let measured_s = stop_at.duration_since(measure_from).as_secs_f64();
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
    let mut broker = broker_usage(idle, m_proc, s_proc, measured_s, window.bytes_out)
        .map(|b| b.with_connections(idle_connections, load_connections, load_peak_kib));
    if let (Some(b), Some(f)) = (broker.as_mut(), final_sample) {
        b.rss_peak_kib = b.rss_peak_kib.max(f.rss_peak_kib);
    }
    let harness_cpu = (s_cpu - m_cpu).max(0.0);
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
        harness: HarnessUsage {
            cpu_s: harness_cpu,
            cores: harness_cpu / measured_s.max(1e-9),
            cores_per_gb_per_s: (gbps > 0.0).then(|| harness_cpu / measured_s.max(1e-9) / gbps),
        },
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
