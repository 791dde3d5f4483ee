//! Drop by |w|, grow by a score: SET (random) and RigL (|dense gradient|) on one engine.

use crate::error::Result;
use burn_sparse_mask::Result as MaskResult;
use burn_sparse_mask::{
    DropFraction, LayerView, MaskError, SparseRng, Structure, TopologyChange, TopologyUpdater,
    UpdateSchedule,
};
use serde::{Deserialize, Serialize};

use crate::engine::{
    drop_and_grow_blocks, drop_and_grow_in_groups, drop_and_grow_owned, drop_count,
};

/// Initial value of a newly grown weight (inactive before the update, active after).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GrowInit {
    /// 0, as in the RigL and SET references (the default).
    #[default]
    Zero,
    /// Normal with this standard deviation, from the update's seeded stream: the newly grown
    /// weights of layer `l` at step `t`, in ascending flat index, get
    /// `std * SparseRng::derive(seed, &[t, l, 1]).normal()` (a regrown weight keeps its value).
    Normal {
        /// Standard deviation.
        std: f32,
    },
}

/// Hyperparameters shared by the drop/grow methods.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DropGrowConfig {
    /// When updates happen.
    pub schedule: UpdateSchedule,
    /// The fraction of active weights dropped per update.
    pub drop_fraction: DropFraction,
    /// Initial value of grown weights.
    pub init: GrowInit,
    /// Seed of the random streams, derived per `(step, layer)` so replicas agree.
    pub seed: u64,
    /// Skip the optimizer's weight update on update steps (TF RigL does; default false).
    pub skip_weight_update: bool,
    /// RigL: grow by `|mean dL/dW|` over the `k` batches that end at each update step (the
    /// update's own and the `k - 1` before it; rigl-torch's and condensed-sparsity's
    /// `grad_accumulation_n`, sparsimony's `_accumulate_grads`). 1 (the default): the update
    /// step's gradient alone. Read only by gradient growth.
    #[serde(default = "one")]
    pub grad_accumulation: u64,
    /// The sparsity type kept through updates: unstructured (the default); N:M, where every
    /// drop is regrown inside its own group so each group keeps exactly `n`
    /// ([`drop_and_grow_in_groups`](crate::drop_and_grow_in_groups)); or blocks, dropped and
    /// grown whole, by summed `|w|` and summed grow score, so each layer keeps its number of
    /// blocks ([`drop_and_grow_blocks`](crate::drop_and_grow_blocks)).
    #[serde(default)]
    pub structure: Structure,
}

fn one() -> u64 {
    1
}

impl DropGrowConfig {
    /// RigL's defaults for a run of `total_steps`: cosine drop fraction with alpha = 0.3,
    /// delta_t = 100, updates from step 0 to 75% of the run.
    ///
    /// # Errors
    /// If the run is too short for any update.
    pub fn rigl(total_steps: u64, seed: u64) -> Result<Self> {
        Ok(Self {
            schedule: UpdateSchedule::rigl_default(total_steps)?,
            drop_fraction: DropFraction::Cosine { alpha: 0.3 },
            init: GrowInit::Zero,
            seed,
            skip_weight_update: false,
            grad_accumulation: 1,
            structure: Structure::Unstructured,
        })
    }

    /// SET's defaults: constant zeta = 0.3, rewiring once per epoch for the whole run.
    ///
    /// # Errors
    /// If the run is shorter than one epoch.
    pub fn set(total_steps: u64, steps_per_epoch: u64, seed: u64) -> Result<Self> {
        Ok(Self {
            schedule: UpdateSchedule::new(0, total_steps, steps_per_epoch)?,
            drop_fraction: DropFraction::Constant { alpha: 0.3 },
            init: GrowInit::Zero,
            seed,
            skip_weight_update: false,
            grad_accumulation: 1,
            structure: Structure::Unstructured,
        })
    }

