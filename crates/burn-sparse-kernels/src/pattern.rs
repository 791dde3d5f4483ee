//! The sparsity pattern of one weight, in both orientations, with stable slot numbers.

use std::sync::OnceLock;

use crate::error::{KernelError, Result};

/// Columns per block of [`ColumnBlocks`]: 128 KiB of `dyᵀ` rows at a batch of 128, the
/// sampled `dW`'s block (`SDDMM_BLOCK_BYTES` in `kernels.rs`).
pub(crate) const BLOCK_COLS: usize = 256;

/// The CSR positions regrouped by blocks of [`BLOCK_COLS`] columns, for the sampled `dW` of a
/// layer wider than two blocks: the positions of block `k` are
/// `entries[ptr[k]..ptr[k + 1]]`, `[row, col, csr position]` ordered by row, then column. The
/// kernel walks a block's positions in one sequential pass with its `dyᵀ` rows in cache,
/// instead of resuming each row's CSR run at a cursor (a dependent load per row and block).
#[derive(Clone, Debug)]
pub(crate) struct ColumnBlocks {
    pub(crate) ptr: Vec<usize>,
    pub(crate) entries: Vec<[u32; 3]>,
}

/// A value computed from the pattern on first use and kept: patterns are equal whether or not
/// it has been built (it is a function of the rest).
#[derive(Clone, Debug)]
struct Derived<T>(OnceLock<T>);

impl<T> Default for Derived<T> {
    fn default() -> Self {
        Self(OnceLock::new())
    }
}

impl<T> PartialEq for Derived<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> Eq for Derived<T> {}

/// The positions of the non-zeros of a weight `W: [rows, cols]` (burn's `Linear` layout:
/// `rows = d_in`, `cols = d_out`, row-major flat index `row * cols + col`).
///
/// Every non-zero has a **slot**, `0..nnz`: the trainable values live in a vector in slot
/// order, so an optimizer's state is slot-indexed and never permuted. Two orientations are
/// kept for the kernels, both with rows (or columns) ascending inside each column (or row):
/// - CSC (`col_ptr`, `csc_row`, `csc_slot`): the forward product;
/// - CSR (`row_ptr`, `csr_col`, `csr_slot`, and each slot's CSR position): the input gradient
///   `dX = dY Wᵀ` and the sampled `dW`.
///
/// Building either orientation is a counting sort, O(nnz + rows + cols); so is
/// [`SparsePattern::reassign`], the only way a topology update changes the pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SparsePattern {
    rows: usize,
    cols: usize,
    slot_row: Vec<u32>,
    slot_col: Vec<u32>,
    col_ptr: Vec<usize>,
    csc_row: Vec<u32>,
    csc_slot: Vec<u32>,
    row_ptr: Vec<usize>,
    csr_col: Vec<u32>,
    csr_slot: Vec<u32>,
    slot_csr: Vec<u32>,
    /// Whether slot `s` is CSR position `s` for every `s` (`slot_csr` is the identity).
    csr_order: bool,
    /// Built by the first sampled `dW` that uses it ([`SparsePattern::column_blocks`]).
    column_blocks: Derived<ColumnBlocks>,
}

fn fits_u32(what: &'static str, value: usize) -> Result<()> {
    if value as u128 > u32::MAX as u128 {
        Err(KernelError::TooLarge {
            what,
            value: value as u128,
        })
    } else {
        Ok(())
    }
}

/// A stable counting sort of `order` by `key[order[i]]` into `buckets` buckets; returns the
/// sorted order and the bucket pointers (`buckets + 1` entries).
fn counting_sort(order: &[u32], key: &[u32], buckets: usize) -> (Vec<u32>, Vec<usize>) {
    let mut ptr = vec![0usize; buckets + 1];
    for &s in order {
        ptr[key[s as usize] as usize + 1] += 1;
    }
    for i in 0..buckets {
        ptr[i + 1] += ptr[i];
    }
    let mut next = ptr.clone();
    let mut out = vec![0u32; order.len()];
    for &s in order {
        let b = key[s as usize] as usize;
        out[next[b]] = s;
        next[b] += 1;
    }
    (out, ptr)
}

