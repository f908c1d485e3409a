//! What an HTTP ingest run measured: per phase (as fast as possible, then
//! a fixed rate) samples/s, request latency, the broker's CPU per million
//! samples and the errors; the table printed at the end, and the figures
//! its goals are judged by.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::goals::Metric;
use crate::limits::Limits;
use crate::report::Target;
use crate::scenario::Scenario;
use crate::stats::{Percentiles, RatePoint};

/// The broker during one phase's measured window.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct BrokerCpu {
    pub cpu_s: f64,
    pub cores: f64,
    pub cpu_s_per_m_samples: Option<f64>,
    pub rss_kib: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    /// Samples/s offered; 0 as fast as possible.
    pub rate_samples_per_s: f64,
    pub measured_s: f64,
    /// Requests answered 2xx in the measured window, and what they held.
    pub requests: u64,
    pub samples: u64,
    pub samples_per_s: f64,
    /// Records the broker makes of them: series (remote-write) or lines.
    pub records_per_s: f64,
    pub requests_per_s: f64,
    /// Request bodies as sent (compressed for remote-write).
    pub body_mb_per_s: f64,
    /// From each request's intended send time at a fixed rate, from its
    /// send otherwise.
    pub request_latency: Percentiles,
    pub corrected_for_coordinated_omission: bool,
    pub broker: Option<BrokerCpu>,
    pub harness_cores: f64,
    /// Failed requests over the whole phase (warm-up included): answers
    /// other than 2xx and connection errors.
    pub errors: u64,
    /// Answers other than 2xx by status.
    pub statuses: BTreeMap<u16, u64>,
    pub error_samples: Vec<String>,
    pub timeline: Vec<RatePoint>,
    #[serde(skip)]
    pub latency_hist: Histogram<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HttpReport {
    pub tool: String,
    pub version: String,
    pub started_unix_s: u64,
    pub target: Target,
    /// The broker's ingest listener the writers posted to.
    pub ingest_addr: String,
    pub scenario: Scenario,
    pub limits: Option<Limits>,
    pub topic: String,
    pub body_bytes_mean: f64,
    pub samples_per_request: u64,
    pub phases: Vec<PhaseReport>,
    /// Records acknowledged over every phase (warm-ups included) and the
    /// records the topic holds at the end: equal unless a write failed
    /// after storing part of itself.
    pub records_acknowledged: u64,
    pub records_stored: Option<u64>,
    pub broker_rss_idle_kib: Option<u64>,
}

impl HttpReport {
    /// The as-fast-as-possible phase, if the run had one.
    pub fn peak(&self) -> Option<&PhaseReport> {
        self.phases.iter().find(|p| p.rate_samples_per_s == 0.0)
    }

    /// The fixed-rate phase, if the run had one.
    pub fn at_rate(&self) -> Option<&PhaseReport> {
        self.phases.iter().find(|p| p.rate_samples_per_s > 0.0)
    }

    /// A figure a goal bounds, when this run measured it.
    pub fn measure(&self, m: Metric) -> Option<f64> {
        let main = self.peak().or_else(|| self.at_rate());
        match m {
            Metric::SamplesPerS => self.peak().map(|p| p.samples_per_s),
            Metric::RequestP99MsAtRate => self
                .at_rate()
                .filter(|p| p.request_latency.count > 0)
                .map(|p| p.request_latency.p99_us as f64 / 1000.0),
            Metric::BrokerCpuSPerMSamples => main?.broker?.cpu_s_per_m_samples,
            _ => None,
        }
    }

