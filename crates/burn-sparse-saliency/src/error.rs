//! Errors of the saliency crate.

use burn_sparse_mask::MaskError;

/// What can go wrong when scoring.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SaliencyError {
    /// From masks and top-k (bad sparsity, a layer left empty, NaN scores ...).
    #[error(transparent)]
    Mask(#[from] MaskError),
    /// No data, or a batch with no rows.
    #[error("{method}: empty batch")]
    EmptyBatch {
        /// The scorer.
        method: &'static str,
    },
    /// A NaN or infinite loss (or objective) at scoring time.
    #[error("{method}: non-finite loss {value} at scoring time")]
    NonFiniteLoss {
        /// The scorer.
        method: &'static str,
        /// The value.
        value: f32,
    },
    /// An invalid option.
    #[error("invalid option `{field}`: {message}")]
    InvalidConfig {
        /// The option.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// The saliency crate's result type.
pub type Result<T, E = SaliencyError> = std::result::Result<T, E>;
