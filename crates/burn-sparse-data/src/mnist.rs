//! MNIST and Fashion-MNIST as [`VisionDataset`]s.

use std::path::{Path, PathBuf};

use crate::dataset::VisionDataset;
use crate::error::{DataError, Result};
use crate::fetch::{FASHION_MNIST, MNIST, Source, dataset_dir, load_or_fetch_files};
use crate::formats::{check_labels, parse_idx};

/// MNIST's training-set pixel mean (of `pixel / 255`), the usual constant.
pub const MNIST_MEAN: f32 = 0.1307;
/// MNIST's training-set pixel standard deviation.
pub const MNIST_STD: f32 = 0.3081;
/// Fashion-MNIST's training-set pixel mean.
pub const FASHION_MNIST_MEAN: f32 = 0.2860;
/// Fashion-MNIST's training-set pixel standard deviation.
pub const FASHION_MNIST_STD: f32 = 0.3530;

/// A train and a test split.
#[derive(Debug, Clone)]
pub struct Splits {
    /// 60,000 training images.
    pub train: VisionDataset,
    /// 10,000 test images.
    pub test: VisionDataset,
    /// The files the splits were read from, with their sha256 (empty for generated data), so
    /// a run can record exactly what it was trained on.
    pub files: Vec<DataFile>,
}

/// A data file by name and content.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DataFile {
    /// The file's name (`train-images-idx3-ubyte`, `data_batch_1.bin`), without its folder.
    pub name: String,
    /// sha256 of its (uncompressed) bytes, lowercase hex.
    pub sha256: String,
}

/// Build a 28x28 grey-scale dataset from an IDX image file and an IDX label file.
///
/// # Errors
/// Every format error of [`parse_idx`], a label >= 10, an image size other than 28x28, and
/// [`DataError::CountMismatch`].
pub fn from_idx_bytes(
    name: &str,
    images: &[u8],
    images_path: &Path,
    labels: &[u8],
    labels_path: &Path,
    mean: f32,
    std: f32,
) -> Result<VisionDataset> {
    let im = parse_idx(images, images_path)?;
    let lb = parse_idx(labels, labels_path)?;
    if im.dims.len() != 3 || im.dims[1] != 28 || im.dims[2] != 28 {
        return Err(DataError::WrongShape {
            path: images_path.to_path_buf(),
            found: im.dims,
            expected: vec![0, 28, 28],
        });
    }
    if lb.dims.len() != 1 {
        return Err(DataError::WrongShape {
            path: labels_path.to_path_buf(),
            found: lb.dims,
            expected: vec![0],
        });
    }
    if im.dims[0] != lb.dims[0] {
        return Err(DataError::CountMismatch {
            images_path: images_path.to_path_buf(),
            images: im.dims[0],
            labels_path: labels_path.to_path_buf(),
            labels: lb.dims[0],
        });
    }
    check_labels(&lb.data, 10, labels_path)?;
    VisionDataset::new(
        name,
        [1, 28, 28],
        im.data,
        lb.data,
        10,
        vec![mean],
        vec![std],
    )
}

fn load(source: &Source, data_dir: &Path, mean: f32, std: f32) -> Result<Splits> {
    let dir = dataset_dir(data_dir, source);
    let files = load_or_fetch_files(source, &dir)?;
    let p = |i: usize| -> PathBuf { dir.join(source.files[i].name) };
    Ok(Splits {
        train: from_idx_bytes(
            &format!("{}-train", source.dataset),
            &files[0],
            &p(0),
            &files[1],
            &p(1),
            mean,
            std,
        )?,
        test: from_idx_bytes(
            &format!("{}-test", source.dataset),
            &files[2],
            &p(2),
            &files[3],
            &p(3),
            mean,
            std,
        )?,
        // Every file was verified against its published checksum.
        files: source
            .files
            .iter()
            .map(|f| DataFile {
                name: f.name.into(),
                sha256: f.sha256.into(),
            })
            .collect(),
    })
}

/// MNIST.
#[derive(Debug, Clone, Copy)]
pub struct Mnist;

impl Mnist {
    /// Load from `data_dir/mnist`, fetching missing files (see [`crate::fetch`]).
    ///
    /// # Errors
    /// [`DataError::FetchFailed`] or a format error naming the file.
    pub fn load_or_fetch(data_dir: impl AsRef<Path>) -> Result<Splits> {
        load(&MNIST, data_dir.as_ref(), MNIST_MEAN, MNIST_STD)
    }
}

/// Fashion-MNIST.
#[derive(Debug, Clone, Copy)]
pub struct FashionMnist;

impl FashionMnist {
    /// Load from `data_dir/fashion-mnist`, fetching missing files (see [`crate::fetch`]).
    ///
    /// # Errors
    /// [`DataError::FetchFailed`] or a format error naming the file.
    pub fn load_or_fetch(data_dir: impl AsRef<Path>) -> Result<Splits> {
        load(
            &FASHION_MNIST,
            data_dir.as_ref(),
            FASHION_MNIST_MEAN,
            FASHION_MNIST_STD,
        )
    }
}
