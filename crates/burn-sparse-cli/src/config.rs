//! The experiment config: one struct, read from TOML or JSON, overridden by flags, validated
//! with errors that name the field, and hashed into the run directory's name.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, MAX_TEXT_FILE, Result, read_at_most};
use burn_sparse::data::Augmentation;

/// The reference models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ModelName {
    /// LeNet-300-100 (fully connected).
    Lenet300,
    /// LeNet-5 (Caffe variant).
    Lenet5,
    /// Conv-2 of the LTH paper.
    Conv2,
    /// Conv-4 of the LTH paper.
    Conv4,
    /// Conv-6 of the LTH paper.
    Conv6,
    /// ResNet-20 (16/32/64 channels, 3 blocks per stage, batch norm).
    Resnet20,
    /// A small transformer classifier reading each image row as a token (2 layers, d 64).
    VitTiny,
}

/// The datasets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetName {
    /// MNIST (fetched if missing, checksummed).
    Mnist,
    /// Fashion-MNIST (fetched if missing, checksummed).
    FashionMnist,
    /// CIFAR-10, binary version, from `dir/cifar-10-batches-bin`.
    Cifar10,
    /// A small generated 4-class 1x8x8 problem for tests and smoke runs (no files).
    Synthetic,
}

/// The methods.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    PartialOrd,
    Ord,
    Hash,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum MethodName {
    /// Dense training (sparsity is ignored).
    Dense,
    /// |w| at initialisation, fixed mask.
    Magnitude,
    /// Random scores at initialisation, fixed mask.
    Random,
    /// SNIP at initialisation, fixed mask.
    Snip,
    /// GraSP at initialisation, fixed mask.
    Grasp,
    /// SynFlow at initialisation (iterative, data-free), fixed mask.
    Synflow,
    /// A fixed random mask from the distribution (DST's static baseline).
    Static,
    /// SET.
    Set,
    /// RigL.
    Rigl,
    /// SNFS.
    Snfs,
    /// Gradual magnitude pruning during training (Zhu & Gupta), dense to `sparsity`.
    Gmp,
    /// Lottery ticket by IMP with rewinding.
    Lottery,
}

impl MethodName {
    /// Every method, in table order.
    pub const ALL: [MethodName; 12] = [
        MethodName::Dense,
        MethodName::Magnitude,
        MethodName::Random,
        MethodName::Snip,
        MethodName::Grasp,
        MethodName::Synflow,
        MethodName::Static,
        MethodName::Set,
        MethodName::Rigl,
        MethodName::Snfs,
        MethodName::Gmp,
        MethodName::Lottery,
    ];

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MethodName::Dense => "dense",
            MethodName::Magnitude => "magnitude",
            MethodName::Random => "random",
            MethodName::Snip => "snip",
            MethodName::Grasp => "grasp",
            MethodName::Synflow => "synflow",
            MethodName::Static => "static",
            MethodName::Set => "set",
            MethodName::Rigl => "rigl",
            MethodName::Snfs => "snfs",
            MethodName::Gmp => "gmp",
            MethodName::Lottery => "lottery",
        }
    }

    /// The position in [`MethodName::ALL`] (a stable colour in plots).
    pub fn index(self) -> usize {
        MethodName::ALL.iter().position(|&m| m == self).unwrap_or(0)
    }

    /// Whether the mask changes during training (SET, RigL, SNFS, GMP).
    pub fn is_dynamic(self) -> bool {
        matches!(
            self,
            MethodName::Set | MethodName::Rigl | MethodName::Snfs | MethodName::Gmp
        )
    }

    /// Whether the mask comes from a score at initialisation.
    pub fn is_saliency(self) -> bool {
        matches!(
            self,
            MethodName::Magnitude
                | MethodName::Random
                | MethodName::Snip
                | MethodName::Grasp
                | MethodName::Synflow
        )
    }
}

impl std::fmt::Display for MethodName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the sparsity is spread over layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DistributionName {
    /// One ranking over all layers (saliency methods, GMP and the lottery only).
    Global,
    /// The same sparsity in every layer.
    Uniform,
    /// Erdős–Rényi.
    Er,
    /// Erdős–Rényi-Kernel.
    Erk,
}

/// How the prunable layers store and compute their weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ComputeName {
    /// Masks on dense weights: zeros stored and multiplied (every model, method and backend).
    #[default]
    Masked,
    /// Truly sparse layers (`SparseMlp`): only the non-zeros are stored and, on the CPU
    /// (flex), computed; LeNet-300-100 with a fixed-nnz method (static, SET, RigL, or a mask
    /// from magnitude, random, SNIP, GraSP or SynFlow).
    Sparse,
}

impl ComputeName {
    /// The default, left out of the config's JSON so the hashes of configs written before
    /// this field existed do not change.
    pub fn is_masked(&self) -> bool {
        *self == ComputeName::Masked
    }
}

/// The dataset section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatasetConfig {
    /// Which dataset.
    pub name: DatasetName,
    /// Where its files live (not part of the run hash).
    pub dir: String,
    /// Use only the first N training images (None: all).
    pub train_limit: Option<usize>,
    /// Use only the first N test images (None: all).
    pub test_limit: Option<usize>,
    /// Training-image augmentation (`max_shift` pixels of random translation, `hflip`); none by
    /// default, and then left out of the run hash so older run directories still resume.
    #[serde(skip_serializing_if = "Augmentation::is_none")]
    pub augment: Augmentation,
}

impl Default for DatasetConfig {
    fn default() -> Self {
        Self {
            name: DatasetName::Mnist,
            dir: "data".into(),
            train_limit: None,
            test_limit: None,
            augment: Augmentation::none(),
        }
    }
}

/// The optimizer kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    /// SGD with momentum (dampening 0, as PyTorch).
    Sgd,
    /// Adam (weight decay as L2).
    Adam,
    /// AdamW (decoupled weight decay).
    Adamw,
}

