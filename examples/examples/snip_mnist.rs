//! Pruning at initialisation on MNIST, then training with the mask fixed.
//!
//! ```text
//! cargo run --release --example snip_mnist -- --method snip|grasp|synflow|magnitude|random|dense
//!     --sparsity 0.95 --epochs N --seed S --data-dir DIR [--model lenet300|lenet5]
//!     [--rounds R] [--snip-batches K] [--scope global|erk|uniform] [--shift P] [--wd W]
//! ```
//!
//! One recipe for every method and the dense baseline: SGD with momentum 0.9, weight decay 1e-4
//! (`--wd`), batch 100, learning rate 0.1 decayed by a cosine to 0 over the run, burn's default
//! initialisation, MNIST normalised with mean 0.1307 and std 0.3081, and every training image
//! translated by a random whole number of pixels in -1..=1 along each axis (`--shift 1`; drawn
//! per image and epoch from the seed; the test set is not augmented). docs/SALIENCY.md reports it
//! at 100 epochs (`--epochs 100`; 40 by default). The SNIP paper's own recipe (no augmentation,
//! weight decay 5e-4) is `--shift 0 --wd 5e-4`.
//!
//! Scoring data: SNIP uses one batch of 100 training images (`--snip-batches K` averages K
//! batches; `--rounds R` makes it iterative); GraSP uses 10 images per class with T = 200;
//! SynFlow is data-free with 100 rounds. Scores are global by default. It prints nnz per layer
//! and ends with `test accuracy: XX.XX%` (the final model on the 10k test images).

use burn::tensor::{Device, Tensor};
use burn_sparse::data::Augmentation;
use burn_sparse::data::{Splits, VisionDataset};
use burn_sparse::device::device_from_name;
use burn_sparse::models::{Classifier, LeNet5Config, LeNet300Config};
use burn_sparse::prelude::*;
use burn_sparse::saliency::Batch;
use burn_sparse::train::{TrainConfig, accuracy};
use burn_sparse_examples::{Args, check_masked, epoch_and_eval_augmented, fail, load_data};

const USAGE: &str = "snip_mnist --method snip|grasp|synflow|magnitude|random|dense [--sparsity 0.95] \
[--epochs 40] [--seed 0] [--data-dir data] [--model lenet300|lenet5] [--rounds R] [--snip-batches K] \
[--scope global|erk|uniform] [--normalize mean-std|unit] [--init-scale F] [--wd 1e-4] [--lr 0.1] [--shift 1] [--fashion] [--backend flex]";

fn batch_of(ds: &VisionDataset, idx: &[usize], device: &Device) -> Batch {
    let b = ds.batch(idx, device).unwrap_or_else(|e| fail(e));
    (b.images, b.targets)
}

/// `per_class` images of each class, the first ones in a seeded order.
fn per_class(ds: &VisionDataset, per_class: usize, seed: u64) -> Vec<usize> {
    let mut counts = vec![0; ds.classes()];
    let mut out = Vec::new();
    for i in ds.shuffled_indices(seed) {
        let c = ds.labels()[i] as usize;
        if counts[c] < per_class {
            counts[c] += 1;
            out.push(i);
        }
    }
    out
}

fn forward<M: Classifier>(m: &M, x: Tensor<4>) -> Tensor<2> {
    m.logits(x)
}

/// Multiply every weight of rank >= 2 by `scale` (e.g. sqrt(3) turns burn's default uniform
/// init, std 1/sqrt(3 fan_in), into the variance-scaling std 1/sqrt(fan_in) of the SNIP paper).
fn scale_weights<M: Classifier>(model: M, scale: f32) -> M {
    struct Scale(f32);
    impl burn::module::ModuleMapper for Scale {
        fn map_float<const D: usize>(
            &mut self,
            p: burn::module::Param<Tensor<D>>,
        ) -> burn::module::Param<Tensor<D>> {
            if D < 2 {
                return p;
            }
            let s = self.0;
            p.map(|t| {
                let rg = t.is_autodiff() && t.is_require_grad();
                let t = t.inner() * s;
                if rg {
                    Tensor::from_inner(t).require_grad()
                } else {
                    t
                }
            })
        }
    }
    if scale == 1.0 {
        model
    } else {
        model.map(&mut Scale(scale))
    }
}

