//! 2-D convolution as three custom ops: the forward pass, the input gradient and the kernel
//! gradient. On the CPU each is an im2col/col2im around a GEMM (the `gemm` crate's kernels),
//! images in parallel; on CUDA each is cuDNN's (`cuda::conv`). Each op's backward pass is
//! written with the other two, so second-order gradients (Hessian-vector products) work
//! through them on both devices, and the input gradient is skipped when the input needs none
//! (the data, for the first layer). Other devices use candle's convolution.

use super::cpu::{f32_or_f64, view};
#[cfg(feature = "cuda")]
use super::cuda::conv as cudnn;
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

/// The geometry of one convolution: NCHW input, OIHW kernel, no groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Geom {
    pub(crate) n: usize,
    pub(crate) c: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) o: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) stride: usize,
    pub(crate) pad: usize,
    pub(crate) dil: usize,
}

impl Geom {
    pub(crate) fn oh(&self) -> usize {
        (self.h + 2 * self.pad - self.dil * (self.kh - 1) - 1) / self.stride + 1
    }
    pub(crate) fn ow(&self) -> usize {
        (self.w + 2 * self.pad - self.dil * (self.kw - 1) - 1) / self.stride + 1
    }
    /// Rows of the column matrix: C·kh·kw.
    fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }
    /// Columns of the column matrix: OH·OW.
    fn p(&self) -> usize {
        self.oh() * self.ow()
    }
    fn check(&self) -> Result<()> {
        if self.h + 2 * self.pad < self.dil * (self.kh - 1) + 1
            || self.w + 2 * self.pad < self.dil * (self.kw - 1) + 1
            || self.stride == 0
            || self.dil == 0
        {
            candle_core::bail!(
                "conv2d: a {}x{} kernel does not fit {}x{}",
                self.kh,
                self.kw,
                self.h,
                self.w
            );
        }
        Ok(())
    }
}

crate::simd::multiversion!(fn im2col<T: WithDType>(g: &Geom, img: &[T], cols: &mut [T], ld: usize) -> () = im2col_kernel);
crate::simd::multiversion!(fn col2im<T: WithDType>(g: &Geom, cols: &[T], ld: usize, img: &mut [T]) -> () = col2im_kernel);

/// `cols[(c·kh + i)·kw + j][y·OW + x] = img[c][y·s + i·d − p][x·s + j·d − p]` (0 outside),
/// the rows `ld` apart (several images' columns can sit side by side). Short rows are copied
/// by loops the compiler vectorises rather than by `memcpy` calls.
#[inline(always)]
fn im2col_kernel<T: WithDType>(g: &Geom, img: &[T], cols: &mut [T], ld: usize) {
    let (oh, ow) = (g.oh(), g.ow());
    if g.stride == 1 && ow == g.w {
        return im2col_same(g, img, cols, ld);
    }
    let (h, w, s) = (g.h as isize, g.w as isize, g.stride as isize);
    // the first output index at or after which x·s + shift ≥ 0, and the first at which it
    // reaches `w`
    let first_at = |bound: isize, shift: isize| -> usize {
        ((bound - shift).max(0) + s - 1) as usize / g.stride
    };
    for c in 0..g.c {
        let plane = &img[c * g.h * g.w..(c + 1) * g.h * g.w];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = ((c * g.kh + i) * g.kw + j) * ld;
                let shift = (j * g.dil) as isize - g.pad as isize;
                let x0 = first_at(0, shift).min(ow);
                let x1 = first_at(w, shift).clamp(x0, ow);
                for y in 0..oh {
                    let dst = &mut cols[row + y * ow..row + (y + 1) * ow];
                    let yy = (y * g.stride + i * g.dil) as isize - g.pad as isize;
                    if yy < 0 || yy >= h || x0 == x1 {
                        dst.iter_mut().for_each(|d| *d = T::zero());
                        continue;
                    }
                    let src = &plane[yy as usize * g.w..(yy as usize + 1) * g.w];
                    for d in &mut dst[..x0] {
                        *d = T::zero();
                    }
                    let from = (x0 as isize * s + shift) as usize;
                    for (d, v) in dst[x0..x1]
                        .iter_mut()
                        .zip(src[from..].iter().step_by(g.stride))
                    {
                        *d = *v;
                    }
                    for d in &mut dst[x1..] {
                        *d = T::zero();
                    }
                }
            }
        }
    }
}

