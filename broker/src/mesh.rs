//! The channel mesh between shards, as a transport: a request for another
//! shard is sent with an id, the owner answers with the same id, and the
//! caller's pending oneshot completes. What the messages are is the
//! business of the layer above (`node`), so this knows no subsystem.
//! Record data crosses as `Bytes`, never copied.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use futures_channel::oneshot;
pub use glommio::channels::channel_mesh::{Receivers, Senders};

pub enum Envelope<Req, Resp> {
    Request { id: u64, from: usize, body: Req },
    Response { id: u64, body: Resp },
}

/// Bound on messages queued from one shard to another.
pub const MESH_CHANNEL_CAPACITY: usize = 1024;

#[derive(Debug, thiserror::Error)]
#[error("shard {0} is not reachable (shutting down)")]
pub struct MeshError(pub usize);

/// This shard's side of the mesh: senders and the calls awaiting answers.
pub struct Mesh<Req: Send + 'static, Resp: Send + 'static> {
    senders: Option<Senders<Envelope<Req, Resp>>>,
    pending: RefCell<HashMap<u64, oneshot::Sender<Resp>>>,
    next_id: Cell<u64>,
}

impl<Req: Send + 'static, Resp: Send + 'static> Mesh<Req, Resp> {
    pub fn new(senders: Option<Senders<Envelope<Req, Resp>>>) -> Self {
        Mesh {
            senders,
            pending: RefCell::new(HashMap::new()),
            next_id: Cell::new(1),
        }
    }

    /// Sends `body` to shard `to` and waits for its answer.
    pub async fn call(&self, self_id: usize, to: usize, body: Req) -> Result<Resp, MeshError> {
        self.send(self_id, to, body).await?.answer().await
    }

    /// Sends `body` to shard `to` and returns once it is in that shard's
    /// channel, behind everything this shard sent there before (the
    /// channel keeps order), with the wait for its answer.
    pub async fn send(
        &self,
        self_id: usize,
        to: usize,
        body: Req,
    ) -> Result<Answer<Resp>, MeshError> {
        let senders = self.senders.as_ref().ok_or(MeshError(to))?;
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(id, tx);
        let sent = senders
            .send_to(
                to,
                Envelope::Request {
                    id,
                    from: self_id,
                    body,
                },
            )
            .await;
        if sent.is_err() {
            self.pending.borrow_mut().remove(&id);
            return Err(MeshError(to));
        }
        Ok(Answer { to, rx })
    }

    pub async fn respond(&self, to: usize, id: u64, body: Resp) {
        if let Some(senders) = &self.senders {
            // A closed peer is shutting down and no longer waits for it.
            let _ = senders.send_to(to, Envelope::Response { id, body }).await;
        }
    }

    pub fn complete(&self, id: u64, body: Resp) {
        if let Some(tx) = self.pending.borrow_mut().remove(&id) {
            // The caller may have given up (a fetch that already answered).
            let _ = tx.send(body);
        }
    }
}

/// The answer to a request already sent (see [`Mesh::send`]).
pub struct Answer<Resp> {
    to: usize,
    rx: oneshot::Receiver<Resp>,
}

impl<Resp> Answer<Resp> {
    pub async fn answer(self) -> Result<Resp, MeshError> {
        self.rx.await.map_err(|_| MeshError(self.to))
    }
}
