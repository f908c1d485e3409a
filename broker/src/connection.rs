//! One client connection: requests are read and started in order and
//! answered in order, as Kafka does. Produce requests are pipelined: once
//! a produce request's batches have their place in their logs, the next
//! request is read and started while the writes complete, so that the
//! requests a producer keeps in flight share flush rounds (and fsyncs)
//! instead of each waiting for its own. Every other request runs alone:
//! after every earlier one is answered, before any later one starts. A
//! bad frame or a failing handler closes only this connection, with a log
//! line.
//!
//! One task reads and places requests; another (with its own handle on the
//! socket) awaits each in turn and writes its answer.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use futures_lite::{future, FutureExt};
use kafka_protocol::messages::ApiKey;

use bytes::Bytes;
use futures_lite::AsyncRead;
use net::tls::TlsWriter;
use std::sync::Arc;

use crate::kafka::{self, HandlerFuture, Reply, Turn};
use crate::node::Node;
use crate::rt::local_channel::{self, LocalReceiver, LocalSender};
use crate::rt::TcpStream;
use crate::security::principal;
use crate::security::tls::ServerTls;

/// Requests placed and not yet answered, at most, beyond the one being
/// answered. Producers keep up to 5 in flight (Kafka's limit with
/// idempotence); more wait in the socket.
const PIPELINE_DEPTH: usize = 8;

/// Request bytes placed and not yet answered, at most: a produce request
/// beyond it runs alone, so that a connection holds about one
/// `max_request_bytes` request more than it would without pipelining.
const PIPELINE_BYTES_MAX: usize = 16 << 20;

/// A request on its way to its answer.
struct Pending {
    work: HandlerFuture,
    api_key: ApiKey,
    version: i16,
    bytes_in: usize,
    started: Instant,
    /// For a request that runs alone: told once it is answered.
    answered: Option<oneshot::Sender<()>>,
}

/// What a connection knows of the Kafka listener that accepted it.
#[derive(Clone)]
pub struct Entry {
    /// The listener's place in the broker's list (`Config::kafka_listeners`).
    pub listener: u8,
    /// The listener's TLS configuration, for SSL and SASL_SSL listeners.
    pub tls: Option<Arc<ServerTls>>,
}

pub async fn serve(shard: Rc<Node>, stream: TcpStream, entry: Entry) {
    let peer: Option<SocketAddr> = stream.peer_addr().ok();
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(?peer, "TCP_NODELAY refused: {e}");
    }
    let mut writer = match crate::rt::second_handle(&stream) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(?peer, "closing connection: no second socket handle: {e}");
            let _ = stream.shutdown(std::net::Shutdown::Both).await;
            return;
        }
    };
    let (to_answer, answers) = local_channel::new_bounded(PIPELINE_DEPTH);
    let placed_bytes = Rc::new(Cell::new(0usize));
    let (answering_ended, ended) = oneshot::channel::<()>();
    let mut stream = stream;
    let Some(tls) = entry.tls else {
        let answering = crate::rt::spawn_local(answer(
            shard.clone(),
            Outbound::Plain(writer),
            answers,
            placed_bytes.clone(),
            answering_ended,
            peer,
        ));
        let context = Context {
            listener: entry.listener,
            peer,
        };
        read(
            &shard,
            &mut stream,
            to_answer,
            &placed_bytes,
            ended,
            context,
        )
        .await;
        // What was placed is answered before the socket closes.
        answering.await;
        let _ = stream.shutdown(std::net::Shutdown::Both).await;
        return;
    };
    let timeout = Duration::from_millis(shard.config.tls_handshake_timeout_ms);
    let handshake = future::or(
        async { Some(net::tls::accept(&mut stream, &mut writer, tls.config()).await) },
        future::or(
            async {
                crate::rt::sleep(timeout).await;
                None
            },
            async {
                shard.stopped().await;
                None
            },
        ),
    )
    .await;
    let mut reader = match handshake {
        Some(Ok(reader)) => reader,
        Some(Err(e)) => {
            shard.metrics.tls_handshake_failed();
            tracing::info!(?peer, "closing connection: TLS handshake failed: {e}");
            let _ = stream.shutdown(std::net::Shutdown::Both).await;
            return;
        }
        None => {
            shard.metrics.tls_handshake_failed();
            tracing::info!(
                ?peer,
                "closing connection: no TLS handshake within {} ms",
                timeout.as_millis()
            );
            let _ = stream.shutdown(std::net::Shutdown::Both).await;
            return;
        }
    };
    let session = reader.session().clone();
    let principal = session
        .borrow()
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|cert| principal::from_certificate(cert))
        .unwrap_or_else(|| principal::ANONYMOUS.to_string());
    tracing::debug!(?peer, %principal, "TLS connection");
    let answering = crate::rt::spawn_local(answer(
        shard.clone(),
        Outbound::Tls(writer, TlsWriter::new(session)),
        answers,
        placed_bytes.clone(),
        answering_ended,
        peer,
    ));
    let context = Context {
        listener: entry.listener,
        peer,
    };
    read(
        &shard,
        &mut reader,
        to_answer,
        &placed_bytes,
        ended,
        context,
    )
    .await;
    answering.await;
    // Dropping the stream only drops this descriptor: a receive still in
    // flight in io_uring holds the socket open until its cancellation is
    // processed. shutdown(2) acts on the socket, so the client sees the
    // close now. It fails harmlessly when the client has already gone.
    let _ = stream.shutdown(std::net::Shutdown::Both).await;
}

