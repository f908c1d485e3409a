//! The controller quorum: cluster metadata (nodes, topics, configs,
//! partition states) as a replicated log, run by openraft 0.10 on glommio.
//!
//! - `runtime`, `sync`: openraft's `AsyncRuntime` on a glommio executor,
//!   with single-threaded channels (no tokio).
//! - `metadata`: the commands and `ClusterMetadata`, applied as a pure
//!   function of the log.
//! - `state_machine`: openraft's state machine over it, snapshots, and the
//!   watch through which the rest of the broker sees applied metadata.
//! - `log_store`: the Raft log, written once over a `Persistence`: in
//!   memory (`MemLogStore`, tests) or in files (`file_log::FileLogStore`).
//! - `rpc`: the RPCs between controller nodes, written once: the messages,
//!   openraft's client over any `Transport`, and the dispatch of a request
//!   to the local `Raft`.
//! - `network`: an in-process transport for tests.
//! - `tcp`: the real transport, openraft's RPCs between controller nodes
//!   over TCP, peers found by their `BasicNode` address.
//! - `Controller`: one node's handle: submit a command, watch the
//!   metadata, learn the leader.
//!
//! A controller node lives on one executor (openraft's `single-threaded`
//! feature): its `Raft`, storage and state machine are `!Send`.

mod files;
pub mod liveness;
pub mod log_store;
pub mod metadata;
pub mod network;
mod rpc;
pub mod runtime;
pub mod state_machine;
pub mod sync;
pub mod tcp;

use std::rc::Rc;
use std::sync::Arc;

use openraft::async_runtime::WatchReceiver;
use openraft::storage::RaftLogStorage;
use openraft::type_config::alias;
use openraft::{BasicNode, Config, Raft, RaftNetworkFactory};

/// The file log, at the path it has always had.
pub use log_store::file_log;
pub use metadata::{
    AclRecord, Applied, ClusterMetadata, Command, CommandResult, MetadataError, ScramRecord,
};
pub use runtime::GlommioRuntime;
pub use state_machine::{AppliedMetadata, MetadataStateMachine, MetadataWatch};

/// A controller's id in the quorum. Controllers and brokers share the node
/// id space in a combined deployment; openraft wants 64 bits.
pub type ControllerId = u64;

openraft::declare_raft_types!(
    /// openraft's types for the controller quorum.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = ControllerId,
        Node = BasicNode,
        AsyncRuntime = GlommioRuntime,
);

pub type LogId = alias::LogIdOf<TypeConfig>;
pub type Vote = alias::VoteOf<TypeConfig>;
pub type Entry = alias::EntryOf<TypeConfig>;
pub type StoredMembership = alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = alias::SnapshotOf<TypeConfig, Vec<u8>>;
pub type ControllerRaft = Raft<TypeConfig, MetadataStateMachine>;

/// Why a submitted command did not produce an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum SubmitError {
    /// This node does not lead; `leader` does, when known. Send it there.
    #[error("not the controller leader (leader: {leader:?})")]
    NotLeader { leader: Option<ControllerId> },
    /// The entry was appended but leadership changed before it committed:
    /// it may or may not apply. Commands are idempotent or compare-and-set
    /// (topic ids, partition epochs), so a retry is safe.
    #[error("leadership changed before the command committed (leader: {leader:?})")]
    Unknown { leader: Option<ControllerId> },
    /// The controller stopped or its storage failed.
    #[error("controller stopped: {0}")]
    Stopped(String),
}

/// Timing a controller quorum runs with: heartbeats every 50 ms and an
/// election after 300 to 600 ms of silence, so that a controller failover
/// takes under a second (KRaft waits 1 s before it even starts one).
pub fn default_config() -> Config {
    Config {
        cluster_name: "sluice-controller".into(),
        heartbeat_interval: 50,
        election_timeout_min: 300,
        election_timeout_max: 600,
        ..Default::default()
    }
}

