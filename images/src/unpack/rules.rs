//! The OCI image-spec layer rules, one table row each: layers in, the tree
//! that must come out. Every row is checked three ways: applied in flatten
//! mode onto one root; unpacked in overlay form, one directory per layer
//! (each seeing the layers below for parent symlinks, as import does), then
//! merged as `image unpack` merges them; and, as root, those same layer
//! directories mounted as a real overlayfs, as `image run` mounts them.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::*;

/// Layer entries: `d:path`, `f:path=content`, `l:path>target`, `h:path>target`.
fn layer(entries: &[&str]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let (kind, rest) = e.split_at(2);
        let mut h = tar::Header::new_gnu();
        let (name, data, link) = match kind {
            "f:" => {
                let (n, c) = rest.split_once('=').unwrap_or((rest, ""));
                (n, c, "")
            }
            "l:" | "h:" => {
                let (n, t) = rest.split_once('>').unwrap();
                (n, "", t)
            }
            _ => (rest, "", ""),
        };
        h.set_entry_type(match kind {
            "d:" => tar::EntryType::Directory,
            "l:" => tar::EntryType::Symlink,
            "h:" => tar::EntryType::Link,
            _ => tar::EntryType::Regular,
        });
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_mode(if kind == "d:" { 0o755 } else { 0o644 });
        h.set_size(data.len() as u64);
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        b.append(&h, data.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}

/// A tree: path -> `dir`, `file:content` or `link:target` (whiteout
/// devices and the layers' own metadata left out).
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<String, String>) {
        for e in fs::read_dir(root.join(rel)).unwrap() {
            let e = e.unwrap();
            let r = rel.join(e.file_name());
            let t = e.file_type().unwrap();
            let key = r.to_string_lossy().into_owned();
            if t.is_dir() {
                out.insert(key, "dir".into());
                walk(root, &r, out);
            } else if t.is_symlink() {
                let target = fs::read_link(root.join(&r)).unwrap();
                out.insert(key, format!("link:{}", target.display()));
            } else if t.is_char_device() {
                out.insert(key, "whiteout?".into());
            } else {
                let c = fs::read_to_string(root.join(&r)).unwrap();
                out.insert(key, format!("file:{c}"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, Path::new(""), &mut out);
    out
}

fn expect(entries: &[&str]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|e| {
            let (k, v) = e.split_once(' ').unwrap_or((e, "dir"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// Unpacks `layers` in overlay form into `base/l<i>`, each seeing those below.
fn overlay_layers(base: &Path, layers: &[Vec<u8>]) -> Result<Vec<PathBuf>, UnpackError> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let d = base.join(format!("l{i}"));
        fs::create_dir(&d).unwrap();
        let mut below: Vec<PathBuf> = dirs.iter().rev().cloned().collect();
        if let Some(k) = below.iter().position(|p| crate::flatten::root_is_opaque(p)) {
            below.truncate(k + 1);
        }
        let lower = LowerDirs::open(&below).unwrap();
        let o = UnpackOptions::new(WhiteoutMode::Overlay);
        unpack_layer_over(&l[..], &d, &o, None, Some(&lower))?;
        dirs.push(d);
    }
    Ok(dirs)
}

fn check(rule: &str, layers: &[Vec<u8>], want: Result<BTreeMap<String, String>, &str>) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the layer rule table needs root (overlay whiteouts are device nodes and trusted xattrs)"
    );
    let tmp = tempfile::tempdir().unwrap();
    // 1. Flatten mode, one root.
    let flat = tmp.path().join("flat");
    fs::create_dir(&flat).unwrap();
    let mut got = Ok(());
    for l in layers {
        got = unpack_layer(
            &l[..],
            &flat,
            &UnpackOptions::new(WhiteoutMode::Flatten),
            None,
        )
        .map(drop);
        if got.is_err() {
            break;
        }
    }
    match (&want, got) {
        (Ok(w), Ok(())) => assert_eq!(&tree(&flat), w, "{rule}: flatten mode"),
        (Err(entry), Err(e)) => assert!(e.to_string().contains(entry), "{rule}: flatten: {e}"),
        (w, g) => panic!("{rule}: flatten mode gave {g:?}, want {w:?}"),
    }
    // 2. Overlay form, merged.
    let dirs = match (overlay_layers(tmp.path(), layers), &want) {
        (Ok(d), Ok(_)) => d,
        (Err(e), Err(entry)) => {
            assert!(e.to_string().contains(entry), "{rule}: overlay: {e}");
            return;
        }
        (g, w) => panic!("{rule}: overlay form gave {:?}, want {w:?}", g.map(drop)),
    };
    let Ok(want) = want else { unreachable!() };
    let merged = tmp.path().join("merged");
    fs::create_dir(&merged).unwrap();
    crate::flatten::merge_layers(&dirs, &merged).unwrap();
    assert_eq!(tree(&merged), want, "{rule}: overlay form, merged");
    // 3. The same directories as a real overlay mount.
    let mut lowers: Vec<PathBuf> = dirs.iter().rev().cloned().collect();
    if let Some(k) = lowers
        .iter()
        .position(|p| crate::flatten::root_is_opaque(p))
    {
        lowers.truncate(k + 1);
    }
    let (upper, work, mnt) = (
        tmp.path().join("u"),
        tmp.path().join("w"),
        tmp.path().join("m"),
    );
    for d in [&upper, &work, &mnt] {
        fs::create_dir(d).unwrap();
    }
    let m = crate::snapshot::overlay_mount(&lowers, &upper, &work, &mnt).unwrap();
    m.perform().unwrap();
    let seen = tree(&mnt);
    crate::sys::unmount(&mnt).unwrap();
    assert_eq!(seen, want, "{rule}: overlay mount");
}

#[test]
fn oci_layer_rules() {
    let base = || layer(&["d:d/", "f:d/old=1", "d:d/sub/", "f:d/sub/deep=2", "f:f=old"]);
    type Rule = (
        &'static str,
        Vec<Vec<u8>>,
        Result<Vec<&'static str>, &'static str>,
    );
    let rules: Vec<Rule> = vec![
        (
            "a whiteout removes a lower file",
            vec![base(), layer(&["f:.wh.f"])],
            Ok(vec!["d", "d/old file:1", "d/sub", "d/sub/deep file:2"]),
        ),
        (
            "a whiteout removes a lower directory with everything in it",
            vec![base(), layer(&["f:.wh.d"])],
            Ok(vec!["f file:old"]),
        ),
        (
            "a file of the same layer before its whiteout stays",
            vec![base(), layer(&["f:f=new", "f:.wh.f"])],
            Ok(vec![
                "d",
                "d/old file:1",
                "d/sub",
                "d/sub/deep file:2",
                "f file:new",
            ]),
        ),
        (
            "a file of the same layer after its whiteout stays",
            vec![base(), layer(&["f:.wh.f", "f:f=new"])],
            Ok(vec![
                "d",
                "d/old file:1",
                "d/sub",
                "d/sub/deep file:2",
                "f file:new",
            ]),
        ),
        (
            "a whiteout then the directory again: only the new entries",
            vec![base(), layer(&["f:.wh.d", "d:d/", "f:d/new=3"])],
            Ok(vec!["d", "d/new file:3", "f file:old"]),
        ),
        (
            "a whiteout then an entry below it, without a directory entry",
            vec![base(), layer(&["f:.wh.d", "f:d/new=3"])],
            Ok(vec!["d", "d/new file:3", "f file:old"]),
        ),
        (
            "an entry below a directory, then the directory's whiteout",
            vec![base(), layer(&["f:d/new=3", "f:.wh.d"])],
            Ok(vec!["d", "d/new file:3", "f file:old"]),
        ),
        (
            "an opaque marker before the directory's entries",
            vec![base(), layer(&["f:d/.wh..wh..opq", "d:d/", "f:d/new=3"])],
            Ok(vec!["d", "d/new file:3", "f file:old"]),
        ),
        (
            "an opaque marker after the directory's entries",
            vec![base(), layer(&["d:d/", "f:d/new=3", "f:d/.wh..wh..opq"])],
            Ok(vec!["d", "d/new file:3", "f file:old"]),
        ),
        (
            "an opaque marker keeps this layer's nested entries only",
            vec![base(), layer(&["f:d/sub/new=4", "f:d/.wh..wh..opq"])],
            Ok(vec!["d", "d/sub", "d/sub/new file:4", "f file:old"]),
        ),
        (
            "an opaque marker at the root hides every lower layer",
            vec![base(), layer(&["f:.wh..wh..opq", "f:g=new"])],
            Ok(vec!["g file:new"]),
        ),
        (
            "whiteouts and markers of paths that exist nowhere change nothing",
            vec![
                layer(&["f:a=1"]),
                layer(&["f:.wh.nothing", "f:nothere/.wh.x", "f:gone/.wh..wh..opq"]),
            ],
            Ok(vec!["a file:1"]),
        ),
        (
            "a hard link to a path this layer whited out is refused",
            vec![base(), layer(&["f:.wh.f", "h:g>f"])],
            Err("`g`"),
        ),
        (
            "a hard link to a file of this layer",
            vec![base(), layer(&["f:x=5", "h:y>x"])],
            Ok(vec![
                "d",
                "d/old file:1",
                "d/sub",
                "d/sub/deep file:2",
                "f file:old",
                "x file:5",
                "y file:5",
            ]),
        ),
        (
            "a parent symlink of a lower layer is followed (usrmerge)",
            vec![
                layer(&["d:usr/", "d:usr/lib/", "f:usr/lib/a=1", "l:lib>usr/lib"]),
                layer(&["f:lib/x.so=2"]),
            ],
            Ok(vec![
                "lib link:usr/lib",
                "usr",
                "usr/lib",
                "usr/lib/a file:1",
                "usr/lib/x.so file:2",
            ]),
        ),
        (
            "an absolute parent symlink of a lower layer stays in the root",
            vec![
                layer(&["d:usr/", "d:usr/lib/", "l:lib>/usr/lib"]),
                layer(&["f:lib/x.so=2", "f:lib/.wh.gone"]),
            ],
            Ok(vec![
                "lib link:/usr/lib",
                "usr",
                "usr/lib",
                "usr/lib/x.so file:2",
            ]),
        ),
        (
            "a whiteout through a lower symlink removes the target's entry",
            vec![
                layer(&[
                    "d:usr/",
                    "d:usr/lib/",
                    "f:usr/lib/a=1",
                    "f:usr/lib/b=2",
                    "l:lib>usr/lib",
                ]),
                layer(&["f:lib/.wh.a"]),
            ],
            Ok(vec![
                "lib link:usr/lib",
                "usr",
                "usr/lib",
                "usr/lib/b file:2",
            ]),
        ),
        (
            "a directory entry replaces a lower symlink",
            vec![
                layer(&["d:usr/", "d:usr/lib/", "f:usr/lib/a=1", "l:lib>usr/lib"]),
                layer(&["d:lib/", "f:lib/x=2"]),
            ],
            Ok(vec![
                "lib",
                "lib/x file:2",
                "usr",
                "usr/lib",
                "usr/lib/a file:1",
            ]),
        ),
        (
            "a file replaces a lower directory",
            vec![base(), layer(&["f:d=file"])],
            Ok(vec!["d file:file", "f file:old"]),
        ),
        (
            "a directory replaces a lower file",
            vec![base(), layer(&["d:f/", "f:f/x=6"])],
            Ok(vec![
                "d",
                "d/old file:1",
                "d/sub",
                "d/sub/deep file:2",
                "f",
                "f/x file:6",
            ]),
        ),
        (
            "a parent that is a file below is refused",
            vec![base(), layer(&["f:f/x=6"])],
            Err("`f/x`"),
        ),
    ];
    let mut failed = Vec::new();
    for (rule, layers, want) in rules {
        let want = want.map(|w| expect(&w));
        if let Err(e) = std::panic::catch_unwind(|| check(rule, &layers, want)) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failed.push(format!("{rule}: {msg}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{} rules broken:\n{}",
        failed.len(),
        failed.join("\n")
    );
}
