//! Datasets: readers, the bundled MNIST subset, synthetic tasks, and the batching pipeline.

pub mod cifar;
pub mod fetch;
pub mod idx;
pub mod mat;
pub mod spec;
pub mod synthetic;
pub mod tokens;
pub mod verify;

pub use spec::{Augment, DataSpec, Normalization, Source, Verify};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;

/// A data file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{file}: {problem}")]
    Format { file: String, problem: String },
    #[error("{file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Unsupported(String),
    /// A `download = true` dataset whose files are not there yet.
    #[error(
        "{dir}: {missing} not downloaded yet (download = true)\n  help: `ahtsgd run` fetches them; or run `ahtsgd data fetch {kind} --to {dir}`"
    )]
    NotFetched {
        kind: &'static str,
        dir: String,
        missing: String,
    },
}

impl DataError {
    pub fn format(file: &str, problem: impl Into<String>) -> Self {
        DataError::Format {
            file: file.to_string(),
            problem: problem.into(),
        }
    }
}

/// A classification dataset in memory: row-major f32 samples.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub name: String,
    /// Shape of one sample: `[features]` or `[channels, height, width]`.
    pub sample_shape: Vec<usize>,
    pub classes: usize,
    /// Labels per sample: 1, or a sequence's length for a target at every position.
    pub labels_per_sample: usize,
    pub train_x: Vec<f32>,
    pub train_y: Vec<u32>,
    pub test_x: Vec<f32>,
    pub test_y: Vec<u32>,
    /// Problems worth telling the user that did not stop loading (checksum mismatches).
    pub warnings: Vec<String>,
}

impl Dataset {
    pub fn sample_len(&self) -> usize {
        self.sample_shape.iter().product()
    }

    pub fn train_len(&self) -> usize {
        self.train_y.len() / self.labels_per_sample.max(1)
    }

    pub fn test_len(&self) -> usize {
        self.test_y.len() / self.labels_per_sample.max(1)
    }
}

const MINI: [&[u8]; 4] = [
    include_bytes!("../../data/mnist-mini/train-images-idx3-ubyte.gz"),
    include_bytes!("../../data/mnist-mini/train-labels-idx1-ubyte.gz"),
    include_bytes!("../../data/mnist-mini/t10k-images-idx3-ubyte.gz"),
    include_bytes!("../../data/mnist-mini/t10k-labels-idx1-ubyte.gz"),
];

fn from_idx(name: &str, files: [(String, Vec<u8>); 4]) -> Result<Dataset, DataError> {
    let [(tin, ti), (tln, tl), (sin, si), (sln, sl)] = files;
    let (n, r, c, train_px) = idx::images(&tin, &ti)?;
    let train_y = idx::labels(&tln, &tl, 10)?;
    let (m, r2, c2, test_px) = idx::images(&sin, &si)?;
    let test_y = idx::labels(&sln, &sl, 10)?;
    if train_y.len() != n {
        return Err(DataError::format(
            &tln,
            format!("{} labels for {n} images", train_y.len()),
        ));
    }
    if test_y.len() != m {
        return Err(DataError::format(
            &sln,
            format!("{} labels for {m} images", test_y.len()),
        ));
    }
    if (r, c) != (r2, c2) {
        return Err(DataError::format(
            &sin,
            format!("test images are {r2}x{c2}, training images {r}x{c}"),
        ));
    }
    let scale = |px: Vec<u8>| px.into_iter().map(|p| p as f32 / 255.0).collect();
    Ok(Dataset {
        name: name.to_string(),
        sample_shape: vec![1, r, c],
        classes: 10,
        labels_per_sample: 1,
        train_x: scale(train_px),
        train_y: train_y.into_iter().map(u32::from).collect(),
        test_x: scale(test_px),
        test_y: test_y.into_iter().map(u32::from).collect(),
        warnings: Vec::new(),
    })
}

/// The bundled MNIST subset (5,000 train / 1,000 test), from the binary itself.
pub fn mnist_mini() -> Result<Dataset, DataError> {
    let names = ["train-images", "train-labels", "t10k-images", "t10k-labels"];
    let files = std::array::from_fn(|i| {
        (
            format!("<bundled mnist-mini {}>", names[i]),
            MINI[i].to_vec(),
        )
    });
    from_idx("mnist_mini", files)
}

