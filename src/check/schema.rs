//! The kinds a recipe can declare and the fields each one takes.
//!
//! This table is the single source of truth for checking, for `resolved.aht` (every default
//! is written out) and for the language reference. Defaults are recipe text, parsed when used,
//! so `c = log(1 / lr)` is a default like any other.

use crate::syntax::ast::Unit;

/// What a field accepts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Ty {
    Int {
        min: i64,
        max: i64,
    },
    Float {
        min: f64,
        max: f64,
        min_open: bool,
    },
    Bool,
    Str,
    /// One of a set of names.
    Enum(&'static [&'static str]),
    /// A list of whole numbers, each at least `min`.
    IntList {
        min: i64,
    },
    /// A list of numbers, each above `min` (or at least `min` when `min_open` is false).
    FloatList {
        min: f64,
        min_open: bool,
    },
    /// A list of objects of a category, such as per-layer initialisation overrides.
    ObjList(Category),
    /// A number with a unit; `whole` means steps/epochs must be whole numbers here.
    Quantity {
        units: &'static [Unit],
        whole: bool,
        min: f64,
    },
    /// A kind of the category: a name (`linear`), a call (`sigmoid(8)`), an object
    /// (`power_iteration { iters = 20 }`), or, for declaration categories, a declaration name.
    Obj(Category),
    /// A convolution kernel: a whole number for a square kernel, or `[kh, kw]`.
    Kernel,
    /// A layer width: a whole number, or `classes` (the dataset's class count).
    Width,
    /// A stack of layers: `[conv(16, 3), batch_norm, relu, ...]`, block calls and `repeat`
    /// expanded in place.
    Stack,
    /// α for an optimizer: a schedule (declared or inline), or a number for a fixed α.
    Alpha,
    /// An expression over training signals, evaluated every step (custom α schedules).
    Signal,
}

/// Groups of kinds: the five declaration keywords plus the nested settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    Dataset,
    Model,
    Schedule,
    Optimizer,
    Experiment,
    Sharpness,
    AlphaMap,
    Shape,
    LrSchedule,
    Clip,
    GradClip,
    Base,
    Init,
    LayerInit,
    Layer,
}

impl Category {
    pub fn noun(self) -> &'static str {
        match self {
            Category::Dataset => "dataset",
            Category::Model => "model",
            Category::Schedule => "α schedule",
            Category::Optimizer => "optimizer",
            Category::Experiment => "experiment",
            Category::Sharpness => "sharpness estimator",
            Category::AlphaMap => "sharpness-to-α map",
            Category::Shape => "annealing shape",
            Category::LrSchedule => "learning-rate schedule",
            Category::Clip => "noise clipping",
            Category::GradClip => "gradient clipping",
            Category::Base => "base update",
            Category::Init => "initialisation",
            Category::LayerInit => "layer override",
            Category::Layer => "layer",
        }
    }
}

/// One field of a kind.
#[derive(Clone, Copy, Debug)]
pub struct FieldSpec {
    pub name: &'static str,
    pub ty: Ty,
    /// Recipe text of the default; `None` means the field is required.
    pub default: Option<&'static str>,
    pub doc: &'static str,
}

/// One kind: `mlp`, `ahtsgd`, `power_iteration`, ...
#[derive(Debug)]
pub struct KindSpec {
    pub category: Category,
    pub name: &'static str,
    pub doc: &'static str,
    pub fields: &'static [FieldSpec],
}

impl KindSpec {
    pub fn field(&self, name: &str) -> Option<&'static FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }
}

const fn f(
    name: &'static str,
    ty: Ty,
    default: Option<&'static str>,
    doc: &'static str,
) -> FieldSpec {
    FieldSpec {
        name,
        ty,
        default,
        doc,
    }
}

const POS: Ty = Ty::Float {
    min: 0.0,
    max: f64::INFINITY,
    min_open: true,
};
const NONNEG: Ty = Ty::Float {
    min: 0.0,
    max: f64::INFINITY,
    min_open: false,
};
const UNIT: Ty = Ty::Float {
    min: 0.0,
    max: 1.0,
    min_open: false,
};
const ALPHA: Ty = Ty::Float {
    min: 1.0,
    max: 2.0,
    min_open: false,
};
const ANY_FLOAT: Ty = Ty::Float {
    min: f64::NEG_INFINITY,
    max: f64::INFINITY,
    min_open: false,
};
const SEED: Ty = Ty::Int {
    min: 0,
    max: u32::MAX as i64,
};
const COUNT: Ty = Ty::Int {
    min: 1,
    max: i32::MAX as i64,
};
const STEPS: Ty = Ty::Quantity {
    units: &[Unit::Steps],
    whole: true,
    min: 1.0,
};
const STEPS_OR_EPOCHS: Ty = Ty::Quantity {
    units: &[Unit::Steps, Unit::Epochs],
    whole: true,
    min: 1.0,
};
const SPAN_OF_TRAINING: Ty = Ty::Quantity {
    units: &[Unit::Steps, Unit::Epochs],
    whole: false,
    min: 0.0,
};
// A smoothing rate in (0, 1].
const RATE: Ty = Ty::Float {
    min: 0.0,
    max: 1.0,
    min_open: true,
};
// The smoothing of log-sharpness, shared by adaptive and custom schedules: a kind takes one of
// the two (see `ONE_OF`).
const HALF_LIFE: FieldSpec = f(
    "half_life",
    SPAN_OF_TRAINING,
    Some("100 steps"),
    "half-life of the per-step smoothing of log-sharpness (steps or epochs); the default from version 2",
);
const EMA: FieldSpec = f(
    "ema",
    RATE,
    Some("0.05"),
    "deprecated: smoothing rate once per estimate; the default in version 1",
);

/// Fields of which a kind takes at most one: (category, kind, the field a version-2 recipe
/// gets by default, the field a version-1 recipe gets by default). The other is left out.
pub const ONE_OF: &[(Category, &str, &str, &str)] = &[
    (Category::Schedule, "adaptive", "half_life", "ema"),
    (Category::Schedule, "custom", "half_life", "ema"),
];