    /// Check the drop fraction, the accumulation and the structure.
    ///
    /// # Errors
    /// [`MaskError::InvalidFraction`]; [`DstError::InvalidConfig`](crate::DstError) for a
    /// `grad_accumulation` of 0.
    pub fn validate(&self) -> Result<()> {
        if self.grad_accumulation == 0 {
            return Err(crate::DstError::InvalidConfig {
                field: "grad_accumulation",
                message: "must be at least 1 (1: no accumulation)".into(),
            });
        }
        self.structure.validate()?;
        if self.grad_accumulation > self.schedule.delta_t() {
            return Err(crate::DstError::InvalidConfig {
                field: "grad_accumulation",
                message: format!(
                    "{} batches do not fit between updates {} steps apart",
                    self.grad_accumulation,
                    self.schedule.delta_t()
                ),
            });
        }
        Ok(self.drop_fraction.validate()?)
    }
}

/// A grow criterion: scores for every position of a layer; the highest inactive ones grow.
pub trait GrowScore: Send {
    /// Method name (`set`, `rigl`).
    fn name(&self) -> &'static str;
    /// Whether it reads the dense gradient.
    fn needs_grads(&self) -> bool;
    /// Scores for layer `layer` at step `t`. `rng` is the `(seed, t, layer)` stream.
    fn scores(&self, view: &LayerView<'_>, rng: &mut SparseRng) -> Vec<f32>;
}

/// SET: uniformly random growth (Mocanu et al. 2018, arXiv:1707.04780).
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomGrow;

impl GrowScore for RandomGrow {
    fn name(&self) -> &'static str {
        "set"
    }
    fn needs_grads(&self) -> bool {
        false
    }
    fn scores(&self, view: &LayerView<'_>, rng: &mut SparseRng) -> Vec<f32> {
        (0..view.mask.len()).map(|_| rng.next_f32()).collect()
    }
}

/// RigL: grow where `|dL/dW|` of the dense gradient is largest (Evci et al. 2020,
/// arXiv:1911.11134). Weights are stored as zeros, so burn's gradient is already dense.
#[derive(Debug, Clone, Copy, Default)]
pub struct GradientGrow;

impl GrowScore for GradientGrow {
    fn name(&self) -> &'static str {
        "rigl"
    }
    fn needs_grads(&self) -> bool {
        true
    }
    fn scores(&self, view: &LayerView<'_>, _rng: &mut SparseRng) -> Vec<f32> {
        match view.grads {
            Some(g) => g.iter().map(|x| x.abs()).collect(),
            None => vec![f32::NAN; view.mask.len()],
        }
    }
}

/// One update as recorded in [`DropGrow::history`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateRecord {
    /// The step.
    pub step: u64,
    /// The drop fraction used.
    pub drop_fraction: f64,
    /// Newly grown connections per layer (= connections that changed).
    pub changed: Vec<usize>,
}

/// The drop/grow topology updater: drop the smallest |w|, grow by `G`'s score.
pub struct DropGrow<G: GrowScore> {
    cfg: DropGrowConfig,
    grow: G,
    history: Vec<UpdateRecord>,
    skipped: Vec<(u64, String)>,
    /// The sum of the dense gradients observed since the last update, and how many.
    accumulated: Option<(Vec<Vec<f32>>, u64)>,
}

/// SET.
pub type SetUpdater = DropGrow<RandomGrow>;
/// RigL.
pub type RiglUpdater = DropGrow<GradientGrow>;

impl<G: GrowScore> DropGrow<G> {
    /// An updater with this config and grow criterion.
    ///
    /// # Errors
    /// [`MaskError::InvalidFraction`] for a drop fraction outside `[0, 1]`.
    pub fn new(cfg: DropGrowConfig, grow: G) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            grow,
            history: Vec::new(),
            skipped: Vec::new(),
            accumulated: None,
        })
    }
    /// The config.
    pub fn config(&self) -> &DropGrowConfig {
        &self.cfg
    }
    /// Every update so far.
    pub fn history(&self) -> &[UpdateRecord] {
        &self.history
    }
    /// Updates skipped because of a NaN grow score, with the reason.
    pub fn skipped(&self) -> &[(u64, String)] {
        &self.skipped
    }
}

