//! Downloading the official dataset files: from mirrors or the canonical locations, resumed
//! where a transfer broke, verified against the published sums before they take their final
//! names, with the target folder locked against a second fetch. Reports progress through a
//! callback; it never prints.

use super::verify::{self, Verdict};
use crate::fsutil::lock_exclusive;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A dataset that can be downloaded: its files and where they are published.
#[derive(Clone, Copy, Debug)]
pub struct Remote {
    /// The dataset kind, as recipes name it.
    pub kind: &'static str,
    /// The files fetched, under their official names.
    pub files: &'static [&'static str],
    /// Where they are published, tried in order: each file's URL is the base followed by its
    /// name. Not exercised by the tests, which reach no network.
    pub canonical: &'static [&'static str],
}

const IDX_FILES: &[&str] = &[
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

/// The datasets `data fetch` and `download = true` know.
pub const REMOTES: &[Remote] = &[
    Remote {
        kind: "mnist",
        files: IDX_FILES,
        // the original site now refuses anonymous downloads; the copy PyTorch's loaders use
        // comes first
        canonical: &[
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://yann.lecun.com/exdb/mnist/",
        ],
    },
    Remote {
        kind: "fashion_mnist",
        files: IDX_FILES,
        canonical: &["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
    },
    Remote {
        kind: "cifar10",
        files: &["cifar-10-binary.tar.gz"],
        canonical: &["https://www.cs.toronto.edu/~kriz/"],
    },
    Remote {
        kind: "svhn",
        files: &["train_32x32.mat", "test_32x32.mat"],
        canonical: &["http://ufldl.stanford.edu/housenumbers/"],
    },
];

/// The environment variable holding mirrors (separated by spaces or commas), tried after
/// `--mirror` flags; where any mirror is given, the canonical locations are not tried.
pub const MIRRORS_VAR: &str = "AHTSGD_DATA_MIRRORS";

/// The environment variable naming the cache folder that `download = true` datasets without
/// a `path` use.
pub const CACHE_VAR: &str = "AHTSGD_CACHE";

/// The downloadable dataset of this kind.
pub fn remote(kind: &str) -> Option<&'static Remote> {
    REMOTES.iter().find(|r| r.kind == kind)
}

/// The user's cache folder for datasets: `$AHTSGD_CACHE`, else `$XDG_CACHE_HOME/ahtsgd`, else
/// `~/Library/Caches/ahtsgd` on macOS and `~/.cache/ahtsgd` elsewhere.
pub fn cache_root() -> PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var(CACHE_VAR) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("ahtsgd");
    }
    let home = var("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    if cfg!(target_os = "macos") {
        home.join("Library/Caches/ahtsgd")
    } else {
        home.join(".cache/ahtsgd")
    }
}

/// Where a dataset of this kind goes when no folder is named: `<cache>/<kind>`.
pub fn default_dir(kind: &str) -> PathBuf {
    cache_root().join(kind)
}

/// The mirrors in [`MIRRORS_VAR`], in order.
pub fn mirrors_from_env() -> Vec<String> {
    std::env::var(MIRRORS_VAR)
        .unwrap_or_default()
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The URL of `file` under `base`: `{dataset}` in the base is replaced by the kind, so one
/// mirror can hold several datasets whose files share names (MNIST's and Fashion-MNIST's).
pub fn file_url(base: &str, kind: &str, file: &str) -> String {
    let base = base.replace("{dataset}", kind);
    if base.ends_with('/') {
        format!("{base}{file}")
    } else {
        format!("{base}/{file}")
    }
}

/// The file under `dir` that stands for `file` once fetched: the file itself, or for a
/// gzipped IDX file its decompressed form, which the reader takes as well.
fn present(dir: &Path, file: &str) -> Option<PathBuf> {
    let p = dir.join(file);
    if p.is_file() {
        return Some(p);
    }
    let raw = dir.join(file.strip_suffix(".gz")?);
    raw.is_file().then_some(raw)
}

/// The files of `remote` not yet in `dir` (by name; their sums are checked when read).
pub fn missing(remote: &Remote, dir: &Path) -> Vec<&'static str> {
    if remote.kind == "cifar10" && super::cifar::has_batches(dir) {
        return Vec::new();
    }
    remote
        .files
        .iter()
        .copied()
        .filter(|f| present(dir, f).is_none())
        .collect()
}

