//! The examples' command lines, parsed with clap (derive) as the `burn-sparse` CLI is: an
//! unknown or malformed flag is an error with a suggestion (`--epoch` -> `--epochs`), both
//! `--k v` and `--k=v` work, and `--help` is generated. They live here, not in each example,
//! so `tests/cli.rs` can check them.

use std::path::PathBuf;

use clap::{Args, Parser, ValueEnum};

/// Where the data comes from and what runs it (every example that trains).
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// The data directory (MNIST or Fashion-MNIST is fetched into it if missing).
    #[arg(long, value_name = "DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Fashion-MNIST instead of MNIST.
    #[arg(long)]
    pub fashion: bool,
    /// The backend (`flex`, `ndarray`, `wgpu`, `cuda`: those compiled in).
    #[arg(long, value_name = "NAME", default_value = "flex")]
    pub backend: String,
}

/// The LeNets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModelArg {
    /// LeNet-300-100.
    Lenet300,
    /// LeNet-5.
    Lenet5,
}

/// A per-layer sparsity distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DistributionArg {
    /// Erdős–Rényi-Kernel.
    Erk,
    /// Erdős–Rényi.
    Er,
    /// The same sparsity in every layer.
    Uniform,
}

impl DistributionArg {
    /// The library's distribution.
    pub fn distribution(self) -> burn_sparse::mask::SparsityDistribution {
        use burn_sparse::mask::SparsityDistribution;
        match self {
            DistributionArg::Erk => SparsityDistribution::Erk,
            DistributionArg::Er => SparsityDistribution::Er,
            DistributionArg::Uniform => SparsityDistribution::Uniform,
        }
    }
}

/// Two counts `A<sep>B` (`2:4`, `4x4`), built into a checked structure by `make`.
fn count_pair(
    s: &str,
    sep: char,
    example: &str,
    make: fn(usize, usize) -> burn_sparse::mask::Structure,
) -> Result<burn_sparse::mask::Structure, String> {
    let (a, b) = s
        .split_once(sep)
        .ok_or_else(|| format!("`{s}` is not of the form {example}"))?;
    let parse = |x: &str| {
        x.trim()
            .parse::<usize>()
            .map_err(|_| format!("`{x}` is not a count"))
    };
    let st = make(parse(a)?, parse(b)?);
    st.validate().map_err(|e| e.to_string())?;
    Ok(st)
}

/// `N:M` (`2:4`) as a [`Structure`](burn_sparse::mask::Structure).
pub fn n_by_m(s: &str) -> Result<burn_sparse::mask::Structure, String> {
    count_pair(s, ':', "N:M (e.g. 2:4)", |n, m| {
        burn_sparse::mask::Structure::NByM { n, m }
    })
}

/// `RxC` (`4x4`) as a block [`Structure`](burn_sparse::mask::Structure).
pub fn block(s: &str) -> Result<burn_sparse::mask::Structure, String> {
    count_pair(s, 'x', "RxC (e.g. 4x4)", |rows, cols| {
        burn_sparse::mask::Structure::Block { rows, cols }
    })
}

/// A sparsity in `[0, 1)`: the `burn-sparse` CLI's parser.
pub use burn_sparse_cli::cli::parse_sparsity as sparsity;

/// A finite, non-negative number (a rate, a weight decay, a scale).
pub fn non_negative(s: &str) -> Result<f64, String> {
    let x: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number"))?;
    if !(x.is_finite() && x >= 0.0) {
        return Err(format!("{s} is not a finite number >= 0"));
    }
    Ok(x)
}

/// A finite, positive number (a learning rate).
pub fn positive(s: &str) -> Result<f64, String> {
    match non_negative(s)? {
        x if x > 0.0 => Ok(x),
        _ => Err(format!("{s} is not above 0")),
    }
}

/// A fraction in `[0, 1]`.
pub fn fraction(s: &str) -> Result<f64, String> {
    match non_negative(s)? {
        x if x <= 1.0 => Ok(x),
        _ => Err(format!("{s} is outside [0, 1]")),
    }
}

/// `quickstart`: LeNet-300-100 dense and with RigL, both test accuracies.
#[derive(Debug, Parser)]
#[command(name = "quickstart", about, long_about = None)]
pub struct QuickstartArgs {
    /// Epochs of each run.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub epochs: u64,
    /// RigL's target sparsity.
    #[arg(long, default_value_t = 0.9, value_parser = sparsity)]
    pub sparsity: f64,
    /// The seed of the initialisation, the mask and the data order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Data and backend.
    #[command(flatten)]
    pub data: DataArgs,
}

