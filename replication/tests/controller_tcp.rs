//! The controller quorum over its TCP transport: three controllers, each on
//! its own glommio executor thread with a file log, talking over
//! 127.0.0.1. They elect a leader and apply commands identically; the
//! leader's node stops (executor, listener and connections gone) and the
//! other two elect a new leader that commits and compacts its log; the old
//! node restarts on the same port from its files and catches up through a
//! snapshot sent over TCP; garbage, an oversized length, a wrong-version
//! header, a hello for another node and a silent connection sent to a
//! node's port each get that connection closed while the quorum goes on.
//! Then the connection bound, and a link that breaks under an RPC.
//!
//! Every wait is bounded (`WAIT`).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::{mpsc, oneshot};
use futures_util::StreamExt;
use glommio::{LocalExecutorBuilder, Placement};
use openraft::async_runtime::WatchReceiver;
use openraft::errors::RPCError;
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::VoteRequest;
use openraft::{AsyncRuntime, BasicNode};
use replication::controller::file_log::FileLogStore;
use replication::controller::metadata::Command;
use replication::controller::runtime::TEST_IO_MEMORY_BYTES;
use replication::controller::tcp::{start_controller, TcpConfig, TcpNetwork, TCP_SCHEMA_VERSION};
use replication::controller::{
    default_config, AppliedMetadata, CommandResult, ControllerId, ControllerRaft, GlommioRuntime,
    MetadataStateMachine, SubmitError, Vote,
};

const WAIT: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match GlommioRuntime::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?}: {what}"),
    }
}

async fn sleep_ms(ms: u64) {
    GlommioRuntime::sleep(Duration::from_millis(ms)).await;
}

fn tcp_config() -> TcpConfig {
    TcpConfig {
        // Short, so that the silent connection's close is seen in the run.
        hello_timeout_ms: 1_000,
        ..TcpConfig::default()
    }
}

fn register(node_id: u32) -> Command {
    Command::RegisterNode {
        node_id,
        addr: format!("broker-{node_id}:9092"),
        shards: 2,
        link_addrs: Vec::new(),
        listeners: Vec::new(),
    }
}

fn create_topic(name: &str, topic_id: u128, partitions: u32, rf: u16) -> Command {
    Command::CreateTopic {
        name: name.into(),
        topic_id,
        partitions,
        replication_factor: rf,
        configs: BTreeMap::new(),
    }
}

/// What the test thread asks of a node running on its own executor.
enum Ctl {
    Initialize(BTreeMap<ControllerId, BasicNode>, oneshot::Sender<()>),
    Submit(Command, oneshot::Sender<Result<CommandResult, SubmitError>>),
    Leader(oneshot::Sender<Option<ControllerId>>),
    Applied(oneshot::Sender<AppliedMetadata>),
    /// Snapshot what is applied and purge the log up to it; answers the
    /// snapshot's index.
    Compact(oneshot::Sender<u64>),
    /// The index of the node's snapshot, if it has one.
    SnapshotIndex(oneshot::Sender<Option<u64>>),
}

/// A controller on its own executor thread; it stops (Raft, then its
/// server and connections) when `ctl` is dropped.
struct NodeThread {
    ctl: mpsc::UnboundedSender<Ctl>,
    handle: glommio::ExecutorJoinHandle<()>,
    addr: SocketAddr,
}

/// Starts controller `id` listening on `listen` (port 0: any), with its
/// log and snapshots under `dir`.
fn spawn_node(id: ControllerId, listen: SocketAddr, dir: &Path) -> NodeThread {
    spawn_node_with(id, listen, dir, tcp_config())
}

