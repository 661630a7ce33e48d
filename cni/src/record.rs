//! The on-disk record of every attachment, so that every ADD gets a DEL, also after a
//! crash. A record is written (and fsynced) before the first plugin of an ADD runs, holds
//! the config ADD used and, once ADD is done, its result; it is removed only after a DEL
//! of the whole chain succeeded.
//!
//! Durability: the first write of a record is fsynced (file and directory) before ADD's
//! first plugin runs, so it survives a power loss that keeps anything the plugins wrote
//! to disk (host-local's leases). Later updates (the ADD result) and the removal after DEL
//! are not fsynced: a process crash loses nothing (the page cache stays), and after a
//! power loss the record is at worst older (a DEL without `prevResult`, which the plugins
//! accept) or back after its DEL (DEL runs again, and DEL is idempotent). That keeps an
//! ADD at two fsyncs and a DEL at none.
//!
//! Layout: `DIR/<network>/<container-id>@<ifname>.json`, written through a temp name and a
//! rename. Network names, container ids and interface names are checked before they are
//! used as file names (letters, digits, `_`, `.`, `-`; no leading dot), so none can leave
//! the directory and `@` cannot occur in them.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{clean, Error};
use crate::plan::Attachment;

/// What is kept of one attachment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub network: String,
    pub attachment: Attachment,
    /// The network's config as ADD used it (a `.conflist` document).
    pub config: Value,
    /// The last result ADD got: the chain's final one once `complete`, else the last
    /// plugin's that succeeded (given to DEL as `prevResult`).
    #[serde(default)]
    pub result: Option<Value>,
    /// Whether the whole ADD chain succeeded and its result was returned.
    #[serde(default)]
    pub complete: bool,
}

/// Identifies an attachment: one interface of one container on one network.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttachmentKey {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
}

impl Record {
    pub fn key(&self) -> AttachmentKey {
        AttachmentKey {
            network: self.network.clone(),
            container_id: self.attachment.container_id.clone(),
            ifname: self.attachment.ifname.clone(),
        }
    }
}

/// The records under one directory.
#[derive(Debug, Clone)]
pub struct RecordStore {
    dir: PathBuf,
}

/// Records are small; a bigger file is not one of ours.
const MAX_RECORD_BYTES: u64 = 4 << 20;