/// What a fetch is doing, for a progress display.
#[derive(Clone, Debug)]
pub enum Progress<'a> {
    /// Another process holds the folder's lock; this one waits for it.
    Waiting { lock: &'a Path },
    /// The file was already there and matches its sum.
    Present { file: &'a str },
    /// A transfer began, at `offset` bytes when resuming a partial download, of `total` bytes
    /// when the server said.
    Started {
        file: &'a str,
        url: &'a str,
        offset: u64,
        total: Option<u64>,
    },
    /// `done` bytes of the file are on disk.
    Advanced { file: &'a str, done: u64 },
    /// A source failed for this file (the next attempt follows).
    Failed {
        file: &'a str,
        url: &'a str,
        reason: &'a str,
    },
    /// The file matched its published sum and took its final name.
    Verified { file: &'a str },
}

/// One file a fetch left in the folder.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub file: String,
    pub path: PathBuf,
    /// It was downloaded now (not found already there).
    pub downloaded: bool,
    /// What the sum says the file is where it is not the full official file (the bundled
    /// MNIST subset served as MNIST, say).
    pub note: Option<String>,
}

/// Why a fetch did not complete. Nothing unverified is left under a final name.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("`{0}` is not a dataset that can be downloaded (mnist, fashion_mnist, cifar10, svhn)")]
    UnknownKind(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{file}: every source failed:{}", tried.iter().map(|(u, r)| format!("\n  {u}: {r}")).collect::<String>())]
    AllFailed {
        file: String,
        /// (URL, what went wrong), in the order tried.
        tried: Vec<(String, String)>,
    },
    #[error(
        "{path} is there but its SHA-256 {actual} is not the published {expected}; it was left as it is: move it away to download the official file"
    )]
    PresentMismatch {
        path: String,
        expected: String,
        actual: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// How many times a transfer that broke after making progress is resumed from one source
/// before the next is tried.
const RESUMES: usize = 5;

/// Downloads the files of `kind` missing from `dir` (created if needed) from `sources` (base
/// URLs, tried in order for each file), verifying each against its published sum. Files
/// already there are checked, never replaced.
pub fn fetch(
    kind: &str,
    dir: &Path,
    sources: &[String],
    on: &mut dyn FnMut(Progress),
) -> Result<Vec<Fetched>, FetchError> {
    let remote = remote(kind).ok_or_else(|| FetchError::UnknownKind(kind.to_string()))?;
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let _lock = FolderLock::acquire(dir, on)?;
    let agent = agent();
    let mut out = Vec::new();
    for &file in remote.files {
        if let Some(path) = present(dir, file) {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            match verify::check_file(kind, &name, &path).map_err(io_error(&path))? {
                Verdict::Mismatch { expected, actual } => {
                    return Err(FetchError::PresentMismatch {
                        path: path.display().to_string(),
                        expected: expected.to_string(),
                        actual,
                    });
                }
                Verdict::Match | Verdict::Unknown => {}
            }
            on(Progress::Present { file });
            let note = subset_note(kind, &name, &path);
            out.push(Fetched {
                file: file.to_string(),
                path,
                downloaded: false,
                note,
            });
            continue;
        }
        let path = download(&agent, kind, file, dir, sources, on)?;
        on(Progress::Verified { file });
        out.push(Fetched {
            file: file.to_string(),
            note: subset_note(kind, file, &path),
            path,
            downloaded: true,
        });
    }
    Ok(out)
}

/// A note when an MNIST file is the bundled subset's (which the reader accepts as MNIST).
fn subset_note(kind: &str, name: &str, path: &Path) -> Option<String> {
    (kind == "mnist" && verify::identify_file(name, path).ok()? == Some("mnist_mini")).then(|| {
        "these are the files of the 5,000/1,000-image MNIST subset, not the full set".to_string()
    })
}

fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            // a stalled connection ends the attempt (and is resumed) instead of hanging
            .timeout_per_read(Some(Duration::from_secs(60)))
            .user_agent(concat!("ahtsgd/", env!("CARGO_PKG_VERSION")))
            .build(),
    )
}

