//! One experiment run: a directory named by the config's hash, per-epoch metrics, atomic
//! checkpoints after every epoch, resume after a kill, nothing to do once finished.
//!
//! ```text
//! runs/lenet300-mnist-rigl-s0.9000-seed0-3fa2c1d9e0b1/
//!   config.json          the resolved single-seed config
//!   data.json            the data files trained on, with their sha256
//!   metrics.csv|json     one row per epoch: loss, test accuracy, density per layer, churn
//!   updates.csv|json     one row per topology update and layer (dynamic methods)
//!   levels.csv|json      one row per IMP level (lottery)
//!   checkpoint/          model + optimizer after the last finished epoch, and state.json
//!   plots/               accuracy.{svg,png}, layer_density.{svg,png}, churn.{svg,png}
//!   model.bpk, masks.bsp the final model and mask
//!   result.json          written last: its presence means the run is finished
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::tensor::Device;
use burn_sparse::data::{Cifar10, FashionMnist, Mnist, Splits, Synthetic, VisionDataset};
use burn_sparse::device::device_from_name;
use burn_sparse::layers::Compute;
use burn_sparse::lottery::{
    Imp, ImpConfig, ImpTrainer, LevelMetrics, PruneRate, Retrain, Rewind, Variant, save_masks,
};
use burn_sparse::mask::checkpoint::{load_module, save_module_atomic};
use burn_sparse::mask::{
    FlopCount, LayerFlops, MaskSet, SparseOptimizer, dense_forward_macs, forward_macs,
};
use burn_sparse::models::{
    Classifier, ConvNetConfig, InputShapeError, LeNet5Config, LeNet300Config, SparseMlp,
};
use burn_sparse::sparse_dst::SparseDst;
use burn_sparse::train::{
    Augmented, EpochReport, SparseStepTrainer, StepTrainer, TrainConfig, accuracy, epoch_seed,
    train_epoch_sparse_with, train_epoch_with,
};
use burn_sparse::zoo::{ResNetConfig, RowTransformerConfig};
use serde::{Deserialize, Serialize};

use crate::config::{
    ComputeName, DatasetConfig, DatasetName, ExperimentConfig, MethodName, ModelName, RetrainName,
    decode,
};
use crate::error::{Error, Result, read, write_atomic};
use crate::method;
use crate::plot::{Series, bar_chart, line_chart};
use crate::progress::Progress;
use crate::rundir::{self, RunLock, State};

/// The metrics of one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// Epoch (1-based).
    pub epoch: u64,
    /// Optimizer steps so far.
    pub step: u64,
    /// Mean training loss of the epoch.
    pub train_loss: f64,
    /// Test accuracy (%) after the epoch.
    pub test_accuracy: f64,
    /// Kept fraction of the prunable weights.
    pub density: f64,
    /// Kept fraction per layer.
    pub layer_density: BTreeMap<String, f64>,
    /// Topology updates in the epoch.
    pub updates: usize,
    /// Connections changed by the epoch's updates, over the kept weights.
    pub churn: f64,
    /// Wall time of the epoch in seconds (the one field that is not reproducible).
    pub seconds: f64,
}

/// One layer's share of a topology update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateRow {
    /// Optimizer step of the update (1-based).
    pub step: u64,
    /// Layer path.
    pub layer: String,
    /// Connections dropped (= regrown).
    pub changed: usize,
    /// Kept weights of the layer.
    pub nnz: usize,
    /// `changed / nnz`.
    pub churn: f64,
}

/// One IMP level of a lottery run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelRow {
    /// Level (0 = dense).
    pub level: usize,
    /// Kept fraction.
    pub density: f64,
    /// Winning ticket's test accuracy (%).
    pub ticket: f64,
    /// Random reinit baseline (%), when trained.
    pub random_reinit: Option<f64>,
    /// Random pruning baseline (%), when trained.
    pub random_pruning: Option<f64>,
}

/// The result of a finished run (`result.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Run directory name.
    pub name: String,
    /// Method.
    pub method: MethodName,
    /// Target sparsity (0 for dense).
    pub sparsity: f64,
    /// Seed.
    pub seed: u64,
    /// Final test accuracy (%).
    pub test_accuracy: f64,
    /// Kept fraction of prunable weights at the end.
    pub density: f64,
    /// Kept prunable weights.
    pub nnz: usize,
    /// Prunable weights.
    pub prunable: usize,
    /// Kept fraction per layer.
    pub layer_density: BTreeMap<String, f64>,
    /// Epochs (per level for the lottery).
    pub epochs: u64,
    /// Seconds of training over all sessions of the run.
    pub seconds: f64,
    /// Test accuracy per epoch (the last training of a lottery run has none).
    pub curve: Vec<f64>,
    /// IMP levels (lottery only).
    pub levels: Option<Vec<LevelRow>>,
    /// Training multiply-adds relative to dense training of the same length, counted as the
    /// RigL paper does ([`FlopCount`]: each step at its
    /// densities, the dense weight gradient where the method computes it; the lottery's every
    /// IMP level). Absent in results of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_flops: Option<f64>,
    /// The final network's forward multiply-adds relative to the dense network's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_flops: Option<f64>,
    /// The error barrier of `lottery.lmc` (percentage points), when asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instability: Option<f64>,
}

