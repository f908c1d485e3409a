//! An in-process network between controllers, for tests: a `Router` that
//! any number of nodes on any number of glommio executors share. Each node
//! serves the RPCs addressed to it on its own executor; requests and
//! replies cross as serde_json bytes, as they would over TCP, so every
//! message type is known to round-trip. A test can cut a node off
//! (`isolate`) and reconnect it (`heal`), or take it off the network
//! (`unregister`, when it stops).
//!
//! `tcp` implements the same openraft traits over TCP, with these same
//! `Request` and `Reply` messages and the same dispatch to the local Raft.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use futures_channel::{mpsc, oneshot};
use futures_util::StreamExt;
use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{AsyncRuntime, BasicNode, OptionalSend};
use serde::{Deserialize, Serialize};

use super::liveness::Liveness;
use super::runtime::GlommioRuntime;
use super::{
    Command, CommandResult, ControllerId, ControllerRaft, Snapshot, SnapshotMeta, SubmitError,
    TypeConfig, Vote,
};
use crate::NodeId;
use openraft::async_runtime::WatchReceiver;

/// An RPC as it crosses between nodes (here and in `tcp`).
#[derive(Serialize, Deserialize)]
pub(super) enum Request {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    Snapshot {
        vote: Vote,
        meta: SnapshotMeta,
        data: Vec<u8>,
    },
    /// A command proposed through this node, which must lead.
    Submit(Command),
    /// A broker's heartbeat to the controller leader.
    Heartbeat {
        node: NodeId,
    },
    /// A node that is not a voter asks to follow the log as a learner.
    Join {
        node: ControllerId,
        addr: String,
    },
}

/// The answer to a `Request`.
#[derive(Serialize, Deserialize)]
pub(super) enum Reply {
    Append(AppendEntriesResponse<TypeConfig>),
    Vote(VoteResponse<TypeConfig>),
    Snapshot(SnapshotResponse<TypeConfig>),
    /// The log index the command applied at and its result.
    Submitted(Result<(u64, CommandResult), SubmitError>),
    /// The leader's last applied log index: a node that was cut off is
    /// current again once it has applied up to there.
    Heartbeat(Result<u64, SubmitError>),
    Joined(Result<(), SubmitError>),
    /// The receiving node could not serve it (stopped, storage failure).
    Failed(String),
}

struct Envelope {
    request: Vec<u8>,
    reply: oneshot::Sender<Vec<u8>>,
}

#[derive(Default)]
struct Routes {
    nodes: BTreeMap<ControllerId, mpsc::UnboundedSender<Envelope>>,
    isolated: BTreeSet<ControllerId>,
}

/// The shared switchboard. Cheap to clone, `Send`.
#[derive(Clone, Default)]
pub struct Router {
    routes: Arc<Mutex<Routes>>,
}

impl Router {
    pub fn new() -> Router {
        Router::default()
    }

    fn routes(&self) -> MutexGuard<'_, Routes> {
        // A panic elsewhere while holding the lock leaves the map intact.
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The network factory node `from` gives to its `Raft`.
    pub fn network(&self, from: ControllerId) -> RouterNetwork {
        RouterNetwork {
            router: self.clone(),
            from,
        }
    }

    /// Serves RPCs addressed to `node` with `raft`, in tasks on the current
    /// executor, until the node is unregistered.
    pub fn serve(&self, node: ControllerId, raft: ControllerRaft) {
        let (tx, mut rx) = mpsc::unbounded::<Envelope>();
        self.routes().nodes.insert(node, tx);
        glommio::spawn_local(async move {
            while let Some(env) = rx.next().await {
                let raft = raft.clone();
                // One task per request: a snapshot being installed must not
                // hold up votes and heartbeats.
                glommio::spawn_local(async move {
                    let reply = handle(&raft, &env.request).await;
                    let bytes = serde_json::to_vec(&reply).unwrap_or_default();
                    let _ = env.reply.send(bytes);
                })
                .detach();
            }
        })
        .detach();
    }

    /// Takes `node` off the network: RPCs to it fail as unreachable.
    pub fn unregister(&self, node: ControllerId) {
        self.routes().nodes.remove(&node);
    }

