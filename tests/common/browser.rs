//! A real browser for the dashboard's tests: Debian's `chromium`, headless, started by the
//! test with a profile dir of its own and driven over the DevTools protocol (CDP) on its
//! websocket. Pages are opened, JavaScript is evaluated in them (what a user sees is read
//! from the DOM, what a user does is a `click()`), screenshots are taken. Each page records
//! every URL it requested and every console message, exception and CSP report, so tests can
//! assert that nothing went elsewhere and nothing failed.
//!
//! Every wait is bounded. The browser runs in a process group of its own, killed by its id
//! when the `Browser` is dropped (its renderer processes with it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// How long any one wait for the browser may take.
const BOUND: Duration = Duration::from_secs(20);

/// The browser binary: Debian's, without its wrapper script when it can (the wrapper's
/// shell adds nothing headless needs).
fn executable() -> &'static str {
    if std::path::Path::new("/usr/lib/chromium/chromium").exists() {
        "/usr/lib/chromium/chromium"
    } else {
        "chromium"
    }
}

type Reply = oneshot::Sender<Result<Value, String>>;

/// What a page did, from the protocol's events.
#[derive(Default)]
struct Seen {
    /// Every URL requested, by session.
    requests: HashMap<String, Vec<String>>,
    /// Console messages at warning level and above, exceptions, log entries, by session.
    problems: HashMap<String, Vec<String>>,
}

struct Connection {
    out: mpsc::UnboundedSender<(Value, Reply)>,
    next: AtomicU64,
    seen: Arc<Mutex<Seen>>,
}

impl Connection {
    async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let (tx, rx) = oneshot::channel();
        self.out
            .send((msg, tx))
            .expect("the browser connection is open");
        match tokio::time::timeout(BOUND, rx).await {
            Ok(Ok(Ok(v))) => v,
            Ok(Ok(Err(e))) => panic!("{method}: {e}"),
            Ok(Err(_)) => panic!("{method}: the browser connection closed"),
            Err(_) => panic!("{method}: no answer from the browser within {BOUND:?}"),
        }
    }
}

