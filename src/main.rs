//! The `ahtsgd` command: parse arguments, call the library, render what comes back.

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

mod cli;

fn main() {
    std::process::exit(cli::run());
}
