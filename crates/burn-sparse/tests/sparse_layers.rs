//! Training through SparseLinear: a LeNet-300-100 with a 95% magnitude mask trains on the
//! sparse kernels with the losses of the masked-dense path, keeps its pattern exactly, and
//! converts back to a dense LeNet-300-100 with exact zeros.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{GradientsParams, SgdConfig, momentum::MomentumConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_sparse::layers::Compute;
use burn_sparse::mask::prelude::*;
use burn_sparse::models::{Classifier, LeNet300, SparseMlp};
use burn_sparse_test_support::Mlp;

fn device() -> Device {
    Device::flex().autodiff()
}

fn lenet(seed: u64) -> LeNet300 {
    let m = Mlp::seeded([784, 300, 100, 10], seed, &device());
    LeNet300 {
        fc1: m.l1,
        fc2: m.l2,
        fc3: m.l3,
    }
}

fn data(n: usize, seed: u64) -> (Tensor<4>, Tensor<1, Int>) {
    let mut rng = SparseRng::new(seed);
    // Images whose class is readable from the mean of a class-specific band of pixels.
    let mut x = vec![0.0f32; n * 784];
    let mut y = vec![0i64; n];
    for i in 0..n {
        let c = rng.below(10) as usize;
        y[i] = c as i64;
        for p in 0..784 {
            let band = (p / 78).min(9) == c;
            x[i * 784 + p] = rng.next_f32() * 0.5 + if band { 0.5 } else { 0.0 };
        }
    }
    let d = device();
    (
        Tensor::<4>::from_data(TensorData::new(x, [n, 1, 28, 28]), &d),
        Tensor::<1, Int>::from_data(TensorData::new(y, [n]), &d),
    )
}

fn train(mut net: SparseMlp, steps: usize) -> (SparseMlp, Vec<f32>) {
    let d = device();
    let ce = CrossEntropyLossConfig::new().init(&d);
    let mut optim = SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new().with_dampening(0.0)))
        .init();
    let mut losses = Vec::new();
    for step in 0..steps {
        let (x, y) = data(64, step as u64 % 10);
        let loss = ce.forward(net.logits(x), y);
        losses.push(finite_loss(&loss).unwrap());
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        net = optim.step(0.05, net, grads);
    }
    (net, losses)
}

fn masked_lenet(seed: u64) -> (LeNet300, MaskSet) {
    let net = lenet(seed);
    let masks = magnitude_masks(
        &net,
        &ParamFilter::new(),
        Sparsity::new(0.95).unwrap(),
        &Scope::Layerwise(SparsityDistribution::Erk),
    )
    .unwrap();
    (masks.apply(net), masks)
}

#[test]
fn sparse_kernels_train_like_masked_dense() {
    let (net, masks) = masked_lenet(1);
    let sparse = SparseMlp::from_lenet300(&net, &masks, Compute::Auto).unwrap();
    let masked = SparseMlp::from_lenet300(&net, &masks, Compute::Masked).unwrap();
    assert_eq!(sparse.nnz(), masks.nnz());
    // ERK at 95% leaves fc1 and fc2 sparse enough for the kernels and fc3 dense.
    let on_kernels: Vec<bool> = sparse.layers.iter().map(|l| l.uses_kernels()).collect();
    assert_eq!(on_kernels, vec![true, true, false]);
    let patterns: Vec<_> = sparse.layers.iter().map(|l| l.pattern().unwrap()).collect();
    let (sparse, ls) = train(sparse, 200);
    let (masked, lm) = train(masked, 200);
    // Same parameters, same data: the two paths differ only by float summation order.
    for (i, (a, b)) in ls.iter().zip(&lm).enumerate() {
        assert!(
            (a - b).abs() <= 2e-3 * b.abs().max(1.0),
            "step {i}: {a} vs {b}"
        );
    }
    assert!(ls[199] < 0.5 * ls[0], "loss {} -> {}", ls[0], ls[199]);
    // A fixed-mask run keeps exactly the same pattern and nnz in every layer.
    for (l, p) in sparse.layers.iter().zip(&patterns) {
        assert_eq!(*l.pattern().unwrap(), **p);
        assert_eq!(l.nnz(), p.nnz());
    }
    // Back to dense: exact zeros where the mask is off, the trained values where it is on.
    let dense = sparse.to_lenet300().unwrap();
    let rebound = masks.rebind(&dense).unwrap();
    assert!(
        rebound
            .violations(&dense)
            .unwrap()
            .iter()
            .all(|(_, n)| *n == 0)
    );
    let d2 = masked.to_lenet300().unwrap();
    let w1 = dense
        .fc1
        .weight
        .val()
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    let w2 = d2
        .fc1
        .weight
        .val()
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    let max = w1
        .iter()
        .zip(&w2)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(max < 1e-3, "fc1 weights differ by {max}");
}

#[test]
fn sparse_mlp_checkpoint_loads_into_a_fresh_model() {
    let (net, masks) = masked_lenet(2);
    let sparse = SparseMlp::from_lenet300(&net, &masks, Compute::Auto).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sparse.bpk");
    burn_sparse::mask::checkpoint::save_module_atomic(sparse.clone(), &path).unwrap();
    // A fresh model with different patterns takes the saved ones.
    let (other, other_masks) = masked_lenet(3);
    let fresh = SparseMlp::from_lenet300(&other, &other_masks, Compute::Auto).unwrap();
    let loaded = burn_sparse::mask::checkpoint::load_module(fresh, &path).unwrap();
    let (x, _) = data(8, 0);
    let a = sparse
        .logits(x.clone())
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    let b = loaded.logits(x).into_data().try_into_vec::<f32>().unwrap();
    assert_eq!(a, b);
    // ... and its dense twin is the masked LeNet-300-100 it came from.
    let dense = loaded.to_lenet300().unwrap();
    assert_eq!(
        dense
            .fc2
            .weight
            .val()
            .into_data()
            .try_into_vec::<f32>()
            .unwrap(),
        net.fc2
            .weight
            .val()
            .into_data()
            .try_into_vec::<f32>()
            .unwrap()
    );
}

