//! The controller's RPCs, written once for every transport: the messages
//! that cross between nodes (`Request`, `Reply`), the one thing a transport
//! does (`Transport`: carry a request to one peer, bring back its reply),
//! and openraft's client on top of it (`RpcClient`), where deadlines, the
//! cancelled snapshot and the mapping to openraft's errors live.
//!
//! - `dispatch`: the serving side, a request handed to the local `Raft`.
//!
//! The in-process `network::Router` and the TCP `tcp::client` are the two
//! transports; each is only a way to move the same encoded messages.

mod dispatch;

use std::future::Future;
use std::time::Duration;

use openraft::async_runtime::Select2;
use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{AsyncRuntime, OptionalSend};
use serde::{Deserialize, Serialize};

use super::{
    Command, CommandResult, ControllerId, GlommioRuntime, Snapshot, SnapshotMeta, SubmitError,
    TypeConfig, Vote,
};
use crate::NodeId;

pub(crate) use dispatch::{dispatch, submit};

/// An RPC as it crosses between nodes.
#[derive(Serialize, Deserialize)]
pub enum Request {
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
pub enum Reply {
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

/// A way to reach one peer: carries `request` there and brings back the
/// peer's reply. Unbounded in time (`call` bounds it); an error says why
/// no reply can come (link cut, peer gone, dial refused).
pub trait Transport {
    /// The peer this transport reaches.
    fn target(&self) -> ControllerId;

    fn send(&self, request: Request) -> impl Future<Output = Result<Reply, String>>;
}

/// Sends `request` over `transport` and waits at most `ttl` for the reply.
/// A peer that answers `Reply::Failed` failed the call.
pub async fn call<T: Transport>(
    transport: &T,
    request: Request,
    ttl: Duration,
) -> Result<Reply, String> {
    let target = transport.target();
    match GlommioRuntime::timeout(ttl, transport.send(request)).await {
        Ok(Ok(Reply::Failed(e))) => Err(format!("node {target} failed the request: {e}")),
        Ok(reply) => reply,
        Err(_) => Err(format!("no answer from node {target} in {ttl:?}")),
    }
}

/// openraft's client for one peer, over any transport. Every RPC is
/// bounded by openraft's `soft_ttl` for it, which openraft asks transports
/// to keep to so that they fail before it cancels them at `hard_ttl`; a
/// failure of any kind is openraft's `Unreachable`, so that it backs off.
pub struct RpcClient<T> {
    transport: T,
}

impl<T: Transport> RpcClient<T> {
    pub(crate) fn new(transport: T) -> RpcClient<T> {
        RpcClient { transport }
    }

    async fn call(
        &self,
        request: Request,
        option: &RPCOption,
    ) -> Result<Reply, Unreachable<TypeConfig>> {
        call(&self.transport, request, option.soft_ttl())
            .await
            .map_err(Unreachable::from_string)
    }

    fn unexpected<R>(&self) -> Result<R, Unreachable<TypeConfig>> {
        Err(Unreachable::from_string(format!(
            "node {} answered with the wrong reply",
            self.transport.target()
        )))
    }
}

impl<T: Transport + 'static> RaftNetworkV2<TypeConfig> for RpcClient<T> {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(Request::Append(rpc), &option).await? {
            Reply::Append(r) => Ok(r),
            _ => Ok(self.unexpected()?),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(Request::Vote(rpc), &option).await? {
            Reply::Vote(r) => Ok(r),
            _ => Ok(self.unexpected()?),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(Request::PreVote(rpc), &option).await? {
            Reply::Vote(r) => Ok(r),
            _ => Ok(self.unexpected()?),
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
            Select2::First(closed) => Err(StreamingError::Closed(closed)),
            Select2::Second(Ok(Reply::Snapshot(r))) => Ok(r),
            Select2::Second(Ok(_)) => Ok(self.unexpected()?),
            Select2::Second(Err(e)) => Err(StreamingError::Unreachable(e)),
        }
    }
}
