//! The three products of a sparse linear layer `y = x W`, on feature-major activations.
//!
//! Activations are stored **feature-major** (`xᵀ: [features, batch]`, the batch contiguous),
//! so every non-zero `W[k, n]` is one AXPY (forward, `dX`) or one dot product (`dW`) over a
//! contiguous batch vector. With row-major activations the same products are 2-3x slower than
//! dense (../shared/reference/sparse-kernels.md); with this layout they follow the non-zeros.
//!
//! - [`Kernels::forward`]: `yᵀ[n, :] = Σ_{k ∈ col n} W[k, n] · xᵀ[k, :]` (CSC);
//! - [`Kernels::backward_input`]: `dxᵀ[k, :] = Σ_{n ∈ row k} W[k, n] · dyᵀ[n, :]` (CSR);
//! - [`Kernels::backward_values`]: `dW[k, n] = <xᵀ[k, :], dyᵀ[n, :]>` at the active positions
//!   only (a sampled dense-dense product, SDDMM), in slot order.
//!
//! Each output element is computed by one thread in a fixed order, so results do not depend
//! on the number of threads or on the instruction set (see [`crate::simd`]).

use rayon::prelude::*;

use crate::error::{KernelError, Result};
use crate::pattern::{BLOCK_COLS, ColumnBlocks, SparsePattern};
use crate::simd::{Isa, multiversion};

/// Below this many multiply-adds a kernel runs on the calling thread. Between two kernels of a
/// training step rayon's idle worker may have gone to sleep, and waking it costs tens of
/// microseconds: measured on the 784x300 layer (batch 128, forward + dW on 2 cores,
/// `fc1_fwd_dw` in benches/benches/sparse_layers.rs, 2026-12-04), splitting products of 0.6M
/// (98%) and 1.5M (95%) multiply-adds over both cores was 1.5x and 1.1x *slower* than one
/// core, and 3M (90%) 1.3x faster. Above it the calling thread starts on the chunks at once
/// and the pool takes the rest as it wakes ([`crate::shared::share_items`]): 90% forward +
/// dW, 3000 calls, three runs each way alternated (2026-12-07), a median 0.41-0.46 ms against
/// 0.51-0.60 ms when the whole product was handed to the pool (a parallel iterator).
const PARALLEL_MIN_WORK: usize = 1 << 21;

/// Below this many elements a copy (a transpose, a permutation) runs on the calling thread.
const PARALLEL_MIN_COPY: usize = 1 << 18;

/// From this many non-zeros (256 KiB of values, past what stays cached beside the
/// activations) the forward product copies its weights into CSC order first (see
/// [`gather_axpy`]). Below it the values stay cached and the copy is pure cost: paired on
/// 784x300 at 98% and 300x100 at 90% (4.8k and 3k non-zeros) the copying kernel was 6% slower.
const FORWARD_COPY_MIN: usize = 1 << 16;

/// A gathering product over a source of more than this many bytes (512 KiB, the L2 of one
/// core of the AMD EPYC measured) prefetches the rows of the non-zero [`PREFETCH_AHEAD`]
/// places ahead: 1.10-1.21x on the 4096-row gathers of 784-4096-4096-10 (the forward of the
/// 4096 x 4096 layer, `dX` of both), paired; 4 and 16 ahead were no better. On sources that
/// stay in L2 (784x300, 300x100) prefetching cost 10-17%, and the code for it in the loop,
/// even switched off at run time, 3-15%: it is compiled only into the copies that use it.
/// A smaller source prefetches too when source and output together pass twice this (1 MiB):
/// the 784 x 4096 forward of 784-4096-4096-10 (400 KiB of `xᵀ`, 2 MiB of `yᵀ` streaming past
/// it) at 11.2% took a median 3.52-3.72 ms prefetched against 3.74-3.93 ms on one thread and
/// 1.88-2.62 against 2.05-3.71 ms on two (41 calls, three runs each way alternated,
/// 2026-12-07); 784x300 (550 KiB together) stays unprefetched.
const PREFETCH_MIN_BYTES: usize = 1 << 19;

/// How many non-zeros ahead a gathering product prefetches its source rows.
const PREFETCH_AHEAD: usize = 8;

/// Outputs of one column (or row): a weighted sum of gathered source rows, in blocks of `W`
/// batch lanes held in registers across the whole column. `w(t)` weighs row `idx[t]`.
#[inline(always)]
fn block<const W: usize, const PREFETCH: bool>(
    idx: &[u32],
    w: impl Fn(usize) -> f32,
    src: &[f32],
    b: usize,
    c: usize,
    out: &mut [f32],
) {
    let mut acc = [0.0f32; W];
    for (t, &i) in idx.iter().enumerate() {
        #[cfg(target_arch = "x86_64")]
        if W >= 16
            && PREFETCH
            && let Some(&ahead) = idx.get(t + PREFETCH_AHEAD)
        {
            // The row's lanes `c..c + W`, one cache line per 16 floats. `wrapping_add`: the
            // address is only a hint, never dereferenced, so it need not be in bounds.
            let p = src.as_ptr().wrapping_add(ahead as usize * b + c) as *const i8;
            for l in 0..W / 16 {
                // SAFETY: a prefetch is a hint: it never faults and reads nothing into the
                // program, whatever the address.
                #[allow(unsafe_code)]
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                        p.wrapping_add(64 * l),
                    )
                };
            }
        }
        let w = w(t);
        let x: &[f32; W] = src[i as usize * b + c..][..W].try_into().unwrap();
        for t in 0..W {
            acc[t] += w * x[t];
        }
    }
    out.copy_from_slice(&acc);
}

