//! RigL's grow step without the dense gradient: the `k` inactive positions with the largest
//! `|dW|`, `dW = xᵀ dY`, scored block by block in registers (4 rows x 16 columns) and offered to
//! a running exact top-k, so no part of `dW` is ever stored.
//!
//! The order is the masked path's: the larger `|dW|` first, ties to the lower flat index
//! `row * cols + col` ([`burn_sparse_mask::top_k`]'s rule on the row-major layer). The set of
//! `k` positions is unique under that total order, so the result does not depend on the block
//! sizes, the number of threads or the sampled floor ([`floor_estimate`]). Every score is
//! [`crate::reference::dense_dw`]'s: a running sum over the batch with one fused multiply-add
//! per term, the same bits on every instruction set.

use std::cmp::Ordering;

use crate::error::{KernelError, Result};
use crate::pattern::SparsePattern;
use crate::simd::multiversion;

/// Rows of `dW` scored per tile: 32 rows of a batch of 128 are 16 KiB of `xᵀ`, which stay in
/// L1 while every panel of the column block passes over them.
const ROW_TILE: usize = 32;

/// Columns of one packed panel of `dY` (`[batch, PANEL]`, row-major): the register block's
/// width, two AVX2 vectors or one AVX-512 vector.
const PANEL: usize = 16;

/// Below this many multiply-adds (`rows x cols x batch`, 16.8M: about 0.6 ms on one core)
/// the grow step runs on the calling thread alone; above it the calling thread starts on the
/// rows at once and the pool's other workers take row chunks as they wake
/// ([`crate::shared::share`]). A topology update follows many steps whose small kernels ran
/// on one thread, so the workers are asleep: the 784 x 300 grow of LeNet-300-100 (30M
/// multiply-adds) took a median 1.90 ms split in halves by a parallel iterator (the second
/// half waited for a worker that never woke in time) and 1.16 ms on the calling thread alone.
const GROW_SHARED_MIN_WORK: u128 = 1 << 24;

/// Rows scored together against one panel: each panel row loaded is used `ROWS` times, each
/// broadcast of `xᵀ` `PANEL` times (4 x 16 outputs, 8 AVX2 accumulators).
const ROWS: usize = 4;

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
    /// Scores below this are rejected outright (an estimate of the `k`-th best, see
    /// [`floor_estimate`]; `-inf`: none). The result is exact if at least `k` candidates reached
    /// it (`seen >= k`); otherwise the scan is repeated without it.
    floor: f32,
    /// Non-NaN candidates offered at or above `floor`.
    seen: usize,
}

/// The smallest buffer, so that tiny `k` do not prune after every few candidates.
const MIN_BUFFER: usize = 1024;

impl TopK {
    fn new(k: usize, floor: f32) -> Self {
        Self {
            k,
            buf: Vec::new(),
            worst: None,
            nan: None,
            floor,
            seen: 0,
        }
    }

