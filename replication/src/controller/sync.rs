//! Single-threaded channels and a mutex for openraft's runtime trait: a
//! bounded mpsc with weak senders, a watch channel, a oneshot and an async
//! mutex. A Raft node lives on one glommio executor (openraft's
//! `single-threaded` feature), so these are `Rc`/`RefCell` based, with no
//! atomics and no tokio; the oneshot and the mutex are the executor-neutral
//! ones from the futures crates.

use std::cell::{Cell, Ref, RefCell};
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

use openraft::async_runtime::{
    Mpsc, MpscReceiver, MpscSender, MpscWeakSender, Mutex, Oneshot, OneshotSender, RecvError,
    SendError, TryRecvError, Watch, WatchReceiver, WatchSender,
};

/// Adds `waker` to `wakers` unless an equivalent one is there already, so
/// that a future polled again and again does not grow the list.
fn register(wakers: &mut Vec<Waker>, waker: &Waker) {
    if !wakers.iter().any(|w| w.will_wake(waker)) {
        wakers.push(waker.clone());
    }
}

fn wake_all(wakers: &mut Vec<Waker>) {
    for w in wakers.drain(..) {
        w.wake();
    }
}

// ---------------------------------------------------------------- mpsc

/// The bounded mpsc channel family.
pub struct LocalMpsc;

struct Chan<T> {
    queue: VecDeque<T>,
    capacity: usize,
    senders: usize,
    receiver_alive: bool,
    recv_waker: Option<Waker>,
    send_wakers: Vec<Waker>,
}

pub struct LocalMpscSender<T> {
    chan: Rc<RefCell<Chan<T>>>,
}

pub struct LocalMpscWeakSender<T> {
    chan: Weak<RefCell<Chan<T>>>,
}

pub struct LocalMpscReceiver<T> {
    chan: Rc<RefCell<Chan<T>>>,
}

impl Mpsc for LocalMpsc {
    type Sender<T> = LocalMpscSender<T>;
    type Receiver<T> = LocalMpscReceiver<T>;
    type WeakSender<T> = LocalMpscWeakSender<T>;

    fn channel<T>(buffer: usize) -> (LocalMpscSender<T>, LocalMpscReceiver<T>) {
        // A zero capacity would make every send wait forever.
        let capacity = buffer.max(1);
        let chan = Rc::new(RefCell::new(Chan {
            queue: VecDeque::new(),
            capacity,
            senders: 1,
            receiver_alive: true,
            recv_waker: None,
            send_wakers: Vec::new(),
        }));
        (
            LocalMpscSender { chan: chan.clone() },
            LocalMpscReceiver { chan },
        )
    }
}

impl<T> Clone for LocalMpscSender<T> {
    fn clone(&self) -> Self {
        self.chan.borrow_mut().senders += 1;
        LocalMpscSender {
            chan: self.chan.clone(),
        }
    }
}

impl<T> Drop for LocalMpscSender<T> {
    fn drop(&mut self) {
        let mut chan = self.chan.borrow_mut();
        chan.senders -= 1;
        if chan.senders == 0 {
            if let Some(w) = chan.recv_waker.take() {
                w.wake();
            }
        }
    }
}

impl<T> MpscSender<LocalMpsc, T> for LocalMpscSender<T> {
    fn send(&self, msg: T) -> impl Future<Output = Result<(), SendError<T>>> {
        let chan = self.chan.clone();
        let mut msg = Some(msg);
        poll_fn(move |cx: &mut Context<'_>| {
            let mut c = chan.borrow_mut();
            let m = msg
                .take()
                .expect("a send future is not polled after it completes");
            if !c.receiver_alive {
                return Poll::Ready(Err(SendError(m)));
            }
            if c.queue.len() < c.capacity {
                c.queue.push_back(m);
                if let Some(w) = c.recv_waker.take() {
                    w.wake();
                }
                return Poll::Ready(Ok(()));
            }
            msg = Some(m);
            register(&mut c.send_wakers, cx.waker());
            Poll::Pending
        })
    }

    fn downgrade(&self) -> LocalMpscWeakSender<T> {
        LocalMpscWeakSender {
            chan: Rc::downgrade(&self.chan),
        }
    }
}

