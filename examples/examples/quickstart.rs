//! Quick start: fetch MNIST, train LeNet-300-100 dense, with RigL at 90% sparsity (ERK) as
//! masks on dense weights, and with the same RigL run on truly sparse layers; print the three
//! test accuracies and wall times.
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
use burn_sparse::train::{EpochReport, TrainConfig, accuracy, epoch_seed};
use burn_sparse_examples::cli::QuickstartArgs;
use burn_sparse_examples::{SparseRun, check_masked, device, epoch_and_eval, fail, load_data};
use clap::Parser;

/// How a run stores its weights.
#[derive(Clone, Copy, PartialEq)]
enum Layers {
    /// Dense weights, no mask.
    Dense,
    /// Masks on dense weights.
    Masked,
    /// Truly sparse layers (`SparseMlp`): only the non-zeros stored and computed.
    Sparse,
}

/// Train one run; its test accuracy and wall time in seconds.
fn run(
    label: &str,
    layers: Layers,
    s: Sparsity,
    data: &Splits,
    epochs: u64,
    seed: u64,
    device: &Device,
) -> (f64, f64) {
    let t0 = std::time::Instant::now();
    device.seed(seed);
    let model = LeNet300Config::new().init(device);
    let batch = 100;
    let spe = data.train.len().div_ceil(batch) as u64;
    let rule = SgdRule::default().with_weight_decay(5e-4);
    let plan = DstPlan::new(DstMethod::Rigl, s, epochs * spe, spe, seed);
    let (mut model, mut optim) = match layers {
        Layers::Masked | Layers::Sparse => plan
            .build(model, &ParamFilter::new(), rule)
            .unwrap_or_else(|e| fail(e)),
        Layers::Dense => {
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
    let line = |epoch: u64, report: &EpochReport, acc: f64| {
        let changed: usize = report
            .updates
            .iter()
            .flat_map(|u| u.changed.iter().map(|c| c.1))
            .sum();
        let topology = if layers == Layers::Dense {
            String::new()
        } else {
            format!(
                "  ({} topology updates, {changed} connections changed)",
                report.updates.len()
            )
        };
        println!(
            "epoch {:>2}  train loss {:.4}  test accuracy {acc:.2}%{topology}",
            epoch + 1,
            report.loss
        );
    };
    if layers == Layers::Sparse {
        // The same initial mask, updater, data order and recipe on truly sparse layers.
        let mut run = SparseRun::new(&model, optim.masks(), rule, Some(&plan));
        drop(model);
        for epoch in 0..epochs {
            let (report, acc) = run.epoch(
                data,
                cfg,
                epoch_seed(seed, epoch),
                Default::default(),
                device,
            );
            line(epoch, &report, acc);
        }
        let acc = accuracy(&run.net, &data.test, device).unwrap_or_else(|e| fail(e));
        return (acc, t0.elapsed().as_secs_f64());
    }
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
        line(epoch, &report, acc);
    }
    check_masked(&optim, &model);
    let acc = accuracy(&model, &data.test, device).unwrap_or_else(|e| fail(e));
    (acc, t0.elapsed().as_secs_f64())
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
    let (dense, td) = run("dense", Layers::Dense, s, &data, epochs, seed, &device);
    let (masked, tm) = run(
        &format!("RigL, ERK, {s}, masks on dense weights"),
        Layers::Masked,
        s,
        &data,
        epochs,
        seed,
        &device,
    );
    let (sparse, ts) = run(
        &format!("RigL, ERK, {s}, truly sparse layers"),
        Layers::Sparse,
        s,
        &data,
        epochs,
        seed,
        &device,
    );
    println!("\nLeNet-300-100, {epochs} epochs each (wall time includes the test evaluations)");
    println!("dense:                 {dense:.2}%  {td:.1}s");
    println!(
        "RigL, masked:          {masked:.2}%  {tm:.1}s ({s}, {} of 266200 weights)",
        s.kept(266_200)
    );
    println!(
        "RigL, sparse layers:   {sparse:.2}%  {ts:.1}s ({:.1}x faster than dense, {:.1}x than masked)",
        td / ts,
        tm / ts
    );
}
