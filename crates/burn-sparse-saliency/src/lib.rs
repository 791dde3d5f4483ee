//! # burn-sparse-saliency
//!
//! Pruning at initialisation: score every prunable weight once (or over a few rounds), keep
//! the top by the shared exact top-k of `burn-sparse-mask`, and train with the mask fixed.
//!
//! | score | paper | what it keeps |
//! |---|---|---|
//! | [`Magnitude`] | | largest `|w|` |
//! | [`RandomScore`] | | uniform random (baseline) |
//! | [`Snip`] | Lee et al. 2019, arXiv:1810.02340 | largest `|dL/dw * w|`, normalised by its sum |
//! | [`Grasp`] | Wang et al. 2020, arXiv:2002.07376 | removes the largest `-w * Hg` (T = 200) |
//! | [`SynFlow`] | Tanaka et al. 2020, arXiv:2006.05467 | largest `|w * dR/dw|`, data-free, iterative |
//!
//! Every score is a small [`Saliency`] implementation; [`prune_at_init`] turns any of them into
//! masks, global or layerwise with any distribution, in one or several rounds (the exponential
//! schedule: round `k` of `n` keeps density `d^(k/n)`; already-pruned weights stay pruned).
//! Scorers that need a forward pass take a closure `Fn(&M, Tensor<4>) -> Tensor<2>` (or any
//! loss closure), so any `#[derive(Module)]` model works as it is.

mod error;
mod scores;

pub use error::{Result, SaliencyError};
pub use scores::{
    Batch, Grasp, LossFn, Magnitude, RandomScore, Snip, SynFlow, cross_entropy_loss,
    hessian_vector_product,
};

use burn::module::Module;
use burn_sparse_mask::{
    LayerScores, MaskSet, ParamFilter, Scope, Sparsity, Structure, structured_masks,
};

/// A pruning-at-initialisation score.
pub trait Saliency<M: Module> {
    /// The method's name.
    fn name(&self) -> &'static str;
    /// One score per weight of each layer of `masks` (higher is kept), for `model` whose pruned
    /// weights are already zero.
    ///
    /// # Errors
    /// [`SaliencyError`].
    fn scores(&mut self, model: &M, masks: &MaskSet) -> Result<Vec<Vec<f32>>>;
}

/// How scores become masks.
#[derive(Debug, Clone)]
pub struct PruneConfig {
    /// Target sparsity.
    pub sparsity: Sparsity,
    /// Global (the papers' default) or layerwise with a distribution.
    pub scope: Scope,
    /// Rounds of the exponential schedule (1: one-shot; SynFlow's default is 100).
    pub rounds: usize,
    /// Allow a layer to lose every weight (otherwise an error).
    pub allow_empty_layers: bool,
    /// The sparsity type (default unstructured; N:M and block masks are computed in one round).
    pub structure: Structure,
}

impl PruneConfig {
    /// One-shot, global.
    pub fn new(sparsity: Sparsity) -> Self {
        Self {
            sparsity,
            scope: Scope::Global,
            rounds: 1,
            allow_empty_layers: false,
            structure: Structure::Unstructured,
        }
    }
    /// Set the sparsity type.
    pub fn with_structure(mut self, structure: Structure) -> Self {
        self.structure = structure;
        self
    }
    /// Set the number of rounds.
    pub fn with_rounds(mut self, rounds: usize) -> Self {
        self.rounds = rounds;
        self
    }
    /// Set the scope.
    pub fn with_scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }
}

/// Score `model` with `saliency` and prune it to `cfg.sparsity`. Returns the model with its
/// original (signed) weights masked, and the masks.
///
/// # Errors
/// [`SaliencyError`]; [`burn_sparse_mask::MaskError::EmptyLayer`] when a layer would lose every
/// weight and `allow_empty_layers` is off.
pub fn prune_at_init<M: Module, S: Saliency<M>>(
    model: M,
    filter: &ParamFilter,
    cfg: &PruneConfig,
    saliency: &mut S,
) -> Result<(M, MaskSet)> {
    if cfg.rounds == 0 {
        return Err(SaliencyError::InvalidConfig {
            field: "rounds",
            message: "must be at least 1".into(),
        });
    }
    if cfg.rounds > 1 && cfg.structure != Structure::Unstructured {
        return Err(SaliencyError::InvalidConfig {
            field: "rounds",
            message: format!(
                "a {:?} mask is computed in one round (the iterative schedule's intermediate \
                 sparsities are not of that type): use rounds = 1",
                cfg.structure
            ),
        });
    }
    let mut masks = MaskSet::dense(&model, filter)?;
    let params = masks.params();
    let d = cfg.sparsity.density().value();
    for k in 1..=cfg.rounds {
        let s = if k == cfg.rounds {
            cfg.sparsity
        } else {
            Sparsity::new(1.0 - d.powf(k as f64 / cfg.rounds as f64))?
        };
        // The first round's mask is dense: no re-mask of the model, no -inf pass over scores.
        let dense = masks.nnz() == masks.numel();
        let masked = if dense {
            model.clone()
        } else {
            masks.apply(model.clone())
        };
        let raw = saliency.scores(&masked, &masks)?;
        let scores: Vec<LayerScores> = params
            .iter()
            .zip(raw)
            .zip(masks.layers())
            .map(|((p, mut sc), l)| {
                if !dense {
                    for (x, &keep) in sc.iter_mut().zip(l.bits()) {
                        if !keep {
                            *x = f32::NEG_INFINITY;
                        }
                    }
                }
                LayerScores {
                    param: p.clone(),
                    scores: sc,
                }
            })
            .collect();
        let bits = structured_masks(
            &scores,
            s,
            &cfg.scope,
            cfg.structure,
            cfg.allow_empty_layers,
        )?;
        masks = MaskSet::from_bits(&model, params.clone(), bits)?;
    }
    let model = masks.apply(model);
    Ok((model, masks))
}
