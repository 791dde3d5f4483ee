//! The runner's error type.

use std::path::PathBuf;

/// Everything the runner can fail with. Nothing here panics on user input.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A config field has a bad value; `field` is its path (`optimizer.lr`).
    Config {
        /// The field path.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A config file does not parse.
    Parse {
        /// The file (or `--set`).
        origin: String,
        /// The parser's message with its position.
        message: String,
    },
    /// A file could not be read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A run directory holds something unexpected (another config, a corrupt file).
    RunDir {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// From the mask crate (training, checkpoints).
    Mask(burn_sparse::mask::MaskError),
    /// From the data crate.
    Data(burn_sparse::data::DataError),
    /// From the saliency crate.
    Saliency(burn_sparse::saliency::SaliencyError),
    /// From the lottery crate.
    Lottery(burn_sparse::lottery::LotteryError),
    /// From the dynamic crate (a DST plan the CLI could not say as a config field).
    Dst(burn_sparse::dynamic::DstError),
    /// From the training loop.
    Train(burn_sparse::train::TrainError),
    /// From the truly sparse layers or their topology updates (`compute = "sparse"`).
    Sparse(burn_sparse::sparse_dst::SparseDstError),
    /// A plot could not be drawn.
    Plot {
        /// The plot's file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Another process holds the run directory's lock.
    Locked {
        /// The run directory.
        path: PathBuf,
        /// The holder's process id, when it could be read.
        pid: Option<u32>,
    },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Config { field, message } => {
                write!(f, "config field `{}`: {}", clip(field), clip(message))
            }
            Error::Parse { origin, message } => {
                write!(f, "cannot parse {}: {}", clip(origin), clip(message))
            }
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::RunDir { path, message } => write!(f, "{}: {message}", path.display()),
            Error::Mask(e) => write!(f, "{e}"),
            Error::Data(e) => write!(f, "{e}"),
            Error::Saliency(e) => write!(f, "{e}"),
            Error::Lottery(e) => write!(f, "{e}"),
            Error::Dst(e) => write!(f, "{e}"),
            Error::Train(e) => write!(f, "{e}"),
            Error::Sparse(e) => write!(f, "{e}"),
            Error::Plot { path, message } => {
                write!(f, "{}: cannot draw the plot: {message}", path.display())
            }
            Error::Locked { path, pid } => match pid {
                Some(p) => write!(f, "{}: in use by PID {p}", path.display()),
                None => write!(f, "{}: in use by another process", path.display()),
            },
        }
    }
}

/// The most characters of user text an error message repeats.
const MAX_ECHO: usize = 240;

/// `s`, or its first [`MAX_ECHO`] characters and how much was left out: a 50 MB value in a
/// config is named, not printed.
fn clip(s: &str) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(MAX_ECHO) {
        None => s.into(),
        Some((i, _)) => format!("{}… ({} more bytes)", &s[..i], s.len() - i).into(),
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Mask(e) => Some(e),
            Error::Data(e) => Some(e),
            Error::Saliency(e) => Some(e),
            Error::Lottery(e) => Some(e),
            Error::Dst(e) => Some(e),
            Error::Train(e) => Some(e),
            Error::Sparse(e) => Some(e),
            _ => None,
        }
    }
}

impl From<burn_sparse::mask::MaskError> for Error {
    fn from(e: burn_sparse::mask::MaskError) -> Self {
        Error::Mask(e)
    }
}

impl From<burn_sparse::data::DataError> for Error {
    fn from(e: burn_sparse::data::DataError) -> Self {
        Error::Data(e)
    }
}

impl From<burn_sparse::saliency::SaliencyError> for Error {
    fn from(e: burn_sparse::saliency::SaliencyError) -> Self {
        Error::Saliency(e)
    }
}

impl From<burn_sparse::lottery::LotteryError> for Error {
    fn from(e: burn_sparse::lottery::LotteryError) -> Self {
        Error::Lottery(e)
    }
}

impl From<burn_sparse::dynamic::DstError> for Error {
    fn from(e: burn_sparse::dynamic::DstError) -> Self {
        Error::Dst(e)
    }
}

impl From<burn_sparse::train::TrainError> for Error {
    fn from(e: burn_sparse::train::TrainError) -> Self {
        Error::Train(e)
    }
}

impl From<burn_sparse::sparse_dst::SparseDstError> for Error {
    fn from(e: burn_sparse::sparse_dst::SparseDstError) -> Self {
        Error::Sparse(e)
    }
}

impl From<burn_sparse::layers::LayerError> for Error {
    fn from(e: burn_sparse::layers::LayerError) -> Self {
        Error::Sparse(e.into())
    }
}

/// The runner's result.
pub type Result<T> = std::result::Result<T, Error>;

/// The largest file a run directory holds (a model checkpoint): 16 GiB.
const MAX_RUN_FILE: u64 = 16 << 30;

/// The largest text file read (a config, a README to splice): 16 MiB.
pub(crate) const MAX_TEXT_FILE: u64 = 16 << 20;

/// Read a run-directory file, naming it in the error; a FIFO or device is refused at once
/// (see [`burn_sparse::mask::checkpoint::read_bounded`]).
pub(crate) fn read(path: &std::path::Path) -> Result<Vec<u8>> {
    read_at_most(path, MAX_RUN_FILE)
}

/// Read a regular file of at most `max` bytes, naming it in the error.
pub(crate) fn read_at_most(path: &std::path::Path, max: u64) -> Result<Vec<u8>> {
    burn_sparse::mask::checkpoint::read_bounded(path, max).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    })
}

/// Write a file atomically (temp file, fsync, rename).
pub(crate) fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    burn_sparse::mask::checkpoint::atomic_write(path, bytes).map_err(Error::Mask)
}