/// `params.csv` in the run directory: every float parameter of the model with its shape, module
/// type and why the run's filter does or does not prune it.
fn write_param_report<M: burn::module::Module>(
    dir: &Path,
    cfg: &ExperimentConfig,
    model: &M,
) -> Result<()> {
    let mut csv = String::from("path,shape,module,prunable,why\n");
    for (p, v) in cfg.filter.filter()?.explain(model) {
        let shape: Vec<String> = p.shape.iter().map(|d| d.to_string()).collect();
        csv.push_str(&format!(
            "{},{},{},{},{}\n",
            p.path,
            shape.join("x"),
            p.module,
            v == burn_sparse::mask::Verdict::Prunable,
            v
        ));
    }
    write_atomic(&dir.join("params.csv"), csv.as_bytes())
}

/// Held while a run seeds burn's device RNG and draws from it. That RNG is process-wide, and
/// burn initialises a parameter lazily, at its first use (burn-nn's `Initializer` returns
/// `Param::uninitialized`): a model's initial weights are drawn wherever the run first touches
/// them (a mask, a saliency score, the first forward pass), not where the model is built. So
/// [`Runner::run_one`] holds this over the whole run, and two runs on two threads of one process
/// take turns instead of interleaving their draws (which would lose the
/// same-seed-same-weights guarantee).
static DEVICE_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

thread_local! {
    /// Whether this thread holds [`DEVICE_RNG`] (through a [`DeviceRngHold`]).
    static HOLDS_DEVICE_RNG: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The process's turn at burn's device RNG, until dropped. Re-entrant: taken again on a thread
/// that holds it, it returns at once (and the outer hold still ends the turn).
#[must_use = "the turn ends when this is dropped"]
pub struct DeviceRngHold {
    guard: Option<std::sync::MutexGuard<'static, ()>>,
}

impl Drop for DeviceRngHold {
    fn drop(&mut self) {
        if self.guard.take().is_some() {
            HOLDS_DEVICE_RNG.with(|h| h.set(false));
        }
    }
}

/// Waits for, and takes, this process's turn at burn's device RNG (see [`DeviceRngHold`]). Hold
/// it over everything that seeds or draws from that RNG: building a model and its first use.
pub fn hold_device_rng() -> DeviceRngHold {
    if HOLDS_DEVICE_RNG.with(|h| h.get()) {
        return DeviceRngHold { guard: None };
    }
    let guard = DEVICE_RNG.lock().unwrap_or_else(|p| p.into_inner());
    HOLDS_DEVICE_RNG.with(|h| h.set(true));
    DeviceRngHold { guard: Some(guard) }
}

/// `make(device)` with the device RNG seeded by `seed` (None: as it is), during this thread's
/// turn at it ([`hold_device_rng`]). burn draws the weights at their first use, after this
/// returns: hold the turn over that use too, as [`Runner::run_one`] does over a whole run.
pub fn seeded<M>(device: &Device, seed: Option<u64>, make: impl FnOnce(&Device) -> M) -> M {
    let _turn = hold_device_rng();
    if let Some(s) = seed {
        device.seed(s);
    }
    make(device)
}

/// The FLOP model of `model`: every weight of rank >= 2 (pruned or kept dense by the run's
/// filter), `uses` times per example (1 unless the model names more, as convolutions do).
fn flop_layers<M: burn::module::Module>(
    model: &M,
    uses: &BTreeMap<String, u64>,
) -> Result<Vec<LayerFlops>> {
    Ok(burn_sparse::mask::ParamFilter::new()
        .select(model)?
        .into_iter()
        .map(|p| LayerFlops {
            numel: p.numel(),
            uses: uses.get(&p.path).copied().unwrap_or(1),
            path: p.path,
        })
        .collect())
}

/// The kept weights of every layer of `flops`: its count in `layers`, or all of a layer the
/// run does not prune.
fn kept_in(flops: &[LayerFlops], layers: &LayerCounts) -> Vec<usize> {
    flops
        .iter()
        .map(|l| layers.get(&l.path).map_or(l.numel, |&(nnz, _)| nnz))
        .collect()
}

/// Runs experiments into a runs directory, caching datasets between runs.
pub struct Runner {
    runs_dir: PathBuf,
    /// Draw progress bars (they still stay hidden when stderr is not a terminal).
    pub progress: bool,
    data: HashMap<String, Arc<Splits>>,
}

/// What happened to a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The result.
    pub result: RunResult,
    /// The run directory.
    pub dir: PathBuf,
    /// It was already finished: nothing ran.
    pub already_done: bool,
    /// It resumed from a checkpoint at this many finished epochs (or levels).
    pub resumed_from: Option<u64>,
}

fn limit(ds: VisionDataset, n: Option<usize>) -> Result<VisionDataset> {
    match n {
        Some(n) if n < ds.len() => Ok(ds.subset(&(0..n).collect::<Vec<_>>())?),
        _ => Ok(ds),
    }
}

/// Load (fetching MNIST / Fashion-MNIST if missing) and cut to the configured limits.
///
/// # Errors
/// Any [`Error::Data`].
pub fn load_data(cfg: &DatasetConfig) -> Result<Splits> {
    let s = match cfg.name {
        DatasetName::Mnist => Mnist::load_or_fetch(&cfg.dir)?,
        DatasetName::FashionMnist => FashionMnist::load_or_fetch(&cfg.dir)?,
        DatasetName::Cifar10 => Cifar10::load(&cfg.dir)?,
        DatasetName::Synthetic => {
            return Ok(Synthetic::generate(
                cfg.train_limit.unwrap_or(600),
                cfg.test_limit.unwrap_or(200),
            )?);
        }
    };
    Ok(Splits {
        train: limit(s.train, cfg.train_limit)?,
        test: limit(s.test, cfg.test_limit)?,
        files: s.files,
    })
}