/// MNIST-layout IDX files from a folder (raw or `.gz`), checked against the published sums.
pub fn mnist_dir(name: &str, dir: &Path, verify_mode: Verify) -> Result<Dataset, DataError> {
    let stems = [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ];
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut verdicts = Vec::new();
    for stem in stems {
        let raw = dir.join(stem);
        let gz = dir.join(format!("{stem}.gz"));
        let path = if raw.exists() { raw } else { gz };
        let bytes = read_file(&path)?;
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        verdicts.push((
            path.display().to_string(),
            verify::check(name, &file_name, &bytes),
        ));
        files.push((path.display().to_string(), bytes));
    }
    let files: [(String, Vec<u8>); 4] = files
        .try_into()
        .map_err(|_| DataError::Unsupported("four files".into()))?;
    let warnings = judge(verdicts, verify_mode)?;
    let mut d = from_idx(name, files)?;
    d.warnings = warnings;
    Ok(d)
}

fn read_file(p: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(p).map_err(|source| DataError::Io {
        file: p.display().to_string(),
        source,
    })
}

/// Turns checksum verdicts into warnings, or an error with `verify = strict`.
fn judge(verdicts: Vec<(String, verify::Verdict)>, mode: Verify) -> Result<Vec<String>, DataError> {
    let mut out = Vec::new();
    for (file, v) in verdicts {
        if let verify::Verdict::Mismatch { expected, actual } = v {
            let msg = format!(
                "SHA-256 {actual} differs from the published {expected}: not the official file, or damaged"
            );
            match mode {
                Verify::Strict => {
                    return Err(DataError::format(&file, format!("{msg} (verify = strict)")));
                }
                Verify::Off => {}
                Verify::Warn => out.push(format!("{file}: {msg}")),
            }
        }
    }
    Ok(out)
}

/// CIFAR-10 from a folder or the official `.tar.gz`.
pub fn cifar10(path: &Path, verify_mode: Verify) -> Result<Dataset, DataError> {
    // a folder that holds only the archive (as `data fetch cifar10` leaves it) is read as it
    let archive = path.join(cifar::ARCHIVE);
    let path: &Path = if path.is_dir() && !cifar::has_batches(path) && archive.is_file() {
        &archive
    } else {
        path
    };
    let mut verdicts = Vec::new();
    if path.is_file() {
        let bytes = read_file(path)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        verdicts.push((
            path.display().to_string(),
            verify::check("cifar10", &name, &bytes),
        ));
    }
    let warnings = judge(verdicts, verify_mode)?;
    let (mut train_x, mut train_y, mut test_x, mut test_y) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (name, bytes) in &cifar::files(path)? {
        let (x, y) = cifar::batch(name, bytes)?;
        if name.ends_with(cifar::TEST_FILE) {
            (test_x, test_y) = (x, y);
        } else {
            train_x.extend(x);
            train_y.extend(y);
        }
    }
    Ok(Dataset {
        name: "cifar10".into(),
        sample_shape: vec![3, 32, 32],
        classes: 10,
        labels_per_sample: 1,
        train_x,
        train_y,
        test_x,
        test_y,
        warnings,
    })
}

/// SVHN cropped digits from `train_32x32.mat` and `test_32x32.mat` in a folder.
pub fn svhn(dir: &Path, verify_mode: Verify) -> Result<Dataset, DataError> {
    let mut verdicts = Vec::new();
    let mut read = |name: &str| -> Result<(Vec<f32>, Vec<u32>), DataError> {
        let p = dir.join(name);
        let bytes = read_file(&p)?;
        verdicts.push((p.display().to_string(), verify::check("svhn", name, &bytes)));
        mat::svhn(&p.display().to_string(), &bytes)
    };
    let (train_x, train_y) = read("train_32x32.mat")?;
    let (test_x, test_y) = read("test_32x32.mat")?;
    let warnings = judge(verdicts, verify_mode)?;
    Ok(Dataset {
        name: "svhn".into(),
        sample_shape: vec![3, 32, 32],
        classes: 10,
        labels_per_sample: 1,
        train_x,
        train_y,
        test_x,
        test_y,
        warnings,
    })
}

