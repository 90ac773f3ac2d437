//! The `berth` binary.

fn main() {
    std::process::exit(berth_cli::cli::run(std::env::args_os()));
}
