//! One place maps a method name to the library: the initial mask and optimizer of every
//! method, the DST plan (and so the updater a resumed run re-attaches), the optimizer rule and
//! the step budget. Adding a method touches the library and this file.

use burn::tensor::{Device, Tensor};
use burn_sparse::data::{Splits, VisionDataset};
use burn_sparse::dynamic::{DstError, DstMethod, DstPlan};
use burn_sparse::mask::{
    AdamRule, MaskError, MaskSet, Rule, Scope, SgdRule, SparseOptimizer, Sparsity,
    SparsityDistribution,
};
use burn_sparse::models::Classifier;
use burn_sparse::saliency::{
    Batch, Grasp, Magnitude, PruneConfig, RandomScore, Snip, SynFlow, prune_at_init,
};
use burn_sparse::train::TrainConfig;

use crate::config::{
    DistributionName, DropKind, ExperimentConfig, LrSchedule, MethodName, OptimizerKind,
};
use crate::error::{Error, Result};

/// The library's DST method of a mask-during-training method (static, SET, RigL, SNFS, GMP).
pub(crate) fn dst_method(m: MethodName) -> Option<DstMethod> {
    match m {
        MethodName::Static => Some(DstMethod::Static),
        MethodName::Set => Some(DstMethod::Set),
        MethodName::Rigl => Some(DstMethod::Rigl),
        MethodName::Snfs => Some(DstMethod::Snfs),
        MethodName::Gmp => Some(DstMethod::Gmp),
        _ => None,
    }
}

/// The topology updater a resumed run re-attaches to its loaded optimizer (SET, RigL, SNFS,
/// GMP).
///
/// # Errors
/// As [`plan`].
pub(crate) fn reattach_updater(
    cfg: &ExperimentConfig,
    optim: SparseOptimizer,
    total: u64,
    spe: u64,
) -> Result<SparseOptimizer> {
    match dst_method(cfg.method) {
        Some(dm) => match plan(cfg, dm, total, spe)?.updater()? {
            Some(u) => Ok(optim.with_updater(u)?),
            None => Ok(optim),
        },
        None => Ok(optim),
    }
}

fn dist(d: DistributionName) -> SparsityDistribution {
    match d {
        DistributionName::Uniform | DistributionName::Global => SparsityDistribution::Uniform,
        DistributionName::Er => SparsityDistribution::Er,
        DistributionName::Erk => SparsityDistribution::Erk,
    }
}

/// `d` with the config's first/last layer pins.
fn pinned(cfg: &ExperimentConfig, mut d: SparsityDistribution) -> SparsityDistribution {
    if let Some(s) = cfg.first_layer_sparsity {
        d = d.pin_first(s);
    }
    if let Some(s) = cfg.last_layer_sparsity {
        d = d.pin_last(s);
    }
    d
}

/// `layer_sparsity` as a distribution, when set.
fn custom_distribution(cfg: &ExperimentConfig) -> Option<SparsityDistribution> {
    (!cfg.layer_sparsity.is_empty())
        .then(|| SparsityDistribution::Custom(cfg.layer_sparsity.clone()))
}

/// The optimizer rule of `cfg.optimizer`.
pub(crate) fn rule_of(cfg: &ExperimentConfig) -> Rule {
    let o = &cfg.optimizer;
    match o.kind {
        OptimizerKind::Sgd => SgdRule::default()
            .with_momentum(o.momentum)
            .with_nesterov(o.nesterov)
            .with_weight_decay(o.weight_decay)
            .into(),
        OptimizerKind::Adam => AdamRule {
            weight_decay: o.weight_decay,
            ..AdamRule::default()
        }
        .into(),
        OptimizerKind::Adamw => AdamRule::adamw(o.weight_decay).into(),
    }
}

fn forward<M: Classifier>(m: &M, x: Tensor<4>) -> Tensor<2> {
    m.logits(x)
}

fn per_class(ds: &VisionDataset, per_class: usize, seed: u64) -> Vec<usize> {
    let mut counts = vec![0; ds.classes()];
    let mut out = Vec::new();
    for i in ds.shuffled_indices(seed) {
        let c = ds.labels()[i] as usize;
        if counts.get(c).is_some_and(|&k| k < per_class) {
            counts[c] += 1;
            out.push(i);
        }
    }
    out
}

fn batch_of(ds: &VisionDataset, idx: &[usize], device: &Device) -> Result<Batch> {
    let b = ds.batch(idx, device)?;
    Ok((b.images, b.targets))
}