    /// The smallest `|score|` that can still enter: the floor, or the `k`-th best's after the
    /// last prune if higher. A score below it is rejected by [`TopK::offer`] whatever its index.
    #[inline]
    fn threshold(&self) -> f32 {
        self.worst.map_or(self.floor, |w| w.score.max(self.floor))
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
        if score < self.floor {
            return;
        }
        self.seen += 1;
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
        self.seen += other.seen;
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

/// `dyᵀ` (`[cols, b]`) as panels of [`PANEL`] columns, each `[b, PANEL]` row-major (the batch
/// index outer), zero beyond `cols`: one panel row is the `dY` values of `PANEL` outputs at one
/// batch index, a contiguous vector.
fn pack_panels(dyt: &[f32], cols: usize, b: usize) -> Vec<f32> {
    let np = cols.div_ceil(PANEL);
    let mut out = vec![0.0f32; np * b * PANEL];
    for (c, row) in dyt.chunks_exact(b.max(1)).enumerate().take(cols) {
        let panel = &mut out[(c / PANEL) * b * PANEL..][..b * PANEL];
        for (k, &v) in row.iter().enumerate() {
            panel[k * PANEL + c % PANEL] = v;
        }
    }
    out
}

type Block = [[f32; PANEL]; ROWS];

/// `dW[row i, col j] = Σ_k x[k][i] · panel[k][j]` for `R` rows and one panel's `PANEL` columns,
/// with `x` the `R` rows of `xᵀ` interleaved (`x[k * R + i]`): each output the product of the
/// first terms, then one fused multiply-add per further `k` in ascending order (the definition
/// of [`crate::reference::dense_dw`]; `mul_add` rounds once on every instruction set). The
/// `R x PANEL` accumulators stay in registers (8 AVX2 vectors at `R = 4`); each step broadcasts
/// `R` values of `x` and loads one panel row. Fused rather than a multiply and an add: on the
/// AVX2 machine measured the loop issued 22 instructions per 64 multiply-adds, at the
/// front end's limit, and the fused copy took LeNet-300-100's 784 x 300 grow step from
/// 1.26-1.44 ms to 1.06-1.07 ms (fastest of 300, four alternated pairs of binaries); 6 rows a
/// block spilled the accumulators and was 7x slower.
#[inline(always)]
fn panel_block<const R: usize>(x: &[f32], panel: &[f32], out: &mut Block) {
    let mut acc = [[0.0f32; PANEL]; R];
    let mut steps = panel.chunks_exact(PANEL).zip(x.chunks_exact(R));
    if let Some((d, xk)) = steps.next() {
        for i in 0..R {
            for j in 0..PANEL {
                acc[i][j] = xk[i] * d[j];
            }
        }
    }
    for (d, xk) in steps {
        for i in 0..R {
            for j in 0..PANEL {
                acc[i][j] = xk[i].mul_add(d[j], acc[i][j]);
            }
        }
    }
    out[..R].copy_from_slice(&acc);
}

/// The rows `rows[0..R]` of `xᵀ` (`[.., b]`) interleaved into `x`: `x[k * R + i] = xᵀ[rows[i], k]`.
#[inline(always)]
fn interleave<const R: usize>(xt: &[f32], b: usize, rows: [usize; R], x: &mut Vec<f32>) {
    x.clear();
    x.resize(R * b, 0.0);
    let src: [&[f32]; R] = rows.map(|r| &xt[r * b..(r + 1) * b]);
    for (k, dst) in x.chunks_exact_mut(R).enumerate() {
        for i in 0..R {
            dst[i] = src[i][k];
        }
    }
}

/// Whether column `col` of a row is an active position kept this update (not a candidate):
/// `next` is the row's CSR cursor, moved past the columns before `col` (columns ascend, so a
/// cursor replaces a search per position); `end` is the row's end in CSR.
#[inline(always)]
fn kept_active(p: &SparsePattern, keep: &[bool], next: &mut usize, end: usize, col: u32) -> bool {
    let cols = p.csr_cols();
    while *next < end && cols[*next] < col {
        *next += 1;
    }
    *next < end && cols[*next] == col && keep[p.csr_slots()[*next] as usize]
}

/// Rows `r0..r1`, columns `c0..c1` (panel-aligned `c0`) of one thread's scan: score the block
/// of `R` rows against each panel and offer the candidates that can enter `top`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn scan_block<const R: usize>(
    p: &SparsePattern,
    keep: &[bool],
    xt: &[f32],
    panels: &[f32],
    b: usize,
    r: usize,
    c0: usize,
    c1: usize,
    x: &mut Vec<f32>,
    top: &mut TopK,
) {
    let cols = p.cols();
    interleave::<R>(xt, b, std::array::from_fn(|i| r + i), x);
    let mut out = [[0.0f32; PANEL]; ROWS];
    // Per row: its CSR cursor at the first column of the block.
    let (row_ptr, csr_cols) = (p.row_ptr(), p.csr_cols());
    let mut next: [usize; R] = std::array::from_fn(|i| {
        let (a, e) = (row_ptr[r + i], row_ptr[r + i + 1]);
        a + csr_cols[a..e].partition_point(|&col| (col as usize) < c0)
    });
    let mut c = c0;
    while c < c1 {
        let panel = &panels[(c / PANEL) * b * PANEL..][..b * PANEL];
        panel_block::<R>(x, panel, &mut out);
        let width = PANEL.min(c1 - c);
        for (i, scores) in out.iter().enumerate().take(R) {
            // The columns whose `|score|` reaches the threshold (or is NaN, which `offer`
            // records), as a bit mask: most rows of a block have none.
            let thr = top.threshold();
            let mut hits: u32 = 0;
            for (j, &g) in scores.iter().enumerate() {
                hits |= u32::from((g.abs() >= thr) | g.is_nan()) << j;
            }
            hits &= if width == PANEL {
                u32::MAX
            } else {
                (1 << width) - 1
            };
            if hits == 0 {
                continue;
            }
            let row = r + i;
            let end = row_ptr[row + 1];
            while hits != 0 {
                let j = hits.trailing_zeros() as usize;
                hits &= hits - 1;
                let g = scores[j];
                if g.abs() < top.threshold() {
                    continue;
                }
                let col = (c + j) as u32;
                if kept_active(p, keep, &mut next[i], end, col) {
                    continue;
                }
                top.offer(row as u64 * cols as u64 + col as u64, g);
            }
        }
        c += PANEL;
    }
}

/// One thread's rows `r0..r1`: column blocks of `block_cols` (rounded up to whole panels), row
/// tiles of [`ROW_TILE`] inside each, blocks of [`ROWS`] rows against every panel of the
/// column block (the tile's `xᵀ` in L1, the block's panels in L2).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn scan_rows_body(
    p: &SparsePattern,
    keep: &[bool],
    xt: &[f32],
    panels: &[f32],
    b: usize,
    r0: usize,
    r1: usize,
    block_cols: usize,
    top: &mut TopK,
) {
    let cols = p.cols();
    let block = block_cols.div_ceil(PANEL).max(1) * PANEL;
    // The interleaved rows of the current block, reused by every block of the scan.
    let mut x = Vec::with_capacity(ROWS * b);
    let mut bc0 = 0;
    while bc0 < cols {
        let bc1 = (bc0 + block).min(cols);
        let mut t0 = r0;
        while t0 < r1 {
            let t1 = (t0 + ROW_TILE).min(r1);
            let mut r = t0;
            while r + ROWS <= t1 {
                scan_block::<ROWS>(p, keep, xt, panels, b, r, bc0, bc1, &mut x, top);
                r += ROWS;
            }
            while r < t1 {
                scan_block::<1>(p, keep, xt, panels, b, r, bc0, bc1, &mut x, top);
                r += 1;
            }
            t0 = t1;
        }
        bc0 = bc1;
    }
}

