//! One shard's runtime context: which executor it is, the partitions it
//! owns (their logs and replicas), its copy of the cluster metadata, its
//! memory budget and the signals its tasks wait on. It knows no subsystem:
//! group coordination, replication links, the controller and metrics are
//! composed above it (`node`), and handed this context.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use kafka_protocol::ResponseError as Kafka;
use replication::log_replica::LogReplica;
use storage::{LogConfig, PartitionLog};
use uuid::Uuid;

use crate::config::Config;
use crate::errors::code;
use crate::metadata::{owner_shard, ClusterMetadata};
use crate::signal::AppendSignal;

/// A partition as Kafka names it: topic and partition index.
pub type TopicPartition = (String, i32);

/// A partition log owned by this shard, with the topic id it was opened
/// for and its replica (leader or follower).
#[derive(Clone)]
pub struct OwnedLog {
    pub topic_id: Uuid,
    pub log: PartitionLog,
    pub replica: Rc<LogReplica>,
}

pub struct Shard {
    /// 0-based; shard 0 owns metadata changes.
    pub id: usize,
    pub nr_shards: usize,
    pub config: Arc<Config>,
    pub default_log: LogConfig,
    pub advertised: (String, i32),
    /// The Kafka listeners, in configuration order (a request's
    /// `listener` indexes it).
    pub listeners: Vec<crate::config::Listener>,
    /// The authorizer's settings (whether it is on, the super users).
    pub acl: crate::acl::Settings,
    metadata: RefCell<Arc<ClusterMetadata>>,
    logs: RefCell<HashMap<TopicPartition, OwnedLog>>,
    /// Fired when a log of this shard grew, or leadership changed, so that
    /// waiting producers (acks=all) and consumers (long polls) look again.
    pub appended: AppendSignal,
    /// Fired once when shutdown starts, so idle connections and accept
    /// loops stop waiting.
    stopping: AppendSignal,
    /// One memory bound for the tail caches of every log of this shard.
    pub cache_budget: Rc<storage::CacheBudget>,
    pub shutdown: Arc<AtomicBool>,
    /// Set while this node cannot reach the controller: it leads nothing.
    isolated: Cell<bool>,
    /// Mutual TLS of the links to other nodes; `None`: plain TCP.
    pub peer_tls: Option<Arc<net::tls_stream::PeerTls>>,
}

impl Shard {
    /// The name of listener `index` (its security protocol).
    pub fn listener_name(&self, index: u8) -> &'static str {
        self.listeners
            .get(usize::from(index))
            .map_or("PLAINTEXT", |l| l.protocol.name())
    }

    /// Where clients of listener `index` reach this node.
    pub fn own_endpoint(&self, index: u8) -> (String, i32) {
        self.listeners
            .get(usize::from(index))
            .map_or_else(|| self.advertised.clone(), |l| l.advertised.clone())
    }
}

impl Shard {
    pub fn new(
        id: usize,
        nr_shards: usize,
        config: Arc<Config>,
        shutdown: Arc<AtomicBool>,
    ) -> Result<Shard, crate::config::ConfigError> {
        let default_log = config.default_log_config()?;
        let advertised = config.advertised()?;
        let listeners = config.kafka_listeners()?;
        let cache_budget = storage::CacheBudget::new(config.shard_cache_bytes);
        let acl = config.acl_settings()?;
        Ok(Shard {
            acl,
            id,
            nr_shards,
            cache_budget,
            config,
            default_log,
            advertised,
            listeners,
            metadata: RefCell::new(Arc::new(ClusterMetadata::empty())),
            logs: RefCell::new(HashMap::new()),
            appended: AppendSignal::default(),
            stopping: AppendSignal::default(),
            shutdown,
            isolated: Cell::new(false),
            peer_tls: None,
        })
    }

    /// With the links to other nodes under `peer_tls`.
    pub fn with_peer_tls(mut self, peer_tls: Option<Arc<net::tls_stream::PeerTls>>) -> Shard {
        self.peer_tls = peer_tls;
        self
    }

