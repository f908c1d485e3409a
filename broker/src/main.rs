//! The `sluice` command: `sluice serve` runs a broker from flags and/or a
//! TOML file (flags win), after checks that turn a machine that cannot run
//! it into a message naming the cause and the fix.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use broker::config::{Config, Profile};
use clap::{CommandFactory, Parser, Subcommand};

/// See `broker::alloc`: a malformed request must not abort the process.
#[global_allocator]
static ALLOCATOR: broker::alloc::ReservingAllocator = broker::alloc::ReservingAllocator;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "A Kafka-compatible event-streaming broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter: a level (error, warn, info, debug, trace) or tracing
    /// directives such as `info,broker::group=debug`; overrides the
    /// SLUICE_LOG and RUST_LOG environment variables [default: info].
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker.
    Serve(Box<ServeArgs>),
    /// Create, list, describe, delete and configure topics.
    Topic(cli::topic::TopicArgs),
    /// Produce lines from stdin or a file as records.
    Produce(cli::produce::ProduceArgs),
    /// Print records, by position or as a member of a consumer group.
    Consume(cli::consume::ConsumeArgs),
    /// List, describe, delete consumer groups and reset their offsets.
    Group(cli::group::GroupArgs),
    /// Brokers, controller and cluster id; a health check.
    Cluster(cli::cluster::ClusterArgs),
    /// Set, list and delete SCRAM users' credentials (KIP-554).
    User(cli::user::UserArgs),
    /// Add, list and remove ACL bindings (with `--authorizer on`).
    Acl(cli::acl::AclArgs),
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(clap::Args, Default)]
struct ServeArgs {
    /// TOML file with the same keys as the flags (underscores for dashes).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:9092].
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Address of the HTTP endpoint serving /metrics (Prometheus) and
    /// /health; "" switches it off [default: 127.0.0.1:9644].
    #[arg(long, value_name = "HOST:PORT")]
    metrics_listen: Option<String>,
    /// Serve /metrics and /health over HTTPS, with --tls-cert, --tls-key,
    /// --tls-client-ca and --tls-client-auth as the SSL listeners do
    /// [default: false].
    #[arg(long)]
    metrics_tls: Option<bool>,
    /// Address of the HTTP ingest listener on every shard: Influx
    /// (/api/v2/write, /write) and Prometheus remote-write (/api/v1/write);
    /// "" switches it off [default: ""].
    #[arg(long, value_name = "HOST:PORT")]
    ingest_http_listen: Option<String>,
    /// Serve the ingest listener over HTTPS, with --tls-cert, --tls-key,
    /// --tls-client-ca and --tls-client-auth as the SSL listeners do
    /// [default: false].
    #[arg(long)]
    ingest_http_tls: Option<bool>,
    /// What an ingest write must present: none; basic (HTTP Basic,
    /// InfluxDB's Token USER:PASSWORD, or u and p on /write, checked
    /// against the SCRAM credentials); bearer (Authorization: Bearer JWT
    /// or Token JWT, checked as OAUTHBEARER tokens are, against
    /// --oauth-jwks); or basic,bearer. HTTPS only unless
    /// --ingest-http-auth-insecure [default: none].
    #[arg(long, value_name = "none|basic|bearer|basic,bearer")]
    ingest_http_auth: Option<String>,
    /// Take passwords and tokens over plain HTTP too, where they cross
    /// the network in clear [default: false].
    #[arg(long)]
    ingest_http_auth_insecure: Option<bool>,
    /// Address of the plain-TCP line-protocol listener; "" switches it off
    /// [default: ""].
    #[arg(long, value_name = "HOST:PORT")]
    influx_tcp_listen: Option<String>,
    /// Topic that Influx points go to [default: metrics].
    #[arg(long)]
    influx_topic: Option<String>,
    /// Topic that Prometheus remote-write series go to [default: prometheus].
    #[arg(long)]
    prometheus_topic: Option<String>,
    /// Largest HTTP ingest body, after decompression [default: 16777216].
    #[arg(long)]
    ingest_body_bytes_max: Option<usize>,
    /// What ingested records hold: json, or raw (the line as sent, a
    /// remote-write series as protobuf) [default: json].
    #[arg(long, value_name = "json|raw")]
    ingest_format: Option<String>,
    /// Bytes of ingest writes one shard may have on their way to one
    /// partition; beyond it writes get 429 with Retry-After (503 for a
    /// remote-write, which Prometheus retries) [default: 16777216].
    #[arg(long)]
    ingest_queue_bytes_max: Option<usize>,
    /// Address clients are told to connect to [default: the listen address].
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// Kafka listeners, comma-separated PROTOCOL://HOST:PORT with PROTOCOL
    /// one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL, e.g.
    /// PLAINTEXT://127.0.0.1:9092,SASL_SSL://0.0.0.0:9093 [default: one
    /// PLAINTEXT listener on --listen].
    #[arg(long, value_name = "LIST")]
    listeners: Option<String>,
    /// What clients of each listener are told to connect to, in the same
    /// form [default: each listener's own address].
    #[arg(long, value_name = "LIST")]
    advertised_listeners: Option<String>,
    /// PEM certificate chain of the SSL listeners; re-read on SIGHUP.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert; re-read on SIGHUP.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// PEM CA certificates that client certificates must be signed by.
    #[arg(long, value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
    /// Client certificates (ssl.client.auth): none, requested or required
    /// [default: none].
    #[arg(long, value_name = "none|requested|required")]
    tls_client_auth: Option<String>,
    /// Bound on a TLS handshake in ms [default: 10000].
    #[arg(long)]
    tls_handshake_timeout_ms: Option<u64>,
    /// SASL mechanisms of the SASL listeners, comma-separated, of
    /// SCRAM-SHA-512, SCRAM-SHA-256, PLAIN and OAUTHBEARER [default:
    /// SCRAM-SHA-512,SCRAM-SHA-256].
    #[arg(long, value_name = "LIST")]
    sasl_mechanisms: Option<String>,
    /// Offer PLAIN on SASL_PLAINTEXT listeners too, where passwords cross
    /// the network in clear [default: false].
    #[arg(long)]
    sasl_plain_insecure: Option<bool>,
    /// A failed authentication is answered this many ms late, then the
    /// connection closes (connection.failed.authentication.delay.ms)
    /// [default: 100].
    #[arg(long)]
    auth_failure_delay_ms: Option<u64>,
    /// Largest request before a connection has authenticated
    /// (sasl.server.max.receive.size) [default: 524288].
    #[arg(long)]
    sasl_max_receive_bytes: Option<usize>,
    /// File of NAME:MECHANISM:PASSWORD lines: SCRAM credentials created at
    /// a start that finds none in the cluster (the first administrator);
    /// a missing file seeds nothing.
    #[arg(long, value_name = "FILE")]
    scram_bootstrap_file: Option<PathBuf>,
    /// JWKS that OAUTHBEARER tokens (JWTs) are checked against: a file, or
    /// an https:// URL (http:// only when written so); re-read every
    /// --oauth-jwks-refresh-ms and when a token names an unknown kid.
    #[arg(long, value_name = "FILE|URL")]
    oauth_jwks: Option<String>,
    /// Accept unsigned (alg=none) OAUTHBEARER tokens, as Kafka's unsecured
    /// validator does: anyone can claim to be anyone. For tests only
    /// [default: false].
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    oauth_unsecured_jwt: Option<bool>,
    /// Leeway on a token's exp and nbf, in seconds
    /// (sasl.oauthbearer.clock.skew.seconds) [default: 30].
    #[arg(long)]
    oauth_clock_skew_s: Option<u64>,
    /// The iss claim tokens must carry (sasl.oauthbearer.expected.issuer)
    /// [default: not checked].
    #[arg(long)]
    oauth_expected_issuer: Option<String>,
    /// Audiences, comma-separated: a token's aud must name one
    /// (sasl.oauthbearer.expected.audience) [default: not checked].
    #[arg(long, value_name = "LIST")]
    oauth_expected_audience: Option<String>,
    /// The claim that names the principal, User:<value>
    /// (sasl.oauthbearer.sub.claim.name) [default: sub].
    #[arg(long)]
    oauth_sub_claim_name: Option<String>,
    /// How often the JWKS is read again, in ms
    /// (sasl.oauthbearer.jwks.endpoint.refresh.ms) [default: 3600000].
    #[arg(long)]
    oauth_jwks_refresh_ms: Option<u64>,
    /// A token of an unknown kid has the JWKS read again at most once per
    /// this many ms [default: 10000].
    #[arg(long)]
    oauth_jwks_refresh_min_ms: Option<u64>,
    /// A SASL session lasts at most this long (and no longer than its
    /// token) unless the client re-authenticates (connections.max.reauth.ms,
    /// KIP-368); 0: only a token's expiry ends it [default: 0].
    #[arg(long)]
    connections_max_reauth_ms: Option<u64>,
    /// on: every request is checked against the ACLs (managed with
    /// `sluice acl` or any Kafka admin client); off: everyone may do
    /// everything, and the ACL APIs answer SECURITY_DISABLED [default: off].
    #[arg(long, value_name = "on|off")]
    authorizer: Option<String>,
    /// Principals allowed everything whatever the ACLs say, e.g.
    /// "User:admin;User:ops" (super.users).
    #[arg(long, value_name = "PRINCIPALS")]
    super_users: Option<String>,
    /// A resource that no ACL names is open to everyone
    /// (allow.everyone.if.no.acl.found) [default: false].
    #[arg(long)]
    allow_everyone_if_no_acl_found: Option<bool>,
    /// Where partition logs and metadata live [default: ./sluice-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Shards, one per core [default: every core, or every CPU of --cpus].
    #[arg(long)]
    cores: Option<usize>,
    /// CPUs to pin the shards to, e.g. 0-3 or 1,3 [default: any]; give
    /// each node of a cluster on one host its own.
    #[arg(long, value_name = "LIST")]
    cpus: Option<String>,
    #[arg(long)]
    node_id: Option<i32>,
    /// durable (fsync always), balanced (fsync on an interval) or
    /// throughput (never fsync) [default: balanced].
    #[arg(long)]
    profile: Option<String>,
    /// always, interval or never: overrides the profile.
    #[arg(long)]
    fsync: Option<String>,
    #[arg(long)]
    fsync_interval_ms: Option<u64>,
    #[arg(long)]
    fsync_interval_bytes: Option<u64>,
    /// num.partitions for new topics [default: 1].
    #[arg(long)]
    default_partitions: Option<i32>,
    /// default.replication.factor [default: 1].
    #[arg(long)]
    default_replication_factor: Option<i16>,
    /// log.retention.ms; -1 keeps data forever [default: 7 days].
    #[arg(long, allow_negative_numbers = true)]
    retention_ms: Option<i64>,
    /// log.retention.bytes; -1 means no limit [default: -1].
    #[arg(long, allow_negative_numbers = true)]
    retention_bytes: Option<i64>,
    /// log.segment.bytes [default: 1 GiB].
    #[arg(long)]
    segment_bytes: Option<u64>,
    /// log.roll.ms [default: 7 days].
    #[arg(long)]
    segment_ms: Option<u64>,
    /// log.retention.check.interval.ms [default: 300000].
    #[arg(long)]
    retention_check_interval_ms: Option<u64>,
    /// log.cleaner.backoff.ms: how often compacted topics are checked for
    /// cleaning [default: 15000].
    #[arg(long)]
    log_cleaner_backoff_ms: Option<u64>,
    /// auto.create.topics.enable [default: true].
    #[arg(long)]
    auto_create_topics: Option<bool>,
    /// socket.request.max.bytes [default: 104857600].
    #[arg(long)]
    max_request_bytes: Option<usize>,
    /// message.max.bytes, the default max.message.bytes of topics.
    #[arg(long)]
    max_message_bytes: Option<u32>,
    /// connections.max.idle.ms [default: 600000].
    #[arg(long)]
    connections_max_idle_ms: Option<u64>,
    /// Bound on the partitions of one topic [default: 10000].
    #[arg(long)]
    partitions_per_topic_max: Option<i32>,
    /// Memory each shard registers with io_uring [default: 2 MiB].
    #[arg(long)]
    io_memory_bytes: Option<usize>,
    /// Recent batches each partition keeps in memory [default: 8 MiB].
    #[arg(long)]
    tail_cache_bytes: Option<usize>,
    /// Recent batches all partitions of one shard keep in memory together
    /// [default: 64 MiB].
    #[arg(long)]
    shard_cache_bytes: Option<usize>,
    /// offsets.topic.num.partitions: partitions of __consumer_offsets
    /// [default: 50].
    #[arg(long)]
    offsets_topic_partitions: Option<i32>,
    /// offsets.retention.minutes in ms: how long an empty group's committed
    /// offsets are kept [default: 7 days].
    #[arg(long)]
    offsets_retention_ms: Option<i64>,
    /// offsets.retention.check.interval.ms [default: 600000].
    #[arg(long)]
    offsets_retention_check_interval_ms: Option<u64>,
    /// group.min.session.timeout.ms [default: 6000].
    #[arg(long)]
    group_min_session_timeout_ms: Option<i32>,
    /// group.max.session.timeout.ms [default: 1800000].
    #[arg(long)]
    group_max_session_timeout_ms: Option<i32>,
    /// group.initial.rebalance.delay.ms: how long a new group waits for more
    /// members before its first assignment [default: 3000].
    #[arg(long)]
    group_initial_rebalance_delay_ms: Option<i64>,
    /// group.max.size [default: 2147483647].
    #[arg(long)]
    group_max_size: Option<usize>,
    /// This node's controller (Raft) listener [default: 127.0.0.1:0].
    #[arg(long, value_name = "HOST:PORT")]
    controller_listen: Option<String>,
    /// The controller quorum, e.g. 1@10.0.0.1:9093,2@10.0.0.2:9093,3@10.0.0.3:9093,
    /// the same on every node; a node not listed is a broker only
    /// [default: this node alone].
    #[arg(long, value_name = "ID@HOST:PORT,...")]
    controller_voters: Option<String>,
    /// Replication link listener; shard i listens on port + i (port 0: any
    /// free ports) [default: 127.0.0.1:0].
    #[arg(long, value_name = "HOST:PORT")]
    link_listen: Option<String>,
    /// PEM certificate chain this node presents to other nodes: with
    /// --cluster-tls-key and --cluster-tls-ca, replication links and the
    /// controller quorum run mutual TLS (re-read on SIGHUP).
    #[arg(long, value_name = "FILE")]
    cluster_tls_cert: Option<PathBuf>,
    /// PEM private key of --cluster-tls-cert.
    #[arg(long, value_name = "FILE")]
    cluster_tls_key: Option<PathBuf>,
    /// PEM CA that signs every node's certificate; a node it did not sign
    /// cannot join, replicate or vote.
    #[arg(long, value_name = "FILE")]
    cluster_tls_ca: Option<PathBuf>,
    /// broker.session.timeout.ms: a silent node is fenced after this
    /// [default: 9000].
    #[arg(long)]
    broker_session_timeout_ms: Option<u64>,
    /// broker.heartbeat.interval.ms [default: 500].
    #[arg(long)]
    broker_heartbeat_interval_ms: Option<u64>,
    /// replica.lag.time.max.ms [default: 30000].
    #[arg(long)]
    replica_lag_time_max_ms: Option<u64>,
    /// replica.fetch.wait.max.ms [default: 500].
    #[arg(long)]
    replica_fetch_wait_max_ms: Option<u64>,
    /// replica.fetch.max.bytes [default: 1048576].
    #[arg(long)]
    replica_fetch_max_bytes: Option<u32>,
    /// offsets.topic.replication.factor [default: 3, capped at the live nodes].
    #[arg(long)]
    offsets_topic_replication_factor: Option<i16>,
    /// auto.leader.rebalance.enable: move leaders back to preferred
    /// replicas once they are in sync [default: true].
    #[arg(long)]
    auto_leader_rebalance: Option<bool>,
    /// How often the controller looks for leaders to move back
    /// [default: 300000].
    #[arg(long)]
    leader_imbalance_check_interval_ms: Option<u64>,
    /// Once serving, hand the kernel back the code pages only start-up
    /// used; they fault back in if needed [default: true].
    #[arg(long)]
    release_startup_pages: Option<bool>,
}

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                Config::from_toml(&text)
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => Config::default(),
        };
        macro_rules! set {
            ($($field:ident),*) => { $(if let Some(v) = self.$field { c.$field = v; })* };
        }
        set!(
            listen,
            listeners,
            advertised_listeners,
            tls_client_auth,
            tls_handshake_timeout_ms,
            sasl_mechanisms,
            sasl_plain_insecure,
            auth_failure_delay_ms,
            sasl_max_receive_bytes,
            oauth_unsecured_jwt,
            oauth_clock_skew_s,
            oauth_sub_claim_name,
            oauth_jwks_refresh_ms,
            oauth_jwks_refresh_min_ms,
            connections_max_reauth_ms,
            authorizer,
            super_users,
            allow_everyone_if_no_acl_found,
            metrics_listen,
            metrics_tls,
            ingest_http_listen,
            ingest_http_tls,
            ingest_http_auth,
            ingest_http_auth_insecure,
            influx_tcp_listen,
            influx_topic,
            prometheus_topic,
            ingest_body_bytes_max,
            ingest_format,
            ingest_queue_bytes_max,
            data_dir,
            node_id,
            fsync_interval_ms,
            fsync_interval_bytes,
            default_partitions,
            default_replication_factor,
            retention_ms,
            retention_bytes,
            segment_bytes,
            segment_ms,
            retention_check_interval_ms,
            log_cleaner_backoff_ms,
            auto_create_topics,
            max_request_bytes,
            max_message_bytes,
            io_memory_bytes,
            tail_cache_bytes,
            shard_cache_bytes,
            partitions_per_topic_max,
            connections_max_idle_ms,
            offsets_topic_partitions,
            offsets_retention_ms,
            offsets_retention_check_interval_ms,
            group_min_session_timeout_ms,
            group_max_session_timeout_ms,
            group_initial_rebalance_delay_ms,
            group_max_size,
            controller_listen,
            controller_voters,
            link_listen,
            broker_session_timeout_ms,
            broker_heartbeat_interval_ms,
            replica_lag_time_max_ms,
            replica_fetch_wait_max_ms,
            replica_fetch_max_bytes,
            offsets_topic_replication_factor,
            auto_leader_rebalance,
            leader_imbalance_check_interval_ms,
            release_startup_pages
        );
        if self.advertise.is_some() {
            c.advertise = self.advertise;
        }
        if self.tls_cert.is_some() {
            c.tls_cert = self.tls_cert;
        }
        if self.tls_key.is_some() {
            c.tls_key = self.tls_key;
        }
        if self.tls_client_ca.is_some() {
            c.tls_client_ca = self.tls_client_ca;
        }
        if self.scram_bootstrap_file.is_some() {
            c.scram_bootstrap_file = self.scram_bootstrap_file;
        }
        if self.oauth_jwks.is_some() {
            c.oauth_jwks = self.oauth_jwks;
        }
        if self.oauth_expected_issuer.is_some() {
            c.oauth_expected_issuer = self.oauth_expected_issuer;
        }
        if self.oauth_expected_audience.is_some() {
            c.oauth_expected_audience = self.oauth_expected_audience;
        }
        if self.cluster_tls_cert.is_some() {
            c.cluster_tls_cert = self.cluster_tls_cert;
        }
        if self.cluster_tls_key.is_some() {
            c.cluster_tls_key = self.cluster_tls_key;
        }
        if self.cluster_tls_ca.is_some() {
            c.cluster_tls_ca = self.cluster_tls_ca;
        }
        if self.cpus.is_some() {
            c.cpus = self.cpus;
        }
        if self.cores.is_some() {
            c.cores = self.cores;
        }
        if self.fsync.is_some() {
            c.fsync = self.fsync;
        }
        if let Some(p) = self.profile {
            c.profile = Profile::parse(&p).ok_or_else(|| {
                anyhow::anyhow!("invalid value {p:?} for profile: durable, balanced or throughput")
            })?;
        }
        Ok(c)
    }
}

