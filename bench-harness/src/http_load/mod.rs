//! HTTP metrics-ingest load (`--scenario remote-write`, `--scenario
//! influx`): starts the broker with its ingest listener, creates the
//! topic, encodes every request body ahead of time, then runs writer
//! threads (one blocking keep-alive connection each) as fast as possible
//! and at a fixed rate, measuring samples/s, per-request latency (from
//! the intended send time at a fixed rate, as the Kafka load does) and
//! the broker's CPU per million samples.

pub mod bodies;
pub mod client;
pub mod report;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::broker_proc::{self, EmbeddedBroker};
use crate::client::admin::{create_topic, describe_topic};
use crate::client::Connection;
use crate::error::{BenchError, Result};
use crate::goals::Metric;
use crate::limits;
use crate::report::Target;
use crate::run::{on_executor, RunOptions};
use crate::scenario::{HttpLoad, Scenario};
use crate::stats::{
    interval_for, CounterSnapshot, Counters, LatencySink, Percentiles, RatePoint, Schedule, MB,
};
use crate::workload::consumer::log_ends;

use bodies::Bodies;
use report::{BrokerCpu, HttpReport, PhaseReport};

/// Time for the writer threads to start before a phase begins.
const PHASE_START_DELAY: Duration = Duration::from_millis(300);
/// How long a request may take before the writer gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// After a connection error, a writer waits this long before retrying,
/// so a broker that is gone does not turn into a busy loop.
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// Error messages kept per phase.
const ERROR_SAMPLES_MAX: usize = 5;
/// How long the ingest listener may take to accept after the Kafka one.
const INGEST_READY_MAX: Duration = Duration::from_secs(10);
const TICK: Duration = Duration::from_secs(1);

/// The topic each protocol writes to (passed to the broker explicitly).
pub fn topic_of(protocol: &str) -> &'static str {
    if protocol == "influx" {
        "metrics"
    } else {
        "prometheus"
    }
}

/// The request line target and headers of a protocol's writes.
fn request_of(protocol: &str) -> (&'static str, &'static str) {
    if protocol == "influx" {
        (
            "/api/v2/write?bucket=bench&org=bench&precision=ns",
            "Content-Type: text/plain; charset=utf-8\r\n",
        )
    } else {
        (
            "/api/v1/write",
            "Content-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\nX-Prometheus-Remote-Write-Version: 0.1.0\r\n",
        )
    }
}

/// Samples/s of the latency phase: the scenario's, else half the
/// samples/s goal that applies to this run (profile and format), else
/// half of `peak`.
pub fn latency_rate(s: &Scenario, h: &HttpLoad, peak: f64) -> f64 {
    if h.latency_rate > 0.0 {
        return h.latency_rate;
    }
    let goal = s
        .goals
        .iter()
        .filter(|g| g.metric == Metric::SamplesPerS && g.applies(&s.profile, s.ingest_format()))
        .find_map(|g| g.at_least);
    (goal.unwrap_or(peak) / 2.0).round().max(1.0)
}

