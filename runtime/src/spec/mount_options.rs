//! Mount options: one table for parsing config.json and for `features`.

use libc::{
    MS_BIND, MS_DIRSYNC, MS_MANDLOCK, MS_NOATIME, MS_NODEV, MS_NODIRATIME, MS_NOEXEC, MS_NOSUID,
    MS_PRIVATE, MS_RDONLY, MS_REC, MS_RELATIME, MS_REMOUNT, MS_SHARED, MS_SLAVE, MS_STRICTATIME,
    MS_SYNCHRONOUS, MS_UNBINDABLE,
};

/// What an option does to the mount call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionEffect {
    /// Set these MS_* flags.
    Set(u64),
    /// Clear these MS_* flags.
    Clear(u64),
    /// A propagation change applied after the mount.
    Propagation(u64),
}

/// (name, effect). Anything not in this table is passed to the filesystem as data.
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
];

/// Looks an option up in the table.
pub fn lookup(name: &str) -> Option<OptionEffect> {
    MOUNT_OPTIONS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, e)| *e)
}

/// Parsed options: flags, propagation changes and filesystem data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedOptions {
    pub flags: u64,
    pub propagation: Vec<u64>,
    pub data: Vec<String>,
}

/// Parses a mount's options in order; later options override earlier ones.
pub fn parse(options: &[String]) -> ParsedOptions {
    let mut p = ParsedOptions::default();
    for o in options {
        match lookup(o) {
            Some(OptionEffect::Set(f)) => p.flags |= f,
            Some(OptionEffect::Clear(f)) => p.flags &= !f,
            Some(OptionEffect::Propagation(f)) => p.propagation.push(f),
            None => p.data.push(o.clone()),
        }
    }
    p
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
}
