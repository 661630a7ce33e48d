use clap::Parser;

fn main() {
    // Like C tools: a closed stdout (e.g. `| head`) ends the process quietly.
    berth::sys::default_sigpipe();
    let cli = match berth::cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // Usage errors exit 1, as runc's do; --help and --version exit 0.
            let _ = e.print();
            std::process::exit(if e.use_stderr() { 1 } else { 0 });
        }
    };
    if berth::cli::enters_container(&cli.command)
        && !berth::sys::memfd::running_from_readonly_mount()
        && !berth::sys::memfd::running_from_sealed_memfd()
    {
        // CVE-2019-5736: a container must never be able to write the host's berth
        // binary. Cheapest first: re-exec through a read-only bind of it in a private
        // mount namespace; else from a sealed memfd copy.
        let _ = berth::sys::memfd::reexec_readonly_bind();
        let err = berth::sys::memfd::reexec_sealed();
        eprintln!("berth: re-executing from a sealed copy of the binary: {err}");
        std::process::exit(1);
    }
    std::process::exit(berth::cli::dispatch(cli));
}
