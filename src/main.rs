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
    // A batch of 128 through a ResNet makes activations of tens of MiB; mimalloc hands freed
    // memory back to the system after 10 ms, so each step faulted those pages in again and the
    // kernel zeroed them (7% of a ResNet-18 step). Memory is kept for reuse instead; the
    // process's footprint stays its peak. MIMALLOC_PURGE_DELAY still overrides.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets an option before any thread exists; 15 is mi_option_purge_delay in
        // mimalloc 2 and 3, and -1 means never purge.
        unsafe { libmimalloc_sys::mi_option_set(15, -1) };
    }
    // GPU convolutions: AHTSGD_TF32=0 computes f32 convolutions in f32 rather than TF32;
    // AHTSGD_CUDNN_DETERMINISTIC=0 lets cuDNN pick algorithms whose sums vary run to run
    let off = |name: &str| std::env::var(name).is_ok_and(|v| v == "0");
    ahtsgd::model::set_tf32_convolutions(!off("AHTSGD_TF32"));
    ahtsgd::model::set_deterministic_convolutions(!off("AHTSGD_CUDNN_DETERMINISTIC"));
    std::process::exit(cli::run());
}
