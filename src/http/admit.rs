//! Which requests run at once: long-polls against `http.max_watchers`, everything else
//! against `http.max_concurrent_requests`.
//!
//! A long-poll (`GET /v1/services/{service}` or `GET /v1/services` with `index`) spends its
//! time waiting, and one shared bound let a thousand of them hold back every write behind
//! them. So they have their own bound and take no slot of the general one: waiting requests never delay writes, health
//! reports or `/healthz`. A long-poll past its bound is refused at once (503, `Retry-After`,
//! the JSON error shape) rather than queued, since a queued watcher would be waiting twice and
//! a client retrying shortly gets the same answer it would have waited for. Other requests
//! past theirs wait for a slot, as before: they are short.
//!
//! The slot is taken in `call`, not `poll_ready`, because which bound applies depends on the
//! request. The inner service's future is built at once but not polled before the slot is
//! held; the router's and the registration path's futures do nothing until polled.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

use super::error::ApiError;

#[derive(Clone)]
pub(crate) struct AdmitLayer {
    general: Arc<Semaphore>,
    watchers: Arc<Semaphore>,
    max_watchers: usize,
}

impl AdmitLayer {
    pub(crate) fn new(max_concurrent: usize, max_watchers: usize) -> Self {
        Self {
            general: Arc::new(Semaphore::new(max_concurrent)),
            watchers: Arc::new(Semaphore::new(max_watchers)),
            max_watchers,
        }
    }
}

impl<S> Layer<S> for AdmitLayer {
    type Service = Admit<S>;

    fn layer(&self, inner: S) -> Admit<S> {
        Admit {
            inner,
            limits: self.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Admit<S> {
    inner: S,
    limits: AdmitLayer,
}

type Slot = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

impl<S> Service<Request> for Admit<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Admitted<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let l = &self.limits;
        if is_long_poll(&req) {
            return match l.watchers.clone().try_acquire_owned() {
                Ok(permit) => Admitted::running(self.inner.call(req), permit),
                Err(_) => Admitted::refused(
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "too many long-polls waiting (http.max_watchers = {}); retry shortly",
                            l.max_watchers
                        ),
                    )
                    .into_response(),
                ),
            };
        }
        match l.general.clone().try_acquire_owned() {
            Ok(permit) => Admitted::running(self.inner.call(req), permit),
            Err(_) => Admitted {
                slot: Some(Box::pin(l.general.clone().acquire_owned())),
                permit: None,
                inner: Some(self.inner.call(req)),
                refused: None,
            },
        }
    }
}

/// `GET` (or `HEAD`) `/v1/services/{service}` or `/v1/services` with an `index` parameter:
/// what `services::get` and `services::list` wait on; and the Consul API's blocking reads
/// (`/v1/catalog/services`, `/v1/catalog/service/{name}`, `/v1/catalog/nodes`,
/// `/v1/health/service/{name}`, `/v1/health/checks/{name}`, `/v1/health/state/{state}`) with
/// `index`.
fn is_long_poll(req: &Request) -> bool {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return false;
    }
    let path = req.uri().path();
    let one_segment = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
    };
    let blocking = path == "/v1/services"
        || one_segment("/v1/services/")
        || path == "/v1/catalog/services"
        || one_segment("/v1/catalog/service/")
        || path == "/v1/catalog/nodes"
        || one_segment("/v1/health/service/")
        || one_segment("/v1/health/checks/")
        || one_segment("/v1/health/state/");
    if !blocking {
        return false;
    }
    // Decoded as the handler's `Query` decodes it, so `%69ndex` counts too.
    req.uri()
        .query()
        .is_some_and(|q| form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "index"))
}

pin_project_lite::pin_project! {
    /// The inner future, polled once the request holds its slot (which it keeps until the
    /// response is ready); or a refusal.
    pub struct Admitted<F> {
        slot: Option<Slot>,
        permit: Option<OwnedSemaphorePermit>,
        #[pin]
        inner: Option<F>,
        refused: Option<Response>,
    }
}

impl<F> Admitted<F> {
    fn running(inner: F, permit: OwnedSemaphorePermit) -> Self {
        Self {
            slot: None,
            permit: Some(permit),
            inner: Some(inner),
            refused: None,
        }
    }

    fn refused(resp: Response) -> Self {
        Self {
            slot: None,
            permit: None,
            inner: None,
            refused: Some(resp),
        }
    }
}

impl<F> Future for Admitted<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(resp) = this.refused.take() {
            return Poll::Ready(Ok(resp));
        }
        if let Some(slot) = this.slot {
            let permit = std::task::ready!(slot.as_mut().poll(cx));
            *this.permit = Some(permit.expect("the semaphores are never closed"));
            *this.slot = None;
        }
        let inner = this.inner.as_pin_mut().expect("polled after completion");
        let out = std::task::ready!(inner.poll(cx));
        *this.permit = None;
        Poll::Ready(out)
    }
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
    fn long_polls_are_told_apart() {
        for uri in [
            "/v1/services/web?index=3",
            "/v1/services/web?wait=5s&index=3",
            "/v1/services/w%65b?index=3",
            "/v1/services/web?%69ndex=3",
            "/v1/services/web?index=x",
            "/v1/services?index=3",
            "/v1/catalog/services?stale&index=7&wait=120000ms",
            "/v1/catalog/service/web?index=7",
            "/v1/health/service/web?dc=dc1&index=0",
            "/v1/health/state/any?index=7",
            "/v1/health/checks/web?index=7",
            "/v1/catalog/nodes?index=7",
        ] {
            assert!(is_long_poll(&req(Method::GET, uri)), "{uri}");
        }
        assert!(is_long_poll(&req(Method::HEAD, "/v1/services/web?index=3")));
        for (m, uri) in [
            (Method::GET, "/v1/services/web"),
            (Method::GET, "/v1/services/web?wait=5s"),
            (Method::GET, "/v1/services/web?indexes=1"),
            (Method::GET, "/v1/services"),
            (Method::GET, "/v1/services/?index=3"),
            (Method::GET, "/v1/services/web/instances/x?index=3"),
            (Method::PUT, "/v1/services/web?index=3"),
            (Method::GET, "/healthz?index=3"),
            (Method::GET, "/v1/health/service/web"),
            (Method::GET, "/v1/agent/services?index=3"),
            (Method::GET, "/v1/catalog/services/x?index=3"),
            (Method::PUT, "/v1/health/service/web?index=3"),
        ] {
            assert!(!is_long_poll(&req(m.clone(), uri)), "{m} {uri}");
        }
    }
}
