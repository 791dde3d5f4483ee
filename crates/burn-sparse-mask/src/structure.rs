//! Sparsity types: unstructured, N:M and block masks, orthogonal to the score that ranks weights.
//!
//! - **N:M** (NVIDIA's 2:4; Zhou et al. 2021, arXiv:2102.04010; jaxpruner's `NByM`): every group
//!   of `m` consecutive weights along the reduction dimension keeps exactly `n`. For burn's
//!   `Linear` weight `[d_in, d_out]` a group is `m` consecutive `d_in` indices of one output
//!   column (flat indices `(g*m + r) * d_out + j`, `r = 0..m`); for a convolution
//!   `[out, in, k..]` it is `m` consecutive entries of one output channel's flattened
//!   `in * k..`. The density is `n / m` in every layer, whatever the distribution. A reduction
//!   dimension that does not divide by `m` is padded: its last group of each column (channel)
//!   is shorter, `r < m` weights, and keeps `min(n, r)`, as if the padding held pruned zeros
//!   (so a layer's density is then a little off `n / m`: LeNet-300-100's fc2 at 1:8, 300 =
//!   37 * 8 + 4, keeps 38 of 300 per output).
//! - **Block** (jaxpruner's `Block`): the weight, seen as a matrix (`[d_in, d_out]`, or
//!   `[out, in * k..]` for a convolution), is tiled in `rows x cols` blocks; a block's score is
//!   the sum of its weights' scores, and whole blocks are kept or removed.
//!
//! A weight whose matrix does not tile into blocks is a typed error naming it (no padding).
//! Within a group, and between blocks, ties go to the lower flat index.

use serde::{Deserialize, Serialize};

use crate::error::{MaskError, Result};
use crate::fraction::Sparsity;
use crate::params::ParamInfo;
use crate::topk::{LayerScores, Scope, masks_from_scores, top_k, top_k_segments};

/// The shape of a mask's kept weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Structure {
    /// Any weight may be kept or removed (the default).
    #[default]
    Unstructured,
    /// Exactly `n` kept in every group of `m` consecutive weights along the reduction dim
    /// (`min(n, r)` in a last, padded group of `r < m`).
    NByM {
        /// Kept per group.
        n: usize,
        /// Group size.
        m: usize,
    },
    /// Whole `rows x cols` blocks of the weight matrix.
    Block {
        /// Block height (along `d_in` of a `Linear`, `out` of a convolution).
        rows: usize,
        /// Block width (along `d_out` of a `Linear`, `in * k..` of a convolution).
        cols: usize,
    },
}

impl Structure {
    /// Check the numbers.
    ///
    /// # Errors
    /// [`MaskError::InvalidConfig`] (`structure`) for `n > m`, `m = 0`, `n = 0` or an empty
    /// block.
    pub fn validate(self) -> Result<()> {
        let bad = |message: String| {
            Err(MaskError::InvalidConfig {
                field: "structure",
                message,
            })
        };
        match self {
            Structure::Unstructured => Ok(()),
            Structure::NByM { n, m } if m == 0 || n == 0 || n > m => {
                bad(format!("{n}:{m} needs 1 <= n <= m"))
            }
            Structure::Block { rows, cols } if rows == 0 || cols == 0 => {
                bad(format!("a {rows}x{cols} block is empty"))
            }
            _ => Ok(()),
        }
    }

    /// The sparsity an N:M structure implies, `1 - n / m` (None for the others).
    pub fn implied_sparsity(self) -> Option<Sparsity> {
        match self {
            Structure::NByM { n, m } if m > 0 && n <= m => {
                Sparsity::new(1.0 - n as f64 / m as f64).ok()
            }
            _ => None,
        }
    }

