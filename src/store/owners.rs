//! Which replica runs which check: rendezvous (highest random weight) hashing of each
//! instance over the live members of a shared store.
//!
//! Every replica computes the same owner from the same member set, with no coordination: each
//! (member, instance) pair gets a score and the member with the highest score owns the
//! instance. A member joining takes only the instances it now scores highest on; a member
//! leaving gives up only its own, spread over the others. The hash is written out here (FNV-1a
//! with a 64-bit finalizer) rather than taken from the standard library, whose hasher may change
//! between Rust versions: two replicas built differently must still agree.
//!
//! A store without replicas (the embedded one) has `Owners::solo`: this process owns everything.

use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use crate::model::InstanceKey;

/// The live members and this replica's name in that set.
pub struct Owners {
    /// This replica's member name; `None`: the only process, owning everything.
    me: Option<String>,
    /// The live members, sorted. Written by the shared store's watch, read by the checker and
    /// the registry writer (one read per decision, rare next to a probe).
    members: RwLock<Vec<String>>,
    /// Bumped on every change of `members`, so the checker re-deals its checks.
    changed: watch::Sender<u64>,
}

impl std::fmt::Debug for Owners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owners")
            .field("me", &self.me)
            .field("members", &*self.members.read().expect("members lock"))
            .finish()
    }
}

impl Owners {
    /// One process owning every instance (the embedded store).
    pub fn solo() -> Arc<Self> {
        Arc::new(Self {
            me: None,
            members: RwLock::new(Vec::new()),
            changed: watch::channel(0).0,
        })
    }

    /// A replica named `me` among members the store will report (`set_members`).
    pub fn member(me: String) -> Arc<Self> {
        Arc::new(Self {
            me: Some(me),
            members: RwLock::new(Vec::new()),
            changed: watch::channel(0).0,
        })
    }

    /// Whether this replica runs `key`'s check and fires its deadlines. A replica that is not
    /// (or no longer) among the live members owns nothing: the others have taken its share.
    pub fn owns(&self, key: &InstanceKey) -> bool {
        let Some(me) = &self.me else {
            return true;
        };
        let members = self.members.read().expect("members lock");
        owner(&members, key).is_some_and(|o| o == me)
    }

    /// A receiver that sees a new value whenever the member set changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Replaces the live member set (the shared store's watch). Only a real change notifies.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub(crate) fn set_members(&self, mut members: Vec<String>) {
        members.sort();
        members.dedup();
        let mut m = self.members.write().expect("members lock");
        if *m == members {
            return;
        }
        *m = members;
        drop(m);
        self.changed.send_modify(|g| *g += 1);
    }
}

/// The member with the highest score for `key` (ties, practically impossible, go to the
/// smaller name, so every replica still agrees).
pub(crate) fn owner<'a>(members: &'a [String], key: &InstanceKey) -> Option<&'a str> {
    members
        .iter()
        .map(|m| (score(m, key), m))
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)))
        .map(|(_, m)| m.as_str())
}

/// The rendezvous score of `member` for `key`: FNV-1a over member, a separator, service, a
/// separator and id, then splitmix64's finalizer so nearby inputs spread over all 64 bits.
fn score(member: &str, key: &InstanceKey) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(member.as_bytes());
    eat(&[0]);
    eat(key.service.as_str().as_bytes());
    eat(&[0]);
    eat(key.id.as_str().as_bytes());
    let mut z = h;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{InstanceId, ServiceName};

    fn key(i: usize) -> InstanceKey {
        InstanceKey {
            service: ServiceName::parse("web").unwrap(),
            id: InstanceId::parse(&format!("i{i}")).unwrap(),
        }
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn solo_owns_everything() {
        assert!(Owners::solo().owns(&key(1)));
    }

    #[test]
    fn each_instance_has_exactly_one_owner_and_shares_are_even() {
        let members = names(&["a", "b", "c"]);
        let replicas: Vec<_> = members
            .iter()
            .map(|m| {
                let o = Owners::member(m.clone());
                o.set_members(members.clone());
                o
            })
            .collect();
        let mut share = [0usize; 3];
        for i in 0..3000 {
            let owning: Vec<usize> = (0..3).filter(|&r| replicas[r].owns(&key(i))).collect();
            assert_eq!(owning.len(), 1, "instance {i}: {owning:?}");
            share[owning[0]] += 1;
        }
        assert!(
            share.iter().all(|&s| (850..=1150).contains(&s)),
            "{share:?}"
        );
    }

    #[test]
    fn a_leaving_member_moves_only_its_own_share() {
        let three = names(&["a", "b", "c"]);
        let two = names(&["a", "c"]);
        for i in 0..2000 {
            let before = owner(&three, &key(i)).unwrap();
            let after = owner(&two, &key(i)).unwrap();
            if before != "b" {
                assert_eq!(before, after, "instance {i} moved though its owner stayed");
            }
        }
    }

    #[test]
    fn a_replica_outside_the_member_set_owns_nothing() {
        let o = Owners::member("d".into());
        o.set_members(names(&["a", "b"]));
        assert!((0..100).all(|i| !o.owns(&key(i))));
        let rx = o.subscribe();
        o.set_members(names(&["b", "a"]));
        assert!(!rx.has_changed().unwrap(), "the same set is no change");
        o.set_members(names(&["a", "b", "d"]));
        assert!(rx.has_changed().unwrap());
        assert!((0..100).any(|i| o.owns(&key(i))));
    }
}
