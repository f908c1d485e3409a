//! One shard: the partitions it owns (their logs), its copy of the cluster
//! metadata, and the operations other shards ask of it. Requests touching
//! partitions of several shards are split here, sent over the mesh, and the
//! answers put back in request order.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use kafka_protocol::ResponseError as Kafka;
use replication::log_replica::{LogReplica, ReplicaError};
use replication::partition_state::PartitionState;
use replication::replica::ReplicaConfig;
use storage::{LogConfig, PartitionLog};
use uuid::Uuid;

use crate::config::Config;
use crate::errors::{code, storage_error_code};
use crate::group::coordinator::Coordinator;
use crate::mesh::{
    FetchItem, Mesh, OffsetAnswer, PartitionRead, PartitionWrite, ProduceItem, ProducersAnswer,
    ShardRequest, ShardResponse, TopicPartition,
};
use crate::metadata::{owner_shard, partition_dir, ClusterMetadata};
use crate::signal::AppendSignal;
use crate::topic_config;

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
    metadata: RefCell<Arc<ClusterMetadata>>,
    logs: RefCell<HashMap<TopicPartition, OwnedLog>>,
    pub appended: AppendSignal,
    /// Fired once when shutdown starts, so idle connections and accept
    /// loops stop waiting.
    stopping: AppendSignal,
    pub mesh: Mesh,
    /// One memory bound for the tail caches of every log of this shard.
    pub cache_budget: Rc<storage::CacheBudget>,
    /// Serialises topic administration on shard 0.
    pub(crate) admin_gate: glommio::sync::Semaphore,
    pub shutdown: Arc<AtomicBool>,
    /// The consumer groups whose `__consumer_offsets` partitions this
    /// shard owns.
    pub coordinator: Coordinator,
    /// This shard's counters; only its own thread touches them.
    pub metrics: crate::metrics::ShardMetrics,
    /// Shard 0's controller and cluster membership.
    pub cluster: RefCell<Option<Rc<crate::cluster::ClusterNode>>>,
    /// Followers' fetch loops and the leaders' ISR upkeep.
    pub replication: crate::replicas::Replication,
    /// Set while this node cannot reach the controller: it leads nothing.
    isolated: std::cell::Cell<bool>,
}

impl Shard {
    pub fn new(
        id: usize,
        nr_shards: usize,
        config: Arc<Config>,
        mesh: Mesh,
        shutdown: Arc<AtomicBool>,
    ) -> Result<Shard, crate::config::ConfigError> {
        let default_log = config.default_log_config()?;
        let advertised = config.advertised()?;
        let cache_budget = storage::CacheBudget::new(config.shard_cache_bytes);
        let group_config = config.group_config();
        Ok(Shard {
            id,
            nr_shards,
            cache_budget,
            config,
            default_log,
            advertised,
            metadata: RefCell::new(Arc::new(ClusterMetadata::empty())),
            logs: RefCell::new(HashMap::new()),
            appended: AppendSignal::default(),
            stopping: AppendSignal::default(),
            mesh,
            admin_gate: glommio::sync::Semaphore::new(1),
            shutdown,
            coordinator: Coordinator::new(group_config),
            metrics: crate::metrics::ShardMetrics::default(),
            cluster: RefCell::new(None),
            replication: crate::replicas::Replication::default(),
            isolated: std::cell::Cell::new(false),
        })
    }