/// glibc serves allocations of 128 KiB and more with fresh mmaps and
/// returns freed heap tops to the kernel, so every 1 MiB read or batch
/// copy paid for page faults and zeroing (half a shard's time in catch-up
/// reads). Larger buffers now come from the heap and stay mapped, within
/// bounds: the trim threshold caps what an idle broker keeps.
#[cfg(target_env = "gnu")]
fn tune_allocator() {
    const MMAP_THRESHOLD_BYTES: i32 = 32 << 20;
    const TRIM_THRESHOLD_BYTES: i32 = 64 << 20;
    const TOP_PAD_BYTES: i32 = 16 << 20;
    // SAFETY: mallopt only sets allocator parameters; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES);
        libc::mallopt(libc::M_TOP_PAD, TOP_PAD_BYTES);
    }
}

#[cfg(not(target_env = "gnu"))]
fn tune_allocator() {}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    if let Err(e) = init_logging(cli.log_level.as_deref(), cli.log_format) {
        eprintln!("sluice: {e:#}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Topic(args) => cli::topic::run(args),
        Command::Produce(args) => cli::produce::run(args),
        Command::Consume(args) => cli::consume::run(args),
        Command::Group(args) => cli::group::run(args),
        Command::Cluster(args) => cli::cluster::run(args),
        Command::User(args) => cli::user::run(args),
        Command::Acl(args) => cli::acl::run(args),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "sluice", &mut std::io::stdout());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    let _lock = broker::preflight::check(&config)?;
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, shutdown.clone())
            .context("installing the signal handlers")?;
    }
    broker::server::run(config, shutdown)?;
    Ok(())
}

