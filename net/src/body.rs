//! A request body with a total read deadline: a per-frame timeout would let a client drip
//! one byte just under it forever.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Sleep;

/// The error a handler sees when the body did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within {0:?}")]
pub(crate) struct BodyTimeout(pub(crate) Duration);

/// Set when a body of the connection timed out, so the connection can answer 408 and close.
#[derive(Default)]
pub(crate) struct BodyTimedOut {
    pub(crate) flag: AtomicBool,
    pub(crate) notify: Notify,
}

/// `inner` with a deadline that starts at the first read, not at the request head: a handler
/// that waits (for example for a compute slot) before reading must not eat the client's time.
pub(crate) struct TimedBody<B> {
    inner: B,
    timeout: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
    timed_out: Arc<BodyTimedOut>,
}

impl<B> TimedBody<B> {
    pub(crate) fn new(inner: B, timeout: Duration, timed_out: Arc<BodyTimedOut>) -> Self {
        Self {
            inner,
            timeout,
            deadline: None,
            timed_out,
        }
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        let timeout = this.timeout;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.timed_out.flag.store(true, Ordering::Release);
                this.timed_out.notify.notify_one();
                Poll::Ready(Some(Err(Box::new(BodyTimeout(timeout)))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
