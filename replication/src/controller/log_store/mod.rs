//! The controller's Raft log, written once: `LogStore` holds the entries,
//! the vote, the committed id and the purge point in memory and is
//! openraft's `RaftLogStorage` over them (range reads, append, truncate,
//! purge, the flush callback); a `Persistence` is what, beyond memory, a
//! change must reach before it counts.
//!
//! - `MemLogStore`: nothing beyond memory (`InMemory`), for tests and
//!   simulations.
//! - `file_log`: `FileLogStore`, the log in a directory (`LogFiles`).
//!
//! Clones of a store share one log: openraft's reader is a clone, and a
//! test can stop a node and start it again on the same log, as after a
//! clean restart.

pub mod file_log;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::rc::Rc;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};

use super::{Entry, LogId, TypeConfig, Vote};

/// Where a log's changes go beyond memory. Each method returns once its
/// change is as durable as this persistence makes it; on an error the
/// store's memory stays as it was (and openraft stops on the error).
pub trait Persistence: 'static {
    /// Keeps `entries`: consecutive, not empty, and following the last
    /// entry kept (or the purge point).
    fn append(&mut self, entries: &[Entry]) -> io::Result<()>;

    /// Drops every entry at index `from` and after; there is at least one.
    fn truncate_from(&mut self, from: u64) -> io::Result<()>;

    /// Purges every entry up to `log_id`; `kept` are the entries after it,
    /// in order.
    fn purge<'a>(&mut self, log_id: LogId, kept: impl Iterator<Item = &'a Entry>)
        -> io::Result<()>;

    fn save_vote(&mut self, vote: &Vote) -> io::Result<()>;

    fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()>;
}

/// Nothing beyond memory: the log lasts as long as its store's clones.
#[derive(Debug, Default)]
pub struct InMemory;

impl Persistence for InMemory {
    fn append(&mut self, _entries: &[Entry]) -> io::Result<()> {
        Ok(())
    }

    fn truncate_from(&mut self, _from: u64) -> io::Result<()> {
        Ok(())
    }

    fn purge<'a>(
        &mut self,
        _log_id: LogId,
        _kept: impl Iterator<Item = &'a Entry>,
    ) -> io::Result<()> {
        Ok(())
    }

    fn save_vote(&mut self, _vote: &Vote) -> io::Result<()> {
        Ok(())
    }

    fn save_committed(&mut self, _committed: Option<LogId>) -> io::Result<()> {
        Ok(())
    }
}

/// A Raft log in memory only, for tests and simulations.
pub type MemLogStore = LogStore<InMemory>;

/// A Raft log kept by `P`. Clones share one log.
pub struct LogStore<P> {
    inner: Rc<RefCell<Log<P>>>,
}

impl<P> Clone for LogStore<P> {
    fn clone(&self) -> Self {
        LogStore {
            inner: self.inner.clone(),
        }
    }
}

/// What a store starts from: nothing, or what its persistence recovered.
#[derive(Default)]
pub(crate) struct Recovered {
    pub(crate) vote: Option<Vote>,
    pub(crate) committed: Option<LogId>,
    pub(crate) last_purged: Option<LogId>,
    /// Consecutive, and right after `last_purged` when there is one.
    pub(crate) entries: BTreeMap<u64, Entry>,
}

/// The log's state; changed only through the transitions below, each of
/// which reaches the persistence first and ends with `assert_invariants`.
struct Log<P> {
    persistence: P,
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
    /// index → entry.
    entries: BTreeMap<u64, Entry>,
}

impl<P: Persistence> LogStore<P> {
    /// A store over `persistence`, starting from `recovered`.
    pub(crate) fn with(persistence: P, recovered: Recovered) -> LogStore<P> {
        let log = Log {
            persistence,
            vote: recovered.vote,
            committed: recovered.committed,
            last_purged: recovered.last_purged,
            entries: recovered.entries,
        };
        log.assert_invariants();
        LogStore {
            inner: Rc::new(RefCell::new(log)),
        }
    }

    /// The id of the last entry held, or of the last purged one when none
    /// is held (tests compare logs with it).
    pub fn last_log_id(&self) -> Option<LogId> {
        self.inner.borrow().last_log_id()
    }
}

