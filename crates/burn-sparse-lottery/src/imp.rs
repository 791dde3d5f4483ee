//! The IMP driver: levels of train, prune, rewind; baselines; resumable level artifacts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn_sparse_mask::checkpoint::{Archive, Blob, atomic_write, load_module, save_module_atomic};
use burn_sparse_mask::{
    MaskError, MaskSet, ParamFilter, ParamInfo, Rule, SparseOptimizer, SparseRng, Structure, top_k,
    top_k_segments,
};
use serde::{Deserialize, Serialize};

use crate::error::{LotteryError, Result, TrainerError};
use crate::lmc::{LmcReport, linear_mode_connectivity};

/// How much of the remaining weights each level prunes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PruneRate {
    /// One global magnitude ranking over all prunable weights (OpenLTH: 0.2).
    Global(f64),
    /// A rate per layer (the LTH paper: 0.2 for fc layers, 0.1 for the output layer).
    PerLayer {
        /// The rate of layers not named in `overrides`.
        default: f64,
        /// Rates by parameter path.
        overrides: BTreeMap<String, f64>,
    },
}

impl PruneRate {
    /// The LTH paper's rates for fully connected nets: 20% per level, 10% for `output`.
    pub fn lth_fc(output: &str) -> Self {
        let mut o = BTreeMap::new();
        o.insert(output.to_string(), 0.1);
        PruneRate::PerLayer {
            default: 0.2,
            overrides: o,
        }
    }

    fn validate(&self, params: &[ParamInfo]) -> Result<()> {
        let check = |r: f64| {
            if r.is_nan() || !(0.0..1.0).contains(&r) {
                Err(MaskError::InvalidFraction {
                    what: "prune rate",
                    value: r,
                    range: "[0, 1)",
                })
            } else {
                Ok(())
            }
        };
        match self {
            PruneRate::Global(r) => Ok(check(*r)?),
            PruneRate::PerLayer { default, overrides } => {
                check(*default)?;
                for (k, r) in overrides {
                    check(*r)?;
                    if !params.iter().any(|p| &p.path == k) {
                        return Err(MaskError::UnknownParam {
                            name: k.clone(),
                            known: params
                                .iter()
                                .map(|p| p.path.as_str())
                                .collect::<Vec<_>>()
                                .join(", "),
                        }
                        .into());
                    }
                }
                Ok(())
            }
        }
    }
}

/// Where survivors are reset to after pruning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rewind {
    /// The initialisation `w0` (the original LTH, Frankle & Carbin 2019, arXiv:1803.03635).
    Init,
    /// The weights after `k` optimizer steps of the dense run ("late rewinding"); later levels
    /// train from step `k` to the end of the budget.
    Step(u64),
}

impl Rewind {
    /// Rewind to the end of epoch `e`.
    pub fn epochs(e: u64, steps_per_epoch: u64) -> Self {
        if e == 0 {
            Rewind::Init
        } else {
            Rewind::Step(e * steps_per_epoch)
        }
    }
    /// The step to rewind to.
    pub fn step(self) -> u64 {
        match self {
            Rewind::Init => 0,
            Rewind::Step(k) => k,
        }
    }
}

/// How each pruned level retrains the ticket (Renda, Frankle & Carbin 2020,
/// arXiv:2003.02389). Every choice trains the same number of steps, from step `k` of the
/// [`Rewind`] point to the end of the budget, in the same data order; they differ in the
/// weights they start from and the learning rates they use.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Retrain {
    /// Survivors reset to the rewind weights `w_k`, the learning-rate schedule replayed from
    /// step `k` (the lottery ticket hypothesis).
    #[default]
    WeightRewinding,
    /// Keep the previous level's trained weights and train at a constant learning rate: `lr`,
    /// or (None) the rate the schedule ends with. Renda et al.'s schedules are step decays,
    /// whose last rate (e.g. 0.001 after 0.1) still trains; a cosine schedule ends near 0, so
    /// name the rate there.
    FineTuning {
        /// The constant rate (None: the schedule's last).
        lr: Option<f64>,
    },
    /// Keep the previous level's trained weights and replay the learning-rate schedule from
    /// step `k` (learning-rate rewinding).
    LrRewinding,
}

