//! Placing work in line: a future polled once, now, so that what it does
//! before its first wait (an append taking its offsets, a message joining
//! a shard's channel) happens ahead of any work started after it, and
//! awaited to its end later. Pipelined produce requests keep their order
//! this way (see `connection`).

use std::future::Future;
use std::pin::Pin;

use futures_lite::future;

/// A future that has been polled once.
pub enum Started<F: Future> {
    Done(F::Output),
    Waiting(Pin<Box<F>>),
}

impl<F: Future> Started<F> {
    /// Polls `work` once, with the caller's waker.
    pub async fn start(work: F) -> Started<F> {
        let mut work = Box::pin(work);
        match future::poll_once(&mut work).await {
            Some(done) => Started::Done(done),
            None => Started::Waiting(work),
        }
    }

    pub async fn finish(self) -> F::Output {
        match self {
            Started::Done(done) => done,
            Started::Waiting(work) => work.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;

    #[test]
    fn work_runs_to_its_first_wait_when_started_and_ends_when_finished() {
        futures_lite::future::block_on(async {
            let log = Rc::new(RefCell::new(Vec::new()));
            let (tx, rx) = futures_channel::oneshot::channel::<u32>();
            let l = log.clone();
            let started = Started::start(async move {
                l.borrow_mut().push("placed");
                let v = rx.await.expect("sent");
                l.borrow_mut().push("answered");
                v
            })
            .await;
            assert_eq!(*log.borrow(), ["placed"], "ran up to its wait, no further");
            assert!(matches!(started, Started::Waiting(_)));
            tx.send(7).expect("receiver alive");
            assert_eq!(started.finish().await, 7);
            assert_eq!(*log.borrow(), ["placed", "answered"]);

            let done = Started::start(async { 3 }).await;
            assert!(matches!(done, Started::Done(3)));
        });
    }
}