impl<T> Clone for LocalMpscWeakSender<T> {
    fn clone(&self) -> Self {
        LocalMpscWeakSender {
            chan: self.chan.clone(),
        }
    }
}

impl<T> MpscWeakSender<LocalMpsc, T> for LocalMpscWeakSender<T> {
    fn upgrade(&self) -> Option<LocalMpscSender<T>> {
        let chan = self.chan.upgrade()?;
        {
            let mut c = chan.borrow_mut();
            // Weak senders do not keep the channel open: once the last
            // strong sender is gone it stays closed.
            if c.senders == 0 {
                return None;
            }
            c.senders += 1;
        }
        Some(LocalMpscSender { chan })
    }
}

impl<T> LocalMpscReceiver<T> {
    fn poll_take(&mut self, cx: Option<&mut Context<'_>>) -> Poll<Option<T>> {
        let mut c = self.chan.borrow_mut();
        if let Some(v) = c.queue.pop_front() {
            wake_all(&mut c.send_wakers);
            return Poll::Ready(Some(v));
        }
        if c.senders == 0 {
            return Poll::Ready(None);
        }
        if let Some(cx) = cx {
            c.recv_waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl<T> Drop for LocalMpscReceiver<T> {
    fn drop(&mut self) {
        let queued = {
            let mut c = self.chan.borrow_mut();
            c.receiver_alive = false;
            // Senders waiting for room learn that there is no one to read.
            wake_all(&mut c.send_wakers);
            std::mem::take(&mut c.queue)
        };
        // Queued values go now (as with tokio), so that a responder inside
        // one tells its waiter; outside the borrow, since dropping a value
        // may touch this channel again.
        drop(queued);
    }
}

impl<T> MpscReceiver<T> for LocalMpscReceiver<T> {
    async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_take(Some(cx))).await
    }

    fn try_recv(&mut self) -> Result<T, TryRecvError> {
        match self.poll_take(None) {
            Poll::Ready(Some(v)) => Ok(v),
            Poll::Ready(None) => Err(TryRecvError::Disconnected),
            Poll::Pending => Err(TryRecvError::Empty),
        }
    }
}

// ---------------------------------------------------------------- watch

/// The watch channel family.
pub struct LocalWatch;

struct Shared<T> {
    value: RefCell<T>,
    version: Cell<u64>,
    senders: Cell<usize>,
    receivers: Cell<usize>,
    wakers: RefCell<Vec<Waker>>,
}

impl<T> Shared<T> {
    fn changed(&self) {
        self.version.set(self.version.get() + 1);
        wake_all(&mut self.wakers.borrow_mut());
    }
}

pub struct LocalWatchSender<T> {
    shared: Rc<Shared<T>>,
}

pub struct LocalWatchReceiver<T> {
    shared: Rc<Shared<T>>,
    /// The version this receiver has marked seen.
    seen: u64,
}

impl Watch for LocalWatch {
    type Sender<T> = LocalWatchSender<T>;
    type Receiver<T> = LocalWatchReceiver<T>;
    type Ref<'a, T: 'a> = Ref<'a, T>;

