//! The tail cache: the most recently appended batches of a log, kept in
//! memory so that consumers tailing the log are served without touching the
//! disk, as shared `Bytes` (no copy). Each log's cache has its own bound,
//! and the logs of one shard may share a [`CacheBudget`] that bounds them
//! all together, evicting the shard's oldest cached batches first.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};

use bytes::Bytes;

#[derive(Debug)]
struct Cached {
    base_offset: i64,
    next_offset: i64,
    bytes: Bytes,
}

#[derive(Debug, Default)]
struct CacheInner {
    batches: VecDeque<Cached>,
    bytes: usize,
    bytes_max: usize,
    budget: Option<Rc<CacheBudget>>,
}

impl CacheInner {
    fn pop_front(&mut self) -> bool {
        match self.batches.pop_front() {
            Some(b) => {
                self.release(b.bytes.len());
                true
            }
            None => false,
        }
    }

    fn release(&mut self, len: usize) {
        self.bytes -= len;
        if let Some(budget) = &self.budget {
            budget.used.set(budget.used.get() - len);
        }
    }
}

/// A memory bound shared by the tail caches of one shard's logs. Not `Send`:
/// one per shard.
#[derive(Debug)]
pub struct CacheBudget {
    bytes_max: Cell<usize>,
    used: Cell<usize>,
    /// Pushes in shard-wide order: the cache and the batch's next offset.
    order: RefCell<VecDeque<(Weak<RefCell<CacheInner>>, i64)>>,
}

impl CacheBudget {
    pub fn new(bytes_max: usize) -> Rc<CacheBudget> {
        Rc::new(CacheBudget {
            bytes_max: Cell::new(bytes_max),
            used: Cell::new(0),
            order: RefCell::new(VecDeque::new()),
        })
    }

    pub fn bytes_used(&self) -> usize {
        self.used.get()
    }

    pub fn bytes_max(&self) -> usize {
        self.bytes_max.get()
    }

    /// Evicts the shard's oldest cached batches until within the bound.
    fn enforce(&self) {
        while self.used.get() > self.bytes_max.get() {
            let Some((cache, next_offset)) = self.order.borrow_mut().pop_front() else {
                break;
            };
            let Some(cache) = cache.upgrade() else {
                continue;
            };
            let Ok(mut c) = cache.try_borrow_mut() else {
                continue;
            };
            while c
                .batches
                .front()
                .is_some_and(|b| b.next_offset <= next_offset)
            {
                c.pop_front();
            }
        }
        // Entries of batches already gone would pile up; bound the queue.
        let mut order = self.order.borrow_mut();
        if order.len() > 4 * 1024 && order.len() > 8 * (self.used.get() / 1024 + 1) {
            order.retain(|(c, _)| c.strong_count() > 0);
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct TailCache {
    inner: Rc<RefCell<CacheInner>>,
}

impl TailCache {
    pub(crate) fn new(bytes_max: usize) -> TailCache {
        TailCache {
            inner: Rc::new(RefCell::new(CacheInner {
                bytes_max,
                ..CacheInner::default()
            })),
        }
    }

    pub(crate) fn set_bytes_max(&mut self, bytes_max: usize) {
        let mut c = self.inner.borrow_mut();
        c.bytes_max = bytes_max;
        while c.bytes > c.bytes_max && c.pop_front() {}
    }

    /// Shares `budget` with the other logs of the shard.
    pub(crate) fn set_budget(&mut self, budget: Rc<CacheBudget>) {
        let mut c = self.inner.borrow_mut();
        if let Some(old) = c.budget.take() {
            old.used.set(old.used.get() - c.bytes);
        }
        budget.used.set(budget.used.get() + c.bytes);
        for b in &c.batches {
            budget
                .order
                .borrow_mut()
                .push_back((Rc::downgrade(&self.inner), b.next_offset));
        }
        c.budget = Some(budget);
    }

    pub(crate) fn push(&mut self, base_offset: i64, next_offset: i64, bytes: Bytes) {
        let budget = {
            let mut c = self.inner.borrow_mut();
            debug_assert!(c
                .batches
                .back()
                .is_none_or(|b| b.next_offset == base_offset));
            c.bytes += bytes.len();
            if let Some(budget) = &c.budget {
                budget.used.set(budget.used.get() + bytes.len());
                budget
                    .order
                    .borrow_mut()
                    .push_back((Rc::downgrade(&self.inner), next_offset));
            }
            c.batches.push_back(Cached {
                base_offset,
                next_offset,
                bytes,
            });
            while c.bytes > c.bytes_max && c.pop_front() {}
            c.budget.clone()
        };
        if let Some(budget) = budget {
            budget.enforce();
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
        let c = self.inner.borrow();
        let first = c.batches.front()?;
        if offset < first.base_offset {
            return None;
        }
        let start = c.batches.partition_point(|b| b.next_offset <= offset);
        let mut out = Vec::new();
        let mut total = 0;
        for b in c.batches.range(start..) {
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
        let mut c = self.inner.borrow_mut();
        while c.batches.back().is_some_and(|b| b.next_offset > offset) {
            if let Some(b) = c.batches.pop_back() {
                c.release(b.bytes.len());
            }
        }
    }

    /// Forgets every batch entirely below `offset`.
    pub(crate) fn trim_front(&mut self, offset: i64) {
        let mut c = self.inner.borrow_mut();
        while c.batches.front().is_some_and(|b| b.next_offset <= offset) {
            c.pop_front();
        }
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        let c = self.inner.borrow();
        c.bytes + c.batches.capacity() * std::mem::size_of::<Cached>()
    }
}

impl Drop for TailCache {
    fn drop(&mut self) {
        // A closed log gives its share of the budget back.
        let mut c = self.inner.borrow_mut();
        while c.pop_front() {}
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

    #[test]
    fn a_shared_budget_bounds_all_caches_and_evicts_the_oldest_first() {
        let budget = CacheBudget::new(1_000);
        let mut a = TailCache::new(10_000);
        let mut b = TailCache::new(10_000);
        a.set_budget(budget.clone());
        b.set_budget(budget.clone());
        for i in 0..5 {
            a.push(i, i + 1, Bytes::from(vec![0; 100]));
        }
        for i in 0..8 {
            b.push(i, i + 1, Bytes::from(vec![0; 100]));
        }
        assert!(budget.bytes_used() <= 1_000, "used {}", budget.bytes_used());
        // a's batches were the oldest: they went first.
        assert!(a.read(0, 100, 100).is_none());
        assert!(b.read(0, 100, 100).is_some());
        drop(b);
        assert_eq!(budget.bytes_used(), a.inner.borrow().bytes);
    }
}
