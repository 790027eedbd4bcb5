//! Coding a part set stripe by stripe on two threads: each worker reads and codes whole
//! stripes into its own buffers, and the results are committed (written, hashed) in stripe
//! order, one at a time, while the next stripes are being coded. Output order, and so every
//! byte written, is the same as coding on one thread.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};

use super::{ParityError, Scheme};

/// How many threads code stripes at once. Each holds one stripe of every shard and its
/// coder's work buffers (a few [`STRIPE_BUDGET`](super::STRIPE_BUDGET)s at most), so two
/// keep a build or a repair within its memory budget while coding, reading and hashing
/// use two cores.
const WORKERS: usize = 2;

/// One stripe: from `off`, `len` bytes of each part, coded as shards of `shard` bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stripe {
    pub(super) off: u64,
    pub(super) len: usize,
    pub(super) shard: usize,
}

/// Codes every stripe of `scheme`: `work` runs on [`WORKERS`] threads at once, each stripe
/// into its thread's `T` (made by `init`), then `commit` takes the stripes in order, one at
/// a time, with `state` (the writers), while the next stripes are being coded. The first
/// error stops every thread and is returned.
pub(super) fn in_parallel<T, C: Send + ?Sized>(
    scheme: &Scheme,
    init: impl Fn() -> T + Sync,
    work: impl Fn(&mut T, Stripe) -> Result<(), ParityError> + Sync,
    state: &mut C,
    commit: impl Fn(&mut C, &T, Stripe) -> Result<(), ParityError> + Sync,
) -> Result<(), ParityError> {
    /// Whose turn it is to commit, and how the run ends.
    struct Turn<'c, C: ?Sized> {
        next: u64,
        failed: Option<ParityError>,
        /// A worker panicked: no one waits for its turn.
        panicked: bool,
        state: &'c mut C,
    }
    /// Wakes the others if its worker panics (its stripe would never be committed).
    struct OnPanic<'a, 'c, C: ?Sized> {
        turn: &'a Mutex<Turn<'c, C>>,
        turned: &'a Condvar,
        stop: &'a AtomicBool,
    }
    impl<C: ?Sized> Drop for OnPanic<'_, '_, C> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                self.stop.store(true, Ordering::Relaxed);
                self.turn
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .panicked = true;
                self.turned.notify_all();
            }
        }
    }
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let turn = Mutex::new(Turn {
        next: 0,
        failed: None,
        panicked: false,
        state,
    });
    let turned = Condvar::new();
    std::thread::scope(|scope| {
        for _ in 0..WORKERS {
            scope.spawn(|| {
                let _wake = OnPanic {
                    turn: &turn,
                    turned: &turned,
                    stop: &stop,
                };
                let mut t = init();
                // Stripes are taken in order, so the one whose turn it is is always held
                // by a worker that will commit it (or fail).
                while !stop.load(Ordering::Relaxed) {
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    let Some(stripe) = scheme.stripe_at(j) else {
                        break;
                    };
                    let worked = work(&mut t, stripe);
                    let mut g = turn.lock().unwrap_or_else(PoisonError::into_inner);
                    while g.next != j && g.failed.is_none() && !g.panicked {
                        g = turned.wait(g).unwrap_or_else(PoisonError::into_inner);
                    }
                    if g.failed.is_some() || g.panicked {
                        break;
                    }
                    match worked.and_then(|()| commit(g.state, &t, stripe)) {
                        Ok(()) => g.next += 1,
                        Err(e) => {
                            g.failed = Some(e);
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                    drop(g);
                    turned.notify_all();
                }
            });
        }
    });
    match turn
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .failed
    {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