/// The lottery's trainer: every level trains the run's budget of `total` steps.
fn step_trainer<'a>(
    cfg: &ExperimentConfig,
    data: &'a Splits,
    device: &Device,
    total: u64,
) -> StepTrainer<'a, VisionDataset> {
    StepTrainer {
        train: &data.train,
        test: &data.test,
        cfg: method::train_config(cfg, total),
        total_steps: total,
        device: device.clone(),
    }
}

/// Kept and total weights per prunable layer, by path.
type LayerCounts = BTreeMap<String, (usize, usize)>;

fn layer_density(layers: &LayerCounts) -> BTreeMap<String, f64> {
    layers
        .iter()
        .map(|(p, &(nnz, numel))| (p.clone(), nnz as f64 / numel.max(1) as f64))
        .collect()
}

fn totals(layers: &LayerCounts) -> (usize, usize) {
    layers
        .values()
        .fold((0, 0), |(a, b), &(nnz, numel)| (a + nnz, b + numel))
}

/// What the epoch loop trains: a model with masks on its dense weights, or truly sparse
/// layers. Both are checkpointed, resumed and reported the same way.
trait Trainee: Sized {
    /// One epoch over `source` in the order of `seed`.
    fn epoch(
        self,
        source: &Augmented<'_>,
        tc: TrainConfig,
        seed: u64,
        device: &Device,
        on_batch: &mut dyn FnMut(usize, usize),
    ) -> Result<(Self, EpochReport)>;
    /// Test accuracy (%).
    fn accuracy(&self, test: &VisionDataset, device: &Device) -> Result<f64>;
    /// Kept and total weights of every prunable layer, named as the dense model's parameters.
    fn layers(&self) -> Result<LayerCounts>;
    /// Optimizer steps taken.
    fn steps(&self) -> u64;
    /// The checkpoint's model and optimizer files.
    fn save(&self, model: &Path, optim: &Path) -> Result<()>;
    /// Check that every masked weight is exactly zero, then write the final model (dense, with
    /// exact zeros: the same file whichever way it trained) and its mask.
    fn finish(self, model: &Path, masks: &Path) -> Result<()>;
}

/// A checkpoint's two files: the model's record and the optimizer's archive.
fn checkpoint<M: burn::module::Module>(
    model: M,
    optim: &SparseOptimizer,
    model_path: &Path,
    optim_path: &Path,
) -> Result<()> {
    save_module_atomic(model, model_path)?;
    Ok(optim.save(optim_path)?)
}

/// `compute = "masked"`.
struct MaskedRun<M> {
    model: M,
    optim: SparseOptimizer,
}

impl<M: Classifier + 'static> Trainee for MaskedRun<M> {
    fn epoch(
        self,
        source: &Augmented<'_>,
        tc: TrainConfig,
        seed: u64,
        device: &Device,
        on_batch: &mut dyn FnMut(usize, usize),
    ) -> Result<(Self, EpochReport)> {
        let Self { model, mut optim } = self;
        let (model, report) =
            train_epoch_with(model, &mut optim, source, tc, seed, device, on_batch)?;
        Ok((Self { model, optim }, report))
    }
    fn accuracy(&self, test: &VisionDataset, device: &Device) -> Result<f64> {
        Ok(accuracy(&self.model, test, device)?)
    }
    fn layers(&self) -> Result<LayerCounts> {
        Ok(self
            .optim
            .masks()
            .layers()
            .iter()
            .map(|l| (l.param().path.clone(), (l.nnz(), l.numel())))
            .collect())
    }
    fn steps(&self) -> u64 {
        self.optim.steps()
    }
    fn save(&self, model: &Path, optim: &Path) -> Result<()> {
        checkpoint(self.model.clone(), &self.optim, model, optim)
    }
    fn finish(self, model: &Path, masks: &Path) -> Result<()> {
        self.optim.masks().ensure_masked(&self.model)?;
        save_masks(self.optim.masks(), masks)?;
        Ok(save_module_atomic(self.model, model)?)
    }
}

/// `compute = "sparse"`: LeNet-300-100 as [`SparseMlp`], with the topology updater, if any.
struct SparseRun {
    net: SparseMlp,
    optim: SparseOptimizer,
    dst: Option<SparseDst>,
}

/// LeNet-300-100's weight paths, the names of a [`SparseMlp`]'s layers in every output.
const LENET300_WEIGHTS: [&str; 3] = ["fc1.weight", "fc2.weight", "fc3.weight"];

impl SparseRun {
    /// The dense twin and its mask.
    fn dense(&self) -> Result<(burn_sparse::models::LeNet300, MaskSet)> {
        let model = self.net.to_lenet300()?;
        let bits = self
            .net
            .layers
            .iter()
            .zip(LENET300_WEIGHTS)
            .map(|(l, p)| Ok((p.to_string(), l.active_mask()?)))
            .collect::<Result<Vec<_>>>()?;
        let masks = MaskSet::from_paths(&model, bits)?;
        Ok((model, masks))
    }
}

