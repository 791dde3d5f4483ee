//! The sparsity bookkeeping itself: RigL and SET updates (alone and amortised over
//! delta_t = 100 steps), SNIP scoring with its global top-k, the ERK computation, and the top-k
//! routine from 1e4 to 1e8 weights. CPU (flex), fixed seeds, data built outside the timer.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use burn_sparse::mask::prelude::*;
use burn_sparse::models::{Classifier, LeNet300, LeNet300Config};
use burn_sparse_benches::{batch, grads};
use burn_sparse_dynamic::{DropGrowConfig, GrowInit, RiglUpdater, SetUpdater};
use burn_sparse_saliency::{PruneConfig, Snip, prune_at_init};
use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};

/// A wide MLP with about 11.6M weights: 784-4096-2048-10.
#[derive(Module, Debug)]
struct WideMlp {
    l1: Linear,
    l2: Linear,
    l3: Linear,
}

#[derive(Config, Debug)]
struct WideMlpConfig {}

impl WideMlpConfig {
    fn init(&self, d: &Device) -> WideMlp {
        WideMlp {
            l1: LinearConfig::new(784, 4096).init(d),
            l2: LinearConfig::new(4096, 2048).init(d),
            l3: LinearConfig::new(2048, 10).init(d),
        }
    }
}

impl Classifier for WideMlp {
    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        let [b, c, h, w] = x.dims();
        let x = x.reshape([b, c * h * w]);
        self.l3
            .forward(relu(self.l2.forward(relu(self.l1.forward(x)))))
    }
}

fn device() -> Device {
    Device::flex().autodiff()
}

fn updater_cfg(delta_t: u64, skip: bool) -> DropGrowConfig {
    DropGrowConfig {
        schedule: UpdateSchedule::new(0, 1_000_000, delta_t).expect("schedule"),
        drop_fraction: DropFraction::Constant { alpha: 0.3 },
        init: GrowInit::Zero,
        seed: 1,
        skip_weight_update: skip,
        grad_accumulation: 1,
        structure: Default::default(),
    }
}

fn erk90(m: &LeNet300) -> MaskSet {
    random_masks(
        m,
        &ParamFilter::new(),
        Sparsity::new(0.9).expect("s"),
        &SparsityDistribution::Erk,
        3,
    )
    .expect("masks")
}

/// One topology update over all layers of LeNet-300-100 at 90% ERK (the optimizer step with
/// only the update: host copies of weights and dense gradients, drop/grow, new masks, state
/// reset, re-mask). The gradients are computed outside the timer.
fn dst_update(c: &mut Criterion) {
    let d = device();
    let (x, y) = batch(128, 1, &d);
    let mut g = c.benchmark_group("dst_update_lenet300_erk90");
    g.sample_size(30);
    for rigl in [true, false] {
        d.seed(0);
        let m = LeNet300Config::new().init(&d);
        let masks = erk90(&m);
        let m = masks.apply(m);
        let up: Box<dyn TopologyUpdater> = if rigl {
            Box::new(RiglUpdater::rigl(updater_cfg(1, true)).expect("rigl"))
        } else {
            Box::new(SetUpdater::set(updater_cfg(1, true)).expect("set"))
        };
        let mut opt = SparseOptimizer::new(SgdRule::default(), masks)
            .expect("opt")
            .with_updater(up)
            .expect("up");
        g.bench_function(
            BenchmarkId::new(
                if rigl { "rigl_update" } else { "set_update" },
                "all_layers",
            ),
            |b| {
                b.iter_batched(
                    || grads(&m, &x, &y, &d).1,
                    |gr| opt.step(0.01, m.clone(), gr).expect("step"),
                    BatchSize::PerIteration,
                )
            },
        );
    }
    g.finish();
}

