//! Query parameters of the Consul endpoints. Each endpoint names the parameters it reads;
//! the ones Consul clients send on every request (`dc`, `stale`, `consistent`, `cached`,
//! `near`, `ns`, `partition`, `token`, ...) are accepted everywhere and change nothing,
//! except that another datacenter is answered 500 "No path to datacenter", as Consul answers
//! one it cannot reach, and a namespace, partition or peer other than the default is a 400.
//! Any other parameter is a 400 naming it, so a typo (`?pasing`) does not silently widen an
//! answer.

use std::time::Duration;

use axum::http::StatusCode;

use super::duration;
use super::filter::Filter;
use crate::http::error::ApiError;

/// Parameters every Consul endpoint accepts. `stale`, `consistent` and `cached` choose
/// consistency modes, and every read here is served from the published snapshot, which is
/// all of them at once; `near` sorts by network distance, which one node has none of;
/// `pretty` (indented JSON) is not honoured; `hash` belongs to hash-based blocking, which
/// signpost answers at once; `token` is the token in the URL (tokens are read from headers
/// only).
const COMMON: [&str; 13] = [
    "dc",
    "stale",
    "consistent",
    "cached",
    "near",
    "ns",
    "partition",
    "peer",
    "pretty",
    "hash",
    "token",
    "merge-central-config",
    "wait",
];

/// The parameters an endpoint may read besides the common ones.
pub(crate) mod allow {
    /// Blocking reads: `index` (with the common `wait`).
    pub(crate) const INDEX: &str = "index";
    pub(crate) const FILTER: &str = "filter";
    pub(crate) const NODE_META: &str = "node-meta";
    pub(crate) const TAG: &str = "tag";
    pub(crate) const PASSING: &str = "passing";
    pub(crate) const ENABLE: &str = "enable";
    pub(crate) const REASON: &str = "reason";
    pub(crate) const NOTE: &str = "note";
    pub(crate) const REPLACE_CHECKS: &str = "replace-existing-checks";
}

/// What a request's query said.
#[derive(Default)]
pub(crate) struct Params {
    pub index: Option<u64>,
    pub wait: Option<Duration>,
    pub filter: Option<Filter>,
    /// `node-meta=key:value` pairs: the node must carry each.
    pub node_meta: Vec<(String, String)>,
    /// `tag=`, repeatable: an instance must carry every one (lowercased).
    pub tags: Vec<String>,
    pub passing: bool,
    pub enable: Option<bool>,
    pub reason: Option<String>,
    pub note: Option<String>,
}

/// Consul's reading of a flag: present without a value is true, else Go's `ParseBool`.
fn flag(key: &str, v: &str) -> Result<bool, ApiError> {
    match v {
        "" | "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => Err(ApiError::bad_request(format!(
            "{key}: {other:?} is not true or false"
        ))),
    }
}

