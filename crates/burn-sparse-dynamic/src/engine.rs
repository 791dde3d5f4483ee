//! The shared drop/grow engine: one update of one layer.

use burn_sparse_mask::{MaskError, Result, top_k};

/// The result of one layer's drop/grow.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerUpdate {
    /// The new mask.
    pub mask: Vec<bool>,
    /// Positions inactive before and active after (newly grown).
    pub grown: Vec<usize>,
    /// How many active weights were dropped (as many were grown, some maybe the same).
    pub n_drop: usize,
}

impl LayerUpdate {
    /// The update from `old` to `new` (grown: inactive in `old`, active in `new`).
    fn between(old: &[bool], new: Vec<bool>, n_drop: usize) -> Self {
        let grown = (0..old.len()).filter(|&i| new[i] && !old[i]).collect();
        Self {
            mask: new,
            grown,
            n_drop,
        }
    }
}

/// `n_drop = floor(fraction * n_active)`.
pub fn drop_count(fraction: f64, n_active: usize) -> usize {
    ((fraction * n_active as f64).floor() as usize).min(n_active)
}

/// Drop the `n_drop` active weights with the smallest `|w|` (ties: the higher flat index is
/// dropped first), then grow `n_grow` positions that are inactive after the drop, by the highest
/// `grow_score` (ties: lower index). Positions just dropped may be regrown, as in the RigL
/// reference. The number of kept weights changes by `n_grow - n_drop`.
///
/// # Errors
/// [`MaskError::NanScore`] if a grow score of a candidate is NaN (the caller skips the update),
/// [`MaskError::ShapeMismatch`] for inconsistent lengths, and [`MaskError::TooManySurvivors`]
/// if there are fewer candidates than `n_grow`.
pub fn drop_and_grow(
    name: &str,
    mask: &[bool],
    weights: &[f32],
    grow_score: &[f32],
    n_drop: usize,
    n_grow: usize,
) -> Result<LayerUpdate> {
    drop_and_grow_owned(name, mask, weights, grow_score.to_vec(), n_drop, n_grow)
}

/// [`drop_and_grow`] on grow scores it may overwrite, so it copies nothing of the layer's size
/// but the new mask: the positions active after the drop score `-inf`, below every candidate,
/// and one top-k over the whole layer picks the grown ones (the candidates in index order,
/// ties to the lower index, exactly as [`drop_and_grow`] specifies). Candidates that themselves
/// score `-inf` (a custom [`GrowScore`](crate::GrowScore)) would tie with the active positions;
/// then the candidates are compacted first.
///
/// # Errors
/// As [`drop_and_grow`].
pub fn drop_and_grow_owned(
    name: &str,
    mask: &[bool],
    weights: &[f32],
    mut grow_score: Vec<f32>,
    n_drop: usize,
    n_grow: usize,
) -> Result<LayerUpdate> {
    check_lengths(name, mask, weights, &grow_score)?;
    let (mut new_mask, n_drop, kept) = drop_smallest(mask, weights, n_drop)?;
    // Grow: the n_grow highest scores among everything inactive after the drop (which includes
    // the just-dropped positions, as in the reference), ties to the lower index.
    let n_candidates = mask.len() - kept;
    if n_grow > n_candidates {
        return Err(MaskError::TooManySurvivors {
            k: n_grow,
            n: n_candidates,
        });
    }
    // One branch-free pass (it vectorises): kept positions to -inf, counting NaN and -inf.
    let (mut n_nan, mut at_neg_inf) = (0usize, 0usize);
    for (s, &a) in grow_score.iter_mut().zip(&new_mask) {
        let v = if a { f32::NEG_INFINITY } else { *s };
        *s = v;
        n_nan += usize::from(v.is_nan());
        at_neg_inf += usize::from(v == f32::NEG_INFINITY);
    }
    // Only candidates can be NaN now; the first one is the first in candidate order.
    if n_nan > 0 {
        let index = grow_score.iter().position(|s| s.is_nan()).unwrap_or(0);
        return Err(MaskError::NanScore {
            param: name.to_string(),
            index,
        });
    }
    let grown = if at_neg_inf > kept {
        grow_compacted(mask, &mut new_mask, &grow_score, n_grow)?
    } else {
        let chosen = top_k(&grow_score, n_grow)?;
        let mut grown = Vec::with_capacity(n_grow);
        for (i, (&c, m)) in chosen.iter().zip(new_mask.iter_mut()).enumerate() {
            if c {
                *m = true;
                if !mask[i] {
                    grown.push(i);
                }
            }
        }
        grown
    };
    Ok(LayerUpdate {
        mask: new_mask,
        grown,
        n_drop,
    })
}

