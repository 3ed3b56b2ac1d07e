//! Trains a small MLP on the bundled MNIST subset with AHTSGD directly from Rust, no recipe.
//!
//!     cargo run --release --example train_mlp

use ahtsgd::data;
use ahtsgd::optim::{AhtSgd, Clip, NoiseKind, ParamsAhtSgd, alpha::AlphaSchedule};
use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dev = Device::Cpu;
    let mut d = data::mnist_mini()?;
    data::normalize(&mut d);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut layer = |fan_in: usize, fan_out: usize| -> candle_core::Result<(Var, Var)> {
        let sd = (2.0 / fan_in as f64).sqrt();
        let w: Vec<f32> = (0..fan_in * fan_out)
            .map(|_| (rng.sample::<f64, _>(rand_distr::StandardNormal) * sd) as f32)
            .collect();
        Ok((
            Var::from_tensor(&Tensor::from_vec(w, (fan_out, fan_in), &dev)?)?,
            Var::zeros(fan_out, DType::F32, &dev)?,
        ))
    };
    let (w1, b1) = layer(784, 128)?;
    let (w2, b2) = layer(128, 10)?;
    let named = vec![
        ("fc0.weight".into(), w1.clone()),
        ("fc0.bias".into(), b1.clone()),
        ("fc1.weight".into(), w2.clone()),
        ("fc1.bias".into(), b2.clone()),
    ];
    let params = ParamsAhtSgd {
        lr: 0.1,
        sigma: 0.01,
        noise: NoiseKind::Stable(AlphaSchedule::Fixed(1.5)),
        clip: Clip::Coordinate(1.0),
        ..Default::default()
    };
    let mut opt = AhtSgd::new(named, params)?;
    let forward = |x: &Tensor| -> candle_core::Result<Tensor> {
        x.matmul(&w1.as_tensor().t()?)?
            .broadcast_add(b1.as_tensor())?
            .relu()?
            .matmul(&w2.as_tensor().t()?)?
            .broadcast_add(b2.as_tensor())
    };
    let xs = Tensor::from_slice(&d.train_x, (d.train_len(), 784), &dev)?;
    let ys = Tensor::from_slice(&d.train_y, d.train_len(), &dev)?;
    for epoch in 0..3 {
        for start in (0..d.train_len()).step_by(64) {
            let n = 64.min(d.train_len() - start);
            let loss = candle_nn::loss::cross_entropy(
                &forward(&xs.narrow(0, start, n)?)?,
                &ys.narrow(0, start, n)?,
            )?;
            opt.step(&loss.backward()?, epoch as f64, 0.0)?;
        }
        let xt = Tensor::from_slice(&d.test_x, (d.test_len(), 784), &dev)?;
        let yt = Tensor::from_slice(&d.test_y, d.test_len(), &dev)?;
        let acc = ahtsgd::model::correct(&forward(&xt)?, &yt)? as f64 / d.test_len() as f64;
        println!("epoch {epoch}: test accuracy {:.2}%", acc * 100.0);
    }
    Ok(())
}
