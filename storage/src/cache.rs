//! The tail cache: the most recently appended batches of a log, kept in
//! memory up to a byte bound so that consumers tailing the log are served
//! without touching the disk, as shared `Bytes` (no copy).

use std::collections::VecDeque;

use bytes::Bytes;

#[derive(Debug)]
struct Cached {
    base_offset: i64,
    next_offset: i64,
    bytes: Bytes,
}

#[derive(Debug, Default)]
pub(crate) struct TailCache {
    batches: VecDeque<Cached>,
    bytes: usize,
    bytes_max: usize,
}

impl TailCache {
    pub(crate) fn new(bytes_max: usize) -> TailCache {
        TailCache {
            bytes_max,
            ..TailCache::default()
        }
    }

    pub(crate) fn set_bytes_max(&mut self, bytes_max: usize) {
        self.bytes_max = bytes_max;
        self.evict();
    }

    pub(crate) fn push(&mut self, base_offset: i64, next_offset: i64, bytes: Bytes) {
        debug_assert!(self
            .batches
            .back()
            .is_none_or(|b| b.next_offset == base_offset));
        self.bytes += bytes.len();
        self.batches.push_back(Cached {
            base_offset,
            next_offset,
            bytes,
        });
        self.evict();
    }

    fn evict(&mut self) {
        while self.bytes > self.bytes_max {
            match self.batches.pop_front() {
                Some(b) => self.bytes -= b.bytes.len(),
                None => break,
            }
        }
    }

    /// Whole batches from the one holding `offset`, below `end_offset`, up
    /// to `max_bytes` (the first batch always, as Kafka's Fetch does).
    /// `None` when the cache does not hold `offset`.
    pub(crate) fn read(
        &self,
        offset: i64,
        end_offset: i64,
        max_bytes: usize,
    ) -> Option<Vec<Bytes>> {
        let first = self.batches.front()?;
        if offset < first.base_offset {
            return None;
        }
        let start = self.batches.partition_point(|b| b.next_offset <= offset);
        let mut out = Vec::new();
        let mut total = 0;
        for b in self.batches.range(start..) {
            if b.next_offset > end_offset {
                break;
            }
            if !out.is_empty() && total + b.bytes.len() > max_bytes {
                break;
            }
            total += b.bytes.len();
            out.push(b.bytes.clone());
        }
        Some(out)
    }

    /// Forgets every batch at or after `offset`.
    pub(crate) fn truncate(&mut self, offset: i64) {
        while self.batches.back().is_some_and(|b| b.next_offset > offset) {
            if let Some(b) = self.batches.pop_back() {
                self.bytes -= b.bytes.len();
            }
        }
    }

    /// Forgets every batch entirely below `offset`.
    pub(crate) fn trim_front(&mut self, offset: i64) {
        while self
            .batches
            .front()
            .is_some_and(|b| b.next_offset <= offset)
        {
            if let Some(b) = self.batches.pop_front() {
                self.bytes -= b.bytes.len();
            }
        }
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        self.bytes + self.batches.capacity() * std::mem::size_of::<Cached>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_of(n: i64, each: usize, max: usize) -> TailCache {
        let mut c = TailCache::new(max);
        for i in 0..n {
            c.push(i * 2, i * 2 + 2, Bytes::from(vec![i as u8; each]));
        }
        c
    }

    #[test]
    fn serves_whole_batches_within_bounds() {
        let c = cache_of(10, 100, 10_000);
        let got = c.read(5, 20, 250).expect("cached");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0][0], 2); // batch holding offsets 4..6
        let one = c.read(0, 20, 10).expect("cached");
        assert_eq!(one.len(), 1, "the first batch comes even when too large");
        let bounded = c.read(0, 4, 10_000).expect("cached");
        assert_eq!(bounded.len(), 2, "nothing at or past the end offset");
    }

    #[test]
    fn evicts_oldest_and_truncates() {
        let mut c = cache_of(10, 100, 350);
        assert!(c.read(0, 20, 100).is_none());
        assert!(c.read(14, 20, 100).is_some());
        c.truncate(16);
        assert_eq!(c.read(14, 20, 10_000).expect("cached").len(), 1);
        c.trim_front(16);
        assert!(c.read(14, 20, 100).is_none());
    }
}
