//! `ahtsgd data fetch` and `download = true` against an HTTP server this test starts on
//! 127.0.0.1, serving the bundled MNIST subset's files (which the published sums accept as
//! MNIST): a good transfer, a wrong checksum, a connection dropped half-way, a 404, a failing
//! mirror before a working one, two fetches at once, and a recipe that downloads on first use.
//! Nothing here reaches the internet: every command is given a mirror on 127.0.0.1.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const FILES: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

/// How the server answers for one file.
#[derive(Clone)]
enum Behaviour {
    /// The bytes, honouring `Range: bytes=N-`.
    Serve(Vec<u8>),
    /// As `Serve`, but the first request that starts at byte 0 sends half and closes.
    DropOnce(Vec<u8>),
    /// Any request gets this status.
    Status(u16),
}

/// A request the server saw: (path, `Range` header).
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

struct Server {
    base: String,
    seen: Seen,
}

/// Serves `files` (by URL path) on an ephemeral port; each response waits `delay` first.
fn serve(files: HashMap<String, Behaviour>, delay: Duration) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let files = Arc::new(Mutex::new(files));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (files, log) = (files.clone(), log.clone());
            std::thread::spawn(move || {
                let _ = answer(stream, &files, &log, delay);
            });
        }
    });
    Server { base, seen }
}

fn answer(
    mut stream: TcpStream,
    files: &Mutex<HashMap<String, Behaviour>>,
    log: &Seen,
    delay: Duration,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("range")
        {
            range = Some(v.trim().to_string());
        }
    }
    log.lock().unwrap().push((path.clone(), range.clone()));
    std::thread::sleep(delay);
    let behaviour = files.lock().unwrap().get(&path).cloned();
    let status = |stream: &mut TcpStream, code: u16| {
        write!(
            stream,
            "HTTP/1.1 {code} Test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
    };
    let bytes = match behaviour {
        None => return status(&mut stream, 404),
        Some(Behaviour::Status(code)) => return status(&mut stream, code),
        Some(Behaviour::DropOnce(bytes)) if range.is_none() => {
            // half the file, then the connection closes under the declared length
            files
                .lock()
                .unwrap()
                .insert(path, Behaviour::Serve(bytes.clone()));
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                bytes.len()
            )?;
            stream.write_all(&bytes[..bytes.len() / 2])?;
            return stream.flush();
        }
        Some(Behaviour::Serve(b) | Behaviour::DropOnce(b)) => b,
    };
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    match start {
        Some(s) if s < bytes.len() => {
            write!(
                stream,
                "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {s}-{}/{}\r\nConnection: close\r\n\r\n",
                bytes.len() - s,
                bytes.len() - 1,
                bytes.len()
            )?;
            stream.write_all(&bytes[s..])
        }
        Some(_) => status(&mut stream, 416),
        None => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                bytes.len()
            )?;
            stream.write_all(&bytes)
        }
    }
}

fn mini(file: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("data/mnist-mini")
            .join(file),
    )
    .unwrap()
}

/// The four MNIST files under `prefix`, as `behave` says for each.
fn mnist_files(
    prefix: &str,
    behave: impl Fn(&str, Vec<u8>) -> Behaviour,
) -> HashMap<String, Behaviour> {
    FILES
        .iter()
        .map(|f| (format!("{prefix}/{f}"), behave(f, mini(f))))
        .collect()
}

/// Runs the binary in `dir` with `env`, and none of the fetch variables of the caller's
/// environment (which could point at a real network location).
fn run(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ahtsgd"))
        .args(args)
        .env_remove("AHTSGD_DATA_MIRRORS")
        .env("AHTSGD_CACHE", dir.join("no-cache-expected"))
        .envs(env.iter().copied())
        .current_dir(dir)
        .output()
        .expect("binary runs")
}