/// `im2col` when the output rows are as wide as the input's (stride 1, "same" width): each
/// column row is the channel's plane shifted by one offset, so it is one contiguous copy, then
/// zeros over the rows and the edge columns that fall outside the image.
#[inline(always)]
fn im2col_same<T: WithDType>(g: &Geom, img: &[T], cols: &mut [T], ld: usize) {
    let (oh, ow, h, w) = (g.oh(), g.ow(), g.h as isize, g.w as isize);
    let plane = g.h * g.w;
    for c in 0..g.c {
        let src = &img[c * plane..(c + 1) * plane];
        for i in 0..g.kh {
            let di = (i * g.dil) as isize - g.pad as isize;
            // output rows whose source row lies inside the image
            let y0 = (-di).clamp(0, oh as isize) as usize;
            let y1 = (h - di).clamp(y0 as isize, oh as isize) as usize;
            for j in 0..g.kw {
                let dj = (j * g.dil) as isize - g.pad as isize;
                let x0 = (-dj).clamp(0, ow as isize) as usize;
                let x1 = (w - dj).clamp(x0 as isize, ow as isize) as usize;
                let row = ((c * g.kh + i) * g.kw + j) * ld;
                let dst = &mut cols[row..row + oh * ow];
                if y0 == y1 || x0 == x1 {
                    dst.fill(T::zero());
                    continue;
                }
                dst[..y0 * ow].fill(T::zero());
                dst[y1 * ow..].fill(T::zero());
                // from the first valid element to the last; the columns in between that wrap
                // around a row edge are zeroed below
                let (q0, q1) = (y0 * ow + x0, (y1 - 1) * ow + x1);
                let from = (q0 as isize + di * w + dj) as usize;
                dst[q0..q1].copy_from_slice(&src[from..from + (q1 - q0)]);
                // column by column: a few strided stores, where row by row would be a
                // `memset` call for one or two elements
                for x in (0..x0).chain(x1..ow) {
                    for y in y0..y1 {
                        dst[y * ow + x] = T::zero();
                    }
                }
            }
        }
    }
}

/// The adjoint of `im2col`: adds every column entry (rows `ld` apart) back to the pixel it
/// came from.
#[inline(always)]
fn col2im_kernel<T: WithDType>(g: &Geom, cols: &[T], ld: usize, img: &mut [T]) {
    let (oh, ow) = (g.oh(), g.ow());
    img.fill(T::zero());
    for c in 0..g.c {
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = ((c * g.kh + i) * g.kw + j) * ld;
                for y in 0..oh {
                    let yy = (y * g.stride + i * g.dil) as isize - g.pad as isize;
                    if yy < 0 || yy >= g.h as isize {
                        continue;
                    }
                    let base = (c * g.h + yy as usize) * g.w;
                    if g.stride == 1 {
                        let shift = (j * g.dil) as isize - g.pad as isize;
                        let x0 = (-shift).clamp(0, ow as isize) as usize;
                        let x1 = (g.w as isize - shift).clamp(x0 as isize, ow as isize) as usize;
                        let from = (x0 as isize + shift) as usize;
                        let src = &cols[row + y * ow + x0..row + y * ow + x1];
                        let dst = &mut img[base + from..base + from + (x1 - x0)];
                        for (d, v) in dst.iter_mut().zip(src) {
                            *d += *v;
                        }
                        continue;
                    }
                    for x in 0..ow {
                        let xx = (x * g.stride + j * g.dil) as isize - g.pad as isize;
                        if xx >= 0 && xx < g.w as isize {
                            img[base + xx as usize] += cols[row + y * ow + x];
                        }
                    }
                }
            }
        }
    }
}

/// `dst (m×n, row-major) = [dst +] a · b`, with `a` and `b` given by row and column strides.
#[allow(clippy::too_many_arguments)]
fn gemm_into<T: WithDType + 'static>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    accumulate: bool,
    a: &[T],
    a_rs: usize,
    a_cs: usize,
    b: &[T],
    b_rs: usize,
    b_cs: usize,
) {
    debug_assert!(dst.len() >= m * n);
    // SAFETY: dst holds m×n initialised values.
    unsafe {
        gemm_raw(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            accumulate,
            a,
            a_rs,
            a_cs,
            b,
            b_rs,
            b_cs,
        )
    }
}

/// [`gemm_into`] through a pointer: `dst` need not be initialised unless `accumulate`.
///
/// # Safety
/// `dst` is valid for writes of m×n elements (and reads, initialised, when `accumulate`);
/// `a` and `b` cover m×k and k×n under the given strides.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_raw<T: WithDType + 'static>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    accumulate: bool,
    a: &[T],
    a_rs: usize,
    a_cs: usize,
    b: &[T],
    b_rs: usize,
    b_cs: usize,
) {
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// How many images each parallel task takes.
fn per_task(n: usize) -> usize {
    let threads = candle_core::utils::get_num_threads().max(1);
    n.div_ceil(threads).max(1)
}

/// Images per GEMM in a task: enough that the GEMM has at least 256 columns (images ×
/// pixels), so small feature maps do not pay for packing the kernel once per image.
fn group(p: usize, per: usize) -> usize {
    256usize.div_ceil(p.max(1)).clamp(1, per.max(1))
}

/// Copies the gradients `dy` of `cnt` consecutive images (each O×P) side by side into
/// `dst` (O × cnt·P).
fn side_by_side<T: Copy>(dy: &[T], o: usize, p: usize, cnt: usize, dst: &mut [T]) {
    let ld = cnt * p;
    for i in 0..cnt {
        for r in 0..o {
            dst[r * ld + i * p..r * ld + (i + 1) * p]
                .copy_from_slice(&dy[(i * o + r) * p..(i * o + r + 1) * p]);
        }
    }
}

/// Runs `f` on this thread's scratch (kept between calls, so column matrices are neither
/// allocated nor zero-filled each time; the contents are whatever the last user left): a
/// column matrix for `gs` images (K × gs·P) and, when several images share a GEMM, an
/// O × gs·P matrix for their outputs or gradients side by side (empty otherwise).
fn with_scratch<T: WithDType + 'static, R>(
    g: &Geom,
    gs: usize,
    f: impl FnOnce(&mut [T], &mut [T]) -> R,
) -> R {
    use std::any::{Any, TypeId};
    use std::cell::RefCell;
    use std::collections::HashMap;
    thread_local! {
        static SCRATCH: RefCell<HashMap<TypeId, Box<dyn Any>>> = RefCell::new(HashMap::new());
    }
    let cols = g.k() * g.p() * gs;
    let n = cols + if gs > 1 { g.o * g.p() * gs } else { 0 };
    let mut buf: Vec<T> = SCRATCH
        .with(|s| s.borrow_mut().remove(&TypeId::of::<T>()))
        .and_then(|b| b.downcast::<Vec<T>>().ok())
        .map(|b| *b)
        .unwrap_or_default();
    if buf.len() < n {
        buf.resize(n, T::zero());
    }
    let (a, b) = buf[..n].split_at_mut(cols);
    let r = f(a, b);
    SCRATCH.with(|s| s.borrow_mut().insert(TypeId::of::<T>(), Box::new(buf)));
    r
}

