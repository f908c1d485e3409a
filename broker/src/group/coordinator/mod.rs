//! The group coordinator of one shard: the groups whose `__consumer_offsets`
//! partition this shard owns, their committed offsets, and the I/O around
//! the state machine of `classic`. Requests arrive as `GroupCall`s over the
//! mesh from whichever shard accepted the connection; answers that wait for
//! a rebalance (JoinGroup, SyncGroup) are oneshots completed when the state
//! machine says so. Every change is written to the group's partition with
//! Kafka's record schemas before it is acknowledged, and read back when the
//! shard opens the partition (COORDINATOR_LOAD_IN_PROGRESS until then).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_channel::oneshot;
use kafka_protocol::records::{Record, RecordBatchDecoder};

use super::classic::{join_error, sync_error, Group, GroupState};
use super::errors::*;
use super::records::{partition_for, GroupValue, OffsetValue, RecordKey};
use super::{Action, GroupConfig, JoinRequest, JoinResponse, RequestId, SyncRequest, SyncResponse};
use crate::shard::Shard;

/// The internal topic holding committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// `offset.metadata.max.bytes`.
const OFFSET_METADATA_MAX_BYTES: usize = 4096;

/// How often group timers (session and rebalance timeouts) are checked.
const TICK: Duration = Duration::from_millis(100);
/// How long a commit waits for the in-sync replicas (Kafka's
/// offsets.commit.timeout.ms).
const OFFSETS_COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// A group request, routed to the shard owning the group's partition.
pub enum GroupCall {
    Join {
        group_id: String,
        request: JoinRequest,
    },
    Sync {
        group_id: String,
        request: SyncRequest,
    },
    Heartbeat {
        group_id: String,
        member_id: String,
        instance: Option<String>,
        generation: i32,
    },
    Leave {
        group_id: String,
        members: Vec<(String, Option<String>)>,
    },
    Commit(OffsetCommit),
    FetchOffsets {
        group_id: String,
        /// `None`: every partition the group has committed.
        topics: Option<Vec<(String, Vec<i32>)>>,
    },
    DeleteOffsets {
        group_id: String,
        partitions: Vec<(String, i32)>,
    },
    List,
    Describe(String),
    Delete(String),
}

pub struct OffsetCommit {
    pub group_id: String,
    pub member_id: String,
    pub instance: Option<String>,
    pub generation: i32,
    /// (topic, partition, offset, leader epoch, metadata)
    pub offsets: Vec<(String, i32, i64, i32, Option<String>)>,
}

pub enum GroupAnswer {
    Join(JoinResponse),
    Sync(SyncResponse),
    Code(i16),
    /// A group-level error code and one code per item asked about.
    Codes(i16, Vec<i16>),
    Offsets(i16, Vec<FetchedOffset>),
    List(Vec<ListedGroup>),
    Described(DescribedGroup),
}

#[derive(Debug, Clone)]
pub struct FetchedOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub error_code: i16,
}

#[derive(Debug, Clone)]
pub struct ListedGroup {
    pub group_id: String,
    pub protocol_type: String,
    pub state: &'static str,
}

#[derive(Debug, Clone, Default)]
pub struct DescribedGroup {
    pub error_code: i16,
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<DescribedMember>,
}

#[derive(Debug, Clone)]
pub struct DescribedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

pub fn state_name(state: GroupState) -> &'static str {
    match state {
        GroupState::Empty => "Empty",
        GroupState::PreparingRebalance => "PreparingRebalance",
        GroupState::CompletingRebalance => "CompletingRebalance",
        GroupState::Stable => "Stable",
        GroupState::Dead => "Dead",
    }
}

struct GroupEntry {
    group: Group,
    partition: i32,
    offsets: BTreeMap<(String, i32), OffsetValue>,
    /// When the group last became empty, for the expiry of its offsets.
    empty_since_ms: Option<i64>,
}

impl GroupEntry {
    fn new(group_id: &str, partition: i32, config: GroupConfig) -> GroupEntry {
        GroupEntry {
            group: Group::new(group_id, config),
            partition,
            offsets: BTreeMap::new(),
            empty_since_ms: None,
        }
    }

    /// Nothing worth keeping: a group that never formed and has no offsets.
    fn is_vacant(&self) -> bool {
        self.group.state == GroupState::Empty
            && self.group.generation_id == 0
            && self.group.is_empty()
            && !self.group.has_pending_members()
            && self.offsets.is_empty()
    }