/// 100 training steps: masked (static) versus RigL with delta_t = 100 (one update in 100).
fn dst_amortised(c: &mut Criterion) {
    let d = device();
    let (x, y) = batch(128, 1, &d);
    let mut g = c.benchmark_group("lenet300_100_steps_erk90");
    g.sample_size(10);
    for kind in ["masked_static", "rigl_dt100"] {
        d.seed(0);
        let m = LeNet300Config::new().init(&d);
        let masks = erk90(&m);
        let m = masks.apply(m);
        let mut opt = SparseOptimizer::new(SgdRule::default(), masks).expect("opt");
        if kind == "rigl_dt100" {
            opt = opt
                .with_updater(Box::new(
                    RiglUpdater::rigl(updater_cfg(100, false)).expect("rigl"),
                ))
                .expect("up");
        }
        let mut model = Some(m);
        g.bench_function(BenchmarkId::new(kind, "100_steps"), |b| {
            b.iter(|| {
                let mut m = model.take().expect("model");
                for _ in 0..100 {
                    let (_, gr) = grads(&m, &x, &y, &d);
                    m = opt.step(0.01, m, gr).expect("step");
                }
                model = Some(m);
            })
        });
    }
    g.finish();
}

fn forward<M: Classifier>(m: &M, x: Tensor<4>) -> Tensor<2> {
    m.logits(x)
}

/// SNIP: one batch of 128, gradients, scores, global top-k, masks. And ERK.
fn snip_and_erk(c: &mut Criterion) {
    let d = device();
    let (x, y) = batch(128, 2, &d);
    let mut g = c.benchmark_group("snip_scoring_b128");
    g.sample_size(10);
    d.seed(0);
    let small = LeNet300Config::new().init(&d);
    let wide = WideMlpConfig::new().init(&d);
    let s = Sparsity::new(0.9).expect("s");
    g.bench_function(BenchmarkId::new("snip_global_topk", "lenet300_266k"), |b| {
        b.iter(|| {
            let mut snip = Snip::cross_entropy(forward::<LeNet300>, vec![(x.clone(), y.clone())])
                .expect("snip");
            prune_at_init(
                small.clone(),
                &ParamFilter::new(),
                &PruneConfig::new(s),
                &mut snip,
            )
            .expect("prune")
        })
    });
    g.bench_function(BenchmarkId::new("snip_global_topk", "mlp_11.6M"), |b| {
        b.iter(|| {
            let mut snip = Snip::cross_entropy(forward::<WideMlp>, vec![(x.clone(), y.clone())])
                .expect("snip");
            prune_at_init(
                wide.clone(),
                &ParamFilter::new(),
                &PruneConfig::new(s),
                &mut snip,
            )
            .expect("prune")
        })
    });
    g.finish();
    let mut g = c.benchmark_group("erk_counts");
    for (name, params) in [
        ("lenet300", ParamFilter::new().select(&small).expect("p")),
        ("mlp_11.6M", ParamFilter::new().select(&wide).expect("p")),
    ] {
        g.bench_function(BenchmarkId::new("erk", name), |b| {
            b.iter(|| {
                SparsityDistribution::Erk
                    .layer_counts(&params, s, &Default::default())
                    .expect("erk")
            })
        });
    }
    g.finish();
}

/// The exact top-k mask routine alone, keeping 10%, from 1e4 to 1e8 scores.
fn topk_scaling(c: &mut Criterion) {
    let mut g = c.benchmark_group("topk_keep10pct");
    g.sample_size(10);
    for exp in 4..=8u32 {
        let n = 10usize.pow(exp);
        let mut r = SparseRng::new(exp as u64);
        let scores: Vec<f32> = (0..n).map(|_| r.next_f32()).collect();
        g.throughput(criterion::Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("top_k", format!("1e{exp}")), |b| {
            b.iter(|| top_k(&scores, n / 10).expect("topk"))
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    dst_update,
    dst_amortised,
    snip_and_erk,
    topk_scaling
);
criterion_main!(benches);
