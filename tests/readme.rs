//! Every command the README shows runs and exits 0: a newcomer copies them as they are.
//!
//! The commands run through `sh` in a copy of the repository's `recipes/` and `data/` (so the
//! runs they make do not land in the checkout), with `ahtsgd` on `PATH` being the binary under
//! test. The README's placeholders are given values: `recipe.aht` is `recipes/quickstart.aht` and
//! `/shared/runs` a folder of the test's. `cargo run --release -- ARGS` is `ahtsgd ARGS`;
//! `cargo test` is the command running this test; `cargo install` is run by `.ci/run`, and with
//! `CI` set this test checks that the `ahtsgd` it put on `PATH` was installed after the last
//! change to the sources. `ahtsgd data fetch` reaches no network here: the commands run with
//! `AHTSGD_DATA_MIRRORS` pointing at a server this test starts on 127.0.0.1, which serves the
//! bundled MNIST subset's files.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Serves the files of `dir` under `/mnist/` on an ephemeral port of 127.0.0.1 (404 for
/// anything else); returns the mirror URL for `AHTSGD_DATA_MIRRORS`.
fn mirror(dir: PathBuf) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/{{dataset}}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut line = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let _ = reader.read_line(&mut line);
            while let Ok(n) = reader.read_line(&mut String::new()) {
                if n <= 2 {
                    break;
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/");
            let file = path
                .strip_prefix("/mnist/")
                .filter(|f| !f.contains('/'))
                .and_then(|f| std::fs::read(dir.join(f)).ok());
            let _ = match file {
                Some(bytes) => write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    bytes.len()
                )
                .and_then(|()| stream.write_all(&bytes)),
                None => write!(
                    stream,
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                ),
            };
        }
    });
    base
}

/// The shell commands of the README's code blocks (indented or fenced), in order.
fn readme_commands() -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let mut fenced = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        let code = if fenced {
            line
        } else if let Some(rest) = line.strip_prefix("    ") {
            rest
        } else {
            continue;
        };
        let code = code.trim();
        if code.starts_with("ahtsgd ") || code.starts_with("cargo ") {
            out.push(code.to_string());
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The latest modification time of what the binary is built from.
fn newest_source(root: &Path) -> std::time::SystemTime {
    fn walk(p: &Path, newest: &mut std::time::SystemTime) {
        let meta = std::fs::metadata(p).unwrap();
        if meta.is_dir() {
            for e in std::fs::read_dir(p).unwrap() {
                walk(&e.unwrap().path(), newest);
            }
        } else {
            *newest = (*newest).max(meta.modified().unwrap());
        }
    }
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    for part in [
        "src",
        "grammar",
        "assets",
        "build.rs",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        if root.join(part).exists() {
            walk(&root.join(part), &mut newest);
        }
    }
    newest
}

#[test]
fn every_readme_command_exits_zero() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let commands = readme_commands();
    assert!(
        commands.iter().filter(|c| c.starts_with("ahtsgd ")).count() >= 10,
        "the README's commands were not found: {commands:?}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("repo");
    copy_dir(&root.join("recipes"), &work.join("recipes"));
    copy_dir(&root.join("data"), &work.join("data"));
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_ahtsgd"), bin.join("ahtsgd")).unwrap();
    let path = std::env::join_paths(std::iter::once(bin.clone()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let shared = tmp.path().join("shared-runs");
    let mirror = mirror(root.join("data/mnist-mini"));
    let mut ran = 0;
    for command in &commands {
        let line = if let Some(rest) = command.strip_prefix("cargo run --release -- ") {
            format!("ahtsgd {rest}")
        } else if command.starts_with("cargo test") {
            continue;
        } else if command.starts_with("cargo install") {
            if std::env::var_os("CI").is_some() {
                let installed = on_path("ahtsgd").unwrap_or_else(|| {
                    panic!("`{command}` (run by .ci/run) left no `ahtsgd` on PATH")
                });
                // Not byte-identical to the test build: dev-dependencies unify other features.
                let newest = newest_source(root);
                let at = std::fs::metadata(&installed).unwrap().modified().unwrap();
                assert!(
                    at >= newest,
                    "{} is older than the sources (run `{}` again)",
                    installed.display(),
                    command.split(" #").next().unwrap_or_default().trim()
                );
            } else {
                eprintln!("skipped `{command}` (CI runs it; set CI to check what it installed)");
            }
            continue;
        } else if command.starts_with("cargo ") {
            panic!("the README shows a cargo command this test does not know: `{command}`");
        } else {
            command.clone()
        };
        let line = line
            .replace("recipe.aht", "recipes/quickstart.aht")
            .replace("/shared/runs", &shared.display().to_string());
        let o = Command::new("sh")
            .args(["-c", &line])
            .current_dir(&work)
            .env("PATH", &path)
            .env("AHTSGD_DATA_MIRRORS", &mirror)
            .env("AHTSGD_CACHE", tmp.path().join("cache"))
            .output()
            .expect("sh runs");
        assert!(
            o.status.success(),
            "README command `{command}` (run as `{line}`) exited with {}:\n{}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        ran += 1;
    }
    assert!(ran >= 10, "only {ran} commands ran");
    // What the commands promise is there: the run's records, its report, the rerun, the draws.
    for made in [
        "runs/quickstart/zero_init/trial-0000/metrics.jsonl",
        "runs/quickstart/report/index.html",
        "draws.npy",
    ] {
        assert!(work.join(made).is_file(), "{made} was not made");
    }
    assert!(
        std::fs::read_dir(&shared).is_ok_and(|mut d| d.next().is_some()),
        "launch slurm wrote nothing to --out"
    );
}