/// The learning-rate schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LrSchedule {
    /// Cosine decay from `lr` to 0 over the run.
    Cosine,
    /// Constant.
    Constant,
}

/// The optimizer section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    /// SGD, Adam or AdamW.
    pub kind: OptimizerKind,
    /// Base learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// SGD Nesterov momentum.
    pub nesterov: bool,
    /// Weight decay.
    pub weight_decay: f64,
    /// Batch size.
    pub batch_size: usize,
    /// Learning-rate schedule.
    pub lr_schedule: LrSchedule,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            kind: OptimizerKind::Sgd,
            lr: 0.1,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 5e-4,
            batch_size: 100,
            lr_schedule: LrSchedule::Cosine,
        }
    }
}

/// The topology schedule of the dynamic methods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// RigL's update interval and GMP's prune interval in steps (SET and SNFS update once per
    /// epoch).
    pub delta_t: u64,
    /// RigL stops updating, and GMP reaches `sparsity`, at this fraction of training.
    pub end_fraction: f64,
    /// Initial drop fraction (None: the method's reference, RigL/SET 0.3, SNFS 0.5).
    pub drop_fraction: Option<f64>,
    /// GMP: the fraction of training at which pruning begins (default 0.1; left out of the run
    /// hash at its default, as the fields below, so older run directories still resume).
    #[serde(skip_serializing_if = "is_default_begin")]
    pub begin_fraction: f64,
    /// GMP: the sparsity it starts from, a magnitude mask at initialisation (default 0).
    #[serde(skip_serializing_if = "is_zero")]
    pub initial_sparsity: f64,
    /// RigL only: grow by the mean gradient of the last `k` batches before each update
    /// (default 1: off; left out of the run hash then).
    #[serde(skip_serializing_if = "is_one")]
    pub grad_accumulation: u64,
    /// The drop-fraction schedule instead of the method's (RigL and SNFS `cosine`, SET
    /// `constant`), starting at `drop_fraction` (or the method's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop_fraction_kind: Option<DropKind>,
    /// `exponential`'s factor per update.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop_fraction_decay: Option<f64>,
    /// Grown weights start Normal(0, std) instead of 0 (SET, RigL, SNFS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grow_init_std: Option<f64>,
    /// SET and RigL: no weight update on update steps (TF RigL).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skip_weight_update: bool,
}

/// The drop-fraction schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DropKind {
    /// The same fraction at every update.
    Constant,
    /// RigL's cosine decay to 0 at the end of the update window.
    Cosine,
    /// Linear decay to 0.
    Linear,
    /// Multiplied by `drop_fraction_decay` at every update.
    Exponential,
}

/// Which parameters are prunable (left out of the run hash at its defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    /// Only these parameter paths (`fc1.weight` ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
    /// Only paths matching this regex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// Leave out paths matching this regex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclude_regex: Option<String>,
    /// The smallest prunable rank (2: weights of Linear and Conv, not biases).
    pub min_rank: usize,
    /// Keep the first prunable layer dense (RigL's `first_layer_sparsity = 0`).
    pub first_dense: bool,
    /// Keep the last prunable layer dense.
    pub last_dense: bool,
    /// Prune embedding tables too (dense by default, as every norm).
    pub embeddings: bool,
    /// Also keep the weights of these module types dense (`"Conv2d"` ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dense_types: Vec<String>,
    /// Only the weights of these module types (`"Linear"` ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
}

impl Default for FilterConfig {
    fn default() -> Self {
        Self {
            names: None,
            regex: None,
            exclude_regex: None,
            min_rank: 2,
            first_dense: false,
            last_dense: false,
            embeddings: false,
            dense_types: Vec::new(),
            types: None,
        }
    }
}

impl FilterConfig {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The library's filter.
    ///
    /// # Errors
    /// [`Error::Config`] naming `filter.regex` or `filter.exclude_regex` for a bad pattern.
    pub fn filter(&self) -> Result<burn_sparse::mask::ParamFilter> {
        let mut f = burn_sparse::mask::ParamFilter::new()
            .with_min_rank(self.min_rank)
            .keep_first_dense(self.first_dense)
            .keep_last_dense(self.last_dense)
            .with_embeddings(self.embeddings)
            .excluding_types(self.dense_types.clone());
        if let Some(t) = &self.types {
            f = f.with_types(t.clone());
        }
        if let Some(n) = &self.names {
            f = f.with_names(n.clone());
        }
        let re_err = |field: &str| {
            let field = field.to_string();
            move |e: burn_sparse::mask::MaskError| Error::Config {
                field: field.clone(),
                message: e.to_string(),
            }
        };
        if let Some(r) = &self.regex {
            f = f.with_regex(r).map_err(re_err("filter.regex"))?;
        }
        if let Some(r) = &self.exclude_regex {
            f = f
                .excluding_regex(r)
                .map_err(re_err("filter.exclude_regex"))?;
        }
        Ok(f)
    }
}

fn is_one(v: &u64) -> bool {
    *v == 1
}

fn is_default_begin(v: &f64) -> bool {
    *v == 0.1
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            delta_t: 100,
            end_fraction: 0.75,
            drop_fraction: None,
            begin_fraction: 0.1,
            initial_sparsity: 0.0,
            grad_accumulation: 1,
            drop_fraction_kind: None,
            drop_fraction_decay: None,
            grow_init_std: None,
            skip_weight_update: false,
        }
    }
}

/// The saliency section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SaliencyConfig {
    /// Pruning rounds on an exponential schedule (None: SynFlow 100, others 1).
    pub rounds: Option<usize>,
    /// SNIP: batches (of `optimizer.batch_size`) averaged.
    pub snip_batches: usize,
    /// GraSP: images per class.
    pub grasp_per_class: usize,
    /// GraSP: softmax temperature.
    pub grasp_temperature: f64,
    /// Let a layer lose every weight (otherwise that is an error naming the layer).
    pub allow_empty_layers: bool,
}