/// A headless Chromium, started by the test.
pub struct Browser {
    pid: i32,
    child: tokio::process::Child,
    conn: Arc<Connection>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium headless with a new profile and connects to its DevTools websocket.
    pub async fn launch() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut cmd = tokio::process::Command::new(executable());
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            "--no-proxy-server",
            "--mute-audio",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {} (apt-get install chromium): {e}",
                executable()
            )
        });
        let pid = child.id().expect("running") as i32;
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let ws = tokio::time::timeout(BOUND, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return Some(url.trim().to_string());
                }
            }
            None
        })
        .await
        .expect("chromium printed its DevTools address in time")
        .expect("chromium printed its DevTools address before exiting");
        // The rest of its stderr is read and dropped, so a full pipe never stops it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let (socket, _) = tokio_tungstenite::connect_async(ws.as_str())
            .await
            .expect("connect to the DevTools websocket");
        let (out, rx) = mpsc::unbounded_channel();
        let seen = Arc::new(Mutex::new(Seen::default()));
        tokio::spawn(pump(socket, rx, seen.clone()));
        Browser {
            pid,
            child,
            conn: Arc::new(Connection {
                out,
                next: AtomicU64::new(1),
                seen,
            }),
            _profile: profile,
        }
    }

    /// A new tab (desktop size) showing `url` once loaded.
    pub async fn page(&self, url: &str) -> Page {
        let target = self
            .conn
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let session = self
            .conn
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await["sessionId"]
            .as_str()
            .unwrap()
            .to_string();
        let page = Page {
            conn: self.conn.clone(),
            session,
        };
        for domain in ["Page", "Runtime", "Log", "Network"] {
            page.call(&format!("{domain}.enable"), json!({})).await;
        }
        page.viewport(1280, 800, false).await;
        page.goto(url).await;
        page
    }

    /// Asks the browser to close, then makes sure its processes are gone.
    pub async fn close(mut self) {
        let _ = self.conn.out.send((
            json!({"id": 0, "method": "Browser.close", "params": {}}),
            oneshot::channel().0,
        ));
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            self.kill();
        }
    }

    fn kill(&mut self) {
        // The whole group: Chromium's renderer and utility processes were started by it.
        // SAFETY: kill(2) with a process group id this test created; no memory is involved.
        unsafe {
            libc::kill(-self.pid, libc::SIGKILL);
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Carries commands to the browser and its answers and events back.
async fn pump(
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    mut commands: mpsc::UnboundedReceiver<(Value, Reply)>,
    seen: Arc<Mutex<Seen>>,
) {
    let (mut sink, mut stream) = socket.split();
    let mut waiting: HashMap<u64, Reply> = HashMap::new();
    loop {
        tokio::select! {
            cmd = commands.recv() => {
                let Some((msg, reply)) = cmd else { return };
                waiting.insert(msg["id"].as_u64().unwrap(), reply);
                if sink.send(Message::text(msg.to_string())).await.is_err() {
                    return;
                }
            }
            msg = stream.next() => {
                let Some(Ok(msg)) = msg else { return };
                let Ok(text) = msg.into_text() else { continue };
                let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                if let Some(id) = v["id"].as_u64() {
                    if let Some(reply) = waiting.remove(&id) {
                        let r = match v.get("error") {
                            Some(e) => Err(e.to_string()),
                            None => Ok(v["result"].clone()),
                        };
                        let _ = reply.send(r);
                    }
                } else {
                    note(&v, &mut seen.lock().unwrap());
                }
            }
        }
    }
}

/// Records the events tests look at.
fn note(v: &Value, seen: &mut Seen) {
    let session = v["sessionId"].as_str().unwrap_or("").to_string();
    let p = &v["params"];
    let problem = match v["method"].as_str().unwrap_or("") {
        "Network.requestWillBeSent" => {
            let url = p["request"]["url"].as_str().unwrap_or("").to_string();
            seen.requests.entry(session).or_default().push(url);
            return;
        }
        "Runtime.exceptionThrown" => format!(
            "exception: {} {}",
            p["exceptionDetails"]["text"], p["exceptionDetails"]["exception"]["description"]
        ),
        "Runtime.consoleAPICalled"
            if matches!(p["type"].as_str(), Some("error" | "warning" | "assert")) =>
        {
            format!("console.{}: {}", p["type"], p["args"])
        }
        "Log.entryAdded" if p["entry"]["level"].as_str() != Some("verbose") => {
            format!(
                "log {} {}: {} {}",
                p["entry"]["source"], p["entry"]["level"], p["entry"]["text"], p["entry"]["url"]
            )
        }
        _ => return,
    };
    seen.problems.entry(session).or_default().push(problem);
}

/// One tab.
pub struct Page {
    conn: Arc<Connection>,
    session: String,
}

impl Page {
    async fn call(&self, method: &str, params: Value) -> Value {
        self.conn.call(Some(&self.session), method, params).await
    }

    /// Navigates to `url` and waits for the document to finish loading.
    pub async fn goto(&self, url: &str) {
        let r = self.call("Page.navigate", json!({"url": url})).await;
        assert!(r.get("errorText").is_none(), "navigate to {url}: {r}");
        self.wait_for(
            "document.readyState === 'complete'",
            &format!("{url} to load"),
        )
        .await;
    }

    /// The value of `expression` (awaited when it is a promise); panics on an exception.
    pub async fn eval(&self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expression}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Waits until `expression` is truthy and returns its value; panics after the bound,
    /// saying `what` was awaited and what the page logged.
    pub async fn wait_for(&self, expression: &str, what: &str) -> Value {
        let start = Instant::now();
        loop {
            let v = self.eval(expression).await;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if start.elapsed() > BOUND {
                let body = self
                    .eval("document.body ? document.body.innerText : ''")
                    .await;
                panic!(
                    "waited {BOUND:?} for {what} ({expression}); the page shows:\n{}\nlogged: {:?}",
                    body.as_str().unwrap_or(""),
                    self.problems()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Types `text` into the focused element, as a keyboard would (input events and all).
    pub async fn type_text(&self, text: &str) {
        self.call("Input.insertText", json!({"text": text})).await;
    }

    /// Presses and releases a key: `"Enter"` or `"Escape"`.
    pub async fn press(&self, key: &str) {
        let (code, text) = match key {
            "Enter" => (13, "\r"),
            "Escape" => (27, ""),
            other => panic!("no key code for {other}"),
        };
        for kind in ["keyDown", "keyUp"] {
            let mut ev = json!({"type": kind, "key": key, "code": key,
                                "windowsVirtualKeyCode": code, "nativeVirtualKeyCode": code});
            if kind == "keyDown" && !text.is_empty() {
                ev["text"] = json!(text);
            }
            self.call("Input.dispatchKeyEvent", ev).await;
        }
    }

    /// Sets the viewport: `mobile` emulates a phone (touch, its scale).
    pub async fn viewport(&self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        )
        .await;
    }

    /// A PNG of the page as shown.
    pub async fn screenshot(&self) -> Vec<u8> {
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        data_encoding::BASE64
            .decode(r["data"].as_str().unwrap().as_bytes())
            .unwrap()
    }

    /// Every URL this page requested so far.
    pub fn requests(&self) -> Vec<String> {
        let seen = self.conn.seen.lock().unwrap();
        seen.requests
            .get(&self.session)
            .cloned()
            .unwrap_or_default()
    }

    /// Errors, warnings and exceptions this page logged so far (CSP reports among them).
    pub fn problems(&self) -> Vec<String> {
        let seen = self.conn.seen.lock().unwrap();
        seen.problems
            .get(&self.session)
            .cloned()
            .unwrap_or_default()
    }
}
