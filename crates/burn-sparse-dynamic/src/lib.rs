//! # burn-sparse-dynamic
//!
//! Dynamic sparse training: the mask evolves during training at a fixed parameter budget.
//! Every method is a [`TopologyUpdater`] plugged into the
//! [`SparseOptimizer`], so updates happen inside `step`:
//! a hand-written loop needs nothing else, and a checkpoint of the optimizer resumes with the
//! same topology and counters.
//!
//! - [`SetUpdater`]: SET (Mocanu et al. 2018, arXiv:1707.04780): drop zeta = 0.3 of the active
//!   weights by |w| once per epoch, regrow at random; ER initial distribution.
//! - [`RiglUpdater`]: RigL (Evci et al. 2020, arXiv:1911.11134): drop by |w|, grow by the dense
//!   gradient's magnitude; cosine drop fraction (alpha 0.3), delta_t = 100, end at 75%; ERK.
//! - [`Snfs`]: sparse momentum (Dettmers & Zettlemoyer 2019, arXiv:1907.04840).
//! - static sparse: no updater; the baseline.
//! - [`GradualMagnitude`]: gradual magnitude pruning (Zhu & Gupta 2017, arXiv:1710.01878), the
//!   one method here whose budget shrinks: from dense to the target sparsity by |w| on a cubic
//!   schedule, pruned weights never return, then the mask is fixed.
//!
//! All share one engine ([`drop_and_grow`]): `n_drop = floor(f * n_active)` per layer, drop the
//! smallest |w|, grow as many by the score (just-dropped positions may be regrown and keep their
//! value), grown weights start at 0, and the optimizer zeroes their momentum/Adam moments.
//! Randomness comes from `SparseRng::derive(seed, [step, layer])`, the same on every replica.
//!
//! ```
//! use burn::module::Module;
//! use burn::nn::{Linear, LinearConfig};
//! use burn::tensor::Device;
//! use burn_sparse_dynamic::{DstMethod, DstPlan};
//! use burn_sparse_mask::prelude::*;
//!
//! #[derive(Module, Debug)]
//! struct Mlp { a: Linear, b: Linear }
//! let d = Device::default().autodiff();
//! let model = Mlp { a: LinearConfig::new(20, 30).init(&d), b: LinearConfig::new(30, 5).init(&d) };
//! let plan = DstPlan::new(DstMethod::Rigl, Sparsity::new(0.9)?, 1000, 100, 7);
//! let (model, optim) = plan.build(model, &ParamFilter::new(), SgdRule::default())?;
//! assert_eq!(optim.masks().nnz(), 75); // round(0.1 * 750), ERK over a and b
//! # Ok::<(), burn_sparse_dynamic::DstError>(())
//! ```

mod drop_grow;
mod engine;
mod error;
mod gmp;
mod snfs;

pub use drop_grow::{
    DropGrow, DropGrowConfig, GradientGrow, GrowInit, GrowScore, RandomGrow, RiglUpdater,
    SetUpdater, UpdateRecord, grown_values,
};
pub use engine::{
    LayerUpdate, drop_and_grow, drop_and_grow_blocks, drop_and_grow_in_groups, drop_and_grow_owned,
    drop_count,
};
pub use error::{DstError, Result};
pub use gmp::{GmpConfig, GradualMagnitude};
pub use snfs::{Snfs, SnfsConfig, redistribute};

use burn::module::Module;
use burn_sparse_mask::{
    DropFraction, GradualPruning, LayerView, MaskSet, ParamFilter, Rule, Scope, SparseOptimizer,
    Sparsity, SparsityDistribution, Structure, TopologyUpdater, random_structured_masks,
};
use serde::{Deserialize, Serialize};

/// A dynamic-sparse-training method, chosen at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DstMethod {
    /// Fixed random mask.
    Static,
    /// SET.
    Set,
    /// RigL.
    Rigl,
    /// SNFS.
    Snfs,
    /// Gradual magnitude pruning: dense (or [`DstPlan::initial_sparsity`]) to the plan's
    /// sparsity between [`DstPlan::begin_fraction`] and [`DstPlan::end_fraction`] of the run.
    /// Unlike the others its number of weights shrinks.
    Gmp,
}

