fn main() {
    // Like C tools: a closed stdout (e.g. `| head`) ends the process quietly.
    berth::sys::default_sigpipe();
    // Commands that enter a container run from a protected copy of the binary. Deciding
    // from argv before clap saves parsing the command line twice (before and after the
    // re-exec); the check after parsing below stays the authority.
    if berth::cli::argv_enters_container(std::env::args_os().skip(1)) {
        protect_binary();
    }
    let cli = match berth::cli::Cli::parse_args() {
        Ok(c) => c,
        Err(e) => {
            // Usage errors exit 1, as runc's do; --help and --version exit 0.
            let _ = e.print();
            std::process::exit(if e.use_stderr() { 1 } else { 0 });
        }
    };
    if berth::cli::enters_container(&cli.command) {
        protect_binary();
    }
    std::process::exit(berth::cli::dispatch(cli));
}

/// CVE-2019-5736: a container must never be able to write the host's berth binary.
/// Unless it already runs from a read-only mount or a sealed memfd, re-exec (cheapest
/// first) from a private read-only overlay of its directory, else through a read-only
/// bind of it in a private mount namespace, else from a sealed memfd copy. Returns only
/// when already protected.
fn protect_binary() {
    if berth::sys::memfd::running_from_readonly_mount()
        || berth::sys::memfd::running_from_sealed_memfd()
    {
        return;
    }
    // The overlay's second, empty layer: outside the default --root, where it could be
    // taken for a container.
    let _ =
        berth::sys::memfd::reexec_readonly_overlay(std::path::Path::new("/run/berth-exe-lower"));
    let _ = berth::sys::memfd::reexec_readonly_bind();
    let err = berth::sys::memfd::reexec_sealed();
    eprintln!("berth: re-executing from a sealed copy of the binary: {err}");
    std::process::exit(1);
}
