//! MNIST / Fashion-MNIST IDX files, raw or gzip-compressed.

use super::DataError;
use std::io::Read;

/// Decompresses if the bytes are gzip, else returns them.
pub fn maybe_gunzip(name: &str, bytes: &[u8]) -> Result<Vec<u8>, DataError> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .map_err(|e| DataError::format(name, format!("corrupt gzip stream: {e}")))?;
        Ok(out)
    } else {
        Ok(bytes.to_vec())
    }
}

/// Images: (count, rows, cols, pixels). Checks magic, dimensions and length.
pub fn images(name: &str, bytes: &[u8]) -> Result<(usize, usize, usize, Vec<u8>), DataError> {
    let b = maybe_gunzip(name, bytes)?;
    if b.len() < 16 {
        return Err(DataError::format(
            name,
            format!("truncated: {} bytes, an IDX image header needs 16", b.len()),
        ));
    }
    let magic = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    if magic != 0x0000_0803 {
        return Err(DataError::format(
            name,
            format!("wrong magic {magic:#010x}: not an IDX image file (expected 0x00000803)"),
        ));
    }
    let dim = |i: usize| {
        u32::from_be_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]) as usize
    };
    let (n, rows, cols) = (dim(1), dim(2), dim(3));
    if rows == 0 || cols == 0 || rows > 4096 || cols > 4096 {
        return Err(DataError::format(
            name,
            format!("implausible image size {rows}x{cols}"),
        ));
    }
    let need = n.checked_mul(rows * cols).and_then(|x| x.checked_add(16));
    match need {
        Some(need) if need == b.len() => Ok((n, rows, cols, b[16..].to_vec())),
        Some(need) => Err(DataError::format(
            name,
            format!(
                "{} bytes, but the header promises {n} images of {rows}x{cols} ({need} bytes)",
                b.len()
            ),
        )),
        None => Err(DataError::format(name, "header dimensions overflow")),
    }
}

/// Labels, each checked to be below `classes`.
pub fn labels(name: &str, bytes: &[u8], classes: u8) -> Result<Vec<u8>, DataError> {
    let b = maybe_gunzip(name, bytes)?;
    if b.len() < 8 {
        return Err(DataError::format(
            name,
            format!("truncated: {} bytes, an IDX label header needs 8", b.len()),
        ));
    }
    let magic = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    if magic != 0x0000_0801 {
        return Err(DataError::format(
            name,
            format!("wrong magic {magic:#010x}: not an IDX label file (expected 0x00000801)"),
        ));
    }
    let n = u32::from_be_bytes([b[4], b[5], b[6], b[7]]) as usize;
    if b.len() != 8 + n {
        return Err(DataError::format(
            name,
            format!("{} bytes, but the header promises {n} labels", b.len()),
        ));
    }
    if let Some((i, l)) = b[8..].iter().enumerate().find(|(_, l)| **l >= classes) {
        return Err(DataError::format(
            name,
            format!("label {l} at index {i} is out of range 0..{classes}"),
        ));
    }
    Ok(b[8..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn image_file(n: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [0x803u32, n, rows, cols] {
            v.extend(x.to_be_bytes());
        }
        v.extend(pixels);
        v
    }

    #[test]
    fn reads_images_row_major() {
        // 2 images of 2x3; pixel value = 10*image + 3*row + col reveals any transposition
        let px: Vec<u8> = (0..2)
            .flat_map(|i| (0..2).flat_map(move |r| (0..3).map(move |c| (10 * i + 3 * r + c) as u8)))
            .collect();
        let (n, rows, cols, data) = images("t", &image_file(2, 2, 3, &px)).unwrap();
        assert_eq!((n, rows, cols), (2, 2, 3));
        assert_eq!(data[6 + 3 + 2], 15);
    }

    #[test]
    fn rejects_corruption_without_panicking() {
        let good = image_file(3, 4, 4, &[7u8; 48]);
        for cut in 0..good.len() {
            assert!(images("t", &good[..cut]).is_err(), "truncated at {cut}");
        }
        let mut bad = good.clone();
        bad[3] = 0x01;
        assert!(images("t", &bad).unwrap_err().to_string().contains("magic"));
        for i in 0..16 {
            for bit in 0..8 {
                let mut f = good.clone();
                f[i] ^= 1 << bit;
                let _ = images("t", &f);
                let _ = labels("t", &f, 10);
            }
        }
        let mut lab = vec![0, 0, 8, 1, 0, 0, 0, 2, 3, 12];
        assert!(
            labels("t", &lab, 10)
                .unwrap_err()
                .to_string()
                .contains("out of range")
        );
        lab[9] = 1;
        assert_eq!(labels("t", &lab, 10).unwrap(), vec![3, 1]);
        assert!(maybe_gunzip("t", &[0x1f, 0x8b, 0, 1, 2]).is_err());
    }
}