/// The log filter: `--log-level`, else SLUICE_LOG, else RUST_LOG, else
/// info.
fn log_filter(flag: Option<&str>) -> String {
    let chosen = flag
        .map(str::to_string)
        .or_else(|| std::env::var("SLUICE_LOG").ok())
        .or_else(|| std::env::var("RUST_LOG").ok())
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "info".into());
    // glommio reports a failed iopoll probe as an error on devices without
    // polled queues (every VM disk); it is harmless, so it is hidden unless
    // the filter names glommio itself.
    // openraft narrates every election and membership step at info; its
    // warnings and errors are what an operator needs.
    let mut filter = chosen.clone();
    if !chosen.contains("glommio") {
        filter.push_str(",glommio::reactor=off");
    }
    if !chosen.contains("openraft") {
        filter.push_str(",openraft=warn");
    }
    filter
}

fn init_logging(flag: Option<&str>, format: LogFormat) -> anyhow::Result<()> {
    let text = log_filter(flag);
    let filter = tracing_subscriber::EnvFilter::try_new(&text).with_context(|| {
        format!("invalid log filter {text:?} (--log-level, SLUICE_LOG or RUST_LOG)")
    })?;
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Config {
        let cli = Cli::try_parse_from(["sluice", "serve"].iter().chain(args)).expect("parses");
        let Command::Serve(serve) = cli.command else {
            panic!("not serve");
        };
        serve.into_config().expect("config")
    }

    #[test]
    fn every_flag_reaches_the_config() {
        let c = config(&[
            "--listen",
            "127.0.0.1:1",
            "--advertise",
            "h:2",
            "--data-dir",
            "/d",
            "--cores",
            "1",
            "--node-id",
            "3",
            "--profile",
            "durable",
            "--fsync",
            "never",
            "--fsync-interval-ms",
            "4",
            "--fsync-interval-bytes",
            "5",
            "--default-partitions",
            "6",
            "--default-replication-factor",
            "2",
            "--retention-ms",
            "-1",
            "--retention-bytes",
            "8",
            "--segment-bytes",
            "9000",
            "--segment-ms",
            "10",
            "--retention-check-interval-ms",
            "11",
            "--auto-create-topics",
            "false",
            "--max-request-bytes",
            "12000",
            "--max-message-bytes",
            "13000",
            "--io-memory-bytes",
            "14000000",
            "--partitions-per-topic-max",
            "15",
            "--connections-max-idle-ms",
            "16",
            "--log-cleaner-backoff-ms",
            "17",
            "--oauth-jwks",
            "https://idp.example/jwks",
            "--oauth-unsecured-jwt",
            "--oauth-clock-skew-s",
            "18",
            "--oauth-expected-issuer",
            "https://idp.example",
            "--oauth-expected-audience",
            "a,b",
            "--oauth-sub-claim-name",
            "client_id",
            "--oauth-jwks-refresh-ms",
            "19000",
            "--oauth-jwks-refresh-min-ms",
            "20",
            "--connections-max-reauth-ms",
            "21",
            "--authorizer",
            "on",
            "--super-users",
            "User:admin;User:ops",
            "--allow-everyone-if-no-acl-found",
            "true",
        ]);
        let expected = Config {
            listen: "127.0.0.1:1".into(),
            advertise: Some("h:2".into()),
            data_dir: "/d".into(),
            cores: Some(1),
            node_id: 3,
            profile: Profile::Durable,
            fsync: Some("never".into()),
            fsync_interval_ms: 4,
            fsync_interval_bytes: 5,
            default_partitions: 6,
            default_replication_factor: 2,
            retention_ms: -1,
            retention_bytes: 8,
            segment_bytes: 9000,
            segment_ms: 10,
            retention_check_interval_ms: 11,
            auto_create_topics: false,
            max_request_bytes: 12000,
            max_message_bytes: 13000,
            io_memory_bytes: 14_000_000,
            partitions_per_topic_max: 15,
            connections_max_idle_ms: 16,
            log_cleaner_backoff_ms: 17,
            oauth_jwks: Some("https://idp.example/jwks".into()),
            oauth_unsecured_jwt: true,
            oauth_clock_skew_s: 18,
            oauth_expected_issuer: Some("https://idp.example".into()),
            oauth_expected_audience: Some("a,b".into()),
            oauth_sub_claim_name: "client_id".into(),
            oauth_jwks_refresh_ms: 19_000,
            oauth_jwks_refresh_min_ms: 20,
            connections_max_reauth_ms: 21,
            authorizer: "on".into(),
            super_users: "User:admin;User:ops".into(),
            allow_everyone_if_no_acl_found: true,
            ..Config::default()
        };
        assert_eq!(c, expected);
    }
}
