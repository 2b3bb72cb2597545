//! This replica's membership: a key `members/<name>` on a lease of `member_ttl`, kept alive by
//! this replica and renewed when lost.
//!
//! The client crate sends keep-alives only when asked, and a keep-alive stream can stall
//! without an error, so the keeper asks every third of the TTL and counts the lease lost when
//! no answer came for a whole TTL (or etcd says it expired): then it grants a new lease and
//! writes the key again, with jittered backoff while etcd is away. While the lease is lost,
//! `Etcd::lease` is 0: owner writes fail at once (the others own this replica's checks by
//! then) and `/ready` says so. Leaving (shutdown) revokes the lease, so the others take the
//! checks over at once.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use etcd_client::PutOptions;
use tokio::time::Instant;

use super::Etcd;
use super::layout::MemberRecord;
use crate::store::StoreError;

/// Backoff between attempts while etcd is away: doubling from `FIRST` to `MAX`, each wait
/// jittered to between half and all of it so replicas do not retry in step.
pub(super) struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(2);

    pub(super) fn new() -> Self {
        Self { next: Self::FIRST }
    }

    pub(super) fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// The next wait.
    pub(super) fn next(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(Self::MAX);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|t| t.subsec_nanos())
            .unwrap_or_default();
        d / 2 + d.mul_f64(f64::from(nanos % 1000) / 2000.0)
    }
}

impl Etcd {
    /// Grants a lease and writes this replica's membership key on it.
    pub(super) async fn join(&self) -> Result<(), StoreError> {
        let mut client = self.client.clone();
        let ttl = self.member_ttl.as_secs() as i64;
        let lease = self
            .bounded("lease grant", client.lease_grant(ttl, None))
            .await?
            .id();
        let opts = PutOptions::new().with_lease(lease);
        let key = self.layout.member(&self.name);
        let value = MemberRecord::encode(&self.name);
        self.bounded("membership write", client.put(key, value, Some(opts)))
            .await?;
        self.lease.store(lease, Ordering::Relaxed);
        tracing::info!(member = %self.name, lease, "joined the replicas in etcd");
        Ok(())
    }

    /// Revokes the membership lease (shutdown): the member key goes with it.
    pub(super) async fn leave(&self) {
        self.stop.cancel();
        let lease = self.lease.swap(0, Ordering::Relaxed);
        if lease == 0 {
            return;
        }
        let mut client = self.client.clone();
        if let Err(e) = self
            .bounded("lease revoke", client.lease_revoke(lease))
            .await
        {
            tracing::warn!(error = %e, "membership not revoked; it ends with its lease");
        }
    }

    /// Keeps the membership alive until `stop`; renews it when lost.
    pub(super) async fn keep_membership(self: Arc<Self>) {
        let every = self.member_ttl / 3;
        let mut backoff = Backoff::new();
        // When etcd last confirmed the current lease.
        let mut confirmed = Instant::now();
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            let lease = self.lease.load(Ordering::Relaxed);
            if lease == 0 || confirmed.elapsed() >= self.member_ttl {
                if lease != 0 {
                    tracing::warn!(member = %self.name, "membership lease lost; renewing it");
                    self.lease.store(0, Ordering::Relaxed);
                }
                match self.join().await {
                    Ok(()) => {
                        confirmed = Instant::now();
                        backoff.reset();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot renew the membership yet");
                        self.pause(backoff.next()).await;
                    }
                }
                continue;
            }
            let mut client = self.client.clone();
            let (mut keeper, mut answers) = match self
                .bounded("lease keep-alive", client.lease_keep_alive(lease))
                .await
            {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(error = %e, "keep-alive stream not opened");
                    self.pause(backoff.next()).await;
                    continue;
                }
            };
            // One stream while it answers; a stalled or broken one is opened again.
            loop {
                if keeper.keep_alive().await.is_err() {
                    break;
                }
                match tokio::time::timeout(every.max(Duration::from_millis(500)), answers.message())
                    .await
                {
                    Ok(Ok(Some(r))) if r.ttl() > 0 => {
                        confirmed = Instant::now();
                        backoff.reset();
                        self.up.store(true, Ordering::Relaxed);
                    }
                    Ok(Ok(Some(_))) => {
                        // etcd says the lease is gone (expired while unreachable).
                        confirmed = Instant::now() - self.member_ttl;
                        break;
                    }
                    _ => break,
                }
                if self.pause(every).await {
                    return;
                }
            }
        }
    }

    /// Sleeps `d` unless stopped first; true when stopped.
    pub(super) async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.stop.cancelled() => true,
            _ = tokio::time::sleep(d) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_and_resets() {
        let mut b = Backoff::new();
        let waits: Vec<Duration> = (0..8).map(|_| b.next()).collect();
        assert!(waits[0] >= Duration::from_millis(50) && waits[0] <= Duration::from_millis(100));
        assert!(waits.iter().all(|w| *w <= Backoff::MAX), "{waits:?}");
        assert!(waits[7] >= Backoff::MAX / 2, "{waits:?}");
        b.reset();
        assert!(b.next() <= Backoff::FIRST);
    }
}
