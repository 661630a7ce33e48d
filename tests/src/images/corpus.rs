//! A generated corpus of hostile and unusual images (issue 16): escapes in every path form,
//! through symlinks of the same and of lower layers, hard links out of the root, symlink
//! loops, the tar ambiguities readers disagree on, whiteout orders, and strings that would
//! drive a terminal. Each case says what must happen; `tests/tests/images/corpus.rs` runs
//! every case through `berth image import`, `unpack` and (where the case runs) `run`, and
//! checks the invariants that hold for all of them.
//!
//! The corpus is code, not binaries: a case is added by writing its generator here.

use serde_json::{json, Value};

use super::layout::{busybox_layer, Compression, RawTar};

/// What a case must do.
#[derive(Debug, Clone)]
pub enum Expect {
    /// The import is refused and the error contains this text (the entry's name, escaped).
    Refused(String),
    /// The import succeeds and `image unpack` shows these paths so.
    Accepted(Vec<(String, Want)>),
    /// Either, as long as nothing outside the store changes and an error names this text.
    Contained(String),
}

/// A path in the unpacked rootfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    File(Vec<u8>),
    Dir,
    Symlink(String),
    Absent,
}

/// One generated image.
pub struct Case {
    pub name: String,
    pub layers: Vec<(Vec<u8>, Compression)>,
    pub config: Value,
    pub expect: Expect,
    /// Run it with `image run --rm` (busybox is added as the bottom layer).
    pub run: Option<RunExpect>,
}

/// What `image run --rm` of a case must do.
#[derive(Debug, Clone)]
pub enum RunExpect {
    Stdout(String),
    /// Fails, its error containing this text.
    Fails(String),
}

fn climb() -> String {
    "../".repeat(16)
}

fn case(name: impl Into<String>, layers: Vec<Vec<u8>>, c: Compression, expect: Expect) -> Case {
    Case {
        name: name.into(),
        layers: layers.into_iter().map(|l| (l, c)).collect(),
        config: json!({"Cmd": ["/bin/sh"]}),
        expect,
        run: None,
    }
}

fn tar(f: impl FnOnce(&mut RawTar)) -> Vec<u8> {
    let mut t = RawTar::new();
    f(&mut t);
    t.finish()
}

fn raw(f: impl FnOnce(&mut RawTar)) -> Vec<u8> {
    let mut t = RawTar::new();
    f(&mut t);
    t.into_raw()
}

