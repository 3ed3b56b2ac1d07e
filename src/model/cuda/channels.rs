//! Launchers for `channels.cu` on NCHW tensors in f32 or f64: channel sums, per-channel affine
//! maps, batch norm's fused training passes, ReLU and its gradient, max pooling and its
//! routing, softmax cross-entropy.

use crate::cuda::{Packed, address, alloc_like, err, ptx_once, zeros_like};
use candle_core::{CudaStorage, DType, Layout, Result, backend::BackendStorage};
use cudarc::driver::{LaunchConfig, PushKernelArg};
use std::sync::OnceLock;

const THREADS: u32 = 256;

fn ptx() -> Result<&'static str> {
    static PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    ptx_once(
        &PTX,
        include_str!("channels.cu"),
        Default::default(),
        "the channel kernels",
    )
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
    if n * c * h * w > u32::MAX as usize {
        candle_core::bail!(
            "CUDA channel op: {n}x{c}x{h}x{w} is more values than 32-bit indices reach"
        );
    }
    Ok((fit(n)?, fit(c)?, fit(h * w)?))
}

/// A grid-stride launch over `total` values (the kernels index them with 32 bits).
fn elementwise(total: usize) -> Result<LaunchConfig> {
    if total > u32::MAX as usize {
        candle_core::bail!("CUDA op: {total} values are more than 32-bit indices reach");
    }
    Ok(LaunchConfig {
        grid_dim: (
            (total.div_ceil(THREADS as usize)).clamp(1, 1 << 16) as u32,
            1,
            1,
        ),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    })
}

fn launch(b: &mut cudarc::driver::LaunchArgs<'_>, cfg: LaunchConfig) -> Result<()> {
    // SAFETY: every caller passes the argument list of the kernel it loaded (channels.cu),
    // with buffers of the sizes the kernel indexes.
    unsafe { b.launch(cfg) }.map(|_| ()).map_err(err)
}

/// How many blocks of images each channel's sum is split into: enough blocks to fill the GPU,
/// each with a few thousand values.
fn parts(n: u32, c: u32, plane: u32) -> u32 {
    let per_channel = n * plane;
    let by_size = per_channel.div_ceil(4096);
    let by_fill = 1024u32.div_ceil(c.max(1));
    by_size.min(by_fill).clamp(1, n.max(1))
}

