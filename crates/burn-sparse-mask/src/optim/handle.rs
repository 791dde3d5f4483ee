//! A [`SparseOptimizer`] shared with a model, for burn-train's `TrainStep::optimize` seam.

use std::sync::{Arc, Mutex, PoisonError};

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate;

use super::SparseOptimizer;
use crate::error::MaskError;

/// A cloneable handle to a [`SparseOptimizer`], to keep in a `#[module(skip)]` field of a model
/// so that burn-train's `Learner` (whose `TrainStep::optimize` only hands over burn's own
/// `ModuleOptimizer`) runs sparse steps, DST topology updates included:
///
/// ```ignore
/// #[derive(Module, Debug)]
/// struct Net { fc1: Linear, fc2: Linear, #[module(skip)] sparse: SparseHandle }
///
/// impl TrainStep for Net {
///     // ... step() as usual ...
///     fn optimize(self, _burn_optim: &mut ModuleOptimizer, lr: ModuleLearningRate,
///                 grads: GradientsParams) -> Self {
///         let sparse = self.sparse.clone();
///         sparse.step(self, &lr, grads)
///     }
/// }
/// ```
///
/// `optimize` cannot return an error, so a failed step (a NaN loss reaching an update, a bad
/// updater) leaves the model unchanged and is kept in [`SparseHandle::take_error`].
#[derive(Clone)]
pub struct SparseHandle {
    inner: Arc<Mutex<SparseOptimizer>>,
    error: Arc<Mutex<Option<MaskError>>>,
}

impl std::fmt::Debug for SparseHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        write!(f, "SparseHandle({opt:?})")
    }
}

impl SparseHandle {
    /// Share `optim`.
    pub fn new(optim: SparseOptimizer) -> Self {
        Self {
            inner: Arc::new(Mutex::new(optim)),
            error: Arc::new(Mutex::new(None)),
        }
    }

    /// One sparse step with the learning rate burn-train gives (the rate of the first masked
    /// parameter; per-group rates are not split).
    pub fn step<M: Module>(&self, model: M, lr: &ModuleLearningRate, grads: GradientsParams) -> M {
        let mut opt = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let lr = opt
            .masks()
            .layers()
            .first()
            .map(|l| lr.lr_from_param(l.param().id, Some(&l.param().path)))
            .unwrap_or(0.0);
        let backup = model.clone();
        match opt.step(lr, model, grads) {
            Ok(m) => m,
            Err(e) => {
                *self.error.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
                backup
            }
        }
    }

    /// Run `f` on the optimizer (to save it, read its masks or reports).
    pub fn with<R>(&self, f: impl FnOnce(&mut SparseOptimizer) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The error of the last failed step, if any.
    pub fn take_error(&self) -> Option<MaskError> {
        self.error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}
