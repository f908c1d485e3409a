//! Messages between shards. A request for partitions another shard owns is
//! sent over glommio's channel mesh with an id; the owner answers with the
//! same id and the caller's pending oneshot completes. Record data crosses
//! as `Bytes`, never copied.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_channel::oneshot;
use glommio::channels::channel_mesh::Senders;

use crate::group::coordinator::{GroupAnswer, GroupCall};
use crate::metadata::{ClusterMetadata, TopicMeta};

pub type TopicPartition = (String, i32);

/// Work a shard does on partitions it owns, or on metadata (shard 0).
pub enum ShardRequest {
    Produce(Vec<ProduceItem>),
    Fetch {
        items: Vec<FetchItem>,
        budget_bytes: usize,
    },
    /// Resolves once any partition's log end offset passes its offset, or
    /// when the timeout passes.
    WaitForData {
        items: Vec<(TopicPartition, i64)>,
        timeout: Duration,
    },
    ListOffsets(Vec<(TopicPartition, i64)>),
    /// Bytes each partition's log holds on disk.
    LogSizes(Vec<TopicPartition>),
    /// Moves log start offsets forward (-1: to the high watermark).
    DeleteRecords(Vec<(TopicPartition, i64)>),
    /// The idempotent producers each partition knows.
    DescribeProducers(Vec<TopicPartition>),
    Admin(AdminOp),
    ApplyMetadata(Arc<ClusterMetadata>),
    /// A consumer-group request, for the shard coordinating the group.
    Group(GroupCall),
    /// OffsetForLeaderEpoch: (partition, the client's current leader
    /// epoch, the epoch asked about).
    EpochEnds(Vec<(TopicPartition, i32, i32)>),
    /// This node lost (true) or regained (false) the controller.
    SetIsolated(bool),
    /// A command for the controller, which shard 0 brings to its leader.
    Controller(replication::controller::Command),
    /// This shard's metrics, for a scrape.
    Metrics,
}

pub enum ShardResponse {
    Produced(Vec<PartitionWrite>),
    Fetched(Vec<PartitionRead>),
    Waited,
    Offsets(Vec<OffsetAnswer>),
    /// Per partition: bytes on disk, or -1 when this shard has no log.
    LogSizes(Vec<i64>),
    /// Per partition: error code and the new log start offset.
    RecordsDeleted(Vec<(i16, i64)>),
    Producers(Vec<ProducersAnswer>),
    Admin(Vec<AdminOutcome>),
    Applied,
    Group(GroupAnswer),
    Metrics(Box<crate::metrics::ShardSnapshot>),
    Controller(
        Result<replication::controller::CommandResult, replication::controller::SubmitError>,
    ),
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

/// Topic administration, done by shard 0 (the metadata owner).
pub enum AdminOp {
    CreateTopics {
        topics: Vec<NewTopic>,
        validate_only: bool,
    },
    DeleteTopics(Vec<String>),
    CreatePartitions {
        topics: Vec<(String, i32)>,
        validate_only: bool,
    },
    /// Topic config changes, one per topic.
    AlterTopicConfigs {
        changes: Vec<(String, ConfigChange)>,
        validate_only: bool,
    },
}

/// How a topic's configs change.
pub enum ConfigChange {
    /// AlterConfigs: the given set replaces every config of the topic.
    Replace(std::collections::BTreeMap<String, String>),
    /// IncrementalAlterConfigs: `(key, operation, value)` with Kafka's
    /// operations 0 SET, 1 DELETE, 2 APPEND, 3 SUBTRACT.
    Incremental(Vec<(String, i8, Option<String>)>),
}

pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    /// Replicas per partition (-1: the broker's default).
    pub replication_factor: i16,
    pub configs: std::collections::BTreeMap<String, String>,
}

/// Per topic: the topic as it now is, or a Kafka error code and message.
pub type AdminOutcome = Result<TopicMeta, (i16, String)>;

pub enum Envelope {
    Request {
        id: u64,
        from: usize,
        body: ShardRequest,
    },
    Response {
        id: u64,
        body: ShardResponse,
    },
}

/// Bound on messages queued from one shard to another.
pub const MESH_CHANNEL_CAPACITY: usize = 1024;

#[derive(Debug, thiserror::Error)]
#[error("shard {0} is not reachable (shutting down)")]
pub struct MeshError(pub usize);

/// This shard's side of the mesh: senders and the calls awaiting answers.
pub struct Mesh {
    senders: Option<Senders<Envelope>>,
    pending: RefCell<HashMap<u64, oneshot::Sender<ShardResponse>>>,
    next_id: Cell<u64>,
}

impl Mesh {
    pub fn new(senders: Option<Senders<Envelope>>) -> Self {
        Mesh {
            senders,
            pending: RefCell::new(HashMap::new()),
            next_id: Cell::new(1),
        }
    }

    /// Sends `body` to shard `to` and waits for its answer.
    pub async fn call(
        &self,
        self_id: usize,
        to: usize,
        body: ShardRequest,
    ) -> Result<ShardResponse, MeshError> {
        let senders = self.senders.as_ref().ok_or(MeshError(to))?;
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(id, tx);
        let sent = senders
            .send_to(
                to,
                Envelope::Request {
                    id,
                    from: self_id,
                    body,
                },
            )
            .await;
        if sent.is_err() {
            self.pending.borrow_mut().remove(&id);
            return Err(MeshError(to));
        }
        rx.await.map_err(|_| MeshError(to))
    }

    pub async fn respond(&self, to: usize, id: u64, body: ShardResponse) {
        if let Some(senders) = &self.senders {
            // A closed peer is shutting down and no longer waits for it.
            let _ = senders.send_to(to, Envelope::Response { id, body }).await;
        }
    }

    pub fn complete(&self, id: u64, body: ShardResponse) {
        if let Some(tx) = self.pending.borrow_mut().remove(&id) {
            // The caller may have given up (a fetch that already answered).
            let _ = tx.send(body);
        }
    }
}
