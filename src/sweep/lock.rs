//! Trial locks: the process that trains a trial holds an exclusive `flock` on the trial
//! folder's `lock` file for as long as it runs, so no trial trains twice at once, whether
//! started by `--jobs`, shards, array tasks or a second run of the same command. The kernel
//! releases the lock when its holder dies, however it dies, so a lock never outlives a crash.
//! The run directory itself is not locked: shards and array tasks share it by design.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::Path;

/// The lock file's name inside a trial folder.
pub const FILE: &str = "lock";

/// A held trial lock, released when dropped (or when the process ends).
#[derive(Debug)]
pub struct TrialLock {
    _file: File,
}

/// Who holds a trial's lock, as its holder wrote it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Holder {
    pub pid: Option<u32>,
    pub host: Option<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.pid, &self.host) {
            (Some(p), Some(h)) => write!(f, "pid {p} on {h}"),
            (Some(p), None) => write!(f, "pid {p}"),
            (None, Some(h)) => write!(f, "a process on {h}"),
            (None, None) => write!(f, "another process"),
        }
    }
}

/// Why a lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("running elsewhere ({0})")]
    Held(Holder),
    #[error("cannot lock {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl TrialLock {
    /// Takes the lock of the trial folder `dir` (created if missing) without waiting, and
    /// writes this process's pid and host into the lock file.
    pub fn acquire(dir: &Path) -> Result<TrialLock, LockError> {
        let path = dir.join(FILE);
        let io = |source| LockError::Io {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        if !crate::fsutil::lock_exclusive(&file, false).map_err(io)? {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(LockError::Held(parse_holder(&text)));
        }
        let me = format!("pid {}\nhost {}\n", std::process::id(), host());
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        file.write_all(me.as_bytes()).map_err(io)?;
        Ok(TrialLock { _file: file })
    }
}

fn parse_holder(text: &str) -> Holder {
    let mut h = Holder::default();
    for line in text.lines() {
        if let Some(p) = line.strip_prefix("pid ") {
            h.pid = p.trim().parse().ok();
        } else if let Some(n) = line.strip_prefix("host ") {
            h.host = Some(n.trim().to_string()).filter(|n| !n.is_empty());
        }
    }
    h
}

/// This machine's host name (empty if it cannot be read).
pub fn host() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is writable for its whole length, which is passed.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// flock locks belong to the open file description, so a second open in the same process
    /// conflicts just as another process would; dropping the first releases it.
    #[test]
    fn a_held_lock_names_its_holder_and_is_released_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("trial-0000");
        let first = TrialLock::acquire(&dir).unwrap();
        match TrialLock::acquire(&dir) {
            Err(LockError::Held(h)) => {
                assert_eq!(h.pid, Some(std::process::id()));
                assert_eq!(h.host.unwrap_or_default(), host());
            }
            other => panic!("expected the lock to be held, got {other:?}"),
        }
        drop(first);
        assert!(TrialLock::acquire(&dir).is_ok());
    }

    #[test]
    fn holders_read_back_from_partial_files() {
        assert_eq!(
            parse_holder("pid 12\nhost n1\n"),
            Holder {
                pid: Some(12),
                host: Some("n1".into())
            }
        );
        assert_eq!(parse_holder("").to_string(), "another process");
        assert_eq!(parse_holder("pid 7\n").to_string(), "pid 7");
    }
}
