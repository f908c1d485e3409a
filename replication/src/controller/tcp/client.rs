//! The calling side of the controller transport: `TcpNetwork` is the
//! `RaftNetworkFactory` a node gives its `Raft`; every client it makes for
//! one peer shares that peer's single connection (`Link`), on which
//! requests are multiplexed by correlation id and answered in any order.
//! A `Peer` is the `rpc::Transport` to one node; openraft's client on top
//! of it, deadlines and error mapping included, is `rpc::RpcClient`.
//!
//! A link is dialled in a task of its own when an RPC needs it, so a slow
//! dial is not cut short by one RPC's short deadline (openraft gives an
//! append only a heartbeat interval). Dials to a peer are spaced by a
//! backoff that doubles on every dial and returns to its minimum once the
//! peer answers; while it runs, RPCs to the peer fail at once. A link that
//! breaks fails every RPC in flight on it with the reason, as openraft's
//! `Unreachable`, so that openraft backs off rather than waiting out its
//! deadlines.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use futures_channel::{mpsc, oneshot};
use futures_lite::future::or;
use futures_lite::AsyncWriteExt;
use futures_util::future::{FutureExt, Shared};
use futures_util::StreamExt;
use openraft::network::RaftNetworkFactory;
use openraft::{AsyncRuntime, BasicNode};

use super::wire::{encode, read_frame, Frame};
use super::{Stream, TcpConfig, TcpConfigError, TcpError};
use crate::controller::rpc::{call, Reply, Request, RpcClient, Transport};
use crate::controller::runtime::{spawn_local, TcpStream};
use crate::controller::{
    Command, CommandResult, Controller, ControllerId, GlommioRuntime, SubmitError, TypeConfig,
};
use crate::NodeId;
use net::tls_stream::PeerTls;

/// Node `from`'s network factory over TCP.
pub struct TcpNetwork {
    from: ControllerId,
    config: Rc<TcpConfig>,
    /// One peer (one connection) per target. A peer whose address changed
    /// in the membership is replaced; the old one closes when its last
    /// client is dropped.
    peers: BTreeMap<ControllerId, Rc<Peer>>,
}

impl TcpNetwork {
    /// The factory for node `from`. Made before its `Raft` (which takes
    /// it); it connects to nothing until openraft sends an RPC.
    pub fn new(from: ControllerId, config: TcpConfig) -> Result<TcpNetwork, TcpConfigError> {
        config.validate()?;
        Ok(TcpNetwork {
            from,
            config: Rc::new(config),
            peers: BTreeMap::new(),
        })
    }
}

impl RaftNetworkFactory<TypeConfig> for TcpNetwork {
    type Network = TcpConnection;

    async fn new_client(&mut self, target: ControllerId, node: &BasicNode) -> TcpConnection {
        let peer = match self.peers.get(&target) {
            Some(peer) if peer.addr == node.addr => peer.clone(),
            _ => {
                let peer = Rc::new(Peer::new(
                    self.from,
                    target,
                    node.addr.clone(),
                    self.config.clone(),
                ));
                self.peers.insert(target, peer.clone());
                peer
            }
        };
        RpcClient::new(peer)
    }
}

/// One openraft client for one peer, over the peer's link.
pub type TcpConnection = RpcClient<Rc<Peer>>;

/// What RPCs to one peer share.
pub struct Peer {
    from: ControllerId,
    target: ControllerId,
    addr: String,
    config: Rc<TcpConfig>,
    state: RefCell<PeerState>,
    correlation_last: Cell<u64>,
}

struct PeerState {
    link: Option<Rc<Link>>,
    /// Resolves when the dial in progress ends, either way.
    dialing: Option<Shared<oneshot::Receiver<()>>>,
    dial_not_before: Instant,
    backoff: Duration,
    /// Why the last dial failed or the last link broke.
    last_error: String,
}