fn spawn_node_with(id: ControllerId, listen: SocketAddr, dir: &Path, tcp: TcpConfig) -> NodeThread {
    let (ctl, mut rx) = mpsc::unbounded::<Ctl>();
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let dir: PathBuf = dir.to_path_buf();
    let handle = LocalExecutorBuilder::new(Placement::Unbound)
        .name(&format!("controller-{id}"))
        .io_memory(TEST_IO_MEMORY_BYTES)
        .spawn(move || async move {
            let log = FileLogStore::open(dir.join("log")).expect("open log");
            let sm = MetadataStateMachine::open(dir.join("snapshots")).expect("open snapshots");
            let config = Arc::new(default_config().validate().expect("valid config"));
            let (c, server) = start_controller(id, listen, tcp, config, log, sm)
                .await
                .expect("start controller");
            bound_tx
                .send(server.local_addr())
                .expect("the test waits for the address");
            while let Some(ctl) = rx.next().await {
                match ctl {
                    Ctl::Initialize(members, done) => {
                        c.raft.initialize(members).await.expect("initialize");
                        let _ = done.send(());
                    }
                    Ctl::Submit(command, answer) => {
                        let c = c.clone();
                        glommio::spawn_local(async move {
                            let _ = answer.send(c.submit(command).await);
                        })
                        .detach();
                    }
                    Ctl::Leader(answer) => {
                        let _ = answer.send(c.leader());
                    }
                    Ctl::Applied(answer) => {
                        let _ = answer.send(c.applied());
                    }
                    Ctl::Compact(answer) => {
                        let _ = answer.send(compact(&c.raft, &c.applied()).await);
                    }
                    Ctl::SnapshotIndex(answer) => {
                        let m = c.raft.metrics().borrow_watched().clone();
                        let _ = answer.send(m.snapshot.map(|s| s.index));
                    }
                }
            }
            within("raft shutdown", c.raft.shutdown())
                .await
                .expect("shutdown");
            drop(c);
            within("server shutdown", server.shutdown())
                .await
                .expect("server stops");
        })
        .expect("spawn an executor");
    let addr = bound_rx.recv_timeout(WAIT).expect("the node listens");
    NodeThread { ctl, handle, addr }
}

async fn compact(raft: &ControllerRaft, applied: &AppliedMetadata) -> u64 {
    let applied = applied.last_applied.expect("something applied").index;
    raft.trigger().snapshot().await.expect("trigger a snapshot");
    within(
        "a snapshot",
        raft.wait(Some(WAIT)).metrics(
            |m| m.snapshot.as_ref().is_some_and(|s| s.index >= applied),
            "snapshot",
        ),
    )
    .await
    .expect("snapshot built");
    raft.trigger()
        .purge_log(applied)
        .await
        .expect("trigger a purge");
    within(
        "a purge",
        raft.wait(Some(WAIT)).metrics(
            |m| m.purged.as_ref().is_some_and(|p| p.index >= applied),
            "purged",
        ),
    )
    .await
    .expect("log purged");
    applied
}

impl NodeThread {
    fn stop(self) {
        drop(self.ctl);
        self.handle.join().expect("the node's executor ends");
    }
}

async fn ask<T>(node: &NodeThread, make: impl FnOnce(oneshot::Sender<T>) -> Ctl) -> T {
    let (tx, rx) = oneshot::channel();
    node.ctl.unbounded_send(make(tx)).expect("the node runs");
    within("a node answers", rx)
        .await
        .expect("the node answers")
}

struct Cluster {
    nodes: BTreeMap<ControllerId, NodeThread>,
}

impl Cluster {
    async fn leader_among(&self, among: &[ControllerId]) -> ControllerId {
        within("a leader all agree on", async {
            loop {
                let mut seen = BTreeSet::new();
                for id in among {
                    seen.insert(ask(&self.nodes[id], Ctl::Leader).await);
                }
                if let [Some(l)] = seen.into_iter().collect::<Vec<_>>()[..] {
                    if among.contains(&l) {
                        return l;
                    }
                }
                sleep_ms(10).await;
            }
        })
        .await
    }

    /// Submits through `via`, following the leader if it moved.
    async fn submit(&self, via: ControllerId, command: Command) -> CommandResult {
        within("a command commits", async {
            let mut via = via;
            loop {
                match ask(&self.nodes[&via], |tx| Ctl::Submit(command.clone(), tx)).await {
                    Ok(answer) => return answer,
                    Err(SubmitError::NotLeader { leader: Some(l) })
                        if self.nodes.contains_key(&l) =>
                    {
                        via = l
                    }
                    Err(SubmitError::NotLeader { .. }) => sleep_ms(20).await,
                    Err(e) => panic!("{command}: {e}"),
                }
            }
        })
        .await
    }

