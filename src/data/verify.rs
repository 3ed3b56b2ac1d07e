//! The published SHA-256 sums of the official dataset files, checked when those files are read.

use sha2::{Digest, Sha256};
use std::path::Path;

/// (dataset kind, file name, SHA-256). IDX files are summed by their uncompressed content
/// (under the name without `.gz`), so a file compressed again, or not at all, still matches;
/// other files by their bytes. The bundled MNIST subset (`data/mnist-mini`) has its own entries.
pub const PUBLISHED: &[(&str, &str, &str)] = &[
    (
        "mnist",
        "train-images-idx3-ubyte",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    (
        "mnist",
        "train-labels-idx1-ubyte",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    (
        "mnist",
        "t10k-images-idx3-ubyte",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    (
        "mnist",
        "t10k-labels-idx1-ubyte",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
    (
        "fashion_mnist",
        "train-images-idx3-ubyte",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    (
        "fashion_mnist",
        "train-labels-idx1-ubyte",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    (
        "fashion_mnist",
        "t10k-images-idx3-ubyte",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    (
        "fashion_mnist",
        "t10k-labels-idx1-ubyte",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
    // the first 5,000 training and 1,000 test images of MNIST (data/mnist-mini/NOTICE)
    (
        "mnist_mini",
        "train-images-idx3-ubyte",
        "1e3ffdb2f57e22d9e5363dde25c2d057542c2e72baa312f0f3b03948bb3802b7",
    ),
    (
        "mnist_mini",
        "train-labels-idx1-ubyte",
        "685aeb7baef68233efa643639a5e9c15bb48be09a628f96fb7f606ca2a1ea7bc",
    ),
    (
        "mnist_mini",
        "t10k-images-idx3-ubyte",
        "de7c252b04f05e1f8309634180ccdf286dc6dbac8c579b74e76e02ae0331ca52",
    ),
    (
        "mnist_mini",
        "t10k-labels-idx1-ubyte",
        "832c0d20f0dc42e575488c75a83a970787d4c8d4d05831b2ef03701b4a478a90",
    ),
    (
        "cifar10",
        "cifar-10-binary.tar.gz",
        "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
    ),
    (
        "svhn",
        "train_32x32.mat",
        "435e94d69a87fde4fd4d7f3dd208dfc32cb6ae8af2240d066de1df7508d083b8",
    ),
    (
        "svhn",
        "test_32x32.mat",
        "cdce80dfb2a2c4c6160906d0bd7c68ec5a99d7ca4831afa54f09182025b6a75b",
    ),
    (
        "svhn",
        "extra_32x32.mat",
        "a133a4beb38a00fcdda90c9489e0c04f900b660ce8a316a5e854838379a71eb3",
    ),
];

/// The outcome of checking one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No published sum for this name (a subset, say).
    Unknown,
    Match,
    Mismatch {
        expected: &'static str,
        actual: String,
    },
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The IDX kinds whose files are summed by content.
const IDX_KINDS: &[&str] = &["mnist", "fashion_mnist", "mnist_mini"];

/// What is summed for a file of this name: (name in the table, bytes to sum). A `.gz` IDX
/// file is summed by its uncompressed content (a stream that does not decompress is summed as
/// it is, and so fails).
fn summed(file_name: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    match file_name.strip_suffix(".gz") {
        Some(stem) if stem.ends_with("-ubyte") => {
            match super::idx::maybe_gunzip(file_name, bytes) {
                Ok(content) => (stem.to_string(), content),
                Err(_) => (stem.to_string(), bytes.to_vec()),
            }
        }
        _ => (file_name.to_string(), bytes.to_vec()),
    }
}

/// Checks `bytes` against the published sum for a file of this name in `dataset`. An MNIST
/// file that is the bundled subset's matches too: it is MNIST, cut, not damaged.
pub fn check(dataset: &str, file_name: &str, bytes: &[u8]) -> Verdict {
    let (name, content) = summed(file_name, bytes);
    check_sum(dataset, &name, &sha256_hex(&content))
}

/// As [`check`] for the file at `path` (named `file_name`, which says how it is summed), read
/// in pieces: a download of hundreds of megabytes is checked without holding it in memory.
pub fn check_file(dataset: &str, file_name: &str, path: &Path) -> std::io::Result<Verdict> {
    let (name, sum) = sum_file(file_name, path)?;
    Ok(check_sum(dataset, &name, &sum))
}

/// Which dataset's published file the file at `path` is, by its sum.
pub fn identify_file(file_name: &str, path: &Path) -> std::io::Result<Option<&'static str>> {
    let (name, sum) = sum_file(file_name, path)?;
    Ok(identify_sum(&name, &sum))
}

/// The verdict on a file summed as `name` (its name in the table) to `actual`.
fn check_sum(dataset: &str, name: &str, actual: &str) -> Verdict {
    let kinds: &[&str] = match dataset {
        "mnist" => &["mnist", "mnist_mini"],
        other => std::slice::from_ref(
            match IDX_KINDS
                .iter()
                .chain(&["cifar10", "svhn"])
                .find(|k| **k == other)
            {
                Some(k) => k,
                None => return Verdict::Unknown,
            },
        ),
    };
    let sums: Vec<&'static str> = PUBLISHED
        .iter()
        .filter(|(d, n, _)| kinds.contains(d) && *n == name)
        .map(|(_, _, s)| *s)
        .collect();
    let Some(first) = sums.first() else {
        return Verdict::Unknown;
    };
    if sums.contains(&actual) {
        Verdict::Match
    } else {
        Verdict::Mismatch {
            expected: first,
            actual: actual.to_string(),
        }
    }
}

/// Which dataset's published file this is, by its sum (`None` when it is none of them).
pub fn identify(file_name: &str, bytes: &[u8]) -> Option<&'static str> {
    let (name, content) = summed(file_name, bytes);
    identify_sum(&name, &sha256_hex(&content))
}

fn identify_sum(name: &str, actual: &str) -> Option<&'static str> {
    PUBLISHED
        .iter()
        .find(|(_, n, s)| *n == name && *s == actual)
        .map(|(d, _, _)| *d)
}

/// (name in the table, SHA-256) of the file at `path`, summed as [`summed`] sums its bytes.
fn sum_file(file_name: &str, path: &Path) -> std::io::Result<(String, String)> {
    use std::io::Read;
    fn digest(mut r: impl Read) -> std::io::Result<String> {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => hasher.update(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect())
    }
    let open = || std::fs::File::open(path).map(std::io::BufReader::new);
    if let Some(stem) = file_name.strip_suffix(".gz")
        && stem.ends_with("-ubyte")
    {
        let mut magic = [0u8; 2];
        let gzip = open()?.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
        if gzip {
            // a stream that stops decompressing is summed as it is, and so fails, as in `summed`
            if let Ok(sum) = digest(flate2::read::GzDecoder::new(open()?)) {
                return Ok((stem.to_string(), sum));
            }
        }
        return Ok((stem.to_string(), digest(open()?)?));
    }
    Ok((file_name.to_string(), digest(open()?)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each IDX file is the same content raw, gzip-compressed at any level, or under another
    /// kind's name: the bundled subset is identified as itself, and is a match for `mnist`.
    #[test]
    fn idx_files_are_checked_by_content_and_keyed_by_kind() {
        use std::io::{Read, Write};
        let root = env!("CARGO_MANIFEST_DIR");
        let gz =
            std::fs::read(format!("{root}/data/mnist-mini/t10k-labels-idx1-ubyte.gz")).unwrap();
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut raw)
            .unwrap();
        let mut again = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        again.write_all(&raw).unwrap();
        let again = again.finish().unwrap();
        assert_ne!(again, gz, "compressed differently");
        for (name, bytes) in [
            ("t10k-labels-idx1-ubyte.gz", &gz),
            ("t10k-labels-idx1-ubyte.gz", &again),
            ("t10k-labels-idx1-ubyte", &raw),
        ] {
            assert_eq!(identify(name, bytes), Some("mnist_mini"), "{name}");
            assert_eq!(check("mnist_mini", name, bytes), Verdict::Match);
            assert_eq!(check("mnist", name, bytes), Verdict::Match);
            assert!(matches!(
                check("fashion_mnist", name, bytes),
                Verdict::Mismatch { .. }
            ));
        }
        let mut damaged = raw.clone();
        damaged[20] ^= 1;
        assert_eq!(identify("t10k-labels-idx1-ubyte", &damaged), None);
        assert!(matches!(
            check("mnist", "t10k-labels-idx1-ubyte", &damaged),
            Verdict::Mismatch { .. }
        ));
    }

    #[test]
    fn known_names_are_checked_and_others_are_not() {
        assert_eq!(check("mnist", "my-subset.gz", b"x"), Verdict::Unknown);
        assert!(matches!(
            check("mnist", "train-labels-idx1-ubyte", b"not the file"),
            Verdict::Mismatch { .. }
        ));
        // the SHA-256 of the empty string, a published constant
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
