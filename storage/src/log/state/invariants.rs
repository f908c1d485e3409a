//! The invariants of a log's state (listed on [`State`]), checked after
//! every transition: always after those that cut, move or replace parts of
//! the log, in debug builds after the per-batch ones.

use super::State;

impl State {
    /// Panics if an invariant is broken. Called after the transitions that
    /// cut, move or replace parts of the log, where going on would corrupt
    /// it.
    pub(super) fn assert_invariants(&self) {
        if let Some(broken) = self.broken_invariant() {
            panic!("partition log {}: {broken}", self.dir.display());
        }
    }

    /// `assert_invariants` in debug builds only: after appends, writes,
    /// syncs and the small transitions, which run per batch.
    pub(super) fn debug_assert_invariants(&self) {
        if cfg!(debug_assertions) {
            self.assert_invariants();
        }
    }

    /// The first invariant (see [`State`]) this state breaks, if any.
    pub(super) fn broken_invariant(&self) -> Option<String> {
        let Some(active) = self.segments.last() else {
            return Some("a log has no segment".into());
        };
        for s in &self.segments {
            if s.next_offset < s.base_offset || s.written_size > s.size {
                return Some(format!(
                    "segment {} ends at {} before its base, or wrote {} of {} bytes",
                    s.base_offset, s.next_offset, s.written_size, s.size
                ));
            }
        }
        for w in self.segments.windows(2) {
            let (a, b) = (&w[0], &w[1]);
            if a.base_offset >= b.base_offset || a.next_offset > b.base_offset {
                return Some(format!(
                    "segment {} (to {}) does not come before segment {}",
                    a.base_offset, a.next_offset, b.base_offset
                ));
            }
            if b.sealed && !a.sealed {
                return Some(format!(
                    "sealed segment {} after unsealed {}",
                    b.base_offset, a.base_offset
                ));
            }
        }
        if active.sealed {
            return Some(format!(
                "the active segment {} is sealed",
                active.base_offset
            ));
        }
        if active.next_offset != self.next_offset {
            return Some(format!(
                "the active segment ends at {}, the log at {}",
                active.next_offset, self.next_offset
            ));
        }
        let ends_ordered = self.readable_end <= self.written_end
            && self.written_end <= self.next_offset
            && self.synced_end <= self.written_end
            && self.log_start_offset <= self.next_offset
            && self.recovery_point <= self.next_offset;
        if !ends_ordered {
            return Some(format!(
                "ends out of order: start {}, readable {}, synced {}, written {}, next {}, \
                 recovery point {}",
                self.log_start_offset,
                self.readable_end,
                self.synced_end,
                self.written_end,
                self.next_offset,
                self.recovery_point
            ));
        }
        if let Some(broken) = self.broken_pending() {
            return Some(broken);
        }
        let waiters_ordered = self
            .waiters
            .iter()
            .zip(self.waiters.iter().skip(1))
            .all(|((a, _), (b, _))| a <= b);
        if !waiters_ordered {
            return Some("waiters out of offset order".into());
        }
        if self.writer.segment_base > active.base_offset {
            return Some(format!(
                "the writer is at segment {}, past the active {}",
                self.writer.segment_base, active.base_offset
            ));
        }
        None
    }

    /// The first invariant of the flusher's queue that is broken, if any.
    fn broken_pending(&self) -> Option<String> {
        let (Some(first), Some(last)) = (self.pending.front(), self.pending.back()) else {
            return None;
        };
        if !self.flusher_running {
            return Some("writes queued with the flusher idle".into());
        }
        if first.base_offset < self.written_end || last.next_offset != self.next_offset {
            return Some(format!(
                "pending writes cover [{}, {}), not from the written end {} to the log end {}",
                first.base_offset, last.next_offset, self.written_end, self.next_offset
            ));
        }
        for p in &self.pending {
            if p.base_offset >= p.next_offset || p.segment_base > p.base_offset {
                return Some(format!(
                    "pending write [{}, {}) in segment {}",
                    p.base_offset, p.next_offset, p.segment_base
                ));
            }
        }
        for (a, b) in self.pending.iter().zip(self.pending.iter().skip(1)) {
            if a.next_offset > b.base_offset || a.segment_base > b.segment_base {
                return Some(format!(
                    "pending writes out of order: [{}, {}) then [{}, {})",
                    a.base_offset, a.next_offset, b.base_offset, b.next_offset
                ));
            }
        }
        None
    }
}
