//! The packages Berth ships, installed for real into a scratch root (an overlay of this
//! host's `/`, see `berth_tests::packaging`) and removed again:
//! - the .deb scripts/build-deb makes: `apt-get install /tmp/berth_*.deb`, `apt-get
//!   remove`, `apt-get purge`;
//! - scripts/install (twice: the second run changes nothing) and `scripts/install
//!   --uninstall`.
//!
//! In each: the binaries answer `--version` (and `berth image` finds berth-image beside
//! berth), the unit passes `systemd-analyze verify` with nothing to say and is not
//! enabled, every man page renders with `man` without warnings, bash and fish complete
//! berthctl's and berth's verbs from the installed completions and zsh parses its own, the
//! config is the commented default; after removal the upper layer holds nothing but
//! dpkg's and apt's own records. Also (no root): the default berthd.toml lists every key
//! berthd's config file accepts, and its examples are accepted.
//!
//! Run as root after `./scripts/install-deps package` (cargo-deb, systemd, man-db, zsh,
//! fish). The release binaries come from scripts/build-deb, which this test runs (a no-op
//! after `scripts/test` has run it).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use berth_tests::packaging::{ScratchRoot, BOOKKEEPING, HOME};
use berth_tests::runtime::{Outcome, Running};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// What scripts/build-dist and scripts/build-deb made.
struct Dist {
    /// target/HOST/release: the binaries and docs/.
    dir: PathBuf,
    deb: PathBuf,
}

/// Runs one of the repository's scripts (a build may take long the first time).
fn script(name: &str, args: &[&str]) -> Outcome {
    let mut cmd = Command::new(repo().join("scripts").join(name));
    cmd.args(args);
    // Not what cargo set for this test (CARGO_PKG_*, ...): build scripts that watch those
    // variables would make the release build rebuild here and again outside.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let user_setting = ["CARGO_HOME", "CARGO_TARGET_DIR"].contains(&key.as_ref())
            || key.starts_with("CARGO_BUILD_");
        if (key.starts_with("CARGO") && !user_setting) || key == "LD_LIBRARY_PATH" {
            cmd.env_remove(key.as_ref());
        }
    }
    let out = Running::spawn(&mut cmd, None, None).wait(Duration::from_secs(3600));
    out.ok();
    out
}

/// Builds once for every test in this binary (the tests run in parallel threads, and
/// scripts/build-dist rewrites docs/).
fn dist() -> &'static Dist {
    static DIST: OnceLock<Dist> = OnceLock::new();
    DIST.get_or_init(|| {
        berth_tests::require_root();
        for (program, package) in [
            ("systemd-analyze", "systemd"),
            ("man", "man-db"),
            ("zsh", "zsh"),
            ("fish", "fish"),
            ("chroot", "coreutils"),
        ] {
            berth_tests::require_program(program, package);
        }
        // The scratch root's lower layer is this host: Berth must not be installed on it.
        let host_has = Command::new("dpkg-query").args(["-W", "berth"]).output().is_ok_and(|o| o.status.success());
        assert!(
            !host_has && !Path::new("/etc/berth/berthd.toml").exists() && !Path::new("/usr/local/share/berth").exists(),
            "this host has Berth installed (package, /etc/berth/berthd.toml or scripts/install's manifest): \
             the packaging tests install into an overlay of this host's / and need it without"
        );
        let deb_ok = Command::new("cargo")
            .args(["deb", "--version"])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            deb_ok,
            "cargo-deb is required: run ./scripts/install-deps package"
        );
        let dir = PathBuf::from(script("build-dist", &[]).stdout.trim());
        let deb = PathBuf::from(script("build-deb", &[]).stdout.trim());
        assert!(deb.is_file(), "scripts/build-deb printed {}", deb.display());
        Dist { dir, deb }
    })
}

/// Where a package puts its files.
struct Layout {
    bin: &'static str,
    man: &'static str,
    bash: &'static str,
    zsh: &'static str,
    fish: &'static str,
    unit: &'static str,
}

const DEB: Layout = Layout {
    bin: "/usr/bin",
    man: "/usr/share/man/man1",
    bash: "/usr/share/bash-completion/completions",
    zsh: "/usr/share/zsh/vendor-completions",
    fish: "/usr/share/fish/vendor_completions.d",
    unit: "/usr/lib/systemd/system/berthd.service",
};

const SCRIPT: Layout = Layout {
    bin: "/usr/local/bin",
    man: "/usr/local/share/man/man1",
    bash: "/usr/local/share/bash-completion/completions",
    zsh: "/usr/local/share/zsh/site-functions",
    fish: "/etc/fish/completions",
    unit: "/etc/systemd/system/berthd.service",
};

