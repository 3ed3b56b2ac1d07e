//! CIFAR-10 binary batches: records of one label byte and 3,072 pixel bytes (R, G, B planes
//! of 32x32, row-major), from a folder or from `cifar-10-binary.tar.gz`.

use super::DataError;
use std::io::Read;
use std::path::Path;

const RECORD: usize = 1 + 3 * 32 * 32;
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
pub const TEST_FILE: &str = "test_batch.bin";

/// Images ([N, 3, 32, 32] scaled to [0, 1]) and labels of one batch file; any record count.
pub fn batch(file: &str, bytes: &[u8]) -> Result<(Vec<f32>, Vec<u32>), DataError> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD) {
        return Err(DataError::format(
            file,
            format!(
                "{} bytes is not a whole number of {RECORD}-byte records",
                bytes.len()
            ),
        ));
    }
    let n = bytes.len() / RECORD;
    let mut x = Vec::with_capacity(n * (RECORD - 1));
    let mut y = Vec::with_capacity(n);
    for (i, r) in bytes.chunks_exact(RECORD).enumerate() {
        if r[0] > 9 {
            return Err(DataError::format(
                file,
                format!("label {} of record {i} is out of range 0..10", r[0]),
            ));
        }
        y.push(u32::from(r[0]));
        x.extend(r[1..].iter().map(|&p| f32::from(p) / 255.0));
    }
    Ok((x, y))
}

/// The raw bytes of the six batch files, by name, from a folder (or its
/// `cifar-10-batches-bin/` subfolder) or a `.tar.gz`.
/// The official archive's name.
pub const ARCHIVE: &str = "cifar-10-binary.tar.gz";

/// Whether the folder holds the extracted batches (itself or in `cifar-10-batches-bin`).
pub fn has_batches(dir: &Path) -> bool {
    dir.join(TEST_FILE).is_file() || dir.join("cifar-10-batches-bin").join(TEST_FILE).is_file()
}

pub fn files(path: &Path) -> Result<Vec<(String, Vec<u8>)>, DataError> {
    let io = |p: &Path, source| DataError::Io {
        file: p.display().to_string(),
        source,
    };
    let wanted: Vec<&str> = TRAIN_FILES.iter().copied().chain([TEST_FILE]).collect();
    if path.is_file() {
        let f = std::fs::File::open(path).map_err(|e| io(path, e))?;
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(f));
        let mut found = Vec::new();
        let entries = archive.entries().map_err(|e| {
            DataError::format(&path.display().to_string(), format!("not a .tar.gz: {e}"))
        })?;
        for entry in entries {
            let mut entry = entry.map_err(|e| {
                DataError::format(&path.display().to_string(), format!("corrupt archive: {e}"))
            })?;
            let name = entry
                .path()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_default();
            if wanted.contains(&name.as_str()) {
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes).map_err(|e| {
                    DataError::format(&path.display().to_string(), format!("corrupt archive: {e}"))
                })?;
                found.push((name, bytes));
            }
        }
        for w in &wanted {
            if !found.iter().any(|(n, _)| n == w) {
                return Err(DataError::format(
                    &path.display().to_string(),
                    format!("the archive has no `{w}`"),
                ));
            }
        }
        return Ok(found);
    }
    let dir = if path.join("cifar-10-batches-bin").is_dir() {
        path.join("cifar-10-batches-bin")
    } else {
        path.to_path_buf()
    };
    wanted
        .iter()
        .map(|w| {
            let p = dir.join(w);
            std::fs::read(&p)
                .map(|b| (p.display().to_string(), b))
                .map_err(|e| io(&p, e))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records whose pixel bytes encode (record, channel, row, column), so a transposition or a
    /// channel mix-up shows.
    fn record(i: usize, label: u8) -> Vec<u8> {
        let mut r = vec![label];
        for c in 0..3 {
            for row in 0..32 {
                for col in 0..32 {
                    r.push(((i * 50 + c * 80 + row * 3 + col) % 256) as u8);
                }
            }
        }
        r
    }

    #[test]
    fn reads_planes_row_major() {
        let bytes: Vec<u8> = (0..3).flat_map(|i| record(i, i as u8 + 4)).collect();
        let (x, y) = batch("b", &bytes).unwrap();
        assert_eq!(y, vec![4, 5, 6]);
        // record 2, channel 1 (green), row 5, column 7
        assert_eq!(
            x[((2 * 3 + 1) * 32 + 5) * 32 + 7],
            202.0 / 255.0 // 2·50 + 80 + 3·5 + 7
        );
    }

    #[test]
    fn bad_batches_are_errors() {
        let good: Vec<u8> = (0..2).flat_map(|i| record(i, 1)).collect();
        for cut in [0, 1, 100, RECORD + 5] {
            assert!(batch("b", &good[..cut]).is_err());
        }
        let mut bad = good.clone();
        bad[RECORD] = 10;
        assert!(
            batch("b", &bad)
                .unwrap_err()
                .to_string()
                .contains("out of range")
        );
    }

    #[test]
    fn reads_folders_and_archives() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("cifar-10-batches-bin");
        std::fs::create_dir(&sub).unwrap();
        let names: Vec<&str> = TRAIN_FILES.iter().copied().chain([TEST_FILE]).collect();
        for (k, n) in names.iter().enumerate() {
            std::fs::write(sub.join(n), record(k, k as u8)).unwrap();
        }
        assert_eq!(files(dir.path()).unwrap().len(), 6);
        let tgz = dir.path().join("cifar-10-binary.tar.gz");
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            std::fs::File::create(&tgz).unwrap(),
            flate2::Compression::fast(),
        ));
        b.append_dir_all("cifar-10-batches-bin", &sub).unwrap();
        b.into_inner().unwrap().finish().unwrap();
        let from_tar = files(&tgz).unwrap();
        assert_eq!(from_tar.len(), 6);
        let (_, y) = batch(
            "t",
            &from_tar.iter().find(|(n, _)| n == TEST_FILE).unwrap().1,
        )
        .unwrap();
        assert_eq!(y, vec![5]);
        // a folder holding only the archive, as `data fetch cifar10` leaves it, reads it
        let only = tempfile::tempdir().unwrap();
        std::fs::copy(&tgz, only.path().join(ARCHIVE)).unwrap();
        assert!(!has_batches(only.path()) && has_batches(dir.path()));
        let d = crate::data::cifar10(only.path(), crate::data::Verify::Off).unwrap();
        assert_eq!((d.train_len(), d.test_len()), (5, 1));
        assert_eq!(d.test_y, vec![5]);
        std::fs::remove_file(sub.join("data_batch_3.bin")).unwrap();
        assert!(
            files(dir.path())
                .unwrap_err()
                .to_string()
                .contains("data_batch_3.bin")
        );
    }
}
