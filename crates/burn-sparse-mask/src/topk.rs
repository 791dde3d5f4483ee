//! Exact top-k mask construction, the one routine every scorer shares.
//!
//! The routine runs on the host over `f32` scores, compared as order-preserving 32-bit keys. It
//! finds the k-th largest score, keeps every strictly larger one, and keeps ties at the
//! threshold in increasing flat index order until exactly `k` survive. The threshold is found in
//! O(n): from 2^15 scores on, a sample of 8192 scores (n/8 below 2^16) brackets it and one pass
//! collects the few scores inside the bracket (Floyd and Rivest's selection); when the bracket
//! misses, and below 2^15 scores, a radix select does the work (a histogram of 2^11 to 2^16
//! buckets, a pass gathering the bucket that holds the threshold, a linear selection inside it).
//! From 2^17 scores on, the passes run on rayon's thread pool over pieces of the input; the
//! result depends neither on how many threads nor on the sample, which only decides how fast
//! the threshold is found.
//! So the number of survivors is exact and the result is deterministic and identical on every
//! backend for the same scores.
//! (burn's `topk` on the CubeCL backends is pathologically slow for large k, which is another
//! reason not to build masks with it.) Scores are compared with `f32::total_cmp`; NaN is an error.

use crate::distribution::SparsityDistribution;
use crate::error::{MaskError, Result};
use crate::fraction::Sparsity;
use crate::params::ParamInfo;
use rayon::prelude::*;

/// Keep the `k` highest of `scores`. Ties are broken by lower index.
///
/// # Errors
/// [`MaskError::TooManySurvivors`] if `k > scores.len()`, [`MaskError::NanScore`] on NaN.
pub fn top_k(scores: &[f32], k: usize) -> Result<Vec<bool>> {
    Ok(top_k_segments(&[("scores", scores)], k)?
        .pop()
        .unwrap_or_default())
}

/// Keep the `k` highest scores over the concatenation of `segments` (global top-k). Ties are
/// broken by lower flat index in the concatenation (segment order, then element order).
///
/// # Errors
/// As [`top_k`]; a NaN error names the segment.
pub fn top_k_segments(segments: &[(&str, &[f32])], k: usize) -> Result<Vec<Vec<bool>>> {
    let n: usize = segments.iter().map(|(_, s)| s.len()).sum();
    if k > n {
        return Err(MaskError::TooManySurvivors { k, n });
    }
    let nan_error = || {
        for (name, s) in segments {
            if let Some(index) = s.iter().position(|v| v.is_nan()) {
                return MaskError::NanScore {
                    param: name.to_string(),
                    index,
                };
            }
        }
        MaskError::Data("a NaN score vanished".into())
    };
    if k == 0 || k == n {
        if segments.iter().any(|(_, s)| s.iter().any(|v| v.is_nan())) {
            return Err(nan_error());
        }
        return Ok(segments
            .iter()
            .map(|(_, s)| vec![k == n; s.len()])
            .collect());
    }
    let pieces = pieces(segments);
    // The selection's first pass also looks for NaN, so valid scores are read three times:
    // histogram, bucket gather, mask.
    let Some((threshold, greater)) = kth_largest_key(segments, &pieces, n, k) else {
        return Err(nan_error());
    };
    // Every score at or above the threshold is kept by a plain comparison the compiler
    // vectorises (in parallel over pieces), which also counts the ties in each piece. Exactly
    // `k - greater` ties survive, the first ones in flat order, so ties past that count are
    // dropped again, visiting only the pieces that hold them (none when the scores are distinct).
    let mut out: Vec<Vec<bool>> = segments.iter().map(|(_, s)| vec![false; s.len()]).collect();
    let mut slots: Vec<&mut [bool]> = Vec::with_capacity(pieces.len());
    {
        let mut rest: Vec<&mut [bool]> = out.iter_mut().map(Vec::as_mut_slice).collect();
        for p in &pieces {
            let r = std::mem::take(&mut rest[p.segment]);
            let (head, tail) = r.split_at_mut(p.end - p.start);
            slots.push(head);
            rest[p.segment] = tail;
        }
    }
    let fill = |(p, m): (&Piece, &mut &mut [bool])| -> usize {
        // 32-bit tie counts per block keep the comparison loop four lanes wide.
        let mut ties = 0usize;
        for (m, v) in m.chunks_mut(1024).zip(p.values(segments).chunks(1024)) {
            let mut t = 0u32;
            for (b, &v) in m.iter_mut().zip(v) {
                let kv = key(v);
                *b = kv >= threshold;
                t += u32::from(kv == threshold);
            }
            ties += t as usize;
        }
        ties
    };
    let ties: Vec<usize> = if serial(&pieces, n) {
        pieces.iter().zip(slots.iter_mut()).map(fill).collect()
    } else {
        pieces
            .par_iter()
            .zip(slots.par_iter_mut())
            .map(fill)
            .collect()
    };
    let mut ties_left = k - greater;
    for ((p, m), &t) in pieces.iter().zip(slots.iter_mut()).zip(&ties) {
        if t <= ties_left {
            ties_left -= t;
            continue;
        }
        for (b, &v) in m.iter_mut().zip(p.values(segments)) {
            if key(v) == threshold {
                if ties_left == 0 {
                    *b = false;
                } else {
                    ties_left -= 1;
                }
            }
        }
    }
    Ok(out)
}