impl RecordStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RecordStore { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, key: &AttachmentKey) -> PathBuf {
        self.dir
            .join(&key.network)
            .join(format!("{}@{}.json", key.container_id, key.ifname))
    }

    /// Writes the record through a temp file and a rename; `durable`: with the file and its
    /// directory fsynced (see the module doc for when that is needed).
    pub fn write(&self, rec: &Record, durable: bool) -> Result<(), Error> {
        let path = self.path(&rec.key());
        let dir = path.parent().unwrap_or(&self.dir).to_path_buf();
        let err = |step: &'static str, p: &Path| {
            let p = p.to_path_buf();
            move |source| Error::Record {
                path: p,
                step,
                source,
            }
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(err("create directory", &dir))?;
        let tmp = dir.join(format!(".{}.tmp", file_name(&path)));
        let bytes = serde_json::to_vec_pretty(rec).map_err(|e| Error::BadRecord {
            path: path.clone(),
            reason: format!("serialize: {e}"),
        })?;
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err("create", &tmp))?;
        f.write_all(&bytes).map_err(err("write", &tmp))?;
        if durable {
            f.sync_all().map_err(err("fsync", &tmp))?;
        }
        fs::rename(&tmp, &path).map_err(err("rename into place", &path))?;
        if durable {
            sync_dir(&dir)?;
        }
        Ok(())
    }

    /// The record for `key`, if there is one.
    pub fn read(&self, key: &AttachmentKey) -> Result<Option<Record>, Error> {
        read_record(&self.path(key))
    }

    /// Removes the record (after its DEL succeeded; not fsynced). A missing record is fine.
    pub fn remove(&self, key: &AttachmentKey) -> Result<(), Error> {
        let path = self.path(key);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(Error::Record {
                    path,
                    step: "remove",
                    source,
                })
            }
        }
        let dir = path.parent().unwrap_or(&self.dir);
        // An emptied network directory goes too; one still in use stays (ENOTEMPTY).
        let _ = fs::remove_dir(dir);
        Ok(())
    }

    /// Every record, plus the files that could not be read as records.
    pub fn list(&self) -> Result<(Vec<Record>, Vec<Error>), Error> {
        let mut records = Vec::new();
        let mut bad = Vec::new();
        let networks = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((records, bad)),
            Err(source) => {
                return Err(Error::Record {
                    path: self.dir.clone(),
                    step: "list",
                    source,
                })
            }
        };
        let mut files = Vec::new();
        for net in networks.flatten() {
            if let Ok(rd) = fs::read_dir(net.path()) {
                files.extend(rd.flatten().map(|e| e.path()).filter(|p| {
                    !file_name(p).starts_with('.') && p.extension().is_some_and(|e| e == "json")
                }));
            }
        }
        files.sort();
        for f in files {
            match read_record(&f) {
                Ok(Some(r)) => records.push(r),
                Ok(None) => {}
                Err(e) => bad.push(e),
            }
        }
        Ok((records, bad))
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read_record(path: &Path) -> Result<Option<Record>, Error> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Record {
                path: path.to_path_buf(),
                step: "open",
                source,
            })
        }
    };
    let mut bytes = Vec::new();
    use std::io::Read;
    f.take(MAX_RECORD_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|source| Error::Record {
            path: path.to_path_buf(),
            step: "read",
            source,
        })?;
    let rec: Record = serde_json::from_slice(&bytes).map_err(|e| Error::BadRecord {
        path: path.to_path_buf(),
        reason: clean(&e.to_string(), 200),
    })?;
    let expected = format!(
        "{}@{}.json",
        rec.attachment.container_id, rec.attachment.ifname
    );
    let in_network = path
        .parent()
        .map(file_name)
        .is_some_and(|n| n == rec.network);
    if file_name(path) != expected || !in_network {
        return Err(Error::BadRecord {
            path: path.to_path_buf(),
            reason: "its content names another attachment than its path".into(),
        });
    }
    Ok(Some(rec))
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| Error::Record {
            path: dir.to_path_buf(),
            step: "fsync directory",
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(cid: &str) -> Record {
        Record {
            network: "berth".into(),
            attachment: Attachment {
                container_id: cid.into(),
                netns: "/run/netns/x".into(),
                ifname: "eth0".into(),
                args: vec![],
                runtime_config: Default::default(),
            },
            config: serde_json::json!({"cniVersion":"1.0.0","name":"berth","plugins":[{"type":"bridge"}]}),
            result: None,
            complete: false,
        }
    }

    #[test]
    fn write_read_list_remove() {
        let d = tempfile::tempdir().unwrap();
        let store = RecordStore::new(d.path().join("att"));
        assert!(
            store.list().unwrap().0.is_empty(),
            "missing dir lists as empty"
        );
        let mut a = rec("a");
        store.write(&a, true).unwrap();
        store.write(&rec("b"), false).unwrap();
        a.result = Some(serde_json::json!({"cniVersion":"1.0.0"}));
        store.write(&a, false).unwrap();
        assert_eq!(store.read(&a.key()).unwrap(), Some(a.clone()));
        assert!(d.path().join("att/berth/a@eth0.json").is_file());
        let (all, bad) = store.list().unwrap();
        assert!(bad.is_empty());
        assert_eq!(
            all.iter()
                .map(|r| r.attachment.container_id.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        store.remove(&a.key()).unwrap();
        store.remove(&a.key()).unwrap();
        assert_eq!(store.read(&a.key()).unwrap(), None);
        store.remove(&rec("b").key()).unwrap();
        assert!(
            !d.path().join("att/berth").exists(),
            "empty network dir removed"
        );
    }

    #[test]
    fn corrupt_and_misplaced_records_are_reported_not_used() {
        let d = tempfile::tempdir().unwrap();
        let store = RecordStore::new(d.path());
        store.write(&rec("good"), true).unwrap();
        fs::write(d.path().join("berth/broken@eth0.json"), "{").unwrap();
        let moved = serde_json::to_vec(&rec("other")).unwrap();
        fs::write(d.path().join("berth/elsewhere@eth0.json"), moved).unwrap();
        fs::write(d.path().join("berth/.x@eth0.json.tmp"), "junk").unwrap();
        let (all, bad) = store.list().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(bad.len(), 2, "{bad:?}");
        let text: Vec<String> = bad.iter().map(|e| e.to_string()).collect();
        assert!(text[0].contains("broken@eth0.json"), "{text:?}");
        assert!(text[1].contains("names another attachment"), "{text:?}");
    }
}