impl std::str::FromStr for DstMethod {
    type Err = DstError;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "static" => DstMethod::Static,
            "set" => DstMethod::Set,
            "rigl" => DstMethod::Rigl,
            "snfs" => DstMethod::Snfs,
            "gmp" => DstMethod::Gmp,
            other => {
                return Err(DstError::InvalidConfig {
                    field: "method",
                    message: format!("unknown method `{other}` (static, set, rigl, snfs, gmp)"),
                });
            }
        })
    }
}

impl DstMethod {
    /// The distribution of the reference: ER for SET, uniform for GMP (Zhu & Gupta prune every
    /// layer to the same sparsity), ERK otherwise.
    pub fn default_distribution(self) -> SparsityDistribution {
        match self {
            DstMethod::Set => SparsityDistribution::Er,
            DstMethod::Gmp => SparsityDistribution::Uniform,
            _ => SparsityDistribution::Erk,
        }
    }
}

/// Everything needed to start a DST run with the references' defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DstPlan {
    /// The method.
    pub method: DstMethod,
    /// The global sparsity.
    pub sparsity: Sparsity,
    /// The initial distribution (default: the method's reference).
    pub distribution: SparsityDistribution,
    /// Total optimizer steps of the run.
    pub total_steps: u64,
    /// Steps per epoch (SET and SNFS update once per epoch).
    pub steps_per_epoch: u64,
    /// Seed of the initial mask and of every update.
    pub seed: u64,
    /// RigL's update interval (default 100).
    pub delta_t: u64,
    /// Drop fraction alpha (RigL 0.3, SET zeta 0.3, SNFS prune rate 0.5).
    pub alpha: Option<f64>,
    /// RigL stops updating, and GMP reaches the target, at this fraction of `total_steps`
    /// (default 0.75, RigL's reference).
    #[serde(default = "default_end_fraction")]
    pub end_fraction: f64,
    /// GMP: the fraction of `total_steps` at which pruning begins (default 0.1).
    #[serde(default = "default_begin_fraction")]
    pub begin_fraction: f64,
    /// GMP: the sparsity it starts from (default dense), a magnitude mask drawn when the plan
    /// is built.
    #[serde(default = "default_initial_sparsity")]
    pub initial_sparsity: Sparsity,
    /// GMP: rank |w| over all prunable layers together instead of per layer with
    /// `distribution`'s counts (default false).
    #[serde(default)]
    pub global: bool,
    /// Rescale the initial weights to each unit's sparse fan-in
    /// ([`MaskSet::sparse_fan_in`]; default false: the dense initialisation as drawn).
    #[serde(default)]
    pub sparse_init: bool,
    /// RigL: grow by the mean gradient of the last `k` batches before each update
    /// ([`DropGrowConfig::grad_accumulation`]; default 1, off).
    #[serde(default = "default_grad_accumulation")]
    pub grad_accumulation: u64,
    /// The sparsity type (default unstructured). N:M: the initial random mask keeps `n` of every
    /// group, SET and RigL regrow inside the group they drop from, GMP prunes every group
    /// down to `n`; `sparsity` must be `1 - n / m`. Block: static and GMP only. SNFS moves
    /// weights between layers and takes no structure.
    #[serde(default)]
    pub structure: Structure,
    /// The drop-fraction schedule, replacing the method's (RigL and SNFS cosine, SET constant)
    /// together with `alpha` (set one or the other).
    #[serde(default)]
    pub drop_schedule: Option<DropFraction>,
    /// The initial value of grown weights (default 0, as the references).
    #[serde(default)]
    pub grow_init: GrowInit,
    /// SET and RigL: skip the optimizer's weight update on update steps (TF RigL does;
    /// default false).
    #[serde(default)]
    pub skip_weight_update: bool,
}

fn default_grad_accumulation() -> u64 {
    1
}

fn default_end_fraction() -> f64 {
    0.75
}

fn default_begin_fraction() -> f64 {
    0.1
}

fn default_initial_sparsity() -> Sparsity {
    Sparsity::DENSE
}