/// Below this many scores the threshold is found by sorting.
const SMALL: usize = 4096;

/// Scores per piece of parallel work (at least; a segment shorter than this is one piece).
const PIECE: usize = 1 << 16;

/// Below this many scores every pass runs on the calling thread: handing a job to the thread
/// pool and waiting for it costs more than it saves.
const PARALLEL: usize = 1 << 17;

/// Whether the passes run on the calling thread (small input, one piece or one thread).
fn serial(pieces: &[Piece], n: usize) -> bool {
    n < PARALLEL || pieces.len() < 2 || rayon::current_num_threads() < 2
}

/// `f` over every piece, in order: on the thread pool when the input is large.
fn map_pieces<T: Send>(
    pieces: &[Piece],
    n: usize,
    f: impl Fn(usize, &Piece) -> T + Sync,
) -> Vec<T> {
    if serial(pieces, n) {
        pieces.iter().enumerate().map(|(i, p)| f(i, p)).collect()
    } else {
        pieces
            .par_iter()
            .enumerate()
            .map(|(i, p)| f(i, p))
            .collect()
    }
}

/// A contiguous run of one segment, the unit of parallel work.
#[derive(Debug, Clone, Copy)]
struct Piece {
    segment: usize,
    start: usize,
    end: usize,
}

impl Piece {
    fn values<'a>(&self, segments: &[(&str, &'a [f32])]) -> &'a [f32] {
        &segments[self.segment].1[self.start..self.end]
    }
}

/// The segments cut into pieces of about `max(PIECE, n / (2 threads))` scores, in flat order.
fn pieces(segments: &[(&str, &[f32])]) -> Vec<Piece> {
    let n: usize = segments.iter().map(|(_, s)| s.len()).sum();
    let size = PIECE.max(n.div_ceil(2 * rayon::current_num_threads().max(1)));
    let mut out = Vec::new();
    for (segment, (_, s)) in segments.iter().enumerate() {
        let mut start = 0;
        while start < s.len() {
            let end = (start + size).min(s.len());
            out.push(Piece {
                segment,
                start,
                end,
            });
            start = end;
        }
    }
    out
}

/// An order-preserving map of `f32` to `u32`: `key(a) < key(b)` exactly when
/// `a.total_cmp(&b)` is `Less` (negative floats have their bits flipped, positive ones their
/// sign bit set).
#[inline]
fn key(v: f32) -> u32 {
    // Branch-free, so that loops over keys vectorise: the arithmetic shift spreads the sign bit.
    let b = v.to_bits();
    b ^ ((((b as i32) >> 31) as u32) | 0x8000_0000)
}

