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

/// Training-time image augmentation, applied to the stored pixels before normalisation.
///
/// `max_shift` translates each image by a random whole number of pixels in `-max_shift..=
/// max_shift` along each axis, filling the uncovered border with 0 (the dataset's background
/// before normalisation); `hflip` mirrors it left-right with probability 1/2 (for CIFAR-10, not
/// for digits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Augmentation {
    /// Largest translation in pixels along each axis (0: none).
    pub max_shift: usize,
    /// Random horizontal flips.
    pub hflip: bool,
}

impl Augmentation {
    /// No augmentation.
    pub fn none() -> Self {
        Self::default()
    }

    /// Random translations of up to `max_shift` pixels.
    pub fn shift(max_shift: usize) -> Self {
        Self {
            max_shift,
            hflip: false,
        }
    }

    /// Whether this changes nothing.
    pub fn is_none(&self) -> bool {
        self.max_shift == 0 && !self.hflip
    }

    /// Write the augmented `img` (`shape` = C, H, W) into `out`, with the random choices drawn
    /// from `seed`.
    pub fn apply(&self, img: &[u8], shape: [usize; 3], seed: u64, out: &mut [u8]) {
        let [c, h, w] = shape;
        let mut rng = SparseRng::new(seed);
        let m = self.max_shift as u64;
        let span = 2 * m + 1;
        let dy = rng.below(span) as isize - m as isize;
        let dx = rng.below(span) as isize - m as isize;
        let flip = self.hflip && rng.below(2) == 1;
        for ch in 0..c {
            for r in 0..h {
                for col in 0..w {
                    // Output pixel (r, col) reads input (r - dy, col' - dx), col' mirrored on a flip.
                    let src_c = if flip { w - 1 - col } else { col } as isize - dx;
                    let src_r = r as isize - dy;
                    let v = if (0..h as isize).contains(&src_r) && (0..w as isize).contains(&src_c)
                    {
                        img[ch * h * w + src_r as usize * w + src_c as usize]
                    } else {
                        0
                    };
                    out[ch * h * w + r * w + col] = v;
                }
            }
        }
    }
}

