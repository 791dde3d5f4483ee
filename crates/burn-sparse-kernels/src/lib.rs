//! # burn-sparse-kernels
//!
//! CPU kernels of truly sparse linear layers, in plain Rust with no burn dependency, so they
//! can be tested and benchmarked alone. A layer `y = x W` with `W: [d_in, d_out]` (burn's
//! `Linear` layout) stores only its non-zeros: a [`SparsePattern`] (CSC and CSR views of one
//! set of coordinates, with stable slot numbers) and a value per slot. [`Kernels`] computes the
//! forward product, the input gradient and the gradient of the values (sampled at the active
//! positions only), on **feature-major** activations (`[features, batch]`), where each non-zero
//! is one vectorised pass over a contiguous batch vector.
//!
//! - Multithreaded with rayon; each output is computed by one thread in a fixed order, so the
//!   results do not depend on the thread count. The calling thread starts on a product's
//!   chunks at once and shares the rest with the pool as it wakes ([`shared::share`]), as does
//!   RigL's grow step.
//! - Vectorised by the compiler for AVX-512, AVX2 or the portable target, chosen at run time
//!   ([`Isa`]); the bodies never reassociate or fuse, so every instruction set gives
//!   bit-identical results.
//! - The only `unsafe`: calls into a `#[target_feature]` copy after the CPU was checked to
//!   have that feature (`simd.rs`), the explicit vector loads and stores of the dot products
//!   and the 8x8 transpose tile (bounds asserted first), and prefetch hints (which never
//!   fault); each block says why it is sound.
//!
//! ```
//! use burn_sparse_kernels::{Kernels, SparsePattern};
//!
//! // W = [[1, 0], [0, 2], [3, 0]]: 3 inputs, 2 outputs, 3 non-zeros.
//! let mask = [true, false, false, true, true, false];
//! let p = SparsePattern::from_mask(3, 2, &mask)?;
//! let values = [1.0, 2.0, 3.0]; // slot order = row-major order of the kept weights
//! // A batch of 2, feature-major: xᵀ[k, b]; x₀ = (1, 1, 1), x₁ = (1, 2, 3).
//! let xt = [1.0, 1.0, 1.0, 2.0, 1.0, 3.0];
//! let mut yt = [0.0; 4];
//! Kernels::default().forward(&p, &values, &xt, 2, &mut yt)?;
//! assert_eq!(yt, [4.0, 10.0, 2.0, 4.0]); // yᵀ[n, b]: y₀ = (4, 2), y₁ = (10, 4)
//! # Ok::<(), burn_sparse_kernels::KernelError>(())
//! ```

mod error;
mod grow;
mod kernels;
mod pattern;
pub mod shared;
pub mod simd;

pub use error::{KernelError, Result};
pub use grow::Grown;
pub use kernels::{Kernels, reference};
pub use pattern::SparsePattern;
pub use simd::Isa;