impl Peer {
    fn new(from: ControllerId, target: ControllerId, addr: String, config: Rc<TcpConfig>) -> Peer {
        let backoff = Duration::from_millis(config.reconnect_backoff_min_ms);
        Peer {
            from,
            target,
            addr,
            config,
            state: RefCell::new(PeerState {
                link: None,
                dialing: None,
                dial_not_before: Instant::now(),
                backoff,
                last_error: String::new(),
            }),
            correlation_last: Cell::new(0),
        }
    }

    fn backoff_min(&self) -> Duration {
        Duration::from_millis(self.config.reconnect_backoff_min_ms)
    }

    fn backoff_max(&self) -> Duration {
        Duration::from_millis(self.config.reconnect_backoff_max_ms)
    }

    /// The link to use, dialling it if there is none.
    async fn link(self: &Rc<Self>) -> Result<Rc<Link>, String> {
        let dialing = {
            let mut st = self.state.borrow_mut();
            if let Some(link) = st.link.clone() {
                match link.broken() {
                    None => return Ok(link),
                    Some(reason) => {
                        st.last_error = reason;
                        st.link = None;
                        // A link the peer answered on was healthy: redial at
                        // once. One that broke before any answer (refused
                        // hello, peer dying) keeps the backoff growing.
                        if link.shared.replied.get() {
                            st.backoff = self.backoff_min();
                            st.dial_not_before = Instant::now();
                        }
                    }
                }
            }
            match &st.dialing {
                Some(dialing) => dialing.clone(),
                None => {
                    let now = Instant::now();
                    if now < st.dial_not_before {
                        return Err(format!(
                            "not redialling node {} at {} for {:?} (last: {})",
                            self.target,
                            self.addr,
                            st.dial_not_before - now,
                            st.last_error
                        ));
                    }
                    let (done, dialing) = oneshot::channel();
                    let dialing = dialing.shared();
                    st.dialing = Some(dialing.clone());
                    // Every dial pushes the next one back.
                    st.dial_not_before = now + st.backoff;
                    st.backoff = (st.backoff * 2).min(self.backoff_max());
                    spawn_local(dial(Rc::downgrade(self), done));
                    dialing
                }
            }
        };
        // Cancelled or completed, the dial is over; its outcome is in state.
        let _ = dialing.await;
        let st = self.state.borrow();
        match &st.link {
            Some(link) if link.broken().is_none() => Ok(link.clone()),
            _ => Err(st.last_error.clone()),
        }
    }

    fn hello(&self) -> Result<Vec<u8>, TcpError> {
        let hello = Frame::Hello {
            cluster: self.config.cluster.clone(),
            from: self.from,
            to: self.target,
        };
        encode(&hello, self.config.frame_bytes_max)
    }
}

/// The TCP transport to one peer: a request goes out on the peer's link
/// (dialled first if need be) and its reply is matched by correlation id.
impl Transport for Rc<Peer> {
    fn target(&self) -> ControllerId {
        self.target
    }

    /// Unbounded here: `rpc::call` puts the deadline on it.
    async fn send(&self, request: Request) -> Result<Reply, String> {
        let correlation = self.correlation_last.get() + 1;
        self.correlation_last.set(correlation);
        let frame = encode(
            &Frame::Request {
                correlation,
                request,
            },
            self.config.frame_bytes_max,
        )
        .map_err(|e| e.to_string())?;
        let link = self.link().await?;
        let answer = {
            let mut pending = link.shared.pending.borrow_mut();
            // Calls that timed out leave the pending map but may still sit
            // in the outbox behind a peer that does not read: both count.
            let queued = link.shared.queued.get();
            let max = self.config.requests_in_flight_max;
            if pending.len() >= max || queued >= max {
                return Err(format!(
                    "node {} is not keeping up: {} requests awaiting answers, {queued} not yet sent",
                    self.target,
                    pending.len(),
                ));
            }
            let (tx, rx) = oneshot::channel();
            pending.insert(correlation, tx);
            rx
        };
        // Whatever ends this call (answer, broken link, deadline), its
        // slot is freed.
        let _slot = PendingSlot {
            shared: link.shared.clone(),
            correlation,
        };
        if link.outbox.unbounded_send(frame).is_err() {
            return Err(link.broken().unwrap_or_else(|| "link closed".into()));
        }
        link.shared.queued.set(link.shared.queued.get() + 1);
        answer
            .await
            .map_err(|_| link.broken().unwrap_or_else(|| "link closed".into()))
    }
}

