//! `GET /metrics` (CONTRACT §6) and the counting of HTTP requests
//! (`signpost_http_requests_total{route,code}`).
//!
//! Every response is counted by `Count`, a layer in `outer` (just under the index stamp), so
//! refusals of the guard, the tokens and the limits are counted like answers, and so are the
//! registrations the registration path (`fast`) serves without the router. The route label
//! is the template the request was served under, carried out on the response as a `Route`
//! extension: the router's `TagRoute` layer copies axum's `MatchedPath` into it, and the
//! registration path sets the template of the route it stands in for. A response without one
//! (refused before routing, or no route matched) is counted as `unmatched`.
//!
//! Tower layers with their own futures rather than `axum::middleware::from_fn`, for the same
//! reason as `stamp`: `from_fn` boxes every request's future.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};

use super::AppState;
use crate::metrics::{CONTENT_TYPE as METRICS_CONTENT_TYPE, Metrics};

/// The route template a response was served under.
#[derive(Debug, Clone)]
pub(crate) struct Route(pub Cow<'static, str>);

/// `GET /metrics`: every family in the Prometheus text format.
pub(crate) async fn serve(State(state): State<Arc<AppState>>) -> Response {
    let body = state.metrics.encode();
    let mut resp = body.into_response();
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
    resp
}

/// Counts every response by its `Route` and status code.
#[derive(Clone)]
pub(crate) struct CountLayer(pub Arc<Metrics>);

impl<S> Layer<S> for CountLayer {
    type Service = Count<S>;

    fn layer(&self, inner: S) -> Count<S> {
        Count {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Count<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> Service<Request> for Count<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Counted<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        Counted {
            inner: self.inner.call(req),
            metrics: self.metrics.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's future; its response is counted on the way out.
    pub struct Counted<F> {
        #[pin]
        inner: F,
        metrics: Arc<Metrics>,
    }
}

impl<F, E> Future for Counted<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let resp = std::task::ready!(this.inner.poll(cx))?;
        let route = resp.extensions().get::<Route>().map(|r| r.0.clone());
        this.metrics.http_request(route, resp.status().as_u16());
        Poll::Ready(Ok(resp))
    }
}

/// Inside the router: puts the matched route's template on the response as a `Route`.
#[derive(Clone, Copy)]
pub(crate) struct TagRouteLayer;

impl<S> Layer<S> for TagRouteLayer {
    type Service = TagRoute<S>;

    fn layer(&self, inner: S) -> TagRoute<S> {
        TagRoute { inner }
    }
}

#[derive(Clone)]
pub(crate) struct TagRoute<S> {
    inner: S,
}

impl<S> Service<Request> for TagRoute<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Tagged<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let route = req.extensions().get::<MatchedPath>().cloned();
        Tagged {
            inner: self.inner.call(req),
            route,
        }
    }
}

pin_project_lite::pin_project! {
    /// The route's future; its response gets the route's template.
    pub struct Tagged<F> {
        #[pin]
        inner: F,
        route: Option<MatchedPath>,
    }
}

impl<F, E> Future for Tagged<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut resp = std::task::ready!(this.inner.poll(cx))?;
        if let Some(m) = this.route.take() {
            resp.extensions_mut()
                .insert(Route(Cow::Owned(m.as_str().to_owned())));
        }
        Poll::Ready(Ok(resp))
    }
}