impl Trainee for SparseRun {
    fn epoch(
        self,
        source: &Augmented<'_>,
        tc: TrainConfig,
        seed: u64,
        device: &Device,
        on_batch: &mut dyn FnMut(usize, usize),
    ) -> Result<(Self, EpochReport)> {
        let Self {
            net,
            mut optim,
            mut dst,
        } = self;
        let (net, mut report) = train_epoch_sparse_with(
            net,
            &mut optim,
            dst.as_mut(),
            source,
            tc,
            seed,
            device,
            on_batch,
        )?;
        for u in &mut report.updates {
            for ((path, _), name) in u.changed.iter_mut().zip(LENET300_WEIGHTS) {
                *path = name.to_string();
            }
        }
        Ok((Self { net, optim, dst }, report))
    }
    fn accuracy(&self, test: &VisionDataset, device: &Device) -> Result<f64> {
        Ok(accuracy(&self.net, test, device)?)
    }
    fn layers(&self) -> Result<LayerCounts> {
        Ok(self
            .net
            .layers
            .iter()
            .zip(LENET300_WEIGHTS)
            .map(|(l, p)| (p.to_string(), (l.nnz(), l.d_input * l.d_output)))
            .collect())
    }
    fn steps(&self) -> u64 {
        self.optim.steps()
    }
    fn save(&self, model: &Path, optim: &Path) -> Result<()> {
        checkpoint(self.net.clone(), &self.optim, model, optim)
    }
    fn finish(self, model: &Path, masks: &Path) -> Result<()> {
        let (dense, m) = self.dense()?;
        m.ensure_masked(&dense)?;
        save_masks(&m, masks)?;
        Ok(save_module_atomic(dense, model)?)
    }
}

/// Churn per update step: connections changed over kept weights, all layers together.
pub fn churn_by_step(updates: &[UpdateRow]) -> Vec<(f64, f64)> {
    let mut by: BTreeMap<u64, (usize, usize)> = BTreeMap::new();
    for u in updates {
        let e = by.entry(u.step).or_default();
        e.0 += u.changed;
        e.1 += u.nnz;
    }
    by.into_iter()
        .map(|(s, (c, n))| (s as f64, c as f64 / n.max(1) as f64))
        .collect()
}

impl Runner {
    /// A runner writing into `runs_dir`.
    pub fn new(runs_dir: impl Into<PathBuf>) -> Self {
        Self {
            runs_dir: runs_dir.into(),
            progress: true,
            data: HashMap::new(),
        }
    }

    /// The runs directory.
    pub fn runs_dir(&self) -> &Path {
        &self.runs_dir
    }

    /// The topology updates a finished or running run recorded (`updates.json`; empty when
    /// it has none, as a method with a fixed mask).
    ///
    /// # Errors
    /// [`Error::RunDir`] for an unreadable record.
    pub fn updates_of(&self, run_name: &str) -> Result<Vec<UpdateRow>> {
        rundir::read_updates(&self.runs_dir.join(run_name))
    }

    /// The run directory of a single-seed config.
    pub fn run_dir(&self, cfg: &ExperimentConfig) -> PathBuf {
        self.runs_dir.join(cfg.run_name())
    }

    fn data(&mut self, cfg: &DatasetConfig) -> Result<Arc<Splits>> {
        let key = serde_json::to_string(cfg).unwrap_or_default();
        if let Some(d) = self.data.get(&key) {
            return Ok(d.clone());
        }
        let d = Arc::new(load_data(cfg)?);
        self.data.insert(key, d.clone());
        Ok(d)
    }

    /// Run every seed of `cfg` in turn.
    ///
    /// # Errors
    /// The first run's error.
    pub fn run(&mut self, cfg: &ExperimentConfig) -> Result<Vec<Outcome>> {
        cfg.per_seed().iter().map(|c| self.run_one(c)).collect()
    }

