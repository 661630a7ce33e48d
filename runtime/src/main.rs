// berth starts at the C entry point, without the Rust runtime's start-up (its stack
// overflow handler, for which it reads /proc/self/maps and sets up an alternate signal
// stack): every command is a fresh process, and a container start pays that each time.
// std::env::args still works (glibc hands argv to std's initialiser); what the runtime
// start-up would have done that matters is done here: descriptors 0-2 open.
#![no_main]

#[no_mangle]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    berth::sys::ensure_stdio_open();
    // Like C tools: a closed stdout (e.g. `| head`) ends the process quietly (the
    // disposition may be inherited as ignored).
    berth::sys::default_sigpipe();
    // `exec` runs from a protected copy of the binary. Deciding from argv before clap
    // saves parsing the command line twice (before and after the re-exec); the check
    // after parsing below stays the authority.
    if berth::cli::argv_runs_protected(std::env::args_os().skip(1)) {
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
    if berth::cli::runs_protected(&cli.command) {
        protect_binary();
    }
    std::process::exit(berth::cli::dispatch(cli));
}

/// CVE-2019-5736: a container must never be able to write the host's berth binary.
/// `exec` runs from an unwritable image of the binary (re-executing if needed);
/// `create` and `run` decide once they know the container (see
/// `berth::process::exec_path`). Returns only when already protected.
fn protect_binary() {
    if berth::sys::memfd::running_protected() {
        return;
    }
    let err = berth::sys::memfd::reexec_protected();
    eprintln!("berth: re-executing from a protected copy of the binary: {err}");
    std::process::exit(1);
}
