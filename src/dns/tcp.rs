//! DNS over TCP: length-prefixed messages, several per connection, each answered as soon as
//! it is ready (RFC 7766 pipelining: a forwarded query never holds back a local answer),
//! and who may hold a connection.
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
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::forward::Forwarder;
use super::handler::{Outcome, Transport, handle, servfail};
use super::stats::{self, Answer, Proto, Stats};
use super::transfer::{self, Transfer};
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
            if let Err(e) =
                connection(stream, peer, view, forwarder, limits, counting, shutdown).await
            {
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

/// Most queries of one connection being forwarded at once (RFC 7766 §6.2.1.1 pipelining;
/// Knot's `tcp-pipeline` default is 20). At the bound the connection reads no further until
/// one is answered, so a client cannot park more than this many upstream round trips.
const MAX_PIPELINED: usize = 16;
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Most bytes buffered ahead of the queries being answered: one largest message and its
/// length prefix, plus a chunk. Past it, reading waits.
const MAX_BUFFERED: usize = 2 + 65_535 + READ_CHUNK;

/// The first whole length-prefixed message of `buf`, as a range of it.
fn next_frame(buf: &[u8]) -> Option<std::ops::Range<usize>> {
    let len = usize::from(u16::from_be_bytes([*buf.first()?, *buf.get(1)?]));
    (buf.len() >= 2 + len).then_some(2..2 + len)
}

/// Serves one connection; `forwarder` is `Some` only when this client may use forwarding.
///
/// Queries are answered as each is ready (RFC 7766 §6.2.1.1): a query signpost answers
/// itself is written at once, while forwarded ones run as tasks of this connection, so a
/// slow upstream never holds back an answer behind it. Reads are cancel-safe (bytes go into
/// `inbuf`, whole messages are taken from it), so waiting for a read and for a forwarded
/// answer at once loses nothing. The connection is idle, and closed, when no whole query
/// arrived for `idle_timeout` and nothing is being forwarded.
async fn connection(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    view: Arc<DnsView>,
    forwarder: Option<Arc<Forwarder>>,
    limits: TcpLimits,
    counting: Counting,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let counts = counting.stats.shared();
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let mut inbuf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut out = Vec::with_capacity(4096);
    // Forwarded queries: each task gives back its reply and when its query arrived.
    let mut pending: JoinSet<(Vec<u8>, std::time::Instant)> = JoinSet::new();
    let mut reading = true;
    let mut idle_at = tokio::time::Instant::now() + limits.idle_timeout;
    loop {
        // Answer every whole query already read, while there is room to forward.
        while pending.len() < MAX_PIPELINED
            && let Some(frame) = next_frame(&inbuf)
        {
            idle_at = tokio::time::Instant::now() + limits.idle_timeout;
            let query = &inbuf[frame.clone()];
            if transfer::is_transfer(query) {
                // A zone transfer: its messages are written one by one from one table, while
                // queries elsewhere go on; this connection's next query waits for the end.
                let table = view.table().clone();
                let mut t = Transfer::new(&table, &view.history, &view.transfer, peer.ip(), query);
                while let Some(message) = t.next() {
                    write_framed(&mut wr, &message, limits).await?;
                }
                inbuf.drain(..frame.end);
                continue;
            }
            let started = std::time::Instant::now();
            match handle(
                &view.table(),
                query,
                Transport::Tcp,
                forwarder.is_some(),
                peer.ip(),
                &mut out,
            ) {
                Outcome::Answered { rcode, qtype } => {
                    counts.request(Proto::Tcp, counting.family, qtype);
                    let answer = Answer::of(rcode, &out);
                    write_framed(&mut wr, &out, limits).await?;
                    counts.response(answer, started);
                }
                Outcome::Signed { rcode, qtype } => {
                    counts.request(Proto::Tcp, counting.family, qtype);
                    let answer = Answer::of(rcode, &out);
                    transfer::sign_answer(&view.transfer, query, &mut out);
                    write_framed(&mut wr, &out, limits).await?;
                    counts.response(answer, started);
                }
                Outcome::Dropped => {}
                Outcome::Forward { qtype } => {
                    counts.request(Proto::Tcp, counting.family, qtype);
                    let fwd = forwarder.clone().expect("forwarding implies a forwarder");
                    let query = query.to_vec();
                    pending.spawn(async move {
                        let reply = match fwd.forward(&query, true).await {
                            Some(r) => r,
                            None => {
                                let mut out = Vec::new();
                                servfail(&query, &mut out);
                                out
                            }
                        };
                        (reply, started)
                    });
                }
            }
            inbuf.drain(..frame.end);
        }
        if !reading && pending.is_empty() {
            return Ok(());
        }
        let may_read = reading && pending.len() < MAX_PIPELINED && inbuf.len() < MAX_BUFFERED;
        tokio::select! {
            done = pending.join_next(), if !pending.is_empty() => {
                if let Some(Ok((reply, started))) = done {
                    let answer = Answer::relayed(&reply);
                    counts.forwarded(answer);
                    write_framed(&mut wr, &reply, limits).await?;
                    counts.response(answer, started);
                }
            }
            r = rd.read(&mut chunk), if may_read => match r {
                Ok(0) => reading = false, // the client is done sending; answer what is pending
                Ok(n) => inbuf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(e),
            },
            _ = tokio::time::sleep_until(idle_at), if reading && pending.is_empty() => {
                reading = false; // idle: no whole query for idle_timeout
            }
            _ = shutdown.cancelled(), if reading => reading = false,
        }
    }
}

/// Writes one reply with its length prefix, bounded by the idle timeout (a client that does
/// not read its answers is dropped).
async fn write_framed(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    reply: &[u8],
    limits: TcpLimits,
) -> std::io::Result<()> {
    let mut framed = Vec::with_capacity(reply.len() + 2);
    framed.extend_from_slice(&(reply.len() as u16).to_be_bytes());
    framed.extend_from_slice(reply);
    tokio::time::timeout(limits.idle_timeout, wr.write_all(&framed))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out"))?
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
