//! Errors of the layers crate.

use burn_sparse_kernels::KernelError;

/// What can go wrong when building, converting or running a sparse layer with user data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayerError {
    /// A density outside `(0, 1]`, or NaN.
    #[error("invalid density {0} (expected a number in (0, 1])")]
    InvalidDensity(f64),
    /// A tensor whose shape does not fit the layer.
    #[error("{what}: expected shape {expected:?}, got {got:?}")]
    Shape {
        /// Which tensor.
        what: &'static str,
        /// The shape the layer needs.
        expected: Vec<usize>,
        /// The shape it got.
        got: Vec<usize>,
    },
    /// An invalid pattern (coordinates out of range or duplicated, e.g. from a corrupt record).
    #[error("invalid sparsity pattern: {0}")]
    Kernel(#[from] KernelError),
    /// A tensor that could not be read back to the host.
    #[error("cannot read tensor data: {0}")]
    Data(String),
}

/// `Result` with [`LayerError`].
pub type Result<T> = std::result::Result<T, LayerError>;
