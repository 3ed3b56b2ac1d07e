//! The `ahtsgd` command: parse arguments, call the library, render what comes back.

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

mod cli;

fn main() {
    // `ahtsgd plan recipe.aht | head` must end quietly when the reader goes away, as Unix
    // tools do, rather than fail on every later print
    #[cfg(unix)]
    // SAFETY: restoring the default action of a signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::process::exit(cli::run());
}