    fn note_membership(&mut self, now: i64) {
        if self.group.is_empty() {
            self.empty_since_ms.get_or_insert(now);
        } else {
            self.empty_since_ms = None;
        }
    }
}

pub struct Coordinator {
    config: GroupConfig,
    groups: RefCell<HashMap<String, GroupEntry>>,
    /// The `__consumer_offsets` partitions of this shard: loaded or not.
    partitions: RefCell<HashMap<i32, bool>>,
    joins: RefCell<HashMap<RequestId, oneshot::Sender<JoinResponse>>>,
    syncs: RefCell<HashMap<RequestId, oneshot::Sender<SyncResponse>>>,
    next_request: Cell<RequestId>,
    timers_started: Cell<bool>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

type KeyValue = (Bytes, Option<Bytes>);

/// A group's partitions whose committed offsets are due to expire.
type Expired = Vec<(String, i32)>;

impl Coordinator {
    pub fn new(config: GroupConfig) -> Coordinator {
        Coordinator {
            config,
            groups: RefCell::new(HashMap::new()),
            partitions: RefCell::new(HashMap::new()),
            joins: RefCell::new(HashMap::new()),
            syncs: RefCell::new(HashMap::new()),
            next_request: Cell::new(1),
            timers_started: Cell::new(false),
        }
    }

    /// Every committed offset of the groups this shard coordinates, as
    /// (group, topic, partition, offset), for metrics.
    pub fn committed_offsets(&self) -> Vec<(String, String, i32, i64)> {
        let groups = self.groups.borrow();
        let mut out = Vec::new();
        for (group, entry) in groups.iter() {
            for ((topic, partition), value) in &entry.offsets {
                out.push((group.clone(), topic.clone(), *partition, value.offset));
            }
        }
        out
    }

    /// Starts loading the `__consumer_offsets` partitions this shard owns
    /// and has not loaded yet; forgets those it no longer has.
    pub fn adopt_partitions(self: &Rc<Self>, shard: &Rc<Shard>) {
        let meta = shard.metadata();
        let count = meta.topic(OFFSETS_TOPIC).map_or(0, |t| t.partitions);
        // Groups live with the partition's leader.
        let owned: Vec<i32> = (0..count)
            .filter(|p| shard.owner(OFFSETS_TOPIC, *p) == shard.id)
            .filter(|p| {
                shard
                    .replica(&(OFFSETS_TOPIC.to_string(), *p))
                    .is_some_and(|r| r.is_leader())
            })
            .collect();
        {
            let mut partitions = self.partitions.borrow_mut();
            partitions.retain(|p, _| owned.contains(p));
            self.groups.borrow_mut().retain(|_, e| {
                partitions.contains_key(&e.partition) || owned.contains(&e.partition)
            });
        }
        let mut new = Vec::new();
        for p in owned {
            let mut partitions = self.partitions.borrow_mut();
            if let std::collections::hash_map::Entry::Vacant(v) = partitions.entry(p) {
                v.insert(false);
                new.push(p);
            }
        }
        for p in new {
            let (this, shard) = (self.clone(), shard.clone());
            crate::rt::spawn_local(async move {
                this.load(&shard, p).await;
            })
            .detach();
        }
        if !self.timers_started.replace(true) {
            let (this, shard) = (self.clone(), shard.clone());
            crate::rt::spawn_local(async move { run_timers(this, shard).await }).detach();
        }
        let meta = shard.metadata();
        let stale = self
            .groups
            .borrow()
            .values()
            .any(|e| e.offsets.keys().any(|(t, _)| meta.topic(t).is_none()));
        if stale {
            let (this, shard) = (self.clone(), shard.clone());
            crate::rt::spawn_local(async move {
                this.forget_deleted_topics(&shard).await;
            })
            .detach();
        }
    }

    /// The partition of `group_id` if this shard coordinates it and has
    /// loaded it, or the error Kafka answers.
    fn ready(&self, shard: &Shard, group_id: &str) -> Result<i32, i16> {
        let meta = shard.metadata();
        let Some(topic) = meta.topic(OFFSETS_TOPIC) else {
            return Err(COORDINATOR_NOT_AVAILABLE);
        };
        let p = partition_for(group_id, topic.partitions);
        if shard.owner(OFFSETS_TOPIC, p) != shard.id {
            return Err(NOT_COORDINATOR);
        }
        match self.partitions.borrow().get(&p) {
            Some(true) => Ok(p),
            Some(false) => Err(COORDINATOR_LOAD_IN_PROGRESS),
            None => Err(NOT_COORDINATOR),
        }
    }