/// The DST methods of `dst_mnist`, and the dense baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DstArg {
    /// RigL.
    Rigl,
    /// SET.
    Set,
    /// SNFS.
    Snfs,
    /// A fixed random mask.
    Static,
    /// Gradual magnitude pruning from dense (Zhu & Gupta), uniform per layer by default.
    Gmp,
    /// No mask.
    Dense,
}

/// How the sparse layers compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ComputeArg {
    /// Masks on dense weights.
    Masked,
    /// Truly sparse layers (`SparseMlp`; LeNet-300-100: dst_mnist with rigl, set or static,
    /// every snip_mnist method but dense, every lottery_mnist level).
    Sparse,
}

/// `dst_mnist`: dynamic sparse training of a LeNet.
#[derive(Debug, Parser)]
#[command(name = "dst_mnist", about, long_about = None)]
pub struct DstArgs {
    /// The method.
    #[arg(long, value_enum, default_value = "rigl")]
    pub method: DstArg,
    /// The target sparsity.
    #[arg(long, default_value_t = 0.9, value_parser = sparsity)]
    pub sparsity: f64,
    /// The initial distribution (default: the method's reference, ERK).
    #[arg(long, value_enum)]
    pub distribution: Option<DistributionArg>,
    /// Epochs.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub epochs: u64,
    /// The seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The model.
    #[arg(long, value_enum, default_value = "lenet300")]
    pub model: ModelArg,
    /// The peak learning rate (cosine-decayed to 0).
    #[arg(long, default_value_t = 0.1, value_parser = positive)]
    pub lr: f64,
    /// The batch size.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub batch: u64,
    /// The weight decay.
    #[arg(long, default_value_t = 5e-4, value_parser = non_negative)]
    pub weight_decay: f64,
    /// RigL's update interval in steps.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub delta_t: u64,
    /// The drop fraction (default: the method's, RigL and SET 0.3, SNFS 0.5).
    #[arg(long, value_parser = fraction)]
    pub alpha: Option<f64>,
    /// RigL's last update and GMP's last prune step, as a fraction of training (default 0.75).
    #[arg(long, value_parser = fraction)]
    pub end_fraction: Option<f64>,
    /// GMP: the fraction of training at which pruning begins (default 0.1).
    #[arg(long, value_parser = fraction)]
    pub begin_fraction: Option<f64>,
    /// GMP: one |w| ranking over all layers instead of per layer.
    #[arg(long)]
    pub global: bool,
    /// The first layer's sparsity (RigL's `first_layer_sparsity`): it leaves the
    /// distribution's sums, the other layers reach `--sparsity` among themselves.
    #[arg(long, value_parser = sparsity, conflicts_with_all = ["global", "n_by_m", "block"])]
    pub first_layer_sparsity: Option<f64>,
    /// RigL: grow by the mean gradient of the last K batches before each update (1: off).
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub grad_accumulation: u64,
    /// Rescale the initial weights to each unit's sparse fan-in (Evci et al. 2022).
    #[arg(long)]
    pub sparse_init: bool,
    /// N:M sparsity (`2:4`): every group of M consecutive inputs of an output keeps N;
    /// `--sparsity` must be 1 - N/M. SET and RigL regrow inside the group they drop from.
    #[arg(long, value_name = "N:M", value_parser = n_by_m, conflicts_with = "block")]
    pub n_by_m: Option<burn_sparse::mask::Structure>,
    /// Block sparsity (`4x4`): whole blocks of the weight matrix (static, gmp; set and rigl
    /// drop and grow whole blocks).
    #[arg(long, value_name = "RxC", value_parser = block)]
    pub block: Option<burn_sparse::mask::Structure>,
    /// Masked dense layers, or truly sparse ones.
    #[arg(long, value_enum, default_value = "masked")]
    pub compute: ComputeArg,
    /// Data and backend.
    #[command(flatten)]
    pub data: DataArgs,
}

/// The pruning-at-initialisation methods of `snip_mnist`, and the dense baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SaliencyArg {
    /// SNIP.
    Snip,
    /// GraSP.
    Grasp,
    /// SynFlow (iterative, data-free).
    Synflow,
    /// |w| at initialisation.
    Magnitude,
    /// Random scores.
    Random,
    /// No mask.
    Dense,
}