/// The fields of `adam` and `adamw`, one optimizer under two names.
const ADAM_FIELDS: &[FieldSpec] = &[
    f("lr", POS, Some("1e-3"), "learning rate"),
    f("beta1", UNIT, Some("0.9"), "first-moment decay"),
    f("beta2", UNIT, Some("0.999"), "second-moment decay"),
    f("eps", POS, Some("1e-8"), "denominator guard"),
    f(
        "weight_decay",
        NONNEG,
        Some("0"),
        "decoupled weight decay: θ ← θ·(1 − lr·weight_decay) before the Adam step",
    ),
    LR_SCHEDULE,
    WARMUP,
    DECAY,
    GRAD_CLIP,
];

/// The language versions this build reads; the last is the newest.
pub const VERSIONS: &[u64] = &[1, 2, 3];

/// Defaults that changed with a language version: (category, kind, field, the version that
/// brought the default in the field's spec, the default before it).
pub const VERSIONED_DEFAULTS: &[(Category, &str, &str, u64, &str)] =
    &[(Category::Experiment, "experiment", "tanh", 3, "system")];

// Fields shared by the optimizers, in the order they appear.
const SCALE: FieldSpec = f(
    "scale",
    Ty::Enum(&["absolute", "gradient_norm"]),
    Some("absolute"),
    "the noise scale is σ, or σ·‖g‖ with ‖g‖ the whole gradient's norm at each step",
);
const LR: FieldSpec = f("lr", POS, None, "learning rate");
const SIGMA: FieldSpec = f("sigma", NONNEG, Some("0.01"), "noise scale σ");
const NOISE: FieldSpec = f(
    "noise",
    Ty::Enum(&["gradient", "levy_step"]),
    Some("gradient"),
    "gradient: θ −= lr·(g + σξ); levy_step: θ −= lr·g − σ·lr^(1/α)·ξ",
);
const CLIP: FieldSpec = f(
    "clip",
    Ty::Obj(Category::Clip),
    Some("none"),
    "noise clipping",
);
const MOMENTUM: FieldSpec = f(
    "momentum",
    UNIT,
    Some("0"),
    "heavy-ball momentum (noise enters before it)",
);
const NESTEROV: FieldSpec = f("nesterov", Ty::Bool, Some("false"), "Nesterov momentum");
const WEIGHT_DECAY: FieldSpec = f(
    "weight_decay",
    NONNEG,
    Some("0"),
    "L2 penalty added to the gradient",
);
const DECAY: FieldSpec = f(
    "decay",
    Ty::Enum(&["all", "weights_only"]),
    Some("all"),
    "what weight decay applies to: every parameter, or weights_only (tensors of rank 2 and up: \
     dense and convolution weights, embeddings; not biases or normalisation scales and shifts)",
);
const GRAD_CLIP: FieldSpec = f(
    "grad_clip",
    Ty::Obj(Category::GradClip),
    Some("none"),
    "gradient clipping, applied to the whole gradient before the update and any noise",
);
const LR_SCHEDULE: FieldSpec = f(
    "lr_schedule",
    Ty::Obj(Category::LrSchedule),
    Some("constant"),
    "learning-rate schedule",
);
const WARMUP: FieldSpec = f(
    "warmup",
    SPAN_OF_TRAINING,
    Some("0 steps"),
    "linear warm-up",
);

// Fields every layer takes, after its own.
const LAYER_COMMON: [FieldSpec; 3] = [
    f(
        "name",
        Ty::Str,
        Some("\"\""),
        "the layer's name (unnamed layers are `KIND` and their count: `conv0`)",
    ),
    f(
        "init",
        Ty::Obj(Category::Init),
        Some("inherit"),
        "weight initialisation (`inherit`: the enclosing block's or the model's)",
    ),
    f(
        "bias_init",
        Ty::Obj(Category::Init),
        Some("inherit"),
        "bias initialisation (`inherit`: the enclosing block's or the model's)",
    ),
];

const ACTIVATIONS: &[&str] = &["relu", "tanh", "sigmoid", "silu", "gelu"];
const VERIFY: &[&str] = &["warn", "strict", "off"];

/// The fields every image and feature dataset kind takes (token kinds take none of them).
pub const COMMON_DATA: [FieldSpec; 7] = [
    f(
        "normalize",
        Ty::Bool,
        Some("true"),
        "standardise each channel: (x − mean) / std",
    ),
    f(
        "mean",
        Ty::FloatList {
            min: f64::NEG_INFINITY,
            min_open: false,
        },
        Some("[]"),
        "per-channel means for `normalize`, in loaded pixel units (0..1); `[]`: the training set's",
    ),
    f(
        "std",
        Ty::FloatList {
            min: 0.0,
            min_open: true,
        },
        Some("[]"),
        "per-channel standard deviations for `normalize`; `[]`: the training set's",
    ),
    f(
        "validation",
        Ty::Float {
            min: 0.0,
            max: 0.9,
            min_open: false,
        },
        Some("0"),
        "fraction of the training set held out (seeded); evaluation then uses it instead of the test set",
    ),
    f(
        "label_noise",
        UNIT,
        Some("0"),
        "fraction of training labels replaced by random labels (seeded)",
    ),
    f(
        "train_limit",
        Ty::Int {
            min: 0,
            max: i64::MAX,
        },
        Some("0"),
        "use at most this many training samples (0: all)",
    ),
    f(
        "test_limit",
        Ty::Int {
            min: 0,
            max: i64::MAX,
        },
        Some("0"),
        "use at most this many test samples (0: all)",
    ),
];

macro_rules! fields {
    (common: $common:expr; $($field:expr),* $(,)?) => {{
        const C: [FieldSpec; COMMON_DATA.len()] = $common;
        const REST: &[FieldSpec] = &[$($field),*];
        const N: usize = C.len() + REST.len();
        const ALL: [FieldSpec; N] = {
            let mut out = [C[0]; N];
            let mut i = 0;
            while i < C.len() { out[i] = C[i]; i += 1; }
            let mut j = 0;
            while j < REST.len() { out[C.len() + j] = REST[j]; j += 1; }
            out
        };
        &ALL
    }};
}