    /// At shutdown: every join and sync still waiting is told to find the
    /// coordinator again, so that connections can finish and close.
    fn release_waiting(&self) {
        let joins: Vec<_> = self.joins.borrow_mut().drain().collect();
        for (_, tx) in joins {
            let _ = tx.send(join_error(NOT_COORDINATOR, ""));
        }
        let syncs: Vec<_> = self.syncs.borrow_mut().drain().collect();
        for (_, tx) in syncs {
            let _ = tx.send(sync_error(NOT_COORDINATOR));
        }
    }

    fn next_request(&self) -> RequestId {
        let r = self.next_request.get();
        self.next_request.set(r + 1);
        r
    }

    pub async fn handle(&self, shard: &Rc<Shard>, call: GroupCall) -> GroupAnswer {
        let now = now_ms();
        match call {
            GroupCall::Join { group_id, request } => {
                GroupAnswer::Join(self.join(shard, group_id, request, now).await)
            }
            GroupCall::Sync { group_id, request } => {
                GroupAnswer::Sync(self.sync(shard, group_id, request, now).await)
            }
            GroupCall::Heartbeat {
                group_id,
                member_id,
                instance,
                generation,
            } => GroupAnswer::Code(match self.ready(shard, &group_id) {
                Err(e) => e,
                Ok(_) => match self.groups.borrow_mut().get_mut(&group_id) {
                    None => UNKNOWN_MEMBER_ID,
                    Some(e) => e
                        .group
                        .heartbeat(&member_id, instance.as_deref(), generation, now),
                },
            }),
            GroupCall::Leave { group_id, members } => {
                self.leave(shard, group_id, members, now).await
            }
            GroupCall::Commit(commit) => self.commit(shard, commit, now).await,
            GroupCall::FetchOffsets { group_id, topics } => {
                self.fetch_offsets(shard, &group_id, topics)
            }
            GroupCall::DeleteOffsets {
                group_id,
                partitions,
            } => self.delete_offsets(shard, group_id, partitions).await,
            GroupCall::List => GroupAnswer::List(self.list()),
            GroupCall::Describe(group_id) => {
                GroupAnswer::Described(self.describe(shard, &group_id))
            }
            GroupCall::Delete(group_id) => {
                GroupAnswer::Code(self.delete(shard, group_id, now).await)
            }
        }
    }

    async fn join(
        &self,
        shard: &Rc<Shard>,
        group_id: String,
        mut request: JoinRequest,
        now: i64,
    ) -> JoinResponse {
        if group_id.is_empty() {
            return join_error(INVALID_GROUP_ID, &request.member_id);
        }
        let partition = match self.ready(shard, &group_id) {
            Ok(p) => p,
            Err(e) => return join_error(e, &request.member_id),
        };
        if shard.is_shutting_down() {
            // Nothing would answer a wait: the client finds the
            // coordinator again once the broker is back.
            return join_error(NOT_COORDINATOR, &request.member_id);
        }
        let (tx, rx) = oneshot::channel();
        let r = self.next_request();
        request.request = r;
        self.joins.borrow_mut().insert(r, tx);
        let actions = {
            let mut groups = self.groups.borrow_mut();
            let entry = groups
                .entry(group_id.clone())
                .or_insert_with(|| GroupEntry::new(&group_id, partition, self.config));
            let actions = entry.group.join(request, now);
            entry.note_membership(now);
            if entry.is_vacant() {
                groups.remove(&group_id);
            }
            actions
        };
        self.deliver(shard, &group_id, actions, now).await;
        let answer = rx.await;
        // A join answered by a later event may leave its id behind.
        self.joins.borrow_mut().remove(&r);
        answer.unwrap_or_else(|_| join_error(COORDINATOR_NOT_AVAILABLE, ""))
    }

    async fn sync(
        &self,
        shard: &Rc<Shard>,
        group_id: String,
        mut request: SyncRequest,
        now: i64,
    ) -> SyncResponse {
        if group_id.is_empty() {
            return sync_error(INVALID_GROUP_ID);
        }
        if let Err(e) = self.ready(shard, &group_id) {
            return sync_error(e);
        }
        if shard.is_shutting_down() {
            return sync_error(NOT_COORDINATOR);
        }
        let (tx, rx) = oneshot::channel();
        let r = self.next_request();
        request.request = r;
        self.syncs.borrow_mut().insert(r, tx);
        let actions = match self.groups.borrow_mut().get_mut(&group_id) {
            Some(e) => e.group.sync(request, now),
            None => vec![Action::Sync(r, sync_error(UNKNOWN_MEMBER_ID))],
        };
        self.deliver(shard, &group_id, actions, now).await;
        let answer = rx.await;
        self.syncs.borrow_mut().remove(&r);
        answer.unwrap_or_else(|_| sync_error(COORDINATOR_NOT_AVAILABLE))
    }

