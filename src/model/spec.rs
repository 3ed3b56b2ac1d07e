//! The typed description of a model: a stack of layers with resolved numbers and names, as the
//! checker hands it to the builder. No candle here: shapes and parameter counts are worked out
//! from it without building anything (`ahtsgd plan --layers`).

use crate::source::Span;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::fmt::Write as _;

/// A weight initialisation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// candle-nn's default: Kaiming-normal weights with fan-in; biases uniform in ±1/√fan_in.
    Default,
    Zeros,
    Constant(f64),
    Normal(f64),
    Uniform(f64),
    Xavier,
    Kaiming,
}

impl Init {
    /// `n` values for a tensor with the given fans, drawn from `rng`.
    pub fn sample(self, n: usize, fan_in: usize, fan_out: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
        let normal = |sd: f64, rng: &mut ChaCha8Rng| {
            let d = Normal::new(0.0, sd.max(0.0)).expect("sd ≥ 0");
            (0..n).map(|_| d.sample(rng)).collect::<Vec<f64>>()
        };
        let uniform = |b: f64, rng: &mut ChaCha8Rng| {
            (0..n)
                .map(|_| (rng.random::<f64>() * 2.0 - 1.0) * b)
                .collect::<Vec<f64>>()
        };
        match self {
            Init::Zeros => vec![0.0; n],
            Init::Constant(c) => vec![c; n],
            Init::Normal(sd) => normal(sd, rng),
            Init::Uniform(b) => uniform(b, rng),
            Init::Xavier => uniform((6.0 / (fan_in + fan_out) as f64).sqrt(), rng),
            Init::Default | Init::Kaiming => normal((2.0 / fan_in.max(1) as f64).sqrt(), rng),
        }
    }

    /// Recipe text: `zeros`, `normal(0.01)`, ...
    pub fn to_source(self) -> String {
        let num = |v: f64| crate::plan::fmt_num(v, v.fract() == 0.0);
        match self {
            Init::Default => "default".into(),
            Init::Zeros => "zeros".into(),
            Init::Constant(v) => format!("constant({})", num(v)),
            Init::Normal(v) => format!("normal({})", num(v)),
            Init::Uniform(v) => format!("uniform({})", num(v)),
            Init::Xavier => "xavier".into(),
            Init::Kaiming => "kaiming".into(),
        }
    }
}

/// Element-wise activation functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Relu,
    Tanh,
    Sigmoid,
    Silu,
    Gelu,
}

impl Activation {
    /// Every activation, in the order the language lists them.
    pub const ALL: [Activation; 5] = [
        Activation::Relu,
        Activation::Tanh,
        Activation::Sigmoid,
        Activation::Silu,
        Activation::Gelu,
    ];

    /// The name a recipe writes.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Tanh => "tanh",
            Activation::Sigmoid => "sigmoid",
            Activation::Silu => "silu",
            Activation::Gelu => "gelu",
        }
    }

    /// The activation a recipe names, if it names one.
    pub fn named(name: &str) -> Option<Activation> {
        Activation::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// How `tanh` and `gelu` compute tanh on the CPU (the experiment's `tanh` field).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tanh {
    /// The C library's `tanhf`/`tanh` (and `powf` for GELU's cube): the default of language
    /// versions 1 and 2, whose last bits depend on the C library.
    #[default]
    System,
    /// ahtsgd's own vectorised tanh ([`crate::model::tanh`]) and `z·z·z`: the same bits on
    /// every CPU; the default from version 3.
    Portable,
}

impl Tanh {
    /// The value a recipe writes.
    pub fn name(self) -> &'static str {
        match self {
            Tanh::System => "system",
            Tanh::Portable => "portable",
        }
    }
}

/// A per-layer initialisation override from a model's `layers` list: `T` is [`Init`] when
/// building, recipe text when listing (`plan --layers`).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerInit<T = Init> {
    /// Layer name or pattern (`*` matches any text).
    pub pattern: String,
    /// `None`: `inherit`.
    pub init: Option<T>,
    pub bias_init: Option<T>,
}

