//! Producer ids for idempotent producers, unique in the cluster and across
//! restarts. Each shard takes blocks of ids from the controller quorum
//! (AllocateProducerIds, as KRaft brokers do): the block is in the
//! replicated log before any id of it is handed out, so no two nodes, and
//! no restart, ever hand out the same id. Ids handed out before the
//! controller existed (`<data-dir>/producer-ids/shard-N`, one reserved
//! counter per shard, `shard << 40 | counter`) are stepped over.

use std::cell::RefCell;
use std::path::Path;

use replication::controller::{Applied, Command};

use crate::peers::Peers;
use crate::shard::Shard;

/// Ids taken from the controller at a time.
const BLOCK: u32 = 1_000;
/// Bits below the shard number in ids of the per-shard files.
const LEGACY_COUNTER_BITS: u32 = 40;

#[derive(Default)]
struct Allocator {
    next: i64,
    end: i64,
    /// The first id past every id of the per-shard files (read once).
    legacy_floor: Option<i64>,
}

/// One shard's producer ids: the block it hands out from, refilled from
/// the controller one request at a time.
pub struct ProducerIds {
    allocator: RefCell<Allocator>,
    refill: crate::rt::Semaphore,
}

impl Default for ProducerIds {
    fn default() -> Self {
        ProducerIds {
            allocator: RefCell::new(Allocator::default()),
            refill: crate::rt::Semaphore::new(1),
        }
    }
}

/// The first id above every id the per-shard files reserved.
pub async fn legacy_floor(data_dir: &Path) -> std::io::Result<i64> {
    let dir = data_dir.join("producer-ids");
    crate::rt::executor()
        .spawn_blocking(move || -> std::io::Result<i64> {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
                Err(e) => return Err(e),
            };
            let mut floor = 0i64;
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().to_string();
                let Some(shard) = name
                    .strip_prefix("shard-")
                    .and_then(|n| n.parse::<i64>().ok())
                else {
                    continue;
                };
                let text = std::fs::read_to_string(entry.path())?;
                let end: i64 = text.trim().parse().map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{}: {e}", entry.path().display()),
                    )
                })?;
                floor = floor.max((shard << LEGACY_COUNTER_BITS) | end);
            }
            Ok(floor)
        })
        .await
}

impl ProducerIds {
    /// A producer id no node of the cluster has handed out, nor ever will.
    pub async fn next(&self, shard: &Shard, peers: &dyn Peers) -> Result<i64, String> {
        let take = || {
            let mut a = self.allocator.borrow_mut();
            (a.next < a.end).then(|| {
                a.next += 1;
                a.next - 1
            })
        };
        if let Some(id) = take() {
            return Ok(id);
        }
        let _one = self
            .refill
            .acquire_permit(1)
            .await
            .map_err(|e| format!("shutting down: {e}"))?;
        // Another request may have refilled while this one waited.
        if let Some(id) = take() {
            return Ok(id);
        }
        let known = self.allocator.borrow().legacy_floor;
        let floor = match known {
            Some(f) => f,
            None => {
                let f = legacy_floor(&shard.config.data_dir)
                    .await
                    .map_err(|e| format!("reading the producer id files: {e}"))?;
                self.allocator.borrow_mut().legacy_floor = Some(f);
                f
            }
        };
        let command = Command::AllocateProducerIds {
            node_id: shard.node_id(),
            count: BLOCK,
            at_least: floor,
        };
        let first = match peers.submit(command).await {
            Ok(Ok(Applied::ProducerIds { first })) => first,
            Ok(Ok(other)) => return Err(format!("unexpected answer {other:?}")),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(e) => return Err(e.to_string()),
        };
        {
            let mut a = self.allocator.borrow_mut();
            a.next = first;
            a.end = first + i64::from(BLOCK);
        }
        take().ok_or_else(|| "an empty block".to_string())
    }
}