/// `out[r, :] = Σ_{j ∈ ptr[first + r]..ptr[first + r + 1]} values[slot[j]] · src[idx[j], :]`.
///
/// With `COPY` (the forward product from [`FORWARD_COPY_MIN`] non-zeros), the weights of these
/// outputs are first copied into `idx` order (one pass over `slot`), so the blocks read them
/// sequentially: read through `slot` inside the blocks, once per block of 64 lanes, they were a
/// dependent random load per non-zero and block when `slot` is far from sorted, which it is for
/// the forward product (values in slot order, read in CSC order; with the copy the 784x4096
/// and 4096x4096 forward products were 1.07-1.3x faster in five paired runs). `dX` reads them
/// in CSR order, close to slot order, without the copy. With `PREFETCH` (a source of over
/// [`PREFETCH_MIN_BYTES`]) the blocks prefetch the rows ahead. The sums are the same, term for
/// term, either way.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gather_axpy<const COPY: bool, const PREFETCH: bool>(
    ptr: &[usize],
    idx: &[u32],
    slot: &[u32],
    values: &[f32],
    src: &[f32],
    b: usize,
    first: usize,
    out: &mut [f32],
) {
    let n = out.len() / b;
    let (j0, j1) = (ptr[first], ptr[first + n]);
    let copied: Vec<f32> = if COPY {
        slot[j0..j1].iter().map(|&s| values[s as usize]).collect()
    } else {
        Vec::new()
    };
    for (r, o) in out.chunks_exact_mut(b).enumerate() {
        let (a, e) = (ptr[first + r], ptr[first + r + 1]);
        let idx = &idx[a..e];
        let (cw, sl) = if COPY {
            (&copied[a - j0..e - j0], &[][..])
        } else {
            (&[][..], &slot[a..e])
        };
        let w = |t: usize| {
            if COPY { cw[t] } else { values[sl[t] as usize] }
        };
        let mut c = 0;
        while c + 64 <= b {
            block::<64, PREFETCH>(idx, w, src, b, c, &mut o[c..c + 64]);
            c += 64;
        }
        while c + 16 <= b {
            block::<16, PREFETCH>(idx, w, src, b, c, &mut o[c..c + 16]);
            c += 16;
        }
        while c < b {
            block::<1, false>(idx, w, src, b, c, &mut o[c..c + 1]);
            c += 1;
        }
    }
}

/// The dot product every instruction set computes, bit for bit: 32 lanes, lane `l` summing
/// the products at positions `i ≡ l (mod 32)` in order (the tail through one zero-padded
/// step; adding `+0` is exact), then the fixed tree
/// `s[t] = (a[t] + a[t+16]) + (a[t+8] + a[t+24])`, `s[t] + s[t+4]`, `+ [t+2]`, `+ [t+1]`.
///
/// The compiler vectorises this portable body well for AVX-512 but splits it into 2-lane
/// pieces for AVX2, so x86-64 has explicit copies ([`x86dot`]) with the same lanes and tree.
#[inline(always)]
fn dot(x: &[f32], d: &[f32]) -> f32 {
    const L: usize = 32;
    let mut a = [[0.0f32; 8]; 4];
    let mut step = |xa: &[f32], da: &[f32]| {
        for g in 0..4 {
            let xg: &[f32; 8] = xa[8 * g..8 * g + 8].try_into().unwrap();
            let dg: &[f32; 8] = da[8 * g..8 * g + 8].try_into().unwrap();
            for t in 0..8 {
                a[g][t] += xg[t] * dg[t];
            }
        }
    };
    let mut xc = x.chunks_exact(L);
    let mut dc = d.chunks_exact(L);
    for (xa, da) in (&mut xc).zip(&mut dc) {
        step(xa, da);
    }
    let (xr, dr) = (xc.remainder(), dc.remainder());
    if !xr.is_empty() {
        let mut xa = [0.0f32; L];
        let mut da = [0.0f32; L];
        xa[..xr.len()].copy_from_slice(xr);
        da[..dr.len()].copy_from_slice(dr);
        step(&xa, &da);
    }
    let s: [f32; 8] = std::array::from_fn(|t| (a[0][t] + a[2][t]) + (a[1][t] + a[3][t]));
    let s4: [f32; 4] = std::array::from_fn(|t| s[t] + s[t + 4]);
    let s2: [f32; 2] = std::array::from_fn(|t| s4[t] + s4[t + 2]);
    s2[0] + s2[1]
}

