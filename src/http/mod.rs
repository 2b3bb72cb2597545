//! The HTTP API (CONTRACT §3): the axum router, its limits and the `X-Signpost-Index`
//! header. Handlers live in `instances` and `services`; JSON shapes in `wire`.
//!
//! Only this module imports axum and hyper; `stamp` adds the index header, `guard` refuses
//! writes from foreign pages, `admit` bounds the requests running at once, `protocol` holds
//! the limits of a request's shape and answers protocol errors in the JSON shape, `serve` runs
//! the accept loop with its connection limits (`conn`, `io`), `metrics` serves `/metrics`
//! and counts every response, `ui` serves the web dashboard's page and files. `consul` serves the Consul-compatible API (CONTRACT §5) over
//! the same registry.

mod admit;
mod body;
mod conn;
mod consul;
mod error;
mod fast;
mod guard;
mod instances;
mod io;
mod metrics;
mod protocol;
mod refuse;
mod respond;
mod serve;
mod services;
mod stamp;
#[cfg(test)]
mod tests;
mod token;
mod ui;
mod watch;
mod wire;

pub(crate) use conn::Timeouts;
pub(crate) use consul::Agent as ConsulAgent;
pub(crate) use serve::{Limits, serve};
pub(crate) use ui::Dashboard;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, put};
use tokio_util::sync::CancellationToken;
use tower::{Layer, ServiceBuilder};

use crate::config::HttpConfig;
use crate::registry::Registry;
use admit::{Admit, AdmitLayer};
use error::ApiError;
use guard::Guard;
use metrics::{Count, TagRoute};
use protocol::UriLimit;
use refuse::{Refuse, RefuseLayer};
use respond::{Respond, RespondLayer};
use stamp::{Stamp, StampIndex};
use token::TokenCheck;

pub(crate) const INDEX_HEADER: &str = "x-signpost-index";

#[derive(Clone)]
pub(crate) struct AppState {
    pub registry: Arc<Registry>,
    /// Longest long-poll `wait`, seconds.
    pub max_wait: std::time::Duration,
    /// Cancelled at shutdown: long-polls return early so the server can drain.
    pub shutdown: CancellationToken,
    /// How long a request body may take to arrive once a handler reads it (then 408).
    pub body_timeout: std::time::Duration,
    /// The largest request body read (then 413).
    pub max_body: usize,
    /// The server's metrics: `/metrics` encodes them, every response is counted in them.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// What the web dashboard's pages are told of this server (`/ui/config.json`).
    pub dashboard: Dashboard,
    /// The synthetic node and datacenter the Consul-compatible API shows, and the blocking
    /// reads waiting on its services.
    pub consul: Arc<ConsulAgent>,
    /// The long-polls waiting on one service each (native and Consul), woken only by that
    /// service's changes.
    pub watches: Arc<watch::Watches>,
}

/// The header carrying `index`.
pub(crate) fn index_header(index: u64) -> [(HeaderName, HeaderValue); 1] {
    [(
        HeaderName::from_static(INDEX_HEADER),
        HeaderValue::from(index),
    )]
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this path",
    )
}

async fn healthz() -> impl IntoResponse {
    "ok\n"
}

/// 200 while this server can take writes; 503 naming why not (the store failing, its data
/// dir removed). Asking also repairs a store whose failure has passed.
async fn ready(State(state): State<Arc<AppState>>) -> Result<&'static str, ApiError> {
    state
        .registry
        .ready()
        .await
        .map(|()| "ok\n")
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
}

/// The layers every request passes, outermost first: the index stamp, the request count, the
/// URI limit, the origin and host guard, the tokens, the admission limits.
pub(crate) type Outer<S> =
    StampIndex<Respond<Count, Refuse<UriLimit, Refuse<Guard, Refuse<TokenCheck, Admit<S>>>>>>;

/// The whole API as served: the outer layers over the registration path (`fast`), which is in
/// front of the router.
pub(crate) type App = Outer<fast::FastRegister<Router>>;

/// The whole API.
pub(crate) fn app(state: AppState, http: &HttpConfig) -> App {
    // Shared behind one `Arc`: axum clones the state for every request, and cloning the
    // fields one by one (the cancellation token takes a lock) showed in the profile.
    let state = Arc::new(state);
    let body_limit = DefaultBodyLimit::max(state.max_body);
    let routes = fast::FastRegisterLayer::new(state.clone(), body_limit)
        .layer(router(state.clone(), body_limit));
    outer(&state, http, routes)
}

/// The API without the registration path: every request through the router. The same
/// requests must get the same answers from it as from `app` (`tests.rs`).
#[cfg(test)]
fn router_only(state: AppState, http: &HttpConfig) -> Outer<Router> {
    let state = Arc::new(state);
    let body_limit = DefaultBodyLimit::max(state.max_body);
    outer(&state, http, router(state.clone(), body_limit))
}

/// Puts the layers that must see every request over `routes`. They go here, above the
/// registration path, and nowhere below it: a layer between `fast` and the router would be
/// skipped by every registration the path serves (ARCHITECTURE.md, "Invariants").
fn outer<S>(state: &AppState, http: &HttpConfig, routes: S) -> Outer<S> {
    ServiceBuilder::new()
        .layer(RespondLayer(Stamp(state.registry.clone())))
        .layer(RespondLayer(Count(state.metrics.clone())))
        .layer(RefuseLayer(UriLimit))
        .layer(RefuseLayer(Guard::new(
            &http.allowed_origins,
            &http.allowed_hosts,
        )))
        .layer(RefuseLayer(TokenCheck::new(
            http.token.as_ref(),
            http.read_token.as_ref(),
        )))
        .layer(AdmitLayer::new(
            http.max_concurrent_requests,
            http.max_watchers,
        ))
        .service(routes)
}

/// Every route, through axum's router.
fn router(state: Arc<AppState>, body_limit: DefaultBodyLimit) -> Router {
    let v1 = Router::new()
        .route("/services", get(services::list))
        .route("/services/{service}", get(services::get))
        .route(
            "/services/{service}/instances/{id}",
            put(instances::register)
                .delete(instances::deregister)
                .get(instances::get),
        )
        .route(
            "/services/{service}/instances/{id}/health",
            put(instances::health),
        )
        .route(
            "/services/{service}/instances/{id}/maintenance",
            put(instances::maintenance),
        );
    let v1 = consul::routes(v1)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics::serve))
        // The web dashboard (CONTRACT §7): the page shell, its files and its settings.
        .route("/ui", get(ui::redirect))
        .route("/ui/", get(ui::shell))
        .route("/ui/services/{service}", get(ui::shell))
        .route("/ui/config.json", get(ui::config))
        .route("/ui/{file}", get(ui::asset))
        .nest("/v1", v1)
        .fallback(not_found)
        .layer(RespondLayer(TagRoute))
        .layer(body_limit)
        .with_state(state)
}
