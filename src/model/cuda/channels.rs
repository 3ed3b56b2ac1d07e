//! Launchers for `channels.cu`: per-channel sums and dot products, per-channel affine maps,
//! batch norm's input gradient, ReLU and its gradient, on NCHW tensors in f32 or f64.

use super::{Packed, address, alloc_like, err};
use candle_core::{CudaStorage, DType, Layout, Result, backend::BackendStorage};
use cudarc::driver::{LaunchConfig, PushKernelArg};
use std::sync::OnceLock;

const THREADS: u32 = 256;

fn ptx() -> Result<&'static str> {
    static PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    PTX.get_or_init(|| {
        cudarc::nvrtc::compile_ptx(include_str!("channels.cu"))
            .map(|p| p.to_src())
            .map_err(|e| e.to_string())
    })
    .as_deref()
    .map_err(|e| candle_core::Error::Msg(format!("compiling the channel kernels: {e}")))
}

/// Loads kernel `name` for the dtype of `s` (`CudaFunc` is not public: a macro, not a function).
macro_rules! kernel {
    ($s:expr, $name:expr) => {{
        let suffix = match $s.dtype() {
            DType::F32 => "f32",
            DType::F64 => "f64",
            dt => candle_core::bail!("{} on CUDA: f32 or f64, not {dt:?}", $name),
        };
        $s.device.get_or_load_custom_func(
            &format!("{}_{suffix}", $name),
            "ahtsgd_channels",
            ptx()?,
        )?
    }};
}

/// Fails unless every operand has the first one's dtype (the kernels take one type).
fn one_dtype(op: &str, first: &CudaStorage, rest: &[Option<&CudaStorage>]) -> Result<()> {
    for s in rest.iter().flatten() {
        if s.dtype() != first.dtype() {
            candle_core::bail!("{op}: {:?} and {:?} operands", first.dtype(), s.dtype());
        }
    }
    Ok(())
}

/// (images, channels, plane size) of an NCHW layout, as the kernels take them.
fn nchw(l: &Layout) -> Result<(u32, u32, u32)> {
    let (n, c, h, w) = l.shape().dims4()?;
    let fit = |v: usize| {
        u32::try_from(v).map_err(|_| candle_core::Error::Msg(format!("CUDA op: dimension {v}")))
    };
    if n * h * w > u32::MAX as usize {
        candle_core::bail!("CUDA channel op: {n}x{h}x{w} values per channel");
    }
    Ok((fit(n)?, fit(c)?, fit(h * w)?))
}