/// [`dot`] with explicit AVX2 and AVX-512F instructions: the same lanes, the same tree.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86dot {
    use std::arch::x86_64::*;

    /// Zero-padded copies of the tail (< 32 elements) of `x` and `d`.
    #[inline(always)]
    fn padded_tail(x: &[f32], d: &[f32], from: usize) -> ([f32; 32], [f32; 32]) {
        let mut xa = [0.0f32; 32];
        let mut da = [0.0f32; 32];
        xa[..x.len() - from].copy_from_slice(&x[from..]);
        da[..d.len() - from].copy_from_slice(&d[from..]);
        (xa, da)
    }

    /// Lanes 0..8 of the tree's first level, reduced as [`super::dot`] does.
    #[target_feature(enable = "avx2")]
    fn finish(s: __m256) -> f32 {
        let q = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
        let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
        let q = _mm_add_ss(q, _mm_shuffle_ps::<1>(q, q));
        _mm_cvtss_f32(q)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn dot_avx2(x: &[f32], d: &[f32]) -> f32 {
        assert_eq!(x.len(), d.len());
        let n = x.len();
        let mut a = [_mm256_setzero_ps(); 4];
        let step = |a: &mut [__m256; 4], xp: *const f32, dp: *const f32| {
            for (g, acc) in a.iter_mut().enumerate() {
                // SAFETY: every caller passes pointers to at least 32 readable floats.
                let (xv, dv) = unsafe {
                    (
                        _mm256_loadu_ps(xp.add(8 * g)),
                        _mm256_loadu_ps(dp.add(8 * g)),
                    )
                };
                *acc = _mm256_add_ps(*acc, _mm256_mul_ps(xv, dv));
            }
        };
        let mut i = 0;
        while i + 32 <= n {
            // `i + 32 <= n = x.len() = d.len()`: 32 floats from `i` are in bounds.
            step(&mut a, x[i..].as_ptr(), d[i..].as_ptr());
            i += 32;
        }
        if i < n {
            let (xa, da) = padded_tail(x, d, i);
            step(&mut a, xa.as_ptr(), da.as_ptr());
        }
        let s = _mm256_add_ps(_mm256_add_ps(a[0], a[2]), _mm256_add_ps(a[1], a[3]));
        finish(s)
    }

    /// [`dot_avx2`] of two rows against one `d`, each with its own lanes and tree (so each
    /// result is bit for bit `dot_avx2`'s): `d` is loaded once for both (the sampled `dW`
    /// computes two non-zeros of a row at a time).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn dot2_avx2(x0: &[f32], x1: &[f32], d: &[f32]) -> (f32, f32) {
        assert!(x0.len() == d.len() && x1.len() == d.len());
        let n = d.len();
        let mut a = [_mm256_setzero_ps(); 4];
        let mut c = [_mm256_setzero_ps(); 4];
        let step = |a: &mut [__m256; 4],
                    c: &mut [__m256; 4],
                    p0: *const f32,
                    p1: *const f32,
                    dp: *const f32| {
            for g in 0..4 {
                // SAFETY: every caller passes pointers to at least 32 readable floats.
                let (dv, u, v) = unsafe {
                    (
                        _mm256_loadu_ps(dp.add(8 * g)),
                        _mm256_loadu_ps(p0.add(8 * g)),
                        _mm256_loadu_ps(p1.add(8 * g)),
                    )
                };
                a[g] = _mm256_add_ps(a[g], _mm256_mul_ps(u, dv));
                c[g] = _mm256_add_ps(c[g], _mm256_mul_ps(v, dv));
            }
        };
        let mut i = 0;
        while i + 32 <= n {
            // `i + 32 <= n`, the length of all three: 32 floats from `i` are in bounds.
            step(
                &mut a,
                &mut c,
                x0[i..].as_ptr(),
                x1[i..].as_ptr(),
                d[i..].as_ptr(),
            );
            i += 32;
        }
        if i < n {
            let (xa, da) = padded_tail(x0, d, i);
            let (xb, _) = padded_tail(x1, d, i);
            step(&mut a, &mut c, xa.as_ptr(), xb.as_ptr(), da.as_ptr());
        }
        let sa = _mm256_add_ps(_mm256_add_ps(a[0], a[2]), _mm256_add_ps(a[1], a[3]));
        let sc = _mm256_add_ps(_mm256_add_ps(c[0], c[2]), _mm256_add_ps(c[1], c[3]));
        (finish(sa), finish(sc))
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn dot_avx512(x: &[f32], d: &[f32]) -> f32 {
        assert_eq!(x.len(), d.len());
        let n = x.len();
        // z[0] holds lanes 0..16, z[1] lanes 16..32.
        let mut z = [_mm512_setzero_ps(); 2];
        let step = |z: &mut [__m512; 2], xp: *const f32, dp: *const f32| {
            for (g, acc) in z.iter_mut().enumerate() {
                // SAFETY: every caller passes pointers to at least 32 readable floats.
                let (xv, dv) = unsafe {
                    (
                        _mm512_loadu_ps(xp.add(16 * g)),
                        _mm512_loadu_ps(dp.add(16 * g)),
                    )
                };
                *acc = _mm512_add_ps(*acc, _mm512_mul_ps(xv, dv));
            }
        };
        let mut i = 0;
        while i + 32 <= n {
            step(&mut z, x[i..].as_ptr(), d[i..].as_ptr());
            i += 32;
        }
        if i < n {
            let (xa, da) = padded_tail(x, d, i);
            step(&mut z, xa.as_ptr(), da.as_ptr());
        }
        // u[t] = a[t] + a[t+16] for t < 16; then s[t] = u[t] + u[t+8].
        let u = _mm512_add_ps(z[0], z[1]);
        let lo = _mm512_castps512_ps256(u);
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(u)));
        finish(_mm256_add_ps(lo, hi))
    }
}