impl Retrain {
    /// Whether retraining starts from the previous level's trained weights (fine-tuning,
    /// learning-rate rewinding) rather than the rewind point.
    pub fn keeps_weights(self) -> bool {
        !matches!(self, Retrain::WeightRewinding)
    }

    fn validate(self) -> Result<()> {
        if let Retrain::FineTuning { lr: Some(lr) } = self
            && !(lr.is_finite() && lr > 0.0)
        {
            return Err(LotteryError::InvalidConfig {
                field: "retrain",
                message: format!("the fine-tuning learning rate {lr} is not a positive number"),
            });
        }
        Ok(())
    }
}

/// A run at a level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// The winning ticket: IMP mask, rewound weights.
    Ticket,
    /// Same mask, fresh initialisation.
    RandomReinit,
    /// Same per-layer counts at random positions, rewound weights.
    RandomPruning,
}

/// IMP settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImpConfig {
    /// Prune rate per level.
    pub rate: PruneRate,
    /// Levels after the dense one (level 0).
    pub levels: usize,
    /// Stop once the density is at or below this.
    pub min_density: Option<f64>,
    /// Rewind point.
    pub rewind: Rewind,
    /// How pruned levels retrain (default: weight rewinding).
    #[serde(default)]
    pub retrain: Retrain,
    /// The sparsity type each level prunes to (default unstructured; N:M per group, see
    /// [`prune_level_structured`]).
    #[serde(default)]
    pub structure: Structure,
    /// Baselines to train at every pruned level besides the ticket.
    pub baselines: Vec<Variant>,
    /// Seed of the initialisation, baselines and data order.
    pub seed: u64,
}

/// Where a trainer keeps the model as it is after one step: the rewind point `k` of weight
/// rewinding, which the driver captures while training level 0.
pub struct Capture<'a, M> {
    /// The step (1-based) after which the model is kept.
    pub step: u64,
    /// Where it is kept.
    pub slot: &'a mut Option<M>,
}

impl<M> Capture<'_, M> {
    /// After step `t`: keep `model()` if `t` is the capture step. `model` runs only then, so
    /// a trainer whose model must be converted (sparse layers to dense) pays once.
    pub fn offer(&mut self, t: u64, model: impl FnOnce() -> M) {
        if t == self.step {
            *self.slot = Some(model());
        }
    }
}

/// Trains and evaluates a model for the driver.
pub trait ImpTrainer<M: Module> {
    /// Train from optimizer step `start` to the end of the budget, in the data order of
    /// `data_seed`. With a `capture`, call [`Capture::offer`] after every step `t` (1-based),
    /// so the driver gets the rewind weights of exactly step `k`.
    ///
    /// # Errors
    /// Any training error (NaN loss ...).
    fn train(
        &mut self,
        model: M,
        optim: &mut SparseOptimizer,
        start: u64,
        data_seed: u64,
        capture: Option<Capture<'_, M>>,
    ) -> std::result::Result<M, TrainerError>;
    /// Fine-tuning ([`Retrain::FineTuning`]): train the steps from `start` to the end of the
    /// budget in the data order of `data_seed`, as [`ImpTrainer::train`] does, but at the
    /// constant learning rate `lr`, or (None) at the rate the schedule has at its last step.
    ///
    /// # Errors
    /// Any training error. The default says that this trainer cannot fine-tune.
    fn fine_tune(
        &mut self,
        model: M,
        optim: &mut SparseOptimizer,
        start: u64,
        lr: Option<f64>,
        data_seed: u64,
    ) -> std::result::Result<M, TrainerError> {
        let _ = (model, optim, start, lr, data_seed);
        Err(
            "this ImpTrainer does not implement `fine_tune`: use weight or learning-rate \
             rewinding, or implement it"
                .into(),
        )
    }
    /// Test accuracy in percent.
    ///
    /// # Errors
    /// Any evaluation error.
    fn accuracy(&mut self, model: &M) -> std::result::Result<f64, TrainerError>;
}

/// The metrics of one level, written to `level_NN/metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelMetrics {
    /// The level (0 = dense).
    pub level: usize,
    /// Kept / prunable weights.
    pub density: f64,
    /// Kept weights.
    pub nnz: usize,
    /// Kept weights per layer.
    pub layer_nnz: Vec<(String, usize)>,
    /// Test accuracy (%) per variant.
    pub accuracy: BTreeMap<Variant, f64>,
}