/// How long a leader counts itself leader without a quorum's
/// acknowledgement: twice the longest election timeout, by when the others
/// have elected another.
pub const QUORUM_LEASE: std::time::Duration = std::time::Duration::from_millis(1_200);

/// The leader a node's metrics name, except itself when it has not heard
/// from a quorum within `QUORUM_LEASE` (see `Controller::leader`).
pub(crate) fn known_leader(m: &openraft::RaftMetrics<TypeConfig>) -> Option<ControllerId> {
    let leader = m.current_leader?;
    if leader == m.id && m.membership_config.membership().voter_ids().count() > 1 {
        let fresh = m
            .last_quorum_acked
            .as_ref()
            .is_some_and(|at| at.elapsed() < QUORUM_LEASE);
        if !fresh {
            return None;
        }
    }
    Some(leader)
}

/// One controller node: its Raft and the watch on its applied metadata.
#[derive(Clone)]
pub struct Controller {
    pub id: ControllerId,
    pub raft: ControllerRaft,
    pub metadata: MetadataWatch,
    /// Heartbeats heard while leading (see `liveness`).
    pub liveness: Rc<liveness::Liveness>,
}

impl Controller {
    /// Starts a controller on the current executor.
    pub async fn start<LS, N>(
        id: ControllerId,
        config: Arc<Config>,
        network: N,
        log_store: LS,
        state_machine: (MetadataStateMachine, MetadataWatch),
    ) -> Result<Controller, SubmitError>
    where
        LS: RaftLogStorage<TypeConfig>,
        N: RaftNetworkFactory<TypeConfig>,
        N::Network: openraft::network::NetSnapshot<TypeConfig, SnapshotData = Vec<u8>>,
    {
        let (sm, metadata) = state_machine;
        let raft = Raft::new(id, config, network, log_store, sm)
            .await
            .map_err(|e| SubmitError::Stopped(e.to_string()))?;
        Ok(Controller {
            id,
            raft,
            metadata,
            liveness: Rc::default(),
        })
    }

    /// Proposes `command` and waits until it is committed and applied
    /// here; the answer is what the state machine said.
    pub async fn submit(&self, command: Command) -> Result<CommandResult, SubmitError> {
        self.submit_indexed(command).await.map(|(_, r)| r)
    }

    /// As `submit`, with the log index the command applied at, so that
    /// another node can wait until its own metadata has reached it.
    pub async fn submit_indexed(
        &self,
        command: Command,
    ) -> Result<(u64, CommandResult), SubmitError> {
        rpc::submit(&self.raft, command).await
    }

    /// Forms the quorum of `voters` (id, controller address) if this
    /// controller has never been part of one; a no-op otherwise.
    pub async fn initialize(&self, voters: &[(ControllerId, String)]) -> Result<(), SubmitError> {
        use openraft::errors::{InitializeError, RaftError};
        if self
            .raft
            .is_initialized()
            .await
            .map_err(|e| SubmitError::Stopped(e.to_string()))?
        {
            return Ok(());
        }
        let members: std::collections::BTreeMap<ControllerId, BasicNode> = voters
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr.clone())))
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(SubmitError::Stopped(e.to_string())),
        }
    }

    /// The leader this node knows of. A leader that has not heard from a
    /// quorum for `QUORUM_LEASE` does not count itself: it may be cut off,
    /// and another may lead by now (KRaft's check-quorum), so it neither
    /// fences brokers nor tells its own broker that all is well.
    pub fn leader(&self) -> Option<ControllerId> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        known_leader(&m)
    }

    /// The address of a controller in the current membership.
    pub fn address_of(&self, id: ControllerId) -> Option<String> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        metrics
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
    }

    /// The metadata applied here so far.
    pub fn applied(&self) -> AppliedMetadata {
        self.metadata.current()
    }
}

#[cfg(test)]
mod tests {
    use super::GlommioRuntime;

    #[test]
    fn glommio_runtime_passes_openraft_conformance_suite() {
        openraft::testing::runtime::Suite::<GlommioRuntime>::test_all();
    }
}
