//! Exact top-k mask construction, the one routine every scorer shares.
//!
//! The routine runs on the host over `f32` scores: a radix select over order-preserving 32-bit
//! keys (a 65536-bucket histogram pass, a pass gathering the one bucket that holds the threshold,
//! and a linear selection inside it: O(n)) finds the k-th largest score, every strictly larger score is kept, and ties at the threshold are kept in
//! increasing flat index order until exactly `k` survive. So the number of survivors
//! is exact and the result is deterministic and identical on every backend for the same scores.
//! (burn's `topk` on the CubeCL backends is pathologically slow for large k, which is another
//! reason not to build masks with it.) Scores are compared with `f32::total_cmp`; NaN is an error.

use crate::distribution::Distribution;
use crate::error::{MaskError, Result};
use crate::fraction::Sparsity;
use crate::params::ParamInfo;

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
    // The selection's first pass also looks for NaN, so valid scores are read three times:
    // histogram, bucket gather, mask.
    let Some((threshold, greater)) = kth_largest_key(segments, k) else {
        return Err(nan_error());
    };
    let mut ties_left = k - greater;
    let mut out = Vec::with_capacity(segments.len());
    for (_, s) in segments {
        let m: Vec<bool> = if ties_left == 0 {
            // No tie left to place: a plain comparison the compiler vectorises.
            s.iter().map(|&v| key(v) > threshold).collect()
        } else {
            s.iter()
                .map(|&v| {
                    let kv = key(v);
                    let tie = kv == threshold && ties_left > 0;
                    ties_left -= usize::from(tie);
                    kv > threshold || tie
                })
                .collect()
        };
        out.push(m);
    }
    Ok(out)
}

/// Below this many scores the threshold is found by sorting.
const SMALL: usize = 4096;

/// An order-preserving map of `f32` to `u32`: `key(a) < key(b)` exactly when
/// `a.total_cmp(&b)` is `Less` (negative floats have their bits flipped, positive ones their
/// sign bit set).
#[inline]
fn key(v: f32) -> u32 {
    let b = v.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// Most bits of the key that index the first-level histogram (from 2^18 values on; fewer below):
/// sign, exponent and 7 mantissa bits,
/// so one bucket spans 1/128 of an octave and the threshold's bucket holds few values even for
/// scores packed into one octave (uniform `[0.5, 1)` scores fill only 4 buckets of an 11-bit
/// histogram).
const HIGH_BITS: u32 = 16;

/// Counts of `key >> shift` over all values, in `u32` (256 KB for 16 bits) summed into `usize`
/// every 2^31 values so no count can overflow; and whether any value is NaN.
fn histogram(segments: &[(&str, &[f32])], shift: u32) -> (Vec<usize>, bool) {
    let buckets = 1usize << (32 - shift);
    let mut total = vec![0usize; buckets];
    let mut h = vec![0u32; buckets];
    let mut nan = false;
    for (_, s) in segments {
        for chunk in s.chunks(1 << 31) {
            for &v in chunk {
                nan |= v.is_nan();
                h[(key(v) >> shift) as usize] += 1;
            }
            for (t, c) in total.iter_mut().zip(h.iter_mut()) {
                *t += *c as usize;
                *c = 0;
            }
        }
    }
    (total, nan)
}

/// The key of the k-th largest value (`1 <= k < n`) and how many values are strictly larger
/// (None when a score is NaN),
/// by a radix select: a histogram of the top 16 bits of every key finds the bucket holding the
/// k-th largest; the keys of that one bucket are gathered and the exact key is selected among
/// them (`select_nth_unstable`, linear). Two linear passes over the values plus a selection
/// over one bucket (all values in the worst case of massive ties, still linear).
fn kth_largest_key(segments: &[(&str, &[f32])], k: usize) -> Option<(u32, usize)> {
    let n: usize = segments.iter().map(|(_, s)| s.len()).sum();
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
    // Fewer buckets for fewer values: clearing and summing 64k counters would dominate 10^4.
    let bits = (n.ilog2().saturating_sub(2)).clamp(11, HIGH_BITS);
    let shift = 32 - bits;
    let (hist, nan) = histogram(segments, shift);
    if nan {
        return None;
    }
    let (bucket, above) = walk_down(&hist, k);
    let bucket = bucket as u32;
    let mut cand: Vec<u32> = Vec::with_capacity(hist[bucket as usize]);
    for (_, s) in segments {
        for &v in s.iter() {
            let kv = key(v);
            if kv >> shift == bucket {
                cand.push(kv);
            }
        }
    }
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
    Layerwise(Distribution),
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
        for (l, m) in layers.iter().zip(&masks) {
            if !m.is_empty() && !m.iter().any(|&b| b) {
                return Err(MaskError::EmptyLayer {
                    param: l.param.path.clone(),
                    numel: m.len(),
                });
            }
        }
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

    /// Both paths (sorting below 4096 scores, radix above) against a brute-force reference:
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
