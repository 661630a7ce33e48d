//! Mount options: one table for parsing config.json and for `features`.
//!
//! Every option is either in the table (a MS_* flag set or cleared, a propagation
//! change, a recursive mount attribute applied with mount_setattr(AT_RECURSIVE), or
//! one of runc's extensions) or filesystem data for the kernel. A bind mount has no
//! filesystem data, so an option berth does not know on a bind is an error, never
//! dropped (a bind with `rro` came out writable when it was).

use libc::{
    MS_BIND, MS_DIRSYNC, MS_MANDLOCK, MS_NOATIME, MS_NODEV, MS_NODIRATIME, MS_NOEXEC, MS_NOSUID,
    MS_PRIVATE, MS_RDONLY, MS_REC, MS_RELATIME, MS_REMOUNT, MS_SHARED, MS_SLAVE, MS_STRICTATIME,
    MS_SYNCHRONOUS, MS_UNBINDABLE,
};

use crate::sys::mountfd::{
    MOUNT_ATTR_NOATIME, MOUNT_ATTR_NODEV, MOUNT_ATTR_NODIRATIME, MOUNT_ATTR_NOEXEC,
    MOUNT_ATTR_NOSUID, MOUNT_ATTR_NOSYMFOLLOW, MOUNT_ATTR_RDONLY, MOUNT_ATTR_STRICTATIME,
    MOUNT_ATTR__ATIME,
};

/// MOUNT_ATTR_RELATIME is the atime field's zero value.
const MOUNT_ATTR_RELATIME: u64 = 0;

/// runc's extensions to the mount options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extension {
    /// tmpfs only: the rootfs's content at the destination is copied into the new tmpfs.
    TmpCopyUp,
    /// bind only: an idmapped mount with the mount's uidMappings/gidMappings, on the
    /// bind itself (`idmap`) or on every mount below it too (`ridmap`).
    Idmap { recursive: bool },
}

/// What an option does to the mount call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionEffect {
    /// Set these MS_* flags.
    Set(u64),
    /// Clear these MS_* flags.
    Clear(u64),
    /// A propagation change applied after the mount.
    Propagation(u64),
    /// A mount attribute set on the mount and every mount below it (MOUNT_ATTR_*).
    RecursiveSet(u64),
    /// A mount attribute cleared on the mount and every mount below it.
    RecursiveClear(u64),
    Extension(Extension),
}

