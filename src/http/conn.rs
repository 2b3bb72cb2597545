//! One HTTP connection's own bookkeeping, and so the moment it must be closed.
//!
//! Shared by the connection's socket (`io::ConnIo` reports the bytes that arrive), its service
//! (`Counted` counts the requests it starts and the responses hyper is done with) and its task
//! in `serve` (which closes the connection at `Conn::deadline`). The timeouts follow Go's
//! `http.Server`, which keeps the two waits apart: a kept-alive connection may sit idle for
//! `idle_timeout` before its next request, and a request's line and headers must then arrive
//! within `header_timeout` of its first byte (on a new connection, of the connection itself,
//! so a connection that never speaks is gone after the header timeout). hyper's own
//! `header_read_timeout` cannot be used for this: it starts as soon as the previous response
//! is written, so it would cut every kept-alive connection at the header timeout. While a
//! request is being served (its body read, a long-poll waiting, its response written) there
//! is no connection deadline: the body has its own timeout (`body::RawBody`) and the handler
//! bounds its own work.
//!
//! Everything here is touched only from the connection's own task (hyper polls the service
//! and its body inside the connection's future), so relaxed atomics suffice; they are atomics
//! only because the task may move between threads.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Instant;
use tower::ServiceExt;
use tower::util::Oneshot;

/// The two waits a connection is allowed between requests.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    /// From a request's first byte (a new connection's start) to the end of its headers.
    pub header: Duration,
    /// From the end of a response to the first byte of the next request.
    pub idle: Duration,
}

/// One connection's counters and clock.
pub(crate) struct Conn {
    timeouts: Timeouts,
    /// When the connection was accepted; the times below are nanoseconds after it.
    epoch: Instant,
    /// Requests handed to the service.
    started: AtomicU64,
    /// Their responses hyper is done with (their bodies dropped), or given up.
    finished: AtomicU64,
    /// When the connection last had nothing in service.
    idle_since: AtomicU64,
    /// One more than when the first byte came after `idle_since`; 0 while none has.
    head_since: AtomicU64,
}

impl Conn {
    pub(crate) fn new(timeouts: Timeouts) -> Self {
        Self {
            timeouts,
            epoch: Instant::now(),
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX - 1)
    }

    /// Requests started so far, and responses finished.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.started.load(Relaxed), self.finished.load(Relaxed))
    }

    /// A request is in service (or its response still with hyper).
    pub(crate) fn busy(&self) -> bool {
        let (started, finished) = self.counts();
        started != finished
    }

    /// Bytes arrived: while idle, the first of them starts the header timeout.
    pub(crate) fn on_read(&self) {
        if self.head_since.load(Relaxed) == 0 && !self.busy() {
            self.head_since.store(self.now() + 1, Relaxed);
        }
    }

    fn on_request(&self) {
        self.started.fetch_add(1, Relaxed);
    }

    fn on_finished(&self) {
        self.finished.fetch_add(1, Relaxed);
        if !self.busy() {
            self.idle_since.store(self.now(), Relaxed);
            self.head_since.store(0, Relaxed);
        }
    }

    /// When the connection must be closed if nothing changes; `None` while a request is in
    /// service.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        if self.busy() {
            return None;
        }
        let at = |nanos: u64, wait: Duration| self.epoch + Duration::from_nanos(nanos) + wait;
        match self.head_since.load(Relaxed) {
            0 if self.started.load(Relaxed) == 0 => Some(at(0, self.timeouts.header)),
            0 => Some(at(self.idle_since.load(Relaxed), self.timeouts.idle)),
            first => Some(at(first - 1, self.timeouts.header)),
        }
    }
}

/// The app as hyper calls it on one connection: each request counted as started, and as
/// finished when hyper drops its response body (all of it handed to the socket's buffer) or
/// the request is abandoned.
pub(crate) struct Counted<S> {
    app: S,
    conn: Arc<Conn>,
}

impl<S> Counted<S> {
    pub(crate) fn new(app: S, conn: Arc<Conn>) -> Self {
        Self { app, conn }
    }
}

impl<S> hyper::service::Service<hyper::Request<Incoming>> for Counted<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone,
{
    type Response = hyper::Response<Tracked>;
    type Error = Infallible;
    type Future = CountedFuture<S>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        self.conn.on_request();
        CountedFuture {
            inner: self.app.clone().oneshot(req.map(Body::new)),
            finished: Some(Finished(self.conn.clone())),
        }
    }
}

/// Marks its request finished when dropped.
struct Finished(Arc<Conn>);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.on_finished();
    }
}

pin_project_lite::pin_project! {
    /// The app's future; its response body carries the request's `Finished`.
    pub(crate) struct CountedFuture<S: tower::Service<Request>> {
        #[pin]
        inner: Oneshot<S, Request>,
        finished: Option<Finished>,
    }
}

impl<S> Future for CountedFuture<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Output = Result<hyper::Response<Tracked>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let resp = std::task::ready!(this.inner.poll(cx))?;
        let finished = this.finished.take();
        Poll::Ready(Ok(resp.map(|body| Tracked {
            body,
            _finished: finished,
        })))
    }
}

/// A response body that marks its request finished when hyper drops it.
pub(crate) struct Tracked {
    body: Body,
    _finished: Option<Finished>,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Conn {
        Conn::new(Timeouts {
            header: Duration::from_secs(10),
            idle: Duration::from_secs(60),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_gets_the_header_timeout_from_its_start() {
        let c = conn();
        assert_eq!(c.deadline(), Some(c.epoch + Duration::from_secs(10)));
        tokio::time::advance(Duration::from_secs(3)).await;
        c.on_read();
        // Bytes do not extend it: the head must be complete 10 s after its first byte.
        assert_eq!(c.deadline(), Some(c.epoch + Duration::from_secs(3 + 10)));
        tokio::time::advance(Duration::from_secs(1)).await;
        c.on_read();
        assert_eq!(c.deadline(), Some(c.epoch + Duration::from_secs(3 + 10)));
    }

    #[tokio::test(start_paused = true)]
    async fn no_deadline_in_service_then_the_idle_timeout_then_the_header_timeout() {
        let c = Arc::new(conn());
        c.on_read();
        c.on_request();
        assert_eq!(c.deadline(), None);
        c.on_read(); // the body: still in service
        tokio::time::advance(Duration::from_secs(100)).await;
        assert_eq!(c.deadline(), None, "a long-poll is not cut");
        drop(Finished(c.clone()));
        assert_eq!(c.deadline(), Some(c.epoch + Duration::from_secs(100 + 60)));
        tokio::time::advance(Duration::from_secs(20)).await;
        c.on_read();
        assert_eq!(c.deadline(), Some(c.epoch + Duration::from_secs(120 + 10)));
    }
}
