//! `x·wᵀ` as a custom op, so the backward pass skips the gradient of an input that needs none
//! (the data, for the first layer): candle's own matmul always computes both sides. The
//! backward is written with ordinary ops, so second-order gradients keep working.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, WithDType};

struct Linear;

fn gemm_xwt<T: WithDType + 'static>(
    x: &[T],
    lx: &Layout,
    w: &[T],
    lw: &Layout,
) -> Result<(Vec<T>, Shape)> {
    let (n, i) = lx.shape().dims2()?;
    let (o, i2) = lw.shape().dims2()?;
    if i != i2 {
        candle_core::bail!("linear: input has {i} features, weight expects {i2}");
    }
    let (sx, sw) = (lx.stride(), lw.stride());
    let mut dst = vec![T::zero(); n * o];
    let threads = candle_core::utils::get_num_threads();
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the pointers cover the tensors' layouts (offsets and strides from candle), and
    // dst is a fresh n×o row-major buffer.
    unsafe {
        gemm::gemm(
            n,
            o,
            i,
            dst.as_mut_ptr(),
            1,
            o as isize,
            false,
            x[lx.start_offset()..].as_ptr(),
            sx[1] as isize,
            sx[0] as isize,
            // rhs (k = input feature, j = output) is wᵀ
            w[lw.start_offset()..].as_ptr(),
            sw[0] as isize,
            sw[1] as isize,
            T::zero(),
            T::one(),
            false,
            false,
            false,
            par,
        );
    }
    Ok((dst, Shape::from((n, o))))
}

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "ahtsgd-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(w)) => {
                gemm_xwt(x, l1, w, l2).map(|(d, s)| (CpuStorage::F32(d), s))
            }
            (CpuStorage::F64(x), CpuStorage::F64(w)) => {
                gemm_xwt(x, l1, w, l2).map(|(d, s)| (CpuStorage::F64(d), s))
            }
            _ => candle_core::bail!("linear: f32 or f64 inputs of one type"),
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let gx = if x.track_op() {
            Some(grad.matmul(w)?)
        } else {
            None
        };
        let gw = if w.track_op() {
            Some(grad.t()?.matmul(x)?)
        } else {
            None
        };
        Ok((gx, gw))
    }
}

/// `x·wᵀ` for `x: [n, in]`, `w: [out, in]`.
pub fn xwt(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() {
        x.apply_op2(w, Linear)
    } else {
        x.matmul(&w.t()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn matches_matmul_and_its_gradients() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(
            &Tensor::arange(0f64, 24.0, &dev)
                .unwrap()
                .reshape((4, 6))
                .unwrap()
                .affine(0.1, -1.0)
                .unwrap(),
        )
        .unwrap();
        let w = Var::from_tensor(
            &Tensor::arange(0f64, 18.0, &dev)
                .unwrap()
                .reshape((3, 6))
                .unwrap()
                .affine(-0.05, 0.4)
                .unwrap(),
        )
        .unwrap();
        let ours = xwt(x.as_tensor(), w.as_tensor()).unwrap();
        let theirs = x.as_tensor().matmul(&w.as_tensor().t().unwrap()).unwrap();
        assert_eq!(
            ours.to_vec2::<f64>().unwrap(),
            theirs.to_vec2::<f64>().unwrap()
        );
        let g1 = ours.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = theirs.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&x, &w] {
            let (a, b) = (
                g1.get(v.as_tensor()).unwrap(),
                g2.get(v.as_tensor()).unwrap(),
            );
            assert_eq!(a.to_vec2::<f64>().unwrap(), b.to_vec2::<f64>().unwrap());
        }
        // a transposed (strided) input
        let xt = Tensor::arange(0f64, 24.0, &dev)
            .unwrap()
            .reshape((6, 4))
            .unwrap()
            .t()
            .unwrap();
        let a = xwt(&xt, w.as_tensor()).unwrap().to_vec2::<f64>().unwrap();
        let b = xt
            .matmul(&w.as_tensor().t().unwrap())
            .unwrap()
            .to_vec2::<f64>()
            .unwrap();
        assert_eq!(a, b);
        // data that needs no gradient gets none
        let data = Tensor::ones((4, 6), candle_core::DType::F64, &dev).unwrap();
        let g = xwt(&data, w.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(g.get(&data).is_none() && g.get(w.as_tensor()).is_some());
    }
}
