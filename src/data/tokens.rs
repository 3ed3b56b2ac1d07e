//! Token datasets: the algorithmic tasks of the grokking literature (`a op b =` and the answer,
//! modulo a prime) and byte-level language modelling on any file.
//!
//! The sequences are token ids; a model reads them through an embedding. Recipes reach them
//! as the dataset kinds `modular` and `text`.

use super::DataError;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::path::Path;

/// What the loss of a token dataset is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Targets {
    /// One target per sequence: the answer of a modular task.
    Answer,
    /// A target at every position: the next byte of a text.
    EveryPosition,
}

/// Token sequences in memory, `context` tokens each, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenData {
    pub name: String,
    /// Token ids are below this.
    pub vocab: usize,
    /// Tokens per sequence.
    pub context: usize,
    pub targets: Targets,
    pub train_x: Vec<u32>,
    /// One target per sequence ([`Targets::Answer`]) or `context` ([`Targets::EveryPosition`]).
    pub train_y: Vec<u32>,
    pub test_x: Vec<u32>,
    pub test_y: Vec<u32>,
}

impl TokenData {
    /// As a [`super::Dataset`] whose samples are the token ids (as floats, exact below 2^24)
    /// and whose classes are the vocabulary, with a label per sequence or per position.
    pub fn into_dataset(self) -> super::Dataset {
        let floats = |v: Vec<u32>| v.into_iter().map(|t| t as f32).collect();
        super::Dataset {
            name: self.name,
            sample_shape: vec![self.context],
            classes: self.vocab,
            labels_per_sample: match self.targets {
                Targets::Answer => 1,
                Targets::EveryPosition => self.context,
            },
            train_x: floats(self.train_x),
            train_y: self.train_y,
            test_x: floats(self.test_x),
            test_y: self.test_y,
            warnings: Vec::new(),
        }
    }

    /// Training sequences.
    pub fn train_len(&self) -> usize {
        self.train_x.len() / self.context
    }

    /// Test sequences.
    pub fn test_len(&self) -> usize {
        self.test_x.len() / self.context
    }
}

/// The operation of a modular task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Add,
    Sub,
    Mul,
    /// a · b⁻¹ mod p, for b ≠ 0.
    Div,
}

impl Operation {
    /// `a op b` modulo the prime `p`; `None` where it is undefined (division by 0).
    pub fn apply(self, a: u64, b: u64, p: u64) -> Option<u64> {
        Some(match self {
            Operation::Add => (a + b) % p,
            Operation::Sub => (a + p - b) % p,
            Operation::Mul => a * b % p,
            Operation::Div if b == 0 => return None,
            // Fermat: b^(p-2) is b's inverse modulo a prime
            Operation::Div => a * power(b, p - 2, p) % p,
        })
    }

    /// The name a recipe gives it.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Add => "add",
            Operation::Sub => "sub",
            Operation::Mul => "mul",
            Operation::Div => "div",
        }
    }
}

fn power(mut base: u64, mut exponent: u64, p: u64) -> u64 {
    let mut out = 1;
    base %= p;
    while exponent > 0 {
        if exponent & 1 == 1 {
            out = out * base % p;
        }
        base = base * base % p;
        exponent >>= 1;
    }
    out
}

fn is_prime(p: u64) -> bool {
    p >= 2
        && (2..)
            .take_while(|d| d * d <= p)
            .all(|d| !p.is_multiple_of(d))
}

/// The largest modulus: p² examples are made in memory.
pub const MAX_MODULUS: u64 = 4093;

/// Every `a op b` modulo `p` (b ≠ 0 for division), as the sequences `a op b =` with the
/// answer as target: numbers are tokens `0..p`, `op` is token `p` and `=` token `p + 1`, so
/// the vocabulary is `p + 2`. A fraction `train_fraction` of the examples, drawn from `seed`,
/// is the training set and the rest the test set.
pub fn modular(
    p: u64,
    op: Operation,
    train_fraction: f64,
    seed: u64,
) -> Result<TokenData, DataError> {
    let bad = |problem: String| Err(DataError::Unsupported(problem));
    if !is_prime(p) || p > MAX_MODULUS {
        return bad(format!(
            "modular: p = {p} must be a prime from 2 to {MAX_MODULUS} (the tasks are arithmetic modulo a prime: try 97)"
        ));
    }
    let mut pairs: Vec<(u64, u64, u64)> = (0..p)
        .flat_map(|a| (0..p).filter_map(move |b| op.apply(a, b, p).map(|c| (a, b, c))))
        .collect();
    let n = pairs.len();
    let train = (train_fraction * n as f64).round() as usize;
    if !(train_fraction > 0.0 && train_fraction < 1.0) || train == 0 || train == n {
        return bad(format!(
            "modular: train_fraction = {train_fraction} leaves no {} examples of {n}: choose a fraction between 0 and 1 (0.3 to 0.5 is usual for grokking)",
            if train == 0 { "training" } else { "test" }
        ));
    }
    pairs.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x006d_6f64_756c_6172));
    let (op_token, equals) = (p as u32, p as u32 + 1);
    let encode = |part: &[(u64, u64, u64)]| {
        let x = part
            .iter()
            .flat_map(|&(a, b, _)| [a as u32, op_token, b as u32, equals])
            .collect();
        let y = part.iter().map(|&(_, _, c)| c as u32).collect();
        (x, y)
    };
    let (train_x, train_y) = encode(&pairs[..train]);
    let (test_x, test_y) = encode(&pairs[train..]);
    Ok(TokenData {
        name: format!("modular {} mod {p}", op.name()),
        vocab: p as usize + 2,
        context: 4,
        targets: Targets::Answer,
        train_x,
        train_y,
        test_x,
        test_y,
    })
}