fn elementwise(total: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (
            (total.div_ceil(THREADS as usize)).clamp(1, 1 << 16) as u32,
            1,
            1,
        ),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn per_channel(c: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (c.max(1), 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn launch(b: &mut cudarc::driver::LaunchArgs<'_>, cfg: LaunchConfig) -> Result<()> {
    // SAFETY: every caller passes the argument list of the kernel it loaded (channels.cu),
    // with buffers of the sizes the kernel indexes.
    unsafe { b.launch(cfg) }.map(|_| ()).map_err(err)
}

/// `[k, C]` for `k` passes: each channel's Σx (`mean` false) or, with `mean`, its mean and
/// biased variance (the variance from the deviations, as on the CPU).
pub(crate) fn sums(s: &CudaStorage, l: &Layout, mean: bool) -> Result<CudaStorage> {
    let (n, c, plane) = nchw(l)?;
    let x = Packed::new(s, l)?;
    let rows = if mean { 2 } else { 1 };
    let out = alloc_like(s, s.dtype(), rows * c as usize)?;
    let stream = s.device.cuda_stream();
    let scale = if mean {
        1.0 / f64::from((n * plane).max(1))
    } else {
        1.0
    };
    let f = kernel!(s, "channel_sums");
    {
        let (px, _gx) = x.ptr(&stream)?;
        let (po, _go) = address(&out, 0, &stream)?;
        let null = 0u64;
        let mut b = f.builder();
        b.arg(&px)
            .arg(&null)
            .arg(&po)
            .arg(&n)
            .arg(&c)
            .arg(&plane)
            .arg(&scale);
        launch(&mut b, per_channel(c))?;
        if mean {
            let (pv, _gv) = address(&out, c as usize, &stream)?;
            let mut b = f.builder();
            b.arg(&px)
                .arg(&po)
                .arg(&pv)
                .arg(&n)
                .arg(&c)
                .arg(&plane)
                .arg(&scale);
            launch(&mut b, per_channel(c))?;
        }
    }
    Ok(out)
}

/// `[2, C]`: each channel's Σdy and Σdy·x.
pub(crate) fn sums_and_dots(
    dy: (&CudaStorage, &Layout),
    x: (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    let (n, c, plane) = nchw(dy.1)?;
    one_dtype("batch-norm sums", dy.0, &[Some(x.0)])?;
    let (g, v) = (Packed::new(dy.0, dy.1)?, Packed::new(x.0, x.1)?);
    let out = alloc_like(dy.0, dy.0.dtype(), 2 * c as usize)?;
    {
        let stream = dy.0.device.cuda_stream();
        let (pg, _gg) = g.ptr(&stream)?;
        let (pv, _gv) = v.ptr(&stream)?;
        let (ps, _gs) = address(&out, 0, &stream)?;
        let (pd, _gd) = address(&out, c as usize, &stream)?;
        let (null, one) = (0u64, 1.0f64);
        let f = kernel!(dy.0, "channel_sums");
        let mut b = f.builder();
        b.arg(&pg)
            .arg(&null)
            .arg(&ps)
            .arg(&n)
            .arg(&c)
            .arg(&plane)
            .arg(&one);
        launch(&mut b, per_channel(c))?;
        let f = kernel!(dy.0, "channel_dots");
        let mut b = f.builder();
        b.arg(&pg).arg(&pv).arg(&pd).arg(&n).arg(&c).arg(&plane);
        launch(&mut b, per_channel(c))?;
    }
    Ok(out)
}

/// `x·a[c] + b[c]` (either may be absent), through a ReLU when `relu`.
pub(crate) fn affine(
    x: (&CudaStorage, &Layout),
    a: Option<(&CudaStorage, &Layout)>,
    b: Option<(&CudaStorage, &Layout)>,
    relu: bool,
) -> Result<CudaStorage> {
    let (_, c, plane) = nchw(x.1)?;
    one_dtype("channel affine", x.0, &[a.map(|a| a.0), b.map(|b| b.0)])?;
    let total = x.1.shape().elem_count();
    let xs = Packed::new(x.0, x.1)?;
    let a = a.map(|(s, l)| Packed::new(s, l)).transpose()?;
    let b = b.map(|(s, l)| Packed::new(s, l)).transpose()?;
    let out = alloc_like(x.0, x.0.dtype(), total)?;
    {
        let stream = x.0.device.cuda_stream();
        let (px, _gx) = xs.ptr(&stream)?;
        let pa = a.as_ref().map(|p| p.ptr(&stream)).transpose()?;
        let pb = b.as_ref().map(|p| p.ptr(&stream)).transpose()?;
        let (po, _go) = address(&out, 0, &stream)?;
        let (pa0, pb0) = (
            pa.as_ref().map_or(0, |p| p.0),
            pb.as_ref().map_or(0, |p| p.0),
        );
        let (total64, relu) = (total as u64, i32::from(relu));
        let f = kernel!(x.0, "channel_affine");
        let mut bld = f.builder();
        bld.arg(&px)
            .arg(&pa0)
            .arg(&pb0)
            .arg(&po)
            .arg(&total64)
            .arg(&c)
            .arg(&plane)
            .arg(&relu);
        launch(&mut bld, elementwise(total))?;
    }
    Ok(out)
}

/// `g·k[0][c] + x·k[1][c] + k[2][c]` with `k: [3, C]`.
pub(crate) fn combine(
    g: (&CudaStorage, &Layout),
    x: (&CudaStorage, &Layout),
    k: (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    let (_, c, plane) = nchw(g.1)?;
    one_dtype("batch-norm input gradient", g.0, &[Some(x.0), Some(k.0)])?;
    if k.1.dims() != [3, c as usize] {
        candle_core::bail!("batch-norm input gradient: coefficients {:?}", k.1.dims());
    }
    let total = g.1.shape().elem_count();
    let (gs, xs, ks) = (
        Packed::new(g.0, g.1)?,
        Packed::new(x.0, x.1)?,
        Packed::new(k.0, k.1)?,
    );
    let out = alloc_like(g.0, g.0.dtype(), total)?;
    {
        let stream = g.0.device.cuda_stream();
        let (pg, _a) = gs.ptr(&stream)?;
        let (px, _b) = xs.ptr(&stream)?;
        let (pk, _c) = ks.ptr(&stream)?;
        let (po, _d) = address(&out, 0, &stream)?;
        let total64 = total as u64;
        let f = kernel!(g.0, "channel_combine");
        let mut b = f.builder();
        b.arg(&pg)
            .arg(&px)
            .arg(&pk)
            .arg(&po)
            .arg(&total64)
            .arg(&c)
            .arg(&plane);
        launch(&mut b, elementwise(total))?;
    }
    Ok(out)
}

/// `max(x, 0)` (NaN giving 0).
pub(crate) fn relu(s: &CudaStorage, l: &Layout) -> Result<CudaStorage> {
    let total = l.shape().elem_count();
    let x = Packed::new(s, l)?;
    let out = alloc_like(s, s.dtype(), total)?;
    {
        let stream = s.device.cuda_stream();
        let (px, _a) = x.ptr(&stream)?;
        let (po, _b) = address(&out, 0, &stream)?;
        let total64 = total as u64;
        let f = kernel!(s, "relu");
        let mut b = f.builder();
        b.arg(&px).arg(&po).arg(&total64);
        launch(&mut b, elementwise(total))?;
    }
    Ok(out)
}

/// `g` where `r > 0`, 0 elsewhere.
pub(crate) fn relu_back(
    g: (&CudaStorage, &Layout),
    r: (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    let total = g.1.shape().elem_count();
    let (gs, rs) = (Packed::new(g.0, g.1)?, Packed::new(r.0, r.1)?);
    let out = alloc_like(g.0, g.0.dtype(), total)?;
    {
        let stream = g.0.device.cuda_stream();
        let (pg, _a) = gs.ptr(&stream)?;
        let (pr, _b) = rs.ptr(&stream)?;
        let (po, _c) = address(&out, 0, &stream)?;
        let total64 = total as u64;
        let f = kernel!(g.0, "relu_back");
        let mut b = f.builder();
        b.arg(&pg).arg(&pr).arg(&po).arg(&total64);
        launch(&mut b, elementwise(total))?;
    }
    Ok(out)
}
