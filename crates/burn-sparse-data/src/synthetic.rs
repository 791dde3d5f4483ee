//! A generated dataset for tests and smoke runs: no files, the same images on every machine.

use burn_sparse_mask::SparseRng;

use crate::dataset::VisionDataset;
use crate::error::Result;
use crate::mnist::Splits;

/// A generated 4-class problem of 1x8x8 grey images: four fixed class prototypes plus Gaussian
/// noise (std 0.45 of the pixel range), clamped to `[0, 1]` and quantised to bytes. Item `i` is
/// of class `i % 4`. The data is fixed (a run's seed does not change it) and identical on every
/// platform ([`SparseRng`]); LeNet-300-100 learns it in an epoch, but not perfectly, so
/// accuracies vary with the method.
#[derive(Debug, Clone, Copy)]
pub struct Synthetic;

impl Synthetic {
    /// `train` training and `test` test images.
    ///
    /// # Errors
    /// Never in practice (the sizes are consistent); typed as every loader is.
    pub fn generate(train: usize, test: usize) -> Result<Splits> {
        let (classes, side) = (4usize, 8usize);
        let per = side * side;
        let mut rng = SparseRng::new(0x5eed_da7a);
        let protos: Vec<Vec<f64>> = (0..classes)
            .map(|_| (0..per).map(|_| rng.next_f64()).collect())
            .collect();
        let mut make = |n: usize, name: &str| {
            let mut px = Vec::with_capacity(n * per);
            let mut lb = Vec::with_capacity(n);
            for i in 0..n {
                let c = i % classes;
                lb.push(c as u8);
                for &p in &protos[c] {
                    let v = (p + 0.45 * rng.normal()).clamp(0.0, 1.0);
                    px.push((v * 255.0).round() as u8);
                }
            }
            VisionDataset::new(name, [1, side, side], px, lb, classes, vec![0.5], vec![0.3])
        };
        Ok(Splits {
            train: make(train, "synthetic-train")?,
            test: make(test, "synthetic-test")?,
            files: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::data::dataset::Dataset;

    fn pixels(d: &VisionDataset) -> Vec<Vec<u8>> {
        (0..d.len()).map(|i| d.get(i).unwrap().pixels).collect()
    }

    #[test]
    fn the_generated_data_is_fixed_and_balanced() {
        let a = Synthetic::generate(40, 8).unwrap();
        let b = Synthetic::generate(40, 8).unwrap();
        assert_eq!(a.train.shape(), [1, 8, 8]);
        assert_eq!((a.train.len(), a.test.len()), (40, 8));
        assert_eq!(a.train.labels(), b.train.labels());
        assert_eq!(pixels(&a.train), pixels(&b.train));
        for c in 0..4u8 {
            assert_eq!(a.train.labels().iter().filter(|&&l| l == c).count(), 10);
        }
        // Test images are drawn after the training ones: other noise, same prototypes.
        assert_ne!(pixels(&a.test)[0], pixels(&a.train)[0]);
        assert!(a.files.is_empty());
    }
}