/// The IMP driver. `init(seed)` builds a freshly initialised model (the same seed must give
/// the same weights).
pub struct Imp<M, I: Fn(u64) -> M> {
    cfg: ImpConfig,
    dir: PathBuf,
    filter: ParamFilter,
    rule: Rule,
    init: I,
}

fn level_dir(dir: &Path, level: usize) -> PathBuf {
    dir.join(format!("level_{level:02}"))
}

/// The most bytes a level's `metrics.json` can have (a few hundred in practice).
const MAX_METRICS_FILE: u64 = 16 << 20;

/// The metrics of a finished level in `dir`, or None while it is unfinished (or unreadable,
/// which the driver treats as unfinished and trains again).
fn finished_level(dir: &Path, level: usize) -> Option<LevelMetrics> {
    let path = level_dir(dir, level).join("metrics.json");
    let bytes = burn_sparse_mask::checkpoint::read_bounded(&path, MAX_METRICS_FILE).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Save masks by path (one byte per weight) atomically.
///
/// # Errors
/// I/O.
pub fn save_masks(masks: &MaskSet, path: &Path) -> Result<()> {
    let mut a = Archive::default();
    let mut layers = Vec::new();
    for l in masks.layers() {
        layers.push(serde_json::json!({"path": l.param().path, "shape": l.param().shape}));
        a.blobs.insert(
            format!("mask/{}", l.param().path),
            Blob::U8(l.bits().iter().map(|&b| u8::from(b)).collect()),
        );
    }
    a.meta = serde_json::json!({ "layers": layers });
    Ok(a.save(path)?)
}

/// Load masks saved by [`save_masks`] for `model` (matched by path, shapes checked).
///
/// # Errors
/// I/O, corrupt files, unknown paths or mismatched shapes.
pub fn load_masks<M: Module>(model: &M, path: &Path) -> Result<MaskSet> {
    let a = Archive::load(path)?;
    let layers = a.meta["layers"]
        .as_array()
        .ok_or_else(|| MaskError::CorruptCheckpoint {
            path: path.to_path_buf(),
            message: "no layer list".into(),
        })?;
    let mut masks = Vec::with_capacity(layers.len());
    for l in layers {
        let p = l["path"].as_str().unwrap_or_default().to_string();
        let b = a.u8(&format!("mask/{p}"), path)?;
        masks.push((p, b.iter().map(|&x| x != 0).collect()));
    }
    Ok(MaskSet::from_paths(model, masks)?)
}

/// Prune `rate` of the surviving weights of each layer (or globally) by smallest `|w|`.
/// Exact: a layer with `n` survivors at rate `p` loses `round(p * n)` (globally: `round(p * N)`
/// of all `N` survivors). Ties: the higher flat index goes first.
///
/// # Errors
/// A rate outside `[0, 1)` or unknown layer names.
pub fn prune_level(
    masks: &MaskSet,
    weights: &[Vec<f32>],
    rate: &PruneRate,
) -> Result<Vec<Vec<bool>>> {
    rate.validate(&masks.params())?;
    let scores: Vec<Vec<f32>> = masks
        .layers()
        .iter()
        .zip(weights)
        .map(|(l, w)| {
            l.bits()
                .iter()
                .zip(w)
                .map(|(&b, &x)| if b { x.abs() } else { f32::NEG_INFINITY })
                .collect()
        })
        .collect();
    match rate {
        PruneRate::Global(p) => {
            let n = masks.nnz();
            let keep = n - ((p * n as f64).round() as usize).min(n);
            let segs: Vec<(&str, &[f32])> = masks
                .layers()
                .iter()
                .zip(&scores)
                .map(|(l, s)| (l.param().path.as_str(), s.as_slice()))
                .collect();
            Ok(top_k_segments(&segs, keep)?)
        }
        PruneRate::PerLayer { default, overrides } => masks
            .layers()
            .iter()
            .zip(&scores)
            .map(|(l, s)| {
                let p = overrides.get(&l.param().path).copied().unwrap_or(*default);
                let n = l.nnz();
                let keep = n - ((p * n as f64).round() as usize).min(n);
                Ok(top_k_segments(&[(l.param().path.as_str(), s)], keep)?
                    .pop()
                    .unwrap_or_default())
            })
            .collect(),
    }
}

/// [`prune_level`] of a [`Structure`], for pruning `level` (1 for the first pruned level).
/// N:M: every group of `g` positions keeps `clamp(round(g (1 - p)^level), min(n, g), alive)`
/// of its survivors by largest `|w|` (ties: the lower index stays), where `p` is the layer's
/// rate (a global rate applies to every group): the density the unstructured schedule has
/// reached at that level, rounded per group, never below N and never growing back, so it
/// ends at exactly N when `(1 - p)^levels = n / m` (as GMP to N:M does with its schedule).
/// The target comes from the level, not from the survivors, so small rates do not stall: a
/// group of 4 at `p = 0.13` goes 4, 3, 3, 3, 2, 2 over five levels (a per-level
/// `round(p * 3)` would remove nothing after the first). Unstructured is [`prune_level`]
/// (`level` unused).
///
/// # Errors
/// As [`prune_level`]; [`MaskError::InvalidConfig`] for block structure (IMP does not prune
/// blocks) or a layer the structure cannot group.
pub fn prune_level_structured(
    masks: &MaskSet,
    weights: &[Vec<f32>],
    rate: &PruneRate,
    structure: Structure,
    level: usize,
) -> Result<Vec<Vec<bool>>> {
    let Structure::NByM { n, .. } = structure else {
        if structure == Structure::Unstructured {
            return prune_level(masks, weights, rate);
        }
        return Err(MaskError::InvalidConfig {
            field: "structure",
            message: format!("IMP prunes unstructured or N:M masks, not {structure:?}"),
        }
        .into());
    };
    rate.validate(&masks.params())?;
    masks
        .layers()
        .iter()
        .zip(weights)
        .map(|(l, w)| {
            let p = match rate {
                PruneRate::Global(p) => *p,
                PruneRate::PerLayer { default, overrides } => {
                    overrides.get(&l.param().path).copied().unwrap_or(*default)
                }
            };
            let groups = structure.groups(l.param())?.unwrap_or_default();
            let mut bits = vec![false; l.numel()];
            for g in &groups {
                let alive: Vec<usize> = g.iter().copied().filter(|&i| l.bits()[i]).collect();
                let k = alive.len();
                let level = i32::try_from(level).unwrap_or(i32::MAX);
                let target = (g.len() as f64 * (1.0 - p).powi(level)).round() as usize;
                let keep = target.max(n.min(g.len())).min(k);
                let scores: Vec<f32> = alive.iter().map(|&i| w[i].abs()).collect();
                for (&i, &kept) in alive.iter().zip(&top_k(&scores, keep)?) {
                    bits[i] = kept;
                }
            }
            Ok(bits)
        })
        .collect()
}

/// Random positions with the same count per layer as `masks`, from `seed`.
pub fn random_pruning(masks: &MaskSet, seed: u64) -> Vec<Vec<bool>> {
    masks
        .layers()
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let mut idx: Vec<usize> = (0..l.numel()).collect();
            SparseRng::derive(seed, &[i as u64, 0x7a]).shuffle(&mut idx);
            let mut b = vec![false; l.numel()];
            for &j in &idx[..l.nnz()] {
                b[j] = true;
            }
            b
        })
        .collect()
}