    /// Cuts every link of `node`, both ways.
    pub fn isolate(&self, node: ControllerId) {
        self.routes().isolated.insert(node);
    }

    pub fn heal(&self, node: ControllerId) {
        self.routes().isolated.remove(&node);
    }

    fn link_up(&self, from: ControllerId, to: ControllerId) -> bool {
        let routes = self.routes();
        !routes.isolated.contains(&from) && !routes.isolated.contains(&to)
    }

    async fn call(
        &self,
        from: ControllerId,
        to: ControllerId,
        request: &Request,
    ) -> Result<Reply, String> {
        let bytes = serde_json::to_vec(request).map_err(|e| format!("encode: {e}"))?;
        let rx = {
            if !self.link_up(from, to) {
                return Err(format!("link {from} -> {to} is cut"));
            }
            let routes = self.routes();
            let Some(tx) = routes.nodes.get(&to) else {
                return Err(format!("node {to} is not on the network"));
            };
            let (reply, rx) = oneshot::channel();
            tx.unbounded_send(Envelope {
                request: bytes,
                reply,
            })
            .map_err(|_| format!("node {to} stopped serving"))?;
            rx
        };
        let bytes = rx
            .await
            .map_err(|_| format!("node {to} dropped the request"))?;
        // A link cut while the request was in flight loses the answer.
        if !self.link_up(from, to) {
            return Err(format!("link {from} -> {to} is cut"));
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("decode: {e}"))
    }
}

async fn handle(raft: &ControllerRaft, request: &[u8]) -> Reply {
    match serde_json::from_slice(request) {
        Ok(request) => dispatch(raft, None, request).await,
        Err(e) => Reply::Failed(format!("decode: {e}")),
    }
}

/// Serves `request` with the local `raft`; a refusal by Raft (it stopped,
/// its storage failed) becomes `Reply::Failed`, which the caller reports to
/// its own Raft as the target being unreachable.
pub(super) async fn dispatch(
    raft: &ControllerRaft,
    liveness: Option<&Liveness>,
    request: Request,
) -> Reply {
    match request {
        Request::Submit(command) => {
            let metrics = raft.metrics().borrow_watched().clone();
            // A leader cut off from its quorum does not count (check-quorum).
            let leader = super::known_leader(&metrics);
            if leader != Some(metrics.id) {
                return Reply::Submitted(Err(SubmitError::NotLeader { leader }));
            }
            Reply::Submitted(submit(raft, command).await)
        }
        Request::Join { node, addr } => {
            let metrics = raft.metrics().borrow_watched().clone();
            let leader = super::known_leader(&metrics);
            if leader != Some(metrics.id) {
                return Reply::Joined(Err(SubmitError::NotLeader { leader }));
            }
            let voter = metrics
                .membership_config
                .membership()
                .voter_ids()
                .any(|v| v == node);
            if voter {
                return Reply::Joined(Ok(()));
            }
            // Not blocking: the learner catches up on its own; the caller
            // waits for the log to reach it.
            match raft.add_learner(node, BasicNode::new(addr), false).await {
                Ok(_) => Reply::Joined(Ok(())),
                Err(e) => Reply::Joined(Err(SubmitError::Stopped(e.to_string()))),
            }
        }
        Request::Heartbeat { node } => {
            let metrics = raft.metrics().borrow_watched().clone();
            // A leader cut off from its quorum must not tell brokers on
            // its side that all is well.
            let leader = super::known_leader(&metrics);
            if leader != Some(metrics.id) {
                return Reply::Heartbeat(Err(SubmitError::NotLeader { leader }));
            }
            match liveness {
                Some(l) => {
                    l.heartbeat(node);
                    let applied = metrics.last_applied.map_or(0, |l| l.index);
                    Reply::Heartbeat(Ok(applied))
                }
                None => Reply::Failed("this controller tracks no liveness".into()),
            }
        }
        Request::Append(rpc) => match raft.append_entries(rpc).await {
            Ok(r) => Reply::Append(r),
            Err(e) => Reply::Failed(e.to_string()),
        },
        Request::Vote(rpc) => match raft.vote(rpc).await {
            Ok(r) => Reply::Vote(r),
            Err(e) => Reply::Failed(e.to_string()),
        },
        Request::PreVote(rpc) => match raft.pre_vote(rpc).await {
            Ok(r) => Reply::Vote(r),
            Err(e) => Reply::Failed(e.to_string()),
        },
        Request::Snapshot { vote, meta, data } => {
            let snapshot = Snapshot {
                meta,
                snapshot: data,
            };
            match raft.install_full_snapshot(vote, snapshot).await {
                Ok(r) => Reply::Snapshot(r),
                Err(e) => Reply::Failed(e.to_string()),
            }
        }
    }
}

