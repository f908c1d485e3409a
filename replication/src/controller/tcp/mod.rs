//! The controller quorum's transport over TCP: openraft's RPCs (append
//! entries, vote, pre-vote, full snapshot) between controller nodes, each
//! node serving the RPCs addressed to it (`TcpServer`) and calling its
//! peers (`TcpNetwork`, the `RaftNetworkFactory` its `Raft` is given). The
//! RPCs themselves are `rpc`'s; this only carries them.
//!
//! - `wire`: the frames, `[u32 LE length][u16 LE version][u16 reserved]
//!   [serde_json payload]` as in the replication links, with the size limit
//!   checked before anything is allocated.
//! - `client`: one persistent connection from a node to each peer, shared
//!   by every openraft client for that peer, requests multiplexed by
//!   correlation id, redialled with backoff when it breaks.
//! - `server`: the accept loop and one task per connection, handing each
//!   request to `rpc::dispatch` as the in-process `network::Router` does.
//!
//! Peers are found by the `addr` of their `BasicNode` in the membership
//! (`"ip:port"`; a host name is resolved at each dial, blocking the
//! executor thread for the lookup, so deployments should prefer
//! addresses). A connection opens with a `Hello` naming the cluster, the
//! caller and the node it means to reach: a node refuses a connection
//! meant for another node or cluster, so a stale address never delivers
//! votes to the wrong node. `start_controller` puts the pieces together
//! for a node on its shard.
//!
//! Every RPC is bounded by openraft's `soft_ttl` for it. Known limits: a
//! full snapshot travels as one frame, its bytes a JSON array (about four
//! times their size), within openraft's `install_snapshot_timeout` (200 ms
//! by default), and heartbeats queue behind it on the one connection; a
//! metadata snapshot of many megabytes over a slow network needs a longer
//! timeout or a binary, chunked encoding.

mod client;
mod server;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use net::tls_stream::{LinkStream, PeerTls};
use openraft::storage::RaftLogStorage;

use crate::controller::runtime::TcpStream;

/// A connection between controllers, plain or under mutual TLS.
type Stream = LinkStream<TcpStream>;

use super::{
    Controller, ControllerId, MetadataStateMachine, MetadataWatch, SubmitError, TypeConfig,
};

pub use client::{ControllerClient, TcpConnection, TcpNetwork};
pub use server::{ServerHandle, ShutdownTimedOut, TcpServer};
pub use wire::TCP_SCHEMA_VERSION;

/// Limits and timings of the controller transport. Every queue, frame and
/// wait of the transport is bounded by one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpConfig {
    /// Sent in every `Hello`; a node refuses a connection from another
    /// cluster.
    pub cluster: String,
    /// The largest frame sent or accepted. A full snapshot travels in one
    /// frame, so this bounds the metadata snapshot too (JSON, so about
    /// four times its size on disk).
    pub frame_bytes_max: usize,
    /// Connections a node's server holds open at once; more are accepted
    /// and closed at once, with a log line, rather than left in the
    /// backlog.
    pub connections_max: usize,
    /// Requests a server connection serves at once (it stops reading
    /// beyond that), and requests a client has outstanding to one peer.
    pub requests_in_flight_max: usize,
    /// A dial that takes longer is abandoned (and retried after backoff).
    pub connect_timeout_ms: u64,
    /// A server connection that does not say `Hello` within this is
    /// closed.
    pub hello_timeout_ms: u64,
    /// A server connection with no frame for this long is closed; the
    /// client redials on its next RPC.
    pub idle_timeout_ms: u64,
    /// Backoff between failed dials to one peer: doubles from min to max,
    /// back to min once a reply arrives.
    pub reconnect_backoff_min_ms: u64,
    pub reconnect_backoff_max_ms: u64,
    /// How long `ServerHandle::shutdown` waits for its tasks to end.
    pub shutdown_timeout_ms: u64,
    /// Mutual TLS on every connection (the dial's TLS handshake counts in
    /// `connect_timeout_ms`, the server's in `hello_timeout_ms`); `None`:
    /// plain TCP.
    pub tls: Option<Arc<PeerTls>>,
}

impl Default for TcpConfig {
    fn default() -> TcpConfig {
        TcpConfig {
            cluster: "sluice-controller".into(),
            frame_bytes_max: 64 << 20,
            connections_max: 64,
            requests_in_flight_max: 64,
            connect_timeout_ms: 1_000,
            hello_timeout_ms: 5_000,
            idle_timeout_ms: 300_000,
            reconnect_backoff_min_ms: 50,
            reconnect_backoff_max_ms: 1_000,
            shutdown_timeout_ms: 5_000,
            tls: None,
        }
    }
}

