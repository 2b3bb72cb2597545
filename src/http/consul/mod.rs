//! The Consul-compatible HTTP API (CONTRACT §5): the subset of Consul's agent, catalog,
//! health and status endpoints that Prometheus' and VictoriaMetrics' `consul_sd_configs`,
//! consul-template, Fabio, Registrator and the official clients use (§5's table, plus the
//! datacenter, node, peer and check lists they also ask), over the same registry as
//! signpost's own API. Every instance sits on one synthetic node (`Agent`) in one
//! datacenter, both named in `[consul]`.
//!
//! `wire` holds Consul's JSON shapes, `agent` the writes and the agent's reads, `catalog` and
//! `health` the reads, `blocking` the index/wait of blocking reads and the headers of every
//! read, `watch` the per-service wake-ups of those waiting on one service, `query` the query
//! parameters, `filter` the `filter` expressions, `duration` Go's duration syntax. Errors keep signpost's JSON shape (`{"error": ...}`) with Consul's status
//! codes; Consul clients read the status and show the body.

mod agent;
mod blocking;
mod catalog;
mod duration;
mod filter;
mod health;
mod query;
mod wire;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, put};

use super::AppState;
use super::error::ApiError;
use crate::model::{InstanceId, InstanceKey, InvalidField};
use crate::registry::Snapshot;

/// The synthetic node every instance is shown on and its datacenter.
pub(crate) struct Agent {
    pub datacenter: String,
    pub node: String,
    /// A UUID derived from the node's name, so it is the same after a restart.
    pub node_id: String,
    /// The node's address: the HTTP listener's (loopback when it listens on every address).
    pub address: IpAddr,
    /// What `/v1/status/leader` names: the HTTP listener, `IP:PORT`.
    pub leader: String,
}

impl Agent {
    pub(crate) fn new(
        cfg: &crate::config::ConsulConfig,
        host_name: &str,
        http: SocketAddr,
    ) -> Self {
        let node = cfg.node.clone().unwrap_or_else(|| host_name.to_string());
        let address = match http.ip() {
            IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        Agent {
            datacenter: cfg.datacenter.clone(),
            node_id: node_id(&node),
            node,
            address,
            leader: SocketAddr::new(address, http.port()).to_string(),
        }
    }
}

/// A UUID-shaped ID from two FNV-1a hashes of `name`: stable across restarts and builds.
fn node_id(name: &str) -> String {
    let fnv = |seed: u64| {
        name.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let (a, b) = (fnv(0xcbf2_9ce4_8422_2325), fnv(0x6c62_272e_07bb_0142));
    let hex = format!("{a:016x}{b:016x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Adds the Consul routes to signpost's `/v1` router.
pub(crate) fn routes(v1: Router<Arc<AppState>>) -> Router<Arc<AppState>> {
    v1.route("/agent/service/register", put(agent::register))
        .route("/agent/service/deregister/{id}", put(agent::deregister))
        .route("/agent/service/maintenance/{id}", put(agent::maintenance))
        .route("/agent/check/pass/{check}", put(agent::pass))
        .route("/agent/check/warn/{check}", put(agent::warn))
        .route("/agent/check/fail/{check}", put(agent::fail))
        .route("/agent/check/update/{check}", put(agent::update))
        .route("/agent/services", get(agent::services))
        .route("/agent/checks", get(agent::agent_checks))
        .route("/agent/self", get(agent::self_))
        .route("/status/leader", get(agent::leader))
        .route("/status/peers", get(agent::peers))
        .route("/catalog/services", get(catalog::services))
        .route("/catalog/service/{service}", get(catalog::service))
        .route("/catalog/datacenters", get(catalog::datacenters))
        .route("/catalog/nodes", get(catalog::nodes))
        .route("/health/service/{service}", get(health::service))
        .route("/health/checks/{service}", get(health::service_checks))
        .route("/health/state/{state}", get(health::state))
}

/// `err` with its field renamed to Consul's (`service` → `Name`).
fn renamed(field: &'static str) -> impl Fn(InvalidField) -> ApiError {
    move |e| ApiError::bad_request(format!("{field}: {}", e.reason))
}

/// The instance a Consul service ID names. Consul IDs are unique on an agent; signpost's are
/// unique within a service, so an ID that two services use (registered through signpost's
/// own API) is refused rather than guessed. `None` when no instance has it. Looks the ID up
/// in every service: a binary search per service.
fn by_id(snap: &Snapshot, id: &InstanceId) -> Result<Option<InstanceKey>, ApiError> {
    let mut found = snap
        .services
        .iter()
        .filter(|(_, insts)| insts.get(id).is_some())
        .map(|(service, _)| InstanceKey {
            service: service.clone(),
            id: id.clone(),
        });
    let first = found.next();
    if let Some(second) = found.next() {
        let first = first.expect("a second implies a first");
        return Err(ApiError::bad_request(format!(
            "ID: {id:?} names an instance of several services ({}, {}): signpost's own API \
             (/v1/services/{{service}}/instances/{{id}}) tells them apart",
            first.service, second.service
        )));
    }
    Ok(first)
}

/// The answer to an ID that names nothing: Consul's 404.
fn unknown(what: &str, id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("Unknown {what} {id:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_id_is_a_stable_uuid_shape() {
        let a = node_id("sp-1");
        assert_eq!(a, node_id("sp-1"));
        assert_ne!(a, node_id("sp-2"));
        let parts: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12]);
    }
}