/// The grow step on the compacted candidates (the positions inactive in `new_mask`): activate
/// the `n_grow` highest-scoring ones in `new_mask` and return those inactive in `mask` too.
fn grow_compacted(
    mask: &[bool],
    new_mask: &mut [bool],
    grow_score: &[f32],
    n_grow: usize,
) -> Result<Vec<usize>> {
    let candidates: Vec<usize> = (0..mask.len()).filter(|&i| !new_mask[i]).collect();
    let cand_scores: Vec<f32> = candidates.iter().map(|&i| grow_score[i]).collect();
    let grown_mask = top_k(&cand_scores, n_grow)?;
    let mut grown = Vec::new();
    for (&i, &g) in candidates.iter().zip(&grown_mask) {
        if g {
            new_mask[i] = true;
            if !mask[i] {
                grown.push(i);
            }
        }
    }
    Ok(grown)
}

fn check_lengths(name: &str, mask: &[bool], weights: &[f32], grow_score: &[f32]) -> Result<()> {
    if weights.len() != mask.len() || grow_score.len() != mask.len() {
        return Err(MaskError::ShapeMismatch {
            param: name.to_string(),
            mask: vec![mask.len()],
            weight: vec![weights.len(), grow_score.len()],
        });
    }
    Ok(())
}

/// Keep the `n_active - n_drop` largest `|w|` among the active weights only (the actives in
/// index order, so ties keep the lower index, i.e. the higher index is dropped first). Returns
/// the mask after the drop, the number dropped and the number kept.
fn drop_smallest(
    mask: &[bool],
    weights: &[f32],
    n_drop: usize,
) -> Result<(Vec<bool>, usize, usize)> {
    let active: Vec<usize> = (0..mask.len()).filter(|&i| mask[i]).collect();
    let n_active = active.len();
    let n_drop = n_drop.min(n_active);
    let active_abs: Vec<f32> = active.iter().map(|&i| weights[i].abs()).collect();
    let keep = top_k(&active_abs, n_active - n_drop)?;
    let mut new_mask = vec![false; mask.len()];
    for (&i, &k) in active.iter().zip(&keep) {
        new_mask[i] = k;
    }
    Ok((new_mask, n_drop, n_active - n_drop))
}

/// [`drop_and_grow`] that keeps every group's count (N:M dynamic sparse training): drop the
/// `n_drop` smallest `|w|` of the layer as usual, then, in each group that lost `d` weights,
/// grow the `d` highest `grow_score` among that group's positions inactive after the drop
/// (just-dropped ones included, ties to the lower index). A group that lost nothing is left
/// as it is. `groups` must partition the layer (see
/// [`Structure::groups`](burn_sparse_mask::Structure::groups)).
///
/// # Errors
/// As [`drop_and_grow`].
pub fn drop_and_grow_in_groups(
    name: &str,
    mask: &[bool],
    weights: &[f32],
    grow_score: &[f32],
    n_drop: usize,
    groups: &[Vec<usize>],
) -> Result<LayerUpdate> {
    check_lengths(name, mask, weights, grow_score)?;
    let (mut new_mask, n_drop, _) = drop_smallest(mask, weights, n_drop)?;
    for g in groups {
        let lost = g.iter().filter(|&&i| mask[i] && !new_mask[i]).count();
        if lost == 0 {
            continue;
        }
        let candidates: Vec<usize> = g.iter().copied().filter(|&i| !new_mask[i]).collect();
        let scores: Vec<f32> = candidates.iter().map(|&i| grow_score[i]).collect();
        if let Some(p) = scores.iter().position(|s| s.is_nan()) {
            return Err(MaskError::NanScore {
                param: name.to_string(),
                index: candidates[p],
            });
        }
        for (&i, &k) in candidates.iter().zip(&top_k(&scores, lost)?) {
            if k {
                new_mask[i] = true;
            }
        }
    }
    Ok(LayerUpdate::between(mask, new_mask, n_drop))
}

