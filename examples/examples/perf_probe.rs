//! A minimal reproduction of where a LeNet-5 / LeNet-300-100 training step spends its time on
//! a CPU backend: each layer's forward, and forward + backward, timed separately (median of N),
//! then the stages of SNIP scoring for LeNet-300-100 (batch 128, global top-k at 90%).
//!
//! ```text
//! cargo run --release --example perf_probe -- [--backend flex] [--reps 20] [--snip-only]
//! cargo run --release --example perf_probe -- --amortised [--sparse] [--rounds 30]
//! ```
//!
//! `--amortised` times 100 training steps with RigL (delta_t = 100) against 100 static masked
//! steps in alternation and prints the median of the paired ratios; with `--sparse`, the same on
//! truly sparse layers (`SparseMlp` at 95% ERK), then static against RigL streamed
//! (`SparseDst::streamed`: taps and the tiled top-k, no dense probes or views), then the first
//! pairs again with RigL's network stepped without its updater, which tells the update steps'
//! cost from the evolved pattern's.
//!
//! With `PROBE_MEAN=1` in the environment it prints means instead of medians (criterion's figures
//! are means over many iterations, so a heavy tail shows up there and not in a median).

use std::time::Instant;

// `--features mimalloc`: the same probe with mimalloc instead of the system allocator, which
// changes the SNIP figure a lot in a fresh process (docs/PERFORMANCE.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use burn::module::Module;
use burn::nn::LinearConfig;
use burn::nn::conv::Conv2dConfig;
use burn::tensor::{Device, Distribution, Tensor};
use burn::tensor::{Int, TensorData};
use burn_sparse::device::device_from_name;
use burn_sparse::mask::{
    LayerScores, MaskSet, ParamFilter, Scope, Sparsity, masks_from_scores, to_host,
};
use burn_sparse::models::{Classifier, LeNet300, LeNet300Config};
use burn_sparse::saliency::{PruneConfig, Saliency, Snip, cross_entropy_loss, prune_at_init};
use burn_sparse_examples::cli::PerfArgs;
use burn_sparse_examples::fail;
use clap::Parser;

fn median_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    if std::env::var_os("PROBE_MEAN").is_some() {
        return t.iter().sum::<f64>() / t.len() as f64;
    }
    t[t.len() / 2]
}

fn sync(t: Tensor<1>) {
    let _ = to_host(t);
}

fn logits(m: &LeNet300, x: Tensor<4>) -> Tensor<2> {
    m.logits(x)
}

/// Where SNIP scoring of LeNet-300-100 (one batch of 128, global top-k at 90%) spends its time.
fn snip_breakdown(d: &Device, reps: usize) {
    d.seed(0);
    let model = LeNet300Config::new().init(d);
    let x = Tensor::<4>::random([128, 1, 28, 28], Distribution::Default, d);
    let y = Tensor::<1, Int>::from_data(
        TensorData::new((0..128i64).map(|i| i % 10).collect::<Vec<_>>(), [128]),
        d,
    );
    let filter = ParamFilter::new();
    let s = Sparsity::new(0.9).unwrap_or_else(|e| fail(e));
    let cfg = PruneConfig::new(s);
    let snip =
        || Snip::cross_entropy(logits, vec![(x.clone(), y.clone())]).unwrap_or_else(|e| fail(e));
    let masks = MaskSet::dense(&model, &filter).unwrap_or_else(|e| fail(e));
    let scores = snip().scores(&model, &masks).unwrap_or_else(|e| fail(e));
    let layers: Vec<LayerScores> = masks
        .params()
        .into_iter()
        .zip(scores)
        .map(|(param, scores)| LayerScores { param, scores })
        .collect();
    let bits = masks_from_scores(&layers, s, &Scope::Global, false).unwrap_or_else(|e| fail(e));
    let loss = cross_entropy_loss(logits, (x.clone(), y.clone()), 1.0);
    let rows = [
        (
            "SNIP total (prune_at_init)",
            median_ms(reps, || {
                let _ = prune_at_init(model.clone(), &filter, &cfg, &mut snip());
            }),
        ),
        (
            "  MaskSet::dense",
            median_ms(reps, || {
                let _ = MaskSet::dense(&model, &filter);
            }),
        ),
        (
            "  forward + backward (loss)",
            median_ms(reps, || {
                let _ = loss(&model).backward();
            }),
        ),
        (
            "  scores (fwd, bwd, |g w|, read back, normalise)",
            median_ms(reps, || {
                let _ = snip().scores(&model, &masks);
            }),
        ),
        (
            "  global top-k (266,200 scores)",
            median_ms(reps, || {
                let _ = masks_from_scores(&layers, s, &Scope::Global, false);
            }),
        ),
        (
            "  MaskSet::from_bits",
            median_ms(reps, || {
                let _ = MaskSet::from_bits(&model, masks.params(), bits.clone());
            }),
        ),
        (
            "  MaskSet::apply",
            median_ms(reps, || {
                let m = masks.apply(model.clone());
                let _ = masks
                    .device_weights(&m)
                    .map(|w| w.into_iter().map(|w| sync(w.slice(0..1))).count());
            }),
        ),
    ];
    println!("\n{:<52} {:>10}", "SNIP, LeNet-300-100, batch 128", "ms");
    for (name, ms) in rows {
        println!("{name:<52} {ms:>10.3}");
    }
}

