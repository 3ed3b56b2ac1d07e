//! Parameter counts and layer shapes worked out from a checked model and its data's sample
//! shape, without building anything (for `ahtsgd plan`).

use crate::plan::Obj;

/// The sample shape of a dataset kind, when it is known without reading files.
pub fn sample_shape(data: &Obj) -> Option<Vec<usize>> {
    match data.kind {
        "mnist_mini" | "mnist" | "fashion_mnist" => Some(vec![1, 28, 28]),
        "cifar10" | "svhn" => Some(vec![3, 32, 32]),
        "blobs" => Some(vec![data.usize("features")]),
        "spirals" => Some(vec![2]),
        _ => None,
    }
}

/// The number of classes of a dataset kind, when known without reading files.
pub fn classes(data: &Obj) -> Option<usize> {
    match data.kind {
        "blobs" | "spirals" => Some(data.usize("classes")),
        "arrays" => None,
        _ => Some(10),
    }
}

/// (layer, weight shape) of every parameterised layer, in order; `None` when the model does not
/// fit the sample shape.
pub fn layers(model: &Obj, shape: &[usize], classes: usize) -> Option<Vec<(String, Vec<usize>)>> {
    let mut out = Vec::new();
    let dense = |out: &mut Vec<(String, Vec<usize>)>, sizes: &[usize]| {
        for (i, w) in sizes.windows(2).enumerate() {
            out.push((format!("fc{i}"), vec![w[1], w[0]]));
        }
    };
    match model.kind {
        "mlp" => {
            let mut sizes = vec![shape.iter().product()];
            sizes.extend(model.usize_list("hidden"));
            sizes.push(classes);
            dense(&mut out, &sizes);
        }
        "cnn" => {
            let [mut c, mut h, mut w] = shape[..] else {
                return None;
            };
            for (i, &o) in model.usize_list("channels").iter().enumerate() {
                out.push((format!("conv{i}"), vec![o, c, 3, 3]));
                (c, h, w) = (o, h / 2, w / 2);
            }
            if h == 0 || w == 0 {
                return None;
            }
            let mut sizes = vec![c * h * w];
            sizes.extend(model.usize_list("hidden"));
            sizes.push(classes);
            dense(&mut out, &sizes);
        }
        kind => {
            let (stages, bottleneck) = super::resnet::layout(kind)?;
            let [c0, h, w] = shape[..] else { return None };
            if h < 8 || w < 8 {
                return None;
            }
            let width = model.usize("width");
            out.push(("stem".into(), vec![width, c0, 3, 3]));
            let (mut c, e) = (width, if bottleneck { 4 } else { 1 });
            for (s, &n) in stages.iter().enumerate() {
                let p = width << s;
                for i in 0..n {
                    let name = format!("layer{}.{i}", s + 1);
                    if bottleneck {
                        out.push((format!("{name}.conv1"), vec![p, c, 1, 1]));
                        out.push((format!("{name}.conv2"), vec![p, p, 3, 3]));
                        out.push((format!("{name}.conv3"), vec![p * e, p, 1, 1]));
                    } else {
                        out.push((format!("{name}.conv1"), vec![p, c, 3, 3]));
                        out.push((format!("{name}.conv2"), vec![p, p, 3, 3]));
                    }
                    let stride = if s > 0 && i == 0 { 2 } else { 1 };
                    if stride != 1 || c != p * e {
                        out.push((format!("{name}.shortcut"), vec![p * e, c, 1, 1]));
                    }
                    c = p * e;
                }
            }
            out.push(("fc".into(), vec![classes, c]));
        }
    }
    Some(out)
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

/// One row of a model's layer table (`ahtsgd plan --layers`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LayerRow {
    pub name: String,
    /// Weight shape: `[out, in]` or `[out, in, kh, kw]`.
    pub shape: Vec<usize>,
    /// Trained parameters of the layer, its bias or batch-norm scale and shift included.
    pub parameters: usize,
    /// The weight initialisation, as recipe text.
    pub init: String,
    /// The bias initialisation as recipe text; `None` for layers without a bias.
    pub bias_init: Option<String>,
}