/// Loads a dataset as described, then applies its limits, label noise, validation split and
/// normalisation; `seed` keys the label noise and the split.
pub fn load(spec: &DataSpec, seed: u64) -> Result<Dataset, DataError> {
    if let Some((kind, dir, missing)) = spec.unfetched()
        && !missing.is_empty()
    {
        return Err(DataError::NotFetched {
            kind,
            dir: dir.display().to_string(),
            missing: missing.join(", "),
        });
    }
    let mut d = match &spec.source {
        Source::MnistMini => mnist_mini()?,
        Source::Mnist {
            path,
            fashion,
            verify,
        } => {
            let kind = if *fashion { "fashion_mnist" } else { "mnist" };
            mnist_dir(kind, path, *verify)?
        }
        Source::Cifar10 { path, verify } => cifar10(path, *verify)?,
        Source::Svhn { path, verify } => svhn(path, *verify)?,
        Source::Arrays {
            path,
            shape,
            classes,
        } => arrays_checked(path, shape.as_deref(), *classes)?,
        Source::Blobs {
            classes,
            features,
            samples,
            test_samples,
            spread,
            seed,
        } => synthetic::blobs(*classes, *features, *samples, *test_samples, *spread, *seed),
        Source::Spirals {
            classes,
            samples,
            test_samples,
            noise,
            seed,
        } => synthetic::spirals(*classes, *samples, *test_samples, *noise, *seed),
        Source::Modular {
            p,
            op,
            train_fraction,
            seed,
        } => tokens::modular(*p, *op, *train_fraction, *seed)?.into_dataset(),
        Source::Text {
            path,
            context,
            stride,
            validation,
        } => match path {
            Some(path) => tokens::read_text(path, *context, *stride, *validation)?,
            None => tokens::bundled_text(*context, *stride, *validation)?,
        }
        .into_dataset(),
    };
    let limit = |n: Option<usize>| n.unwrap_or(usize::MAX);
    truncate(&mut d.train_x, &mut d.train_y, limit(spec.train_limit));
    truncate(&mut d.test_x, &mut d.test_y, limit(spec.test_limit));
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xda7a);
    let noise = spec.label_noise;
    if noise > 0.0 {
        for y in d.train_y.iter_mut() {
            if rng.random::<f64>() < noise {
                *y = rng.random_range(0..d.classes as u32);
            }
        }
    }
    let val = spec.validation;
    if val > 0.0 {
        let n = d.train_len();
        let k = ((n as f64) * val).round() as usize;
        let mut idx: Vec<usize> = (0..n).collect();
        idx.shuffle(&mut rng);
        let (held, kept) = idx.split_at(k);
        let len = d.sample_len();
        let take = |ids: &[usize], x: &[f32], y: &[u32]| {
            let mut xs = Vec::with_capacity(ids.len() * len);
            let mut ys = Vec::with_capacity(ids.len());
            for &i in ids {
                xs.extend_from_slice(&x[i * len..(i + 1) * len]);
                ys.push(y[i]);
            }
            (xs, ys)
        };
        let (vx, vy) = take(held, &d.train_x, &d.train_y);
        let (tx, ty) = take(kept, &d.train_x, &d.train_y);
        d.test_x = vx;
        d.test_y = vy;
        d.train_x = tx;
        d.train_y = ty;
    }
    if let Some(n) = &spec.normalize {
        normalize_with(&mut d, &n.mean, &n.std).map_err(DataError::Unsupported)?;
    }
    Ok(d)
}

fn truncate(x: &mut Vec<f32>, y: &mut Vec<u32>, n: usize) {
    if y.len() > n {
        let per = x.len() / y.len().max(1);
        y.truncate(n);
        x.truncate(n * per);
    }
}

/// Standardises each channel by the training set's mean and standard deviation.
pub fn normalize(d: &mut Dataset) {
    normalize_with(d, &[], &[]).expect("empty statistics fit any data");
}

/// The channels `normalize` works on: image channels, or each feature of a flat sample.
pub fn channels(d: &Dataset) -> usize {
    if d.sample_shape.len() == 3 {
        d.sample_shape[0]
    } else {
        d.sample_len()
    }
}

