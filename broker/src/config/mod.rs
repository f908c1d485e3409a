//! The broker's configuration: defaults, the TOML file, durability
//! profiles, and `validate()` that refuses nonsense at start-up with the
//! key, the value and what is allowed.

mod authz;
mod cluster;
mod group;
mod http;
mod listeners;
mod oauth;
mod profile;

pub use cluster::ClusterTlsFiles;
pub use group::GroupConfig;
pub use http::HttpAuthMode;
pub use listeners::{ClientAuth, Listener, SecurityProtocol, TlsFiles, SASL_MECHANISMS};
pub use profile::Profile;

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use storage::{FsyncPolicy, LogConfig};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: &'static str,
    pub value: String,
    pub allowed: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invalid value {:?} for {}: {}",
            self.value, self.key, self.allowed
        )
    }
}

impl std::error::Error for ConfigError {}

/// Every key of the TOML file; the CLI flags use the same names with dashes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address every shard binds (SO_REUSEPORT).
    pub listen: String,
    /// Address of the HTTP endpoint serving `/metrics` and `/health`;
    /// empty switches it off.
    pub metrics_listen: String,
    /// Serve the metrics endpoint over HTTPS, with the certificate, client
    /// CA and `tls_client_auth` of the SSL listeners.
    pub metrics_tls: bool,
    /// Address of the HTTP ingest listener (Influx `/api/v2/write` and
    /// `/write`, Prometheus remote-write `/api/v1/write`), bound by every
    /// shard; empty (the default) switches it off.
    pub ingest_http_listen: String,
    /// Serve the ingest listener over HTTPS, with the certificate, client
    /// CA and `tls_client_auth` of the SSL listeners.
    pub ingest_http_tls: bool,
    /// What a write to the ingest listener must present: `none`, or
    /// `basic` (a user's password, checked against the SCRAM credentials).
    pub ingest_http_auth: String,
    /// Accept `basic` passwords over plain HTTP, where they cross the
    /// network in clear.
    pub ingest_http_auth_insecure: bool,
    /// Address of the plain-TCP line-protocol listener; empty switches it off.
    pub influx_tcp_listen: String,
    /// Topic that Influx points go to (auto-created when allowed).
    pub influx_topic: String,
    /// Topic that Prometheus remote-write series go to.
    pub prometheus_topic: String,
    /// Largest HTTP write body accepted, after decompression (413 beyond).
    pub ingest_body_bytes_max: usize,
    /// What ingested records hold: `json` (one JSON object per record) or
    /// `raw` (the line as sent; a remote-write series as protobuf).
    pub ingest_format: String,
    /// Bytes of ingest writes one shard may have on their way to one
    /// partition; a write beyond it is refused with 429 and Retry-After
    /// (503 for a remote-write, which Prometheus retries).
    pub ingest_queue_bytes_max: usize,
    /// Address given to clients in Metadata; defaults to `listen`.
    pub advertise: Option<String>,
    /// Kafka listeners, `PROTOCOL://HOST:PORT` comma-separated (PLAINTEXT,
    /// SSL, SASL_PLAINTEXT, SASL_SSL); empty: one PLAINTEXT listener on
    /// `listen`, advertised as `advertise`.
    pub listeners: String,
    /// What clients of each listener are told, in the same form; a
    /// listener not named advertises its bind address.
    pub advertised_listeners: String,
    /// PEM certificate chain of the SSL and SASL_SSL listeners.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates that client certificates are checked against.
    pub tls_client_ca: Option<PathBuf>,
    /// `ssl.client.auth`: none, requested or required.
    pub tls_client_auth: String,
    /// Bound on a TLS handshake; a client slower than this is cut off.
    pub tls_handshake_timeout_ms: u64,
    /// SASL mechanisms the SASL listeners offer, comma-separated:
    /// SCRAM-SHA-512, SCRAM-SHA-256, PLAIN, OAUTHBEARER.
    pub sasl_mechanisms: String,
    /// Offer PLAIN on SASL_PLAINTEXT listeners too, where passwords cross
    /// the network in clear.
    pub sasl_plain_insecure: bool,
    /// `connection.failed.authentication.delay.ms`: a failed
    /// authentication is answered this late, then the connection closes.
    pub auth_failure_delay_ms: u64,
    /// `sasl.server.max.receive.size`: the largest request before a
    /// connection has authenticated.
    pub sasl_max_receive_bytes: usize,
    /// Lines `NAME:MECHANISM:PASSWORD` of SCRAM credentials to create at
    /// a start that finds none in the cluster: the first administrator.
    pub scram_bootstrap_file: Option<PathBuf>,
    /// The JWKS that OAUTHBEARER tokens are checked against: a file, or an
    /// `https://` URL (`http://` only when written so).
    pub oauth_jwks: Option<String>,
    /// Accept unsigned (`alg=none`) OAUTHBEARER tokens, as Kafka's
    /// unsecured validator does: anyone can be anyone. Tests only.
    pub oauth_unsecured_jwt: bool,
    /// `sasl.oauthbearer.clock.skew.seconds`: leeway on `exp` and `nbf`.
    pub oauth_clock_skew_s: u64,
    /// `sasl.oauthbearer.expected.issuer`: the `iss` tokens must carry.
    pub oauth_expected_issuer: Option<String>,
    /// `sasl.oauthbearer.expected.audience`, comma-separated: `aud` must
    /// name one of them.
    pub oauth_expected_audience: Option<String>,
    /// `sasl.oauthbearer.sub.claim.name`: the claim naming the principal.
    pub oauth_sub_claim_name: String,
    /// `sasl.oauthbearer.jwks.endpoint.refresh.ms`: how often the JWKS is
    /// read again.
    pub oauth_jwks_refresh_ms: u64,
    /// A token of an unknown `kid` has the JWKS read again at most once
    /// per this many ms.
    pub oauth_jwks_refresh_min_ms: u64,
    /// `connections.max.reauth.ms`: a SASL session lasts at most this long
    /// (and no longer than its token) unless the client re-authenticates
    /// (KIP-368); 0: only a token's expiry ends it.
    pub connections_max_reauth_ms: u64,
    /// `on` or `off`: whether requests are checked against the ACLs (as
    /// Kafka's `authorizer.class.name` set or not).
    pub authorizer: String,
    /// `super.users`: `User:NAME` principals, `;`-separated, allowed
    /// everything.
    pub super_users: String,
    /// `allow.everyone.if.no.acl.found`: a resource no ACL names is open
    /// to everyone.
    pub allow_everyone_if_no_acl_found: bool,
    pub data_dir: PathBuf,
    /// Shards (one per core); `None` = every core (every CPU of `cpus`).
    pub cores: Option<usize>,
    /// CPUs the shards are pinned to, e.g. "0-3" or "1,3"; `None`: any
    /// of the machine's. Several nodes on one host each take their own.
    pub cpus: Option<String>,
    pub node_id: i32,
    pub profile: Profile,
    /// `always`, `interval` or `never`: overrides the profile's policy.
    pub fsync: Option<String>,
    pub fsync_interval_ms: u64,
    pub fsync_interval_bytes: u64,
    /// `num.partitions`.
    pub default_partitions: i32,
    /// `default.replication.factor`.
    pub default_replication_factor: i16,
    /// `log.retention.ms`; -1 keeps data forever.
    pub retention_ms: i64,
    /// `log.retention.bytes`; -1 means no size limit.
    pub retention_bytes: i64,
    /// `log.segment.bytes`.
    pub segment_bytes: u64,
    /// `log.roll.ms`.
    pub segment_ms: u64,
    /// `log.retention.check.interval.ms`.
    pub retention_check_interval_ms: u64,
    /// `log.cleaner.backoff.ms`: how often each shard's cleaner looks for
    /// compacted topics' logs due for cleaning.
    pub log_cleaner_backoff_ms: u64,
    /// `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// `socket.request.max.bytes`.
    pub max_request_bytes: usize,
    /// `message.max.bytes`: the default `max.message.bytes` of topics.
    pub max_message_bytes: u32,
    /// Memory each shard registers with io_uring for direct I/O.
    pub io_memory_bytes: usize,
    /// Bytes of recent batches each partition keeps in memory.
    pub tail_cache_bytes: usize,
    /// Bytes of recent batches all partitions of one shard keep in memory
    /// together: the shard's tail caches evict its oldest batches first.
    pub shard_cache_bytes: usize,
    /// Bound on connections per shard.
    pub connections_per_shard_max: usize,
    /// `connections.max.idle.ms`: a connection with no request for this
    /// long is closed.
    pub connections_max_idle_ms: u64,
    /// Bound on the partitions of one topic (CreateTopics, CreatePartitions).
    pub partitions_per_topic_max: i32,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_timeout_ms: u64,
    /// `offsets.topic.num.partitions`: partitions of `__consumer_offsets`,
    /// fixed once the topic exists.
    pub offsets_topic_partitions: i32,
    /// `offsets.retention.minutes` in ms: how long the committed offsets of
    /// an empty group are kept.
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`.
    pub offsets_retention_check_interval_ms: u64,
    /// `group.min.session.timeout.ms`.
    pub group_min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`.
    pub group_max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`.
    pub group_initial_rebalance_delay_ms: i64,
    /// `group.max.size`.
    pub group_max_size: usize,
    /// Address of this node's controller (Raft) listener. Every node runs
    /// a controller; a single node is a cluster of one voter.
    pub controller_listen: String,
    /// The controller quorum, `id@host:port` comma-separated, the same on
    /// every node; empty: this node alone (at `controller_listen`). A node
    /// not listed joins as a broker only.
    pub controller_voters: String,
    /// Address of this node's replication link listeners: port + shard
    /// index for each shard (port 0: any free ports).
    pub link_listen: String,
    /// PEM certificate chain this node presents on its links to other
    /// nodes (replication and controller quorum), as server and client.
    pub cluster_tls_cert: Option<PathBuf>,
    /// PEM private key of `cluster_tls_cert`.
    pub cluster_tls_key: Option<PathBuf>,
    /// PEM CA certificate(s) that sign the nodes' certificates: with the
    /// other two, every link between nodes is mutual TLS, and a node whose
    /// certificate this CA did not sign is refused.
    pub cluster_tls_ca: Option<PathBuf>,
    /// `broker.session.timeout.ms`: a node not heard from for this long is
    /// fenced and its partitions get new leaders.
    pub broker_session_timeout_ms: u64,
    /// `broker.heartbeat.interval.ms`.
    pub broker_heartbeat_interval_ms: u64,
    /// `replica.lag.time.max.ms`: an in-sync follower that has not caught
    /// up for this long leaves the ISR.
    pub replica_lag_time_max_ms: u64,
    /// `replica.fetch.wait.max.ms`: how long a leader holds a follower's
    /// fetch that finds nothing new.
    pub replica_fetch_wait_max_ms: u64,
    /// `replica.fetch.max.bytes`, per partition.
    pub replica_fetch_max_bytes: u32,
    /// `offsets.topic.replication.factor` (at most the live nodes when
    /// `__consumer_offsets` is created).
    pub offsets_topic_replication_factor: i16,
    /// `auto.leader.rebalance.enable`: the controller leader moves
    /// leadership back to preferred replicas once they are in sync.
    pub auto_leader_rebalance: bool,
    /// `leader.imbalance.check.interval.seconds`, in ms.
    pub leader_imbalance_check_interval_ms: u64,
    /// Once every shard serves, hand back the executable's pages that only
    /// start-up touched (`footprint`): about half of an idle broker's
    /// resident code. The first request of each kind may fault a few pages
    /// back in.
    pub release_startup_pages: bool,
}

pub const IO_MEMORY_BYTES_MIN: usize = 2 << 20;

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:9092".into(),
            metrics_listen: "127.0.0.1:9644".into(),
            metrics_tls: false,
            ingest_http_listen: String::new(),
            ingest_http_tls: false,
            ingest_http_auth: "none".into(),
            ingest_http_auth_insecure: false,
            influx_tcp_listen: String::new(),
            influx_topic: "metrics".into(),
            prometheus_topic: "prometheus".into(),
            ingest_body_bytes_max: 16 << 20,
            ingest_format: "json".into(),
            ingest_queue_bytes_max: 16 << 20,
            advertise: None,
            listeners: String::new(),
            advertised_listeners: String::new(),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_client_auth: "none".into(),
            tls_handshake_timeout_ms: 10_000,
            sasl_mechanisms: "SCRAM-SHA-512,SCRAM-SHA-256".into(),
            sasl_plain_insecure: false,
            auth_failure_delay_ms: 100,
            sasl_max_receive_bytes: 524_288,
            scram_bootstrap_file: None,
            oauth_jwks: None,
            oauth_unsecured_jwt: false,
            oauth_clock_skew_s: 30,
            oauth_expected_issuer: None,
            oauth_expected_audience: None,
            oauth_sub_claim_name: "sub".into(),
            oauth_jwks_refresh_ms: 3_600_000,
            oauth_jwks_refresh_min_ms: 10_000,
            connections_max_reauth_ms: 0,
            authorizer: "off".into(),
            super_users: String::new(),
            allow_everyone_if_no_acl_found: false,
            data_dir: PathBuf::from("./sluice-data"),
            cores: None,
            cpus: None,
            node_id: 0,
            profile: Profile::Balanced,
            fsync: None,
            fsync_interval_ms: 100,
            fsync_interval_bytes: 4 << 20,
            default_partitions: 1,
            default_replication_factor: 1,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_check_interval_ms: 300_000,
            log_cleaner_backoff_ms: 15_000,
            auto_create_topics: true,
            max_request_bytes: net::MAX_FRAME_BYTES_DEFAULT,
            max_message_bytes: 1_048_588,
            io_memory_bytes: IO_MEMORY_BYTES_MIN,
            tail_cache_bytes: 8 << 20,
            shard_cache_bytes: 64 << 20,
            connections_per_shard_max: 10_000,
            partitions_per_topic_max: 10_000,
            connections_max_idle_ms: 600_000,
            shutdown_timeout_ms: 30_000,
            offsets_topic_partitions: 50,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            offsets_retention_check_interval_ms: 600_000,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_initial_rebalance_delay_ms: 3_000,
            group_max_size: i32::MAX as usize,
            controller_listen: "127.0.0.1:0".into(),
            controller_voters: String::new(),
            link_listen: "127.0.0.1:0".into(),
            cluster_tls_cert: None,
            cluster_tls_key: None,
            cluster_tls_ca: None,
            broker_session_timeout_ms: 9_000,
            broker_heartbeat_interval_ms: 500,
            replica_lag_time_max_ms: 30_000,
            replica_fetch_wait_max_ms: 500,
            replica_fetch_max_bytes: 1 << 20,
            offsets_topic_replication_factor: 3,
            auto_leader_rebalance: true,
            leader_imbalance_check_interval_ms: 300_000,
            release_startup_pages: true,
        }
    }
}

impl Config {
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| ConfigError {
            key: "listen",
            value: self.listen.clone(),
            allowed: "an IP address and port, e.g. 127.0.0.1:9092 or 0.0.0.0:9092".into(),
        })
    }

    /// The metrics endpoint's address; `None` when switched off.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.metrics_listen.is_empty() {
            return Ok(None);
        }
        let addr: SocketAddr = self.metrics_listen.parse().map_err(|_| ConfigError {
            key: "metrics_listen",
            value: self.metrics_listen.clone(),
            allowed: "an IP address and port, e.g. 127.0.0.1:9644, or \"\" to switch it off".into(),
        })?;
        if self.is_kafka_listener(addr) {
            return Err(ConfigError {
                key: "metrics_listen",
                value: self.metrics_listen.clone(),
                allowed: "an address other than the Kafka listeners'".into(),
            });
        }
        Ok(Some(addr))
    }

    /// The ingest listeners' addresses (HTTP, Influx TCP); `None` when
    /// switched off.
    pub fn ingest_addrs(&self) -> Result<(Option<SocketAddr>, Option<SocketAddr>), ConfigError> {
        let parse = |key: &'static str, value: &str| -> Result<Option<SocketAddr>, ConfigError> {
            if value.is_empty() {
                return Ok(None);
            }
            let addr: SocketAddr = value.parse().map_err(|_| ConfigError {
                key,
                value: value.into(),
                allowed: "an IP address and port, e.g. 127.0.0.1:8086, or \"\" to switch it off"
                    .into(),
            })?;
            let taken = self.is_kafka_listener(addr) || Ok(Some(addr)) == self.metrics_addr();
            if taken {
                return Err(ConfigError {
                    key,
                    value: value.into(),
                    allowed: "an address other than the Kafka listeners' and metrics_listen's"
                        .into(),
                });
            }
            Ok(Some(addr))
        };
        let http = parse("ingest_http_listen", &self.ingest_http_listen)?;
        let tcp = parse("influx_tcp_listen", &self.influx_tcp_listen)?;
        if http.is_some() && http == tcp {
            return Err(ConfigError {
                key: "influx_tcp_listen",
                value: self.influx_tcp_listen.clone(),
                allowed: "an address other than ingest_http_listen's".into(),
            });
        }
        if http.is_some() || tcp.is_some() {
            for (key, topic) in [
                ("influx_topic", &self.influx_topic),
                ("prometheus_topic", &self.prometheus_topic),
            ] {
                if crate::metadata::validate_topic_name(topic).is_err() {
                    return Err(ConfigError {
                        key,
                        value: topic.clone(),
                        allowed: "a valid topic name".into(),
                    });
                }
            }
        }
        if self.ingest_body_bytes_max < 1024 || self.ingest_body_bytes_max > 1 << 30 {
            return Err(ConfigError {
                key: "ingest_body_bytes_max",
                value: self.ingest_body_bytes_max.to_string(),
                allowed: "1024 to 1073741824 bytes".into(),
            });
        }
        if self.ingest_queue_bytes_max < 1024 {
            return Err(ConfigError {
                key: "ingest_queue_bytes_max",
                value: self.ingest_queue_bytes_max.to_string(),
                allowed: "at least 1024 bytes".into(),
            });
        }
        self.ingest_format()?;
        Ok((http, tcp))
    }

    /// What ingested records hold.
    pub fn ingest_format(&self) -> Result<IngestFormat, ConfigError> {
        match self.ingest_format.as_str() {
            "json" => Ok(IngestFormat::Json),
            "raw" => Ok(IngestFormat::Raw),
            other => Err(ConfigError {
                key: "ingest_format",
                value: other.into(),
                allowed: "json or raw".into(),
            }),
        }
    }

    fn is_kafka_listener(&self, addr: SocketAddr) -> bool {
        self.kafka_listeners()
            .is_ok_and(|l| l.iter().any(|l| l.bind == addr))
    }

    /// Host and port of the first Kafka listener, as clients are told:
    /// the address the cluster's records give for this node.
    pub fn advertised(&self) -> Result<(String, i32), ConfigError> {
        if self.listeners.trim().is_empty() {
            return self.shorthand_advertised();
        }
        let first = self.kafka_listeners()?.into_iter().next();
        Ok(first.map(|l| l.advertised).unwrap_or_default())
    }

    /// `advertise`, or `listen` when it names a reachable address.
    fn shorthand_advertised(&self) -> Result<(String, i32), ConfigError> {
        let text = self.advertise.as_deref().unwrap_or(&self.listen);
        let bad = || ConfigError {
            key: "advertise",
            value: text.to_string(),
            allowed: "HOST:PORT with a port between 1 and 65535".into(),
        };
        let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if self.advertise.is_none() && (host == "0.0.0.0" || host == "::") {
            return Err(ConfigError {
                key: "advertise",
                value: "(unset)".into(),
                allowed: format!("an address clients can reach, required when listening on {text}"),
            });
        }
        Ok((host.to_string(), i32::from(port)))
    }

    pub fn fsync_policy(&self) -> Result<FsyncPolicy, ConfigError> {
        let name = match &self.fsync {
            Some(name) => name.as_str(),
            None => match self.profile {
                Profile::Durable => "always",
                Profile::Balanced => "interval",
                Profile::Throughput => "never",
            },
        };
        FsyncPolicy::parse(name, self.fsync_interval_ms, self.fsync_interval_bytes).ok_or_else(
            || ConfigError {
                key: "fsync",
                value: name.to_string(),
                allowed: "always, interval or never".into(),
            },
        )
    }

    pub fn group_config(&self) -> GroupConfig {
        GroupConfig {
            session_timeout_ms_min: self.group_min_session_timeout_ms,
            session_timeout_ms_max: self.group_max_session_timeout_ms,
            initial_rebalance_delay_ms: self.group_initial_rebalance_delay_ms,
            members_max: self.group_max_size,
            ..GroupConfig::default()
        }
    }

    /// The log configuration a topic gets when it sets nothing itself.
    pub fn default_log_config(&self) -> Result<LogConfig, ConfigError> {
        Ok(LogConfig {
            segment_bytes: self.segment_bytes,
            segment_ms: self.segment_ms,
            retention_ms: u64::try_from(self.retention_ms).ok(),
            retention_bytes: u64::try_from(self.retention_bytes).ok(),
            index_interval_bytes: 4096,
            max_batch_bytes: self.max_message_bytes,
            fsync: self.fsync_policy()?,
            tail_cache_bytes: self.tail_cache_bytes,
            ..LogConfig::default()
        })
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for l in self.kafka_listeners()? {
            if l.protocol.sasl() && self.offered(l.protocol)?.is_empty() {
                return Err(ConfigError {
                    key: "sasl_mechanisms",
                    value: self.sasl_mechanisms.clone(),
                    allowed: format!(
                        "a mechanism for the {} listener: PLAIN alone is offered in clear text only with sasl_plain_insecure",
                        l.protocol.name()
                    ),
                });
            }
        }
        if self.sasl_max_receive_bytes < 1024 {
            return Err(ConfigError {
                key: "sasl_max_receive_bytes",
                value: self.sasl_max_receive_bytes.to_string(),
                allowed: "at least 1024".into(),
            });
        }
        self.tls_files()?;
        self.ingest_http_auth()?;
        self.validate_oauth()?;
        self.acl_settings()?;
        if self.tls_handshake_timeout_ms == 0 {
            return Err(ConfigError {
                key: "tls_handshake_timeout_ms",
                value: "0".into(),
                allowed: "at least 1".into(),
            });
        }
        self.validate_cluster()?;
        self.metrics_addr()?;
        self.ingest_addrs()?;
        self.advertised()?;
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError {
                key: "data-dir",
                value: String::new(),
                allowed: "a directory path".into(),
            });
        }
        if let Some(cores) = self.cores {
            let available = std::thread::available_parallelism().map_or(1, |n| n.get());
            if cores == 0 || cores > available {
                return Err(ConfigError {
                    key: "cores",
                    value: cores.to_string(),
                    allowed: format!("between 1 and {available} (the cores of this machine)"),
                });
            }
        }
        if self.node_id < 0 {
            return Err(ConfigError {
                key: "node-id",
                value: self.node_id.to_string(),
                allowed: "0 or more".into(),
            });
        }
        if self.default_partitions < 1 {
            return Err(ConfigError {
                key: "default-partitions",
                value: self.default_partitions.to_string(),
                allowed: "at least 1".into(),
            });
        }
        if self.default_replication_factor < 1 {
            return Err(ConfigError {
                key: "default-replication-factor",
                value: self.default_replication_factor.to_string(),
                allowed: "at least 1".into(),
            });
        }
        for (key, value) in [
            ("retention-ms", self.retention_ms),
            ("retention-bytes", self.retention_bytes),
        ] {
            if value < -1 || value == 0 {
                return Err(ConfigError {
                    key,
                    value: value.to_string(),
                    allowed: "a positive number, or -1 for no limit".into(),
                });
            }
        }
        let offsets_max = self.partitions_per_topic_max.min(1000);
        if self.offsets_topic_partitions < 1 || self.offsets_topic_partitions > offsets_max {
            return Err(ConfigError {
                key: "offsets-topic-partitions",
                value: self.offsets_topic_partitions.to_string(),
                allowed: format!(
                    "between 1 and {offsets_max} (at most 1000 and partitions-per-topic-max)"
                ),
            });
        }
        if self.offsets_retention_ms < 1 || self.offsets_retention_check_interval_ms == 0 {
            return Err(ConfigError {
                key: "offsets-retention-ms",
                value: format!(
                    "{} (check interval {})",
                    self.offsets_retention_ms, self.offsets_retention_check_interval_ms
                ),
                allowed: "at least 1, with a check interval of at least 1".into(),
            });
        }
        if self.group_min_session_timeout_ms < 1
            || self.group_max_session_timeout_ms < self.group_min_session_timeout_ms
        {
            return Err(ConfigError {
                key: "group-min-session-timeout-ms",
                value: format!(
                    "{} (max {})",
                    self.group_min_session_timeout_ms, self.group_max_session_timeout_ms
                ),
                allowed: "at least 1 and at most group-max-session-timeout-ms".into(),
            });
        }
        if self.group_initial_rebalance_delay_ms < 0 || self.group_max_size == 0 {
            return Err(ConfigError {
                key: "group-initial-rebalance-delay-ms",
                value: format!(
                    "{} (group-max-size {})",
                    self.group_initial_rebalance_delay_ms, self.group_max_size
                ),
                allowed: "0 or more, with a group-max-size of at least 1".into(),
            });
        }
        if self.log_cleaner_backoff_ms == 0 {
            return Err(ConfigError {
                key: "log-cleaner-backoff-ms",
                value: "0".into(),
                allowed: "at least 1".into(),
            });
        }
        if self.retention_check_interval_ms == 0 {
            return Err(ConfigError {
                key: "retention-check-interval-ms",
                value: "0".into(),
                allowed: "at least 1".into(),
            });
        }
        if self.max_request_bytes < 1024 || self.max_request_bytes > i32::MAX as usize {
            return Err(ConfigError {
                key: "max-request-bytes",
                value: self.max_request_bytes.to_string(),
                allowed: "between 1024 and 2147483647".into(),
            });
        }
        if self.io_memory_bytes < IO_MEMORY_BYTES_MIN {
            return Err(ConfigError {
                key: "io-memory-bytes",
                value: self.io_memory_bytes.to_string(),
                allowed: format!(
                    "at least {IO_MEMORY_BYTES_MIN} (smaller buffers make direct-I/O reads fail)"
                ),
            });
        }
        if self.connections_max_idle_ms == 0 {
            return Err(ConfigError {
                key: "connections-max-idle-ms",
                value: "0".into(),
                allowed: "at least 1".into(),
            });
        }
        if self.partitions_per_topic_max < 1 {
            return Err(ConfigError {
                key: "partitions-per-topic-max",
                value: self.partitions_per_topic_max.to_string(),
                allowed: "at least 1".into(),
            });
        }
        if self.default_partitions > self.partitions_per_topic_max {
            return Err(ConfigError {
                key: "default-partitions",
                value: self.default_partitions.to_string(),
                allowed: format!(
                    "at most partitions-per-topic-max ({})",
                    self.partitions_per_topic_max
                ),
            });
        }
        if self.connections_per_shard_max == 0 {
            return Err(ConfigError {
                key: "connections-per-shard-max",
                value: "0".into(),
                allowed: "at least 1".into(),
            });
        }
        let log = self.default_log_config()?;
        log.validate().map_err(|e| ConfigError {
            key: cli_key(e.key),
            value: e.value,
            allowed: e.allowed.to_string(),
        })?;
        Ok(())
    }

    pub fn shards(&self) -> usize {
        let cpus = self.cpu_list().ok().flatten().map(|c| c.len());
        self.cores
            .or(cpus)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}

/// Names storage's Kafka-style keys by the flag that sets them.
fn cli_key(storage_key: &'static str) -> &'static str {
    match storage_key {
        "segment.bytes" => "segment-bytes",
        "segment.ms" => "segment-ms",
        "max.message.bytes" => "max-message-bytes",
        "fsync.interval" => "fsync-interval-ms",
        other => other,
    }
}

/// What an ingested record holds (`ingest_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestFormat {
    /// One JSON object per record (documented in the README).
    Json,
    /// The data as sent: a line-protocol line; a remote-write series as a
    /// protobuf `prometheus.TimeSeries`.
    Raw,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::default();
        c.validate().expect("defaults are valid");
        assert_eq!(c.advertised().expect("ok"), ("127.0.0.1".into(), 9092));
        assert!(matches!(c.fsync_policy(), Ok(FsyncPolicy::Interval { .. })));
    }

    #[test]
    fn profiles_choose_fsync_and_fsync_overrides() {
        let mut c = Config {
            profile: Profile::Durable,
            ..Config::default()
        };
        assert_eq!(c.fsync_policy().expect("ok"), FsyncPolicy::Always);
        c.profile = Profile::Throughput;
        assert_eq!(c.fsync_policy().expect("ok"), FsyncPolicy::Never);
        c.fsync = Some("always".into());
        assert_eq!(c.fsync_policy().expect("ok"), FsyncPolicy::Always);
        c.fsync = Some("sometimes".into());
        let err = c.validate().expect_err("bad fsync");
        assert_eq!(err.key, "fsync");
        assert!(err.to_string().contains("sometimes"));
    }

    #[test]
    fn nonsense_is_named() {
        let cases: Vec<(Config, &str)> = vec![
            (
                Config {
                    listen: "nowhere".into(),
                    ..Config::default()
                },
                "listen",
            ),
            (
                Config {
                    cores: Some(0),
                    ..Config::default()
                },
                "cores",
            ),
            (
                Config {
                    default_partitions: 0,
                    ..Config::default()
                },
                "default-partitions",
            ),
            (
                Config {
                    retention_ms: 0,
                    ..Config::default()
                },
                "retention-ms",
            ),
            (
                Config {
                    segment_bytes: 3,
                    ..Config::default()
                },
                "segment-bytes",
            ),
            (
                Config {
                    max_request_bytes: 10,
                    ..Config::default()
                },
                "max-request-bytes",
            ),
            (
                Config {
                    io_memory_bytes: 4096,
                    ..Config::default()
                },
                "io-memory-bytes",
            ),
            (
                Config {
                    listen: "0.0.0.0:9092".into(),
                    ..Config::default()
                },
                "advertise",
            ),
        ];
        for (config, key) in cases {
            assert_eq!(config.validate().expect_err(key).key, key);
        }
    }

    #[test]
    fn toml_file_sets_keys_and_rejects_unknown_ones() {
        let c = Config::from_toml(
            "listen = \"127.0.0.1:19092\"\nprofile = \"durable\"\ndefault_partitions = 3\n",
        )
        .expect("parses");
        assert_eq!(c.listen, "127.0.0.1:19092");
        assert_eq!(c.profile, Profile::Durable);
        assert_eq!(c.default_partitions, 3);
        assert!(Config::from_toml("colour = \"blue\"\n").is_err());
    }
}