/// Most bits of the key that index the first-level histogram (from 2^21 values on; fewer below):
/// sign, exponent and 7 mantissa bits,
/// so one bucket spans 1/128 of an octave and the threshold's bucket holds few values even for
/// scores packed into one octave (uniform `[0.5, 1)` scores fill only 4 buckets of an 11-bit
/// histogram).
const HIGH_BITS: u32 = 16;

/// Counts of `key >> shift` over the values of one piece (at most 2^31 of them, so `u32`
/// counts cannot overflow), and whether any value is NaN.
fn histogram(values: &[f32], shift: u32) -> (Vec<u32>, bool) {
    let buckets = 1usize << (32 - shift);
    // Four interleaved count arrays: neighbouring scores often fall into the same bucket, and
    // four independent increments do not wait on each other's store.
    let mut h = vec![0u32; 4 * buckets];
    let (h0, rest) = h.split_at_mut(buckets);
    let (h1, rest) = rest.split_at_mut(buckets);
    let (h2, h3) = rest.split_at_mut(buckets);
    let mut nan = false;
    let mut quads = values.chunks_exact(4);
    for q in &mut quads {
        nan |= q[0].is_nan() | q[1].is_nan() | q[2].is_nan() | q[3].is_nan();
        h0[(key(q[0]) >> shift) as usize] += 1;
        h1[(key(q[1]) >> shift) as usize] += 1;
        h2[(key(q[2]) >> shift) as usize] += 1;
        h3[(key(q[3]) >> shift) as usize] += 1;
    }
    for &v in quads.remainder() {
        nan |= v.is_nan();
        h0[(key(v) >> shift) as usize] += 1;
    }
    for i in 0..buckets {
        h0[i] += h1[i] + h2[i] + h3[i];
    }
    h.truncate(buckets);
    (h, nan)
}

/// The key of the k-th largest value (`1 <= k < n`) and how many values are strictly larger
/// (None when a score is NaN): by sorting for few values, by sampling for many, with the radix
/// select between and wherever the sample misses.
fn kth_largest_key(
    segments: &[(&str, &[f32])],
    pieces: &[Piece],
    n: usize,
    k: usize,
) -> Option<(u32, usize)> {
    if n < SMALL {
        if segments.iter().any(|(_, s)| s.iter().any(|v| v.is_nan())) {
            return None;
        }
        // Small inputs: sort the keys.
        let mut keys: Vec<u32> = segments
            .iter()
            .flat_map(|(_, s)| s.iter().map(|&v| key(v)))
            .collect();
        keys.sort_unstable_by(|a, b| b.cmp(a));
        let t = keys[k - 1];
        return Some((t, keys.iter().take_while(|&&x| x > t).count()));
    }
    if n >= SAMPLED {
        match kth_largest_sampled(segments, pieces, n, k) {
            Sampled::Found(t, greater) => return Some((t, greater)),
            Sampled::Nan => return None,
            Sampled::Missed => {}
        }
    }
    kth_largest_radix(segments, pieces, n, k)
}

/// From this many scores on, the threshold is first bracketed from a sample.
const SAMPLED: usize = 1 << 15;

/// What [`kth_largest_sampled`] found.
#[derive(Debug, PartialEq)]
enum Sampled {
    /// The k-th largest key and how many keys are strictly larger.
    Found(u32, usize),
    /// A score is NaN.
    Nan,
    /// The sample's bracket did not hold the k-th largest key.
    Missed,
}

/// A fixed hash of `j`, for sample positions (splitmix64's finaliser).
#[inline]
fn mix(j: u64) -> u64 {
    crate::rng::splitmix64_mix(j.wrapping_add(crate::rng::SPLITMIX64_GAMMA))
}

/// How many scores [`kth_largest_sampled`] samples out of `n` (a larger sample narrows the
/// bracket, so fewer scores are collected one by one: 8192 was fastest for 266k SNIP scores).
fn sample_size(n: usize) -> usize {
    8192.min(n / 8)
}

/// The flat positions sampled out of `n`, increasing: one at a fixed pseudo-random offset in
/// each of [`sample_size`] equal strides.
fn sample_positions(n: usize) -> impl Iterator<Item = usize> {
    let m = sample_size(n);
    (0..m).map(move |j| {
        let (a, b) = (j * n / m, (j + 1) * n / m);
        a + (mix(j as u64) % (b - a) as u64) as usize
    })
}

