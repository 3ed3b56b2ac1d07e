//! The published SHA-256 sums of the official dataset files, checked when those files are read.

use sha2::{Digest, Sha256};

/// (file name, sha256). Sums of the `.gz` downloads and of the uncompressed files are both
/// listed; a file matches by its own name.
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
        "mnist",
        "train-images-idx3-ubyte.gz",
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    ),
    (
        "mnist",
        "train-labels-idx1-ubyte.gz",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    ),
    (
        "mnist",
        "t10k-images-idx3-ubyte.gz",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    ),
    (
        "mnist",
        "t10k-labels-idx1-ubyte.gz",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
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

/// Checks `bytes` against the published sum for a file of this name in `dataset`.
pub fn check(dataset: &str, file_name: &str, bytes: &[u8]) -> Verdict {
    match PUBLISHED
        .iter()
        .find(|(d, n, _)| *d == dataset && *n == file_name)
    {
        None => Verdict::Unknown,
        Some((_, _, sum)) => {
            let actual = sha256_hex(bytes);
            if actual == *sum {
                Verdict::Match
            } else {
                Verdict::Mismatch {
                    expected: sum,
                    actual,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
