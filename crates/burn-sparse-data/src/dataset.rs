//! In-memory vision datasets, a burn `Dataset` and `Batcher`, seeded shuffling and splits.

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::{Dataset, DatasetError};
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_sparse_mask::SparseRng;

use crate::error::{DataError, Result};

/// One image and its label.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionItem {
    /// Pixels, `C x H x W`, as stored (0..=255).
    pub pixels: Vec<u8>,
    /// Class index.
    pub label: u8,
}

/// A batch: normalised images `[B, C, H, W]` and labels `[B]`.
#[derive(Debug, Clone)]
pub struct VisionBatch {
    /// `(pixel / 255 - mean) / std`, per channel.
    pub images: Tensor<4>,
    /// Class indices.
    pub targets: Tensor<1, Int>,
}

/// A whole dataset decoded once into memory (MNIST's training set is 47 MB of u8).
#[derive(Debug, Clone)]
pub struct VisionDataset {
    name: String,
    shape: [usize; 3],
    pixels: Vec<u8>,
    labels: Vec<u8>,
    classes: usize,
    mean: Vec<f32>,
    std: Vec<f32>,
}

impl VisionDataset {
    /// A dataset from raw parts; `pixels` holds `labels.len()` images of `shape` (`C, H, W`).
    /// `mean`/`std` (one per channel) are applied to `pixel / 255` when batching.
    ///
    /// # Errors
    /// [`DataError::Invalid`] if the sizes disagree.
    pub fn new(
        name: impl Into<String>,
        shape: [usize; 3],
        pixels: Vec<u8>,
        labels: Vec<u8>,
        classes: usize,
        mean: Vec<f32>,
        std: Vec<f32>,
    ) -> Result<Self> {
        let per = shape.iter().product::<usize>();
        if pixels.len() != per * labels.len() {
            return Err(DataError::Invalid(format!(
                "{} pixels for {} images of {shape:?}",
                pixels.len(),
                labels.len()
            )));
        }
        if mean.len() != shape[0] || std.len() != shape[0] || std.iter().any(|s| *s <= 0.0) {
            return Err(DataError::Invalid(
                "mean and std need one (positive std) value per channel".into(),
            ));
        }
        Ok(Self {
            name: name.into(),
            shape,
            pixels,
            labels,
            classes,
            mean,
            std,
        })
    }

    /// The same data with another per-channel normalisation (`mean`, `std` of `pixel / 255`).
    /// `with_normalization(vec![0.0], vec![1.0])` gives raw `[0, 1]` pixels.
    ///
    /// # Errors
    /// [`DataError::Invalid`] for a wrong number of channels or a non-positive std.
    pub fn with_normalization(mut self, mean: Vec<f32>, std: Vec<f32>) -> Result<Self> {
        if mean.len() != self.shape[0]
            || std.len() != self.shape[0]
            || std.iter().any(|s| *s <= 0.0)
        {
            return Err(DataError::Invalid(
                "mean and std need one (positive std) value per channel".into(),
            ));
        }
        self.mean = mean;
        self.std = std;
        Ok(self)
    }