/// (name, effect). Anything not in this table is filesystem data (refused on binds).
pub const MOUNT_OPTIONS: &[(&str, OptionEffect)] = &[
    ("async", OptionEffect::Clear(MS_SYNCHRONOUS)),
    ("atime", OptionEffect::Clear(MS_NOATIME)),
    ("bind", OptionEffect::Set(MS_BIND)),
    ("defaults", OptionEffect::Set(0)),
    ("dev", OptionEffect::Clear(MS_NODEV)),
    ("diratime", OptionEffect::Clear(MS_NODIRATIME)),
    ("dirsync", OptionEffect::Set(MS_DIRSYNC)),
    ("exec", OptionEffect::Clear(MS_NOEXEC)),
    ("mand", OptionEffect::Set(MS_MANDLOCK)),
    ("noatime", OptionEffect::Set(MS_NOATIME)),
    ("nodev", OptionEffect::Set(MS_NODEV)),
    ("nodiratime", OptionEffect::Set(MS_NODIRATIME)),
    ("noexec", OptionEffect::Set(MS_NOEXEC)),
    ("nomand", OptionEffect::Clear(MS_MANDLOCK)),
    ("norelatime", OptionEffect::Clear(MS_RELATIME)),
    ("nostrictatime", OptionEffect::Clear(MS_STRICTATIME)),
    ("nosuid", OptionEffect::Set(MS_NOSUID)),
    ("rbind", OptionEffect::Set(MS_BIND | MS_REC)),
    ("relatime", OptionEffect::Set(MS_RELATIME)),
    ("remount", OptionEffect::Set(MS_REMOUNT)),
    ("ro", OptionEffect::Set(MS_RDONLY)),
    ("rw", OptionEffect::Clear(MS_RDONLY)),
    ("strictatime", OptionEffect::Set(MS_STRICTATIME)),
    ("suid", OptionEffect::Clear(MS_NOSUID)),
    ("sync", OptionEffect::Set(MS_SYNCHRONOUS)),
    ("private", OptionEffect::Propagation(MS_PRIVATE)),
    ("rprivate", OptionEffect::Propagation(MS_PRIVATE | MS_REC)),
    ("shared", OptionEffect::Propagation(MS_SHARED)),
    ("rshared", OptionEffect::Propagation(MS_SHARED | MS_REC)),
    ("slave", OptionEffect::Propagation(MS_SLAVE)),
    ("rslave", OptionEffect::Propagation(MS_SLAVE | MS_REC)),
    ("unbindable", OptionEffect::Propagation(MS_UNBINDABLE)),
    (
        "runbindable",
        OptionEffect::Propagation(MS_UNBINDABLE | MS_REC),
    ),
    ("rro", OptionEffect::RecursiveSet(MOUNT_ATTR_RDONLY)),
    ("rrw", OptionEffect::RecursiveClear(MOUNT_ATTR_RDONLY)),
    ("rnosuid", OptionEffect::RecursiveSet(MOUNT_ATTR_NOSUID)),
    ("rsuid", OptionEffect::RecursiveClear(MOUNT_ATTR_NOSUID)),
    ("rnodev", OptionEffect::RecursiveSet(MOUNT_ATTR_NODEV)),
    ("rdev", OptionEffect::RecursiveClear(MOUNT_ATTR_NODEV)),
    ("rnoexec", OptionEffect::RecursiveSet(MOUNT_ATTR_NOEXEC)),
    ("rexec", OptionEffect::RecursiveClear(MOUNT_ATTR_NOEXEC)),
    (
        "rnodiratime",
        OptionEffect::RecursiveSet(MOUNT_ATTR_NODIRATIME),
    ),
    (
        "rdiratime",
        OptionEffect::RecursiveClear(MOUNT_ATTR_NODIRATIME),
    ),
    ("rrelatime", OptionEffect::RecursiveSet(MOUNT_ATTR_RELATIME)),
    (
        "rnorelatime",
        OptionEffect::RecursiveClear(MOUNT_ATTR_RELATIME),
    ),
    ("rnoatime", OptionEffect::RecursiveSet(MOUNT_ATTR_NOATIME)),
    ("ratime", OptionEffect::RecursiveClear(MOUNT_ATTR_NOATIME)),
    (
        "rstrictatime",
        OptionEffect::RecursiveSet(MOUNT_ATTR_STRICTATIME),
    ),
    (
        "rnostrictatime",
        OptionEffect::RecursiveClear(MOUNT_ATTR_STRICTATIME),
    ),
    (
        "rnosymfollow",
        OptionEffect::RecursiveSet(MOUNT_ATTR_NOSYMFOLLOW),
    ),
    (
        "rsymfollow",
        OptionEffect::RecursiveClear(MOUNT_ATTR_NOSYMFOLLOW),
    ),
    ("tmpcopyup", OptionEffect::Extension(Extension::TmpCopyUp)),
    (
        "idmap",
        OptionEffect::Extension(Extension::Idmap { recursive: false }),
    ),
    (
        "ridmap",
        OptionEffect::Extension(Extension::Idmap { recursive: true }),
    ),
];

/// Looks an option up in the table.
pub fn lookup(name: &str) -> Option<OptionEffect> {
    MOUNT_OPTIONS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, e)| *e)
}

