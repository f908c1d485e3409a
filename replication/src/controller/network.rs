//! An in-process network between controllers, for tests: a `Router` that
//! any number of nodes on any number of executor threads share. Each node
//! serves the RPCs addressed to it on its own executor; requests and
//! replies cross as serde_json bytes, as they would over TCP, so every
//! message type is known to round-trip. A test can cut a node off
//! (`isolate`) and reconnect it (`heal`), or take it off the network
//! (`unregister`, when it stops).
//!
//! This is one of the two transports under `rpc`: it only moves the bytes
//! (`RouterLink`); openraft's client and the dispatch to the local Raft are
//! `rpc`'s, shared with `tcp`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_channel::{mpsc, oneshot};
use futures_util::StreamExt;
use openraft::network::RaftNetworkFactory;
use openraft::BasicNode;

use super::rpc::{dispatch, Reply, Request, RpcClient, Transport};
use super::runtime::spawn_local;
use super::{ControllerId, ControllerRaft, TypeConfig};

struct Envelope {
    request: Vec<u8>,
    reply: oneshot::Sender<Vec<u8>>,
}

#[derive(Default)]
struct Routes {
    nodes: BTreeMap<ControllerId, mpsc::UnboundedSender<Envelope>>,
    isolated: BTreeSet<ControllerId>,
}

/// The shared switchboard. Cheap to clone, `Send`.
#[derive(Clone, Default)]
pub struct Router {
    routes: Arc<Mutex<Routes>>,
}

impl Router {
    pub fn new() -> Router {
        Router::default()
    }

    fn routes(&self) -> MutexGuard<'_, Routes> {
        // A panic elsewhere while holding the lock leaves the map intact.
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The network factory node `from` gives to its `Raft`.
    pub fn network(&self, from: ControllerId) -> RouterNetwork {
        RouterNetwork {
            router: self.clone(),
            from,
        }
    }

    /// Serves RPCs addressed to `node` with `raft`, in tasks on the current
    /// executor, until the node is unregistered.
    pub fn serve(&self, node: ControllerId, raft: ControllerRaft) {
        let (tx, mut rx) = mpsc::unbounded::<Envelope>();
        self.routes().nodes.insert(node, tx);
        spawn_local(async move {
            while let Some(env) = rx.next().await {
                let raft = raft.clone();
                // One task per request: a snapshot being installed must not
                // hold up votes and heartbeats.
                spawn_local(async move {
                    let reply = handle(&raft, &env.request).await;
                    let bytes = serde_json::to_vec(&reply).unwrap_or_default();
                    let _ = env.reply.send(bytes);
                });
            }
        });
    }

    /// Takes `node` off the network: RPCs to it fail as unreachable.
    pub fn unregister(&self, node: ControllerId) {
        self.routes().nodes.remove(&node);
    }

    /// Cuts every link of `node`, both ways.
    pub fn isolate(&self, node: ControllerId) {
        self.routes().isolated.insert(node);
    }

    pub fn heal(&self, node: ControllerId) {
        self.routes().isolated.remove(&node);
    }

    fn link_up(&self, from: ControllerId, to: ControllerId) -> bool {
        let routes = self.routes();
        !routes.isolated.contains(&from) && !routes.isolated.contains(&to)
    }

    async fn call(
        &self,
        from: ControllerId,
        to: ControllerId,
        request: &Request,
    ) -> Result<Reply, String> {
        let bytes = serde_json::to_vec(request).map_err(|e| format!("encode: {e}"))?;
        let rx = {
            if !self.link_up(from, to) {
                return Err(format!("link {from} -> {to} is cut"));
            }
            let routes = self.routes();
            let Some(tx) = routes.nodes.get(&to) else {
                return Err(format!("node {to} is not on the network"));
            };
            let (reply, rx) = oneshot::channel();
            tx.unbounded_send(Envelope {
                request: bytes,
                reply,
            })
            .map_err(|_| format!("node {to} stopped serving"))?;
            rx
        };
        let bytes = rx
            .await
            .map_err(|_| format!("node {to} dropped the request"))?;
        // A link cut while the request was in flight loses the answer.
        if !self.link_up(from, to) {
            return Err(format!("link {from} -> {to} is cut"));
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("decode: {e}"))
    }
}

async fn handle(raft: &ControllerRaft, request: &[u8]) -> Reply {
    match serde_json::from_slice(request) {
        Ok(request) => dispatch(raft, None, request).await,
        Err(e) => Reply::Failed(format!("decode: {e}")),
    }
}

/// Node `from`'s network factory.
pub struct RouterNetwork {
    router: Router,
    from: ControllerId,
}

impl RaftNetworkFactory<TypeConfig> for RouterNetwork {
    type Network = RouterConnection;

    async fn new_client(&mut self, target: ControllerId, _node: &BasicNode) -> RouterConnection {
        RpcClient::new(RouterLink {
            router: self.router.clone(),
            from: self.from,
            target,
        })
    }
}

/// Node `from`'s openraft client for `target`, over the router.
pub type RouterConnection = RpcClient<RouterLink>;

/// Node `from`'s link to `target` through the router.
pub struct RouterLink {
    router: Router,
    from: ControllerId,
    target: ControllerId,
}

impl Transport for RouterLink {
    fn target(&self) -> ControllerId {
        self.target
    }

    async fn send(&self, request: Request) -> Result<Reply, String> {
        self.router.call(self.from, self.target, &request).await
    }
}