multiversion!(fn scan_rows => scan_rows_body, fused, (
    p: &SparsePattern,
    keep: &[bool],
    xt: &[f32],
    panels: &[f32],
    b: usize,
    r0: usize,
    r1: usize,
    block_cols: usize,
    top: &mut TopK,
));

/// Rows sampled by [`floor_estimate`] (a multiple of [`ROWS`]).
const SAMPLE_ROWS: usize = 16;

/// `|dW|` of the candidates (positions not kept active) of the rows `sample`, appended to
/// `out`.
#[inline(always)]
fn sample_body(
    p: &SparsePattern,
    keep: &[bool],
    xt: &[f32],
    panels: &[f32],
    b: usize,
    sample: &[usize],
    out: &mut Vec<f32>,
) {
    let cols = p.cols();
    let mut x = Vec::new();
    let mut block = [[0.0f32; PANEL]; ROWS];
    for quad in sample.chunks(ROWS) {
        let rows: [usize; ROWS] = std::array::from_fn(|i| quad[i.min(quad.len() - 1)]);
        interleave::<ROWS>(xt, b, rows, &mut x);
        // Each row's CSR cursor (its active columns ascend, as the panels do).
        let mut next: [usize; ROWS] = std::array::from_fn(|i| p.row_ptr()[rows[i]]);
        for (pi, panel) in panels.chunks_exact(b * PANEL).enumerate() {
            panel_block::<ROWS>(&x, panel, &mut block);
            let c0 = pi * PANEL;
            for (i, &r) in quad.iter().enumerate() {
                let end = p.row_ptr()[r + 1];
                for (j, g) in block[i][..PANEL.min(cols - c0)].iter().enumerate() {
                    if !kept_active(p, keep, &mut next[i], end, (c0 + j) as u32) {
                        out.push(g.abs());
                    }
                }
            }
        }
    }
}

multiversion!(fn sample_scores => sample_body, fused, (
    p: &SparsePattern,
    keep: &[bool],
    xt: &[f32],
    panels: &[f32],
    b: usize,
    sample: &[usize],
    out: &mut Vec<f32>,
));