impl DstPlan {
    /// A plan with the reference defaults.
    pub fn new(
        method: DstMethod,
        sparsity: Sparsity,
        total_steps: u64,
        steps_per_epoch: u64,
        seed: u64,
    ) -> Self {
        Self {
            method,
            sparsity,
            distribution: method.default_distribution(),
            total_steps,
            steps_per_epoch,
            seed,
            delta_t: 100,
            alpha: None,
            end_fraction: default_end_fraction(),
            begin_fraction: default_begin_fraction(),
            initial_sparsity: default_initial_sparsity(),
            global: false,
            sparse_init: false,
            grad_accumulation: default_grad_accumulation(),
            structure: Structure::Unstructured,
            drop_schedule: None,
            grow_init: GrowInit::Zero,
            skip_weight_update: false,
        }
    }

    /// The last step of the method's update window: RigL's and GMP's `end_fraction` of the
    /// run, the whole run for SET and SNFS (`None` for static, which never updates).
    pub fn update_end(&self) -> Option<u64> {
        match self.method {
            DstMethod::Static => None,
            DstMethod::Rigl | DstMethod::Gmp => Some(self.fraction_step(self.end_fraction)),
            DstMethod::Set | DstMethod::Snfs => Some(self.total_steps),
        }
    }

    /// `floor(fraction * total_steps)`.
    fn fraction_step(&self, fraction: f64) -> u64 {
        // Integer arithmetic for the reference's 3/4, so existing runs are unchanged.
        if fraction == 0.75 {
            (u128::from(self.total_steps) * 3 / 4) as u64
        } else {
            (self.total_steps as f64 * fraction).floor() as u64
        }
    }

    /// GMP's schedule: prune steps every `delta_t` from `begin_fraction` of the run, as many as
    /// fit before `end_fraction` (`None` for the other methods).
    ///
    /// # Errors
    /// As [`DstPlan::validate`].
    pub fn gmp_schedule(&self) -> Result<Option<GradualPruning>> {
        if self.method != DstMethod::Gmp {
            return Ok(None);
        }
        self.validate()?;
        let begin = self.fraction_step(self.begin_fraction);
        let end = self.update_end().unwrap_or(begin);
        let steps = end.saturating_sub(begin) / self.delta_t;
        Ok(Some(GradualPruning::new(
            self.initial_sparsity,
            self.sparsity,
            begin,
            steps,
            self.delta_t,
        )?))
    }

