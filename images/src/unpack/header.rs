//! Reading one tar entry's header (and PAX records) into what to create,
//! as Go's archive/tar reads it (the library umoci, podman, containerd and
//! most image scanners use), so that berth never unpacks a tree other tools
//! would not see. Where the two readers would disagree and neither reading
//! is safe, the entry is refused with the reason:
//!
//! | ambiguity | here |
//! |---|---|
//! | a PAX record given twice (`size`, `path`, ...) | refused (Go takes the last, the `tar` crate the first) |
//! | a directory, link, device or FIFO with a non-zero size | refused (Go reads no data for them, the `tar` crate skips the size) |
//! | a GNU long name and a PAX `path` that differ | refused |
//! | type NUL (old regular file) named with a trailing `/` | a directory, as Go reads it |
//! | type `0` named with a trailing `/` | refused (no file can have that name) |
//! | PAX sparse files, formats 0.0, 0.1 and 1.0 | expanded to the real file, holes kept |
//! | PAX `uid`, `gid`, `mtime` | applied over the header's fields, as Go does |
//! | PAX global headers (`g`) | ignored, as containerd ignores them |

use std::collections::BTreeMap;
use std::io::Read;

use super::entry::{self, Meta, Node};
use super::sparse::{self, Sparse, SparseMap};
use super::{EntryAt, UnpackError};

/// Types that never carry data in Go's reader.
fn header_only(kind: tar::EntryType) -> bool {
    matches!(
        kind,
        tar::EntryType::Directory
            | tar::EntryType::Symlink
            | tar::EntryType::Link
            | tar::EntryType::Char
            | tar::EntryType::Block
            | tar::EntryType::Fifo
    )
}

/// What an entry is: skipped (a global header), or a name and what to make.
pub enum Described {
    Skip,
    Entry {
        name: Vec<u8>,
        node: Node,
        meta: Meta,
    },
}

/// PAX records, key and value, in order.
type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// The PAX records of an entry, in order, with duplicates refused.
fn pax_records<R: Read>(e: &mut tar::Entry<'_, R>, at: &EntryAt) -> Result<Records, UnpackError> {
    let hostile = |p: String| UnpackError::Hostile {
        at: at.clone(),
        problem: p,
    };
    let mut out: Records = Vec::new();
    let Some(exts) = e.pax_extensions().map_err(|source| UnpackError::Tar {
        at: Some(at.clone()),
        error: source,
    })?
    else {
        return Ok(out);
    };
    for ext in exts {
        let ext = ext.map_err(|source| UnpackError::Tar {
            at: Some(at.clone()),
            error: source,
        })?;
        let key = ext.key_bytes().to_vec();
        // Format 0.0 repeats these two by design.
        let repeatable = key == b"GNU.sparse.offset" || key == b"GNU.sparse.numbytes";
        if !repeatable && out.iter().any(|(k, _)| *k == key) {
            return Err(hostile(format!(
                "PAX record `{}` is given twice (tar readers disagree on which one counts)",
                entry::display(&key)
            )));
        }
        out.push((key, ext.value_bytes().to_vec()));
    }
    Ok(out)
}

fn pax<'a>(records: &'a [(Vec<u8>, Vec<u8>)], key: &[u8]) -> Option<&'a [u8]> {
    records
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_slice())
}

fn pax_u32(
    records: &[(Vec<u8>, Vec<u8>)],
    key: &[u8],
    at: &EntryAt,
) -> Result<Option<u32>, UnpackError> {
    let Some(v) = pax(records, key) else {
        return Ok(None);
    };
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .map(Some)
        .ok_or_else(|| UnpackError::Hostile {
            at: at.clone(),
            problem: format!(
                "PAX `{}` value `{}` is not a 32-bit number",
                entry::display(key),
                entry::display(v)
            ),
        })
}

/// The sparse description of an entry with GNU.sparse.* records, if any.
fn sparse_of(
    records: &[(Vec<u8>, Vec<u8>)],
    data_size: u64,
    at: &EntryAt,
) -> Result<Option<Sparse>, UnpackError> {
    if !records.iter().any(|(k, _)| k.starts_with(b"GNU.sparse.")) {
        return Ok(None);
    }
    let hostile = |p: String| UnpackError::Hostile {
        at: at.clone(),
        problem: p,
    };
    let number = |key: &[u8]| -> Result<Option<u64>, UnpackError> {
        pax(records, key)
            .map(|v| {
                std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| {
                        hostile(format!("PAX `{}` is not a number", entry::display(key)))
                    })
            })
            .transpose()
    };
    let major = number(b"GNU.sparse.major")?;
    let minor = number(b"GNU.sparse.minor")?;
    let (map, real) = match (major, minor) {
        (Some(1), Some(0)) => (SparseMap::InData, number(b"GNU.sparse.realsize")?),
        (Some(0), Some(1)) | (None, None) if pax(records, b"GNU.sparse.map").is_some() => {
            let m = sparse::parse_map_01(pax(records, b"GNU.sparse.map").unwrap_or_default())
                .map_err(hostile)?;
            (SparseMap::Given(m), number(b"GNU.sparse.size")?)
        }
        (Some(0), Some(0)) | (None, None) => {
            let m = sparse::pair_map_00(records).map_err(hostile)?;
            (SparseMap::Given(m), number(b"GNU.sparse.size")?)
        }
        (a, b) => {
            return Err(hostile(format!(
                "unknown GNU sparse format {}.{}",
                a.map_or("?".into(), |v| v.to_string()),
                b.map_or("?".into(), |v| v.to_string())
            )))
        }
    };
    let real_size = real.ok_or_else(|| hostile("sparse file without its real size".into()))?;
    Ok(Some(Sparse {
        real_size,
        map,
        data_size,
    }))
}

