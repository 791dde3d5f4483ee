//! Quick start: fetch MNIST, train LeNet-300-100 dense and 90%-sparse (ERK, static mask kept
//! exact by the sparse optimizer), and print both test accuracies.
//!
//! ```text
//! cargo run --release --example quickstart -- [--epochs 3] [--sparsity 0.9] [--seed 0]
//!     [--data-dir data] [--backend flex]
//! ```
//! Recipe: SGD, momentum 0.9, lr 0.05, batch 128, weights by burn's default init.

use burn::tensor::Device;
use burn_sparse::data::{FashionMnist, Mnist};
use burn_sparse::device::device_from_name;
use burn_sparse::prelude::*;
use burn_sparse::train::{TrainConfig, accuracy, train_epoch};
use burn_sparse_examples::{Args, fail};

const USAGE: &str = "quickstart [--epochs N] [--sparsity S] [--seed S] [--data-dir DIR] \
                     [--fashion] [--backend flex|ndarray|wgpu|cuda]";

fn run(
    label: &str,
    sparsity: Option<Sparsity>,
    data: &burn_sparse::data::Splits,
    epochs: usize,
    seed: u64,
    device: &Device,
) -> f64 {
    device.seed(seed);
    let model = LeNet300Config::new().init(device);
    let filter = ParamFilter::new();
    let masks = match sparsity {
        // Random static mask with ERK per-layer densities: the baseline of every DST paper.
        Some(s) => {
            let mut rng = SparseRng::new(seed);
            let params = filter.select(&model).unwrap_or_else(|e| fail(e));
            let scores: Vec<LayerScores> = params
                .iter()
                .map(|p| LayerScores {
                    param: p.clone(),
                    scores: (0..p.numel()).map(|_| rng.next_f32()).collect(),
                })
                .collect();
            let bits = masks_from_scores(&scores, s, &Scope::Layerwise(Distribution::Erk), false)
                .unwrap_or_else(|e| fail(e));
            MaskSet::from_bits(&model, params, bits).unwrap_or_else(|e| fail(e))
        }
        None => MaskSet::dense(&model, &filter).unwrap_or_else(|e| fail(e)),
    };
    let mut model = masks.apply(model);
    println!("\n== {label}\n{masks}");
    let mut optim = SparseOptimizer::new(SgdConfig::default(), masks).unwrap_or_else(|e| fail(e));
    let cfg = TrainConfig {
        batch_size: 128,
        lr: 0.05,
        cosine_total_steps: None,
    };
    for epoch in 0..epochs {
        let (m, report) = train_epoch(
            model,
            &mut optim,
            &data.train,
            cfg,
            seed * 1000 + epoch as u64,
            device,
        )
        .unwrap_or_else(|e| fail(e));
        model = m;
        let acc = accuracy(&model, &data.test, device).unwrap_or_else(|e| fail(e));
        println!(
            "epoch {:>2}  train loss {:.4}  test accuracy {acc:.2}%",
            epoch + 1,
            report.loss
        );
    }
    let bad: usize = optim
        .masks()
        .violations(&model)
        .unwrap_or_else(|e| fail(e))
        .iter()
        .map(|(_, v)| v)
        .sum();
    assert_eq!(bad, 0, "masked weights must stay exactly zero");
    accuracy(&model, &data.test, device).unwrap_or_else(|e| fail(e))
}

fn main() {
    let args = Args::parse(USAGE);
    let epochs: usize = args.get("epochs", 3);
    let seed: u64 = args.get("seed", 0);
    let s = Sparsity::new(args.get("sparsity", 0.9)).unwrap_or_else(|e| fail(e));
    let dir = args.str("data-dir", "data");
    let device = device_from_name(&args.str("backend", "flex")).unwrap_or_else(|e| fail(e));
    let data = if args.flag("fashion") {
        FashionMnist::load_or_fetch(&dir)
    } else {
        Mnist::load_or_fetch(&dir)
    }
    .unwrap_or_else(|e| fail(e));
    println!(
        "data: {} ({} train, {} test); device {device:?}",
        data.train.name(),
        data.train.len(),
        data.test.len()
    );
    let t0 = std::time::Instant::now();
    let dense = run("dense", None, &data, epochs, seed, &device);
    let sparse = run(
        &format!("static ERK, {s}"),
        Some(s),
        &data,
        epochs,
        seed,
        &device,
    );
    println!(
        "\nLeNet-300-100, {epochs} epochs, {:.0}s",
        t0.elapsed().as_secs_f64()
    );
    println!("dense test accuracy:  {dense:.2}%");
    println!("sparse test accuracy: {sparse:.2}% ({s}, ERK static mask)");
}
