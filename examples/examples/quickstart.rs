//! Quick start: fetch MNIST, train LeNet-300-100 dense and with RigL at 90% sparsity (ERK),
//! and print both test accuracies.
//!
//! ```text
//! cargo run --release --example quickstart -- [--epochs 5] [--sparsity 0.9] [--seed 0]
//!     [--data-dir data] [--fashion] [--backend flex]
//! ```
//! Recipe (both runs): SGD with momentum 0.9, weight decay 5e-4, batch 100, learning rate 0.1
//! decayed by a cosine to 0, burn's default initialisation. RigL: ERK, drop fraction 0.3
//! cosine-decayed, an update every 100 steps until 75% of training.

use burn::tensor::Device;
use burn_sparse::data::Splits;
use burn_sparse::prelude::*;
use burn_sparse::train::{TrainConfig, accuracy, epoch_seed};
use burn_sparse_examples::cli::QuickstartArgs;
use burn_sparse_examples::{check_masked, device, epoch_and_eval, fail, load_data};
use clap::Parser;

fn run(
    label: &str,
    sparsity: Option<Sparsity>,
    data: &Splits,
    epochs: u64,
    seed: u64,
    device: &Device,
) -> f64 {
    device.seed(seed);
    let model = LeNet300Config::new().init(device);
    let batch = 100;
    let spe = data.train.len().div_ceil(batch) as u64;
    let rule = SgdRule::default().with_weight_decay(5e-4);
    let (mut model, mut optim) = match sparsity {
        Some(s) => DstPlan::new(DstMethod::Rigl, s, epochs * spe, spe, seed)
            .build(model, &ParamFilter::new(), rule)
            .unwrap_or_else(|e| fail(e)),
        None => {
            let masks = MaskSet::dense(&model, &ParamFilter::new()).unwrap_or_else(|e| fail(e));
            (
                model,
                SparseOptimizer::new(rule, masks).unwrap_or_else(|e| fail(e)),
            )
        }
    };
    println!("\n== {label}\n{}", optim.masks());
    let cfg = TrainConfig {
        batch_size: batch,
        lr: 0.1,
        cosine_total_steps: Some(epochs * spe),
    };
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
        let changed: usize = report
            .updates
            .iter()
            .flat_map(|u| u.changed.iter().map(|c| c.1))
            .sum();
        let topology = if sparsity.is_some() {
            format!(
                "  ({} topology updates, {changed} connections changed)",
                report.updates.len()
            )
        } else {
            String::new()
        };
        println!(
            "epoch {:>2}  train loss {:.4}  test accuracy {acc:.2}%{topology}",
            epoch + 1,
            report.loss
        );
    }
    check_masked(&optim, &model);
    accuracy(&model, &data.test, device).unwrap_or_else(|e| fail(e))
}

fn main() {
    let args = QuickstartArgs::parse();
    let (epochs, seed) = (args.epochs, args.seed);
    let s = Sparsity::new(args.sparsity).unwrap_or_else(|e| fail(e));
    let device = device(&args.data);
    let data = load_data(&args.data);
    println!(
        "data: {} ({} train, {} test); device {device:?}",
        data.train.name(),
        data.train.len(),
        data.test.len()
    );
    let t0 = std::time::Instant::now();
    let dense = run("dense", None, &data, epochs, seed, &device);
    let sparse = run(
        &format!("RigL, ERK, {s}"),
        Some(s),
        &data,
        epochs,
        seed,
        &device,
    );
    println!(
        "\nLeNet-300-100, {epochs} epochs each, {:.0}s",
        t0.elapsed().as_secs_f64()
    );
    println!("dense test accuracy: {dense:.2}%");
    println!(
        "RigL test accuracy:  {sparse:.2}% ({s}, {} of 266200 weights)",
        s.kept(266_200)
    );
}