pub fn run(opts: &RunOptions) -> Result<HttpReport> {
    let s = opts.scenario.clone();
    s.validate()?;
    let Some(h) = s.http.clone() else {
        return Err(BenchError::Protocol(format!(
            "scenario {} has no [http] load",
            s.name
        )));
    };
    if opts.bootstrap.is_some() {
        return Err(BenchError::Config {
            key: "bootstrap",
            value: opts.bootstrap.clone().unwrap_or_default(),
            allowed: "none for an HTTP ingest scenario: sluice-bench starts the broker with its ingest listener".into(),
        });
    }
    let started_unix_s = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let topic_name = topic_of(&h.protocol);
    let ingest_addr = format!("127.0.0.1:{}", broker_proc::free_port()?);
    let extra: Vec<String> = [
        "--ingest-http-listen",
        &ingest_addr,
        "--ingest-format",
        &h.ingest_format,
        "--prometheus-topic",
        "prometheus",
        "--influx-topic",
        "metrics",
    ]
    .map(String::from)
    .to_vec();
    let bin = broker_proc::find_sluice(opts.sluice_bin.as_deref())?;
    if opts.progress {
        eprintln!(
            "starting sluice with --ingest-http-listen {ingest_addr} --ingest-format {} ...",
            h.ingest_format
        );
    }
    let mut broker = EmbeddedBroker::start_with(
        &bin,
        &s.profile,
        s.broker_cores,
        opts.data_dir.as_deref(),
        &extra,
    )?;
    wait_accepting(&ingest_addr, &broker)?;
    let target = Target {
        security: "PLAINTEXT".into(),
        bootstrap: broker.addr.clone(),
        embedded: true,
        sluice_bin: Some(bin.display().to_string()),
        broker_pid: Some(broker.pid),
    };
    let limits = match opts.limits {
        None => None,
        Some(config) => {
            let dir = broker
                .data_dir
                .parent()
                .map(|p| p.to_path_buf())
                .unwrap_or_else(std::env::temp_dir);
            if opts.progress {
                eprintln!("measuring machine limits in {} ...", dir.display());
            }
            Some(limits::measure(&dir, config)?)
        }
    };
    let timeout = opts.connect_timeout;
    let (addr, partitions) = (broker.addr.clone(), s.partitions);
    let topic = on_executor("sluice-bench-setup", move || async move {
        let mut conn = Connection::connect(&addr, timeout).await?;
        create_topic(&mut conn, topic_name, partitions, 1).await?;
        describe_topic(&mut conn, topic_name, Duration::from_secs(30)).await
    })?;

    let now_ns = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let bodies = Arc::new(Bodies::encode(
        &h.protocol,
        h.series,
        h.series_per_request,
        h.samples_per_series,
        now_ns,
    ));
    let idle_rss = broker_proc::sample(broker.pid).map(|p| p.rss_kib);
    let ctx = Phase {
        scenario: &s,
        load: &h,
        addr: &ingest_addr,
        bodies: bodies.clone(),
        broker_pid: broker.pid,
        cancel: opts.cancel.clone(),
        progress: opts.progress,
        acknowledged: Arc::new(AtomicU64::new(0)),
    };
    let mut phases = Vec::new();
    if s.rate > 0.0 {
        phases.push(ctx.run(s.rate)?);
    } else {
        let peak = ctx.run(0.0)?;
        let peak_samples_per_s = peak.samples_per_s;
        phases.push(peak);
        if h.latency_phase {
            phases.push(ctx.run(latency_rate(&s, &h, peak_samples_per_s))?);
        }
    }
    let samples_acknowledged = ctx.acknowledged.load(Ordering::Relaxed);
    let ends = on_executor("sluice-bench-ends", move || async move {
        log_ends(&topic, timeout).await
    });
    broker.stop();
    let samples_per_record = u64::from(h.samples_per_series.max(1));
    Ok(HttpReport {
        tool: "sluice-bench".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        started_unix_s,
        target,
        ingest_addr,
        scenario: s.clone(),
        limits,
        topic: topic_name.to_string(),
        body_bytes_mean: bodies.bytes() as f64 / bodies.bodies.len().max(1) as f64,
        samples_per_request: h.samples_per_request(),
        phases,
        records_acknowledged: samples_acknowledged / samples_per_record,
        records_stored: ends
            .ok()
            .map(|e| e.values().map(|v| u64::try_from(*v).unwrap_or(0)).sum()),
        broker_rss_idle_kib: idle_rss,
    })
}

