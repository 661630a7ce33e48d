//! What Berth's packages ship that the code makes: shell completions (bash, zsh, fish) and
//! man pages, rendered by `clap_complete` and `clap_mangen` from the very clap definitions
//! the binaries parse their arguments with, so they cannot drift from `--help`.
//!
//! Each binary with a command line calls [`generate_if_requested`] first in `main`: when the
//! environment variable [`ENV`] names a directory, the binary writes its files there, prints
//! their paths and exits instead of running. `berth`'s files come from `berth-image`, which
//! holds the same definitions (`berth::cli`) and is installed beside it, so the runtime
//! binary (started for every container) carries no generator code. An environment variable
//! rather than a hidden subcommand: clap_complete's generators list hidden subcommands
//! too, so every shell would offer one.
//!
//! Layout under the directory (what `scripts/install` and the .deb install from):
//!
//! ```text
//! man/man1/PROG.1, PROG-SUB.1, PROG-SUB-SUB.1   one page per visible (sub)command
//! completions/bash/PROG
//! completions/zsh/_PROG
//! completions/fish/PROG.fish
//! ```
//!
//! This crate's Cargo.toml also holds the .deb's description for `cargo deb`
//! (`scripts/build-deb`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Command;
use clap_complete::Shell;
use clap_mangen::Man;

/// The environment variable that makes a binary write its completions and man pages.
pub const ENV: &str = "BERTH_GENERATE_DOCS";

/// The shells completions are written for, with the file name each one loads.
const SHELLS: [(Shell, &str); 3] = [(Shell::Bash, ""), (Shell::Zsh, "_"), (Shell::Fish, "")];

#[derive(Debug, thiserror::Error)]
pub enum DocsError {
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// When [`ENV`] is set (to a directory), writes `command()`'s files there, prints their
/// paths and returns the exit code; otherwise returns `None` and the binary runs as usual.
pub fn generate_if_requested(command: impl FnOnce() -> Command) -> Option<ExitCode> {
    let dir = std::env::var_os(ENV)?;
    let cmd = command();
    let name = cmd.get_name().to_string();
    match write_all(cmd, Path::new(&dir)) {
        Ok(paths) => {
            for p in paths {
                println!("{}", p.display());
            }
            Some(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{name}: {ENV}: {e}");
            Some(ExitCode::FAILURE)
        }
    }
}

/// Writes the man pages and completions of `cmd` under `dir` (layout in the module doc)
/// and returns the paths written.
pub fn write_all(cmd: Command, dir: &Path) -> Result<Vec<PathBuf>, DocsError> {
    let mut written = Vec::new();
    let man_dir = dir.join("man/man1");
    create_dir(&man_dir)?;
    // As clap_mangen::generate_to: no pages for the implicit `help` subcommand.
    let mut man_root = cmd.clone().disable_help_subcommand(true);
    man_root.build();
    man_pages(&man_root, &man_dir, &mut written)?;
    let name = cmd.get_name().to_string();
    for (shell, prefix) in SHELLS {
        let shell_dir = dir.join("completions").join(shell.to_string());
        create_dir(&shell_dir)?;
        let suffix = if shell == Shell::Fish { ".fish" } else { "" };
        let path = shell_dir.join(format!("{prefix}{name}{suffix}"));
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), &name, &mut text);
        write(&path, &text)?;
        written.push(path);
    }
    Ok(written)
}

/// One page for `cmd` and one for each visible subcommand, recursively.
fn man_pages(cmd: &Command, dir: &Path, written: &mut Vec<PathBuf>) -> Result<(), DocsError> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub, dir, written)?;
    }
    // Footer: project, version (in the date's place: a page made from the code has no
    // date of its own, and an empty one shifts the fields after it), page.
    let man = Man::new(cmd.clone())
        .source("Berth")
        .date(env!("CARGO_PKG_VERSION"))
        .manual("Berth Manual");
    let path = dir.join(man.get_filename());
    let mut text = Vec::new();
    man.render(&mut text).map_err(|source| DocsError::Write {
        path: path.clone(),
        source,
    })?;
    write(&path, &text)?;
    written.push(path);
    Ok(())
}

fn create_dir(dir: &Path) -> Result<(), DocsError> {
    std::fs::create_dir_all(dir).map_err(|source| DocsError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

fn write(path: &Path, text: &[u8]) -> Result<(), DocsError> {
    std::fs::write(path, text).map_err(|source| DocsError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Command {
        Command::new("tool")
            .version("1.0")
            .about("A sample")
            .arg(clap::arg!(--flag "A flag"))
            .subcommand(
                Command::new("group")
                    .about("A group")
                    .subcommand(Command::new("leaf").about("A leaf")),
            )
            .subcommand(Command::new("secret").hide(true))
    }

    fn names(paths: &[PathBuf], dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = paths
            .iter()
            .map(|p| {
                p.strip_prefix(dir)
                    .expect("under dir")
                    .display()
                    .to_string()
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_pages_for_visible_subcommands_and_three_completions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = write_all(sample(), dir.path()).expect("written");
        assert_eq!(
            names(&paths, dir.path()),
            [
                "completions/bash/tool",
                "completions/fish/tool.fish",
                "completions/zsh/_tool",
                "man/man1/tool-group-leaf.1",
                "man/man1/tool-group.1",
                "man/man1/tool.1",
            ]
        );
        let page = std::fs::read_to_string(dir.path().join("man/man1/tool.1")).expect("page");
        let th = page
            .lines()
            .find(|l| l.starts_with(".TH "))
            .expect("title line");
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(th, format!(".TH tool 1 {version} Berth \"Berth Manual\""));
        assert!(page.contains("\\-\\-flag"), "{page}");
        assert!(
            !page.contains("secret"),
            "a hidden subcommand is not documented: {page}"
        );
        let bash = std::fs::read_to_string(dir.path().join("completions/bash/tool")).expect("bash");
        assert!(bash.contains("complete -F _tool"), "{bash}");
        let leaf = std::fs::read_to_string(dir.path().join("man/man1/tool-group-leaf.1"))
            .expect("leaf page");
        assert!(leaf.contains("A leaf"), "{leaf}");
    }

    #[test]
    fn an_unwritable_directory_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("file");
        std::fs::write(&file, "x").expect("file");
        let e = write_all(sample(), &file).expect_err("a file is no directory");
        assert!(e.to_string().contains(&file.display().to_string()), "{e}");
    }
}