    /// Run (or resume, or skip) one single-seed config.
    ///
    /// # Errors
    /// [`Error`]; a run directory holding another config is [`Error::RunDir`].
    pub fn run_one(&mut self, cfg: &ExperimentConfig) -> Result<Outcome> {
        let cfg = ExperimentConfig {
            seeds: vec![cfg.seed()],
            ..cfg.clone()
        };
        cfg.validate()?;
        let dir = self.run_dir(&cfg);
        std::fs::create_dir_all(&dir).map_err(|e| Error::Io {
            path: dir.clone(),
            source: e,
        })?;
        // One process per run directory; what a killed one left half-written goes first.
        let _lock = RunLock::acquire(&dir)?;
        rundir::clean_orphans(&dir);
        let cfg_path = dir.join("config.json");
        if cfg_path.exists() {
            let v: serde_json::Value =
                serde_json::from_slice(&read(&cfg_path)?).map_err(|e| Error::RunDir {
                    path: cfg_path.clone(),
                    message: e.to_string(),
                })?;
            let old: ExperimentConfig = decode(v)?;
            if old.hash() != cfg.hash() {
                return Err(Error::RunDir {
                    path: cfg_path,
                    message: "holds a different config than this run's".into(),
                });
            }
        } else {
            write_atomic(&cfg_path, cfg.to_json().as_bytes())?;
        }
        if let Some(result) = rundir::read_result(&dir)? {
            // Finished; a kill during the clean-up may have left the checkpoint.
            rundir::remove_checkpoint(&dir);
            return Ok(Outcome {
                result,
                dir,
                already_done: true,
                resumed_from: None,
            });
        }
        let data = self.data(&cfg.dataset)?;
        // The data directory is not part of the run's hash: the files' sha256 are, once
        // recorded, so a resume never continues on other data.
        rundir::check_data(&dir, &data.files)?;
        let device = device_from_name(&cfg.device).map_err(|m| Error::Config {
            field: "device".into(),
            message: m,
        })?;
        let classes = data.train.classes();
        let model_err = |e: InputShapeError| Error::Config {
            field: "model".into(),
            message: e.to_string(),
        };
        let shape = data.train.shape();
        // Uses of each weight per image (FLOPs): 1 for fully connected layers.
        let no_uses = BTreeMap::new();
        // From the seeding to the last draw: burn draws the weights at their first use.
        let _turn = hold_device_rng();
        let (result, resumed_from) = match cfg.model {
            ModelName::Lenet300 => {
                let m = LeNet300Config::for_data(shape, classes);
                match cfg.compute {
                    ComputeName::Masked => {
                        self.train_model(&cfg, &dir, &data, &device, &no_uses, |d| m.init(d))?
                    }
                    ComputeName::Sparse => {
                        self.train_sparse(&cfg, &dir, &data, &device, &no_uses, &m)?
                    }
                }
            }
            ModelName::Lenet5 => {
                let m = LeNet5Config::for_data(shape, classes).map_err(model_err)?;
                let uses = m.weight_uses().into_iter().collect();
                self.train_model(&cfg, &dir, &data, &device, &uses, |d| m.init(d))?
            }
            ModelName::Resnet20 => {
                let m = ResNetConfig::resnet20_for(shape, classes).map_err(model_err)?;
                let uses = m.weight_uses().into_iter().collect();
                self.train_model(&cfg, &dir, &data, &device, &uses, |d| m.init(d))?
            }
            ModelName::VitTiny => {
                let m = RowTransformerConfig::for_data(shape, classes);
                self.train_model(&cfg, &dir, &data, &device, &no_uses, |d| m.init(d))?
            }
            ModelName::Conv2 | ModelName::Conv4 | ModelName::Conv6 => {
                let depth = match cfg.model {
                    ModelName::Conv2 => 2,
                    ModelName::Conv4 => 4,
                    _ => 6,
                };
                let m = ConvNetConfig::for_data(depth, shape, classes).map_err(model_err)?;
                let uses = m.weight_uses().into_iter().collect();
                self.train_model(&cfg, &dir, &data, &device, &uses, |d| m.init(d))?
            }
        };
        // The finished run's commit point; the checkpoint goes only after it.
        rundir::write_result(&dir, &result)?;
        rundir::remove_checkpoint(&dir);
        Ok(Outcome {
            result,
            dir,
            already_done: false,
            resumed_from,
        })
    }

