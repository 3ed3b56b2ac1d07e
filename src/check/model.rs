//! Lowering a checked model to its typed description ([`ModelSpec`]): a `layers` model's
//! stack named and typed, each built-in kind expanded into the stack it stands for (with the
//! layer names its checkpoints use), shapes inferred from the sample shape and class count.

use crate::diagnostic::{Code, Diagnostic};
use crate::model::spec::{
    Activation, Init, Layer, LayerInit, LayerKind, ModelSpec, ShapeError, Tanh,
};
use crate::plan::{Obj, Val};
use crate::source::Span;

/// A class count no real dataset has, for laying out a model before its data is known
/// (`ahtsgd show`): [`ModelSpec::to_recipe`] writes a width equal to it as `classes`.
pub const SYMBOLIC_CLASSES: usize = usize::MAX / 2;

/// The sample shape of a dataset kind, when it is known without reading files.
pub fn sample_shape(data: &Obj) -> Option<Vec<usize>> {
    match data.kind {
        "mnist_mini" | "mnist" | "fashion_mnist" => Some(vec![1, 28, 28]),
        "cifar10" | "svhn" => Some(vec![3, 32, 32]),
        "blobs" => Some(vec![data.usize("features")]),
        "spirals" => Some(vec![2]),
        "arrays" => Some(data.usize_list("shape")).filter(|s| !s.is_empty()),
        "modular" => Some(vec![4]),
        "text" => Some(vec![data.usize("context")]),
        _ => None,
    }
}

/// The vocabulary of a token dataset kind (`vocab` in a stack); `None` for other kinds.
pub fn vocab(data: &Obj) -> Option<usize> {
    match data.kind {
        "modular" => Some(data.usize("p") + 2),
        "text" => Some(256),
        _ => None,
    }
}

/// What a model on token data reads and predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tokens {
    /// Token ids are below this (`vocab` in a stack).
    pub vocab: usize,
    /// Whether every position has a target (a text's next byte), or the sequence one (a
    /// modular task's answer).
    pub every_position: bool,
}

/// The tokens of a token dataset kind; `None` for other kinds.
pub fn tokens(data: &Obj) -> Option<Tokens> {
    vocab(data).map(|vocab| Tokens {
        vocab,
        every_position: data.kind == "text",
    })
}

/// The number of classes of a dataset kind, when known without reading files.
pub fn classes(data: &Obj) -> Option<usize> {
    match data.kind {
        "blobs" | "spirals" => Some(data.usize("classes")),
        "arrays" => Some(data.usize("classes")).filter(|&k| k > 0),
        "modular" | "text" => vocab(data),
        _ => Some(10),
    }
}

/// An initialisation as checked.
pub fn init(o: &Obj) -> Init {
    match o.kind {
        "zeros" => Init::Zeros,
        "constant" => Init::Constant(o.f64("value")),
        "normal" => Init::Normal(o.f64("std")),
        "uniform" => Init::Uniform(o.f64("bound")),
        "xavier" => Init::Xavier,
        "kaiming" => Init::Kaiming,
        // `default`, and `inherit` where nothing is inherited
        _ => Init::Default,
    }
}

/// `None` for `inherit`.
fn own_init(o: &Obj) -> Option<Init> {
    (o.kind != "inherit").then(|| init(o))
}

/// Whether a checked object holds `field` (kinds without it do not).
pub(crate) fn has(o: &Obj, field: &str) -> bool {
    o.fields.iter().any(|(n, _)| *n == field)
}

/// A shape problem as a diagnostic on the layer.
pub fn shape_diagnostic(e: &ShapeError, model: &Obj) -> Diagnostic {
    let span = if e.span == Span::default() {
        model.span
    } else {
        e.span
    };
    let label = if e.layer.is_empty() {
        "in this model"
    } else if e.message.starts_with("two layers") {
        "named again here"
    } else {
        "does not fit"
    };
    Diagnostic::error(Code::Shape, e.message.clone())
        .at(span, label)
        .help(e.help.clone())
}

