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
    // candle's element-wise ops run on its own thread pool, whose workers spin for a while
    // after each op; our kernels and the GEMMs run on rayon's, so spinning workers take the
    // cores they need (Hessian-vector products on two threads were 1.1-1.3x slower)
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        // SAFETY: at start-up, before any thread exists.
        unsafe { std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "1") };
    }
    std::process::exit(cli::run());
}