impl SparsePattern {
    /// A pattern whose slot `s` sits at `(slot_row[s], slot_col[s])`.
    ///
    /// # Errors
    /// [`KernelError::CoordLength`], [`KernelError::OutOfRange`], [`KernelError::Duplicate`],
    /// or [`KernelError::TooLarge`] when a dimension or the count exceeds `u32::MAX`.
    pub fn new(rows: usize, cols: usize, slot_row: Vec<u32>, slot_col: Vec<u32>) -> Result<Self> {
        fits_u32("rows", rows)?;
        fits_u32("cols", cols)?;
        fits_u32("nnz", slot_row.len())?;
        if slot_row.len() != slot_col.len() {
            return Err(KernelError::CoordLength {
                rows: slot_row.len(),
                cols: slot_col.len(),
            });
        }
        for (s, (&r, &c)) in slot_row.iter().zip(&slot_col).enumerate() {
            if r as usize >= rows || c as usize >= cols {
                return Err(KernelError::OutOfRange {
                    slot: s,
                    row: r as u64,
                    col: c as u64,
                    rows,
                    cols,
                });
            }
        }
        let nnz = slot_row.len();
        let all: Vec<u32> = (0..nnz as u32).collect();
        // By row, then stably by column: CSC with rows ascending in each column.
        let (by_row, _) = counting_sort(&all, &slot_row, rows);
        let (csc_slot, col_ptr) = counting_sort(&by_row, &slot_col, cols);
        let csc_row: Vec<u32> = csc_slot.iter().map(|&s| slot_row[s as usize]).collect();
        for c in 0..cols {
            for j in col_ptr[c] + 1..col_ptr[c + 1] {
                if csc_row[j] == csc_row[j - 1] {
                    let (a, b) = (csc_slot[j - 1] as usize, csc_slot[j] as usize);
                    return Err(KernelError::Duplicate {
                        first: a.min(b),
                        second: a.max(b),
                        row: csc_row[j] as usize,
                        col: c,
                    });
                }
            }
        }
        // From CSC order, stably by row: CSR with columns ascending in each row.
        let (csr_slot, row_ptr) = counting_sort(&csc_slot, &slot_row, rows);
        let csr_col: Vec<u32> = csr_slot.iter().map(|&s| slot_col[s as usize]).collect();
        let mut slot_csr = vec![0u32; nnz];
        for (j, &s) in csr_slot.iter().enumerate() {
            slot_csr[s as usize] = j as u32;
        }
        let csr_order = slot_csr.iter().enumerate().all(|(s, &j)| j as usize == s);
        Ok(Self {
            rows,
            cols,
            slot_row,
            slot_col,
            col_ptr,
            csc_row,
            csc_slot,
            row_ptr,
            csr_col,
            csr_slot,
            slot_csr,
            csr_order,
            column_blocks: Derived::default(),
        })
    }

    /// The pattern of a row-major boolean mask `[rows, cols]`; slots follow the flat index,
    /// so slot `s` is the `s`-th kept weight in row-major order.
    ///
    /// # Errors
    /// [`KernelError::Length`] if `mask.len() != rows * cols`, [`KernelError::TooLarge`].
    pub fn from_mask(rows: usize, cols: usize, mask: &[bool]) -> Result<Self> {
        let numel = rows.checked_mul(cols).ok_or(KernelError::TooLarge {
            what: "rows * cols",
            value: rows as u128 * cols as u128,
        })?;
        if mask.len() != numel {
            return Err(KernelError::Length {
                what: "mask",
                expected: numel,
                got: mask.len(),
            });
        }
        fits_u32("rows", rows)?;
        fits_u32("cols", cols)?;
        let mut slot_row = Vec::new();
        let mut slot_col = Vec::new();
        for (i, &m) in mask.iter().enumerate() {
            if m {
                slot_row.push((i / cols) as u32);
                slot_col.push((i % cols) as u32);
            }
        }
        Self::new(rows, cols, slot_row, slot_col)
    }

    /// The same slots, with `moves[i] = (slot, row, col)` placed at new coordinates; every
    /// other slot keeps its coordinate. Rebuilds both orientations in O(nnz + rows + cols).
    ///
    /// # Errors
    /// As [`SparsePattern::new`]; a slot number `>= nnz` is [`KernelError::OutOfRange`].
    pub fn reassign(&self, moves: &[(u32, u32, u32)]) -> Result<Self> {
        let mut slot_row = self.slot_row.clone();
        let mut slot_col = self.slot_col.clone();
        for &(s, r, c) in moves {
            let Some(sr) = slot_row.get_mut(s as usize) else {
                return Err(KernelError::OutOfRange {
                    slot: s as usize,
                    row: r as u64,
                    col: c as u64,
                    rows: self.rows,
                    cols: self.cols,
                });
            };
            *sr = r;
            slot_col[s as usize] = c;
        }
        Self::new(self.rows, self.cols, slot_row, slot_col)
    }