fn run<M: Classifier + 'static>(model: M, args: &Args, data: &Splits, device: &Device) -> f64 {
    let model = scale_weights(model, args.get("init-scale", 1.0));
    let method = args.str("method", "snip");
    let seed: u64 = args.get("seed", 0);
    let s = Sparsity::new(args.get("sparsity", 0.95)).unwrap_or_else(|e| fail(e));
    let scope = match args.str("scope", "global").as_str() {
        "global" => Scope::Global,
        "erk" => Scope::Layerwise(Distribution::Erk),
        "uniform" => Scope::Layerwise(Distribution::Uniform),
        other => fail(format!("unknown scope `{other}`")),
    };
    let filter = ParamFilter::new();
    let default_rounds = if method == "synflow" { 100 } else { 1 };
    let cfg = PruneConfig::new(s)
        .with_scope(scope)
        .with_rounds(args.get("rounds", default_rounds));
    let order = data.train.shuffled_indices(seed ^ 0x5eed);
    let t0 = std::time::Instant::now();
    let (model, masks) = match method.as_str() {
        "dense" => {
            let masks = MaskSet::dense(&model, &filter).unwrap_or_else(|e| fail(e));
            Ok((model, masks))
        }
        "magnitude" => prune_at_init(model, &filter, &cfg, &mut Magnitude),
        "random" => prune_at_init(model, &filter, &cfg, &mut RandomScore::new(seed)),
        "snip" => {
            let k: usize = args.get("snip-batches", 1);
            let batches = (0..k)
                .map(|j| batch_of(&data.train, &order[j * 100..(j + 1) * 100], device))
                .collect();
            let mut snip = Snip::cross_entropy(forward::<M>, batches).unwrap_or_else(|e| fail(e));
            prune_at_init(model, &filter, &cfg, &mut snip)
        }
        "grasp" => {
            let b = batch_of(&data.train, &per_class(&data.train, 10, seed), device);
            let mut g = Grasp::cross_entropy(forward::<M>, b, 200.0).unwrap_or_else(|e| fail(e));
            prune_at_init(model, &filter, &cfg, &mut g)
        }
        "synflow" => {
            let [c, h, w] = data.train.shape();
            prune_at_init(
                model,
                &filter,
                &cfg,
                &mut SynFlow::new(forward::<M>, [c, h, w]),
            )
        }
        other => fail(format!("unknown method `{other}`")),
    }
    .map_err(|e| e.to_string())
    .unwrap_or_else(|e| fail(e));
    println!(
        "method {method}, {s}, scored in {:.2}s\n{masks}",
        t0.elapsed().as_secs_f64()
    );
    let mut optim = SparseOptimizer::new(
        SgdConfig::default().with_weight_decay(args.get("wd", 1e-4)),
        masks,
    )
    .unwrap_or_else(|e| fail(e));
    let epochs: u64 = args.get("epochs", 40);
    let batch = 100;
    let total = epochs * data.train.len().div_ceil(batch) as u64;
    let tc = TrainConfig {
        batch_size: batch,
        lr: args.get("lr", 0.1),
        cosine_total_steps: Some(total),
    };
    let mut model = model;
    for epoch in 0..epochs {
        let (m, r, acc) = epoch_and_eval_augmented(
            model,
            &mut optim,
            data,
            tc,
            seed.wrapping_mul(7919) + epoch,
            Augmentation::shift(args.get("shift", 1)),
            device,
        );
        model = m;
        println!(
            "epoch {:>3}  loss {:.4}  test {acc:.2}%  {:.0}s",
            epoch + 1,
            r.loss,
            t0.elapsed().as_secs_f64()
        );
    }
    check_masked(&optim, &model);
    accuracy(&model, &data.test, device).unwrap_or_else(|e| fail(e))
}

fn main() {
    let args = Args::parse(USAGE);
    let device = device_from_name(&args.str("backend", "flex")).unwrap_or_else(|e| fail(e));
    let data = load_data(&args);
    let data = match args.str("normalize", "mean-std").as_str() {
        "mean-std" => data,
        "unit" => {
            let c = data.train.shape()[0];
            let unit = |d: VisionDataset| {
                d.with_normalization(vec![0.0; c], vec![1.0; c])
                    .unwrap_or_else(|e| fail(e))
            };
            Splits {
                train: unit(data.train),
                test: unit(data.test),
            }
        }
        other => fail(format!("unknown normalisation `{other}` (mean-std, unit)")),
    };
    device.seed(args.get("seed", 0));
    let acc = match args.str("model", "lenet300").as_str() {
        "lenet300" => run(LeNet300Config::new().init(&device), &args, &data, &device),
        "lenet5" => run(LeNet5Config::new().init(&device), &args, &data, &device),
        other => fail(format!("unknown model `{other}`")),
    };
    println!("test accuracy: {acc:.2}%");
}