/// The partial download of `file` in `dir`: hidden, and never mistaken for the file.
fn part_path(dir: &Path, file: &str) -> PathBuf {
    dir.join(format!(".{file}.part"))
}

/// Downloads `file` into `dir` through its partial file, trying `sources` in order, and gives
/// it its final name once its sum matches.
fn download(
    agent: &ureq::Agent,
    kind: &str,
    file: &str,
    dir: &Path,
    sources: &[String],
    on: &mut dyn FnMut(Progress),
) -> Result<PathBuf, FetchError> {
    let part = part_path(dir, file);
    let dest = dir.join(file);
    let mut tried = Vec::new();
    for base in sources {
        let url = file_url(base, kind, file);
        let mut resumes = 0;
        let outcome = loop {
            match transfer(agent, &url, file, &part, on) {
                Ok(()) => break Ok(()),
                Err(Attempt::Local(e)) => return Err(e),
                Err(Attempt::Broken { reason, progressed }) if progressed && resumes < RESUMES => {
                    resumes += 1;
                    on(Progress::Failed {
                        file,
                        url: &url,
                        reason: &format!("{reason}; resuming"),
                    });
                }
                Err(Attempt::Broken { reason, .. }) | Err(Attempt::Refused(reason)) => {
                    break Err(reason);
                }
            }
        };
        if let Err(reason) = outcome {
            on(Progress::Failed {
                file,
                url: &url,
                reason: &reason,
            });
            tried.push((url, reason));
            continue;
        }
        match verify::check_file(kind, file, &part).map_err(io_error(&part))? {
            Verdict::Mismatch { expected, actual } => {
                let _ = std::fs::remove_file(&part);
                let reason = format!(
                    "SHA-256 {actual} differs from the published {expected}: refused and removed"
                );
                on(Progress::Failed {
                    file,
                    url: &url,
                    reason: &reason,
                });
                tried.push((url, reason));
            }
            Verdict::Match | Verdict::Unknown => {
                std::fs::rename(&part, &dest).map_err(io_error(&dest))?;
                sync_dir(dir);
                return Ok(dest);
            }
        }
    }
    if tried.is_empty() {
        tried.push(("(no source)".into(), "no mirror or location to try".into()));
    }
    Err(FetchError::AllFailed {
        file: file.to_string(),
        tried,
    })
}

/// Why one request did not bring the whole file.
enum Attempt {
    /// The server refused (an HTTP error status, a host that does not answer): try the next
    /// source.
    Refused(String),
    /// The transfer stopped part-way; `progressed`: bytes were added first, so resuming may
    /// finish it.
    Broken { reason: String, progressed: bool },
    /// A local file could not be written: no source will help.
    Local(FetchError),
}