/// Parsed options: flags, propagation changes, recursive attributes, extensions and
/// filesystem data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedOptions {
    pub flags: u64,
    pub propagation: Vec<u64>,
    /// MOUNT_ATTR_* to set and to clear on the whole tree (mount_setattr AT_RECURSIVE).
    pub rec_set: u64,
    pub rec_clear: u64,
    pub extensions: Vec<Extension>,
    pub data: Vec<String>,
}

/// Parses a mount's options in order; later options override earlier ones. As in runc,
/// an atime attribute also clears the whole atime field, so the one given wins.
pub fn parse(options: &[String]) -> ParsedOptions {
    let mut p = ParsedOptions::default();
    for o in options {
        match lookup(o) {
            Some(OptionEffect::Set(f)) => p.flags |= f,
            Some(OptionEffect::Clear(f)) => p.flags &= !f,
            Some(OptionEffect::Propagation(f)) => p.propagation.push(f),
            // The atime attributes are modes of one field: each replaces the others
            // (relatime is the zero mode), and the whole field is cleared first.
            Some(OptionEffect::RecursiveSet(a)) if is_atime(a) => {
                p.rec_set = (p.rec_set & !MOUNT_ATTR__ATIME) | a;
                p.rec_clear |= MOUNT_ATTR__ATIME;
            }
            Some(OptionEffect::RecursiveClear(a)) if is_atime(a) => {
                p.rec_set &= !a;
                p.rec_clear |= MOUNT_ATTR__ATIME;
            }
            Some(OptionEffect::RecursiveSet(a)) => {
                p.rec_set |= a;
                p.rec_clear &= !a;
            }
            Some(OptionEffect::RecursiveClear(a)) => {
                p.rec_clear |= a;
                p.rec_set &= !a;
            }
            Some(OptionEffect::Extension(e)) => {
                if !p.extensions.contains(&e) {
                    p.extensions.push(e);
                }
            }
            None => p.data.push(o.clone()),
        }
    }
    p
}

fn is_atime(attr: u64) -> bool {
    attr & MOUNT_ATTR__ATIME == attr
}

/// rootfsPropagation values.
pub fn rootfs_propagation(value: &str) -> Option<u64> {
    match value {
        "shared" => Some(MS_SHARED),
        "rshared" => Some(MS_SHARED | MS_REC),
        "slave" => Some(MS_SLAVE),
        "rslave" => Some(MS_SLAVE | MS_REC),
        "private" => Some(MS_PRIVATE),
        "rprivate" => Some(MS_PRIVATE | MS_REC),
        "unbindable" => Some(MS_UNBINDABLE),
        "runbindable" => Some(MS_UNBINDABLE | MS_REC),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn flags_data_and_propagation() {
        let p = parse(&s(&["nosuid", "ro", "mode=755", "rbind", "rslave", "rw"]));
        assert_eq!(p.flags, MS_NOSUID | MS_BIND | MS_REC);
        assert_eq!(p.propagation, vec![MS_SLAVE | MS_REC]);
        assert_eq!(p.data, vec!["mode=755".to_string()]);
    }

    #[test]
    fn recursive_attributes_and_extensions() {
        let p = parse(&s(&[
            "rbind",
            "rro",
            "rnosuid",
            "rnoatime",
            "tmpcopyup",
            "ridmap",
        ]));
        assert_eq!(
            p.rec_set,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOATIME
        );
        assert_eq!(p.rec_clear, MOUNT_ATTR__ATIME);
        assert_eq!(
            p.extensions,
            vec![Extension::TmpCopyUp, Extension::Idmap { recursive: true }]
        );
        assert!(p.data.is_empty());
        // The last one wins; rrelatime only clears the atime field.
        let p = parse(&s(&["rro", "rrw", "rnoatime", "rrelatime"]));
        assert_eq!(p.rec_set, 0);
        assert_eq!(p.rec_clear, MOUNT_ATTR_RDONLY | MOUNT_ATTR__ATIME);
    }

    #[test]
    fn every_name_is_listed_once() {
        let mut names: Vec<&str> = MOUNT_OPTIONS.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(n, names.len());
    }
}
