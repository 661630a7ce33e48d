//! A file-by-file description of a directory tree, to compare two unpacks of one image.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// What one path is: everything an unpack must reproduce except timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    /// Permission bits including setuid, setgid and sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Size of a regular file.
    pub size: Option<u64>,
    /// sha256 of a regular file's content.
    pub sha256: Option<String>,
    /// Target of a symlink.
    pub target: Option<PathBuf>,
    /// Device number of a character or block device.
    pub rdev: Option<u64>,
    /// Extended attributes an image can carry (`user.*`, `security.capability`).
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// A tree: relative path (the root is `""`) to node, plus the groups of hard-linked paths.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tree {
    pub nodes: BTreeMap<PathBuf, Node>,
    pub hardlinks: BTreeSet<BTreeSet<PathBuf>>,
}

/// Describes every path under `root` (symlinks are not followed).
pub fn snapshot(root: &Path) -> Tree {
    let mut tree = Tree::default();
    let mut by_inode: BTreeMap<(u64, u64), BTreeSet<PathBuf>> = BTreeMap::new();
    walk(root, Path::new(""), &mut |rel, abs, meta| {
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "socket"
        };
        let mut node = Node {
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            size: None,
            sha256: None,
            target: None,
            rdev: None,
            xattrs: image_xattrs(abs),
        };
        if ft.is_file() {
            node.size = Some(meta.len());
            node.sha256 = Some(hash_file(abs));
            if meta.nlink() > 1 {
                by_inode
                    .entry((meta.dev(), meta.ino()))
                    .or_default()
                    .insert(rel.to_path_buf());
            }
        } else if ft.is_symlink() {
            // A symlink's own mode is always 0777 on Linux and meaningless.
            node.mode = 0;
            node.target = Some(fs::read_link(abs).expect("readlink"));
        } else if ft.is_char_device() || ft.is_block_device() {
            node.rdev = Some(meta.rdev());
        }
        tree.nodes.insert(rel.to_path_buf(), node);
        true
    });
    tree.hardlinks = by_inode.into_values().filter(|g| g.len() > 1).collect();
    tree
}

/// The differences between `expected` and `actual`, one readable line each.
pub fn diff(expected: &Tree, actual: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    for (path, want) in &expected.nodes {
        match actual.nodes.get(path) {
            None => out.push(format!("missing: /{} ({want:?})", path.display())),
            Some(got) if got != want => out.push(format!(
                "differs: /{}\n    expected {want:?}\n    actual   {got:?}",
                path.display()
            )),
            Some(_) => {}
        }
    }
    for (path, got) in &actual.nodes {
        if !expected.nodes.contains_key(path) {
            out.push(format!("unexpected: /{} ({got:?})", path.display()));
        }
    }
    if expected.hardlinks != actual.hardlinks {
        out.push(format!(
            "hard links differ: expected {:?}, actual {:?}",
            expected.hardlinks, actual.hardlinks
        ));
    }
    out
}

/// The `user.*` and `security.capability` xattrs of `path` (not following a symlink).
/// Other namespaces are left out: `trusted.*` and `security.selinux` describe the host.
pub fn image_xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let mut out = BTreeMap::new();
    let c_path = CString::new(path.as_os_str().as_bytes()).expect("path without NUL");
    let mut names = vec![0u8; 64 * 1024];
    // SAFETY: c_path is a NUL-terminated string and names a writable buffer of the length
    // passed; the kernel writes at most that many bytes.
    let len = unsafe { libc::llistxattr(c_path.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if len <= 0 {
        return out;
    }
    names.truncate(len as usize);
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let text = String::from_utf8_lossy(name).into_owned();
        if !(text.starts_with("user.") || text == "security.capability") {
            continue;
        }
        let c_name = CString::new(name).expect("xattr name without NUL");
        let mut value = vec![0u8; 64 * 1024];
        // SAFETY: both strings are NUL-terminated and value is a writable buffer of the
        // length passed.
        let n = unsafe {
            libc::lgetxattr(
                c_path.as_ptr(),
                c_name.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if n >= 0 {
            value.truncate(n as usize);
            out.insert(text, value);
        }
    }
    out
}

/// sha256 of a file's content, hex.
pub fn hash_file(path: &Path) -> String {
    let mut file = fs::File::open(path)
        .unwrap_or_else(|e| panic!("cannot open {} to hash it: {e}", path.display()));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).expect("read file to hash");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hex::encode(hasher.finalize())
}

/// Total bytes of regular files under `root`, not entering other filesystems.
pub fn bytes_under(root: &Path) -> u64 {
    let mut total = 0;
    walk(root, Path::new(""), &mut |_, _, meta| {
        if meta.is_file() {
            total += meta.len();
        }
        true
    });
    total
}

/// Every path under `root` whose file name is `name`, not entering other filesystems.
pub fn find_named(root: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    walk(root, Path::new(""), &mut |_, abs, _| {
        if abs.file_name().is_some_and(|n| n == name) {
            found.push(abs.to_path_buf());
        }
        true
    });
    found
}

/// Depth-first walk calling `visit(relative, absolute, lstat)` for `root` and everything
/// below it on the same filesystem. Entries vanishing mid-walk are skipped.
fn walk(root: &Path, rel: &Path, visit: &mut dyn FnMut(&Path, &Path, &fs::Metadata) -> bool) {
    let Ok(root_meta) = fs::symlink_metadata(root) else {
        return;
    };
    let dev = root_meta.dev();
    let mut stack = vec![(rel.to_path_buf(), root.to_path_buf(), root_meta)];
    while let Some((rel, abs, meta)) = stack.pop() {
        if !visit(&rel, &abs, &meta) || !meta.is_dir() || meta.dev() != dev {
            continue;
        }
        let Ok(entries) = fs::read_dir(&abs) else {
            continue;
        };
        for entry in entries.flatten() {
            let child_abs = entry.path();
            let Ok(child_meta) = fs::symlink_metadata(&child_abs) else {
                continue;
            };
            stack.push((rel.join(entry.file_name()), child_abs, child_meta));
        }
    }
}

/// sha256 (hex) of `len` zero bytes.
pub fn hash_file_of_zeros(len: u64) -> String {
    let mut hasher = Sha256::new();
    let block = vec![0u8; 1 << 16];
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len() as u64);
        hasher.update(&block[..n as usize]);
        left -= n;
    }
    hex::encode(hasher.finalize())
}
