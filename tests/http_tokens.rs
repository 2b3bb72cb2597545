//! Tokens (CONTRACT §3): with `http.token` every write needs `Authorization: Bearer <token>`
//! — on every path, the registration path served ahead of the router included — and reads
//! stay open; with `http.read_token` reads need it or the write token. A missing or wrong
//! token is 401 with `WWW-Authenticate: Bearer` and the JSON error shape, and changes nothing.
//! `/healthz` stays open; a token may come from a file.

mod common;

use common::TestServer;
use serde_json::{Value, json};
use signpost::config::Secret;

const WRITE: &str = "w-3c1f9a";
const READ: &str = "r-77b2d0";

async fn put(s: &TestServer, path: &str, body: Value, token: Option<&str>) -> reqwest::Response {
    let mut r = s.client.put(s.url(path)).json(&body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap()
}

async fn get(s: &TestServer, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut r = s.client.get(s.url(path));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap()
}

async fn assert_refused(r: reqwest::Response) {
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("token"), "{body}");
}

fn instances(v: &Value) -> usize {
    v["instances"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn writes_need_the_write_token_and_change_nothing_without_it() {
    let s = TestServer::start_with(|c| c.http.token = Some(Secret(WRITE.into()))).await;
    let reg = json!({"address": "10.0.0.1", "port": 80});
    // The registration path (exact shape, ahead of the router) and a router-only form of it.
    for path in [
        "/v1/services/web/instances/a",
        "/v1/services/w%65b/instances/a",
    ] {
        assert_refused(put(&s, path, reg.clone(), None).await).await;
        assert_refused(put(&s, path, reg.clone(), Some("wrong")).await).await;
        assert_refused(put(&s, path, reg.clone(), Some(READ)).await).await;
    }
    let r = get(&s, "/v1/services/web", None).await;
    assert_eq!(r.status(), 200, "reads stay open");
    assert_eq!(instances(&r.json().await.unwrap()), 0, "nothing registered");

    assert_eq!(
        put(&s, "/v1/services/web/instances/a", reg.clone(), Some(WRITE))
            .await
            .status(),
        200
    );
    // Other writes: maintenance, health reports, removal.
    let m = json!({"enabled": true, "reason": "x"});
    assert_refused(
        put(
            &s,
            "/v1/services/web/instances/a/maintenance",
            m.clone(),
            None,
        )
        .await,
    )
    .await;
    let del = s
        .client
        .delete(s.url("/v1/services/web/instances/a"))
        .send()
        .await
        .unwrap();
    assert_refused(del).await;
    let r = get(&s, "/v1/services/web", None).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(instances(&v), 1);
    assert!(v["instances"][0]["maintenance"].is_null(), "unchanged: {v}");
    let del = s
        .client
        .delete(s.url("/v1/services/web/instances/a"))
        .bearer_auth(WRITE)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);
    assert_eq!(get(&s, "/healthz", None).await.status(), 200);
}

#[tokio::test]
async fn reads_need_a_token_when_a_read_token_is_set() {
    let s = TestServer::start_with(|c| {
        c.http.token = Some(Secret(WRITE.into()));
        c.http.read_token = Some(Secret(READ.into()));
    })
    .await;
    assert_refused(get(&s, "/v1/services", None).await).await;
    assert_refused(get(&s, "/v1/services/web", Some("nope")).await).await;
    assert_eq!(get(&s, "/v1/services", Some(READ)).await.status(), 200);
    assert_eq!(
        get(&s, "/v1/services", Some(WRITE)).await.status(),
        200,
        "the write token reads"
    );
    let reg = json!({"address": "10.0.0.1", "port": 80});
    assert_refused(put(&s, "/v1/services/web/instances/a", reg, Some(READ)).await).await;
    assert_eq!(
        get(&s, "/healthz", None).await.status(),
        200,
        "/healthz stays open"
    );
}

#[tokio::test]
async fn a_token_can_come_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{WRITE}\n")).unwrap();
    let s = TestServer::start_with(|c| c.http.token_file = Some(file.clone())).await;
    let reg = json!({"address": "10.0.0.1", "port": 80});
    assert_refused(put(&s, "/v1/services/web/instances/a", reg.clone(), None).await).await;
    let r = put(&s, "/v1/services/web/instances/a", reg, Some(WRITE)).await;
    assert_eq!(r.status(), 200);
}