impl Default for SaliencyConfig {
    fn default() -> Self {
        Self {
            rounds: None,
            snip_batches: 1,
            grasp_per_class: 10,
            grasp_temperature: 200.0,
            allow_empty_layers: false,
        }
    }
}

/// The lottery section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[derive(Default)]
pub struct LotteryConfig {
    /// Pruning levels to reach `sparsity` (None: as many 20% levels as it takes). The
    /// per-level rate is set so that the last level lands exactly on `sparsity`.
    pub levels: Option<usize>,
    /// Rewind to the end of this epoch (0: to init).
    pub rewind_epoch: u64,
    /// Also train the random-reinit and random-pruning baselines at every level.
    pub baselines: bool,
    /// How pruned levels retrain (left out of the run hash at its default, as `fine_tune_lr`,
    /// so older run directories still resume).
    #[serde(skip_serializing_if = "RetrainName::is_default")]
    pub retrain: RetrainName,
    /// `fine-tuning`'s constant learning rate (None: the schedule's last, near 0 for `cosine`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fine_tune_lr: Option<f64>,
    /// Linear mode connectivity of one level's ticket once IMP is done (`lmc.json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lmc: Option<LmcConfig>,
    /// Per-layer prune rates per level instead of one global ranking (the LTH paper's: 0.2,
    /// and 0.1 for the output layer). Needs `levels`; `sparsity` must be what the rates reach
    /// (the error says the value).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer_rates: Option<LayerRates>,
}

/// Per-layer IMP rates: `default` for every prunable layer, `overrides` by parameter path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerRates {
    /// The rate of layers not named in `overrides`, in `[0, 1)`.
    pub default: f64,
    /// Rates by parameter path (`fc3.weight = 0.1`).
    #[serde(default)]
    pub overrides: std::collections::BTreeMap<String, f64>,
}

/// Linear mode connectivity (Frankle et al. 2020): from the rewind point, train two copies of
/// `level`'s ticket with the data orders of `seeds`, and evaluate `points` interpolations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LmcConfig {
    /// The IMP level whose ticket is tested (0: the dense network).
    pub level: usize,
    /// Interpolation points, the two ends included.
    pub points: usize,
    /// The two data orders.
    pub seeds: [u64; 2],
}

impl Default for LmcConfig {
    fn default() -> Self {
        Self {
            level: 1,
            points: 11,
            seeds: [101, 202],
        }
    }
}

/// How IMP retrains after each prune (Renda et al. 2020).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetrainName {
    /// Survivors reset to the rewind point, the schedule replayed from it (LTH).
    #[default]
    WeightRewinding,
    /// Keep the trained weights, train at a constant rate (`fine_tune_lr`).
    FineTuning,
    /// Keep the trained weights, replay the schedule from the rewind point.
    LrRewinding,
}

impl RetrainName {
    fn is_default(&self) -> bool {
        *self == RetrainName::WeightRewinding
    }
}

/// One experiment: a model, a dataset, a method at a sparsity, a recipe, seeds and a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExperimentConfig {
    /// The model.
    pub model: ModelName,
    /// The data.
    pub dataset: DatasetConfig,
    /// The method.
    pub method: MethodName,
    /// Fraction of prunable weights removed, in `[0, 1)` (ignored by `dense`).
    pub sparsity: f64,
    /// Layer distribution (None: the method's reference: global for saliency and lottery, ER
    /// for SET, uniform for GMP, ERK otherwise).
    pub distribution: Option<DistributionName>,
    /// Dynamic methods' schedule.
    pub schedule: ScheduleConfig,
    /// Optimizer and batch size.
    pub optimizer: OptimizerConfig,
    /// Training epochs (per level for the lottery).
    pub epochs: u64,
    /// One run per seed.
    pub seeds: Vec<u64>,
    /// Backend: `flex` (CPU), `ndarray`, `wgpu` or `cuda` (those compiled in).
    pub device: String,
    /// Saliency methods' options.
    pub saliency: SaliencyConfig,
    /// Lottery options.
    pub lottery: LotteryConfig,
    /// `masked` (the default) or `sparse` (truly sparse layers; see [`ComputeName`]).
    #[serde(skip_serializing_if = "ComputeName::is_masked")]
    pub compute: ComputeName,
    /// Rescale the initial weights to each unit's sparse fan-in (Evci et al. 2022; default
    /// false, then left out of the run hash).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sparse_init: bool,
    /// The sparsity type: `{ kind = "unstructured" }` (the default, left out of the run
    /// hash), `{ kind = "n_by_m", n = 2, m = 4 }` or `{ kind = "block", rows = 4, cols = 4 }`.
    #[serde(skip_serializing_if = "is_unstructured")]
    pub structure: burn_sparse::mask::Structure,
    /// Which parameters are prunable (default: every weight of rank >= 2).
    #[serde(skip_serializing_if = "FilterConfig::is_default")]
    pub filter: FilterConfig,
    /// A sparsity for every prunable layer, by path (the custom distribution), instead of
    /// `distribution`; `sparsity` must be the total it reaches (the error says the value).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub layer_sparsity: std::collections::BTreeMap<String, f64>,
    /// The first prunable layer's sparsity (RigL's `first_layer_sparsity`): it leaves the
    /// distribution's sums, so the other layers reach `sparsity` among themselves. Needs a
    /// per-layer `distribution`; 0 keeps the layer dense but masked (`filter.first_dense`
    /// leaves it out of the prunable set instead).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_layer_sparsity: Option<f64>,
    /// The last prunable layer's sparsity (RigL's `last_layer_sparsity`), as
    /// `first_layer_sparsity`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_layer_sparsity: Option<f64>,
}

