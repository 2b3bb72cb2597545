//! Static zones: RFC 1035 master files in `zones/`, parsed with hickory's zone parser and
//! turned into pre-encoded records for the name table.
//!
//! A file `NAME.zone` holds the zone `NAME.` unless it sets `$ORIGIN`. Every zone needs one
//! SOA at its apex; records outside the zone are an error. RDATA is encoded once here, with
//! names uncompressed, so answering only copies bytes.

use std::path::{Path, PathBuf};

use hickory_proto::rr::{Name, RData};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};
use hickory_proto::serialize::txt::Parser;

use super::names;
use super::wire::SOA;

/// A zone file that cannot be served; names the file.
#[derive(Debug, thiserror::Error)]
#[error("zone file {path}: {message}")]
pub struct ZoneError {
    /// The zone file at fault.
    pub path: PathBuf,
    /// What is wrong with it (unreadable, unparsable, or a rule it breaks).
    pub message: String,
}

/// One static record, ready to copy into an answer.
#[derive(Debug, Clone)]
pub(crate) struct StaticRecord {
    /// Owner name, lowercase wire format.
    pub name: Box<[u8]>,
    pub rtype: u16,
    pub ttl: u32,
    pub rdata: Box<[u8]>,
}

/// A parsed zone file.
#[derive(Debug, Clone)]
pub(crate) struct StaticZone {
    pub path: PathBuf,
    /// Apex, lowercase wire format.
    pub apex: Box<[u8]>,
    /// Every record, the SOA included.
    pub records: Vec<StaticRecord>,
}

impl StaticZone {
    /// The SOA record at the apex (checked to exist at load).
    pub(crate) fn soa(&self) -> &StaticRecord {
        self.records
            .iter()
            .find(|r| r.rtype == SOA && r.name == self.apex)
            .expect("a loaded zone has an SOA at its apex")
    }
}

/// Encodes RDATA alone with uncompressed names, so the bytes stand on their own anywhere.
pub(crate) fn encode_rdata(rdata: &RData) -> Result<Box<[u8]>, String> {
    let mut buf = Vec::with_capacity(32);
    let mut enc = BinEncoder::new(&mut buf);
    enc.set_name_encoding(NameEncoding::Uncompressed);
    rdata.emit(&mut enc).map_err(|e| e.to_string())?;
    Ok(buf.into_boxed_slice())
}

/// Parses one zone file.
pub(crate) fn load_file(path: &Path) -> Result<StaticZone, ZoneError> {
    let err = |message: String| ZoneError {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| err("file name is not UTF-8".into()))?;
    let origin = Name::from_ascii(format!("{stem}.")).ok();
    let (apex_name, sets) = Parser::new(text, Some(path.to_path_buf()), origin)
        .parse()
        .map_err(|e| err(e.to_string()))?;
    let apex = names::from_dotted(&apex_name.to_lowercase().to_ascii())
        .ok_or_else(|| err(format!("origin {apex_name} is not a valid name")))?;
    if apex.len() == 1 {
        return Err(err("a zone for the root is not served".into()));
    }
    let mut records = Vec::new();
    for set in sets.values() {
        for r in set.records_without_rrsigs() {
            let name = names::from_dotted(&r.name.to_lowercase().to_ascii())
                .ok_or_else(|| err(format!("owner {} is not a valid name", r.name)))?;
            if !names::is_within(&name, &apex) {
                return Err(err(format!(
                    "record {} {} lies outside the zone {}",
                    r.name,
                    r.record_type(),
                    apex_name
                )));
            }
            let rdata = encode_rdata(&r.data)
                .map_err(|e| err(format!("{} {}: {e}", r.name, r.record_type())))?;
            records.push(StaticRecord {
                name,
                rtype: u16::from(r.record_type()),
                ttl: r.ttl,
                rdata,
            });
        }
    }
    let soas = records
        .iter()
        .filter(|r| r.rtype == SOA)
        .collect::<Vec<_>>();
    if soas.len() != 1 || soas[0].name != apex {
        return Err(err(format!(
            "needs exactly one SOA, at the apex {apex_name}"
        )));
    }
    Ok(StaticZone {
        path: path.to_path_buf(),
        apex,
        records,
    })
}

/// Loads every `*.zone` file of `dir`, sorted by name. A missing folder holds no zones; two
/// files for one apex are an error.
pub(crate) fn load_dir(dir: &Path) -> Result<Vec<StaticZone>, ZoneError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(ZoneError {
                path: dir.to_path_buf(),
                message: e.to_string(),
            });
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "zone"))
        .collect();
    paths.sort();
    let mut zones: Vec<StaticZone> = Vec::new();
    for p in paths {
        let z = load_file(&p)?;
        if let Some(other) = zones.iter().find(|o| o.apex == z.apex) {
            return Err(ZoneError {
                path: p,
                message: format!(
                    "zone {} is already served from {}",
                    names::to_dotted(&z.apex),
                    other.path.display()
                ),
            });
        }
        zones.push(z);
    }
    Ok(zones)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZONE: &str = "$ORIGIN example.test.\n$TTL 300\n\
        @ IN SOA ns1.example.test. hostmaster.example.test. 1 3600 600 86400 60\n\
        @ IN NS ns1\nns1 IN A 192.0.2.53\nwww IN A 192.0.2.80\ninfo 120 IN TXT \"hi\"\n";

    #[test]
    fn parses_a_master_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("example.test.zone"), ZONE).unwrap();
        std::fs::write(dir.path().join("README"), "not a zone").unwrap();
        let zones = load_dir(dir.path()).unwrap();
        assert_eq!(zones.len(), 1);
        let z = &zones[0];
        assert_eq!(names::to_dotted(&z.apex), "example.test.");
        assert_eq!(z.records.len(), 5);
        let soa = z.soa();
        assert_eq!(&soa.rdata[soa.rdata.len() - 4..], &60u32.to_be_bytes());
        let info = z.records.iter().find(|r| r.rtype == 16).unwrap();
        assert_eq!((info.ttl, &*info.rdata), (120, &b"\x02hi"[..]));
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.test.zone");
        std::fs::write(&p, "$TTL 60\nwww IN A 192.0.2.1\n").unwrap();
        let e = load_dir(dir.path()).unwrap_err();
        assert!(
            e.to_string().contains("bad.test.zone") && e.to_string().contains("SOA"),
            "{e}"
        );
        std::fs::write(&p, "@ IN SOA ns. h. 1 2 3 4 5\nwww IN BOGUS x\n").unwrap();
        assert!(load_dir(dir.path()).is_err());
    }
}