impl<M: Module, I: Fn(u64) -> M> Imp<M, I> {
    /// A driver writing its artifacts to `dir`.
    pub fn new(
        cfg: ImpConfig,
        dir: impl Into<PathBuf>,
        filter: ParamFilter,
        rule: impl Into<Rule>,
        init: I,
    ) -> Self {
        Self {
            cfg,
            dir: dir.into(),
            filter,
            rule: rule.into(),
            init,
        }
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn train_variant(
        &self,
        trainer: &mut impl ImpTrainer<M>,
        model: M,
        masks: MaskSet,
        start: u64,
        capture: Option<&mut Option<M>>,
    ) -> Result<(M, f64)> {
        self.train_variant_with(trainer, model, masks, start, capture, None)
    }

    /// As [`Imp::train_variant`]; `fine_tune` trains at a constant rate (see
    /// [`ImpTrainer::fine_tune`]) instead of the schedule.
    fn train_variant_with(
        &self,
        trainer: &mut impl ImpTrainer<M>,
        model: M,
        masks: MaskSet,
        start: u64,
        capture: Option<&mut Option<M>>,
        fine_tune: Option<Option<f64>>,
    ) -> Result<(M, f64)> {
        let model = masks.apply(model);
        let mut optim = SparseOptimizer::new(self.rule, masks)?;
        let capture = capture.map(|slot| Capture {
            step: self.cfg.rewind.step(),
            slot,
        });
        let trained = match fine_tune {
            Some(lr) => trainer.fine_tune(model, &mut optim, start, lr, self.cfg.seed),
            None => trainer.train(model, &mut optim, start, self.cfg.seed, capture),
        }
        .map_err(LotteryError::Trainer)?;
        optim.masks().ensure_masked(&trained)?;
        let acc = trainer.accuracy(&trained).map_err(LotteryError::Trainer)?;
        Ok((trained, acc))
    }

    /// Run (or resume) every level. A level whose `metrics.json` exists is skipped; the driver
    /// picks up from the last finished level's mask and final weights, so a killed run ends with
    /// the same result as an uninterrupted one. `on_level` sees each level's metrics as it
    /// finishes (or is found finished).
    ///
    /// # Errors
    /// Training, I/O and configuration errors.
    pub fn run(
        &self,
        trainer: &mut impl ImpTrainer<M>,
        mut on_level: impl FnMut(&LevelMetrics),
    ) -> Result<Vec<LevelMetrics>> {
        let params = self.filter.select(&(self.init)(self.cfg.seed))?;
        self.cfg.rate.validate(&params)?;
        self.cfg.retrain.validate()?;
        std::fs::create_dir_all(&self.dir).map_err(|e| MaskError::Io {
            path: self.dir.clone(),
            source: e,
        })?;
        atomic_write(
            &self.dir.join("imp_config.json"),
            serde_json::to_string_pretty(&self.cfg)
                .unwrap_or_default()
                .as_bytes(),
        )?;
        let mut out = Vec::new();
        for level in 0..=self.cfg.levels {
            if let Some(m) = finished_level(&self.dir, level) {
                on_level(&m);
                let stop = self.cfg.min_density.is_some_and(|d| m.density <= d);
                out.push(m);
                if stop {
                    break;
                }
                continue;
            }
            let m = self.run_level(level, trainer)?;
            on_level(&m);
            let stop = self.cfg.min_density.is_some_and(|d| m.density <= d);
            out.push(m);
            if stop {
                break;
            }
        }
        Ok(out)
    }

    /// The rewind weights (masked by nothing), from `rewind.bpk`.
    ///
    /// # Errors
    /// When level 0 has not finished.
    pub fn rewind_weights(&self) -> Result<M> {
        Ok(load_module(
            (self.init)(self.cfg.seed),
            &self.dir.join("rewind.bpk"),
        )?)
    }

    /// How many levels have finished (levels `0..n`): what a resumed run skips.
    pub fn finished_levels(&self) -> usize {
        (0..=self.cfg.levels)
            .take_while(|&l| finished_level(&self.dir, l).is_some())
            .count()
    }

    /// A finished level's mask file (`masks.bsp`, see [`load_masks`]).
    pub fn masks_path(&self, level: usize) -> PathBuf {
        level_dir(&self.dir, level).join("masks.bsp")
    }

    /// A finished level's trained model file (`final.bpk`).
    pub fn final_model_path(&self, level: usize) -> PathBuf {
        level_dir(&self.dir, level).join("final.bpk")
    }

    /// The mask of a finished level (bound to a fresh model; use
    /// [`MaskSet::rebind`] for another instance).
    ///
    /// # Errors
    /// When the level has not finished.
    pub fn level_masks(&self, level: usize) -> Result<MaskSet> {
        load_masks(&(self.init)(self.cfg.seed), &self.masks_path(level))
    }

    fn run_level(&self, level: usize, trainer: &mut impl ImpTrainer<M>) -> Result<LevelMetrics> {
        let ldir = level_dir(&self.dir, level);
        let k = self.cfg.rewind.step();
        let mut accuracy = BTreeMap::new();
        let (masks, final_model) = if level == 0 {
            let init = (self.init)(self.cfg.seed);
            let masks = MaskSet::dense(&init, &self.filter)?;
            let mut captured = None;
            if k == 0 {
                captured = Some(init.clone());
            }
            let (trained, acc) =
                self.train_variant(trainer, init, masks.clone(), 0, Some(&mut captured))?;
            let rewind = captured.ok_or_else(|| LotteryError::InvalidConfig {
                field: "rewind",
                message: format!("the dense run ended before the rewind step {k}"),
            })?;
            save_module_atomic(rewind, &self.dir.join("rewind.bpk"))?;
            accuracy.insert(Variant::Ticket, acc);
            (masks, trained)
        } else {
            let prev = level_dir(&self.dir, level - 1);
            let template = (self.init)(self.cfg.seed);
            let prev_model = load_module(template, &prev.join("final.bpk"))?;
            let prev_masks = load_masks(&prev_model, &prev.join("masks.bsp"))?;
            let w = prev_masks.read_weights(&prev_model)?;
            let bits =
                prune_level_structured(&prev_masks, &w, &self.cfg.rate, self.cfg.structure, level)?;
            let rewind = self.rewind_weights()?;
            let masks =
                MaskSet::from_bits(&prev_model, prev_masks.params(), bits)?.rebind(&rewind)?;
            // The ticket: from the rewind point, or from the previous level's trained weights.
            let (start_model, fine_tune) = match self.cfg.retrain {
                Retrain::WeightRewinding => (rewind.clone(), None),
                Retrain::LrRewinding => (prev_model, None),
                Retrain::FineTuning { lr } => (prev_model, Some(lr)),
            };
            let ticket_masks = masks.rebind(&start_model)?;
            let (trained, acc) =
                self.train_variant_with(trainer, start_model, ticket_masks, k, None, fine_tune)?;
            accuracy.insert(Variant::Ticket, acc);
            for &b in &self.cfg.baselines {
                let seed = self.cfg.seed ^ (0x9e37_79b9 + level as u64);
                let (model, bm) = match b {
                    Variant::Ticket => continue,
                    Variant::RandomReinit => {
                        let fresh = (self.init)(seed);
                        let bm = masks.rebind(&fresh)?;
                        (fresh, bm)
                    }
                    Variant::RandomPruning => {
                        let bits = random_pruning(&masks, seed);
                        let bm = MaskSet::from_bits(&rewind, masks.params(), bits)?;
                        (rewind.clone(), bm)
                    }
                };
                let (_, acc) = self.train_variant(trainer, model, bm, k, None)?;
                accuracy.insert(b, acc);
            }
            (masks, trained)
        };
        save_masks(&masks, &ldir.join("masks.bsp"))?;
        save_module_atomic(final_model, &ldir.join("final.bpk"))?;
        let m = LevelMetrics {
            level,
            density: masks.density(),
            nnz: masks.nnz(),
            layer_nnz: masks
                .layers()
                .iter()
                .map(|l| (l.param().path.clone(), l.nnz()))
                .collect(),
            accuracy,
        };
        atomic_write(
            &ldir.join("metrics.json"),
            serde_json::to_string_pretty(&m)
                .unwrap_or_default()
                .as_bytes(),
        )?;
        Ok(m)
    }

    /// Instability of the ticket of `level`: from the rewind point, train two copies with data
    /// seeds `seeds` and evaluate `points` interpolations (error = 100 - accuracy).
    ///
    /// # Errors
    /// When the level has not finished, or training fails.
    pub fn instability(
        &self,
        level: usize,
        trainer: &mut impl ImpTrainer<M>,
        seeds: (u64, u64),
        points: usize,
    ) -> Result<LmcReport> {
        let rewind = self.rewind_weights()?;
        let masks = if level == 0 {
            MaskSet::dense(&rewind, &self.filter)?
        } else {
            self.level_masks(level)?.rebind(&rewind)?
        };
        let k = self.cfg.rewind.step();
        let mut run = |seed: u64| -> Result<M> {
            let model = masks.apply(rewind.clone());
            let mut optim = SparseOptimizer::new(self.rule, masks.clone())?;
            trainer
                .train(model, &mut optim, k, seed, None)
                .map_err(LotteryError::Trainer)
        };
        let a = run(seeds.0)?;
        let b = run(seeds.1)?;
        linear_mode_connectivity(&a, &b, points, |m| {
            Ok(100.0 - trainer.accuracy(m).map_err(LotteryError::Trainer)?)
        })
    }
}