/// 100 LeNet-300-100 training steps at 90% ERK with a RigL update every 100 steps against 100
/// static masked steps, run in alternation (`rounds` pairs, after one pair of warm-up): the
/// median of the paired ratios does not drift with the machine the way two separate bench runs
/// do.
fn amortised_rigl(d: &Device, rounds: usize) {
    use burn::nn::loss::CrossEntropyLossConfig;
    use burn::optim::GradientsParams;
    use burn_sparse::dynamic::{DropGrowConfig, GrowInit, RiglUpdater};
    use burn_sparse::mask::{
        DropFraction, SgdRule, SparseOptimizer, SparsityDistribution as Dist, UpdateSchedule,
    };
    let x = Tensor::<4>::random([128, 1, 28, 28], Distribution::Default, d);
    let y = Tensor::<1, Int>::from_data(
        TensorData::new((0..128i64).map(|i| i % 10).collect::<Vec<_>>(), [128]),
        d,
    );
    let setup = |rigl: bool| {
        d.seed(0);
        let m = LeNet300Config::new().init(d);
        let masks = burn_sparse::mask::random_masks(
            &m,
            &ParamFilter::new(),
            Sparsity::new(0.9).unwrap_or_else(|e| fail(e)),
            &Dist::Erk,
            3,
        )
        .unwrap_or_else(|e| fail(e));
        let m = masks.apply(m);
        let mut opt = SparseOptimizer::new(SgdRule::default(), masks).unwrap_or_else(|e| fail(e));
        if rigl {
            let cfg = DropGrowConfig {
                schedule: UpdateSchedule::new(0, 1_000_000, 100).unwrap_or_else(|e| fail(e)),
                drop_fraction: DropFraction::Constant { alpha: 0.3 },
                init: GrowInit::Zero,
                seed: 1,
                skip_weight_update: false,
                grad_accumulation: 1,
                structure: Default::default(),
            };
            opt = opt
                .with_updater(Box::new(RiglUpdater::rigl(cfg).unwrap_or_else(|e| fail(e))))
                .unwrap_or_else(|e| fail(e));
        }
        (Some(m), opt)
    };
    let run100 = |state: &mut (Option<LeNet300>, SparseOptimizer)| -> f64 {
        let s = Instant::now();
        let mut m = state.0.take().unwrap_or_else(|| fail("model"));
        for _ in 0..100 {
            let loss = CrossEntropyLossConfig::new()
                .init(d)
                .forward(m.logits(x.clone()), y.clone());
            let _ = to_host(loss.clone());
            let g = GradientsParams::from_grads(loss.backward(), &m);
            m = state.1.step(0.01, m, g).unwrap_or_else(|e| fail(e));
        }
        state.0 = Some(m);
        s.elapsed().as_secs_f64() * 1e3
    };
    let (mut stat, mut rigl) = (setup(false), setup(true));
    let (ts, tr, ratio) = paired(rounds, || run100(&mut stat), || run100(&mut rigl));
    println!(
        "\nLeNet-300-100, 100 steps at 90% ERK, {rounds} alternating pairs (median)\n\
         static masked {ts:.2} ms, RigL delta_t=100 {tr:.2} ms, paired ratio {ratio:.4}"
    );
}

