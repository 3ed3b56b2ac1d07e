//! Convolutions by cuDNN: the forward pass, the input gradient and the kernel gradient of
//! [`Geom`], f32 or f64, NCHW. Each thread keeps a cuDNN handle on the device's stream, one
//! plan per geometry (descriptors, the algorithm, its workspace size: cuDNN's heuristics run
//! once per shape, not per call) and one workspace that grows to the largest plan's.
//! Algorithms are chosen among the deterministic ones by default, so a run repeats bit for bit.

use crate::cuda::{Packed, address, alloc_like, err};
use crate::model::conv::Geom;
use candle_core::{CudaStorage, DType, Layout, Result, backend::BackendStorage};
use cudarc::cudnn::{result as dnn, sys};
use cudarc::driver::{CudaSlice, DevicePtrMut};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};

static TF32: AtomicBool = AtomicBool::new(true);
static DETERMINISTIC: AtomicBool = AtomicBool::new(true);

/// Whether convolutions use only cuDNN's deterministic algorithms (on by default, so a run
/// repeats bit for bit; off, cuDNN's fastest guess, which may sum in a varying order).
pub fn set_deterministic(on: bool) {
    DETERMINISTIC.store(on, Ordering::Relaxed);
}

/// Whether f32 convolutions may use TF32 tensor cores (on by default, as in PyTorch; off, they
/// are computed with f32 fused multiply-adds).
pub fn set_tf32(on: bool) {
    TF32.store(on, Ordering::Relaxed);
}

/// The three convolution ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Op {
    /// `conv(x, w)` from (x, w).
    Forward,
    /// The input gradient from (dy, w).
    Data,
    /// The kernel gradient from (x, dy).
    Filter,
}

struct TensorDesc(sys::cudnnTensorDescriptor_t);
struct FilterDesc(sys::cudnnFilterDescriptor_t);
struct ConvDesc(sys::cudnnConvolutionDescriptor_t);

impl Drop for TensorDesc {
    fn drop(&mut self) {
        // SAFETY: created by `create_tensor_descriptor` and destroyed only here.
        let _ = unsafe { dnn::destroy_tensor_descriptor(self.0) };
    }
}
impl Drop for FilterDesc {
    fn drop(&mut self) {
        // SAFETY: as above.
        let _ = unsafe { dnn::destroy_filter_descriptor(self.0) };
    }
}
impl Drop for ConvDesc {
    fn drop(&mut self) {
        // SAFETY: as above.
        let _ = unsafe { dnn::destroy_convolution_descriptor(self.0) };
    }
}

#[derive(Clone, Copy)]
enum Algo {
    Forward(sys::cudnnConvolutionFwdAlgo_t),
    Data(sys::cudnnConvolutionBwdDataAlgo_t),
    Filter(sys::cudnnConvolutionBwdFilterAlgo_t),
}

/// Everything one geometry's op needs but the data.
struct Plan {
    x: TensorDesc,
    y: TensorDesc,
    w: FilterDesc,
    conv: ConvDesc,
    algo: Algo,
    workspace: usize,
}

struct Ctx {
    handle: sys::cudnnHandle_t,
    plans: HashMap<(Op, Geom, DType, bool, bool), Plan>,
    workspace: Option<CudaSlice<u8>>,
}

impl Drop for Ctx {
    fn drop(&mut self) {
        self.plans.clear();
        // SAFETY: the handle was created by `create_handle`; its descriptors are gone.
        let _ = unsafe { dnn::destroy_handle(self.handle) };
    }
}

thread_local! {
    static CTX: RefCell<HashMap<candle_core::cuda_backend::DeviceId, Ctx>> =
        RefCell::new(HashMap::new());
}

fn data_type(dt: DType) -> Result<sys::cudnnDataType_t> {
    Ok(match dt {
        DType::F32 => sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
        DType::F64 => sys::cudnnDataType_t::CUDNN_DATA_DOUBLE,
        _ => candle_core::bail!("conv2d on CUDA: f32 or f64, not {dt:?}"),
    })
}

fn dims(v: [usize; 4]) -> Result<[c_int; 4]> {
    let mut out = [0; 4];
    for (o, d) in out.iter_mut().zip(v) {
        *o = c_int::try_from(d)
            .map_err(|_| candle_core::Error::Msg(format!("conv2d on CUDA: dimension {d}")))?;
    }
    Ok(out)
}