/// Reads requests and places them, until the client closes, the shard
/// stops, the connection idles out or the answering side ends.
/// What every request of a connection carries.
#[derive(Clone, Copy)]
struct Context {
    listener: u8,
    peer: Option<SocketAddr>,
}

async fn read<R: AsyncRead + Unpin>(
    shard: &Rc<Node>,
    stream: &mut R,
    to_answer: LocalSender<Pending>,
    placed_bytes: &Rc<Cell<usize>>,
    mut answering_ended: oneshot::Receiver<()>,
    context: Context,
) {
    let peer = context.peer;
    let limit = shard.config.max_request_bytes;
    let idle = Duration::from_millis(shard.config.connections_max_idle_ms);
    loop {
        let next = future::or(
            async { Some(net::read_frame(stream, limit).await) },
            future::or(
                async {
                    shard.stopped().await;
                    None
                },
                future::or(
                    async {
                        crate::rt::sleep(idle).await;
                        tracing::debug!(?peer, "closing idle connection");
                        None
                    },
                    async {
                        let _ = (&mut answering_ended).await;
                        None
                    },
                ),
            ),
        )
        .await;
        let frame = match next {
            None | Some(Ok(None)) => break,
            Some(Ok(Some(frame))) => frame,
            Some(Err(e)) => {
                tracing::warn!(?peer, "closing connection: {e}");
                break;
            }
        };
        // The length prefix counts: it is on the wire too.
        let bytes_in = frame.len() + 4;
        let started = Instant::now();
        let request = match net::decode_request(frame) {
            Ok(mut r) => {
                r.peer = peer;
                r.listener = context.listener;
                r
            }
            Err(e) => {
                shard.metrics.bytes_received(bytes_in);
                tracing::warn!(?peer, "closing connection: {e}");
                break;
            }
        };
        let api_key = request.api_key;
        let version = request.api_version();
        tracing::trace!(
            ?peer,
            ?api_key,
            version,
            correlation_id = request.correlation_id(),
            "request"
        );
        let placed = placed_bytes.get();
        let may_place = placed == 0 || placed + bytes_in <= PIPELINE_BYTES_MAX;
        // A panic in a handler is a bug; it must cost this connection only,
        // not the shard and every connection on it.
        let turn = std::panic::AssertUnwindSafe(kafka::take_turn(shard, request, may_place))
            .catch_unwind()
            .await;
        let Ok(turn) = turn else {
            tracing::error!(
                ?peer,
                ?api_key,
                version,
                "handler panicked; closing connection"
            );
            break;
        };
        let (work, answered, alone) = match turn {
            Turn::Placed(work) => {
                placed_bytes.set(placed_bytes.get() + bytes_in);
                (work, None, None)
            }
            Turn::Alone(work) => {
                let (tx, rx) = oneshot::channel();
                (work, Some(tx), Some(rx))
            }
        };
        let pending = Pending {
            work,
            api_key,
            version,
            bytes_in,
            started,
            answered,
        };
        // The queue may be full while the answering side ends (a write
        // failed): a sender waiting on a full queue is not told of that.
        let queued = future::or(async { to_answer.send(pending).await.is_ok() }, async {
            let _ = (&mut answering_ended).await;
            false
        })
        .await;
        if !queued {
            break;
        }
        if let Some(alone) = alone {
            // Queued requests outlive the answering side while this side
            // holds the queue: its end must be watched here too.
            let answered = future::or(async { alone.await.is_ok() }, async {
                let _ = (&mut answering_ended).await;
                false
            })
            .await;
            if !answered {
                break;
            }
        }
    }
}