/// One layer of a stack.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    /// The full name: parameters are `NAME.weight`, `NAME.bias`, ...
    pub name: String,
    pub kind: LayerKind,
    /// The weight and bias initialisations in force for this layer before the model's
    /// `layers` overrides (its own, its enclosing block's, or the model's).
    pub init: Init,
    pub bias_init: Init,
    /// Where the layer is written (for shape diagnostics).
    pub span: Span,
}

/// What a layer computes.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerKind {
    /// `x·wᵀ + b` over the last axis (each token's features, for `[tokens, features]`).
    /// `tie`: `w` is the model's embedding table (`[vocab, dim]`), not a weight of its own.
    Linear {
        out: usize,
        bias: bool,
        tie: bool,
    },
    /// 2-D convolution of `[C, H, W]` samples.
    Conv {
        out: usize,
        kernel: [usize; 2],
        stride: usize,
        padding: usize,
        bias: bool,
    },
    MaxPool {
        k: usize,
        stride: usize,
    },
    AvgPool {
        k: usize,
        stride: usize,
    },
    /// `[C, H, W] -> [C]`.
    GlobalAvgPool,
    /// All axes but the batch's into one.
    Flatten,
    /// Over the channels of `[C, H, W]` (or the features of `[F]`).
    BatchNorm {
        momentum: f64,
        eps: f64,
    },
    Act(Activation),
    /// `x` for `x > 0`, `slope·x` otherwise.
    LeakyRelu {
        slope: f64,
    },
    /// Over the last axis of each sample (its features), with a learned scale and shift.
    LayerNorm {
        eps: f64,
    },
    /// Each value zeroed with probability `p` in training steps, the rest scaled by
    /// `1/(1 − p)`; the identity in evaluation and sharpness estimation.
    Dropout {
        p: f64,
    },
    /// `[tokens]` of ids below `vocab` -> `[tokens, dim]`: row `id` of a learned
    /// `[vocab, dim]` table for each token. Only as a model's first layer.
    Embedding {
        vocab: usize,
        dim: usize,
    },
    /// `[tokens, dim]` plus a learned `[context, dim]` table, row `t` at position `t`.
    Positions {
        dim: usize,
    },
    /// Multi-head self-attention over `[tokens, dim]`: `qkv` (`[3·dim, dim]`) projects each
    /// token to its query, key and value, each head (`dim / heads` features) attends with
    /// scaled dot products (to earlier positions alone when `causal`), and `out` (`[dim,
    /// dim]`) projects the heads' outputs back.
    Attention {
        heads: usize,
        causal: bool,
        bias: bool,
    },
    /// `[tokens, dim] -> [dim]`: the mean over positions.
    MeanOverTokens,
    /// `body(x) + shortcut(x)`; an empty shortcut is the identity.
    Residual {
        body: Vec<Layer>,
        shortcut: Vec<Layer>,
    },
}

impl LayerKind {
    /// The kind's name in a recipe.
    pub fn keyword(&self) -> &'static str {
        match self {
            LayerKind::Linear { .. } => "linear",
            LayerKind::Conv { .. } => "conv",
            LayerKind::MaxPool { .. } => "max_pool",
            LayerKind::AvgPool { .. } => "avg_pool",
            LayerKind::GlobalAvgPool => "global_avg_pool",
            LayerKind::Flatten => "flatten",
            LayerKind::BatchNorm { .. } => "batch_norm",
            LayerKind::Act(a) => a.name(),
            LayerKind::LeakyRelu { .. } => "leaky_relu",
            LayerKind::LayerNorm { .. } => "layer_norm",
            LayerKind::Dropout { .. } => "dropout",
            LayerKind::Embedding { .. } => "embedding",
            LayerKind::Positions { .. } => "positions",
            LayerKind::Attention { .. } => "attention",
            LayerKind::MeanOverTokens => "mean_over_tokens",
            LayerKind::Residual { .. } => "residual",
        }
    }
}

/// A model: its layers, initialisation and the sample shape it was laid out for.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    /// The recipe kind (`layers`, `mlp`, ...), for messages.
    pub kind: String,
    pub stack: Vec<Layer>,
    /// The `layers = [layer(...)]` overrides, applied over each layer's own initialisation.
    pub overrides: Vec<LayerInit>,
    /// One sample's shape (`[features]` or `[channels, height, width]`).
    pub input: Vec<usize>,
    pub classes: usize,
    /// Whether the data has a target at every position (a text's next bytes): the model must
    /// then end in `[tokens, classes]`. Otherwise it ends in `[classes]`, or, on token data,
    /// in `[tokens, classes]` read at the last position (where a modular task's `=` is).
    pub every_position: bool,
    /// How tanh is computed (`tanh` and `gelu` layers on the CPU).
    pub tanh: Tanh,
}

