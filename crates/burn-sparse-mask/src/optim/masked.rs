//! A thin wrapper that runs burn's own optimizers under a fixed mask.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;

use crate::mask::{MaskSet, reshape_mask};

/// burn's [`ModuleOptimizer`] (SGD, Adam, ... with their own state and records) under a fixed
/// [`MaskSet`]: gradients of prunable weights are masked before the step, and the weights are
/// re-masked after it. With a fixed mask this keeps masked weights exactly 0, and their state
/// stays 0 because their gradient is. For masks that change during training, use
/// [`SparseOptimizer`](super::SparseOptimizer), whose state can be reset at grown positions.
pub struct MaskedOptimizer {
    inner: ModuleOptimizer,
    masks: MaskSet,
}

impl MaskedOptimizer {
    /// Wrap `inner` with `masks`.
    pub fn new(inner: impl Into<ModuleOptimizer>, masks: MaskSet) -> Self {
        Self {
            inner: inner.into(),
            masks,
        }
    }

    /// The masks.
    pub fn masks(&self) -> &MaskSet {
        &self.masks
    }

    /// The wrapped optimizer (for its record).
    pub fn inner(&self) -> &ModuleOptimizer {
        &self.inner
    }

    /// Unwrap.
    pub fn into_parts(self) -> (ModuleOptimizer, MaskSet) {
        (self.inner, self.masks)
    }

    /// One step: mask the gradients, step burn's optimizer, re-mask the weights.
    pub fn step<M: Module>(&mut self, lr: f64, model: M, mut grads: GradientsParams) -> M {
        mask_gradients(&self.masks, &model, &mut grads);
        let model = self.inner.step(lr, model, grads);
        self.masks.apply(model)
    }
}

/// Multiply the gradients of every masked parameter by its mask, in place.
pub fn mask_gradients<M: Module>(masks: &MaskSet, model: &M, grads: &mut GradientsParams) {
    struct MaskGrads<'a> {
        masks: &'a MaskSet,
        grads: &'a mut GradientsParams,
    }
    impl ModuleVisitor for MaskGrads<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let Some(layer) = self.masks.get(param.id) else {
                return;
            };
            if let Some(g) = self.grads.remove::<D>(param.id) {
                let m = reshape_mask(layer.device_mask(), &g);
                self.grads.register::<D>(param.id, g * m);
            }
        }
    }
    model.visit(&mut MaskGrads { masks, grads });
}
