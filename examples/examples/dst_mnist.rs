//! Dynamic sparse training of LeNet-300-100 (or LeNet-5) on MNIST.
//!
//! ```text
//! cargo run --release --example dst_mnist -- --method rigl|set|snfs|static|gmp|dense
//!     --sparsity 0.9 --distribution erk|er|uniform --epochs N --seed S --data-dir DIR
//!     [--model lenet300|lenet5] [--fashion] [--backend flex] [--compute masked|sparse]
//!     [--delta-t 100] [--alpha A] [--end-fraction 0.75] [--begin-fraction 0.1] [--global]
//!     [--sparse-init] [--grad-accumulation K] [--n-by-m 2:4 | --block 4x4]
//! ```
//!
//! `--sparse-init` rescales the initial weights of every unit to its sparse fan-in (Evci et
//! al. 2022: a unit with `f` of `n` inputs kept is multiplied by `sqrt(n / f)`).
//!
//! `--compute sparse` (LeNet-300-100; rigl, set, static) trains the same run on truly sparse
//! layers (`SparseMlp`: only the non-zeros are stored and, on the CPU, computed), with the same
//! initial mask, the same updater and the same recipe; `masked` (the default) keeps masks on
//! dense weights.
//!
//! One recipe for every method and the dense baseline: SGD with momentum 0.9 (dampening 0),
//! weight decay 5e-4, batch 100, learning rate 0.1 decayed by a cosine to 0 over the run,
//! burn's default initialisation. Method defaults follow the references: RigL updates every
//! 100 steps until 75% of training with a cosine drop fraction from 0.3; SET rewires zeta = 0.3
//! once per epoch; SNFS prunes a cosine-decayed 0.5 after every epoch and redistributes by
//! momentum. GMP (`--method gmp`) starts dense and prunes by |w| every `--delta-t` steps from
//! `--begin-fraction` to `--end-fraction` of training on the cubic schedule, uniform per layer
//! (`--distribution` or `--global` for the alternatives), then trains on with the mask fixed. It
//! prints the per-layer density, the connections changed per update, and ends with
//! `test accuracy: XX.XX%` (the final model on the 10k test set).

use burn::tensor::Device;
use burn_sparse::data::Splits;
use burn_sparse::models::{Classifier, LeNet5Config, LeNet300, LeNet300Config};
use burn_sparse::prelude::*;
use burn_sparse::train::{TrainConfig, accuracy, epoch_seed};
use burn_sparse_examples::cli::{ComputeArg, DstArg, DstArgs, ModelArg};
use burn_sparse_examples::{SparseRun, check_masked, device, epoch_and_eval, fail, load_data};
use clap::Parser;

/// The run settings both compute paths share.
struct Run {
    epochs: u64,
    seed: u64,
    batch: usize,
    steps_per_epoch: u64,
    total: u64,
    rule: SgdRule,
}

impl Run {
    fn new(args: &DstArgs, data: &Splits) -> Self {
        let batch = usize::try_from(args.batch).unwrap_or_else(|e| fail(e));
        let steps_per_epoch = data.train.len().div_ceil(batch) as u64;
        let total = args
            .epochs
            .checked_mul(steps_per_epoch)
            .unwrap_or_else(|| fail("--epochs times the steps per epoch overflows"));
        Self {
            epochs: args.epochs,
            seed: args.seed,
            batch,
            steps_per_epoch,
            total,
            rule: SgdRule::default().with_weight_decay(args.weight_decay),
        }
    }
}

/// The library's method of a sparse `--method`.
fn dst_method(m: DstArg) -> Option<DstMethod> {
    match m {
        DstArg::Rigl => Some(DstMethod::Rigl),
        DstArg::Set => Some(DstMethod::Set),
        DstArg::Snfs => Some(DstMethod::Snfs),
        DstArg::Static => Some(DstMethod::Static),
        DstArg::Gmp => Some(DstMethod::Gmp),
        DstArg::Dense => None,
    }
}

/// The DST plan the flags describe.
fn plan_from_args(
    m: DstMethod,
    args: &DstArgs,
    total: u64,
    steps_per_epoch: u64,
    seed: u64,
) -> DstPlan {
    let s = Sparsity::new(args.sparsity).unwrap_or_else(|e| fail(e));
    let mut plan = DstPlan::new(m, s, total, steps_per_epoch, seed);
    plan.delta_t = args.delta_t;
    plan.alpha = args.alpha;
    if let Some(f) = args.end_fraction {
        plan.end_fraction = f;
    }
    if let Some(f) = args.begin_fraction {
        plan.begin_fraction = f;
    }
    plan.global = args.global;
    plan.sparse_init = args.sparse_init;
    plan.grad_accumulation = args.grad_accumulation;
    if let Some(st) = args.n_by_m.or(args.block) {
        plan.structure = st;
    }
    if let Some(d) = args.distribution {
        plan.distribution = d.distribution();
    }
    if let Some(f) = args.first_layer_sparsity {
        if args.method == DstArg::Snfs {
            fail("--first-layer-sparsity: SNFS redistributes over all layers");
        }
        plan.distribution = plan.distribution.clone().pin_first(f);
    }
    plan.validate().unwrap_or_else(|e| fail(e));
    println!(
        "method {m:?}, {s}, distribution {:?}, structure {:?}, {total} steps ({steps_per_epoch} per epoch)",
        plan.distribution, plan.structure
    );
    plan
}