    /// Waits until every node in `among` holds what `reference` applied.
    async fn converged(&self, reference: ControllerId, among: &[ControllerId]) -> AppliedMetadata {
        let want = ask(&self.nodes[&reference], Ctl::Applied).await;
        within("the nodes converge", async {
            loop {
                let mut all = true;
                for id in among {
                    all &= ask(&self.nodes[id], Ctl::Applied).await == want;
                }
                if all {
                    return;
                }
                sleep_ms(10).await;
            }
        })
        .await;
        want
    }
}

/// Asserts that the node closed `stream` (end of stream or reset), not
/// just left it hanging.
fn assert_closed(mut stream: std::net::TcpStream, what: &str) {
    stream
        .set_read_timeout(Some(WAIT))
        .expect("set a read timeout");
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("{what}: the node answered {n} bytes instead of closing"),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{what}: the connection was not closed: {e}"),
    }
}

/// Whether the node still holds `stream` open after a short wait.
fn still_open(stream: &mut std::net::TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("set a read timeout");
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        // Closed (0), or answered when it should wait for a hello.
        Ok(_n) => false,
    }
}

fn header(length: u32, version: u16) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&length.to_le_bytes());
    h.extend_from_slice(&version.to_le_bytes());
    h.extend_from_slice(&[0, 0]);
    h
}

fn send_raw(addr: SocketAddr, bytes: &[u8]) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    s.write_all(bytes).expect("send");
    s
}

#[test]
fn three_controllers_over_tcp_elect_fail_over_restart_and_shrug_off_bad_frames() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let started = Instant::now();
    let dirs: BTreeMap<ControllerId, tempfile::TempDir> = (1..=3)
        .map(|id| (id, tempfile::tempdir().expect("tempdir")))
        .collect();
    let any_port: SocketAddr = "127.0.0.1:0".parse().expect("an address");
    let mut c = Cluster {
        nodes: (1..=3)
            .map(|id| (id, spawn_node(id, any_port, dirs[&id].path())))
            .collect(),
    };
    let members: BTreeMap<ControllerId, BasicNode> = c
        .nodes
        .iter()
        .map(|(&id, n)| (id, BasicNode::new(n.addr.to_string())))
        .collect();

    GlommioRuntime::new(1).block_on(async {
        ask(&c.nodes[&1], |done| Ctl::Initialize(members.clone(), done)).await;
        let leader = c.leader_among(&[1, 2, 3]).await;
        for b in 1..=3 {
            c.submit(leader, register(b)).await.expect("registered");
        }
        c.submit(leader, create_topic("events", 1, 3, 3))
            .await
            .expect("created");
        let m = c.converged(leader, &[1, 2, 3]).await;
        assert_eq!(m.metadata.topics["events"].partitions.len(), 3);

        let old = leader;
        let rest: Vec<ControllerId> = (1..=3).filter(|&id| id != old).collect();
        // A connection to a node that stays up, which never says hello;
        // checked at the end.
        let silent = send_raw(c.nodes[&rest[0]].addr, &[]);

        // The leader's node stops: executor, listener, connections.
        let old_addr = c.nodes[&old].addr;
        c.nodes.remove(&old).expect("the leader runs").stop();
        let new = c.leader_among(&rest).await;
        assert_ne!(new, old);
        c.submit(new, create_topic("after", 2, 2, 2))
            .await
            .expect("created");
        c.submit(new, Command::FenceNode { node_id: 3 })
            .await
            .expect("fenced");
        c.converged(new, &rest).await;

        // The leader compacts its log past what the stopped node has.
        let compacted = ask(&c.nodes[&new], Ctl::Compact).await;

        // It restarts on the same port from its files and catches up: its
        // log ends before the leader's begins, so a snapshot crosses.
        c.nodes
            .insert(old, spawn_node(old, old_addr, dirs[&old].path()));
        assert_eq!(c.nodes[&old].addr, old_addr);
        let m = c.converged(new, &[1, 2, 3]).await;
        assert!(m.metadata.topics.contains_key("after"));
        assert!(m.metadata.nodes[&3].fenced);
        let installed = ask(&c.nodes[&old], Ctl::SnapshotIndex).await;
        assert!(
            installed.is_some_and(|i| i >= compacted),
            "node {old} caught up without the leader's snapshot: {installed:?} < {compacted}"
        );

        // Bad input to a node's port closes that connection only.
        let target = c.nodes[&new].addr;
        let mut garbage = header(32, TCP_SCHEMA_VERSION);
        garbage.extend_from_slice(&[b'#'; 32]);
        assert_closed(send_raw(target, &garbage), "a garbage payload");
        assert_closed(
            send_raw(target, &header(u32::MAX, TCP_SCHEMA_VERSION)),
            "an oversized length",
        );
        assert_closed(
            send_raw(target, b"GET / HTTP/1.1\r\n\r\n"),
            "another protocol",
        );
        let wrong_node = serde_json::to_vec(&serde_json::json!({
            "Hello": { "cluster": "sluice-controller", "from": 9, "to": 99 }
        }))
        .expect("json");
        let mut hello = header(wrong_node.len() as u32, TCP_SCHEMA_VERSION);
        hello.extend_from_slice(&wrong_node);
        assert_closed(send_raw(target, &hello), "a hello for another node");
        assert_closed(silent, "a connection that never says hello");

        // And the quorum goes on, all three of it.
        let leader = c.leader_among(&[1, 2, 3]).await;
        c.submit(leader, Command::UnfenceNode { node_id: 3 })
            .await
            .expect("unfenced");
        let m = c.converged(leader, &[1, 2, 3]).await;
        assert!(!m.metadata.nodes[&3].fenced);
    });
    for (_, node) in std::mem::take(&mut c.nodes) {
        node.stop();
    }
    eprintln!("the run took {:?}", started.elapsed());
}