/// Standardises each channel, `(x − mean) / std`, by the given per-channel statistics; an
/// empty list means the training set's own. A list of the wrong length is an error that says
/// how many channels the data has.
pub fn normalize_with(d: &mut Dataset, means: &[f64], stds: &[f64]) -> Result<(), String> {
    let channels = channels(d);
    for (field, list) in [("mean", means), ("std", stds)] {
        if !list.is_empty() && list.len() != channels {
            return Err(format!(
                "`{field}` has {} values but {} has {channels} channel{} (sample shape {:?}); give one value per channel, or `[]` for the training set's",
                list.len(),
                d.name,
                if channels == 1 { "" } else { "s" },
                d.sample_shape
            ));
        }
    }
    let per = d.sample_len() / channels.max(1);
    let n = d.train_len().max(1);
    for c in 0..channels {
        let (mut s, mut s2) = (0.0f64, 0.0f64);
        if means.is_empty() || stds.is_empty() {
            for i in 0..d.train_len() {
                let start = i * d.sample_len() + c * per;
                for &v in &d.train_x[start..start + per] {
                    s += v as f64;
                    s2 += (v as f64) * (v as f64);
                }
            }
        }
        let count = (n * per) as f64;
        let own_mean = s / count;
        let mean = means.get(c).copied().unwrap_or(own_mean);
        let sd = match stds.get(c) {
            Some(&sd) => sd,
            None => (s2 / count - own_mean * own_mean).max(0.0).sqrt().max(1e-6),
        };
        let len = d.sample_len();
        for x in [&mut d.train_x, &mut d.test_x] {
            for sample in x.chunks_mut(len) {
                for v in &mut sample[c * per..(c + 1) * per] {
                    *v = ((*v as f64 - mean) / sd) as f32;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_subset_loads_with_no_files() {
        let d = mnist_mini().unwrap();
        assert_eq!(
            (d.train_len(), d.test_len(), d.sample_shape.clone()),
            (5000, 1000, vec![1, 28, 28])
        );
        // all ten digits appear
        let mut seen = [false; 10];
        d.train_y.iter().for_each(|y| seen[*y as usize] = true);
        assert!(seen.iter().all(|s| *s));
        assert!(d.train_x.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn normalisation_standardises_the_training_set() {
        let mut d = mnist_mini().unwrap();
        normalize(&mut d);
        let n = d.train_x.len() as f64;
        let mean = d.train_x.iter().map(|v| *v as f64).sum::<f64>() / n;
        let var = d
            .train_x
            .iter()
            .map(|v| (*v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        assert!(
            mean.abs() < 1e-4 && (var - 1.0).abs() < 1e-3,
            "{mean} {var}"
        );
    }

    #[test]
    fn given_statistics_are_used_per_channel() {
        // Three channels of 2x2 pixels with known values, per channel c: pixels c/10 + k/100.
        let sample: Vec<f32> = (0..3)
            .flat_map(|c| (0..4).map(move |k| c as f32 / 10.0 + k as f32 / 100.0))
            .collect();
        let mut d = Dataset {
            name: "tiny".into(),
            sample_shape: vec![3, 2, 2],
            classes: 2,
            labels_per_sample: 1,
            train_x: sample.repeat(2),
            train_y: vec![0, 1],
            test_x: sample.clone(),
            test_y: vec![0],
            warnings: Vec::new(),
        };
        let (mean, std) = ([0.5, 0.25, 0.0], [0.5, 2.0, 0.1]);
        normalize_with(&mut d, &mean, &std).unwrap();
        for c in 0..3 {
            for k in 0..4 {
                let raw = sample[c * 4 + k] as f64;
                let want = (raw - mean[c]) / std[c];
                let got = d.test_x[c * 4 + k] as f64;
                assert!(
                    (got - want).abs() < 1e-6,
                    "channel {c} pixel {k}: {got} vs {want}"
                );
            }
        }
        // The mean alone: the standard deviation is the training set's (0.01118 for 0,1,2,3 / 100).
        let mut d2 = Dataset {
            train_x: sample.repeat(2),
            test_x: sample.clone(),
            ..d.clone()
        };
        normalize_with(&mut d2, &[0.0, 0.0, 0.0], &[]).unwrap();
        let sd = (1.25f64).sqrt() / 100.0;
        assert!(
            (d2.test_x[1] as f64 - 0.01 / sd).abs() < 1e-4,
            "{}",
            d2.test_x[1]
        );
        // The wrong number of values names the field and the channel count.
        let err = normalize_with(&mut d2, &[0.5], &[]).unwrap_err();
        assert!(
            err.contains("`mean` has 1 values") && err.contains("3 channels"),
            "{err}"
        );
    }

    #[test]
    fn idx_folder_with_missing_file_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = mnist_dir("mnist", dir.path(), Verify::Warn)
            .unwrap_err()
            .to_string();
        assert!(err.contains("train-images-idx3-ubyte"), "{err}");
    }
}

/// Random crop with zero padding `pad` and optional horizontal flip, in place, for a batch of
/// `[n, c, h, w]` samples. Seeded by the caller (per step), so runs stay reproducible.
pub fn augment(batch: &mut [f32], shape: [usize; 4], pad: usize, flip: bool, rng: &mut ChaCha8Rng) {
    let [n, c, h, w] = shape;
    let plane = h * w;
    let mut src = vec![0f32; c * plane];
    for s in 0..n {
        let sample = &mut batch[s * c * plane..(s + 1) * c * plane];
        src.copy_from_slice(sample);
        let dy = rng.random_range(0..=2 * pad) as isize - pad as isize;
        let dx = rng.random_range(0..=2 * pad) as isize - pad as isize;
        let mirror = flip && rng.random::<bool>();
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let sy = y as isize + dy;
                    let sx0 = x as isize + dx;
                    let sx = if mirror { w as isize - 1 - sx0 } else { sx0 };
                    let v = if (0..h as isize).contains(&sy) && (0..w as isize).contains(&sx) {
                        src[ch * plane + sy as usize * w + sx as usize]
                    } else {
                        0.0
                    };
                    sample[ch * plane + y * w + x] = v;
                }
            }
        }
    }
}

#[cfg(test)]
mod augment_tests {
    use super::*;

    #[test]
    fn shifts_keep_content_and_pad_with_zeros() {
        let (h, w) = (6, 6);
        let img: Vec<f32> = (0..h * w).map(|i| i as f32 + 1.0).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..20 {
            let mut b = img.clone();
            augment(&mut b, [1, 1, h, w], 2, true, &mut rng);
            let nonzero: Vec<f32> = b.iter().copied().filter(|v| *v != 0.0).collect();
            // at most 2 rows and 2 columns are lost; every kept value comes from the image
            assert!(nonzero.len() >= (h - 2) * (w - 2));
            assert!(nonzero.iter().all(|v| img.contains(v)));
        }
        let mut same = img.clone();
        augment(&mut same, [1, 1, h, w], 0, false, &mut rng);
        assert_eq!(same, img, "no padding and no flip change nothing");
    }
}

/// What `ahtsgd data check` found about one file or dataset.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Finding {
    pub dataset: String,
    pub file: String,
    /// "matches the published SHA-256", "differs from ...", or "no published sum".
    pub checksum: String,
    /// Train and test sample counts when the dataset loaded, or the reason it did not.
    pub result: Result<(usize, usize), String>,
}

/// How a dataset kind's published files are named in messages.
fn published_name(kind: &str) -> &'static str {
    match kind {
        "mnist" => "MNIST's published SHA-256",
        "fashion_mnist" => "Fashion-MNIST's published SHA-256",
        "mnist_mini" => "the bundled MNIST subset's SHA-256",
        _ => "the published SHA-256",
    }
}

/// [`inspect`] on `dir` and every folder below it (hidden ones and those more than four levels
/// down aside), in path order.
pub fn inspect_tree(dir: &Path) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0)];
    let mut folders = Vec::new();
    while let Some((d, depth)) = stack.pop() {
        folders.push(d.clone());
        if depth == 4 {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let hidden = e.file_name().to_string_lossy().starts_with('.');
            if !hidden && e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push((e.path(), depth + 1));
            }
        }
    }
    folders.sort();
    for d in folders {
        // the batches folder of CIFAR-10 is read with its parent
        if d.file_name().is_some_and(|n| n == "cifar-10-batches-bin") {
            continue;
        }
        out.extend(inspect(&d));
    }
    out
}

