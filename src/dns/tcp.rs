//! DNS over TCP: length-prefixed messages, several per connection, answered in order, and who
//! may hold a connection.
//!
//! A semaphore permit is taken *before* `accept`, so at most `max_connections` are served and
//! the rest wait in the kernel's backlog; an idle connection is closed after `idle_timeout`.
//! Each client address holds at most `max_per_client` of them (`Clients`): one more is closed
//! as soon as it is accepted, before anything is read, so a single client cannot take every
//! slot while others wait in the backlog (Knot and Unbound cap per client alike). On shutdown
//! the listener stops and each connection closes after its current answer.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::forward::Forwarder;
use super::handler::{Outcome, Transport, handle, servfail};
use super::stats::{self, Answer, Proto, Stats};
use super::{DnsView, TcpLimits};

// Each argument is one shared piece of the DNS side; bundling them would only rename them.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    listener: TcpListener,
    view: Arc<DnsView>,
    forwarder: Option<Arc<Forwarder>>,
    limits: TcpLimits,
    clients: Arc<Clients>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors and the like: back off briefly rather than spin.
                    tracing::warn!(error = %e, "tcp accept");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(counted) = clients.enter(peer.ip(), limits.max_per_client) else {
            // Dropping the stream closes it; the permit goes back with it.
            tracing::debug!(%peer, "tcp: client at its connection limit, closed");
            continue;
        };
        let view = view.clone();
        let shutdown = shutdown.clone();
        let recursion = forwarder.as_ref().is_some_and(|f| f.allows(peer.ip()));
        let forwarder = forwarder.clone().filter(|_| recursion);
        let (stats, family) = (stats.clone(), stats::family(peer.ip()));
        tracker.spawn(async move {
            let counting = Counting { stats, family };
            if let Err(e) = connection(stream, view, forwarder, limits, counting, shutdown).await {
                tracing::debug!(%peer, error = %e, "tcp connection");
            }
            drop(counted);
            drop(permit);
        });
    }
}

/// Open connections per client address, shared by every TCP listener. A mutex over a map is
/// enough: it is taken when a connection opens and when it closes, never per query.
#[derive(Debug, Default)]
pub(crate) struct Clients(Mutex<HashMap<IpAddr, usize>>);

impl Clients {
    /// Counts a new connection from `ip`; `None` when `ip` already holds `max`.
    fn enter(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<Counted> {
        // An IPv4 client reaching an IPv6 socket is still the same client.
        let ip = ip.to_canonical();
        let mut open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Counted {
            clients: self.clone(),
            ip,
        })
    }

    /// Connections open from `ip`.
    #[cfg(test)]
    fn open(&self, ip: IpAddr) -> usize {
        let open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&ip).copied().unwrap_or(0)
    }
}

/// One connection counted in `Clients`, uncounted when dropped; a client with none left is
/// removed, so the map holds only clients with an open connection.
#[derive(Debug)]
struct Counted {
    clients: Arc<Clients>,
    ip: IpAddr,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut open = self
            .clients
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Entry::Occupied(mut e) = open.entry(self.ip) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

/// Where a connection counts its queries: the shared block, under its client's family.
struct Counting {
    stats: Arc<Stats>,
    family: usize,
}

/// Serves one connection; `forwarder` is `Some` only when this client may use forwarding.
async fn connection(
    mut stream: TcpStream,
    view: Arc<DnsView>,
    forwarder: Option<Arc<Forwarder>>,
    limits: TcpLimits,
    counting: Counting,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let counts = counting.stats.shared();
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 65_535];
    let mut out = Vec::with_capacity(4096);
    loop {
        let mut len = [0u8; 2];
        let read = async {
            stream.read_exact(&mut len).await?;
            let n = usize::from(u16::from_be_bytes(len));
            stream.read_exact(&mut buf[..n]).await?;
            Ok::<usize, std::io::Error>(n)
        };
        let n = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = tokio::time::timeout(limits.idle_timeout, read) => match r {
                Err(_) => return Ok(()), // idle
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(r) => r?,
            },
        };
        let started = std::time::Instant::now();
        let recursion = forwarder.is_some();
        let (reply, answer): (&[u8], Answer) = match handle(
            &view.table(),
            &buf[..n],
            Transport::Tcp,
            recursion,
            &mut out,
        ) {
            Outcome::Answered { rcode, qtype } => {
                counts.request(Proto::Tcp, counting.family, qtype);
                (&out, Answer::of(rcode, &out))
            }
            Outcome::Dropped => continue,
            Outcome::Forward { qtype } => {
                counts.request(Proto::Tcp, counting.family, qtype);
                let fwd = forwarder.as_ref().expect("forwarding implies a forwarder");
                match fwd.forward(&buf[..n], true).await {
                    Some(r) => {
                        out = r;
                    }
                    None => servfail(&buf[..n], &mut out),
                }
                let answer = Answer::relayed(&out);
                counts.forwarded(answer);
                (&out, answer)
            }
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&(reply.len() as u16).to_be_bytes());
        framed.extend_from_slice(reply);
        tokio::time::timeout(limits.idle_timeout, stream.write_all(&framed))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out"))??;
        counts.response(answer, started);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_capped_per_address_and_uncounted_on_close() {
        let clients = Arc::new(Clients::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let mut held: Vec<_> = (0..3).map(|_| clients.enter(a, 3).unwrap()).collect();
        assert!(clients.enter(a, 3).is_none(), "over the cap");
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert!(
            clients.enter(mapped, 3).is_none(),
            "the same client over IPv6"
        );
        let other = clients.enter(b, 3).unwrap();
        held.pop();
        assert_eq!(clients.open(a), 2);
        let again = clients.enter(a, 3);
        assert!(again.is_some(), "a closed connection frees its place");
        drop(again);
        drop(other);
        assert_eq!(clients.open(b), 0);
        drop(held);
        assert_eq!(
            clients.0.lock().unwrap().len(),
            0,
            "no client left in the map"
        );
    }
}
