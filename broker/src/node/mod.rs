//! One shard's part of the node: the shard context with the subsystems
//! that run on it (group coordinator, replication tasks, the controller on
//! shard 0, topic administration, producer ids, metrics), the messages
//! shards send each other, and the table that hands each message to its
//! subsystem. The subsystems below never name these messages: what they
//! need of other shards they ask through `cluster::Peers`, which a node
//! implements here.
//!
//! A `Node` dereferences to its `Shard`, so that handlers read shard facts
//! (`node.metadata()`, `node.config`) directly.

mod metrics;

use std::cell::RefCell;
use std::ops::Deref;
use std::rc::Rc;
use std::sync::Arc;

use crate::mesh::{Receivers, Senders};
use futures_util::future::join_all;
use replication::controller::{Command, CommandResult, SubmitError};

use crate::cluster::admin::{AdminOp, AdminOutcome, TopicAdmin};
use crate::cluster::ClusterNode;
use crate::group::coordinator::{Coordinator, GroupAnswer, GroupCall};
use crate::in_line::Started;
use crate::mesh::{Envelope, Mesh};
use crate::metadata::ClusterMetadata;
use crate::metrics::{ShardMetrics, ShardSnapshot};
use crate::partition::{PartitionRequest, PartitionResponse};
use crate::peers::{LocalFuture, Peers};
use crate::preflight::StartError;
use crate::producer_ids::ProducerIds;
use crate::replicas::Replication;
use crate::shard::Shard;

pub use metrics::gather;

/// What one shard asks of another: each variant is one subsystem's own
/// message.
pub enum ShardRequest {
    /// Work on partitions the receiving shard owns.
    Partition(PartitionRequest),
    /// Topic administration, for shard 0.
    Admin(AdminOp),
    ApplyMetadata(Arc<ClusterMetadata>),
    /// A consumer-group request, for the shard coordinating the group.
    Group(GroupCall),
    /// This node lost (true) or regained (false) the controller.
    SetIsolated(bool),
    /// A command for the controller, which shard 0 brings to its leader.
    Controller(Command),
    /// This shard's metrics, for a scrape.
    Metrics,
}

pub enum ShardResponse {
    Partition(PartitionResponse),
    Admin(Vec<AdminOutcome>),
    Applied,
    Group(GroupAnswer),
    Metrics(Box<ShardSnapshot>),
    Controller(Result<CommandResult, SubmitError>),
}

pub type ShardEnvelope = Envelope<ShardRequest, ShardResponse>;

pub struct Node {
    pub shard: Rc<Shard>,
    mesh: Mesh<ShardRequest, ShardResponse>,
    /// The consumer groups whose `__consumer_offsets` partitions this
    /// shard owns.
    pub coordinator: Rc<Coordinator>,
    /// This shard's counters; only its own thread touches them.
    pub metrics: Rc<ShardMetrics>,
    /// Shard 0's controller and cluster membership.
    pub cluster: RefCell<Option<Rc<ClusterNode>>>,
    /// Followers' fetch loops and the leaders' ISR upkeep.
    pub replication: Rc<Replication>,
    /// Topic administration (used on shard 0).
    pub admin: TopicAdmin,
    pub producer_ids: ProducerIds,
}

impl Deref for Node {
    type Target = Shard;

    fn deref(&self) -> &Shard {
        &self.shard
    }
}

impl Node {
    pub fn new(shard: Rc<Shard>, senders: Option<Senders<ShardEnvelope>>) -> Node {
        let group_config = shard.config.group_config();
        Node {
            shard,
            mesh: Mesh::new(senders),
            coordinator: Rc::new(Coordinator::new(group_config)),
            metrics: Rc::new(ShardMetrics::default()),
            cluster: RefCell::new(None),
            replication: Rc::new(Replication::default()),
            admin: TopicAdmin::default(),
            producer_ids: ProducerIds::default(),
        }
    }

    /// This node as the cluster subsystems see it.
    pub fn peers(self: &Rc<Self>) -> Rc<dyn Peers> {
        self.clone()
    }

