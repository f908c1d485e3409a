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

/// A partition log owned by this shard, with the topic id it was opened for.
#[derive(Clone)]
pub struct OwnedLog {
    pub topic_id: Uuid,
    pub log: PartitionLog,
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
            return Some(self.serve(request).await);
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
        }
    }

    /// Makes this shard's logs match `meta`: opens logs of new partitions it
    /// owns, deletes logs of removed (or re-created) topics, applies config
    /// changes.
    pub async fn apply_metadata(self: &Rc<Self>, meta: Arc<ClusterMetadata>) {
        let mut gone = Vec::new();
        {
            let logs = self.logs.borrow();
            for (tp, owned) in logs.iter() {
                let keep = meta
                    .topic(&tp.0)
                    .is_some_and(|t| t.topic_id == owned.topic_id && tp.1 < t.partitions);
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
                let tp = (topic.name.clone(), partition);
                let existing = self.log(&tp);
                match existing {
                    Some(log) => {
                        if log.config() != log_config {
                            if let Err(e) = log.set_config(log_config.clone()) {
                                tracing::error!(topic = %topic.name, partition, "config change refused: {e}");
                            }
                        }
                    }
                    None => {
                        let dir = partition_dir(&self.config.data_dir, &topic.name, partition);
                        match PartitionLog::open(&dir, log_config.clone()).await {
                            Ok(log) => {
                                log.set_cache_budget(self.cache_budget.clone());
                                self.logs.borrow_mut().insert(
                                    tp,
                                    OwnedLog {
                                        topic_id: topic.topic_id,
                                        log,
                                    },
                                );
                            }
                            Err(e) => {
                                tracing::error!(dir = %dir.display(), "opening the log failed: {e}")
                            }
                        }
                    }
                }
            }
        }
        *self.metadata.borrow_mut() = meta;
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
        let Some(log) = self.log(&item.tp) else {
            return PartitionWrite {
                error_code: code(Kafka::UnknownTopicOrPartition),
                base_offset: -1,
                log_start_offset: -1,
                ..PartitionWrite::default()
            };
        };
        let written = append_records(&log, &item.records).await;
        if written.error_code == 0 {
            self.appended.notify();
        }
        written
    }

    async fn fetch_local(&self, items: Vec<FetchItem>, budget_bytes: usize) -> Vec<PartitionRead> {
        let mut left = budget_bytes;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let Some(log) = self.log(&item.tp) else {
                out.push(PartitionRead {
                    error_code: code(Kafka::UnknownTopicOrPartition),
                    high_watermark: -1,
                    log_start_offset: -1,
                    chunks: Vec::new(),
                });
                continue;
            };
            let limit = item.partition_max_bytes.min(left);
            if limit == 0 {
                out.push(PartitionRead {
                    error_code: 0,
                    high_watermark: log.log_end_offset(),
                    log_start_offset: log.log_start_offset(),
                    chunks: Vec::new(),
                });
                continue;
            }
            match log.read(item.offset, limit).await {
                Ok(read) => {
                    let n: usize = read.chunks.iter().map(|c| c.len()).sum();
                    left = left.saturating_sub(n);
                    out.push(PartitionRead {
                        error_code: 0,
                        high_watermark: read.log_end_offset,
                        log_start_offset: read.log_start_offset,
                        chunks: read.chunks,
                    });
                }
                Err(e) => out.push(PartitionRead {
                    error_code: storage_error_code(&e),
                    high_watermark: -1,
                    log_start_offset: -1,
                    chunks: Vec::new(),
                }),
            }
        }
        out
    }

    /// Waits until a partition's log end offset passes the offset given (or
    /// the partition is gone), or `timeout`.
    async fn wait_local(&self, items: &[(TopicPartition, i64)], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let ready = items.iter().any(|(tp, offset)| match self.log(tp) {
                Some(log) => log.log_end_offset() > *offset,
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
            let Some(log) = self.log(&tp) else {
                out.push(OffsetAnswer {
                    error_code: code(Kafka::UnknownTopicOrPartition),
                    timestamp: -1,
                    offset: -1,
                });
                continue;
            };
            let found: Result<Option<(i64, i64)>, i16> = match timestamp {
                EARLIEST_TIMESTAMP => Ok(Some((-1, log.log_start_offset()))),
                LATEST_TIMESTAMP => Ok(Some((-1, log.log_end_offset()))),
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
            let Some(log) = self.log(&tp) else {
                out.push((code(Kafka::UnknownTopicOrPartition), -1));
                continue;
            };
            // -1 means "everything up to the high watermark".
            let offset = if offset == -1 {
                log.log_end_offset()
            } else {
                offset
            };
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
async fn append_records(log: &PartitionLog, records: &bytes::Bytes) -> PartitionWrite {
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
        match log.append(&batch).await {
            Ok(info) => {
                first.get_or_insert(info);
            }
            Err(e) => return fail(storage_error_code(&e), e.to_string()),
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