/// The sampled product's column blocks hold this many bytes of `dyᵀ` rows (128 KiB: 256
/// columns at batch 128), so a block stays in L2 while the rows of `xᵀ` stream past it once;
/// a `dyᵀ` of up to twice that is one block (784x300: each row's non-zeros in one run, so
/// more of them pair up in `dot2`). Measured on 4096 x 4096 at batch 128: 64 columns 9.0,
/// 128 11.8, 256 12.4 and 512 11.6 G multiply-adds per second.
const SDDMM_BLOCK_BYTES: usize = 1 << 17;

/// `out[j - row_ptr[r0]] = <xt[r, :], dyt[cols[j], :]>` for the CSR positions `j` of the rows
/// `r0..r1` (the row of `j` is `r`), in column blocks of [`SDDMM_BLOCK_BYTES`]: for each block,
/// each row's `xᵀ` vector (in L1) against the block's `dyᵀ` vectors (in L2) that its
/// non-zeros name. Going column by column instead gathers rows of `xᵀ` from all over memory
/// (2 MiB at 4096 x 128): the previous kernel did, and took 1.05-1.31x the time of this one on
/// 784x300 to 4096x4096 (median of 41 paired rounds per shape).
///
/// A layer wider than two blocks of [`BLOCK_COLS`] (at a batch of at most 256) walks its
/// pattern's [`ColumnBlocks`](crate::pattern::ColumnBlocks): each block's positions in one
/// sequential pass (a binary search finds the rows `r0..r1` in it). Resuming each row's CSR
/// run at a cursor instead costs a dependent load per row and block, and most runs are short
/// (9 non-zeros at 3.6% of 256 columns): on 4096 x 4096 at 3.6%, batch 128, the blocked pass
/// took 6.3-8.7 ms against 9.1-12.8 ms on one thread and 3.4 against 5.4 ms on two (medians of
/// 41 alternated calls, 2026-12-07), 784 x 4096 at 11.2% 3.3 against 4.2 ms on one.
///
/// Two non-zeros of a row at a time through `dot2(dyᵀ[a], dyᵀ[b], xᵀ[r])`, which shares the
/// `xᵀ` loads. Every result is `dot(xᵀ[r], dyᵀ[c])` bit for bit: each lane multiplies the
/// same two floats (IEEE multiplication commutes) and sums them in the same order, so the
/// value of a position does not depend on the traversal, the block size or the pairing.
/// The operands of [`sddmm_rows`]: a pattern's CSR rows and columns, its column count, `xᵀ`,
/// `dyᵀ` and the batch.
#[derive(Clone, Copy)]
struct Sddmm<'a> {
    row_ptr: &'a [usize],
    cols: &'a [u32],
    /// Where each CSR position's product goes: `out[slot[j]]` (the slot order of a pattern whose
    /// slots are not in CSR order, written directly), or `None`: `out[j - row_ptr[r0]]`.
    slot: Option<&'a [u32]>,
    /// The positions by column blocks, when the layer is walked that way.
    blocks: Option<&'a ColumnBlocks>,
    ncols: usize,
    xt: &'a [f32],
    dyt: &'a [f32],
    b: usize,
}

#[inline(always)]
fn sddmm_rows(
    a: Sddmm<'_>,
    r0: usize,
    r1: usize,
    out: &mut [f32],
    dot: impl Fn(&[f32], &[f32]) -> f32,
    dot2: impl Fn(&[f32], &[f32], &[f32]) -> (f32, f32),
) {
    let Sddmm {
        row_ptr,
        cols,
        slot,
        blocks,
        ncols,
        xt,
        dyt,
        b,
    } = a;
    let base = row_ptr[r0];
    let at = |j: usize| slot.map_or(j - base, |s| s[j] as usize);
    let dyc = |c: u32| &dyt[c as usize * b..(c as usize + 1) * b];
    if let Some(blocks) = blocks {
        let (lo, hi) = (r0 as u32, r1 as u32);
        for k in 0..blocks.ptr.len() - 1 {
            let e = &blocks.entries[blocks.ptr[k]..blocks.ptr[k + 1]];
            let e = &e[e.partition_point(|v| v[0] < lo)..e.partition_point(|v| v[0] < hi)];
            let mut i = 0;
            while i < e.len() {
                let [r, c, j] = e[i];
                let x = &xt[r as usize * b..(r as usize + 1) * b];
                match e.get(i + 1) {
                    Some(&[r2, c2, j2]) if r2 == r => {
                        let (p, q) = dot2(dyc(c), dyc(c2), x);
                        out[at(j as usize)] = p;
                        out[at(j2 as usize)] = q;
                        i += 2;
                    }
                    _ => {
                        out[at(j as usize)] = dot(dyc(c), x);
                        i += 1;
                    }
                }
            }
        }
        return;
    }
    let row_bytes = 4 * b.max(1);
    let block = if ncols * row_bytes <= 2 * SDDMM_BLOCK_BYTES {
        ncols
    } else {
        (SDDMM_BLOCK_BYTES / row_bytes).max(1)
    };
    let dy = |j: usize| dyc(cols[j]);
    // Where each row resumes in the next block (its CSR columns ascend).
    let mut next: Vec<usize> = row_ptr[r0..r1].to_vec();
    let mut c0 = 0;
    while c0 < ncols {
        let c1 = (c0 + block).min(ncols) as u32;
        for (r, j0) in (r0..r1).zip(next.iter_mut()) {
            let x = &xt[r * b..(r + 1) * b];
            let end = row_ptr[r + 1];
            let mut j = *j0;
            while j + 2 <= end && cols[j + 1] < c1 {
                let (p, q) = dot2(dy(j), dy(j + 1), x);
                out[at(j)] = p;
                out[at(j + 1)] = q;
                j += 2;
            }
            if j < end && cols[j] < c1 {
                out[at(j)] = dot(dy(j), x);
                j += 1;
            }
            *j0 = j;
        }
        c0 = c1 as usize;
    }
}