    /// Runs `request` on shard `to`, locally when that is this shard.
    pub async fn call(self: &Rc<Self>, to: usize, request: ShardRequest) -> Option<ShardResponse> {
        if to == self.id {
            // Boxed: serving may call shards again (admin proposes through
            // shard 0), so the future's type would contain itself.
            let served: LocalFuture<'_, ShardResponse> = Box::pin(self.serve(request));
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

    /// Runs partition work on shard `to`, the owner of its partitions.
    pub async fn call_partitions(
        self: &Rc<Self>,
        to: usize,
        request: PartitionRequest,
    ) -> Option<PartitionResponse> {
        match self.call(to, ShardRequest::Partition(request)).await {
            Some(ShardResponse::Partition(r)) => Some(r),
            _ => None,
        }
    }

    /// Places partition work in line on shard `to` and returns the wait for
    /// its answer. On this shard the work is started (what it does before
    /// its first wait is done now); on another it is in that shard's
    /// channel, which it serves in arrival order. Either way it is ahead
    /// of anything this shard places there afterwards.
    pub async fn place_partitions(
        self: &Rc<Self>,
        to: usize,
        request: PartitionRequest,
    ) -> LocalFuture<'static, Option<PartitionResponse>> {
        if to == self.id {
            let node = self.clone();
            let started =
                Started::start(async move { crate::partition::serve(&node.shard, request).await })
                    .await;
            return Box::pin(async move { Some(started.finish().await) });
        }
        match self
            .mesh
            .send(self.id, to, ShardRequest::Partition(request))
            .await
        {
            Ok(sent) => Box::pin(async move {
                match sent.answer().await {
                    Ok(ShardResponse::Partition(r)) => Some(r),
                    _ => None,
                }
            }),
            Err(e) => {
                tracing::warn!(shard = self.id, "{e}");
                Box::pin(async { None })
            }
        }
    }

    /// Hands a request from another shard (or this one) to its subsystem.
    pub async fn serve(self: &Rc<Self>, request: ShardRequest) -> ShardResponse {
        match request {
            ShardRequest::Partition(r) => {
                ShardResponse::Partition(crate::partition::serve(&self.shard, r).await)
            }
            ShardRequest::Admin(op) => {
                ShardResponse::Admin(self.admin.handle(&self.shard, &**self, op).await)
            }
            ShardRequest::ApplyMetadata(meta) => {
                self.apply_metadata(meta).await;
                ShardResponse::Applied
            }
            ShardRequest::Group(call) => {
                ShardResponse::Group(self.coordinator.handle(&self.shard, call).await)
            }
            ShardRequest::Metrics => ShardResponse::Metrics(Box::new(metrics::snapshot(self))),
            ShardRequest::SetIsolated(isolated) => {
                self.shard.set_isolated(isolated);
                ShardResponse::Applied
            }
            ShardRequest::Controller(command) => {
                ShardResponse::Controller(self.submit_here(command).await)
            }
        }
    }

    /// Makes this shard match `meta`: its logs, then the subsystems that
    /// follow them (fetch loops for new followers, groups of newly led
    /// `__consumer_offsets` partitions).
    pub async fn apply_metadata(&self, meta: Arc<ClusterMetadata>) {
        crate::partition::placement::apply_metadata(&self.shard, meta).await;
        crate::replicas::start_fetchers(&self.shard, &self.replication);
        self.coordinator.adopt_partitions(&self.shard);
    }

    /// Closes every log this shard owns (flushing per the fsync policy).
    pub async fn close_logs(&self) {
        crate::partition::placement::close_logs(&self.shard).await;
    }

    /// On shard 0: starts the controller and joins the cluster.
    pub async fn start_cluster(self: &Rc<Self>, link_addrs: Vec<String>) -> Result<(), StartError> {
        crate::cluster::start(&self.shard, self.peers(), &self.cluster, link_addrs).await
    }

    /// Controlled shutdown of shard 0's cluster membership.
    pub async fn leave_cluster(&self) {
        let node = self.cluster.borrow().clone();
        crate::cluster::leave(&self.shard, node).await;
    }

    /// Serves followers' fetches on `listener` and keeps the ISR of the
    /// partitions this shard leads.
    pub fn spawn_replication(self: &Rc<Self>, listener: crate::rt::TcpListener) {
        crate::replicas::spawn(&self.shard, &self.replication, self.peers(), listener);
    }

    /// Runs `command` through this shard's controller client (shard 0).
    async fn submit_here(&self, command: Command) -> Result<CommandResult, SubmitError> {
        let node = self.cluster.borrow().clone();
        match node {
            Some(node) => node.submit(command).await,
            None => Err(SubmitError::Stopped("this node runs no controller".into())),
        }
    }

    /// Serves what other shards send this one, each request in its own
    /// task, until the mesh closes.
    pub fn spawn_mesh_receivers(self: &Rc<Self>, receivers: Receivers<ShardEnvelope>) {
        let receivers = Rc::new(receivers);
        for peer in 0..self.nr_shards {
            if peer == self.id {
                continue;
            }
            let node = self.clone();
            let receivers = receivers.clone();
            crate::rt::spawn_local(async move {
                while let Ok(Some(envelope)) = receivers.recv_from(peer).await {
                    match envelope {
                        Envelope::Request { id, from, body } => {
                            // Served in its own task so this loop never
                            // blocks and answers can flow both ways without
                            // deadlock.
                            let node = node.clone();
                            crate::rt::spawn_local(async move {
                                let answer = node.serve(body).await;
                                node.mesh.respond(from, id, answer).await;
                            })
                            .detach();
                        }
                        Envelope::Response { id, body } => node.mesh.complete(id, body),
                    }
                }
            })
            .detach();
        }
    }
}

impl Peers for Node {
    fn submit(&self, command: Command) -> LocalFuture<'_, Result<CommandResult, SubmitError>> {
        Box::pin(async move {
            if self.id == 0 {
                return self.submit_here(command).await;
            }
            match self
                .mesh
                .call(self.id, 0, ShardRequest::Controller(command))
                .await
            {
                Ok(ShardResponse::Controller(r)) => r,
                _ => Err(SubmitError::Stopped("shard 0 did not answer".into())),
            }
        })
    }

    fn apply_everywhere(&self, meta: Arc<ClusterMetadata>) -> LocalFuture<'_, ()> {
        Box::pin(async move {
            // Concurrently, so one slow shard does not hold up the rest.
            let applies: Vec<LocalFuture<'_, ()>> = (0..self.nr_shards)
                .map(|to| -> LocalFuture<'_, ()> {
                    let meta = meta.clone();
                    if to == self.id {
                        return Box::pin(self.apply_metadata(meta));
                    }
                    Box::pin(async move {
                        let asked = self
                            .mesh
                            .call(self.id, to, ShardRequest::ApplyMetadata(meta));
                        if let Err(e) = asked.await {
                            tracing::warn!(shard = self.id, "{e}");
                        }
                    })
                })
                .collect();
            join_all(applies).await;
        })
    }

    fn set_isolated_everywhere(&self, isolated: bool) -> LocalFuture<'_, ()> {
        Box::pin(async move {
            for to in 0..self.nr_shards {
                if to == self.id {
                    self.shard.set_isolated(isolated);
                } else if let Err(e) = self
                    .mesh
                    .call(self.id, to, ShardRequest::SetIsolated(isolated))
                    .await
                {
                    tracing::warn!(shard = self.id, "{e}");
                }
            }
        })
    }
}
