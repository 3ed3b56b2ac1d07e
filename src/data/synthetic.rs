//! Synthetic classification tasks for tests and demos.

use super::Dataset;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// Gaussian blobs: class centres on a sphere of radius 3, isotropic spread.
pub fn blobs(
    classes: usize,
    features: usize,
    train: usize,
    test: usize,
    spread: f64,
    seed: u64,
) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let unit = Normal::new(0.0, 1.0).expect("valid");
    let centres: Vec<Vec<f64>> = (0..classes)
        .map(|_| {
            let v: Vec<f64> = (0..features).map(|_| unit.sample(&mut rng)).collect();
            let n = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-9);
            v.iter().map(|x| 3.0 * x / n).collect()
        })
        .collect();
    let mut draw = |count: usize| {
        let mut x = Vec::with_capacity(count * features);
        let mut y = Vec::with_capacity(count);
        for _ in 0..count {
            let c = rng.random_range(0..classes);
            x.extend(
                centres[c]
                    .iter()
                    .map(|m| (m + spread * unit.sample(&mut rng)) as f32),
            );
            y.push(c as u32);
        }
        (x, y)
    };
    let (train_x, train_y) = draw(train);
    let (test_x, test_y) = draw(test);
    Dataset {
        name: "blobs".into(),
        sample_shape: vec![features],
        classes,
        labels_per_sample: 1,
        train_x,
        train_y,
        test_x,
        test_y,
        warnings: Vec::new(),
    }
}

/// Interleaved spirals in the plane.
pub fn spirals(classes: usize, train: usize, test: usize, noise: f64, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let unit = Normal::new(0.0, 1.0).expect("valid");
    let mut draw = |count: usize| {
        let mut x = Vec::with_capacity(count * 2);
        let mut y = Vec::with_capacity(count);
        for _ in 0..count {
            let c = rng.random_range(0..classes);
            let t: f64 = rng.random::<f64>();
            let angle = 2.0 * std::f64::consts::PI * (c as f64 / classes as f64 + 1.5 * t);
            let r = 0.2 + 2.0 * t;
            x.push((r * angle.cos() + noise * unit.sample(&mut rng)) as f32);
            x.push((r * angle.sin() + noise * unit.sample(&mut rng)) as f32);
            y.push(c as u32);
        }
        (x, y)
    };
    let (train_x, train_y) = draw(train);
    let (test_x, test_y) = draw(test);
    Dataset {
        name: "spirals".into(),
        sample_shape: vec![2],
        classes,
        labels_per_sample: 1,
        train_x,
        train_y,
        test_x,
        test_y,
        warnings: Vec::new(),
    }
}