/// Node `from`'s network factory.
pub struct RouterNetwork {
    router: Router,
    from: ControllerId,
}

impl RaftNetworkFactory<TypeConfig> for RouterNetwork {
    type Network = RouterConnection;

    async fn new_client(&mut self, target: ControllerId, _node: &BasicNode) -> RouterConnection {
        RouterConnection {
            router: self.router.clone(),
            from: self.from,
            target,
        }
    }
}

/// Node `from`'s connection to `target`.
pub struct RouterConnection {
    router: Router,
    from: ControllerId,
    target: ControllerId,
}

impl RouterConnection {
    /// Sends `request` and waits for the reply, at most `option`'s hard
    /// deadline (openraft does not bound append RPCs itself).
    async fn call(
        &self,
        request: Request,
        option: &RPCOption,
    ) -> Result<Reply, Unreachable<TypeConfig>> {
        let call = self.router.call(self.from, self.target, &request);
        match GlommioRuntime::timeout(option.hard_ttl(), call).await {
            Ok(Ok(Reply::Failed(e))) | Ok(Err(e)) => Err(Unreachable::from_string(e)),
            Ok(Ok(reply)) => Ok(reply),
            Err(_) => Err(Unreachable::from_string(format!(
                "no answer from {} in {:?}",
                self.target,
                option.hard_ttl()
            ))),
        }
    }
}

fn unexpected<T>(target: ControllerId) -> Result<T, Unreachable<TypeConfig>> {
    Err(Unreachable::from_string(format!(
        "node {target} answered with the wrong reply"
    )))
}

impl RaftNetworkV2<TypeConfig> for RouterConnection {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(Request::Append(rpc), &option).await? {
            Reply::Append(r) => Ok(r),
            _ => Ok(unexpected(self.target)?),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(Request::Vote(rpc), &option).await? {
            Reply::Vote(r) => Ok(r),
            _ => Ok(unexpected(self.target)?),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(Request::PreVote(rpc), &option).await? {
            Reply::Vote(r) => Ok(r),
            _ => Ok(unexpected(self.target)?),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let request = Request::Snapshot {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot,
        };
        let call = self.call(request, &option);
        match GlommioRuntime::select2(Box::pin(cancel), Box::pin(call)).await {
            openraft::async_runtime::Select2::First(closed) => Err(StreamingError::Closed(closed)),
            openraft::async_runtime::Select2::Second(Ok(Reply::Snapshot(r))) => Ok(r),
            openraft::async_runtime::Select2::Second(Ok(_)) => Ok(unexpected(self.target)?),
            openraft::async_runtime::Select2::Second(Err(e)) => Err(StreamingError::Unreachable(e)),
        }
    }
}

/// Proposes `command` to the local Raft, which leads.
pub(super) async fn submit(
    raft: &ControllerRaft,
    command: Command,
) -> Result<(u64, CommandResult), SubmitError> {
    use openraft::errors::{ClientWriteError, RaftError};
    match raft.client_write(command).await {
        Ok(r) => Ok((r.log_id.index, r.data)),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(SubmitError::NotLeader {
                leader: f.leader_id,
            })
        }
        Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(f))) => {
            Err(SubmitError::Unknown {
                leader: f.leader_id,
            })
        }
        Err(e) => Err(SubmitError::Stopped(e.to_string())),
    }
}