/// `rounds` alternating timings of `a` and `b` (after one warm-up pair): the medians of `a`, of
/// `b` and of the per-pair ratios `b / a`, so that the machine's drift hits both sides alike.
fn paired(
    rounds: usize,
    mut a: impl FnMut() -> f64,
    mut b: impl FnMut() -> f64,
) -> (f64, f64, f64) {
    let (mut ratios, mut ta, mut tb) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..=rounds {
        let (x, y) = (a(), b());
        if r > 0 {
            ratios.push(y / x);
            ta.push(x);
            tb.push(y);
        }
    }
    let med = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (med(ta), med(tb), med(ratios))
}

/// [`amortised_rigl`] on truly sparse layers: 100 steps of `train_epoch_sparse` (batching,
/// forward, backward, SGD momentum) on `SparseMlp` at 95% ERK, static against RigL with
/// delta_t = 100 (one update with its dense probe products per 100 steps), in alternation.
fn amortised_rigl_sparse(d: &Device, rounds: usize) {
    use burn_sparse::data::VisionDataset;
    use burn_sparse::dynamic::{DstMethod, DstPlan};
    use burn_sparse::mask::{MaskSet, SgdRule, SparseOptimizer, SparseRng, SparsityDistribution};
    use burn_sparse::models::SparseMlpConfig;
    use burn_sparse::sparse_dst::{SparseDst, StreamedGrow};
    use burn_sparse::train::{TrainConfig, train_epoch_sparse};
    let steps = 100usize;
    let mut rng = SparseRng::new(3);
    let n = steps * 128;
    let px: Vec<u8> = (0..n * 784).map(|_| rng.below(256) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|_| rng.below(10) as u8).collect();
    let data = VisionDataset::new("probe", [1, 28, 28], px, labels, 10, vec![0.5], vec![0.3])
        .unwrap_or_else(|e| fail(e));
    let s = Sparsity::new(0.95).unwrap_or_else(|e| fail(e));
    let cfg = TrainConfig {
        batch_size: 128,
        lr: 0.01,
        cosine_total_steps: None,
    };
    let setup = |rigl: Option<bool>| {
        d.seed(0);
        let net =
            SparseMlpConfig::distributed(vec![784, 300, 100, 10], s, &SparsityDistribution::Erk)
                .unwrap_or_else(|e| fail(e))
                .init(d)
                .unwrap_or_else(|e| fail(e));
        let optim =
            SparseOptimizer::new(SgdRule::default(), MaskSet::empty()).unwrap_or_else(|e| fail(e));
        // A run long enough that every 100th step updates (RigL stops at 75% of it).
        // `Some(false)`: RigL on dense views (probes); `Some(true)`: streamed (taps, tiled grow).
        let dst = rigl.map(|streamed| {
            let plan = DstPlan::new(DstMethod::Rigl, s, 1 << 40, steps as u64, 0);
            if streamed {
                let c = plan.drop_grow_config().unwrap_or_else(|e| fail(e));
                let c = c.unwrap_or_else(|| fail("rigl has a drop/grow config"));
                SparseDst::streamed(c, StreamedGrow::Gradient).unwrap_or_else(|e| fail(e))
            } else {
                let updater = plan.updater().unwrap_or_else(|e| fail(e));
                SparseDst::new(updater.unwrap_or_else(|| fail("rigl has an updater")))
                    .unwrap_or_else(|e| fail(e))
            }
        });
        (Some(net), optim, dst)
    };
    let run100 = |state: &mut (
        Option<burn_sparse::models::SparseMlp>,
        SparseOptimizer,
        Option<SparseDst>,
    )| {
        let t = Instant::now();
        let net = state.0.take().unwrap_or_else(|| fail("model"));
        let (net, report) =
            train_epoch_sparse(net, &mut state.1, state.2.as_mut(), &data, cfg, 7, d)
                .unwrap_or_else(|e| fail(e));
        assert_eq!(report.updates.len(), usize::from(state.2.is_some()));
        state.0 = Some(net);
        t.elapsed().as_secs_f64() * 1e3
    };
    let (mut stat, mut rigl) = (setup(None), setup(Some(false)));
    let (ts, tr, ratio) = paired(rounds, || run100(&mut stat), || run100(&mut rigl));
    println!(
        "\nSparseMlp LeNet-300-100, 100 steps at 95% ERK, {rounds} alternating pairs (median)\n\
         static sparse {ts:.2} ms, RigL delta_t=100 {tr:.2} ms, paired ratio {ratio:.4}"
    );
    // RigL streamed (`SparseDst::streamed`): taps instead of dense probes, the tiled exact
    // top-k instead of the dense views' (the same grown positions given the same gradients).
    let mut streamed = setup(Some(true));
    let (ts3, tt, ratio3) = paired(rounds, || run100(&mut stat), || run100(&mut streamed));
    println!(
        "static sparse {ts3:.2} ms, RigL streamed delta_t=100 {tt:.2} ms, paired ratio {ratio3:.4}"
    );
    // Where the gap lies: the pattern RigL has evolved by now, stepped without its updater,
    // against the static run's random ERK pattern.
    rigl.2 = None;
    let (ts2, te, ratio2) = paired(rounds, || run100(&mut stat), || run100(&mut rigl));
    println!(
        "static sparse {ts2:.2} ms, the same static steps on RigL's evolved pattern {te:.2} ms, \
         paired ratio {ratio2:.4}"
    );
}