/// `--compute sparse`: the same run on `SparseMlp` (LeNet-300-100 only).
fn train_sparse(model: LeNet300, args: &DstArgs, data: &Splits, device: &Device) -> f64 {
    let Run {
        epochs,
        seed,
        batch,
        steps_per_epoch,
        total,
        rule,
    } = Run::new(args, data);
    let Some(m) = dst_method(args.method).filter(|&m| m != DstMethod::Gmp) else {
        fail(
            "--compute sparse needs a method with a fixed number of weights (rigl, set, static); \
             gmp starts dense and shrinks: use --compute masked",
        );
    };
    let plan = plan_from_args(m, args, total, steps_per_epoch, seed);
    let (model, masked) = plan
        .build(model, &ParamFilter::new(), rule)
        .unwrap_or_else(|e| fail(e));
    println!("{}", masked.masks());
    let mut run = SparseRun::new(&model, masked.masks(), rule, Some(&plan));
    drop((model, masked));
    let cfg = TrainConfig {
        batch_size: batch,
        lr: args.lr,
        cosine_total_steps: Some(total),
    };
    let t0 = std::time::Instant::now();
    for epoch in 0..epochs {
        let (report, acc) = run.epoch(
            data,
            cfg,
            epoch_seed(seed, epoch),
            Default::default(),
            device,
        );
        let changed = report.connections_changed();
        println!(
            "epoch {:>3}  loss {:.4}  test {acc:.2}%  {:.0}s  updates {} ({changed} connections changed)",
            epoch + 1,
            report.loss,
            t0.elapsed().as_secs_f64(),
            report.updates.len(),
        );
    }
    let nnz: Vec<usize> = run.net.layers.iter().map(|l| l.nnz()).collect();
    println!("non-zeros per layer at the end: {nnz:?}");
    accuracy(&run.net, &data.test, device).unwrap_or_else(|e| fail(e))
}

fn train<M: Classifier>(model: M, args: &DstArgs, data: &Splits, device: &Device) -> f64 {
    let Run {
        epochs,
        seed,
        batch,
        steps_per_epoch,
        total,
        rule,
    } = Run::new(args, data);
    let filter = ParamFilter::new();
    let (mut model, mut optim) = match dst_method(args.method) {
        None => {
            if args.n_by_m.or(args.block).is_some() {
                fail("--n-by-m and --block need a sparse method");
            }
            if args.sparse_init {
                fail("--sparse-init rescales to a sparse mask's fan-in: it needs a sparse method");
            }
            let masks = MaskSet::dense(&model, &filter).unwrap_or_else(|e| fail(e));
            (
                model,
                SparseOptimizer::new(rule, masks).unwrap_or_else(|e| fail(e)),
            )
        }
        Some(m) => {
            let plan = plan_from_args(m, args, total, steps_per_epoch, seed);
            plan.build(model, &filter, rule).unwrap_or_else(|e| fail(e))
        }
    };
    println!("{}", optim.masks());
    let cfg = TrainConfig {
        batch_size: batch,
        lr: args.lr,
        cosine_total_steps: Some(total),
    };
    let t0 = std::time::Instant::now();
    for epoch in 0..epochs {
        let (m, report, acc) = epoch_and_eval(
            model,
            &mut optim,
            data,
            cfg,
            epoch_seed(seed, epoch),
            device,
        );
        model = m;
        let changed: Vec<String> = report
            .updates
            .iter()
            .map(|u| {
                let per: Vec<String> = u.changed.iter().map(|(_, c)| c.to_string()).collect();
                format!("{}:[{}]", u.step, per.join(","))
            })
            .collect();
        println!(
            "epoch {:>3}  loss {:.4}  test {acc:.2}%  {:.0}s  updates {}",
            epoch + 1,
            report.loss,
            t0.elapsed().as_secs_f64(),
            if changed.is_empty() {
                "-".to_string()
            } else {
                changed.join(" ")
            }
        );
    }
    check_masked(&optim, &model);
    println!("{}", optim.masks());
    accuracy(&model, &data.test, device).unwrap_or_else(|e| fail(e))
}

fn main() {
    let args = DstArgs::parse();
    let device = device(&args.data);
    let data = load_data(&args.data);
    device.seed(args.seed);
    let acc = match (args.model, args.compute) {
        (ModelArg::Lenet300, ComputeArg::Sparse) => {
            train_sparse(LeNet300Config::new().init(&device), &args, &data, &device)
        }
        (ModelArg::Lenet5, ComputeArg::Sparse) => fail(
            "--compute sparse supports LeNet-300-100 only (sparse conv layers are future work)",
        ),
        (ModelArg::Lenet300, ComputeArg::Masked) => {
            train(LeNet300Config::new().init(&device), &args, &data, &device)
        }
        (ModelArg::Lenet5, ComputeArg::Masked) => {
            train(LeNet5Config::new().init(&device), &args, &data, &device)
        }
    };
    println!("test accuracy: {acc:.2}%");
}
