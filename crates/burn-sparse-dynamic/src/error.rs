//! The dynamic crate's error type.

use burn_sparse_mask::MaskError;

/// What building a DST run can fail with. (A topology update itself, inside
/// [`SparseOptimizer::step`](burn_sparse_mask::SparseOptimizer::step), fails with the mask
/// crate's [`MaskError`], which its `TopologyUpdater` trait returns.)
#[derive(Debug)]
#[non_exhaustive]
pub enum DstError {
    /// A setting of a plan or config; `field` is the field of that struct (`delta_t`,
    /// `end_fraction`, `total_steps` ...).
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// From the masks, a schedule or the optimizer (a fraction outside its range, a schedule
    /// with no update step ...).
    Mask(MaskError),
}

impl std::fmt::Display for DstError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DstError::InvalidConfig { field, message } => {
                write!(f, "invalid DST config `{field}`: {message}")
            }
            DstError::Mask(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for DstError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DstError::Mask(e) => Some(e),
            DstError::InvalidConfig { .. } => None,
        }
    }
}

impl From<MaskError> for DstError {
    fn from(e: MaskError) -> Self {
        DstError::Mask(e)
    }
}

/// The dynamic crate's result.
pub type Result<T> = std::result::Result<T, DstError>;