/// A floor for the scan: the score that about `3k` of the layer's candidates reach, estimated
/// from the candidates of [`SAMPLE_ROWS`] evenly spaced rows (2% of the scan on 784 rows). Scores below it are not offered to the top-k, which otherwise accepts and sorts about
/// `k ln(n / k)` candidates while its threshold rises. Only a speed choice: the scan checks that
/// `k` candidates reached it and repeats without it if not (a 3x margin: the estimate is the
/// `j`-th of a sample where `j` is 16 or more). `-inf` (no floor) for layers of fewer than
/// `8 x SAMPLE_ROWS` rows, a sample too small to place `3k`, or a NaN score in the sample.
#[allow(clippy::too_many_arguments)]
fn floor_estimate(
    isa: crate::simd::Isa,
    p: &SparsePattern,
    keep: &[bool],
    xt: &[f32],
    panels: &[f32],
    b: usize,
    candidates: u64,
    k: usize,
) -> f32 {
    let rows = p.rows();
    if rows < 8 * SAMPLE_ROWS || b == 0 {
        return f32::NEG_INFINITY;
    }
    let sample: Vec<usize> = (0..SAMPLE_ROWS)
        .map(|i| (2 * i + 1) * rows / (2 * SAMPLE_ROWS))
        .collect();
    let mut scores = Vec::with_capacity(SAMPLE_ROWS * p.cols());
    sample_scores(isa, p, keep, xt, panels, b, &sample, &mut scores);
    let m = scores.len();
    // The j-th largest of the sample stands for the (3k)-th of the layer's candidates.
    let j = (3 * k as u128 * m as u128).div_ceil(candidates.max(1) as u128) as usize;
    if !(16..m).contains(&j) || scores.iter().any(|g| g.is_nan()) {
        return f32::NEG_INFINITY;
    }
    let (_, &mut v, _) = scores.select_nth_unstable_by(j - 1, |a, b| b.total_cmp(a));
    v
}

impl crate::Kernels {
    /// RigL's grow step on a sparse layer: the `k` positions with the largest `|dW|`,
    /// `dW = xᵀ dY`, among the positions inactive after this update's drop (every position
    /// not in `p`, and those of the slots with `keep[s] == false`), ties to the lower flat
    /// index. Returned in ascending flat order with their gradient.
    ///
    /// `xt` is `[rows, batch]` and `dyt` `[cols, batch]` (feature-major, as the other
    /// kernels). `dW` is scored in column blocks of `block_cols` (rounded up to 16), row tiles
    /// of 32 and register blocks of 4 x 16, and never held: memory is `dyt` once more (packed
    /// into 16-column panels), the candidates of a sampled row set (16 rows, for the floor) and
    /// a running top-k of at most `max(2k, 1024)` candidates per thread. Time is one dense
    /// product `rows x cols x batch`, on the calling thread below 16.8M multiply-adds, and
    /// above on the calling thread and the current rayon pool's other workers as they wake
    /// (`RAYON_NUM_THREADS=1` keeps it on one thread).
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
        let isa = self.isa();
        let (rows, cols) = (p.rows(), p.cols());
        let panels = pack_panels(dyt, cols, batch);
        let helpers =
            crate::shared::helpers_for(numel as u128 * batch.max(1) as u128, GROW_SHARED_MIN_WORK);
        // Rows per task: all of them on one thread, else whole row tiles, about 8 tasks per
        // thread.
        let chunk = if helpers == 0 {
            rows
        } else {
            rows.div_ceil(8 * (helpers + 1)).div_ceil(ROW_TILE) * ROW_TILE
        };
        let run = |floor: f32| {
            // Each thread's own top-k over the chunks it took, merged: the best `k` are unique,
            // `seen >= k` holds exactly when `k` candidates reached the floor, and the NaN kept
            // is the lowest, whoever scanned what.
            let tops = crate::shared::share(
                helpers,
                rows.div_ceil(chunk),
                || TopK::new(k, floor),
                |top, i| {
                    let r0 = i * chunk;
                    let r1 = (r0 + chunk).min(rows);
                    scan_rows(isa, p, keep, xt, &panels, batch, r0, r1, block_cols, top);
                },
            );
            tops.into_iter()
                .reduce(TopK::merge)
                .unwrap_or_else(|| TopK::new(k, floor))
        };
        let floor = floor_estimate(isa, p, keep, xt, &panels, batch, candidates, k);
        let mut top = run(floor);
        if top.seen < k && top.nan.is_none() && floor > f32::NEG_INFINITY {
            // Fewer than `k` candidates reached the estimate: the best `k` may lie below it.
            top = run(f32::NEG_INFINITY);
        }
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
