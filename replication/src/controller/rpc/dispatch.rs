//! The serving side of the controller's RPCs, the same for every
//! transport: a decoded `Request` handed to the local `Raft` (or, for
//! commands, heartbeats and joins, checked against its leadership first),
//! and the `Reply` to send back.

use openraft::async_runtime::WatchReceiver;
use openraft::BasicNode;

use super::{Reply, Request};
use crate::controller::liveness::Liveness;
use crate::controller::{
    known_leader, Command, CommandResult, ControllerRaft, Snapshot, SubmitError,
};

/// Serves `request` with the local `raft`; a refusal by Raft (it stopped,
/// its storage failed) becomes `Reply::Failed`, which the caller reports to
/// its own Raft as the target being unreachable.
pub(crate) async fn dispatch(
    raft: &ControllerRaft,
    liveness: Option<&Liveness>,
    request: Request,
) -> Reply {
    match request {
        Request::Submit(command) => {
            let metrics = raft.metrics().borrow_watched().clone();
            // A leader cut off from its quorum does not count (check-quorum).
            let leader = known_leader(&metrics);
            if leader != Some(metrics.id) {
                return Reply::Submitted(Err(SubmitError::NotLeader { leader }));
            }
            Reply::Submitted(submit(raft, command).await)
        }
        Request::Join { node, addr } => {
            let metrics = raft.metrics().borrow_watched().clone();
            let leader = known_leader(&metrics);
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
            let leader = known_leader(&metrics);
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

/// Proposes `command` to the local Raft, which leads.
pub(crate) async fn submit(
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