/// Looks for the official datasets in `dir` and checks every file found.
pub fn inspect(dir: &Path) -> Vec<Finding> {
    let mut out = Vec::new();
    let sums = |dataset: &str, paths: &[std::path::PathBuf]| -> Vec<(String, String)> {
        paths
            .iter()
            .filter(|p| p.is_file())
            .map(|p| {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let verdict = match std::fs::read(p) {
                    Err(e) => format!("unreadable: {e}"),
                    Ok(b) => match verify::check(dataset, &name, &b) {
                        verify::Verdict::Match => "matches the published SHA-256".to_string(),
                        verify::Verdict::Mismatch { actual, .. } => {
                            format!("SHA-256 {actual} differs from the published sum")
                        }
                        verify::Verdict::Unknown => "no published sum for this name".to_string(),
                    },
                };
                (p.display().to_string(), verdict)
            })
            .collect()
    };
    let counts = |r: Result<Dataset, DataError>| {
        r.map(|d| (d.train_len(), d.test_len()))
            .map_err(|e| e.to_string())
    };
    let stems = [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ];
    let idx: Vec<std::path::PathBuf> = stems
        .iter()
        .flat_map(|s| [dir.join(s), dir.join(format!("{s}.gz"))])
        .filter(|p| p.exists())
        .collect();
    if !idx.is_empty() {
        // each file read and summed once: what its sum says it is names the dataset
        let judged: Vec<(String, Option<&str>, String)> = idx
            .iter()
            .map(|p| {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let (kind, checksum) = match std::fs::read(p) {
                    Err(e) => (None, format!("unreadable: {e}")),
                    Ok(b) => match verify::identify(&name, &b) {
                        Some(kind) => (Some(kind), format!("matches {}", published_name(kind))),
                        None => (None, format!(
                            "SHA-256 of its content {} differs from MNIST's and Fashion-MNIST's published sums",
                            verify::sha256_hex(&idx::maybe_gunzip(&name, &b).unwrap_or(b))
                        )),
                    },
                };
                (p.display().to_string(), kind, checksum)
            })
            .collect();
        let label = match judged[0].1 {
            Some(k) if judged.iter().all(|(_, x, _)| *x == Some(k)) => k.to_string(),
            _ => "mnist / fashion_mnist (IDX)".to_string(),
        };
        let kind = if label == "fashion_mnist" {
            "fashion_mnist"
        } else {
            "mnist"
        };
        let loaded = counts(mnist_dir(kind, dir, Verify::Off));
        for (file, _, checksum) in judged {
            out.push(Finding {
                dataset: label.clone(),
                file,
                checksum,
                result: loaded.clone(),
            });
        }
    }
    let tgz = dir.join("cifar-10-binary.tar.gz");
    let cifar_dir = if dir.join("cifar-10-batches-bin").is_dir() {
        dir.join("cifar-10-batches-bin")
    } else {
        dir.to_path_buf()
    };
    if tgz.exists() {
        let loaded = counts(cifar10(&tgz, Verify::Off));
        for (file, checksum) in sums("cifar10", std::slice::from_ref(&tgz)) {
            out.push(Finding {
                dataset: "cifar10".into(),
                file,
                checksum,
                result: loaded.clone(),
            });
        }
    }
    if cifar_dir.join(cifar::TEST_FILE).exists() {
        let loaded = counts(cifar10(dir, Verify::Off));
        let files: Vec<_> = cifar::TRAIN_FILES
            .iter()
            .chain([&cifar::TEST_FILE])
            .map(|f| cifar_dir.join(f))
            .collect();
        for (file, checksum) in sums("cifar10", &files) {
            out.push(Finding {
                dataset: "cifar10".into(),
                file,
                checksum,
                result: loaded.clone(),
            });
        }
    }
    let mats: Vec<_> = ["train_32x32.mat", "test_32x32.mat", "extra_32x32.mat"]
        .iter()
        .map(|f| dir.join(f))
        .filter(|p| p.exists())
        .collect();
    if !mats.is_empty() {
        let loaded = counts(svhn(dir, Verify::Off));
        for (file, checksum) in sums("svhn", &mats) {
            out.push(Finding {
                dataset: "svhn".into(),
                file,
                checksum,
                result: loaded.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod inspect_tests {
    use super::*;

    #[test]
    fn finds_and_checks_the_svhn_fixtures() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["train_32x32.mat", "test_32x32.mat"] {
            std::fs::copy(
                format!("{}/tests/data/svhn-scipy/{f}", env!("CARGO_MANIFEST_DIR")),
                dir.path().join(f),
            )
            .unwrap();
        }
        let found = inspect(dir.path());
        assert_eq!(found.len(), 2);
        assert!(found.iter().all(|f| f.result == Ok((5, 3))));
        assert!(
            found.iter().all(|f| f.checksum.contains("differs")),
            "fixtures are not the official files"
        );
        assert!(inspect(tempfile::tempdir().unwrap().path()).is_empty());
    }
}

/// [`arrays`], checked against the sample shape and class count the recipe gave (`None`: not
/// given): a mismatch names the file, both values and what to change.
pub fn arrays_checked(
    path: &Path,
    shape: Option<&[usize]>,
    classes: Option<usize>,
) -> Result<Dataset, DataError> {
    let d = arrays(path)?;
    let file = path.display().to_string();
    if let Some(shape) = shape
        && shape != d.sample_shape.as_slice()
    {
        return Err(DataError::format(
            &file,
            format!(
                "its samples have shape {:?} but the recipe says `shape = {shape:?}`; write `shape = {:?}` (or reshape the arrays)",
                d.sample_shape, d.sample_shape
            ),
        ));
    }
    if let Some(k) = classes {
        let largest = d
            .train_y
            .iter()
            .chain(&d.test_y)
            .max()
            .copied()
            .unwrap_or(0);
        if largest as usize >= k {
            return Err(DataError::format(
                &file,
                format!(
                    "it has label {largest} but the recipe says `classes = {k}` (labels 0..{}); write `classes = {}` or more",
                    k - 1,
                    largest + 1
                ),
            ));
        }
        return Ok(Dataset { classes: k, ..d });
    }
    Ok(d)
}

/// Your own arrays: a `.npz` or `.safetensors` file with `x_train`, `y_train`, `x_test` and
/// `y_test` (x: [N, features] or [N, C, H, W], any float or integer type; y: integer labels).
pub fn arrays(path: &Path) -> Result<Dataset, DataError> {
    let file = path.display().to_string();
    let fmt = |e: candle_core::Error| DataError::format(&file, e.to_string());
    let tensors: std::collections::HashMap<String, candle_core::Tensor> = match path
        .extension()
        .and_then(|e| e.to_str())
    {
        Some("npz") => candle_core::Tensor::read_npz(path)
            .map_err(fmt)?
            .into_iter()
            .collect(),
        Some("safetensors") => {
            candle_core::safetensors::load(path, &candle_core::Device::Cpu).map_err(fmt)?
        }
        _ if path.is_dir() => {
            let mut m = std::collections::HashMap::new();
            for name in ["x_train", "y_train", "x_test", "y_test"] {
                let p = path.join(format!("{name}.npy"));
                if !p.exists() {
                    return Err(DataError::format(
                        &p.display().to_string(),
                        "missing (an arrays folder holds x_train.npy, y_train.npy, x_test.npy and y_test.npy)",
                    ));
                }
                let t = candle_core::Tensor::read_npy(&p).map_err(|e| {
                    let text = e.to_string();
                    let what = if text.contains("fill whole buffer") || text.contains("end of file")
                    {
                        "ends before the data its header declares: the file is truncated; write it again (numpy.save)".to_string()
                    } else {
                        format!("cannot be read as .npy: {text}")
                    };
                    DataError::format(&p.display().to_string(), what)
                })?;
                m.insert(name.to_string(), t);
            }
            m
        }
        _ => {
            return Err(DataError::format(
                &file,
                "expected a .npz or .safetensors file, or a folder of .npy files",
            ));
        }
    };
    let get = |name: &str| {
        tensors.get(name).ok_or_else(|| {
            DataError::format(
                &file,
                format!("no array `{name}` (need x_train, y_train, x_test, y_test)"),
            )
        })
    };
    let xs = |name: &str| -> Result<(Vec<usize>, Vec<f32>), DataError> {
        let t = get(name)?;
        let v = t
            .to_dtype(candle_core::DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(fmt)?;
        Ok((t.dims().to_vec(), v))
    };
    let ys = |name: &str| -> Result<Vec<u32>, DataError> {
        let v = get(name)?
            .to_dtype(candle_core::DType::F64)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f64>())
            .map_err(fmt)?;
        v.iter()
            .enumerate()
            .map(|(i, &l)| {
                if l >= 0.0 && l.fract() == 0.0 && l < 1e6 {
                    Ok(l as u32)
                } else {
                    Err(DataError::format(
                        &file,
                        format!("{name}[{i}] = {l} is not a class label"),
                    ))
                }
            })
            .collect()
    };
    let (dtrain, train_x) = xs("x_train")?;
    let (dtest, test_x) = xs("x_test")?;
    let (train_y, test_y) = (ys("y_train")?, ys("y_test")?);
    if dtrain.len() < 2 || dtrain[1..] != dtest[1..] {
        return Err(DataError::format(
            &file,
            format!("x_train is {dtrain:?} and x_test {dtest:?}: samples must have the same shape"),
        ));
    }
    if train_y.len() != dtrain[0] || test_y.len() != dtest[0] {
        return Err(DataError::format(
            &file,
            "label counts differ from sample counts",
        ));
    }
    let classes = train_y
        .iter()
        .chain(&test_y)
        .max()
        .map_or(0, |m| *m as usize + 1)
        .max(2);
    Ok(Dataset {
        name: "arrays".into(),
        sample_shape: dtrain[1..].to_vec(),
        classes,
        labels_per_sample: 1,
        train_x,
        train_y,
        test_x,
        test_y,
        warnings: Vec::new(),
    })
}

#[cfg(test)]
mod arrays_tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// `shape` and `classes` from the recipe are checked against the files; a class count
    /// above the labels' is kept (a class the split happens to lack).
    #[test]
    fn given_shape_and_classes_are_checked_against_the_files() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases/data/arrays6");
        let d = arrays_checked(&dir, Some(&[6]), Some(5)).unwrap();
        assert_eq!((d.sample_shape.clone(), d.classes), (vec![6], 5));
        assert_eq!(arrays_checked(&dir, None, None).unwrap().classes, 3);
        let e = arrays_checked(&dir, Some(&[2, 3]), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("shape [6]") && e.contains("shape = [2, 3]"),
            "{e}"
        );
        let e = arrays_checked(&dir, None, Some(2)).unwrap_err().to_string();
        assert!(e.contains("label 2") && e.contains("classes = 3"), "{e}");
    }

    #[test]
    fn reads_safetensors_and_npz() {
        let dir = tempfile::tempdir().unwrap();
        let dev = Device::Cpu;
        let mut m = std::collections::HashMap::new();
        m.insert(
            "x_train".to_string(),
            Tensor::arange(0f32, 24.0, &dev)
                .unwrap()
                .reshape((4, 6))
                .unwrap(),
        );
        m.insert(
            "y_train".to_string(),
            Tensor::new(&[0u8, 1, 2, 1], &dev).unwrap(),
        );
        m.insert(
            "x_test".to_string(),
            Tensor::ones((2, 6), candle_core::DType::F64, &dev).unwrap(),
        );
        m.insert("y_test".to_string(), Tensor::new(&[1i64, 0], &dev).unwrap());
        let st = dir.path().join("mine.safetensors");
        candle_core::safetensors::save(&m, &st).unwrap();
        let d = arrays(&st).unwrap();
        assert_eq!(
            (d.sample_shape.clone(), d.classes, d.train_y.clone()),
            (vec![6], 3, vec![0, 1, 2, 1])
        );
        assert_eq!(d.train_x[7], 7.0);
        let npz = dir.path().join("mine.npz");
        Tensor::write_npz(
            &m.iter().map(|(k, v)| (k.as_str(), v)).collect::<Vec<_>>(),
            &npz,
        )
        .unwrap();
        assert_eq!(arrays(&npz).unwrap().test_y, vec![1, 0]);
        let folder = dir.path().join("npy");
        std::fs::create_dir(&folder).unwrap();
        for (k, v) in &m {
            v.write_npy(folder.join(format!("{k}.npy"))).unwrap();
        }
        let from_npy = arrays(&folder).unwrap();
        assert_eq!(
            (from_npy.train_x, from_npy.test_y),
            (d.train_x.clone(), vec![1, 0])
        );
        std::fs::remove_file(folder.join("x_test.npy")).unwrap();
        assert!(
            arrays(&folder)
                .unwrap_err()
                .to_string()
                .contains("x_test.npy")
        );
        m.remove("y_test");
        candle_core::safetensors::save(&m, &st).unwrap();
        assert!(arrays(&st).unwrap_err().to_string().contains("y_test"));
    }
}