/// The initial mask of `cfg.method` written into `model`, and its optimizer: dense, a DST plan's
/// random mask (with its updater), or a saliency score at initialisation.
///
/// # Errors
/// [`Error::Config`] naming the field, or the library's error.
pub(crate) fn initial<M: Classifier + 'static>(
    cfg: &ExperimentConfig,
    model: M,
    data: &Splits,
    device: &Device,
    total: u64,
    spe: u64,
) -> Result<(M, SparseOptimizer)> {
    let filter = cfg.filter.filter()?;
    let seed = cfg.seed();
    let rule = rule_of(cfg);
    let sparsity = || {
        Sparsity::new(cfg.sparsity).map_err(|e| Error::Config {
            field: "sparsity".into(),
            message: e.to_string(),
        })
    };
    let m = cfg.method;
    if let Some(custom) = custom_distribution(cfg) {
        // The total the per-layer sparsities reach must be the stated one.
        let params = filter.select(&model)?;
        let kept: usize = custom
            .layer_counts(&params, Sparsity::DENSE, &Default::default())
            .map_err(|e| Error::Config {
                field: "layer_sparsity".into(),
                message: e.to_string(),
            })?
            .iter()
            .sum();
        let total: usize = params.iter().map(|p| p.numel()).sum();
        let reached = 1.0 - kept as f64 / total.max(1) as f64;
        if (reached - cfg.sparsity).abs() > 5e-5 {
            return Err(Error::Config {
                field: "sparsity".into(),
                message: format!(
                    "the per-layer sparsities keep {kept} of {total} weights, sparsity \
                     {reached:.4}, not {}: set sparsity = {reached:.4}",
                    cfg.sparsity
                ),
            });
        }
    }
    if m == MethodName::Dense {
        let masks = MaskSet::dense(&model, &filter)?;
        return Ok((model, SparseOptimizer::new(rule, masks)?));
    }
    if let Some(dm) = dst_method(m) {
        let mut plan = plan(cfg, dm, total, spe)?;
        plan.sparse_init = cfg.sparse_init;
        return Ok(plan.build(model, &filter, rule)?);
    }
    let scope = match (custom_distribution(cfg), cfg.distribution) {
        (Some(c), _) => Scope::Layerwise(c),
        (None, None | Some(DistributionName::Global)) => Scope::Global,
        (None, Some(d)) => Scope::Layerwise(pinned(cfg, dist(d))),
    };
    let rounds = cfg.saliency.rounds.unwrap_or(
        // A structured mask is computed in one round.
        if m == MethodName::Synflow && cfg.structure == burn_sparse::mask::Structure::Unstructured {
            100
        } else {
            1
        },
    );
    let mut pc = PruneConfig::new(sparsity()?)
        .with_scope(scope)
        .with_rounds(rounds)
        .with_structure(cfg.structure);
    pc.allow_empty_layers = cfg.saliency.allow_empty_layers;
    let (model, masks) = match m {
        MethodName::Magnitude => prune_at_init(model, &filter, &pc, &mut Magnitude)?,
        MethodName::Random => prune_at_init(model, &filter, &pc, &mut RandomScore::new(seed))?,
        MethodName::Snip => {
            let bs = cfg.optimizer.batch_size;
            let order = data.train.shuffled_indices(seed ^ 0x5eed);
            let k = cfg.saliency.snip_batches;
            if k * bs > order.len() {
                return Err(Error::Config {
                    field: "saliency.snip_batches".into(),
                    message: format!(
                        "{k} batches of {bs} need more than the {} training images",
                        order.len()
                    ),
                });
            }
            let batches = (0..k)
                .map(|j| batch_of(&data.train, &order[j * bs..(j + 1) * bs], device))
                .collect::<Result<Vec<_>>>()?;
            let mut snip = Snip::cross_entropy(forward::<M>, batches)?;
            prune_at_init(model, &filter, &pc, &mut snip)?
        }
        MethodName::Grasp => {
            let idx = per_class(&data.train, cfg.saliency.grasp_per_class, seed);
            let b = batch_of(&data.train, &idx, device)?;
            let mut g =
                Grasp::cross_entropy(forward::<M>, b, cfg.saliency.grasp_temperature as f32)?;
            prune_at_init(model, &filter, &pc, &mut g)?
        }
        MethodName::Synflow => {
            let shape = data.train.shape();
            prune_at_init(model, &filter, &pc, &mut SynFlow::new(forward::<M>, shape))?
        }
        other => {
            return Err(Error::Config {
                field: "method".into(),
                message: format!("`{other}` is not trained by this loop"),
            });
        }
    };
    let model = if cfg.sparse_init {
        masks.sparse_fan_in(model)?
    } else {
        model
    };
    Ok((model, SparseOptimizer::new(rule, masks)?))
}

