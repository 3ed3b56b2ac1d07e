//! The same checks on every device this build supports: CPU always, CUDA with `--features cuda`
//! (run on a GPU machine by `scripts/device-check.sh`). Each compares the device against the
//! CPU reference computed in the same test.

use ahtsgd::check::{Options, check_text};
use ahtsgd::model::{self, Model};
use ahtsgd::optim::{sharpness, update};
use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use std::cell::RefCell;

macro_rules! test_device {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn cpu() {
                ($body)(Device::Cpu);
            }
            #[cfg(feature = "cuda")]
            #[test]
            fn cuda() {
                // f32 convolutions in f32, so they can be held to the CPU's figures
                ahtsgd::model::set_tf32_convolutions(false);
                ($body)(Device::new_cuda(0).expect("a CUDA device"));
            }
        }
    };
}

fn spec(model: &str) -> ahtsgd::plan::Obj {
    let src = format!(
        "model m = {model}\nexperiment e {{ data = blobs {{}}, model = m, optimizer = sgd {{ lr = 0.1 }}, epochs = 1 }}\n"
    );
    check_text("d.aht", &src, &Options::default())
        .plan
        .unwrap()
        .trials[0]
        .config
        .obj("model")
        .clone()
}

fn rel(a: &Tensor, b: &Tensor) -> f64 {
    let a = a
        .to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let b = b
        .to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let num = (&a - &b)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
        .sqrt();
    let den = b
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
        .sqrt()
        .max(1e-30);
    num / den
}

fn input(shape: &[usize], n: usize) -> (Tensor, Tensor) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
    let len: usize = n * shape.iter().product::<usize>();
    let x: Vec<f32> = (0..len).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
    let mut full = vec![n];
    full.extend(shape);
    let y: Vec<u32> = (0..n as u32).map(|i| i % 3).collect();
    (
        Tensor::from_vec(x, full, &Device::Cpu).unwrap(),
        Tensor::from_vec(y, n, &Device::Cpu).unwrap(),
    )
}

test_device!(models_agree_with_the_cpu, |dev: Device| {
    sharpness::enable_second_order();
    for (m, shape) in [
        ("mlp { hidden = [16] }", vec![12]),
        ("cnn { channels = [4], hidden = [8] }", vec![3, 8, 8]),
        ("resnet18 { width = 4 }", vec![3, 8, 8]),
    ] {
        let cpu = Model::build(&spec(m), &shape, 3, DType::F32, &Device::Cpu, 1).unwrap();
        let other = Model::build(&spec(m), &shape, 3, DType::F32, &dev, 1).unwrap();
        let (x, y) = input(&shape, 6);
        let loss_c = model::cross_entropy(&cpu.forward(&x).unwrap(), &y).unwrap();
        let (xd, yd) = (x.to_device(&dev).unwrap(), y.to_device(&dev).unwrap());
        let loss_d = model::cross_entropy(&other.forward(&xd).unwrap(), &yd).unwrap();
        assert!(rel(&loss_d, &loss_c) < 1e-4, "{m}: loss");
        let gc = sharpness::grads_with_graph(&loss_c, &cpu.vars()).unwrap();
        let gd = sharpness::grads_with_graph(&loss_d, &other.vars()).unwrap();
        for (a, b) in gd.iter().zip(&gc) {
            assert!(rel(a, b) < 1e-3, "{m}: gradient");
        }
        let v: Vec<Tensor> = gc.iter().map(|g| g.ones_like().unwrap()).collect();
        let vd: Vec<Tensor> = v.iter().map(|t| t.to_device(&dev).unwrap()).collect();
        let hc = sharpness::hvp_from_grads(&gc, &cpu.vars(), &v).unwrap();
        let hd = sharpness::hvp_from_grads(&gd, &other.vars(), &vd).unwrap();
        for (a, b) in hd.iter().zip(&hc) {
            assert!(rel(a, b) < 1e-3, "{m}: HVP");
        }
    }
});

