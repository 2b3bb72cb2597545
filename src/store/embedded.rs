//! The embedded backend: one redb database file, `signpost.redb`, in the data dir.
//!
//! redb commits with `Durability::Immediate` by default: a commit returns after fsync, which
//! is the contract's "a write answered 2xx is never lost". Several changes passed to one
//! `apply` share one commit (one fsync).

use std::path::{Path, PathBuf};

/// redb's page cache. Its default (1 GiB) keeps every page read at start-up (the whole file,
/// ~40 MB at 100,000 instances) in memory for good, though the registry never reads the
/// store after loading it; writes need only the pages on their B-tree path, which the
/// kernel's page cache serves when they are not here.
const CACHE_BYTES: usize = 16 << 20;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::record::{Record, key_of};
use super::{Backend, Change, Loaded, StoreError};

/// `service/id` → JSON of a `record::Record`.
const INSTANCES: TableDefinition<&str, &[u8]> = TableDefinition::new("instances");
/// `"index"` → the registry index of the last committed change.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// File name of the database inside the data dir.
pub const FILE: &str = "signpost.redb";

pub struct Embedded {
    db: Database,
    path: PathBuf,
}

impl Embedded {
    /// Opens (or creates) the database in `dir`, creating `dir` if needed. A file that is not
    /// a readable database is an error naming it.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let open_err = |path: &Path, message: String| StoreError::Open {
            path: path.to_path_buf(),
            message,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(dir, e.to_string()))?;
        let path = dir.join(FILE);
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| open_err(&path, e.to_string()))?;
        // Create the tables up front so that a fresh store reads as empty, not as missing.
        let tx = db
            .begin_write()
            .map_err(|e| open_err(&path, e.to_string()))?;
        {
            tx.open_table(INSTANCES)
                .map_err(|e| open_err(&path, e.to_string()))?;
            tx.open_table(META)
                .map_err(|e| open_err(&path, e.to_string()))?;
        }
        tx.commit().map_err(|e| open_err(&path, e.to_string()))?;
        Ok(Self { db, path })
    }
}

impl Backend for Embedded {
    fn load(&self) -> Result<Loaded, StoreError> {
        let read_err = |message: String| StoreError::Open {
            path: self.path.clone(),
            message,
        };
        let tx = self.db.begin_read().map_err(|e| read_err(e.to_string()))?;
        let table = tx
            .open_table(INSTANCES)
            .map_err(|e| read_err(e.to_string()))?;
        let mut instances = Vec::new();
        for row in table.iter().map_err(|e| read_err(e.to_string()))? {
            let (k, v) = row.map_err(|e| read_err(e.to_string()))?;
            let key = k.value().to_string();
            let corrupt = |message: String| StoreError::Corrupt {
                path: self.path.clone(),
                key: key.clone(),
                message,
            };
            let rec: Record =
                serde_json::from_slice(v.value()).map_err(|e| corrupt(e.to_string()))?;
            let inst = rec.into_instance().map_err(corrupt)?;
            if key_of(&inst.key) != key {
                return Err(corrupt(format!("holds instance {}", inst.key)));
            }
            instances.push(inst);
        }
        let meta = tx.open_table(META).map_err(|e| read_err(e.to_string()))?;
        let index = meta
            .get("index")
            .map_err(|e| read_err(e.to_string()))?
            .map(|g| g.value())
            .unwrap_or(0);
        Ok(Loaded { instances, index })
    }

    fn apply(&self, changes: &[Change], index: u64) -> Result<(), StoreError> {
        let w = |e: &dyn std::fmt::Display| StoreError::Write(e.to_string());
        let tx = self.db.begin_write().map_err(|e| w(&e))?;
        {
            let mut table = tx.open_table(INSTANCES).map_err(|e| w(&e))?;
            for c in changes {
                match c {
                    Change::Put(inst) => {
                        let bytes =
                            serde_json::to_vec(&Record::from(&**inst)).map_err(|e| w(&e))?;
                        table
                            .insert(key_of(&inst.key).as_str(), bytes.as_slice())
                            .map_err(|e| w(&e))?;
                    }
                    Change::Delete(key) => {
                        table.remove(key_of(key).as_str()).map_err(|e| w(&e))?;
                    }
                }
            }
            let mut meta = tx.open_table(META).map_err(|e| w(&e))?;
            meta.insert("index", index).map_err(|e| w(&e))?;
        }
        tx.commit().map_err(|e| w(&e))
    }

    fn flush(&self) -> Result<(), StoreError> {
        // Every commit is already durable; nothing is buffered.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn inst(id: &str) -> Instance {
        Instance {
            key: InstanceKey {
                service: ServiceName::parse("web").unwrap(),
                id: InstanceId::parse(id).unwrap(),
            },
            address: "10.0.0.1".parse().unwrap(),
            port: 80,
            tags: vec![Tag::parse("v2").unwrap()],
            meta: [("k".to_string(), "v".to_string())].into(),
            weight: 1,
            priority: 0,
            ttl: Some(7),
            check: Some(CheckSpec {
                kind: CheckKind::Ttl(std::time::Duration::from_secs(15)),
                interval: DEFAULT_CHECK_INTERVAL,
                timeout: DEFAULT_CHECK_TIMEOUT,
                success_before_passing: 1,
                failures_before_critical: 1,
            }),
            deregister_after: Some(std::time::Duration::from_secs(600)),
            maintenance: None,
        }
    }

    #[test]
    fn round_trip_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Embedded::open(dir.path()).unwrap();
            assert_eq!(s.load().unwrap().instances.len(), 0);
            s.apply(
                &[
                    Change::Put(Box::new(inst("a"))),
                    Change::Put(Box::new(inst("b"))),
                ],
                2,
            )
            .unwrap();
            s.apply(&[Change::Delete(inst("a").key)], 3).unwrap();
        }
        let s = Embedded::open(dir.path()).unwrap();
        let l = s.load().unwrap();
        assert_eq!(l.index, 3);
        assert_eq!(l.instances, vec![inst("b")]);
    }

    #[test]
    fn garbage_file_is_an_error_not_an_empty_registry() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), vec![0x5a; 8192]).unwrap();
        let e = Embedded::open(dir.path()).err().expect("must fail");
        assert!(e.to_string().contains(FILE), "{e}");
    }
}