/// The sentinel directory `sentinel` (absolute, e.g. `/tmp/bsXXXX`) is what no case may
/// touch: every escape aims at it.
pub fn cases(sentinel: &str) -> Vec<Case> {
    let rel = sentinel.trim_start_matches('/');
    let up = format!("{}{rel}", climb());
    let mut out = Vec::new();
    let comps = [Compression::None, Compression::Gzip, Compression::Zstd];

    // Escapes by name: refused, naming the entry, in every compression.
    for c in comps {
        for (form, name) in [
            ("dotdot", format!("{up}/pwned")),
            ("absolute", format!("{sentinel}/pwned")),
            ("dot-dotdot", format!("./{up}/sentinel")),
            ("inner-dotdot", format!("a/../../{up}/pwned")),
        ] {
            for kind in ["file", "dir", "symlink", "hardlink", "fifo"] {
                let layer = tar(|t| {
                    match kind {
                        "file" => t.file(&name, 0o644, b"pwned\n"),
                        "dir" => t.dir(&name, 0o755),
                        "symlink" => t.symlink(&name, "/etc/passwd"),
                        "hardlink" => t.file("x", 0o644, b"x").hardlink(&name, "x"),
                        _ => t.fifo(&name, 0o644),
                    };
                });
                out.push(case(
                    format!("{form} {kind} name ({c:?})"),
                    vec![layer],
                    c,
                    Expect::Refused(name.clone()),
                ));
            }
        }
    }
    // The same through PAX `path` and a GNU long name (longer than a header holds).
    let long = format!("{}{}/pwned", "./".repeat(60), up);
    out.push(case(
        "PAX path with ..",
        vec![tar(|t| {
            t.pax(&[("path", long.as_bytes())])
                .file("innocent", 0o644, b"x");
        })],
        Compression::Gzip,
        Expect::Refused("pwned".into()),
    ));
    out.push(case(
        "GNU long name with ..",
        vec![tar(|t| {
            t.gnu_long_name(long.as_bytes())
                .file("innocent", 0o644, b"x");
        })],
        Compression::Gzip,
        Expect::Refused("pwned".into()),
    ));

    // Writes through symlinks: followed inside the root, never outside.
    for (form, target, lands) in [
        ("absolute", sentinel.to_string(), format!("{rel}/pwned")),
        ("dotdot", up.clone(), format!("{rel}/pwned")),
        ("root", "/".to_string(), "pwned".to_string()),
        ("chain", "hop".to_string(), format!("{rel}/pwned")),
    ] {
        let same = tar(|t| {
            t.symlink("hop", sentinel)
                .symlink("link", &target)
                .file("link/pwned", 0o644, b"in\n");
        });
        out.push(case(
            format!("write through a same-layer {form} symlink"),
            vec![same],
            Compression::Gzip,
            Expect::Accepted(vec![(lands.clone(), Want::File(b"in\n".to_vec()))]),
        ));
        let lower = tar(|t| {
            t.symlink("hop", sentinel).symlink("link", &target);
        });
        let upper = tar(|t| {
            t.file("link/pwned", 0o644, b"in\n").dir("link/sub/", 0o755);
        });
        out.push(case(
            format!("write through a lower layer's {form} symlink"),
            vec![lower.clone(), upper],
            Compression::Zstd,
            Expect::Accepted(vec![
                (lands.clone(), Want::File(b"in\n".to_vec())),
                ("link".into(), Want::Symlink(target.clone())),
            ]),
        ));
        for wh in ["link/.wh.sentinel", "link/.wh..wh..opq"] {
            let upper = tar(|t| {
                t.file(wh, 0o644, b"");
            });
            // An opaque marker through `link -> /` makes the root opaque: the link goes too.
            let link = if form == "root" && wh.ends_with("opq") {
                Want::Absent
            } else {
                Want::Symlink(target.clone())
            };
            out.push(case(
                format!("whiteout {wh} through a lower {form} symlink"),
                vec![lower.clone(), upper],
                Compression::Gzip,
                Expect::Accepted(vec![("link".into(), link)]),
            ));
        }
    }
    // Symlink loops and deep chains.
    out.push(case(
        "symlink loop in a parent",
        vec![tar(|t| {
            t.symlink("a", "b")
                .symlink("b", "a")
                .file("a/x", 0o644, b"x");
        })],
        Compression::None,
        Expect::Refused("a/x".into()),
    ));
    out.push(case(
        "41 chained symlinks",
        vec![tar(|t| {
            for i in 0..41 {
                t.symlink(&format!("s{i}"), &format!("s{}", i + 1));
            }
            t.dir("s41/", 0o755).file("s0/x", 0o644, b"x");
        })],
        Compression::None,
        Expect::Refused("s0/x".into()),
    ));
    // Hard links out of the root or to nothing of this layer.
    for (form, target) in [
        ("absolute", format!("{sentinel}/sentinel")),
        ("dotdot", format!("{up}/sentinel")),
        ("through a symlink", "esc/sentinel".to_string()),
        ("to a lower layer's file", "lowerfile".to_string()),
        ("to a whited-out path", "wh".to_string()),
    ] {
        let lower = tar(|t| {
            t.file("lowerfile", 0o644, b"l").file("wh", 0o644, b"w");
        });
        let upper = tar(|t| {
            t.symlink("esc", sentinel).file(".wh.wh", 0o644, b"");
            t.hardlink("stolen", &target)
                .file("stolen", 0o644, b"pwned\n");
        });
        out.push(case(
            format!("hard link {form}"),
            vec![lower, upper],
            Compression::Gzip,
            Expect::Refused("stolen".into()),
        ));
    }

    // Tar ambiguities (see images/src/unpack/header.rs).
    let hidden = raw(|t| {
        t.file("hidden", 0o644, b"scanners miss me");
    });
    out.push(case(
        "duplicate PAX size",
        vec![tar(|t| {
            t.pax(&[
                ("size", b"0"),
                ("size", hidden.len().to_string().as_bytes()),
            ])
            .typed(b'0', b"outer", 0, &hidden);
        })],
        Compression::Gzip,
        Expect::Refused("`size` is given twice".into()),
    ));
    out.push(case(
        "duplicate PAX path",
        vec![tar(|t| {
            t.pax(&[("path", b"one"), ("path", b"two")])
                .file("x", 0o644, b"x");
        })],
        Compression::Gzip,
        Expect::Refused("`path` is given twice".into()),
    ));
    out.push(case(
        "duplicate PAX linkpath",
        vec![tar(|t| {
            t.pax(&[("linkpath", b"/a"), ("linkpath", b"/b")])
                .symlink("l", "x");
        })],
        Compression::Gzip,
        Expect::Refused("`linkpath` is given twice".into()),
    ));
    for (kind, flag) in [("directory", b'5'), ("symlink", b'2'), ("fifo", b'6')] {
        out.push(case(
            format!("{kind} with data"),
            vec![tar(|t| {
                t.typed(flag, b"sized", hidden.len() as u64, &hidden);
            })],
            Compression::Gzip,
            Expect::Refused("disagree on whether data follows".into()),
        ));
    }
    out.push(case(
        "old-style regular type with a trailing slash is a directory",
        vec![tar(|t| {
            t.typed(0, b"olddir/", 0, b"").file("olddir/f", 0o644, b"f");
        })],
        Compression::None,
        Expect::Accepted(vec![
            ("olddir".into(), Want::Dir),
            ("olddir/f".into(), Want::File(b"f".to_vec())),
        ]),
    ));
    out.push(case(
        "regular file named with a trailing slash",
        vec![tar(|t| {
            t.typed(b'0', b"slashed/", 0, b"");
        })],
        Compression::None,
        Expect::Refused("slashed/".into()),
    ));
    let mut sparse10 = b"2\n0\n3\n4096\n2\n".to_vec();
    sparse10.resize(512, 0);
    sparse10.extend_from_slice(b"abcXY");
    let mut expanded = vec![0u8; 8192];
    expanded[..3].copy_from_slice(b"abc");
    expanded[4096..4098].copy_from_slice(b"XY");
    out.push(case(
        "PAX sparse 1.0",
        vec![tar(|t| {
            t.pax(&[
                ("GNU.sparse.major", b"1"),
                ("GNU.sparse.minor", b"0"),
                ("GNU.sparse.name", b"sparse"),
                ("GNU.sparse.realsize", b"8192"),
            ])
            .typed(
                b'0',
                b"GNUSparseFile.0/sparse",
                sparse10.len() as u64,
                &sparse10.clone(),
            );
        })],
        Compression::Zstd,
        Expect::Accepted(vec![
            ("sparse".into(), Want::File(expanded.clone())),
            ("GNUSparseFile.0".into(), Want::Absent),
        ]),
    ));
    out.push(case(
        "PAX sparse 0.1",
        vec![tar(|t| {
            t.pax(&[
                ("GNU.sparse.map", b"0,3,4096,2"),
                ("GNU.sparse.name", b"sparse"),
                ("GNU.sparse.size", b"8192"),
            ])
            .typed(b'0', b"GNUSparseFile.0/sparse", 5, b"abcXY");
        })],
        Compression::Gzip,
        Expect::Accepted(vec![("sparse".into(), Want::File(expanded))]),
    ));
    out.push(case(
        "PAX global header",
        vec![tar(|t| {
            t.typed(b'g', b"pax_global_header", 0, b"")
                .file("f", 0o644, b"f");
        })],
        Compression::None,
        Expect::Accepted(vec![
            ("f".into(), Want::File(b"f".to_vec())),
            ("pax_global_header".into(), Want::Absent),
        ]),
    ));
    out.push(case(
        "one zero block, then more entries",
        vec![raw(|t| {
            t.file("a", 0o644, b"a")
                .raw_bytes(&[0u8; 512])
                .file("hidden", 0o644, b"h");
            t.raw_bytes(&[0u8; 1024]);
        })],
        Compression::Gzip,
        Expect::Refused("single zero block".into()),
    ));
    out.push(case(
        "truncated inside an entry's data",
        vec![{
            let mut r = raw(|t| {
                t.file("first", 0o644, b"1")
                    .file("second", 0o644, &[7u8; 4000]);
            });
            r.truncate(512 * 4);
            r
        }],
        Compression::Gzip,
        Expect::Refused("second".into()),
    ));
    out.push(case(
        "garbage header",
        vec![{
            let mut g = vec![0x1bu8; 512];
            g[..7].copy_from_slice(b"\x1b]0;hi\x07");
            g
        }],
        Compression::None,
        Expect::Contained("layer".into()),
    ));

    // Whiteout orders (the OCI layer rules), checked in the unpacked tree.
    let base = tar(|t| {
        t.dir("d/", 0o755)
            .file("d/old", 0o644, b"o")
            .file("f", 0o644, b"old");
    });
    for (rule, upper, wants) in [
        (
            "whiteout then the directory again",
            tar(|t| {
                t.file(".wh.d", 0o644, b"")
                    .dir("d/", 0o755)
                    .file("d/new", 0o644, b"n");
            }),
            vec![
                ("d/old", Want::Absent),
                ("d/new", Want::File(b"n".to_vec())),
            ],
        ),
        (
            "file then its own whiteout",
            tar(|t| {
                t.file("f", 0o644, b"new").file(".wh.f", 0o644, b"");
            }),
            vec![("f", Want::File(b"new".to_vec()))],
        ),
        (
            "opaque marker after the entries",
            tar(|t| {
                t.file("d/new", 0o644, b"n")
                    .file("d/.wh..wh..opq", 0o644, b"");
            }),
            vec![
                ("d/old", Want::Absent),
                ("d/new", Want::File(b"n".to_vec())),
            ],
        ),
        (
            "opaque marker at the root",
            tar(|t| {
                t.file(".wh..wh..opq", 0o644, b"").file("g", 0o644, b"g");
            }),
            vec![
                ("d", Want::Absent),
                ("f", Want::Absent),
                ("g", Want::File(b"g".to_vec())),
            ],
        ),
    ] {
        out.push(case(
            rule,
            vec![base.clone(), upper],
            Compression::Gzip,
            Expect::Accepted(wants.into_iter().map(|(p, w)| (p.to_string(), w)).collect()),
        ));
    }
    out.push(case(
        "the same layer twice",
        vec![
            base.clone(),
            tar(|t| {
                t.file("f", 0o644, b"mid");
            }),
            base.clone(),
        ],
        Compression::Gzip,
        Expect::Accepted(vec![("f".into(), Want::File(b"old".to_vec()))]),
    ));

    // Strings that would drive a terminal or flood a log.
    let esc = "/\x1b]0;pwned\x07\x1b[2J\x1b[31m";
    out.push(case(
        "terminal escapes in an entry name",
        vec![tar(|t| {
            t.file(esc, 0o644, b"x");
        })],
        Compression::None,
        Expect::Refused("\\x1b]0;pwned\\x07".into()),
    ));
    let long_user = "u".repeat(10 << 20);
    let mut c = case(
        "a 10 MB User",
        vec![tar(|t| {
            t.dir("etc/", 0o755)
                .file("etc/passwd", 0o644, b"root:x:0:0::/root:/bin/sh\n");
        })],
        Compression::Gzip,
        Expect::Accepted(vec![]),
    );
    c.config = json!({"Cmd": ["/bin/true"], "User": long_user});
    c.run = Some(RunExpect::Fails(
        "not found in the image's /etc/passwd".into(),
    ));
    out.push(c);
    let mut c = case(
        "a User with terminal escapes",
        vec![tar(|t| {
            t.dir("etc/", 0o755)
                .file("etc/passwd", 0o644, b"root:x:0:0::/root:/bin/sh\n");
        })],
        Compression::Gzip,
        Expect::Accepted(vec![]),
    );
    c.config = json!({"Cmd": ["/bin/true"], "User": "\x1b]0;pwned\x07"});
    c.run = Some(RunExpect::Fails("\\x1b]0;pwned\\x07".into()));
    out.push(c);
    // A runnable case: the usrmerge layout, checked from inside the container too.
    let mut c = case(
        "usrmerge run",
        vec![
            tar(|t| {
                t.dir("usr/", 0o755)
                    .dir("usr/lib/", 0o755)
                    .symlink("lib", "usr/lib");
            }),
            tar(|t| {
                t.file("lib/x.so", 0o644, b"x\n");
            }),
        ],
        Compression::Gzip,
        Expect::Accepted(vec![("usr/lib/x.so".into(), Want::File(b"x\n".to_vec()))]),
    );
    c.config = json!({"Cmd": ["/bin/cat", "/usr/lib/x.so"]});
    c.run = Some(RunExpect::Stdout("x\n".into()));
    out.push(c);
    out
}

/// The bottom layer a runnable case gets.
pub fn runnable_base() -> Vec<u8> {
    busybox_layer(&["sh", "cat", "true", "ls"])
}