/// The k-th largest key by sampling (Floyd and Rivest's select): the keys of `m` scores, one at a
/// fixed pseudo-random position in each of `m` equal strides of the flat order, bracket the
/// k-th largest between two sample ranks a few standard deviations either side of where it is
/// expected; one pass over all scores counts the keys above the bracket and collects the few
/// inside it, and the exact key is selected among those. The sample only decides how fast this
/// is, never the result: when the bracket misses (rare, and detected exactly), the caller falls
/// back to the radix select.
fn kth_largest_sampled(
    segments: &[(&str, &[f32])],
    pieces: &[Piece],
    n: usize,
    k: usize,
) -> Sampled {
    let m = sample_size(n);
    let (hi, lo) = {
        let mut sample = Vec::with_capacity(m);
        let (mut seg, mut seg_start) = (0, 0);
        for p in sample_positions(n) {
            while p >= seg_start + segments[seg].1.len() {
                seg_start += segments[seg].1.len();
                seg += 1;
            }
            sample.push(key(segments[seg].1[p - seg_start]));
        }
        let q = k as f64 / n as f64;
        let r = ((k as f64 - 0.5) * m as f64 / n as f64) as usize;
        let delta = (3.0 * (m as f64 * q * (1.0 - q)).sqrt()).ceil() as usize + 2;
        let desc = |a: &u32, b: &u32| b.cmp(a);
        // Keys above `hi` are all kept; the k-th largest is looked for in `lo..=hi`.
        let hi = match r.checked_sub(delta) {
            Some(i) => *sample.select_nth_unstable_by(i, desc).1,
            None => u32::MAX,
        };
        let lo = if r + delta < m {
            *sample.select_nth_unstable_by(r + delta, desc).1
        } else {
            0
        };
        (hi, lo)
    };
    let width = hi - lo;
    let parts: Vec<(usize, Vec<u32>, bool)> = map_pieces(pieces, n, |_, p| {
        let values = p.values(segments);
        let mut above = 0usize;
        let mut nan = false;
        let mut cand = Vec::new();
        // Sixteen at a time: the comparisons vectorise into a bit mask, and only the (few)
        // scores inside the bracket are visited one by one.
        let mut chunks = values.chunks_exact(16);
        for c in &mut chunks {
            let mut inside = [0u8; 16];
            let mut up = 0u32;
            let mut bad = 0u8;
            for (f, &v) in inside.iter_mut().zip(c) {
                let kv = key(v);
                bad |= u8::from(v.is_nan());
                up += u32::from(kv > hi);
                *f = u8::from(kv.wrapping_sub(lo) <= width);
            }
            nan |= bad != 0;
            above += up as usize;
            if u128::from_ne_bytes(inside) != 0 {
                for (&f, &v) in inside.iter().zip(c) {
                    if f != 0 {
                        cand.push(key(v));
                    }
                }
            }
        }
        for &v in chunks.remainder() {
            let kv = key(v);
            nan |= v.is_nan();
            above += usize::from(kv > hi);
            if kv.wrapping_sub(lo) <= width {
                cand.push(kv);
            }
        }
        (above, cand, nan)
    });
    if parts.iter().any(|(_, _, nan)| *nan) {
        return Sampled::Nan;
    }
    let above: usize = parts.iter().map(|(a, _, _)| a).sum();
    let inside: usize = parts.iter().map(|(_, c, _)| c.len()).sum();
    if above >= k || above + inside < k {
        return Sampled::Missed;
    }
    let mut cand: Vec<u32> = Vec::with_capacity(inside);
    for (_, c, _) in &parts {
        cand.extend_from_slice(c);
    }
    let r = k - above - 1;
    let (_, &mut t, _) = cand.select_nth_unstable_by(r, |a, b| b.cmp(a));
    let greater = cand.iter().filter(|&&x| x > t).count();
    Sampled::Found(t, above + greater)
}

