//! Models: a checked [`ModelSpec`] (a stack of layers; the built-in kinds expand to one) built
//! into parameters and [`exec::Node`]s. Training gradients and Hessian-vector products take the
//! layer executor's own passes (`tape`: reverse pass and R-operator for every layer kind);
//! evaluation, and devices or dtypes our ops do not cover, take the forward pass through
//! candle's graph (`exec`). The ops are candle's primitives and our own (`linear`, `conv`,
//! `pool`, `bn`), whose backward passes are written with differentiable ops, so the graph's
//! first- and second-order gradients are right too. No fused softmax and no candle
//! `max_pool2d` (its gradient is wrong in candle 0.11).

use candle_core::{D, DType, Device, Result, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub mod attention;
mod bn;
pub mod conv;
mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
mod exec;
mod gelu;
mod grad;
pub mod gradcheck;
pub mod linear;
pub mod norm;
pub mod pool;
pub mod readout;
pub mod spec;
pub mod tanh;
mod tape;

pub use spec::{Activation, Init, LayerInit, ModelSpec, Tanh, glob_match, layer_init};

pub use grad::softmax_cross_entropy;

/// Whether `t` lives where the model's own ops run (the CPU, and CUDA in a CUDA build) in a
/// dtype they take; elsewhere the ops fall back to candle's.
pub(crate) fn own_ops(t: &Tensor) -> bool {
    let dev = t.device();
    (dev.is_cpu() || (cfg!(feature = "cuda") && dev.is_cuda()))
        && matches!(t.dtype(), DType::F32 | DType::F64)
}

/// Whether convolutions on a GPU use only deterministic algorithms (on by default: the same
/// run gives the same numbers; off, cuDNN's fastest guess, as PyTorch does by default).
pub fn set_deterministic_convolutions(on: bool) {
    #[cfg(feature = "cuda")]
    cuda::conv::set_deterministic(on);
    let _ = on;
}

/// Whether f32 convolutions on a GPU may use TF32 tensor cores (on by default, as in
/// PyTorch); off, they are computed in f32.
pub fn set_tf32_convolutions(on: bool) {
    #[cfg(feature = "cuda")]
    cuda::conv::set_tf32(on);
    let _ = on;
}

impl Activation {
    /// The activation of `x`, its tanh computed as `tanh` says where that is ours to choose
    /// (the CPU, f32 and f64; elsewhere the device's).
    pub fn apply(self, x: &Tensor, tanh: Tanh) -> Result<Tensor> {
        let portable = tanh == Tanh::Portable && gelu::runs_on(x);
        match self {
            Activation::Relu => linear::relu(x),
            Activation::Tanh if portable => self::tanh::apply(x),
            Activation::Gelu if portable => Ok(gelu::forward_keep(x, tanh)?.0),
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => sigmoid(x),
            Activation::Silu => x * sigmoid(x)?,
            Activation::Gelu => {
                let inner =
                    ((x + (x.powf(3.0)? * 0.044715)?)? * (2.0 / std::f64::consts::PI).sqrt())?;
                (x * 0.5)? * (inner.tanh()? + 1.0)?
            }
        }
    }
}

fn sigmoid(x: &Tensor) -> Result<Tensor> {
    (x.neg()?.exp()? + 1.0)?.recip()
}

/// 2x2 pooling by reshape: correct at first and second order.
pub fn pool2(x: &Tensor, max: bool) -> Result<Tensor> {
    if max && own_ops(x) {
        return pool::max_pool2(x);
    }
    let (n, c, h, w) = x.dims4()?;
    let x = x.narrow(2, 0, h / 2 * 2)?.narrow(3, 0, w / 2 * 2)?;
    let r = x.reshape((n, c, h / 2, 2, w / 2, 2))?;
    if max {
        r.max(5)?.max(3)
    } else {
        r.mean(5)?.mean(3)
    }
}

/// A built model: its parameters (sorted by name) and its forward pass.
pub struct Model {
    pub params: Vec<(String, Var)>,
    /// State that is not trained (batch-norm running statistics), sorted by name.
    pub buffers: Vec<(String, Var)>,
    nodes: Vec<exec::Node>,
    input_shape: Vec<usize>,
    /// The training step dropout's masks are drawn for ([`Model::set_step`]).
    step: std::sync::atomic::AtomicU64,
}

/// Mixed into the model's seed for dropout's mask streams, apart from the noise's.
const DROPOUT_STREAMS: u64 = 0xd70f_0a57;

/// A model that cannot be built for its data.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{0}")]
    Shape(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The shape of a weight [`Builder::weight_as`] makes.
struct Weight<'a> {
    fan_in: usize,
    fan_out: usize,
    kernel: &'a [usize],
    bias: bool,
}

/// Creates named, initialised parameters from one seeded stream, layer by layer in the
/// stack's order (a residual's body before its shortcut).
struct Builder<'a> {
    overrides: &'a [LayerInit],
    /// The model's seed, which keys dropout's masks.
    seed: u64,
    dtype: DType,
    dev: &'a Device,
    rng: ChaCha8Rng,
    params: Vec<(String, Var)>,
    buffers: Vec<(String, Var)>,
    /// The embedding's table, which a tied output layer reads as its weight.
    table: Option<Var>,
    tanh: Tanh,
}

