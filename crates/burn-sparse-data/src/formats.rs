//! Parsers for IDX (MNIST, Fashion-MNIST) and CIFAR-10 binary batches.
//!
//! None of them panics or allocates more than the input holds: every size in a header is
//! checked with overflow-safe arithmetic against the bytes actually present before anything
//! is copied.

use std::io::Read;
use std::path::Path;

use crate::error::{DataError, Result};

/// Decompressed size limit for `.gz` inputs (the largest official file is 47 MB).
pub const MAX_DECOMPRESSED: u64 = 512 << 20;

/// If `bytes` is gzip (magic `1f 8b`), decompress it (at most [`MAX_DECOMPRESSED`] bytes).
///
/// # Errors
/// [`DataError::Gzip`] for a broken stream, [`DataError::AbsurdHeader`] past the limit.
pub fn maybe_gunzip(bytes: Vec<u8>, path: &Path) -> Result<Vec<u8>> {
    if bytes.len() < 2 || bytes[0] != 0x1f || bytes[1] != 0x8b {
        return Ok(bytes);
    }
    let mut out = Vec::new();
    let mut dec = flate2::read::GzDecoder::new(bytes.as_slice()).take(MAX_DECOMPRESSED + 1);
    dec.read_to_end(&mut out).map_err(|e| DataError::Gzip {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if out.len() as u64 > MAX_DECOMPRESSED {
        return Err(DataError::AbsurdHeader {
            path: path.to_path_buf(),
            message: format!("decompresses to more than {MAX_DECOMPRESSED} bytes"),
        });
    }
    Ok(out)
}

/// An IDX array of unsigned bytes (type code 0x08).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimensions from the header.
    pub dims: Vec<usize>,
    /// Row-major data.
    pub data: Vec<u8>,
}

/// Parse an IDX file of unsigned bytes: magic `00 00 08 NDIM`, NDIM big-endian `u32` sizes,
/// then the data. The data length must equal the product of the sizes exactly.
///
/// # Errors
/// [`DataError::BadMagic`], [`DataError::Truncated`], [`DataError::AbsurdHeader`],
/// [`DataError::SizeMismatch`].
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray> {
    let p = || path.to_path_buf();
    if bytes.len() < 4 {
        return Err(DataError::Truncated {
            path: p(),
            len: bytes.len() as u64,
            need: 4,
        });
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 || bytes[3] == 0 || bytes[3] > 4 {
        return Err(DataError::BadMagic {
            path: p(),
            found: magic,
            expected: "0x00000801..0x00000804 (IDX, unsigned bytes, 1-4 dims)",
        });
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(DataError::Truncated {
            path: p(),
            len: bytes.len() as u64,
            need: header as u64,
        });
    }
    let mut dims = Vec::with_capacity(ndim);
    let mut total: u64 = 1;
    for i in 0..ndim {
        let o = 4 + 4 * i;
        let d = u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
        dims.push(d as usize);
        total = total
            .checked_mul(d as u64)
            .ok_or_else(|| DataError::AbsurdHeader {
                path: p(),
                message: format!("dimensions {dims:?}... overflow"),
            })?;
    }
    let actual = (bytes.len() - header) as u64;
    if total > actual.saturating_mul(16).max(1 << 20) && total > actual {
        return Err(DataError::AbsurdHeader {
            path: p(),
            message: format!("dimensions {dims:?} claim {total} bytes, the file has {actual}"),
        });
    }
    if total != actual {
        return Err(DataError::SizeMismatch {
            path: p(),
            expected: total,
            actual,
        });
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Check every label is below `classes`.
///
/// # Errors
/// [`DataError::LabelOutOfRange`] for the first offending label.
pub fn check_labels(labels: &[u8], classes: u8, path: &Path) -> Result<()> {
    if let Some((index, &value)) = labels.iter().enumerate().find(|(_, l)| **l >= classes) {
        return Err(DataError::LabelOutOfRange {
            path: path.to_path_buf(),
            index,
            value,
            classes,
        });
    }
    Ok(())
}

/// Bytes per CIFAR-10 record: one label and 3x32x32 pixels (channel-major: R, G, B planes).
pub const CIFAR_RECORD: usize = 1 + 3 * 32 * 32;

/// Parse one CIFAR-10 binary batch into `(pixels, labels)`; pixels are `N x 3 x 32 x 32`.
///
/// # Errors
/// [`DataError::SizeMismatch`] if the length is not a whole number of records (or is 0),
/// [`DataError::LabelOutOfRange`] for a label >= 10.
pub fn parse_cifar_batch(bytes: &[u8], path: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(CIFAR_RECORD) {
        let n = bytes.len().div_ceil(CIFAR_RECORD).max(1);
        return Err(DataError::SizeMismatch {
            path: path.to_path_buf(),
            expected: (n * CIFAR_RECORD) as u64,
            actual: bytes.len() as u64,
        });
    }
    let n = bytes.len() / CIFAR_RECORD;
    let mut pixels = Vec::with_capacity(n * (CIFAR_RECORD - 1));
    let mut labels = Vec::with_capacity(n);
    for rec in bytes.chunks_exact(CIFAR_RECORD) {
        labels.push(rec[0]);
        pixels.extend_from_slice(&rec[1..]);
    }
    check_labels(&labels, 10, path)?;
    Ok((pixels, labels))
}