    /// Check the plan's fields; the error names the field of this struct.
    ///
    /// # Errors
    /// [`DstError::InvalidConfig`]: `delta_t` or `steps_per_epoch` 0, `end_fraction` outside
    /// `(0, 1]`, `alpha` outside `[0, 1]`, or `total_steps` too few for any topology update.
    pub fn validate(&self) -> Result<()> {
        let bad =
            |field: &'static str, message: String| Err(DstError::InvalidConfig { field, message });
        if self.delta_t == 0 {
            return bad("delta_t", "must be at least 1".into());
        }
        if self.steps_per_epoch == 0 {
            return bad("steps_per_epoch", "must be at least 1".into());
        }
        if !(self.end_fraction > 0.0 && self.end_fraction <= 1.0) {
            return bad(
                "end_fraction",
                format!("{} is outside (0, 1]", self.end_fraction),
            );
        }
        if let Some(a) = self.alpha
            && !(a.is_finite() && (0.0..=1.0).contains(&a))
        {
            return bad("alpha", format!("{a} is outside [0, 1]"));
        }
        if self.drop_schedule.is_some() && self.alpha.is_some() {
            return bad(
                "drop_schedule",
                "replaces `alpha` with its own: set one of the two".into(),
            );
        }
        if let Some(d) = self.drop_schedule {
            if let Err(e) = d.validate() {
                return bad("drop_schedule", e.to_string());
            }
            if matches!(self.method, DstMethod::Static | DstMethod::Gmp) {
                return bad(
                    "drop_schedule",
                    format!("{:?} drops nothing on a schedule", self.method),
                );
            }
        }
        if self.skip_weight_update && !matches!(self.method, DstMethod::Set | DstMethod::Rigl) {
            return bad(
                "skip_weight_update",
                format!("is a SET/RigL option; {:?} does not use it", self.method),
            );
        }
        if self.grow_init != GrowInit::Zero
            && matches!(self.method, DstMethod::Static | DstMethod::Gmp)
        {
            return bad("grow_init", format!("{:?} grows nothing", self.method));
        }
        if let Err(e) = self.structure.validate() {
            return bad("structure", e.to_string());
        }
        if self.structure != Structure::Unstructured {
            if self.method == DstMethod::Snfs {
                return bad(
                    "structure",
                    format!(
                        "{:?} does not train {:?} masks",
                        self.method, self.structure
                    ),
                );
            }
            if let Some(s) = self.structure.implied_sparsity()
                && (s.value() - self.sparsity.value()).abs() > 1e-9
            {
                return bad(
                    "sparsity",
                    format!(
                        "{:?} keeps a fixed share: its sparsity is {s}, not {}",
                        self.structure, self.sparsity
                    ),
                );
            }
        }
        if self.grad_accumulation == 0 || self.grad_accumulation > self.delta_t {
            return bad(
                "grad_accumulation",
                format!(
                    "{} is outside 1..=delta_t ({}): the batches accumulated must fit between \
                     two updates",
                    self.grad_accumulation, self.delta_t
                ),
            );
        }
        if self.grad_accumulation != 1 && self.method != DstMethod::Rigl {
            return bad(
                "grad_accumulation",
                format!(
                    "accumulates RigL's grow scores; {:?} does not use it",
                    self.method
                ),
            );
        }
        if self.global && self.method != DstMethod::Gmp {
            return bad(
                "global",
                format!("a global ranking is GMP's option, not {:?}'s", self.method),
            );
        }
        if self.method == DstMethod::Gmp {
            if !(self.begin_fraction >= 0.0 && self.begin_fraction < self.end_fraction) {
                return bad(
                    "begin_fraction",
                    format!(
                        "{} is outside [0, end_fraction = {})",
                        self.begin_fraction, self.end_fraction
                    ),
                );
            }
            if self.initial_sparsity > self.sparsity {
                return bad(
                    "initial_sparsity",
                    format!(
                        "{} is above the target {}",
                        self.initial_sparsity, self.sparsity
                    ),
                );
            }
            let begin = self.fraction_step(self.begin_fraction);
            let end = self.fraction_step(self.end_fraction);
            if end.saturating_sub(begin) < self.delta_t {
                return bad(
                    "total_steps",
                    format!(
                        "{} steps leave GMP no prune step after the first (it prunes every {} \
                         steps from step {begin} to step {end}): train for more steps or lower \
                         delta_t",
                        self.total_steps, self.delta_t
                    ),
                );
            }
        }
        if let Some(end) = self.update_end()
            && end == 0
        {
            let window = match self.method {
                DstMethod::Rigl => format!(
                    "RigL updates during the first {} of the run, which ends at step 0",
                    self.end_fraction
                ),
                _ => "the run has no step".into(),
            };
            return bad(
                "total_steps",
                format!(
                    "{} steps leave {:?} no topology update ({window}): train for more steps",
                    self.total_steps, self.method
                ),
            );
        }
        Ok(())
    }

    /// The drop/grow config of SET and RigL (`None` for the other methods): what
    /// [`DstPlan::updater`] builds their updater from, and what a streamed driver
    /// (`burn_sparse::sparse_dst::SparseDst::streamed`) takes.
    ///
    /// # Errors
    /// As [`DstPlan::validate`], and invalid method settings.
    pub fn drop_grow_config(&self) -> Result<Option<DropGrowConfig>> {
        use burn_sparse_mask::UpdateSchedule;
        self.validate()?;
        Ok(match self.method {
            DstMethod::Set => {
                let mut c = DropGrowConfig::set(self.total_steps, self.steps_per_epoch, self.seed)?;
                if let Some(a) = self.alpha {
                    c.drop_fraction = DropFraction::Constant { alpha: a };
                }
                if let Some(d) = self.drop_schedule {
                    c.drop_fraction = d;
                }
                c.structure = self.structure;
                c.init = self.grow_init;
                c.skip_weight_update = self.skip_weight_update;
                Some(c)
            }
            DstMethod::Rigl => {
                let mut c = DropGrowConfig::rigl(self.total_steps, self.seed)?;
                c.schedule = UpdateSchedule::new(0, self.update_end().unwrap_or(0), self.delta_t)?;
                c.grad_accumulation = self.grad_accumulation;
                c.structure = self.structure;
                if let Some(a) = self.alpha {
                    c.drop_fraction = DropFraction::Cosine { alpha: a };
                }
                if let Some(d) = self.drop_schedule {
                    c.drop_fraction = d;
                }
                c.init = self.grow_init;
                c.skip_weight_update = self.skip_weight_update;
                Some(c)
            }
            DstMethod::Static | DstMethod::Snfs | DstMethod::Gmp => None,
        })
    }

