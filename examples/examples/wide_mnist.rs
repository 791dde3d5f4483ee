//! A network too wide to exist dense, trained sparse: an MLP 784-W-W-10 on (Fashion-)MNIST with
//! W up to 65536 (a 65536 x 65536 layer is 17 GB as a dense f32 weight), by streamed SET or
//! RigL whose memory follows the non-zeros.
//!
//! ```text
//! cargo run --release --example wide_mnist -- --method rigl|set|static|dense --width 65536
//!     --nnz-per-layer 1000000 --epochs 3 --seed S [--fashion] [--data-dir DIR]
//!     [--delta-t 100] [--init sparse|dense] [--lr 0.05] [--batch 128] [--json FILE]
//! ```
//!
//! The two W-wide layers (784 x W and W x W) get `--nnz-per-layer` non-zeros each at uniformly
//! random positions (drawn without enumerating the layer); the W x 10 output layer is dense.
//! `--method dense` makes every layer dense (the baseline; only where it fits). Values are drawn
//! with burn's `Linear` default and, with `--init sparse` (the default), rescaled to each unit's
//! sparse fan-in. Recipe: SGD with momentum 0.9, weight decay 5e-4, batch 128, learning rate
//! decayed by a cosine to 0. RigL updates every 100 steps to 75% of training (cosine drop
//! fraction from 0.3); SET rewires zeta = 0.3 once per epoch; both streamed
//! (`SparseDst::streamed`: O(nnz) per update, RigL's scores tile by tile).
//!
//! It prints the dense twin's parameter memory, this run's peak resident memory (Linux
//! `VmHWM`), the time per epoch and per step (update steps apart), and the test accuracy.

use std::time::Instant;

use burn::nn::LinearConfig;
use burn_sparse::dynamic::DropGrowConfig;
use burn_sparse::layers::Compute;
use burn_sparse::mask::ParamFilter;
use burn_sparse::mask::{DropFraction, MaskSet, SgdRule, SparseOptimizer, UpdateSchedule};
use burn_sparse::models::LeNet300;
use burn_sparse::models::SparseMlpConfig;
use burn_sparse::sparse_dst::{SparseDst, StreamedGrow};
use burn_sparse::train::{
    EpochReport, TrainConfig, accuracy, epoch_seed, train_epoch_sparse_with, train_epoch_with,
};
use burn_sparse_examples::cli::{FanInArg, WideArgs, WideMethod};
use burn_sparse_examples::{device, fail, load_data};
use clap::Parser;

/// Peak resident memory of this process (Linux `VmHWM`), in bytes.
fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// What the epochs measured.
struct Timed {
    epoch_secs: Vec<f64>,
    /// Seconds of the steps without a topology update, and of those with one.
    plain: Vec<f64>,
    update: Vec<f64>,
    acc: f64,
}

/// `args.epochs` epochs of `train(epoch, on_batch)`, each followed by `eval` (the test
/// accuracy), timing every step and printing a line per epoch.
fn run_epochs(
    args: &WideArgs,
    mut train: impl FnMut(u64, &mut dyn FnMut(usize, usize)) -> EpochReport,
    mut eval: impl FnMut(u64) -> (f64, u64),
) -> Timed {
    let mut t = Timed {
        epoch_secs: Vec::new(),
        plain: Vec::new(),
        update: Vec::new(),
        acc: f64::NAN,
    };
    let mut first = 1u64;
    for epoch in 0..args.epochs {
        let mut step_secs = Vec::new();
        let t0 = Instant::now();
        let mut last = t0;
        let report = train(epoch, &mut |_, _| {
            let now = Instant::now();
            step_secs.push((now - last).as_secs_f64());
            last = now;
        });
        let secs = t0.elapsed().as_secs_f64();
        t.epoch_secs.push(secs);
        let updates: Vec<u64> = report.updates.iter().map(|u| u.step).collect();
        for (i, s) in step_secs.iter().enumerate() {
            if updates.contains(&(first + i as u64)) {
                t.update.push(*s);
            } else {
                t.plain.push(*s);
            }
        }
        first += step_secs.len() as u64;
        let t1 = Instant::now();
        t.acc = eval(first).0;
        let changed = report.connections_changed();
        println!(
            "epoch {:>3}  loss {:.4}  test {:.2}%  train {secs:.0}s  eval {:.0}s  updates {} ({changed} connections moved)  peak RSS {:.0} MiB",
            epoch + 1,
            report.loss,
            t.acc,
            t1.elapsed().as_secs_f64(),
            updates.len(),
            peak_rss().map_or(f64::NAN, mib),
        );
    }
    t
}