const PROGRAMS: [&str; 3] = ["berth", "berthd", "berthctl"];

/// `bash -c` program: `_ FILE WORD...` sources FILE and prints the completions of the
/// last WORD, as bash would offer them at the end of that command line.
const BASH_COMPLETE: &str = r#"source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; "_${1//-/__}" "$1" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"; printf "%s\n" "${COMPREPLY[@]}""#;

/// Runs `script` in the root and returns its stdout, panicking on failure.
#[track_caller]
fn sh_ok(root: &ScratchRoot, script: &str) -> String {
    let out = root.sh(script);
    out.ok();
    out.stdout
}

/// Everything a correct installation shows, checked from inside the scratch root.
fn check_installed(root: &ScratchRoot, at: &Layout) {
    let bin = at.bin;
    assert_eq!(
        sh_ok(root, &format!("{bin}/berthd --version")),
        format!("berthd {VERSION}\n")
    );
    assert_eq!(
        sh_ok(root, &format!("{bin}/berthctl --version")),
        format!("berthctl {VERSION}\n")
    );
    assert!(sh_ok(root, &format!("{bin}/berth --version"))
        .starts_with(&format!("berth version {VERSION}\n")));
    // `berth image` execs the berth-image installed beside berth.
    let image_help = sh_ok(root, &format!("{bin}/berth image --help"));
    assert!(image_help.contains("import"), "{image_help}");

    check_unit(root, at);
    let config = std::fs::read_to_string(root.path("/etc/berth/berthd.toml"))
        .expect("installed berthd.toml");
    let shipped = std::fs::read_to_string(repo().join("packaging/berthd.toml"))
        .expect("packaging/berthd.toml");
    assert_eq!(
        config, shipped,
        "the installed config is the commented default"
    );
    check_man_pages(root, at);
    check_completions(root, at);
}

fn check_unit(root: &ScratchRoot, at: &Layout) {
    // verify returns 0 with unknown keys and bad values, which it only reports: it must
    // have nothing to say.
    let out = root.sh(&format!("systemd-analyze verify {}", at.unit));
    out.ok();
    assert_eq!(
        out.stderr, "",
        "systemd-analyze verify has complaints:\n{out}"
    );
    let unit = std::fs::read_to_string(root.path(at.unit)).expect("unit file");
    let exec = format!(
        "ExecStart={}/berthd --config /etc/berth/berthd.toml",
        at.bin
    );
    for line in [exec.as_str(), "KillMode=process", "Restart=on-failure"] {
        assert!(
            unit.lines().any(|l| l == line),
            "{} lacks {line}:\n{unit}",
            at.unit
        );
    }
    let enabled = root.sh("systemctl is-enabled berthd.service");
    assert_eq!(
        enabled.stdout.trim(),
        "disabled",
        "berthd.service must not be enabled:\n{enabled}"
    );
}

fn check_man_pages(root: &ScratchRoot, at: &Layout) {
    // Every page the binaries rendered is installed.
    let rendered: BTreeSet<String> = std::fs::read_dir(dist().dir.join("docs/man/man1"))
        .expect("docs/man/man1")
        .map(|e| {
            let name = e.expect("entry").file_name().to_string_lossy().into_owned();
            name.trim_end_matches(".gz").to_string()
        })
        .collect();
    for page in [
        "berth.1",
        "berth-create.1",
        "berth-image.1",
        "berth-image-import.1",
        "berthd.1",
        "berthd-credentials-init.1",
        "berthctl.1",
        "berthctl-kv-get.1",
    ] {
        assert!(
            rendered.contains(page),
            "{page} was not rendered: {rendered:?}"
        );
    }
    for page in &rendered {
        let name = page.trim_end_matches(".1");
        let installed = root.sh(&format!("ls {0}/{page} {0}/{page}.gz 2>/dev/null", at.man));
        let path = installed
            .stdout
            .lines()
            .next()
            .unwrap_or_else(|| panic!("{page} is not installed in {}", at.man))
            .to_string();
        let out = root.sh(&format!("MANWIDTH=100 man --warnings -P cat -l {path}"));
        out.ok();
        assert_eq!(out.stderr, "", "man complains about {path}:\n{out}");
        assert!(
            out.stdout.contains("NAME") && out.stdout.contains(&format!("{name}(1)")),
            "{path} rendered without its name:\n{out}"
        );
    }
    // man finds the pages by name.
    for program in PROGRAMS {
        // (Debian's /usr/local/man is a link to share/man.)
        let found = sh_ok(root, &format!("readlink -f \"$(man -w {program})\""));
        assert!(
            found.starts_with(&format!("{}/{program}.1", at.man)),
            "man -w {program}: {found}"
        );
    }
}