/// `ahtsgd data fetch KIND --to TO --mirror MIRROR`, run in `dir`.
fn fetch(kind: &str, to: &Path, mirror: &str, dir: &Path, env: &[(&str, &str)]) -> Output {
    let to = to.to_str().unwrap();
    run(
        &["data", "fetch", kind, "--to", to, "--mirror", mirror],
        dir,
        env,
    )
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn fetched_names() -> Vec<String> {
    let mut v: Vec<String> = FILES.iter().map(|f| f.to_string()).collect();
    v.push(".fetch.lock".into());
    v.sort();
    v
}

#[test]
fn a_good_transfer_is_verified_and_prints_the_recipe_line() {
    let server = serve(
        mnist_files("/m", |_, b| Behaviour::Serve(b)),
        Duration::ZERO,
    );
    let tmp = tempfile::tempdir().unwrap();
    let to = tmp.path().join("mnist");
    let mirror = format!("{}/m/", server.base);
    let o = fetch("mnist", &to, &mirror, tmp.path(), &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(listing(&to), fetched_names(), "no partial file left");
    for f in FILES {
        assert_eq!(std::fs::read(to.join(f)).unwrap(), mini(f), "{f}");
    }
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        stdout.trim(),
        format!("dataset mnist = mnist {{ path = \"{}\" }}", to.display())
    );
    // the subset the server holds is MNIST by its sums, and said to be the subset
    assert!(
        text(&o).contains("MNIST subset, not the full set"),
        "{}",
        text(&o)
    );
    // the recipe line it printed loads
    let o = run(&["data", "check", to.to_str().unwrap()], tmp.path(), &[]);
    assert!(o.status.success(), "{}", text(&o));
    // a second fetch finds the files and requests nothing
    let before = server.seen.lock().unwrap().len();
    let o = fetch("mnist", &to, &mirror, tmp.path(), &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("4 already there"), "{}", text(&o));
    assert_eq!(server.seen.lock().unwrap().len(), before);
}

#[test]
fn a_wrong_checksum_is_refused_and_nothing_is_left_behind() {
    let server = serve(
        mnist_files("", |f, mut b| {
            if f == "t10k-labels-idx1-ubyte.gz" {
                // the same length, one byte changed past the gzip header
                b[40] ^= 0x55;
            }
            Behaviour::Serve(b)
        }),
        Duration::ZERO,
    );
    let tmp = tempfile::tempdir().unwrap();
    let to = tmp.path().join("d");
    let o = fetch("mnist", &to, &server.base, tmp.path(), &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("SHA-256"), "{out}");
    assert!(
        out.contains(&format!("{}/t10k-labels-idx1-ubyte.gz", server.base)),
        "the URL is named: {out}"
    );
    let left = listing(&to);
    assert!(
        !left.iter().any(|n| n.starts_with("t10k-labels")),
        "{left:?}"
    );
    assert!(!left.iter().any(|n| n.ends_with(".part")), "{left:?}");
    // the files that matched stay, under their names
    assert!(
        left.contains(&"t10k-images-idx3-ubyte.gz".to_string()),
        "{left:?}"
    );
}

#[test]
fn a_connection_dropped_half_way_is_resumed_from_where_it_stopped() {
    let server = serve(
        mnist_files("", |f, b| {
            if f == "train-images-idx3-ubyte.gz" {
                Behaviour::DropOnce(b)
            } else {
                Behaviour::Serve(b)
            }
        }),
        Duration::ZERO,
    );
    let tmp = tempfile::tempdir().unwrap();
    let to = tmp.path().join("d");
    let o = fetch("mnist", &to, &server.base, tmp.path(), &[]);
    assert!(o.status.success(), "{}", text(&o));
    let full = mini("train-images-idx3-ubyte.gz");
    assert_eq!(
        std::fs::read(to.join("train-images-idx3-ubyte.gz")).unwrap(),
        full
    );
    let seen = server.seen.lock().unwrap().clone();
    let images: Vec<_> = seen
        .iter()
        .filter(|(p, _)| p == "/train-images-idx3-ubyte.gz")
        .collect();
    assert_eq!(images.len(), 2, "{seen:?}");
    assert_eq!(images[0].1, None);
    // the second request asks for the rest only: the half that arrived was kept
    assert_eq!(
        images[1].1.as_deref(),
        Some(format!("bytes={}-", full.len() / 2).as_str()),
        "{seen:?}"
    );
    assert!(text(&o).contains("resuming"), "{}", text(&o));
    assert_eq!(listing(&to), fetched_names());
}

#[test]
fn a_partial_download_left_by_an_earlier_fetch_is_resumed() {
    let server = serve(mnist_files("", |_, b| Behaviour::Serve(b)), Duration::ZERO);
    let tmp = tempfile::tempdir().unwrap();
    let to = tmp.path().join("d");
    std::fs::create_dir_all(&to).unwrap();
    let full = mini("train-images-idx3-ubyte.gz");
    std::fs::write(to.join(".train-images-idx3-ubyte.gz.part"), &full[..1000]).unwrap();
    let o = fetch("mnist", &to, &server.base, tmp.path(), &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read(to.join("train-images-idx3-ubyte.gz")).unwrap(),
        full
    );
    let seen = server.seen.lock().unwrap().clone();
    assert!(
        seen.contains(&(
            "/train-images-idx3-ubyte.gz".into(),
            Some("bytes=1000-".into())
        )),
        "{seen:?}"
    );
    assert!(text(&o).contains("resuming at byte 1000"), "{}", text(&o));
}

#[test]
fn a_404_names_the_url() {
    let server = serve(HashMap::new(), Duration::ZERO);
    let tmp = tempfile::tempdir().unwrap();
    let to = tmp.path().join("d");
    let mirror = format!("{}/missing/", server.base);
    let o = fetch("svhn", &to, &mirror, tmp.path(), &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stderr);
    assert!(
        out.contains(&format!(
            "{}/missing/train_32x32.mat: HTTP 404",
            server.base
        )),
        "{out}"
    );
    assert!(out.contains("--mirror"), "says what to do: {out}");
    assert!(
        !listing(&to).iter().any(|n| n.contains("32x32")),
        "{:?}",
        listing(&to)
    );
}

#[test]
fn a_failing_mirror_is_followed_by_the_next_one() {
    let mut files = mnist_files("/good", |_, b| Behaviour::Serve(b));
    for f in FILES {
        files.insert(format!("/bad/{f}"), Behaviour::Status(503));
    }
    let server = serve(files, Duration::ZERO);
    let tmp = tempfile::tempdir().unwrap();
    let to = tmp.path().join("d");
    // one mirror by flag, answering 503; the working one from the environment, after it
    let (bad, good) = (
        format!("{}/bad", server.base),
        format!("{}/good", server.base),
    );
    let o = fetch(
        "mnist",
        &to,
        &bad,
        tmp.path(),
        &[("AHTSGD_DATA_MIRRORS", &good)],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("HTTP 503"), "{}", text(&o));
    for f in FILES {
        assert_eq!(std::fs::read(to.join(f)).unwrap(), mini(f));
    }
    let seen = server.seen.lock().unwrap().clone();
    let order: Vec<&str> = seen
        .iter()
        .filter(|(p, _)| p.ends_with("/train-images-idx3-ubyte.gz"))
        .map(|(p, _)| p.as_str())
        .collect();
    assert_eq!(
        order,
        [
            "/bad/train-images-idx3-ubyte.gz",
            "/good/train-images-idx3-ubyte.gz"
        ]
    );
}

#[test]
fn two_fetches_into_one_folder_download_each_file_once() {
    // slow answers, so the two processes overlap
    let server = serve(
        mnist_files("", |_, b| Behaviour::Serve(b)),
        Duration::from_millis(150),
    );
    let tmp = tempfile::tempdir().unwrap();
    let to = tmp.path().join("d");
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_ahtsgd"))
            .args([
                "data",
                "fetch",
                "mnist",
                "--to",
                to.to_str().unwrap(),
                "--mirror",
            ])
            .arg(&server.base)
            .env_remove("AHTSGD_DATA_MIRRORS")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(
        a.status.success() && b.status.success(),
        "{}\n{}",
        text(&a),
        text(&b)
    );
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "each file once: {seen:?}");
    let both = format!("{}{}", text(&a), text(&b));
    assert!(both.contains("waiting for another fetch"), "{both}");
    assert!(both.contains("4 already there"), "{both}");
    assert_eq!(listing(&to), fetched_names());
}

