//! `berth-image`: serves `berth image ...`, which `berth` hands over with exec. It can
//! also be run directly, with the same arguments (`berth-image image ls`).

use clap::Parser;

fn main() {
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
