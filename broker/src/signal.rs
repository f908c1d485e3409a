//! A shard-local "something was appended" signal that long-polling fetches
//! wait on. Waking is cheap and may be spurious: waiters re-check their
//! partitions' log end offsets.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct AppendSignal {
    generation: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl AppendSignal {
    pub fn notify(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        for waker in self.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// Resolves at the next `notify` after this call.
    pub fn next(&self) -> Appended<'_> {
        Appended {
            signal: self,
            seen: self.generation.get(),
        }
    }
}

pub struct Appended<'a> {
    signal: &'a AppendSignal,
    seen: u64,
}

impl Future for Appended<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.generation.get() != self.seen {
            return Poll::Ready(());
        }
        let mut waiters = self.signal.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