    /// The groups of `param` (N:M groups or blocks), each a list of flat indices in increasing
    /// order; None for unstructured.
    ///
    /// # Errors
    /// [`MaskError::InvalidConfig`] for a rank below 2 or a matrix that does not tile into
    /// blocks.
    pub fn groups(self, param: &ParamInfo) -> Result<Option<Vec<Vec<usize>>>> {
        self.validate()?;
        if self == Structure::Unstructured {
            return Ok(None);
        }
        let shape = &param.shape;
        let bad = |message: String| MaskError::InvalidConfig {
            field: "structure",
            message: format!("`{}` {shape:?}: {message}", param.path),
        };
        if shape.len() < 2 {
            return Err(bad(
                "a structured mask needs a weight of rank 2 or more".into()
            ));
        }
        // The matrix view: (rows, cols) and whether the reduction runs down the rows (Linear
        // [d_in, d_out]) or along a row (a convolution's [out, in * k..]).
        let linear = shape.len() == 2;
        let (r, c) = if linear {
            (shape[0], shape[1])
        } else {
            (shape[0], shape[1..].iter().product())
        };
        Ok(Some(match self {
            Structure::Unstructured => unreachable!("returned above"),
            Structure::NByM { m, .. } => {
                // Chunks of m along the reduction dim; the last one shorter if it does not
                // divide (padding).
                let chunks =
                    |len: usize| (0..len.div_ceil(m)).map(move |g| g * m..((g + 1) * m).min(len));
                let mut out = Vec::with_capacity(r * c / m + c.max(r));
                if linear {
                    for j in 0..c {
                        for g in chunks(r) {
                            out.push(g.map(|i| i * c + j).collect());
                        }
                    }
                } else {
                    for o in 0..r {
                        for g in chunks(c) {
                            out.push(g.map(|i| o * c + i).collect());
                        }
                    }
                }
                out
            }
            Structure::Block { rows, cols } => {
                if !r.is_multiple_of(rows) || !c.is_multiple_of(cols) {
                    return Err(bad(format!(
                        "its {r}x{c} matrix does not tile into {rows}x{cols} blocks"
                    )));
                }
                let mut out = Vec::with_capacity((r / rows) * (c / cols));
                for bi in 0..r / rows {
                    for bj in 0..c / cols {
                        let mut idx = Vec::with_capacity(rows * cols);
                        for i in 0..rows {
                            for j in 0..cols {
                                idx.push((bi * rows + i) * c + bj * cols + j);
                            }
                        }
                        out.push(idx);
                    }
                }
                out
            }
        }))
    }
}

/// Keep the `per_group` highest scores of every group (all of a smaller group; ties: lower
/// index), nothing outside.
///
/// # Errors
/// [`MaskError::NanScore`] for a NaN score.
pub fn top_per_group(
    param: &ParamInfo,
    scores: &[f32],
    groups: &[Vec<usize>],
    per_group: usize,
) -> Result<Vec<bool>> {
    let mut mask = vec![false; scores.len()];
    for g in groups {
        let s: Vec<f32> = g.iter().map(|&i| scores[i]).collect();
        let keep = top_k(&s, per_group.min(g.len())).map_err(|e| match e {
            MaskError::NanScore { index, .. } => MaskError::NanScore {
                param: param.path.clone(),
                index: g[index],
            },
            e => e,
        })?;
        for (&i, &k) in g.iter().zip(&keep) {
            mask[i] = k;
        }
    }
    Ok(mask)
}

