//! The metadata state machine openraft applies committed entries to: it
//! holds the `ClusterMetadata`, answers each command with its
//! `CommandResult`, publishes the applied metadata to watchers after every
//! batch, and builds and installs snapshots.
//!
//! Snapshots are `ClusterMetadata` encoded with serde_json, not rkyv: the
//! snapshot sits next to openraft's own metadata (membership, log ids),
//! which only offers serde; cluster metadata is small (kilobytes to a few
//! megabytes) and snapshots are rare, so a self-describing format that an
//! operator can read with `jq` costs nothing that matters. The hot
//! replication path (partition data) uses rkyv; this is not it.
//!
//! With a snapshot directory, every snapshot built or installed is also
//! written there (write, fsync, rename) and loaded again on open, so that a
//! controller whose log was purged up to a snapshot restarts from it.

use std::cell::RefCell;
use std::io;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use openraft::async_runtime::{WatchReceiver, WatchSender};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};

use super::files::{invalid_data, read_if_exists, write_atomically};
use super::metadata::{Applied, ClusterMetadata};
use super::sync::{LocalWatch, LocalWatchReceiver, LocalWatchSender};
use super::{LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use openraft::async_runtime::Watch;

const SNAPSHOT_FILE: &str = "snapshot.json";

/// The applied metadata as readers see it: cheap to clone (the metadata is
/// shared, copied on write by the state machine), and `Send` so that it can
/// be handed to other shards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedMetadata {
    /// The last log entry reflected (None before anything is applied).
    pub last_applied: Option<LogId>,
    pub metadata: Arc<ClusterMetadata>,
}

/// Watches the applied metadata of one controller (on its executor).
#[derive(Clone)]
pub struct MetadataWatch {
    rx: LocalWatchReceiver<AppliedMetadata>,
}

impl MetadataWatch {
    /// The metadata applied so far.
    pub fn current(&self) -> AppliedMetadata {
        self.rx.borrow_watched().clone()
    }

    /// Waits for the next change, and returns it; `None` once the state
    /// machine is gone (the controller stopped).
    pub async fn changed(&mut self) -> Option<AppliedMetadata> {
        self.rx.changed().await.ok()?;
        Some(self.rx.borrow_and_update().clone())
    }

    /// Waits until the applied metadata satisfies `pred`.
    pub async fn wait_until(
        &mut self,
        pred: impl Fn(&AppliedMetadata) -> bool,
    ) -> Option<AppliedMetadata> {
        loop {
            {
                let cur = self.rx.borrow_and_update();
                if pred(&cur) {
                    return Some(cur.clone());
                }
            }
            self.rx.changed().await.ok()?;
        }
    }
}

/// A snapshot as held in memory and on disk.
#[derive(Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    /// serde_json of `ClusterMetadata`.
    data: Vec<u8>,
}

/// The latest snapshot, shared between the state machine and the builders
/// it hands out (a builder records what it built).
#[derive(Clone, Default)]
struct SnapshotSlot {
    current: Rc<RefCell<Option<StoredSnapshot>>>,
    dir: Option<PathBuf>,
}

impl SnapshotSlot {
    /// Keeps `snap` unless a newer one is there already (a builder may
    /// finish after a newer snapshot was installed).
    fn store(&self, snap: StoredSnapshot) -> io::Result<()> {
        if let Some(cur) = &*self.current.borrow() {
            if cur.meta.last_log_id > snap.meta.last_log_id {
                return Ok(());
            }
        }
        if let Some(dir) = &self.dir {
            let bytes = serde_json::to_vec(&snap).map_err(invalid_data)?;
            write_atomically(dir, SNAPSHOT_FILE, &bytes, true)?;
        }
        *self.current.borrow_mut() = Some(snap);
        Ok(())
    }
}

pub struct MetadataStateMachine {
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    metadata: Arc<ClusterMetadata>,
    snapshot: SnapshotSlot,
    published: LocalWatchSender<AppliedMetadata>,
}

impl MetadataStateMachine {
    /// An empty state machine whose snapshots live in memory only.
    pub fn new() -> (MetadataStateMachine, MetadataWatch) {
        let (published, rx) = LocalWatch::channel(AppliedMetadata::default());
        let sm = MetadataStateMachine {
            last_applied: None,
            last_membership: StoredMembership::default(),
            metadata: Arc::default(),
            snapshot: SnapshotSlot::default(),
            published,
        };
        (sm, MetadataWatch { rx })
    }

    /// A state machine that keeps its snapshots in `dir`, starting from
    /// the snapshot found there, if any.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<(MetadataStateMachine, MetadataWatch)> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        let (mut sm, watch) = MetadataStateMachine::new();
        if let Some(bytes) = read_if_exists(&dir.join(SNAPSHOT_FILE))? {
            let snap: StoredSnapshot = serde_json::from_slice(&bytes).map_err(invalid_data)?;
            sm.load(&snap)?;
            *sm.snapshot.current.borrow_mut() = Some(snap);
        }
        sm.snapshot.dir = Some(dir);
        Ok((sm, watch))
    }

    fn load(&mut self, snap: &StoredSnapshot) -> io::Result<()> {
        let metadata: ClusterMetadata = serde_json::from_slice(&snap.data).map_err(invalid_data)?;
        self.metadata = Arc::new(metadata);
        self.last_applied = snap.meta.last_log_id;
        self.last_membership = snap.meta.last_membership.clone();
        self.publish();
        Ok(())
    }

    fn publish(&self) {
        let applied = AppliedMetadata {
            last_applied: self.last_applied,
            metadata: self.metadata.clone(),
        };
        // Not `send`: it fails when no one watches, and that is fine.
        self.published.send_if_modified(|cur| {
            *cur = applied;
            true
        });
    }
}

/// Builds a snapshot of the state as it was when the builder was made.
pub struct MetadataSnapshotBuilder {
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    metadata: Arc<ClusterMetadata>,
    slot: SnapshotSlot,
}

impl RaftSnapshotBuilder<TypeConfig> for MetadataSnapshotBuilder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let data = serde_json::to_vec(&*self.metadata).map_err(invalid_data)?;
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.last_membership.clone(),
        };
        self.slot.store(StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        })?;
        Ok(Snapshot {
            meta,
            snapshot: data,
        })
    }
}

impl RaftStateMachine<TypeConfig> for MetadataStateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = MetadataSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut result = Ok(());
        while let Some(item) = entries.next().await {
            let (entry, responder) = match item {
                Ok(x) => x,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let index = entry.log_id.index;
            self.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Ok(Applied::Done),
                EntryPayload::Normal(command) => {
                    Arc::make_mut(&mut self.metadata).apply(index, &command)
                }
                EntryPayload::Membership(m) => {
                    self.last_membership = StoredMembership::new(Some(entry.log_id), m);
                    Ok(Applied::Done)
                }
            };
            if let Some(r) = responder {
                r.send(response);
            }
        }
        // Watchers see whole batches; also what was applied before an error.
        self.publish();
        result
    }

    async fn get_snapshot_builder(&mut self) -> MetadataSnapshotBuilder {
        MetadataSnapshotBuilder {
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
            metadata: self.metadata.clone(),
            slot: self.snapshot.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        let snap = StoredSnapshot {
            meta: meta.clone(),
            data: snapshot,
        };
        self.load(&snap)?;
        self.snapshot.store(snap)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self.snapshot.current.borrow().as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: s.data.clone(),
        }))
    }
}
