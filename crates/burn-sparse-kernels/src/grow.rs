//! RigL's grow step without the dense gradient: the `k` inactive positions with the largest
//! `|dW|`, `dW = xᵀ dY`, computed tile by tile with a running exact top-k, so no more than one
//! tile of `dW` (`block_cols x ROW_TILE` floats per thread) exists at a time.
//!
//! The order is the masked path's: the larger `|dW|` first, ties to the lower flat index
//! `row * cols + col` ([`burn_sparse_mask::top_k`]'s rule on the row-major layer). The set of
//! `k` positions is unique under that total order, so the result does not depend on the tile
//! sizes or on the number of threads. Every score is the dot product of
//! [`Kernels::backward_values`](crate::Kernels::backward_values), so a grown position's
//! gradient is the one the sampled `dW` gives it on the next step.

use std::cmp::Ordering;

use rayon::prelude::*;

use crate::error::{KernelError, Result};
use crate::kernels::dense_tile_mv;
use crate::pattern::SparsePattern;
use crate::simd::Isa;

/// Rows of `dW` computed per tile: 64 rows of a batch of 128 are 32 KiB of `xᵀ`, which stay in
/// cache while the tile's columns pass over them.
const ROW_TILE: usize = 64;

/// A grown position and its gradient `dW[row, col]` at this step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Grown {
    /// Row (input feature).
    pub row: u32,
    /// Column (output feature).
    pub col: u32,
    /// `dW[row, col] = <xᵀ[row, :], dyᵀ[col, :]>`.
    pub grad: f32,
}

/// A candidate in the running top-k. `Ord` sorts the best first ("less" is better): the
/// higher score, then the lower flat index; the maximum is the worst.
#[derive(Clone, Copy, Debug)]
struct Cand {
    score: f32,
    flat: u64,
    grad: f32,
}

impl PartialEq for Cand {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Cand {}
impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Cand {
    fn cmp(&self, o: &Self) -> Ordering {
        o.score.total_cmp(&self.score).then(self.flat.cmp(&o.flat))
    }
}

/// The best `k` candidates seen so far, and the lowest flat index whose score was NaN.
///
/// A buffer of up to `2k` candidates (at least [`MIN_BUFFER`]) and a threshold: a candidate
/// enters only if it beats the `k`-th best of the last prune; when the buffer is full, a
/// selection (`select_nth_unstable`, O(k)) keeps the best `k` and raises the threshold. Each
/// prune follows at least `k` accepted candidates, so an offer costs O(1) amortised (a binary
/// heap of `k` paid a sift of `log k` cache misses per improvement, which dominated on layers
/// of tens of millions of positions). Exact: the order is total, so the best `k` are unique.
struct TopK {
    k: usize,
    buf: Vec<Cand>,
    /// The `k`-th best candidate after the last prune (None before the first).
    worst: Option<Cand>,
    nan: Option<u64>,
}

/// The smallest buffer, so that tiny `k` do not prune after every few candidates.
const MIN_BUFFER: usize = 1024;

impl TopK {
    fn new(k: usize) -> Self {
        Self {
            k,
            buf: Vec::new(),
            worst: None,
            nan: None,
        }
    }

    fn capacity(&self) -> usize {
        (2 * self.k).max(MIN_BUFFER)
    }

    /// Keep the best `k` of the buffer and set the threshold to the `k`-th.
    fn prune(&mut self) {
        if self.buf.len() > self.k {
            self.buf.select_nth_unstable(self.k - 1);
            self.buf.truncate(self.k);
        }
        if self.buf.len() == self.k {
            self.worst = self.buf.iter().max().copied();
        }
    }

    #[inline]
    fn offer(&mut self, flat: u64, grad: f32) {
        let score = grad.abs();
        if score.is_nan() {
            self.nan = Some(self.nan.map_or(flat, |n| n.min(flat)));
            return;
        }
        let c = Cand { score, flat, grad };
        if self.worst.is_some_and(|w| c >= w) {
            return;
        }
        self.buf.push(c);
        if self.buf.len() >= self.capacity() {
            self.prune();
        }
    }

    fn merge(mut self, other: TopK) -> TopK {
        self.nan = match (self.nan, other.nan) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.buf.extend(other.buf);
        self.prune();
        self
    }