fn tensor(dt: sys::cudnnDataType_t, d: [usize; 4]) -> Result<TensorDesc> {
    let t = TensorDesc(dnn::create_tensor_descriptor().map_err(err)?);
    let fmt = sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
    // SAFETY: a live descriptor.
    unsafe { dnn::set_tensor4d_descriptor(t.0, fmt, dt, dims(d)?) }.map_err(err)?;
    Ok(t)
}

/// Picks the first algorithm cuDNN ranks that succeeds (and is deterministic, unless that is
/// turned off).
fn pick<A: Copy>(
    what: &str,
    results: &[(A, sys::cudnnStatus_t, sys::cudnnDeterminism_t)],
) -> Result<A> {
    let deterministic = DETERMINISTIC.load(Ordering::Relaxed);
    results
        .iter()
        .find(|(_, s, d)| {
            *s == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS
                && (!deterministic || *d == sys::cudnnDeterminism_t::CUDNN_DETERMINISTIC)
        })
        .or_else(|| {
            results
                .iter()
                .find(|(_, s, _)| *s == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS)
        })
        .map(|r| r.0)
        .ok_or_else(|| candle_core::Error::Msg(format!("cuDNN has no algorithm for {what}")))
}

fn make_plan(h: sys::cudnnHandle_t, op: Op, g: &Geom, dtype: DType, tf32: bool) -> Result<Plan> {
    let dt = data_type(dtype)?;
    let x = tensor(dt, [g.n, g.c, g.h, g.w])?;
    let y = tensor(dt, [g.n, g.o, g.oh(), g.ow()])?;
    let w = FilterDesc(dnn::create_filter_descriptor().map_err(err)?);
    let fmt = sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
    // SAFETY: a live descriptor.
    unsafe { dnn::set_filter4d_descriptor(w.0, dt, fmt, dims([g.o, g.c, g.kh, g.kw])?) }
        .map_err(err)?;
    let conv = ConvDesc(dnn::create_convolution_descriptor().map_err(err)?);
    let [pad, stride, dil] = [g.pad, g.stride, g.dil].map(|v| v as c_int);
    let mode = sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION;
    let math = if dtype == DType::F32 && !tf32 {
        sys::cudnnMathType_t::CUDNN_FMA_MATH
    } else {
        sys::cudnnMathType_t::CUDNN_DEFAULT_MATH
    };
    // SAFETY: a live descriptor; every pointer below points at a live local.
    unsafe {
        dnn::set_convolution2d_descriptor(conv.0, pad, pad, stride, stride, dil, dil, mode, dt)
            .map_err(err)?;
        dnn::set_convolution_math_type(conv.0, math).map_err(err)?;
    }
    // The algorithms cuDNN ranks for the op (each op has its own query and perf-record type,
    // the descriptors in the order the op takes them), one picked, and its workspace size.
    macro_rules! choose {
        ($perf:ty, $variant:ident, $what:expr, $query:path, $size:path, ($($d:expr),*)) => {{
            let mut count: c_int = 0;
            let mut r = [std::mem::zeroed::<$perf>(); 8];
            $query(h, $($d),*, 8, &mut count, r.as_mut_ptr()).map_err(err)?;
            let found: Vec<_> = r[..count as usize]
                .iter()
                .map(|p| (p.algo, p.status, p.determinism))
                .collect();
            let a = pick($what, &found)?;
            (Algo::$variant(a), $size(h, $($d),*, a).map_err(err)?)
        }};
    }
    // SAFETY: live handle and descriptors; `r` holds the 8 records asked for.
    let (algo, workspace) = unsafe {
        match op {
            Op::Forward => choose!(
                sys::cudnnConvolutionFwdAlgoPerf_t,
                Forward,
                "the forward convolution",
                dnn::get_convolution_forward_algorithm,
                dnn::get_convolution_forward_workspace_size,
                (x.0, w.0, conv.0, y.0)
            ),
            Op::Data => choose!(
                sys::cudnnConvolutionBwdDataAlgoPerf_t,
                Data,
                "the input gradient",
                dnn::get_convolution_backward_data_algorithm,
                dnn::get_convolution_backward_data_workspace_size,
                (w.0, y.0, conv.0, x.0)
            ),
            Op::Filter => choose!(
                sys::cudnnConvolutionBwdFilterAlgoPerf_t,
                Filter,
                "the kernel gradient",
                dnn::get_convolution_backward_filter_algorithm,
                dnn::get_convolution_backward_filter_workspace_size,
                (x.0, y.0, conv.0, w.0)
            ),
        }
    };
    Ok(Plan {
        x,
        y,
        w,
        conv,
        algo,
        workspace,
    })
}

