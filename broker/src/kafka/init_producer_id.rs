//! InitProducerId (v0-v5) for idempotent producers: hands out producer ids
//! that never repeat, across restarts too. Transactions are not supported
//! yet: a request with a transactional id is refused.
//!
//! Ids are per shard, `shard << 40 | counter`, so shards never coordinate;
//! each shard reserves counters in blocks, persisting the end of the block
//! (fsynced) before handing out any id of it. A crash wastes at most one
//! block; an id is never handed out twice.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError as Kafka;
use net::RequestFrame;

use super::{respond, HandlerError, Reply};
use crate::shard::Shard;

/// Ids reserved per persisted step.
const BLOCK: i64 = 1_000;
/// Bits of the id below the shard number.
const COUNTER_BITS: u32 = 40;

#[derive(Default)]
struct Allocator {
    next: i64,
    reserved_until: i64,
    loaded: bool,
}

thread_local! {
    /// Each shard runs on its own thread: this is that shard's allocator.
    static ALLOCATOR: RefCell<Allocator> = RefCell::new(Allocator::default());
}

fn state_file(shard: &Shard) -> PathBuf {
    shard
        .config
        .data_dir
        .join("producer-ids")
        .join(format!("shard-{}", shard.id))
}

/// Reads the persisted end of the last reserved block and reserves the next
/// block, durably, off the shard's thread.
async fn reserve(path: PathBuf, from_disk: bool, current_end: i64) -> std::io::Result<(i64, i64)> {
    glommio::executor()
        .spawn_blocking(move || -> std::io::Result<(i64, i64)> {
            use std::io::Write;
            let start = if from_disk {
                match std::fs::read_to_string(&path) {
                    Ok(s) => s.trim().parse::<i64>().map_err(|e| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("{}: {e}", path.display()),
                        )
                    })?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                    Err(e) => return Err(e),
                }
            } else {
                current_end
            };
            let end = start + BLOCK;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension("tmp");
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(f, "{end}")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok((start, end))
        })
        .await
}

async fn next_producer_id(shard: &Shard) -> std::io::Result<i64> {
    let need = ALLOCATOR.with(|a| {
        let a = a.borrow();
        (!a.loaded || a.next >= a.reserved_until).then_some((!a.loaded, a.reserved_until))
    });
    if let Some((from_disk, end)) = need {
        let (start, reserved_until) = reserve(state_file(shard), from_disk, end).await?;
        ALLOCATOR.with(|a| {
            let mut a = a.borrow_mut();
            // Another request may have reserved meanwhile: keep the larger.
            if !a.loaded || reserved_until > a.reserved_until {
                a.next = a.next.max(start);
                a.reserved_until = reserved_until;
                a.loaded = true;
            }
        });
    }
    Ok(ALLOCATOR.with(|a| {
        let mut a = a.borrow_mut();
        let counter = a.next;
        a.next += 1;
        ((shard.id as i64) << COUNTER_BITS) | counter
    }))
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
            tracing::error!(error = %e, "cannot reserve producer ids");
            response.error_code = Kafka::KafkaStorageError.code();
        }
    }
    respond(frame, &response)
}
