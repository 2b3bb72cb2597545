//! The shape of a layer that may answer a request itself before the service under it runs.
//!
//! A `Check` says why a request may not proceed (a response to send instead), or nothing;
//! `Refuse` runs it on every request and either answers with that response or passes the
//! request on. The URI limit (`protocol`), the origin and host guard (`guard`) and the tokens
//! (`token`) are checks; the layer around them is written once, here.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use tower::{Layer, Service};

/// Why a request may not proceed, if it may not.
pub(crate) trait Check: Clone {
    /// The response to send instead of serving `req`, or `None` to serve it.
    fn refusal(&self, req: &Request) -> Option<Response>;
}

/// Runs check `C` over the service it wraps.
#[derive(Clone)]
pub(crate) struct RefuseLayer<C>(pub(crate) C);

impl<C: Check, S> Layer<S> for RefuseLayer<C> {
    type Service = Refuse<C, S>;

    fn layer(&self, inner: S) -> Refuse<C, S> {
        Refuse {
            check: self.0.clone(),
            inner,
        }
    }
}

/// A service behind check `C`.
#[derive(Clone)]
pub(crate) struct Refuse<C, S> {
    check: C,
    inner: S,
}

impl<C, S> Service<Request> for Refuse<C, S>
where
    C: Check,
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = OrRefused<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        match self.check.refusal(&req) {
            Some(resp) => OrRefused::Refused { resp: Some(resp) },
            None => OrRefused::Passed {
                inner: self.inner.call(req),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// A layer's refusal, or the inner service's future when the request passed.
    #[project = OrRefusedProj]
    pub enum OrRefused<F> {
        Refused { resp: Option<Response> },
        Passed { #[pin] inner: F },
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for OrRefused<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            OrRefusedProj::Refused { resp } => {
                Poll::Ready(Ok(resp.take().expect("polled after completion")))
            }
            OrRefusedProj::Passed { inner } => inner.poll(cx),
        }
    }
}