fn main() {
    let args = PerfArgs::parse();
    let d: Device = device_from_name(&args.backend).unwrap_or_else(|e| fail(e));
    let reps = args.reps as usize;
    if args.amortised && args.sparse {
        amortised_rigl_sparse(&d, args.rounds as usize);
        return;
    }
    if args.amortised {
        amortised_rigl(&d, args.rounds as usize);
        return;
    }
    if args.snip_only {
        snip_breakdown(&d, reps);
        return;
    }
    let b = 128;
    println!(
        "{:<44} {:>10} {:>14}",
        "op (batch 128)", "fwd ms", "fwd+bwd ms"
    );
    let convs = [
        ("conv 1->20 5x5 on 28x28", 1, 20, 28),
        ("conv 20->50 5x5 on 12x12", 20, 50, 12),
    ];
    for (name, cin, cout, hw) in convs {
        let conv = Conv2dConfig::new([cin, cout], [5, 5]).init(&d);
        let x = Tensor::<4>::random([b, cin, hw, hw], Distribution::Normal(0.0, 1.0), &d);
        let f = median_ms(reps, || sync(conv.forward(x.clone()).sum()));
        let fb = median_ms(reps, || {
            let g = conv.forward(x.clone()).sum().backward();
            let _ = conv.weight.grad(&g).map(|g| sync(g.sum()));
        });
        println!("{name:<44} {f:>10.3} {fb:>14.3}");
    }
    for (name, i, o) in [
        ("linear 784->300", 784, 300),
        ("linear 800->500", 800, 500),
        ("linear 300->100", 300, 100),
    ] {
        let l = LinearConfig::new(i, o).init(&d);
        let x = Tensor::<2>::random([b, i], Distribution::Normal(0.0, 1.0), &d);
        let f = median_ms(reps, || sync(l.forward(x.clone()).sum()));
        let fb = median_ms(reps, || {
            let g = l.forward(x.clone()).sum().backward();
            let _ = l.weight.grad(&g).map(|g| sync(g.sum()));
        });
        println!("{name:<44} {f:>10.3} {fb:>14.3}");
    }
    let pool = burn::nn::pool::MaxPool2dConfig::new([2, 2])
        .with_strides([2, 2])
        .init();
    let x = Tensor::<4>::random([b, 20, 24, 24], Distribution::Normal(0.0, 1.0), &d).require_grad();
    let f = median_ms(reps, || sync(pool.forward(x.clone()).sum()));
    let fb = median_ms(reps, || {
        let g = pool.forward(x.clone()).sum().backward();
        let _ = x.grad(&g).map(|g| sync(g.sum()));
    });
    println!("{:<44} {f:>10.3} {fb:>14.3}", "max-pool 2x2 on 20x24x24");
    snip_breakdown(&d, reps);
    let _ = d.clone().autodiff().is_autodiff();
    let _ = Module::num_params(&LinearConfig::new(1, 1).init(&d));
}
