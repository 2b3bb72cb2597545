//! NOTIFY (RFC 1996): tells each secondary of `dns.notify` that a zone changed, so it asks
//! for the SOA and transfers at once rather than at its next refresh.
//!
//! One task per secondary. At start-up it notifies every zone (the zones may have changed
//! while signpost was down); then, each time the registry publishes a new index, every zone
//! whose serial follows the registry. It sends at most one round per `dns.notify_interval`
//! (changes that arrive meanwhile are folded into the next round, which carries the newest
//! serial), and retries the zones whose NOTIFY is unanswered, waiting twice as long each
//! time (up to a minute), until they are answered or a newer change supersedes them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::DnsView;
use super::table::Table;
use super::wire::{AA, CLASS_IN, HEADER_LEN, QR, SOA};

/// The NOTIFY opcode (RFC 1996), as bits of the flags word.
const OPCODE_NOTIFY: u16 = 4 << 11;
/// The longest wait between two tries of an unanswered NOTIFY.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

/// The NOTIFY of zone `zone` of `table`, with ID `id`: the apex's SOA question, and the SOA
/// with its current serial in the answer section (RFC 1996 §3.7).
fn message(table: &Table, zone: usize, id: u16) -> Vec<u8> {
    let z = &table.zones[zone];
    let soa = z.soa_rdata(table.index());
    let mut m = Vec::with_capacity(HEADER_LEN + 2 * z.apex.len() + 16 + soa.len());
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&(OPCODE_NOTIFY | AA).to_be_bytes());
    m.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 0]);
    m.extend_from_slice(&z.apex);
    m.extend_from_slice(&SOA.to_be_bytes());
    m.extend_from_slice(&CLASS_IN.to_be_bytes());
    m.extend_from_slice(&z.apex);
    m.extend_from_slice(&SOA.to_be_bytes());
    m.extend_from_slice(&CLASS_IN.to_be_bytes());
    m.extend_from_slice(&table.soa_ttl(zone).to_be_bytes());
    m.extend_from_slice(&(soa.len() as u16).to_be_bytes());
    m.extend_from_slice(&soa);
    m
}

/// Notifies `secondary` until shutdown.
pub(crate) async fn run(
    view: Arc<DnsView>,
    secondary: SocketAddr,
    interval: Duration,
    mut published: watch::Receiver<u64>,
    shutdown: CancellationToken,
) {
    let local: SocketAddr = if secondary.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = match UdpSocket::bind(local).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(%secondary, error = %e, "notify: cannot open a UDP socket");
            return;
        }
    };
    // Query IDs from a per-task random start; replies are matched on them.
    let mut next_id = {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(u64::from(secondary.port()));
        h.finish() as u16
    };
    let mut last_round: Option<Instant> = None;
    let mut first = true;
    loop {
        if !first {
            tokio::select! {
                r = published.changed() => if r.is_err() { return },
                _ = shutdown.cancelled() => return,
            }
        }
        if let Some(t) = last_round {
            tokio::select! {
                _ = tokio::time::sleep_until(t + interval) => {}
                _ = shutdown.cancelled() => return,
            }
        }
        // Changes during the wait are carried by this round's serial.
        published.borrow_and_update();
        let table = view.table().clone();
        let mut pending: Vec<(usize, u16)> = table
            .apexes
            .iter()
            .map(|(_, z)| *z)
            .filter(|z| first || table.zones[*z].follows_registry)
            .map(|z| {
                next_id = next_id.wrapping_add(1);
                (z, next_id)
            })
            .collect();
        first = false;
        let mut wait = interval;
        while !pending.is_empty() {
            last_round = Some(Instant::now());
            for &(zone, id) in &pending {
                if let Err(e) = socket.send_to(&message(&table, zone, id), secondary).await {
                    tracing::debug!(%secondary, error = %e, "notify send");
                }
            }
            let deadline = Instant::now() + wait;
            let mut buf = [0u8; 512];
            while !pending.is_empty() {
                tokio::select! {
                    r = socket.recv_from(&mut buf) => {
                        let Ok((n, from)) = r else { continue };
                        if from != secondary || n < HEADER_LEN {
                            continue;
                        }
                        let flags = u16::from_be_bytes([buf[2], buf[3]]);
                        if flags & QR == 0 || flags & (0xf << 11) != OPCODE_NOTIFY {
                            continue;
                        }
                        // Any reply answers it: an error will not be mended by repeating.
                        let id = u16::from_be_bytes([buf[0], buf[1]]);
                        pending.retain(|(_, p)| *p != id);
                    }
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = shutdown.cancelled() => return,
                }
            }
            if pending.is_empty() || published.has_changed().unwrap_or(false) {
                // Answered, or superseded by a newer change: the next round carries it.
                break;
            }
            tracing::debug!(%secondary, unanswered = pending.len(), "notify: retrying");
            // Wait out the rest of the interval before the retry, then back off.
            wait = (wait * 2).min(MAX_RETRY_WAIT);
            for p in &mut pending {
                next_id = next_id.wrapping_add(1);
                p.1 = next_id;
            }
        }
    }
}
