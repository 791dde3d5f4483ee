//! Gradual magnitude pruning (Zhu & Gupta 2017, arXiv:1710.01878) as a training method.
//!
//! At the prune steps `t0, t0 + dt, ..., t0 + n*dt` of a [`GradualPruning`] schedule the
//! updater keeps the surviving weights of largest |w|, ties broken by lower flat index: per
//! layer `round((1 - s_t) * N_layer)` by default (uniform), the counts of another
//! [`SparsityDistribution`] at `s_t` (exact in total), or `round((1 - s_t) * N)` over all
//! layers ranked together. A count never exceeds a layer's survivors (a distribution such as
//! ERK may ask a layer for one more weight than it kept at the previous step; it keeps what it
//! has). A pruned weight never returns, nothing is grown, and the
//! [`SparseOptimizer`](burn_sparse_mask::SparseOptimizer) zeroes pruned weights and their
//! optimizer state. After the last prune step the mask is fixed. jaxpruner's magnitude pruner
//! with `PolynomialSchedule(power = 3)` is the reference.

use burn_sparse_mask::{
    GradualPruning, LayerView, MaskError, ParamInfo, Scope, Sparsity, SparsityDistribution,
    Structure, TopologyChange, TopologyUpdater, expand_groups, group_sums, no_empty_layer, top_k,
    top_k_segments, top_per_group,
};

/// The settings of a [`GradualMagnitude`] run.
#[derive(Debug, Clone, PartialEq)]
pub struct GmpConfig {
    /// The sparsity schedule and its prune steps (1-based optimizer steps).
    pub schedule: GradualPruning,
    /// Per layer, with counts from a distribution at the step's sparsity (uniform: the paper's
    /// choice), or one ranking over every prunable weight ([`Scope::Global`]).
    pub scope: Scope,
    /// Let a prune step leave a layer with no weight (default: an error naming the layer).
    pub allow_empty_layers: bool,
    /// The sparsity type pruned to. N:M: at sparsity `s` every group keeps
    /// `clamp(round((1 - s) * m), n, m)` of its survivors (all of a shorter, padded group if it
    /// has fewer), ending at `n` (the scope does not
    /// apply; the target must be `1 - n / m`). Block: whole blocks by the sum of their |w|,
    /// `round((1 - s) * blocks)` per layer (uniform) or over all layers (global).
    pub structure: Structure,
}

impl GmpConfig {
    /// Per-layer uniform pruning on `schedule`.
    pub fn uniform(schedule: GradualPruning) -> Self {
        Self {
            schedule,
            scope: Scope::Layerwise(SparsityDistribution::Uniform),
            allow_empty_layers: false,
            structure: Structure::Unstructured,
        }
    }
}

/// Gradual magnitude pruning, a [`TopologyUpdater`] that only removes weights.
///
/// ```
/// use burn_sparse_dynamic::{GmpConfig, GradualMagnitude};
/// use burn_sparse_mask::{GradualPruning, Sparsity, TopologyUpdater};
///
/// // From dense to 90% over prune steps 100, 200, ..., 500.
/// let s = GradualPruning::new(Sparsity::DENSE, Sparsity::new(0.9)?, 100, 4, 100)?;
/// let gmp = GradualMagnitude::new(GmpConfig::uniform(s));
/// assert!(gmp.is_update_step(300) && !gmp.is_update_step(250) && !gmp.is_update_step(600));
/// assert!(gmp.prunes());
/// # Ok::<(), burn_sparse_mask::MaskError>(())
/// ```
#[derive(Debug, Clone)]
pub struct GradualMagnitude {
    cfg: GmpConfig,
}

impl GradualMagnitude {
    /// The updater of `cfg`.
    pub fn new(cfg: GmpConfig) -> Self {
        Self { cfg }
    }

    /// The settings.
    pub fn config(&self) -> &GmpConfig {
        &self.cfg
    }

