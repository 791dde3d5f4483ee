//! Lottery tickets on MNIST: LeNet-300-100 IMP with rewinding, with the random-reinit and
//! random-pruning baselines at every level, a CSV and an accuracy-versus-density plot (SVG).
//!
//! ```text
//! cargo run --release --example lottery_mnist -- [--levels 15] [--epochs 10] [--rewind-step 0]
//!     [--global 0.2] [--lmc LEVEL] [--seed 0] [--data-dir data] [--out runs/lottery]
//!     [--compute masked|sparse] [--retrain weight-rewinding|fine-tuning|lr-rewinding]
//!     [--fine-tune-lr LR] [--no-baselines]
//! ```
//!
//! `--retrain` (Renda, Frankle & Carbin 2020): after each prune, `weight-rewinding` (the default,
//! LTH) resets the survivors to the rewind point and replays the schedule from it;
//! `lr-rewinding` keeps the trained weights and replays the schedule from the rewind point;
//! `fine-tuning` keeps them and trains the same number of steps at a constant rate
//! (`--fine-tune-lr`, default the schedule's last). Each trains steps k..T of the budget.
//!
//! `--compute sparse` trains every level and baseline on truly sparse layers (`SparseMlp` built
//! from the level's mask, a fresh nnz-sized optimizer, the same batches and learning rates),
//! converted back to the dense LeNet-300-100 with exact zeros for pruning and the records.
//!
//! Defaults follow the LTH paper for LeNet-300-100: per-layer rates of 20% for fc1/fc2 and 10%
//! for the output layer, rewinding to init, 15 levels (fc density 0.8^15 = 3.5%). Every
//! training (ticket and baselines, every level) uses one budget and recipe: `--epochs` epochs of
//! `--recipe sgd-cosine` (SGD with momentum 0.9, weight decay 5e-4, batch 100, learning rate 0.1
//! decayed by a cosine to 0; the default) or `--recipe lth-adam` (the LTH paper's: Adam with
//! learning rate 1.2e-3, batch 60, constant), burn's default initialisation. The run directory is resumable: rerunning after a kill
//! continues at the last finished level.

use std::fmt::Write as _;

use burn::tensor::Device;

use burn_sparse::layers::Compute;
use burn_sparse::lottery::{Imp, ImpConfig, ImpTrainer, LevelMetrics, PruneRate, Rewind, Variant};
use burn_sparse::models::{LeNet300, LeNet300Config};
use burn_sparse::prelude::*;
use burn_sparse::train::{SparseStepTrainer, StepTrainer, TrainConfig};
use burn_sparse_cli::plot::{Series, line_chart};
use burn_sparse_examples::cli::{ComputeArg, InitArg, LotteryArgs, RecipeArg, RetrainArg};
use burn_sparse_examples::{device, fail, load_data};
use clap::Parser;

fn main() {
    let args = LotteryArgs::parse();
    let device: Device = device(&args.data);
    let data = load_data(&args.data);
    let (epochs, seed) = (args.epochs, args.seed);
    // sgd-cosine: SGD momentum 0.9, weight decay 5e-4, batch 100, lr 0.1 cosine-decayed.
    // lth-adam: the LTH paper's LeNet recipe, Adam lr 1.2e-3, batch 60, constant lr.
    let recipe = args.recipe;
    let (batch, lr, cosine, rule): (usize, f64, bool, Rule) = match recipe {
        RecipeArg::SgdCosine => (
            100,
            0.1,
            true,
            SgdRule::default().with_weight_decay(5e-4).into(),
        ),
        RecipeArg::LthAdam => (60, 1.2e-3, false, AdamRule::default().into()),
    };
    let spe = data.train.len().div_ceil(batch) as u64;
    let k = args.rewind_step;
    let rate = match args.global {
        Some(p) => PruneRate::Global(p),
        None => PruneRate::lth_fc("fc3.weight"),
    };
    let cfg = ImpConfig {
        rate,
        levels: args.levels as usize,
        min_density: None,
        rewind: if k == 0 {
            Rewind::Init
        } else {
            Rewind::Step(k)
        },
        retrain: args.retrain.retrain(args.fine_tune_lr),
        structure: Default::default(),
        baselines: if args.no_baselines {
            Vec::new()
        } else {
            vec![Variant::RandomReinit, Variant::RandomPruning]
        },
        seed,
    };
    if args.fine_tune_lr.is_some() && args.retrain != RetrainArg::FineTuning {
        fail("--fine-tune-lr is the rate of --retrain fine-tuning");
    }
    let out = args.out.clone();
    let total_steps = epochs
        .checked_mul(spe)
        .unwrap_or_else(|| fail("--epochs times the steps per epoch overflows"));
    if k >= total_steps {
        fail(format!(
            "--rewind-step {k} leaves nothing to train in {total_steps} steps"
        ));
    }
    println!(
        "IMP on LeNet-300-100: {:?}, rewind {:?}, retrain {:?}, {} levels, {epochs} epochs ({total_steps} steps) per training, recipe {recipe:?}, run dir {}",
        cfg.rate,
        cfg.rewind,
        cfg.retrain,
        cfg.levels,
        out.display()
    );
    let initializer = match args.init {
        InitArg::Default => None,
        InitArg::Glorot => Some(burn::module::Initializer::XavierNormal { gain: 1.0 }),
    };
    let init_device = device.clone();
    let init = move |s: u64| -> LeNet300 {
        init_device.seed(s);
        LeNet300Config::new()
            .with_initializer(initializer.clone())
            .init(&init_device)
    };
    let imp = Imp::new(cfg, &out, ParamFilter::new(), rule, init);
    let steps = StepTrainer {
        train: &data.train,
        test: &data.test,
        cfg: TrainConfig {
            batch_size: batch,
            lr,
            cosine_total_steps: cosine.then_some(total_steps),
        },
        total_steps,
        device: device.clone(),
    };
    match args.compute {
        ComputeArg::Masked => {
            let mut trainer = steps;
            report(&imp, &mut trainer, &args, seed)
        }
        ComputeArg::Sparse => {
            let mut trainer = SparseStepTrainer {
                steps,
                compute: Compute::Auto,
            };
            report(&imp, &mut trainer, &args, seed)
        }
    }
}