/// The seed of item `i`'s augmentation in an epoch seeded `seed` (a SplitMix64-style mix).
fn item_seed(seed: u64, i: usize) -> u64 {
    use burn_sparse_mask::{SPLITMIX64_GAMMA, splitmix64_mix};
    splitmix64_mix(seed ^ (i as u64).wrapping_mul(SPLITMIX64_GAMMA))
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
        self.batch_augmented(indices, &Augmentation::none(), 0, device)
    }

    /// [`VisionDataset::batch`] with `aug` applied to every image. The random choices of item
    /// `i` depend only on `seed` and `i`, so a batch is the same whatever else it holds and
    /// whichever order it is drawn in; pass a new `seed` every epoch.
    ///
    /// # Errors
    /// As [`VisionDataset::batch`].
    pub fn batch_augmented(
        &self,
        indices: &[usize],
        aug: &Augmentation,
        seed: u64,
        device: &Device,
    ) -> Result<VisionBatch> {
        if indices.is_empty() {
            return Err(DataError::Invalid("empty batch".into()));
        }
        let [c, h, w] = self.shape;
        let per = c * h * w;
        let plane = h * w;
        let mut x = Vec::with_capacity(indices.len() * per);
        let mut y = Vec::with_capacity(indices.len());
        let mut shifted = vec![0u8; if aug.is_none() { 0 } else { per }];
        let luts = channel_luts(&self.mean, &self.std);
        for &i in indices {
            self.check_index(i)?;
            let mut img = &self.pixels[i * per..(i + 1) * per];
            if !aug.is_none() {
                aug.apply(img, self.shape, item_seed(seed, i), &mut shifted);
                img = &shifted;
            }
            normalise_into(&mut x, img, &luts, plane);
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

/// Per channel, the normalised value of each of the 256 pixel values,
/// `(p / 255 - mean) / std`: the same arithmetic as per pixel, so the same bits, without an
/// integer division and two float operations per pixel on the training loop's path.
fn channel_luts(mean: &[f32], std: &[f32]) -> Vec<[f32; 256]> {
    mean.iter()
        .zip(std)
        .map(|(&m, &s)| std::array::from_fn(|p| (p as f32 / 255.0 - m) / s))
        .collect()
}

/// Append `img` (channel-major planes of `plane` pixels) normalised by `luts`; pixels past the
/// last channel's plane use the last channel's table.
fn normalise_into(x: &mut Vec<f32>, img: &[u8], luts: &[[f32; 256]], plane: usize) {
    let Some(last) = luts.len().checked_sub(1) else {
        return;
    };
    for (ch, pixels) in img.chunks(plane.max(1)).enumerate() {
        let lut = &luts[ch.min(last)];
        x.extend(pixels.iter().map(|&p| lut[usize::from(p)]));
    }
}

impl Batcher<VisionItem, VisionBatch> for VisionBatcher {
    fn batch(&self, items: Vec<VisionItem>, device: &Device) -> VisionBatch {
        let [c, h, w] = self.shape;
        let plane = h * w;
        let b = items.len();
        let mut x = Vec::with_capacity(b * c * plane);
        let mut y = Vec::with_capacity(b);
        let luts = channel_luts(&self.mean, &self.std);
        for it in &items {
            normalise_into(&mut x, &it.pixels, &luts, plane);
            y.push(it.label as i64);
        }
        VisionBatch {
            images: Tensor::<4>::from_data(TensorData::new(x, [b, c, h, w]), device),
            targets: Tensor::<1, Int>::from_data(TensorData::new(y, [b]), device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lookup tables give the per-pixel formula's bits for every pixel value and channel,
    /// through `batch` and through the `Batcher`.
    #[test]
    fn normalisation_by_table_is_the_formula_bit_for_bit() {
        let (mean, std) = (vec![0.1307f32, 0.5, 0.9], vec![0.3081f32, 0.25, 1.7]);
        // Two 3x16x16 images whose pixels run over all 256 values in every channel.
        let px: Vec<u8> = (0..2 * 3 * 256)
            .map(|i| ((i * 7 + i / 256) % 256) as u8)
            .collect();
        let ds = VisionDataset::new(
            "t",
            [3, 16, 16],
            px.clone(),
            vec![1, 2],
            3,
            mean.clone(),
            std.clone(),
        )
        .unwrap();
        let want: Vec<u32> = px
            .iter()
            .enumerate()
            .map(|(k, &p)| {
                let ch = (k % 768) / 256;
                ((p as f32 / 255.0 - mean[ch]) / std[ch]).to_bits()
            })
            .collect();
        let device = Device::default();
        let b = ds
            .batch_augmented(&[0, 1], &Augmentation::none(), 0, &device)
            .unwrap();
        let got = b.images.into_data().try_into_vec::<f32>().unwrap();
        assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want);
        let items = vec![ds.get(0).unwrap(), ds.get(1).unwrap()];
        let b = VisionBatcher::for_dataset(&ds).batch(items, &device);
        let got = b.images.into_data().try_into_vec::<f32>().unwrap();
        assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want);
    }

    /// A 1x3x3 image 1..=9 (row-major) and every shift of it by hand.
    #[test]
    fn shifts_and_flips_by_hand() {
        let img: Vec<u8> = (1..=9).collect();
        // Find seeds that give particular shifts, then check the pixels against hand tables.
        let aug = Augmentation {
            max_shift: 1,
            hflip: true,
        };
        let mut seen = std::collections::HashSet::new();
        for seed in 0..400u64 {
            let mut rng = SparseRng::new(seed);
            let dy = rng.below(3) as isize - 1;
            let dx = rng.below(3) as isize - 1;
            let flip = rng.below(2) == 1;
            let mut out = vec![0u8; 9];
            aug.apply(&img, [1, 3, 3], seed, &mut out);
            // Hand rule: out[r][c] = in[r - dy][c' - dx], c' = 2 - c on a flip, 0 outside.
            let expect: Vec<u8> = (0..9)
                .map(|k| {
                    let (r, c) = (k / 3, k % 3);
                    let c = if flip { 2 - c } else { c };
                    let (sr, sc) = (r as isize - dy, c as isize - dx);
                    if (0..3).contains(&sr) && (0..3).contains(&sc) {
                        img[(sr * 3 + sc) as usize]
                    } else {
                        0
                    }
                })
                .collect();
            assert_eq!(out, expect, "seed {seed}");
            seen.insert((dy, dx, flip));
        }
        assert_eq!(seen.len(), 18, "every shift and flip occurs");
        // Two hand tables: down-right by one, and a plain flip.
        let mut down_right = vec![0u8; 9];
        let mut flipped = vec![0u8; 9];
        for seed in 0..400u64 {
            let mut rng = SparseRng::new(seed);
            let (dy, dx, f) = (rng.below(3), rng.below(3), rng.below(2));
            if (dy, dx, f) == (2, 2, 0) {
                aug.apply(&img, [1, 3, 3], seed, &mut down_right);
            }
            if (dy, dx, f) == (1, 1, 1) {
                aug.apply(&img, [1, 3, 3], seed, &mut flipped);
            }
        }
        assert_eq!(down_right, vec![0, 0, 0, 0, 1, 2, 0, 4, 5]);
        assert_eq!(flipped, vec![3, 2, 1, 6, 5, 4, 9, 8, 7]);
    }

    #[test]
    fn augmented_batches_are_seeded_per_item() {
        let n = 6;
        let pixels: Vec<u8> = (0..n * 16).map(|v| (v * 7 % 251) as u8).collect();
        let ds = VisionDataset::new("t", [1, 4, 4], pixels, vec![0; n], 1, vec![0.0], vec![1.0])
            .unwrap();
        let d = Device::default();
        let aug = Augmentation::shift(1);
        let read = |idx: &[usize], seed| {
            ds.batch_augmented(idx, &aug, seed, &d)
                .unwrap()
                .images
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()
        };
        // Item 3 alone equals item 3 inside a batch: its draw depends on (seed, index) only.
        let alone = read(&[3], 9);
        let inside = read(&[5, 3, 1], 9);
        assert_eq!(alone[..], inside[16..32]);
        assert_eq!(read(&[0, 1, 2, 3, 4, 5], 9), read(&[0, 1, 2, 3, 4, 5], 9));
        assert_ne!(read(&[0, 1, 2, 3, 4, 5], 9), read(&[0, 1, 2, 3, 4, 5], 10));
        // No augmentation is the plain batch.
        let plain = ds
            .batch(&[2, 4], &d)
            .unwrap()
            .images
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let none = ds
            .batch_augmented(&[2, 4], &Augmentation::none(), 5, &d)
            .unwrap()
            .images
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(plain, none);
        assert!(ds.batch_augmented(&[], &aug, 0, &d).is_err());
        assert!(ds.batch_augmented(&[6], &aug, 0, &d).is_err());
    }
}
