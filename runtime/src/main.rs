use clap::Parser;

fn main() {
    let cli = berth::cli::Cli::parse();
    let code = match cli.command {
        berth::cli::Command::Image(args) => match berth::cli::image::run(&cli.global, args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("berth: {e:#}");
                1
            }
        },
    };
    std::process::exit(code);
}