/// The k-th largest key by a radix select: a histogram of the top bits of every key (per piece,
/// in parallel, then summed) finds the bucket holding the k-th largest; the keys of that one
/// bucket are gathered and the exact key is selected among them (`select_nth_unstable`, linear).
/// Two linear passes over the values plus a selection over one bucket (all values in the worst
/// case of massive ties, still linear).
fn kth_largest_radix(
    segments: &[(&str, &[f32])],
    pieces: &[Piece],
    n: usize,
    k: usize,
) -> Option<(u32, usize)> {
    // Fewer buckets for fewer values: clearing and summing 64k counters would dominate 10^5.
    let bits = (n.ilog2().saturating_sub(5)).clamp(11, HIGH_BITS);
    let shift = 32 - bits;
    let parts: Vec<(Vec<u32>, bool)> =
        map_pieces(pieces, n, |_, p| histogram(p.values(segments), shift));
    if parts.iter().any(|(_, nan)| *nan) {
        return None;
    }
    let mut hist = vec![0usize; 1 << bits];
    for (h, _) in &parts {
        for (t, &c) in hist.iter_mut().zip(h) {
            *t += c as usize;
        }
    }
    let (bucket, above) = walk_down(&hist, k);
    // Each piece knows how many of its keys fall in the bucket, so the gather writes every key
    // into an exactly sized buffer and advances only on a match: no branch to mispredict.
    let mut cand: Vec<u32> = map_pieces(pieces, n, |i, p| {
        let count = parts[i].0[bucket] as usize;
        let mut buf = vec![0u32; count + 1];
        let mut len = 0;
        for &v in p.values(segments) {
            let kv = key(v);
            buf[len] = kv;
            len += usize::from(kv >> shift == bucket as u32);
        }
        buf.truncate(count);
        buf
    })
    .concat();
    let r = k - above - 1;
    let (_, &mut t, _) = cand.select_nth_unstable_by(r, |a, b| b.cmp(a));
    let greater = cand.iter().filter(|&&x| x > t).count();
    Some((t, above + greater))
}

/// The highest bucket at which the count from the top reaches `k`, and the count strictly above.
fn walk_down(hist: &[usize], k: usize) -> (usize, usize) {
    let mut above = 0;
    for b in (0..hist.len()).rev() {
        if above + hist[b] >= k {
            return (b, above);
        }
        above += hist[b];
    }
    (0, above)
}

/// How scores are turned into masks across layers.
#[derive(Debug, Clone, PartialEq)]
pub enum Scope {
    /// One top-k over all prunable weights together (SNIP, GraSP, SynFlow, global IMP).
    Global,
    /// A top-k per layer, with per-layer counts from a sparsity distribution.
    Layerwise(SparsityDistribution),
}

/// Scores for the weights of one prunable parameter, flattened in row-major order.
#[derive(Debug, Clone)]
pub struct LayerScores {
    /// The parameter scored.
    pub param: ParamInfo,
    /// One score per weight, higher is kept.
    pub scores: Vec<f32>,
}