// The passes written by hand (training gradients; for the MLP, H·v by the R-operator) on the
// device against the same passes on the CPU.
test_device!(hand_written_passes_agree_with_the_cpu, |dev: Device| {
    for (m, shape, rop) in [
        ("mlp { hidden = [16, 8] }", vec![12], true),
        ("resnet18 { width = 4 }", vec![3, 8, 8], false),
    ] {
        let cpu = Model::build(&spec(m), &shape, 3, DType::F32, &Device::Cpu, 1).unwrap();
        let other = Model::build(&spec(m), &shape, 3, DType::F32, &dev, 1).unwrap();
        let (x, y) = input(&shape, 6);
        let (xd, yd) = (x.to_device(&dev).unwrap(), y.to_device(&dev).unwrap());
        assert!(other.has_fast_grads(&xd), "{m}: the pass written by hand");
        assert_eq!(other.has_rop(&xd), rop, "{m}: the R-operator");
        let (lc, gc) = cpu.loss_grads(&x, &y).unwrap();
        let (ld, gd) = other.loss_grads(&xd, &yd).unwrap();
        assert!(
            (lc - ld).abs() < 1e-5 * lc.abs().max(1.0),
            "{m}: loss {ld} vs {lc}"
        );
        let (vc, vd) = (cpu.vars(), other.vars());
        for (a, b) in vd.iter().zip(&vc) {
            let (a, b) = (gd.get(a).unwrap(), gc.get(b).unwrap());
            assert!(rel(a, b) < 1e-4, "{m}: gradient {}", rel(a, b));
        }
        if rop {
            let v: Vec<Tensor> = vc.iter().map(|t| t.ones_like().unwrap()).collect();
            let vdev: Vec<Tensor> = v.iter().map(|t| t.to_device(&dev).unwrap()).collect();
            let hc = cpu.hessian(&x, &y).unwrap().hvp(&v).unwrap();
            let hd = other.hessian(&xd, &yd).unwrap().hvp(&vdev).unwrap();
            for (a, b) in hd.iter().zip(&hc) {
                assert!(rel(a, b) < 1e-4, "{m}: H·v {}", rel(a, b));
            }
        }
    }
});

// The convolution ops (forward, input and kernel gradients) in f64 against the CPU's, over
// strides, padding, dilation and kernel shapes.
test_device!(convolutions_agree_with_the_cpu_in_f64, |dev: Device| {
    for (x_shape, w_shape, pad, stride, dil) in [
        ([2, 3, 9, 7], [4, 3, 3, 3], 1, 1, 1),
        ([2, 3, 9, 7], [4, 3, 3, 3], 1, 2, 1),
        ([1, 2, 8, 8], [3, 2, 3, 1], 2, 1, 2),
        ([3, 4, 5, 5], [2, 4, 1, 1], 0, 2, 1),
    ] {
        let (x, _) = input(&x_shape[1..], x_shape[0]);
        let (w, _) = input(&w_shape[1..], w_shape[0]);
        let run = |d: &Device| {
            let x =
                Var::from_tensor(&x.to_dtype(DType::F64).unwrap().to_device(d).unwrap()).unwrap();
            let w =
                Var::from_tensor(&w.to_dtype(DType::F64).unwrap().to_device(d).unwrap()).unwrap();
            let y = model::conv::conv2d(x.as_tensor(), w.as_tensor(), pad, stride, dil).unwrap();
            let r = y.sin().unwrap();
            let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let gx = g.get(x.as_tensor()).unwrap().clone();
            let gw = g.get(w.as_tensor()).unwrap().clone();
            (y, gx, gw)
        };
        let (yc, xc, wc) = run(&Device::Cpu);
        let (yd, xd, wd) = run(&dev);
        assert_eq!(yd.dims(), yc.dims());
        for (what, a, b) in [
            ("output", &yd, &yc),
            ("input gradient", &xd, &xc),
            ("kernel gradient", &wd, &wc),
        ] {
            assert!(
                rel(a, b) < 1e-12,
                "{x_shape:?} {w_shape:?} {pad}/{stride}/{dil}: {what} {}",
                rel(a, b)
            );
        }
    }
});

