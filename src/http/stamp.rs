//! The `X-Signpost-Index` header on every `/v1` response that has none yet: errors, and
//! anything a handler did not stamp with the index of its own content.
//!
//! It is the outermost layer, so that responses made above the router (refusals of the
//! admission limits, the registration path's) carry the header too; it looks at the path
//! itself to leave `/healthz` and `/ready` alone.
//!
//! A tower layer with its own future rather than `axum::middleware::from_fn`, which boxes
//! every request's future and clones the state into it: on the registration path that was a
//! few per cent of the CPU for one header.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use tower::{Layer, Service};

use super::INDEX_HEADER;
use crate::registry::Registry;

#[derive(Clone)]
pub(crate) struct StampIndexLayer(pub Arc<Registry>);

impl<S> Layer<S> for StampIndexLayer {
    type Service = StampIndex<S>;

    fn layer(&self, inner: S) -> StampIndex<S> {
        StampIndex {
            inner,
            registry: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct StampIndex<S> {
    inner: S,
    registry: Arc<Registry>,
}

impl<S> Service<Request> for StampIndex<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Stamped<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let path = req.uri().path();
        let v1 = path == "/v1" || path.starts_with("/v1/");
        Stamped {
            inner: self.inner.call(req),
            registry: v1.then(|| self.registry.clone()),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's future; a `/v1` response gets the header on the way out.
    pub struct Stamped<F> {
        #[pin]
        inner: F,
        registry: Option<Arc<Registry>>,
    }
}

impl<F, E> Future for Stamped<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut resp = std::task::ready!(this.inner.poll(cx))?;
        if let Some(registry) = this.registry {
            add_index(&mut resp, registry);
        }
        Poll::Ready(Ok(resp))
    }
}

/// Adds the current index to `resp` unless it carries one already.
fn add_index(resp: &mut Response, registry: &Registry) {
    if !resp.headers().contains_key(INDEX_HEADER) {
        resp.headers_mut().insert(
            HeaderName::from_static(INDEX_HEADER),
            HeaderValue::from(registry.snapshot().index),
        );
    }
}
