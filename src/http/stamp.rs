//! The `X-Signpost-Index` header on every `/v1` response that has none yet: errors, and
//! anything a handler did not stamp with the index of its own content.
//!
//! It is the outermost layer, so that responses made above the router (refusals of the
//! admission limits, the registration path's) carry the header too; it looks at the path
//! itself to leave `/healthz` and `/ready` alone.
//!
//! An `OnResponse` (`respond`) rather than `axum::middleware::from_fn`, which boxes every
//! request's future and clones the state into it: on the registration path that was a few
//! per cent of the CPU for one header.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;

use super::INDEX_HEADER;
use super::respond::{OnResponse, Respond};
use crate::registry::Registry;

/// Stamps `/v1` responses with the registry's index.
#[derive(Clone)]
pub(crate) struct Stamp(pub Arc<Registry>);

/// A service stamped by it (outermost in `outer`).
pub(crate) type StampIndex<S> = Respond<Stamp, S>;

impl OnResponse for Stamp {
    /// The registry, for a `/v1` request only.
    type Note = Option<Arc<Registry>>;

    fn note(&self, req: &Request) -> Self::Note {
        let path = req.uri().path();
        let v1 = path == "/v1" || path.starts_with("/v1/");
        v1.then(|| self.0.clone())
    }

    fn respond(note: Self::Note, resp: &mut Response) {
        if let Some(registry) = note {
            add_index(resp, &registry);
        }
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
