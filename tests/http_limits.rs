//! The HTTP server's limits, over real sockets: the connection cap (and DNS over TCP still
//! answering while HTTP is full), the header, body and idle timeouts, long-polls kept apart
//! from other requests, and protocol-level errors answered in the JSON error shape. Every
//! wait is bounded.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use common::raw::{self, RawReply};
use hickory_proto::rr::RecordType;
use serde_json::json;
use tokio::io::AsyncWriteExt;

const INSTANCE: &str = "/v1/services/web/instances/web-1";

/// Connections past `http.max_connections` wait until one closes; the idle ones are closed
/// by the header timeout, so the waiting client is served soon after; DNS over TCP answers
/// throughout.
#[tokio::test]
async fn connections_over_the_cap_wait_for_a_slot_and_dns_still_answers() {
    let s = TestServer::start_with(|c| {
        c.http.max_connections = 8;
        c.http.header_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    s.register("web", "web-1", json!({"address": "10.0.0.1", "port": 80}))
        .await;

    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(raw::connect(s.http).await);
    }
    let started = Instant::now();
    let mut ninth = raw::connect(s.http).await;
    ninth
        .write_all(&raw::request("GET", "/healthz", &[], b""))
        .await
        .unwrap();

    // While every slot is held, DNS over TCP answers at once...
    let m = s.tcp("web.service.internal.", RecordType::A).await;
    assert_eq!(m.answers.len(), 1, "{m:?}");
    // ... and the ninth HTTP client waits: the cap holds.
    assert!(
        raw::read_reply(&mut ninth, Duration::from_millis(500))
            .await
            .is_none(),
        "a ninth connection was served while eight held every slot"
    );

    // The idle eight are closed by the header timeout, and the ninth is served.
    let r = raw::read_reply(&mut ninth, Duration::from_secs(5))
        .await
        .expect("the ninth client served once the idle connections were closed");
    assert_eq!(r.status, 200);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "served after {took:?}");
    for (i, c) in idle.iter_mut().enumerate() {
        assert!(
            raw::closed_within(c, Duration::from_secs(3))
                .await
                .is_some(),
            "idle connection #{i} still open"
        );
    }
}