/// out[n] = W (O×K) · im2col(x[n]) (K×P), several images per GEMM when P is small.
fn forward<T: WithDType + 'static>(g: &Geom, x: &[T], w: &[T]) -> Vec<T> {
    let (k, p) = (g.k(), g.p());
    let (img, outn) = (g.c * g.h * g.w, g.o * p);
    let per = per_task(g.n);
    let gs = group(p, per);
    let len = g.n * outn;
    // every element is written below, by a GEMM that does not read its output or by a copy
    let mut out: Vec<T> = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(outn * per)
        .enumerate()
        .for_each(|(t, chunk)| {
            with_scratch(g, gs, |cols, tmp| {
                for (gi, oc) in chunk.chunks_mut(outn * gs).enumerate() {
                    let (cnt, first) = (oc.len() / outn, t * per + gi * gs);
                    let ld = cnt * p;
                    for i in 0..cnt {
                        let src = &x[(first + i) * img..(first + i + 1) * img];
                        im2col(g, src, &mut cols[i * p..], ld);
                    }
                    if cnt == 1 {
                        // SAFETY: `oc` holds O×P elements; the GEMM only writes them.
                        unsafe {
                            gemm_raw(
                                g.o,
                                p,
                                k,
                                oc.as_mut_ptr().cast(),
                                false,
                                w,
                                k,
                                1,
                                cols,
                                p,
                                1,
                            )
                        };
                        continue;
                    }
                    gemm_into(g.o, ld, k, tmp, false, w, k, 1, cols, ld, 1);
                    for i in 0..cnt {
                        for r in 0..g.o {
                            let dst = &mut oc[i * outn + r * p..i * outn + (r + 1) * p];
                            for (d, v) in dst.iter_mut().zip(&tmp[r * ld + i * p..]) {
                                d.write(*v);
                            }
                        }
                    }
                }
            })
        });
    // SAFETY: every element below `len` was written above.
    unsafe { out.set_len(len) };
    out
}

/// dx[n] = col2im(Wᵀ (K×O) · dy[n] (O×P)), several images per GEMM when P is small.
fn back_data<T: WithDType + 'static>(g: &Geom, dy: &[T], w: &[T]) -> Vec<T> {
    // With stride 1 the input gradient is itself a convolution: of dy with the kernel flipped
    // in space and with its channel axes swapped, padded by kh − 1 − p. Its GEMM sums over
    // O·kh·kw instead of O, and im2col replaces col2im's scattered adds; it has C rows, so it
    // pays when C is at least 64 (6% on the ResNet-18 step, none on the CNN's 32 channels).
    if g.stride == 1 && g.dil == 1 && g.kh == g.kw && g.pad < g.kh && g.c >= 64 {
        let (kh, kw) = (g.kh, g.kw);
        let mut flipped = vec![T::zero(); w.len()];
        for o in 0..g.o {
            for c in 0..g.c {
                for i in 0..kh {
                    for j in 0..kw {
                        flipped[((c * g.o + o) * kh + kh - 1 - i) * kw + kw - 1 - j] =
                            w[((o * g.c + c) * kh + i) * kw + j];
                    }
                }
            }
        }
        let t = Geom {
            n: g.n,
            c: g.o,
            h: g.oh(),
            w: g.ow(),
            o: g.c,
            kh,
            kw,
            stride: 1,
            pad: kh - 1 - g.pad,
            dil: 1,
        };
        if (t.oh(), t.ow()) == (g.h, g.w) {
            return forward(&t, dy, &flipped);
        }
    }
    let (k, p) = (g.k(), g.p());
    let (img, outn) = (g.c * g.h * g.w, g.o * p);
    let per = per_task(g.n);
    let gs = group(p, per);
    let mut dx = vec![T::zero(); g.n * img];
    dx.par_chunks_mut(img * per)
        .enumerate()
        .for_each(|(t, chunk)| {
            with_scratch(g, gs, |cols, dyg| {
                for (gi, dc) in chunk.chunks_mut(img * gs).enumerate() {
                    let (cnt, first) = (dc.len() / img, t * per + gi * gs);
                    let ld = cnt * p;
                    let dy_n = &dy[first * outn..(first + cnt) * outn];
                    let src = if cnt == 1 {
                        dy_n
                    } else {
                        side_by_side(dy_n, g.o, p, cnt, dyg);
                        &dyg[..]
                    };
                    gemm_into(k, ld, g.o, cols, false, w, 1, k, src, ld, 1);
                    for (i, d) in dc.chunks_mut(img).enumerate() {
                        col2im(g, &cols[i * p..], ld, d);
                    }
                }
            })
        });
    dx
}