/// The DST plan of `cfg` for a run of `total` steps of `spe` per epoch; its errors are said as
/// the config's fields.
///
/// # Errors
/// [`Error::Config`].
pub(crate) fn plan(cfg: &ExperimentConfig, dm: DstMethod, total: u64, spe: u64) -> Result<DstPlan> {
    let s = Sparsity::new(cfg.sparsity).map_err(|e| Error::Config {
        field: "sparsity".into(),
        message: e.to_string(),
    })?;
    let mut plan = DstPlan::new(dm, s, total, spe, cfg.seed());
    plan.delta_t = cfg.schedule.delta_t;
    plan.alpha = cfg.schedule.drop_fraction;
    plan.end_fraction = cfg.schedule.end_fraction;
    plan.begin_fraction = cfg.schedule.begin_fraction;
    plan.grad_accumulation = cfg.schedule.grad_accumulation;
    plan.structure = cfg.structure;
    plan.skip_weight_update = cfg.schedule.skip_weight_update;
    if let Some(std) = cfg.schedule.grow_init_std {
        plan.grow_init = burn_sparse::dynamic::GrowInit::Normal { std: std as f32 };
    }
    if let Some(kind) = cfg.schedule.drop_fraction_kind {
        use burn_sparse::mask::DropFraction;
        // The method's initial fraction unless the config names one.
        let alpha = plan.alpha.take().unwrap_or(match dm {
            DstMethod::Snfs => 0.5,
            _ => 0.3,
        });
        plan.drop_schedule = Some(match kind {
            DropKind::Constant => DropFraction::Constant { alpha },
            DropKind::Cosine => DropFraction::Cosine { alpha },
            DropKind::Linear => DropFraction::Linear { alpha },
            DropKind::Exponential => DropFraction::Exponential {
                alpha,
                decay: cfg.schedule.drop_fraction_decay.unwrap_or(0.9),
            },
        });
    }
    if dm == DstMethod::Gmp {
        plan.initial_sparsity =
            Sparsity::new(cfg.schedule.initial_sparsity).map_err(|e| Error::Config {
                field: "schedule.initial_sparsity".into(),
                message: e.to_string(),
            })?;
        plan.global = cfg.distribution == Some(DistributionName::Global);
    }
    if let Some(d) = cfg.distribution {
        plan.distribution = dist(d);
    }
    if let Some(c) = custom_distribution(cfg) {
        plan.distribution = c;
    }
    plan.distribution = pinned(cfg, plan.distribution);
    // The plan's errors name its fields; say them as the config's.
    plan.validate().map_err(|e| match e {
        DstError::InvalidConfig { field, message } => Error::Config {
            field: match field {
                "total_steps" => "epochs",
                "delta_t" => "schedule.delta_t",
                "end_fraction" => "schedule.end_fraction",
                "alpha" => "schedule.drop_fraction",
                "begin_fraction" => "schedule.begin_fraction",
                "initial_sparsity" => "schedule.initial_sparsity",
                "global" => "distribution",
                "grad_accumulation" => "schedule.grad_accumulation",
                "structure" => "structure",
                "drop_schedule" => "schedule.drop_fraction_kind",
                "grow_init" => "schedule.grow_init_std",
                "skip_weight_update" => "schedule.skip_weight_update",
                "steps_per_epoch" => "optimizer.batch_size",
                f => f,
            }
            .into(),
            message: if field == "total_steps" {
                format!(
                    "{message} ({} epochs of {spe} steps at batch size {})",
                    cfg.epochs, cfg.optimizer.batch_size
                )
            } else {
                message
            },
        },
        e => Error::Dst(e),
    })?;
    Ok(plan)
}

/// The library's checks of the fields a config sets, before any data is read: the optimizer
/// rule's, and for a mask-during-training method the DST plan's (its length is checked by
/// [`plan`] once the data gives the steps per epoch). Errors are said as the config's fields.
///
/// # Errors
/// [`Error::Config`] naming the field.
pub(crate) fn check_fields(cfg: &ExperimentConfig) -> Result<()> {
    rule_of(cfg).validate().map_err(|e| match e {
        MaskError::InvalidConfig { field, message } => Error::Config {
            field: format!("optimizer.{field}"),
            message,
        },
        e => Error::Mask(e),
    })?;
    if let Some(dm) = dst_method(cfg.method) {
        // A placeholder length: long enough for any update window.
        plan(cfg, dm, u64::MAX, 1)?;
    }
    Ok(())
}

/// The run's optimizer steps, `epochs x spe`; an overflow is a config error.
pub(crate) fn total_steps(cfg: &ExperimentConfig, spe: u64) -> Result<u64> {
    cfg.epochs.checked_mul(spe).ok_or_else(|| Error::Config {
        field: "epochs".into(),
        message: format!(
            "{} epochs of {spe} steps overflow the step counter",
            cfg.epochs
        ),
    })
}

/// The training loop's settings of `cfg` for a run of `total` steps.
pub(crate) fn train_config(cfg: &ExperimentConfig, total: u64) -> TrainConfig {
    TrainConfig {
        batch_size: cfg.optimizer.batch_size,
        lr: cfg.optimizer.lr,
        cosine_total_steps: (cfg.optimizer.lr_schedule == LrSchedule::Cosine).then_some(total),
    }
}