/// Windows of `context` bytes every `stride` bytes, each with the next byte at every position
/// as its targets (vocabulary 256). The last `validation` fraction of the bytes is held out and
/// windowed apart, so no held-out byte is ever an input or a target in training. `file` names
/// the text in errors.
pub fn text(
    bytes: &[u8],
    file: &str,
    context: usize,
    stride: usize,
    validation: f64,
) -> Result<TokenData, DataError> {
    if context == 0 || stride == 0 {
        return Err(DataError::format(
            file,
            "context and stride must be at least 1",
        ));
    }
    let need = context + 1;
    if bytes.len() < need {
        let what = if bytes.is_empty() {
            "is empty".to_string()
        } else {
            format!("has {} bytes", bytes.len())
        };
        return Err(DataError::format(
            file,
            format!(
                "the text {what}: one window needs context + 1 = {need} bytes; lower `context` or use a longer file"
            ),
        ));
    }
    let held = (validation * bytes.len() as f64).round() as usize;
    let split = bytes.len() - held;
    let (train, test) = bytes.split_at(split);
    for (part, which) in [(train, "training"), (test, "held-out")] {
        if part.len() < need && !(which == "held-out" && part.is_empty()) {
            return Err(DataError::format(
                file,
                format!(
                    "validation = {validation} leaves {} bytes for the {which} windows, fewer than context + 1 = {need}: lower `context` or change `validation`",
                    part.len()
                ),
            ));
        }
    }
    let windows = |part: &[u8]| {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        let mut start = 0;
        while start + need <= part.len() {
            x.extend(part[start..start + context].iter().map(|&b| b as u32));
            y.extend(part[start + 1..start + need].iter().map(|&b| b as u32));
            start += stride;
        }
        (x, y)
    };
    let (train_x, train_y) = windows(train);
    let (test_x, test_y) = windows(test);
    Ok(TokenData {
        name: format!("text {file}"),
        vocab: 256,
        context,
        targets: Targets::EveryPosition,
        train_x,
        train_y,
        test_x,
        test_y,
    })
}

/// The text shipped with the binary: Shakespeare's sonnets (`data/text/NOTICE`).
pub const BUNDLED_TEXT: &[u8] = include_bytes!("../../data/text/sonnets.txt");

/// [`text`] on [`BUNDLED_TEXT`], the default when a recipe names no file.
pub fn bundled_text(
    context: usize,
    stride: usize,
    validation: f64,
) -> Result<TokenData, DataError> {
    text(
        BUNDLED_TEXT,
        "the bundled sonnets",
        context,
        stride,
        validation,
    )
}

