//! The web dashboard (CONTRACT §7) in a real browser: Debian's headless Chromium, started by
//! each test (`common::browser`), on a real server. The pages show the registered services
//! and instances; a change made over the API (a TTL check reported critical, a registration)
//! shows on the open page without a reload; maintenance and deregistration work from the page
//! with the write token and not without it (read-only page, the API's 401 if forced); with a
//! read token the page asks for it. Every request a page makes goes to the server itself, and
//! nothing it loads is refused by its Content-Security-Policy.
//!
//! The assets' own HTTP side (headers, ETags, which paths need a token) is asserted over raw
//! HTTP at the end. `SIGNPOST_SCREENSHOTS=DIR` writes the README's screenshots
//! (`scripts/screenshots`).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::TestServer;
use common::browser::{Browser, Js, Page};
use common::firefox::Firefox;
use serde_json::{Value, json};
use signpost::config::Secret;

const WRITE: &str = "w-5e1d0c";
const READ: &str = "r-a0b7f3";

/// `s` as a JavaScript string literal.
fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

async fn count(page: &impl Js, selector: &str) -> u64 {
    page.eval(&format!(
        "document.querySelectorAll({}).length",
        js(selector)
    ))
    .await
    .as_u64()
    .unwrap()
}

/// The text of the first element matching `selector`, waiting for it to exist.
async fn text(page: &impl Js, selector: &str) -> String {
    let q = js(selector);
    page.wait_for(
        &format!("document.querySelector({q}) && document.querySelector({q}).innerText"),
        &format!("{selector} to show"),
    )
    .await
    .as_str()
    .unwrap()
    .to_string()
}

async fn click(page: &impl Js, selector: &str) {
    let q = js(selector);
    page.wait_for(
        &format!("(() => {{ const e = document.querySelector({q}); if (!e) return false; e.click(); return true; }})()"),
        &format!("{selector} to click"),
    )
    .await;
}

/// Marks the window: a reload would lose the mark.
async fn mark(page: &impl Js) {
    page.eval("window.notReloaded = true").await;
}

async fn assert_not_reloaded(page: &impl Js) {
    assert_eq!(
        page.eval("window.notReloaded === true").await,
        json!(true),
        "the page reloaded"
    );
}

