//! Small file-system helpers.

use std::io::Write;
use std::path::Path;

/// Writes a file atomically: a temporary file in the same folder, synced, then renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    charge(bytes.len())?;
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Takes an exclusive `flock` on `file`, waiting for it when `wait`; without waiting, `false`
/// when another open file holds it. The lock belongs to the open file description and the
/// kernel drops it when its holder ends, however it ends.
#[cfg(unix)]
pub fn lock_exclusive(file: &std::fs::File, wait: bool) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    let op = if wait {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    loop {
        // SAFETY: flock on a descriptor `file` owns; it has no memory effects.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// A testing hook for a full disk: with `AHTSGD_FAIL_WRITES_AFTER=N`, the run records'
/// writes fail with ENOSPC ("No space left on device") once N bytes have been written.
pub const FAIL_WRITES_AFTER: &str = "AHTSGD_FAIL_WRITES_AFTER";

/// Counts `n` bytes about to be written against the [`FAIL_WRITES_AFTER`] budget.
pub fn charge(n: usize) -> std::io::Result<()> {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static BUDGET: OnceLock<Option<u64>> = OnceLock::new();
    static WRITTEN: AtomicU64 = AtomicU64::new(0);
    let Some(budget) = *BUDGET.get_or_init(|| {
        std::env::var(FAIL_WRITES_AFTER)
            .ok()
            .and_then(|v| v.parse().ok())
    }) else {
        return Ok(());
    };
    if WRITTEN.fetch_add(n as u64, Ordering::Relaxed) + n as u64 > budget {
        return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
    }
    Ok(())
}