/// Turn per-layer scores into masks with exactly the requested number of survivors.
///
/// With [`Scope::Global`], `sparsity.kept(total)` weights survive over all layers. With
/// [`Scope::Layerwise`], each layer keeps the count its distribution assigns it. A layer left
/// with no weight is an error unless `allow_empty_layers`.
///
/// # Errors
/// Shape mismatches between `param` and `scores`, NaN scores, infeasible budgets, and
/// [`MaskError::EmptyLayer`].
pub fn masks_from_scores(
    layers: &[LayerScores],
    sparsity: Sparsity,
    scope: &Scope,
    allow_empty_layers: bool,
) -> Result<Vec<Vec<bool>>> {
    for l in layers {
        if l.scores.len() != l.param.numel() {
            return Err(MaskError::ShapeMismatch {
                param: l.param.path.clone(),
                mask: vec![l.scores.len()],
                weight: l.param.shape.clone(),
            });
        }
    }
    let masks = match scope {
        Scope::Global => {
            let total: usize = layers.iter().map(|l| l.scores.len()).sum();
            let segs: Vec<(&str, &[f32])> = layers
                .iter()
                .map(|l| (l.param.path.as_str(), l.scores.as_slice()))
                .collect();
            top_k_segments(&segs, sparsity.kept(total))?
        }
        Scope::Layerwise(dist) => {
            let params: Vec<ParamInfo> = layers.iter().map(|l| l.param.clone()).collect();
            let counts = dist.layer_counts(&params, sparsity, &Default::default())?;
            layers
                .iter()
                .zip(counts)
                .map(|(l, k)| {
                    Ok(top_k_segments(&[(l.param.path.as_str(), &l.scores)], k)?
                        .pop()
                        .unwrap_or_default())
                })
                .collect::<Result<Vec<_>>>()?
        }
    };
    if !allow_empty_layers {
        let params: Vec<&ParamInfo> = layers.iter().map(|l| &l.param).collect();
        crate::structure::no_empty_layer(&params, &masks)?;
    }
    Ok(masks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_broken_by_lower_index() {
        // Hand table: scores with a 4-way tie at 0.5; k = 3 keeps 0.9 then the two first 0.5s.
        let s = [0.5, 0.1, 0.9, 0.5, 0.5, 0.5, 0.2];
        let m = top_k(&s, 3).unwrap();
        assert_eq!(m, vec![true, false, true, true, false, false, false]);
        // All equal: the first k positions.
        let m = top_k(&[1.0; 6], 4).unwrap();
        assert_eq!(m, vec![true, true, true, true, false, false]);
        // k = 0 and k = n.
        assert_eq!(top_k(&s, 0).unwrap(), vec![false; 7]);
        assert_eq!(top_k(&s, 7).unwrap(), vec![true; 7]);
    }

    #[test]
    fn global_ties_span_segments_in_order() {
        let a = [1.0f32, 0.0];
        let b = [1.0f32, 1.0];
        let m = top_k_segments(&[("a", &a), ("b", &b)], 2).unwrap();
        assert_eq!(m, vec![vec![true, false], vec![true, false]]);
    }

    #[test]
    fn negative_zero_and_infinities_are_ordered() {
        let s = [f32::NEG_INFINITY, -0.0, 0.0, f32::INFINITY];
        assert_eq!(top_k(&s, 2).unwrap(), vec![false, false, true, true]);
    }

    /// Every path (sorting below 4096 scores, the radix select up to 2^15, sampling above)
    /// against a brute-force reference:
    /// sort by (score descending, index ascending) and keep the first k.
    #[test]
    fn matches_brute_force_reference() {
        let mut rng = crate::SparseRng::new(9);
        for &n in &[1usize, 7, 100, 4095, 4096, 5000, 70_000] {
            for levels in [3u64, 1000, 0] {
                let s: Vec<f32> = (0..n)
                    .map(|_| {
                        let x = if levels == 0 {
                            rng.next_f32() * 2.0 - 1.0
                        } else {
                            rng.below(levels) as f32 - (levels / 2) as f32
                        };
                        if rng.below(50) == 0 { -0.0 } else { x }
                    })
                    .collect();
                for k in [0, 1, n / 3, n / 2, n.saturating_sub(1), n] {
                    let mut idx: Vec<usize> = (0..n).collect();
                    idx.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
                    let mut want = vec![false; n];
                    for &i in &idx[..k] {
                        want[i] = true;
                    }
                    assert_eq!(top_k(&s, k).unwrap(), want, "n={n} k={k} levels={levels}");
                }
            }
        }
    }

    /// The parallel path: several segments, each cut into several pieces, ties across piece and
    /// segment borders, against the brute-force global reference.
    #[test]
    fn segments_in_parallel_pieces_match_reference() {
        let mut rng = crate::SparseRng::new(4);
        let sizes = [150_000usize, 3, 70_001, 0, 40_000];
        for levels in [5u64, 100_000, 0] {
            let segs: Vec<Vec<f32>> = sizes
                .iter()
                .map(|&n| {
                    (0..n)
                        .map(|_| {
                            if levels == 0 {
                                rng.next_f32() * 1e-4
                            } else {
                                rng.below(levels) as f32
                            }
                        })
                        .collect()
                })
                .collect();
            let named: Vec<(&str, &[f32])> = segs.iter().map(|s| ("s", s.as_slice())).collect();
            let split = pieces(&named).iter().filter(|p| p.segment == 0).count();
            assert!(split >= 2, "the first segment is cut into pieces");
            let flat: Vec<f32> = segs.concat();
            let n = flat.len();
            let mut idx: Vec<usize> = (0..n).collect();
            idx.sort_by(|&a, &b| flat[b].total_cmp(&flat[a]).then(a.cmp(&b)));
            for k in [1, n / 10, n / 2, n - 1] {
                let mut want = vec![false; n];
                for &i in &idx[..k] {
                    want[i] = true;
                }
                let got = top_k_segments(&named, k).unwrap().concat();
                assert_eq!(got.iter().filter(|&&b| b).count(), k);
                assert_eq!(got, want, "k={k} levels={levels}");
            }
        }
        // A NaN deep in the third segment is reported there.
        let a = vec![1.0f32; 100_000];
        let mut c = vec![0.5f32; 90_000];
        c[77_777] = f32::NAN;
        assert!(matches!(
            top_k_segments(&[("a", &a), ("b", &[]), ("c", &c)], 10),
            Err(MaskError::NanScore { ref param, index: 77_777 }) if param == "c"
        ));
    }

    /// The sampled selection finds the same threshold as the radix select whenever its bracket
    /// holds it, and does hold it on ordinary scores (so the fast path is the one exercised).
    #[test]
    fn sampled_select_agrees_with_radix() {
        let mut rng = crate::SparseRng::new(11);
        let n = 200_000;
        for levels in [0u64, 7, 50_000] {
            let s: Vec<f32> = (0..n)
                .map(|_| {
                    if levels == 0 {
                        rng.next_f32().powi(3) - 0.1
                    } else {
                        rng.below(levels) as f32
                    }
                })
                .collect();
            let segs = [("a", &s[..70_000]), ("b", &s[70_000..])];
            let pieces = pieces(&segs);
            for k in [1, 17, n / 50, n / 10, n / 2, n - 3, n - 1] {
                let fast = kth_largest_sampled(&segs, &pieces, n, k);
                let (t, greater) = kth_largest_radix(&segs, &pieces, n, k).unwrap();
                assert_eq!(fast, Sampled::Found(t, greater), "k={k} levels={levels}");
            }
        }
        let mut with_nan = vec![0.5f32; 50_000];
        with_nan[49_999] = f32::NAN;
        let segs = [("a", &with_nan[..])];
        assert_eq!(
            kth_largest_sampled(&segs, &pieces(&segs), 50_000, 10),
            Sampled::Nan
        );
    }

    /// Scores built so that every sampled position holds the one large value: the bracket
    /// misses, the radix select takes over, and the mask is still the exact top-k.
    #[test]
    fn a_misleading_sample_falls_back_to_the_exact_select() {
        let n = 65_536;
        let mut s = vec![0.0f32; n];
        for (i, p) in sample_positions(n).enumerate() {
            s[p] = 1.0 + (i % 3) as f32;
        }
        let ones = sample_size(n);
        for (i, v) in s.iter_mut().enumerate() {
            if *v == 0.0 {
                *v = (i % 1000) as f32 * 1e-4;
            }
        }
        let segs = [("a", &s[..])];
        let k = ones + 1000;
        assert_eq!(
            kth_largest_sampled(&segs, &pieces(&segs), n, k),
            Sampled::Missed
        );
        let mut idx: Vec<usize> = (0..n).collect();
        idx.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
        let mut want = vec![false; n];
        for &i in &idx[..k] {
            want[i] = true;
        }
        assert_eq!(top_k(&s, k).unwrap(), want);
    }

    #[test]
    fn nan_and_oversized_k_are_errors() {
        assert!(matches!(
            top_k(&[0.1, f32::NAN], 1),
            Err(MaskError::NanScore { index: 1, .. })
        ));
        assert!(matches!(
            top_k(&[0.1], 2),
            Err(MaskError::TooManySurvivors { k: 2, n: 1 })
        ));
    }
}
