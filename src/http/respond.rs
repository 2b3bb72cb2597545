//! The shape of a layer that acts on every response of the service under it, from what it
//! noted of the request: the counterpart of `refuse` (which acts before the service runs).
//!
//! An `OnResponse` notes what it needs from a request (`note`, which may clone a handle), and
//! once the response is ready it adds to it or counts it (`respond`). `Respond` runs it around
//! every request with its own future (no box per request, unlike `axum::middleware::from_fn`).
//! The `X-Signpost-Index` stamp (`stamp`), the request counting and the route tag (`metrics`)
//! are such layers; the tower plumbing is written once, here.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use tower::{Layer, Service};

/// What a layer does with each response.
pub(crate) trait OnResponse: Clone {
    /// What it keeps of a request until its response is ready.
    type Note;
    /// Reads `req` before the service under the layer takes it.
    fn note(&self, req: &Request) -> Self::Note;
    /// Acts on `resp`, the response to the request `note` was taken from.
    fn respond(note: Self::Note, resp: &mut Response);
}

/// Runs `O` around the service it wraps.
#[derive(Clone)]
pub(crate) struct RespondLayer<O>(pub(crate) O);

impl<O: OnResponse, S> Layer<S> for RespondLayer<O> {
    type Service = Respond<O, S>;

    fn layer(&self, inner: S) -> Respond<O, S> {
        Respond {
            on: self.0.clone(),
            inner,
        }
    }
}

/// A service whose responses pass through `O`.
#[derive(Clone)]
pub(crate) struct Respond<O, S> {
    on: O,
    inner: S,
}

impl<O, S> Service<Request> for Respond<O, S>
where
    O: OnResponse,
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Responding<S::Future, O>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let note = Some(self.on.note(&req));
        Responding {
            inner: self.inner.call(req),
            note,
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's future; its response passes through `O` on the way out.
    pub struct Responding<F, O: OnResponse> {
        #[pin]
        inner: F,
        note: Option<O::Note>,
    }
}

impl<F, E, O> Future for Responding<F, O>
where
    F: Future<Output = Result<Response, E>>,
    O: OnResponse,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut resp = std::task::ready!(this.inner.poll(cx))?;
        if let Some(note) = this.note.take() {
            O::respond(note, &mut resp);
        }
        Poll::Ready(Ok(resp))
    }
}
