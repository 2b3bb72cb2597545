//! Firefox for the dashboard's tests: Debian's `firefox-esr`, headless, started by the test
//! with a profile of its own and driven over WebDriver BiDi (the W3C protocol Firefox serves
//! on its websocket), through the same connection and `Js` trait as Chromium (`browser`).
//! One page per browser. Killed by its process group's id when dropped.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::browser::{Connection, Js, kill_group, listening};

/// Preferences that keep a test profile quiet: no first-run pages, update checks, telemetry
/// or proxy.
const PREFS: &str = r#"
user_pref("browser.shell.checkDefaultBrowser", false);
user_pref("browser.startup.homepage_override.mstone", "ignore");
user_pref("browser.aboutwelcome.enabled", false);
user_pref("datareporting.policy.dataSubmissionEnabled", false);
user_pref("datareporting.healthreport.uploadEnabled", false);
user_pref("toolkit.telemetry.enabled", false);
user_pref("app.update.disabledForTesting", true);
user_pref("app.normandy.enabled", false);
user_pref("network.proxy.type", 0);
"#;

/// A headless Firefox showing one page.
pub struct Firefox {
    pid: i32,
    child: tokio::process::Child,
    conn: Arc<Connection>,
    context: Value,
    _profile: tempfile::TempDir,
}

impl Firefox {
    /// Starts Firefox headless with a new profile, opens a BiDi session on its one tab.
    pub async fn launch() -> Firefox {
        let profile = tempfile::tempdir().unwrap();
        std::fs::write(profile.path().join("user.js"), PREFS).unwrap();
        let mut child = tokio::process::Command::new("firefox-esr")
            .args(["--headless", "--no-remote", "--remote-debugging-port=0"])
            .arg("--profile")
            .arg(profile.path())
            .arg("about:blank")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start firefox-esr (apt-get install firefox-esr): {e}")
            });
        let pid = child.id().expect("running") as i32;
        let ws = listening(&mut child, "WebDriver BiDi listening on ").await;
        let conn = Connection::open(&format!("{ws}/session")).await;
        conn.call(None, "session.new", json!({"capabilities": {}}))
            .await;
        conn.call(
            None,
            "session.subscribe",
            json!({"events": ["log.entryAdded", "network.beforeRequestSent"]}),
        )
        .await;
        let tree = conn.call(None, "browsingContext.getTree", json!({})).await;
        let context = tree["contexts"][0]["context"].clone();
        assert!(context.is_string(), "a browsing context: {tree}");
        Firefox {
            pid,
            child,
            conn,
            context,
            _profile: profile,
        }
    }

    /// Navigates to `url` and waits for it to load.
    pub async fn goto(&self, url: &str) {
        self.conn
            .call(
                None,
                "browsingContext.navigate",
                json!({"context": self.context, "url": url, "wait": "complete"}),
            )
            .await;
    }

    /// Ends the session and the browser, then makes sure its processes are gone.
    pub async fn close(mut self) {
        self.conn.send("browser.close", json!({}));
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            kill_group(self.pid);
        }
    }
}

impl Js for Firefox {
    async fn eval(&self, expression: &str) -> Value {
        // BiDi hands values back in its own typed form; JSON text is simpler to read back.
        let wrapped = format!("(async () => JSON.stringify(await ({expression})))()");
        let r = self
            .conn
            .call(
                None,
                "script.evaluate",
                json!({"expression": wrapped, "target": {"context": self.context},
                       "awaitPromise": true, "resultOwnership": "none"}),
            )
            .await;
        if r["type"] == "exception" {
            panic!("{expression}: {}", r["exceptionDetails"]);
        }
        match r["result"]["value"].as_str() {
            Some(text) => serde_json::from_str(text).unwrap(),
            None => Value::Null, // undefined
        }
    }

    fn problems(&self) -> Vec<String> {
        self.conn.seen("").1
    }

    fn requests(&self) -> Vec<String> {
        self.conn.seen("").0
    }
}

impl Drop for Firefox {
    fn drop(&mut self) {
        kill_group(self.pid);
    }
}