impl Params {
    /// Reads `query` for an endpoint that reads `allowed` (see `allow`); `datacenter` is
    /// this server's.
    pub(crate) fn parse(
        query: Option<&str>,
        allowed: &[&str],
        datacenter: &str,
    ) -> Result<Self, ApiError> {
        let mut p = Params::default();
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let (k, v) = (k.as_ref(), v.as_ref());
            if !allowed.contains(&k) && !COMMON.contains(&k) {
                let mut known: Vec<&str> = allowed.to_vec();
                known.extend(COMMON);
                return Err(ApiError::bad_request(format!(
                    "{k}: unknown query parameter here (known: {})",
                    known.join(", ")
                )));
            }
            match k {
                "dc" if !v.is_empty() && !v.eq_ignore_ascii_case(datacenter) => {
                    return Err(ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("No path to datacenter (dc: {v:?}; this one is {datacenter:?})"),
                    ));
                }
                "ns" | "partition" if !(v.is_empty() || v == "default") => {
                    return Err(ApiError::bad_request(format!(
                        "{k}: {v:?}: signpost has only the default one"
                    )));
                }
                "peer" if !v.is_empty() => {
                    return Err(ApiError::bad_request(format!(
                        "peer: {v:?}: signpost has no cluster peers"
                    )));
                }
                "index" => {
                    p.index = Some(v.parse().map_err(|_| {
                        ApiError::bad_request(format!("index: {v:?} is not a non-negative integer"))
                    })?);
                }
                "wait" => {
                    p.wait = Some(
                        duration::parse(v)
                            .map_err(|e| ApiError::bad_request(format!("wait: {e}")))?,
                    );
                }
                "filter" => {
                    if p.filter.is_some() {
                        return Err(ApiError::bad_request("filter: given twice"));
                    }
                    p.filter = Some(
                        Filter::parse(v)
                            .map_err(|e| ApiError::bad_request(format!("filter: {e}")))?,
                    );
                }
                "node-meta" => {
                    let (mk, mv) = v.split_once(':').ok_or_else(|| {
                        ApiError::bad_request(format!("node-meta: {v:?} is not key:value"))
                    })?;
                    p.node_meta.push((mk.to_string(), mv.to_string()));
                }
                "tag" => p.tags.push(v.to_ascii_lowercase()),
                "passing" => p.passing = flag(k, v)?,
                "enable" => p.enable = Some(flag(k, v)?),
                "reason" => p.reason = Some(v.to_string()),
                "note" => p.note = Some(v.to_string()),
                "replace-existing-checks" => {
                    flag(k, v)?;
                }
                _ => {} // accepted, and changes nothing here (see COMMON)
            }
        }
        Ok(p)
    }

    /// Whether the synthetic node passes `node-meta`: it carries no metadata, so only an
    /// empty list does (a tool asking for nodes with some metadata gets none, as Consul
    /// would give it for a node without that metadata).
    pub(crate) fn node_matches(&self) -> bool {
        self.node_meta.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str, allowed: &[&str]) -> Result<Params, ApiError> {
        Params::parse(Some(q), allowed, "dc1")
    }

    #[test]
    fn what_the_tools_send_is_accepted() {
        // VictoriaMetrics and Prometheus, on health and catalog reads.
        let p = parse(
            "dc=dc1&stale&index=42&wait=120000ms&tag=V2&tag=canary&node-meta=rack:a&filter=%22v2%22+in+Service.Tags",
            &[allow::INDEX, allow::TAG, allow::NODE_META, allow::FILTER],
        )
        .unwrap();
        assert_eq!(p.index, Some(42));
        assert_eq!(p.wait, Some(Duration::from_secs(120)));
        assert_eq!(p.tags, ["v2", "canary"]);
        assert_eq!(p.node_meta, [("rack".to_string(), "a".to_string())]);
        assert!(p.filter.is_some() && !p.node_matches());
        let p = parse(
            "passing=1&consistent=&cached&near=_agent&ns=default",
            &[allow::PASSING],
        )
        .unwrap();
        assert!(p.passing && p.node_matches());
        assert!(parse("passing", &[allow::PASSING]).unwrap().passing);
        assert!(!parse("passing=false", &[allow::PASSING]).unwrap().passing);
    }

    #[test]
    fn the_rest_is_refused_naming_the_parameter() {
        for (q, status, says) in [
            ("pasing=1", 400, "pasing: unknown"),
            ("passing=maybe", 400, "passing:"),
            ("index=-1", 400, "index:"),
            ("wait=5", 400, "wait:"),
            ("filter=Node.Meta.x==y", 400, "filter:"),
            ("node-meta=rack", 400, "node-meta:"),
            ("ns=team-a", 400, "ns:"),
            ("dc=dc2", 500, "No path to datacenter"),
            ("tag=x", 400, "tag: unknown"),
        ] {
            let e = parse(
                q,
                &[
                    allow::PASSING,
                    allow::INDEX,
                    allow::FILTER,
                    allow::NODE_META,
                ],
            )
            .err()
            .unwrap_or_else(|| panic!("{q} accepted"));
            assert_eq!(e.status.as_u16(), status, "{q}");
            assert!(e.message.contains(says), "{q}: {}", e.message);
        }
    }
}