/// Reads an entry's header and PAX records into its name and what to make.
pub fn describe<R: Read>(
    e: &mut tar::Entry<'_, R>,
    at: &EntryAt,
) -> Result<Described, UnpackError> {
    let hostile = |p: String| UnpackError::Hostile {
        at: at.clone(),
        problem: p,
    };
    let tar_err = |source: std::io::Error| UnpackError::Tar {
        at: Some(at.clone()),
        error: source,
    };
    let h = e.header();
    let typeflag = h.as_bytes()[156];
    let mut et = h.entry_type();
    if et == tar::EntryType::XGlobalHeader {
        return Ok(Described::Skip);
    }
    let header_size = h.entry_size().map_err(tar_err)?;
    let mode = h.mode().map_err(tar_err)? & 0o7777;
    let uid =
        u32::try_from(h.uid().map_err(tar_err)?).map_err(|_| hostile("uid out of range".into()))?;
    let gid =
        u32::try_from(h.gid().map_err(tar_err)?).map_err(|_| hostile("gid out of range".into()))?;
    let mtime = i64::try_from(h.mtime().map_err(tar_err)?).unwrap_or(i64::MAX);
    let dev = if matches!(et, tar::EntryType::Char | tar::EntryType::Block) {
        (
            h.device_major().map_err(tar_err)?.unwrap_or(0),
            h.device_minor().map_err(tar_err)?.unwrap_or(0),
        )
    } else {
        (0, 0)
    };
    let records = pax_records(e, at)?;
    let mut name = e.path_bytes().into_owned();
    if let Some(p) = pax(&records, b"path") {
        if p != name.as_slice() {
            return Err(hostile(
                "a GNU long name and a PAX `path` name it differently".into(),
            ));
        }
    }
    if let Some(n) = pax(&records, b"GNU.sparse.name") {
        name = n.to_vec();
    }
    if typeflag == 0 && name.ends_with(b"/") {
        // Go's archive/tar: an old-style regular file named `dir/` is a directory.
        et = tar::EntryType::Directory;
    } else if et == tar::EntryType::Regular && name.ends_with(b"/") {
        return Err(hostile("a regular file's name ends in `/`".into()));
    }
    if header_only(et) && (header_size != 0 || pax(&records, b"size").is_some_and(|s| s != b"0")) {
        return Err(hostile(format!(
            "a {et:?} entry with a size of {header_size} bytes (tar readers disagree on whether data follows)"
        )));
    }
    let node = match et {
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            match sparse_of(&records, e.size(), at)? {
                Some(sp) => Node::Sparse(sp),
                None => Node::File,
            }
        }
        tar::EntryType::Directory => Node::Dir,
        tar::EntryType::Symlink => Node::Symlink(
            e.link_name_bytes()
                .ok_or_else(|| hostile("symlink without a target".into()))?
                .into_owned(),
        ),
        tar::EntryType::Link => {
            let target = e
                .link_name_bytes()
                .ok_or_else(|| hostile("hard link without a target".into()))?;
            let comps = entry::normalize(&target).map_err(|p| {
                hostile(format!(
                    "hard link target `{}`: {p}",
                    entry::display(&target)
                ))
            })?;
            Node::Hardlink(comps.into_iter().map(<[u8]>::to_vec).collect())
        }
        tar::EntryType::Char => Node::Char(dev.0, dev.1),
        tar::EntryType::Block => Node::Block(dev.0, dev.1),
        tar::EntryType::Fifo => Node::Fifo,
        other => {
            return Err(UnpackError::Unsupported {
                at: at.clone(),
                kind: format!("{other:?}"),
            })
        }
    };
    let mut meta = Meta {
        mode,
        uid: pax_u32(&records, b"uid", at)?.unwrap_or(uid),
        gid: pax_u32(&records, b"gid", at)?.unwrap_or(gid),
        mtime_sec: mtime,
        mtime_nsec: 0,
        xattrs: BTreeMap::new(),
    };
    for (key, value) in &records {
        if let Some(n) = key.strip_prefix(b"SCHILY.xattr.") {
            meta.xattrs.insert(n.to_vec(), value.clone());
        } else if key == b"mtime" {
            if let Some((s, n)) = entry::parse_pax_time(value) {
                meta.mtime_sec = s;
                meta.mtime_nsec = n;
            }
        }
    }
    Ok(Described::Entry { name, node, meta })
}
