//! Kafka clients for the operator commands (librdkafka through rdkafka):
//! the bootstrap address and its reachability check, the operator's client
//! properties (security among them), timeouts, the wait for a first answer
//! that turns a failed authentication into its message, a quiet client
//! context, and the cluster metadata every command starts from.

use std::ffi::CStr;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use rdkafka::admin::AdminClient;
use rdkafka::bindings;
use rdkafka::client::{Client, ClientContext};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::metadata::Metadata;

use super::output::Format;
use super::properties::{self, Origin, Property};

/// How long the reachability check waits for a TCP connection to each
/// bootstrap address: an unreachable broker must fail fast, not after the
/// operation timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long each Metadata request of the wait for a first answer may
/// take, so that an authentication failure reported meanwhile is seen
/// within this long.
const READY_PROBE: Duration = Duration::from_millis(200);

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
    /// A file of librdkafka client properties, one key=value a line (`#`
    /// and `!` start comments), e.g. security.protocol, sasl.mechanism,
    /// sasl.username, sasl.password, ssl.ca.location. Keep it mode 600
    /// when it holds a password.
    #[arg(
        long,
        global = true,
        env = "SLUICE_COMMAND_CONFIG",
        value_name = "FILE"
    )]
    pub command_config: Option<PathBuf>,
    /// A librdkafka client property, as kcat takes it (e.g.
    /// -X security.protocol=SASL_SSL -X sasl.mechanism=SCRAM-SHA-512);
    /// repeat for more. Wins over --command-config. A password given here
    /// shows in the process list: prefer --command-config for it.
    #[arg(
        short = 'X',
        global = true,
        value_name = "KEY=VALUE",
        value_parser = key_value
    )]
    pub property: Vec<(String, String)>,
}

impl Common {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The operator's client properties in the order they apply: the
    /// --command-config file, then the -X flags; each checked by
    /// librdkafka, with its origin named if refused.
    pub fn properties(&self) -> anyhow::Result<Vec<Property>> {
        let mut out = match &self.command_config {
            Some(path) => properties::read_file(path)?,
            None => Vec::new(),
        };
        out.extend(self.property.iter().map(|(key, value)| Property {
            key: key.clone(),
            value: value.clone(),
            origin: Origin::Flag,
        }));
        properties::check(&out)?;
        Ok(out)
    }

    /// Whether the operator's properties name a security protocol (a
    /// file that cannot be read counts as no).
    fn secured(&self) -> bool {
        self.properties()
            .is_ok_and(|ps| ps.iter().any(|p| p.key == "security.protocol"))
    }

    /// A client configuration for the bootstrap list with the operator's
    /// properties over the CLI's defaults, after checking that at least
    /// one of its addresses accepts a TCP connection (a TLS listener
    /// does too), so that an unreachable broker is reported by address
    /// within seconds instead of as a librdkafka timeout. Commands then
    /// set what their own flags decide.
    pub fn config(&self) -> anyhow::Result<ClientConfig> {
        let user = self.properties()?;
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
        for p in user {
            c.set(p.key, p.value);
        }
        Ok(c)
    }

    pub fn admin(&self) -> anyhow::Result<AdminClient<Quiet>> {
        let admin: AdminClient<Quiet> = self
            .config()?
            .create_with_context(Quiet)
            .context("creating the admin client")?;
        ready(admin.inner(), self)?;
        Ok(admin)
    }

    /// A consumer that is not subscribed: for metadata, watermarks,
    /// offsets by time and, with `group`, a group's committed offsets.
    pub fn consumer(&self, group: Option<&str>) -> anyhow::Result<BaseConsumer<Quiet>> {
        let mut c = self.config()?;
        c.set("enable.auto.commit", "false");
        if let Some(g) = group {
            c.set("group.id", g);
        }
        let consumer: BaseConsumer<Quiet> = c
            .create_with_context(Quiet)
            .context("creating the consumer")?;
        ready(consumer.client(), self)?;
        Ok(consumer)
    }
}

/// Sets `key` unless the operator's properties already did: for the
/// CLI's defaults that are not a flag of their own (linger.ms, ...).
pub fn set_default(config: &mut ClientConfig, key: &str, value: impl Into<String>) {
    if config.get(key).is_none() {
        config.set(key, value);
    }
}

