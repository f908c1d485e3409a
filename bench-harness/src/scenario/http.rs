//! The HTTP ingest load a scenario may carry (its `[http]` table): what
//! it sends and how it is checked before the run.

use serde::{Deserialize, Serialize};

use super::{Scenario, PROFILES};
use crate::error::{BenchError, Result};

/// Protocols of the HTTP ingest load.
pub const HTTP_PROTOCOLS: [&str; 2] = ["remote-write", "influx"];
/// The broker's `--ingest-format` values.
pub const INGEST_FORMATS: [&str; 2] = ["raw", "json"];

/// Series at most: every series' labels are encoded ahead of the run.
pub const HTTP_SERIES_MAX: u32 = 1_000_000;
/// Series in one request at most (Prometheus sends 2,000 samples a request
/// by default, Telegraf 1,000 lines).
pub const HTTP_SERIES_PER_REQUEST_MAX: u32 = 100_000;

/// An HTTP ingest load: `writers` keep-alive connections, each sending
/// requests of `series_per_request` series from a pool of `series`, to
/// the embedded broker's ingest listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpLoad {
    /// `remote-write` (Prometheus 1.0, snappy protobuf) or `influx` (line
    /// protocol to `/api/v2/write`).
    pub protocol: String,
    /// The broker's `--ingest-format`: raw or json.
    pub ingest_format: String,
    /// Distinct series the writers cycle through.
    pub series: u32,
    pub series_per_request: u32,
    /// Remote-write: samples of each series in a request; Influx: fields
    /// of each line. Either way, samples per series per request.
    pub samples_per_series: u32,
    /// Concurrent connections, one request in flight each.
    pub writers: u32,
    /// As fast as possible (rate 0), then this many samples/s for the
    /// latency phase. 0: half the samples/s goal that applies to the run,
    /// or half the peak when none does.
    pub latency_rate: f64,
    /// Run the fixed-rate latency phase after an as-fast-as-possible one.
    pub latency_phase: bool,
}

impl Default for HttpLoad {
    fn default() -> Self {
        HttpLoad {
            protocol: "remote-write".into(),
            ingest_format: "raw".into(),
            series: 10_000,
            series_per_request: 2_000,
            samples_per_series: 1,
            writers: 4,
            latency_rate: 0.0,
            latency_phase: true,
        }
    }
}

impl HttpLoad {
    pub fn samples_per_request(&self) -> u64 {
        u64::from(self.series_per_request) * u64::from(self.samples_per_series)
    }
}

impl Scenario {
    pub(super) fn validate_http(&self, h: &HttpLoad) -> Result<()> {
        fn bad(key: &'static str, value: impl ToString, allowed: &str) -> Result<()> {
            Err(BenchError::Config {
                key,
                value: value.to_string(),
                allowed: allowed.to_string(),
            })
        }
        if !HTTP_PROTOCOLS.contains(&h.protocol.as_str()) {
            return bad("http.protocol", &h.protocol, "remote-write or influx");
        }
        if !INGEST_FORMATS.contains(&h.ingest_format.as_str()) {
            return bad("ingest-format", &h.ingest_format, "raw or json");
        }
        if !(1..=HTTP_SERIES_MAX).contains(&h.series) {
            return bad("series", h.series, &format!("1 to {HTTP_SERIES_MAX}"));
        }
        if !(1..=HTTP_SERIES_PER_REQUEST_MAX.min(h.series)).contains(&h.series_per_request) {
            return bad(
                "series-per-request",
                h.series_per_request,
                &format!(
                    "1 to the series ({}) and at most {HTTP_SERIES_PER_REQUEST_MAX}",
                    h.series
                ),
            );
        }
        if !(1..=100).contains(&h.samples_per_series) {
            return bad("http.samples_per_series", h.samples_per_series, "1 to 100");
        }
        if !(1..=1000).contains(&h.writers) {
            return bad("writers", h.writers, "1 to 1000");
        }
        if !(h.latency_rate >= 0.0 && h.latency_rate.is_finite()) {
            return bad(
                "latency-rate",
                h.latency_rate,
                "0 (half the goal or the peak) or samples/s",
            );
        }
        if self.is_cluster() {
            return bad("cluster", self.cluster_nodes, "1 for an HTTP ingest load");
        }
        if self.broker_cores < 1 {
            return bad("broker-cores", self.broker_cores, "at least 1");
        }
        if !PROFILES.contains(&self.profile.as_str()) {
            return bad("profile", &self.profile, "durable, balanced or throughput");
        }
        Ok(())
    }
}