/// Awaits each placed request in turn and writes its answer, until the
/// reading side is done or an answer ends the connection.
/// The writing side of a connection.
enum Outbound {
    Plain(TcpStream),
    Tls(TcpStream, TlsWriter),
}

impl Outbound {
    async fn write_chunks(&mut self, chunks: &[Bytes]) -> std::io::Result<()> {
        match self {
            Outbound::Plain(stream) => net::write_chunks(stream, chunks).await,
            Outbound::Tls(stream, tls) => tls.write_chunks(stream, chunks).await,
        }
    }

    /// A TLS session's end is told to the client (close_notify).
    async fn close(&mut self) {
        if let Outbound::Tls(stream, tls) = self {
            tls.close(stream).await;
        }
    }
}

async fn answer(
    shard: Rc<Node>,
    mut stream: Outbound,
    answers: LocalReceiver<Pending>,
    placed_bytes: Rc<Cell<usize>>,
    // Dropped on return, which tells the reading side.
    _ended: oneshot::Sender<()>,
    peer: Option<SocketAddr>,
) {
    while let Some(p) = answers.recv().await {
        let api_key = p.api_key;
        let version = p.version;
        let outcome = std::panic::AssertUnwindSafe(p.work).catch_unwind().await;
        if p.answered.is_none() {
            placed_bytes.set(placed_bytes.get() - p.bytes_in);
        }
        let done = |bytes_out| {
            shard
                .metrics
                .request_done(api_key as i16, p.bytes_in, bytes_out, p.started.elapsed())
        };
        let written = match outcome {
            Ok(Ok(Reply::Frame(chunks))) => {
                let bytes_out = chunks.iter().map(|c| c.len()).sum();
                let written = stream.write_chunks(&chunks).await;
                done(bytes_out);
                written
            }
            Ok(Ok(Reply::Nothing)) => {
                done(0);
                Ok(())
            }
            Ok(Ok(Reply::Close(reason))) => {
                done(0);
                tracing::info!(?peer, "closing connection: {reason}");
                break;
            }
            Ok(Err(e)) => {
                done(0);
                tracing::warn!(?peer, "closing connection: {e}");
                break;
            }
            Err(_) => {
                tracing::error!(
                    ?peer,
                    ?api_key,
                    version,
                    "handler panicked; closing connection"
                );
                break;
            }
        };
        if let Some(answered) = p.answered {
            let _ = answered.send(());
        }
        if let Err(e) = written {
            tracing::debug!(?peer, "writing the response failed: {e}");
            break;
        }
    }
    stream.close().await;
}
