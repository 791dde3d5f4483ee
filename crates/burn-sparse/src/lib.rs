//! # burn-sparse
//!
//! Sparse training for [burn](https://burn.dev): train sparse networks instead of training
//! dense and pruning. This facade re-exports the crates behind features and adds the reference
//! models and a small training loop.
//!
//! | module | crate | feature |
//! |---|---|---|
//! | [`mask`] | `burn-sparse-mask`: masks, top-k, distributions, schedules, sparse optimizers | always |
//! | [`data`] | `burn-sparse-data`: MNIST, Fashion-MNIST, CIFAR-10 | `data` (default) |
//! | [`dynamic`] | `burn-sparse-dynamic`: SET, RigL, SNFS, static | `dynamic` (default) |
//! | [`saliency`] | `burn-sparse-saliency`: magnitude, random, SNIP, GraSP, SynFlow | `saliency` (default) |
//! | [`lottery`] | `burn-sparse-lottery`: IMP with rewinding, baselines, linear mode connectivity | `lottery` (default) |
//! | [`layers`] | `burn-sparse-layers`: `SparseLinear`, whose CPU cost follows its non-zeros | always |
//! | [`kernels`] | `burn-sparse-kernels`: the sparse CPU kernels, no burn dependency | always |
//! | [`models`] | LeNet-300-100, LeNet-5, Conv-2/4/6 | always |
//! | [`sparse_dst`] | SET, RigL, static on truly sparse layers (`SparseMlp`) | always |
//! | [`train`] | a hand-written training loop with exact masked steps | always |
//!
//! Backends: the CPU backend `flex` always; `wgpu`, `cuda` and `ndarray` behind features of
//! the same names. See [`device::device_from_name`].
//!
//! Your own model needs nothing but `#[derive(Module)]`:
//!
//! ```
//! use burn::module::Module;
//! use burn::nn::{Linear, LinearConfig, conv::{Conv2d, Conv2dConfig}};
//! use burn::tensor::Device;
//! use burn_sparse::prelude::*;
//!
//! #[derive(Module, Debug)]
//! struct MyNet { conv: Conv2d, fc: Linear }
//!
//! let device = Device::default().autodiff();
//! let net = MyNet {
//!     conv: Conv2dConfig::new([3, 16], [3, 3]).init(&device),
//!     fc: LinearConfig::new(16 * 30 * 30, 10).init(&device),
//! };
//! // 90% sparse, ERK per layer, largest |w| kept; conv [16,3,3,3] and fc [14400,10] together.
//! let masks = magnitude_masks(&net, &ParamFilter::new(), Sparsity::new(0.9)?,
//!                             &Scope::Layerwise(SparsityDistribution::Erk))?;
//! // Exactly round(0.1 * (432 + 144_000)) kept; ERK's density follows sum(shape)/prod(shape),
//! // so the small conv keeps 25 weights (5.8%) and the fc 14_418 (10.01%).
//! assert_eq!(masks.nnz(), 14_443);
//! let per_layer: Vec<usize> = masks.layers().iter().map(|l| l.nnz()).collect();
//! assert_eq!(per_layer, [25, 14_418]);
//! let net = masks.apply(net);
//! let mut optim = SparseOptimizer::new(SgdRule::default(), masks)?; // keeps the zeros exact
//! println!("{}", optim.masks());
//!
//! // One SGD step on a real gradient: the kept weights move, the pruned ones stay exactly 0.
//! use burn::optim::GradientsParams;
//! use burn::tensor::Tensor;
//! let y = net.fc.forward(net.conv.forward(Tensor::ones([2, 3, 32, 32], &device)).reshape([2, 14_400]));
//! let grads = GradientsParams::from_grads(y.powi_scalar(2).mean().backward(), &net);
//! let before = burn_sparse::mask::to_host(net.conv.weight.val())?;
//! let net = optim.step(0.1, net, grads)?;
//! let after = burn_sparse::mask::to_host(net.conv.weight.val())?;
//! let bits = optim.masks().layers()[0].bits();
//! assert!(bits.iter().zip(before.iter().zip(&after)).all(|(k, (b, a))| if *k { a != b } else { *a == 0.0 }));
//! # Ok::<(), burn_sparse::mask::MaskError>(())
//! ```

pub use burn_sparse_mask as mask;

pub use burn_sparse_kernels as kernels;
/// Truly sparse layers ([`layers::SparseLinear`]) and their CPU kernels.
pub use burn_sparse_layers as layers;

#[cfg(feature = "data")]
pub use burn_sparse_data as data;

#[cfg(feature = "dynamic")]
pub use burn_sparse_dynamic as dynamic;

#[cfg(feature = "saliency")]
pub use burn_sparse_saliency as saliency;

#[cfg(feature = "lottery")]
pub use burn_sparse_lottery as lottery;

pub mod device;
pub mod models;
pub mod sparse_dst;
pub mod train;
pub mod zoo;

/// The common imports.
pub mod prelude {
    pub use crate::models::{
        Classifier, ConvNet, ConvNetConfig, LeNet5, LeNet5Config, LeNet300, LeNet300Config,
        SparseMlp, SparseMlpConfig,
    };
    pub use crate::train::{TrainConfig, accuracy, train_epoch};
    #[cfg(feature = "data")]
    pub use burn_sparse_data::{Cifar10, FashionMnist, Mnist, VisionDataset};
    #[cfg(feature = "dynamic")]
    pub use burn_sparse_dynamic::{DstMethod, DstPlan, RiglUpdater, SetUpdater, Snfs};
    pub use burn_sparse_layers::{Compute, SparseLinear, SparseLinearConfig};
    #[cfg(feature = "lottery")]
    pub use burn_sparse_lottery::{Imp, ImpConfig, PruneRate, Rewind, Variant};
    pub use burn_sparse_mask::prelude::*;
    #[cfg(feature = "saliency")]
    pub use burn_sparse_saliency::{
        Grasp, Magnitude, PruneConfig, RandomScore, Saliency, Snip, SynFlow, prune_at_init,
    };
}
