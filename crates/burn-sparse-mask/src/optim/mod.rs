//! Sparse-aware optimizers.
//!
//! burn 0.22's `ModuleOptimizer` keeps its per-parameter state private, so momentum and Adam
//! moments cannot be reset at chosen positions, which dynamic sparse training needs when it
//! grows weights. [`SparseOptimizer`] keeps its state keyed by `ParamId`, editable, and masked:
//! at every step the gradient of a prunable weight is multiplied by its mask, the rule updates
//! weight and state, and the weight is re-masked with one multiply. So masked weights and
//! their state stay exactly 0 on every backend.
//!
//! [`MaskedOptimizer`] wraps burn's own optimizers for fixed-mask training (IMP, SNIP, static).

mod handle;
mod masked;
mod rule;
mod sparse;
mod topology;

pub use handle::SparseHandle;
pub use masked::{MaskedOptimizer, mask_gradients};
pub use rule::{AdamRule, Rule, SgdRule};
pub use sparse::{ParamState, SparseOptimizer, StepReport, WriteWeights, flat_grads, read_grads};
pub use topology::{LayerView, TopologyChange, TopologyUpdater};
