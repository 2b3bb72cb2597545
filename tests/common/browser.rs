//! Real browsers for the dashboard's tests, headless, each started by the test with a profile
//! dir of its own and driven over its websocket: Debian's `chromium` over the DevTools
//! protocol (CDP; `Browser`, `Page`) and `firefox-esr` over WebDriver BiDi (`firefox`).
//! Pages are opened, JavaScript is evaluated in them (`Js`: what a user sees is read from the
//! DOM, what a user does is a `click()`, or real keys through CDP), screenshots are taken.
//! Each page records every URL it requested and every console error, exception and CSP
//! report, so tests can assert that nothing went elsewhere and nothing failed.
//!
//! Every wait is bounded. A browser runs in a process group of its own, killed by its id
//! when dropped (its content processes with it).

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
const BOUND: Duration = Duration::from_secs(30);

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

/// One websocket to a browser: commands by id, their answers, the events noted. CDP and
/// BiDi frame commands alike (`id`, `method`, `params`; `result` or `error` back).
pub struct Connection {
    out: mpsc::UnboundedSender<(Value, Reply)>,
    next: AtomicU64,
    seen: Arc<Mutex<Seen>>,
}

impl Connection {
    /// Connects to the browser's websocket at `url`.
    pub async fn open(url: &str) -> Arc<Connection> {
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .unwrap_or_else(|e| panic!("connect to the browser's websocket {url}: {e}"));
        let (out, rx) = mpsc::unbounded_channel();
        let seen = Arc::new(Mutex::new(Seen::default()));
        tokio::spawn(pump(socket, rx, seen.clone()));
        Arc::new(Connection {
            out,
            next: AtomicU64::new(1),
            seen,
        })
    }

    /// Sends a command without waiting for its answer (one that closes the connection).
    pub fn send(&self, method: &str, params: Value) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let msg = json!({"id": id, "method": method, "params": params});
        let _ = self.out.send((msg, oneshot::channel().0));
    }

    /// The URLs requested and the problems logged under `key` (a CDP session; "" for BiDi).
    pub fn seen(&self, key: &str) -> (Vec<String>, Vec<String>) {
        let seen = self.seen.lock().unwrap();
        (
            seen.requests.get(key).cloned().unwrap_or_default(),
            seen.problems.get(key).cloned().unwrap_or_default(),
        )
    }

    pub async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Value {
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
        let ws = listening(&mut child, "DevTools listening on ").await;

        Browser {
            pid,
            child,
            conn: Connection::open(&ws).await,
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
        self.conn.send("Browser.close", json!({}));
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            self.kill();
        }
    }

    fn kill(&mut self) {
        // The whole group: Chromium's renderer and utility processes were started by it.
        kill_group(self.pid);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The websocket address `child` prints on stderr after `prefix`. The rest of its stderr is
/// read and dropped, so a full pipe never stops it.
pub async fn listening(child: &mut tokio::process::Child, prefix: &str) -> String {
    let stderr = child.stderr.take().expect("stderr piped");
    let mut lines = BufReader::new(stderr).lines();
    let found = tokio::time::timeout(BOUND, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(at) = line.find(prefix) {
                return Some(line[at + prefix.len()..].trim().to_string());
            }
        }
        None
    })
    .await
    .unwrap_or_else(|_| panic!("the browser printed {prefix:?} within {BOUND:?}"))
    .unwrap_or_else(|| panic!("the browser exited before printing {prefix:?}"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    found
}

/// Kills the process group `pid` leads (a browser and the processes it started).
pub fn kill_group(pid: i32) {
    // SAFETY: kill(2) with a process group id the test created; no memory is involved.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
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
        // WebDriver BiDi (Firefox): one page per browser, noted under "".
        "network.beforeRequestSent" => {
            let url = p["request"]["url"].as_str().unwrap_or("").to_string();
            seen.requests.entry(session).or_default().push(url);
            return;
        }
        "log.entryAdded" if matches!(p["level"].as_str(), Some("error" | "warn")) => {
            format!("log {} {}: {}", p["type"], p["level"], p["text"])
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

    /// Lets the page read and write the clipboard as a focused tab does (its origin is
    /// granted the permission; headless tabs are otherwise never focused).
    pub async fn allow_clipboard(&self, origin: &str) {
        self.conn
            .call(
                None,
                "Browser.grantPermissions",
                json!({"origin": origin, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]}),
            )
            .await;
        self.call(
            "Emulation.setFocusEmulationEnabled",
            json!({"enabled": true}),
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
}

impl Js for Page {
    async fn eval(&self, expression: &str) -> Value {
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

    fn problems(&self) -> Vec<String> {
        self.conn.seen(&self.session).1
    }

    fn requests(&self) -> Vec<String> {
        self.conn.seen(&self.session).0
    }
}

/// A page's JavaScript, whichever browser runs it.
#[allow(async_fn_in_trait)]
pub trait Js {
    /// The value of `expression` (awaited when it is a promise); panics on an exception.
    async fn eval(&self, expression: &str) -> Value;

    /// Errors, warnings and exceptions the page logged so far (CSP reports among them).
    fn problems(&self) -> Vec<String>;

    /// Every URL the page requested so far.
    fn requests(&self) -> Vec<String>;

    /// Waits until `expression` is truthy and returns its value; panics after the bound,
    /// saying `what` was awaited and what the page shows and logged.
    async fn wait_for(&self, expression: &str, what: &str) -> Value {
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
}