fn is_unstructured(s: &burn_sparse::mask::Structure) -> bool {
    *s == burn_sparse::mask::Structure::Unstructured
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        Self {
            model: ModelName::Lenet300,
            dataset: DatasetConfig::default(),
            method: MethodName::Rigl,
            sparsity: 0.9,
            distribution: None,
            schedule: ScheduleConfig::default(),
            optimizer: OptimizerConfig::default(),
            epochs: 10,
            seeds: vec![0],
            device: "flex".into(),
            saliency: SaliencyConfig::default(),
            lottery: LotteryConfig::default(),
            compute: ComputeName::Masked,
            sparse_init: false,
            structure: burn_sparse::mask::Structure::Unstructured,
            filter: FilterConfig::default(),
            layer_sparsity: Default::default(),
            first_layer_sparsity: None,
            last_layer_sparsity: None,
        }
    }
}

/// The format of a config file, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.toml`
    Toml,
    /// `.json`
    Json,
}

impl Format {
    /// From a path's extension.
    ///
    /// # Errors
    /// [`Error::Config`] for another extension.
    pub fn of(path: &Path) -> Result<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => Ok(Format::Toml),
            Some("json") => Ok(Format::Json),
            _ => Err(Error::Config {
                field: "<file>".into(),
                message: format!("`{}` is neither .toml nor .json", path.display()),
            }),
        }
    }
}

/// Parse config text into a JSON value (TOML is transcoded), so overrides and the typed
/// decoding share one path.
///
/// # Errors
/// [`Error::Parse`] with the position.
pub fn parse_value(text: &str, format: Format, origin: &str) -> Result<serde_json::Value> {
    match format {
        Format::Json => serde_json::from_str(text).map_err(|e| Error::Parse {
            origin: origin.into(),
            message: e.to_string(),
        }),
        Format::Toml => {
            let v: toml::Value = toml::from_str(text).map_err(|e| Error::Parse {
                origin: origin.into(),
                message: e.to_string(),
            })?;
            // JSON has no nan or inf: transcoded, they would read as `null`.
            if let Some(field) = non_finite(&v) {
                return Err(Error::Config {
                    field,
                    message: "is not a finite number (nan and inf are not accepted)".into(),
                });
            }
            serde_json::to_value(v).map_err(|e| Error::Parse {
                origin: origin.into(),
                message: e.to_string(),
            })
        }
    }
}

/// The path of the first nan or inf in a TOML value (`optimizer.lr`, `grid.sparsities[1]`).
/// Iterative, so no nesting depth can exhaust the stack.
fn non_finite(v: &toml::Value) -> Option<String> {
    let mut stack: Vec<(String, &toml::Value)> = vec![(String::new(), v)];
    while let Some((path, v)) = stack.pop() {
        match v {
            toml::Value::Float(x) if !x.is_finite() => {
                return Some(if path.is_empty() {
                    "<root>".into()
                } else {
                    path
                });
            }
            toml::Value::Table(t) => {
                for (k, x) in t.iter().rev() {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    stack.push((p, x));
                }
            }
            toml::Value::Array(a) => {
                for (i, x) in a.iter().enumerate().rev() {
                    stack.push((format!("{path}[{i}]"), x));
                }
            }
            _ => {}
        }
    }
    None
}

/// The most segments an override path may have (the config nests three tables deep).
pub const MAX_PATH_SEGMENTS: usize = 8;

/// Decode a value into `T`; a failure names the field (`optimizer.lr`).
///
/// # Errors
/// [`Error::Config`].
pub fn decode<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        Error::Config {
            field: if path == "." { "<root>".into() } else { path },
            message: e.into_inner().to_string(),
        }
    })
}

/// Set `path` (`optimizer.lr`) in `value` to `raw`, parsed as JSON when it parses (numbers,
/// booleans, arrays) and as a string otherwise.
///
/// # Errors
/// [`Error::Config`] when the path crosses a non-table.
pub fn set_path(value: &mut serde_json::Value, path: &str, raw: &str) -> Result<()> {
    let parsed: serde_json::Value =
        serde_json::from_str(raw).unwrap_or_else(|_| serde_json::Value::String(raw.to_string()));
    let mut cur = value;
    let parts: Vec<&str> = path.split('.').collect();
    if parts.len() > MAX_PATH_SEGMENTS {
        return Err(Error::Config {
            field: path.into(),
            message: format!(
                "has {} segments; no config field is nested more than {MAX_PATH_SEGMENTS} deep",
                parts.len()
            ),
        });
    }
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            return Err(Error::Config {
                field: path.into(),
                message: "empty path segment".into(),
            });
        }
        let obj = match cur {
            serde_json::Value::Object(o) => o,
            serde_json::Value::Null => {
                *cur = serde_json::Value::Object(Default::default());
                match cur {
                    serde_json::Value::Object(o) => o,
                    _ => unreachable!("just set"),
                }
            }
            _ => {
                return Err(Error::Config {
                    field: parts[..i].join("."),
                    message: "is not a table, so it has no fields to set".into(),
                });
            }
        };
        if i + 1 == parts.len() {
            obj.insert((*part).to_string(), parsed);
            return Ok(());
        }
        cur = obj
            .entry((*part).to_string())
            .or_insert(serde_json::Value::Object(Default::default()));
    }
    Ok(())
}

/// A value in its config spelling (`rigl`, `fashion-mnist`, `cosine`), as serde writes it.
pub fn spelling<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// The first value that occurs twice in `xs`.
pub fn first_duplicate<T: PartialEq + Copy>(xs: &[T]) -> Option<T> {
    xs.iter()
        .enumerate()
        .find(|(i, x)| xs[..*i].contains(x))
        .map(|(_, x)| *x)
}