    pub fn metadata(&self) -> Arc<ClusterMetadata> {
        self.metadata.borrow().clone()
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
                glommio::timer::sleep(period).await;
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

    /// Runs `request` on shard `to`, locally when that is this shard.
    pub async fn call(self: &Rc<Self>, to: usize, request: ShardRequest) -> Option<ShardResponse> {
        if to == self.id {
            // Boxed: serving may call shards again (admin proposes through
            // shard 0), so the future's type would contain itself.
            let served: std::pin::Pin<Box<dyn std::future::Future<Output = ShardResponse> + '_>> =
                Box::pin(self.serve(request));
            return Some(served.await);
        }
        match self.mesh.call(self.id, to, request).await {
            Ok(response) => Some(response),
            Err(e) => {
                tracing::warn!(shard = self.id, "{e}");
                None
            }
        }
    }

    /// Executes a request on this shard (it owns the partitions named).
    pub async fn serve(self: &Rc<Self>, request: ShardRequest) -> ShardResponse {
        match request {
            ShardRequest::Produce(items) => {
                ShardResponse::Produced(self.produce_local(items).await)
            }
            ShardRequest::Fetch {
                items,
                budget_bytes,
            } => ShardResponse::Fetched(self.fetch_local(items, budget_bytes).await),
            ShardRequest::WaitForData { items, timeout } => {
                self.wait_local(&items, timeout).await;
                ShardResponse::Waited
            }
            ShardRequest::ListOffsets(items) => {
                ShardResponse::Offsets(self.list_offsets_local(items).await)
            }
            ShardRequest::LogSizes(items) => ShardResponse::LogSizes(
                items
                    .iter()
                    .map(|tp| self.log(tp).map_or(-1, |l| l.size_bytes() as i64))
                    .collect(),
            ),
            ShardRequest::DeleteRecords(items) => {
                ShardResponse::RecordsDeleted(self.delete_records_local(items).await)
            }
            ShardRequest::DescribeProducers(items) => ShardResponse::Producers(
                items
                    .iter()
                    .map(|tp| match self.log(tp) {
                        Some(log) => ProducersAnswer {
                            error_code: 0,
                            producers: log.producers(),
                        },
                        None => ProducersAnswer {
                            error_code: code(Kafka::UnknownTopicOrPartition),
                            producers: Vec::new(),
                        },
                    })
                    .collect(),
            ),
            ShardRequest::Admin(op) => ShardResponse::Admin(self.admin_local(op).await),
            ShardRequest::ApplyMetadata(meta) => {
                self.apply_metadata(meta).await;
                ShardResponse::Applied
            }
            ShardRequest::Group(call) => {
                ShardResponse::Group(self.coordinator.handle(self, call).await)
            }
            ShardRequest::Metrics => {
                ShardResponse::Metrics(Box::new(crate::metrics::snapshot(self)))
            }
            ShardRequest::SetIsolated(isolated) => {
                self.isolated.set(isolated);
                self.appended.notify();
                ShardResponse::Applied
            }
            ShardRequest::EpochEnds(items) => ShardResponse::EpochEnds(
                items
                    .into_iter()
                    .map(|(tp, current, epoch)| match self.led(&tp) {
                        Ok(r) => r.epoch_end(current, epoch),
                        Err(code) => (code, -1, -1),
                    })
                    .collect(),
            ),
            ShardRequest::Controller(command) => {
                ShardResponse::Controller(crate::cluster::submit(self, command).await)
            }
        }
    }

    /// Makes this shard's logs match `meta`: opens the logs of partitions
    /// it owns that this node replicates, deletes logs of removed (or
    /// re-created) topics, applies config changes and partition states.
    /// An older version than the one applied (broadcasts may cross) is
    /// ignored.
    pub async fn apply_metadata(self: &Rc<Self>, meta: Arc<ClusterMetadata>) {
        if meta.applied_index > 0 && meta.applied_index < self.metadata().applied_index {
            return;
        }
        let me = self.node_id();
        let mut gone = Vec::new();
        {
            let logs = self.logs.borrow();
            for (tp, owned) in logs.iter() {
                let keep = meta.topic(&tp.0).is_some_and(|t| {
                    t.topic_id == owned.topic_id
                        && tp.1 < t.partitions
                        && state_of(t, tp.1, me).replicas.contains(&me)
                });
                if !keep {
                    gone.push(tp.clone());
                }
            }
        }
        for tp in gone {
            let removed = self.logs.borrow_mut().remove(&tp);
            if let Some(owned) = removed {
                if let Err(e) = owned.log.delete().await {
                    tracing::error!(topic = %tp.0, partition = tp.1, "deleting the log failed: {e}");
                }
            }
        }
        let now = crate::replicas::now_ms();
        let replica_config = ReplicaConfig {
            lag_time_max_ms: self.config.replica_lag_time_max_ms,
            ..ReplicaConfig::default()
        };
        for topic in meta.topics.values() {
            let log_config = match topic_config::log_config(&self.default_log, &topic.configs) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(topic = %topic.name, "unusable topic config, using defaults: {e}");
                    self.default_log.clone()
                }
            };
            for partition in 0..topic.partitions {
                if self.owner(&topic.name, partition) != self.id {
                    continue;
                }
                let state = state_of(topic, partition, me);
                if !state.replicas.contains(&me) {
                    continue;
                }
                let tp = (topic.name.clone(), partition);
                let existing = self.replica(&tp);
                let replica = match existing {
                    Some(replica) => {
                        let log = replica.log();
                        if log.config() != log_config {
                            if let Err(e) = log.set_config(log_config.clone()) {
                                tracing::error!(topic = %topic.name, partition, "config change refused: {e}");
                            }
                        }
                        replica
                    }
                    None => {
                        let dir = partition_dir(&self.config.data_dir, &topic.name, partition);
                        match PartitionLog::open(&dir, log_config.clone()).await {
                            Ok(log) => {
                                log.set_cache_budget(self.cache_budget.clone());
                                let replica = Rc::new(LogReplica::new(
                                    topic.name.clone(),
                                    partition,
                                    me,
                                    replica_config,
                                    log.clone(),
                                ));
                                self.logs.borrow_mut().insert(
                                    tp,
                                    OwnedLog {
                                        topic_id: topic.topic_id,
                                        log,
                                        replica: replica.clone(),
                                    },
                                );
                                replica
                            }
                            Err(e) => {
                                tracing::error!(dir = %dir.display(), "opening the log failed: {e}");
                                continue;
                            }
                        }
                    }
                };
                replica.apply_state(&state, now).await;
            }
        }
        *self.metadata.borrow_mut() = meta;
        // Leaders may have changed: waiting producers and consumers look
        // again.
        self.appended.notify();
        crate::replicas::start_fetchers(self);
        self.coordinator.adopt_partitions(self);
    }

    async fn produce_local(self: &Rc<Self>, mut items: Vec<ProduceItem>) -> Vec<PartitionWrite> {
        if items.len() == 1 {
            let item = items.remove(0);
            return vec![self.produce_one(item).await];
        }
        // Partitions append concurrently so that one fsync can cover them
        // all (group commit); batches of one partition stay in order.
        let tasks: Vec<_> = items
            .into_iter()
            .map(|item| {
                let shard = self.clone();
                glommio::spawn_local(async move { shard.produce_one(item).await })
            })
            .collect();
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            out.push(t.await);
        }
        out
    }

    async fn produce_one(&self, item: ProduceItem) -> PartitionWrite {
        let fail = |error_code: i16, message: Option<String>| PartitionWrite {
            error_code,
            error_message: message,
            base_offset: -1,
            log_start_offset: -1,
        };
        let replica = match self.led(&item.tp) {
            Ok(r) => r,
            Err(code) => return fail(code, None),
        };
        let min_isr = self
            .metadata()
            .topic(&item.tp.0)
            .map_or(1, min_insync_replicas);
        let short_of_replicas = |replica: &LogReplica| {
            let isr = replica.isr().map_or(0, |i| i.len() as i64);
            (isr < min_isr).then(|| {
                format!(
                    "the in-sync replicas ({isr}) of {}-{} are fewer than min.insync.replicas ({min_isr})",
                    item.tp.0, item.tp.1
                )
            })
        };
        if item.acks == -1 {
            if let Some(message) = short_of_replicas(&replica) {
                return fail(code(Kafka::NotEnoughReplicas), Some(message));
            }
        }
        let written = append_records(&replica, &item.records).await;
        if written.error_code != 0 {
            return written;
        }
        self.appended.notify();
        if item.acks != -1 {
            return written;
        }
        // acks=all: the ISR must have everything up to the log end as of
        // this append, which covers these records.
        let end = replica.log().log_end_offset();
        let timeout = Duration::from_millis(item.timeout_ms.max(0) as u64);
        if let Err(error_code) = self
            .await_high_watermark(&item.tp, &replica, end, timeout)
            .await
        {
            let message = (error_code == code(Kafka::RequestTimedOut)).then(|| {
                format!(
                    "the in-sync replicas did not acknowledge within {} ms",
                    item.timeout_ms
                )
            });
            return fail(error_code, message);
        }
        if let Some(message) = short_of_replicas(&replica) {
            return fail(code(Kafka::NotEnoughReplicasAfterAppend), Some(message));
        }
        written
    }

    /// Waits until the high watermark reaches `end` while this node leads
    /// the partition: NOT_LEADER_OR_FOLLOWER if it stops leading,
    /// REQUEST_TIMED_OUT after `timeout`.
    pub(crate) async fn await_high_watermark(
        &self,
        tp: &TopicPartition,
        replica: &Rc<LogReplica>,
        end: i64,
        timeout: Duration,
    ) -> Result<(), i16> {
        let deadline = Instant::now() + timeout;
        loop {
            let same = self.replica(tp).is_some_and(|r| Rc::ptr_eq(&r, replica));
            if !replica.is_leader() || !same {
                return Err(code(Kafka::NotLeaderOrFollower));
            }
            if replica.high_watermark() >= end {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.is_shutting_down() {
                return Err(code(Kafka::RequestTimedOut));
            }
            future::or(
                self.appended.next(),
                glommio::timer::sleep(left.min(Duration::from_millis(100))),
            )
            .await;
        }
    }

    async fn fetch_local(&self, items: Vec<FetchItem>, budget_bytes: usize) -> Vec<PartitionRead> {
        let mut left = budget_bytes;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let failed = |error_code| PartitionRead {
                error_code,
                high_watermark: -1,
                log_start_offset: -1,
                chunks: Vec::new(),
            };
            let replica = match self.led(&item.tp) {
                Ok(r) => r,
                Err(code) => {
                    out.push(failed(code));
                    continue;
                }
            };
            let log = replica.log();
            // Consumers read what the ISR has: up to the high watermark
            // (never past what this log can serve yet).
            let high_watermark = replica.high_watermark().min(log.log_end_offset());
            let limit = item.partition_max_bytes.min(left);
            if limit == 0 || (item.offset >= high_watermark && item.offset <= log.log_end_offset())
            {
                out.push(PartitionRead {
                    error_code: 0,
                    high_watermark,
                    log_start_offset: log.log_start_offset(),
                    chunks: Vec::new(),
                });
                continue;
            }
            match log.read(item.offset, limit).await {
                Ok(read) => {
                    let chunks = crate::replicas::clip_to(read.chunks, high_watermark);
                    let n: usize = chunks.iter().map(|c| c.len()).sum();
                    left = left.saturating_sub(n);
                    out.push(PartitionRead {
                        error_code: 0,
                        high_watermark,
                        log_start_offset: read.log_start_offset,
                        chunks,
                    });
                }
                Err(e) => out.push(failed(storage_error_code(&e))),
            }
        }
        out
    }

    /// Waits until a partition's log end offset passes the offset given (or
    /// the partition is gone), or `timeout`.
    async fn wait_local(&self, items: &[(TopicPartition, i64)], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let ready = items.iter().any(|(tp, offset)| match self.replica(tp) {
                Some(r) => !r.is_leader() || r.high_watermark() > *offset,
                None => true,
            });
            if ready || self.is_shutting_down() {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            // Wake at least every 100 ms to notice shutdown.
            let nap = left.min(Duration::from_millis(100));
            future::or(self.appended.next(), glommio::timer::sleep(nap)).await;
        }
    }

    async fn list_offsets_local(&self, items: Vec<(TopicPartition, i64)>) -> Vec<OffsetAnswer> {
        let mut out = Vec::with_capacity(items.len());
        for (tp, timestamp) in items {
            let replica = match self.led(&tp) {
                Ok(r) => r,
                Err(error_code) => {
                    out.push(OffsetAnswer {
                        error_code,
                        timestamp: -1,
                        offset: -1,
                    });
                    continue;
                }
            };
            let log = replica.log().clone();
            let found: Result<Option<(i64, i64)>, i16> = match timestamp {
                EARLIEST_TIMESTAMP => Ok(Some((-1, log.log_start_offset()))),
                LATEST_TIMESTAMP => Ok(Some((
                    -1,
                    replica.high_watermark().min(log.log_end_offset()),
                ))),
                MAX_TIMESTAMP => match log.max_timestamp().await {
                    Ok(Some(hit)) => refine(&log, hit, hit.timestamp, true).await,
                    other => other.map(|h| h.map(|h| (h.timestamp, h.offset))),
                }
                .map_err(|e| storage_error_code(&e)),
                ts if ts < 0 => Err(code(Kafka::InvalidRequest)),
                ts => match log.offset_for_timestamp(ts).await {
                    Ok(Some(hit)) => refine(&log, hit, ts, false).await,
                    other => other.map(|h| h.map(|h| (h.timestamp, h.offset))),
                }
                .map_err(|e| storage_error_code(&e)),
            };
            out.push(match found {
                Ok(Some((timestamp, offset))) => OffsetAnswer {
                    error_code: 0,
                    timestamp,
                    offset,
                },
                // Kafka answers "nothing at or after that time" this way.
                Ok(None) => OffsetAnswer {
                    error_code: 0,
                    timestamp: -1,
                    offset: -1,
                },
                Err(error_code) => OffsetAnswer {
                    error_code,
                    timestamp: -1,
                    offset: -1,
                },
            });
        }
        out
    }

    async fn delete_records_local(&self, items: Vec<(TopicPartition, i64)>) -> Vec<(i16, i64)> {
        let mut out = Vec::with_capacity(items.len());
        for (tp, offset) in items {
            let replica = match self.led(&tp) {
                Ok(r) => r,
                Err(error_code) => {
                    out.push((error_code, -1));
                    continue;
                }
            };
            let log = replica.log().clone();
            let high_watermark = replica.high_watermark();
            // -1 means "everything up to the high watermark".
            let offset = if offset == -1 { high_watermark } else { offset };
            if offset > high_watermark {
                out.push((code(Kafka::OffsetOutOfRange), -1));
                continue;
            }
            out.push(match log.delete_records_before(offset).await {
                Ok(log_start_offset) => (0, log_start_offset),
                Err(e) => (storage_error_code(&e), -1),
            });
        }
        out
    }

    /// Closes every log this shard owns (flushing per the fsync policy).
    pub async fn close_logs(&self) {
        let logs: Vec<_> = self.logs.borrow_mut().drain().collect();
        for ((topic, partition), owned) in logs {
            if let Err(e) = owned.log.close().await {
                tracing::error!(%topic, partition, "closing the log failed: {e}");
            }
        }
    }

    pub async fn enforce_retention(&self) {
        for ((topic, partition), log) in self.owned_logs() {
            match log.enforce_retention().await {
                Ok(outcome) if outcome.segments_deleted > 0 => tracing::info!(
                    %topic,
                    partition,
                    segments = outcome.segments_deleted,
                    bytes = outcome.bytes_deleted,
                    log_start_offset = outcome.log_start_offset,
                    "retention deleted segments"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(%topic, partition, "retention failed: {e}"),
            }
        }
    }
}

