//! The registration route ahead of the router: `PUT /v1/services/{service}/instances/{id}`.
//!
//! It is the write clients send by the thousand, and on it axum's router, extractors and
//! per-route layers cost more than the handler: serving the same registrations through this
//! path took a quarter less CPU per request (BENCHMARKS.md, "Writes and scale"). So this layer
//! recognises exactly that shape — method PUT, no percent-escapes, no further segments — and
//! runs the same body extractor under the same `DefaultBodyLimit` and the same handler
//! (`instances::register`); anything else, including every malformed variant of the path,
//! goes to the router unchanged, so routing rules, 404s and 405s stay the router's. Layers
//! that must see every request (the index header, the request count, the guard, the limits)
//! sit above both, in `outer` (ARCHITECTURE.md, "Invariants"; held by `tests.rs`). Its
//! responses carry the router's route template (`ROUTE`), so they are counted as the
//! router's would be.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};

use super::body::RawBody;
use super::metrics::Route;
use super::{AppState, instances};

/// The router's template of the route this path stands in for: its requests are counted
/// under it (`metrics`), as the router's would be.
pub(crate) const ROUTE: &str = "/v1/services/{service}/instances/{id}";

#[derive(Clone)]
pub(crate) struct FastRegisterLayer {
    state: Arc<AppState>,
    /// The router's body limit, applied the way the router applies it.
    body_limit: DefaultBodyLimit,
}

impl FastRegisterLayer {
    pub(crate) fn new(state: Arc<AppState>, body_limit: DefaultBodyLimit) -> Self {
        Self { state, body_limit }
    }
}

impl<S> Layer<S> for FastRegisterLayer {
    type Service = FastRegister<S>;

    fn layer(&self, inner: S) -> FastRegister<S> {
        FastRegister {
            inner,
            state: self.state.clone(),
            body_limit: self.body_limit,
        }
    }
}

#[derive(Clone)]
pub(crate) struct FastRegister<S> {
    inner: S,
    state: Arc<AppState>,
    body_limit: DefaultBodyLimit,
}

type Boxed = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// The router's future, or the registration's.
pub(crate) enum Either<F> {
    Router(F),
    Register(Boxed),
}

impl<F: Future<Output = Result<Response, Infallible>> + Unpin> Future for Either<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Either::Router(f) => Pin::new(f).poll(cx),
            Either::Register(f) => f.as_mut().poll(cx),
        }
    }
}

impl<S> Service<Request> for FastRegister<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        match registration(&req) {
            Some((service, id)) => {
                let mut args = Some((self.state.clone(), service, id));
                let mut limited = self.body_limit.layer(tower::service_fn(move |req| {
                    let (state, service, id) = args.take().expect("called once");
                    async move { Ok(register(state, service, id, req).await) }
                }));
                Either::Register(Box::pin(limited.call(req)))
            }
            None => Either::Router(self.inner.call(req)),
        }
    }
}

/// `(service, id)` when `req` is a registration this path serves.
fn registration(req: &Request) -> Option<(String, String)> {
    if req.method() != Method::PUT {
        return None;
    }
    let path = req.uri().path();
    if path.contains('%') {
        return None; // escapes are decoded by the router's `Path` extractor
    }
    let rest = path.strip_prefix("/v1/services/")?;
    let mut parts = rest.split('/');
    let (service, instances, id) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || instances != "instances" || service.is_empty() || id.is_empty() {
        return None;
    }
    Some((service.to_string(), id.to_string()))
}

/// The router's registration route, without the router: body extractor and handler.
async fn register(state: Arc<AppState>, service: String, id: String, req: Request) -> Response {
    let mut resp = match RawBody::from_request(req, &state).await {
        Ok(body) => instances::register(State(state), Path((service, id)), body)
            .await
            .unwrap_or_else(IntoResponse::into_response),
        Err(e) => e.into_response(),
    };
    resp.extensions_mut()
        .insert(Route(std::borrow::Cow::Borrowed(ROUTE)));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::body::Body;

    fn req(method: Method, uri: &str) -> Request {
        Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap()
    }

    #[test]
    fn only_the_exact_registration_shape_is_taken() {
        let take = |m: Method, uri: &str| registration(&req(m, uri));
        assert_eq!(
            take(Method::PUT, "/v1/services/web/instances/web-1"),
            Some(("web".into(), "web-1".into()))
        );
        assert_eq!(
            take(Method::PUT, "/v1/services/web/instances/web-1?x=1"),
            Some(("web".into(), "web-1".into()))
        );
        for (m, uri) in [
            (Method::GET, "/v1/services/web/instances/web-1"),
            (Method::DELETE, "/v1/services/web/instances/web-1"),
            (Method::PUT, "/v1/services/web/instances/web-1/health"),
            (Method::PUT, "/v1/services/web/instances/web-1/"),
            (Method::PUT, "/v1/services/web/instances/"),
            (Method::PUT, "/v1/services//instances/x"),
            (Method::PUT, "/v1/services/web/instance/web-1"),
            (Method::PUT, "/v1/services/w%65b/instances/web-1"),
            (Method::PUT, "/v2/services/web/instances/web-1"),
            (Method::PUT, "/v1/services/web"),
        ] {
            assert_eq!(take(m.clone(), uri), None, "{m} {uri}");
        }
    }
}