impl Builder<'_> {
    fn var(&mut self, name: String, values: Vec<f64>, shape: Vec<usize>) -> Result<Var> {
        let v =
            Var::from_tensor(&Tensor::from_vec(values, shape, self.dev)?.to_dtype(self.dtype)?)?;
        self.params.push((name, v.clone()));
        Ok(v)
    }

    fn constant(&mut self, name: String, value: f64, n: usize, trained: bool) -> Result<Var> {
        let v = Var::from_tensor(&Tensor::full(value, n, self.dev)?.to_dtype(self.dtype)?)?;
        if trained {
            self.params.push((name, v.clone()));
        } else {
            self.buffers.push((name, v.clone()));
        }
        Ok(v)
    }

    /// A weight `[out, in, ...kernel]` and its bias, if any.
    fn weight(
        &mut self,
        layer: &spec::Layer,
        fan_in: usize,
        fan_out: usize,
        kernel: &[usize],
        bias: bool,
    ) -> Result<(Var, Option<Var>)> {
        let shape = Weight {
            fan_in,
            fan_out,
            kernel,
            bias,
        };
        self.weight_as(layer, &layer.name, shape, (Init::Default, Init::Default))
    }

    /// [`Builder::weight`] for parameters named `PREFIX.weight` and `PREFIX.bias`, with
    /// `defaults` standing for the layer's `default` initialisations (`Default`: the usual).
    fn weight_as(
        &mut self,
        layer: &spec::Layer,
        prefix: &str,
        Weight {
            fan_in,
            fan_out,
            kernel,
            bias,
        }: Weight,
        defaults: (Init, Init),
    ) -> Result<(Var, Option<Var>)> {
        let receptive: usize = kernel.iter().product();
        let mut shape = vec![fan_out, fan_in];
        shape.extend_from_slice(kernel);
        let mut used = vec![false; self.overrides.len()];
        let (init, bias_init) = layer_init(
            &layer.name,
            (layer.init, layer.bias_init),
            self.overrides,
            &mut used,
        );
        let init = match init {
            Init::Default => defaults.0,
            other => other,
        };
        let w = init.sample(
            fan_out * fan_in * receptive,
            fan_in * receptive,
            fan_out * receptive,
            &mut self.rng,
        );
        let w = self.var(format!("{prefix}.weight"), w, shape)?;
        if !bias {
            return Ok((w, None));
        }
        let b = self.bias_as(prefix, bias_init, defaults.1, fan_in * receptive, fan_out)?;
        Ok((w, Some(b)))
    }

    /// A bias `PREFIX.bias` of `fan_out` values; `default` stands for `default` (which is
    /// itself uniform in ±1/√fan_in).
    fn bias_as(
        &mut self,
        prefix: &str,
        init: Init,
        default: Init,
        fan_in: usize,
        fan_out: usize,
    ) -> Result<Var> {
        let b = match (init, default) {
            (Init::Default, Init::Default) => Init::Uniform(1.0 / (fan_in as f64).sqrt()),
            (Init::Default, d) => d,
            (other, _) => other,
        }
        .sample(fan_out, fan_in, fan_out, &mut self.rng);
        self.var(format!("{prefix}.bias"), b, vec![fan_out])
    }

    fn batch_norm(
        &mut self,
        name: &str,
        c: usize,
        momentum: f64,
        eps: f64,
    ) -> Result<norm::BatchNorm> {
        Ok(norm::BatchNorm {
            gamma: self.constant(format!("{name}.weight"), 1.0, c, true)?,
            beta: self.constant(format!("{name}.bias"), 0.0, c, true)?,
            running_mean: self.constant(format!("{name}.running_mean"), 0.0, c, false)?,
            running_var: self.constant(format!("{name}.running_var"), 1.0, c, false)?,
            momentum,
            eps,
        })
    }

    /// The nodes of a stack whose samples enter as `input`.
    fn stack(
        &mut self,
        layers: &[spec::Layer],
        input: &[usize],
    ) -> std::result::Result<Vec<exec::Node>, ModelError> {
        use spec::LayerKind as K;
        let mut shape = input.to_vec();
        let mut out = Vec::with_capacity(layers.len());
        for l in layers {
            let node = match &l.kind {
                K::Linear {
                    out,
                    bias,
                    tie: false,
                } => {
                    let (w, b) = self.weight(l, shape[shape.len() - 1], *out, &[], *bias)?;
                    exec::Node::Linear { w, b }
                }
                K::Linear {
                    out,
                    bias,
                    tie: true,
                } => {
                    let w = self.table.clone().ok_or_else(|| {
                        ModelError::Shape(format!(
                            "`{}` ties its weight to an embedding the model does not have",
                            l.name
                        ))
                    })?;
                    let b = if *bias {
                        let mut used = vec![false; self.overrides.len()];
                        let (_, bias_init) =
                            layer_init(&l.name, (l.init, l.bias_init), self.overrides, &mut used);
                        let fan_in = shape[shape.len() - 1];
                        Some(self.bias_as(&l.name, bias_init, Init::Default, fan_in, *out)?)
                    } else {
                        None
                    };
                    exec::Node::Linear { w, b }
                }
                K::Positions { dim } => {
                    let mut used = vec![false; self.overrides.len()];
                    let (init, _) =
                        layer_init(&l.name, (l.init, l.bias_init), self.overrides, &mut used);
                    let init = match init {
                        Init::Default => Init::Normal(0.02),
                        other => other,
                    };
                    let context = shape[0];
                    let w = init.sample(context * dim, *dim, context, &mut self.rng);
                    let w = self.var(format!("{}.weight", l.name), w, vec![context, *dim])?;
                    exec::Node::Positions { w }
                }
                K::Attention {
                    heads,
                    causal,
                    bias,
                } => {
                    // PyTorch's nn.MultiheadAttention: Xavier-uniform projections, zero biases
                    let defaults = (Init::Xavier, Init::Zeros);
                    let d = shape[1];
                    let qkv = Weight {
                        fan_in: d,
                        fan_out: 3 * d,
                        kernel: &[],
                        bias: *bias,
                    };
                    let (wq, bq) = self.weight_as(l, &format!("{}.qkv", l.name), qkv, defaults)?;
                    let proj = Weight {
                        fan_in: d,
                        fan_out: d,
                        kernel: &[],
                        bias: *bias,
                    };
                    let (wo, bo) = self.weight_as(l, &format!("{}.out", l.name), proj, defaults)?;
                    out.push(exec::Node::Linear { w: wq, b: bq });
                    out.push(exec::Node::Attend {
                        heads: *heads,
                        causal: *causal,
                    });
                    exec::Node::Linear { w: wo, b: bo }
                }
                K::MeanOverTokens => exec::Node::MeanOverTokens,
                K::Conv {
                    out,
                    kernel,
                    stride,
                    padding,
                    bias,
                } => {
                    let (w, b) = self.weight(l, shape[0], *out, kernel, *bias)?;
                    exec::Node::Conv {
                        w,
                        b,
                        stride: *stride,
                        padding: *padding,
                    }
                }
                K::MaxPool { k, stride } => exec::Node::Pool {
                    max: true,
                    k: *k,
                    stride: *stride,
                },
                K::AvgPool { k, stride } => exec::Node::Pool {
                    max: false,
                    k: *k,
                    stride: *stride,
                },
                K::GlobalAvgPool => exec::Node::GlobalAvgPool,
                K::Flatten => exec::Node::Flatten,
                K::BatchNorm { momentum, eps } => {
                    exec::Node::BatchNorm(self.batch_norm(&l.name, shape[0], *momentum, *eps)?)
                }
                K::Act(a) => exec::Node::Act(*a, self.tanh),
                K::LeakyRelu { slope } => exec::Node::LeakyRelu(*slope),
                K::LayerNorm { eps } => {
                    let f = shape[shape.len() - 1];
                    exec::Node::LayerNorm {
                        gamma: self.constant(format!("{}.weight", l.name), 1.0, f, true)?,
                        beta: self.constant(format!("{}.bias", l.name), 0.0, f, true)?,
                        eps: *eps,
                    }
                }
                K::Dropout { p } => exec::Node::Dropout {
                    p: *p,
                    key: crate::optim::stable::stream_key(self.seed ^ DROPOUT_STREAMS, &l.name),
                },
                K::Embedding { vocab, dim } => {
                    let mut used = vec![false; self.overrides.len()];
                    let (init, _) =
                        layer_init(&l.name, (l.init, l.bias_init), self.overrides, &mut used);
                    // PyTorch's nn.Embedding draws N(0, 1)
                    let init = match init {
                        Init::Default => Init::Normal(1.0),
                        other => other,
                    };
                    let w = init.sample(vocab * dim, *dim, *vocab, &mut self.rng);
                    let w = self.var(format!("{}.weight", l.name), w, vec![*vocab, *dim])?;
                    self.table = Some(w.clone());
                    exec::Node::Embedding { w, vocab: *vocab }
                }
                K::Residual { body, shortcut } => exec::Node::Residual {
                    body: self.stack(body, &shape)?,
                    shortcut: self.stack(shortcut, &shape)?,
                },
            };
            out.push(node);
            shape = l.output(&shape).map_err(|e| ModelError::Shape(e.message))?;
        }
        Ok(out)
    }
}

