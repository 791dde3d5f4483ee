//! CIFAR-10 from its binary batches (`data_batch_1..5.bin`, `test_batch.bin`).
//!
//! CIFAR-10 is not shipped by any package registry these machines reach, so there is no
//! automatic fetch: download `cifar-10-binary.tar.gz` from the official page and unpack it
//! into `data_dir/cifar-10-batches-bin` (or point [`Cifar10::load`] at that folder).

use std::path::Path;

use crate::dataset::VisionDataset;
use crate::error::{DataError, Result};
use crate::fetch::sha256_hex;
use crate::formats::{MAX_DECOMPRESSED, parse_cifar_batch};
use crate::mnist::{DataFile, Splits};

/// Per-channel mean of CIFAR-10's training set (of `pixel / 255`).
pub const CIFAR10_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
/// Per-channel standard deviation of CIFAR-10's training set.
pub const CIFAR10_STD: [f32; 3] = [0.2470, 0.2435, 0.2616];

/// CIFAR-10.
#[derive(Debug, Clone, Copy)]
pub struct Cifar10;

/// A batch file's pixels and labels, and the file's name and sha256 (CIFAR-10 publishes no
/// per-file checksums, so a run records what it read).
fn read_batch(path: &Path) -> Result<(Vec<u8>, Vec<u8>, DataFile)> {
    let bytes = burn_sparse_mask::checkpoint::read_bounded(path, MAX_DECOMPRESSED)
        .map_err(|e| DataError::io(path, e))?;
    let file = DataFile {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        sha256: sha256_hex(&bytes),
    };
    let (p, l) = parse_cifar_batch(&bytes, path)?;
    Ok((p, l, file))
}

impl Cifar10 {
    /// Load the five training batches and the test batch from `dir`, which is either the
    /// `cifar-10-batches-bin` folder or a folder containing it.
    ///
    /// # Errors
    /// A missing file, or any format error naming the file.
    pub fn load(dir: impl AsRef<Path>) -> Result<Splits> {
        let mut dir = dir.as_ref().to_path_buf();
        if dir.join("cifar-10-batches-bin").is_dir() {
            dir = dir.join("cifar-10-batches-bin");
        }
        let mut px = Vec::new();
        let mut lb = Vec::new();
        let mut files = Vec::new();
        for i in 1..=5 {
            let (p, l, f) = read_batch(&dir.join(format!("data_batch_{i}.bin")))?;
            px.extend(p);
            lb.extend(l);
            files.push(f);
        }
        let (tp, tl, f) = read_batch(&dir.join("test_batch.bin"))?;
        files.push(f);
        let mk = |name: &str, p, l| {
            VisionDataset::new(
                name,
                [3, 32, 32],
                p,
                l,
                10,
                CIFAR10_MEAN.to_vec(),
                CIFAR10_STD.to_vec(),
            )
        };
        Ok(Splits {
            train: mk("cifar10-train", px, lb)?,
            test: mk("cifar10-test", tp, tl)?,
            files,
        })
    }
}