fn main() {
    let args = WideArgs::parse();
    let device = device(&args.data);
    let mut data = load_data(&args.data);
    if let Some(n) = args.train_limit {
        let n = (n as usize).min(data.train.len());
        let idx: Vec<usize> = (0..n).collect();
        data.train = data.train.subset(&idx).unwrap_or_else(|e| fail(e));
    }
    device.seed(args.seed);
    let w = usize::try_from(args.width).unwrap_or_else(|e| fail(e));
    let widths = vec![784, w, w, 10];
    let nnz = args.nnz_per_layer as f64;
    let densities: Vec<f64> = if args.method == WideMethod::Dense {
        Vec::new()
    } else {
        let d0 = nnz / (784.0 * w as f64);
        let d1 = nnz / (w as f64 * w as f64);
        if d0 > 1.0 || d1 > 1.0 {
            fail(format!(
                "--nnz-per-layer {nnz} exceeds a layer of width {w} (784 x {w} = {})",
                784 * w
            ));
        }
        vec![d0, d1, 1.0]
    };
    let net = (args.method != WideMethod::Dense).then(|| {
        SparseMlpConfig::new(widths.clone(), densities)
            .with_seed(args.seed)
            // The kernels for the sparse layers (Auto: density <= 30%); the dense output
            // layer computes masked-dense.
            .with_compute(Compute::Auto)
            .with_sparse_fan_in(args.init == FanInArg::Sparse)
            .init(&device)
            .unwrap_or_else(|e| fail(e))
    });
    let dense_params: u64 = widths.windows(2).map(|p| (p[0] * p[1] + p[1]) as u64).sum();
    let per_layer: Vec<usize> = match &net {
        Some(n) => n.layers.iter().map(|l| l.nnz()).collect(),
        None => widths.windows(2).map(|p| p[0] * p[1]).collect(),
    };
    let nnz_total: usize = per_layer.iter().sum();
    let kernels: Vec<bool> = net
        .as_ref()
        .map(|n| n.layers.iter().map(|l| l.uses_kernels()).collect())
        .unwrap_or_default();
    let batch = usize::try_from(args.batch).unwrap_or_else(|e| fail(e));
    let steps_per_epoch = data.train.len().div_ceil(batch) as u64;
    let total = args.epochs * steps_per_epoch;
    println!(
        "784-{w}-{w}-10, {:?}: non-zeros per layer {per_layer:?} ({nnz_total} in all, {:.4}% of {dense_params}); \
         on the sparse kernels: {:?}",
        args.method,
        100.0 * nnz_total as f64 / dense_params as f64,
        kernels
    );
    println!(
        "dense twin: {:.1} MiB of f32 parameters, {:.1} MiB with SGD momentum",
        mib(4 * dense_params),
        mib(8 * dense_params)
    );
    let mut dst = match args.method {
        WideMethod::Rigl | WideMethod::Set => {
            let rigl = args.method == WideMethod::Rigl;
            let mut c = if rigl {
                DropGrowConfig::rigl(total, args.seed)
            } else {
                DropGrowConfig::set(total, steps_per_epoch, args.seed)
            }
            .unwrap_or_else(|e| fail(e));
            if let Some(dt) = args.delta_t {
                let end = if rigl { c.schedule.end() } else { total };
                c.schedule = UpdateSchedule::new(0, end, dt).unwrap_or_else(|e| fail(e));
            }
            if !rigl {
                c.drop_fraction = DropFraction::Constant { alpha: 0.3 };
            }
            let grow = if rigl {
                StreamedGrow::Gradient
            } else {
                StreamedGrow::Random
            };
            Some(SparseDst::streamed(c, grow).unwrap_or_else(|e| fail(e)))
        }
        WideMethod::Static | WideMethod::Dense => None,
    };
    let rule = SgdRule {
        momentum: 0.9,
        ..SgdRule::default()
    }
    .with_weight_decay(args.weight_decay);
    let cfg = TrainConfig {
        batch_size: batch,
        lr: args.lr,
        cosine_total_steps: Some(total),
    };
    let timed = if args.method == WideMethod::Dense {
        // The dense baseline: burn's `Linear` layers (dense matmuls, no scatter), the same
        // recipe through the masked path's loop with an all-dense mask.
        let model = LeNet300 {
            fc1: LinearConfig::new(784, w).init(&device),
            fc2: LinearConfig::new(w, w).init(&device),
            fc3: LinearConfig::new(w, 10).init(&device),
        };
        let masks = MaskSet::dense(&model, &ParamFilter::new()).unwrap_or_else(|e| fail(e));
        let mut optim = SparseOptimizer::new(rule, masks).unwrap_or_else(|e| fail(e));
        let model = std::cell::RefCell::new(Some(model));
        run_epochs(
            &args,
            |epoch, on_batch| {
                let (m, report) = train_epoch_with(
                    model.take().expect("model"),
                    &mut optim,
                    &data.train,
                    cfg,
                    epoch_seed(args.seed, epoch),
                    &device,
                    on_batch,
                )
                .unwrap_or_else(|e| fail(e));
                *model.borrow_mut() = Some(m);
                report
            },
            |first| {
                let m = model.borrow();
                let m = m.as_ref().expect("model");
                (
                    accuracy(m, &data.test, &device).unwrap_or_else(|e| fail(e)),
                    first,
                )
            },
        )
    } else {
        let mut optim = SparseOptimizer::new(rule, MaskSet::empty()).unwrap_or_else(|e| fail(e));
        let net = std::cell::RefCell::new(net);
        let out = run_epochs(
            &args,
            |epoch, on_batch| {
                let (n, report) = train_epoch_sparse_with(
                    net.take().expect("network"),
                    &mut optim,
                    dst.as_mut(),
                    &data.train,
                    cfg,
                    epoch_seed(args.seed, epoch),
                    &device,
                    on_batch,
                )
                .unwrap_or_else(|e| fail(e));
                *net.borrow_mut() = Some(n);
                report
            },
            |first| {
                let n = net.borrow();
                let n = n.as_ref().expect("network");
                (
                    accuracy(n, &data.test, &device).unwrap_or_else(|e| fail(e)),
                    first,
                )
            },
        );
        let after: Vec<usize> = net
            .borrow()
            .as_ref()
            .map(|n| n.layers.iter().map(|l| l.nnz()).collect())
            .unwrap_or_default();
        if after != per_layer {
            fail(format!("non-zeros changed: {per_layer:?} -> {after:?}"));
        }
        out
    };
    let Timed {
        epoch_secs,
        plain,
        update,
        acc,
    } = timed;
    let peak = peak_rss().unwrap_or(0);
    let (step, upd) = (median(plain), median(update.clone()));
    println!(
        "summary: width {w}  method {:?}  seed {}  nnz {nnz_total}  dense-twin params {:.1} MiB  peak RSS {:.1} MiB  \
         s/epoch {:.1}  s/step {step:.4}  s/update-step {upd:.3} ({} updates)  test {acc:.2}%",
        args.method,
        args.seed,
        mib(4 * dense_params),
        mib(peak),
        median(epoch_secs.clone()),
        update.len()
    );
    if let Some(path) = &args.json {
        let line = format!(
            "{{\"width\":{w},\"method\":\"{:?}\",\"seed\":{},\"epochs\":{},\"nnz\":{nnz_total},\"dense_params\":{dense_params},\"peak_rss\":{peak},\"s_per_epoch\":{:.3},\"s_per_step\":{step:.5},\"s_per_update_step\":{},\"updates\":{},\"test_accuracy\":{acc:.4}}}\n",
            args.method,
            args.seed,
            args.epochs,
            median(epoch_secs),
            if upd.is_nan() {
                "null".to_string()
            } else {
                format!("{upd:.4}")
            },
            update.len()
        );
        use std::io::Write;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .unwrap_or_else(|e| fail(format!("{}: {e}", path.display())));
    }
    println!("test accuracy: {acc:.2}%");
}
