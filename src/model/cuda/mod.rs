//! The model's own ops on a CUDA device, called from their `cuda_fwd`: convolutions by cuDNN
//! (`conv`); the per-channel passes of batch norm, channel biases and scales, ReLU, max
//! pooling and softmax cross-entropy by NVRTC-compiled kernels (`channels`). The backward passes are the CPU's: each op's gradient
//! is written with the others, so first- and second-order gradients work on both devices.

pub(crate) mod channels;
pub(crate) mod conv;