test_device!(
    the_update_agrees_with_the_fused_cpu_kernel,
    |dev: Device| {
        let n = 5000;
        let init: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let grad: Vec<f32> = (0..n)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 7.0)
            .collect();
        let rule = update::Rule {
            lr: 0.1,
            sigma: 0.05,
            source: update::Source::Stable(1.4),
            levy_scale: None,
            clip_coord: Some(1.0),
            clip_norm: None,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 1e-4,
            key: [7, 9],
            step: 2,
        };
        let a = Var::from_slice(&init, n, &Device::Cpu).unwrap();
        let b = Var::from_slice(&init, n, &dev).unwrap();
        let ga = Tensor::from_slice(&grad, n, &Device::Cpu).unwrap();
        let gb = ga.to_device(&dev).unwrap();
        let (sa, sb) = (RefCell::default(), RefCell::default());
        for _ in 0..3 {
            update::apply(&rule, a.as_tensor(), &ga, &sa).unwrap();
            let m = update::apply_tensors(&rule, b.as_tensor(), &gb, &sb).unwrap();
            assert!(!update::read(vec![m]).unwrap()[0].bad_value);
        }
        assert!(rel(b.as_tensor(), a.as_tensor()) < 1e-6);
    }
);

test_device!(a_recipe_trains_on_the_device, |dev: Device| {
    let name = if dev.is_cpu() { "cpu" } else { "cuda" };
    let src = format!(
        "experiment e {{ data = blobs {{ features = 4, samples = 64, test_samples = 32 }}, model = mlp {{ hidden = [8] }}, optimizer = ahtsgd {{ lr = 0.1, alpha = adaptive {{ sharpness = power_iteration {{ iters = 3, every = 2 steps }} }} }}, epochs = 10, batch = 16, device = {name} }}\n"
    );
    let plan = check_text("t.aht", &src, &Options::default()).plan.unwrap();
    let dir = tempfile::tempdir().unwrap();
    sharpness::enable_second_order();
    let s =
        ahtsgd::train::run_trial(&plan.trials[0], &src, dir.path(), 1, false, &mut |_| {}).unwrap();
    assert_eq!(s.status, "completed");
    assert_eq!(s.device, name);
    assert!(s.final_.unwrap().test_accuracy > 0.5);
});

// The α-stable draws made on the device are the CPU kernel's, to f32 rounding at worst.
test_device!(stable_draws_match_the_cpu_kernel, |dev: Device| {
    use ahtsgd::optim::stable;
    let n = 100_003; // odd: the last Philox block gives one draw
    for alpha in [1.0, 1.5, 2.0] {
        let mut host = vec![0f32; n];
        stable::fill_f32(alpha, [3, 4], 5, &mut host);
        let t = stable::draw_tensor(alpha, [3, 4], 5, &candle_core::Shape::from(n), &dev).unwrap();
        assert_eq!(t.device().is_cpu(), dev.is_cpu());
        let got: Vec<f32> = t.to_device(&Device::Cpu).unwrap().to_vec1().unwrap();
        let worst = got
            .iter()
            .zip(&host)
            .map(|(a, b)| ((a - b).abs() / b.abs().max(1e-30)) as f64)
            .fold(0.0, f64::max);
        assert!(
            worst < 1e-6,
            "α = {alpha}: worst relative difference {worst}"
        );
    }
});

// Stronger than the above: bit for bit (the kernels do the same operations in the same order).
test_device!(stable_draws_are_bitwise_the_cpu_kernels, |dev: Device| {
    use ahtsgd::optim::stable;
    let n = 65_537;
    for alpha in [1.2, 1.7] {
        let mut host = vec![0f32; n];
        stable::fill_f32(alpha, [11, 12], 13, &mut host);
        let t =
            stable::draw_tensor(alpha, [11, 12], 13, &candle_core::Shape::from(n), &dev).unwrap();
        let got: Vec<f32> = t.to_device(&Device::Cpu).unwrap().to_vec1().unwrap();
        let differ = got
            .iter()
            .zip(&host)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(
            differ, 0,
            "α = {alpha}: {differ} of {n} draws differ in their bits"
        );
    }
});
