//! The generated hostile corpus (tests/src/images/corpus.rs), each case through `image import`,
//! `image unpack` and, where it runs, `image run`, with the invariants every case shares:
//! nothing outside the store changes, errors name what they refuse, and nothing an image
//! says reaches the terminal unescaped or unbounded.

use std::fs;
use std::path::Path;

use berth_tests::images::corpus::{cases, runnable_base, Expect, RunExpect, Want};
use berth_tests::images::layout::{Compression, OciLayout};
use berth_tests::images::{ImageEnv, Outcome, Sentinel};

/// Longest stderr line an image may cause (its strings are cut to 256 characters).
const MAX_LINE: usize = 4096;

#[track_caller]
fn assert_terminal_safe(case: &str, out: &Outcome) {
    for line in out.stderr.lines() {
        assert!(
            line.len() <= MAX_LINE,
            "{case}: a {}-byte error line: {}...",
            line.len(),
            &line[..200.min(line.len())]
        );
        assert!(
            !line.chars().any(|c| c.is_control() && c != '\t'),
            "{case}: a control character reached the terminal: {line:?}"
        );
    }
}

fn check_tree(case: &str, rootfs: &Path, wants: &[(String, Want)]) {
    for (path, want) in wants {
        let p = rootfs.join(path);
        let got = match fs::symlink_metadata(&p) {
            Err(_) => Want::Absent,
            Ok(m) if m.is_dir() => Want::Dir,
            Ok(m) if m.is_symlink() => Want::Symlink(
                fs::read_link(&p)
                    .expect("readlink")
                    .to_string_lossy()
                    .into_owned(),
            ),
            Ok(_) => Want::File(fs::read(&p).expect("read")),
        };
        assert!(&got == want, "{case}: {path} is {got:?}, want {want:?}");
    }
}

#[test]
fn generated_hostile_corpus() {
    let sentinel = Sentinel::new();
    let sentinel_dir = sentinel.dir().to_str().expect("utf-8").to_string();
    let all = cases(&sentinel_dir);
    assert!(all.len() >= 100, "the corpus has {} cases", all.len());
    let env = ImageEnv::new();
    let mut failures = Vec::new();
    for (i, case) in all.iter().enumerate() {
        let name = format!("case {i} `{}`", case.name);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_case(&env, &name, case, &sentinel)
        }));
        if let Err(e) = r {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(msg);
        }
        // Whatever the case did, the next starts from an empty store.
        let _ = env.image(&["rm", "corpus:1"]);
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

fn run_case(
    env: &ImageEnv,
    name: &str,
    case: &berth_tests::images::corpus::Case,
    sentinel: &Sentinel,
) {
    let dir = env.work().join("corpus");
    let _ = fs::remove_dir_all(&dir);
    let mut layout = OciLayout::new(&dir);
    if case.run.is_some() {
        layout.add_layer(&runnable_base(), Compression::Gzip);
    }
    for (layer, c) in &case.layers {
        layout.add_layer(layer, *c);
    }
    layout.tag("latest", case.config.clone());
    let out = env.import(&dir, "corpus:1");
    sentinel.assert_unchanged(name);
    assert_terminal_safe(name, &out);
    let accepted = match &case.expect {
        Expect::Refused(text) => {
            assert!(
                out.status.code().is_some_and(|c| c != 0),
                "{name}: must be refused: {out}"
            );
            assert!(
                out.stderr.contains(text.as_str()),
                "{name}: error does not say `{text}`: {out}"
            );
            env.assert_store_empty(name);
            return;
        }
        Expect::Contained(text) => {
            if !out.status.success() {
                assert!(
                    out.stderr.contains(text.as_str()),
                    "{name}: error does not say `{text}`: {out}"
                );
                env.assert_store_empty(name);
                return;
            }
            None
        }
        Expect::Accepted(wants) => {
            assert!(out.status.success(), "{name}: must be accepted: {out}");
            Some(wants)
        }
    };
    let bundle = env.work().join("corpus-bundle");
    let _ = fs::remove_dir_all(&bundle);
    let out = env.image(&["unpack", "corpus:1", bundle.to_str().expect("utf-8")]);
    sentinel.assert_unchanged(name);
    assert_terminal_safe(name, &out);
    if let Some(wants) = accepted {
        if case.run.is_none() || out.status.success() {
            assert!(out.status.success(), "{name}: unpack: {out}");
            check_tree(name, &bundle.join("rootfs"), wants);
        }
    }
    let _ = fs::remove_dir_all(&bundle);
    if let Some(run) = &case.run {
        let out = env.image(&["run", "--rm", "corpus:1"]);
        sentinel.assert_unchanged(name);
        assert_terminal_safe(name, &out);
        match run {
            RunExpect::Stdout(s) => {
                assert!(out.status.success(), "{name}: run: {out}");
                assert_eq!(&out.stdout, s, "{name}: run: {out}");
            }
            RunExpect::Fails(s) => {
                assert!(!out.status.success(), "{name}: run must fail: {out}");
                assert!(
                    out.stderr.contains(s.as_str()),
                    "{name}: run error lacks `{s}`: {out}"
                );
            }
        }
        env.assert_nothing_left_running(name);
    }
}
