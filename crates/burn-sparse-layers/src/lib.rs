//! # burn-sparse-layers
//!
//! Truly sparse layers for burn: [`SparseLinear`] stores only its non-zeros (a float `Param`
//! of values and an integer `Param` of coordinates) and, on the Flex CPU backend, computes
//! only with them, through the kernels of `burn-sparse-kernels` and a burn operation with its
//! own backward pass ([`ops::SparseLinearBackend`]). Every other backend (wgpu, cuda, ndarray)
//! computes the same layer masked-dense on the same parameters.
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! use burn_sparse_layers::SparseLinearConfig;
//!
//! let device = Device::flex().autodiff();
//! // 784 -> 300 at 5% density: 11,760 weights instead of 235,200.
//! let layer = SparseLinearConfig::new(784, 300).with_density(0.05).init(&device)?;
//! assert_eq!(layer.nnz(), 11_760);
//! assert!(layer.uses_kernels());
//! let x = Tensor::<2>::ones([8, 784], &device);
//! let y = layer.forward(x);
//! assert_eq!(y.dims(), [8, 300]);
//! let grads = y.sum().backward();
//! assert_eq!(layer.values.grad(&grads).unwrap().dims(), [11_760]); // nnz-sized gradient
//! # Ok::<(), burn_sparse_layers::LayerError>(())
//! ```

mod error;
mod linear;
pub mod ops;
pub mod scratch;

pub use error::{LayerError, Result};
pub use linear::{
    Compute, PatternCache, SPARSE_MAX_DENSITY, SlotMove, SparseLinear, SparseLinearConfig,
};