/// Runs `op` of geometry `g` on the operands' device: `a` and `b` are the operands in the
/// custom ops' order (forward: x, w; input gradient: dy, w; kernel gradient: x, dy).
pub(crate) fn run(
    op: Op,
    g: &Geom,
    a: (&CudaStorage, &Layout),
    b: (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    let dev = a.0.device.clone();
    let dtype = a.0.dtype();
    let tf32 = TF32.load(Ordering::Relaxed);
    let out_len = match op {
        Op::Forward => g.n * g.o * g.oh() * g.ow(),
        Op::Data => g.n * g.c * g.h * g.w,
        Op::Filter => g.o * g.c * g.kh * g.kw,
    };
    let (pa, pb) = (Packed::new(a.0, a.1)?, Packed::new(b.0, b.1)?);
    let stream = dev.cuda_stream();
    CTX.with(|ctx| {
        let mut ctx = ctx.borrow_mut();
        let c = match ctx.entry(dev.id()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let handle = dnn::create_handle().map_err(err)?;
                let c = e.insert(Ctx {
                    handle,
                    plans: HashMap::new(),
                    workspace: None,
                });
                // SAFETY: a live handle and the device's live stream.
                unsafe { dnn::set_stream(c.handle, stream.cu_stream() as _) }.map_err(err)?;
                c
            }
        };
        let key = (op, *g, dtype, tf32, DETERMINISTIC.load(Ordering::Relaxed));
        if !c.plans.contains_key(&key) {
            let p = make_plan(c.handle, op, g, dtype, tf32)?;
            c.plans.insert(key, p);
        }
        let plan = &c.plans[&key];
        if c.workspace
            .as_ref()
            .is_none_or(|w| w.len() < plan.workspace)
        {
            c.workspace = None;
            // SAFETY: cuDNN writes the workspace before reading it.
            c.workspace = Some(unsafe { stream.alloc::<u8>(plan.workspace.max(1)) }.map_err(err)?);
        }
        let ws = c.workspace.as_mut().expect("allocated above");
        let ws_len = ws.len();
        // cuDNN's scaling factors have the data's type for f32 and f64
        let (one, zero): (*const c_void, *const c_void) = match dtype {
            DType::F32 => (&1f32 as *const f32 as _, &0f32 as *const f32 as _),
            _ => (&1f64 as *const f64 as _, &0f64 as *const f64 as _),
        };
        let out = alloc_like(a.0, dtype, out_len)?;
        {
            let (pa, _ra) = pa.ptr(&stream)?;
            let (pb, _rb) = pb.ptr(&stream)?;
            let (po, _ro) = address(&out, 0, &stream)?;
            let (pw, _rw) = ws.device_ptr_mut(&stream);
            let (pa, pb) = (pa as *const c_void, pb as *const c_void);
            let (po, pw) = (po as *mut c_void, pw as *mut c_void);
            // SAFETY: the descriptors describe the packed operands and the output allocated
            // above (cuDNN writes all of it); the workspace holds at least the plan's size.
            unsafe {
                match plan.algo {
                    Algo::Forward(al) => dnn::convolution_forward(
                        c.handle,
                        one,
                        plan.x.0,
                        pa,
                        plan.w.0,
                        pb,
                        plan.conv.0,
                        al,
                        pw,
                        ws_len,
                        zero,
                        plan.y.0,
                        po,
                    ),
                    Algo::Data(al) => dnn::convolution_backward_data(
                        c.handle,
                        one,
                        plan.w.0,
                        pb,
                        plan.y.0,
                        pa,
                        plan.conv.0,
                        al,
                        pw,
                        ws_len,
                        zero,
                        plan.x.0,
                        po,
                    ),
                    Algo::Filter(al) => dnn::convolution_backward_filter(
                        c.handle,
                        one,
                        plan.x.0,
                        pa,
                        plan.y.0,
                        pb,
                        plan.conv.0,
                        al,
                        pw,
                        ws_len,
                        zero,
                        plan.w.0,
                        po,
                    ),
                }
            }
            .map_err(err)?;
        }
        Ok(out)
    })
}