    fn train_model<M: Classifier + 'static>(
        &self,
        cfg: &ExperimentConfig,
        dir: &Path,
        data: &Splits,
        device: &Device,
        uses: &BTreeMap<String, u64>,
        make: impl Fn(&Device) -> M,
    ) -> Result<(RunResult, Option<u64>)> {
        let seed = cfg.seed();
        let init = |s: u64| seeded(device, Some(s), &make);
        let spe = data.train.len().div_ceil(cfg.optimizer.batch_size) as u64;
        let total = method::total_steps(cfg, spe)?;
        let template = init(seed);
        let flops = flop_layers(&template, uses)?;
        write_param_report(dir, cfg, &template)?;
        drop(template);
        if cfg.method == MethodName::Lottery {
            let trainer = step_trainer(cfg, data, device, total);
            return self.lottery(cfg, dir, spe, &flops, init, trainer);
        }
        let ck = dir.join("checkpoint");
        let state = rundir::load(&ck)?;
        match state {
            Some(st) => {
                let model = load_module(init(seed), &ck.join(&st.model_file))?;
                let optim = SparseOptimizer::load(&ck.join(&st.optim_file), &model)?;
                let optim = method::reattach_updater(cfg, optim, total, spe)?;
                let run = MaskedRun { model, optim };
                self.epochs(cfg, dir, data, device, &flops, run, Some(st))
            }
            None => {
                let (model, optim) = method::initial(cfg, init(seed), data, device, total, spe)?;
                let run = MaskedRun { model, optim };
                self.epochs(cfg, dir, data, device, &flops, run, None)
            }
        }
    }

    /// `compute = "sparse"`: LeNet-300-100 on truly sparse layers. The initial topology is
    /// the masked path's (the same mask from the same seed); a resumed run rebuilds it as the
    /// shape its checkpoint loads into (every method allowed here keeps each layer's nnz).
    fn train_sparse(
        &self,
        cfg: &ExperimentConfig,
        dir: &Path,
        data: &Splits,
        device: &Device,
        uses: &BTreeMap<String, u64>,
        make: &LeNet300Config,
    ) -> Result<(RunResult, Option<u64>)> {
        let spe = data.train.len().div_ceil(cfg.optimizer.batch_size) as u64;
        let total = method::total_steps(cfg, spe)?;
        let init = |s: u64| seeded(device, Some(s), |d| make.init(d));
        let template = init(cfg.seed());
        let flops = flop_layers(&template, uses)?;
        write_param_report(dir, cfg, &template)?;
        drop(template);
        if cfg.method == MethodName::Lottery {
            let trainer = SparseStepTrainer {
                steps: step_trainer(cfg, data, device, total),
                compute: Compute::Auto,
            };
            return self.lottery(cfg, dir, spe, &flops, init, trainer);
        }
        let (model, masked) = method::initial(cfg, init(cfg.seed()), data, device, total, spe)?;
        let net = SparseMlp::from_lenet300(&model, masked.masks(), Compute::Auto)?;
        drop((model, masked));
        let dst = match method::dst_method(cfg.method) {
            Some(dm) => SparseDst::from_plan(&method::plan(cfg, dm, total, spe)?)?,
            None => None,
        };
        let ck = dir.join("checkpoint");
        let state = rundir::load(&ck)?;
        let (net, optim) = match &state {
            Some(st) => {
                let net = load_module(net, &ck.join(&st.model_file))?;
                let optim = SparseOptimizer::load(&ck.join(&st.optim_file), &net)?;
                (net, optim)
            }
            None => (
                net,
                SparseOptimizer::new(method::rule_of(cfg), MaskSet::empty())?,
            ),
        };
        let run = SparseRun { net, optim, dst };
        self.epochs(cfg, dir, data, device, &flops, run, state)
    }

    /// The epochs of a run from `state` (None: from the start): train, evaluate, record and
    /// checkpoint after each one, then the final model, masks, plots and result.
    #[allow(clippy::too_many_arguments)]
    fn epochs<T: Trainee>(
        &self,
        cfg: &ExperimentConfig,
        dir: &Path,
        data: &Splits,
        device: &Device,
        flop_model: &[LayerFlops],
        mut run: T,
        state: Option<State>,
    ) -> Result<(RunResult, Option<u64>)> {
        let seed = cfg.seed();
        let spe = data.train.len().div_ceil(cfg.optimizer.batch_size) as u64;
        let total = method::total_steps(cfg, spe)?;
        let tc = method::train_config(cfg, total);
        // The method's schedule, for the steps that compute a dense weight gradient.
        let schedule = match method::dst_method(cfg.method) {
            Some(dm) => method::plan(cfg, dm, total, spe)?.updater()?,
            None => None,
        };
        let dense_grad = |t: u64| {
            schedule
                .as_ref()
                .is_some_and(|u| (u.needs_grads() && u.is_update_step(t)) || u.observes(t))
        };
        let ck = dir.join("checkpoint");
        if let Some(st) = &state {
            // Outputs follow the committed state, whatever a kill interrupted.
            rundir::write_outputs(dir, st, cfg.method.is_dynamic())?;
        }
        let resumed_from = state.as_ref().map(|s| s.epochs_done);
        let mut st = state.unwrap_or_default();
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let bar = Progress::new(total, "steps", self.progress);
        if let Some(e) = resumed_from {
            bar.println(&format!("{name}: resuming after epoch {e}"));
        }
        for epoch in st.epochs_done..cfg.epochs {
            let t0 = Instant::now();
            bar.message(format!("epoch {}/{}", epoch + 1, cfg.epochs));
            let base = epoch * spe;
            let (steps_before, mut nnz) = (run.steps(), kept_in(flop_model, &run.layers()?));
            let eseed = epoch_seed(seed, epoch);
            let source = Augmented::for_epoch(&data.train, cfg.dataset.augment, eseed);
            let (r, report) = run.epoch(&source, tc, eseed, device, &mut |b, _| {
                bar.set(base + b as u64)
            })?;
            run = r;
            let acc = run.accuracy(&data.test, device)?;
            let layers = run.layers()?;
            // FLOPs step by step: each step at the densities its forward pass saw; a pruning
            // method's update removes its `changed` weights after its step.
            for t in steps_before + 1..=run.steps() {
                st.flops.add_step(flop_model, &nnz, dense_grad(t));
                if cfg.method == MethodName::Gmp {
                    for r in report.updates.iter().filter(|r| r.step == t) {
                        for (path, removed) in &r.changed {
                            if let Some(i) = flop_model.iter().position(|l| &l.path == path) {
                                nnz[i] = nnz[i].saturating_sub(*removed);
                            }
                        }
                    }
                }
            }
            let (nnz, numel) = totals(&layers);
            let mut changed_total = 0usize;
            for r in &report.updates {
                for (layer, changed) in &r.changed {
                    let nnz = layers.get(layer).map_or(0, |l| l.0);
                    changed_total += changed;
                    st.updates.push(UpdateRow {
                        step: r.step,
                        layer: layer.clone(),
                        changed: *changed,
                        nnz,
                        churn: *changed as f64 / nnz.max(1) as f64,
                    });
                }
            }
            let seconds = t0.elapsed().as_secs_f64();
            st.seconds += seconds;
            let row = EpochMetrics {
                epoch: epoch + 1,
                step: run.steps(),
                train_loss: report.loss,
                test_accuracy: acc,
                density: nnz as f64 / numel.max(1) as f64,
                layer_density: layer_density(&layers),
                updates: report.updates.len(),
                churn: changed_total as f64 / nnz.max(1) as f64,
                seconds,
            };
            bar.println(&format!(
                "{name}  epoch {:>3}/{}  loss {:.4}  test {:.2}%  density {:.4}  churn {:.4}  {:.1}s",
                row.epoch, cfg.epochs, row.train_loss, acc, row.density, row.churn, seconds
            ));
            st.metrics.push(row);
            // Checkpoint: new files under new names, then the state that names them with
            // their checksums (the commit point), then the old files go; the outputs follow the
            // committed state. A kill at any moment leaves a state.json whose files exist.
            std::fs::create_dir_all(&ck).map_err(|e| Error::Io {
                path: ck.clone(),
                source: e,
            })?;
            let old = [st.model_file.clone(), st.optim_file.clone()];
            st.epochs_done = epoch + 1;
            st.model_file = format!("model-e{:04}.bpk", epoch + 1);
            st.optim_file = format!("optim-e{:04}.bsp", epoch + 1);
            run.save(&ck.join(&st.model_file), &ck.join(&st.optim_file))?;
            rundir::commit(&ck, &mut st, &old)?;
            rundir::write_outputs(dir, &st, cfg.method.is_dynamic())?;
        }
        bar.finish();
        let layers = run.layers()?;
        let (nnz, numel) = totals(&layers);
        let acc = st.metrics.last().map_or(f64::NAN, |m| m.test_accuracy);
        let result = RunResult {
            name,
            method: cfg.method,
            sparsity: cfg.effective_sparsity(),
            seed,
            test_accuracy: acc,
            density: nnz as f64 / numel.max(1) as f64,
            nnz,
            prunable: numel,
            layer_density: layer_density(&layers),
            epochs: cfg.epochs,
            seconds: st.seconds,
            curve: st.metrics.iter().map(|m| m.test_accuracy).collect(),
            levels: None,
            instability: None,
            train_flops: Some(st.flops.train_ratio()),
            inference_flops: Some(
                forward_macs(flop_model, &kept_in(flop_model, &layers))
                    / dense_forward_macs(flop_model),
            ),
        };
        rundir::write_outputs(dir, &st, cfg.method.is_dynamic())?;
        self.run_plots(dir, &result, &st.updates)?;
        run.finish(&dir.join("model.bpk"), &dir.join("masks.bsp"))?;
        Ok((result, resumed_from))
    }

    fn run_plots(&self, dir: &Path, r: &RunResult, updates: &[UpdateRow]) -> Result<()> {
        let plots = dir.join("plots");
        let label = format!("{} {:.0}%", r.method, 100.0 * r.sparsity);
        if !r.curve.is_empty() {
            let pts = r
                .curve
                .iter()
                .enumerate()
                .map(|(i, &a)| ((i + 1) as f64, a))
                .collect();
            line_chart(
                &plots.join("accuracy"),
                &format!("Test accuracy over training: {label}"),
                "epoch",
                "test accuracy (%)",
                &[Series::new(label.clone(), pts)],
                false,
            )?;
        }
        let layers: Vec<String> = r.layer_density.keys().cloned().collect();
        bar_chart(
            &plots.join("layer_density"),
            &format!("Density per layer: {label}"),
            "kept fraction",
            &layers,
            &[(
                label.clone(),
                r.layer_density.values().copied().collect(),
                None,
            )],
        )?;
        if !updates.is_empty() {
            line_chart(
                &plots.join("churn"),
                &format!("Mask churn per update: {label}"),
                "step",
                "connections changed / kept",
                &[Series::new(label, churn_by_step(updates))],
                false,
            )?;
        }
        Ok(())
    }

    fn lottery<M: Classifier + 'static>(
        &self,
        cfg: &ExperimentConfig,
        dir: &Path,
        spe: u64,
        flop_model: &[LayerFlops],
        init: impl Fn(u64) -> M,
        mut trainer: impl ImpTrainer<M>,
    ) -> Result<(RunResult, Option<u64>)> {
        let seed = cfg.seed();
        let s = cfg.sparsity;
        let levels = cfg
            .lottery
            .levels
            .unwrap_or_else(|| ((1.0 - s).ln() / 0.8f64.ln()).ceil().max(1.0) as usize);
        // The per-level rate that lands the last level on the target: (1 - r)^L = 1 - s.
        let rate = 1.0 - (1.0 - s).powf(1.0 / levels as f64);
        let imp_dir = dir.join("imp");
        let filter = cfg.filter.filter()?;
        let per_layer: BTreeMap<String, usize> = filter
            .select(&init(seed))?
            .into_iter()
            .map(|p| (p.path.clone(), p.numel()))
            .collect();
        let rate = match &cfg.lottery.layer_rates {
            None => PruneRate::Global(rate),
            Some(r) => {
                // The counts the rates reach, level by level (each rounds as `prune_level` does).
                let rate_of = |p: &str| r.overrides.get(p).copied().unwrap_or(r.default);
                for p in r.overrides.keys() {
                    if !per_layer.contains_key(p) {
                        return Err(Error::Config {
                            field: "lottery.layer_rates".into(),
                            message: format!(
                                "`{p}` is not a prunable parameter ({})",
                                per_layer.keys().cloned().collect::<Vec<_>>().join(", ")
                            ),
                        });
                    }
                }
                let mut kept: usize = 0;
                for (p, &n) in &per_layer {
                    let mut k = n;
                    for _ in 0..levels {
                        k -= ((rate_of(p) * k as f64).round() as usize).min(k);
                    }
                    kept += k;
                }
                let total: usize = per_layer.values().sum();
                let reached = 1.0 - kept as f64 / total.max(1) as f64;
                if (reached - s).abs() > 5e-5 {
                    return Err(Error::Config {
                        field: "sparsity".into(),
                        message: format!(
                            "the per-layer rates reach {reached:.4} after {levels} levels, not \
                             {s}: set sparsity = {reached:.4}"
                        ),
                    });
                }
                PruneRate::PerLayer {
                    default: r.default,
                    overrides: r.overrides.clone(),
                }
            }
        };
        let imp_cfg = ImpConfig {
            rate,
            levels,
            min_density: None,
            rewind: Rewind::epochs(cfg.lottery.rewind_epoch, spe),
            retrain: match cfg.lottery.retrain {
                RetrainName::WeightRewinding => Retrain::WeightRewinding,
                RetrainName::FineTuning => Retrain::FineTuning {
                    lr: cfg.lottery.fine_tune_lr,
                },
                RetrainName::LrRewinding => Retrain::LrRewinding,
            },
            structure: cfg.structure,
            baselines: if cfg.lottery.baselines {
                vec![Variant::RandomReinit, Variant::RandomPruning]
            } else {
                Vec::new()
            },
            seed,
        };
        let imp = Imp::new(imp_cfg, &imp_dir, filter, method::rule_of(cfg), &init);
        let resumed = imp.finished_levels() as u64;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let bar = Progress::new(levels as u64 + 1, "levels", self.progress);
        let t0 = Instant::now();
        let get = |m: &LevelMetrics, v: Variant| m.accuracy.get(&v).copied();
        let metrics = imp.run(&mut trainer, |m| {
            bar.set(m.level as u64 + 1);
            bar.println(&format!(
                "{name}  level {:>2}/{levels}  density {:.4}  ticket {:.2}%{}",
                m.level,
                m.density,
                get(m, Variant::Ticket).unwrap_or(f64::NAN),
                match (
                    get(m, Variant::RandomReinit),
                    get(m, Variant::RandomPruning)
                ) {
                    (Some(a), Some(b)) => format!("  reinit {a:.2}%  random {b:.2}%"),
                    _ => String::new(),
                }
            ));
        })?;
        bar.finish();
        let rows: Vec<LevelRow> = metrics
            .iter()
            .map(|m| LevelRow {
                level: m.level,
                density: m.density,
                ticket: get(m, Variant::Ticket).unwrap_or(f64::NAN),
                random_reinit: get(m, Variant::RandomReinit),
                random_pruning: get(m, Variant::RandomPruning),
            })
            .collect();
        rundir::write_levels(dir, &rows)?;
        let instability = match &cfg.lottery.lmc {
            Some(l) => {
                if l.level >= metrics.len() {
                    return Err(Error::Config {
                        field: "lottery.lmc.level".into(),
                        message: format!(
                            "level {} is beyond the {} levels",
                            l.level,
                            metrics.len() - 1
                        ),
                    });
                }
                let report =
                    imp.instability(l.level, &mut trainer, (l.seeds[0], l.seeds[1]), l.points)?;
                write_atomic(&dir.join("lmc.json"), &rundir::json(&report))?;
                Some(report.instability)
            }
            None => None,
        };
        let last = metrics.last().ok_or_else(|| Error::RunDir {
            path: imp_dir.clone(),
            message: "IMP finished no level".into(),
        })?;
        // FLOPs of the whole schedule: level 0 trains the dense net for the budget, every
        // pruned level its ticket from the rewind point (baselines are not counted), against
        // one dense training.
        let total = method::total_steps(cfg, spe)?;
        let kept_of = |m: &LevelMetrics| -> Vec<usize> {
            let counts: LayerCounts = m
                .layer_nnz
                .iter()
                .map(|(p, n)| (p.clone(), (*n, per_layer.get(p).copied().unwrap_or(*n))))
                .collect();
            kept_in(flop_model, &counts)
        };
        let mut flops = FlopCount::default();
        for m in &metrics {
            let steps = if m.level == 0 {
                total
            } else {
                total.saturating_sub(Rewind::epochs(cfg.lottery.rewind_epoch, spe).step())
            };
            flops.add_steps(flop_model, &kept_of(m), steps);
        }
        let layer_density: BTreeMap<String, f64> = last
            .layer_nnz
            .iter()
            .map(|(p, n)| {
                (
                    p.clone(),
                    *n as f64 / per_layer.get(p).copied().unwrap_or(1).max(1) as f64,
                )
            })
            .collect();
        let mut series = vec![Series::new(
            "winning ticket",
            rows.iter().map(|r| (100.0 * r.density, r.ticket)).collect(),
        )];
        for (label, f) in [
            (
                "random reinit",
                (|r: &LevelRow| r.random_reinit) as fn(&LevelRow) -> Option<f64>,
            ),
            ("random pruning", |r: &LevelRow| r.random_pruning),
        ] {
            let pts: Vec<(f64, f64)> = rows
                .iter()
                .filter_map(|r| {
                    f(r).or((r.level == 0).then_some(r.ticket))
                        .map(|a| (100.0 * r.density, a))
                })
                .collect();
            if pts.len() > 1 {
                series.push(Series::new(label, pts));
            }
        }
        line_chart(
            &dir.join("plots").join("accuracy_vs_density"),
            "IMP: test accuracy per level",
            "weights remaining (%, log scale)",
            "test accuracy (%)",
            &series,
            true,
        )?;
        let result = RunResult {
            name,
            method: cfg.method,
            sparsity: cfg.effective_sparsity(),
            seed,
            test_accuracy: rows.last().map_or(f64::NAN, |r| r.ticket),
            density: last.density,
            nnz: last.nnz,
            prunable: per_layer.values().sum(),
            layer_density,
            epochs: cfg.epochs,
            seconds: t0.elapsed().as_secs_f64(),
            curve: Vec::new(),
            levels: Some(rows),
            instability,
            train_flops: Some(flops.ratio_to(3.0 * dense_forward_macs(flop_model) * total as f64)),
            inference_flops: Some(
                forward_macs(flop_model, &kept_of(last)) / dense_forward_macs(flop_model),
            ),
        };
        self.run_plots(dir, &result, &[])?;
        for (from, to) in [
            (imp.masks_path(last.level), "masks.bsp"),
            (imp.final_model_path(last.level), "model.bpk"),
        ] {
            write_atomic(&dir.join(to), &read(&from)?)?;
        }
        Ok((result, (resumed > 0).then_some(resumed)))
    }
}