/// A tensor shape for one sample (no batch axis).
pub type Shape = Vec<usize>;

/// A stack that does not fit its input: which layer, and what to say.
#[derive(Clone, Debug, PartialEq)]
pub struct ShapeError {
    pub layer: String,
    pub span: Span,
    pub message: String,
    pub help: String,
}

/// One row of `plan --layers`: a layer, its output shape and what it trains.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LayerRow {
    pub name: String,
    pub kind: &'static str,
    /// Output shape of one sample.
    pub output: Shape,
    /// Weight shape: `[out, in]` or `[out, in, kh, kw]`; empty for layers without a weight.
    pub shape: Vec<usize>,
    /// Trained parameters of the layer: weight, bias, batch-norm scale and shift.
    pub parameters: usize,
    /// The weight initialisation as recipe text (after the model's overrides); `None` for
    /// layers without a weight.
    pub init: Option<String>,
    /// The bias initialisation as recipe text; `None` for layers without a bias.
    pub bias_init: Option<String>,
    /// Nesting depth (a residual's body and shortcut are one deeper).
    pub depth: usize,
}

fn dims(s: &[usize]) -> String {
    format!(
        "[{}]",
        s.iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

impl Layer {
    /// The output shape for an input of `input`, or why the layer cannot take it.
    pub fn output(&self, input: &[usize]) -> Result<Shape, ShapeError> {
        let err = |message: String, help: &str| ShapeError {
            layer: self.name.clone(),
            span: self.span,
            message,
            help: help.to_string(),
        };
        let image = |what: &str| -> Result<(usize, usize, usize), ShapeError> {
            match input {
                &[c, h, w] => Ok((c, h, w)),
                _ => Err(err(
                    format!(
                        "`{}` ({what}) needs an image [channels, height, width], its input is {}",
                        self.name,
                        dims(input)
                    ),
                    "put it before the `flatten` or `global_avg_pool` that makes the input flat",
                )),
            }
        };
        let window = |k: [usize; 2], stride: usize, padding: usize, what: &str| {
            let (c, h, w) = image(what)?;
            let (hp, wp) = (h + 2 * padding, w + 2 * padding);
            if k[0] > hp || k[1] > wp {
                return Err(err(
                    format!(
                        "`{}` has a {}x{} window, larger than its input {} ({hp}x{wp} with padding)",
                        self.name,
                        k[0],
                        k[1],
                        dims(input)
                    ),
                    "use a smaller kernel, more padding, or fewer downsampling layers before it",
                ));
            }
            Ok((c, (hp - k[0]) / stride + 1, (wp - k[1]) / stride + 1))
        };
        Ok(match &self.kind {
            LayerKind::Embedding { dim, .. } => match input {
                [tokens] => vec![*tokens, *dim],
                _ => {
                    return Err(err(
                        format!(
                            "`{}` (embedding) reads a sequence of token ids, its input is {}",
                            self.name,
                            dims(input)
                        ),
                        "make it the first layer, on a token dataset (`modular`)",
                    ));
                }
            },
            LayerKind::Linear { out, .. } => match input {
                [_] => vec![*out],
                [tokens, _] => vec![*tokens, *out],
                _ => {
                    return Err(err(
                        format!(
                            "`{}` (linear) acts on flat features (or each token's), its input is {}",
                            self.name,
                            dims(input)
                        ),
                        "add `flatten` (or `global_avg_pool`) before it",
                    ));
                }
            },
            LayerKind::Positions { dim } => match input {
                [_, d] if d == dim => input.to_vec(),
                _ => {
                    return Err(err(
                        format!(
                            "`{}` (positions) adds [tokens, {dim}] to each sequence, its input is {}",
                            self.name,
                            dims(input)
                        ),
                        "put it after the `embedding`, with the embedding's width",
                    ));
                }
            },
            LayerKind::Attention { heads, .. } => match input {
                [_, d] if d % heads == 0 => input.to_vec(),
                [_, d] => {
                    return Err(err(
                        format!(
                            "`{}` (attention) splits {d} features into {heads} heads, which does not divide them",
                            self.name
                        ),
                        "choose a head count that divides the width (4 heads of 32 for 128)",
                    ));
                }
                _ => {
                    return Err(err(
                        format!(
                            "`{}` (attention) attends over [tokens, features], its input is {}",
                            self.name,
                            dims(input)
                        ),
                        "put it after an `embedding` (on token data), before any `mean_over_tokens`",
                    ));
                }
            },
            LayerKind::MeanOverTokens => match input {
                [_, d] => vec![*d],
                _ => {
                    return Err(err(
                        format!(
                            "`{}` (mean_over_tokens) averages [tokens, features], its input is {}",
                            self.name,
                            dims(input)
                        ),
                        "use it on token data, after the `embedding`",
                    ));
                }
            },
            LayerKind::Conv {
                out,
                kernel,
                stride,
                padding,
                ..
            } => {
                let (_, h, w) = window(*kernel, *stride, *padding, "a convolution")?;
                vec![*out, h, w]
            }
            LayerKind::MaxPool { k, stride } | LayerKind::AvgPool { k, stride } => {
                let (c, h, w) = window([*k, *k], *stride, 0, "pooling")?;
                vec![c, h, w]
            }
            LayerKind::GlobalAvgPool => vec![image("global average pooling")?.0],
            LayerKind::Flatten => vec![input.iter().product()],
            LayerKind::BatchNorm { .. } => {
                if !matches!(input.len(), 1 | 3) {
                    return Err(err(
                        format!(
                            "`{}` (batch norm) normalises [features] or [channels, height, width], its input is {}",
                            self.name,
                            dims(input)
                        ),
                        "flatten the input first",
                    ));
                }
                input.to_vec()
            }
            LayerKind::Act(_) | LayerKind::LeakyRelu { .. } | LayerKind::Dropout { .. } => {
                input.to_vec()
            }
            LayerKind::LayerNorm { .. } => {
                if !matches!(input.len(), 1 | 2) {
                    return Err(err(
                        format!(
                            "`{}` (layer norm) normalises the last axis of [features] (or each token's [tokens, features]), its input is {}",
                            self.name,
                            dims(input)
                        ),
                        "use `batch_norm` for images (it normalises each channel), or `flatten` first",
                    ));
                }
                input.to_vec()
            }
            LayerKind::Residual { body, shortcut } => {
                let b = stack_output(body, input)?;
                let s = stack_output(shortcut, input)?;
                if b != s {
                    return Err(err(
                        format!(
                            "the residual `{}` adds its body's output {} to its shortcut's {}",
                            self.name,
                            dims(&b),
                            dims(&s)
                        ),
                        if shortcut.is_empty() {
                            "give it a shortcut that matches: `shortcut = [conv(OUT, 1, stride = S), batch_norm]`"
                        } else {
                            "make the shortcut's output match the body's (channels and stride)"
                        },
                    ));
                }
                b
            }
        })
    }

    /// (weight shape, whether it has a bias) for layers with a weight.
    fn weight(&self, input: &[usize]) -> Option<(Vec<usize>, bool)> {
        match &self.kind {
            LayerKind::Linear { out, bias, .. } => {
                Some((vec![*out, input[input.len() - 1]], *bias))
            }
            LayerKind::Conv {
                out, kernel, bias, ..
            } => Some((vec![*out, input[0], kernel[0], kernel[1]], *bias)),
            LayerKind::Embedding { vocab, dim } => Some((vec![*vocab, *dim], false)),
            _ => None,
        }
    }
}

/// The output shape of a stack.
pub fn stack_output(stack: &[Layer], input: &[usize]) -> Result<Shape, ShapeError> {
    let mut s = input.to_vec();
    for l in stack {
        s = l.output(&s)?;
    }
    Ok(s)
}

/// Whether `name` matches `pattern`, where `*` stands for any text (possibly empty).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// The (weight, bias) initialisation of layer `name`: `base`, changed by every matching
/// override in order. Marks the overrides that matched in `used`.
pub fn layer_init<T: Clone>(
    name: &str,
    base: (T, T),
    overrides: &[LayerInit<T>],
    used: &mut [bool],
) -> (T, T) {
    let (mut w, mut b) = base;
    for (o, used) in overrides.iter().zip(used) {
        if glob_match(&o.pattern, name) {
            *used = true;
            w = o.init.clone().unwrap_or(w);
            b = o.bias_init.clone().unwrap_or(b);
        }
    }
    (w, b)
}

impl ModelSpec {
    /// Every layer, depth first (a residual before its body, then its shortcut), with its
    /// input shape and depth. Fails on the first layer that does not fit.
    pub fn walk(&self) -> Result<Vec<(&Layer, Shape, usize)>, ShapeError> {
        fn go<'a>(
            stack: &'a [Layer],
            input: &[usize],
            depth: usize,
            out: &mut Vec<(&'a Layer, Shape, usize)>,
        ) -> Result<Shape, ShapeError> {
            let mut s = input.to_vec();
            for (i, l) in stack.iter().enumerate() {
                if matches!(l.kind, LayerKind::Embedding { .. }) && (depth > 0 || i > 0) {
                    return Err(ShapeError {
                        layer: l.name.clone(),
                        span: l.span,
                        message: format!(
                            "`{}` (embedding) reads the data's token ids: it must be the model's first layer",
                            l.name
                        ),
                        help: "move it to the start of the stack".into(),
                    });
                }
                out.push((l, s.clone(), depth));
                if let LayerKind::Residual { body, shortcut } = &l.kind {
                    go(body, &s, depth + 1, out)?;
                    go(shortcut, &s, depth + 1, out)?;
                }
                s = l.output(&s)?;
            }
            Ok(s)
        }
        let mut out = Vec::new();
        let last = go(&self.stack, &self.input, 0, &mut out)?;
        self.check_ties(&out)?;
        let per_token = match (&self.input[..], &last[..]) {
            (&[t], &[lt, k]) => lt == t && k == self.classes,
            _ => false,
        };
        // a misfit output is the last layer's
        let at_last = |message: String, help: &str| {
            let (span, layer) = self
                .stack
                .last()
                .map_or((Span::default(), String::new()), |l| {
                    (l.span, l.name.clone())
                });
            Err(ShapeError {
                layer,
                span,
                message,
                help: help.into(),
            })
        };
        if self.every_position && !per_token {
            return at_last(
                format!(
                    "the model ends in {}, but this data has a target at each of its {} positions: the last layer must give [{}, {}]",
                    dims(&last),
                    self.input[0],
                    self.input[0],
                    self.classes
                ),
                "end the stack with `linear(vocab)` on each token's features (no `flatten` or `mean_over_tokens`)",
            );
        }
        if last != [self.classes] && !per_token {
            return at_last(
                format!(
                    "the model ends in {}, but the data has {} classes: the last layer must give [{}]",
                    dims(&last),
                    self.classes,
                    self.classes
                ),
                "end the stack with `linear(classes)` (after `flatten` or `global_avg_pool` for images)",
            );
        }
        Ok(out)
    }

    /// A tied `linear` reads the embedding's table as its weight: the model must start with
    /// an embedding of the linear's width and input.
    fn check_ties(&self, walked: &[(&Layer, Shape, usize)]) -> Result<(), ShapeError> {
        let table = match self.stack.first().map(|l| &l.kind) {
            Some(LayerKind::Embedding { vocab, dim }) => Some((*vocab, *dim)),
            _ => None,
        };
        for (l, input, _) in walked {
            let LayerKind::Linear { out, tie: true, .. } = l.kind else {
                continue;
            };
            let features = input[input.len() - 1];
            if table != Some((out, features)) {
                return Err(ShapeError {
                    layer: l.name.clone(),
                    span: l.span,
                    message: match table {
                        None => format!(
                            "`{}` ties its weight to the embedding, but the model does not start with one",
                            l.name
                        ),
                        Some((v, d)) => format!(
                            "`{}` ties its [{out}, {features}] weight to the embedding's [{v}, {d}] table, which differs",
                            l.name
                        ),
                    },
                    help: "a tied output layer is `linear(vocab, tie = true)` on features as wide as the embedding's".into(),
                });
            }
        }
        Ok(())
    }

    /// The `plan --layers` table: every layer with its output shape, parameters and
    /// initialisation after the overrides; an override that matches no layer is an error.
    pub fn table(&self) -> Result<Vec<LayerRow>, ShapeError> {
        let walked = self.walk()?;
        let mut used = vec![false; self.overrides.len()];
        let mut rows = Vec::with_capacity(walked.len());
        for (l, input, depth) in walked {
            let output = l.output(&input)?;
            let (init, bias) =
                layer_init(&l.name, (l.init, l.bias_init), &self.overrides, &mut used);
            let (shape, init, bias_init, parameters) = match l.weight(&input) {
                Some((w, has_bias)) => {
                    let tied = matches!(l.kind, LayerKind::Linear { tie: true, .. });
                    let n: usize = if tied { 0 } else { w.iter().product() };
                    let b = if has_bias { w[0] } else { 0 };
                    (
                        w,
                        Some(init.to_source()),
                        has_bias.then(|| bias.to_source()),
                        n + b,
                    )
                }
                None => match l.kind {
                    LayerKind::Attention { bias: has_bias, .. } => {
                        let d = input[1];
                        (
                            vec![3 * d, d],
                            Some(init.to_source()),
                            has_bias.then(|| bias.to_source()),
                            4 * d * d + if has_bias { 4 * d } else { 0 },
                        )
                    }
                    LayerKind::Positions { dim } => (
                        vec![input[0], dim],
                        Some(init.to_source()),
                        None,
                        input[0] * dim,
                    ),
                    _ => {
                        let p = match l.kind {
                            LayerKind::BatchNorm { .. } => 2 * input[0],
                            LayerKind::LayerNorm { .. } => 2 * input[input.len() - 1],
                            _ => 0,
                        };
                        (Vec::new(), None, None, p)
                    }
                },
            };
            rows.push(LayerRow {
                name: l.name.clone(),
                kind: l.kind.keyword(),
                output,
                shape,
                parameters,
                init,
                bias_init,
                depth,
            });
        }
        if let Some(i) = used.iter().position(|u| !u) {
            let names: Vec<&str> = rows
                .iter()
                .filter(|r| !r.shape.is_empty())
                .map(|r| r.name.as_str())
                .collect();
            return Err(ShapeError {
                layer: String::new(),
                span: Span::default(),
                message: format!(
                    "the layer override `{}` matches no layer of this {}; its layers are {}",
                    self.overrides[i].pattern,
                    self.kind,
                    names.join(", ")
                ),
                help: "`ahtsgd plan --layers` lists the layers and their names".into(),
            });
        }
        Ok(rows)
    }

    /// The number of trained parameters.
    pub fn param_count(&self) -> Result<usize, ShapeError> {
        Ok(self.table()?.iter().map(|r| r.parameters).sum())
    }

    /// The model as a `layers` recipe a user can copy and change: every layer named, every
    /// initialisation written where it differs from the model-wide one.
    pub fn to_recipe(&self, name: &str) -> String {
        let (init, bias_init) = self
            .stack
            .first()
            .map_or((Init::Default, Init::Default), |l| (l.init, l.bias_init));
        let mut out = format!("model {name} = layers {{\n");
        let _ = writeln!(out, "  init = {}", init.to_source());
        let _ = writeln!(out, "  bias_init = {}", bias_init.to_source());
        if !self.overrides.is_empty() {
            out.push_str("  layers = [\n");
            for o in &self.overrides {
                let mut args = vec![format!("{:?}", o.pattern)];
                if let Some(i) = o.init {
                    args.push(i.to_source());
                }
                if let Some(b) = o.bias_init {
                    args.push(format!("bias_init = {}", b.to_source()));
                }
                let _ = writeln!(out, "    layer({}),", args.join(", "));
            }
            out.push_str("  ]\n");
        }
        out.push_str("  stack = [\n");
        let tokens = matches!(
            self.stack.first().map(|l| &l.kind),
            Some(LayerKind::Embedding { .. })
        );
        let ctx = Context {
            inherited: (init, bias_init),
            classes: self.classes,
            class_name: if tokens { "vocab" } else { "classes" },
        };
        write_stack(&self.stack, "", &ctx, 2, &mut out);
        out.push_str("  ]\n}\n");
        out
    }
}

/// What [`write_stack`] writes against: the model-wide initialisation, and the class count
/// (a width equal to it is written `classes`, or `vocab` on token data).
struct Context {
    inherited: (Init, Init),
    classes: usize,
    class_name: &'static str,
}

fn write_stack(stack: &[Layer], prefix: &str, ctx: &Context, indent: usize, out: &mut String) {
    let pad = "  ".repeat(indent);
    let inherited = ctx.inherited;
    let width = |w: usize| {
        if w == ctx.classes {
            ctx.class_name.to_string()
        } else {
            w.to_string()
        }
    };
    for l in stack {
        let local = l.name.strip_prefix(prefix).unwrap_or(&l.name);
        let mut args: Vec<String> = match &l.kind {
            LayerKind::Linear { out, bias, tie } => {
                let mut a = vec![width(*out)];
                if !bias {
                    a.push("bias = false".into());
                }
                if *tie {
                    a.push("tie = true".into());
                }
                a
            }
            LayerKind::Positions { dim } => vec![dim.to_string()],
            LayerKind::Attention {
                heads,
                causal,
                bias,
            } => {
                let mut a = vec![heads.to_string()];
                if !causal {
                    a.push("causal = false".into());
                }
                if !bias {
                    a.push("bias = false".into());
                }
                a
            }
            LayerKind::Conv {
                out,
                kernel,
                stride,
                padding,
                bias,
            } => {
                let k = if kernel[0] == kernel[1] {
                    kernel[0].to_string()
                } else {
                    format!("[{}, {}]", kernel[0], kernel[1])
                };
                let mut a = vec![width(*out), k];
                if *stride != 1 {
                    a.push(format!("stride = {stride}"));
                }
                if *padding != 0 {
                    a.push(format!("padding = {padding}"));
                }
                if !bias {
                    a.push("bias = false".into());
                }
                a
            }
            LayerKind::MaxPool { k, stride } | LayerKind::AvgPool { k, stride } => {
                let mut a = vec![k.to_string()];
                if stride != k {
                    a.push(format!("stride = {stride}"));
                }
                a
            }
            LayerKind::BatchNorm { momentum, eps } => {
                let mut a = Vec::new();
                if *momentum != 0.1 {
                    a.push(format!("momentum = {momentum:?}"));
                }
                if *eps != 1e-5 {
                    a.push(format!("eps = {eps:?}"));
                }
                a
            }
            LayerKind::LeakyRelu { slope } => vec![format!("{slope:?}")],
            LayerKind::LayerNorm { eps } if *eps != 1e-5 => vec![format!("eps = {eps:?}")],
            LayerKind::Dropout { p } => vec![format!("{p:?}")],
            LayerKind::Embedding { dim, .. } => vec![dim.to_string()],
            LayerKind::LayerNorm { .. }
            | LayerKind::MeanOverTokens
            | LayerKind::GlobalAvgPool
            | LayerKind::Flatten
            | LayerKind::Act(_)
            | LayerKind::Residual { .. } => Vec::new(),
        };
        args.push(format!("name = {local:?}"));
        if l.init != inherited.0 && !matches!(l.kind, LayerKind::Residual { .. }) {
            args.push(format!("init = {}", l.init.to_source()));
        }
        if l.bias_init != inherited.1 && !matches!(l.kind, LayerKind::Residual { .. }) {
            args.push(format!("bias_init = {}", l.bias_init.to_source()));
        }
        if let LayerKind::Residual { body, shortcut } = &l.kind {
            let inner = format!("{}.", l.name);
            let _ = writeln!(out, "{pad}residual([");
            write_stack(body, &inner, ctx, indent + 1, out);
            if shortcut.is_empty() {
                let _ = writeln!(out, "{pad}], {}),", args.join(", "));
            } else {
                let _ = writeln!(out, "{pad}], shortcut = [");
                write_stack(shortcut, &inner, ctx, indent + 1, out);
                let _ = writeln!(out, "{pad}], {}),", args.join(", "));
            }
            continue;
        }
        let _ = writeln!(out, "{pad}{}({}),", l.kind.keyword(), args.join(", "));
    }
}