    async fn leave(
        &self,
        shard: &Rc<Shard>,
        group_id: String,
        members: Vec<(String, Option<String>)>,
        now: i64,
    ) -> GroupAnswer {
        if let Err(e) = self.ready(shard, &group_id) {
            return GroupAnswer::Codes(e, vec![e; members.len()]);
        }
        let (codes, actions) = match self.groups.borrow_mut().get_mut(&group_id) {
            Some(e) => {
                let out = e.group.leave(&members, now);
                e.note_membership(now);
                out
            }
            None => (vec![UNKNOWN_MEMBER_ID; members.len()], Vec::new()),
        };
        self.deliver(shard, &group_id, actions, now).await;
        GroupAnswer::Codes(NONE, codes)
    }

    /// Writes what the actions require, then completes the waiting joins
    /// and syncs. A failed write fails the syncs it was to make durable.
    async fn deliver(&self, shard: &Rc<Shard>, group_id: &str, actions: Vec<Action>, now: i64) {
        let mut failed = None;
        if actions.iter().any(|a| matches!(a, Action::Persist)) {
            let record = self.groups.borrow().get(group_id).map(|e| {
                let key = RecordKey::Group {
                    group: group_id.to_string(),
                }
                .encode();
                (e.partition, key, Some(e.group.to_value(now).encode()))
            });
            if let Some((partition, key, value)) = record {
                if let Err(e) = self.write(shard, partition, vec![(key, value)], now).await {
                    failed = Some(e);
                }
            }
        }
        for action in actions {
            match action {
                Action::Join(r, response) => {
                    if let Some(tx) = self.joins.borrow_mut().remove(&r) {
                        let _ = tx.send(response);
                    }
                }
                Action::Sync(r, mut response) => {
                    if let Some(e) = failed.filter(|_| response.error_code == NONE) {
                        response = sync_error(e);
                    }
                    if let Some(tx) = self.syncs.borrow_mut().remove(&r) {
                        let _ = tx.send(response);
                    }
                }
                Action::Persist => {}
            }
        }
    }

    /// Appends records to a partition of `__consumer_offsets`, returning
    /// once the log's fsync policy covers them and the ISR has them.
    async fn write(
        &self,
        shard: &Shard,
        partition: i32,
        records: Vec<KeyValue>,
        now: i64,
    ) -> Result<(), i16> {
        let tp = (OFFSETS_TOPIC.to_string(), partition);
        let Some(replica) = shard.replica(&tp).filter(|r| r.is_leader()) else {
            return Err(NOT_COORDINATOR);
        };
        let batch = encode_batch(records, now).map_err(|e| {
            tracing::error!("encoding a {OFFSETS_TOPIC} batch failed: {e}");
            UNKNOWN_SERVER_ERROR
        })?;
        // As Kafka: group state is written with acks=all.
        match replica.append_as_leader(&batch).await {
            Ok(_) => {
                shard.appended.notify();
                let end = replica.log().log_end_offset();
                crate::partition::await_high_watermark(
                    shard,
                    &tp,
                    &replica,
                    end,
                    OFFSETS_COMMIT_TIMEOUT,
                )
                .await
                .map_err(|_| NOT_COORDINATOR)
            }
            Err(replication::log_replica::ReplicaError::NotLeader) => Err(NOT_COORDINATOR),
            Err(replication::log_replica::ReplicaError::Storage(
                storage::StorageError::InvalidBatch(e),
            )) => {
                tracing::warn!(partition, "{OFFSETS_TOPIC} refused a batch: {e}");
                Err(INVALID_COMMIT_OFFSET_SIZE)
            }
            Err(e) => {
                tracing::warn!(partition, "writing to {OFFSETS_TOPIC} failed: {e}");
                Err(COORDINATOR_NOT_AVAILABLE)
            }
        }
    }

    fn list(&self) -> Vec<ListedGroup> {
        let loaded = self.partitions.borrow();
        let mut out: Vec<ListedGroup> = self
            .groups
            .borrow()
            .iter()
            .filter(|(_, e)| loaded.get(&e.partition) == Some(&true))
            .map(|(id, e)| ListedGroup {
                group_id: id.clone(),
                protocol_type: e.group.protocol_type.clone().unwrap_or_default(),
                state: state_name(e.group.state),
            })
            .collect();
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out
    }