/// dW = Σₙ dy[n] (O×P) · im2col(x[n])ᵀ (P×K), several images per GEMM when P is small.
fn back_filter<T: WithDType + 'static>(g: &Geom, x: &[T], dy: &[T]) -> Vec<T> {
    let (k, p) = (g.k(), g.p());
    let (img, outn) = (g.c * g.h * g.w, g.o * p);
    let per = per_task(g.n);
    let gs = group(p, per);
    let partial: Vec<Vec<T>> = (0..g.n.div_ceil(per))
        .into_par_iter()
        .map(|t| {
            let mut acc = vec![T::zero(); g.o * k];
            with_scratch(g, gs, |cols, dyg| {
                let end = ((t + 1) * per).min(g.n);
                let mut first = t * per;
                while first < end {
                    let cnt = gs.min(end - first);
                    let ld = cnt * p;
                    for i in 0..cnt {
                        let src = &x[(first + i) * img..(first + i + 1) * img];
                        im2col(g, src, &mut cols[i * p..], ld);
                    }
                    let dy_n = &dy[first * outn..(first + cnt) * outn];
                    let a = if cnt == 1 {
                        dy_n
                    } else {
                        side_by_side(dy_n, g.o, p, cnt, dyg);
                        &dyg[..]
                    };
                    gemm_into(g.o, k, ld, &mut acc, true, a, ld, 1, cols, 1, ld);
                    first += cnt;
                }
            });
            acc
        })
        .collect();
    let mut dw = vec![T::zero(); g.o * k];
    for part in partial {
        for (d, v) in dw.iter_mut().zip(part) {
            *d += v;
        }
    }
    dw
}

fn geom(x: &[usize], w: &[usize], stride: usize, pad: usize, dil: usize) -> Result<Geom> {
    let (&[n, c, h, wd], &[o, c2, kh, kw]) = (x, w) else {
        candle_core::bail!("conv2d: input {x:?} and kernel {w:?} must be 4-D");
    };
    if c != c2 {
        candle_core::bail!("conv2d: input has {c} channels, kernel expects {c2}");
    }
    let g = Geom {
        n,
        c,
        h,
        w: wd,
        o,
        kh,
        kw,
        stride,
        pad,
        dil,
    };
    g.check()?;
    Ok(g)
}

/// The three ops share their settings; the geometry is read from the operands each time.
#[derive(Clone, Copy, Debug)]
struct Params {
    stride: usize,
    pad: usize,
    dil: usize,
}

/// y = conv(x, w)
struct Conv(Params);
/// dx = conv_back_data(dy, w), for an input of spatial size `h × w`
struct BackData(Params, usize, usize);
/// dw = conv_back_filter(x, dy), for a kernel of size `kh × kw`
struct BackFilter(Params, usize, usize);

#[cfg(feature = "cuda")]
fn same_dtype(op: &str, a: &CudaStorage, b: &CudaStorage) -> Result<()> {
    use candle_core::backend::BackendStorage;
    if a.dtype() != b.dtype() {
        candle_core::bail!("{op}: {:?} and {:?} operands", a.dtype(), b.dtype());
    }
    Ok(())
}

impl Conv {
    fn geometry(&self, x: &Layout, w: &Layout) -> Result<(Geom, Shape)> {
        let Params { stride, pad, dil } = self.0;
        let g = geom(x.dims(), w.dims(), stride, pad, dil)?;
        Ok((g, Shape::from((g.n, g.o, g.oh(), g.ow()))))
    }
}

impl BackData {
    fn geometry(&self, dy: &Layout, w: &Layout) -> Result<(Geom, Shape)> {
        let Params { stride, pad, dil } = self.0;
        let (&[n, o, oh, ow], &[o2, c, kh, kw]) = (dy.dims(), w.dims()) else {
            candle_core::bail!("conv2d back-data: 4-D operands");
        };
        let g = geom(&[n, c, self.1, self.2], &[o2, c, kh, kw], stride, pad, dil)?;
        if o != o2 || oh != g.oh() || ow != g.ow() {
            candle_core::bail!("conv2d back-data: gradient {:?} does not fit", dy.dims());
        }
        Ok((g, Shape::from((n, c, self.1, self.2))))
    }
}

