//! `Watches`: the long-polls waiting on one service (`GET /v1/services/{service}?index=`, and
//! the Consul API's blocking reads of a service) are woken only when that service changes,
//! not by every change of the registry.
//!
//! Each watched service has one channel carrying its index (`Snapshot::service_index`),
//! shared by every read waiting on it and dropped with the last of them. One dispatcher task
//! follows the registry's index and, after each change, looks up the index of each watched
//! service (a map lookup each, however many reads wait on it) and sends it only when it
//! moved. So a change costs one lookup per watched service, and a read waiting on a service
//! that did not change is not woken at all: a thousand watches on a quiet service cost nothing
//! when others change (BENCHMARKS.md, "Consul watches").

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::model::ServiceName;
use crate::registry::Registry;

/// The channels of the watched services.
#[derive(Default)]
pub(crate) struct Watches {
    services: Arc<Mutex<HashMap<ServiceName, Watched>>>,
    dispatcher: OnceLock<()>,
}

struct Watched {
    index: watch::Sender<u64>,
    /// Reads holding a `Watching` on it; the entry goes with the last.
    readers: usize,
}

/// One read's hold on its service's channel; released when dropped (answered or cancelled).
pub(crate) struct Watching {
    services: Arc<Mutex<HashMap<ServiceName, Watched>>>,
    service: ServiceName,
    /// The service's index, sent whenever it moves.
    pub index: watch::Receiver<u64>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        let mut map = self.services.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = map.get_mut(&self.service) {
            w.readers -= 1;
            if w.readers == 0 {
                map.remove(&self.service);
            }
        }
    }
}

impl Watches {
    /// Starts watching `service` (the dispatcher too, on first use; it ends at `shutdown`).
    pub(crate) fn watch(
        &self,
        registry: &Arc<Registry>,
        shutdown: &CancellationToken,
        service: &ServiceName,
    ) -> Watching {
        self.dispatcher.get_or_init(|| {
            tokio::spawn(dispatch(
                self.services.clone(),
                registry.clone(),
                shutdown.clone(),
            ));
        });
        let mut map = self.services.lock().unwrap_or_else(|e| e.into_inner());
        let w = map.entry(service.clone()).or_insert_with(|| Watched {
            // The index as of now: a change since the caller's snapshot shows at once.
            index: watch::Sender::new(registry.snapshot().service_index(service)),
            readers: 0,
        });
        w.readers += 1;
        Watching {
            services: self.services.clone(),
            service: service.clone(),
            index: w.index.subscribe(),
        }
    }
}

/// After every change of the registry, sends each watched service's index where it moved
/// forwards.
async fn dispatch(
    services: Arc<Mutex<HashMap<ServiceName, Watched>>>,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) {
    let mut changes = registry.subscribe();
    loop {
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = shutdown.cancelled() => return,
        }
        // The snapshot is stored before its index is sent, so this one is at least as new.
        let snap = registry.snapshot();
        let map = services.lock().unwrap_or_else(|e| e.into_inner());
        for (service, w) in map.iter() {
            let index = snap.service_index(service);
            // Only forwards: a reader that joined after this snapshot was read holds a newer
            // index already, which an older one must not replace.
            w.index.send_if_modified(|current| {
                let newer = index > *current;
                if newer {
                    *current = index;
                }
                newer
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::instance;
    use std::time::Duration;

    #[tokio::test]
    async fn only_the_watched_services_change_wakes_and_the_last_reader_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(crate::store::Embedded::open(dir.path()).unwrap());
        let (registry, writer) = Registry::open(store, Vec::new()).await.unwrap();
        let shutdown = CancellationToken::new();
        tokio::spawn(writer.run(shutdown.clone()));
        registry
            .register(instance("web", "a").build())
            .await
            .unwrap();
        registry
            .register(instance("api", "a").build())
            .await
            .unwrap();
        let web = ServiceName::parse("web").unwrap();

        let watches = Watches::default();
        let mut one = watches.watch(&registry, &shutdown, &web);
        let two = watches.watch(&registry, &shutdown, &web);
        assert_eq!(watches.services.lock().unwrap()[&web].readers, 2);
        let start = *one.index.borrow_and_update();
        assert_eq!(start, registry.snapshot().service_index(&web));

        registry
            .register(instance("api", "b").build())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !one.index.has_changed().unwrap(),
            "api's change reached web's watch"
        );

        registry
            .register(instance("web", "b").build())
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), one.index.changed())
            .await
            .expect("web's change wakes its watch")
            .unwrap();
        assert!(*one.index.borrow() > start);

        drop(two);
        assert_eq!(watches.services.lock().unwrap()[&web].readers, 1);
        drop(one);
        assert!(watches.services.lock().unwrap().is_empty());
        shutdown.cancel();
    }
}