/// [`text`] on a file.
pub fn read_text(
    path: &Path,
    context: usize,
    stride: usize,
    validation: f64,
) -> Result<TokenData, DataError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        file: file.clone(),
        source,
    })?;
    text(&bytes, &file, context, stride, validation)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The examples of `d`, both splits, as (a, op, b, =, answer).
    fn examples(d: &TokenData) -> Vec<[u32; 5]> {
        let rows = |x: &[u32], y: &[u32]| {
            x.chunks(4)
                .zip(y)
                .map(|(s, &c)| [s[0], s[1], s[2], s[3], c])
                .collect::<Vec<_>>()
        };
        let mut all = rows(&d.train_x, &d.train_y);
        all.extend(rows(&d.test_x, &d.test_y));
        all
    }

    #[test]
    fn modular_tasks_hold_every_pair_once_with_the_right_answer() {
        // answers by hand modulo 5: 3 + 4 = 2, 1 - 3 = 3, 3 · 4 = 2, 3 / 4 = 3 · 4 = 2 (4 · 4 = 16 = 1)
        for (op, a, b, c) in [
            (Operation::Add, 3, 4, 2),
            (Operation::Sub, 1, 3, 3),
            (Operation::Mul, 3, 4, 2),
            (Operation::Div, 3, 4, 2),
        ] {
            let d = modular(5, op, 0.4, 1).unwrap();
            assert_eq!(d.vocab, 7);
            let all = examples(&d);
            let pairs = if op == Operation::Div { 20 } else { 25 };
            assert_eq!(all.len(), pairs, "{op:?}");
            assert_eq!(d.train_len(), (0.4 * pairs as f64).round() as usize);
            let mut seen: Vec<(u32, u32)> = all.iter().map(|e| (e[0], e[2])).collect();
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), pairs, "a pair twice");
            assert!(all.iter().all(|e| e[1] == 5 && e[3] == 6));
            assert!(all.contains(&[a, 5, b, 6, c]), "{op:?}");
        }
        // division is the inverse of multiplication, for every pair modulo 97
        let d = modular(97, Operation::Div, 0.5, 0).unwrap();
        for e in examples(&d) {
            assert_eq!((e[4] as u64 * e[2] as u64) % 97, e[0] as u64);
        }
    }

    #[test]
    fn the_split_follows_the_seed() {
        let a = modular(97, Operation::Add, 0.4, 7).unwrap();
        assert_eq!(a, modular(97, Operation::Add, 0.4, 7).unwrap());
        let b = modular(97, Operation::Add, 0.4, 8).unwrap();
        assert_ne!(a.train_x, b.train_x);
        assert_eq!(a.train_len(), b.train_len());
        assert_eq!(a.train_len() + a.test_len(), 97 * 97);
    }

    #[test]
    fn bad_modular_settings_say_what_to_choose() {
        for (p, fraction, says) in [
            (9, 0.4, "prime"),
            (1, 0.4, "prime"),
            (4099, 0.4, "prime from 2 to 4093"),
            (5, 0.0, "no training"),
            (5, 1.0, "no test"),
            (5, 0.01, "no training"),
        ] {
            let e = modular(p, Operation::Add, fraction, 0)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "p = {p}, {fraction}: {e}");
        }
    }

    #[test]
    fn text_windows_predict_the_next_byte() {
        let d = text(b"hello world!", "t.txt", 4, 4, 0.0).unwrap();
        assert_eq!(d.vocab, 256);
        // windows start at 0 and 4 (8 + 5 > 12)
        let s = |v: &[u32]| v.iter().map(|&b| b as u8 as char).collect::<String>();
        assert_eq!(s(&d.train_x), "hello wo");
        assert_eq!(s(&d.train_y), "ello wor");
        assert_eq!(d.test_len(), 0);
        let overlapping = text(b"abcdefgh", "t.txt", 3, 1, 0.0).unwrap();
        assert_eq!(overlapping.train_len(), 5);
        assert_eq!(s(&overlapping.train_x[3..6]), "bcd");
    }

    #[test]
    fn held_out_bytes_never_reach_training() {
        let bytes: Vec<u8> = (0..200u32).map(|i| (i % 251) as u8).collect();
        let d = text(&bytes, "t.txt", 8, 3, 0.25).unwrap();
        // the last 50 bytes (150..200) are held out
        assert!(d.train_x.iter().chain(&d.train_y).all(|&b| b < 150));
        assert!(d.test_x.iter().chain(&d.test_y).all(|&b| b >= 150));
        assert_eq!(d.test_len(), (50 - 9) / 3 + 1);
        assert_eq!(d.train_len(), (150 - 9) / 3 + 1);
    }

    /// The bundled sonnets as the default settings read them: 128-byte windows every
    /// 128 bytes, a tenth held out.
    #[test]
    fn the_bundled_text_makes_windows() {
        assert_eq!(BUNDLED_TEXT.len(), 99_650);
        assert!(BUNDLED_TEXT.starts_with(b"THE SONNETS") && BUNDLED_TEXT.is_ascii());
        let d = bundled_text(128, 128, 0.1).unwrap();
        let held = (0.1f64 * 99_650.0).round() as usize;
        assert_eq!(d.train_len(), (99_650 - held - 129) / 128 + 1);
        assert_eq!(d.test_len(), (held - 129) / 128 + 1);
        assert_eq!(d.train_y.len(), d.train_x.len());
    }

    #[test]
    fn short_and_empty_texts_are_located_errors() {
        let e = text(b"", "corpus.txt", 128, 128, 0.1)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("corpus.txt: ") && e.contains("is empty"),
            "{e}"
        );
        let e = text(b"abc", "corpus.txt", 128, 128, 0.1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("has 3 bytes") && e.contains("129"), "{e}");
        let e = text(&[b'x'; 200], "corpus.txt", 128, 128, 0.1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("leaves 20 bytes for the held-out windows"),
            "{e}"
        );
        let missing = std::path::Path::new("/nonexistent/corpus.txt");
        let e = read_text(missing, 8, 8, 0.1).unwrap_err().to_string();
        assert!(e.starts_with("/nonexistent/corpus.txt: "), "{e}");
    }
}