/// A `TcpConfig` value out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("controller transport: {key} = {value} is not allowed ({allowed})")]
pub struct TcpConfigError {
    pub key: &'static str,
    pub value: String,
    pub allowed: &'static str,
}

impl TcpConfig {
    /// Rejects values that would make the transport useless or unbounded.
    pub fn validate(&self) -> Result<(), TcpConfigError> {
        fn check(
            ok: bool,
            key: &'static str,
            value: impl ToString,
            allowed: &'static str,
        ) -> Result<(), TcpConfigError> {
            if ok {
                return Ok(());
            }
            Err(TcpConfigError {
                key,
                value: value.to_string(),
                allowed,
            })
        }
        check(
            !self.cluster.is_empty() && self.cluster.len() <= 255,
            "cluster",
            &self.cluster,
            "1 to 255 bytes",
        )?;
        check(
            (64 << 10..=u32::MAX as usize).contains(&self.frame_bytes_max),
            "frame_bytes_max",
            self.frame_bytes_max,
            "64 KiB to 4 GiB - 1",
        )?;
        check(
            (1..=4096).contains(&self.connections_max),
            "connections_max",
            self.connections_max,
            "1 to 4096",
        )?;
        check(
            (1..=4096).contains(&self.requests_in_flight_max),
            "requests_in_flight_max",
            self.requests_in_flight_max,
            "1 to 4096",
        )?;
        for (key, ms) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("hello_timeout_ms", self.hello_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("reconnect_backoff_min_ms", self.reconnect_backoff_min_ms),
            ("shutdown_timeout_ms", self.shutdown_timeout_ms),
        ] {
            check(ms > 0, key, ms, "more than 0")?;
        }
        check(
            self.reconnect_backoff_max_ms >= self.reconnect_backoff_min_ms,
            "reconnect_backoff_max_ms",
            self.reconnect_backoff_max_ms,
            "at least reconnect_backoff_min_ms",
        )
    }
}

/// What went wrong on a controller connection. A server logs it and
/// closes the connection; a client fails the RPCs in flight on it with
/// it, as openraft's `Unreachable`.
#[derive(Debug, thiserror::Error)]
pub enum TcpError {
    #[error("controller frame of {length} bytes exceeds the limit of {limit}")]
    TooLarge { length: usize, limit: usize },
    #[error("controller frame has schema version {got}; this node speaks {TCP_SCHEMA_VERSION}")]
    Version { got: u16 },
    #[error("controller frame has reserved header bits {got:#06x}; they must be zero")]
    Reserved { got: u16 },
    #[error("connection closed in the middle of a frame ({read} of {expected} bytes read)")]
    Truncated { read: usize, expected: usize },
    #[error("controller frame is not a valid message: {0}")]
    Invalid(String),
    #[error("encoding a controller frame failed: {0}")]
    Encode(String),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("controller address {addr:?} cannot be used: {reason}")]
    Address { addr: String, reason: String },
    #[error(transparent)]
    Config(#[from] TcpConfigError),
    #[error("controller transport i/o failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Why `start_controller` failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("controller transport: {0}")]
    Transport(#[from] TcpError),
    #[error("controller: {0}")]
    Controller(#[from] SubmitError),
}

/// Starts controller `id` on the current executor with the TCP transport:
/// binds `listen` first (so a bad address fails before any Raft state is
/// touched), starts the `Raft` with a `TcpNetwork`, then serves its peers.
/// Stop it with `raft.shutdown()` then `ServerHandle::shutdown()`.
///
/// The quorum is formed once, by one node, with `raft.initialize` on a
/// membership whose `BasicNode` addresses are the peers' `listen`
/// addresses as the others can reach them.
pub async fn start_controller<LS>(
    id: ControllerId,
    listen: SocketAddr,
    tcp: TcpConfig,
    raft: Arc<openraft::Config>,
    log_store: LS,
    state_machine: (MetadataStateMachine, MetadataWatch),
) -> Result<(Controller, ServerHandle), StartError>
where
    LS: RaftLogStorage<TypeConfig>,
{
    let server = TcpServer::bind(id, listen, tcp.clone())?;
    let network = TcpNetwork::new(id, tcp).map_err(TcpError::from)?;
    let controller = Controller::start(id, raft, network, log_store, state_machine).await?;
    let server = server.serve(&controller);
    Ok((controller, server))
}
