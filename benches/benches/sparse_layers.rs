//! Truly sparse layers (`SparseLinear` on the sparse kernels) against burn-sparse's own dense
//! step on Flex, in one criterion run so the ratios are measured side by side
//! (2 cores, batch 128, SGD momentum 0.9):
//! - `fc1_fwd_dw`: LeNet-300-100's first layer 784x300, forward + backward (no dX: the
//!   input needs no gradient), dense `Linear` vs `SparseLinear` at 90/95/98% sparsity;
//! - `sparse_lenet300_step`: a whole training step (forward, cross-entropy, backward, burn's SGD
//!   momentum step) of dense LeNet-300-100 vs `SparseMlp` with ERK densities;
//! - `sparse_mlp4096_step`: the same for 784-4096-4096-10;
//! - `sparse_lenet300_100_steps_erk95`: 100 steps of `train_epoch_sparse` (batching, forward,
//!   backward, SGD momentum) on `SparseMlp` at 95% ERK, static against RigL with delta_t = 100
//!   (one update in the 100 steps), RigL on dense views (its dense probe products) and streamed
//!   (`SparseDst::streamed`: taps and the panel-blocked exact top-k); then 80 alternating
//!   triples timed outside criterion into `paired.json`, for a ratio the machine's drift does
//!   not decide;
//! - `sparse_mlp4096_10_steps_erk95`: the same on 784-4096-4096-10, 10 steps with one update;
//! - `rigl_grow_4096x4096_b128`: RigL's grow step alone on one 4096 x 4096 layer, streamed
//!   (register-blocked scores, exact top-k) against the dense view (burn's matmul for `dW`,
//!   then the top-k).
//!
//! The first three groups also time alternating rounds of their variants after the criterion
//! phases (60, 60 and 12 rounds), into `paired.json` beside criterion's output, for speedups
//! the machine's drift between phases does not decide ([`compare`]).
//!
//! `python3 scripts/perf_report.py` turns the medians into the tables of docs/PERFORMANCE.md.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{GradientsParams, SgdConfig, momentum::MomentumConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_sparse::data::VisionDataset;
use burn_sparse::layers::{SparseLinear, SparseLinearConfig};
use burn_sparse::mask::SparseRng;
use burn_sparse::mask::prelude::*;
use burn_sparse::models::SparseMlpConfig;
use burn_sparse::sparse_dst::{SparseDst, StreamedGrow};
use burn_sparse::train::{TrainConfig, train_epoch_sparse};
use burn_sparse_dynamic::{DropGrowConfig, RiglUpdater};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

const BATCH: usize = 128;

fn inputs(width: usize, device: &Device) -> (Tensor<2>, Tensor<1, Int>) {
    let mut rng = SparseRng::new(1);
    let x: Vec<f32> = (0..BATCH * width).map(|_| rng.next_f32()).collect();
    let y: Vec<i64> = (0..BATCH).map(|_| rng.below(10) as i64).collect();
    (
        Tensor::<2>::from_data(TensorData::new(x, [BATCH, width]), device),
        Tensor::<1, Int>::from_data(TensorData::new(y, [BATCH]), device),
    )
}

fn sgd() -> burn::optim::SgdConfig {
    SgdConfig::new().with_momentum(Some(MomentumConfig::new().with_dampening(0.0)))
}

fn fc1(c: &mut Criterion) {
    let device = Device::flex().autodiff();
    let (x, _) = inputs(784, &device);
    device.seed(0);
    let dense: Linear = LinearConfig::new(784, 300).init(&device);
    let sparse: Vec<(String, SparseLinear)> = [0.90, 0.95, 0.98]
        .iter()
        .map(|&sparsity| {
            let layer: SparseLinear = SparseLinearConfig::new(784, 300)
                .with_density(1.0 - sparsity)
                .init(&device)
                .expect("layer");
            assert!(layer.uses_kernels());
            (format!("{:.0}%", sparsity * 100.0), layer)
        })
        .collect();
    let mut variants: Vec<Variant> = vec![(
        "dense/100%".into(),
        Box::new(|| {
            let y = dense.forward(x.clone());
            let grads = y.sum().backward();
            std::hint::black_box(dense.weight.grad(&grads).expect("grad"));
        }),
    )];
    for (label, layer) in &sparse {
        let x = x.clone();
        variants.push((
            format!("sparse/{label}"),
            Box::new(move || {
                let y = layer.forward(x.clone());
                let grads = y.sum().backward();
                std::hint::black_box(layer.values.grad(&grads).expect("grad"));
            }),
        ));
    }
    compare(c, "fc1_fwd_dw_784x300_b128", 40, &mut variants, 60, 20, 2);
}

