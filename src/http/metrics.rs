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
//! Both are `OnResponse` layers (`respond`), for the same reason as `stamp`:
//! `axum::middleware::from_fn` boxes every request's future.

use std::borrow::Cow;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::respond::OnResponse;
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
pub(crate) struct Count(pub Arc<Metrics>);

impl OnResponse for Count {
    type Note = Arc<Metrics>;

    fn note(&self, _: &Request) -> Arc<Metrics> {
        self.0.clone()
    }

    fn respond(metrics: Arc<Metrics>, resp: &mut Response) {
        let route = resp.extensions().get::<Route>().map(|r| r.0.clone());
        metrics.http_request(route, resp.status().as_u16());
    }
}

/// Inside the router: puts the matched route's template on the response as a `Route`.
#[derive(Clone, Copy)]
pub(crate) struct TagRoute;

impl OnResponse for TagRoute {
    type Note = Option<MatchedPath>;

    fn note(&self, req: &Request) -> Option<MatchedPath> {
        req.extensions().get::<MatchedPath>().cloned()
    }

    fn respond(route: Option<MatchedPath>, resp: &mut Response) {
        if let Some(m) = route {
            resp.extensions_mut()
                .insert(Route(Cow::Owned(m.as_str().to_owned())));
        }
    }
}
