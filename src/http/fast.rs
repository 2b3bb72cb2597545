//! The registration route ahead of the router: `PUT /v1/services/{service}/instances/{id}`.
//!
//! It is the write clients send by the thousand, and on it axum's router, extractors and
//! per-route layers cost more than the handler: serving the same registrations through this
//! path took a quarter less CPU per request (BENCHMARKS.md, "Writes and scale"). So this layer
//! recognises exactly that shape — method PUT, no percent-escapes, no further segments — reads
//! the body under the same limit, calls the same handler (`instances::register`) and adds the
//! index header; anything else, including every malformed variant of the path, goes to the
//! router unchanged, so routing rules, 404s and 405s stay the router's.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};

use super::body::RawBody;
use super::error::ApiError;
use super::{AppState, INDEX_HEADER, instances};

#[derive(Clone)]
pub struct FastRegisterLayer {
    state: Arc<AppState>,
    max_body: usize,
}

impl FastRegisterLayer {
    pub fn new(state: Arc<AppState>, max_body: usize) -> Self {
        Self { state, max_body }
    }
}

impl<S> Layer<S> for FastRegisterLayer {
    type Service = FastRegister<S>;

    fn layer(&self, inner: S) -> FastRegister<S> {
        FastRegister {
            inner,
            state: self.state.clone(),
            max_body: self.max_body,
        }
    }
}

#[derive(Clone)]
pub struct FastRegister<S> {
    inner: S,
    state: Arc<AppState>,
    max_body: usize,
}

type Boxed = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// The router's future, or the registration's.
pub enum Either<F> {
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
                let (state, max_body) = (self.state.clone(), self.max_body);
                Either::Register(Box::pin(async move {
                    Ok(register(state, service, id, req.into_body(), max_body).await)
                }))
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

/// Reads the body under `max_body` (413 beyond it, as the router's body extractor answers)
/// and runs the registration handler; errors carry the index header like the router's.
async fn register(
    state: Arc<AppState>,
    service: String,
    id: String,
    body: Body,
    max_body: usize,
) -> Response {
    let mut resp = match read_body(body, max_body).await {
        Ok(bytes) => {
            match instances::register(State(state.clone()), Path((service, id)), RawBody(bytes))
                .await
            {
                Ok(r) => r,
                Err(e) => e.into_response(),
            }
        }
        Err(e) => e.into_response(),
    };
    if !resp.headers().contains_key(INDEX_HEADER) {
        resp.headers_mut().insert(
            HeaderName::from_static(INDEX_HEADER),
            HeaderValue::from(state.registry.snapshot().index),
        );
    }
    resp
}

async fn read_body(body: Body, max_body: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, max_body).await.map_err(|e| {
        // `to_bytes` wraps the limit's error in one or two `axum::Error`s.
        let mut err = e.into_inner();
        for _ in 0..2 {
            err = match err.downcast::<axum::Error>() {
                Ok(inner) => inner.into_inner(),
                Err(other) => other,
            };
        }
        let status = if err.is::<http_body_util::LengthLimitError>() {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, "body: Failed to buffer the request body")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
