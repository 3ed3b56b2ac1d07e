//! The same checks on every device this build supports: CUDA with `--features cuda` (run on a
//! GPU machine by `scripts/device-check.sh`), each against the CPU reference computed in the
//! same test. A check also runs on the CPU only where it tests something there (another code
//! path than its reference, or a property of its own); those that would compare the CPU with
//! itself are `cuda_only`.

use ahtsgd::check::{Options, check_text};
#[cfg(feature = "cuda")]
use ahtsgd::model::{self, Model};
use ahtsgd::optim::{sharpness, update};
use candle_core::{DType, Device, Tensor, Var};
#[cfg(feature = "cuda")]
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
    (cuda_only $name:ident, $body:expr) => {
        #[cfg(feature = "cuda")]
        mod $name {
            use super::*;
            #[test]
            fn cuda() {
                ahtsgd::model::set_tf32_convolutions(false);
                ($body)(Device::new_cuda(0).expect("a CUDA device"));
            }
        }
    };
}

#[cfg(feature = "cuda")]
fn spec(model: &str, shape: &[usize], classes: usize) -> ahtsgd::model::ModelSpec {
    let src = format!(
        "model m = {model}\nexperiment e {{ data = arrays {{ path = \"-\" }}, model = m, optimizer = sgd {{ lr = 0.1 }}, epochs = 1 }}\n"
    );
    let plan = check_text("d.aht", &src, &Options::default()).plan.unwrap();
    ahtsgd::check::model::lower(plan.trials[0].config.obj("model"), shape, classes).unwrap()
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

#[cfg(feature = "cuda")]
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

test_device!(cuda_only models_agree_with_the_cpu, |dev: Device| {
    sharpness::enable_second_order();
    for (m, shape) in [
        ("mlp { hidden = [16] }", vec![12]),
        ("cnn { channels = [4], hidden = [8] }", vec![3, 8, 8]),
        ("resnet18 { width = 4 }", vec![3, 8, 8]),
        // a stack through the executor's passes, and one through candle's graph
        (
            "layers { stack = [conv(4, 3, padding = 1), relu, max_pool(2), conv(6, [3, 2], stride = 2), tanh, flatten, linear(classes)] }",
            vec![3, 8, 8],
        ),
        (
            "layers { stack = [conv(4, 3, padding = 1), batch_norm, relu, residual([conv(4, 3, padding = 1), batch_norm]), global_avg_pool, linear(classes)] }",
            vec![3, 8, 8],
        ),
    ] {
        let cpu = Model::build(&spec(m, &shape, 3), DType::F32, &Device::Cpu, 1).unwrap();
        let other = Model::build(&spec(m, &shape, 3), DType::F32, &dev, 1).unwrap();
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

// The layer executor's passes (training gradients, H·v by the R-operator) on the device
// against the same passes on the CPU. `hvp_tol`: batch norm over the few values of these tiny
// nets' last stages magnifies f32 rounding in H·v.
test_device!(cuda_only own_passes_agree_with_the_cpu, |dev: Device| {
    // the 32x32 batch of 16 splits the channel sums of the first layers over blocks of images
    for (m, shape, n, hvp_tol) in [
        ("mlp { hidden = [16, 8] }", vec![12], 6, 1e-4),
        // odd planes: pooling drops the last row and column
        (
            "cnn { channels = [4, 6], hidden = [8] }",
            vec![3, 9, 9],
            5,
            1e-4,
        ),
        ("resnet18 { width = 4 }", vec![3, 8, 8], 6, 1e-2),
        ("resnet18 { width = 4 }", vec![3, 32, 32], 16, 1e-3),
        // a convolution without pooling, a strided non-square one, other activations
        (
            "layers { stack = [conv(4, 3, padding = 1), relu, max_pool(2), conv(6, [3, 2], stride = 2, bias = false), gelu, flatten, linear(8), sigmoid, linear(classes)] }",
            vec![3, 9, 9],
            5,
            1e-4,
        ),
        // the kinds of the layer-kinds issue: leaky ReLU, dropout (its mask drawn on the
        // host from the same stream), layer norm
        (
            "layers { stack = [conv(4, 3, padding = 1), leaky_relu(0.1), max_pool(2), dropout(0.3), flatten, linear(8), layer_norm, silu, linear(classes)] }",
            vec![3, 8, 8],
            6,
            1e-3,
        ),
        // windowed pooling, batch norm after a dense layer
        (
            "layers { stack = [conv(4, 3), avg_pool(3, stride = 2), max_pool(2, stride = 1), flatten, linear(8), batch_norm, tanh, linear(classes)] }",
            vec![3, 12, 12],
            6,
            1e-3,
        ),
    ] {
        let cpu = Model::build(&spec(m, &shape, 3), DType::F32, &Device::Cpu, 1).unwrap();
        let other = Model::build(&spec(m, &shape, 3), DType::F32, &dev, 1).unwrap();
        let (x, y) = input(&shape, n);
        let (xd, yd) = (x.to_device(&dev).unwrap(), y.to_device(&dev).unwrap());
        assert!(other.has_own_passes(&xd), "{m}: the executor's passes");
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
        // batch norm's running statistics took the batch the same way
        for ((name, a), (_, b)) in other.buffers.iter().zip(&cpu.buffers) {
            let r = rel(a.as_tensor(), b.as_tensor());
            assert!(r < 1e-5, "{m}: {name} {r}");
        }
        // one optimizer step with noise and momentum from those gradients (the fused update on
        // the device) lands on the same parameters; the noise is relative to ‖g‖, reduced on
        // each device
        let params = ahtsgd::optim::ParamsAhtSgd {
            lr: 0.05,
            sigma: 0.01,
            noise: ahtsgd::optim::NoiseKind::Stable(ahtsgd::optim::alpha::AlphaSchedule::Fixed(
                1.5,
            )),
            scale: ahtsgd::optim::NoiseScale::GradientNorm,
            momentum: 0.9,
            ..Default::default()
        };
        let mut oc = ahtsgd::optim::AhtSgd::new(cpu.params.clone(), params.clone()).unwrap();
        let mut od = ahtsgd::optim::AhtSgd::new(other.params.clone(), params).unwrap();
        let tc = oc.step(&gc, 0.0, 0.0).unwrap();
        let td = od.step(&gd, 0.0, 0.0).unwrap();
        assert!(
            (tc.noise_norm - td.noise_norm).abs() < 1e-4 * tc.noise_norm,
            "{m}: noise"
        );
        assert!(
            (tc.grad_norm - td.grad_norm).abs() < 1e-4 * tc.grad_norm,
            "{m}: ‖g‖"
        );
        for (a, b) in vd.iter().zip(&vc) {
            assert!(
                rel(a.as_tensor(), b.as_tensor()) < 1e-4,
                "{m}: updated parameters"
            );
        }
        let v: Vec<Tensor> = vc.iter().map(|t| t.ones_like().unwrap()).collect();
        let vdev: Vec<Tensor> = v.iter().map(|t| t.to_device(&dev).unwrap()).collect();
        let hc = cpu.hessian(&x, &y).unwrap().hvp(&v).unwrap();
        let hd = other.hessian(&xd, &yd).unwrap().hvp(&vdev).unwrap();
        for (a, b) in hd.iter().zip(&hc) {
            assert!(rel(a, b) < hvp_tol, "{m}: H·v {}", rel(a, b));
        }
        // power iteration (its sums read once per iteration on the device)
        let lc = sharpness::power_iteration_with(
            cpu.hessian(&x, &y).unwrap().as_mut(),
            &vc,
            8,
            0.0,
            None,
            3,
        )
        .unwrap();
        let ld = sharpness::power_iteration_with(
            other.hessian(&xd, &yd).unwrap().as_mut(),
            &vd,
            8,
            0.0,
            None,
            3,
        )
        .unwrap();
        let gap = (lc.lambda - ld.lambda).abs() / lc.lambda.abs();
        assert!(gap < hvp_tol, "{m}: λ {} vs {}", ld.lambda, lc.lambda);
        // Hutchinson's mean eigenvalue (one read per probe on the device)
        let tc = sharpness::hutchinson_with(cpu.hessian(&x, &y).unwrap().as_mut(), &vc, 2, 5)
            .unwrap();
        let td =
            sharpness::hutchinson_with(other.hessian(&xd, &yd).unwrap().as_mut(), &vd, 2, 5)
                .unwrap();
        assert!(
            (tc - td).abs() < hvp_tol * tc.abs().max(1e-6),
            "{m}: trace {td} vs {tc}"
        );
    }
});

// The convolution ops (forward, input and kernel gradients) in f64 against the CPU's, over
// strides, padding, dilation and kernel shapes.
test_device!(cuda_only convolutions_agree_with_the_cpu_in_f64, |dev: Device| {
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

// Every form of the update (the device's fused kernel, or its tensor ops for a norm clip)
// against the CPU's fused pass: the parameters, momentum included, and the figures. On the
// CPU this holds the tensor-op form of the update to the fused pass.
test_device!(
    the_update_agrees_with_the_fused_cpu_kernel,
    |dev: Device| {
        let n = 5001; // odd: the last Philox block gives one draw
        let init: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let grad: Vec<f32> = (0..n)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 7.0)
            .collect();
        let base = update::Rule {
            lr: 0.1,
            sigma: 0.05,
            source: update::Source::Stable(1.4),
            levy_scale: None,
            clip_coord: Some(0.2),
            clip_norm: None,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 1e-4,
            key: [7, 9],
            step: 2,
        };
        let rules = [
            base,
            update::Rule {
                levy_scale: Some(0.3),
                nesterov: true,
                clip_coord: None,
                ..base
            },
            update::Rule {
                source: update::Source::Normal,
                momentum: 0.0,
                ..base
            },
            update::Rule {
                source: update::Source::None,
                weight_decay: 0.0,
                ..base
            },
            update::Rule {
                clip_coord: None,
                clip_norm: Some(0.5),
                ..base
            },
        ];
        for rule in rules {
            let a = Var::from_slice(&init, n, &Device::Cpu).unwrap();
            let b = Var::from_slice(&init, n, &dev).unwrap();
            let ga = Tensor::from_slice(&grad, n, &Device::Cpu).unwrap();
            // the device's gradient starts inside its buffer (as a slice of a stacked result)
            let gb = Tensor::cat(
                &[&Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(), &ga],
                0,
            )
            .unwrap()
            .to_device(&dev)
            .unwrap()
            .narrow(0, 3, n)
            .unwrap();
            let (sa, sb) = (RefCell::default(), RefCell::default());
            for step in 0..3 {
                let r = update::Rule { step, ..rule };
                let x = update::apply(&r, a.as_tensor(), &ga, &sa).unwrap();
                let m = update::apply_tensors(&r, b.as_tensor(), &gb, &sb).unwrap();
                let y = update::read(vec![m]).unwrap()[0];
                assert!(!y.bad_value && !y.bad_grad, "{rule:?}");
                assert_eq!(x.clipped, y.clipped, "{rule:?}: clipped");
                let close = |u: f64, v: f64| (u - v).abs() <= 1e-5 * u.abs().max(1e-12);
                assert!(close(x.grad_sq, y.grad_sq), "{rule:?}: ‖g‖²");
                assert!(
                    close(x.noise_sq, y.noise_sq),
                    "{rule:?}: ‖n‖² {} {}",
                    x.noise_sq,
                    y.noise_sq
                );
            }
            assert!(
                rel(b.as_tensor(), a.as_tensor()) < 1e-6,
                "{rule:?}: parameters"
            );
        }
        // a non-finite gradient is reported, whichever device
        let mut bad = grad.clone();
        bad[17] = f32::NAN;
        let b = Var::from_slice(&init, n, &dev).unwrap();
        let gb = Tensor::from_slice(&bad, n, &dev).unwrap();
        let m = update::apply_tensors(&base, b.as_tensor(), &gb, &RefCell::default()).unwrap();
        assert!(update::read(vec![m]).unwrap()[0].bad_grad);
    }
);

// A recipe trains on the device to better than chance (on the CPU too: the whole trial).
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

// Every model trains on the device with adaptive noise (power iteration on H·v every few
// steps, momentum, the fused update), and lands where the same run on the CPU does (on the
// CPU: every model trains with adaptive noise to a finite loss).
test_device!(every_model_trains_with_adaptive_noise, |dev: Device| {
    sharpness::enable_second_order();
    let run = |model: &str, device: &str| {
        let src = format!(
            "dataset d = mnist_mini {{ normalize = true, train_limit = 384, test_limit = 256 }}\nexperiment e {{ data = d, model = {model}, optimizer = ahtsgd {{ lr = 0.05, sigma = 0.01, momentum = 0.9, clip = coordinate(1.0), alpha = adaptive {{ sharpness = power_iteration {{ iters = 3, every = 3 steps }} }} }}, epochs = 1, batch = 64, device = {device} }}\n"
        );
        let plan = check_text("t.aht", &src, &Options::default()).plan.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let s = ahtsgd::train::run_trial(&plan.trials[0], &src, dir.path(), 1, false, &mut |_| {})
            .unwrap();
        assert_eq!(s.status, "completed", "{model} on {device}");
        s.final_.unwrap()
    };
    for model in [
        "mlp { hidden = [32] }",
        "cnn { channels = [8], hidden = [] }",
        "resnet18 { width = 4 }",
    ] {
        let here = run(model, if dev.is_cpu() { "cpu" } else { "cuda" });
        assert!(here.test_loss.is_finite(), "{model}");
        if !dev.is_cpu() {
            let cpu = run(model, "cpu");
            let gap = (here.test_accuracy - cpu.test_accuracy).abs();
            assert!(
                gap < 0.1,
                "{model}: accuracy {} on the device, {} on the CPU",
                here.test_accuracy,
                cpu.test_accuracy
            );
        }
    }
});

// The α-stable draws made on the device are the CPU kernel's, to f32 rounding at worst.
test_device!(cuda_only stable_draws_match_the_cpu_kernel, |dev: Device| {
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
test_device!(cuda_only stable_draws_are_bitwise_the_cpu_kernels, |dev: Device| {
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