fn check_completions(root: &ScratchRoot, at: &Layout) {
    // bash: load the installed file and call its function as bash-completion would.
    let bash = |words: &str| {
        let program = words.split_whitespace().next().expect("program");
        sh_ok(
            root,
            &format!("bash -c '{BASH_COMPLETE}' _ {}/{program} {words}", at.bash),
        )
    };
    assert_eq!(bash("berthctl list-m").trim(), "list-machines");
    let image = bash("berth image im");
    assert_eq!(
        image.trim(),
        "import",
        "berth image's verbs come from berth-image's definitions"
    );
    assert_eq!(bash("berthd credentials add-n").trim(), "add-node");
    // fish: its own completion engine, loading from the installed directory.
    assert!(root.path(&format!("{}/berthctl.fish", at.fish)).is_file());
    let fish = |line: &str| sh_ok(root, &format!("fish -c 'complete -C\"{line}\"'"));
    let verbs = fish("berthctl list-m");
    assert!(verbs.starts_with("list-machines\t"), "fish: {verbs}");
    let verbs = fish("berth cre");
    assert!(verbs.starts_with("create\t"), "fish: {verbs}");
    // zsh: parses, and declares the command it completes.
    for program in PROGRAMS {
        let file = format!("{}/_{program}", at.zsh);
        sh_ok(root, &format!("zsh -n {file}"));
        let text = std::fs::read_to_string(root.path(&file)).expect("zsh completion");
        assert!(
            text.starts_with(&format!("#compdef {program}\n")),
            "{file}: {}",
            text.lines().next().unwrap_or("")
        );
    }
}

/// What is left in the scratch root besides the package system's own records, once the
/// checks' own traces (the shells' home, the copied .deb) are gone.
fn leftovers(root: &ScratchRoot) -> BTreeSet<String> {
    sh_ok(root, &format!("rm -rf {HOME} /tmp/berth_*.deb"));
    root.leftovers(BOOKKEEPING)
}

