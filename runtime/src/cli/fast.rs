//! A strict parser for the verbs engines call once per container (create, start, run,
//! state, delete, kill) in their plain forms, written by hand because clap builds its
//! command model on every invocation: about 0.1 ms of a 3 ms `run`, most of it the first
//! touches of clap's code and data in a fresh process.
//!
//! It accepts only what it recognises exactly: the verb's own flags and the global ones
//! (`--name value`, `--name=value`, a lone short flag), the verb's positionals, each flag
//! at most once. Anything else (help, version, unknown or repeated flags, combined short
//! flags, a value that looks like a flag or is empty, `--`, a missing or extra
//! positional, non-UTF-8) yields None and clap parses the line, so clap's behaviour and
//! messages stay the reference; the tests check that both agree on every line accepted
//! here.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

use super::{create, delete, kill, run, start, state, Cli, Command, GlobalOpts};

/// A flag: its long name, short letter, and whether it takes a value.
struct Flag {
    long: &'static str,
    short: Option<char>,
    value: bool,
}

const fn flag(long: &'static str, short: Option<char>, value: bool) -> Flag {
    Flag { long, short, value }
}

/// The global flags (clap's `global = true`: before or after the verb), without
/// `--criu`, which is left to clap.
const GLOBAL: &[Flag] = &[
    flag("root", None, true),
    flag("log", None, true),
    flag("log-format", None, true),
    flag("debug", None, false),
    flag("systemd-cgroup", None, false),
];

const CREATE: &[Flag] = &[
    flag("bundle", Some('b'), true),
    flag("console-socket", None, true),
    flag("pid-file", None, true),
    flag("no-pivot", None, false),
    flag("no-new-keyring", None, false),
    flag("preserve-fds", None, true),
];

/// `run`'s flags besides create's.
const RUN_ONLY: &[Flag] = &[
    flag("detach", Some('d'), false),
    flag("keep", None, false),
    flag("no-subreaper", None, false),
];

const DELETE: &[Flag] = &[flag("force", Some('f'), false)];
const KILL: &[Flag] = &[flag("all", Some('a'), false)];

/// The verb's flags (in groups) and how many positionals it takes (at least, at most).
fn verb_spec(verb: &str) -> Option<(&'static [&'static [Flag]], usize, usize)> {
    Some(match verb {
        "create" => (&[CREATE], 1, 1),
        "run" => (&[CREATE, RUN_ONLY], 1, 1),
        "start" | "state" => (&[], 1, 1),
        "delete" => (&[DELETE], 1, 1),
        "kill" => (&[KILL], 1, 2),
        _ => return None,
    })
}

/// What was given on the line: flags by long name (an empty value for a switch), and
/// the positionals after the verb.
#[derive(Default)]
struct Line<'a> {
    verb: Option<&'a str>,
    flags: BTreeMap<&'static str, &'a str>,
    positionals: Vec<&'a str>,
}

/// Parses `args` (argv, with the program name first), or None to leave it to clap.
pub fn parse(args: &[OsString]) -> Option<Cli> {
    let line = scan(args)?;
    let verb = line.verb?;
    let (_, min, max) = verb_spec(verb)?;
    if line.positionals.len() < min || line.positionals.len() > max {
        return None;
    }
    let global = GlobalOpts {
        root: PathBuf::from(line.flags.get("root").copied().unwrap_or("/run/berth")),
        log: line.flags.get("log").map(PathBuf::from),
        log_format: line
            .flags
            .get("log-format")
            .copied()
            .unwrap_or("text")
            .to_string(),
        debug: line.flags.contains_key("debug"),
        systemd_cgroup: line.flags.contains_key("systemd-cgroup"),
        criu: None,
    };
    Some(Cli {
        global,
        command: command(verb, &line)?,
    })
}

/// Splits the line into verb, flags and positionals; None for anything not plain.
fn scan(args: &[OsString]) -> Option<Line<'_>> {
    let mut line = Line::default();
    let mut words = args.iter().skip(1);
    while let Some(word) = words.next() {
        let word = word.to_str()?;
        let verb_flags = line.verb.and_then(verb_spec).map_or(&[][..], |s| s.0);
        let mut known = GLOBAL.iter().chain(verb_flags.iter().copied().flatten());
        let (f, inline) = if let Some(long) = word.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (long, None),
            };
            (known.find(|f| f.long == name)?, inline)
        } else if let Some(short) = word.strip_prefix('-') {
            let mut chars = short.chars();
            let (Some(c), None) = (chars.next(), chars.next()) else {
                return None;
            };
            (known.find(|f| f.short == Some(c))?, None)
        } else if line.verb.is_none() {
            verb_spec(word)?;
            line.verb = Some(word);
            continue;
        } else {
            line.positionals.push(word);
            continue;
        };
        let value = match (f.value, inline) {
            (false, None) => "",
            (false, Some(_)) => return None,
            (true, Some(v)) => v,
            (true, None) => words.next()?.to_str()?,
        };
        if f.value && (value.is_empty() || value.starts_with('-')) {
            return None;
        }
        if line.flags.insert(f.long, value).is_some() {
            return None;
        }
    }
    Some(line)
}

