//! 2x2 max pooling (stride 2) on the CPU as custom ops: the forward pass, the gradient routed to
//! each window's first maximum, and its adjoint (gathering at the maxima). Each op's backward is
//! another of them with the window maxima taken from the pooled input, so second-order gradients
//! work. One pass each way, where pooling by reshape costs a compare, a cast and a multiply over
//! the whole input in its backward pass. Other devices pool by reshape.

use super::cpu::{f32_or_f64, view};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, WithDType};

/// For each output cell of each plane, the flat input index of its window's first maximum.
fn argmax<T: WithDType>(x: &[T], planes: usize, h: usize, w: usize) -> Vec<usize> {
    let (oh, ow) = (h / 2, w / 2);
    let mut idx = Vec::with_capacity(planes * oh * ow);
    for p in 0..planes {
        let base = p * h * w;
        for y in 0..oh {
            for xx in 0..ow {
                let i0 = base + 2 * y * w + 2 * xx;
                let mut best = i0;
                for i in [i0 + 1, i0 + w, i0 + w + 1] {
                    if x[i] > x[best] {
                        best = i;
                    }
                }
                idx.push(best);
            }
        }
    }
    idx
}

fn dims(l: &Layout) -> Result<(usize, usize, usize, usize)> {
    l.shape().dims4()
}

/// Max over each 2x2 window.
struct MaxPool;
/// `[N, C, H/2, W/2]` values placed at the maxima of `x: [N, C, H, W]`, zeros elsewhere.
struct Scatter;
/// `u: [N, C, H, W]` read at the maxima of `x`: `[N, C, H/2, W/2]`.
struct Gather;

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "ahtsgd-max-pool2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = dims(l)?;
        fn go<T: WithDType>(x: &[T], l: &Layout, planes: usize, h: usize, w: usize) -> Vec<T> {
            let x = view(x, l);
            argmax(&x, planes, h, w).into_iter().map(|i| x[i]).collect()
        }
        let out = match s {
            CpuStorage::F32(x) => CpuStorage::F32(go(x, l, n * c, h, w)),
            CpuStorage::F64(x) => CpuStorage::F64(go(x, l, n * c, h, w)),
            _ => candle_core::bail!("max-pool: f32 or f64"),
        };
        Ok((out, Shape::from((n, c, h / 2, w / 2))))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(g.apply_op2(x, Scatter)?))
    }
}

impl CustomOp2 for Scatter {
    fn name(&self) -> &'static str {
        "ahtsgd-max-pool2-scatter"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = dims(l2)?;
        if dims(l1)? != (n, c, h / 2, w / 2) {
            candle_core::bail!(
                "max-pool scatter: {:?} for an input {:?}",
                l1.dims(),
                l2.dims()
            );
        }
        fn go<T: WithDType>(
            g: &[T],
            l1: &Layout,
            x: &[T],
            l2: &Layout,
            dims: (usize, usize, usize),
        ) -> Vec<T> {
            let (planes, h, w) = dims;
            let (g, x) = (view(g, l1), view(x, l2));
            let mut out = vec![T::zero(); x.len()];
            for (v, i) in g.iter().zip(argmax(&x, planes, h, w)) {
                out[i] = *v;
            }
            out
        }
        Ok((
            f32_or_f64!(self.name(), s1, s2, |a, b| go(a, l1, b, l2, (n * c, h, w))),
            l2.shape().clone(),
        ))
    }

    /// Linear in the gradient: its adjoint gathers at the same maxima; the maxima themselves
    /// do not move under small changes of `x` (almost everywhere), so `x` gets none.
    fn bwd(
        &self,
        _g: &Tensor,
        x: &Tensor,
        _res: &Tensor,
        u: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(u.apply_op2(x, Gather)?), None))
    }
}

impl CustomOp2 for Gather {
    fn name(&self) -> &'static str {
        "ahtsgd-max-pool2-gather"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = dims(l2)?;
        if dims(l1)? != (n, c, h, w) {
            candle_core::bail!(
                "max-pool gather: {:?} for an input {:?}",
                l1.dims(),
                l2.dims()
            );
        }
        fn go<T: WithDType>(
            u: &[T],
            l1: &Layout,
            x: &[T],
            l2: &Layout,
            dims: (usize, usize, usize),
        ) -> Vec<T> {
            let (planes, h, w) = dims;
            let (u, x) = (view(u, l1), view(x, l2));
            argmax(&x, planes, h, w).into_iter().map(|i| u[i]).collect()
        }
        Ok((
            f32_or_f64!(self.name(), s1, s2, |a, b| go(a, l1, b, l2, (n * c, h, w))),
            Shape::from((n, c, h / 2, w / 2)),
        ))
    }

    fn bwd(
        &self,
        _u: &Tensor,
        x: &Tensor,
        _res: &Tensor,
        v: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(v.apply_op2(x, Scatter)?), None))
    }
}

/// 2x2 max pooling with stride 2 (odd trailing rows and columns dropped), `[N, C, H, W]`.
pub fn max_pool2(x: &Tensor) -> Result<Tensor> {
    x.apply_op1(MaxPool)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Against pooling by reshape (candle's max, which is correct when there are no ties):
    /// values, gradients and HVPs, on an odd-sized input.
    #[test]
    fn matches_pooling_by_reshape_at_first_and_second_order() {
        crate::optim::enable_second_order();
        let (n, c, h, w) = (2, 3, 5, 7);
        // distinct values in a scrambled order, so every window has one maximum
        let vals: Vec<f64> = (0..n * c * h * w)
            .map(|i| ((i * 37 % 211) as f64) / 50.0 - 2.0)
            .collect();
        let x = Var::from_vec(vals, (n, c, h, w), &Device::Cpu).unwrap();
        let by_reshape = |x: &Tensor| {
            x.narrow(2, 0, h / 2 * 2)
                .unwrap()
                .narrow(3, 0, w / 2 * 2)
                .unwrap()
                .reshape((n, c, h / 2, 2, w / 2, 2))
                .unwrap()
                .max(5)
                .unwrap()
                .max(3)
                .unwrap()
        };
        let diff = |a: &Tensor, b: &Tensor| {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let (yo, yt) = (max_pool2(x.as_tensor()).unwrap(), by_reshape(x.as_tensor()));
        assert_eq!(diff(&yo, &yt), 0.0);
        let loss = |y: Tensor| y.powf(3.0).unwrap().mean_all().unwrap();
        let (go, gt) = (loss(yo).backward().unwrap(), loss(yt).backward().unwrap());
        let (a, b) = (
            go.get(x.as_tensor()).unwrap(),
            gt.get(x.as_tensor()).unwrap(),
        );
        assert!(diff(a, b) < 1e-15);
        let ho = a.sum_all().unwrap().backward().unwrap();
        let ht = b.sum_all().unwrap().backward().unwrap();
        let (ha, hb) = (
            ho.get(x.as_tensor()).unwrap(),
            ht.get(x.as_tensor()).unwrap(),
        );
        assert!(diff(ha, hb) < 1e-12);
        assert!(
            ha.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
                > 0.0
        );
    }

    /// With ties (a ReLU's zeros), the whole gradient goes to one element of the window.
    #[test]
    fn ties_route_the_gradient_once() {
        let x = Var::from_vec(vec![0.0f64; 4], (1, 1, 2, 2), &Device::Cpu).unwrap();
        let g = max_pool2(x.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gx: Vec<f64> = g
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(gx, [1.0, 0.0, 0.0, 0.0]);
    }
}
