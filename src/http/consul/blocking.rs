//! Consul's blocking queries and the headers of every Consul read.
//!
//! A read with `?index=N` (N > 0) waits while the index of its result is still N or less,
//! for at most `wait` (Go duration or `…ms`; default 5 minutes, capped by `http.max_wait`),
//! then answers with the current result either way, as Consul does. The index of a result
//! is the last change of what it contains: one service's last change for a read of that
//! service (`Snapshot::service_index`), so a watch on one service is not even woken by
//! another's change (`http::watch::Watches`); the registry's index for reads over everything. An
//! index above the registry's (the server restarted below it) answers at once, and the
//! client starts over.
//!
//! `X-Consul-Index` (and `CreateIndex`/`ModifyIndex` in bodies) is signpost's index plus one
//! (`consul_index`): never 0, which Consul clients take for "no index" and some refuse, and
//! distinct for an empty registry (0, shown 1) and its first change (1, shown 2), so a watch
//! of a service that does not exist yet wakes when it is first registered. It never goes
//! backwards for one result: service indexes only grow. `X-Consul-KnownLeader:
//! true` and `X-Consul-LastContact: 0`: every replica answers reads from its own current
//! copy of the registry, as a Consul leader answers.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue};

use crate::http::AppState;
use crate::model::ServiceName;
use crate::registry::Snapshot;

/// `wait` when a blocking read gives none: Consul's default.
pub(crate) const DEFAULT_WAIT: Duration = Duration::from_secs(300);

/// A signpost index as the Consul API shows it: plus one, so never 0.
pub(crate) fn consul_index(index: u64) -> u64 {
    index.saturating_add(1)
}

/// The headers every Consul read carries, for a result at signpost index `index`.
pub(crate) fn headers(index: u64) -> [(HeaderName, HeaderValue); 3] {
    [
        (
            HeaderName::from_static("x-consul-index"),
            HeaderValue::from(consul_index(index)),
        ),
        (
            HeaderName::from_static("x-consul-knownleader"),
            HeaderValue::from_static("true"),
        ),
        (
            HeaderName::from_static("x-consul-lastcontact"),
            HeaderValue::from_static("0"),
        ),
    ]
}

/// What a blocking read waits on.
pub(crate) enum Scope<'a> {
    /// One service: its own index (`Snapshot::service_index`), through `Watches`.
    Service(&'a ServiceName),
    /// Everything: the registry's index.
    Registry,
}

/// Waits, when `index` asks to, until the index of `scope` passes it (or `wait` ends, or the
/// server shuts down); returns the snapshot to answer from.
pub(crate) async fn wait(
    st: &AppState,
    index: Option<u64>,
    wait: Option<Duration>,
    scope: Scope<'_>,
) -> Arc<Snapshot> {
    let Some(n) = index.filter(|n| *n > 0) else {
        return st.registry.snapshot();
    };
    let wait = wait.unwrap_or(DEFAULT_WAIT).min(st.max_wait);
    // `n` is a Consul index (signpost's plus one). One above the registry's is from before
    // a restart (health is not stored): answered at once, and the client starts over.
    if consul_index(st.registry.snapshot().index) < n {
        return st.registry.snapshot();
    }
    let waited = async {
        match scope {
            Scope::Registry => {
                let mut rx = st.registry.subscribe();
                let _ = rx.wait_for(|i| consul_index(*i) > n).await;
            }
            Scope::Service(service) => {
                let mut w = st.watches.watch(&st.registry, &st.shutdown, service);
                let _ = w.index.wait_for(|i| consul_index(*i) > n).await;
            }
        }
    };
    tokio::select! {
        _ = tokio::time::timeout(wait, waited) => {}
        _ = st.shutdown.cancelled() => {}
    }
    st.registry.snapshot()
}