    /// The dataset's name (`mnist-train`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Image shape `C, H, W`.
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }
    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }
    /// All labels.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }
    /// Count of each label.
    pub fn label_histogram(&self) -> Vec<usize> {
        let mut h = vec![0; self.classes];
        for &l in &self.labels {
            h[l as usize] += 1;
        }
        h
    }

    /// A seeded permutation of `0..len` (bit-identical for the same seed everywhere).
    pub fn shuffled_indices(&self, seed: u64) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.len()).collect();
        SparseRng::new(seed).shuffle(&mut idx);
        idx
    }

    fn check_index(&self, i: usize) -> Result<()> {
        if i >= self.len() {
            return Err(DataError::Invalid(format!(
                "index {i} out of range for {} items",
                self.len()
            )));
        }
        Ok(())
    }

    /// A subset with the given indices.
    ///
    /// # Errors
    /// [`DataError::Invalid`] for an index out of range.
    pub fn subset(&self, indices: &[usize]) -> Result<Self> {
        let per = self.shape.iter().product::<usize>();
        let mut pixels = Vec::with_capacity(indices.len() * per);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            self.check_index(i)?;
            pixels.extend_from_slice(&self.pixels[i * per..(i + 1) * per]);
            labels.push(self.labels[i]);
        }
        Ok(Self {
            pixels,
            labels,
            ..self.clone_meta()
        })
    }

    fn clone_meta(&self) -> Self {
        Self {
            name: self.name.clone(),
            shape: self.shape,
            pixels: Vec::new(),
            labels: Vec::new(),
            classes: self.classes,
            mean: self.mean.clone(),
            std: self.std.clone(),
        }
    }

    /// Split into `(train, validation)` with `validation` items drawn by a seeded shuffle.
    ///
    /// # Errors
    /// [`DataError::Invalid`] if `validation > len`.
    pub fn split(&self, validation: usize, seed: u64) -> Result<(Self, Self)> {
        if validation > self.len() {
            return Err(DataError::Invalid(format!(
                "validation size {validation} exceeds {} items",
                self.len()
            )));
        }
        let idx = self.shuffled_indices(seed);
        let (val, train) = idx.split_at(validation);
        let mut train = self.subset(train)?;
        let mut val = self.subset(val)?;
        train.name = format!("{}-train-split", self.name);
        val.name = format!("{}-val-split", self.name);
        Ok((train, val))
    }

    /// The fast path: build a normalised batch straight from memory for these indices.
    ///
    /// # Errors
    /// [`DataError::Invalid`] for an empty batch or an index out of range.
    pub fn batch(&self, indices: &[usize], device: &Device) -> Result<VisionBatch> {
        if indices.is_empty() {
            return Err(DataError::Invalid("empty batch".into()));
        }
        let [c, h, w] = self.shape;
        let per = c * h * w;
        let plane = h * w;
        let mut x = Vec::with_capacity(indices.len() * per);
        let mut y = Vec::with_capacity(indices.len());
        for &i in indices {
            self.check_index(i)?;
            let img = &self.pixels[i * per..(i + 1) * per];
            for (k, &p) in img.iter().enumerate() {
                let ch = k / plane;
                x.push((p as f32 / 255.0 - self.mean[ch]) / self.std[ch]);
            }
            y.push(self.labels[i] as i64);
        }
        let b = indices.len();
        Ok(VisionBatch {
            images: Tensor::<4>::from_data(TensorData::new(x, [b, c, h, w]), device),
            targets: Tensor::<1, Int>::from_data(TensorData::new(y, [b]), device),
        })
    }

    /// Batches of `batch_size` over a seeded shuffle (the last partial batch is kept).
    pub fn epoch_batches(&self, batch_size: usize, seed: u64) -> Vec<Vec<usize>> {
        let idx = self.shuffled_indices(seed);
        idx.chunks(batch_size.max(1))
            .map(<[usize]>::to_vec)
            .collect()
    }
}

impl Dataset<VisionItem> for VisionDataset {
    fn get(&self, index: usize) -> std::result::Result<VisionItem, DatasetError> {
        let per = self.shape.iter().product::<usize>();
        if index >= self.len() {
            return Err(DatasetError::new(DataError::Invalid(format!(
                "index {index} out of range for {} items",
                self.len()
            ))));
        }
        Ok(VisionItem {
            pixels: self.pixels[index * per..(index + 1) * per].to_vec(),
            label: self.labels[index],
        })
    }

    fn len(&self) -> usize {
        self.labels.len()
    }
}

/// A burn [`Batcher`] that normalises with per-channel mean and std.
#[derive(Debug, Clone)]
pub struct VisionBatcher {
    shape: [usize; 3],
    mean: Vec<f32>,
    std: Vec<f32>,
}

impl VisionBatcher {
    /// The batcher matching a dataset's shape and normalisation.
    pub fn for_dataset(ds: &VisionDataset) -> Self {
        Self {
            shape: ds.shape,
            mean: ds.mean.clone(),
            std: ds.std.clone(),
        }
    }
}

impl Batcher<VisionItem, VisionBatch> for VisionBatcher {
    fn batch(&self, items: Vec<VisionItem>, device: &Device) -> VisionBatch {
        let [c, h, w] = self.shape;
        let plane = h * w;
        let b = items.len();
        let mut x = Vec::with_capacity(b * c * plane);
        let mut y = Vec::with_capacity(b);
        for it in &items {
            for (k, &p) in it.pixels.iter().enumerate() {
                let ch = (k / plane).min(c - 1);
                x.push((p as f32 / 255.0 - self.mean[ch]) / self.std[ch]);
            }
            y.push(it.label as i64);
        }
        VisionBatch {
            images: Tensor::<4>::from_data(TensorData::new(x, [b, c, h, w]), device),
            targets: Tensor::<1, Int>::from_data(TensorData::new(y, [b]), device),
        }
    }
}
