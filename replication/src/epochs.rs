//! The leader-epoch cache of one partition replica: for every leader epoch
//! whose records this replica holds, the offset of its first record. It is
//! what lets a follower find where its log and the leader's diverge without
//! trusting the high watermark (Kafka's KIP-101/KIP-279): two logs that hold
//! a record of the same epoch at the same offset agree up to there, because
//! only one leader ever appends in an epoch.

use crate::{Epoch, Offset};

/// Epochs in increasing order with non-decreasing start offsets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochCache {
    entries: Vec<(Epoch, Offset)>,
}

impl EpochCache {
    pub fn new() -> EpochCache {
        EpochCache::default()
    }

    /// Records that `epoch` starts at `start`. An epoch already known keeps
    /// its first start; an epoch older than the latest is refused (it would
    /// break the order) and returns `false`. Entries starting at or past
    /// `start` from older epochs cannot exist: callers truncate first.
    pub fn assign(&mut self, epoch: Epoch, start: Offset) -> bool {
        match self.entries.last() {
            Some(&(last, _)) if last == epoch => true,
            Some(&(last, _)) if last > epoch => false,
            Some(&(_, last_start)) if last_start > start => false,
            _ => {
                self.entries.push((epoch, start));
                true
            }
        }
    }

    /// The latest epoch and its start offset.
    pub fn latest(&self) -> Option<(Epoch, Offset)> {
        self.entries.last().copied()
    }

    pub fn latest_epoch(&self) -> Option<Epoch> {
        self.entries.last().map(|e| e.0)
    }

    /// Kafka's OffsetForLeaderEpoch answer for `epoch` on a log ending at
    /// `log_end`: the largest epoch at most `epoch` that this log holds, and
    /// the offset where it ends (the next epoch's start, or `log_end` for
    /// the latest). `None` when every epoch here is newer than `epoch`.
    pub fn end_offset_for(&self, epoch: Epoch, log_end: Offset) -> Option<(Epoch, Offset)> {
        let i = self.entries.partition_point(|&(e, _)| e <= epoch);
        if i == 0 {
            return None;
        }
        let found = self.entries[i - 1].0;
        let end = self.entries.get(i).map_or(log_end, |&(_, start)| start);
        Some((found, end))
    }

    /// The epoch of the record at `offset`, if this log's epochs cover it.
    pub fn epoch_at(&self, offset: Offset) -> Option<Epoch> {
        let i = self.entries.partition_point(|&(_, start)| start <= offset);
        (i > 0).then(|| self.entries[i - 1].0)
    }

    /// Forgets epochs that start at or past `offset` (the log was truncated
    /// there).
    pub fn truncate_to(&mut self, offset: Offset) {
        while self
            .entries
            .last()
            .is_some_and(|&(_, start)| start >= offset)
        {
            self.entries.pop();
        }
    }

    /// Forgets epochs wholly below `log_start` (the log's head was deleted),
    /// keeping the one that covers `log_start`, moved up to it.
    pub fn truncate_head(&mut self, log_start: Offset) {
        let i = self
            .entries
            .partition_point(|&(_, start)| start <= log_start);
        if i > 1 {
            self.entries.drain(..i - 1);
        }
        if let Some(first) = self.entries.first_mut() {
            first.1 = first.1.max(log_start);
        }
    }

    pub fn entries(&self) -> &[(Epoch, Offset)] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(Epoch, Offset)]) -> EpochCache {
        let mut c = EpochCache::new();
        for &(e, s) in entries {
            assert!(c.assign(e, s));
        }
        c
    }

    #[test]
    fn end_offsets_as_kafka_answers_them() {
        let c = cache(&[(1, 0), (3, 10), (4, 25)]);
        assert_eq!(c.end_offset_for(0, 30), None);
        assert_eq!(c.end_offset_for(1, 30), Some((1, 10)));
        // An epoch this log never had: the largest below it, ending where
        // the next one starts.
        assert_eq!(c.end_offset_for(2, 30), Some((1, 10)));
        assert_eq!(c.end_offset_for(3, 30), Some((3, 25)));
        assert_eq!(c.end_offset_for(4, 30), Some((4, 30)));
        assert_eq!(c.end_offset_for(9, 30), Some((4, 30)));
    }

    #[test]
    fn assign_keeps_order_and_first_starts() {
        let mut c = cache(&[(1, 0), (3, 10)]);
        assert!(c.assign(3, 12), "a known epoch keeps its start");
        assert_eq!(c.latest(), Some((3, 10)));
        assert!(!c.assign(2, 20), "older than the latest");
        assert!(!c.assign(5, 5), "starting before the latest's start");
        assert!(c.assign(5, 10), "an empty epoch may share a start");
        assert_eq!(c.entries(), &[(1, 0), (3, 10), (5, 10)]);
    }

    #[test]
    fn epoch_at_and_truncation() {
        let mut c = cache(&[(1, 0), (3, 10), (4, 25)]);
        assert_eq!(c.epoch_at(9), Some(1));
        assert_eq!(c.epoch_at(10), Some(3));
        assert_eq!(c.epoch_at(100), Some(4));
        c.truncate_to(25);
        assert_eq!(c.latest(), Some((3, 10)));
        c.truncate_to(11);
        assert_eq!(c.latest(), Some((3, 10)));
        c.truncate_to(10);
        assert_eq!(c.entries(), &[(1, 0)]);
        let mut c = cache(&[(1, 0), (3, 10), (4, 25)]);
        c.truncate_head(12);
        assert_eq!(c.entries(), &[(3, 12), (4, 25)]);
        assert_eq!(cache(&[]).epoch_at(0), None);
    }
}