fn assert_clean(root: &ScratchRoot, after: &str) {
    let left = leftovers(root);
    assert!(
        left.is_empty(),
        "{after} left behind:\n{}",
        left.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn deb_installs_with_apt_and_purges_without_a_trace() {
    let dist = dist();
    let root = ScratchRoot::create();
    let name = dist
        .deb
        .file_name()
        .expect("deb file name")
        .to_string_lossy()
        .into_owned();
    std::fs::copy(&dist.deb, root.path(&format!("/tmp/{name}"))).expect("copy the .deb in");
    sh_ok(&root, &format!("apt-get install -y -q /tmp/{name}"));
    let files = sh_ok(&root, "dpkg-query -L berth");
    for file in [
        "/usr/bin/berth",
        "/usr/bin/berth-image",
        "/usr/bin/berthd",
        "/usr/bin/berthctl",
        DEB.unit,
        "/etc/berth/berthd.toml",
    ] {
        assert!(
            files.lines().any(|l| l == file),
            "the package lacks {file}:\n{files}"
        );
    }
    let conffiles = sh_ok(&root, "dpkg-query -W -f='${Conffiles}' berth");
    assert!(
        conffiles.contains("/etc/berth/berthd.toml"),
        "berthd.toml is no conffile: {conffiles}"
    );
    check_installed(&root, &DEB);

    // remove: the program files go, the configuration stays (Debian's rule for conffiles).
    sh_ok(&root, "apt-get remove -y -q berth");
    for file in [
        "/usr/bin/berthd",
        DEB.unit,
        "/usr/share/man/man1/berthd.1.gz",
    ] {
        assert!(
            !root.path(file).exists(),
            "{file} is still there after apt remove"
        );
    }
    assert!(
        root.path("/etc/berth/berthd.toml").exists(),
        "apt remove keeps the conffile"
    );
    sh_ok(&root, "apt-get purge -y -q berth");
    assert_clean(&root, "apt-get purge berth");
}

#[test]
fn install_script_is_idempotent_and_uninstalls_exactly_what_it_installed() {
    dist();
    let root = ScratchRoot::create();
    let merged = root.merged.to_string_lossy().into_owned();
    script("install", &["--no-build", "--destdir", &merged]);
    check_installed(&root, &SCRIPT);

    // A second run rewrites nothing: every installed file keeps its inode and mtime.
    let before = leftovers(&root);
    let stamp = |set: &BTreeSet<String>| -> Vec<(String, u64, Option<std::time::SystemTime>)> {
        use std::os::unix::fs::MetadataExt;
        set.iter()
            .map(|p| {
                let m = std::fs::metadata(root.path(p.trim_end_matches(" (new directory)")))
                    .unwrap_or_else(|e| panic!("{p}: {e}"));
                (p.clone(), m.ino(), m.modified().ok())
            })
            .collect()
    };
    let stamps = stamp(&before);
    let again = script("install", &["--no-build", "--destdir", &merged]);
    assert_eq!(
        stamp(&leftovers(&root)),
        stamps,
        "the second run changed files:\n{again}"
    );
    assert!(!again.stdout.contains("keeping"), "{again}");

    // An operator's change to the config survives --uninstall; the rest goes.
    let config = root.path("/etc/berth/berthd.toml");
    std::fs::write(&config, "cluster-id = \"prod\"\n").expect("edit the config");
    let out = script("install", &["--uninstall", "--destdir", &merged]);
    assert!(
        out.stdout.contains("keeping") && out.stdout.contains("berthd.toml"),
        "{out}"
    );
    let left = leftovers(&root);
    let expected: BTreeSet<String> = ["/etc/berth/ (new directory)", "/etc/berth/berthd.toml"]
        .map(String::from)
        .into();
    assert_eq!(left, expected);
    std::fs::remove_file(&config).expect("remove the edited config");
    std::fs::remove_dir(root.path("/etc/berth")).expect("remove /etc/berth");

    // Installed again and uninstalled unchanged: nothing at all is left.
    script("install", &["--no-build", "--destdir", &merged]);
    script("install", &["--uninstall", "--destdir", &merged]);
    assert_clean(&root, "scripts/install --uninstall");
}

/// The keys berthd's config file accepts in `table` (None: the top level), as serde
/// lists them when it refuses an unknown one (`deny_unknown_fields`), or None when
/// `table` is no table of fixed keys.
fn accepted_keys(table: Option<&str>) -> Option<Vec<String>> {
    const PROBE: &str = "berth-packaging-probe";
    let text = match table {
        None => format!("{PROBE} = 1\n"),
        Some(t) => format!("[{t}]\n{PROBE} = 1\n"),
    };
    let flags = berth_orchestrator::config::Flags::default();
    let err = berth_orchestrator::config::resolve(flags, Some(&text), "h", &[])
        .expect_err("an unknown key is refused")
        .to_string();
    let (_, expected) = err.split_once(&format!("unknown field `{PROBE}`, expected "))?;
    Some(
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(String::from)
            .collect(),
    )
}

#[test]
fn default_config_lists_every_key_berthd_accepts_with_valid_examples() {
    let text = std::fs::read_to_string(repo().join("packaging/berthd.toml"))
        .expect("packaging/berthd.toml");
    // As shipped, every key is commented out: berthd asks for the one it needs.
    let err = berth_orchestrator::config::resolve(Default::default(), Some(&text), "h", &[])
        .expect_err("no cluster-id");
    assert_eq!(
        err,
        berth_orchestrator::config::ConfigError::MissingClusterId
    );

    // Examples are `#key = value` and `#[table]` lines (prose comments start with "# ").
    let mut documented = BTreeSet::new();
    let mut table = String::new();
    let mut uncommented = String::new();
    for line in text.lines() {
        let Some(example) = line
            .strip_prefix('#')
            .filter(|l| !l.starts_with([' ', '#']) && !l.is_empty())
        else {
            continue;
        };
        if let Some(name) = example.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            table = format!("{name}.");
        } else {
            let key = example
                .split_once(" = ")
                .unwrap_or_else(|| panic!("not a `key = value` example: {line}"))
                .0;
            documented.insert(format!("{table}{key}"));
        }
        uncommented.push_str(example);
        uncommented.push('\n');
    }
    let top = accepted_keys(None).expect("the probe lists the top-level keys");
    let mut accepted = BTreeSet::new();
    for key in &top {
        match accepted_keys(Some(key)) {
            Some(inner) => accepted.extend(inner.into_iter().map(|k| format!("{key}.{k}"))),
            None => {
                accepted.insert(key.clone());
            }
        }
    }
    let missing: Vec<_> = accepted.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "packaging/berthd.toml does not list {missing:?}"
    );
    // Every example together is a configuration berthd accepts (unknown keys and bad
    // values are refused by name).
    berth_orchestrator::config::resolve(Default::default(), Some(&uncommented), "h", &[])
        .unwrap_or_else(|e| {
            panic!("the examples of packaging/berthd.toml are refused: {e}\n{uncommented}")
        });
}
