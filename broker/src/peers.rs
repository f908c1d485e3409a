//! What a subsystem may ask of the other shards of its node, without
//! knowing the mesh's messages: the node (`node::Node`) implements it over
//! the mesh, and hands itself to the subsystems as `Rc<dyn Peers>`.

use std::sync::Arc;

use replication::controller::{Command, CommandResult, SubmitError};

use crate::metadata::ClusterMetadata;

/// A future that stays on this shard's thread, boxed so that a trait
/// object can return it.
pub type LocalFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>>;

/// The rest of this node, from any shard.
pub trait Peers {
    /// Brings `command` to this node's controller client (on shard 0) and
    /// waits until every shard has applied the metadata that includes it.
    fn submit(&self, command: Command) -> LocalFuture<'_, Result<CommandResult, SubmitError>>;
    /// Makes every shard of this node (this one included) apply `meta`,
    /// and waits.
    fn apply_everywhere(&self, meta: Arc<ClusterMetadata>) -> LocalFuture<'_, ()>;
    /// Tells every shard that this node lost (true) or regained (false)
    /// the controller.
    fn set_isolated_everywhere(&self, isolated: bool) -> LocalFuture<'_, ()>;
}