impl BackFilter {
    fn geometry(&self, x: &Layout, dy: &Layout) -> Result<(Geom, Shape)> {
        let Params { stride, pad, dil } = self.0;
        let (&[n, c, h, wd], &[n2, o, oh, ow]) = (x.dims(), dy.dims()) else {
            candle_core::bail!("conv2d back-filter: 4-D operands");
        };
        let g = geom(&[n, c, h, wd], &[o, c, self.1, self.2], stride, pad, dil)?;
        if n != n2 || oh != g.oh() || ow != g.ow() {
            candle_core::bail!("conv2d back-filter: gradient {:?} does not fit", dy.dims());
        }
        Ok((g, Shape::from((o, c, self.1, self.2))))
    }
}

impl CustomOp2 for Conv {
    fn name(&self) -> &'static str {
        "ahtsgd-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, shape) = self.geometry(l1, l2)?;
        let out = f32_or_f64!(self.name(), s1, s2, |x, w| forward(
            &g,
            &view(x, l1),
            &view(w, l2)
        ));
        Ok((out, shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (g, shape) = self.geometry(l1, l2)?;
        same_dtype(self.name(), s1, s2)?;
        Ok((
            cudnn::run(cudnn::Op::Forward, &g, (s1, l1), (s2, l2))?,
            shape,
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (_, _, h, wd) = x.dims4()?;
        let (_, _, kh, kw) = w.dims4()?;
        let dx = if x.track_op() {
            Some(dy.apply_op2(w, BackData(self.0, h, wd))?)
        } else {
            None
        };
        let dw = if w.track_op() {
            Some(x.apply_op2(dy, BackFilter(self.0, kh, kw))?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

/// The settings of a convolution, in candle's argument order.
pub(crate) type Settings = (usize, usize, usize);

fn params((padding, stride, dilation): Settings) -> Params {
    Params {
        stride,
        pad: padding,
        dil: dilation,
    }
}

/// The input gradient of `conv2d(x, w, settings...)` (CPU) for an input of spatial size
/// `h × w`, from `dy`, the gradient of its output.
pub(crate) fn conv2d_back_data(
    dy: &Tensor,
    w: &Tensor,
    hw: (usize, usize),
    s: Settings,
) -> Result<Tensor> {
    dy.apply_op2(w, BackData(params(s), hw.0, hw.1))
}

/// The kernel gradient of `conv2d(x, w, settings...)` (CPU) for a `kh × kw` kernel, from `dy`.
pub(crate) fn conv2d_back_filter(
    x: &Tensor,
    dy: &Tensor,
    k: (usize, usize),
    s: Settings,
) -> Result<Tensor> {
    x.apply_op2(dy, BackFilter(params(s), k.0, k.1))
}

impl CustomOp2 for BackData {
    fn name(&self) -> &'static str {
        "ahtsgd-conv2d-back-data"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, shape) = self.geometry(l1, l2)?;
        let out = f32_or_f64!(self.name(), s1, s2, |dy, w| back_data(
            &g,
            &view(dy, l1),
            &view(w, l2)
        ));
        Ok((out, shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (g, shape) = self.geometry(l1, l2)?;
        same_dtype(self.name(), s1, s2)?;
        Ok((cudnn::run(cudnn::Op::Data, &g, (s1, l1), (s2, l2))?, shape))
    }

    /// Linear in both operands: the adjoints are the forward and the filter gradient.
    fn bwd(
        &self,
        dy: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        u: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (_, _, kh, kw) = w.dims4()?;
        let d_dy = if dy.track_op() {
            Some(u.apply_op2(w, Conv(self.0))?)
        } else {
            None
        };
        let d_w = if w.track_op() {
            Some(u.apply_op2(dy, BackFilter(self.0, kh, kw))?)
        } else {
            None
        };
        Ok((d_dy, d_w))
    }
}

impl CustomOp2 for BackFilter {
    fn name(&self) -> &'static str {
        "ahtsgd-conv2d-back-filter"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, shape) = self.geometry(l1, l2)?;
        let out = f32_or_f64!(self.name(), s1, s2, |x, dy| back_filter(
            &g,
            &view(x, l1),
            &view(dy, l2)
        ));
        Ok((out, shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (g, shape) = self.geometry(l1, l2)?;
        same_dtype(self.name(), s1, s2)?;
        Ok((
            cudnn::run(cudnn::Op::Filter, &g, (s1, l1), (s2, l2))?,
            shape,
        ))
    }

    /// Linear in both operands: the adjoints are the data gradient and the forward.
    fn bwd(
        &self,
        x: &Tensor,
        dy: &Tensor,
        _res: &Tensor,
        u: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (_, _, h, wd) = x.dims4()?;
        let d_x = if x.track_op() {
            Some(dy.apply_op2(u, BackData(self.0, h, wd))?)
        } else {
            None
        };
        let d_dy = if dy.track_op() {
            Some(x.apply_op2(u, Conv(self.0))?)
        } else {
            None
        };
        Ok((d_x, d_dy))
    }
}

/// `conv2d(x, w)` with candle's argument order (padding, stride, dilation; no groups).
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    padding: usize,
    stride: usize,
    dilation: usize,
) -> Result<Tensor> {
    if super::own_ops(x) {
        x.apply_op2(w, Conv(params((padding, stride, dilation))))
    } else {
        x.conv2d(w, padding, stride, dilation, 1)
    }
}

/// Per-channel ops on `x: [N, C, H, W]` with `v: [C]`: `x + v` (a bias) or `x · v` (a scale),
/// one parallel pass forward. Their gradients are themselves (for `x`) and one-pass channel
/// sums (for `v`), all differentiable; candle's broadcast ops reduce their gradients over
/// three axes with slow strided loops.
#[derive(Clone, Copy)]
enum PerChannel {
    Add,
    Scale,
}

impl CustomOp2 for PerChannel {
    fn name(&self) -> &'static str {
        match self {
            PerChannel::Add => "ahtsgd-add-channel-bias",
            PerChannel::Scale => "ahtsgd-channel-scale",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, c, h, w) = l1.shape().dims4()?;
        if l2.dims() != [c] {
            candle_core::bail!("{}: {:?} for {c} channels", self.name(), l2.dims());
        }
        fn go<T: WithDType>(
            op: PerChannel,
            x: &[T],
            lx: &Layout,
            v: &[T],
            lv: &Layout,
            plane: usize,
        ) -> Vec<T> {
            let (x, v) = (view(x, lx), view(v, lv));
            match op {
                PerChannel::Add => per_plane(&x, plane, &v, |x, c| x + c),
                PerChannel::Scale => per_plane(&x, plane, &v, |x, c| x * c),
            }
        }
        let op = *self;
        let out = f32_or_f64!(self.name(), s1, s2, |x, v| go(op, x, l1, v, l2, h * w));
        Ok((out, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (_, c, _, _) = l1.shape().dims4()?;
        if l2.dims() != [c] {
            candle_core::bail!("{}: {:?} for {c} channels", self.name(), l2.dims());
        }
        same_dtype(self.name(), s1, s2)?;
        let v = Some((s2, l2));
        let (a, b) = match self {
            PerChannel::Add => (None, v),
            PerChannel::Scale => (v, None),
        };
        let out = super::cuda::channels::affine((s1, l1), a, b, false)?;
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let gx = match self {
            _ if !x.track_op() => None,
            PerChannel::Add => Some(g.clone()),
            PerChannel::Scale => Some(g.apply_op2(v, PerChannel::Scale)?),
        };
        let gv = match self {
            _ if !v.track_op() => None,
            PerChannel::Add => Some(g.apply_op1(ChannelSum)?),
            PerChannel::Scale => Some((g * x)?.apply_op1(ChannelSum)?),
        };
        Ok((gx, gv))
    }
}

/// `f(x, v[channel])` for every element of `x`, planes of `plane` elements (one channel each,
/// channels cycling through `v`), in parallel.
fn per_plane<T: WithDType>(
    x: &[T],
    plane: usize,
    v: &[T],
    f: impl Fn(T, T) -> T + Sync + Copy,
) -> Vec<T> {
    let plane = plane.max(1);
    let per = ((1 << 14) / plane).max(1);
    super::cpu::map_chunks(x, plane * per, |t, xs, out| {
        for (k, (xp, op)) in xs.chunks(plane).zip(out.chunks_mut(plane)).enumerate() {
            plane_map(xp, op, v[(t * per + k) % v.len()], f);
        }
    })
}

/// `out = f(x, c)` element by element.
#[inline(always)]
fn plane_kernel<T: WithDType>(
    x: &[T],
    out: &mut [std::mem::MaybeUninit<T>],
    c: T,
    f: impl Fn(T, T) -> T + Copy,
) {
    for (o, &v) in out.iter_mut().zip(x) {
        o.write(f(v, c));
    }
}

crate::simd::multiversion!(fn plane_map<T: WithDType>(
    x: &[T],
    out: &mut [std::mem::MaybeUninit<T>],
    c: T,
    f: impl Fn(T, T) -> T + Copy,
) -> () = plane_kernel);

/// Sums `[N, C, H, W]` over everything but the channel: `[C]`.
struct ChannelSum;

impl candle_core::CustomOp1 for ChannelSum {
    fn name(&self) -> &'static str {
        "ahtsgd-channel-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, c, h, w) = l.shape().dims4()?;
        fn go<T: WithDType>(a: &[T], l: &Layout, c: usize, plane: usize) -> Vec<T> {
            super::bn::channel_sums(&view(a, l), c, plane, None)
        }
        let out = match s {
            CpuStorage::F32(a) => CpuStorage::F32(go(a, l, c, h * w)),
            CpuStorage::F64(a) => CpuStorage::F64(go(a, l, c, h * w)),
            _ => candle_core::bail!("channel sum: f32 or f64"),
        };
        Ok((out, Shape::from(c)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let (_, c, _, _) = l.shape().dims4()?;
        Ok((super::cuda::channels::sums(s, l)?, Shape::from(c)))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, u: &Tensor) -> Result<Option<Tensor>> {
        let (_, c, _, _) = arg.dims4()?;
        Ok(Some(u.reshape((1, c, 1, 1))?.broadcast_as(arg.shape())?))
    }
}

/// The sum of `[N, C, H, W]` over all but the channel: `[C]` (a channel bias's gradient).
pub(crate) fn channel_sum(g: &Tensor) -> Result<Tensor> {
    if super::own_ops(g) {
        g.apply_op1(ChannelSum)
    } else {
        g.sum((0, 2, 3))
    }
}

/// `x + b` with `b` broadcast over the batch and the pixels of each channel.
pub fn add_channel_bias(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    if super::own_ops(x) {
        x.apply_op2(b, PerChannel::Add)
    } else {
        x.broadcast_add(&b.reshape((1, (), 1, 1))?)
    }
}

/// `x · s` with `s: [C]` broadcast over the batch and the pixels of each channel.
pub fn scale_channels(x: &Tensor, s: &Tensor) -> Result<Tensor> {
    if super::own_ops(x) {
        x.apply_op2(s, PerChannel::Scale)
    } else {
        x.broadcast_mul(&s.reshape((1, (), 1, 1))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    fn var(shape: &[usize], seed: f64) -> Var {
        let n: usize = shape.iter().product();
        Var::from_tensor(
            &Tensor::arange(0f64, n as f64, &Device::Cpu)
                .unwrap()
                .affine(0.37, seed)
                .unwrap()
                .sin()
                .unwrap()
                .reshape(shape)
                .unwrap(),
        )
        .unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        crate::optim::sharpness::max_abs(&(a - b).unwrap()).unwrap()
    }

    /// Values, gradients and Hessian-vector products against candle's own convolution (f64),
    /// over kernel sizes, strides, padding and dilation.
    #[test]
    fn matches_candle_conv_at_first_and_second_order() {
        crate::optim::enable_second_order();
        for (x_shape, w_shape, pad, stride, dil) in [
            ([2, 3, 7, 6], [4, 3, 3, 3], 1, 1, 1),
            ([2, 3, 7, 7], [4, 3, 3, 3], 0, 2, 1),
            ([3, 2, 8, 8], [5, 2, 1, 1], 0, 2, 1),
            ([1, 2, 9, 7], [3, 2, 3, 2], 2, 1, 2),
            ([2, 4, 5, 5], [2, 4, 1, 1], 0, 1, 1),
            // stride 1 with output rows as wide as the input's: column rows as shifted planes
            ([2, 3, 6, 5], [4, 3, 3, 3], 2, 1, 2),
            ([2, 2, 4, 5], [3, 2, 1, 3], 1, 1, 1),
            ([1, 2, 3, 3], [2, 2, 5, 5], 2, 1, 1),
            // enough small images that several share one GEMM, with a partial last group
            ([11, 3, 4, 5], [4, 3, 3, 3], 1, 1, 1),
            // 64 input channels: the input gradient as a convolution with the flipped kernel
            ([3, 64, 5, 4], [4, 64, 3, 3], 1, 1, 1),
            ([2, 64, 4, 4], [3, 64, 1, 1], 0, 1, 1),
        ] {
            let what = format!("x {x_shape:?} w {w_shape:?} pad {pad} stride {stride} dil {dil}");
            let x = var(&x_shape, 0.1);
            let w = var(&w_shape, -0.3);
            let ours = |x: &Tensor, w: &Tensor| conv2d(x, w, pad, stride, dil).unwrap();
            let theirs = |x: &Tensor, w: &Tensor| x.conv2d(w, pad, stride, dil, 1).unwrap();
            let (yo, yt) = (
                ours(x.as_tensor(), w.as_tensor()),
                theirs(x.as_tensor(), w.as_tensor()),
            );
            assert_eq!(yo.dims(), yt.dims(), "{what}");
            assert!(max_diff(&yo, &yt) < 1e-12, "{what}: values");
            // A loss with a broadcast gradient (mean) and a non-linearity, so the HVP is non-zero.
            let loss = |y: Tensor| y.sqr().unwrap().mean_all().unwrap();
            let go = loss(yo).backward().unwrap();
            let gt = loss(yt).backward().unwrap();
            for v in [&x, &w] {
                let (a, b) = (
                    go.get(v.as_tensor()).unwrap(),
                    gt.get(v.as_tensor()).unwrap(),
                );
                assert!(max_diff(a, b) < 1e-12, "{what}: gradient");
            }
            let hvp = |g: &candle_core::backprop::GradStore| {
                let mut dot = Tensor::new(0f64, &Device::Cpu).unwrap();
                for (i, v) in [&x, &w].iter().enumerate() {
                    let dir = g
                        .get(v.as_tensor())
                        .unwrap()
                        .ones_like()
                        .unwrap()
                        .affine(1.0 + i as f64, 0.0)
                        .unwrap();
                    dot = (dot
                        + (g.get(v.as_tensor()).unwrap() * dir)
                            .unwrap()
                            .sum_all()
                            .unwrap())
                    .unwrap();
                }
                dot.backward().unwrap()
            };
            let (ho, ht) = (hvp(&go), hvp(&gt));
            let mut total = 0.0;
            for v in [&x, &w] {
                let (a, b) = (
                    ho.get(v.as_tensor()).unwrap(),
                    ht.get(v.as_tensor()).unwrap(),
                );
                assert!(max_diff(a, b) < 1e-10, "{what}: HVP");
                total += a
                    .abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap();
            }
            assert!(total > 0.0, "{what}: the HVP is not trivially zero");
        }
    }

    /// Where candle's own backward fails (stride 2 on a non-square input whose width is not
    /// covered evenly: its transposed convolution returns the wrong width), the gradient
    /// against central finite differences.
    #[test]
    fn strided_non_square_gradient_matches_finite_differences() {
        let x = var(&[1, 2, 7, 6], 0.2);
        let w = var(&[3, 2, 3, 3], -0.1);
        let loss = |x: &Tensor, w: &Tensor| {
            conv2d(x, w, 0, 2, 1)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let y = conv2d(x.as_tensor(), w.as_tensor(), 0, 2, 1).unwrap();
        let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&x, &w] {
            let base: Vec<f64> = v.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            let got: Vec<f64> = g
                .get(v.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for i in (0..base.len()).step_by(5) {
                let at = |d: f64| {
                    let mut b = base.clone();
                    b[i] += d;
                    Tensor::from_vec(b, v.shape(), &Device::Cpu).unwrap()
                };
                let eps = 1e-6;
                let fd = if std::ptr::eq(v, &x) {
                    (loss(&at(eps), w.as_tensor()) - loss(&at(-eps), w.as_tensor())) / (2.0 * eps)
                } else {
                    (loss(x.as_tensor(), &at(eps)) - loss(x.as_tensor(), &at(-eps))) / (2.0 * eps)
                };
                assert!(
                    (fd - got[i]).abs() < 1e-6 * (1.0 + fd.abs()),
                    "element {i}: {fd} vs {}",
                    got[i]
                );
            }
        }
    }

    #[test]
    fn channel_bias_matches_broadcast_add_at_first_and_second_order() {
        channel_op_matches_broadcast(add_channel_bias, |x, b| x.broadcast_add(b));
    }

    #[test]
    fn channel_scale_matches_broadcast_mul_at_first_and_second_order() {
        channel_op_matches_broadcast(scale_channels, |x, b| x.broadcast_mul(b));
    }

    /// A per-channel op against candle's broadcast op: values, gradients and HVPs.
    fn channel_op_matches_broadcast(
        ours: fn(&Tensor, &Tensor) -> Result<Tensor>,
        theirs: fn(&Tensor, &Tensor) -> Result<Tensor>,
    ) {
        crate::optim::enable_second_order();
        let x = var(&[2, 3, 4, 5], 0.4);
        let b = var(&[3], 1.1);
        let ours = ours(x.as_tensor(), b.as_tensor()).unwrap();
        let theirs = theirs(x.as_tensor(), &b.as_tensor().reshape((1, 3, 1, 1)).unwrap()).unwrap();
        assert!(max_diff(&ours, &theirs) < 1e-15);
        // loss = Σ y³: the HVP couples x and b.
        let loss = |y: Tensor| y.powf(3.0).unwrap().sum_all().unwrap();
        let (go, gt) = (
            loss(ours).backward().unwrap(),
            loss(theirs).backward().unwrap(),
        );
        for v in [&x, &b] {
            assert!(
                max_diff(
                    go.get(v.as_tensor()).unwrap(),
                    gt.get(v.as_tensor()).unwrap()
                ) < 1e-12
            );
        }
        let hvp = |g: &candle_core::backprop::GradStore| {
            let gx = g.get(x.as_tensor()).unwrap().sum_all().unwrap();
            let gb = g.get(b.as_tensor()).unwrap().sum_all().unwrap();
            (gx + gb).unwrap().backward().unwrap()
        };
        let (ho, ht) = (hvp(&go), hvp(&gt));
        for v in [&x, &b] {
            assert!(
                max_diff(
                    ho.get(v.as_tensor()).unwrap(),
                    ht.get(v.as_tensor()).unwrap()
                ) < 1e-10
            );
        }
    }

    #[test]
    fn data_gets_no_gradient_and_f32_agrees() {
        let x = Tensor::arange(0f32, 2.0 * 3.0 * 6.0 * 6.0, &Device::Cpu)
            .unwrap()
            .affine(0.01, -0.5)
            .unwrap()
            .reshape((2, 3, 6, 6))
            .unwrap();
        let w = Var::from_tensor(&Tensor::ones((4, 3, 3, 3), DType::F32, &Device::Cpu).unwrap())
            .unwrap();
        let y = conv2d(&x, w.as_tensor(), 1, 1, 1).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        assert!(g.get(&x).is_none() && g.get(w.as_tensor()).is_some());
        let t = x.conv2d(w.as_tensor(), 1, 1, 1, 1).unwrap();
        let d = (y - t)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-5);
        // A kernel that does not fit is an error, not a panic.
        assert!(
            conv2d(
                &x,
                &Tensor::ones((1, 3, 9, 9), DType::F32, &Device::Cpu).unwrap(),
                0,
                1,
                1
            )
            .is_err()
        );
        assert!(
            conv2d(
                &x,
                &Tensor::ones((1, 2, 3, 3), DType::F32, &Device::Cpu).unwrap(),
                0,
                1,
                1
            )
            .is_err()
        );
    }
}
