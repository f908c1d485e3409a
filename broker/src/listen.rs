//! The client listener of one shard. Every shard binds the same port with
//! SO_REUSEPORT (the kernel spreads connections over shards) and with
//! SO_REUSEADDR, as Kafka does: without it, a broker restarted after a crash
//! cannot bind while the old connections linger in TIME_WAIT.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};

use glommio::net::TcpListener;
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