/// The typed model for samples of `input` and `classes` classes, its shapes checked.
pub fn lower(model: &Obj, input: &[usize], classes: usize) -> Result<ModelSpec, Diagnostic> {
    lower_for(model, input, classes, None)
}

/// [`lower`] for a dataset whose samples are token ids, where they are.
pub fn lower_for(
    model: &Obj,
    input: &[usize],
    classes: usize,
    tokens: Option<Tokens>,
) -> Result<ModelSpec, Diagnostic> {
    let spec = describe(model, input, classes, tokens).map_err(|e| shape_diagnostic(&e, model))?;
    spec.table().map_err(|e| shape_diagnostic(&e, model))?;
    Ok(spec)
}

/// The typed model, shapes not yet checked.
pub fn describe(
    model: &Obj,
    input: &[usize],
    classes: usize,
    tokens: Option<Tokens>,
) -> Result<ModelSpec, ShapeError> {
    let vocab = tokens.map(|t| t.vocab);
    let every_position = tokens.is_some_and(|t| t.every_position);
    let base = (
        init(model.obj("init")),
        if has(model, "bias_init") {
            init(model.obj("bias_init"))
        } else {
            Init::Default
        },
    );
    let overrides = if has(model, "layers") {
        model
            .obj_list("layers")
            .into_iter()
            .map(|o| LayerInit {
                pattern: o.str("name").to_string(),
                init: own_init(o.obj("init")),
                bias_init: own_init(o.obj("bias_init")),
            })
            .collect()
    } else {
        Vec::new()
    };
    let stack = match model.kind {
        "layers" => {
            let mut names = Vec::new();
            lower_stack(
                model.get("stack"),
                "",
                "",
                base,
                (classes, vocab),
                &mut names,
            )?
        }
        "mlp" => {
            let hidden = model.usize_list("hidden");
            mlp(&hidden, activation(model), classes, model.span, base)
        }
        "cnn" => {
            let channels = model.usize_list("channels");
            let hidden = model.usize_list("hidden");
            let max_pool = model.str("pool") == "max";
            let act = activation(model);
            cnn(&channels, &hidden, max_pool, act, classes, model.span, base)
        }
        "transformer" => {
            let vocab = vocab.ok_or_else(|| ShapeError {
                layer: String::new(),
                span: model.span,
                message: "a transformer reads token ids, but this dataset's samples are not tokens (it has no `vocab`)".into(),
                help: "use a token dataset (`modular` or `text`), or another model kind".into(),
            })?;
            let shape = Transformer {
                blocks: model.usize("blocks"),
                dim: model.usize("dim"),
                heads: model.usize("heads"),
                mlp: model.usize("mlp"),
            };
            transformer(shape, vocab, model.span, base)
        }
        kind => {
            let (stages, bottleneck) = match kind {
                "resnet50" => ([3, 4, 6, 3], true),
                _ => ([2, 2, 2, 2], false),
            };
            let width = model.usize("width");
            resnet(width, stages, bottleneck, classes, model.span, base)
        }
    };
    Ok(ModelSpec {
        kind: model.kind.to_string(),
        stack,
        overrides,
        input: input.to_vec(),
        classes,
        every_position,
        tanh: Tanh::default(),
    })
}

/// The typed model of a trial's configuration (an `experiment`'s resolved fields) for
/// samples of `input` and `classes` classes: [`lower_for`] with the trial's token data and
/// its `tanh`.
pub fn lower_trial(config: &Obj, input: &[usize], classes: usize) -> Result<ModelSpec, Diagnostic> {
    let mut spec = lower_for(
        config.obj("model"),
        input,
        classes,
        tokens(config.obj("data")),
    )?;
    spec.tanh = tanh(config);
    Ok(spec)
}

/// An experiment's `tanh`.
pub fn tanh(config: &Obj) -> Tanh {
    match config.str("tanh") {
        "portable" => Tanh::Portable,
        _ => Tanh::System,
    }
}

fn activation(model: &Obj) -> Activation {
    Activation::named(model.str("activation")).unwrap_or(Activation::Relu)
}