impl Model {
    /// Builds the model a checked recipe describes (see [`crate::check::model::lower`]).
    pub fn build(
        spec: &ModelSpec,
        dtype: DType,
        dev: &Device,
        seed: u64,
    ) -> std::result::Result<Model, ModelError> {
        spec.table().map_err(|e| ModelError::Shape(e.message))?;
        let mut b = Builder {
            overrides: &spec.overrides,
            seed,
            dtype,
            dev,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x1417),
            params: Vec::new(),
            buffers: Vec::new(),
            table: None,
            tanh: spec.tanh,
        };
        let nodes = b.stack(&spec.stack, &spec.input)?;
        let mut params = b.params;
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let mut buffers = b.buffers;
        buffers.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Model {
            params,
            buffers,
            nodes,
            input_shape: spec.input.clone(),
            step: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn param_count(&self) -> usize {
        self.params
            .iter()
            .map(|(_, v)| v.as_tensor().elem_count())
            .sum()
    }

    pub fn vars(&self) -> Vec<Var> {
        self.params.iter().map(|(_, v)| v.clone()).collect()
    }

    /// Logits for a batch `[n, ...sample_shape]` in training mode (batch norm uses and updates
    /// batch statistics).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_mode(x, norm::Mode::Train)
    }

    /// A batch with each sample in the model's input shape (flat samples are reshaped).
    fn sample_batch(&self, x: &Tensor) -> Result<Tensor> {
        if x.rank() == 2 && self.input_shape.len() > 1 {
            let mut s = vec![x.dim(0)?];
            s.extend(&self.input_shape);
            x.reshape(s)
        } else {
            Ok(x.clone())
        }
    }

    /// Logits with batch norm in the given mode (models without batch norm ignore it);
    /// dropout is on in training mode alone.
    pub fn forward_mode(&self, x: &Tensor, mode: norm::Mode) -> Result<Tensor> {
        exec::forward(&self.nodes, &self.sample_batch(x)?, mode, self.step())
    }

    /// Sets the training step that dropout's masks are drawn for (each layer's mask is keyed
    /// by the model's seed, the layer's name and this step); the trainer sets it before each
    /// step, so reruns and resumes draw the same masks.
    pub fn set_step(&self, step: u64) {
        self.step.store(step, std::sync::atomic::Ordering::Relaxed);
    }