/// One 8 x 8 tile: `dst[j * ds + i] = src[i * ss + j]` for `i, j < 8`.
#[inline(always)]
fn tile8(src: &[f32], ss: usize, dst: &mut [f32], ds: usize) {
    let tile: [[f32; 8]; 8] = std::array::from_fn(|i| src[i * ss..][..8].try_into().unwrap());
    for j in 0..8 {
        let col: [f32; 8] = std::array::from_fn(|i| tile[i][j]);
        dst[j * ds..][..8].copy_from_slice(&col);
    }
}

/// `dst[c * rows + r] = src[r * cols + c]` for the columns `c0..`, in 8 x 8 tiles moved by
/// `tile` (scalar at the edges).
#[inline(always)]
fn transpose_strip(
    src: &[f32],
    rows: usize,
    cols: usize,
    c0: usize,
    dst: &mut [f32],
    tile: impl Fn(&[f32], usize, &mut [f32], usize),
) {
    const T: usize = 8;
    let c1 = c0 + dst.len() / rows;
    let mut r0 = 0;
    while r0 < rows {
        let r1 = (r0 + T).min(rows);
        let mut cb = c0;
        while cb < c1 {
            let ce = (cb + T).min(c1);
            if r1 - r0 == T && ce - cb == T {
                tile(
                    &src[r0 * cols + cb..],
                    cols,
                    &mut dst[(cb - c0) * rows + r0..],
                    rows,
                );
            } else {
                for r in r0..r1 {
                    for c in cb..ce {
                        dst[(c - c0) * rows + r] = src[r * cols + c];
                    }
                }
            }
            cb = ce;
        }
        r0 = r1;
    }
}

/// [`tile8`] with AVX shuffles: eight row loads, three rounds of unpack/shuffle/permute,
/// eight column stores (the portable body compiles to scalar moves).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86tile {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx")]
    pub(super) fn tile8_avx(src: &[f32], ss: usize, dst: &mut [f32], ds: usize) {
        // The bounds the loads and stores below rely on (the same slices `tile8` indexes).
        assert!(src.len() >= 7 * ss + 8 && dst.len() >= 7 * ds + 8);
        // SAFETY: row `i < 8` reads src[i * ss..i * ss + 8], in bounds by the assert.
        let r: [__m256; 8] =
            std::array::from_fn(|i| unsafe { _mm256_loadu_ps(src.as_ptr().add(i * ss)) });
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        let c = [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ];
        for (j, cj) in c.into_iter().enumerate() {
            // SAFETY: column `j < 8` writes dst[j * ds..j * ds + 8], in bounds by the assert.
            unsafe { _mm256_storeu_ps(dst.as_mut_ptr().add(j * ds), cj) }
        }
    }
}