/// Drop and grow whole blocks: `groups` are the blocks of the layer (see
/// [`Structure::groups`](burn_sparse_mask::Structure::groups) for `Block`), each either all
/// active or all inactive. A block scores the sum of its `|w|` for the drop and the sum of its
/// `grow_score` for the grow (jaxpruner's `Block`: scores pooled over the block); then
/// [`drop_and_grow`] runs on the blocks: the `n_drop` active blocks of least `|w|` go (ties: the
/// higher block index first), as many inactive-after-drop blocks of highest score grow (ties:
/// the lower block index), and the layer keeps its number of blocks.
///
/// # Errors
/// As [`drop_and_grow`] (a NaN grow score is reported at its position in the layer), and
/// [`MaskError::InvalidConfig`] for a mask that is not made of whole blocks.
pub fn drop_and_grow_blocks(
    name: &str,
    mask: &[bool],
    weights: &[f32],
    grow_score: &[f32],
    n_drop: usize,
    groups: &[Vec<usize>],
) -> Result<LayerUpdate> {
    check_lengths(name, mask, weights, grow_score)?;
    if let Some(index) = grow_score.iter().position(|s| s.is_nan()) {
        return Err(MaskError::NanScore {
            param: name.to_string(),
            index,
        });
    }
    let mut block_mask = Vec::with_capacity(groups.len());
    for (b, g) in groups.iter().enumerate() {
        let on = g.iter().filter(|&&i| mask[i]).count();
        if on != 0 && on != g.len() {
            return Err(MaskError::InvalidConfig {
                field: "structure",
                message: format!(
                    "`{name}`: block {b} has {on} of its {} weights active: a block mask keeps \
                     whole blocks",
                    g.len()
                ),
            });
        }
        block_mask.push(on != 0);
    }
    let abs: Vec<f32> = weights.iter().map(|w| w.abs()).collect();
    let block_w = burn_sparse_mask::group_sums(&abs, groups);
    let block_g = burn_sparse_mask::group_sums(grow_score, groups);
    let u = drop_and_grow(name, &block_mask, &block_w, &block_g, n_drop, n_drop)?;
    let new_mask = burn_sparse_mask::expand_groups(mask.len(), groups, &u.mask);
    Ok(LayerUpdate::between(mask, new_mask, u.n_drop))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition, by sorting: drop the `n_drop` active positions of smallest `|w|` (ties:
    /// higher index first), then grow the `n_grow` candidates of highest score (ties: lower
    /// index first).
    fn by_sorting(
        mask: &[bool],
        w: &[f32],
        g: &[f32],
        n_drop: usize,
        n_grow: usize,
    ) -> (Vec<bool>, Vec<usize>) {
        let mut active: Vec<usize> = (0..mask.len()).filter(|&i| mask[i]).collect();
        active.sort_by(|&a, &b| w[a].abs().total_cmp(&w[b].abs()).then(b.cmp(&a)));
        let mut new = mask.to_vec();
        for &i in &active[..n_drop] {
            new[i] = false;
        }
        let mut cand: Vec<usize> = (0..mask.len()).filter(|&i| !new[i]).collect();
        cand.sort_by(|&a, &b| g[b].total_cmp(&g[a]).then(a.cmp(&b)));
        let mut grown: Vec<usize> = cand[..n_grow].to_vec();
        for &i in &grown {
            new[i] = true;
        }
        grown.retain(|&i| !mask[i]);
        grown.sort_unstable();
        (new, grown)
    }

    proptest! {
        /// The single top-k over the layer with the kept positions at -inf chooses what the
        /// definition chooses, with heavy ties in both |w| and the scores, and -inf among the
        /// candidates' scores (the compacting fallback).
        #[test]
        fn drop_and_grow_is_the_sorting_definition(
            cells in proptest::collection::vec((any::<bool>(), 0u8..4, 0u8..5), 1..300),
            drop_frac in 0.0f64..1.0,
            grow_frac in 0.0f64..1.0,
        ) {
            let mask: Vec<bool> = cells.iter().map(|c| c.0).collect();
            let w: Vec<f32> = cells
                .iter()
                .map(|c| if c.0 { f32::from(c.1) - 1.5 } else { 0.0 })
                .collect();
            let g: Vec<f32> = cells
                .iter()
                .map(|c| if c.2 == 4 { f32::NEG_INFINITY } else { f32::from(c.2) * 0.25 })
                .collect();
            let n_active = mask.iter().filter(|&&b| b).count();
            let n_drop = drop_count(drop_frac, n_active);
            let n_cand = mask.len() - (n_active - n_drop);
            let n_grow = ((grow_frac * n_cand as f64) as usize).min(n_cand);
            let (want_mask, want_grown) = by_sorting(&mask, &w, &g, n_drop, n_grow);
            let u = drop_and_grow("l", &mask, &w, &g, n_drop, n_grow).unwrap();
            prop_assert_eq!(&u.mask, &want_mask);
            prop_assert_eq!(&u.grown, &want_grown);
            prop_assert_eq!(u.n_drop, n_drop);
            let kept = u.mask.iter().filter(|&&b| b).count();
            prop_assert_eq!(kept, n_active - n_drop + n_grow);
            // Without -inf scores the single top-k runs; it must agree too.
            let finite: Vec<f32> = g.iter().map(|&x| x.max(-1.0)).collect();
            let (want_mask, want_grown) = by_sorting(&mask, &w, &finite, n_drop, n_grow);
            let u = drop_and_grow_owned("l", &mask, &w, finite, n_drop, n_grow).unwrap();
            prop_assert_eq!(u.mask, want_mask);
            prop_assert_eq!(u.grown, want_grown);
        }
    }

    #[test]
    fn too_many_to_grow_is_an_error() {
        let mask = [true, true, false];
        let e = drop_and_grow("l", &mask, &[1.0, 2.0, 0.0], &[0.0; 3], 0, 2).unwrap_err();
        assert!(matches!(e, MaskError::TooManySurvivors { k: 2, n: 1 }));
        // A NaN score at a position that stays active is never read.
        let u = drop_and_grow("l", &mask, &[1.0, 2.0, 0.0], &[f32::NAN, 0.0, 1.0], 0, 1).unwrap();
        assert_eq!(u.grown, vec![2]);
    }

    #[test]
    fn blocks_by_hand() {
        // Four blocks of two positions: A {0,1} (active, |w| sum 0.3), B {2,3} (active, 0.9),
        // C {4,5} and D {6,7} (inactive).
        // Drop 1 block: A (least |w|). Grow 1 among {A, C, D} by summed score: A 0.2, C 0.5,
        // D 0.5 -> C (tie with D: the lower block).
        let groups = vec![vec![0, 1], vec![2, 3], vec![4, 5], vec![6, 7]];
        let mask = [true, true, true, true, false, false, false, false];
        let w = [0.1, -0.2, 0.4, 0.5, 0.0, 0.0, 0.0, 0.0];
        let g = [0.1, 0.1, 9.0, 9.0, 0.25, 0.25, 0.0, 0.5];
        let u = drop_and_grow_blocks("l", &mask, &w, &g, 1, &groups).unwrap();
        assert_eq!(
            u.mask,
            vec![false, false, true, true, true, true, false, false]
        );
        assert_eq!(u.grown, vec![4, 5]);
        assert_eq!(u.n_drop, 1);
        // A partial block is refused, a NaN score reported at its position.
        let partial = [true, false, true, true, false, false, false, false];
        assert!(matches!(
            drop_and_grow_blocks("l", &partial, &w, &g, 1, &groups),
            Err(MaskError::InvalidConfig { .. })
        ));
        let mut nan = g;
        nan[6] = f32::NAN;
        assert!(matches!(
            drop_and_grow_blocks("l", &mask, &w, &nan, 1, &groups),
            Err(MaskError::NanScore { index: 6, .. })
        ));
    }

    #[test]
    fn hand_built_drop_and_grow() {
        // Active: 0 (|w| .5), 2 (.1), 3 (.9), 5 (.3). Drop 2 smallest: 2 and 5.
        // Grow 2 by score among inactive-after-drop {1, 2, 4, 5}: scores 1: .2, 2: .8, 4: .7, 5: .1
        // -> 2 (regrown, keeps its value: not "newly grown") and 4 (newly grown).
        let mask = [true, false, true, true, false, true];
        let w = [0.5, 0.0, -0.1, 0.9, 0.0, 0.3];
        let g = [9.0, 0.2, 0.8, 9.0, 0.7, 0.1];
        let u = drop_and_grow("l", &mask, &w, &g, 2, 2).unwrap();
        assert_eq!(u.mask, vec![true, false, true, true, true, false]);
        assert_eq!(u.grown, vec![4]);
        assert_eq!(u.n_drop, 2);
    }

    #[test]
    fn ties_and_nan() {
        // All |w| equal: the higher index is dropped first. All grow scores equal: lower first.
        let mask = [true, true, false, false];
        let u = drop_and_grow("l", &mask, &[1.0, 1.0, 0.0, 0.0], &[0.0; 4], 1, 1).unwrap();
        assert_eq!(u.mask, vec![true, true, false, false]); // drops 1, regrows 1 (lowest candidate)
        assert!(u.grown.is_empty());
        let e = drop_and_grow(
            "l",
            &mask,
            &[1.0, 2.0, 0.0, 0.0],
            &[0.0, 0.0, f32::NAN, 0.0],
            1,
            1,
        )
        .unwrap_err();
        assert!(matches!(e, MaskError::NanScore { index: 2, .. }));
        assert_eq!(drop_count(0.3, 10), 3);
        assert_eq!(drop_count(0.299, 10), 2);
    }
}
