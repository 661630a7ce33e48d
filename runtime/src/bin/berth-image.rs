//! `berth-image`: serves `berth image ...`, which `berth` hands over with exec. It can
//! also be run directly, with the same arguments (`berth-image image ls`). It also writes
//! `berth`'s completions and man pages (`BERTH_GENERATE_DOCS=DIR`, see berth-packaging),
//! so that the runtime binary carries no generator.

use clap::{CommandFactory, Parser};

/// `berth`'s whole command line: its own verbs, with `image` as berth-image parses it
/// (berth itself passes `image`'s arguments on untouched); the version plain (man's
/// VERSION section prints it after a "v", and `--version`'s runc-style text has two lines).
fn berth_command() -> clap::Command {
    let image = berth::cli::ImageCli::command()
        .find_subcommand("image")
        .cloned();
    berth::cli::Cli::command()
        .version(env!("CARGO_PKG_VERSION"))
        .mut_subcommand("image", |forward| image.unwrap_or(forward))
}

fn main() -> std::process::ExitCode {
    if let Some(code) = berth_packaging::generate_if_requested(berth_command) {
        return code;
    }
    berth::sys::default_sigpipe();
    let cli = match berth::cli::ImageCli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() { 1 } else { 0 });
        }
    };
    std::process::exit(berth::cli::dispatch_image(cli));
}