/// Bytes of every parameter (floats and ints, at their dtype) of a module.
fn param_bytes<M: burn::module::Module>(m: &M) -> usize {
    use burn::module::{ModuleVisitor, Param};
    struct Bytes(usize);
    impl ModuleVisitor for Bytes {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.0 += p.shape().num_elements() * p.val().dtype().size();
        }
        fn visit_int<const D: usize>(&mut self, p: &Param<Tensor<D, Int>>) {
            self.0 += p.shape().num_elements() * p.val().dtype().size();
        }
    }
    let mut b = Bytes(0);
    m.visit(&mut b);
    b.0
}

fn state_bytes<M: burn::module::Module>(m: &M, optim: &SparseOptimizer) -> usize {
    param_infos(m)
        .iter()
        .filter_map(|p| optim.state(p.id))
        .flat_map(|s| s.slots.iter().map(|t| t.dims()[0] * 4))
        .sum()
}

/// Parameter + optimizer-state bytes (SGD momentum) of LeNet-300-100 at 95% (ERK): the sparse
/// network holds at least 8x less than the dense one, after a real step on each. The host
/// pattern (a cache rebuilt from the coordinates) is reported beside it, not hidden.
#[test]
fn sparse_params_and_state_are_8x_smaller_at_95_percent() {
    let (net, masks) = masked_lenet(4);
    let sparse = SparseMlp::from_lenet300(&net, &masks, Compute::Auto).unwrap();
    let (x, y) = data(32, 1);
    let d = device();
    let ce = CrossEntropyLossConfig::new().init(&d);
    // Dense: every weight and its momentum.
    let mut od = SparseOptimizer::new(
        burn_sparse::mask::SgdRule::default(),
        MaskSet::dense(&net, &ParamFilter::new()).unwrap(),
    )
    .unwrap();
    let g = GradientsParams::from_grads(
        ce.forward(net.logits(x.clone()), y.clone()).backward(),
        &net,
    );
    let net = od.step(0.1, net, g).unwrap();
    let dense = param_bytes(&net) + state_bytes(&net, &od);
    // Sparse: values, biases, i32 coordinates and the values' momentum.
    let mut os =
        SparseOptimizer::new(burn_sparse::mask::SgdRule::default(), MaskSet::empty()).unwrap();
    let g = GradientsParams::from_grads(ce.forward(sparse.logits(x), y).backward(), &sparse);
    let sparse = os.step(0.1, sparse, g).unwrap();
    let sp = param_bytes(&sparse) + state_bytes(&sparse, &os);
    let pattern: usize = sparse
        .layers
        .iter()
        .map(|l| l.pattern().unwrap().heap_bytes())
        .sum();
    println!(
        "dense {dense} B, sparse {sp} B (+ host pattern {pattern} B): {:.2}x",
        dense as f64 / sp as f64
    );
    // 266,610 floats x 2 against 13,720 floats x 2 + 13,310 x 2 i32.
    assert_eq!(dense, 266_610 * 8);
    assert_eq!(sp, 13_720 * 8 + 13_310 * 8);
    assert!(dense >= 8 * sp);
}

#[test]
fn zoo_configs_have_exact_budgets() {
    use burn_sparse::models::SparseMlpConfig;
    let s = Sparsity::new(0.95).unwrap();
    // ERK over LeNet-300-100 matches the masked path's ERK counts layer by layer.
    let (_, masks) = masked_lenet(5);
    let cfg = SparseMlpConfig::distributed(
        SparseMlpConfig::lenet300_widths(10),
        s,
        &SparsityDistribution::Erk,
    )
    .unwrap();
    let sparse = cfg.init(&device()).unwrap();
    let counts: Vec<usize> = sparse.layers.iter().map(|l| l.nnz()).collect();
    let want: Vec<usize> = ["fc1.weight", "fc2.weight", "fc3.weight"]
        .iter()
        .map(|n| masks.layer(n).unwrap().nnz())
        .collect();
    // Exactly the masked path's counts, drawn without enumerating the layers.
    assert_eq!(counts, want);
    assert_eq!(counts.iter().sum::<usize>(), s.kept(266_200));
    // The SET paper's MLP at 95% (ER): 20.3M dense weights, about 1.0M non-zeros, built sparse.
    let set = SparseMlpConfig::distributed(
        SparseMlpConfig::set_cifar_widths(),
        s,
        &SparsityDistribution::Er,
    )
    .unwrap()
    .init(&device())
    .unwrap();
    let dense: usize = [3072 * 4000, 4000 * 1000, 1000 * 4000, 4000 * 10]
        .iter()
        .sum();
    let nnz = set.nnz();
    assert!(
        (nnz as f64 - 0.05 * dense as f64).abs() < 0.001 * dense as f64,
        "{nnz} of {dense}"
    );
    let y = set.forward(Tensor::<2>::ones([2, 3072], &device()));
    assert_eq!(y.dims(), [2, 10]);
    assert_eq!(
        SparseMlpConfig::wide4096_widths(),
        vec![784, 4096, 4096, 10]
    );
}
