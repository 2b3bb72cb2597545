//! Moving a registry between stores (CONTRACT §4, "Moving"): `export` writes every stored
//! registration as JSON lines, `import` reads such lines and commits them through a
//! `Backend`, so a registry moves from the embedded store to another backend and back.
//!
//! A line is the store's own record in JSON (`record::Record`: versioned, with the service,
//! the id and the maintenance mode), the same form the embedded store has always been able to
//! read; every line is validated by `model` on import, and a bad line is an error naming its
//! number, with nothing committed from the file. Health is not carried: it is re-established
//! by the checks, as after a restart.

use std::io::{BufRead, Write};
use std::sync::Arc;

use super::record::{self, Record};
use super::{Backend, Change, StoreError};

/// Registrations committed together on import: one transaction (one fsync) per this many.
const IMPORT_BATCH: usize = 1024;

/// Writes every registration `backend` holds to `out`, one JSON line each, ordered by service
/// then id. Returns how many.
pub async fn export(backend: Arc<dyn Backend>, out: &mut dyn Write) -> Result<usize, StoreError> {
    let mut loaded = backend.load().await?;
    loaded.instances.sort_by(|a, b| a.key().cmp(b.key()));
    let io = |e: std::io::Error| StoreError::Write(format!("cannot write the export: {e}"));
    for inst in &loaded.instances {
        serde_json::to_writer(&mut *out, &Record::from(inst))
            .map_err(|e| StoreError::Write(format!("cannot write the export: {e}")))?;
        out.write_all(b"\n").map_err(io)?;
    }
    out.flush().map_err(io)?;
    Ok(loaded.instances.len())
}

/// Reads JSON lines (`export`'s form) from `input`, validates every one, then registers or
/// replaces each instance through `backend`. Blank lines are skipped. Returns how many.
pub async fn import(
    backend: Arc<dyn Backend>,
    input: &mut dyn BufRead,
) -> Result<usize, StoreError> {
    let mut changes = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let line = line.map_err(|e| StoreError::Write(format!("cannot read the import: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let inst = record::decode(line.as_bytes()).map_err(|message| StoreError::Import {
            line: n + 1,
            message,
        })?;
        changes.push(Change::Put(Box::new(inst)));
    }
    let total = changes.len();
    while !changes.is_empty() {
        let batch = IMPORT_BATCH.min(backend.max_batch());
        let rest = changes.split_off(changes.len().min(batch));
        // No floor of its own: the store assigns the next index above what it holds.
        backend.clone().commit(changes, 0).await?;
        changes = rest;
    }
    backend.flush().await?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing;
    use crate::store::Embedded;

    #[tokio::test]
    async fn export_then_import_carries_every_registration() {
        let from = tempfile::tempdir().unwrap();
        let insts = vec![
            testing::instance("web", "a")
                .tags(&["v2"])
                .meta("zone", "eu-1")
                .ttl_check(std::time::Duration::from_secs(15))
                .build(),
            testing::instance("web", "b")
                .address("fd00::7")
                .maintenance("disk swap", std::time::UNIX_EPOCH)
                .build(),
            testing::instance("api", "x").port(9090).build(),
        ];
        {
            let s = Embedded::open(from.path()).unwrap();
            let changes = insts.iter().map(|i| Change::Put(Box::new(i.clone())));
            s.apply(&changes.collect::<Vec<_>>(), 3).unwrap();
        }
        let mut out = Vec::new();
        let n = export(Arc::new(Embedded::open(from.path()).unwrap()), &mut out)
            .await
            .unwrap();
        assert_eq!(n, 3);
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 3);

        let to = tempfile::tempdir().unwrap();
        let n = import(
            Arc::new(Embedded::open(to.path()).unwrap()),
            &mut out.as_slice(),
        )
        .await
        .unwrap();
        assert_eq!(n, 3);
        let mut got = Embedded::open(to.path()).unwrap().load().unwrap().instances;
        got.sort_by(|a, b| a.key().cmp(b.key()));
        let mut want = insts;
        want.sort_by(|a, b| a.key().cmp(b.key()));
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn a_bad_line_imports_nothing_and_names_the_line() {
        let to = tempfile::tempdir().unwrap();
        let mut good = Vec::new();
        let one = testing::instance("web", "a").build();
        serde_json::to_writer(&mut good, &Record::from(&one)).unwrap();
        let mut text = String::from_utf8(good).unwrap();
        text.push_str("\n{\"v\":1,\"service\":\"web\"}\n");
        let e = import(
            Arc::new(Embedded::open(to.path()).unwrap()),
            &mut text.as_bytes(),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(
            Embedded::open(to.path())
                .unwrap()
                .load()
                .unwrap()
                .instances
                .is_empty()
        );
    }
}
