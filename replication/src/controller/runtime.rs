//! `GlommioRuntime`: openraft's `AsyncRuntime` on a glommio `LocalExecutor`.
//! Tasks are spawned on the current executor and detached (a glommio task
//! is cancelled when its `Task` is dropped; openraft expects tokio's
//! semantics, where a dropped handle leaves the task running); timers are
//! glommio's; instants are `std::time::Instant`; the channels are the
//! single-threaded ones of `sync`.
//!
//! This is the controller's seam to glommio: the rest of the controller
//! spawns, sleeps and opens sockets through what this module names
//! (`spawn_local`, `GlommioRuntime`'s timers, `TcpStream`, `Semaphore`).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use glommio::timer::Timer;
use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};
use openraft::AsyncRuntime;

use super::sync::{LocalMpsc, LocalMutex, LocalOneshot, LocalWatch};

/// The executor's TCP sockets and its semaphore, for the TCP transport.
pub(crate) use glommio::net::{TcpListener, TcpStream};
pub(crate) use glommio::sync::{Semaphore, StaticPermit};

/// Runs `future` in a task of its own on the current executor, detached:
/// it runs to its end whether or not anyone waits for it.
pub(crate) fn spawn_local(future: impl Future<Output = ()> + 'static) {
    glommio::spawn_local(future).detach();
}

/// io_uring buffer memory of executors made by [`GlommioRuntime::new`]:
/// openraft's tests and ours do no DMA I/O, and `ulimit -l` is small.
pub const TEST_IO_MEMORY_BYTES: usize = 512 << 10;

/// openraft's runtime on glommio. A value of it owns a `LocalExecutor` (for
/// `block_on`, used by tests); a broker shard that already runs inside an
/// executor never makes one, it only names the type.
pub struct GlommioRuntime {
    executor: LocalExecutor,
}

impl fmt::Debug for GlommioRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GlommioRuntime").finish_non_exhaustive()
    }
}

/// A spawned task did not complete: glommio cancelled it (its executor
/// stopped) or it panicked; glommio's `JoinHandle` does not say which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("task cancelled or panicked")]
pub struct TaskCancelled;

/// The awaited future did not finish before its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline elapsed")]
pub struct Elapsed;

/// The handle of a detached task.
pub struct JoinHandle<T>(glommio::task::JoinHandle<T>);

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, TaskCancelled>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.ok_or(TaskCancelled))
    }
}

/// Sleeps until a deadline. The glommio timer is made at the first poll, as
/// it must be made on an executor thread, and futures may be built outside
/// one.
pub struct Sleep {
    deadline: Instant,
    timer: Option<Timer>,
}

impl Sleep {
    fn until(deadline: Instant) -> Sleep {
        Sleep {
            deadline,
            timer: None,
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let now = Instant::now();
        if now >= self.deadline {
            self.timer = None;
            return Poll::Ready(());
        }
        let deadline = self.deadline;
        let timer = self
            .timer
            .get_or_insert_with(|| Timer::new(deadline.saturating_duration_since(now)));
        Pin::new(timer).poll(cx).map(|_| ())
    }
}

/// A future bounded by a deadline. The inner future is boxed so that this
/// type is `Unpin` without unsafe pin projection; openraft makes few of
/// these (one per RPC or wait), so the allocation does not matter.
pub struct Timeout<F> {
    future: Pin<Box<F>>,
    sleep: Sleep,
}

impl<R, F: Future<Output = R>> Future for Timeout<F> {
    type Output = Result<R, Elapsed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(r) = self.future.as_mut().poll(cx) {
            return Poll::Ready(Ok(r));
        }
        match Pin::new(&mut self.sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRuntime for GlommioRuntime {
    type JoinError = TaskCancelled;
    type JoinHandle<T: 'static> = JoinHandle<T>;
    type Sleep = Sleep;
    type Instant = Instant;
    type TimeoutError = Elapsed;
    type Timeout<R, T: Future<Output = R>> = Timeout<T>;
    type ThreadLocalRng = rand::rngs::ThreadRng;

    fn spawn<T>(future: T) -> JoinHandle<T::Output>
    where
        T: Future + 'static,
        T::Output: 'static,
    {
        JoinHandle(glommio::spawn_local(future).detach())
    }

    fn sleep(duration: Duration) -> Sleep {
        Sleep::until(Instant::now() + duration)
    }

    fn sleep_until(deadline: Instant) -> Sleep {
        Sleep::until(deadline)
    }

    fn timeout<R, F: Future<Output = R>>(duration: Duration, future: F) -> Timeout<F> {
        Self::timeout_at(Instant::now() + duration, future)
    }

    fn timeout_at<R, F: Future<Output = R>>(deadline: Instant, future: F) -> Timeout<F> {
        Timeout {
            future: Box::pin(future),
            sleep: Sleep::until(deadline),
        }
    }

    fn is_panic(_join_error: &TaskCancelled) -> bool {
        // glommio reports a panicked task and a cancelled one alike.
        false
    }

    fn thread_rng() -> rand::rngs::ThreadRng {
        rand::rng()
    }

    type Mpsc = LocalMpsc;
    type Watch = LocalWatch;
    type Oneshot = LocalOneshot;
    type Mutex<T: 'static> = LocalMutex<T>;

    /// A single-threaded executor; `threads` is ignored.
    ///
    /// # Panics
    /// When glommio cannot make an executor (io_uring unavailable, locked
    /// memory limit too low): this is for tests.
    fn new(_threads: usize) -> Self {
        let executor = LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(TEST_IO_MEMORY_BYTES)
            .make()
            .expect("a glommio executor for openraft's runtime");
        GlommioRuntime { executor }
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.executor.run(future)
    }
}
