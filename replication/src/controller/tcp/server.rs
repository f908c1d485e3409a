//! The serving side of the controller transport: an accept loop that holds
//! at most `connections_max` connections, and per connection a task that
//! checks the `Hello`, then reads requests and serves each in a task of its
//! own (a snapshot being installed must not hold up votes and heartbeats),
//! at most `requests_in_flight_max` at once, replying on the same
//! connection. A bad frame or a protocol violation closes that connection
//! with a log line; nothing a peer sends can panic the node.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_channel::{mpsc, oneshot};
use futures_lite::future::or;
use futures_lite::AsyncWriteExt;
use futures_util::future::{FutureExt, Shared};
use futures_util::StreamExt;
use openraft::AsyncRuntime;

use super::wire::{encode, read_frame, Frame};
use super::{Stream, TcpConfig, TcpError};
use crate::controller::liveness::Liveness;
use crate::controller::rpc::{dispatch, Reply};
use crate::controller::runtime::{spawn_local, Semaphore, StaticPermit, TcpListener, TcpStream};
use crate::controller::{Controller, ControllerId, ControllerRaft, GlommioRuntime};

/// A failing `accept` (out of file descriptors, most likely) is retried
/// after this rather than in a hot loop.
const ACCEPT_RETRY_MS: u64 = 100;

/// Resolves (to an error) when the server's handle stops it.
type Stop = Shared<oneshot::Receiver<()>>;

/// Held by every task of a server; the handle learns they have all ended
/// when the channel has no sender left. Nothing is ever sent on it.
type Alive = mpsc::UnboundedSender<Infallible>;

/// A bound, not yet serving, listener. Binding first lets a node learn its
/// port (an ephemeral one in tests) before its `Raft` exists.
pub struct TcpServer {
    id: ControllerId,
    listener: TcpListener,
    local_addr: SocketAddr,
    config: TcpConfig,
}