/// Read a config file of any kind `T` (experiment or sweep): parse by extension, apply the
/// overrides, decode (errors name the field) and `validate`.
///
/// # Errors
/// [`Error::Io`], [`Error::Parse`], [`Error::Config`].
pub fn load_file<T: serde::de::DeserializeOwned>(
    path: &Path,
    overrides: &[(String, String)],
    validate: fn(&T) -> Result<()>,
) -> Result<T> {
    let bytes = read_at_most(path, MAX_TEXT_FILE)?;
    let text = String::from_utf8(bytes).map_err(|e| Error::Parse {
        origin: path.display().to_string(),
        message: format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ),
    })?;
    let origin = path.display().to_string();
    load_text(&text, Format::of(path)?, &origin, overrides, validate)
}

/// As [`load_file`], from text.
///
/// # Errors
/// [`Error::Parse`], [`Error::Config`].
pub fn load_text<T: serde::de::DeserializeOwned>(
    text: &str,
    format: Format,
    origin: &str,
    overrides: &[(String, String)],
    validate: fn(&T) -> Result<()>,
) -> Result<T> {
    let mut v = parse_value(text, format, origin)?;
    for (k, val) in overrides {
        set_path(&mut v, k, val)?;
    }
    let c: T = decode(v)?;
    validate(&c)?;
    Ok(c)
}

impl ExperimentConfig {
    /// Read a `.toml` or `.json` file, apply `overrides` (`path=value`), decode and validate.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Parse`], or [`Error::Config`] naming the field.
    pub fn load(path: &Path, overrides: &[(String, String)]) -> Result<Self> {
        load_file(path, overrides, Self::validate)
    }

    /// As [`ExperimentConfig::load`], from text.
    ///
    /// # Errors
    /// As [`ExperimentConfig::load`].
    pub fn from_text(
        text: &str,
        format: Format,
        origin: &str,
        overrides: &[(String, String)],
    ) -> Result<Self> {
        load_text(text, format, origin, overrides, Self::validate)
    }

    /// The config as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// The default config as TOML, with every field the defaults leave out (optional settings,
    /// and those kept out of the run hash at their defaults) as a commented example line in its
    /// table: what `burn-sparse config` prints.
    pub fn annotated_default_toml() -> String {
        // Compact TOML: one line per key (arrays inline), so each can be commented alone.
        let default = toml::to_string(&Self::default()).unwrap_or_default();
        let full = toml::to_string(&Self::example_of_every_field()).unwrap_or_default();
        // (table, key) of every line the defaults print.
        let mut present = std::collections::BTreeSet::new();
        let mut table = String::new();
        for line in default.lines() {
            if let Some(t) = line.strip_prefix('[') {
                table = t.trim_end_matches(']').to_string();
            } else if let Some((k, _)) = line.split_once(" = ") {
                present.insert((table.clone(), k.to_string()));
            }
        }
        let mut out = String::from(
            "# burn-sparse experiment config: the defaults. Commented lines are optional \
             settings, shown with an example value.\n",
        );
        let mut table = String::new();
        let mut default_tables: std::collections::BTreeSet<String> =
            present.iter().map(|(t, _)| t.clone()).collect();
        default_tables.insert(String::new());
        for line in full.lines() {
            if let Some(t) = line.strip_prefix('[') {
                table = t.trim_end_matches(']').to_string();
                if default_tables.contains(&table) {
                    out.push_str(line);
                } else {
                    out.push_str("# ");
                    out.push_str(line);
                }
            } else if let Some((k, _)) = line.split_once(" = ") {
                if present.contains(&(table.clone(), k.to_string())) {
                    // The default's own value.
                    let d = default
                        .lines()
                        .scan(String::new(), |t, l| {
                            if let Some(x) = l.strip_prefix('[') {
                                *t = x.trim_end_matches(']').to_string();
                            }
                            Some((t.clone(), l))
                        })
                        .find(|(t, l)| {
                            *t == table && l.split_once(" = ").is_some_and(|(dk, _)| dk == k)
                        })
                        .map(|(_, l)| l.to_string())
                        .unwrap_or_else(|| line.to_string());
                    out.push_str(&d);
                } else {
                    out.push_str("# ");
                    out.push_str(line);
                }
            } else {
                out.push_str(line);
            }
            out.push('\n');
        }
        out
    }

    /// A config with every optional field set to an example value (not a sensible run: it
    /// only shows the fields).
    fn example_of_every_field() -> Self {
        let d = Self::default();
        Self {
            distribution: Some(DistributionName::Erk),
            compute: ComputeName::Sparse,
            sparse_init: true,
            structure: burn_sparse::mask::Structure::NByM { n: 2, m: 4 },
            layer_sparsity: [
                ("fc1.weight".to_string(), 0.95),
                ("fc2.weight".to_string(), 0.9),
                ("fc3.weight".to_string(), 0.5),
            ]
            .into_iter()
            .collect(),
            first_layer_sparsity: Some(0.8),
            last_layer_sparsity: Some(0.0),
            filter: FilterConfig {
                names: Some(vec!["fc1.weight".into(), "fc2.weight".into()]),
                regex: Some("^fc".into()),
                exclude_regex: Some("fc3".into()),
                min_rank: 2,
                first_dense: true,
                last_dense: true,
                embeddings: true,
                dense_types: vec!["Conv2d".into()],
                types: Some(vec!["Linear".into()]),
            },
            dataset: DatasetConfig {
                train_limit: Some(10_000),
                test_limit: Some(2_000),
                augment: Augmentation {
                    max_shift: 1,
                    hflip: true,
                },
                ..d.dataset.clone()
            },
            schedule: ScheduleConfig {
                drop_fraction: Some(0.3),
                begin_fraction: 0.2,
                initial_sparsity: 0.5,
                grad_accumulation: 4,
                drop_fraction_kind: Some(DropKind::Exponential),
                drop_fraction_decay: Some(0.9),
                grow_init_std: Some(0.01),
                skip_weight_update: true,
                ..d.schedule.clone()
            },
            saliency: SaliencyConfig {
                rounds: Some(100),
                ..d.saliency.clone()
            },
            lottery: LotteryConfig {
                levels: Some(10),
                retrain: RetrainName::FineTuning,
                fine_tune_lr: Some(0.001),
                lmc: Some(LmcConfig::default()),
                layer_rates: Some(LayerRates {
                    default: 0.2,
                    overrides: [("fc3.weight".to_string(), 0.1)].into_iter().collect(),
                }),
                ..d.lottery.clone()
            },
            ..d
        }
    }