/// Where the scores are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScopeArg {
    /// One ranking over all layers.
    Global,
    /// Per layer, ERK.
    Erk,
    /// Per layer, the same sparsity.
    Uniform,
}

/// The input normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NormalizeArg {
    /// The dataset's mean and std.
    MeanStd,
    /// Pixels in [0, 1].
    Unit,
}

/// `snip_mnist`: pruning at initialisation, then training with the mask fixed.
#[derive(Debug, Parser)]
#[command(name = "snip_mnist", about, long_about = None)]
pub struct SnipArgs {
    /// The method.
    #[arg(long, value_enum, default_value = "snip")]
    pub method: SaliencyArg,
    /// The target sparsity.
    #[arg(long, default_value_t = 0.95, value_parser = sparsity)]
    pub sparsity: f64,
    /// Epochs.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub epochs: u64,
    /// The seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The model.
    #[arg(long, value_enum, default_value = "lenet300")]
    pub model: ModelArg,
    /// Pruning rounds (default: SynFlow 100, the others 1).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub rounds: Option<u64>,
    /// SNIP: batches of 100 images averaged for the scores.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub snip_batches: u64,
    /// Where the scores are ranked.
    #[arg(long, value_enum, default_value = "global")]
    pub scope: ScopeArg,
    /// The input normalisation.
    #[arg(long, value_enum, default_value = "mean-std")]
    pub normalize: NormalizeArg,
    /// Multiply every initial weight by this (sqrt(3) = the SNIP paper's variance scaling).
    #[arg(long, default_value_t = 1.0, value_parser = positive)]
    pub init_scale: f64,
    /// The weight decay.
    #[arg(long, default_value_t = 1e-4, value_parser = non_negative)]
    pub wd: f64,
    /// The peak learning rate (cosine-decayed to 0).
    #[arg(long, default_value_t = 0.1, value_parser = positive)]
    pub lr: f64,
    /// Random translation of the training images, in pixels (0: none).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=15))]
    pub shift: u32,
    /// Masked dense layers, or truly sparse ones.
    #[arg(long, value_enum, default_value = "masked")]
    pub compute: ComputeArg,
    /// Data and backend.
    #[command(flatten)]
    pub data: DataArgs,
}

/// The training recipe of `lottery_mnist`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RecipeArg {
    /// SGD, momentum 0.9, weight decay 5e-4, batch 100, lr 0.1 cosine-decayed.
    SgdCosine,
    /// The LTH paper's: Adam, lr 1.2e-3, batch 60, constant.
    LthAdam,
}

/// The initialisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InitArg {
    /// burn's default.
    Default,
    /// Glorot (Xavier) normal, the LTH paper's.
    Glorot,
}

/// `lottery_mnist`: IMP with rewinding and its baselines.
#[derive(Debug, Parser)]
#[command(name = "lottery_mnist", about, long_about = None)]
pub struct LotteryArgs {
    /// IMP levels.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..=200))]
    pub levels: u32,
    /// Epochs of every training.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub epochs: u64,
    /// Rewind to this step (0: to the initialisation).
    #[arg(long, default_value_t = 0)]
    pub rewind_step: u64,
    /// One global rate per level instead of the LTH paper's per-layer rates.
    #[arg(long, value_name = "P", value_parser = fraction)]
    pub global: Option<f64>,
    /// Also measure linear mode connectivity at this level.
    #[arg(long, value_name = "LEVEL")]
    pub lmc: Option<usize>,
    /// The seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The run directory (resumable).
    #[arg(long, value_name = "DIR", default_value = "runs/lottery")]
    pub out: PathBuf,
    /// The recipe.
    #[arg(long, value_enum, default_value = "sgd-cosine")]
    pub recipe: RecipeArg,
    /// The initialisation.
    #[arg(long, value_enum, default_value = "default")]
    pub init: InitArg,
    /// Masked dense layers, or truly sparse ones (every level and baseline).
    #[arg(long, value_enum, default_value = "masked")]
    pub compute: ComputeArg,
    /// How each pruned level retrains (Renda et al. 2020).
    #[arg(long, value_enum, default_value = "weight-rewinding")]
    pub retrain: RetrainArg,
    /// `--retrain fine-tuning`'s constant learning rate (default: the schedule's last, near 0
    /// for sgd-cosine).
    #[arg(long, value_name = "LR", value_parser = positive)]
    pub fine_tune_lr: Option<f64>,
    /// Skip the random-reinit and random-pruning baselines (a third of the time).
    #[arg(long)]
    pub no_baselines: bool,
    /// Data and backend.
    #[command(flatten)]
    pub data: DataArgs,
}

