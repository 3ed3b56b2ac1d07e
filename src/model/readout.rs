//! How a model's output meets its labels: rows of logits against one label each (`[n, k]`
//! and `[n]`); a sequence's logits at its last position against one label per sequence
//! (`[n, t, k]` and `[n]`: a modular task's answer, predicted at its `=`); or every
//! position's logits against a label each (`[n, t, k]` and `[n, t]`: a text's next bytes).
//! The loss is the mean over the rows it reads.

use candle_core::{Result, Tensor};

/// Which logits the loss reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readout {
    Rows,
    /// The last of `t` positions.
    Last {
        n: usize,
        t: usize,
        k: usize,
    },
    /// Every one of `t` positions, as `n·t` rows.
    Every {
        n: usize,
        t: usize,
        k: usize,
    },
}

impl Readout {
    /// The readout of `logits` against labels `y`, or why they do not fit.
    pub fn of(logits: &Tensor, y: &Tensor) -> Result<Readout> {
        match (logits.dims(), y.dims()) {
            (&[_, _], &[_]) => Ok(Readout::Rows),
            (&[n, t, k], &[m]) if m == n && t > 0 => Ok(Readout::Last { n, t, k }),
            (&[n, t, k], &[m, u]) if m == n && u == t => Ok(Readout::Every { n, t, k }),
            (l, y) => candle_core::bail!(
                "the model's output {l:?} does not fit labels {y:?}: a sequence model's output is read at its last position or at every position"
            ),
        }
    }

    /// The rows of logits the loss reads, `[rows, k]`.
    pub fn rows(&self, logits: &Tensor) -> Result<Tensor> {
        match *self {
            Readout::Rows => Ok(logits.clone()),
            // contiguous: the device's loss kernel reads rows in place
            Readout::Last { n, t, k } => logits.narrow(1, t - 1, 1)?.contiguous()?.reshape((n, k)),
            Readout::Every { n, t, k } => logits.reshape((n * t, k)),
        }
    }

    /// The labels as one per row, `[rows]`.
    pub fn labels(&self, y: &Tensor) -> Result<Tensor> {
        match self {
            Readout::Every { .. } => y.flatten_all(),
            _ => Ok(y.clone()),
        }
    }

    /// The adjoint of [`Readout::rows`]: a gradient over the rows read, as one over the
    /// model's whole output (zero at the positions not read).
    pub fn back(&self, g: Tensor) -> Result<Tensor> {
        match *self {
            Readout::Rows => Ok(g),
            Readout::Last { n, t, k } => {
                let last = g.reshape((n, 1, k))?;
                if t == 1 {
                    return Ok(last);
                }
                let before = Tensor::zeros((n, t - 1, k), g.dtype(), g.device())?;
                Tensor::cat(&[&before, &last], 1)
            }
            Readout::Every { n, t, k } => g.reshape((n, t, k)),
        }
    }
}

/// The logits and labels the loss reads from a model's output, as rows and one label each.
pub fn rows(logits: &Tensor, y: &Tensor) -> Result<(Tensor, Tensor)> {
    let r = Readout::of(logits, y)?;
    Ok((r.rows(logits)?, r.labels(y)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn the_last_position_is_read_and_its_adjoint_fills_the_rest_with_zeros() {
        let dev = Device::Cpu;
        let logits = Tensor::arange(0f64, 12.0, &dev)
            .unwrap()
            .reshape((2, 3, 2))
            .unwrap();
        let y = Tensor::new(&[0u32, 1], &dev).unwrap();
        let r = Readout::of(&logits, &y).unwrap();
        assert_eq!(r, Readout::Last { n: 2, t: 3, k: 2 });
        let rows = r.rows(&logits).unwrap().to_vec2::<f64>().unwrap();
        assert_eq!(rows, vec![vec![4.0, 5.0], vec![10.0, 11.0]]);
        let g = Tensor::new(&[[1f64, 2.0], [3.0, 4.0]], &dev).unwrap();
        let back = r
            .back(g)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        assert_eq!(back, [0., 0., 0., 0., 1., 2., 0., 0., 0., 0., 3., 4.]);
        // every position: rows in order, labels flattened alike
        let y2 = Tensor::new(&[[0u32, 1, 0], [1, 1, 0]], &dev).unwrap();
        let r2 = Readout::of(&logits, &y2).unwrap();
        assert_eq!(r2.rows(&logits).unwrap().dims(), &[6, 2]);
        assert_eq!(
            r2.labels(&y2).unwrap().to_vec1::<u32>().unwrap(),
            [0, 1, 0, 1, 1, 0]
        );
        assert!(Readout::of(&logits, &Tensor::new(&[0u32], &dev).unwrap()).is_err());
    }
}
