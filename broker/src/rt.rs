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
