//! The layering invariant (ARCHITECTURE.md): layers that must see every request sit above
//! the registration path (`fast`). Held by sending the same requests, good and bad, to the
//! API as served (where the path takes the registrations of its exact shape) and to the same
//! API without the path (where the router takes them), and asking for the same status,
//! headers (the values of `Date` and `X-Signpost-Index` aside) and body. A layer put between
//! the path and the router, or a path that stops matching the router's route, shows here as
//! a difference: a refusal one side makes and the other does not, a header only one adds.
//! The request counts (`signpost_http_requests_total{route,code}`) must come out the same
//! too: the path counts its registrations under the router's route template.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::HeaderMap;
use axum::response::Response;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::{AppState, INDEX_HEADER, app, router_only};
use crate::config::Config;
use crate::dns::Stats;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::store::Embedded;

/// One request: method, path, extra headers, body.
type Case = (&'static str, String, Vec<(&'static str, String)>, Vec<u8>);

fn cases() -> Vec<Case> {
    let reg = "/v1/services/web/instances/web-1".to_string();
    let json = |v: serde_json::Value| serde_json::to_vec(&v).unwrap();
    let good = json(serde_json::json!({"address": "10.0.0.1", "port": 80}));
    let full = json(serde_json::json!({
        "address": "10.0.0.2", "port": 8080, "tags": ["v2"], "meta": {"version": "2.1.0"},
        "weight": 5, "check": {"ttl": "30s"}, "deregister_after": "10m",
        "ports": {"grpc": 9090}, "fail_open": true,
    }));
    let bad_port = json(serde_json::json!({
        "address": "10.0.0.2", "port": 8080, "ports": {"_grpc": 9090},
    }));
    let mut big = serde_json::json!({"address": "10.0.0.1", "port": 80});
    big["meta"] = serde_json::json!({"k": "x".repeat(70 * 1024)});
    let none = Vec::new;
    vec![
        ("PUT", reg.clone(), none(), good.clone()),
        ("PUT", reg.clone(), none(), good.clone()), // the same again: idempotent
        (
            "PUT",
            "/v1/services/web/instances/web-2".into(),
            none(),
            full,
        ),
        ("PUT", reg.clone(), none(), bad_port),
        ("PUT", reg.clone(), none(), b"{not json".to_vec()),
        ("PUT", reg.clone(), none(), b"".to_vec()),
        (
            "PUT",
            reg.clone(),
            none(),
            br#"{"address": "10.0.0.1", "port": 80} x"#.to_vec(),
        ),
        ("PUT", reg.clone(), none(), br#"{"port": 80}"#.to_vec()),
        (
            "PUT",
            reg.clone(),
            none(),
            br#"{"address": "10.0.0.1", "port": "x"}"#.to_vec(),
        ),
        ("PUT", reg.clone(), none(), json(big)),
        (
            "PUT",
            reg.clone(),
            vec![("content-length", "1000000".into())],
            good.clone(),
        ),
        (
            "PUT",
            reg.clone(),
            vec![("origin", "http://evil.example".into())],
            good.clone(),
        ),
        (
            "PUT",
            reg.clone(),
            vec![("origin", "https://ops.example.com".into())],
            good.clone(),
        ),
        (
            "PUT",
            reg.clone(),
            vec![("host", "evil.example:8500".into())],
            good.clone(),
        ),
        (
            "PUT",
            reg.clone(),
            vec![("host", "localhost:8500".into())],
            good.clone(),
        ),
        (
            "PUT",
            "/v1/services/-bad-/instances/web-1".into(),
            none(),
            good.clone(),
        ),
        (
            "PUT",
            "/v1/services/WEB/instances/Web-1".into(),
            none(),
            good.clone(),
        ),
        // Forms the registration path declines, to the router on both sides.
        (
            "PUT",
            "/v1/services/w%65b/instances/web-1".into(),
            none(),
            good.clone(),
        ),
        (
            "PUT",
            "/v1/services/web/instances/web-1/".into(),
            none(),
            good.clone(),
        ),
        (
            "PUT",
            "/V1/services/web/instances/web-1".into(),
            none(),
            good.clone(),
        ),
        (
            "PUT",
            format!("/v1/services/web/instances/{}", "a".repeat(9000)),
            none(),
            good.clone(),
        ),
        ("POST", reg.clone(), none(), good.clone()),
        ("GET", reg.clone(), none(), Vec::new()),
    ]
}

fn request((method, path, headers, body): &Case) -> Request {
    let mut b = Request::builder().method(*method).uri(path.as_str());
    if !headers.iter().any(|(n, _)| *n == "host") {
        b = b.header("host", "127.0.0.1:8500");
    }
    let mut declared = false;
    for (n, v) in headers {
        declared |= *n == "content-length";
        b = b.header(*n, v.as_str());
    }
    if !declared {
        b = b.header("content-length", body.len());
    }
    b.body(Body::from(body.clone())).unwrap()
}

/// Status, headers without the values of `Date` and the index, body: what a client sees.
/// hyper writes `Content-Length` from the body's exact size when a response has none, as
/// axum's router sets it, so it is added here the same way.
async fn seen(resp: Response) -> (u16, Vec<(String, String)>, Bytes) {
    let (mut parts, body) = resp.into_parts();
    if let Some(n) = http_body::Body::size_hint(&body).exact() {
        parts
            .headers
            .entry(axum::http::header::CONTENT_LENGTH)
            .or_insert(n.into());
    }
    let headers = normalised(&parts.headers);
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    (parts.status.as_u16(), headers, body)
}

fn normalised(h: &HeaderMap) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = h
        .iter()
        .map(|(n, v)| {
            let v = if n == "date" || n == INDEX_HEADER {
                "*".to_string()
            } else {
                v.to_str().unwrap_or("?").to_string()
            };
            (n.to_string(), v)
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn every_request_gets_the_same_answer_with_and_without_the_registration_path() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, writer) = Registry::open(Arc::new(Embedded::open(dir.path()).unwrap()), vec![])
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let _writer = tokio::spawn(writer.run(stop.clone()));
    let mut cfg = Config::default();
    cfg.http.allowed_origins = vec!["https://ops.example.com".into()];
    let metrics = || Metrics::new(Arc::new(Stats::new(0)), registry.clone());
    let state = |metrics: Arc<Metrics>| AppState {
        registry: registry.clone(),
        max_wait: cfg.http.max_wait,
        shutdown: stop.clone(),
        body_timeout: cfg.http_body_timeout(),
        max_body: cfg.http.max_body_bytes,
        metrics,
        dashboard: super::Dashboard::new(&cfg.dns.domain, &[], cfg.http.token.as_ref()),
        consul: Arc::new(super::ConsulAgent::new(
            &cfg.consul,
            "test-node",
            cfg.http.listen,
        )),
        watches: Default::default(),
    };
    let (served_metrics, routed_metrics) = (metrics(), metrics());
    let served = app(state(served_metrics.clone()), &cfg.http);
    let routed = router_only(state(routed_metrics.clone()), &cfg.http);

    let mut statuses = Vec::new();
    for case in cases() {
        let a = seen(served.clone().oneshot(request(&case)).await.unwrap()).await;
        let b = seen(routed.clone().oneshot(request(&case)).await.unwrap()).await;
        let (method, path, headers, _) = &case;
        let what = format!("{method} {} {headers:?}", &path[..path.len().min(60)]);
        assert_eq!(a.0, b.0, "status of {what}: {:?} / {:?}", a.2, b.2);
        assert_eq!(a.1, b.1, "headers of {what}");
        assert_eq!(a.2, b.2, "body of {what}");
        statuses.push(a.0);
    }
    // The cases are the ones meant: registrations, each kind of refusal.
    assert_eq!(
        statuses,
        [
            200, 200, 200, 400, 400, 400, 400, 400, 400, 413, 413, 403, 200, 403, 200, 400, 200,
            200, 404, 404, 414, 405, 200
        ]
    );
    let counts = |m: &Metrics| -> std::collections::BTreeSet<String> {
        m.encode()
            .lines()
            .filter(|l| l.starts_with("signpost_http_requests_total{"))
            .map(str::to_string)
            .collect()
    };
    let served_counts = counts(&served_metrics);
    assert_eq!(served_counts, counts(&routed_metrics));
    let registered = format!(
        "signpost_http_requests_total{{route=\"{}\",code=\"200\"}} ",
        super::fast::ROUTE
    );
    assert!(
        served_counts.iter().any(|l| l.starts_with(&registered)),
        "{served_counts:#?}"
    );
    stop.cancel();
}