/// The compiled copies of [`gather_axpy`], one per `(COPY, PREFETCH)`, each multiversioned.
macro_rules! gather_axpy_copies {
    ($($name:ident => $copy:literal, $prefetch:literal;)*) => {$(
        multiversion!(fn $name => gather_axpy::<$copy, $prefetch>, (
            ptr: &[usize], idx: &[u32], slot: &[u32], values: &[f32], src: &[f32], b: usize,
            first: usize, out: &mut [f32],
        ));
    )*};
}
gather_axpy_copies! {
    gather_axpy_mv => false, false;
    gather_axpy_copied_mv => true, false;
    gather_axpy_prefetched_mv => false, true;
    gather_axpy_copied_prefetched_mv => true, true;
}
fn sddmm_mv(isa: Isa, a: Sddmm<'_>, r0: usize, r1: usize, out: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if Isa::Avx2.available() => {
            #[target_feature(enable = "avx2")]
            fn go(a: Sddmm<'_>, r0: usize, r1: usize, o: &mut [f32]) {
                let (dot, dot2) = (x86dot::dot_avx2, x86dot::dot2_avx2);
                sddmm_rows(a, r0, r1, o, |x, d| dot(x, d), |x, y, d| dot2(x, y, d))
            }
            // SAFETY: the CPU has AVX2 (checked by the match guard).
            #[allow(unsafe_code)]
            unsafe {
                go(a, r0, r1, out)
            }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if Isa::Avx512.available() => {
            #[target_feature(enable = "avx512f")]
            fn go(a: Sddmm<'_>, r0: usize, r1: usize, o: &mut [f32]) {
                let dot = x86dot::dot_avx512;
                sddmm_rows(
                    a,
                    r0,
                    r1,
                    o,
                    |x, d| dot(x, d),
                    |x, y, d| (dot(x, d), dot(y, d)),
                )
            }
            // SAFETY: the CPU has AVX-512F (checked by the match guard).
            #[allow(unsafe_code)]
            unsafe {
                go(a, r0, r1, out)
            }
        }
        _ => sddmm_rows(a, r0, r1, out, dot, |x, y, d| (dot(x, d), dot(y, d))),
    }
}
fn transpose_mv(isa: Isa, src: &[f32], rows: usize, cols: usize, c0: usize, dst: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512
            if isa.available() && std::arch::is_x86_feature_detected!("avx") =>
        {
            #[target_feature(enable = "avx")]
            fn go(s: &[f32], rows: usize, cols: usize, c0: usize, d: &mut [f32]) {
                transpose_strip(s, rows, cols, c0, d, |s, ss, d, ds| {
                    x86tile::tile8_avx(s, ss, d, ds)
                })
            }
            // SAFETY: the CPU has AVX (checked by the match guard).
            #[allow(unsafe_code)]
            unsafe {
                go(src, rows, cols, c0, dst)
            }
        }
        _ => transpose_strip(src, rows, cols, c0, dst, tile8),
    }
}

/// The kernels, bound to an instruction set. [`Kernels::default`] uses [`Isa::detected`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernels {
    isa: Isa,
}

impl Default for Kernels {
    fn default() -> Self {
        Self {
            isa: Isa::detected(),
        }
    }
}

/// Splits `n` outputs of `b` lanes into chunks of whole outputs, 4 per thread, taken by the
/// calling thread and the pool as they come ([`crate::shared::share_items`]).
fn outputs_per_chunk(n: usize) -> usize {
    n.div_ceil(4 * (crate::shared::helpers() + 1)).max(1)
}

impl Kernels {
    /// Kernels compiled for `isa`.
    ///
    /// # Errors
    /// `None` if this CPU lacks `isa`.
    pub fn with_isa(isa: Isa) -> Option<Self> {
        isa.available().then_some(Self { isa })
    }

    /// The instruction set in use.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// `yᵀ = (x W)ᵀ`: `xt` is `[rows, batch]`, `yt` is `[cols, batch]` (overwritten).
    ///
    /// # Errors
    /// [`KernelError::Length`] if a buffer does not match the pattern and `batch`.
    pub fn forward(
        &self,
        p: &SparsePattern,
        values: &[f32],
        xt: &[f32],
        batch: usize,
        yt: &mut [f32],
    ) -> Result<()> {
        p.check("values", values.len(), p.nnz())?;
        p.check("xᵀ", xt.len(), p.rows() * batch)?;
        p.check("yᵀ", yt.len(), p.cols() * batch)?;
        self.spmm(
            p.col_ptr(),
            p.csc_rows(),
            p.csc_slots(),
            values,
            xt,
            batch,
            yt,
            values.len() >= FORWARD_COPY_MIN,
        );
        Ok(())
    }

    /// `dxᵀ = (dY Wᵀ)ᵀ`: `dyt` is `[cols, batch]`, `dxt` is `[rows, batch]` (overwritten).
    ///
    /// # Errors
    /// [`KernelError::Length`] if a buffer does not match the pattern and `batch`.
    pub fn backward_input(
        &self,
        p: &SparsePattern,
        values: &[f32],
        dyt: &[f32],
        batch: usize,
        dxt: &mut [f32],
    ) -> Result<()> {
        p.check("values", values.len(), p.nnz())?;
        p.check("dyᵀ", dyt.len(), p.cols() * batch)?;
        p.check("dxᵀ", dxt.len(), p.rows() * batch)?;
        self.spmm(
            p.row_ptr(),
            p.csr_cols(),
            p.csr_slots(),
            values,
            dyt,
            batch,
            dxt,
            false,
        );
        Ok(())
    }

    /// `copy`: see [`gather_axpy`].
    #[allow(clippy::too_many_arguments)]
    fn spmm(
        &self,
        ptr: &[usize],
        idx: &[u32],
        slot: &[u32],
        values: &[f32],
        src: &[f32],
        b: usize,
        out: &mut [f32],
        copy: bool,
    ) {
        if b == 0 || out.is_empty() {
            return;
        }
        let n = out.len() / b;
        let isa = self.isa;
        let (src_bytes, out_bytes) = (std::mem::size_of_val(src), std::mem::size_of_val(out));
        let prefetch =
            src_bytes > PREFETCH_MIN_BYTES || src_bytes + out_bytes > 2 * PREFETCH_MIN_BYTES;
        let run = |first: usize, o: &mut [f32]| match (copy, prefetch) {
            (false, false) => gather_axpy_mv(isa, ptr, idx, slot, values, src, b, first, o),
            (true, false) => gather_axpy_copied_mv(isa, ptr, idx, slot, values, src, b, first, o),
            (false, true) => {
                gather_axpy_prefetched_mv(isa, ptr, idx, slot, values, src, b, first, o)
            }
            (true, true) => {
                gather_axpy_copied_prefetched_mv(isa, ptr, idx, slot, values, src, b, first, o)
            }
        };
        if idx.len() * b < PARALLEL_MIN_WORK {
            run(0, out);
            return;
        }
        let per = outputs_per_chunk(n);
        let chunks: Vec<(usize, &mut [f32])> = out.chunks_mut(per * b).enumerate().collect();
        crate::shared::share_items(crate::shared::helpers(), chunks, |(i, o)| run(i * per, o));
    }

