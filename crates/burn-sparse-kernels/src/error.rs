//! Errors of the kernels crate.

/// What can go wrong when building a pattern or calling a kernel with user data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// A coordinate outside the weight.
    #[error("slot {slot}: coordinate ({row}, {col}) outside a [{rows}, {cols}] weight")]
    OutOfRange {
        /// The slot.
        slot: usize,
        /// Its row (input feature).
        row: u64,
        /// Its column (output feature).
        col: u64,
        /// Rows of the weight.
        rows: usize,
        /// Columns of the weight.
        cols: usize,
    },
    /// Two slots at the same coordinate.
    #[error("slots {first} and {second} both sit at ({row}, {col})")]
    Duplicate {
        /// The lower slot.
        first: usize,
        /// The higher slot.
        second: usize,
        /// Row.
        row: usize,
        /// Column.
        col: usize,
    },
    /// A dimension or count that does not fit the 32-bit indices.
    #[error("{what} = {value} does not fit 32-bit indices")]
    TooLarge {
        /// Which quantity.
        what: &'static str,
        /// Its value.
        value: u128,
    },
    /// A buffer whose length differs from what the shapes require.
    #[error("{what}: expected {expected} elements, got {got}")]
    Length {
        /// Which buffer.
        what: &'static str,
        /// Required length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// A NaN grow score (a NaN in the activations or the output gradient); the lowest such
    /// position of the layer.
    #[error("the grow score at ({row}, {col}) is NaN")]
    NanScore {
        /// Row (input feature).
        row: usize,
        /// Column (output feature).
        col: usize,
    },
    /// Coordinate lists of different lengths.
    #[error("{rows} row indices but {cols} column indices")]
    CoordLength {
        /// Row-index count.
        rows: usize,
        /// Column-index count.
        cols: usize,
    },
}

/// `Result` with [`KernelError`].
pub type Result<T> = std::result::Result<T, KernelError>;