/// A checked stack value -> named, typed layers. `prefix` is the enclosing residual's name
/// and a dot; `unnamed` what unnamed layers start with (`shortcut.` in a shortcut).
fn lower_stack(
    v: &Val,
    prefix: &str,
    unnamed: &str,
    inherited: (Init, Init),
    (classes, vocab): (usize, Option<usize>),
    names: &mut Vec<String>,
) -> Result<Vec<Layer>, ShapeError> {
    let mut counts: Vec<(&'static str, usize)> = Vec::new();
    let mut out = Vec::new();
    for o in crate::check::resolve::stack_layers(v) {
        let count = match counts.iter_mut().find(|(k, _)| *k == o.kind) {
            Some((_, c)) => {
                *c += 1;
                *c - 1
            }
            None => {
                counts.push((o.kind, 1));
                0
            }
        };
        let own = o.str("name");
        let name = if own.is_empty() {
            format!("{prefix}{unnamed}{}{count}", o.kind)
        } else {
            format!("{prefix}{own}")
        };
        if names.contains(&name) {
            return Err(ShapeError {
                layer: name.clone(),
                span: o.span,
                message: format!("two layers are named `{name}`"),
                help: "give one of them another `name = \"...\"` (parameters are stored by layer name)".into(),
            });
        }
        names.push(name.clone());
        let init = own_init(o.obj("init")).unwrap_or(inherited.0);
        let bias_init = own_init(o.obj("bias_init")).unwrap_or(inherited.1);
        let no_vocab = |name: &str| ShapeError {
            layer: name.to_string(),
            span: o.span,
            message: format!(
                "`{name}` reads token ids, but this dataset's samples are not tokens (it has no `vocab`)"
            ),
            help: "use a token dataset (`modular`), or `linear` layers on features".into(),
        };
        let vocab_of = |name: &str| vocab.ok_or_else(|| no_vocab(name));
        let width = |f: &str| -> Result<usize, ShapeError> {
            Ok(match o.get(f) {
                Val::Name(n) if n == "vocab" => vocab.ok_or_else(|| ShapeError {
                    layer: name.clone(),
                    span: o.span,
                    message: format!(
                        "`{name}` is `vocab` wide, but this dataset has no vocabulary (its samples are not tokens)"
                    ),
                    help: "write `classes` for its class count".into(),
                })?,
                Val::Name(_) => classes,
                v => v.as_f64().unwrap_or(1.0) as usize,
            })
        };
        let kind = match o.kind {
            "linear" => LayerKind::Linear {
                out: width("out")?,
                bias: o.bool("bias"),
                tie: o.bool("tie"),
            },
            "positions" => LayerKind::Positions { dim: width("dim")? },
            "attention" => LayerKind::Attention {
                heads: width("heads")?,
                causal: o.bool("causal"),
                bias: o.bool("bias"),
            },
            "mean_over_tokens" => LayerKind::MeanOverTokens,
            "conv" => LayerKind::Conv {
                out: width("out")?,
                kernel: match o.get("kernel") {
                    Val::List(k) => [
                        k[0].as_f64().unwrap_or(1.0) as usize,
                        k[1].as_f64().unwrap_or(1.0) as usize,
                    ],
                    v => {
                        let k = v.as_f64().unwrap_or(1.0) as usize;
                        [k, k]
                    }
                },
                stride: o.usize("stride"),
                padding: o.usize("padding"),
                bias: o.bool("bias"),
            },
            "max_pool" => LayerKind::MaxPool {
                k: o.usize("k"),
                stride: o.usize("stride"),
            },
            "avg_pool" => LayerKind::AvgPool {
                k: o.usize("k"),
                stride: o.usize("stride"),
            },
            "global_avg_pool" => LayerKind::GlobalAvgPool,
            "flatten" => LayerKind::Flatten,
            "batch_norm" => LayerKind::BatchNorm {
                momentum: o.f64("momentum"),
                eps: o.f64("eps"),
            },
            "layer_norm" => LayerKind::LayerNorm { eps: o.f64("eps") },
            "embedding" => LayerKind::Embedding {
                vocab: vocab_of(&name)?,
                dim: width("dim")?,
            },
            "dropout" => LayerKind::Dropout { p: o.f64("p") },
            "leaky_relu" => LayerKind::LeakyRelu {
                slope: o.f64("slope"),
            },
            "residual" => {
                let inner = format!("{name}.");
                LayerKind::Residual {
                    body: lower_stack(
                        o.get("body"),
                        &inner,
                        "",
                        (init, bias_init),
                        (classes, vocab),
                        names,
                    )?,
                    shortcut: lower_stack(
                        o.get("shortcut"),
                        &inner,
                        "shortcut.",
                        (init, bias_init),
                        (classes, vocab),
                        names,
                    )?,
                }
            }
            other => match Activation::named(other) {
                Some(a) => LayerKind::Act(a),
                None => {
                    return Err(ShapeError {
                        layer: name,
                        span: o.span,
                        message: format!("`{other}` is not a layer kind this build lays out"),
                        help: "`ahtsgd check` lists the layer kinds".into(),
                    });
                }
            },
        };
        out.push(Layer {
            name,
            kind,
            init,
            bias_init,
            span: o.span,
        });
    }
    Ok(out)
}

/// Builds built-in stacks with explicit names.
struct Stack {
    layers: Vec<Layer>,
    span: Span,
    base: (Init, Init),
}

impl Stack {
    fn new(span: Span, base: (Init, Init)) -> Self {
        Stack {
            layers: Vec::new(),
            span,
            base,
        }
    }

    fn push(&mut self, name: impl Into<String>, kind: LayerKind) {
        self.layers.push(Layer {
            name: name.into(),
            kind,
            init: self.base.0,
            bias_init: self.base.1,
            span: self.span,
        });
    }

    fn act(&mut self, a: Activation) {
        let n = self
            .layers
            .iter()
            .filter(|l| l.kind == LayerKind::Act(a))
            .count();
        self.push(format!("{}{n}", a.name()), LayerKind::Act(a));
    }

    /// Linear layers `fc0, fc1, ...` to `hidden` then `classes`, the activation between them.
    fn head(&mut self, hidden: &[usize], act: Activation, classes: usize) {
        for (i, &out) in hidden.iter().chain([classes].iter()).enumerate() {
            if i > 0 {
                self.act(act);
            }
            self.push(
                format!("fc{i}"),
                LayerKind::Linear {
                    out,
                    bias: true,
                    tie: false,
                },
            );
        }
    }
}

/// The numbers of a built-in transformer.
struct Transformer {
    blocks: usize,
    dim: usize,
    heads: usize,
    /// The MLP's width as a multiple of `dim`.
    mlp: usize,
}

/// A pre-norm transformer: embedding and positions, `blocks` blocks of a residual attention
/// (layer norm first) and a residual MLP (layer norm, `mlp·dim`, GELU, `dim`), then a final
/// layer norm and the output layer over the vocabulary at every position.
fn transformer(t: Transformer, vocab: usize, span: Span, base: (Init, Init)) -> Vec<Layer> {
    let mut s = Stack::new(span, base);
    s.push("embed", LayerKind::Embedding { vocab, dim: t.dim });
    s.push("positions", LayerKind::Positions { dim: t.dim });
    let linear = |out| LayerKind::Linear {
        out,
        bias: true,
        tie: false,
    };
    for i in 0..t.blocks {
        let block = |part: &str| format!("block{i}.{part}");
        let mut attn = Stack::new(span, base);
        attn.push(block("attn.norm"), LayerKind::LayerNorm { eps: 1e-5 });
        attn.push(
            block("attn.attention"),
            LayerKind::Attention {
                heads: t.heads,
                causal: true,
                bias: true,
            },
        );
        s.push(
            block("attn"),
            LayerKind::Residual {
                body: attn.layers,
                shortcut: Vec::new(),
            },
        );
        let mut mlp = Stack::new(span, base);
        mlp.push(block("mlp.norm"), LayerKind::LayerNorm { eps: 1e-5 });
        mlp.push(block("mlp.fc0"), linear(t.mlp * t.dim));
        mlp.push(block("mlp.gelu"), LayerKind::Act(Activation::Gelu));
        mlp.push(block("mlp.fc1"), linear(t.dim));
        s.push(
            block("mlp"),
            LayerKind::Residual {
                body: mlp.layers,
                shortcut: Vec::new(),
            },
        );
    }
    s.push("norm", LayerKind::LayerNorm { eps: 1e-5 });
    s.push("head", linear(vocab));
    s.layers
}

fn mlp(
    hidden: &[usize],
    act: Activation,
    classes: usize,
    span: Span,
    base: (Init, Init),
) -> Vec<Layer> {
    let mut s = Stack::new(span, base);
    s.push("flatten", LayerKind::Flatten);
    s.head(hidden, act, classes);
    s.layers
}

fn cnn(
    channels: &[usize],
    hidden: &[usize],
    max_pool: bool,
    act: Activation,
    classes: usize,
    span: Span,
    base: (Init, Init),
) -> Vec<Layer> {
    let mut s = Stack::new(span, base);
    for (i, &out) in channels.iter().enumerate() {
        s.push(
            format!("conv{i}"),
            LayerKind::Conv {
                out,
                kernel: [3, 3],
                stride: 1,
                padding: 1,
                bias: true,
            },
        );
        s.act(act);
        let pool = if max_pool {
            LayerKind::MaxPool { k: 2, stride: 2 }
        } else {
            LayerKind::AvgPool { k: 2, stride: 2 }
        };
        s.push(format!("pool{i}"), pool);
    }
    s.push("flatten", LayerKind::Flatten);
    s.head(hidden, act, classes);
    s.layers
}

fn conv_bn(s: &mut Stack, name: &str, out: usize, k: usize, stride: usize) {
    s.push(
        name,
        LayerKind::Conv {
            out,
            kernel: [k, k],
            stride,
            padding: k / 2,
            bias: false,
        },
    );
    s.push(
        format!("{name}.bn"),
        LayerKind::BatchNorm {
            momentum: 0.1,
            eps: 1e-5,
        },
    );
}

fn resnet(
    width: usize,
    stages: [usize; 4],
    bottleneck: bool,
    classes: usize,
    span: Span,
    base: (Init, Init),
) -> Vec<Layer> {
    let mut s = Stack::new(span, base);
    conv_bn(&mut s, "stem", width, 3, 1);
    s.act(Activation::Relu);
    let expansion = if bottleneck { 4 } else { 1 };
    let mut c = width;
    for (stage, &n) in stages.iter().enumerate() {
        let planes = width << stage;
        for i in 0..n {
            let stride = if stage > 0 && i == 0 { 2 } else { 1 };
            let name = format!("layer{}.{i}", stage + 1);
            let out = planes * expansion;
            let mut body = Stack::new(span, base);
            let p = |n: &str| format!("{name}.{n}");
            if bottleneck {
                conv_bn(&mut body, &p("conv1"), planes, 1, 1);
                body.push(p("relu0"), LayerKind::Act(Activation::Relu));
                conv_bn(&mut body, &p("conv2"), planes, 3, stride);
                body.push(p("relu1"), LayerKind::Act(Activation::Relu));
                conv_bn(&mut body, &p("conv3"), out, 1, 1);
            } else {
                conv_bn(&mut body, &p("conv1"), planes, 3, stride);
                body.push(p("relu0"), LayerKind::Act(Activation::Relu));
                conv_bn(&mut body, &p("conv2"), planes, 3, 1);
            }
            let mut shortcut = Stack::new(span, base);
            if stride != 1 || c != out {
                conv_bn(&mut shortcut, &p("shortcut"), out, 1, stride);
            }
            s.push(
                name,
                LayerKind::Residual {
                    body: body.layers,
                    shortcut: shortcut.layers,
                },
            );
            s.act(Activation::Relu);
            c = out;
        }
    }
    s.push("pool", LayerKind::GlobalAvgPool);
    s.push(
        "fc",
        LayerKind::Linear {
            out: classes,
            bias: true,
            tie: false,
        },
    );
    s.layers
}