/// IMP's retraining after each prune.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RetrainArg {
    /// Survivors reset to the rewind point, the schedule replayed from it (LTH).
    WeightRewinding,
    /// Keep the trained weights, train at a constant rate (`--fine-tune-lr`).
    FineTuning,
    /// Keep the trained weights, replay the schedule from the rewind point.
    LrRewinding,
}

impl RetrainArg {
    /// The library's choice, with `--fine-tune-lr`.
    pub fn retrain(self, fine_tune_lr: Option<f64>) -> burn_sparse::lottery::Retrain {
        use burn_sparse::lottery::Retrain;
        match self {
            RetrainArg::WeightRewinding => Retrain::WeightRewinding,
            RetrainArg::FineTuning => Retrain::FineTuning { lr: fine_tune_lr },
            RetrainArg::LrRewinding => Retrain::LrRewinding,
        }
    }
}

/// `perf_probe`: where a training step spends its time.
#[derive(Debug, Parser)]
#[command(name = "perf_probe", about, long_about = None)]
pub struct PerfArgs {
    /// The backend.
    #[arg(long, value_name = "NAME", default_value = "flex")]
    pub backend: String,
    /// Repetitions of each timing (the median is printed).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub reps: u64,
    /// Only the stages of SNIP scoring.
    #[arg(long, conflicts_with = "amortised")]
    pub snip_only: bool,
    /// RigL's amortised step cost against static masked steps, paired.
    #[arg(long)]
    pub amortised: bool,
    /// `--amortised` on truly sparse layers (`SparseMlp`, 95% ERK, the data path of
    /// `train_epoch_sparse`) instead of masked ones.
    #[arg(long, requires = "amortised")]
    pub sparse: bool,
    /// Paired rounds of `--amortised`.
    #[arg(long, default_value_t = 30, requires = "amortised", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub rounds: u64,
}

/// `wide_mnist`'s methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WideMethod {
    /// SET, streamed (random growth).
    Set,
    /// RigL, streamed (gradient growth without the dense gradient).
    Rigl,
    /// The initial random topology, fixed.
    Static,
    /// Every layer dense (widths up to what memory allows), for the baseline.
    Dense,
}

/// The initialisation of `wide_mnist`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FanInArg {
    /// Each unit's std from its own number of active inputs (Evci et al. 2022).
    Sparse,
    /// burn's `Linear` default with the dense fan-in.
    Dense,
}

/// `wide_mnist`: an MLP 784-W-W-10 whose dense twin may not fit in memory, trained sparse.
#[derive(Debug, Parser)]
#[command(name = "wide_mnist", about, long_about = None)]
pub struct WideArgs {
    /// The method.
    #[arg(long, value_enum, default_value = "rigl")]
    pub method: WideMethod,
    /// The hidden width W (up to 65536 and beyond: memory follows the non-zeros).
    #[arg(long, default_value_t = 16384, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub width: u64,
    /// Non-zeros of each of the two W-wide layers (784 x W and W x W); the W x 10 output
    /// layer is dense.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=u32::MAX as u64))]
    pub nnz_per_layer: u64,
    /// Epochs.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub epochs: u64,
    /// Seed of the topology, the values and the batch order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Base learning rate (SGD, momentum 0.9, cosine decay to 0).
    #[arg(long, default_value_t = 0.05, value_parser = positive)]
    pub lr: f64,
    /// Batch size.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub batch: u64,
    /// L2 weight decay.
    #[arg(long, default_value_t = 5e-4, value_parser = non_negative)]
    pub weight_decay: f64,
    /// Steps between topology updates (RigL's default 100; SET: once per epoch if absent).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub delta_t: Option<u64>,
    /// Initialisation of the values.
    #[arg(long, value_enum, default_value = "sparse")]
    pub init: FanInArg,
    /// Train on the first N training images only (for quick checks).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub train_limit: Option<u64>,
    /// Append the final summary as one JSON line to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Data and backend.
    #[command(flatten)]
    pub data: DataArgs,
}
