//! Reading what the kernel shows: mountinfo, /proc/<pid>/status, and the leak scanner.

use std::fs;
use std::path::{Path, PathBuf};

use super::{Bundle, Runtime, CGROUP_PARENT};

/// Mount points in this process's /proc/self/mountinfo at or below `path`.
pub fn mounts_under(path: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|mp| PathBuf::from(unescape_mountinfo(mp)))
        .filter(|mp| mp.starts_with(path))
        .collect()
}

/// Decodes the octal escapes (`\040` for space) of a mountinfo field.
pub fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let octal = std::str::from_utf8(&bytes[i + 1..i + 4]).expect("ascii digits");
            out.push(u8::from_str_radix(octal, 8).expect("octal digits"));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Everything a container could leave behind, described; empty when clean.
/// `id` is the id given on the command line; the bundle gives the cgroup and paths.
pub fn leftovers(rt: &Runtime, id: &str, bundle: &Bundle) -> Vec<String> {
    let mut found = Vec::new();
    if !id.is_empty() && !id.contains('/') && id != "." && id != ".." && rt.root.join(id).exists() {
        found.push(format!("state directory {}", rt.root.join(id).display()));
    }
    if let Ok(controllers) = fs::read_dir("/sys/fs/cgroup") {
        for entry in controllers.flatten() {
            let dir = entry.path().join(CGROUP_PARENT).join(&bundle.id);
            if dir.exists() {
                found.push(format!("cgroup {}", dir.display()));
            }
        }
    }
    for mp in mounts_under(bundle.path()) {
        found.push(format!("mount {}", mp.display()));
    }
    let cgroup = format!("/{CGROUP_PARENT}/{}", bundle.id);
    if let Ok(procs) = fs::read_dir("/proc") {
        for entry in procs.flatten() {
            let pid = entry.file_name();
            let Some(pid) = pid
                .to_str()
                .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            let in_cgroup = fs::read_to_string(entry.path().join("cgroup"))
                .map(|c| c.lines().any(|l| l.ends_with(&cgroup)))
                .unwrap_or(false);
            let rooted = fs::read_link(entry.path().join("root"))
                .is_ok_and(|r| r.starts_with(bundle.path()));
            if in_cgroup || rooted {
                let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                found.push(format!("process {pid} ({cmdline})"));
            }
        }
    }
    found
}

/// Panics listing the leftovers of `id` / `bundle`, if any.
#[track_caller]
pub fn assert_no_leftovers(rt: &Runtime, id: &str, bundle: &Bundle) {
    let found = leftovers(rt, id, bundle);
    assert!(
        found.is_empty(),
        "container {id:?} left things behind: {found:#?}"
    );
}

/// Fields of one /proc/self/mountinfo line.
#[derive(Debug, Clone, PartialEq)]
pub struct MountEntry {
    /// The filesystem's device (major:minor): one superblock, one value.
    pub dev: String,
    pub root: String,
    pub mount_point: String,
    pub options: Vec<String>,
    pub fs_type: String,
    pub source: String,
    pub super_options: Vec<String>,
}

/// Parses mountinfo text (as printed by `cat /proc/self/mountinfo` in a container).
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    let mut entries = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if fields.len() < sep + 4 || sep < 6 {
            continue;
        }
        entries.push(MountEntry {
            dev: fields[2].to_string(),
            root: unescape_mountinfo(fields[3]),
            mount_point: unescape_mountinfo(fields[4]),
            options: fields[5].split(',').map(String::from).collect(),
            fs_type: fields[sep + 1].to_string(),
            source: unescape_mountinfo(fields[sep + 2]),
            super_options: fields[sep + 3].split(',').map(String::from).collect(),
        });
    }
    entries
}

/// Parses `/proc/<pid>/status` text into `Key -> value` (value trimmed).
pub fn parse_status(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// A cgroup (or other small) file's content, trimmed; panics naming the file.
pub fn read_trim(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// The output of [`Bundle::only_listed_devices`]'s script: /dev/mem denied (by `by`),
/// the default /dev/null and the listed c 10:200 usable.
#[track_caller]
pub fn assert_only_listed_devices(out: &str, by: &str) {
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines
            .first()
            .is_some_and(|l| l.contains("Operation not permitted")),
        "/dev/mem (1:1) is denied by {by}: {out}"
    );
    assert_eq!(lines[1], "mem-done", "{out}");
    assert!(
        lines[2].contains("Operation not permitted"),
        "the host console (5:1) is denied by {by}: {out}"
    );
    assert_eq!(lines[3..], ["console-done", "null2-ok", "tun-ok"], "{out}");
}

/// Mounts the test made on the host, detached again on drop (also when the test fails).
#[derive(Default)]
pub struct HostMounts(Vec<std::path::PathBuf>);

impl HostMounts {
    pub fn mount(
        &mut self,
        source: Option<&str>,
        target: &std::path::Path,
        fstype: Option<&str>,
        flags: nix::mount::MsFlags,
    ) {
        nix::mount::mount(source, target, fstype, flags, None::<&str>)
            .unwrap_or_else(|e| panic!("mount on {}: {e}", target.display()));
        if !flags.intersects(nix::mount::MsFlags::MS_SHARED | nix::mount::MsFlags::MS_PRIVATE) {
            self.0.push(target.to_path_buf());
        }
    }
}

impl Drop for HostMounts {
    fn drop(&mut self) {
        for target in self.0.iter().rev() {
            let _ = nix::mount::umount2(target.as_path(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}
