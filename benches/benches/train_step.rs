//! One training step of LeNet-300-100 and LeNet-5 (batch 128, SGD momentum 0.9): dense with
//! burn's own optimizer versus masked (90% sparse, store-as-zeros) with the SparseOptimizer,
//! on every CPU backend compiled in (flex; ndarray with `--features ndarray`).

use burn::tensor::Device;
use burn_sparse::mask::prelude::*;
use burn_sparse::models::{Classifier, LeNet5Config, LeNet300Config};
use burn_sparse_benches::{batch, grads};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

fn backends() -> Vec<(&'static str, Device)> {
    #[allow(unused_mut)]
    let mut v = vec![("flex", Device::flex().autodiff())];
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)]
    v.push(("ndarray", Device::ndarray().autodiff()));
    v
}

fn bench_model<M: Classifier + 'static>(
    c: &mut Criterion,
    name: &str,
    init: impl Fn(&Device) -> M,
) {
    let mut g = c.benchmark_group(format!("{name}_step_b128"));
    g.sample_size(30);
    for (backend, device) in backends() {
        let (x, y) = batch(128, 1, &device);
        // Dense: burn's SGD with momentum 0.9, dampening 0 (as PyTorch).
        device.seed(0);
        let mut model = Some(init(&device));
        let mut optim = burn::optim::SgdConfig::new()
            .with_momentum(Some(
                burn::optim::momentum::MomentumConfig::new().with_dampening(0.0),
            ))
            .init();
        g.bench_function(BenchmarkId::new("dense_burn_sgd", backend), |b| {
            b.iter(|| {
                let m = model.take().expect("model");
                let (_, gr) = grads(&m, &x, &y, &device);
                model = Some(optim.step(0.01, m, gr));
            })
        });
        // Dense through the sparse optimizer (all-ones masks): the optimizer's own cost.
        device.seed(0);
        let m = init(&device);
        let masks = MaskSet::dense(&m, &ParamFilter::new()).expect("masks");
        let mut sopt = SparseOptimizer::new(SgdRule::default(), masks).expect("optim");
        let mut model = Some(m);
        g.bench_function(BenchmarkId::new("dense_sparse_optim", backend), |b| {
            b.iter(|| {
                let m = model.take().expect("model");
                let (_, gr) = grads(&m, &x, &y, &device);
                model = Some(sopt.step(0.01, m, gr).expect("step"));
            })
        });
        // Masked: 90% sparse ERK magnitude mask, exact zeros kept by the sparse optimizer.
        device.seed(0);
        let m = init(&device);
        let masks = magnitude_masks(
            &m,
            &ParamFilter::new(),
            Sparsity::new(0.9).expect("sparsity"),
            &Scope::Layerwise(SparsityDistribution::Erk),
        )
        .expect("masks");
        let m = masks.apply(m);
        let mut sopt = SparseOptimizer::new(SgdRule::default(), masks).expect("optim");
        let mut model = Some(m);
        g.bench_function(BenchmarkId::new("masked90_sparse_optim", backend), |b| {
            b.iter(|| {
                let m = model.take().expect("model");
                let (_, gr) = grads(&m, &x, &y, &device);
                model = Some(sopt.step(0.01, m, gr).expect("step"));
            })
        });
    }
    g.finish();
}

fn lenet300(c: &mut Criterion) {
    bench_model(c, "lenet300", |d| LeNet300Config::new().init(d));
}

fn lenet5(c: &mut Criterion) {
    bench_model(c, "lenet5", |d| LeNet5Config::new().init(d));
}

criterion_group!(benches, lenet300, lenet5);
criterion_main!(benches);