/// Stage one of a channel reduction of `a` (centred on the `[C]` values at `centre` when that
/// is not 0; with `b`, Σa·b as a second row): each channel's partial sums, `parts` of them,
/// channel by channel.
fn partials(
    a: &Packed<'_>,
    b: Option<&Packed<'_>>,
    centre: u64,
    like: &CudaStorage,
    (n, c, plane): (u32, u32, u32),
) -> Result<(cudarc::driver::CudaSlice<f64>, u32)> {
    let stream = like.device.cuda_stream();
    let s = parts(n, c, plane);
    let rows = if b.is_some() { 2 * c } else { c };
    // SAFETY: the kernel writes every partial sum.
    let part = unsafe { stream.alloc::<f64>((rows * s) as usize) }.map_err(err)?;
    let (pa, _ga) = a.ptr(&stream)?;
    let pb = b.map(|b| b.ptr(&stream)).transpose()?;
    let pb0 = pb.as_ref().map_or(0, |p| p.0);
    let f = kernel!(like, "channel_partial_sums");
    let mut bld = f.builder();
    bld.arg(&pa)
        .arg(&pb0)
        .arg(&centre)
        .arg(&part)
        .arg(&n)
        .arg(&c)
        .arg(&plane);
    let grid = LaunchConfig {
        grid_dim: (c.max(1), s, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    launch(&mut bld, grid)?;
    Ok((part, s))
}

/// Both stages of a channel reduction of `a` (see [`partials`]): each channel's sum in order,
/// times `scale`, written at `out`.
fn reduce(
    a: &Packed<'_>,
    centre: u64,
    out: u64,
    like: &CudaStorage,
    dims: (u32, u32, u32),
    scale: f64,
) -> Result<()> {
    let (part, s) = partials(a, None, centre, like, dims)?;
    let rows = dims.1;
    let f = kernel!(like, "channel_finish_sums");
    let mut bld = f.builder();
    bld.arg(&part).arg(&out).arg(&rows).arg(&s).arg(&scale);
    launch(&mut bld, elementwise(rows as usize)?)
}

/// `[C]`: each channel's Σx.
pub(crate) fn sums(s: &CudaStorage, l: &Layout) -> Result<CudaStorage> {
    let dims = nchw(l)?;
    let x = Packed::new(s, l)?;
    let out = alloc_like(s, s.dtype(), dims.1 as usize)?;
    {
        let stream = s.device.cuda_stream();
        let (po, _go) = address(&out, 0, &stream)?;
        reduce(&x, 0, po, s, dims, 1.0)?;
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
        launch(&mut bld, elementwise(total)?)?;
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
        launch(&mut b, elementwise(total)?)?;
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
        launch(&mut b, elementwise(total)?)?;
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
        launch(&mut b, elementwise(total)?)?;
    }
    Ok(out)
}

/// Softmax cross-entropy of `z: [n, k]` against labels `y: [n]` (u32): `[n·k + n]` values, the
/// gradient (softmax − onehot)/n row by row, then each row's loss (NaN for a label out of
/// range).
pub(crate) fn softmax_xent(
    z: (&CudaStorage, &Layout),
    y: (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    use cudarc::driver::DevicePtr;
    let (n, k) = z.1.shape().dims2()?;
    if y.1.dims() != [n] || y.0.dtype() != DType::U32 || !y.1.is_contiguous() {
        candle_core::bail!(
            "cross-entropy: labels {:?} ({:?}) for {n} rows",
            y.1.dims(),
            y.0.dtype()
        );
    }
    let total = n * k + n;
    let (n32, k32) = (
        u32::try_from(n).map_err(|_| candle_core::Error::Msg("cross-entropy: rows".into()))?,
        u32::try_from(k).map_err(|_| candle_core::Error::Msg("cross-entropy: classes".into()))?,
    );
    elementwise(total)?;
    let zs = Packed::new(z.0, z.1)?;
    let out = alloc_like(z.0, z.0.dtype(), total)?;
    {
        let stream = z.0.device.cuda_stream();
        let (pz, _a) = zs.ptr(&stream)?;
        let (py, _b) = y.0.as_cuda_slice::<u32>()?.device_ptr(&stream);
        let py = py + 4 * y.1.start_offset() as u64;
        let (po, _c) = address(&out, 0, &stream)?;
        let f = kernel!(z.0, "softmax_xent");
        let mut b = f.builder();
        b.arg(&pz).arg(&py).arg(&po).arg(&n32).arg(&k32);
        let cfg = LaunchConfig {
            grid_dim: (n32.max(1), 1, 1),
            block_dim: (32, 1, 1),
            shared_mem_bytes: 0,
        };
        launch(&mut b, cfg)?;
    }
    Ok(out)
}

/// Batch norm in training mode: `[4, C]` = the batch mean, 1/√(var + ε), a = γ/√(var + ε) and
/// b = β − mean·a of `z`, with the batch folded into the running mean and variance in place.
#[allow(clippy::too_many_arguments)]
pub(crate) fn bn_train_stats(
    z: (&CudaStorage, &Layout),
    gamma: (&CudaStorage, &Layout),
    beta: (&CudaStorage, &Layout),
    running: (&CudaStorage, &CudaStorage),
    momentum: f64,
    eps: f64,
) -> Result<CudaStorage> {
    let dims = nchw(z.1)?;
    let (n, c, plane) = dims;
    one_dtype(
        "batch norm",
        z.0,
        &[
            Some(gamma.0),
            Some(beta.0),
            Some(running.0),
            Some(running.1),
        ],
    )?;
    if gamma.1.dims() != [c as usize] || beta.1.dims() != [c as usize] {
        candle_core::bail!(
            "batch norm: γ {:?}, β {:?} for {c} channels",
            gamma.1.dims(),
            beta.1.dims()
        );
    }
    let m = f64::from(n * plane);
    let x = Packed::new(z.0, z.1)?;
    let (g, b) = (Packed::new(gamma.0, gamma.1)?, Packed::new(beta.0, beta.1)?);
    let out = alloc_like(z.0, z.0.dtype(), 4 * c as usize)?;
    {
        let stream = z.0.device.cuda_stream();
        let (pm, _a) = address(&out, 0, &stream)?;
        reduce(&x, 0, pm, z.0, dims, 1.0 / m.max(1.0))?;
        let (part, s) = partials(&x, None, pm, z.0, dims)?;
        let (pg, _b) = g.ptr(&stream)?;
        let (pb, _c) = b.ptr(&stream)?;
        let (prm, _d) = address(running.0, 0, &stream)?;
        let (prv, _e) = address(running.1, 0, &stream)?;
        let f = kernel!(z.0, "bn_stats_finish");
        let mut bld = f.builder();
        bld.arg(&part)
            .arg(&s)
            .arg(&pm)
            .arg(&pg)
            .arg(&pb)
            .arg(&prm)
            .arg(&prv);
        bld.arg(&c).arg(&m).arg(&momentum).arg(&eps);
        // SAFETY (of the launch, in `launch`): the running statistics are written through
        // shared references; they are the batch norm's own buffers, read by nothing else here.
        launch(&mut bld, elementwise(c as usize)?)?;
    }
    Ok(out)
}

/// Batch norm's reverse pass from `dy`, the forward's input `z` and its stats
/// ([`bn_train_stats`]): `[5, C]` = dγ, dβ and the coefficients (c0, c1, c2) of the input
/// gradient dz = c0·dy + c1·z + c2.
pub(crate) fn bn_back_coefs(
    dy: (&CudaStorage, &Layout),
    z: (&CudaStorage, &Layout),
    stats: (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    let dims = nchw(dy.1)?;
    let (n, c, plane) = dims;
    one_dtype("batch-norm reverse pass", dy.0, &[Some(z.0), Some(stats.0)])?;
    if dy.1.dims() != z.1.dims() || stats.1.dims() != [4, c as usize] {
        candle_core::bail!(
            "batch-norm reverse pass: dy {:?}, z {:?}, stats {:?}",
            dy.1.dims(),
            z.1.dims(),
            stats.1.dims()
        );
    }
    let (g, x, st) = (
        Packed::new(dy.0, dy.1)?,
        Packed::new(z.0, z.1)?,
        Packed::new(stats.0, stats.1)?,
    );
    let out = alloc_like(dy.0, dy.0.dtype(), 5 * c as usize)?;
    {
        let stream = dy.0.device.cuda_stream();
        let (part, s) = partials(&g, Some(&x), 0, dy.0, dims)?;
        let (ps, _a) = st.ptr(&stream)?;
        let (po, _b) = address(&out, 0, &stream)?;
        let m = f64::from(n * plane);
        let f = kernel!(dy.0, "bn_back_finish");
        let mut bld = f.builder();
        bld.arg(&part).arg(&s).arg(&ps).arg(&po).arg(&c).arg(&m);
        launch(&mut bld, elementwise(c as usize)?)?;
    }
    Ok(out)
}

/// 2x2 max pooling of `x: [N, C, H, W]` (`way` 0: the maxima), or the routing at its windows'
/// maxima of `a` (1: pooled values scattered into the input's shape; 2: input-shaped values
/// gathered into the pooled shape).
pub(crate) fn pool2(
    x: (&CudaStorage, &Layout),
    a: Option<(&CudaStorage, &Layout)>,
    way: i32,
) -> Result<CudaStorage> {
    let (n, c, h, w) = x.1.shape().dims4()?;
    one_dtype("max pooling", x.0, &[a.map(|a| a.0)])?;
    let (planes, h32, w32) = (
        u32::try_from(n * c).map_err(|_| candle_core::Error::Msg("max pooling: planes".into()))?,
        h as u32,
        w as u32,
    );
    let windows = n * c * (h / 2) * (w / 2);
    let cfg = elementwise(n * c * h * w)?;
    let (xs, av) = (
        Packed::new(x.0, x.1)?,
        a.map(|(s, l)| Packed::new(s, l)).transpose()?,
    );
    let len = if way == 1 { n * c * h * w } else { windows };
    // scattering leaves zeros outside the maxima (and in a dropped odd row or column)
    let out = if way == 1 {
        zeros_like(x.0, x.0.dtype(), len)?
    } else {
        alloc_like(x.0, x.0.dtype(), len)?
    };
    {
        let stream = x.0.device.cuda_stream();
        let (px, _a) = xs.ptr(&stream)?;
        let pa = av.as_ref().map(|p| p.ptr(&stream)).transpose()?;
        let pa0 = pa.as_ref().map_or(0, |p| p.0);
        let (po, _c) = address(&out, 0, &stream)?;
        let f = kernel!(x.0, "pool2");
        let mut b = f.builder();
        b.arg(&px)
            .arg(&pa0)
            .arg(&po)
            .arg(&planes)
            .arg(&h32)
            .arg(&w32)
            .arg(&way);
        launch(&mut b, cfg)?;
    }
    Ok(out)
}
