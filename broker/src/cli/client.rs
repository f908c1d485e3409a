//! Kafka clients for the operator commands (librdkafka through rdkafka):
//! the bootstrap address and its reachability check, timeouts, a quiet
//! client context, and the cluster metadata every command starts from.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use rdkafka::admin::AdminClient;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::metadata::Metadata;

use super::output::Format;

/// How long the reachability check waits for a TCP connection to each
/// bootstrap address: an unreachable broker must fail fast, not after the
/// operation timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Options every operator command takes.
#[derive(clap::Args, Clone, Debug)]
pub struct Common {
    /// Broker(s) to bootstrap from, comma-separated.
    #[arg(
        long,
        global = true,
        env = "SLUICE_BOOTSTRAP",
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT"
    )]
    pub bootstrap: String,
    /// Output format: tables for people or JSON for scripts.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Bound on each request to the cluster, in milliseconds.
    #[arg(long, global = true, default_value_t = 10_000, value_name = "MS")]
    pub timeout_ms: u64,
}

impl Common {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// A client configuration for the bootstrap list, after checking that
    /// at least one of its addresses accepts a TCP connection, so that an
    /// unreachable broker is reported by address within seconds instead
    /// of as a librdkafka timeout.
    pub fn config(&self) -> anyhow::Result<ClientConfig> {
        check_reachable(&self.bootstrap)?;
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap)
            .set("client.id", "sluice-cli")
            .set("socket.timeout.ms", self.timeout_ms.max(10).to_string())
            // Looking at a topic must never create it.
            .set("allow.auto.create.topics", "false")
            .set_log_level(RDKafkaLogLevel::Emerg);
        // SLUICE_CLIENT_DEBUG=cgrp,fetch,... turns librdkafka's debug
        // contexts on and prints its log to stderr, for diagnosing a cluster.
        if let Ok(contexts) = std::env::var("SLUICE_CLIENT_DEBUG") {
            c.set("debug", contexts)
                .set_log_level(RDKafkaLogLevel::Debug);
        }
        Ok(c)
    }

    pub fn admin(&self) -> anyhow::Result<AdminClient<Quiet>> {
        self.config()?
            .create_with_context(Quiet)
            .context("creating the admin client")
    }

    /// A consumer that is not subscribed: for metadata, watermarks,
    /// offsets by time and, with `group`, a group's committed offsets.
    pub fn consumer(&self, group: Option<&str>) -> anyhow::Result<BaseConsumer<Quiet>> {
        let mut c = self.config()?;
        c.set("enable.auto.commit", "false");
        if let Some(g) = group {
            c.set("group.id", g);
        }
        c.create_with_context(Quiet)
            .context("creating the consumer")
    }
}

/// Drops librdkafka's log lines and error callbacks: failures reach the
/// user as the error of the operation that failed, once, not as a stream
/// of "broker down" lines.
pub struct Quiet;

impl ClientContext for Quiet {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        debug_log(level, fac, log_message);
    }
    fn error(&self, _error: KafkaError, _reason: &str) {}
}

impl ConsumerContext for Quiet {}

/// librdkafka's log lines reach stderr only when SLUICE_CLIENT_DEBUG set
/// the log level to debug (the configured level filters them otherwise).
pub fn debug_log(level: RDKafkaLogLevel, fac: &str, log_message: &str) {
    if std::env::var_os("SLUICE_CLIENT_DEBUG").is_some() {
        eprintln!("librdkafka {level:?} {fac}: {log_message}");
    }
}

fn check_reachable(bootstrap: &str) -> anyhow::Result<()> {
    let mut failures = Vec::new();
    for server in bootstrap
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let addrs = match server.to_socket_addrs() {
            Ok(a) => a.collect::<Vec<_>>(),
            Err(e) => {
                failures.push(format!("{server}: {e}"));
                continue;
            }
        };
        for addr in &addrs {
            match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) {
                Ok(_) => return Ok(()),
                Err(e) if addr.to_string() == server => failures.push(format!("{server}: {e}")),
                Err(e) => failures.push(format!("{server} ({addr}): {e}")),
            }
        }
        if addrs.is_empty() {
            failures.push(format!("{server}: no address"));
        }
    }
    if failures.is_empty() {
        bail!("no bootstrap address given (--bootstrap HOST:PORT)");
    }
    Err(anyhow!(
        "cannot reach the broker at {bootstrap}: {} (set --bootstrap or SLUICE_BOOTSTRAP)",
        failures.join("; ")
    ))
}

/// The cluster's metadata for all topics.
pub fn metadata<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    common: &Common,
) -> anyhow::Result<Metadata> {
    client
        .fetch_metadata(None, common.timeout())
        .with_context(|| format!("fetching metadata from {}", common.bootstrap))
}

/// Partition ids of `topic`, sorted; an error naming the topic if the
/// cluster does not have it.
pub fn partitions_of(metadata: &Metadata, topic: &str) -> anyhow::Result<Vec<i32>> {
    let t = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| anyhow!("topic {topic:?} does not exist"))?;
    if let Some(e) = t.error() {
        bail!(
            "topic {topic:?}: {:?}",
            rdkafka::types::RDKafkaErrorCode::from(e)
        );
    }
    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Parses `k=v` (for --config, --set, --header).
pub fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}