    fn channel<T>(init: T) -> (LocalWatchSender<T>, LocalWatchReceiver<T>) {
        let shared = Rc::new(Shared {
            value: RefCell::new(init),
            version: Cell::new(0),
            senders: Cell::new(1),
            receivers: Cell::new(1),
            wakers: RefCell::new(Vec::new()),
        });
        (
            LocalWatchSender {
                shared: shared.clone(),
            },
            LocalWatchReceiver { shared, seen: 0 },
        )
    }
}

impl<T> Clone for LocalWatchSender<T> {
    fn clone(&self) -> Self {
        self.shared.senders.set(self.shared.senders.get() + 1);
        LocalWatchSender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for LocalWatchSender<T> {
    fn drop(&mut self) {
        let n = self.shared.senders.get() - 1;
        self.shared.senders.set(n);
        if n == 0 {
            wake_all(&mut self.shared.wakers.borrow_mut());
        }
    }
}

impl<T> WatchSender<LocalWatch, T> for LocalWatchSender<T> {
    fn send(&self, value: T) -> Result<(), openraft::async_runtime::watch::SendError<T>> {
        if self.shared.receivers.get() == 0 {
            return Err(openraft::async_runtime::watch::SendError(value));
        }
        *self.shared.value.borrow_mut() = value;
        self.shared.changed();
        Ok(())
    }

    fn send_if_modified<F>(&self, modify: F) -> bool
    where
        F: FnOnce(&mut T) -> bool,
    {
        let modified = modify(&mut self.shared.value.borrow_mut());
        if modified {
            self.shared.changed();
        }
        modified
    }

    fn borrow_watched(&self) -> Ref<'_, T> {
        self.shared.value.borrow()
    }

    fn subscribe(&self) -> LocalWatchReceiver<T> {
        self.shared.receivers.set(self.shared.receivers.get() + 1);
        LocalWatchReceiver {
            shared: self.shared.clone(),
            seen: self.shared.version.get(),
        }
    }
}

impl<T> Clone for LocalWatchReceiver<T> {
    fn clone(&self) -> Self {
        self.shared.receivers.set(self.shared.receivers.get() + 1);
        LocalWatchReceiver {
            shared: self.shared.clone(),
            seen: self.seen,
        }
    }
}

impl<T> Drop for LocalWatchReceiver<T> {
    fn drop(&mut self) {
        self.shared.receivers.set(self.shared.receivers.get() - 1);
    }
}

impl<T> WatchReceiver<LocalWatch, T> for LocalWatchReceiver<T> {
    async fn changed(&mut self) -> Result<(), RecvError> {
        poll_fn(|cx| {
            let version = self.shared.version.get();
            if version != self.seen {
                self.seen = version;
                return Poll::Ready(Ok(()));
            }
            if self.shared.senders.get() == 0 {
                return Poll::Ready(Err(RecvError(())));
            }
            register(&mut self.shared.wakers.borrow_mut(), cx.waker());
            Poll::Pending
        })
        .await
    }

    fn borrow_watched(&self) -> Ref<'_, T> {
        self.shared.value.borrow()
    }

    fn borrow_and_update(&mut self) -> Ref<'_, T> {
        self.seen = self.shared.version.get();
        self.shared.value.borrow()
    }
}

// ---------------------------------------------------------------- oneshot

/// The oneshot family: futures-channel's, which is executor-neutral.
pub struct LocalOneshot;

pub struct LocalOneshotSender<T>(futures_channel::oneshot::Sender<T>);

impl Oneshot for LocalOneshot {
    type Sender<T> = LocalOneshotSender<T>;
    type Receiver<T> = futures_channel::oneshot::Receiver<T>;
    type ReceiverError = futures_channel::oneshot::Canceled;

    fn channel<T>() -> (LocalOneshotSender<T>, futures_channel::oneshot::Receiver<T>) {
        let (tx, rx) = futures_channel::oneshot::channel();
        (LocalOneshotSender(tx), rx)
    }
}

impl<T> OneshotSender<T> for LocalOneshotSender<T> {
    fn send(self, t: T) -> Result<(), T> {
        self.0.send(t)
    }
}

// ---------------------------------------------------------------- mutex

/// futures-util's async mutex, which is executor-neutral.
pub struct LocalMutex<T>(futures_util::lock::Mutex<T>);

impl<T: 'static> Mutex<T> for LocalMutex<T> {
    type Guard<'a> = futures_util::lock::MutexGuard<'a, T>;

    fn new(value: T) -> Self {
        LocalMutex(futures_util::lock::Mutex::new(value))
    }

    fn lock(&self) -> impl Future<Output = futures_util::lock::MutexGuard<'_, T>> {
        self.0.lock()
    }
}