    /// The topology updater (none for static).
    ///
    /// # Errors
    /// As [`DstPlan::validate`], and invalid method settings.
    pub fn updater(&self) -> Result<Option<Box<dyn TopologyUpdater>>> {
        let drop_grow = self.drop_grow_config()?;
        Ok(match (self.method, drop_grow) {
            (DstMethod::Set, Some(c)) => Some(Box::new(SetUpdater::set(c)?)),
            (DstMethod::Rigl, Some(c)) => Some(Box::new(RiglUpdater::rigl(c)?)),
            (DstMethod::Static | DstMethod::Set | DstMethod::Rigl, _) => None,
            (DstMethod::Snfs, _) => {
                let mut c =
                    SnfsConfig::reference(self.total_steps, self.steps_per_epoch, self.seed)?;
                if let Some(a) = self.alpha {
                    c.prune_rate = DropFraction::Cosine { alpha: a };
                }
                if let Some(d) = self.drop_schedule {
                    c.prune_rate = d;
                }
                c.init = self.grow_init;
                Some(Box::new(Snfs::new(c)?))
            }
            (DstMethod::Gmp, _) => {
                let schedule = self.gmp_schedule()?.expect("GMP has a schedule");
                Some(Box::new(GradualMagnitude::new(self.gmp_config(schedule))))
            }
        })
    }

    fn gmp_config(&self, schedule: GradualPruning) -> GmpConfig {
        GmpConfig {
            schedule,
            scope: if self.global {
                Scope::Global
            } else {
                Scope::Layerwise(self.distribution.clone())
            },
            allow_empty_layers: false,
            structure: self.structure,
        }
    }

    /// Draw the initial mask (random; for GMP dense, or by magnitude at `initial_sparsity`),
    /// write it into `model` (rescaled to the sparse fan-in with `sparse_init`), and build the
    /// optimizer with the updater attached.
    ///
    /// # Errors
    /// As [`DstPlan::updater`] and [`random_structured_masks`].
    pub fn build<M: Module>(
        &self,
        model: M,
        filter: &ParamFilter,
        rule: impl Into<Rule>,
    ) -> Result<(M, SparseOptimizer)> {
        let masks = match self.gmp_schedule()? {
            Some(schedule) => {
                let mut masks = MaskSet::dense(&model, filter)?;
                if self.initial_sparsity > Sparsity::DENSE {
                    let weights = masks.read_weights(&model)?;
                    let views: Vec<LayerView<'_>> = masks
                        .layers()
                        .iter()
                        .zip(&weights)
                        .map(|(l, w)| LayerView {
                            param: l.param(),
                            mask: l.bits(),
                            weights: w,
                            grads: None,
                            momentum: None,
                        })
                        .collect();
                    let gmp = GradualMagnitude::new(self.gmp_config(schedule));
                    let (bits, _) = gmp.prune(&views, self.initial_sparsity)?;
                    drop(views);
                    for (i, b) in bits.into_iter().enumerate() {
                        masks.set_bits(i, b)?;
                    }
                }
                masks
            }
            None => random_structured_masks(
                &model,
                filter,
                self.sparsity,
                &self.distribution,
                self.structure,
                self.seed,
            )?,
        };
        let mut model = masks.apply(model);
        if self.sparse_init {
            model = masks.sparse_fan_in(model)?;
        }
        let mut optim = SparseOptimizer::new(rule, masks)?;
        if let Some(u) = self.updater()? {
            optim = optim.with_updater(u)?;
        }
        Ok((model, optim))
    }
}
