//! Data replication between nodes, per shard: the link listener through
//! which followers fetch from the partitions this shard leads, the fetch
//! loops through which this shard's follower replicas pull from their
//! leaders, and the leaders' ISR upkeep (shrinks after
//! `replica.lag.time.max.ms`, expansions, both proposed to the controller
//! as AlterPartition).
//!
//! Links pair shards: shard `s` of a node listens on its own port, and a
//! follower replica of a partition fetches from the leader node's shard
//! that owns it, so a fetch never crosses the leader's mesh. One fetch
//! loop runs per (leader node, leader shard) and carries every partition
//! this shard follows there: one `Fetch` frame in, one `FetchReply` out,
//! in turn. A leader holds a fetch that finds nothing new for up to
//! `replica.fetch.wait.max.ms`, answering as soon as something is
//! appended, and a follower fetches again as soon as it has applied an
//! answer, which is what moves the high watermark: acks=all costs about
//! two link round trips.

use std::cell::RefCell;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::rt::{TcpListener, TcpStream};
use futures_lite::future;
use net::link::{self, LinkMessage, PartitionFetch, PartitionFetched};
use net::tls_stream::LinkStream;
use replication::controller::{Applied, Command};
use replication::log_replica::LogReplica;
use replication::replica::AlterIsr;
use rkyv::util::AlignedVec;

use crate::metadata::owner_shard;
use crate::partition::now_ms;
use crate::peers::Peers;
use crate::preflight::StartError;
use crate::shard::Shard;

/// The largest link frame read (a fetch answer is bounded well below).
const LINK_FRAME_BYTES_MAX: usize = 64 << 20;
/// Record bytes one fetch answer carries at most, all partitions together.
const FETCH_ANSWER_BYTES_MAX: usize = 16 << 20;
/// How often leaders look for lagging followers.
const ISR_TICK: Duration = Duration::from_millis(250);
/// Between failed dials of a leader's link.
const REDIAL_BACKOFF: Duration = Duration::from_millis(200);
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a follower waits for an answer beyond the leader's hold time.
const ANSWER_GRACE: Duration = Duration::from_secs(5);

const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const KAFKA_STORAGE_ERROR: i16 = 56;

/// One shard's replication tasks.
#[derive(Default)]
pub struct Replication {
    /// (leader node, leader shard) pairs with a fetch loop running.
    fetchers: RefCell<HashSet<(u32, u32)>>,
    /// Partitions with an ISR change on its way to the controller.
    proposing: RefCell<HashSet<(String, i32)>>,
}

/// What the replication tasks of one shard work with: the shard, its
/// replication state, and the way to the controller.
#[derive(Clone)]
struct Cx {
    shard: Rc<Shard>,
    state: Rc<Replication>,
    peers: Rc<dyn Peers>,
}

/// Clears a partition's in-flight proposal however the proposal ends.
struct Proposing {
    state: Rc<Replication>,
    key: (String, i32),
}

impl Drop for Proposing {
    fn drop(&mut self) {
        self.state.proposing.borrow_mut().remove(&self.key);
    }
}

/// Binds shard `shard.id`'s link listener: the configured port plus the
/// shard index, or any free port when the configured port is 0.
pub fn bind_link(shard: &Shard) -> Result<TcpListener, StartError> {
    let mut addr = shard.config.link_addr()?;
    if addr.port() != 0 {
        addr.set_port(addr.port() + shard.id as u16);
    }
    TcpListener::bind(addr).map_err(|e| StartError::Bind {
        addr: addr.to_string(),
        reason: format!("replication link listener: {e}"),
    })
}