const RECIPE: &str =
    "dataset digits = mnist { download = true, train_limit = 256, test_limit = 128 }
model net = mlp { hidden = [16] }
optimizer plain = sgd { lr = 0.05 }
experiment e {
  data = digits
  model = net
  optimizer = plain
  epochs = 1
  batch = 64
}
";

#[test]
fn download_true_fetches_into_the_cache_on_first_run_and_check_never_does() {
    let server = serve(
        mnist_files("/mnist", |_, b| Behaviour::Serve(b)),
        Duration::ZERO,
    );
    let tmp = tempfile::tempdir().unwrap();
    common::write(tmp.path(), "dl.aht", RECIPE);
    let cache: PathBuf = tmp.path().join("cache");
    let mirror = format!("{}/{{dataset}}", server.base);
    let env = [
        ("AHTSGD_CACHE", cache.to_str().unwrap()),
        ("AHTSGD_DATA_MIRRORS", mirror.as_str()),
    ];
    let o = run(&["check", "dl.aht"], tmp.path(), &env);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!cache.exists(), "check fetched nothing");
    assert!(server.seen.lock().unwrap().is_empty());
    // a launch refuses until the files are here, naming the command that fetches them
    let o = run(
        &["launch", "slurm", "dl.aht", "--out", "shared-runs"],
        tmp.path(),
        &env,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let dir = cache.join("mnist");
    assert!(
        text(&o).contains(&format!("ahtsgd data fetch mnist --to {}", dir.display())),
        "{}",
        text(&o)
    );
    let o = run(&["run", "dl.aht", "--quiet"], tmp.path(), &env);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("download = true"), "{}", text(&o));
    for f in FILES {
        assert_eq!(std::fs::read(dir.join(f)).unwrap(), mini(f));
    }
    let summary = common::read(tmp.path().join("runs/dl/e/trial-0000/summary.json"));
    assert!(summary.contains("\"completed\""), "{summary}");
    // the record keeps the recipe as written: no machine's cache path in it
    let resolved = common::read(tmp.path().join("runs/dl/e/trial-0000/resolved.aht"));
    assert!(resolved.contains("download = true"), "{resolved}");
    assert!(!resolved.contains(cache.to_str().unwrap()), "{resolved}");
    let o = run(
        &["launch", "slurm", "dl.aht", "--out", "shared-runs"],
        tmp.path(),
        &env,
    );
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn a_dataset_without_a_path_needs_download() {
    let tmp = tempfile::tempdir().unwrap();
    common::write(
        tmp.path(),
        "p.aht",
        &RECIPE.replace("download = true, ", ""),
    );
    let o = run(&["check", "p.aht"], tmp.path(), &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("needs `path`"), "{}", text(&o));
    assert!(
        text(&o).contains("download = true"),
        "the help says so: {}",
        text(&o)
    );
}
