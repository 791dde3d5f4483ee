//! Errors of the mask crate.

use std::path::PathBuf;

/// Everything that can go wrong when building, applying, saving or loading masks, or when
/// stepping a sparse optimizer. Bad user input is always one of these, never a panic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MaskError {
    /// A sparsity (or density) that is NaN or outside its range.
    #[error("invalid {what}: {value} (expected a number in {range})")]
    InvalidFraction {
        /// Which quantity: `sparsity`, `density`, `drop fraction`, ...
        what: &'static str,
        /// The offending value.
        value: f64,
        /// The accepted range, written out for the message.
        range: &'static str,
    },
    /// A mask whose shape differs from the weight it covers.
    #[error("mask for `{param}` has shape {mask:?} but the weight has shape {weight:?}")]
    ShapeMismatch {
        /// The parameter path.
        param: String,
        /// The mask's shape.
        mask: Vec<usize>,
        /// The weight's shape.
        weight: Vec<usize>,
    },
    /// A parameter path that the model does not have.
    #[error("unknown parameter `{name}`; the model has: {known}")]
    UnknownParam {
        /// The name that was asked for.
        name: String,
        /// The prunable (or all) parameter paths, comma separated.
        known: String,
    },
    /// A filter or model that selects no prunable parameter.
    #[error("no prunable parameter: {0}")]
    EmptyPrunableSet(String),
    /// An invalid regular expression in a filter.
    #[error("invalid parameter regex `{pattern}`: {message}")]
    InvalidRegex {
        /// The pattern.
        pattern: String,
        /// The regex engine's message.
        message: String,
    },
    /// A score vector containing NaN.
    #[error("scores for `{param}` contain NaN at flat index {index}")]
    NanScore {
        /// The parameter path.
        param: String,
        /// The first NaN's flat index.
        index: usize,
    },
    /// A top-k asked for more survivors than there are weights.
    #[error("cannot keep {k} of {n} weights")]
    TooManySurvivors {
        /// Requested survivors.
        k: usize,
        /// Available weights.
        n: usize,
    },
    /// The requested budget cannot be met (for example, fixed layers already exceed it).
    #[error("infeasible sparsity budget: {0}")]
    InfeasibleBudget(String),
    /// A sparsity that leaves a layer with no weight at all.
    #[error(
        "layer `{param}` would keep 0 of {numel} weights; allow empty layers explicitly if intended"
    )]
    EmptyLayer {
        /// The parameter path.
        param: String,
        /// Its size.
        numel: usize,
    },
    /// A configuration value that is out of range.
    #[error("invalid config field `{field}`: {message}")]
    InvalidConfig {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A loss or gradient that is NaN or infinite.
    #[error("non-finite {what}: {value}")]
    NonFinite {
        /// What was checked (`loss`, `gradient of l1.weight`, ...).
        what: String,
        /// The value seen.
        value: f64,
    },
    /// A mask set that does not belong to this model (parameter ids or shapes differ).
    #[error("mask set does not match the model: {0}")]
    ModelMismatch(String),
    /// An I/O error while reading or writing a checkpoint.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint file that is truncated, corrupt or of another format.
    #[error("corrupt checkpoint {path}: {message}")]
    CorruptCheckpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Reading tensor data back from the device failed.
    #[error("tensor data error: {0}")]
    Data(String),
}

/// The mask crate's result type.
pub type Result<T, E = MaskError> = std::result::Result<T, E>;

impl MaskError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        MaskError::Io {
            path: path.into(),
            source,
        }
    }
}