/// Polls the ingest listener until it accepts (it binds after the Kafka one).
fn wait_accepting(addr: &str, broker: &EmbeddedBroker) -> Result<()> {
    let started = Instant::now();
    loop {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        if started.elapsed() > INGEST_READY_MAX {
            return Err(BenchError::Broker(format!(
                "the ingest listener {addr} did not accept within {} s; the log ends with:\n{}",
                INGEST_READY_MAX.as_secs(),
                broker.log_tail()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What every phase of a run shares.
struct Phase<'a> {
    scenario: &'a Scenario,
    load: &'a HttpLoad,
    addr: &'a str,
    bodies: Arc<Bodies>,
    broker_pid: u32,
    cancel: Arc<AtomicBool>,
    progress: bool,
    /// Samples acknowledged over every phase, warm-ups included.
    acknowledged: Arc<AtomicU64>,
}

/// What one writer thread brings back.
struct WriterOutput {
    latency: LatencySink,
    errors: u64,
    statuses: BTreeMap<u16, u64>,
    error_samples: Vec<String>,
}

/// One phase's timing, shared by its writers.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    measure_from: Instant,
    stop_at: Instant,
}

impl Phase<'_> {
    /// One phase at `rate` samples/s (0: as fast as possible).
    fn run(&self, rate: f64) -> Result<PhaseReport> {
        let s = self.scenario;
        let h = self.load;
        let start = Instant::now() + PHASE_START_DELAY;
        let measure_from = start + Duration::from_secs_f64(s.warmup_s);
        let stop_at = measure_from + Duration::from_secs_f64(s.duration_s);
        let window = Window {
            start,
            measure_from,
            stop_at,
        };
        if self.progress {
            if rate > 0.0 {
                eprintln!("phase: {rate:.0} samples/s, {} writers", h.writers);
            } else {
                eprintln!("phase: as fast as possible, {} writers", h.writers);
            }
        }
        let counters = Arc::new(Counters::default());
        let next_body = Arc::new(AtomicU64::new(0));
        // Requests/s over all writers, each writer a share of it, phased.
        let requests_per_s = rate / h.samples_per_request().max(1) as f64;
        let mut threads = Vec::new();
        for w in 0..h.writers {
            let schedule = Schedule::for_rate(start, requests_per_s / f64::from(h.writers))
                .map(|sch| sch.phased(f64::from(w) / f64::from(h.writers)));
            let writer = Writer {
                addr: self.addr.to_string(),
                protocol: h.protocol.clone(),
                bodies: self.bodies.clone(),
                next_body: next_body.clone(),
                counters: counters.clone(),
                acknowledged: self.acknowledged.clone(),
                cancel: self.cancel.clone(),
                window,
                schedule,
                interval: interval_for(s.duration_s),
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("http-writer-{w}"))
                    .spawn(move || writer.run())
                    .map_err(|e| BenchError::io("starting a writer thread", e))?,
            );
        }

        type Snapshot = (CounterSnapshot, Option<broker_proc::ProcSample>, f64);
        let snapshot = |c: &Counters| -> Snapshot {
            (
                c.snapshot(),
                broker_proc::sample(self.broker_pid),
                broker_proc::self_cpu_s(),
            )
        };
        let (mut at_measure, mut at_stop): (Option<Snapshot>, Option<Snapshot>) = (None, None);
        let mut timeline = Vec::new();
        let mut prev = (start, CounterSnapshot::default());
        let mut next_tick = start + TICK;
        let tty = std::io::stderr().is_terminal();
        sleep_until(start);
        loop {
            let now = Instant::now();
            if at_measure.is_none() && now >= measure_from {
                at_measure = Some(snapshot(&counters));
            }
            if at_stop.is_none() && now >= stop_at {
                at_stop = Some(snapshot(&counters));
            }
            if now >= next_tick {
                let snap = counters.snapshot();
                let point = RatePoint::between(
                    now.duration_since(start).as_secs_f64(),
                    &snap.minus(&prev.1),
                    now.duration_since(prev.0).as_secs_f64(),
                );
                timeline.push(point);
                if self.progress {
                    let line = format!(
                        "[{:>5.1} s{}] {:>10.0} samples/s {:>8.1} MB/s{}",
                        point.elapsed_s,
                        if now < measure_from { " warm-up" } else { "" },
                        point.records_out_per_s,
                        point.mb_out_per_s,
                        if snap.errors > 0 {
                            format!(" | {} errors", snap.errors)
                        } else {
                            String::new()
                        }
                    );
                    let mut err = std::io::stderr().lock();
                    let _ = if tty {
                        write!(err, "\r{line}\x1b[K")
                    } else {
                        writeln!(err, "{line}")
                    };
                }
                prev = (now, snap);
                next_tick += TICK;
            }
            if at_stop.is_some() || self.cancel.load(Ordering::Relaxed) {
                break;
            }
            let wake = [next_tick, measure_from, stop_at]
                .into_iter()
                .filter(|t| *t > now)
                .min()
                .unwrap_or(stop_at);
            sleep_until(wake);
        }
        if self.progress && tty {
            eprintln!();
        }
        let mut latency = LatencySink::new(measure_from, interval_for(s.duration_s));
        let (mut errors, mut statuses, mut error_samples) = (0, BTreeMap::new(), Vec::new());
        for t in threads {
            let out = t
                .join()
                .map_err(|_| BenchError::Runtime("an HTTP writer thread panicked".into()))?;
            latency.add(&out.latency);
            errors += out.errors;
            for (status, n) in out.statuses {
                *statuses.entry(status).or_insert(0) += n;
            }
            for e in out.error_samples {
                if error_samples.len() < ERROR_SAMPLES_MAX && !error_samples.contains(&e) {
                    error_samples.push(e);
                }
            }
        }
        if self.cancel.load(Ordering::Relaxed) {
            return Err(BenchError::Interrupted);
        }
        let (m, s_) = (at_measure.unwrap_or_default(), at_stop.unwrap_or_default());
        let seconds = stop_at.duration_since(measure_from).as_secs_f64().max(1e-9);
        let window_counts = s_.0.minus(&m.0);
        let samples = window_counts.records_out;
        let requests = window_counts.records_in;
        let broker = match (m.1, s_.1) {
            (Some(a), Some(b)) => {
                let cpu_s = (b.cpu_s - a.cpu_s).max(0.0);
                Some(BrokerCpu {
                    cpu_s,
                    cores: cpu_s / seconds,
                    cpu_s_per_m_samples: (samples > 0).then(|| cpu_s / (samples as f64 / 1e6)),
                    rss_kib: b.rss_kib,
                })
            }
            _ => None,
        };
        Ok(PhaseReport {
            rate_samples_per_s: rate,
            measured_s: seconds,
            requests,
            samples,
            samples_per_s: samples as f64 / seconds,
            records_per_s: samples as f64 / seconds / f64::from(h.samples_per_series.max(1)),
            requests_per_s: requests as f64 / seconds,
            body_mb_per_s: window_counts.bytes_out as f64 / MB / seconds,
            request_latency: Percentiles::of(&latency.total),
            corrected_for_coordinated_omission: rate > 0.0,
            broker,
            harness_cores: (s_.2 - m.2).max(0.0) / seconds,
            errors,
            statuses,
            error_samples,
            timeline,
            latency_hist: latency.total,
        })
    }
}

/// One writer thread: one connection, one request in flight.
struct Writer {
    addr: String,
    protocol: String,
    bodies: Arc<Bodies>,
    next_body: Arc<AtomicU64>,
    /// `records_out`/`bytes_out`: samples and body bytes acknowledged;
    /// `records_in`: requests acknowledged; `errors`: failed requests.
    counters: Arc<Counters>,
    acknowledged: Arc<AtomicU64>,
    cancel: Arc<AtomicBool>,
    window: Window,
    /// Request `k` of this writer is due at `schedule.due(k)`; none as
    /// fast as possible.
    schedule: Option<Schedule>,
    interval: Duration,
}

impl Writer {
    fn run(self) -> WriterOutput {
        let (target, headers) = request_of(&self.protocol);
        let mut client = client::Client::new(&self.addr, REQUEST_TIMEOUT);
        let mut out = WriterOutput {
            latency: LatencySink::new(self.window.measure_from, self.interval),
            errors: 0,
            statuses: BTreeMap::new(),
            error_samples: Vec::new(),
        };
        let counted = self.window.measure_from..self.window.stop_at;
        let n = self.bodies.bodies.len().max(1) as u64;
        for k in 0u64.. {
            if self.cancel.load(Ordering::Relaxed) {
                break;
            }
            let due = match &self.schedule {
                Some(s) => s.due(k),
                None => Instant::now().max(self.window.start),
            };
            if due >= self.window.stop_at {
                break;
            }
            sleep_until(due);
            let i = (self.next_body.fetch_add(1, Ordering::Relaxed) % n) as usize;
            let body = &self.bodies.bodies[i];
            let result = client.post(target, headers, body);
            let done = Instant::now();
            match result {
                Ok(r) if (200..300).contains(&r.status) => {
                    let samples = self.bodies.samples[i];
                    self.counters.add_out(samples, body.len() as u64);
                    self.counters.add_in(1, 0);
                    self.acknowledged.fetch_add(samples, Ordering::Relaxed);
                    if counted.contains(&due) {
                        out.latency
                            .record(done, done.saturating_duration_since(due), 1);
                    }
                }
                Ok(r) => {
                    self.note_error(&mut out);
                    *out.statuses.entry(r.status).or_insert(0) += 1;
                    out.keep(format!(
                        "{} {}",
                        r.status,
                        String::from_utf8_lossy(&r.body[..r.body.len().min(200)])
                    ));
                }
                Err(e) => {
                    self.note_error(&mut out);
                    out.keep(format!("{}: {e}", self.addr));
                    std::thread::sleep(RETRY_PAUSE);
                }
            }
        }
        out
    }

    fn note_error(&self, out: &mut WriterOutput) {
        out.errors += 1;
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
    }
}

impl WriterOutput {
    fn keep(&mut self, message: String) {
        if self.error_samples.len() < ERROR_SAMPLES_MAX && !self.error_samples.contains(&message) {
            self.error_samples.push(message);
        }
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latency_phase_runs_at_half_the_goal_that_applies() {
        let mut s = Scenario::load("remote-write").expect("remote-write");
        let h = s.http.clone().expect("http");
        assert_eq!(latency_rate(&s, &h, 3e6), 500_000.0);
        s.http = Some(HttpLoad {
            ingest_format: "json".into(),
            ..h.clone()
        });
        let json = s.http.clone().expect("http");
        assert_eq!(latency_rate(&s, &json, 3e6), 150_000.0);
        // No goal for this profile: half the peak.
        s.profile = "durable".into();
        assert_eq!(latency_rate(&s, &json, 80_000.0), 40_000.0);
        // The scenario's own rate wins.
        let fixed = HttpLoad {
            latency_rate: 1234.0,
            ..json
        };
        assert_eq!(latency_rate(&s, &fixed, 80_000.0), 1234.0);
    }

    #[test]
    fn each_protocol_posts_where_the_broker_listens() {
        assert_eq!(topic_of("remote-write"), "prometheus");
        assert_eq!(topic_of("influx"), "metrics");
        let (target, headers) = request_of("remote-write");
        assert_eq!(target, "/api/v1/write");
        assert!(headers.contains("Content-Encoding: snappy\r\n"));
        assert!(request_of("influx").0.starts_with("/api/v2/write?bucket="));
    }
}
