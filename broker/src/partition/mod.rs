//! The work a shard does on the partitions it owns, for whichever shard a
//! client reached: appends (`produce`), reads and offset lookups (`read`),
//! and keeping the set of logs in step with the cluster metadata
//! (`placement`). The Kafka handlers and the ingest listeners reach it
//! through `route`, which sends each partition's share to its owner; the
//! messages below are what crosses the mesh for it.

pub mod placement;
pub mod produce;
pub mod read;
mod timestamps;

use std::sync::OnceLock;
use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::ResponseError as Kafka;

use crate::errors::code;
use crate::shard::{Shard, TopicPartition};

pub use produce::{await_high_watermark, min_insync_replicas};
pub use read::{clip_to, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, MAX_TIMESTAMP};

/// Work on partitions, sent to the shard that owns them.
pub enum PartitionRequest {
    Produce(Vec<ProduceItem>),
    Fetch {
        items: Vec<FetchItem>,
        budget_bytes: usize,
    },
    /// Resolves once any partition's high watermark passes its offset, or
    /// when the timeout passes.
    WaitForData {
        items: Vec<(TopicPartition, i64)>,
        timeout: std::time::Duration,
    },
    ListOffsets(Vec<(TopicPartition, i64)>),
    /// Bytes each partition's log holds on disk.
    LogSizes(Vec<TopicPartition>),
    /// Moves log start offsets forward (-1: to the high watermark).
    DeleteRecords(Vec<(TopicPartition, i64)>),
    /// The idempotent producers each partition knows.
    DescribeProducers(Vec<TopicPartition>),
    /// OffsetForLeaderEpoch: (partition, the client's current leader
    /// epoch, the epoch asked about).
    EpochEnds(Vec<(TopicPartition, i32, i32)>),
}

pub enum PartitionResponse {
    Produced(Vec<PartitionWrite>),
    Fetched(Vec<PartitionRead>),
    Waited,
    Offsets(Vec<OffsetAnswer>),
    /// Per partition: bytes on disk, or -1 when this shard has no log.
    LogSizes(Vec<i64>),
    /// Per partition: error code and the new log start offset.
    RecordsDeleted(Vec<(i16, i64)>),
    Producers(Vec<ProducersAnswer>),
    /// Per partition: (error code, epoch, end offset).
    EpochEnds(Vec<(i16, i32, i64)>),
}

pub struct ProduceItem {
    pub tp: TopicPartition,
    pub records: Bytes,
    /// 1: answer once the leader has it; -1: once the ISR has it.
    pub acks: i16,
    /// How long an acks=-1 write may wait for the ISR.
    pub timeout_ms: i32,
}

/// Outcome of appending one partition's records.
#[derive(Debug, Clone, Default)]
pub struct PartitionWrite {
    pub error_code: i16,
    pub error_message: Option<String>,
    pub base_offset: i64,
    pub log_start_offset: i64,
}

pub struct FetchItem {
    pub tp: TopicPartition,
    pub offset: i64,
    pub partition_max_bytes: usize,
}

#[derive(Debug, Clone, Default)]
pub struct PartitionRead {
    pub error_code: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub chunks: Vec<Bytes>,
}

impl PartitionRead {
    pub fn bytes_len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }
}

/// One partition's idempotent producers, or why they are unknown.
#[derive(Debug, Clone, Default)]
pub struct ProducersAnswer {
    pub error_code: i16,
    pub producers: Vec<storage::ProducerEntry>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct OffsetAnswer {
    pub error_code: i16,
    pub timestamp: i64,
    pub offset: i64,
}

/// Executes `request` on this shard, which owns the partitions it names.
pub async fn serve(shard: &std::rc::Rc<Shard>, request: PartitionRequest) -> PartitionResponse {
    match request {
        PartitionRequest::Produce(items) => {
            PartitionResponse::Produced(produce::produce(shard, items).await)
        }
        PartitionRequest::Fetch {
            items,
            budget_bytes,
        } => PartitionResponse::Fetched(read::fetch(shard, items, budget_bytes).await),
        PartitionRequest::WaitForData { items, timeout } => {
            read::wait_for_data(shard, &items, timeout).await;
            PartitionResponse::Waited
        }
        PartitionRequest::ListOffsets(items) => {
            PartitionResponse::Offsets(read::list_offsets(shard, items).await)
        }
        PartitionRequest::LogSizes(items) => PartitionResponse::LogSizes(
            items
                .iter()
                .map(|tp| shard.log(tp).map_or(-1, |l| l.size_bytes() as i64))
                .collect(),
        ),
        PartitionRequest::DeleteRecords(items) => {
            PartitionResponse::RecordsDeleted(read::delete_records(shard, items).await)
        }
        PartitionRequest::DescribeProducers(items) => PartitionResponse::Producers(
            items
                .iter()
                .map(|tp| match shard.log(tp) {
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
        PartitionRequest::EpochEnds(items) => PartitionResponse::EpochEnds(
            items
                .into_iter()
                .map(|(tp, current, epoch)| match shard.led(&tp) {
                    Ok(r) => r.epoch_end(current, epoch),
                    Err(code) => (code, -1, -1),
                })
                .collect(),
        ),
    }
}

/// Milliseconds on a monotonic clock, for the replicas' lag timing.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}
