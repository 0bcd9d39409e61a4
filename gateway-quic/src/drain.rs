//! quinn's drivers, run until their work is done rather than one slice at a
//! time.
//!
//! quinn reads the UDP socket every client shares in one task, the
//! endpoint's driver, and hands each packet to its connection's driver. A
//! driver does a bounded slice of work per poll (the endpoint's reads for
//! 50 µs, `RECV_TIME_BOUND` in quinn 0.11), then wakes itself and returns.
//! On tokio a task that wakes itself goes to the back of its worker's run
//! queue, behind every session's and actor's task: on a busy host each slice
//! of the socket waits a whole round of that queue, the socket's receive
//! queue grows, and every packet in it waits with it.
//!
//! [`Draining`] spawns each driver inside [`Drain`], which polls it again at
//! once while it is woken during its own poll (by itself, or by a packet or
//! timer meanwhile), for up to [`DRAIN_BUDGET`] and while tokio's
//! cooperative budget for the task lasts: a driver that reaches a CPU reads
//! the socket (or serves its connection) for that long before the rest of
//! the run queue. A driver with nothing more to do returns after one poll,
//! as before. Wakes during the poll are kept from the task, which is woken
//! only if the loop ends with one still to serve.
//!
//! This covers the gateway's QUIC door. The WebTransport door's endpoint
//! belongs to `wtransport`, which runs it on quinn's plain tokio runtime.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use quinn::{AsyncTimer, AsyncUdpSocket, Runtime, TokioRuntime};

/// How long a driver that keeps being woken is polled in one go before it
/// goes back to the run queue.
pub(crate) const DRAIN_BUDGET: Duration = Duration::from_millis(1);

/// quinn's tokio runtime, with every driver it spawns wrapped in [`Drain`].
#[derive(Debug)]
pub(crate) struct Draining;

impl Runtime for Draining {
    fn new_timer(&self, at: Instant) -> Pin<Box<dyn AsyncTimer>> {
        TokioRuntime.new_timer(at)
    }

    /// tokio's clock, which its timers follow.
    fn now(&self) -> Instant {
        TokioRuntime.now()
    }

    #[track_caller]
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        tokio::spawn(Drain::new(future));
    }

    fn wrap_udp_socket(
        &self,
        socket: std::net::UdpSocket,
    ) -> std::io::Result<Arc<dyn AsyncUdpSocket>> {
        TokioRuntime.wrap_udp_socket(socket)
    }
}

/// A future polled again at once, up to [`DRAIN_BUDGET`] and while the task
/// has cooperative budget left, each time it returns `Pending` having been
/// woken during the poll.
pub(crate) struct Drain<F> {
    inner: F,
    wakes: Arc<Wakes>,
    /// The waker the inner future sees.
    waker: Waker,
    /// How long one poll may go on: [`DRAIN_BUDGET`] but in tests.
    budget: Duration,
}

/// Not being polled: a wake goes to the task.
const IDLE: u8 = 0;
/// Being polled: a wake is noted for the loop.
const POLLING: u8 = 1;
/// Being polled, and woken since the inner future's last poll began.
const WOKEN: u8 = 2;

/// Where the inner future's wakes go: to the loop while [`Drain`] polls,
/// to the task otherwise.
#[derive(Default)]
struct Wakes {
    state: AtomicU8,
    task: AtomicWaker,
}

impl Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // From POLLING to WOKEN; WOKEN stays. Only from IDLE is the task
        // woken: the loop serves any wake it sees, and wakes the task for
        // one it leaves.
        if self
            .state
            .compare_exchange(POLLING, WOKEN, Ordering::AcqRel, Ordering::Acquire)
            .is_err_and(|state| state == IDLE)
        {
            self.task.wake();
        }
    }
}

impl<F> Drain<F> {
    pub(crate) fn new(inner: F) -> Self {
        Drain::with_budget(inner, DRAIN_BUDGET)
    }

    fn with_budget(inner: F, budget: Duration) -> Self {
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(wakes.clone());
        Drain {
            inner,
            wakes,
            waker,
            budget,
        }
    }
}

