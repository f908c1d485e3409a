//! systemd readiness notification (`Type=notify`): READY=1 once every shard
//! listens, STOPPING=1 when the first shard stops accepting. Without
//! NOTIFY_SOCKET (not started by systemd) every call is a no-op.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use sd_notify::NotifyState;

/// Start-up and shutdown bookkeeping shared by all shards, so that each
/// notification is sent exactly once, by whichever shard gets there last
/// (READY) or first (STOPPING).
#[derive(Default)]
pub struct Readiness {
    shards_listening: AtomicUsize,
    stopping_sent: AtomicBool,
}

impl Readiness {
    /// Called by each shard once its listener is bound; the last of
    /// `nr_shards` tells systemd the broker is ready, because before that a
    /// client could be refused by the shard the kernel picks for it.
    /// Returns whether this call made the broker ready.
    pub fn shard_listening(&self, nr_shards: usize) -> bool {
        let listening = self.shards_listening.fetch_add(1, Ordering::SeqCst) + 1;
        debug_assert!(listening <= nr_shards, "a shard reported listening twice");
        let ready = listening == nr_shards;
        if ready {
            send(NotifyState::Ready, "READY=1");
        }
        ready
    }

    /// Called by each shard when it stops accepting; only the first call
    /// sends STOPPING=1.
    pub fn shard_stopping(&self) {
        if !self.stopping_sent.swap(true, Ordering::SeqCst) {
            send(NotifyState::Stopping, "STOPPING=1");
        }
    }
}

fn send(state: NotifyState, name: &str) {
    // A failed notification must not stop the broker: systemd then times
    // the start out and says why; the log line helps find the cause.
    if let Err(e) = sd_notify::notify(&[state]) {
        tracing::warn!("systemd notification {name} failed: {e}");
    }
}