fn command(verb: &str, line: &Line<'_>) -> Option<Command> {
    let flag = |name: &str| line.flags.contains_key(name);
    let path = |name: &str| line.flags.get(name).map(PathBuf::from);
    let bundle = path("bundle").unwrap_or_else(|| PathBuf::from("."));
    let preserve_fds = match line.flags.get("preserve-fds") {
        Some(v) => v.parse().ok()?,
        None => 0,
    };
    let id = line.positionals.first()?.to_string();
    Some(match verb {
        "create" => Command::Create(create::CreateArgs {
            bundle,
            console_socket: path("console-socket"),
            pid_file: path("pid-file"),
            no_pivot: flag("no-pivot"),
            no_new_keyring: flag("no-new-keyring"),
            preserve_fds,
            id,
        }),
        "run" => Command::Run(run::RunArgs {
            bundle,
            console_socket: path("console-socket"),
            detach: flag("detach"),
            keep: flag("keep"),
            pid_file: path("pid-file"),
            no_pivot: flag("no-pivot"),
            no_new_keyring: flag("no-new-keyring"),
            no_subreaper: flag("no-subreaper"),
            preserve_fds,
            id,
        }),
        "start" => Command::Start(start::StartArgs { id }),
        "state" => Command::State(state::StateArgs { id }),
        "delete" => Command::Delete(delete::DeleteArgs {
            force: flag("force"),
            id,
        }),
        "kill" => Command::Kill(kill::KillArgs {
            all: flag("all"),
            id,
            signal: line
                .positionals
                .get(1)
                .copied()
                .unwrap_or("SIGTERM")
                .to_string(),
        }),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn argv(line: &str) -> Vec<OsString> {
        std::iter::once("berth")
            .chain(line.split(' ').filter(|w| !w.is_empty()))
            .map(Into::into)
            .collect()
    }

    /// The fast parse of `line`, checked against clap's: when it accepts a line, clap
    /// must parse it to the same command.
    fn agreed(line: &str) -> Option<Cli> {
        let args = argv(line);
        let fast = parse(&args)?;
        let full = Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(format!("{fast:?}"), format!("{full:?}"), "{line}");
        Some(fast)
    }

    #[test]
    fn the_engines_lines_parse_as_clap_parses_them() {
        for line in [
            "run c1",
            "--root /r run -d --bundle /b --pid-file /p --no-pivot c1",
            "--root=/r run --bundle=/b --keep --no-subreaper --preserve-fds 2 c1",
            "--log /l --log-format json create --bundle /b --console-socket /s --preserve-fds 2 c1",
            "create -b /b c1 --root /r2",
            "--systemd-cgroup create --no-new-keyring --pid-file=/p c1",
            "start c1",
            "--debug state c1",
            "kill c1 KILL",
            "kill --all c1 9",
            "kill -a c1",
            "delete --force c1",
            "delete -f c1 --log /l",
        ] {
            assert!(
                agreed(line).is_some(),
                "{line}: not taken by the fast parser"
            );
        }
    }

    #[test]
    fn anything_else_is_left_to_clap() {
        for line in [
            "",
            "list",
            "spec",
            "exec c1 sh",
            "--version",
            "run --help",
            "run -h c1",
            "run --bogus c1",
            "run -x c1",
            "run -dk c1",
            "run",
            "run c1 c2",
            "kill c1 KILL extra",
            "kill c1 -9",
            "run --bundle c1",
            "run --bundle -d c1",
            "run --bundle= c1",
            "run --bundle /a --bundle /b c1",
            "run -d --detach c1",
            "run --keep=true c1",
            "run --preserve-fds x c1",
            "run --preserve-fds -1 c1",
            "run -- c1",
            "--criu /c run c1",
            "state --force c1",
            "c1 run",
        ] {
            assert!(
                parse(&argv(line)).is_none(),
                "{line}: taken by the fast parser"
            );
        }
    }

    #[test]
    fn every_mix_of_words_it_takes_is_what_clap_makes_of_it() {
        // Lines put together from words the parser knows and words it must refuse; a
        // fixed-seed generator, so a failure names a line that can be replayed.
        let words = [
            "run",
            "create",
            "kill",
            "delete",
            "start",
            "state",
            "c1",
            "c2",
            "KILL",
            "-b",
            "/b",
            "--bundle",
            "--bundle=/x",
            "-d",
            "--detach",
            "--keep",
            "--root",
            "/r",
            "--root=/q",
            "--log",
            "--log-format",
            "json",
            "--debug",
            "-f",
            "--force",
            "-a",
            "--all",
            "--pid-file",
            "--preserve-fds",
            "3",
            "--",
            "-",
            "--help",
            "=",
            "",
        ];
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut taken = 0;
        for i in 0..20_000 {
            let n = 1 + (next() % 6) as usize;
            // Every other line starts with a verb and its id, so more of them are plain.
            let mut line = if i % 2 == 0 {
                vec![words[(next() % 6) as usize], "c1"]
            } else {
                Vec::new()
            };
            for _ in 0..n {
                line.push(words[(next() % words.len() as u64) as usize]);
            }
            taken += usize::from(agreed(&line.join(" ")).is_some());
        }
        // Not a vacuous pass: a good share of the lines took the fast path.
        assert!(taken > 500, "only {taken} lines taken");
    }
}
