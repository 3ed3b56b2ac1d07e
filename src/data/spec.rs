//! A dataset as the checker resolved it: which reader with which settings, and what is done
//! to the samples once loaded. Free of recipes and of tensors; `check::data::lower` builds it.

use std::path::PathBuf;

/// How a reader treats the published SHA-256 sums of the files it knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// A mismatch is a warning.
    Warn,
    /// A mismatch is an error.
    Strict,
    /// Sums are not checked.
    Off,
}

/// Where the samples come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// The bundled MNIST subset.
    MnistMini,
    /// The official IDX files (raw or gzip) in a folder; `fashion`: Fashion-MNIST's.
    Mnist {
        path: PathBuf,
        fashion: bool,
        verify: Verify,
    },
    /// CIFAR-10's binary batches, in a folder or the official `.tar.gz`.
    Cifar10 { path: PathBuf, verify: Verify },
    /// SVHN's cropped digits (`train_32x32.mat`, `test_32x32.mat`) in a folder.
    Svhn { path: PathBuf, verify: Verify },
    /// Your own arrays; `shape` and `classes`, where given, are checked against the files.
    Arrays {
        path: PathBuf,
        shape: Option<Vec<usize>>,
        classes: Option<usize>,
    },
    /// Gaussian blobs.
    Blobs {
        classes: usize,
        features: usize,
        samples: usize,
        test_samples: usize,
        spread: f64,
        seed: u64,
    },
    /// A modular arithmetic task ([`super::tokens::modular`]): token ids as samples.
    Modular {
        p: u64,
        op: super::tokens::Operation,
        train_fraction: f64,
        seed: u64,
    },
    /// Byte-level language modelling ([`super::tokens::text`]): windows of a file, or of the
    /// bundled text when `path` is `None`.
    Text {
        path: Option<PathBuf>,
        context: usize,
        stride: usize,
        validation: f64,
    },
    /// Interleaved spirals in 2-D.
    Spirals {
        classes: usize,
        samples: usize,
        test_samples: usize,
        noise: f64,
        seed: u64,
    },
}

/// Per-channel standardisation, `(x − mean) / std`; empty lists: the training set's own.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalization {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

/// Training-time augmentation: random crops with padding 4, and horizontal flips when `flip`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Augment {
    pub flip: bool,
}

/// A dataset and what is done to it after loading.
#[derive(Clone, Debug, PartialEq)]
pub struct DataSpec {
    pub source: Source,
    /// At most this many training (test) samples; `None`: all.
    pub train_limit: Option<usize>,
    pub test_limit: Option<usize>,
    /// The fraction of training labels replaced by random ones (seeded).
    pub label_noise: f64,
    /// The fraction of the training set held out for evaluation instead of the test set.
    pub validation: f64,
    pub normalize: Option<Normalization>,
    pub augment: Option<Augment>,
    /// `download = true`: the official files may be fetched into the source's path before
    /// loading (the CLI does it; [`crate::data::load`] only says which command to run).
    pub download: bool,
}

impl DataSpec {
    /// For `download = true`: the kind and the folder its files are fetched into. `None` for
    /// a dataset that is not downloaded.
    pub fn download_target(&self) -> Option<(&'static str, PathBuf)> {
        if !self.download {
            return None;
        }
        let (kind, path) = match &self.source {
            Source::Mnist { path, fashion, .. } => {
                (if *fashion { "fashion_mnist" } else { "mnist" }, path)
            }
            Source::Cifar10 { path, .. } => ("cifar10", path),
            Source::Svhn { path, .. } => ("svhn", path),
            _ => return None,
        };
        // a `path` naming the CIFAR-10 archive itself: its folder is where it is fetched
        let dir = if kind == "cifar10" && path.extension().is_some_and(|e| e == "gz") {
            path.parent().map(PathBuf::from).unwrap_or_default()
        } else {
            path.clone()
        };
        Some((kind, dir))
    }

    /// For `download = true`: the kind, the folder and the files still missing there (empty
    /// once fetched).
    pub fn unfetched(&self) -> Option<(&'static str, PathBuf, Vec<&'static str>)> {
        let (kind, dir) = self.download_target()?;
        let missing = super::fetch::missing(super::fetch::remote(kind)?, &dir);
        Some((kind, dir, missing))
    }
}
