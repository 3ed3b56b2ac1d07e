//! What the CPU custom ops share: reading a tensor's storage in row-major order whatever its
//! layout, and running a kernel on f32 or f64 operands of one type.

use candle_core::Layout;

/// Visits the elements of a tensor in row-major order, whatever its layout.
pub(crate) fn elements<T: Copy>(data: &[T], l: &Layout) -> Vec<T> {
    match l.contiguous_offsets() {
        Some((a, b)) => data[a..b].to_vec(),
        None => {
            let (dims, strides) = (l.dims(), l.stride());
            let n: usize = dims.iter().product();
            let mut out = Vec::with_capacity(n);
            let mut idx = vec![0usize; dims.len()];
            let mut at = l.start_offset();
            for _ in 0..n {
                out.push(data[at]);
                // Advance the multi-index, last dimension fastest.
                for d in (0..dims.len()).rev() {
                    idx[d] += 1;
                    at += strides[d];
                    if idx[d] < dims[d] {
                        break;
                    }
                    at -= strides[d] * dims[d];
                    idx[d] = 0;
                }
            }
            out
        }
    }
}

/// A tensor's elements in row-major order: borrowed when contiguous, copied otherwise.
pub(crate) fn view<'a, T: Copy>(data: &'a [T], l: &Layout) -> std::borrow::Cow<'a, [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => std::borrow::Cow::Borrowed(&data[a..b]),
        None => std::borrow::Cow::Owned(elements(data, l)),
    }
}

/// Runs `$f(a)` on a storage of f32 or f64, or `$f(a, b)` on two storages of one float type,
/// and wraps the result in that type's storage; other types are an error naming `$op`.
macro_rules! f32_or_f64 {
    ($op:expr, $a:expr, $f:expr) => {
        match $a {
            CpuStorage::F32(a) => CpuStorage::F32($f(a)),
            CpuStorage::F64(a) => CpuStorage::F64($f(a)),
            _ => candle_core::bail!("{}: f32 or f64", $op),
        }
    };
    ($op:expr, $a:expr, $b:expr, $f:expr) => {
        match ($a, $b) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => CpuStorage::F32($f(a, b)),
            (CpuStorage::F64(a), CpuStorage::F64(b)) => CpuStorage::F64($f(a, b)),
            _ => candle_core::bail!("{}: f32 or f64 operands of one type", $op),
        }
    };
}
pub(crate) use f32_or_f64;

/// A new buffer the size of `x`, each chunk of `chunk` elements written by `f(chunk index,
/// input chunk, output chunk)` in parallel: one pass, without zero-filling or copying the
/// output first. `f` must write every element of its output chunk.
pub(crate) fn map_chunks<T, F>(x: &[T], chunk: usize, f: F) -> Vec<T>
where
    T: Copy + Send + Sync,
    F: Fn(usize, &[T], &mut [std::mem::MaybeUninit<T>]) + Sync,
{
    use rayon::prelude::*;
    let chunk = chunk.max(1);
    let mut out = Vec::with_capacity(x.len());
    out.spare_capacity_mut()[..x.len()]
        .par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk))
        .enumerate()
        .for_each(|(i, (o, c))| f(i, c, o));
    // SAFETY: every element below x.len() was written by `f` (its contract).
    unsafe { out.set_len(x.len()) };
    out
}