/// One timed variant of a comparison: `"<kind>/<parameter>"` and one call.
type Variant<'a> = (String, Box<dyn FnMut() + 'a>);

/// Each variant as a criterion benchmark of `group` (`samples` samples), then `rounds`
/// alternating rounds (one warm-up round first) that time `iters` calls of every variant in
/// turn, each after `untimed` calls, written as milliseconds per call to
/// `<criterion dir>/<group>/paired.json`.
///
/// Criterion times each variant in its own phase, seconds apart, and on these shared machines
/// the speed drifts by 10-30% between phases: the dense and the sparse side of a speedup can
/// see different machines. Within a round they run milliseconds apart, so
/// `scripts/perf_report.py` also reports the median of the per-round ratios, which drift hits
/// alike on both sides.
fn compare(
    c: &mut Criterion,
    group: &str,
    samples: usize,
    variants: &mut [Variant],
    rounds: usize,
    iters: usize,
    untimed: usize,
) {
    let mut g = c.benchmark_group(group);
    g.sample_size(samples);
    for (name, f) in variants.iter_mut() {
        let (kind, param) = name.split_once('/').expect("kind/parameter");
        g.bench_function(BenchmarkId::new(kind, param), |b| b.iter(&mut *f));
    }
    g.finish();
    let mut ms: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for round in 0..=rounds {
        for ((_, f), times) in variants.iter_mut().zip(ms.iter_mut()) {
            // The previous variant left other data in the caches and perhaps the pool's workers
            // asleep, which criterion's back-to-back calls never see.
            for _ in 0..untimed {
                f();
            }
            let t = std::time::Instant::now();
            for _ in 0..iters {
                f();
            }
            if round > 0 {
                times.push(t.elapsed().as_secs_f64() * 1e3 / iters as f64);
            }
        }
    }
    let names: Vec<&str> = variants.iter().map(|(n, _)| n.as_str()).collect();
    write_paired(group, &format!("\"iters\": {iters}"), &names, &ms);
}

/// `{<head>, "<name>": [ms, ...], ...}` into `<criterion dir>/<group>/paired.json`.
fn write_paired(group: &str, head: &str, names: &[&str], ms: &[Vec<f64>]) {
    let fields: Vec<String> = names
        .iter()
        .zip(ms)
        .map(|(k, v)| {
            let list: Vec<String> = v.iter().map(|x| format!("{x:.4}")).collect();
            format!("\"{k}\": [{}]", list.join(", "))
        })
        .collect();
    let dir = criterion_dir().join(group);
    std::fs::create_dir_all(&dir).expect("criterion dir");
    std::fs::write(
        dir.join("paired.json"),
        format!("{{{head}, {}}}\n", fields.join(", ")),
    )
    .expect("write paired.json");
}

/// Dense MLP with burn's Linear.
#[derive(Module, Debug)]
struct DenseMlp {
    layers: Vec<Linear>,
}