    /// The best `k` (fewer if fewer were offered), in no particular order.
    fn into_best(mut self) -> Vec<Cand> {
        self.prune();
        self.buf
    }
}

/// Offer every candidate of the columns `c0..c1` to `top`: positions not in `p`, or in `p` at a
/// slot with `keep[slot] == false` (dropped this update, so regrowable as in the RigL
/// reference).
#[allow(clippy::too_many_arguments)]
fn scan_columns(
    isa: Isa,
    p: &SparsePattern,
    keep: &[bool],
    xt: &[f32],
    dyt: &[f32],
    b: usize,
    c0: usize,
    c1: usize,
    block_cols: usize,
    top: &mut TopK,
) {
    let (rows, cols) = (p.rows(), p.cols() as u64);
    let (ptr, crow, cslot) = (p.col_ptr(), p.csc_rows(), p.csc_slots());
    let mut tile = vec![0.0f32; block_cols * ROW_TILE];
    let mut bc0 = c0;
    while bc0 < c1 {
        let bc1 = (bc0 + block_cols).min(c1);
        // Per column of the block: the next CSC entry not yet passed (rows ascend in a column).
        let mut cursor: Vec<usize> = (bc0..bc1).map(|c| ptr[c]).collect();
        let mut r0 = 0;
        while r0 < rows {
            let r1 = (r0 + ROW_TILE).min(rows);
            let h = r1 - r0;
            let out = &mut tile[..(bc1 - bc0) * h];
            dense_tile_mv(isa, xt, dyt, b, r0, r1, bc0, out);
            for (i, col_scores) in out.chunks_exact(h).enumerate() {
                let c = bc0 + i;
                let end = ptr[c + 1];
                let mut j = cursor[i];
                for (r, &g) in (r0..r1).zip(col_scores) {
                    if j < end && crow[j] as usize == r {
                        let kept = keep[cslot[j] as usize];
                        j += 1;
                        if kept {
                            continue;
                        }
                    }
                    top.offer(r as u64 * cols + c as u64, g);
                }
                cursor[i] = j;
            }
            r0 = r1;
        }
        bc0 = bc1;
    }
}

impl crate::Kernels {
    /// RigL's grow step on a sparse layer: the `k` positions with the largest `|dW|`,
    /// `dW = xᵀ dY`, among the positions inactive after this update's drop (every position
    /// not in `p`, and those of the slots with `keep[s] == false`), ties to the lower flat
    /// index. Returned in ascending flat order with their gradient.
    ///
    /// `xt` is `[rows, batch]` and `dyt` `[cols, batch]` (feature-major, as the other
    /// kernels). `dW` is computed in tiles of `block_cols` columns by 64 rows and never held
    /// whole: memory is `O(k + block_cols)` per thread (one tile and one running top-k), time
    /// is one dense product `rows x cols x batch`, on every thread.
    ///
    /// # Errors
    /// [`KernelError::Length`] for buffers that do not match, [`KernelError::TooLarge`] if `k`
    /// exceeds the candidates, [`KernelError::NanScore`] for a NaN score (the lowest such
    /// position).
    #[allow(clippy::too_many_arguments)]
    pub fn grow_topk(
        &self,
        p: &SparsePattern,
        keep: &[bool],
        xt: &[f32],
        dyt: &[f32],
        batch: usize,
        k: usize,
        block_cols: usize,
    ) -> Result<Vec<Grown>> {
        p.check("xᵀ", xt.len(), p.rows() * batch)?;
        p.check("dyᵀ", dyt.len(), p.cols() * batch)?;
        p.check("keep", keep.len(), p.nnz())?;
        let numel = p.rows() as u64 * p.cols() as u64;
        let kept = keep.iter().filter(|&&x| x).count() as u64;
        let candidates = numel - kept;
        if k as u64 > candidates {
            return Err(KernelError::TooLarge {
                what: "grow count (more than the inactive positions)",
                value: k as u128,
            });
        }
        if k == 0 {
            return Ok(Vec::new());
        }
        let block_cols = block_cols.max(1);
        let isa = self.isa();
        let cols = p.cols();
        let threads = rayon::current_num_threads().max(1);
        let work = numel as u128 * batch.max(1) as u128;
        let parts = if work < 1 << 20 { 1 } else { threads.min(cols) };
        let per = cols.div_ceil(parts.max(1)).max(1);
        let ranges: Vec<(usize, usize)> = (0..cols)
            .step_by(per)
            .map(|c0| (c0, (c0 + per).min(cols)))
            .collect();
        let top = ranges
            .into_par_iter()
            .map(|(c0, c1)| {
                let mut top = TopK::new(k);
                scan_columns(isa, p, keep, xt, dyt, batch, c0, c1, block_cols, &mut top);
                top
            })
            .reduce(|| TopK::new(k), TopK::merge);
        if let Some(f) = top.nan {
            return Err(KernelError::NanScore {
                row: (f / cols as u64) as usize,
                col: (f % cols as u64) as usize,
            });
        }
        let mut out: Vec<Cand> = top.into_best();
        out.sort_unstable_by_key(|c| c.flat);
        Ok(out
            .into_iter()
            .map(|c| Grown {
                row: (c.flat / cols as u64) as u32,
                col: (c.flat % cols as u64) as u32,
                grad: c.grad,
            })
            .collect())
    }
}