/// [`masks_from_scores`] for a [`Structure`]: unstructured is exactly that; N:M keeps `n` of
/// every group in every layer (`sparsity` must be `1 - n / m`; `scope` does not apply); block
/// keeps the highest-scoring blocks (block score: the sum of its scores), `round(density *
/// blocks)` over all layers for [`Scope::Global`], or per layer the distribution's count
/// rounded to whole blocks (so a layer's nnz is a multiple of the block size).
///
/// # Errors
/// As [`masks_from_scores`]; [`MaskError::InvalidConfig`] for a shape the structure does not
/// divide, or a `sparsity` that N:M does not give.
pub fn structured_masks(
    layers: &[LayerScores],
    sparsity: Sparsity,
    scope: &Scope,
    structure: Structure,
    allow_empty_layers: bool,
) -> Result<Vec<Vec<bool>>> {
    structure.validate()?;
    if structure == Structure::Unstructured {
        return masks_from_scores(layers, sparsity, scope, allow_empty_layers);
    }
    for l in layers {
        if l.scores.len() != l.param.numel() {
            return Err(MaskError::ShapeMismatch {
                param: l.param.path.clone(),
                mask: vec![l.scores.len()],
                weight: l.param.shape.clone(),
            });
        }
    }
    let groups: Vec<Vec<Vec<usize>>> = layers
        .iter()
        .map(|l| Ok(structure.groups(&l.param)?.unwrap_or_default()))
        .collect::<Result<_>>()?;
    let masks = match structure {
        Structure::Unstructured => unreachable!("returned above"),
        Structure::NByM { n, m } => {
            let implied = structure.implied_sparsity();
            if implied.is_none_or(|s| (s.value() - sparsity.value()).abs() > 1e-9) {
                return Err(MaskError::InvalidConfig {
                    field: "sparsity",
                    message: format!(
                        "{n}:{m} keeps {n} of every {m}: its sparsity is {}, not {sparsity}",
                        1.0 - n as f64 / m as f64
                    ),
                });
            }
            layers
                .iter()
                .zip(&groups)
                .map(|(l, g)| top_per_group(&l.param, &l.scores, g, n))
                .collect::<Result<Vec<_>>>()?
        }
        Structure::Block { rows, cols } => {
            let size = rows * cols;
            let block_scores: Vec<Vec<f32>> = layers
                .iter()
                .zip(&groups)
                .map(|(l, gs)| group_sums(&l.scores, gs))
                .collect();
            let kept_blocks: Vec<Vec<bool>> = match scope {
                Scope::Global => {
                    let total: usize = block_scores.iter().map(Vec::len).sum();
                    let segs: Vec<(&str, &[f32])> = layers
                        .iter()
                        .zip(&block_scores)
                        .map(|(l, s)| (l.param.path.as_str(), s.as_slice()))
                        .collect();
                    top_k_segments(&segs, sparsity.kept(total))?
                }
                Scope::Layerwise(dist) => {
                    let params: Vec<ParamInfo> = layers.iter().map(|l| l.param.clone()).collect();
                    let counts = dist.layer_counts(&params, sparsity, &Default::default())?;
                    block_scores
                        .iter()
                        .zip(layers)
                        .zip(counts)
                        .map(|((s, l), k)| {
                            let blocks = ((k as f64 / size as f64).round() as usize).min(s.len());
                            Ok(top_k_segments(&[(l.param.path.as_str(), s)], blocks)?
                                .pop()
                                .unwrap_or_default())
                        })
                        .collect::<Result<Vec<_>>>()?
                }
            };
            layers
                .iter()
                .zip(&groups)
                .zip(kept_blocks)
                .map(|((l, gs), kept)| expand_groups(l.scores.len(), gs, &kept))
                .collect()
        }
    };
    if !allow_empty_layers {
        let params: Vec<&ParamInfo> = layers.iter().map(|l| &l.param).collect();
        no_empty_layer(&params, &masks)?;
    }
    Ok(masks)
}

/// The sum of `scores` over each group (a block's score), in f64.
pub fn group_sums(scores: &[f32], groups: &[Vec<usize>]) -> Vec<f32> {
    groups
        .iter()
        .map(|g| g.iter().map(|&i| f64::from(scores[i])).sum::<f64>() as f32)
        .collect()
}

/// A mask of `len` positions keeping every position of the groups that `kept` marks.
pub fn expand_groups(len: usize, groups: &[Vec<usize>], kept: &[bool]) -> Vec<bool> {
    let mut mask = vec![false; len];
    for (g, &k) in groups.iter().zip(kept) {
        if k {
            for &i in g {
                mask[i] = true;
            }
        }
    }
    mask
}

/// [`MaskError::EmptyLayer`] for the first non-empty layer whose mask keeps nothing.
///
/// # Errors
/// That one.
pub fn no_empty_layer(params: &[&ParamInfo], masks: &[Vec<bool>]) -> Result<()> {
    for (p, m) in params.iter().zip(masks) {
        if !m.is_empty() && !m.iter().any(|&b| b) {
            return Err(MaskError::EmptyLayer {
                param: p.path.clone(),
                numel: m.len(),
            });
        }
    }
    Ok(())
}

/// Whether `mask` has the structure: exactly `n` per group for N:M (`min(n, r)` in a padded
/// group of `r`), whole blocks for block.
///
/// # Errors
/// As [`Structure::groups`].
pub fn has_structure(structure: Structure, param: &ParamInfo, mask: &[bool]) -> Result<bool> {
    let Some(groups) = structure.groups(param)? else {
        return Ok(true);
    };
    Ok(match structure {
        Structure::NByM { n, .. } => groups
            .iter()
            .all(|g| g.iter().filter(|&&i| mask[i]).count() == n.min(g.len())),
        _ => groups.iter().all(|g| {
            let k = g.iter().filter(|&&i| mask[i]).count();
            k == 0 || k == g.len()
        }),
    })
}
