//! The seam through which dynamic sparse training changes the topology inside an optimizer step.

use burn::tensor::Tensor;

use crate::error::Result;
use crate::params::ParamInfo;

/// What a topology updater sees of one prunable layer at an update step (host copies).
#[derive(Debug)]
pub struct LayerView<'a> {
    /// The parameter.
    pub param: &'a ParamInfo,
    /// The current mask.
    pub mask: &'a [bool],
    /// The current weights (exactly 0 where the mask is false).
    pub weights: &'a [f32],
    /// The dense gradient `dL/dW` of this step, if the updater asked for it. Because masked
    /// weights are stored as zeros and the forward pass uses the raw weight, it is non-zero
    /// at inactive positions too.
    pub grads: Option<&'a [f32]>,
    /// The optimizer's momentum buffer (SGD velocity or Adam's first moment), if any.
    pub momentum: Option<&'a [f32]>,
}

/// The result of an update: a new mask per layer, and optionally initial values for the newly
/// grown weights (default: 0).
#[derive(Debug, Clone, PartialEq)]
pub struct TopologyChange {
    /// One new mask per layer, in the order of the views.
    pub masks: Vec<Vec<bool>>,
    /// Per layer, `(flat index, value)` for grown weights that should not start at 0.
    pub grown_values: Vec<Vec<(usize, f32)>>,
    /// Per layer, how many connections were dropped (and, except for a pruning updater, as many
    /// grown).
    pub changed: Vec<usize>,
}

/// A dynamic-sparse-training algorithm plugged into a [`SparseOptimizer`](super::SparseOptimizer).
///
/// The optimizer calls it inside `step` at the steps it names, before the weight update, with
/// the dense gradients of that step. The optimizer then writes the new masks, sets grown weights
/// to 0 (or the given values), zeroes dropped weights, and resets the optimizer state of grown
/// and dropped positions (jaxpruner's `restart_inner_state`). It checks that the total number
/// of kept weights is unchanged, or, for an updater that [prunes](TopologyUpdater::prunes), that
/// every new mask keeps a subset of the old one.
pub trait TopologyUpdater: Send {
    /// A short name for logs (`rigl`, `set`, ...).
    fn name(&self) -> &str;
    /// Whether step `t` (1-based count of optimizer steps) updates the topology.
    fn is_update_step(&self, t: u64) -> bool;
    /// Whether the updater reads dense gradients (RigL); otherwise none are copied to the host.
    fn needs_grads(&self) -> bool {
        false
    }
    /// Whether the updater reads the momentum buffer (SNFS).
    fn needs_momentum(&self) -> bool {
        false
    }
    /// Whether [`TopologyUpdater::observe`] wants dense gradients outside update steps: at every
    /// step (SNFS keeps a momentum EMA of them on the device), or at the steps
    /// [`TopologyUpdater::observes`] names (RigL with accumulated grow scores).
    fn observes_every_step(&self) -> bool {
        false
    }
    /// Whether step `t` is observed (default: every step when
    /// [`TopologyUpdater::observes_every_step`]).
    fn observes(&self, _t: u64) -> bool {
        self.observes_every_step()
    }
    /// Called at each observed step before the update, with each prunable layer's dense
    /// gradient (flattened, on the device, without autodiff).
    ///
    /// # Errors
    /// Aborts the step.
    fn observe(&mut self, _t: u64, _grads: &[Tensor<1>]) -> Result<()> {
        Ok(())
    }
    /// Whether updates only remove weights (gradual magnitude pruning): each new mask must then
    /// keep a subset of the old one, nothing is grown, and the number of kept weights may
    /// shrink. Otherwise (every DST method) an update must keep the total unchanged.
    fn prunes(&self) -> bool {
        false
    }
    /// Skip the weight update on update steps (TF RigL does).
    fn skip_weight_update(&self) -> bool {
        false
    }
    /// Compute the new topology at step `t`. `Ok(None)` leaves the masks unchanged.
    ///
    /// # Errors
    /// Any error aborts the step and leaves model, masks and state unchanged.
    fn update(&mut self, t: u64, layers: &[LayerView<'_>]) -> Result<Option<TopologyChange>>;
    /// State to checkpoint (RNG position, counters, EMA buffers ...).
    fn state(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    /// Restore what [`TopologyUpdater::state`] saved.
    ///
    /// # Errors
    /// When the value is not this updater's state.
    fn load_state(&mut self, _state: &serde_json::Value) -> Result<()> {
        Ok(())
    }
}
