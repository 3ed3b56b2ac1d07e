//! The α-stable fill on a CUDA device: `stable.cu`, compiled once per process by NVRTC, writes
//! the draws of the CPU's f32 kernel (same Philox stream, same operations) straight into device
//! memory, so noise never crosses the bus.

use candle_core::{CudaStorage, Layout, Result};
use cudarc::driver::{LaunchConfig, PushKernelArg};
use std::sync::OnceLock;

fn ptx() -> Result<&'static str> {
    static PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    // No contraction: every fused multiply-add is an explicit fmaf, as on the CPU.
    let opts = cudarc::nvrtc::CompileOptions {
        fmad: Some(false),
        prec_div: Some(true),
        prec_sqrt: Some(true),
        ftz: Some(false),
        ..Default::default()
    };
    crate::cuda::ptx_once(&PTX, include_str!("stable.cu"), opts, "the α-stable kernel")
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
    b.arg(&k.ratio);
    b.arg(&k.a_head);
    // SAFETY: the argument list matches `stable_fill_f32` in stable.cu, and the kernel writes
    // only indices below n, the length of `slice`.
    unsafe { b.launch(LaunchConfig::for_num_elems(blocks)) }.map_err(crate::cuda::err)?;
    Ok(())
}

/// What one fused update takes (see `update_f32` in stable.cu).
#[derive(Clone, Copy, Debug)]
pub(crate) struct UpdateArgs {
    pub(crate) key: [u32; 2],
    pub(crate) step: u64,
    /// The noise's law and scale, when there is noise.
    pub(crate) noise: Option<(super::stable::Consts, f32)>,
    /// Per-coordinate clip bounds (hi, lo).
    pub(crate) clip: Option<(f32, f32)>,
    /// The step's scalars, as the CPU's pass takes them.
    pub(crate) k: super::update::Coef<f32>,
}

/// Threads per block of the fused update, and its most blocks.
const THREADS: u32 = 256;
const MAX_BLOCKS: usize = 1024;

/// Blocks of the fused update for `n` values: the length of its statistics buffer is
/// `4 + 4·blocks + 1`.
pub(crate) fn update_blocks(n: usize) -> usize {
    n.div_ceil(2)
        .div_ceil(THREADS as usize)
        .clamp(1, MAX_BLOCKS)
}

/// The fused update of a contiguous f32 parameter `p` (from its first element) from its
/// gradient `g` and momentum buffer `m` (updated in place too), each contiguous from the
/// element offset given, and the statistics buffer `stats` (zeroed, `update_blocks` long).
pub(crate) fn update(
    p: &mut CudaStorage,
    g: (&CudaStorage, usize),
    m: Option<(&CudaStorage, usize)>,
    stats: &CudaStorage,
    n: usize,
    a: &UpdateArgs,
) -> Result<()> {
    use crate::cuda::address;
    let dev = p.device.clone();
    let stream = dev.cuda_stream();
    let blocks = update_blocks(n);
    let func = dev.get_or_load_custom_func("update_f32", "ahtsgd_stable", ptx()?)?;
    let (gp, _g) = address(g.0, g.1, &stream)?;
    let mp = m.map(|(m, o)| address(m, o, &stream)).transpose()?;
    let (sp, _s) = address(stats, 0, &stream)?;
    if stats.as_cuda_slice::<f64>()?.len() < 4 + 4 * blocks + 1 {
        candle_core::bail!("fused update: statistics buffer too short");
    }
    let mp0 = mp.as_ref().map_or(0u64, |m| m.0);
    let (k, scale) = a.noise.unwrap_or((super::stable::Consts::new(2.0), 0.0));
    let noise = i32::from(a.noise.is_some());
    let (hi, lo) = a.clip.unwrap_or((0.0, 0.0));
    let clip = i32::from(a.clip.is_some());
    let n64 = n as u64;
    let pslice = p.as_cuda_slice_mut::<f32>()?;
    let mut b = func.builder();
    b.arg(pslice).arg(&gp).arg(&mp0).arg(&n64);
    b.arg(&a.key[0]).arg(&a.key[1]).arg(&a.step);
    b.arg(&k.alpha).arg(&k.ratio).arg(&k.a_head);
    b.arg(&noise).arg(&scale).arg(&clip).arg(&hi).arg(&lo);
    let k = &a.k;
    b.arg(&k.lr)
        .arg(&k.wd)
        .arg(&k.gn)
        .arg(&k.ls)
        .arg(&k.mu)
        .arg(&k.c_dir)
        .arg(&k.c_buf);
    b.arg(&sp);
    let cfg = LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the argument list matches `update_f32` in stable.cu; p, g and m hold n values
    // (the caller checks), stats holds 4 + 4·blocks + 1. The momentum buffer is written
    // through a shared reference: it belongs to the optimizer's state alone.
    unsafe { b.launch(cfg) }.map_err(crate::cuda::err)?;
    Ok(())
}
