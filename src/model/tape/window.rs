//! Pooling over k x k windows with a stride (other than the 2x2 max pooling of `pool`, which
//! has its own kernel), as the sum of its k² strided views: `view(di, dj)` holds the window
//! elements at offset (di, dj), gathered by index, and the reverse pass adds a gradient back
//! through each view (index_add, so windows that overlap add up). Max pooling keeps, per
//! output, which view held the first maximum; its tangent map reads the tangent there.

use candle_core::{Result, Tensor};

/// A pooling as it ran.
pub(super) struct Window {
    max: bool,
    k: usize,
    /// The input's `[N, C, H, W]`.
    dims: Vec<usize>,
    /// Per offset, the rows (and columns) of the input it reads.
    rows: Vec<Tensor>,
    cols: Vec<Tensor>,
    /// Max pooling: per output, the view (`di·k + dj`) holding the maximum.
    which: Option<Tensor>,
}

/// Pools `x: [N, C, H, W]` in k x k windows with a stride. 2x2 average pooling gives the
/// values of the graph's op (`pool2`), whose order of additions differs from the views'.
pub(super) fn forward(x: &Tensor, max: bool, k: usize, stride: usize) -> Result<(Window, Tensor)> {
    let (_, _, h, w) = x.dims4()?;
    if k == 0 || stride == 0 || k > h || k > w {
        candle_core::bail!("pooling {k}x{k} with stride {stride} over {h}x{w}");
    }
    let (oh, ow) = ((h - k) / stride + 1, (w - k) / stride + 1);
    let dev = x.device();
    let index = |d: usize, n: usize| -> Result<Tensor> {
        let v: Vec<u32> = (0..n).map(|i| (i * stride + d) as u32).collect();
        Tensor::new(v.as_slice(), dev)
    };
    let rows = (0..k).map(|d| index(d, oh)).collect::<Result<Vec<_>>>()?;
    let cols = (0..k).map(|d| index(d, ow)).collect::<Result<Vec<_>>>()?;
    let mut pool = Window {
        max,
        k,
        dims: x.dims().to_vec(),
        rows,
        cols,
        which: None,
    };
    let mut acc: Option<Tensor> = None;
    let mut which: Option<Tensor> = None;
    for t in 0..k * k {
        let v = pool.view(x, t)?;
        acc = Some(match acc {
            None => {
                if max {
                    which = Some(v.zeros_like()?);
                }
                v
            }
            Some(a) if max => {
                let gt = v.gt(&a)?;
                let at = which.as_ref().expect("set with the first view");
                which = Some(gt.where_cond(&at.ones_like()?.affine(0.0, t as f64)?, at)?);
                gt.where_cond(&v, &a)?
            }
            Some(a) => (a + v)?,
        });
    }
    let acc = acc.expect("k ≥ 1");
    let out = if max {
        acc
    } else if k == 2 && stride == 2 {
        crate::model::pool2(x, false)?
    } else {
        (acc / (k * k) as f64)?
    };
    pool.which = which;
    Ok((pool, out))
}

impl Window {
    /// The elements of `x` at window offset `t` (`di·k + dj`): `[N, C, OH, OW]`.
    fn view(&self, x: &Tensor, t: usize) -> Result<Tensor> {
        let (di, dj) = (t / self.k, t % self.k);
        x.index_select(&self.rows[di], 2)?
            .index_select(&self.cols[dj], 3)
    }

    /// The adjoint of [`Window::view`]: `g: [N, C, OH, OW]` added back where it was read.
    fn unview(&self, g: &Tensor, t: usize) -> Result<Tensor> {
        let (di, dj) = (t / self.k, t % self.k);
        let (n, c, h, w) = (self.dims[0], self.dims[1], self.dims[2], self.dims[3]);
        let (dt, dev) = (g.dtype(), g.device());
        let g = g.contiguous()?;
        let wide =
            Tensor::zeros((n, c, g.dim(2)?, w), dt, dev)?.index_add(&self.cols[dj], &g, 3)?;
        Tensor::zeros((n, c, h, w), dt, dev)?.index_add(&self.rows[di], &wide, 2)
    }

    /// Where view `t` held the maximum, as 0 and 1 in `like`'s dtype.
    fn mask(&self, t: usize, like: &Tensor) -> Result<Tensor> {
        let which = self.which.as_ref().expect("max pooling");
        which.eq(t as f64)?.to_dtype(like.dtype())
    }

    /// The input's gradient from the output's.
    pub(super) fn back(&self, g: &Tensor) -> Result<Tensor> {
        let k2 = self.k * self.k;
        let g = if self.max {
            g.clone()
        } else {
            (g / k2 as f64)?
        };
        let mut acc: Option<Tensor> = None;
        for t in 0..k2 {
            let part = if self.max {
                self.unview(&(&g * self.mask(t, &g)?)?, t)?
            } else {
                self.unview(&g, t)?
            };
            acc = Some(match acc {
                None => part,
                Some(a) => (a + part)?,
            });
        }
        Ok(acc.expect("k ≥ 1"))
    }

    /// The output's tangent from the input's (the pooling is linear, or locally so).
    pub(super) fn tangent(&self, r: &Tensor) -> Result<Tensor> {
        let k2 = self.k * self.k;
        let mut acc: Option<Tensor> = None;
        for t in 0..k2 {
            let v = self.view(r, t)?;
            let part = if self.max {
                (&v * self.mask(t, &v)?)?
            } else {
                v
            };
            acc = Some(match acc {
                None => part,
                Some(a) => (a + part)?,
            });
        }
        let acc = acc.expect("k ≥ 1");
        if self.max { Ok(acc) } else { acc / k2 as f64 }
    }
}
