//! InitProducerId (v0-v5) for idempotent producers: hands out producer ids
//! that never repeat in the cluster, across restarts too. Transactions are
//! not supported yet: a request with a transactional id is refused.
//!
//! Each shard takes blocks of ids from the controller quorum
//! (AllocateProducerIds, as KRaft brokers do): the block is in the
//! replicated log before any id of it is handed out, so no two nodes, and
//! no restart, ever hand out the same id. Ids handed out before the
//! controller existed (`<data-dir>/producer-ids/shard-N`, one reserved
//! counter per shard, `shard << 40 | counter`) are stepped over.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError as Kafka;
use net::RequestFrame;
use replication::controller::{Applied, Command};

use super::{respond, HandlerError, Reply};
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

thread_local! {
    /// Each shard runs on its own thread: this is that shard's allocator.
    static ALLOCATOR: RefCell<Allocator> = RefCell::new(Allocator::default());
    /// One block request at a time per shard.
    static REFILL: Rc<glommio::sync::Semaphore> = Rc::new(glommio::sync::Semaphore::new(1));
}

/// The first id above every id the per-shard files reserved.
pub async fn legacy_floor(data_dir: &Path) -> std::io::Result<i64> {
    let dir = data_dir.join("producer-ids");
    glommio::executor()
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

async fn next_producer_id(shard: &Rc<Shard>) -> Result<i64, String> {
    let take = || {
        ALLOCATOR.with(|a| {
            let mut a = a.borrow_mut();
            (a.next < a.end).then(|| {
                a.next += 1;
                a.next - 1
            })
        })
    };
    if let Some(id) = take() {
        return Ok(id);
    }
    let gate = REFILL.with(|g| g.clone());
    let _one = gate
        .acquire_permit(1)
        .await
        .map_err(|e| format!("shutting down: {e}"))?;
    // Another request may have refilled while this one waited.
    if let Some(id) = take() {
        return Ok(id);
    }
    let floor = match ALLOCATOR.with(|a| a.borrow().legacy_floor) {
        Some(f) => f,
        None => {
            let f = legacy_floor(&shard.config.data_dir)
                .await
                .map_err(|e| format!("reading the producer id files: {e}"))?;
            ALLOCATOR.with(|a| a.borrow_mut().legacy_floor = Some(f));
            f
        }
    };
    let command = Command::AllocateProducerIds {
        node_id: shard.node_id(),
        count: BLOCK,
        at_least: floor,
    };
    let first = match crate::cluster::submit(shard, command).await {
        Ok(Ok(Applied::ProducerIds { first })) => first,
        Ok(Ok(other)) => return Err(format!("unexpected answer {other:?}")),
        Ok(Err(e)) => return Err(e.to_string()),
        Err(e) => return Err(e.to_string()),
    };
    ALLOCATOR.with(|a| {
        let mut a = a.borrow_mut();
        a.next = first;
        a.end = first + i64::from(BLOCK);
    });
    take().ok_or_else(|| "an empty block".to_string())
}

pub async fn handle(
    shard: &Rc<Shard>,
    frame: &RequestFrame,
    request: InitProducerIdRequest,
) -> Result<Reply, HandlerError> {
    let mut response = InitProducerIdResponse::default();
    response.producer_id = ProducerId(-1);
    response.producer_epoch = -1;
    if request.transactional_id.is_some() {
        // Transactions come later; say so rather than pretend.
        response.error_code = Kafka::UnsupportedVersion.code();
        return respond(frame, &response);
    }
    // Without a transactional id Kafka always starts a fresh producer id at
    // epoch 0, whatever id and epoch the client had before (KIP-360).
    match next_producer_id(shard).await {
        Ok(id) => {
            response.producer_id = ProducerId(id);
            response.producer_epoch = 0;
        }
        Err(e) => {
            // Retriable: clients ask again once the controller answers.
            tracing::warn!(error = %e, "cannot reserve producer ids");
            response.error_code = Kafka::CoordinatorNotAvailable.code();
        }
    }
    respond(frame, &response)
}
