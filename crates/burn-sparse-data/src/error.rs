//! Errors of the data crate.

use std::path::PathBuf;

/// Everything that can go wrong reading or fetching a dataset. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// I/O error.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with the format's magic number.
    #[error("{path}: wrong magic {found:#010x}, expected {expected}")]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// What was found.
        found: u32,
        /// What was expected.
        expected: &'static str,
    },
    /// The header's dimensions disagree with the file length.
    #[error("{path}: header says {expected} bytes of data, the file has {actual}")]
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// Bytes the header implies.
        expected: u64,
        /// Bytes present.
        actual: u64,
    },
    /// The header claims a size no real file could have.
    #[error("{path}: absurd header: {message}")]
    AbsurdHeader {
        /// The file.
        path: PathBuf,
        /// What is absurd.
        message: String,
    },
    /// The file ends before its header does.
    #[error("{path}: truncated ({len} bytes, need at least {need})")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// The minimum length.
        need: u64,
    },
    /// A label outside `0..classes`.
    #[error("{path}: label {value} at index {index} is out of range 0..{classes}")]
    LabelOutOfRange {
        /// The file.
        path: PathBuf,
        /// Position.
        index: usize,
        /// The label.
        value: u8,
        /// Number of classes.
        classes: u8,
    },
    /// Image and label files of different lengths.
    #[error("{images_path}: {images} images but {labels_path}: {labels} labels")]
    CountMismatch {
        /// The image file.
        images_path: PathBuf,
        /// Image count.
        images: usize,
        /// The label file.
        labels_path: PathBuf,
        /// Label count.
        labels: usize,
    },
    /// Image dimensions other than the dataset's.
    #[error("{path}: images are {found:?}, expected {expected:?}")]
    WrongShape {
        /// The file.
        path: PathBuf,
        /// Found image dims.
        found: Vec<usize>,
        /// Expected image dims.
        expected: Vec<usize>,
    },
    /// The uncompressed bytes do not have the official sha256.
    #[error("{path}: sha256 {actual} does not match the official {expected}")]
    Checksum {
        /// The file.
        path: PathBuf,
        /// Official digest.
        expected: String,
        /// Digest of the file.
        actual: String,
    },
    /// A gzip stream that does not decode.
    #[error("{path}: bad gzip data: {message}")]
    Gzip {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        message: String,
    },
    /// No source could provide the files.
    #[error("could not obtain {dataset}; tried:\n{}\n{hint}", attempts.iter().map(|(s, r)| format!("  - {s}: {r}")).collect::<Vec<_>>().join("\n"))]
    FetchFailed {
        /// The dataset.
        dataset: String,
        /// Every source tried, with why it failed.
        attempts: Vec<(String, String)>,
        /// How to place the files by hand.
        hint: String,
    },
    /// An invalid argument (split sizes, batch indices ...).
    #[error("invalid argument: {0}")]
    Invalid(String),
}

/// The data crate's result type.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}