/// A layer's own fields (positional arguments in this order), then [`LAYER_COMMON`].
macro_rules! layer_fields {
    ($($field:expr),* $(,)?) => {{
        const REST: &[FieldSpec] = &[$($field),*];
        const N: usize = LAYER_COMMON.len() + REST.len();
        const ALL: [FieldSpec; N] = {
            let mut out = [LAYER_COMMON[0]; N];
            let mut j = 0;
            while j < REST.len() { out[j] = REST[j]; j += 1; }
            let mut i = 0;
            while i < LAYER_COMMON.len() { out[REST.len() + i] = LAYER_COMMON[i]; i += 1; }
            out
        };
        &ALL
    }};
}

/// The fields of `max_pool` and `avg_pool`.
const POOL_FIELDS: &[FieldSpec] = layer_fields!(
    f("k", COUNT, None, "window size"),
    f(
        "stride",
        COUNT,
        Some("k"),
        "stride (the window size unless given)"
    ),
);

/// Every kind the language knows.
pub static KINDS: &[KindSpec] = &[
    // ---------------------------------------------------------------- datasets
    KindSpec {
        category: Category::Dataset,
        name: "mnist_mini",
        doc: "the bundled MNIST subset (5,000 train / 1,000 test), no files needed",
        fields: fields!(common: COMMON_DATA;),
    },
    KindSpec {
        category: Category::Dataset,
        name: "mnist",
        doc: "MNIST IDX files (raw or .gz) in `path`",
        fields: fields!(common: COMMON_DATA;
        f("download", Ty::Bool, Some("false"), "fetch the official files into `path` (or the cache folder when no `path` is given) on the first run that needs them; `check` never fetches (see `ahtsgd data fetch`)"),
        f("path", Ty::Str, None, "folder holding the IDX files (may be left out with `download = true`)"),
        f("verify", Ty::Enum(VERIFY), Some("warn"), "check published SHA-256 sums: warn on mismatch, fail (strict), or skip")),
    },
    KindSpec {
        category: Category::Dataset,
        name: "fashion_mnist",
        doc: "Fashion-MNIST IDX files in `path`",
        fields: fields!(common: COMMON_DATA;
        f("download", Ty::Bool, Some("false"), "fetch the official files into `path` (or the cache folder when no `path` is given) on the first run that needs them; `check` never fetches (see `ahtsgd data fetch`)"),
        f("path", Ty::Str, None, "folder holding the IDX files (may be left out with `download = true`)"),
        f("verify", Ty::Enum(VERIFY), Some("warn"), "check published SHA-256 sums")),
    },
    KindSpec {
        category: Category::Dataset,
        name: "cifar10",
        doc: "CIFAR-10 binary batches (folder or .tar.gz) in `path`",
        fields: fields!(common: COMMON_DATA;
        f("download", Ty::Bool, Some("false"), "fetch the official files into `path` (or the cache folder when no `path` is given) on the first run that needs them; `check` never fetches (see `ahtsgd data fetch`)"),
        f("path", Ty::Str, None, "folder or cifar-10-binary.tar.gz (may be left out with `download = true`)"),
        f("verify", Ty::Enum(VERIFY), Some("warn"), "check published SHA-256 sums"),
        f("augment", Ty::Bool, Some("false"), "random crop (padding 4) and horizontal flip")),
    },
    KindSpec {
        category: Category::Dataset,
        name: "svhn",
        doc: "SVHN cropped digits (train_32x32.mat, test_32x32.mat) in `path`",
        fields: fields!(common: COMMON_DATA;
        f("download", Ty::Bool, Some("false"), "fetch the official files into `path` (or the cache folder when no `path` is given) on the first run that needs them; `check` never fetches (see `ahtsgd data fetch`)"),
        f("path", Ty::Str, None, "folder holding the .mat files (may be left out with `download = true`)"),
        f("verify", Ty::Enum(VERIFY), Some("warn"), "check published SHA-256 sums"),
        f("augment", Ty::Bool, Some("false"), "random crop (padding 4); no flips for digits")),
    },
    KindSpec {
        category: Category::Dataset,
        name: "modular",
        doc: "an algorithmic task of the grokking literature: every `a op b` modulo the prime `p`, as the tokens `a op b =` with the answer as label; vocabulary `p + 2` (`vocab`); generated, nothing to download",
        fields: &[
            f(
                "p",
                Ty::Int { min: 2, max: 4093 },
                Some("97"),
                "the prime modulus",
            ),
            f(
                "op",
                Ty::Enum(&["add", "sub", "mul", "div"]),
                Some("add"),
                "the operation (div: a·b⁻¹, pairs with b = 0 left out)",
            ),
            f(
                "train_fraction",
                UNIT,
                Some("0.4"),
                "the fraction of the pairs in the training set, the rest being the test set",
            ),
            f("seed", SEED, Some("0"), "seed of the split"),
        ],
    },
    KindSpec {
        category: Category::Dataset,
        name: "text",
        doc: "byte-level language modelling on a file: windows of `context` bytes every `stride` bytes, the next byte the label at every position; vocabulary 256 (`vocab`); the last `validation` fraction of the file is the test split; the bundled sonnets when no `path` is given",
        fields: &[
            f(
                "path",
                Ty::Str,
                Some("\"\""),
                "the text file (`\"\"`: the bundled Shakespeare sonnets, 100 kB)",
            ),
            f("context", COUNT, Some("128"), "bytes per window"),
            f(
                "stride",
                COUNT,
                Some("context"),
                "bytes between the starts of windows (the context unless given)",
            ),
            f(
                "validation",
                Ty::Float {
                    min: 0.0,
                    max: 0.9,
                    min_open: false,
                },
                Some("0.1"),
                "the fraction of the file, from its end, held out as the test split",
            ),
        ],
    },
    KindSpec {
        category: Category::Dataset,
        name: "blobs",
        doc: "Gaussian blobs: a synthetic classification task",
        fields: fields!(common: COMMON_DATA;
        f("classes", Ty::Int { min: 2, max: 1000 }, Some("3"), "number of blobs"),
        f("features", COUNT, Some("2"), "input dimension"),
        f("samples", COUNT, Some("1000"), "training samples"),
        f("test_samples", COUNT, Some("200"), "test samples"),
        f("spread", POS, Some("1.0"), "standard deviation of each blob"),
        f("seed", SEED, Some("0"), "seed of the generator")),
    },
    KindSpec {
        category: Category::Dataset,
        name: "spirals",
        doc: "interleaved spirals in 2-D",
        fields: fields!(common: COMMON_DATA;
        f("classes", Ty::Int { min: 2, max: 100 }, Some("2"), "number of arms"),
        f("samples", COUNT, Some("1000"), "training samples"),
        f("test_samples", COUNT, Some("200"), "test samples"),
        f("noise", NONNEG, Some("0.1"), "noise added to each point"),
        f("seed", SEED, Some("0"), "seed of the generator")),
    },
    KindSpec {
        category: Category::Dataset,
        name: "arrays",
        doc: "your own arrays x_train, y_train, x_test, y_test: a .npz or .safetensors file, or a folder of .npy files",
        fields: fields!(common: COMMON_DATA;
        f("path", Ty::Str, None, "the .npz or .safetensors file, or the folder of x_train.npy, y_train.npy, x_test.npy, y_test.npy"),
        f("shape", Ty::IntList { min: 1 }, Some("[]"), "one sample's shape, [features] or [channels, height, width], checked against the files; with `classes`, lets `check` infer the model's shapes ([]: read from the files)"),
        f("classes", Ty::Int { min: 0, max: 1_000_000 }, Some("0"), "the number of classes, checked against the labels (0: one more than the largest label)")),
    },
    // ---------------------------------------------------------------- models
    KindSpec {
        category: Category::Model,
        name: "mlp",
        doc: "fully connected network",
        fields: &[
            f(
                "hidden",
                Ty::IntList { min: 1 },
                Some("[256]"),
                "hidden layer widths",
            ),
            f(
                "activation",
                Ty::Enum(ACTIVATIONS),
                Some("relu"),
                "activation after each hidden layer",
            ),
            f(
                "init",
                Ty::Obj(Category::Init),
                Some("default"),
                "weight initialisation",
            ),
            f(
                "bias_init",
                Ty::Obj(Category::Init),
                Some("zeros"),
                "bias initialisation",
            ),
            f(
                "layers",
                Ty::ObjList(Category::LayerInit),
                Some("[]"),
                "per-layer initialisation overrides: `[layer(\"fc2\", normal(0.01))]`",
            ),
        ],
    },
    KindSpec {
        category: Category::Model,
        name: "cnn",
        doc: "conv3x3-ReLU-pool stacks then a linear head",
        fields: &[
            f(
                "channels",
                Ty::IntList { min: 1 },
                Some("[32, 64]"),
                "channels of each conv stage",
            ),
            f(
                "hidden",
                Ty::IntList { min: 1 },
                Some("[]"),
                "hidden widths of the head",
            ),
            f(
                "pool",
                Ty::Enum(&["max", "avg"]),
                Some("max"),
                "2x2 pooling after each stage",
            ),
            f(
                "activation",
                Ty::Enum(ACTIVATIONS),
                Some("relu"),
                "activation",
            ),
            f(
                "init",
                Ty::Obj(Category::Init),
                Some("default"),
                "weight initialisation",
            ),
            f(
                "bias_init",
                Ty::Obj(Category::Init),
                Some("zeros"),
                "bias initialisation",
            ),
            f(
                "layers",
                Ty::ObjList(Category::LayerInit),
                Some("[]"),
                "per-layer initialisation overrides: `[layer(\"fc2\", normal(0.01))]`",
            ),
        ],
    },
    KindSpec {
        category: Category::Model,
        name: "resnet18",
        doc: "CIFAR ResNet-18 (3x3 stem, no max-pool, batch norm)",
        fields: &[
            f("width", COUNT, Some("64"), "channels of the first stage"),
            f(
                "init",
                Ty::Obj(Category::Init),
                Some("kaiming"),
                "conv and linear weight initialisation",
            ),
            f(
                "layers",
                Ty::ObjList(Category::LayerInit),
                Some("[]"),
                "per-layer initialisation overrides: `[layer(\"fc2\", normal(0.01))]`",
            ),
        ],
    },
    KindSpec {
        category: Category::Model,
        name: "resnet50",
        doc: "CIFAR ResNet-50 (bottleneck blocks)",
        fields: &[
            f("width", COUNT, Some("64"), "channels of the first stage"),
            f(
                "init",
                Ty::Obj(Category::Init),
                Some("kaiming"),
                "conv and linear weight initialisation",
            ),
            f(
                "layers",
                Ty::ObjList(Category::LayerInit),
                Some("[]"),
                "per-layer initialisation overrides: `[layer(\"fc2\", normal(0.01))]`",
            ),
        ],
    },
    KindSpec {
        category: Category::Model,
        name: "transformer",
        doc: "a pre-norm causal transformer on token data: embedding and learned positions, `blocks` blocks of attention and MLP (each a residual with layer norm first), a final layer norm and `linear(vocab)` at every position",
        fields: &[
            f("blocks", COUNT, Some("2"), "transformer blocks"),
            f("dim", COUNT, Some("128"), "features per token"),
            f(
                "heads",
                COUNT,
                Some("4"),
                "attention heads (they must divide `dim`)",
            ),
            f(
                "mlp",
                COUNT,
                Some("4"),
                "the MLP's width as a multiple of `dim`",
            ),
            f(
                "init",
                Ty::Obj(Category::Init),
                Some("default"),
                "weight initialisation (`default`: N(0, 1) embeddings, N(0, 0.02) positions, Xavier attention projections, the usual elsewhere)",
            ),
            f(
                "layers",
                Ty::ObjList(Category::LayerInit),
                Some("[]"),
                "per-layer initialisation overrides: `[layer(\"head\", zeros)]`",
            ),
        ],
    },
    KindSpec {
        category: Category::Model,
        name: "layers",
        doc: "a stack of layers written in the recipe; its other numeric fields are parameters the stack can name",
        fields: &[
            f(
                "stack",
                Ty::Stack,
                None,
                "the layers, in order: `[conv(16, 3, padding = 1), batch_norm, relu, ...]`",
            ),
            f(
                "init",
                Ty::Obj(Category::Init),
                Some("default"),
                "weight initialisation of every layer that sets none",
            ),
            f(
                "bias_init",
                Ty::Obj(Category::Init),
                Some("default"),
                "bias initialisation of every layer that sets none",
            ),
            f(
                "layers",
                Ty::ObjList(Category::LayerInit),
                Some("[]"),
                "per-layer initialisation overrides by name pattern: `[layer(\"fc\", zeros)]`",
            ),
        ],
    },
    // ---------------------------------------------------------------- layers
    KindSpec {
        category: Category::Layer,
        name: "linear",
        doc: "`x·wᵀ + b` over the last axis (flat features, or each token's; `flatten` an image first)",
        fields: layer_fields!(
            f(
                "out",
                Ty::Width,
                None,
                "output features (`classes` for the dataset's class count, `vocab` for its vocabulary)"
            ),
            f("bias", Ty::Bool, Some("true"), "whether it adds a bias"),
            f(
                "tie",
                Ty::Bool,
                Some("false"),
                "whether its weight is the model's embedding table (`linear(vocab, tie = true)`: tied input and output embeddings)"
            )
        ),
    },
    KindSpec {
        category: Category::Layer,
        name: "conv",
        doc: "2-D convolution of [channels, height, width] samples",
        fields: layer_fields!(
            f("out", Ty::Width, None, "output channels"),
            f("kernel", Ty::Kernel, None, "kernel size: `3` or `[kh, kw]`"),
            f("stride", COUNT, Some("1"), "stride"),
            f(
                "padding",
                Ty::Int {
                    min: 0,
                    max: 1 << 16
                },
                Some("0"),
                "zero padding on each side"
            ),
            f(
                "bias",
                Ty::Bool,
                Some("true"),
                "whether it adds a bias per channel"
            )
        ),
    },
    KindSpec {
        category: Category::Layer,
        name: "max_pool",
        doc: "maximum over k x k windows",
        fields: POOL_FIELDS,
    },
    KindSpec {
        category: Category::Layer,
        name: "avg_pool",
        doc: "mean over k x k windows",
        fields: POOL_FIELDS,
    },
    KindSpec {
        category: Category::Layer,
        name: "global_avg_pool",
        doc: "mean over each channel's pixels: [C, H, W] -> [C]",
        fields: &LAYER_COMMON,
    },
    KindSpec {
        category: Category::Layer,
        name: "flatten",
        doc: "every axis of a sample into one: [C, H, W] -> [C·H·W]",
        fields: &LAYER_COMMON,
    },
    KindSpec {
        category: Category::Layer,
        name: "batch_norm",
        doc: "batch normalisation over channels (or features), with a learned scale and shift",
        fields: layer_fields!(
            f(
                "momentum",
                UNIT,
                Some("0.1"),
                "weight of each batch in the running statistics"
            ),
            f("eps", POS, Some("1e-5"), "added to the variance")
        ),
    },
    KindSpec {
        category: Category::Layer,
        name: "embedding",
        doc: "a learned vector of `dim` features for each token: [tokens] of ids -> [tokens, dim]; the first layer of a stack on token data",
        fields: layer_fields!(f("dim", Ty::Width, None, "features per token")),
    },
    KindSpec {
        category: Category::Layer,
        name: "positions",
        doc: "a learned vector for each position added to its token's: [tokens, dim] -> [tokens, dim]",
        fields: layer_fields!(f(
            "dim",
            Ty::Width,
            None,
            "features per token (the embedding's)"
        )),
    },
    KindSpec {
        category: Category::Layer,
        name: "attention",
        doc: "multi-head self-attention over [tokens, dim] with its query, key, value and output projections",
        fields: layer_fields!(
            f(
                "heads",
                Ty::Width,
                None,
                "attention heads (each dim / heads features)"
            ),
            f(
                "causal",
                Ty::Bool,
                Some("true"),
                "whether each position attends to itself and earlier ones alone"
            ),
            f(
                "bias",
                Ty::Bool,
                Some("true"),
                "whether the projections add biases"
            )
        ),
    },
    KindSpec {
        category: Category::Layer,
        name: "mean_over_tokens",
        doc: "the mean over positions: [tokens, features] -> [features]",
        fields: &LAYER_COMMON,
    },
    KindSpec {
        category: Category::Layer,
        name: "layer_norm",
        doc: "normalisation over the last axis (a sample's features, or each token's), with a learned scale and shift",
        fields: layer_fields!(f("eps", POS, Some("1e-5"), "added to the variance")),
    },
    KindSpec {
        category: Category::Layer,
        name: "dropout",
        doc: "zeroes each value with probability p in training steps (the rest scaled by 1/(1 − p)); off in evaluation and sharpness estimation",
        fields: layer_fields!(f(
            "p",
            Ty::Float {
                min: 0.0,
                max: 0.99,
                min_open: false,
            },
            None,
            "the probability of zeroing a value"
        )),
    },
    KindSpec {
        category: Category::Layer,
        name: "relu",
        doc: "max(x, 0)",
        fields: &LAYER_COMMON,
    },
    KindSpec {
        category: Category::Layer,
        name: "leaky_relu",
        doc: "x for x > 0, slope·x otherwise",
        fields: layer_fields!(f("slope", UNIT, Some("0.01"), "the slope for x ≤ 0")),
    },
    KindSpec {
        category: Category::Layer,
        name: "tanh",
        doc: "tanh(x)",
        fields: &LAYER_COMMON,
    },
    KindSpec {
        category: Category::Layer,
        name: "sigmoid",
        doc: "1 / (1 + e^−x)",
        fields: &LAYER_COMMON,
    },
    KindSpec {
        category: Category::Layer,
        name: "silu",
        doc: "x·sigmoid(x)",
        fields: &LAYER_COMMON,
    },
    KindSpec {
        category: Category::Layer,
        name: "gelu",
        doc: "GELU, tanh approximation",
        fields: &LAYER_COMMON,
    },
    KindSpec {
        category: Category::Layer,
        name: "residual",
        doc: "`body(x) + shortcut(x)`; the shortcut is the identity unless given",
        fields: layer_fields!(
            f(
                "body",
                Ty::Stack,
                None,
                "the layers of the residual branch (a list or a `layers` model)"
            ),
            f(
                "shortcut",
                Ty::Stack,
                Some("[]"),
                "the layers of the shortcut (`identity` or `[]`: none)"
            )
        ),
    },
    // ---------------------------------------------------------------- α schedules
    KindSpec {
        category: Category::Schedule,
        name: "fixed",
        doc: "constant α",
        fields: &[f("alpha", ALPHA, None, "the tail index")],
    },
    KindSpec {
        category: Category::Schedule,
        name: "annealed",
        doc: "α moves from `from` to `to` over a fixed span",
        fields: &[
            f("from", ALPHA, Some("1.2"), "α at the start"),
            f("to", ALPHA, Some("2.0"), "α at the end of `over` and after"),
            f(
                "over",
                SPAN_OF_TRAINING,
                None,
                "how long the move takes (steps or epochs)",
            ),
            f(
                "shape",
                Ty::Obj(Category::Shape),
                Some("linear"),
                "linear, cosine or sigmoid(k)",
            ),
        ],
    },
    KindSpec {
        category: Category::Schedule,
        name: "adaptive",
        doc: "α follows the smoothed log-sharpness of the loss",
        fields: &[
            f(
                "sharpness",
                Ty::Obj(Category::Sharpness),
                Some("power_iteration"),
                "how sharpness is estimated",
            ),
            HALF_LIFE,
            EMA,
            f(
                "map",
                Ty::Obj(Category::AlphaMap),
                Some("sigmoid"),
                "how the smoothed sharpness becomes α",
            ),
            f(
                "initial",
                ALPHA,
                Some("1.0"),
                "α before the first sharpness estimate",
            ),
        ],
    },
    KindSpec {
        category: Category::Schedule,
        name: "custom",
        doc: "α as an expression over step, epoch, progress, lambda_max, sharpness_ema, lr",
        fields: &[
            f(
                "alpha",
                Ty::Signal,
                None,
                "the expression; clamped to [1, 2]",
            ),
            f(
                "sharpness",
                Ty::Obj(Category::Sharpness),
                Some("none"),
                "estimator feeding lambda_max and sharpness_ema",
            ),
            HALF_LIFE,
            EMA,
        ],
    },
    // ---------------------------------------------------------------- sharpness estimators
    KindSpec {
        category: Category::Sharpness,
        name: "power_iteration",
        doc: "top Hessian eigenvalue λ_max by power iteration on Hessian-vector products",
        fields: &[
            f(
                "iters",
                Ty::Int {
                    min: 1,
                    max: 10_000,
                },
                Some("20"),
                "maximum iterations",
            ),
            f(
                "tol",
                NONNEG,
                Some("1e-3"),
                "stop when the relative change is below this",
            ),
            f("every", STEPS, Some("50 steps"), "estimate every K steps"),
            f(
                "batch",
                Ty::Enum(&["current", "probe"]),
                Some("current"),
                "the current minibatch or a fixed probe batch",
            ),
        ],
    },
    KindSpec {
        category: Category::Sharpness,
        name: "hutchinson",
        doc: "Hutchinson trace estimate divided by the parameter count (a mean eigenvalue)",
        fields: &[
            f(
                "samples",
                Ty::Int {
                    min: 1,
                    max: 10_000,
                },
                Some("1"),
                "Rademacher probes per estimate",
            ),
            f("every", STEPS, Some("50 steps"), "estimate every K steps"),
            f(
                "batch",
                Ty::Enum(&["current", "probe"]),
                Some("current"),
                "the current minibatch or a fixed probe batch",
            ),
        ],
    },
    KindSpec {
        category: Category::Sharpness,
        name: "none",
        doc: "no sharpness estimate (signals stay at 0)",
        fields: &[],
    },
    // ---------------------------------------------------------------- maps
    KindSpec {
        category: Category::AlphaMap,
        name: "sigmoid",
        doc: "α = 1 + sigmoid(v · (s̄ − c)); v < 0 reverses the direction",
        fields: &[
            f(
                "v",
                ANY_FLOAT,
                Some("4.0"),
                "steepness (sign sets the direction)",
            ),
            f(
                "c",
                ANY_FLOAT,
                Some("log(1 / lr)"),
                "centre on the log-sharpness scale",
            ),
        ],
    },
    KindSpec {
        category: Category::AlphaMap,
        name: "trend",
        doc: "deprecated (use `settling`): α = 2 − sigmoid(v · (r̄ − c)), r̄ the smoothed relative change of sharpness between estimates; flat sharpness gives α = 2 − sigmoid(−v·c), 1.5 at c = 0",
        fields: &[
            f("v", ANY_FLOAT, Some("50.0"), "steepness"),
            f(
                "c",
                ANY_FLOAT,
                Some("0.0"),
                "centre on the relative-change scale",
            ),
            f(
                "ema",
                RATE,
                Some("0.1"),
                "EMA rate of the relative change, once per estimate",
            ),
        ],
    },
    KindSpec {
        category: Category::AlphaMap,
        name: "settling",
        doc: "α = 1 + S, S in [0, 1] how long the smoothed log-sharpness has stayed within `tolerance` of its slow average: heavy tails while sharpness moves (up or down), α → 2 once it is flat; needs `half_life`",
        fields: &[
            f(
                "window",
                SPAN_OF_TRAINING,
                Some("500 steps"),
                "half-life of the slow average and of S (steps or epochs)",
            ),
            f(
                "tolerance",
                POS,
                Some("0.2"),
                "movement of log-sharpness that still counts as flat",
            ),
        ],
    },
    // ---------------------------------------------------------------- annealing shapes
    KindSpec {
        category: Category::Shape,
        name: "linear",
        doc: "straight line",
        fields: &[],
    },
    KindSpec {
        category: Category::Shape,
        name: "cosine",
        doc: "half cosine",
        fields: &[],
    },
    KindSpec {
        category: Category::Shape,
        name: "sigmoid",
        doc: "logistic curve of steepness k centred mid-way",
        fields: &[f("k", POS, Some("10.0"), "steepness")],
    },
    // ---------------------------------------------------------------- learning-rate schedules
    KindSpec {
        category: Category::LrSchedule,
        name: "constant",
        doc: "constant learning rate",
        fields: &[],
    },
    KindSpec {
        category: Category::LrSchedule,
        name: "step",
        doc: "multiply by `factor` every `every`",
        fields: &[
            f("every", STEPS_OR_EPOCHS, None, "period"),
            f(
                "factor",
                Ty::Float {
                    min: 0.0,
                    max: 1.0,
                    min_open: true,
                },
                Some("0.1"),
                "multiplier",
            ),
        ],
    },
    KindSpec {
        category: Category::LrSchedule,
        name: "cosine",
        doc: "cosine decay to `min` over the run",
        fields: &[f("min", NONNEG, Some("0.0"), "final learning rate")],
    },
    // ---------------------------------------------------------------- base updates
    KindSpec {
        category: Category::Base,
        name: "sgd",
        doc: "SGD with heavy-ball momentum: the noise enters the gradient (noise = gradient) or \
              is added to the step (noise = levy_step)",
        fields: &[],
    },
    KindSpec {
        category: Category::Base,
        name: "adam",
        doc: "Adam with decoupled weight decay: with noise = gradient the noise enters the \
              gradient before the moments (so Adam's normalisation scales it too); with \
              noise = levy_step it is added to Adam's step, unnormalised",
        fields: &[
            f("beta1", UNIT, Some("0.9"), "first-moment decay"),
            f("beta2", UNIT, Some("0.999"), "second-moment decay"),
            f("eps", POS, Some("1e-8"), "denominator guard"),
        ],
    },
    // ---------------------------------------------------------------- gradient clipping
    KindSpec {
        category: Category::GradClip,
        name: "none",
        doc: "no gradient clipping",
        fields: &[],
    },
    KindSpec {
        category: Category::GradClip,
        name: "norm",
        doc: "rescale the whole gradient (every parameter's together) to norm at most `max`, \
              as PyTorch's clip_grad_norm_: g · min(1, max / (‖g‖ + 1e-6))",
        fields: &[f("max", POS, None, "bound on the gradient's norm")],
    },
    // ---------------------------------------------------------------- noise clipping
    KindSpec {
        category: Category::Clip,
        name: "none",
        doc: "no clipping",
        fields: &[],
    },
    KindSpec {
        category: Category::Clip,
        name: "coordinate",
        doc: "clamp each noise coordinate to [−max, max]",
        fields: &[f("max", POS, None, "bound")],
    },
    KindSpec {
        category: Category::Clip,
        name: "norm",
        doc: "rescale each parameter's noise to norm at most `max`",
        fields: &[f("max", POS, None, "bound")],
    },
    // ---------------------------------------------------------------- initialisations
    KindSpec {
        category: Category::Init,
        name: "default",
        doc: "candle-nn's defaults (Kaiming-normal weights, biases uniform in ±1/√fan_in)",
        fields: &[],
    },
    KindSpec {
        category: Category::Init,
        name: "inherit",
        doc: "the model-wide setting (for `layer` overrides; at model level it means `default`)",
        fields: &[],
    },
    KindSpec {
        category: Category::Init,
        name: "zeros",
        doc: "all zeros (the paper's poor initialisation)",
        fields: &[],
    },
    KindSpec {
        category: Category::Init,
        name: "constant",
        doc: "a constant",
        fields: &[f("value", ANY_FLOAT, None, "the constant")],
    },
    KindSpec {
        category: Category::Init,
        name: "normal",
        doc: "N(0, std²)",
        fields: &[f("std", NONNEG, None, "standard deviation")],
    },
    KindSpec {
        category: Category::Init,
        name: "uniform",
        doc: "U(−bound, bound)",
        fields: &[f("bound", NONNEG, None, "half-width")],
    },
    KindSpec {
        category: Category::Init,
        name: "xavier",
        doc: "Glorot-uniform",
        fields: &[],
    },
    KindSpec {
        category: Category::Init,
        name: "kaiming",
        doc: "He-normal for ReLU",
        fields: &[],
    },
    KindSpec {
        category: Category::LayerInit,
        name: "layer",
        doc: "initialisation of the layers whose name matches a pattern (`*` matches any text); later entries win",
        fields: &[
            f(
                "name",
                Ty::Str,
                None,
                "layer name or pattern: `fc2`, `layer3.*`, `*.shortcut`",
            ),
            f(
                "init",
                Ty::Obj(Category::Init),
                Some("inherit"),
                "weight initialisation",
            ),
            f(
                "bias_init",
                Ty::Obj(Category::Init),
                Some("inherit"),
                "bias initialisation",
            ),
        ],
    },
    // ---------------------------------------------------------------- optimizers
    KindSpec {
        category: Category::Optimizer,
        name: "sgd",
        doc: "SGD with optional momentum, Nesterov and weight decay",
        fields: &[
            LR,
            MOMENTUM,
            NESTEROV,
            WEIGHT_DECAY,
            LR_SCHEDULE,
            WARMUP,
            DECAY,
            GRAD_CLIP,
        ],
    },
    KindSpec {
        category: Category::Optimizer,
        name: "ahtsgd",
        doc: "SGD with α-stable noise whose α follows a schedule",
        fields: &[
            LR,
            SIGMA,
            f(
                "alpha",
                Ty::Alpha,
                Some("adaptive"),
                "α schedule (a declared schedule, an inline one, or a number)",
            ),
            NOISE,
            f(
                "scale_by_dim",
                Ty::Bool,
                Some("false"),
                "divide σ by √d, d the parameter count",
            ),
            SCALE,
            CLIP,
            MOMENTUM,
            WEIGHT_DECAY,
            LR_SCHEDULE,
            WARMUP,
            DECAY,
            GRAD_CLIP,
            f(
                "base",
                Ty::Obj(Category::Base),
                Some("sgd"),
                "the update the noise is added to: sgd (with `momentum`) or adam { beta1, beta2, eps } \
                 (weight decay then decoupled, as AdamW)",
            ),
        ],
    },
    KindSpec {
        category: Category::Optimizer,
        name: "levy_sgd",
        doc: "SGD with fixed-α Lévy noise (ahtsgd with a fixed schedule)",
        fields: &[
            LR,
            SIGMA,
            f("alpha", ALPHA, Some("1.5"), "the tail index"),
            NOISE,
            SCALE,
            CLIP,
            MOMENTUM,
            WEIGHT_DECAY,
            LR_SCHEDULE,
            WARMUP,
            DECAY,
            GRAD_CLIP,
        ],
    },
    KindSpec {
        category: Category::Optimizer,
        name: "gaussian_sgd",
        doc: "SGD with annealed Gaussian gradient noise, variance eta/(1+t)^gamma",
        fields: &[
            LR,
            f("eta", NONNEG, Some("0.01"), "initial noise variance"),
            f("gamma", NONNEG, Some("0.55"), "decay exponent"),
            MOMENTUM,
            WEIGHT_DECAY,
            LR_SCHEDULE,
            WARMUP,
            DECAY,
            GRAD_CLIP,
        ],
    },
    KindSpec {
        category: Category::Optimizer,
        name: "adam",
        doc: "Adam with decoupled weight decay (the same optimizer as `adamw`)",
        fields: ADAM_FIELDS,
    },
    KindSpec {
        category: Category::Optimizer,
        name: "adamw",
        doc: "AdamW: Adam with decoupled weight decay (`adam` is the same optimizer)",
        fields: ADAM_FIELDS,
    },
    // ---------------------------------------------------------------- experiments
    KindSpec {
        category: Category::Experiment,
        name: "experiment",
        doc: "a training run (or a sweep of them)",
        fields: &[
            f("data", Ty::Obj(Category::Dataset), None, "the dataset"),
            f("model", Ty::Obj(Category::Model), None, "the model"),
            f(
                "optimizer",
                Ty::Obj(Category::Optimizer),
                None,
                "the optimizer",
            ),
            f(
                "epochs",
                Ty::Int {
                    min: 1,
                    max: 1_000_000,
                },
                None,
                "training epochs",
            ),
            f(
                "batch",
                Ty::Int {
                    min: 1,
                    max: 1 << 24,
                },
                Some("128"),
                "minibatch size",
            ),
            f(
                "seed",
                SEED,
                Some("0"),
                "seed of initialisation, shuffling and noise",
            ),
            f(
                "max_steps",
                Ty::Int {
                    min: 0,
                    max: i64::MAX,
                },
                Some("0"),
                "stop after this many steps (0: no limit)",
            ),
            f(
                "device",
                Ty::Enum(&["cpu", "cuda", "auto"]),
                Some("cpu"),
                "where tensors live",
            ),
            f(
                "threads",
                Ty::Int { min: 0, max: 1024 },
                Some("0"),
                "CPU threads (0: all cores, or the share of --jobs)",
            ),
            f(
                "dtype",
                Ty::Enum(&["f32", "f64"]),
                Some("f32"),
                "floating-point type",
            ),
            f(
                "tanh",
                Ty::Enum(&["portable", "system"]),
                Some("portable"),
                "how `tanh` and `gelu` compute tanh on the CPU: `portable`, ahtsgd's own vectorised tanh (its bits the same on every CPU and C library; the default from version 3), or `system`, the C library's (the default in versions 1 and 2)",
            ),
            f(
                "eval_every",
                STEPS_OR_EPOCHS,
                Some("1 epochs"),
                "evaluation interval",
            ),
            f(
                "log_every",
                STEPS,
                Some("10 steps"),
                "training-metrics interval",
            ),
            f(
                "checkpoint_every",
                STEPS_OR_EPOCHS,
                Some("1 epochs"),
                "checkpoint interval",
            ),
            f(
                "diverge_loss",
                POS,
                Some("1e6"),
                "a training loss above this stops the trial as diverged",
            ),
            f(
                "baseline",
                Ty::Str,
                Some("\"\""),
                "declaration name of the optimizer that paired comparisons use as baseline",
            ),
            f(
                "max_trials",
                COUNT,
                Some("10000"),
                "refuse to expand to more trials than this (override with --allow-large)",
            ),
        ],
    },
];

/// The kinds of a category.
pub fn kinds(category: Category) -> impl Iterator<Item = &'static KindSpec> + Clone {
    KINDS.iter().filter(move |k| k.category == category)
}

/// A kind by category and name.
pub fn kind(category: Category, name: &str) -> Option<&'static KindSpec> {
    kinds(category).find(|k| k.name == name)
}

/// The experiment pseudo-kind.
pub fn experiment() -> &'static KindSpec {
    kind(Category::Experiment, "experiment").expect("experiment kind exists")
}

/// Sweep constructors.
pub const SWEEPS: &[&str] = &["sweep", "logspace", "linspace"];

/// Training signals visible to custom α expressions.
pub const SIGNALS: &[&str] = &[
    "step",
    "epoch",
    "progress",
    "lambda_max",
    "sharpness_ema",
    "lr",
];