async fn instance(s: &TestServer, service: &str, id: &str, token: Option<&str>) -> (u16, Value) {
    let mut r = s
        .client
        .get(s.url(&format!("/v1/services/{service}/instances/{id}")));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The registry the pages are shown with: `api` with three TTL-checked instances (passing,
/// warning, critical), `db` with one unchecked, `cache` with one in maintenance.
async fn populate(s: &TestServer) {
    for (i, tags) in [
        (1, json!(["v2", "canary"])),
        (2, json!(["v2"])),
        (3, json!(["v1"])),
    ] {
        let mut body = json!({"address": format!("10.0.1.{i}"), "port": 8080, "tags": tags,
                              "weight": i * 5, "check": {"ttl": "10m"}});
        if i == 1 {
            body["ports"] = json!({"grpc": 9090});
        }
        s.register("api", &format!("api-{i}"), body).await;
    }
    let report = |id: &str, status: &str, output: &str| {
        let url = s.url(&format!("/v1/services/api/instances/{id}/health"));
        let body = json!({"status": status, "output": output});
        async move {
            let r = reqwest::Client::new()
                .put(url)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    report("api-1", "passing", "HTTP 200 OK").await;
    report("api-2", "passing", "HTTP 200 OK").await;
    report("api-3", "warning", "HTTP 429 Too Many Requests").await;
    s.register("db", "db-1", json!({"address": "10.0.2.1", "port": 5432}))
        .await;
    s.register(
        "cache",
        "cache-1",
        json!({"address": "10.0.3.1", "port": 6379}),
    )
    .await;
    let r = s
        .client
        .put(s.url("/v1/services/cache/instances/cache-1/maintenance"))
        .json(&json!({"enabled": true, "reason": "kernel upgrade"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Nothing went elsewhere than `s`, nothing threw, the CSP refused nothing. `expected` are
/// problems the test caused on purpose (a refused write logs its 401).
fn assert_clean(s: &TestServer, page: &impl Js, expected: &[&str]) {
    let origin = s.url("/");
    let requests = page.requests();
    // The page's own files and API reads at least: the recording works.
    for file in ["/ui/app.js", "/ui/app.css", "/ui/config.json"] {
        assert!(
            requests.iter().any(|u| u.ends_with(file)),
            "{file} not among the requests seen: {requests:?}"
        );
    }
    for url in requests {
        assert!(
            url.starts_with(&origin) || url == "about:blank",
            "the page requested {url}, outside {origin}"
        );
    }
    let problems: Vec<String> = page
        .problems()
        .into_iter()
        .filter(|p| !expected.iter().any(|e| p.contains(e)))
        .collect();
    assert!(problems.is_empty(), "the page logged: {problems:#?}");
}

#[tokio::test]
async fn the_pages_show_the_registry_and_follow_its_changes() {
    let s = TestServer::start().await;
    populate(&s).await;
    let browser = Browser::launch().await;
    let page = browser.page(&s.url("/ui")).await;

    // The overview: every service, its instances counted by health.
    assert_eq!(
        page.eval("location.pathname").await,
        "/ui/",
        "/ui redirects"
    );
    page.wait_for(
        "document.querySelectorAll('#services tr[data-service]').length === 3",
        "three services",
    )
    .await;
    for (service, counts) in [
        ("api", [3, 2, 1, 0, 0]),
        ("db", [1, 1, 0, 0, 0]),
        ("cache", [1, 0, 0, 0, 1]),
    ] {
        for (col, n) in ["instances", "passing", "warning", "critical", "maintenance"]
            .iter()
            .zip(counts)
        {
            let cell = text(
                &page,
                &format!("tr[data-service={service}] td[data-col={col}]"),
            )
            .await;
            assert_eq!(cell.trim(), n.to_string(), "{service} {col}");
        }
    }
    let rows = "[...document.querySelectorAll('#services tr[data-service]')].map(r => r.dataset.service).join(' ')";
    assert_eq!(page.eval(rows).await, "api cache db", "sorted by name");
    click(&page, "th button[data-sort=instances]").await;
    assert_eq!(
        page.eval(rows).await,
        "api cache db",
        "most instances first"
    );
    click(&page, "th button[data-sort=maintenance]").await;
    assert_eq!(
        page.eval(rows).await,
        "cache api db",
        "most in maintenance first"
    );
    click(&page, "th button[data-sort=maintenance]").await;
    assert_eq!(page.eval(rows).await, "api db cache", "and the other way");
    page.eval("const f = document.getElementById('filter'); f.value = 'ca'; f.dispatchEvent(new Event('input'))")
        .await;
    assert_eq!(page.eval(rows).await, "cache", "filtered");
    page.eval("const g = document.getElementById('filter'); g.value = ''; g.dispatchEvent(new Event('input'))")
        .await;

    // Changes show on the open page, without a reload.
    mark(&page).await;
    s.report("api", "api-2", "critical").await;
    page.wait_for(
        "document.querySelector('tr[data-service=api] td[data-col=critical]').innerText.trim() === '1'",
        "api's critical count to follow the report",
    )
    .await;
    assert_eq!(
        page.eval("document.querySelector('tr[data-service=api]').dataset.worst")
            .await,
        "critical"
    );
    s.register("web", "web-1", json!({"address": "10.0.4.1", "port": 80}))
        .await;
    page.wait_for(
        "document.querySelector('tr[data-service=web]')",
        "a new service",
    )
    .await;
    assert_not_reloaded(&page).await;
    assert_clean(&s, &page, &[]);

    // A service: each instance's id, address and port, tags, weight, health with its output
    // and since when, maintenance.
    click(&page, "tr[data-service=api] a").await;
    page.wait_for(
        "location.pathname === '/ui/services/api' && document.querySelectorAll('#instances tr[data-id]').length === 3",
        "api's three instances",
    )
    .await;
    let row = text(&page, "tr[data-id=api-1]").await;
    for shown in [
        "api-1",
        "10.0.1.1:8080",
        "grpc 9090",
        "v2",
        "canary",
        "5",
        "passing",
        "HTTP 200 OK",
        "off",
    ] {
        assert!(row.contains(shown), "{shown} in {row:?}");
    }
    let since = text(&page, "tr[data-id=api-1] .when").await;
    assert!(
        since.contains("ago") || since.contains("just now"),
        "relative: {since:?}"
    );
    let year = page.eval("String(new Date().getFullYear())").await;
    assert!(
        since.contains(year.as_str().unwrap()),
        "absolute: {since:?}"
    );
    assert_eq!(
        page.eval("document.querySelector('tr[data-id=api-3]').dataset.status")
            .await,
        "warning"
    );
    assert!(
        text(&page, "tr[data-id=api-3]")
            .await
            .contains("HTTP 429 Too Many Requests")
    );
    assert_eq!(
        page.eval("document.querySelector('tr[data-id=api-2]').dataset.status")
            .await,
        "critical"
    );

    // The DNS names the service answers to, with a dig line for this server.
    let dns = text(&page, "#dns").await;
    let port = s.dns.port();
    for shown in [
        "api.service.internal.".to_string(),
        "_api._tcp.service.internal.".to_string(),
        "canary.api.service.internal.".to_string(),
        "v1.api.service.internal.".to_string(),
        "_grpc._tcp.api.service.internal.".to_string(),
        format!("dig @127.0.0.1 -p {port} api.service.internal. SRV"),
    ] {
        assert!(dns.contains(&shown), "{shown} in {dns:?}");
    }
    // Copy puts the dig line on the clipboard.
    page.allow_clipboard(s.url("").trim_end_matches('/')).await;
    click(&page, "#dns li button.copy").await;
    let copied = page
        .wait_for("navigator.clipboard.readText()", "the clipboard to fill")
        .await;
    assert_eq!(
        copied,
        format!("dig @127.0.0.1 -p {port} api.service.internal. SRV")
    );

    // Nothing polls: while the registry is quiet, the page's one long-poll waits.
    let asked = |page: &Page| {
        page.requests()
            .iter()
            .filter(|u| u.contains("/v1/services/api"))
            .count()
    };
    let before = asked(&page);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        asked(&page),
        before,
        "the page asked again while nothing changed"
    );

    // A failing instance turns red on the open page.
    mark(&page).await;
    let red = "getComputedStyle(document.querySelector('tr[data-id=api-1]')).backgroundColor";
    let before = page.eval(red).await;
    let url = s.url("/v1/services/api/instances/api-1/health");
    let r = s
        .client
        .put(url)
        .json(&json!({"status": "critical", "output": "connection refused"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let reported = Instant::now();
    page.wait_for(
        "document.querySelector('tr[data-id=api-1]').dataset.status === 'critical'",
        "api-1 to turn critical",
    )
    .await;
    // Reported, not asserted (timing is the machine's): the long-poll's return shows it.
    eprintln!(
        "api-1 shown critical {:?} after the report",
        reported.elapsed()
    );
    assert!(
        text(&page, "tr[data-id=api-1]")
            .await
            .contains("connection refused")
    );
    let after = page.eval(red).await;
    assert_ne!(before, after, "the row's colour changed");
    let rgb: Vec<u32> = after
        .as_str()
        .unwrap()
        .trim_start_matches("rgb(")
        .trim_end_matches(')')
        .split(", ")
        .map(|c| c.parse().unwrap())
        .collect();
    assert!(rgb[0] > rgb[1] && rgb[0] > rgb[2], "red: {after}");
    assert_not_reloaded(&page).await;

    // Without tokens configured, the page may act: maintenance on, with a reason…
    click(
        &page,
        "tr[data-id=api-2] button[data-action=maintenance-on]",
    )
    .await;
    page.wait_for(
        "document.getElementById('dialog').open && document.activeElement.id === 'dialog-reason'",
        "the maintenance dialog, its reason focused",
    )
    .await;
    page.type_text("deploy 2.1").await;
    page.press("Enter").await;
    page.wait_for(
        "document.querySelector('tr[data-id=api-2]').dataset.status === 'maintenance'",
        "api-2 in maintenance",
    )
    .await;
    assert!(
        text(&page, "tr[data-id=api-2]")
            .await
            .contains("deploy 2.1")
    );
    let (_, inst) = instance(&s, "api", "api-2", None).await;
    assert_eq!(inst["maintenance"]["reason"], "deploy 2.1");
    // …and off.
    click(
        &page,
        "tr[data-id=api-2] button[data-action=maintenance-off]",
    )
    .await;
    page.wait_for(
        "document.querySelector('tr[data-id=api-2]').dataset.status === 'critical'",
        "api-2 out of maintenance",
    )
    .await;
    assert!(instance(&s, "api", "api-2", None).await.1["maintenance"].is_null());

    // Deregistration asks first; cancelled (Escape, or the button), nothing happens.
    for cancel in ["Escape", "#dialog-cancel"] {
        click(&page, "tr[data-id=api-3] button[data-action=deregister]").await;
        page.wait_for("document.getElementById('dialog').open", "the confirmation")
            .await;
        assert!(text(&page, "#dialog-title").await.contains("api-3"));
        if cancel == "Escape" {
            page.press("Escape").await;
        } else {
            click(&page, cancel).await;
        }
        page.wait_for(
            "!document.getElementById('dialog').open",
            "the dialog to close",
        )
        .await;
        assert_eq!(instance(&s, "api", "api-3", None).await.0, 200, "cancelled");
    }
    click(&page, "tr[data-id=api-3] button[data-action=deregister]").await;
    page.wait_for("document.getElementById('dialog').open", "the confirmation")
        .await;
    click(&page, "#dialog-ok").await;
    page.wait_for(
        "document.querySelectorAll('#instances tr[data-id]').length === 2",
        "api-3 gone from the page",
    )
    .await;
    assert_eq!(
        instance(&s, "api", "api-3", None).await.0,
        404,
        "deregistered"
    );
    assert_not_reloaded(&page).await;
    assert_clean(&s, &page, &[]);

    // A service name that is no DNS label is the page's to report.
    page.goto(&s.url("/ui/services/Not_A_Service")).await;
    let said = text(&page, "#summary").await;
    assert!(said.contains("not a service name"), "{said}");
    browser.close().await;
}

#[tokio::test]
async fn with_tokens_the_page_asks_and_acts_only_with_the_write_token() {
    let s = TestServer::start_with(|c| {
        c.http.token = Some(Secret(WRITE.into()));
        c.http.read_token = Some(Secret(READ.into()));
    })
    .await;
    let put = |path: &str, body: Value| {
        s.client
            .put(s.url(path))
            .bearer_auth(WRITE)
            .json(&body)
            .send()
    };
    let r = put(
        "/v1/services/web/instances/web-1",
        json!({"address": "10.0.0.1", "port": 80}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);

    let browser = Browser::launch().await;
    let page = browser.page(&s.url("/ui/services/web")).await;
    // The page loads, but shows nothing of the registry until a token is entered.
    let said = text(&page, ".locked").await;
    assert!(said.contains("token"), "{said}");
    assert_eq!(count(&page, "#instances").await, 0);

    // The read token: the instances show, read-only.
    let enter = |token: &str| {
        format!(
            "document.getElementById('token-input').value = {}; document.getElementById('token-form').requestSubmit()",
            js(token)
        )
    };
    page.eval(&enter(READ)).await;
    page.wait_for(
        "document.querySelector('tr[data-id=web-1]')",
        "web-1 with the read token",
    )
    .await;
    assert_eq!(text(&page, "#access").await, "read-only");
    assert_eq!(
        count(&page, "[data-action]").await,
        0,
        "no actions without the write token"
    );
    assert!(text(&page, "#hint").await.contains("write token"));
    assert_eq!(
        page.eval("sessionStorage.getItem('signpost.token')").await,
        READ,
        "kept for this tab's session"
    );
    assert_eq!(
        page.eval("localStorage.length + document.cookie.length")
            .await,
        0
    );

    // Forced from the page anyway, the API refuses: 401, and nothing changes.
    let forced = |auth: &str| {
        format!(
            "fetch('/v1/services/web/instances/web-1/maintenance', {{method: 'PUT', headers: {auth}, \
             body: JSON.stringify({{enabled: true, reason: 'forced'}})}}).then(r => r.status)"
        )
    };
    assert_eq!(page.eval(&forced("{}")).await, 401);
    assert_eq!(
        page.eval(&forced(&format!("{{Authorization: 'Bearer {READ}'}}")))
            .await,
        401
    );
    assert!(instance(&s, "web", "web-1", Some(READ)).await.1["maintenance"].is_null());

    // The write token: maintenance from the page, which the API accepts (same origin).
    mark(&page).await;
    page.eval(&enter(WRITE)).await;
    click(
        &page,
        "tr[data-id=web-1] button[data-action=maintenance-on]",
    )
    .await;
    page.wait_for(
        "document.getElementById('dialog').open",
        "the maintenance dialog",
    )
    .await;
    page.eval("document.getElementById('dialog-reason').value = 'disk swap'")
        .await;
    click(&page, "#dialog-ok").await;
    page.wait_for(
        "document.querySelector('tr[data-id=web-1]').dataset.status === 'maintenance'",
        "web-1 in maintenance",
    )
    .await;
    assert_eq!(text(&page, "#access").await, "can change");
    let (_, inst) = instance(&s, "web", "web-1", Some(READ)).await;
    assert_eq!(inst["maintenance"]["reason"], "disk swap");
    click(
        &page,
        "tr[data-id=web-1] button[data-action=maintenance-off]",
    )
    .await;
    page.wait_for(
        "document.querySelector('tr[data-id=web-1]').dataset.status === 'passing'",
        "web-1 out of maintenance",
    )
    .await;
    assert!(instance(&s, "web", "web-1", Some(READ)).await.1["maintenance"].is_null());
    assert_not_reloaded(&page).await;

    // Forgotten, the page is locked again; another tab never had the token.
    click(&page, "#token-forget").await;
    text(&page, ".locked").await;
    let other = browser.page(&s.url("/ui/")).await;
    text(&other, ".locked").await;
    assert_eq!(other.eval("sessionStorage.length").await, 0);
    // The refused reads log their 401s; nothing else may show.
    assert_clean(&s, &page, &["401"]);
    assert_clean(&s, &other, &["401"]);
    browser.close().await;
}

/// A page in a background tab lets go of its long-poll (browsers allow six connections to one
/// server) and catches up when shown again. The tab's visibility is played by the page's own
/// `visibilitychange` event over an overridden `document.visibilityState`.
#[tokio::test]
async fn a_hidden_page_lets_go_and_catches_up_when_shown() {
    let s = TestServer::start().await;
    populate(&s).await;
    let browser = Browser::launch().await;
    let page = browser.page(&s.url("/ui/services/db")).await;
    text(&page, "tr[data-id=db-1]").await;
    mark(&page).await;
    page.eval(
        "Object.defineProperty(document, 'visibilityState', \
           {configurable: true, get: () => window.tabHidden ? 'hidden' : 'visible'}); \
         window.tabHidden = true; document.dispatchEvent(new Event('visibilitychange'))",
    )
    .await;
    page.wait_for(
        "document.getElementById('live').dataset.state === 'paused'",
        "the page to pause",
    )
    .await;
    let asked = page.requests().len();
    s.register("db", "db-2", json!({"address": "10.0.2.2", "port": 5432}))
        .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        count(&page, "tr[data-id=db-2]").await,
        0,
        "a hidden page waits"
    );
    assert_eq!(page.requests().len(), asked, "and asks nothing");

    page.eval("window.tabHidden = false; document.dispatchEvent(new Event('visibilitychange'))")
        .await;
    page.wait_for(
        "document.querySelector('tr[data-id=db-2]')",
        "db-2 once shown",
    )
    .await;
    assert_eq!(text(&page, "#live").await, "live");
    assert_not_reloaded(&page).await;
    assert_clean(&s, &page, &[]);
    browser.close().await;
}

#[tokio::test]
async fn the_pages_fit_a_phone_and_are_screenshotted() {
    let dir = std::env::var_os("SIGNPOST_SCREENSHOTS").map(PathBuf::from);
    // For the README's pictures, the DNS port a reader would see (the default).
    let s = TestServer::start_with(|c| {
        if dir.is_some() {
            c.dns.listen = vec!["127.0.0.1:8600".parse().unwrap()];
        }
    })
    .await;
    populate(&s).await;
    let r = s
        .client
        .put(s.url("/v1/services/api/instances/api-2/health"))
        .json(&json!({"status": "critical", "output": "dial tcp 10.0.1.2:8080: connect: connection refused"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    s.register(
        "api",
        "api-4",
        json!({"address": "10.0.1.4", "port": 8080, "tags": ["v2"], "weight": 5}),
    )
    .await;
    let r = s
        .client
        .put(s.url("/v1/services/api/instances/api-4/maintenance"))
        .json(&json!({"enabled": true, "reason": "draining for the 2.1 rollout"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let browser = Browser::launch().await;
    let tmp = tempfile::tempdir().unwrap();
    let out = dir.as_deref().unwrap_or(tmp.path());

    for (path, ready, file, height) in [
        (
            "/ui/",
            "#services tr[data-service=db]",
            "ui-overview.png",
            480,
        ),
        (
            "/ui/services/api",
            "#instances tr[data-id=api-4]",
            "ui-service.png",
            1100,
        ),
    ] {
        let page = browser.page(&s.url(path)).await;
        page.viewport(1200, height, false).await;
        text(&page, ready).await;
        let png = page.screenshot().await;
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{file} is a PNG");
        std::fs::write(out.join(file), &png).unwrap();

        // On a phone: nothing wider than the screen, each row a labelled card.
        page.viewport(390, 844, true).await;
        page.wait_for("window.innerWidth === 390", "the phone's width")
            .await;
        let overflow = "document.documentElement.scrollWidth - window.innerWidth";
        assert_eq!(
            page.eval(overflow).await,
            0,
            "{path} scrolls sideways on a phone"
        );
        let label = format!(
            "getComputedStyle(document.querySelector({}), '::before').content",
            js(&format!("{ready} td[data-label]"))
        );
        assert_ne!(
            page.eval(&label).await,
            "none",
            "{path}: cells are labelled"
        );
        if dir.is_some() {
            let phone = file.replace(".png", "-phone.png");
            std::fs::write(out.join(phone), page.screenshot().await).unwrap();
        }
        assert_clean(&s, &page, &[]);
    }
    browser.close().await;
}

/// The assets' HTTP side: content types, the CSP and nosniff, ETags with 304s, `/ui`
/// redirecting, the shell open and the data closed when a read token is set.
#[tokio::test]
async fn the_assets_are_served_with_their_headers() {
    let s = TestServer::start_with(|c| c.http.read_token = Some(Secret(READ.into()))).await;
    for (path, ctype) in [
        ("/ui/", "text/html; charset=utf-8"),
        ("/ui/services/web", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/app.css", "text/css; charset=utf-8"),
        ("/ui/favicon.svg", "image/svg+xml"),
    ] {
        let r = s.client.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} needs no token");
        let h = r.headers().clone();
        assert_eq!(h["content-type"], ctype, "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(h["cache-control"], "no-cache", "{path}");
        let etag = h["etag"].to_str().unwrap().to_string();
        assert!(!r.bytes().await.unwrap().is_empty());
        let again = s
            .client
            .get(s.url(path))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
        assert_eq!(again.headers()["etag"], etag.as_str());
        assert!(again.bytes().await.unwrap().is_empty());
    }
    let shell = s
        .client
        .get(s.url("/ui/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !shell.contains("http://") && !shell.contains("https://"),
        "no external URL"
    );
    assert!(
        !shell.contains("<script>") && !shell.contains("style="),
        "nothing inline"
    );

    // `/ui` redirects; data, config.json included, needs the read token.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirects.get(s.url("/ui")).send().await.unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "/ui/");
    for path in ["/ui/config.json", "/v1/services"] {
        let r = s.client.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = s
            .client
            .get(s.url(path))
            .bearer_auth(READ)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let r = s
        .client
        .get(s.url("/ui/config.json"))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["cache-control"], "no-store");
    let config: Value = r.json().await.unwrap();
    assert_eq!(config["domain"], "internal.");
    assert_eq!(config["dns"], json!([s.dns.to_string()]));
    assert_eq!(config["write"], true, "no write token is set");
    // An unknown file is a 404 in the API's shape, and needs the token like any other path.
    let r = s
        .client
        .get(s.url("/ui/nope.js"))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    assert_eq!(
        s.client
            .get(s.url("/ui/nope.js"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // Writes to the dashboard's paths need the token like every write, and are not routes.
    let r = s.client.put(s.url("/ui/")).send().await.unwrap();
    assert_eq!(r.status(), 405);
}

/// `config.json` says whether the caller's token may write.
#[tokio::test]
async fn config_says_whether_the_token_may_write() {
    let s = TestServer::start_with(|c| c.http.token = Some(Secret(WRITE.into()))).await;
    for (token, write) in [(None, false), (Some(READ), false), (Some(WRITE), true)] {
        let mut r = s.client.get(s.url("/ui/config.json"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let v: Value = r.send().await.unwrap().json().await.unwrap();
        assert_eq!(v["write"], write, "{token:?}");
    }
}

/// The same pages in Firefox (Debian's `firefox-esr`, over WebDriver BiDi): they render,
/// follow a health change without a reload, and put an instance in maintenance and back from
/// the page (Firefox sends the page's own origin on its writes, which the guard accepts).
#[tokio::test]
async fn the_pages_work_in_firefox() {
    let s = TestServer::start().await;
    populate(&s).await;
    let firefox = Firefox::launch().await;
    firefox.goto(&s.url("/ui")).await;
    firefox
        .wait_for(
            "document.querySelectorAll('#services tr[data-service]').length === 3",
            "three services",
        )
        .await;
    let warning = text(&firefox, "tr[data-service=api] td[data-col=warning]").await;
    assert_eq!(warning.trim(), "1");

    click(&firefox, "tr[data-service=api] a").await;
    firefox
        .wait_for(
            "location.pathname === '/ui/services/api' && \
             document.querySelectorAll('#instances tr[data-id]').length === 3",
            "api's three instances",
        )
        .await;
    let row = text(&firefox, "tr[data-id=api-1]").await;
    for shown in ["api-1", "10.0.1.1:8080", "canary", "passing", "HTTP 200 OK"] {
        assert!(row.contains(shown), "{shown} in {row:?}");
    }
    assert!(
        text(&firefox, "#dns")
            .await
            .contains("_api._tcp.service.internal.")
    );

    mark(&firefox).await;
    s.report("api", "api-1", "critical").await;
    firefox
        .wait_for(
            "document.querySelector('tr[data-id=api-1]').dataset.status === 'critical'",
            "api-1 to turn critical",
        )
        .await;

    click(
        &firefox,
        "tr[data-id=api-1] button[data-action=maintenance-on]",
    )
    .await;
    firefox
        .wait_for(
            "document.getElementById('dialog').open",
            "the maintenance dialog",
        )
        .await;
    firefox
        .eval("document.getElementById('dialog-reason').value = 'firefox'")
        .await;
    click(&firefox, "#dialog-ok").await;
    firefox
        .wait_for(
            "document.querySelector('tr[data-id=api-1]').dataset.status === 'maintenance'",
            "api-1 in maintenance",
        )
        .await;
    let (_, inst) = instance(&s, "api", "api-1", None).await;
    assert_eq!(inst["maintenance"]["reason"], "firefox");
    click(
        &firefox,
        "tr[data-id=api-1] button[data-action=maintenance-off]",
    )
    .await;
    firefox
        .wait_for(
            "document.querySelector('tr[data-id=api-1]').dataset.status === 'critical'",
            "api-1 out of maintenance",
        )
        .await;
    assert!(instance(&s, "api", "api-1", None).await.1["maintenance"].is_null());
    assert_not_reloaded(&firefox).await;
    assert_clean(&s, &firefox, &[]);
    firefox.close().await;
}
