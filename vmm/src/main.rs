//! The `pathvm` command. Argument parsing and reporting live in `cli`; the
//! VMM itself is the `vmm` library.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
