//! The lottery crate's error type.

use burn_sparse_mask::MaskError;

/// An [`ImpTrainer`](crate::ImpTrainer)'s error, kept typed (the facade's trainer returns its
/// `TrainError`; downcast with `err.downcast_ref::<TrainError>()`).
pub type TrainerError = Box<dyn std::error::Error + Send + Sync>;

/// Everything the lottery driver and linear mode connectivity can fail with.
#[derive(Debug)]
#[non_exhaustive]
pub enum LotteryError {
    /// From masks, the optimizer or an archive (a rate outside `[0, 1)`, an unknown parameter,
    /// a corrupt checkpoint, I/O).
    Mask(MaskError),
    /// From the trainer: a NaN loss, a data error, whatever it returns.
    Trainer(TrainerError),
    /// A setting the driver cannot use; `field` is the [`ImpConfig`](crate::ImpConfig) field.
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Two models that are not copies of one architecture (interpolation).
    ModelMismatch(String),
}

impl std::fmt::Display for LotteryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LotteryError::Mask(e) => write!(f, "{e}"),
            LotteryError::Trainer(e) => write!(f, "training: {e}"),
            LotteryError::InvalidConfig { field, message } => {
                write!(f, "invalid lottery config `{field}`: {message}")
            }
            LotteryError::ModelMismatch(m) => write!(f, "model mismatch: {m}"),
        }
    }
}

impl std::error::Error for LotteryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LotteryError::Mask(e) => Some(e),
            LotteryError::Trainer(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}

impl From<MaskError> for LotteryError {
    fn from(e: MaskError) -> Self {
        LotteryError::Mask(e)
    }
}

/// The lottery crate's result.
pub type Result<T> = std::result::Result<T, LotteryError>;
