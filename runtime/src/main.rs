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
    let cli = match berth::cli::Cli::parse_args() {
        Ok(c) => c,
        Err(e) => {
            // Usage errors exit 1, as runc's do; --help and --version exit 0.
            let _ = e.print();
            std::process::exit(if e.use_stderr() { 1 } else { 0 });
        }
    };
    std::process::exit(berth::cli::dispatch(cli));
}