    pub fn metadata(&self) -> Arc<ClusterMetadata> {
        self.metadata.borrow().clone()
    }

    /// Takes `meta` as this shard's view; the caller has made the logs
    /// match it.
    pub(crate) fn set_metadata(&self, meta: Arc<ClusterMetadata>) {
        *self.metadata.borrow_mut() = meta;
    }

    pub fn owner(&self, topic: &str, partition: i32) -> usize {
        owner_shard(topic, partition, self.nr_shards)
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed)
    }

    /// Marks the shard as stopping and wakes everything waiting for it.
    pub fn begin_shutdown(&self) {
        self.shutdown.store(true, Ordering::Relaxed);
        self.stopping.notify();
        self.appended.notify();
    }

    /// Sleeps for `period`; false if shutdown began meanwhile, for the
    /// shard's periodic tasks.
    pub async fn nap(&self, period: Duration) -> bool {
        future::or(
            async {
                crate::rt::sleep(period).await;
                true
            },
            async {
                self.stopped().await;
                false
            },
        )
        .await
    }

    /// Resolves once shutdown has begun.
    pub async fn stopped(&self) {
        while !self.is_shutting_down() {
            self.stopping.next().await;
        }
    }

    /// This node lost (true) or regained (false) the controller: while
    /// isolated it answers as if it led nothing.
    pub fn set_isolated(&self, isolated: bool) {
        self.isolated.set(isolated);
        self.appended.notify();
    }

    pub(crate) fn log(&self, tp: &TopicPartition) -> Option<PartitionLog> {
        self.logs.borrow().get(tp).map(|o| o.log.clone())
    }

    pub(crate) fn replica(&self, tp: &TopicPartition) -> Option<Rc<LogReplica>> {
        self.logs.borrow().get(tp).map(|o| o.replica.clone())
    }

    /// The replicas of this shard, for the replication tasks.
    pub(crate) fn replicas(&self) -> Vec<Rc<LogReplica>> {
        self.logs
            .borrow()
            .values()
            .map(|o| o.replica.clone())
            .collect()
    }

    /// Every partition this shard owns, with the topic id its log was
    /// opened for.
    pub(crate) fn owned(&self) -> Vec<(TopicPartition, OwnedLog)> {
        self.logs
            .borrow()
            .iter()
            .map(|(tp, o)| (tp.clone(), o.clone()))
            .collect()
    }

    pub(crate) fn adopt_log(&self, tp: TopicPartition, owned: OwnedLog) {
        self.logs.borrow_mut().insert(tp, owned);
    }

    pub(crate) fn release_log(&self, tp: &TopicPartition) -> Option<OwnedLog> {
        self.logs.borrow_mut().remove(tp)
    }

    /// Takes every log out of the shard, for closing at shutdown.
    pub(crate) fn release_all_logs(&self) -> Vec<(TopicPartition, OwnedLog)> {
        self.logs.borrow_mut().drain().collect()
    }

    /// The log of a partition this node leads, or the Kafka error for a
    /// client that asked the wrong node.
    pub(crate) fn led(&self, tp: &TopicPartition) -> Result<Rc<LogReplica>, i16> {
        match self.replica(tp) {
            Some(r) if r.is_leader() && !self.isolated.get() => Ok(r),
            Some(_) => Err(code(Kafka::NotLeaderOrFollower)),
            None if self
                .metadata()
                .topic(&tp.0)
                .is_some_and(|t| tp.1 < t.partitions) =>
            {
                Err(code(Kafka::NotLeaderOrFollower))
            }
            None => Err(code(Kafka::UnknownTopicOrPartition)),
        }
    }

    pub fn node_id(&self) -> u32 {
        self.config.node_id as u32
    }

    pub fn owned_logs(&self) -> Vec<(TopicPartition, PartitionLog)> {
        self.logs
            .borrow()
            .iter()
            .map(|(tp, o)| (tp.clone(), o.log.clone()))
            .collect()
    }
}
