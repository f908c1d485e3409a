//! The runtime seam: the few glommio facilities the broker's tasks use
//! (spawning, timers, the semaphore, TCP sockets, task queues), named once
//! here so that the rest of the broker does not name the runtime. Only the
//! executor pool (`server`), the start-up probes (`preflight`) and the
//! cross-shard channels (`mesh`) reach glommio directly. A move to another
//! io_uring runtime starts in this file.

pub use glommio::net::{TcpListener, TcpStream};
pub use glommio::sync::Semaphore;
pub use glommio::timer::sleep;
pub use glommio::{executor, spawn_local, spawn_local_into, yield_if_needed, Latency, Shares};

pub use glommio::channels::local_channel;

/// A second handle on a connected socket (a duplicate of its descriptor),
/// so that one task reads from it while another writes.
pub fn second_handle(stream: &TcpStream) -> std::io::Result<TcpStream> {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: fcntl only reads the descriptor; it stays open while
    // `stream` is borrowed.
    let fd = unsafe { libc::fcntl(stream.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    Ok(unsafe { TcpStream::from_raw_fd(fd) })
}