/// Waits until a broker answers a Metadata request through `client`, so
/// that a connection that cannot succeed fails the command at once with
/// its cause: librdkafka reports a refused authentication or a failed TLS
/// handshake only as an error event and retries, and every request would
/// otherwise wait out its timeout. Call it on a new client, before it has
/// done anything: it takes the events waiting on the main queue (for a
/// consumer, its queue).
pub fn ready<C: ClientContext>(client: &Client<C>, common: &Common) -> anyhow::Result<()> {
    let deadline = Instant::now() + common.timeout();
    let rk = client.native_ptr();
    // SAFETY: the client outlives the queue handle, which is destroyed
    // when `main` drops.
    let main = Queue(unsafe { bindings::rd_kafka_queue_get_main(rk) });
    let mut last_error: Option<String> = None;
    loop {
        if let Some(fatal) = drain_errors(&main, &mut last_error) {
            bail!("{fatal} (at {})", common.bootstrap);
        }
        let now = Instant::now();
        if now >= deadline {
            bail!(
                "no broker at {} answered within {} ms{}{}",
                common.bootstrap,
                common.timeout_ms,
                last_error.map(|e| format!(": {e}")).unwrap_or_default(),
                if common.secured() {
                    ""
                } else {
                    " (a TLS or SASL listener closes the connections of a client \
                     without security.protocol: see -X and --command-config)"
                }
            );
        }
        let probe_ms = READY_PROBE.min(deadline - now).as_millis().max(1);
        let probe_ms = i32::try_from(probe_ms).unwrap_or(i32::MAX);
        let mut md: *const bindings::rd_kafka_metadata = std::ptr::null();
        // SAFETY: all_topics 0 and no topic ask for the brokers only (the
        // new client knows no topic); `md` is set only on success and
        // then freed with rd_kafka_metadata_destroy.
        let err =
            unsafe { bindings::rd_kafka_metadata(rk, 0, std::ptr::null_mut(), &mut md, probe_ms) };
        if err == bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            // SAFETY: as above.
            unsafe { bindings::rd_kafka_metadata_destroy(md) };
            return Ok(());
        }
    }
}

/// Takes the events waiting on `queue`: the first one that retrying
/// cannot cure is returned as a message (after the rest are taken too,
/// so that no later poll meets them); other errors are kept in
/// `last_error` for a timeout's message, log lines go to `debug_log`.
fn drain_errors(queue: &Queue, last_error: &mut Option<String>) -> Option<String> {
    use bindings::rd_kafka_resp_err_t as E;
    let mut fatal = None;
    loop {
        // SAFETY: a live queue handle; a non-null event is ours until
        // destroyed below, and the strings read from it are copied first.
        unsafe {
            let ev = bindings::rd_kafka_queue_poll(queue.0, 0);
            if ev.is_null() {
                return fatal;
            }
            match bindings::rd_kafka_event_type(ev) {
                bindings::RD_KAFKA_EVENT_ERROR => {
                    let code = bindings::rd_kafka_event_error(ev);
                    let reason = text(bindings::rd_kafka_event_error_string(ev))
                        .trim()
                        .to_string();
                    match code {
                        E::RD_KAFKA_RESP_ERR__AUTHENTICATION => {
                            fatal.get_or_insert(format!("authentication failed: {reason}"));
                        }
                        E::RD_KAFKA_RESP_ERR__SSL => {
                            fatal.get_or_insert(format!("TLS failed: {reason}"));
                        }
                        // A summary of the others: kept only without a cause.
                        E::RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN => {
                            last_error.get_or_insert(reason);
                        }
                        _ => *last_error = Some(reason),
                    }
                }
                bindings::RD_KAFKA_EVENT_LOG => {
                    let (mut fac, mut message, mut level) = (std::ptr::null(), std::ptr::null(), 0);
                    if bindings::rd_kafka_event_log(ev, &mut fac, &mut message, &mut level) == 0 {
                        debug_log(log_level(level), &text(fac), &text(message));
                    }
                }
                _ => {}
            }
            bindings::rd_kafka_event_destroy(ev);
        }
    }
}

/// A syslog level as librdkafka gives it (rdkafka keeps its own
/// conversion private).
fn log_level(level: i32) -> RDKafkaLogLevel {
    match level {
        ..=0 => RDKafkaLogLevel::Emerg,
        1 => RDKafkaLogLevel::Alert,
        2 => RDKafkaLogLevel::Critical,
        3 => RDKafkaLogLevel::Error,
        4 => RDKafkaLogLevel::Warning,
        5 => RDKafkaLogLevel::Notice,
        6 => RDKafkaLogLevel::Info,
        _ => RDKafkaLogLevel::Debug,
    }
}

/// A C string from librdkafka as owned text ("" for null).
///
/// # Safety
/// `p` is null or a NUL-terminated string alive for the call.
pub unsafe fn text(p: *const std::os::raw::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: as the caller promised.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// A queue handle of ours, destroyed on drop.
struct Queue(*mut bindings::rd_kafka_queue_t);

impl Drop for Queue {
    fn drop(&mut self) {
        // SAFETY: the handle came from rd_kafka_queue_get_main and is
        // destroyed once.
        unsafe { bindings::rd_kafka_queue_destroy(self.0) };
    }
}

/// Drops librdkafka's log lines and error callbacks: failures reach the
/// user as the error of the operation that failed, once, not as a stream
/// of "broker down" lines. A connection that cannot succeed (refused
/// authentication, failed TLS) is caught before, by `ready`.
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