impl<F: Future + Unpin> Future for Drain<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        this.wakes.task.register(cx.waker());
        let mut inner_cx = Context::from_waker(&this.waker);
        let state = &this.wakes.state;
        let started = Instant::now();
        loop {
            state.store(POLLING, Ordering::Release);
            if let Poll::Ready(output) = Pin::new(&mut this.inner).poll(&mut inner_cx) {
                state.store(IDLE, Ordering::Release);
                return Poll::Ready(output);
            }
            // Without cooperative budget the driver's sockets, channels and
            // timers report nothing ready, and defer their wakes until the
            // task yields: those find the state IDLE and wake the task.
            let more = started.elapsed() < this.budget && tokio::task::coop::has_budget_remaining();
            if more {
                // Not woken meanwhile: done. A wake after this reaches the task.
                if state
                    .compare_exchange(POLLING, IDLE, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return Poll::Pending;
                }
            } else {
                if state.swap(IDLE, Ordering::AcqRel) == WOKEN {
                    cx.waker().wake_by_ref();
                }
                return Poll::Pending;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    /// Counts its polls, and wakes itself on each of the first `more` ones.
    struct Slices {
        polls: usize,
        more: usize,
    }

    impl Future for Slices {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls += 1;
            if self.polls > self.more {
                return Poll::Pending;
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    /// Stands in for the tokio task that polls a driver: records its wakes.
    struct Task {
        woken: Arc<AtomicBool>,
        waker: Waker,
    }

    struct Flag(Arc<AtomicBool>);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::Release);
        }
    }

    impl Task {
        fn new() -> Self {
            let woken = Arc::new(AtomicBool::new(false));
            Task {
                waker: Waker::from(Arc::new(Flag(woken.clone()))),
                woken,
            }
        }

        /// Polls `drain` once, as the runtime would; whether it is pending.
        fn poll<F: Future + Unpin>(&self, drain: &mut Drain<F>) -> bool {
            let mut cx = Context::from_waker(&self.waker);
            Pin::new(drain).poll(&mut cx).is_pending()
        }

        /// Whether the task was woken since this was last asked.
        fn take_wake(&self) -> bool {
            self.woken.swap(false, Ordering::AcqRel)
        }
    }

    /// A budget no poll in these tests reaches, however loaded the machine:
    /// a test thread can be descheduled for longer than [`DRAIN_BUDGET`].
    const NEVER_REACHED: Duration = Duration::from_secs(60);

    /// A budget for the test that reaches it: long enough that its first
    /// poll is done within it.
    const REACHED: Duration = Duration::from_millis(100);

    #[test]
    fn a_future_that_wakes_itself_is_polled_again_at_once_and_the_task_is_not_woken_for_it() {
        let task = Task::new();
        let mut drain = Drain::with_budget(Slices { polls: 0, more: 5 }, NEVER_REACHED);
        assert!(task.poll(&mut drain));
        // Five slices that each woke the future, then one that did not.
        assert_eq!(drain.inner.polls, 6);
        assert!(!task.take_wake(), "the loop served every wake itself");

        assert!(task.poll(&mut drain));
        assert_eq!(
            drain.inner.polls, 7,
            "a future with nothing to do is polled once"
        );
        assert!(!task.take_wake());
    }

    #[test]
    fn a_future_that_always_wakes_itself_goes_back_to_the_queue_after_the_budget() {
        let task = Task::new();
        let mut drain = Drain::with_budget(
            Slices {
                polls: 0,
                more: usize::MAX,
            },
            REACHED,
        );
        let started = Instant::now();
        assert!(task.poll(&mut drain));
        assert!(started.elapsed() >= REACHED);
        assert!(started.elapsed() < REACHED * 50, "the budget ends the loop");
        assert!(drain.inner.polls > 1);
        assert!(task.take_wake(), "the task is woken to come back");
    }

    #[test]
    fn a_wake_from_elsewhere_after_the_poll_reaches_the_task() {
        let task = Task::new();
        let mut drain = Drain::new(Slices { polls: 0, more: 0 });
        assert!(task.poll(&mut drain));
        assert!(!task.take_wake());
        // What a socket's readiness or a channel would do with the waker the
        // driver kept.
        drain.waker.wake_by_ref();
        assert!(task.take_wake());
    }

    /// Woken from another thread during its first poll, as a packet's
    /// arrival would.
    struct WokenElsewhere {
        polls: usize,
    }

    impl Future for WokenElsewhere {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls += 1;
            if self.polls == 1 {
                let waker = cx.waker().clone();
                let _ = std::thread::spawn(move || waker.wake()).join();
            }
            Poll::Pending
        }
    }

    #[test]
    fn a_wake_from_another_thread_during_the_poll_is_served_by_polling_again() {
        let task = Task::new();
        let mut drain = Drain::with_budget(WokenElsewhere { polls: 0 }, NEVER_REACHED);
        assert!(task.poll(&mut drain));
        // The loop served the wake itself.
        assert_eq!(drain.inner.polls, 2);
        assert!(!task.take_wake());
    }
}