/// Run (or resume) every level with `trainer`, print the table, write the CSV and the plot,
/// and measure linear mode connectivity if asked.
fn report<I: Fn(u64) -> LeNet300>(
    imp: &Imp<LeNet300, I>,
    trainer: &mut impl ImpTrainer<LeNet300>,
    args: &LotteryArgs,
    seed: u64,
) {
    let out = &args.out;
    let t0 = std::time::Instant::now();
    println!(
        "{:>5} {:>9} {:>8} {:>8} {:>8} {:>8}",
        "level", "density", "nnz", "ticket", "reinit", "random"
    );
    let get = |m: &LevelMetrics, v: Variant| m.accuracy.get(&v).copied();
    let fmt = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.2}"));
    let levels = imp
        .run(trainer, |m| {
            println!(
                "{:>5} {:>8.2}% {:>8} {:>8} {:>8} {:>8}   ({:.0}s)",
                m.level,
                100.0 * m.density,
                m.nnz,
                fmt(get(m, Variant::Ticket)),
                fmt(get(m, Variant::RandomReinit)),
                fmt(get(m, Variant::RandomPruning)),
                t0.elapsed().as_secs_f64()
            )
        })
        .unwrap_or_else(|e| fail(e));
    let mut csv = String::from("level,density,nnz,ticket,random_reinit,random_pruning\n");
    for m in &levels {
        let _ = writeln!(
            csv,
            "{},{:.6},{},{},{},{}",
            m.level,
            m.density,
            m.nnz,
            fmt(get(m, Variant::Ticket)),
            fmt(get(m, Variant::RandomReinit)),
            fmt(get(m, Variant::RandomPruning))
        );
    }
    let series: Vec<Series> = [
        ("winning ticket", Variant::Ticket),
        ("random reinit", Variant::RandomReinit),
        ("random pruning", Variant::RandomPruning),
    ]
    .iter()
    .map(|(n, v)| {
        Series::new(
            *n,
            levels
                .iter()
                .filter_map(|m| {
                    get(m, *v)
                        .or_else(|| get(m, Variant::Ticket).filter(|_| m.level == 0))
                        .map(|a| (100.0 * m.density, a))
                })
                .collect(),
        )
    })
    .collect();
    burn_sparse::mask::checkpoint::atomic_write(&out.join("levels.csv"), csv.as_bytes())
        .unwrap_or_else(|e| fail(e));
    // The CLI's plotter: the same SVG and PNG as `burn-sparse run` draws for a lottery run.
    let plots = line_chart(
        &out.join("accuracy_vs_density"),
        "LeNet-300-100 on MNIST: IMP",
        "weights remaining (%, log scale)",
        "test accuracy (%)",
        &series,
        true,
    )
    .unwrap_or_else(|e| fail(e));
    let shown: Vec<String> = plots.iter().map(|p| p.display().to_string()).collect();
    println!(
        "wrote {} and {}",
        out.join("levels.csv").display(),
        shown.join(", ")
    );
    if let Some(level) = args.lmc {
        let r = imp
            .instability(level, trainer, (seed + 101, seed + 202), 30)
            .unwrap_or_else(|e| fail(e));
        println!(
            "linear mode connectivity at level {level}: errors along the path {:?}",
            r.errors
                .iter()
                .map(|e| format!("{e:.2}"))
                .collect::<Vec<_>>()
        );
        println!("instability (error barrier): {:.2} pp", r.instability);
    }
    if let Some(last) = levels.last() {
        println!(
            "test accuracy: {:.2}%",
            get(last, Variant::Ticket).unwrap_or(f64::NAN)
        );
    }
}
