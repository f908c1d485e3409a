//! A shard-local signal that tasks wait on: "something was appended" for
//! long-polling fetches, "shutting down" for every connection. Waking is
//! cheap and may be spurious: waiters re-check what they wait for.
//!
//! A waiter is registered while its future is alive and removed when the
//! future is dropped, so a signal that rarely fires (shutdown) does not
//! collect the wakers of every connection that ever waited on it: each
//! would keep its finished task's memory alive, and make every poll slower.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct AppendSignal {
    generation: Cell<u64>,
    next_key: Cell<u64>,
    waiters: RefCell<HashMap<u64, Waker>>,
}

impl AppendSignal {
    pub fn notify(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let waiters: Vec<Waker> = self.waiters.borrow_mut().drain().map(|(_, w)| w).collect();
        for waker in waiters {
            waker.wake();
        }
    }

    /// Resolves at the next `notify` after this call.
    pub fn next(&self) -> Appended<'_> {
        Appended {
            signal: self,
            seen: self.generation.get(),
            key: None,
        }
    }

    /// Wakers registered now (for tests and metrics).
    pub fn waiting(&self) -> usize {
        self.waiters.borrow().len()
    }
}

pub struct Appended<'a> {
    signal: &'a AppendSignal,
    seen: u64,
    key: Option<u64>,
}

impl Future for Appended<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.generation.get() != self.seen {
            return Poll::Ready(());
        }
        let signal = self.signal;
        let mut waiters = signal.waiters.borrow_mut();
        match self.key {
            Some(key) if waiters.get(&key).is_some_and(|w| w.will_wake(cx.waker())) => {}
            Some(key) => {
                waiters.insert(key, cx.waker().clone());
            }
            None => {
                let key = signal.next_key.get();
                signal.next_key.set(key.wrapping_add(1));
                waiters.insert(key, cx.waker().clone());
                drop(waiters);
                self.key = Some(key);
            }
        }
        Poll::Pending
    }
}

impl Drop for Appended<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.signal.waiters.borrow_mut().remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(std::sync::atomic::AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn dropped_waiters_leave_nothing_behind() {
        let signal = AppendSignal::default();
        let count = Arc::new(Count(0.into()));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        for _ in 0..1_000 {
            let mut f = Box::pin(signal.next());
            assert!(f.as_mut().poll(&mut cx).is_pending());
            assert!(
                f.as_mut().poll(&mut cx).is_pending(),
                "polled twice, registered once"
            );
            assert_eq!(signal.waiting(), 1);
        }
        assert_eq!(signal.waiting(), 0);
    }

    #[test]
    fn notify_wakes_every_live_waiter_once() {
        let signal = AppendSignal::default();
        let count = Arc::new(Count(0.into()));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut a = Box::pin(signal.next());
        let mut b = Box::pin(signal.next());
        assert!(a.as_mut().poll(&mut cx).is_pending());
        assert!(b.as_mut().poll(&mut cx).is_pending());
        signal.notify();
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert!(a.as_mut().poll(&mut cx).is_ready());
        assert!(b.as_mut().poll(&mut cx).is_ready());
        // A future made after the notify waits for the next one.
        let mut c = Box::pin(signal.next());
        assert!(c.as_mut().poll(&mut cx).is_pending());
        drop((a, b, c));
        assert_eq!(signal.waiting(), 0);
    }
}