/// Serves followers' fetches on `listener` until shutdown; starts the
/// leaders' ISR upkeep.
pub fn spawn(
    shard: &Rc<Shard>,
    state: &Rc<Replication>,
    peers: Rc<dyn Peers>,
    listener: TcpListener,
) {
    let cx = Cx {
        shard: shard.clone(),
        state: state.clone(),
        peers,
    };
    let server = cx.clone();
    crate::rt::spawn_local(async move {
        loop {
            let accepted = future::or(async { Some(listener.accept().await) }, async {
                server.shard.stopped().await;
                None
            })
            .await;
            match accepted {
                None => return,
                Some(Ok(stream)) => {
                    let cx = server.clone();
                    crate::rt::spawn_local(async move {
                        let peer = stream.peer_addr().ok();
                        match serve_link(&cx, stream).await {
                            Ok(()) => {}
                            // A peer outside the cluster CA, or not speaking
                            // TLS: the operator needs to see it.
                            Err(e) if e.starts_with("refused") => {
                                tracing::warn!(shard = cx.shard.id, ?peer, "replication link {e}")
                            }
                            Err(e) => tracing::info!(
                                shard = cx.shard.id,
                                ?peer,
                                "replication link closed: {e}"
                            ),
                        }
                    })
                    .detach();
                }
                Some(Err(e)) => {
                    tracing::warn!(shard = server.shard.id, "link accept failed: {e}");
                    crate::rt::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    })
    .detach();
    let ticker = cx;
    crate::rt::spawn_local(async move {
        while ticker.shard.nap(ISR_TICK).await {
            let now = now_ms();
            for replica in ticker.shard.replicas() {
                if let Some(change) = replica.tick(now) {
                    propose_isr(&ticker, replica, change);
                }
            }
        }
    })
    .detach();
}

/// Proposes a leader's ISR change and tells the replica the outcome; one
/// proposal per partition at a time (the replica re-sends while it waits,
/// and a slow controller would otherwise collect them).
fn propose_isr(cx: &Cx, replica: Rc<LogReplica>, change: AlterIsr) {
    let key = (replica.topic.clone(), replica.partition);
    if !cx.state.proposing.borrow_mut().insert(key.clone()) {
        return;
    }
    let cx = cx.clone();
    crate::rt::spawn_local(async move {
        let _done = Proposing {
            state: cx.state.clone(),
            key,
        };
        let shard = &cx.shard;
        let command = Command::AlterPartition {
            topic: replica.topic.clone(),
            partition: replica.partition as u32,
            from: shard.node_id(),
            leader_epoch: change.leader_epoch,
            partition_epoch: change.partition_epoch,
            new_isr: change.isr.clone(),
        };
        tracing::info!(
            topic = %replica.topic,
            partition = replica.partition,
            isr = ?change.isr,
            "proposing an ISR change"
        );
        match cx.peers.submit(command).await {
            Ok(Ok(Applied::PartitionAltered(_))) | Ok(Ok(_)) => {
                replica.on_alter_accepted(&change)
            }
            Ok(Err(e)) => {
                tracing::info!(topic = %replica.topic, partition = replica.partition, "ISR change refused: {e}");
                replica.on_alter_refused(&change)
            }
            // Re-sent by the tick after its retry interval.
            Err(e) => tracing::debug!("ISR change not delivered: {e}"),
        }
        shard.appended.notify();
    })
    .detach();
}

/// A link, plain or under the cluster's mutual TLS.
type Link = LinkStream<TcpStream>;

async fn serve_link(cx: &Cx, stream: TcpStream) -> Result<(), String> {
    let shard = &cx.shard;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let handshake = Duration::from_millis(shard.config.tls_handshake_timeout_ms);
    let stream = future::or(
        async {
            Link::accept(stream, shard.peer_tls.as_deref())
                .await
                .map_err(|e| format!("refused: TLS handshake failed: {e}"))
        },
        async {
            crate::rt::sleep(handshake).await;
            Err(format!("refused: no TLS handshake within {handshake:?}"))
        },
    )
    .await?;
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let mut buf = AlignedVec::<16>::new();
    let read = |buf: &mut AlignedVec<16>| -> Result<LinkMessage, String> {
        link::decode(buf).map_err(|e| e.to_string())
    };
    if !link::read_frame(&mut reader, &mut buf, LINK_FRAME_BYTES_MAX)
        .await
        .map_err(|e| e.to_string())?
    {
        return Ok(());
    }
    let from = match read(&mut buf)? {
        LinkMessage::Hello {
            cluster_id,
            node_id,
            shard: _,
        } => {
            let ours = shard.metadata().cluster_id.clone();
            if !ours.is_empty() && cluster_id != ours {
                return Err(format!(
                    "node {node_id} belongs to cluster {cluster_id}, this is {ours}"
                ));
            }
            node_id
        }
        _ => return Err("the first frame was not a hello".into()),
    };
    let wait_max = Duration::from_millis(shard.config.replica_fetch_wait_max_ms);
    // A follower fetches again as soon as it has an answer: a link quiet
    // for this long has lost its peer (a host gone without a FIN).
    let idle = 2 * (wait_max + ANSWER_GRACE);
    loop {
        let frame = future::or(
            async { Some(link::read_frame(&mut reader, &mut buf, LINK_FRAME_BYTES_MAX).await) },
            async {
                crate::rt::sleep(idle).await;
                None
            },
        )
        .await;
        match frame {
            None => return Err(format!("nothing from node {from} for {idle:?}")),
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(false)) => return Ok(()),
            Some(Ok(true)) => {}
        }
        let LinkMessage::Fetch {
            correlation,
            replica,
            partitions,
        } = read(&mut buf)?
        else {
            return Err(format!("node {from} sent something other than a fetch"));
        };
        if replica != from {
            return Err(format!("node {from} fetched as node {replica}"));
        }
        let deadline = Instant::now() + wait_max;
        let answers = loop {
            let (answers, news) = answer_fetch(cx, replica, &partitions).await;
            let left = deadline.saturating_duration_since(Instant::now());
            // Not cut short at shutdown: an empty answer at once would have
            // the follower ask again at once, both spinning until the logs
            // close.
            if news || left.is_zero() {
                break answers;
            }
            future::or(shard.appended.next(), crate::rt::sleep(left)).await;
        };
        let reply = LinkMessage::FetchReply {
            correlation,
            partitions: answers,
        };
        link::write_frame(&mut writer, &reply)
            .await
            .map_err(|e| e.to_string())?;
    }
}

/// Answers each partition of a follower's fetch; whether any answer is
/// worth sending before the hold time is up.
async fn answer_fetch(
    cx: &Cx,
    from: u32,
    partitions: &[PartitionFetch],
) -> (Vec<PartitionFetched>, bool) {
    let shard = &cx.shard;
    let mut out = Vec::with_capacity(partitions.len());
    let mut news = false;
    let mut budget = FETCH_ANSWER_BYTES_MAX;
    for p in partitions {
        let failed = |error_code| PartitionFetched {
            topic: p.topic.clone(),
            partition: p.partition,
            error_code,
            high_watermark: -1,
            log_start_offset: -1,
            diverging: None,
            records: Vec::new(),
        };
        let Some(replica) = shard.replica(&(p.topic.clone(), p.partition)) else {
            news = true;
            out.push(failed(NOT_LEADER_OR_FOLLOWER));
            continue;
        };
        let mut request = p.clone();
        request.max_bytes = request.max_bytes.min(budget as u32);
        if request.max_bytes == 0 {
            // The answer is full: this partition's records come next round
            // (a read always returns one whole batch, which could carry
            // the frame past the limit).
            out.push(PartitionFetched {
                high_watermark: replica.high_watermark(),
                log_start_offset: replica.log().log_start_offset(),
                ..failed(0)
            });
            continue;
        }
        let high_watermark = replica.high_watermark();
        let served = replica.serve_fetch(from, &request, now_ms()).await;
        if replica.high_watermark() > high_watermark {
            // acks=all producers and consumers waiting on it look again.
            // Only on a move: every link waits on the same signal, and
            // waking them for nothing would set them waking each other.
            shard.appended.notify();
        }
        match served {
            Ok((answer, alter)) => {
                if let Some(change) = alter {
                    propose_isr(cx, replica.clone(), change);
                }
                budget = budget.saturating_sub(answer.records.len());
                news |= !answer.records.is_empty()
                    || answer.diverging.is_some()
                    || answer.error_code != 0;
                out.push(answer);
            }
            Err(e) => {
                tracing::warn!(topic = %p.topic, partition = p.partition, "serving a follower failed: {e}");
                news = true;
                out.push(failed(KAFKA_STORAGE_ERROR));
            }
        }
    }
    (out, news)
}

/// The shard of `leader` that owns a partition.
fn leader_shard(shard: &Shard, leader: u32, topic: &str, partition: i32) -> Option<u32> {
    let meta = shard.metadata();
    let node = meta.nodes.get(&(leader as i32))?;
    Some(owner_shard(topic, partition, node.shards.max(1) as usize) as u32)
}

/// Starts a fetch loop for every leader this shard's followers need and
/// that has none yet.
pub fn start_fetchers(shard: &Rc<Shard>, state: &Rc<Replication>) {
    let mut wanted = HashSet::new();
    for replica in shard.replicas() {
        if let Some((leader, _)) = replica.next_fetch(0) {
            if let Some(s) = leader_shard(shard, leader, &replica.topic, replica.partition) {
                wanted.insert((leader, s));
            }
        }
    }
    for pair in wanted {
        if !state.fetchers.borrow_mut().insert(pair) {
            continue;
        }
        let (shard, state) = (shard.clone(), state.clone());
        crate::rt::spawn_local(async move {
            fetch_loop(&shard, pair.0, pair.1).await;
            state.fetchers.borrow_mut().remove(&pair);
        })
        .detach();
    }
}

/// Pulls from one leader shard for as long as some replica here follows it.
async fn fetch_loop(shard: &Rc<Shard>, leader: u32, leader_shard_id: u32) {
    let me = shard.node_id();
    let max_bytes = shard.config.replica_fetch_max_bytes;
    let mut link: Option<(Link, AlignedVec<16>)> = None;
    let mut correlation = 0u64;
    tracing::debug!(
        shard = shard.id,
        leader,
        leader_shard_id,
        "fetching from a leader"
    );
    loop {
        if shard.is_shutting_down() {
            break;
        }
        let mut fetches = Vec::new();
        let mut replicas = Vec::new();
        for replica in shard.replicas() {
            let Some((l, fetch)) = replica.next_fetch(max_bytes) else {
                continue;
            };
            if l == leader
                && leader_shard(shard, l, &replica.topic, replica.partition)
                    == Some(leader_shard_id)
            {
                fetches.push(fetch);
                replicas.push(replica);
            }
        }
        if fetches.is_empty() {
            break;
        }
        if link.is_none() {
            match dial(shard, leader, leader_shard_id).await {
                Ok(stream) => link = Some((stream, AlignedVec::new())),
                Err(e) => {
                    tracing::debug!(leader, "link to the leader not up: {e}");
                    shard.nap(REDIAL_BACKOFF).await;
                    continue;
                }
            }
        }
        correlation += 1;
        let epochs: Vec<i32> = fetches.iter().map(|f| f.leader_epoch).collect();
        let request = LinkMessage::Fetch {
            correlation,
            replica: me,
            partitions: fetches,
        };
        let Some((stream, buf)) = link.as_mut() else {
            continue;
        };
        let wait = Duration::from_millis(shard.config.replica_fetch_wait_max_ms) + ANSWER_GRACE;
        let exchanged = future::or(
            async {
                link::write_frame(stream, &request)
                    .await
                    .map_err(|e| e.to_string())?;
                match link::read_frame(stream, buf, LINK_FRAME_BYTES_MAX).await {
                    Ok(true) => link::decode(buf).map_err(|e| e.to_string()),
                    Ok(false) => Err("the leader closed the link".to_string()),
                    Err(e) => Err(e.to_string()),
                }
            },
            async {
                crate::rt::sleep(wait).await;
                Err(format!("no answer within {wait:?}"))
            },
        )
        .await;
        let answers = match exchanged {
            Ok(LinkMessage::FetchReply {
                correlation: c,
                partitions,
            }) if c == correlation => partitions,
            Ok(_) => {
                tracing::warn!(leader, "the leader answered out of turn; redialling");
                link = None;
                continue;
            }
            Err(e) => {
                tracing::info!(leader, "replication link failed: {e}");
                link = None;
                shard.nap(REDIAL_BACKOFF).await;
                continue;
            }
        };
        let mut backoff = false;
        for ((replica, epoch), answer) in replicas.iter().zip(epochs).zip(answers.iter()) {
            if answer.topic != replica.topic || answer.partition != replica.partition {
                continue;
            }
            if let Err(e) = replica.apply_fetched(epoch, answer).await {
                // Errors from the leader (not leader yet, epoch not known
                // yet) settle once the metadata catches up.
                backoff = true;
                tracing::debug!(topic = %replica.topic, partition = replica.partition, "fetch answer not applied: {e}");
            }
        }
        if backoff {
            shard.nap(Duration::from_millis(50)).await;
        }
    }
}

async fn dial(shard: &Shard, leader: u32, leader_shard_id: u32) -> Result<Link, String> {
    let meta = shard.metadata();
    let addr = meta
        .nodes
        .get(&(leader as i32))
        .and_then(|n| n.link_addrs.get(leader_shard_id as usize))
        .ok_or_else(|| format!("node {leader} has no link address for shard {leader_shard_id}"))?;
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("link address {addr}: {e}"))?;
    let mut stream = future::or(
        async {
            let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            Link::connect(stream, shard.peer_tls.as_deref(), addr.ip())
                .await
                .map_err(|e| format!("TLS handshake with {addr} failed: {e}"))
        },
        async {
            crate::rt::sleep(DIAL_TIMEOUT).await;
            Err(format!("connecting to {addr} timed out"))
        },
    )
    .await?;
    let hello = LinkMessage::Hello {
        cluster_id: meta.cluster_id.clone(),
        node_id: shard.node_id(),
        shard: shard.id as u16,
    };
    link::write_frame(&mut stream, &hello)
        .await
        .map_err(|e| e.to_string())?;
    Ok(stream)
}
