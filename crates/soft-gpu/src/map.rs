//! `Buffer::map_async` as a future: its callback fills a shared slot and wakes the awaiting task.
//! Natively the callback runs inside `Device::poll`; in the browser, from the event loop.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

type Outcome = Result<(), wgpu::BufferAsyncError>;

#[derive(Default)]
struct Slot {
    outcome: Option<Outcome>,
    waker: Option<Waker>,
}

fn lock(slot: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    // Nothing panics while holding the lock; recover rather than propagate a poison.
    slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The callback's end: fills the slot once; dropped unfilled (callback never run) it reports a failure.
struct Sender(Arc<Mutex<Slot>>);

impl Sender {
    fn fill(&self, outcome: Outcome) {
        let mut slot = lock(&self.0);
        if slot.outcome.is_none() {
            slot.outcome = Some(outcome);
            if let Some(waker) = slot.waker.take() {
                waker.wake();
            }
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.fill(Err(wgpu::BufferAsyncError));
    }
}

/// Resolves when the mapping requested by [`map_read`] has succeeded or failed.
pub(crate) struct Mapping(Arc<Mutex<Slot>>);

impl Future for Mapping {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let mut slot = lock(&self.0);
        match slot.outcome.take() {
            Some(outcome) => Poll::Ready(outcome),
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// Requests the whole of `buffer` mapped for reading.
pub(crate) fn map_read(buffer: &wgpu::Buffer) -> Mapping {
    let slot = Arc::new(Mutex::new(Slot::default()));
    let sender = Sender(Arc::clone(&slot));
    buffer.map_async(wgpu::MapMode::Read, .., move |outcome| sender.fill(outcome));
    Mapping(slot)
}