    /// `dv[s] = Σ_b xᵀ[row(s), b] · dyᵀ[col(s), b]` for every slot `s` (slot order):
    /// the gradient of the values. `xt` is `[rows, batch]`, `dyt` is `[cols, batch]`.
    ///
    /// # Errors
    /// [`KernelError::Length`] if a buffer does not match the pattern and `batch`.
    pub fn backward_values(
        &self,
        p: &SparsePattern,
        xt: &[f32],
        dyt: &[f32],
        batch: usize,
        dv: &mut [f32],
    ) -> Result<()> {
        p.check("xᵀ", xt.len(), p.rows() * batch)?;
        p.check("dyᵀ", dyt.len(), p.cols() * batch)?;
        p.check("dv", dv.len(), p.nnz())?;
        let nnz = p.nnz();
        if nnz == 0 {
            return Ok(());
        }
        let ptr = p.row_ptr();
        // Column blocks for a layer wider than two blocks, up to a batch of 256 (a block's
        // `dyᵀ` rows then stay within 256 KiB, half the L2 of the machine measured).
        let blocked = p.cols() > 2 * BLOCK_COLS && batch <= 256;
        let a = Sddmm {
            row_ptr: ptr,
            cols: p.csr_cols(),
            slot: None,
            blocks: blocked.then(|| p.column_blocks()),
            ncols: p.cols(),
            xt,
            dyt,
            b: batch,
        };
        let isa = self.isa;
        // The products in CSR order, into `csr`.
        let compute = |csr: &mut [f32]| {
            if nnz * batch < PARALLEL_MIN_WORK {
                sddmm_mv(isa, a, 0, p.rows(), csr);
                return;
            }
            let per = outputs_per_chunk(p.rows());
            let mut parts: Vec<(usize, usize, &mut [f32])> = Vec::new();
            let mut rest: &mut [f32] = csr;
            let mut r0 = 0;
            while r0 < p.rows() {
                let r1 = (r0 + per).min(p.rows());
                let (head, tail) = rest.split_at_mut(ptr[r1] - ptr[r0]);
                if !head.is_empty() {
                    parts.push((r0, r1, head));
                }
                rest = tail;
                r0 = r1;
            }
            crate::shared::share_items(crate::shared::helpers(), parts, |(r0, r1, o)| {
                sddmm_mv(isa, a, r0, r1, o)
            });
        };
        if p.slots_in_csr_order() {
            // Slot order is CSR order: no buffer, no permutation.
            compute(dv);
            return Ok(());
        }
        if nnz * batch < PARALLEL_MIN_WORK {
            // One thread: each product straight to its slot (no buffer, no second pass; after a
            // topology update the moved slots are out of CSR order for the rest of the run).
            let direct = Sddmm {
                slot: Some(p.csr_slots()),
                ..a
            };
            sddmm_mv(isa, direct, 0, p.rows(), dv);
            return Ok(());
        }
        let mut csr = vec![0.0f32; nnz];
        compute(&mut csr);
        let slot_csr = p.slot_csr();
        if nnz < PARALLEL_MIN_COPY {
            dv.iter_mut()
                .zip(slot_csr)
                .for_each(|(d, &j)| *d = csr[j as usize]);
        } else {
            dv.par_iter_mut()
                .zip(slot_csr.par_iter())
                .for_each(|(d, &j)| *d = csr[j as usize]);
        }
        Ok(())
    }

    /// `dst = srcᵀ`: `src` is `[rows, cols]` row-major, `dst` is `[cols, rows]` row-major.
    ///
    /// # Errors
    /// [`KernelError::Length`] if a buffer is not `rows * cols` long.
    pub fn transpose(&self, src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) -> Result<()> {
        let n = rows.checked_mul(cols).ok_or(KernelError::TooLarge {
            what: "rows * cols",
            value: rows as u128 * cols as u128,
        })?;
        for (what, len) in [("source", src.len()), ("destination", dst.len())] {
            if len != n {
                return Err(KernelError::Length {
                    what,
                    expected: n,
                    got: len,
                });
            }
        }
        if n == 0 {
            return Ok(());
        }
        let isa = self.isa;
        const STRIP: usize = 32;
        if n < PARALLEL_MIN_COPY {
            transpose_mv(isa, src, rows, cols, 0, dst);
        } else {
            dst.par_chunks_mut(STRIP * rows)
                .enumerate()
                .for_each(|(i, d)| transpose_mv(isa, src, rows, cols, i * STRIP, d));
        }
        Ok(())
    }
}

