//! # burn-sparse-mask
//!
//! Masks on any burn model, and everything that builds, distributes, schedules and preserves
//! them:
//!
//! - [`MaskSet`]: one boolean mask per prunable parameter of any `#[derive(Module)]` model,
//!   found by walking the module ([`param_infos`], [`ParamFilter`]); applied as exact zeros.
//! - [`top_k`]/[`masks_from_scores`]: the one exact top-k routine (global or layerwise,
//!   deterministic ties) that every scorer shares; [`Structure`]/[`structured_masks`] for N:M
//!   and block masks.
//! - [`SparsityDistribution`]: uniform, ER, ERK (with the dense-layer overflow loop), custom.
//! - [`UpdateSchedule`], [`DropFraction`], [`GradualPruning`]: schedules.
//! - [`SparseOptimizer`] (SGD/Adam with editable state and a topology-update seam) and
//!   [`MaskedOptimizer`] (burn's own optimizers under a fixed mask).
//! - [`FlopCount`]: training and inference FLOPs as the RigL paper counts them.
//! - [`checkpoint`]: atomic files and a checked archive for masks and optimizer state.
//!
//! ```
//! use burn::module::Module;
//! use burn::nn::{Linear, LinearConfig};
//! use burn::tensor::Device;
//! use burn_sparse_mask::prelude::*;
//!
//! #[derive(Module, Debug)]
//! struct Mlp { l1: Linear, l2: Linear }
//!
//! let device = Device::default();
//! let model = Mlp { l1: LinearConfig::new(8, 16).init(&device), l2: LinearConfig::new(16, 4).init(&device) };
//! // Score by |w|, keep the global top 10%, write the zeros into the model.
//! let masks = magnitude_masks(&model, &ParamFilter::new(), Sparsity::new(0.9)?, &Scope::Global)?;
//! let model = masks.apply(model);
//! assert_eq!(masks.nnz(), 19); // round(0.1 * (8*16 + 16*4)) = round(19.2)
//! println!("{masks}");
//! # Ok::<(), burn_sparse_mask::MaskError>(())
//! ```

/// `eprintln!` that a closed or full stderr cannot turn into a panic: the line is lost, the
/// work goes on. For the workspace's warnings and fetch messages.
#[macro_export]
macro_rules! stderr_line {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

pub mod checkpoint;
mod distribution;
mod error;
mod flops;
mod fraction;
mod mask;
pub mod optim;
mod params;
mod rng;
mod schedule;
mod structure;
mod topk;

pub use distribution::SparsityDistribution;
pub use error::{MaskError, Result};
pub use flops::{FlopCount, LayerFlops, dense_forward_macs, forward_macs};
pub use fraction::{Density, Sparsity};
pub use mask::{LayerMask, LayerStats, MaskSet, to_host};
pub use optim::{
    AdamRule, LayerView, MaskedOptimizer, ParamState, Rule, SgdRule, SparseHandle, SparseOptimizer,
    StepReport, TopologyChange, TopologyUpdater, WriteWeights, flat_grads, mask_gradients,
    read_grads,
};
pub use params::{DENSE_MODULE_TYPES, ParamFilter, ParamInfo, Verdict, param_devices, param_infos};
pub use rng::{SPLITMIX64_GAMMA, SparseRng, splitmix64, splitmix64_mix};
pub use schedule::{DropFraction, GradualPruning, UpdateSchedule};
pub use structure::{
    Structure, expand_groups, group_sums, has_structure, no_empty_layer, structured_masks,
    top_per_group,
};
pub use topk::{LayerScores, Scope, masks_from_scores, top_k, top_k_segments};

use burn::module::Module;
use burn::tensor::Tensor;

/// Masks that keep the largest `|w|` of the parameters `filter` selects.
///
/// # Errors
/// As [`masks_from_scores`] and [`ParamFilter::select`].
pub fn magnitude_masks<M: Module>(
    model: &M,
    filter: &ParamFilter,
    sparsity: Sparsity,
    scope: &Scope,
) -> Result<MaskSet> {
    let dense = MaskSet::dense(model, filter)?;
    let weights = dense.read_weights(model)?;
    let scores: Vec<LayerScores> = dense
        .params()
        .into_iter()
        .zip(weights)
        .map(|(param, w)| LayerScores {
            param,
            scores: w.iter().map(|x| x.abs()).collect(),
        })
        .collect();
    let bits = masks_from_scores(&scores, sparsity, scope, true)?;
    MaskSet::from_bits(model, dense.params(), bits)
}

/// A random mask with exactly `sparsity.kept(n)` survivors, split over layers by `distribution`
/// and drawn from `SparseRng::derive(seed, [layer])` (the static-sparse and random-pruning
/// baseline). Bit-identical for the same seed.
///
/// # Errors
/// As [`masks_from_scores`] and [`ParamFilter::select`].
pub fn random_masks<M: Module>(
    model: &M,
    filter: &ParamFilter,
    sparsity: Sparsity,
    distribution: &SparsityDistribution,
    seed: u64,
) -> Result<MaskSet> {
    random_structured_masks(
        model,
        filter,
        sparsity,
        distribution,
        Structure::Unstructured,
        seed,
    )
}

/// [`random_masks`] of a [`Structure`] (the same random scores, through [`structured_masks`]).
///
/// # Errors
/// As [`structured_masks`] and [`ParamFilter::select`].
pub fn random_structured_masks<M: Module>(
    model: &M,
    filter: &ParamFilter,
    sparsity: Sparsity,
    distribution: &SparsityDistribution,
    structure: Structure,
    seed: u64,
) -> Result<MaskSet> {
    let params = filter.select(model)?;
    let scores: Vec<LayerScores> = params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut rng = SparseRng::derive(seed, &[i as u64]);
            LayerScores {
                param: p.clone(),
                scores: (0..p.numel()).map(|_| rng.next_f32()).collect(),
            }
        })
        .collect();
    let bits = structured_masks(
        &scores,
        sparsity,
        &Scope::Layerwise(distribution.clone()),
        structure,
        false,
    )?;
    MaskSet::from_bits(model, params, bits)
}

/// Read a scalar loss and fail with [`MaskError::NonFinite`] if it is NaN or infinite, so a
/// training loop can stop before a NaN reaches the weights (or the masks).
///
/// # Errors
/// [`MaskError::NonFinite`] or [`MaskError::Data`].
pub fn finite_loss(loss: &Tensor<1>) -> Result<f32> {
    let v = to_host(loss.clone())?;
    let x = v.first().copied().unwrap_or(f32::NAN);
    if x.is_finite() {
        Ok(x)
    } else {
        Err(MaskError::NonFinite {
            what: "loss".into(),
            value: x as f64,
        })
    }
}

/// The common imports.
pub mod prelude {
    pub use crate::{
        AdamRule, Density, DropFraction, GradualPruning, LayerScores, MaskError, MaskSet,
        MaskedOptimizer, ParamFilter, ParamInfo, Rule, Scope, SgdRule, SparseOptimizer, SparseRng,
        Sparsity, SparsityDistribution, TopologyUpdater, UpdateSchedule, finite_loss,
        magnitude_masks, masks_from_scores, param_infos, random_masks, top_k,
    };
}