impl LogStore<InMemory> {
    pub fn new() -> MemLogStore {
        LogStore::with(InMemory, Recovered::default())
    }
}

impl Default for LogStore<InMemory> {
    fn default() -> MemLogStore {
        MemLogStore::new()
    }
}

impl<P: Persistence> Log<P> {
    fn last_log_id(&self) -> Option<LogId> {
        self.entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(self.last_purged)
    }

    /// The index the next appended entry must have; `None` when any will
    /// do (nothing was ever kept).
    fn index_next(&self) -> Option<u64> {
        self.entries
            .keys()
            .next_back()
            .map(|last| last + 1)
            .or(self.last_purged.map(|p| p.index + 1))
    }

    /// Appends `entries` as one batch: all of it is kept, or (on an error,
    /// or entries that do not follow on) none of it.
    fn append(&mut self, entries: Vec<Entry>) -> io::Result<()> {
        let mut expected = self.index_next();
        for entry in &entries {
            let index = entry.log_id.index;
            if expected.is_some_and(|x| x != index) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("append of entry {index} where {expected:?} was expected"),
                ));
            }
            expected = Some(index + 1);
        }
        if entries.is_empty() {
            return Ok(());
        }
        self.persistence.append(&entries)?;
        self.entries
            .extend(entries.into_iter().map(|e| (e.log_id.index, e)));
        self.assert_invariants();
        Ok(())
    }

    /// Drops every entry from index `from` on.
    fn truncate_from(&mut self, from: u64) -> io::Result<()> {
        if self.entries.range(from..).next().is_none() {
            return Ok(());
        }
        self.persistence.truncate_from(from)?;
        self.entries.split_off(&from);
        self.assert_invariants();
        Ok(())
    }

    /// Drops every entry up to `log_id`, which becomes the purge point.
    fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        let from = log_id.index + 1;
        let kept = self.entries.range(from..).map(|(_, e)| e);
        self.persistence.purge(log_id, kept)?;
        self.entries = self.entries.split_off(&from);
        self.last_purged = Some(log_id);
        self.assert_invariants();
        Ok(())
    }

    fn save_vote(&mut self, vote: Vote) -> io::Result<()> {
        self.persistence.save_vote(&vote)?;
        self.vote = Some(vote);
        Ok(())
    }

    fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        self.persistence.save_committed(committed)?;
        self.committed = committed;
        Ok(())
    }

    /// The entries are dense (no index missing between the first and the
    /// last) and start right after the purge point. A gap would make
    /// openraft read a log that skips entries.
    fn assert_invariants(&self) {
        let (Some((&first, _)), Some((&last, _))) = (
            self.entries.first_key_value(),
            self.entries.last_key_value(),
        ) else {
            return;
        };
        assert_eq!(
            last - first + 1,
            self.entries.len() as u64,
            "log entries {first}..={last} are not consecutive"
        );
        if let Some(purged) = self.last_purged {
            assert_eq!(
                first,
                purged.index + 1,
                "the first log entry does not follow the purge point"
            );
        }
    }
}

impl<P: Persistence> RaftLogReader<TypeConfig> for LogStore<P> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let log = self.inner.borrow();
        Ok(log.entries.range(range).map(|(_, e)| e.clone()).collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.inner.borrow().vote)
    }
}

impl<P: Persistence> RaftLogStorage<TypeConfig> for LogStore<P> {
    type LogReader = LogStore<P>;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let log = self.inner.borrow();
        Ok(LogState {
            last_purged_log_id: log.last_purged,
            last_log_id: log.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> LogStore<P> {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.inner.borrow_mut().save_vote(*vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.inner.borrow_mut().save_committed(committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.inner.borrow().committed)
    }

    /// Tells openraft the entries are flushed once the persistence kept
    /// them, or that they never will be.
    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let result = self
            .inner
            .borrow_mut()
            .append(entries.into_iter().collect());
        match result {
            Ok(()) => {
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.io_completed(Err(io::Error::new(e.kind(), e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |l| l.index + 1);
        self.inner.borrow_mut().truncate_from(from)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.inner.borrow_mut().purge(log_id)
    }
}