/// Every parameterised layer with its shape, parameter count and initialisation after the
/// model's `layers` overrides; `None` when the model does not fit the sample shape.
pub fn layer_table(model: &Obj, shape: &[usize], classes: usize) -> Option<Vec<LayerRow>> {
    let resnet = super::resnet::layout(model.kind).is_some();
    let text = |o: &Obj| {
        let mut s = String::new();
        o.write_inline(&mut s);
        s
    };
    let base_init = text(model.obj("init"));
    let base_bias = if model.fields.iter().any(|(n, _)| *n == "bias_init") {
        text(model.obj("bias_init"))
    } else {
        "default".to_string()
    };
    let overrides = super::LayerInit::list(model, text);
    let mut used = vec![false; overrides.len()];
    let rows = layers(model, shape, classes)?
        .into_iter()
        .map(|(name, w)| {
            let has_bias = !resnet || name == "fc";
            let (init, bias) = super::layer_init(
                &name,
                (base_init.clone(), base_bias.clone()),
                &overrides,
                &mut used,
            );
            let weights: usize = w.iter().product();
            let extra = if has_bias { w[0] } else { 2 * w[0] };
            LayerRow {
                name,
                parameters: weights + extra,
                shape: w,
                init,
                bias_init: has_bias.then_some(bias),
            }
        })
        .collect();
    Some(rows)
}

/// The number of trained parameters: weights, biases (MLP, CNN, the ResNet head) and
/// batch-norm scales and shifts (ResNets).
pub fn param_count(model: &Obj, shape: &[usize], classes: usize) -> Option<usize> {
    Some(
        layer_table(model, shape, classes)?
            .iter()
            .map(|r| r.parameters)
            .sum(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{Options, check_text};
    use candle_core::{DType, Device};

    #[test]
    fn glob_patterns() {
        for (p, n, want) in [
            ("fc2", "fc2", true),
            ("fc2", "fc20", false),
            ("fc*", "fc20", true),
            ("fc*", "conv0", false),
            ("*", "anything", true),
            ("layer3.*", "layer3.0.conv1", true),
            ("layer3.*", "layer30.conv1", false),
            ("*.shortcut", "layer2.0.shortcut", true),
            ("*.shortcut", "layer2.0.conv1", false),
            ("layer*.conv2", "layer4.1.conv2", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "acb", false),
            ("ab*ba", "aba", false),
        ] {
            assert_eq!(glob_match(p, n), want, "{p} vs {n}");
        }
    }

    #[test]
    fn counts_match_the_built_models() {
        for (m, data, shape) in [
            (
                "mlp { hidden = [16, 8] }",
                "blobs { features = 5, classes = 4 }",
                vec![5],
            ),
            (
                "cnn { channels = [4, 6], hidden = [7] }",
                "svhn { path = \"x\" }",
                vec![3, 32, 32],
            ),
            (
                "resnet18 { width = 4 }",
                "cifar10 { path = \"x\" }",
                vec![3, 32, 32],
            ),
            (
                "resnet50 { width = 2 }",
                "cifar10 { path = \"x\" }",
                vec![3, 32, 32],
            ),
        ] {
            let src = format!(
                "experiment e {{ data = {data}, model = {m}, optimizer = sgd {{ lr = 1 }}, epochs = 1 }}\n"
            );
            let plan = check_text("s.aht", &src, &Options::default()).plan.unwrap();
            let c = &plan.trials[0].config;
            assert_eq!(sample_shape(c.obj("data")), Some(shape.clone()));
            let k = classes(c.obj("data")).unwrap();
            let built =
                crate::model::Model::build(c.obj("model"), &shape, k, DType::F32, &Device::Cpu, 0)
                    .unwrap();
            assert_eq!(
                param_count(c.obj("model"), &shape, k),
                Some(built.param_count()),
                "{m}"
            );
        }
    }
}