    fn step(&self) -> u64 {
        self.step.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Mean cross-entropy from logits (log-softmax from primitive ops), over the rows the
/// labels read ([`readout`]).
pub fn cross_entropy(logits: &Tensor, y: &Tensor) -> Result<Tensor> {
    let (logits, y) = readout::rows(logits, y)?;
    candle_nn::loss::cross_entropy(&logits, &y)
}

/// Number of correct predictions over the rows the labels read.
pub fn correct(logits: &Tensor, y: &Tensor) -> Result<usize> {
    let (logits, y) = readout::rows(logits, y)?;
    let pred = logits.argmax(D::Minus1)?;
    Ok(pred
        .eq(&y)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()? as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{Options, check_text};
    use crate::optim::sharpness;
    use crate::plan::Obj;
    use rand::Rng;

    /// Lowers a checked model for the sample shape and builds it.
    fn build_from(
        model: &Obj,
        shape: &[usize],
        classes: usize,
        dtype: DType,
        dev: &Device,
        seed: u64,
    ) -> std::result::Result<Model, ModelError> {
        let spec = crate::check::model::lower(model, shape, classes)
            .map_err(|d| ModelError::Shape(d.message))?;
        Model::build(&spec, dtype, dev, seed)
    }

    fn spec(text: &str) -> Obj {
        let src = format!(
            "model m = {text}\nexperiment e {{ data = arrays {{ path = \"-\" }}, model = m, optimizer = sgd {{ lr = 1 }}, epochs = 1 }}\n"
        );
        check_text("m.aht", &src, &Options::default())
            .plan
            .expect("checks")
            .trials[0]
            .config
            .obj("model")
            .clone()
    }

    /// Gradient and HVP of a model against central finite differences, in f64: candle's graph
    /// against finite differences, then the model's own `loss_grads` and `hessian` (the
    /// executor's passes) against both.
    fn check_model(text: &str, shape: &[usize]) {
        sharpness::enable_second_order();
        let dev = Device::Cpu;
        let lowered = crate::check::model::lower(&spec(text), shape, 3).unwrap();
        let m = Model::build(&lowered, DType::F64, &dev, 1).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let n = 4;
        let numel: usize = shape.iter().product();
        let xs: Vec<f64> = (0..n * numel).map(|_| rng.random::<f64>() - 0.5).collect();
        let mut full = vec![n];
        full.extend(shape);
        let x = Tensor::from_vec(xs, full, &dev).unwrap();
        let y = Tensor::new(&[0u32, 1, 2, 1], &dev).unwrap();
        let vars = m.vars();
        let loss = || cross_entropy(&m.forward(&x).unwrap(), &y).unwrap();
        // a seeded direction (candle's own CPU randomness cannot be seeded)
        let v: Vec<Tensor> = vars
            .iter()
            .map(|p| {
                let d: Vec<f64> = (0..p.elem_count())
                    .map(|_| rng.random::<f64>() * 2.0 - 1.0)
                    .collect();
                Tensor::from_vec(d, p.shape(), &dev).unwrap()
            })
            .collect();
        let grads = sharpness::grads_with_graph(&loss(), &vars).unwrap();
        let hv = sharpness::hvp_from_grads(&grads, &vars, &v).unwrap();
        let eps = 1e-7; // small, so the ReLU kinks of the ResNets are rarely crossed
        let shift = |k: f64| {
            for (p, d) in vars.iter().zip(&v) {
                p.set(&(p.as_tensor() + d.affine(k, 0.0).unwrap()).unwrap())
                    .unwrap();
            }
        };
        // directional derivative of the loss vs ⟨g, v⟩
        shift(eps);
        let lp = loss().to_scalar::<f64>().unwrap();
        let gp = sharpness::grads_with_graph(&loss(), &vars).unwrap();
        shift(-2.0 * eps);
        let lm = loss().to_scalar::<f64>().unwrap();
        let gm = sharpness::grads_with_graph(&loss(), &vars).unwrap();
        shift(eps);
        let gv: f64 = grads
            .iter()
            .zip(&v)
            .map(|(g, d)| {
                (g * d)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            })
            .sum();
        assert!(
            ((lp - lm) / (2.0 * eps) - gv).abs() < 1e-5 * gv.abs().max(1.0),
            "{text}: gradient: finite differences {} vs {gv}",
            (lp - lm) / (2.0 * eps)
        );
        let (own_loss, own) = m.loss_grads(&x, &y).unwrap();
        let graph_loss = loss().to_scalar::<f64>().unwrap();
        assert!(
            (own_loss - graph_loss).abs() <= 1e-12 * graph_loss.abs().max(1.0),
            "{text}: loss {own_loss} vs {graph_loss}"
        );
        let own_hv = m.hessian(&x, &y).unwrap().hvp(&v).unwrap();
        for i in 0..vars.len() {
            let fd = ((&gp[i] - &gm[i]).unwrap() / (2.0 * eps)).unwrap();
            let scale = sharpness::max_abs(&fd).unwrap().max(1.0);
            for (what, h) in [("graph", &hv[i]), ("own", &own_hv[i])] {
                let err = sharpness::max_abs(&(h - &fd).unwrap()).unwrap();
                assert!(
                    err < 1e-5 * scale,
                    "{text}: {what} H·v of param {i} off by {err} (scale {scale})"
                );
            }
            let g = own.get(vars[i].as_tensor()).expect("a gradient");
            let err = sharpness::max_abs(&(g - &grads[i]).unwrap()).unwrap();
            let scale = sharpness::max_abs(&grads[i]).unwrap().max(1e-300);
            assert!(
                err <= 1e-10 * scale.max(1.0),
                "{text}: gradient of param {i} off by {err} (scale {scale})"
            );
        }
    }

    #[test]
    fn mlp_gradient_and_hvp_match_finite_differences() {
        check_model("mlp { hidden = [5], activation = tanh }", &[6]);
        check_model("mlp { hidden = [4, 3], activation = gelu }", &[5]);
    }

    #[test]
    fn cnn_gradient_and_hvp_match_finite_differences() {
        check_model(
            "cnn { channels = [2], hidden = [4], activation = tanh }",
            &[1, 6, 6],
        );
        check_model(
            "cnn { channels = [2, 3], pool = avg, activation = silu }",
            &[2, 8, 8],
        );
    }

    /// Every layer kind, alone in a small stack and in residual blocks, against central
    /// finite differences in f64 (gradient and H·v).
    #[test]
    fn every_layer_kind_matches_finite_differences() {
        for (stack, shape) in [
            ("[linear(classes)]", &[5][..]),
            ("[linear(4, bias = false), tanh, linear(classes)]", &[5]),
            ("[linear(4), sigmoid, linear(classes)]", &[5]),
            ("[linear(4), silu, linear(classes)]", &[5]),
            ("[linear(4), gelu, linear(classes)]", &[5]),
            ("[linear(4), relu, linear(classes)]", &[5]),
            ("[linear(4), batch_norm, tanh, linear(classes)]", &[5]),
            ("[linear(4), leaky_relu(0.2), linear(classes)]", &[5]),
            ("[linear(4), layer_norm, tanh, linear(classes)]", &[5]),
            (
                "[linear(6), layer_norm(eps = 0.01), gelu, layer_norm, linear(classes)]",
                &[5],
            ),
            (
                "[conv(2, 3), leaky_relu(0.1), flatten, layer_norm, linear(classes)]",
                &[1, 5, 5],
            ),
            ("[flatten, linear(classes)]", &[2, 3, 3]),
            ("[conv(2, 3), tanh, flatten, linear(classes)]", &[2, 6, 5]),
            (
                "[conv(3, [3, 2], stride = 2, padding = 1, bias = false), tanh, flatten, linear(classes)]",
                &[2, 7, 6],
            ),
            (
                "[conv(2, 1), max_pool(3, stride = 2), flatten, linear(classes)]",
                &[1, 7, 7],
            ),
            (
                "[conv(2, 1), max_pool(2), flatten, linear(classes)]",
                &[1, 5, 6],
            ),
            (
                "[conv(2, 3, padding = 1), avg_pool(3, stride = 1), flatten, linear(classes)]",
                &[1, 6, 6],
            ),
            (
                "[conv(2, 3, padding = 1), avg_pool(2), flatten, linear(classes)]",
                &[1, 6, 6],
            ),
            ("[conv(3, 3), global_avg_pool, linear(classes)]", &[2, 5, 5]),
            (
                "[conv(3, 3), batch_norm, tanh, global_avg_pool, linear(classes)]",
                &[2, 5, 5],
            ),
            (
                "[conv(3, 3, padding = 1), residual([conv(3, 3, padding = 1), batch_norm, tanh]), global_avg_pool, linear(classes)]",
                &[2, 6, 6],
            ),
            (
                "[residual([conv(4, 3, stride = 2, padding = 1), batch_norm, silu, conv(4, 3, padding = 1)], shortcut = [conv(4, 1, stride = 2), batch_norm]), relu, global_avg_pool, linear(classes)]",
                &[2, 6, 6],
            ),
        ] {
            check_model(&format!("layers {{ stack = {stack} }}"), shape);
        }
        // the language's two examples at small widths: the basic block with a head, and the
        // small ResNet built from it (blocks written out: one declaration per case here)
        let basic = |w: usize, stride: usize| {
            format!(
                "conv({w}, 3, stride = {stride}, padding = 1), batch_norm, relu, conv({w}, 3, padding = 1), batch_norm"
            )
        };
        for (stack, shape) in [
            (
                format!("[{}, flatten, linear(classes)]", basic(3, 1)),
                &[2, 5, 5][..],
            ),
            (
                format!(
                    "[conv(3, 3, padding = 1), batch_norm, relu, repeat(2, [residual([{}]), relu]), residual([{}], shortcut = [conv(4, 1, stride = 2), batch_norm]), relu, global_avg_pool, linear(classes, name = \"fc\")]",
                    basic(3, 1),
                    basic(4, 2)
                ),
                &[2, 6, 6],
            ),
        ] {
            check_model(&format!("layers {{ stack = {stack} }}"), shape);
        }
    }

    /// The built-in transformer and the `layers` recipe `ahtsgd show transformer` prints are
    /// one model on token data: the same layers, parameters and logits.
    #[test]
    fn the_transformer_and_its_layers_recipe_are_the_same_model() {
        use crate::check::model::{Tokens, describe, lower_for};
        let tokens = Some(Tokens {
            vocab: 9,
            every_position: true,
        });
        let builtin = spec("transformer { blocks = 2, dim = 8, heads = 2, mlp = 3 }");
        let symbolic = Some(Tokens {
            vocab: crate::check::model::SYMBOLIC_CLASSES,
            every_position: false,
        });
        let shown = describe(
            &builtin,
            &[],
            crate::check::model::SYMBOLIC_CLASSES,
            symbolic,
        )
        .unwrap()
        .to_recipe("net");
        assert!(shown.contains("linear(vocab, name = \"head\")"), "{shown}");
        let layers = spec(shown.strip_prefix("model net = ").unwrap().trim_end());
        let a = lower_for(&builtin, &[5], 9, tokens).unwrap();
        let b = lower_for(&layers, &[5], 9, tokens).unwrap();
        assert_eq!(a.table().unwrap(), b.table().unwrap(), "{shown}");
        // 9·8 + 5·8 embeddings and positions, per block 4·8² + 4·8 attention, 2·2·8 norms,
        // 8·24 + 24 + 24·8 + 8 MLP; a final norm and the 8 → 9 head
        let block = 4 * 64 + 32 + 32 + (8 * 24 + 24 + 24 * 8 + 8);
        assert_eq!(a.param_count().unwrap(), 72 + 40 + 2 * block + 16 + 81);
        let (ma, mb) = (
            Model::build(&a, DType::F64, &Device::Cpu, 5).unwrap(),
            Model::build(&b, DType::F64, &Device::Cpu, 5).unwrap(),
        );
        let names: Vec<&str> = ma.params.iter().map(|(n, _)| n.as_str()).collect();
        assert!(
            names.contains(&"block1.attn.attention.qkv.weight"),
            "{names:?}"
        );
        assert!(
            names.contains(&"block1.attn.attention.out.bias"),
            "{names:?}"
        );
        let x = Tensor::new(
            &[[1f64, 4.0, 0.0, 8.0, 2.0], [3.0, 3.0, 7.0, 1.0, 0.0]],
            &Device::Cpu,
        )
        .unwrap();
        let (la, lb) = (ma.forward(&x).unwrap(), mb.forward(&x).unwrap());
        assert_eq!(la.dims(), &[2, 5, 9]);
        assert_eq!(sharpness::max_abs(&(&la - &lb).unwrap()).unwrap(), 0.0);
    }

    /// A tied output layer owns no weight: the embedding's table is the model's one copy.
    #[test]
    fn a_tied_output_layer_shares_the_embedding_table() {
        use crate::check::model::{Tokens, lower_for};
        let tokens = Some(Tokens {
            vocab: 6,
            every_position: true,
        });
        let tied = lower_for(
            &spec("layers { stack = [embedding(4), layer_norm, linear(vocab, tie = true)] }"),
            &[3],
            6,
            tokens,
        )
        .unwrap();
        let m = Model::build(&tied, DType::F64, &Device::Cpu, 0).unwrap();
        let names: Vec<&str> = m.params.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "embedding0.weight",
                "layer_norm0.bias",
                "layer_norm0.weight",
                "linear0.bias"
            ]
        );
        assert_eq!(tied.param_count().unwrap(), 24 + 8 + 6);
        // the width must match the table's
        let err = lower_for(
            &spec("layers { stack = [embedding(4), linear(5), linear(vocab, tie = true)] }"),
            &[3],
            6,
            tokens,
        )
        .unwrap_err();
        assert!(
            err.message.contains("ties its [6, 5] weight"),
            "{}",
            err.message
        );
    }

    /// A built-in kind and the `layers` recipe `ahtsgd show` prints for it are one model: the
    /// same layers and names, the same parameters from the same seed, and the same logits.
    #[test]
    fn built_in_kinds_and_their_layers_recipes_are_the_same_model() {
        for (text, shape) in [
            ("mlp { hidden = [7, 5], activation = tanh }", &[1, 4, 4][..]),
            (
                "mlp { hidden = [6], layers = [layer(\"fc1\", normal(0.1))] }",
                &[5],
            ),
            ("cnn { channels = [3, 4], hidden = [5] }", &[2, 9, 7]),
            (
                "cnn { channels = [2], pool = avg, activation = silu }",
                &[1, 8, 8],
            ),
            ("resnet18 { width = 2 }", &[3, 8, 8]),
            (
                "resnet50 { width = 2, layers = [layer(\"*.shortcut\", xavier)] }",
                &[2, 8, 8],
            ),
        ] {
            let builtin = spec(text);
            let shown = crate::check::model::describe(
                &builtin,
                &[],
                crate::check::model::SYMBOLIC_CLASSES,
                None,
            )
            .unwrap()
            .to_recipe("net");
            let body = shown.strip_prefix("model net = ").unwrap();
            let layers = spec(body.trim_end());
            assert_eq!(layers.kind, "layers", "{shown}");
            let a = crate::check::model::lower(&builtin, shape, 3).unwrap();
            let b = crate::check::model::lower(&layers, shape, 3).unwrap();
            assert_eq!(a.table().unwrap(), b.table().unwrap(), "{text}:\n{shown}");
            let (ma, mb) = (
                Model::build(&a, DType::F64, &Device::Cpu, 5).unwrap(),
                Model::build(&b, DType::F64, &Device::Cpu, 5).unwrap(),
            );
            let values = |m: &Model| -> Vec<(String, Vec<f64>)> {
                m.params
                    .iter()
                    .chain(&m.buffers)
                    .map(|(n, v)| {
                        (
                            n.clone(),
                            v.as_tensor().flatten_all().unwrap().to_vec1().unwrap(),
                        )
                    })
                    .collect()
            };
            assert_eq!(values(&ma), values(&mb), "{text}");
            let numel: usize = shape.iter().product();
            let x = Tensor::randn(0f64, 1.0, (4, numel), &Device::Cpu).unwrap();
            let (la, lb) = (ma.forward(&x).unwrap(), mb.forward(&x).unwrap());
            let err = sharpness::max_abs(&(&la - &lb).unwrap()).unwrap();
            assert_eq!(err, 0.0, "{text}: the same ops in the same order");
        }
    }

    #[test]
    fn relu_cnn_with_max_pooling_matches_finite_differences() {
        // pooling before the bias and ReLU (the order this model runs in), odd sizes
        check_model("cnn { channels = [2, 3], hidden = [4] }", &[2, 9, 7]);
    }

    /// The executor's passes against candle's graph on the built-in kinds: the loss, every
    /// gradient and H·v (by the R-operator against double backward), in f64 (to 1e-12; 1e-10
    /// through batch norm) and f32 (to 1e-5; 1e-2 through batch norm).
    #[test]
    fn own_passes_match_the_graph() {
        // before any backward pass of this thread (candle reads the switch once per thread)
        sharpness::enable_second_order();
        let dev = Device::Cpu;
        // (model, sample shape, relative tolerance in f64 and in f32): in f32, batch norm over
        // tiny channels and batches magnifies the two paths' different rounding; f64 shows that
        // the maths agree
        let cases: [(&str, &[usize], f64, f64); 5] = [
            ("mlp { hidden = [7, 5] }", &[6], 1e-12, 1e-5),
            (
                "cnn { channels = [3, 4], hidden = [5] }",
                &[2, 9, 7],
                1e-12,
                1e-5,
            ),
            ("cnn { channels = [4] }", &[1, 8, 8], 1e-12, 1e-5),
            // batch norm, shortcuts, strides; H·v through the graph
            ("resnet18 { width = 2 }", &[3, 8, 8], 1e-10, 1e-2),
            ("resnet50 { width = 2 }", &[2, 8, 8], 1e-10, 1e-2),
        ];
        for (text, shape, tol64, tol32) in cases {
            for (dtype, tol) in [(DType::F64, tol64), (DType::F32, tol32)] {
                let m = build_from(&spec(text), shape, 3, dtype, &dev, 4).unwrap();
                let mut rng = ChaCha8Rng::seed_from_u64(3);
                let n = 5;
                let numel: usize = shape.iter().product();
                let xs: Vec<f64> = (0..n * numel).map(|_| rng.random::<f64>() - 0.5).collect();
                let x = Tensor::from_vec(xs, (n, numel), &dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                let y = Tensor::new(&[0u32, 2, 1, 1, 0], &dev).unwrap();
                assert!(m.has_own_passes(&x), "{text}");
                let (loss, fast) = m.loss_grads(&x, &y).unwrap();
                let graph_loss = cross_entropy(&m.forward(&x).unwrap(), &y).unwrap();
                let graph = graph_loss.backward().unwrap();
                let want = graph_loss
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap();
                assert!(
                    (loss - want).abs() < tol * want.abs(),
                    "{text}: {loss} vs {want}"
                );
                let close = |what: &str, name: &str, a: &Tensor, b: &Tensor| {
                    assert_eq!(a.dims(), b.dims(), "{text}: {what} of {name}");
                    let max = |t: &Tensor| sharpness::max_abs(t).unwrap();
                    let (err, scale) = (max(&(a - b).unwrap()), max(b));
                    assert!(scale > 0.0, "{text}: {name} has no {what}");
                    assert!(
                        err <= tol * scale,
                        "{text} {dtype:?}: {what} of {name} off by {err} of {scale}"
                    );
                };
                for (name, v) in &m.params {
                    let a = fast.get(v.as_tensor()).expect("a gradient");
                    let b = graph.get(v.as_tensor()).expect("a gradient");
                    close("gradient", name, a, b);
                }
                // H·v by the R-operator against double backward, along a seeded direction
                let vars = m.vars();
                let dir: Vec<Tensor> = vars
                    .iter()
                    .map(|p| {
                        let d: Vec<f64> = (0..p.elem_count())
                            .map(|_| rng.random::<f64>() * 2.0 - 1.0)
                            .collect();
                        Tensor::from_vec(d, p.shape(), &dev)
                            .unwrap()
                            .to_dtype(dtype)
                            .unwrap()
                    })
                    .collect();
                let rop = m.hessian(&x, &y).unwrap().hvp(&dir).unwrap();
                let loss = cross_entropy(&m.forward(&x).unwrap(), &y).unwrap();
                let dd = sharpness::hvp(&loss, &vars, &dir).unwrap();
                for ((name, _), (a, b)) in m.params.iter().zip(rop.iter().zip(&dd)) {
                    close("H·v", name, a, b);
                }
            }
        }
    }

    /// Dropout's masks are keyed by the seed, the layer and the step: the same step gives
    /// the same mask, another step or seed another; about 1 − p of the values are kept, at
    /// 1/(1 − p). Its gradient is the graph's through the same mask; in probe mode (H·v) and
    /// evaluation it is the identity, so H·v is the product of the net without it.
    #[test]
    fn dropout_is_keyed_by_seed_layer_and_step_and_off_for_hvp() {
        sharpness::enable_second_order();
        let dev = Device::Cpu;
        let with = "layers { stack = [linear(16), relu, dropout(0.3), linear(classes)] }";
        let without = "layers { stack = [linear(16), relu, linear(classes)] }";
        let m = build_from(&spec(with), &[5], 3, DType::F64, &dev, 7).unwrap();
        let plain = build_from(&spec(without), &[5], 3, DType::F64, &dev, 7).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let xs: Vec<f64> = (0..40).map(|_| rng.random::<f64>() - 0.5).collect();
        let x = Tensor::from_vec(xs, (8, 5), &dev).unwrap();
        let y = Tensor::new(&[0u32, 1, 2, 1, 0, 2, 1, 0], &dev).unwrap();
        let vals = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let logits = |m: &Model, step: u64| {
            m.set_step(step);
            vals(m.forward(&x).unwrap())
        };
        assert_eq!(logits(&m, 3), logits(&m, 3));
        assert_ne!(logits(&m, 3), logits(&m, 4));
        let other = build_from(&spec(with), &[5], 3, DType::F64, &dev, 8).unwrap();
        let key = |m: &Model| match &m.nodes[2] {
            exec::Node::Dropout { key, .. } => *key,
            _ => panic!("the third node is dropout"),
        };
        assert_ne!(key(&m), key(&other));
        // the kept fraction over 10^5 draws: 0.7 within 5 standard errors (0.0072)
        let probe = Tensor::ones(100_000, DType::F64, &dev).unwrap();
        let mask = vals(exec::dropout_mask(0.3, key(&m), 11, &probe).unwrap());
        let kept = mask.iter().filter(|&&v| v != 0.0).count() as f64 / 1e5;
        assert!((kept - 0.7).abs() < 0.0072, "kept {kept}");
        assert!(
            mask.iter()
                .all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-12)
        );
        // the gradient through the step's mask, against the graph's
        m.set_step(5);
        let (_, own) = m.loss_grads(&x, &y).unwrap();
        let graph = cross_entropy(&m.forward(&x).unwrap(), &y)
            .unwrap()
            .backward()
            .unwrap();
        for (name, v) in &m.params {
            let (a, b) = (
                own.get(v.as_tensor()).unwrap(),
                graph.get(v.as_tensor()).unwrap(),
            );
            let err = sharpness::max_abs(&(a - b).unwrap()).unwrap();
            assert!(err < 1e-12, "{name}: {err}");
        }
        // off in evaluation and in H·v: the same as the net without the layer
        let eval = |m: &Model| vals(m.forward_mode(&x, norm::Mode::Eval).unwrap());
        assert_eq!(eval(&m), eval(&plain));
        let v: Vec<Tensor> = m.vars().iter().map(|p| p.ones_like().unwrap()).collect();
        let h1 = m.hessian(&x, &y).unwrap().hvp(&v).unwrap();
        let h2 = plain.hessian(&x, &y).unwrap().hvp(&v).unwrap();
        for (a, b) in h1.iter().zip(&h2) {
            assert_eq!(vals(a.clone()), vals(b.clone()));
        }
    }

    #[test]
    fn resnet_gradient_and_hvp_match_finite_differences() {
        check_model("resnet18 { width = 2 }", &[3, 8, 8]);
        check_model("resnet18 { width = 2 }", &[2, 16, 16]);
        check_model("resnet50 { width = 2 }", &[2, 16, 16]);
    }

    #[test]
    fn batch_norm_tracks_running_statistics_outside_the_trained_parameters() {
        let m = build_from(
            &spec("resnet18 { width = 2 }"),
            &[3, 8, 8],
            10,
            DType::F64,
            &Device::Cpu,
            0,
        )
        .unwrap();
        assert!(m.params.iter().all(|(n, _)| !n.contains("running")));
        assert_eq!(
            m.buffers.len(),
            2 * m
                .params
                .iter()
                .filter(|(n, _)| n.ends_with("bn.weight"))
                .count()
        );
        let x = Tensor::randn(0f64, 1.0, (4, 3, 8, 8), &Device::Cpu)
            .unwrap()
            .affine(3.0, 5.0)
            .unwrap();
        let rm = |m: &Model| {
            m.buffers
                .iter()
                .find(|(n, _)| n == "stem.bn.running_mean")
                .unwrap()
                .1
                .as_tensor()
                .to_vec1::<f64>()
                .unwrap()
        };
        let before = rm(&m);
        let eval_a = m.forward_mode(&x, norm::Mode::Eval).unwrap();
        m.forward_mode(&x, norm::Mode::Probe).unwrap();
        assert_eq!(
            rm(&m),
            before,
            "probe and eval passes leave the statistics alone"
        );
        m.forward(&x).unwrap();
        assert_ne!(rm(&m), before, "a training pass moves them");
        let eval_b = m.forward_mode(&x, norm::Mode::Eval).unwrap();
        assert!(
            sharpness::max_abs(&(eval_a - eval_b).unwrap()).unwrap() > 0.0,
            "evaluation uses them"
        );
    }

    #[test]
    fn max_pool_by_reshape_routes_the_whole_gradient_to_the_argmax() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::new(&[[[[1.0f64, 5.0], [2.0, 3.0]]]], &dev).unwrap())
            .unwrap();
        let g = pool2(x.as_tensor(), true)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gx = g
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        assert_eq!(gx, vec![0.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn zero_init_gives_zero_weights_and_counts_parameters() {
        let m = build_from(
            &spec("mlp { hidden = [7], init = zeros }"),
            &[1, 2, 2],
            3,
            DType::F32,
            &Device::Cpu,
            0,
        )
        .unwrap();
        assert_eq!(m.param_count(), 4 * 7 + 7 + 7 * 3 + 3);
        let w = m
            .params
            .iter()
            .find(|(n, _)| n == "fc0.weight")
            .unwrap()
            .1
            .as_tensor()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(w, 0.0);
    }

    fn param(m: &Model, name: &str) -> Vec<f64> {
        m.params
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no {name}"))
            .1
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
    }

    #[test]
    fn layer_overrides_change_only_the_layers_they_match() {
        let build =
            |text: &str| build_from(&spec(text), &[3, 8, 8], 4, DType::F32, &Device::Cpu, 3);
        let m = build(
            "cnn { channels = [2, 3], hidden = [5], init = zeros, layers = [layer(\"conv*\", constant(0.5)), layer(\"conv1\", bias_init = constant(-1)), layer(\"fc1\", normal(0.1))] }",
        )
        .unwrap();
        assert!(param(&m, "conv0.weight").iter().all(|&v| v == 0.5));
        assert!(param(&m, "conv1.weight").iter().all(|&v| v == 0.5));
        assert!(param(&m, "conv1.bias").iter().all(|&v| v == -1.0));
        assert!(
            param(&m, "conv0.bias").iter().all(|&v| v == 0.0),
            "bias_init stays zeros"
        );
        assert!(
            param(&m, "fc0.weight").iter().all(|&v| v == 0.0),
            "unmatched keeps init"
        );
        let head = param(&m, "fc1.weight");
        let sd = (head.iter().map(|v| v * v).sum::<f64>() / head.len() as f64).sqrt();
        assert!(
            head.iter().any(|&v| v != 0.0) && sd < 0.3,
            "normal(0.1) head, sd {sd}"
        );

        // ResNet layers by pattern; batch norm is untouched.
        let r = build_from(
            &spec("resnet18 { width = 2, layers = [layer(\"*.shortcut\", zeros), layer(\"fc\", zeros, bias_init = constant(0.25))] }"),
            &[3, 8, 8],
            4,
            DType::F32,
            &Device::Cpu,
            0,
        )
        .unwrap();
        assert!(
            param(&r, "layer2.0.shortcut.weight")
                .iter()
                .all(|&v| v == 0.0)
        );
        assert!(param(&r, "layer2.0.conv1.weight").iter().any(|&v| v != 0.0));
        assert!(
            param(&r, "layer2.0.shortcut.bn.weight")
                .iter()
                .all(|&v| v == 1.0)
        );
        assert!(param(&r, "fc.bias").iter().all(|&v| v == 0.25));

        // A pattern that matches nothing is an error that lists the layers.
        let err = build("mlp { hidden = [4], layers = [layer(\"fc9\", zeros)] }")
            .err()
            .expect("no such layer")
            .to_string();
        assert!(
            err.contains("`fc9` matches no layer") && err.contains("fc0, fc1"),
            "{err}"
        );
    }
}