    /// The config as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Check ranges and combinations; the error names the field.
    ///
    /// # Errors
    /// [`Error::Config`].
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, message: String| {
            Err(Error::Config {
                field: field.into(),
                message,
            })
        };
        if !(self.sparsity.is_finite() && (0.0..1.0).contains(&self.sparsity)) {
            return bad("sparsity", format!("{} is outside [0, 1)", self.sparsity));
        }
        if self.method != MethodName::Dense && self.sparsity == 0.0 {
            return bad(
                "sparsity",
                format!("method `{}` needs a sparsity above 0", self.method),
            );
        }
        if self.dataset.augment.max_shift >= 16 {
            return bad(
                "dataset.augment.max_shift",
                format!(
                    "{} pixels would move the 28x28 or 32x32 images out of the frame (at most 15)",
                    self.dataset.augment.max_shift
                ),
            );
        }
        if self.method == MethodName::Lottery && !self.dataset.augment.is_none() {
            return bad(
                "dataset.augment",
                "is not supported by the lottery runner yet (its IMP levels train by steps)".into(),
            );
        }
        if self.epochs == 0 {
            return bad("epochs", "must be at least 1".into());
        }
        if self.seeds.is_empty() {
            return bad("seeds", "needs at least one seed".into());
        }
        if let Some(d) = first_duplicate(&self.seeds) {
            return bad(
                "seeds",
                format!("seed {d} is listed twice (one run each; a repeat is no new sample)"),
            );
        }
        let o = &self.optimizer;
        if !(o.lr.is_finite() && o.lr > 0.0) {
            return bad("optimizer.lr", format!("{} is not a positive number", o.lr));
        }
        if o.batch_size == 0 {
            return bad("optimizer.batch_size", "must be at least 1".into());
        }
        if self.distribution == Some(DistributionName::Global)
            && ((self.method.is_dynamic() && self.method != MethodName::Gmp)
                || self.method == MethodName::Static)
        {
            return bad(
                "distribution",
                format!(
                    "`global` is for score-based masks; `{}` needs a per-layer distribution \
                     (erk, er, uniform)",
                    self.method
                ),
            );
        }
        if self.method != MethodName::Gmp {
            let sc = &self.schedule;
            for (field, set) in [
                (
                    "schedule.begin_fraction",
                    !is_default_begin(&sc.begin_fraction),
                ),
                ("schedule.initial_sparsity", !is_zero(&sc.initial_sparsity)),
            ] {
                if set {
                    return bad(
                        field,
                        format!("is a `gmp` setting; `{}` does not use it", self.method),
                    );
                }
            }
        }
        if self.saliency.rounds == Some(0) {
            return bad("saliency.rounds", "must be at least 1".into());
        }
        if self.saliency.snip_batches == 0 {
            return bad("saliency.snip_batches", "must be at least 1".into());
        }
        if self.saliency.grasp_per_class == 0 {
            return bad("saliency.grasp_per_class", "must be at least 1".into());
        }
        if !(self.saliency.grasp_temperature.is_finite() && self.saliency.grasp_temperature > 0.0) {
            return bad(
                "saliency.grasp_temperature",
                "must be a positive number".into(),
            );
        }
        self.filter.filter()?;
        if !self.layer_sparsity.is_empty() {
            if self.distribution.is_some() {
                return bad(
                    "layer_sparsity",
                    "replaces `distribution`: set one of the two".into(),
                );
            }
            if matches!(
                self.method,
                MethodName::Dense | MethodName::Lottery | MethodName::Gmp | MethodName::Snfs
            ) {
                return bad(
                    "layer_sparsity",
                    format!("`{}` does not take per-layer sparsities", self.method),
                );
            }
            for (k, &v) in &self.layer_sparsity {
                if !(v.is_finite() && (0.0..1.0).contains(&v)) {
                    return bad("layer_sparsity", format!("`{k}` = {v} is outside [0, 1)"));
                }
            }
        }
        for (field, pin, dense) in [
            (
                "first_layer_sparsity",
                self.first_layer_sparsity,
                self.filter.first_dense,
            ),
            (
                "last_layer_sparsity",
                self.last_layer_sparsity,
                self.filter.last_dense,
            ),
        ] {
            let Some(v) = pin else { continue };
            if !(v.is_finite() && (0.0..1.0).contains(&v)) {
                return bad(field, format!("{v} is outside [0, 1)"));
            }
            if dense {
                return bad(
                    field,
                    format!(
                        "`filter.{}_dense` already keeps that layer out of the prunable set: set one",
                        &field[..4]
                    ),
                );
            }
            if !self.layer_sparsity.is_empty() {
                return bad(
                    field,
                    "`layer_sparsity` already names every layer's sparsity".into(),
                );
            }
            if !is_unstructured(&self.structure) {
                return bad(
                    field,
                    "a structured sparsity sets every layer's count itself".into(),
                );
            }
            match (self.method, self.distribution) {
                (MethodName::Dense, _) => {
                    return bad(field, "`dense` has no sparsity to pin".into());
                }
                (MethodName::Lottery, _) => {
                    return bad(
                        field,
                        "the lottery prunes by rates: use `lottery.layer_rates`".into(),
                    );
                }
                (MethodName::Snfs, _) => {
                    return bad(
                        field,
                        "SNFS redistributes over all layers; it cannot pin one".into(),
                    );
                }
                (_, Some(DistributionName::Global)) => {
                    return bad(
                        field,
                        "a global ranking has no per-layer sparsity: set `distribution` to \
                         uniform, er or erk"
                            .into(),
                    );
                }
                (m, None) if !m.is_dynamic() => {
                    return bad(
                        field,
                        format!(
                            "`{m}` ranks globally by default: set `distribution` to uniform, er \
                             or erk"
                        ),
                    );
                }
                _ => {}
            }
        }
        if self.filter.min_rank == 0 {
            return bad("filter.min_rank", "must be at least 1".into());
        }
        if !self.filter.is_default() && self.compute == ComputeName::Sparse {
            return bad(
                "filter",
                "`compute = \"sparse\"` prunes LeNet-300-100's three weights: a filter needs \
                 `compute = \"masked\"`"
                    .into(),
            );
        }
        let sc = &self.schedule;
        if sc.drop_fraction_decay.is_some() && sc.drop_fraction_kind != Some(DropKind::Exponential)
        {
            return bad(
                "schedule.drop_fraction_decay",
                "is the factor of `drop_fraction_kind = \"exponential\"` only".into(),
            );
        }
        if let Some(std) = sc.grow_init_std
            && !(std.is_finite() && std >= 0.0)
        {
            return bad(
                "schedule.grow_init_std",
                format!("{std} is not a non-negative number"),
            );
        }
        if !is_unstructured(&self.structure) {
            if let Err(e) = self.structure.validate() {
                return bad("structure", e.to_string());
            }
            if self.method == MethodName::Dense {
                return bad("structure", "`dense` has no mask".into());
            }
            if self.method == MethodName::Lottery {
                if !matches!(self.structure, burn_sparse::mask::Structure::NByM { .. }) {
                    return bad(
                        "structure",
                        "the lottery prunes unstructured or N:M masks, not blocks".into(),
                    );
                }
                if self.lottery.layer_rates.is_some() {
                    return bad(
                        "lottery.layer_rates",
                        "N:M levels prune every group to the schedule's density: per-layer \
                         rates are for unstructured masks"
                            .into(),
                    );
                }
            }
            if let Some(s) = self.structure.implied_sparsity()
                && (s.value() - self.sparsity).abs() > 1e-9
            {
                return bad(
                    "sparsity",
                    format!(
                        "{:?} keeps a fixed share: set sparsity = {}",
                        self.structure,
                        s.value()
                    ),
                );
            }
        }
        if self.sparse_init && matches!(self.method, MethodName::Dense | MethodName::Lottery) {
            return bad(
                "sparse_init",
                format!(
                    "rescales the initial weights to a sparse mask's fan-in; `{}` starts dense",
                    self.method
                ),
            );
        }
        if let Some(lr) = self.lottery.fine_tune_lr {
            if self.lottery.retrain != RetrainName::FineTuning {
                return bad(
                    "lottery.fine_tune_lr",
                    "is the rate of `retrain = \"fine-tuning\"` only".into(),
                );
            }
            if !(lr.is_finite() && lr > 0.0) {
                return bad(
                    "lottery.fine_tune_lr",
                    format!("{lr} is not a positive number"),
                );
            }
        }
        if let Some(r) = &self.lottery.layer_rates {
            if self.method != MethodName::Lottery {
                return bad("lottery.layer_rates", "is a `lottery` option".into());
            }
            if self.lottery.levels.is_none() {
                return bad(
                    "lottery.levels",
                    "per-layer rates need the number of levels".into(),
                );
            }
            let named = r.overrides.iter().map(|(k, v)| (k.as_str(), *v));
            for (k, v) in std::iter::once(("default", r.default)).chain(named) {
                if !(v.is_finite() && (0.0..1.0).contains(&v)) {
                    return bad(
                        "lottery.layer_rates",
                        format!("the rate of `{k}`, {v}, is outside [0, 1)"),
                    );
                }
            }
        }
        if let Some(l) = &self.lottery.lmc {
            if self.method != MethodName::Lottery {
                return bad("lottery.lmc", "is a `lottery` option".into());
            }
            if l.points < 2 {
                return bad(
                    "lottery.lmc.points",
                    "needs the two ends: at least 2".into(),
                );
            }
            if l.seeds[0] == l.seeds[1] {
                return bad(
                    "lottery.lmc.seeds",
                    "two copies with the same data order are the same network".into(),
                );
            }
            if let Some(levels) = self.lottery.levels
                && l.level > levels
            {
                return bad(
                    "lottery.lmc.level",
                    format!("level {} is beyond the {levels} levels", l.level),
                );
            }
        }
        if self.lottery.levels == Some(0) {
            return bad("lottery.levels", "must be at least 1".into());
        }
        if self.method == MethodName::Lottery && self.lottery.rewind_epoch >= self.epochs {
            return bad(
                "lottery.rewind_epoch",
                format!(
                    "rewinding to epoch {} leaves nothing to train in {} epochs",
                    self.lottery.rewind_epoch, self.epochs
                ),
            );
        }
        if let Some(0) = self.dataset.train_limit {
            return bad("dataset.train_limit", "must be at least 1".into());
        }
        if let Some(0) = self.dataset.test_limit {
            return bad("dataset.test_limit", "must be at least 1".into());
        }
        if self.compute == ComputeName::Sparse {
            if self.model != ModelName::Lenet300 {
                return bad(
                    "compute",
                    format!(
                        "`sparse` trains LeNet-300-100 (`model = \"lenet300\"`); `{}` has \
                         convolutions, which have no sparse layer yet: use `masked`",
                        spelling(&self.model)
                    ),
                );
            }
            match self.method {
                MethodName::Dense => {
                    return bad(
                        "compute",
                        "`sparse` needs a sparse method; a dense run is `masked`".into(),
                    );
                }
                MethodName::Gmp => {
                    return bad(
                        "compute",
                        "`gmp` shrinks the number of weights during training (it starts dense), \
                         and sparse layers keep theirs fixed: train it with \
                         `compute = \"masked\"`"
                            .into(),
                    );
                }
                MethodName::Snfs => {
                    return bad(
                        "compute",
                        "`snfs` grows by the momentum of inactive weights, which sparse layers \
                         do not store (their optimizer state has one entry per non-zero): train \
                         it with `compute = \"masked\"`"
                            .into(),
                    );
                }
                _ => {}
            }
        }
        // The optimizer rule's and the DST plan's own checks, said as this config's fields.
        crate::method::check_fields(self)?;
        let backends = burn_sparse::device::available_backends();
        if !backends.contains(&self.device.as_str()) && self.device != "cpu" {
            return bad(
                "device",
                format!(
                    "`{}` is not compiled in; available: {} (enable the cargo feature of the \
                     same name)",
                    self.device,
                    backends.join(", ")
                ),
            );
        }
        Ok(())
    }

    /// One config per seed, each with `seeds = [seed]`.
    pub fn per_seed(&self) -> Vec<ExperimentConfig> {
        self.seeds
            .iter()
            .map(|&s| ExperimentConfig {
                seeds: vec![s],
                ..self.clone()
            })
            .collect()
    }

    /// The seed of a single-seed config (the first one).
    pub fn seed(&self) -> u64 {
        self.seeds.first().copied().unwrap_or(0)
    }

    /// The sparsity a run actually uses (0 for dense).
    pub fn effective_sparsity(&self) -> f64 {
        if self.method == MethodName::Dense {
            0.0
        } else {
            self.sparsity
        }
    }

    /// A stable hash of everything that changes the result: the canonical JSON without the
    /// data directory (and with the sparsity of `dense` set to 0). 12 hex digits.
    pub fn hash(&self) -> String {
        let mut c = self.clone();
        c.dataset.dir = String::new();
        c.sparsity = c.effective_sparsity();
        let json = serde_json::to_string(&c).unwrap_or_default();
        let d = Sha256::digest(json.as_bytes());
        d.iter().take(6).map(|b| format!("{b:02x}")).collect()
    }

    /// The run directory's name: a readable label and the hash,
    /// `lenet300-mnist-rigl-s0.90-seed0-3fa2c1d9e0b1`.
    pub fn run_name(&self) -> String {
        let ds = serde_json::to_value(self.dataset.name)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let model = serde_json::to_value(self.model)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        format!(
            "{model}-{ds}-{}-s{:.4}-seed{}-{}",
            self.method,
            self.effective_sparsity(),
            self.seed(),
            self.hash()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_path_creates_tables_and_parses_scalars() {
        let mut v = serde_json::json!({"optimizer": {"lr": 0.1}});
        set_path(&mut v, "optimizer.lr", "0.05").unwrap();
        set_path(&mut v, "lottery.baselines", "true").unwrap();
        set_path(&mut v, "method", "snip").unwrap();
        set_path(&mut v, "seeds", "[1,2]").unwrap();
        assert_eq!(v["optimizer"]["lr"], 0.05);
        assert_eq!(v["lottery"]["baselines"], true);
        assert_eq!(v["method"], "snip");
        assert_eq!(v["seeds"], serde_json::json!([1, 2]));
        let e = set_path(&mut v, "method.x", "1").unwrap_err();
        assert!(e.to_string().contains("method"), "{e}");
    }

    #[test]
    fn augmentation_is_opt_in_checked_and_hashed() {
        let plain = ExperimentConfig::default();
        assert!(!plain.to_json().contains("augment"), "left out when none");
        let o = |k: &str, v: &str| (k.to_string(), v.to_string());
        let shifted = ExperimentConfig::from_text(
            "",
            Format::Toml,
            "test",
            &[o("dataset.augment.max_shift", "1")],
        )
        .unwrap();
        assert_eq!(shifted.dataset.augment, Augmentation::shift(1));
        assert_ne!(plain.hash(), shifted.hash());
        let toml = "[dataset.augment]\nmax_shift = 2\nhflip = true\n";
        let c = ExperimentConfig::from_text(toml, Format::Toml, "t", &[]).unwrap();
        assert_eq!(c.dataset.augment.max_shift, 2);
        assert!(c.dataset.augment.hflip);
        let back = ExperimentConfig::from_text(&c.to_toml(), Format::Toml, "t", &[]).unwrap();
        assert_eq!(back, c);
        for (over, field) in [
            (
                vec![o("dataset.augment.max_shift", "16")],
                "dataset.augment.max_shift",
            ),
            (vec![o("dataset.augment.shift", "1")], "shift"),
            (
                vec![o("dataset.augment.max_shift", "1"), o("method", "lottery")],
                "dataset.augment",
            ),
        ] {
            let e = ExperimentConfig::from_text("", Format::Toml, "t", &over).unwrap_err();
            assert!(e.to_string().contains(field), "{e}");
        }
    }

    #[test]
    fn hash_ignores_the_data_dir_and_dense_sparsity() {
        let a = ExperimentConfig::default();
        let mut b = a.clone();
        b.dataset.dir = "/elsewhere".into();
        assert_eq!(a.hash(), b.hash());
        b.optimizer.lr = 0.05;
        assert_ne!(a.hash(), b.hash());
        let d1 = ExperimentConfig {
            method: MethodName::Dense,
            sparsity: 0.9,
            ..a.clone()
        };
        let d2 = ExperimentConfig {
            sparsity: 0.5,
            ..d1.clone()
        };
        assert_eq!(d1.hash(), d2.hash());
        assert!(
            d1.run_name()
                .starts_with("lenet300-mnist-dense-s0.0000-seed0-")
        );
    }
}