impl DenseMlp {
    fn new(widths: &[usize], device: &Device) -> Self {
        Self {
            layers: widths
                .windows(2)
                .map(|w| LinearConfig::new(w[0], w[1]).init(device))
                .collect(),
        }
    }
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let last = self.layers.len() - 1;
        self.layers.iter().enumerate().fold(x, |h, (i, l)| {
            let y = l.forward(h);
            if i < last { relu(y) } else { y }
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn step_group(
    c: &mut Criterion,
    name: &str,
    widths: &[usize],
    sparsities: &[f64],
    samples: usize,
    rounds: usize,
    iters: usize,
) {
    let device = Device::flex().autodiff();
    let (x, y) = inputs(widths[0], &device);
    let ce = CrossEntropyLossConfig::new().init(&device);
    device.seed(0);
    let mut dense = Some(DenseMlp::new(widths, &device));
    let mut dense_optim = sgd().init();
    let mut variants: Vec<Variant> = vec![(
        "dense/100%".into(),
        Box::new(|| {
            let m = dense.take().expect("model");
            let loss = ce.forward(m.forward(x.clone()), y.clone());
            let grads = GradientsParams::from_grads(loss.backward(), &m);
            dense = Some(dense_optim.step(0.01, m, grads));
        }),
    )];
    for &s in sparsities {
        let m = SparseMlpConfig::distributed(
            widths.to_vec(),
            Sparsity::new(s).expect("sparsity"),
            &SparsityDistribution::Erk,
        )
        .expect("densities")
        .init(&device)
        .expect("model");
        let mut model = Some(m);
        let mut optim = sgd().init();
        let (x, y, ce) = (x.clone(), y.clone(), &ce);
        variants.push((
            format!("sparse/{:.0}%", s * 100.0),
            Box::new(move || {
                let m = model.take().expect("model");
                let loss = ce.forward(m.forward(x.clone()), y.clone());
                let grads = GradientsParams::from_grads(loss.backward(), &m);
                model = Some(optim.step(0.01, m, grads));
            }),
        ));
    }
    compare(c, name, samples, &mut variants, rounds, iters, 2);
}

fn steps(c: &mut Criterion) {
    step_group(
        c,
        // Not `lenet300_step_b128`: that is train_step's group, and one criterion directory
        // per group keeps the two benches' reports apart.
        "sparse_lenet300_step_b128",
        &[784, 300, 100, 10],
        &[0.90, 0.95, 0.98],
        30,
        60,
        20,
    );
    step_group(
        c,
        "sparse_mlp4096_step_b128",
        &[784, 4096, 4096, 10],
        &[0.90, 0.95, 0.98],
        10,
        12,
        1,
    );
}

/// `steps` steps of `train_epoch_sparse` on `widths` at 95% ERK: static against RigL with one
/// update in the `steps` (`delta_t = steps`), RigL on dense views (the probes' dense `dL/dW`)
/// and streamed (the taps and the tiled exact top-k, `SparseDst::streamed`, what a run of a RigL
/// plan gets, `SparseDst::from_plan`).
///
/// A ratio of two criterion phases' medians cannot resolve a 5% target on these machines, so
/// [`compare`] also times `rounds` alternating triples (static, views, streamed: the same
/// networks, optimizers and data, continuing); `scripts/perf_report.py` reports the median of
/// the per-triple ratios.
fn amortised(c: &mut Criterion, name: &str, widths: &[usize], steps: usize, rounds: usize) {
    let device = Device::flex().autodiff();
    let mut rng = SparseRng::new(3);
    let n = steps * BATCH;
    let px: Vec<u8> = (0..n * 784).map(|_| rng.below(256) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|_| rng.below(10) as u8).collect();
    let data = VisionDataset::new("bench", [1, 28, 28], px, labels, 10, vec![0.5], vec![0.3])
        .expect("dataset");
    let s = Sparsity::new(0.95).expect("sparsity");
    let cfg = TrainConfig {
        batch_size: BATCH,
        lr: 0.01,
        cosine_total_steps: None,
    };
    let (views, streamed) = (
        format!("rigl_dt{steps}"),
        format!("rigl_streamed_dt{steps}"),
    );
    let kinds = ["static_sparse", views.as_str(), streamed.as_str()];
    struct Run {
        net: Option<burn_sparse::models::SparseMlp>,
        optim: SparseOptimizer,
        dst: Option<SparseDst>,
    }
    let runs: Vec<Run> = kinds
        .iter()
        .map(|&kind| {
            device.seed(0);
            let net = SparseMlpConfig::distributed(widths.to_vec(), s, &SparsityDistribution::Erk)
                .expect("densities")
                .init(&device)
                .expect("model");
            let optim =
                SparseOptimizer::new(SgdRule::default(), MaskSet::empty()).expect("optimizer");
            // A run long enough that every `steps`-th step updates (RigL stops at 75% of it).
            let mut rigl = DropGrowConfig::rigl(1 << 40, 0).expect("config");
            rigl.schedule = UpdateSchedule::new(0, 1 << 39, steps as u64).expect("schedule");
            let dst = if kind == views {
                let u = RiglUpdater::rigl(rigl).expect("rigl");
                Some(SparseDst::new(Box::new(u)).expect("dst"))
            } else if kind == streamed {
                Some(SparseDst::streamed(rigl, StreamedGrow::Gradient).expect("dst"))
            } else {
                None
            };
            Run {
                net: Some(net),
                optim,
                dst,
            }
        })
        .collect();
    let epoch = |r: &mut Run| {
        let (m, report) = train_epoch_sparse(
            r.net.take().expect("model"),
            &mut r.optim,
            r.dst.as_mut(),
            &data,
            cfg,
            7,
            &device,
        )
        .expect("epoch");
        assert_eq!(report.updates.len(), usize::from(r.dst.is_some()));
        r.net = Some(m);
    };
    // Every call of a variant is `steps` steps with one update: no untimed calls needed.
    let mut variants: Vec<Variant> = kinds
        .iter()
        .zip(runs)
        .map(|(kind, mut run)| -> Variant {
            (
                format!("{kind}/{steps}_steps"),
                Box::new(move || epoch(&mut run)),
            )
        })
        .collect();
    compare(c, name, 10, &mut variants, rounds, 1, 0);
}

/// Where criterion writes (its own rule): `$CRITERION_HOME`, else `$CARGO_TARGET_DIR/criterion`,
/// else the workspace's `target/criterion`.
fn criterion_dir() -> std::path::PathBuf {
    if let Some(h) = std::env::var_os("CRITERION_HOME") {
        return h.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        std::path::PathBuf::from,
    );
    target.join("criterion")
}

/// RigL's grow step on one 4096 x 4096 layer at 6.25% density, batch 128, growing 30% of its
/// non-zeros: streamed (`Kernels::grow_topk`: 4 x 16 register blocks in column blocks of
/// `GROW_BLOCK_COLS`, a sampled floor and a running exact top-k) against the dense-view path (the dense `dW = xᵀ dY` by burn's matmul,
/// read back, and the exact top-k over the inactive positions).
fn rigl_grow(c: &mut Criterion) {
    use burn_sparse::kernels::{Kernels, SparsePattern};
    use burn_sparse::sparse_dst::GROW_BLOCK_COLS;
    let (n, b) = (4096usize, BATCH);
    let mut rng = SparseRng::new(9);
    let xt: Vec<f32> = (0..n * b).map(|_| rng.next_f32() - 0.5).collect();
    let dyt: Vec<f32> = (0..n * b).map(|_| rng.next_f32() - 0.5).collect();
    let layer = SparseLinearConfig::new(n, n)
        .with_density(0.0625)
        .with_seed(1)
        .init(&Device::flex())
        .expect("layer");
    let p: std::sync::Arc<SparsePattern> = layer.pattern().expect("pattern");
    let k = p.nnz() * 3 / 10;
    let keep: Vec<bool> = (0..p.nnz()).map(|s| s % 10 >= 3).collect();
    let kernels = Kernels::default();
    let mut g = c.benchmark_group("rigl_grow_4096x4096_b128");
    g.sample_size(10);
    g.bench_function(BenchmarkId::new("streamed", "grow_topk"), |bench| {
        bench.iter(|| {
            let grown = kernels
                .grow_topk(&p, &keep, &xt, &dyt, b, k, GROW_BLOCK_COLS)
                .expect("grow");
            assert_eq!(grown.len(), k);
        })
    });
    let device = Device::flex();
    let x = Tensor::<2>::from_data(TensorData::new(xt.clone(), [n, b]), &device);
    let dy = Tensor::<2>::from_data(TensorData::new(dyt.clone(), [n, b]), &device);
    g.bench_function(BenchmarkId::new("dense_view", "matmul_topk"), |bench| {
        bench.iter(|| {
            let dw = x.clone().matmul(dy.clone().transpose());
            let host = dw.into_data().try_to_vec::<f32>().expect("read");
            let mut candidate = vec![true; n * n];
            for s in 0..p.nnz() {
                if keep[s] {
                    candidate[p.flat_index(s)] = false;
                }
            }
            let scores: Vec<f32> = host
                .iter()
                .zip(&candidate)
                .filter(|(_, c)| **c)
                .map(|(v, _)| v.abs())
                .collect();
            let top = burn_sparse::mask::top_k(&scores, k).expect("top-k");
            assert_eq!(top.iter().filter(|&&t| t).count(), k);
        })
    });
    g.finish();
}

fn rigl_amortised(c: &mut Criterion) {
    amortised(
        c,
        "sparse_lenet300_100_steps_erk95",
        &[784, 300, 100, 10],
        100,
        80,
    );
    amortised(
        c,
        "sparse_mlp4096_10_steps_erk95",
        &[784, 4096, 4096, 10],
        10,
        5,
    );
}

criterion_group!(benches, fc1, steps, rigl_amortised, rigl_grow);
criterion_main!(benches);
