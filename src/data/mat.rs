//! SVHN cropped digits: MATLAB v5 `.mat` files with `X` (uint8 [32, 32, 3, N], column-major)
//! and `y` (labels 1..10, 10 meaning digit 0; stored as doubles or compactly as uint8).
//! Compressed (miCOMPRESSED, zlib) and plain elements are both read.

use super::DataError;
use std::io::Read;

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;

/// A numeric array read from a .mat file.
pub struct MatArray {
    pub name: String,
    pub dims: Vec<usize>,
    /// Values in file (column-major) order.
    pub data: Vec<f64>,
}

struct Cursor<'a> {
    file: &'a str,
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn err(&self, what: impl Into<String>) -> DataError {
        DataError::format(self.file, format!("{} (at byte {})", what.into(), self.pos))
    }

    fn u32(&mut self) -> Result<u32, DataError> {
        let s = self
            .b
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.err("truncated"))?;
        self.pos += 4;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    /// One data element: (type, payload); the cursor moves past its padding.
    fn element(&mut self) -> Result<(u32, &'a [u8]), DataError> {
        let first = self.u32()?;
        if first >> 16 != 0 {
            // small data element: type and size in one word, up to 4 bytes of data
            let (ty, n) = (first & 0xffff, (first >> 16) as usize);
            if n > 4 {
                return Err(self.err("malformed small data element"));
            }
            let s = self
                .b
                .get(self.pos..self.pos + n)
                .ok_or_else(|| self.err("truncated"))?;
            self.pos += 4;
            return Ok((ty, s));
        }
        let n = self.u32()? as usize;
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or_else(|| self.err(format!("element of {n} bytes runs past the end")))?;
        let s = &self.b[self.pos..end];
        self.pos = if first == MI_COMPRESSED {
            end
        } else {
            end.div_ceil(8) * 8
        };
        Ok((first, s))
    }
}

