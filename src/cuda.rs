//! What the CUDA code shares (CUDA builds only): operands as packed device memory and their
//! addresses, output buffers, errors, and kernels compiled by NVRTC once per process.

use candle_core::{CudaStorage, DType, Layout, Result, backend::BackendStorage};
use cudarc::driver::{CudaStream, DevicePtr, SyncOnDrop};
use std::sync::OnceLock;

/// `src` compiled to PTX by NVRTC, once per process: `cell` keeps the result or the error,
/// `what` names the kernels in the error.
pub(crate) fn ptx_once(
    cell: &'static OnceLock<std::result::Result<String, String>>,
    src: &str,
    opts: cudarc::nvrtc::CompileOptions,
    what: &str,
) -> Result<&'static str> {
    cell.get_or_init(|| {
        cudarc::nvrtc::compile_ptx_with_opts(src, opts)
            .map(|p| p.to_src())
            .map_err(|e| e.to_string())
    })
    .as_deref()
    .map_err(|e| candle_core::Error::Msg(format!("compiling {what}: {e}")))
}

/// The CPU side of a custom op that runs on CUDA only (the CPU computes the same thing in
/// other ways): `cpu_fwd` refusing with `why`, one `_` per operand (`cuda_only!(_, _; "…")`).
macro_rules! cuda_only {
    ($($operand:tt),+; $why:literal) => {
        fn cpu_fwd(
            &self,
            $($operand: &candle_core::CpuStorage, _: &candle_core::Layout,)+
        ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
            candle_core::bail!("{}: {}", self.name(), $why)
        }
    };
}
pub(crate) use cuda_only;

pub(crate) fn err(e: impl std::error::Error + Send + Sync + 'static) -> candle_core::Error {
    candle_core::Error::Cuda(Box::new(e))
}

/// An operand's elements in row-major order: its own memory when its layout is contiguous, a
/// packed copy otherwise.
pub(crate) enum Packed<'a> {
    Own(&'a CudaStorage, usize),
    Copy(CudaStorage),
}

impl<'a> Packed<'a> {
    pub(crate) fn new(s: &'a CudaStorage, l: &Layout) -> Result<Self> {
        if l.is_contiguous() {
            return Ok(Packed::Own(s, l.start_offset()));
        }
        let mut dst = alloc_like(s, s.dtype(), l.shape().elem_count())?;
        s.copy_strided_src(&mut dst, 0, l)?;
        Ok(Packed::Copy(dst))
    }

    fn parts(&self) -> (&CudaStorage, usize) {
        match self {
            Packed::Own(s, o) => (s, *o),
            Packed::Copy(s) => (s, 0),
        }
    }

    /// The address of the first element, and the guard to drop once the read is scheduled.
    pub(crate) fn ptr<'s>(&'s self, stream: &'s CudaStream) -> Result<(u64, SyncOnDrop<'s>)> {
        let (s, o) = self.parts();
        address(s, o, stream)
    }
}

/// The address of element `o` of `s`, and the guard to drop once the access is scheduled.
pub(crate) fn address<'s>(
    s: &'s CudaStorage,
    o: usize,
    stream: &'s CudaStream,
) -> Result<(u64, SyncOnDrop<'s>)> {
    Ok(match s.dtype() {
        DType::F32 => {
            let (p, g) = s.as_cuda_slice::<f32>()?.device_ptr(stream);
            (p + 4 * o as u64, g)
        }
        DType::F64 => {
            let (p, g) = s.as_cuda_slice::<f64>()?.device_ptr(stream);
            (p + 8 * o as u64, g)
        }
        dt => candle_core::bail!("CUDA op: f32 or f64, not {dt:?}"),
    })
}

/// A new buffer of `n` elements of `dtype` on `s`'s device, zeroed or not.
fn buffer(s: &CudaStorage, dtype: DType, n: usize, zeroed: bool) -> Result<CudaStorage> {
    let stream = s.device.cuda_stream();
    macro_rules! make {
        ($t:ty) => {{
            let slice = if zeroed {
                stream.alloc_zeros::<$t>(n.max(1))
            } else {
                // SAFETY: `alloc_like`'s callers write all n elements before anything reads them.
                unsafe { stream.alloc::<$t>(n.max(1)) }
            };
            CudaStorage::wrap_cuda_slice(slice.map_err(err)?, s.device.clone())
        }};
    }
    Ok(match dtype {
        DType::F32 => make!(f32),
        DType::F64 => make!(f64),
        dt => candle_core::bail!("CUDA op: f32 or f64, not {dt:?}"),
    })
}

/// A new, unwritten buffer of `n` elements of `dtype` on `s`'s device (the caller's kernel
/// writes all of it).
pub(crate) fn alloc_like(s: &CudaStorage, dtype: DType, n: usize) -> Result<CudaStorage> {
    buffer(s, dtype, n, false)
}

/// A new buffer of `n` zeros of `dtype` on `s`'s device.
pub(crate) fn zeros_like(s: &CudaStorage, dtype: DType, n: usize) -> Result<CudaStorage> {
    buffer(s, dtype, n, true)
}