/// One request for `url`, appending to the partial file `part` from its current length.
fn transfer(
    agent: &ureq::Agent,
    url: &str,
    file: &str,
    part: &Path,
    on: &mut dyn FnMut(Progress),
) -> Result<(), Attempt> {
    let offset = std::fs::metadata(part).map_or(0, |m| m.len());
    let mut request = agent.get(url);
    if offset > 0 {
        request = request.header("Range", format!("bytes={offset}-"));
    }
    let mut response = match request.call() {
        Ok(r) => r,
        Err(ureq::Error::StatusCode(416)) if offset > 0 => {
            // the partial file is not a prefix of this one: start it again
            let _ = std::fs::remove_file(part);
            return Err(Attempt::Broken {
                reason: "the partial download does not fit this file (HTTP 416)".into(),
                progressed: true,
            });
        }
        Err(ureq::Error::StatusCode(code)) => {
            let reason = ureq::http::StatusCode::from_u16(code)
                .ok()
                .and_then(|c| c.canonical_reason())
                .unwrap_or_default();
            return Err(Attempt::Refused(format!("HTTP {code} {reason}")));
        }
        Err(e) => return Err(Attempt::Refused(e.to_string())),
    };
    let resumed = response.status().as_u16() == 206
        && response
            .headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("bytes "))
            .and_then(|v| v.split('-').next())
            .and_then(|v| v.trim().parse::<u64>().ok())
            == Some(offset);
    let start = if resumed { offset } else { 0 };
    let length = response.body().content_length();
    let total = length.map(|n| n + start);
    let local = |e| Attempt::Local(io_error(part)(e));
    let mut out = OpenOptions::new()
        .create(true)
        .write(true)
        .append(resumed)
        .truncate(!resumed)
        .open(part)
        .map_err(local)?;
    on(Progress::Started {
        file,
        url,
        offset: start,
        total,
    });
    let mut body = response.body_mut().as_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut done = start;
    let broken = |reason: String, done: u64| Attempt::Broken {
        reason,
        progressed: done > start,
    };
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                out.flush().map_err(local)?;
                return Err(broken(
                    format!("the transfer broke at byte {done}: {e}"),
                    done,
                ));
            }
        };
        out.write_all(&buf[..n]).map_err(local)?;
        done += n as u64;
        on(Progress::Advanced { file, done });
    }
    out.sync_all().map_err(local)?;
    match total {
        Some(t) if done < t => Err(broken(
            format!("the connection closed at byte {done} of {t}"),
            done,
        )),
        _ => Ok(()),
    }
}

/// Makes a rename durable (best effort: not every file system lets a folder be synced).
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// An exclusive `flock` on the folder's `.fetch.lock`, held for the whole fetch: a second
/// fetch into the same folder waits, then finds the files there. The kernel releases it when
/// the process dies, however it dies.
struct FolderLock {
    _file: File,
}

impl FolderLock {
    fn acquire(dir: &Path, on: &mut dyn FnMut(Progress)) -> Result<FolderLock, FetchError> {
        let path = dir.join(".fetch.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error(&path))?;
        if !lock_exclusive(&file, false).map_err(io_error(&path))? {
            on(Progress::Waiting { lock: &path });
            lock_exclusive(&file, true).map_err(io_error(&path))?;
        }
        Ok(FolderLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_join_bases_with_and_without_a_slash_and_name_the_dataset() {
        assert_eq!(file_url("http://h/m", "mnist", "a.gz"), "http://h/m/a.gz");
        assert_eq!(file_url("http://h/m/", "mnist", "a.gz"), "http://h/m/a.gz");
        assert_eq!(
            file_url("http://h/{dataset}", "fashion_mnist", "a.gz"),
            "http://h/fashion_mnist/a.gz"
        );
    }

    #[test]
    fn every_remote_file_has_a_published_sum() {
        for r in REMOTES {
            for f in r.files {
                // IDX files are summed by content, under the name without `.gz`
                let name = f
                    .strip_suffix("-ubyte.gz")
                    .map_or(f.to_string(), |s| format!("{s}-ubyte"));
                assert!(
                    verify::PUBLISHED
                        .iter()
                        .any(|(k, n, _)| *k == r.kind && *n == name.as_str()),
                    "{} {f}",
                    r.kind
                );
            }
        }
    }

    #[test]
    fn a_file_counts_as_present_raw_or_compressed() {
        let tmp = tempfile::tempdir().unwrap();
        let mnist = remote("mnist").unwrap();
        assert_eq!(missing(mnist, tmp.path()).len(), 4);
        std::fs::write(tmp.path().join("train-images-idx3-ubyte"), b"x").unwrap();
        std::fs::write(tmp.path().join("t10k-images-idx3-ubyte.gz"), b"x").unwrap();
        // a partial download is not the file
        std::fs::write(tmp.path().join(".train-labels-idx1-ubyte.gz.part"), b"x").unwrap();
        assert_eq!(
            missing(mnist, tmp.path()),
            ["train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
        );
    }
}
