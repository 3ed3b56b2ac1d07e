//! Helpers the end-to-end tests share.
#![allow(dead_code)] // each test crate uses a part

use std::path::Path;
use std::process::Command;

/// Runs the built `ahtsgd` binary in `dir`.
pub fn ahtsgd(args: &[&str], dir: &Path) -> std::process::Output {
    ahtsgd_env(args, dir, &[])
}

/// Runs the built `ahtsgd` binary in `dir` with these environment variables set.
pub fn ahtsgd_env(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ahtsgd"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .output()
        .expect("binary runs")
}

pub fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

pub fn read(p: impl AsRef<Path>) -> String {
    std::fs::read_to_string(p.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", p.as_ref().display()))
}