/// Dials `peer` and installs the link, or records why not. Holds the peer
/// only weakly while the dial runs: a peer dropped meanwhile (membership
/// changed, node stopping) just closes the new socket.
async fn dial(peer: Weak<Peer>, done: oneshot::Sender<()>) {
    let Some((addr, target, timeout, hello, limit, tls)) = peer.upgrade().map(|p| {
        (
            p.addr.clone(),
            p.target,
            Duration::from_millis(p.config.connect_timeout_ms),
            p.hello(),
            p.config.frame_bytes_max,
            p.config.tls.clone(),
        )
    }) else {
        return;
    };
    let result = match hello {
        Ok(hello) => connect(&addr, timeout, tls.as_deref())
            .await
            .map(|s| (s, hello)),
        Err(e) => Err(e),
    };
    let Some(peer) = peer.upgrade() else {
        return;
    };
    let mut st = peer.state.borrow_mut();
    st.dialing = None;
    match result {
        Ok((stream, hello)) => {
            tracing::info!(
                from = peer.from,
                to = target,
                %addr,
                "controller link up"
            );
            st.link = Some(Rc::new(Link::start(stream, hello, limit, target)));
        }
        Err(e) => {
            tracing::debug!(from = peer.from, to = target, %addr, "controller dial failed: {e}");
            st.last_error = format!("dialling node {target} at {addr}: {e}");
        }
    }
    drop(done);
}

fn resolve(addr: &str) -> Result<SocketAddr, TcpError> {
    if let Ok(a) = addr.parse() {
        return Ok(a);
    }
    let bad = |reason: String| TcpError::Address {
        addr: addr.to_string(),
        reason,
    };
    addr.to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("resolves to no address".into()))
}

async fn connect(addr: &str, timeout: Duration, tls: Option<&PeerTls>) -> Result<Stream, TcpError> {
    let addr = resolve(addr)?;
    let started = std::time::Instant::now();
    let stream = TcpStream::connect_timeout(addr, timeout)
        .await
        .map_err(std::io::Error::from)?;
    // Votes and heartbeats are small and latency is the point.
    stream.set_nodelay(true).map_err(std::io::Error::from)?;
    let left = timeout.saturating_sub(started.elapsed());
    match GlommioRuntime::timeout(left, Stream::connect(stream, tls, addr.ip())).await {
        Ok(stream) => {
            Ok(stream.map_err(|e| TcpError::Protocol(format!("TLS handshake failed: {e}")))?)
        }
        Err(_) => Err(TcpError::Protocol(format!(
            "no TLS handshake within {timeout:?}"
        ))),
    }
}

/// One connection to a peer. Dropping it closes the connection (the
/// link's task ends when its outbox does).
struct Link {
    outbox: mpsc::UnboundedSender<Vec<u8>>,
    shared: Rc<LinkShared>,
}

/// What a link's callers and its task share.
struct LinkShared {
    pending: RefCell<HashMap<u64, oneshot::Sender<Reply>>>,
    /// Why the link ended, once it has.
    broken: RefCell<Option<String>>,
    /// The peer answered at least once.
    replied: Cell<bool>,
    /// Frames in the outbox, not yet written.
    queued: Cell<usize>,
}

impl LinkShared {
    /// Ends the link: every RPC waiting on it fails with `reason`.
    fn fail(&self, reason: String) {
        self.broken.borrow_mut().get_or_insert(reason);
        // Dropping the senders wakes the callers, which read `broken`.
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        drop(pending);
    }
}

impl Link {
    fn start(stream: Stream, hello: Vec<u8>, limit: usize, target: ControllerId) -> Link {
        let (outbox, frames) = mpsc::unbounded();
        // The receiver is alive: this cannot fail.
        let _ = outbox.unbounded_send(hello);
        let shared = Rc::new(LinkShared {
            pending: RefCell::new(HashMap::new()),
            broken: RefCell::new(None),
            replied: Cell::new(false),
            queued: Cell::new(1),
        });
        spawn_local(run_link(stream, frames, shared.clone(), limit, target));
        Link { outbox, shared }
    }