/// A request line or headers that do not arrive in time: the connection is closed, whether
/// they stall halfway or trickle in a byte at a time.
#[tokio::test]
async fn slow_headers_are_cut_off() {
    let s =
        TestServer::start_with(|c| c.http.header_timeout = std::time::Duration::from_millis(300))
            .await;

    // Half a request, then nothing.
    let mut half = raw::connect(s.http).await;
    half.write_all(b"PUT /v1/services/web/instances/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
        .await
        .unwrap();
    let took = raw::closed_within(&mut half, Duration::from_secs(3))
        .await
        .expect("a stalled request head is closed");
    assert!(took >= Duration::from_millis(250), "closed after {took:?}");

    // A connection that never says anything.
    let mut mute = raw::connect(s.http).await;
    let took = raw::closed_within(&mut mute, Duration::from_secs(3))
        .await
        .expect("a silent new connection is closed");
    assert!(took >= Duration::from_millis(250), "closed after {took:?}");

    // A head trickling in (one byte every 50 ms) gets no more time than a stalled one.
    let mut drip = raw::connect(s.http).await;
    let (mut rd, mut wr) = drip.split();
    let head = raw::request("GET", "/healthz", &[("X-Pad", &"a".repeat(200))], b"");
    let trickle = async {
        for b in head {
            if wr.write_all(&[b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let watch = async {
        let started = Instant::now();
        let mut one = [0u8; 1];
        loop {
            match tokio::time::timeout(
                Duration::from_secs(3),
                tokio::io::AsyncReadExt::read(&mut rd, &mut one),
            )
            .await
            {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
                Ok(Ok(_)) => {}
            }
        }
    };
    let closed = tokio::select! {
        c = watch => c,
        _ = trickle => None,
    };
    let took = closed.expect("a trickling head is closed");
    assert!(took < Duration::from_secs(2), "closed only after {took:?}");
}

/// A body that stops short of its Content-Length: 408 with the JSON error shape, and
/// nothing changes, on the registration path and on a route of the router.
#[tokio::test]
async fn a_stalled_body_gets_408() {
    let s = TestServer::start_with(|c| c.http.body_timeout = std::time::Duration::from_millis(300))
        .await;
    s.register("web", "web-2", json!({"address": "10.0.0.2", "port": 80}))
        .await;
    for path in [INSTANCE, "/v1/services/web/instances/web-2/maintenance"] {
        let mut c = raw::connect(s.http).await;
        c.write_all(
            format!(
                "PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{{\"address\""
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let started = Instant::now();
        let r = raw::read_reply(&mut c, Duration::from_secs(3))
            .await
            .unwrap_or_else(|| panic!("{path}: no reply to a stalled body"));
        let took = started.elapsed();
        assert_eq!(r.status, 408, "{path}: {r:?}");
        assert!(r.error().contains("body"), "{path}: {}", r.error());
        assert!(took >= Duration::from_millis(250), "{path}: after {took:?}");
        assert!(
            raw::closed_within(&mut c, Duration::from_secs(3))
                .await
                .is_some(),
            "{path}: the connection is closed after a 408"
        );
    }
    let r = s.client.get(s.url(INSTANCE)).send().await.unwrap();
    assert_eq!(r.status(), 404, "nothing was registered");
    let r: serde_json::Value = s
        .client
        .get(s.url("/v1/services/web/instances/web-2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["maintenance"], serde_json::Value::Null, "{r}");
}

/// A kept-alive connection waits `http.idle_timeout` (not the shorter header timeout) for
/// its next request, then is closed.
#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let s = TestServer::start_with(|c| {
        c.http.header_timeout = std::time::Duration::from_millis(300);
        c.http.idle_timeout = std::time::Duration::from_millis(1500);
    })
    .await;
    let mut c = raw::connect(s.http).await;
    let get = raw::request("GET", "/healthz", &[], b"");
    c.write_all(&get).await.unwrap();
    let r: RawReply = raw::read_reply(&mut c, Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(r.status, 200);

    // Longer than the header timeout: still open, and serving.
    tokio::time::sleep(Duration::from_millis(700)).await;
    c.write_all(&get).await.unwrap();
    let r = raw::read_reply(&mut c, Duration::from_secs(3))
        .await
        .expect("a kept-alive connection outlives the header timeout");
    assert_eq!(r.status, 200);

    let took = raw::closed_within(&mut c, Duration::from_secs(5))
        .await
        .expect("an idle kept-alive connection is closed");
    assert!(
        took >= Duration::from_millis(1200) && took < Duration::from_secs(4),
        "closed after {took:?}"
    );
}

/// Shutdown with the accept loop of our own: an idle kept-alive connection is closed at once,
/// a waiting long-poll returns, and the server stops promptly.
#[tokio::test]
async fn shutdown_closes_idle_connections_and_ends_long_polls() {
    let s = TestServer::start().await;
    let http = s.http;
    let mut idle = raw::connect(http).await;
    idle.write_all(&raw::request("GET", "/healthz", &[], b""))
        .await
        .unwrap();
    assert_eq!(
        raw::read_reply(&mut idle, Duration::from_secs(3))
            .await
            .unwrap()
            .status,
        200
    );
    let index = s
        .client
        .get(s.url("/v1/services/web"))
        .send()
        .await
        .unwrap()
        .headers()["x-signpost-index"]
        .to_str()
        .unwrap()
        .to_string();
    let mut poll = raw::connect(http).await;
    poll.write_all(&raw::request(
        "GET",
        &format!("/v1/services/web?index={index}&wait=60s"),
        &[],
        b"",
    ))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), s.stop())
        .await
        .expect("the server stops within 5 s");
    assert!(started.elapsed() < Duration::from_secs(3));
    let r = raw::read_reply(&mut poll, Duration::from_secs(1))
        .await
        .expect("the long-poll answered at shutdown");
    assert_eq!(r.status, 200);
    assert!(
        raw::closed_within(&mut idle, Duration::from_secs(1))
            .await
            .is_some()
    );
    assert!(
        tokio::net::TcpStream::connect(http).await.is_err(),
        "no longer accepting"
    );
}

/// `GET /v1/services/web?index=&wait=` as one raw request on its own connection.
async fn start_long_poll(s: &TestServer, index: u64) -> tokio::net::TcpStream {
    let mut c = raw::connect(s.http).await;
    c.write_all(&raw::request(
        "GET",
        &format!("/v1/services/web?index={index}&wait=30s"),
        &[],
        b"",
    ))
    .await
    .unwrap();
    c
}

async fn current_index(s: &TestServer) -> u64 {
    let r = s.client.get(s.url("/v1/services")).send().await.unwrap();
    r.headers()["x-signpost-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// More long-polls than `http.max_concurrent_requests` are waiting; writes, health reports,
/// reads and /healthz are still answered at once.
#[tokio::test]
async fn long_polls_do_not_hold_back_other_requests() {
    let s = TestServer::start_with(|c| c.http.max_concurrent_requests = 4).await;
    s.register(
        "web",
        "web-1",
        json!({"address": "10.0.0.1", "port": 80, "check": {"ttl": "60s"}}),
    )
    .await;
    let index = current_index(&s).await;
    let mut polls = Vec::new();
    for _ in 0..10 {
        polls.push(start_long_poll(&s, index).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let within = Duration::from_secs(2);
    let r = tokio::time::timeout(within, s.client.get(s.url("/healthz")).send())
        .await
        .expect("/healthz within 2 s while long-polls wait")
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = tokio::time::timeout(within, s.client.get(s.url("/v1/services")).send())
        .await
        .expect("a read within 2 s while long-polls wait")
        .unwrap();
    assert_eq!(r.status(), 200);
    // The long-polls are still waiting: nothing has changed yet.
    for p in polls.iter_mut() {
        assert!(
            raw::read_reply(p, Duration::from_millis(10))
                .await
                .is_none()
        );
    }
    let r = tokio::time::timeout(
        within,
        s.client
            .put(s.url(INSTANCE))
            .json(&json!({"address": "10.0.0.1", "port": 80, "check": {"ttl": "60s"}}))
            .send(),
    )
    .await
    .expect("a registration within 2 s while long-polls wait")
    .unwrap();
    assert_eq!(r.status(), 200);
    let r = tokio::time::timeout(
        within,
        s.client
            .put(s.url(&format!("{INSTANCE}/health")))
            .json(&json!({"status": "passing"}))
            .send(),
    )
    .await
    .expect("a health report within 2 s while long-polls wait")
    .unwrap();
    assert_eq!(r.status(), 200);
    // The health change wakes every long-poll.
    for p in polls.iter_mut() {
        let r = raw::read_reply(p, Duration::from_secs(3))
            .await
            .expect("a long-poll wakes on the change");
        assert_eq!(r.status, 200);
    }
}

/// Long-polls past `http.max_watchers` are refused at once: 503 with Retry-After and the
/// JSON error shape; the waiting ones and other requests are unaffected.
#[tokio::test]
async fn long_polls_past_max_watchers_get_503() {
    let s = TestServer::start_with(|c| c.http.max_watchers = 2).await;
    s.register("web", "web-1", json!({"address": "10.0.0.1", "port": 80}))
        .await;
    let index = current_index(&s).await;
    let mut waiting = [
        start_long_poll(&s, index).await,
        start_long_poll(&s, index).await,
    ];
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut third = start_long_poll(&s, index).await;
    let r = raw::read_reply(&mut third, Duration::from_secs(2))
        .await
        .expect("a long-poll past the cap is answered at once");
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(r.error().contains("http.max_watchers"), "{}", r.error());
    assert!(r.header("x-signpost-index").is_some());
    // A plain read of the same service is no long-poll, and is served.
    let r = s
        .client
        .get(s.url("/v1/services/web"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    s.register("web", "web-2", json!({"address": "10.0.0.2", "port": 80}))
        .await;
    for p in waiting.iter_mut() {
        let r = raw::read_reply(p, Duration::from_secs(3)).await.unwrap();
        assert_eq!(r.status, 200);
    }
    // Slots are given back: a new long-poll waits again.
    let index = current_index(&s).await;
    let mut again = start_long_poll(&s, index).await;
    assert!(
        raw::read_reply(&mut again, Duration::from_millis(300))
            .await
            .is_none(),
        "a long-poll within the cap waits"
    );
}

/// Protocol-level errors in the JSON error shape: what hyper refuses before any handler runs
/// (a malformed or doubled Content-Length, a malformed request line, too many or too large
/// headers), the URI limit, and a declared body over the limit. Nothing is registered.
#[tokio::test]
async fn protocol_errors_answer_in_the_json_error_shape() {
    let s = TestServer::start().await;
    let put_head = |extra: &str| {
        format!("PUT {INSTANCE} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n").into_bytes()
    };
    let many: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "a Content-Length that is no number",
            put_head("Content-Length: abc\r\n"),
            400,
            "malformed",
        ),
        (
            "two Content-Lengths that disagree",
            put_head("Content-Length: 10\r\nContent-Length: 20\r\n"),
            400,
            "malformed",
        ),
        (
            "a request line that is no request line",
            b"GARBAGE\r\n\r\n".to_vec(),
            400,
            "malformed",
        ),
        ("101 headers", put_head(&many), 431, "headers too large"),
        (
            "a 40 KiB header",
            put_head(&format!("X-Big: {}\r\n", "a".repeat(40 * 1024))),
            431,
            "headers too large",
        ),
        (
            "a 9 KiB URI",
            raw::request(
                "GET",
                &format!("/v1/services/{}", "a".repeat(9 * 1024)),
                &[],
                b"",
            ),
            414,
            "URI too long",
        ),
        (
            "a declared body over the limit",
            put_head("Content-Length: 1000000\r\n"),
            413,
            "body",
        ),
    ];
    for (what, bytes, status, text) in cases {
        let r = raw::send(s.http, &bytes).await;
        assert_eq!(r.status, status, "{what}: {r:?}");
        let e = r.error();
        assert!(e.contains(text), "{what}: {e}");
    }
    let r = s.client.get(s.url(INSTANCE)).send().await.unwrap();
    assert_eq!(r.status(), 404, "nothing was registered");

    // Just under the limits, the same requests are served.
    let r = raw::send(
        s.http,
        &raw::request("GET", "/healthz", &[("X-Big", &"a".repeat(30 * 1024))], b""),
    )
    .await;
    assert_eq!(r.status, 200, "a 30 KiB header is within the limit");
    let r = raw::send(
        s.http,
        &raw::request(
            "GET",
            &format!("/v1/services/web?tag={}", "a".repeat(8000)),
            &[],
            b"",
        ),
    )
    .await;
    assert_eq!(r.status, 400, "an 8,000-byte URI reaches the handler");
    assert!(r.error().starts_with("tag"), "{}", &r.error()[..100]);
}

/// A malformed request after a good one on the same kept-alive connection is answered in the
/// JSON shape too, and the good one's response is untouched.
#[tokio::test]
async fn a_malformed_request_after_a_good_one_on_one_connection() {
    let s = TestServer::start().await;
    let mut c = raw::connect(s.http).await;
    c.write_all(&raw::request("GET", "/v1/services", &[], b""))
        .await
        .unwrap();
    let r = raw::read_reply(&mut c, Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&r.body).unwrap(),
        json!({"services": []})
    );
    c.write_all(b"PUT /v1/services/web/instances/web-1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1x\r\n\r\n")
        .await
        .unwrap();
    let r = raw::read_reply(&mut c, Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    r.error();
    assert!(
        raw::closed_within(&mut c, Duration::from_secs(3))
            .await
            .is_some(),
        "closed after a malformed request"
    );
}