    /// Rows of the weight (`d_in`).
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Columns of the weight (`d_out`).
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Number of non-zeros (slots).
    pub fn nnz(&self) -> usize {
        self.slot_row.len()
    }
    /// `nnz / (rows * cols)` (1 for an empty weight).
    pub fn density(&self) -> f64 {
        let n = self.rows as f64 * self.cols as f64;
        if n == 0.0 { 1.0 } else { self.nnz() as f64 / n }
    }
    /// Row of every slot.
    pub fn slot_rows(&self) -> &[u32] {
        &self.slot_row
    }
    /// Column of every slot.
    pub fn slot_cols(&self) -> &[u32] {
        &self.slot_col
    }
    /// Row-major flat index of slot `s`.
    pub fn flat_index(&self, s: usize) -> usize {
        self.slot_row[s] as usize * self.cols + self.slot_col[s] as usize
    }
    /// The slot at `(row, col)`, if that position is active: a binary search in the row's CSR
    /// columns, O(log nnz_row), without a dense mask.
    pub fn slot_at(&self, row: usize, col: usize) -> Option<usize> {
        if row >= self.rows {
            return None;
        }
        let (a, b) = (self.row_ptr[row], self.row_ptr[row + 1]);
        let j = self.csr_col[a..b]
            .binary_search(&u32::try_from(col).ok()?)
            .ok()?;
        Some(self.csr_slot[a + j] as usize)
    }
    /// CSC column pointers (`cols + 1`).
    pub fn col_ptr(&self) -> &[usize] {
        &self.col_ptr
    }
    /// CSC row indices.
    pub fn csc_rows(&self) -> &[u32] {
        &self.csc_row
    }
    /// CSC slots.
    pub fn csc_slots(&self) -> &[u32] {
        &self.csc_slot
    }
    /// CSR row pointers (`rows + 1`).
    pub fn row_ptr(&self) -> &[usize] {
        &self.row_ptr
    }
    /// CSR column indices.
    pub fn csr_cols(&self) -> &[u32] {
        &self.csr_col
    }
    /// CSR slots.
    pub fn csr_slots(&self) -> &[u32] {
        &self.csr_slot
    }
    /// CSR position of every slot (the inverse of [`SparsePattern::csr_slots`]).
    pub fn slot_csr(&self) -> &[u32] {
        &self.slot_csr
    }

    /// Whether the slots are numbered in CSR order (slot `s` is the `s`-th non-zero in row-major
    /// order), as [`SparsePattern::from_mask`] numbers them: then [`SparsePattern::slot_csr`]
    /// is the identity and the sampled `dW` is written in slot order directly. A topology
    /// update that moves slots ([`SparsePattern::reassign`]) usually ends it.
    pub fn slots_in_csr_order(&self) -> bool {
        self.csr_order
    }

    /// The dense row-major weight `[rows, cols]` with `values` (slot order) at their
    /// coordinates and exact zeros elsewhere.
    ///
    /// # Errors
    /// [`KernelError::Length`] if `values.len() != nnz`.
    pub fn to_dense(&self, values: &[f32]) -> Result<Vec<f32>> {
        self.check("values", values.len(), self.nnz())?;
        let mut w = vec![0.0f32; self.rows * self.cols];
        for (s, &v) in values.iter().enumerate() {
            w[self.flat_index(s)] = v;
        }
        Ok(w)
    }

    /// The values (slot order) of a dense row-major weight `[rows, cols]` at this pattern.
    ///
    /// # Errors
    /// [`KernelError::Length`] if `dense.len() != rows * cols`.
    pub fn gather(&self, dense: &[f32]) -> Result<Vec<f32>> {
        self.check("dense weight", dense.len(), self.rows * self.cols)?;
        Ok((0..self.nnz()).map(|s| dense[self.flat_index(s)]).collect())
    }

    /// The CSR positions by blocks of [`BLOCK_COLS`] columns, built on first use in
    /// O(nnz + rows + cols) (one counting pass, one placing pass over CSR order) and kept.
    pub(crate) fn column_blocks(&self) -> &ColumnBlocks {
        self.column_blocks.0.get_or_init(|| {
            let blocks = self.cols.div_ceil(BLOCK_COLS);
            let mut ptr = vec![0usize; blocks + 1];
            for &c in &self.csr_col {
                ptr[c as usize / BLOCK_COLS + 1] += 1;
            }
            for k in 0..blocks {
                ptr[k + 1] += ptr[k];
            }
            let mut next = ptr.clone();
            let mut entries = vec![[0u32; 3]; self.nnz()];
            for r in 0..self.rows {
                for j in self.row_ptr[r]..self.row_ptr[r + 1] {
                    let c = self.csr_col[j];
                    let at = &mut next[c as usize / BLOCK_COLS];
                    // Rows, columns and positions fit u32 (checked in `new`).
                    entries[*at] = [r as u32, c, j as u32];
                    *at += 1;
                }
            }
            ColumnBlocks { ptr, entries }
        })
    }

    /// Bytes held by the pattern (both orientations, the slot coordinates and, once built,
    /// the column blocks of the sampled `dW`).
    pub fn heap_bytes(&self) -> usize {
        let blocks = self.column_blocks.0.get().map_or(0, |b| {
            std::mem::size_of_val(b.entries.as_slice()) + std::mem::size_of_val(b.ptr.as_slice())
        });
        blocks
            + 4 * (self.slot_row.len()
                + self.slot_col.len()
                + self.csc_row.len()
                + self.csc_slot.len()
                + self.csr_col.len()
                + self.csr_slot.len()
                + self.slot_csr.len())
            + std::mem::size_of::<usize>() * (self.col_ptr.len() + self.row_ptr.len())
    }

    pub(crate) fn check(&self, what: &'static str, got: usize, expected: usize) -> Result<()> {
        if got == expected {
            Ok(())
        } else {
            Err(KernelError::Length {
                what,
                expected,
                got,
            })
        }
    }
}
