//! Unit tests of a log's state: transitions keep the invariants, and the
//! invariant checks catch what they should.

use super::*;
use crate::batch::{stamped, validate};
use crate::testing::batch_bytes;

fn fresh() -> State {
    let dir = PathBuf::from("/nonexistent/log");
    State::recovered(Recovered {
        segments: vec![Segment::new(&dir, 0)],
        dir,
        config: LogConfig::default(),
        faults: None,
        log_start_offset: 0,
        recovery_point: 0,
        tail_pos: 0,
        tail: Vec::new(),
        producers: ProducerTable::default(),
        producer_expiration_ms: 86_400_000,
        epochs: LeaderEpochs::default(),
    })
}

/// Appends a batch of `count` records at `base` (the log end for a
/// leader), as `PartitionLog` does; returns its end.
fn append_at(st: &mut State, base: i64, count: i32) -> i64 {
    let data = stamped(&batch_bytes(count, 1_000, 10), base, None);
    let header = validate(&data).expect("valid batch");
    let _ = st.on_append(&header, data);
    header.next_offset()
}

fn append(st: &mut State, count: i32) -> i64 {
    let base = st.next_offset();
    append_at(st, base, count)
}

/// Writes the next group as the flusher does (without a file).
fn write_next(st: &mut State, bytes_max: usize) -> Vec<PendingWrite> {
    let group = st.next_write_group(bytes_max).expect("something pending");
    let base = group[0].segment_base;
    let size = st.segments()[st.segment_for(base)].written_size
        + group.iter().map(|p| p.data.len() as u64).sum::<u64>();
    st.on_write_complete(base, &group, size, Vec::new(), 0);
    group
}

#[test]
fn append_write_sync_publish_keep_the_invariants() {
    let mut st = fresh();
    append(&mut st, 3);
    let end = append(&mut st, 2);
    assert_eq!((st.written_end(), st.next_offset()), (0, end));
    write_next(&mut st, usize::MAX);
    st.on_sync_complete(st.written_end());
    st.publish();
    assert_eq!(
        (st.synced_end(), st.readable_end(), st.written_end()),
        (end, end, end)
    );
    assert!(st.next_write_group(usize::MAX).is_none());
    assert!(!st.flusher_running);
    assert_eq!(st.broken_invariant(), None);
}

#[test]
fn a_sync_overtaken_by_a_truncation_never_passes_the_written_end() {
    let mut st = fresh();
    append(&mut st, 3);
    append(&mut st, 3);
    write_next(&mut st, usize::MAX);
    let target = st.written_end();
    let size = st.active().written_size;
    st.truncate_to(0, size / 2, 3);
    st.on_sync_complete(target);
    assert_eq!((st.synced_end(), st.written_end()), (3, 3));
}

#[test]
fn a_failed_write_rolls_back_to_what_is_on_disk() {
    let mut st = fresh();
    let first_end = append(&mut st, 3);
    append(&mut st, 3);
    write_next(&mut st, 1);
    let failed = st.next_write_group(1).expect("second batch");
    let (_, size) = st.rollback_to(failed[0].base_offset, &StorageError::Closed);
    assert_eq!(st.next_offset(), first_end);
    assert_eq!(size, st.active().size);
    assert_eq!(st.broken_invariant(), None);
}

#[test]
fn a_follower_batch_past_the_end_starts_a_segment_there() {
    let mut st = fresh();
    append_at(&mut st, 50, 2);
    // Nothing was below: the log now starts at the batch.
    assert_eq!(st.log_start_offset(), 50);
    assert_eq!(st.segments().len(), 1);
    append_at(&mut st, 100, 2);
    let bases: Vec<i64> = st.segments().iter().map(|s| s.base_offset).collect();
    assert_eq!(bases, vec![50, 100]);
    assert_eq!(st.broken_invariant(), None);
}

#[test]
fn truncating_fully_leaves_one_empty_segment() {
    let mut st = fresh();
    append(&mut st, 3);
    write_next(&mut st, usize::MAX);
    let gone = st.truncate_fully_and_start_at(40);
    assert_eq!(gone.len(), 1);
    assert_eq!(st.segments().len(), 1);
    assert_eq!((st.log_start_offset(), st.next_offset()), (40, 40));
    assert_eq!(st.recovery_point(), 40);
}

#[test]
fn broken_invariants_are_named() {
    let mut st = fresh();
    append(&mut st, 3);
    st.readable_end = st.next_offset + 1;
    assert!(st
        .broken_invariant()
        .is_some_and(|b| b.starts_with("ends out of order")));
    st.readable_end = 0;
    st.flusher_running = false;
    assert!(st
        .broken_invariant()
        .is_some_and(|b| b.contains("flusher idle")));
    st.flusher_running = true;
    st.segments[0].sealed = true;
    assert!(st.broken_invariant().is_some_and(|b| b.contains("sealed")));
    st.segments.clear();
    assert!(st.broken_invariant().is_some());
}

#[test]
#[should_panic(expected = "ends out of order")]
fn the_log_start_cannot_pass_the_log_end() {
    let mut st = fresh();
    append(&mut st, 3);
    st.advance_log_start(10);
}

#[test]
#[should_panic(expected = "below the log end")]
fn a_batch_below_the_log_end_is_refused() {
    let mut st = fresh();
    append(&mut st, 3);
    append_at(&mut st, 1, 1);
}

#[test]
#[should_panic(expected = "is sealed")]
fn the_active_segment_cannot_be_sealed() {
    let mut st = fresh();
    st.mark_sealed(0);
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "ends out of order")]
fn a_write_past_the_log_end_fails_in_debug_builds() {
    let mut st = fresh();
    append(&mut st, 3);
    let mut group = st.next_write_group(usize::MAX).expect("pending");
    group[0].next_offset = 100;
    st.on_write_complete(0, &group, 1, Vec::new(), 0);
}