    fn broken(&self) -> Option<String> {
        self.shared.broken.borrow().clone()
    }
}

/// Writes the outbox and reads the replies until either side ends.
async fn run_link(
    stream: Stream,
    mut frames: mpsc::UnboundedReceiver<Vec<u8>>,
    shared: Rc<LinkShared>,
    limit: usize,
    target: ControllerId,
) {
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let reading = async {
        loop {
            match read_frame(&mut reader, limit).await {
                Ok(Some(Frame::Reply { correlation, reply })) => {
                    shared.replied.set(true);
                    // No one waiting: that caller's deadline passed.
                    if let Some(tx) = shared.pending.borrow_mut().remove(&correlation) {
                        let _ = tx.send(reply);
                    }
                }
                Ok(Some(other)) => {
                    return TcpError::Protocol(format!("a {} frame from a server", other.kind()))
                        .to_string()
                }
                Ok(None) => return format!("node {target} closed the connection"),
                Err(e) => return e.to_string(),
            }
        }
    };
    let writing = async {
        while let Some(frame) = frames.next().await {
            let mut written = writer.write_all(&frame).await;
            if written.is_ok() {
                // TLS holds a frame's last record until flushed.
                written = writer.flush().await;
            }
            shared.queued.set(shared.queued.get().saturating_sub(1));
            if let Err(e) = written {
                return format!("writing to node {target}: {e}");
            }
        }
        "link dropped".to_string()
    };
    let reason = or(reading, writing).await;
    tracing::info!(to = target, "controller link down: {reason}");
    shared.fail(reason);
    frames.close();
}

/// A caller's entry in `pending`, removed when the call ends however it
/// ends.
struct PendingSlot {
    shared: Rc<LinkShared>,
    correlation: u64,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.shared.pending.borrow_mut().remove(&self.correlation);
    }
}

/// Brings commands and heartbeats to the controller leader from any node:
/// straight to the local `Raft` when it leads, else over TCP to the leader
/// it knows of, retried (leader unknown, moved, unreachable) until the
/// deadline. Commands are idempotent or compare-and-set, so a retry after
/// an unknown outcome is safe.
pub struct ControllerClient {
    local: Controller,
    config: Rc<TcpConfig>,
    peers: RefCell<BTreeMap<ControllerId, Rc<Peer>>>,
}

/// How long a client waits before asking again when no leader is known.
const LEADER_WAIT: Duration = Duration::from_millis(50);

impl ControllerClient {
    pub fn new(local: Controller, config: TcpConfig) -> Result<ControllerClient, TcpConfigError> {
        config.validate()?;
        Ok(ControllerClient {
            local,
            config: Rc::new(config),
            peers: RefCell::new(BTreeMap::new()),
        })
    }

    pub fn controller(&self) -> &Controller {
        &self.local
    }

    /// Proposes `command` at the leader; the index it applied at and its
    /// result.
    pub async fn submit(
        &self,
        command: Command,
        timeout: Duration,
    ) -> Result<(u64, CommandResult), SubmitError> {
        let deadline = Instant::now() + timeout;
        loop {
            let attempt = match self.local.leader() {
                Some(leader) if leader == self.local.id => {
                    // Bounded: a leader that lost its quorum never commits,
                    // and a caller (a stopping node) must not wait forever.
                    let left = deadline.saturating_duration_since(Instant::now());
                    match GlommioRuntime::timeout(left, self.local.submit_indexed(command.clone()))
                        .await
                    {
                        Ok(r) => r,
                        Err(_) => Err(SubmitError::Unknown {
                            leader: Some(leader),
                        }),
                    }
                }
                Some(leader) => {
                    match self
                        .remote(leader, Request::Submit(command.clone()), deadline)
                        .await
                    {
                        Ok(Reply::Submitted(r)) => r,
                        Ok(_) => Err(SubmitError::Stopped("unexpected reply".into())),
                        Err(e) => Err(SubmitError::Unknown { leader: None }).inspect_err(|_| {
                            tracing::debug!("controller {leader} unreachable: {e}")
                        }),
                    }
                }
                None => Err(SubmitError::NotLeader { leader: None }),
            };
            match attempt {
                Err(SubmitError::NotLeader { .. } | SubmitError::Unknown { .. })
                    if Instant::now() < deadline =>
                {
                    GlommioRuntime::sleep(LEADER_WAIT).await;
                }
                other => return other,
            }
        }
    }

