//! Tar streams that readers disagree on (issue 16): each is read as Go's
//! archive/tar reads it, or refused naming the entry. Archives are written
//! block by block here, as no honest tool writes most of them.

use std::fs;
use std::os::unix::fs::MetadataExt;

use super::*;

/// Builds a raw tar stream.
#[derive(Default)]
struct Raw(Vec<u8>);

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body_len = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut n = body_len + 1;
    while n != body_len + n.to_string().len() {
        n = body_len + n.to_string().len();
    }
    let mut r = format!("{n} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

impl Raw {
    /// One header (typeflag byte, name, size field) and `data` (padded).
    fn entry(&mut self, typeflag: u8, name: &[u8], size: u64, data: &[u8]) -> &mut Self {
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(size);
        h.as_mut_bytes()[156] = typeflag;
        h.set_cksum();
        self.0.extend_from_slice(h.as_bytes());
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let body: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        self.entry(b'x', b"PaxHeaders/x", body.len() as u64, &body.clone())
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.entry(b'0', name.as_bytes(), data.len() as u64, data)
    }

    fn end(&mut self) -> Vec<u8> {
        self.0.extend(std::iter::repeat_n(0u8, 1024));
        std::mem::take(&mut self.0)
    }
}

fn run(data: &[u8]) -> (tempfile::TempDir, Result<Unpacked, UnpackError>) {
    let dir = tempfile::tempdir().unwrap();
    let r = unpack_layer(
        data,
        dir.path(),
        &UnpackOptions::new(WhiteoutMode::Flatten),
        None,
    );
    (dir, r)
}

#[track_caller]
fn refused(data: &[u8], entry: &str, why: &str) {
    let (dir, r) = run(data);
    let e = r.expect_err("must be refused").to_string();
    assert!(e.contains(entry), "`{e}` does not name {entry}");
    assert!(e.contains(why), "`{e}` does not say {why}");
    assert!(e.contains("byte"), "`{e}` has no offset");
    drop(dir);
}

#[test]
fn duplicate_pax_records_are_refused() {
    // Go takes the last `size` (16: the next 512 bytes are this file's data,
    // hiding `hidden`), the tar crate the first (0: `hidden` is an entry).
    let mut inner = Raw::default();
    inner.file("hidden", b"scanner never sees me");
    let hidden = inner.0.clone();
    let mut r = Raw::default();
    r.pax(&[
        ("size", b"0"),
        ("size", hidden.len().to_string().as_bytes()),
    ])
    .entry(b'0', b"outer", 0, &hidden);
    refused(&r.end(), "outer", "PAX record `size` is given twice");
    let mut r = Raw::default();
    r.pax(&[("path", b"a"), ("path", b"b")]).file("x", b"1");
    refused(&r.end(), "a", "PAX record `path` is given twice");
}

#[test]
fn header_only_entries_with_a_size_are_refused() {
    let mut r = Raw::default();
    let mut inner = Raw::default();
    inner.file("smuggled", b"x");
    r.entry(b'5', b"d/", inner.0.len() as u64, &inner.0.clone());
    refused(&r.end(), "d/", "tar readers disagree");
}

#[test]
fn old_style_directories_and_slashed_files() {
    // Typeflag NUL and a trailing slash: a directory, as Go reads it.
    let mut r = Raw::default();
    r.entry(0, b"olddir/", 0, b"").file("olddir/f", b"1");
    let (dir, res) = run(&r.end());
    res.unwrap();
    assert!(dir.path().join("olddir").is_dir());
    assert_eq!(fs::read(dir.path().join("olddir/f")).unwrap(), b"1");
    let mut r = Raw::default();
    r.entry(b'0', b"notafile/", 0, b"");
    refused(&r.end(), "notafile/", "name ends in `/`");
}

#[test]
fn pax_sparse_files_are_expanded() {
    // 1.0: the map is text at the start of the data.
    let mut data = b"2\n0\n3\n4096\n2\n".to_vec();
    data.resize(512, 0);
    data.extend_from_slice(b"abcXY");
    let mut r = Raw::default();
    r.pax(&[
        ("GNU.sparse.major", b"1"),
        ("GNU.sparse.minor", b"0"),
        ("GNU.sparse.name", b"sparse10"),
        ("GNU.sparse.realsize", b"8192"),
    ])
    .entry(
        b'0',
        b"./GNUSparseFile.1/sparse10",
        data.len() as u64,
        &data,
    );
    // 0.1: the map in one record.
    r.pax(&[
        ("GNU.sparse.map", b"0,3,4096,2"),
        ("GNU.sparse.name", b"sparse01"),
        ("GNU.sparse.size", b"8192"),
    ])
    .entry(b'0', b"GNUSparseFile.0/sparse01", 5, b"abcXY");
    // 0.0: repeated offset/numbytes records.
    r.pax(&[
        ("GNU.sparse.size", b"8192"),
        ("GNU.sparse.offset", b"0"),
        ("GNU.sparse.numbytes", b"3"),
        ("GNU.sparse.offset", b"4096"),
        ("GNU.sparse.numbytes", b"2"),
    ])
    .entry(b'0', b"sparse00", 5, b"abcXY");
    let (dir, res) = run(&r.end());
    res.unwrap();
    let mut want = vec![0u8; 8192];
    want[..3].copy_from_slice(b"abc");
    want[4096..4098].copy_from_slice(b"XY");
    for name in ["sparse10", "sparse01", "sparse00"] {
        assert_eq!(fs::read(dir.path().join(name)).unwrap(), want, "{name}");
    }
    assert!(!dir.path().join("GNUSparseFile.1").exists());
    // A map that claims more data than the entry has is refused.
    let mut r = Raw::default();
    r.pax(&[("GNU.sparse.map", b"0,9"), ("GNU.sparse.size", b"16")])
        .entry(b'0', b"liar", 5, b"abcXY");
    refused(&r.end(), "liar", "sparse chunks hold 9 bytes");
}

#[test]
fn pax_owner_records_and_global_headers() {
    let mut r = Raw::default();
    r.entry(b'g', b"pax_global_header", 0, b"")
        .pax(&[("uid", b"3000000"), ("gid", b"3000001")])
        .file("owned", b"1");
    let (dir, res) = run(&r.end());
    res.unwrap();
    assert!(!dir.path().join("pax_global_header").exists());
    if nix::unistd::geteuid().is_root() {
        let m = fs::metadata(dir.path().join("owned")).unwrap();
        assert_eq!((m.uid(), m.gid()), (3_000_000, 3_000_001));
    }
}

#[test]
fn one_zero_block_then_more_entries_is_refused() {
    let mut r = Raw::default();
    r.file("a", b"1");
    r.0.extend(std::iter::repeat_n(0u8, 512));
    r.file("hidden", b"2");
    let (_dir, res) = run(&r.end());
    let e = res.expect_err("must be refused").to_string();
    assert!(e.contains("single zero block"), "{e}");
}

#[test]
fn errors_name_entry_and_offset_and_escape_names() {
    // Truncated inside the second entry's data.
    let mut r = Raw::default();
    r.file("first", b"1").file("second", &[7u8; 4000]);
    let mut data = r.0.clone();
    data.truncate(512 * 4);
    let (_dir, res) = run(&data);
    let e = res.expect_err("truncated").to_string();
    assert!(e.contains("second") && e.contains("byte 1024"), "{e}");
    // A name that would retitle and clear the terminal.
    let mut r = Raw::default();
    r.file("/\x1b]0;pwned\x07\x1b[2J", b"x");
    let (_dir, res) = run(&r.end());
    let e = res.expect_err("absolute").to_string();
    assert!(!e.contains('\x1b') && !e.contains('\x07'), "{e:?}");
    assert!(e.contains("\\x1b]0;pwned\\x07"), "{e}");
}