    /// Masks that keep the largest-|w| survivors of `layers` at `sparsity` (the counts of the
    /// scope, never more than a layer's survivors), and the number removed per layer.
    ///
    /// # Errors
    /// [`MaskError::NanScore`] for a NaN weight, a distribution's errors, and
    /// [`MaskError::EmptyLayer`] unless the config allows empty layers.
    pub fn prune(
        &self,
        layers: &[LayerView<'_>],
        sparsity: Sparsity,
    ) -> burn_sparse_mask::Result<(Vec<Vec<bool>>, Vec<usize>)> {
        // A pruned position scores -inf, below every |w| (including 0), so it is never kept
        // while a survivor is left: the counts below never exceed the survivors.
        let scores: Vec<Vec<f32>> = layers
            .iter()
            .map(|l| {
                l.weights
                    .iter()
                    .zip(l.mask)
                    .map(|(&w, &m)| if m { w.abs() } else { f32::NEG_INFINITY })
                    .collect()
            })
            .collect();
        let survivors: Vec<usize> = layers
            .iter()
            .map(|l| l.mask.iter().filter(|&&b| b).count())
            .collect();
        let masks = match (self.cfg.structure, &self.cfg.scope) {
            (Structure::NByM { n, m }, _) => {
                let q = ((sparsity.density().value() * m as f64).round() as usize).clamp(n, m);
                layers
                    .iter()
                    .zip(&scores)
                    .map(|(l, s)| {
                        let groups = self.cfg.structure.groups(l.param)?.unwrap_or_default();
                        top_per_group(l.param, s, &groups, q)
                    })
                    .collect::<burn_sparse_mask::Result<Vec<_>>>()?
            }
            (Structure::Block { .. }, scope) => {
                self.prune_blocks(layers, &scores, sparsity, scope)?
            }
            (Structure::Unstructured, Scope::Global) => {
                let total: usize = layers.iter().map(|l| l.weights.len()).sum();
                let k = sparsity.kept(total).min(survivors.iter().sum());
                let segs: Vec<(&str, &[f32])> = layers
                    .iter()
                    .zip(&scores)
                    .map(|(l, s)| (l.param.path.as_str(), s.as_slice()))
                    .collect();
                top_k_segments(&segs, k)?
            }
            (Structure::Unstructured, Scope::Layerwise(dist)) => {
                // Pinned layers reach their own sparsity on the same schedule: at `s_t` of a
                // final `s`, a pin of `p` prunes to `p * s_t / s`.
                let target = self.cfg.schedule.target().value();
                let scaled;
                let dist = if matches!(dist, SparsityDistribution::Pinned { .. }) && target > 0.0 {
                    scaled = dist.scale_pins(sparsity.value() / target);
                    &scaled
                } else {
                    dist
                };
                let counts = if *dist == SparsityDistribution::Uniform {
                    // `round((1 - s) * N)` in every layer, as the paper and jaxpruner prune.
                    layers
                        .iter()
                        .map(|l| sparsity.kept(l.weights.len()))
                        .collect()
                } else {
                    let params: Vec<ParamInfo> = layers.iter().map(|l| l.param.clone()).collect();
                    dist.layer_counts(&params, sparsity, &Default::default())?
                };
                layers
                    .iter()
                    .zip(&scores)
                    .zip(counts.into_iter().zip(&survivors))
                    .map(|((l, s), (k, &alive))| {
                        Ok(top_k_segments(&[(l.param.path.as_str(), s)], k.min(alive))?
                            .pop()
                            .unwrap_or_default())
                    })
                    .collect::<burn_sparse_mask::Result<Vec<_>>>()?
            }
        };
        if !self.cfg.allow_empty_layers {
            let params: Vec<&ParamInfo> = layers.iter().map(|l| l.param).collect();
            no_empty_layer(&params, &masks)?;
        }
        let removed = masks
            .iter()
            .zip(&survivors)
            .map(|(m, &alive)| alive - m.iter().filter(|&&b| b).count())
            .collect();
        Ok((masks, removed))
    }

    /// Whole blocks by the sum of their scores (a pruned block sums to -inf): per layer
    /// `round((1 - s) * blocks)` (uniform) or over all layers (global), never more than the
    /// blocks that survive.
    fn prune_blocks(
        &self,
        layers: &[LayerView<'_>],
        scores: &[Vec<f32>],
        sparsity: Sparsity,
        scope: &Scope,
    ) -> burn_sparse_mask::Result<Vec<Vec<bool>>> {
        let groups: Vec<Vec<Vec<usize>>> = layers
            .iter()
            .map(|l| Ok(self.cfg.structure.groups(l.param)?.unwrap_or_default()))
            .collect::<burn_sparse_mask::Result<_>>()?;
        let block_scores: Vec<Vec<f32>> = scores
            .iter()
            .zip(&groups)
            .map(|(s, gs)| group_sums(s, gs))
            .collect();
        let alive = |b: &[f32]| b.iter().filter(|x| x.is_finite()).count();
        let kept: Vec<Vec<bool>> = match scope {
            Scope::Global => {
                let total: usize = block_scores.iter().map(Vec::len).sum();
                let survivors: usize = block_scores.iter().map(|b| alive(b)).sum();
                let segs: Vec<(&str, &[f32])> = layers
                    .iter()
                    .zip(&block_scores)
                    .map(|(l, b)| (l.param.path.as_str(), b.as_slice()))
                    .collect();
                top_k_segments(&segs, sparsity.kept(total).min(survivors))?
            }
            Scope::Layerwise(SparsityDistribution::Uniform) => block_scores
                .iter()
                .map(|b| top_k(b, sparsity.kept(b.len()).min(alive(b))))
                .collect::<burn_sparse_mask::Result<_>>()?,
            Scope::Layerwise(d) => {
                return Err(MaskError::InvalidConfig {
                    field: "scope",
                    message: format!(
                        "block GMP prunes uniformly per layer or globally, not by {d:?}"
                    ),
                });
            }
        };
        Ok(layers
            .iter()
            .zip(&groups)
            .zip(kept)
            .map(|((l, gs), k)| expand_groups(l.mask.len(), gs, &k))
            .collect())
    }
}

impl TopologyUpdater for GradualMagnitude {
    fn name(&self) -> &str {
        "gmp"
    }
    fn is_update_step(&self, t: u64) -> bool {
        self.cfg.schedule.is_prune_step(t)
    }
    fn prunes(&self) -> bool {
        true
    }
    fn update(
        &mut self,
        t: u64,
        layers: &[LayerView<'_>],
    ) -> burn_sparse_mask::Result<Option<TopologyChange>> {
        let (masks, changed) = self.prune(layers, self.cfg.schedule.sparsity_at(t))?;
        if changed.iter().all(|&c| c == 0) {
            return Ok(None);
        }
        Ok(Some(TopologyChange {
            grown_values: vec![Vec::new(); masks.len()],
            masks,
            changed,
        }))
    }
}