/// Plain, obviously correct versions of the three products, for tests and for checking the
/// fast ones (same summation order as the kernels, so the comparison is exact).
pub mod reference {
    use crate::pattern::SparsePattern;

    /// `yᵀ[n, b] = Σ_{k ascending, (k, n) active} W[k, n] · xᵀ[k, b]`.
    pub fn forward(p: &SparsePattern, values: &[f32], xt: &[f32], batch: usize) -> Vec<f32> {
        let w = p.to_dense(values).expect("values match the pattern");
        let active = p.to_dense(&vec![1.0; p.nnz()]).unwrap();
        let mut yt = vec![0.0f32; p.cols() * batch];
        for n in 0..p.cols() {
            for b in 0..batch {
                let mut s = 0.0f32;
                for k in 0..p.rows() {
                    if active[k * p.cols() + n] != 0.0 {
                        s += w[k * p.cols() + n] * xt[k * batch + b];
                    }
                }
                yt[n * batch + b] = s;
            }
        }
        yt
    }

    /// `dxᵀ[k, b] = Σ_{n ascending, (k, n) active} W[k, n] · dyᵀ[n, b]`.
    pub fn backward_input(
        p: &SparsePattern,
        values: &[f32],
        dyt: &[f32],
        batch: usize,
    ) -> Vec<f32> {
        let w = p.to_dense(values).expect("values match the pattern");
        let active = p.to_dense(&vec![1.0; p.nnz()]).unwrap();
        let mut dxt = vec![0.0f32; p.rows() * batch];
        for k in 0..p.rows() {
            for b in 0..batch {
                let mut s = 0.0f32;
                for n in 0..p.cols() {
                    if active[k * p.cols() + n] != 0.0 {
                        s += w[k * p.cols() + n] * dyt[n * batch + b];
                    }
                }
                dxt[k * batch + b] = s;
            }
        }
        dxt
    }

    /// `dv[s] = Σ_b xᵀ[row(s), b] · dyᵀ[col(s), b]`, summed in double precision (a tolerance
    /// reference: the kernel's order is a 32-lane tree).
    pub fn backward_values(p: &SparsePattern, xt: &[f32], dyt: &[f32], batch: usize) -> Vec<f64> {
        (0..p.nnz())
            .map(|s| {
                let (r, c) = (p.slot_rows()[s] as usize, p.slot_cols()[s] as usize);
                (0..batch)
                    .map(|b| xt[r * batch + b] as f64 * dyt[c * batch + b] as f64)
                    .sum()
            })
            .collect()
    }

    /// The dense `dW = xᵀ dY`, row-major `[rows, cols]`, as RigL's grow step scores it
    /// ([`Kernels::grow_topk`](crate::Kernels::grow_topk)): each entry `x₀·d₀`, then one fused
    /// multiply-add (`f32::mul_add`, a single rounding) per further batch index in ascending
    /// order (0 for an empty batch). Not the sampled `dW`'s 32-lane tree of separate
    /// multiplies and adds: the grow step computes every position of the layer, and a plain
    /// running sum lets it keep a register block of outputs (one broadcast and one load per
    /// 4 x 16 multiply-adds) where the tree needs 32 partial sums per output.
    pub fn dense_dw(xt: &[f32], dyt: &[f32], rows: usize, cols: usize, batch: usize) -> Vec<f32> {
        let mut dw = vec![0.0f32; rows * cols];
        for r in 0..rows {
            let x = &xt[r * batch..(r + 1) * batch];
            for (c, out) in dw[r * cols..(r + 1) * cols].iter_mut().enumerate() {
                let d = &dyt[c * batch..(c + 1) * batch];
                let mut terms = x.iter().zip(d);
                *out = terms.next().map_or(0.0, |(&a, &b)| {
                    terms.fold(a * b, |s, (&a, &b)| a.mul_add(b, s))
                });
            }
        }
        dw
    }

    /// RigL's grow step the dense way: the whole `dW` ([`dense_dw`], every value the one
    /// [`Kernels::grow_topk`](crate::Kernels::grow_topk) computes), the candidates in flat
    /// order, sorted by `|dW|` descending and flat index ascending, the first `k`, back in flat
    /// order. Panics on bad sizes or NaN (a test reference).
    pub fn grow_topk(
        p: &SparsePattern,
        keep: &[bool],
        xt: &[f32],
        dyt: &[f32],
        batch: usize,
        k: usize,
    ) -> Vec<crate::Grown> {
        let (rows, cols) = (p.rows(), p.cols());
        let dw = dense_dw(xt, dyt, rows, cols, batch);
        let mut excluded = vec![false; rows * cols];
        for s in 0..p.nnz() {
            if keep[s] {
                excluded[p.flat_index(s)] = true;
            }
        }
        let mut cand: Vec<usize> = (0..rows * cols).filter(|&f| !excluded[f]).collect();
        cand.sort_by(|&a, &b| dw[b].abs().total_cmp(&dw[a].abs()).then(a.cmp(&b)));
        cand.truncate(k);
        cand.sort_unstable();
        cand.into_iter()
            .map(|f| crate::Grown {
                row: (f / cols) as u32,
                col: (f % cols) as u32,
                grad: dw[f],
            })
            .collect()
    }
}
