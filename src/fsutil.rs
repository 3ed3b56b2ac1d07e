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
