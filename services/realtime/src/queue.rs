//! A stream's frames, between its session and the response body.
//!
//! The session runs inside the response body ([`SessionStream`]) rather
//! than in a task of its own: the task that writes the stream is the one
//! woken by a published event, and there is no channel between two tasks
//! to cross for every frame.
//!
//! The body hands out queued frames first, and polls the session only once
//! the queue is empty and only if the session was woken since its last
//! poll, or waits for room.
//!
//! The body is polled only while the connection can take more, so a client
//! that stops reading stops its session too; what it misses meanwhile
//! stays in the channel logs. A session left waiting longer than the
//! slow-client grace (woken but not polled, or with its queue full) is a
//! slow consumer: once the client reads again, it gets what was queued and
//! a hint to resume from its cursors.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use colink_runtime::metrics::Metrics;
use futures_util::Stream;
use futures_util::task::AtomicWaker;
use tonic::Status;

use crate::wire::Outgoing;

/// The frames a session has produced and its stream has not yet sent, at
/// most `capacity` of them, then its last word.
pub(crate) struct FrameQueue {
    state: Mutex<State>,
    capacity: usize,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Outgoing>,
    last_word: Option<Result<Outgoing, Status>>,
    /// The session found the queue full and waits for room.
    waiting: bool,
    /// The session waited to be polled longer than the slow-client grace.
    stalled: bool,
}

impl FrameQueue {
    pub fn new(capacity: usize) -> Self {
        Self { state: Mutex::default(), capacity: capacity.max(1) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The lock guards no invariant a panic could break half way.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a frame, or gives it back when the queue is full.
    pub fn try_push(&self, frame: Outgoing) -> Result<(), Outgoing> {
        let mut state = self.state();
        if state.frames.len() >= self.capacity {
            return Err(frame);
        }
        state.frames.push_back(frame);
        Ok(())
    }

    /// Whether there is room; if not, the session is polled again once
    /// the body has taken every queued frame.
    pub fn has_room(&self) -> bool {
        let mut state = self.state();
        state.waiting = state.frames.len() >= self.capacity;
        !state.waiting
    }

    /// The frame that ends the stream, sent after everything queued: a
    /// resume hint, or the status the call ends with.
    pub fn set_last_word(&self, word: Result<Outgoing, Status>) {
        self.state().last_word = Some(word);
    }

    fn pop(&self) -> Option<Outgoing> {
        self.state().frames.pop_front()
    }

    fn take_last_word(&self) -> Option<Result<Outgoing, Status>> {
        self.state().last_word.take()
    }

    /// Whether the session waits for room; it stops waiting as it is told.
    fn take_waiting(&self) -> bool {
        std::mem::take(&mut self.state().waiting)
    }

    /// Whether the client let the session wait longer than the grace.
    pub fn take_stalled(&self) -> bool {
        std::mem::take(&mut self.state().stalled)
    }

    fn len(&self) -> usize {
        self.state().frames.len()
    }
}

/// A session's future.
pub(crate) type Run = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The response body of a stream: its session, run as the body is polled,
/// and the frames the session queued. Dropping it (the client went away)
/// drops the session.
pub(crate) struct SessionStream {
    run: Option<Run>,
    queue: Arc<FrameQueue>,
    /// The waker the session is polled with.
    wakeup: Arc<Wakeup>,
    session_waker: Waker,
    grace: Duration,
    metrics: Arc<Metrics>,
}

/// Remembers that the session was woken, and wakes the task that writes
/// the stream. Polling a session that nothing woke would poll each of its
/// waits again, some of them behind locks shared by every stream of a
/// channel.
struct Wakeup {
    /// When the session was first woken since its last poll, in
    /// microseconds since `start` and at least 1; 0 when it was not.
    woken_at: AtomicU64,
    start: Instant,
    task: AtomicWaker,
}

impl Wakeup {
    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX).max(1)
    }

    /// Takes the wake-up, if there was one, with how long it waited.
    fn take(&self) -> Option<Duration> {
        match self.woken_at.swap(0, Ordering::AcqRel) {
            0 => None,
            at => Some(Duration::from_micros(self.now().saturating_sub(at))),
        }
    }
}

impl Wake for Wakeup {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.woken_at.load(Ordering::Acquire) == 0 {
            // Only the first wake-up since the last poll counts.
            let _ = self.woken_at.compare_exchange(0, self.now(), Ordering::AcqRel, Ordering::Acquire);
        }
        self.task.wake();
    }
}