async fn refine(
    log: &PartitionLog,
    hit: storage::TimestampOffset,
    target: i64,
    exact: bool,
) -> Result<Option<(i64, i64)>, storage::StorageError> {
    let exact_hit = crate::timestamps::refine(log, hit, target, exact).await?;
    Ok(Some((exact_hit.timestamp, exact_hit.offset)))
}

/// ListOffsets special timestamps.
pub const LATEST_TIMESTAMP: i64 = -1;
pub const EARLIEST_TIMESTAMP: i64 = -2;
pub const MAX_TIMESTAMP: i64 = -3;

/// Appends the record batches of one partition's produce data. Every batch
/// is validated before any is appended, so a bad batch leaves the log as it
/// was, as Kafka does.
async fn append_records(replica: &LogReplica, records: &bytes::Bytes) -> PartitionWrite {
    let fail = |error_code: i16, message: String| PartitionWrite {
        error_code,
        error_message: Some(message),
        base_offset: -1,
        log_start_offset: -1,
    };
    let mut batches = Vec::new();
    let mut at = 0;
    while at < records.len() {
        let rest = &records[at..];
        let size = match storage::batch::peek_batch_size(rest) {
            Some(size) if size <= rest.len() => size,
            _ => {
                return fail(
                    code(Kafka::CorruptMessage),
                    format!("record batch at byte {at} is truncated"),
                )
            }
        };
        batches.push(records.slice(at..at + size));
        at += size;
    }
    // The log validates every batch it appends; with several, all are
    // checked first so that a bad one leaves the log as it was. One batch
    // (what producers send) is checked once, by the log.
    if batches.len() > 1 {
        for batch in &batches {
            if let Err(e) = storage::batch::validate(batch) {
                let err = storage::StorageError::InvalidBatch(e);
                return fail(storage_error_code(&err), err.to_string());
            }
        }
    }
    if batches.is_empty() {
        return fail(code(Kafka::InvalidRecord), "no record batch".into());
    }
    let mut first: Option<storage::AppendInfo> = None;
    for batch in batches {
        match replica.append_as_leader(&batch).await {
            Ok(info) => {
                first.get_or_insert(info);
            }
            Err(ReplicaError::Storage(e)) => return fail(storage_error_code(&e), e.to_string()),
            Err(e) => return fail(code(Kafka::NotLeaderOrFollower), e.to_string()),
        }
    }
    match first {
        Some(info) => PartitionWrite {
            error_code: 0,
            error_message: None,
            base_offset: info.base_offset,
            log_start_offset: info.log_start_offset,
        },
        None => fail(code(Kafka::UnknownServerError), "nothing appended".into()),
    }
}

/// `min.insync.replicas` of a topic (1 unless set).
pub fn min_insync_replicas(topic: &crate::metadata::TopicMeta) -> i64 {
    topic
        .configs
        .get("min.insync.replicas")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1)
}

/// A partition's state; a topic made without a controller (tests that
/// build metadata by hand) is led by this node alone.
fn state_of(topic: &crate::metadata::TopicMeta, partition: i32, me: u32) -> PartitionState {
    topic.state(partition).cloned().unwrap_or(PartitionState {
        replicas: vec![me],
        leader: Some(me),
        leader_epoch: 0,
        isr: vec![me],
        partition_epoch: 0,
    })
}
