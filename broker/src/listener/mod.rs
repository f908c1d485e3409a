//! Listening sockets and what every listener of the broker shares: the
//! bind (SO_REUSEPORT, so every shard binds the same port and the kernel
//! spreads connections over shards; SO_REUSEADDR, as Kafka does, so a
//! broker restarted after a crash binds while old connections linger in
//! TIME_WAIT), the bounded accept loop (`Acceptor`), and the reading of an
//! HTTP/1.x request head (`http`). The Kafka listener, the ingest
//! listeners and the metrics endpoint all go through here.

pub mod http;

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::time::Duration;

use crate::rt::{TcpListener, TcpStream};
use futures_lite::future;
use socket2::{Domain, Protocol, Socket, Type};

/// Pending connections the kernel queues per shard.
const BACKLOG: i32 = 1024;

pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    // SAFETY: the descriptor is a bound, listening TCP socket that nothing
    // else owns once `into_raw_fd` gives it up.
    Ok(unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

/// Pause after a failed accept (out of descriptors, say), so that a
/// persistent failure does not spin the shard.
const ACCEPT_RETRY: Duration = Duration::from_millis(10);

/// A listener that serves at most `connections_max` connections at once;
/// a connection over the bound is closed as soon as it is accepted.
pub struct Acceptor {
    listener: TcpListener,
    connections_max: usize,
    active: Rc<Cell<usize>>,
    /// Names the listener in log lines.
    what: &'static str,
}

/// What `Acceptor::next` gives.
pub enum Accepted {
    /// A connection to serve; its slot frees when the `Slot` drops.
    Serve(TcpStream, Slot),
    /// A connection over the bound, closed already.
    Refused,
}

/// The connections of a closed listener that are still being served.
pub struct Open(Rc<Cell<usize>>);

impl Open {
    pub fn count(&self) -> usize {
        self.0.get()
    }
}

/// One connection's place in its listener's bound.
pub struct Slot(Rc<Cell<usize>>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

impl Acceptor {
    pub fn new(listener: TcpListener, connections_max: usize, what: &'static str) -> Acceptor {
        Acceptor {
            listener,
            connections_max,
            active: Rc::new(Cell::new(0)),
            what,
        }
    }

    /// Connections being served now.
    pub fn active(&self) -> usize {
        self.active.get()
    }

    /// Closes the listening socket; the connections being served go on,
    /// and what is returned still counts them.
    pub fn close(self) -> Open {
        Open(self.active)
    }

    /// The next connection, or `None` once `stopped` resolves.
    pub async fn next(&self, stopped: impl Future<Output = ()>) -> Option<Accepted> {
        let stopped = std::pin::pin!(stopped);
        let mut stopped = stopped;
        loop {
            let accepted = future::or(async { Some(self.listener.accept().await) }, async {
                stopped.as_mut().await;
                None
            })
            .await?;
            let stream = match accepted {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("{}: accept failed: {e}", self.what);
                    crate::rt::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            };
            if self.active.get() >= self.connections_max {
                drop(stream);
                return Some(Accepted::Refused);
            }
            self.active.set(self.active.get() + 1);
            return Some(Accepted::Serve(stream, Slot(self.active.clone())));
        }
    }

    /// `serve_all` in a task of its own, with nothing to count refusals.
    pub fn spawn<F, Fut>(self, stopped: impl Future<Output = ()> + 'static, serve: F)
    where
        F: Fn(TcpStream) -> Fut + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        crate::rt::spawn_local(async move { self.serve_all(stopped, || {}, serve).await }).detach();
    }

    /// Serves every connection with `serve`, each in its own task, until
    /// `stopped` resolves; refused connections are only counted by
    /// `on_refused`.
    pub async fn serve_all<F, Fut>(
        &self,
        stopped: impl Future<Output = ()>,
        on_refused: impl Fn(),
        serve: F,
    ) where
        F: Fn(TcpStream) -> Fut,
        Fut: Future<Output = ()> + 'static,
    {
        let stopped = std::pin::pin!(stopped);
        let mut stopped = stopped;
        while let Some(accepted) = self.next(stopped.as_mut()).await {
            match accepted {
                Accepted::Refused => on_refused(),
                Accepted::Serve(stream, slot) => {
                    let served = serve(stream);
                    crate::rt::spawn_local(async move {
                        served.await;
                        drop(slot);
                    })
                    .detach();
                }
            }
        }
    }
}