    fn describe(&self, shard: &Shard, group_id: &str) -> DescribedGroup {
        if let Err(e) = self.ready(shard, group_id) {
            return DescribedGroup {
                error_code: e,
                state: "",
                ..DescribedGroup::default()
            };
        }
        let groups = self.groups.borrow();
        let Some(entry) = groups.get(group_id) else {
            return DescribedGroup {
                error_code: NONE,
                state: "Dead",
                ..DescribedGroup::default()
            };
        };
        let g = &entry.group;
        let protocol = g.protocol_name.clone().unwrap_or_default();
        // Kafka hands out member metadata only once the group is stable.
        let stable = g.state == GroupState::Stable;
        DescribedGroup {
            error_code: NONE,
            state: state_name(g.state),
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: protocol.clone(),
            members: g
                .members()
                .map(|m| DescribedMember {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: if stable {
                        m.metadata(&protocol)
                    } else {
                        Bytes::new()
                    },
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        }
    }

    /// Session and rebalance timeouts of every group whose time has come.
    async fn tick(&self, shard: &Rc<Shard>, now: i64) {
        let due: Vec<String> = self
            .groups
            .borrow()
            .iter()
            .filter(|(_, e)| e.group.next_deadline().is_some_and(|d| d <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for group_id in due {
            let actions = match self.groups.borrow_mut().get_mut(&group_id) {
                Some(e) => {
                    let actions = e.group.tick(now);
                    e.note_membership(now);
                    actions
                }
                None => continue,
            };
            self.deliver(shard, &group_id, actions, now).await;
        }
    }
}

/// One uncompressed record batch of keyed records (offsets from 0: the
/// log assigns the real ones).
fn encode_batch(records: Vec<KeyValue>, now: i64) -> Result<Bytes, String> {
    crate::batch::encode(
        records
            .into_iter()
            .map(|(key, value)| crate::batch::NewRecord {
                key: Some(key),
                value,
                timestamp_ms: now,
            })
            .collect(),
    )
}

/// The coordinator's clock: group timers every `TICK`, offset expiry every
/// `offsets_retention_check_interval_ms`, until shutdown.
async fn run_timers(coordinator: Rc<Coordinator>, shard: Rc<Shard>) {
    let check_every = shard.config.offsets_retention_check_interval_ms as i64;
    let retention = shard.config.offsets_retention_ms;
    let mut next_expiry = now_ms() + check_every;
    loop {
        let woke = shard.nap(TICK).await;
        if !woke {
            coordinator.release_waiting();
            return;
        }
        let now = now_ms();
        coordinator.tick(&shard, now).await;
        if now >= next_expiry {
            next_expiry = now + check_every;
            coordinator.expire_offsets(&shard, retention, now).await;
        }
    }
}

mod offsets;

mod load;

#[cfg(test)]
mod tests {
    use super::offsets::subscribed_topics;
    use super::*;

    #[test]
    fn subscriptions_are_read_without_trusting_counts() {
        let mut b = vec![0, 1, 0, 0, 0, 2, 0, 1, b'a', 0, 2, b'b', b'c'];
        assert_eq!(
            subscribed_topics(&b),
            Some(vec!["a".to_string(), "bc".to_string()])
        );
        b[5] = 99;
        assert_eq!(subscribed_topics(&b), None);
        assert_eq!(subscribed_topics(&[0xff; 3]), None);
    }

    #[test]
    fn batches_decode_back_to_their_records() {
        let key = RecordKey::Group { group: "g".into() }.encode();
        let value = Bytes::from_static(b"v");
        let records = vec![
            (key.clone(), None),
            (key.clone(), Some(value.clone())),
            (key.clone(), None),
        ];
        let batch = encode_batch(records, 5).expect("encode");
        let header = storage::batch::validate(&batch).expect("one valid batch");
        assert_eq!(header.base_sequence, -1);
        let mut buf = batch;
        let set = RecordBatchDecoder::decode(&mut buf).expect("decode");
        assert!(buf.is_empty(), "everything in one batch");
        assert_eq!(set.records.len(), 3);
        assert_eq!(set.records[0].key.as_ref(), Some(&key));
        assert_eq!(set.records[0].value, None);
        assert_eq!(set.records[1].value, Some(value));
    }
}
