//! The HTTP check: `GET` the URL; 2xx passing, 429 warning, anything else or a timeout
//! critical. One shared client pools connections per host, so a check every second reuses
//! its connection instead of opening a new one. Redirects are followed only to the same host
//! and port (at most 5): a health endpoint must not send the checker elsewhere. The redirect
//! the checker stops at is the probe's answer, critical, and its output says which rule
//! stopped it (`HTTP 302 Found (too many redirects)`); a 3xx that is no redirect to follow
//! (a 304, or one without `Location`) is reported by its status alone.
//!
//! Of the body only a small prefix is read ([`BODY_PREFIX`]), under the same timeout: a
//! small body read to its end lets the connection go back to the pool, and a target answering
//! with gigabytes costs the checker no more than that prefix (its connection is closed
//! instead of pooled). A body that fails within that prefix (reset, or cut short of its
//! Content-Length) makes the probe critical whatever its status.

use std::fmt;
use std::time::Duration;

use reqwest::StatusCode;

use crate::model::Status;

/// Most redirects followed within one probe.
const MAX_REDIRECTS: usize = 5;
/// Idle pooled connections per host; checks of one target reuse them.
const POOL_PER_HOST: usize = 4;
/// Body bytes a probe reads before it stops: enough for any health page worth pooling the
/// connection for, and a bound on what a target can make the checker read (plus at most one
/// chunk, as the transport delivers it, past the bound).
const BODY_PREFIX: usize = 4 * 1024;

/// The shared client of every HTTP check.
pub(crate) fn client() -> reqwest::Client {
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        let same_origin = attempt.previous().first().is_some_and(|first| {
            first.host_str() == attempt.url().host_str()
                && first.port_or_known_default() == attempt.url().port_or_known_default()
                && first.scheme() == attempt.url().scheme()
        });
        let why = if !same_origin {
            "redirect to another host not followed"
        } else if attempt.previous().len() > MAX_REDIRECTS {
            "too many redirects"
        } else {
            return attempt.follow();
        };
        // An error rather than `stop`: the stopped response alone would not tell the probe
        // which of the two rules stopped it.
        let status = attempt.status();
        attempt.error(NotFollowed { status, why })
    });
    reqwest::Client::builder()
        .redirect(policy)
        .pool_max_idle_per_host(POOL_PER_HOST)
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("signpost-health/", env!("CARGO_PKG_VERSION")))
        .no_proxy()
        .build()
        .expect("a client without TLS or proxies always builds")
}

/// A redirect the policy did not follow: its status and why not.
#[derive(Debug)]
struct NotFollowed {
    status: StatusCode,
    why: &'static str,
}

impl fmt::Display for NotFollowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", status_line(self.status), self.why)
    }
}

impl std::error::Error for NotFollowed {}

/// Maps an HTTP status to the check's status.
pub(crate) fn classify(code: u16) -> Status {
    match code {
        200..=299 => Status::Passing,
        429 => Status::Warning,
        _ => Status::Critical,
    }
}

/// Runs one GET; returns the probe's status and a short reason (`HTTP 200 OK`).
pub(crate) async fn probe(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> (Status, String) {
    let result = tokio::time::timeout(timeout, async {
        let mut resp = client.get(url).timeout(timeout).send().await?;
        let code = resp.status();
        Ok::<_, reqwest::Error>((code, read_prefix(&mut resp).await))
    })
    .await;
    match result {
        Ok(Ok((code, Ok(())))) => (classify(code.as_u16()), status_line(code)),
        Ok(Ok((_, Err(e)))) if e.is_timeout() => (Status::Critical, timed_out(timeout)),
        Ok(Ok((code, Err(e)))) => (
            Status::Critical,
            format!(
                "{}, body read failed: {}",
                status_line(code),
                root_cause(&e)
            ),
        ),
        Ok(Err(e)) if e.is_timeout() => (Status::Critical, timed_out(timeout)),
        Ok(Err(e)) => match not_followed(&e) {
            Some(stop) => (classify(stop.status.as_u16()), stop.to_string()),
            None => (
                Status::Critical,
                format!("HTTP GET failed: {}", root_cause(&e)),
            ),
        },
        Err(_) => (Status::Critical, timed_out(timeout)),
    }
}

/// Reads the body until it ends or [`BODY_PREFIX`] bytes have come, keeping none of it. The
/// rest, if any, is never read: dropping the response closes its connection.
async fn read_prefix(resp: &mut reqwest::Response) -> Result<(), reqwest::Error> {
    let mut read = 0;
    while read < BODY_PREFIX {
        match resp.chunk().await? {
            Some(chunk) => read += chunk.len(),
            None => break,
        }
    }
    Ok(())
}

/// The redirect the policy stopped at, when that is what ended the request.
fn not_followed<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a NotFollowed> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(stop) = err.downcast_ref::<NotFollowed>() {
            return Some(stop);
        }
        cur = err.source();
    }
    None
}

/// `HTTP 200 OK`: the code and, when it has one, its reason phrase.
fn status_line(code: StatusCode) -> String {
    let mut out = format!("HTTP {}", code.as_u16());
    if let Some(r) = code.canonical_reason() {
        out.push(' ');
        out.push_str(r);
    }
    out
}

fn timed_out(timeout: Duration) -> String {
    format!(
        "HTTP GET timed out after {}",
        humantime::format_duration(timeout)
    )
}

/// The innermost error's message (`connection refused`), not reqwest's wrapper text.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_mapping() {
        for (code, want) in [
            (200, Status::Passing),
            (204, Status::Passing),
            (299, Status::Passing),
            (429, Status::Warning),
            (301, Status::Critical),
            (404, Status::Critical),
            (500, Status::Critical),
            (503, Status::Critical),
        ] {
            assert_eq!(classify(code), want, "{code}");
        }
    }
}