impl TcpServer {
    /// Binds `addr` for node `id`, on the current executor.
    pub fn bind(
        id: ControllerId,
        addr: SocketAddr,
        config: TcpConfig,
    ) -> Result<TcpServer, TcpError> {
        config.validate()?;
        let listener = TcpListener::bind(addr).map_err(std::io::Error::from)?;
        let local_addr = listener.local_addr().map_err(std::io::Error::from)?;
        Ok(TcpServer {
            id,
            listener,
            local_addr,
            config,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves the RPCs addressed to this node with its `Raft`, in tasks on
    /// the current executor, until the handle stops it (or is dropped).
    pub fn serve(self, controller: &Controller) -> ServerHandle {
        let (stop_tx, stop_rx) = oneshot::channel();
        let (alive, alive_rx) = mpsc::unbounded();
        let shutdown_timeout = Duration::from_millis(self.config.shutdown_timeout_ms);
        let node = Rc::new(Node {
            id: self.id,
            raft: controller.raft.clone(),
            liveness: controller.liveness.clone(),
            config: self.config,
        });
        tracing::info!(node = node.id, addr = %self.local_addr, "controller server listening");
        spawn_local(accept_loop(self.listener, node, stop_rx.shared(), alive));
        ServerHandle {
            local_addr: self.local_addr,
            stop: Some(stop_tx),
            alive: alive_rx,
            shutdown_timeout,
        }
    }
}

/// A serving server. Dropping it stops the server without waiting.
pub struct ServerHandle {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    alive: mpsc::UnboundedReceiver<Infallible>,
    shutdown_timeout: Duration,
}

/// `ServerHandle::shutdown` gave up waiting for the server's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the controller server's tasks did not end within {0:?}")]
pub struct ShutdownTimedOut(pub Duration);

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes every connection and waits (at most
    /// `shutdown_timeout_ms`) until the listener and the connections are
    /// closed, so that the port can be bound again.
    pub async fn shutdown(mut self) -> Result<(), ShutdownTimedOut> {
        drop(self.stop.take());
        let timeout = self.shutdown_timeout;
        match GlommioRuntime::timeout(timeout, self.alive.next()).await {
            Ok(_) => Ok(()),
            Err(_) => Err(ShutdownTimedOut(timeout)),
        }
    }
}

/// What a server's tasks share.
struct Node {
    id: ControllerId,
    raft: ControllerRaft,
    liveness: Rc<Liveness>,
    config: TcpConfig,
}

async fn accept_loop(listener: TcpListener, node: Rc<Node>, stop: Stop, alive: Alive) {
    let connections = Rc::new(Semaphore::new(node.config.connections_max as u64));
    loop {
        let accepted = or(async { Some(listener.accept().await) }, async {
            let _ = stop.clone().await;
            None
        })
        .await;
        let stream = match accepted {
            None => break,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                tracing::warn!(node = node.id, "controller server: accept failed: {e}");
                GlommioRuntime::sleep(Duration::from_millis(ACCEPT_RETRY_MS)).await;
                continue;
            }
        };
        let peer = stream.peer_addr().ok();
        let Ok(permit) = connections.try_acquire_static_permit(1) else {
            tracing::warn!(
                node = node.id,
                ?peer,
                "controller server: refusing a connection, {} are open",
                node.config.connections_max
            );
            continue;
        };
        let (node, stop, alive) = (node.clone(), stop.clone(), alive.clone());
        spawn_local(async move {
            match serve_connection(stream, &node, &stop, &alive).await {
                Ok(()) => tracing::debug!(node = node.id, ?peer, "controller connection closed"),
                Err(e) => {
                    tracing::warn!(node = node.id, ?peer, "closing controller connection: {e}")
                }
            }
            drop((permit, alive));
        });
    }
    tracing::info!(node = node.id, "controller server stopped");
    drop((listener, alive));
}

/// Serves one connection until it closes, breaks the protocol, or the
/// server stops.
async fn serve_connection(
    stream: TcpStream,
    node: &Rc<Node>,
    stop: &Stop,
    alive: &Alive,
) -> Result<(), TcpError> {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(node = node.id, "TCP_NODELAY refused: {e}");
    }
    let hello_timeout = Duration::from_millis(node.config.hello_timeout_ms);
    let stream = match GlommioRuntime::timeout(
        hello_timeout,
        Stream::accept(stream, node.config.tls.as_deref()),
    )
    .await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            return Err(TcpError::Protocol(format!(
                "refused: TLS handshake failed: {e}"
            )))
        }
        Err(_) => {
            return Err(TcpError::Protocol(format!(
                "refused: no TLS handshake within {hello_timeout:?}"
            )))
        }
    };
    let limit = node.config.frame_bytes_max;
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    // A reply travels with its request's permit, so that replies waiting
    // for a slow reader count against the in-flight bound too.
    let (replies, mut outbox) = mpsc::unbounded::<(Vec<u8>, StaticPermit)>();
    let in_flight = Rc::new(Semaphore::new(node.config.requests_in_flight_max as u64));

    let reading = async {
        let hello_timeout = Duration::from_millis(node.config.hello_timeout_ms);
        let hello =
            match GlommioRuntime::timeout(hello_timeout, read_frame(&mut reader, limit)).await {
                Err(_) => {
                    return Err(TcpError::Protocol(format!(
                        "no hello within {hello_timeout:?}"
                    )))
                }
                Ok(r) => r?,
            };
        let from = match hello {
            None => return Ok(()),
            Some(Frame::Hello { cluster, from, to }) => {
                if cluster != node.config.cluster {
                    return Err(TcpError::Protocol(format!(
                        "hello from node {from} of cluster {cluster:?}; this is {:?}",
                        node.config.cluster
                    )));
                }
                if to != node.id {
                    return Err(TcpError::Protocol(format!(
                        "hello from node {from} meant for node {to}; this is node {}",
                        node.id
                    )));
                }
                from
            }
            Some(other) => {
                return Err(TcpError::Protocol(format!(
                    "a {} frame before hello",
                    other.kind()
                )))
            }
        };
        tracing::debug!(node = node.id, from, "controller connection from a peer");
        let idle = Duration::from_millis(node.config.idle_timeout_ms);
        loop {
            let frame = match GlommioRuntime::timeout(idle, read_frame(&mut reader, limit)).await {
                // The peer redials on its next RPC.
                Err(_) => return Ok(()),
                Ok(r) => match r? {
                    None => return Ok(()),
                    Some(frame) => frame,
                },
            };
            let Frame::Request {
                correlation,
                request,
            } = frame
            else {
                return Err(TcpError::Protocol(format!(
                    "a {} frame from node {from}",
                    frame.kind()
                )));
            };
            // At the limit, stop reading: the peer's RPCs time out on
            // their own deadlines, and TCP pushes back on it.
            let permit = in_flight
                .acquire_static_permit(1)
                .await
                .map_err(|e| TcpError::Protocol(format!("in-flight bound: {e}")))?;
            let (node, stop, alive, replies) =
                (node.clone(), stop.clone(), alive.clone(), replies.clone());
            spawn_local(async move {
                let served = or(
                    async { Some(dispatch(&node.raft, Some(&node.liveness), request).await) },
                    async {
                        let _ = stop.await;
                        None
                    },
                )
                .await;
                let Some(reply) = served else {
                    return;
                };
                let frame = encode(&Frame::Reply { correlation, reply }, limit).or_else(|e| {
                    // An answer too large to send still answers, so the
                    // caller fails now rather than at its deadline.
                    tracing::warn!(node = node.id, from, "controller reply not sent: {e}");
                    let reply = Reply::Failed(e.to_string());
                    encode(&Frame::Reply { correlation, reply }, limit)
                });
                // The connection may be gone; its caller has failed already.
                if let Ok(frame) = frame {
                    let _ = replies.unbounded_send((frame, permit));
                }
                drop(alive);
            });
        }
    };
    let writing = async {
        while let Some((frame, _permit)) = outbox.next().await {
            writer.write_all(&frame).await?;
            writer.flush().await?;
        }
        Ok(())
    };
    let stopped = async {
        let _ = stop.clone().await;
        Ok(())
    };
    or(reading, or(writing, stopped)).await
}
