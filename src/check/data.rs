//! Lowering a checked dataset to the typed [`DataSpec`] the readers take.

use super::model::has;
use crate::data::tokens::Operation;
use crate::data::{Augment, DataSpec, Normalization, Source, Verify};
use crate::plan::Obj;
use std::path::PathBuf;

fn verify(data: &Obj) -> Verify {
    // the checker admits these three (schema's VERIFY)
    match data.str("verify") {
        "strict" => Verify::Strict,
        "off" => Verify::Off,
        _ => Verify::Warn,
    }
}

/// The typed description of a checked `data` object; `None` for a kind without a reader in
/// this build.
pub fn lower(data: &Obj) -> Option<DataSpec> {
    let path = || {
        let written = data.str("path");
        if written.is_empty() && has(data, "download") && data.bool("download") {
            crate::data::fetch::default_dir(data.kind)
        } else {
            PathBuf::from(written)
        }
    };
    let source = match data.kind {
        "mnist" | "fashion_mnist" => Source::Mnist {
            path: path(),
            fashion: data.kind == "fashion_mnist",
            verify: verify(data),
        },
        "cifar10" => Source::Cifar10 {
            path: path(),
            verify: verify(data),
        },
        "svhn" => Source::Svhn {
            path: path(),
            verify: verify(data),
        },
        "arrays" => Source::Arrays {
            path: path(),
            shape: Some(data.usize_list("shape")).filter(|s| !s.is_empty()),
            classes: Some(data.usize("classes")).filter(|&k| k > 0),
        },
        "blobs" => Source::Blobs {
            classes: data.usize("classes"),
            features: data.usize("features"),
            samples: data.usize("samples"),
            test_samples: data.usize("test_samples"),
            spread: data.f64("spread"),
            seed: data.f64("seed") as u64,
        },
        "spirals" => Source::Spirals {
            classes: data.usize("classes"),
            samples: data.usize("samples"),
            test_samples: data.usize("test_samples"),
            noise: data.f64("noise"),
            seed: data.f64("seed") as u64,
        },
        "modular" => Source::Modular {
            p: data.usize("p") as u64,
            op: match data.str("op") {
                "sub" => Operation::Sub,
                "mul" => Operation::Mul,
                "div" => Operation::Div,
                _ => Operation::Add,
            },
            train_fraction: data.f64("train_fraction"),
            seed: data.f64("seed") as u64,
        },
        "text" => Source::Text {
            path: Some(data.str("path"))
                .filter(|p| !p.is_empty())
                .map(|_| path()),
            context: data.usize("context"),
            stride: data.usize("stride"),
            validation: data.f64("validation"),
        },
        "mnist_mini" => Source::MnistMini,
        _ => return None,
    };
    // token kinds have none of the image fields
    let common = has(data, "normalize");
    let limit = |field: &str| {
        if common {
            Some(data.usize(field)).filter(|&n| n > 0)
        } else {
            None
        }
    };
    Some(DataSpec {
        train_limit: limit("train_limit"),
        test_limit: limit("test_limit"),
        label_noise: if common { data.f64("label_noise") } else { 0.0 },
        validation: if common { data.f64("validation") } else { 0.0 },
        normalize: (common && data.bool("normalize")).then(|| Normalization {
            mean: data.f64_list("mean"),
            std: data.f64_list("std"),
        }),
        augment: (has(data, "augment") && data.bool("augment")).then_some(Augment {
            flip: !matches!(source, Source::Svhn { .. }),
        }),
        download: has(data, "download") && data.bool("download"),
        source,
    })
}
