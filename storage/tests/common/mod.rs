//! Helpers shared by the storage integration tests: a glommio executor to
//! run each test on, and batch builders.

#![allow(dead_code)]

use std::future::Future;

use bytes::Bytes;
use glommio::LocalExecutorBuilder;
use storage::{LogConfig, PartitionLog};

/// Runs `f` on a fresh single-shard executor with a small io_memory, as the
/// broker does on machines with a low memlock limit.
pub fn run<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    LocalExecutorBuilder::default()
        .io_memory(2 << 20)
        .spawn(f)
        .expect("executor starts")
        .join()
        .expect("executor finishes")
}

pub fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 16 << 10,
        index_interval_bytes: 1024,
        tail_cache_bytes: 8 << 10,
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// A batch whose values carry `tag`, so reads can be checked byte for byte.
pub fn tagged_batch(tag: u64, records: usize, value_len: usize, ts: i64) -> Bytes {
    storage::testing::batch_with_values(
        ts,
        (0..records).map(|r| {
            let mut v = tag.to_be_bytes().to_vec();
            v.extend((0..value_len).map(|j| (j as u64 + tag + r as u64) as u8));
            v
        }),
    )
}

/// Reads the whole readable log as a list of (base offset, batch bytes).
pub async fn read_all(log: &PartitionLog) -> Vec<(i64, Bytes)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    loop {
        let got = log.read(offset, 1 << 20).await.expect("read");
        if got.chunks.is_empty() {
            break;
        }
        for chunk in got.chunks {
            let mut at = 0;
            while at < chunk.len() {
                let size = storage::batch::peek_batch_size(&chunk[at..]).expect("size");
                let b = chunk.slice(at..at + size);
                let h = storage::batch::validate(&b).expect("valid");
                offset = h.next_offset();
                out.push((h.base_offset, b));
                at += size;
            }
        }
    }
    out
}

/// The batch bytes with offset fields zeroed, for comparing with input.
pub fn unstamped(b: &Bytes) -> Vec<u8> {
    let mut v = b.to_vec();
    v[..8].fill(0);
    v
}

/// Reads the whole log offset by offset, as a consumer skipping damage
/// would: every batch served must be valid; `Corrupt` errors are counted
/// and stepped over. Returns (batches served, corrupt errors).
pub async fn read_through(log: &PartitionLog) -> (usize, usize) {
    let (mut served, mut corrupt) = (0, 0);
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        match log.read(offset, 4_096).await {
            Ok(r) if r.chunks.is_empty() => break,
            Ok(r) => {
                let bytes = r.chunks.concat();
                let mut at = 0;
                while at < bytes.len() {
                    let size = storage::batch::peek_batch_size(&bytes[at..]).expect("size");
                    let h = storage::batch::validate(&bytes[at..at + size])
                        .expect("served batches are valid");
                    offset = h.next_offset();
                    served += 1;
                    at += size;
                }
            }
            Err(storage::StorageError::Corrupt { .. }) => {
                corrupt += 1;
                offset += 1;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    (served, corrupt)
}