    pub fn table(&self) -> String {
        let mut o = String::new();
        let s = &self.scenario;
        let Some(h) = &s.http else {
            return o;
        };
        let _ = writeln!(
            o,
            "sluice-bench {}: scenario {} against {} (embedded sluice, profile {}, --ingest-format {}, --cores {})",
            self.version, s.name, self.ingest_addr, s.profile, h.ingest_format, s.broker_cores
        );
        let _ = writeln!(
            o,
            "  {} to topic {} ({} partitions): {} writers, {} series, {} series x {} samples per request ({:.0} B bodies), {} s + {} s warm-up per phase",
            h.protocol, self.topic, s.partitions, h.writers, h.series, h.series_per_request,
            h.samples_per_series, self.body_bytes_mean, s.duration_s, s.warmup_s
        );
        if let Some(l) = &self.limits {
            let _ = writeln!(
                o,
                "limits: O_DIRECT write {:.0} MB/s, fdatasync p50 {} µs, loopback TCP {:.0} MB/s",
                l.disk_write_mb_per_s, l.fdatasync_us_p50, l.loopback_mb_per_s
            );
        }
        for p in &self.phases {
            let _ = writeln!(
                o,
                "{}:",
                if p.rate_samples_per_s > 0.0 {
                    format!(
                        "at {:.0} samples/s (latency from each request's intended send time)",
                        p.rate_samples_per_s
                    )
                } else {
                    "as fast as possible (latency from each request's send)".to_string()
                }
            );
            let _ = writeln!(
                o,
                "  {:>12.0} samples/s {:>10.0} records/s {:>8.0} requests/s {:>8.1} MB/s of bodies",
                p.samples_per_s, p.records_per_s, p.requests_per_s, p.body_mb_per_s
            );
            let l = &p.request_latency;
            let _ = writeln!(
                o,
                "  request p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  (n={})",
                l.p50_us as f64 / 1000.0,
                l.p99_us as f64 / 1000.0,
                l.p999_us as f64 / 1000.0,
                l.max_us as f64 / 1000.0,
                l.count
            );
            if let Some(b) = &p.broker {
                let _ = writeln!(
                    o,
                    "  broker {:.2} CPU s ({:.2} cores){}, RSS {:.1} MiB; harness {:.2} cores",
                    b.cpu_s,
                    b.cores,
                    b.cpu_s_per_m_samples.map_or(String::new(), |x| format!(
                        ", {x:.3} CPU s per million samples"
                    )),
                    b.rss_kib as f64 / 1024.0,
                    p.harness_cores
                );
            }
            if p.errors > 0 {
                let _ = writeln!(o, "  errors: {} {:?}", p.errors, p.statuses);
                for e in &p.error_samples {
                    let _ = writeln!(o, "    {e}");
                }
            }
        }
        let _ = writeln!(
            o,
            "records: {} acknowledged, {} in the topic at the end",
            self.records_acknowledged,
            self.records_stored
                .map_or("unknown".to_string(), |n| n.to_string())
        );
        o
    }
}

/// The Markdown rows of HTTP runs (one per run and phase).
pub fn markdown_table(reports: &[HttpReport]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "| profile | format | phase | samples/s | records/s | requests/s | body MB/s | request p50 ms | p99 ms | p99.9 ms | broker cores | broker CPU s per M samples | errors |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in reports {
        let format = r.scenario.ingest_format().unwrap_or("–");
        for p in &r.phases {
            let l = &p.request_latency;
            let _ = writeln!(
                o,
                "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.1} | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
                r.scenario.profile,
                format,
                if p.rate_samples_per_s > 0.0 {
                    format!("{:.0}/s", p.rate_samples_per_s)
                } else {
                    "peak".to_string()
                },
                p.samples_per_s,
                p.records_per_s,
                p.requests_per_s,
                p.body_mb_per_s,
                l.p50_us as f64 / 1000.0,
                l.p99_us as f64 / 1000.0,
                l.p999_us as f64 / 1000.0,
                p.broker.map_or("–".into(), |b| format!("{:.2}", b.cores)),
                p.broker
                    .and_then(|b| b.cpu_s_per_m_samples)
                    .map_or("–".into(), |x| format!("{x:.3}")),
                p.errors
            );
        }
    }
    o
}
