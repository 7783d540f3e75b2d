//! `vmcs`: the command-line tool. See `vmcs --help`.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