impl SetUpdater {
    /// SET with this config.
    ///
    /// # Errors
    /// As [`DropGrow::new`].
    pub fn set(cfg: DropGrowConfig) -> Result<Self> {
        Self::new(cfg, RandomGrow)
    }
}

impl RiglUpdater {
    /// RigL with this config.
    ///
    /// # Errors
    /// As [`DropGrow::new`].
    pub fn rigl(cfg: DropGrowConfig) -> Result<Self> {
        Self::new(cfg, GradientGrow)
    }
}

/// The initial values of the newly grown weights `grown` (flat indices, ascending) of layer
/// `layer` at step `t` under `init`, as `(flat index, value)`; empty for [`GrowInit::Zero`].
/// Shared by the masked updaters and burn-sparse's streamed ones, so both draw the same values.
pub fn grown_values(
    init: GrowInit,
    seed: u64,
    t: u64,
    layer: usize,
    grown: &[usize],
) -> Vec<(usize, f32)> {
    match init {
        GrowInit::Zero => Vec::new(),
        GrowInit::Normal { std } => {
            let mut rng = SparseRng::derive(seed, &[t, layer as u64, 1]);
            grown
                .iter()
                .map(|&i| (i, (rng.normal() as f32) * std))
                .collect()
        }
    }
}

/// Append the update to `history` and build the change the optimizer applies.
pub(crate) fn record_update(
    history: &mut Vec<UpdateRecord>,
    step: u64,
    drop_fraction: f64,
    masks: Vec<Vec<bool>>,
    grown_values: Vec<Vec<(usize, f32)>>,
    changed: Vec<usize>,
) -> TopologyChange {
    history.push(UpdateRecord {
        step,
        drop_fraction,
        changed: changed.clone(),
    });
    TopologyChange {
        masks,
        grown_values,
        changed,
    }
}

#[derive(Serialize, Deserialize)]
struct SavedState {
    history: Vec<UpdateRecord>,
    skipped: Vec<(u64, String)>,
    #[serde(default)]
    accumulated: Option<(Vec<Vec<f32>>, u64)>,
}

impl<G: GrowScore> DropGrow<G> {
    fn accumulates(&self) -> bool {
        self.grow.needs_grads() && self.cfg.grad_accumulation > 1
    }
}