fn numbers(file: &str, ty: u32, s: &[u8]) -> Result<Vec<f64>, DataError> {
    let w = |n: usize| s.chunks_exact(n);
    Ok(match ty {
        MI_INT8 => s.iter().map(|&v| f64::from(v as i8)).collect(),
        MI_UINT8 => s.iter().map(|&v| f64::from(v)).collect(),
        MI_INT16 => w(2)
            .map(|c| f64::from(i16::from_le_bytes([c[0], c[1]])))
            .collect(),
        MI_UINT16 => w(2)
            .map(|c| f64::from(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        MI_INT32 => w(4)
            .map(|c| f64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        MI_UINT32 => w(4)
            .map(|c| f64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        MI_SINGLE => w(4)
            .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        MI_DOUBLE => w(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect(),
        other => {
            return Err(DataError::format(
                file,
                format!("unsupported numeric element type {other}"),
            ));
        }
    })
}

fn matrix(file: &str, payload: &[u8]) -> Result<MatArray, DataError> {
    let mut c = Cursor {
        file,
        b: payload,
        pos: 0,
    };
    let (_, _flags) = c.element()?;
    let (dty, dims) = c.element()?;
    if dty != MI_INT32 {
        return Err(c.err("array dimensions are not int32"));
    }
    let dims: Vec<usize> = numbers(file, dty, dims)?
        .into_iter()
        .map(|d| d.max(0.0) as usize)
        .collect();
    let (_, name) = c.element()?;
    let name = String::from_utf8_lossy(name).into_owned();
    let (ty, real) = c.element()?;
    let data = numbers(file, ty, real)?;
    let count = dims
        .iter()
        .try_fold(1usize, |a, d| a.checked_mul(*d))
        .ok_or_else(|| c.err("dimensions overflow"))?;
    if data.len() != count {
        return Err(DataError::format(
            file,
            format!("`{name}` has {} values for dimensions {dims:?}", data.len()),
        ));
    }
    Ok(MatArray { name, dims, data })
}

/// Every numeric array in a MAT v5 file.
pub fn read(file: &str, bytes: &[u8]) -> Result<Vec<MatArray>, DataError> {
    if bytes.len() < 128 {
        return Err(DataError::format(
            file,
            "truncated: a MAT v5 header is 128 bytes",
        ));
    }
    if &bytes[126..128] != b"IM" || bytes[124..126] != [0x00, 0x01] {
        return Err(DataError::format(
            file,
            "not a little-endian MAT v5 file (SVHN's .mat files are; v7.3/HDF5 is not supported)",
        ));
    }
    let mut out = Vec::new();
    let mut c = Cursor {
        file,
        b: bytes,
        pos: 128,
    };
    while c.pos + 8 <= bytes.len() {
        let (ty, payload) = c.element()?;
        match ty {
            MI_MATRIX => out.push(matrix(file, payload)?),
            MI_COMPRESSED => {
                let mut inner = Vec::new();
                flate2::read::ZlibDecoder::new(payload)
                    .take(1 << 33)
                    .read_to_end(&mut inner)
                    .map_err(|e| DataError::format(file, format!("corrupt zlib stream: {e}")))?;
                let mut ic = Cursor {
                    file,
                    b: &inner,
                    pos: 0,
                };
                let (ity, ip) = ic.element()?;
                if ity == MI_MATRIX {
                    out.push(matrix(file, ip)?);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// SVHN images as [N, 3, 32, 32] row-major bytes scaled to [0, 1], and labels 0..9.
pub fn svhn(file: &str, bytes: &[u8]) -> Result<(Vec<f32>, Vec<u32>), DataError> {
    let arrays = read(file, bytes)?;
    let x = arrays
        .iter()
        .find(|a| a.name == "X")
        .ok_or_else(|| DataError::format(file, "no array `X`"))?;
    let y = arrays
        .iter()
        .find(|a| a.name == "y")
        .ok_or_else(|| DataError::format(file, "no array `y`"))?;
    let [h, w, ch, n] = x.dims[..] else {
        return Err(DataError::format(
            file,
            format!("`X` has dimensions {:?}, expected [32, 32, 3, N]", x.dims),
        ));
    };
    if (h, w, ch) != (32, 32, 3) {
        return Err(DataError::format(
            file,
            format!("`X` has dimensions {:?}, expected [32, 32, 3, N]", x.dims),
        ));
    }
    if y.data.len() != n {
        return Err(DataError::format(
            file,
            format!("{} labels for {n} images", y.data.len()),
        ));
    }
    let mut out = vec![0f32; n * 3 * 32 * 32];
    for s in 0..n {
        for c in 0..3 {
            for col in 0..32 {
                for row in 0..32 {
                    // column-major: row fastest, then column, channel, sample
                    let v = x.data[row + 32 * (col + 32 * (c + 3 * s))];
                    out[((s * 3 + c) * 32 + row) * 32 + col] = (v / 255.0) as f32;
                }
            }
        }
    }
    let labels = y
        .data
        .iter()
        .enumerate()
        .map(|(i, &v)| match v as i64 {
            10 => Ok(0),
            1..=9 if v.fract() == 0.0 => Ok(v as u32),
            _ => Err(DataError::format(
                file,
                format!("label {v} at index {i} is outside 1..10"),
            )),
        })
        .collect::<Result<_, _>>()?;
    Ok((out, labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/data/svhn-scipy/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    /// The fixtures were written by scipy.io.savemat with X[r, c, ch, n] = (7r + 3c + 80ch
    /// + 31n + offset) mod 256 (offset 0 for train, 28 for test) and y = [10, 1, 2, 3, 4].
    #[test]
    fn reads_scipy_written_files_in_every_layout() {
        for (name, n, offset) in [
            ("train_32x32.mat", 5, 0),
            ("train_32x32_uncompressed.mat", 5, 0),
            ("train_32x32_ydouble.mat", 5, 0),
            ("scipy_savemat_compressed.mat", 5, 0),
            ("test_32x32.mat", 3, 28),
        ] {
            let (x, y) = svhn(name, &fixture(name)).unwrap();
            assert_eq!(y, [0, 1, 2, 3, 4][..n].to_vec(), "{name}");
            for s in 0..n {
                for c in 0..3 {
                    for r in 0..32 {
                        for col in 0..32 {
                            let want =
                                ((7 * r + 3 * col + 80 * c + 31 * s + offset) % 256) as f32 / 255.0;
                            assert_eq!(
                                x[((s * 3 + c) * 32 + r) * 32 + col],
                                want,
                                "{name} s{s} c{c} r{r} col{col}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn corrupt_files_are_errors_not_panics() {
        let good = fixture("train_32x32.mat");
        for cut in (0..good.len()).step_by(7) {
            assert!(svhn("t", &good[..cut]).is_err(), "truncated at {cut}");
        }
        for i in (0..good.len()).step_by(3) {
            for bit in [0, 3, 7] {
                let mut f = good.clone();
                f[i] ^= 1 << bit;
                let _ = svhn("t", &f);
            }
        }
        let mut bad = good.clone();
        bad[126] = b'M';
        assert!(svhn("t", &bad).unwrap_err().to_string().contains("MAT v5"));
        let mut z = good.clone();
        for b in z.iter_mut().skip(140).take(40) {
            *b = 0xAA;
        }
        assert!(svhn("t", &z).is_err());
    }
}
