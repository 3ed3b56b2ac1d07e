//! The α-stable fill on a CUDA device: `stable.cu`, compiled once per process by NVRTC, writes
//! the draws of the CPU's f32 kernel (same Philox stream, same operations) straight into device
//! memory, so noise never crosses the bus.

use candle_core::{CudaStorage, Layout, Result};
use cudarc::driver::{LaunchConfig, PushKernelArg};
use std::sync::OnceLock;

fn ptx() -> Result<&'static str> {
    static PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    PTX.get_or_init(|| {
        // No contraction: every fused multiply-add is an explicit fmaf, as on the CPU.
        let opts = cudarc::nvrtc::CompileOptions {
            fmad: Some(false),
            prec_div: Some(true),
            prec_sqrt: Some(true),
            ftz: Some(false),
            ..Default::default()
        };
        cudarc::nvrtc::compile_ptx_with_opts(include_str!("stable.cu"), opts)
            .map(|p| p.to_src())
            .map_err(|e| e.to_string())
    })
    .as_deref()
    .map_err(|e| candle_core::Error::Msg(format!("compiling the α-stable kernel: {e}")))
}

/// Fills a contiguous f32 CUDA buffer with draws `0..n` of stream `(key, step)`.
pub fn fill(
    storage: &mut CudaStorage,
    layout: &Layout,
    k: super::stable::Consts,
    key: [u32; 2],
    step: u64,
) -> Result<()> {
    if !layout.is_contiguous() || layout.start_offset() != 0 {
        candle_core::bail!("stable fill: needs a fresh contiguous tensor");
    }
    let n = layout.shape().elem_count();
    if n == 0 {
        return Ok(());
    }
    let dev = storage.device.clone();
    let func = dev.get_or_load_custom_func("stable_fill_f32", "ahtsgd_stable", ptx()?)?;
    let slice = storage.as_cuda_slice_mut::<f32>()?;
    let blocks = u32::try_from(n.div_ceil(2))
        .map_err(|_| candle_core::Error::Msg("stable fill: tensor too large".into()))?;
    let n64 = n as u64;
    let mut b = func.builder();
    b.arg(slice);
    b.arg(&n64);
    b.arg(&key[0]);
    b.arg(&key[1]);
    b.arg(&step);
    b.arg(&k.alpha);
    b.arg(&k.inv_alpha);
    b.arg(&k.ratio);
    b.arg(&k.a_head);
    // SAFETY: the argument list matches `stable_fill_f32` in stable.cu, and the kernel writes
    // only indices below n, the length of `slice`.
    unsafe { b.launch(LaunchConfig::for_num_elems(blocks)) }
        .map_err(|e| candle_core::Error::Cuda(Box::new(e)))?;
    Ok(())
}