impl SessionStream {
    pub fn new(run: Run, queue: Arc<FrameQueue>, grace: Duration, metrics: Arc<Metrics>) -> Self {
        // Woken at first, so that the session starts.
        let wakeup = Arc::new(Wakeup { woken_at: AtomicU64::new(1), start: Instant::now(), task: AtomicWaker::new() });
        let session_waker = Waker::from(wakeup.clone());
        Self { run: Some(run), queue, wakeup, session_waker, grace, metrics }
    }

    fn sent(&self, frame: Outgoing) -> Poll<Option<Result<Outgoing, Status>>> {
        self.metrics.streams.dequeued();
        Poll::Ready(Some(Ok(frame)))
    }
}

impl Stream for SessionStream {
    type Item = Result<Outgoing, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(frame) = self.queue.pop() {
            return self.sent(frame);
        }
        let this = &mut *self;
        if let Some(run) = this.run.as_mut() {
            this.wakeup.task.register(cx.waker());
            let woken = this.wakeup.take();
            if woken.is_some_and(|waited| waited > this.grace) {
                this.queue.state().stalled = true;
            }
            if woken.is_some() || this.queue.take_waiting() {
                let mut session_cx = Context::from_waker(&this.session_waker);
                if run.as_mut().poll(&mut session_cx).is_ready() {
                    this.run = None;
                }
            }
            if let Some(frame) = this.queue.pop() {
                return this.sent(frame);
            }
            if this.run.is_some() {
                return Poll::Pending;
            }
        }
        Poll::Ready(this.queue.take_last_word())
    }
}

impl Drop for SessionStream {
    /// Frames never sent leave the node's count of queued frames.
    fn drop(&mut self) {
        for _ in 0..self.queue.len() {
            self.metrics.streams.dequeued();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tokio_stream::StreamExt;

    fn frame(n: u8) -> Outgoing {
        Outgoing::Event(Bytes::from(vec![n]))
    }

    #[tokio::test]
    async fn frames_come_out_in_order_then_the_last_word_then_the_end() {
        let queue = Arc::new(FrameQueue::new(2));
        let session_queue = queue.clone();
        let run: Run = Box::pin(async move {
            for n in 0..5 {
                let mut pending = frame(n);
                // Full: wait, as a session does, for the body to take frames.
                loop {
                    match session_queue.try_push(pending) {
                        Ok(()) => break,
                        Err(back) => pending = back,
                    }
                    std::future::poll_fn(|_| if session_queue.has_room() { Poll::Ready(()) } else { Poll::Pending })
                        .await;
                }
            }
            session_queue.set_last_word(Err(Status::unauthenticated("gone")));
        });
        let metrics = Arc::new(Metrics::new(&[]));
        let mut stream = SessionStream::new(run, queue, Duration::from_secs(5), metrics);
        let mut seen = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(Outgoing::Event(bytes)) => seen.push(bytes[0]),
                Ok(Outgoing::Frame(_)) => panic!("only events were queued"),
                Err(status) => {
                    assert_eq!(status.code(), tonic::Code::Unauthenticated);
                    seen.push(u8::MAX);
                }
            }
        }
        assert_eq!(seen, [0, 1, 2, 3, 4, u8::MAX]);
    }

    /// A session whose stream is not polled for longer than the grace
    /// after a wake-up learns it, as a client that stopped reading.
    #[tokio::test]
    async fn a_session_left_waiting_longer_than_the_grace_is_told_so() {
        for (pause, stalled) in [(Duration::ZERO, false), (Duration::from_millis(60), true)] {
            let queue = Arc::new(FrameQueue::new(4));
            let notify = Arc::new(tokio::sync::Notify::new());
            let (session_queue, woken) = (queue.clone(), notify.clone());
            let run: Run = Box::pin(async move {
                woken.notified().await;
                let word = if session_queue.take_stalled() { Ok(frame(1)) } else { Ok(frame(0)) };
                session_queue.set_last_word(word);
            });
            let metrics = Arc::new(Metrics::new(&[]));
            let mut stream = SessionStream::new(run, queue, Duration::from_millis(30), metrics);
            let first = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut stream).poll_next(cx).is_pending()));
            assert!(first.await, "nothing to send before the wake-up");
            notify.notify_one();
            tokio::time::sleep(pause).await;
            let Some(Ok(Outgoing::Event(word))) = stream.next().await else { panic!("a last word") };
            assert_eq!(word[0] == 1, stalled, "paused {pause:?}");
        }
    }
}