#[test]
fn a_node_at_its_connection_limit_closes_new_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tcp = TcpConfig {
        connections_max: 1,
        ..TcpConfig::default()
    };
    let node = spawn_node_with(1, "127.0.0.1:0".parse().expect("addr"), dir.path(), tcp);
    let mut first = send_raw(node.addr, &[]);
    assert!(still_open(&mut first), "the first connection is held");
    assert_closed(send_raw(node.addr, &[]), "a connection over the limit");
    assert!(still_open(&mut first), "the first connection is still held");
    // Its slot comes back when it closes.
    drop(first);
    let deadline = Instant::now() + WAIT;
    loop {
        let mut next = send_raw(node.addr, &[]);
        if still_open(&mut next) {
            break;
        }
        assert!(Instant::now() < deadline, "the slot never came back");
    }
    node.stop();
}

#[test]
fn a_broken_connection_fails_the_rpcs_in_flight_at_once_then_backs_off() {
    // A peer that reads the hello and a request, then hangs up unanswered.
    let fake = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = fake.local_addr().expect("addr");
    let peer = std::thread::spawn(move || {
        let (mut s, _) = fake.accept().expect("accept");
        for _ in 0..2 {
            let mut h = [0u8; 8];
            s.read_exact(&mut h).expect("a header");
            let length = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
            let mut payload = vec![0u8; length];
            s.read_exact(&mut payload).expect("a payload");
        }
    });
    GlommioRuntime::new(1).block_on(async {
        // A backoff longer than the test, so that the second RPC surely
        // falls within it.
        let tcp = TcpConfig {
            reconnect_backoff_min_ms: 60_000,
            reconnect_backoff_max_ms: 60_000,
            ..TcpConfig::default()
        };
        let mut network = TcpNetwork::new(1, tcp).expect("config");
        let mut client = network
            .new_client(2, &BasicNode::new(addr.to_string()))
            .await;
        let vote = || VoteRequest::new(Vote::new(1, 1), None);
        let started = Instant::now();
        let r = client.vote(vote(), RPCOption::new(WAIT)).await;
        assert!(matches!(r, Err(RPCError::Unreachable(_))), "{r:?}");
        assert!(
            started.elapsed() < WAIT / 2,
            "the RPC failed only at its deadline"
        );
        // The link broke before any answer: the next dial waits out the
        // backoff, and RPCs meanwhile fail at once.
        let started = Instant::now();
        let r = client.vote(vote(), RPCOption::new(WAIT)).await;
        let Err(RPCError::Unreachable(e)) = r else {
            panic!("{r:?}");
        };
        assert!(e.to_string().contains("not redialling"), "{e}");
        assert!(started.elapsed() < WAIT / 2, "it waited instead");
    });
    peer.join().expect("the fake peer ends");
}