impl<G: GrowScore> TopologyUpdater for DropGrow<G> {
    fn name(&self) -> &str {
        self.grow.name()
    }
    fn is_update_step(&self, t: u64) -> bool {
        self.cfg.schedule.is_update_step(t)
    }
    fn needs_grads(&self) -> bool {
        self.grow.needs_grads()
    }
    fn skip_weight_update(&self) -> bool {
        self.cfg.skip_weight_update
    }
    fn observes_every_step(&self) -> bool {
        self.accumulates()
    }
    fn observes(&self, t: u64) -> bool {
        self.accumulates()
            && (1..self.cfg.grad_accumulation).any(|j| self.cfg.schedule.is_update_step(t + j))
    }
    fn observe(&mut self, _t: u64, grads: &[burn::tensor::Tensor<1>]) -> MaskResult<()> {
        let host = grads
            .iter()
            .map(|g| burn_sparse_mask::to_host(g.clone()))
            .collect::<MaskResult<Vec<_>>>()?;
        match &mut self.accumulated {
            Some((sum, n)) if sum.len() == host.len() => {
                for (s, g) in sum.iter_mut().zip(&host) {
                    for (a, b) in s.iter_mut().zip(g) {
                        *a += b;
                    }
                }
                *n += 1;
            }
            _ => self.accumulated = Some((host, 1)),
        }
        Ok(())
    }
    fn update(&mut self, t: u64, layers: &[LayerView<'_>]) -> MaskResult<Option<TopologyChange>> {
        // Accumulated grow scores: the mean of the observed gradients and this step's.
        let accumulated = self.accumulated.take();
        let mean: Option<Vec<Vec<f32>>> = match (accumulated, self.accumulates()) {
            (Some((sum, n)), true) if sum.len() == layers.len() => Some(
                sum.into_iter()
                    .zip(layers)
                    .map(|(s, l)| {
                        let g = l.grads.unwrap_or(&[]);
                        s.iter()
                            .zip(g)
                            .map(|(a, b)| ((f64::from(*a) + f64::from(*b)) / (n + 1) as f64) as f32)
                            .collect()
                    })
                    .collect(),
            ),
            _ => None,
        };
        let averaged: Vec<LayerView<'_>>;
        let layers = match &mean {
            Some(m) => {
                averaged = layers
                    .iter()
                    .zip(m)
                    .map(|(l, g)| LayerView {
                        param: l.param,
                        mask: l.mask,
                        weights: l.weights,
                        grads: Some(g.as_slice()),
                        momentum: l.momentum,
                    })
                    .collect();
                averaged.as_slice()
            }
            None => layers,
        };
        let f = self.cfg.drop_fraction.at(t, &self.cfg.schedule);
        let mut masks = Vec::with_capacity(layers.len());
        let mut changed = Vec::with_capacity(layers.len());
        let mut values = Vec::with_capacity(layers.len());
        for (i, view) in layers.iter().enumerate() {
            let mut rng = SparseRng::derive(self.cfg.seed, &[t, i as u64]);
            let scores = self.grow.scores(view, &mut rng);
            let n_active = view.mask.iter().filter(|&&b| b).count();
            let groups = self.cfg.structure.groups(view.param)?;
            let result = match groups {
                Some(groups) if matches!(self.cfg.structure, Structure::Block { .. }) => {
                    // The drop fraction counts blocks.
                    let active_blocks = groups
                        .iter()
                        .filter(|g| g.first().is_some_and(|&i| view.mask[i]))
                        .count();
                    drop_and_grow_blocks(
                        &view.param.path,
                        view.mask,
                        view.weights,
                        &scores,
                        drop_count(f, active_blocks),
                        &groups,
                    )
                }
                Some(groups) => drop_and_grow_in_groups(
                    &view.param.path,
                    view.mask,
                    view.weights,
                    &scores,
                    drop_count(f, n_active),
                    &groups,
                ),
                None => {
                    let n = drop_count(f, n_active);
                    drop_and_grow_owned(&view.param.path, view.mask, view.weights, scores, n, n)
                }
            };
            match result {
                Ok(u) => {
                    values.push(grown_values(self.cfg.init, self.cfg.seed, t, i, &u.grown));
                    changed.push(u.grown.len());
                    masks.push(u.mask);
                }
                Err(e @ MaskError::NanScore { .. }) => {
                    // Never corrupt the mask: skip the whole update, keep a record.
                    let msg = format!("step {t}: update skipped: {e}");
                    burn_sparse_mask::stderr_line!("warning: {} {msg}", self.grow.name());
                    self.skipped.push((t, msg));
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Some(record_update(
            &mut self.history,
            t,
            f,
            masks,
            values,
            changed,
        )))
    }
    fn state(&self) -> serde_json::Value {
        serde_json::to_value(SavedState {
            history: self.history.clone(),
            skipped: self.skipped.clone(),
            accumulated: self.accumulated.clone(),
        })
        .unwrap_or(serde_json::Value::Null)
    }
    fn load_state(&mut self, state: &serde_json::Value) -> MaskResult<()> {
        let s: SavedState =
            serde_json::from_value(state.clone()).map_err(|e| MaskError::InvalidConfig {
                field: "updater state",
                message: e.to_string(),
            })?;
        self.history = s.history;
        self.skipped = s.skipped;
        self.accumulated = s.accumulated;
        Ok(())
    }
}