    /// Tells the leader that `node` is alive; the leader's last applied
    /// log index.
    pub async fn heartbeat(&self, node: NodeId, timeout: Duration) -> Result<u64, SubmitError> {
        let deadline = Instant::now() + timeout;
        let leader = self
            .local
            .leader()
            .ok_or(SubmitError::NotLeader { leader: None })?;
        if leader == self.local.id {
            self.local.liveness.heartbeat(node);
            return Ok(self.local.applied().last_applied.map_or(0, |l| l.index));
        }
        match self
            .remote(leader, Request::Heartbeat { node }, deadline)
            .await
        {
            Ok(Reply::Heartbeat(r)) => r,
            Ok(_) => Err(SubmitError::Stopped("unexpected reply".into())),
            Err(_) => Err(SubmitError::Unknown {
                leader: Some(leader),
            }),
        }
    }

    /// Makes this node (not a voter) a learner of the quorum: asks the
    /// voters, at the addresses configured, until the leader has added it.
    pub async fn join(
        &self,
        voters: &[(ControllerId, String)],
        addr: &str,
        timeout: Duration,
    ) -> Result<(), SubmitError> {
        let deadline = Instant::now() + timeout;
        let mut last = SubmitError::NotLeader { leader: None };
        let mut next: Option<ControllerId> = None;
        loop {
            let targets: Vec<&(ControllerId, String)> = match next.take() {
                Some(leader) => voters.iter().filter(|(id, _)| *id == leader).collect(),
                None => voters.iter().collect(),
            };
            for (id, voter_addr) in targets {
                let request = Request::Join {
                    node: self.local.id,
                    addr: addr.to_string(),
                };
                match self
                    .remote_at(*id, voter_addr.clone(), request, deadline)
                    .await
                {
                    Ok(Reply::Joined(Ok(()))) => return Ok(()),
                    Ok(Reply::Joined(Err(SubmitError::NotLeader { leader }))) => {
                        last = SubmitError::NotLeader { leader };
                        if leader.is_some() {
                            next = leader;
                            break;
                        }
                    }
                    Ok(Reply::Joined(Err(e))) => last = e,
                    Ok(_) => last = SubmitError::Stopped("unexpected reply".into()),
                    Err(e) => tracing::debug!("controller {id} at {voter_addr}: {e}"),
                }
            }
            if Instant::now() >= deadline {
                return Err(last);
            }
            GlommioRuntime::sleep(LEADER_WAIT).await;
        }
    }

    async fn remote(
        &self,
        target: ControllerId,
        request: Request,
        deadline: Instant,
    ) -> Result<Reply, String> {
        let addr = self
            .local
            .address_of(target)
            .ok_or_else(|| format!("controller {target} is not in the membership"))?;
        self.remote_at(target, addr, request, deadline).await
    }

    async fn remote_at(
        &self,
        target: ControllerId,
        addr: String,
        request: Request,
        deadline: Instant,
    ) -> Result<Reply, String> {
        let peer = {
            let mut peers = self.peers.borrow_mut();
            match peers.get(&target) {
                Some(p) if p.addr == addr => p.clone(),
                _ => {
                    let p = Rc::new(Peer::new(self.local.id, target, addr, self.config.clone()));
                    peers.insert(target, p.clone());
                    p
                }
            }
        };
        let ttl = deadline.saturating_duration_since(Instant::now());
        call(&peer, request, ttl.max(Duration::from_millis(1))).await
    }
}
