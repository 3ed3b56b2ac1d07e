//! The model's own ops on a CUDA device, called from their `cuda_fwd`: convolutions by cuDNN
//! (`conv`) and the per-channel passes of batch norm, channel biases and scales, and ReLU by
//! NVRTC-compiled kernels (`channels`). The backward passes are the CPU's: each op's gradient
//! is written with the others, so first- and second-order gradients work on both devices.

pub(crate) mod channels;
pub(crate) mod conv;

use candle_core::{CudaStorage, DType, Layout, Result, backend::BackendStorage};
use cudarc::driver::{CudaStream, DevicePtr, SyncOnDrop};

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
        let n = l.shape().elem_count();
        let stream = s.device.cuda_stream();
        // SAFETY: `copy_strided_src` writes all n elements.
        let mut dst = match s.dtype() {
            DType::F32 => CudaStorage::wrap_cuda_slice(
                unsafe { stream.alloc::<f32>(n) }.map_err(err)?,
                s.device.clone(),
            ),
            DType::F64 => CudaStorage::wrap_cuda_slice(
                unsafe { stream.alloc::<f64>(n) }.map_err(err)?,
                s.device.clone(),
            ),
            dt => candle_core::bail!("CUDA op: f32 or f64, not {dt:?}"),
        };
        s.copy_strided_src(&mut dst, 0, l)?;
        Ok(Packed::Copy(dst))
    }

    fn parts(&self) -> (&CudaStorage, usize) {
        match self {
            Packed::Own(s, o) => (s, *o),
            Packed::Copy(s) => (s, 0),
        }
    }

    /// The elements as a typed view.
    pub(crate) fn view<T: candle_core::cuda_backend::CudaDType>(
        &self,
    ) -> Result<cudarc::driver::CudaView<'_, T>> {
        let (s, o) = self.parts();
        Ok(s.as_cuda_slice::<T>()?.slice(o..))
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

/// A new, unwritten buffer of `n` elements of `dtype` on `s`'s device.
pub(crate) fn alloc_like(s: &CudaStorage, dtype: DType, n: usize) -> Result<CudaStorage> {
    let stream = s.device.cuda_stream();
    // SAFETY: every caller's kernel writes all n elements before anything reads them.
    Ok(match dtype {
        DType::F32 => CudaStorage::wrap_cuda_slice(
            unsafe { stream.alloc::<f32>(n.max(1)) }.map_err(err)?,
            s.device.clone(),
        ),
        DType::F64 => CudaStorage::wrap_cuda_slice(
            unsafe { stream.alloc::<f64>(n.max(1)) }.map_err(err)?,
            s.device.clone(),
        ),
        dt => candle_core::bail!("CUDA op: f32 or f64, not {dt:?}"),
    })
}
